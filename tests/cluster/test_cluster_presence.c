/*
 * test_cluster_presence.c — presence and typing across the nodes of a
 * cluster (docs/CLUSTER.md §3.3, "Presence and typing across nodes"):
 * three parleyd processes on loopback, 8 partitions, `--leader-placement
 * spread`, a watcher ("wanda") on node1 and the user ("ulli") on node2:
 *   1. wanda subscribes to ulli before ulli connects: ulli connecting to
 *      node2 is pushed to wanda as ONLINE (before, node1 knew only its
 *      own sessions: OFFLINE with the stored last_seen);
 *   2. TYPING in their 1:1 conversation from node2 reaches wanda;
 *   3. TYPING in a group of wanda, ulli and gus whose partition node3
 *      leads (placed there; node2 does not lead it: before, "no such
 *      conversation") reaches wanda, STARTED then STOPPED;
 *   4. a non-member's TYPING in that group reaches nobody and is answered
 *      ERROR PERM (request id 0) as on a single node: node3 refuses it
 *      back to node2 (before: dropped silently);
 *   4b. a large group (read fan-out: --group-read-fanout-min 3) of wanda,
 *      gus and hank led by node3: its LIVE payloads go to node1 (wanda
 *      online there) and none to node2, where only non-members (ulli,
 *      xavier) are online (before: to every node with a link up);
 *   5. ulli disconnecting while typing in the group is pushed as OFFLINE
 *      and his typing as STOPPED at once (typing_ttl_ms is 30 s);
 *   6. ulli connects again, then node2 is killed (-9): wanda is told
 *      OFFLINE within OFFLINE_BOUND_MS (the link going down), well
 *      before presence_ttl_ms (60 s);
 *   7. node2 restarted: ulli connecting there is seen online again.
 */
#include <sys/wait.h>

#include "cluster_itest.h"

#define OFFLINE_BOUND_MS 10000

/* The partition (of 8) of key, as pe_partition_of computes it. */
static uint32_t part_of(const char *key)
{
	return cluster_part_of(key, 8);
}

/* Moves partition p's leadership to `node` (1..3): POST
 * /cluster/transfer on its current leader, until every node sees it. */
static void place(uint32_t p, uint64_t node)
{
	cluster_place(p, node);
}

struct seen {
	int online, offline;     /* PRESENCE pushes about ulli */
	uint8_t status;          /* the last one */
	int started, stopped;    /* TYPING_PUSH */
	char conv[96], user[64]; /* of the last typing push */
};

static void on_presence(void *user, const struct parley_presence_rec *p)
{
	struct seen *s = user;
	if (p->user.len != 4 || memcmp(p->user.p, "ulli", 4))
		return;
	s->status = p->status;
	if (p->status == PARLEY_PRESENCE_ONLINE)
		s->online++;
	else
		s->offline++;
}

static void on_typing(void *user, const struct parley_typing_push *t)
{
	struct seen *s = user;
	if (t->state == PARLEY_TYPING_STARTED)
		s->started++;
	else
		s->stopped++;
	snprintf(s->conv, sizeof s->conv, "%.*s", (int)t->conv.len, t->conv.p);
	snprintf(s->user, sizeof s->user, "%.*s", (int)t->user.len, t->user.p);
}

/* Polls c (and k, may be NULL) until cond or about ms passed. */
#define WAIT_FOR(cond, ms, c, k)                                        \
	do {                                                            \
		for (int _t = 0; _t < (ms) && !(cond); _t += 20) {      \
			parley_client_poll((c), 10);                    \
			if (k)                                          \
				parley_client_poll((k), 10);            \
		}                                                       \
	} while (0)

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	it_init("cluster_presence");
	cluster_init("84");
	for (int i = 0; i < NODES; i++) {
		int k = 0;
		while (srv[i].extra[k])
			k++;
		const char *x[] = {"--leader-placement", "spread",
				   "--leader-rebalance-ms", "0",
				   "--typing-ttl-ms", "30000",
				   "--group-read-fanout-min", "3", NULL};
		for (int j = 0; x[j]; j++)
			srv[i].extra[k++] = x[j];
		srv[i].extra[k] = NULL;
	}
	for (int i = 0; i < NODES; i++)
		it_server_start(&srv[i]);
	place(0, 1);

	/* 1. online seen across nodes */
	struct seen ws = {0};
	struct parley_client_opts cb = {.on_presence = on_presence,
					.on_typing = on_typing, .user = &ws};
	struct parley_client *w = it_client_cb(&srv[0], "wanda", "w", &cb);
	const struct parley_presence_sub_ok *ok;
	const char *who[1] = {"ulli"};
	IT_OK(parley_client_presence_sub(w, PARLEY_PRESENCE_SUBSCRIBE, who, 1,
					 &ok));
	IT_CHECK(ok->count == 1 && ok->recs[0].status == PARLEY_PRESENCE_OFFLINE,
		 "ulli online before connecting");
	struct parley_client *u = it_client(&srv[1], "ulli", "phone", 0, NULL);
	WAIT_FOR(ws.online >= 1, 10000, w, u);
	IT_CHECK(ws.online >= 1, "wanda on node1 never saw ulli (node2) online");
	/* the gauge counts this node's users only (wanda on node1) */
	uint64_t g1 = it_metric_get(srv[0].admin_port,
				    "parley_presence_online_users");
	IT_CHECK(g1 == 1, "node1 counts %" PRIu64 " users online, want 1", g1);
	printf("1. ulli on node2 seen online on node1\n");

	/* 2. typing in the 1:1 conversation */
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(u, "wanda", &cv));
	char dm[96];
	snprintf(dm, sizeof dm, "%.*s", (int)cv->conv.len, cv->conv.p);
	IT_OK(parley_client_typing(u, dm, PARLEY_TYPING_STARTED));
	WAIT_FOR(ws.started >= 1, 10000, w, u);
	IT_CHECK(ws.started >= 1 && !strcmp(ws.conv, dm) &&
			 !strcmp(ws.user, "ulli"),
		 "1:1 TYPING from node2 not seen on node1 (%d, %s, %s)",
		 ws.started, ws.conv, ws.user);
	IT_OK(parley_client_typing(u, dm, PARLEY_TYPING_STOPPED));
	WAIT_FOR(ws.stopped >= 1, 10000, w, u);
	IT_CHECK(ws.stopped >= 1, "1:1 TYPING STOPPED not seen on node1");
	printf("2. 1:1 typing from node2 seen on node1\n");

	/* 3. typing in a group led by node3 */
	const struct parley_group_ok *gok;
	const char *mem[] = {"wanda", "gus"};
	IT_OK(parley_client_group_create(u, "crew", 0, mem, 2, &gok));
	char g[96], key[128];
	snprintf(g, sizeof g, "%.*s", (int)gok->conv.len, gok->conv.p);
	snprintf(key, sizeof key, "c/%s", g);
	uint32_t G = part_of(key);
	place(G, 3);
	printf("group %s: partition %u led by node3\n", g, G);
	int st0 = ws.started;
	int rc = -1;
	/* the group's membership may still be loading on its new leader:
	 * again (a STOPPED first, or node2 coalesces the repeat) */
	for (int t = 0; t < 50 && ws.started == st0; t++) {
		if (t)
			(void)parley_client_typing(u, g, PARLEY_TYPING_STOPPED);
		rc = parley_client_typing(u, g, PARLEY_TYPING_STARTED);
		IT_CHECK(rc == 0, "group TYPING on node2: %s",
			 parley_strerror(rc));
		WAIT_FOR(ws.started > st0, 400, w, u);
	}
	IT_CHECK(ws.started > st0 && !strcmp(ws.conv, g) &&
			 !strcmp(ws.user, "ulli"),
		 "group TYPING from node2 (group led by node3) not seen on "
		 "node1");
	/* the stop: explicit (or the leader's expiry after typing_ttl_ms) */
	int sp0 = ws.stopped;
	IT_OK(parley_client_typing(u, g, PARLEY_TYPING_STOPPED));
	WAIT_FOR(ws.stopped > sp0, 10000, w, u);
	IT_CHECK(ws.stopped > sp0, "group TYPING STOPPED not seen on node1");
	printf("3. group typing from node2 via node3 seen on node1\n");

	/* 4. a non-member's typing in the group reaches nobody */
	struct parley_client *x = it_client(&srv[1], "xavier", "x", 0, NULL);
	int before = ws.started;
	(void)parley_client_typing(x, g, PARLEY_TYPING_STARTED);
	for (int t = 0; t < 50; t++) {
		parley_client_poll(w, 10);
		parley_client_poll(x, 10);
	}
	IT_CHECK(ws.started == before, "a non-member's TYPING was pushed");
	int ne = 0;
	for (int t = 0; t < 250 && !ne; t++) {
		parley_client_poll(x, 20);
		ne = parley_client_notify_error(x, NULL);
	}
	IT_CHECK(ne == -PARLEY_EPERM, "a non-member's group TYPING on node2 "
		 "(group led by node3) answered %d, want ERROR PERM", ne);
	IT_CHECK(it_metric_get(srv[2].admin_port,
			       "parley_presence_typing_refused_total") >= 1,
		 "node3 counted no refusal");
	printf("4. a non-member's group typing not pushed, answered PERM\n");

	/* 4b. a large group's LIVE payloads only where a member is online */
	const char *bm[] = {"gus", "hank"};
	IT_OK(parley_client_group_create(w, "big", 0, bm, 2, &gok));
	char bg[96];
	snprintf(bg, sizeof bg, "%.*s", (int)gok->conv.len, gok->conv.p);
	snprintf(key, sizeof key, "c/%s", bg);
	uint32_t B = part_of(key);
	place(B, 3);
	printf("group %s: partition %u led by node3\n", bg, B);
	uint64_t in1 = it_metric_get(srv[0].admin_port,
				     "parley_read_fanout_live_in_total");
	uint64_t in2 = it_metric_get(srv[1].admin_port,
				     "parley_read_fanout_live_in_total");
	uint64_t rl3 = it_metric_get(srv[2].admin_port,
				     "parley_read_fanout_relayed_total");
	uint64_t sk3 = it_metric_get(srv[2].admin_port,
				     "parley_read_fanout_relay_skipped_total");
	enum { NBIG = 5 };
	for (int i = 0; i < NBIG; i++) {
		rc = -1;
		for (int t = 0; t < 50 && rc; t++) { /* loading after the move */
			rc = parley_client_send(w, bg, 1, "hi", 2, NULL);
			if (rc)
				it_sleep_ms(100);
		}
		IT_CHECK(rc == 0, "SEND to the large group: %s",
			 parley_strerror(rc));
	}
	uint64_t d1 = 0;
	for (int t = 0; t < 250 && d1 < NBIG; t++) {
		parley_client_poll(w, 20);
		d1 = it_metric_get(srv[0].admin_port,
				   "parley_read_fanout_live_in_total") - in1;
	}
	uint64_t d2 = it_metric_get(srv[1].admin_port,
				    "parley_read_fanout_live_in_total") - in2;
	uint64_t drl = it_metric_get(srv[2].admin_port,
				     "parley_read_fanout_relayed_total") - rl3;
	uint64_t dsk = it_metric_get(srv[2].admin_port,
				     "parley_read_fanout_relay_skipped_total") -
		       sk3;
	printf("node3 sent %" PRIu64 " LIVE payloads (%" PRIu64 " members "
	       "online nowhere else); node1 got %" PRIu64 ", node2 %" PRIu64
	       "\n", drl, dsk, d1, d2);
	IT_CHECK(d1 >= NBIG, "node1 (wanda) got %" PRIu64 " LIVE payloads, "
		 "want >= %d", d1, NBIG);
	IT_CHECK(d2 == 0, "node2 (no member online) got %" PRIu64 " LIVE "
		 "payloads", d2);
	IT_CHECK(drl == d1 && dsk >= 2 * NBIG, "node3 relayed %" PRIu64
		 ", skipped %" PRIu64, drl, dsk);
	parley_client_free(x);
	printf("4b. a large group's LIVE payloads only to node1\n");

	/* 5. offline after the disconnect, and the group typing it had
	 * started stopped at once (not at typing_ttl_ms, 30 s) */
	st0 = ws.started;
	sp0 = ws.stopped;
	IT_OK(parley_client_typing(u, g, PARLEY_TYPING_STARTED));
	WAIT_FOR(ws.started > st0, 10000, w, u);
	IT_CHECK(ws.started > st0, "group TYPING not seen again");
	int off0 = ws.offline;
	parley_client_free(u);
	WAIT_FOR(ws.offline > off0 && ws.stopped > sp0, 10000, w, NULL);
	IT_CHECK(ws.offline > off0 && ws.status == PARLEY_PRESENCE_OFFLINE,
		 "ulli's disconnect from node2 not seen on node1");
	IT_CHECK(ws.stopped > sp0, "ulli's group typing not stopped at his "
		 "disconnect");
	printf("5. ulli's disconnect seen on node1, his group typing "
	       "stopped\n");

	/* 6. node2 killed: offline within the bound */
	int on0 = ws.online;
	u = it_client(&srv[1], "ulli", "phone", 0, NULL);
	WAIT_FOR(ws.online > on0, 10000, w, u);
	IT_CHECK(ws.online > on0, "ulli's reconnect not seen on node1");
	off0 = ws.offline;
	uint64_t t0 = parley_mono_ns();
	it_server_kill(&srv[1]);
	WAIT_FOR(ws.offline > off0, OFFLINE_BOUND_MS, w, NULL);
	uint64_t dt = (parley_mono_ns() - t0) / 1000000u;
	IT_CHECK(ws.offline > off0 && ws.status == PARLEY_PRESENCE_OFFLINE,
		 "ulli still online on node1 %d ms after node2 was killed",
		 OFFLINE_BOUND_MS);
	printf("6. node2 killed: ulli offline on node1 after ~%" PRIu64 " ms\n",
	       dt);
	parley_client_free(u);

	/* 7. node2 back: a user connected there is seen again (the sets
	 * exchanged when the link comes up, transitions after) */
	on0 = ws.online;
	it_server_start(&srv[1]);
	u = it_client(&srv[1], "ulli", "phone", 0, NULL);
	WAIT_FOR(ws.online > on0, 10000, w, u);
	IT_CHECK(ws.online > on0 && ws.status == PARLEY_PRESENCE_ONLINE,
		 "ulli on the restarted node2 not seen online on node1");
	printf("7. node2 restarted: ulli seen online on node1 again\n");
	parley_client_free(u);
	parley_client_free(w);
	for (int i = 0; i < NODES; i++)
		IT_CHECK(it_server_stop(&srv[i], SIGTERM, 10000) == 0,
			 "node%d did not stop cleanly", i + 1);
	printf("ok: presence and typing across nodes\n");
	return 0;
}
