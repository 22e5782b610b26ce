/*
 * test_wal.c — the WAL's loss detection on the in-memory backend: the
 * high-water mark (wal.hwm) and the created size in version-2 segment
 * headers. Acknowledged records that disappear from the log — a cut or
 * zeroed active segment, a cut non-last segment, a segment file missing
 * from the chain — are reported with the file and the missing range, and
 * only the partitions that lost records are refused; a torn tail of
 * unsynced data after a crash still recovers silently; records already in
 * history are not reported; an older (version-1) directory upgrades in
 * place; a damaged mark is corruption, a missing one only a warning; a
 * damaged last record is never written over, so restoring it repairs; a
 * damaged segment header dooms a single node's shard (path and offset in
 * the error) and is handed over for repair when replicated; a roll takes
 * the segment prepared ahead and the prep work never prepares that seq
 * again (before, it could rename a spare over the segment just made
 * active); with two batches in flight, completions count durable in
 * order, and a torn batch followed by the batch submitted behind it drops
 * both (no corruption), while the same damage before a batch that was not
 * is corruption.
 */
#include <errno.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "pio_pass.h"
#include "wal.h"

#define SEG (16u << 20)
#define WAL1 "/data/wal/0/wal-0000000000000001.log"
#define WAL2 "/data/wal/0/wal-0000000000000002.log"
#define HWM "/data/wal/0/wal.hwm"

static struct pio *io;
static struct pe_engine *eng;

static struct pe_options opts(void)
{
	struct pe_options o = {0};
	o.dir = "/data";
	o.partitions = 4;
	o.shards = 1;
	o.wal_segment_bytes = SEG;
	o.no_auto_flush = true; /* keep every WAL segment: nothing released */
	o.io = io;
	return o;
}

static void setup(void)
{
	io = pio_mem_new(7);
	cr_assert_not_null(io);
	struct pe_options o = opts();
	cr_assert_eq(pe_open(&o, &eng), 0);
}

static void teardown(void)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	pio_free(io);
}

TestSuite(wal, .init = setup, .fini = teardown);

static void reopen_ro(bool read_only)
{
	struct pe_options o = opts();
	o.read_only = read_only;
	cr_assert_eq(pe_open(&o, &eng), 0);
}

static void append_n(const char *key, int n, uint32_t len)
{
	static char buf[64 * 1024];
	for (int i = 0; i < n; i++) {
		snprintf(buf, sizeof buf, "%s message %d", key, i);
		size_t l = strlen(buf);
		if (len > l)
			memset(buf + l, 'x', len - l);
		struct pe_input in = {.type = 1,
				      .len = len > l ? len : (uint32_t)l,
				      .payload = buf};
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	}
}

static uint32_t part_of(const char *key)
{
	return pe_partition_of(eng, key, strlen(key));
}

/* A key in partition `p` (partitions are xxh3(key) % 4). */
static void key_in(uint32_t p, char *out, size_t n)
{
	for (int i = 0;; i++) {
		snprintf(out, n, "c/k%d", i);
		if (part_of(out) == p)
			return;
	}
}

static void status(uint32_t p, struct pe_partition_status *st)
{
	cr_assert_eq(pe_partition_status(eng, p, st), 0);
}

static bool corrupt(uint32_t p)
{
	struct pe_partition_status st;
	status(p, &st);
	return st.state == PE_PART_CORRUPT;
}

static uint64_t last_seq(const char *key)
{
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, key, strlen(key), &m), 0);
	return m.last_seq;
}

static void file_cut(const char *path, uint64_t size)
{
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, 0, &f), 0, "%s", path);
	cr_assert_eq(io->ops->truncate(io, f, size), 0);
	io->ops->close(io, f);
}

static void file_zero(const char *path, uint64_t from)
{
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, 0, &f), 0, "%s", path);
	int64_t sz = io->ops->size(io, f);
	cr_assert_gt(sz, (int64_t)from);
	uint8_t *z = calloc(1, (size_t)sz - from);
	cr_assert_eq(io->ops->pwrite(io, f, z, (size_t)sz - from, from), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);
	free(z);
}

/* The case: acknowledged appends, a clean stop, the active segment
 * cut from its full size to 64 KiB. The partition that lost records is
 * refused with file and ranges; the others are served; a read-only open
 * (parleyctl inspect) sees the same; the next start still does. */
Test(wal, active_segment_cut_after_clean_stop_is_detected)
{
	char room[16], other[16];
	key_in(1, room, sizeof room);
	key_in(2, other, sizeof other);
	append_n(other, 3, 10); /* all within the first 64 KiB */
	append_n(room, 200, 100);
	/* the room's last log index: its 200 appends follow the no-op its
	 * Raft group logged when it elected itself at open */
	struct pe_partition_status s0;
	status(1, &s0);
	char last[32];
	snprintf(last, sizeof last, "..%llu", (unsigned long long)s0.last_index);
	pe_close(eng);
	cr_assert_eq(pio_mem_file_size(io, WAL1), SEG);
	file_cut(WAL1, 64 * 1024);

	for (int round = 0; round < 3; round++) {
		reopen_ro(round == 1);
		struct pe_partition_status st;
		status(1, &st);
		cr_assert_eq(st.state, PE_PART_CORRUPT, "round %d", round);
		cr_assert(strstr(st.error, "wal-0000000000000001.log"), "%s",
			  st.error);
		cr_assert(strstr(st.error, "acknowledged records lost"), "%s",
			  st.error);
		cr_assert(strstr(st.error, last), "%s (want %s)", st.error, last);
		/* later rounds appended to the other partition after it */
		cr_assert(round || strstr(st.error, "log ends at byte 65536"), "%s",
			  st.error);
		cr_assert(strstr(st.error, "durable to byte "), "%s", st.error);
		struct pe_meta m;
		cr_assert_eq(pe_meta_sync(eng, room, strlen(room), &m),
			     -PARLEY_ECORRUPT);
		cr_assert(!corrupt(2));
		cr_assert_eq(last_seq(other), 3 + (uint64_t)(round + 1) / 2);
		if (round != 1)
			append_n(other, 1, 10);
		pe_close(eng);
	}
	eng = NULL;
	reopen_ro(false);
}

/* kill -9, then the cut: no clean mark says where the log ended, so records
 * after the cut cannot be attributed: every partition of the shard is
 * refused, with the file and the byte range. */
Test(wal, active_segment_cut_after_crash_is_detected)
{
	char room[16];
	key_in(1, room, sizeof room);
	append_n(room, 200, 100);
	pe_abort(eng);
	pio_mem_crash(io, false);
	file_cut(WAL1, 64 * 1024);
	reopen_ro(false);
	for (uint32_t p = 0; p < 4; p++) {
		struct pe_partition_status st;
		status(p, &st);
		cr_assert_eq(st.state, PE_PART_CORRUPT);
		cr_assert(strstr(st.error, "wal-0000000000000001.log"), "%s",
			  st.error);
		cr_assert(strstr(st.error, "file cut to 65536 bytes"), "%s",
			  st.error);
		cr_assert(strstr(st.error, "65536..16777216"), "%s", st.error);
	}
}

/* The bytes vanish in place (the file keeps its size): only the mark can
 * tell. */
Test(wal, active_segment_zeroed_after_clean_stop_is_detected)
{
	char room[16];
	key_in(3, room, sizeof room);
	append_n(room, 50, 100);
	struct pe_partition_status s0;
	status(3, &s0);
	pe_close(eng);
	/* block 1 holds the election's no-ops (index 1), append k (index
	 * k + 1) is alone in block k + 1: from block 8 on, indexes 8.. */
	char want[48];
	snprintf(want, sizeof want, "log indexes 8..%llu",
		 (unsigned long long)s0.last_index);
	file_zero(WAL1, 8 * 4096);
	reopen_ro(false);
	struct pe_partition_status st;
	status(3, &st);
	cr_assert_eq(st.state, PE_PART_CORRUPT);
	cr_assert(strstr(st.error, want), "%s (want %s)", st.error, want);
	cr_assert(!corrupt(0));
}

/* No clean stop: the mark the prep thread makes every WAL_HWM_EVERY_MS
 * covers a burst even when nothing follows it. */
Test(wal, zeroed_after_crash_is_detected_by_the_periodic_mark)
{
	char room[16];
	key_in(2, room, sizeof room);
	int64_t empty = pio_mem_file_size(io, HWM); /* one segment, no entry */
	cr_assert_gt(empty, 0);
	append_n(room, 10, 60 * 1024);
	struct pe_partition_status s0;
	status(2, &s0); /* the 10 appends follow the election's no-op */
	uint64_t want_last = s0.last_index;
	/* then silence, until the mark (stored by another thread) lists the
	 * partition up to its last index: a bounded wait for a condition,
	 * nothing timed. One segment; its entries (every partition has its
	 * election's no-op in it) are {u32 partition, u32 0, u64 index} after
	 * the 48-byte header and the 24-byte segment record. */
	uint64_t listed = 0;
	for (int i = 0; i < 3000 && listed != want_last; i++) {
		usleep(5000);
		int64_t sz = pio_mem_file_size(io, HWM);
		if (sz <= empty)
			continue;
		uint8_t buf[256];
		struct pio_file *f;
		cr_assert_eq(io->ops->open(io, HWM, 0, &f), 0);
		cr_assert_eq(io->ops->pread(io, f, buf, (size_t)sz, 0), sz);
		io->ops->close(io, f);
		listed = 0;
		uint32_t nent = (uint32_t)buf[28] | (uint32_t)buf[29] << 8 |
				(uint32_t)buf[30] << 16 | (uint32_t)buf[31] << 24;
		for (uint32_t k = 0; k < nent && 48 + 24 + 16 * (k + 1) <= (uint64_t)sz; k++) {
			const uint8_t *en = buf + 48 + 24 + 16 * k;
			if (en[0] != 2 || en[1] || en[2] || en[3])
				continue;
			for (int b = 7; b >= 0; b--)
				listed = listed << 8 | en[8 + b];
		}
	}
	cr_assert_eq(listed, want_last);
	pe_abort(eng);
	pio_mem_crash(io, false);
	file_zero(WAL1, 3 * 4096);
	reopen_ro(false);
	struct pe_partition_status st;
	status(2, &st);
	cr_assert_eq(st.state, PE_PART_CORRUPT);
	/* the no-op (index 1, block 1) survives; the first append (index 2,
	 * from block 2) is damaged from block 3 on */
	char want[80];
	snprintf(want, sizeof want, "acknowledged records lost: log indexes 2..%llu ",
		 (unsigned long long)want_last);
	cr_assert(strstr(st.error, want), "%s (want %s)", st.error, want);
	cr_assert(!corrupt(1));
}

/* Has the segment at path taken records? (The next segment is prepared
 * ahead of its roll, so its file exists while it is still empty: its first
 * batch, at block 1, starts with the record magic "PLWR".) */
static bool seg_active(const char *path)
{
	struct pio_file *f;
	if (io->ops->open(io, path, 0, &f))
		return false;
	uint8_t m[4] = {0};
	int64_t n = io->ops->pread(io, f, m, sizeof m, 4096);
	io->ops->close(io, f);
	return n == 4 && !memcmp(m, "PLWR", 4);
}

/* Fills the first segment (a 16 MiB segment is sealed after ~8 MiB, when
 * a maximal batch might no longer fit) and spills into the second. */
static void fill_two_segments(const char *key)
{
	for (int i = 0; i < 400 && !seg_active(WAL2); i++)
		append_n(key, 1, 60 * 1024);
	cr_assert(seg_active(WAL2));
	append_n(key, 3, 100);
}

Test(wal, non_last_segment_cut_is_detected)
{
	char room[16];
	key_in(0, room, sizeof room);
	fill_two_segments(room);
	uint64_t n = last_seq(room);
	pe_close(eng);
	file_cut(WAL1, 1u << 20);
	reopen_ro(false);
	struct pe_partition_status st;
	status(0, &st);
	cr_assert_eq(st.state, PE_PART_CORRUPT);
	cr_assert(strstr(st.error, "wal-0000000000000001.log"), "%s", st.error);
	cr_assert(strstr(st.error, "1048576..16777216 missing"), "%s", st.error);
	(void)n;
}

/* A segment gone from the middle of the chain: the partition whose last
 * records it held is refused naming that file; the one whose later records
 * survive in the next segment sees the index gap. */
Test(wal, missing_segment_is_detected)
{
	char a[16], b[16];
	key_in(0, a, sizeof a);
	key_in(1, b, sizeof b);
	append_n(b, 2, 100);         /* segment 1 */
	fill_two_segments(a);        /* segments 1 and 2 */
	/* b's later records go to segment 3 */
	const char *w3 = "/data/wal/0/wal-0000000000000003.log";
	for (int i = 0; i < 400 && !seg_active(w3); i++)
		append_n(b, 1, 60 * 1024);
	cr_assert(seg_active(w3));
	pe_close(eng);
	cr_assert_eq(io->ops->unlink(io, WAL2), 0);
	reopen_ro(false);
	struct pe_partition_status st;
	status(0, &st);
	cr_assert_eq(st.state, PE_PART_CORRUPT);
	cr_assert(strstr(st.error, "wal-0000000000000002.log"), "%s", st.error);
	cr_assert(strstr(st.error, "segment file missing"), "%s", st.error);
	cr_assert(corrupt(1));
	cr_assert(!corrupt(2));
}

static void noop_cb(void *arg, const struct pe_append_result *r)
{
	(void)arg;
	(void)r;
}

/* Unsynced data torn by kill -9 is still dropped silently: the mark only
 * ever counts batches whose fdatasync completed. */
Test(wal, torn_tail_after_crash_still_recovers)
{
	char room[16];
	key_in(2, room, sizeof room);
	uint64_t acked = 0;
	for (int round = 0; round < 30; round++) {
		append_n(room, 1 + round % 7, 200);
		acked += 1 + round % 7;
		if (round % 5 == 4) {
			pe_close(eng);
			reopen_ro(false);
		}
		/* appends in flight when the crash comes */
		for (int i = 0; i < 3; i++) {
			struct pe_input in = {.type = 1, .len = 5, .payload = "torn!"};
			struct pe_append_req q = {.key = room, .klen = strlen(room),
						  .expected_last_seq = PE_NO_EXPECT,
						  .entries = &in, .count = 1};
			(void)pe_append(eng, &q, noop_cb, NULL);
		}
		pe_abort(eng);
		pio_mem_crash(io, round % 2 == 0);
		reopen_ro(false);
		for (uint32_t p = 0; p < 4; p++)
			cr_assert(!corrupt(p), "round %d partition %u", round, p);
		uint64_t s = last_seq(room);
		cr_assert_geq(s, acked, "round %d", round);
		acked = s; /* in-flight ones that made it count from now on */
	}
}

/* A batch whose fdatasync failed is torn by the crash inside a record
 * that does not start a block; recovery drops it and the next batch starts
 * at the following block boundary. The torn record's header must not
 * survive in front of that batch: the next recovery would take "a bad
 * record, then a later batch" for corruption and refuse the partition with
 * everything acknowledged since (found by the engine simulator). */
Test(wal, torn_record_inside_a_block_does_not_corrupt_the_next_start)
{
	char room[16];
	key_in(1, room, sizeof room);
	static char big[3000];
	memset(big, 'b', sizeof big);
	for (int round = 0; round < 60; round++) {
		append_n(room, 1, 100 + (uint32_t)(round * 37) % 900);
		pio_mem_fault_scope(io, "/wal/");
		pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1000);
		for (int i = 0; i < 6; i++) { /* several records in one batch */
			struct pe_input in = {.type = 1, .len = sizeof big,
					      .payload = big};
			struct pe_append_req q = {.key = room, .klen = strlen(room),
						  .expected_last_seq = PE_NO_EXPECT,
						  .entries = &in, .count = 1};
			(void)pe_append(eng, &q, noop_cb, NULL);
		}
		struct pe_meta m;
		(void)pe_meta_sync(eng, room, strlen(room), &m); /* a barrier */
		pe_abort(eng);
		pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 0);
		pio_mem_fault_scope(io, NULL);
		pio_mem_crash(io, true);
		reopen_ro(false);
		cr_assert(!corrupt(part_of(room)), "round %d (after the crash)", round);
		uint64_t before = last_seq(room);
		append_n(room, 2, 300);
		pe_close(eng);
		reopen_ro(false);
		cr_assert(!corrupt(part_of(room)), "round %d (after a clean restart)",
			  round);
		cr_assert_eq(last_seq(room), before + 2, "round %d", round);
	}
}

/* One past the last non-zero byte of a stored file (WAL segments are
 * pre-zeroed: where the written log ends). */
static uint64_t file_log_end(const char *path)
{
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, 0, &f), 0, "%s", path);
	int64_t sz = io->ops->size(io, f);
	uint8_t *b = malloc((size_t)sz);
	cr_assert_eq(io->ops->pread(io, f, b, (size_t)sz, 0), sz);
	uint64_t end = (uint64_t)sz;
	while (end && !b[end - 1])
		end--;
	free(b);
	io->ops->close(io, f);
	return end;
}

/* A flipped bit in the last acknowledged record, after a clean stop, reads
 * like a torn tail; the mark says it was durable, so the partition is
 * refused. What the engine writes while it runs like that (other
 * partitions' appends) must not land on the damaged bytes: once they are
 * restored (the bit flipped back, a file from a backup), every record is
 * there again. The recovery used to zero the "torn" record and write the
 * next batches over it, so the loss outlived the repair (found by the
 * engine simulator's flip-and-restore step). */
Test(wal, damaged_last_record_is_not_written_over)
{
	char room[16], other[16];
	key_in(3, room, sizeof room);
	key_in(0, other, sizeof other);
	append_n(other, 5, 100);
	append_n(room, 20, 300);
	pe_close(eng);
	uint64_t end = file_log_end(WAL1);
	cr_assert_gt(end, 8 * 4096u);
	cr_assert_eq(pio_mem_flip_bit(io, WAL1, end - 10, 3), 0);
	reopen_ro(false);
	cr_assert(corrupt(3));
	cr_assert(!corrupt(0));
	append_n(other, 30, 2000); /* the shard's log goes on */
	pe_close(eng);
	cr_assert_eq(pio_mem_flip_bit(io, WAL1, end - 10, 3), 0); /* repaired */
	reopen_ro(false);
	for (uint32_t p = 0; p < 4; p++)
		cr_assert(!corrupt(p), "partition %u", p);
	cr_assert_eq(last_seq(room), 20);
	cr_assert_eq(last_seq(other), 35);
	/* and it stays so across another restart */
	pe_close(eng);
	reopen_ro(false);
	cr_assert(!corrupt(3));
	cr_assert_eq(last_seq(room), 20);
}

/* What history holds is not the WAL's to lose. */
Test(wal, records_in_history_are_not_reported)
{
	char room[16];
	key_in(1, room, sizeof room);
	append_n(room, 40, 100);
	cr_assert_eq(pe_flush_sync(eng, 1), 0);
	pe_close(eng);
	file_cut(WAL1, 2 * 4096);
	reopen_ro(false);
	cr_assert(!corrupt(1));
	cr_assert_eq(last_seq(room), 40);
}

/* Offset of the first record of partition `part` with type APPEND and log
 * index >= min_index that starts a batch (block-aligned), or 0. */
static uint64_t find_batch_record(const char *path, uint32_t part,
				  uint64_t min_index)
{
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, 0, &f), 0, "%s", path);
	int64_t sz = io->ops->size(io, f);
	uint8_t *b = malloc((size_t)sz);
	cr_assert_eq(io->ops->pread(io, f, b, (size_t)sz, 0), sz);
	io->ops->close(io, f);
	uint64_t at = 0;
	for (uint64_t a = WAL_BLOCK; a + WAL_REC_HDR <= (uint64_t)sz && !at;
	     a += WAL_BLOCK)
		if (le_get32(b + a) == 0x52574C50u && le_get32(b + a + 24) == part &&
		    le_get16(b + a + 28) == 1 && le_get64(b + a + 40) >= min_index)
			at = a;
	free(b);
	return at;
}

/* A record whose body is damaged but whose header is intact, outside the
 * torn tail: when history already holds its entry (flushed), nothing is
 * lost and the partition serves; above the flushed index a single node has
 * nobody to repair it from, so the partition is refused, as before (a
 * replicated partition repairs it: test_part_repl). Before the WAL's
 * `damaged` callback the first case left the partition CORRUPT too. */
Test(wal, damaged_record_body_in_history_is_ignored)
{
	char room[16], other[16];
	key_in(1, room, sizeof room);
	key_in(2, other, sizeof other);
	append_n(room, 40, 200);
	cr_assert_eq(pe_flush_sync(eng, 1), 0);
	append_n(room, 5, 200); /* above the flushed index */
	append_n(other, 5, 200);
	pe_close(eng);
	uint64_t a = find_batch_record(WAL1, 1, 3);
	cr_assert_gt(a, 0);
	cr_assert_eq(pio_mem_flip_bit(io, WAL1, a + WAL_REC_HDR + 20, 2), 0);
	reopen_ro(false);
	cr_assert(!corrupt(1));
	cr_assert_eq(last_seq(room), 45);
	pe_close(eng);
	/* now one above the flushed index (log index 43: after the 40
	 * appends, the election's no-op and the flush) */
	cr_assert_eq(pio_mem_flip_bit(io, WAL1, a + WAL_REC_HDR + 20, 2), 0);
	uint64_t b = find_batch_record(WAL1, 1, 43);
	cr_assert_gt(b, 0);
	cr_assert_eq(pio_mem_flip_bit(io, WAL1, b + WAL_REC_HDR + 20, 2), 0);
	reopen_ro(false);
	cr_assert(corrupt(1));
	cr_assert(!corrupt(2));
	cr_assert_eq(last_seq(other), 5);
}

/* An older directory: version-1 segment headers, no mark. It opens as
 * before, gets a mark, and from then on a cut is detected. */
Test(wal, version_1_directory_upgrades_in_place)
{
	char room[16];
	key_in(1, room, sizeof room);
	append_n(room, 30, 100);
	pe_close(eng);
	uint8_t hdr[WAL_BLOCK];
	wal_encode_seg_header(hdr, 1, 0);
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, WAL1, 0, &f), 0);
	cr_assert_eq(io->ops->pwrite(io, f, hdr, sizeof hdr, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);
	cr_assert_eq(io->ops->unlink(io, HWM), 0);

	reopen_ro(false);
	cr_assert(!corrupt(1));
	cr_assert_eq(last_seq(room), 30);
	cr_assert_gt(pio_mem_file_size(io, HWM), 0);
	append_n(room, 5, 100);
	struct pe_partition_status s0;
	status(1, &s0);
	char want[48];
	snprintf(want, sizeof want, "log indexes 10..%llu",
		 (unsigned long long)s0.last_index);
	pe_close(eng);
	file_zero(WAL1, 10 * 4096);
	reopen_ro(false);
	struct pe_partition_status st;
	status(1, &st);
	cr_assert_eq(st.state, PE_PART_CORRUPT);
	cr_assert(strstr(st.error, want), "%s (want %s)", st.error, want);
}

Test(wal, damaged_mark_is_corruption_missing_mark_is_not)
{
	char room[16];
	key_in(1, room, sizeof room);
	append_n(room, 5, 100);
	pe_close(eng);
	cr_assert_eq(pio_mem_flip_bit(io, HWM, 20, 3), 0);
	reopen_ro(true);
	struct pe_partition_status st;
	status(0, &st);
	cr_assert_eq(st.state, PE_PART_CORRUPT);
	cr_assert(strstr(st.error, "wal.hwm"), "%s", st.error);
	cr_assert(strstr(st.error, "high-water mark file damaged"), "%s",
		  st.error);
	pe_close(eng);
	cr_assert_eq(io->ops->unlink(io, HWM), 0);
	reopen_ro(false);
	cr_assert(!corrupt(0) && !corrupt(1));
	cr_assert_eq(last_seq(room), 5);
}

/* The scanner: a version-2 header is accepted, records are read, and a log
 * that runs into a cut is told from one that ends inside the file. */
static int count_rec(void *arg, const struct wal_rec *r)
{
	(void)r;
	(*(int *)arg)++;
	return 0;
}

static void no_corrupt(void *arg, int64_t p, const char *file, uint64_t off,
		       const char *why)
{
	(void)arg;
	cr_assert_fail("corrupt %lld %s %llu %s", (long long)p, file,
		       (unsigned long long)off, why);
}

Test(wal, scan_reads_both_header_versions)
{
	static uint8_t seg[4 * WAL_BLOCK];
	for (int v = 0; v < 2; v++) {
		memset(seg, 0, sizeof seg);
		wal_encode_seg_header(seg, 9, v ? sizeof seg : 0);
		wal_encode_record(seg + WAL_BLOCK, 9, 1, WAL_BLOCK, 0, 1, 1, 1,
				  "abc", 3);
		wal_encode_record(seg + 2 * WAL_BLOCK, 9, 2, 2 * WAL_BLOCK, 0, 1,
				  1, 2, "def", 3);
		int n = 0;
		struct wal_recovery rec = {.record = count_rec,
					   .corrupt = no_corrupt, .arg = &n};
		uint64_t tail;
		uint32_t mb;
		cr_assert_eq(wal_scan_buffer(seg, sizeof seg, "x", true, &rec,
					     &tail, &mb), 0);
		cr_assert_eq(n, 2);
		cr_assert_eq(tail, 3 * WAL_BLOCK);
		cr_assert_eq(mb, 2);
		/* cut inside the second record: it is a torn tail to the
		 * scanner; the caller (wal_open) judges the cut */
		n = 0;
		cr_assert_eq(wal_scan_buffer(seg, 2 * WAL_BLOCK + 40, "x", true,
					     &rec, &tail, &mb), 0);
		cr_assert_eq(n, 1);
	}
}

/* The next segment is prepared ahead of its roll (its file exists, header
 * only, while the segment before it is active and unsealed). A crash with
 * it on disk is not corruption: recovery keeps it as the next segment, the
 * log goes on in the active one, and the roll into it still works across
 * further crashes. A clean stop returns it to the spares. */
Test(wal, prepared_segment_survives_crashes_and_a_clean_stop)
{
	char room[16];
	key_in(1, room, sizeof room);
	append_n(room, 5, 100);
	for (int i = 0; i < 5000 && pio_mem_file_size(io, WAL2) < 0; i++)
		usleep(1000); /* the prep thread makes it */
	cr_assert_geq(pio_mem_file_size(io, WAL2), 0);
	cr_assert(!seg_active(WAL2));
	for (int round = 0; round < 3; round++) {
		pe_abort(eng);
		pio_mem_crash(io, round % 2);
		reopen_ro(false);
		for (uint32_t p = 0; p < 4; p++)
			cr_assert(!corrupt(p), "round %d partition %u", round, p);
		cr_assert_eq(last_seq(room), 5);
		cr_assert_geq(pio_mem_file_size(io, WAL2), 0, "kept as the next");
		cr_assert(!seg_active(WAL2));
	}
	fill_two_segments(room); /* rolls into the prepared segment */
	uint64_t n = last_seq(room);
	pe_abort(eng);
	pio_mem_crash(io, false);
	reopen_ro(false);
	for (uint32_t p = 0; p < 4; p++)
		cr_assert(!corrupt(p));
	cr_assert_eq(last_seq(room), n);
	append_n(room, 2, 100);
	cr_assert_eq(last_seq(room), n + 2);
	/* a clean stop: the segment prepared after WAL2 goes back to the
	 * spares, WAL2 is the highest segment file */
	pe_close(eng);
	eng = NULL;
	cr_assert_lt(pio_mem_file_size(io, "/data/wal/0/wal-0000000000000003.log"), 0);
	reopen_ro(false);
	cr_assert_eq(last_seq(room), n + 2);
	for (uint32_t p = 0; p < 4; p++)
		cr_assert(!corrupt(p));
}

/* ---- a damaged segment header (wal_recovery.repair_from_peers) ------------ */

struct hdr_seen {
	int records, damaged, corrupt, whole_shard;
	char why[256];
};

static int hs_record(void *arg, const struct wal_rec *r)
{
	(void)r;
	((struct hdr_seen *)arg)->records++;
	return 0;
}

static int hs_damaged(void *arg, const struct wal_rec *r)
{
	cr_assert_null(r->body);
	((struct hdr_seen *)arg)->damaged++;
	return 0;
}

static void hs_corrupt(void *arg, int64_t p, const char *file, uint64_t off,
		       const char *why)
{
	struct hdr_seen *s = arg;
	s->whole_shard += p < 0;
	if (s->corrupt++) /* the first one is kept */
		return;
	snprintf(s->why, sizeof s->why, "partition %lld %s offset %llu: %s",
		 (long long)p, file, (unsigned long long)off, why);
}

static void flip_bit(const char *path, uint64_t off, int bit)
{
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, 0, &f), 0, "%s", path);
	uint8_t b;
	cr_assert_eq(io->ops->pread(io, f, &b, 1, off), 1);
	b ^= (uint8_t)(1u << bit);
	cr_assert_eq(io->ops->pwrite(io, f, &b, 1, off), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);
}

static struct hdr_seen wal_open_seen(bool repair, bool read_only)
{
	struct hdr_seen s = {0};
	struct wal_recovery rec = {.record = hs_record, .corrupt = hs_corrupt,
				   .damaged = hs_damaged,
				   .repair_from_peers = repair, .arg = &s};
	struct wal *w = NULL;
	cr_assert_eq(wal_open(io, "/data/wal/0", SEG, read_only, &rec, NULL, &w), 0);
	wal_close(w);
	return s;
}

/* A single node has nobody to repair from: a flipped bit in the active
 * segment's header dooms the shard's partitions as before, and the error
 * names the file's path and the offset. */
Test(wal, damaged_segment_header_on_a_single_node_is_corrupt)
{
	char room[16];
	key_in(2, room, sizeof room);
	append_n(room, 5, 100);
	pe_close(eng);
	eng = NULL;
	flip_bit(WAL1, 17, 3); /* in the segment seq */
	reopen_ro(false);
	for (uint32_t p = 0; p < 4; p++) {
		struct pe_partition_status st;
		status(p, &st);
		cr_assert_eq(st.state, PE_PART_CORRUPT, "partition %u", p);
		cr_assert(strstr(st.error, "bad segment header (" WAL1
				 ", offset 0)"), "%s", st.error);
	}
}

/* Replicated (repair_from_peers): the same damage hands every record of
 * the segment over as damaged (none is trusted, none is applied) and
 * reports nothing corrupt; a read-write open goes on in a new segment, and
 * the next opens (the damaged one now unsealed and not the last) do the
 * same. Without repair_from_peers the whole shard is reported. */
Test(wal, damaged_segment_header_is_handed_over_for_repair)
{
	char room[16];
	key_in(2, room, sizeof room);
	append_n(room, 5, 100);
	pe_close(eng);
	eng = NULL;
	struct hdr_seen s = wal_open_seen(true, true);
	cr_assert_eq(s.damaged, 0);
	int records = s.records;
	cr_assert_geq(records, 5);
	flip_bit(WAL1, 33, 0); /* in the header checksum */
	s = wal_open_seen(false, true);
	cr_assert_geq(s.whole_shard, 1, "%d", s.whole_shard);
	cr_assert(strstr(s.why, "bad segment header (" WAL1 ", offset 0)"), "%s",
		  s.why);
	s = wal_open_seen(true, false);
	cr_assert_eq(s.corrupt, 0, "%s", s.why);
	cr_assert_eq(s.records, 0);
	cr_assert_eq(s.damaged, records);
	cr_assert(seg_active(WAL1));
	cr_assert_geq(pio_mem_file_size(io, WAL2), 0, "the log goes on in a new one");
	for (int i = 0; i < 2; i++) {
		s = wal_open_seen(true, i == 1);
		cr_assert_eq(s.corrupt, 0, "round %d: %s (damaged %d records %d)", i,
			     s.why, s.damaged, s.records);
		cr_assert_eq(s.damaged, records);
	}
}

/* The segment prepared ahead of its roll (header only) is damaged: with
 * repair_from_peers nothing is lost and nothing reported (a new one is
 * prepared over it); the log in the active segment reads as before. */
Test(wal, damaged_header_of_the_prepared_segment_is_replaced)
{
	char room[16];
	key_in(1, room, sizeof room);
	append_n(room, 5, 100);
	for (int i = 0; i < 5000 && pio_mem_file_size(io, WAL2) < 0; i++)
		usleep(1000); /* the prep thread makes it */
	cr_assert_geq(pio_mem_file_size(io, WAL2), 0);
	pe_abort(eng);
	eng = NULL;
	pio_mem_crash(io, false);
	flip_bit(WAL2, 20, 5);
	struct hdr_seen s = wal_open_seen(true, false);
	cr_assert_eq(s.corrupt, 0, "%s", s.why);
	cr_assert_eq(s.damaged, 0);
	cr_assert_geq(s.records, 5);
	s = wal_open_seen(true, true);
	cr_assert_eq(s.corrupt, 0, "%s", s.why);
	cr_assert_geq(s.records, 5);
}

/* ---- a damaged record header (wal_recovery.lost) ---------------------------- */

/*
 * A segment laid out as the writer does: batch 1 at block 1 holds records
 * (partition, index) (0,1) (1,1) (0,2) (2,1); batch 2 at block 2 holds
 * (1,2) (3,1) and, when `sealed`, the seal record. Bodies of different
 * lengths, so a wrong resync cannot line up by chance.
 */
#define LS_SEQ 5u
#define LS_NREC 6
struct lrec {
	uint32_t part;
	uint64_t index;
	uint64_t off;
	uint32_t len;
};

static const struct lrec lrec_plan[LS_NREC] = {
	{0, 1, 0, 24}, {1, 1, 0, 200}, {0, 2, 0, 17},
	{2, 1, 0, 64}, {1, 2, 0, 33}, {3, 1, 0, 100}};

static uint64_t lseg_build(uint8_t *seg, size_t size, bool sealed,
			   struct lrec *out)
{
	memset(seg, 0, size);
	wal_encode_seg_header(seg, LS_SEQ, size);
	uint8_t body[256];
	for (int i = 0; i < LS_NREC; i++) {
		out[i] = lrec_plan[i];
		memset(body, 'a' + i, sizeof body);
		/* a body that looks like a record header of this segment
		 * (magic, seq) in a stale batch must never be resynced to */
		le_put32(body, 0x52574C50u);
		le_put64(body + 8, LS_SEQ);
	}
	uint64_t off = WAL_BLOCK;
	for (int i = 0; i < LS_NREC; i++) {
		uint32_t batch = i < 4 ? 1 : 2;
		uint64_t start = i < 4 ? WAL_BLOCK : 2 * WAL_BLOCK;
		if (i == 4)
			off = 2 * WAL_BLOCK;
		memset(body + 16, 'a' + i, sizeof body - 16);
		wal_encode_record(seg + off, LS_SEQ, batch, (uint32_t)start,
				  out[i].part, 1, 1, out[i].index, body,
				  out[i].len);
		out[i].off = off;
		off = (off + WAL_REC_HDR + out[i].len + 7) & ~7ull;
	}
	if (sealed) {
		wal_encode_record(seg + off, LS_SEQ, 2, 2 * WAL_BLOCK, 0xFFFFFFFFu,
				  0xFFFFu, 0, 0, NULL, 0);
		off += WAL_REC_HDR;
	}
	return off;
}

struct lseen {
	int n;
	uint32_t part[16];
	uint64_t index[16];
	int lost;
	uint64_t lost_off, lost_end;
	int corrupt, whole_shard;
	int lost_answer; /* what the lost callback returns */
};

static int ls_record(void *arg, const struct wal_rec *r)
{
	struct lseen *s = arg;
	cr_assert_lt(s->n, 16);
	s->part[s->n] = r->partition;
	s->index[s->n++] = r->index;
	return 0;
}

static int ls_lost(void *arg, const char *file, uint64_t off, uint64_t end)
{
	struct lseen *s = arg;
	(void)file;
	s->lost++;
	s->lost_off = off;
	s->lost_end = end;
	return s->lost_answer;
}

static void ls_corrupt(void *arg, int64_t p, const char *file, uint64_t off,
		       const char *why)
{
	struct lseen *s = arg;
	(void)file;
	(void)off;
	(void)why;
	s->corrupt++;
	s->whole_shard += p < 0;
}

static struct lseen lscan(const uint8_t *seg, size_t size, bool is_last,
			  bool repair, int *rc)
{
	struct lseen s = {0};
	struct wal_recovery rec = {.record = ls_record, .corrupt = ls_corrupt,
				   .lost = ls_lost, .repair_from_peers = repair,
				   .arg = &s};
	uint64_t tail;
	uint32_t mb;
	*rc = wal_scan_buffer(seg, size, "seg", is_last, &rec, &tail, &mb);
	return s;
}

/* The records seen are exactly the plan's without `skip`, in order. */
static void assert_all_but(const struct lseen *s, const struct lrec *r,
			   int skip)
{
	int k = 0;
	for (int i = 0; i < LS_NREC; i++) {
		if (i == skip)
			continue;
		cr_assert_lt(k, s->n);
		cr_assert_eq(s->part[k], r[i].part, "record %d", i);
		cr_assert_eq(s->index[k], r[i].index, "record %d", i);
		k++;
	}
	cr_assert_eq(s->n, k, "%d records seen, %d expected", s->n, k);
}

/* A flipped bit in a record header in the middle of a batch (its
 * partition, its index, or its length: then only the step-by-step scan
 * finds the next record): replicated, the scan hands over exactly that
 * record's byte range and reads every other record; a single node (or a
 * caller that refuses the loss) reports the shard corrupt, as before. */
Test(wal, damaged_record_header_in_a_batch_resyncs_to_the_next_record)
{
	static uint8_t seg[4 * WAL_BLOCK];
	struct lrec r[LS_NREC];
	const uint64_t fields[] = {24, 40, 4, 48}; /* partition, index, length, csum */
	for (unsigned f = 0; f < sizeof fields / sizeof *fields; f++) {
		for (int last = 0; last < 2; last++) {
			lseg_build(seg, sizeof seg, !last, r);
			seg[r[1].off + fields[f]] ^= 0x04;
			int rc;
			struct lseen s = lscan(seg, sizeof seg, last, true, &rc);
			cr_assert_eq(rc, 0, "field %llu", (unsigned long long)fields[f]);
			cr_assert_eq(s.corrupt, 0);
			cr_assert_eq(s.lost, 1);
			cr_assert_eq(s.lost_off, r[1].off);
			cr_assert_eq(s.lost_end, r[2].off, "field %llu: %llu",
				     (unsigned long long)fields[f],
				     (unsigned long long)s.lost_end);
			assert_all_but(&s, r, 1);
			/* without repair_from_peers: the shard, as before */
			s = lscan(seg, sizeof seg, last, false, &rc);
			cr_assert_eq(rc, -PARLEY_ECORRUPT);
			cr_assert_eq(s.lost, 0);
			cr_assert_geq(s.whole_shard, 1);
			/* the caller refuses the loss: the same */
			struct lseen t = {.lost_answer = 1};
			struct wal_recovery rec = {.record = ls_record,
						   .corrupt = ls_corrupt,
						   .lost = ls_lost,
						   .repair_from_peers = true,
						   .arg = &t};
			uint64_t tail;
			uint32_t mb;
			cr_assert_eq(wal_scan_buffer(seg, sizeof seg, "seg", last,
						     &rec, &tail, &mb),
				     -PARLEY_ECORRUPT);
			cr_assert_eq(t.lost, 1);
			cr_assert_geq(t.whole_shard, 1);
		}
	}
}

/* The first record of the segment (it starts batch 1): the scan goes on
 * with the rest of its batch. The first record of batch 2: likewise. The
 * last record of batch 1 (the scan skips its padding to batch 2). */
Test(wal, damaged_record_header_first_or_last_of_a_batch_resyncs)
{
	static uint8_t seg[4 * WAL_BLOCK];
	struct lrec r[LS_NREC];
	const int which[] = {0, 4, 3};
	const int next[] = {1, 5, 4};
	for (int k = 0; k < 3; k++) {
		for (int len = 0; len < 2; len++) {
			lseg_build(seg, sizeof seg, true, r);
			seg[r[which[k]].off + (len ? 5 : 41)] ^= 0x80;
			int rc;
			struct lseen s = lscan(seg, sizeof seg, false, true, &rc);
			cr_assert_eq(rc, 0, "record %d", which[k]);
			cr_assert_eq(s.corrupt, 0, "record %d", which[k]);
			cr_assert_eq(s.lost, 1);
			cr_assert_eq(s.lost_off, r[which[k]].off);
			cr_assert_eq(s.lost_end, r[next[k]].off, "record %d len %d: "
				     "%llu", which[k], len,
				     (unsigned long long)s.lost_end);
			assert_all_but(&s, r, which[k]);
		}
	}
}

/* The last record of a segment that is not the last: the seal after it is
 * found. The seal itself damaged (nothing valid after it): the rest of the
 * file is the lost range and the missing seal is not corruption. In the
 * last segment with nothing after the damaged record it is a torn tail,
 * never a loss (unsynced data). */
Test(wal, damaged_record_header_at_the_end_of_a_segment)
{
	static uint8_t seg[4 * WAL_BLOCK];
	struct lrec r[LS_NREC];
	uint64_t seal = lseg_build(seg, sizeof seg, true, r) - WAL_REC_HDR;
	seg[r[5].off + 30] ^= 0x01; /* reserved, under the header checksum */
	int rc;
	struct lseen s = lscan(seg, sizeof seg, false, true, &rc);
	cr_assert_eq(rc, 0);
	cr_assert_eq(s.corrupt, 0);
	cr_assert_eq(s.lost, 1);
	cr_assert_eq(s.lost_end, seal);
	assert_all_but(&s, r, 5);

	lseg_build(seg, sizeof seg, true, r);
	seg[seal + 2] ^= 0x01; /* the seal's magic */
	s = lscan(seg, sizeof seg, false, true, &rc);
	cr_assert_eq(rc, 0);
	cr_assert_eq(s.corrupt, 0);
	cr_assert_eq(s.lost, 1);
	cr_assert_eq(s.lost_off, seal);
	cr_assert_eq(s.lost_end, sizeof seg);
	assert_all_but(&s, r, -1);
	/* a single node: corrupt, as before */
	s = lscan(seg, sizeof seg, false, false, &rc);
	cr_assert_eq(rc, -PARLEY_ECORRUPT);

	lseg_build(seg, sizeof seg, false, r);
	seg[r[5].off + 41] ^= 0x01;
	s = lscan(seg, sizeof seg, true, true, &rc);
	cr_assert_eq(rc, 0);
	cr_assert_eq(s.lost, 0, "a torn tail is not a loss");
	cr_assert_eq(s.corrupt, 0);
	assert_all_but(&s, r, 5);
}

/* Stale records are never resynced to: after the damaged record, a record
 * of another segment (a recycled spare's) and one of an older batch of
 * this segment sit where the scan looks first; it goes on to the real
 * next record. */
Test(wal, damaged_record_header_resync_skips_stale_records)
{
	static uint8_t seg[4 * WAL_BLOCK];
	struct lrec r[LS_NREC];
	lseg_build(seg, sizeof seg, true, r);
	/* record 2 (batch 1) becomes a record of segment 4, record 3 one of
	 * batch 0: neither continues the log */
	uint8_t body[64];
	memset(body, 'z', sizeof body);
	wal_encode_record(seg + r[2].off, LS_SEQ - 1, 1, WAL_BLOCK, 0, 1, 1, 2,
			  body, r[2].len);
	wal_encode_record(seg + r[3].off, LS_SEQ, 0, WAL_BLOCK, 2, 1, 1, 1,
			  body, r[3].len);
	seg[r[1].off + 24] ^= 0x10;
	int rc;
	struct lseen s = lscan(seg, sizeof seg, false, true, &rc);
	cr_assert_eq(rc, 0);
	cr_assert_eq(s.lost, 1);
	cr_assert_eq(s.lost_off, r[1].off);
	cr_assert_eq(s.lost_end, r[4].off, "%llu", (unsigned long long)s.lost_end);
	cr_assert_eq(s.n, 3);
	cr_assert_eq(s.part[0], 0);
	cr_assert_eq(s.part[1], 1);
	cr_assert_eq(s.index[1], 2);
}

/* ---- the gap per partition after a damaged record header (engine) ------- */

static void no_send(void *arg, const struct raft_msg *m, uint32_t n)
{
	(void)arg;
	(void)m;
	(void)n;
}

/*
 * Shard 0's WAL written by hand, one record header damaged (p0's index 3),
 * opened as node 1 of a 3-voter cluster that never hears from the others
 * (no leader: nothing is applied, the recovered logs stay as they are):
 *
 *   batch 1: p0:1 p0:2 p1:1 p2:1 [p0:3 damaged] p0:4 p1:2(term 2) p3:1
 *   batch 2: p3:2
 *
 * p0's record 4 follows its entry 2 of the same term: a gap, 3 becomes a
 * damaged entry (log ends at 4). p1's record 2 is of another term than
 * its entry 1: discarded, its log ends at 1 (a cut). p2 has nothing after
 * the damage: it keeps 1. p3's first record joins at the start of its log.
 * Every partition counts one damaged record (it starts lost), p0 one more
 * (the gap's entry). A single node refuses the shard as before.
 */
Test(wal, damaged_record_header_gap_per_partition)
{
	pe_close(eng);
	eng = NULL;
	static uint8_t seg[3 * WAL_BLOCK];
	memset(seg, 0, sizeof seg);
	wal_encode_seg_header(seg, 1, SEG);
	static const struct {
		uint32_t part;
		uint64_t term, index;
	} recs[] = {{0, 1, 1}, {0, 1, 2}, {1, 1, 1}, {2, 1, 1}, {0, 1, 3},
		    {0, 1, 4}, {1, 2, 2}, {3, 1, 1}, {3, 1, 2}};
	uint64_t off = WAL_BLOCK, damaged = 0;
	for (unsigned i = 0; i < sizeof recs / sizeof *recs; i++) {
		bool b2 = i == 8;
		if (b2)
			off = 2 * WAL_BLOCK;
		wal_encode_record(seg + off, 1, b2 ? 2 : 1,
				  b2 ? 2 * WAL_BLOCK : WAL_BLOCK, recs[i].part,
				  3 /* CMD_NOOP */, recs[i].term, recs[i].index,
				  NULL, 0);
		if (i == 4)
			damaged = off;
		off += WAL_REC_HDR;
	}
	seg[damaged + 24] ^= 0x01; /* its partition: header checksum fails */
	io->ops->unlink(io, HWM);
	io->ops->unlink(io, "/data/wal/0/HARDSTATE");
	for (int k = 2; k < 4; k++) {
		char p[64];
		snprintf(p, sizeof p, "/data/wal/0/wal-%016x.log", k);
		io->ops->unlink(io, p);
	}
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, WAL1, PIO_CREATE, &f), 0);
	cr_assert_eq(io->ops->truncate(io, f, SEG), 0);
	cr_assert_eq(io->ops->pwrite(io, f, seg, sizeof seg, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);

	uint64_t voters[3] = {1, 2, 3};
	struct pe_cluster c = {.node_id = 1, .voters = voters, .nvoters = 3,
			       .election_ticks = 10, .heartbeat_ticks = 2,
			       .send = no_send};
	struct pe_options o = opts();
	o.cluster = &c;
	cr_assert_eq(pe_open(&o, &eng), 0);
	const uint64_t want_last[4] = {4, 1, 1, 2};
	const uint64_t want_found[4] = {2, 1, 1, 1};
	for (uint32_t p = 0; p < 4; p++) {
		struct pe_raft_status st;
		cr_assert_eq(pe_raft_status(eng, p, &st), 0);
		cr_assert(!corrupt(p), "partition %u", p);
		cr_assert_eq(st.last_index, want_last[p], "partition %u: last %llu",
			     p, (unsigned long long)st.last_index);
		cr_assert_eq(st.damaged_found, want_found[p], "partition %u: found "
			     "%llu", p, (unsigned long long)st.damaged_found);
		cr_assert_eq(st.damaged_repaired, 0);
	}
	/* reopened: the same (the log end markers agree with it) */
	pe_close(eng);
	cr_assert_eq(pe_open(&o, &eng), 0);
	for (uint32_t p = 0; p < 4; p++) {
		struct pe_raft_status st;
		cr_assert_eq(pe_raft_status(eng, p, &st), 0);
		cr_assert_eq(st.last_index, want_last[p], "partition %u: last %llu",
			     p, (unsigned long long)st.last_index);
	}
	/* a single node: the shard's partitions are corrupt, as before */
	pe_close(eng);
	eng = NULL;
	reopen_ro(true);
	for (uint32_t p = 0; p < 4; p++)
		cr_assert(corrupt(p), "partition %u", p);
}

/* ---- the roll takes the prepared segment: no second preparation of it ------ */

/*
 * The prep thread prepares segment next_want ahead of the roll; the roll
 * (wal_submit, shard thread) takes it and asks for the one after. If the
 * prep thread ran between the two, it saw the old next_want with no
 * prepared file and prepared that seq again: a spare renamed over the
 * segment just made active (whose records then went to an unlinked file),
 * and that spare later used as the segment after it under the wrong name
 * (so that segment's own file never existed, and releasing it found
 * ENOENT). Here the WAL is stepped (wal_exec) and the prep work is run at
 * exactly that point: from the close of the old segment inside the roll.
 */
static struct {
	struct pio io; /* over pio_pass_in (the test's io_mem) */
	struct wal *w;
	bool armed;    /* a wal_submit is running */
	int steps;     /* prep units run from inside a roll */
	uint64_t now;
} R;

static void roll_close(struct pio *p, struct pio_file *f)
{
	(void)p;
	pio_pass_in->ops->close(pio_pass_in, f);
	if (!R.armed)
		return;
	R.armed = false; /* the prep work closes files too */
	while (wal_prep_step(R.w))
		R.steps++;
	R.armed = true;
}

static uint64_t roll_now(void *arg)
{
	(void)arg;
	return R.now += 1000000u;
}

struct roll_seen {
	uint64_t n, max_index;
	bool dup;
	int corrupt;
	char why[256];
};

static int roll_record(void *arg, const struct wal_rec *r)
{
	struct roll_seen *s = arg;
	s->dup |= r->index <= s->max_index;
	s->max_index = PARLEY_MAX(s->max_index, r->index);
	s->n++;
	return 0;
}

static void roll_corrupt(void *arg, int64_t p, const char *file, uint64_t off,
			 const char *why)
{
	struct roll_seen *s = arg;
	if (!s->corrupt++)
		snprintf(s->why, sizeof s->why, "partition %lld %s offset %llu: %s",
			 (long long)p, file, (unsigned long long)off, why);
}

static int roll_noop(void *arg, const struct wal_rec *r)
{
	(void)arg;
	(void)r;
	return 0;
}

Test(wal, roll_does_not_prepare_the_taken_segment_again)
{
	static struct pio_ops ops;
	ops = pio_pass_ops;
	ops.close = roll_close;
	memset(&R, 0, sizeof R);
	R.io.ops = &ops;
	pio_pass_in = io;
	const char *dir = "/roll";
	struct roll_seen s = {0};
	struct wal_recovery rec = {.record = roll_record,
				   .corrupt = roll_corrupt, .arg = &s};
	struct wal_exec ex = {.now_ns = roll_now};
	cr_assert_eq(wal_open(&R.io, dir, SEG, false, &rec, &ex, &R.w), 0);
	while (wal_prep_step(R.w))
		; /* segment 2 prepared ahead */
	struct pio_ring *ring;
	cr_assert_eq(io->ops->ring_new(io, 8, &ring), 0);
	wal_set_ring(R.w, ring);
	/* 512 KiB records, two a batch: a 16 MiB segment seals after ~8 */
	const uint32_t len = 512u << 10;
	uint64_t index = 0;
	struct wal_stats st;
	for (;;) {
		wal_get_stats(R.w, &st);
		if (st.segments >= 5)
			break;
		for (int k = 0; k < 2; k++) {
			uint8_t *b = wal_reserve(R.w, len);
			cr_assert_not_null(b);
			memset(b, (int)(index & 0xff), len);
			wal_commit_rec(R.w, 0, 1, 1, ++index);
		}
		int rc;
		for (;;) {
			R.armed = true;
			rc = wal_submit(R.w, ring, 1);
			R.armed = false;
			if (rc != -EAGAIN)
				break;
			cr_assert(wal_prep_step(R.w), "a roll waits, no prep work");
		}
		cr_assert_eq(rc, 0, "submit: %d", rc);
		int done = 0;
		while (!done) {
			struct pio_cqe c[4];
			int n = io->ops->ring_wait(ring, c, 4, -1);
			cr_assert_geq(n, 0);
			for (int i = 0; i < n && !done; i++) {
				done = wal_on_cqe(R.w, c[i].user_data, c[i].res);
				cr_assert_geq(done, 0);
			}
		}
		cr_assert_eq(wal_for_each_durable(R.w, roll_noop, NULL), 0);
	}
	cr_assert_gt(R.steps, 0, "no prep work ran inside a roll");
	cr_assert_eq(wal_mark_clean(R.w), 0);
	wal_close(R.w);
	io->ops->ring_free(ring);
	/* every segment the WAL rolled into has its own file */
	for (uint64_t seq = 1; seq <= st.segments; seq++) {
		char path[64];
		snprintf(path, sizeof path, "%s/wal-%016llx.log", dir,
			 (unsigned long long)seq);
		cr_assert_geq(pio_mem_file_size(io, path), 0, "%s missing", path);
	}
	/* and every record is read back, once, nothing reported */
	memset(&s, 0, sizeof s);
	struct wal *w2 = NULL;
	cr_assert_eq(wal_open(io, dir, SEG, true, &rec, NULL, &w2), 0);
	wal_close(w2);
	cr_assert_eq(s.corrupt, 0, "%d reported, the first: %s", s.corrupt, s.why);
	cr_assert(!s.dup);
	cr_assert_eq(s.n, index, "%llu of %llu records read back",
		     (unsigned long long)s.n, (unsigned long long)index);
}

/* ---- two batches in flight (wal.h invariant 3) ---------------------------------- */

/* The WAL driven directly on the in-memory backend, in a directory of its
 * own: batches built and submitted by the test, completions fed by hand
 * (so their order is the test's), the crash image made by damaging the
 * durable bytes of one batch (what a power loss with two batches in flight
 * may leave: the later one complete, the earlier one torn). */
#define PW_DIR "/pw/wal"
#define PW_SEG PW_DIR "/wal-0000000000000001.log"
#define PW_UD 1u

struct pw_seen {
	uint64_t idx[64];
	int n, corrupt;
};

static int pw_record(void *arg, const struct wal_rec *r)
{
	struct pw_seen *s = arg;
	cr_assert_lt(s->n, 64);
	s->idx[s->n++] = r->index;
	return 0;
}

static void pw_corrupt(void *arg, int64_t p, const char *file, uint64_t off,
		       const char *why)
{
	(void)p;
	(void)file;
	(void)off;
	(void)why;
	((struct pw_seen *)arg)->corrupt++;
}

static struct wal *pw_open(struct pw_seen *s)
{
	memset(s, 0, sizeof *s);
	struct wal_recovery rec = {.record = pw_record, .corrupt = pw_corrupt,
				   .arg = s};
	struct wal *w = NULL;
	cr_assert_eq(wal_open(io, PW_DIR, SEG, false, &rec, NULL, &w), 0);
	return w;
}

/* n records of partition 0, log indexes first.., bodies of `len` bytes */
static void pw_fill(struct wal *w, uint64_t first, int n, uint32_t len)
{
	for (int i = 0; i < n; i++) {
		uint8_t *b = wal_reserve(w, len);
		cr_assert_not_null(b);
		memset(b, (int)(first + (uint64_t)i), len);
		wal_commit_rec(w, 0, 1, 1, first + (uint64_t)i);
	}
}

static int no_rec(void *arg, const struct wal_rec *r)
{
	(void)arg;
	(void)r;
	return 0;
}

/* Runs the ring until it has `want` completions; returns them in cq. */
static int pw_reap(struct pio_ring *ring, struct pio_cqe *cq, int want)
{
	int n = 0;
	for (int spins = 0; n < want && spins < 100; spins++) {
		int k = io->ops->ring_wait(ring, cq + n, want - n, 0);
		cr_assert_geq(k, 0);
		n += k;
	}
	cr_assert_eq(n, want);
	return n;
}

/* Feeds completions; returns how many batches became durable (taken). */
static int pw_feed(struct wal *w, const struct pio_cqe *cq, int n)
{
	int durable = 0;
	for (int i = 0; i < n; i++) {
		int k = wal_on_cqe(w, cq[i].user_data, cq[i].res);
		cr_assert_geq(k, 0);
		for (int j = 0; j < k; j++)
			cr_assert_eq(wal_for_each_durable(w, no_rec, NULL), 0);
		durable += k;
	}
	return durable;
}

static void pw_mkdir(void)
{
	cr_assert_eq(io->ops->mkdir(io, "/pw"), 0);
}

static bool pw_seen_has(const struct pw_seen *s, uint64_t idx)
{
	for (int i = 0; i < s->n; i++)
		if (s->idx[i] == idx)
			return true;
	return false;
}

/* A batch submitted while the one before it is in flight: their
 * completions may come in any order, but the later one counts durable only
 * with (after) the earlier one. After a crash that tore the earlier one
 * and kept the later one whole, recovery keeps the acknowledged batches
 * and the earlier batch's records before the tear, and neither the torn
 * record nor anything of the later batch, without calling it corruption;
 * the later batch's leftovers are zeroed, so a shorter batch written next,
 * torn in its turn by the next crash, is again a torn tail (not a bad
 * record followed by a stray later batch). */
Test(wal, pipelined_batch_after_a_torn_one_is_dropped_not_corruption)
{
	pw_mkdir();
	struct pw_seen s;
	struct wal *w = pw_open(&s);
	struct pio_ring *ring;
	cr_assert_eq(io->ops->ring_new(io, 16, &ring), 0);
	wal_set_ring(w, ring);
	struct pio_cqe cq[8];

	/* A: acknowledged (indexes 1..3), block 1 */
	pw_fill(w, 1, 3, 100);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	/* two completions a batch: write + fdatasync (direct-link, the
	 * default commit) */
	cr_assert_eq(pw_feed(w, cq, pw_reap(ring, cq, 2)), 1);

	/* P (4..6, 3 records of 4096 bytes each: blocks 2..4) and B (7..9)
	 * submitted behind it while P is in flight */
	pw_fill(w, 4, 3, 4096 - WAL_REC_HDR);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	cr_assert(!wal_busy(w), "a second batch may go while one syncs");
	pw_fill(w, 7, 3, 4096 - WAL_REC_HDR);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	cr_assert(wal_busy(w), "at most WAL_FLIGHT_MAX in flight");
	struct wal_stats st;
	wal_get_stats(w, &st);
	cr_assert_eq(st.piped, 1);
	int n = pw_reap(ring, cq, 4);
	/* B's completions first: B is not durable before P */
	struct pio_cqe order[4];
	int k = 0;
	for (int i = 0; i < n; i++)
		if (cq[i].user_data != cq[0].user_data)
			order[k++] = cq[i];
	for (int i = 0; i < n; i++)
		if (cq[i].user_data == cq[0].user_data)
			order[k++] = cq[i];
	cr_assert_eq(pw_feed(w, order, 2), 0, "B alone is not durable");
	cr_assert_eq(pw_feed(w, order + 2, 1), 0);
	cr_assert_eq(wal_on_cqe(w, order[3].user_data, order[3].res), 2,
		     "P's last completion makes P and B durable, in order");
	cr_assert_eq(wal_for_each_durable(w, no_rec, NULL), 0);
	cr_assert_eq(wal_for_each_durable(w, no_rec, NULL), 0);
	cr_assert(!wal_in_flight(w));
	wal_close(w); /* no clean mark: as after kill -9 */
	io->ops->ring_free(ring);

	/* the crash image: P's third record (block 4) torn, B whole */
	flip_bit(PW_SEG, 4 * WAL_BLOCK + WAL_REC_HDR + 100, 3);
	w = pw_open(&s);
	cr_assert_eq(s.corrupt, 0, "a torn batch and the batch behind it");
	for (uint64_t i = 1; i <= 5; i++)
		cr_assert(pw_seen_has(&s, i), "index %llu kept",
			  (unsigned long long)i);
	for (uint64_t i = 6; i <= 9; i++)
		cr_assert(!pw_seen_has(&s, i), "index %llu dropped",
			  (unsigned long long)i);
	/* B's blocks (5..7) zeroed */
	struct pio_file *f;
	uint8_t blk[WAL_BLOCK], zero[WAL_BLOCK] = {0};
	cr_assert_eq(io->ops->open(io, PW_SEG, 0, &f), 0);
	for (uint64_t b = 5; b <= 7; b++) {
		cr_assert_eq(io->ops->pread(io, f, blk, WAL_BLOCK, b * WAL_BLOCK),
			     WAL_BLOCK);
		cr_assert(!memcmp(blk, zero, WAL_BLOCK), "block %llu",
			  (unsigned long long)b);
	}
	io->ops->close(io, f);

	/* C: one short batch at block 4 (where P tore), then torn itself */
	cr_assert_eq(io->ops->ring_new(io, 16, &ring), 0);
	wal_set_ring(w, ring);
	pw_fill(w, 6, 2, 100);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	n = pw_reap(ring, cq, 2);
	cr_assert_eq(pw_feed(w, cq, n), 1);
	wal_close(w);
	io->ops->ring_free(ring);
	flip_bit(PW_SEG, 4 * WAL_BLOCK + 2 * WAL_REC_HDR + 104 + 10, 1);
	w = pw_open(&s);
	cr_assert_eq(s.corrupt, 0, "C's tear is a torn tail");
	cr_assert(pw_seen_has(&s, 6) && !pw_seen_has(&s, 7));
	wal_close(w);
}

/* The same damage to a batch that was durable before the next one was
 * submitted (nothing names it as in flight): acknowledged records were
 * damaged, which is corruption, never dropped as a torn tail. */
Test(wal, damage_before_a_batch_not_pipelined_is_corruption)
{
	pw_mkdir();
	struct pw_seen s;
	struct wal *w = pw_open(&s);
	struct pio_ring *ring;
	cr_assert_eq(io->ops->ring_new(io, 16, &ring), 0);
	wal_set_ring(w, ring);
	struct pio_cqe cq[8];
	pw_fill(w, 1, 3, 100);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	cr_assert_eq(pw_feed(w, cq, pw_reap(ring, cq, 2)), 1);
	pw_fill(w, 4, 3, 4096 - WAL_REC_HDR);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	cr_assert_eq(pw_feed(w, cq, pw_reap(ring, cq, 2)), 1);
	pw_fill(w, 7, 3, 4096 - WAL_REC_HDR);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	cr_assert_eq(pw_feed(w, cq, pw_reap(ring, cq, 2)), 1);
	struct wal_stats st;
	wal_get_stats(w, &st);
	cr_assert_eq(st.piped, 0);
	wal_close(w);
	io->ops->ring_free(ring);
	flip_bit(PW_SEG, 4 * WAL_BLOCK + WAL_REC_HDR + 100, 3);
	w = pw_open(&s);
	cr_assert_gt(s.corrupt, 0, "damage under a later, durable batch");
	wal_close(w);
}

/* Group commit under load: behind a batch of more than WAL_PIPE_MAX_RECS
 * records the next one waits for it (wal_busy); behind a small one it may
 * go at once; never more than WAL_FLIGHT_MAX. */
Test(wal, second_batch_goes_only_behind_a_small_one)
{
	pw_mkdir();
	struct pw_seen s;
	struct wal *w = pw_open(&s);
	struct pio_ring *ring;
	cr_assert_eq(io->ops->ring_new(io, 16, &ring), 0);
	wal_set_ring(w, ring);
	struct pio_cqe cq[8];
	pw_fill(w, 1, WAL_PIPE_MAX_RECS + 1, 100);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	cr_assert(wal_busy(w), "behind a big batch");
	cr_assert_eq(pw_feed(w, cq, pw_reap(ring, cq, 2)), 1);
	cr_assert(!wal_busy(w));
	pw_fill(w, 20, WAL_PIPE_MAX_RECS, 100);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	cr_assert(!wal_busy(w), "behind a small batch");
	pw_fill(w, 40, 1, 100);
	cr_assert_eq(wal_submit(w, ring, PW_UD), 0);
	cr_assert(wal_busy(w), "WAL_FLIGHT_MAX in flight");
	cr_assert_eq(pw_feed(w, cq, pw_reap(ring, cq, 4)), 2);
	cr_assert(!wal_busy(w) && !wal_in_flight(w));
	wal_close(w);
	io->ops->ring_free(ring);
	w = pw_open(&s);
	cr_assert_eq(s.corrupt, 0);
	cr_assert_eq(s.n, (int)(2 * WAL_PIPE_MAX_RECS + 2));
	wal_close(w);
}
