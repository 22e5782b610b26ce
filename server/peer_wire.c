/*
 * peer_wire.c — the pure part of the peer transport (peer.h): frame
 * headers, HELLO, REJECT, INFO, the application frames XFER and LEADS,
 * the HELLO acceptance rule and the redial backoff.
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

/*
 * Takes the transport's key "<name>=<hex>" out of a received INFO (in
 * place: the application sees its own text) and returns its value (the
 * last one), or 0 without the key or with a malformed value.
 */
static uint32_t info_take_hex(char *v, const char *name)
{
	char key[16];
	int kn = snprintf(key, sizeof key, "%s=", name);
	PARLEY_ASSERT(kn > 0 && (size_t)kn < sizeof key);
	const size_t kl = (size_t)kn;
	uint32_t val = 0;
	char *w = v;
	for (char *t = v; *t;) {
		char *end = strchr(t, ' ');
		size_t tl = end ? (size_t)(end - t) : strlen(t);
		if (tl > kl && !strncmp(t, key, kl)) {
			uint32_t f = 0;
			bool ok = tl - kl <= 8;
			for (size_t i = kl; ok && i < tl; i++) {
				char ch = t[i];
				int d = ch >= '0' && ch <= '9'   ? ch - '0'
					: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
								 : -1;
				ok = d >= 0;
				f = f << 4 | (uint32_t)(d < 0 ? 0 : d);
			}
			val = ok ? f : 0;
		} else if (tl) {
			if (w != v)
				*w++ = ' ';
			memmove(w, t, tl);
			w += tl;
		}
		t = end ? end + 1 : t + tl;
	}
	*w = '\0';
	return val;
}

/* Appends " <name>=<hex>" (no space when w is empty) when it fits. */
static bool info_put_hex(char w[PEER_INFO_MAX + 1], const char *name,
			 uint32_t val)
{
	size_t wl = strlen(w);
	char kv[32];
	int kn = snprintf(kv, sizeof kv, "%s%s=%x", wl ? " " : "", name,
			  (unsigned)val);
	PARLEY_ASSERT(kn > 0 && (size_t)kn < sizeof kv);
	if (wl + (size_t)kn > PEER_INFO_MAX)
		return false;
	memcpy(w + wl, kv, (size_t)kn + 1);
	return true;
}

bool peer_info_encode(char out[PEER_INFO_MAX + 1], const char *info,
		      uint32_t frames, uint32_t raftf)
{
	snprintf(out, PEER_INFO_MAX + 1, "%s", info ? info : "");
	/* the frame set first (item 9; without it a peer assumes LEGACY),
	 * then the Raft flags (item 8; a node that decodes only the base
	 * flags announces none, as before) */
	bool fit = info_put_hex(out, PEER_INFO_FRAMES, frames);
	if (raftf != RAFT_MSGF_BASE)
		(void)info_put_hex(out, PEER_INFO_RAFTF, raftf);
	return fit;
}

int peer_info_decode(const uint8_t *pl, size_t n, char v[PEER_INFO_MAX + 1],
		     uint32_t *raftf, uint32_t *frames)
{
	if (n > PEER_INFO_MAX)
		return -PARLEY_ETOOBIG;
	for (size_t i = 0; i < n; i++) /* printable ASCII only */
		v[i] = pl[i] >= 0x20 && pl[i] < 0x7f ? (char)pl[i] : '?';
	v[n] = '\0';
	/* the Raft message flags it decodes (contract item 8): RAFT_MSGF_BASE
	 * without the key; only flags this build knows count (a newer peer
	 * may announce more) */
	*raftf = RAFT_MSGF_BASE |
		 (info_take_hex(v, PEER_INFO_RAFTF) & RAFT_MSGF_ALL);
	*frames = info_take_hex(v, PEER_INFO_FRAMES);
	return 0;
}

void peer_xfer_encode(uint8_t out[PEER_XFER_BYTES], uint32_t part,
		      uint64_t to)
{
	le_put32(out, part);
	le_put64(out + 4, to);
}

int peer_xfer_decode(const uint8_t *p, uint32_t n, uint32_t *part,
		     uint64_t *to)
{
	if (n != PEER_XFER_BYTES)
		return -PARLEY_EPROTO;
	*part = le_get32(p);
	*to = le_get64(p + 4);
	return 0;
}

void peer_leads_put(uint8_t *b, uint32_t i, uint32_t part, uint64_t term)
{
	le_put32(b + PEER_LEADS_BYTES(i), part);
	le_put64(b + PEER_LEADS_BYTES(i) + 4, term);
}

size_t peer_leads_encode(uint8_t *b, uint32_t k)
{
	le_put32(b, k);
	return PEER_LEADS_BYTES(k);
}

int peer_leads_decode(const uint8_t *p, uint32_t n, uint32_t max_entries)
{
	if (n < 4)
		return -PARLEY_EPROTO;
	uint32_t k = le_get32(p);
	/* 64-bit size: k is the sender's, up to 2^32 - 1 */
	if (k > max_entries || k > INT32_MAX || n != PEER_LEADS_BYTES(k))
		return -PARLEY_EPROTO;
	return (int)k;
}

void peer_leads_get(const uint8_t *p, uint32_t i, uint32_t *part,
		    uint64_t *term)
{
	*part = le_get32(p + PEER_LEADS_BYTES(i));
	*term = le_get64(p + PEER_LEADS_BYTES(i) + 4);
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
