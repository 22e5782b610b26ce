/*
 * test_pool.c — per-thread block pools (common/pool.c): reuse on the
 * owning thread, blocks freed on other threads coming back through the
 * return list, the bound on cached bytes, blocks outliving their pool's
 * thread, and threads without a pool. Leaks show under the Asan build
 * (LeakSanitizer); here "out" and the cached counts are checked.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

static struct parley_pool_stats stats(void)
{
	struct parley_pool_stats s;
	cr_assert_eq(parley_pool_thread_stats(&s), 0);
	return s;
}

Test(pool, same_thread_reuses_blocks)
{
	cr_assert_eq(parley_pool_thread_start(), 0);
	cr_assert_eq(parley_pool_thread_start(), -PARLEY_EEXIST);
	void *a = parley_pool_alloc(300);
	cr_assert_not_null(a);
	cr_assert_eq((uintptr_t)a % _Alignof(max_align_t), 0);
	memset(a, 0xab, 300);
	struct parley_pool_stats s = stats();
	cr_assert_eq(s.out, 1);
	cr_assert_eq(s.misses, 1);
	parley_pool_free(a);
	s = stats();
	cr_assert_eq(s.out, 0);
	cr_assert_eq(s.cached_blocks, 1);
	cr_assert_eq(s.cached_bytes, 512); /* 300 B is the 512 B class */
	void *b = parley_pool_alloc(400); /* same class: the same block */
	cr_assert_eq(b, a);
	cr_assert_eq(stats().hits, 1);
	void *c = parley_pool_alloc(100); /* another class: a new one */
	cr_assert_neq(c, a);
	parley_pool_free(b);
	parley_pool_free(c);
	parley_pool_thread_end();
	struct parley_pool_stats x;
	cr_assert_eq(parley_pool_thread_stats(&x), -PARLEY_ENOTFOUND);
}

Test(pool, cached_bytes_are_bounded)
{
	cr_assert_eq(parley_pool_thread_start(), 0);
	size_t n = 2 * PARLEY_POOL_CACHE_BYTES / 1024;
	void **v = calloc(n, sizeof *v);
	for (size_t i = 0; i < n; i++)
		cr_assert_not_null(v[i] = parley_pool_alloc(1000));
	cr_assert_eq(stats().out, n);
	for (size_t i = 0; i < n; i++)
		parley_pool_free(v[i]);
	struct parley_pool_stats s = stats();
	cr_assert_eq(s.out, 0);
	cr_assert_eq(s.cached_bytes, PARLEY_POOL_CACHE_BYTES);
	cr_assert_eq(s.cached_blocks, PARLEY_POOL_CACHE_BYTES / 1024);
	free(v);
	parley_pool_thread_end();
}

Test(pool, big_blocks_and_threads_without_a_pool_use_malloc)
{
	void *a = parley_pool_alloc(64); /* no pool on this thread */
	cr_assert_not_null(a);
	memset(a, 1, 64);
	parley_pool_free(a);
	parley_pool_free(NULL);
	cr_assert_eq(parley_pool_thread_start(), 0);
	void *big = parley_pool_alloc(PARLEY_POOL_MAX_BLOCK + 1);
	cr_assert_not_null(big);
	memset(big, 2, PARLEY_POOL_MAX_BLOCK + 1);
	void *edge = parley_pool_alloc(PARLEY_POOL_MAX_BLOCK);
	struct parley_pool_stats s = stats();
	cr_assert_eq(s.out, 1); /* the big one is not the pool's */
	parley_pool_free(big);
	parley_pool_free(edge);
	s = stats();
	cr_assert_eq(s.cached_bytes, PARLEY_POOL_MAX_BLOCK);
	parley_pool_thread_end();
}

struct xfer {
	void **v;
	size_t n;
};

static void *free_all(void *arg)
{
	struct xfer *x = arg;
	for (size_t i = 0; i < x->n; i++)
		parley_pool_free(x->v[i]);
	return NULL;
}

Test(pool, blocks_freed_elsewhere_return_to_their_maker)
{
	cr_assert_eq(parley_pool_thread_start(), 0);
	enum { N = 100 };
	void *v[N];
	for (size_t i = 0; i < N; i++)
		v[i] = parley_pool_alloc(200);
	struct xfer x = {v, N};
	pthread_t t;
	pthread_create(&t, NULL, free_all, &x);
	pthread_join(t, NULL);
	struct parley_pool_stats s = stats();
	cr_assert_eq(s.out, 0);
	cr_assert_eq(s.cached_blocks, 0); /* on the return list */
	void *a = parley_pool_alloc(200); /* takes the list back */
	s = stats();
	cr_assert_eq(s.returned, N);
	cr_assert_eq(s.cached_blocks, N - 1);
	cr_assert_eq(s.hits, 1);
	bool mine = false;
	for (size_t i = 0; i < N; i++)
		mine |= v[i] == a;
	cr_assert(mine, "a block freed on another thread is reused");
	parley_pool_free(a);
	parley_pool_thread_end();
}

static void *make_and_leave(void *arg)
{
	struct xfer *x = arg;
	cr_assert_eq(parley_pool_thread_start(), 0);
	for (size_t i = 0; i < x->n; i++) {
		x->v[i] = parley_pool_alloc(700);
		memset(x->v[i], (int)i, 700);
	}
	parley_pool_free(parley_pool_alloc(700)); /* one cached */
	parley_pool_thread_end();
	return NULL;
}

/* The blocks of a thread that ended its pool stay valid; the last one
 * freed frees the pool (a leak here shows under LeakSanitizer). */
Test(pool, blocks_outlive_their_thread)
{
	enum { N = 64 };
	void *v[N];
	struct xfer x = {v, N};
	pthread_t t;
	pthread_create(&t, NULL, make_and_leave, &x);
	pthread_join(t, NULL);
	for (size_t i = 0; i < N; i++) {
		uint8_t *b = v[i];
		cr_assert_eq(b[0], (uint8_t)i);
		cr_assert_eq(b[699], (uint8_t)i);
		parley_pool_free(b);
	}
}

/* Two threads, each with a pool, hand blocks to each other through a
 * bounded ring and free what they receive: every block goes back to its
 * maker while the maker allocates. Checks contents and, at the end, that
 * nothing is out and the caches stayed bounded. */
#define RING 256
struct ring {
	_Atomic(void *) slot[RING];
	_Atomic size_t head, tail;
};

struct peer {
	struct ring *out, *in;
	size_t n;
	uint8_t tag;
	struct parley_pool_stats end;
};

static bool ring_put(struct ring *r, void *p)
{
	size_t t = atomic_load(&r->tail);
	if (t - atomic_load(&r->head) == RING)
		return false;
	atomic_store(&r->slot[t % RING], p);
	atomic_store(&r->tail, t + 1);
	return true;
}

static void *ring_get(struct ring *r)
{
	size_t h = atomic_load(&r->head);
	if (h == atomic_load(&r->tail))
		return NULL;
	void *p = atomic_load(&r->slot[h % RING]);
	atomic_store(&r->head, h + 1);
	return p;
}

static void take(struct peer *pr, size_t *got)
{
	uint8_t *b;
	while ((b = ring_get(pr->in))) {
		size_t len = 16 + b[1] * 16u;
		for (size_t k = 2; k < len; k++)
			cr_assert_eq(b[k], b[0], "block contents changed");
		parley_pool_free(b);
		(*got)++;
	}
}

static void *peer_main(void *arg)
{
	struct peer *pr = arg;
	cr_assert_eq(parley_pool_thread_start(), 0);
	size_t sent = 0, got = 0;
	while (sent < pr->n || got < pr->n) {
		if (sent < pr->n) {
			uint8_t sz = (uint8_t)(sent * 7 % 250);
			size_t len = 16 + sz * 16u;
			uint8_t *b = parley_pool_alloc(len);
			cr_assert_not_null(b);
			memset(b, (uint8_t)(pr->tag + sent), len);
			b[1] = sz;
			while (!ring_put(pr->out, b))
				take(pr, &got);
			sent++;
		}
		take(pr, &got);
	}
	pr->end = stats();
	parley_pool_thread_end();
	return NULL;
}

Test(pool, two_threads_trade_blocks)
{
	static struct ring ab, ba;
	struct peer a = {.out = &ab, .in = &ba, .n = 200000, .tag = 1};
	struct peer b = {.out = &ba, .in = &ab, .n = 200000, .tag = 101};
	pthread_t ta, tb;
	pthread_create(&ta, NULL, peer_main, &a);
	pthread_create(&tb, NULL, peer_main, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	/* a peer may finish while the other still holds some of its blocks:
	 * a ring's worth and the one it is checking */
	cr_assert_leq(a.end.out, RING + 1);
	cr_assert_leq(b.end.out, RING + 1);
	cr_assert_leq(a.end.cached_bytes, PARLEY_POOL_CACHE_BYTES);
	cr_assert_gt(a.end.returned, 0);
	cr_assert_gt(a.end.hits, a.end.misses, "blocks are reused");
}
