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

#include "cluster_itest.h"

#define NP 64 /* the default: the meta group is partitions 0 and 32 */
#define ALL 4
#define MAXMSG 4096

static struct it_server nx;              /* node 4 */
static struct it_server *node[ALL];      /* node i + 1 */
static char peer_user[32];
static uint16_t via_port;                /* node X's client port */
/* alice's SENDs through node X alone (via_port), recorded by seq */
static struct cluster_ledger lg = {.user = "alice", .max = MAXMSG,
				   .pause_ms = 5, .tag = 0x7a,
				   .deadline_ms = 20000};
static atomic_bool dev_stop;
/* step 5: a window the inbox outgrows, a short slow-consumer bound */
#define WINDOW 32
static const char *const slow_args[] = {"--event-window", "32",
					"--slow-consumer-ms", "2000", NULL};

/* A client of user on one node's client port alone (it reconnects
 * there, never elsewhere); EVENTs and RECEIPTs to on_event with arg. */
static struct parley_client *client_at(uint16_t port, const char *user,
				       const char *device,
				       parley_event_cb on_event, void *arg)
{
	return cluster_client_ev(user, device, NULL, port, 20000, false,
				 on_event, on_event, arg);
}

/* ---- bob's device on X: every EVENT it gets, in order ---- */

/* dev_mu guards dev: the device thread appends while the test reads */
static pthread_mutex_t dev_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cluster_inbox dev;

static void dev_on_event(void *user, const struct parley_event *ev)
{
	pthread_mutex_lock(&dev_mu);
	cluster_inbox_on_event(user, ev);
	pthread_mutex_unlock(&dev_mu);
}

static void *device(void *arg)
{
	struct parley_client *c = arg;
	while (!atomic_load(&dev_stop))
		(void)parley_client_poll(c, 50);
	return NULL;
}

/* Messages of the conversation the device holds that were acknowledged
 * (once each: doubles are checked at the end). */
static int dev_acked_msgs(void)
{
	static bool seen[MAXMSG];
	memset(seen, 0, sizeof seen);
	int got = 0;
	pthread_mutex_lock(&lg.mu);
	pthread_mutex_lock(&dev_mu);
	for (uint64_t i = 0; i < dev.n; i++) {
		const struct cluster_inbox_ev *e = &dev.v[i];
		if (e->kind == PARLEY_EV_MESSAGE && !strcmp(e->conv, lg.conv) &&
		    e->conv_seq >= 1 && e->conv_seq < MAXMSG &&
		    lg.acked[e->conv_seq - 1] && !seen[e->conv_seq - 1]) {
			seen[e->conv_seq - 1] = true;
			got++;
		}
	}
	pthread_mutex_unlock(&dev_mu);
	pthread_mutex_unlock(&lg.mu);
	return got;
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

/* ---- reading GET /cluster (cluster_itest.h) ---- */

/* The leader's view of partition p over the live nodes (highest term). */
static int leader_view(int p, const bool *alive, struct cluster_pv *out)
{
	return cluster_leader_view(node, ALL, alive, p, out);
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
		cluster_extra_add(&srv[i], slow_args);
		node[i] = &srv[i];
		it_server_start(&srv[i]);
	}
	/* node 4: empty, the founders as bootstrap, then added */
	uint16_t admins[ALL];
	for (int i = 0; i < NODES; i++)
		admins[i] = srv[i].admin_port;
	static const char *const follow0[] = {"--leader-placement", "follow0",
					      NULL};
	uint16_t pp = cluster_joiner_init(&nx, 4, "87", follow0);
	cluster_extra_add(&nx, slow_args);
	node[3] = &nx;
	it_server_start(&nx);
	admins[3] = nx.admin_port;
	char path[256], body[1024];
	cluster_add_path(path, sizeof path, 4, &nx, pp);
	int code = cluster_admin_post(admins, NODES, path, NULL, body,
				      sizeof body);
	IT_CHECK(code == 200 && strstr(body, "is a voter of"),
		 "add-node 4: %d %s", code, body);

	/* the placement: each partition's voters, from its leader's view */
	bool alive[ALL] = {true, true, true, true};
	int meta[2];
	int nmeta = cluster_meta_parts(node[0], meta);
	IT_CHECK(nmeta >= 1 && meta[0] == 0, "no meta group in /cluster");
	static int voters_of[NP][CLUSTER_MAX_VOTERS];
	static int nvoters[NP];
	for (int p = 0; p < NP; p++) {
		if (cluster_has(meta, nmeta, p))
			continue;
		struct cluster_pv v;
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
		ip = cluster_part_of(inbox, NP);
		if (cluster_has(meta, nmeta, (int)ip))
			continue;
		for (int i = 0; i < ALL && X < 0; i++)
			if (!cluster_has(voters_of[ip], nvoters[ip], i + 1))
				X = i;
	}
	IT_CHECK(X >= 0, "no user fits (seeded by names only)");
	snprintf(lg.conv, sizeof lg.conv, "d:alice:%s", peer_user);
	printf("%s's inbox is partition %u, on nodes %d %d %d; the device "
	       "connects to node%d\n", peer_user, ip, voters_of[ip][0],
	       voters_of[ip][1], voters_of[ip][2], X + 1);
	/* asserted from every node's /cluster placement */
	for (int i = 0; i < ALL; i++) {
		char *d = cluster_doc(node[i]);
		struct cluster_pv w;
		cluster_part_view(d, (int)ip, &w);
		free(d);
		const char *pv = strstr(w.placement, "\"voters\":[");
		int pl[CLUSTER_MAX_VOTERS];
		int npl = pv ? cluster_ids_of(pv + 9, pl) : 0;
		IT_CHECK(npl == 3 && !cluster_has(pl, npl, X + 1), "node%d's "
			 "placement of partition %u: %s", i + 1, ip,
			 w.placement);
		for (int k = 0; k < npl; k++)
			IT_CHECK(cluster_has(voters_of[ip], nvoters[ip], pl[k]),
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
					    dev_on_event, &dev);
	IT_OK(parley_client_connect(d));
	struct parley_sync_ok ok;
	int rc = parley_client_subscribe(d, 1, &ok);
	IT_CHECK(rc == 0, "SYNC on node%d, which does not hold the inbox "
		 "partition: %s", X + 1, parley_strerror(rc));
	pthread_t dt;
	IT_CHECK(pthread_create(&dt, NULL, device, d) == 0);
	lg.port = via_port;
	cluster_ledger_start(&lg);
	cluster_ledger_wait_more(&lg, 40, "before any fault");
	IT_CHECK(it_metric_get(node[X]->admin_port, "parley_tail_remote_open")
			 == 1, "node%d: no remote tail open", X + 1);

	/* 2. kill -9 the node serving the tail */
	int S = wait_serving(alive, "before the kill");
	IT_CHECK(cluster_has(voters_of[ip], nvoters[ip], S + 1) && S != X,
		 "node%d serves the tail but holds no replica", S + 1);
	printf("node%d serves the tail; killing it (kill -9)\n", S + 1);
	it_server_kill(node[S]);
	alive[S] = false;
	cluster_ledger_wait_more(&lg, 40, "after the serving node was killed");
	int S2 = wait_serving(alive, "after the kill");
	printf("node%d serves the tail now\n", S2 + 1);
	IT_CHECK(S2 != S && cluster_has(voters_of[ip], nvoters[ip], S2 + 1),
		 "node%d serves the tail", S2 + 1);
	IT_CHECK(it_metric_get(node[X]->admin_port,
			       "parley_tail_resubscribes_total") >= 1,
		 "node%d: no re-subscription counted", X + 1);

	/* 3. move the inbox partition's leadership to the other replica */
	int T = -1;
	for (int k = 0; k < nvoters[ip]; k++) {
		int i = voters_of[ip][k] - 1;
		struct cluster_pv v;
		if (alive[i] && leader_view((int)ip, alive, &v) != i)
			T = i;
	}
	IT_CHECK(T >= 0, "no live replica to move the leadership to");
	for (int i = 0; i < ALL; i++) /* 0: skipped */
		admins[i] = alive[i] ? node[i]->admin_port : 0;
	snprintf(path, sizeof path, "/cluster/transfer?partition=%u&to=%d", ip,
		 T + 1);
	code = cluster_admin_post(admins, ALL, path, NULL, body, sizeof body);
	printf("transfer of partition %u to node%d: %d\n", ip, T + 1, code);
	IT_CHECK(code == 200, "transfer: %d %s", code, body);
	cluster_ledger_wait_more(&lg, 40, "after the leadership moved");
	cluster_ledger_stop(&lg);

	/* 4. every acknowledged message reached the device, once, in order */
	int want = cluster_ledger_acked(&lg);
	for (int t = 0; t < 600 && dev_acked_msgs() < want; t++)
		it_sleep_ms(50);
	it_sleep_ms(500); /* anything doubled after the last would show */
	atomic_store(&dev_stop, true);
	pthread_join(dt, NULL);
	IT_CHECK(dev_acked_msgs() == want, "the device got %d of %d "
		 "acknowledged messages", dev_acked_msgs(), want);
	/* the conversation's HISTORY through X: every acknowledged SEND at
	 * its seq with its client_msg_id (asked again while X cannot
	 * answer, at most 10 s) */
	static bool in_hist[MAXMSG], in_dev[MAXMSG];
	char xname[16];
	snprintf(xname, sizeof xname, "node%d", X + 1);
	int held = -1;
	for (int t = 0; t < 50 && held < 0; t++) {
		held = cluster_ledger_history_seen(&lg, via_port, true, xname,
						   in_hist);
		if (held < 0)
			it_sleep_ms(200);
	}
	IT_CHECK(held >= 0, "%s does not answer HISTORY", xname);
	for (uint64_t i = 0; i < dev.n; i++) {
		const struct cluster_inbox_ev *e = &dev.v[i];
		IT_CHECK(e->inbox_seq == i + 1, "event %" PRIu64 " has inbox seq %"
			 PRIu64 " (a gap, a repeat or out of order)", i,
			 e->inbox_seq);
		if (e->kind != PARLEY_EV_MESSAGE || strcmp(e->conv, lg.conv))
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
