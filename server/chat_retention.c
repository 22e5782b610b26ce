/*
 * chat_retention.c — per-conversation retention (RETENTION, 0x0017) and
 * the sweeper that enforces it. See chat.h ("per-conversation retention").
 *
 * A conversation's own setting is the last entry of t/<conv>
 * (CHAT_ENT_RETENTION: u8 version | u64 max_age_ms | u64 max_count |
 * u16 ulen | user who set it). The sweeper thread keeps every setting in
 * memory (loaded at start by listing the partitions' t/ streams), and
 * every sweep_ms, and right after a setting changes, turns each one into
 * engine tombstones: pe_delete(c/<conv>, through) where `through` is the
 * newest seq that is past the setting (older than max_age_ms, or beyond
 * the newest max_count entries), and pe_delete(e/<conv>, ...) for the
 * edit-index entries of the trimmed EDITs (they hold copies of edited
 * bodies). The engine hides them at once (HISTORY, SYNC resolution) and
 * compaction removes them from the segments.
 *
 * The server-wide defaults (retention_max_age_ms / _max_count) are engine
 * rules applied by compaction (chat_retention_rules); a conversation's own
 * setting can only make retention shorter than them: both apply.
 *
 * Threads: one sweeper thread, which also runs RETENTION requests (they
 * need blocking engine calls): chat_retention_request queues them (any
 * thread; never blocks), the thread answers through the callback.
 * Ownership: settings and queued requests are owned by struct chat_ret.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "chat_hset.h"
#include "chat_keys.h"

#define RET_REC_VERSION 1u
#define RET_AGE_SCAN_MAX 100000u /* entries an age sweep reads per conversation */

struct ret_conv {
	uint16_t clen;
	char conv[PARLEY_PROTO_MAX_CONV_ID];
	uint64_t max_age_ms, max_count;
};

struct ret_req {
	struct ret_req *next;
	struct chat_retention_req q;
	chat_retention_cb cb;
	void *arg;
	char user[PARLEY_PROTO_MAX_USER_ID];
	char conv[PARLEY_PROTO_MAX_CONV_ID];
};

struct chat_ret {
	struct chat *c;
	uint64_t def_age, def_count, sweep_ms;
	pthread_t thr;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	struct ret_req *qhead, *qtail;
	uint32_t nq;
	/* sweeper thread only */
	struct ret_conv *v;
	size_t n, cap;
	uint64_t sweeps, trims;
};

static struct ret_conv *find(struct chat_ret *r, const char *conv, size_t clen)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].clen == clen && !memcmp(r->v[i].conv, conv, clen))
			return &r->v[i];
	return NULL;
}

static int put(struct chat_ret *r, const char *conv, size_t clen, uint64_t age,
	       uint64_t count)
{
	struct ret_conv *x = find(r, conv, clen);
	if (!x) {
		if (!age && !count)
			return 0;
		if (r->n == CHAT_RET_MAX_CONVS)
			return -PARLEY_EFULL;
		if (r->n == r->cap) {
			size_t nc = r->cap ? r->cap * 2 : 64;
			struct ret_conv *v = realloc(r->v, nc * sizeof *v);
			if (!v)
				return -PARLEY_ENOMEM;
			r->v = v;
			r->cap = nc;
		}
		x = &r->v[r->n++];
		x->clen = (uint16_t)clen;
		memcpy(x->conv, conv, clen);
	}
	x->max_age_ms = age;
	x->max_count = count;
	return 0;
}

static int key_ret(char *out, const char *conv, size_t len)
{
	if (len < 1 || len > 250)
		return -PARLEY_EINVAL;
	memcpy(out, "t/", 2);
	memcpy(out + 2, conv, len);
	out[2 + len] = '\0';
	return (int)(2 + len);
}

/* ---- enforcing one conversation's setting ---------------------------------------- */

/* The newest seq of c/<conv> to drop for x, or 0. Blocking reads. */
static uint64_t through_of(struct chat_ret *r, const struct ret_conv *x,
			   const char *key, size_t kl, uint64_t now)
{
	struct pe_meta m;
	if (pe_meta_sync(chat_engine(r->c), key, kl, &m) || m.last_seq == 0)
		return 0;
	uint64_t through = 0;
	if (x->max_count && m.last_seq > x->max_count)
		through = m.last_seq - x->max_count;
	if (x->max_age_ms && now > x->max_age_ms) {
		uint64_t cutoff = now - x->max_age_ms;
		uint64_t from = PARLEY_MAX(m.first_seq, through + 1);
		uint32_t scanned = 0;
		while (from <= m.last_seq && scanned < RET_AGE_SCAN_MAX) {
			struct pe_read_req q = {.key = key, .klen = kl, .from = from,
						.dir = PE_FORWARD, .limit = PE_MAX_READ};
			struct pe_entry *es = NULL;
			uint32_t n = 0;
			struct pe_read_result meta;
			if (pe_read_sync(chat_engine(r->c), &q, &es, &n, &meta) || !n) {
				free(es);
				break;
			}
			bool done = false;
			for (uint32_t i = 0; i < n && !done; i++) {
				if (es[i].ts_ms >= cutoff)
					done = true;
				else
					through = PARLEY_MAX(through, es[i].seq);
			}
			from = es[n - 1].seq + 1;
			scanned += n;
			free(es);
			if (done || meta.end)
				break;
		}
	}
	return through >= m.first_seq ? through : 0;
}

/* The edit-index entries whose EDIT / DELETE entry is <= through. */
static void trim_index(struct chat_ret *r, const struct ret_conv *x,
		       uint64_t through)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_edits(key, x->conv, x->clen);
	if (kl < 0)
		return;
	uint64_t last = 0, from = 1;
	struct pe_entry *es;
	uint32_t n;
	struct pe_read_result meta;
	while (chat_keys_read(chat_engine(r->c), key, (size_t)kl, &from, &es, &n, &meta)) {
		bool done = false;
		for (uint32_t i = 0; i < n && !done; i++) {
			/* index entries are in the order of their c/ seqs */
			if (es[i].len >= 8 && le_get64(es[i].payload) <= through)
				last = es[i].seq;
			else
				done = true;
		}
		from = es[n - 1].seq + 1;
		free(es);
		if (done || meta.end)
			break;
	}
	if (last) {
		struct pe_delete_result dr;
		pe_delete_sync(chat_engine(r->c), key, (size_t)kl, last, &dr);
	}
}

/* Applies x now. Returns c/<conv>'s first visible seq after it. */
static uint64_t enforce(struct chat_ret *r, const struct ret_conv *x)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, x->conv, x->clen);
	if (kl < 0)
		return 0;
	uint64_t through = through_of(r, x, key, (size_t)kl, chat_now_ms(r->c));
	if (through) {
		struct pe_delete_result dr;
		int rc = pe_delete_sync(chat_engine(r->c), key, (size_t)kl, through, &dr);
		if (rc)
			PLOG_W("chat", "retention delete failed", "conv=%.*s through=%"
			       PRIu64 " err=%s", (int)x->clen, x->conv, through,
			       parley_errname(rc));
		else
			r->trims++;
		trim_index(r, x, through);
	}
	struct pe_meta m;
	if (pe_meta_sync(chat_engine(r->c), key, (size_t)kl, &m))
		return 0;
	if (m.last_seq)
		chat_floor_set(chat_floors_of(r->c), x->conv, x->clen, m.first_seq);
	return m.last_seq ? m.first_seq : 0;
}

/* ---- requests ------------------------------------------------------------------------ */

static void answer(struct chat_ret *r, struct ret_req *q, int err,
		   const struct ret_conv *x, uint64_t first)
{
	struct parley_msg m = {.type = PARLEY_T_RETENTION_OK};
	struct parley_retention_ok *o = &m.retention_ok;
	o->conv = (struct parley_str){q->conv, q->q.conv_len};
	o->max_age_ms = x ? x->max_age_ms : 0;
	o->max_count = x ? x->max_count : 0;
	o->default_max_age_ms = r->def_age;
	o->default_max_count = r->def_count;
	o->first_seq = first;
	q->cb(q->arg, err, err ? NULL : &m);
}

static void run_req(struct chat_ret *r, struct ret_req *q)
{
	const struct chat_retention_req *rq = &q->q;
	if (rq->flags & PARLEY_RETF_SET) {
		/* who may: a member of a 1:1 conversation, a group's owner
		 * (checked by chat_retention_request) */
		char key[CHAT_KEY_CAP];
		int kl = key_ret(key, q->conv, rq->conv_len);
		uint8_t rec[1 + 8 + 8 + 2 + PARLEY_PROTO_MAX_USER_ID];
		struct le_writer w;
		le_writer_init(&w, rec, sizeof rec);
		le_write8(&w, RET_REC_VERSION);
		le_write64(&w, rq->max_age_ms);
		le_write64(&w, rq->max_count);
		le_write16(&w, rq->user_len);
		le_write_bytes(&w, q->user, rq->user_len);
		PARLEY_ASSERT(w.ok);
		struct pe_input in = {.type = CHAT_ENT_RETENTION,
				      .len = (uint32_t)w.off, .payload = rec};
		struct pe_append_req aq = {.key = key, .klen = (size_t)kl,
					   .expected_last_seq = PE_NO_EXPECT,
					   .entries = &in, .count = 1};
		struct pe_append_result ar;
		int rc = kl < 0 ? kl : pe_append_sync(chat_engine(r->c), &aq, &ar);
		if (!rc) /* durable: now it is the setting */
			rc = put(r, q->conv, rq->conv_len, rq->max_age_ms,
				 rq->max_count);
		if (rc) {
			answer(r, q, rc, NULL, 0);
			return;
		}
	}
	struct ret_conv none = {.clen = rq->conv_len};
	memcpy(none.conv, q->conv, rq->conv_len);
	const struct ret_conv *x = find(r, q->conv, rq->conv_len);
	uint64_t first = enforce(r, x ? x : &none);
	answer(r, q, 0, x, first);
}

int chat_retention_request(struct chat_ret *r, const struct chat_retention_req *q,
			   chat_retention_cb cb, void *arg)
{
	int rc = chat_conv_access(r->c, q->conv, q->conv_len, q->user,
				  q->user_len);
	if (rc)
		return rc;
	/* a group's retention is set by its owner */
	if ((q->flags & PARLEY_RETF_SET) && chat_conv_is_group(q->conv, q->conv_len) &&
	    chat_member_role(r->c, q->conv, q->conv_len, q->user, q->user_len) !=
		    CHAT_ROLE_OWNER)
		return -PARLEY_EPERM;
	if (q->conv_len > PARLEY_PROTO_MAX_CONV_ID ||
	    q->user_len > PARLEY_PROTO_MAX_USER_ID)
		return -PARLEY_EINVAL;
	struct ret_req *x = calloc(1, sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	x->q = *q;
	x->cb = cb;
	x->arg = arg;
	memcpy(x->user, q->user, q->user_len);
	memcpy(x->conv, q->conv, q->conv_len);
	x->q.user = x->user;
	x->q.conv = x->conv;
	pthread_mutex_lock(&r->mu);
	if (r->stop || r->nq >= CHAT_RET_MAX_QUEUED) {
		pthread_mutex_unlock(&r->mu);
		free(x);
		return -PARLEY_EFULL;
	}
	if (r->qtail)
		r->qtail->next = x;
	else
		r->qhead = x;
	r->qtail = x;
	r->nq++;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return 0;
}

/* ---- the sweeper ------------------------------------------------------------------------ */

static void load(struct chat_ret *r)
{
	struct chat_keys l;
	struct pe_engine *e = chat_engine(r->c);
	chat_keys_list(&l, e, "t/");
	for (size_t i = 0; i < l.n; i++) {
		struct pe_read_req q = {.key = l.keys[i], .klen = strlen(l.keys[i]),
					.from = UINT64_MAX, .dir = PE_BACKWARD,
					.limit = 1};
		struct pe_entry *es = NULL;
		uint32_t n = 0;
		struct pe_read_result meta;
		if (!pe_read_sync(e, &q, &es, &n, &meta) && n == 1 &&
		    es[0].type == CHAT_ENT_RETENTION && es[0].len >= 19 &&
		    es[0].payload[0] == RET_REC_VERSION)
			put(r, l.keys[i] + 2, strlen(l.keys[i]) - 2,
			    le_get64(es[0].payload + 1), le_get64(es[0].payload + 9));
		free(es);
	}
	chat_keys_free(&l);
	PLOG_I("chat", "per-conversation retention loaded", "conversations=%zu",
	       r->n);
}

static void *sweeper(void *arg)
{
	struct chat_ret *r = arg;
	load(r);
	chat_retention_refresh(r->c);
	chat_scrub_load(chat_scrub_of(r->c), chat_engine(r->c));
	uint64_t next = parley_mono_ns() / 1000000u + r->sweep_ms;
	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		if (r->qhead) {
			struct ret_req *q = r->qhead;
			r->qhead = q->next;
			if (!r->qhead)
				r->qtail = NULL;
			r->nq--;
			pthread_mutex_unlock(&r->mu);
			run_req(r, q);
			free(q);
			pthread_mutex_lock(&r->mu);
			continue;
		}
		uint64_t now = parley_mono_ns() / 1000000u;
		if (now >= next) {
			pthread_mutex_unlock(&r->mu);
			for (size_t i = 0; i < r->n; i++)
				enforce(r, &r->v[i]);
			/* what the engine's own rules trimmed at compaction */
			if (r->def_age || r->def_count)
				chat_retention_refresh(r->c);
			r->sweeps++;
			next = parley_mono_ns() / 1000000u + r->sweep_ms;
			pthread_mutex_lock(&r->mu);
			continue;
		}
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		uint64_t ns = (uint64_t)dl.tv_nsec +
			      PARLEY_MIN(next - now, 1000u) * 1000000ull;
		dl.tv_sec += (time_t)(ns / 1000000000ull);
		dl.tv_nsec = (long)(ns % 1000000000ull);
		pthread_cond_timedwait(&r->cv, &r->mu, &dl);
	}
	/* refuse what is still queued */
	while (r->qhead) {
		struct ret_req *q = r->qhead;
		r->qhead = q->next;
		pthread_mutex_unlock(&r->mu);
		q->cb(q->arg, -PARLEY_ECLOSED, NULL);
		free(q);
		pthread_mutex_lock(&r->mu);
	}
	r->qtail = NULL;
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

int chat_retention_start(struct chat *c, uint64_t def_age, uint64_t def_count,
			 uint64_t sweep_ms, struct chat_ret **out)
{
	struct chat_ret *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->c = c;
	r->def_age = def_age;
	r->def_count = def_count;
	r->sweep_ms = sweep_ms ? sweep_ms : CHAT_RET_SWEEP_DEFAULT_MS;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	int rc = pthread_create(&r->thr, NULL, sweeper, r);
	if (rc) {
		pthread_mutex_destroy(&r->mu);
		pthread_cond_destroy(&r->cv);
		free(r);
		return -rc;
	}
	*out = r;
	return 0;
}

void chat_retention_stop(struct chat_ret *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thr, NULL);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r->v);
	free(r);
}

/* ---- floors ------------------------------------------------------------------------------ */

/* Open addressing on 64-bit hashes of conversation ids (0 = empty slot),
 * under one mutex (a lookup per inline inbox pointer: short and rarely
 * contended). Growing doubles up to CHAT_FLOORS_MAX slots; at the bound
 * `full` makes every lookup answer "maybe below" (resolve by a read). */
struct chat_floors {
	struct chat_cset s; /* (conv hash, 0) -> first_seq */
	bool full;          /* under s.mu */
};

#define FLOOR_SEED 0x666c6f6f72730001ull /* of the conv hash */

struct chat_floors *chat_floors_new(void)
{
	struct chat_floors *f = calloc(1, sizeof *f);
	if (f)
		chat_cset_init(&f->s, true, FLOOR_SEED);
	return f;
}

void chat_floors_free(struct chat_floors *f)
{
	if (!f)
		return;
	chat_cset_destroy(&f->s);
	free(f);
}

bool chat_floor_below(struct chat_floors *f, const char *conv, size_t len,
		      uint64_t conv_seq)
{
	uint64_t h = chat_cset_lock(&f->s, conv, len);
	bool below = f->full;
	if (!below) {
		int64_t i = chat_hset_find(&f->s.t, h, 0);
		below = i >= 0 && conv_seq < f->s.t.v[i];
	}
	chat_cset_unlock(&f->s);
	return below;
}

void chat_floor_set(struct chat_floors *f, const char *conv, size_t len,
		    uint64_t first_seq)
{
	if (first_seq <= 1)
		return;
	uint64_t h = chat_cset_lock(&f->s, conv, len);
	int64_t i = chat_hset_put(&f->s.t, h, 0, CHAT_FLOORS_MAX);
	if (i < 0)
		f->full = true; /* safe: every copy is then re-read */
	else if (first_seq > f->s.t.v[i])
		f->s.t.v[i] = first_seq;
	chat_cset_unlock(&f->s);
}

static int refresh_cb(void *arg, const void *key, size_t klen,
		      const struct pe_meta *m)
{
	struct chat *c = arg;
	if (klen > 2 && !memcmp(key, "c/", 2) && m->first_seq > 1)
		chat_floor_set(chat_floors_of(c), (const char *)key + 2, klen - 2,
			       m->first_seq);
	return 0;
}

void chat_retention_refresh(struct chat *c)
{
	struct pe_engine *e = chat_engine(c);
	for (uint32_t p = 0; p < pe_partition_count(e); p++)
		pe_list_streams(e, p, refresh_cb, c);
}
