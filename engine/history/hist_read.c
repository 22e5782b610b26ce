/*
 * hist_read.c — history reads off the shard thread: the engine's read pool
 * (a few worker threads with one bounded queue of jobs) and the read
 * requests it serves, those that need entries the memtable no longer holds
 * (segment pread + checksum + zstd + decode on a block cache miss).
 *
 * One read's way (REQ_READ, log/shard_req.c decides it needs history):
 *
 *   shard: snapshot            pool thread                shard: answer
 *   ───────────────            ───────────                ─────────────
 *   memtable part copied  ──►  hpart_view_read over  ──►  REQ_READ_DONE: result
 *   hpart_view_get: a ref      the view's readers         assembled (history +
 *   on each live reader        (block cache shared,       memtable copy), the
 *   that may hold the key,     thread-safe)               read callback runs,
 *   the stream's marks                                    hold and view freed
 *
 * Consistency: the memtable copy and the view are taken together on the
 * shard thread, where a flush's or a compaction's install also runs, so a
 * read sees exactly the state of one moment: an entry a flush moves from
 * the memtable into a new segment after the snapshot is still in the copy
 * (and not in the view, which has only the readers live at the snapshot);
 * one it moved before is in the view (its reader went live with the
 * install, together with the memtable drop). Never missed, never twice.
 * The view's readers hold a reference, so a compaction that retires them
 * meanwhile closes them only when the read is done (segment.h).
 *
 * Invariants
 *   1. A read callback runs on its shard thread (parley_engine.h), exactly
 *      once: from shard_req_read (memtable only, or no pool) or from
 *      hist_read_done.
 *   2. Per shard at most opt.read_queue_depth history reads are in flight
 *      (queued or running in the pool, or their completion on the inbox);
 *      more wait on the shard's rd_wait list, in order, and are dispatched
 *      as completions come back — the inbox bound (queue_depth) is then
 *      the back-pressure on callers, as for any request.
 *   3. The shard stops (pe_close) only with no read in flight or waiting.
 *
 * Ownership: a dispatched read's req is the pool's until it is pushed back
 * to the shard's inbox as REQ_READ_DONE (r->out: the struct hread), then
 * the shard's, which frees both after the callback. On pe_abort queued
 * jobs are dropped (no callback, as for every request on abort) and
 * completions left on an inbox are freed by hist_read_free.
 *
 * Threads: rpool_* from any thread; hist_read_dispatch / hist_read_done on
 * the owning shard thread; the job's run on a pool thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* ---- the pool ----------------------------------------------------------------------- */

static void *rpool_main(void *arg)
{
	struct rpool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stop)
			break;
		struct rpool_job *j = p->head;
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		p->queued--;
		pthread_mutex_unlock(&p->mu);
		j->run(j);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int rpool_start(struct rpool *p, uint32_t nthreads)
{
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->inited = true;
	p->threads = calloc(nthreads, sizeof *p->threads);
	if (!p->threads)
		return -PARLEY_ENOMEM;
	for (uint32_t i = 0; i < nthreads; i++) {
		if (pthread_create(&p->threads[i], NULL, rpool_main, p))
			return -errno;
		p->n++;
	}
	return 0;
}

void rpool_push(struct rpool *p, struct rpool_job *j, bool urgent)
{
	pthread_mutex_lock(&p->mu);
	PARLEY_ASSERT(!p->stop);
	if (urgent) {
		j->next = p->head;
		p->head = j;
		if (!p->tail)
			p->tail = j;
	} else {
		j->next = NULL;
		if (p->tail)
			p->tail->next = j;
		else
			p->head = j;
		p->tail = j;
	}
	p->queued++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* Joins the threads (a running job finishes first); jobs still queued are
 * dropped (their drop runs here). */
void rpool_stop(struct rpool *p)
{
	if (!p->inited)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (uint32_t i = 0; i < p->n; i++)
		pthread_join(p->threads[i], NULL);
	free(p->threads);
	p->threads = NULL;
	p->n = 0;
	while (p->head) {
		struct rpool_job *j = p->head;
		p->head = j->next;
		j->drop(j);
	}
	p->tail = NULL;
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	p->inited = false;
}

/* ---- history reads ------------------------------------------------------------------- */

struct hread {
	struct rpool_job job;       /* first: the pool's handle */
	struct req *r;              /* the REQ_READ */
	struct pe_engine *e;
	struct hpart_view *view;
	struct history_read_req q;  /* q.key points into r->data */
	struct pe_read_result res;  /* first_seq / last_seq at the snapshot */
	uint64_t last_seq;
	struct pe_entry *out;       /* r->limit entries */
	uint32_t nmem;              /* memtable entries: out[0..nmem) backward,
				       mem[0..nmem) forward */
	struct pe_entry *mem;
	uint8_t *membuf;            /* payloads of the copied entries */
	int rc;                     /* the pool's history read */
	struct history_read_res hr;
	struct history_hold *hold;
	uint64_t t_disp, t_start, t_end;
};

struct hsubread;
static void hsub_free(struct hsubread *h);

void hist_read_free(struct req *r)
{
	if (r->kind == REQ_SUB_READ_DONE) { /* pe_abort: the sub is left alone */
		hsub_free(r->out);
		return;
	}
	struct hread *h = r->out;
	if (h) {
		history_hold_free(h->hold);
		hpart_view_free(h->view);
		free(h->out);
		free(h->mem);
		free(h->membuf);
		free(h);
	}
	free(r);
}

static void hread_run(struct rpool_job *j)
{
	struct hread *h = (struct hread *)j;
	h->t_start = parley_mono_ns();
	struct pe_entry *dst = h->q.dir == PE_FORWARD ? h->out : h->out + h->nmem;
	h->rc = hpart_view_read(h->view, &h->q, dst, &h->hr, &h->hold);
	h->t_end = parley_mono_ns();
	h->r->kind = REQ_READ_DONE;
	h->r->out = h;
	PARLEY_ASSERT(shard_push(h->e, h->r) == 0); /* always gets through */
}

static void hread_drop(struct rpool_job *j)
{
	struct hread *h = (struct hread *)j;
	h->r->out = h;
	hist_read_free(h->r);
}

/* Copies memtable entries (pointers into the memtable become copies the
 * pool's read cannot see change). */
static int copy_mem(struct hread *h, struct mentry *const *src, uint32_t n,
		    struct pe_entry *dst)
{
	size_t bytes = 0;
	for (uint32_t i = 0; i < n; i++)
		bytes += src[i]->len;
	h->membuf = malloc(bytes ? bytes : 1);
	if (!h->membuf)
		return -PARLEY_ENOMEM;
	size_t off = 0;
	for (uint32_t i = 0; i < n; i++) {
		mentry_to_pe(src[i], &dst[i]);
		if (src[i]->len)
			memcpy(h->membuf + off, src[i]->payload, src[i]->len);
		dst[i].payload = h->membuf + off;
		off += src[i]->len;
	}
	return 0;
}

bool hist_read_async(const struct shard *sh)
{
	return sh->e->rpool.n > 0;
}

int hist_read_dispatch(struct shard *sh, struct req *r, struct part *p,
		       struct stream *s)
{
	struct pe_engine *e = sh->e;
	uint32_t limit = r->limit;
	uint64_t F = s->first_seq;
	uint64_t mlo = PARLEY_MAX(s->mem_first, F);
	struct hread *h = calloc(1, sizeof *h);
	struct mentry **pick = malloc(sizeof *pick * limit);
	if (!h || !pick) {
		free(h);
		free(pick);
		return -PARLEY_ENOMEM;
	}
	h->r = r;
	h->e = e;
	h->res.first_seq = F;
	h->res.last_seq = s->last_seq;
	h->last_seq = s->last_seq;
	h->out = malloc(sizeof *h->out * limit);
	int rc = h->out ? 0 : -PARLEY_ENOMEM;
	h->q = (struct history_read_req){.key = r->data, .klen = r->klen,
					 .dir = r->dir, .below = s->mem_first,
					 .first_retained = F};
	uint32_t n = 0;
	if (!rc && r->dir == PE_FORWARD) {
		h->q.from = r->from ? r->from : 1;
		h->q.limit = limit;
		for (uint64_t seq = mlo; n < limit && seq <= s->last_seq; seq++)
			pick[n++] = stream_at(s, seq);
		h->mem = malloc(sizeof *h->mem * (n ? n : 1));
		rc = h->mem ? copy_mem(h, pick, n, h->mem) : -PARLEY_ENOMEM;
	} else if (!rc) {
		uint64_t seq = PARLEY_MIN(r->from, s->last_seq);
		for (; n < limit && seq >= mlo && seq > 0; seq--)
			pick[n++] = stream_at(s, seq);
		h->q.from = seq;
		h->q.limit = limit - n;
		rc = copy_mem(h, pick, n, h->out);
	}
	h->nmem = n;
	free(pick);
	if (!rc)
		rc = hpart_view_get(p->hist, r->data, r->klen, &h->view);
	if (rc) {
		h->r = NULL;
		free(h->out);
		free(h->mem);
		free(h->membuf);
		free(h);
		return rc;
	}
	h->job.run = hread_run;
	h->job.drop = hread_drop;
	h->t_disp = parley_mono_ns();
	sh->rd_inflight++;
	rpool_push(&e->rpool, &h->job, false);
	return 0;
}

/* Reads and tails that waited for a slot (invariant 2), in order. */
static void hist_read_kick(struct shard *sh)
{
	uint32_t depth = sh->e->opt.read_queue_depth;
	while (sh->rd_wait && sh->rd_inflight < depth) {
		struct req *r = sh->rd_wait;
		sh->rd_wait = r->next;
		if (!sh->rd_wait)
			sh->rd_wait_tail = NULL;
		r->next = NULL;
		shard_req_read(sh, r);
	}
	while (sh->sub_wait && sh->rd_inflight < depth) {
		struct pe_sub *sub = sh->sub_wait;
		sh->sub_wait = sub->wnext;
		if (!sh->sub_wait)
			sh->sub_wait_tail = NULL;
		sub->wnext = NULL;
		sub->rd_waiting = false;
		if (!atomic_load(&sub->dead) && sub->attached && !sub->paused)
			sub_start(sh, sub);
	}
}

void hist_read_wait(struct shard *sh, struct req *r)
{
	r->next = NULL;
	if (sh->rd_wait_tail)
		sh->rd_wait_tail->next = r;
	else
		sh->rd_wait = r;
	sh->rd_wait_tail = r;
}

void hist_read_done(struct shard *sh, struct req *r)
{
	struct hread *h = r->out;
	struct part *p = &sh->e->parts[r->part];
	PARLEY_ASSERT(sh->rd_inflight > 0);
	sh->rd_inflight--;
	stage_hist_add(&sh->hist[PE_STAGE_READ_QUEUE], h->t_start - h->t_disp);
	stage_hist_add(&sh->hist[PE_STAGE_READ_IO], h->t_end - h->t_start);
	struct pe_read_result res = h->res;
	uint32_t n = 0;
	if (h->rc) {
		PLOG_E("engine", "history read failed", "partition=%u err=%s",
		       p->id, parley_errname(h->rc));
		res.err = h->rc;
	} else if (h->q.dir == PE_FORWARD) {
		n = h->hr.count;
		for (uint32_t i = 0; i < h->nmem && n < r->limit; i++)
			h->out[n++] = h->mem[i];
		res.end = n == 0 || h->out[n - 1].seq >= h->last_seq;
	} else {
		n = h->nmem + h->hr.count;
		res.end = n == 0 || h->out[n - 1].seq <= h->res.first_seq;
	}
	if (!res.err) {
		res.entries = h->out;
		res.count = n;
	}
	r->cb.read(r->arg, &res);
	hist_read_free(r);
	hist_read_kick(sh);
}

/* ---- tails catching up from history ------------------------------------------------ */

/* One chunk of a subscription's backlog below the memtable (log/sub.c):
 * the same snapshot as a read (the view; nothing from the memtable), the
 * entries handed to sub_hist_deliver on the shard. The subscription is
 * not freed while its chunk is out (pe_sub.free_pending). */
struct hsubread {
	struct rpool_job job;       /* first */
	struct req *done;           /* REQ_SUB_READ_DONE, out = this */
	struct pe_engine *e;
	struct pe_sub *sub;
	struct hpart_view *view;
	struct history_read_req q;  /* q.key points into sub->key */
	struct pe_entry *out;       /* q.limit entries */
	int rc;
	struct history_read_res hr;
	struct history_hold *hold;
	uint64_t t_disp, t_start, t_end;
};

static void hsub_free(struct hsubread *h)
{
	history_hold_free(h->hold);
	hpart_view_free(h->view);
	free(h->out);
	free(h->done);
	free(h);
}

static void hsub_run(struct rpool_job *j)
{
	struct hsubread *h = (struct hsubread *)j;
	h->t_start = parley_mono_ns();
	h->rc = hpart_view_read(h->view, &h->q, h->out, &h->hr, &h->hold);
	h->t_end = parley_mono_ns();
	h->done->out = h;
	PARLEY_ASSERT(shard_push(h->e, h->done) == 0); /* always gets through */
}

static void hsub_drop(struct rpool_job *j)
{
	hsub_free((struct hsubread *)j);
}

int hist_read_sub(struct shard *sh, struct pe_sub *sub, struct part *p,
		  struct stream *s, uint32_t want)
{
	struct hsubread *h = calloc(1, sizeof *h);
	struct req *d = calloc(1, sizeof *d);
	struct pe_entry *out = malloc(sizeof *out * want);
	int rc = h && d && out ? 0 : -PARLEY_ENOMEM;
	if (!rc)
		rc = hpart_view_get(p->hist, sub->key, sub->klen, &h->view);
	if (rc) {
		free(h);
		free(d);
		free(out);
		return rc;
	}
	d->kind = REQ_SUB_READ_DONE;
	d->part = sub->part;
	h->done = d;
	h->out = out;
	h->e = sh->e;
	h->sub = sub;
	h->q = (struct history_read_req){
		.key = sub->key, .klen = sub->klen, .from = sub->next_seq,
		.dir = PE_FORWARD, .limit = want, .below = s->mem_first,
		.first_retained = s->first_seq};
	h->job.run = hsub_run;
	h->job.drop = hsub_drop;
	h->t_disp = parley_mono_ns();
	sub->rd_flight = true;
	sh->rd_inflight++;
	rpool_push(&sh->e->rpool, &h->job, false);
	return 0;
}

void hist_read_sub_wait(struct shard *sh, struct pe_sub *sub)
{
	if (sub->rd_waiting)
		return;
	sub->rd_waiting = true;
	sub->wnext = NULL;
	if (sh->sub_wait_tail)
		sh->sub_wait_tail->wnext = sub;
	else
		sh->sub_wait = sub;
	sh->sub_wait_tail = sub;
}

void hist_read_sub_done(struct shard *sh, struct req *r)
{
	struct hsubread *h = r->out;
	PARLEY_ASSERT(sh->rd_inflight > 0);
	sh->rd_inflight--;
	stage_hist_add(&sh->hist[PE_STAGE_READ_QUEUE], h->t_start - h->t_disp);
	stage_hist_add(&sh->hist[PE_STAGE_READ_IO], h->t_end - h->t_start);
	sub_hist_deliver(sh, h->sub, h->rc, h->out, h->rc ? 0 : h->hr.count,
			 h->q.below);
	hsub_free(h); /* frees r (h->done) too */
	hist_read_kick(sh);
}
