/*
 * test_cluster_route.c — with leadership spread over the nodes, every
 * request goes to the leader of the partition it needs (docs/CLUSTER.md
 * §3.2, §3.3): three parleyd processes on loopback, 8 partitions,
 * `--leader-placement spread`, leaderships placed by the test with POST
 * /cluster/transfer so that three different nodes matter:
 *   (the automatic hand-over is off: --leader-rebalance-ms 0, so the
 *   placement stays)
 *   - node1 leads partition 0; node3 leads the partition of the 1:1
 *     conversation alice-bob (P, != 0) and of erin's presence record
 *     (p/erin, Q != 0); node2 leads neither;
 *   1. a client given node2's address only (never moving) opens the
 *      conversation and SENDs to it: node2 forwards each SEND to node3
 *      (P's leader), not to node1 (partition 0's, the old target, which
 *      answered NOTLEADER: the client saw "not the leader" until its
 *      deadline); node3's parley_forward_served_total grows by the SENDs,
 *      node1's does not; HISTORY through node1 holds them;
 *   2. presence across nodes: erin connects to node2 and leaves; node2's
 *      last_seen write goes to Q's leader (node3) and is durable there
 *      (parley_last_seen_writes_total on node2, no write errors; before,
 *      it failed NOTLEADER), and a watcher on node1 reads erin's
 *      last_seen (> 0, from what node1 applied);
 *   3. a large group (read fan-out from 3 members: --group-read-fanout-min
 *      3) of alice, bob, carol, dave: dave is subscribed (SYNC) on a node
 *      that does not lead the group's partition; alice's messages reach
 *      his connection live from the group leader's fan-out
 *      (parley_read_fanout_live_remote_total on dave's node; before, only
 *      connections on the leader got live EVENTs), each message once.
 */
#include <sys/wait.h>

#include "cluster_itest.h"

#define NSEND 5

/* The partition (of 8) of key, as pe_partition_of computes it. */
/* The partition (of 8) of key, as pe_partition_of computes it. */
static uint32_t part_of(const char *key)
{
	return cluster_part_of(key, 8);
}

/* The leader of partition p as node i's GET /cluster reports it; 0 =
 * none known. */
static uint64_t leader_of(int i, uint32_t p)
{
	return cluster_leader_of(&srv[i], p);
}

/* Every node agrees that `node` leads p. */
static bool all_see(uint32_t p, uint64_t node)
{
	for (int i = 0; i < NODES; i++)
		if (leader_of(i, p) != node)
			return false;
	return true;
}

/* Moves partition p's leadership to `node` (1..3): POST
 * /cluster/transfer on its current leader, until every node sees it. */
static void place(uint32_t p, uint64_t node)
{
	cluster_place(p, node);
}

static uint64_t served(int i)
{
	return it_metric_get(srv[i].admin_port,
			     "parley_forward_served_total{outcome=\"ok\"}");
}

static uint64_t metric(int i, const char *name)
{
	return it_metric_get(srv[i].admin_port, name);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	it_init("cluster_route");
	cluster_init("83");
	for (int i = 0; i < NODES; i++) {
		int k = 0;
		while (srv[i].extra[k])
			k++;
		const char *x[] = {"--leader-placement", "spread",
				   "--group-read-fanout-min", "3",
				   "--presence-last-seen-write-ms", "1000",
				   "--leader-rebalance-ms", "0", NULL};
		for (int j = 0; x[j]; j++)
			srv[i].extra[k++] = x[j];
		srv[i].extra[k] = NULL;
	}
	for (int i = 0; i < NODES; i++)
		it_server_start(&srv[i]);
	/* the conversation and the presence record in partitions != 0 */
	static const char *peers[] = {"bob", "bea", "ben", "bill", "boris",
				      "bruno", "bart", "beth"};
	const char *peer = NULL;
	char conv[64], key[80];
	for (unsigned i = 0; i < 8 && !peer; i++) {
		int n = parley_proto_dm_conv_id("alice", 5, peers[i],
						strlen(peers[i]), conv,
						sizeof conv);
		IT_CHECK(n > 0);
		conv[n] = '\0';
		snprintf(key, sizeof key, "c/%s", conv);
		if (part_of(key) != 0)
			peer = peers[i];
	}
	IT_CHECK(peer, "no conversation outside partition 0");
	uint32_t P = part_of(key);
	static const char *eusers[] = {"erin", "eve", "emma", "ezra", "elsa",
				       "enzo", "ella", "egon"};
	const char *erin = NULL;
	for (unsigned i = 0; i < 8 && !erin; i++) {
		snprintf(key, sizeof key, "p/%s", eusers[i]);
		if (part_of(key) != 0)
			erin = eusers[i];
	}
	IT_CHECK(erin, "no presence record outside partition 0");
	snprintf(key, sizeof key, "p/%s", erin);
	uint32_t Q = part_of(key);
	place(0, 1);
	place(P, 3);
	place(Q, 3);
	IT_CHECK(all_see(0, 1) && all_see(P, 3) && all_see(Q, 3),
		 "leaderships moved while placing");
	printf("partition 0 led by node1, %s (partition %u) and p/%s "
	       "(partition %u) by node3; the client on node2\n", conv, P, erin,
	       Q);

	/* 1. SENDs through node2 go to node3 */
	uint64_t s1 = served(0), s3 = served(2);
	struct parley_client *a = it_client(&srv[1], "alice", "phone", 0, NULL);
	const struct parley_conv *cv;
	int rc = parley_client_conv_open(a, peer, &cv);
	IT_CHECK(rc == 0, "CONV_OPEN through node2: %s", parley_strerror(rc));
	for (int i = 0; i < NSEND; i++) {
		uint8_t id[16] = {0};
		id[0] = (uint8_t)i;
		id[15] = 0x3c;
		struct parley_send_result r;
		rc = parley_client_send_id(a, conv, id, 1, "hi", 2, &r);
		IT_CHECK(rc == 0, "SEND %d through node2: %s", i,
			 parley_strerror(rc));
		IT_CHECK(r.seq == (uint64_t)i + 1, "SEND %d: seq %" PRIu64, i,
			 r.seq);
	}
	uint64_t d1 = served(0) - s1, d3 = served(2) - s3;
	printf("node2 forwarded: node3 served %" PRIu64 ", node1 %" PRIu64 "\n",
	       d3, d1);
	IT_CHECK(d3 >= NSEND, "node3 (the conversation's leader) served %"
		 PRIu64 " forwarded requests, want >= %d", d3, NSEND);
	IT_CHECK(d1 == 0, "node1 (partition 0's leader) was sent %" PRIu64
		 " requests it does not lead", d1);
	parley_client_free(a);
	struct parley_client *rd = it_client(&srv[0], "alice", "reader", 0,
					     NULL);
	const struct parley_history_page *pg;
	IT_OK(parley_client_history(rd, conv, 0, 100, &pg));
	IT_CHECK(pg->count == NSEND, "HISTORY on node1: %u messages, want %d",
		 pg->count, NSEND);
	parley_client_free(rd);

	/* 2. presence: erin's last_seen written by node2 at node3, read on
	 * node1 */
	uint64_t w0 = metric(1, "parley_last_seen_writes_total");
	uint64_t e0 = metric(1, "parley_last_seen_write_errors_total");
	struct parley_client *e = it_client(&srv[1], erin, "phone", 0, NULL);
	it_sleep_ms(200);
	parley_client_free(e);
	uint64_t w = 0;
	for (int t = 0; t < 200; t++) {
		w = metric(1, "parley_last_seen_writes_total") - w0;
		if (w)
			break;
		it_sleep_ms(50);
	}
	uint64_t ew = metric(1, "parley_last_seen_write_errors_total") - e0;
	printf("node2 wrote %s's last_seen %" PRIu64 " times, %" PRIu64
	       " failed\n", erin, w, ew);
	IT_CHECK(w >= 1 && ew == 0, "last_seen writes on node2: %" PRIu64
		 " done, %" PRIu64 " failed (not routed to node3)", w, ew);
	uint64_t seen = 0;
	for (int t = 0; t < 100 && !seen; t++) {
		struct parley_client *wc = it_client(&srv[0], "watcher", "w", 0,
						     NULL);
		const struct parley_presence_sub_ok *ok;
		const char *who[1] = {erin};
		IT_OK(parley_client_presence_sub(wc, PARLEY_PRESENCE_SUBSCRIBE,
						 who, 1, &ok));
		IT_CHECK(ok->count == 1);
		seen = ok->recs[0].last_seen_ms;
		parley_client_free(wc);
		if (!seen)
			it_sleep_ms(100);
	}
	IT_CHECK(seen, "node1 never saw %s's last_seen", erin);
	printf("node1 sees %s last seen at %" PRIu64 "\n", erin, seen);

	/* 3. a large group's live EVENTs reach a member on another node */
	a = it_client(&srv[1], "alice", "phone", 0, NULL);
	const struct parley_group_ok *gok;
	const char *mem[] = {"bob", "carol", "dave"};
	rc = parley_client_group_create(a, "big", 0, mem, 3, &gok);
	IT_CHECK(rc == 0, "GROUP_CREATE through node2: %s", parley_strerror(rc));
	char g[64];
	snprintf(g, sizeof g, "%.*s", (int)gok->conv.len, gok->conv.p);
	snprintf(key, sizeof key, "c/%s", g);
	uint32_t G = part_of(key);
	uint64_t gl = 0;
	for (int t = 0; t < 100 && !gl; t++) {
		gl = leader_of(0, G);
		if (!gl)
			it_sleep_ms(50);
	}
	IT_CHECK(gl >= 1 && gl <= NODES);
	int dn = (int)(gl % NODES); /* a node that does not lead G */
	printf("group %s: partition %u led by node%" PRIu64 "; dave on node%d\n",
	       g, G, gl, dn + 1);
	struct it_events ev = {0};
	struct parley_client *d = it_client(&srv[dn], "dave", "phone", 0, &ev);
	IT_OK(parley_client_subscribe(d, 0, NULL));
	uint64_t lr0 = metric(dn, "parley_read_fanout_live_remote_total");
	uint64_t rl0 = metric((int)gl - 1, "parley_read_fanout_relayed_total");
	for (int i = 0; i < NSEND; i++) {
		uint8_t id[16] = {0};
		id[0] = (uint8_t)i;
		id[15] = 0x5d;
		struct parley_send_result r;
		rc = parley_client_send_id(a, g, id, 1, "yo", 2, &r);
		IT_CHECK(rc == 0, "group SEND %d: %s", i, parley_strerror(rc));
	}
	uint64_t lr = 0;
	for (int t = 0; t < 200; t++) {
		(void)parley_client_poll(d, 50);
		lr = metric(dn, "parley_read_fanout_live_remote_total") - lr0;
		if (lr >= NSEND)
			break;
	}
	uint64_t rl = metric((int)gl - 1, "parley_read_fanout_relayed_total") -
		      rl0;
	printf("group leader relayed %" PRIu64 " live EVENTs; dave's node "
	       "posted %" PRIu64 "\n", rl, lr);
	IT_CHECK(rl >= NSEND, "the group's leader relayed %" PRIu64 " live "
		 "EVENTs, want >= %d", rl, NSEND);
	IT_CHECK(lr >= NSEND, "dave's node posted %" PRIu64 " live EVENTs from "
		 "the leader's fan-out, want >= %d", lr, NSEND);
	/* dave's device got each message once (live, or by catch-up after
	 * its ACTIVITY pointer; libparley removes the duplicates) */
	int cnt[NSEND] = {0};
	for (int t = 0; t < 100; t++) {
		memset(cnt, 0, sizeof cnt);
		int got = 0;
		for (uint64_t i = 0; i < ev.n; i++) {
			const struct it_ev *x = &ev.v[i];
			if (strcmp(x->conv, g) || x->cmid[15] != 0x5d ||
			    strcmp(x->body, "yo"))
				continue; /* membership events */
			IT_CHECK(x->cmid[0] < NSEND);
			got += !cnt[x->cmid[0]]++;
		}
		if (got == NSEND)
			break;
		(void)parley_client_poll(d, 50);
	}
	for (int k = 0; k < NSEND; k++)
		IT_CHECK(cnt[k] == 1, "dave got group message %d %d times", k,
			 cnt[k]);
	parley_client_free(d);
	parley_client_free(a);
	it_events_free(&ev);
	for (int i = 0; i < NODES; i++)
		IT_CHECK(it_server_stop(&srv[i], SIGTERM, 10000) == 0,
			 "node%d did not stop cleanly", i + 1);
	printf("ok: requests routed to their partition's leader, last_seen "
	       "across nodes, a large group's live EVENTs on another node\n");
	return 0;
}
