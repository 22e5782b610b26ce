/*
 * test_wal_loss.c — acknowledged messages that vanish from the WAL are
 * detected, never served as a shorter conversation.
 *
 * 200 SENDs are acknowledged, parleyd stops cleanly (SIGTERM), and the
 * active WAL segment is cut from its full size to 64 KiB (outside damage:
 * a bad copy, a restore, a file system bug). Then:
 *   - parleyd starts and refuses to serve the damaged partitions (the
 *     engine's single-node rule: the others stay served), and its log
 *     names the file, the byte range and the log index range that are
 *     missing;
 *   - HISTORY of the conversation fails instead of ending at seq 8;
 *   - `parleyctl inspect` exits 1 (corruption) naming the file;
 *   - a conversation in an undamaged partition still works.
 */
#include <dirent.h>

#include "itest.h"

#define TOTAL 200

/* The active (highest) segment of each shard's WAL, cut to `size`.
 * Returns how many files were cut; names the first in `first`. */
static int cut_active_segments(const char *data, off_t size, char *first,
			       size_t n)
{
	char wal[400];
	snprintf(wal, sizeof wal, "%s/wal", data);
	DIR *d = opendir(wal);
	IT_CHECK(d != NULL, "no %s", wal);
	int cut = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char sd[700], best[64] = "";
		snprintf(sd, sizeof sd, "%s/%s", wal, de->d_name);
		DIR *s = opendir(sd);
		if (!s)
			continue;
		struct dirent *fe;
		while ((fe = readdir(s)))
			if (!strncmp(fe->d_name, "wal-", 4) &&
			    strlen(fe->d_name) == 24 &&
			    strcmp(fe->d_name, best) > 0)
				memcpy(best, fe->d_name, 25); /* 24 chars and NUL */
		closedir(s);
		if (!best[0])
			continue;
		char path[800];
		snprintf(path, sizeof path, "%s/%s", sd, best);
		struct stat st;
		IT_CHECK(stat(path, &st) == 0);
		if (st.st_size <= size)
			continue;
		IT_CHECK(truncate(path, size) == 0, "truncate %s", path);
		printf("wal_loss: cut %s from %lld to %lld bytes\n", path,
		       (long long)st.st_size, (long long)size);
		if (!cut)
			snprintf(first, n, "%s", best);
		cut++;
	}
	closedir(d);
	return cut;
}

static int run_capture(const char *cmd, char *out, size_t cap)
{
	FILE *p = popen(cmd, "r");
	IT_CHECK(p != NULL);
	size_t n = fread(out, 1, cap - 1, p);
	out[n] = 0;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	IT_CHECK(f != NULL, "%s", path);
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

int main(void)
{
	it_init("wal_loss");
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);

	struct parley_client *alice = it_client(&srv, "alice", "alice-1", 0, NULL);
	struct parley_client *bob = it_client(&srv, "bob", "bob-1", 0, NULL);
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(alice, "bob", &cv));
	for (int k = 0; k < TOTAL; k++) {
		char body[64];
		snprintf(body, sizeof body, "acknowledged message %d", k);
		struct parley_send_result r;
		IT_OK(parley_client_send(alice, "d:alice:bob", 1, body,
					 strlen(body), &r));
		IT_CHECK(r.seq == (uint64_t)k + 1, "seq %" PRIu64, r.seq);
	}
	parley_client_free(alice);
	parley_client_free(bob);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 30000) == 0, "clean stop");

	char file[64] = "";
	IT_CHECK(cut_active_segments(srv.data, 64 * 1024, file, sizeof file) > 0,
		 "no active WAL segment larger than 64 KiB");

	/* parleyctl inspect: corruption, exit 1, the file named */
	char cmd[1200], out[1 << 16];
	snprintf(cmd, sizeof cmd, "%s/tools/parleyctl inspect --data %s 2>&1",
		 getenv("PARLEY_BIN_DIR"), srv.data);
	int rc = run_capture(cmd, out, sizeof out);
	printf("wal_loss: parleyctl inspect exit %d\n%s", rc, out);
	IT_CHECK(rc == 1, "parleyctl inspect exited %d", rc);
	IT_CHECK(strstr(out, file), "inspect does not name %s", file);
	IT_CHECK(strstr(out, "verify=FAILED"), "no verify=FAILED");
	IT_CHECK(strstr(out, "acknowledged records lost"), "no lost range");

	/* parleyd: starts, names the file and the ranges, refuses the
	 * damaged partition instead of serving a shorter conversation */
	it_server_start(&srv);
	const char *log = slurp(srv.log);
	const char *line = strstr(log, "acknowledged records missing");
	IT_CHECK(line, "parleyd log does not report the loss");
	IT_CHECK(strstr(line, file), "the log line does not name %s", file);
	IT_CHECK(strstr(line, "indexes="), "no index range");
	IT_CHECK(strstr(line, "bytes=65536.."), "no byte range");

	bob = it_client(&srv, "bob", "bob-1", 0, NULL);
	const struct parley_history_page *pg = NULL;
	rc = parley_client_history(bob, "d:alice:bob", 0, 100, &pg);
	IT_CHECK(rc != 0, "HISTORY served %u messages of a damaged conversation",
		 pg ? pg->count : 0);
	printf("wal_loss: HISTORY refused: %s\n", parley_strerror(rc));
	parley_client_free(bob);

	/* the other partitions are still served: some new pair of users
	 * (whose conversation and inboxes miss the damaged partitions)
	 * chats as before */
	int served = 0;
	for (int i = 0; i < 12 && !served; i++) {
		char ua[16], ub[16];
		snprintf(ua, sizeof ua, "a%02d", i);
		snprintf(ub, sizeof ub, "b%02d", i);
		struct parley_client *ca = it_client(&srv, ua, "d1", 0, NULL);
		struct parley_client *cb = it_client(&srv, ub, "d1", 0, NULL);
		struct parley_send_result r;
		char conv[40];
		snprintf(conv, sizeof conv, "d:%s:%s", ua, ub);
		if (parley_client_conv_open(ca, ub, &cv) == 0 &&
		    parley_client_send(ca, conv, 1, "hi", 2, &r) == 0 &&
		    parley_client_history(cb, conv, 0, 10, &pg) == 0 &&
		    pg->count == 1)
			served = 1;
		parley_client_free(ca);
		parley_client_free(cb);
	}
	IT_CHECK(served, "no conversation is served after the loss");
	IT_CHECK(it_server_stop(&srv, SIGTERM, 30000) == 0, "clean stop");
	printf("wal_loss: ok\n");
	return 0;
}
