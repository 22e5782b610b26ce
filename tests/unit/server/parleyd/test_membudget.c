/*
 * test_membudget.c — server/membudget.c: accounting, the over/under
 * decision with its hysteresis, and the engine-pressure rule.
 */
#include <criterion/criterion.h>

#include "membudget.h"
#include "parley_engine.h"

#define MiB (1ull << 20)

static struct pe_memory eng(uint64_t memtable, uint64_t maxp, uint64_t queued,
			    uint64_t idem)
{
	struct pe_memory m = {.memtable_bytes = memtable,
			      .memtable_max_partition_bytes = maxp,
			      .queued_bytes = queued,
			      .idem_bytes = idem};
	m.total_bytes = memtable + queued + idem;
	return m;
}

Test(membudget, charges_add_up_and_return_to_zero)
{
	struct membudget b;
	membudget_init(&b, 64 * MiB, 32 * MiB, 32 * MiB);
	membudget_charge(&b, 4096);
	membudget_charge(&b, 16384);
	cr_assert_eq(membudget_used(&b), 20480);
	membudget_charge(&b, -4096);
	membudget_charge(&b, -16384);
	cr_assert_eq(membudget_used(&b), 0);
	struct pe_memory m = eng(1 * MiB, 1 * MiB, 0, 2 * MiB);
	membudget_set_engine(&b, &m);
	cr_assert_eq(membudget_used(&b), 3 * MiB);
}

Test(membudget, over_past_the_limit_and_back_under_seven_eighths)
{
	struct membudget b;
	membudget_init(&b, 64 * MiB, 32 * MiB, 32 * MiB);
	membudget_charge(&b, (int64_t)(64 * MiB));
	cr_assert_not(membudget_over(&b), "at the limit is not over");
	membudget_charge(&b, 1);
	cr_assert(membudget_over(&b));
	cr_assert_eq(atomic_load(&b.pauses), 1);
	/* hysteresis: still over just under the limit */
	membudget_charge(&b, -(int64_t)(4 * MiB));
	cr_assert(membudget_over(&b));
	membudget_charge(&b, -(int64_t)(4 * MiB)); /* now 56 MiB + 1 */
	cr_assert(membudget_over(&b));
	membudget_charge(&b, -1); /* exactly 7/8 */
	cr_assert_not(membudget_over(&b));
	cr_assert_eq(atomic_load(&b.pauses), 1);
	cr_assert_geq(atomic_load(&b.high_water), 64 * MiB + 1);
}

Test(membudget, engine_pressure_pauses_before_the_memtable_bound)
{
	struct membudget b;
	membudget_init(&b, 1024 * MiB, 512 * MiB, 64 * MiB);
	/* one partition at 5/8 of its bound: not yet */
	struct pe_memory m = eng(40 * MiB, 40 * MiB, 0, 0);
	membudget_set_engine(&b, &m);
	cr_assert_not(membudget_over(&b));
	/* queued requests count towards the fullest partition */
	m = eng(40 * MiB, 40 * MiB, 1 * MiB, 0);
	membudget_set_engine(&b, &m);
	cr_assert(membudget_over(&b), "far under the budget, but the engine "
		  "would fail appends soon");
	/* off only at 1/2 of the partition bound */
	m = eng(33 * MiB, 33 * MiB, 0, 0);
	membudget_set_engine(&b, &m);
	cr_assert(membudget_over(&b));
	m = eng(32 * MiB, 32 * MiB, 0, 0);
	membudget_set_engine(&b, &m);
	cr_assert_not(membudget_over(&b));
	/* all memtables together past 5/8 of their total */
	m = eng(321 * MiB, 10 * MiB, 0, 0);
	membudget_set_engine(&b, &m);
	cr_assert(membudget_over(&b));
	m = eng(256 * MiB, 10 * MiB, 0, 0);
	membudget_set_engine(&b, &m);
	cr_assert_not(membudget_over(&b));
}

Test(membudget, pressure_and_usage_must_both_recover)
{
	struct membudget b;
	membudget_init(&b, 64 * MiB, 32 * MiB, 32 * MiB);
	membudget_charge(&b, (int64_t)(70 * MiB));
	struct pe_memory m = eng(30 * MiB, 30 * MiB, 0, 0);
	membudget_set_engine(&b, &m);
	cr_assert(membudget_over(&b));
	membudget_charge(&b, -(int64_t)(70 * MiB)); /* usage fine, pressure on */
	cr_assert(membudget_over(&b));
	m = eng(1 * MiB, 1 * MiB, 0, 0);
	membudget_set_engine(&b, &m);
	cr_assert_not(membudget_over(&b));
}
