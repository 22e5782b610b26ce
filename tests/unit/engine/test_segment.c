/*
 * test_segment.c — engine/segment.c: round trip of 100k random entries over
 * thousands of streams (against an in-memory model), stream reads across
 * block boundaries in both directions with limits, the block cache path,
 * writer order checks, dictionary segments, and faults: every single-bit
 * flip of a small segment is detected (open or verify fails, never wrong
 * data), truncated files, a crash while writing, I/O errors while writing.
 * Also prints compressed/raw ratios on the fortunes corpus with and without
 * a trained dictionary (skipped when /usr/share/games/fortunes is absent).
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bcache.h"
#include "dict.h"
#include "hist_corpus.h"
#include "../../../bench/msg_corpus.h"
#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "segment.h"

/* ---- the model ------------------------------------------------------------ */

struct ment {
	uint8_t key[40];
	uint8_t klen;
	struct pe_entry e;
};

struct model {
	struct ment *m;
	size_t n;
	/* streams: [sstart[i], sstart[i+1]) */
	size_t *sstart;
	size_t ns;
};

static int ment_cmp(const void *a, const void *b)
{
	const struct ment *x = a, *y = b;
	int c = memcmp(x->key, y->key, PARLEY_MIN(x->klen, y->klen));
	if (!c)
		c = x->klen < y->klen ? -1 : x->klen > y->klen;
	if (!c)
		c = x->e.seq < y->e.seq ? -1 : x->e.seq > y->e.seq;
	return c;
}

static uint8_t *rand_payload(struct parley_rng *rng, uint32_t len)
{
	uint8_t *p = malloc(len ? len : 1);
	if (parley_rng_below(rng, 2)) {
		char msg[256];
		size_t n = 0;
		while (n < len) {
			size_t l = hist_message(rng, msg);
			size_t c = PARLEY_MIN(l, (size_t)len - n);
			memcpy(p + n, msg, c);
			n += c;
		}
	} else {
		for (uint32_t i = 0; i < len; i++)
			p[i] = (uint8_t)parley_rng_next(rng);
	}
	return p;
}

/*
 * nstreams streams with keys over a tiny alphabet (so some keys are prefixes
 * of others), entries spread at random, seqs mostly dense with occasional
 * gaps (compaction of non-adjacent segments makes gaps), ts non-decreasing
 * with occasional steps back (clock skew between leaders).
 */
static void model_build(struct model *md, uint64_t seed, size_t nstreams,
			size_t nentries, bool big)
{
	struct parley_rng rng = { seed };
	struct ment *keys = calloc(nstreams, sizeof *keys);
	for (size_t i = 0; i < nstreams; i++) {
		size_t kl = 3 + parley_rng_below(&rng, 12);
		keys[i].key[0] = 'c';
		keys[i].key[1] = '/';
		for (size_t j = 2; j < kl; j++)
			keys[i].key[j] = (uint8_t)("ab\x01\xff"[parley_rng_below(&rng, 4)]);
		keys[i].klen = (uint8_t)kl;
	}
	qsort(keys, nstreams, sizeof *keys, ment_cmp);
	size_t u = 0;
	for (size_t i = 0; i < nstreams; i++)
		if (u == 0 || ment_cmp(&keys[u - 1], &keys[i]) != 0)
			keys[u++] = keys[i];
	nstreams = u;
	size_t *cnt = calloc(nstreams, sizeof *cnt);
	for (size_t i = 0; i < nentries; i++)
		cnt[i < nstreams ? i : parley_rng_below(&rng, nstreams)]++;
	md->m = calloc(nentries, sizeof *md->m);
	md->sstart = calloc(nstreams + 1, sizeof *md->sstart);
	md->ns = nstreams;
	size_t k = 0;
	uint64_t ts = 1763900000000ull;
	for (size_t s = 0; s < nstreams; s++) {
		md->sstart[s] = k;
		uint64_t seq = 1 + parley_rng_below(&rng, 3) * parley_rng_below(&rng, 1000);
		uint64_t sts = ts + parley_rng_below(&rng, 100000);
		uint16_t type = (uint16_t)parley_rng_below(&rng, 3);
		for (size_t j = 0; j < cnt[s]; j++) {
			struct ment *e = &md->m[k++];
			memcpy(e->key, keys[s].key, keys[s].klen);
			e->klen = keys[s].klen;
			e->e.seq = seq;
			seq += parley_rng_below(&rng, 20) ? 1 : 2 + parley_rng_below(&rng, 1u << 20);
			uint64_t r = parley_rng_below(&rng, 20);
			sts = r == 0 ? sts - PARLEY_MIN(sts, 5000) : sts + (r < 5 ? 0 : parley_rng_below(&rng, 60000));
			e->e.ts_ms = sts;
			if (parley_rng_below(&rng, 10) == 0)
				type = (uint16_t)parley_rng_below(&rng, 70000);
			e->e.type = type;
			e->e.flags = parley_rng_below(&rng, 4) ? 0 : (uint16_t)parley_rng_next(&rng);
			if (parley_rng_below(&rng, 2))
				for (int b = 0; b < 16; b++)
					e->e.producer[b] = (uint8_t)parley_rng_next(&rng);
			uint32_t len;
			uint64_t pick = parley_rng_below(&rng, 1000);
			if (big && pick == 0)
				len = 2000 + (uint32_t)parley_rng_below(&rng, 30000);
			else if (pick < 30)
				len = 0;
			else
				len = 1 + (uint32_t)parley_rng_below(&rng, 200);
			e->e.len = len;
			e->e.payload = rand_payload(&rng, len);
		}
	}
	md->sstart[nstreams] = k;
	md->n = k;
	if (big && k > 10) { /* one entry larger than any block */
		struct ment *e = &md->m[k / 2];
		free((void *)e->e.payload);
		e->e.len = 300 * 1024;
		e->e.payload = rand_payload(&rng, e->e.len);
	}
	free(keys);
	free(cnt);
}

static void model_free(struct model *md)
{
	for (size_t i = 0; i < md->n; i++)
		free((void *)md->m[i].e.payload);
	free(md->m);
	free(md->sstart);
}

static void entry_eq(const struct pe_entry *a, const struct pe_entry *b,
		     const char *ctx)
{
	cr_assert_eq(a->seq, b->seq, "%s: seq %llu vs %llu", ctx,
		     (unsigned long long)a->seq, (unsigned long long)b->seq);
	cr_assert_eq(a->ts_ms, b->ts_ms, "%s seq=%llu ts", ctx, (unsigned long long)a->seq);
	cr_assert_eq(a->type, b->type, "%s type", ctx);
	cr_assert_eq(a->flags, b->flags, "%s flags", ctx);
	cr_assert_eq(memcmp(a->producer, b->producer, 16), 0, "%s producer", ctx);
	cr_assert_eq(a->len, b->len, "%s len", ctx);
	cr_assert_eq(memcmp(a->payload, b->payload, a->len), 0, "%s payload", ctx);
}

static void write_model(struct pio *io, const char *dir, uint64_t id,
			const struct model *md, const struct seg_write_opts *o,
			struct seg_write_info *info)
{
	struct seg_writer *w;
	cr_assert_eq(seg_writer_new(io, dir, id, o, &w), 0);
	for (size_t i = 0; i < md->n; i++)
		cr_assert_eq(seg_writer_add(w, md->m[i].key, md->m[i].klen, &md->m[i].e), 0,
			     "add %zu", i);
	cr_assert_eq(seg_writer_finish(w, info), 0);
}

/* Compare seg_read against the model for stream s. */
static void check_read(struct seg_reader *r, const struct model *md, size_t s,
		       uint64_t from, enum pe_dir dir, uint32_t limit)
{
	const struct ment *k = &md->m[md->sstart[s]];
	size_t lo = md->sstart[s], hi = md->sstart[s + 1];
	struct pe_entry out[64];
	uint32_t n;
	bool end;
	struct seg_iter *hold;
	cr_assert_leq(limit, 64u);
	int rc = seg_read(r, k->key, k->klen, from, dir, limit, out, &n, &end, &hold);
	cr_assert_eq(rc, 0, "read: %s", seg_error(r));
	size_t got = 0;
	char ctx[96];
	snprintf(ctx, sizeof ctx, "stream %zu from %llu dir %d limit %u", s,
		 (unsigned long long)from, dir, limit);
	if (dir == PE_FORWARD) {
		size_t i = lo;
		while (i < hi && md->m[i].e.seq < from)
			i++;
		for (; i < hi && got < limit; i++, got++)
			entry_eq(&out[got], &md->m[i].e, ctx);
		cr_assert_eq(n, got, "%s: count", ctx);
		cr_assert_eq(end, i == hi, "%s: end", ctx);
	} else {
		size_t i = hi;
		while (i > lo && md->m[i - 1].e.seq > from)
			i--;
		for (; i > lo && got < limit; i--, got++)
			entry_eq(&out[got], &md->m[i - 1].e, ctx);
		cr_assert_eq(n, got, "%s: count", ctx);
		cr_assert_eq(end, i == lo, "%s: end", ctx);
	}
	seg_iter_free(hold);
}

static void check_all(struct seg_reader *r, const struct model *md)
{
	struct seg_iter *it;
	cr_assert_eq(seg_iter_all(r, &it), 0);
	struct seg_item item;
	size_t i = 0;
	int rc;
	while ((rc = seg_iter_next(it, &item)) == 1) {
		cr_assert_lt(i, md->n);
		cr_assert_eq(item.klen, md->m[i].klen);
		cr_assert_eq(memcmp(item.key, md->m[i].key, item.klen), 0);
		entry_eq(&item.e, &md->m[i].e, "iter_all");
		i++;
	}
	cr_assert_eq(rc, 0, "%s", seg_error(r));
	cr_assert_eq(i, md->n);
	seg_iter_free(it);
}

static struct pio *mem_dir(const char *dir)
{
	struct pio *io = pio_mem_new(42);
	cr_assert_not_null(io);
	cr_assert_eq(io->ops->mkdir(io, dir), 0);
	return io;
}

/* A fresh in-memory dir `dir` holding the model written as segment `id`. */
static struct pio *mem_dir_with(const char *dir, uint64_t id, const struct model *md,
				const struct seg_write_opts *o, struct seg_write_info *info)
{
	struct pio *io = mem_dir(dir);
	write_model(io, dir, id, md, o, info);
	return io;
}

/* A dictionary (16 KiB, at `level`) trained on every payload of the model. */
static struct pdict *model_dict(const struct model *md, int level)
{
	struct dict_sample *smp = calloc(md->n, sizeof *smp);
	cr_assert_not_null(smp);
	for (size_t i = 0; i < md->n; i++)
		smp[i] = (struct dict_sample){ md->m[i].e.payload, md->m[i].e.len };
	struct pdict *d;
	cr_assert_eq(dict_train(smp, md->n, 16 * 1024, level, &d), 0);
	free(smp);
	return d;
}

/* ---- tests ------------------------------------------------------------------ */

Test(segment, round_trip_100k_entries)
{
	uint64_t seed = hist_seed("segment.round_trip_100k");
	struct model md;
	model_build(&md, seed, 3000, 100000, true);
	struct seg_write_opts wo = { .level = 1 };
	struct seg_write_info wi;
	struct pio *io = mem_dir_with("p1", 0x42, &md, &wo, &wi);
	cr_assert_eq(wi.entries, md.n);
	cr_assert_eq(wi.streams, md.ns);
	cr_assert_gt(wi.blocks, 10u);
	cr_assert_eq(pio_mem_file_size(io, "p1/seg-0000000000000042.pseg"),
		     (int64_t)wi.file_bytes);

	struct bcache *c;
	cr_assert_eq(bcache_new(4u << 20, &c), 0);
	struct seg_open_opts oo = { .cache = c };
	struct seg_reader *r;
	char err[SEG_ERR_LEN];
	cr_assert_eq(seg_open(io, "p1", wi.name, &oo, &r, err, sizeof err), 0, "%s", err);
	struct seg_info si;
	seg_get_info(r, &si);
	cr_assert_eq(si.seg_id, 0x42u);
	cr_assert_eq(si.entries, md.n);
	cr_assert_eq(si.blocks, wi.blocks);
	cr_assert_eq(si.dict_id, 0u);
	printf("100k entries: raw payload %llu, raw blocks %llu, file %llu, %u blocks\n",
	       (unsigned long long)si.raw_payload_bytes,
	       (unsigned long long)si.raw_block_bytes,
	       (unsigned long long)si.file_bytes, si.blocks);
	check_all(r, &md);

	struct parley_rng rng = { seed ^ 0x5eed };
	for (size_t s = 0; s < md.ns; s++) {
		struct seg_stream_info st;
		const struct ment *k = &md.m[md.sstart[s]];
		cr_assert_eq(seg_stream_info(r, k->key, k->klen, &st), 0);
		cr_assert_eq(st.first_seq, k->e.seq);
		cr_assert_eq(st.last_seq, md.m[md.sstart[s + 1] - 1].e.seq);
		cr_assert_eq(st.count, md.sstart[s + 1] - md.sstart[s]);
		cr_assert_eq(st.first_ts, k->e.ts_ms);
		uint64_t span = st.last_seq - st.first_seq + 3;
		uint64_t from = st.first_seq - 1 + parley_rng_below(&rng, span);
		check_read(r, &md, s, from, (enum pe_dir)parley_rng_below(&rng, 2),
			   1 + (uint32_t)parley_rng_below(&rng, 64));
	}
	/* streams that do not exist */
	struct seg_stream_info st;
	cr_assert_eq(seg_stream_info(r, "nope", 4, &st), -PARLEY_ENOTFOUND);
	cr_assert_eq(seg_stream_info(r, "c", 1, &st), -PARLEY_ENOTFOUND);
	struct seg_iter *it;
	struct seg_item item;
	cr_assert_eq(seg_iter_stream(r, "zz", 2, 1, PE_FORWARD, false, &it), 0);
	cr_assert_eq(seg_iter_next(it, &item), 0);
	seg_iter_free(it);

	struct seg_verify_report rep;
	cr_assert_eq(seg_verify(r, &rep), 0, "%s", rep.first_error);
	cr_assert_eq(rep.blocks_ok, si.blocks);
	cr_assert_eq(rep.entries, md.n);
	struct bcache_stats bs;
	bcache_get_stats(c, &bs);
	cr_assert_gt(bs.hits, 0u);
	cr_assert_leq(bs.bytes, 4u << 20);
	cr_assert_eq(bs.pinned_bytes, 0u);
	seg_close(r);
	bcache_free(c);
	model_free(&md);
	pio_free(io);
}

Test(segment, reads_across_block_boundaries)
{
	uint64_t seed = hist_seed("segment.block_boundaries");
	struct model md;
	model_build(&md, seed, 12, 3000, false);
	struct pio *io = mem_dir("p2");
	/* tiny blocks: every stream spans many, blocks hold several streams */
	struct seg_write_opts wo = { .block_bytes = SEG_MIN_BLOCK, .level = 1 };
	struct seg_write_info wi;
	write_model(io, "p2", 7, &md, &wo, &wi);
	cr_assert_gt(wi.blocks, 100u);
	for (int cached = 0; cached < 2; cached++) {
		struct bcache *c = NULL;
		if (cached)
			cr_assert_eq(bcache_new(64 * 1024, &c), 0);
		struct seg_open_opts oo = { .cache = c };
		struct seg_reader *r;
		cr_assert_eq(seg_open(io, "p2", wi.name, &oo, &r, NULL, 0), 0);
		static const uint32_t limits[] = { 1, 2, 7, 64 };
		for (size_t s = 0; s < md.ns; s++) {
			uint64_t f = md.m[md.sstart[s]].e.seq;
			uint64_t l = md.m[md.sstart[s + 1] - 1].e.seq;
			/* every seq near every block edge, plus the stream ends */
			for (uint32_t b = 0; b < wi.blocks; b++) {
				struct seg_block_info bi;
				cr_assert_eq(seg_block_meta(r, b, &bi), 0);
				uint64_t edges[2] = { bi.first_seq, bi.last_seq };
				for (int e = 0; e < 2; e++)
					for (int64_t d = -1; d <= 1; d++)
						for (size_t li = 0; li < 4; li++) {
							check_read(r, &md, s, edges[e] + (uint64_t)d,
								   PE_FORWARD, limits[li]);
							check_read(r, &md, s, edges[e] + (uint64_t)d,
								   PE_BACKWARD, limits[li]);
						}
			}
			check_read(r, &md, s, 0, PE_FORWARD, 64);
			check_read(r, &md, s, f, PE_BACKWARD, 5);
			check_read(r, &md, s, l, PE_FORWARD, 5);
			check_read(r, &md, s, l + 1, PE_FORWARD, 5);
			check_read(r, &md, s, UINT64_MAX, PE_BACKWARD, 64);
			check_read(r, &md, s, f - 1, PE_BACKWARD, 64);
		}
		/* a whole stream both ways through the iterator, keep_pins off */
		for (size_t s = 0; s < md.ns; s++) {
			const struct ment *k = &md.m[md.sstart[s]];
			for (int d = 0; d < 2; d++) {
				struct seg_iter *it;
				cr_assert_eq(seg_iter_stream(r, k->key, k->klen,
							     d ? UINT64_MAX : 0,
							     (enum pe_dir)d, false, &it), 0);
				struct seg_item item;
				size_t i = 0, n = md.sstart[s + 1] - md.sstart[s];
				while (seg_iter_next(it, &item) == 1) {
					size_t idx = d ? md.sstart[s + 1] - 1 - i : md.sstart[s] + i;
					entry_eq(&item.e, &md.m[idx].e, "full stream");
					i++;
				}
				cr_assert_eq(i, n);
				seg_iter_free(it);
			}
		}
		seg_close(r);
		if (c) {
			struct bcache_stats bs;
			bcache_get_stats(c, &bs);
			cr_assert_eq(bs.pinned_bytes, 0u);
			cr_assert_leq(bs.bytes, 64u * 1024);
			cr_assert_gt(bs.evictions, 0u);
			bcache_free(c);
		}
	}
	model_free(&md);
	pio_free(io);
}

Test(segment, writer_rejects_bad_order_and_empty)
{
	struct pio *io = mem_dir("p3");
	struct seg_writer *w;
	uint8_t pay[4] = "abc";
	struct pe_entry e = { .seq = 5, .len = 3, .payload = pay };
	cr_assert_eq(seg_writer_new(io, "p3", 1, NULL, &w), 0);
	cr_assert_eq(seg_writer_add(w, "b", 1, &e), 0);
	cr_assert_eq(seg_writer_add(w, "b", 1, &e), -PARLEY_EINVAL, "duplicate");
	e.seq = 4;
	cr_assert_eq(seg_writer_add(w, "b", 1, &e), -PARLEY_EINVAL, "seq backwards");
	cr_assert_eq(seg_writer_add(w, "a", 1, &e), -PARLEY_EINVAL, "key backwards");
	cr_assert_eq(seg_writer_add(w, "", 0, &e), -PARLEY_EINVAL);
	e.seq = 0;
	cr_assert_eq(seg_writer_add(w, "c", 1, &e), -PARLEY_EINVAL, "seq 0");
	e.seq = 1;
	cr_assert_eq(seg_writer_add(w, "ba", 2, &e), 0, "longer key sorts after");
	seg_writer_abort(w);
	cr_assert_eq(pio_mem_file_size(io, "p3/seg-0000000000000001.pseg.tmp"), -ENOENT);
	cr_assert_eq(seg_writer_new(io, "p3", 2, NULL, &w), 0);
	cr_assert_eq(seg_writer_finish(w, NULL), -PARLEY_EINVAL);
	cr_assert_eq(pio_mem_file_size(io, "p3/seg-0000000000000002.pseg.tmp"), -ENOENT);
	cr_assert_eq(pio_mem_file_size(io, "p3/seg-0000000000000002.pseg"), -ENOENT);
	uint64_t id;
	cr_assert(seg_parse_name("seg-00000000000000ff.pseg", &id));
	cr_assert_eq(id, 255u);
	cr_assert_not(seg_parse_name("seg-00000000000000ff.pseg.tmp", &id));
	cr_assert_not(seg_parse_name("seg-00000000000000fg.pseg", &id));
	cr_assert_not(seg_parse_name("dict-00000000000000ff.zd", &id));
	pio_free(io);
}

/* Every single-bit flip anywhere in a small segment is caught: either the
 * open fails (footer/index/dir/bloom) or reading the damaged block fails,
 * with a message naming the file (and the block); never different data. */
Test(segment, every_bit_flip_is_detected)
{
	uint64_t seed = hist_seed("segment.bit_flips");
	struct model md;
	model_build(&md, seed, 4, 60, false);
	struct seg_write_opts wo = { .block_bytes = SEG_MIN_BLOCK, .level = 1 };
	struct seg_write_info wi;
	struct pio *io = mem_dir_with("p4", 9, &md, &wo, &wi);
	cr_assert_geq(wi.blocks, 3u);
	char path[128];
	snprintf(path, sizeof path, "p4/%s", wi.name);
	struct seg_reader *good;
	cr_assert_eq(seg_open(io, "p4", wi.name, NULL, &good, NULL, 0), 0);
	struct parley_rng rng = { seed };
	unsigned open_fail = 0, block_fail = 0;
	for (uint64_t off = 0; off < wi.file_bytes; off++) {
		unsigned bit = (unsigned)parley_rng_below(&rng, 8);
		cr_assert_eq(pio_mem_flip_bit(io, path, off, bit), 0);
		struct seg_reader *r;
		char err[SEG_ERR_LEN] = "";
		int rc = seg_open(io, "p4", wi.name, NULL, &r, err, sizeof err);
		if (rc) {
			cr_assert_eq(rc, -PARLEY_ECORRUPT, "off=%llu rc=%d", (unsigned long long)off, rc);
			cr_assert_not_null(strstr(err, wi.name), "error names the file: %s", err);
			open_fail++;
		} else {
			/* the flip is inside block b: reads of it fail, naming it */
			uint32_t b = 0;
			struct seg_block_info bi;
			while (seg_block_meta(good, b, &bi) == 0 && off >= bi.offset + bi.clen)
				b++;
			cr_assert_lt(off, wi.file_bytes - 1);
			cr_assert_eq(seg_block_meta(good, b, &bi), 0, "off=%llu outside blocks opened fine",
				     (unsigned long long)off);
			struct seg_iter *it;
			cr_assert_eq(seg_iter_all(r, &it), 0);
			struct seg_item item;
			size_t i = 0;
			while ((rc = seg_iter_next(it, &item)) == 1) {
				entry_eq(&item.e, &md.m[i].e, "before the bad block");
				i++;
			}
			cr_assert_eq(rc, -PARLEY_ECORRUPT, "off=%llu: flip not detected", (unsigned long long)off);
			char want[32];
			snprintf(want, sizeof want, "block=%u ", b);
			cr_assert_not_null(strstr(seg_error(r), want), "%s (want %s)", seg_error(r), want);
			cr_assert_not_null(strstr(seg_error(r), wi.name));
			seg_iter_free(it);
			struct seg_verify_report rep;
			cr_assert_eq(seg_verify(r, &rep), -PARLEY_ECORRUPT);
			cr_assert_eq(rep.blocks_bad, 1u);
			cr_assert_not_null(strstr(rep.first_error, want));
			seg_close(r);
			block_fail++;
		}
		cr_assert_eq(pio_mem_flip_bit(io, path, off, bit), 0);
	}
	printf("bit flips: %u caught at open, %u caught in a block (file %llu bytes)\n",
	       open_fail, block_fail, (unsigned long long)wi.file_bytes);
	cr_assert_gt(open_fail, 0u);
	cr_assert_gt(block_fail, 0u);
	seg_close(good);
	model_free(&md);
	pio_free(io);
}

Test(segment, truncated_and_torn_files)
{
	uint64_t seed = hist_seed("segment.torn");
	struct model md;
	model_build(&md, seed, 20, 2000, false);
	struct seg_write_opts wo = { .block_bytes = 4096, .level = 1 };
	struct seg_write_info wi;
	struct pio *io = mem_dir_with("p5", 3, &md, &wo, &wi);
	char path[128];
	snprintf(path, sizeof path, "p5/%s", wi.name);
	uint64_t cuts[] = { 0, 1, 100, wi.file_bytes / 2, wi.file_bytes - 129,
			    wi.file_bytes - 128, wi.file_bytes - 1 };
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(cuts); i++) {
		/* rewrite the segment, then cut it */
		cr_assert_eq(seg_remove(io, "p5", 3), 0);
		write_model(io, "p5", 3, &md, &wo, &wi);
		struct pio_file *f;
		cr_assert_eq(io->ops->open(io, path, 0, &f), 0);
		cr_assert_eq(io->ops->truncate(io, f, cuts[i]), 0);
		io->ops->close(io, f);
		struct seg_reader *r;
		char err[SEG_ERR_LEN];
		cr_assert_eq(seg_open(io, "p5", wi.name, NULL, &r, err, sizeof err),
			     -PARLEY_ECORRUPT, "cut at %llu", (unsigned long long)cuts[i]);
		cr_assert_null(r);
		cr_assert_not_null(strstr(err, wi.name), "%s", err);
	}
	/* crash while writing: the final name never appears, only a .tmp that
	 * the next writer of that id replaces */
	struct seg_writer *w;
	cr_assert_eq(seg_remove(io, "p5", 3), 0);
	cr_assert_eq(seg_writer_new(io, "p5", 4, &wo, &w), 0);
	for (size_t i = 0; i < md.n; i++)
		cr_assert_eq(seg_writer_add(w, md.m[i].key, md.m[i].klen, &md.m[i].e), 0);
	cr_assert_gt(seg_writer_file_bytes(w), 0u);
	pio_mem_crash(io, true);
	seg_writer_abort(w); /* process memory gone; the aborting unlink is harmless */
	cr_assert_eq(pio_mem_file_size(io, "p5/seg-0000000000000004.pseg"), -ENOENT);
	struct seg_reader *r;
	cr_assert_eq(seg_open(io, "p5", "seg-0000000000000004.pseg", NULL, &r, NULL, 0), -ENOENT);
	/* write errors: the writer fails sticky and leaves nothing behind */
	cr_assert_eq(seg_writer_new(io, "p5", 5, &wo, &w), 0);
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 1);
	int rc = 0;
	for (size_t i = 0; i < md.n && !rc; i++)
		rc = seg_writer_add(w, md.m[i].key, md.m[i].klen, &md.m[i].e);
	cr_assert_eq(rc, -EIO);
	cr_assert_eq(seg_writer_add(w, "zzz", 3, &md.m[0].e), -EIO, "sticky");
	cr_assert_eq(seg_writer_finish(w, NULL), -EIO);
	cr_assert_eq(pio_mem_file_size(io, "p5/seg-0000000000000005.pseg.tmp"), -ENOENT);
	cr_assert_eq(pio_mem_file_size(io, "p5/seg-0000000000000005.pseg"), -ENOENT);
	/* fsync error at seal */
	cr_assert_eq(seg_writer_new(io, "p5", 6, &wo, &w), 0);
	for (size_t i = 0; i < md.n; i++)
		cr_assert_eq(seg_writer_add(w, md.m[i].key, md.m[i].klen, &md.m[i].e), 0);
	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	cr_assert_eq(seg_writer_finish(w, NULL), -EIO);
	cr_assert_eq(pio_mem_file_size(io, "p5/seg-0000000000000006.pseg"), -ENOENT);
	model_free(&md);
	pio_free(io);
}

static const struct pdict *one_dict(void *arg, uint64_t id)
{
	const struct pdict *d = arg;
	return d && d->id == id ? d : NULL;
}

Test(segment, dictionary_segments_need_their_dictionary)
{
	uint64_t seed = hist_seed("segment.dict");
	struct model md;
	model_build(&md, seed, 50, 5000, false);
	struct pdict *d = model_dict(&md, 3);
	struct seg_write_opts wo = { .dict = d };
	struct seg_write_info wi;
	struct pio *io = mem_dir_with("p6", 11, &md, &wo, &wi);
	cr_assert_eq(wi.dict_id, d->id);
	struct seg_reader *r;
	char err[SEG_ERR_LEN], want[40];
	cr_assert_eq(seg_open(io, "p6", wi.name, NULL, &r, err, sizeof err), -PARLEY_ENOTFOUND);
	snprintf(want, sizeof want, "%016llx", (unsigned long long)d->id);
	cr_assert_not_null(strstr(err, want), "names the dictionary: %s", err);
	struct seg_open_opts oo = { .dict_lookup = one_dict, .dict_arg = d };
	cr_assert_eq(seg_open(io, "p6", wi.name, &oo, &r, err, sizeof err), 0, "%s", err);
	struct seg_info si;
	seg_get_info(r, &si);
	cr_assert_eq(si.dict_id, d->id);
	check_all(r, &md);
	seg_close(r);
	dict_free(d);
	model_free(&md);
	pio_free(io);
}

/* The writer's level holds with a dictionary whose CDict has another
 * level baked in (a flush writes at DICT_FLUSH_LEVEL with the partition's
 * dictionary, made at DICT_DEFAULT_LEVEL): the blocks differ from the
 * dictionary's own level, and both read back with the same dictionary. */
Test(segment, the_writers_level_holds_with_a_dictionary_of_another_level)
{
	uint64_t seed = hist_seed("segment.dict_level");
	struct model md;
	model_build(&md, seed, 50, 5000, false);
	struct pdict *d = model_dict(&md, 19);
	cr_assert_eq(d->level, 19);
	struct pio *io = mem_dir("p7");
	struct seg_write_info own, fast;
	struct seg_write_opts wo = { .dict = d, .level = 19 };
	write_model(io, "p7", 21, &md, &wo, &own);
	wo.level = 1;
	write_model(io, "p7", 22, &md, &wo, &fast);
	cr_assert_eq(own.raw_block_bytes, fast.raw_block_bytes);
	cr_assert_neq(own.block_bytes, fast.block_bytes,
		      "level 1 wrote the same %" PRIu64 " block bytes as level 19",
		      (uint64_t)fast.block_bytes);
	struct seg_open_opts oo = { .dict_lookup = one_dict, .dict_arg = d };
	const struct seg_write_info *wi[2] = { &own, &fast };
	for (int k = 0; k < 2; k++) {
		struct seg_reader *r;
		char err[SEG_ERR_LEN];
		cr_assert_eq(seg_open(io, "p7", wi[k]->name, &oo, &r, err, sizeof err),
			     0, "%s", err);
		check_all(r, &md);
		seg_close(r);
	}
	dict_free(d);
	model_free(&md);
	pio_free(io);
}

/* A reference (seg_ref) keeps a reader usable after its owner closed it
 * and the dictionary's owner freed the dictionary (the reader holds a
 * reference on it); two threads read it at once through one cache. */
struct shared_read {
	struct seg_reader *r;
	const struct model *md;
};

static void *shared_read_main(void *arg)
{
	struct shared_read *x = arg;
	for (int k = 0; k < 3; k++)
		check_all(x->r, x->md);
	return NULL;
}

Test(segment, a_reference_keeps_the_reader_and_its_dictionary)
{
	uint64_t seed = hist_seed("segment.ref");
	struct model md;
	model_build(&md, seed, 40, 4000, false);
	struct pdict *d = model_dict(&md, 3);
	struct seg_write_opts wo = { .dict = d, .block_bytes = 4096 };
	struct seg_write_info wi;
	struct pio *io = mem_dir_with("pr", 12, &md, &wo, &wi);
	struct bcache *c;
	cr_assert_eq(bcache_new_sharded(16 * 1024, 4, &c), 0); /* misses */
	struct seg_open_opts oo = { .cache = c, .dict_lookup = one_dict,
				    .dict_arg = d };
	struct seg_reader *r;
	char err[SEG_ERR_LEN];
	cr_assert_eq(seg_open(io, "pr", wi.name, &oo, &r, err, sizeof err), 0, "%s", err);
	struct seg_reader *ref = seg_ref(r);
	cr_assert_eq(ref, r);
	seg_close(r);    /* the owner's reference */
	dict_free(d);    /* the dictionary's owner */
	struct shared_read x = { ref, &md };
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, shared_read_main, &x), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	seg_retire(ref); /* blocks read from now on bypass the cache */
	bcache_erase_segment(c, 12);
	struct bcache_stats b0, b1;
	bcache_get_stats(c, &b0);
	check_all(ref, &md);
	bcache_get_stats(c, &b1);
	cr_assert_eq(b1.inserts, b0.inserts, "a retired reader cached a block");
	seg_close(ref); /* the last: file closed, dictionary freed */
	struct bcache_stats bs;
	bcache_get_stats(c, &bs);
	cr_assert_eq(bs.pinned_bytes, 0);
	bcache_free(c);
	model_free(&md);
	pio_free(io);
}

/* ---- fortunes corpus: dictionary vs none ------------------------------------ */

/* Lines of a fortune joined, split at sentence ends into 20..200 bytes. */
static bool load_fortunes(struct corpus *c)
{
	const char *dir = "/usr/share/games/fortunes";
	DIR *d = opendir(dir);
	if (!d)
		return false;
	struct dirent *de;
	c->text = NULL;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || strchr(de->d_name, '.'))
			continue; /* fortunes, literature, riddles; not .dat/.u8 */
		char p[512];
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		FILE *f = fopen(p, "rb");
		if (!f)
			continue;
		/* only regular files: the language subdirectories (de/, es/,
		 * off/) open too, and a directory's end offset on ext4 is
		 * LLONG_MAX, which made the buffer's realloc fail and the text
		 * read so far be lost (later files were then read behind
		 * uninitialised bytes) */
		struct stat st;
		if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
			fclose(f);
			continue;
		}
		size_t sz = (size_t)st.st_size;
		char *grown = realloc(c->text, c->len + sz + 1);
		cr_assert(grown, "fortunes: out of memory");
		c->text = grown;
		size_t got = fread(c->text + c->len, 1, sz, f);
		c->len += got;
		fclose(f);
	}
	closedir(d);
	if (!c->len)
		return false;
	corpus_cut(c);
	return c->n > 0;
}

Test(segment, fortunes_ratio_with_and_without_dictionary)
{
	struct corpus c = { 0 };
	if (!load_fortunes(&c))
		cr_skip_test("fortunes corpus not installed");
	/* train on even messages ("recent payloads"), store odd ones */
	struct dict_sample *smp = calloc(c.n, sizeof *smp);
	size_t ns = 0;
	for (size_t i = 0; i < c.n; i += 2)
		smp[ns++] = (struct dict_sample){ c.text + c.off[i], c.mlen[i] };
	struct pdict *d;
	cr_assert_eq(dict_train(smp, ns, DICT_DEFAULT_BYTES, DICT_DEFAULT_LEVEL, &d), 0);
	struct pio *io = mem_dir("p7");
	uint64_t ratio_pm[2];
	for (int with = 0; with < 2; with++) {
		struct seg_write_opts wo = { .dict = with ? d : NULL };
		struct seg_writer *w;
		cr_assert_eq(seg_writer_new(io, "p7", 20 + (uint64_t)with, &wo, &w), 0);
		uint64_t seq = 0;
		for (size_t i = 1; i < c.n; i += 2) {
			seq++; /* initialisers are unsequenced: bump it first */
			struct pe_entry e = { .seq = seq, .ts_ms = 1763900000000ull + seq * 1000,
					      .type = 1, .len = (uint32_t)c.mlen[i],
					      .payload = (const uint8_t *)c.text + c.off[i] };
			cr_assert_eq(seg_writer_add(w, "c/fortunes", 10, &e), 0);
		}
		struct seg_write_info wi;
		cr_assert_eq(seg_writer_finish(w, &wi), 0);
		ratio_pm[with] = wi.file_bytes * 1000 / wi.raw_payload_bytes;
		printf("fortunes %s: %llu messages, raw payload %llu B, file %llu B, ratio %.3f (dict %u B)\n",
		       with ? "with dict" : "no dict  ", (unsigned long long)wi.entries,
		       (unsigned long long)wi.raw_payload_bytes,
		       (unsigned long long)wi.file_bytes,
		       (double)wi.file_bytes / (double)wi.raw_payload_bytes, with ? d->len : 0);
		struct seg_open_opts oo = { .dict_lookup = one_dict, .dict_arg = d };
		struct seg_reader *r;
		cr_assert_eq(seg_open(io, "p7", wi.name, &oo, &r, NULL, 0), 0);
		struct seg_iter *it;
		cr_assert_eq(seg_iter_all(r, &it), 0);
		struct seg_item item;
		size_t i = 1, n = 0;
		while (seg_iter_next(it, &item) == 1) {
			cr_assert_eq(item.e.len, c.mlen[i]);
			cr_assert_eq(memcmp(item.e.payload, c.text + c.off[i], c.mlen[i]), 0);
			i += 2;
			n++;
		}
		cr_assert_eq(n, wi.entries);
		seg_iter_free(it);
		seg_close(r);
	}
	(void)ratio_pm;
	dict_free(d);
	free(smp);
	free(c.text);
	free(c.off);
	free(c.mlen);
	pio_free(io);
}

struct idem_list {
	struct seg_idem r[16];
	char keys[16][8];
	int n;
};

static int idem_grab(void *arg, const struct seg_idem *rec)
{
	struct idem_list *l = arg;
	cr_assert_lt(l->n, 16);
	l->r[l->n] = *rec;
	memcpy(l->keys[l->n], rec->key, rec->klen);
	l->keys[l->n][rec->klen] = '\0';
	l->r[l->n].key = (const uint8_t *)l->keys[l->n];
	l->n++;
	return 0;
}

/* Idempotency records: one per batch (same stream, producer and ts,
 * consecutive seqs), derived by the writer; explicit ones when asked. */
Test(segment, idempotency_section)
{
	struct pio *io = mem_dir("p8");
	struct pe_entry e = { .len = 1, .payload = (const uint8_t *)"x" };
	struct {
		const char *key;
		uint64_t seq, ts;
		uint8_t prod;
	} in[] = {
		{ "a", 1, 5, 1 }, { "a", 2, 5, 1 }, { "a", 3, 5, 1 }, /* batch: 1..3 */
		{ "a", 4, 5, 0 },                                     /* no producer */
		{ "a", 5, 6, 2 },                                     /* batch 5 */
		{ "a", 6, 7, 2 },                                     /* same producer, new ts */
		{ "a", 8, 7, 2 },                                     /* gap: a new batch */
		{ "b", 1, 7, 2 }, { "b", 2, 7, 2 },                   /* other stream */
	};
	struct seg_writer *w;
	cr_assert_eq(seg_writer_new(io, "p8", 1, NULL, &w), 0);
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(in); i++) {
		e.seq = in[i].seq;
		e.ts_ms = in[i].ts;
		memset(e.producer, 0, 16);
		e.producer[3] = in[i].prod;
		cr_assert_eq(seg_writer_add(w, in[i].key, 1, &e), 0);
	}
	struct seg_write_info wi;
	cr_assert_eq(seg_writer_finish(w, &wi), 0);
	struct seg_reader *r;
	cr_assert_eq(seg_open(io, "p8", wi.name, NULL, &r, NULL, 0), 0);
	struct seg_info si;
	seg_get_info(r, &si);
	cr_assert_eq(si.idem_records, 5u);
	struct idem_list l = { .n = 0 };
	cr_assert_eq(seg_idem_foreach(r, idem_grab, &l), 0);
	cr_assert_eq(l.n, 5);
	struct {
		const char *key;
		uint64_t seq;
		uint32_t count;
		uint64_t ts;
		uint8_t prod;
	} want[] = { { "a", 1, 3, 5, 1 }, { "a", 5, 1, 6, 2 }, { "a", 6, 1, 7, 2 },
		     { "a", 8, 1, 7, 2 }, { "b", 1, 2, 7, 2 } };
	for (int i = 0; i < 5; i++) {
		cr_assert_str_eq(l.keys[i], want[i].key);
		cr_assert_eq(l.r[i].seq, want[i].seq, "record %d", i);
		cr_assert_eq(l.r[i].count, want[i].count, "record %d", i);
		cr_assert_eq(l.r[i].ts, want[i].ts);
		cr_assert_eq(l.r[i].producer[3], want[i].prod);
	}
	seg_close(r);
	/* explicit records only */
	struct seg_write_opts wo = { .no_derive_idem = true };
	cr_assert_eq(seg_writer_new(io, "p8", 2, &wo, &w), 0);
	e.seq = 1;
	cr_assert_eq(seg_writer_add(w, "a", 1, &e), 0);
	struct seg_idem rec = { .key = (const uint8_t *)"zz", .klen = 2, .seq = 9,
				.count = 4, .ts = 77 };
	rec.producer[0] = 9;
	cr_assert_eq(seg_writer_add_idem(w, &rec), 0);
	rec.count = 0;
	cr_assert_eq(seg_writer_add_idem(w, &rec), -PARLEY_EINVAL);
	cr_assert_eq(seg_writer_finish(w, &wi), 0);
	cr_assert_eq(seg_open(io, "p8", wi.name, NULL, &r, NULL, 0), 0);
	l.n = 0;
	cr_assert_eq(seg_idem_foreach(r, idem_grab, &l), 0);
	cr_assert_eq(l.n, 1);
	cr_assert_str_eq(l.keys[0], "zz");
	cr_assert_eq(l.r[0].seq, 9u);
	cr_assert_eq(l.r[0].count, 4u);
	cr_assert_eq(l.r[0].producer[0], 9);
	seg_close(r);
	pio_free(io);
}

/* ---- idempotency sections are not resident ----------------------------- */

/* n entries over 4 streams, each entry its own batch (a producer of its
 * own), so the section holds n records. */
static void write_batches(struct pio *io, const char *dir, uint64_t id,
			  uint32_t n, struct seg_write_info *wi)
{
	struct seg_writer *w;
	cr_assert_eq(seg_writer_new(io, dir, id, NULL, &w), 0);
	struct pe_entry e = { .len = 8, .payload = (const uint8_t *)"payload!" };
	for (uint32_t k = 0; k < 4; k++) {
		char key[8];
		snprintf(key, sizeof key, "s%u", k);
		for (uint32_t i = 0; i < n / 4; i++) {
			e.seq = i + 1;
			e.ts_ms = 1000 + i;
			memset(e.producer, 0, sizeof e.producer);
			le_put32(e.producer, k * n + i + 1);
			cr_assert_eq(seg_writer_add(w, key, strlen(key), &e), 0);
		}
	}
	cr_assert_eq(seg_writer_finish(w, wi), 0);
}

static void check_producer(const struct seg_item *it, uint32_t n)
{
	uint32_t k = (uint32_t)(it->key[1] - '0');
	uint8_t want[PE_PRODUCER_LEN] = { 0 };
	le_put32(want, k * n + (uint32_t)(it->e.seq - 1) + 1);
	cr_assert_eq(memcmp(it->e.producer, want, PE_PRODUCER_LEN), 0,
		     "key s%u seq %llu: wrong producer", k,
		     (unsigned long long)it->e.seq);
}

static size_t heap_used(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

/* A reader's heap after seg_open grows with its blocks and streams, not
 * with its entries: 40,000 one-entry batches cost (almost) no more than
 * 2,000 (the resident idempotency section cost ~140 B per batch). */
Test(segment, reader_memory_does_not_grow_with_idempotency_records)
{
	struct pio *io = mem_dir("p9");
	static const uint32_t ns[2] = { 2000, 40000 };
	size_t heap[2], res[2];
	uint32_t blocks[2];
	struct bcache *c;
	cr_assert_eq(bcache_new(64 * 1024, &c), 0);
	for (int t = 0; t < 2; t++) {
		struct seg_write_info wi;
		write_batches(io, "p9", (uint64_t)t + 1, ns[t], &wi);
		struct seg_open_opts oo = { .cache = c };
		struct seg_reader *r;
		size_t before = heap_used();
		cr_assert_eq(seg_open(io, "p9", wi.name, &oo, &r, NULL, 0), 0);
		heap[t] = heap_used() - before;
		res[t] = seg_resident_bytes(r);
		struct seg_info si;
		seg_get_info(r, &si);
		cr_assert_eq(si.idem_records, ns[t]);
		blocks[t] = si.blocks;
		printf("%u entries, %u blocks: heap after open %zu B, resident %zu B\n",
		       ns[t], si.blocks, heap[t], res[t]);
		seg_close(r);
	}
	/* the index costs < 256 B per block; everything else is fixed */
	size_t per_blocks = (size_t)(blocks[1] - blocks[0]) * 256;
	cr_assert_leq(heap[1], heap[0] + per_blocks + 16384,
		      "heap %zu B for %u entries vs %zu B for %u", heap[1], ns[1],
		      heap[0], ns[0]);
	cr_assert_leq(res[1], res[0] + per_blocks);
	cr_assert_lt(res[1], (size_t)ns[1] * 8);
	bcache_free(c);
	pio_free(io);
}

static int count_rec(void *arg, const struct seg_idem *rec)
{
	(void)rec;
	++*(uint32_t *)arg;
	return 0;
}

/* With a cache too small for the decoded section it is evicted after every
 * use; H_PRODREF entries still decode to their batch's producer, forward,
 * backward and after other segments used the cache, and the cache stays
 * within its budget once nothing is pinned. */
Test(segment, prodref_producers_right_after_idempotency_section_evicted)
{
	struct pio *io = mem_dir("pa");
	const uint32_t n = 20000;
	struct bcache *c;
	cr_assert_eq(bcache_new(64 * 1024, &c), 0);
	struct seg_write_info wa, wb;
	write_batches(io, "pa", 1, n, &wa);
	write_batches(io, "pa", 2, n, &wb);
	struct seg_open_opts oo = { .cache = c };
	struct seg_reader *a, *b;
	cr_assert_eq(seg_open(io, "pa", wa.name, &oo, &a, NULL, 0), 0);
	cr_assert_eq(seg_open(io, "pa", wb.name, &oo, &b, NULL, 0), 0);
	for (int round = 0; round < 2; round++) {
		struct seg_reader *rs[2] = { a, b };
		for (int s = 0; s < 2; s++) {
			struct seg_iter *it;
			cr_assert_eq(seg_iter_all(rs[s], &it), 0);
			struct seg_item item;
			uint32_t got = 0;
			int rc;
			while ((rc = seg_iter_next(it, &item)) == 1) {
				check_producer(&item, n);
				got++;
			}
			cr_assert_eq(rc, 0, "%s", seg_error(rs[s]));
			cr_assert_eq(got, n);
			seg_iter_free(it);
			uint32_t recs = 0;
			cr_assert_eq(seg_idem_foreach(rs[s], count_rec, &recs), 0);
			cr_assert_eq(recs, n);
		}
		/* newest first, one stream */
		struct pe_entry out[50];
		uint32_t cnt;
		bool end;
		struct seg_iter *hold;
		cr_assert_eq(seg_read(a, "s3", 2, UINT64_MAX, PE_BACKWARD, 50, out,
				      &cnt, &end, &hold), 0);
		cr_assert_eq(cnt, 50u);
		for (uint32_t i = 0; i < cnt; i++) {
			struct seg_item item = { .key = (const uint8_t *)"s3",
						 .klen = 2, .e = out[i] };
			check_producer(&item, n);
		}
		seg_iter_free(hold);
	}
	struct bcache_stats st;
	bcache_get_stats(c, &st);
	cr_assert_eq(st.pinned_bytes, 0u);
	cr_assert_leq(st.bytes, 64u * 1024);
	cr_assert_gt(st.evictions, 0u);
	cr_assert_lt(seg_resident_bytes(a), (size_t)n * 8);
	seg_close(a);
	seg_close(b);
	bcache_free(c);
	pio_free(io);
}

/* The section is re-read from the file: a flip in it after open is an
 * error naming the file and the section, never a wrong producer. */
Test(segment, idempotency_section_damaged_after_open_is_an_error)
{
	struct pio *io = mem_dir("pb");
	struct seg_write_info wi;
	write_batches(io, "pb", 1, 400, &wi);
	struct seg_reader *r;
	cr_assert_eq(seg_open(io, "pb", wi.name, NULL, &r, NULL, 0), 0);
	char path[128];
	snprintf(path, sizeof path, "pb/%s", wi.name);
	/* the section ends where the 128-byte footer begins */
	int64_t size = pio_mem_file_size(io, path);
	cr_assert_eq(pio_mem_flip_bit(io, path, (uint64_t)size - 128 - 3, 1), 0);
	struct seg_iter *it;
	cr_assert_eq(seg_iter_all(r, &it), 0);
	struct seg_item item;
	cr_assert_eq(seg_iter_next(it, &item), -PARLEY_ECORRUPT);
	cr_assert_not_null(strstr(seg_error(r), "idempotency section"), "%s",
			   seg_error(r));
	cr_assert_not_null(strstr(seg_error(r), wi.name));
	seg_iter_free(it);
	uint32_t recs = 0;
	cr_assert_eq(seg_idem_foreach(r, count_rec, &recs), -PARLEY_ECORRUPT);
	seg_close(r);
	pio_free(io);
}
