/*
 * netns_chaos.c — three real parleyd processes, each in a network
 * namespace of its own (made by test_cluster_netns.sh with netns.sh), a
 * black-box checker that drives them only through libparley, and faults
 * made with nftables inside the namespaces (and kill -9 in the long tier).
 *
 * Runs inside the client namespace (node 4 of the bridge); the servers are
 * nodes 1..3 at NETNS_SUBNET.1..3, started with `ip netns exec`. Client
 * traffic is never dropped: the faults only cut links between servers, so
 * the checker can still talk to a cut-off node (and ask it for HISTORY).
 *
 * The checker (TESTING.md, "black-box history check"):
 *   - senders: one thread per user (alice, bob, carol), each sending with
 *     its own client_msg_ids, in turn to its two conversations (ab, ac, bc:
 *     two senders per conversation), through a client that knows all three
 *     nodes; each SEND is recorded with its outcome (acknowledged seq, or
 *     an error: unknown outcome);
 *   - devices: one recording device per user subscribed from inbox seq 1,
 *     recording every EVENT (inbox seq, conversation, conv seq, id);
 *   - at the end a history read of every conversation through the cluster.
 *   It reports, and fails on: an acknowledged message missing from history
 *   (lost), one whose seq changed, an id twice in a conversation
 *   (duplicated), a hole in a conversation's seqs (skipped), a message no
 *   sender sent, a sender's acknowledged messages out of send order in a
 *   conversation (reordered), and for every device: a gap or repeat in its
 *   inbox seqs, a message of its conversations never delivered or
 *   delivered twice, or delivered with another seq or id than history has.
 *   A device receiving one conversation's messages out of conv-seq order is
 *   reported but not failed: a fan-out recovery after a leader change may
 *   deliver older messages after newer ones (docs/CLUSTER.md §3.4).
 *
 * Scenarios (every wait bounded; no assertion on durations):
 *   1. leader isolated: the leader of partition 0 is cut off from the other
 *      servers both ways; the majority must elect a new leader and keep
 *      acknowledging; meanwhile HISTORY and CONV_LIST asked of the old
 *      leader alone must fail (NOTLEADER / AGAIN) or show every message
 *      acknowledged before the question (never a stale page or list; the
 *      new leader must answer both), and a SEND through it alone
 *      must not be acknowledged (nor ever show up in history); healed, it
 *      must rejoin;
 *   2. one-way loss: the followers stop receiving from the leader; they
 *      elect one of themselves; healed;
 *   3. flapping: a random server isolated and healed, several times;
 *   4. (long) kill -9 of the leader under load, restarted, repeatedly.
 *
 *   netns_chaos short|long     (env: NETNS_PREFIX, NETNS_SUBNET, PARLEY_*)
 * Exit 0 pass, 1 fail. PARLEY_SEED replays the fault choices (not timing).
 */
#include <pthread.h>
#include <stdatomic.h>

#include "itest.h"

#define NSRV 3
#define NUSERS 3
#define NCONV 3
#define PORT 7400
#define ADMIN_PORT 7480
#define PEER_PORT 7500
#define MAX_SENDS 50000 /* per sender: bounds the run's memory */
#define WAIT_MS 60000   /* bound of every wait for the cluster */

static const char *users[NUSERS] = {"alice", "bob", "carol"};
/* conversation k between users conv_users[k][0] and [1] */
static const int conv_users[NCONV][2] = {{0, 1}, {0, 2}, {1, 2}};
static char conv_id[NCONV][64];

static char prefix[64], subnet[32], src_dir[512];
static char ip[NSRV][48];
static struct it_server srv[NSRV];
static char nodes_list[256];
static const char *bin_dir;

/* ---- namespaces and processes ------------------------------------------------ */

static void sh(const char *fmt, ...)
{
	char cmd[1024], full[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	snprintf(full, sizeof full,
		 "bash -c 'source \"%s/tests/cluster/netns.sh\"; NETNS_N=%d; %s'",
		 src_dir, NSRV, cmd);
	IT_CHECK(system(full) == 0, "fault command failed: %s", cmd);
}

static void fault_isolate(int i) { sh("netns_isolate %d", i + 1); }
static void fault_drop_from(int r, int s) { sh("netns_drop_from %d %d", r + 1, s + 1); }
static void fault_heal(void) { sh("netns_heal"); }

static int tcp_connect_ip(const char *addr, uint16_t port, int timeout_ms)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (fd < 0 || inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int err = 0;
	socklen_t el = sizeof err;
	if (poll(&p, 1, timeout_ms) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
		close(fd);
		return -1;
	}
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

/* GET /metrics of node i; NULL when it does not answer (dead). */
static char *metrics_of(int i)
{
	int fd = tcp_connect_ip(ip[i], ADMIN_PORT, 1000);
	if (fd < 0)
		return NULL;
	const char req[] = "GET /metrics HTTP/1.1\r\nHost: probe\r\n\r\n";
	if (it_write_all(fd, req, sizeof req - 1)) {
		close(fd);
		return NULL;
	}
	size_t cap = 1 << 18, n = 0;
	char *out = malloc(cap);
	IT_CHECK(out);
	for (;;) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 3000) <= 0)
			break;
		ssize_t k = recv(fd, out + n, cap - 1 - n, 0);
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	out[n] = '\0';
	return out;
}

static int64_t metric_val(const char *t, const char *name)
{
	char pat[160];
	snprintf(pat, sizeof pat, "\n%s ", name);
	const char *p = t ? strstr(t, pat) : NULL;
	return p ? (int64_t)strtoull(p + strlen(pat), NULL, 10) : -1;
}

struct node_state {
	int up;
	int64_t role, term; /* of partition 0 */
};

static void node_state(int i, struct node_state *s)
{
	char *m = metrics_of(i);
	s->up = m != NULL;
	s->role = metric_val(m, "parley_raft_role{partition=\"0\"}");
	s->term = metric_val(m, "parley_raft_term{partition=\"0\"}");
	free(m);
}

/* The leader of partition 0 among the nodes of mask, when exactly one of
 * them leads and every one of them is up and in its term; else -1. */
static int agreed_leader(unsigned mask)
{
	struct node_state s[NSRV];
	int lead = -1;
	for (int i = 0; i < NSRV; i++) {
		if (!(mask & (1u << i)))
			continue;
		node_state(i, &s[i]);
		if (!s[i].up)
			return -1;
		if (s[i].role == 3) {
			if (lead >= 0)
				return -1;
			lead = i;
		}
	}
	if (lead < 0)
		return -1;
	for (int i = 0; i < NSRV; i++)
		if ((mask & (1u << i)) && s[i].term != s[lead].term)
			return -1;
	return lead;
}

static int wait_leader(unsigned mask, int not, const char *what)
{
	for (int ms = 0; ms < WAIT_MS; ms += 100) {
		int l = agreed_leader(mask);
		if (l >= 0 && l != not)
			return l;
		it_sleep_ms(100);
	}
	it_fail(__FILE__, __LINE__, "no agreed leader: %s", what);
}

static void node_start(int i)
{
	static char data[NSRV][300], logf[NSRV][300], peers[NSRV][256],
		id[NSRV][16], ns[NSRV][96], bin[600], secret[512];
	snprintf(bin, sizeof bin, "%s/server/parleyd", bin_dir);
	snprintf(secret, sizeof secret, "%s", it_path("jwt.secret"));
	snprintf(data[i], sizeof data[i], "%s/node%d-data", it_dir, i + 1);
	snprintf(logf[i], sizeof logf[i], "%s/node%d.log", it_dir, i + 1);
	snprintf(id[i], sizeof id[i], "%d", i + 1);
	snprintf(ns[i], sizeof ns[i], "%sn%d", prefix, i + 1);
	int m = 0;
	for (int j = 0; j < NSRV; j++)
		if (j != i)
			m += snprintf(peers[i] + m, sizeof peers[i] - (size_t)m,
				      "%s%d=%s:%d", m ? "," : "", j + 1, ip[j],
				      PEER_PORT);
	const char *argv[] = {
		"ip", "netns", "exec", ns[i], bin, "--data", data[i],
		"--listen", ip[i], "--port", "7400", "--tls-port", "0",
		"--admin-listen", ip[i], "--admin-port", "7480",
		"--jwt-secret-file", secret, "--jwt-issuer", "parley-it",
		"--jwt-audience", "parley", "--node-id", id[i],
		"--cluster-id", "99", "--peer-listen", ip[i], "--peer-port",
		"7500", "--peers", peers[i], "--raft-tick-ms", "20",
		"--partitions", "8", "--loops", "1", NULL};
	struct it_server *s = &srv[i];
	snprintf(s->log, sizeof s->log, "%s", logf[i]);
	pid_t parent = getpid();
	pid_t pid = fork();
	IT_CHECK(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		int fd = open(logf[i], O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execvp("ip", (char *const *)argv);
		_exit(127);
	}
	s->pid = pid; /* `ip netns exec` execs parleyd: same pid */
	if (s->slot < 0)
		for (int k = 0; k < IT_MAX_SERVERS; k++)
			if (!it_pids[k] && !it_servers[k]) {
				s->slot = k;
				break;
			}
	IT_CHECK(s->slot >= 0);
	it_pids[s->slot] = pid;
	it_servers[s->slot] = s;
	for (int ms = 0; ms < 30000; ms += 50) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			it_pids[s->slot] = 0;
			s->pid = 0;
			it_fail(__FILE__, __LINE__, "node%d exited at start-up "
				"(status %d), log %s", i + 1, st, s->log);
		}
		int fd = tcp_connect_ip(ip[i], PORT, 500);
		if (fd >= 0) {
			close(fd);
			return;
		}
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "node%d did not start listening", i + 1);
}

/* ---- the checker: senders ------------------------------------------------------ */

struct srec {
	uint32_t n;     /* the sender's message number (in its id) */
	uint8_t conv;
	int rc;         /* 0 acknowledged, else the error (unknown outcome) */
	uint64_t seq;
};

struct sender {
	int user;
	pthread_t th;
	struct srec *rec;
	_Atomic uint32_t nrec;
};

static struct sender snd[NUSERS];
static atomic_int stop_send, stop_rec;
static _Atomic uint64_t acked_total;
static _Atomic uint64_t acked_max[NCONV]; /* largest acknowledged seq */
static uint8_t run_tag;

static void msg_id(uint8_t id[16], int user, uint32_t n)
{
	memset(id, 0, 16);
	id[0] = 0xc7;
	id[1] = (uint8_t)user;
	le_put32(id + 2, n);
	id[15] = run_tag;
}

/* user and number of one of our ids; -1 when it is not one */
static int id_parse(const uint8_t id[16], uint32_t *n)
{
	if (id[0] != 0xc7 || id[1] >= NUSERS || id[15] != run_tag)
		return -1;
	for (int k = 6; k < 15; k++)
		if (id[k])
			return -1;
	*n = le_get32(id + 2);
	return id[1];
}

static struct parley_client *nodes_client(const char *user, const char *dev,
					  parley_event_cb on_ev, void *arg)
{
	char *tok = it_token_for(user);
	struct parley_client_opts o = {
		.nodes = nodes_list, .token = tok, .device_id = dev,
		.connect_timeout_ms = 2000, .request_timeout_ms = 2000,
		.call_deadline_ms = 20000, .backoff_min_ms = 50,
		.backoff_max_ms = 500, .on_event = on_ev, .on_receipt = on_ev,
		.user = arg};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	struct parley_client *c = nodes_client(users[s->user], "sender", NULL, NULL);
	int mine[2], k = 0;
	for (int q = 0; q < NCONV; q++)
		if (conv_users[q][0] == s->user || conv_users[q][1] == s->user)
			mine[k++] = q;
	for (uint32_t n = 0; n < MAX_SENDS && !atomic_load(&stop_send); n++) {
		int q = mine[n % 2];
		uint8_t id[16];
		msg_id(id, s->user, n);
		char body[48];
		int bl = snprintf(body, sizeof body, "%s #%u", users[s->user], n);
		struct parley_send_result r;
		int rc = parley_client_send_id(c, conv_id[q], id, 1, body,
					       (size_t)bl, &r);
		s->rec[n] = (struct srec){.n = n, .conv = (uint8_t)q, .rc = rc,
					  .seq = rc ? 0 : r.seq};
		atomic_store(&s->nrec, n + 1);
		if (!rc) {
			atomic_fetch_add(&acked_total, 1);
			uint64_t cur = atomic_load(&acked_max[q]);
			while (r.seq > cur &&
			       !atomic_compare_exchange_weak(&acked_max[q], &cur, r.seq))
				;
		} else {
			printf("send %s #%u: %s (outcome unknown)\n",
			       users[s->user], n, parley_strerror(rc));
		}
		it_sleep_ms(4); /* a steady load, not a flood, on 2 shared cores */
	}
	parley_client_free(c);
	return NULL;
}

/* ---- the checker: recording devices -------------------------------------------- */

struct dev_ev {
	uint64_t inbox_seq, conv_seq;
	uint16_t kind;
	int8_t conv; /* -1: not one of ours */
	uint8_t id[16];
};

struct device {
	int user;
	pthread_t th;
	struct dev_ev *v;
	uint64_t n, cap;
	_Atomic uint64_t nmsg; /* MESSAGE events so far */
};

static struct device devs[NUSERS];

static void dev_on_event(void *user, const struct parley_event *ev)
{
	struct device *d = user;
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 1024;
		d->v = realloc(d->v, d->cap * sizeof *d->v);
		IT_CHECK(d->v);
	}
	struct dev_ev *x = &d->v[d->n++];
	x->inbox_seq = ev->inbox_seq;
	x->conv_seq = ev->conv_seq;
	x->kind = ev->kind;
	x->conv = -1;
	for (int q = 0; q < NCONV; q++)
		if (ev->conv.len == strlen(conv_id[q]) &&
		    !memcmp(ev->conv.p, conv_id[q], ev->conv.len))
			x->conv = (int8_t)q;
	memcpy(x->id, ev->client_msg_id, 16);
	if (ev->kind == PARLEY_EV_MESSAGE)
		atomic_fetch_add(&d->nmsg, 1);
}

static void *device_main(void *arg)
{
	struct device *d = arg;
	struct parley_client *c = nodes_client(users[d->user], "recorder",
					       dev_on_event, d);
	int rc;
	for (int tries = 0; (rc = parley_client_connect(c)) != 0; tries++) {
		IT_CHECK(tries < 100, "device of %s cannot connect: %s",
			 users[d->user], parley_strerror(rc));
		it_sleep_ms(100);
	}
	IT_OK(parley_client_subscribe(c, 1, NULL));
	while (!atomic_load(&stop_rec)) {
		rc = parley_client_poll(c, 50);
		if (rc < 0 && rc != -PARLEY_ETIMEDOUT)
			it_sleep_ms(50); /* reconnecting: the next poll retries */
	}
	parley_client_free(c);
	return NULL;
}

/* ---- the checker: the final verdict ---------------------------------------------- */

struct hmsg {
	uint8_t id[16];
	int present;
};

static struct hmsg *hist[NCONV];
static uint64_t hist_n[NCONV];

static uint64_t n_fail;
#define REPORT(...)                                                            \
	do {                                                                   \
		if (n_fail++ < 40)                                             \
			printf("CHECK: " __VA_ARGS__);                         \
	} while (0)

/* Reads every conversation's whole history through the cluster. */
static void read_history(void)
{
	struct parley_client *c[NUSERS];
	for (int u = 0; u < NUSERS; u++)
		c[u] = nodes_client(users[u], "reader", NULL, NULL);
	for (int q = 0; q < NCONV; q++) {
		struct parley_client *rc_ = c[conv_users[q][0]];
		uint64_t before = 0, cap = 0;
		uint64_t dup_seq = 0;
		for (;;) {
			const struct parley_history_page *pg;
			int rc = parley_client_history(rc_, conv_id[q], before,
						       100, &pg);
			IT_CHECK(rc == 0, "final HISTORY of conversation %d: %s",
				 q, parley_strerror(rc));
			for (uint16_t i = 0; i < pg->count; i++) {
				const struct parley_hist_msg *m = &pg->msgs[i];
				if (m->seq >= cap) {
					uint64_t nc = PARLEY_MAX(m->seq + 1, cap * 2);
					hist[q] = realloc(hist[q], nc * sizeof *hist[q]);
					IT_CHECK(hist[q]);
					memset(hist[q] + cap, 0,
					       (nc - cap) * sizeof *hist[q]);
					cap = nc;
				}
				if (hist[q][m->seq].present)
					dup_seq++;
				hist[q][m->seq].present = 1;
				memcpy(hist[q][m->seq].id, m->client_msg_id, 16);
				hist_n[q] = PARLEY_MAX(hist_n[q], m->seq);
			}
			if (!pg->count || !pg->next_before_seq)
				break;
			before = pg->next_before_seq;
		}
		if (dup_seq)
			REPORT("conversation %d: %" PRIu64 " seqs returned twice "
			       "by HISTORY\n", q, dup_seq);
	}
	for (int u = 0; u < NUSERS; u++)
		parley_client_free(c[u]);
}

static void check_history(uint64_t *acked, uint64_t *unknown_in)
{
	uint64_t lost = 0, changed = 0, dup = 0, skipped = 0, phantom = 0,
		 reordered = 0;
	*acked = *unknown_in = 0;
	/* where each (user, n) is in history: conv, seq (0 = absent) */
	static uint64_t *where[NUSERS];
	for (int u = 0; u < NUSERS; u++) {
		uint32_t nr = atomic_load(&snd[u].nrec);
		where[u] = calloc(nr ? nr : 1, sizeof *where[u]);
		IT_CHECK(where[u]);
	}
	for (int q = 0; q < NCONV; q++)
		for (uint64_t s = 1; s <= hist_n[q]; s++) {
			if (!hist[q][s].present) {
				skipped++;
				REPORT("conversation %d: seq %" PRIu64 " missing "
				       "(skipped) of 1..%" PRIu64 "\n", q, s,
				       hist_n[q]);
				continue;
			}
			uint32_t n;
			if (hist[q][s].id[0] == 0xc8 &&
			    hist[q][s].id[15] == run_tag) {
				phantom++;
				REPORT("conversation %d seq %" PRIu64 ": a SEND "
				       "refused by a cut-off node was committed\n",
				       q, s);
				continue;
			}
			int u = id_parse(hist[q][s].id, &n);
			if (u < 0 || n >= atomic_load(&snd[u].nrec) ||
			    snd[u].rec[n].conv != q) {
				phantom++;
				REPORT("conversation %d seq %" PRIu64 ": a message "
				       "nobody sent there\n", q, s);
				continue;
			}
			if (where[u][n]) {
				dup++;
				REPORT("%s #%u duplicated: conversation %d seqs "
				       "%" PRIu64 " and %" PRIu64 "\n", users[u],
				       n, q, where[u][n], s);
				continue;
			}
			where[u][n] = s;
		}
	for (int u = 0; u < NUSERS; u++) {
		uint32_t nr = atomic_load(&snd[u].nrec);
		uint64_t last[NCONV] = {0};
		for (uint32_t n = 0; n < nr; n++) {
			const struct srec *r = &snd[u].rec[n];
			if (r->rc) {
				*unknown_in += where[u][n] != 0;
				continue;
			}
			(*acked)++;
			if (!where[u][n]) {
				lost++;
				REPORT("LOST: %s #%u acknowledged at conversation "
				       "%d seq %" PRIu64 ", not in history\n",
				       users[u], n, r->conv, r->seq);
				continue;
			}
			if (where[u][n] != r->seq) {
				changed++;
				REPORT("SEQ CHANGED: %s #%u acknowledged at seq "
				       "%" PRIu64 ", in history at %" PRIu64 "\n",
				       users[u], n, r->seq, where[u][n]);
			}
			if (r->seq <= last[r->conv]) {
				reordered++;
				REPORT("REORDERED: %s #%u at seq %" PRIu64 " after "
				       "an earlier message at %" PRIu64 "\n",
				       users[u], n, r->seq, last[r->conv]);
			}
			last[r->conv] = r->seq;
		}
		free(where[u]);
	}
	printf("history: %" PRIu64 "/%" PRIu64 "/%" PRIu64 " messages; "
	       "lost %" PRIu64 ", seq changed %" PRIu64 ", duplicated %" PRIu64
	       ", skipped %" PRIu64 ", never sent %" PRIu64 ", reordered %" PRIu64
	       "\n", hist_n[0], hist_n[1], hist_n[2], lost, changed, dup,
	       skipped, phantom, reordered);
}

/* Messages of the user's conversations in history. */
static uint64_t user_msgs(int u)
{
	uint64_t n = 0;
	for (int q = 0; q < NCONV; q++)
		if (conv_users[q][0] == u || conv_users[q][1] == u)
			n += hist_n[q];
	return n;
}

static void check_devices(void)
{
	/* every device gets every message of its conversations: wait
	 * (bounded), then a little longer for anything doubled */
	for (int ms = 0; ms < WAIT_MS; ms += 100) {
		bool all = true;
		for (int u = 0; u < NUSERS; u++)
			all &= atomic_load(&devs[u].nmsg) >= user_msgs(u);
		if (all)
			break;
		it_sleep_ms(100);
	}
	it_sleep_ms(500);
	atomic_store(&stop_rec, 1);
	for (int u = 0; u < NUSERS; u++)
		pthread_join(devs[u].th, NULL);
	for (int u = 0; u < NUSERS; u++) {
		struct device *d = &devs[u];
		uint64_t gaps = 0, lost = 0, dup = 0, changed = 0, order = 0,
			 foreign = 0;
		for (uint64_t i = 0; i < d->n; i++)
			if (d->v[i].inbox_seq != i + 1) {
				gaps++;
				/* libparley drops repeats and resubscribes on
				 * a gap, so a hole here is an event it took
				 * but did not deliver: a kind it does not know
				 * (the server's kind-0 placeholder for a
				 * message it could not read) */
				REPORT("%s's device: event %" PRIu64 " has inbox seq "
				       "%" PRIu64 " (skipped)\n",
				       users[u], i, d->v[i].inbox_seq);
				break;
			}
		for (int q = 0; q < NCONV; q++) {
			if (conv_users[q][0] != u && conv_users[q][1] != u)
				continue;
			uint32_t *cnt = calloc(hist_n[q] + 1, sizeof *cnt);
			IT_CHECK(cnt);
			uint64_t last = 0;
			for (uint64_t i = 0; i < d->n; i++) {
				const struct dev_ev *x = &d->v[i];
				if (x->conv != q)
					continue;
				if (x->kind != PARLEY_EV_MESSAGE)
					continue;
				if (x->conv_seq < 1 || x->conv_seq > hist_n[q] ||
				    memcmp(hist[q][x->conv_seq].id, x->id, 16)) {
					changed++;
					REPORT("%s's device: conversation %d seq "
					       "%" PRIu64 " delivered with another "
					       "id than history has\n", users[u], q,
					       x->conv_seq);
					continue;
				}
				if (cnt[x->conv_seq]++)
					dup++;
				if (x->conv_seq < last)
					order++;
				last = PARLEY_MAX(last, x->conv_seq);
			}
			for (uint64_t s = 1; s <= hist_n[q]; s++)
				if (!cnt[s]) {
					lost++;
					REPORT("%s's device: conversation %d seq "
					       "%" PRIu64 " never delivered\n",
					       users[u], q, s);
				}
			free(cnt);
		}
		for (uint64_t i = 0; i < d->n; i++)
			foreign += d->v[i].conv < 0 && d->v[i].kind == PARLEY_EV_MESSAGE;
		if (dup)
			REPORT("%s's device: %" PRIu64 " messages delivered more "
			       "than once\n", users[u], dup);
		if (foreign)
			REPORT("%s's device: %" PRIu64 " messages of unknown "
			       "conversations\n", users[u], foreign);
		printf("device %s: %" PRIu64 " events; inbox gaps %" PRIu64
		       ", lost %" PRIu64 ", duplicated %" PRIu64 ", other id %"
		       PRIu64 ", delivered out of conv order %" PRIu64
		       " (reported, allowed)\n", users[u], d->n, gaps, lost, dup,
		       changed, order);
		free(d->v);
	}
}

/* ---- scenario steps -------------------------------------------------------------- */

/* Until n more SENDs were acknowledged (the cluster makes progress). */
static void wait_acks(uint64_t n, const char *what)
{
	uint64_t to = atomic_load(&acked_total) + n;
	for (int ms = 0; ms < WAIT_MS; ms += 20) {
		if (atomic_load(&acked_total) >= to)
			return;
		it_sleep_ms(20);
	}
	it_fail(__FILE__, __LINE__, "no progress (%s): %" PRIu64 " of %" PRIu64
		" acknowledgements", what, atomic_load(&acked_total), to);
}

/* HISTORY asked of node i alone: an answer must hold every message
 * acknowledged before the question; an error (NOTLEADER, AGAIN) is fine.
 * Returns the answers that were errors. */
static int probe_history(int i, int *answers)
{
	int errors = 0;
	for (int q = 0; q < NCONV; q++) {
		uint64_t floor = atomic_load(&acked_max[q]);
		char *tok = it_token_for(users[conv_users[q][0]]);
		/* one attempt: the answer, or the node's refusal (a node
		 * without a leader refuses once its read's bound of 3
		 * election timeouts passed), not libparley's retries of it */
		struct parley_client_opts o = {
			.host = ip[i], .port = PORT, .token = tok,
			.device_id = "probe", .connect_timeout_ms = 2000,
			.request_timeout_ms = 4000, .call_deadline_ms = 5000,
			.backoff_min_ms = 5000, .backoff_max_ms = 5000,
			.no_reconnect = 1};
		struct parley_client *c = NULL;
		IT_OK(parley_client_new(&o, &c));
		int rc = parley_client_connect(c);
		const struct parley_history_page *pg = NULL;
		if (!rc)
			rc = parley_client_history(c, conv_id[q], 0, 1, &pg);
		if (rc) {
			errors++;
			printf("  HISTORY of conversation %d on node%d: %s\n", q,
			       i + 1, parley_strerror(rc));
		} else {
			uint64_t newest = pg->count ? pg->msgs[0].seq : 0;
			(*answers)++;
			IT_CHECK(newest >= floor, "STALE READ: node%d answered "
				 "HISTORY of conversation %d with newest seq %"
				 PRIu64 " after seq %" PRIu64 " was acknowledged",
				 i + 1, q, newest, floor);
		}
		parley_client_free(c);
		free(tok);
	}
	return errors;
}

/* CONV_LIST asked of node i alone by user u: an answer must show, for
 * each of u's conversations, a last seq at least the largest acknowledged
 * before the question (the list's reads are linearizable); an error
 * (NOTLEADER, AGAIN) is fine. Returns the answers that were errors. */
static int probe_conv_list(int i, int u, int *answers)
{
	uint64_t floor[NCONV];
	for (int q = 0; q < NCONV; q++)
		floor[q] = atomic_load(&acked_max[q]);
	char *tok = it_token_for(users[u]);
	struct parley_client_opts o = {
		.host = ip[i], .port = PORT, .token = tok,
		.device_id = "probe", .connect_timeout_ms = 2000,
		.request_timeout_ms = 4000, .call_deadline_ms = 5000,
		.backoff_min_ms = 5000, .backoff_max_ms = 5000,
		.no_reconnect = 1};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	int rc = parley_client_connect(c);
	const struct parley_conv_list_ok *l = NULL;
	if (!rc)
		rc = parley_client_conv_list(c, 100, &l);
	int errors = 0;
	if (rc) {
		errors++;
		printf("  CONV_LIST of %s on node%d: %s\n", users[u], i + 1,
		       parley_strerror(rc));
	} else {
		(*answers)++;
		for (int q = 0; q < NCONV; q++) {
			if (conv_users[q][0] != u && conv_users[q][1] != u)
				continue;
			uint64_t last = 0;
			for (uint32_t k = 0; k < l->count; k++)
				if (l->entries[k].conv.len == strlen(conv_id[q]) &&
				    !memcmp(l->entries[k].conv.p, conv_id[q],
					    l->entries[k].conv.len))
					last = l->entries[k].last_seq;
			IT_CHECK(last >= floor[q], "STALE READ: node%d answered "
				 "CONV_LIST of %s with conversation %d at seq %"
				 PRIu64 " after seq %" PRIu64 " was acknowledged",
				 i + 1, users[u], q, last, floor[q]);
		}
	}
	parley_client_free(c);
	free(tok);
	return errors;
}

/* A SEND through node i alone (cut off from the other servers): it must
 * not be acknowledged. Its id (0xc8...) must never show up in history
 * either: the cut-off node cannot have replicated it, and after healing
 * its log's uncommitted tail is replaced by the new leader's. */
static int n_refused_probes;

static void probe_send(int i)
{
	char *tok = it_token_for(users[0]);
	struct parley_client_opts o = {
		.host = ip[i], .port = PORT, .token = tok, .device_id = "probe",
		.connect_timeout_ms = 2000, .request_timeout_ms = 2000,
		.call_deadline_ms = 3000, .no_reconnect = 1};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	int rc = parley_client_connect(c);
	if (!rc) {
		uint8_t id[16] = {0xc8, (uint8_t)n_refused_probes, [15] = run_tag};
		struct parley_send_result r;
		rc = parley_client_send_id(c, conv_id[0], id, 1, "probe", 5, &r);
		IT_CHECK(rc != 0, "node%d, cut off, acknowledged a SEND at seq %"
			 PRIu64, i + 1, r.seq);
	}
	printf("  SEND on cut-off node%d: %s\n", i + 1, parley_strerror(rc));
	n_refused_probes++;
	parley_client_free(c);
	free(tok);
}

static unsigned all_mask(void) { return (1u << NSRV) - 1; }

static void scenario_isolate_leader(void)
{
	int L = wait_leader(all_mask(), -1, "before isolating the leader");
	printf("isolating leader node%d\n", L + 1);
	fault_isolate(L);
	unsigned rest = all_mask() & ~(1u << L);
	int M = wait_leader(rest, L, "the majority after the leader was cut off");
	printf("majority elected node%d\n", M + 1);
	wait_acks(30, "majority after isolating the leader");
	/* the deposed leader must not answer HISTORY with stale data; the
	 * new leader (through the node list) answers with current data */
	int errs = 0, answers = 0;
	int lerrs = 0, lanswers = 0;
	for (int k = 0; k < 3; k++) {
		errs += probe_history(L, &answers);
		lerrs += probe_conv_list(L, k % NUSERS, &lanswers);
		wait_acks(5, "majority while probing the old leader");
	}
	probe_send(L);
	int good = 0, lgood = 0;
	probe_history(M, &good);
	for (int u = 0; u < NUSERS; u++)
		probe_conv_list(M, u, &lgood);
	printf("old leader node%d: %d HISTORY refusals, %d current answers, "
	       "%d CONV_LIST refusals, %d current; new leader answered %d of "
	       "%d HISTORY, %d of %d CONV_LIST\n", L + 1, errs, answers, lerrs,
	       lanswers, good, NCONV, lgood, NUSERS);
	IT_CHECK(good == NCONV, "the new leader refused HISTORY");
	IT_CHECK(lgood == NUSERS, "the new leader refused CONV_LIST");
	fault_heal();
	int L2 = wait_leader(all_mask(), -1, "after healing the isolated leader");
	printf("healed: node%d leads, all three agree\n", L2 + 1);
	wait_acks(20, "after healing");
}

static void scenario_one_way(void)
{
	int L = wait_leader(all_mask(), -1, "before one-way loss");
	printf("one-way loss: the followers stop hearing leader node%d\n", L + 1);
	for (int j = 0; j < NSRV; j++)
		if (j != L)
			fault_drop_from(j, L);
	int M = wait_leader(all_mask() & ~(1u << L), L,
			    "the followers deaf to their leader");
	printf("followers elected node%d\n", M + 1);
	wait_acks(30, "under one-way loss");
	fault_heal();
	wait_leader(all_mask(), -1, "after healing one-way loss");
	wait_acks(20, "after healing one-way loss");
}

static void scenario_flap(int cycles)
{
	for (int k = 0; k < cycles; k++) {
		int v = (int)parley_rng_below(&it_rng, NSRV);
		unsigned hold = 200 + (unsigned)parley_rng_below(&it_rng, 1200);
		unsigned rest = 200 + (unsigned)parley_rng_below(&it_rng, 1200);
		printf("flap %d: node%d cut off for %u ms, then %u ms healed\n",
		       k, v + 1, hold, rest);
		fault_isolate(v);
		it_sleep_ms(hold);
		fault_heal();
		it_sleep_ms(rest);
	}
	wait_leader(all_mask(), -1, "after flapping");
	wait_acks(20, "after flapping");
}

static void scenario_kill(int kills)
{
	for (int k = 0; k < kills; k++) {
		int L = wait_leader(all_mask(), -1, "before a kill");
		wait_acks(10 + parley_rng_below(&it_rng, 30), "before a kill");
		printf("kill %d: kill -9 leader node%d\n", k, L + 1);
		kill(srv[L].pid, SIGKILL);
		waitpid(srv[L].pid, NULL, 0);
		it_pids[srv[L].slot] = 0;
		srv[L].pid = 0;
		int M = wait_leader(all_mask() & ~(1u << L), L,
				    "the survivors after a kill");
		wait_acks(20, "after a kill");
		printf("kill %d: node%d leads; restarting node%d\n", k, M + 1, L + 1);
		node_start(L);
		wait_leader(all_mask(), -1, "after restarting a killed node");
	}
	wait_acks(20, "after the kills");
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "short";
	bool longrun = !strcmp(mode, "long");
	setvbuf(stdout, NULL, _IOLBF, 0); /* findings survive it_fail's _exit */
	it_init(longrun ? "cluster_netns_long" : "cluster_netns");
	const char *p = getenv("NETNS_PREFIX"), *s = getenv("NETNS_SUBNET"),
		   *sd = getenv("PARLEY_SRC_DIR");
	bin_dir = getenv("PARLEY_BIN_DIR");
	if (!p || !s || !sd || !bin_dir) {
		fprintf(stderr, "run through test_cluster_netns.sh (NETNS_PREFIX, "
			"NETNS_SUBNET, PARLEY_SRC_DIR, PARLEY_BIN_DIR)\n");
		return 1;
	}
	snprintf(prefix, sizeof prefix, "%s", p);
	snprintf(subnet, sizeof subnet, "%s", s);
	snprintf(src_dir, sizeof src_dir, "%s", sd);
	run_tag = (uint8_t)(1 + parley_rng_below(&it_rng, 255));
	int n = 0;
	for (int i = 0; i < NSRV; i++) {
		snprintf(ip[i], sizeof ip[i], "%s.%d", subnet, i + 1);
		srv[i].slot = -1;
		n += snprintf(nodes_list + n, sizeof nodes_list - (size_t)n,
			      "%s%s:%d", i ? "," : "", ip[i], PORT);
	}
	for (int i = 0; i < NSRV; i++)
		node_start(i);
	int L0 = wait_leader(all_mask(), -1, "at start");
	printf("node%d leads at start\n", L0 + 1);

	struct parley_client *c[NUSERS];
	for (int u = 0; u < NUSERS; u++) {
		c[u] = nodes_client(users[u], "setup", NULL, NULL);
		IT_OK(parley_client_connect(c[u]));
	}
	for (int q = 0; q < NCONV; q++) {
		const struct parley_conv *cv;
		int rc = parley_client_conv_open(c[conv_users[q][0]],
						 users[conv_users[q][1]], &cv);
		IT_CHECK(rc == 0, "conv_open: %s", parley_strerror(rc));
		snprintf(conv_id[q], sizeof conv_id[q], "%.*s", (int)cv->conv.len,
			 cv->conv.p);
	}
	for (int u = 0; u < NUSERS; u++)
		parley_client_free(c[u]);

	for (int u = 0; u < NUSERS; u++) {
		devs[u].user = u;
		IT_CHECK(pthread_create(&devs[u].th, NULL, device_main, &devs[u]) == 0);
	}
	for (int u = 0; u < NUSERS; u++) {
		snd[u].user = u;
		snd[u].rec = calloc(MAX_SENDS, sizeof *snd[u].rec);
		IT_CHECK(snd[u].rec);
		IT_CHECK(pthread_create(&snd[u].th, NULL, sender_main, &snd[u]) == 0);
	}
	wait_acks(50, "at start");

	scenario_isolate_leader();
	scenario_one_way();
	scenario_flap(longrun ? 20 : 4);
	if (longrun) {
		scenario_isolate_leader();
		scenario_kill(10);
		scenario_one_way();
	}

	atomic_store(&stop_send, 1);
	for (int u = 0; u < NUSERS; u++)
		pthread_join(snd[u].th, NULL);
	wait_leader(all_mask(), -1, "at the end");
	read_history();
	uint64_t acked, unknown_in;
	check_history(&acked, &unknown_in);
	check_devices();
	uint64_t unknown = 0;
	for (int u = 0; u < NUSERS; u++)
		for (uint32_t k = 0; k < atomic_load(&snd[u].nrec); k++)
			unknown += snd[u].rec[k].rc != 0;
	printf("%" PRIu64 " SENDs acknowledged, %" PRIu64 " failed (%" PRIu64
	       " of those committed anyway)\n", acked, unknown, unknown_in);
	IT_CHECK(n_fail == 0, "%" PRIu64 " checker findings (above)", n_fail);
	for (int i = 0; i < NSRV; i++)
		IT_CHECK(it_server_stop(&srv[i], SIGTERM, 15000) == 0,
			 "node%d did not stop cleanly", i + 1);
	printf("PASS\n");
	return 0;
}
