/*
 * test_noblock.c — "the shard thread never blocks on a disk", checked by
 * the engine's own counter (pe_shard_sync_io: synchronous file operations
 * the I/O backend performed on a shard thread, engine/io/io_guard.c), on
 * real files with the io_uring backend.
 *
 * One engine on a temporary directory runs what the shard thread serves:
 * appends through several WAL segment rolls, flushes, compactions (a
 * merge of everything), deletions, cold history reads (a fresh block
 * cache: pread + zstd), a tail catching up from history — and every
 * counter stays 0. The same counters are asserted for a snapshot catch-up
 * between three engines in test_part_repl.c (follower: chunk stores and
 * the install; leader: the image and its reads).
 *
 * The test can fail: with a synchronous operation put back on the shard
 * thread (say the HARDSTATE store of a vote, or a snapshot chunk's
 * pwrite + fdatasync), the counter of that operation is no longer 0.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define NPARTS 2
#define ENTRY_BYTES 8000
#define ROUNDS 3

static struct pe_engine *eng;
static char dir[64];

static void teardown(void)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	if (dir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		(void)system(cmd);
		dir[0] = '\0';
	}
}

TestSuite(noblock, .fini = teardown, .timeout = 120);

static void key_in(uint32_t part, int k, char *out, size_t cap)
{
	for (int i = 0;; i++) {
		snprintf(out, cap, "s%d-%d", k, i);
		if (pe_partition_of(eng, out, strlen(out)) == part)
			return;
	}
}

static void append_n(const char *key, int n)
{
	static char buf[ENTRY_BYTES];
	for (int i = 0; i < n; i++) {
		memset(buf, 'a' + (i % 26), sizeof buf);
		struct pe_input in = {.type = 1, .len = ENTRY_BYTES, .payload = buf};
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		int rc;
		while ((rc = pe_append_sync(eng, &q, &r)) == -PARLEY_EFULL)
			usleep(1000);
		cr_assert_eq(rc, 0, "append: %s", parley_strerror(rc));
		cr_assert_eq(r.err, 0);
	}
}

static void read_all(const char *key, uint32_t want_first, uint32_t want)
{
	uint32_t got = 0;
	uint64_t from = want_first;
	for (;;) {
		struct pe_read_req q = {.key = key, .klen = strlen(key),
					.from = from, .dir = PE_FORWARD,
					.limit = PE_MAX_READ};
		struct pe_entry *es = NULL;
		uint32_t n = 0;
		struct pe_read_result rr;
		cr_assert_eq(pe_read_sync(eng, &q, &es, &n, &rr), 0);
		cr_assert_eq(rr.err, 0);
		for (uint32_t i = 0; i < n; i++)
			cr_assert_eq(es[i].seq, want_first + got + i);
		got += n;
		if (n)
			from = es[n - 1].seq + 1;
		free(es);
		if (rr.end || !n)
			break;
	}
	cr_assert_eq(got, want, "%s: %u entries, expected %u", key, got, want);
}

static atomic_uint_fast64_t tail_next;

static enum pe_sub_ret tail_cb(void *arg, struct pe_sub *sub,
			       const struct pe_sub_update *u)
{
	(void)arg;
	(void)sub;
	if (u->event == PE_SUB_ENTRIES)
		for (uint32_t i = 0; i < u->count; i++)
			if (u->entries[i].seq == atomic_load(&tail_next))
				atomic_fetch_add(&tail_next, 1);
	return PE_SUB_CONTINUE;
}

static void assert_no_sync_io(void)
{
	uint64_t n[PE_IO_OP_COUNT];
	pe_shard_sync_io(eng, n);
	for (int k = 0; k < PE_IO_OP_COUNT; k++)
		cr_assert_eq(n[k], 0, "%llu %s call(s) on a shard thread",
			     (unsigned long long)n[k],
			     pe_io_op_name((enum pe_io_op)k));
}

static void open_engine(void)
{
	struct pe_options o = {0};
	o.dir = dir;
	o.partitions = NPARTS;
	o.shards = 1; /* every partition on one shard thread */
	o.wal_segment_bytes = 16u << 20; /* the smallest: a roll or two */
	o.no_auto_compact = true;
	o.block_cache_bytes = 1u << 20;
	int rc = pe_open(&o, &eng);
	cr_assert_eq(rc, 0, "open: %s", parley_errname(rc));
}

Test(noblock, appends_flushes_compactions_and_cold_reads_make_no_sync_io)
{
	snprintf(dir, sizeof dir, "/tmp/parley-noblock-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	open_engine();
	char a[32], b[32], c[32];
	key_in(0, 0, a, sizeof a);
	key_in(1, 1, b, sizeof b);
	key_in(0, 2, c, sizeof c);
	for (int r = 0; r < ROUNDS; r++) {
		append_n(a, 700); /* ~5.6 MB a round: ~20 MB in all, WAL rolls */
		append_n(b, 300);
		append_n(c, 100);
		for (uint32_t p = 0; p < NPARTS; p++)
			cr_assert_eq(pe_flush_sync(eng, p), 0);
	}
	for (uint32_t p = 0; p < NPARTS; p++)
		cr_assert_eq(pe_compact_sync(eng, p, true), 0);
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(eng, c, strlen(c), 50, &dr), 0);
	cr_assert_eq(dr.err, 0);
	append_n(a, 10); /* a memtable part */
	/* a new engine on the same files: a cold block cache */
	pe_close(eng);
	eng = NULL;
	open_engine();
	read_all(a, 1, 700 * ROUNDS + 10);
	read_all(b, 1, 300 * ROUNDS);
	read_all(c, 51, 100 * ROUNDS - 50);
	struct pe_sub *sub;
	atomic_store(&tail_next, 1);
	cr_assert_eq(pe_subscribe(eng, b, strlen(b), 1, tail_cb, NULL, &sub), 0);
	for (int i = 0; i < 20000 && atomic_load(&tail_next) <= 300 * ROUNDS; i++)
		usleep(1000);
	cr_assert_eq(atomic_load(&tail_next), 300 * ROUNDS + 1);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
	append_n(b, 100);
	cr_assert_eq(pe_flush_sync(eng, 1), 0);
	cr_assert_eq(pe_compact_sync(eng, 1, true), 0);
	assert_no_sync_io();
}
