/*
 * cluster_itest.h — a static cluster of NODES parleyd processes on
 * loopback, and the steps the cluster tests that drive real processes
 * through libparley share (every test_cluster_*.c but the netns ones).
 *
 * cluster_init() names the nodes node1..nodeN, picks their peer ports,
 * writes the client node list (nodes_list) and gives each node the
 * arguments of its place in the cluster (node id i+1, the cluster id,
 * every other node's peer address, a 20 ms Raft tick, 8 partitions, one
 * loop; with cluster_no_forward set before, `--forward 0`: a follower
 * answers NOTLEADER with the leader's address instead of forwarding, for
 * the tests of that redirect path and those that find the leader by it;
 * with cluster_follow0, `--leader-placement follow0`;
 * with cluster_rf set, `--replication-factor <it>`).
 * It starts nothing: the test starts (and kills, and restarts)
 * srv[i] with it_server_start, which reuses the arguments.
 *
 * The shared steps (below cluster_init): clients given the node list or
 * one node, finding the leader by a probe, admin POSTs asked of each node
 * until the leader of partition 0 answers, parleyctl, a partition's
 * leader as GET /cluster reports it and moving it, leadership counts,
 * waiting until every peer link is up, a node added later
 * (cluster_joiner_init), a sender thread recording every acknowledged
 * SEND (struct cluster_ledger) with its HISTORY and inbox checks, and a
 * partition's digest on a node. Each waits a bounded time and fails the
 * test (IT_CHECK) when what it waits for does not come.
 *
 * Ownership: everything here is static storage of the including test;
 * srv[i].extra points into it. Threads: only the ledger's sender thread
 * runs beside the test's; the ledger's mutex guards what it records.
 */
#ifndef PARLEY_CLUSTER_ITEST_H
#define PARLEY_CLUSTER_ITEST_H

#include <pthread.h>
#include <stdatomic.h>

#include "itest.h"

#ifndef NODES /* a test may found with more: #define NODES 5 first */
#define NODES 3
#endif

static struct it_server srv[NODES];
static char nodes_list[256]; /* "127.0.0.1:P1,127.0.0.1:P2,..." */
static bool cluster_no_forward; /* set before cluster_init: --forward 0 */
/* set before cluster_init: --replication-factor (NULL = the default, 3;
 * "0" = every node a voter of every partition, docs/CLUSTER.md §3.7) */
static const char *cluster_rf;
/* set before cluster_init: --partitions (NULL = 8) */
static const char *cluster_partitions;
/* set before cluster_init: --leader-placement follow0 (one node leads
 * every partition), for the tests whose scenario is that layout; the
 * others run with parleyd's default (spread) */
static bool cluster_follow0;

/* the founders' peer ports (cluster_init), for nodes added later */
static uint16_t cluster_peer_port[NODES];

static void cluster_init(const char *cluster_id)
{
	uint16_t *peer_port = cluster_peer_port;
	static char peers_arg[NODES][128];
	static char node_arg[NODES][8], port_arg[NODES][8];
	for (int i = 0; i < NODES; i++) {
		char name[16];
		snprintf(name, sizeof name, "node%d", i + 1);
		it_server_init(&srv[i], name);
		/* parleyd refuses a peer port equal to another of its ports
		 * (seen: "peer_port must ... differ from the other ports") */
		peer_port[i] = it_free_port_besides(&srv[i]);
	}
	int n = 0;
	for (int i = 0; i < NODES; i++)
		n += snprintf(nodes_list + n, sizeof nodes_list - (size_t)n,
			      "%s127.0.0.1:%u", i ? "," : "", srv[i].port);
	for (int i = 0; i < NODES; i++) {
		int m = 0;
		for (int j = 0; j < NODES; j++)
			if (j != i)
				m += snprintf(peers_arg[i] + m,
					      sizeof peers_arg[i] - (size_t)m,
					      "%s%d=127.0.0.1:%u", m ? "," : "",
					      j + 1, peer_port[j]);
		snprintf(node_arg[i], sizeof node_arg[i], "%d", i + 1);
		snprintf(port_arg[i], sizeof port_arg[i], "%u", peer_port[i]);
		const char *x[] = {"--node-id", node_arg[i], "--cluster-id",
				   cluster_id, "--peer-port", port_arg[i],
				   "--peers", peers_arg[i], "--raft-tick-ms", "20",
				   "--partitions",
				   cluster_partitions ? cluster_partitions : "8",
				   "--loops", "1", NULL};
		int k = 0;
		for (; x[k]; k++)
			srv[i].extra[k] = x[k];
		if (cluster_no_forward) {
			srv[i].extra[k++] = "--forward";
			srv[i].extra[k++] = "0";
		}
		if (cluster_rf) {
			srv[i].extra[k++] = "--replication-factor";
			srv[i].extra[k++] = cluster_rf;
		}
		if (cluster_follow0) {
			srv[i].extra[k++] = "--leader-placement";
			srv[i].extra[k++] = "follow0";
		}
		srv[i].extra[k] = NULL;
	}
}

/* ---- the shared steps of the cluster tests ------------------------------------------
 *
 * Everything below is what several tests did each in their own copy:
 * clients given the node list or one node, parleyctl, the admin POSTs
 * (asked of each node until one does not answer 409), a node added later
 * (node 4, node 5: the founders as --peers and --founders), the leader
 * of a partition as a node's GET /cluster reports it, leadership counts,
 * waiting until every peer link is up, a sender thread that records each
 * acknowledged SEND by seq (struct cluster_ledger) and the checks of a
 * HISTORY read and an inbox SYNCed from seq 1 against it.
 * Node ids: a node's id is its index + 1 in every array handed in here
 * (srv[i] is node i + 1; node 4 and 5 follow the founders).
 */

#define CLUSTER_UNUSED __attribute__((unused))

/* Appends the NULL-terminated flags x to s's extra arguments. */
static CLUSTER_UNUSED void cluster_extra_add(struct it_server *s,
					     const char *const *x)
{
	int k = 0;
	while (s->extra[k])
		k++;
	for (int j = 0; x[j]; j++) {
		IT_CHECK(k + 1 < (int)(sizeof s->extra / sizeof s->extra[0]),
			 "too many flags for %s", s->log);
		s->extra[k++] = x[j];
	}
	s->extra[k] = NULL;
}

/* A libparley client of user (not connected): given nodes (a node list)
 * it moves on when a node dies; given port instead (nodes NULL) it uses
 * that node alone, with no_reconnect never retrying (a probe, a read of
 * that node alone). Each call is bounded by deadline_ms; on_event and
 * on_receipt (may be NULL) get EVENTs and RECEIPTs with arg. */
static CLUSTER_UNUSED struct parley_client *
cluster_client_ev(const char *user, const char *device, const char *nodes,
		  uint16_t port, int deadline_ms, bool no_reconnect,
		  void (*on_event)(void *, const struct parley_event *),
		  void (*on_receipt)(void *, const struct parley_event *),
		  void *arg)
{
	char *tok = it_token_for(user);
	struct parley_client_opts o = {
		.nodes = nodes, .host = nodes ? NULL : "127.0.0.1",
		.port = nodes ? 0 : port, .token = tok, .device_id = device,
		.connect_timeout_ms = nodes ? 3000 : 2000,
		.request_timeout_ms = 3000, .call_deadline_ms = deadline_ms,
		.no_reconnect = no_reconnect, .backoff_min_ms = 50,
		.backoff_max_ms = 500, .on_event = on_event,
		.on_receipt = on_receipt, .user = arg};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	free(tok);
	return c;
}

/* A client of user given nodes (NULL: nodes_list), moving on when a node
 * dies, each call bounded by deadline_ms. */
static CLUSTER_UNUSED struct parley_client *
cluster_client_new(const char *user, const char *device, const char *nodes,
		   int deadline_ms)
{
	return cluster_client_ev(user, device, nodes ? nodes : nodes_list, 0,
				 deadline_ms, false, NULL, NULL, NULL);
}

/* A client of user given one node's client port alone. */
static CLUSTER_UNUSED struct parley_client *
cluster_client_at(uint16_t port, const char *user, const char *device,
		  int deadline_ms, bool no_reconnect)
{
	return cluster_client_ev(user, device, NULL, port, deadline_ms,
				 no_reconnect, NULL, NULL, NULL);
}

/* The running founder on which probe(c, arg) succeeds (0), asking each
 * one alone with a client of user that never moves (call deadline 300
 * ms: a follower answers NOTLEADER with forwarding off); skip: a node not
 * to ask (-1: none). Fails naming `what` when none does in 10 s. */
static CLUSTER_UNUSED int
cluster_find_leader_by(int skip, const char *user,
		       int (*probe)(struct parley_client *c, void *arg),
		       void *arg, const char *what)
{
	for (int round = 0; round < 100; round++) {
		for (int i = 0; i < NODES; i++) {
			if (i == skip || srv[i].pid <= 0)
				continue;
			struct parley_client *c = cluster_client_at(
				srv[i].port, user, "probe", 300, true);
			int rc = parley_client_connect(c);
			if (rc == 0)
				rc = probe(c, arg);
			parley_client_free(c);
			if (rc == 0)
				return i;
		}
		it_sleep_ms(100);
	}
	it_fail(__FILE__, __LINE__, "no node leads%s%s", *what ? " " : "", what);
	return -1;
}

/* a probe that only writes if this node leads: a conversation read on a
 * follower is local */
static CLUSTER_UNUSED int cluster_probe_conv_open(struct parley_client *c,
						  void *arg)
{
	const struct parley_conv *cv;
	return parley_client_conv_open(c, arg, &cv);
}

/* a probe that writes only where the conversation arg's partition is
 * led: a SEND to it */
static CLUSTER_UNUSED int cluster_probe_send(struct parley_client *c,
					     void *arg)
{
	return parley_client_send(c, arg, 1, "probe", 5, NULL);
}

/* The founder leading the partition of alice's conversation with carol
 * (cluster_find_leader_by with a CONV_OPEN). */
static CLUSTER_UNUSED int cluster_find_leader(int skip)
{
	return cluster_find_leader_by(skip, "alice", cluster_probe_conv_open,
				      (void *)"carol", "");
}

/* ---- admin port, parleyctl ------------------------------------------------------------ */

/* POST path (empty body) to an admin port; the whole answer (caller
 * frees), *code its status. */
static CLUSTER_UNUSED char *cluster_post(uint16_t port, const char *path,
					 int *code, int timeout_ms)
{
	char req[512];
	snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: t\r\n"
		 "Content-Length: 0\r\n\r\n", path);
	return it_http_raw(port, req, strlen(req), timeout_ms, code);
}

/* The body of an HTTP answer (after the blank line), or all of it. */
static CLUSTER_UNUSED const char *cluster_body_of(const char *r)
{
	const char *b = strstr(r, "\r\n\r\n");
	return b ? b + 4 : r;
}

/* POST path to each admin port (0: skipped) until one answers other than
 * 409 (not the leader of partition 0), at most 50 rounds 200 ms apart;
 * returns its code (0: none did), *who (may be NULL) its index, body its
 * answer. */
static CLUSTER_UNUSED int cluster_admin_post(const uint16_t *ports, int n,
					     const char *path, int *who,
					     char *body, size_t cap)
{
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < n; i++) {
			if (!ports[i])
				continue;
			int code = 0;
			char *r = cluster_post(ports[i], path, &code, 70000);
			snprintf(body, cap, "%s", r ? r : "");
			free(r);
			if (code && code != 409) {
				if (who)
					*who = i;
				return code;
			}
			if (round == 49) /* the last refusals, for the failure */
				fprintf(stderr, "POST %s on port %u: %d %s", path,
					ports[i], code, cluster_body_of(body));
		}
		it_sleep_ms(200);
	}
	return 0;
}

/* Runs build/tools/parleyctl with args; its stdout, and with `merge`
 * its stderr too (caller frees), and *rc its exit code (-1: killed). */
static CLUSTER_UNUSED char *cluster_ctl_run(const char *args, int *rc,
					    bool merge)
{
	const char *bin = getenv("PARLEY_BIN_DIR");
	IT_CHECK(bin, "PARLEY_BIN_DIR not set (run through ctest)");
	char cmd[1536];
	snprintf(cmd, sizeof cmd, "'%s/tools/parleyctl' %s%s", bin, args,
		 merge ? " 2>&1" : "");
	FILE *f = popen(cmd, "r");
	IT_CHECK(f, "popen %s", cmd);
	size_t cap = 1 << 16, n = 0, k;
	char *out = malloc(cap);
	IT_CHECK(out);
	while ((k = fread(out + n, 1, cap - n - 1, f)) > 0) {
		n += k;
		if (n + 1 == cap) {
			cap *= 2;
			out = realloc(out, cap);
			IT_CHECK(out);
		}
	}
	out[n] = '\0';
	int st = pclose(f);
	*rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return out;
}

/* parleyctl with args: stdout and stderr (caller frees), *rc. */
static CLUSTER_UNUSED char *cluster_ctl(const char *args, int *rc)
{
	return cluster_ctl_run(args, rc, true);
}

/* How often needle occurs in hay. */
static CLUSTER_UNUSED int cluster_count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* ---- leadership, links ------------------------------------------------------------------ */

/* The partition (of np) of a storage key, as pe_partition_of computes it. */
static CLUSTER_UNUSED uint32_t cluster_part_of(const char *key, uint32_t np)
{
	return (uint32_t)(parley_hash_key(key, strlen(key)) % np);
}

/* How many partitions s leads (parley_raft_partitions_led). */
static CLUSTER_UNUSED uint64_t cluster_led(const struct it_server *s)
{
	return it_metric_get(s->admin_port, "parley_raft_partitions_led");
}

/* The leader of partition p as s's GET /cluster reports it (0: none
 * known). */
static CLUSTER_UNUSED uint64_t cluster_leader_of(const struct it_server *s,
						 uint32_t p)
{
	int code = 0;
	char *t = it_http_get(s->admin_port, "/cluster", &code);
	IT_CHECK(code == 200 && t, "GET /cluster on %s: %d", s->log, code);
	char pat[48];
	snprintf(pat, sizeof pat, "{\"partition\":%u,", p);
	const char *x = strstr(t, pat);
	IT_CHECK(x, "partition %u missing from /cluster", p);
	const char *l = strstr(x, "\"leader\":");
	IT_CHECK(l);
	uint64_t v = strtoull(l + 9, NULL, 10);
	free(t);
	return v;
}

/* Moves partition p's leadership to `node` (its index + 1 in all[0..n)):
 * POST /cluster/transfer on its current leader until every running node
 * of all sees it (at most 20 s). */
static CLUSTER_UNUSED void cluster_place_in(struct it_server *const *all,
					    int n, uint32_t p, uint64_t node)
{
	IT_CHECK(node >= 1 && node <= (uint64_t)n, "node %" PRIu64, node);
	for (int t = 0; t < 200; t++) {
		bool every = true;
		for (int i = 0; i < n && every; i++)
			every = all[i]->pid <= 0 ||
				cluster_leader_of(all[i], p) == node;
		if (every)
			return;
		uint64_t cur = cluster_leader_of(all[node - 1], p);
		if (cur && cur != node && cur <= (uint64_t)n) {
			char path[96];
			snprintf(path, sizeof path, "/cluster/transfer?partition="
				 "%u&to=%" PRIu64, p, node);
			int code = 0;
			free(cluster_post(all[cur - 1]->admin_port, path, &code,
					  15000));
		}
		it_sleep_ms(100);
	}
	it_fail(__FILE__, __LINE__, "partition %u never moved to node%" PRIu64,
		p, node);
}

/* cluster_place_in over the founders (srv). */
static CLUSTER_UNUSED void cluster_place(uint32_t p, uint64_t node)
{
	struct it_server *all[NODES];
	for (int i = 0; i < NODES; i++)
		all[i] = &srv[i];
	cluster_place_in(all, NODES, p, node);
}

/* The index of the running node of all[0..n) that leads all `parts`
 * partitions (polled up to 20 s; fails when none does). */
static CLUSTER_UNUSED int cluster_leader_of_all(struct it_server *const *all,
						int n, uint64_t parts)
{
	for (int t = 0; t < 400; t++) {
		for (int i = 0; i < n; i++)
			if (all[i]->pid > 0 && cluster_led(all[i]) == parts)
				return i;
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "no node leads every partition");
	return -1;
}

/* Whether s's GET /cluster shows its link to node `id` up. */
static CLUSTER_UNUSED bool cluster_link_up(const struct it_server *s, int id)
{
	int code = 0;
	char *t = it_http_get(s->admin_port, "/cluster", &code);
	if (code != 200 || !t) {
		free(t);
		return false;
	}
	char pat[48];
	snprintf(pat, sizeof pat, "{\"node\":%d,\"state\":\"up\"", id);
	const char *peers = strstr(t, "\"peers\":[");
	bool up = peers && strstr(peers, pat);
	free(t);
	return up;
}

/* Waits (at most timeout_ms) until every running node of all[0..n)
 * shows its link to every other running one up in GET /cluster (node
 * id = index + 1): what a rebalance's share counts (docs/CLUSTER.md
 * §3.2: the voters of partition 0 with a link up). */
static CLUSTER_UNUSED void cluster_wait_links_up(struct it_server *const *all,
						 int n, int timeout_ms)
{
	for (int ms = 0;; ms += 50) {
		int down_from = -1, down_to = -1;
		for (int i = 0; i < n && down_from < 0; i++)
			for (int j = 0; j < n && down_from < 0; j++)
				if (i != j && all[i]->pid > 0 && all[j]->pid > 0 &&
				    !cluster_link_up(all[i], j + 1)) {
					down_from = i;
					down_to = j;
				}
		if (down_from < 0)
			return;
		IT_CHECK(ms < timeout_ms, "node%d's link to node%d not up in %d ms",
			 down_from + 1, down_to + 1, timeout_ms);
		it_sleep_ms(50);
	}
}

/* ---- a node added later ----------------------------------------------------------------- */

/* Nodes made by cluster_joiner_init, in order: each later one has the
 * earlier ones among its --peers too. */
static struct cluster_joiner {
	int id;
	uint16_t peer_port;
} cluster_joiners[IT_MAX_SERVERS];
static int cluster_njoiners;

/* Prepares s as node `id` (> NODES) of cluster_id, started empty: the
 * founders 1..NODES (and the nodes made here before) as --peers,
 * `--founders 1,..,NODES`, the founders' tick, partitions (NULL: 8) and
 * loops, then the NULL-terminated flags `more` (may be NULL). Starts
 * nothing; returns its peer port (for add-node's peer=). s may have been
 * through it_server_init already (its client port in a node list): its
 * ports are kept. */
static CLUSTER_UNUSED uint16_t cluster_joiner_init(struct it_server *s, int id,
						   const char *cluster_id,
						   const char *const *more)
{
	static char peers[IT_MAX_SERVERS][256], pport[IT_MAX_SERVERS][8],
		idx[IT_MAX_SERVERS][8], founders[32];
	int j = cluster_njoiners++;
	IT_CHECK(j < IT_MAX_SERVERS);
	char name[16];
	snprintf(name, sizeof name, "node%d", id);
	if (!s->data[0]) /* else its ports were picked before (a node list) */
		it_server_init(s, name);
	uint16_t pp = it_free_port_besides(s);
	cluster_joiners[j] = (struct cluster_joiner){id, pp};
	snprintf(pport[j], sizeof pport[j], "%u", pp);
	snprintf(idx[j], sizeof idx[j], "%d", id);
	int m = 0, f = 0;
	for (int i = 0; i < NODES; i++) {
		m += snprintf(peers[j] + m, sizeof peers[j] - (size_t)m,
			      "%s%d=127.0.0.1:%u", i ? "," : "", i + 1,
			      cluster_peer_port[i]);
		f += snprintf(founders + f, sizeof founders - (size_t)f, "%s%d",
			      i ? "," : "", i + 1);
	}
	for (int i = 0; i < j; i++)
		m += snprintf(peers[j] + m, sizeof peers[j] - (size_t)m,
			      ",%d=127.0.0.1:%u", cluster_joiners[i].id,
			      cluster_joiners[i].peer_port);
	const char *x[] = {"--node-id", idx[j], "--cluster-id", cluster_id,
			   "--peer-port", pport[j], "--peers", peers[j],
			   "--founders", founders, "--raft-tick-ms", "20",
			   "--partitions",
			   cluster_partitions ? cluster_partitions : "8",
			   "--loops", "1", NULL};
	s->extra[0] = NULL;
	cluster_extra_add(s, x);
	if (more)
		cluster_extra_add(s, more);
	return pp;
}

/* "/cluster/add-node?id=..&peer=..&client=..&admin=.." for s (node id,
 * its peer port). */
static CLUSTER_UNUSED void cluster_add_path(char *out, size_t cap, int id,
					    const struct it_server *s,
					    uint16_t peer_port)
{
	snprintf(out, cap, "/cluster/add-node?id=%d&peer=127.0.0.1:%u&client="
		 "127.0.0.1:%u&admin=127.0.0.1:%u", id, peer_port, s->port,
		 s->admin_port);
}

/* ---- a sender that records every acknowledged SEND ------------------------------------ */

/* One conversation's acknowledged SENDs by seq, filled by a sender thread
 * (cluster_ledger_start) sending with its own client_msg_ids (the counter
 * i and the run's tag in byte 15; a SEND whose outcome is unknown is not
 * counted and its id not reused), checked against HISTORY reads
 * (cluster_ledger_history) and inbox SYNCs (cluster_ledger_inbox).
 * Set conv, user, nodes (or port), max (seqs 1..max-1), pause_ms, tag
 * and deadline_ms, then cluster_ledger_start. mu guards acked / id /
 * nacked; the thread owns its client. */
struct cluster_ledger {
	char conv[96];
	const char *user;  /* the sender (a member of conv) */
	const char *nodes; /* its client's node list, or NULL: port alone */
	uint16_t port;
	int max, pause_ms, deadline_ms;
	uint8_t tag; /* client_msg_id[15] of this run */
	pthread_mutex_t mu;
	bool *acked;      /* [seq - 1] */
	uint8_t (*id)[16]; /* [seq - 1] the acknowledged message's id */
	int nacked;
	int failed;    /* SENDs with no outcome (the first few printed) */
	uint32_t next; /* the next id counter (kept across runs) */
	atomic_bool stop;
	pthread_t th;
};

static CLUSTER_UNUSED void *cluster_ledger_main(void *arg)
{
	struct cluster_ledger *l = arg;
	struct parley_client *c =
		l->nodes ? cluster_client_new(l->user, "sender", l->nodes,
					      l->deadline_ms)
			 : cluster_client_at(l->port, l->user, "sender",
					     l->deadline_ms, false);
	while (!atomic_load(&l->stop) && l->next < (uint32_t)l->max - 1) {
		uint32_t i = l->next++;
		uint8_t id[16] = {0};
		memcpy(id, &i, sizeof i);
		id[15] = l->tag;
		char body[32];
		int bl = snprintf(body, sizeof body, "m%u", i);
		struct parley_send_result r;
		int rc = parley_client_send_id(c, l->conv, id, 1, body,
					       (size_t)bl, &r);
		if (rc) { /* outcome unknown: not counted */
			if (l->failed++ < 3)
				fprintf(stderr, "%s's SEND %u to %s: %s (not "
					"counted)\n", l->user, i, l->conv,
					parley_strerror(rc));
			continue;
		}
		IT_CHECK(r.seq >= 1 && r.seq < (uint64_t)l->max, "seq %" PRIu64,
			 r.seq);
		pthread_mutex_lock(&l->mu);
		IT_CHECK(!l->acked[r.seq - 1] ||
			 !memcmp(l->id[r.seq - 1], id, 16),
			 "seq %" PRIu64 " acknowledged for two messages", r.seq);
		l->acked[r.seq - 1] = true;
		memcpy(l->id[r.seq - 1], id, 16);
		l->nacked++;
		pthread_mutex_unlock(&l->mu);
		it_sleep_ms((unsigned)l->pause_ms);
	}
	parley_client_free(c);
	return NULL;
}

/* Starts (or, after cluster_ledger_stop, restarts) the sender thread. */
static CLUSTER_UNUSED void cluster_ledger_start(struct cluster_ledger *l)
{
	if (!l->acked) {
		pthread_mutex_init(&l->mu, NULL);
		l->acked = calloc((size_t)l->max, sizeof *l->acked);
		l->id = calloc((size_t)l->max, sizeof *l->id);
		IT_CHECK(l->acked && l->id);
	}
	atomic_store(&l->stop, false);
	IT_CHECK(pthread_create(&l->th, NULL, cluster_ledger_main, l) == 0);
}

static CLUSTER_UNUSED void cluster_ledger_stop(struct cluster_ledger *l)
{
	atomic_store(&l->stop, true);
	pthread_join(l->th, NULL);
}

static CLUSTER_UNUSED int cluster_ledger_acked(struct cluster_ledger *l)
{
	pthread_mutex_lock(&l->mu);
	int n = l->nacked;
	pthread_mutex_unlock(&l->mu);
	return n;
}

/* Waits (at most 30 s) for `more` acknowledgements; fails naming `when`. */
static CLUSTER_UNUSED void cluster_ledger_wait_more(struct cluster_ledger *l,
						   int more, const char *when)
{
	int want = cluster_ledger_acked(l) + more;
	for (int t = 0; t < 600 && cluster_ledger_acked(l) < want; t++)
		it_sleep_ms(50);
	IT_CHECK(cluster_ledger_acked(l) >= want, "no SEND acknowledged %s "
		 "(%d acked)", when, cluster_ledger_acked(l));
}

/* HISTORY of the conversation through one node's client port alone:
 * every message at most once, each acknowledged seq holding the message
 * acknowledged with it (an unacknowledged SEND, outcome unknown, may be
 * there), and with `final` every acknowledged seq present. Returns how
 * many messages it holds (-1: the node cannot answer); who names the
 * node in failures; seen_out (may be NULL; l->max entries) gets which
 * seqs (seen_out[seq - 1]) the history holds. */
static CLUSTER_UNUSED int cluster_ledger_history_seen(struct cluster_ledger *l,
						      uint16_t port, bool final,
						      const char *who,
						      bool *seen_out)
{
	struct parley_client *c = cluster_client_at(port, l->user, "reader",
						     3000, true);
	bool *seen = calloc((size_t)l->max, sizeof *seen);
	IT_CHECK(seen);
	int n = 0;
	uint64_t before = 0;
	if (parley_client_connect(c)) {
		parley_client_free(c);
		free(seen);
		return -1;
	}
	pthread_mutex_lock(&l->mu);
	for (;;) {
		const struct parley_history_page *pg;
		if (parley_client_history(c, l->conv, before, 100, &pg)) {
			n = -1;
			break;
		}
		for (uint16_t k = 0; k < pg->count; k++) {
			const struct parley_hist_msg *m = &pg->msgs[k];
			IT_CHECK(m->seq >= 1 && m->seq < (uint64_t)l->max,
				 "%s: seq %" PRIu64, who, m->seq);
			IT_CHECK(!seen[m->seq - 1], "%s: seq %" PRIu64 " twice",
				 who, m->seq);
			seen[m->seq - 1] = true;
			IT_CHECK(!l->acked[m->seq - 1] ||
				 !memcmp(l->id[m->seq - 1], m->client_msg_id, 16),
				 "%s seq %" PRIu64 ": another message than the "
				 "one acknowledged", who, m->seq);
			n++;
		}
		if (!pg->count || !pg->next_before_seq)
			break;
		before = pg->next_before_seq;
	}
	if (final && n >= 0)
		for (int s = 0; s < l->max; s++)
			IT_CHECK(!l->acked[s] || seen[s], "%s lacks acknowledged "
				 "seq %d", who, s + 1);
	pthread_mutex_unlock(&l->mu);
	if (seen_out)
		memcpy(seen_out, seen, (size_t)l->max * sizeof *seen);
	parley_client_free(c);
	free(seen);
	return n;
}

/* cluster_ledger_history_seen without the set of seqs. */
static CLUSTER_UNUSED int cluster_ledger_history(struct cluster_ledger *l,
						 uint16_t port, bool final,
						 const char *who)
{
	return cluster_ledger_history_seen(l, port, final, who, NULL);
}

/* ---- inboxes ----------------------------------------------------------------------------- */

/* The events a device received (on_event / on_receipt), in order. */
struct cluster_inbox {
	uint64_t n, cap;
	struct cluster_inbox_ev {
		uint64_t inbox_seq, conv_seq;
		uint16_t kind;
		char conv[96];
	} *v;
};

static CLUSTER_UNUSED void cluster_inbox_on_event(void *user,
						  const struct parley_event *ev)
{
	struct cluster_inbox *b = user;
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 256;
		b->v = realloc(b->v, b->cap * sizeof *b->v);
		IT_CHECK(b->v);
	}
	struct cluster_inbox_ev *x = &b->v[b->n++];
	x->inbox_seq = ev->inbox_seq;
	x->conv_seq = ev->conv_seq;
	x->kind = ev->kind;
	snprintf(x->conv, sizeof x->conv, "%.*s", (int)ev->conv.len, ev->conv.p);
}

/* A new device of `user` (a member of the ledger's conversation) SYNCs
 * its inbox from seq 1 through nodes (a node list) or, with nodes NULL,
 * port alone: inbox seqs dense from 1 (no gap, no repeat), each
 * acknowledged message of the conversation there exactly once. */
static CLUSTER_UNUSED void cluster_ledger_inbox(struct cluster_ledger *l,
						const char *user,
						const char *nodes,
						uint16_t port)
{
	struct cluster_inbox b = {0};
	struct parley_client *c = cluster_client_ev(
		user, "inbox-check", nodes, port, 30000, false,
		cluster_inbox_on_event, cluster_inbox_on_event, &b);
	IT_OK(parley_client_connect(c));
	IT_OK(parley_client_subscribe(c, 1, NULL));
	int *cnt = calloc((size_t)l->max, sizeof *cnt);
	IT_CHECK(cnt);
	pthread_mutex_lock(&l->mu);
	int want = l->nacked, got = 0;
	for (int ms = 0; ms < 30000 && got < want; ms += 50) {
		(void)parley_client_poll(c, 50);
		memset(cnt, 0, (size_t)l->max * sizeof *cnt);
		got = 0;
		for (uint64_t i = 0; i < b.n; i++)
			if (b.v[i].kind == PARLEY_EV_MESSAGE &&
			    !strcmp(b.v[i].conv, l->conv) && b.v[i].conv_seq >= 1 &&
			    b.v[i].conv_seq < (uint64_t)l->max &&
			    l->acked[b.v[i].conv_seq - 1] &&
			    !cnt[b.v[i].conv_seq - 1]++)
				got++;
	}
	(void)parley_client_poll(c, 300);
	for (uint64_t i = 0; i < b.n; i++)
		IT_CHECK(b.v[i].inbox_seq == i + 1, "%s: event %" PRIu64 " has "
			 "inbox seq %" PRIu64 " (a gap or a repeat)", user, i,
			 b.v[i].inbox_seq);
	memset(cnt, 0, (size_t)l->max * sizeof *cnt);
	for (uint64_t i = 0; i < b.n; i++)
		if (b.v[i].kind == PARLEY_EV_MESSAGE && !strcmp(b.v[i].conv, l->conv))
			IT_CHECK(b.v[i].conv_seq >= 1 &&
				 b.v[i].conv_seq < (uint64_t)l->max &&
				 !cnt[b.v[i].conv_seq - 1]++, "%s: message %" PRIu64
				 " twice in the inbox", user, b.v[i].conv_seq);
	for (int q = 0; q < l->max; q++)
		IT_CHECK(!l->acked[q] || cnt[q] == 1, "%s: acknowledged message %d "
			 "lost from the inbox (%d of %d there)", user, q + 1, got,
			 want);
	pthread_mutex_unlock(&l->mu);
	printf("%s's inbox: %" PRIu64 " events, each of the %d acknowledged "
	       "messages once\n", user, b.n, want);
	parley_client_free(c);
	free(cnt);
	free(b.v);
}

/* "applied A digest D" of partition p in s's GET /debug/digest (parleyd
 * started with --admin-digest 1); false when the node has none yet. */
static CLUSTER_UNUSED bool cluster_digest_of(const struct it_server *s, int p,
					     char *out, size_t cap)
{
	int code = 0;
	char *d = it_http_get(s->admin_port, "/debug/digest", &code);
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

/* ---- a partition as GET /cluster shows it (placement, §3.7) -------------------------- */

#define CLUSTER_MAX_VOTERS 9

/* One node's view of one partition: its role and term there, the
 * group's configuration (voters, learners) and the placement map's
 * record of it as text ("placement":{...}, empty with replication
 * factor 0). */
struct cluster_pv {
	bool found, leader;
	uint64_t term;
	int voters[CLUSTER_MAX_VOTERS], nv, learners[CLUSTER_MAX_VOTERS], nl;
	char placement[160];
};

/* The ids of a JSON array of numbers at a ("[1,2,3]"), at most
 * CLUSTER_MAX_VOTERS. */
static CLUSTER_UNUSED int cluster_ids_of(const char *a, int *out)
{
	int n = 0;
	if (!a || *a != '[')
		return 0;
	for (a++; *a && *a != ']' && n < CLUSTER_MAX_VOTERS;) {
		char *e;
		long v = strtol(a, &e, 10);
		if (e == a)
			break;
		out[n++] = (int)v;
		a = *e == ',' ? e + 1 : e;
	}
	return n;
}

static CLUSTER_UNUSED bool cluster_has(const int *a, int n, int x)
{
	for (int i = 0; i < n; i++)
		if (a[i] == x)
			return true;
	return false;
}

/* Partition p in a GET /cluster document (doc may be NULL). */
static CLUSTER_UNUSED void cluster_part_view(const char *doc, int p,
					     struct cluster_pv *v)
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
	IT_CHECK(o);
	v->found = true;
	v->leader = strstr(o, "\"role\":\"leader\"") != NULL;
	const char *t = strstr(o, "\"term\":");
	v->term = t ? strtoull(t + 7, NULL, 10) : 0;
	const char *pl = strstr(o, "\"placement\":");
	/* the configuration's arrays come before the placement object */
	const char *vo = strstr(o, "],\"voters\":");
	if (vo && (!pl || vo < pl))
		v->nv = cluster_ids_of(vo + 11, v->voters);
	const char *le = strstr(o, "],\"learners\":");
	if (le && (!pl || le < pl))
		v->nl = cluster_ids_of(le + 13, v->learners);
	if (pl) {
		const char *pe = strchr(pl, '}');
		snprintf(v->placement, sizeof v->placement, "%.*s",
			 pe ? (int)(pe - pl) : 0, pl);
	}
	free(o);
}

/* s's GET /cluster (caller frees), NULL when it does not answer 200. */
static CLUSTER_UNUSED char *cluster_doc(const struct it_server *s)
{
	int code = 0;
	char *b = it_http_get(s->admin_port, "/cluster", &code);
	if (code != 200) {
		free(b);
		return NULL;
	}
	return b;
}

/* The leader's view of partition p among the live nodes of all[0..n)
 * (alive[i]; NULL: those running), the highest term's if two say they
 * lead; returns the leader's index (-1: none). */
static CLUSTER_UNUSED int cluster_leader_view(struct it_server *const *all,
					      int n, const bool *alive, int p,
					      struct cluster_pv *out)
{
	int who = -1;
	memset(out, 0, sizeof *out);
	for (int i = 0; i < n; i++) {
		if (alive ? !alive[i] : all[i]->pid <= 0)
			continue;
		char *d = cluster_doc(all[i]);
		struct cluster_pv v;
		cluster_part_view(d, p, &v);
		free(d);
		if (v.found && v.leader && (who < 0 || v.term > out->term)) {
			*out = v;
			who = i;
		}
	}
	return who;
}

/* The meta group's partitions as s's GET /cluster lists them. */
static CLUSTER_UNUSED int cluster_meta_parts(const struct it_server *s,
					     int *out)
{
	char *d = cluster_doc(s);
	static const char pat[] = "\"meta\":{\"partitions\":";
	const char *m = d ? strstr(d, pat) : NULL;
	int n = m ? cluster_ids_of(m + strlen(pat), out) : 0;
	free(d);
	return n;
}

/* Waits (at most 10 s) until the live voters of partition p (voters[0..nv),
 * ids; node id = index + 1 in all) report the same applied index and
 * digest; fails naming the two that differ. */
static CLUSTER_UNUSED void cluster_same_digest(struct it_server *const *all,
					       const bool *alive, int p,
					       const int *voters, int nv)
{
	bool same = false;
	char first[96] = "", other[96] = "";
	int fi = -1, oi = -1;
	for (int t = 0; t < 200 && !same; t++) {
		same = true;
		first[0] = '\0';
		for (int k = 0; k < nv && same; k++) {
			int i = voters[k] - 1;
			if (alive ? !alive[i] : all[i]->pid <= 0)
				continue;
			oi = i;
			if (!cluster_digest_of(all[i], p, other, sizeof other)) {
				snprintf(other, sizeof other, "(no digest)");
				same = false;
			} else if (!first[0]) {
				snprintf(first, sizeof first, "%s", other);
				fi = i;
			} else if (strcmp(first, other)) {
				same = false;
			}
		}
		if (!same)
			it_sleep_ms(50);
	}
	IT_CHECK(same, "partition %d: replicas differ (node%d %s vs node%d %s)",
		 p, fi + 1, first, oi + 1, other);
}

#endif /* PARLEY_CLUSTER_ITEST_H */
