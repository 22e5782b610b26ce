/*
 * test_cluster_tail.c — inbox tails served from any node (docs/CLUSTER.md
 * §3.3, "Inbox tails across nodes").
 *
 * Three founders and a fourth node added at run time (64 partitions, the
 * default replication factor 3, leadership follow0): each partition is on
 * three of the four nodes. From every node's GET /cluster the test picks
 * a user bob<k> and a node X that holds no replica of the partition of
 * bob's inbox (u/bob<k>), and asserts that from the placement. Then:
 *   1. bob's device connects to X alone (host/port, never moving) and
 *      SYNCs from inbox seq 1; alice, also through X, sends to the 1:1
 *      conversation with her own client_msg_ids (a retried SEND keeps its
 *      id); X's /metrics shows one remote tail open;
 *   2. under that load the node serving the tail (the one whose /metrics
 *      shows a tail served, a replica of the inbox partition) is killed
 *      with kill -9; the device stays connected to X, whose tail
 *      re-subscribes (parley_tail_resubscribes_total);
 *   3. the inbox partition's leadership is moved (POST /cluster/transfer)
 *      to another live replica, still under load (and, follow0, handed
 *      back to partition 0's leader);
 *   4. once the load stopped and the device holds every acknowledged
 *      message: the device's EVENTs carry inbox seqs 1, 2, 3, ... in
 *      order (nothing skipped, nothing twice); each message of the
 *      conversation reached it once; and the set it got is exactly the
 *      conversation's final HISTORY (read through X), which holds every
 *      acknowledged SEND at its seq.
 *   5. a device on X that reads its EVENTs but never acknowledges gets at
 *      most an event window of them, then GOAWAY SLOW_CONSUMER (the
 *      holder's slow-consumer rule, passed on by X), then EOF; no tail
 *      stays open on X or on any holder.
 * Before the relay a SYNC on X was refused NOTLEADER (step 1 fails).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "cluster_itest.h"

#define NP 64 /* the default: the meta group is partitions 0 and 32 */
#define ALL 4
#define MAXMSG 4096

static struct it_server nx;              /* node 4 */
static struct it_server *node[ALL];      /* node i + 1 */
static char conv[96], peer_user[32];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t acked_id[MAXMSG][16];
static bool acked[MAXMSG];
static int nacked;
static atomic_bool stop, dev_stop;
static uint16_t via_port;                /* node X's client port */
/* step 5: a window the inbox outgrows, a short slow-consumer bound */
#define WINDOW 32
static const char *slow_args[] = {"--event-window", "32",
				  "--slow-consumer-ms", "2000", NULL};

static struct parley_client *client_at(uint16_t port, const char *user,
				       const char *device,
				       parley_event_cb on_event, void *arg)
{
	char *tok = it_token_for(user);
	struct parley_client_opts o = {
		.host = "127.0.0.1", .port = port, .token = tok,
		.device_id = device, .connect_timeout_ms = 2000,
		.request_timeout_ms = 3000, .call_deadline_ms = 20000,
		.backoff_min_ms = 50, .backoff_max_ms = 500,
		.on_event = on_event, .on_receipt = on_event, .user = arg};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

static void *sender(void *arg)
{
	(void)arg;
	struct parley_client *c = client_at(via_port, "alice", "sender", NULL,
					    NULL);
	for (uint32_t i = 0; !atomic_load(&stop) && i < MAXMSG - 1; i++) {
		uint8_t id[16] = {0};
		memcpy(id, &i, sizeof i);
		id[15] = 0x7a;
		char body[32];
		int bl = snprintf(body, sizeof body, "m%u", i);
		struct parley_send_result r;
		if (parley_client_send_id(c, conv, id, 1, body, (size_t)bl, &r))
			continue; /* outcome unknown: not counted */
		IT_CHECK(r.seq >= 1 && r.seq < MAXMSG, "seq %" PRIu64, r.seq);
		pthread_mutex_lock(&mu);
		IT_CHECK(!acked[r.seq - 1] ||
			 !memcmp(acked_id[r.seq - 1], id, 16),
			 "seq %" PRIu64 " acknowledged for two messages", r.seq);
		if (!acked[r.seq - 1])
			nacked++;
		acked[r.seq - 1] = true;
		memcpy(acked_id[r.seq - 1], id, 16);
		pthread_mutex_unlock(&mu);
		it_sleep_ms(5);
	}
	parley_client_free(c);
	return NULL;
}

static int acked_now(void)
{
	pthread_mutex_lock(&mu);
	int n = nacked;
	pthread_mutex_unlock(&mu);
	return n;
}

static void wait_more_acks(int more, const char *when)
{
	int want = acked_now() + more;
	for (int t = 0; t < 600 && acked_now() < want; t++)
		it_sleep_ms(50);
	IT_CHECK(acked_now() >= want, "no SEND acknowledged %s (%d acked)",
		 when, acked_now());
}

/* ---- bob's device on X: every EVENT it gets, in order ---- */

static struct dev {
	uint64_t n, cap;
	struct dev_ev {
		uint64_t inbox_seq, conv_seq;
		uint16_t kind;
		char conv[96];
	} *v;
} dev;

static void dev_on_event(void *user, const struct parley_event *ev)
{
	(void)user;
	pthread_mutex_lock(&mu);
	if (dev.n == dev.cap) {
		dev.cap = dev.cap ? dev.cap * 2 : 256;
		dev.v = realloc(dev.v, dev.cap * sizeof *dev.v);
		IT_CHECK(dev.v);
	}
	struct dev_ev *x = &dev.v[dev.n++];
	x->inbox_seq = ev->inbox_seq;
	x->conv_seq = ev->conv_seq;
	x->kind = ev->kind;
	snprintf(x->conv, sizeof x->conv, "%.*s", (int)ev->conv.len, ev->conv.p);
	pthread_mutex_unlock(&mu);
}

static void *device(void *arg)
{
	struct parley_client *c = arg;
	while (!atomic_load(&dev_stop))
		(void)parley_client_poll(c, 50);
	return NULL;
}

/* Messages of conv the device holds that were acknowledged (once each:
 * doubles are checked at the end). */
static int dev_acked_msgs(void)
{
	static bool seen[MAXMSG];
	memset(seen, 0, sizeof seen);
	int got = 0;
	pthread_mutex_lock(&mu);
	for (uint64_t i = 0; i < dev.n; i++) {
		const struct dev_ev *e = &dev.v[i];
		if (e->kind == PARLEY_EV_MESSAGE && !strcmp(e->conv, conv) &&
		    e->conv_seq >= 1 && e->conv_seq < MAXMSG &&
		    acked[e->conv_seq - 1] && !seen[e->conv_seq - 1]) {
			seen[e->conv_seq - 1] = true;
			got++;
		}
	}
	pthread_mutex_unlock(&mu);
	return got;
}

/* The conversation's HISTORY through port: seen[s - 1] for each seq s;
 * every acknowledged SEND is there with its client_msg_id. */
static void history_via(uint16_t port, bool *seen)
{
	char *tok = it_token_for("alice");
	struct parley_client_opts o = {
		.host = "127.0.0.1", .port = port, .token = tok,
		.device_id = "reader", .connect_timeout_ms = 2000,
		.request_timeout_ms = 3000, .call_deadline_ms = 20000,
		.backoff_min_ms = 50, .backoff_max_ms = 500};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	IT_OK(parley_client_connect(c));
	uint64_t before = 0;
	pthread_mutex_lock(&mu);
	for (;;) {
		const struct parley_history_page *pg;
		IT_OK(parley_client_history(c, conv, before, 100, &pg));
		for (uint16_t k = 0; k < pg->count; k++) {
			const struct parley_hist_msg *m = &pg->msgs[k];
			IT_CHECK(m->seq >= 1 && m->seq < MAXMSG, "seq %" PRIu64,
				 m->seq);
			IT_CHECK(!seen[m->seq - 1], "seq %" PRIu64 " twice", m->seq);
			seen[m->seq - 1] = true;
			IT_CHECK(!acked[m->seq - 1] ||
				 !memcmp(acked_id[m->seq - 1], m->client_msg_id, 16),
				 "seq %" PRIu64 ": another message than the one "
				 "acknowledged", m->seq);
		}
		if (!pg->count || !pg->next_before_seq)
			break;
		before = pg->next_before_seq;
	}
	for (int s = 0; s < MAXMSG; s++)
		IT_CHECK(!acked[s] || seen[s], "acknowledged seq %d missing from "
			 "the history", s + 1);
	pthread_mutex_unlock(&mu);
	parley_client_free(c);
}

/* The live node whose /metrics shows a tail served now (-1: none). */
static int serving_node(const bool *alive)
{
	for (int i = 0; i < ALL; i++)
		if (alive[i] && it_metric_get(node[i]->admin_port,
					       "parley_tail_served_open") > 0)
			return i;
	return -1;
}

static int wait_serving(const bool *alive, const char *when)
{
	int s = -1;
	for (int t = 0; t < 400 && s < 0; t++) {
		s = serving_node(alive);
		if (s < 0)
			it_sleep_ms(50);
	}
	IT_CHECK(s >= 0, "no node serves bob's tail %s", when);
	return s;
}

/* POST path to each admin port until one answers other than 409. */
static int admin_post(const uint16_t *ports, int n, const char *path,
		      char *body, size_t cap)
{
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < n; i++) {
			char req[512];
			snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: t\r\n"
				 "Content-Length: 0\r\n\r\n", path);
			int code = 0;
			char *r = it_http_raw(ports[i], req, strlen(req), 70000,
					      &code);
			snprintf(body, cap, "%s", r ? r : "");
			free(r);
			if (code && code != 409)
				return code;
		}
		it_sleep_ms(200);
	}
	return 0;
}

/* ---- reading GET /cluster ---- */

struct pv {
	bool found, leader;
	uint64_t term;
	int voters[ALL + 4], nv, learners[ALL + 4], nl;
	char placement[160]; /* the "placement" object as text */
};

static int ids_of(const char *a, int *out)
{
	int n = 0;
	if (!a || *a != '[')
		return 0;
	for (a++; *a && *a != ']';) {
		char *e;
		long v = strtol(a, &e, 10);
		if (e == a)
			break;
		out[n++] = (int)v;
		a = *e == ',' ? e + 1 : e;
	}
	return n;
}

static void part_view(const char *doc, int p, struct pv *v)
{
	memset(v, 0, sizeof *v);
	char pat[48];
	snprintf(pat, sizeof pat, "{\"partition\":%d,", p);
	const char *s = doc ? strstr(doc, pat) : NULL;
	if (!s)
		return;
	const char *end = strstr(s + 1, "{\"partition\":");
	size_t len = end ? (size_t)(end - s) : strlen(s);
	char *o = strndup(s, len);
	v->found = true;
	v->leader = strstr(o, "\"role\":\"leader\"") != NULL;
	const char *t = strstr(o, "\"term\":");
	v->term = t ? strtoull(t + 7, NULL, 10) : 0;
	const char *pl = strstr(o, "\"placement\":");
	/* the configuration's arrays come before the placement object */
	const char *vo = strstr(o, "],\"voters\":");
	if (vo && (!pl || vo < pl))
		v->nv = ids_of(vo + 11, v->voters);
	const char *le = strstr(o, "],\"learners\":");
	if (le && (!pl || le < pl))
		v->nl = ids_of(le + 13, v->learners);
	if (pl) {
		const char *pe = strchr(pl, '}');
		snprintf(v->placement, sizeof v->placement, "%.*s",
			 pe ? (int)(pe - pl) : 0, pl);
	}
	free(o);
}

static char *node_doc(int i)
{
	int code = 0;
	char *b = it_http_get(node[i]->admin_port, "/cluster", &code);
	if (code != 200) {
		free(b);
		return NULL;
	}
	return b;
}

/* The leader's view of partition p over the live nodes (highest term). */
static int leader_view(int p, const bool *alive, struct pv *out)
{
	int who = -1;
	memset(out, 0, sizeof *out);
	for (int i = 0; i < ALL; i++) {
		if (!alive[i])
			continue;
		char *d = node_doc(i);
		struct pv v;
		part_view(d, p, &v);
		free(d);
		if (v.found && v.leader && (who < 0 || v.term > out->term)) {
			*out = v;
			who = i;
		}
	}
	return who;
}

static bool has(const int *a, int n, int x)
{
	for (int i = 0; i < n; i++)
		if (a[i] == x)
			return true;
	return false;
}

static int meta_parts(int *out)
{
	char *d = node_doc(0);
	static const char pat[] = "\"meta\":{\"partitions\":";
	const char *m = d ? strstr(d, pat) : NULL;
	int n = m ? ids_of(m + strlen(pat), out) : 0;
	free(d);
	return n;
}

static uint32_t part_of_key(const char *key)
{
	return (uint32_t)(parley_hash_key(key, strlen(key)) % NP);
}


int main(void)
{
	it_init("cluster_tail");
	cluster_partitions = "64";
	/* one node leads every partition (add-node is asked of it, as in
	 * test_cluster_placement); a partition handed elsewhere (step 3)
	 * comes back to it, so its leadership moves twice */
	cluster_follow0 = true;
	cluster_init("87");
	for (int i = 0; i < NODES; i++) {
		int k = 0;
		while (srv[i].extra[k])
			k++;
		for (int j = 0; slow_args[j]; j++)
			srv[i].extra[k++] = slow_args[j];
		srv[i].extra[k] = NULL;
		node[i] = &srv[i];
		it_server_start(&srv[i]);
	}
	/* node 4: empty, the founders as bootstrap, then added */
	static char peers_x[256], pport[8];
	uint16_t admins[ALL];
	for (int i = 0; i < NODES; i++)
		admins[i] = srv[i].admin_port;
	it_server_init(&nx, "node4");
	node[3] = &nx;
	uint16_t pp;
	do /* not one of the ports node4 was given */
		pp = it_free_port();
	while (pp == nx.port || pp == nx.tls_port || pp == nx.admin_port);
	snprintf(pport, sizeof pport, "%u", pp);
	int m = 0;
	for (int i = 0; i < NODES; i++) /* extra[5]: the peer port */
		m += snprintf(peers_x + m, sizeof peers_x - (size_t)m,
			      "%s%d=127.0.0.1:%s", i ? "," : "", i + 1,
			      srv[i].extra[5]);
	const char *x[] = {"--node-id", "4", "--cluster-id", "87",
			   "--peer-port", pport, "--peers", peers_x,
			   "--founders", "1,2,3", "--raft-tick-ms", "20",
			   "--partitions", "64", "--loops", "1",
			   "--leader-placement", "follow0", NULL};
	int xk = 0;
	for (; x[xk]; xk++)
		nx.extra[xk] = x[xk];
	for (int j = 0; slow_args[j]; j++)
		nx.extra[xk++] = slow_args[j];
	nx.extra[xk] = NULL;
	it_server_start(&nx);
	admins[3] = nx.admin_port;
	char path[256], body[1024];
	snprintf(path, sizeof path, "/cluster/add-node?id=4&peer=127.0.0.1:%u"
		 "&client=127.0.0.1:%u&admin=127.0.0.1:%u", pp, nx.port,
		 nx.admin_port);
	int code = admin_post(admins, NODES, path, body, sizeof body);
	IT_CHECK(code == 200 && strstr(body, "is a voter of"),
		 "add-node 4: %d %s", code, body);

	/* the placement: each partition's voters, from its leader's view */
	bool alive[ALL] = {true, true, true, true};
	int meta[2];
	int nmeta = meta_parts(meta);
	IT_CHECK(nmeta >= 1 && meta[0] == 0, "no meta group in /cluster");
	static int voters_of[NP][ALL + 4];
	static int nvoters[NP];
	for (int p = 0; p < NP; p++) {
		if (has(meta, nmeta, p))
			continue;
		struct pv v;
		int who = -1;
		for (int t = 0; t < 200; t++) {
			who = leader_view(p, alive, &v);
			if (who >= 0 && v.nv == 3 && !v.nl &&
			    strstr(v.placement, "\"matches\":true"))
				break;
			it_sleep_ms(50);
		}
		IT_CHECK(who >= 0 && v.nv == 3 && !v.nl, "partition %d: %d voters, "
			 "%d learners", p, v.nv, v.nl);
		nvoters[p] = v.nv;
		memcpy(voters_of[p], v.voters, sizeof voters_of[p]);
	}
	/* bob<k> whose inbox partition X does not hold (and not the meta
	 * group's, which all four may hold) */
	int X = -1;
	uint32_t ip = 0;
	for (int k = 0; k < 500 && X < 0; k++) {
		char inbox[64];
		snprintf(peer_user, sizeof peer_user, "bob%d", k);
		snprintf(inbox, sizeof inbox, "u/%s", peer_user);
		ip = part_of_key(inbox);
		if (has(meta, nmeta, (int)ip))
			continue;
		for (int i = 0; i < ALL && X < 0; i++)
			if (!has(voters_of[ip], nvoters[ip], i + 1))
				X = i;
	}
	IT_CHECK(X >= 0, "no user fits (seeded by names only)");
	snprintf(conv, sizeof conv, "d:alice:%s", peer_user);
	printf("%s's inbox is partition %u, on nodes %d %d %d; the device "
	       "connects to node%d\n", peer_user, ip, voters_of[ip][0],
	       voters_of[ip][1], voters_of[ip][2], X + 1);
	/* asserted from every node's /cluster placement */
	for (int i = 0; i < ALL; i++) {
		char *d = node_doc(i);
		struct pv w;
		part_view(d, (int)ip, &w);
		free(d);
		const char *pv = strstr(w.placement, "\"voters\":[");
		int pl[ALL + 4];
		int npl = pv ? ids_of(pv + 9, pl) : 0;
		IT_CHECK(npl == 3 && !has(pl, npl, X + 1), "node%d's placement of "
			 "partition %u: %s", i + 1, ip, w.placement);
		for (int k = 0; k < npl; k++)
			IT_CHECK(has(voters_of[ip], nvoters[ip], pl[k]),
				 "node%d's placement of partition %u: %s", i + 1,
				 ip, w.placement);
	}
	via_port = node[X]->port;

	/* 1. the device on X, alice sending through X */
	struct parley_client *c = client_at(via_port, "alice", "setup", NULL,
					    NULL);
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(c, peer_user, &cv));
	parley_client_free(c);
	struct parley_client *d = client_at(via_port, peer_user, "phone",
					    dev_on_event, NULL);
	IT_OK(parley_client_connect(d));
	struct parley_sync_ok ok;
	int rc = parley_client_subscribe(d, 1, &ok);
	IT_CHECK(rc == 0, "SYNC on node%d, which does not hold the inbox "
		 "partition: %s", X + 1, parley_strerror(rc));
	pthread_t dt, th;
	IT_CHECK(pthread_create(&dt, NULL, device, d) == 0);
	IT_CHECK(pthread_create(&th, NULL, sender, NULL) == 0);
	wait_more_acks(40, "before any fault");
	IT_CHECK(it_metric_get(node[X]->admin_port, "parley_tail_remote_open")
			 == 1, "node%d: no remote tail open", X + 1);

	/* 2. kill -9 the node serving the tail */
	int S = wait_serving(alive, "before the kill");
	IT_CHECK(has(voters_of[ip], nvoters[ip], S + 1) && S != X,
		 "node%d serves the tail but holds no replica", S + 1);
	printf("node%d serves the tail; killing it (kill -9)\n", S + 1);
	it_server_kill(node[S]);
	alive[S] = false;
	wait_more_acks(40, "after the serving node was killed");
	int S2 = wait_serving(alive, "after the kill");
	printf("node%d serves the tail now\n", S2 + 1);
	IT_CHECK(S2 != S && has(voters_of[ip], nvoters[ip], S2 + 1),
		 "node%d serves the tail", S2 + 1);
	IT_CHECK(it_metric_get(node[X]->admin_port,
			       "parley_tail_resubscribes_total") >= 1,
		 "node%d: no re-subscription counted", X + 1);

	/* 3. move the inbox partition's leadership to the other replica */
	int T = -1;
	for (int k = 0; k < nvoters[ip]; k++) {
		int i = voters_of[ip][k] - 1;
		struct pv v;
		if (alive[i] && leader_view((int)ip, alive, &v) != i)
			T = i;
	}
	IT_CHECK(T >= 0, "no live replica to move the leadership to");
	uint16_t live_admins[ALL];
	int nla = 0;
	for (int i = 0; i < ALL; i++)
		if (alive[i])
			live_admins[nla++] = node[i]->admin_port;
	snprintf(path, sizeof path, "/cluster/transfer?partition=%u&to=%d", ip,
		 T + 1);
	code = admin_post(live_admins, nla, path, body, sizeof body);
	printf("transfer of partition %u to node%d: %d\n", ip, T + 1, code);
	IT_CHECK(code == 200, "transfer: %d %s", code, body);
	wait_more_acks(40, "after the leadership moved");
	atomic_store(&stop, true);
	pthread_join(th, NULL);

	/* 4. every acknowledged message reached the device, once, in order */
	int want = acked_now();
	for (int t = 0; t < 600 && dev_acked_msgs() < want; t++)
		it_sleep_ms(50);
	it_sleep_ms(500); /* anything doubled after the last would show */
	atomic_store(&dev_stop, true);
	pthread_join(dt, NULL);
	IT_CHECK(dev_acked_msgs() == want, "the device got %d of %d "
		 "acknowledged messages", dev_acked_msgs(), want);
	static bool in_hist[MAXMSG], in_dev[MAXMSG];
	history_via(via_port, in_hist);
	pthread_mutex_lock(&mu);
	for (uint64_t i = 0; i < dev.n; i++) {
		const struct dev_ev *e = &dev.v[i];
		IT_CHECK(e->inbox_seq == i + 1, "event %" PRIu64 " has inbox seq %"
			 PRIu64 " (a gap, a repeat or out of order)", i,
			 e->inbox_seq);
		if (e->kind != PARLEY_EV_MESSAGE || strcmp(e->conv, conv))
			continue;
		IT_CHECK(e->conv_seq >= 1 && e->conv_seq < MAXMSG &&
			 !in_dev[e->conv_seq - 1], "message %" PRIu64 " twice",
			 e->conv_seq);
		in_dev[e->conv_seq - 1] = true;
	}
	int nh = 0;
	for (int s = 0; s < MAXMSG; s++) {
		IT_CHECK(in_hist[s] == in_dev[s], "seq %d: %s the history, %s "
			 "the device's inbox", s + 1, in_hist[s] ? "in" : "not in",
			 in_dev[s] ? "in" : "not in");
		nh += in_hist[s];
	}
	printf("the device on node%d: %" PRIu64 " events, inbox seqs dense; "
	       "the %d messages of the history (%d acknowledged) each once\n",
	       X + 1, dev.n, nh, want);
	pthread_mutex_unlock(&mu);
	char *mt = it_http_get(node[X]->admin_port, "/metrics", NULL);
	IT_CHECK(mt);
	printf("node%d: remote_open %" PRIu64 " subscribes %" PRIu64
	       " resubscribes %" PRIu64 " bytes %" PRIu64 " resent_dropped %"
	       PRIu64 "\n", X + 1, it_metric(mt, "parley_tail_remote_open"),
	       it_metric(mt, "parley_tail_remote_subscribes_total"),
	       it_metric(mt, "parley_tail_resubscribes_total"),
	       it_metric(mt, "parley_tail_remote_bytes_total"),
	       it_metric(mt, "parley_tail_resent_dropped_total"));
	free(mt);
	for (int i = 0; i < ALL; i++) /* pointers resolved across nodes */
		if (alive[i]) {
			mt = it_http_get(node[i]->admin_port, "/metrics", NULL);
			IT_CHECK(mt);
			printf("node%d: tails served %" PRIu64 ", remote reads %"
			       PRIu64 " (retries %" PRIu64 ", given up %" PRIu64
			       "), reads served %" PRIu64 "\n", i + 1,
			       it_metric(mt, "parley_tail_served_total"),
			       it_metric(mt, "parley_tail_remote_reads_total"),
			       it_metric(mt, "parley_tail_remote_read_retries_total"),
			       it_metric(mt, "parley_tail_remote_read_giveups_total"),
			       it_metric(mt, "parley_tail_reads_served_total"));
			free(mt);
		}
	parley_client_free(d);
	free(dev.v);

	/* 5. a device on X that reads but never acknowledges: the holder
	 * stops at the event window and cuts it off after slow_consumer_ms;
	 * the device gets that GOAWAY SLOW_CONSUMER through X, then EOF */
	int fd = it_tcp_connect(via_port);
	IT_CHECK(fd >= 0, "connect to node%d", X + 1);
	IT_CHECK(it_raw_login(fd, peer_user, "no-ack") == 0, "login");
	struct parley_msg q = {.type = PARLEY_T_SYNC};
	q.sync.from_inbox_seq = 1;
	IT_CHECK(it_send_msg(fd, 3, &q) == 0);
	static uint8_t buf[1 << 20];
	struct parley_frame f;
	struct parley_msg rm;
	IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) > 0 &&
		 f.type == PARLEY_T_SYNC_OK && f.request_id == 3, "SYNC_OK first");
	uint64_t nev = 0;
	int reason = -1;
	bool eof = false;
	for (;;) {
		int n = it_read_frame(fd, buf, sizeof buf, 20000, &f);
		if (n == 0) {
			eof = true;
			break;
		}
		IT_CHECK(n > 0, "read failed before EOF");
		if (f.type == PARLEY_T_EVENT) {
			IT_OK(parley_proto_decode(&f, &rm));
			IT_CHECK(reason < 0, "an EVENT after the GOAWAY");
			IT_CHECK(rm.event.inbox_seq == nev + 1, "event %" PRIu64
				 " after %" PRIu64, rm.event.inbox_seq, nev);
			nev++;
		} else if (f.type == PARLEY_T_GOAWAY) {
			IT_OK(parley_proto_decode(&f, &rm));
			reason = rm.goaway.reason;
		}
	}
	close(fd);
	printf("a device that never acknowledges: %" PRIu64 " events, GOAWAY "
	       "reason %d, %s\n", nev, reason, eof ? "closed" : "open");
	IT_CHECK(eof && reason == PARLEY_GOAWAY_SLOW_CONSUMER && nev >= 1 &&
		 nev <= WINDOW, "eof %d, reason %d, %" PRIu64 " events (window "
		 "%d)", eof, reason, nev, WINDOW);
	/* nothing stays open: neither the gateway's tail nor the holder's */
	uint64_t open_left = 1;
	for (int t = 0; t < 100 && open_left; t++) {
		open_left = it_metric_get(node[X]->admin_port,
					  "parley_tail_remote_open");
		for (int i = 0; i < ALL; i++)
			if (alive[i])
				open_left += it_metric_get(node[i]->admin_port,
							   "parley_tail_served_open");
		if (open_left)
			it_sleep_ms(50);
	}
	IT_CHECK(open_left == 0, "%" PRIu64 " tails still open", open_left);
	for (int i = 0; i < ALL; i++)
		if (alive[i])
			IT_CHECK(it_server_stop(node[i], SIGTERM, 10000) == 0,
				 "node%d did not stop", i + 1);
	return 0;
}
