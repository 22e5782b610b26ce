/*
 * engine_sim.h — the engine simulator: the real engine (pe_open, pe_append,
 * pe_read, pe_delete, flush, compaction, recovery) on the in-memory I/O
 * backend with an injected clock, driven by a seeded random workload with
 * crashes and disk faults, and checked against a model after every step
 * that can change what is durable (see engine_sim.c for the invariants).
 *
 * One seed = one run. A failed invariant prints the seed, the step and what
 * differed, and exits 1; PARLEY_ESIM_SEED=<n> replays that seed.
 */
#ifndef ENGINE_SIM_H
#define ENGINE_SIM_H

#include <stdbool.h>
#include <stdint.h>

struct esim_stats {
	uint64_t steps, acked, dups, reads, deletes, flushes, compactions;
	uint64_t crashes, torn, reopens, recovered_unacked, lost_unacked;
	uint64_t faults, fault_errors, flips, flips_detected;
	uint64_t flip_damage; /* a detected flip whose loss outlived its repair */
	uint64_t subs, sub_entries;
	uint64_t idem_bounded; /* seeds run with a small idempotency table */
	uint64_t refused; /* appends over the size limit, refused at once */
};

/* Runs one seed for `steps` workload steps; adds to *st. Returns 0, or
 * exits the process with status 1 after printing the failure. */
int esim_run(uint64_t seed, uint32_t steps, int verbose,
	     struct esim_stats *st, uint64_t *trace);

/* Driver shared by the bounded (make test) and long (make test-long)
 * tiers: runs seeds base..base+n-1 (PARLEY_ESIM_SEED=<n> one seed,
 * PARLEY_ESIM_BASE / PARLEY_ESIM_SEEDS a range, PARLEY_ESIM_STEPS the run
 * length, PARLEY_ESIM_VERBOSE=1 a line per step, 2 also one per append) and prints totals. */
int esim_main(const char *name, uint64_t base, uint64_t n, uint32_t steps,
	      bool replay);

/* A seed that once found a bug, run for `steps` steps (just past the
 * step where it failed: a run's first k steps do not depend on its
 * length), with extra settings (flips per 1000 steps, as
 * PARLEY_ESIM_FLIP_PM). */
struct esim_case {
	uint64_t seed;
	uint32_t steps;
	uint32_t flip_pm;
	const char *why; /* the bug, for the log */
};

/* Runs every case (PARLEY_ESIM_SEED=<n> only that one of them); prints
 * totals. Exits 1 on the first failure, like esim_main. */
int esim_cases(const char *name, const struct esim_case *cases, uint32_t n);

#endif
