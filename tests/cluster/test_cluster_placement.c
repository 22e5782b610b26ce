/*
 * test_cluster_placement.c — replication factor 3 on five nodes
 * (docs/CLUSTER.md §3.7, "The meta group and the placement map").
 *
 * Three founders on loopback (64 partitions, so the meta group is
 * partitions 0 and 32; the default replication_factor 3, digests on); nodes 4 and 5 start empty and are
 * added (POST /cluster/add-node, asked of each node until the leader of
 * partition 0 answers 200). Then:
 *   1. placement: on every node's GET /cluster each partition has the
 *      same recorded placement; the leader's configuration of every
 *      partition that is not in the meta group has exactly 3 voters and
 *      no learner, equal to the map, and every node holds some; the meta
 *      group's partitions have 5 voters (min(nodes, 5), odd);
 *   2. a conversation whose partition the leader of partition 0 holds is
 *      picked, with a node X that does not hold it and a member whose
 *      inbox partition the leader of partition 0 does not hold either
 *      (so each message's fan-out is forwarded through the leader
 *      table). A client given X alone opens it and SENDs with its own
 *      client_msg_ids;
 *   3. after some acknowledgements, a replica of the conversation's
 *      partition (not X, not the leader of partition 0) is killed with
 *      kill -9; SENDs through X go on being acknowledged; the dead node
 *      is removed (remove-node): its replicas move to the others (some
 *      rejoining groups they left), every partition has 3 voters again,
 *      and its id cannot be added again (400 "never reused");
 *   4. HISTORY read through X alone holds every acknowledged SEND at its
 *      seq, once; the member's inbox, read on a node that holds it, has
 *      every acknowledged message once, and so does a SYNC on a node
 *      that does not hold it (its tail is served by a holder);
 *   5. every partition's live replicas (the leader's voters) report the
 *      same applied index and digest (GET /debug/digest) once the load
 *      stopped;
 *   6. the leader of partition 0 is removed by asking it (parleyctl
 *      follows its hand-over to the new leader): every partition ends on
 *      the three nodes left, which take SENDs.
 * parleyctl cluster status (given one node) shows the meta group and
 * every partition's placement, none differing, after step 1.
 */
#include <sys/wait.h>

#include "cluster_itest.h"

#define NP 64 /* the default: the meta group is partitions 0 and 32 */
#define ALL 5
#define MAXMSG 4096

static struct it_server nx[2];           /* nodes 4 and 5 */
static struct it_server *node[ALL];      /* node i + 1 */
static char peer_user[32];
/* alice's SENDs through node X alone (port), recorded by seq */
static struct cluster_ledger lg = {.user = "alice", .max = MAXMSG,
				   .pause_ms = 5, .tag = 0x50,
				   .deadline_ms = 20000};

/* ---- reading GET /cluster (cluster_itest.h) ---- */

static char *cluster_doc_of(int i)
{
	return cluster_doc(node[i]);
}

static int leader_view(int p, const bool *alive, struct cluster_pv *out)
{
	return cluster_leader_view(node, ALL, alive, p, out);
}

static int meta_parts(int *out)
{
	return cluster_meta_parts(node[0], out);
}

static uint32_t part_of_key(const char *key)
{
	return cluster_part_of(key, NP);
}

int main(void)
{
	it_init("cluster_placement");
	cluster_partitions = "64";
	/* one node leads every partition it holds (the conversation is
	 * picked among those of partition 0's leader) */
	cluster_follow0 = true;
	cluster_init("84");
	static const char *const digest[] = {"--admin-digest", "1", NULL};
	for (int i = 0; i < NODES; i++) {
		cluster_extra_add(&srv[i], digest);
		node[i] = &srv[i];
		it_server_start(&srv[i]);
	}
	/* nodes 4 and 5: empty, the founders as bootstrap */
	uint16_t admins[ALL];
	for (int i = 0; i < NODES; i++)
		admins[i] = srv[i].admin_port;
	for (int j = 0; j < 2; j++) {
		static const char *const more[] = {"--admin-digest", "1",
						   "--leader-placement",
						   "follow0", NULL};
		uint16_t pp = cluster_joiner_init(&nx[j], 4 + j, "84", more);
		node[3 + j] = &nx[j];
		it_server_start(&nx[j]);
		admins[3 + j] = nx[j].admin_port;
		char path[256], body[1024];
		cluster_add_path(path, sizeof path, 4 + j, &nx[j], pp);
		int code = cluster_admin_post(admins, NODES + j, path, NULL, body,
					      sizeof body);
		printf("add-node %d: %d %s", 4 + j, code, cluster_body_of(body));
		IT_CHECK(code == 200 && strstr(body, "is a voter of"),
			 "add-node %d: %d %s", 4 + j, code, body);
	}

	/* 1. the placement, as every node and each partition's leader see it */
	bool alive[ALL] = {true, true, true, true, true};
	int meta[2];
	int nmeta = meta_parts(meta);
	IT_CHECK(nmeta >= 1 && meta[0] == 0, "no meta group in /cluster");
	int holds[ALL] = {0};
	int voters_of[NP][ALL], nvoters[NP];
	for (int p = 0; p < NP; p++) {
		bool is_meta = cluster_has(meta, nmeta, p);
		struct cluster_pv v;
		int who = -1;
		for (int t = 0; t < 200; t++) {
			who = leader_view(p, alive, &v);
			if (who >= 0 && v.nv == (is_meta ? 5 : 3) && !v.nl)
				break;
			it_sleep_ms(50);
		}
		IT_CHECK(who >= 0, "partition %d: no leader", p);
		IT_CHECK(v.nv == (is_meta ? 5 : 3) && v.nl == 0, "partition %d: "
			 "%d voters, %d learners (meta %d)", p, v.nv, v.nl, is_meta);
		IT_CHECK(strstr(v.placement, "\"recorded\":true") &&
			 strstr(v.placement, "\"matches\":true"),
			 "partition %d: placement %s", p, v.placement);
		/* every node applied the same placement record */
		for (int i = 0; i < ALL; i++) {
			char *d = cluster_doc_of(i);
			struct cluster_pv w;
			cluster_part_view(d, p, &w);
			free(d);
			const char *a = strstr(v.placement, "\"voters\"");
			const char *b = strstr(w.placement, "\"voters\"");
			const char *ae = a ? strstr(a, ",\"matches\"") : NULL;
			IT_CHECK(a && b && ae && !strncmp(a, b, (size_t)(ae - a)),
				 "node%d's placement of partition %d: %s, the "
				 "leader's: %s", i + 1, p, w.placement, v.placement);
		}
		nvoters[p] = v.nv;
		memcpy(voters_of[p], v.voters, sizeof voters_of[p]);
		if (!is_meta)
			for (int k = 0; k < v.nv; k++)
				holds[v.voters[k] - 1]++;
		printf("partition %d: voters", p);
		for (int k = 0; k < v.nv; k++)
			printf(" %d", v.voters[k]);
		printf("%s\n", is_meta ? " (meta group)" : "");
	}
	for (int i = 0; i < ALL; i++)
		IT_CHECK(holds[i] >= 1, "node%d holds no partition", i + 1);
	/* parleyctl cluster status, given one node, shows the meta group and
	 * each partition's placement, none differing */
	char args[256];
	int rc = -1;
	snprintf(args, sizeof args, "cluster status --admin 127.0.0.1:%u "
		 "--timeout-ms 3000", srv[0].admin_port);
	char *out = NULL;
	for (int t = 0; t < 40; t++) {
		free(out);
		out = cluster_ctl(args, &rc);
		if (rc == 0 && !strstr(out, "placement-differs"))
			break;
		it_sleep_ms(100);
	}
	IT_CHECK(rc == 0 && strstr(out, "meta group: partitions 0,32, voters "
				   "1,2,3,4,5; replication factor 3") &&
		 !strstr(out, "placement-differs") && !strstr(out, "learner:"),
		 "parleyctl cluster status: exit %d\n%s", rc, out);
	printf("%s", out);
	free(out);
	snprintf(args, sizeof args, "cluster status --json --admin 127.0.0.1:%u "
		 "--timeout-ms 3000", srv[0].admin_port);
	out = cluster_ctl(args, &rc);
	IT_CHECK(rc == 0 && !strstr(out, "\"differs\":true"),
		 "parleyctl cluster status --json: exit %d\n%.2000s", rc, out);
	int placed = 0;
	for (const char *q = strstr(out, "\"placement\":{\"voters\":["); q;
	     q = strstr(q + 1, "\"placement\":{\"voters\":["))
		placed++;
	IT_CHECK(placed == NP, "status --json: %d placements of %d", placed, NP);
	free(out);

	/* 2. a conversation led by partition 0's leader L, a node X without
	 * it, a member whose inbox L does not hold */
	struct cluster_pv v0;
	int L = leader_view(0, alive, &v0);
	IT_CHECK(L >= 0, "no leader of partition 0");
	int X = -1;
	for (int k = 0; k < 500 && X < 0; k++) {
		char key[96], inbox[64];
		snprintf(peer_user, sizeof peer_user, "bob%d", k);
		snprintf(key, sizeof key, "c/d:alice:%s", peer_user);
		snprintf(inbox, sizeof inbox, "u/%s", peer_user);
		uint32_t cp = part_of_key(key), ip = part_of_key(inbox);
		if (cluster_has(meta, nmeta, (int)cp) ||
		    !cluster_has(voters_of[cp], nvoters[cp], L + 1) ||
		    cluster_has(voters_of[ip], nvoters[ip], L + 1))
			continue;
		for (int i = 0; i < ALL && X < 0; i++)
			if (!cluster_has(voters_of[cp], nvoters[cp], i + 1))
				X = i;
		snprintf(lg.conv, sizeof lg.conv, "d:alice:%s", peer_user);
	}
	IT_CHECK(X >= 0, "no conversation fits (seeded by names only)");
	char key[96];
	snprintf(key, sizeof key, "c/%.90s", lg.conv);
	uint32_t cp = part_of_key(key);
	printf("conversation %s (partition %u), through node%d which does not "
	       "hold it; node%d leads partition 0\n", lg.conv, cp, X + 1, L + 1);
	lg.port = node[X]->port;
	struct parley_client *c = cluster_client_at(lg.port, "alice", "setup",
						    20000, false);
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(c, peer_user, &cv));
	IT_CHECK(cv->conv.len == strlen(lg.conv) &&
		 !memcmp(cv->conv.p, lg.conv, cv->conv.len), "conversation id");
	parley_client_free(c);
	cluster_ledger_start(&lg);
	cluster_ledger_wait_more(&lg, 30, "through a node that does not hold "
				 "the conversation");

	/* 3. kill -9 a replica of the conversation's partition */
	int K = -1;
	for (int k = 0; k < nvoters[cp] && K < 0; k++)
		if (voters_of[cp][k] - 1 != L && voters_of[cp][k] - 1 != X)
			K = voters_of[cp][k] - 1;
	IT_CHECK(K >= 0, "no replica to kill");
	printf("killing node%d (a replica of partition %u)\n", K + 1, cp);
	it_server_kill(node[K]);
	alive[K] = false;
	cluster_ledger_wait_more(&lg, 30, "after a replica was killed");

	/* 3a. remove the dead node: its replicas move to the others first
	 * (some rejoin groups they left when nodes 4 and 5 came) */
	uint16_t live_admins[ALL];
	int nla = 0;
	for (int i = 0; i < ALL; i++)
		if (alive[i])
			live_admins[nla++] = node[i]->admin_port;
	char rpath[64], rbody[1024];
	snprintf(rpath, sizeof rpath, "/cluster/remove-node?id=%d", K + 1);
	int rcode = cluster_admin_post(live_admins, nla, rpath, NULL, rbody,
				       sizeof rbody);
	printf("remove-node %d: %d %s", K + 1, rcode, cluster_body_of(rbody));
	IT_CHECK(rcode == 200 && strstr(rbody, "removed from all 64 partitions") &&
		 !strstr(rbody, "could not be placed"),
		 "remove-node %d: %d %s", K + 1, rcode, rbody);
	int full = 0;
	for (int p = 0; p < NP; p++) {
		struct cluster_pv v;
		int who = -1;
		for (int t = 0; t < 100; t++) { /* a hand-over may be running */
			who = leader_view(p, alive, &v);
			if (who >= 0 && v.nv >= 3 && !v.nl)
				break;
			it_sleep_ms(50);
		}
		IT_CHECK(who >= 0, "partition %d: no leader after the removal", p);
		IT_CHECK(!cluster_has(v.voters, v.nv, K + 1) && !cluster_has(v.learners, v.nl, K + 1),
			 "partition %d still has node%d", p, K + 1);
		IT_CHECK(v.nl == 0 && v.nv >= 3, "partition %d: %d voters, %d "
			 "learners after the removal", p, v.nv, v.nl);
		IT_CHECK(strstr(v.placement, "\"matches\":true"),
			 "partition %d: placement %s", p, v.placement);
		full += v.nv >= 3;
		nvoters[p] = v.nv;
		memcpy(voters_of[p], v.voters, sizeof voters_of[p]);
		printf("partition %d after the removal: voters", p);
		for (int k = 0; k < v.nv; k++)
			printf(" %d", v.voters[k]);
		printf("\n");
	}
	printf("%d of %d partitions have 3 or more voters again\n", full, NP);
	IT_CHECK(full == NP, "%d of %d partitions with 3 voters", full, NP);
	/* a node removed from the cluster does not come back under its id */
	snprintf(rpath, sizeof rpath, "/cluster/add-node?id=%d&peer="
		 "127.0.0.1:%u", K + 1, it_free_port());
	rcode = cluster_admin_post(live_admins, nla, rpath, NULL, rbody,
				   sizeof rbody);
	IT_CHECK(rcode == 400 && strstr(rbody, "never reused"),
		 "adding removed node %d again: %d %s", K + 1, rcode, rbody);
	cluster_ledger_wait_more(&lg, 20, "after the dead replica was removed");
	cluster_ledger_stop(&lg);
	int total = cluster_ledger_acked(&lg);

	/* 4. every acknowledged SEND, through X alone */
	char xname[16];
	snprintf(xname, sizeof xname, "node%d", X + 1);
	int held = cluster_ledger_history(&lg, lg.port, true, xname);
	IT_CHECK(held >= total, "history through node%d: %d of %d", X + 1, held,
		 total);

	/* 4a. the fan-out reached the member's inbox, which partition 0's
	 * leader does not hold: read on a live holder of it */
	char ikey[64];
	snprintf(ikey, sizeof ikey, "u/%s", peer_user);
	uint32_t ip = part_of_key(ikey);
	/* a holder that also holds the conversation's partition: a node
	 * without it resolves an inbox pointer that does not carry its
	 * message (a fan-out recovery's) by a read it cannot serve, and the
	 * device gets a placeholder (docs/CLUSTER.md §5) */
	int H = -1;
	for (int pass = 0; pass < 2 && H < 0; pass++)
		for (int k = 0; k < nvoters[ip] && H < 0; k++)
			if (alive[voters_of[ip][k] - 1] &&
			    (pass || cluster_has(voters_of[cp], nvoters[cp],
					 voters_of[ip][k])))
				H = voters_of[ip][k] - 1;
	IT_CHECK(H >= 0, "no live holder of the inbox partition %u", ip);
	cluster_ledger_inbox(&lg, peer_user, NULL, node[H]->port);
	for (int i = 0; i < ALL; i++)
		if (alive[i] && !cluster_has(voters_of[ip], nvoters[ip], i + 1)) {
			/* a node without the inbox partition serves the SYNC
			 * from a holder (docs/CLUSTER.md §3.3) */
			printf("the inbox read on node%d, which does not hold "
			       "partition %u:\n", i + 1, ip);
			cluster_ledger_inbox(&lg, peer_user, NULL, node[i]->port);
			break;
		}

	/* 5. the live replicas of every partition agree */
	for (int p = 0; p < NP; p++)
		cluster_same_digest(node, alive, p, voters_of[p], nvoters[p]);
	printf("ok: %d SENDs acknowledged through node%d (which holds no "
	       "replica of the conversation), all in its history; every "
	       "partition's live replicas have the same digest\n", total, X + 1);

	/* 6. the leader of partition 0 removed by asking it: it hands the
	 * meta group to another meta voter and parleyctl repeats the command
	 * there, which moves its replicas away and removes it */
	snprintf(args, sizeof args, "cluster remove-node --admin 127.0.0.1:%u "
		 "--id %d", node[L]->admin_port, L + 1);
	out = cluster_ctl(args, &rc);
	printf("parleyctl %s:\n%s", args, out);
	IT_CHECK(rc == 0 && strstr(out, "removed from all 64 partitions") &&
		 !strstr(out, "could not be placed"),
		 "removing the leader of partition 0: exit %d\n%s", rc, out);
	free(out);
	alive[L] = false;
	for (int p = 0; p < NP; p++) {
		struct cluster_pv v;
		int who = -1;
		for (int t = 0; t < 100; t++) {
			who = leader_view(p, alive, &v);
			if (who >= 0 && !cluster_has(v.voters, v.nv, L + 1))
				break;
			it_sleep_ms(50);
		}
		IT_CHECK(who >= 0 && !cluster_has(v.voters, v.nv, L + 1) &&
			 !cluster_has(v.learners, v.nl, L + 1) && v.nv == 3,
			 "partition %d after removing node%d: leader %d, %d voters",
			 p, L + 1, who + 1, v.nv);
	}
	/* the survivors still take SENDs (a client with their list) */
	char live_list[256];
	int ll = 0;
	for (int i = 0; i < ALL; i++)
		if (alive[i])
			ll += snprintf(live_list + ll, sizeof live_list - (size_t)ll,
				       "%s127.0.0.1:%u", ll ? "," : "",
				       node[i]->port);
	{
		struct parley_client *c2 = cluster_client_new("alice", "after",
							      live_list, 20000);
		for (int i = 0; i < 5; i++) {
			struct parley_send_result r;
			IT_OK(parley_client_send(c2, lg.conv, 1, "after", 5, &r));
		}
		parley_client_free(c2);
	}
	printf("ok: node%d (the leader of partition 0) removed by asking it; "
	       "SENDs acknowledged by the three left\n", L + 1);
	for (int i = 0; i < ALL; i++)
		if (alive[i])
			IT_CHECK(it_server_stop(node[i], SIGTERM, 10000) == 0,
				 "node%d did not stop cleanly", i + 1);
	return 0;
}
