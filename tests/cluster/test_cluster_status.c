/*
 * test_cluster_status.c — `parleyctl cluster status` and GET /cluster
 * against three real parleyd processes on loopback (docs/CLUSTER.md §3.6).
 *
 *   1. With all three up and a burst of SENDs acknowledged, the status
 *      (asking all three admin ports) shows one leader per partition —
 *      and each node's own /cluster agrees: exactly one node says it
 *      leads each partition — and, once the followers heard the leader's
 *      commit, every replica at commit lag 0 and apply lag 0, exit 0.
 *   1c. Left idle, every node's groups quiesce:
 *      parley_raft_groups_quiesced reaches the partition count on each.
 *   2. A follower is killed with SIGKILL and more SENDs are acknowledged
 *      by the two others: the status (the killed node's address still in
 *      the list) shows it unreachable and its replica of every partition
 *      lagging (the leader's view: inactive, behind by the new entries),
 *      the partitions still led, exit 0; the leader's /metrics shows the
 *      follower lag and inactive followers.
 *   3. A second node is killed: the last one cannot keep or elect a
 *      leader (check-quorum steps it down), and the status exits 1 with
 *      `no-leader` flags; with none left it exits 3, and usage errors 2.
 */
#include <sys/wait.h>

#include "cluster_itest.h"

static char ctl_bin[512];
static char admins[256];

/* Runs `parleyctl cluster status --admin <admins> [--json]`; its stdout
 * (caller frees) and exit code. */
static char *ctl_status(bool json, int *rc)
{
	char args[512];
	snprintf(args, sizeof args, "cluster status --admin %s --timeout-ms "
		 "1000%s", admins, json ? " --json" : "");
	return cluster_ctl_run(args, rc, false);
}

/* Counts occurrences of `needle` in `hay`. */
static int count(const char *hay, const char *needle)
{
	return cluster_count(hay, needle);
}

static struct parley_client *cluster_client(const char *user, const char *device)
{
	return cluster_client_new(user, device, NULL, 25000);
}

static void send_burst(const char *conv, int from, int n)
{
	struct parley_client *c = cluster_client("alice", "burst");
	for (int i = from; i < from + n; i++) {
		uint8_t id[16] = {0};
		id[0] = (uint8_t)i;
		id[1] = (uint8_t)(i >> 8);
		id[15] = 0x5a;
		char body[32];
		int bl = snprintf(body, sizeof body, "m%d", i);
		struct parley_send_result r;
		int rc = parley_client_send_id(c, conv, id, 1, body, (size_t)bl, &r);
		IT_CHECK(rc == 0, "send %d: %s", i, parley_strerror(rc));
	}
	parley_client_free(c);
}

/* Which node says it leads partition p, from each node's own /cluster
 * (-1: none; fails when two do). */
static int sole_leader(int p, int skip)
{
	int who = -1;
	char pat[64];
	snprintf(pat, sizeof pat, "{\"partition\":%d,\"role\":\"leader\"", p);
	for (int i = 0; i < NODES; i++) {
		if (i == skip)
			continue;
		int code = 0;
		char *t = it_http_get(srv[i].admin_port, "/cluster", &code);
		IT_CHECK(code == 200 && t, "GET /cluster on node%d: %d", i + 1, code);
		if (strstr(t, pat)) {
			IT_CHECK(who < 0, "partition %d led by node%d and node%d", p,
				 who + 1, i + 1);
			who = i;
		}
		free(t);
	}
	return who;
}

int main(void)
{
	it_init("cluster_status");
	snprintf(ctl_bin, sizeof ctl_bin, "%s/tools/parleyctl", getenv("PARLEY_BIN_DIR"));
	/* step 1b tests the redirect (NOTLEADER's leader hint): a
	 * follower forwards instead unless forwarding is off */
	cluster_no_forward = true;
	/* the redirect of step 1b goes to partition 0's leader, which leads
	 * every partition (with leadership spread it names the partition's
	 * own leader: test_cluster_route, test_conn_fwd): follow0 placement */
	cluster_follow0 = true;
	cluster_init("91");
	for (int i = 0; i < NODES; i++)
		it_server_start(&srv[i]);
	for (int i = 0; i < NODES; i++) { /* ready: a leader of partition 0 known */
		int code = 0;
		for (int ms = 0; code != 200; ms += 20) {
			IT_CHECK(ms < 30000, "node%d never ready", i + 1);
			free(it_http_get(srv[i].admin_port, "/readyz", &code));
			if (code != 200)
				it_sleep_ms(20);
		}
	}
	int n = 0;
	for (int i = 0; i < NODES; i++)
		n += snprintf(admins + n, sizeof admins - (size_t)n, "%s127.0.0.1:%u",
			      i ? "," : "", srv[i].admin_port);

	/* 1. all up, a burst acknowledged: one leader per partition, lag 0 */
	struct parley_client *c = cluster_client("alice", "setup");
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(c, "bob", &cv));
	char conv[64];
	snprintf(conv, sizeof conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	parley_client_free(c);
	send_burst(conv, 0, 40);
	int rc = -1;
	char *out = NULL;
	for (int tries = 0; tries < 200; tries++) {
		free(out);
		out = ctl_status(true, &rc);
		/* 8 partitions x 3 replicas, each at commit and apply lag 0 */
		if (rc == 0 && count(out, "\"commit_lag\":0,\"apply_lag\":0") == 8 * NODES &&
		    count(out, "\"no_leader\":false") == 8 &&
		    count(out, "\"lagging\":true") == 0)
			break;
		it_sleep_ms(50);
	}
	IT_CHECK(rc == 0, "status exit %d:\n%s", rc, out);
	IT_CHECK(count(out, "\"commit_lag\":0,\"apply_lag\":0") == 8 * NODES &&
		 count(out, "\"lagging\":true") == 0,
		 "replicas not caught up after the burst:\n%s", out);
	IT_CHECK(count(out, "\"reachable\":true") >= NODES, "%s", out);
	free(out);
	int leader = sole_leader(0, -1);
	IT_CHECK(leader >= 0, "nobody leads partition 0");
	for (int p = 1; p < 8; p++)
		IT_CHECK(sole_leader(p, -1) >= 0, "nobody leads partition %d", p);
	/* one admin address is enough: the others advertise theirs */
	{
		char all[256];
		snprintf(all, sizeof all, "%s", admins);
		snprintf(admins, sizeof admins, "127.0.0.1:%u", srv[2].admin_port);
		out = ctl_status(true, &rc);
		snprintf(admins, sizeof admins, "%s", all);
		IT_CHECK(rc == 0 && count(out, "\"reachable\":true") >= NODES &&
			 count(out, "\"no_leader\":false") == 8,
			 "status from one address: exit %d\n%s", rc, out);
		for (int i = 0; i < NODES; i++) {
			char a[64];
			snprintf(a, sizeof a, "\"admin\":\"127.0.0.1:%u\"",
				 srv[i].admin_port);
			IT_CHECK(strstr(out, a), "node%d not found from one address:"
				 "\n%s", i + 1, out);
		}
		free(out);
	}
	out = ctl_status(false, &rc);
	printf("---- all up ----\n%s", out);
	IT_CHECK(rc == 0 && !strstr(out, "no-leader") && !strstr(out, "lagging"),
		 "table: exit %d\n%s", rc, out);
	free(out);

	/* 1b. the leader hint of NOTLEADER: a client that knows only the two
	 * followers is sent by the first to the leader (not in its list) and
	 * ends there after one redirect, never trying the second follower;
	 * over plain TCP, then TLS (the hint's TLS address) */
	for (int tls = 0; tls < 2; tls++) {
		int f = (leader + 1) % NODES, g = (leader + 2) % NODES;
		char list[64];
		snprintf(list, sizeof list, "127.0.0.1:%u,127.0.0.1:%u",
			 tls ? srv[f].tls_port : srv[f].port,
			 tls ? srv[g].tls_port : srv[g].port);
		uint64_t acc[NODES];
		for (int i = 0; i < NODES; i++)
			acc[i] = it_metric_get(srv[i].admin_port,
					       "parley_connections_accepted_total");
		char *tok = it_token_for("alice");
		struct parley_client_opts o = {
			.nodes = list, .token = tok, .device_id = "redirect",
			.connect_timeout_ms = 3000, .request_timeout_ms = 3000,
			.call_deadline_ms = 25000, .backoff_min_ms = 50,
			.backoff_max_ms = 500, .tls = tls,
			.ca_file = tls ? it_path("ca.pem") : NULL,
			.tls_server_name = tls ? "localhost" : NULL};
		struct parley_client *rc1 = NULL;
		IT_OK(parley_client_new(&o, &rc1));
		uint8_t id[16] = {0};
		id[14] = (uint8_t)tls;
		id[15] = 0x7e;
		struct parley_send_result r;
		IT_OK(parley_client_send_id(rc1, conv, id, 1, "hinted", 6, &r));
		const char *host;
		uint16_t port;
		IT_OK(parley_client_current_node(rc1, &host, &port));
		uint16_t want = tls ? srv[leader].tls_port : srv[leader].port;
		IT_CHECK(port == want, "after NOTLEADER the %s client is on port %u, "
			 "the leader (node%d) is on %u", tls ? "TLS" : "TCP", port,
			 leader + 1, want);
		uint64_t now[NODES];
		for (int i = 0; i < NODES; i++)
			now[i] = it_metric_get(srv[i].admin_port,
					       "parley_connections_accepted_total");
		IT_CHECK(now[f] == acc[f] + 1 && now[leader] == acc[leader] + 1 &&
			 now[g] == acc[g], "connections accepted: follower %" PRIu64
			 ", leader %" PRIu64 ", other follower %" PRIu64
			 " (want 1, 1, 0: one redirect)", now[f] - acc[f],
			 now[leader] - acc[leader], now[g] - acc[g]);
		parley_client_free(rc1);
		free(tok);
		printf("redirect (%s): node%d answered NOTLEADER naming node%d, "
		       "served there\n", tls ? "TLS" : "TCP", f + 1, leader + 1);
	}

	/* 1c. idle: every node's groups quiesce (raft_quiesce_ticks, default
	 * 10 ticks of 20 ms here), which /metrics counts; the SENDs of step 2
	 * then wake the conversation's group */
	for (int i = 0; i < NODES; i++) {
		uint64_t q = 0;
		for (int ms = 0; (q = it_metric_get(srv[i].admin_port,
					"parley_raft_groups_quiesced")) != 8;
		     ms += 50) {
			IT_CHECK(ms < 20000, "node%d: %" PRIu64 " of 8 groups "
				 "quiesced after 20 s idle", i + 1, q);
			it_sleep_ms(50);
		}
	}
	printf("idle: all 8 groups quiesced on every node\n");

	/* 2. a follower killed: unreachable, its replicas lagging, exit 0 */
	int victim = (leader + 1) % NODES;
	it_server_kill(&srv[victim]);
	send_burst(conv, 100, 20);
	char down[64];
	snprintf(down, sizeof down, "{\"node\":%d,\"reachable\":false", victim + 1);
	for (int tries = 0; tries < 200; tries++) {
		out = ctl_status(true, &rc);
		/* every partition lists the victim unreachable, behind and
		 * inactive in the leader's view */
		if (rc == 0 && count(out, down) == 8 &&
		    count(out, "\"active\":false") >= 1 &&
		    count(out, "\"lagging\":true") >= 8)
			break;
		free(out);
		out = NULL;
		it_sleep_ms(50);
	}
	IT_CHECK(out, "the killed follower never shows as down and lagging");
	IT_CHECK(rc == 0, "status exit %d with a leader for every partition:\n%s", rc,
		 out);
	/* the conversation's partition got 20 entries the victim lacks */
	char lag_pat[96];
	snprintf(lag_pat, sizeof lag_pat,
		 "{\"node\":%d,\"reachable\":false,\"role\":\"?\",\"match\":", victim + 1);
	const char *p = strstr(out, lag_pat);
	uint64_t maxlag = 0;
	for (; p; p = strstr(p + 1, lag_pat)) {
		const char *l = strstr(p, "\"lag\":");
		IT_CHECK(l, "%s", out);
		uint64_t v = strtoull(l + 6, NULL, 10);
		if (v > maxlag)
			maxlag = v;
	}
	IT_CHECK(maxlag >= 20, "largest lag of the killed follower %" PRIu64
		 " after 20 SENDs:\n%s", maxlag, out);
	free(out);
	out = ctl_status(false, &rc);
	printf("---- node%d killed ----\n%s", victim + 1, out);
	IT_CHECK(rc == 0 && strstr(out, "lagging") && strstr(out, ":down(lag") &&
		 !strstr(out, "no-leader"), "table: exit %d\n%s", rc, out);
	free(out);
	leader = sole_leader(0, victim);
	IT_CHECK(leader >= 0, "no leader of partition 0 after the kill");
	uint64_t flag = it_metric_get(srv[leader].admin_port,
				      "parley_raft_follower_lag_max_entries");
	uint64_t inact = it_metric_get(srv[leader].admin_port,
				       "parley_raft_followers_inactive");
	IT_CHECK(flag >= 20 && inact >= 1, "leader metrics: lag max %" PRIu64
		 ", inactive %" PRIu64, flag, inact);

	/* 3. a second node killed: no quorum, no leader, exit 1 */
	it_server_kill(&srv[leader]);
	out = NULL;
	for (int tries = 0; tries < 400; tries++) {
		free(out);
		out = ctl_status(false, &rc);
		if (rc == 1)
			break;
		it_sleep_ms(50);
	}
	printf("---- two nodes killed ----\n%s", out);
	IT_CHECK(rc == 1 && strstr(out, "no-leader"),
		 "status with one node of three: exit %d\n%s", rc, out);
	free(out);
	/* 4. nothing answers: exit 3; usage errors: exit 2 */
	for (int i = 0; i < NODES; i++)
		if (srv[i].pid > 0)
			it_server_kill(&srv[i]);
	out = ctl_status(false, &rc);
	IT_CHECK(rc == 3, "status with every node down: exit %d\n%s", rc, out);
	free(out);
	char cmd[700];
	const char *bad[] = {"cluster status", "cluster status --admin nocolon",
			     "cluster status --admin 127.0.0.1:1 --lag-threshold x",
			     "cluster frobnicate", NULL};
	for (int k = 0; bad[k]; k++) {
		snprintf(cmd, sizeof cmd, "'%s' %s >/dev/null 2>&1", ctl_bin, bad[k]);
		int st = system(cmd);
		int ex = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		/* a host:port that does not parse is a node that cannot be asked */
		IT_CHECK(ex == (k == 1 ? 3 : 2), "parleyctl %s: exit %d", bad[k], ex);
	}
	it_cleanup();
	printf("ok\n");
	return 0;
}
