/*
 * test_cluster_ops.c — the operator's side of adding and removing nodes
 * (docs/CLUSTER.md §3.7), real parleyd processes on loopback.
 *
 *   1. Three founders {1,2,3} (cluster_itest.h); SENDs are acknowledged.
 *   2. add-node of node 4 while node 4 is not running yet: the leader adds
 *      it as a learner of every partition and waits for it to catch up.
 *      Meanwhile the leader's admin port answers GET /metrics, /readyz
 *      and /cluster (the operation runs on its own worker: before, the
 *      admin thread waited with it and /metrics did not answer; /metrics
 *      counts the 8 learners and the running operation), a second
 *      operation answers 409 "operation in progress (add node 4, ...)",
 *      and `parleyctl cluster status` shows node 4 as a learner of every
 *      partition, the operation running, and node 4's client and admin
 *      addresses as its members record gives them (it never announced
 *      them itself). Node 4 starts: the waiting
 *      request answers 200 "voter of all 8 partitions".
 *   3. A founder F (not the leader) is killed and removed: the voters
 *      left {L, A, 4} are healthy, so the removal is allowed (200).
 *   4. A is killed too: removing node 4 now would leave {L, A} with A
 *      dead, and the cluster would stop committing. POST remove-node
 *      answers 409 "refusing to remove node 4", `parleyctl cluster
 *      remove-node` exits 1, node 4 stays a voter everywhere and SENDs
 *      are still acknowledged (by L and 4). Asked to remove itself, L
 *      refuses as well ({A, 4} with A dead), before handing anything
 *      over: it still leads every partition.
 *   5. `parleyctl cluster remove-node --force` removes it anyway, in
 *      one command (exit 0, "node 4 removed from all 8 partitions": its
 *      members record is written first, while node 4 still votes; before,
 *      the record came last, {L, A} with A dead could not commit it, and
 *      the command had to be repeated once A was back): no partition has
 *      node 4 as a voter and L's link to it goes down. A restarts, {L, A}
 *      commit again (SENDs acknowledged), A's link to node 4 goes down
 *      too, and the same removal without --force answers 200 (nothing
 *      left to do).
 */
#include <pthread.h>
#include <sys/wait.h>

#include "cluster_itest.h"

static char conv[64];
static struct it_server n4;
static char nodes_all[320];

static struct parley_client *client(const char *device)
{
	return cluster_client_new("alice", device, nodes_all, 30000);
}

/* n SENDs, each acknowledged (libparley retries elsewhere meanwhile). */
static void send_acked(int n, const char *when)
{
	static uint32_t next;
	struct parley_client *c = client("sender");
	for (int i = 0; i < n; i++) {
		uint8_t id[16] = {0};
		uint32_t k = next++;
		memcpy(id, &k, sizeof k);
		id[15] = 0x6f;
		char body[32];
		int bl = snprintf(body, sizeof body, "m%u", k);
		struct parley_send_result r;
		int rc = parley_client_send_id(c, conv, id, 1, body, (size_t)bl,
					       &r);
		IT_CHECK(rc == 0, "SEND %s: %s", when, parley_strerror(rc));
	}
	parley_client_free(c);
}

/* The index (0..NODES-1, NODES = node 4) of the node leading all 8
 * partitions, by its /metrics; fails when none does in time. */
static struct it_server *all[NODES + 1];
static int leader_index(void)
{
	return cluster_leader_of_all(all, NODES + 1, 8);
}

/* Partitions whose configuration (GET /cluster on port) reads `conf`
 * (e.g. "\"voters\":[1,2,3],\"learners\":[4]"). */
static int parts_with(uint16_t port, const char *conf)
{
	int code = 0;
	char *t = it_http_get(port, "/cluster", &code);
	IT_CHECK(code == 200 && t, "GET /cluster: %d", code);
	int n = cluster_count(t, conf);
	free(t);
	return n;
}

static void wait_parts_with(uint16_t port, const char *conf)
{
	int n = 0;
	for (int t = 0; t < 400 && (n = parts_with(port, conf)) != 8; t++)
		it_sleep_ms(50);
	IT_CHECK(n == 8, "%d of 8 partitions read %s", n, conf);
}

/* the waiting add-node request */
struct add_req {
	uint16_t port;
	char path[256];
	int code;
	char body[1024];
};

static void *add_thread(void *arg)
{
	struct add_req *q = arg;
	char *r = cluster_post(q->port, q->path, &q->code, 90000);
	snprintf(q->body, sizeof q->body, "%s", r);
	free(r);
	return NULL;
}

/* "\"voters\":[a,b,c]" from ids (ascending). */
static void voters_str(char *out, size_t cap, const int *ids, int n)
{
	int o = snprintf(out, cap, "\"voters\":[");
	for (int i = 0; i < n; i++)
		o += snprintf(out + o, cap - (size_t)o, "%s%d", i ? "," : "",
			      ids[i]);
	snprintf(out + o, cap - (size_t)o, "]");
}

static void sort3(int *v, int n)
{
	for (int a = 1; a < n; a++)
		for (int b = a; b > 0 && v[b - 1] > v[b]; b--) {
			int t = v[b];
			v[b] = v[b - 1];
			v[b - 1] = t;
		}
}

int main(void)
{
	it_init("cluster_ops");
	/* every node a voter of every partition (the placed mode,
	 * replication_factor 3, is test_cluster_placement.c's) */
	cluster_rf = "0";
	/* the scenario is one node leading every partition (the operations
	 * are asked of it, and it leads all 8 while it refuses to remove
	 * itself): follow0 placement */
	cluster_follow0 = true;
	cluster_init("83");
	for (int i = 0; i < NODES; i++) {
		it_server_start(&srv[i]);
		all[i] = &srv[i];
	}
	it_server_init(&n4, "node4");
	all[NODES] = &n4;
	snprintf(nodes_all, sizeof nodes_all, "%s,127.0.0.1:%u", nodes_list,
		 n4.port);
	struct parley_client *c = client("setup");
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(c, "bob", &cv));
	snprintf(conv, sizeof conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	parley_client_free(c);
	send_acked(5, "by the founders");

	/* 2: add node 4 before it runs: the add waits for it to catch up */
	int L = leader_index();
	static const char *const more4[] = {"--replication-factor", "0",
					    "--leader-placement", "follow0",
					    NULL};
	uint16_t p4 = cluster_joiner_init(&n4, 4, "83", more4);
	static struct add_req q;
	q.port = srv[L].admin_port;
	cluster_add_path(q.path, sizeof q.path, 4, &n4, p4);
	pthread_t th;
	IT_CHECK(pthread_create(&th, NULL, add_thread, &q) == 0);
	it_sleep_ms(300); /* the leader took the request */
	/* the admin port answers while the add waits (10 s per read) */
	int code = 0;
	char *t = it_http_get(srv[L].admin_port, "/metrics", &code);
	IT_CHECK(code == 200 && strstr(t, "parley_raft_partitions_led 8"),
		 "GET /metrics during add-node: %d", code);
	free(t);
	wait_parts_with(srv[L].admin_port, "\"voters\":[1,2,3],\"learners\":[4]");
	t = it_http_get(srv[L].admin_port, "/metrics", &code);
	IT_CHECK(code == 200, "GET /metrics while the learner waits: %d", code);
	IT_CHECK(it_metric(t, "parley_raft_learners") == 8 &&
		 it_metric(t, "parley_cluster_operation_running") == 1,
		 "learner / operation metrics");
	free(t);
	t = it_http_get(srv[L].admin_port, "/readyz", &code);
	IT_CHECK(code == 200, "GET /readyz while the learner waits: %d", code);
	free(t);
	t = it_http_get(srv[L].admin_port, "/cluster", &code);
	IT_CHECK(code == 200 && strstr(t, "\"operation\":{\"op\":\"add\","
				       "\"node\":4"),
		 "GET /cluster during add-node: %d %s", code, t);
	free(t);
	IT_CHECK(q.code == 0, "add-node answered before node 4 ran: %d %s",
		 q.code, q.body);
	/* one operation at a time */
	t = cluster_post(srv[L].admin_port, "/cluster/remove-node?id=4", &code, 10000);
	IT_CHECK(code == 409 && strstr(t, "operation in progress (add node 4, "),
		 "second operation: %d %s", code, t);
	free(t);
	/* parleyctl cluster status shows the learner and the operation */
	char args[512];
	snprintf(args, sizeof args, "cluster status --admin 127.0.0.1:%u "
		 "--timeout-ms 2000", srv[L].admin_port);
	int rc = 0;
	char *out = cluster_ctl(args, &rc);
	printf("%s", out);
	IT_CHECK(rc == 0, "status exit %d", rc);
	IT_CHECK(cluster_count(out, "4(learner):down") == 8 &&
		 strstr(out, "learner: node 4 is a learner (not a voter) of 8 "
			"of 8 partitions") &&
		 strstr(out, "operation in progress on node") &&
		 strstr(out, "add node 4"), "status without the learner:\n%s",
		 out);
	/* node 4 never ran, so it never announced its addresses: the ones
	 * its members record gives are shown (and its admin port asked) */
	const char *row = strstr(out, "\n4 ");
	char a4[32], c4[32];
	snprintf(a4, sizeof a4, "127.0.0.1:%u ", n4.admin_port);
	snprintf(c4, sizeof c4, "127.0.0.1:%u ", n4.port);
	const char *eol = row ? strchr(row + 1, '\n') : NULL;
	const char *pa = row ? strstr(row, a4) : NULL;
	const char *pc = row ? strstr(row, c4) : NULL;
	IT_CHECK(row && eol && pa && pa < eol && pc && pc < eol,
		 "node 4's recorded addresses not shown:\n%s", out);
	free(out);
	snprintf(args + strlen(args), sizeof args - strlen(args), " --json");
	out = cluster_ctl(args, &rc);
	IT_CHECK(rc == 0 && cluster_count(out, "\"learners\":[4]") == 8 &&
		 strstr(out, "\"learners\":[{\"node\":4,\"partitions\":8}]"),
		 "status --json without the learner:\n%s", out);
	free(out);
	/* node 4 starts: it catches up and the add finishes */
	it_server_start(&n4);
	pthread_join(th, NULL);
	IT_CHECK(q.code == 200 && strstr(q.body, "voter of all 8 partitions"),
		 "add-node: %d %s", q.code, q.body);
	printf("add-node: %s", cluster_body_of(q.body));
	wait_parts_with(srv[L].admin_port,
			"\"voters\":[1,2,3,4],\"learners\":[]");
	IT_CHECK(it_metric_get(srv[L].admin_port, "parley_raft_learners") == 0 &&
		 it_metric_get(srv[L].admin_port,
			       "parley_cluster_operation_running") == 0,
		 "learner / operation metrics after the add");
	send_acked(5, "after node 4 joined");

	/* 3: F dies and is removed: {L, A, 4} are healthy */
	L = leader_index();
	IT_CHECK(L < NODES, "node 4 leads: rerun");
	int F = (L + 1) % NODES, A = (L + 2) % NODES;
	printf("leader node%d; killing node%d and removing it\n", L + 1, F + 1);
	it_server_kill(&srv[F]);
	char path[128];
	snprintf(path, sizeof path, "/cluster/remove-node?id=%d", F + 1);
	t = cluster_post(srv[L].admin_port, path, &code, 90000);
	IT_CHECK(code == 200, "remove-node of the dead node%d: %d %s", F + 1,
		 code, t);
	free(t);
	int v3[3] = {L + 1, A + 1, 4};
	sort3(v3, 3);
	char vs[64];
	voters_str(vs, sizeof vs, v3, 3);
	wait_parts_with(srv[L].admin_port, vs);
	send_acked(5, "after node F was removed");

	/* 4: A dies: removing node 4 would leave {L, A}, A dead: refused */
	printf("killing node%d; removing node 4 must be refused\n", A + 1);
	it_server_kill(&srv[A]);
	t = cluster_post(srv[L].admin_port, "/cluster/remove-node?id=4", &code, 30000);
	IT_CHECK(code == 409 && strstr(t, "refusing to remove node 4") &&
		 strstr(t, "--force"), "unsafe removal: %d %s", code, t);
	printf("refused: %s", cluster_body_of(t));
	free(t);
	snprintf(args, sizeof args, "cluster remove-node --admin 127.0.0.1:%u "
		 "--id 4", srv[L].admin_port);
	out = cluster_ctl(args, &rc);
	IT_CHECK(rc == 1 && strstr(out, "refusing to remove node 4"),
		 "parleyctl remove-node: exit %d %s", rc, out);
	free(out);
	/* the leader asked to remove itself: refused where it is asked,
	 * before any hand-over ({A, 4} with A dead) */
	snprintf(args, sizeof args, "cluster remove-node --admin 127.0.0.1:%u "
		 "--id %d", srv[L].admin_port, L + 1);
	out = cluster_ctl(args, &rc);
	char self_ref[64];
	snprintf(self_ref, sizeof self_ref, "refusing to remove node %d", L + 1);
	IT_CHECK(rc == 1 && strstr(out, self_ref) && !strstr(out, "handed"),
		 "parleyctl remove-node of the leader itself: exit %d %s", rc,
		 out);
	free(out);
	IT_CHECK(it_metric_get(srv[L].admin_port, "parley_raft_partitions_led")
		 == 8, "node%d handed its leadership over", L + 1);
	IT_CHECK(parts_with(srv[L].admin_port, vs) == 8,
		 "node 4 not a voter after a refused removal");
	send_acked(5, "after the refused removal (L and node 4)");

	/* 5: forced: the removal happens; A comes back; {L, A} commit */
	snprintf(args, sizeof args, "cluster remove-node --admin 127.0.0.1:%u "
		 "--id 4 --force", srv[L].admin_port);
	out = cluster_ctl(args, &rc);
	printf("forced (exit %d): %s", rc, out);
	/* one command finishes it, members record included (before: exit 1,
	 * "members record not written: repeat the command", as {L, A} with
	 * A dead cannot commit the record written after the removal) */
	IT_CHECK(rc == 0 && strstr(out, "node 4 removed from all 8"),
		 "forced removal: exit %d %s", rc, out);
	free(out);
	int v2[2] = {L + 1, A + 1};
	sort3(v2, 2);
	voters_str(vs, sizeof vs, v2, 2);
	wait_parts_with(srv[L].admin_port, vs);
	/* the members record applied: L closes its link to node 4 once no
	 * partition holds it (and never redials) */
	int l4 = 1;
	for (int w = 0; w < 200 && (l4 = (int)it_metric_get(srv[L].admin_port,
			"parley_peer_link_up{node=\"4\"}")) != 0; w++)
		it_sleep_ms(50);
	IT_CHECK(l4 == 0, "node%d's link to the removed node 4 is still up",
		 L + 1);
	it_server_start(&srv[A]);
	send_acked(5, "after node A restarted");
	(void)leader_index(); /* leadership gathered again on L or A */
	/* node A, down during the removal, learns it from the members
	 * stream it catches up: its link to node 4 goes too */
	for (int w = 0; w < 200 && (l4 = (int)it_metric_get(srv[A].admin_port,
			"parley_peer_link_up{node=\"4\"}")) != 0; w++)
		it_sleep_ms(50);
	IT_CHECK(l4 == 0, "node%d's link to the removed node 4 is up", A + 1);
	snprintf(args, sizeof args, "cluster remove-node --admin "
		 "127.0.0.1:%u,127.0.0.1:%u --id 4", srv[L].admin_port,
		 srv[A].admin_port);
	out = cluster_ctl(args, &rc);
	IT_CHECK(rc == 0 && strstr(out, "node 4 removed from all 8"),
		 "remove-node repeated (nothing left to do): exit %d %s", rc, out);
	free(out);
	it_server_kill(&n4);
	IT_CHECK(it_server_stop(&srv[L], SIGTERM, 10000) == 0,
		 "node%d did not stop cleanly", L + 1);
	IT_CHECK(it_server_stop(&srv[A], SIGTERM, 10000) == 0,
		 "node%d did not stop cleanly", A + 1);
	printf("ok\n");
	return 0;
}
