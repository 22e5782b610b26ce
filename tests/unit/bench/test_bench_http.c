/*
 * test_bench_http.c — unit tests for bench/bench_http.c, the status line of
 * the admin port's answers that parley-bench's compaction mode checks.
 *
 * What must hold: the code of a well-formed status line (with or without a
 * reason, CRLF or LF); an incomplete line asks for more; anything else
 * (other protocols, short or non-numeric codes, out-of-range codes, junk
 * after the code) is -EPROTO, never a code.
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
