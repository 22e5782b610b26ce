/*
 * test_memtable.c — the memtable's entry chunks (engine/log/memtable.c):
 * entries carved from a partition's chunks or malloc'd by size, a chunk
 * refilled or kept as the spare when emptied, nothing left after
 * part_free_state, and a seeded random model of allocations and frees in
 * any order whose contents must never overlap (the seed is printed;
 * PARLEY_SEED replays it).
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_internal.h"

static struct mchunk *chunk_of(const struct mentry *m)
{
	return (struct mchunk *)((uintptr_t)m & ~(uintptr_t)(MEM_CHUNK_BYTES - 1));
}

/* One entry with len bytes of payload, filled from tag. */
static struct mentry *ent_new(struct part *p, uint32_t len, uint32_t tag)
{
	struct mentry *m = mentry_alloc(p, len);
	cr_assert_not_null(m);
	cr_assert_eq((uintptr_t)m % 8, 0, "entry not 8-byte aligned");
	m->seq = tag;
	m->len = len;
	for (uint32_t i = 0; i < len; i++)
		m->payload[i] = (uint8_t)(tag * 31 + i);
	return m;
}

static void ent_check(const struct mentry *m, uint32_t tag)
{
	cr_assert_eq(m->seq, tag);
	for (uint32_t i = 0; i < m->len; i++)
		cr_assert_eq(m->payload[i], (uint8_t)(tag * 31 + i),
			     "entry %u byte %u overwritten", tag, i);
}

Test(memtable, chunk_fill_refill_spare_and_free)
{
	if (!mentry_in_chunk(100))
		cr_skip_test("entries are plain malloc blocks in this build");
	struct part *p = calloc(1, sizeof *p);
	cr_assert_not_null(p);
	/* a large entry is its own malloc block: no chunk is made */
	struct mentry *big = ent_new(p, MEM_CHUNK_ENTRY_MAX, 1);
	cr_assert(!mentry_in_chunk(MEM_CHUNK_ENTRY_MAX));
	cr_assert_null(p->mcur);
	/* small entries share one chunk, back to back */
	struct mentry *a = ent_new(p, 100, 2), *b = ent_new(p, 5, 3);
	cr_assert_not_null(p->mcur);
	cr_assert_eq(chunk_of(a), p->mcur);
	cr_assert_eq(chunk_of(b), p->mcur);
	cr_assert_gt((uintptr_t)b, (uintptr_t)a);
	cr_assert_lt((uintptr_t)b - (uintptr_t)a, 200);
	/* emptied while being filled: filled again from its start */
	mentry_free(p, b);
	mentry_free(p, a);
	struct mentry *a2 = ent_new(p, 100, 4);
	cr_assert_eq(a2, a);
	/* fill past the first chunk: it is retired, a second one is made */
	struct mchunk *first = p->mcur;
	uint32_t n = MEM_CHUNK_BYTES / 1024 + 8;
	struct mentry **v = calloc(n, sizeof *v);
	cr_assert_not_null(v);
	for (uint32_t i = 0; i < n; i++)
		v[i] = ent_new(p, 1000, 100 + i);
	cr_assert_neq(p->mcur, first);
	cr_assert_null(p->mspare);
	/* the retired chunk, emptied, becomes the spare */
	mentry_free(p, a2);
	for (uint32_t i = 0; i < n; i++)
		if (chunk_of(v[i]) == first) {
			mentry_free(p, v[i]);
			v[i] = NULL;
		}
	cr_assert_eq(p->mspare, first);
	for (uint32_t i = 0; i < n; i++)
		if (v[i])
			ent_check(v[i], 100 + i);
	ent_check(big, 1);
	mentry_free(p, big);
	/* the state's free frees the rest and unmaps the chunks */
	for (uint32_t i = 0; i < n; i++)
		mentry_free(p, v[i]);
	part_free_state(p);
	cr_assert_null(p->mcur);
	cr_assert_null(p->mspare);
	free(v);
	free(p);
}

/* Random sizes (some over MEM_CHUNK_ENTRY_MAX) and frees in any order:
 * every live entry keeps its bytes. */
Test(memtable, random_alloc_free_model)
{
	const char *env = getenv("PARLEY_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	fprintf(stderr, "test_memtable random_alloc_free_model: seed %" PRIu64 "\n", seed);
	struct parley_rng rng = {seed};
	struct part *p = calloc(1, sizeof *p);
	cr_assert_not_null(p);
	enum { N = 3000 };
	struct mentry **live = calloc(N, sizeof *live);
	uint32_t *tags = calloc(N, sizeof *tags);
	cr_assert(live && tags);
	uint32_t nlive = 0, tag = 0;
	for (int step = 0; step < 60000; step++) {
		bool alloc = nlive == 0 ||
			     (nlive < N && parley_rng_below(&rng, 100) < 55);
		if (alloc) {
			uint32_t r = (uint32_t)parley_rng_below(&rng, 1000);
			uint32_t len = r < 5     ? MEM_CHUNK_ENTRY_MAX + (uint32_t)parley_rng_below(&rng, 4096)
				       : r < 300 ? (uint32_t)parley_rng_below(&rng, 64)
						 : (uint32_t)parley_rng_below(&rng, 3000);
			live[nlive] = ent_new(p, len, ++tag);
			tags[nlive++] = tag;
		} else {
			uint32_t k = (uint32_t)parley_rng_below(&rng, nlive);
			ent_check(live[k], tags[k]);
			mentry_free(p, live[k]);
			live[k] = live[--nlive];
			tags[k] = tags[nlive];
		}
	}
	for (uint32_t k = 0; k < nlive; k++) {
		ent_check(live[k], tags[k]);
		mentry_free(p, live[k]);
	}
	part_free_state(p);
	cr_assert_null(p->mcur);
	cr_assert_null(p->mspare);
	free(live);
	free(tags);
	free(p);
}
