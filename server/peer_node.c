/*
 * peer_node.c — parleyd's replication glue (peer_node.h): one thread owns
 * the peer transport and drives the replicated engine's network side.
 *
 * The thread waits in epoll on three fds: the transport's own epoll fd
 * (peer_fd, nested), an eventfd written by the engine's flush callback
 * (pe_cluster.flush: once per stretch of a shard's round in which it
 * queued messages through the send callback, not once per group's ready),
 * and a timerfd firing every tick_ms. Each round it runs
 * peer_poll (sockets, redial, deadlines, pings; received batches go to
 * pe_raft_recv, which copies them), ticks the engine when the timer fired,
 * hands the queued outbound messages to peer_send_all, and flushes.
 *
 * Outbound copies: the engine lends a group's messages for the duration
 * of its send callback; they are deep-copied (messages, entries, entry
 * data, snapshot chunk) into one allocation on the outbox list, bounded by
 * PEER_NODE_OUTBOX_BYTES (beyond: dropped and counted; Raft retransmits).
 *
 * Observability: on each tick the thread also reads every partition's
 * published Raft state (pe_raft_status, never blocks) and counts term
 * changes (elections seen) and leaderships gained, for /metrics
 * (peer_node_metrics_text, with the transport's per-link series).
 *
 * Membership operations (peer_node_add_node / _remove_node) wait for
 * commits and catch-up for up to a minute, and a rebalance
 * (peer_node_rebalance) for its targets to take over, so the admin port
 * runs them on a worker thread of their own (peer_node_op_start): one at
 * a time, the
 * caller polls peer_node_op_result, a second one is refused while one
 * runs. Halting cancels it (its loops check op_cancel) and joins it while
 * the node thread still runs (a conf change it waits for needs the
 * network and the ticks to commit or fail).
 *
 * Threads: the outbox, the queued peer changes and the recorded member
 * addresses are under `mu` (shard threads push, the node thread takes);
 * the membership operation's state is under `op_mu`; the counters are
 * relaxed atomics; everything else belongs to the node thread once
 * started.
 */
#include "peer_node.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "peer.h"
#include "peer_fwd.h"
#include "raft.h"

#define DEF_TICK_MS 50u
#define XFER_ASK_MS 500u /* a transfer not done yet is asked again */

struct obatch {
	struct obatch *next;
	size_t bytes;
	uint32_t n;
	struct raft_msg *msgs; /* into the same allocation */
};

/* A peer added or removed at run time (peer_node_add_peer / _remove_peer),
 * waiting for the node thread, which owns the transport. */
struct pcmd {
	struct pcmd *next;
	bool add;
	struct peer_node_peer peer;
};

/* An application frame queued for the node thread (peer_node_send_app). */
struct aframe {
	struct aframe *next;
	uint64_t to;
	uint8_t type;
	uint32_t len;
	uint8_t data[];
};

/* A node's client and admin addresses as its members record gives them
 * (nodes added at run time), under mu. */
struct mrec {
	uint64_t id;
	char client[PEER_NODE_ADDR_MAX], admin[PEER_NODE_ADDR_MAX];
};
#define MREC_MAX (2u * PEER_NODE_MAX_PEERS) /* beyond: the oldest goes */
/* Removals (members records) waiting until the node is in no partition's
 * configuration on this node before its link goes; beyond, a removal
 * closes the link at once (as before the wait existed). */
#define RM_WAIT_MAX 32u

struct peer_node {
	struct peer_node_config cfg;
	struct peer_node_app app;         /* set before start */
	struct aframe *ahead, *atail;     /* under mu */
	size_t aqueued;                   /* under mu */
	struct mrec mrecs[MREC_MAX];      /* under mu */
	/* ids the members stream removed from the cluster (never added
	 * again), under mu; beyond the bound the oldest are forgotten */
	uint64_t removed_ids[MREC_MAX];
	uint32_t nremoved;
	uint32_t nmrecs;
	uint64_t rm_wait[RM_WAIT_MAX];    /* under mu: removed nodes whose
					     links go once no partition's
					     configuration holds them */
	uint32_t nrm_wait;
	/* the membership operation (peer_node_op_start), under op_mu */
	pthread_mutex_t op_mu;
	pthread_t op_thr;
	bool op_joinable, op_busy;
	struct peer_node_op op;
	uint64_t op_ticket, op_start_ns;
	int op_rc;
	char op_msg[512];
	atomic_bool op_cancel;
	struct pcmd *cmd_head, *cmd_tail; /* under mu */
	char peers_file[600];             /* journal of run-time peers */
	struct pe_sub *msub;              /* tail of the members stream */
	struct placement_map pmap;        /* its "place" records */
	uint32_t meta[PLACEMENT_MAX_META], nmeta; /* set at start */
	/* the leader table (LEADS frames): per partition the node that
	 * claims to lead it and its term; written by the node thread */
	_Atomic uint64_t *lead_node, *lead_term;
	uint32_t lead_tick;
	uint64_t voters[PEER_NODE_MAX_PEERS + 1];
	struct pe_cluster cl;
	struct peer *peer;
	struct pe_engine *e;
	int ep, evfd, tfd;
	pthread_t thr;
	bool started;
	atomic_bool stop;
	pthread_mutex_t mu;
	struct obatch *head, *tail;
	size_t queued;
	bool signalled;                   /* evfd written since the last drain */
	struct raft_msg *gather;          /* node thread: drain_outbox's array */
	uint32_t gather_cap;
	_Atomic uint64_t drops;
	/* node thread: the last Raft state seen per partition */
	uint32_t np;
	uint64_t *seen_term;
	bool *seen_leader;
	_Atomic uint64_t term_changes, leader_gains;
	uint64_t seen_gen;                /* pe_raft_status_gen at that scan */
	bool seen_gen_ok;
	/* leaderships shed by this node (cfg.rebalance_ms): the status
	 * generation last seen and since when it has not changed */
	uint64_t shed_gen, shed_since_ms;
	_Atomic uint64_t shed_rounds, shed_handed, shed_chains;
	/* the node this one handed its leadership to before its removal
	 * (§3.7): the leader it names once removed (its groups stopped and
	 * know no leader) */
	_Atomic uint64_t handed_to;
	/* the automatic re-placement (cfg.replica_replace_ms): per member
	 * of partition 0 since when its link is down (0 = up), the next
	 * check and the stats (rp, under op_mu); node thread */
	uint64_t rd_id[PLACEMENT_MAX_NODES], rd_since[PLACEMENT_MAX_NODES];
	bool rd_seen[PLACEMENT_MAX_NODES];  /* its link was up since start */
	bool rd_down[PLACEMENT_MAX_NODES];  /* counted down at the last check */
	uint32_t nrd;
	_Atomic uint64_t rp_next_ms;      /* the worker pushes it back */
	uint64_t rp_start_ms;
	bool rp_rebalance;                /* a round moved a down node's
					     replicas, or a down node is
					     live again: rounds until the
					     placement over the live nodes
					     is converged */
	atomic_bool op_preempt;           /* a request waits: the running
					     re-placement round stops */
	struct peer_node_replace_stats rp;
	/* forwarded appends (peer_fwd.h) and the links' state for it: node
	 * ids and up flags, written by the node thread (on_link) */
	struct fwd *fwd;
	_Atomic uint64_t up_id[FWD_MAX_NODES];
	_Atomic bool up_flag[FWD_MAX_NODES];
};

/* ---- config ---------------------------------------------------------------------- */

int peer_node_parse_peers(const char *s, struct peer_node_config *cfg)
{
	cfg->npeers = 0;
	const char *p = s;
	while (p && *p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char item[128];
		if (len == 0 || len >= sizeof item)
			goto bad;
		memcpy(item, p, len);
		item[len] = '\0';
		char *eq = strchr(item, '=');
		if (!eq)
			goto bad;
		*eq = '\0';
		char *host;
		uint16_t port;
		if (parley_hostport_split(eq + 1, &host, &port))
			goto bad;
		char *e1;
		errno = 0;
		unsigned long long id = strtoull(item, &e1, 10);
		if (errno || *e1 || e1 == item || !id ||
		    strlen(host) >= sizeof cfg->peers[0].addr ||
		    cfg->npeers >= PEER_NODE_MAX_PEERS)
			goto bad;
		struct peer_node_peer *pp = &cfg->peers[cfg->npeers++];
		pp->id = id;
		snprintf(pp->addr, sizeof pp->addr, "%s", host);
		pp->port = port;
		if (end && !end[1])
			goto bad; /* a trailing comma */
		p = end ? end + 1 : NULL;
	}
	return cfg->npeers ? 0 : -PARLEY_EINVAL;
bad:
	fprintf(stderr, "parleyd: config: peers: expected id=addr:port[,...] "
		"(at most %u, ids > 0, numeric addresses), got \"%s\"\n",
		PEER_NODE_MAX_PEERS, s);
	return -PARLEY_EINVAL;
}

/* ---- outbound: engine shard threads -> outbox ----------------------------------- */

static size_t align8(size_t n)
{
	return (n + 7u) & ~(size_t)7u;
}

static void node_send(void *arg, const struct raft_msg *msgs, uint32_t n)
{
	struct peer_node *nd = arg;
	if (!n)
		return;
	size_t size = align8(sizeof(struct obatch)) +
		      align8((size_t)n * sizeof *msgs);
	for (uint32_t i = 0; i < n; i++) {
		size += align8((size_t)msgs[i].n_entries * sizeof(struct raft_entry));
		for (uint32_t k = 0; k < msgs[i].n_entries; k++)
			size += msgs[i].entries[k].len;
		size = align8(size + msgs[i].chunk_len);
	}
	pthread_mutex_lock(&nd->mu);
	bool full = nd->queued + size > PEER_NODE_OUTBOX_BYTES;
	pthread_mutex_unlock(&nd->mu);
	struct obatch *b = full ? NULL : malloc(size);
	if (!b) {
		atomic_fetch_add_explicit(&nd->drops, n, memory_order_relaxed);
		return;
	}
	uint8_t *q = (uint8_t *)b + align8(sizeof *b);
	b->next = NULL;
	b->bytes = size;
	b->n = n;
	b->msgs = (struct raft_msg *)q;
	memcpy(b->msgs, msgs, (size_t)n * sizeof *msgs);
	q += align8((size_t)n * sizeof *msgs);
	for (uint32_t i = 0; i < n; i++) {
		struct raft_msg *m = &b->msgs[i];
		if (m->n_entries) {
			struct raft_entry *es = (struct raft_entry *)q;
			memcpy(es, msgs[i].entries,
			       (size_t)m->n_entries * sizeof *es);
			q += align8((size_t)m->n_entries * sizeof *es);
			for (uint32_t k = 0; k < m->n_entries; k++) {
				if (es[k].len)
					memcpy(q, msgs[i].entries[k].data, es[k].len);
				es[k].data = q;
				q += es[k].len;
			}
			m->entries = es;
		} else {
			m->entries = NULL;
		}
		if (m->chunk_len) {
			memcpy(q, msgs[i].chunk, m->chunk_len);
			m->chunk = q;
			q += m->chunk_len;
		} else {
			m->chunk = NULL;
		}
		q = (uint8_t *)align8((size_t)q);
	}
	pthread_mutex_lock(&nd->mu);
	if (nd->tail)
		nd->tail->next = b;
	else
		nd->head = b;
	nd->tail = b;
	nd->queued += size;
	pthread_mutex_unlock(&nd->mu);
}

/* The engine's flush (pe_cluster.flush): the shard's round is done with
 * sending for now, wake the node thread, unless it was already woken for
 * what it has not drained yet. One eventfd write per shard round instead
 * of one per group's ready: the node thread then sends the round's
 * messages as one frame per node pair. */
static void node_flush(void *arg)
{
	struct peer_node *nd = arg;
	pthread_mutex_lock(&nd->mu);
	bool wake = nd->head && !nd->signalled;
	if (wake)
		nd->signalled = true;
	pthread_mutex_unlock(&nd->mu);
	if (wake) {
		uint64_t one = 1;
		ssize_t w = write(nd->evfd, &one, sizeof one);
		(void)w; /* a full counter still wakes the thread */
	}
}

/* Counts term changes and leaderships gained since the last tick. */
static void observe_raft(struct peer_node *nd)
{
	/* only roles and terms are counted: unchanged since the last scan
	 * (pe_raft_status_gen), nothing to read */
	uint64_t gen = pe_raft_status_gen(nd->e);
	if (nd->seen_gen_ok && gen == nd->seen_gen)
		return;
	nd->seen_gen = gen;
	nd->seen_gen_ok = true;
	for (uint32_t p = 0; p < nd->np; p++) {
		struct pe_raft_status st;
		if (pe_raft_status(nd->e, p, &st))
			continue;
		if (st.term > nd->seen_term[p]) {
			if (nd->seen_term[p])
				atomic_fetch_add_explicit(&nd->term_changes, 1,
							  memory_order_relaxed);
			nd->seen_term[p] = st.term;
		}
		bool lead = st.role == PE_LEADER;
		if (lead && !nd->seen_leader[p])
			atomic_fetch_add_explicit(&nd->leader_gains, 1,
						  memory_order_relaxed);
		nd->seen_leader[p] = lead;
	}
}

/* ---- inbound and the thread ------------------------------------------------------ */

static uint64_t now_ms(void);

/* XFER (u32 partition | u64 to) from node `from`: a node running a
 * membership change under spread placement needs to lead the partition
 * to propose it (conf_all: to = from), or the leader of partition 0
 * asks for a hop of a leadership chain (shed_chain: to another node);
 * this node, if it leads it and `to` is a voter of it, hands it over
 * (pe_raft_transfer_partition: once the target holds the log; the asker
 * repeats). Anything else is ignored: the asker times out. Nodes built
 * before the chain ignore an XFER with to != from. */
static bool conf_has(const uint64_t *ids, uint32_t n, uint64_t id,
		     uint32_t *at);

static void xfer_on_frame(struct peer_node *nd, uint64_t from,
			  const uint8_t *p, uint32_t n)
{
	uint32_t part;
	uint64_t to;
	if (!nd->e || peer_xfer_decode(p, n, &part, &to))
		return;
	struct pe_raft_status st;
	if (part >= nd->np || pe_raft_status(nd->e, part, &st) ||
	    st.role != PE_LEADER || !conf_has(st.voters, st.nvoters, to, NULL))
		return;
	PLOG_I("cluster", "partition handed over on request", "partition=%u "
	       "to=%" PRIu64 " asked_by=%" PRIu64, part, to, from);
	(void)pe_raft_transfer_partition(nd->e, part, to);
}

/* Application frames: forwarded appends (peer_fwd.h) to the forwarder,
 * the others (forwarded client requests) to the installed app. */
static void leads_on_frame(struct peer_node *nd, uint64_t from,
			   const uint8_t *b, uint32_t n);
static bool holds(struct peer_node *nd, uint32_t p, struct pe_raft_status *st);
static int place_run(struct peer_node *nd, const uint64_t *nodes, uint32_t n,
		     uint64_t deadline, uint32_t *held_by, uint64_t who,
		     char *msg, size_t cap);
static int place_apply(struct peer_node *nd, const struct placement_part *cur,
		       const struct placement_part *t, const bool *unrecorded,
		       uint64_t deadline, char *msg, size_t cap);
static uint32_t place_nodes(struct peer_node *nd, uint64_t id, bool add,
			    uint64_t *out);
static void leads_forget(struct peer_node *nd, uint64_t node);
static void leads_send(struct peer_node *nd);

static void on_app(void *arg, uint64_t from, uint8_t type, const uint8_t *p,
		   uint32_t n)
{
	struct peer_node *nd = arg;
	if (type == PEER_FRAME_APPEND_REQ || type == PEER_FRAME_APPEND_RES)
		fwd_on_frame(nd->fwd, from, type, p, n, now_ms());
	else if (type == PEER_FRAME_LEADS)
		leads_on_frame(nd, from, p, n);
	else if (type == PEER_FRAME_XFER)
		xfer_on_frame(nd, from, p, n);
	else if (nd->app.on_frame)
		nd->app.on_frame(nd->app.arg, from, type, p, n);
}

static void on_recv(void *arg, uint64_t from, const struct raft_msg *msgs,
		    uint32_t n)
{
	struct peer_node *nd = arg;
	if (nd->e)
		(void)pe_raft_recv(nd->e, msgs, n); /* full inbox: dropped */
}

/* ---- forwarded appends (peer_fwd.h) ---------------------------------------------- */

static uint64_t now_ms(void)
{
	return parley_mono_ns() / 1000000u;
}

static int fwd_send(void *arg, uint64_t to, uint8_t type, const uint8_t *pl,
		    uint32_t len)
{
	struct peer_node *nd = arg;
	return peer_send_app(nd->peer, to, type, pl, len);
}

static void fwd_wake(void *arg)
{
	struct peer_node *nd = arg;
	uint64_t one = 1;
	ssize_t w = write(nd->evfd, &one, sizeof one);
	(void)w; /* a full counter still wakes the thread */
}

static bool fwd_up(void *arg, uint64_t node)
{
	struct peer_node *nd = arg;
	for (uint32_t i = 0; i < FWD_MAX_NODES; i++) {
		uint64_t id = atomic_load(&nd->up_id[i]);
		if (!id)
			return false;
		if (id == node)
			return atomic_load(&nd->up_flag[i]);
	}
	return false;
}

/* The forwarder's destinations: the link up and the node knows APPEND_REQ
 * (a node of an older build does not: the caller appends locally and
 * gets NOTLEADER, as with the link down). */
static bool fwd_up_append(void *arg, uint64_t node)
{
	struct peer_node *nd = arg;
	return fwd_up(nd, node) &&
	       peer_can_send(nd->peer, node, PEER_FRAME_APPEND_REQ);
}

/* Node thread: the forwarder's view of the links. */
static void up_set(struct peer_node *nd, uint64_t node, bool up)
{
	for (uint32_t i = 0; i < FWD_MAX_NODES; i++) {
		uint64_t id = atomic_load(&nd->up_id[i]);
		if (id && id != node)
			continue;
		atomic_store(&nd->up_flag[i], up);
		if (!id)
			atomic_store(&nd->up_id[i], node);
		return;
	}
}

int peer_node_forward(void *arg, uint64_t to, const struct pe_append_req *q,
		      pe_append_cb cb, void *cb_arg)
{
	struct peer_node *nd = arg;
	return fwd_append(nd->fwd, to, q, cb, cb_arg);
}

int peer_node_forward_delete(void *arg, uint64_t to, const void *key,
			     size_t klen, uint64_t through, pe_delete_cb cb,
			     void *cb_arg)
{
	struct peer_node *nd = arg;
	return fwd_delete(nd->fwd, to, key, klen, through, cb, cb_arg);
}

/* Node liveness, one per node pair (the link's keepalive PINGs and read
 * deadline, peer.c), is what lets idle groups quiesce (parley_engine.h
 * item 9): a link that goes down is the earliest sign that a node died
 * (its sockets close with it, or it stopped answering for the read
 * deadline): the groups it leads campaign at once instead of waiting out
 * an election timeout, quiesced or not (pe_raft_node_down); a link that
 * comes up wakes the quiesced groups this node leads, so the returning
 * node hears from them and catches up (pe_raft_node_up). */
static void on_link(void *arg, uint64_t node, bool up)
{
	struct peer_node *nd = arg;
	PLOG_I("cluster", up ? "peer link up" : "peer link down",
	       "node=%" PRIu64, node);
	up_set(nd, node, up);
	if (!up) { /* in-flight forwarded appends fail AGAIN (peer_fwd.h) */
		fwd_link_down(nd->fwd, node);
		leads_forget(nd, node);
	}
	if (nd->app.on_link)
		nd->app.on_link(nd->app.arg, node, up);
	if (!nd->e)
		return;
	if (up)
		(void)pe_raft_node_up(nd->e, node); /* not refused for a full queue */
	else
		(void)pe_raft_node_down(nd->e, node);
}

/* Everything the shards queued since the last round leaves together:
 * the batches' messages (each batch one group's ready) are gathered into
 * one array for one peer_send_all, so each node pair gets one frame (one
 * write, one decode and one wake-up on the other side) per round instead
 * of one per group's ready. The messages point into the batches, which
 * are freed only after peer_send_all encoded them. */
static void drain_outbox(struct peer_node *nd)
{
	pthread_mutex_lock(&nd->mu);
	struct obatch *b = nd->head;
	nd->head = nd->tail = NULL;
	nd->queued = 0;
	nd->signalled = false;
	pthread_mutex_unlock(&nd->mu);
	if (!b)
		return;
	uint32_t n = 0;
	for (struct obatch *x = b; x; x = x->next)
		n += x->n;
	if (b->next && n > nd->gather_cap) {
		struct raft_msg *g = realloc(nd->gather, (size_t)n * sizeof *g);
		if (g) {
			nd->gather = g;
			nd->gather_cap = n;
		}
	}
	if (b->next && n <= nd->gather_cap) {
		uint32_t k = 0;
		for (struct obatch *x = b; x; x = x->next) {
			memcpy(nd->gather + k, x->msgs, (size_t)x->n * sizeof *x->msgs);
			k += x->n;
		}
		(void)peer_send_all(nd->peer, nd->gather, n); /* loss is fine */
	} else {
		for (struct obatch *x = b; x; x = x->next)
			(void)peer_send_all(nd->peer, x->msgs, x->n);
	}
	while (b) {
		struct obatch *nx = b->next;
		free(b);
		b = nx;
	}
}

/* Application frames queued by any thread go to their links (after the
 * round's Raft messages); one that cannot is reported to the app. */
static void drain_app(struct peer_node *nd)
{
	pthread_mutex_lock(&nd->mu);
	struct aframe *f = nd->ahead;
	nd->ahead = nd->atail = NULL;
	nd->aqueued = 0;
	pthread_mutex_unlock(&nd->mu);
	while (f) {
		struct aframe *nx = f->next;
		int rc = peer_send_app(nd->peer, f->to, f->type, f->data, f->len);
		if (rc && nd->app.on_unsent)
			nd->app.on_unsent(nd->app.arg, f->to, f->type, f->data,
					  f->len, rc);
		free(f);
		f = nx;
	}
}

void peer_node_set_app(struct peer_node *nd, const struct peer_node_app *app)
{
	nd->app = *app;
}

int peer_node_send_app(struct peer_node *nd, uint64_t to, uint8_t type,
		       const void *a, size_t alen, const void *b, size_t blen)
{
	size_t len = alen + blen;
	if (len > UINT32_MAX)
		return -PARLEY_ETOOBIG;
	pthread_mutex_lock(&nd->mu);
	bool full = nd->aqueued + len > PEER_NODE_APP_BYTES;
	pthread_mutex_unlock(&nd->mu);
	if (full)
		return -PARLEY_EFULL;
	struct aframe *f = malloc(sizeof *f + len);
	if (!f)
		return -PARLEY_ENOMEM;
	f->next = NULL;
	f->to = to;
	f->type = type;
	f->len = (uint32_t)len;
	if (alen)
		memcpy(f->data, a, alen);
	if (blen)
		memcpy(f->data + alen, b, blen);
	pthread_mutex_lock(&nd->mu);
	bool was_empty = !nd->ahead;
	if (nd->atail)
		nd->atail->next = f;
	else
		nd->ahead = f;
	nd->atail = f;
	nd->aqueued += len;
	pthread_mutex_unlock(&nd->mu);
	if (was_empty) {
		uint64_t one = 1;
		ssize_t w = write(nd->evfd, &one, sizeof one);
		(void)w; /* a full counter still wakes the thread */
	}
	return 0;
}

bool peer_node_can_send(struct peer_node *nd, uint64_t node, uint8_t type)
{
	return peer_can_send(nd->peer, node, type);
}

uint32_t peer_node_frames(struct peer_node *nd)
{
	return peer_frames(nd->peer);
}

bool peer_node_link_up(struct peer_node *nd, uint64_t node)
{
	struct peer_link_stats ls;
	return peer_link_stats(nd->peer, node, &ls) == 0 &&
	       ls.state == PEER_LINK_UP;
}

/* The journal of run-time peers (<data>/cluster-peers): one line per
 * change that took effect, "add <id> <addr> <port>" or "remove <id>",
 * appended and fdatasync'd; replayed by peer_node_new. It lets a node
 * that restarts reach the nodes added since it was started with its
 * `peers` before its engine has applied the members stream again (its
 * groups may need them to elect). */
static void journal(struct peer_node *nd, const struct pcmd *c)
{
	if (!nd->peers_file[0])
		return;
	FILE *f = fopen(nd->peers_file, "a");
	if (!f) {
		PLOG_W("cluster", "cannot write the peers journal", "file=%s "
		       "err=%s", nd->peers_file, strerror(errno));
		return;
	}
	if (c->add)
		fprintf(f, "add %" PRIu64 " %s %u\n", c->peer.id, c->peer.addr,
			c->peer.port);
	else
		fprintf(f, "remove %" PRIu64 "\n", c->peer.id);
	fflush(f);
	(void)fdatasync(fileno(f));
	fclose(f);
}

static int apply_one(struct peer_node *nd, const struct pcmd *c, bool log)
{
	int rc;
	if (c->add) {
		rc = peer_add(nd->peer, c->peer.id, c->peer.addr, c->peer.port);
	} else {
		struct peer_link_stats ls;
		rc = peer_link_stats(nd->peer, c->peer.id, &ls);
		if (!rc && ls.removed)
			return -PARLEY_EEXIST; /* nothing changed */
		rc = peer_remove(nd->peer, c->peer.id);
	}
	if (rc && rc != -PARLEY_EEXIST && log)
		PLOG_W("cluster", c->add ? "peer not added" : "peer not removed",
		       "node=%" PRIu64 " err=%s", c->peer.id,
		       parley_errname(rc));
	return rc;
}

/* Node thread: applies the queued peer additions and removals. */
static void apply_cmds(struct peer_node *nd)
{
	pthread_mutex_lock(&nd->mu);
	struct pcmd *c = nd->cmd_head;
	nd->cmd_head = nd->cmd_tail = NULL;
	pthread_mutex_unlock(&nd->mu);
	while (c) {
		struct pcmd *nx = c->next;
		if (apply_one(nd, c, true) == 0)
			journal(nd, c);
		free(c);
		c = nx;
	}
}

/* peer_node_new: the journal's changes, in order, after the static peers. */
static void journal_replay(struct peer_node *nd)
{
	FILE *f = fopen(nd->peers_file, "r");
	if (!f)
		return;
	char line[256];
	uint32_t n = 0;
	while (fgets(line, sizeof line, f)) {
		struct pcmd c = {0};
		char addr[64];
		unsigned port;
		if (sscanf(line, "add %" SCNu64 " %63s %u", &c.peer.id, addr,
			   &port) == 3 && port && port < 65536) {
			c.add = true;
			snprintf(c.peer.addr, sizeof c.peer.addr, "%s", addr);
			c.peer.port = (uint16_t)port;
		} else if (sscanf(line, "remove %" SCNu64, &c.peer.id) != 1) {
			continue; /* a torn last line */
		}
		if (c.peer.id == nd->cfg.node_id)
			continue;
		(void)apply_one(nd, &c, false);
		n++;
	}
	fclose(f);
	if (n)
		PLOG_I("cluster", "peers journal replayed", "file=%s changes=%u",
		       nd->peers_file, n);
}

static int cmd_push(struct peer_node *nd, bool add, uint64_t id,
		    const char *addr, uint16_t port)
{
	if (!nd || !id || id == nd->cfg.node_id)
		return -PARLEY_EINVAL;
	struct pcmd *c = calloc(1, sizeof *c);
	if (!c)
		return -PARLEY_ENOMEM;
	c->add = add;
	c->peer.id = id;
	if (add) {
		uint8_t buf[16];
		if (!addr || !port || strlen(addr) >= sizeof c->peer.addr ||
		    (inet_pton(AF_INET, addr, buf) != 1 &&
		     inet_pton(AF_INET6, addr, buf) != 1)) {
			free(c);
			return -PARLEY_EINVAL;
		}
		snprintf(c->peer.addr, sizeof c->peer.addr, "%s", addr);
		c->peer.port = port;
	}
	pthread_mutex_lock(&nd->mu);
	if (nd->cmd_tail)
		nd->cmd_tail->next = c;
	else
		nd->cmd_head = c;
	nd->cmd_tail = c;
	pthread_mutex_unlock(&nd->mu);
	uint64_t one = 1;
	ssize_t w = write(nd->evfd, &one, sizeof one);
	(void)w;
	return 0;
}

int peer_node_add_peer(struct peer_node *nd, uint64_t id, const char *addr,
		       uint16_t port)
{
	return cmd_push(nd, true, id, addr, port);
}

int peer_node_remove_peer(struct peer_node *nd, uint64_t id)
{
	return cmd_push(nd, false, id, NULL, 0);
}

/* ---- cluster membership (docs/CLUSTER.md §3.7) ------------------------------------- */

/* The members stream: what every node learns the others' addresses from.
 * "add <id> <peer addr> <peer port> <client host:port|-> <admin host:port|->"
 * or "remove <id>", one record per entry, appended by the node that
 * leads partition 0 (peer_node_add_node / _remove_node). */
#define MEMBERS_KEY "s/cluster/nodes"
#define MEMBERS_TYPE 0x4E4Du /* "MN" */

/* Records (client, admin: "-" = none) or, with NULL, forgets node id's
 * recorded addresses. */
static void mrec_put(struct peer_node *nd, uint64_t id, const char *client,
		     const char *admin)
{
	pthread_mutex_lock(&nd->mu);
	uint32_t at = nd->nmrecs;
	for (uint32_t i = 0; i < nd->nmrecs; i++)
		if (nd->mrecs[i].id == id)
			at = i;
	if (at < nd->nmrecs) { /* drop the old one, keep the order */
		memmove(&nd->mrecs[at], &nd->mrecs[at + 1],
			(nd->nmrecs - at - 1) * sizeof nd->mrecs[0]);
		nd->nmrecs--;
	}
	if (client) {
		if (nd->nmrecs == MREC_MAX) {
			memmove(&nd->mrecs[0], &nd->mrecs[1],
				(MREC_MAX - 1) * sizeof nd->mrecs[0]);
			nd->nmrecs--;
		}
		struct mrec *m = &nd->mrecs[nd->nmrecs++];
		m->id = id;
		snprintf(m->client, sizeof m->client, "%s",
			 strcmp(client, "-") ? client : "");
		snprintf(m->admin, sizeof m->admin, "%s",
			 strcmp(admin, "-") ? admin : "");
	}
	pthread_mutex_unlock(&nd->mu);
}

bool peer_node_recorded_addr(struct peer_node *nd, uint64_t id,
			     const char *which, char *out, size_t cap)
{
	bool adm = !strcmp(which, "admin");
	out[0] = '\0';
	pthread_mutex_lock(&nd->mu);
	for (uint32_t i = 0; i < nd->nmrecs; i++)
		if (nd->mrecs[i].id == id)
			snprintf(out, cap, "%s", adm ? nd->mrecs[i].admin
						     : nd->mrecs[i].client);
	pthread_mutex_unlock(&nd->mu);
	return out[0] != '\0';
}

static bool conf_has(const uint64_t *ids, uint32_t n, uint64_t id,
		     uint32_t *at);

/* A removal record applied: the node's link goes once no partition's
 * configuration on this node holds it (rm_wait_check, node thread). A
 * forced removal writes its record first, while the node still votes
 * (peer_node_remove_node), and the configuration changes that follow
 * need its answers: closing its link at the record would leave them
 * uncommitted. With the usual order (record last) it is in no
 * configuration any more and goes at the next check. */
static void rm_wait_add(struct peer_node *nd, uint64_t id)
{
	pthread_mutex_lock(&nd->mu);
	bool queued = false, full = nd->nrm_wait == RM_WAIT_MAX;
	for (uint32_t i = 0; i < nd->nrm_wait; i++)
		queued |= nd->rm_wait[i] == id;
	if (!queued && !full)
		nd->rm_wait[nd->nrm_wait++] = id;
	pthread_mutex_unlock(&nd->mu);
	if (full && !queued)
		(void)peer_node_remove_peer(nd, id);
}

/* Whether any partition's configuration on this node holds id (as a
 * voter or a learner). pe_raft_status never blocks. */
static bool in_any_conf(struct peer_node *nd, uint64_t id)
{
	for (uint32_t p = 0; p < nd->np; p++) {
		struct pe_raft_status st;
		if (pe_raft_status(nd->e, p, &st))
			continue;
		if (conf_has(st.voters, st.nvoters, id, NULL) ||
		    conf_has(st.learners, st.nlearners, id, NULL))
			return true;
	}
	return false;
}

/* Node thread, every tick: the removed nodes no configuration holds any
 * more lose their links (peer_node_remove_peer). */
static void rm_wait_check(struct peer_node *nd)
{
	if (!nd->e)
		return;
	pthread_mutex_lock(&nd->mu);
	uint64_t ids[RM_WAIT_MAX];
	uint32_t n = nd->nrm_wait;
	memcpy(ids, nd->rm_wait, n * sizeof ids[0]);
	pthread_mutex_unlock(&nd->mu);
	for (uint32_t i = 0; i < n; i++) {
		if (in_any_conf(nd, ids[i]))
			continue;
		(void)peer_node_remove_peer(nd, ids[i]);
		pthread_mutex_lock(&nd->mu);
		for (uint32_t k = 0; k < nd->nrm_wait; k++)
			if (nd->rm_wait[k] == ids[i]) {
				nd->rm_wait[k] = nd->rm_wait[--nd->nrm_wait];
				break;
			}
		pthread_mutex_unlock(&nd->mu);
	}
}

static void members_entry(struct peer_node *nd, const struct pe_entry *en)
{
	if (en->len > 6 && !memcmp(en->payload, "place ", 6)) {
		char *pr = malloc(en->len + 1);
		if (!pr)
			return;
		memcpy(pr, en->payload, en->len);
		pr[en->len] = '\0';
		if (placement_map_apply(&nd->pmap, pr + 6))
			PLOG_W("cluster", "bad placement record", "seq=%" PRIu64,
			       en->seq);
		free(pr);
		return;
	}
	char rec[512];
	size_t n = en->len < sizeof rec - 1 ? en->len : sizeof rec - 1;
	memcpy(rec, en->payload, n);
	rec[n] = '\0';
	uint64_t id = 0;
	char addr[64];
	unsigned port = 0;
	char client[PEER_NODE_ADDR_MAX] = "-", admin[PEER_NODE_ADDR_MAX] = "-";
	if (sscanf(rec, "add %" SCNu64 " %63s %u %79s %79s", &id, addr, &port,
		   client, admin) >= 3) {
		if (id == nd->cfg.node_id)
			return;
		mrec_put(nd, id, client, admin);
		if (peer_node_add_peer(nd, id, addr, (uint16_t)port))
			PLOG_W("cluster", "bad members record", "seq=%" PRIu64
			       " record=\"%s\"", en->seq, rec);
	} else if (sscanf(rec, "remove %" SCNu64, &id) == 1) {
		pthread_mutex_lock(&nd->mu);
		if (nd->nremoved == MREC_MAX) {
			memmove(&nd->removed_ids[0], &nd->removed_ids[1],
				(MREC_MAX - 1) * sizeof nd->removed_ids[0]);
			nd->nremoved--;
		}
		nd->removed_ids[nd->nremoved++] = id;
		pthread_mutex_unlock(&nd->mu);
		if (id == nd->cfg.node_id)
			PLOG_W("cluster", "this node was removed from the "
			       "cluster; its groups stop", "node=%" PRIu64, id);
		else
			rm_wait_add(nd, id);
		mrec_put(nd, id, NULL, NULL);
	}
}

static enum pe_sub_ret members_cb(void *arg, struct pe_sub *sub,
				  const struct pe_sub_update *u)
{
	(void)sub;
	struct peer_node *nd = arg;
	if (u->event == PE_SUB_ENTRIES)
		for (uint32_t i = 0; i < u->count; i++)
			members_entry(nd, &u->entries[i]);
	return PE_SUB_CONTINUE;
}

static bool conf_has(const uint64_t *ids, uint32_t n, uint64_t id,
		     uint32_t *at)
{
	for (uint32_t i = 0; i < n; i++)
		if (ids[i] == id) {
			if (at)
				*at = i;
			return true;
		}
	return false;
}

static void info_get(const char *info, const char *key, char *out,
		     size_t cap); /* below */

/* "leader=N admin=HOST:PORT" (admin=- when unknown): the line of a 409
 * that parleyctl follows to the leader's admin port. */
static void leader_line(struct peer_node *nd, uint64_t leader, char *out,
			size_t cap)
{
	char admin[PEER_NODE_ADDR_MAX] = "";
	struct peer_link_stats ls;
	if (leader && leader != nd->cfg.node_id &&
	    peer_link_stats(nd->peer, leader, &ls) == 0)
		info_get(ls.info, "admin", admin, sizeof admin);
	if (leader && leader != nd->cfg.node_id && !*admin)
		(void)peer_node_recorded_addr(nd, leader, "admin", admin,
					      sizeof admin);
	snprintf(out, cap, "leader=%" PRIu64 " admin=%s\n", leader,
		 *admin ? admin : "-");
}

static int lead_check(struct peer_node *nd, char *msg, size_t cap)
{
	if (!nd->e)
		return -PARLEY_EAGAIN;
	if (pe_partition_leader_check(nd->e, 0) == 0)
		return 0;
	struct pe_raft_status st;
	(void)pe_raft_status(nd->e, 0, &st);
	if (!st.leader)
		st.leader = atomic_load(&nd->handed_to);
	char line[PEER_NODE_ADDR_MAX + 48];
	leader_line(nd, st.leader, line, sizeof line);
	snprintf(msg, cap, "not the leader: ask node %" PRIu64
		 " (the leader of partition 0 as this node knows it; 0 = "
		 "none known)\n%s", st.leader, line);
	return -PARLEY_ENOTLEADER;
}

/* A forwarded append's wait (members_write: the membership worker
 * waits for the node thread's callback). */
struct mw_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	struct pe_append_result r;
};

static void mw_cb(void *arg, const struct pe_append_result *r)
{
	struct mw_wait *w = arg;
	pthread_mutex_lock(&w->mu);
	w->r = *r;
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* A members stream append (records of add, remove, place): here, or —
 * this node does not lead the stream's partition, whose leader named
 * another node — at that leader, forwarded (peer_fwd.h) like a chat
 * write: with spread placement the automatic hand-over may give that
 * partition to another node than partition 0's leader, which runs the
 * operation (it answered 409 "members record not written:
 * PARLEY_ENOTLEADER" on every try before). EAGAIN, EFULL and a NOTLEADER
 * naming no other leader (an election; the stream's partition not yet
 * following partition 0's leader just after a hand-over, §3.7) are
 * retried for about 2 s. The caller's
 * producer id makes a retry idempotent. Not on the node thread (it
 * waits for the forwarder's callback there). */
static int members_write(struct peer_node *nd, const struct pe_append_req *q)
{
	struct pe_append_result r;
	int rc = pe_append_sync(nd->e, q, &r);
	for (int t = 0; t < 100 && rc; t++) {
		uint64_t to = rc == -PARLEY_ENOTLEADER ? r.leader : 0;
		if (to && to != nd->cfg.node_id && fwd_up_append(nd, to)) {
			struct mw_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER,
					    .cv = PTHREAD_COND_INITIALIZER};
			rc = fwd_append(nd->fwd, to, q, mw_cb, &w);
			if (!rc) {
				pthread_mutex_lock(&w.mu);
				while (!w.done)
					pthread_cond_wait(&w.cv, &w.mu);
				pthread_mutex_unlock(&w.mu);
				r = w.r;
				rc = r.err;
			}
			if (!rc)
				break;
		}
		if (rc != -PARLEY_EAGAIN && rc != -PARLEY_EFULL &&
		    rc != -PARLEY_ENOTLEADER && rc != -PARLEY_ECLOSED)
			break;
		if (atomic_load(&nd->op_cancel))
			return -PARLEY_ECLOSED;
		usleep(20000);
		rc = pe_append_sync(nd->e, q, &r);
	}
	return rc;
}

static int members_append(struct peer_node *nd, char op, uint64_t id,
			  const char *rec)
{
	struct pe_input in = {.type = MEMBERS_TYPE, .len = (uint32_t)strlen(rec),
			      .payload = rec};
	struct pe_append_req q = {.key = MEMBERS_KEY,
				  .klen = strlen(MEMBERS_KEY),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	/* idempotent per (op, node): a repeated command adds no record */
	q.producer[0] = 'M';
	q.producer[1] = (uint8_t)op;
	memcpy(q.producer + 8, &id, sizeof id);
	return members_write(nd, &q);
}

/* One change on every partition; EAGAIN (a change pending, a new term)
 * is retried until the deadline. `skip` says when a partition needs no
 * change (already done). */

/* Spread placement: another node (`leader`) leads partition p, which a
 * membership change needs to lead here; ask it to hand p to this node
 * (XFER), at most once per XFER_ASK_MS per *next_ask (the caller's
 * clock, shared by its partitions' asks in one pass). */
static bool xfer_ask(struct peer_node *nd, uint32_t p, uint64_t leader,
		     const uint64_t *next_ask)
{
	uint64_t now = parley_mono_ns();
	if (!nd->cfg.leader_spread || !leader || leader == nd->cfg.node_id ||
	    now < *next_ask)
		return false;
	/* a leader of an older build knows no XFER: the change waits for
	 * its deadline (docs/CLUSTER.md §3.8: no membership changes in the
	 * middle of a rolling upgrade) */
	if (!peer_can_send(nd->peer, leader, PEER_FRAME_XFER))
		return false;
	uint8_t x[PEER_XFER_BYTES];
	peer_xfer_encode(x, p, nd->cfg.node_id);
	(void)peer_node_send_app(nd, leader, PEER_FRAME_XFER, x, sizeof x,
				 NULL, 0);
	return true;
}

static int conf_all(struct peer_node *nd, enum pe_conf_op op, uint64_t id,
		    uint64_t deadline_ns, char *msg, size_t cap)
{
	uint64_t next_ask = 0;
	for (uint32_t p = 0; p < nd->np; p++) {
		for (;;) {
			struct pe_raft_status st;
			int rc = pe_raft_status(nd->e, p, &st);
			if (rc)
				return rc;
			bool voter = conf_has(st.voters, st.nvoters, id, NULL);
			bool learner = conf_has(st.learners, st.nlearners, id,
						NULL);
			if ((op == PE_CONF_ADD_LEARNER && (voter || learner)) ||
			    (op == PE_CONF_PROMOTE && voter) ||
			    (op == PE_CONF_REMOVE && !voter && !learner))
				break; /* done (now or before) */
			struct pe_conf_result r;
			rc = pe_partition_conf_change_sync(nd->e, p, op, id, &r);
			if (!rc)
				break;
			if (rc == -PARLEY_EINVAL) {
				snprintf(msg, cap, "partition %u refused the "
					 "change (node ids are never reused; "
					 "the last voter stays)\n", p);
				return rc;
			}
			if (rc != -PARLEY_EAGAIN && rc != -PARLEY_ENOTLEADER)
				return rc;
			if (rc == -PARLEY_ENOTLEADER &&
			    xfer_ask(nd, p, r.leader ? r.leader : st.leader,
				     &next_ask))
				next_ask = parley_mono_ns() +
					   XFER_ASK_MS * 1000000ull;
			if (atomic_load(&nd->op_cancel)) {
				snprintf(msg, cap, "the node is stopping: "
					 "repeat the command\n");
				return -PARLEY_ECLOSED;
			}
			if (parley_mono_ns() > deadline_ns) {
				snprintf(msg, cap, "partition %u: no change "
					 "possible now (%s)\n", p,
					 parley_errname(rc));
				return -PARLEY_ETIMEDOUT;
			}
			usleep(20000);
		}
	}
	return 0;
}

int peer_node_add_node(struct peer_node *nd, uint64_t id, const char *peer,
		       const char *client, const char *admin, uint32_t wait_ms,
		       char *msg, size_t cap)
{
	snprintf(msg, cap, "error\n");
	struct peer_node_config tmp;
	memset(&tmp, 0, sizeof tmp);
	char spec[128];
	snprintf(spec, sizeof spec, "%" PRIu64 "=%s", id, peer ? peer : "");
	if (!id || id == nd->cfg.node_id || !peer ||
	    peer_node_parse_peers(spec, &tmp) ||
	    (client && strpbrk(client, " \n")) ||
	    (admin && strpbrk(admin, " \n"))) {
		snprintf(msg, cap, "bad id or address (peer: numeric "
			 "addr:port)\n");
		return -PARLEY_EINVAL;
	}
	int rc = lead_check(nd, msg, cap);
	if (rc)
		return rc;
	struct peer_link_stats ls;
	pthread_mutex_lock(&nd->mu);
	bool gone = conf_has(nd->removed_ids, nd->nremoved, id, NULL);
	pthread_mutex_unlock(&nd->mu);
	if (gone || (peer_link_stats(nd->peer, id, &ls) == 0 && ls.removed)) {
		/* a group may take back a member it removed (placement moves
		 * replicas), but a node removed from the cluster is gone for
		 * good: its id is never used again */
		snprintf(msg, cap, "node %" PRIu64 " was removed from the "
			 "cluster: node ids are never reused (start the new "
			 "node with a new id)\n", id);
		return -PARLEY_EINVAL;
	}
	uint64_t deadline = parley_mono_ns() + (uint64_t)wait_ms * 1000000ull;
	char rec[512];
	snprintf(rec, sizeof rec, "add %" PRIu64 " %s %u %s %s", id,
		 tmp.peers[0].addr, tmp.peers[0].port,
		 client && *client ? client : "-",
		 admin && *admin ? admin : "-");
	rc = members_append(nd, 'A', id, rec);
	if (rc) {
		snprintf(msg, cap, "members record not written: %s\n",
			 parley_errname(rc));
		return rc;
	}
	PLOG_I("cluster", "adding a node", "node=%" PRIu64 " peer=%s:%u", id,
	       tmp.peers[0].addr, tmp.peers[0].port);
	if (nd->cfg.replication_factor) { /* placed (§3.7) */
		uint64_t nodes[PLACEMENT_MAX_NODES];
		uint32_t nn = place_nodes(nd, id, true, nodes), held = 0;
		rc = place_run(nd, nodes, nn, deadline, &held, id, msg, cap);
		if (rc)
			return rc;
		char more[256];
		snprintf(more, sizeof more, "%s", msg);
		PLOG_I("cluster", "node added", "node=%" PRIu64 " voter_of=%u",
		       id, held);
		snprintf(msg, cap, "node %" PRIu64 " is a voter of %u of %u "
			 "partitions (replication factor %u)\n%s", id, held,
			 nd->np, nd->cfg.replication_factor, more);
		return 0;
	}
	rc = conf_all(nd, PE_CONF_ADD_LEARNER, id, deadline, msg, cap);
	if (rc)
		return rc;
	/* promote once it caught up everywhere (the leader's view) */
	for (;;) {
		uint32_t behind = 0;
		for (uint32_t p = 0; p < nd->np; p++) {
			struct pe_raft_status st;
			uint32_t at;
			if (pe_raft_status(nd->e, p, &st) ||
			    (conf_has(st.learners, st.nlearners, id, &at) &&
			     pe_raft_member_match(&st, id) < st.commit))
				behind++;
		}
		if (!behind)
			break;
		if (atomic_load(&nd->op_cancel)) {
			snprintf(msg, cap, "the node is stopping; node %" PRIu64
				 " is a learner: repeat the command\n", id);
			return -PARLEY_ECLOSED;
		}
		if (parley_mono_ns() > deadline) {
			snprintf(msg, cap, "node %" PRIu64 " is a learner; %u "
				 "partitions still catching up: repeat the "
				 "command to promote it\n", id, behind);
			return -PARLEY_ETIMEDOUT;
		}
		usleep(50000);
	}
	rc = conf_all(nd, PE_CONF_PROMOTE, id, deadline, msg, cap);
	if (rc)
		return rc;
	PLOG_I("cluster", "node added", "node=%" PRIu64 " partitions=%u", id,
	       nd->np);
	snprintf(msg, cap, "node %" PRIu64 " is a voter of all %u partitions\n",
		 id, nd->np);
	return 0;
}

/* Removing the leading node (§3.7): how long it looks for a current voter
 * to hand leadership to, how long the hand-over may take in all, and how
 * often it asks again (a transfer is tried once per group and request;
 * one that found its target not current yet is asked anew). */
#define HANDOVER_FIND_MS 2000u
#define HANDOVER_WAIT_MS 10000u
#define HANDOVER_ASK_MS 500u

/* The voter to hand leadership to before this node is removed: another
 * voter of every partition, active and holding partition 0's commit
 * index (the most caught-up one), 0 when there is none. */
static bool is_meta_part(const struct peer_node *nd, uint32_t p)
{
	for (uint32_t i = 0; i < nd->nmeta; i++)
		if (nd->meta[i] == p)
			return true;
	return false;
}

static uint64_t handover_target(struct peer_node *nd)
{
	struct pe_raft_status s0;
	if (pe_raft_status(nd->e, 0, &s0) || s0.role != PE_LEADER)
		return 0;
	uint64_t best = 0, best_match = 0;
	for (uint32_t i = 0; i < s0.n_members; i++) {
		const struct pe_raft_member *m = &s0.members[i];
		if (m->node == nd->cfg.node_id || !m->voter || !m->active ||
		    m->match < s0.commit)
			continue;
		/* a voter of every partition led here; with placement, of
		 * the meta group's (the others: this node leaves them through
		 * the removal, proposed by itself where it leads) */
		bool everywhere = true;
		for (uint32_t p = 1; p < nd->np && everywhere; p++) {
			struct pe_raft_status st;
			if (nd->cfg.replication_factor && !is_meta_part(nd, p))
				continue;
			everywhere = !pe_raft_status(nd->e, p, &st) &&
				     (st.role != PE_LEADER ||
				      conf_has(st.voters, st.nvoters, m->node,
					       NULL));
		}
		if (everywhere && (!best || m->match > best_match)) {
			best = m->node;
			best_match = m->match;
		}
	}
	return best;
}

/* Removing the node that leads partition 0 (itself): it hands the
 * leadership of every partition it leads to another current voter and
 * answers -PARLEY_ENOTLEADER naming the new leader, where the caller
 * repeats the command (docs/CLUSTER.md §3.7 says why not here). */
static int hand_over(struct peer_node *nd, uint64_t deadline, char *msg,
		     size_t cap)
{
	uint64_t start = parley_mono_ns();
	uint64_t hand_deadline = start + HANDOVER_WAIT_MS * 1000000ull;
	if (hand_deadline > deadline)
		hand_deadline = deadline;
	uint64_t find_deadline = start + HANDOVER_FIND_MS * 1000000ull;
	uint64_t to = 0, next_ask = 0;
	for (;;) {
		struct pe_raft_status s0;
		if (pe_raft_status(nd->e, 0, &s0))
			return -PARLEY_EAGAIN;
		bool leads = false; /* with placement: a meta partition */
		for (uint32_t p = 0; p < nd->np && !leads; p++) {
			struct pe_raft_status st;
			if (nd->cfg.replication_factor && !is_meta_part(nd, p))
				continue;
			leads = !pe_raft_status(nd->e, p, &st) &&
				st.role == PE_LEADER;
		}
		if (s0.role != PE_LEADER && s0.leader && !leads)
			break; /* handed over */
		if (atomic_load(&nd->op_cancel)) {
			snprintf(msg, cap, "the node is stopping: repeat the "
				 "command\n");
			return -PARLEY_ECLOSED;
		}
		uint64_t now = parley_mono_ns();
		if (now > hand_deadline || (!to && now > find_deadline)) {
			if (!to) {
				snprintf(msg, cap, "node %" PRIu64 " leads the "
					 "cluster and there is no other "
					 "current voter to hand leadership "
					 "to: add or repair a node first\n",
					 nd->cfg.node_id);
				return -PARLEY_EAGAIN;
			}
			snprintf(msg, cap, "leadership not handed to node %"
				 PRIu64 " in time: repeat the command\n", to);
			return -PARLEY_ETIMEDOUT;
		}
		if (now >= next_ask) {
			uint64_t t = s0.role == PE_LEADER ? handover_target(nd)
							  : s0.leader;
			if (t && t != nd->cfg.node_id) {
				to = t;
				(void)pe_raft_transfer(nd->e, to);
			}
			next_ask = now + HANDOVER_ASK_MS * 1000000ull;
		}
		usleep(20000);
	}
	struct pe_raft_status s0;
	(void)pe_raft_status(nd->e, 0, &s0);
	atomic_store(&nd->handed_to, s0.leader);
	char line[PEER_NODE_ADDR_MAX + 48];
	leader_line(nd, s0.leader, line, sizeof line);
	PLOG_I("cluster", "leadership handed over before this node's removal",
	       "to=%" PRIu64, s0.leader);
	snprintf(msg, cap, "node %" PRIu64 " handed its leadership to node %"
		 PRIu64 ": repeat the command there\n%s", nd->cfg.node_id,
		 s0.leader, line);
	return -PARLEY_ENOTLEADER;
}

bool peer_node_removal_safe(const uint64_t *voters, const bool *healthy,
			    uint32_t n, uint64_t removed, uint32_t *left,
			    uint32_t *need)
{
	bool voter = false;
	uint32_t h = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (voters[i] == removed)
			voter = true;
		else
			h += healthy[i];
	}
	*left = h;
	*need = 0;
	if (!voter || n <= 1)
		return true; /* the quorum does not change / the engine refuses */
	*need = (n - 1) / 2 + 1;
	return h >= *need;
}

/* Why voter v of a group this node leads is not healthy ("" = healthy):
 * this node always is; another needs its link up, to have answered
 * within the last election timeouts (active) and to hold `commit`. */
static const char *voter_health(struct peer_node *nd,
				const struct pe_raft_status *st, uint64_t v,
				uint64_t commit)
{
	if (v == nd->cfg.node_id)
		return "";
	struct peer_link_stats ls;
	if (peer_link_stats(nd->peer, v, &ls) || ls.state != PEER_LINK_UP)
		return "link down";
	for (uint32_t i = 0; i < st->n_members; i++)
		if (st->members[i].node == v)
			return !st->members[i].active ? "inactive"
			       : st->members[i].match < commit ? "behind" : "";
	return "unknown to the leader";
}

/* The removal check (docs/CLUSTER.md §3.7) over every partition where
 * `id` is a voter: the healthy voters left must be a quorum of the new
 * configuration. "Holding the commit index" is measured against each
 * partition's commit when the check starts, and each partition is
 * sampled every 50 ms for up to PEER_NODE_HEALTH_WAIT_MS until it passes
 * once (a follower of a busy group is usually a few entries short of the
 * newest commit). 0, or -PARLEY_EPERM with msg naming the first partition
 * that never passed and its unhealthy voters. */
static int removal_check(struct peer_node *nd, uint64_t id, char *msg,
			 size_t cap)
{
	uint64_t *c0 = calloc(nd->np ? nd->np : 1, sizeof *c0);
	bool *ok = calloc(nd->np ? nd->np : 1, sizeof *ok);
	int rc = 0;
	if (!c0 || !ok) {
		rc = -PARLEY_ENOMEM;
		goto out;
	}
	for (uint32_t p = 0; p < nd->np; p++) {
		struct pe_raft_status st;
		if (!pe_raft_status(nd->e, p, &st))
			c0[p] = st.commit;
	}
	uint64_t end = parley_mono_ns() +
		       (uint64_t)PEER_NODE_HEALTH_WAIT_MS * 1000000ull;
	uint64_t next_ask = 0;
	for (;;) {
		uint32_t pending = 0;
		uint64_t ask_round = next_ask;
		bool moving = false; /* the first failure: not led here now */
		char why[256] = "";
		for (uint32_t p = 0; p < nd->np; p++) {
			if (ok[p])
				continue;
			struct pe_raft_status st;
			if (!pe_raft_status(nd->e, p, &st) &&
			    !conf_has(st.voters, st.nvoters, id, NULL)) {
				ok[p] = true; /* not a voter: no quorum changes */
				continue;
			}
			if (nd->cfg.replication_factor &&
			    (!holds(nd, p, &st) || st.role != PE_LEADER)) {
				ok[p] = true; /* placed: led elsewhere, its
						 replica is moved (a new one
						 caught up) first */
				continue;
			}
			int src = pe_raft_status(nd->e, p, &st);
			if (src || st.role != PE_LEADER) {
				/* spread placement: ask its leader for it */
				if (!src && st.leader)
					(void)xfer_ask(nd, p, st.leader,
						       &next_ask);
				if (!pending++) {
					moving = true;
					snprintf(why, sizeof why, "partition %u "
						 "is not led by this node now",
						 p);
				}
				continue;
			}
			bool healthy[PE_MAX_VOTERS];
			char bad[160] = "";
			size_t bn = 0;
			for (uint32_t i = 0; i < st.nvoters; i++) {
				const char *w = voter_health(nd, &st,
							     st.voters[i], c0[p]);
				healthy[i] = !*w;
				if (*w && st.voters[i] != id && bn < sizeof bad) {
					int k = snprintf(bad + bn, sizeof bad - bn,
							 "%snode %" PRIu64 " %s",
							 bn ? ", " : "",
							 st.voters[i], w);
					if (k > 0)
						bn += (size_t)k;
				}
			}
			uint32_t left, need;
			if (peer_node_removal_safe(st.voters, healthy, st.nvoters,
						   id, &left, &need)) {
				ok[p] = true;
				continue;
			}
			if (!pending++)
				snprintf(why, sizeof why, "partition %u would keep "
					 "%u healthy voter%s of %u, a quorum "
					 "needs %u (%s)", p, left,
					 left == 1 ? "" : "s", st.nvoters - 1,
					 need, bad);
		}
		if (!pending)
			break;
		if (parley_mono_ns() >= ask_round) /* this pass asked */
			next_ask = parley_mono_ns() + XFER_ASK_MS * 1000000ull;
		if (atomic_load(&nd->op_cancel)) {
			snprintf(msg, cap, "the node is stopping: repeat the "
				 "command\n");
			rc = -PARLEY_ECLOSED;
			break;
		}
		if (parley_mono_ns() > end && moving) {
			snprintf(msg, cap, "leadership is moving (%s): repeat "
				 "the command\n", why);
			rc = -PARLEY_EAGAIN;
			break;
		}
		if (parley_mono_ns() > end) {
			snprintf(msg, cap, "refusing to remove node %" PRIu64
				 ": %s; the cluster would stop committing. "
				 "Repair those nodes (or remove a dead one "
				 "first), or repeat with --force (force=1) to "
				 "remove it anyway\n", id, why);
			rc = -PARLEY_EPERM;
			break;
		}
		usleep(50000);
	}
out:
	free(c0);
	free(ok);
	return rc;
}

int peer_node_remove_node(struct peer_node *nd, uint64_t id, bool force,
			  uint32_t wait_ms, char *msg, size_t cap)
{
	snprintf(msg, cap, "error\n");
	if (!id) {
		snprintf(msg, cap, "bad id\n");
		return -PARLEY_EINVAL;
	}
	int rc = lead_check(nd, msg, cap);
	if (rc)
		return rc;
	uint64_t deadline = parley_mono_ns() + (uint64_t)wait_ms * 1000000ull;
	if (!force && (rc = removal_check(nd, id, msg, cap)) != 0) {
		if (rc == -PARLEY_EPERM)
			PLOG_W("cluster", "unsafe removal refused", "node=%"
			       PRIu64, id);
		return rc;
	}
	if (force)
		PLOG_W("cluster", "removal forced: the quorum check is skipped",
		       "node=%" PRIu64, id);
	if (id == nd->cfg.node_id)
		return hand_over(nd, deadline, msg, cap);
	char rec[64];
	snprintf(rec, sizeof rec, "remove %" PRIu64, id);
	if (force) {
		/* Forced, the removal may leave a voter set that cannot
		 * commit (a dead voter among two): the members record would
		 * then never be written after it. So it goes first, while the
		 * node still votes; every node keeps its link until no
		 * partition holds it (rm_wait_add), so the configuration
		 * changes below still get its answers. One command finishes
		 * the removal. */
		rc = members_append(nd, 'R', id, rec);
		if (rc) {
			snprintf(msg, cap, "members record not written (%s): "
				 "nothing changed; repeat the command\n",
				 parley_errname(rc));
			return rc;
		}
	}
	char placed[256] = "";
	if (nd->cfg.replication_factor) { /* its replicas move first (§3.7) */
		uint64_t nodes[PLACEMENT_MAX_NODES];
		uint32_t nn = place_nodes(nd, id, false, nodes), held = 0;
		rc = nn ? place_run(nd, nodes, nn, deadline, &held, id, msg, cap)
			: -PARLEY_EINVAL;
		if (rc)
			return rc;
		snprintf(placed, sizeof placed, "%s", msg);
	} else {
		rc = conf_all(nd, PE_CONF_REMOVE, id, deadline, msg, cap);
	}
	if (rc)
		return rc;
	rc = force ? 0 : members_append(nd, 'R', id, rec);
	if (rc) {
		snprintf(msg, cap, "removed from every partition; members "
			 "record not written (%s): repeat the command\n",
			 parley_errname(rc));
		return rc;
	}
	PLOG_I("cluster", "node removed", "node=%" PRIu64, id);
	snprintf(msg, cap, "node %" PRIu64 " removed from all %u partitions\n%s",
		 id, nd->np, placed);
	return 0;
}

/* ---- placement: the leader table, one conf change anywhere, the mover ----------- */

/*
 * With a replication factor below the node count (docs/CLUSTER.md §3.7)
 * a node holds only some partitions. For the others it learns who leads
 * them from LEADS frames: every LEADS_EVERY_TICKS ticks each node tells
 * every peer whose link is up which partitions it leads and in which term
 * (12 bytes a partition). The table keeps, per partition, the claim of
 * the highest term; a node's claims go when its link goes down or its
 * next LEADS no longer makes them.
 *
 * A membership change of a partition must be proposed by that
 * partition's leader. The node running an operation (the leader of
 * partition 0) makes it itself when it leads the partition, else asks the
 * leader's admin port (POST /cluster/conf, peer_node_conf_one there),
 * following the 409's `leader=` line; every step is idempotent.
 */
#define LEADS_EVERY_TICKS 10u
#define CONF_HTTP_TIMEOUT_MS 5000u
#define PLACE_STEP_SLEEP_US 50000u
#define PLACE_REC_BYTES 480u /* one "place" record at most */

static void leads_send(struct peer_node *nd)
{
	/* with every node a voter of every partition (replication_factor
	 * 0) no table is needed, and nodes built before LEADS keep their
	 * links (they close one that carries an unknown frame type) */
	if (!nd->lead_node || !nd->cfg.replication_factor ||
	    ++nd->lead_tick < LEADS_EVERY_TICKS)
		return;
	nd->lead_tick = 0;
	uint8_t *b = malloc(PEER_LEADS_BYTES(nd->np));
	if (!b)
		return;
	uint32_t k = 0;
	for (uint32_t p = 0; p < nd->np; p++) {
		struct pe_raft_status st;
		if (pe_raft_status(nd->e, p, &st) || st.role != PE_LEADER)
			continue;
		peer_leads_put(b, k++, p, st.term);
	}
	size_t bn = peer_leads_encode(b, k);
	struct peer_node_link l[PEER_NODE_MAX_PEERS];
	uint32_t n = peer_node_links(nd, l, PEER_NODE_MAX_PEERS);
	for (uint32_t i = 0; i < n; i++)
		if (l[i].up &&
		    peer_can_send(nd->peer, l[i].node, PEER_FRAME_LEADS))
			(void)peer_node_send_app(nd, l[i].node, PEER_FRAME_LEADS,
						 b, bn, NULL, 0);
	free(b);
}

static void leads_forget(struct peer_node *nd, uint64_t node)
{
	for (uint32_t p = 0; nd->lead_node && p < nd->np; p++)
		if (atomic_load(&nd->lead_node[p]) == node)
			atomic_store(&nd->lead_node[p], 0);
}

static void leads_on_frame(struct peer_node *nd, uint64_t from,
			   const uint8_t *b, uint32_t n)
{
	int k = nd->lead_node ? peer_leads_decode(b, n, nd->np) : -1;
	if (k < 0)
		return;
	bool *claims = calloc(nd->np, 1);
	if (!claims)
		return;
	for (uint32_t i = 0; i < (uint32_t)k; i++) {
		uint32_t p;
		uint64_t term;
		peer_leads_get(b, i, &p, &term);
		if (p >= nd->np)
			continue;
		claims[p] = true;
		if (term >= atomic_load(&nd->lead_term[p]) ||
		    !atomic_load(&nd->lead_node[p])) {
			atomic_store(&nd->lead_term[p], term);
			atomic_store(&nd->lead_node[p], from);
		}
	}
	for (uint32_t p = 0; p < nd->np; p++)
		if (!claims[p] && atomic_load(&nd->lead_node[p]) == from)
			atomic_store(&nd->lead_node[p], 0);
	free(claims);
}

/* Is this node a member (voter or learner) of p's configuration as it
 * has it? */
static bool holds(struct peer_node *nd, uint32_t p, struct pe_raft_status *st)
{
	if (pe_raft_status(nd->e, p, st) ||
	    (!conf_has(st->voters, st->nvoters, nd->cfg.node_id, NULL) &&
	     !conf_has(st->learners, st->nlearners, nd->cfg.node_id, NULL)))
		return false;
	/* a node removed from a group is not told: its configuration still
	 * names it. The placement map, once it placed p elsewhere, says so */
	struct placement_part pp;
	bool rec = false;
	if (nd->cfg.replication_factor &&
	    placement_map_get(&nd->pmap, p, &pp, &rec) && rec &&
	    !placement_has(pp.voters, pp.nvoters, nd->cfg.node_id) &&
	    !placement_has(pp.learners, pp.nlearners, nd->cfg.node_id))
		return false;
	return true;
}

bool peer_node_holds(struct peer_node *nd, uint32_t p)
{
	struct pe_raft_status st;
	return nd->e && p < nd->np && holds(nd, p, &st);
}

uint64_t peer_node_partition_leader(struct peer_node *nd, uint32_t p)
{
	struct pe_raft_status st;
	if (!nd->e || p >= nd->np)
		return 0;
	if (holds(nd, p, &st))
		return st.role == PE_LEADER ? nd->cfg.node_id : st.leader;
	return nd->lead_node ? atomic_load(&nd->lead_node[p]) : 0;
}

uint64_t peer_node_route(void *arg, uint32_t p)
{
	struct peer_node *nd = arg;
	struct pe_raft_status st;
	if (!nd->e || p >= nd->np)
		return 0;
	if (holds(nd, p, &st)) /* the usual rule (route.h) */
		return UINT64_MAX;
	uint64_t l = nd->lead_node ? atomic_load(&nd->lead_node[p]) : 0;
	return l == nd->cfg.node_id ? 0 : l;
}

/* The admin address of node id (its INFO, else its members record). */
static bool admin_of(struct peer_node *nd, uint64_t id, char *out, size_t cap)
{
	struct peer_link_stats ls;
	out[0] = '\0';
	if (peer_link_stats(nd->peer, id, &ls) == 0)
		info_get(ls.info, "admin", out, cap);
	if (!out[0])
		(void)peer_node_recorded_addr(nd, id, "admin", out, cap);
	return out[0] != '\0';
}

/* A blocking HTTP/1.0 POST of `path` to host:port (numeric; "[v6]:port"
 * for IPv6) within timeout_ms: 0 with *code and the body (truncated to
 * cap) or a negative error. */
static int http_post(const char *hostport, const char *path,
		     uint32_t timeout_ms, int *code, char *body, size_t cap)
{
	char host[64];
	const char *colon = strrchr(hostport, ':');
	if (!colon || (size_t)(colon - hostport) >= sizeof host)
		return -PARLEY_EINVAL;
	size_t hl = (size_t)(colon - hostport);
	memcpy(host, hostport, hl);
	host[hl] = '\0';
	char *h = host;
	if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
		h[hl - 1] = '\0';
		h++;
	}
	unsigned long port = strtoul(colon + 1, NULL, 10);
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		sl = sizeof *a4;
	} else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		sl = sizeof *a6;
	} else {
		return -PARLEY_EINVAL;
	}
	if (!port || port > 65535)
		return -PARLEY_EINVAL;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = {.tv_sec = timeout_ms / 1000,
			     .tv_usec = (long)(timeout_ms % 1000) * 1000};
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	int rc = -PARLEY_EIO;
	char req[512];
	int rl = snprintf(req, sizeof req, "POST %s HTTP/1.0\r\nHost: %s\r\n"
			  "Content-Length: 0\r\nConnection: close\r\n\r\n",
			  path, hostport);
	char resp[2048];
	size_t got = 0;
	if (connect(fd, (struct sockaddr *)&ss, sl) ||
	    rl <= 0 || (size_t)rl >= sizeof req ||
	    write(fd, req, (size_t)rl) != rl)
		goto out;
	for (;;) {
		ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == sizeof resp - 1)
			break;
	}
	resp[got] = '\0';
	if (sscanf(resp, "HTTP/1.%*d %d", code) != 1)
		goto out;
	const char *b = strstr(resp, "\r\n\r\n");
	snprintf(body, cap, "%s", b ? b + 4 : "");
	rc = 0;
out:
	close(fd);
	return rc;
}

static const char *conf_op_name(enum pe_conf_op op)
{
	return op == PE_CONF_ADD_LEARNER ? "add-learner"
	       : op == PE_CONF_PROMOTE	 ? "promote"
					 : "remove";
}

/* Durable before a replica goes: the voters a removal of `node` leaves
 * include a quorum of them that hold the commit index and answered the
 * leader lately (st: the leader's status; peer_node_removal_safe). */
static bool conf_remove_leaves_quorum(const struct pe_raft_status *st,
				      uint64_t node)
{
	bool healthy[PE_MAX_VOTERS];
	uint32_t left, need;
	for (uint32_t i = 0; i < st->nvoters; i++) {
		healthy[i] = false;
		for (uint32_t j = 0; j < st->n_members; j++)
			if (st->members[j].node == st->voters[i])
				healthy[i] = st->members[j].active &&
					     st->members[j].match >= st->commit;
	}
	return peer_node_removal_safe(st->voters, healthy, st->nvoters, node,
				      &left, &need);
}

int peer_node_conf_one(struct peer_node *nd, uint32_t p, enum pe_conf_op op,
		       uint64_t node, char *msg, size_t cap)
{
	snprintf(msg, cap, "error\n");
	if (!nd->e)
		return -PARLEY_EAGAIN;
	if (p >= nd->np || !node || (op != PE_CONF_ADD_LEARNER &&
				     op != PE_CONF_PROMOTE && op != PE_CONF_REMOVE)) {
		snprintf(msg, cap, "bad partition, op or node\n");
		return -PARLEY_EINVAL;
	}
	struct pe_raft_status st;
	int rc = pe_raft_status(nd->e, p, &st);
	if (rc)
		return rc;
	if (pe_partition_leader_check(nd->e, p)) {
		uint64_t l = peer_node_partition_leader(nd, p);
		char line[PEER_NODE_ADDR_MAX + 48];
		leader_line(nd, l == nd->cfg.node_id ? 0 : l, line, sizeof line);
		snprintf(msg, cap, "not the leader of partition %u: ask node %"
			 PRIu64 " (0 = none known)\n%s", p, l, line);
		return -PARLEY_ENOTLEADER;
	}
	bool voter = conf_has(st.voters, st.nvoters, node, NULL);
	bool learner = conf_has(st.learners, st.nlearners, node, NULL);
	if ((op == PE_CONF_ADD_LEARNER && (voter || learner)) ||
	    (op == PE_CONF_PROMOTE && voter) ||
	    (op == PE_CONF_REMOVE && !voter && !learner)) {
		snprintf(msg, cap, "partition %u: %s node %" PRIu64 ": done "
			 "before\n", p, conf_op_name(op), node);
		return 0;
	}
	if (op == PE_CONF_PROMOTE && !learner) {
		snprintf(msg, cap, "partition %u: node %" PRIu64 " is not a "
			 "learner\n", p, node);
		return -PARLEY_EINVAL;
	}
	if (op == PE_CONF_PROMOTE && pe_raft_member_match(&st, node) < st.commit) {
		snprintf(msg, cap, "partition %u: node %" PRIu64 " is catching "
			 "up\n", p, node);
		return -PARLEY_EAGAIN;
	}
	if (op == PE_CONF_REMOVE && voter &&
	    !conf_remove_leaves_quorum(&st, node)) {
		snprintf(msg, cap, "partition %u: removing node %" PRIu64
			 " would leave fewer than a quorum of caught-up "
			 "voters\n", p, node);
		return -PARLEY_EAGAIN;
	}
	struct pe_conf_result r;
	rc = pe_partition_conf_change_sync(nd->e, p, op, node, &r);
	if (rc == -PARLEY_EINVAL)
		snprintf(msg, cap, "partition %u refused %s node %" PRIu64
			 " (node ids are never reused in a group; the last "
			 "voter stays)\n", p, conf_op_name(op), node);
	else if (rc)
		snprintf(msg, cap, "partition %u: %s node %" PRIu64 ": %s\n", p,
			 conf_op_name(op), node, parley_errname(rc));
	else
		snprintf(msg, cap, "partition %u: %s node %" PRIu64 ": done\n",
			 p, conf_op_name(op), node);
	return rc;
}

/* One change of partition p, made by its leader wherever it is;
 * EAGAIN / NOTLEADER are retried until the deadline. */
static int place_step(struct peer_node *nd, uint32_t p, enum pe_conf_op op,
		      uint64_t node, const struct placement_part *known,
		      const struct placement_part *known2, uint64_t deadline,
		      char *msg, size_t cap)
{
	uint64_t hint = 0;
	int last = -PARLEY_EAGAIN;
	char why[256] = "";
	for (;;) {
		if (atomic_load(&nd->op_cancel)) {
			snprintf(msg, cap, "the node is stopping: repeat the "
				 "command\n");
			return -PARLEY_ECLOSED;
		}
		if (nd->op.kind == PEER_NODE_OP_REPLACE &&
		    atomic_load(&nd->op_preempt)) {
			snprintf(msg, cap, "re-placement round stopped for a "
				 "request\n");
			return -PARLEY_ECLOSED;
		}
		if (pe_partition_leader_check(nd->e, p) == 0) {
			last = peer_node_conf_one(nd, p, op, node, why,
						  sizeof why);
			if (last == 0 || last == -PARLEY_EINVAL) {
				if (last)
					snprintf(msg, cap, "%s", why);
				return last;
			}
		} else {
			/* the leader: a 409's hint, the table, the replicas */
			uint64_t cand[2 + 2 * PLACEMENT_MAX_NODES];
			uint32_t nc = 0;
			if (hint)
				cand[nc++] = hint;
			uint64_t l = peer_node_partition_leader(nd, p);
			if (l && l != hint)
				cand[nc++] = l;
			for (uint32_t i = 0; i < known->nvoters; i++)
				if (!placement_has(cand, nc, known->voters[i]))
					cand[nc++] = known->voters[i];
			for (uint32_t i = 0; i < known2->nvoters; i++)
				if (!placement_has(cand, nc, known2->voters[i]))
					cand[nc++] = known2->voters[i];
			hint = 0;
			for (uint32_t i = 0; i < nc && !hint; i++) {
				char adm[PEER_NODE_ADDR_MAX], path[160], body[512];
				int code = 0;
				if (cand[i] == nd->cfg.node_id ||
				    !admin_of(nd, cand[i], adm, sizeof adm))
					continue;
				snprintf(path, sizeof path, "/cluster/conf?"
					 "partition=%u&op=%s&node=%" PRIu64, p,
					 conf_op_name(op), node);
				int hr = http_post(adm, path, CONF_HTTP_TIMEOUT_MS,
						   &code, body, sizeof body);
				if (hr) {
					snprintf(why, sizeof why, "node %" PRIu64
						 " (%s): %s\n", cand[i], adm,
						 parley_errname(hr));
					continue;
				}
				snprintf(why, sizeof why, "node %" PRIu64
					 ": %d %.200s", cand[i], code, body);
				if (code == 200)
					return 0;
				if (code == 400) {
					snprintf(msg, cap, "%s", why);
					return -PARLEY_EINVAL;
				}
				const char *ll = strstr(body, "leader=");
				uint64_t h2 = ll ? strtoull(ll + 7, NULL, 10) : 0;
				if (code == 409 && h2 && h2 != cand[i])
					hint = h2;
				else if (code == 503)
					break; /* the leader: catching up */
			}
			if (hint)
				continue;
		}
		if (parley_mono_ns() > deadline) {
			snprintf(msg, cap, "partition %u: %s node %" PRIu64
				 " not done in time (last: %s)\n", p,
				 conf_op_name(op), node, *why ? why : "-");
			return -PARLEY_ETIMEDOUT;
		}
		usleep(PLACE_STEP_SLEEP_US);
	}
}

/* Appends the target map as "place" records (several when long),
 * leaving out the partitions unrecorded[p] names (NULL: none). */
static int place_write(struct peer_node *nd, const struct placement_part *t,
		       const bool *unrecorded)
{
	char rec[PLACE_REC_BYTES + 64];
	size_t n = (size_t)snprintf(rec, sizeof rec, "place");
	for (uint32_t p = 0; p <= nd->np; p++) {
		char one[160];
		size_t ol = 0;
		if (p < nd->np && !(unrecorded && unrecorded[p])) {
			ol = (size_t)snprintf(one, sizeof one, " %u ", p);
			size_t el = placement_part_encode(&t[p], one + ol,
							  sizeof one - ol);
			if (!el)
				return -PARLEY_EINVAL;
			ol += el;
		}
		if (n > 5 && (p == nd->np || n + ol > PLACE_REC_BYTES)) {
			struct pe_input in = {.type = MEMBERS_TYPE,
					      .len = (uint32_t)n, .payload = rec};
			struct pe_append_req q = {
				.key = MEMBERS_KEY, .klen = strlen(MEMBERS_KEY),
				.expected_last_seq = PE_NO_EXPECT,
				.entries = &in, .count = 1};
			int rc = members_write(nd, &q);
			if (rc)
				return rc;
			n = (size_t)snprintf(rec, sizeof rec, "place");
		}
		if (ol) {
			memcpy(rec + n, one, ol + 1);
			n += ol;
		}
	}
	return 0;
}

/* The configuration of partition p as this node best knows it now: its
 * own when it holds the partition, else `known` (NULL: the placement
 * map). A follower's own can lag its leader's by the last configuration
 * entries. */
static void place_current_one(struct peer_node *nd, uint32_t p,
			      const struct placement_part *known,
			      struct placement_part *c)
{
	struct pe_raft_status st;
	if (holds(nd, p, &st)) {
		memset(c, 0, sizeof *c);
		for (uint32_t i = 0; i < st.nvoters && i < PLACEMENT_MAX_NODES;
		     i++)
			c->voters[c->nvoters++] = st.voters[i];
		for (uint32_t i = 0; i < st.nlearners &&
				     i < PLACEMENT_MAX_NODES; i++)
			c->learners[c->nlearners++] = st.learners[i];
	} else if (known) {
		*c = *known;
		return;
	} else {
		bool rec;
		(void)placement_map_get(&nd->pmap, p, c, &rec);
	}
	c->max_id = placement_map_max_id(&nd->pmap, p);
}

/* place_current_one for every partition. */
static void place_current(struct peer_node *nd, struct placement_part *cur)
{
	for (uint32_t p = 0; p < nd->np; p++)
		place_current_one(nd, p, NULL, &cur[p]);
}

/* Moves the cluster to the placement of `nodes` (after an add or before
 * a removal): writes the target map, adds every new replica as a learner,
 * promotes the voters once they caught up (their leader's view), then
 * removes the replicas the target drops. */
static int place_run(struct peer_node *nd, const uint64_t *nodes, uint32_t n,
		     uint64_t deadline, uint32_t *held_by, uint64_t who,
		     char *msg, size_t cap)
{
	struct placement_part *cur = calloc(nd->np, sizeof *cur);
	struct placement_part *t = calloc(nd->np, sizeof *t);
	int rc = -PARLEY_ENOMEM;
	if (!cur || !t)
		goto out;
	place_current(nd, cur);
	int missing = placement_compute(nodes, n, nd->cfg.replication_factor,
					cur, nd->np, nd->meta, nd->nmeta, t);
	if (missing < 0) {
		snprintf(msg, cap, "no placement for these nodes\n");
		rc = -PARLEY_EINVAL;
		goto out;
	}
	if (missing)
		PLOG_W("cluster", "placement short of replicas (fewer nodes "
		       "than the replication factor)", "missing=%d", missing);
	rc = place_apply(nd, cur, t, NULL, deadline, msg, cap);
	if (rc)
		goto out;
	*held_by = 0;
	for (uint32_t p = 0; p < nd->np; p++)
		*held_by += placement_has(t[p].voters, t[p].nvoters, who);
	if (missing)
		snprintf(msg, cap, "%d replicas could not be placed (fewer "
			 "nodes than the replication factor)\n", missing);
	else
		msg[0] = '\0';
	rc = 0;
out:
	free(cur);
	free(t);
	return rc;
}

/* Promotes learner id of partition p. A leader that refuses it (400:
 * not a learner there) lost the learner's addition: it was added on a
 * former leader and not committed before the leadership moved (seen in
 * cluster_test_cluster_replace_after_removal: "partition 15 refused
 * promote node 4"); it is added again, then promoted. */
static int place_promote(struct peer_node *nd, uint32_t p, uint64_t id,
			 const struct placement_part *cur,
			 const struct placement_part *o, uint64_t deadline,
			 char *msg, size_t cap)
{
	int rc = place_step(nd, p, PE_CONF_PROMOTE, id, cur, o, deadline, msg,
			    cap);
	for (int again = 0; rc == -PARLEY_EINVAL && again < 2; again++) {
		PLOG_W("cluster", "promotion refused: the learner is added "
		       "again", "partition=%u node=%" PRIu64 " why=%s", p, id,
		       msg);
		rc = place_step(nd, p, PE_CONF_ADD_LEARNER, id, cur, o,
				deadline, msg, cap);
		if (!rc)
			rc = place_step(nd, p, PE_CONF_PROMOTE, id, cur, o,
					deadline, msg, cap);
	}
	return rc;
}

/*
 * place_apply's last stage for partition p: removes the replicas the
 * target o drops. cur was read when the operation began, possibly on a
 * follower whose configuration lagged its leader's (a leader that had
 * just removed itself, its removal not yet replicated here): a target
 * computed from it can keep a node that is no longer a member and so
 * skip adding it, and removing what it drops would then leave the group
 * short of a replica (seen: partition 47 left with 2 voters,
 * test_cluster_placement_spread). So where this node holds p its
 * configuration is read again here (elsewhere cur, the map before this
 * operation wrote it, is all it knows), every target voter missing from
 * it is added and promoted first, and only what it holds beyond the
 * target is removed.
 */
static int place_drop(struct peer_node *nd, uint32_t p,
		      const struct placement_part *cur,
		      const struct placement_part *o, uint64_t deadline,
		      char *msg, size_t cap)
{
	struct placement_part f;
	place_current_one(nd, p, cur, &f);
	int rc;
	for (uint32_t i = 0; i < o->nvoters; i++) {
		uint64_t id = o->voters[i];
		if (placement_has(f.voters, f.nvoters, id))
			continue;
		PLOG_W("cluster", "a target voter is not a member yet: added "
		       "before any removal", "partition=%u node=%" PRIu64, p, id);
		if (!placement_has(f.learners, f.nlearners, id) &&
		    (rc = place_step(nd, p, PE_CONF_ADD_LEARNER, id, cur, o,
				     deadline, msg, cap)))
			return rc;
		if ((rc = place_promote(nd, p, id, cur, o, deadline, msg, cap)))
			return rc;
	}
	place_current_one(nd, p, cur, &f);
	for (int w = 0; w < 2; w++) {
		const uint64_t *ids = w ? f.learners : f.voters;
		uint32_t k = w ? f.nlearners : f.nvoters;
		for (uint32_t i = 0; i < k; i++)
			if (!placement_has(o->voters, o->nvoters, ids[i]) &&
			    !placement_has(o->learners, o->nlearners, ids[i]) &&
			    (rc = place_step(nd, p, PE_CONF_REMOVE, ids[i], cur,
					     o, deadline, msg, cap)))
				return rc;
	}
	return 0;
}

/* Moves the cluster from cur to the target t: writes t as the map, adds
 * every new replica as a learner, promotes the voters once they caught
 * up (their leader's view), then removes the replicas t drops. */
static int place_apply(struct peer_node *nd, const struct placement_part *cur,
		       const struct placement_part *t, const bool *unrecorded,
		       uint64_t deadline, char *msg, size_t cap)
{
	int rc = place_write(nd, t, unrecorded);
	if (rc) {
		snprintf(msg, cap, "placement record not written: %s\n",
			 parley_errname(rc));
		return rc;
	}
	for (int stage = 0; stage < 3; stage++)
		for (uint32_t p = 0; p < nd->np; p++) {
			const struct placement_part *c = &cur[p], *o = &t[p];
			if (stage == 0) { /* new replicas join as learners */
				for (int w = 0; w < 2; w++) {
					const uint64_t *ids = w ? o->learners
								: o->voters;
					uint32_t k = w ? o->nlearners : o->nvoters;
					for (uint32_t i = 0; i < k; i++)
						if (!placement_has(c->voters, c->nvoters, ids[i]) &&
						    !placement_has(c->learners, c->nlearners, ids[i]) &&
						    (rc = place_step(nd, p, PE_CONF_ADD_LEARNER,
								     ids[i], c, o, deadline,
								     msg, cap)))
							return rc;
				}
			} else if (stage == 1) { /* caught up: voters */
				for (uint32_t i = 0; i < o->nvoters; i++)
					if (!placement_has(c->voters, c->nvoters,
							   o->voters[i]) &&
					    (rc = place_promote(nd, p, o->voters[i],
								c, o, deadline, msg,
								cap)))
						return rc;
			} else if ((rc = place_drop(nd, p, c, o, deadline, msg,
						    cap))) {
				return rc;
			}
		}
	return 0;
}

/* The cluster's nodes: partition 0's members (every node is a member of
 * the meta group), with `id` added or taken out. */
static uint32_t place_nodes(struct peer_node *nd, uint64_t id, bool add,
			    uint64_t *out)
{
	struct pe_raft_status st;
	uint32_t n = 0;
	if (pe_raft_status(nd->e, 0, &st))
		return 0;
	for (int w = 0; w < 2; w++) {
		const uint64_t *ids = w ? st.learners : st.voters;
		uint32_t k = w ? st.nlearners : st.nvoters;
		for (uint32_t i = 0; i < k && n < PLACEMENT_MAX_NODES; i++)
			if (ids[i] != id)
				out[n++] = ids[i];
	}
	if (add && n < PLACEMENT_MAX_NODES)
		out[n++] = id;
	return n;
}

/* ---- the automatic re-placement (replica_replace_ms) ------------------------------ */

/*
 * A production store re-places the replicas of a node that stays dead
 * (CockroachDB: server.time_until_store_dead). Here the leader of
 * partition 0 does it, on its node thread's ticks:
 *   - every REPLACE_CHECK_MS it notes, per member of partition 0, since
 *     when its link is down; a member down for replica_replace_ms is
 *     *down* (it stays a member of the cluster and of the meta group);
 *   - while fewer live nodes than the replication factor remain, nothing
 *     moves (there is nowhere to put the replicas of a down node);
 *   - a round starts on the membership worker (PEER_NODE_OP_REPLACE)
 *     when no operation runs and a partition outside the meta group has
 *     a replica on a down node; after such a round, also while the
 *     placement over the live nodes (the members that are not down) is
 *     not *converged*: every partition outside the meta group with
 *     min(replication_factor, live) voters, all live, no learner, the
 *     live nodes' loads within one of each other (what placement_compute
 *     leaves). A cluster where no node went down is never touched;
 *   - a round computes the target over the live nodes from the current
 *     placement and takes at most REPLACE_PARTS_PER_ROUND partitions of
 *     it (those with a replica on a down node first: the balancing
 *     moves wait until none is left), each only when the voters it has
 *     now that are alive (this
 *     node, or link up and not down) are a quorum of them (else the
 *     change could not commit; counted in no_quorum); the meta group's
 *     partitions are left as they are (a meta voter is never demoted).
 *     It then moves them as add-node does (map record, learner, promote
 *     once caught up, removal), and the next check goes on.
 * A node that comes back is live again: that alone starts rounds (also
 * when every partition already has its voters on the other live nodes),
 * the loads then differ by two or more and rounds give it its share (its replicas moved away meanwhile
 * are not in any configuration; where it is placed again it rejoins the
 * group with its own log, raft.h). A round that moves nothing or fails
 * makes the next check wait REPLACE_RETRY_MS.
 */
#define REPLACE_CHECK_MS 1000u
#define REPLACE_RETRY_MS 5000u
#define REPLACE_PARTS_PER_ROUND 4u
#define REPLACE_TRIMS_PER_ROUND 16u /* partitions only losing replicas */
#define REPLACE_ROUND_MS 30000u /* a round's bound (its steps' deadline) */
#define REPLACE_UNSEEN_MS 30000u /* see replace_tick */

static bool part_same(const struct placement_part *a,
		      const struct placement_part *b)
{
	if (a->nvoters != b->nvoters || a->nlearners != b->nlearners)
		return false;
	for (uint32_t i = 0; i < a->nvoters; i++)
		if (!placement_has(b->voters, b->nvoters, a->voters[i]))
			return false;
	for (uint32_t i = 0; i < a->nlearners; i++)
		if (!placement_has(b->learners, b->nlearners, a->learners[i]))
			return false;
	return true;
}

/* Has partition c a replica on one of down[0..n)? */
static bool part_down(const struct placement_part *c, const uint64_t *down,
		      uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (placement_has(c->voters, c->nvoters, down[i]) ||
		    placement_has(c->learners, c->nlearners, down[i]))
			return true;
	return false;
}

/* How many partitions outside the meta group have a replica on one of
 * down[0..n). */
static uint32_t replace_affected(const struct peer_node *nd,
				 const struct placement_part *cur,
				 const uint64_t *down, uint32_t n)
{
	uint32_t k = 0;
	for (uint32_t p = 0; n && p < nd->np; p++) {
		if (is_meta_part(nd, p))
			continue;
		k += part_down(&cur[p], down, n);
	}
	return k;
}

/* Is the placement cur[] converged over live[0..n)? (see above) */
static bool replace_converged(const struct peer_node *nd,
			      const struct placement_part *cur,
			      const uint64_t *live, uint32_t n)
{
	uint32_t rf = nd->cfg.replication_factor;
	uint32_t r = rf > n ? n : rf;
	uint32_t load[PLACEMENT_MAX_NODES] = {0};
	for (uint32_t p = 0; p < nd->np; p++) {
		const struct placement_part *c = &cur[p];
		if (is_meta_part(nd, p))
			continue;
		if (c->nvoters != r || c->nlearners)
			return false;
		for (uint32_t i = 0; i < c->nvoters; i++) {
			uint32_t k = 0;
			while (k < n && live[k] != c->voters[i])
				k++;
			if (k == n)
				return false; /* on a down node */
			load[k]++;
		}
	}
	uint32_t lo = UINT32_MAX, hi = 0;
	for (uint32_t k = 0; k < n; k++) {
		lo = load[k] < lo ? load[k] : lo;
		hi = load[k] > hi ? load[k] : hi;
	}
	return !n || hi < lo + 2;
}

/* How many partitions outside the meta group the map never placed while
 * the founders that hold them outnumber min(replication_factor, live):
 * a cluster formed with more founders than the replication factor, not
 * placed yet (a formation round places it; its records name only the
 * partitions it moved, so this counts down as rounds go). */
static uint32_t replace_unplaced(struct peer_node *nd, uint32_t nlive)
{
	uint32_t rf = nd->cfg.replication_factor, k = 0;
	uint32_t r = rf > nlive ? nlive : rf;
	for (uint32_t p = 0; p < nd->np; p++) {
		struct placement_part pp;
		bool rec = true;
		if (!is_meta_part(nd, p) &&
		    placement_map_get(&nd->pmap, p, &pp, &rec) && !rec &&
		    pp.nvoters > r)
			k++;
	}
	return k;
}

/* Node thread, every tick: the down-since table, and a round when this
 * node leads partition 0, no operation runs and the placement over the
 * live nodes is not converged, or was never made (replace_unplaced). */
static void replace_tick(struct peer_node *nd, uint64_t now)
{
	if (!nd->cfg.replication_factor || !nd->e || now < nd->rp_next_ms)
		return;
	nd->rp_next_ms = now + REPLACE_CHECK_MS;
	uint64_t nodes[PLACEMENT_MAX_NODES], ids[PLACEMENT_MAX_NODES];
	uint64_t since[PLACEMENT_MAX_NODES];
	bool seen[PLACEMENT_MAX_NODES], down[PLACEMENT_MAX_NODES];
	uint32_t n = place_nodes(nd, 0, false, nodes), k = 0;
	if (!nd->rp_start_ms)
		nd->rp_start_ms = now;
	/* a node this one never saw up since it started (both just
	 * started, or it was down before) counts as down only once this
	 * node has run REPLACE_UNSEEN_MS too: peers need time to connect */
	bool settled = now - nd->rp_start_ms >=
		       PARLEY_MAX(REPLACE_UNSEEN_MS, nd->cfg.replica_replace_ms);
	struct peer_node_op op = {.kind = PEER_NODE_OP_REPLACE,
				  .wait_ms = REPLACE_ROUND_MS};
	uint64_t live[PLACEMENT_MAX_NODES];
	uint32_t nlive = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t id = nodes[i], s0 = 0;
		bool sn = true, was_down = false;
		if (id != nd->cfg.node_id) {
			struct peer_link_stats ls;
			bool up = peer_link_stats(nd->peer, id, &ls) == 0 &&
				  ls.state == PEER_LINK_UP;
			sn = up;
			for (uint32_t j = 0; j < nd->nrd; j++)
				if (nd->rd_id[j] == id) {
					s0 = nd->rd_since[j];
					sn = sn || nd->rd_seen[j];
					was_down = nd->rd_down[j];
				}
			s0 = up ? 0 : s0 ? s0 : now;
			ids[k] = id;
			seen[k] = sn;
			since[k] = s0;
			down[k++] = false;
		}
		/* replica_replace_ms 0: never down (a formation round
		 * still places the founders' partitions) */
		if (s0 && nd->cfg.replica_replace_ms &&
		    now - s0 >= nd->cfg.replica_replace_ms &&
		    (sn || settled) && op.ndown < PEER_NODE_MAX_DOWN) {
			op.down[op.ndown++] = id;
			down[k - 1] = true;
		} else {
			live[nlive++] = id;
			/* a down node is live again: its replicas moved
			 * while it was down, so it holds less than its
			 * share (§3.7, "When the node returns") */
			if (was_down)
				nd->rp_rebalance = true;
		}
	}
	memcpy(nd->rd_id, ids, k * sizeof ids[0]);
	memcpy(nd->rd_since, since, k * sizeof since[0]);
	memcpy(nd->rd_seen, seen, k * sizeof seen[0]);
	memcpy(nd->rd_down, down, k * sizeof down[0]);
	nd->nrd = k;
	bool lead = pe_partition_leader_check(nd->e, 0) == 0;
	pthread_mutex_lock(&nd->op_mu);
	nd->rp.ndown = lead ? op.ndown : 0;
	memcpy(nd->rp.down, op.down, sizeof op.down);
	bool busy = nd->op_busy;
	pthread_mutex_unlock(&nd->op_mu);
	/* fewer live nodes than the replication factor: nowhere to put a
	 * down node's replicas (removing them would only lower the
	 * replication); wait for a node to return or be added */
	if (!lead || busy || !nlive ||
	    (op.ndown && nlive < nd->cfg.replication_factor))
		return;
	struct placement_part *cur = calloc(nd->np, sizeof *cur);
	if (!cur)
		return;
	place_current(nd, cur);
	bool affected = replace_affected(nd, cur, op.down, op.ndown) > 0;
	bool unplaced = replace_unplaced(nd, nlive) > 0;
	bool done = !affected && !unplaced &&
		    (!nd->rp_rebalance || replace_converged(nd, cur, live, nlive));
	free(cur);
	if (done) {
		nd->rp_rebalance = false;
		return;
	}
	nd->rp_rebalance = true;
	op.id = op.ndown ? op.down[0] : 0;
	uint64_t ticket;
	char msg[160];
	if (peer_node_op_start(nd, &op, &ticket, msg, sizeof msg) == 0)
		PLOG_I("cluster", "replica re-placement round started",
		       "down=%u first_down=%" PRIu64, op.ndown, op.id);
}

/* The membership worker: one round (see above). */
static int replace_round(struct peer_node *nd, const struct peer_node_op *op,
			 char *msg, size_t cap)
{
	int rc = lead_check(nd, msg, cap);
	if (rc)
		return rc;
	uint64_t nodes[PLACEMENT_MAX_NODES], live[PLACEMENT_MAX_NODES];
	uint32_t n = place_nodes(nd, 0, false, nodes), nlive = 0;
	for (uint32_t i = 0; i < n; i++)
		if (!placement_has(op->down, op->ndown, nodes[i]))
			live[nlive++] = nodes[i];
	struct placement_part *cur = calloc(nd->np, sizeof *cur);
	struct placement_part *t = calloc(nd->np, sizeof *t);
	uint32_t chosen = 0, trims = 0, noq = 0, pending = 0, moves = 0;
	bool *keep = calloc(nd->np, sizeof *keep);
	rc = -PARLEY_ENOMEM;
	if (!cur || !t || !keep || !nlive)
		goto out;
	place_current(nd, cur);
	if (placement_compute(live, nlive, nd->cfg.replication_factor, cur,
			      nd->np, nd->meta, nd->nmeta, t) < 0) {
		rc = -PARLEY_EINVAL;
		snprintf(msg, cap, "no placement for the live nodes\n");
		goto out;
	}
	/* a down node's replicas first: the other moves (balance) wait
	 * until none is left */
	bool any_down = replace_affected(nd, cur, op->down, op->ndown) > 0;
	for (uint32_t p = 0; p < nd->np; p++) {
		const struct placement_part *c = &cur[p];
		/* only removals (the founders' partitions trimmed to the
		 * replication factor): nothing is copied, REPLACE_TRIMS_PER_ROUND */
		bool trim = placement_moves(c, &t[p], 1) == 0;
		if (is_meta_part(nd, p) || part_same(c, &t[p])) {
			t[p] = *c;
			continue;
		}
		if (any_down && !part_down(c, op->down, op->ndown)) {
			t[p] = *c; /* balance: a later round */
			pending++;
			continue;
		}
		uint32_t alive = 0;
		for (uint32_t i = 0; i < c->nvoters; i++) {
			uint64_t v = c->voters[i];
			struct peer_link_stats ls;
			alive += v == nd->cfg.node_id ||
				 (!placement_has(op->down, op->ndown, v) &&
				  peer_link_stats(nd->peer, v, &ls) == 0 &&
				  ls.state == PEER_LINK_UP);
		}
		if (alive < c->nvoters / 2 + 1) {
			t[p] = *c; /* the change could not commit */
			noq++;
		} else if (trim ? trims >= REPLACE_TRIMS_PER_ROUND
				: chosen - trims >= REPLACE_PARTS_PER_ROUND) {
			t[p] = *c; /* throttled: a later round */
			pending++;
		} else {
			chosen++;
			trims += trim;
		}
	}
	/* the record names what this round moves (and what the map had
	 * before): a partition never recorded and left as it is stays "held
	 * by the founders", which replace_unplaced counts */
	for (uint32_t p = 0; p < nd->np; p++) {
		struct placement_part pp;
		bool rec = true;
		(void)placement_map_get(&nd->pmap, p, &pp, &rec);
		keep[p] = !rec && part_same(&cur[p], &t[p]);
	}
	moves = placement_moves(cur, t, nd->np);
	uint32_t removed = placement_moves(t, cur, nd->np);
	if (!chosen) {
		snprintf(msg, cap, "nothing to move (%u partitions without a "
			 "quorum of live replicas)\n", noq);
		rc = 0;
		goto out;
	}
	PLOG_I("cluster", "re-placing replicas", "partitions=%u replicas=%u "
	       "removed=%u down=%u pending=%u no_quorum=%u", chosen, moves,
	       removed, op->ndown, pending, noq);
	rc = place_apply(nd, cur, t, keep,
			 parley_mono_ns() + (uint64_t)op->wait_ms * 1000000ull,
			 msg, cap);
	if (!rc)
		snprintf(msg, cap, "%u replicas moved (%u removed) in %u "
			 "partitions; %u partitions left to move, %u without a "
			 "quorum of live replicas\n", moves, removed, chosen,
			 pending, noq);
out:
	pthread_mutex_lock(&nd->op_mu);
	nd->rp.rounds++;
	nd->rp.failed_rounds += rc != 0;
	if (!rc) {
		nd->rp.moves += moves;
		nd->rp.pending = pending;
	}
	nd->rp.no_quorum = noq;
	pthread_mutex_unlock(&nd->op_mu);
	if (rc || !chosen) /* no progress: wait longer before the next */
		nd->rp_next_ms = parley_mono_ns() / 1000000u + REPLACE_RETRY_MS;
	if (rc)
		PLOG_W("cluster", "replica re-placement round failed", "err=%s "
		       "msg=%.200s", parley_errname(rc), msg);
	free(cur);
	free(t);
	free(keep);
	return rc;
}

void peer_node_replace_stats(struct peer_node *nd,
			     struct peer_node_replace_stats *out)
{
	pthread_mutex_lock(&nd->op_mu);
	*out = nd->rp;
	pthread_mutex_unlock(&nd->op_mu);
	out->replace_ms = nd->cfg.replication_factor
				  ? nd->cfg.replica_replace_ms : 0;
}

/* ---- the membership worker ------------------------------------------------------- */

const char *peer_node_op_name(enum peer_node_op_kind k)
{
	return k == PEER_NODE_OP_ADD	    ? "add"
	       : k == PEER_NODE_OP_REMOVE  ? "remove"
	       : k == PEER_NODE_OP_REBALANCE ? "rebalance"
	       : k == PEER_NODE_OP_REPLACE   ? "replace"
					     : "?";
}

void peer_node_op_describe(const struct peer_node_op *op, uint64_t elapsed_ms,
			   char *out, size_t cap)
{
	if (op->kind == PEER_NODE_OP_REBALANCE) {
		snprintf(out, cap, "rebalance, %" PRIu64 " s",
			 elapsed_ms / 1000);
		return;
	}
	if (op->kind == PEER_NODE_OP_REPLACE) {
		char d[96] = "";
		size_t n = 0;
		for (uint32_t i = 0; i < op->ndown && n < sizeof d; i++) {
			int k = snprintf(d + n, sizeof d - n, "%s%" PRIu64,
					 i ? "," : "", op->down[i]);
			n += k > 0 ? (size_t)k : 0;
		}
		snprintf(out, cap, "re-place replicas (%s%s), %" PRIu64 " s",
			 op->ndown ? "down nodes " : "rebalance onto live "
			 "nodes", d, elapsed_ms / 1000);
		return;
	}
	snprintf(out, cap, "%s node %" PRIu64 "%s, %" PRIu64 " s",
		 peer_node_op_name(op->kind), op->id,
		 op->kind == PEER_NODE_OP_REMOVE && op->force ? " (forced)" : "",
		 elapsed_ms / 1000);
}

static void *op_main(void *arg)
{
	struct peer_node *nd = arg;
	const struct peer_node_op *op = &nd->op; /* fixed while it runs */
	char msg[sizeof nd->op_msg];
	int rc = op->kind == PEER_NODE_OP_ADD
			 ? peer_node_add_node(nd, op->id, op->peer, op->client,
					      op->admin, op->wait_ms, msg,
					      sizeof msg)
		 : op->kind == PEER_NODE_OP_REPLACE
			 ? replace_round(nd, op, msg, sizeof msg)
		 : op->kind == PEER_NODE_OP_REBALANCE
			 ? peer_node_rebalance(nd, op->wait_ms, msg, sizeof msg)
			 : peer_node_remove_node(nd, op->id, op->force,
						 op->wait_ms, msg, sizeof msg);
	pthread_mutex_lock(&nd->op_mu);
	nd->op_rc = rc;
	memcpy(nd->op_msg, msg, sizeof msg);
	nd->op_busy = false;
	pthread_mutex_unlock(&nd->op_mu);
	return NULL;
}

int peer_node_op_start(struct peer_node *nd, const struct peer_node_op *op,
		       uint64_t *ticket, char *msg, size_t cap)
{
	snprintf(msg, cap, "error\n");
	pthread_mutex_lock(&nd->op_mu);
	int rc = 0;
	if (nd->op_busy) {
		char d[96];
		peer_node_op_describe(&nd->op, (parley_mono_ns() -
						nd->op_start_ns) / 1000000u,
				      d, sizeof d);
		/* a request wins over an automatic round: it stops at its
		 * next step (what it changed stays, the map says so) */
		bool pre = nd->op.kind == PEER_NODE_OP_REPLACE &&
			   op->kind != PEER_NODE_OP_REPLACE;
		if (pre)
			atomic_store(&nd->op_preempt, true);
		snprintf(msg, cap, "operation in progress (%s): %s\n", d,
			 pre ? "it stops for this request: repeat it in a "
			       "moment" : "wait for its answer, then repeat");
		rc = -PARLEY_EAGAIN;
	} else if (!nd->started || !nd->e || atomic_load(&nd->op_cancel)) {
		snprintf(msg, cap, "not running\n");
		rc = -PARLEY_ECLOSED;
	}
	if (rc) {
		pthread_mutex_unlock(&nd->op_mu);
		return rc;
	}
	if (nd->op_joinable) { /* the last one ended (op_busy is false) */
		pthread_join(nd->op_thr, NULL);
		nd->op_joinable = false;
	}
	nd->op = *op;
	nd->op_busy = true;
	atomic_store(&nd->op_preempt, false);
	nd->op_start_ns = parley_mono_ns();
	nd->op_rc = 0;
	nd->op_msg[0] = '\0';
	*ticket = ++nd->op_ticket;
	if (pthread_create(&nd->op_thr, NULL, op_main, nd)) {
		nd->op_busy = false;
		pthread_mutex_unlock(&nd->op_mu);
		snprintf(msg, cap, "cannot start a thread\n");
		return -PARLEY_ENOMEM;
	}
	nd->op_joinable = true;
	pthread_mutex_unlock(&nd->op_mu);
	return 0;
}

int peer_node_op_result(struct peer_node *nd, uint64_t ticket, int *rc,
			char *msg, size_t cap)
{
	pthread_mutex_lock(&nd->op_mu);
	int r = ticket != nd->op_ticket ? -PARLEY_ENOTFOUND
		: nd->op_busy		? -PARLEY_EAGAIN
					: 0;
	if (!r) {
		*rc = nd->op_rc;
		snprintf(msg, cap, "%s", nd->op_msg);
	}
	pthread_mutex_unlock(&nd->op_mu);
	return r;
}

bool peer_node_op_running(struct peer_node *nd, struct peer_node_op *op,
			  uint64_t *elapsed_ms)
{
	pthread_mutex_lock(&nd->op_mu);
	bool busy = nd->op_busy;
	if (busy) {
		*op = nd->op;
		*elapsed_ms = (parley_mono_ns() - nd->op_start_ns) / 1000000u;
	}
	pthread_mutex_unlock(&nd->op_mu);
	return busy;
}

static void shed_tick(struct peer_node *nd, uint64_t now);

static void *node_main(void *arg)
{
	struct peer_node *nd = arg;
	while (!atomic_load(&nd->stop)) {
		apply_cmds(nd);
		struct epoll_event evs[4];
		int n = epoll_wait(nd->ep, evs, 4, 1000);
		if (n < 0 && errno != EINTR) {
			PLOG_E("cluster", "epoll_wait failed", "err=%s",
			       strerror(errno));
			break;
		}
		bool tick = false;
		for (int i = 0; i < n; i++) {
			uint64_t v;
			if (evs[i].data.fd == nd->tfd) {
				if (read(nd->tfd, &v, sizeof v) == sizeof v)
					tick = true;
			} else if (evs[i].data.fd == nd->evfd) {
				ssize_t r = read(nd->evfd, &v, sizeof v);
				(void)r;
			}
		}
		(void)peer_poll(nd->peer, 0);
		if (tick) {
			(void)pe_raft_tick(nd->e);
			observe_raft(nd);
			leads_send(nd);
			shed_tick(nd, parley_mono_ns() / 1000000u);
			replace_tick(nd, parley_mono_ns() / 1000000u);
			rm_wait_check(nd);
			if (nd->app.on_tick)
				nd->app.on_tick(nd->app.arg,
						parley_mono_ns() / 1000000u);
		}
		drain_outbox(nd);
		fwd_poll(nd->fwd, now_ms());
		drain_app(nd);
		peer_flush(nd->peer);
	}
	return NULL;
}

/* ---- leader placement: transfer and rebalance (docs/CLUSTER.md §3.2) ------------- */


/* Waits until none of the partitions in want[] is led by this node any
 * more (asking again every XFER_ASK_MS), or the deadline. Returns how
 * many are still led here. */
static uint32_t xfer_wait(struct peer_node *nd, const uint64_t *to,
			  uint64_t deadline)
{
	uint64_t next_ask = parley_mono_ns() + XFER_ASK_MS * 1000000ull;
	for (;;) {
		uint32_t left = 0;
		bool ask = parley_mono_ns() >= next_ask;
		for (uint32_t p = 0; p < nd->np; p++) {
			struct pe_raft_status st;
			if (!to[p] || pe_raft_status(nd->e, p, &st) ||
			    st.role != PE_LEADER)
				continue;
			left++;
			if (ask)
				(void)pe_raft_transfer_partition(nd->e, p, to[p]);
		}
		if (ask)
			next_ask = parley_mono_ns() + XFER_ASK_MS * 1000000ull;
		if (!left || parley_mono_ns() > deadline ||
		    atomic_load(&nd->op_cancel)) /* halting */
			return left;
		usleep(20000);
	}
}

int peer_node_transfer(struct peer_node *nd, uint32_t part, uint64_t to,
		       uint32_t wait_ms, char *msg, size_t cap)
{
	if (!nd->e || part >= nd->np || !to || to == nd->cfg.node_id) {
		snprintf(msg, cap, "partition < %u and to=N (another node) "
			 "required\n", nd->np);
		return -PARLEY_EINVAL;
	}
	struct pe_raft_status st;
	int rc = pe_raft_status(nd->e, part, &st);
	if (rc)
		return rc;
	if (st.role != PE_LEADER) {
		char line[160];
		leader_line(nd, st.leader, line, sizeof line);
		snprintf(msg, cap, "not the leader of partition %u: ask node %"
			 PRIu64 "\n%s", part, st.leader, line);
		return -PARLEY_ENOTLEADER;
	}
	if (!conf_has(st.voters, st.nvoters, to, NULL)) {
		snprintf(msg, cap, "node %" PRIu64 " is no voter of partition "
			 "%u\n", to, part);
		return -PARLEY_EINVAL;
	}
	uint64_t *want = calloc(nd->np, sizeof *want);
	if (!want)
		return -PARLEY_ENOMEM;
	want[part] = to;
	rc = pe_raft_transfer_partition(nd->e, part, to);
	uint64_t deadline = parley_mono_ns() + (uint64_t)wait_ms * 1000000ull;
	uint32_t left = rc ? 1 : xfer_wait(nd, want, deadline);
	free(want);
	if (rc) {
		snprintf(msg, cap, "transfer refused: %s\n", parley_errname(rc));
		return rc;
	}
	if (left) {
		snprintf(msg, cap, "partition %u still led here: node %" PRIu64
			 " not caught up in time (repeat the command)\n", part,
			 to);
		return -PARLEY_ETIMEDOUT;
	}
	(void)pe_raft_status(nd->e, part, &st);
	snprintf(msg, cap, "partition %u handed over: leader %" PRIu64 "\n",
		 part, st.leader);
	return 0;
}

/* The hand-over a rebalance makes (docs/CLUSTER.md §3.2): the nodes are
 * partition 0's voters whose link is up (and this one; with a
 * replication factor also its learners: every node is a member of the
 * meta group), each to lead floor or ceil of partitions / nodes (share:
 * ceil); while this node gives (placement_lead_shed: above ceil, or at
 * ceil while a node is below floor) its partitions go to the least
 * loaded of their voters that take. Fills want[p] (the target
 * of each partition handed, 0 = kept) and the plan's nodes and counts
 * after it, and the view it decided on (pl->view, for
 * placement_lead_chain); asks each transfer (pe_raft_transfer_partition,
 * non-blocking). Returns how many were handed, or < 0 (this node is no
 * voter: -PARLEY_EINVAL; with all_led, a partition without a known
 * leader among the nodes: -PARLEY_EAGAIN, nothing handed). The caller
 * frees pl->leader and pl->voters (also on an error). */
struct rb_plan {
	uint64_t ids[PLACEMENT_MAX_NODES];
	uint32_t cnt[PLACEMENT_MAX_NODES], n, self, share;
	uint8_t *leader;   /* np */
	uint16_t *voters;  /* np */
	struct placement_leads view;
};

static void rb_plan_free(struct rb_plan *pl)
{
	free(pl->leader);
	free(pl->voters);
	pl->leader = NULL;
	pl->voters = NULL;
}

static int rebalance_plan(struct peer_node *nd, uint64_t *want, bool all_led,
			  struct rb_plan *pl)
{
	struct pe_raft_status s0;
	memset(pl, 0, sizeof *pl);
	int rc = pe_raft_status(nd->e, 0, &s0);
	if (rc)
		return rc;
	for (int w = 0; w < 2; w++) {
		const uint64_t *ids = w ? s0.learners : s0.voters;
		uint32_t k = w ? s0.nlearners : s0.nvoters;
		if (w && !nd->cfg.replication_factor)
			break; /* learners of an add-node under way */
		for (uint32_t i = 0; i < k && pl->n < PLACEMENT_MAX_NODES; i++)
			if (ids[i] == nd->cfg.node_id || fwd_up(nd, ids[i]))
				pl->ids[pl->n++] = ids[i];
	}
	if (!conf_has(pl->ids, pl->n, nd->cfg.node_id, NULL))
		return -PARLEY_EINVAL;
	pl->leader = malloc(nd->np);
	pl->voters = calloc(nd->np, sizeof *pl->voters);
	struct placement_part *cur = calloc(nd->np, sizeof *cur);
	uint8_t *to = malloc(nd->np);
	rc = -PARLEY_ENOMEM;
	if (!pl->leader || !pl->voters || !cur || !to)
		goto out;
	/* who holds each partition: this node's configuration where it
	 * holds it, else the placement map (place_current) */
	place_current(nd, cur);
	uint32_t led = 0;
	for (uint32_t p = 0; p < nd->np; p++) {
		/* with a replication factor this node holds only some
		 * partitions: the others' leaders come from the leader table
		 * (their own group, if any, is stale) */
		uint64_t l = peer_node_partition_leader(nd, p);
		pl->leader[p] = PLACEMENT_NO_NODE;
		for (uint32_t k = 0; k < pl->n; k++) {
			if (pl->ids[k] == l) {
				pl->leader[p] = (uint8_t)k;
				led++;
			}
			if (placement_has(cur[p].voters, cur[p].nvoters,
					  pl->ids[k]))
				pl->voters[p] |= (uint16_t)(1u << k);
		}
	}
	rc = -PARLEY_EAGAIN;
	if (all_led && led < nd->np)
		goto out;
	for (uint32_t k = 0; k < pl->n; k++)
		if (pl->ids[k] == nd->cfg.node_id)
			pl->self = k;
	pl->view = (struct placement_leads){.n = pl->n, .np = nd->np,
					    .leader = pl->leader,
					    .voters = pl->voters};
	pl->share = placement_lead_share(nd->np, pl->n);
	placement_lead_counts(&pl->view, pl->cnt);
	uint32_t cnt[PLACEMENT_MAX_NODES];
	memcpy(cnt, pl->cnt, sizeof cnt);
	rc = (int)placement_lead_shed(&pl->view, pl->self, pl->cnt, to);
	for (uint32_t p = 0; p < nd->np; p++) {
		struct pe_raft_status st;
		if (to[p] == PLACEMENT_NO_NODE)
			continue;
		/* the table said this node leads p; its own group decides */
		if (!holds(nd, p, &st) || st.role != PE_LEADER) {
			pl->cnt[to[p]]--;
			pl->cnt[pl->self]++;
			rc--;
			continue;
		}
		want[p] = pl->ids[to[p]];
		(void)pe_raft_transfer_partition(nd->e, p, want[p]);
	}
	if (!rc) /* placement_lead_chain wants the counts before the shed */
		memcpy(pl->cnt, cnt, sizeof cnt);
out:
	free(cur);
	free(to);
	return rc;
}

/* The leader of partition 0, when no giver (placement.h) can hand a
 * partition directly: the last hop of the leadership chain
 * (placement_lead_chain), made here or asked of the hop's leader (XFER
 * naming the target). Returns true when a hop was asked. */
static bool shed_chain(struct peer_node *nd, const struct rb_plan *pl)
{
	uint32_t p, from, to;
	if (pe_partition_leader_check(nd->e, 0) ||
	    !placement_lead_chain(&pl->view, pl->cnt, &p, &from, &to))
		return false;
	uint64_t f = pl->ids[from], t = pl->ids[to];
	PLOG_I("cluster", "leadership chain: a node that gives leads no "
	       "partition with a voter that takes", "partition=%u from=%"
	       PRIu64 " to=%" PRIu64, p, f, t);
	if (f == nd->cfg.node_id)
		return pe_raft_transfer_partition(nd->e, p, t) == 0;
	if (!peer_can_send(nd->peer, f, PEER_FRAME_XFER))
		return false;
	uint8_t x[12];
	le_put32(x, p);
	le_put64(x + 4, t);
	return peer_node_send_app(nd, f, PEER_FRAME_XFER, x, sizeof x, NULL,
				  0) == 0;
}

/* Spread placement, node thread, every tick: once no role or term changed
 * for cfg.rebalance_ms (leadership settled after a failover, an election
 * or a hand-over), a node that gives (rebalance_plan) hands partitions
 * over, then waits a quiet period again (a transfer changes the
 * generation: its effect is seen before the next round); when nothing
 * could be handed directly, the leader of partition 0 asks for one hop
 * of a leadership chain (shed_chain). Hysteresis (placement.h): nothing
 * moves once every node leads floor or ceil, a receiver never ends above
 * ceil, and every direct hand-over lowers the unevenness, so two nodes
 * never trade a partition back and forth; a partition without a known
 * leader (an election) holds every round back. */
static void shed_tick(struct peer_node *nd, uint64_t now)
{
	if (!nd->cfg.leader_spread || !nd->cfg.rebalance_ms || !nd->e)
		return;
	uint64_t gen = pe_raft_status_gen(nd->e);
	if (gen != nd->shed_gen || !nd->shed_since_ms) {
		nd->shed_gen = gen;
		nd->shed_since_ms = now;
		return;
	}
	if (now - nd->shed_since_ms < nd->cfg.rebalance_ms)
		return;
	nd->shed_since_ms = now; /* one round per quiet period */
	pthread_mutex_lock(&nd->op_mu);
	bool op = nd->op_busy; /* a membership change gathers leaderships */
	pthread_mutex_unlock(&nd->op_mu);
	if (op)
		return;
	uint64_t *want = calloc(nd->np, sizeof *want);
	if (!want)
		return;
	struct rb_plan pl;
	int handed = rebalance_plan(nd, want, true, &pl);
	free(want);
	if (handed == 0 && shed_chain(nd, &pl))
		atomic_fetch_add_explicit(&nd->shed_chains, 1,
					  memory_order_relaxed);
	rb_plan_free(&pl);
	if (handed > 0) {
		atomic_fetch_add_explicit(&nd->shed_rounds, 1,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&nd->shed_handed, (uint64_t)handed,
					  memory_order_relaxed);
		PLOG_I("cluster", "leaderships over this node's share handed over",
		       "handed=%d share=%u nodes=%u", handed, pl.share, pl.n);
	}
}

int peer_node_rebalance(struct peer_node *nd, uint32_t wait_ms, char *msg,
			size_t cap)
{
	if (!nd->e) {
		snprintf(msg, cap, "not started\n");
		return -PARLEY_EAGAIN;
	}
	uint64_t *want = calloc(nd->np, sizeof *want);
	if (!want)
		return -PARLEY_ENOMEM;
	struct rb_plan pl;
	int hrc = rebalance_plan(nd, want, false, &pl);
	rb_plan_free(&pl);
	if (hrc < 0) {
		free(want);
		if (hrc == -PARLEY_EINVAL)
			snprintf(msg, cap, "this node is no voter\n");
		return hrc;
	}
	uint32_t handed = (uint32_t)hrc, share = pl.share, n = pl.n;
	const uint64_t *ids = pl.ids;
	const uint32_t *cnt = pl.cnt;
	uint64_t deadline = parley_mono_ns() + (uint64_t)wait_ms * 1000000ull;
	uint32_t left = handed ? xfer_wait(nd, want, deadline) : 0;
	free(want);
	size_t m = (size_t)snprintf(msg, cap, "node %" PRIu64 " handed %u of "
				    "its partitions over (at most %u each):",
				    nd->cfg.node_id, handed - left, share);
	for (uint32_t k = 0; k < n && m < cap; k++)
		m += (size_t)snprintf(msg + m, cap - m, " node %" PRIu64 " %u",
				      ids[k], cnt[k]);
	if (m < cap)
		snprintf(msg + m, cap - m, "\n");
	PLOG_I("cluster", "leadership rebalanced", "handed=%u left=%u share=%u",
	       handed, left, share);
	if (left) {
		m = strlen(msg);
		snprintf(msg + m, cap - m, "%u partitions still led here: their "
			 "target was not caught up in time (repeat)\n", left);
		return -PARLEY_ETIMEDOUT;
	}
	return 0;
}

/* ---- node info: the addresses this node advertises -------------------------------- */

/* One advertised address: printable, no spaces, < PEER_NODE_ADDR_MAX. */
static bool addr_ok(const char *a)
{
	if (!a)
		return true;
	size_t n = strlen(a);
	if (n >= PEER_NODE_ADDR_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (a[i] < 0x21 || a[i] > 0x7e)
			return false;
	return true;
}

/* "client=H:P tls=H:P admin=H:P" (the empty ones left out) into out. */
static int node_info(const struct peer_node_config *cfg, char *out, size_t cap)
{
	if (!addr_ok(cfg->client_addr) || !addr_ok(cfg->client_tls_addr) ||
	    !addr_ok(cfg->admin_addr))
		return -PARLEY_EINVAL;
	const char *k[3] = {"client", "tls", "admin"};
	const char *v[3] = {cfg->client_addr, cfg->client_tls_addr,
			    cfg->admin_addr};
	size_t n = 0;
	out[0] = '\0';
	for (int i = 0; i < 3; i++) {
		if (!v[i] || !*v[i])
			continue;
		int w = snprintf(out + n, cap - n, "%s%s=%s", n ? " " : "", k[i], v[i]);
		if (w < 0 || (size_t)w >= cap - n)
			return -PARLEY_EINVAL;
		n += (size_t)w;
	}
	return 0;
}

/* The value of `key` in a peer's info ("k=v k=v"), "" when absent. */
static void info_get(const char *info, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	out[0] = '\0';
	for (const char *p = info; p && *p;) {
		const char *end = strchr(p, ' ');
		size_t l = end ? (size_t)(end - p) : strlen(p);
		if (l > kl && !strncmp(p, key, kl) && p[kl] == '=') {
			size_t vl = l - kl - 1;
			if (vl < cap) {
				memcpy(out, p + kl + 1, vl);
				out[vl] = '\0';
			}
			return;
		}
		p = end ? end + 1 : NULL;
	}
}

/* ---- lifecycle ------------------------------------------------------------------- */

int peer_node_new(const struct peer_node_config *cfg, struct peer_node **out)
{
	if (!cfg->cluster_id || !cfg->node_id || !cfg->npeers ||
	    cfg->npeers > PEER_NODE_MAX_PEERS)
		return -PARLEY_EINVAL;
	struct peer_node *nd = calloc(1, sizeof *nd);
	if (!nd)
		return -PARLEY_ENOMEM;
	nd->cfg = *cfg;
	nd->ep = nd->evfd = nd->tfd = -1;
	pthread_mutex_init(&nd->mu, NULL);
	pthread_mutex_init(&nd->op_mu, NULL);
	uint32_t nv = 0;
	if (cfg->nfounders) { /* a node added later: the founders */
		if (cfg->nfounders > PEER_NODE_MAX_PEERS + 1) {
			free(nd);
			return -PARLEY_EINVAL;
		}
		for (uint32_t i = 0; i < cfg->nfounders; i++)
			nd->voters[nv++] = cfg->founders[i];
	} else {
		nd->voters[nv++] = cfg->node_id;
		for (uint32_t i = 0; i < cfg->npeers; i++)
			nd->voters[nv++] = cfg->peers[i].id;
	}
	nd->cl = (struct pe_cluster){
		.node_id = cfg->node_id, .voters = nd->voters,
		.nvoters = nv,
		.election_ticks = cfg->election_ticks,
		.quiesce_ticks = cfg->quiesce_ticks,
		.log_keep_bytes = cfg->log_keep_bytes,
		.snapshot_rate_bytes = cfg->snapshot_rate_bytes,
		.send = node_send, .send_arg = nd, .flush = node_flush,
		.follow_partition0 = !cfg->leader_spread};
	struct peer_config pc = {
		.cluster_id = cfg->cluster_id, .node_id = cfg->node_id,
		.listen_addr = cfg->listen_addr, .listen_port = cfg->listen_port,
		.rng_seed = cfg->node_id ^ (uint64_t)parley_mono_ns(),
		.tls_ca = cfg->tls_ca, .tls_cert = cfg->tls_cert,
		.tls_key = cfg->tls_key, .on_recv = on_recv, .on_link = on_link,
		.on_app = on_app, .arg = nd, .frames = cfg->frames};
	char info[PEER_INFO_MAX + 1];
	if (node_info(cfg, info, sizeof info)) {
		PLOG_E("cluster", "advertised addresses too long or not printable",
		       "client=%s tls=%s admin=%s",
		       cfg->client_addr ? cfg->client_addr : "",
		       cfg->client_tls_addr ? cfg->client_tls_addr : "",
		       cfg->admin_addr ? cfg->admin_addr : "");
		free(nd);
		return -PARLEY_EINVAL;
	}
	pc.info = info;
	struct fwd_config fc = {.self = cfg->node_id, .send = fwd_send,
				.wake = fwd_wake, .up = fwd_up_append,
				.arg = nd};
	int rc = fwd_new(&fc, &nd->fwd);
	if (!rc)
		rc = peer_new(&pc, &nd->peer);
	for (uint32_t i = 0; !rc && i < cfg->npeers; i++)
		rc = peer_add(nd->peer, cfg->peers[i].id, cfg->peers[i].addr,
			      cfg->peers[i].port);
	if (rc)
		goto fail;
	if (cfg->data_dir) {
		snprintf(nd->peers_file, sizeof nd->peers_file,
			 "%s/cluster-peers", cfg->data_dir);
		journal_replay(nd);
	}
	nd->ep = epoll_create1(EPOLL_CLOEXEC);
	nd->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	nd->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (nd->ep < 0 || nd->evfd < 0 || nd->tfd < 0) {
		rc = -errno;
		goto fail;
	}
	int fds[3] = {peer_fd(nd->peer), nd->evfd, nd->tfd};
	for (int i = 0; i < 3; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
		if (epoll_ctl(nd->ep, EPOLL_CTL_ADD, fds[i], &ev)) {
			rc = -errno;
			goto fail;
		}
	}
	*out = nd;
	return 0;
fail:
	peer_node_stop(nd);
	return rc;
}

const struct pe_cluster *peer_node_cluster(struct peer_node *n)
{
	return &n->cl;
}

int peer_node_start(struct peer_node *nd, struct pe_engine *e)
{
	nd->e = e;
	fwd_set_engine(nd->fwd, e);
	nd->np = pe_partition_count(e);
	if (placement_map_init(&nd->pmap, nd->np, nd->voters, nd->cl.nvoters))
		return -PARLEY_EINVAL;
	nd->lead_node = calloc(nd->np, sizeof *nd->lead_node);
	nd->lead_term = calloc(nd->np, sizeof *nd->lead_term);
	if (!nd->lead_node || !nd->lead_term)
		return -PARLEY_ENOMEM;
	nd->meta[nd->nmeta++] = 0;
	uint32_t mp = pe_partition_of(e, MEMBERS_KEY, strlen(MEMBERS_KEY));
	if (mp)
		nd->meta[nd->nmeta++] = mp;
	nd->seen_term = calloc(nd->np ? nd->np : 1, sizeof *nd->seen_term);
	nd->seen_leader = calloc(nd->np ? nd->np : 1, sizeof *nd->seen_leader);
	if (!nd->seen_term || !nd->seen_leader)
		return -PARLEY_ENOMEM;
	uint32_t t = nd->cfg.tick_ms ? nd->cfg.tick_ms : DEF_TICK_MS;
	struct itimerspec its = {
		.it_interval = {.tv_sec = t / 1000, .tv_nsec = (long)(t % 1000) * 1000000},
		.it_value = {.tv_sec = t / 1000, .tv_nsec = (long)(t % 1000) * 1000000}};
	if (timerfd_settime(nd->tfd, 0, &its, NULL))
		return -errno;
	if (pthread_create(&nd->thr, NULL, node_main, nd))
		return -PARLEY_ENOMEM;
	nd->started = true;
	/* every node follows the members stream (from its start: replayed
	 * after a restart, idempotent) */
	int src = pe_subscribe(e, MEMBERS_KEY, strlen(MEMBERS_KEY), 1,
			       members_cb, nd, &nd->msub);
	if (src)
		PLOG_W("cluster", "cannot follow the members stream", "err=%s",
		       parley_errname(src));
	PLOG_I("cluster", "replication started", "node_id=%" PRIu64
	       " cluster_id=%" PRIu64 " peer_port=%u peers=%u tick_ms=%u",
	       nd->cfg.node_id, nd->cfg.cluster_id, peer_port(nd->peer),
	       nd->cfg.npeers, t);
	return 0;
}

void peer_node_halt(struct peer_node *nd)
{
	if (!nd || !nd->started)
		return;
	/* a membership operation waits for commits: end it while the node
	 * thread still carries its messages and ticks */
	pthread_mutex_lock(&nd->op_mu);
	atomic_store(&nd->op_cancel, true);
	bool join = nd->op_joinable;
	nd->op_joinable = false;
	pthread_mutex_unlock(&nd->op_mu);
	if (join)
		pthread_join(nd->op_thr, NULL);
	atomic_store(&nd->stop, true);
	uint64_t one = 1;
	ssize_t w = write(nd->evfd, &one, sizeof one);
	(void)w;
	pthread_join(nd->thr, NULL);
	nd->started = false;
	nd->e = NULL;
}

void peer_node_stop(struct peer_node *nd)
{
	if (!nd)
		return;
	peer_node_halt(nd);
	struct obatch *b = nd->head;
	while (b) {
		struct obatch *nx = b->next;
		free(b);
		b = nx;
	}
	fwd_free(nd->fwd); /* after the engine: its completions queue here */
	while (nd->ahead) {
		struct aframe *nx = nd->ahead->next;
		free(nd->ahead);
		nd->ahead = nx;
	}
	if (nd->peer)
		peer_free(nd->peer);
	if (nd->ep >= 0)
		close(nd->ep);
	if (nd->evfd >= 0)
		close(nd->evfd);
	if (nd->tfd >= 0)
		close(nd->tfd);
	while (nd->cmd_head) {
		struct pcmd *nx = nd->cmd_head->next;
		free(nd->cmd_head);
		nd->cmd_head = nx;
	}
	pthread_mutex_destroy(&nd->mu);
	pthread_mutex_destroy(&nd->op_mu);
	free(nd->gather);
	free(nd->seen_term);
	free(nd->seen_leader);
	placement_map_free(&nd->pmap);
	free((void *)nd->lead_node);
	free((void *)nd->lead_term);
	free(nd);
}

bool peer_node_placement(struct peer_node *n, uint32_t p,
			 struct placement_part *out, bool *recorded)
{
	return placement_map_get(&n->pmap, p, out, recorded);
}

uint32_t peer_node_meta_parts(struct peer_node *n,
			      uint32_t out[PLACEMENT_MAX_META])
{
	for (uint32_t i = 0; i < n->nmeta; i++)
		out[i] = n->meta[i];
	return n->nmeta;
}

uint32_t peer_node_replication_factor(const struct peer_node *n)
{
	return n->cfg.replication_factor;
}

uint64_t peer_node_outbox_drops(struct peer_node *n)
{
	return atomic_load_explicit(&n->drops, memory_order_relaxed);
}

size_t peer_node_metrics_text(struct peer_node *n, char *buf, size_t cap)
{
	uint64_t quiet = 0;
	for (uint32_t p = 0; n->e && p < n->np; p++) {
		struct pe_raft_status st;
		if (pe_raft_status(n->e, p, &st) == 0 && st.quiesced)
			quiet++;
	}
	int k = snprintf(
		buf, cap,
		"# HELP parley_raft_term_changes_total Partition terms seen to "
		"change on this node (elections).\n"
		"# TYPE parley_raft_term_changes_total counter\n"
		"parley_raft_term_changes_total %" PRIu64 "\n"
		"# HELP parley_raft_leader_gains_total Times this node became "
		"leader of a partition.\n"
		"# TYPE parley_raft_leader_gains_total counter\n"
		"parley_raft_leader_gains_total %" PRIu64 "\n"
		"# HELP parley_peer_outbox_drops_total Raft messages dropped "
		"because the outbox was full.\n"
		"# TYPE parley_peer_outbox_drops_total counter\n"
		"parley_peer_outbox_drops_total %" PRIu64 "\n"
		"# HELP parley_raft_groups_quiesced Partition groups on this "
		"node that are quiesced (idle: no heartbeats, no ticks).\n"
		"# TYPE parley_raft_groups_quiesced gauge\n"
		"parley_raft_groups_quiesced %" PRIu64 "\n"
		"# HELP parley_leader_shed_rounds_total Times this node handed "
		"leaderships over its share by itself (leader_rebalance_ms).\n"
		"# TYPE parley_leader_shed_rounds_total counter\n"
		"parley_leader_shed_rounds_total %" PRIu64 "\n"
		"# HELP parley_leader_shed_partitions_total Partition "
		"hand-overs those rounds asked for.\n"
		"# TYPE parley_leader_shed_partitions_total counter\n"
		"parley_leader_shed_partitions_total %" PRIu64 "\n"
		"# HELP parley_leader_shed_chain_hops_total Leadership chain "
		"hops this node (the leader of partition 0) asked for.\n"
		"# TYPE parley_leader_shed_chain_hops_total counter\n"
		"parley_leader_shed_chain_hops_total %" PRIu64 "\n",
		atomic_load_explicit(&n->term_changes, memory_order_relaxed),
		atomic_load_explicit(&n->leader_gains, memory_order_relaxed),
		peer_node_outbox_drops(n), quiet,
		atomic_load_explicit(&n->shed_rounds, memory_order_relaxed),
		atomic_load_explicit(&n->shed_handed, memory_order_relaxed),
		atomic_load_explicit(&n->shed_chains, memory_order_relaxed));
	size_t m = k > 0 ? (size_t)k : 0;
	struct fwd_stats fs;
	fwd_get_stats(n->fwd, &fs);
	k = snprintf(
		m < cap ? buf + m : NULL, m < cap ? cap - m : 0,
		"# HELP parley_fwd_sent_total Appends forwarded to the leader "
		"of their partition on another node.\n"
		"# TYPE parley_fwd_sent_total counter\n"
		"parley_fwd_sent_total %" PRIu64 "\n"
		"# HELP parley_fwd_answered_total Forwarded appends answered by "
		"their leader.\n"
		"# TYPE parley_fwd_answered_total counter\n"
		"parley_fwd_answered_total %" PRIu64 "\n"
		"# HELP parley_fwd_failed_total Forwarded appends failed AGAIN "
		"(reason: timeout, link).\n"
		"# TYPE parley_fwd_failed_total counter\n"
		"parley_fwd_failed_total{reason=\"timeout\"} %" PRIu64 "\n"
		"parley_fwd_failed_total{reason=\"link\"} %" PRIu64 "\n"
		"# HELP parley_fwd_executed_total Appends executed here for "
		"other nodes.\n"
		"# TYPE parley_fwd_executed_total counter\n"
		"parley_fwd_executed_total %" PRIu64 "\n"
		"# HELP parley_fwd_pending Forwarded appends not answered yet.\n"
		"# TYPE parley_fwd_pending gauge\n"
		"parley_fwd_pending %u\n"
		"# HELP parley_fwd_latency_seconds_sum Forwarded appends: send to "
		"answer, summed over parley_fwd_answered_total.\n"
		"# TYPE parley_fwd_latency_seconds_sum counter\n"
		"parley_fwd_latency_seconds_sum %.6f\n"
		"# HELP parley_fwd_latency_seconds_max Forwarded appends: the "
		"longest send to answer.\n"
		"# TYPE parley_fwd_latency_seconds_max gauge\n"
		"parley_fwd_latency_seconds_max %.6f\n",
		fs.sent, fs.answered, fs.timeouts, fs.link_failed, fs.executed,
		fwd_pending(n->fwd), (double)fs.lat_ns_sum / 1e9,
		(double)fs.lat_ns_max / 1e9);
	m += k > 0 ? (size_t)k : 0;
	return m + peer_metrics_text(n->peer, m < cap ? buf + m : NULL,
				     m < cap ? cap - m : 0);
}

/* ---- cluster status (GET /cluster) ----------------------------------------------- */

uint64_t peer_node_id(const struct peer_node *n)
{
	return n->cfg.node_id;
}

const char *peer_node_self_addr(const struct peer_node *n, const char *which)
{
	const char *v = !strcmp(which, "client") ? n->cfg.client_addr
			: !strcmp(which, "tls")	 ? n->cfg.client_tls_addr
			: !strcmp(which, "admin")	 ? n->cfg.admin_addr
							 : NULL;
	return v ? v : "";
}

uint64_t peer_node_cluster_id(const struct peer_node *n)
{
	return n->cfg.cluster_id;
}

uint32_t peer_node_links(struct peer_node *n, struct peer_node_link *out,
			 uint32_t cap)
{
	struct peer_link_stats st[PEER_NODE_MAX_PEERS];
	int k = peer_stats(n->peer, st, PEER_NODE_MAX_PEERS, NULL);
	uint32_t m = 0;
	for (int i = 0; i < k && i < (int)PEER_NODE_MAX_PEERS && m < cap;
	     i++, m++) {
		struct peer_node_link *o = &out[m];
		memset(o, 0, sizeof *o);
		o->node = st[i].node;
		o->up = st[i].state == PEER_LINK_UP;
		o->bytes_in = st[i].bytes_in;
		o->bytes_out = st[i].bytes_out;
		o->connects = st[i].connects;
		o->reconnects = st[i].reconnects;
		o->dead = st[i].dead;
		o->connect_failures = st[i].connect_failures;
		snprintf(o->last_error, sizeof o->last_error, "%s",
			 st[i].last_error);
		o->frames = st[i].frames;
		o->frames_announced = st[i].frames_announced;
		info_get(st[i].info, "client", o->client_addr, sizeof o->client_addr);
		info_get(st[i].info, "tls", o->client_tls_addr,
			 sizeof o->client_tls_addr);
		info_get(st[i].info, "admin", o->admin_addr, sizeof o->admin_addr);
		if (!o->client_addr[0])
			(void)peer_node_recorded_addr(n, o->node, "client",
						      o->client_addr,
						      sizeof o->client_addr);
		if (!o->admin_addr[0])
			(void)peer_node_recorded_addr(n, o->node, "admin",
						      o->admin_addr,
						      sizeof o->admin_addr);
	}
	return m;
}

uint64_t peer_node_leader_hint(struct peer_node *n, uint64_t leader,
			       char *plain, char *tls, size_t cap)
{
	plain[0] = tls[0] = '\0';
	if (!leader || leader == n->cfg.node_id)
		return 0;
	struct peer_link_stats ls;
	if (peer_link_stats(n->peer, leader, &ls) == 0) {
		info_get(ls.info, "client", plain, cap);
		info_get(ls.info, "tls", tls, cap);
	}
	if (!plain[0] && !tls[0]) /* no INFO yet: its members record */
		(void)peer_node_recorded_addr(n, leader, "client", plain, cap);
	return leader;
}
