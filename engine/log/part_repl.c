/*
 * part_repl.c — the replication API of parley_engine.h ("Replication"):
 * the founding voter set (pe_options.cluster; each group's own
 * configuration is log/part_conf.c's), inbound Raft messages
 * (pe_raft_recv), ticks (pe_raft_tick) and each group's published state
 * (pe_raft_status). Driving the groups (persist before send, catch-up,
 * leadership loss) is log/part_raft.c's.
 *
 * Inbound messages: pe_raft_recv checks each message (group, sender, addressee)
 * and deep-copies it — entries and their data, snapshot chunk — into one
 * REQ_RAFT request for the group's shard (one allocation, freed by the
 * shard); a call's requests reach each shard as one chain (one lock, at
 * most one wake-up: shard_push_chain). On the shard (part_repl_recv) it joins the partition's `rin`
 * queue; part_raft_run steps it when the group has no ready out.
 * SNAPSHOT chunks go the same way (log/part_snap.c stores and installs
 * them).
 *
 * Ticks: pe_raft_tick pushes one REQ_TICK per shard; the shard adds a tick
 * to every group (at most MAX_PEND_TICKS kept while a group waits for its
 * WAL batch) and marks it dirty so the next round gives it the tick —
 * except a quiesced group with nothing that waits on time
 * (part_raft_idle): its tick would do nothing, and skipping it is what
 * makes an idle group cost nothing (contract item 9).
 *
 * Node liveness (pe_raft_node_down / _up, one request per shard) wakes
 * the groups that must not sleep through it (part_repl_node), and each
 * group remembers which of its members' links are down until they come
 * up again (part->down), so a message from such a node stepped after
 * its link-down cannot put the group back to sleep behind it
 * (part_raft.c repl_inputs).
 *
 * Linearizable reads (pe_read_req.linearizable, ReadIndex; contract item 7
 * of parley_engine.h): such a READ does not run when it reaches the shard
 * (part_repl_read) but joins its partition's ri_* list, where it moves
 * QUEUED -> ISSUED -> CONFIRMED -> served:
 *   QUEUED     the next part_raft_run (no ready out) gives every queued
 *              read of the partition one raft_read_index with a fresh
 *              context (part_repl_reads_issue): a leader broadcasts a
 *              heartbeat and confirms once a quorum acknowledged one sent
 *              after the read; a follower forwards it to its leader; a
 *              leader that has not committed in its term yet, or a node
 *              that knows no leader, keeps them queued (tried again on
 *              every run, at least every tick);
 *   ISSUED     the group's ready reports the context (part_repl_reads_ready):
 *              with an error (leadership lost, a rejected forward) the
 *              reads are QUEUED again; else they carry the index;
 *   CONFIRMED  served (shard_req_read) as soon as the partition applied
 *              through that index: the answer holds everything committed
 *              before the read arrived.
 * A read not confirmed within RI_TIMEOUT_ELECTIONS election timeouts
 * (counted in the partition's ticks, ri_now) fails: -PARLEY_ENOTLEADER on a
 * follower (no leader, or its leader does not answer: the client should
 * try another node), -PARLEY_EAGAIN on a leader. So a deposed leader's
 * reads fail NOTLEADER, never with its stale state, and a node in an
 * election answers once it has a leader, if that is within the bound. Contexts start from the wall clock in
 * microseconds at the first read, so an answer meant for a previous run of
 * this node cannot confirm a read of this one. A group of one serves
 * linearizable reads at once (it is its own quorum).
 *
 * Threads: pe_raft_recv, pe_raft_tick, pe_raft_status from any thread;
 * part_repl_recv / part_repl_tick on the owning shard thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define DEF_ELECTION_TICKS 10u
#define DEF_HEARTBEAT_TICKS 1u
#define DEF_LOG_KEEP (4ull << 20)
#define MAX_PEND_TICKS 2u
#define RI_TIMEOUT_ELECTIONS 3u
#define RECV_CHAINS 64u /* shards pe_raft_recv batches for (more: one push each) */

enum { RI_QUEUED = 0, RI_ISSUED = 1, RI_CONFIRMED = 2 };

int engine_cluster_init(struct pe_engine *e, const struct pe_cluster *c)
{
	struct engine_cluster *cl = &e->cl;
	memset(cl, 0, sizeof *cl);
	if (!c) { /* a single node: every group one voter, node 1 */
		cl->node_id = 1;
		cl->conf.n = 1;
		cl->conf.max_id = 1;
		cl->conf.ids[0] = 1;
		cl->conf.roles[0] = RAFT_VOTER;
		return 0;
	}
	if (!c->node_id || !c->voters || !c->nvoters ||
	    c->nvoters > PE_MAX_VOTERS || c->nvoters > RAFT_MAX_MEMBERS) {
		PLOG_E("engine", "cluster: bad node id or voter set",
		       "node_id=%" PRIu64 " voters=%u", c->node_id, c->nvoters);
		return -PARLEY_EINVAL;
	}
	bool self = false;
	for (uint32_t i = 0; i < c->nvoters; i++) {
		uint64_t id = c->voters[i];
		if (!id || raft_conf_find(&cl->conf, id) >= 0) {
			PLOG_E("engine", "cluster: voter id 0 or repeated",
			       "voter=%" PRIu64, id);
			return -PARLEY_EINVAL;
		}
		cl->conf.ids[cl->conf.n] = id;
		cl->conf.roles[cl->conf.n] = RAFT_VOTER;
		cl->conf.n++;
		cl->conf.max_id = PARLEY_MAX(cl->conf.max_id, id);
		self |= id == c->node_id;
	}
	/* a node added later (contract item 12) is given the founders and
	 * is not among them; a founding set of one is a single node, which
	 * never grows */
	if (!self && c->nvoters < 2) {
		PLOG_E("engine", "cluster: this node is not among the voters "
		       "of a single-node cluster", "node_id=%" PRIu64,
		       c->node_id);
		return -PARLEY_EINVAL;
	}
	cl->on = true;
	cl->node_id = c->node_id;
	cl->election_ticks = c->election_ticks ? c->election_ticks
					       : DEF_ELECTION_TICKS;
	cl->heartbeat_ticks = c->heartbeat_ticks ? c->heartbeat_ticks
						 : DEF_HEARTBEAT_TICKS;
	cl->quiesce_ticks = c->quiesce_ticks;
	cl->log_keep_bytes = c->log_keep_bytes ? c->log_keep_bytes : DEF_LOG_KEEP;
	cl->snapshot_rate_bytes = c->snapshot_rate_bytes;
	if (cl->heartbeat_ticks >= cl->election_ticks ||
	    (c->nvoters > 1 && !c->send)) {
		PLOG_E("engine", "cluster: heartbeat_ticks must be below "
		       "election_ticks, and several voters need send",
		       "election_ticks=%u heartbeat_ticks=%u",
		       cl->election_ticks, cl->heartbeat_ticks);
		return -PARLEY_EINVAL;
	}
	cl->send = c->send;
	cl->send_arg = c->send_arg;
	cl->flush = c->flush;
	cl->follow0 = c->follow_partition0;
	return 0;
}

/* ---- inbound messages -------------------------------------------------------- */

static size_t align8(size_t n)
{
	return (n + 7u) & ~(size_t)7u;
}

const struct raft_msg *part_repl_msg(const struct req *r)
{
	return (const struct raft_msg *)align8((size_t)r->data);
}

/* One message, deep-copied into a request for its shard (*out). */
static int recv_one(struct pe_engine *e, const struct raft_msg *m,
		    struct req **out)
{
	if (m->group >= e->nparts || m->to != e->cl.node_id ||
	    m->from == e->cl.node_id || !m->from ||
	    m->n_entries > RAFT_MAX_MSG_ENTRIES ||
	    (m->n_entries && !m->entries) ||
	    m->chunk_len > RAFT_MAX_CHUNK_BYTES || (m->chunk_len && !m->chunk))
		goto drop;
	size_t size = align8(sizeof *m) +
		      align8((size_t)m->n_entries * sizeof(struct raft_entry)) +
		      m->chunk_len;
	for (uint32_t k = 0; k < m->n_entries; k++) {
		if (m->entries[k].len > RAFT_MAX_ENTRY_BYTES ||
		    (m->entries[k].len && !m->entries[k].data))
			goto drop;
		size += m->entries[k].len;
	}
	struct req *r = calloc(1, sizeof *r + 8 + size);
	if (!r)
		return -PARLEY_ENOMEM;
	r->kind = REQ_RAFT;
	r->part = (uint32_t)m->group;
	r->len = (uint32_t)PARLEY_MIN(size, (size_t)UINT32_MAX);
	uint8_t *base = (uint8_t *)part_repl_msg(r);
	struct raft_msg *c = (struct raft_msg *)base;
	*c = *m;
	struct raft_entry *ents = (struct raft_entry *)(base + align8(sizeof *m));
	uint8_t *d = (uint8_t *)ents +
		     align8((size_t)m->n_entries * sizeof(struct raft_entry));
	if (m->n_entries) {
		c->entries = ents;
		for (uint32_t k = 0; k < m->n_entries; k++) {
			ents[k] = m->entries[k];
			ents[k].data = d;
			if (m->entries[k].len)
				memcpy(d, m->entries[k].data, m->entries[k].len);
			d += m->entries[k].len;
		}
	} else {
		c->entries = NULL;
	}
	if (m->chunk_len) {
		memcpy(d, m->chunk, m->chunk_len);
		c->chunk = d;
	} else {
		c->chunk = NULL;
	}
	*out = r;
	return 0;
drop:
	if (m->group < e->nparts)
		atomic_fetch_add_explicit(&e->parts[m->group].pub_dropped, 1,
					  memory_order_relaxed);
	return -PARLEY_EINVAL;
}

int pe_raft_recv(struct pe_engine *e, const struct raft_msg *msgs, uint32_t n)
{
	if (!e || (n && !msgs))
		return -PARLEY_EINVAL;
	if (e->cl.conf.n < 2 || e->opt.read_only)
		return -PARLEY_EINVAL;
	/* one chain per shard, pushed under one lock with at most one
	 * wake-up (a peer frame carries many groups' messages) */
	struct req *head[RECV_CHAINS], *tail[RECV_CHAINS];
	memset(head, 0, sizeof head);
	bool chains = e->nshards <= RECV_CHAINS;
	int first = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct req *r = NULL;
		int rc = recv_one(e, &msgs[i], &r);
		if (!rc && !chains) {
			rc = shard_push(e, r);
			if (rc)
				free(r);
		} else if (!rc) {
			uint32_t s = r->part % e->nshards;
			if (head[s])
				tail[s]->next = r;
			else
				head[s] = r;
			tail[s] = r;
		}
		if (rc && !first)
			first = rc;
	}
	for (uint32_t s = 0; chains && s < e->nshards; s++)
		if (head[s] && shard_push_chain(e, s, head[s]) && !first)
			first = atomic_load(&e->closing) ? -PARLEY_ECLOSED
							 : -PARLEY_EFULL;
	return first;
}

/* Shard thread: a REQ_RAFT joins its partition's inbound queue. */
void part_repl_recv(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	if (!p->raft || sh->fatal) {
		atomic_fetch_add_explicit(&p->pub_dropped, 1, memory_order_relaxed);
		free(r);
		return;
	}
	r->next = NULL;
	if (p->rin_tail)
		p->rin_tail->next = r;
	else
		p->rin_head = r;
	p->rin_tail = r;
	shard_mark_dirty(sh, p);
}

/* ---- ticks ------------------------------------------------------------------------ */

/* One request of `kind` (from = arg, index = index) to every shard; 0 or
 * the first error (a shard that could not take it misses it). */
static int push_each_shard(struct pe_engine *e, enum req_kind kind,
			   uint64_t arg, uint64_t index)
{
	int first = 0;
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct req *r = calloc(1, sizeof *r);
		if (!r)
			return -PARLEY_ENOMEM;
		r->kind = kind;
		r->part = i;
		r->from = arg;
		r->index = index;
		int rc = shard_push(e, r);
		if (rc) {
			free(r);
			if (!first)
				first = rc;
		}
	}
	return first;
}

int pe_raft_tick(struct pe_engine *e)
{
	if (!e || e->opt.read_only)
		return -PARLEY_EINVAL;
	if (e->cl.conf.n < 2)
		return 0; /* a group of one never needs time */
	return push_each_shard(e, REQ_TICK, 0, 0);
}

void part_repl_tick(struct shard *sh, struct req *r)
{
	struct pe_engine *e = sh->e;
	free(r);
	if (sh->fatal)
		return;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		if (!p->raft)
			continue;
		p->ri_now++;
		/* a quiesced group with nothing waiting on time is not run:
		 * its tick would be a no-op (contract item 9) */
		if (part_raft_idle(p))
			continue;
		if (p->pend_ticks < MAX_PEND_TICKS)
			p->pend_ticks++;
		shard_mark_dirty(sh, p);
	}
}

int pe_raft_node_down(struct pe_engine *e, uint64_t node)
{
	if (!e || e->opt.read_only || !node)
		return -PARLEY_EINVAL;
	if (e->cl.conf.n < 2 || node == e->cl.node_id)
		return 0;
	return push_each_shard(e, REQ_NODE, node, NODE_EV_DOWN);
}

int pe_raft_transfer(struct pe_engine *e, uint64_t to)
{
	if (!e || e->opt.read_only || !to)
		return -PARLEY_EINVAL;
	if (e->cl.conf.n < 2 || to == e->cl.node_id)
		return -PARLEY_EINVAL;
	return push_each_shard(e, REQ_NODE, to, NODE_EV_TRANSFER);
}

int pe_raft_transfer_partition(struct pe_engine *e, uint32_t partition,
			       uint64_t to)
{
	if (!e || e->opt.read_only || !to || partition >= e->nparts)
		return -PARLEY_EINVAL;
	if (e->cl.conf.n < 2 || to == e->cl.node_id)
		return -PARLEY_EINVAL;
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->kind = REQ_NODE;
	r->part = partition; /* its shard; part_repl_node picks the group */
	r->from = to;
	r->index = NODE_EV_TRANSFER_ONE;
	int rc = shard_push(e, r);
	if (rc)
		free(r);
	return rc;
}

int pe_raft_node_up(struct pe_engine *e, uint64_t node)
{
	if (!e || e->opt.read_only || !node)
		return -PARLEY_EINVAL;
	if (e->cl.conf.n < 2 || node == e->cl.node_id)
		return 0;
	/* also without quiescing: it ends the node's link-down (part->down) */
	return push_each_shard(e, REQ_NODE, node, NODE_EV_UP);
}

/* Records that node's link went down, for the group's next inputs: every
 * such node, once (a link down of another node must not hide the
 * leader's), and only a member of the group's configuration. */
static void pend_down_add(struct part *p, uint64_t node)
{
	if (raft_conf_find(raft_conf(p->raft), node) < 0)
		return;
	for (uint32_t k = 0; k < p->npend_down; k++)
		if (p->pend_down[k] == node)
			return;
	PARLEY_ASSERT(p->npend_down < RAFT_MAX_MEMBERS);
	p->pend_down[p->npend_down++] = node;
}

/* Keeps p->down (the members whose link is down now) as the links go
 * down and up. Only members are recorded (a link-down of another node
 * says nothing about this group); when the set is full, members removed
 * since leave it, which makes room: the members other than `node` are
 * fewer than RAFT_MAX_MEMBERS. */
static void down_set(struct part *p, uint64_t node, bool down)
{
	uint32_t k = 0;
	while (k < p->ndown && p->down[k] != node)
		k++;
	if (!down) {
		if (k < p->ndown)
			p->down[k] = p->down[--p->ndown];
		return;
	}
	const struct raft_conf *c = raft_conf(p->raft);
	if (k < p->ndown || raft_conf_find(c, node) < 0)
		return;
	if (p->ndown == RAFT_MAX_MEMBERS) {
		uint32_t n = 0;
		for (uint32_t j = 0; j < p->ndown; j++)
			if (raft_conf_find(c, p->down[j]) >= 0)
				p->down[n++] = p->down[j];
		p->ndown = n;
	}
	PARLEY_ASSERT(p->ndown < RAFT_MAX_MEMBERS);
	p->down[p->ndown++] = node;
}

bool part_repl_down(const struct part *p, uint64_t node)
{
	for (uint32_t k = 0; k < p->ndown; k++)
		if (p->down[k] == node)
			return true;
	return false;
}

/* Node liveness and transfers (REQ_NODE, enum node_event). Recorded
 * here, given to each group with its next inputs (part_raft.c
 * repl_inputs), where the core may be called: a group following `node`
 * campaigns soon (down only), and a quiesced leader wakes either way —
 * on a link down so that its check-quorum runs (a leader cut off from
 * its quorum steps down instead of sleeping on), on a link up so that
 * the returning node hears from it and catches up. */
void part_repl_node(struct shard *sh, struct req *r)
{
	struct pe_engine *e = sh->e;
	uint64_t node = r->from;
	bool one = r->index == NODE_EV_TRANSFER_ONE;
	bool up = r->index == NODE_EV_UP,
	     xfer = r->index == NODE_EV_TRANSFER || one;
	uint32_t only = r->part;
	free(r);
	if (sh->fatal)
		return;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		if (!p->raft || (one && i != only))
			continue;
		if (xfer)
			p->pend_xfer = node;
		else
			down_set(p, node, !up);
		if (!xfer && !up)
			pend_down_add(p, node);
		p->pend_wake = true;
		shard_mark_dirty(sh, p);
	}
}

/* ---- linearizable reads (ReadIndex) ----------------------------------------------- */

static void ri_fail(struct req *r, int err)
{
	struct pe_read_result res = {.err = err};
	r->cb.read(r->arg, &res);
	free(r);
}

/* Shard thread: a REQ_READ. Returns false when it is to be served now
 * (not linearizable, a group of one, no group), true when it waits for
 * its ReadIndex on the partition's list. */
bool part_repl_read(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	if (!r->ri_linear || !p->raft || p->cl->conf.n < 2 || p->corrupt ||
	    sh->fatal)
		return false;
	if (raft_conf_find(raft_conf(p->raft), p->cl->node_id) < 0) {
		/* not a member of the group (a partition placed on other
		 * nodes, docs/CLUSTER.md §3.7, or one being joined): no leader
		 * answers its ReadIndex; NOTLEADER now, not at the deadline */
		ri_fail(r, -PARLEY_ENOTLEADER);
		return true;
	}
	r->ri_state = RI_QUEUED;
	r->ri_deadline = p->ri_now + RI_TIMEOUT_ELECTIONS * p->cl->election_ticks;
	r->next = NULL;
	if (p->ri_tail)
		p->ri_tail->next = r;
	else
		p->ri_head = r;
	p->ri_tail = r;
	shard_mark_dirty(sh, p);
	return true;
}

/* Removes the reads of p's list for which take(r, a, b) is true and
 * hands each to done(sh, r, a, b), in list order. */
static void ri_done_serve(struct shard *sh, struct req *r, uint64_t a, int err);

static void ri_sweep(struct shard *sh, struct part *p,
		     bool (*take)(const struct part *p, const struct req *r,
				  uint64_t a),
		     void (*done)(struct shard *sh, struct req *r, uint64_t a,
				  int err),
		     uint64_t a, int err)
{
	struct req **pp = &p->ri_head, *taken = NULL, **tail = &taken;
	p->ri_tail = NULL;
	while (*pp) {
		struct req *r = *pp;
		if (take(p, r, a)) {
			*pp = r->next;
			r->next = NULL;
			*tail = r;
			tail = &r->next;
		} else {
			p->ri_tail = r;
			pp = &r->next;
		}
	}
	while (taken) {
		struct req *n = taken->next;
		atomic_fetch_add_explicit(done == ri_done_serve ? &p->pub_ri_served
								: &p->pub_ri_failed,
					  1, memory_order_relaxed);
		done(sh, taken, a, err);
		taken = n;
	}
}

static bool ri_is_queued(const struct part *p, const struct req *r, uint64_t a)
{
	(void)p;
	(void)a;
	return r->ri_state == RI_QUEUED;
}

static bool ri_is_expired(const struct part *p, const struct req *r, uint64_t a)
{
	(void)a;
	return r->ri_state != RI_CONFIRMED && p->ri_now >= r->ri_deadline;
}

static bool ri_is_servable(const struct part *p, const struct req *r,
			   uint64_t a)
{
	(void)a;
	return r->ri_state == RI_CONFIRMED && r->ri_index <= p->last_index;
}

static bool ri_any(const struct part *p, const struct req *r, uint64_t a)
{
	(void)p;
	(void)r;
	(void)a;
	return true;
}

static void ri_done_fail(struct shard *sh, struct req *r, uint64_t a, int err)
{
	(void)sh;
	(void)a;
	ri_fail(r, err);
}

static void ri_done_serve(struct shard *sh, struct req *r, uint64_t a, int err)
{
	(void)a;
	(void)err;
	shard_req_read(sh, r);
}

/* Shard thread, from part_raft_run with no ready out: expired reads
 * fail; the queued ones get one ReadIndex together. */
void part_repl_reads_issue(struct shard *sh, struct part *p)
{
	if (!p->ri_head)
		return;
	bool lead = raft_role(p->raft) == RAFT_LEADER;
	ri_sweep(sh, p, ri_is_expired, ri_done_fail, 0,
		 lead ? -PARLEY_EAGAIN : -PARLEY_ENOTLEADER);
	bool queued = false;
	for (struct req *r = p->ri_head; r && !queued; r = r->next)
		queued = r->ri_state == RI_QUEUED;
	if (!queued)
		return;
	if (!p->ri_ctx)
		p->ri_ctx = parley_now_ms() * 1000u;
	uint64_t ctx = ++p->ri_ctx;
	int rc = raft_read_index(p->raft, ctx);
	if (rc == -PARLEY_EAGAIN || rc == -PARLEY_ENOTLEADER)
		return; /* a new leader before its first commit in its term, or
			   no leader known (an election): again on the next run
			   (every tick runs the group), until the deadline */
	if (rc) {
		/* too many reads pending (FULL) */
		ri_sweep(sh, p, ri_is_queued, ri_done_fail, 0,
			 rc == -PARLEY_EFULL ? -PARLEY_EAGAIN : rc);
		return;
	}
	for (struct req *r = p->ri_head; r; r = r->next)
		if (r->ri_state == RI_QUEUED) {
			r->ri_state = RI_ISSUED;
			r->ri_ctx = ctx;
		}
}

/* Shard thread, from part_raft_run after a ready's committed entries were
 * applied: the ready's confirmed (or failed) reads, then every confirmed
 * read whose index is applied is served. */
void part_repl_reads_ready(struct shard *sh, struct part *p,
			   const struct raft_read *reads, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++)
		for (struct req *r = p->ri_head; r; r = r->next) {
			if (r->ri_state != RI_ISSUED || r->ri_ctx != reads[k].ctx)
				continue;
			if (reads[k].err) {
				/* leadership lost, or the leader refused the
				 * forward: asked again on the next run, until
				 * the deadline fails it */
				r->ri_state = RI_QUEUED;
				continue;
			}
			r->ri_state = RI_CONFIRMED;
			r->ri_index = reads[k].index;
		}
	if (p->ri_head)
		ri_sweep(sh, p, ri_is_servable, ri_done_serve, 0, 0);
}

/* The shard stops: every read still waiting fails with -PARLEY_ECLOSED. */
void part_repl_reads_close(struct part *p)
{
	ri_sweep(NULL, p, ri_any, ri_done_fail, 0, -PARLEY_ECLOSED);
}

/* ---- status -------------------------------------------------------------------- */

uint64_t pe_raft_status_gen(struct pe_engine *e)
{
	return e ? atomic_load_explicit(&e->status_gen, memory_order_acquire) : 0;
}

int pe_raft_status(struct pe_engine *e, uint32_t partition,
		   struct pe_raft_status *out)
{
	if (!e || !out || partition >= e->nparts)
		return -PARLEY_EINVAL;
	struct part *p = &e->parts[partition];
#define LD(x) atomic_load_explicit(&p->x, memory_order_relaxed)
	*out = (struct pe_raft_status){
		.role = (enum pe_raft_role)LD(pub_role),
		.term = LD(pub_term),
		.leader = LD(pub_leader),
		.commit = LD(pub_commit),
		.applied = LD(pub_applied),
		.last_index = LD(pub_last),
		.snapshot_needed = LD(pub_snap_needed),
		.dropped = LD(pub_dropped),
		.snap_sends_started = LD(pub_snap_started),
		.snap_sends_completed = LD(pub_snap_done),
		.snap_sends_failed = LD(pub_snap_failed),
		.snap_sent_bytes = LD(pub_snap_sent),
		.snap_received_bytes = LD(pub_snap_recv),
		.snap_installed = LD(pub_snap_installed),
		.snap_install_failed = LD(pub_snap_install_failed),
		.elections = LD(pub_elections),
		.down_retold = LD(pub_down_retold),
		.quiesced = LD(pub_quiesced),
		.reads_served = LD(pub_ri_served),
		.reads_failed = LD(pub_ri_failed),
		.damaged_found = LD(pub_damaged_found),
		.damaged_repaired = LD(pub_damaged_repaired),
		.damaged_superseded = LD(pub_damaged_superseded)};
	uint32_t nmem = atomic_load_explicit(&p->pub_n_mem, memory_order_relaxed);
	if (out->role != PE_LEADER)
		nmem = 0;
	for (uint32_t i = 0; i < nmem && i < PE_RAFT_MAX_MEMBERS; i++) {
		struct pe_raft_member *m = &out->members[out->n_members++];
		uint32_t f = atomic_load_explicit(&p->pub_mem_flags[i],
						  memory_order_relaxed);
		m->node = LD(pub_mem_id[i]);
		m->match = LD(pub_mem_match[i]);
		m->active = f & PE_MEMBER_ACTIVE;
		m->voter = f & PE_MEMBER_VOTER;
		m->snapshot = f & PE_MEMBER_SNAPSHOT;
		m->lag = out->last_index > m->match ? out->last_index - m->match : 0;
		if (m->node != out->leader && m->lag > out->lag_max)
			out->lag_max = m->lag;
	}
#undef LD
	/* the configuration, under its seqlock (part_conf_publish) */
	for (;;) {
		uint64_t s1 = atomic_load_explicit(&p->pub_conf_seq,
						   memory_order_acquire);
		uint32_t n = (uint32_t)atomic_load_explicit(
			&p->pub_conf_n, memory_order_relaxed);
		uint64_t ids[RAFT_MAX_MEMBERS], roles[RAFT_MAX_MEMBERS];
		if (n > RAFT_MAX_MEMBERS)
			n = RAFT_MAX_MEMBERS;
		for (uint32_t i = 0; i < n; i++) {
			ids[i] = atomic_load_explicit(&p->pub_conf_ids[i],
						      memory_order_relaxed);
			roles[i] = atomic_load_explicit(&p->pub_conf_roles[i],
							memory_order_relaxed);
		}
		atomic_thread_fence(memory_order_acquire);
		uint64_t s2 = atomic_load_explicit(&p->pub_conf_seq,
						   memory_order_relaxed);
		if (s1 != s2 || (s1 & 1))
			continue;
		out->nvoters = out->nlearners = 0;
		for (uint32_t i = 0; i < n; i++) {
			bool v = roles[i] == RAFT_VOTER;
			uint64_t *arr = v ? out->voters : out->learners;
			uint32_t *cnt = v ? &out->nvoters : &out->nlearners;
			uint32_t k = (*cnt)++;
			while (k && arr[k - 1] > ids[i]) { /* ascending */
				arr[k] = arr[k - 1];
				k--;
			}
			arr[k] = ids[i];
		}
		break;
	}
	return 0;
}

int pe_partition_leader_check(struct pe_engine *e, uint32_t partition)
{
	if (!e || partition >= e->nparts)
		return -PARLEY_EINVAL;
	if (e->cl.conf.n < 2)
		return 0;
	struct part *p = &e->parts[partition];
	if (atomic_load_explicit(&p->pub_writable, memory_order_relaxed))
		return 0;
	return atomic_load_explicit(&p->pub_role, memory_order_relaxed) ==
			       PE_LEADER
		       ? -PARLEY_EAGAIN
		       : -PARLEY_ENOTLEADER;
}
