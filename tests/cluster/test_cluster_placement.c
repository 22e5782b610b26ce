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
 *      every acknowledged message once; a SYNC on a node that does not
 *      hold it is refused NOTLEADER;
 *   5. every partition's live replicas (the leader's voters) report the
 *      same applied index and digest (GET /debug/digest) once the load
 *      stopped;
 *   6. the leader of partition 0 is removed by asking it (parleyctl
 *      follows its hand-over to the new leader): every partition ends on
 *      the three nodes left, which take SENDs.
 * parleyctl cluster status (given one node) shows the meta group and
 * every partition's placement, none differing, after step 1.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "cluster_itest.h"

#define NP 64 /* the default: the meta group is partitions 0 and 32 */
#define ALL 5
#define MAXMSG 4096

static struct it_server nx[2];           /* nodes 4 and 5 */
static struct it_server *node[ALL];      /* node i + 1 */
static char conv[96], peer_user[32];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t acked_id[MAXMSG][16];
static bool acked[MAXMSG];
static int nacked;
static atomic_bool stop;
static uint16_t via_port;                /* node X's client port */
static char ctl_bin[512];

static struct parley_client *client_at(uint16_t port, const char *device)
{
	char *tok = it_token_for("alice");
	struct parley_client_opts o = {
		.host = "127.0.0.1", .port = port, .token = tok,
		.device_id = device, .connect_timeout_ms = 2000,
		.request_timeout_ms = 3000, .call_deadline_ms = 20000,
		.backoff_min_ms = 50, .backoff_max_ms = 500};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

static void *sender(void *arg)
{
	(void)arg;
	struct parley_client *c = client_at(via_port, "sender");
	for (uint32_t i = 0; !atomic_load(&stop) && i < MAXMSG - 1; i++) {
		uint8_t id[16] = {0};
		memcpy(id, &i, sizeof i);
		id[15] = 0x50;
		char body[32];
		int bl = snprintf(body, sizeof body, "m%u", i);
		struct parley_send_result r;
		if (parley_client_send_id(c, conv, id, 1, body, (size_t)bl, &r))
			continue; /* outcome unknown: not counted */
		IT_CHECK(r.seq >= 1 && r.seq < MAXMSG, "seq %" PRIu64, r.seq);
		pthread_mutex_lock(&mu);
		IT_CHECK(!acked[r.seq - 1] ||
			 !memcmp(acked_id[r.seq - 1], id, 16),
			 "seq %" PRIu64 " acknowledged for two messages", r.seq);
		acked[r.seq - 1] = true;
		memcpy(acked_id[r.seq - 1], id, 16);
		nacked++;
		pthread_mutex_unlock(&mu);
		it_sleep_ms(5);
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

/* Runs parleyctl with args; its output (caller frees) and exit code. */
static char *ctl(const char *args, int *rc)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", ctl_bin, args);
	FILE *f = popen(cmd, "r");
	IT_CHECK(f, "popen %s", cmd);
	size_t cap = 1 << 18, n = 0, k;
	char *out = malloc(cap);
	IT_CHECK(out);
	while (n + 1 < cap && (k = fread(out + n, 1, cap - n - 1, f)) > 0)
		n += k;
	out[n] = '\0';
	int st = pclose(f);
	*rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return out;
}

/* POST path to each admin port until one answers other than 409. */
static int admin_post(const uint16_t *ports, int n, const char *path,
		      char *body, size_t cap)
{
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < n; i++) {
			char req[512];
			snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: t\r\n"
				 "Content-Length: 0\r\n\r\n", path);
			int code = 0;
			char *r = it_http_raw(ports[i], req, strlen(req), 70000,
					      &code);
			snprintf(body, cap, "%s", r ? r : "");
			free(r);
			if (code && code != 409)
				return code;
		}
		it_sleep_ms(200);
	}
	return 0;
}

/* ---- reading GET /cluster ---- */

struct pv {
	bool found, leader;
	uint64_t term;
	int voters[ALL + 4], nv, learners[ALL + 4], nl;
	char placement[160]; /* the "placement" object as text */
};

static int ids_of(const char *a, int *out)
{
	int n = 0;
	if (!a || *a != '[')
		return 0;
	for (a++; *a && *a != ']';) {
		char *e;
		long v = strtol(a, &e, 10);
		if (e == a)
			break;
		out[n++] = (int)v;
		a = *e == ',' ? e + 1 : e;
	}
	return n;
}

static void part_view(const char *doc, int p, struct pv *v)
{
	memset(v, 0, sizeof *v);
	char pat[48];
	snprintf(pat, sizeof pat, "{\"partition\":%d,", p);
	const char *s = doc ? strstr(doc, pat) : NULL;
	if (!s)
		return;
	const char *end = strstr(s + 1, "{\"partition\":");
	size_t len = end ? (size_t)(end - s) : strlen(s);
	char *o = strndup(s, len);
	v->found = true;
	v->leader = strstr(o, "\"role\":\"leader\"") != NULL;
	const char *t = strstr(o, "\"term\":");
	v->term = t ? strtoull(t + 7, NULL, 10) : 0;
	const char *pl = strstr(o, "\"placement\":");
	/* the configuration's arrays come before the placement object */
	const char *vo = strstr(o, "],\"voters\":");
	if (vo && (!pl || vo < pl))
		v->nv = ids_of(vo + 11, v->voters);
	const char *le = strstr(o, "],\"learners\":");
	if (le && (!pl || le < pl))
		v->nl = ids_of(le + 13, v->learners);
	if (pl) {
		const char *pe = strchr(pl, '}');
		snprintf(v->placement, sizeof v->placement, "%.*s",
			 pe ? (int)(pe - pl) : 0, pl);
	}
	free(o);
}

static char *cluster_doc(int i)
{
	int code = 0;
	char *b = it_http_get(node[i]->admin_port, "/cluster", &code);
	if (code != 200) {
		free(b);
		return NULL;
	}
	return b;
}

/* The leader's view of partition p over the live nodes (highest term). */
static int leader_view(int p, const bool *alive, struct pv *out)
{
	int who = -1;
	memset(out, 0, sizeof *out);
	for (int i = 0; i < ALL; i++) {
		if (!alive[i])
			continue;
		char *d = cluster_doc(i);
		struct pv v;
		part_view(d, p, &v);
		free(d);
		if (v.found && v.leader && (who < 0 || v.term > out->term)) {
			*out = v;
			who = i;
		}
	}
	return who;
}

static bool has(const int *a, int n, int x)
{
	for (int i = 0; i < n; i++)
		if (a[i] == x)
			return true;
	return false;
}

static int meta_parts(int *out)
{
	char *d = cluster_doc(0);
	static const char pat[] = "\"meta\":{\"partitions\":";
	const char *m = d ? strstr(d, pat) : NULL;
	int n = m ? ids_of(m + strlen(pat), out) : 0;
	free(d);
	return n;
}

static uint32_t part_of_key(const char *key)
{
	return (uint32_t)(parley_hash_key(key, strlen(key)) % NP);
}

/* HISTORY of conv through port alone, checked against the acked SENDs;
 * how many messages it holds (-1: no answer). */
static int history_via(uint16_t port, bool final)
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
			IT_CHECK(!acked[m->seq - 1] ||
				 !memcmp(acked_id[m->seq - 1], m->client_msg_id, 16),
				 "seq %" PRIu64 ": another message than the one "
				 "acknowledged", m->seq);
			n++;
		}
		if (!pg->count || !pg->next_before_seq)
			break;
		before = pg->next_before_seq;
	}
	if (final && n >= 0)
		for (int s = 0; s < MAXMSG; s++)
			IT_CHECK(!acked[s] || seen[s], "acknowledged seq %d "
				 "missing from the history", s + 1);
	pthread_mutex_unlock(&mu);
	parley_client_free(c);
	return n;
}

/* ---- the peer member's inbox ---- */

struct inbox {
	uint64_t n, cap;
	struct inbox_ev {
		uint64_t inbox_seq, conv_seq;
		uint16_t kind;
		char conv[96];
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

/* A new device of peer_user SYNCs its inbox from seq 1 on a node that
 * holds the inbox's partition (port): every acknowledged message of conv
 * is there once, inbox seqs dense. */
static void check_inbox(uint16_t port)
{
	struct inbox b = {0};
	char *tok = it_token_for(peer_user);
	struct parley_client_opts o = {
		.host = "127.0.0.1", .port = port, .token = tok,
		.device_id = "inbox-check", .connect_timeout_ms = 3000,
		.request_timeout_ms = 3000, .call_deadline_ms = 30000,
		.backoff_min_ms = 50, .backoff_max_ms = 500,
		.on_event = inbox_on_event, .on_receipt = inbox_on_event,
		.user = &b};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	IT_OK(parley_client_connect(c));
	IT_OK(parley_client_subscribe(c, 1, NULL));
	static int cnt[MAXMSG];
	int want = acked_now(), got = 0;
	for (int ms = 0; ms < 30000 && got < want; ms += 50) {
		(void)parley_client_poll(c, 50);
		memset(cnt, 0, sizeof cnt);
		got = 0;
		for (uint64_t i = 0; i < b.n; i++)
			if (b.v[i].kind == PARLEY_EV_MESSAGE &&
			    !strcmp(b.v[i].conv, conv) && b.v[i].conv_seq >= 1 &&
			    b.v[i].conv_seq < MAXMSG &&
			    acked[b.v[i].conv_seq - 1] &&
			    !cnt[b.v[i].conv_seq - 1]++)
				got++;
	}
	(void)parley_client_poll(c, 300);
	for (uint64_t i = 0; i < b.n; i++)
		IT_CHECK(b.v[i].inbox_seq == i + 1, "%s: event %" PRIu64 " has "
			 "inbox seq %" PRIu64 " (a gap or a repeat)", peer_user,
			 i, b.v[i].inbox_seq);
	memset(cnt, 0, sizeof cnt);
	for (uint64_t i = 0; i < b.n; i++)
		if (b.v[i].kind == PARLEY_EV_MESSAGE && !strcmp(b.v[i].conv, conv))
			IT_CHECK(b.v[i].conv_seq >= 1 && b.v[i].conv_seq < MAXMSG &&
				 !cnt[b.v[i].conv_seq - 1]++, "%s: message %" PRIu64
				 " twice in the inbox", peer_user, b.v[i].conv_seq);
	for (int q = 0; q < MAXMSG; q++)
		IT_CHECK(!acked[q] || cnt[q] == 1, "%s: acknowledged message %d "
			 "lost from the inbox (%d of %d there)", peer_user, q + 1,
			 got, want);
	printf("%s's inbox: %" PRIu64 " events, each of the %d acknowledged "
	       "messages once\n", peer_user, b.n, want);
	parley_client_free(c);
	free(tok);
	free(b.v);
}

/* SYNC of peer_user's inbox on a node that does not hold its partition
 * (port, alone): refused NOTLEADER (its start is a linearizable read),
 * never a tail of what that node applied long ago. */
static void check_sync_refused(uint16_t port)
{
	char *tok = it_token_for(peer_user);
	struct parley_client_opts o = {
		.host = "127.0.0.1", .port = port, .token = tok,
		.device_id = "inbox-elsewhere", .connect_timeout_ms = 3000,
		.request_timeout_ms = 3000, .call_deadline_ms = 3000,
		.no_reconnect = 1};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	IT_OK(parley_client_connect(c));
	int rc = parley_client_subscribe(c, 1, NULL);
	printf("SYNC on a node without the inbox partition: %d (%s)\n", rc,
	       rc ? parley_strerror(rc) : "served");
	IT_CHECK(rc == -PARLEY_ENOTLEADER, "SYNC on a node that does not hold "
		 "the inbox partition: %d, not NOTLEADER", rc);
	parley_client_free(c);
	free(tok);
}

/* "applied A ... digest D" of partition p in node i's /debug/digest. */
static bool digest_of(int i, int p, char *out, size_t cap)
{
	int code = 0;
	char *d = it_http_get(node[i]->admin_port, "/debug/digest", &code);
	char pat[32];
	snprintf(pat, sizeof pat, "partition %d applied ", p);
	const char *l = d && code == 200 ? strstr(d, pat) : NULL;
	bool ok = false;
	if (l) {
		unsigned long long ap = 0;
		char dg[32] = "";
		const char *dd = strstr(l, " digest ");
		const char *eol = strchr(l, '\n');
		if (sscanf(l + strlen(pat), "%llu", &ap) == 1 && dd &&
		    (!eol || dd < eol) && sscanf(dd + 8, "%31s", dg) == 1) {
			snprintf(out, cap, "applied %llu digest %s", ap, dg);
			ok = true;
		}
	}
	free(d);
	return ok;
}

int main(void)
{
	it_init("cluster_placement");
	const char *bin = getenv("PARLEY_BIN_DIR");
	IT_CHECK(bin, "PARLEY_BIN_DIR not set");
	snprintf(ctl_bin, sizeof ctl_bin, "%s/tools/parleyctl", bin);
	cluster_partitions = "64";
	/* one node leads every partition it holds (the conversation is
	 * picked among those of partition 0's leader) */
	cluster_follow0 = true;
	cluster_init("84");
	for (int i = 0; i < NODES; i++) {
		int k = 0;
		while (srv[i].extra[k])
			k++;
		srv[i].extra[k++] = "--admin-digest";
		srv[i].extra[k++] = "1";
		srv[i].extra[k] = NULL;
		node[i] = &srv[i];
		it_server_start(&srv[i]);
	}
	/* nodes 4 and 5: empty, the founders as bootstrap */
	static char peers_x[2][256], pport[2][8], idx[2][4];
	uint16_t pp[2];
	uint16_t admins[ALL];
	for (int i = 0; i < NODES; i++)
		admins[i] = srv[i].admin_port;
	for (int j = 0; j < 2; j++) {
		char name[16];
		snprintf(name, sizeof name, "node%d", 4 + j);
		it_server_init(&nx[j], name);
		node[3 + j] = &nx[j];
		pp[j] = it_free_port();
		snprintf(pport[j], sizeof pport[j], "%u", pp[j]);
		snprintf(idx[j], sizeof idx[j], "%d", 4 + j);
	}
	for (int j = 0; j < 2; j++) {
		int m = 0;
		for (int i = 0; i < NODES; i++) /* extra[5]: the peer port */
			m += snprintf(peers_x[j] + m, sizeof peers_x[j] - (size_t)m,
				      "%s%d=127.0.0.1:%s", i ? "," : "", i + 1,
				      srv[i].extra[5]);
		if (j == 1)
			snprintf(peers_x[j] + m, sizeof peers_x[j] - (size_t)m,
				 ",4=127.0.0.1:%s", pport[0]);
		const char *x[] = {"--node-id", idx[j], "--cluster-id", "84",
				   "--peer-port", pport[j], "--peers", peers_x[j],
				   "--founders", "1,2,3", "--raft-tick-ms", "20",
				   "--partitions", "64", "--loops", "1",
				   "--admin-digest", "1", "--leader-placement",
				   "follow0", NULL};
		for (int k = 0; x[k]; k++)
			nx[j].extra[k] = x[k];
		it_server_start(&nx[j]);
		admins[3 + j] = nx[j].admin_port;
		char path[256], body[1024];
		snprintf(path, sizeof path, "/cluster/add-node?id=%d&peer="
			 "127.0.0.1:%u&client=127.0.0.1:%u&admin=127.0.0.1:%u",
			 4 + j, pp[j], nx[j].port, nx[j].admin_port);
		int code = admin_post(admins, NODES + j, path, body, sizeof body);
		const char *b = strstr(body, "\r\n\r\n");
		printf("add-node %d: %d %s", 4 + j, code, b ? b + 4 : body);
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
		bool is_meta = has(meta, nmeta, p);
		struct pv v;
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
			char *d = cluster_doc(i);
			struct pv w;
			part_view(d, p, &w);
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
		out = ctl(args, &rc);
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
	out = ctl(args, &rc);
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
	struct pv v0;
	int L = leader_view(0, alive, &v0);
	IT_CHECK(L >= 0, "no leader of partition 0");
	int X = -1;
	for (int k = 0; k < 500 && X < 0; k++) {
		char key[96], inbox[64];
		snprintf(peer_user, sizeof peer_user, "bob%d", k);
		snprintf(key, sizeof key, "c/d:alice:%s", peer_user);
		snprintf(inbox, sizeof inbox, "u/%s", peer_user);
		uint32_t cp = part_of_key(key), ip = part_of_key(inbox);
		if (has(meta, nmeta, (int)cp) ||
		    !has(voters_of[cp], nvoters[cp], L + 1) ||
		    has(voters_of[ip], nvoters[ip], L + 1))
			continue;
		for (int i = 0; i < ALL && X < 0; i++)
			if (!has(voters_of[cp], nvoters[cp], i + 1))
				X = i;
		snprintf(conv, sizeof conv, "d:alice:%s", peer_user);
	}
	IT_CHECK(X >= 0, "no conversation fits (seeded by names only)");
	char key[96];
	snprintf(key, sizeof key, "c/%.90s", conv);
	uint32_t cp = part_of_key(key);
	printf("conversation %s (partition %u), through node%d which does not "
	       "hold it; node%d leads partition 0\n", conv, cp, X + 1, L + 1);
	via_port = node[X]->port;
	struct parley_client *c = client_at(via_port, "setup");
	IT_OK(parley_client_connect(c));
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(c, peer_user, &cv));
	IT_CHECK(cv->conv.len == strlen(conv) &&
		 !memcmp(cv->conv.p, conv, cv->conv.len), "conversation id");
	parley_client_free(c);
	pthread_t th;
	IT_CHECK(pthread_create(&th, NULL, sender, NULL) == 0);
	wait_more_acks(30, "through a node that does not hold the conversation");

	/* 3. kill -9 a replica of the conversation's partition */
	int K = -1;
	for (int k = 0; k < nvoters[cp] && K < 0; k++)
		if (voters_of[cp][k] - 1 != L && voters_of[cp][k] - 1 != X)
			K = voters_of[cp][k] - 1;
	IT_CHECK(K >= 0, "no replica to kill");
	printf("killing node%d (a replica of partition %u)\n", K + 1, cp);
	it_server_kill(node[K]);
	alive[K] = false;
	wait_more_acks(30, "after a replica was killed");

	/* 3a. remove the dead node: its replicas move to the others first
	 * (some rejoin groups they left when nodes 4 and 5 came) */
	uint16_t live_admins[ALL];
	int nla = 0;
	for (int i = 0; i < ALL; i++)
		if (alive[i])
			live_admins[nla++] = node[i]->admin_port;
	char rpath[64], rbody[1024];
	snprintf(rpath, sizeof rpath, "/cluster/remove-node?id=%d", K + 1);
	int rcode = admin_post(live_admins, nla, rpath, rbody, sizeof rbody);
	const char *rb = strstr(rbody, "\r\n\r\n");
	printf("remove-node %d: %d %s", K + 1, rcode, rb ? rb + 4 : rbody);
	IT_CHECK(rcode == 200 && strstr(rbody, "removed from all 64 partitions") &&
		 !strstr(rbody, "could not be placed"),
		 "remove-node %d: %d %s", K + 1, rcode, rbody);
	int full = 0;
	for (int p = 0; p < NP; p++) {
		struct pv v;
		int who = -1;
		for (int t = 0; t < 100; t++) { /* a hand-over may be running */
			who = leader_view(p, alive, &v);
			if (who >= 0 && v.nv >= 3 && !v.nl)
				break;
			it_sleep_ms(50);
		}
		IT_CHECK(who >= 0, "partition %d: no leader after the removal", p);
		IT_CHECK(!has(v.voters, v.nv, K + 1) && !has(v.learners, v.nl, K + 1),
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
	rcode = admin_post(live_admins, nla, rpath, rbody, sizeof rbody);
	IT_CHECK(rcode == 400 && strstr(rbody, "never reused"),
		 "adding removed node %d again: %d %s", K + 1, rcode, rbody);
	wait_more_acks(20, "after the dead replica was removed");
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	int total = acked_now();

	/* 4. every acknowledged SEND, through X alone */
	int held = history_via(via_port, true);
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
			    (pass || has(voters_of[cp], nvoters[cp],
					 voters_of[ip][k])))
				H = voters_of[ip][k] - 1;
	IT_CHECK(H >= 0, "no live holder of the inbox partition %u", ip);
	check_inbox(node[H]->port);
	for (int i = 0; i < ALL; i++)
		if (alive[i] && !has(voters_of[ip], nvoters[ip], i + 1)) {
			check_sync_refused(node[i]->port);
			break;
		}

	/* 5. the live replicas of every partition agree */
	for (int p = 0; p < NP; p++) {
		bool same = false;
		char first[96] = "", other[96] = "";
		for (int t = 0; t < 200 && !same; t++) {
			same = true;
			first[0] = '\0';
			for (int k = 0; k < nvoters[p] && same; k++) {
				int i = voters_of[p][k] - 1;
				if (!alive[i])
					continue;
				if (!digest_of(i, p, other, sizeof other))
					same = false;
				else if (!first[0])
					snprintf(first, sizeof first, "%s", other);
				else if (strcmp(first, other))
					same = false;
			}
			if (!same)
				it_sleep_ms(50);
		}
		IT_CHECK(same, "partition %d: replicas differ (%s vs %s)", p, first,
			 other);
	}
	printf("ok: %d SENDs acknowledged through node%d (which holds no "
	       "replica of the conversation), all in its history; every "
	       "partition's live replicas have the same digest\n", total, X + 1);

	/* 6. the leader of partition 0 removed by asking it: it hands the
	 * meta group to another meta voter and parleyctl repeats the command
	 * there, which moves its replicas away and removes it */
	snprintf(args, sizeof args, "cluster remove-node --admin 127.0.0.1:%u "
		 "--id %d", node[L]->admin_port, L + 1);
	out = ctl(args, &rc);
	printf("parleyctl %s:\n%s", args, out);
	IT_CHECK(rc == 0 && strstr(out, "removed from all 64 partitions") &&
		 !strstr(out, "could not be placed"),
		 "removing the leader of partition 0: exit %d\n%s", rc, out);
	free(out);
	alive[L] = false;
	for (int p = 0; p < NP; p++) {
		struct pv v;
		int who = -1;
		for (int t = 0; t < 100; t++) {
			who = leader_view(p, alive, &v);
			if (who >= 0 && !has(v.voters, v.nv, L + 1))
				break;
			it_sleep_ms(50);
		}
		IT_CHECK(who >= 0 && !has(v.voters, v.nv, L + 1) &&
			 !has(v.learners, v.nl, L + 1) && v.nv == 3,
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
		char *tok = it_token_for("alice");
		struct parley_client_opts o = {
			.nodes = live_list, .token = tok, .device_id = "after",
			.connect_timeout_ms = 2000, .request_timeout_ms = 3000,
			.call_deadline_ms = 20000, .backoff_min_ms = 50,
			.backoff_max_ms = 500};
		struct parley_client *c2 = NULL;
		IT_OK(parley_client_new(&o, &c2));
		free(tok);
		for (int i = 0; i < 5; i++) {
			struct parley_send_result r;
			IT_OK(parley_client_send(c2, conv, 1, "after", 5, &r));
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
