/*
 * bench_hist.c — log-bucketed latency histogram (see bench_hist.h).
 *
 * Bin layout, for a value v (ns):
 *   v < 256                 bin = v                      (exact)
 *   v >= 256, m = msb(v)    shift = m - 7, top = v >> shift in [128, 255]
 *                           bin = 256 + (m - 8) * 128 + (top - 128)
 * so the bins of octave m have width 2^(m-7) <= v / 128.
 */
#include "bench_hist.h"

#include <string.h>

void bench_hist_init(struct bench_hist *h)
{
	memset(h, 0, sizeof *h);
	h->min_ns = UINT64_MAX;
}

unsigned bench_hist_bin(uint64_t ns)
{
	if (ns < (1u << BH_LINEAR_BITS))
		return (unsigned)ns;
	unsigned m = 63u - (unsigned)__builtin_clzll(ns);
	unsigned shift = m - BH_SUB_BITS;
	unsigned top = (unsigned)(ns >> shift); /* 128..255 */
	return (1u << BH_LINEAR_BITS) + (m - BH_LINEAR_BITS) * (1u << BH_SUB_BITS) +
	       (top - (1u << BH_SUB_BITS));
}

void bench_hist_bin_range(unsigned bin, uint64_t *lo, uint64_t *hi)
{
	if (bin < (1u << BH_LINEAR_BITS)) {
		*lo = *hi = bin;
		return;
	}
	unsigned rel = bin - (1u << BH_LINEAR_BITS);
	unsigned m = rel / (1u << BH_SUB_BITS) + BH_LINEAR_BITS;
	unsigned top = rel % (1u << BH_SUB_BITS) + (1u << BH_SUB_BITS);
	unsigned shift = m - BH_SUB_BITS;
	*lo = (uint64_t)top << shift;
	*hi = *lo + ((1ull << shift) - 1);
}

void bench_hist_record(struct bench_hist *h, uint64_t ns)
{
	h->bins[bench_hist_bin(ns)]++;
	h->count++;
	h->sum_ns += (long double)ns;
	if (ns < h->min_ns)
		h->min_ns = ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
	if (!src->count)
		return;
	for (unsigned i = 0; i < BH_BINS; i++)
		dst->bins[i] += src->bins[i];
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
	if (src->min_ns < dst->min_ns)
		dst->min_ns = src->min_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
	if (!h->count)
		return 0;
	if (q >= 1.0)
		return h->max_ns;
	if (q <= 0.0)
		return h->min_ns;
	/* rank of the q-quantile, 1-based: the smallest value with at least
	 * ceil(q * count) values at or below it */
	long double r = (long double)q * (long double)h->count;
	uint64_t rank = (uint64_t)r;
	if ((long double)rank < r)
		rank++;
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < BH_BINS; i++) {
		seen += h->bins[i];
		if (seen >= rank) {
			uint64_t lo, hi;
			bench_hist_bin_range(i, &lo, &hi);
			uint64_t mid = lo + (hi - lo) / 2;
			/* never report outside what was recorded */
			if (mid > h->max_ns)
				mid = h->max_ns;
			if (mid < h->min_ns)
				mid = h->min_ns;
			return mid;
		}
	}
	return h->max_ns;
}

double bench_hist_mean(const struct bench_hist *h)
{
	return h->count ? (double)(h->sum_ns / (long double)h->count) : 0.0;
}
