/*
 * chat.c — the chat model on engine streams: keys, stored records,
 * idempotency keys, the fan-out planner, and the recoverable fan-out service.
 * See chat.h for the stream layout, the fan-out watermark and why inbox
 * order follows conversation order.
 *
 * Invariants
 *   1. A fan-out job is on `c->jobs` from chat_fanout_submit() until every
 *      append of its plan has completed (successfully or not): the
 *      watermark never passes the ts of a job still on the list.
 *   2. The watermark written to s/fanout never decreases.
 *   3. The fan-out thread issues the appends of job N before those of job
 *      N+1 (FIFO), retrying -PARLEY_EFULL in place.
 *
 * Ownership: jobs are malloc'd by chat_fanout_submit, owned by the list,
 * freed by the last append callback (any shard thread) under c->mu.
 * Threads: see chat.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "parley_proto.h"

/* ---- keys ------------------------------------------------------------------ */

static int key_make(char *out, const char *pfx, const char *a, size_t alen,
		    const char *b, size_t blen)
{
	size_t pl = strlen(pfx);
	size_t n = pl + alen + (b ? 1 + blen : 0);
	if (n > PE_MAX_KEY)
		return -PARLEY_EINVAL;
	memcpy(out, pfx, pl);
	memcpy(out + pl, a, alen);
	if (b) {
		out[pl + alen] = ':';
		memcpy(out + pl + alen + 1, b, blen);
	}
	out[n] = '\0';
	return (int)n;
}

int chat_key_conv(char *out, const char *conv, size_t len)
{
	if (len < 1 || len > 250)
		return -PARLEY_EINVAL;
	return key_make(out, "c/", conv, len, NULL, 0);
}

int chat_key_inbox(char *out, const char *user, size_t len)
{
	if (!parley_proto_user_id_valid(user, len))
		return -PARLEY_EINVAL;
	return key_make(out, "u/", user, len, NULL, 0);
}

int chat_key_list(char *out, const char *user, size_t len)
{
	if (!parley_proto_user_id_valid(user, len))
		return -PARLEY_EINVAL;
	return key_make(out, "l/", user, len, NULL, 0);
}

int chat_key_cursor(char *out, const char *user, size_t ulen,
		    const char *device, size_t dlen)
{
	/* user ids contain no ':', so "<user>:<device>" is unambiguous */
	if (!parley_proto_user_id_valid(user, ulen) || dlen < 1 || dlen > 64)
		return -PARLEY_EINVAL;
	return key_make(out, "k/", user, ulen, device, dlen);
}

/* ---- conversations ------------------------------------------------------------ */

int chat_conv_members(const char *conv, size_t len, struct chat_member out[2])
{
	if (len < 5 || conv[0] != 'd' || conv[1] != ':')
		return -PARLEY_ENOTFOUND;
	const char *a = conv + 2;
	const char *colon = memchr(a, ':', len - 2);
	if (!colon)
		return -PARLEY_ENOTFOUND;
	size_t alen = (size_t)(colon - a);
	const char *b = colon + 1;
	size_t blen = len - 3 - alen;
	/* Canonical form only: rebuilding the id must give the same bytes, so
	 * "d:bob:alice" (wrong order) or ids with bad users are not found. */
	char canon[256];
	int n = parley_proto_dm_conv_id(a, alen, b, blen, canon, sizeof canon);
	if (n < 0 || (size_t)n != len || memcmp(canon, conv, len) != 0)
		return -PARLEY_ENOTFOUND;
	out[0] = (struct chat_member){a, alen};
	out[1] = (struct chat_member){b, blen};
	return 2;
}

bool chat_conv_has_member(const char *conv, size_t len, const char *user,
			  size_t ulen)
{
	struct chat_member m[2];
	int n = chat_conv_members(conv, len, m);
	for (int i = 0; i < n; i++)
		if (m[i].len == ulen && memcmp(m[i].p, user, ulen) == 0)
			return true;
	return false;
}

/* ---- records -------------------------------------------------------------------- */

int chat_msg_encode(uint8_t *buf, size_t cap, const struct chat_msg *m)
{
	size_t n = 1 + 2 + m->sender_len + 16 + 2 + 4 + (size_t)m->body_len;
	if (!buf)
		return (int)n;
	if (cap < n)
		return -PARLEY_ETOOBIG;
	uint8_t *p = buf;
	*p++ = CHAT_REC_VERSION;
	le_put16(p, m->sender_len);
	p += 2;
	memcpy(p, m->sender, m->sender_len);
	p += m->sender_len;
	memcpy(p, m->client_msg_id, 16);
	p += 16;
	le_put16(p, m->content_type);
	p += 2;
	le_put32(p, m->body_len);
	p += 4;
	if (m->body_len)
		memcpy(p, m->body, m->body_len);
	return (int)n;
}

int chat_msg_decode(const uint8_t *p, size_t len, struct chat_msg *out)
{
	struct le_reader r;
	le_reader_init(&r, p, len);
	if (le_read8(&r) != CHAT_REC_VERSION)
		return -PARLEY_ECORRUPT;
	out->sender_len = le_read16(&r);
	out->sender = (const char *)le_read_bytes(&r, out->sender_len);
	const uint8_t *id = le_read_bytes(&r, 16);
	if (id)
		memcpy(out->client_msg_id, id, 16);
	out->content_type = le_read16(&r);
	out->body_len = le_read32(&r);
	out->body = le_read_bytes(&r, out->body_len);
	return r.ok ? 0 : -PARLEY_ECORRUPT;
}

int chat_ptr_encode(uint8_t *buf, size_t cap, const struct chat_ptr *x)
{
	size_t n = 1 + 2 + 2 + x->conv_len + 8;
	if (x->conv_len > 250)
		return -PARLEY_EINVAL;
	if (cap < n)
		return -PARLEY_ETOOBIG;
	buf[0] = CHAT_REC_VERSION;
	le_put16(buf + 1, x->kind);
	le_put16(buf + 3, x->conv_len);
	memcpy(buf + 5, x->conv, x->conv_len);
	le_put64(buf + 5 + x->conv_len, x->conv_seq);
	return (int)n;
}

int chat_ptr_decode(const uint8_t *p, size_t len, struct chat_ptr *out)
{
	struct le_reader r;
	le_reader_init(&r, p, len);
	if (le_read8(&r) != CHAT_REC_VERSION)
		return -PARLEY_ECORRUPT;
	out->kind = le_read16(&r);
	out->conv_len = le_read16(&r);
	out->conv = (const char *)le_read_bytes(&r, out->conv_len);
	out->conv_seq = le_read64(&r);
	return r.ok ? 0 : -PARLEY_ECORRUPT;
}

int chat_list_encode(uint8_t *buf, size_t cap, const char *conv, size_t len)
{
	if (len > 250)
		return -PARLEY_EINVAL;
	if (cap < 3 + len)
		return -PARLEY_ETOOBIG;
	buf[0] = CHAT_REC_VERSION;
	le_put16(buf + 1, (uint16_t)len);
	memcpy(buf + 3, conv, len);
	return (int)(3 + len);
}

int chat_list_decode(const uint8_t *p, size_t len, const char **conv,
		     uint16_t *conv_len)
{
	struct le_reader r;
	le_reader_init(&r, p, len);
	if (le_read8(&r) != CHAT_REC_VERSION)
		return -PARLEY_ECORRUPT;
	*conv_len = le_read16(&r);
	*conv = (const char *)le_read_bytes(&r, *conv_len);
	return r.ok ? 0 : -PARLEY_ECORRUPT;
}

/* ---- producer ids ---------------------------------------------------------------- */

/* 128-bit key from two xxh3-64 with distinct seeds over a domain-separated
 * input (tag byte first), so the three kinds of key can never collide. */
static void producer_of(uint8_t out[16], const uint8_t *in, size_t len)
{
	le_put64(out, parley_xxh3(in, len, 0x7061726c65792d31ull));
	le_put64(out + 8, parley_xxh3(in, len, 0x6368617466616e6full));
}

void chat_producer_send(uint8_t out[16], const char *sender, size_t slen,
			const uint8_t client_msg_id[16])
{
	uint8_t in[1 + 2 + 255 + 16];
	PARLEY_ASSERT(slen <= 255);
	in[0] = 'S';
	le_put16(in + 1, (uint16_t)slen);
	memcpy(in + 3, sender, slen);
	memcpy(in + 3 + slen, client_msg_id, 16);
	producer_of(out, in, 3 + slen + 16);
}

void chat_producer_fanout(uint8_t out[16], const char *conv, size_t len,
			  uint64_t seq)
{
	uint8_t in[1 + 2 + 255 + 8];
	PARLEY_ASSERT(len <= 255);
	in[0] = 'F';
	le_put16(in + 1, (uint16_t)len);
	memcpy(in + 3, conv, len);
	le_put64(in + 3 + len, seq);
	producer_of(out, in, 3 + len + 8);
}

void chat_producer_list(uint8_t out[16], const char *conv, size_t len)
{
	uint8_t in[1 + 2 + 255];
	PARLEY_ASSERT(len <= 255);
	in[0] = 'L';
	le_put16(in + 1, (uint16_t)len);
	memcpy(in + 3, conv, len);
	producer_of(out, in, 3 + len);
}

/* ---- planner -------------------------------------------------------------------- */

static int plan_lists(const char *conv, size_t len,
		      const struct chat_member *m, int nm,
		      struct chat_fanout_plan *out)
{
	for (int i = 0; i < nm; i++) {
		struct chat_fanout_item *it = &out->item[out->n];
		int kl = chat_key_list(it->key, m[i].p, m[i].len);
		int pl = chat_list_encode(it->payload, sizeof it->payload, conv, len);
		if (kl < 0 || pl < 0)
			return -PARLEY_EINVAL;
		it->klen = (uint8_t)kl;
		it->len = (uint16_t)pl;
		it->type = CHAT_ENT_LIST;
		chat_producer_list(it->producer, conv, len);
		out->n++;
	}
	return 0;
}

int chat_fanout_plan(const char *conv, size_t len, uint64_t seq,
		     struct chat_fanout_plan *out)
{
	struct chat_member m[2];
	int nm = chat_conv_members(conv, len, m);
	memset(out, 0, sizeof *out); /* byte-for-byte deterministic output */
	if (nm < 0)
		return nm;
	if (seq == 0)
		return -PARLEY_EINVAL;
	/* List entries first: by the time a device sees the message, the
	 * conversation is already in its user's list. */
	if (seq == 1) {
		int rc = plan_lists(conv, len, m, nm, out);
		if (rc)
			return rc;
	}
	for (int i = 0; i < nm; i++) {
		struct chat_fanout_item *it = &out->item[out->n];
		int kl = chat_key_inbox(it->key, m[i].p, m[i].len);
		struct chat_ptr p = {.kind = 1 /* PARLEY_EV_MESSAGE */,
				     .conv = conv, .conv_len = (uint16_t)len,
				     .conv_seq = seq};
		int pl = chat_ptr_encode(it->payload, sizeof it->payload, &p);
		if (kl < 0 || pl < 0)
			return -PARLEY_EINVAL;
		it->klen = (uint8_t)kl;
		it->len = (uint16_t)pl;
		it->type = CHAT_ENT_PTR;
		chat_producer_fanout(it->producer, conv, len, seq);
		out->n++;
	}
	return 0;
}

int chat_list_plan(const char *conv, size_t len, struct chat_fanout_plan *out)
{
	struct chat_member m[2];
	int nm = chat_conv_members(conv, len, m);
	out->n = 0;
	if (nm < 0)
		return nm;
	return plan_lists(conv, len, m, nm, out);
}

/* ---- clock ------------------------------------------------------------------------- */

uint64_t chat_clock_ms(void *arg)
{
	struct chat_clock *c = arg;
	uint64_t now = parley_now_ms();
	uint64_t last = atomic_load(&c->last);
	while (now > last) {
		if (atomic_compare_exchange_weak(&c->last, &last, now))
			return now;
	}
	return last > now ? last : now;
}

static void clock_raise(struct chat_clock *c, uint64_t floor)
{
	uint64_t last = atomic_load(&c->last);
	while (floor > last &&
	       !atomic_compare_exchange_weak(&c->last, &last, floor))
		;
}

/* ---- the fan-out service -------------------------------------------------------------- */

/* Link of the outstanding list; a separate type so that the list's
 * sentinel in struct chat is not a struct with a flexible array. */
struct jlink {
	struct jlink *prev, *next;
};

struct job {
	struct jlink link;     /* first: outstanding list (watermark) */
	struct job *next;      /* queue (fan-out thread) */
	struct chat *c;
	uint64_t seq, ts;
	unsigned pending;      /* appends not yet completed */
	uint16_t len;
	char conv[];
};

struct chat {
	struct pe_engine *e;
	struct chat_clock *clock;
	pthread_mutex_t mu;
	pthread_cond_t cv;       /* queue non-empty / stop / outstanding drained */
	struct job *qhead, *qtail;
	struct jlink outstanding; /* sentinel of the outstanding list */
	uint64_t npending;
	bool stop;
	pthread_t thr;
	uint64_t wm_written;
	uint64_t last_ckpt_ns;
	uint64_t ckpt_jobs;      /* fanout_jobs at the last covering checkpoint */
	uint64_t last_job_ts;    /* newest ts of a submitted job */
	struct chat_stats st;
};

static const char WM_KEY[] = "s/fanout";

static void job_done_locked(struct chat *c, struct job *j)
{
	j->link.prev->next = j->link.next;
	j->link.next->prev = j->link.prev;
	c->npending--;
	free(j);
	pthread_cond_broadcast(&c->cv);
}

static void fanout_append_cb(void *arg, const struct pe_append_result *r)
{
	struct job *j = arg;
	struct chat *c = j->c;
	pthread_mutex_lock(&c->mu);
	if (r->err) {
		c->st.fanout_errors++;
		PLOG_E("chat", "fan-out append failed", "conv=%.*s seq=%" PRIu64
		       " err=%s", (int)j->len, j->conv, j->seq,
		       parley_errname(r->err));
	} else {
		c->st.fanout_appends++;
	}
	if (--j->pending == 0)
		job_done_locked(c, j);
	pthread_mutex_unlock(&c->mu);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
			      .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Issues one planned append, retrying while the shard queue is full. */
static int fanout_issue(struct chat *c, const struct chat_fanout_item *it,
			pe_append_cb cb, void *arg)
{
	struct pe_input in = {.type = it->type, .len = it->len,
			      .payload = it->payload};
	struct pe_append_req q = {.key = it->key, .klen = it->klen,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	memcpy(q.producer, it->producer, 16);
	for (;;) {
		int rc = pe_append(c->e, &q, cb, arg);
		if (rc != -PARLEY_EFULL)
			return rc;
		sleep_ms(1);
	}
}

static uint64_t watermark_now(struct chat *c)
{
	uint64_t now = chat_clock_ms(c->clock);
	uint64_t w = now > CHAT_FANOUT_MARGIN_MS ? now - CHAT_FANOUT_MARGIN_MS : 0;
	pthread_mutex_lock(&c->mu);
	for (struct jlink *l = c->outstanding.next; l != &c->outstanding;
	     l = l->next) {
		const struct job *j = (const struct job *)l; /* link is first */
		if (j->ts < w)
			w = j->ts;
	}
	pthread_mutex_unlock(&c->mu);
	return w;
}

static void checkpoint_write(struct chat *c, uint64_t w)
{
	if (w <= c->wm_written)
		return;
	uint8_t b[8];
	le_put64(b, w);
	struct pe_input in = {.type = CHAT_ENT_WATERMARK, .len = 8, .payload = b};
	struct pe_append_req q = {.key = WM_KEY, .klen = sizeof WM_KEY - 1,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	struct pe_append_result r;
	int rc = pe_append_sync(c->e, &q, &r);
	if (rc) {
		PLOG_W("chat", "watermark checkpoint failed", "err=%s",
		       parley_errname(rc));
		return;
	}
	c->wm_written = w;
	pthread_mutex_lock(&c->mu);
	c->st.watermark_ms = w;
	pthread_mutex_unlock(&c->mu);
}

/* About once a second, and only if fan-outs happened since the last one
 * (an idle server writes nothing; its watermark simply stays behind, which
 * costs recovery nothing: no conversation moved since). Called and
 * returns with c->mu held. */
static void checkpoint_due_locked(struct chat *c)
{
	uint64_t now = parley_mono_ns();
	if (now - c->last_ckpt_ns < 1000000000ull ||
	    c->st.fanout_jobs == c->ckpt_jobs)
		return;
	c->last_ckpt_ns = now;
	uint64_t jobs = c->st.fanout_jobs;
	pthread_mutex_unlock(&c->mu);
	uint64_t w = watermark_now(c);
	checkpoint_write(c, w);
	pthread_mutex_lock(&c->mu);
	/* Keep checkpointing until the watermark has passed every job seen
	 * here: a job is covered once W > its ts, ~margin after it ran. */
	if (w > c->last_job_ts)
		c->ckpt_jobs = jobs;
}

static void *fanout_main(void *arg)
{
	struct chat *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->qhead && !c->stop) {
			struct timespec dl;
			clock_gettime(CLOCK_REALTIME, &dl);
			dl.tv_sec += 1;
			pthread_cond_timedwait(&c->cv, &c->mu, &dl);
			checkpoint_due_locked(c);
		}
		if (!c->qhead && c->stop)
			break;
		struct job *j = c->qhead;
		c->qhead = j->next;
		if (!c->qhead)
			c->qtail = NULL;
		pthread_mutex_unlock(&c->mu);

		struct chat_fanout_plan plan;
		int rc = chat_fanout_plan(j->conv, j->len, j->seq, &plan);
		pthread_mutex_lock(&c->mu);
		c->st.fanout_jobs++;
		if (rc || plan.n == 0) {
			job_done_locked(c, j);
			continue;
		}
		j->pending = plan.n + 1; /* +1: held until all are issued */
		pthread_mutex_unlock(&c->mu);
		for (unsigned i = 0; i < plan.n; i++) {
			rc = fanout_issue(c, &plan.item[i], fanout_append_cb, j);
			if (rc) {
				struct pe_append_result r = {.err = rc};
				fanout_append_cb(j, &r);
			}
		}
		pthread_mutex_lock(&c->mu);
		if (--j->pending == 0)
			job_done_locked(c, j);
		checkpoint_due_locked(c);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

void chat_fanout_submit(struct chat *c, const char *conv, size_t len,
			uint64_t seq, uint64_t ts_ms)
{
	struct job *j = malloc(sizeof *j + len);
	PARLEY_ASSERT(j); /* losing a fan-out would break delivery: crash loudly,
			     recovery re-fans it out from the watermark */
	memset(j, 0, sizeof *j);
	j->c = c;
	j->seq = seq;
	j->ts = ts_ms;
	j->len = (uint16_t)len;
	memcpy(j->conv, conv, len);
	pthread_mutex_lock(&c->mu);
	j->link.next = &c->outstanding;
	j->link.prev = c->outstanding.prev;
	c->outstanding.prev->next = &j->link;
	c->outstanding.prev = &j->link;
	c->npending++;
	if (ts_ms > c->last_job_ts)
		c->last_job_ts = ts_ms;
	if (c->qtail)
		c->qtail->next = j;
	else
		c->qhead = j;
	c->qtail = j;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

void chat_get_stats(struct chat *c, struct chat_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	out->fanout_pending = c->npending;
	pthread_mutex_unlock(&c->mu);
}

/* ---- recovery ------------------------------------------------------------------------------ */

struct conv_todo {
	struct conv_todo *next;
	uint64_t last_seq;
	uint8_t klen;
	char key[];
};

struct scan_ctx {
	uint64_t from_ts;
	uint64_t max_ts;
	struct conv_todo *todo;
	int err;
};

static int scan_stream_cb(void *arg, const void *key, size_t klen,
			  const struct pe_meta *meta)
{
	struct scan_ctx *s = arg;
	if (meta->last_ts_ms > s->max_ts)
		s->max_ts = meta->last_ts_ms;
	if (klen < 3 || memcmp(key, "c/", 2) != 0 || meta->last_seq == 0 ||
	    meta->last_ts_ms < s->from_ts)
		return 0;
	struct conv_todo *t = malloc(sizeof *t + klen);
	if (!t) {
		s->err = -PARLEY_ENOMEM;
		return 1;
	}
	t->last_seq = meta->last_seq;
	t->klen = (uint8_t)klen;
	memcpy(t->key, key, klen);
	t->next = s->todo;
	s->todo = t;
	return 0;
}

static int fanout_sync_item(struct chat *c, const struct chat_fanout_item *it)
{
	struct pe_input in = {.type = it->type, .len = it->len,
			      .payload = it->payload};
	struct pe_append_req q = {.key = it->key, .klen = it->klen,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	memcpy(q.producer, it->producer, 16);
	struct pe_append_result r;
	for (;;) {
		int rc = pe_append_sync(c->e, &q, &r);
		if (rc != -PARLEY_EFULL)
			return rc;
		sleep_ms(1);
	}
}

/* Re-fans-out every entry of one conversation with ts >= from_ts. */
static int recover_conv(struct chat *c, const struct conv_todo *t,
			uint64_t from_ts)
{
	/* Walk back to the first entry with ts >= from_ts (timestamps are
	 * non-decreasing within a stream: chat_clock never goes back). */
	uint64_t start = t->last_seq + 1, cur = t->last_seq;
	while (cur >= 1) {
		struct pe_read_req q = {.key = t->key, .klen = t->klen,
					.from = cur, .dir = PE_BACKWARD,
					.limit = PE_MAX_READ};
		struct pe_entry *ents = NULL;
		uint32_t n = 0;
		struct pe_read_result meta;
		int rc = pe_read_sync(c->e, &q, &ents, &n, &meta);
		if (rc == -PARLEY_ETRIMMED)
			break;
		if (rc)
			return rc;
		bool older = false;
		for (uint32_t i = 0; i < n; i++) {
			if (ents[i].ts_ms < from_ts) {
				older = true;
				break;
			}
			start = ents[i].seq;
		}
		free(ents);
		if (older || n == 0 || meta.end)
			break;
		cur = start - 1;
	}
	const char *conv = t->key + 2;
	size_t clen = t->klen - 2u;
	uint64_t done = 0;
	for (uint64_t seq = start; seq <= t->last_seq; seq++) {
		struct chat_fanout_plan plan;
		if (chat_fanout_plan(conv, clen, seq, &plan))
			break; /* not a conversation we know how to fan out */
		for (unsigned i = 0; i < plan.n; i++) {
			int rc = fanout_sync_item(c, &plan.item[i]);
			if (rc)
				return rc;
		}
		done++;
	}
	c->st.fanout_recovered += done;
	if (done)
		PLOG_I("chat", "fan-out recovered", "conv=%.*s from_seq=%" PRIu64
		       " count=%" PRIu64, (int)clen, conv, start, done);
	return 0;
}

static int recover(struct chat *c)
{
	uint64_t w = 0;
	struct pe_read_req q = {.key = WM_KEY, .klen = sizeof WM_KEY - 1,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1};
	struct pe_entry *ents = NULL;
	uint32_t n = 0;
	struct pe_read_result meta;
	int rc = pe_read_sync(c->e, &q, &ents, &n, &meta);
	if (rc == -PARLEY_ECORRUPT) {
		/* The engine refuses to serve that partition; the others must
		 * still be served: rescan everything instead of trusting W. */
		PLOG_E("chat", "fan-out watermark unreadable (partition corrupt): "
		       "rescanning every conversation", "err=%s",
		       parley_errname(rc));
		rc = 0;
		n = 0;
	}
	if (rc)
		return rc;
	if (n == 1 && ents[0].len == 8)
		w = le_get64(ents[0].payload);
	free(ents);
	c->wm_written = w;
	c->st.watermark_ms = w;
	uint64_t from_ts = w > CHAT_FANOUT_MARGIN_MS ? w - CHAT_FANOUT_MARGIN_MS : 0;

	struct scan_ctx s = {.from_ts = from_ts};
	uint32_t np = pe_partition_count(c->e);
	for (uint32_t p = 0; p < np; p++) {
		rc = pe_list_streams(c->e, p, scan_stream_cb, &s);
		if (rc == -PARLEY_ECORRUPT) {
			PLOG_E("chat", "partition corrupt: its conversations are "
			       "not recovered", "partition=%u", p);
			continue;
		}
		if (rc || s.err)
			break;
	}
	if (!rc)
		rc = s.err;
	/* Never hand out a timestamp older than one already stored. */
	clock_raise(c->clock, s.max_ts);
	unsigned nconv = 0;
	while (s.todo) {
		struct conv_todo *t = s.todo;
		s.todo = t->next;
		if (!rc) {
			rc = recover_conv(c, t, from_ts);
			if (rc == -PARLEY_ECORRUPT) {
				PLOG_E("chat", "conversation not recovered: its "
				       "inbox partition is corrupt", "stream=%.*s",
				       (int)t->klen, t->key);
				rc = 0;
			}
		}
		nconv++;
		free(t);
	}
	PLOG_I("chat", "fan-out recovery done", "watermark_ms=%" PRIu64
	       " conversations_scanned=%u messages=%" PRIu64 " err=%s", w,
	       nconv, c->st.fanout_recovered, rc ? parley_errname(rc) : "none");
	return rc;
}

int chat_open(struct pe_engine *e, struct chat_clock *clock, struct chat **out)
{
	struct chat *c = calloc(1, sizeof *c);
	if (!c)
		return -PARLEY_ENOMEM;
	c->e = e;
	c->clock = clock;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->outstanding.next = c->outstanding.prev = &c->outstanding;
	int rc = recover(c);
	if (rc) {
		free(c);
		return rc;
	}
	c->last_ckpt_ns = parley_mono_ns();
	rc = pthread_create(&c->thr, NULL, fanout_main, c);
	if (rc) {
		free(c);
		return -rc;
	}
	*out = c;
	return 0;
}

void chat_close(struct chat *c)
{
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thr, NULL);
	/* The thread issued everything; wait for the last appends. */
	pthread_mutex_lock(&c->mu);
	while (c->npending)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	checkpoint_write(c, watermark_now(c));
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}
