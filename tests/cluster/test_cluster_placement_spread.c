/*
 * test_cluster_placement_spread.c — replication factor 3 on five nodes
 * with the default leader placement, `spread`, and its automatic
 * hand-over (`leader_rebalance_ms`, default 5000), under load, through a
 * kill -9 of a leader and its return (docs/CLUSTER.md §3.2, §3.7).
 * test_cluster_placement runs the same placement with follow0; this is
 * the combination parleyd starts with by default.
 *
 * Three founders on loopback (64 partitions, parleyd's default: the meta
 * group is partitions 0 and 32; replication_factor, leader_placement and
 * leader_rebalance_ms left at their defaults; a 20 ms Raft tick as in
 * every cluster test; digests on), nodes 4 and 5 started empty and added
 * (POST /cluster/add-node) with the members stream's partition (32) led
 * by another node than partition 0's leader, which runs the operation
 * and writes the members records through that leader. Then:
 *   1. every partition outside the meta group has 3 voters and no
 *      learner, the meta group's 5; once every peer link is up, the
 *      nodes even their leaderships out by themselves: all 64 led, none
 *      more than ceil(64 / 5) = 13 (no `parleyctl cluster rebalance`);
 *   2. the checker: three senders (alice -> bob, carol -> dave, erin ->
 *      frank) SEND with their own client_msg_ids through libparley
 *      clients given all five nodes, recording every acknowledged seq
 *      (cluster_ledger); a device of bob, subscribed from inbox seq 1
 *      through the node list, records every delivery;
 *   3. under that load the leader of alice and bob's conversation's
 *      partition is killed (kill -9); every sender gets more
 *      acknowledgements, and the four survivors lead all 64 partitions,
 *      settled as in 1 with a share of ceil(64 / 4) = 16;
 *   4. the killed node restarts; once its links are up the others hand
 *      it its share: settled as in 1 again (it leads some);
 *   5. the load stops. HISTORY of each conversation, read through node1
 *      alone, holds every acknowledged SEND at the seq it was
 *      acknowledged with, once (no loss, no double, no changed seq);
 *      each recipient's inbox, SYNCed from seq 1 by a new device, holds
 *      every acknowledged message once with dense inbox seqs; bob's live
 *      device received every acknowledged message of his conversation,
 *      each under one inbox seq (a re-sent event after a reconnect
 *      carries the same one);
 *   6. every partition's replicas (its leader's voters, all five nodes
 *      running) report the same applied index and digest.
 * Randomness: none but it_init's seed (printed); every wait is bounded.
 */
#include <sys/wait.h>

#include "cluster_itest.h"

#define NP 64
#define ALL 5
#define MAXMSG 8192
#define NCONV 3

static struct it_server nx[2];      /* nodes 4 and 5 */
static struct it_server *node[ALL]; /* node i + 1 */
static char nodes5[512];            /* the client ports of all five */

static struct cluster_ledger lg[NCONV];
static const char *const from[NCONV] = {"alice", "carol", "erin"};
static const char *const to[NCONV] = {"bob", "dave", "frank"};

/* ---- bob's live device ---- */

static struct cluster_inbox live;
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool live_stop;
static atomic_bool live_subscribed;

static void live_on_event(void *user, const struct parley_event *ev)
{
	pthread_mutex_lock(&live_mu);
	cluster_inbox_on_event(user, ev);
	pthread_mutex_unlock(&live_mu);
}

static void *live_main(void *arg)
{
	(void)arg;
	struct parley_client *c = cluster_client_ev(
		"bob", "live", nodes5, 0, 30000, false, live_on_event,
		live_on_event, &live);
	IT_OK(parley_client_connect(c));
	IT_OK(parley_client_subscribe(c, 1, NULL));
	atomic_store(&live_subscribed, true);
	while (!atomic_load(&live_stop))
		(void)parley_client_poll(c, 50); /* reconnects and resumes */
	parley_client_free(c);
	return NULL;
}

/* Every acknowledged message of lg[0] reached the live device, and each
 * conv seq came under one inbox seq only (a re-sent event repeats its
 * inbox seq and conv seq together). Waits up to 30 s for the tail. */
static void check_live(void)
{
	struct cluster_ledger *l = &lg[0];
	uint64_t *under = calloc((size_t)l->max, sizeof *under);
	IT_CHECK(under);
	int missing = -1, got = 0;
	for (int ms = 0; ms < 30000 && missing; ms += 100) {
		memset(under, 0, (size_t)l->max * sizeof *under);
		pthread_mutex_lock(&live_mu);
		pthread_mutex_lock(&l->mu);
		got = 0;
		for (uint64_t i = 0; i < live.n; i++) {
			const struct cluster_inbox_ev *x = &live.v[i];
			if (x->kind != PARLEY_EV_MESSAGE || strcmp(x->conv, l->conv))
				continue;
			IT_CHECK(x->conv_seq >= 1 && x->conv_seq < (uint64_t)l->max,
				 "live: conv seq %" PRIu64, x->conv_seq);
			uint64_t *u = &under[x->conv_seq - 1];
			IT_CHECK(!*u || *u == x->inbox_seq, "live: message %" PRIu64
				 " delivered under inbox seqs %" PRIu64 " and %"
				 PRIu64 " (a double)", x->conv_seq, *u, x->inbox_seq);
			got += !*u;
			*u = x->inbox_seq;
		}
		missing = 0;
		for (int q = 0; q < l->max; q++)
			missing += l->acked[q] && !under[q];
		pthread_mutex_unlock(&l->mu);
		pthread_mutex_unlock(&live_mu);
		if (missing)
			it_sleep_ms(100);
	}
	IT_CHECK(!missing, "live: %d acknowledged messages never delivered to "
		 "bob's subscribed device (%d were)", missing, got);
	printf("bob's live device: %" PRIu64 " events, each of the %d "
	       "acknowledged messages under one inbox seq\n", live.n, got);
	free(under);
}

/* ---- leaderships ---- */

/* Whether the automatic hand-over has nothing left to do on counts
 * n[] (running nodes): a node leads more than its share, ceil(NP /
 * running), only where none of the partitions it leads has a running
 * voter below its share — the rule of docs/CLUSTER.md §3.2 (a node above
 * its share hands a partition to one of that partition's voters below
 * theirs). With 3 replicas of 5 that can leave a node above its share
 * while the nodes below theirs hold none of its partitions. */
static bool settled(const uint64_t n[ALL], uint64_t share, char *why,
		    size_t cap)
{
	for (int p = 0; p < NP; p++) {
		struct cluster_pv v;
		int L = cluster_leader_view(node, ALL, NULL, p, &v);
		if (L < 0) {
			snprintf(why, cap, "partition %d has no leader", p);
			return false;
		}
		if (n[L] <= share)
			continue;
		for (int k = 0; k < v.nv; k++) {
			int i = v.voters[k] - 1;
			if (i >= 0 && i < ALL && node[i]->pid > 0 && n[i] < share) {
				snprintf(why, cap, "node%d leads %" PRIu64 " (share %"
					 PRIu64 ") and partition %d, of which "
					 "node%d (%" PRIu64 ") is a voter", L + 1,
					 n[L], share, p, i + 1, n[i]);
				return false;
			}
		}
	}
	return true;
}

/* Waits (at most timeout_ms) until the running nodes lead all NP
 * partitions, each at least one, and the hand-over settled (above);
 * prints the counts. */
static void wait_spread(int timeout_ms, const char *when)
{
	uint64_t n[ALL] = {0};
	char why[160] = "";
	for (int ms = 0;; ms += 500) {
		uint64_t sum = 0, low = UINT64_MAX, top = 0, running = 0;
		for (int i = 0; i < ALL; i++) {
			n[i] = node[i]->pid > 0 ? cluster_led(node[i]) : 0;
			sum += n[i];
			top = n[i] > top ? n[i] : top;
			if (node[i]->pid > 0) {
				running++;
				low = n[i] < low ? n[i] : low;
			}
		}
		uint64_t share = (NP + running - 1) / running;
		if (sum != NP)
			snprintf(why, sizeof why, "%" PRIu64 " of %d led", sum, NP);
		else if (!low)
			snprintf(why, sizeof why, "a running node leads none");
		if (sum == NP && low >= 1 &&
		    (top <= share || settled(n, share, why, sizeof why)))
			break;
		IT_CHECK(ms < timeout_ms, "%s: leaderships never spread: %" PRIu64
			 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " (share %"
			 PRIu64 "): %s", when, n[0], n[1], n[2], n[3], n[4], share,
			 why);
		it_sleep_ms(500);
	}
	printf("%s: partitions led %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
	       " %" PRIu64 "\n", when, n[0], n[1], n[2], n[3], n[4]);
}

static void wait_all_more(int more, const char *when)
{
	for (int k = 0; k < NCONV; k++)
		cluster_ledger_wait_more(&lg[k], more, when);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	it_init("cluster_placement_spread");
	cluster_partitions = "64";
	cluster_init("88");
	static const char *const digest[] = {"--admin-digest", "1", NULL};
	uint16_t admins[ALL];
	for (int i = 0; i < NODES; i++) {
		cluster_extra_add(&srv[i], digest);
		node[i] = &srv[i];
		it_server_start(&srv[i]);
		admins[i] = srv[i].admin_port;
	}
	/* nodes 4 and 5: empty, the founders as bootstrap, defaults else */
	for (int j = 0; j < 2; j++) {
		uint16_t pp = cluster_joiner_init(&nx[j], 4 + j, "88", digest);
		node[3 + j] = &nx[j];
		it_server_start(&nx[j]);
		admins[3 + j] = nx[j].admin_port;
		char path[256], body[1024];
		cluster_add_path(path, sizeof path, 4 + j, &nx[j], pp);
		/* The operation runs on partition 0's leader and writes the
		 * node's record to the members stream, whose partition is 32
		 * of 64: the test gives partition 32 to another node first,
		 * so that record (and the placement's) is written through
		 * that leader (before, every node answered 409 "members
		 * record not written: PARLEY_ENOTLEADER" until the test gave
		 * up, and the test moved partition 32 to partition 0's
		 * leader instead) */
		int meta[2], nmeta = cluster_meta_parts(&srv[0], meta);
		IT_CHECK(nmeta == 2, "meta group: %d partitions", nmeta);
		uint64_t l0 = 0;
		for (int w = 0; w < 100 && !(l0 >= 1 && l0 <= (uint64_t)(3 + j)); w++) {
			l0 = cluster_leader_of(&srv[0], 0);
			if (!(l0 >= 1 && l0 <= (uint64_t)(3 + j)))
				it_sleep_ms(100);
		}
		IT_CHECK(l0 >= 1 && l0 <= (uint64_t)(3 + j), "partition 0: leader %"
			 PRIu64, l0);
		uint64_t other = l0 % (uint64_t)(3 + j) + 1;
		cluster_place_in(node, 3 + j, (uint32_t)meta[1], other);
		printf("add-node %d: partition 0 led by node%" PRIu64 ", "
		       "partition %d by node%" PRIu64 "\n", 4 + j, l0, meta[1],
		       other);
		int code = cluster_admin_post(admins, NODES + j, path, NULL, body,
					      sizeof body);
		printf("add-node %d: %d %s", 4 + j, code, cluster_body_of(body));
		IT_CHECK(code == 200 && strstr(body, "is a voter of"),
			 "add-node %d: %d %s", 4 + j, code, body);
	}
	int ln = 0;
	for (int i = 0; i < ALL; i++)
		ln += snprintf(nodes5 + ln, sizeof nodes5 - (size_t)ln,
			       "%s127.0.0.1:%u", i ? "," : "", node[i]->port);

	/* 1. the placement, then leaderships spread by themselves */
	int meta[2];
	int nmeta = cluster_meta_parts(node[0], meta);
	IT_CHECK(nmeta >= 1 && meta[0] == 0, "no meta group in /cluster");
	for (int p = 0; p < NP; p++) {
		bool is_meta = cluster_has(meta, nmeta, p);
		struct cluster_pv v;
		int who = -1;
		for (int t = 0; t < 200; t++) {
			who = cluster_leader_view(node, ALL, NULL, p, &v);
			if (who >= 0 && v.nv == (is_meta ? 5 : 3) && !v.nl)
				break;
			it_sleep_ms(50);
		}
		IT_CHECK(who >= 0 && v.nv == (is_meta ? 5 : 3) && v.nl == 0,
			 "partition %d: leader %d, %d voters, %d learners (meta "
			 "%d)", p, who + 1, v.nv, v.nl, is_meta);
	}
	cluster_wait_links_up(node, ALL, 30000);
	wait_spread(90000, "five nodes, no rebalance asked");

	/* 2. the load and the live device */
	for (int k = 0; k < NCONV; k++) {
		struct parley_client *c = cluster_client_new(from[k], "setup",
							     nodes5, 30000);
		IT_OK(parley_client_connect(c));
		const struct parley_conv *cv;
		IT_OK(parley_client_conv_open(c, to[k], &cv));
		lg[k] = (struct cluster_ledger){.user = from[k], .nodes = nodes5,
						.max = MAXMSG, .pause_ms = 5,
						.tag = (uint8_t)(0xa0 + k),
						.deadline_ms = 30000};
		snprintf(lg[k].conv, sizeof lg[k].conv, "%.*s",
			 (int)cv->conv.len, cv->conv.p);
		parley_client_free(c);
		char ck[128], ik[64];
		snprintf(ck, sizeof ck, "c/%.120s", lg[k].conv);
		snprintf(ik, sizeof ik, "u/%s", to[k]);
		int cp = (int)cluster_part_of(ck, NP), ip = (int)cluster_part_of(ik, NP);
		struct cluster_pv cv1, iv;
		int cl = cluster_leader_view(node, ALL, NULL, cp, &cv1);
		int il = cluster_leader_view(node, ALL, NULL, ip, &iv);
		printf("%s: partition %d led by node%d (voters %d %d %d); %s's "
		       "inbox: partition %d led by node%d\n", lg[k].conv, cp,
		       cl + 1, cv1.voters[0], cv1.voters[1], cv1.voters[2], to[k],
		       ip, il + 1);
	}
	pthread_t lt;
	IT_CHECK(pthread_create(&lt, NULL, live_main, NULL) == 0);
	for (int t = 0; t < 600 && !atomic_load(&live_subscribed); t++)
		it_sleep_ms(50);
	IT_CHECK(atomic_load(&live_subscribed), "bob's device never subscribed");
	for (int k = 0; k < NCONV; k++)
		cluster_ledger_start(&lg[k]);
	wait_all_more(30, "with leaderships spread");

	/* 3. kill -9 the leader of alice and bob's conversation */
	char key[128];
	snprintf(key, sizeof key, "c/%s", lg[0].conv);
	int cp = (int)cluster_part_of(key, NP);
	struct cluster_pv v;
	int K = cluster_leader_view(node, ALL, NULL, cp, &v);
	IT_CHECK(K >= 0, "partition %d: no leader", cp);
	printf("kill -9 node%d (leads partition %d of %s, and %" PRIu64
	       " partitions in all) after %d acknowledged SENDs\n", K + 1, cp,
	       lg[0].conv, cluster_led(node[K]), cluster_ledger_acked(&lg[0]));
	it_server_kill(node[K]);
	wait_all_more(30, "after a leader was killed");
	wait_spread(90000, "four survivors");
	wait_all_more(10, "with leaderships spread over the survivors");

	/* 4. it returns and gets its share back */
	it_server_start(node[K]);
	cluster_wait_links_up(node, ALL, 30000);
	wait_spread(90000, "after its return");
	wait_all_more(20, "after the killed node returned");

	/* 5. the checks */
	int total = 0;
	for (int k = 0; k < NCONV; k++) {
		cluster_ledger_stop(&lg[k]);
		total += cluster_ledger_acked(&lg[k]);
	}
	check_live();
	atomic_store(&live_stop, true);
	pthread_join(lt, NULL);
	for (int k = 0; k < NCONV; k++) {
		int held = cluster_ledger_history(&lg[k], node[0]->port, true,
						  "node1");
		IT_CHECK(held >= cluster_ledger_acked(&lg[k]), "%s: %d messages in "
			 "HISTORY, %d acknowledged", lg[k].conv, held,
			 cluster_ledger_acked(&lg[k]));
		cluster_ledger_inbox(&lg[k], to[k], nodes5, 0);
	}

	/* 6. the replicas of every partition agree */
	for (int p = 0; p < NP; p++) {
		int who = cluster_leader_view(node, ALL, NULL, p, &v);
		IT_CHECK(who >= 0, "partition %d: no leader at the end", p);
		cluster_same_digest(node, NULL, p, v.voters, v.nv);
	}
	printf("ok: %d SENDs acknowledged over 3 conversations through a kill "
	       "-9 of node%d, every one in HISTORY at its seq and in its inbox "
	       "once; leaderships spread by themselves over 5, 4 and 5 nodes; "
	       "every partition's replicas have the same digest\n", total, K + 1);
	for (int i = 0; i < ALL; i++)
		IT_CHECK(it_server_stop(node[i], SIGTERM, 10000) == 0,
			 "node%d did not stop cleanly", i + 1);
	return 0;
}
