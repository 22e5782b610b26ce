/*
 * test_step.c — stepped execution (engine/step.c): an engine with no thread
 * of its own, whose units of work run in the order the stepper picks.
 *
 * Same calls and same picks give the same engine, bit for bit; and, because
 * the order of work is the test's to choose, races between a shard and the
 * history workers can be set up exactly: here, appends and a delete that
 * apply while a flush job is in flight (its memtable frozen, the worker
 * held back), which used to lose the stream's last seq at the next
 * restart (the engine simulator's seed 100017). Nothing stepped, a
 * shard's request queue stays full: node liveness (pe_raft_node_down /
 * _up) still gets through it.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

static struct pio *io;
static struct pe_engine *eng;
static uint64_t now_ms = 1700000000000ull;
static struct parley_rng prng;
static bool hold_flush; /* the flush worker's unit is never picked */

static uint32_t pick(void *arg, uint32_t n)
{
	(void)arg;
	for (;;) {
		uint32_t u = (uint32_t)parley_rng_below(&prng, n);
		/* units: nshards shard rounds, nshards WAL preps, then the
		 * history workers (HW_FLUSH first) */
		if (hold_flush && u == n - HW_COUNT + HW_FLUSH)
			continue;
		return u;
	}
}

static uint64_t now_ns(void *arg)
{
	(void)arg;
	return now_ms * 1000000ull;
}

static uint64_t clock_ms(void *arg)
{
	(void)arg;
	return now_ms;
}

static struct pe_options opts(void)
{
	struct pe_options o = {0};
	o.dir = "/data";
	o.partitions = 1;
	o.shards = 1;
	o.io = io;
	o.no_auto_flush = true;
	o.no_auto_compact = true;
	o.clock_ms = clock_ms;
	return o;
}

static void open_stepped(void)
{
	struct pe_options o = opts();
	struct pe_stepper st = {.pick = pick, .now_ns = now_ns};
	cr_assert_eq(pe_open_stepped(&o, &st, &eng), 0);
}

static void setup(void)
{
	io = pio_mem_new(11);
	cr_assert_not_null(io);
	prng.s = 42;
	hold_flush = false;
	open_stepped();
}

static void teardown(void)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	pio_free(io);
}

TestSuite(step, .init = setup, .fini = teardown);

static void append(const char *key, int n)
{
	for (int i = 0; i < n; i++) {
		char buf[64];
		int l = snprintf(buf, sizeof buf, "%s %d", key, i);
		struct pe_input in = {.type = 1, .len = (uint32_t)l, .payload = buf};
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
		now_ms += 3;
	}
}

static struct pe_meta meta(const char *key)
{
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, key, strlen(key), &m), 0);
	return m;
}

static void flush_cb(void *arg)
{
	*(bool *)arg = true;
}

static bool is_true(void *arg)
{
	return *(bool *)arg;
}

/* A flush requested without waiting for it (what the shard does on its
 * own when a memtable fills): its job waits at the worker while hold_flush
 * is set. */
static void flush_start(bool *done, int *rc)
{
	struct req *r = calloc(1, sizeof *r);
	cr_assert_not_null(r);
	r->kind = REQ_FLUSH;
	r->part = 0;
	r->out = rc;
	r->cb.generic = flush_cb;
	r->arg = done;
	cr_assert_eq(shard_push(eng, r), 0);
}

/* The stream's seqs are decided once and for all: appends and a delete
 * that apply while a flush is in flight (after its freeze) must leave the
 * same last seq after the flush commits, after the next flush, and after a
 * restart. The flush's commit used to drop the deleted entries it had not
 * written from the memtable; the next flush then moved the flushed index
 * past them without any segment holding them, so the restart rebuilt the
 * stream's last seq from the segments: 15 instead of 18 (and the next
 * append reused seq 16). */
Test(step, delete_during_a_flush_keeps_the_last_seq)
{
	append("s/a", 15);
	append("s/b", 2);
	hold_flush = true;
	bool done = false;
	int rc = -1;
	flush_start(&done, &rc);
	for (int i = 0; i < 200; i++) /* the freeze happens; the job waits */
		(void)pe_step(eng);
	cr_assert(!done);
	append("s/a", 3); /* seqs 16..18, not in the frozen memtable */
	struct pe_delete_result d;
	cr_assert_eq(pe_delete_sync(eng, "s/a", 3, UINT64_MAX, &d), 0);
	cr_assert_eq(d.first_seq, 19);
	cr_assert_eq(d.last_seq, 18);
	hold_flush = false;
	pe_step_until(eng, is_true, &done);
	cr_assert_eq(rc, 0);
	cr_assert_eq(meta("s/a").last_seq, 18);
	cr_assert_eq(pe_flush_sync(eng, 0), 0); /* the rest: WAL not needed */
	cr_assert_eq(meta("s/a").last_seq, 18);
	pe_close(eng);
	open_stepped();
	struct pe_meta m = meta("s/a");
	cr_assert_eq(m.last_seq, 18, "last_seq %llu after the restart",
		     (unsigned long long)m.last_seq);
	cr_assert_eq(m.first_seq, 19);
	append("s/a", 1);
	cr_assert_eq(meta("s/a").last_seq, 19);
	cr_assert_eq(meta("s/b").last_seq, 2);
}

/* Same calls, same picks: the same results and the same files. */
static uint64_t run_once(uint64_t seed)
{
	pe_close(eng);
	pio_free(io);
	io = pio_mem_new(11);
	prng.s = seed;
	now_ms = 1700000000000ull;
	open_stepped();
	uint64_t h = 0;
	for (int round = 0; round < 20; round++) {
		append(round % 2 ? "s/x" : "s/y", 5);
		h = parley_xxh3(&(uint64_t){meta("s/x").last_seq}, 8, h);
		if (round % 5 == 4)
			cr_assert_eq(pe_flush_sync(eng, 0), 0);
		if (round % 7 == 6) {
			pe_close(eng);
			open_stepped();
		}
	}
	struct pe_partition_status st;
	cr_assert_eq(pe_partition_status(eng, 0, &st), 0);
	h = parley_xxh3(&st.last_index, 8, h);
	h = parley_xxh3(&st.flushed_index, 8, h);
	h = parley_xxh3(&st.segment_bytes, 8, h);
	return h;
}

Test(step, same_picks_same_run)
{
	uint64_t a = run_once(5), b = run_once(5);
	cr_assert_eq(a, b);
}

/* A restart rebuilds the idempotency table as of the flushed index and
 * replays the WAL above it; the stream must come back as it was: a
 * retry of a deleted entry's id (a duplicate when it applied), then the
 * live clock past the window and a compaction that purges the deleted
 * entry. (Written for the compaction's idempotency clock, see
 * part_compact_start; this sequence passes on the older code too: the
 * simulator's seeds 100016 and 100019 are what showed that bug.) */
Test(step, replayed_retry_of_a_purged_id_stays_a_duplicate)
{
	pe_close(eng);
	struct pe_options o = opts();
	o.idem_window_ms = 60000;
	struct pe_stepper st = {.pick = pick, .now_ns = now_ns};
	cr_assert_eq(pe_open_stepped(&o, &st, &eng), 0);
	uint8_t prod[PE_PRODUCER_LEN] = {7};
	struct pe_input in = {.type = 1, .len = 5, .payload = "first"};
	struct pe_append_req q = {.key = "s/a", .klen = 3,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	memcpy(q.producer, prod, sizeof prod);
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert_eq(r.seq, 1);
	cr_assert_eq(pe_flush_sync(eng, 0), 0);
	append("s/b", 1);
	cr_assert_eq(pe_flush_sync(eng, 0), 0); /* two segments to merge */
	struct pe_delete_result d;
	cr_assert_eq(pe_delete_sync(eng, "s/a", 3, 1, &d), 0);
	now_ms += 50000; /* inside the window: the retry is a duplicate */
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert(r.duplicate);
	cr_assert_eq(r.seq, 1);
	append("s/a", 2); /* seqs 2 and 3 */
	now_ms += 200000; /* the live clock leaves the retry's window */
	append("s/b", 1);
	cr_assert_eq(pe_compact_sync(eng, 0, true), 0); /* purges seq 1 */
	cr_assert_eq(meta("s/a").last_seq, 3);
	pe_close(eng);
	cr_assert_eq(pe_open_stepped(&o, &st, &eng), 0);
	struct pe_meta m = meta("s/a");
	cr_assert_eq(m.last_seq, 3, "last_seq %llu after the restart",
		     (unsigned long long)m.last_seq);
}

/* ---- a ready's entries reach a live tail together ------------------------------- */

struct batch_tail {
	uint32_t calls, entries, max_count;
	uint64_t next;
	bool bad;
};

static enum pe_sub_ret batch_tail_cb(void *arg, struct pe_sub *sub,
				     const struct pe_sub_update *u)
{
	(void)sub;
	struct batch_tail *t = arg;
	if (u->event != PE_SUB_ENTRIES)
		return PE_SUB_CONTINUE;
	t->calls++;
	t->entries += u->count;
	if (u->count > t->max_count)
		t->max_count = u->count;
	for (uint32_t i = 0; i < u->count; i++)
		if (u->entries[i].seq != t->next++)
			t->bad = true;
	return PE_SUB_CONTINUE;
}

static void count_cb(void *arg, const struct pe_append_result *r)
{
	cr_assert_eq(r->err, 0);
	(*(int *)arg)++;
}

static bool all_done(void *arg)
{
	return *(int *)arg == 12;
}

/* Twelve appends to one stream, issued before the shard takes any, go
 * into one WAL batch and apply in one ready; the tail is told once, after
 * all of them applied, and gets the twelve in one callback (what lets the
 * server hand a connection one batch of EVENTs and write them at once).
 * It used to be told after each entry: twelve callbacks of one. */
Test(step, a_ready_reaches_a_live_tail_in_one_callback)
{
	struct batch_tail t = {.next = 1};
	struct pe_sub *sub;
	cr_assert_eq(pe_subscribe(eng, "u/t", 3, 1, batch_tail_cb, &t, &sub), 0);
	int done = 0;
	for (int i = 0; i < 12; i++) {
		struct pe_input in = {.type = 1, .len = 2, .payload = "ev"};
		struct pe_append_req q = {.key = "u/t", .klen = 3,
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		cr_assert_eq(pe_append(eng, &q, count_cb, &done), 0);
	}
	pe_step_until(eng, all_done, &done);
	for (int i = 0; i < 50; i++) /* the tail may run after the answers */
		(void)pe_step(eng);
	cr_assert_not(t.bad);
	cr_assert_eq(t.entries, 12);
	cr_assert_eq(t.calls, 1, "%u callbacks (largest %u entries)", t.calls,
		     t.max_count);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
}

/* ---- node liveness is not bounded by the request queue ------------------------- */

static void drop_send(void *arg, const struct raft_msg *m, uint32_t n)
{
	(void)arg;
	(void)m;
	(void)n;
}

/* A shard whose request queue is full (queue_depth, nothing stepped)
 * refuses ticks (-PARLEY_EFULL) but still takes a link-down and a
 * link-up: a lost link-up would leave the node down for its groups
 * (part->down: every message of a live leader taken as a dead one's), a
 * lost link-down a quiesced follower asleep behind a dead leader.
 * Transfers stay bounded. */
Test(step, node_liveness_gets_through_a_full_queue)
{
	pe_close(eng);
	eng = NULL;
	struct pe_options o = opts();
	o.queue_depth = 4;
	uint64_t founders[2] = {1, 2};
	struct pe_cluster c = {.node_id = 1, .voters = founders, .nvoters = 2,
			       .election_ticks = 10, .heartbeat_ticks = 2,
			       .quiesce_ticks = 10, .send = drop_send};
	o.cluster = &c;
	struct pe_stepper st = {.pick = pick, .now_ns = now_ns};
	cr_assert_eq(pe_open_stepped(&o, &st, &eng), 0);
	int rc = 0;
	for (int n = 0; n < 100 && !rc; n++)
		rc = pe_raft_tick(eng);
	cr_assert_eq(rc, -PARLEY_EFULL);
	cr_assert_eq(pe_raft_node_down(eng, 2), 0);
	cr_assert_eq(pe_raft_node_up(eng, 2), 0);
	cr_assert_eq(pe_raft_transfer(eng, 2), -PARLEY_EFULL);
	for (int i = 0; i < 1000; i++)
		(void)pe_step(eng);
	cr_assert_eq(pe_raft_tick(eng), 0);
}
