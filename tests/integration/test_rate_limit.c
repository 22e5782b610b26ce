/*
 * test_rate_limit.c — rate limits and handshake admission control against
 * a real parleyd (server/ratelimit.c wired into server/conn.c).
 *
 * What is proven:
 *   1. A client sending faster than its user's SEND rate gets ERROR RATE
 *      with retry_after_ms > 0 (never a silent drop: every request gets an
 *      answer), and a SEND after waiting that retry-after is acknowledged.
 *   2. The per-user bucket is shared by the user's connections (parleyd
 *      runs two loops): a second connection of the same user is refused
 *      at once, another user is not; per-connection HISTORY buckets are
 *      not shared. libparley's send waits the retry-after by itself and
 *      succeeds. /metrics counts parley_rate_limited_total by kind.
 *   3. With every handshake slot held (connections that said HELLO but not
 *      AUTH), a HELLO is answered with ERROR AGAIN (fatal) carrying a
 *      retry-after within [handshake_retry_ms, 2 * handshake_retry_ms] and
 *      the connection is closed; a burst of libparley clients is refused
 *      the same way, over TCP and TLS (parley_client_failure() carries the
 *      retry-after), and
 *      once the slots are free every one of them authenticates by
 *      retrying. /metrics counts the refusals; no slot leaks.
 *   4. A storm: STORM_N raw connections send HELLO at once against
 *      STORM_SLOTS handshake slots; every refusal reaches its client as an
 *      ERROR AGAIN (the client-side count equals the server's counter: no
 *      silent drops), the retry-afters are jittered (not all equal), and
 *      every connection authenticates after retrying when told; no slot
 *      leaks. The time until all are served is printed, not asserted.
 * Counts and eventual success only: nothing here asserts elapsed time.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>

#include "itest.h"

static uint8_t fbuf[1 << 16];

/* One reply frame decoded into *m; returns its type (0 on EOF/timeout). */
static uint16_t read_reply(int fd, struct parley_msg *m, uint32_t *rid)
{
	struct parley_frame f;
	for (;;) {
		int n = it_read_frame(fd, fbuf, sizeof fbuf, 15000, &f);
		if (n <= 0)
			return 0;
		if (parley_type_is_push(f.type) && f.type != PARLEY_T_ERROR)
			continue; /* EVENT etc. */
		IT_OK(parley_proto_decode_payload(f.type, f.payload, f.payload_len, m));
		if (rid)
			*rid = f.request_id;
		return f.type;
	}
}

static uint32_t next_rid = 100;

/* A SEND on a raw connection; returns the reply type, *retry for ERROR. */
static uint16_t raw_send(int fd, const char *conv, uint32_t *code, uint32_t *retry)
{
	struct parley_msg m = {.type = PARLEY_T_SEND};
	m.send.conv = parley_str_c(conv);
	uint32_t rid = ++next_rid;
	memcpy(m.send.client_msg_id, &rid, sizeof rid);
	memcpy(m.send.client_msg_id + 4, &it_seed, sizeof it_seed);
	m.send.content_type = 1;
	m.send.body = (struct parley_bytes){(const uint8_t *)"hello", 5};
	IT_CHECK(it_send_msg(fd, rid, &m) == 0);
	static struct parley_msg r;
	uint32_t got = 0;
	uint16_t t = read_reply(fd, &r, &got);
	IT_CHECK(t != 0, "no answer to SEND (silent drop?)");
	IT_CHECK(got == rid, "reply to %u, expected %u", got, rid);
	if (t == PARLEY_T_ERROR) {
		*code = r.error.code;
		*retry = r.error.retry_after_ms;
	}
	return t;
}

static uint16_t raw_history(int fd, const char *conv, uint32_t *code, uint32_t *retry)
{
	struct parley_msg m = {.type = PARLEY_T_HISTORY};
	m.history.conv = parley_str_c(conv);
	m.history.limit = 10;
	uint32_t rid = ++next_rid;
	IT_CHECK(it_send_msg(fd, rid, &m) == 0);
	static struct parley_msg r;
	uint16_t t = read_reply(fd, &r, NULL);
	IT_CHECK(t != 0, "no answer to HISTORY");
	if (t == PARLEY_T_ERROR) {
		*code = r.error.code;
		*retry = r.error.retry_after_ms;
	}
	return t;
}

static int raw_user(const struct it_server *s, const char *user, const char *dev)
{
	int fd = it_tcp_connect(s->port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_raw_login(fd, user, dev) == 0, "login %s/%s", user, dev);
	return fd;
}

/* ---- /metrics ------------------------------------------------------------------ */

/* ---- 1 + 2: rate limits ----------------------------------------------------------- */

static void rate_limits(void)
{
	struct it_server srv;
	it_server_init(&srv, "rate");
	/* SEND: 30 per minute (one per 2 s), burst 3, per user only;
	 * HISTORY: burst 2 per connection */
	const char *ex[] = {"--loops", "2",
			    "--rate-send-user-per-min", "30", "--rate-send-user-burst", "3",
			    "--rate-send-conn-per-min", "0",
			    "--rate-history-conn-per-min", "60", "--rate-history-conn-burst", "2",
			    NULL};
	memcpy(srv.extra, ex, sizeof ex);
	it_server_start(&srv);
	{ /* SEND needs an opened conversation (CONV_OPEN is not rate limited) */
		struct parley_client *op = it_client(&srv, "alice", "opener", 0, NULL);
		IT_OK(parley_client_conv_open(op, "bob", NULL));
		parley_client_free(op);
	}

	int a1 = raw_user(&srv, "alice", "phone");
	uint32_t code = 0, retry = 0;
	int acked = 0;
	uint16_t t;
	/* the burst passes, then RATE with a retry-after (within a few sends:
	 * a slow machine may refill a token meanwhile) */
	while ((t = raw_send(a1, "d:alice:bob", &code, &retry)) == PARLEY_T_SEND_ACK) {
		acked++;
		IT_CHECK(acked <= 6, "no rate limit after %d sends", acked);
	}
	IT_CHECK(acked >= 3, "only %d of the burst of 3 acknowledged", acked);
	IT_CHECK(t == PARLEY_T_ERROR && code == PARLEY_ERATE, "type %u code %u", t, code);
	IT_CHECK(retry > 0 && retry <= 2000, "retry_after_ms %u", retry);
	/* the refused connection stays usable and keeps being answered */
	t = raw_send(a1, "d:alice:bob", &code, &retry);
	IT_CHECK(t == PARLEY_T_ERROR && code == PARLEY_ERATE && retry > 0);

	/* 2. the same user's second connection shares the bucket */
	int a2 = raw_user(&srv, "alice", "laptop");
	t = raw_send(a2, "d:alice:bob", &code, &retry);
	IT_CHECK(t == PARLEY_T_ERROR && code == PARLEY_ERATE && retry > 0,
		 "second connection of alice: type %u code %u", t, code);
	/* another user has a bucket of its own */
	int b1 = raw_user(&srv, "bob", "phone");
	IT_CHECK(raw_send(b1, "d:alice:bob", &code, &retry) == PARLEY_T_SEND_ACK);

	/* 1. after waiting the retry-after, the send goes through */
	it_sleep_ms(retry);
	t = raw_send(a2, "d:alice:bob", &code, &retry);
	IT_CHECK(t == PARLEY_T_SEND_ACK, "after waiting: type %u code %u", t, code);

	/* per-connection HISTORY buckets: a1 is refused, a2 is not */
	IT_CHECK(raw_history(a1, "d:alice:bob", &code, &retry) == PARLEY_T_HISTORY_PAGE);
	IT_CHECK(raw_history(a1, "d:alice:bob", &code, &retry) == PARLEY_T_HISTORY_PAGE);
	t = raw_history(a1, "d:alice:bob", &code, &retry);
	IT_CHECK(t == PARLEY_T_ERROR && code == PARLEY_ERATE && retry > 0 && retry <= 1000,
		 "third HISTORY: type %u code %u retry %u", t, code, retry);
	IT_CHECK(raw_history(a2, "d:alice:bob", &code, &retry) == PARLEY_T_HISTORY_PAGE);

	/* libparley waits the retry-after itself: both sends succeed */
	struct parley_client *c = it_client(&srv, "alice", "tablet", 0, NULL);
	for (int i = 0; i < 2; i++) {
		struct parley_send_result r;
		const char *body = "through the limit";
		IT_OK(parley_client_send(c, "d:alice:bob", 1, body, strlen(body), &r));
		IT_CHECK(r.seq > 0);
	}
	parley_client_free(c);

	IT_CHECK(it_metric_get(srv.admin_port, "parley_rate_limited_total{kind=\"send\"}") >= 3);
	IT_CHECK(it_metric_get(srv.admin_port, "parley_rate_limited_total{kind=\"history\"}") >= 1);
	IT_CHECK(it_metric_get(srv.admin_port, "parley_rate_limited_total{kind=\"typing\"}") == 0);
	IT_CHECK(it_metric_get(srv.admin_port, "parley_rate_limit_users") >= 2);
	close(a1);
	close(a2);
	close(b1);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
}

/* ---- 3: admission control -------------------------------------------------------------- */

#define HOLDERS 4
#define BURST 12
#define RETRY_MS 200

/* HELLO on a fresh connection until admitted (HELLO_OK): the connection
 * then holds a handshake slot until it authenticates or closes. */
static int hold_slot(const struct it_server *s)
{
	for (int tries = 0; tries < 200; tries++) {
		int fd = it_tcp_connect(s->port);
		IT_CHECK(fd >= 0);
		IT_CHECK(it_send_hello(fd, 1, "holder", "itest-holder") == 0);
		static struct parley_msg r;
		uint16_t t = read_reply(fd, &r, NULL);
		if (t == PARLEY_T_HELLO_OK)
			return fd;
		close(fd); /* a slot was still held by a closing connection */
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "could not hold a handshake slot");
}

struct burst_arg {
	const struct it_server *s;
	int idx;
	int first_rc;
	uint32_t first_retry;
	int rc;
	uint64_t seq;
};

static void *burst_client(void *p)
{
	struct burst_arg *x = p;
	char user[32], dev[32];
	snprintf(user, sizeof user, "storm%d", x->idx);
	snprintf(dev, sizeof dev, "d%d", x->idx);
	char *tok = it_token_for(user);
	int tls = x->idx & 1; /* half over TLS: refused after a full TLS handshake */
	struct parley_client_opts o = {
		.host = tls ? "localhost" : "127.0.0.1",
		.port = tls ? x->s->tls_port : x->s->port,
		.tls = tls,
		.ca_file = tls ? it_path("ca.pem") : NULL,
		.token = tok,
		.device_id = dev,
		.connect_timeout_ms = 10000,
		.request_timeout_ms = 10000,
		.call_deadline_ms = 60000,
		.backoff_max_ms = 2000,
	};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	x->first_rc = parley_client_connect(c);
	x->first_retry = parley_client_failure(c)->retry_after_ms;
	x->rc = x->first_rc;
	if (x->rc < 0)
		x->rc = parley_client_reconnect(c);
	if (x->rc == 0) {
		char conv[80];
		snprintf(conv, sizeof conv, "d:%s:zoe", user);
		struct parley_send_result r = {0};
		x->rc = parley_client_conv_open(c, "zoe", NULL); /* SEND needs it */
		if (x->rc == 0)
			x->rc = parley_client_send(c, conv, 1, "in", 2, &r);
		x->seq = r.seq;
	}
	parley_client_free(c);
	free(tok);
	return NULL;
}

static void admission(void)
{
	struct it_server srv;
	it_server_init(&srv, "storm");
	char hs[16], rt[16];
	snprintf(hs, sizeof hs, "%d", HOLDERS);
	snprintf(rt, sizeof rt, "%d", RETRY_MS);
	const char *ex[] = {"--loops", "2", "--max-handshakes", hs,
			    "--handshake-retry-ms", rt,
			    "--handshake-timeout-ms", "120000", NULL};
	memcpy(srv.extra, ex, sizeof ex);
	it_server_start(&srv);

	int holders[HOLDERS];
	for (int i = 0; i < HOLDERS; i++)
		holders[i] = hold_slot(&srv);
	IT_CHECK(it_metric_get(srv.admin_port, "parley_handshakes_in_progress") == HOLDERS);

	/* a raw HELLO now: ERROR AGAIN, fatal, jittered retry-after, closed */
	uint64_t rej0 = it_metric_get(srv.admin_port, "parley_handshakes_rejected_total");
	int fd = it_tcp_connect(srv.port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_send_hello(fd, 7, "late", "itest") == 0);
	static struct parley_msg r;
	uint32_t rid = 0;
	uint16_t t = read_reply(fd, &r, &rid);
	IT_CHECK(t == PARLEY_T_ERROR && rid == 7, "HELLO over the bound: type %u", t);
	IT_CHECK(r.error.code == PARLEY_EAGAIN && (r.error.flags & PARLEY_ERRF_FATAL),
		 "code %u flags %u", r.error.code, r.error.flags);
	IT_CHECK(r.error.retry_after_ms >= RETRY_MS && r.error.retry_after_ms <= 2 * RETRY_MS,
		 "retry_after_ms %u", r.error.retry_after_ms);
	struct parley_frame f;
	IT_CHECK(it_read_frame(fd, fbuf, sizeof fbuf, 15000, &f) == 0,
		 "the refused connection was not closed");
	close(fd);
	IT_CHECK(it_metric_get(srv.admin_port, "parley_handshakes_rejected_total") == rej0 + 1);

	/* a burst of libparley clients: each is refused first */
	pthread_t th[BURST];
	struct burst_arg xs[BURST];
	for (int i = 0; i < BURST; i++) {
		xs[i] = (struct burst_arg){.s = &srv, .idx = i};
		IT_CHECK(pthread_create(&th[i], NULL, burst_client, &xs[i]) == 0);
	}
	/* every client's first HELLO is refused while the holders hold on */
	uint64_t want = rej0 + 1 + BURST;
	for (int i = 0; i < 600 &&
			it_metric_get(srv.admin_port, "parley_handshakes_rejected_total") < want; i++)
		it_sleep_ms(50);
	IT_CHECK(it_metric_get(srv.admin_port, "parley_handshakes_rejected_total") >= want);
	for (int i = 0; i < HOLDERS; i++)
		close(holders[i]);
	int ok = 0;
	for (int i = 0; i < BURST; i++) {
		pthread_join(th[i], NULL);
		IT_CHECK(xs[i].first_rc == -PARLEY_EAGAIN, "client %d first connect: %s", i,
			 parley_strerror(xs[i].first_rc));
		IT_CHECK(xs[i].first_retry >= RETRY_MS && xs[i].first_retry <= 2 * RETRY_MS,
			 "client %d: retry_after_ms %u", i, xs[i].first_retry);
		IT_CHECK(xs[i].rc == 0, "client %d never got in: %s", i, parley_strerror(xs[i].rc));
		IT_CHECK(xs[i].seq == 1, "client %d send seq %llu", i,
			 (unsigned long long)xs[i].seq);
		ok++;
	}
	IT_CHECK(ok == BURST);
	/* every slot came back (closes are asynchronous: wait, bounded) */
	uint64_t inprog = 1;
	for (int i = 0; i < 200 && inprog; i++) {
		inprog = it_metric_get(srv.admin_port, "parley_handshakes_in_progress");
		if (inprog)
			it_sleep_ms(50);
	}
	IT_CHECK(inprog == 0, "%llu handshake slots leaked", (unsigned long long)inprog);
	printf("admission: %d clients refused then served, %llu HELLOs refused\n", BURST,
	       (unsigned long long)it_metric_get(srv.admin_port, "parley_handshakes_rejected_total"));
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
}

/* ---- 4: a reconnect storm ------------------------------------------------------------------ */

#define STORM_N 2000
#define STORM_SLOTS 64
#define STORM_RETRY_MS 100

struct storm_conn {
	int fd;
	int state; /* 0 wait retry, 1 HELLO sent, 2 AUTH sent, 3 authenticated */
	uint64_t retry_at_ms;
	uint32_t have;
	uint8_t buf[512];
};

static uint64_t mono_ms(void)
{
	return parley_mono_ns() / 1000000ull;
}

static void storm_hello(const struct it_server *s, struct storm_conn *c, const char *tok)
{
	(void)tok;
	c->fd = it_tcp_connect(s->port);
	IT_CHECK(c->fd >= 0, "connect: %s", strerror(errno));
	IT_CHECK(it_send_hello(c->fd, 1, "storm", "itest-storm") == 0);
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	c->state = 1;
	c->have = 0;
}

static void storm(void)
{
	struct rlimit rl;
	IT_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	if (rl.rlim_max < STORM_N + 200) {
		printf("storm: skipped (RLIMIT_NOFILE hard limit %llu)\n",
		       (unsigned long long)rl.rlim_max);
		return;
	}
	if (rl.rlim_cur < STORM_N + 200) {
		rl.rlim_cur = STORM_N + 200;
		IT_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	}
	struct it_server srv;
	it_server_init(&srv, "storm2");
	char hs[16], rt[16];
	snprintf(hs, sizeof hs, "%d", STORM_SLOTS);
	snprintf(rt, sizeof rt, "%d", STORM_RETRY_MS);
	const char *ex[] = {"--loops", "2", "--max-handshakes", hs,
			    "--handshake-retry-ms", rt, NULL};
	memcpy(srv.extra, ex, sizeof ex);
	it_server_start(&srv);
	uint64_t rej0 = it_metric_get(srv.admin_port, "parley_handshakes_rejected_total");
	char *tok = it_token_for("stormy");
	struct storm_conn *cs = calloc(STORM_N, sizeof *cs);
	struct pollfd *pf = calloc(STORM_N, sizeof *pf);
	int *idx = calloc(STORM_N, sizeof *idx);
	IT_CHECK(cs && pf && idx);
	uint64_t t0 = mono_ms();
	for (int i = 0; i < STORM_N; i++)
		storm_hello(&srv, &cs[i], tok);
	int done = 0;
	uint64_t refused = 0, retry_min = UINT64_MAX, retry_max = 0;
	uint64_t deadline = t0 + 240000;
	while (done < STORM_N) {
		IT_CHECK(mono_ms() < deadline, "storm: only %d of %d served", done, STORM_N);
		int n = 0;
		uint64_t now = mono_ms();
		for (int i = 0; i < STORM_N; i++) {
			if (cs[i].state == 0 && now >= cs[i].retry_at_ms)
				storm_hello(&srv, &cs[i], tok);
			if (cs[i].state == 1 || cs[i].state == 2) {
				pf[n] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
				idx[n++] = i;
			}
		}
		if (n == 0) {
			it_sleep_ms(5);
			continue;
		}
		IT_CHECK(poll(pf, (nfds_t)n, 20) >= 0);
		for (int j = 0; j < n; j++) {
			if (!(pf[j].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			struct storm_conn *c = &cs[idx[j]];
			ssize_t k = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
			IT_CHECK(k > 0, "storm: connection %d closed without an answer (state %d)",
				 idx[j], c->state);
			c->have += (uint32_t)k;
			struct parley_frame f;
			int fl = parley_proto_frame_decode(c->buf, c->have, sizeof c->buf, &f);
			if (fl == -PARLEY_EINCOMPLETE)
				continue;
			IT_CHECK(fl > 0, "storm: bad frame");
			static struct parley_msg m;
			IT_OK(parley_proto_decode_payload(f.type, f.payload, f.payload_len, &m));
			memmove(c->buf, c->buf + fl, c->have - (uint32_t)fl);
			c->have -= (uint32_t)fl;
			if (c->state == 1 && f.type == PARLEY_T_ERROR) {
				IT_CHECK(m.error.code == PARLEY_EAGAIN &&
						 (m.error.flags & PARLEY_ERRF_FATAL),
					 "storm: HELLO answered with %u", m.error.code);
				uint32_t ra = m.error.retry_after_ms;
				IT_CHECK(ra >= STORM_RETRY_MS && ra <= 2 * STORM_RETRY_MS, "retry %u", ra);
				retry_min = PARLEY_MIN(retry_min, ra);
				retry_max = PARLEY_MAX(retry_max, ra);
				refused++;
				close(c->fd);
				c->fd = -1;
				c->state = 0;
				c->retry_at_ms = mono_ms() + ra; /* as told */
			} else if (c->state == 1 && f.type == PARLEY_T_HELLO_OK) {
				struct parley_msg a = {.type = PARLEY_T_AUTH};
				a.auth.token = parley_str_c(tok);
				fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
				IT_CHECK(it_send_msg(c->fd, 2, &a) == 0);
				fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
				c->state = 2;
			} else if (c->state == 2 && f.type == PARLEY_T_AUTH_OK) {
				c->state = 3;
				done++;
			} else {
				IT_CHECK(0, "storm: state %d got frame 0x%x", c->state, f.type);
			}
		}
	}
	uint64_t took = mono_ms() - t0;
	uint64_t rejected = it_metric_get(srv.admin_port, "parley_handshakes_rejected_total") - rej0;
	IT_CHECK(refused > 0, "storm: nothing was refused with %d slots", STORM_SLOTS);
	IT_CHECK(rejected == refused, "server refused %llu HELLOs, clients saw %llu",
		 (unsigned long long)rejected, (unsigned long long)refused);
	IT_CHECK(retry_max > retry_min, "retry-afters carry no jitter (all %llu)",
		 (unsigned long long)retry_min);
	IT_CHECK(it_metric_get(srv.admin_port, "parley_handshakes_in_progress") == 0);
	printf("storm: %d connections, %d slots: all authenticated after %llu refusals "
	       "(retry_after %llu..%llu ms), %llu ms until the last was served\n",
	       STORM_N, STORM_SLOTS, (unsigned long long)refused,
	       (unsigned long long)retry_min, (unsigned long long)retry_max,
	       (unsigned long long)took);
	for (int i = 0; i < STORM_N; i++)
		if (cs[i].fd >= 0)
			close(cs[i].fd);
	free(cs);
	free(pf);
	free(idx);
	free(tok);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 30000) == 0);
}

int main(void)
{
	it_init("rate_limit");
	rate_limits();
	admission();
	storm();
	it_cleanup();
	printf("rate_limit: ok\n");
	return 0;
}
