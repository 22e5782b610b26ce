/*
 * test_cluster_rebalance.c — with leadership spread over the nodes, the
 * nodes even their leaderships out by themselves (docs/CLUSTER.md §3.2,
 * `leader_rebalance_ms`): three parleyd processes on loopback, 8
 * partitions (share: at most ceil(8 / 3) = 3 each), `--leader-placement
 * spread --leader-rebalance-ms 1000`, no `parleyctl cluster rebalance`:
 *   1. after the start, within a bound, no node leads more than 3;
 *   2. the test hands partitions to node1 (POST /cluster/transfer) until
 *      it leads at least 6; node1 hands its excess back by itself
 *      (parley_leader_shed_partitions_total on node1 grows) until no
 *      node leads more than 3 again;
 *   3. kill -9 of the node leading the most: the two survivors lead all 8
 *      (at most 4 each, their share of two nodes), and once it restarts
 *      and its links are up, the others hand it partitions until no
 *      node leads more than 3; a client chats through the cluster after
 *      each step (every SEND acknowledged);
 *   4. membership changes with leadership spread: node 4 starts and POST
 *      /cluster/add-node (asked of partition 0's leader) makes it a voter
 *      of all 8 partitions — the node running the change asks each
 *      partition's leader for the partition (peer frame XFER) — and the
 *      four nodes even out to at most 2 each; then POST
 *      /cluster/remove-node removes it again (200) and the three even out
 *      to at most 3 each.
 *   5. POST /cluster/rebalance runs on the membership worker: node1 is
 *      given 6 leaderships again, node2 is stopped (SIGSTOP) and node1
 *      asked to rebalance at once: its transfers to node2 cannot finish,
 *      so the rebalance runs until its 10 s bound. Meanwhile node1's
 *      admin port answers GET /metrics and GET /cluster, which shows the
 *      rebalance as the running operation, and a second POST
 *      /cluster/rebalance answers 409 "operation in progress
 *      (rebalance"; the first answers 200 or 504 (what it handed over);
 *      node2 continues and the three even out again. Before, the
 *      rebalance held the admin thread: /cluster answered only after it,
 *      without an operation.
 * The code without the automatic hand-over has no --leader-rebalance-ms
 * (the nodes do not start); with the XFER asks left out of the removal
 * check, step 4's remove-node answered 409 "leadership is moving" until
 * the test timed out.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "cluster_itest.h"

static struct it_server n4;
static uint64_t leader_of(int i, uint32_t p);

static uint64_t led(int i)
{
	const struct it_server *x = i == NODES ? &n4 : &srv[i];
	return it_metric_get(x->admin_port, "parley_raft_partitions_led");
}

/* Waits until nodes 1..4 (node 4 counted when running) lead all 8
 * partitions, none more than `most`. */
static void wait_even4(uint64_t most, int timeout_ms, const char *when)
{
	uint64_t n[NODES + 1] = {0};
	for (int ms = 0;; ms += 100) {
		uint64_t sum = 0, top = 0;
		for (int i = 0; i <= NODES; i++) {
			bool up = i == NODES ? n4.pid > 0 : srv[i].pid > 0;
			n[i] = up ? led(i) : 0;
			sum += n[i];
			top = n[i] > top ? n[i] : top;
		}
		if (sum == 8 && top <= most)
			break;
		IT_CHECK(ms < timeout_ms, "%s: leaderships never evened out: "
			 "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64, when,
			 n[0], n[1], n[2], n[3]);
		it_sleep_ms(100);
	}
	printf("%s: node1 %" PRIu64 ", node2 %" PRIu64 ", node3 %" PRIu64
	       ", node4 %" PRIu64 " partitions led\n", when, n[0], n[1], n[2],
	       n[3]);
}

/* POST path to partition 0's leader (as node1 sees it), again while it
 * answers 409 (not the leader, or the leader handed over); the 200's
 * body (caller frees). */
static char *post_leader(const char *path)
{
	for (int t = 0; t < 100; t++) {
		uint64_t l = leader_of(0, 0);
		if (l >= 1 && l <= NODES + 1) {
			const struct it_server *x = l == NODES + 1 ? &n4
								    : &srv[l - 1];
			char req[512];
			snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: t\r\n"
				 "Content-Length: 0\r\n\r\n", path);
			int code = 0;
			char *r = it_http_raw(x->admin_port, req, strlen(req),
					      90000, &code);
			if (code == 200)
				return r;
			printf("%s on node%" PRIu64 ": %d %s\n", path, l, code,
			       r ? r : "");
			free(r);
			IT_CHECK(code == 409 || code == 503 || code == 504 ||
				 code == 0, "%s: %d", path, code);
		}
		it_sleep_ms(200);
	}
	it_fail(__FILE__, __LINE__, "%s never answered 200", path);
	return NULL;
}

/* The leader of partition p as node i's GET /cluster reports it. */
static uint64_t leader_of(int i, uint32_t p)
{
	int code = 0;
	char *t = it_http_get(srv[i].admin_port, "/cluster", &code);
	IT_CHECK(code == 200 && t, "GET /cluster on node%d: %d", i + 1, code);
	char pat[48];
	snprintf(pat, sizeof pat, "{\"partition\":%u,", p);
	const char *s = strstr(t, pat);
	IT_CHECK(s, "partition %u missing from /cluster", p);
	const char *l = strstr(s, "\"leader\":");
	IT_CHECK(l);
	uint64_t v = strtoull(l + 9, NULL, 10);
	free(t);
	return v;
}

/* Waits (at most timeout_ms) until the running nodes lead all 8
 * partitions, none more than `most`; prints and returns the counts. */
static void wait_even(uint64_t most, int timeout_ms, const char *when)
{
	uint64_t n[NODES] = {0}, sum = 0;
	for (int ms = 0;; ms += 100) {
		sum = 0;
		uint64_t top = 0;
		for (int i = 0; i < NODES; i++) {
			n[i] = srv[i].pid > 0 ? led(i) : 0;
			sum += n[i];
			top = n[i] > top ? n[i] : top;
		}
		if (sum == 8 && top <= most)
			break;
		IT_CHECK(ms < timeout_ms, "%s: leaderships never evened out: "
			 "node1 %" PRIu64 ", node2 %" PRIu64 ", node3 %" PRIu64
			 " (want <= %" PRIu64 " each)", when, n[0], n[1], n[2],
			 most);
		it_sleep_ms(100);
	}
	printf("%s: node1 %" PRIu64 ", node2 %" PRIu64 ", node3 %" PRIu64
	       " partitions led\n", when, n[0], n[1], n[2]);
}

static void chat(int round)
{
	char *tok = it_token_for("alice");
	struct parley_client_opts o = {
		.nodes = nodes_list, .token = tok, .device_id = "phone",
		.connect_timeout_ms = 3000, .request_timeout_ms = 3000,
		.call_deadline_ms = 30000, .backoff_min_ms = 50,
		.backoff_max_ms = 500};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	int rc = parley_client_conv_open(c, "bob", &cv);
	IT_CHECK(rc == 0, "CONV_OPEN: %s", parley_strerror(rc));
	char conv[64];
	snprintf(conv, sizeof conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	for (int i = 0; i < 5; i++) {
		uint8_t id[16] = {0};
		id[0] = (uint8_t)round;
		id[1] = (uint8_t)i;
		id[15] = 0x4b;
		struct parley_send_result r;
		rc = parley_client_send_id(c, conv, id, 1, "hi", 2, &r);
		IT_CHECK(rc == 0, "SEND %d/%d: %s", round, i,
			 parley_strerror(rc));
	}
	parley_client_free(c);
	free(tok);
}

/* Step 5: the rebalance request, on a thread of its own. */
static int rb_code;
static char *rb_body;
static void *rebalance_main(void *arg)
{
	(void)arg;
	static const char req[] = "POST /cluster/rebalance HTTP/1.1\r\n"
				  "Host: t\r\nContent-Length: 0\r\n\r\n";
	rb_body = it_http_raw(srv[0].admin_port, req, strlen(req), 60000,
			      &rb_code);
	return NULL;
}

static void gather_on_node1(void)
{
	for (int t = 0; t < 100 && led(0) < 6; t++) {
		for (uint32_t p = 0; p < 8; p++) {
			uint64_t l = leader_of(0, p);
			if (!l || l == 1)
				continue;
			char req[256];
			snprintf(req, sizeof req, "POST /cluster/transfer?"
				 "partition=%u&to=1 HTTP/1.1\r\nHost: t\r\n"
				 "Content-Length: 0\r\n\r\n", p);
			int code = 0;
			free(it_http_raw(srv[l - 1].admin_port, req,
					 strlen(req), 15000, &code));
			if (led(0) >= 6)
				break;
		}
	}
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	it_init("cluster_rebalance");
	/* node 4 becomes a voter of every partition (replication factor 0;
	 * placed replicas are test_cluster_placement.c's) */
	cluster_rf = "0";
	cluster_init("87");
	for (int i = 0; i < NODES; i++) {
		int k = 0;
		while (srv[i].extra[k])
			k++;
		const char *x[] = {"--leader-placement", "spread",
				   "--leader-rebalance-ms", "1000", NULL};
		for (int j = 0; x[j]; j++)
			srv[i].extra[k++] = x[j];
		srv[i].extra[k] = NULL;
	}
	for (int i = 0; i < NODES; i++)
		it_server_start(&srv[i]);
	/* 1 */
	wait_even(3, 30000, "after the start");
	chat(1);
	/* 2: gather leaderships on node1 */
	uint64_t shed0 = it_metric_get(srv[0].admin_port,
				       "parley_leader_shed_partitions_total");
	gather_on_node1();
	uint64_t gathered = led(0);
	printf("node1 leads %" PRIu64 " after the transfers\n", gathered);
	IT_CHECK(gathered >= 6, "could not gather leaderships on node1");
	wait_even(3, 30000, "node1 shed its excess");
	uint64_t shed = it_metric_get(srv[0].admin_port,
				      "parley_leader_shed_partitions_total") -
			shed0;
	IT_CHECK(shed >= gathered - 3, "node1 handed %" PRIu64 " partitions "
		 "over by itself, want >= %" PRIu64, shed, gathered - 3);
	chat(2);
	/* 3: kill the busiest node, then bring it back */
	int v = 0;
	for (int i = 1; i < NODES; i++)
		if (led(i) > led(v))
			v = i;
	printf("kill -9 node%d\n", v + 1);
	it_server_kill(&srv[v]);
	wait_even(4, 30000, "two survivors");
	chat(3);
	it_server_start(&srv[v]);
	wait_even(3, 60000, "after node's return");
	IT_CHECK(led(v) >= 2, "the returning node leads %" PRIu64, led(v));
	chat(4);
	/* 4: add node 4, then remove it, with leadership spread */
	it_server_init(&n4, "node4");
	static char peers4[256], pport4[8];
	uint16_t p4 = it_free_port();
	snprintf(pport4, sizeof pport4, "%u", p4);
	int m = 0;
	for (int i = 0; i < NODES; i++) /* extra[5]: the founder's peer port */
		m += snprintf(peers4 + m, sizeof peers4 - (size_t)m,
			      "%s%d=127.0.0.1:%s", i ? "," : "", i + 1,
			      srv[i].extra[5]);
	const char *x4[] = {"--node-id", "4", "--cluster-id", "87",
			    "--peer-port", pport4, "--peers", peers4,
			    "--founders", "1,2,3", "--raft-tick-ms", "20",
			    "--partitions", "8", "--loops", "1",
			    "--leader-placement", "spread",
			    "--leader-rebalance-ms", "1000",
			    "--replication-factor", "0", NULL};
	for (int k = 0; x4[k]; k++)
		n4.extra[k] = x4[k];
	it_server_start(&n4);
	char path[256];
	snprintf(path, sizeof path, "/cluster/add-node?id=4&peer=127.0.0.1:%u"
		 "&client=127.0.0.1:%u&admin=127.0.0.1:%u", p4, n4.port,
		 n4.admin_port);
	char *r = post_leader(path);
	IT_CHECK(strstr(r, "voter of all 8 partitions"), "add-node: %s", r);
	printf("add-node: %s", r);
	free(r);
	wait_even4(2, 60000, "four nodes");
	chat(5);
	r = post_leader("/cluster/remove-node?id=4");
	printf("remove-node: %s", r);
	free(r);
	IT_CHECK(it_server_stop(&n4, SIGTERM, 10000) == 0, "node4 did not stop");
	wait_even(3, 60000, "node 4 removed");
	chat(6);
	/* 5: a rebalance that cannot finish does not hold the admin thread */
	gather_on_node1();
	IT_CHECK(led(0) >= 4, "could not gather leaderships on node1");
	IT_CHECK(kill(srv[1].pid, SIGSTOP) == 0, "SIGSTOP node2");
	pthread_t th;
	IT_CHECK(pthread_create(&th, NULL, rebalance_main, NULL) == 0);
	bool seen = false;
	for (int t = 0; t < 400 && !seen; t++) {
		int code = 0;
		char *c = it_http_get(srv[0].admin_port, "/cluster", &code);
		IT_CHECK(code == 200 && c, "GET /cluster during a rebalance: %d",
			 code);
		seen = strstr(c, "\"operation\":{\"op\":\"rebalance\"") != NULL;
		free(c);
		if (!seen)
			it_sleep_ms(10);
	}
	IT_CHECK(seen, "node1's /cluster never showed the rebalance running "
		 "(answered %d: %s)", rb_code, rb_body ? rb_body : "");
	int code = 0;
	char *mt = it_http_get(srv[0].admin_port, "/metrics", &code);
	IT_CHECK(code == 200 && mt && strstr(mt, "parley_raft_partitions_led"),
		 "GET /metrics during a rebalance: %d", code);
	free(mt);
	static const char again[] = "POST /cluster/rebalance HTTP/1.1\r\n"
				    "Host: t\r\nContent-Length: 0\r\n\r\n";
	r = it_http_raw(srv[0].admin_port, again, strlen(again), 15000, &code);
	IT_CHECK(code == 409 && r && strstr(r, "operation in progress "
					    "(rebalance"),
		 "a second rebalance: %d %s", code, r ? r : "");
	free(r);
	char *c = it_http_get(srv[0].admin_port, "/cluster", &code);
	IT_CHECK(code == 200 && c && strstr(c, "\"op\":\"rebalance\""),
		 "the rebalance ended before the checks (answered %d)", rb_code);
	free(c);
	IT_CHECK(kill(srv[1].pid, SIGCONT) == 0, "SIGCONT node2");
	pthread_join(th, NULL);
	IT_CHECK((rb_code == 200 || rb_code == 504) && rb_body &&
		 strstr(rb_body, "handed"), "rebalance: %d %s", rb_code,
		 rb_body ? rb_body : "");
	printf("rebalance on the worker: %d %s", rb_code, rb_body);
	free(rb_body);
	wait_even(3, 60000, "after the rebalance");
	chat(7);
	for (int i = 0; i < NODES; i++)
		IT_CHECK(it_server_stop(&srv[i], SIGTERM, 10000) == 0,
			 "node%d did not stop cleanly", i + 1);
	printf("ok: leaderships evened out by themselves after the start, a "
	       "gathering on one node, a kill -9, the node's return, a node added "
	       "and removed; a rebalance ran on the membership worker\n");
	return 0;
}
