/*
 * test_idem.c — the idempotency table across a crash: the table rebuilt
 * at open must be the one the live engine had, so that WAL replay decides
 * "duplicate or new" exactly as the first apply did and every
 * acknowledged seq stays where it was (engine/log/idem.c). One partition,
 * an injected clock, a flush so that the first records live in a history
 * segment and the rest in the WAL, then a crash and a reopen.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define T0 10000000ull
#define WINDOW 60000ull

static struct pio *io;
static struct pe_engine *eng;
static _Atomic uint64_t now_ms = T0;

static uint64_t clock_cb(void *arg)
{
	(void)arg;
	return atomic_load(&now_ms);
}

static struct pe_options opts(uint32_t max_keys)
{
	struct pe_options o = {0};
	o.dir = "/data";
	o.partitions = 1;
	o.shards = 1;
	o.wal_segment_bytes = 16u << 20;
	o.no_auto_flush = true;
	o.no_auto_compact = true;
	o.idem_window_ms = WINDOW;
	o.idem_max_keys = max_keys;
	o.clock_ms = clock_cb;
	o.io = io;
	return o;
}

static void start(uint32_t max_keys)
{
	atomic_store(&now_ms, T0);
	io = pio_mem_new(1);
	cr_assert_not_null(io);
	struct pe_options o = opts(max_keys);
	cr_assert_eq(pe_open(&o, &eng), 0);
}

static void finish(void)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	pio_free(io);
}

static void crash_and_reopen(uint32_t max_keys)
{
	pe_abort(eng);
	eng = NULL;
	pio_mem_crash(io, false);
	struct pe_options o = opts(max_keys);
	cr_assert_eq(pe_open(&o, &eng), 0);
}

static struct pe_append_result append_at(uint64_t t, const char *key,
					 const char *payload,
					 const char *producer)
{
	atomic_store(&now_ms, t);
	struct pe_input in = {.type = 1, .len = (uint32_t)strlen(payload),
			      .payload = payload};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	memcpy(q.producer, producer, strnlen(producer, 16));
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert_eq(r.err, 0);
	return r;
}

/* The stream holds exactly want[0..n) at seqs 1..n. */
static void expect_stream(const char *key, const char *const *want, uint32_t n)
{
	struct pe_entry *es = NULL;
	uint32_t got = 0;
	struct pe_read_req q = {.key = key, .klen = strlen(key), .from = 1,
				.dir = PE_FORWARD, .limit = PE_MAX_READ};
	cr_assert_eq(pe_read_sync(eng, &q, &es, &got, NULL), 0);
	cr_assert_eq(got, n, "%s: %u entries after the crash, %u acknowledged",
		     key, got, n);
	for (uint32_t i = 0; i < n; i++) {
		cr_assert_eq(es[i].seq, i + 1);
		cr_assert_eq(es[i].len, strlen(want[i]));
		cr_assert_eq(memcmp(es[i].payload, want[i], es[i].len), 0,
			     "%s seq %u is not the acknowledged entry", key, i + 1);
	}
	free(es);
}

/* A retry inside the window was a duplicate when applied; the reopen
 * happens long after the window (by the clock), which must not make the
 * replayed retry a new entry: the table is measured in command time. */
Test(idem, replay_keeps_a_duplicate_when_opened_after_the_window)
{
	start(1000);
	struct pe_append_result r = append_at(T0, "c/w", "one", "p-a");
	cr_assert_eq(r.seq, 1);
	cr_assert_eq(pe_flush_sync(eng, 0), 0); /* p-a's record: a segment */
	r = append_at(T0 + WINDOW - 1000, "c/w", "one", "p-a");
	cr_assert(r.duplicate, "inside the window: a duplicate");
	cr_assert_eq(r.seq, 1);
	r = append_at(T0 + WINDOW - 900, "c/w", "two", "p-b");
	cr_assert_eq(r.seq, 2);
	atomic_store(&now_ms, T0 + 5 * WINDOW);
	crash_and_reopen(1000);
	expect_stream("c/w", (const char *const[]){"one", "two"}, 2);
	/* and live decisions go on from the same table */
	r = append_at(T0 + 5 * WINDOW, "c/w", "three", "p-c");
	cr_assert_eq(r.seq, 3);
	finish();
}

/* The cap: the proposer's clock steps back between two appends, so their
 * timestamps are not in apply order. Whatever the live table forgot when
 * the cap was hit, the table rebuilt at open (records from the segment,
 * then the WAL replayed) must forget the same key: an acknowledged new
 * append stays new, an acknowledged duplicate stays a duplicate. */
Test(idem, replay_forgets_the_same_key_over_the_cap)
{
	start(2);
	struct pe_append_result ra = append_at(T0, "c/x", "x1", "p-a");
	cr_assert_eq(ra.seq, 1);
	struct pe_append_result rb = append_at(T0 - 500, "c/y", "y1", "p-b");
	cr_assert_eq(rb.seq, 1);
	cr_assert_eq(pe_flush_sync(eng, 0), 0);
	struct pe_append_result rc = append_at(T0 + 1, "c/z", "z1", "p-c");
	cr_assert_eq(rc.seq, 1);
	/* retries of both older keys: the cap of 2 forgot at least one */
	struct pe_append_result r1 = append_at(T0 + 2, "c/x", "x1", "p-a");
	struct pe_append_result r2 = append_at(T0 + 3, "c/y", "y1", "p-b");
	cr_assert(!r1.duplicate || !r2.duplicate);
	struct pe_append_result r3 = append_at(T0 + 4, "c/x", "x2", "p-d");
	struct pe_append_result r4 = append_at(T0 + 5, "c/y", "y2", "p-e");
	crash_and_reopen(2);
	const char *x[3] = {"x1"}, *y[3] = {"y1"};
	uint32_t nx = 1, ny = 1;
	if (!r1.duplicate)
		x[nx++] = "x1";
	if (!r2.duplicate)
		y[ny++] = "y1";
	x[nx++] = "x2";
	y[ny++] = "y2";
	cr_assert_eq(r3.seq, nx);
	cr_assert_eq(r4.seq, ny);
	expect_stream("c/x", x, nx);
	expect_stream("c/y", y, ny);
	expect_stream("c/z", (const char *const[]){"z1"}, 1);
	finish();
}

/* A compaction long after the last command (by the clock) must not drop a
 * record the live table still holds in command time: the WAL's duplicate
 * would replay as a new entry. */
Test(idem, compaction_keeps_records_the_table_still_holds)
{
	start(1000);
	struct pe_append_result r = append_at(T0, "c/w", "one", "p-a");
	cr_assert_eq(r.seq, 1);
	cr_assert_eq(pe_flush_sync(eng, 0), 0);
	r = append_at(T0 + 1, "c/v", "pad", "p-pad");
	cr_assert_eq(pe_flush_sync(eng, 0), 0); /* two segments to merge */
	r = append_at(T0 + WINDOW - 1000, "c/w", "one", "p-a");
	cr_assert(r.duplicate, "inside the window: a duplicate");
	r = append_at(T0 + WINDOW - 900, "c/w", "two", "p-b");
	cr_assert_eq(r.seq, 2);
	atomic_store(&now_ms, T0 + 5 * WINDOW);
	cr_assert_eq(pe_compact_sync(eng, 0, true), 0);
	crash_and_reopen(1000);
	expect_stream("c/w", (const char *const[]){"one", "two"}, 2);
	finish();
}
