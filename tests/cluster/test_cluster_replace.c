/*
 * test_cluster_replace.c — a cluster that heals its replication factor
 * (docs/CLUSTER.md §3.7, "Re-placing the replicas of a down node").
 *
 * Three founders on loopback (16 partitions, the default replication
 * factor 3, follow0, --replica-replace-ms 2000, digests on). Then:
 *   1. (with RR_REMOVE3=1 only: founder 3 is killed and removed, every
 *      partition is left with the two voters there are, one short of
 *      the replication factor) nodes 4 and 5 start empty and are added:
 *      after the adds every partition outside the meta group has 3 live
 *      voters (a removal followed by adds leaves none short);
 *   2. one sender per partition (cluster_ledger: libparley, the list
 *      of the live nodes, its own client_msg_ids) SENDs to a
 *      conversation of that partition (so every partition takes
 *      writes);
 *   3. a node K that does not lead partition 0 is killed with kill -9;
 *      without any command, once it has been down replica_replace_ms the
 *      leader of partition 0 moves its replicas: every partition outside
 *      the meta group gets 3 voters on live nodes again, no learner, as
 *      each partition's leader sees it; that leader's GET /cluster shows
 *      node K down and replicas moved, its /metrics counts the moves, and
 *      `parleyctl cluster status` prints the re-placement line;
 *   4. a second node E (not the leader of partition 0) is killed: every
 *      conversation (every partition) still gets SENDs acknowledged;
 *   5. once E's replicas are re-placed too (every partition has 3
 *      voters on the three live nodes, K still down; with RR_REMOVE3
 *      two nodes are left, fewer than the replication factor, and
 *      nothing moves: no wait), K restarts with
 *      its data: it is re-placed by the same rule (it holds partitions
 *      again, every partition has 3 voters on live nodes; it rejoins
 *      groups it was removed from, with its own log). Before a returning
 *      node started rounds by itself, this step failed "node5 came back
 *      and holds no partition after 60 s" (first seen in CI, where K
 *      happened to restart after E's round);
 *   6. the load stops; HISTORY of every conversation, read through a
 *      live node, holds every acknowledged SEND at its seq once; every
 *      partition's live replicas report the same applied index and
 *      digest (GET /debug/digest).
 * With the automatic re-placement off (replica_replace_ms 0) step 3
 * fails ("not healed after the first kill within 60 s: partition 1:
 * leader 2, voters 2 4 5, 0 learners", node 5 killed); run it several
 * times: the steps with load are where a rejoin bug would show.
 * Conversations are picked with their open record (o/<conv>) in another
 * partition than their messages (c/<conv>): a SEND's leader that does not
 * hold the open record's partition checks that the conversation exists
 * at that partition's leader (docs/CLUSTER.md §3.3, "A SEND's check
 * across nodes"); the test prints how many conversations' leaders held no
 * replica of it at the start. Before that check, such SENDs failed
 * NOTLEADER until the client's deadline (seen for 3 of 16 conversations:
 * "no SEND acknowledged before any kill"). With RR_REMOVE3=1 in the
 * environment founder 3 is first killed and removed, and the adds must
 * fill every partition again.
 */
#include "cluster_itest.h"

#define NP 16
#define ALL 5
#define MAXM 2048
#define REPLACE_MS "2000"

static struct it_server nx[2];           /* nodes 4 and 5 */
static struct it_server *node[ALL];      /* node i + 1 */
static bool alive[ALL];
static int meta[2], nmeta;

/* one conversation per partition, each with its sender (alice) */
static char peer[NP][32];
static struct cluster_ledger lg[NP];

/* The live nodes' client addresses (the senders' and readers' list). */
static void live_list(char *out, size_t cap)
{
	int n = 0;
	out[0] = '\0';
	for (int i = 0; i < ALL; i++)
		if (alive[i] && node[i])
			n += snprintf(out + n, cap - (size_t)n, "%s127.0.0.1:%u",
				      n ? "," : "", node[i]->port);
}

/* The live nodes' admin ports (0: down), for cluster_admin_post. */
static void live_admins(uint16_t out[ALL])
{
	for (int i = 0; i < ALL; i++)
		out[i] = alive[i] && node[i] ? node[i]->admin_port : 0;
}

/* The leader's view of partition p over the live nodes (highest term). */
static int leader_view(int p, struct cluster_pv *out)
{
	return cluster_leader_view(node, ALL, alive, p, out);
}

/* Every node's view of partition p (a failure's post-mortem). */
static void dump_partition(int p)
{
	for (int i = 0; i < ALL; i++) {
		if (!alive[i])
			continue;
		char *d = cluster_doc(node[i]);
		char pat[48];
		snprintf(pat, sizeof pat, "{\"partition\":%d,", p);
		const char *s = d ? strstr(d, pat) : NULL;
		const char *e = s ? strstr(s + 1, "{\"partition\":") : NULL;
		fprintf(stderr, "node%d: %.*s\n", i + 1,
			s ? (int)(e ? e - s : 600) : 1, s ? s : "-");
		free(d);
	}
}

/* Every conversation (every partition) gets `more` acknowledgements. */
static void wait_acks_everywhere(int more, const char *when)
{
	int want[NP];
	for (int k = 0; k < NP; k++)
		want[k] = cluster_ledger_acked(&lg[k]) + more;
	for (int k = 0; k < NP; k++) {
		for (int t = 0; t < 600 && cluster_ledger_acked(&lg[k]) < want[k];
		     t++)
			it_sleep_ms(50);
		if (cluster_ledger_acked(&lg[k]) < want[k])
			dump_partition(k);
		IT_CHECK(cluster_ledger_acked(&lg[k]) >= want[k], "%s (partition "
			 "%d): no SEND acknowledged %s (%d acked)", lg[k].conv, k,
			 when, cluster_ledger_acked(&lg[k]));
	}
}

/* Waits until every partition outside the meta group has exactly 3
 * voters, all live, no learner, none of them `gone` (0 = any), as its
 * leader sees it; fails with what it saw last after `secs`. `when`
 * names the step in the messages (NULL: prints nothing on success). */
static void wait_healed(int gone, int secs, const char *when)
{
	char last[256] = "";
	for (int t = 0; t < secs * 10; t++) {
		bool ok = true;
		for (int p = 0; p < NP && ok; p++) {
			if (cluster_has(meta, nmeta, p))
				continue;
			struct cluster_pv v;
			int who = leader_view(p, &v);
			bool live = who >= 0 && v.nv == 3 && !v.nl;
			for (int k = 0; live && k < v.nv; k++)
				live = alive[v.voters[k] - 1];
			if (!live || (gone && cluster_has(v.voters, v.nv, gone))) {
				int n = snprintf(last, sizeof last, "partition "
						 "%d: leader %d, voters", p,
						 who + 1);
				for (int k = 0; k < v.nv && n < 200; k++)
					n += snprintf(last + n, sizeof last -
						      (size_t)n, " %d",
						      v.voters[k]);
				snprintf(last + n, sizeof last - (size_t)n,
					 ", %d learners", v.nl);
				ok = false;
			}
		}
		if (ok) {
			if (when)
				printf("every partition has 3 live voters %s "
				       "(%.1f s)\n", when, t / 10.0);
			return;
		}
		it_sleep_ms(100);
	}
	IT_CHECK(false, "not healed %s within %d s: %s", when ? when :
		 "while waiting for node K's share", secs, last);
}

/* The partitions outside the meta group whose leader names node n a
 * voter. */
static int node_holds(int n)
{
	int holds = 0;
	for (int p = 0; p < NP; p++) {
		struct cluster_pv v;
		if (!cluster_has(meta, nmeta, p) && leader_view(p, &v) >= 0 &&
		    cluster_has(v.voters, v.nv, n))
			holds++;
	}
	return holds;
}

/* HISTORY of conversation k through a live node: every acknowledged
 * SEND at its seq, once, with its own client_msg_id. */
static void check_history(int k)
{
	for (int i = 0; i < ALL; i++) {
		if (!alive[i])
			continue;
		char who[64];
		snprintf(who, sizeof who, "%s (partition %d) on node%d",
			 lg[k].conv, k, i + 1);
		if (cluster_ledger_history(&lg[k], node[i]->port, true, who) >= 0)
			return;
	}
	IT_CHECK(false, "%s (partition %d): no live node answers HISTORY",
		 lg[k].conv, k);
}

/* Every partition's live voters (as its leader sees them) report the
 * same applied index and digest. */
static void check_digests(void)
{
	for (int p = 0; p < NP; p++) {
		struct cluster_pv v;
		int who = -1;
		for (int t = 0; t < 200 && (who = leader_view(p, &v)) < 0; t++)
			it_sleep_ms(50);
		IT_CHECK(who >= 0, "partition %d: no leader", p);
		cluster_same_digest(node, alive, p, v.voters, v.nv);
	}
}

/* A node other than the leader of partition 0 and not in `not`. */
static int pick_victim(int not)
{
	struct cluster_pv v;
	int L = leader_view(0, &v);
	for (int i = ALL - 1; i >= 0; i--)
		if (alive[i] && i != L && i != not)
			return i;
	return -1;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	it_init("cluster_replace");
	cluster_partitions = "16";
	cluster_follow0 = true;
	cluster_init("86");
	static const char *const more[] = {"--admin-digest", "1",
					   "--replica-replace-ms", REPLACE_MS,
					   NULL};
	for (int i = 0; i < NODES; i++) {
		cluster_extra_add(&srv[i], more);
		node[i] = &srv[i];
		alive[i] = true;
		it_server_start(&srv[i]);
	}
	for (int t = 0; t < 100 && !(nmeta = cluster_meta_parts(node[0], meta));
	     t++)
		it_sleep_ms(100);
	IT_CHECK(nmeta >= 1 && meta[0] == 0, "no meta group in /cluster");

	/* 1. founder 3 killed and removed: two nodes cannot hold three
	 * replicas; nodes 4 and 5 added fill every partition again */
	struct cluster_pv v0;
	for (int t = 0; t < 200 && leader_view(0, &v0) < 0; t++)
		it_sleep_ms(50);
	char body[2048];
	uint16_t admins[ALL];
	int code = 0;
	if (getenv("RR_REMOVE3")) {
		it_server_kill(node[2]);
		alive[2] = false;
		live_admins(admins);
		code = cluster_admin_post(admins, ALL, "/cluster/remove-node?id=3",
					  NULL, body, sizeof body);
		printf("remove-node 3: %d %s", code, cluster_body_of(body));
		IT_CHECK(code == 200 && strstr(body, "removed from all 16"),
			 "remove-node 3: %d %s", code, body);
		for (int p = 0; p < NP; p++) {
			struct cluster_pv v;
			int who = -1;
			for (int t = 0; t < 100 && who < 0; t++) {
				who = leader_view(p, &v);
				if (who < 0)
					it_sleep_ms(50);
			}
			IT_CHECK(who >= 0 && v.nv == 2 &&
				 !cluster_has(v.voters, v.nv, 3),
				 "partition %d: %d voters after the removal", p, v.nv);
		}
		printf("every partition has 2 voters (nodes 1 and 2)\n");
	}
	for (int j = 0; j < 2; j++) {
		static const char *const jmore[] = {
			"--admin-digest", "1", "--replica-replace-ms", REPLACE_MS,
			"--leader-placement", "follow0", NULL};
		uint16_t pp = cluster_joiner_init(&nx[j], 4 + j, "86", jmore);
		node[3 + j] = &nx[j];
		it_server_start(&nx[j]);
		alive[3 + j] = true;
		char path[256];
		cluster_add_path(path, sizeof path, 4 + j, &nx[j], pp);
		live_admins(admins);
		code = cluster_admin_post(admins, ALL, path, NULL, body,
					  sizeof body);
		printf("add-node %d: %d %s", 4 + j, code, cluster_body_of(body));
		IT_CHECK(code == 200 && strstr(body, "is a voter of"),
			 "add-node %d: %d %s", 4 + j, code, body);
	}
	IT_CHECK(!strstr(body, "could not be placed"), "after the adds: %s",
		 body);
	wait_healed(getenv("RR_REMOVE3") ? 3 : 0, 20, "after the adds");

	/* 2. one conversation per partition, a sender to each */
	int found = 0;
	for (int k = 0; k < 20000 && found < NP; k++) {
		char name[32], key[96], okey[96];
		snprintf(name, sizeof name, "u%d", k);
		snprintf(key, sizeof key, "c/d:alice:%s", name);
		snprintf(okey, sizeof okey, "o/d:alice:%s", name);
		uint32_t p = cluster_part_of(key, NP);
		/* its open record (o/<conv>) in another partition: with 3
		 * replicas of 5, a SEND's leader may hold no replica of it
		 * and must ask that partition's leader */
		if (lg[p].conv[0] || cluster_part_of(okey, NP) == p)
			continue;
		snprintf(lg[p].conv, sizeof lg[p].conv, "d:alice:%s", name);
		snprintf(peer[p], sizeof peer[p], "%s", name);
		found++;
	}
	IT_CHECK(found == NP, "no conversation for every partition (%d)", found);
	int apart = 0;
	for (int p = 0; p < NP; p++) {
		char okey[112];
		snprintf(okey, sizeof okey, "o/%.96s", lg[p].conv);
		struct cluster_pv cv, ov;
		int cl = leader_view(p, &cv);
		(void)leader_view((int)cluster_part_of(okey, NP), &ov);
		apart += cl >= 0 && !cluster_has(ov.voters, ov.nv, cl + 1);
	}
	printf("%d of %d conversations: their leader holds no replica of "
	       "their open record's partition\n", apart, NP);
	static char nodes5[512]; /* every node: all five are alive here */
	live_list(nodes5, sizeof nodes5);
	{
		struct parley_client *c = cluster_client_new("alice", "setup",
							     nodes5, 10000);
		IT_OK(parley_client_connect(c));
		for (int p = 0; p < NP; p++) {
			const struct parley_conv *cv;
			IT_OK(parley_client_conv_open(c, peer[p], &cv));
			IT_CHECK(cv->conv.len == strlen(lg[p].conv) &&
				 !memcmp(cv->conv.p, lg[p].conv, cv->conv.len),
				 "conversation id of %s", peer[p]);
		}
		parley_client_free(c);
	}
	for (int p = 0; p < NP; p++) {
		lg[p].user = "alice";
		lg[p].nodes = nodes5;
		lg[p].max = MAXM;
		lg[p].pause_ms = 200;
		lg[p].tag = 0x52;
		lg[p].deadline_ms = 10000;
		cluster_ledger_start(&lg[p]);
	}
	wait_acks_everywhere(3, "before any kill");

	/* 3. kill -9 a node: its replicas are re-placed by themselves */
	int K = pick_victim(-1);
	IT_CHECK(K >= 0, "no node to kill");
	printf("killing node%d\n", K + 1);
	it_server_kill(node[K]);
	alive[K] = false;
	wait_acks_everywhere(3, "after the first kill");
	wait_healed(K + 1, 60, "after the first kill");
	struct cluster_pv vl;
	int L = leader_view(0, &vl);
	IT_CHECK(L >= 0, "no leader of partition 0");
	char *doc = cluster_doc(node[L]);
	char want[64];
	snprintf(want, sizeof want, "\"down\":[%d]", K + 1);
	IT_CHECK(doc && strstr(doc, want), "node%d's /cluster does not show "
		 "node%d down: %.600s", L + 1, K + 1,
		 doc && strstr(doc, "\"replace\"") ? strstr(doc, "\"replace\"")
						   : "(none)");
	printf("%.200s\n", strstr(doc, "\"replace\""));
	free(doc);
	uint64_t moves = it_metric_get(node[L]->admin_port,
				       "parley_replica_replace_moves_total");
	uint64_t downs = it_metric_get(node[L]->admin_port,
				       "parley_replica_replace_down_nodes");
	printf("node%d: parley_replica_replace_moves_total %" PRIu64 ", "
	       "parley_replica_replace_down_nodes %" PRIu64 "\n", L + 1, moves,
	       downs);
	IT_CHECK(moves >= 1 && downs == 1, "metrics: moves %" PRIu64 ", down %"
		 PRIu64, moves, downs);
	char args[256];
	snprintf(args, sizeof args, "cluster status --admin 127.0.0.1:%u "
		 "--timeout-ms 3000", node[L]->admin_port);
	int rc = -1;
	char *out = cluster_ctl(args, &rc);
	char line[64];
	snprintf(line, sizeof line, "re-placement (node %d): node %d down",
		 L + 1, K + 1);
	IT_CHECK(strstr(out, line), "parleyctl cluster status (exit %d) "
		 "without '%s':\n%s", rc, line, out);
	printf("%s", strstr(out, line));
	free(out);

	/* 4. a second node dies: every partition still takes SENDs */
	int E = pick_victim(K);
	IT_CHECK(E >= 0, "no second node to kill");
	printf("killing node%d\n", E + 1);
	it_server_kill(node[E]);
	alive[E] = false;
	wait_acks_everywhere(3, "after the second kill");
	printf("ok: every partition took SENDs with node%d and node%d dead\n",
	       K + 1, E + 1);

	/* 5. once E's replicas too are re-placed (on the three live
	 * nodes: every partition healed without K), K comes back with its
	 * data and is placed again */
	int nalive = 0;
	for (int i = 0; i < ALL; i++)
		nalive += alive[i];
	if (nalive >= 3) /* else nothing can move (RR_REMOVE3: 2 left) */
		wait_healed(E + 1, 60, "after the second kill (node K still "
			    "down)");
	it_server_start(node[K]);
	alive[K] = true;
	/* Every partition may already have 3 live voters when K is back (E's
	 * replicas moved to the three others while K was down): K gets its
	 * share back from the balancing rounds that follow, a few partitions
	 * a round (docs/CLUSTER.md §3.7, "When the node returns"), so wait
	 * for them rather than look once. */
	int holds = 0, t;
	for (t = 0; t < 600; t++) {
		wait_healed(0, 60, t ? NULL : "after node K came back (node E "
			    "down)");
		holds = node_holds(K + 1);
		if (holds >= 1)
			break;
		it_sleep_ms(100);
	}
	printf("node%d is a voter of %d partitions again (%.1f s after the "
	       "partitions healed)\n", K + 1, holds, t / 10.0);
	IT_CHECK(holds >= 1, "node%d came back and holds no partition after "
		 "60 s", K + 1);
	wait_acks_everywhere(3, "after node K came back");

	/* 6. nothing acknowledged lost; replicas equal */
	int total = 0;
	for (int k = 0; k < NP; k++) {
		cluster_ledger_stop(&lg[k]);
		total += cluster_ledger_acked(&lg[k]);
	}
	for (int k = 0; k < NP; k++)
		check_history(k);
	check_digests();
	uint64_t checks = 0, served = 0;
	for (int i = 0; i < ALL; i++)
		if (alive[i]) {
			checks += it_metric_get(node[i]->admin_port,
						"parley_tail_remote_checks_total");
			served += it_metric_get(node[i]->admin_port,
						"parley_tail_checks_served_total");
		}
	printf("remote existence checks on the live nodes: %" PRIu64 " asked, %"
	       PRIu64 " answered for others\n", checks, served);
	printf("ok: %d SENDs acknowledged over %d partitions, all in their "
	       "history; every partition's live replicas have the same "
	       "digest\n", total, NP);
	for (int i = 0; i < ALL; i++)
		if (alive[i])
			IT_CHECK(it_server_stop(node[i], SIGTERM, 10000) == 0,
				 "node%d did not stop cleanly", i + 1);
	return 0;
}
