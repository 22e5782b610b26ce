/*
 * test_hpart.c — engine/hpart.c end to end on the in-memory backend:
 * flushes (first one trains and stores a dictionary), merged reads equal a
 * model after every step, deletion marks, size-tiered compaction with
 * count retention (first-retained marks, trimmed reads), paced compaction
 * on a fake clock, reopen (manifest, dictionaries, readers), a failed
 * manifest store changing nothing, orphans from a crashed flush cleaned
 * up, and a damaged live segment or missing dictionary refusing to open.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist_corpus.h"
#include "hpart.h"
#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define NS 30
#define MAXE 4000

struct ment {
	struct pe_entry e;
	char pay[256];
	int round;
};

static struct ment model[NS][MAXE];
static size_t mcount[NS];
static uint64_t mdel[NS];
static char mkey[NS][16];

/* A test's start of the model: nothing appended or deleted yet, and the
 * NS streams named prefix + two digits. */
static void model_reset(const char *prefix)
{
	memset(mcount, 0, sizeof mcount);
	memset(mdel, 0, sizeof mdel);
	for (int s = 0; s < NS; s++)
		snprintf(mkey[s], sizeof mkey[s], "%s%02d", prefix, s);
}

/* source over the entries of one round, (key, seq) order */
struct src {
	int round;
	int s;
	size_t i;
};

static int src_next(void *arg, const uint8_t **key, size_t *klen, struct pe_entry *e)
{
	struct src *x = arg;
	for (; x->s < NS; x->s++, x->i = 0) {
		for (; x->i < mcount[x->s]; x->i++) {
			if (model[x->s][x->i].round != x->round)
				continue;
			*key = (const uint8_t *)mkey[x->s];
			*klen = strlen(mkey[x->s]);
			*e = model[x->s][x->i].e;
			x->i++;
			return 1;
		}
	}
	return 0;
}

static int src_rewind(void *arg)
{
	struct src *x = arg;
	x->s = 0;
	x->i = 0;
	return 0;
}

static void gen_round(struct parley_rng *rng, int round, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		int s = (int)parley_rng_below(rng, NS);
		if (mcount[s] == MAXE)
			continue;
		struct ment *m = &model[s][mcount[s]];
		m->e.seq = ++mcount[s];
		m->e.ts_ms = 1763900000000ull + (uint64_t)round * 3600000 + k * 1000;
		m->e.type = 1;
		m->e.len = (uint32_t)hist_message(rng, m->pay);
		m->e.payload = (const uint8_t *)m->pay;
		m->round = round;
	}
	/* stream keys sort as c/00.., r/..: set once */
}

static uint64_t model_first_visible(int s, uint64_t retained_from)
{
	uint64_t fv = mdel[s] + 1;
	return PARLEY_MAX(fv, retained_from);
}

/* Compare hpart_read with the model for every stream, a few shapes each.
 * first_vis[s]: the model's first visible seq; upto: last flushed round. */
static void check_reads(struct hpart *h, const uint64_t *first_vis, int upto,
			struct parley_rng *rng)
{
	static struct pe_entry out[1000];
	for (int s = 0; s < NS; s++) {
		/* visible flushed entries */
		size_t lo = first_vis[s] ? first_vis[s] - 1 : 0, hi = 0;
		for (size_t i = 0; i < mcount[s]; i++)
			if (model[s][i].round <= upto)
				hi = i + 1;
		for (int t = 0; t < 4; t++) {
			struct history_read_req q = {
				.key = mkey[s], .klen = strlen(mkey[s]),
				.dir = (enum pe_dir)(t & 1),
				.limit = 1 + (uint32_t)parley_rng_below(rng, 300),
			};
			q.from = t < 2 ? (t ? UINT64_MAX : 1) : 1 + parley_rng_below(rng, mcount[s] + 2);
			struct history_read_res res;
			struct history_hold *hold;
			cr_assert_eq(hpart_read(h, &q, out, &res, &hold), 0);
			/* expected */
			size_t n = 0;
			if (q.dir == PE_FORWARD) {
				size_t i = PARLEY_MAX(lo, q.from ? q.from - 1 : 0);
				for (; i < hi && n < q.limit; i++, n++) {
					cr_assert_lt(n, res.count, "stream %d fwd from %llu: too few",
						     s, (unsigned long long)q.from);
					cr_assert_eq(out[n].seq, model[s][i].e.seq,
						     "stream %d fwd from %llu pos %zu: got %llu want %llu (lo %zu hi %zu upto %d)",
						     s, (unsigned long long)q.from, n,
						     (unsigned long long)out[n].seq,
						     (unsigned long long)model[s][i].e.seq, lo, hi, upto);
					cr_assert_eq(out[n].len, model[s][i].e.len);
					cr_assert_eq(memcmp(out[n].payload, model[s][i].pay, out[n].len), 0);
				}
				cr_assert_eq(res.end, i >= hi);
				cr_assert_eq(res.trimmed, q.from < lo + 1);
			} else {
				size_t i = q.from >= hi ? hi : q.from;
				for (; i > lo && n < q.limit; i--, n++) {
					cr_assert_lt(n, res.count, "stream %d back", s);
					cr_assert_eq(out[n].seq, model[s][i - 1].e.seq,
						     "stream %d back from %llu pos %zu: got %llu want %llu (lo %zu hi %zu upto %d)",
						     s, (unsigned long long)q.from, n,
						     (unsigned long long)out[n].seq,
						     (unsigned long long)model[s][i - 1].e.seq, lo, hi, upto);
				}
				cr_assert_eq(res.end, i <= lo);
			}
			cr_assert_eq(res.count, n, "stream %d dir %d from %llu", s, q.dir,
				     (unsigned long long)q.from);
			history_hold_free(hold);
		}
	}
}

static void do_flush(struct hpart *h, int round, struct hpart_flush_result *fr)
{
	struct hpart_fjob *j;
	cr_assert_eq(hpart_flush_begin(h, 1000 + (uint64_t)round, &j), 0);
	struct hpart_fjob *j2;
	cr_assert_eq(hpart_flush_begin(h, 1, &j2), -PARLEY_EAGAIN, "one flush at a time");
	struct src x = { .round = round };
	struct hpart_src src = { src_next, src_rewind, &x };
	cr_assert_eq(hpart_flush_run(j, &src), 0);
	cr_assert_eq(hpart_flush_commit(h, j, fr), 0);
}

static int count_hist_files(void *arg, const char *name)
{
	int *n = arg;
	if (!strncmp(name, "seg-", 4) || !strncmp(name, "dict-", 5))
		(*n)++;
	return 0;
}

static uint64_t fake_now, slept;
static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}
static void fake_sleep(void *arg, uint64_t ns)
{
	(void)arg;
	fake_now += ns;
	slept += ns;
}

/* A fresh in-memory backend (faults seeded by `seed`) with directory `dir`. */
static struct pio *mem_dir(uint64_t seed, const char *dir)
{
	struct pio *io = pio_mem_new(seed);
	cr_assert_not_null(io);
	cr_assert_eq(io->ops->mkdir(io, dir), 0);
	return io;
}

/* hpart_open of dir with o, which must succeed. */
static struct hpart *hopen(struct pio *io, const char *dir, const struct hpart_opts *o)
{
	struct hpart *h;
	cr_assert_eq(hpart_open(io, dir, o, &h), 0);
	return h;
}

Test(hpart, flush_read_delete_compact_reopen)
{
	uint64_t seed = hist_seed("hpart.e2e");
	struct parley_rng rng = { seed };
	model_reset("c/x");
	for (int s = 0; s < 10; s++) /* the first ten under another prefix */
		snprintf(mkey[s], sizeof mkey[s], "c/r%02d", s);
	struct pio *io = mem_dir(seed, "pp");
	struct bcache *cache;
	cr_assert_eq(bcache_new(256 * 1024, &cache), 0);
	struct retention_rule rules[] = { { (const uint8_t *)"c/r", 3, 0, 100 } };
	struct retention_policy pol = { rules, 1 };
	struct hpart_opts o = { .partition = 3, .cache = cache, .block_bytes = 4096,
				.dict_bytes = 16 * 1024, .retention = &pol };
	struct hpart *h = hopen(io, "pp", &o);
	uint64_t fv[NS];
	for (int s = 0; s < NS; s++)
		fv[s] = 1;

	/* six flushes; the first trains the dictionary */
	for (int round = 1; round <= 6; round++) {
		gen_round(&rng, round, 600);
		struct hpart_flush_result fr;
		do_flush(h, round, &fr);
		if (round == 1) {
			cr_assert(fr.trained);
			cr_assert_neq(fr.dict_id, 0u);
		} else {
			cr_assert_not(fr.trained, "ratio has not degraded");
		}
		cr_assert_eq(fr.flushed_index, 1000u + (uint64_t)round);
		check_reads(h, fv, round, &rng);
	}
	const struct hman *m = hpart_manifest(h);
	cr_assert_eq(m->nsegs, 6u);
	cr_assert_neq(m->dict_id, 0u);
	cr_assert_eq(m->flushed_index, 1006u);

	/* delete ranges on a few streams */
	for (int s = 0; s < NS; s += 7) {
		uint64_t d = mcount[s] / 3;
		cr_assert_eq(hpart_delete_through(h, mkey[s], strlen(mkey[s]), d), 0);
		mdel[s] = d;
		fv[s] = model_first_visible(s, 1);
	}
	check_reads(h, fv, 6, &rng);

	/* a failed manifest store changes nothing */
	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	cr_assert_eq(hpart_delete_through(h, mkey[1], strlen(mkey[1]), 5), -EIO);
	check_reads(h, fv, 6, &rng);

	/* compaction: six small segments form one tier; count retention on c/r */
	struct hpart_compact_opts co = { .now_ms = 1763900000000ull + 10ull * 3600000,
					 .rate_bytes_per_s = 1000000,
					 .sleep_ns = fake_sleep, .now_ns = fake_clock };
	fake_now = 1;
	slept = 0;
	struct hpart_cjob *cj;
	cr_assert_eq(hpart_compact_begin(h, &co, &cj), 0);
	struct hpart_cjob *cj2;
	cr_assert_eq(hpart_compact_begin(h, &co, &cj2), -PARLEY_EAGAIN);
	/* a flush may run and commit while the compaction runs */
	gen_round(&rng, 7, 300);
	struct hpart_flush_result fr7;
	struct compact_stats st;
	cr_assert_eq(hpart_compact_run(cj, &st), 0);
	do_flush(h, 7, &fr7);
	cr_assert_eq(hpart_compact_commit(h, cj), 0);
	printf("compaction: in %llu out %llu tomb %llu retention %llu read %llu written %llu slept %.3f s\n",
	       (unsigned long long)st.entries_in, (unsigned long long)st.entries_out,
	       (unsigned long long)st.dropped_tomb, (unsigned long long)st.dropped_retention,
	       (unsigned long long)st.bytes_read, (unsigned long long)st.bytes_written,
	       (double)slept / 1e9);
	cr_assert_gt(st.dropped_retention, 0u);
	cr_assert_gt(st.dropped_tomb, 0u);
	/* paced at 1 MB/s with a 64 KiB burst */
	uint64_t io_bytes = st.bytes_read + st.bytes_written;
	cr_assert_geq(slept + 65536ull * 1000, (io_bytes - PARLEY_MIN(io_bytes, 65536ull)) * 1000,
		      "slept %llu ns for %llu bytes", (unsigned long long)slept,
		      (unsigned long long)io_bytes);
	m = hpart_manifest(h);
	cr_assert_eq(m->nsegs, 2u, "compacted output + the flush that ran meanwhile");
	/* the model after compaction: c/r streams keep their last 100 of the
	 * flushed rounds 1..6 */
	for (int s = 0; s < 10; s++) {
		uint64_t last6 = 0;
		for (size_t i = 0; i < mcount[s]; i++)
			if (model[s][i].round <= 6)
				last6 = model[s][i].e.seq;
		uint64_t keep_from = last6 > 100 ? last6 - 99 : 1;
		fv[s] = model_first_visible(s, keep_from);
		const struct hman_stream *hs = hman_stream(m, mkey[s], strlen(mkey[s]));
		uint64_t want = PARLEY_MAX(keep_from, mdel[s] + 1);
		if (want > 1) {
			cr_assert_not_null(hs);
			cr_assert_eq(hs->first_retained, want,
				     "stream %d: first-retained mark from the compaction report", s);
		} else {
			cr_assert(!hs || hs->first_retained <= 1, "stream %d: nothing dropped", s);
		}
		uint64_t f, l;
		if (hpart_stream_bounds(h, mkey[s], strlen(mkey[s]), &f, &l) == 0)
			cr_assert_eq(f, fv[s], "stream %d first visible", s);
	}
	check_reads(h, fv, 7, &rng);

	/* reopen: same answers; an orphan from a crashed flush is removed */
	hpart_close(h);
	bcache_free(cache);
	cr_assert_eq(bcache_new(256 * 1024, &cache), 0);
	o.cache = cache;
	struct seg_writer *w;
	cr_assert_eq(seg_writer_new(io, "pp", 999, NULL, &w), 0);
	cr_assert_eq(seg_writer_add(w, "zz", 2, &model[0][0].e), 0);
	cr_assert_eq(seg_writer_finish(w, NULL), 0);
	cr_assert_geq(pio_mem_file_size(io, "pp/seg-00000000000003e7.pseg"), 0);
	h = hopen(io, "pp", &o);
	cr_assert_eq(pio_mem_file_size(io, "pp/seg-00000000000003e7.pseg"), -ENOENT);
	check_reads(h, fv, 7, &rng);
	struct hpart_seg_view views[8];
	size_t nv = hpart_segments(h, views, 8);
	cr_assert_eq(nv, 2u);
	for (size_t i = 0; i < nv; i++) {
		struct seg_verify_report rep;
		cr_assert_eq(seg_verify((struct seg_reader *)views[i].r, &rep), 0);
		cr_assert_eq(views[i].info.dict_id, hpart_manifest(h)->dict_id);
	}
	/* compaction of everything while nothing expires further */
	co.all = true;
	co.rate_bytes_per_s = 0;
	cr_assert_eq(hpart_compact_begin(h, &co, &cj), 0);
	cr_assert_eq(hpart_compact_run(cj, NULL), 0);
	cr_assert_eq(hpart_compact_commit(h, cj), 0);
	cr_assert_eq(hpart_manifest(h)->nsegs, 1u);
	/* count retention now counts round 7 too: the window moved */
	for (int s = 0; s < 10; s++)
		fv[s] = model_first_visible(s, mcount[s] > 100 ? mcount[s] - 99 : 1);
	check_reads(h, fv, 7, &rng);
	hpart_close(h);

	/* a damaged live segment: the partition refuses to open */
	char path[128];
	snprintf(path, sizeof path, "pp/seg-%016llx.pseg", (unsigned long long)views[0].id);
	struct hman mm;
	cr_assert_eq(hman_load(io, "pp", &mm), 0);
	snprintf(path, sizeof path, "pp/seg-%016llx.pseg", (unsigned long long)mm.segs[0].id);
	int64_t sz = pio_mem_file_size(io, path);
	cr_assert_gt(sz, 0);
	cr_assert_eq(pio_mem_flip_bit(io, path, (uint64_t)sz - 3, 1), 0);
	cr_assert_eq(hpart_open(io, "pp", &o, &h), -PARLEY_ECORRUPT);
	cr_assert_eq(pio_mem_flip_bit(io, path, (uint64_t)sz - 3, 1), 0);
	h = hopen(io, "pp", &o);
	hpart_close(h);
	/* its dictionary gone: refuses too */
	char dpath[128], dname[64];
	snprintf(dpath, sizeof dpath, "pp/%s", dict_file_name(dname, sizeof dname, mm.dict_id));
	cr_assert_eq(io->ops->unlink(io, dpath), 0);
	cr_assert_eq(hpart_open(io, "pp", &o, &h), -PARLEY_ECORRUPT);
	hman_free(&mm);
	bcache_free(cache);
	pio_free(io);
}

Test(hpart, abandoned_jobs_leave_nothing)
{
	uint64_t seed = hist_seed("hpart.abandon");
	struct parley_rng rng = { seed };
	model_reset("c/x");
	struct pio *io = mem_dir(seed, "pa");
	struct hpart_opts o = { .partition = 1, .dict_bytes = 8192 };
	struct hpart *h = hopen(io, "pa", &o);
	gen_round(&rng, 1, 500);
	struct hpart_fjob *j;
	cr_assert_eq(hpart_flush_begin(h, 10, &j), 0);
	struct src x = { .round = 1 };
	struct hpart_src src = { src_next, src_rewind, &x };
	cr_assert_eq(hpart_flush_run(j, &src), 0);
	/* the manifest store fails: the job stays the caller's, then abandoned */
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 1);
	cr_assert_eq(hpart_flush_commit(h, j, NULL), -EIO);
	hpart_flush_abandon(h, j);
	cr_assert_eq(hpart_manifest(h)->nsegs, 0u);
	cr_assert_eq(hpart_manifest(h)->dict_id, 0u);
	/* neither the segment nor the trained dictionary remains */
	int nfiles = 0;
	cr_assert_eq(io->ops->list(io, "pa", count_hist_files, &nfiles), 0);
	cr_assert_eq(nfiles, 0);
	cr_assert_eq(pio_mem_file_size(io, "pa/seg-0000000000000001.pseg"), -ENOENT);
	/* and a retry succeeds */
	cr_assert_eq(hpart_flush_begin(h, 10, &j), 0);
	x = (struct src){ .round = 1 };
	cr_assert_eq(hpart_flush_run(j, &src), 0);
	struct hpart_flush_result fr;
	cr_assert_eq(hpart_flush_commit(h, j, &fr), 0);
	cr_assert(fr.trained);
	check_reads(h, (uint64_t[NS]){ [0 ... NS - 1] = 1 }, 1, &rng);
	hpart_close(h);
	pio_free(io);
}

Test(hpart, stream_meta_marks_and_read_only)
{
	uint64_t seed = hist_seed("hpart.meta");
	struct parley_rng rng = { seed };
	model_reset("u/");
	struct pio *io = mem_dir(seed, "pq");
	struct hpart_opts o = { .partition = 2, .block_bytes = 2048 };
	struct hpart *h = hopen(io, "pq", &o);
	gen_round(&rng, 1, 400);
	do_flush(h, 1, NULL);
	gen_round(&rng, 2, 400);
	do_flush(h, 2, NULL);
	for (int s = 0; s < NS; s++) {
		uint64_t f, l, t;
		if (!mcount[s]) {
			cr_assert_eq(hpart_stream_meta(h, mkey[s], strlen(mkey[s]), &f, &l, &t),
				     -PARLEY_ENOTFOUND);
			continue;
		}
		cr_assert_eq(hpart_stream_meta(h, mkey[s], strlen(mkey[s]), &f, &l, &t), 0);
		cr_assert_eq(f, 1u);
		cr_assert_eq(l, mcount[s]);
		cr_assert_eq(t, model[s][mcount[s] - 1].e.ts_ms, "last ts continues the stream");
	}
	/* in-memory mark: visible at once, not durable until a commit */
	int s0 = 0;
	while (mcount[s0] < 3)
		s0++;
	cr_assert_eq(hpart_mark_deleted(h, mkey[s0], strlen(mkey[s0]), 2), 0);
	uint64_t f, l, t;
	cr_assert_eq(hpart_stream_meta(h, mkey[s0], strlen(mkey[s0]), &f, &l, &t), 0);
	cr_assert_eq(f, 3u);
	hpart_close(h);
	h = hopen(io, "pq", &o);
	cr_assert_eq(hpart_stream_meta(h, mkey[s0], strlen(mkey[s0]), &f, &l, &t), 0);
	cr_assert_eq(f, 1u, "no commit happened: the mark was not durable");
	cr_assert_eq(hpart_mark_deleted(h, mkey[s0], strlen(mkey[s0]), 2), 0);
	gen_round(&rng, 3, 100);
	do_flush(h, 3, NULL); /* the flush commit stores the mark */
	hpart_close(h);
	h = hopen(io, "pq", &o);
	cr_assert_eq(hpart_stream_meta(h, mkey[s0], strlen(mkey[s0]), &f, &l, &t), 0);
	cr_assert_eq(f, 3u, "stored with the flush");
	/* whole stream deleted: first visible is past the end */
	cr_assert_eq(hpart_delete_through(h, mkey[s0], strlen(mkey[s0]), UINT64_MAX), 0);
	cr_assert_eq(hpart_stream_meta(h, mkey[s0], strlen(mkey[s0]), &f, &l, &t), 0);
	cr_assert_eq(f, l + 1);
	cr_assert_eq(hpart_stream_bounds(h, mkey[s0], strlen(mkey[s0]), &f, &l), -PARLEY_ENOTFOUND);
	hpart_close(h);
	/* read only: no cleanup, no jobs, reads work */
	struct seg_writer *w;
	cr_assert_eq(seg_writer_new(io, "pq", 777, NULL, &w), 0);
	cr_assert_eq(seg_writer_add(w, "zz", 2, &model[s0][0].e), 0);
	cr_assert_eq(seg_writer_finish(w, NULL), 0);
	o.read_only = true;
	h = hopen(io, "pq", &o);
	cr_assert_geq(pio_mem_file_size(io, "pq/seg-0000000000000309.pseg"), 0, "orphan left alone");
	struct hpart_fjob *j;
	cr_assert_eq(hpart_flush_begin(h, 1, &j), -PARLEY_EPERM);
	struct hpart_cjob *cj;
	struct hpart_compact_opts co = { .all = true };
	cr_assert_eq(hpart_compact_begin(h, &co, &cj), -PARLEY_EPERM);
	cr_assert_eq(hpart_delete_through(h, "x", 1, 1), -PARLEY_EPERM);
	int s1 = s0 + 1;
	while (mcount[s1] == 0)
		s1++;
	cr_assert_eq(hpart_stream_bounds(h, mkey[s1], strlen(mkey[s1]), &f, &l), 0);
	cr_assert_eq(l, mcount[s1]);
	hpart_close(h);
	pio_free(io);
}

struct idem_seen {
	uint64_t n, last_ts;
	uint64_t batches;
};

static int idem_seen_cb(void *arg, const struct seg_idem *rec)
{
	struct idem_seen *s = arg;
	cr_assert_geq(rec->ts, s->last_ts, "ordered by ts");
	s->last_ts = rec->ts;
	s->n++;
	s->batches += rec->count;
	return 0;
}

/* The idempotency records survive flush and compaction, ordered by ts. */
Test(hpart, idempotency_survives_flush_and_compaction)
{
	uint64_t seed = hist_seed("hpart.idem");
	struct parley_rng rng = { seed };
	model_reset("c/i");
	struct pio *io = mem_dir(seed, "pi");
	struct hpart_opts o = { .partition = 4 };
	struct hpart *h = hopen(io, "pi", &o);
	uint64_t with_prod = 0;
	for (int round = 1; round <= 4; round++) {
		gen_round(&rng, round, 200);
		/* every entry of this round gets its own producer id (batch of 1) */
		for (int s = 0; s < NS; s++)
			for (size_t i = 0; i < mcount[s]; i++)
				if (model[s][i].round == round && (i % 3)) {
					model[s][i].e.producer[0] = (uint8_t)s;
					model[s][i].e.producer[1] = (uint8_t)i;
					model[s][i].e.producer[2] = (uint8_t)(i >> 8);
					with_prod++;
				}
		do_flush(h, round, NULL);
	}
	struct idem_seen seen = { 0 };
	cr_assert_eq(hpart_idem_load(h, 0, idem_seen_cb, &seen), 0);
	cr_assert_eq(seen.n, with_prod);
	cr_assert_eq(seen.batches, with_prod);
	struct hpart_compact_opts co = { .all = true, .now_ms = 1763900000000ull + 5ull * 3600000 };
	struct hpart_cjob *cj;
	cr_assert_eq(hpart_compact_begin(h, &co, &cj), 0);
	cr_assert_eq(hpart_compact_run(cj, NULL), 0);
	cr_assert_eq(hpart_compact_commit(h, cj), 0);
	hpart_close(h);
	h = hopen(io, "pi", &o);
	memset(&seen, 0, sizeof seen);
	cr_assert_eq(hpart_idem_load(h, 0, idem_seen_cb, &seen), 0);
	cr_assert_eq(seen.n, with_prod, "after compaction and reopen");
	/* the window filter */
	memset(&seen, 0, sizeof seen);
	cr_assert_eq(hpart_idem_load(h, 1763900000000ull + 3ull * 3600000, idem_seen_cb, &seen), 0);
	cr_assert_lt(seen.n, with_prod);
	cr_assert_gt(seen.n, 0u);
	hpart_close(h);
	pio_free(io);
}

static int count_dicts(void *arg, const char *name)
{
	if (!strncmp(name, "dict-", 5))
		(*(int *)arg)++;
	return 0;
}

/* Dictionary lifecycle: retraining forced whenever judged, old segments keep
 * naming their dictionaries, a full compaction rewrites everything with the
 * current one and the retired dictionaries' files go. */
Test(hpart, dictionaries_retired_after_compaction)
{
	uint64_t seed = hist_seed("hpart.dicts");
	struct parley_rng rng = { seed };
	model_reset("c/d");
	struct pio *io = mem_dir(seed, "pd");
	struct hpart_opts o = { .partition = 5, .block_bytes = 4096, .dict_bytes = 8192,
				.retrain = { .degrade_factor = 0.01, .min_recent_raw = 1 } };
	struct hpart *h = hopen(io, "pd", &o);
	/* a new dictionary is judged only on flushes written with it: so
	 * rounds 1 and 3 train, 2 and 4 reuse */
	uint64_t ids[5];
	for (int round = 1; round <= 4; round++) {
		gen_round(&rng, round, 500);
		struct hpart_flush_result fr;
		do_flush(h, round, &fr);
		cr_assert_eq(fr.trained, round % 2 == 1, "round %d", round);
		ids[round] = fr.dict_id;
	}
	cr_assert_eq(ids[1], ids[2]);
	cr_assert_neq(ids[2], ids[3]);
	cr_assert_eq(ids[3], ids[4]);
	int nd = 0;
	cr_assert_eq(io->ops->list(io, "pd", count_dicts, &nd), 0);
	cr_assert_eq(nd, 2, "each live segment keeps its dictionary");
	uint64_t fv[NS];
	for (int s = 0; s < NS; s++)
		fv[s] = 1;
	check_reads(h, fv, 4, &rng);
	struct hpart_compact_opts co = { .all = true, .now_ms = 1763900000000ull };
	struct hpart_cjob *cj;
	cr_assert_eq(hpart_compact_begin(h, &co, &cj), 0);
	cr_assert_eq(hpart_compact_run(cj, NULL), 0);
	cr_assert_eq(hpart_compact_commit(h, cj), 0);
	nd = 0;
	cr_assert_eq(io->ops->list(io, "pd", count_dicts, &nd), 0);
	cr_assert_eq(nd, 1, "retired dictionaries removed");
	struct hpart_seg_view v[4];
	cr_assert_eq(hpart_segments(h, v, 4), 1u);
	cr_assert_eq(v[0].info.dict_id, ids[4], "rewritten with the current dictionary");
	check_reads(h, fv, 4, &rng);
	hpart_close(h);
	h = hopen(io, "pd", &o);
	check_reads(h, fv, 4, &rng);
	hpart_close(h);
	pio_free(io);
}

struct file_census {
	int segs, dicts, tmps;
};

static int census_cb(void *arg, const char *name)
{
	struct file_census *c = arg;
	size_t l = strlen(name);
	if (l > 4 && !strcmp(name + l - 4, ".tmp"))
		c->tmps++;
	else if (!strncmp(name, "seg-", 4))
		c->segs++;
	else if (!strncmp(name, "dict-", 5))
		c->dicts++;
	return 0;
}

/* Crash at every job step (before a commit, after it, with torn unsynced
 * writes): after each reopen the reads equal the committed model, and no
 * unreferenced file survives the cleanup. */
Test(hpart, crashes_at_every_step)
{
	uint64_t seed = hist_seed("hpart.crash");
	struct parley_rng rng = { seed };
	model_reset("c/k");
	struct pio *io = mem_dir(seed, "pk");
	struct hpart_opts o = { .partition = 6, .block_bytes = 2048, .dict_bytes = 8192,
				.tiers = { .min_merge = 2 } };
	struct hpart *h = hopen(io, "pk", &o);
	uint64_t fv[NS];
	for (int s = 0; s < NS; s++)
		fv[s] = 1;
	int committed = 0, crashes = 0;
	for (int step = 0; step < 60; step++) {
		unsigned op = (unsigned)parley_rng_below(&rng, 5);
		bool crash = parley_rng_below(&rng, 3) == 0;
		if (op <= 1 && committed < 12) {
			int round = committed + 1;
			if (mcount[0] == 0 || model[0][mcount[0] - 1].round < round)
				gen_round(&rng, round, 150);
			struct hpart_fjob *j;
			cr_assert_eq(hpart_flush_begin(h, (uint64_t)round, &j), 0);
			struct src x = { .round = round };
			struct hpart_src src = { src_next, src_rewind, &x };
			cr_assert_eq(hpart_flush_run(j, &src), 0);
			if (crash) { /* before the commit: the flush never happened */
				pio_mem_crash(io, true);
				hpart_abort(h, j, NULL);
				crashes++;
				h = hopen(io, "pk", &o);
			} else {
				cr_assert_eq(hpart_flush_commit(h, j, NULL), 0);
				committed = round;
			}
		} else if (op == 2) {
			struct hpart_compact_opts co = { .all = parley_rng_below(&rng, 2),
							 .now_ms = 1763900000000ull };
			struct hpart_cjob *cj;
			int rc = hpart_compact_begin(h, &co, &cj);
			if (rc == -PARLEY_EAGAIN)
				continue;
			cr_assert_eq(rc, 0);
			cr_assert_eq(hpart_compact_run(cj, NULL), 0);
			if (crash) {
				pio_mem_crash(io, true);
				hpart_abort(h, NULL, cj);
				crashes++;
				h = hopen(io, "pk", &o);
			} else {
				cr_assert_eq(hpart_compact_commit(h, cj), 0);
			}
		} else if (op == 3 && committed) {
			int s = (int)parley_rng_below(&rng, NS);
			uint64_t d = parley_rng_below(&rng, mcount[s] + 1);
			cr_assert_eq(hpart_delete_through(h, mkey[s], strlen(mkey[s]), d), 0);
			mdel[s] = PARLEY_MAX(mdel[s], d);
			fv[s] = model_first_visible(s, 1);
		} else {
			/* crash while idle: everything committed was synced */
			pio_mem_crash(io, true);
			hpart_abort(h, NULL, NULL);
			crashes++;
			h = hopen(io, "pk", &o);
			struct file_census c = { 0 };
			cr_assert_eq(io->ops->list(io, "pk", census_cb, &c), 0);
			cr_assert_eq(c.tmps, 0, "seed %llu step %d", (unsigned long long)seed, step);
			cr_assert_eq((size_t)c.segs, hpart_manifest(h)->nsegs, "orphan segments");
		}
		check_reads(h, fv, committed, &rng);
	}
	printf("crash test: %d committed flushes, %d crashes\n", committed, crashes);
	cr_assert_gt(crashes, 0);
	hpart_close(h);
	pio_free(io);
}
