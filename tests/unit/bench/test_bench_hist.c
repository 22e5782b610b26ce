/*
 * test_bench_hist.c — unit tests for bench/bench_hist.c, the log-bucketed
 * latency histogram parley-bench reports percentiles from.
 *
 * What must hold: every value lands in a bin whose range contains it; a
 * reported quantile is within 1% of the exact one (the brief's bound; the
 * layout gives <= 0.4%); merge equals recording everything in one; empty
 * and extreme inputs behave. Random inputs come from a seeded PRNG (seed
 * printed).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../../bench/bench_hist.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

Test(bench_hist, bins_contain_their_values)
{
	for (uint64_t v = 0; v < (1ull << 40); v = v < 4096 ? v + 1 : v + v / 61) {
		unsigned b = bench_hist_bin(v);
		cr_assert_lt(b, BH_BINS);
		uint64_t lo, hi;
		bench_hist_bin_range(b, &lo, &hi);
		cr_assert(v >= lo && v <= hi, "v=%llu bin=%u [%llu,%llu]",
			  (unsigned long long)v, b, (unsigned long long)lo,
			  (unsigned long long)hi);
		/* bin width relative to its lower bound: <= 1/128 */
		if (lo >= 256)
			cr_assert_leq((double)(hi - lo + 1) / (double)lo, 1.0 / 128 + 1e-12);
	}
	cr_assert_eq(bench_hist_bin(UINT64_MAX), BH_BINS - 1);
}

Test(bench_hist, quantiles_within_one_percent)
{
	uint64_t seed = 0x5eed1234;
	printf("test_bench_hist seed=%llu\n", (unsigned long long)seed);
	enum { N = 200000 };
	uint64_t *v = malloc(N * sizeof *v);
	struct bench_hist *h = malloc(sizeof *h);
	cr_assert(v && h);
	bench_hist_init(h);
	for (int i = 0; i < N; i++) {
		/* log-uniform from 1 µs to ~100 ms, like ack latencies */
		double e = (double)(rng_next(&seed) % 1000000) / 1000000.0 * 11.5;
		v[i] = (uint64_t)(1000.0 * __builtin_exp(e));
		bench_hist_record(h, v[i]);
	}
	qsort(v, N, sizeof *v, cmp_u64);
	const double qs[] = {0.5, 0.9, 0.99, 0.999, 0.9999};
	for (unsigned i = 0; i < sizeof qs / sizeof qs[0]; i++) {
		size_t rank = (size_t)__builtin_ceil(qs[i] * N);
		uint64_t exact = v[rank - 1];
		uint64_t got = bench_hist_quantile(h, qs[i]);
		double err = (double)(got > exact ? got - exact : exact - got) / (double)exact;
		cr_assert_leq(err, 0.01, "q=%g exact=%llu got=%llu", qs[i],
			      (unsigned long long)exact, (unsigned long long)got);
	}
	cr_assert_eq(bench_hist_quantile(h, 1.0), v[N - 1]);
	cr_assert_eq(h->count, (uint64_t)N);
	free(v);
	free(h);
}

Test(bench_hist, merge_equals_single)
{
	struct bench_hist *a = malloc(sizeof *a), *b = malloc(sizeof *b),
			  *all = malloc(sizeof *all);
	cr_assert(a && b && all);
	bench_hist_init(a);
	bench_hist_init(b);
	bench_hist_init(all);
	uint64_t seed = 99;
	for (int i = 0; i < 10000; i++) {
		uint64_t x = rng_next(&seed) % 5000000;
		bench_hist_record(i % 3 ? a : b, x);
		bench_hist_record(all, x);
	}
	bench_hist_merge(a, b);
	cr_assert_eq(a->count, all->count);
	cr_assert_eq(a->min_ns, all->min_ns);
	cr_assert_eq(a->max_ns, all->max_ns);
	for (double q = 0.01; q < 1.0; q += 0.01)
		cr_assert_eq(bench_hist_quantile(a, q), bench_hist_quantile(all, q));
	free(a);
	free(b);
	free(all);
}

Test(bench_hist, empty_and_tiny)
{
	struct bench_hist *h = malloc(sizeof *h);
	cr_assert(h);
	bench_hist_init(h);
	cr_assert_eq(bench_hist_quantile(h, 0.99), 0);
	cr_assert_eq(bench_hist_mean(h), 0.0);
	bench_hist_record(h, 0);
	bench_hist_record(h, 7);
	cr_assert_eq(bench_hist_quantile(h, 0.5), 0);
	cr_assert_eq(bench_hist_quantile(h, 0.99), 7);
	cr_assert_eq(bench_hist_quantile(h, 1.0), 7);
	free(h);
}
