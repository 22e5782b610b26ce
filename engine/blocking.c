/*
 * blocking.c — the *_sync wrappers: each runs an asynchronous call and
 * waits on a condition variable for its callback. For tools and tests;
 * never from an engine callback (the shard would wait for itself).
 *
 * Threads: any thread except a shard thread. On a stepped engine (the
 * simulator, engine/step.c) the waiting thread steps the engine until the
 * callback ran.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

struct waiter {
	struct pe_engine *e;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	struct pe_append_result ares;
	struct pe_read_result rres;
	struct pe_entry *entries;
	int err;
};

static void waiter_init(struct waiter *w, struct pe_engine *e)
{
	memset(w, 0, sizeof *w);
	w->e = e;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
}

static void waiter_signal(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static bool waiter_done(void *arg)
{
	struct waiter *w = arg;
	pthread_mutex_lock(&w->mu);
	bool done = w->done;
	pthread_mutex_unlock(&w->mu);
	return done;
}

static void waiter_wait(struct waiter *w)
{
	/* stepped (the simulator): this thread runs the engine itself */
	if (w->e->step.pick)
		pe_step_until(w->e, waiter_done, w);
	pthread_mutex_lock(&w->mu);
	while (!w->done)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

static void sync_append_cb(void *arg, const struct pe_append_result *r)
{
	struct waiter *w = arg;
	w->ares = *r;
	waiter_signal(w);
}

int pe_append_sync(struct pe_engine *e, const struct pe_append_req *q,
		   struct pe_append_result *res)
{
	struct waiter w;
	waiter_init(&w, e);
	int rc = pe_append(e, q, sync_append_cb, &w);
	if (rc) {
		memset(res, 0, sizeof *res);
		res->err = rc;
		pthread_mutex_destroy(&w.mu);
		pthread_cond_destroy(&w.cv);
		return rc;
	}
	waiter_wait(&w);
	*res = w.ares;
	return res->err;
}

static void sync_read_cb(void *arg, const struct pe_read_result *r)
{
	struct waiter *w = arg;
	w->rres = *r;
	w->rres.entries = NULL;
	w->err = r->err;
	if (!r->err && r->count) {
		size_t total = sizeof(struct pe_entry) * r->count;
		for (uint32_t i = 0; i < r->count; i++)
			total += r->entries[i].len;
		struct pe_entry *out = malloc(total);
		if (!out) {
			w->err = -PARLEY_ENOMEM;
		} else {
			uint8_t *pl = (uint8_t *)(out + r->count);
			for (uint32_t i = 0; i < r->count; i++) {
				out[i] = r->entries[i];
				memcpy(pl, r->entries[i].payload, r->entries[i].len);
				out[i].payload = pl;
				pl += r->entries[i].len;
			}
			w->entries = out;
		}
	}
	waiter_signal(w);
}

int pe_read_sync(struct pe_engine *e, const struct pe_read_req *q,
		 struct pe_entry **out, uint32_t *count,
		 struct pe_read_result *meta)
{
	struct waiter w;
	waiter_init(&w, e);
	*out = NULL;
	*count = 0;
	int rc = pe_read(e, q, sync_read_cb, &w);
	if (rc) {
		pthread_mutex_destroy(&w.mu);
		pthread_cond_destroy(&w.cv);
		return rc;
	}
	waiter_wait(&w);
	if (meta)
		*meta = w.rres;
	if (w.err) {
		free(w.entries);
		return w.err;
	}
	*out = w.entries;
	*count = w.entries ? w.rres.count : 0;
	return 0;
}

static void sync_generic_cb(void *arg)
{
	waiter_signal(arg);
}

static int blocking_req(struct pe_engine *e, struct req *r, void *outp)
{
	struct waiter w;
	waiter_init(&w, e);
	r->out = outp;
	r->cb.generic = sync_generic_cb;
	r->arg = &w;
	int rc = shard_push(e, r);
	if (rc) {
		free(r);
		pthread_mutex_destroy(&w.mu);
		pthread_cond_destroy(&w.cv);
		return rc;
	}
	waiter_wait(&w);
	return 0;
}

int pe_meta_sync(struct pe_engine *e, const void *key, size_t klen,
		 struct pe_meta *out)
{
	if (!api_key_ok(key, klen) || !out)
		return -PARLEY_EINVAL;
	struct req *r = api_key_req(e, REQ_META, key, klen);
	if (!r)
		return -PARLEY_ENOMEM;
	struct meta_out mo;
	int rc = blocking_req(e, r, &mo);
	if (rc)
		return rc;
	*out = mo.meta;
	return mo.err;
}

int pe_partition_status(struct pe_engine *e, uint32_t partition,
			struct pe_partition_status *out)
{
	if (partition >= e->nparts || !out)
		return -PARLEY_EINVAL;
	struct req *r = api_part_req(REQ_STATUS, partition);
	if (!r)
		return -PARLEY_ENOMEM;
	return blocking_req(e, r, out);
}

int pe_list_streams(struct pe_engine *e, uint32_t partition, pe_stream_cb cb,
		    void *arg)
{
	if (partition >= e->nparts || !cb)
		return -PARLEY_EINVAL;
	struct req *r = api_part_req(REQ_LIST, partition);
	if (!r)
		return -PARLEY_ENOMEM;
	struct list_out lo;
	int rc = blocking_req(e, r, &lo);
	if (rc)
		return rc;
	if (lo.err) {
		free(lo.buf);
		return lo.err;
	}
	for (size_t off = 0; off < lo.len && !rc;) {
		uint8_t kl = lo.buf[off];
		struct pe_meta m = {
			.first_seq = le_get64(lo.buf + off + 1 + kl),
			.last_seq = le_get64(lo.buf + off + 9 + kl),
			.last_ts_ms = le_get64(lo.buf + off + 17 + kl),
		};
		rc = cb(arg, lo.buf + off + 1, kl, &m);
		off += 1 + kl + 24;
	}
	free(lo.buf);
	return rc > 0 ? 0 : rc;
}

struct del_waiter {
	struct waiter w;
	struct pe_delete_result res;
};

static void sync_delete_cb(void *arg, const struct pe_delete_result *r)
{
	struct del_waiter *d = arg;
	d->res = *r;
	waiter_signal(&d->w);
}

int pe_delete_sync(struct pe_engine *e, const void *key, size_t klen,
		   uint64_t through, struct pe_delete_result *r)
{
	struct del_waiter d;
	waiter_init(&d.w, e);
	memset(&d.res, 0, sizeof d.res);
	int rc = pe_delete(e, key, klen, through, sync_delete_cb, &d);
	if (rc) {
		pthread_mutex_destroy(&d.w.mu);
		pthread_cond_destroy(&d.w.cv);
		memset(r, 0, sizeof *r);
		r->err = rc;
		return rc;
	}
	waiter_wait(&d.w);
	*r = d.res;
	return r->err;
}

int pe_flush_sync(struct pe_engine *e, uint32_t partition)
{
	if (partition >= e->nparts)
		return -PARLEY_EINVAL;
	struct req *r = api_part_req(REQ_FLUSH, partition);
	if (!r)
		return -PARLEY_ENOMEM;
	int out = 0;
	int rc = blocking_req(e, r, &out);
	return rc ? rc : out;
}

int pe_flush_start(struct pe_engine *e, uint32_t partition, int *rc,
		   void (*cb)(void *arg), void *arg)
{
	if (partition >= e->nparts || !rc || !cb)
		return -PARLEY_EINVAL;
	struct req *r = api_part_req(REQ_FLUSH, partition);
	if (!r)
		return -PARLEY_ENOMEM;
	r->out = rc;
	r->cb.generic = cb;
	r->arg = arg;
	int err = shard_push(e, r);
	if (err)
		free(r);
	return err;
}

int pe_compact_sync(struct pe_engine *e, uint32_t partition, bool all)
{
	if (partition >= e->nparts)
		return -PARLEY_EINVAL;
	struct req *r = api_part_req(REQ_COMPACT, partition);
	if (!r)
		return -PARLEY_ENOMEM;
	r->from = all;
	int out = 0;
	int rc = blocking_req(e, r, &out);
	return rc ? rc : out;
}
