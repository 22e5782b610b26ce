/*
 * bench_spread.h — min / median / max of a few repeated measurements, for
 * parley-bench's `--repeat` summaries. Values that were not measured are
 * NAN and are left out (a run that was not made must never read as 0).
 * Pure; unit-tested in tests/unit/bench/test_bench_spread.c.
 */
#ifndef PARLEY_BENCH_SPREAD_H
#define PARLEY_BENCH_SPREAD_H

struct bench_spread {
	unsigned n;   /* measured values used (NANs skipped) */
	double min, median, max;
};

/* Sorts the measured values of v[0..n) to the front of v (reordering v) and
 * fills *out. The median of an even count is the mean of the middle two.
 * Returns out->n; when it is 0, min/median/max are NAN. */
unsigned bench_spread(double *v, unsigned n, struct bench_spread *out);

#endif /* PARLEY_BENCH_SPREAD_H */
