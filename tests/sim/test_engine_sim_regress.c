/*
 * test_engine_sim_regress.c — the engine simulator's regression seeds
 * (make test): seeds of the long tier (make test-long) and of the other
 * tiers that found a bug, each run only just past the step where it
 * failed, so that make test keeps them at a small cost. The long tier
 * itself (test_engine_sim_long, seeds 100000..100399) covers every long
 * seed named in engine_sim.c's list of bugs in full.
 * PARLEY_ESIM_SEED=<n> runs one of them.
 */
#include "engine_sim.h"

static const struct esim_case cases[] = {
	/* pe_append accepted a command over the Raft entry limit, which then
	 * failed in its callback with -PARLEY_ETOOBIG (step 984) */
	{100169, 990, 0, "append over the size limit refused at once"},
	/* a flush that failed while a compaction's manifest store was in
	 * flight finished under it: assertion in part_flush_finish (step
	 * 516, right after "flush p2 started") */
	{100394, 530, 0, "a failed flush waits for a compaction's store"},
	/* a bounded idempotency table rebuilt differently at open */
	{22, 250, 0, "bounded idempotency table across a reopen"},
};

int main(void)
{
	return esim_cases("engine_sim_regress", cases,
			  sizeof cases / sizeof *cases);
}
