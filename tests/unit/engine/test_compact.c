/*
 * test_compact.c — engine/compact.c: retention rule evaluation, the token
 * bucket, size-tiered picking, and the k-way merge checked against a model
 * (tombstones, stream deletion, retention by count and by age per prefix,
 * prefix-only trimming, duplicate inputs, gaps from non-adjacent merges,
 * corrupt inputs, pacing totals, everything dropped).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compact.h"
#include "hist_corpus.h"
#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "segment.h"

/* ---- pure parts ------------------------------------------------------------- */

Test(compact, retention_rules)
{
	struct retention_rule rules[] = {
		{ (const uint8_t *)"", 0, 0, 1000 },          /* default: last 1000 */
		{ (const uint8_t *)"c/", 2, 86400000, 0 },    /* conversations: 1 day */
		{ (const uint8_t *)"c/vip", 5, 0, 0 },        /* vip: forever */
		{ (const uint8_t *)"u/", 2, 3600000, 50 },    /* inboxes: 1 h AND 50 */
	};
	struct retention_policy p = { rules, 4 };
	uint64_t now = 1000ull * 86400000;
	cr_assert_eq(retention_match(&p, "c/vip1", 6), &rules[2]);
	cr_assert_eq(retention_match(&p, "c/vi", 4), &rules[1]);
	cr_assert_eq(retention_match(&p, "x", 1), &rules[0]);
	cr_assert_null(retention_match(NULL, "x", 1));
	/* count: last 1000 of a stream at 5000 keeps 4001.. */
	cr_assert_not(retention_keep(&p, "x", 1, 4000, now, 5000, now));
	cr_assert(retention_keep(&p, "x", 1, 4001, 0, 5000, now), "age not limited by default rule");
	cr_assert(retention_keep(&p, "x", 1, 1, 0, 1000, now), "short stream kept whole");
	/* age: exactly at the limit is kept, one ms older is not */
	cr_assert(retention_keep(&p, "c/1", 3, 1, now - 86400000, 5, now));
	cr_assert_not(retention_keep(&p, "c/1", 3, 1, now - 86400001, 5, now));
	cr_assert(retention_keep(&p, "c/1", 3, 1, now + 5, 5, now), "future ts kept");
	cr_assert(retention_keep(&p, "c/1", 3, 1, 0, 5, 10), "now < max_age: nothing expired");
	/* vip overrides the c/ rule */
	cr_assert(retention_keep(&p, "c/vip9", 6, 1, 0, 1u << 30, now));
	/* both limits: either drops */
	cr_assert_not(retention_keep(&p, "u/1", 3, 10, now, 100, now), "count");
	cr_assert_not(retention_keep(&p, "u/1", 3, 90, now - 3600001, 100, now), "age");
	cr_assert(retention_keep(&p, "u/1", 3, 90, now - 10, 100, now));
	/* no policy at all */
	cr_assert(retention_keep(NULL, "u/1", 3, 1, 0, 100, now));
}

Test(compact, throttle_bounds_the_rate)
{
	struct throttle t;
	throttle_init(&t, 1000000, 0, 0); /* 1 MB/s, no burst */
	cr_assert_eq(throttle_charge(&t, 1000000, 0), 1000000000u);
	cr_assert_eq(throttle_charge(&t, 500000, 1000000000u), 500000000u);
	/* unlimited */
	throttle_init(&t, 0, 0, 0);
	cr_assert_eq(throttle_charge(&t, 1u << 30, 0), 0u);
	/* burst: the first 64 KiB go at once */
	throttle_init(&t, 1000, 65536, 0);
	cr_assert_eq(throttle_charge(&t, 65536, 0), 0u);
	cr_assert_eq(throttle_charge(&t, 1, 0), 1000000u);
	/* long run: a caller that sleeps as told moves bytes at <= rate, and
	 * not much slower (no lost refill) */
	uint64_t seed = hist_seed("compact.throttle");
	struct parley_rng rng = { seed };
	uint64_t rate = 3000000, now = 5, bytes = 0;
	throttle_init(&t, rate, 100000, now);
	for (int i = 0; i < 10000; i++) {
		uint64_t b = 1 + parley_rng_below(&rng, 200000);
		bytes += b;
		now += throttle_charge(&t, b, now);
		now += parley_rng_below(&rng, 1000); /* work between charges */
	}
	double secs = (double)(now - 5) / 1e9;
	double achieved = (double)bytes / secs;
	printf("throttle: %llu bytes in %.3f simulated s = %.0f B/s (rate %llu)\n",
	       (unsigned long long)bytes, secs, achieved, (unsigned long long)rate);
	cr_assert_leq(bytes, (uint64_t)(secs * (double)rate) + 100000 + 1, "over rate (burst allowed)");
	cr_assert_gt(achieved, 0.99 * (double)rate);
}

Test(compact, size_tiered_pick)
{
	size_t idx[32];
	struct compact_tier_opts o = { .min_merge = 4, .max_merge = 6,
				       .bucket_ratio = 2.0, .small_bytes = 1000 };
	/* three tiny ones: not enough */
	struct compact_seg_desc a[] = { { 1, 10 }, { 2, 500 }, { 3, 900 } };
	cr_assert_eq(compact_pick(a, 3, &o, idx, 32), 0u);
	/* four segments below small_bytes: one bucket, merged */
	struct compact_seg_desc b[] = { { 1, 10 }, { 2, 500 }, { 3, 900 }, { 4, 100000 }, { 5, 999 } };
	size_t n = compact_pick(b, 5, &o, idx, 32);
	cr_assert_eq(n, 4u);
	bool used[5] = { 0 };
	for (size_t i = 0; i < n; i++)
		used[idx[i]] = true;
	cr_assert(used[0] && used[1] && used[2] && used[4] && !used[3]);
	/* big ones of similar size form a bucket; outliers stay out; at most
	 * max_merge, smallest first */
	struct compact_seg_desc c[] = {
		{ 1, 1u << 30 }, { 2, 100000 }, { 3, 110000 }, { 4, 120000 }, { 5, 130000 },
		{ 6, 140000 }, { 7, 150000 }, { 8, 160000 }, { 9, 5000 },
	};
	n = compact_pick(c, 9, &o, idx, 32);
	cr_assert_eq(n, 6u);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(c[idx[i]].seg_id, 2 + i, "ascending size, pos %zu", i);
	}
	/* sizes growing by x3 each: no bucket of 4 */
	struct compact_seg_desc d[] = { { 1, 10000 }, { 2, 30000 }, { 3, 90000 }, { 4, 270000 }, { 5, 810000 } };
	cr_assert_eq(compact_pick(d, 5, &o, idx, 32), 0u);
	cr_assert_eq(compact_pick(c, 9, &o, idx, 3), 0u, "cap below min_merge");
}

/* ---- the merge -------------------------------------------------------------- */

struct mentry {
	char key[16];
	uint8_t klen;
	struct pe_entry e;
	uint8_t pay[64];
	int seg; /* which input holds it */
};

struct tomb {
	const char *key;
	uint64_t deleted_through;
	uint64_t last_seq;
};

struct cmodel {
	struct mentry *m;
	size_t n;
	struct tomb *tombs;
	size_t ntombs;
	/* on_stream reports */
	char rkeys[256][16];
	struct compact_stream_result res[256];
	size_t nres;
};

static int state_cb(void *arg, const uint8_t *key, size_t klen,
		    struct compact_stream_state *out)
{
	struct cmodel *cm = arg;
	for (size_t i = 0; i < cm->ntombs; i++)
		if (strlen(cm->tombs[i].key) == klen && !memcmp(cm->tombs[i].key, key, klen)) {
			out->deleted_through = cm->tombs[i].deleted_through;
			out->last_seq = cm->tombs[i].last_seq;
		}
	return 0;
}

static void stream_cb(void *arg, const uint8_t *key, size_t klen,
		      const struct compact_stream_result *res)
{
	struct cmodel *cm = arg;
	cr_assert_lt(cm->nres, 256u);
	memcpy(cm->rkeys[cm->nres], key, klen);
	cm->rkeys[cm->nres][klen] = '\0';
	cm->res[cm->nres++] = *res;
}

static uint64_t paced;
static void pace_cb(void *arg, uint64_t bytes)
{
	(void)arg;
	paced += bytes;
}

/*
 * Streams c/aNN (count retention: last 40), c/bNN (age: 1 h),
 * u/NN (no rule). Entries of each stream are cut into `nseg` consecutive seq
 * runs, one per input segment (as successive flushes would write them).
 */
static void cmodel_build(struct cmodel *cm, uint64_t seed, int nseg,
			 uint64_t now)
{
	struct parley_rng rng = { seed };
	static const char *pfx[] = { "c/a", "c/b", "u/" };
	size_t cap = 64 * 300;
	cm->m = calloc(cap, sizeof *cm->m);
	cm->n = 0;
	for (int p = 0; p < 3; p++)
		for (int s = 0; s < 20; s++) {
			size_t cnt = 1 + parley_rng_below(&rng, 250);
			uint64_t ts = now - 2 * 3600000 + parley_rng_below(&rng, 100000);
			for (size_t j = 0; j < cnt; j++) {
				struct mentry *e = &cm->m[cm->n++];
				e->klen = (uint8_t)snprintf(e->key, sizeof e->key, "%s%02d", pfx[p], s);
				e->e.seq = j + 1;
				ts += parley_rng_below(&rng, 60000);
				/* a little clock skew: ts may step back */
				e->e.ts_ms = ts - (parley_rng_below(&rng, 10) ? 0 : 120000);
				e->e.type = (uint16_t)p;
				e->e.producer[0] = (uint8_t)j;
				e->e.producer[1] = (uint8_t)s;
				e->e.len = (uint32_t)hist_message(&rng, (char *)e->pay) % 64;
				e->e.payload = e->pay;
				e->seg = (int)(j * (size_t)nseg / cnt);
			}
		}
}

/* The spec, written independently of compact.c. */
static bool expect_kept(const struct cmodel *cm, const struct retention_policy *pol,
			size_t i, uint64_t now, bool *trimming)
{
	const struct mentry *e = &cm->m[i];
	uint64_t dt = 0, last = 0;
	for (size_t t = 0; t < cm->ntombs; t++)
		if (!strcmp(cm->tombs[t].key, e->key)) {
			dt = cm->tombs[t].deleted_through;
			last = cm->tombs[t].last_seq;
		}
	if (!last) /* last seq of the stream among the inputs */
		for (size_t j = i; j < cm->n && !strcmp(cm->m[j].key, e->key); j++)
			last = cm->m[j].e.seq;
	if (e->e.seq <= dt)
		return false;
	if (*trimming && !retention_keep(pol, e->key, e->klen, e->e.seq, e->e.ts_ms, last, now))
		return false;
	*trimming = false;
	return true;
}

/* A fresh in-memory backend (seeded) with dir "pc" holding the model's
 * segments, model segment s as segment 100 + s, opened into rd[s]. */
static struct pio *write_inputs(uint64_t seed, struct cmodel *cm, int nseg,
				struct seg_reader **rd)
{
	struct pio *io = pio_mem_new(seed);
	cr_assert_not_null(io);
	cr_assert_eq(io->ops->mkdir(io, "pc"), 0);
	for (int s = 0; s < nseg; s++) {
		struct seg_writer *w;
		struct seg_write_opts wo = { .block_bytes = 2048, .level = 1 };
		cr_assert_eq(seg_writer_new(io, "pc", 100 + (uint64_t)s, &wo, &w), 0);
		for (size_t i = 0; i < cm->n; i++)
			if (cm->m[i].seg == s)
				cr_assert_eq(seg_writer_add(w, cm->m[i].key, cm->m[i].klen, &cm->m[i].e), 0);
		struct seg_write_info wi;
		cr_assert_eq(seg_writer_finish(w, &wi), 0);
		cr_assert_eq(seg_open(io, "pc", wi.name, NULL, &rd[s], NULL, 0), 0);
	}
	return io;
}

/* Closes the inputs and frees the model and the backend. */
static void free_inputs(struct pio *io, struct cmodel *cm, int nseg, struct seg_reader **rd)
{
	for (int s = 0; s < nseg; s++)
		seg_close(rd[s]);
	free(cm->m);
	pio_free(io);
}

static void check_output(struct pio *io, struct cmodel *cm,
			 const struct retention_policy *pol, uint64_t now,
			 const struct compact_stats *st, const bool *included)
{
	struct seg_reader *out;
	cr_assert(st->output);
	cr_assert_eq(seg_open(io, "pc", st->out.name, NULL, &out, NULL, 0), 0);
	struct seg_iter *it;
	cr_assert_eq(seg_iter_all(out, &it), 0);
	struct seg_item item;
	bool trimming = true;
	uint64_t kept = 0, dropped = 0;
	size_t ri = 0;
	for (size_t i = 0; i < cm->n; i++) {
		if (i == 0 || strcmp(cm->m[i].key, cm->m[i - 1].key))
			trimming = true;
		if (!included[cm->m[i].seg])
			continue;
		/* retention sees only the merged inputs: the stream's prefix
		 * inside them */
		if (!expect_kept(cm, pol, i, now, &trimming)) {
			dropped++;
			continue;
		}
		kept++;
		cr_assert_eq(seg_iter_next(it, &item), 1, "entry %zu missing (%s seq %llu)",
			     i, cm->m[i].key, (unsigned long long)cm->m[i].e.seq);
		cr_assert_eq(item.klen, cm->m[i].klen);
		cr_assert_eq(memcmp(item.key, cm->m[i].key, item.klen), 0);
		cr_assert_eq(item.e.seq, cm->m[i].e.seq, "seq never changes");
		cr_assert_eq(item.e.ts_ms, cm->m[i].e.ts_ms);
		cr_assert_eq(memcmp(item.e.producer, cm->m[i].e.producer, 16), 0);
		cr_assert_eq(item.e.len, cm->m[i].e.len);
		cr_assert_eq(memcmp(item.e.payload, cm->m[i].e.payload, item.e.len), 0);
	}
	cr_assert_eq(seg_iter_next(it, &item), 0, "extra entries in the output");
	cr_assert_eq(st->entries_out, kept);
	cr_assert_eq(st->dropped_tomb + st->dropped_retention, dropped);
	seg_iter_free(it);
	/* per-stream reports agree with the output's stream directory */
	for (ri = 0; ri < cm->nres; ri++) {
		struct seg_stream_info si;
		int rc = seg_stream_info(out, cm->rkeys[ri], strlen(cm->rkeys[ri]), &si);
		if (cm->res[ri].kept == 0) {
			cr_assert_eq(rc, -PARLEY_ENOTFOUND);
			cr_assert_eq(cm->res[ri].first_kept, 0u);
		} else {
			cr_assert_eq(rc, 0);
			cr_assert_eq(si.first_seq, cm->res[ri].first_kept);
			cr_assert_eq(si.last_seq, cm->res[ri].last_kept);
			cr_assert_eq(si.count, cm->res[ri].kept);
			cr_assert_lt(cm->res[ri].dropped_through, si.first_seq,
				     "drops are a prefix");
		}
	}
	struct seg_verify_report rep;
	cr_assert_eq(seg_verify(out, &rep), 0);
	seg_close(out);
}

Test(compact, merge_applies_tombstones_and_retention)
{
	uint64_t seed = hist_seed("compact.merge");
	uint64_t now = 1763900000000ull;
	struct cmodel cm = { 0 };
	int nseg = 4;
	cmodel_build(&cm, seed, nseg, now);
	struct tomb tombs[] = {
		{ "c/a03", 10, 0 },          /* delete range up to 10 */
		{ "u/05", UINT64_MAX, 0 },   /* stream deleted */
		{ "u/07", 1000000, 0 },      /* deleted past its end */
		{ "c/a04", 0, 1000000 },     /* memtable holds far more: all expire by count */
		{ "c/b02", 3, 0 },
	};
	cm.tombs = tombs;
	cm.ntombs = PARLEY_ARRAY_LEN(tombs);
	struct retention_rule rules[] = {
		{ (const uint8_t *)"c/a", 3, 0, 40 },
		{ (const uint8_t *)"c/b", 3, 3600000, 0 },
	};
	struct retention_policy pol = { rules, 2 };
	struct seg_reader *rd[4];
	struct pio *io = write_inputs(seed, &cm, nseg, rd);

	struct compact_opts o = {
		.io = io, .dir = "pc", .out_seg_id = 200,
		.wopts = { .block_bytes = 8192 },
		.retention = &pol, .now_ms = now,
		.state = state_cb, .state_arg = &cm,
		.on_stream = stream_cb, .stream_arg = &cm,
		.pace = pace_cb,
	};
	struct compact_stats st;
	paced = 0;
	/* inputs in scrambled order: the merge does not care */
	struct seg_reader *in[4] = { rd[2], rd[0], rd[3], rd[1] };
	cr_assert_eq(compact_run(in, 4, &o, &st), 0);
	bool all[4] = { true, true, true, true };
	check_output(io, &cm, &pol, now, &st, all);
	cr_assert_eq(st.entries_in, cm.n);
	cr_assert_eq(st.duplicates, 0u);
	cr_assert_eq(st.streams_in, 60u);
	cr_assert_eq(cm.nres, 60u);
	cr_assert_gt(st.dropped_tomb, 0u);
	cr_assert_gt(st.dropped_retention, 0u);
	cr_assert_eq(paced, st.bytes_read + st.bytes_written, "pace saw all I/O");
	cr_assert_gt(st.bytes_read, 0u);
	printf("merge: in %llu out %llu tomb %llu retention %llu read %llu written %llu\n",
	       (unsigned long long)st.entries_in, (unsigned long long)st.entries_out,
	       (unsigned long long)st.dropped_tomb, (unsigned long long)st.dropped_retention,
	       (unsigned long long)st.bytes_read, (unsigned long long)st.bytes_written);
	/* specific streams */
	for (size_t i = 0; i < cm.nres; i++) {
		if (!strcmp(cm.rkeys[i], "u/05"))
			cr_assert_eq(cm.res[i].kept, 0u);
		if (!strcmp(cm.rkeys[i], "c/a04"))
			cr_assert_eq(cm.res[i].kept, 0u, "count rule against memtable's last seq");
		if (!strcmp(cm.rkeys[i], "u/00"))
			cr_assert_eq(cm.res[i].dropped_through, 0u, "no rule for u/");
		if (!strncmp(cm.rkeys[i], "c/a", 3) && cm.res[i].kept)
			cr_assert_leq(cm.res[i].kept, 40u);
	}
	free_inputs(io, &cm, 4, rd);
}

Test(compact, non_adjacent_merge_and_duplicates)
{
	uint64_t seed = hist_seed("compact.nonadjacent");
	uint64_t now = 1763900000000ull;
	struct cmodel cm = { 0 };
	cmodel_build(&cm, seed, 3, now);
	struct seg_reader *rd[3];
	struct pio *io = write_inputs(seed, &cm, 3, rd);
	/* merge the oldest and the newest (seq gaps in the output), and the
	 * newest twice, as a retried merge would meet it */
	struct compact_opts o = { .io = io, .dir = "pc", .out_seg_id = 300,
				  .on_stream = stream_cb, .stream_arg = &cm };
	struct compact_stats st;
	struct seg_reader *in[3] = { rd[0], rd[2], rd[2] };
	cr_assert_eq(compact_run(in, 3, &o, &st), 0);
	bool inc[3] = { true, false, true };
	check_output(io, &cm, NULL, now, &st, inc);
	size_t n2 = 0;
	for (size_t i = 0; i < cm.n; i++)
		n2 += cm.m[i].seg == 2;
	cr_assert_eq(st.duplicates, n2);
	cr_assert_eq(st.dropped_tomb + st.dropped_retention, 0u);
	/* reading a stream across its gap, both ways */
	struct seg_reader *out;
	cr_assert_eq(seg_open(io, "pc", st.out.name, NULL, &out, NULL, 0), 0);
	for (size_t i = 0; i < cm.n; i++) {
		if (i && !strcmp(cm.m[i].key, cm.m[i - 1].key))
			continue;
		size_t end = i;
		while (end < cm.n && !strcmp(cm.m[end].key, cm.m[i].key))
			end++;
		struct pe_entry got[300];
		uint32_t cnt;
		bool fin;
		struct seg_iter *hold;
		cr_assert_eq(seg_read(out, cm.m[i].key, cm.m[i].klen, UINT64_MAX, PE_BACKWARD,
				      300, got, &cnt, &fin, &hold), 0);
		size_t k = 0;
		for (size_t j = end; j > i; j--) {
			if (cm.m[j - 1].seg == 1)
				continue;
			cr_assert_lt(k, cnt);
			cr_assert_eq(got[k].seq, cm.m[j - 1].e.seq);
			k++;
		}
		cr_assert_eq(k, cnt);
		cr_assert(fin);
		seg_iter_free(hold);
	}
	seg_close(out);
	free_inputs(io, &cm, 3, rd);
}

Test(compact, corrupt_input_and_everything_dropped)
{
	uint64_t seed = hist_seed("compact.corrupt");
	uint64_t now = 1763900000000ull;
	struct cmodel cm = { 0 };
	cmodel_build(&cm, seed, 2, now);
	struct seg_reader *rd[2];
	struct pio *io = write_inputs(seed, &cm, 2, rd);
	/* flip a bit in input 1's first block (after open: the reader has
	 * already verified the index, the block is read during the merge) */
	struct seg_block_info bi;
	cr_assert_eq(seg_block_meta(rd[1], 0, &bi), 0);
	cr_assert_eq(pio_mem_flip_bit(io, "pc/seg-0000000000000065.pseg", bi.offset + 5, 2), 0);
	struct compact_opts o = { .io = io, .dir = "pc", .out_seg_id = 400 };
	struct compact_stats st;
	cr_assert_eq(compact_run(rd, 2, &o, &st), -PARLEY_ECORRUPT);
	cr_assert_not_null(strstr(seg_error(rd[1]), "seg-0000000000000065.pseg"));
	cr_assert_not_null(strstr(seg_error(rd[1]), "block=0 "));
	cr_assert_eq(pio_mem_file_size(io, "pc/seg-0000000000000190.pseg"), -ENOENT);
	cr_assert_eq(pio_mem_file_size(io, "pc/seg-0000000000000190.pseg.tmp"), -ENOENT);
	/* every stream deleted: no output segment at all */
	struct retention_rule all[] = { { (const uint8_t *)"", 0, 1, 0 } }; /* 1 ms */
	struct retention_policy pol = { all, 1 };
	o.retention = &pol;
	o.now_ms = now + 86400000;
	cr_assert_eq(compact_run(rd, 1, &o, &st), 0);
	cr_assert_not(st.output);
	cr_assert_eq(st.entries_out, 0u);
	cr_assert_eq(st.dropped_retention, st.entries_in);
	cr_assert_eq(pio_mem_file_size(io, "pc/seg-0000000000000190.pseg"), -ENOENT);
	/* write failure during the merge: error, no output left behind */
	o.retention = NULL;
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 1);
	cr_assert_eq(compact_run(rd, 1, &o, &st), -EIO);
	cr_assert_eq(pio_mem_file_size(io, "pc/seg-0000000000000190.pseg.tmp"), -ENOENT);
	cr_assert_eq(compact_run(rd, 1, &o, &st), 0, "inputs unchanged, retry works");
	cr_assert(st.output);
	free_inputs(io, &cm, 2, rd);
}

static int count_idem(void *arg, const struct seg_idem *rec)
{
	(void)rec;
	(*(uint64_t *)arg)++;
	return 0;
}

/* Idempotency records are carried forward — also for batches whose entries
 * were dropped — deduplicated, and filtered by the window. */
Test(compact, idempotency_records_carried)
{
	uint64_t seed = hist_seed("compact.idem");
	uint64_t now = 1763900000000ull;
	struct cmodel cm = { 0 };
	cmodel_build(&cm, seed, 2, now);
	struct seg_reader *rd[2];
	struct pio *io = write_inputs(seed, &cm, 2, rd);
	uint64_t in_total = 0;
	for (int i = 0; i < 2; i++) {
		struct seg_info si;
		seg_get_info(rd[i], &si);
		cr_assert_gt(si.idem_records, 0u);
		in_total += si.idem_records;
	}
	/* everything of c/a00 deleted: its records must survive anyway */
	struct tomb tombs[] = { { "c/a00", UINT64_MAX, 0 } };
	cm.tombs = tombs;
	cm.ntombs = 1;
	struct seg_reader *in[3] = { rd[0], rd[1], rd[1] }; /* rd[1] twice: dups */
	struct compact_opts o = { .io = io, .dir = "pc", .out_seg_id = 500,
				  .state = state_cb, .state_arg = &cm };
	struct compact_stats st;
	cr_assert_eq(compact_run(in, 3, &o, &st), 0);
	cr_assert_gt(st.dropped_tomb, 0u);
	cr_assert_eq(st.idem_out, in_total, "every record once, dropped batches included");
	struct seg_reader *out;
	cr_assert_eq(seg_open(io, "pc", st.out.name, NULL, &out, NULL, 0), 0);
	uint64_t n = 0;
	cr_assert_eq(seg_idem_foreach(out, count_idem, &n), 0);
	cr_assert_eq(n, in_total);
	seg_close(out);
	/* window: records older than idem_min_ts are not carried */
	o.out_seg_id = 501;
	o.idem_min_ts = UINT64_MAX;
	cr_assert_eq(compact_run(rd, 2, &o, &st), 0);
	cr_assert_eq(st.idem_out, 0u);
	/* half the window: producers of entries whose record is carried are
	 * stored by reference, the others inline — all must read back equal */
	cm.ntombs = 0;
	cm.nres = 0;
	o.out_seg_id = 502;
	o.idem_min_ts = now - 3600000;
	o.state = NULL;
	o.on_stream = stream_cb;
	o.stream_arg = &cm;
	cr_assert_eq(compact_run(rd, 2, &o, &st), 0);
	cr_assert_gt(st.idem_out, 0u);
	cr_assert_lt(st.idem_out, in_total);
	bool both[2] = { true, true };
	check_output(io, &cm, NULL, now, &st, both);
	free_inputs(io, &cm, 2, rd);
}

/* ---- the compaction filter (pe_options.compact_filter) ------------------------------ */

/* Strips the payload of every entry of "s/x" whose payload starts with
 * "drop", to "-"; keeps everything else. */
static int strip_filter(void *arg, const void *key, size_t klen,
			const struct pe_entry *e, uint8_t *out, size_t cap)
{
	(*(int *)arg)++;
	if (klen != 3 || memcmp(key, "s/x", 3) || e->len < 4 ||
	    memcmp(e->payload, "drop", 4) || cap < 1)
		return -1;
	out[0] = '-';
	return 1;
}

Test(compact, filter_replaces_payloads_and_keeps_the_rest)
{
	struct pio *io = pio_mem_new(11);
	int calls = 0;
	struct pe_options o = {.dir = "/f", .partitions = 2, .shards = 1, .io = io,
			       .no_auto_flush = true, .no_auto_compact = true,
			       .compact_filter = strip_filter,
			       .compact_filter_arg = &calls};
	struct pe_engine *e;
	cr_assert_eq(pe_open(&o, &e), 0);
	const char *bodies[] = {"keep 1", "drop 2", "keep 3", "drop 4"};
	for (int i = 0; i < 4; i++) {
		struct pe_input in = {.type = 7, .flags = 3,
				      .len = (uint32_t)strlen(bodies[i]),
				      .payload = bodies[i]};
		struct pe_append_req q = {.key = i == 3 ? "s/y" : "s/x", .klen = 3,
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		q.producer[0] = (uint8_t)(i + 1);
		struct pe_append_result r;
		cr_assert_eq(pe_append_sync(e, &q, &r), 0);
	}
	for (uint32_t p = 0; p < 2; p++) {
		cr_assert_eq(pe_flush_sync(e, p), 0);
		cr_assert_eq(pe_compact_sync(e, p, true), 0);
	}
	cr_assert_geq(calls, 4, "called for every kept entry");
	struct pe_read_req rq = {.key = "s/x", .klen = 3, .from = 1,
				 .dir = PE_FORWARD, .limit = 10};
	struct pe_entry *es;
	uint32_t n;
	struct pe_read_result meta;
	cr_assert_eq(pe_read_sync(e, &rq, &es, &n, &meta), 0);
	cr_assert_eq(n, 3);
	cr_assert_eq(es[0].len, 6);
	cr_assert(!memcmp(es[0].payload, "keep 1", 6));
	cr_assert_eq(es[1].seq, 2, "the entry keeps its seq ...");
	cr_assert_eq(es[1].type, 7, "... type ...");
	cr_assert_eq(es[1].flags, 3, "... and flags");
	cr_assert_eq(es[1].producer[0], 2, "... and producer");
	cr_assert_eq(es[1].len, 1);
	cr_assert_eq(es[1].payload[0], '-');
	cr_assert(!memcmp(es[2].payload, "keep 3", 6));
	free(es);
	/* another stream's "drop" is the filter's choice to keep */
	rq.key = "s/y";
	cr_assert_eq(pe_read_sync(e, &rq, &es, &n, &meta), 0);
	cr_assert_eq(n, 1);
	cr_assert(!memcmp(es[0].payload, "drop 4", 6));
	free(es);
	/* and it survives a reopen (it is what the segment holds now) */
	pe_close(e);
	cr_assert_eq(pe_open(&o, &e), 0);
	rq.key = "s/x";
	cr_assert_eq(pe_read_sync(e, &rq, &es, &n, &meta), 0);
	cr_assert_eq(n, 3);
	cr_assert_eq(es[1].len, 1);
	free(es);
	pe_close(e);
	pio_free(io);
}
