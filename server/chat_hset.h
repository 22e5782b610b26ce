/*
 * chat_hset.h — a bounded open-addressing table of (k1, k2) 64-bit key
 * pairs, each with an optional 64-bit value, shared by the chat's
 * in-memory sets: the deleted-message set (chat_edit.c, keys (H(conv),
 * seq), no value) and the retention floors (chat_retention.c, keys
 * (H(conv), 0), value first_seq).
 *
 * Invariants: k1 == 0 marks an empty slot (callers map a zero hash to 1);
 * cap is 0 or a power of two; the load stays at most 3/4; the table never
 * grows past `max` slots (chat_hset_put then fails, the caller decides
 * what that means). Linear probing; no removal.
 * Ownership: the table owns its arrays (chat_hset_free).
 * Threads: none inside; callers hold their own lock.
 *
 * struct chat_cset is what both sets are built on: a table behind one
 * mutex whose k1 is a conversation id's hash under the set's own seed
 * (chat_cset_lock hashes, locks and returns it).
 */
#ifndef PARLEY_CHAT_HSET_H
#define PARLEY_CHAT_HSET_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "parley_common.h"

struct chat_hset {
	uint64_t *k1, *k2, *v; /* v is NULL without values */
	uint32_t cap, n;
	bool values;
};

/* A k1 for a byte string: xxh3 with the caller's seed, never 0. */
static inline uint64_t chat_hset_hash(const void *p, size_t len, uint64_t seed)
{
	uint64_t h = parley_xxh3(p, len, seed);
	return h ? h : 1;
}

static inline void chat_hset_init(struct chat_hset *t, bool values)
{
	*t = (struct chat_hset){.values = values};
}

static inline void chat_hset_free(struct chat_hset *t)
{
	free(t->k1);
	free(t->k2);
	free(t->v);
	chat_hset_init(t, t->values);
}

static inline uint32_t chat_hset_slot_in(const uint64_t *k1, const uint64_t *k2,
					 uint32_t cap, uint64_t a, uint64_t b)
{
	uint32_t i = (uint32_t)((a ^ (b * 0x9e3779b97f4a7c15ull)) & (cap - 1));
	while (k1[i] && !(k1[i] == a && k2[i] == b))
		i = (i + 1) & (cap - 1);
	return i;
}

/* The slot holding (a, b), or -1 when absent. */
static inline int64_t chat_hset_find(const struct chat_hset *t, uint64_t a,
				     uint64_t b)
{
	PARLEY_ASSERT(a != 0);
	if (!t->cap)
		return -1;
	uint32_t i = chat_hset_slot_in(t->k1, t->k2, t->cap, a, b);
	return t->k1[i] == a ? (int64_t)i : -1;
}

/* Doubles the table (first: 1024 slots); -PARLEY_EFULL past max slots,
 * -PARLEY_ENOMEM; the table is unchanged on failure. */
static inline int chat_hset_grow(struct chat_hset *t, uint32_t max)
{
	uint32_t nc = t->cap ? t->cap * 2 : 1024;
	if (nc > max)
		return -PARLEY_EFULL;
	uint64_t *n1 = calloc(nc, 8), *n2 = calloc(nc, 8);
	uint64_t *nv = t->values ? calloc(nc, 8) : NULL;
	if (!n1 || !n2 || (t->values && !nv)) {
		free(n1);
		free(n2);
		free(nv);
		return -PARLEY_ENOMEM;
	}
	for (uint32_t i = 0; i < t->cap; i++)
		if (t->k1[i]) {
			uint32_t k = chat_hset_slot_in(n1, n2, nc, t->k1[i], t->k2[i]);
			n1[k] = t->k1[i];
			n2[k] = t->k2[i];
			if (nv)
				nv[k] = t->v[i];
		}
	free(t->k1);
	free(t->k2);
	free(t->v);
	t->k1 = n1;
	t->k2 = n2;
	t->v = nv;
	t->cap = nc;
	return 0;
}

/* Finds or adds (a, b) (a new one with value 0) and returns its slot, or
 * a negative error from chat_hset_grow (nothing added). */
static inline int64_t chat_hset_put(struct chat_hset *t, uint64_t a,
				    uint64_t b, uint32_t max)
{
	PARLEY_ASSERT(a != 0);
	if (!t->cap || (t->n + 1) * 4 > t->cap * 3) {
		int rc = chat_hset_grow(t, max);
		if (rc)
			return rc;
	}
	uint32_t i = chat_hset_slot_in(t->k1, t->k2, t->cap, a, b);
	if (!t->k1[i]) {
		t->k1[i] = a;
		t->k2[i] = b;
		t->n++;
	}
	return i;
}

/* ---- the table of a per-conversation set, under its lock ------------------------------ */

struct chat_cset {
	pthread_mutex_t mu;
	struct chat_hset t; /* k1: H(conv) under seed; only under mu */
	uint64_t seed;
};

static inline void chat_cset_init(struct chat_cset *s, bool values, uint64_t seed)
{
	pthread_mutex_init(&s->mu, NULL);
	chat_hset_init(&s->t, values);
	s->seed = seed;
}

static inline void chat_cset_destroy(struct chat_cset *s)
{
	pthread_mutex_destroy(&s->mu);
	chat_hset_free(&s->t);
}

/* Hashes conv (k1 of its pairs in s->t), then takes s's lock; the caller
 * works on s->t and calls chat_cset_unlock. */
static inline uint64_t chat_cset_lock(struct chat_cset *s, const char *conv,
				      size_t len)
{
	uint64_t h = chat_hset_hash(conv, len, s->seed);
	pthread_mutex_lock(&s->mu);
	return h;
}

static inline void chat_cset_unlock(struct chat_cset *s)
{
	pthread_mutex_unlock(&s->mu);
}

#endif
