/*
 * step.c — stepped execution: the engine with no thread of its own, for the
 * engine simulator (tests/sim/engine_sim.c), so that a seed replays bit for
 * bit.
 *
 * A threaded engine runs three kinds of loops: each shard's loop
 * (log/shard.c), each shard WAL's prep thread (log/wal.c: next segment,
 * release, periodic mark, spares) and the history workers
 * (history/hist_job.c: flush and compaction jobs, manifest stores, file
 * removals). A stepped engine (pe_open_stepped) starts none of them: the
 * units below are the same code, one round / one unit / one job at a time,
 * and pe_step runs the one the stepper's pick() chooses. The loops'
 * interleaving is then a function of pick()'s answers, and their timers
 * read the stepper's clock, so with the in-memory backend and an injected
 * entry clock nothing in a run depends on the OS scheduler or wall time.
 *
 *   unit u <  nshards:              a round of shard u's loop (polling)
 *   unit u <  2 * nshards:          a unit of shard (u - nshards)'s WAL prep
 *   unit u <  2 * nshards + HW_COUNT: a job of history worker u - 2*nshards
 *
 * What a stepped run does not show: a crash *inside* one unit (say between
 * a release's mark and its unlinks) — pe_abort happens between units.
 * Nor the read pool (history/hist_read.c): a stepped engine does not start
 * it, so history reads and tails' catch-up run inline on the shard (the
 * pool's synchronous fallback) — deterministic, but the pool's own
 * hand-offs are not exercised here yet.
 *
 * A new engine thread must add its units here, or stepped runs hang
 * (pe_step_until's bound) or stop being deterministic.
 *
 * Threads: one — every call on a stepped engine from the same thread.
 */
#include <stdio.h>
#include <stdlib.h>

#include "engine_internal.h"

int pe_open_stepped(const struct pe_options *opt, const struct pe_stepper *st,
		    struct pe_engine **out)
{
	if (!st)
		return -PARLEY_EINVAL;
	return engine_open(opt, st, out);
}

uint32_t pe_step(struct pe_engine *e)
{
	PARLEY_ASSERT(e->step.pick);
	uint32_t n = 2 * e->nshards + HW_COUNT;
	uint32_t u = e->step.pick(e->step.arg, n);
	PARLEY_ASSERT(u < n);
	if (u < e->nshards) {
		struct shard *sh = &e->shards[u];
		if (sh->done)
			return n;
		int rc = shard_round(sh, false);
		if (rc > 0) {
			shard_end(sh);
			sh->done = true;
		}
	} else if (u < 2 * e->nshards) {
		struct shard *sh = &e->shards[u - e->nshards];
		if (!sh->done)
			(void)wal_prep_step(sh->wal);
	} else {
		(void)hworker_step(e, (int)(u - 2 * e->nshards));
	}
	return n;
}

void pe_step_until(struct pe_engine *e, bool (*done)(void *arg), void *arg)
{
	for (uint32_t i = 0; !done(arg); i++) {
		if (i == PE_STEP_LIMIT) {
			fprintf(stderr, "pe_step_until: no progress after %u "
				"units: the engine hangs\n", i);
			PARLEY_ASSERT(!"stepped engine hangs");
		}
		(void)pe_step(e);
	}
}

static bool all_stopped(void *arg)
{
	struct pe_engine *e = arg;
	for (uint32_t i = 0; i < e->nshards; i++)
		if (!e->shards[i].done)
			return false;
	return true;
}

void engine_step_stop(struct pe_engine *e)
{
	pe_step_until(e, all_stopped, e);
}
