/*
 * sim_seeds.h — the random-seed driver shared by test_sim_random (bounded,
 * make test) and test_sim_long (make test-long): runs seeds base..base+n-1
 * with a mix of cluster sizes and fault profiles derived from the seed, and
 * prints totals (seeds, simulated steps, units, acked writes).
 * Environment: PARLEY_SIM_SEED (one seed), PARLEY_SIM_BASE / PARLEY_SIM_SEEDS
 * (a range), PARLEY_SIM_UNITS (run length), PARLEY_SIM_VERBOSE, and
 * PARLEY_SIM_TRACE=<time> (print every delivered message from then on).
 */
#ifndef SIM_SEEDS_H
#define SIM_SEEDS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "parley_common.h"
#include "sim.h"

static inline void sim_seed_opts(struct sim_opts *o, uint64_t seed)
{
	sim_default_opts(o, seed);
	struct parley_rng r = {seed ^ 0xA5A5A5A5DEADBEEFull};
	o->nodes = 3 + 2 * (uint32_t)parley_rng_below(&r, 2); /* 3 or 5 */
	o->max_inflight = 1 + (uint32_t)parley_rng_below(&r, 8);
	o->max_batch = 1 + (uint32_t)parley_rng_below(&r, 64);
	o->snapshot_every = 50 + (uint32_t)parley_rng_below(&r, 300);
	o->chunk_bytes = 512 + (uint32_t)parley_rng_below(&r, 4096);
	switch (parley_rng_below(&r, 6)) {
	case 4: /* election chaos: leaders crash and come back all the time,
		 * partial replication everywhere (Figure 8 territory) */
		o->nodes = 5;
		o->f.crash_ppm = 6000;
		o->f.restart_ppm = 20000;
		o->f.partition_ppm = 3000;
		o->f.heal_ppm = 6000;
		o->f.conf_ppm = 0;
		o->f.loss_pct = 10;
		o->client_ppm = 500000;
		break;
	case 5: /* quiescing groups with node liveness, clock jumps */
		o->quiesce_ticks = 15;
		o->f.jump_ppm *= 5;
		break;
	case 0: /* calm network, many crashes */
		o->f.loss_pct = 0;
		o->f.crash_ppm *= 3;
		break;
	case 1: /* lossy, reordering network */
		o->f.loss_pct = 15;
		o->f.dup_pct = 10;
		o->f.delay_max = 60;
		break;
	case 2: /* partitions and membership churn */
		o->f.partition_ppm *= 4;
		o->f.conf_ppm *= 4;
		o->f.transfer_ppm *= 3;
		break;
	default: /* disks: flips, EIO, torn */
		o->f.flip_ppm *= 4;
		o->f.eio_ppm *= 3;
		break;
	}
	if (getenv("PARLEY_SIM_VERBOSE"))
		o->quiet = false;
}

/* Runs one seed for `units`; returns simulated steps. */
struct sim_totals {
	uint64_t steps, acked, installs, repairs, reads, torn;
	uint64_t early_sent, early_lost; /* raft.h 3a exercised */
	uint64_t noack;                  /* RAFT_MSGF_NOACK exercised */
};

static inline void sim_one_seed(uint64_t seed, uint64_t units,
				struct sim_totals *t)
{
	struct sim_opts o;
	sim_seed_opts(&o, seed);
	struct sim *s = sim_new(&o);
	sim_run(s, units);
	sim_finish(s, 1000);
	t->steps += sim_steps(s);
	t->acked += sim_acked(s);
	t->installs += sim_snap_installs(s);
	t->repairs += sim_repairs(s);
	t->reads += sim_reads_ok(s);
	t->torn += sim_torn_dropped(s);
	t->early_sent += sim_early_sent(s);
	t->early_lost += sim_early_lost(s);
	t->noack += sim_noack_delivered(s);
	sim_free(s);
}

static inline int sim_seeds_main(const char *name, uint64_t base, uint64_t n,
				 uint64_t units)
{
	const char *e = getenv("PARLEY_SIM_SEED");
	if (e && *e) {
		base = strtoull(e, NULL, 0);
		n = 1;
	}
	const char *u = getenv("PARLEY_SIM_UNITS");
	if (u && *u)
		units = strtoull(u, NULL, 0);
	const char *b = getenv("PARLEY_SIM_BASE");
	if (b && *b)
		base = strtoull(b, NULL, 0);
	const char *ns = getenv("PARLEY_SIM_SEEDS");
	if (ns && *ns)
		n = strtoull(ns, NULL, 0);
	struct sim_totals t = {0};
	for (uint64_t i = 0; i < n; i++) {
		uint64_t seed = base + i;
		fprintf(stderr, "%s: seed %" PRIu64 "\n", name, seed);
		sim_one_seed(seed, units, &t);
	}
	printf("%s: seeds=%" PRIu64 " (%" PRIu64 "..%" PRIu64 ") units/seed=%" PRIu64
	       " steps=%" PRIu64 " acked=%" PRIu64 " snapshot_installs=%" PRIu64
	       " repairs=%" PRIu64 " reads=%" PRIu64 " torn_dropped=%" PRIu64
	       " early_sent=%" PRIu64 " crashed_after_early_send=%" PRIu64
	       " noack_appends=%" PRIu64 " OK\n",
	       name, n, base, base + n - 1, units, t.steps, t.acked, t.installs,
	       t.repairs, t.reads, t.torn, t.early_sent, t.early_lost, t.noack);
	/* a range of seeds that never sent an unanswered commit-only APPEND
	 * would not be testing what the cluster runs */
	if (n >= 50 && t.noack == 0) {
		printf("%s: no seed delivered a NOACK APPEND: FAIL\n", name);
		return 1;
	}
	return 0;
}

#endif
