/*
 * bcache.h — bounded LRU cache of decompressed history blocks (private to
 * engine/).
 *
 * Keyed by (segment id, block number). The value is opaque to the cache
 * (segment.c stores a decoded block, and a segment's decoded idempotency
 * section under block number SEG_IDEM_BLK); the cache knows its byte
 * charge and how to free it.
 *
 * Invariants
 *   1. Sum of charges of cached items <= budget, except while pinned items
 *      alone exceed it: a pinned item is never freed or evicted, so the
 *      budget is a soft bound whose excess is exactly the pinned bytes.
 *   2. Every handle returned by bcache_lookup/bcache_insert holds one pin
 *      and must be given back with bcache_release exactly once.
 *   3. An item erased (bcache_erase_segment) or evicted while pinned leaves
 *      the index at once (no new lookup finds it) and is freed by the last
 *      bcache_release.
 *
 * Item lifecycle:
 *
 *    insert ──► PINNED (in index) ──release(last pin)──► CACHED (LRU)
 *                 ▲        │                              │   │
 *                 └lookup──┼──────────────────────────────┘   │ evict / erase
 *                          │ erase                            ▼
 *                          ▼                                FREED
 *                   PINNED (detached) ──release(last pin)──►  ▲
 *                                                         ────┘
 *
 * Threads: thread-safe. The items are spread over lock shards by key
 * (bcache_new_sharded; bcache_new makes one), each with its own mutex,
 * index, LRU list and an equal part of the budget, so the engine's shard
 * thread and its history read pool (history/hist_read.c) look up, insert
 * and release blocks of one cache at once without one lock for all. A
 * value is immutable while cached: bcache_value needs no lock. Budget and
 * LRU order are per lock shard (eviction frees the least recently used
 * item of the shard that went over its part).
 */
#ifndef PARLEY_ENGINE_BCACHE_H
#define PARLEY_ENGINE_BCACHE_H

#include <stddef.h>
#include <stdint.h>

struct bcache;
struct bcache_item; /* a handle: one pin on a cached value */

typedef void (*bcache_free_fn)(void *value);

struct bcache_stats {
	uint64_t hits, misses, inserts, evictions;
	uint64_t items;        /* items in the index */
	uint64_t bytes;        /* charge of items in the index */
	uint64_t pinned_bytes; /* charge of pinned items (indexed or detached) */
};

/* Lock shards the engine's caches use (readers on several threads). */
#define BCACHE_LOCK_SHARDS 16u
#define BCACHE_MAX_LOCK_SHARDS 256u

/* budget_bytes: the configurable bound (e.g. pe_options' block cache size).
 * One lock shard: exact LRU order over the whole budget. */
int bcache_new(size_t budget_bytes, struct bcache **out);
/* nshards lock shards (1..BCACHE_MAX_LOCK_SHARDS), each with budget /
 * nshards: less lock contention between threads, LRU per shard. */
int bcache_new_sharded(size_t budget_bytes, unsigned nshards,
		       struct bcache **out);
/* Frees every item. Requires no pins outstanding (asserted). */
void bcache_free(struct bcache *c);

/* Returns a pinned handle (hit) or NULL (miss). */
struct bcache_item *bcache_lookup(struct bcache *c, uint64_t seg, uint32_t blk);
/* Inserts value (ownership passes to the cache, also on error: on -ENOMEM
 * free_fn(value) has been called) and returns it pinned. If the key is
 * already present the existing item is returned pinned and `value` freed. */
int bcache_insert(struct bcache *c, uint64_t seg, uint32_t blk, void *value,
		  size_t charge, bcache_free_fn free_fn,
		  struct bcache_item **out);
void *bcache_value(const struct bcache_item *it);
void bcache_release(struct bcache *c, struct bcache_item *it);

/* Drops every block of a segment (after compaction deleted it). */
void bcache_erase_segment(struct bcache *c, uint64_t seg);
void bcache_set_budget(struct bcache *c, size_t budget_bytes);
void bcache_get_stats(const struct bcache *c, struct bcache_stats *out);

#endif /* PARLEY_ENGINE_BCACHE_H */
