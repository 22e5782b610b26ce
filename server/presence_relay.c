/*
 * presence_relay.c — encode / decode of the PEER_FRAME_PRES payload
 * (presence_relay.h). Pure: no locks, no I/O; decoded strings borrow from
 * the input.
 */
#include "presence_relay.h"

#include <string.h>

static bool kind_ok(uint8_t k)
{
	return k >= PRELAY_ONLINE && k <= PRELAY_SET_END;
}

int prelay_encode(uint8_t *buf, size_t cap, const struct prelay_msg *m)
{
	if (!kind_ok(m->kind) || m->conv.len > PARLEY_PROTO_MAX_CONV_ID ||
	    m->user.len > PARLEY_PROTO_MAX_USER_ID ||
	    m->count > PRELAY_USERS_MAX)
		return -PARLEY_EINVAL;
	size_t n = PRELAY_HDR + m->conv.len + m->user.len;
	for (unsigned i = 0; i < m->count; i++) {
		if (!m->users[i].len ||
		    m->users[i].len > PARLEY_PROTO_MAX_USER_ID)
			return -PARLEY_EINVAL;
		n += 1u + m->users[i].len;
	}
	if (n > cap)
		return -PARLEY_ETOOBIG;
	uint8_t *w = buf;
	*w++ = PRELAY_VERSION;
	*w++ = m->kind;
	*w++ = m->started ? 1 : 0;
	le_put32(w, m->arg);
	w += 4;
	/* an empty string may have no bytes at all (p NULL: RESEND, SET_END
	 * and ONLINE name neither conv nor user), and memcpy's pointers must
	 * not be NULL even for 0 bytes */
	*w++ = (uint8_t)m->conv.len;
	if (m->conv.len)
		memcpy(w, m->conv.p, m->conv.len);
	w += m->conv.len;
	*w++ = (uint8_t)m->user.len;
	if (m->user.len)
		memcpy(w, m->user.p, m->user.len);
	w += m->user.len;
	le_put16(w, m->count);
	w += 2;
	for (unsigned i = 0; i < m->count; i++) {
		*w++ = (uint8_t)m->users[i].len;
		memcpy(w, m->users[i].p, m->users[i].len);
		w += m->users[i].len;
	}
	PARLEY_ASSERT((size_t)(w - buf) == n);
	return (int)n;
}

int prelay_decode(const uint8_t *p, size_t n, struct prelay_msg *m)
{
	memset(m, 0, sizeof *m);
	if (n < PRELAY_HDR || p[0] != PRELAY_VERSION || !kind_ok(p[1]) ||
	    p[2] > 1)
		return -PARLEY_EPROTO;
	m->kind = p[1];
	m->started = p[2];
	m->arg = le_get32(p + 3);
	size_t off = 7;
	uint8_t cl = p[off++];
	if (cl > PARLEY_PROTO_MAX_CONV_ID || n - off < (size_t)cl + 1 + 2)
		return -PARLEY_EPROTO;
	m->conv = (struct parley_str){(const char *)p + off, cl};
	off += cl;
	uint8_t ul = p[off++];
	if (ul > PARLEY_PROTO_MAX_USER_ID || n - off < (size_t)ul + 2)
		return -PARLEY_EPROTO;
	m->user = (struct parley_str){(const char *)p + off, ul};
	off += ul;
	uint16_t cnt = le_get16(p + off);
	off += 2;
	if (cnt > PRELAY_USERS_MAX)
		return -PARLEY_EPROTO;
	for (unsigned i = 0; i < cnt; i++) {
		if (off >= n)
			return -PARLEY_EPROTO;
		uint8_t l = p[off++];
		if (!l || l > PARLEY_PROTO_MAX_USER_ID || n - off < l)
			return -PARLEY_EPROTO;
		m->users[i] = (struct parley_str){(const char *)p + off, l};
		off += l;
	}
	if (off != n)
		return -PARLEY_EPROTO;
	m->count = cnt;
	return 0;
}
