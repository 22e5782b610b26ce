/*
 * test_bench_http.c — unit tests for bench/bench_http.c, the status line of
 * the admin port's answers that parley-bench's compaction mode checks.
 *
 * What must hold: the code of a well-formed status line (with or without a
 * reason, CRLF or LF); an incomplete line asks for more; anything else
 * (other protocols, short or non-numeric codes, out-of-range codes, junk
 * after the code) is -EPROTO, never a code. A /metrics sample is found by
 * its exact name and labels at the start of a line, never by a longer
 * name sharing its prefix or inside a comment; a value that is not a
 * number is -EPROTO. Stage histograms (the delivery mode's per-stage
 * breakdown) are read by family and stage, other metrics ignored; the
 * delta of two pages is per stage; a quantile is the bound of the first
 * bucket that holds it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../../bench/bench_http.h"

static int st(const char *s)
{
	return bench_http_status(s, strlen(s));
}

Test(bench_http, good_lines)
{
	cr_assert_eq(st("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncompacted\n"), 200);
	cr_assert_eq(st("HTTP/1.0 403 Forbidden\r\n"), 403);
	cr_assert_eq(st("HTTP/1.1 500 Internal Server Error\n"), 500);
	cr_assert_eq(st("HTTP/1.1 204\r\n"), 204);
	cr_assert_eq(st("HTTP/1.1 503\n"), 503);
}

Test(bench_http, incomplete_asks_for_more)
{
	cr_assert_eq(st(""), -EAGAIN);
	cr_assert_eq(st("HTT"), -EAGAIN);
	cr_assert_eq(st("HTTP/1.1 200 OK"), -EAGAIN);
	cr_assert_eq(st("HTTP/1.1 20"), -EAGAIN);
}

Test(bench_http, malformed_is_eproto)
{
	cr_assert_eq(st("SSH-2.0-OpenSSH\r\n"), -EPROTO);
	cr_assert_eq(st("XTTP"), -EPROTO);
	cr_assert_eq(st("HTTP/2 200 OK\r\n"), -EPROTO);
	cr_assert_eq(st("HTTP/1.1 2x0 OK\r\n"), -EPROTO);
	cr_assert_eq(st("HTTP/1.1 20\r\n"), -EPROTO);
	cr_assert_eq(st("HTTP/1.1 2000 OK\r\n"), -EPROTO);
	cr_assert_eq(st("HTTP/1.1 099 Low\r\n"), -EPROTO);
	cr_assert_eq(st("HTTP/1.1 600 High\r\n"), -EPROTO);
	cr_assert_eq(st("HTTP/1.1  200 OK\r\n"), -EPROTO);
	cr_assert_eq(st("HTTP/1.2 200 OK\r\n"), -EPROTO);
}

static const char page[] =
	"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
	"# HELP parley_raft_partitions Partition groups on this node.\n"
	"# TYPE parley_raft_partitions gauge\n"
	"parley_raft_role{partition=\"0\"} 3\n"
	"parley_raft_role{partition=\"10\"} 0\n"
	"parley_raft_partitions_led 63\n"
	"parley_raft_partitions 64\n"
	"parley_raft_apply_lag_entries 0\r\n"
	"parley_bad_value abc\n"
	"parley_last 1.5e3";

Test(bench_http, metric_found_by_exact_name)
{
	double v = -1;
	cr_assert_eq(bench_metric_value(page, "parley_raft_partitions", &v), 0);
	cr_assert_eq(v, 64);
	cr_assert_eq(bench_metric_value(page, "parley_raft_partitions_led", &v), 0);
	cr_assert_eq(v, 63);
	cr_assert_eq(bench_metric_value(page, "parley_raft_role{partition=\"0\"}", &v), 0);
	cr_assert_eq(v, 3);
	cr_assert_eq(bench_metric_value(page, "parley_raft_role{partition=\"10\"}", &v), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(bench_metric_value(page, "parley_raft_apply_lag_entries", &v), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(bench_metric_value(page, "parley_last", &v), 0);
	cr_assert_eq(v, 1500);
}

Test(bench_http, metric_missing_or_bad)
{
	double v = 7;
	cr_assert_eq(bench_metric_value(page, "parley_raft", &v), -ENOENT);
	cr_assert_eq(bench_metric_value(page, "parley_raft_role{partition=\"1\"}", &v), -ENOENT);
	cr_assert_eq(bench_metric_value(page, "HELP", &v), -ENOENT);
	cr_assert_eq(bench_metric_value(page, "parley_bad_value", &v), -EPROTO);
	cr_assert_eq(bench_metric_value(page, "", &v), -EINVAL);
	cr_assert_eq(bench_metric_value("", "parley_last", &v), -ENOENT);
	cr_assert_eq(v, 7);
}

static const char stages0[] =
	"# HELP parley_engine_stage_seconds engine stages\n"
	"parley_engine_stage_seconds_bucket{stage=\"sync\",le=\"0.000131072\"} 2\n"
	"parley_engine_stage_seconds_bucket{stage=\"sync\",le=\"0.000262144\"} 4\n"
	"parley_engine_stage_seconds_bucket{stage=\"sync\",le=\"+Inf\"} 4\n"
	"parley_engine_stage_seconds_sum{stage=\"sync\"} 0.0006\n"
	"parley_engine_stage_seconds_count{stage=\"sync\"} 4\n"
	"parley_events_delivered_total 9\n"
	"parley_delivery_stage_seconds_bucket{stage=\"inbox\",le=\"0.000262144\"} 0\n"
	"parley_delivery_stage_seconds_bucket{stage=\"inbox\",le=\"0.000524288\"} 0\n"
	"parley_delivery_stage_seconds_bucket{stage=\"inbox\",le=\"+Inf\"} 0\n"
	"parley_delivery_stage_seconds_sum{stage=\"inbox\"} 0\n"
	"parley_delivery_stage_seconds_count{stage=\"inbox\"} 0\n";

static const char stages1[] =
	"parley_engine_stage_seconds_bucket{stage=\"sync\",le=\"0.000131072\"} 2\n"
	"parley_engine_stage_seconds_bucket{stage=\"sync\",le=\"0.000262144\"} 12\n"
	"parley_engine_stage_seconds_bucket{stage=\"sync\",le=\"+Inf\"} 14\n"
	"parley_engine_stage_seconds_sum{stage=\"sync\"} 0.0106\n"
	"parley_engine_stage_seconds_count{stage=\"sync\"} 14\n"
	"parley_delivery_stage_seconds_bucket{stage=\"inbox\",le=\"0.000262144\"} 1\n"
	"parley_delivery_stage_seconds_bucket{stage=\"inbox\",le=\"0.000524288\"} 99\n"
	"parley_delivery_stage_seconds_bucket{stage=\"inbox\",le=\"+Inf\"} 100\n"
	"parley_delivery_stage_seconds_sum{stage=\"inbox\"} 0.04\n"
	"parley_delivery_stage_seconds_count{stage=\"inbox\"} 100\n";

Test(bench_http, stages_parsed_by_family_and_stage)
{
	static struct bench_stages a;
	cr_assert_eq(bench_stages_parse(stages0, &a), 0);
	cr_assert_eq(a.n, 2);
	cr_assert_str_eq(a.s[0].family, "engine");
	cr_assert_str_eq(a.s[0].name, "sync");
	cr_assert_eq(a.s[0].nb, 3);
	cr_assert_eq(a.s[0].cum[1], 4);
	cr_assert(isinf(a.s[0].le[2]));
	cr_assert_eq(a.s[0].count, 4);
	cr_assert_str_eq(a.s[1].family, "delivery");
	cr_assert_str_eq(a.s[1].name, "inbox");
	cr_assert(isnan(bench_stage_quantile(&a.s[1], 0.5)), "no samples: NAN");
}

Test(bench_http, stage_delta_and_quantiles)
{
	static struct bench_stages a, b, d;
	cr_assert_eq(bench_stages_parse(stages0, &a), 0);
	cr_assert_eq(bench_stages_parse(stages1, &b), 0);
	bench_stages_delta(&a, &b, &d);
	cr_assert_eq(d.n, 2);
	const struct bench_stage *sync = &d.s[0], *inbox = &d.s[1];
	cr_assert_eq(sync->count, 10);
	cr_assert_float_eq(sync->sum, 0.01, 1e-12);
	cr_assert_eq(sync->cum[0], 0);
	cr_assert_eq(sync->cum[1], 8);
	/* 8 of 10 in (131, 262] µs, 2 above: p50 <= 262 µs, p99 in +Inf */
	cr_assert_float_eq(bench_stage_quantile(sync, 0.5), 0.000262144, 1e-12);
	cr_assert_float_eq(bench_stage_quantile(sync, 0.8), 0.000262144, 1e-12);
	cr_assert(isinf(bench_stage_quantile(sync, 0.99)));
	cr_assert_float_eq(bench_stage_quantile(inbox, 0.01), 0.000262144, 1e-12);
	cr_assert_float_eq(bench_stage_quantile(inbox, 0.99), 0.000524288, 1e-12);
	cr_assert(isinf(bench_stage_quantile(inbox, 0.999)));
}

Test(bench_http, stage_lines_malformed_or_too_many)
{
	static struct bench_stages a;
	cr_assert_eq(bench_stages_parse("parley_x_stage_seconds_sum{stage=\"a\"} zz\n", &a),
		     -EPROTO);
	cr_assert_eq(bench_stages_parse("parley_x_stage_seconds_sum 1\n", &a), -EPROTO);
	cr_assert_eq(bench_stages_parse("parley_x_stage_seconds_count{le=\"1\"} 1\n", &a),
		     -EPROTO, "no stage label");
	static char big[8192];
	size_t off = 0;
	for (unsigned i = 0; i < BENCH_STAGE_MAX + 3; i++)
		off += (size_t)snprintf(big + off, sizeof big - off,
					"parley_x_stage_seconds_count{stage=\"s%u\"} %u\n", i, i);
	cr_assert_eq(bench_stages_parse(big, &a), -E2BIG);
	cr_assert_eq(a.n, BENCH_STAGE_MAX, "the stages that fit are kept");
	cr_assert_eq(a.s[5].count, 5);
	cr_assert_eq(bench_stages_parse("", &a), 0);
	cr_assert_eq(a.n, 0);
}
