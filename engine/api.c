/*
 * api.c — the public asynchronous calls: validate the arguments, encode
 * the request (an append's or delete's log command) in one allocation and
 * push it to the owning shard's inbox. Never blocks; a full inbox is
 * -PARLEY_EFULL. A command the Raft core would refuse for its size is
 * refused here with -PARLEY_ETOOBIG (the size limits of parley_engine.h):
 * nothing queued can fail later for its size.
 *
 * Threads: any thread, including engine callbacks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

uint32_t pe_partition_count(const struct pe_engine *e)
{
	return e->nparts;
}

uint32_t pe_partition_of(const struct pe_engine *e, const void *key,
			 size_t klen)
{
	return (uint32_t)(parley_hash_key(key, klen) % e->nparts);
}

void pe_stats(struct pe_engine *e, struct pe_stats *out)
{
	memset(out, 0, sizeof *out);
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct shard *sh = &e->shards[i];
		out->appends += atomic_load(&sh->n_appends);
		out->entries += atomic_load(&sh->n_entries);
		/* WAL stats are written by the shard thread; a torn read of a
		 * u64 counter cannot happen on x86-64 and they are advisory */
		struct wal_stats ws;
		wal_get_stats(sh->wal, &ws);
		out->wal_batches += ws.batches;
		out->wal_piped += ws.piped;
		out->wal_bytes += ws.bytes;
		out->fsync_ns_total += ws.sync_ns;
	}
}

uint64_t pe_idem_key_bytes(void)
{
	return IDEM_KEY_BYTES;
}

void pe_memory(struct pe_engine *e, struct pe_memory *out)
{
	*out = (struct pe_memory){0};
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct shard *sh = &e->shards[i];
		out->memtable_bytes += atomic_load_explicit(&sh->mem_pub,
							    memory_order_relaxed);
		out->proposed_bytes += atomic_load_explicit(&sh->pend_pub,
							    memory_order_relaxed);
		out->idem_keys += atomic_load_explicit(&sh->idem_pub,
						       memory_order_relaxed);
		out->memtable_max_partition_bytes = PARLEY_MAX(
			out->memtable_max_partition_bytes,
			atomic_load_explicit(&sh->maxp_pub, memory_order_relaxed));
		out->queued_bytes += atomic_load_explicit(&sh->queued_bytes,
							  memory_order_relaxed);
	}
	out->idem_bytes = out->idem_keys * IDEM_KEY_BYTES;
	out->memtable_bytes += out->proposed_bytes;
	out->total_bytes = out->memtable_bytes + out->idem_bytes +
			   out->queued_bytes;
}

/* ---- stage histograms ----------------------------------------------------------------- */

#define RLX memory_order_relaxed

void stage_hist_add(struct stage_hist *h, uint64_t ns)
{
	unsigned b = ns ? 64u - (unsigned)__builtin_clzll(ns) : 0u;
	if (b >= PE_HIST_BUCKETS)
		b = PE_HIST_BUCKETS - 1;
	atomic_store_explicit(&h->b[b], atomic_load_explicit(&h->b[b], RLX) + 1, RLX);
	atomic_store_explicit(&h->sum_ns,
			      atomic_load_explicit(&h->sum_ns, RLX) + ns, RLX);
	if (ns > atomic_load_explicit(&h->max_ns, RLX))
		atomic_store_explicit(&h->max_ns, ns, RLX);
	atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, RLX) + 1,
			      RLX);
}

void pe_shard_sync_io(struct pe_engine *e, uint64_t out[PE_IO_OP_COUNT])
{
	for (int k = 0; k < PE_IO_OP_COUNT; k++)
		out[k] = atomic_load_explicit(&e->io->shard_sync[k], RLX);
}

void pe_stage_stats(struct pe_engine *e, struct pe_stage_hist *out)
{
	memset(out, 0, sizeof *out * PE_STAGE_COUNT);
	for (uint32_t i = 0; i < e->nshards; i++)
		for (int s = 0; s < PE_STAGE_COUNT; s++) {
			struct stage_hist *h = &e->shards[i].hist[s];
			struct pe_stage_hist *o = &out[s];
			o->count += atomic_load_explicit(&h->count, RLX);
			o->sum_ns += atomic_load_explicit(&h->sum_ns, RLX);
			uint64_t m = atomic_load_explicit(&h->max_ns, RLX);
			o->max_ns = PARLEY_MAX(o->max_ns, m);
			for (int b = 0; b < PE_HIST_BUCKETS; b++)
				o->buckets[b] += atomic_load_explicit(&h->b[b], RLX);
		}
}

const char *pe_stage_name(enum pe_stage s)
{
	static const char *const names[PE_STAGE_COUNT] = {
		"queue", "fill", "sync", "apply", "callback", "read_queue",
		"read_io"};
	return (unsigned)s < PE_STAGE_COUNT ? names[s] : NULL;
}

uint64_t pe_hist_bucket_le_ns(unsigned b)
{
	return b >= 63 ? UINT64_MAX : 1ull << b;
}

/* ---- public requests ------------------------------------------------------------------ */

bool api_key_ok(const void *key, size_t klen)
{
	return key && klen > 0 && klen <= PE_MAX_KEY;
}

bool pe_append_fits(size_t klen, const struct pe_input *entries,
		    uint32_t count)
{
	return cmd_append_size(klen, entries, count) != 0;
}

/* Refuses here, before anything is queued, whatever the Raft core would
 * refuse at propose for its size (parley_engine.h, "Size limits"): the
 * callback of an accepted append never reports a size error. */
int pe_append(struct pe_engine *e, const struct pe_append_req *q,
	      pe_append_cb cb, void *arg)
{
	if (!q || !cb || !api_key_ok(q->key, q->klen) || q->count == 0 ||
	    q->count > PE_MAX_BATCH || !q->entries)
		return -PARLEY_EINVAL;
	uint64_t mem = 0;
	for (uint32_t i = 0; i < q->count; i++) {
		if (q->entries[i].len > PE_MAX_PAYLOAD)
			return -PARLEY_ETOOBIG;
		if (q->entries[i].len && !q->entries[i].payload)
			return -PARLEY_EINVAL;
		mem += mentry_cost(q->entries[i].len);
	}
	size_t len = cmd_append_size(q->klen, q->entries, q->count);
	if (!len)
		return -PARLEY_ETOOBIG; /* the entry would be over PE_MAX_COMMAND */
	PARLEY_ASSERT(len + CMD_KIND_BYTES <= RAFT_MAX_ENTRY_BYTES);
	/* data: the Raft entry payload, u8 kind | command body */
	struct req *r = parley_pool_alloc(sizeof *r + 1 + len);
	if (!r)
		return -PARLEY_ENOMEM;
	memset(r, 0, sizeof *r);
	r->pooled = true;
	r->kind = REQ_APPEND;
	r->part = pe_partition_of(e, q->key, q->klen);
	r->cb.append = cb;
	r->arg = arg;
	r->len = (uint32_t)len + 1;
	r->klen = (uint8_t)q->klen;
	r->mem_estimate = (uint32_t)PARLEY_MIN(mem, UINT32_MAX);
	/* ts 0: stamped by the shard when the command enters the log */
	r->data[0] = CMD_APPEND;
	int64_t n = cmd_append_encode(r->data + 1, len, q->key, q->klen, q->producer,
				      0, q->expected_last_seq, q->entries,
				      q->count);
	PARLEY_ASSERT(n == (int64_t)len);
	r->t_enq = parley_mono_ns();
	int rc = shard_push(e, r);
	if (rc)
		api_req_free(r);
	return rc;
}

void api_req_free(struct req *r)
{
	if (r && r->pooled)
		parley_pool_free(r);
	else
		free(r);
}

struct req *api_key_req(struct pe_engine *e, enum req_kind kind,
			   const void *key, size_t klen)
{
	struct req *r = malloc(sizeof *r + klen);
	if (!r)
		return NULL;
	memset(r, 0, sizeof *r);
	r->kind = kind;
	r->part = pe_partition_of(e, key, klen);
	r->klen = (uint8_t)klen;
	r->len = (uint32_t)klen;
	memcpy(r->data, key, klen);
	return r;
}

struct req *api_part_req(enum req_kind kind, uint32_t part)
{
	struct req *r = calloc(1, sizeof *r);
	if (r) {
		r->kind = kind;
		r->part = part;
	}
	return r;
}

int pe_read(struct pe_engine *e, const struct pe_read_req *q, pe_read_cb cb,
	    void *arg)
{
	if (!q || !cb || !api_key_ok(q->key, q->klen) || q->limit == 0 ||
	    q->limit > PE_MAX_READ || (q->dir != PE_FORWARD && q->dir != PE_BACKWARD))
		return -PARLEY_EINVAL;
	struct req *r = api_key_req(e, REQ_READ, q->key, q->klen);
	if (!r)
		return -PARLEY_ENOMEM;
	r->from = q->from;
	r->dir = q->dir;
	r->limit = q->limit;
	r->ri_linear = q->linearizable;
	r->cb.read = cb;
	r->arg = arg;
	int rc = shard_push(e, r);
	if (rc)
		free(r);
	return rc;
}

int pe_subscribe(struct pe_engine *e, const void *key, size_t klen,
		 uint64_t from_seq, pe_sub_cb cb, void *arg,
		 struct pe_sub **out)
{
	if (!cb || !out || !api_key_ok(key, klen))
		return -PARLEY_EINVAL;
	struct pe_sub *sub = calloc(1, sizeof *sub);
	if (!sub)
		return -PARLEY_ENOMEM;
	sub->e = e;
	sub->part = pe_partition_of(e, key, klen);
	sub->next_seq = from_seq ? from_seq : 1;
	sub->cb = cb;
	sub->arg = arg;
	sub->klen = (uint8_t)klen;
	memcpy(sub->key, key, klen);
	struct req *r = api_part_req(REQ_SUBSCRIBE, sub->part);
	if (!r) {
		free(sub);
		return -PARLEY_ENOMEM;
	}
	r->sub = sub;
	int rc = shard_push(e, r);
	if (rc) {
		free(r);
		free(sub);
		return rc;
	}
	*out = sub;
	return 0;
}

int pe_sub_resume(struct pe_sub *s)
{
	struct req *r = api_part_req(REQ_RESUME, s->part);
	if (!r)
		return -PARLEY_ENOMEM;
	r->sub = s;
	int rc = shard_push(s->e, r);
	if (rc)
		free(r);
	return rc;
}

int pe_unsubscribe(struct pe_sub *s, void (*done)(void *arg), void *arg)
{
	struct req *r = api_part_req(REQ_UNSUBSCRIBE, s->part);
	if (!r)
		return -PARLEY_ENOMEM; /* caller may retry; sub stays valid */
	atomic_store(&s->dead, true);
	r->sub = s;
	r->cb.generic = done;
	r->arg = arg;
	int rc = shard_push(s->e, r);
	if (rc)
		free(r);
	return rc;
}
/* ---- delete and history maintenance --------------------------------------------------- */

int pe_delete(struct pe_engine *e, const void *key, size_t klen,
	      uint64_t through, pe_delete_cb cb, void *arg)
{
	if (!cb || !api_key_ok(key, klen))
		return -PARLEY_EINVAL;
	uint32_t len = CMD_DELETE_BYTES(klen); /* always fits (cmd.h) */
	struct req *r = malloc(sizeof *r + 1 + len);
	if (!r)
		return -PARLEY_ENOMEM;
	memset(r, 0, sizeof *r);
	r->kind = REQ_DELETE;
	r->part = pe_partition_of(e, key, klen);
	r->cb.del = cb;
	r->arg = arg;
	r->len = len + 1; /* u8 kind | command body */
	r->klen = (uint8_t)klen;
	r->data[0] = CMD_DELETE;
	int64_t n = cmd_delete_encode(r->data + 1, len, key, klen, through);
	PARLEY_ASSERT(n == (int64_t)len);
	r->t_enq = parley_mono_ns();
	int rc = shard_push(e, r);
	if (rc)
		free(r);
	return rc;
}
