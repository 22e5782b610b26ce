/*
 * test_peer_raft.c — Raft groups over real peer links (server/peer.c).
 *
 * In one process, groups of 3 and 5 pure Raft cores (engine raft.h, ticks
 * injected by this driver every RN_TICK_MS of its monotonic clock), each
 * with its own peer transport on a loopback port:
 *   1. a leader is elected and known to every node;
 *   2. a few thousand proposals are committed and applied everywhere, and
 *      the logs are equal through the commit index;
 *   3. one leader->follower socket is closed (peer_disconnect): the link
 *      comes back (reconnects counted) and replication goes on;
 *   4. the leader's transport is stopped (its sockets closed; the core
 *      keeps ticking, cut off): the others elect a new leader and commit
 *      more; the transport is restarted on the same port: the old leader
 *      rejoins as a follower and catches up; logs equal again.
 * Then 3 nodes each run 8 groups over ONE transport per node (messages
 * routed by group; every group's ready messages of a round go out in one
 * coalesced batch per node pair), through a stopped and restarted
 * transport. The 3-node case runs again over mutual TLS (certificates made by
 * tools/dev-cluster-certs.sh), and with one node acting as a node built
 * before the advisory Raft flags (NOACK). Assertions are on behaviour only; waits
 * have generous deadlines. tests/cluster/peer_node.c runs the same node
 * (raft_node.h) one per process inside network namespaces.
 *
 * The seed is printed; PARLEY_SEED=N replays one.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "raft_node.h"

#define MAX_NODES 5
#define WAIT_S 60

struct cluster {
	uint32_t n;
	struct rn nodes[MAX_NODES];
	uint16_t ports[MAX_NODES];
	bool tls;
	char certdir[256];
	uint64_t last_tick;
	struct parley_rng rng;
	uint64_t proposed;
};

static uint64_t mono_ms(void)
{
	return parley_mono_ns() / 1000000u;
}

/* A node acting as one built before the advisory Raft flags (peer.h
 * contract item 8: its transport announces none, and its decoder would
 * refuse a frame carrying one): the messages it got with a flag outside
 * RAFT_MSGF_BASE, and the NOACK APPENDs the other nodes got. */
static uint64_t g_old_id, g_old_bad, g_noack_seen;

static void on_recv_any(void *arg, uint64_t from, const struct raft_msg *m,
			uint32_t k)
{
	const struct rn *n = arg;
	for (uint32_t i = 0; i < k; i++) {
		if (n->id == g_old_id && (m[i].flags & ~RAFT_MSGF_BASE))
			g_old_bad++;
		if (n->id != g_old_id && (m[i].flags & RAFT_MSGF_NOACK))
			g_noack_seen++;
	}
	rn_on_recv(arg, from, m, k);
}

static int transport_start(struct cluster *cl, uint32_t i, uint16_t port)
{
	struct rn *n = &cl->nodes[i];
	char ca[300], cert[300], key[300];
	struct peer_config pc = {0};
	pc.cluster_id = 0xC1A5;
	pc.node_id = n->id;
	pc.listen_addr = "127.0.0.1";
	pc.listen_port = port;
	pc.read_deadline_ms = 1500;
	pc.ping_interval_ms = 100;
	pc.backoff_min_ms = 20;
	pc.backoff_max_ms = 400;
	pc.rng_seed = parley_rng_next(&cl->rng);
	pc.on_recv = on_recv_any;
	pc.arg = n;
	if (n->id == g_old_id)
		pc.raft_flags = RAFT_MSGF_BASE;
	if (cl->tls) {
		snprintf(ca, sizeof ca, "%s/ca.pem", cl->certdir);
		snprintf(cert, sizeof cert, "%s/node-%" PRIu64 ".pem", cl->certdir, n->id);
		snprintf(key, sizeof key, "%s/node-%" PRIu64 ".key", cl->certdir, n->id);
		pc.tls_ca = ca;
		pc.tls_cert = cert;
		pc.tls_key = key;
	}
	int rc = peer_new(&pc, &n->p);
	if (rc < 0)
		return rc;
	cl->ports[i] = peer_port(n->p);
	return 0;
}

static void transport_add_all(struct cluster *cl, uint32_t i)
{
	for (uint32_t j = 0; j < cl->n; j++)
		if (j != i && peer_add(cl->nodes[i].p, cl->nodes[j].id, "127.0.0.1",
				       cl->ports[j]) < 0)
			rn_die("peer_add");
}

/* One round: transports, ticks, readies; waits a little when idle. */
static void step(struct cluster *cl)
{
	int delivered = 0;
	for (uint32_t i = 0; i < cl->n; i++)
		if (cl->nodes[i].p)
			delivered += peer_poll(cl->nodes[i].p, 0);
	uint64_t now = mono_ms();
	if (now - cl->last_tick >= RN_TICK_MS) {
		cl->last_tick = now;
		for (uint32_t i = 0; i < cl->n; i++)
			raft_tick(cl->nodes[i].r);
	}
	for (uint32_t i = 0; i < cl->n; i++)
		rn_process(&cl->nodes[i]);
	if (delivered == 0) {
		struct pollfd pf[MAX_NODES];
		nfds_t k = 0;
		for (uint32_t i = 0; i < cl->n; i++)
			if (cl->nodes[i].p)
				pf[k++] = (struct pollfd){.fd = peer_fd(cl->nodes[i].p),
							  .events = POLLIN};
		poll(pf, k, 1);
	}
}

/* The leader every node in `mask` agrees on (and that leads), or 0. */
static uint64_t agreed_leader(struct cluster *cl, uint32_t mask)
{
	uint64_t lead = 0;
	for (uint32_t i = 0; i < cl->n; i++) {
		if (!(mask & (1u << i)))
			continue;
		uint64_t l = raft_leader(cl->nodes[i].r);
		if (!l || (lead && l != lead))
			return 0;
		lead = l;
	}
	if (!lead || !(mask & (1u << (lead - 1))) ||
	    raft_role(cl->nodes[lead - 1].r) != RAFT_LEADER)
		return 0;
	/* every member of mask in the leader's term */
	for (uint32_t i = 0; i < cl->n; i++)
		if ((mask & (1u << i)) &&
		    raft_term(cl->nodes[i].r) != raft_term(cl->nodes[lead - 1].r))
			return 0;
	return lead;
}

static uint64_t wait_leader(struct cluster *cl, uint32_t mask, const char *what)
{
	uint64_t deadline = mono_ms() + WAIT_S * 1000u;
	while (mono_ms() < deadline) {
		step(cl);
		uint64_t l = agreed_leader(cl, mask);
		if (l)
			return l;
	}
	fprintf(stderr, "no agreed leader: %s\n", what);
	for (uint32_t i = 0; i < cl->n; i++)
		fprintf(stderr, "  node %" PRIu64 " role=%s term=%" PRIu64 " leader=%" PRIu64 "\n",
			cl->nodes[i].id, raft_role_name(raft_role(cl->nodes[i].r)),
			raft_term(cl->nodes[i].r), raft_leader(cl->nodes[i].r));
	rn_die(what);
	return 0;
}

/* Proposes until `target` NORMAL entries are applied on the leader of
 * `mask` (following leader changes), then waits for every node in mask to
 * apply everything the leader committed. */
static void replicate(struct cluster *cl, uint32_t mask, uint64_t target,
		      const char *what)
{
	uint64_t deadline = mono_ms() + WAIT_S * 1000u;
	while (mono_ms() < deadline) {
		uint64_t l = agreed_leader(cl, mask);
		if (l) {
			struct rn *ld = &cl->nodes[l - 1];
			for (int k = 0; k < 64 && ld->normal_applied + 0 < target; k++) {
				int rc = rn_propose(ld, cl->proposed, &cl->rng);
				if (rc == -PARLEY_EFULL || rc == -PARLEY_ENOTLEADER)
					break;
				if (rc < 0)
					rn_die("raft_propose");
				cl->proposed++;
			}
			if (ld->normal_applied >= target) {
				bool all = true;
				for (uint32_t i = 0; i < cl->n; i++)
					if ((mask & (1u << i)) &&
					    (cl->nodes[i].applied < raft_commit(ld->r) ||
					     raft_commit(cl->nodes[i].r) < raft_commit(ld->r)))
						all = false;
				if (all)
					return;
			}
		}
		step(cl);
	}
	fprintf(stderr, "replication did not finish: %s\n", what);
	for (uint32_t i = 0; i < cl->n; i++)
		fprintf(stderr, "  node %" PRIu64 " role=%s commit=%" PRIu64 " applied=%" PRIu64 " normal=%" PRIu64 "\n",
			cl->nodes[i].id, raft_role_name(raft_role(cl->nodes[i].r)),
			raft_commit(cl->nodes[i].r), cl->nodes[i].applied,
			cl->nodes[i].normal_applied);
	rn_die(what);
}

/* Logs of the nodes in mask are equal through the smallest commit index,
 * and their applied digests agree where the applied indexes do. */
static void check_logs(struct cluster *cl, uint32_t mask, const char *what)
{
	uint64_t c = UINT64_MAX;
	for (uint32_t i = 0; i < cl->n; i++)
		if ((mask & (1u << i)) && raft_commit(cl->nodes[i].r) < c)
			c = raft_commit(cl->nodes[i].r);
	uint32_t ref = UINT32_MAX;
	for (uint32_t i = 0; i < cl->n; i++) {
		if (!(mask & (1u << i)))
			continue;
		struct rn *n = &cl->nodes[i];
		if (n->n < c)
			rn_die("a node's log is shorter than the commit index");
		if (ref == UINT32_MAX) {
			ref = i;
			continue;
		}
		struct rn *r = &cl->nodes[ref];
		for (uint64_t k = 0; k < c; k++) {
			const struct raft_entry *a = &r->log[k], *b = &n->log[k];
			if (a->term != b->term || a->csum != b->csum || a->len != b->len ||
			    memcmp(a->data, b->data, a->len) != 0) {
				fprintf(stderr, "logs differ at index %" PRIu64 " (nodes %" PRIu64 ", %" PRIu64 ")\n",
					k + 1, r->id, n->id);
				rn_die(what);
			}
		}
		if (n->applied == r->applied && n->digest != r->digest)
			rn_die("applied digests differ at the same index");
	}
	printf("  %s: logs equal through commit %" PRIu64 "\n", what, c);
}

static void print_links(struct cluster *cl, uint32_t i)
{
	struct peer_link_stats st[MAX_NODES];
	if (!cl->nodes[i].p)
		return;
	int k = peer_stats(cl->nodes[i].p, st, MAX_NODES, NULL);
	for (int j = 0; j < k; j++)
		printf("    node %" PRIu64 " -> %" PRIu64 ": %s frames out/in %" PRIu64 "/%" PRIu64
		       " reconnects %" PRIu64 " drops hb/down %" PRIu64 "/%" PRIu64
		       " raft flags %#x, cleared for it %" PRIu64 "\n",
		       cl->nodes[i].id, st[j].node, peer_link_state_name(st[j].state),
		       st[j].frames_out, st[j].frames_in, st[j].reconnects,
		       st[j].drops_hb, st[j].drops_down, st[j].raft_flags,
		       st[j].flags_cleared);
}

static void run_cluster(uint32_t nn, bool tls, const char *certdir,
			uint64_t seed, uint64_t bulk)
{
	printf("cluster of %u over %s, seed %" PRIu64 "\n", nn,
	       tls ? "mutual TLS" : "plain TCP", seed);
	struct cluster *cl = calloc(1, sizeof *cl);
	cl->n = nn;
	cl->tls = tls;
	if (certdir)
		snprintf(cl->certdir, sizeof cl->certdir, "%s", certdir);
	cl->rng.s = seed;
	cl->last_tick = mono_ms();
	for (uint32_t i = 0; i < nn; i++) {
		rn_init(&cl->nodes[i], i + 1, nn, seed);
		if (transport_start(cl, i, 0) < 0)
			rn_die("transport_start");
	}
	for (uint32_t i = 0; i < nn; i++)
		transport_add_all(cl, i);
	uint32_t all = (1u << nn) - 1;

	/* 1, 2: election and bulk replication */
	uint64_t l = wait_leader(cl, all, "initial election");
	printf("  leader %" PRIu64 " elected\n", l);
	replicate(cl, all, bulk, "bulk replication");
	check_logs(cl, all, "after bulk");

	/* 3: close one leader->follower socket; the link must come back */
	l = wait_leader(cl, all, "leader before the link break");
	uint64_t f = l % nn + 1;
	uint64_t lo = l < f ? l : f, hi = l < f ? f : l; /* lo dials hi */
	struct peer_link_stats before, after;
	if (peer_link_stats(cl->nodes[lo - 1].p, hi, &before) < 0)
		rn_die("peer_link_stats");
	if (peer_disconnect(cl->nodes[l - 1].p, f) < 0)
		rn_die("peer_disconnect");
	replicate(cl, all, bulk + 200, "replication across a closed socket");
	uint64_t dl = mono_ms() + WAIT_S * 1000u;
	for (;;) {
		peer_link_stats(cl->nodes[lo - 1].p, hi, &after);
		if (after.reconnects > before.reconnects && after.state == PEER_LINK_UP)
			break;
		if (mono_ms() > dl)
			rn_die("the closed link did not reconnect");
		step(cl);
	}
	printf("  link %" PRIu64 "<->%" PRIu64 " closed and reconnected (reconnects %" PRIu64 " -> %" PRIu64 ")\n",
	       lo, hi, before.reconnects, after.reconnects);
	check_logs(cl, all, "after reconnect");

	/* 4: stop the leader's transport: re-election among the others */
	l = wait_leader(cl, all, "leader before stopping its transport");
	uint32_t rest = all & ~(1u << (l - 1));
	uint16_t lport = cl->ports[l - 1];
	peer_free(cl->nodes[l - 1].p);
	cl->nodes[l - 1].p = NULL;
	uint64_t nl = wait_leader(cl, rest, "re-election without the old leader");
	if (nl == l)
		rn_die("the cut-off leader is still the leader");
	printf("  transport of leader %" PRIu64 " stopped; node %" PRIu64 " elected\n", l, nl);
	replicate(cl, rest, bulk + 700, "replication without the old leader");
	uint64_t commit_without = raft_commit(cl->nodes[nl - 1].r);
	/* check-quorum: the cut-off leader steps down on its own */
	uint64_t sd = mono_ms() + WAIT_S * 1000u;
	while (raft_role(cl->nodes[l - 1].r) == RAFT_LEADER) {
		if (mono_ms() > sd)
			rn_die("the cut-off node still believes it leads (check-quorum)");
		step(cl);
	}

	/* restart it on the same port: it rejoins and catches up */
	if (transport_start(cl, l - 1, lport) < 0)
		rn_die("transport restart");
	transport_add_all(cl, l - 1);
	replicate(cl, all, bulk + 900, "catch-up after the transport restart");
	uint64_t fl = wait_leader(cl, all, "agreement after rejoin");
	struct rn *old = &cl->nodes[l - 1];
	if (old->applied < commit_without)
		rn_die("the old leader did not catch up");
	printf("  node %" PRIu64 " rejoined (leader now %" PRIu64 ", commit %" PRIu64 ")\n",
	       l, fl, raft_commit(cl->nodes[fl - 1].r));
	check_logs(cl, all, "after rejoin");
	for (uint32_t i = 0; i < nn; i++)
		if (cl->nodes[i].steps_failed)
			printf("  node %u: %" PRIu64 " raft_step errors\n", i + 1,
			       cl->nodes[i].steps_failed);
	print_links(cl, fl - 1);
	for (uint32_t i = 0; i < nn; i++)
		rn_free(&cl->nodes[i]);
	free(cl);
}

static int run_certs(const char *dir)
{
	const char *src = getenv("PARLEY_SRC_DIR");
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "bash '%s/tools/dev-cluster-certs.sh' '%s' 5 >/dev/null",
		 src ? src : ".", dir);
	return system(cmd);
}

/* ---- many groups on one transport per node ------------------------------ */

#define MG_NODES 3
#define MG_GROUPS 8

/* One node: MG_GROUPS Raft cores (group ids 1..MG_GROUPS) sharing a peer
 * transport, messages routed by raft_msg.group. */
struct mg_node {
	uint64_t id;
	struct peer *p;
	struct rn g[MG_GROUPS];
	uint64_t bad_group;
};

struct mg {
	struct mg_node nodes[MG_NODES];
	uint16_t ports[MG_NODES];
	struct parley_rng rng;
	uint64_t last_tick, proposed;
	struct raft_msg *out;
	uint32_t out_cap;
};

static void mg_on_recv(void *arg, uint64_t from, const struct raft_msg *m,
		       uint32_t k)
{
	struct mg_node *nd = arg;
	for (uint32_t i = 0; i < k; i++) {
		if (m[i].group < 1 || m[i].group > MG_GROUPS) {
			nd->bad_group++;
			continue;
		}
		struct rn *g = &nd->g[m[i].group - 1];
		if (raft_step(g->r, &m[i]) < 0)
			g->steps_failed++;
	}
}

static void mg_transport(struct mg *c, uint32_t i, uint16_t port)
{
	struct peer_config pc = {0};
	pc.cluster_id = 0xC1A5;
	pc.node_id = c->nodes[i].id;
	pc.listen_port = port;
	pc.read_deadline_ms = 1500;
	pc.ping_interval_ms = 100;
	pc.backoff_min_ms = 20;
	pc.backoff_max_ms = 400;
	pc.rng_seed = parley_rng_next(&c->rng);
	pc.on_recv = mg_on_recv;
	pc.arg = &c->nodes[i];
	cr_assert_eq(peer_new(&pc, &c->nodes[i].p), 0);
	c->ports[i] = peer_port(c->nodes[i].p);
}

static void mg_add_all(struct mg *c, uint32_t i)
{
	for (uint32_t j = 0; j < MG_NODES; j++)
		if (j != i)
			cr_assert_eq(peer_add(c->nodes[i].p, c->nodes[j].id, "127.0.0.1",
					      c->ports[j]), 0);
}

/* Every group's ready on a node, with ONE peer_send_all for all of their
 * messages: the per-node-pair coalescing a shard does. */
static void mg_process(struct mg *c, struct mg_node *nd)
{
	for (int round = 0; round < 64; round++) {
		struct raft_ready *rd[MG_GROUPS];
		uint32_t nmsg = 0;
		bool any = false;
		for (int g = 0; g < MG_GROUPS; g++) {
			rd[g] = rn_ready_begin(&nd->g[g]);
			if (rd[g]) {
				any = true;
				nmsg += rd[g]->n_msgs;
			}
		}
		if (!any)
			break;
		if (nd->p && nmsg) {
			if (c->out_cap < nmsg) {
				c->out = realloc(c->out, nmsg * sizeof *c->out);
				c->out_cap = nmsg;
			}
			uint32_t k = 0;
			for (int g = 0; g < MG_GROUPS; g++)
				for (uint32_t i = 0; rd[g] && i < rd[g]->n_msgs; i++)
					c->out[k++] = rd[g]->msgs[i];
			(void)peer_send_all(nd->p, c->out, k);
		}
		for (int g = 0; g < MG_GROUPS; g++)
			if (rd[g])
				rn_ready_end(&nd->g[g], rd[g]);
	}
	if (nd->p)
		peer_flush(nd->p);
}

static void mg_step(struct mg *c)
{
	int delivered = 0;
	for (uint32_t i = 0; i < MG_NODES; i++)
		if (c->nodes[i].p)
			delivered += peer_poll(c->nodes[i].p, 0);
	uint64_t now = mono_ms();
	if (now - c->last_tick >= RN_TICK_MS) {
		c->last_tick = now;
		for (uint32_t i = 0; i < MG_NODES; i++)
			for (int g = 0; g < MG_GROUPS; g++)
				raft_tick(c->nodes[i].g[g].r);
	}
	for (uint32_t i = 0; i < MG_NODES; i++)
		mg_process(c, &c->nodes[i]);
	if (!delivered) {
		struct pollfd pf[MG_NODES];
		nfds_t k = 0;
		for (uint32_t i = 0; i < MG_NODES; i++)
			if (c->nodes[i].p)
				pf[k++] = (struct pollfd){.fd = peer_fd(c->nodes[i].p),
							  .events = POLLIN};
		poll(pf, k, 1);
	}
}

/* Group g's leader agreed on by the nodes in mask, or 0. */
static uint64_t mg_leader(struct mg *c, int g, uint32_t mask)
{
	uint64_t lead = 0, term = 0;
	for (uint32_t i = 0; i < MG_NODES; i++) {
		if (!(mask & (1u << i)))
			continue;
		struct raft *r = c->nodes[i].g[g].r;
		uint64_t l = raft_leader(r);
		if (!l || (lead && (l != lead || raft_term(r) != term)))
			return 0;
		lead = l;
		term = raft_term(r);
	}
	if (!(mask & (1u << (lead - 1))) ||
	    raft_role(c->nodes[lead - 1].g[g].r) != RAFT_LEADER)
		return 0;
	return lead;
}

/* Proposes to every group until each applied `target` NORMAL entries on
 * its leader and every node in mask applied the leader's commit. */
static void mg_replicate(struct mg *c, uint32_t mask, uint64_t target,
			 const char *what)
{
	uint64_t deadline = mono_ms() + WAIT_S * 1000u;
	while (mono_ms() < deadline) {
		int done = 0;
		for (int g = 0; g < MG_GROUPS; g++) {
			uint64_t l = mg_leader(c, g, mask);
			if (!l)
				continue;
			struct rn *ld = &c->nodes[l - 1].g[g];
			for (int k = 0; k < 8 && ld->normal_applied < target; k++) {
				int rc = rn_propose(ld, c->proposed, &c->rng);
				if (rc < 0)
					break;
				c->proposed++;
			}
			if (ld->normal_applied < target)
				continue;
			bool all = true;
			for (uint32_t i = 0; i < MG_NODES; i++)
				if ((mask & (1u << i)) &&
				    c->nodes[i].g[g].applied < raft_commit(ld->r))
					all = false;
			done += all;
		}
		if (done == MG_GROUPS)
			return;
		mg_step(c);
	}
	cr_assert_fail("multi-group replication did not finish: %s", what);
}

static void mg_check_logs(struct mg *c, uint32_t mask)
{
	for (int g = 0; g < MG_GROUPS; g++) {
		uint64_t cm = UINT64_MAX;
		for (uint32_t i = 0; i < MG_NODES; i++)
			if ((mask & (1u << i)) && raft_commit(c->nodes[i].g[g].r) < cm)
				cm = raft_commit(c->nodes[i].g[g].r);
		struct rn *ref = NULL;
		for (uint32_t i = 0; i < MG_NODES; i++) {
			if (!(mask & (1u << i)))
				continue;
			struct rn *n = &c->nodes[i].g[g];
			cr_assert_geq(n->n, cm);
			if (!ref) {
				ref = n;
				continue;
			}
			for (uint64_t k = 0; k < cm; k++)
				cr_assert(ref->log[k].term == n->log[k].term &&
					  ref->log[k].csum == n->log[k].csum,
					  "group %d: logs differ at %" PRIu64, g + 1, k + 1);
		}
	}
}

Test(peer_raft, three_nodes_eight_groups_share_one_link_per_pair)
{
	signal(SIGPIPE, SIG_IGN);
	uint64_t seed = parley_mono_ns() ^ (uint64_t)getpid();
	if (getenv("PARLEY_SEED"))
		seed = strtoull(getenv("PARLEY_SEED"), NULL, 10);
	printf("multi-group seed %" PRIu64 "\n", seed);
	struct mg *c = calloc(1, sizeof *c);
	c->rng.s = seed;
	c->last_tick = mono_ms();
	for (uint32_t i = 0; i < MG_NODES; i++) {
		c->nodes[i].id = i + 1;
		for (int g = 0; g < MG_GROUPS; g++)
			rn_init_group(&c->nodes[i].g[g], i + 1, MG_NODES, seed, (uint64_t)g + 1);
		mg_transport(c, i, 0);
	}
	for (uint32_t i = 0; i < MG_NODES; i++)
		mg_add_all(c, i);
	uint32_t all = (1u << MG_NODES) - 1;
	mg_replicate(c, all, 300, "all groups");
	mg_check_logs(c, all);
	/* node 1's transport stops: the groups it led must elect leaders
	 * among nodes 2 and 3 to commit more (mg_replicate waits for that) */
	int led = 0;
	for (int g = 0; g < MG_GROUPS; g++)
		led += raft_role(c->nodes[0].g[g].r) == RAFT_LEADER;
	printf("  node 1 leads %d of %d groups; stopping its transport\n", led, MG_GROUPS);
	uint16_t port = c->ports[0];
	peer_free(c->nodes[0].p);
	c->nodes[0].p = NULL;
	mg_replicate(c, all & ~1u, 400, "groups without node 1");
	mg_transport(c, 0, port);
	mg_add_all(c, 0);
	mg_replicate(c, all, 450, "all groups after node 1 is back");
	mg_check_logs(c, all);
	/* coalescing: messages per frame on node 2's links */
	struct peer_link_stats st[MG_NODES];
	int k = peer_stats(c->nodes[1].p, st, MG_NODES, NULL);
	for (int j = 0; j < k; j++)
		printf("  node 2 -> %" PRIu64 ": %" PRIu64 " messages in %" PRIu64 " frames\n",
		       st[j].node, st[j].msgs_out, st[j].frames_out);
	for (uint32_t i = 0; i < MG_NODES; i++) {
		cr_assert_eq(c->nodes[i].bad_group, 0);
		if (c->nodes[i].p)
			peer_free(c->nodes[i].p);
		c->nodes[i].p = NULL;
		for (int g = 0; g < MG_GROUPS; g++)
			rn_free(&c->nodes[i].g[g]);
	}
	free(c->out);
	free(c);
}

static uint64_t test_seed(void)
{
	uint64_t seed = parley_mono_ns() ^ (uint64_t)getpid();
	const char *s = getenv("PARLEY_SEED");
	if (s)
		seed = strtoull(s, NULL, 10);
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	printf("test_peer_raft seed %" PRIu64 " (PARLEY_SEED=%" PRIu64 " replays the choices)\n",
	       seed, seed);
	return seed;
}

Test(peer_raft, three_nodes_loopback)
{
	run_cluster(3, false, NULL, test_seed(), 3000);
}

Test(peer_raft, five_nodes_loopback)
{
	run_cluster(5, false, NULL, test_seed(), 2000);
}

/* Node 3 acts as a node built before RAFT_MSGF_NOACK: the whole run
 * (bulk replication, a closed socket, the leader cut off, re-election,
 * rejoin) works, node 3 never gets a flag it would refuse, and nodes 1
 * and 2 do get NOACK commit-only APPENDs (which they leave unanswered). */
Test(peer_raft, a_node_built_before_noack_works_with_newer_ones)
{
	g_old_id = 3;
	g_old_bad = g_noack_seen = 0;
	run_cluster(3, false, NULL, test_seed(), 1500);
	printf("  NOACK APPENDs received by nodes 1, 2: %" PRIu64 "\n",
	       g_noack_seen);
	cr_assert_eq(g_old_bad, 0, "node 3 got %" PRIu64 " messages with flags "
		     "it does not decode", g_old_bad);
	cr_assert_gt(g_noack_seen, 0);
	g_old_id = 0;
}

Test(peer_raft, three_nodes_mutual_tls)
{
	uint64_t seed = test_seed();
	char dir[] = "/tmp/parley-peer-certs-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	int rc = run_certs(dir);
	if (rc != 0) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		(void)!system(cmd);
		cr_skip_test("tools/dev-cluster-certs.sh failed (%d)", rc);
	}
	run_cluster(3, true, dir, seed, 1000);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	(void)!system(cmd);
}
