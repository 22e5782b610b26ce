/*
 * test_bench_spread.c — unit tests for bench/bench_spread.c, the
 * min/median/max of parley-bench's --repeat summaries.
 *
 * What must hold: odd and even counts give the textbook median; order of
 * the input does not matter; NAN (= not measured) values are skipped and
 * never count as zero; all-NAN and empty inputs report n = 0 with NAN
 * results (the report prints "not measured").
 */
#include <criterion/criterion.h>
#include <math.h>

#include "../../../bench/bench_spread.h"

Test(bench_spread, odd_count)
{
	double v[] = {5, 1, 3};
	struct bench_spread s;
	cr_assert_eq(bench_spread(v, 3, &s), 3);
	cr_assert_float_eq(s.min, 1, 0);
	cr_assert_float_eq(s.median, 3, 0);
	cr_assert_float_eq(s.max, 5, 0);
}

Test(bench_spread, even_count_averages_the_middle_two)
{
	double v[] = {4, 1, 10, 2};
	struct bench_spread s;
	cr_assert_eq(bench_spread(v, 4, &s), 4);
	cr_assert_float_eq(s.min, 1, 0);
	cr_assert_float_eq(s.median, 3, 0);
	cr_assert_float_eq(s.max, 10, 0);
}

Test(bench_spread, nan_is_skipped_not_zero)
{
	double v[] = {NAN, 7, NAN, -2, 3};
	struct bench_spread s;
	cr_assert_eq(bench_spread(v, 5, &s), 3);
	cr_assert_float_eq(s.min, -2, 0, "a NAN must not become 0 or a minimum");
	cr_assert_float_eq(s.median, 3, 0);
	cr_assert_float_eq(s.max, 7, 0);
}

Test(bench_spread, nothing_measured)
{
	double v[] = {NAN, NAN};
	struct bench_spread s;
	cr_assert_eq(bench_spread(v, 2, &s), 0);
	cr_assert(isnan(s.min) && isnan(s.median) && isnan(s.max));
	cr_assert_eq(bench_spread(v, 0, &s), 0);
	cr_assert(isnan(s.median));
}

Test(bench_spread, single_value)
{
	double v[] = {42.5};
	struct bench_spread s;
	cr_assert_eq(bench_spread(v, 1, &s), 1);
	cr_assert_float_eq(s.min, 42.5, 0);
	cr_assert_float_eq(s.median, 42.5, 0);
	cr_assert_float_eq(s.max, 42.5, 0);
}
