/*
 * chat_world.h — shared fixtures of the chat service tests
 * (test_chat_read.c, test_chat_list.c, test_conn.c, test_chat_group.c, ...):
 * an engine on the
 * in-memory I/O backend with the chat clock, and blocking wrappers
 * around CONV_OPEN and SEND. Header-only (static functions).
 */
#ifndef PARLEY_TEST_CHAT_WORLD_H
#define PARLEY_TEST_CHAT_WORLD_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "chat.h"
#include "parley_engine_hooks.h"
#include "route.h"

struct world {
	struct pio *io;
	struct pe_engine *e;
	struct chat_clock clock;
	struct chat *c;
};

/* Opens (or reopens) the engine and the chat service on w->io. */
static inline void world_open(struct world *w, uint32_t partitions)
{
	struct pe_options o = {.dir = "/data", .partitions = partitions,
			       .shards = 2, .io = w->io,
			       .clock_ms = chat_clock_ms,
			       .clock_arg = &w->clock,
			       .retention = chat_retention,
			       .nretention = chat_nretention};
	cr_assert_eq(pe_open(&o, &w->e), 0);
	cr_assert_eq(chat_open(w->e, &w->clock, &w->c), 0);
}

/* Closes them, keeping w->io (and so what was written) for a reopen. */
static inline void world_close(struct world *w)
{
	chat_close(w->c);
	pe_close(w->e);
}

static inline void world_start(struct world *w, uint64_t seed)
{
	memset(w, 0, sizeof *w);
	w->io = pio_mem_new(seed);
	world_open(w, 4);
}

static inline void world_stop(struct world *w)
{
	world_close(w);
	pio_free(w->io);
}

/* A one-shot rendezvous between an engine callback and the test thread. */
struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
};
#define WAITER_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

static inline void waiter_signal(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	w->done++;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static inline void waiter_wait(struct waiter *w, int n)
{
	pthread_mutex_lock(&w->mu);
	while (w->done < n)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

/* A rendezvous carrying one callback result of type T: declares
 * struct name { struct waiter w; T r; } and name##_cb(arg, const T *r),
 * the callback that stores the result and signals. */
#define WAITER_FOR(name, T)                                                    \
	struct name {                                                          \
		struct waiter w;                                               \
		T r;                                                           \
	};                                                                     \
	static inline void name##_cb(void *arg, const T *r)                    \
	{                                                                      \
		struct name *x_ = arg;                                         \
		x_->r = *r;                                                    \
		waiter_signal(&x_->w);                                         \
	}

WAITER_FOR(open_wait, struct chat_conv_info)

/* CONV_OPEN through the chat service; returns its error. */
static inline int svc_open(struct chat *c, const char *user, const char *peer,
			   struct chat_conv_info *out)
{
	struct open_wait x = {.w = WAITER_INIT};
	int rc = chat_conv_open(c, user, strlen(user), peer, strlen(peer),
				open_wait_cb, &x);
	if (rc)
		return rc;
	waiter_wait(&x.w, 1);
	if (out)
		*out = x.r;
	return x.r.err;
}

/* A SEND through the chat service with body "m<i>", waiting for its ack;
 * returns the seq. */
static inline uint64_t svc_send(struct chat *c, const char *conv,
				const char *from, int i)
{
	char body[32];
	snprintf(body, sizeof body, "m%d", i);
	struct chat_send_req q = {.conv = conv, .conv_len = (uint16_t)strlen(conv),
				  .sender = from,
				  .sender_len = (uint16_t)strlen(from),
				  .content_type = 1,
				  .body = (const uint8_t *)body,
				  .body_len = (uint32_t)strlen(body)};
	q.client_msg_id[0] = (uint8_t)i;
	q.client_msg_id[1] = (uint8_t)(i >> 8);
	q.client_msg_id[15] = 0x5a;
	struct chat_send_result r;
	cr_assert_eq(chat_send_sync(c, &q, &r), 0);
	return r.seq;
}

/* Waits (bounded) until u/<user> holds n entries: the fan-out is
 * asynchronous. */
static inline void wait_inbox(struct world *w, const char *user, uint64_t n)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_inbox(key, user, strlen(user));
	for (int i = 0; i < 5000; i++) {
		struct pe_meta m;
		int rc = pe_meta_sync(w->e, key, (size_t)kl, &m);
		if (rc == 0 && m.last_seq >= n)
			return;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	cr_assert_fail("inbox of %s never reached %llu entries", user,
		       (unsigned long long)n);
}

/* Placement as route.h sees it: the partition of stream `key` is held
 * elsewhere (its leader: node 7), as on a node a membership change took
 * off it (docs/CLUSTER.md §3.7); returns that partition. world_holds_all
 * undoes it. Only one partition at a time. */
static inline uint32_t *world_nh_slot(void)
{
	static uint32_t part = UINT32_MAX;
	return &part;
}

static inline uint64_t world_nh_resolver(void *arg, uint32_t p)
{
	(void)arg;
	return p == *world_nh_slot() ? 7 : UINT64_MAX;
}

static inline uint32_t world_not_held(struct world *w, const char *key)
{
	uint32_t p = pe_partition_of(w->e, key, strlen(key));
	*world_nh_slot() = p;
	route_set_resolver(world_nh_resolver, NULL);
	route_clear();
	return p;
}

static inline void world_holds_all(void)
{
	route_set_resolver(NULL, NULL);
	*world_nh_slot() = UINT32_MAX;
	route_clear();
}

/* The partition this thread's NOTLEADER note names (route_take), or
 * ROUTE_PARTITION_ANY when there is none; consumes it. */
static inline uint32_t world_noted(void)
{
	uint32_t p = ROUTE_PARTITION_ANY;
	uint64_t leader = 0;
	if (!route_take(&p, &leader))
		return ROUTE_PARTITION_ANY;
	return p;
}

#endif
