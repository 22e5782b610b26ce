/*
 * sub.c — subscriptions (tails): delivering a stream's backlog (from
 * history, then from memory) and then its live entries, in order, with no
 * gap and no duplicate, under the subscriber's flow control.
 *
 * Invariants
 *   1. A subscription's next_seq only moves forward by entries delivered
 *      (or to first_seq with a TRIMMED event).
 *   2. A catching-up subscription gets at most CATCHUP_BUDGET entries per
 *      shard loop turn, so one deep backlog cannot starve the shard.
 *
 * History chunks (cursor below the memtable) are read by the read pool
 * (history/hist_read.c) when the engine has one: one chunk in flight per
 * subscription (rd_flight), its entries delivered by sub_hist_deliver on
 * the shard, from the same kind of snapshot as a read (so an entry a flush
 * moves meanwhile is found either in the chunk or in the memtable after
 * it, never in both, never in neither).
 *
 * Threads: the stream's shard thread; pe_sub.dead is the only field other
 * threads touch (atomic).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define SUB_CHUNK 64u          /* entries per subscription callback */
#define CATCHUP_BUDGET 1024u   /* entries per catching-up sub per loop turn */

void sub_free(struct pe_sub *sub)
{
	free(sub);
}

static void sub_close_err(struct pe_sub *sub, struct part *p, int rc)
{
	PLOG_E("engine", "history read failed; subscription closed",
	       "partition=%u err=%s", p->id, parley_errname(rc));
	struct pe_sub_update u = {.event = PE_SUB_CLOSED, .err = rc,
				  .next_seq = sub->next_seq};
	atomic_store(&sub->dead, true);
	sub->cb(sub->arg, sub, &u);
}

/* Delivers up to `budget` entries, from history while the cursor is below
 * the memtable, then from memory. With the read pool, a history chunk is
 * read there (hist_read_sub) and this returns: sub_hist_deliver hands the
 * chunk over and pumps on. Returns true when caught up (or stopped for a
 * reason other than the budget, a chunk in the pool included). */
static bool sub_pump(struct shard *sh, struct pe_sub *sub, uint32_t budget)
{
	struct stream *s = sub->st;
	struct part *p = &sub->e->parts[sub->part];
	struct pe_entry batch[SUB_CHUNK];
	if (sub->rd_flight || sub->rd_waiting)
		return true; /* its chunk (or its slot) pumps on */
	if (sub->next_seq < s->first_seq) {
		struct pe_sub_update u = {.event = PE_SUB_TRIMMED,
					  .next_seq = s->first_seq};
		sub->next_seq = s->first_seq;
		if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
			sub->paused = true;
	}
	while (!sub->paused && !atomic_load(&sub->dead) &&
	       sub->next_seq <= s->last_seq) {
		if (budget == 0)
			return false;
		uint32_t n = 0;
		uint32_t want = PARLEY_MIN(SUB_CHUNK, budget);
		struct history_hold *hold = NULL;
		if (sub->next_seq < s->mem_first && p->hist &&
		    hist_read_async(sh)) {
			if (sh->rd_inflight >= sh->e->opt.read_queue_depth) {
				hist_read_sub_wait(sh, sub);
				return true;
			}
			int rc = hist_read_sub(sh, sub, p, s, want);
			if (rc)
				sub_close_err(sub, p, rc);
			return true;
		}
		if (sub->next_seq < s->mem_first) {
			struct history_read_req q = {
				.key = s->key, .klen = s->klen,
				.from = sub->next_seq, .dir = PE_FORWARD,
				.limit = want, .below = s->mem_first,
				.first_retained = s->first_seq};
			struct history_read_res hr;
			int rc = p->hist ? hpart_read(p->hist, &q, batch, &hr, &hold)
					 : -PARLEY_ECORRUPT;
			if (rc) {
				sub_close_err(sub, p, rc);
				return true;
			}
			n = hr.count;
			uint64_t got = n ? batch[0].seq : s->mem_first;
			if (got != sub->next_seq) {
				/* hidden by a mark the memtable did not know yet */
				struct pe_sub_update u = {.event = PE_SUB_TRIMMED,
							  .next_seq = got};
				sub->next_seq = got;
				if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
					sub->paused = true;
				if (!n || sub->paused || atomic_load(&sub->dead)) {
					history_hold_free(hold);
					continue;
				}
			}
		} else {
			while (n < want && sub->next_seq + n <= s->last_seq) {
				struct mentry *m = stream_at(s, sub->next_seq + n);
				PARLEY_ASSERT(m && m->seq == sub->next_seq + n);
				mentry_to_pe(m, &batch[n]);
				n++;
			}
		}
		sub->next_seq += n;
		budget -= n;
		struct pe_sub_update u = {.event = PE_SUB_ENTRIES,
					  .entries = batch, .count = n,
					  .next_seq = sub->next_seq};
		if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
			sub->paused = true;
		history_hold_free(hold);
	}
	return true;
}

static void shard_catchup_add(struct shard *sh, struct pe_sub *sub)
{
	if (sub->in_catchup)
		return;
	sub->in_catchup = true;
	sub->cnext = sh->catchup;
	sh->catchup = sub;
}

void sub_start(struct shard *sh, struct pe_sub *sub)
{
	if (!sub_pump(sh, sub, CATCHUP_BUDGET))
		shard_catchup_add(sh, sub);
}

/* A history chunk read by the pool for sub (hist_read.c): entries from
 * sub->next_seq below `below` (the memtable's first seq when it was
 * dispatched), delivered as the synchronous path does, then the pump goes
 * on (more history, or the memtable). */
void sub_hist_deliver(struct shard *sh, struct pe_sub *sub, int rc,
		      const struct pe_entry *batch, uint32_t n, uint64_t below)
{
	sub->rd_flight = false;
	if (sub->free_pending) { /* unsubscribed meanwhile */
		sub_free(sub);
		return;
	}
	if (atomic_load(&sub->dead) || !sub->attached)
		return;
	struct part *p = &sub->e->parts[sub->part];
	if (rc) {
		sub_close_err(sub, p, rc);
		return;
	}
	uint64_t got = n ? batch[0].seq : below;
	if (got != sub->next_seq) {
		/* hidden by a mark the memtable did not know yet */
		struct pe_sub_update u = {.event = PE_SUB_TRIMMED,
					  .next_seq = got};
		sub->next_seq = got;
		if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
			sub->paused = true;
	}
	if (n && !sub->paused && !atomic_load(&sub->dead)) {
		sub->next_seq += n;
		struct pe_sub_update u = {.event = PE_SUB_ENTRIES,
					  .entries = batch, .count = n,
					  .next_seq = sub->next_seq};
		if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
			sub->paused = true;
	}
	if (!sub->paused && !atomic_load(&sub->dead))
		sub_start(sh, sub);
}

void sub_run_catchup(struct shard *sh)
{
	struct pe_sub **pp = &sh->catchup;
	while (*pp) {
		struct pe_sub *sub = *pp;
		bool done = atomic_load(&sub->dead) || sub->paused ||
			    sub_pump(sh, sub, CATCHUP_BUDGET);
		if (done) {
			sub->in_catchup = false;
			*pp = sub->cnext;
		} else {
			pp = &sub->cnext;
		}
	}
}

void sub_notify(struct shard *sh, struct stream *s)
{
	for (struct pe_sub *sub = s->subs; sub; sub = sub->next)
		if (!sub->paused && !sub->in_catchup && !atomic_load(&sub->dead))
			sub_start(sh, sub);
}

void sub_detach(struct shard *sh, struct pe_sub *sub)
{
	if (sub->attached) {
		struct pe_sub **pp = &sub->st->subs;
		while (*pp && *pp != sub)
			pp = &(*pp)->next;
		if (*pp)
			*pp = sub->next;
		sub->attached = false;
	}
	if (sub->in_catchup) {
		struct pe_sub **pp = &sh->catchup;
		while (*pp && *pp != sub)
			pp = &(*pp)->cnext;
		if (*pp)
			*pp = sub->cnext;
		sub->in_catchup = false;
	}
	if (sub->rd_waiting) {
		struct pe_sub **pp = &sh->sub_wait, *prev = NULL;
		while (*pp && *pp != sub) {
			prev = *pp;
			pp = &(*pp)->wnext;
		}
		if (*pp) {
			*pp = sub->wnext;
			if (sh->sub_wait_tail == sub)
				sh->sub_wait_tail = prev;
		}
		sub->wnext = NULL;
		sub->rd_waiting = false;
	}
}
