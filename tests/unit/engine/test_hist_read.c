/*
 * test_hist_read.c — history reads on the read pool (engine/history/
 * hist_read.c), through the public API on the in-memory backend.
 *
 *   - Reads racing flushes and compactions: reader threads read a growing
 *     stream forward and backward from seeded random points while the
 *     main thread appends, flushes (entries move from the memtable into a
 *     new segment) and compacts (segments replaced, readers retired under
 *     reads in flight), hundreds of rounds, with a small block cache so
 *     reads miss. Every page must be dense (no entry missing, none twice),
 *     start where asked and carry each entry's own payload.
 *   - A full read queue (read_queue_depth 1): many reads at once all come
 *     back, each once, with their data, and every read callback runs on
 *     the shard thread (the thread that runs append callbacks).
 *   - A compaction that retires the segments of a read in flight does not
 *     free them under it (the read completes with the right entries).
 *   - Tails catching up from history (chunks read by the pool) through
 *     flushes and compactions get every entry once, in order; a tail
 *     ended while its chunk is in the pool is freed when it comes back.
 *
 * Seed: PARLEY_TEST_SEED (printed) drives the readers' choices.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define KEY "c/race"

static struct pio *io;
static struct pe_engine *eng;

static uint64_t test_seed(void)
{
	const char *s = getenv("PARLEY_TEST_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 10)
			  : (uint64_t)time(NULL) ^ (uint64_t)getpid();
	fprintf(stderr, "test_hist_read seed=%" PRIu64
		" (replay: PARLEY_TEST_SEED=%" PRIu64 ")\n", seed, seed);
	return seed;
}

static void open_engine(uint32_t read_threads, uint32_t depth)
{
	io = pio_mem_new(11);
	cr_assert_not_null(io);
	struct pe_options o = {0};
	o.dir = "/data";
	o.partitions = 1;
	o.shards = 1;
	o.wal_segment_bytes = 16u << 20;
	o.block_cache_bytes = 96u * 1024; /* a few blocks: reads miss */
	o.no_auto_flush = true;
	o.no_auto_compact = true;
	o.read_threads = read_threads;
	o.read_queue_depth = depth;
	o.io = io;
	cr_assert_eq(pe_open(&o, &eng), 0);
}

static void teardown(void)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	pio_free(io);
	io = NULL;
}

TestSuite(hist_read, .fini = teardown);

/* Entry seq's payload: its seq in text, padded to a length from the seq. */
static size_t payload_of(uint64_t seq, char *buf, size_t cap)
{
	size_t len = (size_t)snprintf(buf, cap, "seq=%" PRIu64 ";", seq);
	size_t want = 40 + (size_t)(seq * 7919 % 300);
	while (len < want && len < cap)
		buf[len++] = (char)('a' + seq % 26);
	return len;
}

static bool payload_ok(const struct pe_entry *e)
{
	char buf[512];
	size_t len = payload_of(e->seq, buf, sizeof buf);
	return e->len == len && memcmp(e->payload, buf, len) == 0;
}

static _Atomic uint64_t appended; /* last seq acknowledged */

static void append_n(int n)
{
	for (int i = 0; i < n; i++) {
		char buf[512];
		uint64_t seq = atomic_load(&appended) + 1;
		size_t len = payload_of(seq, buf, sizeof buf);
		struct pe_input in = {.type = 1, .len = (uint32_t)len, .payload = buf};
		struct pe_append_req q = {.key = KEY, .klen = strlen(KEY),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
		cr_assert_eq(r.err, 0);
		cr_assert_eq(r.last_seq, seq);
		atomic_store(&appended, seq);
	}
}

/* ---- reads racing flushes and compactions ------------------------------------------- */

struct reader {
	pthread_t t;
	uint64_t seed;
	atomic_bool *stop;
	uint64_t reads, entries, hist_pages;
	char err[256];
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	struct parley_rng rng = {rd->seed};
	while (!atomic_load(rd->stop) && !rd->err[0]) {
		uint64_t last = atomic_load(&appended);
		if (!last)
			continue;
		bool fwd = parley_rng_below(&rng, 2);
		uint32_t limit = 1 + (uint32_t)parley_rng_below(&rng, 400);
		uint64_t from = 1 + parley_rng_below(&rng, last);
		struct pe_read_req q = {.key = KEY, .klen = strlen(KEY),
					.from = from,
					.dir = fwd ? PE_FORWARD : PE_BACKWARD,
					.limit = limit};
		struct pe_entry *es;
		uint32_t n;
		struct pe_read_result rr;
		int rc = pe_read_sync(eng, &q, &es, &n, &rr);
		if (rc || rr.err) {
			snprintf(rd->err, sizeof rd->err, "read %s from %" PRIu64
				 ": rc=%d err=%d", fwd ? "fwd" : "back", from, rc,
				 rr.err);
			break;
		}
		/* the stream holds at least 1..last (appends only grow it):
		 * a page starting inside it is full up to its end */
		uint32_t want = fwd ? (uint32_t)PARLEY_MIN((uint64_t)limit,
							   rr.last_seq - from + 1)
				    : (uint32_t)PARLEY_MIN((uint64_t)limit, from);
		if (rr.last_seq < last || n != want) {
			snprintf(rd->err, sizeof rd->err, "read %s from %" PRIu64
				 " limit %u: %u entries, expected %u (last %" PRIu64
				 ", stream last %" PRIu64 ")", fwd ? "fwd" : "back",
				 from, limit, n, want, last, rr.last_seq);
		}
		for (uint32_t i = 0; i < n && !rd->err[0]; i++) {
			uint64_t expect = fwd ? from + i : from - i;
			if (es[i].seq != expect || !payload_ok(&es[i]))
				snprintf(rd->err, sizeof rd->err,
					 "read %s from %" PRIu64 ": entry %u has seq %"
					 PRIu64 " (expected %" PRIu64 ")%s",
					 fwd ? "fwd" : "back", from, i, es[i].seq,
					 expect, payload_ok(&es[i]) ? "" : ", bad payload");
		}
		free(es);
		rd->reads++;
		rd->entries += n;
	}
	return NULL;
}

Test(hist_read, reads_racing_flushes_and_compactions_see_each_entry_once,
     .timeout = 600)
{
	uint64_t seed = test_seed();
	open_engine(2, 8);
	atomic_store(&appended, 0);
	append_n(50);
	atomic_bool stop = false;
	struct reader rd[2];
	for (int i = 0; i < 2; i++) {
		memset(&rd[i], 0, sizeof rd[i]);
		rd[i].seed = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
		rd[i].stop = &stop;
		cr_assert_eq(pthread_create(&rd[i].t, NULL, reader_main, &rd[i]), 0);
	}
	const int rounds = 300;
	for (int round = 0; round < rounds; round++) {
		append_n(5 + round % 17);
		cr_assert_eq(pe_flush_sync(eng, 0), 0);
		if (round % 4 == 3)
			cr_assert_eq(pe_compact_sync(eng, 0, round % 12 == 11), 0);
		if (rd[0].err[0] || rd[1].err[0])
			break;
	}
	atomic_store(&stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(rd[i].t, NULL);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(rd[i].err[0], '\0', "reader %d: %s (seed %" PRIu64 ")",
			     i, rd[i].err, seed);
	struct pe_stage_hist st[PE_STAGE_COUNT];
	pe_stage_stats(eng, st);
	fprintf(stderr, "reads %" PRIu64 " + %" PRIu64 ", history reads %" PRIu64
		"\n", rd[0].reads, rd[1].reads, st[PE_STAGE_READ_IO].count);
	cr_assert_gt(rd[0].reads + rd[1].reads, 0);
	cr_assert_gt(st[PE_STAGE_READ_IO].count, 0, "no read went to the pool");
}

/* ---- a full read queue ------------------------------------------------------------- */

static pthread_t shard_thread;
static atomic_bool shard_known;

static void note_shard(void *arg, const struct pe_append_result *r)
{
	(void)arg;
	(void)r;
	shard_thread = pthread_self();
	atomic_store(&shard_known, true);
}

struct qread {
	uint64_t from;
	atomic_int calls;
	bool on_shard;
	bool ok;
};

static void qread_cb(void *arg, const struct pe_read_result *r)
{
	struct qread *q = arg;
	q->on_shard = atomic_load(&shard_known) &&
		      pthread_equal(pthread_self(), shard_thread);
	bool ok = r->err == 0 && r->count == 20;
	for (uint32_t i = 0; ok && i < r->count; i++)
		ok = r->entries[i].seq == q->from + i && payload_ok(&r->entries[i]);
	q->ok = ok;
	atomic_fetch_add(&q->calls, 1);
}

Test(hist_read, a_full_read_queue_answers_every_read_once_on_the_shard)
{
	open_engine(1, 1);
	atomic_store(&appended, 0);
	append_n(2000);
	cr_assert_eq(pe_flush_sync(eng, 0), 0);
	/* learn the shard thread from an append callback */
	char pl[8] = "x";
	struct pe_input in = {.type = 1, .len = 1, .payload = pl};
	struct pe_append_req aq = {.key = "other", .klen = 5,
				   .expected_last_seq = PE_NO_EXPECT,
				   .entries = &in, .count = 1};
	cr_assert_eq(pe_append(eng, &aq, note_shard, NULL), 0);
	for (int i = 0; i < 10000 && !atomic_load(&shard_known); i++)
		usleep(1000);
	cr_assert(atomic_load(&shard_known));

	enum { NQ = 200 };
	static struct qread qs[NQ];
	for (int i = 0; i < NQ; i++) {
		qs[i] = (struct qread){.from = 1 + (uint64_t)i * 9};
		struct pe_read_req q = {.key = KEY, .klen = strlen(KEY),
					.from = qs[i].from, .dir = PE_FORWARD,
					.limit = 20};
		int rc;
		while ((rc = pe_read(eng, &q, qread_cb, &qs[i])) == -PARLEY_EFULL)
			usleep(100);
		cr_assert_eq(rc, 0);
	}
	for (int i = 0; i < NQ; i++) {
		for (int k = 0; k < 20000 && atomic_load(&qs[i].calls) == 0; k++)
			usleep(500);
		cr_assert_eq(atomic_load(&qs[i].calls), 1, "read %d", i);
		cr_assert(qs[i].ok, "read %d: wrong entries", i);
		cr_assert(qs[i].on_shard, "read %d: callback off the shard thread", i);
	}
	struct pe_stage_hist st[PE_STAGE_COUNT];
	pe_stage_stats(eng, st);
	cr_assert_eq(st[PE_STAGE_READ_IO].count, NQ);
	/* nothing more arrives */
	pe_close(eng);
	eng = NULL;
	for (int i = 0; i < NQ; i++)
		cr_assert_eq(atomic_load(&qs[i].calls), 1);
}

/* ---- a retired segment under a read ------------------------------------------------ */

Test(hist_read, compaction_under_reads_in_flight_keeps_their_segments)
{
	open_engine(1, 64);
	atomic_store(&appended, 0);
	enum { NR = 60 };
	static struct qread qs[NR];
	for (int round = 0; round < 30; round++) {
		append_n(40);
		cr_assert_eq(pe_flush_sync(eng, 0), 0);
		append_n(40);
		cr_assert_eq(pe_flush_sync(eng, 0), 0);
		/* reads of both segments queued, then a compaction that
		 * replaces them while they may still be in the pool */
		uint64_t base = atomic_load(&appended) - 80;
		for (int i = 0; i < NR; i++) {
			qs[i] = (struct qread){.from = base + 1 + (uint64_t)i};
			struct pe_read_req q = {.key = KEY, .klen = strlen(KEY),
						.from = qs[i].from,
						.dir = PE_FORWARD, .limit = 20};
			cr_assert_eq(pe_read(eng, &q, qread_cb, &qs[i]), 0);
		}
		cr_assert_eq(pe_compact_sync(eng, 0, true), 0);
		for (int i = 0; i < NR; i++) {
			for (int k = 0; k < 20000 && atomic_load(&qs[i].calls) == 0; k++)
				usleep(500);
			cr_assert_eq(atomic_load(&qs[i].calls), 1);
			cr_assert(qs[i].ok, "round %d read %d: wrong entries", round, i);
		}
	}
}

/* ---- tails catching up from history ------------------------------------------------ */

struct tail {
	pthread_mutex_t mu;
	uint64_t next;          /* next seq expected */
	char err[256];
	atomic_int closed;
};

static enum pe_sub_ret tail_cb(void *arg, struct pe_sub *sub,
			       const struct pe_sub_update *u)
{
	(void)sub;
	struct tail *t = arg;
	pthread_mutex_lock(&t->mu);
	if (u->event == PE_SUB_ENTRIES) {
		for (uint32_t i = 0; i < u->count && !t->err[0]; i++) {
			if (u->entries[i].seq != t->next || !payload_ok(&u->entries[i]))
				snprintf(t->err, sizeof t->err,
					 "got seq %" PRIu64 ", expected %" PRIu64,
					 u->entries[i].seq, t->next);
			t->next++;
		}
	} else if (u->event == PE_SUB_CLOSED) {
		atomic_store(&t->closed, 1);
	} else if (!t->err[0]) {
		snprintf(t->err, sizeof t->err, "unexpected event %d", (int)u->event);
	}
	pthread_mutex_unlock(&t->mu);
	return PE_SUB_CONTINUE;
}

static void unsub_done(void *arg)
{
	atomic_store((atomic_int *)arg, 1);
}

static uint64_t tail_next(struct tail *t)
{
	pthread_mutex_lock(&t->mu);
	uint64_t n = t->next;
	pthread_mutex_unlock(&t->mu);
	return n;
}

Test(hist_read, tails_catch_up_from_history_through_flushes_exactly_once,
     .timeout = 600)
{
	open_engine(2, 4);
	atomic_store(&appended, 0);
	append_n(1500);
	cr_assert_eq(pe_flush_sync(eng, 0), 0);
	append_n(100);
	enum { NT = 4 };
	static struct tail ts[NT];
	struct pe_sub *subs[NT];
	for (int i = 0; i < NT; i++) {
		ts[i] = (struct tail){.next = 1 + (uint64_t)i * 300};
		pthread_mutex_init(&ts[i].mu, NULL);
		cr_assert_eq(pe_subscribe(eng, KEY, strlen(KEY), ts[i].next,
					  tail_cb, &ts[i], &subs[i]), 0);
	}
	/* while they catch up: more appends, flushes and compactions move
	 * entries from the memtable to segments and replace segments */
	for (int round = 0; round < 60; round++) {
		append_n(25);
		cr_assert_eq(pe_flush_sync(eng, 0), 0);
		if (round % 10 == 9)
			cr_assert_eq(pe_compact_sync(eng, 0, true), 0);
	}
	uint64_t last = atomic_load(&appended);
	for (int i = 0; i < NT; i++) {
		for (int k = 0; k < 20000 && tail_next(&ts[i]) <= last &&
		     !ts[i].err[0]; k++)
			usleep(500);
		pthread_mutex_lock(&ts[i].mu);
		cr_assert_eq(ts[i].err[0], '\0', "tail %d: %s", i, ts[i].err);
		cr_assert_eq(ts[i].next, last + 1, "tail %d", i);
		pthread_mutex_unlock(&ts[i].mu);
	}
	struct pe_stage_hist st[PE_STAGE_COUNT];
	pe_stage_stats(eng, st);
	cr_assert_gt(st[PE_STAGE_READ_IO].count, 0, "no chunk went to the pool");
	for (int i = 0; i < NT; i++)
		cr_assert_eq(pe_unsubscribe(subs[i], NULL, NULL), 0);
	/* subscriptions ended while their chunk is in the pool */
	for (int i = 0; i < 200; i++) {
		struct tail t = {.next = 1};
		pthread_mutex_init(&t.mu, NULL);
		struct pe_sub *sub;
		cr_assert_eq(pe_subscribe(eng, KEY, strlen(KEY), 1, tail_cb, &t,
					  &sub), 0);
		atomic_int done = 0;
		cr_assert_eq(pe_unsubscribe(sub, unsub_done, &done), 0);
		for (int k = 0; k < 20000 && !atomic_load(&done); k++)
			usleep(100);
		cr_assert(atomic_load(&done));
		pthread_mutex_lock(&t.mu);
		cr_assert_eq(t.err[0], '\0', "%s", t.err);
		pthread_mutex_unlock(&t.mu);
	}
}
