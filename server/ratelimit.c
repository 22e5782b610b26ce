/*
 * ratelimit.c — token buckets (per connection, per user in a bounded
 * sharded table) and the handshake admission counter. See ratelimit.h for
 * the contract, the arithmetic and why the table is sharded.
 *
 * Shard layout: `cap` entries allocated once; a chained hash (heads[],
 * entry.hnext) finds a user; a doubly linked LRU list (head = most
 * recently used) picks the eviction victim. Unused entries are handed out
 * in index order (`used`), so untouched pages of a big table stay
 * unresident. Indices, not pointers; NIL ends a list.
 *
 * In a cluster the table is this node's: a user's per-user buckets
 * count the requests that arrive here, so a user with devices on k nodes
 * has up to k times the per-user budget. That is the promise, on
 * purpose (docs/CLUSTER.md §3.3, "Rate limits stay per node"): an exact
 * cluster-wide budget costs a hop per request, a split one refuses busy
 * devices for idle ones elsewhere.
 *
 * Invariants (checked by assertions where cheap):
 *   1. used <= cap; every used entry is in exactly one hash chain and in
 *      the LRU list once.
 *   2. a bucket's level <= burst * TOKEN_UNIT.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"
#include "ratelimit.h"

#define TOKEN_UNIT 60000000000ull /* ns per minute: one token */
#define NIL UINT32_MAX
#define HASH_SEED 0x726c696d69747321ull

struct ent {
	uint32_t hnext, prev, next;
	uint8_t ulen;
	char user[RATELIMIT_USER_MAX];
	struct ratelimit_bucket b[RATELIMIT_NKINDS];
};

struct shard {
	pthread_mutex_t mu;
	uint32_t cap, used, nheads; /* nheads: power of two */
	uint32_t lru_head, lru_tail;
	uint32_t *heads;
	struct ent *ents;
};

struct ratelimit {
	struct ratelimit_config cfg;
	struct shard shards[RATELIMIT_SHARDS];
	_Atomic uint64_t limited[RATELIMIT_NKINDS];
	_Atomic uint64_t users, evictions, lossy_evictions;
};

static const char *const kind_names[RATELIMIT_NKINDS] = {
	"send", "history", "typing", "presence"};

const char *ratelimit_kind_name(enum ratelimit_kind k)
{
	return (unsigned)k < RATELIMIT_NKINDS ? kind_names[k] : "?";
}

/* ---- one bucket (pure) ----------------------------------------------------- */

/* The bucket's level at now (refilled, capped), without changing it. */
static uint64_t bucket_level(const struct ratelimit_rate *r,
			     const struct ratelimit_bucket *b, uint64_t now_ns)
{
	uint64_t full = (uint64_t)r->burst * TOKEN_UNIT;
	if (b->t_ns == 0)
		return full; /* never used */
	if (now_ns <= b->t_ns || b->level >= full)
		return PARLEY_MIN(b->level, full);
	uint64_t need = full - b->level;
	uint64_t dt = now_ns - b->t_ns;
	if (dt >= need / r->per_min + 1)
		return full;
	/* dt * per_min <= need + per_min: no overflow (ratelimit.h bounds) */
	return PARLEY_MIN(full, b->level + dt * r->per_min);
}

uint32_t ratelimit_bucket_wait_ms(const struct ratelimit_rate *r,
				  const struct ratelimit_bucket *b,
				  uint64_t now_ns)
{
	if (r->per_min == 0)
		return 0;
	uint64_t lv = bucket_level(r, b, now_ns);
	if (lv >= TOKEN_UNIT)
		return 0;
	uint64_t ns = (TOKEN_UNIT - lv + r->per_min - 1) / r->per_min;
	uint64_t ms = (ns + 999999) / 1000000;
	return (uint32_t)PARLEY_MAX(ms, 1u);
}

static void bucket_take(const struct ratelimit_rate *r,
			struct ratelimit_bucket *b, uint64_t now_ns)
{
	uint64_t lv = bucket_level(r, b, now_ns);
	PARLEY_ASSERT(lv >= TOKEN_UNIT);
	b->level = lv - TOKEN_UNIT;
	if (now_ns > b->t_ns)
		b->t_ns = now_ns;
}

static bool bucket_full(const struct ratelimit_rate *r,
			const struct ratelimit_bucket *b, uint64_t now_ns)
{
	return r->per_min == 0 ||
	       bucket_level(r, b, now_ns) >= (uint64_t)r->burst * TOKEN_UNIT;
}

/* ---- configuration ---------------------------------------------------------- */

int ratelimit_config_check(const struct ratelimit_config *cfg, char *why,
			   size_t whycap)
{
	for (unsigned k = 0; k < RATELIMIT_NKINDS; k++) {
		const struct ratelimit_rate *rs[2] = {&cfg->user[k], &cfg->conn[k]};
		for (unsigned i = 0; i < 2; i++) {
			const struct ratelimit_rate *r = rs[i];
			if (r->per_min > RATELIMIT_RATE_MAX ||
			    r->burst > RATELIMIT_BURST_MAX ||
			    (r->per_min && r->burst < 1)) {
				snprintf(why, whycap,
					 "rate_%s_%s: per_min must be 0..%u and "
					 "burst 1..%u", kind_names[k],
					 i ? "conn" : "user", RATELIMIT_RATE_MAX,
					 RATELIMIT_BURST_MAX);
				return -PARLEY_EINVAL;
			}
		}
	}
	if (cfg->max_users < RATELIMIT_USERS_MIN ||
	    cfg->max_users > RATELIMIT_USERS_MAX) {
		snprintf(why, whycap, "rate_users_max must be %u..%u",
			 RATELIMIT_USERS_MIN, RATELIMIT_USERS_MAX);
		return -PARLEY_EINVAL;
	}
	return 0;
}

int ratelimit_open(const struct ratelimit_config *cfg, struct ratelimit **out)
{
	char why[160];
	if (ratelimit_config_check(cfg, why, sizeof why))
		return -PARLEY_EINVAL;
	struct ratelimit *rl = calloc(1, sizeof *rl);
	if (!rl)
		return -PARLEY_ENOMEM;
	rl->cfg = *cfg;
	uint32_t per = (cfg->max_users + RATELIMIT_SHARDS - 1) / RATELIMIT_SHARDS;
	uint32_t nh = 1;
	while (nh < per)
		nh <<= 1;
	for (unsigned i = 0; i < RATELIMIT_SHARDS; i++) {
		struct shard *s = &rl->shards[i];
		pthread_mutex_init(&s->mu, NULL);
		s->cap = per;
		s->nheads = nh;
		s->lru_head = s->lru_tail = NIL;
		s->heads = malloc(nh * sizeof *s->heads);
		s->ents = calloc(per, sizeof *s->ents);
		if (!s->heads || !s->ents) {
			ratelimit_close(rl);
			return -PARLEY_ENOMEM;
		}
		memset(s->heads, 0xff, nh * sizeof *s->heads);
	}
	*out = rl;
	return 0;
}

void ratelimit_close(struct ratelimit *rl)
{
	if (!rl)
		return;
	for (unsigned i = 0; i < RATELIMIT_SHARDS; i++) {
		struct shard *s = &rl->shards[i];
		if (s->cap)
			pthread_mutex_destroy(&s->mu);
		free(s->heads);
		free(s->ents);
	}
	free(rl);
}

/* ---- the per-user table (shard lock held) ------------------------------------- */

static void lru_unlink(struct shard *s, uint32_t i)
{
	struct ent *e = &s->ents[i];
	if (e->prev != NIL)
		s->ents[e->prev].next = e->next;
	else
		s->lru_head = e->next;
	if (e->next != NIL)
		s->ents[e->next].prev = e->prev;
	else
		s->lru_tail = e->prev;
}

static void lru_push_front(struct shard *s, uint32_t i)
{
	struct ent *e = &s->ents[i];
	e->prev = NIL;
	e->next = s->lru_head;
	if (s->lru_head != NIL)
		s->ents[s->lru_head].prev = i;
	s->lru_head = i;
	if (s->lru_tail == NIL)
		s->lru_tail = i;
}

static void hash_unlink(struct shard *s, uint32_t i, uint32_t h)
{
	uint32_t *p = &s->heads[h];
	while (*p != i) {
		PARLEY_ASSERT(*p != NIL);
		p = &s->ents[*p].hnext;
	}
	*p = s->ents[i].hnext;
}

static uint32_t ent_hash(const struct shard *s, const char *u, size_t n)
{
	return (uint32_t)parley_xxh3(u, n, HASH_SEED) & (s->nheads - 1);
}

/* Finds or creates the user's entry (most recently used afterwards). */
static struct ent *user_get(struct ratelimit *rl, struct shard *s,
			    const char *u, size_t n, uint32_t h, uint64_t now_ns)
{
	for (uint32_t i = s->heads[h]; i != NIL; i = s->ents[i].hnext) {
		struct ent *e = &s->ents[i];
		if (e->ulen == n && memcmp(e->user, u, n) == 0) {
			if (s->lru_head != i) {
				lru_unlink(s, i);
				lru_push_front(s, i);
			}
			return e;
		}
	}
	uint32_t i;
	if (s->used < s->cap) {
		i = s->used++;
		atomic_fetch_add_explicit(&rl->users, 1, memory_order_relaxed);
	} else {
		/* evict the least recently used: usually idle long enough to
		 * be full again, then nothing is lost (ratelimit.h) */
		i = s->lru_tail;
		PARLEY_ASSERT(i != NIL);
		struct ent *v = &s->ents[i];
		bool full = true;
		for (unsigned k = 0; k < RATELIMIT_NKINDS && full; k++)
			full = bucket_full(&rl->cfg.user[k], &v->b[k], now_ns);
		atomic_fetch_add_explicit(&rl->evictions, 1, memory_order_relaxed);
		if (!full)
			atomic_fetch_add_explicit(&rl->lossy_evictions, 1,
						  memory_order_relaxed);
		lru_unlink(s, i);
		hash_unlink(s, i, ent_hash(s, v->user, v->ulen));
	}
	struct ent *e = &s->ents[i];
	memset(e->b, 0, sizeof e->b); /* all full */
	e->ulen = (uint8_t)n;
	memcpy(e->user, u, n);
	e->hnext = s->heads[h];
	s->heads[h] = i;
	lru_push_front(s, i);
	return e;
}

uint32_t ratelimit_take(struct ratelimit *rl, struct ratelimit_conn *conn,
			const char *user, size_t ulen, enum ratelimit_kind k,
			uint64_t now_ns)
{
	PARLEY_ASSERT((unsigned)k < RATELIMIT_NKINDS && now_ns > 0);
	const struct ratelimit_rate *cr = &rl->cfg.conn[k], *ur = &rl->cfg.user[k];
	uint32_t wait = 0;
	if (conn && cr->per_min)
		wait = ratelimit_bucket_wait_ms(cr, &conn->b[k], now_ns);
	if (ulen && ur->per_min) {
		PARLEY_ASSERT(ulen <= RATELIMIT_USER_MAX);
		uint64_t hv = parley_xxh3(user, ulen, HASH_SEED);
		struct shard *s = &rl->shards[(hv >> 32) % RATELIMIT_SHARDS];
		pthread_mutex_lock(&s->mu);
		struct ent *e = user_get(rl, s, user, ulen,
					 (uint32_t)hv & (s->nheads - 1), now_ns);
		uint32_t uw = ratelimit_bucket_wait_ms(ur, &e->b[k], now_ns);
		if (!wait && !uw)
			bucket_take(ur, &e->b[k], now_ns);
		pthread_mutex_unlock(&s->mu);
		wait = PARLEY_MAX(wait, uw);
	}
	if (wait) {
		atomic_fetch_add_explicit(&rl->limited[k], 1, memory_order_relaxed);
		return wait;
	}
	if (conn && cr->per_min)
		bucket_take(cr, &conn->b[k], now_ns);
	return 0;
}

void ratelimit_stats(struct ratelimit *rl, struct ratelimit_stats *st)
{
	memset(st, 0, sizeof *st);
	if (!rl)
		return;
	for (unsigned k = 0; k < RATELIMIT_NKINDS; k++)
		st->limited[k] = atomic_load_explicit(&rl->limited[k],
						      memory_order_relaxed);
	st->users = atomic_load_explicit(&rl->users, memory_order_relaxed);
	st->evictions = atomic_load_explicit(&rl->evictions, memory_order_relaxed);
	st->lossy_evictions = atomic_load_explicit(&rl->lossy_evictions,
						   memory_order_relaxed);
}

/* ---- admission control ------------------------------------------------------------ */

void admission_init(struct admission *a, uint32_t max, uint32_t retry_ms)
{
	atomic_store(&a->in_progress, 0);
	atomic_store(&a->rejected, 0);
	a->max = max;
	a->retry_ms = retry_ms;
}

bool admission_enter(struct admission *a, bool *held)
{
	if (*held)
		return true;
	uint32_t v = atomic_load_explicit(&a->in_progress, memory_order_relaxed);
	do {
		if (a->max && v >= a->max)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(
		&a->in_progress, &v, v + 1, memory_order_relaxed,
		memory_order_relaxed));
	*held = true;
	return true;
}

void admission_leave(struct admission *a, bool *held)
{
	if (!*held)
		return;
	*held = false;
	uint32_t old = atomic_fetch_sub_explicit(&a->in_progress, 1,
						 memory_order_relaxed);
	PARLEY_ASSERT(old > 0);
}

uint32_t admission_hello(struct admission *a, bool *held, uint64_t rnd)
{
	if (admission_enter(a, held))
		return 0;
	atomic_fetch_add_explicit(&a->rejected, 1, memory_order_relaxed);
	uint32_t base = PARLEY_MAX(a->retry_ms, 1u);
	return base + (uint32_t)(rnd % ((uint64_t)base + 1));
}
