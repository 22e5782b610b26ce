/*
 * peer_wire.c — the pure part of the peer transport (peer.h): frame
 * headers, HELLO, REJECT, the HELLO acceptance rule and the redial backoff.
 * No I/O, no clock, no allocation; decoders never read outside their input.
 *
 * HELLO payload (PEER_HELLO_BYTES, little-endian):
 *   0  u64 magic PEER_MAGIC      24 u64 node_id
 *   8  u16 version               32 u64 to_node
 *   10 u16 flags (bit 0 INFO)    40 u64 incarnation
 *   12 u32 max_frame             48 u64 xxh3(bytes 0..47, PEER_SEED_HELLO)
 *   16 u64 cluster_id
 *
 * Threads: reentrant.
 */
#include <stdio.h>
#include <string.h>

#include "peer.h"
#include "raft_codec.h"

void peer_hdr_encode(uint8_t out[PEER_HDR_BYTES], uint8_t type, uint32_t plen)
{
	le_put32(out, plen);
	out[4] = type;
	out[5] = 0;
	le_put16(out + 6, (uint16_t)parley_xxh3(out, 6, PEER_SEED_HDR));
}

int peer_hdr_decode(const uint8_t *buf, size_t len, uint32_t max_payload,
		    uint8_t *type, uint32_t *plen)
{
	if (len < PEER_HDR_BYTES)
		return 0;
	if (le_get16(buf + 6) != (uint16_t)parley_xxh3(buf, 6, PEER_SEED_HDR))
		return -PARLEY_ECORRUPT;
	uint8_t t = buf[4];
	uint32_t n = le_get32(buf);
	if (buf[5] != 0 || t < PEER_FRAME_HELLO || t > PEER_FRAME_LAST)
		return -PARLEY_EPROTO;
	if (t == PEER_FRAME_PING && n != 0)
		return -PARLEY_EPROTO;
	if (n > max_payload)
		return -PARLEY_ETOOBIG;
	*type = t;
	*plen = n;
	return (int)PEER_HDR_BYTES;
}

int peer_hello_encode(uint8_t *buf, size_t cap, const struct peer_hello *h)
{
	if (cap < PEER_HDR_BYTES + PEER_HELLO_BYTES)
		return -PARLEY_ETOOBIG;
	uint8_t *p = buf + PEER_HDR_BYTES;
	le_put64(p, PEER_MAGIC);
	le_put16(p + 8, h->version);
	le_put16(p + 10, h->flags);
	le_put32(p + 12, h->max_frame);
	le_put64(p + 16, h->cluster_id);
	le_put64(p + 24, h->node_id);
	le_put64(p + 32, h->to_node);
	le_put64(p + 40, h->incarnation);
	le_put64(p + 48, parley_xxh3(p, 48, PEER_SEED_HELLO));
	peer_hdr_encode(buf, PEER_FRAME_HELLO, PEER_HELLO_BYTES);
	return (int)(PEER_HDR_BYTES + PEER_HELLO_BYTES);
}

int peer_hello_decode(const uint8_t *p, size_t len, struct peer_hello *h)
{
	if (len != PEER_HELLO_BYTES || le_get64(p) != PEER_MAGIC)
		return -PARLEY_EPROTO;
	if (le_get64(p + 48) != parley_xxh3(p, 48, PEER_SEED_HELLO))
		return -PARLEY_ECORRUPT;
	h->version = le_get16(p + 8);
	h->flags = le_get16(p + 10);
	h->max_frame = le_get32(p + 12);
	h->cluster_id = le_get64(p + 16);
	h->node_id = le_get64(p + 24);
	h->to_node = le_get64(p + 32);
	h->incarnation = le_get64(p + 40);
	if (h->version != PEER_VERSION)
		return -PARLEY_EVERSION;
	if ((h->flags & ~PEER_HELLO_F_INFO) || h->node_id == 0 || h->cluster_id == 0 ||
	    h->to_node == 0 || h->max_frame < RAFT_CODEC_FRAME_MIN ||
	    h->max_frame > RAFT_CODEC_MAX_FRAME_HARD)
		return -PARLEY_EPROTO;
	return 0;
}

enum peer_reject_code peer_hello_verdict(const struct peer_hello *h,
					 uint64_t cluster, uint64_t self,
					 uint64_t expect_from,
					 bool (*known)(void *arg, uint64_t id),
					 void *arg)
{
	if (h->version != PEER_VERSION)
		return PEER_REJ_VERSION;
	if (h->cluster_id != cluster)
		return PEER_REJ_CLUSTER;
	if (h->node_id == self)
		return PEER_REJ_SELF;
	if (h->to_node != self)
		return PEER_REJ_TARGET;
	if (expect_from ? h->node_id != expect_from
			: (!known || !known(arg, h->node_id)))
		return PEER_REJ_UNKNOWN;
	return PEER_REJ_NONE;
}

int peer_reject_encode(uint8_t *buf, size_t cap, uint16_t code,
		       const char *text)
{
	size_t tl = text ? strlen(text) : 0;
	if (tl > PEER_REASON_MAX)
		tl = PEER_REASON_MAX;
	size_t n = PEER_HDR_BYTES + 4 + tl;
	if (cap < n)
		return -PARLEY_ETOOBIG;
	le_put16(buf + PEER_HDR_BYTES, code);
	le_put16(buf + PEER_HDR_BYTES + 2, (uint16_t)tl);
	if (tl)
		memcpy(buf + PEER_HDR_BYTES + 4, text, tl);
	peer_hdr_encode(buf, PEER_FRAME_REJECT, (uint32_t)(4 + tl));
	return (int)n;
}

int peer_reject_decode(const uint8_t *p, size_t len, uint16_t *code,
		       char *txt, size_t txtcap)
{
	if (len < 4)
		return -PARLEY_EPROTO;
	uint16_t tl = le_get16(p + 2);
	if (tl > PEER_REASON_MAX || (size_t)tl + 4 != len || txtcap == 0)
		return -PARLEY_EPROTO;
	*code = le_get16(p);
	size_t k = tl < txtcap - 1 ? tl : txtcap - 1;
	for (size_t i = 0; i < k; i++) {
		uint8_t c = p[4 + i];
		txt[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?'; /* log-safe */
	}
	txt[k] = '\0';
	return 0;
}

const char *peer_reject_name(uint16_t code)
{
	switch (code) {
	case PEER_REJ_NONE: return "none";
	case PEER_REJ_CLUSTER: return "wrong cluster id";
	case PEER_REJ_SELF: return "duplicate node id (the peer claims this node's id)";
	case PEER_REJ_UNKNOWN: return "unknown node id";
	case PEER_REJ_DUPLICATE: return "duplicate node id (a live link to that node exists)";
	case PEER_REJ_TARGET: return "hello addressed to another node";
	case PEER_REJ_VERSION: return "unsupported peer protocol version";
	case PEER_REJ_CERT: return "certificate does not name the claimed node";
	default: return "unknown refusal";
	}
}

uint32_t peer_backoff_ms(uint32_t attempt, uint32_t min_ms, uint32_t max_ms,
			 struct parley_rng *rng)
{
	if (min_ms == 0)
		min_ms = 1;
	if (max_ms < min_ms)
		max_ms = min_ms;
	uint64_t b = min_ms;
	for (uint32_t i = 0; i < attempt && b < max_ms; i++)
		b *= 2;
	if (b > max_ms)
		b = max_ms;
	uint64_t half = b / 2;
	return (uint32_t)(half + parley_rng_below(rng, b - half + 1));
}

const char *peer_link_state_name(enum peer_link_state s)
{
	switch (s) {
	case PEER_LINK_DOWN: return "down";
	case PEER_LINK_CONNECTING: return "connecting";
	case PEER_LINK_HANDSHAKE: return "handshake";
	case PEER_LINK_UP: return "up";
	}
	return "?";
}
