/*
 * test_run_cluster.c — `make run-cluster`'s script (tools/run-cluster.sh)
 * as a newcomer follows it, on a free loopback port range and a temp data
 * directory (the build step is skipped: ctest built parleyd, parley and
 * parleyctl).
 *
 *   1. The banner comes only once every node's /readyz answers; it names
 *      each node's ports and pid and the PARLEY_NODES list.
 *   2. A libparley client given that list (and a token minted with the
 *      banner's secret) sends; the node leading partition 0 is killed with
 *      kill -9; the client keeps sending through the survivors; the killed
 *      node is restarted from its DATA/node-<i>.cmd as the banner says;
 *      the history then holds every acknowledged message once, at the seq
 *      its ack gave, read through the list and from the restarted node
 *      alone (linearizable: it answers once it has caught up), with
 *      libparley and with the terminal client (`parley history`).
 *   3. SIGTERM (what Ctrl-C forwards) stops every node gracefully, the
 *      restarted one too, and the script exits 0.
 *   The peer links run mutual TLS (the banner says so, the logs show
 *   tls=1).
 */
#include "itest.h"

#define NODES 3
#define PER_PHASE 10


static pid_t group; /* the script's process group: killed at exit */
static char data_dir[512];

static void kill_all(void)
{
	if (group > 0)
		kill(-group, SIGKILL);
	if (data_dir[0]) { /* a node restarted outside the script's group */
		char cmd[700];
		snprintf(cmd, sizeof cmd, "pkill -KILL -f -- '--data %s/node-'", data_dir);
		if (system(cmd) < 0)
			perror("pkill");
	}
}

/* A base whose 12 ports (BASE + 10*i + 1..4, i = 1..3) are all free. */
static uint16_t free_base(void)
{
	for (int tries = 0; tries < 200; tries++) {
		uint16_t base = (uint16_t)(20000 + 100 * (parley_mono_ns() / 1000 % 400));
		bool ok = true;
		for (int i = 1; i <= NODES && ok; i++)
			for (int k = 1; k <= 4 && ok; k++) {
				int fd = socket(AF_INET, SOCK_STREAM, 0);
				struct sockaddr_in a = {
					.sin_family = AF_INET,
					.sin_port = htons((uint16_t)(base + 10 * i + k)),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
				ok = fd >= 0 &&
				     bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
				if (fd >= 0)
					close(fd);
			}
		if (ok)
			return base;
		it_sleep_ms(3);
	}
	it_fail(__FILE__, __LINE__, "no free port range");
	return 0;
}

static void start(struct it_proc *p, const char *data, uint16_t base)
{
	char b[16];
	snprintf(b, sizeof b, "%u", base);
	const char *env[] = {"PARLEY_CLUSTER_BASE", b, "PARLEY_CLUSTER_DATA",
			     data, "PARLEY_RUN_NO_BUILD", "1", NULL};
	it_proc_start_script(p, "tools/run-cluster.sh", env);
	group = p->pid;
}

/* The value of a partition-0 gauge on node i's /metrics (-1: no answer). */
static int64_t metric0(uint16_t admin, const char *name)
{
	int code = 0;
	char *t = it_http_get(admin, "/metrics", &code);
	int64_t v = -1;
	if (t && code == 200) {
		char pat[128];
		snprintf(pat, sizeof pat, "\n%s{partition=\"0\"} ", name);
		const char *s = strstr(t, pat);
		if (s)
			v = strtoll(s + strlen(pat), NULL, 10);
	}
	free(t);
	return v;
}

static int leader_of(uint16_t base, int skip)
{
	for (int tries = 0; tries < 1500; tries++) { /* ~30 s */
		for (int i = 1; i <= NODES; i++)
			if (i != skip &&
			    metric0((uint16_t)(base + 10 * i + 3), "parley_raft_role") == 3)
				return i;
		it_sleep_ms(20);
	}
	it_fail(__FILE__, __LINE__, "no node leads partition 0");
	return 0;
}

struct acked {
	uint8_t id[16];
	uint64_t seq;
};

static void send_some(struct parley_client *c, const char *conv,
		      struct acked *a, int from, int n)
{
	for (int k = from; k < from + n; k++) {
		memset(a[k].id, 0, 16);
		a[k].id[0] = 0xc1;
		a[k].id[1] = (uint8_t)k;
		char body[32];
		int bl = snprintf(body, sizeof body, "run-cluster %d", k);
		struct parley_send_result r;
		IT_OK(parley_client_send_id(c, conv, a[k].id, 1, body, (size_t)bl, &r));
		a[k].seq = r.seq;
	}
}

static void check_history(struct parley_client *c, const char *conv,
			  const struct acked *a, const char *via)
{
	const struct parley_history_page *pg = NULL;
	IT_OK(parley_client_history(c, conv, 0, 100, &pg));
	for (int k = 0; k < 2 * PER_PHASE; k++) {
		int seen = 0;
		for (uint32_t m = 0; m < pg->count; m++)
			if (!memcmp(pg->msgs[m].client_msg_id, a[k].id, 16)) {
				seen++;
				IT_CHECK(pg->msgs[m].seq == a[k].seq,
					 "via %s: message %d acked at seq %" PRIu64
					 ", in history at %" PRIu64, via, k,
					 a[k].seq, pg->msgs[m].seq);
			}
		IT_CHECK(seen == 1, "via %s: message %d (seq %" PRIu64 ") in "
			 "history %d times", via, k, a[k].seq, seen);
	}
}

int main(void)
{
	it_init("run_cluster");
	it_on_cleanup = kill_all; /* on failure (it_fail) and at exit (it_cleanup) */
	if (!getenv("PARLEY_SRC_DIR") ||
	    system("command -v bash >/dev/null 2>&1 && command -v openssl "
		   ">/dev/null 2>&1 && command -v pkill >/dev/null 2>&1") != 0)
		return 77;
	snprintf(data_dir, sizeof data_dir, "%s", it_path("cluster"));
	uint16_t base = free_base();

	/* 1. the banner, once every node is ready */
	struct it_proc p;
	start(&p, data_dir, base);
	IT_CHECK(it_proc_wait_for(&p, "Ctrl-C here stops every node", 120000),
		 "no banner:\n%s", p.out);
	pid_t pid[NODES + 1] = {0};
	for (int i = 1; i <= NODES; i++) {
		uint16_t port = (uint16_t)(base + 10 * i + 1);
		int fd = it_tcp_connect(port);
		IT_CHECK(fd >= 0, "banner printed before node %d accepts", i);
		close(fd);
		char want[160];
		snprintf(want, sizeof want, "node %d (pid ", i);
		const char *s = strstr(p.out, want);
		IT_CHECK(s, "the banner names node %d:\n%s", i, p.out);
		pid[i] = (pid_t)strtol(s + strlen(want), NULL, 10);
		snprintf(want, sizeof want, "client TCP %u, TLS %u, admin %u, peer %u "
			 "(mutual TLS)", port, port + 1, port + 2, port + 3);
		IT_CHECK(strstr(p.out, want), "node %d's ports:\n%s", i, p.out);
	}
	char nodes[256];
	snprintf(nodes, sizeof nodes, "PARLEY_NODES=127.0.0.1:%u,127.0.0.1:%u,"
		 "127.0.0.1:%u", base + 11, base + 21, base + 31);
	IT_CHECK(strstr(p.out, nodes), "the banner's node list:\n%s", p.out);

	/* 2. chat through it, kill the leader, restart it */
	char cmd[2048], tok[2048];
	snprintf(cmd, sizeof cmd, "'%s/tools/parleyctl' token -q --secret-file "
		 "'%s/dev/jwt.secret' --sub alice", getenv("PARLEY_BIN_DIR"), data_dir);
	FILE *f = popen(cmd, "r");
	IT_CHECK(f && fgets(tok, sizeof tok, f));
	pclose(f);
	tok[strcspn(tok, "\n")] = 0;
	struct parley_client_opts o = {
		.nodes = nodes + strlen("PARLEY_NODES="), .token = tok,
		.device_id = "run-cluster", .connect_timeout_ms = 2000,
		.request_timeout_ms = 5000, .call_deadline_ms = 60000};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv = NULL;
	IT_OK(parley_client_conv_open(c, "bob", &cv));
	char conv[64];
	snprintf(conv, sizeof conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	struct acked a[2 * PER_PHASE];
	send_some(c, conv, a, 0, PER_PHASE);

	int L = leader_of(base, 0);
	printf("node %d (pid %d) leads partition 0: kill -9\n", L, (int)pid[L]);
	IT_CHECK(kill(pid[L], SIGKILL) == 0);
	send_some(c, conv, a, PER_PHASE, PER_PHASE);
	int L2 = leader_of(base, L);
	printf("node %d leads now; restarting node %d from its .cmd\n", L2, L);
	snprintf(cmd, sizeof cmd, "bash '%s/node-%d.cmd' </dev/null &", data_dir, L);
	IT_CHECK(system(cmd) == 0);
	/* every acknowledged message once, at its seq: through the list, and
	 * from the restarted node alone (HISTORY is linearizable, so its
	 * answer waits until it has caught up) */
	check_history(c, conv, a, "the node list");
	struct parley_client_opts o1 = o;
	o1.nodes = NULL;
	o1.host = "127.0.0.1";
	o1.port = (uint16_t)(base + 10 * L + 1);
	o1.device_id = "run-cluster-restarted";
	struct parley_client *c1 = NULL;
	IT_OK(parley_client_new(&o1, &c1));
	check_history(c1, conv, a, "the restarted node");
	parley_client_free(c1);
	/* the terminal client reads it from that node alone too (reading
	 * needs no CONV_OPEN, which a follower would refuse) */
	if (L != leader_of(base, 0)) {
		char out[8192], hcmd[4800];
		snprintf(hcmd, sizeof hcmd, "PARLEY_TOKEN='%s' '%s/tools/parley' "
			 "--host 127.0.0.1 --port %u history bob --limit 100 "
			 "2>&1", tok, getenv("PARLEY_BIN_DIR"),
			 base + 10 * L + 1);
		f = popen(hcmd, "r");
		IT_CHECK(f);
		size_t n = fread(out, 1, sizeof out - 1, f);
		out[n] = 0;
		int st = pclose(f);
		IT_CHECK(st == 0 && strstr(out, "run-cluster 19"),
			 "parley history on follower node %d: status %d\n%s", L,
			 st, out);
	}
	parley_client_free(c);

	char log[600];
	snprintf(log, sizeof log, "%s/node-%d.log", data_dir, L2);
	IT_CHECK(it_log_tail_has(log, 0, "tls=1"), "peer links with TLS in %s", log);

	/* 3. Ctrl-C: every node stops, the restarted one too */
	kill(p.pid, SIGTERM);
	int rc = it_proc_wait_exit(&p, 60000);
	it_proc_wait_for(&p, "\n\n\n", 200);
	IT_CHECK(rc == 0, "run-cluster after SIGTERM: exit %d\n%s", rc, p.out);
	for (int tries = 0; tries < 500; tries++) { /* the restarted node: ~10 s */
		bool up = false;
		for (int i = 1; i <= NODES; i++) {
			int fd = it_tcp_connect((uint16_t)(base + 10 * i + 1));
			if (fd >= 0) {
				close(fd);
				up = true;
			}
		}
		if (!up)
			break;
		it_sleep_ms(20);
	}
	for (int i = 1; i <= NODES; i++)
		IT_CHECK(it_tcp_connect((uint16_t)(base + 10 * i + 1)) < 0,
			 "node %d still accepts after the script stopped", i);
	close(p.fd);
	printf("run_cluster: ok\n");
	return 0;
}
