/*
 * hist.h — a latency histogram any thread may add to (private to
 * server/): the engine's log2 buckets (parley_engine.h, struct
 * pe_stage_hist: bucket b counts samples in [2^(b-1), 2^b) ns), so the
 * server's stage histograms read and print like the engine's.
 *
 * Writers use relaxed atomic read-modify-writes (several loops and engine
 * threads add to the same histogram); a reader's snapshot may be a few
 * samples inconsistent across fields.
 */
#ifndef PARLEYD_HIST_H
#define PARLEYD_HIST_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "parley_engine.h"

struct srv_hist {
	_Atomic uint64_t count, sum_ns, max_ns;
	_Atomic uint64_t b[PE_HIST_BUCKETS];
};

static inline void srv_hist_add(struct srv_hist *h, uint64_t ns)
{
	unsigned b = ns ? 64u - (unsigned)__builtin_clzll(ns) : 0u;
	if (b >= PE_HIST_BUCKETS)
		b = PE_HIST_BUCKETS - 1;
	atomic_fetch_add_explicit(&h->b[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	uint64_t m = atomic_load_explicit(&h->max_ns, memory_order_relaxed);
	while (ns > m && !atomic_compare_exchange_weak_explicit(
				 &h->max_ns, &m, ns, memory_order_relaxed,
				 memory_order_relaxed))
		;
}

/* The time since t0 (parley_mono_ns), if t0 is set. */
static inline void srv_hist_since(struct srv_hist *h, uint64_t t0, uint64_t now)
{
	if (t0 && now >= t0)
		srv_hist_add(h, now - t0);
}

static inline void srv_hist_read(struct srv_hist *h, struct pe_stage_hist *o)
{
	memset(o, 0, sizeof *o);
	o->count = atomic_load_explicit(&h->count, memory_order_relaxed);
	o->sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
	o->max_ns = atomic_load_explicit(&h->max_ns, memory_order_relaxed);
	for (unsigned b = 0; b < PE_HIST_BUCKETS; b++)
		o->buckets[b] = atomic_load_explicit(&h->b[b], memory_order_relaxed);
}

#endif /* PARLEYD_HIST_H */
