/*
 * bench_args.h — expands parley-bench's --parleyd-args template into an
 * argv for execv. Words are split on spaces (no quoting); in each word
 * {port} {tlsport} {adminport} {data} {dir} {cert} {key} are replaced
 * (data = dir/data, cert = dir/bench-cert.pem, key = dir/bench-key.pem).
 * Pure; unit-tested in
 * tests/unit/bench/test_bench_args.c.
 */
#ifndef PARLEY_BENCH_ARGS_H
#define PARLEY_BENCH_ARGS_H

#include <stddef.h>

/* argv[0] = prog, then the expanded words, then NULL, in argv[0..max).
 * The words are stored in store[0..cap). Returns argc, or -ENOSPC when
 * argv or store is too small (nothing is silently dropped or cut). */
int bench_expand_args(const char *prog, const char *tmpl, int port, const char *dir,
		      char **argv, int max, char *store, size_t cap);

/* The ports a template can name: {port} (plain TCP), {tlsport} and
 * {adminport} (0 when the caller allocated none). */
struct bench_ports {
	int port;
	int tls_port;
	int admin_port;
};
/* As bench_expand_args, with all three ports. */
int bench_expand_args_ports(const char *prog, const char *tmpl, const struct bench_ports *ports,
			    const char *dir, char **argv, int max, char *store, size_t cap);

/* Appends the words of extra (NULL-terminated; NULL appends none) after
 * argv[0..argc) (as bench_expand_args left it), copying them into
 * store[0..cap), and ends argv with NULL; argv holds max entries. Returns
 * the new argc, or -ENOSPC (nothing is silently dropped). */
int bench_append_args(char **argv, int argc, int max, const char *const *extra,
		      char *store, size_t cap);

#endif /* PARLEY_BENCH_ARGS_H */
