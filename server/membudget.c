/*
 * membudget.c — the global memory budget: accounting and the over/under
 * decision with hysteresis. The mechanism (who charges what, who stops
 * reading) is described in membudget.h.
 *
 * Invariants
 *   1. conn_bytes is the sum of the charges minus the releases: every
 *      membudget_charge(+n) is matched by a membudget_charge(-n) when the
 *      buffer is freed, so an idle server returns to 0.
 *   2. `over` turns true only when used > limit or under engine pressure,
 *      and false only when used <= limit * RESUME_NUM / RESUME_DEN and the
 *      pressure is off.
 *
 * Threads: any (relaxed atomics).
 */
#include "membudget.h"
#include "parley_engine.h"

void membudget_init(struct membudget *b, uint64_t limit,
		    uint64_t memtable_total, uint64_t memtable_part)
{
	b->limit = limit;
	b->memtable_total = memtable_total;
	b->memtable_part = memtable_part;
	atomic_store(&b->engine_pressure, false);
	atomic_store(&b->conn_bytes, 0);
	atomic_store(&b->engine_bytes, 0);
	atomic_store(&b->over, false);
	atomic_store(&b->pauses, 0);
	atomic_store(&b->high_water, 0);
}

void membudget_charge(struct membudget *b, int64_t n)
{
	atomic_fetch_add_explicit(&b->conn_bytes, n, memory_order_relaxed);
}

void membudget_set_engine(struct membudget *b, const struct pe_memory *m)
{
	atomic_store_explicit(&b->engine_bytes, m->total_bytes,
			      memory_order_relaxed);
	double t = b->memtable_total ? (double)m->memtable_bytes /
					       (double)b->memtable_total
				     : 0;
	double p = b->memtable_part
			   ? (double)(m->memtable_max_partition_bytes +
				      m->proposed_bytes + m->queued_bytes) /
				     (double)b->memtable_part
			   : 0;
	bool on = atomic_load_explicit(&b->engine_pressure, memory_order_relaxed);
	if (!on && (t > MEMBUDGET_PRESSURE_ON || p > MEMBUDGET_PRESSURE_ON))
		atomic_store(&b->engine_pressure, true);
	else if (on && t <= MEMBUDGET_PRESSURE_OFF && p <= MEMBUDGET_PRESSURE_OFF)
		atomic_store(&b->engine_pressure, false);
}

uint64_t membudget_used(struct membudget *b)
{
	int64_t c = atomic_load_explicit(&b->conn_bytes, memory_order_relaxed);
	uint64_t e = atomic_load_explicit(&b->engine_bytes, memory_order_relaxed);
	return (c > 0 ? (uint64_t)c : 0) + e;
}

bool membudget_over(struct membudget *b)
{
	uint64_t used = membudget_used(b);
	uint64_t hw = atomic_load_explicit(&b->high_water, memory_order_relaxed);
	while (used > hw &&
	       !atomic_compare_exchange_weak_explicit(&b->high_water, &hw, used,
						      memory_order_relaxed,
						      memory_order_relaxed))
		;
	bool over = atomic_load_explicit(&b->over, memory_order_relaxed);
	bool pressure = atomic_load_explicit(&b->engine_pressure,
					     memory_order_relaxed);
	if (!over && (used > b->limit || pressure)) {
		if (!atomic_exchange(&b->over, true))
			atomic_fetch_add_explicit(&b->pauses, 1,
						  memory_order_relaxed);
		return true;
	}
	if (over && !pressure &&
	    used <= b->limit / MEMBUDGET_RESUME_DEN * MEMBUDGET_RESUME_NUM) {
		atomic_store(&b->over, false);
		return false;
	}
	return over;
}
