/*
 * chat.c — the chat model on engine streams: keys, stored records,
 * idempotency keys, the fan-out planner, and the recoverable fan-out service.
 * See chat.h for the stream layout, the fan-out cursors and why inbox
 * order follows conversation order.
 *
 * Invariants
 *   1. A fan-out job is on its partition's outstanding list from before
 *      its conversation append is issued (chat_send) or from recovery
 *      until every append of its plan has completed (successfully or
 *      not): a partition's cursor never passes the start of a job still
 *      on the list, and start <= the entry's ts.
 *   2. Each outstanding list is ordered by start (registration reads the
 *      clock under c->mu), so its head is its minimum.
 *   3. The cursors this node writes to s/fanout/<k> never decrease: each
 *      snapshot is clamped to c->cur, which only grows. Partition p's
 *      cursor is written only while p is ready here (lead_ready_locked),
 *      never for a partition another node leads.
 *   4. The fan-out thread issues the appends of job N before those of job
 *      N+1 (FIFO), retrying -PARLEY_EFULL in place. A send callback issues
 *      its job's appends itself ("direct") only while the queue is empty
 *      and the thread is not issuing (c->fan_busy); a direct job that
 *      meets -PARLEY_EFULL is queued with its hold (queue_push_locked).
 *   5. A queued job carries one hold on j->pending, so appends already
 *      issued for it cannot complete (and free) it while it waits.
 *
 * Ownership: jobs are made by chat_send (or recovery) from the calling
 * thread's block pool (job_alloc, parley_common.h), owned by the
 * outstanding list, freed by whoever completes them last (the send
 * callback on failure or after a direct fan-out, the last append callback,
 * or the fan-out thread)
 * under c->mu.
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
#include "chat_group.h"
#include "chat_rd.h"
#include "hist.h"
#include "parley_proto.h"
#include "route.h"

const struct pe_retention_rule chat_retention[] = {
	{.prefix = "k/", .plen = 2, .max_count = CHAT_CURSOR_KEEP},
	{.prefix = "s/fanout", .plen = 8, .max_count = CHAT_CKPT_KEEP},
	{.prefix = "m/", .plen = 2, .max_count = CHAT_GSNAP_KEEP}, /* groups */
	{.prefix = "r/", .plen = 2, .max_count = 4}, /* CHAT_RCPT_KEEP */
};
const size_t chat_nretention = sizeof chat_retention / sizeof *chat_retention;

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

int chat_key_open(char *out, const char *conv, size_t len)
{
	if (len < 1 || len > 250)
		return -PARLEY_EINVAL;
	return key_make(out, "o/", conv, len, NULL, 0);
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

int chat_conv_access(struct chat *c, const char *conv, size_t len,
		     const char *user, size_t ulen)
{
	int role = chat_member_role(c, conv, len, user, ulen);
	return role < 0 ? role : role == CHAT_ROLE_NONE ? -PARLEY_EPERM : 0;
}

int chat_conv_check(const char *conv, size_t len, const char *user,
		    size_t ulen)
{
	struct chat_member mm[2];
	if (chat_conv_members(conv, len, mm) < 0)
		return -PARLEY_ENOTFOUND;
	if (!chat_conv_has_member(conv, len, user, ulen))
		return -PARLEY_EPERM;
	return 0;
}

/* ---- records -------------------------------------------------------------------- */

int chat_msg_encode(uint8_t *buf, size_t cap, const struct chat_msg *m)
{
	size_t n = 1 + 2 + m->sender_len + 16 + 2 + 4 + (size_t)m->body_len;
	if (!buf)
		return (int)n;
	if (cap < n)
		return -PARLEY_ETOOBIG;
	struct le_writer w;
	le_writer_init(&w, buf, cap);
	le_write8(&w, CHAT_REC_VERSION);
	le_write16(&w, m->sender_len);
	le_write_bytes(&w, m->sender, m->sender_len);
	le_write_bytes(&w, m->client_msg_id, 16);
	le_write16(&w, m->content_type);
	le_write32(&w, m->body_len);
	le_write_bytes(&w, m->body, m->body_len);
	PARLEY_ASSERT(w.ok && w.off == n);
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
	if (x->msg)
		n += 8 + 4 + (size_t)x->msg_len;
	if (x->conv_len > 250 || (x->msg && x->msg_len > CHAT_INLINE_MAX))
		return -PARLEY_EINVAL;
	if (cap < n)
		return -PARLEY_ETOOBIG;
	struct le_writer w;
	le_writer_init(&w, buf, cap);
	le_write8(&w, x->msg ? CHAT_PTR_VERSION_INLINE : CHAT_REC_VERSION);
	le_write16(&w, x->kind);
	le_write16(&w, x->conv_len);
	le_write_bytes(&w, x->conv, x->conv_len);
	le_write64(&w, x->conv_seq);
	if (x->msg) {
		le_write64(&w, x->ts_ms);
		le_write32(&w, x->msg_len);
		le_write_bytes(&w, x->msg, x->msg_len);
	}
	PARLEY_ASSERT(w.ok && w.off == n);
	return (int)n;
}

int chat_ptr_decode(const uint8_t *p, size_t len, struct chat_ptr *out)
{
	struct le_reader r;
	le_reader_init(&r, p, len);
	uint8_t v = le_read8(&r);
	if (v != CHAT_REC_VERSION && v != CHAT_PTR_VERSION_INLINE)
		return -PARLEY_ECORRUPT;
	out->kind = le_read16(&r);
	out->conv_len = le_read16(&r);
	out->conv = (const char *)le_read_bytes(&r, out->conv_len);
	out->conv_seq = le_read64(&r);
	out->ts_ms = 0;
	out->msg = NULL;
	out->msg_len = 0;
	if (v == CHAT_PTR_VERSION_INLINE) {
		out->ts_ms = le_read64(&r);
		out->msg_len = le_read32(&r);
		out->msg = le_read_bytes(&r, out->msg_len);
		if (!out->msg)
			r.ok = false;
	}
	return r.ok ? 0 : -PARLEY_ECORRUPT;
}

int chat_list_encode(uint8_t *buf, size_t cap, const char *conv, size_t len)
{
	if (len > 250)
		return -PARLEY_EINVAL;
	if (cap < 3 + len)
		return -PARLEY_ETOOBIG;
	struct le_writer w;
	le_writer_init(&w, buf, cap);
	le_write8(&w, CHAT_REC_VERSION);
	le_write16(&w, (uint16_t)len);
	le_write_bytes(&w, conv, len);
	PARLEY_ASSERT(w.ok);
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
 * input (tag byte first), so keys of different kinds can never collide. */
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

/* The key of a per-conversation record kind: tag byte, then the id. */
static void producer_conv(uint8_t out[16], char tag, const char *conv,
			  size_t len)
{
	uint8_t in[1 + 2 + 255];
	PARLEY_ASSERT(len <= 255);
	in[0] = (uint8_t)tag;
	le_put16(in + 1, (uint16_t)len);
	memcpy(in + 3, conv, len);
	producer_of(out, in, 3 + len);
}

void chat_producer_open(uint8_t out[16], const char *conv, size_t len)
{
	producer_conv(out, 'O', conv, len);
}

void chat_producer_list(uint8_t out[16], const char *conv, size_t len)
{
	producer_conv(out, 'L', conv, len);
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

int chat_fanout_plan_inline(const char *conv, size_t len, uint64_t seq,
			    uint64_t ts_ms, const uint8_t *msg,
			    uint32_t msg_len, uint8_t *buf, size_t cap,
			    struct chat_fanout_plan *out)
{
	int rc = chat_fanout_plan(conv, len, seq, out);
	if (rc || msg_len > CHAT_INLINE_MAX)
		return rc;
	struct chat_ptr p = {.kind = 1 /* PARLEY_EV_MESSAGE */, .conv = conv,
			     .conv_len = (uint16_t)len, .conv_seq = seq,
			     .ts_ms = ts_ms, .msg = msg, .msg_len = msg_len};
	int n = chat_ptr_encode(buf, cap, &p);
	if (n < 0)
		return 0; /* no room: the version 1 pointers stand */
	for (unsigned i = 0; i < out->n; i++)
		if (out->item[i].type == CHAT_ENT_PTR) {
			out->item[i].ext = buf;
			out->item[i].ext_len = (uint32_t)n;
		}
	return 0;
}

int chat_list_plan(const char *conv, size_t len, struct chat_fanout_plan *out)
{
	struct chat_member m[2];
	int nm = chat_conv_members(conv, len, m);
	memset(out, 0, sizeof *out);
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

void chat_clock_raise(struct chat_clock *c, uint64_t floor)
{
	uint64_t last = atomic_load(&c->last);
	while (floor > last &&
	       !atomic_compare_exchange_weak(&c->last, &last, floor))
		;
}

/* ---- the send + fan-out service ------------------------------------------------------- */

/*
 * A job is one message (live: from == to) or a run of messages of one
 * conversation (recovery: from..to) whose fan-out is not yet durable.
 * It is registered on its partition's outstanding list BEFORE the
 * conversation append is issued (chat_send), with `start` = the chat
 * clock at that moment; the engine stamps the entry later, so the
 * entry's ts >= start. The list of a partition is ordered by start
 * (registration takes the clock under c->mu), so its head holds the
 * smallest start: that is the partition's fan-out cursor.
 */
struct jlink {
	struct jlink *prev, *next;
};

struct job {
	struct jlink link;     /* first: outstanding list of its partition */
	struct job *next;      /* fan-out queue */
	struct chat *c;
	uint64_t start;        /* chat clock when registered (<= entry ts) */
	uint64_t done_base;    /* its partition's pdone.done before the clock
				  reached start (pdone) */
	uint64_t from, to;     /* conversation seqs to fan out */
	uint32_t part;         /* partition of c/<conv> (its cursor) */
	uint64_t nmsgs;        /* counted in c->npending */
	/* appends not yet completed (+1 while issuing, +1 while queued);
	 * atomic: a completion takes c->mu only when it is the last */
	_Atomic unsigned pending;
	chat_send_cb cb;       /* live send: the caller's callback */
	void *cb_arg;
	uint8_t *rec;          /* live send: the record, until durable */
	uint32_t rec_len;
	bool rec_in_job;       /* rec points into this allocation (job_new) */
	bool group;            /* a group conversation (chat_group.c) */
	uint8_t producer[16];
	uint8_t check;         /* existence check: 0 o/<conv> (at its
				  partition's leader when this node holds
				  no replica: chat_set_remote_check), 2
				  o/<conv> here (that leader is an older
				  build), 1 c/<conv> */
	uint16_t type;         /* entry type of the append (CHAT_ENT_MSG, ...) */
	uint64_t ts_ms;        /* live send: the entry's timestamp */
	uint64_t t_durable;    /* live send: mono ns the message was durable */
	uint64_t t_issued;     /* ... and its inbox appends were issued */
	uint16_t len;
	char conv[];
};

/* Per partition: what a checkpoint whose cursor is a job's start would
 * still re-fan out although its fan-out is durable. A job J completed
 * before the snapshot is re-fanned iff its entry's ts >= the cursor =
 * the head's start S. Its ts was stamped after the clock reached S,
 * hence after the last registration of the partition whose start was
 * below S (the clock is read under c->mu at registration and never goes
 * back), and J completed after its stamp: so such jobs number at most
 * done now - done at that registration (= the head's done_base). Without
 * this the gauge missed them: a job stamped in the same millisecond as
 * a later one's registration, or a fast job finishing behind a slow
 * head, is re-fanned but neither outstanding nor registered since. */
struct pdone {
	uint64_t done;          /* messages whose fan-out ended (any outcome) */
	uint64_t reg_ms;        /* start of the latest registration */
	uint64_t reg_done;      /* done at the latest registration */
	uint64_t ms_base;       /* done at the latest registration whose
				   start was below reg_ms */
};

struct chat {
	struct pe_engine *e;
	struct chat_clock *clock;
	uint32_t np;             /* partitions */
	pthread_mutex_t mu;
	pthread_cond_t cv;       /* queue non-empty / stop / outstanding drained */
	struct job *qhead, *qtail;
	struct jlink *out;       /* [np] sentinels of the outstanding lists */
	uint64_t npending;       /* messages registered, fan-out not durable */
	uint64_t reg_total;      /* messages ever registered (live + recovered) */
	bool stop;
	bool ckpt_busy;          /* a checkpoint append is in flight */
	pthread_t thr;
	uint64_t *cur;           /* [np] cursor of the last durable checkpoint */
	uint64_t *ckpt_buf_cur;  /* [np] cursor being written */
	struct pdone *pdone;     /* [np] (struct pdone) */
	uint64_t last_ckpt_ns;
	uint64_t ckpt_gen;       /* c->gen covered by the checkpoint in flight/done */
	uint64_t gen;            /* bumped on every registration / completion */
	uint64_t ck_reg, ck_pending;          /* snapshot in flight */
	uint64_t dur_reg, dur_pending;        /* snapshot of the durable one */
	/* conversations known to exist (opened, or holding messages): a
	 * cache of 64-bit hashes of their ids, so a SEND does not read o/ or
	 * c/ first (open addressing, 0 = empty slot; grows to
	 * CHAT_KNOWN_MAX slots, then starts over: a miss only costs a read) */
	uint64_t *known;
	uint32_t known_cap, known_n;
	uint8_t *inline_buf;     /* fan-out thread: one inline pointer */
	bool fan_busy;           /* the fan-out thread is issuing a job */
	struct chat_stats st;
	/* counted without c->mu (added to st by chat_stats) */
	_Atomic uint64_t n_jobs, n_appends;
	struct chat_groups *groups; /* group membership (chat_group.c) */
	struct chat_rd *rd;         /* read fan-out (chat_fanout_read.c) */
	struct srv_hist stage[CHAT_STAGE_COUNT];
	struct chat_floors *floors; /* retention floors (chat_retention.c) */
	struct chat_scrub *scrub;   /* deleted messages (chat_edit.c), not owned */
	/* Leadership (a cluster; see "Leadership" in chat.h). led_term[p]:
	 * the Raft term in which this node leads p AND has run p's fan-out
	 * recovery, 0 = not ready (not leader, not recovered yet, or a
	 * fan-out append of p failed NOTLEADER / AGAIN since). Checkpoints
	 * are written only while every partition is ready. Under c->mu. */
	uint64_t *led_term;
	bool *redo;              /* [np] marked not ready during a recovery */
	uint64_t *rec_term;      /* [np] term of p's last leadership recovery */
	uint64_t *rec_ns;        /* [np] ... and when it ran (mono ns) */
	_Atomic uint64_t *grp_term; /* [np] term whose group reload of p is
				       done (read without c->mu) */
	uint64_t lead_poll_ns;   /* fan-out thread: last leadership poll */
	uint64_t lead_gen;       /* pe_raft_status_gen the last poll scanned at */
	bool lead_settled;       /* that poll left nothing to do (every led
				    partition ready): until the gen moves or
				    lead_lost_locked, the poll skips the scan */
	/* Per-partition checkpoints (see "Checkpoints" in chat.h): p's record
	 * lives in s/fanout/<k>, a key of partition p (ckey[p], found at
	 * open), so p's leader writes it locally. pgen[p] counts p's
	 * registrations and completions, ck_gen[p] what the last durable
	 * checkpoint of p covered, ck_snap[p] what the one in flight covers.
	 * ck_out: appends of the checkpoint round in flight. Under c->mu. */
	char (*ckey)[CHAT_CKPT_KEY_CAP];
	uint8_t *cklen;
	uint64_t *pgen, *ck_gen, *ck_snap;
	bool *ck_in;             /* [np] p is in the round in flight */
	struct ckarg *ckargs;    /* [np] the round's callback arguments */
	uint32_t ck_out;
	bool ck_failed;          /* an append of the round failed */
	/* forwarding of appends to partitions led elsewhere (chat_append) */
	_Atomic(chat_fwd_fn) fwd;
	_Atomic(chat_fwd_del_fn) fwd_del;
	void *fwd_arg;
	_Atomic uint64_t n_fwd;  /* appends handed to fwd */
	/* early delivery (chat_set_early) */
	_Atomic(chat_early_fn) early;
	void *_Atomic early_arg;
	_Atomic uint64_t n_early; /* early EVENTs posted */
	/* TEST-ONLY (PARLEY_TEST_FANOUT_DELAY_MS): every live fan-out waits
	 * this long on the fan-out thread before its inbox appends, so a test
	 * can kill -9 between a message durable and its pointers durable */
	unsigned test_fanout_delay_ms;
	_Atomic(chat_route_fn) router; /* chat_set_router */
	void *router_arg;
	_Atomic(chat_check_fn) rcheck; /* chat_set_remote_check */
	void *_Atomic rcheck_arg;
};

struct ckarg {
	struct chat *c;
	uint32_t p;
};

struct chat_groups *chat_groups_of(struct chat *c)
{
	return c->groups;
}

struct chat_rd *chat_rd_of(struct chat *c)
{
	return c->rd;
}

int chat_groups_ready(struct chat *c, const char *conv, size_t len)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, conv, len);
	if (kl < 0)
		return 0;
	uint32_t p = pe_partition_of(c->e, key, (size_t)kl);
	/* a follower learns no membership change (memory follows what this
	 * node appended): redirect to the leader, like a write (the group
	 * partition's: route.h) */
	int lrc = route_leader_check(c->e, p);
	if (lrc)
		return lrc;
	struct pe_raft_status st;
	if (pe_raft_status(c->e, p, &st) || st.role != PE_LEADER)
		return 0; /* a single node */
	return atomic_load(&c->grp_term[p]) == st.term ? 0 : -PARLEY_EAGAIN;
}

static const char WM_KEY[] = "s/fanout";

void chat_set_forward(struct chat *c, chat_fwd_fn fn, chat_fwd_del_fn dfn,
		      void *arg)
{
	c->fwd_arg = arg;
	atomic_store(&c->fwd_del, dfn);
	atomic_store(&c->fwd, fn);
}

void chat_set_router(struct chat *c, chat_route_fn fn, void *arg)
{
	c->router_arg = arg;
	atomic_store(&c->router, fn);
}

void chat_set_remote_check(struct chat *c, chat_check_fn fn, void *arg)
{
	atomic_store(&c->rcheck, NULL); /* never fn with another's arg */
	atomic_store(&c->rcheck_arg, arg);
	atomic_store(&c->rcheck, fn);
}

/* The leader to forward a write of key to: another node that leads its
 * partition as published, 0 = write locally. */
static uint64_t route_to(struct chat *c, const void *key, size_t klen)
{
	uint32_t p = pe_partition_of(c->e, key, klen);
	chat_route_fn rfn = atomic_load(&c->router);
	if (rfn) {
		uint64_t to = rfn(c->router_arg, p);
		if (to != CHAT_ROUTE_DEFAULT)
			return to;
	}
	return route_partition_leader(c->e, p);
}

/* A one-shot wait of the *_sync calls for their callback: the callback
 * stores its result, then latch_open; the caller's latch_wait returns
 * once it did (the mutex orders the result before the return). */
struct latch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
};

#define LATCH_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false}

static void latch_open(struct latch *l)
{
	pthread_mutex_lock(&l->mu);
	l->done = true;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

static void latch_wait(struct latch *l)
{
	pthread_mutex_lock(&l->mu);
	while (!l->done)
		pthread_cond_wait(&l->cv, &l->mu);
	pthread_mutex_unlock(&l->mu);
}

struct delete_wait {
	struct latch l;
	struct pe_delete_result r;
};

static void delete_wait_cb(void *arg, const struct pe_delete_result *r)
{
	struct delete_wait *w = arg;
	w->r = *r;
	latch_open(&w->l);
}

int chat_delete_sync(struct chat *c, const void *key, size_t klen,
		     uint64_t through, struct pe_delete_result *r)
{
	chat_fwd_del_fn fn = atomic_load(&c->fwd_del);
	uint64_t to = fn ? route_to(c, key, klen) : 0;
	if (to) {
		struct delete_wait w = {.l = LATCH_INIT};
		int rc = fn(c->fwd_arg, to, key, klen, through, delete_wait_cb, &w);
		if (rc == 0) {
			latch_wait(&w.l);
			*r = w.r;
			return r->err;
		}
		if (rc != -PARLEY_ECLOSED) {
			memset(r, 0, sizeof *r);
			r->err = rc;
			return rc;
		}
	}
	return pe_delete_sync(c->e, key, klen, through, r);
}

struct append_wait {
	struct latch l;
	struct pe_append_result r;
};

static void append_wait_cb(void *arg, const struct pe_append_result *r)
{
	struct append_wait *w = arg;
	w->r = *r;
	latch_open(&w->l);
}

int chat_append_sync(struct chat *c, const struct pe_append_req *q,
		     struct pe_append_result *r)
{
	struct append_wait w = {.l = LATCH_INIT};
	int rc = chat_append(c, q, append_wait_cb, &w);
	if (rc) {
		memset(r, 0, sizeof *r);
		r->err = rc;
		return rc;
	}
	latch_wait(&w.l);
	*r = w.r;
	return r->err;
}

uint64_t chat_forwarded(struct chat *c)
{
	return atomic_load_explicit(&c->n_fwd, memory_order_relaxed);
}

/* The route of a chat write (docs/CLUSTER.md §3.3): local when this node
 * leads the key's partition (or knows no other leader, or has no link to
 * it: pe_append then answers NOTLEADER with its hint, as before), else
 * forwarded to the leader (peer_fwd.h), from the published Raft state.
 * The leader executes it with pe_append and never forwards it again. */
int chat_append(struct chat *c, const struct pe_append_req *q, pe_append_cb cb,
		void *arg)
{
	chat_fwd_fn fn = atomic_load(&c->fwd);
	if (fn) {
		uint64_t to = route_to(c, q->key, q->klen);
		if (to) {
			int rc = fn(c->fwd_arg, to, q, cb, arg);
			if (rc != -PARLEY_ECLOSED) {
				if (!rc)
					atomic_fetch_add_explicit(
						&c->n_fwd, 1, memory_order_relaxed);
				return rc;
			}
		}
	}
	return pe_append(c->e, q, cb, arg);
}

static uint64_t conv_hash(const char *conv, size_t len)
{
	uint64_t h = parley_xxh3(conv, len, 0x6b6e6f776e636f6eull);
	return h ? h : 1;
}

static bool known_has_locked(const struct chat *c, uint64_t h)
{
	if (!c->known)
		return false;
	uint32_t m = c->known_cap - 1;
	for (uint32_t i = (uint32_t)h & m;; i = (i + 1) & m) {
		if (c->known[i] == h)
			return true;
		if (c->known[i] == 0)
			return false;
	}
}

static void known_put(uint64_t *tab, uint32_t cap, uint64_t h)
{
	uint32_t m = cap - 1;
	uint32_t i = (uint32_t)h & m;
	while (tab[i] && tab[i] != h)
		i = (i + 1) & m;
	tab[i] = h;
}

/* Best effort: on allocation failure the cache just stays smaller. */
static void known_add_locked(struct chat *c, uint64_t h)
{
	if (known_has_locked(c, h))
		return;
	if (!c->known || (c->known_n + 1) * 4 > c->known_cap * 3) {
		uint32_t cap = c->known ? c->known_cap * 2 : 1024;
		if (cap > CHAT_KNOWN_MAX) {
			/* at the bound: forget everything, relearn on misses */
			memset(c->known, 0, (size_t)c->known_cap * sizeof *c->known);
			c->known_n = 0;
		} else {
			uint64_t *t = calloc(cap, sizeof *t);
			if (!t)
				return;
			for (uint32_t i = 0; c->known && i < c->known_cap; i++)
				if (c->known[i])
					known_put(t, cap, c->known[i]);
			free(c->known);
			c->known = t;
			c->known_cap = cap;
		}
	}
	known_put(c->known, c->known_cap, h);
	c->known_n++;
}

/* The checkpoint record (payload of a CHAT_ENT_WATERMARK entry):
 *   u8 version (2) | u32 np | np x u64 cursor
 * cursor[p] = a chat-clock value such that every conversation message of
 * partition p with ts < cursor[p] is fanned out durably. (Version 1 was a
 * bare u64 timestamp with a 10 s safety margin; still read.) */
#define WM_VERSION 2u

/* A fan-out or send of partition p failed because this node stopped
 * leading (or is handing over) a partition: p's outstanding work may not
 * be durable, so p's cursor may not advance until p's recovery runs again
 * (the leadership poll re-runs it while this node leads p). Under c->mu. */
static void lead_lost_locked(struct chat *c, uint32_t p, int err)
{
	if (err != -PARLEY_ENOTLEADER && err != -PARLEY_EAGAIN)
		return;
	c->led_term[p] = 0;
	c->redo[p] = true;
	c->lead_settled = false;
}

static void job_unlink_locked(struct chat *c, struct job *j)
{
	j->link.prev->next = j->link.next;
	j->link.next->prev = j->link.prev;
	c->npending -= j->nmsgs;
	c->pdone[j->part].done += j->nmsgs;
	c->gen++;
	c->pgen[j->part]++;
}

static void job_free(struct job *j)
{
	if (!j->rec_in_job)
		free(j->rec);
	parley_pool_free(j);
}

/* A zeroed job with `extra` bytes after it, from the calling thread's
 * block pool (parley_common.h): a live SEND's job is made on its loop and
 * usually freed on the conversation's shard, which returns it to the
 * loop's pool instead of freeing it into the loop's malloc arena (that
 * took the arena's lock against the loop's own mallocs). Freed with
 * job_free only. */
static struct job *job_alloc(size_t extra)
{
	struct job *j = parley_pool_alloc(sizeof *j + extra);
	if (j)
		memset(j, 0, sizeof *j);
	return j;
}

/* A live job with room for its conversation id (clen bytes) and its
 * record (rec_len bytes, j->rec) in one allocation; NULL when out of
 * memory. The caller fills conv and rec. */
static struct job *job_new(uint16_t clen, uint32_t rec_len)
{
	struct job *j = job_alloc(clen + (size_t)rec_len);
	if (!j)
		return NULL;
	j->rec = (uint8_t *)j->conv + clen;
	j->rec_len = rec_len;
	j->rec_in_job = true;
	return j;
}

static void job_done_locked(struct chat *c, struct job *j)
{
	if (j->t_durable && j->t_issued)
		srv_hist_since(&c->stage[CHAT_STAGE_INBOX], j->t_issued,
			       parley_mono_ns());
	job_unlink_locked(c, j);
	job_free(j);
	/* Only a stopping service waits for the outstanding jobs to drain
	 * (fanout_main), and a checkpoint is due early after CHAT_CKPT_MSGS
	 * registrations: otherwise no wake-up per message (the fan-out
	 * thread's timed wait covers the periodic checkpoint). */
	if (c->stop || (c->reg_total - c->ck_reg >= CHAT_CKPT_MSGS &&
			!c->ckpt_busy))
		pthread_cond_broadcast(&c->cv);
}

/* Registers j on partition p's list; start = clock now. Under c->mu. */
static void job_register_locked(struct chat *c, struct job *j, uint32_t p,
				uint64_t start)
{
	struct jlink *s = &c->out[p];
	struct pdone *d = &c->pdone[p];
	if (start > d->reg_ms) {
		d->ms_base = d->reg_done;
		d->reg_ms = start;
	}
	j->done_base = d->ms_base;
	d->reg_done = d->done;
	j->start = start;
	j->link.next = s;
	j->link.prev = s->prev;
	s->prev->next = &j->link;
	s->prev = &j->link;
	c->npending += j->nmsgs;
	c->reg_total += j->nmsgs;
	c->gen++;
	c->pgen[p]++;
}

/* Registers a recovery job on partition p's list at its place by start
 * (invariant 2), which may be below live jobs registered earlier when a
 * recovery runs while the service is up. Under c->mu. */
static void job_register_sorted_locked(struct chat *c, struct job *j,
				       uint32_t p, uint64_t start)
{
	struct jlink *s = &c->out[p], *at = s->next;
	while (at != s && ((const struct job *)at)->start <= start)
		at = at->next;
	j->done_base = 0; /* start may be old: every completion counts */
	j->start = start;
	j->link.next = at;
	j->link.prev = at->prev;
	at->prev->next = &j->link;
	at->prev = &j->link;
	c->npending += j->nmsgs;
	c->reg_total += j->nmsgs;
	c->gen++;
	c->pgen[p]++;
}

/* Queues j for the fan-out thread. A queued job carries one hold on
 * j->pending (so appends already issued for it cannot complete it while
 * it waits): added here unless the caller passes its own (held). */
static void queue_push_locked(struct chat *c, struct job *j, bool held)
{
	if (!held)
		j->pending++;
	j->next = NULL;
	if (c->qtail)
		c->qtail->next = j;
	else
		c->qhead = j;
	c->qtail = j;
	pthread_cond_broadcast(&c->cv);
}

static void fanout_append_cb(void *arg, const struct pe_append_result *r)
{
	struct job *j = arg;
	struct chat *c = j->c;
	if (!r->err) {
		/* the common case: no lock unless this completes the job */
		atomic_fetch_add_explicit(&c->n_appends, 1, memory_order_relaxed);
		if (--j->pending == 0) {
			pthread_mutex_lock(&c->mu);
			job_done_locked(c, j);
			pthread_mutex_unlock(&c->mu);
		}
		return;
	}
	pthread_mutex_lock(&c->mu);
	if (r->err == -PARLEY_ENOTLEADER || r->err == -PARLEY_EAGAIN) {
		/* a leader change: recovered by the next leader of j->part */
		c->st.fanout_errors++;
		lead_lost_locked(c, j->part, r->err);
		PLOG_D("chat", "fan-out append refused: leadership moved",
		       "conv=%.*s from=%" PRIu64 " err=%s", (int)j->len, j->conv,
		       j->from, parley_errname(r->err));
	} else if (r->err) {
		c->st.fanout_errors++;
		PLOG_E("chat", "fan-out append failed", "conv=%.*s from=%" PRIu64
		       " err=%s", (int)j->len, j->conv, j->from,
		       parley_errname(r->err));
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

/* A fan-out append refused for want of room (the shard's queue, or memory
 * for the engine's copy) is retried, never skipped: a skipped inbox
 * pointer would be a gap no recovery fills once the cursor passes it. */
static bool fanout_retry(int rc)
{
	return rc == -PARLEY_EFULL || rc == -PARLEY_ENOMEM;
}

/* Issues one planned append; while there is no room (fanout_retry),
 * retries (wait) or returns -PARLEY_EFULL. */
static int fanout_issue(struct chat *c, const struct chat_fanout_item *it,
			pe_append_cb cb, void *arg, bool wait)
{
	struct pe_input in = {.type = it->type,
			      .len = it->ext ? it->ext_len : it->len,
			      .payload = it->ext ? it->ext : it->payload};
	struct pe_append_req q = {.key = it->key, .klen = it->klen,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	memcpy(q.producer, it->producer, 16);
	for (;;) {
		int rc = chat_append(c, &q, cb, arg);
		if (!fanout_retry(rc))
			return rc;
		if (!wait)
			return -PARLEY_EFULL;
		sleep_ms(1);
	}
}

/* ---- checkpoints ------------------------------------------------------------------------- */

/* True when this node may write p's checkpoint: it leads p now (as
 * published) in the term p's recovery ran in. A checkpoint of p claims
 * "everything of p stamped below cur[p] is fanned out", true only while
 * every message of p since the last recovery passed through this node
 * (led_term[p] is cleared when a fan-out append or SEND of p failed
 * NOTLEADER / AGAIN, until p's recovery runs again). Other partitions
 * need not be led here: their leaders write their own. Under c->mu. */
static bool lead_ready_locked(struct chat *c, uint32_t p)
{
	struct pe_raft_status st;
	return c->led_term[p] && pe_raft_status(c->e, p, &st) == 0 &&
	       st.role == PE_LEADER && st.term == c->led_term[p];
}

/* Fills cur[np] from the outstanding lists. Under c->mu. The clock is
 * raised to t + 1 first, so every job registered later has start > t and
 * an empty partition's cursor t + 1 is exact (no entry of it can be
 * stamped below t + 1 any more). */
static void cursor_snapshot_locked(struct chat *c, uint64_t *cur)
{
	uint64_t t = chat_clock_ms(c->clock) + 1;
	chat_clock_raise(c->clock, t);
	uint64_t late = 0; /* completed, but at or past their cursor (pdone) */
	for (uint32_t p = 0; p < c->np; p++) {
		struct jlink *s = &c->out[p];
		const struct job *h = s->next != s ? (const struct job *)s->next
						   : NULL;
		cur[p] = h ? h->start : t;
		if (h)
			late += c->pdone[p].done - h->done_base;
		/* a cursor read from another leader's checkpoint may be above
		 * a job registered before recovery raised the clock (clock
		 * skew between nodes, docs/CLUSTER.md): never go back */
		if (cur[p] < c->cur[p])
			cur[p] = c->cur[p];
	}
	c->ck_reg = c->reg_total;
	c->ck_pending = c->npending + late;
	c->ckpt_gen = c->gen;
}

/* Partition p's checkpoint record (version 3, in s/fanout/<k>):
 *   u8 3 | u32 np | u32 p | u64 cursor */
#define WM_VERSION_PART 3u
#define WM_PART_BYTES 17u
static void wm_encode_part(const struct chat *c, uint32_t p, uint64_t cur,
			   uint8_t b[WM_PART_BYTES])
{
	b[0] = WM_VERSION_PART;
	le_put32(b + 1, c->np);
	le_put32(b + 5, p);
	le_put64(b + 9, cur);
}

/* p's checkpoint (cursor cur) is durable. */
static void ckpt_durable_locked(struct chat *c, uint32_t p, uint64_t cur)
{
	/* cursors never go back: the snapshot was taken >= c->cur
	 * (cursor_snapshot_locked), but a recovery may have raised c->cur[p]
	 * to another leader's cursor since */
	if (cur > c->cur[p])
		c->cur[p] = cur;
	c->ck_gen[p] = c->ck_snap[p];
}

/* The round's last append answered: the gauge's snapshot becomes the
 * durable one when every partition with news was written. */
static void ckpt_round_end_locked(struct chat *c)
{
	uint64_t mn = UINT64_MAX;
	bool all = !c->ck_failed;
	for (uint32_t p = 0; p < c->np; p++) {
		/* the smallest cursor of the partitions this node leads and
		 * fanned out something in (the others' are their leaders' to
		 * advance; an idle one's cursor need not move) */
		if (c->led_term[p] && c->pgen[p] && c->cur[p] < mn)
			mn = c->cur[p];
		if (c->pgen[p] != c->ck_gen[p] && !c->ck_in[p])
			all = false;
		c->ck_in[p] = false;
	}
	if (all) {
		c->dur_reg = c->ck_reg;
		c->dur_pending = c->ck_pending;
	}
	if (mn != UINT64_MAX)
		c->st.watermark_ms = mn;
	c->st.checkpoints++;
	c->ckpt_busy = false;
	if (c->ck_failed)
		c->ckpt_gen = c->gen - 1; /* try again */
	PLOG_D("chat", "fan-out checkpoint durable", "cursor_min_ms=%" PRIu64, mn);
}

static void ckpt_cb(void *arg, const struct pe_append_result *r)
{
	struct ckarg *a = arg;
	struct chat *c = a->c;
	pthread_mutex_lock(&c->mu);
	if (r->err) {
		PLOG_W("chat", "fan-out checkpoint failed", "partition=%u err=%s",
		       a->p, parley_errname(r->err));
		c->ck_failed = true; /* p stays due: tried again */
	} else {
		ckpt_durable_locked(c, a->p, c->ckpt_buf_cur[a->p]);
	}
	PARLEY_ASSERT(c->ck_out > 0);
	if (--c->ck_out == 0) {
		ckpt_round_end_locked(c);
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
}

static struct pe_append_req wm_req_part(const struct chat *c, uint32_t p,
					const struct pe_input *in)
{
	return (struct pe_append_req){.key = c->ckey[p], .klen = c->cklen[p],
				      .expected_last_seq = PE_NO_EXPECT,
				      .entries = in, .count = 1};
}

/* Partitions whose checkpoint is due and that this node may write now
 * (lead_ready_locked): marks ck_in[], returns how many. */
static uint32_t ckpt_due_locked(struct chat *c)
{
	uint32_t n = 0;
	for (uint32_t p = 0; p < c->np; p++) {
		c->ck_in[p] = c->pgen[p] != c->ck_gen[p] && lead_ready_locked(c, p);
		n += c->ck_in[p];
	}
	return n;
}

/* A checkpoint round is due when something was registered or completed
 * in a partition this node leads since that partition's last checkpoint,
 * and either CHAT_CKPT_INTERVAL_MS passed or CHAT_CKPT_MSGS messages were
 * registered. One append per such partition, to its own s/fanout/<k>
 * (local to its leader), asynchronously, one round at a time. An idle
 * server writes none. Called with c->mu held. */
static void ckpt_maybe_locked(struct chat *c)
{
	if (c->ckpt_busy || c->gen == c->ckpt_gen)
		return;
	uint64_t now = parley_mono_ns();
	if (now - c->last_ckpt_ns < CHAT_CKPT_INTERVAL_MS * 1000000ull &&
	    c->reg_total - c->ck_reg < CHAT_CKPT_MSGS)
		return;
	c->last_ckpt_ns = now;
	uint64_t gen = c->gen;
	if (ckpt_due_locked(c) == 0) {
		/* nothing this node may write: look again when something
		 * changes (or leadership does: the poll re-arms, below) */
		c->ckpt_gen = gen;
		return;
	}
	cursor_snapshot_locked(c, c->ckpt_buf_cur);
	c->ckpt_busy = true;
	c->ck_failed = false;
	c->ck_out = 1; /* our hold while issuing */
	for (uint32_t p = 0; p < c->np; p++) {
		if (!c->ck_in[p])
			continue;
		c->ck_snap[p] = c->pgen[p];
		uint8_t b[WM_PART_BYTES];
		wm_encode_part(c, p, c->ckpt_buf_cur[p], b);
		struct pe_input in = {.type = CHAT_ENT_WATERMARK,
				      .len = WM_PART_BYTES, .payload = b};
		struct pe_append_req q = wm_req_part(c, p, &in);
		c->ck_out++;
		/* local: p is led here; copies b, never blocks */
		int rc = pe_append(c->e, &q, ckpt_cb, &c->ckargs[p]);
		if (rc) {
			c->ck_out--;
			c->ck_failed = true;
			c->ck_in[p] = false;
		}
	}
	if (--c->ck_out == 0)
		ckpt_round_end_locked(c);
	if (c->ck_failed)
		c->ckpt_gen = gen - 1; /* try again */
}

/* ---- the fan-out thread ------------------------------------------------------------------- */

static void lead_poll_locked(struct chat *c);

struct group_issue {
	struct chat *c;
	struct job *j;
};

/* chat_groups_fanout's issue: count the append in the job, then issue it. */
static int group_issue(void *arg, const struct chat_fanout_item *it,
		       const uint8_t *payload, uint32_t len)
{
	struct group_issue *gi = arg;
	struct chat *c = gi->c;
	gi->j->pending++;
	int rc;
	if (payload) {
		struct pe_input in = {.type = it->type, .len = len,
				      .payload = payload};
		struct pe_append_req q = {.key = it->key, .klen = it->klen,
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		memcpy(q.producer, it->producer, 16);
		while (fanout_retry(rc = chat_append(c, &q, fanout_append_cb,
						    gi->j)))
			sleep_ms(1);
	} else {
		rc = fanout_issue(c, it, fanout_append_cb, gi->j, true);
	}
	if (rc) {
		struct pe_append_result r = {.err = rc};
		fanout_append_cb(gi->j, &r);
	}
	return 0;
}

/* One entry of a group conversation: read fan-out for a large group's
 * message (chat_fanout_read.c), else write fan-out (chat_group.c). Out of
 * memory half-way: again (the appends issued are idempotent; the read
 * fan-out fails only before posting anything), never skipped. */
static int group_fanout_one(struct chat *c, struct job *j,
			    const struct pe_entry *ent, struct group_issue *gi)
{
	for (;;) {
		unsigned cnt = 0;
		int rc = chat_rd_fanout(c, j->conv, j->len, ent, group_issue, gi);
		if (rc == 0)
			rc = chat_groups_fanout(c->groups, j->conv, j->len, ent,
						group_issue, gi, &cnt);
		else if (rc > 0)
			rc = 0;
		if (rc != -PARLEY_ENOMEM)
			return rc;
		sleep_ms(1);
	}
}

/* A group conversation's seqs from..to: the plan depends on each entry's
 * type and sender; each is fanned out to the members at its seq. A live job
 * still holds its record; a recovered one reads what it re-fans out. */
static void fanout_run_group(struct chat *c, struct job *j)
{
	struct group_issue gi = {c, j};
	if (j->rec && j->from == j->to) {
		/* live: the record is still in the job, no read needed */
		struct pe_entry ent = {.seq = j->from, .ts_ms = j->ts_ms,
				       .type = j->type, .len = j->rec_len,
				       .payload = j->rec};
		unsigned cnt = 0;
		(void)cnt;
		/* out of memory half-way: again (the appends issued are
		 * idempotent), never skipped */
		int rc = group_fanout_one(c, j, &ent, &gi);
		if (rc)
			PLOG_E("chat", "group fan-out failed", "conv=%.*s seq=%"
			       PRIu64 " err=%s", (int)j->len, j->conv, j->from,
			       parley_errname(rc));
		pthread_mutex_lock(&c->mu);
		c->st.fanout_jobs++;
		pthread_mutex_unlock(&c->mu);
		return;
	}
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, j->conv, j->len);
	uint64_t seq = j->from;
	while (kl > 0 && seq <= j->to) {
		uint64_t want = j->to - seq + 1;
		struct pe_read_req q = {.key = key, .klen = (size_t)kl,
					.from = seq, .dir = PE_FORWARD,
					.limit = want < PE_MAX_READ ? (uint32_t)want
								    : PE_MAX_READ};
		struct pe_entry *ents = NULL;
		uint32_t n = 0;
		struct pe_read_result meta;
		int rc = pe_read_sync(c->e, &q, &ents, &n, &meta);
		if (fanout_retry(rc)) {
			sleep_ms(1);
			continue;
		}
		if (rc == -PARLEY_ETRIMMED && meta.first_seq > seq) {
			seq = meta.first_seq;
			continue;
		}
		if (rc || n == 0) {
			if (rc)
				PLOG_E("chat", "group fan-out read failed", "conv=%.*s "
				       "seq=%" PRIu64 " err=%s", (int)j->len, j->conv,
				       seq, parley_errname(rc));
			free(ents);
			break;
		}
		for (uint32_t i = 0; i < n && ents[i].seq <= j->to; i++) {
			unsigned cnt = 0;
			(void)cnt;
			rc = group_fanout_one(c, j, &ents[i], &gi);
			if (rc)
				PLOG_E("chat", "group fan-out failed", "conv=%.*s seq=%"
				       PRIu64 " err=%s", (int)j->len, j->conv,
				       ents[i].seq, parley_errname(rc));
			pthread_mutex_lock(&c->mu);
			c->st.fanout_jobs++;
			pthread_mutex_unlock(&c->mu);
			seq = ents[i].seq + 1;
		}
		free(ents);
	}
}

/* Issues the appends of j's seqs. The caller holds one count of
 * j->pending. wait: retry a full engine queue in place (the fan-out
 * thread); else stop at the first -PARLEY_EFULL and return it (the
 * appends issued so far stay counted; a later re-issue of them is
 * deduplicated by their producers). buf: CHAT_PTR_INLINE_CAP bytes. */
static int fanout_run(struct chat *c, struct job *j, bool wait, uint8_t *buf)
{
	if (j->t_durable && !j->t_issued) {
		j->t_issued = parley_mono_ns();
		srv_hist_since(&c->stage[CHAT_STAGE_FANOUT], j->t_durable,
			       j->t_issued);
	}
	if (j->group || chat_conv_is_group(j->conv, j->len)) {
		/* groups: only on the fan-out thread (wait), never direct */
		PARLEY_ASSERT(wait);
		fanout_run_group(c, j);
		return 0;
	}
	for (uint64_t seq = j->from; seq <= j->to; seq++) {
		struct chat_fanout_plan plan;
		/* A live message's record is still here: carry it in the
		 * inbox pointers (delivery then needs no read). */
		int prc = j->rec ? chat_fanout_plan_inline(
					   j->conv, j->len, seq, j->ts_ms, j->rec,
					   j->rec_len, buf, CHAT_PTR_INLINE_CAP,
					   &plan)
				 : chat_fanout_plan(j->conv, j->len, seq, &plan);
		if (prc || plan.n == 0)
			break; /* not a conversation we know how to fan out */
		j->pending += plan.n;
		atomic_fetch_add_explicit(&c->n_jobs, 1, memory_order_relaxed);
		for (unsigned i = 0; i < plan.n; i++) {
			int rc = fanout_issue(c, &plan.item[i], fanout_append_cb, j,
					      wait);
			if (rc == -PARLEY_EFULL && !wait) {
				/* the items not issued will not complete */
				j->pending -= plan.n - i;
				atomic_fetch_sub_explicit(&c->n_jobs, 1,
							  memory_order_relaxed);
				return rc;
			}
			if (rc) {
				struct pe_append_result r = {.err = rc};
				fanout_append_cb(j, &r);
			}
		}
	}
	return 0;
}

static void *fanout_main(void *arg)
{
	struct chat *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		/* Stop only once nothing is outstanding: a send callback may
		 * still queue its job after chat_close() asked us to stop. */
		while (!c->qhead && !(c->stop && c->npending == 0)) {
			struct timespec dl;
			clock_gettime(CLOCK_REALTIME, &dl);
			/* jobs finishing do not wake us (job_done_locked):
			 * wake at the leadership poll's pace, which also
			 * keeps checkpoints within CHAT_CKPT_INTERVAL_MS */
			uint64_t ns = (uint64_t)dl.tv_nsec +
				      CHAT_LEAD_POLL_MS * 1000000ull;
			dl.tv_sec += (time_t)(ns / 1000000000ull);
			dl.tv_nsec = (long)(ns % 1000000000ull);
			pthread_cond_timedwait(&c->cv, &c->mu, &dl);
			lead_poll_locked(c);
			ckpt_maybe_locked(c);
		}
		if (!c->qhead)
			break;
		struct job *j = c->qhead;
		c->qhead = j->next;
		if (!c->qhead)
			c->qtail = NULL;
		c->fan_busy = true; /* the queue's hold on j is ours now */
		pthread_mutex_unlock(&c->mu);
		if (c->test_fanout_delay_ms && j->rec)
			sleep_ms(c->test_fanout_delay_ms); /* TEST-ONLY */
		fanout_run(c, j, true, c->inline_buf);
		pthread_mutex_lock(&c->mu);
		c->fan_busy = false;
		if (--j->pending == 0)
			job_done_locked(c, j);
		lead_poll_locked(c);
		ckpt_maybe_locked(c);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ---- SEND -------------------------------------------------------------------------------------- */

void chat_set_early(struct chat *c, chat_early_fn fn, void *arg)
{
	atomic_store(&c->early_arg, arg);
	atomic_store(&c->early, fn);
}

#define EARLY_FRAME_STACK 4096u

struct early_to {
	chat_early_fn fn;
	void *arg;
	const struct job *j;
	const uint8_t *frame;
	uint32_t len;
	uint64_t seq;
	unsigned posted;
};

static void early_to_member(void *arg, const char *user, size_t ulen, int role)
{
	struct early_to *t = arg;
	(void)role;
	t->posted += t->fn(t->arg, user, ulen, t->frame, t->len, t->j->conv,
			   t->j->len, t->seq, t->j->t_durable);
}

static void early_count(void *arg, const char *user, size_t ulen, int role)
{
	(void)arg, (void)user, (void)ulen, (void)role;
}

/* Early delivery of a message durable at seq (its send callback, on the
 * shard): its EVENT, encoded once, to the connections that asked for it
 * of each member at seq (chat.h, chat_set_early): both users of a 1:1
 * conversation, the members of a group fanned out by write (a group's
 * membership at seq was applied before this callback, in seq order;
 * read-mode groups deliver live by their own fan-out). Nothing here is
 * durable state: a post that fails is skipped, the inbox EVENT delivers. */
static void early_post(struct chat *c, const struct job *j, uint64_t seq,
		       uint64_t ts_ms)
{
	chat_early_fn fn = atomic_load(&c->early);
	if (!fn)
		return;
	struct chat_msg m;
	if (chat_msg_decode(j->rec, j->rec_len, &m))
		return;
	if (j->group) {
		/* membership in memory is exact where the group's entries
		 * are appended (chat_groups_ready), as for its fan-out */
		if (chat_groups_ready(c, j->conv, j->len) != 0)
			return;
		int cnt = chat_members_each(c, j->conv, j->len, seq, 0, 1,
					    early_count, NULL);
		if (cnt <= 0 ||
		    chat_rd_is_read(chat_group_read_min(c), (uint32_t)cnt))
			return;
	} else if (chat_conv_is_group(j->conv, j->len)) {
		return;
	}
	/* a parley_msg is ~16 KiB: one per thread, not on the stack */
	static _Thread_local struct parley_msg ev;
	memset(&ev, 0, sizeof ev);
	ev.type = PARLEY_T_EVENT;
	struct parley_event *e = &ev.event;
	e->inbox_seq = 0;
	e->kind = PARLEY_EV_MESSAGE;
	e->conv = (struct parley_str){j->conv, j->len};
	e->conv_seq = seq;
	e->sender = (struct parley_str){m.sender, m.sender_len};
	memcpy(e->client_msg_id, m.client_msg_id, 16);
	e->server_ts_ms = ts_ms;
	e->content_type = m.content_type;
	e->body = (struct parley_bytes){m.body, m.body_len};
	e->flags = PARLEY_MSGF_EARLY;
	int n = parley_proto_size(&ev);
	if (n <= 0)
		return;
	uint8_t stack[EARLY_FRAME_STACK];
	uint8_t *buf = (size_t)n <= sizeof stack ? stack : malloc((size_t)n);
	if (!buf)
		return;
	if (parley_proto_encode(buf, (size_t)n, 0, &ev) == n) {
		struct early_to t = {.fn = fn, .arg = atomic_load(&c->early_arg),
				     .j = j, .frame = buf, .len = (uint32_t)n,
				     .seq = seq};
		(void)chat_members_each(c, j->conv, j->len, seq, 0, 0,
					early_to_member, &t);
		if (t.posted)
			atomic_fetch_add_explicit(&c->n_early, t.posted,
						  memory_order_relaxed);
	}
	if (buf != stack)
		free(buf);
}

static void send_cb(void *arg, const struct pe_append_result *r)
{
	struct job *j = arg;
	struct chat *c = j->c;
	struct chat_send_result res = {.err = r->err, .seq = r->seq,
				       .ts_ms = r->ts_ms,
				       .duplicate = r->duplicate};
	bool refused = false;
	if (j->group && !r->err && !r->duplicate) {
		/* In the stream's seq order (this callback's): a membership
		 * event is applied before any later entry is answered, and a
		 * message whose sender was no longer a member at its seq is
		 * refused (stored, but never delivered nor shown). */
		int grc = chat_groups_on_durable(c->groups, j->conv, j->len,
						 r->seq, j->type, j->rec,
						 j->rec_len);
		if (grc && j->type == CHAT_ENT_MSG) {
			res.err = -PARLEY_EPERM;
			refused = true;
		}
	}
	j->t_durable = parley_mono_ns();
	res.t_durable_ns = j->t_durable; /* one reading for both stages */
	j->ts_ms = r->ts_ms;
	/* Durable (or failed): answer first, the fan-out follows. A
	 * NOTLEADER routes to the conversation partition's leader (route.h) */
	if (r->err == -PARLEY_ENOTLEADER)
		route_note(j->part, r->leader);
	j->cb(j->cb_arg, &res);
	/* Early delivery: the message is durable, its pointers are not yet
	 * issued (chat.h, chat_set_early); a refused group send reaches
	 * nobody. */
	if (!r->err && !r->duplicate && !refused && j->rec &&
	    j->type == CHAT_ENT_MSG)
		early_post(c, j, r->seq, r->ts_ms);
	/* the callback's note, and one a group's leader check in
	 * early_post may have left (route.h, invariant 1) */
	route_clear();
	pthread_mutex_lock(&c->mu);
	if (r->err || r->duplicate || refused) {
		/* a SEND refused NOTLEADER after registration may still be
		 * committed by the next leader: p is not ready any more */
		lead_lost_locked(c, j->part, r->err);
		/* nothing new to fan out (a duplicate's original was fanned
		 * out by its own job, or is >= a cursor and recovered) */
		job_done_locked(c, j);
	} else {
		PARLEY_ASSERT(r->ts_ms >= j->start);
		j->from = j->to = r->seq;
		if (c->qhead || c->fan_busy || j->group ||
		    c->test_fanout_delay_ms) {
			/* behind queued jobs (maybe of this conversation); a
			 * group's fan-out (hundreds of appends, retried while
			 * the engine queue is full) never runs on the shard */
			queue_push_locked(c, j, false);
		} else {
			/* Direct: issue the inbox appends here, on the shard,
			 * without the hop to the fan-out thread. Order holds: a
			 * conversation's callbacks run in seq order on one
			 * shard, and nothing is queued or being issued. */
			j->pending++; /* our hold while issuing */
			c->st.fanout_direct++;
			pthread_mutex_unlock(&c->mu);
			uint8_t buf[CHAT_PTR_INLINE_CAP];
			int rc = fanout_run(c, j, false, buf);
			if (rc == -PARLEY_EFULL) {
				pthread_mutex_lock(&c->mu);
				c->st.fanout_deferred++;
				queue_push_locked(c, j, true); /* the thread waits */
				pthread_mutex_unlock(&c->mu);
			} else if (--j->pending == 0) {
				pthread_mutex_lock(&c->mu);
				job_done_locked(c, j);
				pthread_mutex_unlock(&c->mu);
			}
			return;
		}
	}
	pthread_mutex_unlock(&c->mu);
}

/* A send that failed before its append: tell the caller (if asked),
 * unregister. */
static void send_fail(struct job *j, int err, bool call)
{
	struct chat *c = j->c;
	if (!j->rec_in_job)
		free(j->rec);
	j->rec = NULL;
	if (call) {
		struct chat_send_result res = {.err = err};
		j->cb(j->cb_arg, &res);
	}
	pthread_mutex_lock(&c->mu);
	job_done_locked(c, j);
	pthread_mutex_unlock(&c->mu);
}

static int send_append(struct job *j)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, j->conv, j->len);
	struct pe_input in = {.type = j->type, .len = j->rec_len,
			      .payload = j->rec};
	struct pe_append_req aq = {.key = key, .klen = (size_t)kl,
				   .expected_last_seq = PE_NO_EXPECT,
				   .entries = &in, .count = 1};
	memcpy(aq.producer, j->producer, 16);
	/* j (and its record, which the fan-out carries inline, and which
	 * groups check at its seq in send_cb) may be freed by send_cb before
	 * pe_append even returns: do not touch j after (pe_append copies the
	 * payload). */
	return pe_append(j->c->e, &aq, send_cb, j);
}

static int send_check_issue(struct job *j);

/* The outcome of one existence read: 1 = the conversation exists (go
 * on with the append), 0 = that record is empty (the next check, or not
 * found), < 0 = the read failed. Shard thread, or the peer thread for
 * a remote check (send_check_remote_cb). */
static void send_check_next(struct job *j, int found)
{
	struct chat *c = j->c;
	int rc;
	if (found < 0) {
		rc = found;
	} else if (found) {
		pthread_mutex_lock(&c->mu);
		known_add_locked(c, conv_hash(j->conv, j->len));
		pthread_mutex_unlock(&c->mu);
		rc = send_append(j);
	} else if (j->check != 1) {
		j->check = 1;
		rc = send_check_issue(j);
	} else {
		rc = -PARLEY_ENOTFOUND;
	}
	if (rc)
		send_fail(j, rc, true);
}

/* Existence check (cache miss): o/<conv> first (conversations opened by
 * CONV_OPEN), then c/<conv> (conversations that hold messages from before
 * CONV_OPEN was required). Shard thread. */
static void send_check_cb(void *arg, const struct pe_read_result *r)
{
	struct job *j = arg;
	send_check_next(j, r->err && r->err != -PARLEY_ETRIMMED
				   ? r->err
				   : r->count > 0 || r->last_seq > 0);
}

/* A remote check's answer (chat_set_remote_check): the peer thread. An
 * older build at the other end: o/<conv> is read here, as before. */
static void send_check_remote_cb(void *arg, int rc)
{
	struct job *j = arg;
	if (rc == -PARLEY_EVERSION) {
		j->check = 2;
		rc = send_check_issue(j);
		if (rc)
			send_fail(j, rc, true);
		return;
	}
	send_check_next(j, rc);
}

static int send_check_issue(struct job *j)
{
	struct chat *c = j->c;
	char key[CHAT_KEY_CAP];
	int kl = j->check != 1 ? chat_key_open(key, j->conv, j->len)
			       : chat_key_conv(key, j->conv, j->len);
	uint32_t p = pe_partition_of(c->e, key, (size_t)kl);
	/* o/<conv> lives in another partition than c/<conv>. A node that
	 * holds no replica of it (placement, docs/CLUSTER.md §3.7) cannot
	 * read it, not even linearizably (its own group there, if any, is
	 * stale: the read fails NOTLEADER): the partition's leader reads it
	 * (chat_conv_opened there) */
	chat_check_fn fn = atomic_load(&c->rcheck);
	if (j->check == 0 && fn && !route_holds(p)) {
		int rc = fn(atomic_load(&c->rcheck_arg), j->conv, j->len,
			    send_check_remote_cb, j);
		if (rc != -PARLEY_EVERSION) /* an older build: here */
			return rc ? -PARLEY_EAGAIN : 0;
	}
	/* o/<conv>'s partition maybe led by another node (which wrote it,
	 * forwarded, for CONV_OPEN): when this node does not lead it, read
	 * it linearizably, or a conversation opened a moment ago could read
	 * as "not found" here (its leader's own applied state is current
	 * enough) */
	bool remote = j->check != 1 && pe_partition_leader_check(c->e, p) != 0;
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1, .linearizable = remote};
	return pe_read(c->e, &q, send_check_cb, j);
}

struct opened_ctx {
	chat_check_cb cb;
	void *arg;
};

static void opened_cb(void *arg, const struct pe_read_result *r)
{
	struct opened_ctx *x = arg;
	x->cb(x->arg, r->err && r->err != -PARLEY_ETRIMMED
			      ? r->err
			      : r->count > 0 || r->last_seq > 0);
	free(x);
}

int chat_conv_opened(struct chat *c, const char *conv, uint16_t clen,
		     chat_check_cb cb, void *cb_arg)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_open(key, conv, clen);
	if (kl < 0)
		return kl;
	struct opened_ctx *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	x->cb = cb;
	x->arg = cb_arg;
	/* linearizable: on the leader a ReadIndex round (§3.5); a node that
	 * lost the leadership meanwhile answers NOTLEADER and the asker
	 * asks the new one — at once when it holds no replica of the
	 * partition any more (route_read: its group there is stale, a read
	 * would wait out the ReadIndex bound). The asker is another node:
	 * no connection here takes the refusal's note. */
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1, .linearizable = true};
	int rc = route_read(c->e, &q, opened_cb, x);
	if (rc == -PARLEY_ENOTLEADER)
		route_clear();
	if (rc)
		free(x);
	return rc;
}

/* Stores j's record (an entry of `type`) in c/<conv> with `producer` and
 * registers its fan-out: the common path of SEND and of EDIT / DELETE
 * (chat_conv_append). j comes from job_new with conv and rec filled in;
 * it is taken over (freed here on failure). */
static int conv_append(struct chat *c, struct job *j, uint16_t type,
		       const uint8_t producer[16], chat_send_cb cb, void *arg)
{
	const char *conv = j->conv;
	uint16_t clen = j->len;
	bool group = chat_conv_is_group(conv, clen);
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, conv, clen);
	if (kl < 0) {
		job_free(j);
		return -PARLEY_ENOTFOUND;
	}
	/* a cluster: a node that does not lead the conversation's partition
	 * may not have applied its creation yet: redirect, never "not found"
	 * (docs/CLUSTER.md, routing) */
	uint32_t p = pe_partition_of(c->e, key, (size_t)kl);
	int lrc = route_leader_check(c->e, p);
	if (lrc) {
		job_free(j);
		return lrc;
	}
	j->c = c;
	j->nmsgs = 1;
	j->cb = cb;
	j->cb_arg = arg;
	j->type = type;
	j->group = group;
	memcpy(j->producer, producer, 16);
	j->part = p;
	uint64_t h = conv_hash(conv, clen);
	/* Register BEFORE the append: the cursor of p cannot pass this
	 * message until its fan-out is durable, even if we crash between
	 * the ack and the fan-out. */
	pthread_mutex_lock(&c->mu);
	bool known = group || known_has_locked(c, h);
	job_register_locked(c, j, p, chat_clock_ms(c->clock));
	pthread_mutex_unlock(&c->mu);
	int rc = known ? send_append(j) : send_check_issue(j);
	if (rc)
		send_fail(j, rc, false);
	return rc;
}

int chat_conv_append(struct chat *c, const char *conv, uint16_t clen,
		     uint16_t type, const uint8_t *rec, uint32_t rec_len,
		     const uint8_t producer[16], chat_send_cb cb, void *arg)
{
	if (rec_len > PE_MAX_PAYLOAD)
		return -PARLEY_ETOOBIG;
	struct job *j = job_new(clen, rec_len);
	if (!j)
		return -PARLEY_ENOMEM;
	j->len = clen;
	memcpy(j->conv, conv, clen);
	memcpy(j->rec, rec, rec_len);
	return conv_append(c, j, type, producer, cb, arg);
}

void chat_scrub_attach(struct chat *c, struct chat_scrub *x)
{
	c->scrub = x;
}

struct chat_scrub *chat_scrub_of(const struct chat *c)
{
	return c->scrub;
}

struct chat_floors *chat_floors_of(const struct chat *c)
{
	return c->floors;
}

uint64_t chat_now_ms(const struct chat *c)
{
	return chat_clock_ms(c->clock);
}

int chat_send(struct chat *c, const struct chat_send_req *q, chat_send_cb cb,
	      void *arg)
{
	if (chat_conv_is_group(q->conv, q->conv_len)) {
		int grc = chat_groups_ready(c, q->conv, q->conv_len);
		if (!grc)
			grc = chat_groups_send_check(c->groups, q->conv,
						     q->conv_len, q->sender,
						     q->sender_len);
		if (grc)
			return grc;
	} else if (!chat_conv_has_member(q->conv, q->conv_len, q->sender,
					 q->sender_len)) {
		struct chat_member mm[2];
		return chat_conv_members(q->conv, q->conv_len, mm) < 0
			       ? -PARLEY_ENOTFOUND
			       : -PARLEY_EPERM;
	}
	char key[CHAT_KEY_CAP];
	if (chat_key_conv(key, q->conv, q->conv_len) < 0)
		return -PARLEY_ENOTFOUND;
	struct chat_msg cm = {.sender = q->sender, .sender_len = q->sender_len,
			      .content_type = q->content_type,
			      .body = q->body, .body_len = q->body_len};
	memcpy(cm.client_msg_id, q->client_msg_id, 16);
	int n = chat_msg_encode(NULL, 0, &cm);
	if (n < 0 || (uint32_t)n > PE_MAX_PAYLOAD)
		return -PARLEY_ETOOBIG;
	/* one allocation per SEND: the job with the conversation id and
	 * the record */
	struct job *j = job_new(q->conv_len, (uint32_t)n);
	if (!j)
		return -PARLEY_ENOMEM;
	j->len = q->conv_len;
	memcpy(j->conv, q->conv, q->conv_len);
	chat_msg_encode(j->rec, (size_t)n, &cm);
	uint8_t producer[16];
	chat_producer_send(producer, q->sender, q->sender_len,
			   q->client_msg_id);
	return conv_append(c, j, CHAT_ENT_MSG, producer, cb, arg);
}

/* ---- CONV_OPEN ----------------------------------------------------------------------------- */

struct open_ctx;
struct open_item {
	struct open_ctx *x;
	bool self;
	uint32_t part; /* its key's partition */
};

struct open_ctx {
	struct chat *c;
	chat_open_cb cb;
	void *arg;
	atomic_int pending;
	_Atomic int err;
	atomic_bool created;
	/* the first NOTLEADER: its partition + 1 and leader hint (route.h) */
	_Atomic uint32_t nl_part;
	_Atomic uint64_t nl_leader;
	struct open_item item[CHAT_FANOUT_MAX_ITEMS]; /* append contexts */
	struct chat_conv_info info;
};

static void open_finish(struct open_ctx *x, int err)
{
	if (err)
		x->info.err = err;
	if (!x->info.err) {
		pthread_mutex_lock(&x->c->mu);
		known_add_locked(x->c, conv_hash(x->info.conv, x->info.conv_len));
		pthread_mutex_unlock(&x->c->mu);
	}
	uint32_t np = atomic_load(&x->nl_part);
	if (x->info.err == -PARLEY_ENOTLEADER && np)
		route_note(np - 1, atomic_load(&x->nl_leader));
	x->cb(x->arg, &x->info);
	route_clear();
	free(x);
}

static void open_meta_cb(void *arg, const struct pe_read_result *r)
{
	struct open_ctx *x = arg;
	if (!r->err) {
		x->info.last_seq = r->last_seq;
		x->info.last_ts_ms = r->count ? r->entries[0].ts_ms : 0;
	}
	open_finish(x, r->err == -PARLEY_ETRIMMED ? 0 : r->err);
}

static void open_next(struct open_ctx *x)
{
	int err = atomic_load(&x->err);
	if (err) {
		open_finish(x, err);
		return;
	}
	x->info.created = atomic_load(&x->created);
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, x->info.conv, x->info.conv_len);
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1};
	int rc = pe_read(x->c->e, &q, open_meta_cb, x);
	if (rc)
		open_finish(x, rc);
}

static void open_item_cb(void *arg, const struct pe_append_result *r)
{
	struct open_item *a = arg;
	struct open_ctx *x = a->x;
	if (r->err == -PARLEY_ENOTLEADER) {
		uint32_t none = 0;
		if (atomic_compare_exchange_strong(&x->nl_part, &none,
						   a->part + 1))
			atomic_store(&x->nl_leader, r->leader);
	}
	if (r->err)
		atomic_store(&x->err, r->err);
	else if (a->self && !r->duplicate)
		atomic_store(&x->created, true);
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		open_next(x);
}

int chat_conv_open(struct chat *c, const char *user, size_t ulen,
		   const char *peer, size_t plen, chat_open_cb cb, void *arg)
{
	if (!parley_proto_user_id_valid(peer, plen))
		return -PARLEY_EINVAL;
	struct open_ctx *x = calloc(1, sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	int n = parley_proto_dm_conv_id(user, ulen, peer, plen, x->info.conv,
					sizeof x->info.conv);
	struct chat_fanout_plan plan;
	if (n < 0 || chat_list_plan(x->info.conv, (size_t)n, &plan) ||
	    plan.n != 2) {
		free(x);
		return -PARLEY_EINVAL; /* the caller itself, or a bad id */
	}
	/* Where the conversation's partition is held (route.h): its reply
	 * carries c/<conv>'s last seq and time (open_next), which a node
	 * without a replica of it would read from an old copy. Elsewhere
	 * refused at once, naming the partition, before any write: the
	 * gateway forwards the CONV_OPEN to its leader. */
	char ck[CHAT_KEY_CAP];
	int ckl = chat_key_conv(ck, x->info.conv, (size_t)n);
	int hrc = ckl < 0 ? -PARLEY_EINVAL
			  : route_hold_check(c->e, ck, (size_t)ckl);
	if (hrc) {
		free(x);
		return hrc;
	}
	x->c = c;
	x->cb = cb;
	x->arg = arg;
	x->info.conv_len = (uint16_t)n;
	chat_conv_members(x->info.conv, (size_t)n, x->info.members);
	/* The o/ marker makes the conversation exist for SEND; the list
	 * entries put it in both users' lists. All idempotent. */
	struct chat_fanout_item *mk = &plan.item[plan.n];
	int kl = chat_key_open(mk->key, x->info.conv, (size_t)n);
	PARLEY_ASSERT(kl > 0 && plan.n < CHAT_FANOUT_MAX_ITEMS);
	mk->klen = (uint8_t)kl;
	mk->type = CHAT_ENT_OPEN;
	mk->len = (uint16_t)chat_list_encode(mk->payload, sizeof mk->payload,
					     x->info.conv, (size_t)n);
	chat_producer_open(mk->producer, x->info.conv, (size_t)n);
	plan.n++;
	atomic_store(&x->pending, (int)plan.n);
	for (unsigned i = 0; i < plan.n; i++) {
		struct chat_fanout_item *it = &plan.item[i];
		struct open_item *a = &x->item[i];
		a->x = x;
		/* the caller's list key is "l/<caller>" */
		a->self = it->type == CHAT_ENT_LIST && it->klen == 2 + ulen &&
			  memcmp(it->key + 2, user, ulen) == 0;
		a->part = pe_partition_of(c->e, it->key, it->klen);
		struct pe_input in = {.type = it->type, .len = it->len,
				      .payload = it->payload};
		struct pe_append_req q = {.key = it->key, .klen = it->klen,
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		memcpy(q.producer, it->producer, 16);
		int rc = chat_append(c, &q, open_item_cb, a);
		if (rc) {
			struct pe_append_result r = {.err = rc};
			open_item_cb(a, &r);
		}
	}
	return 0;
}

void chat_conv_msg(const struct chat_conv_info *r, struct parley_msg *m)
{
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_CONV;
	m->conv.conv = (struct parley_str){r->conv, r->conv_len};
	m->conv.kind = PARLEY_CONV_DIRECT;
	m->conv.flags = r->created ? PARLEY_CONVF_CREATED : 0;
	m->conv.last_seq = r->last_seq;
	m->conv.last_ts_ms = r->last_ts_ms;
	m->conv.member_count = 2;
	for (int i = 0; i < 2; i++)
		m->conv.members[i] = (struct parley_str){
			r->members[i].p, (uint16_t)r->members[i].len};
}

struct pe_engine *chat_engine(const struct chat *c)
{
	return c->e;
}

struct send_wait {
	struct latch l;
	struct chat_send_result r;
};

static void send_wait_cb(void *arg, const struct chat_send_result *r)
{
	struct send_wait *w = arg;
	w->r = *r;
	latch_open(&w->l);
}

int chat_send_sync(struct chat *c, const struct chat_send_req *q,
		   struct chat_send_result *out)
{
	struct send_wait w = {.l = LATCH_INIT};
	int rc = chat_send(c, q, send_wait_cb, &w);
	if (rc)
		return rc;
	latch_wait(&w.l);
	*out = w.r;
	return w.r.err;
}

const char *chat_stage_name(enum chat_stage s)
{
	static const char *const names[CHAT_STAGE_COUNT] = {"fanout", "inbox"};
	return (unsigned)s < CHAT_STAGE_COUNT ? names[s] : NULL;
}

void chat_stage_stats(struct chat *c, struct pe_stage_hist out[CHAT_STAGE_COUNT])
{
	for (unsigned k = 0; k < CHAT_STAGE_COUNT; k++)
		srv_hist_read(&c->stage[k], &out[k]);
}

void chat_get_stats(struct chat *c, struct chat_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	out->fanout_jobs += atomic_load_explicit(&c->n_jobs, memory_order_relaxed);
	out->fanout_appends += atomic_load_explicit(&c->n_appends,
						    memory_order_relaxed);
	out->fanout_pending = c->npending;
	out->fanout_uncheckpointed = c->reg_total - c->dur_reg + c->dur_pending;
	out->early_posted = atomic_load_explicit(&c->n_early,
						 memory_order_relaxed);
	pthread_mutex_unlock(&c->mu);
	chat_groups_stats(c->groups, &out->groups, &out->group_changes,
			  &out->group_refused);
}

/* ---- recovery ------------------------------------------------------------------------------ */

struct conv_todo {
	struct conv_todo *next;
	uint64_t last_seq;
	uint32_t part;
	uint8_t klen;
	char key[];
};

struct scan_ctx {
	struct chat *c;
	bool live;                /* the service runs: no unlocked cache use */
	const uint64_t *cur;
	uint32_t part;
	uint64_t max_ts;
	uint64_t streams;
	struct conv_todo *todo;
	int err;
};

static int scan_stream_cb(void *arg, const void *key, size_t klen,
			  const struct pe_meta *meta)
{
	struct scan_ctx *s = arg;
	s->streams++;
	if (meta->last_ts_ms > s->max_ts)
		s->max_ts = meta->last_ts_ms;
	if (!s->live && klen > 2 && meta->last_seq > 0 &&
	    (!memcmp(key, "o/", 2) || !memcmp(key, "c/", 2)))
		known_add_locked(s->c, conv_hash((const char *)key + 2, klen - 2));
	/* group state: loaded here at open; on gaining leadership
	 * chat_groups_reload replaces that partition's groups */
	if (!s->live && klen > 2 && meta->last_seq > 0 &&
	    !memcmp(key, "c/", 2) &&
	    chat_groups_note(s->c->groups, (const char *)key + 2, klen - 2,
			     meta->last_seq)) {
		s->err = -PARLEY_ENOMEM;
		return 1;
	}
	if (klen < 3 || memcmp(key, "c/", 2) != 0 || meta->last_seq == 0 ||
	    meta->last_ts_ms < s->cur[s->part])
		return 0;
	struct conv_todo *t = malloc(sizeof *t + klen);
	if (!t) {
		s->err = -PARLEY_ENOMEM;
		return 1;
	}
	t->last_seq = meta->last_seq;
	t->part = s->part;
	t->klen = (uint8_t)klen;
	memcpy(t->key, key, klen);
	t->next = s->todo;
	s->todo = t;
	return 0;
}

/* The first seq of the conversation whose ts >= from_ts (timestamps are
 * non-decreasing within a stream: the chat clock never goes back). Reads
 * backwards from the end: the cost is what is past the cursor. */
static int recover_first_seq(struct chat *c, const struct conv_todo *t,
			     uint64_t from_ts, uint64_t *first)
{
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
	*first = start;
	return 0;
}

/* Raises cur[p] for each p in want[] to p's own last checkpoint
 * (s/fanout/<k>, version 3). A read that fails leaves cur[p] as it is:
 * any durable cursor is a valid lower bound (a lower one re-fans out
 * more, idempotently). */
static void recover_cursor_parts(struct chat *c, const bool *want,
				 uint64_t *cur)
{
	for (uint32_t p = 0; p < c->np; p++) {
		if (!want[p])
			continue;
		struct pe_read_req q = {.key = c->ckey[p], .klen = c->cklen[p],
					.from = UINT64_MAX, .dir = PE_BACKWARD,
					.limit = 1};
		struct pe_entry *ents = NULL;
		uint32_t n = 0;
		struct pe_read_result meta;
		int rc = pe_read_sync(c->e, &q, &ents, &n, &meta);
		if (rc) {
			PLOG_W("chat", "partition's fan-out checkpoint not readable: "
			       "using the lower cursor held", "partition=%u err=%s",
			       p, parley_errname(rc));
		} else if (n == 1 && ents[0].len == WM_PART_BYTES &&
			   ents[0].payload[0] == WM_VERSION_PART &&
			   le_get32(ents[0].payload + 1) == c->np &&
			   le_get32(ents[0].payload + 5) == p) {
			uint64_t v = le_get64(ents[0].payload + 9);
			if (v > cur[p])
				cur[p] = v;
		} else if (n == 1) {
			PLOG_E("chat", "partition's fan-out checkpoint not understood",
			       "partition=%u len=%u", p, ents[0].len);
		}
		free(ents);
	}
}

/* Reads the last whole-cluster checkpoint (s/fanout, versions 1 and 2,
 * written before checkpoints were per partition) into cur[np] (left as
 * it is when there is none or it is not understood). */
static int recover_cursor(struct chat *c, uint64_t *cur)
{
	struct pe_read_req q = {.key = WM_KEY, .klen = sizeof WM_KEY - 1,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1};
	struct pe_entry *ents = NULL;
	uint32_t n = 0;
	struct pe_read_result meta;
	int rc = pe_read_sync(c->e, &q, &ents, &n, &meta);
	if (rc == -PARLEY_ECORRUPT) {
		/* The engine refuses to serve that partition; the others must
		 * still be served: rescan everything instead. */
		PLOG_E("chat", "fan-out checkpoint unreadable (partition corrupt): "
		       "rescanning every conversation", "err=%s",
		       parley_errname(rc));
		return 0;
	}
	if (rc)
		return rc;
	if (n == 1 && ents[0].len == 8) {
		/* version 1: one timestamp with a 10 s margin */
		uint64_t w = le_get64(ents[0].payload);
		w = w > CHAT_FANOUT_MARGIN_MS ? w - CHAT_FANOUT_MARGIN_MS : 0;
		for (uint32_t p = 0; p < c->np; p++)
			cur[p] = w;
	} else if (n == 1 && ents[0].len == 5 + 8 * (size_t)c->np &&
		   ents[0].payload[0] == WM_VERSION &&
		   le_get32(ents[0].payload + 1) == c->np) {
		for (uint32_t p = 0; p < c->np; p++)
			cur[p] = le_get64(ents[0].payload + 5 + 8 * (size_t)p);
	} else if (n == 1) {
		PLOG_E("chat", "fan-out checkpoint not understood: rescanning "
		       "every conversation", "len=%u", ents[0].len);
	}
	free(ents);
	return 0;
}

/*
 * Recovery of the partitions marked in want[] (all of them at chat_open,
 * before clients are served; at runtime the partitions this node just
 * came to lead): read the cursors, list those partitions' streams
 * (metadata only), and for each conversation with messages stamped at or
 * after its partition's cursor queue one job "fan out seqs first..last".
 * Nothing is fanned out here. The jobs are registered with start = the
 * cursor, so the next checkpoint keeps the cursor until they are done, and
 * (at open) they sit at the head of the queue, ahead of every live
 * message. Inbox appends are idempotent, so messages fanned out before a
 * crash or a leader change are never doubled. live: the service runs
 * (c->mu taken around shared state; at open nothing else runs yet).
 * queue[p]: queue p's jobs (at open: the partitions this node can write).
 */
static int recover_parts(struct chat *c, const bool *want, const bool *queue,
			 bool live, unsigned *nconv_out)
{
	uint64_t *cur = malloc((size_t)c->np * sizeof *cur);
	if (!cur)
		return -PARLEY_ENOMEM;
	if (live)
		pthread_mutex_lock(&c->mu);
	memcpy(cur, c->cur, (size_t)c->np * sizeof *cur);
	if (live)
		pthread_mutex_unlock(&c->mu);
	int rc = recover_cursor(c, cur);
	if (!rc)
		recover_cursor_parts(c, want, cur);
	if (rc && live) {
		/* e.g. s/fanout's partition is led elsewhere and its leader is
		 * catching up: the cursors this node holds are valid promises
		 * too (lower ones re-fan out more, idempotently) */
		PLOG_W("chat", "fan-out checkpoint not readable: recovering from "
		       "the cursors held in memory", "err=%s", parley_errname(rc));
		memcpy(cur, c->cur, (size_t)c->np * sizeof *cur);
		recover_cursor_parts(c, want, cur);
		rc = 0;
	}
	if (rc) {
		free(cur);
		return rc;
	}
	uint64_t maxcur = 0, mincur = UINT64_MAX;
	if (live)
		pthread_mutex_lock(&c->mu);
	for (uint32_t p = 0; p < c->np; p++) {
		/* every durable cursor is a valid promise: keep the larger */
		if (want[p] && cur[p] > c->cur[p])
			c->cur[p] = cur[p];
		cur[p] = c->cur[p];
		maxcur = PARLEY_MAX(maxcur, c->cur[p]);
		mincur = PARLEY_MIN(mincur, c->cur[p]);
	}
	if (!live)
		c->st.watermark_ms = mincur;
	if (live)
		pthread_mutex_unlock(&c->mu);
	struct scan_ctx s = {.c = c, .live = live, .cur = cur};
	for (uint32_t p = 0; p < c->np; p++) {
		if (!want[p])
			continue;
		s.part = p;
		rc = pe_list_streams(c->e, p, scan_stream_cb, &s);
		if (rc == -PARLEY_ECORRUPT) {
			PLOG_E("chat", "partition corrupt: its conversations are "
			       "not recovered", "partition=%u", p);
			rc = 0;
			continue;
		}
		if (rc || s.err)
			break;
	}
	if (!rc)
		rc = s.err;
	/* Never hand out a timestamp older than one already stored, nor one
	 * below a durable cursor (the cursor's promise covers ts < cursor). */
	chat_clock_raise(c->clock, PARLEY_MAX(s.max_ts, maxcur));
	unsigned nconv = 0;
	uint64_t nmsgs = 0;
	while (s.todo) {
		struct conv_todo *t = s.todo;
		s.todo = t->next;
		uint64_t first = 0;
		if (!rc) {
			rc = recover_first_seq(c, t, cur[t->part], &first);
			if (rc == -PARLEY_ECORRUPT) {
				PLOG_E("chat", "conversation not recovered: its "
				       "partition is corrupt", "stream=%.*s",
				       (int)t->klen, t->key);
				rc = 0;
				first = 0;
			}
		}
		if (!rc && !live && first >= 1 && first <= t->last_seq)
			chat_groups_note_first(c->groups, t->key + 2, t->klen - 2u,
					       first);
		if (!rc && queue[t->part] && first >= 1 && first <= t->last_seq) {
			struct job *j = job_alloc(t->klen - 2u);
			if (!j) {
				rc = -PARLEY_ENOMEM;
			} else {
				j->c = c;
				j->from = first;
				j->to = t->last_seq;
				j->part = t->part;
				j->nmsgs = t->last_seq - first + 1;
				j->len = (uint16_t)(t->klen - 2u);
				memcpy(j->conv, t->key + 2, j->len);
				if (live)
					pthread_mutex_lock(&c->mu);
				job_register_sorted_locked(c, j, t->part,
							   cur[t->part]);
				queue_push_locked(c, j, false);
				c->st.fanout_recovered += j->nmsgs;
				if (live)
					pthread_mutex_unlock(&c->mu);
				nmsgs += j->nmsgs;
				nconv++;
				PLOG_D("chat", "fan-out resumes", "conv=%.*s from_seq=%"
				       PRIu64 " to_seq=%" PRIu64, (int)j->len,
				       j->conv, j->from, j->to);
			}
		}
		free(t);
	}
	PLOG_I("chat", live ? "fan-out recovery planned (leadership gained)"
			    : "fan-out recovery planned",
	       "cursor_min_ms=%" PRIu64 " streams=%" PRIu64 " conversations=%u"
	       " messages=%" PRIu64 " err=%s", mincur, s.streams, nconv, nmsgs,
	       rc ? parley_errname(rc) : "none");
	free(cur);
	*nconv_out = nconv;
	return rc;
}

static int recover(struct chat *c)
{
	bool *all = malloc(c->np * sizeof *all);
	bool *queue = malloc(c->np * sizeof *queue);
	if (!all || !queue) {
		free(all);
		free(queue);
		return -PARLEY_ENOMEM;
	}
	/* Every partition is scanned (the clock floor, the known cache);
	 * only those this node can write now get jobs: on a cluster node
	 * that does not lead yet, the leadership poll recovers them when it
	 * does (a single node leads everything from the start). */
	for (uint32_t p = 0; p < c->np; p++) {
		struct pe_raft_status st;
		all[p] = true;
		queue[p] = pe_partition_leader_check(c->e, p) == 0 &&
			   pe_raft_status(c->e, p, &st) == 0 &&
			   st.role == PE_LEADER;
		c->led_term[p] = queue[p] ? st.term : 0;
		atomic_store(&c->grp_term[p], c->led_term[p]);
	}
	unsigned nconv = 0;
	int rc = recover_parts(c, all, queue, false, &nconv);
	free(all);
	free(queue);
	/* Group membership: last snapshots + the events after them that the
	 * cursors do not cover (before the fan-out thread plans anything). */
	if (!rc)
		rc = chat_groups_load(c->groups, c->e);
	/* Nothing registered yet counts as checkpointed: the durable cursor
	 * covers everything before the jobs just queued. */
	c->dur_reg = c->ck_reg = 0;
	c->dur_pending = c->ck_pending = 0;
	c->ckpt_gen = nconv ? 0 : c->gen;
	for (uint32_t p = 0; p < c->np; p++)
		if (c->out[p].next == &c->out[p]) /* nothing recovered in p */
			c->ck_gen[p] = c->pgen[p];
	return rc;
}

/* ---- leadership (a cluster) ------------------------------------------------------------- */

/*
 * Fan-out thread, c->mu held (released while a recovery runs). At most
 * every CHAT_LEAD_POLL_MS: compares each partition's published Raft role
 * and term with led_term. A partition this node no longer leads becomes
 * not ready (its jobs' appends fail NOTLEADER by themselves; nothing is
 * checkpointed meanwhile). A partition it leads in a term it has not
 * recovered in is recovered once the node can write it
 * (pe_partition_leader_check: it applied everything its predecessor
 * committed, so the partition's streams are complete; the checkpoint is
 * read from s/fanout as applied here, or the cursors held in memory when
 * that read fails: any durable cursor is a valid lower bound): the
 * recovery's jobs re-fan out everything stamped at or after the durable
 * cursor, including whatever the previous leader had in flight.
 */
static void lead_poll_locked(struct chat *c)
{
	uint64_t now = parley_mono_ns();
	if (now - c->lead_poll_ns < CHAT_LEAD_POLL_MS * 1000000ull)
		return;
	c->lead_poll_ns = now;
	/* no partition changed role or term since a scan that left nothing
	 * to do: nothing to do now either (64 status reads saved per poll) */
	uint64_t gen = pe_raft_status_gen(c->e);
	if (c->lead_settled && gen == c->lead_gen)
		return;
	c->lead_gen = gen;
	c->lead_settled = true;
	bool *want = calloc(c->np, sizeof *want);
	uint64_t *term = calloc(c->np, sizeof *term);
	if (!want || !term) {
		free(want);
		free(term);
		c->lead_settled = false;
		return; /* tried again at the next poll */
	}
	bool any = false;
	for (uint32_t p = 0; p < c->np; p++) {
		struct pe_raft_status st;
		if (pe_raft_status(c->e, p, &st) || st.role != PE_LEADER) {
			if (c->led_term[p])
				PLOG_I("chat", "fan-out: partition led elsewhere now",
				       "partition=%u", p);
			c->led_term[p] = 0;
			continue;
		}
		if (c->led_term[p] == st.term)
			continue;
		c->led_term[p] = 0;
		c->lead_settled = false; /* led, not ready: scan again */
		/* again in the same term (a fan-out append failed NOTLEADER /
		 * AGAIN, e.g. to an inbox whose partition is led elsewhere
		 * during a transfer): not more often than CHAT_LEAD_RETRY_MS */
		if (c->rec_term[p] == st.term &&
		    now - c->rec_ns[p] < CHAT_LEAD_RETRY_MS * 1000000ull)
			continue;
		if (pe_partition_leader_check(c->e, p) == 0) {
			c->rec_term[p] = st.term;
			c->rec_ns[p] = now;
			want[p] = true;
			term[p] = st.term;
			c->redo[p] = false;
			any = true;
		}
	}
	if (any) {
		pthread_mutex_unlock(&c->mu);
		unsigned nconv = 0;
		int rc = recover_parts(c, want, want, true, &nconv);
		/* group membership: what the predecessor changed (requests
		 * about these groups get AGAIN until grp_term says done).
		 * Once per term: afterwards this node is the only writer and
		 * its memory is current (a reload then could race a change in
		 * flight). */
		for (uint32_t p = 0; p < c->np; p++) {
			bool once = want[p] &&
				    atomic_load(&c->grp_term[p]) != term[p];
			int grc = once ? chat_groups_reload(c->groups, c->e, p)
				       : 0;
			if (grc) {
				PLOG_W("chat", "group reload after a leader change "
				       "failed: retried", "partition=%u err=%s", p,
				       parley_errname(grc));
				want[p] = false;
				rc = rc ? rc : grc;
			}
		}
		pthread_mutex_lock(&c->mu);
		for (uint32_t p = 0; p < c->np; p++) {
			if (!want[p])
				continue;
			atomic_store(&c->grp_term[p], term[p]);
			/* ready in the term it was recovered in, unless a
			 * failure marked it meanwhile (then: again) */
			if (!rc && !c->redo[p])
				c->led_term[p] = term[p];
		}
		c->st.lead_recoveries++;
		c->ckpt_gen = c->gen - 1; /* p's checkpoint may be due now */
		if (rc)
			PLOG_W("chat", "fan-out recovery after a leader change "
			       "failed: retried", "err=%s", parley_errname(rc));
	}
	free(want);
	free(term);
}

static void chat_free(struct chat *c)
{
	/* only jobs that never reached the thread remain */
	while (c->qhead) {
		struct job *j = c->qhead;
		c->qhead = j->next;
		job_free(j);
	}
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c->out);
	free(c->cur);
	free(c->ckpt_buf_cur);
	free(c->pdone);
	free(c->known);
	chat_groups_free(c->groups);
	chat_rd_free(c->rd);
	free(c->inline_buf);
	free(c->led_term);
	free(c->redo);
	free(c->rec_term);
	free(c->grp_term);
	free(c->rec_ns);
	free(c->ckey);
	free(c->cklen);
	free(c->pgen);
	free(c->ck_gen);
	free(c->ck_snap);
	free(c->ck_in);
	free(c->ckargs);
	chat_floors_free(c->floors);
	free(c);
}

/* Finds for every partition p a checkpoint key "s/fanout/<k>" of p
 * (pe_partition_of), k = 0, 1, ... in order, the first that lands in p:
 * the same on every node. About np * ln(np) hashes; -PARLEY_EINVAL
 * past CHAT_CKPT_KEY_TRIES * np (never seen with a good hash). */
static int ckpt_keys(struct chat *c)
{
	uint32_t left = c->np;
	for (uint64_t k = 0; left && k < (uint64_t)CHAT_CKPT_KEY_TRIES * c->np;
	     k++) {
		char key[CHAT_CKPT_KEY_CAP];
		int n = snprintf(key, sizeof key, "%s/%" PRIu64, WM_KEY, k);
		uint32_t p = pe_partition_of(c->e, key, (size_t)n);
		if (c->cklen[p])
			continue;
		memcpy(c->ckey[p], key, (size_t)n + 1);
		c->cklen[p] = (uint8_t)n;
		left--;
	}
	return left ? -PARLEY_EINVAL : 0;
}

int chat_open(struct pe_engine *e, struct chat_clock *clock, struct chat **out)
{
	struct chat *c = calloc(1, sizeof *c);
	if (!c)
		return -PARLEY_ENOMEM;
	c->e = e;
	c->clock = clock;
	c->np = pe_partition_count(e);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (c->np == 0 || c->np > CHAT_MAX_PARTITIONS) {
		chat_free(c);
		return -PARLEY_EINVAL;
	}
	c->out = calloc(c->np, sizeof *c->out);
	c->cur = calloc(c->np, sizeof *c->cur);
	c->ckpt_buf_cur = calloc(c->np, sizeof *c->ckpt_buf_cur);
	c->pdone = calloc(c->np, sizeof *c->pdone);
	c->inline_buf = malloc(CHAT_PTR_INLINE_CAP);
	c->groups = chat_groups_new();
	c->rd = chat_rd_new();
	c->floors = chat_floors_new();
	c->led_term = calloc(c->np, sizeof *c->led_term);
	c->redo = calloc(c->np, sizeof *c->redo);
	c->rec_term = calloc(c->np, sizeof *c->rec_term);
	c->grp_term = calloc(c->np, sizeof *c->grp_term);
	c->rec_ns = calloc(c->np, sizeof *c->rec_ns);
	c->ckey = calloc(c->np, sizeof *c->ckey);
	c->cklen = calloc(c->np, sizeof *c->cklen);
	c->pgen = calloc(c->np, sizeof *c->pgen);
	c->ck_gen = calloc(c->np, sizeof *c->ck_gen);
	c->ck_snap = calloc(c->np, sizeof *c->ck_snap);
	c->ck_in = calloc(c->np, sizeof *c->ck_in);
	c->ckargs = calloc(c->np, sizeof *c->ckargs);
	if (!c->out || !c->cur || !c->ckpt_buf_cur || !c->pdone ||
	    !c->inline_buf || !c->groups || !c->rd || !c->floors || !c->led_term ||
	    !c->redo || !c->rec_term || !c->rec_ns || !c->grp_term || !c->ckey ||
	    !c->cklen || !c->pgen || !c->ck_gen || !c->ck_snap || !c->ck_in ||
	    !c->ckargs) {
		chat_free(c);
		return -PARLEY_ENOMEM;
	}
	for (uint32_t p = 0; p < c->np; p++)
		c->ckargs[p] = (struct ckarg){c, p};
	const char *td = getenv("PARLEY_TEST_FANOUT_DELAY_MS");
	if (td && *td) {
		c->test_fanout_delay_ms = (unsigned)strtoul(td, NULL, 10);
		PLOG_W("chat", "TEST-ONLY fan-out delay on "
		       "(PARLEY_TEST_FANOUT_DELAY_MS): every live fan-out waits "
		       "on the fan-out thread", "ms=%u", c->test_fanout_delay_ms);
	}
	if (ckpt_keys(c)) {
		chat_free(c);
		return -PARLEY_EINVAL;
	}
	for (uint32_t p = 0; p < c->np; p++)
		c->out[p].next = c->out[p].prev = &c->out[p];
	int rc = recover(c);
	if (rc) {
		/* drain the lists of the jobs recovery queued */
		chat_free(c);
		return rc;
	}
	c->last_ckpt_ns = parley_mono_ns();
	rc = pthread_create(&c->thr, NULL, fanout_main, c);
	if (rc) {
		chat_free(c);
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
	/* The thread ran every job to completion; wait for a checkpoint
	 * still in flight. */
	pthread_mutex_lock(&c->mu);
	PARLEY_ASSERT(c->npending == 0 && !c->qhead);
	while (c->ckpt_busy)
		pthread_cond_wait(&c->cv, &c->mu);
	/* Last checkpoints: nothing is outstanding, so every cursor is
	 * "now": a clean restart re-fans out nothing in the partitions this
	 * node leads (the others' leaders write theirs). */
	uint32_t due = ckpt_due_locked(c);
	if (due) {
		cursor_snapshot_locked(c, c->ckpt_buf_cur);
		for (uint32_t p = 0; p < c->np; p++) {
			if (!c->ck_in[p])
				continue;
			c->ck_in[p] = false;
			c->ck_snap[p] = c->pgen[p];
			uint64_t cur = c->ckpt_buf_cur[p];
			pthread_mutex_unlock(&c->mu);
			uint8_t b[WM_PART_BYTES];
			wm_encode_part(c, p, cur, b);
			struct pe_input in = {.type = CHAT_ENT_WATERMARK,
					      .len = WM_PART_BYTES, .payload = b};
			struct pe_append_req q = wm_req_part(c, p, &in);
			struct pe_append_result r;
			int rc = pe_append_sync(c->e, &q, &r);
			pthread_mutex_lock(&c->mu);
			if (rc)
				PLOG_W("chat", "last fan-out checkpoint failed: the "
				       "next leader re-fans out what followed the "
				       "previous one", "partition=%u err=%s", p,
				       parley_errname(rc));
			else
				ckpt_durable_locked(c, p, cur);
		}
	}
	pthread_mutex_unlock(&c->mu);
	chat_free(c);
}
