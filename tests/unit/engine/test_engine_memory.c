/*
 * test_engine_memory.c — the engine's memory report (pe_memory) and the
 * global memtable bound (pe_options.memtable_total_bytes): past half of a
 * shard's share the largest memtable is flushed, until the total is back
 * under, although no single partition reaches its own flush threshold.
 * In-memory I/O backend.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define NSTREAMS 32
#define PAYLOAD 1024u
#define PER_STREAM 256 /* 32 x 256 x 1 KiB = 8 MiB over 8 partitions */

static struct pio *io;
static struct pe_engine *eng;

static void open_with(uint64_t total)
{
	io = pio_mem_new(1);
	cr_assert_not_null(io);
	struct pe_options o = {0};
	o.dir = "/data";
	o.partitions = 8;
	o.shards = 1;
	o.wal_segment_bytes = 64u << 20; /* no roll: no WAL-pin flushes */
	o.memtable_bytes = 8 * MiB;       /* a partition flushes at 4 MiB */
	o.memtable_total_bytes = total;   /* 0: no global bound */
	o.io = io;
	cr_assert_eq(pe_open(&o, &eng), 0);
}

static void close_all(void)
{
	pe_close(eng);
	eng = NULL;
	pio_free(io);
}

static void fill(void)
{
	static char payload[PAYLOAD];
	memset(payload, 'p', sizeof payload);
	for (int k = 0; k < PER_STREAM; k++)
		for (int s = 0; s < NSTREAMS; s++) {
			char key[32];
			snprintf(key, sizeof key, "c/stream-%d", s);
			struct pe_input in = {.type = 1, .len = PAYLOAD,
					      .payload = payload};
			struct pe_append_req q = {.key = key, .klen = strlen(key),
						  .expected_last_seq = PE_NO_EXPECT,
						  .entries = &in, .count = 1};
			q.producer[0] = (uint8_t)(s + 1);
			q.producer[1] = (uint8_t)k;
			q.producer[2] = (uint8_t)(k >> 8);
			struct pe_append_result r;
			cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
		}
}

static uint64_t flushes(void)
{
	uint64_t n = 0;
	for (uint32_t p = 0; p < pe_partition_count(eng); p++) {
		struct pe_partition_status st;
		cr_assert_eq(pe_partition_status(eng, p, &st), 0);
		n += st.flushes;
	}
	return n;
}

/* Waits (bounded) for the memtables to drop to `under`. */
static uint64_t memtable_settled(uint64_t under)
{
	struct pe_memory m;
	for (int i = 0; i < 2000; i++) {
		pe_memory(eng, &m);
		if (m.memtable_bytes <= under)
			break;
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	pe_memory(eng, &m);
	return m.memtable_bytes;
}

Test(engine_memory, report_counts_memtables_and_idempotency_keys)
{
	open_with(0);
	fill();
	/* the shard publishes right after running a batch's callbacks: wait
	 * (bounded) for the last one */
	struct pe_memory m;
	for (int i = 0; i < 2000; i++) {
		pe_memory(eng, &m);
		if (m.idem_keys == NSTREAMS * PER_STREAM)
			break;
		struct timespec ts = {0, 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	/* 8 MiB of payload plus per-entry overhead, nothing flushed */
	cr_assert_geq(m.memtable_bytes, NSTREAMS * PER_STREAM * PAYLOAD,
		      "memtables %llu, fullest %llu, keys %llu, flushes %llu",
		      (unsigned long long)m.memtable_bytes,
		      (unsigned long long)m.memtable_max_partition_bytes,
		      (unsigned long long)m.idem_keys,
		      (unsigned long long)flushes());
	cr_assert_leq(m.memtable_bytes, 2 * NSTREAMS * PER_STREAM * PAYLOAD);
	cr_assert_geq(m.memtable_max_partition_bytes, m.memtable_bytes / 8);
	cr_assert_eq(m.idem_keys, NSTREAMS * PER_STREAM);
	cr_assert_eq(m.idem_bytes, m.idem_keys * pe_idem_key_bytes());
	cr_assert_eq(m.queued_bytes, 0, "idle: nothing queued");
	cr_assert_eq(m.total_bytes, m.memtable_bytes + m.idem_bytes);
	cr_assert_eq(flushes(), 0, "no partition reached its own threshold");
	close_all();
}

Test(engine_memory, global_bound_flushes_the_largest_memtables)
{
	open_with(4 * MiB); /* flush pressure past 2 MiB in all */
	fill();
	uint64_t left = memtable_settled(2 * MiB);
	cr_assert_leq(left, 2 * MiB, "memtables hold %llu bytes",
		      (unsigned long long)left);
	cr_assert_gt(flushes(), 0);
	/* everything is still readable after the flushes */
	for (int s = 0; s < NSTREAMS; s++) {
		char key[32];
		snprintf(key, sizeof key, "c/stream-%d", s);
		struct pe_meta meta;
		cr_assert_eq(pe_meta_sync(eng, key, strlen(key), &meta), 0);
		cr_assert_eq(meta.last_seq, PER_STREAM);
	}
	close_all();
}
