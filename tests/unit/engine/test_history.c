/*
 * test_history.c — engine/history.c: a stream read gives the same answer
 * whatever the segment layout (several flushes, one full compaction, a
 * partial non-adjacent compaction), equal to a model, for random ranges,
 * both directions, limits, tombstones, first-retained bounds and a memtable
 * bound; cursor pagination both ways; corruption is an error, not a gap.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compact.h"
#include "hist_corpus.h"
#include "history.h"
#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "segment.h"

#define NSTREAMS 6
#define NFLUSH 4

struct hent {
	struct pe_entry e;
	uint8_t pay[40];
	int flush;
};

static struct hent *ents[NSTREAMS];
static size_t nents[NSTREAMS];
static char keys[NSTREAMS][16];

static void build(uint64_t seed)
{
	struct parley_rng rng = { seed };
	for (int s = 0; s < NSTREAMS; s++) {
		snprintf(keys[s], sizeof keys[s], "c/%d", s);
		nents[s] = s == 0 ? 1 : 50 + parley_rng_below(&rng, 700);
		ents[s] = calloc(nents[s], sizeof *ents[s]);
		for (size_t i = 0; i < nents[s]; i++) {
			struct hent *h = &ents[s][i];
			h->e.seq = i + 1;
			h->e.ts_ms = 1000 * (i + 1);
			h->e.len = (uint32_t)parley_rng_below(&rng, 40);
			for (uint32_t b = 0; b < h->e.len; b++)
				h->pay[b] = (uint8_t)('a' + (i + b) % 26);
			h->e.payload = h->pay;
			h->flush = (int)(i * NFLUSH / nents[s]);
		}
	}
}

static void write_flush(struct pio *io, int f, struct seg_reader **out)
{
	struct seg_writer *w;
	struct seg_write_opts wo = { .block_bytes = 1024, .level = 1 };
	cr_assert_eq(seg_writer_new(io, "ph", 10 + (uint64_t)f, &wo, &w), 0);
	bool any = false;
	for (int s = 0; s < NSTREAMS; s++)
		for (size_t i = 0; i < nents[s]; i++)
			if (ents[s][i].flush == f) {
				cr_assert_eq(seg_writer_add(w, keys[s], strlen(keys[s]), &ents[s][i].e), 0);
				any = true;
			}
	cr_assert(any);
	struct seg_write_info wi;
	cr_assert_eq(seg_writer_finish(w, &wi), 0);
	cr_assert_eq(seg_open(io, "ph", wi.name, NULL, out, NULL, 0), 0);
}

static void compact_into(struct pio *io, struct seg_reader **in, size_t n,
			 uint64_t id, struct seg_reader **out)
{
	struct compact_opts o = { .io = io, .dir = "ph", .out_seg_id = id,
				  .wopts = { .block_bytes = 2048 } };
	struct compact_stats st;
	cr_assert_eq(compact_run(in, n, &o, &st), 0);
	cr_assert(st.output);
	cr_assert_eq(seg_open(io, "ph", st.out.name, NULL, out, NULL, 0), 0);
}

/* The model's answer. */
static uint32_t expect(int s, const struct history_read_req *q, uint64_t *seqs,
		       bool *end, bool *trimmed)
{
	uint64_t lo = 1;
	if (q->deleted_through)
		lo = q->deleted_through + 1;
	if (q->first_retained > lo)
		lo = q->first_retained;
	uint64_t hi = q->below ? q->below - 1 : UINT64_MAX;
	uint32_t n = 0;
	*end = true;
	*trimmed = q->dir == PE_FORWARD && q->from < lo;
	if (q->dir == PE_FORWARD) {
		for (size_t i = 0; i < nents[s]; i++) {
			uint64_t seq = ents[s][i].e.seq;
			if (seq < q->from || seq < lo || seq > hi)
				continue;
			if (n == q->limit) {
				*end = false;
				break;
			}
			seqs[n++] = seq;
		}
	} else {
		for (size_t i = nents[s]; i > 0; i--) {
			uint64_t seq = ents[s][i - 1].e.seq;
			if (seq > q->from || seq < lo || seq > hi)
				continue;
			if (n == q->limit) {
				*end = false;
				break;
			}
			seqs[n++] = seq;
		}
	}
	return n;
}

static void check(struct seg_reader **segs, size_t n, int s,
		  const struct history_read_req *q, const char *layout)
{
	static struct pe_entry out[1000];
	static uint64_t want[1000];
	struct history_read_res res;
	struct history_hold *hold;
	cr_assert_eq(history_read(segs, n, q, out, &res, &hold), 0);
	bool end, trimmed;
	uint32_t wn = expect(s, q, want, &end, &trimmed);
	cr_assert_eq(res.count, wn, "%s stream %d from %llu dir %d limit %u below %llu del %llu ret %llu",
		     layout, s, (unsigned long long)q->from, q->dir, q->limit,
		     (unsigned long long)q->below, (unsigned long long)q->deleted_through,
		     (unsigned long long)q->first_retained);
	for (uint32_t i = 0; i < wn; i++) {
		cr_assert_eq(out[i].seq, want[i], "%s: position %u", layout, i);
		const struct pe_entry *m = &ents[s][want[i] - 1].e;
		cr_assert_eq(out[i].len, m->len);
		cr_assert_eq(memcmp(out[i].payload, m->payload, m->len), 0);
		cr_assert_eq(out[i].ts_ms, m->ts_ms);
	}
	cr_assert_eq(res.end, end, "%s: end", layout);
	cr_assert_eq(res.trimmed, trimmed, "%s: trimmed", layout);
	history_hold_free(hold);
}

Test(history, same_answers_whatever_the_layout)
{
	uint64_t seed = hist_seed("history.layouts");
	build(seed);
	struct pio *io = pio_mem_new(seed);
	cr_assert_eq(io->ops->mkdir(io, "ph"), 0);
	struct seg_reader *fl[NFLUSH];
	for (int f = 0; f < NFLUSH; f++)
		write_flush(io, f, &fl[f]);
	/* layout B: everything compacted into one segment */
	struct seg_reader *all;
	compact_into(io, fl, NFLUSH, 100, &all);
	/* layout C: flushes 0 and 2 merged (non-adjacent), 1 and 3 as they are */
	struct seg_reader *m02, *pair[2] = { fl[0], fl[2] };
	compact_into(io, pair, 2, 101, &m02);
	struct seg_reader *layC[3] = { fl[3], m02, fl[1] };
	/* layout D: C plus the full compaction (manifest mid-swap: duplicates) */
	struct seg_reader *layD[4] = { fl[3], m02, fl[1], all };

	struct parley_rng rng = { seed ^ 77 };
	for (int iter = 0; iter < 3000; iter++) {
		int s = (int)parley_rng_below(&rng, NSTREAMS);
		uint64_t n = nents[s];
		struct history_read_req q = {
			.key = keys[s], .klen = strlen(keys[s]),
			.dir = (enum pe_dir)parley_rng_below(&rng, 2),
			.limit = 1 + (uint32_t)parley_rng_below(&rng, iter % 3 ? 20 : 1000),
		};
		q.from = parley_rng_below(&rng, 8) == 0 ? (q.dir ? UINT64_MAX : 0)
							: parley_rng_below(&rng, n + 3);
		if (parley_rng_below(&rng, 4) == 0)
			q.below = 1 + parley_rng_below(&rng, n + 2);
		if (parley_rng_below(&rng, 4) == 0)
			q.deleted_through = parley_rng_below(&rng, n + 2);
		if (parley_rng_below(&rng, 4) == 0)
			q.first_retained = parley_rng_below(&rng, n + 2);
		check(fl, NFLUSH, s, &q, "flushes");
		check(&all, 1, s, &q, "compacted");
		check(layC, 3, s, &q, "partial");
		check(layD, 4, s, &q, "mid-swap");
	}
	/* stream missing everywhere */
	struct history_read_req q = { .key = "zz", .klen = 2, .limit = 10 };
	struct pe_entry out[10];
	struct history_read_res res;
	struct history_hold *hold;
	cr_assert_eq(history_read(fl, NFLUSH, &q, out, &res, &hold), 0);
	cr_assert_eq(res.count, 0u);
	cr_assert(res.end);
	history_hold_free(hold);
	q.limit = 0;
	cr_assert_eq(history_read(fl, NFLUSH, &q, out, &res, &hold), -PARLEY_EINVAL);
	uint64_t f, l, c;
	cr_assert_eq(history_stream_bounds(layC, 3, keys[3], strlen(keys[3]), &f, &l, &c), 0);
	cr_assert_eq(f, 1u);
	cr_assert_eq(l, nents[3]);
	cr_assert_eq(c, nents[3]);
	cr_assert_eq(history_stream_bounds(layC, 3, "zz", 2, &f, &l, &c), -PARLEY_ENOTFOUND);

	for (int i = 0; i < NFLUSH; i++)
		seg_close(fl[i]);
	seg_close(all);
	seg_close(m02);
	for (int s = 0; s < NSTREAMS; s++)
		free(ents[s]);
	pio_free(io);
}

/* Cursor pagination across segment boundaries, both directions. */
Test(history, pagination)
{
	uint64_t seed = hist_seed("history.pagination");
	build(seed);
	struct pio *io = pio_mem_new(seed);
	cr_assert_eq(io->ops->mkdir(io, "ph"), 0);
	struct seg_reader *fl[NFLUSH];
	for (int f = 0; f < NFLUSH; f++)
		write_flush(io, f, &fl[f]);
	struct parley_rng rng = { seed };
	static struct pe_entry out[64];
	for (int s = 0; s < NSTREAMS; s++) {
		for (int d = 0; d < 2; d++) {
			uint64_t cursor = d ? UINT64_MAX : 1, seen = 0;
			uint64_t expect_next = d ? nents[s] : 1;
			for (;;) {
				struct history_read_req q = {
					.key = keys[s], .klen = strlen(keys[s]), .from = cursor,
					.dir = (enum pe_dir)d,
					.limit = 1 + (uint32_t)parley_rng_below(&rng, 64),
				};
				struct history_read_res res;
				struct history_hold *hold;
				cr_assert_eq(history_read(fl, NFLUSH, &q, out, &res, &hold), 0);
				for (uint32_t i = 0; i < res.count; i++) {
					cr_assert_eq(out[i].seq, expect_next, "stream %d dir %d", s, d);
					expect_next += d ? (uint64_t)-1 : 1;
				}
				seen += res.count;
				if (res.count)
					cursor = d ? out[res.count - 1].seq - 1 : out[res.count - 1].seq + 1;
				history_hold_free(hold);
				if (res.end)
					break;
				cr_assert_gt(res.count, 0u, "not at the end but no progress");
			}
			cr_assert_eq(seen, nents[s], "stream %d dir %d", s, d);
		}
	}
	/* a flipped bit in one segment: the read fails, naming it */
	struct seg_block_info bi;
	cr_assert_eq(seg_block_meta(fl[2], 0, &bi), 0);
	cr_assert_eq(pio_mem_flip_bit(io, "ph/seg-000000000000000c.pseg", bi.offset + 3, 0), 0);
	const char *k = (const char *)bi.first_key;
	struct history_read_req q = { .key = k, .klen = bi.first_klen, .from = 0,
				      .dir = PE_FORWARD, .limit = 1000 };
	struct history_read_res res;
	struct history_hold *hold;
	cr_assert_eq(history_read(fl, NFLUSH, &q, out, &res, &hold), -PARLEY_ECORRUPT);
	cr_assert_null(hold);
	cr_assert_eq(res.count, 0u);
	cr_assert_not_null(strstr(seg_error(fl[2]), "seg-000000000000000c.pseg"));
	cr_assert_not_null(strstr(seg_error(fl[2]), "block=0 "));
	for (int i = 0; i < NFLUSH; i++)
		seg_close(fl[i]);
	for (int s = 0; s < NSTREAMS; s++)
		free(ents[s]);
	pio_free(io);
}
