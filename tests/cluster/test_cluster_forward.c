/*
 * test_cluster_forward.c — request forwarding (docs/CLUSTER.md §3.3):
 * a client that knows one node only (host:port, no node list) and sits
 * on a follower chats as if the follower were the leader; then the
 * leader is killed (kill -9) and nothing acknowledged is lost.
 *
 *   1. Three parleyd processes on loopback (forwarding on: the default;
 *      leader placement spread, the default, with the automatic
 *      hand-over off). The test hands every partition to node1
 *      (POST /cluster/transfer), so that "the leader" leads all of them; alice's client connects to another node only, never
 *      moving (no_reconnect), and opens a 1:1 conversation with bob,
 *      creates a group with bob and carol, sends to both, reads both
 *      histories, GROUP_INFO, READ_MARKER and RECEIPTS: every request
 *      answered at once, none NOTLEADER (the follower forwards what it
 *      would have refused; on the old code the first SEND fails
 *      NOTLEADER), and the follower's /metrics counts the forwards.
 *   2. A sender on the same follower (host:port, reconnects allowed)
 *      keeps sending to both conversations, each message with its own
 *      client_msg_id, retried with the same id after any error, while the
 *      leader is killed after a seeded number of acknowledgements; the
 *      survivors elect a leader per partition (spread: each keeps the one
 *      it elected), and the follower forwards each request to its
 *      partition's new leader or serves it itself.
 *   3. At the end, from each survivor alone: every acknowledged message
 *      is in HISTORY at the seq it was acknowledged with, each
 *      client_msg_id exactly once, seqs dense from 1: nothing lost,
 *      nothing doubled, no seq changed.
 */
#include <pthread.h>

#include "cluster_itest.h"

#define PHASE1 10  /* messages per conversation before the kill phase */
#define PHASE2 40  /* messages per conversation in the kill phase */
#define MAXMSG (PHASE1 + PHASE2)

static char conv[2][64]; /* 0: alice-bob, 1: the group */

struct acked {
	uint64_t seq;
	uint8_t id[16];
};
static struct acked acks[2][MAXMSG];
static int nacks[2];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int total_phase2;

static struct parley_client *one_node(int node, const char *dev, bool moves)
{
	char *tok = it_token_for("alice");
	struct parley_client_opts o = {
		.host = "127.0.0.1", .port = srv[node].port, .token = tok,
		.device_id = dev, .connect_timeout_ms = 2000,
		.request_timeout_ms = 3000, .call_deadline_ms = 3000,
		.backoff_min_ms = 50, .backoff_max_ms = 300,
		.no_reconnect = moves ? 0 : 1};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

static uint64_t led(int i)
{
	return cluster_led(&srv[i]);
}

/* The leader of partition p as node i's GET /cluster reports it. */
static uint64_t leader_of(int i, uint32_t p)
{
	return cluster_leader_of(&srv[i], p);
}

/* Hands every partition to node index `to` (POST /cluster/transfer on
 * each partition's leader) until its /metrics says it leads all 8. */
static int gather(int to)
{
	for (int t = 0; t < 300; t++) {
		if (led(to) == 8)
			return to;
		for (uint32_t p = 0; p < 8; p++) {
			uint64_t l = leader_of(to, p);
			if (!l || l == (uint64_t)to + 1)
				continue;
			char req[256];
			snprintf(req, sizeof req, "POST /cluster/transfer?"
				 "partition=%u&to=%d HTTP/1.1\r\nHost: t\r\n"
				 "Content-Length: 0\r\n\r\n", p, to + 1);
			int code = 0;
			free(it_http_raw(srv[l - 1].admin_port, req,
					 strlen(req), 15000, &code));
		}
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "node%d never led every partition", to + 1);
	return -1;
}

/* Waits until the nodes but `skip` lead all 8 partitions between them. */
static void survivors_lead(int skip)
{
	for (int t = 0; t < 300; t++) {
		uint64_t sum = 0;
		for (int i = 0; i < NODES; i++)
			if (i != skip)
				sum += led(i);
		if (sum == 8)
			return;
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "partitions without a leader");
}

static void msg_id(uint8_t id[16], int k, int n)
{
	memset(id, 0, 16);
	id[0] = 0xf0;
	id[1] = (uint8_t)k;
	id[2] = (uint8_t)n;
	id[3] = (uint8_t)(n >> 8);
}

static void record(int k, const uint8_t id[16], uint64_t seq)
{
	pthread_mutex_lock(&mu);
	acks[k][nacks[k]].seq = seq;
	memcpy(acks[k][nacks[k]].id, id, 16);
	nacks[k]++;
	pthread_mutex_unlock(&mu);
}

/* Phase 2: send PHASE2 messages to each conversation through the
 * follower, each retried with its client_msg_id until acknowledged. */
static void *sender_main(void *arg)
{
	int follower = *(int *)arg;
	struct parley_client *c = one_node(follower, "sender", true);
	int errs = 0, dups = 0;
	for (int n = PHASE1; n < MAXMSG; n++) {
		for (int k = 0; k < 2; k++) {
			uint8_t id[16];
			msg_id(id, k, n);
			char body[32];
			int bl = snprintf(body, sizeof body, "m%d-%d", k, n);
			struct parley_send_result r;
			int rc;
			for (int t = 0;; t++) {
				rc = parley_client_send_id(c, conv[k], id, 1, body,
							   (size_t)bl, &r);
				if (rc == 0 || t == 300)
					break;
				if (errs++ < 20)
					printf("  send %d/%d: %s, retry\n", k, n,
					       parley_strerror(rc));
				it_sleep_ms(50);
			}
			IT_CHECK(rc == 0, "send %d/%d never acknowledged: %s", k,
				 n, parley_strerror(rc));
			dups += r.duplicate != 0; /* a retry whose first try committed */
			record(k, id, r.seq);
			pthread_mutex_lock(&mu);
			total_phase2++;
			pthread_mutex_unlock(&mu);
		}
	}
	parley_client_free(c);
	printf("sender: %d errors retried here, %d acknowledged as duplicates "
	       "(libparley's own retries of the same client_msg_id)\n", errs, dups);
	return NULL;
}

/* Every acknowledged message of conversation k in node's HISTORY, at its
 * seq, once; message seqs dense (the group's also holds its creation). */
static void check_history(int node, int k)
{
	struct parley_client *c = one_node(node, "reader", false);
	static int seen[1024];
	memset(seen, 0, sizeof seen);
	uint64_t before = 0, newest = 0, count = 0;
	int rc = -1;
	for (int t = 0; t < 100 && rc; t++) {
		if (t)
			it_sleep_ms(100);
		parley_client_free(c);
		c = one_node(node, "reader", false);
		rc = parley_client_connect(c);
		if (!rc) {
			const struct parley_history_page *pg;
			rc = parley_client_history(c, conv[k], 0, 1, &pg);
		}
	}
	IT_CHECK(rc == 0, "HISTORY on node%d: %s", node + 1, parley_strerror(rc));
	for (;;) {
		const struct parley_history_page *pg;
		rc = parley_client_history(c, conv[k], before, 100, &pg);
		IT_CHECK(rc == 0, "HISTORY on node%d: %s", node + 1,
			 parley_strerror(rc));
		for (unsigned i = 0; i < pg->count; i++) {
			const struct parley_hist_msg *h = &pg->msgs[i];
			IT_CHECK(h->seq < 1024, "seq %" PRIu64, h->seq);
			seen[h->seq]++;
			if (h->seq > newest)
				newest = h->seq;
			count++;
			if (h->kind != PARLEY_EV_MESSAGE)
				continue;
			int found = 0;
			for (int a = 0; a < nacks[k]; a++) {
				if (memcmp(acks[k][a].id, h->client_msg_id, 16))
					continue;
				found++;
				IT_CHECK(acks[k][a].seq == h->seq,
					 "conv %d on node%d: a message acknowledged "
					 "at seq %" PRIu64 " is at seq %" PRIu64, k,
					 node + 1, acks[k][a].seq, h->seq);
			}
			IT_CHECK(found <= 1, "conv %d: client_msg_id acked %d times",
				 k, found);
		}
		if (!pg->next_before_seq || !pg->count)
			break;
		before = pg->next_before_seq;
	}
	for (uint64_t s = 1; s <= newest; s++)
		IT_CHECK(seen[s] == 1, "conv %d on node%d: seq %" PRIu64
			 " seen %d times (dense, once)", k, node + 1, s, seen[s]);
	for (int a = 0; a < nacks[k]; a++)
		IT_CHECK(acks[k][a].seq <= newest && seen[acks[k][a].seq] == 1,
			 "conv %d on node%d: acknowledged seq %" PRIu64 " lost", k,
			 node + 1, acks[k][a].seq);
	/* each client_msg_id once: MESSAGE entries = acknowledged ones */
	int msgs = 0;
	before = 0;
	for (;;) {
		const struct parley_history_page *pg;
		IT_OK(parley_client_history(c, conv[k], before, 100, &pg));
		for (unsigned i = 0; i < pg->count; i++)
			msgs += pg->msgs[i].kind == PARLEY_EV_MESSAGE;
		if (!pg->next_before_seq || !pg->count)
			break;
		before = pg->next_before_seq;
	}
	IT_CHECK(msgs == nacks[k], "conv %d on node%d: %d messages, %d acknowledged "
		 "(doubled or stray)", k, node + 1, msgs, nacks[k]);
	printf("node%d conv %d: %" PRIu64 " entries, %d messages, all acknowledged "
	       "ones at their seqs\n", node + 1, k, count, msgs);
	parley_client_free(c);
}

int main(void)
{
	it_init("cluster_forward");
	cluster_init("83");
	for (int i = 0; i < NODES; i++) {
		int k = 0;
		while (srv[i].extra[k])
			k++;
		srv[i].extra[k++] = "--leader-rebalance-ms";
		srv[i].extra[k++] = "0";
		srv[i].extra[k] = NULL;
	}
	for (int i = 0; i < NODES; i++)
		it_server_start(&srv[i]);
	int leader = gather(0);
	/* the highest id but the leader's: after the kill the survivor with
	 * the lower id most likely wins (it campaigns first, CLUSTER.md
	 * §3.2), so the client's node usually stays a follower and forwards
	 * to the new leader (it may also win: then it serves locally) */
	int follower = leader == NODES - 1 ? NODES - 2 : NODES - 1;
	printf("leader node%d; the client sits on follower node%d\n", leader + 1,
	       follower + 1);

	/* 1. everything through the follower, never moving */
	struct parley_client *c = one_node(follower, "a1", false);
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	int rc = parley_client_conv_open(c, "bob", &cv);
	IT_CHECK(rc == 0, "CONV_OPEN on the follower: %s", parley_strerror(rc));
	snprintf(conv[0], sizeof conv[0], "%.*s", (int)cv->conv.len, cv->conv.p);
	const struct parley_group_ok *ok;
	rc = parley_client_group_create(c, "fwd", 0,
					(const char *[]){"bob", "carol"}, 2, &ok);
	IT_CHECK(rc == 0, "GROUP_CREATE on the follower: %s", parley_strerror(rc));
	snprintf(conv[1], sizeof conv[1], "%.*s", (int)ok->conv.len, ok->conv.p);
	for (int n = 0; n < PHASE1; n++) {
		for (int k = 0; k < 2; k++) {
			uint8_t id[16];
			msg_id(id, k, n);
			struct parley_send_result r;
			rc = parley_client_send_id(c, conv[k], id, 1, "phase1", 6, &r);
			IT_CHECK(rc == 0, "SEND %d to %s on the follower: %s", n,
				 k ? "the group" : "bob", parley_strerror(rc));
			IT_CHECK(!r.duplicate, "a first SEND reported duplicate");
			record(k, id, r.seq);
		}
	}
	for (int k = 0; k < 2; k++) {
		const struct parley_history_page *pg;
		rc = parley_client_history(c, conv[k], 0, 100, &pg);
		IT_CHECK(rc == 0, "HISTORY of %s on the follower: %s",
			 k ? "the group" : "the 1:1", parley_strerror(rc));
		int m = 0;
		for (unsigned i = 0; i < pg->count; i++)
			m += pg->msgs[i].kind == PARLEY_EV_MESSAGE;
		IT_CHECK(m == PHASE1, "HISTORY of conv %d: %d messages, want %d", k,
			 m, PHASE1);
	}
	const struct parley_group_info_ok *gi;
	rc = parley_client_group_info(c, conv[1], 0, 10, &gi);
	IT_CHECK(rc == 0, "GROUP_INFO on the follower: %s", parley_strerror(rc));
	rc = parley_client_read_marker(c, conv[1], acks[1][0].seq, NULL);
	IT_CHECK(rc == 0, "READ_MARKER on the follower: %s", parley_strerror(rc));
	const struct parley_receipts_ok *ro;
	rc = parley_client_receipts(c, conv[1], acks[1][0].seq, NULL, 10, &ro);
	IT_CHECK(rc == 0, "RECEIPTS on the follower: %s", parley_strerror(rc));
	const char *host;
	uint16_t port;
	IT_OK(parley_client_current_node(c, &host, &port));
	IT_CHECK(port == srv[follower].port, "the client moved to port %u", port);
	parley_client_free(c);
	char *m = it_http_get(srv[follower].admin_port, "/metrics", NULL);
	IT_CHECK(m, "metrics");
	uint64_t fw = it_metric(m, "parley_forward_requests_total{outcome=\"replied\"}");
	uint64_t nl = it_metric(m, "parley_forward_requests_total{outcome=\"no_leader\"}");
	free(m);
	uint64_t served = it_metric_get(srv[leader].admin_port,
					"parley_forward_served_total{outcome=\"ok\"}");
	printf("phase 1: %d SENDs, histories, GROUP_INFO, READ_MARKER, RECEIPTS "
	       "answered on the follower; forwarded %" PRIu64 " (no leader: %"
	       PRIu64 "), the leader served %" PRIu64 "\n", 2 * PHASE1, fw, nl,
	       served);
	IT_CHECK(fw >= 2 * PHASE1 + 4, "the follower forwarded %" PRIu64
		 " requests", fw);
	IT_CHECK(served >= fw, "the leader served %" PRIu64 " of %" PRIu64,
		 served, fw);

	/* 2. keep sending through the follower; kill -9 the leader */
	pthread_t th;
	IT_CHECK(pthread_create(&th, NULL, sender_main, &follower) == 0);
	int kill_at = 5 + (int)parley_rng_below(&it_rng, 30);
	for (;;) {
		pthread_mutex_lock(&mu);
		int t = total_phase2;
		pthread_mutex_unlock(&mu);
		if (t >= kill_at)
			break;
		it_sleep_ms(2);
	}
	printf("kill -9 node%d (the leader) after %d acknowledged SENDs\n",
	       leader + 1, kill_at);
	it_server_kill(&srv[leader]);
	pthread_join(th, NULL);
	survivors_lead(leader);
	printf("partitions led after the kill: node%d %" PRIu64 ", node%d %"
	       PRIu64 "\n", (leader + 1) % NODES + 1, led((leader + 1) % NODES),
	       (leader + 2) % NODES + 1, led((leader + 2) % NODES));
	m = it_http_get(srv[follower].admin_port, "/metrics", NULL);
	IT_CHECK(m, "metrics");
	printf("follower forwards: replied %" PRIu64 ", link_down %" PRIu64
	       ", timeout %" PRIu64 ", no_leader %" PRIu64 "\n",
	       it_metric(m, "parley_forward_requests_total{outcome=\"replied\"}"),
	       it_metric(m, "parley_forward_requests_total{outcome=\"link_down\"}"),
	       it_metric(m, "parley_forward_requests_total{outcome=\"timeout\"}"),
	       it_metric(m, "parley_forward_requests_total{outcome=\"no_leader\"}"));
	free(m);

	/* 3. histories from each survivor */
	for (int i = 0; i < NODES; i++) {
		if (i == leader)
			continue;
		for (int k = 0; k < 2; k++)
			check_history(i, k);
	}
	it_cleanup();
	printf("test_cluster_forward: ok\n");
	return 0;
}
