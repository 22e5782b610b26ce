/*
 * pool.c — per-thread block pools with a lock-free return list (the
 * contract is in parley_common.h, "per-thread block pools").
 *
 * Every block carries a 16-byte header: its pool (NULL = plain malloc)
 * and its size class. A free block links through its first user bytes.
 *
 * Invariants
 *   1. p->local[] and p->cached are touched only by the owning thread
 *      (while it is attached); p->ret and p->refs by any thread.
 *   2. p->refs = (1 while the owner is attached) + the blocks made by p
 *      that are out (neither on a free list nor on the return list). The
 *      thread that brings it to 0 frees the return list and p: after
 *      that no one can reach p (no block of p is out, the owner left).
 *   3. The return list is a Treiber stack with many pushers and one
 *      consumer that takes the whole list at once (exchange with NULL),
 *      so a pop never races a push on the same node (no ABA).
 *   4. p->cached <= PARLEY_POOL_CACHE_BYTES.
 *
 * Threads: any. The owner's fast path is one atomic add (refs); a free
 * on another thread is one compare-and-swap push and one atomic sub.
 */
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "parley_common.h"

#define POOL_MIN_SHIFT 8u /* the smallest class: 256 bytes */
#define POOL_NCLASS 5u    /* 256, 512, 1 KiB, 2 KiB, 4 KiB */
#define POOL_BIG POOL_NCLASS
#define POOL_MAGIC 0x6c6f6f70u

_Static_assert((1u << (POOL_MIN_SHIFT + POOL_NCLASS - 1)) ==
		       PARLEY_POOL_MAX_BLOCK,
	       "the largest class is PARLEY_POOL_MAX_BLOCK");

struct parley_pool;

struct pool_hdr {
	struct parley_pool *owner; /* NULL: plain malloc, freed with free() */
	uint32_t cls;              /* POOL_BIG when not from a class */
	uint32_t magic;
};
_Static_assert(sizeof(struct pool_hdr) % alignof(max_align_t) == 0,
	       "the user bytes keep malloc's alignment");

struct parley_pool {
	/* written by other threads */
	alignas(64) _Atomic(struct pool_hdr *) ret;
	_Atomic uint64_t refs;
	/* the owner's (invariant 1) */
	alignas(64) struct pool_hdr *local[POOL_NCLASS];
	uint32_t nlocal[POOL_NCLASS];
	uint64_t cached;
	uint64_t hits, misses, returned;
};

static _Thread_local struct parley_pool *tl_pool;

static size_t class_size(uint32_t cls)
{
	return (size_t)1 << (POOL_MIN_SHIFT + cls);
}

static uint32_t class_of(size_t n)
{
	if (n <= class_size(0))
		return 0;
	if (n > PARLEY_POOL_MAX_BLOCK)
		return POOL_BIG;
	unsigned bits = 64u - (unsigned)__builtin_clzll((unsigned long long)(n - 1));
	return bits - POOL_MIN_SHIFT;
}

static struct pool_hdr **link_of(struct pool_hdr *h)
{
	return (struct pool_hdr **)(void *)(h + 1);
}

static void free_chain(struct pool_hdr *h)
{
	while (h) {
		struct pool_hdr *n = *link_of(h);
		free(h);
		h = n;
	}
}

/* Owner: keeps h on its class's list if the bound allows, else frees it. */
static void local_put(struct parley_pool *p, struct pool_hdr *h)
{
	size_t sz = class_size(h->cls);
	if (p->cached + sz > PARLEY_POOL_CACHE_BYTES) {
		free(h);
		return;
	}
	*link_of(h) = p->local[h->cls];
	p->local[h->cls] = h;
	p->nlocal[h->cls]++;
	p->cached += sz;
}

/* Owner: takes the whole return list onto the free lists. */
static void reclaim(struct parley_pool *p)
{
	struct pool_hdr *h = atomic_exchange_explicit(&p->ret, NULL,
						      memory_order_acquire);
	while (h) {
		struct pool_hdr *n = *link_of(h);
		p->returned++;
		local_put(p, h);
		h = n;
	}
}

/* Invariant 2: refs reached 0. */
static void pool_destroy(struct parley_pool *p)
{
	free_chain(atomic_exchange_explicit(&p->ret, NULL, memory_order_acquire));
	free(p);
}

int parley_pool_thread_start(void)
{
	if (tl_pool)
		return -PARLEY_EEXIST;
	struct parley_pool *p = aligned_alloc(64, sizeof *p);
	if (!p)
		return -PARLEY_ENOMEM;
	memset(p, 0, sizeof *p);
	atomic_init(&p->ret, NULL);
	atomic_init(&p->refs, 1);
	tl_pool = p;
	return 0;
}

void parley_pool_thread_end(void)
{
	struct parley_pool *p = tl_pool;
	if (!p)
		return;
	tl_pool = NULL;
	for (uint32_t c = 0; c < POOL_NCLASS; c++) {
		free_chain(p->local[c]);
		p->local[c] = NULL;
		p->nlocal[c] = 0;
	}
	p->cached = 0;
	free_chain(atomic_exchange_explicit(&p->ret, NULL, memory_order_acquire));
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		pool_destroy(p);
}

void *parley_pool_alloc(size_t n)
{
	struct parley_pool *p = tl_pool;
	uint32_t cls = class_of(n);
	struct pool_hdr *h;
	if (!p || cls == POOL_BIG) {
		if (n > SIZE_MAX - sizeof *h)
			return NULL;
		h = malloc(sizeof *h + n);
		if (!h)
			return NULL;
		*h = (struct pool_hdr){.owner = NULL, .cls = POOL_BIG,
				       .magic = POOL_MAGIC};
		return h + 1;
	}
	h = p->local[cls];
	if (!h && atomic_load_explicit(&p->ret, memory_order_relaxed)) {
		reclaim(p);
		h = p->local[cls];
	}
	if (h) {
		p->local[cls] = *link_of(h);
		p->nlocal[cls]--;
		p->cached -= class_size(cls);
		p->hits++;
	} else {
		h = malloc(sizeof *h + class_size(cls));
		if (!h)
			return NULL;
		*h = (struct pool_hdr){.owner = p, .cls = cls,
				       .magic = POOL_MAGIC};
		p->misses++;
	}
	/* the owner holds a reference: refs cannot be 0 here */
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return h + 1;
}

void parley_pool_free(void *ptr)
{
	if (!ptr)
		return;
	struct pool_hdr *h = (struct pool_hdr *)ptr - 1;
	PARLEY_ASSERT(h->magic == POOL_MAGIC); /* not a parley_pool_alloc block */
	struct parley_pool *p = h->owner;
	if (!p) {
		free(h);
		return;
	}
	if (p == tl_pool) {
		local_put(p, h);
		/* the owner's own reference keeps refs above 0 */
		atomic_fetch_sub_explicit(&p->refs, 1, memory_order_relaxed);
		return;
	}
	struct pool_hdr *old = atomic_load_explicit(&p->ret, memory_order_relaxed);
	do
		*link_of(h) = old;
	while (!atomic_compare_exchange_weak_explicit(
		&p->ret, &old, h, memory_order_release, memory_order_relaxed));
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		pool_destroy(p);
}

int parley_pool_thread_stats(struct parley_pool_stats *out)
{
	struct parley_pool *p = tl_pool;
	if (!p)
		return -PARLEY_ENOTFOUND;
	*out = (struct parley_pool_stats){.cached_bytes = p->cached,
					  .hits = p->hits,
					  .misses = p->misses,
					  .returned = p->returned};
	for (uint32_t c = 0; c < POOL_NCLASS; c++)
		out->cached_blocks += p->nlocal[c];
	out->out = atomic_load_explicit(&p->refs, memory_order_acquire) - 1;
	return 0;
}
