/*
 * test_bcache.c — engine/bcache.c: hits and misses, LRU eviction under the
 * byte budget, pinned items never freed, erase while pinned, duplicate
 * insert, and a seeded random model test of the accounting invariants;
 * with lock shards, threads looking up, inserting, releasing and erasing
 * at once never see a freed value (each value carries a check word that
 * its free poisons) and the accounting comes back to zero pins.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bcache.h"
#include "parley_common.h"

static int freed[4096];

struct val {
	int id;
};

static void vfree(void *p)
{
	struct val *v = p;
	freed[v->id]++;
	free(v);
}

static struct val *mkval(int id)
{
	struct val *v = malloc(sizeof *v);
	v->id = id;
	return v;
}

Test(bcache, hit_miss_and_lru_eviction)
{
	memset(freed, 0, sizeof freed);
	struct bcache *c;
	cr_assert_eq(bcache_new(300, &c), 0);
	struct bcache_item *h;
	cr_assert_null(bcache_lookup(c, 1, 0));
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(bcache_insert(c, 1, (uint32_t)i, mkval(i), 100, vfree, &h), 0);
		cr_assert_eq(((struct val *)bcache_value(h))->id, i);
		bcache_release(c, h);
	}
	/* touch block 0 so block 1 is the least recently used */
	h = bcache_lookup(c, 1, 0);
	cr_assert_not_null(h);
	bcache_release(c, h);
	cr_assert_eq(bcache_insert(c, 1, 3, mkval(3), 100, vfree, &h), 0);
	bcache_release(c, h);
	cr_assert_eq(freed[1], 1, "LRU victim should be block 1");
	cr_assert_eq(freed[0] + freed[2] + freed[3], 0);
	cr_assert_null(bcache_lookup(c, 1, 1));
	struct bcache_stats st;
	bcache_get_stats(c, &st);
	cr_assert_eq(st.bytes, 300u);
	cr_assert_eq(st.items, 3u);
	cr_assert_eq(st.evictions, 1u);
	cr_assert_eq(st.hits, 1u);
	cr_assert_eq(st.misses, 2u);
	cr_assert_eq(st.pinned_bytes, 0u);
	bcache_free(c);
	cr_assert_eq(freed[0] + freed[2] + freed[3], 3);
}

Test(bcache, pinned_items_are_never_freed)
{
	memset(freed, 0, sizeof freed);
	struct bcache *c;
	cr_assert_eq(bcache_new(100, &c), 0);
	struct bcache_item *a, *b;
	cr_assert_eq(bcache_insert(c, 7, 0, mkval(0), 80, vfree, &a), 0);
	/* over budget, but a is pinned: b evicts nothing it may not */
	cr_assert_eq(bcache_insert(c, 7, 1, mkval(1), 80, vfree, &b), 0);
	cr_assert_eq(freed[0] + freed[1], 0);
	struct bcache_stats st;
	bcache_get_stats(c, &st);
	cr_assert_eq(st.pinned_bytes, 160u);
	bcache_release(c, a); /* now a is evictable and over budget */
	cr_assert_eq(freed[0], 1);
	cr_assert_eq(freed[1], 0);
	cr_assert_eq(((struct val *)bcache_value(b))->id, 1);
	bcache_release(c, b);
	bcache_get_stats(c, &st);
	cr_assert_eq(st.bytes, 80u);
	cr_assert_eq(st.pinned_bytes, 0u);
	bcache_free(c);
}

Test(bcache, erase_segment_while_pinned_and_duplicates)
{
	memset(freed, 0, sizeof freed);
	struct bcache *c;
	cr_assert_eq(bcache_new(1 << 20, &c), 0);
	struct bcache_item *a, *b, *d;
	cr_assert_eq(bcache_insert(c, 1, 0, mkval(0), 10, vfree, &a), 0);
	cr_assert_eq(bcache_insert(c, 1, 1, mkval(1), 10, vfree, &b), 0);
	bcache_release(c, b);
	cr_assert_eq(bcache_insert(c, 2, 0, mkval(2), 10, vfree, &d), 0);
	bcache_release(c, d);
	/* duplicate insert: existing item returned, new value freed */
	struct bcache_item *dup;
	cr_assert_eq(bcache_insert(c, 2, 0, mkval(3), 10, vfree, &dup), 0);
	cr_assert_eq(freed[3], 1);
	cr_assert_eq(((struct val *)bcache_value(dup))->id, 2);
	bcache_release(c, dup);

	bcache_erase_segment(c, 1);
	cr_assert_eq(freed[1], 1, "unpinned block of the erased segment freed");
	cr_assert_eq(freed[0], 0, "pinned block survives until released");
	cr_assert_null(bcache_lookup(c, 1, 0));
	cr_assert_eq(((struct val *)bcache_value(a))->id, 0);
	bcache_release(c, a);
	cr_assert_eq(freed[0], 1);
	struct bcache_item *x = bcache_lookup(c, 2, 0);
	cr_assert_not_null(x);
	bcache_release(c, x);
	bcache_set_budget(c, 0);
	cr_assert_eq(freed[2], 1);
	bcache_free(c);
}

Test(bcache, random_model)
{
	uint64_t seed = parley_mono_ns();
	printf("bcache random_model seed=%llu\n", (unsigned long long)seed);
	struct parley_rng rng = { seed };
	memset(freed, 0, sizeof freed);
	struct bcache *c;
	size_t budget = 5000;
	cr_assert_eq(bcache_new(budget, &c), 0);
	struct bcache_item *pins[16] = { 0 };
	int inserted = 0;
	for (int step = 0; step < 20000; step++) {
		unsigned op = (unsigned)parley_rng_below(&rng, 10);
		uint64_t seg = parley_rng_below(&rng, 4);
		uint32_t blk = (uint32_t)parley_rng_below(&rng, 32);
		unsigned slot = (unsigned)parley_rng_below(&rng, 16);
		if (op < 4) {
			struct bcache_item *h = bcache_lookup(c, seg, blk);
			if (!h && inserted < 4000) {
				int id = inserted++;
				cr_assert_eq(bcache_insert(c, seg, blk, mkval(id),
							   50 + parley_rng_below(&rng, 400),
							   vfree, &h), 0);
			}
			if (h) {
				if (pins[slot])
					bcache_release(c, pins[slot]);
				pins[slot] = h;
			}
		} else if (op < 8) {
			if (pins[slot]) {
				/* the pinned value must still be alive */
				struct val *v = bcache_value(pins[slot]);
				cr_assert_eq(freed[v->id], 0, "seed=%llu", (unsigned long long)seed);
				bcache_release(c, pins[slot]);
				pins[slot] = NULL;
			}
		} else if (op == 8) {
			bcache_erase_segment(c, seg);
		} else {
			budget = 1000 + parley_rng_below(&rng, 8000);
			bcache_set_budget(c, budget);
		}
		struct bcache_stats st;
		bcache_get_stats(c, &st);
		cr_assert_leq(st.bytes, budget + st.pinned_bytes, "seed=%llu step=%d",
			      (unsigned long long)seed, step);
	}
	for (int i = 0; i < 16; i++)
		if (pins[i])
			bcache_release(c, pins[i]);
	bcache_free(c);
	for (int i = 0; i < inserted; i++)
		cr_assert_eq(freed[i], 1, "value %d freed %d times (seed=%llu)", i,
			     freed[i], (unsigned long long)seed);
}

/* ---- several threads on one cache ---------------------------------------------------- */

#define MT_LIVE 0x6c697665u /* "live" */
#define MT_DEAD 0xdeadbeefu

struct mtval {
	_Atomic uint32_t check;
	uint64_t seg;
	uint32_t blk;
};

static atomic_long mt_freed, mt_made;

static void mtfree(void *p)
{
	struct mtval *v = p;
	cr_assert_eq(atomic_exchange(&v->check, MT_DEAD), MT_LIVE,
		     "a value freed twice");
	atomic_fetch_add(&mt_freed, 1);
	free(v);
}

struct mtarg {
	struct bcache *c;
	uint64_t seed;
	long bad;
};

static void *mt_main(void *arg)
{
	struct mtarg *a = arg;
	struct parley_rng r = {a->seed};
	struct bcache_item *held[8] = {0};
	for (int i = 0; i < 200000; i++) {
		uint64_t seg = parley_rng_below(&r, 16);
		uint32_t blk = (uint32_t)parley_rng_below(&r, 64);
		int slot = (int)parley_rng_below(&r, 8);
		if (held[slot]) { /* a pinned value stays intact */
			struct mtval *v = bcache_value(held[slot]);
			if (atomic_load(&v->check) != MT_LIVE)
				a->bad++;
			bcache_release(a->c, held[slot]);
			held[slot] = NULL;
		}
		uint64_t op = parley_rng_below(&r, 100);
		if (op < 2) {
			bcache_erase_segment(a->c, seg);
			continue;
		}
		struct bcache_item *it = bcache_lookup(a->c, seg, blk);
		if (!it) {
			struct mtval *v = malloc(sizeof *v);
			cr_assert_not_null(v);
			atomic_init(&v->check, MT_LIVE);
			v->seg = seg;
			v->blk = blk;
			atomic_fetch_add(&mt_made, 1);
			cr_assert_eq(bcache_insert(a->c, seg, blk, v, 1000, mtfree, &it), 0);
		}
		struct mtval *v = bcache_value(it);
		if (atomic_load(&v->check) != MT_LIVE || v->seg != seg || v->blk != blk)
			a->bad++;
		held[slot] = it;
	}
	for (int k = 0; k < 8; k++)
		if (held[k])
			bcache_release(a->c, held[k]);
	return NULL;
}

Test(bcache, threads_share_a_sharded_cache)
{
	const char *env = getenv("PARLEY_TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
	fprintf(stderr, "bcache.threads seed=%llu (replay: PARLEY_TEST_SEED=%llu)\n",
		(unsigned long long)seed, (unsigned long long)seed);
	atomic_store(&mt_freed, 0);
	atomic_store(&mt_made, 0);
	struct bcache *c;
	/* 200 items of budget over 4 lock shards: constant eviction */
	cr_assert_eq(bcache_new_sharded(200 * 1000, 4, &c), 0);
	enum { NT = 4 };
	struct mtarg a[NT];
	pthread_t t[NT];
	for (int i = 0; i < NT; i++) {
		a[i] = (struct mtarg){.c = c, .seed = seed * 31 + (uint64_t)i};
		cr_assert_eq(pthread_create(&t[i], NULL, mt_main, &a[i]), 0);
	}
	for (int i = 0; i < NT; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(a[i].bad, 0, "thread %d saw a freed or wrong value", i);
	}
	struct bcache_stats st;
	bcache_get_stats(c, &st);
	cr_assert_eq(st.pinned_bytes, 0);
	cr_assert_leq(st.bytes, 200 * 1000);
	cr_assert_eq(st.items * 1000, st.bytes);
	cr_assert_gt(st.evictions, 0);
	bcache_free(c);
	cr_assert_eq(atomic_load(&mt_freed), atomic_load(&mt_made),
		     "every value freed exactly once");
}

Test(bcache, sharded_cache_rejects_bad_shard_counts)
{
	struct bcache *c;
	cr_assert_eq(bcache_new_sharded(1000, 0, &c), -PARLEY_EINVAL);
	cr_assert_eq(bcache_new_sharded(1000, BCACHE_MAX_LOCK_SHARDS + 1, &c),
		     -PARLEY_EINVAL);
}
