/*
 * test_ctl_inspect.c — `parleyctl inspect` on a real data directory:
 * verification passes (exit 0), a stream dump shows the entries, a flipped
 * bit is reported with file and offset (exit 1), usage errors exit 2 and a
 * missing directory exits 3. The summary comes first and per-partition
 * lines only with --partitions; acknowledged records cut from the active
 * WAL segment after a clean stop are reported (exit 1) with the file and
 * the missing log indexes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h"

static char dir[64];
static char cmdbuf[1024];

static int run(const char *args, char *out, size_t outlen)
{
	const char *bin = getenv("PARLEY_BIN_DIR");
	cr_assert_not_null(bin, "PARLEY_BIN_DIR must point at the build");
	snprintf(cmdbuf, sizeof cmdbuf, "%s/tools/parleyctl inspect %s 2>&1", bin,
		 args);
	FILE *p = popen(cmdbuf, "r");
	cr_assert_not_null(p);
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = 0;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A fresh data directory in dir (4 partitions, 1 shard) with n appends
 * "hello <i>" to c/room; the engine is left open. */
static struct pe_engine *open_data(int n)
{
	snprintf(dir, sizeof dir, "/tmp/parley-inspect-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	strcat(dir, "/d");
	struct pe_options o = {.dir = dir, .partitions = 4, .shards = 1,
			       .wal_segment_bytes = 16u << 20};
	struct pe_engine *e;
	cr_assert_eq(pe_open(&o, &e), 0);
	for (int i = 0; i < n; i++) {
		char msg[32];
		snprintf(msg, sizeof msg, "hello %d", i);
		struct pe_input in = {.type = 3, .len = (uint32_t)strlen(msg),
				      .payload = msg};
		struct pe_append_req q = {.key = "c/room", .klen = 6,
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		cr_assert_eq(pe_append_sync(e, &q, &r), 0);
	}
	return e;
}

static void make_data(void)
{
	pe_close(open_data(10));
}

Test(ctl_inspect, verifies_lists_dumps_and_detects_corruption)
{
	make_data();
	char out[16384], args[256];
	snprintf(args, sizeof args, "--data %s --streams", dir);
	cr_assert_eq(run(args, out, sizeof out), 0, "%s", out);
	cr_assert(strstr(out, "verify=ok"), "%s", out);
	cr_assert(strstr(out, "stream=c/room first_seq=1 last_seq=10"), "%s", out);

	snprintf(args, sizeof args, "--data %s --stream c/room --from 9", dir);
	cr_assert_eq(run(args, out, sizeof out), 0, "%s", out);
	cr_assert(strstr(out, "seq=9 "), "%s", out);
	cr_assert(strstr(out, "payload=\"hello 9\""), "%s", out);
	cr_assert_null(strstr(out, "seq=8 "), "%s", out);

	/* flip a bit inside the first append's payload (not the torn tail:
	 * later batches exist); its record follows the partitions' election
	 * no-op records, so find it by its payload */
	char wal[128];
	snprintf(wal, sizeof wal, "%s/wal/0/wal-0000000000000001.log", dir);
	FILE *f = fopen(wal, "r+b");
	cr_assert_not_null(f);
	static uint8_t img[1 << 20];
	size_t got = fread(img, 1, sizeof img, f);
	uint8_t *at = memmem(img, got, "hello 0", 7);
	cr_assert_not_null(at);
	long pl_off = (long)(at - img);
	/* body: klen | key | producer | ts | expected | count | entry header */
	long rec_off = pl_off - 8 - 4 - 8 - 8 - 16 - 6 - 1 - 64;
	fseek(f, pl_off + 2, SEEK_SET);
	int c = fgetc(f);
	fseek(f, pl_off + 2, SEEK_SET);
	fputc(c ^ 0x40, f);
	fclose(f);
	char want[80];
	snprintf(want, sizeof want, "wal-0000000000000001.log offset %ld", rec_off);
	snprintf(args, sizeof args, "--data %s", dir);
	cr_assert_eq(run(args, out, sizeof out), 1, "%s", out);
	cr_assert(strstr(out, "state=CORRUPT"), "%s", out);
	cr_assert(strstr(out, want), "%s (want %s)", out, want);
	cr_assert(strstr(out, "verify=FAILED"), "%s", out);

	cr_assert_eq(run("--bogus", out, sizeof out), 2, "%s", out);
	cr_assert_eq(run("--data /nonexistent/parley", out, sizeof out), 3, "%s", out);
	snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %.*s", (int)(strlen(dir) - 2), dir);
	cr_assert_eq(system(cmdbuf), 0);
}

/* History segments: listed with ratio and dictionary id, dumped, and a
 * flipped bit in a block is reported with the segment file and block. */
Test(ctl_inspect, segments_listed_dumped_and_verified)
{
	snprintf(dir, sizeof dir, "/tmp/parley-inspect-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	strcat(dir, "/d");
	struct pe_options o = {.dir = dir, .partitions = 2, .shards = 1,
			       .wal_segment_bytes = 16u << 20};
	struct pe_engine *e;
	cr_assert_eq(pe_open(&o, &e), 0);
	for (int i = 0; i < 2000; i++) {
		char msg[96];
		snprintf(msg, sizeof msg, "message %d: see you at the station "
			 "tomorrow, bring the photos", i);
		struct pe_input in = {.type = 3, .len = (uint32_t)strlen(msg),
				      .payload = msg};
		struct pe_append_req q = {.key = "c/room", .klen = 6,
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		cr_assert_eq(pe_append_sync(e, &q, &r), 0);
	}
	uint32_t part = pe_partition_of(e, "c/room", 6);
	cr_assert_eq(pe_flush_sync(e, part), 0);
	pe_close(e);

	char out[65536], args[256];
	snprintf(args, sizeof args, "--data %s --segments", dir);
	cr_assert_eq(run(args, out, sizeof out), 0, "%s", out);
	cr_assert(strstr(out, "segment=seg-0000000000000001.pseg"), "%s", out);
	cr_assert(strstr(out, "entries=2000"), "%s", out);
	cr_assert(strstr(out, "ratio=0."), "%s", out);
	cr_assert(strstr(out, "dict_id="), "%s", out);
	cr_assert(strstr(out, "verify=ok"), "%s", out);

	snprintf(args, sizeof args, "--data %s --dump-segment %u:1 --limit 3", dir,
		 part);
	cr_assert_eq(run(args, out, sizeof out), 0, "%s", out);
	cr_assert(strstr(out, "stream=c/room seq=1 "), "%s", out);
	cr_assert(strstr(out, "payload=\"message 2: see you"), "%s", out);
	cr_assert_null(strstr(out, "seq=4 "), "%s", out);

	char seg[160];
	snprintf(seg, sizeof seg, "%s/hist/%u/seg-0000000000000001.pseg", dir, part);
	FILE *f = fopen(seg, "r+b");
	cr_assert_not_null(f);
	fseek(f, 300, SEEK_SET);
	int c = fgetc(f);
	fseek(f, 300, SEEK_SET);
	fputc(c ^ 0x10, f);
	fclose(f);
	snprintf(args, sizeof args, "--data %s", dir);
	cr_assert_eq(run(args, out, sizeof out), 1, "%s", out);
	cr_assert(strstr(out, "seg-0000000000000001.pseg"), "%s", out);
	cr_assert(strstr(out, "block"), "%s", out);
	cr_assert(strstr(out, "verify=FAILED"), "%s", out);
	snprintf(args, sizeof args, "--data %s --dump-segment %u:1", dir, part);
	cr_assert_eq(run(args, out, sizeof out), 1, "%s", out);
	snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %.*s", (int)(strlen(dir) - 2), dir);
	cr_assert_eq(system(cmdbuf), 0);
}

static int count_lines(const char *out, const char *prefix)
{
	int n = 0;
	size_t pl = strlen(prefix);
	for (const char *l = out; l && *l;) {
		if (!strncmp(l, prefix, pl))
			n++;
		l = strchr(l, '\n');
		if (l)
			l++;
	}
	return n;
}

Test(ctl_inspect, summary_first_partitions_on_request)
{
	make_data();
	char out[16384], args[256];
	snprintf(args, sizeof args, "--data %s", dir);
	cr_assert_eq(run(args, out, sizeof out), 0, "%s", out);
	cr_assert(!strncmp(out, "summary verify=ok problems=0 shards=1 "
			   "wal_segments=1 ", 38), "%s", out);
	cr_assert(strstr(out, " partitions=4 partitions_with_data=1 "), "%s", out);
	cr_assert(strstr(out, " entries=10 "), "%s", out);
	cr_assert_eq(count_lines(out, "partition="), 0, "%s", out);

	snprintf(args, sizeof args, "--data %s --partitions", dir);
	cr_assert_eq(run(args, out, sizeof out), 0, "%s", out);
	cr_assert(!strncmp(out, "summary verify=ok", 17), "%s", out);
	cr_assert_eq(count_lines(out, "partition="), 4, "%s", out);
	snprintf(args, sizeof args, "--data %s -v", dir);
	cr_assert_eq(run(args, out, sizeof out), 0, "%s", out);
	cr_assert_eq(count_lines(out, "partition="), 4, "%s", out);
	snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %.*s", (int)(strlen(dir) - 2), dir);
	cr_assert_eq(system(cmdbuf), 0);
}

/* The WAL high-water mark: the active segment cut after a clean stop. */
Test(ctl_inspect, cut_wal_segment_is_reported)
{
	struct pe_engine *e = open_data(200);
	/* the room's last log index (its appends follow the no-op of its
	 * Raft group's election at open) */
	struct pe_partition_status pst;
	cr_assert_eq(pe_partition_status(e, pe_partition_of(e, "c/room", 6), &pst), 0);
	char last[32];
	snprintf(last, sizeof last, "..%llu ", (unsigned long long)pst.last_index);
	pe_close(e);
	char wal[128];
	snprintf(wal, sizeof wal, "%s/wal/0/wal-0000000000000001.log", dir);
	cr_assert_eq(truncate(wal, 64 * 1024), 0);

	char out[16384], args[256];
	snprintf(args, sizeof args, "--data %s", dir);
	cr_assert_eq(run(args, out, sizeof out), 1, "%s", out);
	cr_assert(strstr(out, "summary verify=FAILED problems=1 "), "%s", out);
	cr_assert(strstr(out, "state=CORRUPT"), "%s", out);
	cr_assert(strstr(out, "wal-0000000000000001.log offset 65536: "
			 "acknowledged records lost: log indexes "), "%s", out);
	cr_assert(strstr(out, last), "%s (want %s)", out, last);
	snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %.*s", (int)(strlen(dir) - 2), dir);
	cr_assert_eq(system(cmdbuf), 0);
}
