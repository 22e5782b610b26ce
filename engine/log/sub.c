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

/* Delivers up to `budget` entries, from history while the cursor is below
 * the memtable, then from memory. Returns true when caught up (or stopped
 * for a reason other than the budget). */
static bool sub_pump(struct pe_sub *sub, uint32_t budget)
{
	struct stream *s = sub->st;
	struct part *p = &sub->e->parts[sub->part];
	struct pe_entry batch[SUB_CHUNK];
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
				PLOG_E("engine", "history read failed; subscription closed",
				       "partition=%u err=%s", p->id, parley_errname(rc));
				struct pe_sub_update u = {.event = PE_SUB_CLOSED,
							  .err = rc,
							  .next_seq = sub->next_seq};
				atomic_store(&sub->dead, true);
				sub->cb(sub->arg, sub, &u);
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
	if (!sub_pump(sub, CATCHUP_BUDGET))
		shard_catchup_add(sh, sub);
}

void sub_run_catchup(struct shard *sh)
{
	struct pe_sub **pp = &sh->catchup;
	while (*pp) {
		struct pe_sub *sub = *pp;
		bool done = atomic_load(&sub->dead) || sub->paused ||
			    sub_pump(sub, CATCHUP_BUDGET);
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
}
