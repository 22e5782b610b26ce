/*
 * bench_args.c — --parleyd-args template expansion (see bench_args.h).
 */
#include "bench_args.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Appends printf output at store[*o]; -ENOSPC if it does not fit with room
 * for a terminating NUL. */
#define APPEND(...)                                                            \
	do {                                                                   \
		int w_ = snprintf(store + o, cap - o, __VA_ARGS__);            \
		if (w_ < 0 || (size_t)w_ >= cap - o)                           \
			return -ENOSPC;                                        \
		o += (size_t)w_;                                               \
	} while (0)

int bench_expand_args(const char *prog, const char *tmpl, int port, const char *dir,
		      char **argv, int max, char *store, size_t cap)
{
	struct bench_ports p = {port, 0, 0};
	return bench_expand_args_ports(prog, tmpl, &p, dir, argv, max, store, cap);
}

int bench_expand_args_ports(const char *prog, const char *tmpl, const struct bench_ports *ports,
			    const char *dir, char **argv, int max, char *store, size_t cap)
{
	if (max < 2 || cap == 0)
		return -ENOSPC;
	int n = 0;
	size_t o = 0;
	argv[n++] = (char *)prog;
	const char *t = tmpl;
	for (;;) {
		while (*t == ' ')
			t++;
		if (!*t)
			break;
		if (n >= max - 1)
			return -ENOSPC;
		char *arg = store + o;
		while (*t && *t != ' ') {
			if (!strncmp(t, "{port}", 6)) {
				APPEND("%d", ports->port);
				t += 6;
			} else if (!strncmp(t, "{tlsport}", 9)) {
				APPEND("%d", ports->tls_port);
				t += 9;
			} else if (!strncmp(t, "{adminport}", 11)) {
				APPEND("%d", ports->admin_port);
				t += 11;
			} else if (!strncmp(t, "{data}", 6)) {
				APPEND("%s/data", dir);
				t += 6;
			} else if (!strncmp(t, "{dir}", 5)) {
				APPEND("%s", dir);
				t += 5;
			} else if (!strncmp(t, "{cert}", 6)) {
				APPEND("%s/bench-cert.pem", dir);
				t += 6;
			} else if (!strncmp(t, "{key}", 5)) {
				APPEND("%s/bench-key.pem", dir);
				t += 5;
			} else {
				APPEND("%c", *t);
				t++;
			}
		}
		if (o + 1 > cap)
			return -ENOSPC;
		store[o++] = 0;
		argv[n++] = arg;
	}
	argv[n] = NULL;
	return n;
}

int bench_append_args(char **argv, int argc, int max, const char *const *extra,
		      char *store, size_t cap)
{
	for (unsigned k = 0; extra && extra[k]; k++) {
		size_t l = strlen(extra[k]) + 1;
		if (l > cap || argc >= max - 1)
			return -ENOSPC;
		memcpy(store, extra[k], l);
		argv[argc++] = store;
		store += l;
		cap -= l;
	}
	if (argc >= max)
		return -ENOSPC;
	argv[argc] = NULL;
	return argc;
}
