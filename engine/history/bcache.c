/*
 * bcache.c — bounded LRU block cache. See bcache.h for invariants, the item
 * lifecycle and threading (single shard thread).
 *
 * Structure: an open hash table (chained, power-of-two buckets, grown at
 * load 1) over items, and one doubly linked LRU list holding only UNPINNED
 * indexed items (most recent at the head). Pinned items are off the list, so
 * eviction walks from the tail and never sees one.
 */
#include "bcache.h"

#include <stdbool.h>
#include <stdlib.h>

#include "parley_common.h"

struct bcache_item {
	uint64_t seg;
	uint32_t blk;
	uint32_t pins;
	bool indexed;
	size_t charge;
	void *value;
	bcache_free_fn free_fn;
	struct bcache_item *hnext;           /* bucket chain */
	struct bcache_item *lru_prev, *lru_next;
};

struct bcache {
	size_t budget;
	struct bcache_item **buckets;
	size_t nbuckets; /* power of two */
	struct bcache_item *lru_head, *lru_tail;
	struct bcache_stats st;
};

static size_t bc_hash(uint64_t seg, uint32_t blk)
{
	uint64_t h = seg * 0x9E3779B97F4A7C15ull ^ ((uint64_t)blk + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
	return (size_t)(h ^ (h >> 29));
}

int bcache_new(size_t budget_bytes, struct bcache **out)
{
	struct bcache *c = calloc(1, sizeof *c);
	if (!c)
		return -PARLEY_ENOMEM;
	c->nbuckets = 64;
	c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
	if (!c->buckets) {
		free(c);
		return -PARLEY_ENOMEM;
	}
	c->budget = budget_bytes;
	*out = c;
	return 0;
}

static void lru_unlink(struct bcache *c, struct bcache_item *it)
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

static void lru_push_head(struct bcache *c, struct bcache_item *it)
{
	it->lru_prev = NULL;
	it->lru_next = c->lru_head;
	if (c->lru_head)
		c->lru_head->lru_prev = it;
	c->lru_head = it;
	if (!c->lru_tail)
		c->lru_tail = it;
}

static void index_remove(struct bcache *c, struct bcache_item *it)
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

/* Evict unpinned LRU items until within budget. */
static void bc_evict(struct bcache *c)
{
	while (c->st.bytes > c->budget && c->lru_tail) {
		struct bcache_item *it = c->lru_tail;
		PARLEY_ASSERT(it->pins == 0 && it->indexed);
		lru_unlink(c, it);
		index_remove(c, it);
		c->st.evictions++;
		item_destroy(it);
	}
}

void bcache_free(struct bcache *c)
{
	if (!c)
		return;
	PARLEY_ASSERT(c->st.pinned_bytes == 0);
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct bcache_item *it = c->buckets[i];
		while (it) {
			struct bcache_item *n = it->hnext;
			PARLEY_ASSERT(it->pins == 0);
			item_destroy(it);
			it = n;
		}
	}
	free(c->buckets);
	free(c);
}

static struct bcache_item *bc_find(struct bcache *c, uint64_t seg, uint32_t blk)
{
	struct bcache_item *it = c->buckets[bc_hash(seg, blk) & (c->nbuckets - 1)];
	while (it && !(it->seg == seg && it->blk == blk))
		it = it->hnext;
	return it;
}

static void bc_pin(struct bcache *c, struct bcache_item *it)
{
	if (it->pins++ == 0) {
		if (it->indexed)
			lru_unlink(c, it);
		c->st.pinned_bytes += it->charge;
	}
}

struct bcache_item *bcache_lookup(struct bcache *c, uint64_t seg, uint32_t blk)
{
	struct bcache_item *it = bc_find(c, seg, blk);
	if (!it) {
		c->st.misses++;
		return NULL;
	}
	c->st.hits++;
	bc_pin(c, it);
	return it;
}

static void bc_grow(struct bcache *c)
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

int bcache_insert(struct bcache *c, uint64_t seg, uint32_t blk, void *value,
		  size_t charge, bcache_free_fn free_fn,
		  struct bcache_item **out)
{
	struct bcache_item *it = bc_find(c, seg, blk);
	if (it) {
		if (free_fn)
			free_fn(value);
		bc_pin(c, it);
		*out = it;
		return 0;
	}
	it = calloc(1, sizeof *it);
	if (!it) {
		if (free_fn)
			free_fn(value);
		return -PARLEY_ENOMEM;
	}
	it->seg = seg;
	it->blk = blk;
	it->charge = charge;
	it->value = value;
	it->free_fn = free_fn;
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
	bc_evict(c);
	*out = it;
	return 0;
}

void *bcache_value(const struct bcache_item *it)
{
	return it->value;
}

void bcache_release(struct bcache *c, struct bcache_item *it)
{
	PARLEY_ASSERT(it->pins > 0);
	if (--it->pins > 0)
		return;
	c->st.pinned_bytes -= it->charge;
	if (!it->indexed) {
		item_destroy(it); /* erased while pinned: last pin frees it */
		return;
	}
	lru_push_head(c, it);
	bc_evict(c);
}

void bcache_erase_segment(struct bcache *c, uint64_t seg)
{
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct bcache_item *it = c->buckets[i];
		while (it) {
			struct bcache_item *n = it->hnext;
			if (it->seg == seg) {
				if (it->pins == 0)
					lru_unlink(c, it);
				index_remove(c, it);
				if (it->pins == 0)
					item_destroy(it);
			}
			it = n;
		}
	}
}

void bcache_set_budget(struct bcache *c, size_t budget_bytes)
{
	c->budget = budget_bytes;
	bc_evict(c);
}

void bcache_get_stats(const struct bcache *c, struct bcache_stats *out)
{
	*out = c->st;
}
