/*
 * test_presence.c — presence against a real parleyd (two loops):
 * PRESENCE_SUB / PRESENCE pushes / PRESENCE_SET through server/presence.c,
 * with small configured heartbeat and TTL.
 *
 * What is proven:
 *   1. Subscribing to a user never seen: OFFLINE, last_seen 0; the reply
 *      carries the server's heartbeat and TTL.
 *   2. Two devices: the first to connect makes alice ONLINE (pushed);
 *      closing one keeps her online (a fresh subscription says ONLINE);
 *      closing the last pushes OFFLINE with a last_seen between the wall
 *      times around the close.
 *   3. TTL: a connection that stays open but sends nothing turns OFFLINE
 *      when its heartbeats stop (pushed); a PING makes it ONLINE again.
 *   4. PRESENCE_SET hide: bob's OFFLINE push carries last_seen 0, for a
 *      new subscriber too.
 *   5. Restart (SIGTERM, start again): alice's last_seen is the one seen
 *      before (durable), bob's stays hidden.
 *   7. kill -9 while gina is online: after the restart she is OFFLINE with
 *      the last_seen of the periodic write made while she was online
 *      (presence_last_seen_write_ms), not "never seen".
 *   8. A subscription racing the user's own login (issue 13's CLI test
 *      once showed OFFLINE for a user connected seconds before): 60
 *      times, a watcher subscribes to a never-seen user while that user
 *      logs in on another connection; once both replies are in and the
 *      watcher's socket is quiet, the last thing it heard about the user
 *      (the reply or a push after it) must be ONLINE.
 *   6. Bad input: more users than presence_subs_max is ERROR LIMIT and
 *      subscribes nobody; an invalid user id is ERROR PROTO; unsubscribe
 *      stops pushes; PRESENCE_SUB beyond the presence rate limit is ERROR
 *      RATE with retry_after_ms, counted on /metrics.
 * Events are waited for with generous timeouts; no duration is asserted.
 */
#include "itest.h"

struct seen {
	int n; /* PRESENCE pushes about `who` */
	const char *who;
	uint8_t status;
	uint64_t last_seen;
	uint8_t hist[64]; /* status of push i + 1: one poll may bring several */
};

static void on_presence(void *user, const struct parley_presence_rec *p)
{
	struct seen *s = user;
	if (!parley_str_eq(p->user, s->who))
		return;
	if (s->n < (int)sizeof s->hist)
		s->hist[s->n] = p->status;
	s->n++;
	s->status = p->status;
	s->last_seen = p->last_seen_ms;
}

/* A device that stays online must heartbeat: the TTL is 1000 ms here and
 * libparley otherwise keeps alive at a third of the idle timeout (20 s).
 * With heartbeat_ms it PINGs every 150 ms while it is polled; where a
 * device must be alive at a given moment the test pings it explicitly
 * (blocking calls on another client do not poll it). */
static struct parley_client *client(const struct it_server *srv,
				    const char *user, const char *dev,
				    struct seen *s)
{
	struct parley_client_opts cb = {.on_presence = on_presence, .user = s,
					.heartbeat_ms = 200};
	return it_client_cb(srv, user, dev, &cb);
}

static void poll_all(struct parley_client **cs, size_t n, int ms)
{
	for (size_t i = 0; i < n; i++)
		if (cs[i])
			parley_client_poll(cs[i], ms);
}

#define WAIT_FOR(cond, ...)                                                    \
	do {                                                                   \
		struct parley_client *_cs[] = {__VA_ARGS__};                   \
		for (int _ms = 0; _ms < 20000 && !(cond); _ms += 10)           \
			poll_all(_cs, sizeof _cs / sizeof *_cs, 10);           \
	} while (0)

/* One user's record from a fresh subscription of c. */
static struct parley_presence_rec sub1(struct parley_client *c, const char *who)
{
	const char *u[] = {who};
	const struct parley_presence_sub_ok *ok;
	IT_OK(parley_client_presence_sub(c, PARLEY_PRESENCE_SUBSCRIBE, u, 1, &ok));
	IT_CHECK(ok->count == 1 && parley_str_eq(ok->recs[0].user, who));
	return ok->recs[0];
}

static uint8_t fbuf[1 << 16];

/* Raw: send m, return the first reply frame's type for rid (pushes skipped). */
static uint16_t raw_call(int fd, uint32_t rid, const struct parley_msg *m,
			 struct parley_msg *out)
{
	IT_CHECK(it_send_msg(fd, rid, m) == 0);
	for (;;) {
		struct parley_frame f;
		int n = it_read_frame(fd, fbuf, sizeof fbuf, 15000, &f);
		IT_CHECK(n > 0, "no reply to %s", parley_proto_type_name(m->type));
		if (f.request_id != rid)
			continue;
		IT_OK(parley_proto_decode(&f, out));
		return f.type;
	}
}

/* 8: see the top. The user's first subscription reads p/ and ps/ from
 * the engine, so the reply is built on an engine thread while the login
 * runs on a loop thread: the window the reply's view could go stale in. */
static void race_sub_login(const struct it_server *srv)
{
	for (int i = 0; i < 60; i++) {
		char who[32], watcher[32];
		snprintf(who, sizeof who, "racer%d", i);
		snprintf(watcher, sizeof watcher, "watch%d", i);
		int sfd = it_tcp_connect(srv->port), xfd = it_tcp_connect(srv->port);
		IT_CHECK(sfd >= 0 && xfd >= 0);
		IT_CHECK(it_raw_login(sfd, watcher, "w") == 0);
		struct parley_frame f;
		IT_CHECK(it_send_hello(xfd, 1, "x", NULL) == 0);
		IT_CHECK(it_read_frame(xfd, fbuf, sizeof fbuf, 15000, &f) > 0 &&
			 f.type == PARLEY_T_HELLO_OK);
		char *tok = it_token_for(who);
		struct parley_msg sub = {.type = PARLEY_T_PRESENCE_SUB};
		sub.presence_sub.op = PARLEY_PRESENCE_SUBSCRIBE;
		sub.presence_sub.count = 1;
		sub.presence_sub.users[0] = parley_str_c(who);
		struct parley_msg auth = {.type = PARLEY_T_AUTH};
		auth.auth.token = parley_str_c(tok);
		IT_CHECK(it_send_msg(sfd, 7, &sub) == 0);
		IT_CHECK(it_send_msg(xfd, 2, &auth) == 0);
		free(tok);
		IT_CHECK(it_read_frame(xfd, fbuf, sizeof fbuf, 15000, &f) > 0 &&
			 f.type == PARLEY_T_AUTH_OK, "%s's login", who);
		/* the racer is logged in and stays so: it heartbeats (PING every
		 * 150 ms; its PONGs are not read) while the watcher listens, so
		 * a slow round cannot turn it OFFLINE by the TTL (1000 ms) */
		int got_ok = 0, last = -1;
		uint64_t t0 = parley_now_ms(), beat = t0, quiet = t0;
		struct parley_msg hb = {.type = PARLEY_T_PING};
		for (;;) {
			uint64_t now = parley_now_ms();
			if (now - beat >= 150) {
				hb.ping.nonce = now;
				IT_CHECK(it_send_msg(xfd, 3, &hb) == 0);
				beat = now;
			}
			if (got_ok ? now - quiet >= 200 : now - t0 >= 15000)
				break; /* quiet after the reply (or no reply: checked below) */
			struct pollfd pf = {.fd = sfd, .events = POLLIN};
			if (poll(&pf, 1, 50) <= 0)
				continue;
			int n = it_read_frame(sfd, fbuf, sizeof fbuf, 15000, &f);
			IT_CHECK(n > 0, "watcher connection closed");
			quiet = parley_now_ms();
			struct parley_msg m;
			IT_OK(parley_proto_decode(&f, &m));
			if (f.type == PARLEY_T_PRESENCE_SUB_OK && f.request_id == 7) {
				IT_CHECK(m.presence_sub_ok.count == 1);
				last = m.presence_sub_ok.recs[0].status;
				got_ok = 1;
			} else if (f.type == PARLEY_T_PRESENCE &&
				   parley_str_eq(m.presence.user, who)) {
				last = m.presence.status;
			}
		}
		IT_CHECK(got_ok, "no PRESENCE_SUB_OK for %s", who);
		IT_CHECK(last == PARLEY_PRESENCE_ONLINE,
			 "round %d: %s is logged in but the watcher last heard %d", i, who,
			 last);
		close(sfd);
		close(xfd);
	}
}

int main(void)
{
	it_init("presence");
	struct it_server srv;
	it_server_init(&srv, "presence");
	const char *extra[] = {"--loops", "2", "--presence-heartbeat-ms", "200",
			       "--presence-ttl-ms", "1000",
			       "--presence-subs-max", "3",
			       "--rate-presence-conn-burst", "20",
			       "--presence-last-seen-write-ms", "1000", NULL};
	for (int i = 0; extra[i]; i++)
		srv.extra[i] = extra[i];
	it_server_start(&srv);

	/* carol watches alice; dave watches bob */
	struct seen sc = {.who = "alice"}, sd = {.who = "bob"}, none = {.who = "-"};
	struct parley_client *cc = client(&srv, "carol", "c1", &sc);
	const char *u[] = {"alice"};
	const struct parley_presence_sub_ok *ok;
	IT_OK(parley_client_presence_sub(cc, PARLEY_PRESENCE_SUBSCRIBE, u, 1, &ok));
	/* 1 */
	IT_CHECK(ok->count == 1 && ok->recs[0].status == PARLEY_PRESENCE_OFFLINE &&
		 ok->recs[0].last_seen_ms == 0, "never seen: %u %llu",
		 ok->recs[0].status, (unsigned long long)ok->recs[0].last_seen_ms);
	IT_CHECK(ok->heartbeat_ms == 200 && ok->ttl_ms == 1000 && ok->subscribed == 1);

	/* 2: two devices */
	struct parley_client *a1 = client(&srv, "alice", "a1", &none);
	WAIT_FOR(sc.n >= 1, cc, a1);
	IT_CHECK(sc.n == 1 && sc.status == PARLEY_PRESENCE_ONLINE,
		 "online push: n=%d st=%u", sc.n, sc.status);
	struct seen sx = {.who = "alice"};
	struct parley_client *x = client(&srv, "erin", "e1", &sx);
	IT_OK(parley_client_ping(a1)); /* alive until a2 is */
	struct parley_client *a2 = client(&srv, "alice", "a2", &none);
	poll_all((struct parley_client *[]){cc, a2}, 2, 50);
	parley_client_free(a1);
	a1 = NULL;
	/* a2 keeps her online: the state a new subscriber gets (a2 beats
	 * right before each question) */
	for (int i = 0; i < 5; i++) {
		poll_all((struct parley_client *[]){cc, a2}, 2, 50);
		IT_OK(parley_client_ping(a2));
		IT_CHECK(sub1(x, "alice").status == PARLEY_PRESENCE_ONLINE,
			 "alice offline with a device connected");
	}
	IT_CHECK(sc.n == 1, "a transition pushed while a device stayed: %d", sc.n);
	uint64_t before = parley_now_ms();
	parley_client_free(a2);
	a2 = NULL;
	WAIT_FOR(sc.status == PARLEY_PRESENCE_OFFLINE, cc, x);
	uint64_t after = parley_now_ms();
	IT_CHECK(sc.status == PARLEY_PRESENCE_OFFLINE, "no offline push");
	IT_CHECK(sc.last_seen >= before && sc.last_seen <= after,
		 "last_seen %llu not within [%llu, %llu]",
		 (unsigned long long)sc.last_seen, (unsigned long long)before,
		 (unsigned long long)after);
	struct parley_presence_rec r = sub1(x, "alice");
	IT_CHECK(r.status == PARLEY_PRESENCE_OFFLINE && r.last_seen_ms == sc.last_seen);

	/* 3: TTL: a raw connection that says nothing after AUTH */
	int fd = it_tcp_connect(srv.port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_raw_login(fd, "alice", "raw") == 0);
	int n0 = sc.n;
	/* one poll may bring two pushes (ONLINE, then the expiry): each
	 * push's status is checked, not only the last one's */
	WAIT_FOR(sc.n >= n0 + 1, cc, x);
	IT_CHECK(sc.n >= n0 + 1 && sc.hist[n0] == PARLEY_PRESENCE_ONLINE,
		 "raw login: not online");
	WAIT_FOR(sc.n >= n0 + 2, cc, x);
	IT_CHECK(sc.n == n0 + 2 && sc.hist[n0 + 1] == PARLEY_PRESENCE_OFFLINE,
		 "silent connection did not expire (n=%d st=%u)", sc.n - n0,
		 sc.status);
	IT_CHECK(sc.last_seen > 0);
	struct parley_msg ping = {.type = PARLEY_T_PING};
	ping.ping.nonce = 1;
	IT_CHECK(it_send_msg(fd, 9, &ping) == 0);
	WAIT_FOR(sc.n >= n0 + 3, cc, x);
	IT_CHECK(sc.n >= n0 + 3 && sc.hist[n0 + 2] == PARLEY_PRESENCE_ONLINE,
		 "heartbeat did not revive");
	close(fd);
	/* OFFLINE by the close, or by the TTL before it: either way one */
	WAIT_FOR(sc.n >= n0 + 4, cc, x);
	poll_all((struct parley_client *[]){cc, x}, 2, 50);
	IT_CHECK(sc.n == n0 + 4 && sc.hist[n0 + 3] == PARLEY_PRESENCE_OFFLINE,
		 "after the close: n=%d st=%u", sc.n - n0, sc.status);
	uint64_t alice_seen = sc.last_seen;

	/* 4: bob hides his last_seen */
	struct parley_client *dd = client(&srv, "dave", "d1", &sd);
	struct parley_client *b1 = client(&srv, "bob", "b1", &none);
	IT_OK(parley_client_presence_set(b1, PARLEY_PRESF_HIDE_LAST_SEEN));
	IT_CHECK(sub1(dd, "bob").status == PARLEY_PRESENCE_ONLINE);
	parley_client_free(b1);
	WAIT_FOR(sd.n >= 1, dd, cc);
	IT_CHECK(sd.status == PARLEY_PRESENCE_OFFLINE && sd.last_seen == 0,
		 "hidden last_seen shown: %llu", (unsigned long long)sd.last_seen);
	r = sub1(x, "bob");
	IT_CHECK(r.status == PARLEY_PRESENCE_OFFLINE && r.last_seen_ms == 0);

	/* 6: bad input */
	{
		int rfd = it_tcp_connect(srv.port);
		IT_CHECK(rfd >= 0);
		IT_CHECK(it_raw_login(rfd, "frank", "f1") == 0);
		static struct parley_msg m, rep;
		m = (struct parley_msg){.type = PARLEY_T_PRESENCE_SUB};
		m.presence_sub.op = PARLEY_PRESENCE_SUBSCRIBE;
		m.presence_sub.count = 4;
		const char *four[] = {"u1", "u2", "u3", "u4"};
		for (int i = 0; i < 4; i++)
			m.presence_sub.users[i] = parley_str_c(four[i]);
		IT_CHECK(raw_call(rfd, 20, &m, &rep) == PARLEY_T_ERROR);
		IT_CHECK(rep.error.code == PARLEY_ELIMIT, "code %u", rep.error.code);
		m.presence_sub.count = 3;
		IT_CHECK(raw_call(rfd, 21, &m, &rep) == PARLEY_T_PRESENCE_SUB_OK);
		IT_CHECK(rep.presence_sub_ok.subscribed == 3,
			 "the refused request subscribed someone: %u",
			 rep.presence_sub_ok.subscribed);
		/* an invalid user id (hand-made payload: op 1, count 1, "-x") */
		uint8_t f[12 + 7];
		parley_proto_header_put(f, PARLEY_T_PRESENCE_SUB, 0, 22, 7);
		memcpy(f + 12, "\x01\x01\x00\x02\x00-x", 7);
		IT_CHECK(it_write_all(rfd, f, sizeof f) == 0);
		struct parley_frame fr;
		IT_CHECK(it_read_frame(rfd, fbuf, sizeof fbuf, 15000, &fr) > 0);
		IT_CHECK(fr.type == PARLEY_T_ERROR && fr.request_id == 22);
		IT_OK(parley_proto_decode(&fr, &rep));
		IT_CHECK(rep.error.code == PARLEY_EPROTO);
		m.presence_sub.op = PARLEY_PRESENCE_UNSUBSCRIBE;
		IT_CHECK(raw_call(rfd, 23, &m, &rep) == PARLEY_T_PRESENCE_SUB_OK);
		IT_CHECK(rep.presence_sub_ok.subscribed == 0);
		/* unsubscribe: no more pushes about that user */
		m.presence_sub.op = PARLEY_PRESENCE_UNSUBSCRIBE;
		m.presence_sub.count = 1;
		m.presence_sub.users[0] = parley_str_c("alice");
		struct parley_msg sm = {.type = PARLEY_T_PRESENCE_SUB};
		sm.presence_sub.op = PARLEY_PRESENCE_SUBSCRIBE;
		sm.presence_sub.count = 1;
		sm.presence_sub.users[0] = parley_str_c("alice");
		IT_CHECK(raw_call(rfd, 24, &sm, &rep) == PARLEY_T_PRESENCE_SUB_OK);
		IT_CHECK(raw_call(rfd, 25, &m, &rep) == PARLEY_T_PRESENCE_SUB_OK);
		IT_CHECK(rep.presence_sub_ok.subscribed == 0 &&
			 rep.presence_sub_ok.count == 0);
		int nc = sc.n;
		struct parley_client *a3 = client(&srv, "alice", "a3", &none);
		WAIT_FOR(sc.n > nc, cc, a3);
		IT_CHECK(sc.n > nc && sc.hist[nc] == PARLEY_PRESENCE_ONLINE,
			 "carol did not see alice come online");
		ping.ping.nonce = 2;
		/* frank's connection: the next frame after SUB_OK is PONG, no
		 * PRESENCE push about alice */
		IT_CHECK(it_send_msg(rfd, 26, &ping) == 0);
		IT_CHECK(it_read_frame(rfd, fbuf, sizeof fbuf, 15000, &fr) > 0);
		IT_CHECK(fr.type == PARLEY_T_PONG, "got %s after unsubscribe",
			 parley_proto_type_name(fr.type));
		IT_OK(parley_client_ping(a3)); /* online until it closes */
		parley_client_free(a3);
		WAIT_FOR(sc.n > nc + 1 && sc.status == PARLEY_PRESENCE_OFFLINE, cc);
		alice_seen = sc.last_seen;
		/* rate limit: burst 20 per connection, refill 1/s */
		int rate = 0;
		for (int i = 0; i < 40 && !rate; i++) {
			if (raw_call(rfd, 100 + (uint32_t)i, &sm, &rep) ==
			    PARLEY_T_ERROR) {
				IT_CHECK(rep.error.code == PARLEY_ERATE &&
					 rep.error.retry_after_ms > 0,
					 "code %u", rep.error.code);
				rate = 1;
			}
		}
		IT_CHECK(rate, "no RATE after 40 PRESENCE_SUBs (burst 20)");
		IT_CHECK(it_metric_get(srv.admin_port,
				"parley_rate_limited_total{kind=\"presence\"}") >= 1);
		close(rfd);
	}
	IT_CHECK(alice_seen > 0);

	/* 5: restart */
	parley_client_free(cc);
	parley_client_free(dd);
	parley_client_free(x);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 30000) == 0);
	it_server_start(&srv);
	struct seen sy = {.who = "alice"};
	struct parley_client *y = client(&srv, "carol", "c2", &sy);
	r = sub1(y, "alice");
	IT_CHECK(r.status == PARLEY_PRESENCE_OFFLINE && r.last_seen_ms == alice_seen,
		 "last_seen after restart %llu, before %llu",
		 (unsigned long long)r.last_seen_ms, (unsigned long long)alice_seen);
	r = sub1(y, "bob");
	IT_CHECK(r.status == PARLEY_PRESENCE_OFFLINE && r.last_seen_ms == 0,
		 "hidden last_seen shown after restart");
	parley_client_free(y);
	race_sub_login(&srv);
	/* 7: kill -9 while online: the lazy periodic write is what remains */
	/* carol's last_seen writes (she just left) land first: wait until
	 * the counter stops moving; then nobody but gina is online */
	uint64_t w0 = it_metric_get(srv.admin_port, "parley_last_seen_writes_total");
	for (int still = 0, i = 0; still < 5 && i < 200; i++) {
		it_sleep_ms(100);
		uint64_t w = it_metric_get(srv.admin_port, "parley_last_seen_writes_total");
		still = w == w0 ? still + 1 : 0;
		w0 = w;
	}
	int gfd = it_tcp_connect(srv.port);
	IT_CHECK(gfd >= 0);
	uint64_t g_on = parley_now_ms();
	IT_CHECK(it_raw_login(gfd, "gina", "g1") == 0);
	/* stay online (PING) until a periodic write of gina's is counted */
	for (int i = 0; i < 400; i++) {
		ping.ping.nonce = 100 + (uint64_t)i;
		IT_CHECK(it_send_msg(gfd, 30, &ping) == 0);
		struct parley_frame fr;
		IT_CHECK(it_read_frame(gfd, fbuf, sizeof fbuf, 15000, &fr) > 0);
		if (it_metric_get(srv.admin_port, "parley_last_seen_writes_total") > w0)
			break;
		it_sleep_ms(100);
	}
	IT_CHECK(it_metric_get(srv.admin_port, "parley_last_seen_writes_total") > w0,
		 "no periodic last_seen write while online");
	IT_CHECK(it_metric_get(srv.admin_port, "parley_presence_online_users") == 1,
		 "online users gauge: only gina is connected");
	it_server_kill(&srv);
	close(gfd);
	/* the killed process's listening socket may outlive it briefly (its
	 * io_uring is torn down asynchronously): start once it is gone */
	for (int ms = 0; ms < 10000; ms += 20) {
		int t = it_tcp_connect(srv.port);
		if (t < 0)
			break;
		close(t);
		it_sleep_ms(20);
	}
	it_server_start(&srv);
	y = client(&srv, "carol", "c3", &sy);
	r = sub1(y, "gina");
	IT_CHECK(r.status == PARLEY_PRESENCE_OFFLINE && r.last_seen_ms >= g_on &&
			 r.last_seen_ms <= parley_now_ms(),
		 "gina after kill -9: status %u last_seen %llu (online since %llu)",
		 r.status, (unsigned long long)r.last_seen_ms,
		 (unsigned long long)g_on);
	parley_client_free(y);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 30000) == 0);
	it_cleanup();
	printf("presence: ok\n");
	return 0;
}
