/*
 * bench_hist.h — a small HDR-style latency histogram for parley-bench.
 *
 * Values are recorded in nanoseconds into log-bucketed bins: below 256 ns
 * every value has its own bin; above, each power of two is split into 128
 * linear sub-bins, so a bin's width is at most 1/128 of its lower bound and
 * a reported percentile (the bin's midpoint) is within 0.4% of a recorded
 * value (the brief asks for <= 1% at microsecond resolution). The whole
 * uint64 range fits in BH_BINS bins (~58 KiB per histogram).
 *
 * Ownership/threads: a histogram has one writer at a time and no locks.
 * parley-bench keeps one histogram per producer (callbacks for one stream
 * run serially on one engine shard) and merges them after the run, once
 * every writer has stopped.
 */
#ifndef PARLEY_BENCH_HIST_H
#define PARLEY_BENCH_HIST_H

#include <stdint.h>

#define BH_LINEAR_BITS 8u                 /* exact bins below 2^8 ns */
#define BH_SUB_BITS 7u                    /* 128 sub-bins per octave */
#define BH_BINS ((1u << BH_LINEAR_BITS) + (64u - BH_LINEAR_BITS) * (1u << BH_SUB_BITS))

struct bench_hist {
	uint64_t count;
	uint64_t min_ns;
	uint64_t max_ns;
	long double sum_ns;
	uint64_t bins[BH_BINS];
};

void bench_hist_init(struct bench_hist *h);
void bench_hist_record(struct bench_hist *h, uint64_t ns);
/* dst += src */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* Value (ns) at quantile q in [0,1]; 0 when empty. q = 1 gives max. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);
double bench_hist_mean(const struct bench_hist *h);

/* Bin index of a value and the [lo, hi] range of a bin (for the tests). */
unsigned bench_hist_bin(uint64_t ns);
void bench_hist_bin_range(unsigned bin, uint64_t *lo, uint64_t *hi);

#endif /* PARLEY_BENCH_HIST_H */
