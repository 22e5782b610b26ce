/*
 * chat_receipt.c — read markers, delivered positions, receipt events and
 * the RECEIPTS query on engine streams. The model (stream r/, compare and
 * swap, who gets which receipt) is in chat_receipt.h.
 *
 * Invariants
 *   1. A stored position never decreases: every write is an append with
 *      expected_last_seq = the seq of the entry its new value was computed
 *      from, and the new value is the componentwise max of that entry and
 *      the request.
 *   2. A READ_MARKER callback reports success only after the position and
 *      the receipt pointers it caused are durable (engine callbacks).
 *   3. Receipt pointers are idempotent (producer id from their content):
 *      a retried marker or a replayed ack never doubles an event.
 *
 * Ownership: each operation is one malloc'd struct owned by the chain of
 * engine callbacks it passes through; the last one frees it.
 * Threads: see chat_receipt.h.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_receipt.h"
#include "route.h"

#define RCPT_REC_VERSION 1u

/* ---- keys and records ------------------------------------------------------ */

int chat_key_rcpt(char *out, const char *user, size_t ulen, const char *conv,
		  size_t clen)
{
	if (!parley_proto_user_id_valid(user, ulen) || clen < 1 ||
	    clen > PARLEY_PROTO_MAX_CONV_ID)
		return -PARLEY_EINVAL;
	uint64_t h = parley_xxh3(conv, clen, 0x72637074706f7331ull);
	int n = snprintf(out, CHAT_KEY_CAP, "r/%.*s:%016" PRIx64, (int)ulen,
			 user, h);
	PARLEY_ASSERT(n > 0 && (size_t)n < CHAT_KEY_CAP);
	return n;
}

int chat_rcpt_pos_encode(uint8_t *buf, size_t cap, const char *conv,
			 size_t clen, const struct chat_rcpt_pos *p)
{
	size_t n = 1 + 2 + clen + 8 + 8;
	if (clen > PARLEY_PROTO_MAX_CONV_ID)
		return -PARLEY_EINVAL;
	if (cap < n)
		return -PARLEY_ETOOBIG;
	struct le_writer w;
	le_writer_init(&w, buf, cap);
	le_write8(&w, RCPT_REC_VERSION);
	le_write16(&w, (uint16_t)clen);
	le_write_bytes(&w, conv, clen);
	le_write64(&w, p->read_seq);
	le_write64(&w, p->delivered_seq);
	PARLEY_ASSERT(w.ok && w.off == n);
	return (int)n;
}

int chat_rcpt_pos_decode(const uint8_t *p, size_t len, const char **conv,
			 uint16_t *clen, struct chat_rcpt_pos *out)
{
	struct le_reader r;
	le_reader_init(&r, p, len);
	if (le_read8(&r) != RCPT_REC_VERSION)
		return -PARLEY_ECORRUPT;
	*clen = le_read16(&r);
	*conv = (const char *)le_read_bytes(&r, *clen);
	out->read_seq = le_read64(&r);
	out->delivered_seq = le_read64(&r);
	return r.ok ? 0 : -PARLEY_ECORRUPT;
}

void chat_rcpt_pos_of(const struct pe_read_result *r, const char *conv,
		      size_t clen, struct chat_rcpt_pos *out)
{
	*out = (struct chat_rcpt_pos){0, 0};
	if (r->err || r->count < 1 || r->entries[0].type != CHAT_ENT_RCPT_POS)
		return;
	const char *c;
	uint16_t cl;
	struct chat_rcpt_pos p;
	if (chat_rcpt_pos_decode(r->entries[0].payload, r->entries[0].len, &c,
				 &cl, &p) == 0 &&
	    cl == clen && memcmp(c, conv, clen) == 0)
		*out = p;
}

int chat_rcpt_ptr_encode(uint8_t *buf, size_t cap, const char *conv,
			 size_t clen, uint64_t up_to, const char *actor,
			 size_t alen, uint32_t flags)
{
	struct chat_ptr x = {.kind = PARLEY_EV_RECEIPT, .conv = conv,
			     .conv_len = (uint16_t)clen, .conv_seq = up_to};
	if (clen > PARLEY_PROTO_MAX_CONV_ID || alen > PARLEY_PROTO_MAX_USER_ID)
		return -PARLEY_EINVAL;
	int n = chat_ptr_encode(buf, cap, &x);
	if (n < 0)
		return n;
	struct le_writer w;
	le_writer_init(&w, buf + n, cap - (size_t)n);
	le_write16(&w, (uint16_t)alen);
	le_write_bytes(&w, actor, alen);
	le_write32(&w, flags);
	if (!w.ok)
		return -PARLEY_ETOOBIG;
	return n + (int)w.off;
}

int chat_rcpt_ptr_decode(const uint8_t *p, size_t len, const char **actor,
			 uint16_t *alen, uint32_t *flags)
{
	struct chat_ptr x;
	if (len < 1 || p[0] != CHAT_REC_VERSION || /* no inline message */
	    chat_ptr_decode(p, len, &x) != 0 || x.kind != PARLEY_EV_RECEIPT)
		return -PARLEY_ECORRUPT;
	size_t off = 1 + 2 + 2 + (size_t)x.conv_len + 8;
	struct le_reader r;
	le_reader_init(&r, p + off, len - off);
	*alen = le_read16(&r);
	*actor = (const char *)le_read_bytes(&r, *alen);
	*flags = le_read32(&r);
	return r.ok && *alen ? 0 : -PARLEY_ECORRUPT;
}

void chat_producer_rcpt(uint8_t out[16], const char *conv, size_t clen,
			const char *actor, size_t alen, uint64_t up_to,
			uint32_t flags)
{
	uint8_t in[1 + 2 + 250 + 2 + 120 + 8 + 4];
	size_t n = 0;
	in[n++] = 'R';
	le_put16(in + n, (uint16_t)clen);
	memcpy(in + n + 2, conv, clen);
	n += 2 + clen;
	le_put16(in + n, (uint16_t)alen);
	memcpy(in + n + 2, actor, alen);
	n += 2 + alen;
	le_put64(in + n, up_to);
	le_put32(in + n + 8, flags);
	n += 12;
	le_put64(out, parley_xxh3(in, n, 0x7263707470726f64ull));
	le_put64(out + 8, parley_xxh3(in, n, 0x6175746873656e64ull));
}

int chat_rcpt_event_of(const struct pe_entry *e, struct parley_event *ev)
{
	struct chat_ptr p;
	const char *actor;
	uint16_t alen;
	uint32_t flags;
	if (e->type != CHAT_ENT_PTR ||
	    chat_ptr_decode(e->payload, e->len, &p) != 0 || !p.conv_len ||
	    chat_rcpt_ptr_decode(e->payload, e->len, &actor, &alen, &flags) != 0)
		return -PARLEY_ECORRUPT;
	memset(ev, 0, sizeof *ev);
	ev->inbox_seq = e->seq;
	ev->kind = PARLEY_EV_RECEIPT;
	ev->conv = (struct parley_str){p.conv, p.conv_len};
	ev->conv_seq = 0;
	ev->sender = (struct parley_str){actor, alen};
	ev->server_ts_ms = e->ts_ms;
	ev->ref_seq = p.conv_seq;
	ev->flags = flags;
	return 0;
}

/* ---- members ------------------------------------------------------------------- */

struct rcpt_id {
	uint16_t len;
	char id[PARLEY_PROTO_MAX_USER_ID];
};

static int id_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

static int rcpt_id_cmp(const void *a, const void *b)
{
	const struct rcpt_id *x = a, *y = b;
	return id_cmp(x->id, x->len, y->id, y->len);
}

/* The members of conv now, sorted by id_cmp, in a malloc'd array (*out;
 * the caller frees it). Returns their count, -PARLEY_ENOTFOUND or
 * -PARLEY_ENOMEM. The one place that asks who the members are: 1:1
 * conversations (chat_conv_members) and groups (chat_members_each, the
 * members now). */
struct rcpt_collect {
	struct rcpt_id *v;
	int n, cap;
};

static void rcpt_collect_fn(void *arg, const char *user, size_t ulen, int role)
{
	(void)role;
	struct rcpt_collect *k = arg;
	if (k->n < k->cap && ulen <= sizeof k->v[0].id) {
		k->v[k->n].len = (uint16_t)ulen;
		memcpy(k->v[k->n].id, user, ulen);
		k->n++;
	}
}

static int rcpt_members(struct chat *c, const char *conv, size_t clen,
			struct rcpt_id **out)
{
	if (chat_conv_is_group(conv, clen)) { /* the members now */
		struct chat_group_meta gm;
		int rc = chat_group_meta(c, conv, clen, &gm);
		if (rc)
			return rc;
		/* room for members added between the two calls */
		struct rcpt_collect k = {.cap = (int)gm.member_count + 64};
		k.v = calloc((size_t)k.cap, sizeof *k.v);
		if (!k.v)
			return -PARLEY_ENOMEM;
		rc = chat_members_each(c, conv, clen, UINT64_MAX, 0, (uint32_t)k.cap,
				       rcpt_collect_fn, &k);
		if (rc < 0) {
			free(k.v);
			return rc;
		}
		qsort(k.v, (size_t)k.n, sizeof *k.v, rcpt_id_cmp);
		*out = k.v;
		return k.n;
	}
	struct chat_member mm[2];
	int n = chat_conv_members(conv, clen, mm);
	if (n < 0)
		return n;
	struct rcpt_id *v = calloc((size_t)n ? (size_t)n : 1, sizeof *v);
	if (!v)
		return -PARLEY_ENOMEM;
	for (int i = 0; i < n; i++) {
		PARLEY_ASSERT(mm[i].len <= sizeof v[i].id);
		v[i].len = (uint16_t)mm[i].len;
		memcpy(v[i].id, mm[i].p, mm[i].len);
	}
	qsort(v, (size_t)n, sizeof *v, rcpt_id_cmp);
	*out = v;
	return n;
}

/* ---- raising a position ------------------------------------------------------ */

/* One raise: read r/ -> (unchanged: done) -> append CAS -> receipts -> done. */
struct raise {
	struct chat *c;
	struct pe_engine *e;
	void (*done)(struct raise *x); /* runs once; frees x (or reuses it) */
	void *arg;
	struct chat_rcpt_pos want;     /* 0 = leave that component */
	struct chat_rcpt_pos now;      /* the stored position at the end */
	struct chat_rcpt_pos before;
	bool stale;
	int err;
	int tries;
	atomic_int pending;
	uint16_t ulen, clen;
	int klen;
	char user[PARLEY_PROTO_MAX_USER_ID];
	char conv[PARLEY_PROTO_MAX_CONV_ID];
	char key[CHAT_KEY_CAP];
};

static void raise_read(struct raise *x);

static void raise_finish(struct raise *x)
{
	x->done(x);
}

static void rcpt_append_cb(void *arg, const struct pe_append_result *r)
{
	struct raise *x = arg;
	if (r->err) /* the position is stored; the event is lost */
		PLOG_W("receipt", "receipt event not stored", "err=%s",
		       parley_errname(r->err));
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		raise_finish(x);
}

static void rcpt_push(struct raise *x, const char *to, size_t tlen,
		      uint64_t up_to, uint32_t flags)
{
	char key[CHAT_KEY_CAP];
	uint8_t b[CHAT_PTR_MAX + 2 + PARLEY_PROTO_MAX_USER_ID + 4];
	int kl = chat_key_inbox(key, to, tlen);
	int n = chat_rcpt_ptr_encode(b, sizeof b, x->conv, x->clen, up_to,
				     x->user, x->ulen, flags);
	if (kl < 0 || n < 0)
		return;
	struct pe_input in = {.type = CHAT_ENT_PTR, .len = (uint32_t)n,
			      .payload = b};
	struct pe_append_req q = {.key = key, .klen = (size_t)kl,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	chat_producer_rcpt(q.producer, x->conv, x->clen, x->user, x->ulen,
			   up_to, flags);
	atomic_fetch_add(&x->pending, 1);
	int rc = chat_append(x->c, &q, rcpt_append_cb, x);
	if (rc) {
		atomic_fetch_sub(&x->pending, 1);
		PLOG_W("receipt", "receipt event not queued", "err=%s",
		       parley_errname(rc));
	}
}

/* The position changed (durable): push the receipts it causes. */
static void raise_receipts(struct raise *x)
{
	struct rcpt_id *mm = NULL;
	int n = rcpt_members(x->c, x->conv, x->clen, &mm);
	bool read = x->now.read_seq > x->before.read_seq;
	bool dlv = x->now.delivered_seq > x->before.delivered_seq;
	atomic_store(&x->pending, 1);
	if (n > 0 && (unsigned)n <= CHAT_RCPT_PUSH_MAX) {
		for (int i = 0; i < n; i++) {
			if (mm[i].len == x->ulen &&
			    !memcmp(mm[i].id, x->user, x->ulen))
				continue;
			if (read)
				rcpt_push(x, mm[i].id, mm[i].len, x->now.read_seq,
					  PARLEY_RCPTF_READ |
						  PARLEY_RCPTF_DELIVERED);
			if (dlv && (!read || x->now.delivered_seq >
						     x->now.read_seq))
				rcpt_push(x, mm[i].id, mm[i].len,
					  x->now.delivered_seq,
					  PARLEY_RCPTF_DELIVERED);
		}
	}
	free(mm);
	if (read) /* the reader's other devices */
		rcpt_push(x, x->user, x->ulen, x->now.read_seq,
			  PARLEY_RCPTF_READ);
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		raise_finish(x);
}

static void raise_append_cb(void *arg, const struct pe_append_result *r)
{
	struct raise *x = arg;
	if (r->err == -PARLEY_ESEQ) { /* someone else wrote first: redo */
		if (++x->tries < CHAT_RCPT_RETRIES) {
			raise_read(x);
			return;
		}
		x->err = -PARLEY_EAGAIN;
	} else {
		x->err = r->err;
	}
	if (x->err) {
		x->now = x->before;
		raise_finish(x);
		return;
	}
	raise_receipts(x);
}

static void raise_pos_cb(void *arg, const struct pe_read_result *r)
{
	struct raise *x = arg;
	if (r->err) {
		x->err = r->err;
		raise_finish(x);
		return;
	}
	chat_rcpt_pos_of(r, x->conv, x->clen, &x->before);
	struct chat_rcpt_pos n = x->before;
	if (x->want.read_seq > n.read_seq)
		n.read_seq = x->want.read_seq;
	if (x->want.delivered_seq > n.delivered_seq)
		n.delivered_seq = x->want.delivered_seq;
	if (n.read_seq > n.delivered_seq)
		n.delivered_seq = n.read_seq; /* read implies delivered */
	x->now = n;
	if (n.read_seq == x->before.read_seq &&
	    n.delivered_seq == x->before.delivered_seq) {
		x->stale = true;
		raise_finish(x);
		return;
	}
	uint8_t b[1 + 2 + PARLEY_PROTO_MAX_CONV_ID + 16];
	int len = chat_rcpt_pos_encode(b, sizeof b, x->conv, x->clen, &n);
	PARLEY_ASSERT(len > 0);
	struct pe_input in = {.type = CHAT_ENT_RCPT_POS, .len = (uint32_t)len,
			      .payload = b};
	struct pe_append_req q = {
		.key = x->key, .klen = (size_t)x->klen,
		.expected_last_seq = r->count ? r->entries[0].seq : r->last_seq,
		.entries = &in, .count = 1};
	int rc = chat_append(x->c, &q, raise_append_cb, x);
	if (rc) {
		x->err = rc;
		x->now = x->before;
		raise_finish(x);
	}
}

static void raise_read(struct raise *x)
{
	/* a retry after ESEQ reads linearizably: r/ may live in a
	 * partition led elsewhere (the CAS is forwarded there), whose
	 * entries this node may not have applied yet. The first read may
	 * be stale (the CAS refuses what it was computed from); the retry
	 * needs the partition: a node that holds no replica of it asks
	 * that partition's leader (route_read_any; refused NOTLEADER at
	 * once when it cannot), its own copy would never catch up */
	struct pe_read_req q = {.key = x->key, .klen = (size_t)x->klen,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1, .linearizable = x->tries > 0};
	int rc = x->tries > 0 ? route_read_any(x->e, &q, raise_pos_cb, x)
			      : pe_read(x->e, &q, raise_pos_cb, x);
	if (rc) {
		x->err = rc;
		raise_finish(x);
	}
}

static struct raise *raise_new(struct chat *c, const char *user,
			       size_t ulen, const char *conv, size_t clen)
{
	struct raise *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->klen = chat_key_rcpt(x->key, user, ulen, conv, clen);
	if (x->klen < 0) {
		free(x);
		return NULL;
	}
	x->c = c;
	x->e = chat_engine(c);
	x->ulen = (uint16_t)ulen;
	x->clen = (uint16_t)clen;
	memcpy(x->user, user, ulen);
	memcpy(x->conv, conv, clen);
	return x;
}

/* ---- READ_MARKER ----------------------------------------------------------- */

struct mark_arg {
	chat_rcpt_mark_cb cb;
	void *arg;
	uint64_t seq;
};

static void mark_done(struct raise *x)
{
	struct mark_arg *a = x->arg;
	struct chat_rcpt_mark_result res = {.err = x->err,
					    .read_seq = x->now.read_seq,
					    .stale = x->stale};
	a->cb(a->arg, &res);
	free(a);
	free(x);
}

/* The conversation's last seq is in: check the marker against it. */
/* A conversation without messages: was it ever opened (o/<conv>)? An
 * opened one has no message seq yet (INVAL); else it does not exist. */
static int opened_read(struct pe_engine *e, const char *conv, size_t clen,
		       pe_read_cb cb, void *arg)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_open(key, conv, clen);
	if (kl < 0)
		return kl;
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1};
	return pe_read(e, &q, cb, arg);
}

static int opened_err(const struct pe_read_result *r)
{
	return r->err ? r->err
	       : r->count || r->last_seq ? -PARLEY_EINVAL : -PARLEY_ENOTFOUND;
}

static void mark_open_cb(void *arg, const struct pe_read_result *r)
{
	struct raise *x = arg;
	x->err = opened_err(r);
	mark_done(x);
}

static void mark_last_cb(void *arg, const struct pe_read_result *r)
{
	struct raise *x = arg;
	struct mark_arg *a = x->arg;
	uint64_t last = r->count ? r->entries[0].seq : r->last_seq;
	if (!r->err && last == 0) {
		int rc = opened_read(x->e, x->conv, x->clen, mark_open_cb, x);
		if (rc == 0)
			return;
		x->err = rc;
	} else if (r->err) {
		x->err = r->err;
	} else if (a->seq > last) {
		x->err = -PARLEY_EINVAL;
	}
	if (x->err) {
		mark_done(x);
		return;
	}
	raise_read(x);
}

/* The rule of READ_MARKER and RECEIPTS, checked before anything is read:
 * the caller may read conv now (a member: chat_conv_access, group-aware;
 * -PARLEY_ENOTFOUND / -PARLEY_EPERM, or NOTLEADER / AGAIN where this node
 * cannot answer for a group) and seq is not 0 (-PARLEY_EINVAL). A
 * READ_MARKER (mark) of a group member who was removed or left may still
 * mark up to the seq of their departure (what they received), so the
 * unread count of their LEFT list entry can reach 0 on every device. */
static int rcpt_admit(struct chat *c, const char *user, size_t ulen,
		      const char *conv, size_t clen, uint64_t seq, bool mark)
{
	int rc = chat_conv_access(c, conv, clen, user, ulen);
	uint64_t left, vis;
	uint32_t members;
	if (rc == -PARLEY_EPERM && mark && seq &&
	    chat_conv_is_group(conv, clen) &&
	    chat_group_left(c, conv, clen, user, ulen, &left, &members,
			    &vis) == 1 &&
	    seq <= left)
		rc = 0; /* a removed member marks what they received */
	if (!rc && seq == 0)
		rc = -PARLEY_EINVAL;
	return rc;
}

int chat_rcpt_mark(struct chat *c, const char *user, size_t ulen,
		   const char *conv, size_t clen, uint64_t seq,
		   chat_rcpt_mark_cb cb, void *arg)
{
	int rc = rcpt_admit(c, user, ulen, conv, clen, seq, true);
	if (rc)
		return rc;
	char ckey[CHAT_KEY_CAP];
	int ckl = chat_key_conv(ckey, conv, clen);
	if (ckl < 0)
		return -PARLEY_EINVAL;
	struct mark_arg *a = malloc(sizeof *a);
	struct raise *x = a ? raise_new(c, user, ulen, conv, clen) : NULL;
	if (!x) {
		free(a);
		return a ? -PARLEY_EINVAL : -PARLEY_ENOMEM;
	}
	*a = (struct mark_arg){cb, arg, seq};
	x->arg = a;
	x->done = mark_done;
	x->want.read_seq = seq;
	/* the marker is checked against the conversation's last seq: on a
	 * node without a replica of its partition, refused at once, naming
	 * it (route_read: the gateway forwards the READ_MARKER there), not
	 * checked against an old copy */
	struct pe_read_req q = {.key = ckey, .klen = (size_t)ckl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1};
	rc = route_read(x->e, &q, mark_last_cb, x);
	if (rc) {
		free(a);
		free(x);
	}
	return rc;
}

/* ---- delivered (EVENT_ACK) --------------------------------------------------- */

struct ack_op {
	struct chat *c;
	uint64_t from, to;
	uint16_t ulen;
	char user[PARLEY_PROTO_MAX_USER_ID];
};

static void ack_raise_done(struct raise *x)
{
	if (x->err)
		PLOG_W("receipt", "delivered position not stored", "err=%s",
		       parley_errname(x->err));
	free(x);
}

static void ack_read_cb(void *arg, const struct pe_read_result *r)
{
	struct ack_op *op = arg;
	struct {
		const char *conv;
		uint16_t clen;
		uint64_t seq;
	} cv[CHAT_RCPT_ACK_CONVS];
	unsigned n = 0;
	for (uint32_t i = 0; !r->err && i < r->count; i++) {
		const struct pe_entry *en = &r->entries[i];
		struct chat_ptr p;
		if (en->seq <= op->from || en->seq > op->to ||
		    en->type != CHAT_ENT_PTR ||
		    chat_ptr_decode(en->payload, en->len, &p) != 0 ||
		    p.kind == 0 || p.kind == PARLEY_EV_RECEIPT) /* not a conv entry */
			continue;
		if (p.kind == PARLEY_EV_ACTIVITY) /* read fan-out: not outstanding */
			chat_activity_acked(op->c, op->user, op->ulen, p.conv,
					    p.conv_len, p.conv_seq);
		unsigned j = 0;
		while (j < n && !(cv[j].clen == p.conv_len &&
				  !memcmp(cv[j].conv, p.conv, p.conv_len)))
			j++;
		if (j == n) {
			if (n == CHAT_RCPT_ACK_CONVS)
				continue; /* the next ack covers the rest */
			cv[n++] = (typeof(cv[0])){p.conv, p.conv_len, 0};
		}
		if (p.conv_seq > cv[j].seq)
			cv[j].seq = p.conv_seq;
	}
	for (unsigned j = 0; j < n; j++) {
		struct raise *x = raise_new(op->c, op->user, op->ulen,
					    cv[j].conv, cv[j].clen);
		if (!x)
			continue;
		x->done = ack_raise_done;
		x->want.delivered_seq = cv[j].seq;
		raise_read(x);
	}
	free(op);
}

int chat_rcpt_acked(struct chat *c, const char *user, size_t ulen,
		    uint64_t from, uint64_t to)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_inbox(key, user, ulen);
	if (kl < 0 || to <= from)
		return -PARLEY_EINVAL;
	struct ack_op *op = malloc(sizeof *op);
	if (!op)
		return -PARLEY_ENOMEM;
	*op = (struct ack_op){.c = c, .from = from, .to = to,
			      .ulen = (uint16_t)ulen};
	memcpy(op->user, user, ulen);
	/* the newest pointers carry the largest seqs: read backward */
	uint64_t n = to - from;
	struct pe_read_req q = {.key = key, .klen = (size_t)kl, .from = to,
				.dir = PE_BACKWARD,
				.limit = (uint32_t)(n < PE_MAX_READ ? n
								    : PE_MAX_READ)};
	int rc = pe_read(chat_engine(c), &q, ack_read_cb, op);
	if (rc)
		free(op);
	return rc;
}

/* ---- RECEIPTS query ------------------------------------------------------------ */

struct query_op {
	struct pe_engine *e;
	chat_rcpt_query_cb cb;
	void *arg;
	uint64_t seq;
	atomic_int pending;
	_Atomic int err;
	uint16_t clen;
	char conv[PARLEY_PROTO_MAX_CONV_ID];
	struct chat_rcpt_query_result res;
};

struct query_item {
	struct query_op *op;
	uint32_t i;
};

static void query_finish(struct query_op *op)
{
	op->res.err = atomic_load(&op->err);
	op->cb(op->arg, &op->res);
	free(op);
}

static void query_pos_cb(void *arg, const struct pe_read_result *r)
{
	struct query_item *it = arg;
	struct query_op *op = it->op;
	if (r->err)
		atomic_store(&op->err, r->err);
	else
		chat_rcpt_pos_of(r, op->conv, op->clen, &op->res.m[it->i].pos);
	free(it);
	if (atomic_fetch_sub(&op->pending, 1) == 1)
		query_finish(op);
}

static void query_open_cb(void *arg, const struct pe_read_result *r)
{
	struct query_op *op = arg;
	atomic_store(&op->err, opened_err(r));
	query_finish(op);
}

static void query_last_cb(void *arg, const struct pe_read_result *r)
{
	struct query_op *op = arg;
	uint64_t last = r->count ? r->entries[0].seq : r->last_seq;
	if (!r->err && last == 0) {
		int rc = opened_read(op->e, op->conv, op->clen, query_open_cb, op);
		if (rc == 0)
			return;
		atomic_store(&op->err, rc);
		query_finish(op);
		return;
	}
	if (r->err || op->seq > last) {
		atomic_store(&op->err, r->err ? r->err : -PARLEY_EINVAL);
		query_finish(op);
		return;
	}
	atomic_store(&op->pending, (int)op->res.n + 1);
	for (uint32_t i = 0; i < op->res.n; i++) {
		struct chat_rcpt_member *m = &op->res.m[i];
		char key[CHAT_KEY_CAP];
		int kl = chat_key_rcpt(key, m->user, m->ulen, op->conv, op->clen);
		struct query_item *it = malloc(sizeof *it);
		int rc = kl < 0 ? -PARLEY_EINVAL : !it ? -PARLEY_ENOMEM : 0;
		if (!rc) {
			*it = (struct query_item){op, i};
			struct pe_read_req q = {.key = key, .klen = (size_t)kl,
						.from = UINT64_MAX,
						.dir = PE_BACKWARD, .limit = 1};
			rc = pe_read(op->e, &q, query_pos_cb, it);
		}
		if (rc) {
			free(it);
			atomic_store(&op->err, rc);
			atomic_fetch_sub(&op->pending, 1);
		}
	}
	if (atomic_fetch_sub(&op->pending, 1) == 1)
		query_finish(op);
}

int chat_rcpt_query(struct chat *c, const char *user, size_t ulen,
		    const char *conv, size_t clen, uint64_t seq,
		    const char *after, size_t alen, uint32_t limit,
		    chat_rcpt_query_cb cb, void *arg)
{
	int arc = rcpt_admit(c, user, ulen, conv, clen, seq, false);
	if (arc)
		return arc;
	char ckey[CHAT_KEY_CAP];
	int ckl = chat_key_conv(ckey, conv, clen);
	if (ckl < 0 || seq == 0 || limit < 1 ||
	    limit > PARLEY_PROTO_MAX_RECEIPTS)
		return -PARLEY_EINVAL;
	struct rcpt_id *mm = NULL;
	int nm = rcpt_members(c, conv, clen, &mm);
	if (nm < 0)
		return nm;
	struct query_op *op = calloc(1, sizeof *op);
	if (!op) {
		free(mm);
		return -PARLEY_ENOMEM;
	}
	op->e = chat_engine(c);
	op->cb = cb;
	op->arg = arg;
	op->seq = seq;
	op->clen = (uint16_t)clen;
	memcpy(op->conv, conv, clen);
	op->res.member_count = (uint32_t)nm;
	op->res.end = true;
	for (int i = 0; i < nm; i++) { /* sorted: the page follows `after` */
		if (alen && id_cmp(mm[i].id, mm[i].len, after, alen) <= 0)
			continue;
		if (op->res.n == limit) {
			op->res.end = false;
			break;
		}
		struct chat_rcpt_member *m = &op->res.m[op->res.n++];
		m->ulen = mm[i].len;
		memcpy(m->user, mm[i].id, mm[i].len);
	}
	free(mm);
	/* as READ_MARKER's: refused at once where c/<conv> is not held */
	struct pe_read_req q = {.key = ckey, .klen = (size_t)ckl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1};
	int rc = route_read(op->e, &q, query_last_cb, op);
	if (rc)
		free(op);
	return rc;
}
