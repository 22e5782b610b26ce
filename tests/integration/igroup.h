/*
 * igroup.h — what the group integration tests (test_groups.c,
 * test_groups_large.c, test_group_set.c) share on top of itest.h: the
 * parleyd settings of the tests with hundreds of members, creating a
 * group larger than one request may name, waiting for the server's group
 * fan-out to drain, and running the terminal client `parley` as a user
 * with a script on stdin.
 *
 * Include after itest.h. Everything here is static and marked unused: a
 * test takes what it needs. Threads: the test's main thread.
 */
#ifndef PARLEY_IGROUP_H
#define PARLEY_IGROUP_H

#include "itest.h"

/* Members one GROUP_CREATE or GROUP_ADD names at the most in these tests. */
#define IG_BATCH 255

/* it_server_init, then the settings of a test of many members on one
 * server: up to 520 members a group, no send rate limits, 2000
 * connections, and read fan-out from `read_fanout_min` members ("0":
 * never, every group writes each member's inbox). */
static __attribute__((unused)) void ig_server_init(struct it_server *srv, const char *name,
						   const char *read_fanout_min)
{
	it_server_init(srv, name);
	int k = 0;
	srv->extra[k++] = "--group-max-members";
	srv->extra[k++] = "520";
	srv->extra[k++] = "--group-read-fanout-min";
	srv->extra[k++] = read_fanout_min;
	srv->extra[k++] = "--rate-send-user-per-min";
	srv->extra[k++] = "0";
	srv->extra[k++] = "--rate-send-conn-per-min";
	srv->extra[k++] = "0";
	srv->extra[k++] = "--max-connections";
	srv->extra[k++] = "2000";
}

/* Creates a group `title` owned by names[0] (owner's client) with members
 * names[1..n): IG_BATCH in the create, the rest in GROUP_ADDs of IG_BATCH.
 * Its id into gid[0..cap); returns the last membership event's seq. */
static __attribute__((unused)) uint64_t ig_group_make(struct parley_client *owner,
						      char (*names)[16], int n,
						      const char *title, char *gid,
						      size_t cap)
{
	const char *us[IG_BATCH];
	const struct parley_group_ok *ok;
	int first = n - 1 < IG_BATCH ? n - 1 : IG_BATCH;
	for (int i = 0; i < first; i++)
		us[i] = names[1 + i];
	IT_OK(parley_client_group_create(owner, title, 0, us, (size_t)first, &ok));
	snprintf(gid, cap, "%.*s", (int)ok->conv.len, ok->conv.p);
	uint64_t seq = ok->seq;
	for (int at = 1 + first; at < n;) {
		int k = n - at < IG_BATCH ? n - at : IG_BATCH;
		for (int i = 0; i < k; i++)
			us[i] = names[at + i];
		IT_OK(parley_client_group_add(owner, gid, us, (size_t)k, 0, &ok));
		seq = ok->seq;
		at += k;
	}
	return seq;
}

/* Waits (10 s at the most) until the server has no group fan-out pending
 * (parley_fanout_pending): every inbox write or ACTIVITY of what was
 * acknowledged is done. A bound on waiting only, not a check. */
static __attribute__((unused)) void ig_wait_fanout(const struct it_server *srv)
{
	for (int i = 0; i < 400 && it_metric_get(srv->admin_port, "parley_fanout_pending");
	     i++)
		it_sleep_ms(25);
}

/* `parley A1 [A2 [A3]]` (the terminal client, device "cli") as user
 * against srv, with `input` on stdin (a pipe: no terminal, so `chat`
 * reads it as a script). Returns its output, stdout and stderr
 * (malloc'd, at most 64 KiB; a client silent for 30 s is killed), and
 * *status its exit status (-1: killed by a signal). */
static __attribute__((unused)) char *ig_run_cli(const struct it_server *srv, const char *user,
						const char *input, int *status, const char *a1,
						const char *a2, const char *a3)
{
	char bin[512], port[16];
	snprintf(bin, sizeof bin, "%s/tools/parley", getenv("PARLEY_BIN_DIR"));
	snprintf(port, sizeof port, "%u", srv->port);
	char *tok = it_token_for(user);
	int in[2], out[2];
	IT_CHECK(pipe(in) == 0 && pipe(out) == 0);
	pid_t pid = fork();
	IT_CHECK(pid >= 0);
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		close(in[1]);
		close(out[0]);
		execl(bin, bin, "--token", tok, "--port", port, "--device", "cli",
		      a1, a2, a3, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	for (size_t off = 0, n = strlen(input); off < n;) {
		ssize_t k = write(in[1], input + off, n - off);
		IT_CHECK(k > 0, "writing to parley chat: %s", strerror(errno));
		off += (size_t)k;
	}
	close(in[1]);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	IT_CHECK(buf);
	for (;;) {
		struct pollfd p = {out[0], POLLIN, 0};
		if (poll(&p, 1, 30000) <= 0) {
			kill(pid, SIGKILL);
			break;
		}
		ssize_t r = read(out[0], buf + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1)
			break;
	}
	buf[n] = 0;
	close(out[0]);
	int st;
	waitpid(pid, &st, 0);
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	free(tok);
	return buf;
}

#endif /* PARLEY_IGROUP_H */
