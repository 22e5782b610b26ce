/*
 * test_cluster_membership.c — adding and removing a parleyd node while
 * the cluster chats (docs/CLUSTER.md §3.7), real processes on loopback.
 *
 *   1. Three founders {1,2,3} (cluster_itest.h) and a sender thread that
 *      SENDs, with its own client_msg_ids, through a client knowing the
 *      three nodes, recording every acknowledged seq, for the whole run.
 *   2. Node 4 starts with an empty data directory, --founders 1,2,3 and
 *      the founders as --peers. POST /cluster/add-node is asked of each
 *      founder in turn: the ones that do not lead answer 409, the leader
 *      adds node 4 as a learner of every partition, waits until it caught
 *      up and promotes it (200 "voter of all 8 partitions").
 *   3. The leader (a founder) is killed (kill -9): with voters {1,2,3,4}
 *      a quorum is 3, so every SEND acknowledged from now on needs node
 *      4's vote; the sender must get more acknowledgements.
 *   4. POST /cluster/remove-node?id=<killed> to the survivors: the new
 *      leader removes it from every partition; the survivors' links to it
 *      read `removed` (link down, its id forgotten).
 *   5. A second founder is killed: of the voters left, {x, 4}, node 4
 *      must vote for anything to commit; the sender (whose node list
 *      names node 4 too) must get more acknowledgements.
 *   6. The sender stops; HISTORY read from node 4 alone (follower reads
 *      are linearizable) holds every acknowledged message at its seq,
 *      once, and nothing else.
 *   7. The second founder restarts with its original --peers: from its
 *      peers journal it reaches node 4 again and not the removed node.
 *   8. The leader of partition 0 is removed by asking it, itself, with
 *      `parleyctl cluster remove-node --admin <its admin port>`: it hands
 *      its leadership to another current voter, answers 409 naming it,
 *      and parleyctl repeats the command there (exit 0). The sender runs
 *      again (new ids) through the two voters left; the new leader's GET
 *      /cluster shows the removed node in no partition, and its history
 *      holds every acknowledged message. The same command again (asked
 *      of the removed node, which names the leader) succeeds.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "cluster_itest.h"

#define MAXMSG 20000

static char conv[64];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t acked_id[MAXMSG][16]; /* by seq - 1 */
static uint8_t round_tag = 0x4d;     /* client_msg_id[15] of this run */
static bool acked[MAXMSG];
static int nacked;                   /* acknowledged SENDs */
static atomic_bool stop;
static struct it_server n4;
static char nodes_all[320]; /* the founders and node 4 */

static struct parley_client *client(const char *device, const char *nodes)
{
	char *tok = it_token_for("alice");
	struct parley_client_opts o = {
		.nodes = nodes, .token = tok, .device_id = device,
		.connect_timeout_ms = 2000, .request_timeout_ms = 3000,
		.call_deadline_ms = 20000, .backoff_min_ms = 50,
		.backoff_max_ms = 500};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

static void *sender(void *arg)
{
	(void)arg;
	struct parley_client *c = client("sender", nodes_all);
	for (uint32_t i = 0; !atomic_load(&stop) && i < MAXMSG - 1; i++) {
		uint8_t id[16] = {0};
		memcpy(id, &i, sizeof i);
		id[15] = round_tag;
		char body[32];
		int bl = snprintf(body, sizeof body, "m%u", i);
		struct parley_send_result r;
		int rc = parley_client_send_id(c, conv, id, 1, body, (size_t)bl,
					       &r);
		if (rc) /* unknown outcome: not counted; the id is not reused */
			continue;
		IT_CHECK(r.seq >= 1 && r.seq < MAXMSG, "seq %" PRIu64, r.seq);
		pthread_mutex_lock(&mu);
		IT_CHECK(!acked[r.seq - 1] ||
			 !memcmp(acked_id[r.seq - 1], id, 16),
			 "seq %" PRIu64 " acknowledged for two messages", r.seq);
		acked[r.seq - 1] = true;
		memcpy(acked_id[r.seq - 1], id, 16);
		nacked++;
		pthread_mutex_unlock(&mu);
		it_sleep_ms(10);
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

/* POST path to each admin port until one answers other than 409;
 * returns its code, *who its index. */
static int admin_post(const uint16_t *ports, int n, const char *path,
		      int *who, char *body, size_t cap)
{
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < n; i++) {
			if (!ports[i])
				continue;
			char req[512];
			snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: t\r\n"
				 "Content-Length: 0\r\n\r\n", path);
			int code = 0;
			char *r = it_http_raw(ports[i], req, strlen(req), 70000,
					      &code);
			snprintf(body, cap, "%s", r ? r : "");
			free(r);
			if (code && code != 409) {
				*who = i;
				return code;
			}
		}
		it_sleep_ms(200);
	}
	return 0;
}

/* HISTORY of conv on one node (its client port) alone: every message
 * checked against the acknowledged ones; returns how many it holds (-1:
 * cannot answer). */
static int history_on(uint16_t port, bool final)
{
	char *tok = it_token_for("alice");
	struct parley_client_opts o = {
		.host = "127.0.0.1", .port = port, .token = tok,
		.device_id = "reader", .connect_timeout_ms = 2000,
		.request_timeout_ms = 3000, .call_deadline_ms = 3000,
		.no_reconnect = 1};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	static bool seen[MAXMSG];
	memset(seen, 0, sizeof seen);
	int n = 0;
	uint64_t before = 0;
	if (parley_client_connect(c)) {
		parley_client_free(c);
		return -1;
	}
	pthread_mutex_lock(&mu);
	for (;;) {
		const struct parley_history_page *pg;
		if (parley_client_history(c, conv, before, 100, &pg)) {
			n = -1;
			break;
		}
		for (uint16_t k = 0; k < pg->count; k++) {
			const struct parley_hist_msg *m = &pg->msgs[k];
			IT_CHECK(m->seq >= 1 && m->seq < MAXMSG, "seq %" PRIu64,
				 m->seq);
			IT_CHECK(!seen[m->seq - 1], "seq %" PRIu64 " twice", m->seq);
			seen[m->seq - 1] = true;
			/* an unacknowledged SEND (outcome unknown) may be there */
			IT_CHECK(!acked[m->seq - 1] ||
				 !memcmp(acked_id[m->seq - 1], m->client_msg_id, 16),
				 "node4 seq %" PRIu64 ": another message than the "
				 "one acknowledged", m->seq);
			n++;
		}
		if (!pg->count || !pg->next_before_seq)
			break;
		before = pg->next_before_seq;
	}
	if (final && n >= 0)
		for (int s = 0; s < MAXMSG; s++)
			IT_CHECK(!acked[s] || seen[s], "node4 lacks acknowledged "
				 "seq %d", s + 1);
	pthread_mutex_unlock(&mu);
	parley_client_free(c);
	return n;
}

static int history_on_4(bool final)
{
	return history_on(n4.port, final);
}

static uint64_t metric_of(uint16_t port, const char *name)
{
	int code = 0;
	char *m = it_http_get(port, "/metrics", &code);
	IT_CHECK(code == 200 && m, "metrics: %d", code);
	uint64_t v = it_metric(m, name);
	free(m);
	return v;
}

/* The node that leads partition 0, by its /metrics. */
static int leader_index(void)
{
	for (int t = 0; t < 200; t++) {
		for (int i = 0; i < NODES; i++)
			if (srv[i].pid > 0 &&
			    metric_of(srv[i].admin_port,
				      "parley_raft_partitions_led") == 8)
				return i;
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "no node leads every partition");
	return -1;
}

int main(void)
{
	it_init("cluster_membership");
	/* the leader is found by asking each node alone, which a
	 * follower answers NOTLEADER only with forwarding off */
	cluster_no_forward = true;
	/* every node a voter of every partition (the placed mode,
	 * replication_factor 3, is test_cluster_placement.c's) */
	cluster_rf = "0";
	/* the scenario is one node leading every partition (found by its
	 * partitions_led, and asked to remove itself at the end): follow0
	 * placement; test_cluster_rebalance adds and removes a node with
	 * leadership spread */
	cluster_follow0 = true;
	cluster_init("81");
	for (int i = 0; i < NODES; i++)
		it_server_start(&srv[i]);
	it_server_init(&n4, "node4"); /* its client port, for the node list */
	snprintf(nodes_all, sizeof nodes_all, "%s,127.0.0.1:%u", nodes_list,
		 n4.port);
	struct parley_client *c = client("setup", nodes_list);
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(c, "bob", &cv));
	snprintf(conv, sizeof conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	parley_client_free(c);
	pthread_t th;
	IT_CHECK(pthread_create(&th, NULL, sender, NULL) == 0);
	wait_more_acks(20, "by the founders");

	/* node 4: empty, the founders as bootstrap and as peers */
	static char peers4[256], pport4[8];
	uint16_t p4 = it_free_port();
	snprintf(pport4, sizeof pport4, "%u", p4);
	int m = 0;
	for (int i = 0; i < NODES; i++) /* extra[5]: the founder's peer port */
		m += snprintf(peers4 + m, sizeof peers4 - (size_t)m,
			      "%s%d=127.0.0.1:%s", i ? "," : "", i + 1,
			      srv[i].extra[5]);
	const char *x[] = {"--node-id", "4", "--cluster-id", "81",
			   "--peer-port", pport4, "--peers", peers4,
			   "--founders", "1,2,3", "--raft-tick-ms", "20",
			   "--partitions", "8", "--loops", "1",
			   "--replication-factor", "0",
			   "--leader-placement", "follow0", NULL};
	for (int k = 0; x[k]; k++)
		n4.extra[k] = x[k];
	uint16_t listed = n4.port;
	it_server_start(&n4);
	IT_CHECK(n4.port == listed, "node4's client port was taken before it "
		 "started (the sender's node list names the old one): rerun");
	uint16_t admins[NODES];
	for (int i = 0; i < NODES; i++)
		admins[i] = srv[i].admin_port;
	char path[256], body[1024];
	snprintf(path, sizeof path, "/cluster/add-node?id=4&peer=127.0.0.1:%u"
		 "&client=127.0.0.1:%u&admin=127.0.0.1:%u", p4, n4.port,
		 n4.admin_port);
	int who = -1;
	int code = admin_post(admins, NODES, path, &who, body, sizeof body);
	IT_CHECK(code == 200, "add-node: %d %s", code, body);
	IT_CHECK(strstr(body, "voter of all 8 partitions"), "add-node: %s", body);
	printf("add-node answered by node%d: %s", who + 1,
	       strstr(body, "\r\n\r\n") ? strstr(body, "\r\n\r\n") + 4 : body);
	IT_CHECK(metric_of(n4.admin_port, "parley_raft_partitions") == 8);
	wait_more_acks(20, "after node 4 joined");
	/* it caught up: its history holds what was acknowledged before */
	int before = acked_now();
	int held = -1;
	for (int t = 0; t < 200 && held < before; t++) {
		held = history_on_4(false);
		if (held < before)
			it_sleep_ms(50);
	}
	IT_CHECK(held >= before, "node4 holds %d of %d messages", held, before);

	/* kill the leader: three voters of four left, node 4 among them */
	int lead = leader_index();
	printf("killing node%d (the leader)\n", lead + 1);
	it_server_kill(&srv[lead]);
	wait_more_acks(30, "after the leader was killed");
	admins[lead] = 0;
	uint16_t admins4[NODES + 1];
	memcpy(admins4, admins, sizeof admins);
	admins4[NODES] = n4.admin_port;
	snprintf(path, sizeof path, "/cluster/remove-node?id=%d", lead + 1);
	code = admin_post(admins4, NODES + 1, path, &who, body, sizeof body);
	IT_CHECK(code == 200, "remove-node: %d %s", code, body);
	printf("remove-node answered by node%d: %s", who + 1,
	       strstr(body, "\r\n\r\n") ? strstr(body, "\r\n\r\n") + 4 : body);
	wait_more_acks(20, "after the removal");
	/* every survivor forgot the removed node's link */
	char link[64];
	snprintf(link, sizeof link, "parley_peer_link_up{node=\"%d\"}", lead + 1);
	for (int i = 0; i <= NODES; i++) {
		if (i < NODES && i == lead)
			continue;
		uint16_t ap = i < NODES ? srv[i].admin_port : n4.admin_port;
		IT_CHECK(metric_of(ap, link) == 0, "link to node%d up", lead + 1);
	}

	/* a second founder dies: node 4's vote is now needed */
	int second = (lead + 1) % NODES;
	printf("killing node%d too\n", second + 1);
	it_server_kill(&srv[second]);
	wait_more_acks(20, "with node 4 one of the two voters left");

	atomic_store(&stop, true);
	pthread_join(th, NULL);
	int total = acked_now();
	held = -1;
	for (int t = 0; t < 200; t++) {
		held = history_on_4(false);
		if (held >= total)
			break;
		it_sleep_ms(50);
	}
	IT_CHECK(history_on_4(true) >= total, "node4 holds %d of %d", held,
		 total);
	printf("ok: %d acknowledged SENDs, every one in node 4's history\n",
	       total);
	/* the second founder restarts with its old --peers: its journal
	 * (<data>/cluster-peers) names node 4 and forgets the removed one */
	it_server_start(&srv[second]);
	char l4[64];
	snprintf(l4, sizeof l4, "parley_peer_link_up{node=\"4\"}");
	uint64_t up = 0;
	for (int t = 0; t < 200 && !up; t++) {
		up = metric_of(srv[second].admin_port, l4);
		if (!up)
			it_sleep_ms(50);
	}
	IT_CHECK(up == 1, "restarted node%d has no link to node 4", second + 1);
	IT_CHECK(metric_of(srv[second].admin_port, link) == 0);
	IT_CHECK(it_log_tail_has(srv[second].log, 0, "peers journal replayed"));

	/* 8: the leader of partition 0 removes itself (asked itself) */
	struct it_server *all[NODES + 1];
	for (int i = 0; i < NODES; i++)
		all[i] = &srv[i];
	all[NODES] = &n4;
	struct it_server *self = NULL;
	for (int t = 0; t < 200 && !self; t++) {
		for (int i = 0; i <= NODES && !self; i++)
			if (all[i]->pid > 0 &&
			    metric_of(all[i]->admin_port,
				      "parley_raft_partitions_led") == 8)
				self = all[i];
		if (!self)
			it_sleep_ms(50);
	}
	IT_CHECK(self, "no node leads every partition");
	/* the restarted founder caught up first: with the leader gone, the
	 * two voters left are a quorum only together */
	uint64_t inactive = 1, lag = 1;
	for (int t = 0; t < 400 && (inactive || lag); t++) {
		inactive = metric_of(self->admin_port,
				     "parley_raft_followers_inactive");
		lag = metric_of(self->admin_port,
				"parley_raft_follower_lag_max_entries");
		if (inactive || lag)
			it_sleep_ms(50);
	}
	IT_CHECK(!inactive && !lag, "followers not caught up: %" PRIu64
		 " inactive, lag %" PRIu64, inactive, lag);
	int self_id = self == &n4 ? 4 : (int)(self - srv) + 1;
	char cmd[512];
	snprintf(cmd, sizeof cmd, "'%s/tools/parleyctl' cluster remove-node "
		 "--admin 127.0.0.1:%u --id %d", getenv("PARLEY_BIN_DIR"),
		 self->admin_port, self_id);
	printf("removing node%d by asking it: %s\n", self_id, cmd);
	fflush(stdout);
	int ex = system(cmd);
	IT_CHECK(ex != -1 && WIFEXITED(ex) && WEXITSTATUS(ex) == 0,
		 "parleyctl remove-node of the leader itself: exit %d",
		 ex != -1 && WIFEXITED(ex) ? WEXITSTATUS(ex) : -1);
	/* the two voters left serve: more SENDs acknowledged */
	atomic_store(&stop, false);
	round_tag = 0x4e;
	IT_CHECK(pthread_create(&th, NULL, sender, NULL) == 0);
	wait_more_acks(20, "after the leader removed itself");
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	struct it_server *nl = NULL;
	for (int t = 0; t < 200 && !nl; t++) {
		for (int i = 0; i <= NODES && !nl; i++)
			if (all[i] != self && all[i]->pid > 0 &&
			    metric_of(all[i]->admin_port,
				      "parley_raft_partitions_led") == 8)
				nl = all[i];
		if (!nl)
			it_sleep_ms(50);
	}
	IT_CHECK(nl, "no remaining node leads every partition");
	int hc = 0;
	char *cl = it_http_get(nl->admin_port, "/cluster", &hc);
	IT_CHECK(hc == 200 && cl, "GET /cluster: %d", hc);
	char mem[48];
	snprintf(mem, sizeof mem, "{\"node\":%d,\"match\"", self_id);
	IT_CHECK(!strstr(cl, mem), "node%d still a member: %s", self_id, cl);
	snprintf(mem, sizeof mem, "{\"node\":%d,\"match\"",
		 nl == &n4 ? 4 : (int)(nl - srv) + 1);
	IT_CHECK(strstr(cl, mem), "GET /cluster without members: %s", cl);
	free(cl);
	/* idempotent: asked again of the removed node, parleyctl follows its
	 * 409 to the leader, which finds nothing left to do */
	printf("again: %s\n", cmd);
	fflush(stdout);
	ex = system(cmd);
	IT_CHECK(ex != -1 && WIFEXITED(ex) && WEXITSTATUS(ex) == 0,
		 "parleyctl remove-node repeated: exit %d",
		 ex != -1 && WIFEXITED(ex) ? WEXITSTATUS(ex) : -1);
	total = acked_now();
	IT_CHECK(history_on(nl->port, true) >= total, "the new leader lacks "
		 "acknowledged messages (%d acked)", total);
	printf("ok: node%d removed itself; %d acknowledged SENDs in all, every "
	       "one in node%d's history\n", self_id, total,
	       nl == &n4 ? 4 : (int)(nl - srv) + 1);
	for (int i = 0; i < NODES; i++)
		if (i != lead)
			IT_CHECK(it_server_stop(&srv[i], SIGTERM, 10000) == 0,
				 "node%d did not stop cleanly", i + 1);
	IT_CHECK(it_server_stop(&n4, SIGTERM, 10000) == 0,
		 "node4 did not stop cleanly");
	return 0;
}
