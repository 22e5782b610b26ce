/*
 * live.c — the registry of subscribed connections per user (live.h).
 *
 * Invariants
 *   1. A user's entry lists each attached connection once; the entry
 *      exists while it lists one or more, or while `over` is set.
 *   2. `over` counts attaches that did not fit (LIVE_MAX_PER_USER or out of
 *      memory) and are not detached yet: while it is non-zero live_post
 *      answers 0, so the fan-out writes the user an ACTIVITY pointer.
 * Ownership: entries are malloc'd by attach and freed by the detach that
 * empties them. Threads: see live.h.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "live.h"
#include "parley_common.h"
#include "parley_proto.h"

struct live_user {
	struct live_user *next;
	uint64_t h;
	uint32_t n, over;
	struct conn_ref ref[LIVE_MAX_PER_USER];
	bool early[LIVE_MAX_PER_USER]; /* ref[i] takes early EVENTs */
	uint8_t ulen;
	char user[PARLEY_PROTO_MAX_USER_ID];
};

struct live_shard {
	pthread_mutex_t mu;
	struct live_user *head;
};

struct live {
	struct live_shard sh[LIVE_SHARDS];
	_Atomic uint64_t n;
};

/* lm_conv_hash's key: random per process, so conversation ids cannot be
 * chosen to collide (early delivery, conn.c, relies on no collision). */
static uint64_t conv_key;
static pthread_once_t conv_key_once = PTHREAD_ONCE_INIT;

static void conv_key_init(void)
{
	if (getrandom(&conv_key, sizeof conv_key, 0) != sizeof conv_key)
		conv_key = parley_mono_ns() ^ (uint64_t)(uintptr_t)&conv_key;
}

uint64_t lm_conv_hash(const char *conv, size_t len)
{
	pthread_once(&conv_key_once, conv_key_init);
	return parley_xxh3(conv, len, conv_key);
}

struct live *live_new(void)
{
	struct live *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	for (unsigned i = 0; i < LIVE_SHARDS; i++)
		pthread_mutex_init(&l->sh[i].mu, NULL);
	return l;
}

void live_free(struct live *l)
{
	if (!l)
		return;
	for (unsigned i = 0; i < LIVE_SHARDS; i++) {
		struct live_user *u = l->sh[i].head;
		while (u) {
			struct live_user *nx = u->next;
			free(u);
			u = nx;
		}
		pthread_mutex_destroy(&l->sh[i].mu);
	}
	free(l);
}

static uint64_t user_hash(const char *user, size_t ulen)
{
	return parley_xxh3(user, ulen, 0x6c69766575736572ull);
}

static struct live_user **find(struct live_shard *s, uint64_t h,
			       const char *user, size_t ulen)
{
	struct live_user **pp = &s->head;
	while (*pp && !((*pp)->h == h && (*pp)->ulen == ulen &&
			!memcmp((*pp)->user, user, ulen)))
		pp = &(*pp)->next;
	return pp;
}

static bool ref_eq(const struct conn_ref *a, const struct conn_ref *b)
{
	return a->lp == b->lp && a->slot == b->slot && a->gen == b->gen;
}

int live_attach(struct live *l, const char *user, size_t ulen,
		const struct conn_ref *ref, bool early)
{
	if (ulen > PARLEY_PROTO_MAX_USER_ID)
		return -PARLEY_EINVAL;
	uint64_t h = user_hash(user, ulen);
	struct live_shard *s = &l->sh[h % LIVE_SHARDS];
	pthread_mutex_lock(&s->mu);
	struct live_user **pp = find(s, h, user, ulen);
	struct live_user *u = *pp;
	if (!u) {
		u = calloc(1, sizeof *u);
		if (!u) {
			pthread_mutex_unlock(&s->mu);
			return -PARLEY_ENOMEM; /* posts find no entry: 0, safe */
		}
		u->h = h;
		u->ulen = (uint8_t)ulen;
		memcpy(u->user, user, ulen);
		*pp = u;
	}
	int rc = 0;
	if (u->n < LIVE_MAX_PER_USER) {
		u->early[u->n] = early;
		u->ref[u->n++] = *ref;
		atomic_fetch_add(&l->n, 1);
	} else {
		u->over++; /* invariant 2 */
		rc = -PARLEY_ENOMEM;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void live_detach(struct live *l, const char *user, size_t ulen,
		 const struct conn_ref *ref)
{
	uint64_t h = user_hash(user, ulen);
	struct live_shard *s = &l->sh[h % LIVE_SHARDS];
	pthread_mutex_lock(&s->mu);
	struct live_user **pp = find(s, h, user, ulen);
	struct live_user *u = *pp;
	if (u) {
		uint32_t i = 0;
		while (i < u->n && !ref_eq(&u->ref[i], ref))
			i++;
		if (i < u->n) {
			u->ref[i] = u->ref[--u->n];
			u->early[i] = u->early[u->n];
			atomic_fetch_sub(&l->n, 1);
		} else if (u->over) {
			u->over--; /* one that did not fit */
		}
		if (u->n == 0 && u->over == 0) {
			*pp = u->next;
			free(u);
		}
	}
	pthread_mutex_unlock(&s->mu);
}

unsigned live_post(void *arg, const char *user, size_t ulen,
		   const uint8_t *frame, uint32_t len)
{
	struct live *l = arg;
	uint64_t h = user_hash(user, ulen);
	struct live_shard *s = &l->sh[h % LIVE_SHARDS];
	unsigned posted = 0;
	pthread_mutex_lock(&s->mu);
	struct live_user *u = *find(s, h, user, ulen);
	if (u && u->over == 0) {
		for (uint32_t i = 0; i < u->n; i++) {
			struct lmsg *m = lmsg_new(LM_LIVE, len);
			if (!m) {
				posted = 0; /* this one would miss it: pointer */
				break;
			}
			memcpy(m->data, frame, len);
			lmsg_post(&u->ref[i], m);
			posted++;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return posted;
}

unsigned live_post_early(void *arg, const char *user, size_t ulen,
			 const uint8_t *frame, uint32_t len, const char *conv,
			 size_t clen, uint64_t conv_seq, uint64_t t_durable_ns)
{
	struct live *l = arg;
	struct lm_conv_pos pos = {.conv_h = lm_conv_hash(conv, clen),
				  .conv_seq = conv_seq,
				  .kind = PARLEY_EV_MESSAGE};
	uint64_t h = user_hash(user, ulen);
	struct live_shard *s = &l->sh[h % LIVE_SHARDS];
	unsigned posted = 0;
	pthread_mutex_lock(&s->mu);
	struct live_user *u = *find(s, h, user, ulen);
	for (uint32_t i = 0; u && i < u->n; i++) {
		if (!u->early[i])
			continue;
		struct lmsg *m = lmsg_new(LM_EARLY, len);
		if (!m)
			break; /* optional: the inbox EVENT delivers */
		memcpy(m->data, frame, len);
		m->u.early.pos = pos;
		m->u.early.t_durable_ns = t_durable_ns;
		lmsg_post(&u->ref[i], m);
		posted++;
	}
	pthread_mutex_unlock(&s->mu);
	return posted;
}

uint64_t live_count(struct live *l)
{
	return atomic_load(&l->n);
}
