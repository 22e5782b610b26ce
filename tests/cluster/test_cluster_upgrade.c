/*
 * test_cluster_upgrade.c — a rolling upgrade's middle (docs/CLUSTER.md
 * §1.2 "Frame sets", §3.8): a cluster of three parleyd processes on
 * loopback where node3 acts as a node of an older build
 * (PARLEY_TEST_PEER_FRAMES=33e: it knows frames 1-5, APPEND_REQ and
 * APPEND_RES only: no FWD_REQ/REP, LIVE, XFER, PRES, LEADS; it closes a
 * link that carries one, as an older build does). Chat keeps working:
 *
 *   1. Every node reports the other's frame set in GET /cluster (node1
 *      and node2 see node3 "older", node3 sees them "newer") and logs
 *      it; `parleyctl cluster status` says the versions differ.
 *   2. Node3 leads every partition: a client that knows node1 only is
 *      answered NOTLEADER (node1 does not forward to a node that knows no
 *      FWD_REQ), not forwarded; node1 counts it `no_leader`.
 *   3. Node1 leads every partition: a client on node3 only is answered
 *      NOTLEADER (node3 does not forward), while one on node2 only is
 *      forwarded to node1 as usual.
 *   4. Leadership split between node1 and node3; clients with the node
 *      list send to a 1:1 conversation and a group, each message with its
 *      own client_msg_id; a new device of bob SYNCs from inbox seq 1 and
 *      gets every message once, with dense inbox seqs, and HISTORY holds
 *      every acknowledged message at its seq.
 *   5. No peer link was ever closed and redialled (each node connected
 *      once to each other): no node was sent a frame it does not know.
 * On the code before the frame sets, step 2's client is forwarded and
 * node3 closes its links on the FWD_REQ (and on LEADS every 10 ticks),
 * so step 5 fails.
 */
#include "cluster_itest.h"

#define OLD_FRAMES "33e"
#define PER_CONV 15
#define NPART 8

static char ctl_bin[512];
static char conv_id[2][64];

static char *cluster_json(int i)
{
	int code = 0;
	char *t = it_http_get(srv[i].admin_port, "/cluster", &code);
	IT_CHECK(code == 200 && t, "GET /cluster on node%d: %d", i + 1, code);
	return t;
}

static uint64_t leader_of(int i, uint32_t p)
{
	char *t = cluster_json(i);
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

/* Hands partitions [from, to) to node index `who` (POST
 * /cluster/transfer on each one's leader) until it leads them. */
static void hand(int who, uint32_t from, uint32_t to)
{
	for (int t = 0; t < 400; t++) {
		bool all = true;
		for (uint32_t p = from; p < to; p++) {
			uint64_t l = leader_of(who, p);
			if (l == (uint64_t)who + 1)
				continue;
			all = false;
			if (!l)
				continue;
			char req[256];
			snprintf(req, sizeof req, "POST /cluster/transfer?"
				 "partition=%u&to=%d HTTP/1.1\r\nHost: t\r\n"
				 "Content-Length: 0\r\n\r\n", p, who + 1);
			int code = 0;
			free(it_http_raw(srv[l - 1].admin_port, req,
					 strlen(req), 15000, &code));
		}
		if (all)
			return;
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "node%d never led partitions %u..%u",
		who + 1, from, to - 1);
}

/* The peer entry of node `peer` in node i's /cluster has `want`. */
static bool peer_has(int i, int peer, const char *want)
{
	char *t = cluster_json(i);
	char pat[48];
	snprintf(pat, sizeof pat, "{\"node\":%d,\"state\"", peer + 1);
	const char *s = strstr(t, pat);
	const char *e = s ? strchr(s, '}') : NULL;
	bool ok = false;
	if (s && e) {
		const char *w = strstr(s, want);
		ok = w && w < e;
	}
	free(t);
	return ok;
}

static void wait_peer(int i, int peer, const char *want)
{
	for (int t = 0; t < 400; t++) {
		if (peer_has(i, peer, want))
			return;
		it_sleep_ms(25);
	}
	char *t = cluster_json(i);
	it_fail(__FILE__, __LINE__, "node%d's view of node%d lacks %s: %s",
		i + 1, peer + 1, want, t);
}

static bool log_has(int i, const char *needle)
{
	FILE *f = fopen(srv[i].log, "r");
	IT_CHECK(f, "open %s", srv[i].log);
	char line[4096];
	bool found = false;
	while (!found && fgets(line, sizeof line, f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

static struct parley_client *one_node(int node, const char *user,
				      const char *dev)
{
	char *tok = it_token_for(user);
	struct parley_client_opts o = {
		.host = "127.0.0.1", .port = srv[node].port, .token = tok,
		.device_id = dev, .connect_timeout_ms = 2000,
		.request_timeout_ms = 3000, .call_deadline_ms = 3000,
		.backoff_min_ms = 50, .backoff_max_ms = 300, .no_reconnect = 1};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

struct inbox {
	uint64_t n, cap;
	struct inbox_ev {
		uint64_t inbox_seq, conv_seq;
		uint16_t kind;
		char conv[64];
	} *v;
};

static void inbox_on_event(void *user, const struct parley_event *ev)
{
	struct inbox *b = user;
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 256;
		b->v = realloc(b->v, b->cap * sizeof *b->v);
		IT_CHECK(b->v);
	}
	struct inbox_ev *x = &b->v[b->n++];
	x->inbox_seq = ev->inbox_seq;
	x->conv_seq = ev->conv_seq;
	x->kind = ev->kind;
	snprintf(x->conv, sizeof x->conv, "%.*s", (int)ev->conv.len, ev->conv.p);
}

static struct parley_client *list_client(const char *user, const char *dev,
					 struct inbox *b)
{
	char *tok = it_token_for(user);
	struct parley_client_opts o = {
		.nodes = nodes_list, .token = tok, .device_id = dev,
		.connect_timeout_ms = 3000, .request_timeout_ms = 3000,
		.call_deadline_ms = 25000, .backoff_min_ms = 50,
		.backoff_max_ms = 500, .on_event = b ? inbox_on_event : NULL,
		.on_receipt = b ? inbox_on_event : NULL, .user = b};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

/* MESSAGE events of conv in b, counted per acknowledged message
 * (want[0..PER_CONV): their conv seqs) into cnt; the number of events. */
static int inbox_count(const struct inbox *b, const char *conv,
		       const uint64_t *want, int cnt[PER_CONV])
{
	int n = 0;
	memset(cnt, 0, sizeof(int) * PER_CONV);
	for (uint64_t i = 0; i < b->n; i++) {
		const struct inbox_ev *x = &b->v[i];
		if (x->kind != PARLEY_EV_MESSAGE || strcmp(x->conv, conv))
			continue;
		for (int q = 0; q < PER_CONV; q++)
			cnt[q] += want[q] == x->conv_seq;
		n++;
	}
	return n;
}

static uint64_t connects(int i, int peer)
{
	char name[96];
	snprintf(name, sizeof name, "parley_peer_connects{node=\"%d\"}",
		 peer + 1);
	return it_metric_get(srv[i].admin_port, name);
}

int main(void)
{
	it_init("cluster_upgrade");
	snprintf(ctl_bin, sizeof ctl_bin, "%s/tools/parleyctl",
		 getenv("PARLEY_BIN_DIR"));
	cluster_init("89");
	for (int i = 0; i < NODES; i++) { /* leadership stays where put */
		int k = 0;
		while (srv[i].extra[k])
			k++;
		srv[i].extra[k++] = "--leader-rebalance-ms";
		srv[i].extra[k++] = "0";
		srv[i].extra[k] = NULL;
	}
	it_server_start(&srv[0]);
	it_server_start(&srv[1]);
	setenv("PARLEY_TEST_PEER_FRAMES", OLD_FRAMES, 1);
	it_server_start(&srv[2]);
	unsetenv("PARLEY_TEST_PEER_FRAMES");

	/* 1. each side sees the other's set */
	wait_peer(0, 2, "\"frames\":\"" OLD_FRAMES "\",\"frames_announced\":true,"
		  "\"protocol\":\"older\"");
	wait_peer(1, 2, "\"protocol\":\"older\"");
	wait_peer(0, 1, "\"protocol\":\"same\"");
	wait_peer(2, 0, "\"protocol\":\"newer\"");
	wait_peer(2, 1, "\"protocol\":\"newer\"");
	char *t = cluster_json(2);
	IT_CHECK(strstr(t, "\"frames\":\"" OLD_FRAMES "\",\"peers\""),
		 "node3's own set: %s", t);
	free(t);
	IT_CHECK(log_has(0, "peer knows another frame set"),
		 "node1 did not log node3's older set");
	IT_CHECK(log_has(2, "peer knows another frame set"),
		 "node3 did not log the newer sets");
	char admins[128];
	snprintf(admins, sizeof admins, "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u",
		 srv[0].admin_port, srv[1].admin_port, srv[2].admin_port);
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "'%s' cluster status --admin %s", ctl_bin,
		 admins);
	FILE *f = popen(cmd, "r");
	IT_CHECK(f, "popen %s", cmd);
	static char out[65536];
	size_t n = fread(out, 1, sizeof out - 1, f);
	out[n] = '\0';
	pclose(f);
	IT_CHECK(strstr(out, "versions differ") && strstr(out, "3:up(older)") &&
		 strstr(out, "(newer)"), "parleyctl cluster status:\n%s", out);
	printf("%s", out);

	/* 2. node3 leads everything: node1 does not forward to it (the
	 * CONV_OPEN's writes are forwarded appends, which node3 knows) */
	hand(2, 0, NPART);
	struct parley_client *c = one_node(0, "alice", "a-n1");
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	int rc = parley_client_conv_open(c, "bob", &cv);
	IT_CHECK(rc == 0, "CONV_OPEN on node1: %s", parley_strerror(rc));
	snprintf(conv_id[0], sizeof conv_id[0], "%.*s", (int)cv->conv.len,
		 cv->conv.p);
	struct parley_send_result r;
	uint8_t id0[16] = {0xa6, 1};
	rc = parley_client_send_id(c, conv_id[0], id0, 1, "x", 1, &r);
	IT_CHECK(rc == -PARLEY_ENOTLEADER, "SEND on node1, node3 leading: "
		 "%s (want NOTLEADER: no forward to an older node)",
		 parley_strerror(rc));
	parley_client_free(c);
	char *m = it_http_get(srv[0].admin_port, "/metrics", NULL);
	IT_CHECK(m);
	IT_CHECK(it_metric(m, "parley_forward_requests_total{outcome=\"no_leader\"}")
		 >= 1 &&
		 it_metric(m, "parley_forward_requests_total{outcome=\"replied\"}")
		 == 0, "node1 forwarded to node3");
	free(m);

	/* 3. node1 leads everything: node3 does not forward, node2 does */
	hand(0, 0, NPART);
	c = one_node(2, "alice", "a-n3");
	IT_OK(parley_client_connect(c));
	rc = parley_client_send_id(c, conv_id[0], id0, 1, "x", 1, &r);
	IT_CHECK(rc == -PARLEY_ENOTLEADER, "SEND on node3, node1 leading: "
		 "%s (want NOTLEADER: an older node does not forward)",
		 parley_strerror(rc));
	parley_client_free(c);
	c = one_node(1, "alice", "a-n2");
	IT_OK(parley_client_connect(c));
	rc = parley_client_send_id(c, conv_id[0], id0, 1, "m0-0", 4, &r);
	IT_CHECK(rc == 0, "SEND on node2 (forwarded to node1): %s",
		 parley_strerror(rc));
	parley_client_free(c);
	IT_CHECK(it_metric_get(srv[1].admin_port, "parley_forward_requests_total"
			       "{outcome=\"replied\"}") >= 1,
		 "node2 did not forward");

	/* 4. leadership split; chat through the node list */
	hand(2, NPART / 2, NPART);
	c = list_client("alice", "a-list", NULL);
	IT_OK(parley_client_connect(c));
	const struct parley_group_ok *ok;
	rc = parley_client_group_create(c, "upgrade", 0,
					(const char *[]){"bob", "carol"}, 2, &ok);
	IT_CHECK(rc == 0, "GROUP_CREATE: %s", parley_strerror(rc));
	snprintf(conv_id[1], sizeof conv_id[1], "%.*s", (int)ok->conv.len,
		 ok->conv.p);
	uint64_t seqs[2][PER_CONV];
	for (int i = 0; i < PER_CONV; i++)
		for (int k = 0; k < 2; k++) {
			uint8_t id[16] = {0xa7, (uint8_t)k, (uint8_t)i};
			if (k == 0 && i == 0) /* sent in step 3: a retry */
				memcpy(id, id0, sizeof id);
			char body[32];
			int bl = snprintf(body, sizeof body, "m%d-%d", k, i);
			rc = parley_client_send_id(c, conv_id[k], id, 1, body,
						   (size_t)bl, &r);
			IT_CHECK(rc == 0, "SEND %d to conv %d: %s", i, k,
				 parley_strerror(rc));
			seqs[k][i] = r.seq;
		}
	for (int k = 0; k < 2; k++) {
		const struct parley_history_page *pg;
		rc = parley_client_history(c, conv_id[k], 0, 100, &pg);
		IT_CHECK(rc == 0, "HISTORY of conv %d: %s", k, parley_strerror(rc));
		int msgs = 0;
		for (unsigned i = 0; i < pg->count; i++) {
			if (pg->msgs[i].kind != PARLEY_EV_MESSAGE)
				continue;
			msgs++;
			bool acked = false;
			for (int q = 0; q < PER_CONV; q++)
				acked |= seqs[k][q] == pg->msgs[i].seq;
			IT_CHECK(acked, "conv %d: seq %" PRIu64 " never acknowledged",
				 k, pg->msgs[i].seq);
		}
		IT_CHECK(msgs == PER_CONV, "conv %d: %d messages in HISTORY, %d "
			 "acknowledged", k, msgs, PER_CONV);
	}
	parley_client_free(c);

	struct inbox b = {0};
	c = list_client("bob", "b-check", &b);
	IT_OK(parley_client_connect(c));
	IT_OK(parley_client_subscribe(c, 1, NULL));
	int cnt[PER_CONV];
	for (int ms = 0; ms < 20000; ms += 50) {
		if (inbox_count(&b, conv_id[0], seqs[0], cnt) +
			    inbox_count(&b, conv_id[1], seqs[1], cnt) >=
		    2 * PER_CONV)
			break;
		(void)parley_client_poll(c, 50);
	}
	(void)parley_client_poll(c, 300);
	for (uint64_t i = 0; i < b.n; i++)
		IT_CHECK(b.v[i].inbox_seq == i + 1, "bob: event %" PRIu64
			 " has inbox seq %" PRIu64 " (a gap or a repeat)", i,
			 b.v[i].inbox_seq);
	for (int k = 0; k < 2; k++) {
		int got = inbox_count(&b, conv_id[k], seqs[k], cnt);
		for (int q = 0; q < PER_CONV; q++)
			IT_CHECK(cnt[q] == 1, "bob: conv %d seq %" PRIu64
				 " delivered %d times (%d events)", k,
				 seqs[k][q], cnt[q], got);
		IT_CHECK(got == PER_CONV, "bob: conv %d: %d MESSAGE events, %d "
			 "sent", k, got, PER_CONV);
	}
	printf("bob: %" PRIu64 " inbox events, every message once\n", b.n);
	parley_client_free(c);
	free(b.v);

	/* 5. no link was closed on a frame a node does not know */
	for (int i = 0; i < NODES; i++)
		for (int j = 0; j < NODES; j++)
			if (i != j)
				IT_CHECK(connects(i, j) == 1, "node%d connected %"
					 PRIu64 " times to node%d (a link closed)",
					 i + 1, connects(i, j), j + 1);
	IT_CHECK(!log_has(2, "unknown frame type"),
		 "node3 was sent a frame it does not know");
	it_cleanup();
	printf("test_cluster_upgrade: ok\n");
	return 0;
}
