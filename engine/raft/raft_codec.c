/*
 * raft_codec.c — the wire encoding of Raft messages (raft_codec.h has the
 * frame layout, the limits and the contract).
 *
 * Layout of this file: a bounded writer, the field validators shared by
 * encode and decode, the message encoder, the frame encoder, the arena, the
 * message decoder, the frame decoder.
 *
 * Invariants (see also the header):
 *   1. The writer never writes at or past `cap`; it keeps counting so the
 *      same code computes the size (raft_codec_size).
 *   2. Every validator is called by both sides: what encodes, decodes.
 *   3. The reader is bounded to the frame's body, never to the input buffer:
 *      a message can never borrow bytes of the next frame or the trailer.
 *   4. Decode touches the arena only after the frame checksum matched, and
 *      rolls a->used back on any failure.
 *
 * Ownership: callers own all buffers. Threads: reentrant, no globals.
 */
#include "raft_codec.h"

/* The u64 fields a message carries when nonzero, in mask bit order. */
enum {
	F_GROUP = 0,
	F_TERM,
	F_INDEX,
	F_LOG_TERM,
	F_COMMIT,
	F_HINT,
	F_CTX,
	F_OFFSET,
	F_COUNT
};

static uint64_t *msg_field(struct raft_msg *m, int f)
{
	switch (f) {
	case F_GROUP: return &m->group;
	case F_TERM: return &m->term;
	case F_INDEX: return &m->index;
	case F_LOG_TERM: return &m->log_term;
	case F_COMMIT: return &m->commit;
	case F_HINT: return &m->hint;
	case F_CTX: return &m->ctx;
	default: return &m->offset;
	}
}
static uint64_t msg_field_get(const struct raft_msg *m, int f)
{
	return *msg_field((struct raft_msg *)m, f);
}

/* ---- validators (both directions) ----------------------------------------- */

static bool type_ok(uint8_t t)
{
	return t > RAFT_MSG_NONE && t < RAFT_MSG_TYPE_COUNT;
}
static bool carries_entries(uint8_t t)
{
	return t == RAFT_MSG_APPEND;
}
static bool carries_snap(uint8_t t)
{
	return t == RAFT_MSG_SNAPSHOT || t == RAFT_MSG_SNAPSHOT_RESP;
}
static bool entry_type_ok(uint8_t t)
{
	return t == RAFT_ENTRY_NORMAL || t == RAFT_ENTRY_NOOP ||
	       t == RAFT_ENTRY_CONF;
}
static bool role_ok(uint8_t r)
{
	return r == RAFT_VOTER || r == RAFT_LEARNER;
}
static bool snap_is_zero(const struct raft_snapshot_meta *s)
{
	if (s->index || s->term || s->size || s->csum || s->conf.n ||
	    s->conf.max_id)
		return false;
	for (int i = 0; i < RAFT_MAX_MEMBERS; i++)
		if (s->conf.ids[i] || s->conf.roles[i])
			return false;
	return true;
}

/* ---- bounded writer --------------------------------------------------------- */

struct wr {
	uint8_t *b;
	size_t cap;
	size_t n;  /* bytes the frame needs so far (may exceed cap) */
	int inval; /* a field broke a limit */
};

/*
 * Little-endian stores. On a little-endian host a fixed-size memcpy is one
 * store; le_put64's byte loop is not unrolled by gcc -O2 and was the
 * encoder's top cost on small frames (perf, parley-raft-bench codec mode).
 */
static inline void put16(uint8_t *p, uint16_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(p, &v, 2);
#else
	le_put16(p, v);
#endif
}
static inline void put32(uint8_t *p, uint32_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(p, &v, 4);
#else
	le_put32(p, v);
#endif
}
static inline void put64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(p, &v, 8);
#else
	le_put64(p, v);
#endif
}

/* Whether n more bytes fit (the writer keeps counting when they do not). */
static inline bool w_room(const struct wr *w, size_t n)
{
	return w->b && w->n <= w->cap && w->cap - w->n >= n;
}
static inline void w_raw(struct wr *w, const void *p, size_t len)
{
	if (len && w_room(w, len))
		memcpy(w->b + w->n, p, len);
	w->n += len;
}
static inline void w8(struct wr *w, uint8_t v)
{
	if (w_room(w, 1))
		w->b[w->n] = v;
	w->n += 1;
}
static inline void w16(struct wr *w, uint16_t v)
{
	if (w_room(w, 2))
		put16(w->b + w->n, v);
	w->n += 2;
}
static inline void w32(struct wr *w, uint32_t v)
{
	if (w_room(w, 4))
		put32(w->b + w->n, v);
	w->n += 4;
}
static inline void w64(struct wr *w, uint64_t v)
{
	if (w_room(w, 8))
		put64(w->b + w->n, v);
	w->n += 8;
}

/* ---- encode ------------------------------------------------------------------ */

static void enc_entry(struct wr *w, const struct raft_entry *e)
{
	if (e->len > RAFT_CODEC_MAX_ENTRY_BYTES || !entry_type_ok(e->type) ||
	    (e->len && !e->data)) {
		w->inval = 1;
		return;
	}
	w64(w, e->term);
	w64(w, e->index);
	w64(w, e->csum);
	w8(w, e->type);
	w32(w, e->len);
	w_raw(w, e->data, e->len);
}

static void enc_snap(struct wr *w, const struct raft_snapshot_meta *s)
{
	const struct raft_conf *c = &s->conf;
	w64(w, s->index);
	w64(w, s->term);
	w64(w, s->size);
	w64(w, s->csum);
	w64(w, c->max_id);
	if (c->n > RAFT_MAX_MEMBERS) {
		w->inval = 1;
		return;
	}
	w8(w, (uint8_t)c->n);
	for (uint32_t i = 0; i < c->n; i++) {
		if (c->ids[i] == 0 || !role_ok(c->roles[i])) {
			w->inval = 1;
			return;
		}
		w64(w, c->ids[i]);
		w8(w, c->roles[i]);
	}
}

static void enc_msg(struct wr *w, const struct raft_msg *m)
{
	if (!type_ok(m->type) || (m->flags & ~(uint32_t)RAFT_MSGF_ALL) ||
	    m->flags > UINT16_MAX) {
		w->inval = 1;
		return;
	}
	if (!carries_entries(m->type) && m->n_entries) {
		w->inval = 1;
		return;
	}
	if (!carries_snap(m->type) && (m->chunk_len || !snap_is_zero(&m->snap))) {
		w->inval = 1;
		return;
	}
	uint8_t mask = 0;
	for (int f = 0; f < F_COUNT; f++)
		if (msg_field_get(m, f))
			mask |= (uint8_t)(1u << f);
	w8(w, m->type);
	w16(w, (uint16_t)m->flags);
	w8(w, mask);
	for (int f = 0; f < F_COUNT; f++)
		if (mask & (1u << f))
			w64(w, msg_field_get(m, f));
	if (carries_entries(m->type)) {
		if (m->n_entries > RAFT_CODEC_MAX_ENTRIES ||
		    (m->n_entries && !m->entries)) {
			w->inval = 1;
			return;
		}
		w16(w, (uint16_t)m->n_entries);
		for (uint32_t i = 0; i < m->n_entries && !w->inval; i++)
			enc_entry(w, &m->entries[i]);
	} else if (carries_snap(m->type)) {
		enc_snap(w, &m->snap);
		if (m->chunk_len > RAFT_CODEC_MAX_CHUNK_BYTES ||
		    (m->chunk_len && !m->chunk)) {
			w->inval = 1;
			return;
		}
		w32(w, m->chunk_len);
		w_raw(w, m->chunk, m->chunk_len);
	}
}

static void hdr_put(uint8_t *b, uint32_t length)
{
	le_put32(b, length);
	b[4] = RAFT_CODEC_VERSION;
	b[5] = RAFT_CODEC_KIND_BATCH;
	le_put16(b + 6, 0);
	le_put32(b + 8, (uint32_t)parley_xxh3(b, 8, RAFT_CODEC_SEED_HDR));
}

/* Writes the frame (or, with buf NULL, only sizes it). */
static int encode(uint8_t *buf, size_t cap, const struct raft_msg *msgs,
		  uint32_t n)
{
	if (n == 0 || n > RAFT_CODEC_MAX_BATCH || !msgs)
		return -PARLEY_EINVAL;
	struct wr w = {buf, cap, RAFT_CODEC_HEADER_BYTES, 0};
	uint64_t from = msgs[0].from, to = msgs[0].to;
	if (from == 0 || to == 0) /* node ids are never 0 (raft.h) */
		return -PARLEY_EINVAL;
	w64(&w, from);
	w64(&w, to);
	w16(&w, (uint16_t)n);
	for (uint32_t i = 0; i < n && !w.inval; i++) {
		if (msgs[i].from != from || msgs[i].to != to)
			w.inval = 1;
		else
			enc_msg(&w, &msgs[i]);
		/* stop counting early on absurd sizes (no size_t overflow) */
		if (w.n > RAFT_CODEC_MAX_FRAME_HARD)
			return -PARLEY_ETOOBIG;
	}
	if (w.inval)
		return -PARLEY_EINVAL;
	size_t total = w.n + RAFT_CODEC_TRAILER_BYTES;
	if (total > RAFT_CODEC_MAX_FRAME_HARD)
		return -PARLEY_ETOOBIG;
	if (!buf)
		return (int)total;
	if (total > cap)
		return -PARLEY_ETOOBIG;
	hdr_put(buf, (uint32_t)(total - 4));
	le_put64(buf + w.n, parley_xxh3(buf, w.n, RAFT_CODEC_SEED_FRAME));
	return (int)total;
}

int raft_codec_size(const struct raft_msg *msgs, uint32_t n)
{
	return encode(NULL, 0, msgs, n);
}

int raft_codec_encode(uint8_t *buf, size_t cap, const struct raft_msg *msgs,
		      uint32_t n)
{
	if (!buf)
		return -PARLEY_EINVAL;
	return encode(buf, cap, msgs, n);
}

/* ---- arena ----------------------------------------------------------------- */

static void *arena_take(struct raft_codec_arena *a, size_t bytes)
{
	size_t at = (a->used + 7u) & ~(size_t)7u;
	if (at < a->used || at > a->cap || a->cap - at < bytes)
		return NULL;
	a->used = at + bytes;
	return (uint8_t *)a->buf + at;
}

/* ---- decode ----------------------------------------------------------------- */

struct dec {
	struct le_reader r;
	struct raft_codec_arena *a;
	unsigned flags;
	int err; /* first error: -PARLEY_EPROTO or -PARLEY_EFULL */
};

static void dec_fail(struct dec *d, int err)
{
	if (!d->err)
		d->err = err;
	d->r.ok = false;
}

/* Borrows or copies `len` bytes of the body. */
static const uint8_t *dec_bytes(struct dec *d, uint32_t len)
{
	const uint8_t *p = le_read_bytes(&d->r, len);
	if (!p) {
		dec_fail(d, -PARLEY_EPROTO);
		return NULL;
	}
	if (!len)
		return NULL;
	if (!(d->flags & RAFT_CODEC_COPY))
		return p;
	uint8_t *c = arena_take(d->a, len);
	if (!c) {
		dec_fail(d, -PARLEY_EFULL);
		return NULL;
	}
	memcpy(c, p, len);
	return c;
}

static void dec_entry(struct dec *d, struct raft_entry *e)
{
	e->term = le_read64(&d->r);
	e->index = le_read64(&d->r);
	e->csum = le_read64(&d->r);
	e->type = le_read8(&d->r);
	e->len = le_read32(&d->r);
	if (!d->r.ok || !entry_type_ok(e->type) ||
	    e->len > RAFT_CODEC_MAX_ENTRY_BYTES) {
		dec_fail(d, -PARLEY_EPROTO);
		return;
	}
	e->data = dec_bytes(d, e->len);
}

static void dec_snap(struct dec *d, struct raft_snapshot_meta *s)
{
	struct raft_conf *c = &s->conf;
	s->index = le_read64(&d->r);
	s->term = le_read64(&d->r);
	s->size = le_read64(&d->r);
	s->csum = le_read64(&d->r);
	c->max_id = le_read64(&d->r);
	uint8_t n = le_read8(&d->r);
	if (!d->r.ok || n > RAFT_MAX_MEMBERS) {
		dec_fail(d, -PARLEY_EPROTO);
		return;
	}
	c->n = n;
	for (uint32_t i = 0; i < n; i++) {
		c->ids[i] = le_read64(&d->r);
		c->roles[i] = le_read8(&d->r);
		if (!d->r.ok || c->ids[i] == 0 || !role_ok(c->roles[i])) {
			dec_fail(d, -PARLEY_EPROTO);
			return;
		}
	}
}

static void dec_msg(struct dec *d, struct raft_msg *m)
{
	m->type = le_read8(&d->r);
	m->flags = le_read16(&d->r);
	uint8_t mask = le_read8(&d->r);
	if (!d->r.ok || !type_ok(m->type) ||
	    (m->flags & ~(uint32_t)RAFT_MSGF_ALL)) {
		dec_fail(d, -PARLEY_EPROTO);
		return;
	}
	for (int f = 0; f < F_COUNT; f++) {
		if (!(mask & (1u << f)))
			continue;
		uint64_t v = le_read64(&d->r);
		if (v == 0) { /* present means nonzero: one encoding per message */
			dec_fail(d, -PARLEY_EPROTO);
			return;
		}
		*msg_field(m, f) = v;
	}
	if (carries_entries(m->type)) {
		uint16_t ne = le_read16(&d->r);
		/* refuse a count the bytes left cannot hold before carving */
		if (!d->r.ok || ne > RAFT_CODEC_MAX_ENTRIES ||
		    (size_t)ne * RAFT_CODEC_ENTRY_MIN > d->r.len - d->r.off) {
			dec_fail(d, -PARLEY_EPROTO);
			return;
		}
		if (!ne)
			return;
		struct raft_entry *es =
			arena_take(d->a, (size_t)ne * sizeof(struct raft_entry));
		if (!es) {
			dec_fail(d, -PARLEY_EFULL);
			return;
		}
		memset(es, 0, (size_t)ne * sizeof *es);
		for (uint32_t i = 0; i < ne && d->r.ok; i++)
			dec_entry(d, &es[i]);
		m->entries = es;
		m->n_entries = ne;
	} else if (carries_snap(m->type)) {
		dec_snap(d, &m->snap);
		uint32_t cl = le_read32(&d->r);
		if (!d->r.ok || cl > RAFT_CODEC_MAX_CHUNK_BYTES) {
			dec_fail(d, -PARLEY_EPROTO);
			return;
		}
		m->chunk = dec_bytes(d, cl);
		m->chunk_len = d->r.ok ? cl : 0;
	}
}

int raft_codec_frame_len(const uint8_t *buf, size_t len, uint32_t max_frame)
{
	if (max_frame == 0)
		max_frame = RAFT_CODEC_MAX_FRAME_DEFAULT;
	if (max_frame > RAFT_CODEC_MAX_FRAME_HARD)
		max_frame = RAFT_CODEC_MAX_FRAME_HARD;
	if (len < RAFT_CODEC_HEADER_BYTES)
		return 0;
	if (le_get32(buf + 8) != (uint32_t)parley_xxh3(buf, 8, RAFT_CODEC_SEED_HDR))
		return -PARLEY_ECORRUPT;
	if (buf[4] != RAFT_CODEC_VERSION)
		return -PARLEY_EVERSION;
	if (buf[5] != RAFT_CODEC_KIND_BATCH || le_get16(buf + 6) != 0)
		return -PARLEY_EPROTO;
	uint64_t total = (uint64_t)le_get32(buf) + 4;
	if (total > max_frame)
		return -PARLEY_ETOOBIG;
	if (total < RAFT_CODEC_FRAME_MIN)
		return -PARLEY_EPROTO;
	if (len < total)
		return 0;
	return (int)total;
}

int raft_codec_decode(const uint8_t *buf, size_t len, uint32_t max_frame,
		      struct raft_codec_arena *a, unsigned flags,
		      struct raft_msg **msgs, uint32_t *n)
{
	if ((flags & ~RAFT_CODEC_COPY) || !buf || !a || !msgs || !n)
		return -PARLEY_EINVAL;
	int total = raft_codec_frame_len(buf, len, max_frame);
	if (total <= 0)
		return total;
	size_t body_end = (size_t)total - RAFT_CODEC_TRAILER_BYTES;
	if (le_get64(buf + body_end) !=
	    parley_xxh3(buf, body_end, RAFT_CODEC_SEED_FRAME))
		return -PARLEY_ECORRUPT;

	struct dec d = {.a = a, .flags = flags, .err = 0};
	le_reader_init(&d.r, buf + RAFT_CODEC_HEADER_BYTES,
		       body_end - RAFT_CODEC_HEADER_BYTES);
	uint64_t from = le_read64(&d.r);
	uint64_t to = le_read64(&d.r);
	uint16_t cnt = le_read16(&d.r);
	if (!d.r.ok || from == 0 || to == 0 || cnt == 0 || cnt > RAFT_CODEC_MAX_BATCH ||
	    (size_t)cnt * RAFT_CODEC_MSG_MIN > d.r.len - d.r.off)
		return -PARLEY_EPROTO;
	size_t used0 = a->used;
	struct raft_msg *ms = arena_take(a, (size_t)cnt * sizeof(struct raft_msg));
	if (!ms)
		return -PARLEY_EFULL;
	memset(ms, 0, (size_t)cnt * sizeof *ms);
	for (uint32_t i = 0; i < cnt && d.r.ok; i++) {
		ms[i].from = from;
		ms[i].to = to;
		dec_msg(&d, &ms[i]);
	}
	if (d.r.ok && d.r.off != d.r.len)
		dec_fail(&d, -PARLEY_EPROTO); /* trailing bytes */
	if (!d.r.ok) {
		a->used = used0;
		return d.err ? d.err : -PARLEY_EPROTO;
	}
	*msgs = ms;
	*n = cnt;
	return total;
}
