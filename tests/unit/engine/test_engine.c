/*
 * test_engine.c — the engine's log core on the in-memory backend: appends,
 * reads, idempotency, preconditions, tails with flow control, recovery,
 * crash with lost/torn unsynced data, fsync failure, corruption.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "io.h"

#define MEM_ENGINE_PARTITIONS 8
#define MEM_ENGINE_SHARDS 2
#include "mem_engine.h"

static int append1(const char *key, const char *payload, const char *producer,
		   struct pe_append_result *r)
{
	struct pe_input in = {.type = 7, .flags = 1,
			      .len = (uint32_t)strlen(payload), .payload = payload};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	if (producer)
		memcpy(q.producer, producer, strnlen(producer, 16));
	return pe_append_sync(eng, &q, r);
}

static uint32_t read_all(const char *key, struct pe_entry **out)
{
	uint32_t n = 0;
	struct pe_read_req q = {.key = key, .klen = strlen(key), .from = 1,
				.dir = PE_FORWARD, .limit = PE_MAX_READ};
	cr_assert_eq(pe_read_sync(eng, &q, out, &n, NULL), 0);
	return n;
}

TestSuite(engine, .init = mem_engine_setup, .fini = mem_engine_teardown);

Test(engine, append_assigns_dense_seqs_and_reads_back)
{
	struct pe_append_result r;
	for (int i = 1; i <= 50; i++) {
		char buf[32];
		snprintf(buf, sizeof buf, "msg %d", i);
		cr_assert_eq(append1("c/a", buf, NULL, &r), 0);
		cr_assert_eq(r.seq, (uint64_t)i);
		cr_assert_eq(r.count, 1);
		cr_assert_not(r.duplicate);
	}
	cr_assert_eq(append1("c/b", "other", NULL, &r), 0);
	cr_assert_eq(r.seq, 1);
	struct pe_entry *es;
	uint32_t n = read_all("c/a", &es);
	cr_assert_eq(n, 50);
	for (uint32_t i = 0; i < n; i++) {
		char buf[32];
		snprintf(buf, sizeof buf, "msg %u", i + 1);
		cr_assert_eq(es[i].seq, i + 1);
		cr_assert_eq(es[i].type, 7);
		cr_assert_eq(es[i].len, strlen(buf));
		cr_assert_eq(memcmp(es[i].payload, buf, es[i].len), 0);
		if (i)
			cr_assert_geq(es[i].ts_ms, es[i - 1].ts_ms);
	}
	free(es);
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, "c/a", 3, &m), 0);
	cr_assert_eq(m.first_seq, 1);
	cr_assert_eq(m.last_seq, 50);
	cr_assert_eq(pe_meta_sync(eng, "c/none", 6, &m), 0);
	cr_assert_eq(m.last_seq, 0);
}

/* An append's request is made on the caller's thread and freed on the
 * shard (engine/api.c): with a block pool on the caller's thread it comes
 * back to that pool (parley_common.h) instead of being freed into the
 * caller's malloc arena from the shard. */
static uint64_t pool_out(void)
{
	struct parley_pool_stats s;
	cr_assert_eq(parley_pool_thread_stats(&s), 0);
	return s.out;
}

Test(engine, append_requests_go_back_to_the_callers_pool)
{
	cr_assert_eq(parley_pool_thread_start(), 0);
	enum { N = 50 };
	for (int i = 1; i <= N; i++) {
		struct pe_append_result r;
		cr_assert_eq(append1("c/pool", "x", NULL, &r), 0);
		cr_assert_eq(r.seq, (uint64_t)i);
		/* the shard frees the request just after its callback: wait
		 * for it to be back (not a timing assertion) */
		for (int k = 0; pool_out() && k < 10000; k++)
			usleep(1000);
		cr_assert_eq(pool_out(), 0, "append %d's request came back", i);
	}
	struct parley_pool_stats s;
	cr_assert_eq(parley_pool_thread_stats(&s), 0);
	cr_assert_eq(s.hits + s.misses, N, "every request from the pool");
	cr_assert_eq(s.misses, 1, "then the returned block, again and again");
	cr_assert_eq(s.returned, N - 1);
	parley_pool_thread_end();
}

Test(engine, backward_pagination_covers_everything_once)
{
	struct pe_append_result r;
	for (int i = 0; i < 95; i++)
		cr_assert_eq(append1("c/page", "x", NULL, &r), 0);
	uint64_t before = UINT64_MAX, expect = 95;
	int pages = 0;
	for (;;) {
		struct pe_read_req q = {.key = "c/page", .klen = 6, .from = before,
					.dir = PE_BACKWARD, .limit = 20};
		struct pe_entry *es;
		uint32_t n;
		struct pe_read_result meta;
		cr_assert_eq(pe_read_sync(eng, &q, &es, &n, &meta), 0);
		for (uint32_t i = 0; i < n; i++)
			cr_assert_eq(es[i].seq, expect--);
		pages++;
		if (n)
			before = es[n - 1].seq - 1;
		free(es);
		if (meta.end)
			break;
		cr_assert_lt(pages, 10);
	}
	cr_assert_eq(expect, 0);
	cr_assert_eq(pages, 5);
}

Test(engine, idempotent_retry_returns_original_seq_also_after_restart)
{
	struct pe_append_result r1, r2;
	cr_assert_eq(append1("c/i", "first", "producer-1", &r1), 0);
	cr_assert_eq(append1("c/i", "other", "producer-2", &r2), 0);
	cr_assert_eq(append1("c/i", "first", "producer-1", &r2), 0);
	cr_assert(r2.duplicate);
	cr_assert_eq(r2.seq, r1.seq);
	cr_assert_eq(r2.ts_ms, r1.ts_ms);
	mem_engine_reopen();
	cr_assert_eq(append1("c/i", "first", "producer-1", &r2), 0);
	cr_assert(r2.duplicate);
	cr_assert_eq(r2.seq, 1);
	struct pe_entry *es;
	cr_assert_eq(read_all("c/i", &es), 2);
	free(es);
	/* same producer id on another stream is a different key */
	cr_assert_eq(append1("c/j", "first", "producer-1", &r2), 0);
	cr_assert_not(r2.duplicate);
}

Test(engine, expected_seq_precondition)
{
	struct pe_append_result r;
	struct pe_input in = {.len = 1, .payload = "a"};
	struct pe_append_req q = {.key = "c/e", .klen = 3, .expected_last_seq = 0,
				  .entries = &in, .count = 1};
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert_eq(r.seq, 1);
	cr_assert_eq(pe_append_sync(eng, &q, &r), -PARLEY_ESEQ);
	cr_assert_eq(r.last_seq, 1);
	q.expected_last_seq = 1;
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert_eq(r.seq, 2);
}

Test(engine, batch_is_atomic_and_dense)
{
	struct pe_input in[5];
	for (int i = 0; i < 5; i++)
		in[i] = (struct pe_input){.type = (uint16_t)i, .len = 2, .payload = "hi"};
	struct pe_append_req q = {.key = "c/batch", .klen = 7,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = in, .count = 5};
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert_eq(r.seq, 1);
	cr_assert_eq(r.count, 5);
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert_eq(r.seq, 6);
	struct pe_entry *es;
	cr_assert_eq(read_all("c/batch", &es), 10);
	cr_assert_eq(es[9].type, 4);
	free(es);
}

Test(engine, bad_requests_are_rejected)
{
	struct pe_append_result r;
	struct pe_input in = {.len = PE_MAX_PAYLOAD + 1, .payload = ""};
	struct pe_append_req q = {.key = "k", .klen = 1,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	cr_assert_eq(pe_append_sync(eng, &q, &r), -PARLEY_ETOOBIG);
	q.klen = 0;
	cr_assert_eq(pe_append_sync(eng, &q, &r), -PARLEY_EINVAL);
	q.klen = 256;
	cr_assert_eq(pe_append_sync(eng, &q, &r), -PARLEY_EINVAL);
	q.klen = 1;
	q.count = 0;
	cr_assert_eq(pe_append_sync(eng, &q, &r), -PARLEY_EINVAL);
	struct pe_read_req rq = {.key = "k", .klen = 1, .limit = 0};
	struct pe_entry *es;
	uint32_t n;
	cr_assert_eq(pe_read_sync(eng, &rq, &es, &n, NULL), -PARLEY_EINVAL);
}

/* ---- tails ---- */

struct tail_state {
	pthread_mutex_t mu;
	uint64_t next;       /* next seq expected */
	uint64_t got;
	int pause_after;     /* pause once this many have arrived (0 = never) */
	bool paused;
	bool closed;
	bool bad;
};

static enum pe_sub_ret tail_cb(void *arg, struct pe_sub *sub,
			       const struct pe_sub_update *u)
{
	struct tail_state *t = arg;
	pthread_mutex_lock(&t->mu);
	enum pe_sub_ret ret = PE_SUB_CONTINUE;
	if (u->event == PE_SUB_CLOSED) {
		t->closed = true;
	} else if (u->event == PE_SUB_ENTRIES) {
		for (uint32_t i = 0; i < u->count; i++) {
			if (u->entries[i].seq != t->next)
				t->bad = true;
			t->next++;
			t->got++;
		}
		if (t->pause_after && t->got >= (uint64_t)t->pause_after &&
		    !t->paused) {
			t->paused = true;
			ret = PE_SUB_PAUSE;
		}
	}
	pthread_mutex_unlock(&t->mu);
	return ret;
}

static uint64_t tail_got(struct tail_state *t)
{
	pthread_mutex_lock(&t->mu);
	uint64_t g = t->got;
	pthread_mutex_unlock(&t->mu);
	return g;
}

static void wait_got(struct tail_state *t, uint64_t n)
{
	for (int i = 0; i < 5000 && tail_got(t) < n; i++)
		usleep(1000);
	cr_assert_eq(tail_got(t), n);
}

Test(engine, tail_backlog_then_live_in_order)
{
	struct pe_append_result r;
	for (int i = 0; i < 300; i++)
		cr_assert_eq(append1("u/tail", "m", NULL, &r), 0);
	struct tail_state t = {.mu = PTHREAD_MUTEX_INITIALIZER, .next = 101};
	struct pe_sub *sub;
	cr_assert_eq(pe_subscribe(eng, "u/tail", 6, 101, tail_cb, &t, &sub), 0);
	wait_got(&t, 200);
	for (int i = 0; i < 2000; i++)
		cr_assert_eq(append1("u/tail", "live", NULL, &r), 0);
	wait_got(&t, 2200);
	cr_assert_not(t.bad);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
}

Test(engine, paused_subscriber_does_not_block_appends_and_resumes)
{
	struct tail_state t = {.mu = PTHREAD_MUTEX_INITIALIZER, .next = 1,
			       .pause_after = 10};
	struct pe_sub *sub;
	cr_assert_eq(pe_subscribe(eng, "u/slow", 6, 1, tail_cb, &t, &sub), 0);
	struct pe_append_result r;
	for (int i = 0; i < 500; i++)
		cr_assert_eq(append1("u/slow", "m", NULL, &r), 0);
	/* paused: it got at most one chunk past the pause point */
	uint64_t g = tail_got(&t);
	cr_assert_lt(g, 500);
	cr_assert_geq(g, 10);
	cr_assert_eq(pe_sub_resume(sub), 0);
	wait_got(&t, 500);
	cr_assert_not(t.bad);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
}

Test(engine, subscribe_ahead_of_stream_waits_for_entries)
{
	struct tail_state t = {.mu = PTHREAD_MUTEX_INITIALIZER, .next = 3};
	struct pe_sub *sub;
	cr_assert_eq(pe_subscribe(eng, "u/ahead", 7, 3, tail_cb, &t, &sub), 0);
	struct pe_append_result r;
	for (int i = 0; i < 4; i++)
		cr_assert_eq(append1("u/ahead", "m", NULL, &r), 0);
	wait_got(&t, 2);
	cr_assert_not(t.bad);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
}

/* ---- recovery and faults ---- */

Test(engine, reopen_replays_everything)
{
	struct pe_append_result r;
	for (int i = 0; i < 1000; i++) {
		char key[16];
		snprintf(key, sizeof key, "c/%d", i % 37);
		cr_assert_eq(append1(key, "payload", NULL, &r), 0);
	}
	mem_engine_reopen();
	uint64_t total = 0;
	for (int k = 0; k < 37; k++) {
		char key[16];
		snprintf(key, sizeof key, "c/%d", k);
		struct pe_entry *es;
		uint32_t n = read_all(key, &es);
		for (uint32_t i = 0; i < n; i++)
			cr_assert_eq(es[i].seq, i + 1);
		total += n;
		free(es);
	}
	cr_assert_eq(total, 1000);
	/* appends continue at the right seq after recovery */
	cr_assert_eq(append1("c/0", "after", NULL, &r), 0);
	cr_assert_eq(r.seq, 1000 / 37 + 1 + 1);
}

static void crash_and_reopen(bool tear)
{
	pe_abort(eng);
	pio_mem_crash(io, tear);
	struct pe_options o = mem_engine_opts();
	cr_assert_eq(pe_open(&o, &eng), 0);
}

Test(engine, acked_entries_survive_crash_with_torn_tail)
{
	struct pe_append_result r;
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 100; i++)
			cr_assert_eq(append1("c/crash", "abc", NULL, &r), 0);
		crash_and_reopen(round % 2 == 1);
		struct pe_entry *es;
		uint32_t n = read_all("c/crash", &es);
		cr_assert_eq(n, (uint32_t)(round + 1) * 100);
		for (uint32_t i = 0; i < n; i++)
			cr_assert_eq(es[i].seq, i + 1);
		free(es);
	}
}

/* Lets each shard's spare-segment thread finish first, so that a single
 * injected fault hits the WAL's write or fdatasync and not the spare's
 * zero-fill (its fdatasyncs take faults too). After open it makes spare 1
 * and prepares it as segment 2, then makes spare 2 and rests. */
static void wait_spares(void)
{
	for (int i = 0; i < 5000; i++) {
		if (pio_mem_file_size(io, "/data/wal/0/spare-2.log") > 0 &&
		    pio_mem_file_size(io, "/data/wal/1/spare-2.log") > 0)
			break;
		usleep(1000);
	}
}

Test(engine, fsync_failure_is_fatal_for_appends)
{
	struct pe_append_result r;
	cr_assert_eq(append1("c/f", "ok", NULL, &r), 0);
	wait_spares();
	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	cr_assert_eq(append1("c/f", "lost", NULL, &r), -PARLEY_EFATAL);
	/* no retry of fsync: everything after fails too on that shard */
	cr_assert_eq(append1("c/f", "again", NULL, &r), -PARLEY_EFATAL);
	/* the unacknowledged entry is not visible */
	struct pe_entry *es;
	cr_assert_eq(read_all("c/f", &es), 1);
	free(es);
	/* restart recovers: the acked entry is there */
	crash_and_reopen(false);
	cr_assert_eq(read_all("c/f", &es), 1);
	free(es);
	cr_assert_eq(append1("c/f", "fresh", NULL, &r), 0);
	cr_assert_eq(r.seq, 2);
}

Test(engine, write_error_is_fatal_too)
{
	struct pe_append_result r;
	wait_spares();
	pio_mem_inject(io, PIO_FAULT_ENOSPC, 1);
	cr_assert_eq(append1("c/w", "x", NULL, &r), -PARLEY_EFATAL);
}

Test(engine, memtable_limit_gives_back_pressure)
{
	pe_close(eng);
	struct pe_options o = mem_engine_opts();
	o.memtable_bytes = 64 * 1024;
	o.no_auto_flush = true; /* the bound itself, not the flush that relieves it */
	cr_assert_eq(pe_open(&o, &eng), 0);
	char big[4096];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = 0;
	struct pe_append_result r;
	int ok = 0, full = 0;
	for (int i = 0; i < 40; i++) {
		int rc = append1("c/mem", big, NULL, &r);
		if (rc == 0)
			ok++;
		else if (rc == -PARLEY_EFULL)
			full++;
		else
			cr_assert_fail("unexpected %d", rc);
	}
	cr_assert_gt(ok, 5);
	cr_assert_gt(full, 0);
	struct pe_entry *es;
	cr_assert_eq(read_all("c/mem", &es), (uint32_t)ok);
	free(es);
}

static int find_key_partition(const char *key)
{
	return (int)pe_partition_of(eng, key, strlen(key));
}

Test(engine, bit_flip_marks_only_that_partition_corrupt)
{
	struct pe_append_result r;
	/* fill shard 0's WAL; key choice decides the partition */
	char k1[16] = "", k2[16] = "";
	for (int i = 0; i < 1000 && (!k1[0] || !k2[0]); i++) {
		char k[16];
		snprintf(k, sizeof k, "c/k%d", i);
		int p = find_key_partition(k);
		if (p == 0 && !k1[0])
			strcpy(k1, k);
		else if (p == 2 && !k2[0])
			strcpy(k2, k);
	}
	cr_assert(k1[0] && k2[0]);
	cr_assert_eq(append1(k1, "first-partition-0", NULL, &r), 0);
	cr_assert_eq(append1(k2, "partition-2", NULL, &r), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(append1(k2, "more", NULL, &r), 0);
	pe_close(eng);
	eng = NULL;
	/* Find k1's record in shard 0's first segment (after the election's
	 * no-op records) and flip a bit in its payload: not a torn tail,
	 * since later batches exist. */
	const char *seg = "/data/wal/0/wal-0000000000000001.log";
	int64_t size = pio_mem_file_size(io, seg);
	cr_assert_gt(size, 0);
	uint8_t *img = malloc((size_t)size);
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, seg, 0, &f), 0);
	cr_assert_eq(io->ops->pread(io, f, img, (size_t)size, 0), size);
	io->ops->close(io, f);
	const char *pl = "first-partition-0";
	uint8_t *at = memmem(img, (size_t)size, pl, strlen(pl));
	cr_assert_not_null(at);
	uint64_t pl_off = (uint64_t)(at - img);
	free(img);
	/* body: klen | key | producer | ts | expected | count | entry hdr */
	uint64_t rec_off = pl_off - 8 - 4 - 8 - 8 - 16 - strlen(k1) - 1 - 64;
	cr_assert_eq(pio_mem_flip_bit(io, seg, pl_off + 3, 2), 0);
	struct pe_options o = mem_engine_opts();
	cr_assert_eq(pe_open(&o, &eng), 0);
	struct pe_partition_status st;
	cr_assert_eq(pe_partition_status(eng, 0, &st), 0);
	cr_assert_eq(st.state, PE_PART_CORRUPT);
	char want[64];
	snprintf(want, sizeof want, "wal-0000000000000001.log offset %llu",
		 (unsigned long long)rec_off);
	cr_assert(strstr(st.error, want), "error was: %s (want %s)", st.error,
		  want);
	cr_assert_eq(append1(k1, "x", NULL, &r), -PARLEY_ECORRUPT);
	cr_assert_eq(pe_partition_status(eng, 2, &st), 0);
	cr_assert_eq(st.state, PE_PART_OK);
	struct pe_entry *es;
	cr_assert_eq(read_all(k2, &es), 4);
	free(es);
}

Test(engine, read_only_open_serves_reads_and_refuses_writes)
{
	struct pe_append_result r;
	cr_assert_eq(append1("c/ro", "x", NULL, &r), 0);
	pe_close(eng);
	struct pe_options o = mem_engine_opts();
	o.read_only = true;
	cr_assert_eq(pe_open(&o, &eng), 0);
	struct pe_entry *es;
	cr_assert_eq(read_all("c/ro", &es), 1);
	free(es);
	cr_assert_eq(append1("c/ro", "y", NULL, &r), -PARLEY_EPERM);
}

Test(engine, partition_count_is_fixed_at_creation)
{
	pe_close(eng);
	struct pe_options o = mem_engine_opts();
	o.partitions = 16;
	cr_assert_eq(pe_open(&o, &eng), -PARLEY_EINVAL);
	o.partitions = 0; /* 0 = use the directory's */
	cr_assert_eq(pe_open(&o, &eng), 0);
	cr_assert_eq(pe_partition_count(eng), 8);
}

static int count_streams(void *arg, const void *key, size_t klen,
			 const struct pe_meta *m)
{
	(void)key;
	(void)klen;
	*(uint64_t *)arg += m->last_seq;
	return 0;
}

Test(engine, list_streams_reports_every_stream)
{
	struct pe_append_result r;
	for (int i = 0; i < 20; i++) {
		char key[16];
		snprintf(key, sizeof key, "c/l%d", i);
		cr_assert_eq(append1(key, "x", NULL, &r), 0);
		cr_assert_eq(append1(key, "y", NULL, &r), 0);
	}
	uint64_t total = 0;
	for (uint32_t p = 0; p < pe_partition_count(eng); p++)
		cr_assert_eq(pe_list_streams(eng, p, count_streams, &total), 0);
	cr_assert_eq(total, 40);
}

/* many concurrent async appends: group commit batches them */
struct async_state {
	atomic_int done;
	atomic_int errors;
};

static void async_cb(void *arg, const struct pe_append_result *r)
{
	struct async_state *s = arg;
	if (r->err)
		atomic_fetch_add(&s->errors, 1);
	atomic_fetch_add(&s->done, 1);
}

Test(engine, concurrent_appends_are_group_committed)
{
	struct async_state s = {0};
	const int N = 5000;
	for (int i = 0; i < N; i++) {
		char key[16];
		snprintf(key, sizeof key, "c/g%d", i % 64);
		struct pe_input in = {.len = 3, .payload = "abc"};
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		cr_assert_eq(pe_append(eng, &q, async_cb, &s), 0);
	}
	for (int i = 0; i < 10000 && atomic_load(&s.done) < N; i++)
		usleep(1000);
	cr_assert_eq(atomic_load(&s.done), N);
	cr_assert_eq(atomic_load(&s.errors), 0);
	struct pe_stats st;
	pe_stats(eng, &st);
	cr_assert_eq(st.appends, (uint64_t)N);
	cr_assert_lt(st.wal_batches, (uint64_t)N); /* batching happened */
}

/* ---- idempotency window and cap (injected clock) ---- */

static _Atomic uint64_t fake_now = 1000000;

static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return atomic_load(&fake_now);
}

Test(engine, idempotency_forgets_past_window_and_over_cap)
{
	pe_close(eng);
	pio_free(io);
	io = pio_mem_new(2);
	struct pe_options o = mem_engine_opts();
	o.idem_window_ms = 60000;
	o.idem_max_keys = 4;
	o.clock_ms = fake_clock;
	cr_assert_eq(pe_open(&o, &eng), 0);
	struct pe_append_result r;
	/* keys all on one stream so they share a partition's table */
	cr_assert_eq(append1("c/w", "a", "p-a", &r), 0);
	cr_assert_eq(r.seq, 1);
	atomic_fetch_add(&fake_now, 30000);
	cr_assert_eq(append1("c/w", "a", "p-a", &r), 0);
	cr_assert(r.duplicate, "inside the window: duplicate");
	atomic_fetch_add(&fake_now, 40000); /* 70 s after the original */
	cr_assert_eq(append1("c/w", "a", "p-a", &r), 0);
	cr_assert_not(r.duplicate, "past the window the retry is new");
	cr_assert_eq(r.seq, 2);
	/* cap: 4 keys per partition, the oldest is forgotten first */
	cr_assert_eq(append1("c/w", "b", "p-b", &r), 0);
	cr_assert_eq(append1("c/w", "c", "p-c", &r), 0);
	cr_assert_eq(append1("c/w", "d", "p-d", &r), 0);
	cr_assert_eq(append1("c/w", "e", "p-e", &r), 0); /* 5th: p-a (seq 2) out */
	cr_assert_eq(append1("c/w", "e", "p-e", &r), 0);
	cr_assert(r.duplicate);
	cr_assert_eq(append1("c/w", "b", "p-b", &r), 0);
	cr_assert(r.duplicate);
	uint64_t last = r.last_seq;
	/* replay after restart gives the same decisions */
	pe_close(eng);
	cr_assert_eq(pe_open(&o, &eng), 0);
	cr_assert_eq(append1("c/w", "e", "p-e", &r), 0);
	cr_assert(r.duplicate);
	cr_assert_eq(r.last_seq, last);
}

Test(engine, many_subscribers_on_one_stream_all_get_everything)
{
	enum { NS = 8 };
	struct tail_state t[NS];
	struct pe_sub *subs[NS];
	for (int i = 0; i < NS; i++) {
		t[i] = (struct tail_state){.mu = PTHREAD_MUTEX_INITIALIZER,
					   .next = 1};
		cr_assert_eq(pe_subscribe(eng, "u/many", 6, 1, tail_cb, &t[i],
					  &subs[i]), 0);
	}
	struct pe_append_result r;
	for (int i = 0; i < 300; i++)
		cr_assert_eq(append1("u/many", "m", NULL, &r), 0);
	for (int i = 0; i < NS; i++) {
		wait_got(&t[i], 300);
		cr_assert_not(t[i].bad);
		cr_assert_eq(pe_unsubscribe(subs[i], NULL, NULL), 0);
	}
}

/* ---- model-based: random operations and crashes against a model ---- */

Test(engine, model_random_ops_with_crashes)
{
	const char *ev = getenv("PARLEY_SEED");
	uint64_t seed = ev ? strtoull(ev, NULL, 0) : (uint64_t)time(NULL);
	fprintf(stderr, "model test seed=%llu (replay: PARLEY_SEED=%llu)\n",
		(unsigned long long)seed, (unsigned long long)seed);
	struct parley_rng rng = {seed};
	enum { NK = 12, MAXE = 4000 };
	/* model: per stream, the payload of each seq; per producer, its seq */
	static char model[NK][MAXE][16];
	static uint64_t mlen[NK];
	static uint64_t pseq[NK][64];
	memset(mlen, 0, sizeof mlen);
	memset(pseq, 0, sizeof pseq);
	int steps = getenv("PARLEY_LONG") ? 20000 : 3000;
	for (int step = 0; step < steps; step++) {
		uint32_t k = (uint32_t)parley_rng_below(&rng, NK);
		char key[16];
		snprintf(key, sizeof key, "c/m%u", k);
		uint64_t op = parley_rng_below(&rng, 100);
		if (op < 70 && mlen[k] < MAXE - 1) {
			bool idem = parley_rng_below(&rng, 2);
			uint32_t pid = (uint32_t)parley_rng_below(&rng, 64);
			char prod[16] = {0}, pl[16];
			snprintf(prod, sizeof prod, "p%u", pid);
			snprintf(pl, sizeof pl, "s%d", step);
			struct pe_append_result r;
			cr_assert_eq(append1(key, pl, idem ? prod : NULL, &r), 0,
				     "seed %llu step %d", (unsigned long long)seed, step);
			if (idem && pseq[k][pid]) {
				cr_assert(r.duplicate, "seed %llu step %d",
					  (unsigned long long)seed, step);
				cr_assert_eq(r.seq, pseq[k][pid]);
			} else {
				cr_assert_not(r.duplicate);
				cr_assert_eq(r.seq, mlen[k] + 1, "seed %llu step %d",
					     (unsigned long long)seed, step);
				mlen[k]++;
				snprintf(model[k][mlen[k]], 16, "%s", pl);
				if (idem)
					pseq[k][pid] = r.seq;
			}
		} else if (op < 90) {
			uint64_t from = mlen[k] ? 1 + parley_rng_below(&rng, mlen[k]) : 1;
			bool back = parley_rng_below(&rng, 2);
			uint32_t lim = 1 + (uint32_t)parley_rng_below(&rng, 50);
			struct pe_read_req q = {.key = key, .klen = strlen(key),
						.from = from,
						.dir = back ? PE_BACKWARD : PE_FORWARD,
						.limit = lim};
			struct pe_entry *es;
			uint32_t n;
			cr_assert_eq(pe_read_sync(eng, &q, &es, &n, NULL), 0);
			uint64_t want = back ? PARLEY_MIN(from, mlen[k])
					     : (from <= mlen[k] ? mlen[k] - from + 1 : 0);
			cr_assert_eq(n, PARLEY_MIN(want, lim), "seed %llu step %d",
				     (unsigned long long)seed, step);
			for (uint32_t i = 0; i < n; i++) {
				uint64_t s = back ? from - i : from + i;
				cr_assert_eq(es[i].seq, s);
				cr_assert_eq(es[i].len, strlen(model[k][s]));
				cr_assert_eq(memcmp(es[i].payload, model[k][s],
						    es[i].len), 0);
			}
			free(es);
		} else if (op < 95) {
			crash_and_reopen(parley_rng_below(&rng, 2));
		} else {
			mem_engine_reopen();
		}
	}
}

/* Directories the engine creates (the data directory, wal/, wal/<shard>,
 * hist/, hist/<partition>) have their entries synced (pio_dir_ensure):
 * with the in-memory disk losing every namespace change whose directory
 * was not fsync'd, a crash right after the first appends of a new data
 * directory keeps them (before, the whole wal/<shard> and hist/ entries
 * went: found by the engine simulator). */
Test(engine, new_directories_survive_a_crash_that_loses_unsynced_entries)
{
	pe_close(eng);
	eng = NULL;
	pio_free(io);
	io = pio_mem_new(2);
	cr_assert_not_null(io);
	pio_mem_strict_dirs(io, true);
	struct pe_options o = mem_engine_opts();
	cr_assert_eq(pe_open(&o, &eng), 0);
	struct pe_append_result r;
	char key[16];
	for (int i = 0; i < 16; i++) {
		snprintf(key, sizeof key, "c/%d", i);
		cr_assert_eq(append1(key, "durable", NULL, &r), 0);
	}
	cr_assert_eq(pe_flush_sync(eng, 0), 0);
	pe_abort(eng);
	eng = NULL;
	pio_mem_crash(io, false);
	cr_assert_eq(pe_open(&o, &eng), 0);
	for (int i = 0; i < 16; i++) {
		snprintf(key, sizeof key, "c/%d", i);
		struct pe_entry *es;
		cr_assert_eq(read_all(key, &es), 1, "%s lost", key);
		cr_assert_eq(es[0].len, 7);
		free(es);
	}
}
