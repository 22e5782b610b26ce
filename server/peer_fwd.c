/*
 * peer_fwd.c — forwarded engine appends (peer_fwd.h): the requesting side
 * (submission queue, per-destination wait lists with deadlines, an id
 * hash) and the executing side (pe_append on this node's engine, results
 * queued per source node), and the two batch codecs (pure, peer_fwd.h).
 *
 * Invariants:
 *   1. A submitted request is in exactly one place: the submission queue
 *      (under mu), a node's outgoing list while fwd_poll packs it, or a
 *      node's wait list + the id hash (node thread); it leaves through
 *      finish(), which runs its callback once and frees it.
 *   2. fnode.inflight counts a destination's requests between fwd_append
 *      and finish() (under mu): the bound of contract 4.
 *   3. Wait lists are in send order with one timeout, so deadlines are
 *      non-decreasing along a list: timeouts only look at heads.
 *
 * Ownership: requests are owned by the forwarder from fwd_append to
 * finish(); an executing-side context (struct fexec) is owned by its
 * pe_append until the callback, which queues the result and frees it.
 * Threads: see peer_fwd.h.
 */
#include "peer_fwd.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"
#include "peer.h"

#define HASH_BUCKETS 8192u /* power of two */
/* a record's bytes besides its key (and an append's entries) */
#define REQ_FIXED (4u + 8u + 1u + 1u + 16u + 8u + 2u) /* append */
#define REQ_DEL_FIXED (4u + 8u + 1u + 1u + 8u)        /* delete */
#define OP_APPEND FWD_OP_APPEND
#define OP_DELETE FWD_OP_DELETE

struct freq {
	struct freq *next, *prev; /* submission queue / outgoing / wait list */
	struct freq *hnext;       /* id hash chain (node thread) */
	uint64_t id, to, deadline, t_sent;
	uint8_t op;               /* OP_APPEND / OP_DELETE */
	pe_append_cb cb;          /* OP_APPEND */
	pe_delete_cb dcb;         /* OP_DELETE */
	void *arg;
	uint32_t len; /* rec bytes (incl. its u32 length) */
	uint8_t rec[];
};

struct fnode {
	uint64_t id;
	uint32_t inflight;          /* under mu (invariant 2) */
	struct freq *wh, *wt;       /* wait list (node thread) */
	struct freq *oh, *ot;       /* outgoing, during fwd_poll */
	uint8_t *res;               /* results to send (under mu) */
	size_t res_len, res_cap;
};

struct fwd {
	struct fwd_config cfg;
	pthread_mutex_t mu;
	struct freq *qh, *qt;       /* submitted (under mu) */
	struct fnode nodes[FWD_MAX_NODES];
	uint32_t nn;                /* under mu */
	bool res_any;               /* some node has results (under mu) */
	bool closed;                /* under mu */
	uint64_t next_id;           /* under mu */
	struct freq **hash;         /* node thread */
	_Atomic(struct pe_engine *) e;
	uint8_t *buf;               /* node thread: a frame being built */
	size_t buf_cap;
	_Atomic uint64_t st_sent, st_answered, st_timeouts, st_link_failed,
		st_late, st_executed, st_bad, st_lat_sum, st_lat_max;
	_Atomic uint32_t pending;
};

struct fexec {
	struct fwd *f;
	uint64_t from, id;
};

#define ADD(x, n) atomic_fetch_add_explicit(&(x), (n), memory_order_relaxed)

/* ---- helpers ------------------------------------------------------------ */

/* Under mu. NULL when the table is full (FWD_MAX_NODES). */
static struct fnode *node_get(struct fwd *f, uint64_t id)
{
	for (uint32_t i = 0; i < f->nn; i++)
		if (f->nodes[i].id == id)
			return &f->nodes[i];
	if (f->nn >= FWD_MAX_NODES)
		return NULL;
	struct fnode *n = &f->nodes[f->nn++];
	memset(n, 0, sizeof *n);
	n->id = id;
	return n;
}

static uint32_t hslot(uint64_t id)
{
	return (uint32_t)(id * 0x9e3779b97f4a7c15ull >> 40) & (HASH_BUCKETS - 1);
}

static void hash_put(struct fwd *f, struct freq *r)
{
	uint32_t s = hslot(r->id);
	r->hnext = f->hash[s];
	f->hash[s] = r;
}

static struct freq *hash_take(struct fwd *f, uint64_t id)
{
	for (struct freq **pp = &f->hash[hslot(id)]; *pp; pp = &(*pp)->hnext)
		if ((*pp)->id == id) {
			struct freq *r = *pp;
			*pp = r->hnext;
			return r;
		}
	return NULL;
}

static void wait_unlink(struct fnode *n, struct freq *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		n->wh = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		n->wt = r->prev;
	r->next = r->prev = NULL;
}

/* Invariant 1: the one way out. Node thread (or fwd_free). */
static void finish(struct fwd *f, struct freq *r, const struct fwd_res *x)
{
	pthread_mutex_lock(&f->mu);
	struct fnode *n = node_get(f, r->to);
	PARLEY_ASSERT(n && n->inflight > 0);
	n->inflight--;
	pthread_mutex_unlock(&f->mu);
	atomic_fetch_sub_explicit(&f->pending, 1, memory_order_relaxed);
	if (r->op == OP_DELETE) {
		struct pe_delete_result d = {.err = x->err, .first_seq = x->seq,
					     .last_seq = x->last_seq,
					     .leader = x->leader};
		r->dcb(r->arg, &d);
	} else {
		struct pe_append_result a = {.err = x->err, .seq = x->seq,
					     .count = x->count, .ts_ms = x->ts_ms,
					     .last_seq = x->last_seq,
					     .duplicate = x->duplicate,
					     .leader = x->leader};
		r->cb(r->arg, &a);
	}
	free(r);
}

static void fail(struct fwd *f, struct freq *r, int err)
{
	struct fwd_res x = {.err = err};
	finish(f, r, &x);
}

static bool buf_need(struct fwd *f, size_t n)
{
	if (n <= f->buf_cap)
		return true;
	size_t cap = f->buf_cap ? f->buf_cap : 4096;
	while (cap < n)
		cap *= 2;
	uint8_t *b = realloc(f->buf, cap);
	if (!b)
		return false;
	f->buf = b;
	f->buf_cap = cap;
	return true;
}

/* ---- codecs ------------------------------------------------------------- */

size_t fwd_rec_size(const struct fwd_rec *r)
{
	if (r->op == OP_DELETE)
		return REQ_DEL_FIXED + r->q.klen;
	size_t len = REQ_FIXED + r->q.klen;
	for (uint32_t i = 0; i < r->q.count; i++)
		len += 8u + r->q.entries[i].len;
	return len;
}

void fwd_rec_encode(uint8_t *out, const struct fwd_rec *r)
{
	size_t len = fwd_rec_size(r);
	le_put32(out, (uint32_t)len - 4);
	le_put64(out + 4, r->id);
	out[12] = r->op;
	out[13] = (uint8_t)r->q.klen;
	memcpy(out + 14, r->q.key, r->q.klen);
	uint8_t *p = out + 14 + r->q.klen;
	if (r->op == OP_DELETE) {
		le_put64(p, r->through);
		return;
	}
	memcpy(p, r->q.producer, 16);
	le_put64(p + 16, r->q.expected_last_seq);
	le_put16(p + 24, (uint16_t)r->q.count);
	p += 26;
	for (uint32_t i = 0; i < r->q.count; i++) {
		const struct pe_input *in = &r->q.entries[i];
		le_put16(p, in->type);
		le_put16(p + 2, in->flags);
		le_put32(p + 4, in->len);
		if (in->len)
			memcpy(p + 8, in->payload, in->len);
		p += 8u + in->len;
	}
	PARLEY_ASSERT((size_t)(p - out) == len);
}

int fwd_rec_decode(const uint8_t *p, size_t len, struct fwd_rec *r,
		   struct pe_input in[PE_MAX_BATCH])
{
	memset(r, 0, sizeof *r);
	if (len < REQ_DEL_FIXED - 4)
		return -PARLEY_EPROTO;
	r->id = le_get64(p);
	r->op = p[8];
	size_t klen = p[9];
	r->q.key = p + 10;
	r->q.klen = klen;
	if (r->op == OP_DELETE) {
		if (klen == 0 || len != REQ_DEL_FIXED - 4 + klen)
			return -PARLEY_EPROTO;
		r->through = le_get64(p + 10 + klen);
		return 0;
	}
	if (r->op != OP_APPEND || klen == 0 || len < REQ_FIXED - 4 + klen)
		return -PARLEY_EPROTO;
	const uint8_t *x = p + 10 + klen;
	memcpy(r->q.producer, x, 16);
	r->q.expected_last_seq = le_get64(x + 16);
	r->q.count = le_get16(x + 24);
	x += 26;
	const uint8_t *end = p + len;
	if (r->q.count == 0 || r->q.count > PE_MAX_BATCH)
		return -PARLEY_EPROTO;
	for (uint32_t i = 0; i < r->q.count; i++) {
		if ((size_t)(end - x) < 8)
			return -PARLEY_EPROTO;
		in[i].type = le_get16(x);
		in[i].flags = le_get16(x + 2);
		in[i].len = le_get32(x + 4);
		if ((size_t)(end - x - 8) < in[i].len)
			return -PARLEY_EPROTO;
		in[i].payload = x + 8;
		x += 8u + in[i].len;
	}
	if (x != end)
		return -PARLEY_EPROTO;
	r->q.entries = in;
	return 0;
}

void fwd_res_encode(uint8_t out[FWD_RES_BYTES], uint64_t id,
		    const struct fwd_res *r)
{
	le_put64(out, id);
	le_put32(out + 8, (uint32_t)r->err);
	le_put64(out + 12, r->seq);
	le_put32(out + 20, r->count);
	le_put64(out + 24, r->ts_ms);
	le_put64(out + 32, r->last_seq);
	out[40] = r->duplicate ? 1 : 0;
	le_put64(out + 41, r->leader);
}

void fwd_res_decode(const uint8_t b[FWD_RES_BYTES], uint64_t *id,
		    struct fwd_res *r)
{
	*id = le_get64(b);
	*r = (struct fwd_res){.err = (int32_t)le_get32(b + 8),
			      .seq = le_get64(b + 12),
			      .count = le_get32(b + 20),
			      .ts_ms = le_get64(b + 24),
			      .last_seq = le_get64(b + 32),
			      .duplicate = b[40] != 0,
			      .leader = le_get64(b + 41)};
}

int fwd_res_count(const uint8_t *p, uint32_t len)
{
	if (len < 4 || (len - 4) % FWD_RES_BYTES ||
	    (len - 4) / FWD_RES_BYTES != le_get32(p))
		return -PARLEY_EPROTO;
	return (int)le_get32(p);
}

/* ---- lifecycle ---------------------------------------------------------- */

int fwd_new(const struct fwd_config *cfg, struct fwd **out)
{
	if (!cfg->self || !cfg->send || !cfg->wake)
		return -PARLEY_EINVAL;
	struct fwd *f = calloc(1, sizeof *f);
	if (!f)
		return -PARLEY_ENOMEM;
	f->cfg = *cfg;
	if (!f->cfg.timeout_ms)
		f->cfg.timeout_ms = FWD_TIMEOUT_MS;
	if (!f->cfg.max_frame)
		f->cfg.max_frame = 4u << 20;
	f->hash = calloc(HASH_BUCKETS, sizeof *f->hash);
	if (!f->hash) {
		free(f);
		return -PARLEY_ENOMEM;
	}
	pthread_mutex_init(&f->mu, NULL);
	*out = f;
	return 0;
}

void fwd_free(struct fwd *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->closed = true;
	struct freq *q = f->qh;
	f->qh = f->qt = NULL;
	pthread_mutex_unlock(&f->mu);
	while (q) {
		struct freq *nx = q->next;
		fail(f, q, -PARLEY_ECLOSED);
		q = nx;
	}
	for (uint32_t i = 0; i < f->nn; i++) {
		struct fnode *n = &f->nodes[i];
		while (n->wh) {
			struct freq *r = n->wh;
			wait_unlink(n, r);
			(void)hash_take(f, r->id);
			fail(f, r, -PARLEY_ECLOSED);
		}
		free(n->res);
	}
	pthread_mutex_destroy(&f->mu);
	free(f->hash);
	free(f->buf);
	free(f);
}

void fwd_set_engine(struct fwd *f, struct pe_engine *e)
{
	atomic_store(&f->e, e);
}

/* ---- requesting side ---------------------------------------------------- */

static int submit(struct fwd *f, struct freq *r);

/* A request carrying record q (its id, at 4, set under mu by submit) to
 * node `to`, or ECLOSED when `to` is this node, none, or not up. */
static int freq_new(struct fwd *f, uint64_t to, const struct fwd_rec *q,
		    void *arg, struct freq **out)
{
	if (!to || to == f->cfg.self || (f->cfg.up && !f->cfg.up(f->cfg.arg, to)))
		return -PARLEY_ECLOSED;
	size_t len = fwd_rec_size(q);
	struct freq *r = malloc(sizeof *r + len);
	if (!r)
		return -PARLEY_ENOMEM;
	memset(r, 0, sizeof *r);
	r->to = to;
	r->op = q->op;
	r->arg = arg;
	r->len = (uint32_t)len;
	fwd_rec_encode(r->rec, q);
	*out = r;
	return 0;
}

int fwd_append(struct fwd *f, uint64_t to, const struct pe_append_req *q,
	       pe_append_cb cb, void *arg)
{
	if (!q || !cb || !q->entries || q->klen == 0 || q->klen > PE_MAX_KEY)
		return -PARLEY_EINVAL;
	if (!pe_append_fits(q->klen, q->entries, q->count))
		return -PARLEY_ETOOBIG;
	struct fwd_rec rec = {.op = OP_APPEND, .q = *q};
	if (fwd_rec_size(&rec) + 4 > f->cfg.max_frame)
		return -PARLEY_ETOOBIG;
	struct freq *r = NULL;
	int rc = freq_new(f, to, &rec, arg, &r);
	if (rc)
		return rc;
	r->cb = cb;
	return submit(f, r);
}

int fwd_delete(struct fwd *f, uint64_t to, const void *key, size_t klen,
	       uint64_t through, pe_delete_cb cb, void *arg)
{
	if (!key || !cb || klen == 0 || klen > PE_MAX_KEY)
		return -PARLEY_EINVAL;
	struct fwd_rec rec = {.op = OP_DELETE, .q = {.key = key, .klen = klen},
			      .through = through};
	struct freq *r = NULL;
	int rc = freq_new(f, to, &rec, arg, &r);
	if (rc)
		return rc;
	r->dcb = cb;
	return submit(f, r);
}

/* Queues r (a record with its id still unset) for its destination. */
static int submit(struct fwd *f, struct freq *r)
{
	uint64_t to = r->to;
	pthread_mutex_lock(&f->mu);
	struct fnode *n = f->closed ? NULL : node_get(f, to);
	if (!n || n->inflight >= FWD_MAX_INFLIGHT) {
		int rc = n ? -PARLEY_EFULL : -PARLEY_ECLOSED;
		pthread_mutex_unlock(&f->mu);
		free(r);
		return rc;
	}
	n->inflight++;
	r->id = ++f->next_id;
	le_put64(r->rec + 4, r->id);
	bool was_empty = !f->qh;
	if (f->qt)
		f->qt->next = r;
	else
		f->qh = r;
	f->qt = r;
	pthread_mutex_unlock(&f->mu);
	atomic_fetch_add_explicit(&f->pending, 1, memory_order_relaxed);
	if (was_empty)
		f->cfg.wake(f->cfg.arg);
	return 0;
}

/* Packs and sends n's outgoing list (in order) as frames of at most
 * FWD_FRAME_BYTES (one request per frame at least). */
static void send_outgoing(struct fwd *f, struct fnode *n, uint64_t now_ms)
{
	while (n->oh) {
		size_t bytes = 4;
		uint32_t cnt = 0;
		struct freq *end = n->oh;
		while (end && (cnt == 0 || bytes + end->len <= FWD_FRAME_BYTES)) {
			bytes += end->len;
			cnt++;
			end = end->next;
		}
		int rc = buf_need(f, bytes) ? 0 : -PARLEY_ENOMEM;
		if (!rc) {
			le_put32(f->buf, cnt);
			size_t off = 4;
			for (struct freq *r = n->oh; r != end; r = r->next) {
				memcpy(f->buf + off, r->rec, r->len);
				off += r->len;
			}
			rc = f->cfg.send(f->cfg.arg, n->id, PEER_FRAME_APPEND_REQ,
					 f->buf, (uint32_t)bytes);
		}
		uint64_t t = parley_mono_ns();
		while (n->oh != end) {
			struct freq *r = n->oh;
			n->oh = r->next;
			r->next = r->prev = NULL;
			if (rc) {
				ADD(f->st_link_failed, 1);
				fail(f, r, -PARLEY_EAGAIN);
				continue;
			}
			r->deadline = now_ms + f->cfg.timeout_ms;
			r->t_sent = t;
			r->prev = n->wt;
			if (n->wt)
				n->wt->next = r;
			else
				n->wh = r;
			n->wt = r;
			hash_put(f, r);
			ADD(f->st_sent, 1);
		}
	}
	n->ot = NULL;
}

/* Sends the executing side's results queued for n (already taken). */
static void send_results(struct fwd *f, uint64_t to, const uint8_t *res,
			 size_t len)
{
	const size_t per = FWD_FRAME_BYTES / FWD_RES_BYTES;
	for (size_t off = 0; off < len;) {
		size_t cnt = (len - off) / FWD_RES_BYTES;
		if (cnt > per)
			cnt = per;
		size_t bytes = 4 + cnt * FWD_RES_BYTES;
		if (!buf_need(f, bytes))
			return; /* the requester times out */
		le_put32(f->buf, (uint32_t)cnt);
		memcpy(f->buf + 4, res + off, cnt * FWD_RES_BYTES);
		/* a link down or full: dropped, the requester fails them */
		(void)f->cfg.send(f->cfg.arg, to, PEER_FRAME_APPEND_RES, f->buf,
				  (uint32_t)bytes);
		off += cnt * FWD_RES_BYTES;
	}
}

void fwd_poll(struct fwd *f, uint64_t now_ms)
{
	pthread_mutex_lock(&f->mu);
	struct freq *q = f->qh;
	f->qh = f->qt = NULL;
	uint32_t nn = f->nn;
	bool res_any = f->res_any;
	f->res_any = false;
	pthread_mutex_unlock(&f->mu);
	/* requests: to their destinations' outgoing lists, in order */
	while (q) {
		struct freq *nx = q->next;
		q->next = NULL;
		struct fnode *n = NULL;
		for (uint32_t i = 0; i < nn && !n; i++)
			if (f->nodes[i].id == q->to)
				n = &f->nodes[i];
		PARLEY_ASSERT(n); /* made by fwd_append */
		if (n->ot)
			n->ot->next = q;
		else
			n->oh = q;
		n->ot = q;
		q = nx;
	}
	for (uint32_t i = 0; i < nn; i++) {
		struct fnode *n = &f->nodes[i];
		if (n->oh)
			send_outgoing(f, n, now_ms);
		if (res_any) {
			pthread_mutex_lock(&f->mu);
			uint8_t *res = n->res;
			size_t len = n->res_len;
			n->res = NULL;
			n->res_len = n->res_cap = 0;
			pthread_mutex_unlock(&f->mu);
			if (res)
				send_results(f, n->id, res, len);
			free(res);
		}
		/* invariant 3: deadlines only at the heads */
		while (n->wh && n->wh->deadline <= now_ms) {
			struct freq *r = n->wh;
			wait_unlink(n, r);
			(void)hash_take(f, r->id);
			ADD(f->st_timeouts, 1);
			fail(f, r, -PARLEY_EAGAIN);
		}
	}
}

void fwd_link_down(struct fwd *f, uint64_t node)
{
	pthread_mutex_lock(&f->mu);
	uint32_t nn = f->nn;
	pthread_mutex_unlock(&f->mu);
	for (uint32_t i = 0; i < nn; i++) {
		struct fnode *n = &f->nodes[i];
		if (n->id != node)
			continue;
		while (n->wh) {
			struct freq *r = n->wh;
			wait_unlink(n, r);
			(void)hash_take(f, r->id);
			ADD(f->st_link_failed, 1);
			fail(f, r, -PARLEY_EAGAIN);
		}
	}
}

/* ---- executing side ----------------------------------------------------- */

/* Queues one result for node `to` (any thread). */
static void res_push(struct fwd *f, uint64_t to, uint64_t id,
		     const struct fwd_res *r)
{
	uint8_t b[FWD_RES_BYTES];
	fwd_res_encode(b, id, r);
	bool wake = false;
	pthread_mutex_lock(&f->mu);
	struct fnode *n = f->closed ? NULL : node_get(f, to);
	if (n && n->res_len + FWD_RES_BYTES > n->res_cap) {
		size_t cap = n->res_cap ? n->res_cap * 2 : 64 * FWD_RES_BYTES;
		uint8_t *nb = realloc(n->res, cap);
		if (nb) {
			n->res = nb;
			n->res_cap = cap;
		}
	}
	if (n && n->res_len + FWD_RES_BYTES <= n->res_cap) {
		memcpy(n->res + n->res_len, b, FWD_RES_BYTES);
		n->res_len += FWD_RES_BYTES;
		wake = !f->res_any;
		f->res_any = true;
	} /* else: out of memory or stopping; the requester times out */
	pthread_mutex_unlock(&f->mu);
	if (wake)
		f->cfg.wake(f->cfg.arg);
}

static void exec_cb(void *arg, const struct pe_append_result *r)
{
	struct fexec *x = arg;
	struct fwd_res v = {.err = r->err, .seq = r->seq, .ts_ms = r->ts_ms,
			 .last_seq = r->last_seq, .leader = r->leader,
			 .count = r->count, .duplicate = r->duplicate};
	res_push(x->f, x->from, x->id, &v);
	free(x);
}

static void exec_del_cb(void *arg, const struct pe_delete_result *r)
{
	struct fexec *x = arg;
	struct fwd_res v = {.err = r->err, .seq = r->first_seq,
			 .last_seq = r->last_seq, .leader = r->leader};
	res_push(x->f, x->from, x->id, &v);
	free(x);
}

/* A forwarded delete: pe_delete on this node's engine (never forwarded
 * again), answered from its callback or at once when refused. */
static int exec_delete(struct fwd *f, uint64_t from, uint64_t id,
		       const uint8_t *key, size_t klen, uint64_t through)
{
	ADD(f->st_executed, 1);
	struct pe_engine *e = atomic_load(&f->e);
	struct fexec *c = e ? malloc(sizeof *c) : NULL;
	int rc = c ? 0 : -PARLEY_EAGAIN;
	if (c) {
		*c = (struct fexec){f, from, id};
		rc = pe_delete(e, key, klen, through, exec_del_cb, c);
		if (rc)
			free(c);
	}
	if (rc) {
		struct fwd_res r = {.err = rc};
		res_push(f, from, id, &r);
	}
	return 0;
}

/* One REQ record at p[0..len) (after its u32 length). */
static int exec_one(struct fwd *f, uint64_t from, const uint8_t *p,
		    size_t len, struct pe_input *in)
{
	struct fwd_rec rec;
	if (fwd_rec_decode(p, len, &rec, in))
		return -PARLEY_EPROTO;
	if (rec.op == OP_DELETE)
		return exec_delete(f, from, rec.id, rec.q.key, rec.q.klen,
				   rec.through);
	uint64_t id = rec.id;
	ADD(f->st_executed, 1);
	struct pe_engine *e = atomic_load(&f->e);
	struct fexec *c = e ? malloc(sizeof *c) : NULL;
	int rc = c ? 0 : -PARLEY_EAGAIN;
	if (c) {
		*c = (struct fexec){f, from, id};
		/* never forwarded again: this node's own engine answers
		 * NOTLEADER if it no longer leads (contract 2) */
		rc = pe_append(e, &rec.q, exec_cb, c);
		if (rc)
			free(c);
	}
	if (rc) {
		struct fwd_res r = {.err = rc};
		res_push(f, from, id, &r);
	}
	return 0;
}

static void on_req(struct fwd *f, uint64_t from, const uint8_t *p,
		   uint32_t len)
{
	static _Thread_local struct pe_input in[PE_MAX_BATCH];
	if (len < 4)
		goto bad;
	uint32_t n = le_get32(p);
	size_t off = 4;
	for (uint32_t i = 0; i < n; i++) {
		if (len - off < 4)
			goto bad;
		uint32_t rl = le_get32(p + off);
		if (len - off - 4 < rl)
			goto bad;
		if (exec_one(f, from, p + off + 4, rl, in))
			goto bad;
		off += 4u + rl;
	}
	if (off != len)
		goto bad;
	return;
bad:
	/* records before the bad one were executed and are answered */
	ADD(f->st_bad, 1);
	PLOG_W("cluster", "bad forwarded-append frame ignored",
	       "node=%" PRIu64 " bytes=%u", from, len);
}

static void on_res(struct fwd *f, uint64_t from, const uint8_t *p,
		   uint32_t len)
{
	int cnt = fwd_res_count(p, len);
	if (cnt < 0) {
		ADD(f->st_bad, 1);
		PLOG_W("cluster", "bad forwarded-append result frame ignored",
		       "node=%" PRIu64 " bytes=%u", from, len);
		return;
	}
	uint32_t n = (uint32_t)cnt;
	pthread_mutex_lock(&f->mu);
	struct fnode *nd = NULL;
	for (uint32_t i = 0; i < f->nn && !nd; i++)
		if (f->nodes[i].id == from)
			nd = &f->nodes[i];
	pthread_mutex_unlock(&f->mu);
	uint64_t t = parley_mono_ns();
	for (uint32_t i = 0; i < n; i++) {
		uint64_t id;
		struct fwd_res res;
		fwd_res_decode(p + 4 + (size_t)i * FWD_RES_BYTES, &id, &res);
		struct freq *r = hash_take(f, id);
		if (!r || r->to != from || !nd) {
			if (r) /* not ours to answer: put it back */
				hash_put(f, r);
			ADD(f->st_late, 1);
			continue;
		}
		wait_unlink(nd, r);
		/* the leader had no room: a retry may succeed (contract 2) */
		if (res.err == -PARLEY_EFULL || res.err == -PARLEY_ENOMEM ||
		    res.err == -PARLEY_ECLOSED)
			res.err = -PARLEY_EAGAIN;
		uint64_t lat = t - r->t_sent;
		ADD(f->st_lat_sum, lat);
		uint64_t mx = atomic_load(&f->st_lat_max);
		while (lat > mx &&
		       !atomic_compare_exchange_weak(&f->st_lat_max, &mx, lat))
			;
		ADD(f->st_answered, 1);
		finish(f, r, &res);
	}
}

void fwd_on_frame(struct fwd *f, uint64_t from, uint8_t type,
		  const uint8_t *payload, uint32_t len, uint64_t now_ms)
{
	(void)now_ms;
	if (type == PEER_FRAME_APPEND_REQ)
		on_req(f, from, payload, len);
	else if (type == PEER_FRAME_APPEND_RES)
		on_res(f, from, payload, len);
	else
		ADD(f->st_bad, 1);
}

void fwd_get_stats(struct fwd *f, struct fwd_stats *o)
{
	o->sent = atomic_load(&f->st_sent);
	o->answered = atomic_load(&f->st_answered);
	o->timeouts = atomic_load(&f->st_timeouts);
	o->link_failed = atomic_load(&f->st_link_failed);
	o->late = atomic_load(&f->st_late);
	o->executed = atomic_load(&f->st_executed);
	o->bad_frames = atomic_load(&f->st_bad);
	o->lat_ns_sum = atomic_load(&f->st_lat_sum);
	o->lat_ns_max = atomic_load(&f->st_lat_max);
}

uint32_t fwd_pending(struct fwd *f)
{
	return atomic_load(&f->pending);
}
