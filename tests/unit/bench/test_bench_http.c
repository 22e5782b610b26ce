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
 * number is -EPROTO.
 */
#include <criterion/criterion.h>
#include <errno.h>
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
