/*
 * codec.c — the pure parley wire codec (docs/PROTOCOL.md, parley_proto.h).
 *
 * Layout of this file: frames, a bounded writer, a bounded reader with the
 * field validators, one encode and one decode function per message type
 * (kept next to each other so the wire order is written down twice, side by
 * side), the dispatch tables, then the optional zstd helpers and id helpers.
 *
 * Invariants:
 *   1. Decoding never reads outside the input and never allocates; every
 *      length and count is checked against the bytes left before use.
 *   2. Encoding never writes at or past `cap`; it keeps counting so the same
 *      code computes the size (parley_proto_size).
 *   3. The encoder validates exactly what the decoder validates, so anything
 *      this codec emits, this codec accepts (round-trip tests rely on it).
 *
 * Ownership: callers own all buffers. Threads: reentrant, no globals.
 */
#include "parley_proto.h"

#include <zstd.h>
#include <zstd_errors.h>

/* ---- frames --------------------------------------------------------------- */

int parley_proto_frame_decode(const uint8_t *buf, size_t len, uint32_t max_frame,
			      struct parley_frame *out)
{
	if (max_frame > PARLEY_PROTO_MAX_FRAME_HARD)
		max_frame = PARLEY_PROTO_MAX_FRAME_HARD;
	if (len < 4)
		return -PARLEY_EINCOMPLETE;
	uint32_t length = le_get32(buf);
	/* Check the limit before anything else: a peer announcing a huge frame
	 * must be refused without waiting for (or buffering) its bytes. */
	if ((uint64_t)length + 4 > max_frame)
		return -PARLEY_ETOOBIG;
	if (length < PARLEY_PROTO_LENGTH_MIN)
		return -PARLEY_EPROTO;
	if (len >= 8 && (le_get16(buf + 6) & ~PARLEY_FLAGS_KNOWN))
		return -PARLEY_EPROTO;
	if (len - 4 < length)
		return -PARLEY_EINCOMPLETE;
	out->type = le_get16(buf + 4);
	out->flags = le_get16(buf + 6);
	out->request_id = le_get32(buf + 8);
	out->payload = buf + PARLEY_PROTO_HEADER_SIZE;
	out->payload_len = length - 8;
	return (int)(length + 4);
}

void parley_proto_header_put(uint8_t *hdr, uint16_t type, uint16_t flags,
			     uint32_t request_id, uint32_t payload_len)
{
	le_put32(hdr, payload_len + 8);
	le_put16(hdr + 4, type);
	le_put16(hdr + 6, flags);
	le_put32(hdr + 8, request_id);
}

/* ---- strings, ids ---------------------------------------------------------- */

struct parley_str parley_str_c(const char *s)
{
	size_t n = strlen(s);
	PARLEY_ASSERT(n <= UINT16_MAX);
	return (struct parley_str){s, (uint16_t)n};
}

int parley_str_eq(struct parley_str s, const char *c)
{
	size_t n = strlen(c);
	return n == s.len && (n == 0 || memcmp(s.p, c, n) == 0);
}

int parley_proto_utf8_valid(const char *p, size_t len)
{
	const uint8_t *s = (const uint8_t *)p;
	size_t i = 0;
	while (i < len) {
		uint8_t c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t cp, min;
		if ((c & 0xE0) == 0xC0) {
			n = 2, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			n = 3, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			n = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if (len - i < n)
			return 0;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += n;
	}
	return 1;
}

static int id_alnum(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9');
}

int parley_proto_user_id_valid(const char *p, size_t len)
{
	if (len < 1 || len > PARLEY_PROTO_MAX_USER_ID || !id_alnum((uint8_t)p[0]))
		return 0;
	for (size_t i = 1; i < len; i++) {
		uint8_t c = (uint8_t)p[i];
		if (!id_alnum(c) && c != '.' && c != '_' && c != '-' && c != '@' &&
		    c != '+' && c != '=' && c != '|')
			return 0;
	}
	return 1;
}

int parley_proto_dm_conv_id(const char *a, size_t alen, const char *b,
			    size_t blen, char *out, size_t cap)
{
	if (!parley_proto_user_id_valid(a, alen) ||
	    !parley_proto_user_id_valid(b, blen))
		return -PARLEY_EINVAL;
	int c = memcmp(a, b, PARLEY_MIN(alen, blen));
	if (c == 0 && alen == blen)
		return -PARLEY_EINVAL;
	if (c > 0 || (c == 0 && alen > blen)) {
		const char *t = a;
		a = b;
		b = t;
		size_t tl = alen;
		alen = blen;
		blen = tl;
	}
	size_t n = 2 + alen + 1 + blen;
	if (cap < n + 1)
		return -PARLEY_ETOOBIG;
	memcpy(out, "d:", 2);
	memcpy(out + 2, a, alen);
	out[2 + alen] = ':';
	memcpy(out + 3 + alen, b, blen);
	out[n] = '\0';
	return (int)n;
}

/* ---- field kinds: one validator per kind of string ------------------------ */

enum fk {
	FK_USER, /* user id: parley_proto_user_id_valid */
	FK_USER_OPT, /* user id or empty */
	FK_NAME, /* 1..1024 UTF-8: a name the server validates (CONV_OPEN peer) */
	FK_CONV, /* 1..250 */
	FK_DEVICE, /* 1..64 */
	FK_TOKEN, /* 1..8192 */
	FK_TEXT, /* 0..1024 */
	FK_TITLE, /* 0..PARLEY_PROTO_MAX_TITLE */
	FK_CONV_OPT, /* a conversation id or empty (paging cursors) */
	FK_ADDR, /* 0..PARLEY_PROTO_MAX_ADDR printable ASCII (host:port) */
};

static int str_ok(const char *p, size_t len, enum fk k)
{
	switch (k) {
	case FK_USER:
		return parley_proto_user_id_valid(p, len);
	case FK_USER_OPT:
		return len == 0 || parley_proto_user_id_valid(p, len);
	case FK_NAME:
		return len >= 1 && len <= 1024 && parley_proto_utf8_valid(p, len);
	case FK_CONV:
		return len >= 1 && len <= PARLEY_PROTO_MAX_CONV_ID &&
		       parley_proto_utf8_valid(p, len);
	case FK_DEVICE:
		return len >= 1 && len <= PARLEY_PROTO_MAX_DEVICE_ID &&
		       parley_proto_utf8_valid(p, len);
	case FK_TOKEN:
		return len >= 1 && len <= PARLEY_PROTO_MAX_TOKEN &&
		       parley_proto_utf8_valid(p, len);
	case FK_TEXT:
		return len <= PARLEY_PROTO_MAX_TEXT &&
		       parley_proto_utf8_valid(p, len);
	case FK_TITLE:
		return len <= PARLEY_PROTO_MAX_TITLE &&
		       parley_proto_utf8_valid(p, len);
	case FK_CONV_OPT:
		return len <= PARLEY_PROTO_MAX_CONV_ID &&
		       parley_proto_utf8_valid(p, len);
	case FK_ADDR:
		if (len > PARLEY_PROTO_MAX_ADDR)
			return 0;
		for (size_t i = 0; i < len; i++)
			if (p[i] < 0x21 || p[i] > 0x7e)
				return 0;
		return 1;
	}
	return 0;
}

/* ---- bounded writer ---------------------------------------------------------- */

struct wr {
	uint8_t *b;
	size_t cap;
	size_t n; /* bytes the message needs so far (may exceed cap) */
	int inval; /* a field broke a protocol limit */
};

static void w_raw(struct wr *w, const void *p, size_t len)
{
	if (w->b && w->n <= w->cap && w->cap - w->n >= len && len)
		memcpy(w->b + w->n, p, len);
	w->n += len;
}
static void w8(struct wr *w, uint8_t v)
{
	w_raw(w, &v, 1);
}
static void w16(struct wr *w, uint16_t v)
{
	uint8_t t[2];
	le_put16(t, v);
	w_raw(w, t, 2);
}
static void w32(struct wr *w, uint32_t v)
{
	uint8_t t[4];
	le_put32(t, v);
	w_raw(w, t, 4);
}
static void w64(struct wr *w, uint64_t v)
{
	uint8_t t[8];
	le_put64(t, v);
	w_raw(w, t, 8);
}
static void w_str(struct wr *w, struct parley_str s, enum fk k)
{
	if ((s.len && !s.p) || !str_ok(s.p, s.len, k))
		w->inval = 1;
	w16(w, s.len);
	if (s.len && s.p)
		w_raw(w, s.p, s.len);
}
static void w_bytes(struct wr *w, struct parley_bytes b)
{
	if (b.len && !b.p) {
		w->inval = 1;
		return;
	}
	w32(w, b.len);
	w_raw(w, b.p, b.len);
}
/* Records: reserve the u32 length, write fields, patch it. */
static size_t w_rec_begin(struct wr *w)
{
	size_t at = w->n;
	w32(w, 0);
	return at;
}
static void w_rec_end(struct wr *w, size_t at)
{
	size_t len = w->n - at - 4;
	if (w->b && w->n <= w->cap)
		le_put32(w->b + at, (uint32_t)len);
}

/* ---- bounded reader ---------------------------------------------------------- */

static void r_str(struct le_reader *r, struct parley_str *s, enum fk k)
{
	uint16_t n = le_read16(r);
	const uint8_t *p = le_read_bytes(r, n);
	if (!p || !str_ok((const char *)p, n, k)) {
		r->ok = false;
		s->p = NULL;
		s->len = 0;
		return;
	}
	s->p = (const char *)p;
	s->len = n;
}
static void r_bytes(struct le_reader *r, struct parley_bytes *b)
{
	uint32_t n = le_read32(r);
	const uint8_t *p = le_read_bytes(r, n);
	b->p = p;
	b->len = p ? n : 0;
}
static void r_id16(struct le_reader *r, uint8_t out[PARLEY_PROTO_MSG_ID_LEN])
{
	const uint8_t *p = le_read_bytes(r, PARLEY_PROTO_MSG_ID_LEN);
	if (p)
		memcpy(out, p, PARLEY_PROTO_MSG_ID_LEN);
	else
		memset(out, 0, PARLEY_PROTO_MSG_ID_LEN);
}
/* True iff r has unread bytes: fields appended in later versions are read
 * only when present (an older peer's record simply ends before them). */
static bool r_more(const struct le_reader *r)
{
	return r->ok && r->off < r->len;
}
/* A length-prefixed record: returns a sub-reader over its bytes. */
static void r_rec(struct le_reader *r, struct le_reader *sub)
{
	uint32_t n = le_read32(r);
	const uint8_t *p = le_read_bytes(r, n);
	le_reader_init(sub, p ? p : (const uint8_t *)"", p ? n : 0);
	sub->ok = p != NULL;
}

/* ---- per-message encode / decode ------------------------------------------- */

static void enc_hello(struct wr *w, const struct parley_hello *m)
{
	w16(w, m->min_version);
	w16(w, m->max_version);
	w32(w, m->features);
	w_str(w, m->device_id, FK_DEVICE);
	w_str(w, m->client_name, FK_TEXT);
}
static void dec_hello(struct le_reader *r, struct parley_hello *m)
{
	m->min_version = le_read16(r);
	m->max_version = le_read16(r);
	m->features = le_read32(r);
	r_str(r, &m->device_id, FK_DEVICE);
	r_str(r, &m->client_name, FK_TEXT);
}

static void enc_hello_ok(struct wr *w, const struct parley_hello_ok *m)
{
	w16(w, m->version);
	w32(w, m->features);
	w32(w, m->max_frame);
	w32(w, m->max_body);
	w32(w, m->max_inflight);
	w32(w, m->event_window);
	w32(w, m->idle_timeout_ms);
	w64(w, m->server_time_ms);
	w_str(w, m->server_id, FK_TEXT);
}
static void dec_hello_ok(struct le_reader *r, struct parley_hello_ok *m)
{
	m->version = le_read16(r);
	m->features = le_read32(r);
	m->max_frame = le_read32(r);
	m->max_body = le_read32(r);
	m->max_inflight = le_read32(r);
	m->event_window = le_read32(r);
	m->idle_timeout_ms = le_read32(r);
	m->server_time_ms = le_read64(r);
	r_str(r, &m->server_id, FK_TEXT);
}

static void enc_auth(struct wr *w, const struct parley_auth *m)
{
	w_str(w, m->token, FK_TOKEN);
}
static void dec_auth(struct le_reader *r, struct parley_auth *m)
{
	r_str(r, &m->token, FK_TOKEN);
}

static void enc_auth_ok(struct wr *w, const struct parley_auth_ok *m)
{
	w_str(w, m->user_id, FK_USER);
	w64(w, m->expires_ms);
}
static void dec_auth_ok(struct le_reader *r, struct parley_auth_ok *m)
{
	r_str(r, &m->user_id, FK_USER);
	m->expires_ms = le_read64(r);
}

static void enc_ping(struct wr *w, const struct parley_ping *m)
{
	w64(w, m->nonce);
}
static void dec_ping(struct le_reader *r, struct parley_ping *m)
{
	m->nonce = le_read64(r);
}

static void enc_pong(struct wr *w, const struct parley_pong *m)
{
	w64(w, m->nonce);
	w64(w, m->server_time_ms);
}
static void dec_pong(struct le_reader *r, struct parley_pong *m)
{
	m->nonce = le_read64(r);
	m->server_time_ms = le_read64(r);
}

static void enc_error(struct wr *w, const struct parley_error_msg *m)
{
	w32(w, m->code);
	w16(w, m->flags);
	w32(w, m->retry_after_ms);
	w_str(w, m->text, FK_TEXT);
	if (m->leader_node || m->leader_addr.len || m->leader_tls_addr.len) {
		w64(w, m->leader_node);
		w_str(w, m->leader_addr, FK_ADDR);
		w_str(w, m->leader_tls_addr, FK_ADDR);
	}
}
static void dec_error(struct le_reader *r, struct parley_error_msg *m)
{
	m->code = le_read32(r);
	m->flags = le_read16(r);
	m->retry_after_ms = le_read32(r);
	r_str(r, &m->text, FK_TEXT);
	m->leader_node = 0;
	m->leader_addr = m->leader_tls_addr = (struct parley_str){0};
	if (r_more(r)) { /* appended 2026-12-05 */
		m->leader_node = le_read64(r);
		r_str(r, &m->leader_addr, FK_ADDR);
		r_str(r, &m->leader_tls_addr, FK_ADDR);
	}
}

/* A peer that is not a valid user id is well-formed on the wire: the
 * server answers it with ERROR INVAL (PROTOCOL.md), not PROTO. (libparley
 * checks the syntax before sending.) */
static void enc_conv_open(struct wr *w, const struct parley_conv_open *m)
{
	w_str(w, m->peer, FK_NAME);
}
static void dec_conv_open(struct le_reader *r, struct parley_conv_open *m)
{
	r_str(r, &m->peer, FK_NAME);
}

static void enc_conv(struct wr *w, const struct parley_conv *m)
{
	w_str(w, m->conv, FK_CONV);
	w8(w, m->kind);
	w8(w, m->flags);
	w64(w, m->last_seq);
	w64(w, m->last_ts_ms);
	if (m->member_count > PARLEY_PROTO_MAX_MEMBERS) {
		w->inval = 1;
		return;
	}
	w16(w, m->member_count);
	for (unsigned i = 0; i < m->member_count; i++)
		w_str(w, m->members[i], FK_USER);
}
static void dec_conv(struct le_reader *r, struct parley_conv *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->kind = le_read8(r);
	m->flags = le_read8(r);
	m->last_seq = le_read64(r);
	m->last_ts_ms = le_read64(r);
	m->member_count = le_read16(r);
	/* each member takes >= 3 bytes: refuse counts the payload cannot hold
	 * before looping over them */
	if (m->member_count > PARLEY_PROTO_MAX_MEMBERS ||
	    (size_t)m->member_count * 3 > r->len - r->off) {
		r->ok = false;
		m->member_count = 0;
		return;
	}
	for (unsigned i = 0; i < m->member_count && r->ok; i++)
		r_str(r, &m->members[i], FK_USER);
}

static void enc_send(struct wr *w, const struct parley_send *m)
{
	w_str(w, m->conv, FK_CONV);
	w_raw(w, m->client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	w16(w, m->content_type);
	w_bytes(w, m->body);
}
static void dec_send(struct le_reader *r, struct parley_send *m)
{
	r_str(r, &m->conv, FK_CONV);
	r_id16(r, m->client_msg_id);
	m->content_type = le_read16(r);
	r_bytes(r, &m->body);
}

static void enc_send_ack(struct wr *w, const struct parley_send_ack *m)
{
	w_str(w, m->conv, FK_CONV);
	w_raw(w, m->client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	w64(w, m->seq);
	w64(w, m->server_ts_ms);
	w8(w, m->flags);
}
static void dec_send_ack(struct le_reader *r, struct parley_send_ack *m)
{
	r_str(r, &m->conv, FK_CONV);
	r_id16(r, m->client_msg_id);
	m->seq = le_read64(r);
	m->server_ts_ms = le_read64(r);
	m->flags = le_read8(r);
}

/* ---- edits, deletes, retention ---- */

static void enc_edit(struct wr *w, const struct parley_edit *m)
{
	w_str(w, m->conv, FK_CONV);
	w_raw(w, m->client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	w64(w, m->ref_seq);
	w16(w, m->content_type);
	w_bytes(w, m->body);
}
static void dec_edit(struct le_reader *r, struct parley_edit *m)
{
	r_str(r, &m->conv, FK_CONV);
	r_id16(r, m->client_msg_id);
	m->ref_seq = le_read64(r);
	m->content_type = le_read16(r);
	r_bytes(r, &m->body);
}

static void enc_delete(struct wr *w, const struct parley_delete *m)
{
	w_str(w, m->conv, FK_CONV);
	w_raw(w, m->client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	w64(w, m->ref_seq);
}
static void dec_delete(struct le_reader *r, struct parley_delete *m)
{
	r_str(r, &m->conv, FK_CONV);
	r_id16(r, m->client_msg_id);
	m->ref_seq = le_read64(r);
}

static void enc_edit_ack(struct wr *w, const struct parley_edit_ack *m)
{
	w_str(w, m->conv, FK_CONV);
	w_raw(w, m->client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	w64(w, m->seq);
	w64(w, m->server_ts_ms);
	w64(w, m->ref_seq);
	w8(w, m->flags);
}
static void dec_edit_ack(struct le_reader *r, struct parley_edit_ack *m)
{
	r_str(r, &m->conv, FK_CONV);
	r_id16(r, m->client_msg_id);
	m->seq = le_read64(r);
	m->server_ts_ms = le_read64(r);
	m->ref_seq = le_read64(r);
	m->flags = le_read8(r);
}

static void enc_retention(struct wr *w, const struct parley_retention *m)
{
	w_str(w, m->conv, FK_CONV);
	w8(w, m->flags);
	w64(w, m->max_age_ms);
	w64(w, m->max_count);
}
static void dec_retention(struct le_reader *r, struct parley_retention *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->flags = le_read8(r);
	m->max_age_ms = le_read64(r);
	m->max_count = le_read64(r);
}

static void enc_retention_ok(struct wr *w, const struct parley_retention_ok *m)
{
	w_str(w, m->conv, FK_CONV);
	w64(w, m->max_age_ms);
	w64(w, m->max_count);
	w64(w, m->default_max_age_ms);
	w64(w, m->default_max_count);
	w64(w, m->first_seq);
}
static void dec_retention_ok(struct le_reader *r, struct parley_retention_ok *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->max_age_ms = le_read64(r);
	m->max_count = le_read64(r);
	m->default_max_age_ms = le_read64(r);
	m->default_max_count = le_read64(r);
	m->first_seq = le_read64(r);
}

static void enc_history(struct wr *w, const struct parley_history *m)
{
	w_str(w, m->conv, FK_CONV);
	w64(w, m->before_seq);
	if (m->limit < 1 || m->limit > PARLEY_PROTO_MAX_HISTORY)
		w->inval = 1;
	w16(w, m->limit);
}
static void dec_history(struct le_reader *r, struct parley_history *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->before_seq = le_read64(r);
	m->limit = le_read16(r);
	if (m->limit < 1 || m->limit > PARLEY_PROTO_MAX_HISTORY)
		r->ok = false;
}

static void enc_hist_msg(struct wr *w, const struct parley_hist_msg *hm)
{
	size_t at = w_rec_begin(w);
	w64(w, hm->seq);
	w64(w, hm->ts_ms);
	w_str(w, hm->sender, FK_USER);
	w_raw(w, hm->client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	w16(w, hm->content_type);
	w_bytes(w, hm->body);
	w16(w, hm->kind ? hm->kind : PARLEY_EV_MESSAGE);
	w64(w, hm->ref_seq);
	w32(w, hm->flags);
	w_rec_end(w, at);
}
static void dec_hist_msg(struct le_reader *r, struct parley_hist_msg *hm)
{
	struct le_reader s;
	r_rec(r, &s);
	hm->seq = le_read64(&s);
	hm->ts_ms = le_read64(&s);
	r_str(&s, &hm->sender, FK_USER);
	r_id16(&s, hm->client_msg_id);
	hm->content_type = le_read16(&s);
	r_bytes(&s, &hm->body);
	hm->kind = PARLEY_EV_MESSAGE;
	hm->ref_seq = 0;
	hm->flags = 0;
	if (r_more(&s)) {
		hm->kind = le_read16(&s);
		hm->ref_seq = le_read64(&s);
		hm->flags = le_read32(&s);
	}
	if (!s.ok)
		r->ok = false;
}

size_t parley_proto_hist_msg_size(const struct parley_hist_msg *hm)
{
	return 4 + 8 + 8 + 2 + (size_t)hm->sender.len + PARLEY_PROTO_MSG_ID_LEN +
	       2 + 4 + (size_t)hm->body.len + 2 + 8 + 4;
}

static void enc_history_page(struct wr *w, const struct parley_history_page *m)
{
	w_str(w, m->conv, FK_CONV);
	w64(w, m->next_before_seq);
	w8(w, m->flags);
	if (m->count > PARLEY_PROTO_MAX_HISTORY) {
		w->inval = 1;
		return;
	}
	w16(w, m->count);
	for (unsigned i = 0; i < m->count; i++)
		enc_hist_msg(w, &m->msgs[i]);
}
/* smallest possible encoded record: u32 len + u64 + u64 + str(1) + id16 + u16 + u32 */
#define HIST_REC_MIN (4 + 8 + 8 + 3 + 16 + 2 + 4)
static void dec_history_page(struct le_reader *r, struct parley_history_page *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->next_before_seq = le_read64(r);
	m->flags = le_read8(r);
	m->count = le_read16(r);
	if (m->count > PARLEY_PROTO_MAX_HISTORY ||
	    (size_t)m->count * HIST_REC_MIN > r->len - r->off) {
		r->ok = false;
		m->count = 0;
		return;
	}
	for (unsigned i = 0; i < m->count && r->ok; i++)
		dec_hist_msg(r, &m->msgs[i]);
}

static void enc_sync(struct wr *w, const struct parley_sync *m)
{
	w64(w, m->from_inbox_seq);
}
static void dec_sync(struct le_reader *r, struct parley_sync *m)
{
	m->from_inbox_seq = le_read64(r);
}

static void enc_sync_ok(struct wr *w, const struct parley_sync_ok *m)
{
	w64(w, m->first_inbox_seq);
	w64(w, m->last_inbox_seq);
	w64(w, m->start_inbox_seq);
}
static void dec_sync_ok(struct le_reader *r, struct parley_sync_ok *m)
{
	m->first_inbox_seq = le_read64(r);
	m->last_inbox_seq = le_read64(r);
	m->start_inbox_seq = le_read64(r);
}

static void enc_event(struct wr *w, const struct parley_event *m)
{
	w64(w, m->inbox_seq);
	w16(w, m->kind);
	w_str(w, m->conv, FK_CONV);
	w64(w, m->conv_seq);
	w_str(w, m->sender, FK_USER);
	w_raw(w, m->client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	w64(w, m->server_ts_ms);
	w16(w, m->content_type);
	w_bytes(w, m->body);
	w64(w, m->ref_seq);
	w32(w, m->flags);
}
static void dec_event(struct le_reader *r, struct parley_event *m)
{
	m->inbox_seq = le_read64(r);
	m->kind = le_read16(r);
	r_str(r, &m->conv, FK_CONV);
	m->conv_seq = le_read64(r);
	r_str(r, &m->sender, FK_USER);
	r_id16(r, m->client_msg_id);
	m->server_ts_ms = le_read64(r);
	m->content_type = le_read16(r);
	r_bytes(r, &m->body);
	m->ref_seq = 0;
	m->flags = 0;
	if (r_more(r)) {
		m->ref_seq = le_read64(r);
		m->flags = le_read32(r);
	}
}

static void enc_event_ack(struct wr *w, const struct parley_event_ack *m)
{
	w64(w, m->up_to_inbox_seq);
}
static void dec_event_ack(struct le_reader *r, struct parley_event_ack *m)
{
	m->up_to_inbox_seq = le_read64(r);
}

static void enc_conv_list(struct wr *w, const struct parley_conv_list *m)
{
	if (m->limit < 1 || m->limit > PARLEY_PROTO_MAX_LIST)
		w->inval = 1;
	w16(w, m->limit);
	w64(w, m->before_ts_ms);
	w_str(w, m->before_conv, FK_CONV_OPT);
}
static void dec_conv_list(struct le_reader *r, struct parley_conv_list *m)
{
	m->limit = le_read16(r);
	if (m->limit < 1 || m->limit > PARLEY_PROTO_MAX_LIST)
		r->ok = false;
	m->before_ts_ms = 0;
	m->before_conv = (struct parley_str){ 0 };
	if (r_more(r)) {
		m->before_ts_ms = le_read64(r);
		r_str(r, &m->before_conv, FK_CONV_OPT);
	}
}

static void enc_conv_list_ok(struct wr *w, const struct parley_conv_list_ok *m)
{
	if (m->count > PARLEY_PROTO_MAX_LIST) {
		w->inval = 1;
		return;
	}
	w16(w, m->count);
	for (unsigned i = 0; i < m->count; i++) {
		const struct parley_conv_entry *e = &m->entries[i];
		size_t at = w_rec_begin(w);
		w_str(w, e->conv, FK_CONV);
		w8(w, e->kind);
		w64(w, e->last_seq);
		w64(w, e->last_ts_ms);
		w32(w, e->member_count);
		w_str(w, e->peer, FK_USER_OPT);
		w_str(w, e->title, FK_TITLE);
		w64(w, e->read_seq);
		w32(w, e->unread);
		w_str(w, e->last_sender, FK_USER_OPT);
		w16(w, e->last_content_type);
		if (e->preview.len > PARLEY_PROTO_MAX_PREVIEW)
			w->inval = 1;
		w_bytes(w, e->preview);
		w8(w, e->flags);
		w_rec_end(w, at);
	}
	w8(w, m->flags);
	w64(w, m->next_before_ts_ms);
	w_str(w, m->next_before_conv, FK_CONV_OPT);
}
/* u32 len + str(1) + u8 + u64 + u64 + u32 + str(0) */
#define CONV_REC_MIN (4 + 3 + 1 + 8 + 8 + 4 + 2)
static void dec_conv_list_ok(struct le_reader *r, struct parley_conv_list_ok *m)
{
	m->count = le_read16(r);
	if (m->count > PARLEY_PROTO_MAX_LIST ||
	    (size_t)m->count * CONV_REC_MIN > r->len - r->off) {
		r->ok = false;
		m->count = 0;
		return;
	}
	for (unsigned i = 0; i < m->count && r->ok; i++) {
		struct parley_conv_entry *e = &m->entries[i];
		struct le_reader s;
		r_rec(r, &s);
		r_str(&s, &e->conv, FK_CONV);
		e->kind = le_read8(&s);
		e->last_seq = le_read64(&s);
		e->last_ts_ms = le_read64(&s);
		e->member_count = le_read32(&s);
		r_str(&s, &e->peer, FK_USER_OPT);
		e->title = (struct parley_str){ 0 };
		e->read_seq = 0;
		e->unread = 0;
		e->last_sender = (struct parley_str){ 0 };
		e->last_content_type = 0;
		e->preview = (struct parley_bytes){ 0 };
		if (r_more(&s)) {
			r_str(&s, &e->title, FK_TITLE);
			e->read_seq = le_read64(&s);
			e->unread = le_read32(&s);
			r_str(&s, &e->last_sender, FK_USER_OPT);
			e->last_content_type = le_read16(&s);
			r_bytes(&s, &e->preview);
			if (e->preview.len > PARLEY_PROTO_MAX_PREVIEW)
				s.ok = false;
		}
		e->flags = 0;
		if (s.ok && r_more(&s))
			e->flags = le_read8(&s);
		if (!s.ok)
			r->ok = false;
	}
	m->flags = 0;
	m->next_before_ts_ms = 0;
	m->next_before_conv = (struct parley_str){ 0 };
	if (r_more(r)) {
		m->flags = le_read8(r);
		m->next_before_ts_ms = le_read64(r);
		r_str(r, &m->next_before_conv, FK_CONV_OPT);
	}
}

/* READ_MARKER / RECEIPTS ------------------------------------------------------ */

static void enc_read_marker(struct wr *w, const struct parley_read_marker *m)
{
	w_str(w, m->conv, FK_CONV);
	w64(w, m->seq);
}
static void dec_read_marker(struct le_reader *r, struct parley_read_marker *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->seq = le_read64(r);
}

static void enc_read_marker_ok(struct wr *w,
			       const struct parley_read_marker_ok *m)
{
	w_str(w, m->conv, FK_CONV);
	w64(w, m->read_seq);
	w8(w, m->flags);
}
static void dec_read_marker_ok(struct le_reader *r,
			       struct parley_read_marker_ok *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->read_seq = le_read64(r);
	m->flags = le_read8(r);
}

static void enc_receipts(struct wr *w, const struct parley_receipts *m)
{
	if (m->limit < 1 || m->limit > PARLEY_PROTO_MAX_RECEIPTS)
		w->inval = 1;
	w_str(w, m->conv, FK_CONV);
	w64(w, m->seq);
	w_str(w, m->after, FK_USER_OPT);
	w16(w, m->limit);
}
static void dec_receipts(struct le_reader *r, struct parley_receipts *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->seq = le_read64(r);
	r_str(r, &m->after, FK_USER_OPT);
	m->limit = le_read16(r);
	if (m->limit < 1 || m->limit > PARLEY_PROTO_MAX_RECEIPTS)
		r->ok = false;
}

static void enc_receipts_ok(struct wr *w, const struct parley_receipts_ok *m)
{
	if (m->count > PARLEY_PROTO_MAX_RECEIPTS) {
		w->inval = 1;
		return;
	}
	w_str(w, m->conv, FK_CONV);
	w64(w, m->seq);
	w32(w, m->member_count);
	w32(w, m->delivered);
	w32(w, m->read);
	w8(w, m->flags);
	w_str(w, m->next_after, FK_USER_OPT);
	w16(w, m->count);
	for (unsigned i = 0; i < m->count; i++) {
		const struct parley_receipt_rec *e = &m->recs[i];
		size_t at = w_rec_begin(w);
		w_str(w, e->user, FK_USER);
		w8(w, e->state);
		w64(w, e->delivered_seq);
		w64(w, e->read_seq);
		w_rec_end(w, at);
	}
}
/* u32 len + str(1) + u8 + u64 + u64 */
#define RCPT_REC_MIN (4 + 3 + 1 + 8 + 8)
static void dec_receipts_ok(struct le_reader *r, struct parley_receipts_ok *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->seq = le_read64(r);
	m->member_count = le_read32(r);
	m->delivered = le_read32(r);
	m->read = le_read32(r);
	m->flags = le_read8(r);
	r_str(r, &m->next_after, FK_USER_OPT);
	m->count = le_read16(r);
	if (!r->ok || m->count > PARLEY_PROTO_MAX_RECEIPTS ||
	    (size_t)m->count * RCPT_REC_MIN > r->len - r->off) {
		r->ok = false;
		m->count = 0;
		return;
	}
	for (unsigned i = 0; i < m->count && r->ok; i++) {
		struct parley_receipt_rec *e = &m->recs[i];
		struct le_reader s;
		r_rec(r, &s);
		r_str(&s, &e->user, FK_USER);
		e->state = le_read8(&s);
		e->delivered_seq = le_read64(&s);
		e->read_seq = le_read64(&s);
		if (!s.ok)
			r->ok = false;
	}
}

static void enc_goaway(struct wr *w, const struct parley_goaway *m)
{
	w16(w, m->reason);
	w32(w, m->retry_after_ms);
	w_str(w, m->text, FK_TEXT);
}
static void dec_goaway(struct le_reader *r, struct parley_goaway *m)
{
	m->reason = le_read16(r);
	m->retry_after_ms = le_read32(r);
	r_str(r, &m->text, FK_TEXT);
}

/* ---- typing and presence ------------------------------------------------------ */

static void enc_typing(struct wr *w, const struct parley_typing *m)
{
	if (m->state > PARLEY_TYPING_STARTED)
		w->inval = 1;
	w_str(w, m->conv, FK_CONV);
	w8(w, m->state);
}
static void dec_typing(struct le_reader *r, struct parley_typing *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->state = le_read8(r);
	if (m->state > PARLEY_TYPING_STARTED)
		r->ok = false;
}

static void enc_typing_push(struct wr *w, const struct parley_typing_push *m)
{
	if (m->state > PARLEY_TYPING_STARTED)
		w->inval = 1;
	w_str(w, m->conv, FK_CONV);
	w_str(w, m->user, FK_USER);
	w8(w, m->state);
	w32(w, m->ttl_ms);
}
static void dec_typing_push(struct le_reader *r, struct parley_typing_push *m)
{
	r_str(r, &m->conv, FK_CONV);
	r_str(r, &m->user, FK_USER);
	m->state = le_read8(r);
	m->ttl_ms = le_read32(r);
	if (m->state > PARLEY_TYPING_STARTED)
		r->ok = false;
}

static void enc_presence_sub(struct wr *w, const struct parley_presence_sub *m)
{
	if ((m->op != PARLEY_PRESENCE_SUBSCRIBE &&
	     m->op != PARLEY_PRESENCE_UNSUBSCRIBE) ||
	    m->count < 1 || m->count > PARLEY_PROTO_MAX_PRESENCE_USERS) {
		w->inval = 1;
		return;
	}
	w8(w, m->op);
	w16(w, m->count);
	for (unsigned i = 0; i < m->count; i++)
		w_str(w, m->users[i], FK_USER);
}
static void dec_presence_sub(struct le_reader *r, struct parley_presence_sub *m)
{
	m->op = le_read8(r);
	m->count = le_read16(r);
	if ((m->op != PARLEY_PRESENCE_SUBSCRIBE &&
	     m->op != PARLEY_PRESENCE_UNSUBSCRIBE) ||
	    m->count < 1 || m->count > PARLEY_PROTO_MAX_PRESENCE_USERS ||
	    (size_t)m->count * 3 > r->len - r->off) {
		r->ok = false;
		m->count = 0;
		return;
	}
	for (unsigned i = 0; i < m->count && r->ok; i++)
		r_str(r, &m->users[i], FK_USER);
}

static void enc_presence_rec(struct wr *w, const struct parley_presence_rec *m)
{
	if (m->status > PARLEY_PRESENCE_ONLINE)
		w->inval = 1;
	w_str(w, m->user, FK_USER);
	w8(w, m->status);
	w64(w, m->last_seen_ms);
}
static void dec_presence_rec(struct le_reader *r, struct parley_presence_rec *m)
{
	r_str(r, &m->user, FK_USER);
	m->status = le_read8(r);
	m->last_seen_ms = le_read64(r);
	if (m->status > PARLEY_PRESENCE_ONLINE)
		r->ok = false;
}

static void enc_presence_sub_ok(struct wr *w,
				const struct parley_presence_sub_ok *m)
{
	if (m->count > PARLEY_PROTO_MAX_PRESENCE_USERS) {
		w->inval = 1;
		return;
	}
	w32(w, m->heartbeat_ms);
	w32(w, m->ttl_ms);
	w16(w, m->subscribed);
	w16(w, m->count);
	for (unsigned i = 0; i < m->count; i++) {
		size_t at = w_rec_begin(w);
		enc_presence_rec(w, &m->recs[i]);
		w_rec_end(w, at);
	}
}
/* u32 len + str(1) + u8 + u64 */
#define PRES_REC_MIN (4 + 3 + 1 + 8)
static void dec_presence_sub_ok(struct le_reader *r,
				struct parley_presence_sub_ok *m)
{
	m->heartbeat_ms = le_read32(r);
	m->ttl_ms = le_read32(r);
	m->subscribed = le_read16(r);
	m->count = le_read16(r);
	if (m->count > PARLEY_PROTO_MAX_PRESENCE_USERS ||
	    (size_t)m->count * PRES_REC_MIN > r->len - r->off) {
		r->ok = false;
		m->count = 0;
		return;
	}
	for (unsigned i = 0; i < m->count && r->ok; i++) {
		struct le_reader s;
		r_rec(r, &s);
		dec_presence_rec(&s, &m->recs[i]);
		if (!s.ok)
			r->ok = false;
	}
}

static void enc_presence_set(struct wr *w, const struct parley_presence_set *m)
{
	if (m->flags & ~PARLEY_PRESF_KNOWN)
		w->inval = 1;
	w32(w, m->flags);
}
static void dec_presence_set(struct le_reader *r, struct parley_presence_set *m)
{
	m->flags = le_read32(r);
	if (m->flags & ~PARLEY_PRESF_KNOWN)
		r->ok = false;
}

/* ---- groups ------------------------------------------------------------------ */

static void w_users(struct wr *w, uint16_t n, const struct parley_str *u)
{
	if (n > PARLEY_PROTO_MAX_GROUP_USERS) {
		w->inval = 1;
		return;
	}
	w16(w, n);
	for (unsigned i = 0; i < n; i++)
		w_str(w, u[i], FK_USER);
}
static void r_users(struct le_reader *r, uint16_t *n, struct parley_str *u)
{
	*n = le_read16(r);
	/* each user takes >= 3 bytes: refuse counts the payload cannot hold */
	if (*n > PARLEY_PROTO_MAX_GROUP_USERS ||
	    (size_t)*n * 3 > r->len - r->off) {
		r->ok = false;
		*n = 0;
		return;
	}
	for (unsigned i = 0; i < *n && r->ok; i++)
		r_str(r, &u[i], FK_USER);
}

static void enc_group_create(struct wr *w, const struct parley_group_create *m)
{
	w_raw(w, m->create_id, PARLEY_PROTO_MSG_ID_LEN);
	if (m->name.len < 1 || m->name.len > 255)
		w->inval = 1;
	w_str(w, m->name, FK_TITLE);
	w8(w, m->settings);
	w_users(w, m->count, m->users);
}
static void dec_group_create(struct le_reader *r, struct parley_group_create *m)
{
	r_id16(r, m->create_id);
	r_str(r, &m->name, FK_TITLE);
	if (m->name.len < 1 || m->name.len > 255)
		r->ok = false;
	m->settings = le_read8(r);
	r_users(r, &m->count, m->users);
}

static void enc_group_change(struct wr *w, const struct parley_group_change *m)
{
	w_str(w, m->conv, FK_CONV);
	w8(w, m->role);
	w_users(w, m->count, m->users);
}
static void dec_group_change(struct le_reader *r, struct parley_group_change *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->role = le_read8(r);
	r_users(r, &m->count, m->users);
}

static void enc_group_ok(struct wr *w, const struct parley_group_ok *m)
{
	w_str(w, m->conv, FK_CONV);
	w64(w, m->seq);
	w8(w, m->flags);
}
static void dec_group_ok(struct le_reader *r, struct parley_group_ok *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->seq = le_read64(r);
	m->flags = le_read8(r);
}

/* GROUP_SET: the codec checks the shape (known field bits, a name only
 * with NAME); the server checks the values (name 1..255 bytes of UTF-8,
 * known settings) and answers INVAL with the rule. */
static void enc_group_set(struct wr *w, const struct parley_group_set *m)
{
	w_str(w, m->conv, FK_CONV);
	if (!m->fields || (m->fields & ~PARLEY_GSET_KNOWN) ||
	    (!(m->fields & PARLEY_GSET_NAME) && m->name.len))
		w->inval = 1;
	w8(w, m->fields);
	w_str(w, m->name, FK_TITLE);
	w8(w, m->settings);
}
static void dec_group_set(struct le_reader *r, struct parley_group_set *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->fields = le_read8(r);
	if (!m->fields || (m->fields & ~PARLEY_GSET_KNOWN))
		r->ok = false;
	r_str(r, &m->name, FK_TITLE);
	if (!(m->fields & PARLEY_GSET_NAME) && m->name.len)
		r->ok = false;
	m->settings = le_read8(r);
}

static void enc_group_info(struct wr *w, const struct parley_group_info *m)
{
	w_str(w, m->conv, FK_CONV);
	w32(w, m->from_index);
	if (m->limit < 1 || m->limit > PARLEY_PROTO_MAX_GROUP_USERS)
		w->inval = 1;
	w16(w, m->limit);
}
static void dec_group_info(struct le_reader *r, struct parley_group_info *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->from_index = le_read32(r);
	m->limit = le_read16(r);
	if (m->limit < 1 || m->limit > PARLEY_PROTO_MAX_GROUP_USERS)
		r->ok = false;
}

static void enc_group_catchup(struct wr *w, const struct parley_group_catchup *m)
{
	w_str(w, m->conv, FK_CONV);
	if (m->from_seq == 0 || m->limit < 1 || m->limit > PARLEY_PROTO_MAX_HISTORY)
		w->inval = 1;
	w64(w, m->from_seq);
	w16(w, m->limit);
}
static void dec_group_catchup(struct le_reader *r, struct parley_group_catchup *m)
{
	r_str(r, &m->conv, FK_CONV);
	m->from_seq = le_read64(r);
	m->limit = le_read16(r);
	if (m->from_seq == 0 || m->limit < 1 || m->limit > PARLEY_PROTO_MAX_HISTORY)
		r->ok = false;
}

static void enc_group_info_ok(struct wr *w, const struct parley_group_info_ok *m)
{
	w_str(w, m->conv, FK_CONV);
	w_str(w, m->name, FK_TITLE);
	w8(w, m->settings);
	w8(w, m->my_role);
	w32(w, m->member_count);
	w64(w, m->as_of_seq);
	w32(w, m->next_index);
	if (m->count > PARLEY_PROTO_MAX_GROUP_USERS) {
		w->inval = 1;
		return;
	}
	w16(w, m->count);
	for (unsigned i = 0; i < m->count; i++) {
		size_t at = w_rec_begin(w);
		w_str(w, m->members[i].user, FK_USER);
		w8(w, m->members[i].role);
		w_rec_end(w, at);
	}
}
static void dec_group_info_ok(struct le_reader *r, struct parley_group_info_ok *m)
{
	r_str(r, &m->conv, FK_CONV);
	r_str(r, &m->name, FK_TITLE);
	m->settings = le_read8(r);
	m->my_role = le_read8(r);
	m->member_count = le_read32(r);
	m->as_of_seq = le_read64(r);
	m->next_index = le_read32(r);
	m->count = le_read16(r);
	/* u32 len + str(1) + u8 */
	if (m->count > PARLEY_PROTO_MAX_GROUP_USERS ||
	    (size_t)m->count * 8 > r->len - r->off) {
		r->ok = false;
		m->count = 0;
		return;
	}
	for (unsigned i = 0; i < m->count && r->ok; i++) {
		struct le_reader s;
		r_rec(r, &s);
		r_str(&s, &m->members[i].user, FK_USER);
		m->members[i].role = le_read8(&s);
		if (!s.ok)
			r->ok = false;
	}
}

/* ---- dispatch -------------------------------------------------------------- */

/* Returns 0, or -PARLEY_EVERSION for an unknown / reserved type. */
static int enc_body(struct wr *w, const struct parley_msg *m)
{
	switch (m->type) {
	case PARLEY_T_HELLO: enc_hello(w, &m->hello); break;
	case PARLEY_T_HELLO_OK: enc_hello_ok(w, &m->hello_ok); break;
	case PARLEY_T_AUTH: enc_auth(w, &m->auth); break;
	case PARLEY_T_AUTH_OK: enc_auth_ok(w, &m->auth_ok); break;
	case PARLEY_T_PING: enc_ping(w, &m->ping); break;
	case PARLEY_T_PONG: enc_pong(w, &m->pong); break;
	case PARLEY_T_ERROR: enc_error(w, &m->error); break;
	case PARLEY_T_CONV_OPEN: enc_conv_open(w, &m->conv_open); break;
	case PARLEY_T_CONV: enc_conv(w, &m->conv); break;
	case PARLEY_T_SEND: enc_send(w, &m->send); break;
	case PARLEY_T_SEND_ACK: enc_send_ack(w, &m->send_ack); break;
	case PARLEY_T_HISTORY: enc_history(w, &m->history); break;
	case PARLEY_T_HISTORY_PAGE: enc_history_page(w, &m->history_page); break;
	case PARLEY_T_SYNC: enc_sync(w, &m->sync); break;
	case PARLEY_T_SYNC_OK: enc_sync_ok(w, &m->sync_ok); break;
	case PARLEY_T_EVENT: enc_event(w, &m->event); break;
	case PARLEY_T_EVENT_ACK: enc_event_ack(w, &m->event_ack); break;
	case PARLEY_T_CONV_LIST: enc_conv_list(w, &m->conv_list); break;
	case PARLEY_T_CONV_LIST_OK: enc_conv_list_ok(w, &m->conv_list_ok); break;
	case PARLEY_T_GOAWAY: enc_goaway(w, &m->goaway); break;
	case PARLEY_T_GROUP_CREATE: enc_group_create(w, &m->group_create); break;
	case PARLEY_T_GROUP_ADD:
	case PARLEY_T_GROUP_REMOVE:
	case PARLEY_T_GROUP_LEAVE:
	case PARLEY_T_GROUP_ROLE: enc_group_change(w, &m->group_change); break;
	case PARLEY_T_GROUP_CREATE_OK:
	case PARLEY_T_GROUP_ADD_OK:
	case PARLEY_T_GROUP_REMOVE_OK:
	case PARLEY_T_GROUP_LEAVE_OK:
	case PARLEY_T_GROUP_ROLE_OK:
	case PARLEY_T_GROUP_SET_OK: enc_group_ok(w, &m->group_ok); break;
	case PARLEY_T_GROUP_SET: enc_group_set(w, &m->group_set); break;
	case PARLEY_T_GROUP_INFO: enc_group_info(w, &m->group_info); break;
	case PARLEY_T_GROUP_CATCHUP: enc_group_catchup(w, &m->group_catchup); break;
	case PARLEY_T_GROUP_CATCHUP_OK: enc_history_page(w, &m->history_page); break;
	case PARLEY_T_GROUP_INFO_OK: enc_group_info_ok(w, &m->group_info_ok); break;
	case PARLEY_T_TYPING: enc_typing(w, &m->typing); break;
	case PARLEY_T_TYPING_PUSH: enc_typing_push(w, &m->typing_push); break;
	case PARLEY_T_PRESENCE_SUB: enc_presence_sub(w, &m->presence_sub); break;
	case PARLEY_T_PRESENCE_SUB_OK: enc_presence_sub_ok(w, &m->presence_sub_ok); break;
	case PARLEY_T_PRESENCE: enc_presence_rec(w, &m->presence); break;
	case PARLEY_T_PRESENCE_SET: enc_presence_set(w, &m->presence_set); break;
	case PARLEY_T_PRESENCE_SET_OK: w32(w, m->presence_set_ok.flags); break;
	case PARLEY_T_READ_MARKER: enc_read_marker(w, &m->read_marker); break;
	case PARLEY_T_READ_MARKER_OK: enc_read_marker_ok(w, &m->read_marker_ok); break;
	case PARLEY_T_RECEIPTS: enc_receipts(w, &m->receipts); break;
	case PARLEY_T_RECEIPTS_OK: enc_receipts_ok(w, &m->receipts_ok); break;
	case PARLEY_T_EDIT: enc_edit(w, &m->edit); break;
	case PARLEY_T_DELETE: enc_delete(w, &m->del); break;
	case PARLEY_T_EDIT_ACK:
	case PARLEY_T_DELETE_ACK: enc_edit_ack(w, &m->edit_ack); break;
	case PARLEY_T_RETENTION: enc_retention(w, &m->retention); break;
	case PARLEY_T_RETENTION_OK: enc_retention_ok(w, &m->retention_ok); break;
	default: return -PARLEY_EVERSION;
	}
	return 0;
}

static int encode(uint8_t *buf, size_t cap, uint32_t request_id,
		  const struct parley_msg *m)
{
	struct wr w = {buf, cap, PARLEY_PROTO_HEADER_SIZE, 0};
	if (enc_body(&w, m) < 0 || w.inval)
		return -PARLEY_EINVAL;
	if (w.n > PARLEY_PROTO_MAX_FRAME_HARD)
		return -PARLEY_EINVAL; /* no receiver would accept it */
	if (!buf || w.n > cap)
		return -PARLEY_ETOOBIG;
	parley_proto_header_put(buf, m->type, 0, request_id,
				(uint32_t)(w.n - PARLEY_PROTO_HEADER_SIZE));
	return (int)w.n;
}

int parley_proto_encode(uint8_t *buf, size_t cap, uint32_t request_id,
			const struct parley_msg *m)
{
	return encode(buf, cap, request_id, m);
}

int parley_proto_size(const struct parley_msg *m)
{
	struct wr w = {NULL, 0, PARLEY_PROTO_HEADER_SIZE, 0};
	if (enc_body(&w, m) < 0 || w.inval || w.n > PARLEY_PROTO_MAX_FRAME_HARD)
		return -PARLEY_EINVAL;
	return (int)w.n;
}

int parley_proto_decode_payload(uint16_t type, const uint8_t *payload,
				size_t len, struct parley_msg *out)
{
	struct le_reader r;
	le_reader_init(&r, payload ? payload : (const uint8_t *)"",
		       payload ? len : 0);
	out->type = type;
	switch (type) {
	case PARLEY_T_HELLO: dec_hello(&r, &out->hello); break;
	case PARLEY_T_HELLO_OK: dec_hello_ok(&r, &out->hello_ok); break;
	case PARLEY_T_AUTH: dec_auth(&r, &out->auth); break;
	case PARLEY_T_AUTH_OK: dec_auth_ok(&r, &out->auth_ok); break;
	case PARLEY_T_PING: dec_ping(&r, &out->ping); break;
	case PARLEY_T_PONG: dec_pong(&r, &out->pong); break;
	case PARLEY_T_ERROR: dec_error(&r, &out->error); break;
	case PARLEY_T_CONV_OPEN: dec_conv_open(&r, &out->conv_open); break;
	case PARLEY_T_CONV: dec_conv(&r, &out->conv); break;
	case PARLEY_T_SEND: dec_send(&r, &out->send); break;
	case PARLEY_T_SEND_ACK: dec_send_ack(&r, &out->send_ack); break;
	case PARLEY_T_HISTORY: dec_history(&r, &out->history); break;
	case PARLEY_T_HISTORY_PAGE: dec_history_page(&r, &out->history_page); break;
	case PARLEY_T_SYNC: dec_sync(&r, &out->sync); break;
	case PARLEY_T_SYNC_OK: dec_sync_ok(&r, &out->sync_ok); break;
	case PARLEY_T_EVENT: dec_event(&r, &out->event); break;
	case PARLEY_T_EVENT_ACK: dec_event_ack(&r, &out->event_ack); break;
	case PARLEY_T_CONV_LIST: dec_conv_list(&r, &out->conv_list); break;
	case PARLEY_T_CONV_LIST_OK: dec_conv_list_ok(&r, &out->conv_list_ok); break;
	case PARLEY_T_GOAWAY: dec_goaway(&r, &out->goaway); break;
	case PARLEY_T_GROUP_CREATE: dec_group_create(&r, &out->group_create); break;
	case PARLEY_T_GROUP_ADD:
	case PARLEY_T_GROUP_REMOVE:
	case PARLEY_T_GROUP_LEAVE:
	case PARLEY_T_GROUP_ROLE: dec_group_change(&r, &out->group_change); break;
	case PARLEY_T_GROUP_CREATE_OK:
	case PARLEY_T_GROUP_ADD_OK:
	case PARLEY_T_GROUP_REMOVE_OK:
	case PARLEY_T_GROUP_LEAVE_OK:
	case PARLEY_T_GROUP_ROLE_OK:
	case PARLEY_T_GROUP_SET_OK: dec_group_ok(&r, &out->group_ok); break;
	case PARLEY_T_GROUP_SET: dec_group_set(&r, &out->group_set); break;
	case PARLEY_T_GROUP_INFO: dec_group_info(&r, &out->group_info); break;
	case PARLEY_T_GROUP_CATCHUP: dec_group_catchup(&r, &out->group_catchup); break;
	case PARLEY_T_GROUP_CATCHUP_OK: dec_history_page(&r, &out->history_page); break;
	case PARLEY_T_GROUP_INFO_OK: dec_group_info_ok(&r, &out->group_info_ok); break;
	case PARLEY_T_TYPING: dec_typing(&r, &out->typing); break;
	case PARLEY_T_TYPING_PUSH: dec_typing_push(&r, &out->typing_push); break;
	case PARLEY_T_PRESENCE_SUB: dec_presence_sub(&r, &out->presence_sub); break;
	case PARLEY_T_PRESENCE_SUB_OK: dec_presence_sub_ok(&r, &out->presence_sub_ok); break;
	case PARLEY_T_PRESENCE: dec_presence_rec(&r, &out->presence); break;
	case PARLEY_T_PRESENCE_SET: dec_presence_set(&r, &out->presence_set); break;
	case PARLEY_T_PRESENCE_SET_OK: out->presence_set_ok.flags = le_read32(&r); break;
	case PARLEY_T_READ_MARKER: dec_read_marker(&r, &out->read_marker); break;
	case PARLEY_T_READ_MARKER_OK: dec_read_marker_ok(&r, &out->read_marker_ok); break;
	case PARLEY_T_RECEIPTS: dec_receipts(&r, &out->receipts); break;
	case PARLEY_T_RECEIPTS_OK: dec_receipts_ok(&r, &out->receipts_ok); break;
	case PARLEY_T_EDIT: dec_edit(&r, &out->edit); break;
	case PARLEY_T_DELETE: dec_delete(&r, &out->del); break;
	case PARLEY_T_EDIT_ACK:
	case PARLEY_T_DELETE_ACK: dec_edit_ack(&r, &out->edit_ack); break;
	case PARLEY_T_RETENTION: dec_retention(&r, &out->retention); break;
	case PARLEY_T_RETENTION_OK: dec_retention_ok(&r, &out->retention_ok); break;
	default: return -PARLEY_EVERSION;
	}
	return r.ok ? 0 : -PARLEY_EPROTO;
}

int parley_proto_decode(const struct parley_frame *f, struct parley_msg *out)
{
	if (f->flags & PARLEY_FLAG_ZSTD)
		return -PARLEY_EINVAL;
	return parley_proto_decode_payload(f->type, f->payload, f->payload_len,
					   out);
}

const char *parley_proto_type_name(uint16_t type)
{
	switch (type) {
	case PARLEY_T_HELLO: return "HELLO";
	case PARLEY_T_AUTH: return "AUTH";
	case PARLEY_T_PING: return "PING";
	case PARLEY_T_CONV_OPEN: return "CONV_OPEN";
	case PARLEY_T_SEND: return "SEND";
	case PARLEY_T_HISTORY: return "HISTORY";
	case PARLEY_T_SYNC: return "SYNC";
	case PARLEY_T_CONV_LIST: return "CONV_LIST";
	case PARLEY_T_PRESENCE_SUB: return "PRESENCE_SUB";
	case PARLEY_T_READ_MARKER: return "READ_MARKER";
	case PARLEY_T_RECEIPTS: return "RECEIPTS";
	case PARLEY_T_EVENT_ACK: return "EVENT_ACK";
	case PARLEY_T_TYPING: return "TYPING";
	case PARLEY_T_ERROR: return "ERROR";
	case PARLEY_T_HELLO_OK: return "HELLO_OK";
	case PARLEY_T_AUTH_OK: return "AUTH_OK";
	case PARLEY_T_PONG: return "PONG";
	case PARLEY_T_CONV: return "CONV";
	case PARLEY_T_SEND_ACK: return "SEND_ACK";
	case PARLEY_T_HISTORY_PAGE: return "HISTORY_PAGE";
	case PARLEY_T_SYNC_OK: return "SYNC_OK";
	case PARLEY_T_CONV_LIST_OK: return "CONV_LIST_OK";
	case PARLEY_T_PRESENCE_SUB_OK: return "PRESENCE_SUB_OK";
	case PARLEY_T_READ_MARKER_OK: return "READ_MARKER_OK";
	case PARLEY_T_RECEIPTS_OK: return "RECEIPTS_OK";
	case PARLEY_T_EVENT: return "EVENT";
	case PARLEY_T_GOAWAY: return "GOAWAY";
	case PARLEY_T_GROUP_CREATE: return "GROUP_CREATE";
	case PARLEY_T_GROUP_ADD: return "GROUP_ADD";
	case PARLEY_T_GROUP_REMOVE: return "GROUP_REMOVE";
	case PARLEY_T_GROUP_LEAVE: return "GROUP_LEAVE";
	case PARLEY_T_GROUP_ROLE: return "GROUP_ROLE";
	case PARLEY_T_GROUP_INFO: return "GROUP_INFO";
	case PARLEY_T_GROUP_CATCHUP: return "GROUP_CATCHUP";
	case PARLEY_T_GROUP_CATCHUP_OK: return "GROUP_CATCHUP_OK";
	case PARLEY_T_GROUP_CREATE_OK: return "GROUP_CREATE_OK";
	case PARLEY_T_GROUP_ADD_OK: return "GROUP_ADD_OK";
	case PARLEY_T_GROUP_REMOVE_OK: return "GROUP_REMOVE_OK";
	case PARLEY_T_GROUP_LEAVE_OK: return "GROUP_LEAVE_OK";
	case PARLEY_T_GROUP_ROLE_OK: return "GROUP_ROLE_OK";
	case PARLEY_T_GROUP_INFO_OK: return "GROUP_INFO_OK";
	case PARLEY_T_GROUP_SET: return "GROUP_SET";
	case PARLEY_T_GROUP_SET_OK: return "GROUP_SET_OK";
	case PARLEY_T_TYPING_PUSH: return "TYPING_PUSH";
	case PARLEY_T_PRESENCE: return "PRESENCE";
	case PARLEY_T_EDIT: return "EDIT";
	case PARLEY_T_DELETE: return "DELETE";
	case PARLEY_T_RETENTION: return "RETENTION";
	case PARLEY_T_EDIT_ACK: return "EDIT_ACK";
	case PARLEY_T_DELETE_ACK: return "DELETE_ACK";
	case PARLEY_T_RETENTION_OK: return "RETENTION_OK";
	case PARLEY_T_PRESENCE_SET: return "PRESENCE_SET";
	case PARLEY_T_PRESENCE_SET_OK: return "PRESENCE_SET_OK";
	}
	return "UNKNOWN";
}

/* ---- zstd ------------------------------------------------------------------- */

int parley_proto_compress(const uint8_t *frame, size_t len, uint8_t *out,
			  size_t cap, int level)
{
	struct parley_frame f;
	int n = parley_proto_frame_decode(frame, len, PARLEY_PROTO_MAX_FRAME_HARD,
					  &f);
	if (n < 0 || (size_t)n != len || (f.flags & PARLEY_FLAG_ZSTD) ||
	    f.type == PARLEY_T_HELLO || f.type == PARLEY_T_HELLO_OK)
		return -PARLEY_EINVAL;
	if (cap <= PARLEY_PROTO_HEADER_SIZE)
		return -PARLEY_ETOOBIG;
	/* Only worth it if the result is smaller than the original frame. */
	size_t room = PARLEY_MIN(cap, len) - PARLEY_PROTO_HEADER_SIZE;
	size_t z = ZSTD_compress(out + PARLEY_PROTO_HEADER_SIZE, room, f.payload,
				 f.payload_len, level);
	if (ZSTD_isError(z)) {
		if (ZSTD_getErrorCode(z) != ZSTD_error_dstSize_tooSmall)
			return -PARLEY_EINVAL;
		return cap < len ? -PARLEY_ETOOBIG : 0;
	}
	if (z + PARLEY_PROTO_HEADER_SIZE >= len)
		return 0;
	parley_proto_header_put(out, f.type, PARLEY_FLAG_ZSTD, f.request_id,
				(uint32_t)z);
	return (int)(z + PARLEY_PROTO_HEADER_SIZE);
}

int parley_proto_decompress(const struct parley_frame *f, uint8_t *out,
			    size_t cap)
{
	if (!(f->flags & PARLEY_FLAG_ZSTD))
		return -PARLEY_EINVAL;
	if (cap > PARLEY_PROTO_MAX_FRAME_HARD)
		cap = PARLEY_PROTO_MAX_FRAME_HARD;
	const uint8_t *src = f->payload;
	size_t n = f->payload_len;
	/* exactly one frame, nothing after it (no skippable frames either) */
	size_t fsz = ZSTD_findFrameCompressedSize(src, n);
	if (ZSTD_isError(fsz) || fsz != n)
		return -PARLEY_EPROTO;
	unsigned long long declared = ZSTD_getFrameContentSize(src, n);
	if (declared == ZSTD_CONTENTSIZE_ERROR)
		return -PARLEY_EPROTO;
	if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared > cap)
		return -PARLEY_ETOOBIG;
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	if (!dctx)
		return -PARLEY_ENOMEM;
	/* Bound the window too: a frame may not ask for more than a frame's
	 * worth of history memory. */
	ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 24);
	size_t d = ZSTD_decompressDCtx(dctx, out, cap, src, n);
	ZSTD_freeDCtx(dctx);
	if (ZSTD_isError(d)) {
		ZSTD_ErrorCode ec = ZSTD_getErrorCode(d);
		if (ec == ZSTD_error_dstSize_tooSmall)
			return -PARLEY_ETOOBIG;
		if (ec == ZSTD_error_memory_allocation)
			return -PARLEY_ENOMEM;
		return -PARLEY_EPROTO;
	}
	return (int)d;
}
