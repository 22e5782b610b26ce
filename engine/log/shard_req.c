/*
 * shard_req.c — the shard's request handlers: appends and deletes enter
 * the WAL's open batch; reads, metadata, status, listing and subscription
 * requests are answered from the memtable and the history tier.
 *
 * Reads merge history (seqs < mem_first) and the memtable (the rest);
 * first_seq bounds both. Nothing here acknowledges an append: that happens
 * in shard.c once the batch is durable.
 *
 * Threads: the owning shard thread only (history reads are run by the
 * read pool, history/hist_read.c, and answered back here).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* Fails a WAL-bound request (append or delete): its callback runs once. */
void shard_req_fail(struct req *r, int err)
{
	if (r->kind == REQ_DELETE) {
		struct pe_delete_result res = {.err = err};
		r->cb.del(r->arg, &res);
	} else {
		struct pe_append_result res = {.err = err};
		r->cb.append(r->arg, &res);
	}
	api_req_free(r);
}

/* Appends and deletes: checked, then queued as proposals of the
 * partition's Raft group; now: the monotonic time the shard took it from
 * its inbox (one reading per drain, shard_process). Always returns true
 * (the request is taken). */
bool shard_req_append(struct shard *sh, struct req *r, uint64_t now)
{
	struct pe_engine *e = sh->e;
	struct part *p = &e->parts[r->part];
	if (sh->fatal) {
		shard_req_fail(r, -PARLEY_EFATAL);
		return true;
	}
	if (e->opt.read_only) {
		shard_req_fail(r, -PARLEY_EPERM);
		return true;
	}
	if (p->corrupt) {
		shard_req_fail(r, -PARLEY_ECORRUPT);
		return true;
	}
	if (r->kind == REQ_APPEND &&
	    p->mem_bytes + p->pending_bytes + r->mem_estimate >
	    e->opt.memtable_bytes) {
		shard_req_fail(r, -PARLEY_EFULL);
		return true;
	}
	if (!p->raft) {
		shard_req_fail(r, -PARLEY_ENOTLEADER);
		return true;
	}
	r->t_shard = now;
	stage_hist_add(&sh->hist[PE_STAGE_QUEUE], r->t_shard - r->t_enq);
	/* queued for the partition's next ready (log/part_raft.c); the time
	 * is stamped when it is proposed */
	p->pending_bytes += r->mem_estimate;
	atomic_fetch_add_explicit(&sh->pend_pub, r->mem_estimate,
				  memory_order_relaxed);
	r->next = NULL;
	if (p->prop_tail)
		p->prop_tail->next = r;
	else
		p->prop_head = r;
	p->prop_tail = r;
	shard_mark_dirty(sh, p);
	return true;
}

static void log_hist_error(struct part *p, int rc)
{
	PLOG_E("engine", "history read failed", "partition=%u err=%s",
	       p->id, parley_errname(rc));
}

/* Whether a read of s needs history entries (seqs below mem_first), the
 * same decision the synchronous path below makes. */
static bool read_needs_history(const struct part *p, const struct stream *s,
			       const struct req *r)
{
	if (!p->hist)
		return false;
	uint64_t F = s->first_seq;
	uint64_t mlo = PARLEY_MAX(s->mem_first, F);
	if (r->dir == PE_FORWARD)
		return (r->from ? r->from : 1) < s->mem_first;
	uint64_t seq = PARLEY_MIN(r->from, s->last_seq);
	uint64_t nm = seq >= mlo ? PARLEY_MIN((uint64_t)r->limit, seq - mlo + 1) : 0;
	seq -= nm;
	return nm < r->limit && seq >= F && seq > 0 && seq < s->mem_first;
}

/*
 * Reads merge history (seqs < mem_first) and the memtable (the rest);
 * first_seq bounds both. A read that needs history goes to the read pool
 * (history/hist_read.c) with a snapshot of both, and is answered when it
 * comes back; with no pool it is served here: payloads of history entries
 * point into pinned cache blocks (`hold`), released after the callback.
 */
void shard_req_read(struct shard *sh, struct req *r)
{
	struct pe_engine *e = sh->e;
	struct part *p = &e->parts[r->part];
	struct pe_read_result res = {0};
	struct pe_entry *out = NULL;
	struct history_hold *hold = NULL;
	if (p->corrupt) {
		res.err = -PARLEY_ECORRUPT;
		goto done;
	}
	if ((res.err = part_raft_read_check(p)) != 0)
		goto done; /* a new leader not caught up yet (log/part_raft.c) */
	struct stream *s = stream_lookup(p, r->data, r->klen, false);
	if (!s || s->last_seq == 0) {
		res.end = true;
		goto done;
	}
	res.first_seq = s->first_seq;
	res.last_seq = s->last_seq;
	uint32_t limit = r->limit;
	uint64_t F = s->first_seq;
	if (r->dir == PE_FORWARD) {
		if ((r->from ? r->from : 1) < F) {
			res.err = -PARLEY_ETRIMMED;
			goto done;
		}
	} else {
		uint64_t seq = PARLEY_MIN(r->from, s->last_seq);
		if (seq < F && seq != 0 && F > 1) {
			res.err = -PARLEY_ETRIMMED;
			goto done;
		}
	}
	if (hist_read_async(sh) && read_needs_history(p, s, r)) {
		if (sh->rd_inflight >= e->opt.read_queue_depth) {
			hist_read_wait(sh, r); /* dispatched as slots free */
			return;
		}
		res.err = hist_read_dispatch(sh, r, p, s);
		if (!res.err)
			return; /* answered by hist_read_done */
		goto done;
	}
	out = malloc(sizeof *out * limit);
	if (!out) {
		res.err = -PARLEY_ENOMEM;
		goto done;
	}
	uint64_t mlo = PARLEY_MAX(s->mem_first, F);
	uint32_t n = 0;
	struct history_read_res hr;
	if (r->dir == PE_FORWARD) {
		uint64_t seq = r->from ? r->from : 1;
		if (seq < s->mem_first && p->hist) {
			struct history_read_req q = {
				.key = s->key, .klen = s->klen, .from = seq,
				.dir = PE_FORWARD, .limit = limit,
				.below = s->mem_first, .first_retained = F};
			int rc = hpart_read(p->hist, &q, out, &hr, &hold);
			if (rc) {
				log_hist_error(p, rc);
				res.err = rc;
				goto done;
			}
			n = hr.count;
			seq = s->mem_first; /* history had every entry below it */
		}
		for (seq = PARLEY_MAX(seq, mlo); n < limit && seq <= s->last_seq;
		     seq++)
			mentry_to_pe(stream_at(s, seq), &out[n++]);
		res.end = n == 0 || out[n - 1].seq >= s->last_seq;
	} else {
		uint64_t seq = PARLEY_MIN(r->from, s->last_seq);
		for (; n < limit && seq >= mlo && seq > 0; seq--)
			mentry_to_pe(stream_at(s, seq), &out[n++]);
		if (n < limit && seq >= F && seq > 0 && seq < s->mem_first &&
		    p->hist) {
			struct history_read_req q = {
				.key = s->key, .klen = s->klen, .from = seq,
				.dir = PE_BACKWARD, .limit = limit - n,
				.below = s->mem_first, .first_retained = F};
			int rc = hpart_read(p->hist, &q, out + n, &hr, &hold);
			if (rc) {
				log_hist_error(p, rc);
				res.err = rc;
				goto done;
			}
			n += hr.count;
		}
		res.end = n == 0 || out[n - 1].seq <= F;
	}
	res.entries = out;
	res.count = n;
done:
	if (res.err) {
		res.entries = NULL;
		res.count = 0;
	}
	r->cb.read(r->arg, &res);
	history_hold_free(hold);
	free(out);
	free(r);
}

void shard_req_meta(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	struct meta_out *o = r->out;
	memset(o, 0, sizeof *o);
	if (p->corrupt) {
		o->err = -PARLEY_ECORRUPT;
	} else if ((o->err = part_raft_read_check(p)) != 0) {
		/* a new leader not caught up yet (log/part_raft.c) */
	} else {
		struct stream *s = stream_lookup(p, r->data, r->klen, false);
		if (s && s->last_seq) {
			o->meta.first_seq = s->first_seq;
			o->meta.last_seq = s->last_seq;
			o->meta.last_ts_ms = s->last_ts;
		}
	}
	r->cb.generic(r->arg);
	free(r);
}

void shard_req_status(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	struct pe_partition_status *o = r->out;
	memset(o, 0, sizeof *o);
	o->state = p->corrupt ? PE_PART_CORRUPT : PE_PART_OK;
	o->streams = p->nstreams;
	o->entries = p->nentries;
	o->mem_bytes = p->mem_bytes;
	o->last_index = p->last_index;
	snprintf(o->error, sizeof o->error, "%s", p->err);
	o->flushed_index = p->flushed_index;
	o->flushes = p->flushes;
	o->compactions = p->compactions;
	if (p->hist) {
		const struct hman *m = hpart_manifest(p->hist);
		o->segments = (uint32_t)m->nsegs;
		for (size_t i = 0; i < m->nsegs; i++)
			o->segment_bytes += m->segs[i].bytes;
	}
	r->cb.generic(r->arg);
	free(r);
}

void shard_req_list(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	struct list_out *o = r->out;
	memset(o, 0, sizeof *o);
	if (p->corrupt) {
		o->err = -PARLEY_ECORRUPT;
		goto done;
	}
	/* streams that live only in history join the table first */
	if (p->hist) {
		size_t nseg = hpart_segments(p->hist, NULL, 0);
		struct hpart_seg_view *v = calloc(nseg ? nseg : 1, sizeof *v);
		if (!v) {
			o->err = -PARLEY_ENOMEM;
			goto done;
		}
		hpart_segments(p->hist, v, nseg);
		for (size_t i = 0; i < nseg; i++)
			for (uint32_t k = 0; k < v[i].info.streams; k++) {
				const uint8_t *key;
				uint8_t kl;
				struct seg_stream_info si;
				if (seg_stream_at(v[i].r, k, &key, &kl, &si) == 0)
					(void)stream_lookup(p, key, kl, false);
			}
		free(v);
		const struct hman *m = hpart_manifest(p->hist);
		for (size_t i = 0; i < m->nstreams; i++)
			(void)stream_lookup(p, m->streams[i].key,
					    m->streams[i].klen, false);
	}
	size_t need = 1;
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext)
			need += 1 + s->klen + 24;
	o->buf = malloc(need);
	if (!o->buf) {
		o->err = -PARLEY_ENOMEM;
		goto done;
	}
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext) {
			if (!s->last_seq)
				continue;
			uint8_t *q = o->buf + o->len;
			q[0] = s->klen;
			memcpy(q + 1, s->key, s->klen);
			le_put64(q + 1 + s->klen, s->first_seq);
			le_put64(q + 9 + s->klen, s->last_seq);
			le_put64(q + 17 + s->klen, s->last_ts);
			o->len += 1 + s->klen + 24;
		}
done:
	r->cb.generic(r->arg);
	free(r);
}

void shard_req_subscribe(struct shard *sh, struct req *r)
{
	struct pe_sub *sub = r->sub;
	struct part *p = &sh->e->parts[r->part];
	free(r);
	if (atomic_load(&sub->dead))
		return; /* unsubscribed before it started; UNSUBSCRIBE frees */
	if (p->corrupt) {
		struct pe_sub_update u = {.event = PE_SUB_CLOSED,
					  .err = -PARLEY_ECORRUPT,
					  .next_seq = sub->next_seq};
		atomic_store(&sub->dead, true);
		sub->cb(sub->arg, sub, &u);
		return;
	}
	struct stream *s = stream_lookup(p, sub->key, sub->klen, true);
	if (!s) {
		struct pe_sub_update u = {.event = PE_SUB_CLOSED,
					  .err = -PARLEY_ENOMEM,
					  .next_seq = sub->next_seq};
		atomic_store(&sub->dead, true);
		sub->cb(sub->arg, sub, &u);
		return;
	}
	sub->st = s;
	sub->next = s->subs;
	s->subs = sub;
	sub->attached = true;
	sub_start(sh, sub);
}

void shard_req_resume(struct shard *sh, struct req *r)
{
	struct pe_sub *sub = r->sub;
	free(r);
	if (!sub->attached || atomic_load(&sub->dead))
		return;
	sub->paused = false;
	sub_start(sh, sub);
}

void shard_req_unsubscribe(struct shard *sh, struct req *r)
{
	struct pe_sub *sub = r->sub;
	sub_detach(sh, sub);
	if (r->cb.generic)
		r->cb.generic(r->arg);
	if (sub->rd_flight)
		sub->free_pending = true; /* freed when its chunk is back */
	else
		sub_free(sub);
	free(r);
}
