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
#include <sys/wait.h>

#include "cluster_itest.h"

#define MAXMSG 20000

/* alice's SENDs through a client knowing the founders and node 4 */
static struct cluster_ledger lg = {.user = "alice", .max = MAXMSG,
				   .pause_ms = 10, .tag = 0x4d,
				   .deadline_ms = 20000};
static struct it_server n4;
static char nodes_all[320]; /* the founders and node 4 */

static int history_on_4(bool final)
{
	return cluster_ledger_history(&lg, n4.port, final, "node4");
}

static uint64_t metric_of(uint16_t port, const char *name)
{
	return it_metric_get(port, name);
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
	struct parley_client *c = cluster_client_new("alice", "setup",
						     nodes_list, 20000);
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(c, "bob", &cv));
	snprintf(lg.conv, sizeof lg.conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	parley_client_free(c);
	lg.nodes = nodes_all;
	cluster_ledger_start(&lg);
	cluster_ledger_wait_more(&lg, 20, "by the founders");

	/* node 4: empty, the founders as bootstrap and as peers */
	static const char *const more4[] = {"--replication-factor", "0",
					    "--leader-placement", "follow0",
					    NULL};
	uint16_t p4 = cluster_joiner_init(&n4, 4, "81", more4);
	uint16_t listed = n4.port;
	it_server_start(&n4);
	IT_CHECK(n4.port == listed, "node4's client port was taken before it "
		 "started (the sender's node list names the old one): rerun");
	uint16_t admins[NODES];
	for (int i = 0; i < NODES; i++)
		admins[i] = srv[i].admin_port;
	char path[256], body[1024];
	cluster_add_path(path, sizeof path, 4, &n4, p4);
	int who = -1;
	int code = cluster_admin_post(admins, NODES, path, &who, body,
				      sizeof body);
	IT_CHECK(code == 200, "add-node: %d %s", code, body);
	IT_CHECK(strstr(body, "voter of all 8 partitions"), "add-node: %s", body);
	printf("add-node answered by node%d: %s", who + 1,
	       strstr(body, "\r\n\r\n") ? strstr(body, "\r\n\r\n") + 4 : body);
	IT_CHECK(metric_of(n4.admin_port, "parley_raft_partitions") == 8);
	cluster_ledger_wait_more(&lg, 20, "after node 4 joined");
	/* it caught up: its history holds what was acknowledged before */
	int before = cluster_ledger_acked(&lg);
	int held = -1;
	for (int t = 0; t < 200 && held < before; t++) {
		held = history_on_4(false);
		if (held < before)
			it_sleep_ms(50);
	}
	IT_CHECK(held >= before, "node4 holds %d of %d messages", held, before);

	/* kill the leader: three voters of four left, node 4 among them */
	struct it_server *founders[NODES];
	for (int i = 0; i < NODES; i++)
		founders[i] = &srv[i];
	int lead = cluster_leader_of_all(founders, NODES, 8);
	printf("killing node%d (the leader)\n", lead + 1);
	it_server_kill(&srv[lead]);
	cluster_ledger_wait_more(&lg, 30, "after the leader was killed");
	admins[lead] = 0;
	uint16_t admins4[NODES + 1];
	memcpy(admins4, admins, sizeof admins);
	admins4[NODES] = n4.admin_port;
	snprintf(path, sizeof path, "/cluster/remove-node?id=%d", lead + 1);
	code = cluster_admin_post(admins4, NODES + 1, path, &who, body,
				  sizeof body);
	IT_CHECK(code == 200, "remove-node: %d %s", code, body);
	printf("remove-node answered by node%d: %s", who + 1,
	       strstr(body, "\r\n\r\n") ? strstr(body, "\r\n\r\n") + 4 : body);
	cluster_ledger_wait_more(&lg, 20, "after the removal");
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
	cluster_ledger_wait_more(&lg, 20, "with node 4 one of the two voters left");

	cluster_ledger_stop(&lg);
	int total = cluster_ledger_acked(&lg);
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
	lg.tag = 0x4e;
	cluster_ledger_start(&lg);
	cluster_ledger_wait_more(&lg, 20, "after the leader removed itself");
	cluster_ledger_stop(&lg);
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
	total = cluster_ledger_acked(&lg);
	IT_CHECK(cluster_ledger_history(&lg, nl->port, true, "the new leader")
		 >= total, "the new leader lacks "
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
