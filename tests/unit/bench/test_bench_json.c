/*
 * test_bench_json.c — unit tests for bench/bench_json.c, the writer and
 * reader of parley-bench's result files.
 *
 * What must hold: what the writer writes parses back to the same values
 * (strings with quotes, backslashes, control bytes and UTF-8; integers up
 * to 2^53; fractions; non-finite numbers as null; nested arrays and
 * objects; a histogram's percentiles equal bench_hist_quantile); misuse
 * (a key inside an array, unbalanced ends) is a sticky error; the reader
 * rejects malformed input with its line and column.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../../bench/bench_json.h"

static char *write_doc(void (*fill)(struct bench_json *), int *rc)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	cr_assert(f);
	struct bench_json j;
	bj_init(&j, f);
	fill(&j);
	*rc = bj_finish(&j);
	fclose(f);
	return buf;
}

static void fill_mixed(struct bench_json *j)
{
	bj_str(j, "s", "quote \" backslash \\ nl \n tab \t bell \a é ✓");
	bj_u64(j, "big", 9007199254740992ull);
	bj_num(j, "frac", 0.1);
	bj_num(j, "neg", -12.5e-7);
	bj_num(j, "nan", NAN);
	bj_num(j, "inf", INFINITY);
	bj_bool(j, "t", true);
	bj_bool(j, "f", false);
	bj_null(j, "nothing");
	bj_str(j, "nullstr", NULL);
	bj_arr(j, "arr");
	bj_num(j, NULL, 1);
	bj_obj(j, NULL);
	bj_str(j, "k", "v");
	bj_end(j);
	bj_arr(j, NULL);
	bj_end(j);
	bj_end(j);
	bj_obj(j, "empty");
	bj_end(j);
}

Test(bench_json, writes_what_parses_back)
{
	int rc;
	char *doc = write_doc(fill_mixed, &rc);
	cr_assert_eq(rc, 0);
	struct bjv *v;
	char err[200];
	cr_assert_eq(bjv_parse(doc, strlen(doc), &v, err, sizeof err), 0, "%s\n%s", err, doc);
	cr_assert_str_eq(bjv_str_at(v, "s"), "quote \" backslash \\ nl \n tab \t bell \a é ✓");
	cr_assert_eq(bjv_num_at(v, "big", 0), 9007199254740992.0);
	cr_assert_eq(bjv_num_at(v, "frac", 0), 0.1);
	cr_assert_eq(bjv_num_at(v, "neg", 0), -12.5e-7);
	cr_assert_eq(bjv_get(v, "nan")->type, BJV_NULL);
	cr_assert_eq(bjv_get(v, "inf")->type, BJV_NULL);
	cr_assert_eq(bjv_get(v, "t")->type, BJV_BOOL);
	cr_assert_eq(bjv_get(v, "t")->num, 1);
	cr_assert_eq(bjv_get(v, "f")->num, 0);
	cr_assert_eq(bjv_get(v, "nothing")->type, BJV_NULL);
	cr_assert_eq(bjv_get(v, "nullstr")->type, BJV_NULL);
	const struct bjv *a = bjv_get(v, "arr");
	cr_assert_eq(a->type, BJV_ARR);
	cr_assert_eq(a->n, 3);
	cr_assert_eq(a->kids[0].num, 1);
	cr_assert_str_eq(bjv_str_at(&a->kids[1], "k"), "v");
	cr_assert_eq(a->kids[2].type, BJV_ARR);
	cr_assert_eq(a->kids[2].n, 0);
	cr_assert_eq(bjv_get(v, "empty")->type, BJV_OBJ);
	cr_assert_eq(bjv_get(v, "empty")->n, 0);
	cr_assert_null(bjv_get(v, "absent"));
	cr_assert_eq(bjv_num_at(v, "absent.x", 7), 7);
	bjv_free(v);
	free(doc);
}

static struct bench_hist H;

static void fill_hist(struct bench_json *j)
{
	bj_obj(j, "r");
	bj_hist(j, "lat", &H);
	bj_end(j);
}

Test(bench_json, histogram_percentiles_round_trip)
{
	bench_hist_init(&H);
	for (uint64_t i = 1; i <= 10000; i++)
		bench_hist_record(&H, i * 1000); /* 1..10000 µs */
	int rc;
	char *doc = write_doc(fill_hist, &rc);
	cr_assert_eq(rc, 0);
	struct bjv *v;
	char err[200];
	cr_assert_eq(bjv_parse(doc, strlen(doc), &v, err, sizeof err), 0, "%s", err);
	cr_assert_eq(bjv_num_at(v, "r.lat.count", 0), 10000);
	cr_assert_eq(bjv_num_at(v, "r.lat.p50_us", 0), (double)bench_hist_quantile(&H, 0.5) / 1e3);
	cr_assert_eq(bjv_num_at(v, "r.lat.p99_us", 0), (double)bench_hist_quantile(&H, 0.99) / 1e3);
	cr_assert_eq(bjv_num_at(v, "r.lat.max_us", 0), 10000);
	cr_assert_eq(bjv_num_at(v, "r.lat.min_us", 0), 1);
	const struct bjv *cdf = bjv_path(v, "r.lat.cdf");
	cr_assert(cdf && cdf->type == BJV_ARR && cdf->n > 10);
	double prev_us = 0, prev_q = 0;
	for (size_t i = 0; i < cdf->n; i++) { /* monotonic, ends at max */
		cr_assert_eq(cdf->kids[i].n, 2);
		cr_assert_geq(cdf->kids[i].kids[0].num, prev_us);
		cr_assert_gt(cdf->kids[i].kids[1].num, prev_q);
		prev_us = cdf->kids[i].kids[0].num;
		prev_q = cdf->kids[i].kids[1].num;
	}
	cr_assert_eq(prev_q, 1.0);
	cr_assert_eq(prev_us, 10000);
	bjv_free(v);
	free(doc);
}

static void fill_key_in_array(struct bench_json *j)
{
	bj_arr(j, "a");
	bj_num(j, "oops", 1);
	bj_end(j);
}
static void fill_unclosed(struct bench_json *j) { bj_obj(j, "a"); }
static void fill_too_many_ends(struct bench_json *j) { bj_end(j); }
static void fill_no_key_in_object(struct bench_json *j) { bj_num(j, NULL, 1); }

Test(bench_json, misuse_is_a_sticky_error)
{
	void (*fills[])(struct bench_json *) = {fill_key_in_array, fill_unclosed,
						 fill_too_many_ends, fill_no_key_in_object};
	for (size_t i = 0; i < sizeof fills / sizeof fills[0]; i++) {
		int rc;
		free(write_doc(fills[i], &rc));
		cr_assert_lt(rc, 0, "case %zu", i);
	}
}

Test(bench_json, reader_rejects_malformed_input_with_position)
{
	static const struct { const char *doc, *want; } bad[] = {
		{"{\"a\": 1,}", "line 1 col 9"},
		{"{\n  \"a\": tru\n}", "line 2 col 8"},
		{"[1 2]", "line 1 col 4"},
		{"{\"a\" 1}", "expected ':'"},
		{"\"unterminated", "unterminated string"},
		{"{} x", "trailing characters"},
		{"", "unexpected end"},
		{"[1e999]", "bad number"},
		{"\"\\q\"", "bad escape"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct bjv *v = (struct bjv *)1;
		char err[200];
		cr_assert_lt(bjv_parse(bad[i].doc, strlen(bad[i].doc), &v, err, sizeof err), 0,
			     "accepted %s", bad[i].doc);
		cr_assert_null(v);
		cr_assert(strstr(err, bad[i].want), "%s: got \"%s\", want \"%s\"", bad[i].doc, err,
			  bad[i].want);
	}
	/* nesting bound */
	char deep[BJ_MAX_DEPTH * 2 + 8];
	memset(deep, '[', BJ_MAX_DEPTH + 1);
	memset(deep + BJ_MAX_DEPTH + 1, ']', BJ_MAX_DEPTH + 1);
	struct bjv *v;
	char err[200];
	cr_assert_lt(bjv_parse(deep, 2 * (BJ_MAX_DEPTH + 1), &v, err, sizeof err), 0);
	cr_assert(strstr(err, "nested too deeply"), "%s", err);
}

Test(bench_json, reader_decodes_unicode_escapes)
{
	const char *doc = "{\"k\": \"a\\u00e9\\u2713\\n\"}";
	struct bjv *v;
	char err[200];
	cr_assert_eq(bjv_parse(doc, strlen(doc), &v, err, sizeof err), 0, "%s", err);
	cr_assert_str_eq(bjv_str_at(v, "k"), "aé✓\n");
	bjv_free(v);
}
