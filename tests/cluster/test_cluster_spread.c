/*
 * test_cluster_spread.c — chat with the partitions' leaderships spread
 * over the nodes (--leader-placement spread, docs/CLUSTER.md §3.2-3.4).
 *
 * Three parleyd processes on loopback, 8 partitions, spread placement:
 * each partition keeps the leader it elected, so the conversations and
 * the members' inboxes and lists sit on different leaders. The test
 * splits leadership for sure: `parleyctl cluster rebalance` (POST
 * /cluster/rebalance on every node) until no node leads more than 3 of
 * the 8 partitions (one run does it; before it, one node usually leads
 * 6-8). Then:
 *   1. three senders chat through libparley clients given all three
 *      nodes, with their own client_msg_ids: alice -> bob (1:1), carol ->
 *      dave (1:1), alice in a group with bob, carol and dave; each
 *      message's fan-out (inbox pointers of every member) crosses nodes:
 *      the conversation's leader forwards the appends to the inboxes'
 *      leaders (parley_fwd_sent_total);
 *   1a. with leadership split and no failure, every member's inbox gets
 *      the first half of the messages exactly once, and the fan-out
 *      checkpoints advance (step 5's check);
 *   2. during the second half, after a seeded number of
 *      acknowledgements, the node leading the most partitions is killed
 *      (kill -9) while the senders go on;
 *   3. every acknowledged message is in HISTORY at its seq, each
 *      client_msg_id once, seqs dense;
 *   4. every member's inbox, SYNCed from inbox seq 1 by a new device
 *      through the node list, holds every message of its conversations
 *      exactly once, with dense inbox seqs;
 *   5. fan-out checkpoints advanced while leadership was split: each
 *      surviving node that leads partitions wrote checkpoints
 *      (parley_fanout_checkpoints_total) and its smallest cursor
 *      (parley_fanout_watermark_ms) passed the time the traffic started.
 * Without forwarding (the forwarder not installed) step 1a fails: the
 * cross-node fan-out appends fail NOTLEADER, recoveries re-fan out and
 * fail again, and the inboxes led elsewhere miss the messages until
 * leadership happens to gather on one node (which the kill in step 2
 * does, so the end state alone would not show it).
 */
#include <pthread.h>
#include <sys/time.h>
#include <sys/wait.h>

#include "cluster_itest.h"

#define PER_THREAD 50
#define NCONV 3

static char conv_id[NCONV][64];

struct acked {
	uint64_t seq;
	uint8_t id[16];
};

struct sender {
	int idx;
	int from, to; /* messages [from, to) of this phase */
	const char *user;
	struct acked ack[PER_THREAD];
	int nack;
	pthread_mutex_t *mu;
	int *total_acked;
};

static struct parley_client *cluster_client(const char *user,
					    const char *device)
{
	return cluster_client_new(user, device, NULL, 30000);
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	char dev[16];
	snprintf(dev, sizeof dev, "send-%d", s->idx);
	struct parley_client *c = cluster_client(s->user, dev);
	for (int i = s->from; i < s->to; i++) {
		uint8_t id[16] = {0};
		id[0] = (uint8_t)s->idx;
		id[1] = (uint8_t)i;
		id[15] = 0xd7;
		char body[32];
		int bl = snprintf(body, sizeof body, "t%d-m%d", s->idx, i);
		struct parley_send_result r;
		int rc = parley_client_send_id(c, conv_id[s->idx], id, 1, body,
					       (size_t)bl, &r);
		IT_CHECK(rc == 0, "send %d/%d: %s", s->idx, i, parley_strerror(rc));
		s->ack[s->nack].seq = r.seq;
		memcpy(s->ack[s->nack].id, id, 16);
		s->nack++;
		pthread_mutex_lock(s->mu);
		(*s->total_acked)++;
		pthread_mutex_unlock(s->mu);
	}
	parley_client_free(c);
	return NULL;
}

static uint64_t led(int i)
{
	return cluster_led(&srv[i]);
}

/* Waits until every partition has a leader (the led counts add up to 8)
 * and returns how many nodes lead some; fills n[]. */
static int leaders(int skip, uint64_t n[NODES])
{
	for (int t = 0; t < 200; t++) {
		uint64_t sum = 0;
		int nodes = 0;
		for (int i = 0; i < NODES; i++) {
			n[i] = i == skip ? 0 : led(i);
			sum += n[i];
			nodes += n[i] > 0;
		}
		if (sum == 8)
			return nodes;
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "partitions without a leader");
	return 0;
}

/* ---- inboxes ------------------------------------------------------------------ */

/* The conversation's first message seq: a group starts with its
 * membership events. */
static uint64_t first_seq[NCONV];

/* MESSAGE events of conv in b, counted per message (0-based) into cnt. */
static uint64_t inbox_count(const struct cluster_inbox *b, int k, int upto,
			    int cnt[PER_THREAD])
{
	uint64_t n = 0;
	memset(cnt, 0, sizeof(int) * PER_THREAD);
	for (uint64_t i = 0; i < b->n; i++) {
		const struct cluster_inbox_ev *x = &b->v[i];
		if (x->kind != PARLEY_EV_MESSAGE || strcmp(x->conv, conv_id[k]))
			continue;
		if (x->conv_seq >= first_seq[k] &&
		    x->conv_seq < first_seq[k] + (uint64_t)upto)
			cnt[x->conv_seq - first_seq[k]]++;
		n++;
	}
	return n;
}

/* A new device of user SYNCs from inbox seq 1 through the node list and
 * must receive the first `upto` messages of the conversations in mask
 * exactly once, with dense inbox seqs (MESSAGE, membership and RECEIPT
 * events). */
static void check_inbox(const char *user, unsigned mask, int upto,
			const char *tag)
{
	struct cluster_inbox b = {0};
	char dev[32];
	snprintf(dev, sizeof dev, "%s-%s", user, tag);
	struct parley_client *c = cluster_client_ev(
		user, dev, nodes_list, 0, 30000, false, cluster_inbox_on_event,
		cluster_inbox_on_event, &b);
	IT_OK(parley_client_connect(c));
	IT_OK(parley_client_subscribe(c, 1, NULL));
	int cnt[PER_THREAD];
	uint64_t want = 0;
	for (int k = 0; k < NCONV; k++)
		if (mask & (1u << k))
			want += (uint64_t)upto;
	for (int ms = 0; ms < 30000; ms += 50) {
		uint64_t got = 0;
		for (int k = 0; k < NCONV; k++)
			if (mask & (1u << k))
				got += inbox_count(&b, k, upto, cnt);
		if (got >= want)
			break;
		(void)parley_client_poll(c, 50);
	}
	(void)parley_client_poll(c, 500);
	for (uint64_t i = 0; i < b.n; i++)
		IT_CHECK(b.v[i].inbox_seq == i + 1, "%s: event %" PRIu64
			 " has inbox seq %" PRIu64 " (a gap or a repeat)", user,
			 i, b.v[i].inbox_seq);
	for (int k = 0; k < NCONV; k++) {
		if (!(mask & (1u << k)))
			continue;
		uint64_t n = inbox_count(&b, k, upto, cnt);
		for (int q = 0; q < upto; q++)
			IT_CHECK(cnt[q] == 1, "%s: conv %d message %d delivered %d "
				 "times (%" PRIu64 " events of %d): %s", user, k,
				 q, cnt[q], n, upto,
				 cnt[q] ? "doubled" : "lost from the inbox");
	}
	printf("%s (%s): %" PRIu64 " inbox events, each of the %d messages of "
	       "its conversations once\n", user, tag, b.n, upto);
	parley_client_free(c);
	free(b.v);
}

static void check_history(struct parley_client *rd, int k,
			  const struct sender *s)
{
	static uint8_t seen[PER_THREAD * 4][16];
	static bool have[PER_THREAD * 4];
	memset(have, 0, sizeof have);
	uint64_t nmsg = 0, before = 0;
	for (;;) {
		const struct parley_history_page *pg;
		IT_OK(parley_client_history(rd, conv_id[k], before, 100, &pg));
		for (uint16_t i = 0; i < pg->count; i++) {
			const struct parley_hist_msg *m = &pg->msgs[i];
			if (m->kind != PARLEY_EV_MESSAGE)
				continue; /* a group's membership events */
			IT_CHECK(m->seq >= 1 && m->seq < PER_THREAD * 4);
			memcpy(seen[m->seq], m->client_msg_id, 16);
			have[m->seq] = true;
			nmsg++;
		}
		if (!pg->count || !pg->next_before_seq)
			break;
		before = pg->next_before_seq;
	}
	IT_CHECK(nmsg == PER_THREAD, "conv %d: %" PRIu64 " messages in HISTORY, "
		 "%d sent (lost or doubled)", k, nmsg, PER_THREAD);
	for (int a = 0; a < s->nack; a++) {
		const struct acked *ak = &s->ack[a];
		IT_CHECK(ak->seq < PER_THREAD * 4 && have[ak->seq] &&
			 !memcmp(seen[ak->seq], ak->id, 16),
			 "conv %d seq %" PRIu64 ": not the message acknowledged", k,
			 ak->seq);
		for (int b = 0; b < a; b++)
			IT_CHECK(s->ack[b].seq != ak->seq, "conv %d: seq %" PRIu64
				 " acknowledged twice", k, ak->seq);
	}
	first_seq[k] = s->ack[0].seq;
	for (int a = 1; a < s->nack; a++)
		IT_CHECK(s->ack[a].seq == first_seq[k] + (uint64_t)a,
			 "conv %d: seqs not dense", k);
}

/* `parleyctl cluster rebalance --admin <every node>`: its exit code (its
 * output goes to the test's). */
static int ctl_rebalance(void)
{
	char cmd[1024];
	int n = snprintf(cmd, sizeof cmd, "'%s/tools/parleyctl' cluster "
			 "rebalance --admin ", getenv("PARLEY_BIN_DIR"));
	for (int i = 0; i < NODES; i++)
		n += snprintf(cmd + n, sizeof cmd - (size_t)n, "%s127.0.0.1:%u",
			      i ? "," : "", srv[i].admin_port);
	fflush(stdout);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Checkpoint counters of the nodes running, and how many messages each
 * fanned out (as the leader of their conversations' partitions). */
static uint64_t fanned[NODES];
static void checkpoints(uint64_t ck[NODES], uint64_t wm[NODES])
{
	for (int i = 0; i < NODES; i++) {
		ck[i] = wm[i] = 0;
		if (!srv[i].pid)
			continue;
		fanned[i] = it_metric_get(srv[i].admin_port,
					  "parley_fanout_messages_total");
		ck[i] = it_metric_get(srv[i].admin_port,
				      "parley_fanout_checkpoints_total");
		wm[i] = it_metric_get(srv[i].admin_port,
				      "parley_fanout_watermark_ms");
	}
}

/* Step 5: every node that leads partitions (n[i] > 0) and fanned out
 * messages since fan0 (its partitions hold conversations of the test)
 * wrote checkpoints since ck0, and its smallest cursor (of the partitions
 * with fan-out work) passed t0 (bounded wait); at least two such nodes. */
static void check_checkpoints(const uint64_t n[NODES], const uint64_t ck0[NODES],
			      const uint64_t fan0[NODES], uint64_t t0_ms,
			      const char *when)
{
	uint64_t ck[NODES], wm[NODES];
	for (int t = 0;; t++) {
		checkpoints(ck, wm);
		bool all = true;
		int busy = 0;
		for (int i = 0; i < NODES; i++)
			if (n[i] && fanned[i] > fan0[i]) {
				busy++;
				all = all && ck[i] > ck0[i] && wm[i] > t0_ms;
			}
		if (all || t == 100) {
			for (int i = 0; i < NODES; i++)
				if (n[i] && fanned[i] > fan0[i])
					printf("%s: node%d leads %" PRIu64 ", fanned out %"
					       PRIu64 " messages: %" PRIu64
					       " checkpoints since, smallest cursor "
					       "%+lld ms from the traffic's start\n",
					       when, i + 1, n[i], fanned[i] - fan0[i],
					       ck[i] - ck0[i],
					       (long long)(wm[i] - t0_ms));
		}
		IT_CHECK(busy >= 1, "%s: no node fanned out anything", when);
		if (all)
			return;
		IT_CHECK(t < 100, "%s: fan-out checkpoints did not advance on the "
			 "nodes leading partitions while leadership was split",
			 when);
		it_sleep_ms(100);
	}
}

static void run_senders(struct sender *snd, int from, int to, int kill_at,
			int *victim)
{
	static const char *who[NCONV] = {"alice", "carol", "alice"};
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	int total = 0;
	pthread_t th[NCONV];
	for (int k = 0; k < NCONV; k++) {
		int nack = snd[k].nack;
		struct acked keep[PER_THREAD];
		memcpy(keep, snd[k].ack, sizeof keep);
		snd[k] = (struct sender){.idx = k, .user = who[k], .from = from,
					 .to = to, .mu = &mu,
					 .total_acked = &total, .nack = nack};
		memcpy(snd[k].ack, keep, sizeof keep);
		IT_CHECK(pthread_create(&th[k], NULL, sender_main, &snd[k]) == 0);
	}
	if (kill_at >= 0) {
		for (;;) {
			pthread_mutex_lock(&mu);
			int t = total;
			pthread_mutex_unlock(&mu);
			if (t >= kill_at)
				break;
			it_sleep_ms(5);
		}
		uint64_t n[NODES];
		(void)leaders(-1, n);
		int v = 0;
		for (int i = 1; i < NODES; i++)
			if (n[i] > n[v])
				v = i;
		printf("kill -9 node%d (leads %" PRIu64 " partitions) after %d "
		       "acknowledged SENDs of this phase\n", v + 1, n[v], kill_at);
		it_server_kill(&srv[v]);
		*victim = v;
	}
	for (int k = 0; k < NCONV; k++)
		pthread_join(th[k], NULL);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0); /* lines before a failure too */
	it_init("cluster_spread");
	cluster_init("79");
	static const char *const spread[] = {"--leader-placement", "spread",
					     NULL};
	for (int i = 0; i < NODES; i++)
		cluster_extra_add(&srv[i], spread);
	struct it_server *all[NODES];
	for (int i = 0; i < NODES; i++) {
		it_server_start(&srv[i]);
		all[i] = &srv[i];
	}
	/* a rebalance shares the partitions among partition 0's voters whose
	 * link is up (docs/CLUSTER.md §3.2): with a link still down after the
	 * start it counts two nodes, a share of 4, and hands nothing more
	 * (seen twice under ctest -j2: "rebalance never spread the
	 * leaderships"). Wait until every node shows every link up. */
	cluster_wait_links_up(all, NODES, 30000);
	/* leadership spread for sure: rebalance until each node leads at
	 * most ceil(8 / 3) = 3 partitions */
	uint64_t n[NODES];
	for (int round = 0;; round++) {
		(void)leaders(-1, n);
		printf("partitions led: node1 %" PRIu64 ", node2 %" PRIu64
		       ", node3 %" PRIu64 "\n", n[0], n[1], n[2]);
		if (n[0] <= 3 && n[1] <= 3 && n[2] <= 3)
			break;
		IT_CHECK(round < 5, "rebalance never spread the leaderships");
		cluster_wait_links_up(all, NODES, 30000);
		int ex = ctl_rebalance();
		IT_CHECK(ex == 0, "parleyctl cluster rebalance: exit %d", ex);
	}
	/* the conversations, through the cluster */
	struct parley_client *ca = cluster_client("alice", "setup");
	struct parley_client *cc = cluster_client("carol", "setup");
	IT_OK(parley_client_connect(ca));
	IT_OK(parley_client_connect(cc));
	const struct parley_conv *cv;
	int rc = parley_client_conv_open(ca, "bob", &cv);
	IT_CHECK(rc == 0, "conv_open: %s", parley_strerror(rc));
	snprintf(conv_id[0], sizeof conv_id[0], "%.*s", (int)cv->conv.len,
		 cv->conv.p);
	rc = parley_client_conv_open(cc, "dave", &cv);
	IT_CHECK(rc == 0, "conv_open: %s", parley_strerror(rc));
	snprintf(conv_id[1], sizeof conv_id[1], "%.*s", (int)cv->conv.len,
		 cv->conv.p);
	const struct parley_group_ok *ok;
	const char *mem[] = {"bob", "carol", "dave"};
	rc = parley_client_group_create(ca, "team", 0, mem, 3, &ok);
	IT_CHECK(rc == 0, "group_create: %s", parley_strerror(rc));
	snprintf(conv_id[2], sizeof conv_id[2], "%.*s", (int)ok->conv.len,
		 ok->conv.p);
	parley_client_free(ca);
	parley_client_free(cc);
	struct timeval tv;
	gettimeofday(&tv, NULL);
	uint64_t t0_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	uint64_t ck0[NODES], wm0[NODES], fan0[NODES];
	checkpoints(ck0, wm0);
	memcpy(fan0, fanned, sizeof fan0);
	/* 1, 1a: the first half with leadership split, nothing failing */
	static struct sender snd[NCONV];
	int victim = -1;
	run_senders(snd, 0, PER_THREAD / 2, -1, &victim);
	for (int k = 0; k < NCONV; k++)
		first_seq[k] = snd[k].ack[0].seq;
	uint64_t fwd = 0;
	for (int i = 0; i < NODES; i++)
		fwd += it_metric_get(srv[i].admin_port, "parley_fwd_sent_total");
	printf("first half acknowledged; %" PRIu64 " appends forwarded\n", fwd);
	IT_CHECK(fwd > 0, "no fan-out append crossed nodes");
	check_inbox("bob", 1u | 4u, PER_THREAD / 2, "split");
	check_inbox("dave", 2u | 4u, PER_THREAD / 2, "split");
	check_inbox("alice", 1u | 4u, PER_THREAD / 2, "split");
	check_inbox("carol", 2u | 4u, PER_THREAD / 2, "split");
	(void)leaders(-1, n);
	check_checkpoints(n, ck0, fan0, t0_ms, "split");
	/* 2: the second half, a kill -9 on the way */
	gettimeofday(&tv, NULL);
	uint64_t t1_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	checkpoints(ck0, wm0);
	memcpy(fan0, fanned, sizeof fan0);
	run_senders(snd, PER_THREAD / 2, PER_THREAD,
		    5 + (int)parley_rng_below(&it_rng, 40), &victim);
	int nodes = leaders(victim, n);
	printf("after the kill: node1 %" PRIu64 ", node2 %" PRIu64 ", node3 %"
	       PRIu64 " partitions led\n", n[0], n[1], n[2]);
	IT_CHECK(nodes >= 1);
	/* 3. HISTORY (linearizable on any node) */
	struct parley_client *rd = cluster_client("alice", "reader");
	IT_OK(parley_client_connect(rd));
	check_history(rd, 0, &snd[0]);
	check_history(rd, 2, &snd[2]);
	parley_client_free(rd);
	rd = cluster_client("carol", "reader");
	IT_OK(parley_client_connect(rd));
	check_history(rd, 1, &snd[1]);
	parley_client_free(rd);
	/* 4. every member's inbox */
	check_inbox("bob", 1u | 4u, PER_THREAD, "end");
	check_inbox("dave", 2u | 4u, PER_THREAD, "end");
	check_inbox("alice", 1u | 4u, PER_THREAD, "end");
	check_inbox("carol", 2u | 4u, PER_THREAD, "end");
	/* 5. checkpoints, per partition, by each partition's leader */
	check_checkpoints(n, ck0, fan0, t1_ms, "after the kill");
	for (int i = 0; i < NODES; i++)
		if (i != victim)
			IT_CHECK(it_server_stop(&srv[i], SIGTERM, 10000) == 0,
				 "node%d did not stop cleanly", i + 1);
	printf("ok: %d messages through split leadership and a kill -9, all in "
	       "HISTORY at their seqs and in every member's inbox once; "
	       "checkpoints advanced per partition\n", NCONV * PER_THREAD);
	return 0;
}
