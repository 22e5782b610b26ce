/*
 * bcache.c — bounded LRU block cache. See bcache.h for invariants, the item
 * lifecycle and threading (thread-safe, one mutex per lock shard).
 *
 * Structure: the key's hash picks a lock shard; each shard has an open hash
 * table (chained, power-of-two buckets, grown at load 1) over its items,
 * and one doubly linked LRU list holding only its UNPINNED indexed items
 * (most recent at the head). Pinned items are off the list, so eviction
 * walks from the tail and never sees one. Every field of an item except
 * its value, charge and key is guarded by its shard's mutex.
 */
#include "bcache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "parley_common.h"

struct bc_shard;

struct bcache_item {
	uint64_t seg;
	uint32_t blk;
	uint32_t pins;
	bool indexed;
	size_t charge;
	void *value;
	bcache_free_fn free_fn;
	struct bc_shard *sh;
	struct bcache_item *hnext;           /* bucket chain */
	struct bcache_item *lru_prev, *lru_next;
};

struct bc_shard {
	pthread_mutex_t mu;
	size_t budget;
	struct bcache_item **buckets;
	size_t nbuckets; /* power of two */
	struct bcache_item *lru_head, *lru_tail;
	struct bcache_stats st;
};

struct bcache {
	unsigned nsh;
	struct bc_shard *sh;
};

static size_t bc_hash(uint64_t seg, uint32_t blk)
{
	uint64_t h = seg * 0x9E3779B97F4A7C15ull ^ ((uint64_t)blk + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
	return (size_t)(h ^ (h >> 29));
}

static struct bc_shard *bc_shard_of(const struct bcache *c, uint64_t seg,
				    uint32_t blk)
{
	return &c->sh[(bc_hash(seg, blk) >> 40) % c->nsh];
}

int bcache_new_sharded(size_t budget_bytes, unsigned nshards,
		       struct bcache **out)
{
	if (nshards == 0 || nshards > BCACHE_MAX_LOCK_SHARDS)
		return -PARLEY_EINVAL;
	struct bcache *c = calloc(1, sizeof *c);
	if (!c)
		return -PARLEY_ENOMEM;
	c->sh = calloc(nshards, sizeof *c->sh);
	if (!c->sh) {
		free(c);
		return -PARLEY_ENOMEM;
	}
	c->nsh = nshards;
	for (unsigned i = 0; i < nshards; i++) {
		struct bc_shard *b = &c->sh[i];
		b->nbuckets = 64;
		b->buckets = calloc(b->nbuckets, sizeof *b->buckets);
		b->budget = budget_bytes / nshards;
		pthread_mutex_init(&b->mu, NULL);
		if (!b->buckets) {
			c->nsh = i + 1;
			bcache_free(c);
			return -PARLEY_ENOMEM;
		}
	}
	*out = c;
	return 0;
}

int bcache_new(size_t budget_bytes, struct bcache **out)
{
	return bcache_new_sharded(budget_bytes, 1, out);
}

static void lru_unlink(struct bc_shard *c, struct bcache_item *it)
{
	if (it->lru_prev)
		it->lru_prev->lru_next = it->lru_next;
	else
		c->lru_head = it->lru_next;
	if (it->lru_next)
		it->lru_next->lru_prev = it->lru_prev;
	else
		c->lru_tail = it->lru_prev;
	it->lru_prev = it->lru_next = NULL;
}

static void lru_push_head(struct bc_shard *c, struct bcache_item *it)
{
	it->lru_prev = NULL;
	it->lru_next = c->lru_head;
	if (c->lru_head)
		c->lru_head->lru_prev = it;
	c->lru_head = it;
	if (!c->lru_tail)
		c->lru_tail = it;
}

static void index_remove(struct bc_shard *c, struct bcache_item *it)
{
	struct bcache_item **pp = &c->buckets[bc_hash(it->seg, it->blk) & (c->nbuckets - 1)];
	while (*pp != it) {
		PARLEY_ASSERT(*pp);
		pp = &(*pp)->hnext;
	}
	*pp = it->hnext;
	it->hnext = NULL;
	it->indexed = false;
	c->st.items--;
	c->st.bytes -= it->charge;
}

static void item_destroy(struct bcache_item *it)
{
	if (it->free_fn)
		it->free_fn(it->value);
	free(it);
}

/* Items unlinked under the lock are destroyed (their free_fn runs) after
 * it is dropped. */
static void destroy_list(struct bcache_item *it)
{
	while (it) {
		struct bcache_item *n = it->hnext;
		item_destroy(it);
		it = n;
	}
}

/* Evicts unpinned LRU items until within budget; returns them chained by
 * hnext, for destroy_list once the lock is dropped. */
static struct bcache_item *bc_evict(struct bc_shard *c)
{
	struct bcache_item *gone = NULL;
	while (c->st.bytes > c->budget && c->lru_tail) {
		struct bcache_item *it = c->lru_tail;
		PARLEY_ASSERT(it->pins == 0 && it->indexed);
		lru_unlink(c, it);
		index_remove(c, it);
		c->st.evictions++;
		it->hnext = gone;
		gone = it;
	}
	return gone;
}

void bcache_free(struct bcache *c)
{
	if (!c)
		return;
	for (unsigned k = 0; k < c->nsh; k++) {
		struct bc_shard *b = &c->sh[k];
		PARLEY_ASSERT(b->st.pinned_bytes == 0);
		for (size_t i = 0; i < b->nbuckets && b->buckets; i++) {
			struct bcache_item *it = b->buckets[i];
			while (it) {
				struct bcache_item *n = it->hnext;
				PARLEY_ASSERT(it->pins == 0);
				item_destroy(it);
				it = n;
			}
		}
		free(b->buckets);
		pthread_mutex_destroy(&b->mu);
	}
	free(c->sh);
	free(c);
}

static struct bcache_item *bc_find(struct bc_shard *c, uint64_t seg, uint32_t blk)
{
	struct bcache_item *it = c->buckets[bc_hash(seg, blk) & (c->nbuckets - 1)];
	while (it && !(it->seg == seg && it->blk == blk))
		it = it->hnext;
	return it;
}

static void bc_pin(struct bc_shard *c, struct bcache_item *it)
{
	if (it->pins++ == 0) {
		if (it->indexed)
			lru_unlink(c, it);
		c->st.pinned_bytes += it->charge;
	}
}

struct bcache_item *bcache_lookup(struct bcache *cache, uint64_t seg, uint32_t blk)
{
	struct bc_shard *c = bc_shard_of(cache, seg, blk);
	pthread_mutex_lock(&c->mu);
	struct bcache_item *it = bc_find(c, seg, blk);
	if (!it) {
		c->st.misses++;
	} else {
		c->st.hits++;
		bc_pin(c, it);
	}
	pthread_mutex_unlock(&c->mu);
	return it;
}

static void bc_grow(struct bc_shard *c)
{
	size_t nb = c->nbuckets * 2;
	struct bcache_item **b = calloc(nb, sizeof *b);
	if (!b)
		return; /* keep the old table: slower chains, still correct */
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct bcache_item *it = c->buckets[i];
		while (it) {
			struct bcache_item *n = it->hnext;
			size_t h = bc_hash(it->seg, it->blk) & (nb - 1);
			it->hnext = b[h];
			b[h] = it;
			it = n;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = nb;
}

int bcache_insert(struct bcache *cache, uint64_t seg, uint32_t blk, void *value,
		  size_t charge, bcache_free_fn free_fn,
		  struct bcache_item **out)
{
	struct bc_shard *c = bc_shard_of(cache, seg, blk);
	pthread_mutex_lock(&c->mu);
	struct bcache_item *it = bc_find(c, seg, blk);
	if (it) {
		bc_pin(c, it);
		pthread_mutex_unlock(&c->mu);
		if (free_fn)
			free_fn(value);
		*out = it;
		return 0;
	}
	pthread_mutex_unlock(&c->mu);
	it = calloc(1, sizeof *it);
	if (!it) {
		if (free_fn)
			free_fn(value);
		return -PARLEY_ENOMEM;
	}
	pthread_mutex_lock(&c->mu);
	struct bcache_item *raced = bc_find(c, seg, blk);
	if (raced) { /* another thread inserted it meanwhile */
		bc_pin(c, raced);
		pthread_mutex_unlock(&c->mu);
		free(it);
		if (free_fn)
			free_fn(value);
		*out = raced;
		return 0;
	}
	it->seg = seg;
	it->blk = blk;
	it->charge = charge;
	it->value = value;
	it->free_fn = free_fn;
	it->sh = c;
	it->indexed = true;
	it->pins = 1;
	if (c->st.items + 1 > c->nbuckets)
		bc_grow(c);
	size_t h = bc_hash(seg, blk) & (c->nbuckets - 1);
	it->hnext = c->buckets[h];
	c->buckets[h] = it;
	c->st.items++;
	c->st.bytes += charge;
	c->st.pinned_bytes += charge;
	c->st.inserts++;
	struct bcache_item *gone = bc_evict(c);
	pthread_mutex_unlock(&c->mu);
	destroy_list(gone);
	*out = it;
	return 0;
}

void *bcache_value(const struct bcache_item *it)
{
	return it->value;
}

void bcache_release(struct bcache *cache, struct bcache_item *it)
{
	(void)cache;
	struct bc_shard *c = it->sh;
	pthread_mutex_lock(&c->mu);
	PARLEY_ASSERT(it->pins > 0);
	if (--it->pins > 0) {
		pthread_mutex_unlock(&c->mu);
		return;
	}
	c->st.pinned_bytes -= it->charge;
	if (!it->indexed) {
		pthread_mutex_unlock(&c->mu);
		item_destroy(it); /* erased while pinned: last pin frees it */
		return;
	}
	lru_push_head(c, it);
	struct bcache_item *gone = bc_evict(c);
	pthread_mutex_unlock(&c->mu);
	destroy_list(gone);
}

void bcache_erase_segment(struct bcache *cache, uint64_t seg)
{
	for (unsigned k = 0; k < cache->nsh; k++) {
		struct bc_shard *c = &cache->sh[k];
		struct bcache_item *gone = NULL;
		pthread_mutex_lock(&c->mu);
		for (size_t i = 0; i < c->nbuckets; i++) {
			struct bcache_item *it = c->buckets[i];
			while (it) {
				struct bcache_item *n = it->hnext;
				if (it->seg == seg) {
					if (it->pins == 0)
						lru_unlink(c, it);
					index_remove(c, it);
					if (it->pins == 0) {
						it->hnext = gone;
						gone = it;
					}
				}
				it = n;
			}
		}
		pthread_mutex_unlock(&c->mu);
		destroy_list(gone);
	}
}

void bcache_set_budget(struct bcache *cache, size_t budget_bytes)
{
	for (unsigned k = 0; k < cache->nsh; k++) {
		struct bc_shard *c = &cache->sh[k];
		pthread_mutex_lock(&c->mu);
		c->budget = budget_bytes / cache->nsh;
		struct bcache_item *gone = bc_evict(c);
		pthread_mutex_unlock(&c->mu);
		destroy_list(gone);
	}
}

void bcache_get_stats(const struct bcache *cache, struct bcache_stats *out)
{
	*out = (struct bcache_stats){0};
	for (unsigned k = 0; k < cache->nsh; k++) {
		struct bc_shard *c = &cache->sh[k];
		pthread_mutex_lock(&c->mu);
		out->hits += c->st.hits;
		out->misses += c->st.misses;
		out->inserts += c->st.inserts;
		out->evictions += c->st.evictions;
		out->items += c->st.items;
		out->bytes += c->st.bytes;
		out->pinned_bytes += c->st.pinned_bytes;
		pthread_mutex_unlock(&c->mu);
	}
}
