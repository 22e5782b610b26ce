/*
 * test_bench_args.c — unit tests for bench/bench_args.c, the expansion of
 * parley-bench's --parleyd-args template.
 *
 * What must hold: words split on (runs of) spaces; every placeholder is
 * replaced, also several in one word and next to literal text; unknown
 * braces stay literal; too small an argv or store is an error (-ENOSPC),
 * never a silently shortened command line or a write past the store.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../../../bench/bench_args.h"

Test(bench_args, default_template)
{
	char *argv[16], store[512];
	int n = bench_expand_args("parleyd",
				  "--dev --data {data} --listen 127.0.0.1:{port} --tls-port 0",
				  4242, "/t/x", argv, 16, store, sizeof store);
	cr_assert_eq(n, 8);
	const char *want[] = {"parleyd", "--dev", "--data", "/t/x/data", "--listen",
			      "127.0.0.1:4242", "--tls-port", "0"};
	for (int i = 0; i < 8; i++)
		cr_assert_str_eq(argv[i], want[i], "argv[%d]", i);
	cr_assert_null(argv[8]);
}

Test(bench_args, all_placeholders_and_spacing)
{
	char *argv[16], store[512];
	int n = bench_expand_args("p", "  {dir}  {cert},{key} x{port}y {unknown}  ", 7, "/d",
				  argv, 16, store, sizeof store);
	cr_assert_eq(n, 5);
	cr_assert_str_eq(argv[1], "/d");
	cr_assert_str_eq(argv[2], "/d/bench-cert.pem,/d/bench-key.pem");
	cr_assert_str_eq(argv[3], "x7y");
	cr_assert_str_eq(argv[4], "{unknown}");
	cr_assert_null(argv[5]);
}

Test(bench_args, empty_template)
{
	char *argv[4], store[8];
	cr_assert_eq(bench_expand_args("p", "   ", 1, "/d", argv, 4, store, sizeof store), 1);
	cr_assert_str_eq(argv[0], "p");
	cr_assert_null(argv[1]);
}

Test(bench_args, too_many_words_is_an_error)
{
	char *argv[3], store[64];
	cr_assert_eq(bench_expand_args("p", "a b", 1, "/d", argv, 3, store, sizeof store), -ENOSPC);
	cr_assert_eq(bench_expand_args("p", "a", 1, "/d", argv, 3, store, sizeof store), 2);
}

Test(bench_args, store_overflow_is_an_error_at_every_size)
{
	const char *tmpl = "--data {data} --port {port}";
	/* full size: "--data\0/long/dir/data\0--port\0123456\0" */
	const char *dir = "/long/dir";
	size_t need = strlen("--data") + 1 + strlen("/long/dir/data") + 1 + strlen("--port") + 1 +
		      strlen("123456") + 1;
	for (size_t cap = 1; cap <= need + 2; cap++) {
		/* exact-size heap buffer: ASan catches any write past it */
		char *store = malloc(cap);
		char *argv[8];
		int n = bench_expand_args("p", tmpl, 123456, dir, argv, 8, store, cap);
		if (cap < need)
			cr_assert_eq(n, -ENOSPC, "cap %zu", cap);
		else {
			cr_assert_eq(n, 5, "cap %zu", cap);
			cr_assert_str_eq(argv[2], "/long/dir/data");
			cr_assert_str_eq(argv[4], "123456");
		}
		free(store);
	}
}

Test(bench_args, tls_and_admin_ports)
{
	char *argv[16], store[512];
	struct bench_ports p = {7000, 7001, 7002};
	int n = bench_expand_args_ports("parleyd",
					"--listen 127.0.0.1:{port} --tls-port {tlsport} "
					"--admin-port {adminport} x{port}{tlsport}{adminport}",
					&p, "/d", argv, 16, store, sizeof store);
	cr_assert_eq(n, 8);
	cr_assert_str_eq(argv[2], "127.0.0.1:7000");
	cr_assert_str_eq(argv[4], "7001");
	cr_assert_str_eq(argv[6], "7002");
	cr_assert_str_eq(argv[7], "x700070017002");
	cr_assert_null(argv[8]);
	/* the three-port form without TLS/admin ports names them 0 */
	n = bench_expand_args("p", "{tlsport} {adminport} {port}", 9, "/d", argv, 16, store,
			      sizeof store);
	cr_assert_eq(n, 4);
	cr_assert_str_eq(argv[1], "0");
	cr_assert_str_eq(argv[2], "0");
	cr_assert_str_eq(argv[3], "9");
}

Test(bench_args, append_after_the_template)
{
	char *argv[8];
	char store[64], more[16];
	int n = bench_expand_args("parleyd", "--port {port}", 7, "/d", argv, 8,
				  store, sizeof store);
	cr_assert_eq(n, 3);
	const char *const x[] = {"--node-id", "2", NULL};
	cr_assert_eq(bench_append_args(argv, n, 8, x, more, sizeof more), 5);
	cr_assert_str_eq(argv[2], "7");
	cr_assert_str_eq(argv[3], "--node-id");
	cr_assert_str_eq(argv[4], "2");
	cr_assert_null(argv[5]);
	cr_assert_eq(bench_append_args(argv, 5, 8, NULL, more, sizeof more), 5);
	cr_assert_null(argv[5]);
}

Test(bench_args, append_refuses_what_does_not_fit)
{
	char *argv[4] = {"parleyd", NULL};
	char more[16];
	const char *const x[] = {"a", "b", "c", NULL};
	/* argv: three words after argv[0] need 5 entries with the NULL */
	cr_assert_eq(bench_append_args(argv, 1, 4, x, more, sizeof more), -ENOSPC);
	const char *const y[] = {"0123456789abcdef", NULL}; /* 17 bytes */
	cr_assert_eq(bench_append_args(argv, 1, 4, y, more, sizeof more), -ENOSPC);
	const char *const z[] = {"0123456789abcde", NULL}; /* 16 bytes: fits */
	cr_assert_eq(bench_append_args(argv, 1, 4, z, more, sizeof more), 2);
	cr_assert_str_eq(argv[1], "0123456789abcde");
	cr_assert_null(argv[2]);
}
