/*
 * scn.h — helpers for the named simulator scenarios (test_scn_*.c): calm
 * defaults (no random faults; the scenario injects its own), a check macro
 * that fails the run with its seed, and a runner that prints a summary.
 */
#ifndef SCN_H
#define SCN_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "parley_common.h"
#include "sim.h"

#define SCN_CHECK(s, cond, ...)                                                \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "scenario check failed: %s\n", #cond);  \
			sim_fail((s), __VA_ARGS__);                            \
		}                                                              \
	} while (0)

static inline void scn_opts(struct sim_opts *o, uint64_t seed)
{
	sim_default_opts(o, seed);
	struct sim_faults calm = {0};
	calm.delay_max = 15;
	calm.skew_pct = 20;
	o->f = calm;
	o->read_ppm = 0;
	if (getenv("PARLEY_SIM_VERBOSE"))
		o->quiet = false;
}

static inline void scn_done(struct sim *s, const char *name)
{
	printf("%s: steps=%" PRIu64 " acked=%" PRIu64
	       " msgs=%" PRIu64 " installs=%" PRIu64 " repairs=%" PRIu64
	       " reads_ok=%" PRIu64 " OK\n",
	       name, sim_steps(s), sim_acked(s), sim_msgs(s),
	       sim_snap_installs(s), sim_repairs(s), sim_reads_ok(s));
}

/* Runs body(seed) for `n` seeds from `base` (PARLEY_SIM_SEED: one seed). */
static inline int scn_main(const char *name, uint64_t base, uint64_t n,
			   void (*body)(uint64_t seed))
{
	const char *e = getenv("PARLEY_SIM_SEED");
	if (e && *e) {
		base = strtoull(e, NULL, 0);
		n = 1;
	}
	if (getenv("PARLEY_LONG"))
		n *= 10;
	for (uint64_t i = 0; i < n; i++) {
		fprintf(stderr, "%s: seed %" PRIu64 "\n", name, base + i);
		body(base + i);
	}
	printf("%s: %" PRIu64 " seeds from %" PRIu64 " OK\n", name, n, base);
	return 0;
}

#endif
