/*
 * test_cluster_failover.c — three parleyd processes on loopback form a
 * static cluster (node_id / cluster_id / peer_port / peers), and libparley
 * clients given the list of all three nodes chat through it while the node
 * leading the partitions is killed with SIGKILL.
 *
 *   1. Two sender threads (alice in two conversations) send with their
 *      own client_msg_ids through a client that knows all three nodes; a
 *      node that does not lead answers NOTLEADER and the client moves on.
 *   2. After a seeded number of acknowledgements, the node that led the
 *      last acknowledged SEND is killed (kill -9) while the senders keep
 *      going: the survivors elect, the clients reconnect elsewhere and
 *      retry their unacknowledged SEND with the same client_msg_id.
 *   3. At the end every acknowledged message is in HISTORY with the seq
 *      it was acknowledged with, each client_msg_id exactly once, seqs
 *      dense: nothing lost, nothing doubled.
 *   4. Every member's inbox (bob, dave: recipients; alice: her other
 *      devices) holds every message exactly once: a new device of each,
 *      through the node list (so on a surviving node), SYNCs from inbox
 *      seq 1 and must receive inbox seqs 1..n without a gap and, per
 *      conversation, the MESSAGE events of conv seqs 1..PER_THREAD each
 *      once. A fan-out append in flight on the killed leader is lost
 *      unless the new leader re-runs the fan-out recovery for the
 *      partitions it gains (chat.h, "Leadership").
 * The leader is found by asking each node alone (no_reconnect, one node):
 * a follower answers a SEND with NOTLEADER.
 */
#include <pthread.h>

#include "cluster_itest.h"

#define PER_THREAD 60

static char conv_id[2][64];

struct acked {
	uint64_t seq;
	uint8_t id[16];
};

struct sender {
	int idx;
	struct acked ack[PER_THREAD];
	int nack;
	pthread_mutex_t *mu;
	int *total_acked;
};

static struct parley_client *cluster_client(const char *user,
					    const char *device)
{
	return cluster_client_new(user, device, NULL, 25000);
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	char dev[16];
	snprintf(dev, sizeof dev, "send-%d", s->idx);
	struct parley_client *c = cluster_client("alice", dev);
	for (int i = 0; i < PER_THREAD; i++) {
		uint8_t id[16] = {0};
		id[0] = (uint8_t)s->idx;
		id[1] = (uint8_t)i;
		id[15] = 0xc1;
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

/* The node whose write succeeds (the leader), asking each node alone. */
static int find_leader(int skip)
{
	return cluster_find_leader(skip);
}

/* MESSAGE events of conv in b, counted per conv seq into cnt[1..PER_THREAD]. */
static uint64_t inbox_count(const struct cluster_inbox *b, const char *conv,
			    int cnt[PER_THREAD + 1])
{
	uint64_t n = 0;
	memset(cnt, 0, sizeof(int) * (PER_THREAD + 1));
	for (uint64_t i = 0; i < b->n; i++) {
		const struct cluster_inbox_ev *x = &b->v[i];
		if (x->kind != PARLEY_EV_MESSAGE || strcmp(x->conv, conv))
			continue;
		if (x->conv_seq >= 1 && x->conv_seq <= PER_THREAD)
			cnt[x->conv_seq]++;
		n++;
	}
	return n;
}

/* A new device of user SYNCs from inbox seq 1 through the node list and
 * must receive every message of the conversations convs[] (mask) exactly
 * once, with dense inbox seqs (MESSAGE events and the RECEIPT events the
 * other members' devices caused: libparley passes those to on_receipt). */
static void check_inbox(const char *user, unsigned mask)
{
	struct cluster_inbox b = {0};
	char dev[32];
	snprintf(dev, sizeof dev, "%s-check", user);
	struct parley_client *c = cluster_client_ev(
		user, dev, nodes_list, 0, 25000, false, cluster_inbox_on_event,
		cluster_inbox_on_event, &b);
	IT_OK(parley_client_connect(c));
	IT_OK(parley_client_subscribe(c, 1, NULL));
	int cnt[PER_THREAD + 1];
	uint64_t want = 0;
	for (int k = 0; k < 2; k++)
		if (mask & (1u << k))
			want += PER_THREAD;
	/* wait (bounded) until every message arrived, then a little more
	 * for anything doubled */
	for (int ms = 0; ms < 20000; ms += 50) {
		uint64_t got = 0;
		for (int k = 0; k < 2; k++)
			if (mask & (1u << k))
				got += inbox_count(&b, conv_id[k], cnt);
		if (got >= want)
			break;
		(void)parley_client_poll(c, 50);
	}
	(void)parley_client_poll(c, 500);
	for (uint64_t i = 0; i < b.n; i++)
		IT_CHECK(b.v[i].inbox_seq == i + 1, "%s: event %" PRIu64
			 " has inbox seq %" PRIu64 " (a gap or a repeat)", user,
			 i, b.v[i].inbox_seq);
	for (int k = 0; k < 2; k++) {
		if (!(mask & (1u << k)))
			continue;
		uint64_t n = inbox_count(&b, conv_id[k], cnt);
		for (int q = 1; q <= PER_THREAD; q++)
			IT_CHECK(cnt[q] == 1, "%s: conv %d seq %d delivered %d "
				 "times (%" PRIu64 " events of %d): %s", user, k,
				 q, cnt[q], n, PER_THREAD,
				 cnt[q] ? "doubled" : "lost from the inbox");
	}
	printf("%s: %" PRIu64 " inbox events, every message once\n", user, b.n);
	parley_client_free(c);
	free(b.v);
}

int main(void)
{
	it_init("cluster_failover");
	/* the leader is found by asking each node alone, which a
	 * follower answers NOTLEADER only with forwarding off */
	cluster_no_forward = true;
	cluster_init("77");
	for (int i = 0; i < NODES; i++) {
		it_server_start(&srv[i]);
		if (i == 0) {
			/* alone, node1 cannot elect (2 of 3 votes): it knows
			 * no leader of partition 0 and is not ready */
			int code = 0;
			char *r = it_http_get(srv[0].admin_port, "/readyz", &code);
			IT_CHECK(code == 503, "/readyz of a lone node: %d", code);
			free(r);
			r = it_http_get(srv[0].admin_port, "/metrics", &code);
			IT_CHECK(code == 200 && r && strstr(r,
				 "\nparley_ready_leader_known 0\n"),
				 "a lone node claims to know a leader");
			free(r);
		}
	}
	/* the conversations, opened through the cluster */
	struct parley_client *c = cluster_client("alice", "setup");
	IT_OK(parley_client_connect(c));
	const char *peers[2] = {"bob", "dave"};
	for (int k = 0; k < 2; k++) {
		const struct parley_conv *cv;
		int rc = parley_client_conv_open(c, peers[k], &cv);
		IT_CHECK(rc == 0, "conv_open: %s", parley_strerror(rc));
		snprintf(conv_id[k], sizeof conv_id[k], "%.*s", (int)cv->conv.len,
			 cv->conv.p);
	}
	int leader = find_leader(-1);
	printf("leader before the kill: node%d\n", leader + 1);
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	int total = 0;
	static struct sender snd[2];
	pthread_t th[2];
	for (int k = 0; k < 2; k++) {
		snd[k] = (struct sender){.idx = k, .mu = &mu, .total_acked = &total};
		IT_CHECK(pthread_create(&th[k], NULL, sender_main, &snd[k]) == 0);
	}
	int kill_at = 10 + (int)parley_rng_below(&it_rng, 40);
	for (;;) {
		pthread_mutex_lock(&mu);
		int t = total;
		pthread_mutex_unlock(&mu);
		if (t >= kill_at)
			break;
		it_sleep_ms(5);
	}
	printf("kill -9 node%d after %d acknowledged SENDs\n", leader + 1, kill_at);
	it_server_kill(&srv[leader]);
	for (int k = 0; k < 2; k++)
		pthread_join(th[k], NULL);
	int leader2 = find_leader(leader);
	printf("leader after the kill: node%d\n", leader2 + 1);
	IT_CHECK(leader2 != leader);
	/* HISTORY on the new leader: every acknowledged message, its seq */
	struct parley_client_opts o = {.host = "127.0.0.1",
				       .port = srv[leader2].port,
				       .token = NULL, .device_id = "reader",
				       .call_deadline_ms = 10000};
	char *tok = it_token_for("alice");
	o.token = tok;
	struct parley_client *rd = NULL;
	IT_OK(parley_client_new(&o, &rd));
	IT_OK(parley_client_connect(rd));
	for (int k = 0; k < 2; k++) {
		uint8_t seen[PER_THREAD * 4][16];
		uint64_t nseen = 0, before = 0;
		for (;;) {
			const struct parley_history_page *pg;
			IT_OK(parley_client_history(rd, conv_id[k], before, 100, &pg));
			for (uint16_t i = 0; i < pg->count; i++) {
				const struct parley_hist_msg *m = &pg->msgs[i];
				IT_CHECK(nseen < PER_THREAD * 4);
				memcpy(seen[m->seq - 1], m->client_msg_id, 16);
				nseen++;
			}
			if (!pg->count || !pg->next_before_seq)
				break;
			before = pg->next_before_seq;
		}
		IT_CHECK(nseen == PER_THREAD, "conv %d: %" PRIu64 " messages, %d "
			 "sent (lost or doubled)", k, nseen, PER_THREAD);
		for (int a = 0; a < snd[k].nack; a++) {
			const struct acked *ak = &snd[k].ack[a];
			IT_CHECK(ak->seq >= 1 && ak->seq <= PER_THREAD,
				 "conv %d: acked seq %" PRIu64, k, ak->seq);
			IT_CHECK(!memcmp(seen[ak->seq - 1], ak->id, 16),
				 "conv %d seq %" PRIu64 ": another message", k,
				 ak->seq);
		}
	}
	parley_client_free(rd);
	parley_client_free(c);
	free(tok);
	check_inbox("bob", 1u);
	check_inbox("dave", 2u);
	check_inbox("alice", 3u);
	/* /metrics of the survivors: every partition is led by one of them
	 * and partition 0's leader reports it; they counted the elections
	 * the kill caused and each one's link to the killed node is down;
	 * the new leader counts its fan-out recoveries. Which survivor leads
	 * how many is not promised: with spread placement (the default) each
	 * partition elects its own leader, and once no role or term changed
	 * for leader_rebalance_ms (5 s) a node above its share hands the
	 * excess over (docs/CLUSTER.md §3.2), so the new leader leads all 8
	 * only until then. Asserting that it leads all 8 failed whenever the
	 * checks above took longer than that on a loaded machine (node log:
	 * "leaderships over this node's share handed over handed=4 share=4
	 * nodes=2"). Nor does every survivor count a term change: a node
	 * counts one only from a term it had seen before (peer_node.c), and
	 * a node that started last may first hear of any term after the
	 * kill (seen: node3 up 12 ms before node1 was killed, its
	 * parley_raft_term_changes_total 0). The node that acknowledged the
	 * killed leader's appends with it saw its term, so the sum is >= 1. */
	for (int tries = 0;; tries++) {
		uint64_t sum = 0, terms = 0;
		int p0 = -1, up = -1;
		char down[64];
		snprintf(down, sizeof down, "parley_peer_link_up{node=\"%d\"} 0",
			 leader + 1);
		for (int i = 0; i < NODES; i++) {
			if (i == leader)
				continue;
			char *m = it_http_get(srv[i].admin_port, "/metrics", NULL);
			IT_CHECK(m, "/metrics of node%d", i + 1);
			sum += it_metric(m, "parley_raft_partitions_led");
			terms += it_metric(m, "parley_raft_term_changes_total");
			if (strstr(m, "\nparley_raft_role{partition=\"0\"} 3\n"))
				p0 = i;
			if (!strstr(m, down))
				up = i;
			IT_CHECK(i != leader2 ||
				 strstr(m, "\nparley_fanout_lead_recoveries_total "));
			free(m);
		}
		if (sum == 8 && p0 >= 0 && terms >= 1 && up < 0) {
			printf("partition 0 led by node%d; the survivors lead all "
			       "8 partitions and counted %" PRIu64 " term "
			       "changes\n", p0 + 1, terms);
			break;
		}
		IT_CHECK(tries < 200, "the survivors lead %" PRIu64 " of 8 "
			 "partitions, partition 0 %s; %" PRIu64 " term changes; "
			 "node%d's link to node%d %s", sum,
			 p0 < 0 ? "by none of them" : "led", terms, up + 1,
			 leader + 1, up < 0 ? "down" : "not down");
		it_sleep_ms(100);
	}
	for (int i = 0; i < NODES; i++) {
		if (i == leader)
			continue;
		int code = 0;
		char *r = it_http_get(srv[i].admin_port, "/readyz", &code);
		IT_CHECK(code == 200, "/readyz of node%d after failover: %d", i + 1,
			 code);
		free(r);
	}
	for (int i = 0; i < NODES; i++)
		if (i != leader)
			IT_CHECK(it_server_stop(&srv[i], SIGTERM, 10000) == 0,
				 "node%d did not stop cleanly", i + 1);
	printf("ok: %d messages acknowledged through a leader kill, all in "
	       "HISTORY with their seqs and in every member's inbox, none "
	       "doubled\n", 2 * PER_THREAD);
	return 0;
}
