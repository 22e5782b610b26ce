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
 *   2. a sender (libparley, the list of the live nodes, its own
 *      client_msg_ids) SENDs round robin to one conversation per
 *      partition (so every partition takes writes);
 *   3. a node K that does not lead partition 0 is killed with kill -9;
 *      without any command, once it has been down replica_replace_ms the
 *      leader of partition 0 moves its replicas: every partition outside
 *      the meta group gets 3 voters on live nodes again, no learner, as
 *      each partition's leader sees it; that leader's GET /cluster shows
 *      node K down and replicas moved, its /metrics counts the moves, and
 *      `parleyctl cluster status` prints the re-placement line;
 *   4. a second node E (not the leader of partition 0) is killed: every
 *      conversation (every partition) still gets SENDs acknowledged;
 *   5. K restarts with its data: it is re-placed by the same rule (it
 *      holds partitions again, every partition has 3 voters on live
 *      nodes; it rejoins groups it was removed from, with its own log);
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
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "cluster_itest.h"

#define NP 16
#define ALL 5
#define MAXM 2048
#define REPLACE_MS "2000"

static struct it_server nx[2];           /* nodes 4 and 5 */
static struct it_server *node[ALL];      /* node i + 1 */
static bool alive[ALL];
static char ctl_bin[512];
static int meta[2], nmeta;

/* one conversation per partition */
static char conv[NP][96], peer[NP][32];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t acked_id[NP][MAXM][16];
static bool acked[NP][MAXM];
static int nacked[NP];
static atomic_bool stop;
static atomic_int last_failed = -1;
static char live_list[512];

static bool has(const int *a, int n, int x)
{
	for (int i = 0; i < n; i++)
		if (a[i] == x)
			return true;
	return false;
}

static void make_live_list(void)
{
	pthread_mutex_lock(&mu);
	int n = 0;
	live_list[0] = '\0';
	for (int i = 0; i < ALL; i++)
		if (alive[i] && node[i])
			n += snprintf(live_list + n, sizeof live_list - (size_t)n,
				      "%s127.0.0.1:%u", n ? "," : "",
				      node[i]->port);
	pthread_mutex_unlock(&mu);
}

static struct parley_client *client_of(const char *user, const char *device)
{
	char *tok = it_token_for(user);
	char list[512];
	pthread_mutex_lock(&mu);
	snprintf(list, sizeof list, "%s", live_list);
	pthread_mutex_unlock(&mu);
	struct parley_client_opts o = {
		.nodes = list, .token = tok, .device_id = device,
		.connect_timeout_ms = 2000, .request_timeout_ms = 3000,
		.call_deadline_ms = 10000, .backoff_min_ms = 50,
		.backoff_max_ms = 500};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

static void *sender(void *arg)
{
	(void)arg;
	struct parley_client *c = client_of("alice", "sender");
	for (uint32_t i = 0; !atomic_load(&stop) && i < NP * (MAXM - 1); i++) {
		int k = (int)(i % NP);
		uint8_t id[16] = {0};
		memcpy(id, &i, sizeof i);
		id[15] = 0x52;
		char body[32];
		int bl = snprintf(body, sizeof body, "m%u", i);
		struct parley_send_result r;
		int rc = parley_client_send_id(c, conv[k], id, 1, body,
					       (size_t)bl, &r);
		if (rc) { /* outcome unknown: not counted */
			static int shown;
			atomic_store(&last_failed, k);
			if (shown++ < 20)
				fprintf(stderr, "SEND to %s (partition %d): %s\n",
					conv[k], k, parley_strerror(rc));
			continue;
		}
		IT_CHECK(r.seq >= 1 && r.seq < MAXM, "seq %" PRIu64, r.seq);
		pthread_mutex_lock(&mu);
		IT_CHECK(!acked[k][r.seq - 1] ||
			 !memcmp(acked_id[k][r.seq - 1], id, 16),
			 "%s: seq %" PRIu64 " acknowledged for two messages",
			 conv[k], r.seq);
		acked[k][r.seq - 1] = true;
		memcpy(acked_id[k][r.seq - 1], id, 16);
		nacked[k]++;
		pthread_mutex_unlock(&mu);
		it_sleep_ms(2);
	}
	parley_client_free(c);
	return NULL;
}

static int acked_in(int k)
{
	pthread_mutex_lock(&mu);
	int n = nacked[k];
	pthread_mutex_unlock(&mu);
	return n;
}

static char *node_doc(int i);

/* Every node's view of partition p (a failure's post-mortem). */
static void dump_partition(int p)
{
	for (int i = 0; i < ALL; i++) {
		if (!alive[i])
			continue;
		char *d = node_doc(i);
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
		want[k] = acked_in(k) + more;
	for (int k = 0; k < NP; k++) {
		for (int t = 0; t < 600 && acked_in(k) < want[k]; t++)
			it_sleep_ms(50);
		if (acked_in(k) < want[k])
			dump_partition(atomic_load(&last_failed) >= 0
					       ? atomic_load(&last_failed) : k);
		IT_CHECK(acked_in(k) >= want[k], "%s (partition %d): no SEND "
			 "acknowledged %s (%d acked)", conv[k], k, when,
			 acked_in(k));
	}
}

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

/* POST path to the live admin ports until one answers other than 409. */
static int admin_post(const char *path, char *body, size_t cap)
{
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < ALL; i++) {
			if (!alive[i])
				continue;
			char req[512];
			snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: t\r\n"
				 "Content-Length: 0\r\n\r\n", path);
			int code = 0;
			char *r = it_http_raw(node[i]->admin_port, req,
					      strlen(req), 70000, &code);
			snprintf(body, cap, "%s", r ? r : "");
			free(r);
			if (code && code != 409)
				return code;
		}
		it_sleep_ms(200);
	}
	return 0;
}

/* ---- reading GET /cluster (as test_cluster_placement.c) ---- */

struct pv {
	bool found, leader;
	uint64_t term;
	int voters[ALL + 4], nv, learners[ALL + 4], nl;
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
	const char *vo = strstr(o, "],\"voters\":");
	if (vo && (!pl || vo < pl))
		v->nv = ids_of(vo + 11, v->voters);
	const char *le = strstr(o, "],\"learners\":");
	if (le && (!pl || le < pl))
		v->nl = ids_of(le + 13, v->learners);
	free(o);
}

static char *node_doc(int i)
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
static int leader_view(int p, struct pv *out)
{
	int who = -1;
	memset(out, 0, sizeof *out);
	for (int i = 0; i < ALL; i++) {
		if (!alive[i])
			continue;
		char *d = node_doc(i);
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

/* Waits until every partition outside the meta group has exactly 3
 * voters, all live, no learner, none of them `gone` (0 = any), as its
 * leader sees it; fails with what it saw last after `secs`. */
static void wait_healed(int gone, int secs, const char *when)
{
	char last[256] = "";
	for (int t = 0; t < secs * 10; t++) {
		bool ok = true;
		for (int p = 0; p < NP && ok; p++) {
			if (has(meta, nmeta, p))
				continue;
			struct pv v;
			int who = leader_view(p, &v);
			bool live = who >= 0 && v.nv == 3 && !v.nl;
			for (int k = 0; live && k < v.nv; k++)
				live = alive[v.voters[k] - 1];
			if (!live || (gone && has(v.voters, v.nv, gone))) {
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
			printf("every partition has 3 live voters %s (%.1f s)\n",
			       when, t / 10.0);
			return;
		}
		it_sleep_ms(100);
	}
	IT_CHECK(false, "not healed %s within %d s: %s", when, secs, last);
}

static uint32_t part_of_key(const char *key)
{
	return (uint32_t)(parley_hash_key(key, strlen(key)) % NP);
}

/* HISTORY of conversation k (a client with the live nodes' list): every
 * acknowledged SEND at its seq, once, with its own client_msg_id. */
static void check_history(int k)
{
	struct parley_client *c = client_of("alice", "reader");
	static bool seen[MAXM];
	memset(seen, 0, sizeof seen);
	uint64_t before = 0;
	int n = 0;
	for (;;) {
		const struct parley_history_page *pg;
		IT_OK(parley_client_history(c, conv[k], before, 100, &pg));
		for (uint16_t j = 0; j < pg->count; j++) {
			const struct parley_hist_msg *m = &pg->msgs[j];
			IT_CHECK(m->seq >= 1 && m->seq < MAXM, "seq %" PRIu64,
				 m->seq);
			IT_CHECK(!seen[m->seq - 1], "%s: seq %" PRIu64 " twice",
				 conv[k], m->seq);
			seen[m->seq - 1] = true;
			IT_CHECK(!acked[k][m->seq - 1] ||
				 !memcmp(acked_id[k][m->seq - 1],
					 m->client_msg_id, 16),
				 "%s: seq %" PRIu64 ": another message than the "
				 "one acknowledged", conv[k], m->seq);
			n++;
		}
		if (!pg->count || !pg->next_before_seq)
			break;
		before = pg->next_before_seq;
	}
	for (int s = 0; s < MAXM; s++)
		IT_CHECK(!acked[k][s] || seen[s], "%s (partition %d): "
			 "acknowledged seq %d missing from the history",
			 conv[k], k, s + 1);
	parley_client_free(c);
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

static void check_digests(void)
{
	for (int p = 0; p < NP; p++) {
		bool same = false;
		char first[96] = "", other[96] = "";
		int fi = -1, oi = -1;
		for (int t = 0; t < 200 && !same; t++) {
			struct pv v;
			if (leader_view(p, &v) < 0) {
				it_sleep_ms(50);
				continue;
			}
			same = true;
			first[0] = '\0';
			for (int k = 0; k < v.nv && same; k++) {
				int i = v.voters[k] - 1;
				if (!alive[i])
					continue;
				if (!digest_of(i, p, other, sizeof other)) {
					same = false;
				} else if (!first[0]) {
					snprintf(first, sizeof first, "%s", other);
					fi = i;
				} else if (strcmp(first, other)) {
					same = false;
					oi = i;
				}
			}
			if (!same)
				it_sleep_ms(50);
		}
		IT_CHECK(same, "partition %d: replicas differ (node%d %s vs "
			 "node%d %s)", p, fi + 1, first, oi + 1, other);
	}
}

static long metric_of(int i, const char *name)
{
	int code = 0;
	char *d = it_http_get(node[i]->admin_port, "/metrics", &code);
	char pat[128];
	snprintf(pat, sizeof pat, "\n%s ", name);
	const char *l = d ? strstr(d, pat) : NULL;
	long v = l ? strtol(l + strlen(pat), NULL, 10) : -1;
	free(d);
	return v;
}

/* A node other than the leader of partition 0 and not in `not`. */
static int pick_victim(int not)
{
	struct pv v;
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
	const char *bin = getenv("PARLEY_BIN_DIR");
	IT_CHECK(bin, "PARLEY_BIN_DIR not set");
	snprintf(ctl_bin, sizeof ctl_bin, "%s/tools/parleyctl", bin);
	cluster_partitions = "16";
	cluster_follow0 = true;
	cluster_init("86");
	for (int i = 0; i < NODES; i++) {
		int k = 0;
		while (srv[i].extra[k])
			k++;
		srv[i].extra[k++] = "--admin-digest";
		srv[i].extra[k++] = "1";
		srv[i].extra[k++] = "--replica-replace-ms";
		srv[i].extra[k++] = REPLACE_MS;
		srv[i].extra[k] = NULL;
		node[i] = &srv[i];
		alive[i] = true;
		it_server_start(&srv[i]);
	}
	char *d0 = NULL;
	for (int t = 0; t < 100 && !d0; t++) {
		d0 = node_doc(0);
		if (!d0)
			it_sleep_ms(100);
	}
	static const char mpat[] = "\"meta\":{\"partitions\":";
	const char *mp = d0 ? strstr(d0, mpat) : NULL;
	nmeta = mp ? ids_of(mp + strlen(mpat), meta) : 0;
	free(d0);
	IT_CHECK(nmeta >= 1 && meta[0] == 0, "no meta group in /cluster");

	/* 1. founder 3 killed and removed: two nodes cannot hold three
	 * replicas; nodes 4 and 5 added fill every partition again */
	struct pv v0;
	for (int t = 0; t < 200 && leader_view(0, &v0) < 0; t++)
		it_sleep_ms(50);
	char body[2048];
	int code = 0;
	const char *b = NULL;
	if (getenv("RR_REMOVE3")) {
		it_server_kill(node[2]);
		alive[2] = false;
		code = admin_post("/cluster/remove-node?id=3", body,
				      sizeof body);
		b = strstr(body, "\r\n\r\n");
		printf("remove-node 3: %d %s", code, b ? b + 4 : body);
		IT_CHECK(code == 200 && strstr(body, "removed from all 16"),
			 "remove-node 3: %d %s", code, body);
		for (int p = 0; p < NP; p++) {
			struct pv v;
			int who = -1;
			for (int t = 0; t < 100 && who < 0; t++) {
				who = leader_view(p, &v);
				if (who < 0)
					it_sleep_ms(50);
			}
			IT_CHECK(who >= 0 && v.nv == 2 && !has(v.voters, v.nv, 3),
				 "partition %d: %d voters after the removal", p, v.nv);
		}
		printf("every partition has 2 voters (nodes 1 and 2)\n");
	}
	static char peers_x[2][256], pport[2][8], idx[2][4];
	uint16_t pp[2];
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
		const char *x[] = {"--node-id", idx[j], "--cluster-id", "86",
				   "--peer-port", pport[j], "--peers", peers_x[j],
				   "--founders", "1,2,3", "--raft-tick-ms", "20",
				   "--partitions", "16", "--loops", "1",
				   "--admin-digest", "1", "--replica-replace-ms",
				   REPLACE_MS, "--leader-placement", "follow0",
				   NULL};
		for (int k = 0; x[k]; k++)
			nx[j].extra[k] = x[k];
		it_server_start(&nx[j]);
		alive[3 + j] = true;
		char path[256];
		snprintf(path, sizeof path, "/cluster/add-node?id=%d&peer="
			 "127.0.0.1:%u&client=127.0.0.1:%u&admin=127.0.0.1:%u",
			 4 + j, pp[j], nx[j].port, nx[j].admin_port);
		code = admin_post(path, body, sizeof body);
		b = strstr(body, "\r\n\r\n");
		printf("add-node %d: %d %s", 4 + j, code, b ? b + 4 : body);
		IT_CHECK(code == 200 && strstr(body, "is a voter of"),
			 "add-node %d: %d %s", 4 + j, code, body);
	}
	IT_CHECK(!strstr(body, "could not be placed"), "after the adds: %s",
		 body);
	wait_healed(getenv("RR_REMOVE3") ? 3 : 0, 20, "after the adds");

	/* 2. one conversation per partition, a sender through them all */
	int found = 0;
	for (int k = 0; k < 20000 && found < NP; k++) {
		char name[32], key[96], okey[96];
		snprintf(name, sizeof name, "u%d", k);
		snprintf(key, sizeof key, "c/d:alice:%s", name);
		snprintf(okey, sizeof okey, "o/d:alice:%s", name);
		uint32_t p = part_of_key(key);
		/* its open record (o/<conv>) in another partition: with 3
		 * replicas of 5, a SEND's leader may hold no replica of it
		 * and must ask that partition's leader */
		if (conv[p][0] || part_of_key(okey) == p)
			continue;
		snprintf(conv[p], sizeof conv[p], "d:alice:%s", name);
		snprintf(peer[p], sizeof peer[p], "%s", name);
		found++;
	}
	IT_CHECK(found == NP, "no conversation for every partition (%d)", found);
	int apart = 0;
	for (int p = 0; p < NP; p++) {
		char okey[96];
		snprintf(okey, sizeof okey, "o/%s", conv[p]);
		struct pv cv, ov;
		int cl = leader_view(p, &cv);
		(void)leader_view((int)part_of_key(okey), &ov);
		apart += cl >= 0 && !has(ov.voters, ov.nv, cl + 1);
	}
	printf("%d of %d conversations: their leader holds no replica of "
	       "their open record's partition\n", apart, NP);
	make_live_list();
	{
		struct parley_client *c = client_of("alice", "setup");
		IT_OK(parley_client_connect(c));
		for (int p = 0; p < NP; p++) {
			const struct parley_conv *cv;
			IT_OK(parley_client_conv_open(c, peer[p], &cv));
			IT_CHECK(cv->conv.len == strlen(conv[p]) &&
				 !memcmp(cv->conv.p, conv[p], cv->conv.len),
				 "conversation id of %s", peer[p]);
		}
		parley_client_free(c);
	}
	pthread_t th;
	IT_CHECK(pthread_create(&th, NULL, sender, NULL) == 0);
	wait_acks_everywhere(3, "before any kill");

	/* 3. kill -9 a node: its replicas are re-placed by themselves */
	int K = pick_victim(-1);
	IT_CHECK(K >= 0, "no node to kill");
	printf("killing node%d\n", K + 1);
	it_server_kill(node[K]);
	alive[K] = false;
	make_live_list();
	wait_acks_everywhere(3, "after the first kill");
	wait_healed(K + 1, 60, "after the first kill");
	struct pv vl;
	int L = leader_view(0, &vl);
	IT_CHECK(L >= 0, "no leader of partition 0");
	char *doc = node_doc(L);
	char want[64];
	snprintf(want, sizeof want, "\"down\":[%d]", K + 1);
	IT_CHECK(doc && strstr(doc, want), "node%d's /cluster does not show "
		 "node%d down: %.600s", L + 1, K + 1,
		 doc && strstr(doc, "\"replace\"") ? strstr(doc, "\"replace\"")
						   : "(none)");
	printf("%.200s\n", strstr(doc, "\"replace\""));
	free(doc);
	long moves = metric_of(L, "parley_replica_replace_moves_total");
	long downs = metric_of(L, "parley_replica_replace_down_nodes");
	printf("node%d: parley_replica_replace_moves_total %ld, "
	       "parley_replica_replace_down_nodes %ld\n", L + 1, moves, downs);
	IT_CHECK(moves >= 1 && downs == 1, "metrics: moves %ld, down %ld",
		 moves, downs);
	char args[256];
	snprintf(args, sizeof args, "cluster status --admin 127.0.0.1:%u "
		 "--timeout-ms 3000", node[L]->admin_port);
	int rc = -1;
	char *out = ctl(args, &rc);
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
	make_live_list();
	wait_acks_everywhere(3, "after the second kill");
	printf("ok: every partition took SENDs with node%d and node%d dead\n",
	       K + 1, E + 1);

	/* 5. K comes back with its data and is placed again */
	it_server_start(node[K]);
	alive[K] = true;
	make_live_list();
	wait_healed(0, 60, "after node K came back (node E down)");
	int holds = 0;
	for (int p = 0; p < NP; p++) {
		struct pv v;
		if (!has(meta, nmeta, p) && leader_view(p, &v) >= 0 &&
		    has(v.voters, v.nv, K + 1))
			holds++;
	}
	printf("node%d is a voter of %d partitions again\n", K + 1, holds);
	IT_CHECK(holds >= 1, "node%d came back and holds no partition", K + 1);
	wait_acks_everywhere(3, "after node K came back");

	/* 6. nothing acknowledged lost; replicas equal */
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	int total = 0;
	for (int k = 0; k < NP; k++)
		total += acked_in(k);
	for (int k = 0; k < NP; k++)
		check_history(k);
	check_digests();
	long checks = 0, served = 0;
	for (int i = 0; i < ALL; i++)
		if (alive[i]) {
			checks += metric_of(i, "parley_tail_remote_checks_total");
			served += metric_of(i, "parley_tail_checks_served_total");
		}
	printf("remote existence checks on the live nodes: %ld asked, %ld "
	       "answered for others\n", checks, served);
	printf("ok: %d SENDs acknowledged over %d partitions, all in their "
	       "history; every partition's live replicas have the same "
	       "digest\n", total, NP);
	for (int i = 0; i < ALL; i++)
		if (alive[i])
			IT_CHECK(it_server_stop(node[i], SIGTERM, 10000) == 0,
				 "node%d did not stop cleanly", i + 1);
	return 0;
}
