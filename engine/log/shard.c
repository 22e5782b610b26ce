/*
 * shard.c — the shard thread: its bounded inbox, its loop, group commit on
 * its WAL, and applying durable records.
 *
 * Threads: every partition belongs to one shard thread (p % nshards). Public
 * calls from any thread turn into a `struct req` pushed on the shard's
 * bounded inbox; the shard thread does all the work and runs callbacks.
 * A stepped engine (engine/step.c, the simulator) has no shard thread: the
 * same loop runs round by round (shard_round) on the caller's thread.
 * A request a shard's own callback pushes (a SEND's fan-out appends) does
 * not write the ring's eventfd: the thread is awake, and a round with such
 * a push does not sleep (sh->self_pushed).
 *
 * The append path (durable before ack):
 *
 *   caller: encode command -> inbox
 *   shard:  check partition, memory -> queued as a proposal of the
 *           partition's Raft group (log/part_raft.c) -> raft_propose (time
 *           stamped, log index assigned) -> ready: entries into the WAL's
 *           open batch -> [group commit] write + fdatasync of every group's
 *           entries -> completion -> raft_advance -> next ready: committed
 *           entries applied in log order (seq assigned, idempotency
 *           checked) -> callback, matched by (index, term) -> tails
 *
 * Group commit, pipelined: the open batch is submitted as soon as fewer
 * than WAL_FLIGHT_MAX (2) batches are in flight, so what arrives while a
 * batch syncs (the next SEND, while the previous SEND's fan-out syncs)
 * does not wait for that sync before its own starts. A group has one
 * ready out at a time (raft.h), so its entries are in at most one batch
 * in flight. The WAL reports batches durable in submission order
 * (wal_on_cqe), and the shard advances their groups in that order
 * (ready_fl[], oldest first): nothing of a batch is applied, answered or
 * sent to a peer before every earlier batch is durable too.
 *
 * An append's callback reports success from exactly one place,
 * shard_answer(), reached only from apply_entry() (log/part_raft.c) for
 * entries the partition's group handed out as committed, which it does
 * only once they are durable (raft.h I4): after wal_on_cqe() reported their
 * batch durable and the group advanced. The proposal is found by the
 * (index, term) it was proposed at (log/part_wait.c), not by its position
 * in the batch. Recovery applies the same entries through the same
 * function once the group has elected itself, so a replayed log rebuilds
 * exactly the seqs that were acknowledged.
 *
 * Invariants
 *   1. part->last_index counts applied records; records apply in index
 *      order with no gap (a gap at recovery marks the partition corrupt).
 *   2. A request is owned by the inbox, then the shard; the shard frees it
 *      after its callback (or when the engine stops).
 *   3. A WAL write or fdatasync failure is fatal for the shard: every
 *      pending append fails with -PARLEY_EFATAL, never retried.
 *   4. The shard thread waits on the disk only through its ring (the WAL
 *      batch's write + fdatasync). Segment rolls swap in a segment the
 *      WAL's prep thread prepared ahead (wal_submit returns -EAGAIN and the
 *      ring is woken if it is not ready yet); WAL release, history
 *      manifest stores, new segment readers, dictionary training and file
 *      removals run on the WAL's prep thread or the history workers and
 *      come back through the inbox (REQ_HIST_DONE) or wal_poll.
 *      History reads of entries the memtable no longer holds (REQ_READ,
 *      a tail's catch-up chunks) run on the read pool (history/
 *      hist_read.c) and come back as REQ_READ_DONE / REQ_SUB_READ_DONE;
 *      a live HARDSTATE store (a term or vote change) runs there too and
 *      comes back as REQ_HS_DONE (log/part_raft.c), and so do a
 *      snapshot's file operations (image, chunk reads, chunk stores,
 *      install), as REQ_SNAP_DONE (log/part_snap.c). The I/O backend
 *      counts any synchronous file operation made on a shard thread
 *      (pe_shard_sync_io); tests/unit/engine/test_noblock.c and the
 *      snapshot tests of test_part_repl.c assert it stays 0.
 *      tests/unit/engine/test_shard.c checks it.

 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* user_data of the WAL's batches on the shard's ring: SHARD_WAL_UD + the
 * batch's slot (wal_submit); nothing else is submitted on it. */
#define SHARD_WAL_UD 1u

/* The engine's clock for timestamps stamped into commands (injectable). */
uint64_t engine_clock(struct pe_engine *e)
{
	return e->opt.clock_ms ? e->opt.clock_ms(e->opt.clock_arg)
			       : parley_now_ms();
}

/* The engine's timers (retention ticks): the monotonic clock, or the
 * stepper's (stepped execution, engine/step.c). */
uint64_t engine_mono_ns(struct pe_engine *e)
{
	return e->step.now_ns ? e->step.now_ns(e->step.arg) : parley_mono_ns();
}

/* ---- shard: inbox ------------------------------------------------------------------ */

static struct shard *shard_of(struct pe_engine *e, uint32_t part)
{
	return &e->shards[part % e->nshards];
}

/* The shard whose thread this is (shard_main), NULL on any other thread
 * (and in a stepped engine, which has no shard threads). */
static _Thread_local struct shard *tl_shard;

int shard_push(struct pe_engine *e, struct req *r)
{
	/* STOP, UNSUBSCRIBE and the workers' and the read pool's completions
	 * always get through: they release resources (a finished job must
	 * reach its shard) */
	bool forced = r->kind == REQ_STOP || r->kind == REQ_UNSUBSCRIBE ||
		      r->kind == REQ_HIST_DONE || r->kind == REQ_READ_DONE ||
		      r->kind == REQ_SUB_READ_DONE || r->kind == REQ_HS_DONE ||
		      r->kind == REQ_SNAP_DONE;
	if (atomic_load(&e->closing) && !forced)
		return -PARLEY_ECLOSED;
	/* node liveness is not bounded by the queue either: a lost link-up
	 * would leave the node down for its groups (part->down), a lost
	 * link-down a quiesced follower asleep behind a dead leader; one
	 * small request per link event and shard */
	bool bounded = !forced &&
		       !(r->kind == REQ_NODE && (r->index == NODE_EV_DOWN ||
						 r->index == NODE_EV_UP));
	struct shard *sh = shard_of(e, r->part);
	pthread_mutex_lock(&sh->mu);
	if (sh->in_count >= e->opt.queue_depth && bounded) {
		pthread_mutex_unlock(&sh->mu);
		return -PARLEY_EFULL;
	}
	bool was_empty = sh->in_head == NULL;
	r->next = NULL;
	if (sh->in_tail)
		sh->in_tail->next = r;
	else
		sh->in_head = r;
	sh->in_tail = r;
	sh->in_count++;
	atomic_fetch_add_explicit(&sh->queued_bytes, sizeof *r + r->len,
				  memory_order_relaxed);
	pthread_mutex_unlock(&sh->mu);
	if (tl_shard == sh) {
		/* a callback of this shard appending (a SEND's fan-out): the
		 * thread is awake and drains its inbox before it sleeps again
		 * (shard_round), so no eventfd write and wake-up CQE */
		sh->self_pushed = true;
	} else if (was_empty) {
		e->io->ops->ring_wake(sh->ring);
	}
	return 0;
}

/* A chain of requests (linked by next) for one shard under one lock and
 * at most one wake-up: the inbound Raft messages of one peer frame
 * (pe_raft_recv). Requests beyond the queue's bound are freed (as
 * shard_push refuses them: -PARLEY_EFULL). Never a forced kind. Returns
 * how many were dropped (closing: all). */
uint32_t shard_push_chain(struct pe_engine *e, uint32_t shard, struct req *head)
{
	struct shard *sh = &e->shards[shard];
	uint32_t dropped = 0;
	bool was_empty = false, closing = atomic_load(&e->closing);
	pthread_mutex_lock(&sh->mu);
	was_empty = sh->in_head == NULL;
	while (head) {
		struct req *r = head;
		head = r->next;
		r->next = NULL;
		if (closing || sh->in_count >= e->opt.queue_depth) {
			free(r);
			dropped++;
			continue;
		}
		if (sh->in_tail)
			sh->in_tail->next = r;
		else
			sh->in_head = r;
		sh->in_tail = r;
		sh->in_count++;
		atomic_fetch_add_explicit(&sh->queued_bytes, sizeof *r + r->len,
					  memory_order_relaxed);
	}
	bool wake = was_empty && sh->in_head;
	pthread_mutex_unlock(&sh->mu);
	if (wake)
		e->io->ops->ring_wake(sh->ring);
	return dropped;
}

/* ---- applying durable records ------------------------------------------- */

/* Answers a proposal whose entry applied (rc 0, res its outcome) or could
 * not be applied (rc < 0). The one place an append's success is reported:
 * reached only from shard_apply_record on the live path, i.e. after the
 * WAL batch holding the entry was written and fdatasync'd. t0: the
 * monotonic time the callback stage starts at (0 = read it here);
 * returns the time it ended. */
uint64_t shard_answer(struct shard *sh, struct part *p, struct req *r,
		      int rc, const struct part_apply_res *res, uint64_t t0)
{
	p->pending_bytes -= r->mem_estimate;
	/* its batch is the one that just became durable */
	if (sh->durable_submit_ns > r->t_shard)
		stage_hist_add(&sh->hist[PE_STAGE_FILL],
			       sh->durable_submit_ns - r->t_shard);
	if (!t0)
		t0 = parley_mono_ns();
	if (r->kind == REQ_DELETE) {
		struct pe_delete_result d = res->del;
		if (rc)
			d = (struct pe_delete_result){.err = rc};
		r->cb.del(r->arg, &d);
	} else {
		struct pe_append_result a = res->append;
		if (rc)
			a = (struct pe_append_result){.err = rc};
		if (!a.err) {
			atomic_fetch_add(&sh->n_appends, 1);
			atomic_fetch_add(&sh->n_entries, a.count);
		}
		r->cb.append(r->arg, &a);
	}
	uint64_t t1 = parley_mono_ns();
	stage_hist_add(&sh->hist[PE_STAGE_CALLBACK], t1 - t0);
	api_req_free(r);
	return t1;
}

/* Fails a chain of proposals (linked by next) with err. */
void shard_fail_chain(struct shard *sh, struct req *r, int err)
{
	while (r) {
		struct req *n = r->next;
		sh->e->parts[r->part].pending_bytes -= r->mem_estimate;
		shard_req_fail(r, err);
		r = n;
	}
}

/* Recovery: a valid WAL record joins its partition's Raft log (rlog);
 * the group applies it once it is committed (part_raft_elect). */
int shard_apply_record(void *arg, const struct wal_rec *rec)
{
	struct apply_ctx *c = arg;
	struct pe_engine *e = c->sh->e;
	if (rec->partition >= e->nparts ||
	    rec->partition % e->nshards != c->sh->idx) {
		/* only possible from disk: a valid record in the wrong WAL */
		PLOG_E("engine", "record for a foreign partition",
		       "file=%s offset=%" PRIu64 " partition=%u", rec->file,
		       rec->off, rec->partition);
		return 0;
	}
	struct part *p = &e->parts[rec->partition];
	if (p->corrupt)
		return 0;
	int rc = part_raft_recover(p, rec);
	if (rc == -PARLEY_ECORRUPT)
		part_mark_corrupt(p, rec->file, rec->off,
				  "log index gap or unknown record type");
	else if (rc)
		part_mark_corrupt(p, rec->file, rec->off,
				  "out of memory while recovering");
	return 0;
}

/* Recovery: a WAL record with an intact header and a damaged body
 * (wal.h, wal_recovery.damaged): 0 when its partition takes it (in
 * history already, or repaired later from a peer), 1 = corrupt. */
int shard_recover_damaged(void *arg, const struct wal_rec *rec)
{
	struct apply_ctx *c = arg;
	struct pe_engine *e = c->sh->e;
	if (rec->partition >= e->nparts ||
	    rec->partition % e->nshards != c->sh->idx)
		return 1;
	struct part *p = &e->parts[rec->partition];
	if (p->corrupt)
		return 1;
	return part_raft_recover_damaged(p, rec, e->cl.conf.n > 1);
}

/* Recovery: a damaged WAL record header (wal.h, wal_recovery.lost): the
 * byte range may have held records of any partition of the shard. In a
 * replicated engine each partition is repaired from its leader
 * (part_raft_recover_lost): 0. A single node has nobody to ask: 1, the
 * shard's partitions are corrupt, as before. */
int shard_recover_lost(void *arg, const char *file, uint64_t off, uint64_t end)
{
	struct apply_ctx *c = arg;
	struct pe_engine *e = c->sh->e;
	if (e->cl.conf.n < 2)
		return 1;
	for (uint32_t i = c->sh->idx; i < e->nparts; i += e->nshards)
		if (!e->parts[i].corrupt)
			part_raft_recover_lost(&e->parts[i], file, off, end);
	return 0;
}

static void shard_fatal(struct shard *sh, int err);

/* Proposals queued on p wait for the next round (shard loop). */
void shard_mark_dirty(struct shard *sh, struct part *p)
{
	if (p->in_dirty)
		return;
	p->in_dirty = true;
	p->dnext = sh->dirty;
	sh->dirty = p;
}

static void shard_run_dirty(struct shard *sh)
{
	struct part *p = sh->dirty;
	sh->dirty = NULL;
	while (p) {
		struct part *n = p->dnext;
		p->in_dirty = false;
		p->dnext = NULL;
		if (!sh->fatal) {
			int rc = part_raft_run(sh, p, true, true);
			if (rc)
				shard_fatal(sh, rc);
			else if ((p->prop_head || p->rin_head) && !p->ready_out)
				shard_mark_dirty(sh, p); /* the open batch was full */
		}
		p = n;
	}
}

/* The WAL is busy: the dirty groups' inbound messages without entries
 * (a follower's answer to the leader) are stepped now, so a commit does
 * not wait for the batch in flight; they stay dirty for their proposals
 * and inbound entries, which join the next batch. */
static void shard_run_inputs(struct shard *sh)
{
	for (struct part *p = sh->dirty; p && !sh->fatal; p = p->dnext) {
		int rc = part_raft_run_inputs(sh, p);
		if (rc)
			shard_fatal(sh, rc);
	}
}

static int no_record(void *arg, const struct wal_rec *rec)
{
	return 0;
}

/* Open only (before the shard thread runs): writes the open batch and
 * waits for its fdatasync on the shard's ring. */
int shard_wal_sync(struct shard *sh)
{
	struct pio_cqe cqes[RING_DEPTH];
	int rc;
	/* -EAGAIN: a roll waits for the prepared segment (the ring is woken) */
	PARLEY_ASSERT(!wal_in_flight(sh->wal));
	while ((rc = wal_submit(sh->wal, sh->ring, SHARD_WAL_UD)) == -EAGAIN) {
		if (sh->e->step.now_ns) /* stepped: no prep thread */
			(void)wal_prep_step(sh->wal);
		else
			(void)sh->e->io->ops->ring_wait(sh->ring, cqes, 0, -1);
	}
	if (rc)
		return rc;
	for (;;) {
		int n = sh->e->io->ops->ring_wait(sh->ring, cqes, RING_DEPTH, -1);
		if (n == -EINTR || n == -EAGAIN || n == -ETIME || n == 0)
			continue;
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			if (cqes[i].user_data - SHARD_WAL_UD >= WAL_FLIGHT_MAX)
				continue;
			rc = wal_on_cqe(sh->wal, cqes[i].user_data, cqes[i].res);
			if (rc < 0)
				return rc;
			if (rc == 1)
				return wal_for_each_durable(sh->wal, no_record, NULL);
		}
	}
}

/* ---- recovery, failure and the loop -------------------------------------- */

static void recover_corrupt(void *arg, int64_t partition, const char *file,
			    uint64_t off, const char *why)
{
	struct shard *sh = arg;
	struct pe_engine *e = sh->e;
	if (partition >= 0 && (uint64_t)partition < e->nparts &&
	    (uint64_t)partition % e->nshards == sh->idx) {
		part_mark_corrupt(&e->parts[partition], file, off, why);
		return;
	}
	for (uint32_t p = sh->idx; p < e->nparts; p += e->nshards)
		part_mark_corrupt(&e->parts[p], file, off, why);
}

/* Recovery's view of history (the WAL mark check): its arg is the
 * apply_ctx. */
uint64_t shard_recover_flushed(void *arg, uint32_t part)
{
	struct apply_ctx *c = arg;
	struct pe_engine *e = c->sh->e;
	if (part >= e->nparts)
		return UINT64_MAX; /* foreign record: ignored by recovery */
	return e->parts[part].flushed_index;
}

/* Publishes this shard's memory for pe_memory(); returns its memtable
 * bytes. Shard thread. */
uint64_t shard_publish_mem(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	uint64_t mem = 0, idem = 0, maxp = 0;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		uint64_t m = e->parts[i].mem_bytes + e->parts[i].pending_bytes;
		mem += m;
		maxp = PARLEY_MAX(maxp, m);
		idem += e->parts[i].nidem;
	}
	atomic_store_explicit(&sh->mem_pub, mem, memory_order_relaxed);
	atomic_store_explicit(&sh->maxp_pub, maxp, memory_order_relaxed);
	atomic_store_explicit(&sh->pend_pub, 0, memory_order_relaxed);
	atomic_store_explicit(&sh->idem_pub, idem, memory_order_relaxed);
	return mem;
}

/* Recovery's corruption callback: its arg is the apply_ctx. */
void shard_recover_corrupt(void *arg, int64_t partition, const char *file,
				uint64_t off, const char *why)
{
	struct apply_ctx *c = arg;
	recover_corrupt(c->sh, partition, file, off, why);
}

static void shard_fatal(struct shard *sh, int err)
{
	if (sh->fatal)
		return;
	sh->fatal = -PARLEY_EFATAL;
	PLOG_E("engine", "WAL write or fdatasync failed; appends disabled",
	       "shard=%u err=%s", sh->idx, parley_errname(err));
	/* every proposal of the shard: queued, in the open batch, in flight */
	for (uint32_t i = sh->idx; i < sh->e->nparts; i += sh->e->nshards) {
		struct part *p = &sh->e->parts[i];
		shard_fail_chain(sh, part_wait_take_after(p, 0), -PARLEY_EFATAL);
		shard_fail_chain(sh, p->prop_head, -PARLEY_EFATAL);
		p->prop_head = p->prop_tail = NULL;
		part_conf_fail(p, 0, -PARLEY_EFATAL);
		if (p->ready_out) {
			raft_persist_failed(p->raft);
			p->ready_out = false;
		}
		p->wal_wait = false;
		p->hs_wait = 0;
	}
	sh->ready_open = NULL;
	sh->fl_n = 0;
	while (sh->dirty) { /* nothing is proposed any more */
		struct part *p = sh->dirty;
		sh->dirty = p->dnext;
		p->dnext = NULL;
		p->in_dirty = false;
	}
	if (sh->e->opt.on_fatal)
		sh->e->opt.on_fatal(sh->e->opt.fatal_arg, err);
}

static void shard_submit(struct shard *sh)
{
	if (sh->fatal || wal_busy(sh->wal) || !wal_has_open(sh->wal))
		return;
	int rc = wal_submit(sh->wal, sh->ring, SHARD_WAL_UD);
	if (rc == -EAGAIN) /* the next segment is being prepared: woken */
		return;
	if (rc) {
		shard_fatal(sh, rc);
		return;
	}
	PARLEY_ASSERT(sh->fl_n < WAL_FLIGHT_MAX);
	uint32_t k = (sh->fl_head + sh->fl_n++) % WAL_FLIGHT_MAX;
	sh->fl_submit_ns[k] = parley_mono_ns();
	sh->ready_fl[k] = sh->ready_open;
	sh->ready_open = NULL;
	struct wal_stats ws;
	wal_get_stats(sh->wal, &ws);
	if (ws.segments != sh->wal_rolls) { /* rolled: maybe release, force-flush */
		sh->wal_rolls = ws.segments;
		hist_job_wal_release(sh);
	}
}

/* The oldest batch in flight is durable, and so is every batch before it
 * (wal_on_cqe counts them in order): its groups advance. */
static void shard_batch_durable(struct shard *sh)
{
	wal_for_each_durable(sh->wal, no_record, NULL);
	if (sh->fatal) /* its groups were failed already (shard_fatal) */
		return;
	PARLEY_ASSERT(sh->fl_n > 0);
	uint32_t k = sh->fl_head;
	sh->fl_head = (sh->fl_head + 1) % WAL_FLIGHT_MAX;
	sh->fl_n--;
	sh->durable_submit_ns = sh->fl_submit_ns[k];
	stage_hist_add(&sh->hist[PE_STAGE_SYNC],
		       parley_mono_ns() - sh->fl_submit_ns[k]);
	/* every group whose ready was in the batch: advance, and its next
	 * ready applies those entries (answering their waiters, whose
	 * callbacks may append again). The proposals that queued meanwhile
	 * are made by the loop's next round, with those new appends, just
	 * before the next submit. */
	struct part *fl = sh->ready_fl[k];
	sh->ready_fl[k] = NULL;
	for (struct part *p = fl; p; p = p->rnext)
		part_raft_durable(p);
	while (fl) {
		struct part *n = fl->rnext;
		fl->rnext = NULL;
		int rc2 = part_raft_run(sh, fl, true, false);
		if (rc2) {
			shard_fatal(sh, rc2);
			return;
		}
		shard_mark_dirty(sh, fl);
		fl = n;
	}
}

static void shard_on_cqe(struct shard *sh, const struct pio_cqe *c)
{
	if (!wal_in_flight(sh->wal) ||
	    c->user_data - SHARD_WAL_UD >= WAL_FLIGHT_MAX)
		return;
	int n = wal_on_cqe(sh->wal, c->user_data, c->res);
	if (n < 0) {
		shard_fatal(sh, n);
		return;
	}
	for (int i = 0; i < n; i++)
		shard_batch_durable(sh);
	if (n)
		hist_job_maybe_flush(sh);
}

/* Process drained requests; stop at an append that does not fit. */
static void shard_process(struct shard *sh)
{
	/* one clock read per drain: when the shard took these requests */
	uint64_t now = 0;
	while (sh->backlog) {
		struct req *r = sh->backlog;
		struct req *next = r->next;
		atomic_fetch_sub_explicit(&sh->queued_bytes, sizeof *r + r->len,
					  memory_order_relaxed);
		if (r->kind == REQ_APPEND || r->kind == REQ_DELETE) {
			if (!now)
				now = parley_mono_ns();
			if (!shard_req_append(sh, r, now)) {
				atomic_fetch_add_explicit(&sh->queued_bytes,
							  sizeof *r + r->len,
							  memory_order_relaxed);
				return; /* open batch full: wait for the flight */
			}
			/* r may be freed by now */
			sh->backlog = next;
			if (!sh->backlog)
				sh->backlog_tail = NULL;
			continue;
		}
		sh->backlog = next;
		if (!sh->backlog)
			sh->backlog_tail = NULL;
		switch (r->kind) {
		case REQ_APPEND:
		case REQ_DELETE:
			break;
		case REQ_HIST_DONE:
			hist_job_done(sh, r);
			break;
		case REQ_FLUSH:
			hist_job_flush_req(sh, r);
			break;
		case REQ_COMPACT:
			hist_job_compact_req(sh, r);
			break;
		case REQ_READ:
			/* a linearizable read waits for its ReadIndex */
			if (!part_repl_read(sh, r))
				shard_req_read(sh, r);
			break;
		case REQ_META:
			shard_req_meta(sh, r);
			break;
		case REQ_STATUS:
			shard_req_status(sh, r);
			break;
		case REQ_LIST:
			shard_req_list(sh, r);
			break;
		case REQ_SUBSCRIBE:
			shard_req_subscribe(sh, r);
			break;
		case REQ_RESUME:
			shard_req_resume(sh, r);
			break;
		case REQ_UNSUBSCRIBE:
			shard_req_unsubscribe(sh, r);
			break;
		case REQ_RAFT:
			part_repl_recv(sh, r);
			break;
		case REQ_TICK:
			part_repl_tick(sh, r);
			break;
		case REQ_NODE:
			part_repl_node(sh, r);
			break;
		case REQ_CONF:
			part_conf_req(sh, r);
			break;
		case REQ_READ_DONE:
			hist_read_done(sh, r);
			break;
		case REQ_SUB_READ_DONE:
			hist_read_sub_done(sh, r);
			break;
		case REQ_SNAP_DONE:
			part_snap_done(sh, r);
			break;
		case REQ_HS_DONE: {
			int rc = part_raft_hs_done(sh, r);
			if (rc)
				shard_fatal(sh, rc);
			break;
		}
		case REQ_STOP:
			sh->stopping = true;
			free(r);
			break;
		}
	}
}

static void shard_drain_inbox(struct shard *sh)
{
	pthread_mutex_lock(&sh->mu);
	struct req *h = sh->in_head, *t = sh->in_tail;
	sh->in_head = sh->in_tail = NULL;
	sh->in_count = 0;
	pthread_mutex_unlock(&sh->mu);
	sh->self_pushed = false;
	if (!h)
		return;
	if (sh->backlog_tail)
		sh->backlog_tail->next = h;
	else
		sh->backlog = h;
	sh->backlog_tail = t;
}

static void shard_close_subs(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	for (uint32_t p = sh->idx; p < e->nparts; p += e->nshards) {
		struct part *pt = &e->parts[p];
		for (uint64_t b = 0; b < pt->nsb; b++)
			for (struct stream *s = pt->sbuckets[b]; s; s = s->hnext)
				for (struct pe_sub *sub = s->subs; sub;
				     sub = sub->next) {
					if (atomic_load(&sub->dead))
						continue;
					struct pe_sub_update u = {
						.event = PE_SUB_CLOSED,
						.err = -PARLEY_ECLOSED,
						.next_seq = sub->next_seq};
					atomic_store(&sub->dead, true);
					sub->cb(sub->arg, sub, &u);
				}
	}
}

/* Before the loop's first round (the shard thread; stepped: pe_open). */
void shard_begin(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	struct wal_stats ws;
	wal_get_stats(sh->wal, &ws);
	sh->wal_rolls = ws.segments;
	sh->next_tick_ms = engine_mono_ns(e) / 1000000u + e->opt.retention_interval_ms;
	hist_job_wal_release(sh); /* what the last run flushed but did not release */
	shard_publish_mem(sh); /* what recovery rebuilt */
}

/* The transport's wake-up for what this round's groups sent (pe_cluster.
 * flush): once per stretch of the round instead of once per ready. */
static void shard_flush_sends(struct shard *sh)
{
	if (!sh->sent)
		return;
	sh->sent = false;
	sh->e->cl.flush(sh->e->cl.send_arg);
}

/*
 * One round of the shard loop. With `wait` (the thread) it may block in
 * ring_wait until a completion, a wake-up or its next timer; stepped
 * (engine/step.c) it only polls. Returns 0 to go on, 1 when the shard
 * stopped cleanly (shard_end follows), -1 when the engine is aborting.
 */
int shard_round(struct shard *sh, bool wait)
{
	struct pe_engine *e = sh->e;
	struct pio_cqe cqes[RING_DEPTH];
	if (atomic_load(&e->aborting))
		return -1;
	shard_drain_inbox(sh);
	if (wal_poll(sh->wal) > 0) /* a background release finished */
		hist_job_wal_release(sh);
	shard_process(sh);
	/* group commit: proposals queue while a batch is in flight and
	 * every group's ready is taken just before the next submit, so
	 * all that arrived meanwhile shares one write + fdatasync */
	if (!wal_busy(sh->wal))
		shard_run_dirty(sh);
	else if (e->cl.conf.n > 1)
		shard_run_inputs(sh);
	/* the leaders' early APPENDs leave while the batch is submitted */
	shard_flush_sends(sh);
	shard_submit(sh);
	sub_run_catchup(sh);
	hist_job_tick(sh);
	if (sh->stopping && !sh->backlog && !sh->dirty &&
	    !hist_job_busy(sh) && !sh->rd_inflight && !sh->rd_wait &&
	    !sh->sub_wait &&
	    !sh->hs_flight && !sh->snap_jobs &&
	    (sh->fatal ||
	     (!wal_in_flight(sh->wal) && !wal_has_open(sh->wal)))) {
		pthread_mutex_lock(&sh->mu);
		bool empty = sh->in_head == NULL;
		pthread_mutex_unlock(&sh->mu);
		if (empty) {
			/* clean stop: the WAL's high-water mark gets
			 * the final end of the log (synchronously: the
			 * shard serves no more, so it is not counted) */
			pio_thread_mark_shard(false);
			if (!sh->fatal)
				(void)wal_mark_clean(sh->wal);
			shard_flush_sends(sh);
			return 1;
		}
	}
	int timeout = !wait || sh->catchup || sh->self_pushed ||
			      ((sh->backlog || sh->dirty) &&
			       !wal_busy(sh->wal))
			      ? 0 : hist_job_tick_timeout(sh);
	shard_flush_sends(sh);
	int n = e->io->ops->ring_wait(sh->ring, cqes, RING_DEPTH, timeout);
	if (atomic_load(&e->aborting))
		return -1;
	if (n < 0) {
		if (n != -EINTR && n != -EAGAIN && n != -ETIME)
			shard_fatal(sh, n);
		return 0;
	}
	for (int i = 0; i < n; i++)
		shard_on_cqe(sh, &cqes[i]);
	shard_flush_sends(sh);
	return 0;
}

/* After a clean stop's last round. */
void shard_end(struct shard *sh)
{
	part_raft_close(sh); /* replication: waiters no quorum answered */
	shard_close_subs(sh);
}

void *shard_main(void *arg)
{
	struct shard *sh = arg;
	tl_shard = sh;
	/* the requests a callback issues here (a SEND's fan-out) are made
	 * and freed on this thread: from its pool (parley_common.h) */
	int prc = parley_pool_thread_start();
	if (prc)
		PLOG_W("engine", "no block pool: plain malloc",
		       "shard=%u err=%s", sh->idx, parley_errname(prc));
	shard_begin(sh);
	int rc;
	pio_thread_mark_shard(true); /* invariant 4, counted (io.h) */
	while ((rc = shard_round(sh, true)) == 0)
		;
	pio_thread_mark_shard(false); /* aborted */
	if (rc > 0)
		shard_end(sh);
	parley_pool_thread_end();
	return NULL;
}
