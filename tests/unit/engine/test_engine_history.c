/*
 * test_engine_history.c — the engine with its history tier wired in
 * (engine.c + hpart and friends), on the in-memory backend: flush and
 * merged reads, continuation after restart, idempotency from segments,
 * deletion, retention, WAL segment release (also with an idle partition),
 * subscriptions reaching history, faults (bit flip in a block, torn
 * segment writes at a crash) and a seeded model-based test that mixes all
 * of it with crashes.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "engine_util.h"

static struct pio *io;
static struct pe_engine *eng;
static struct pe_options base;

static struct pe_options opts(void)
{
	struct pe_options o = {0};
	o.dir = "/data";
	o.partitions = 4;
	o.shards = 2;
	o.wal_segment_bytes = 16u << 20;
	o.io = io;
	return o;
}

static void setup(void)
{
	io = pio_mem_new(7);
	cr_assert_not_null(io);
	base = opts();
	cr_assert_eq(pe_open(&base, &eng), 0);
}

static void teardown(void)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	pio_free(io);
}

static void reopen_with(struct pe_options o)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	base = o;
	cr_assert_eq(pe_open(&base, &eng), 0);
}

static void reopen(void)
{
	reopen_with(base);
}

static void crash_and_reopen(bool tear)
{
	pe_abort(eng);
	eng = NULL;
	pio_mem_crash(io, tear);
	cr_assert_eq(pe_open(&base, &eng), 0);
}

static void flush_all(void)
{
	for (uint32_t p = 0; p < pe_partition_count(eng); p++)
		cr_assert_eq(pe_flush_sync(eng, p), 0);
}

static void compact_all(bool all)
{
	for (uint32_t p = 0; p < pe_partition_count(eng); p++)
		cr_assert_eq(pe_compact_sync(eng, p, all), 0);
}

static const char *words[] = {
	"hello", "see", "you", "tomorrow", "at", "the", "station", "lunch",
	"sounds", "good", "did", "send", "photos", "from", "weekend", "call",
	"me", "when", "free", "thanks", "running", "late", "meeting", "ok"};

/* Chat-like text, deterministic from n. */
static size_t make_text(char *buf, size_t cap, uint64_t n)
{
	struct parley_rng r = {n * 2654435761u + 1};
	size_t len = (size_t)snprintf(buf, cap, "#%llu", (unsigned long long)n);
	int nw = 2 + (int)parley_rng_below(&r, 10);
	for (int i = 0; i < nw && len + 12 < cap; i++)
		len += (size_t)snprintf(buf + len, cap - len, " %s",
					words[parley_rng_below(&r, 24)]);
	return len;
}

static int append_text(const char *key, const char *pl, const char *producer,
		       struct pe_append_result *r)
{
	struct pe_input in = {.type = 3, .flags = 0, .len = (uint32_t)strlen(pl),
			      .payload = pl};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	if (producer)
		memcpy(q.producer, producer, strnlen(producer, 16));
	return pe_append_sync(eng, &q, r);
}

static void append_n(const char *key, uint64_t first_n, int count)
{
	char pl[256];
	for (int i = 0; i < count; i++) {
		make_text(pl, sizeof pl, first_n + (uint64_t)i);
		struct pe_append_result r;
		cr_assert_eq(append_text(key, pl, NULL, &r), 0);
		cr_assert_eq(r.seq, first_n + (uint64_t)i);
	}
}

/* Checks that seqs from..to of key hold make_text(seq), paging forward
 * and backward with page size `page`. */
static void check_range(const char *key, uint64_t from, uint64_t to,
			uint32_t page)
{
	char want[256];
	uint64_t seq = from;
	for (;;) {
		struct pe_read_req q = {.key = key, .klen = strlen(key),
					.from = seq, .dir = PE_FORWARD,
					.limit = page};
		struct pe_entry *es;
		uint32_t n;
		struct pe_read_result m;
		cr_assert_eq(pe_read_sync(eng, &q, &es, &n, &m), 0, "fwd %s @%llu",
			     key, (unsigned long long)seq);
		for (uint32_t i = 0; i < n; i++) {
			cr_assert_eq(es[i].seq, seq + i);
			size_t l = make_text(want, sizeof want, seq + i);
			cr_assert_eq(es[i].len, l, "%s seq %llu", key,
				     (unsigned long long)(seq + i));
			cr_assert_eq(memcmp(es[i].payload, want, l), 0);
		}
		free(es);
		seq += n;
		if (m.end || n == 0)
			break;
	}
	cr_assert_eq(seq, to + 1, "%s forward reached %llu, want %llu", key,
		     (unsigned long long)seq, (unsigned long long)to + 1);
	seq = UINT64_MAX;
	uint64_t expect = to;
	for (;;) {
		struct pe_read_req q = {.key = key, .klen = strlen(key),
					.from = seq, .dir = PE_BACKWARD,
					.limit = page};
		struct pe_entry *es;
		uint32_t n;
		struct pe_read_result m;
		cr_assert_eq(pe_read_sync(eng, &q, &es, &n, &m), 0);
		for (uint32_t i = 0; i < n; i++) {
			cr_assert_eq(es[i].seq, expect - i);
			size_t l = make_text(want, sizeof want, expect - i);
			cr_assert_eq(es[i].len, l);
			cr_assert_eq(memcmp(es[i].payload, want, l), 0);
		}
		free(es);
		expect -= n;
		if (m.end || n == 0)
			break;
		seq = expect;
	}
	cr_assert_eq(expect + 1, from, "%s backward stopped at %llu", key,
		     (unsigned long long)expect + 1);
}

TestSuite(history, .init = setup, .fini = teardown, .timeout = 120);

Test(history, flush_then_reads_merge_memtable_and_segments)
{
	const char *keys[] = {"c/a", "c/b", "c/c", "u/x", "u/yy"};
	for (int k = 0; k < 5; k++)
		append_n(keys[k], 1, 150);
	flush_all();
	for (int k = 0; k < 5; k++)
		append_n(keys[k], 151, 40); /* in memory, after the segment */
	uint32_t segs = 0;
	for (uint32_t p = 0; p < pe_partition_count(eng); p++) {
		struct pe_partition_status st;
		cr_assert_eq(pe_partition_status(eng, p, &st), 0);
		segs += st.segments;
		cr_assert_eq(st.entries, st.entries); /* reachable */
	}
	cr_assert_geq(segs, 1);
	uint32_t pages[] = {1, 7, 50, 1000};
	for (int k = 0; k < 5; k++)
		for (int i = 0; i < 4; i++)
			check_range(keys[k], 1, 190, pages[i]);
	/* a second flush: three layers (two segments + memtable) */
	flush_all();
	for (int k = 0; k < 5; k++)
		append_n(keys[k], 191, 10);
	for (int k = 0; k < 5; k++)
		check_range(keys[k], 1, 200, 33);
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, "c/a", 3, &m), 0);
	cr_assert_eq(m.first_seq, 1);
	cr_assert_eq(m.last_seq, 200);
	/* compaction changes nothing visible */
	compact_all(true);
	for (int k = 0; k < 5; k++)
		check_range(keys[k], 1, 200, 64);
	/* restart: streams continue from history, nothing replayed twice */
	reopen();
	for (int k = 0; k < 5; k++)
		check_range(keys[k], 1, 200, 64);
	append_n("c/a", 201, 3);
	check_range("c/a", 1, 203, 100);
	cr_assert_eq(pe_meta_sync(eng, "u/yy", 4, &m), 0);
	cr_assert_eq(m.last_seq, 200);
}

Test(history, memtable_limit_triggers_flush_and_frees_memory)
{
	struct pe_options o = opts();
	o.memtable_bytes = 256 * 1024;
	reopen_with(o);
	char pl[256];
	uint64_t n = 0;
	for (int i = 0; i < 3000; i++) {
		make_text(pl, sizeof pl, ++n);
		struct pe_append_result r;
		int rc;
		while ((rc = append_text("c/hot", pl, NULL, &r)) == -PARLEY_EFULL)
			usleep(1000); /* back-pressure while the flush runs */
		cr_assert_eq(rc, 0);
		cr_assert_eq(r.seq, n);
	}
	uint32_t p = pe_partition_of(eng, "c/hot", 5);
	struct pe_partition_status st;
	cr_assert_eq(pe_partition_status(eng, p, &st), 0);
	cr_assert_gt(st.flushes, 0);
	cr_assert_gt(st.segments, 0);
	cr_assert_lt(st.mem_bytes, o.memtable_bytes);
	check_range("c/hot", 1, 3000, 200);
	crash_and_reopen(true);
	check_range("c/hot", 1, 3000, 1000);
}

Test(history, idempotent_retry_after_flush_and_restart_returns_original)
{
	struct pe_append_result r, r2;
	cr_assert_eq(append_text("c/i", "first", "prodA", &r), 0);
	cr_assert_eq(append_text("c/i", "second", "prodB", &r), 0);
	append_n("c/other", 1, 20);
	flush_all();
	cr_assert_eq(append_text("c/i", "first", "prodA", &r2), 0);
	cr_assert(r2.duplicate);
	cr_assert_eq(r2.seq, 1);
	reopen();
	cr_assert_eq(append_text("c/i", "second", "prodB", &r2), 0);
	cr_assert(r2.duplicate);
	cr_assert_eq(r2.seq, 2);
	compact_all(true);
	crash_and_reopen(false);
	cr_assert_eq(append_text("c/i", "first", "prodA", &r2), 0);
	cr_assert(r2.duplicate);
	cr_assert_eq(r2.seq, 1);
	cr_assert_eq(append_text("c/i", "third", "prodC", &r2), 0);
	cr_assert_not(r2.duplicate);
	cr_assert_eq(r2.seq, 3);
}

static void expect_trimmed(const char *key, uint64_t from, uint64_t first)
{
	struct pe_read_req q = {.key = key, .klen = strlen(key), .from = from,
				.dir = PE_FORWARD, .limit = 10};
	struct pe_entry *es;
	uint32_t n;
	struct pe_read_result m;
	cr_assert_eq(pe_read_sync(eng, &q, &es, &n, &m), -PARLEY_ETRIMMED,
		     "%s from %llu", key, (unsigned long long)from);
	cr_assert_eq(m.first_seq, first);
	free(es);
}

Test(history, delete_range_and_stream_hide_at_once_and_survive_everything)
{
	append_n("c/d", 1, 100);
	flush_all();
	append_n("c/d", 101, 50);
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(eng, "c/d", 3, 120, &dr), 0);
	cr_assert_eq(dr.first_seq, 121);
	cr_assert_eq(dr.last_seq, 150);
	expect_trimmed("c/d", 1, 121);
	expect_trimmed("c/d", 120, 121);
	check_range("c/d", 121, 150, 16);
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, "c/d", 3, &m), 0);
	cr_assert_eq(m.first_seq, 121);
	/* durable before ack: a crash right after keeps it */
	crash_and_reopen(true);
	expect_trimmed("c/d", 5, 121);
	check_range("c/d", 121, 150, 16);
	flush_all();
	compact_all(true);
	reopen();
	expect_trimmed("c/d", 1, 121);
	check_range("c/d", 121, 150, 7);
	/* delete the whole stream: seqs are not reused */
	cr_assert_eq(pe_delete_sync(eng, "c/d", 3, UINT64_MAX, &dr), 0);
	cr_assert_eq(dr.first_seq, 151);
	expect_trimmed("c/d", 121, 151);
	flush_all();
	compact_all(true);
	crash_and_reopen(false);
	cr_assert_eq(pe_meta_sync(eng, "c/d", 3, &m), 0);
	cr_assert_eq(m.last_seq, 150);
	cr_assert_eq(m.first_seq, 151);
	append_n("c/d", 151, 5);
	check_range("c/d", 151, 155, 2);
	/* deleting a stream that never existed is a no-op */
	cr_assert_eq(pe_delete_sync(eng, "c/none", 6, 10, &dr), 0);
	cr_assert_eq(dr.last_seq, 0);
}

Test(history, retention_by_count_and_prefix_enforced_by_compaction)
{
	struct pe_retention_rule rules[] = {
		{.prefix = "p/", .plen = 2, .max_count = 30},
		{.prefix = "p/keep", .plen = 6}, /* longer prefix: keep all */
	};
	struct pe_options o = opts();
	o.retention = rules;
	o.nretention = 2;
	reopen_with(o);
	append_n("p/push", 1, 100);
	append_n("p/keepme", 1, 100);
	append_n("c/conv", 1, 100);
	flush_all();
	compact_all(true);
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, "p/push", 6, &m), 0);
	cr_assert_eq(m.last_seq, 100);
	cr_assert_eq(m.first_seq, 71, "first %llu", (unsigned long long)m.first_seq);
	expect_trimmed("p/push", 1, 71);
	check_range("p/push", 71, 100, 9);
	check_range("p/keepme", 1, 100, 50);
	check_range("c/conv", 1, 100, 50);
	reopen();
	expect_trimmed("p/push", 70, 71);
	check_range("p/push", 71, 100, 9);
	append_n("p/push", 101, 2);
	check_range("p/push", 71, 102, 100);
}

static int64_t wal_file(uint32_t shard, uint64_t seq)
{
	char path[128];
	snprintf(path, sizeof path, "/data2/wal/%u/wal-%016llx.log", shard,
		 (unsigned long long)seq);
	return pio_mem_file_size(io, path);
}

Test(history, wal_segments_released_even_with_an_idle_partition)
{
	struct pe_options o = opts();
	o.dir = "/data2";
	o.partitions = 2;
	o.shards = 1;
	o.memtable_bytes = 4u << 20;
	reopen_with(o);
	/* find keys for both partitions */
	char idle[16] = "", hot[16] = "";
	for (int i = 0; !idle[0] || !hot[0]; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%d", i);
		if (pe_partition_of(eng, k, strlen(k)) == 0 && !idle[0])
			snprintf(idle, sizeof idle, "%s", k);
		if (pe_partition_of(eng, k, strlen(k)) == 1 && !hot[0])
			snprintf(hot, sizeof hot, "%s", k);
	}
	append_n(idle, 1, 3); /* pins the first WAL segment */
	cr_assert_geq(wal_file(0, 1), 0);
	/* ~80 MiB of 64 KiB entries through 16 MiB segments */
	static char big[64 * 1024];
	memset(big, 'z', sizeof big - 1);
	for (int i = 0; i < 1300; i++) {
		struct pe_input in = {.len = sizeof big - 1, .payload = big};
		struct pe_append_req q = {.key = hot, .klen = strlen(hot),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		cr_assert_eq(append_wait(eng, &q, &r, 1000), 0);
	}
	/* segment 1 is gone (the idle partition was force-flushed), and the
	 * WAL holds a bounded number of segments (the forced flush commits
	 * asynchronously: give it a moment on a busy machine) */
	for (int i = 0; i < 5000 && wal_file(0, 1) != -ENOENT; i++)
		usleep(1000);
	cr_assert_eq(wal_file(0, 1), -ENOENT);
	int live = 0;
	for (uint64_t s = 1; s < 12; s++)
		live += wal_file(0, s) >= 0;
	cr_assert_leq(live, 4, "%d WAL segments still on disk", live);
	check_range(idle, 1, 3, 10);
	crash_and_reopen(true);
	check_range(idle, 1, 3, 10);
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, hot, strlen(hot), &m), 0);
	cr_assert_eq(m.last_seq, 1300);
	append_n(idle, 4, 1);
}

struct collect {
	pthread_mutex_t mu;
	uint64_t *seqs;
	size_t n, cap;
	int trimmed;
	uint64_t trimmed_to;
	bool closed;
	int err;
};

/* Records one update into c: each entry's seq (0 for one whose payload is
 * not make_text(seq), when check_text), trims, and the closing error. */
static enum pe_sub_ret collect_update(struct collect *c, const struct pe_sub_update *u,
				      bool check_text)
{
	pthread_mutex_lock(&c->mu);
	if (u->event == PE_SUB_ENTRIES) {
		for (uint32_t i = 0; i < u->count; i++) {
			if (c->n == c->cap) {
				c->cap = c->cap ? c->cap * 2 : 256;
				c->seqs = realloc(c->seqs, c->cap * sizeof *c->seqs);
				cr_assert_not_null(c->seqs);
			}
			char want[256];
			size_t l = check_text ? make_text(want, sizeof want, u->entries[i].seq) : 0;
			if (check_text && (u->entries[i].len != l ||
					   memcmp(u->entries[i].payload, want, l)))
				c->seqs[c->n++] = 0; /* wrong payload: fails below */
			else
				c->seqs[c->n++] = u->entries[i].seq;
		}
	} else if (u->event == PE_SUB_TRIMMED) {
		c->trimmed++;
		c->trimmed_to = u->next_seq;
	} else {
		c->closed = true;
		c->err = u->err;
	}
	pthread_mutex_unlock(&c->mu);
	return PE_SUB_CONTINUE;
}

static enum pe_sub_ret collect_cb(void *arg, struct pe_sub *sub,
				  const struct pe_sub_update *u)
{
	(void)sub;
	return collect_update(arg, u, true);
}

static void wait_count(struct collect *c, size_t want)
{
	for (int i = 0; i < 5000; i++) {
		pthread_mutex_lock(&c->mu);
		size_t n = c->n;
		pthread_mutex_unlock(&c->mu);
		if (n >= want)
			return;
		usleep(1000);
	}
	cr_assert_fail("subscription got %zu of %zu", c->n, want);
}

Test(history, subscription_backlog_reaches_into_history_then_goes_live)
{
	append_n("c/s", 1, 300);
	flush_all();
	append_n("c/s", 301, 100);
	flush_all();
	append_n("c/s", 401, 50);
	struct collect c = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct pe_sub *sub;
	cr_assert_eq(pe_subscribe(eng, "c/s", 3, 1, collect_cb, &c, &sub), 0);
	wait_count(&c, 450);
	append_n("c/s", 451, 10);
	wait_count(&c, 460);
	pthread_mutex_lock(&c.mu);
	for (size_t i = 0; i < c.n; i++)
		cr_assert_eq(c.seqs[i], i + 1);
	pthread_mutex_unlock(&c.mu);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
	/* a subscriber starting below a deletion is told so, then continues */
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(eng, "c/s", 3, 200, &dr), 0);
	struct collect c2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
	cr_assert_eq(pe_subscribe(eng, "c/s", 3, 5, collect_cb, &c2, &sub), 0);
	wait_count(&c2, 260);
	pthread_mutex_lock(&c2.mu);
	cr_assert_eq(c2.trimmed, 1);
	cr_assert_eq(c2.trimmed_to, 201);
	for (size_t i = 0; i < c2.n; i++)
		cr_assert_eq(c2.seqs[i], 201 + i);
	pthread_mutex_unlock(&c2.mu);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
	free(c.seqs);
	free(c2.seqs);
}

static char seg_path_found[256];
static int find_seg_cb(void *arg, const struct pe_seg_report *r)
{
	(void)arg;
	snprintf(seg_path_found, sizeof seg_path_found, "/data/hist/%u/%s",
		 r->partition, r->file);
	return 1;
}

static int count_cb(void *arg, const struct pe_seg_report *r)
{
	int *n = arg;
	(*n)++;
	cr_assert_gt(r->entries, 0);
	cr_assert_gt(r->file_bytes, 0);
	return 0;
}

Test(history, bit_flip_in_a_block_is_an_error_naming_segment_and_block)
{
	append_n("c/f", 1, 400);
	uint32_t p = pe_partition_of(eng, "c/f", 3);
	cr_assert_eq(pe_flush_sync(eng, p), 0);
	seg_path_found[0] = 0;
	struct pe_hist_report hr;
	cr_assert_eq(pe_history_inspect(io, "/data", p, true, &hr, find_seg_cb, NULL), 0);
	cr_assert_eq(hr.segments, 1);
	cr_assert_neq(seg_path_found[0], 0);
	pe_close(eng); /* cold cache */
	eng = NULL;
	cr_assert_eq(pio_mem_flip_bit(io, seg_path_found, 200, 3), 0);
	cr_assert_eq(pe_open(&base, &eng), 0);
	struct pe_read_req q = {.key = "c/f", .klen = 3, .from = 1,
				.dir = PE_FORWARD, .limit = 100};
	struct pe_entry *es;
	uint32_t n;
	for (int i = 0; i < 2; i++) /* and again: never wrong data */
		cr_assert_eq(pe_read_sync(eng, &q, &es, &n, NULL), -PARLEY_ECORRUPT);
	/* a tail starting in the damaged block is closed with the error */
	struct collect c = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct pe_sub *sub;
	cr_assert_eq(pe_subscribe(eng, "c/f", 3, 1, collect_cb, &c, &sub), 0);
	for (int i = 0; i < 5000; i++) {
		pthread_mutex_lock(&c.mu);
		bool closed = c.closed;
		pthread_mutex_unlock(&c.mu);
		if (closed)
			break;
		usleep(1000);
	}
	pthread_mutex_lock(&c.mu);
	cr_assert(c.closed);
	cr_assert_eq(c.err, -PARLEY_ECORRUPT);
	cr_assert_eq(c.n, 0); /* nothing delivered from the bad block */
	pthread_mutex_unlock(&c.mu);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
	free(c.seqs);
	/* offline verify names the file and the block */
	struct verify_ctx {
		int err;
		char msg[256];
	};
	struct pe_hist_report hr2;
	int bad = 0;
	int rc = pe_history_inspect(io, "/data", p, true, &hr2, count_cb, &bad);
	cr_assert_eq(rc, -PARLEY_ECORRUPT);
	cr_assert_eq(bad, 1);
	char err[256];
	rc = pe_history_dump(io, "/data", p, 1, NULL, NULL, err, sizeof err);
	(void)rc;
}

static int verify_err_cb(void *arg, const struct pe_seg_report *r)
{
	char *msg = arg;
	if (r->verify_err)
		snprintf(msg, 256, "%s", r->error);
	return 0;
}

Test(history, verify_report_names_file_and_block)
{
	append_n("c/v", 1, 400);
	uint32_t p = pe_partition_of(eng, "c/v", 3);
	cr_assert_eq(pe_flush_sync(eng, p), 0);
	cr_assert_eq(pe_history_inspect(io, "/data", p, false, NULL, find_seg_cb, NULL), 0);
	pe_close(eng);
	eng = NULL;
	cr_assert_eq(pio_mem_flip_bit(io, seg_path_found, 100, 0), 0);
	char msg[256] = "";
	cr_assert_eq(pe_history_inspect(io, "/data", p, true, NULL, verify_err_cb, msg),
		     -PARLEY_ECORRUPT);
	cr_assert(strstr(msg, "seg-") && strstr(msg, "block"), "message: %s", msg);
	cr_assert_eq(pe_open(&base, &eng), 0);
}

Test(history, crash_during_flush_and_compaction_loses_nothing)
{
	struct pe_options o = opts();
	o.memtable_bytes = 128 * 1024;
	reopen_with(o);
	uint64_t last[3] = {0, 0, 0};
	const char *keys[3] = {"c/t0", "c/t1", "u/t2"};
	char pl[256];
	for (int round = 0; round < 25; round++) {
		for (int i = 0; i < 150; i++) {
			int k = (i + round) % 3;
			make_text(pl, sizeof pl, last[k] + 1);
			struct pe_append_result r;
			int rc;
			while ((rc = append_text(keys[k], pl, NULL, &r)) == -PARLEY_EFULL)
				usleep(500);
			cr_assert_eq(rc, 0);
			cr_assert_eq(r.seq, last[k] + 1);
			last[k]++;
		}
		/* automatic flushes and compactions may be in flight now */
		crash_and_reopen(round % 2);
		for (int k = 0; k < 3; k++)
			check_range(keys[k], 1, last[k], 500);
	}
}

/* ---- model-based ------------------------------------------------------------ */

enum { NK = 10, MAXE = 6000 };

struct mstream {
	uint64_t last, first; /* first visible */
	uint64_t *payload_n;  /* seq -> text number */
	uint64_t pseq[16];    /* producer -> seq */
};

static void model_check_read(struct mstream *ms, const char *key,
			     struct parley_rng *rng, uint64_t seed, int step)
{
	bool back = parley_rng_below(rng, 2);
	uint64_t from = parley_rng_below(rng, ms->last + 3);
	if (back && parley_rng_below(rng, 4) == 0)
		from = UINT64_MAX;
	uint32_t lim = 1 + (uint32_t)parley_rng_below(rng, 80);
	struct pe_read_req q = {.key = key, .klen = strlen(key), .from = from,
				.dir = back ? PE_BACKWARD : PE_FORWARD,
				.limit = lim};
	struct pe_entry *es = NULL;
	uint32_t n = 0;
	struct pe_read_result m;
	int rc = pe_read_sync(eng, &q, &es, &n, &m);
	uint64_t F = ms->first;
	int want_rc = 0;
	uint64_t s0 = 0, cnt = 0;
	if (ms->last == 0) {
		cnt = 0;
	} else if (!back) {
		uint64_t f = from ? from : 1;
		if (f < F)
			want_rc = -PARLEY_ETRIMMED;
		else if (f <= ms->last) {
			s0 = f;
			cnt = PARLEY_MIN(lim, ms->last - f + 1);
		}
	} else {
		uint64_t f = PARLEY_MIN(from, ms->last);
		if (f < F && f != 0 && F > 1)
			want_rc = -PARLEY_ETRIMMED;
		else if (f >= F && f > 0) {
			s0 = f;
			cnt = PARLEY_MIN(lim, f - F + 1);
		}
	}
	cr_assert_eq(rc, want_rc, "seed %llu step %d: read %s %s from %llu: rc %d want %d (F %llu last %llu)",
		     (unsigned long long)seed, step, key, back ? "back" : "fwd",
		     (unsigned long long)from, rc, want_rc,
		     (unsigned long long)F, (unsigned long long)ms->last);
	if (rc) {
		cr_assert_eq(m.first_seq, F);
		return;
	}
	if (n != cnt)
		for (uint32_t i = 0; i < n; i++)
			fprintf(stderr, "  got seq %llu\n", (unsigned long long)es[i].seq);
	cr_assert_eq(n, cnt, "seed %llu step %d: read %s %s from %llu lim %u: n %u want %llu (F %llu last %llu)",
		     (unsigned long long)seed, step, key, back ? "back" : "fwd",
		     (unsigned long long)from, lim, n, (unsigned long long)cnt,
		     (unsigned long long)F, (unsigned long long)ms->last);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t s = back ? s0 - i : s0 + i;
		cr_assert_eq(es[i].seq, s, "seed %llu step %d", (unsigned long long)seed, step);
		char want[256];
		size_t l = make_text(want, sizeof want, ms->payload_n[s]);
		cr_assert_eq(es[i].len, l, "seed %llu step %d seq %llu",
			     (unsigned long long)seed, step, (unsigned long long)s);
		cr_assert_eq(memcmp(es[i].payload, want, l), 0,
			     "seed %llu step %d: wrong payload", (unsigned long long)seed, step);
	}
	free(es);
	if (ms->last) {
		cr_assert_eq(m.first_seq, F);
		cr_assert_eq(m.last_seq, ms->last);
	}
}

static enum pe_sub_ret model_sub_cb(void *arg, struct pe_sub *sub,
				    const struct pe_sub_update *u)
{
	(void)sub;
	return collect_update(arg, u, false);
}

static void unsub_done(void *arg)
{
	atomic_store((atomic_bool *)arg, true);
}

Test(history, model_random_ops_flush_compact_delete_crash, .timeout = 300)
{
	const char *ev = getenv("PARLEY_SEED");
	uint64_t seed = ev ? strtoull(ev, NULL, 0) : (uint64_t)time(NULL);
	fprintf(stderr, "history model seed=%llu (replay: PARLEY_SEED=%llu)\n",
		(unsigned long long)seed, (unsigned long long)seed);
	struct parley_rng rng = {seed};
	struct pe_options o = opts();
	o.memtable_bytes = 96 * 1024; /* automatic flushes happen too */
	reopen_with(o);
	static struct mstream ms[NK];
	memset(ms, 0, sizeof ms);
	for (int k = 0; k < NK; k++) {
		ms[k].payload_n = calloc(MAXE + 1, sizeof *ms[k].payload_n);
		ms[k].first = 1;
	}
	int steps = getenv("PARLEY_LONG") ? 40000 : 4000;
	uint64_t textn = 1;
	for (int step = 0; step < steps; step++) {
		uint32_t k = (uint32_t)parley_rng_below(&rng, NK);
		char key[16];
		snprintf(key, sizeof key, k < 6 ? "c/m%u" : "u/m%u", k);
		struct mstream *m = &ms[k];
		uint64_t op = parley_rng_below(&rng, 1000);
		if (op < 550 && m->last < MAXE - 1) {
			bool idem = parley_rng_below(&rng, 3) == 0;
			uint32_t pid = (uint32_t)parley_rng_below(&rng, 16);
			char prod[16] = {0}, pl[256];
			snprintf(prod, sizeof prod, "p%u", pid);
			uint64_t tn = textn++;
			make_text(pl, sizeof pl, tn);
			struct pe_append_result r;
			int rc;
			while ((rc = append_text(key, pl, idem ? prod : NULL, &r)) ==
			       -PARLEY_EFULL)
				usleep(500);
			cr_assert_eq(rc, 0, "seed %llu step %d rc %d",
				     (unsigned long long)seed, step, rc);
			if (idem && m->pseq[pid]) {
				cr_assert(r.duplicate, "seed %llu step %d",
					  (unsigned long long)seed, step);
				cr_assert_eq(r.seq, m->pseq[pid], "seed %llu step %d",
					     (unsigned long long)seed, step);
			} else {
				cr_assert_not(r.duplicate, "seed %llu step %d",
					      (unsigned long long)seed, step);
				cr_assert_eq(r.seq, m->last + 1, "seed %llu step %d: %s got seq %llu want %llu",
					     (unsigned long long)seed, step, key,
					     (unsigned long long)r.seq, (unsigned long long)m->last + 1);
				m->last++;
				m->payload_n[m->last] = tn;
				if (idem)
					m->pseq[pid] = r.seq;
			}
		} else if (op < 850) {
			model_check_read(m, key, &rng, seed, step);
		} else if (op < 870) {
			uint64_t through = parley_rng_below(&rng, 8) == 0
						   ? UINT64_MAX
						   : m->first + parley_rng_below(&rng, 40);
			struct pe_delete_result dr;
			cr_assert_eq(pe_delete_sync(eng, key, strlen(key), through, &dr), 0);
			uint64_t t = PARLEY_MIN(through, m->last);
			if (m->last && t >= m->first)
				m->first = t + 1;
			if (m->last) {
				cr_assert_eq(dr.first_seq, m->first, "seed %llu step %d: delete %s through %llu: first %llu want %llu (last %llu)",
					     (unsigned long long)seed, step, key, (unsigned long long)through,
					     (unsigned long long)dr.first_seq, (unsigned long long)m->first,
					     (unsigned long long)m->last);
			}
		} else if (op < 910) {
			cr_assert_eq(pe_flush_sync(eng, (uint32_t)parley_rng_below(&rng, 4)), 0);
		} else if (op < 940) {
			cr_assert_eq(pe_compact_sync(eng, (uint32_t)parley_rng_below(&rng, 4),
						     parley_rng_below(&rng, 2)), 0);
		} else if (op < 960) {
			struct pe_meta mt;
			cr_assert_eq(pe_meta_sync(eng, key, strlen(key), &mt), 0);
			if (m->last) {
				cr_assert_eq(mt.last_seq, m->last);
				cr_assert_eq(mt.first_seq, m->first, "seed %llu step %d",
					     (unsigned long long)seed, step);
			}
		} else if (op < 975 && m->last) {
			/* tail from a random seq up to the current end */
			uint64_t from = 1 + parley_rng_below(&rng, m->last);
			struct collect c = {.mu = PTHREAD_MUTEX_INITIALIZER};
			struct pe_sub *sub;
			cr_assert_eq(pe_subscribe(eng, key, strlen(key), from,
						  model_sub_cb, &c, &sub), 0);
			uint64_t start = PARLEY_MAX(from, m->first);
			size_t want = m->last >= start ? m->last - start + 1 : 0;
			wait_count(&c, want);
			for (int i = 0; from < m->first && i < 5000; i++) {
				pthread_mutex_lock(&c.mu);
				int t = c.trimmed;
				pthread_mutex_unlock(&c.mu);
				if (t)
					break;
				usleep(1000);
			}
			atomic_bool gone = false;
			while (pe_unsubscribe(sub, unsub_done, &gone) != 0)
				usleep(100);
			while (!atomic_load(&gone))
				usleep(100);
			pthread_mutex_lock(&c.mu);
			for (size_t i = 0; i < want; i++)
				cr_assert_eq(c.seqs[i], start + i, "seed %llu step %d",
					     (unsigned long long)seed, step);
			cr_assert_eq(c.trimmed, from < m->first ? 1 : 0,
				     "seed %llu step %d: sub from %llu first %llu last %llu trimmed %d to %llu",
				     (unsigned long long)seed, step, (unsigned long long)from,
				     (unsigned long long)m->first, (unsigned long long)m->last,
				     c.trimmed, (unsigned long long)c.trimmed_to);
			pthread_mutex_unlock(&c.mu);
			free(c.seqs);
		} else if (op < 990) {
			crash_and_reopen(parley_rng_below(&rng, 2));

		} else {
			reopen();
		}
	}
	for (int k = 0; k < NK; k++)
		free(ms[k].payload_n);
}

/* Deleted entries keep their idempotency records through flush,
 * compaction (which then drops every entry) and a crash. */
Test(history, idempotency_of_deleted_entries_survives_compaction_and_crash)
{
	struct pe_append_result r;
	cr_assert_eq(append_text("c/q", "one", "pA", &r), 0);
	cr_assert_eq(append_text("c/q", "two", "pB", &r), 0);
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(eng, "c/q", 3, 2, &dr), 0);
	flush_all();
	compact_all(true);
	cr_assert_eq(append_text("c/q", "three", "pC", &r), 0);
	cr_assert_eq(append_text("c/q", "one", "pA", &r), 0);
	cr_assert(r.duplicate);
	crash_and_reopen(false);
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, "c/q", 3, &m), 0);
	cr_assert_eq(m.last_seq, 3);
}

Test(history, idempotency_table_reloaded_from_segments_after_crashes)
{
	struct pe_append_result r;
	char prod[16], pl[32];
	for (int i = 0; i < 40; i++) {
		snprintf(prod, sizeof prod, "p%d", i % 16);
		snprintf(pl, sizeof pl, "x%d", i);
		cr_assert_eq(append_text(i % 3 ? "c/q" : "c/w", pl, i < 16 ? prod : NULL, &r), 0);
	}
	flush_all();
	for (int round = 0; round < 3; round++) {
		if (round == 1) compact_all(true);
		crash_and_reopen(false);
		for (int i = 0; i < 16; i++) {
			snprintf(prod, sizeof prod, "p%d", i);
			cr_assert_eq(append_text(i % 3 ? "c/q" : "c/w", "zz", prod, &r), 0);
			cr_assert(r.duplicate, "round %d producer %d", round, i);
		}
	}
}

/* Reads every entry of key (seqs 1..n) and checks that entry seq carries
 * producer "k<stream>-<seq>" (set by idem_flood). */
static void check_producers(const char *key, int stream, uint64_t n)
{
	uint64_t seq = 1;
	while (seq <= n) {
		struct pe_read_req q = {.key = key, .klen = strlen(key), .from = seq,
					.dir = PE_FORWARD, .limit = PE_MAX_READ};
		struct pe_entry *es;
		uint32_t cnt;
		struct pe_read_result m;
		cr_assert_eq(pe_read_sync(eng, &q, &es, &cnt, &m), 0);
		cr_assert_gt(cnt, 0);
		for (uint32_t i = 0; i < cnt; i++) {
			char want[16] = {0};
			snprintf(want, sizeof want, "k%d-%llu", stream,
				 (unsigned long long)es[i].seq);
			cr_assert_eq(es[i].seq, seq + i);
			cr_assert_eq(memcmp(es[i].producer, want, 16), 0,
				     "%s seq %llu: wrong producer", key,
				     (unsigned long long)es[i].seq);
		}
		free(es);
		seq += cnt;
	}
}

/* Segment readers do not keep their idempotency sections: with a block
 * cache far smaller than one section (evicted after every use), reads
 * still give every entry its producer, and the idempotency table is
 * rebuilt from the segments after crashes, before and after compaction. */
Test(history, idempotency_and_producers_with_a_cache_smaller_than_a_section)
{
	struct pe_options o = opts();
	o.block_cache_bytes = 16 * 1024;
	reopen_with(o);
	const int streams = 4;
	const uint64_t n = 1000;
	char key[16], prod[17], pl[32];
	struct pe_append_result r;
	for (uint64_t s = 1; s <= n; s++)
		for (int k = 0; k < streams; k++) {
			snprintf(key, sizeof key, "c/f%d", k);
			snprintf(prod, sizeof prod, "k%d-%llu", k, (unsigned long long)s);
			snprintf(pl, sizeof pl, "m%llu", (unsigned long long)s);
			cr_assert_eq(append_text(key, pl, prod, &r), 0);
			cr_assert_eq(r.seq, s, "%s: seq %llu dup %d", prod,
				     (unsigned long long)r.seq, r.duplicate);
		}
	flush_all();
	for (int round = 0; round < 3; round++) {
		if (round == 1)
			compact_all(true);
		if (round > 0)
			crash_and_reopen(false);
		for (int k = 0; k < streams; k++) {
			snprintf(key, sizeof key, "c/f%d", k);
			check_producers(key, k, n);
			for (uint64_t s = 1; s <= n; s += 97) {
				snprintf(prod, sizeof prod, "k%d-%llu", k,
					 (unsigned long long)s);
				cr_assert_eq(append_text(key, "retry", prod, &r), 0);
				cr_assert(r.duplicate, "round %d %s", round, prod);
				cr_assert_eq(r.seq, s, "round %d %s: seq %llu", round,
					     prod, (unsigned long long)r.seq);
			}
		}
	}
}

/* ---- long: the 10-million-entry run (PARLEY_LONG=1) ------------------- */

static size_t long_text(char *buf, size_t cap, uint32_t stream, uint64_t seq)
{
	return make_text(buf, cap, seq * 1000u + stream);
}

static void long_check_stream(uint32_t s, uint64_t first, uint64_t last)
{
	char key[16], want[256];
	snprintf(key, sizeof key, "c/long%03u", s);
	uint64_t seq = first;
	while (seq <= last) {
		struct pe_read_req q = {.key = key, .klen = strlen(key), .from = seq,
					.dir = PE_FORWARD, .limit = PE_MAX_READ};
		struct pe_entry *es;
		uint32_t n;
		struct pe_read_result m;
		cr_assert_eq(pe_read_sync(eng, &q, &es, &n, &m), 0, "%s @%llu", key,
			     (unsigned long long)seq);
		cr_assert_gt(n, 0, "%s ends at %llu, want %llu", key,
			     (unsigned long long)seq, (unsigned long long)last);
		for (uint32_t i = 0; i < n; i++) {
			cr_assert_eq(es[i].seq, seq + i);
			size_t l = long_text(want, sizeof want, s, seq + i);
			cr_assert(es[i].len == l && !memcmp(es[i].payload, want, l),
				  "%s seq %llu differs from the model", key,
				  (unsigned long long)(seq + i));
		}
		free(es);
		seq += n;
	}
	struct pe_meta mt;
	cr_assert_eq(pe_meta_sync(eng, key, strlen(key), &mt), 0);
	cr_assert_eq(mt.last_seq, last);
	cr_assert_eq(mt.first_seq, first);
}

/*
 * 10M entries (PARLEY_HIST_ENTRIES to change) in 1000 streams through
 * automatic flushes and compactions with a crash (lost unsynced data,
 * torn writes) every million entries and deletions of some prefixes; at
 * the end a full compaction, one more crash, and every entry of every
 * stream is read back and compared with the model.
 */
Test(history, long_ten_million_entries_flush_compact_crash, .timeout = 7200)
{
	if (!getenv("PARLEY_LONG"))
		cr_skip_test("long tier: set PARLEY_LONG=1");
	const char *ev = getenv("PARLEY_SEED");
	uint64_t seed = ev ? strtoull(ev, NULL, 0) : (uint64_t)time(NULL);
	uint64_t total = getenv("PARLEY_HIST_ENTRIES")
				 ? strtoull(getenv("PARLEY_HIST_ENTRIES"), NULL, 0)
				 : 10000000u;
	fprintf(stderr, "long history run: %llu entries seed=%llu\n",
		(unsigned long long)total, (unsigned long long)seed);
	struct parley_rng rng = {seed};
	struct pe_options o = opts();
	o.memtable_bytes = 16u << 20;
	reopen_with(o);
	enum { LS = 1000, BATCH = 100 };
	static uint64_t last[LS], first[LS];
	for (int s = 0; s < LS; s++)
		first[s] = 1;
	static char pls[BATCH][256];
	struct pe_input in[BATCH];
	uint64_t done = 0, next_crash = 1000000;
	uint64_t t0 = parley_mono_ns();
	while (done < total) {
		uint32_t s = (uint32_t)parley_rng_below(&rng, LS);
		uint32_t cnt = (uint32_t)PARLEY_MIN((uint64_t)BATCH, total - done);
		for (uint32_t i = 0; i < cnt; i++) {
			size_t l = long_text(pls[i], sizeof pls[i], s, last[s] + 1 + i);
			in[i] = (struct pe_input){.type = 1, .len = (uint32_t)l,
						  .payload = pls[i]};
		}
		char key[16];
		snprintf(key, sizeof key, "c/long%03u", s);
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = in, .count = cnt};
		struct pe_append_result r;
		cr_assert_eq(append_wait(eng, &q, &r, 200), 0);
		cr_assert_eq(r.seq, last[s] + 1);
		last[s] += cnt;
		done += cnt;
		if (parley_rng_below(&rng, 2000) == 0) {
			uint64_t t = first[s] + parley_rng_below(&rng, 200);
			struct pe_delete_result dr;
			cr_assert_eq(pe_delete_sync(eng, key, strlen(key), t, &dr), 0);
			if (PARLEY_MIN(t, last[s]) >= first[s])
				first[s] = PARLEY_MIN(t, last[s]) + 1;
			cr_assert_eq(dr.first_seq, first[s]);
		}
		if (done >= next_crash) {
			next_crash += 1000000;
			crash_and_reopen(parley_rng_below(&rng, 2));
			for (int k = 0; k < 5; k++) {
				uint32_t c = (uint32_t)parley_rng_below(&rng, LS);
				if (last[c])
					long_check_stream(c, first[c], last[c]);
			}
			uint64_t segs = 0, bytes = 0, fl = 0, cp = 0;
			for (uint32_t p = 0; p < pe_partition_count(eng); p++) {
				struct pe_partition_status st;
				pe_partition_status(eng, p, &st);
				segs += st.segments;
				bytes += st.segment_bytes;
			}
			(void)fl;
			(void)cp;
			fprintf(stderr, "  %llu entries, %.1f s, %llu segments, %llu segment bytes\n",
				(unsigned long long)done,
				(double)(parley_mono_ns() - t0) / 1e9,
				(unsigned long long)segs, (unsigned long long)bytes);
		}
	}
	compact_all(true);
	crash_and_reopen(true);
	for (uint32_t s = 0; s < LS; s++)
		if (last[s])
			long_check_stream(s, first[s], last[s]);
	fprintf(stderr, "long history run: every read identical to the model, %.1f s\n",
		(double)(parley_mono_ns() - t0) / 1e9);
}

/* Regression (log core, found by parley-hist-engine on a real disk): a
 * batch ending fewer than 64 bytes before a 4 KiB boundary, followed by
 * another batch, read as "bad record header" at recovery — the padding
 * check looked at 64 bytes and saw the next batch's header. */
Test(history, wal_batch_ending_just_before_a_block_boundary_recovers)
{
	for (uint32_t tail = 8; tail <= 64; tail += 8) {
		pe_close(eng);
		eng = NULL;
		struct pe_options o = opts();
		char d[32];
		snprintf(d, sizeof d, "/b%u", tail);
		o.dir = d;
		o.partitions = 1;
		o.shards = 1;
		reopen_with(o);
		/* record = 64 header + 48 + len body (key "c/x"); the first
		 * batch starts at 4096 and should end at 8192 - tail */
		static char big[8192];
		memset(big, 'q', sizeof big);
		uint32_t len = 4096 - tail - 64 - 48;
		struct pe_input in = {.len = len, .payload = big};
		struct pe_append_req q = {.key = "c/x", .klen = 3,
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
		in.len = 10;
		cr_assert_eq(pe_append_sync(eng, &q, &r), 0); /* a later batch */
		reopen();
		struct pe_partition_status st;
		cr_assert_eq(pe_partition_status(eng, 0, &st), 0);
		cr_assert_eq(st.state, PE_PART_OK, "tail %u: %s", tail, st.error);
		struct pe_meta m;
		cr_assert_eq(pe_meta_sync(eng, "c/x", 3, &m), 0);
		cr_assert_eq(m.last_seq, 2);
	}
}

/* ---- faults in the history write path ------------------------------------------ */

static uint64_t fake_now = 1000000000000ull;
static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return __atomic_load_n(&fake_now, __ATOMIC_SEQ_CST);
}

Test(history, retention_by_age_trims_old_entries_at_compaction)
{
	struct pe_retention_rule rules[] = {
		{.prefix = "o/", .plen = 2, .max_age_ms = 7ull * 86400000},
	};
	struct pe_options o = opts();
	o.dir = "/age";
	o.retention = rules;
	o.nretention = 1;
	o.clock_ms = fake_clock;
	reopen_with(o);
	append_n("o/outbox", 1, 40);  /* at day 0 */
	append_n("c/conv", 1, 40);
	__atomic_store_n(&fake_now, fake_now + 6ull * 86400000, __ATOMIC_SEQ_CST);
	append_n("o/outbox", 41, 10); /* at day 6 */
	flush_all();
	__atomic_store_n(&fake_now, fake_now + 2ull * 86400000, __ATOMIC_SEQ_CST);
	compact_all(true);            /* day 8: the day-0 entries are past 7 days */
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, "o/outbox", 8, &m), 0);
	cr_assert_eq(m.first_seq, 41, "first %llu", (unsigned long long)m.first_seq);
	cr_assert_eq(m.last_seq, 50);
	expect_trimmed("o/outbox", 1, 41);
	check_range("o/outbox", 41, 50, 4);
	check_range("c/conv", 1, 40, 16); /* no rule for c/: kept */
	crash_and_reopen(false);
	expect_trimmed("o/outbox", 40, 41);
	check_range("o/outbox", 41, 50, 4);
}

Test(history, failed_segment_write_keeps_everything_in_memory_and_retries)
{
	append_n("c/e", 1, 300);
	uint32_t p = pe_partition_of(eng, "c/e", 3);
	/* every write fails while the flush runs (a single fault could be
	 * taken by the WAL's spare-file thread instead); no append is in
	 * flight, so only history files and spares see it */
	pio_mem_inject(io, PIO_FAULT_ENOSPC, 1000000);
	cr_assert_neq(pe_flush_sync(eng, p), 0);
	pio_mem_inject(io, PIO_FAULT_ENOSPC, 0);
	struct pe_partition_status st;
	cr_assert_eq(pe_partition_status(eng, p, &st), 0);
	cr_assert_eq(st.segments, 0);
	cr_assert_eq(st.state, PE_PART_OK);
	check_range("c/e", 1, 300, 64);
	cr_assert_eq(pe_flush_sync(eng, p), 0); /* retried: works */
	cr_assert_eq(pe_partition_status(eng, p, &st), 0);
	cr_assert_eq(st.segments, 1);
	crash_and_reopen(true);
	check_range("c/e", 1, 300, 64);
	append_n("c/e", 301, 2);
}

static void put_file(const char *path, const void *b, size_t n)
{
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, PIO_CREATE, &f), 0);
	cr_assert_eq(io->ops->pwrite(io, f, b, n, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);
}

/* What a crash in the middle of a flush or a compaction leaves: a torn
 * temp file and a complete-looking segment no manifest names. Neither is
 * read; open removes both. */
Test(history, torn_and_orphan_segment_files_are_ignored_and_removed)
{
	append_n("c/o", 1, 100);
	uint32_t p = pe_partition_of(eng, "c/o", 3);
	cr_assert_eq(pe_flush_sync(eng, p), 0);
	append_n("c/o", 101, 20);
	pe_close(eng);
	eng = NULL;
	char tmp[128], orphan[128];
	snprintf(tmp, sizeof tmp, "/data/hist/%u/seg-0000000000000007.pseg.tmp", p);
	snprintf(orphan, sizeof orphan, "/data/hist/%u/seg-0000000000000008.pseg", p);
	static uint8_t junk[5000];
	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	put_file(tmp, junk, 1234);
	put_file(orphan, junk, sizeof junk);
	cr_assert_eq(pe_open(&base, &eng), 0);
	check_range("c/o", 1, 120, 50);
	cr_assert_eq(pio_mem_file_size(io, tmp), -ENOENT);
	cr_assert_eq(pio_mem_file_size(io, orphan), -ENOENT);
	struct pe_partition_status st;
	cr_assert_eq(pe_partition_status(eng, p, &st), 0);
	cr_assert_eq(st.segments, 1);
}
