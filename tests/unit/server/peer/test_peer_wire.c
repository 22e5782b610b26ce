/*
 * test_peer_wire.c — the pure part of the peer transport (server/peer_wire.c):
 * frame headers, HELLO, REJECT, INFO, XFER, LEADS, the HELLO acceptance
 * rule, the backoff.
 * Every decoder error path has a case; randomized cases print their seed.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "peer.h"
#include "raft_codec.h"

static struct peer_hello hello(void)
{
	return (struct peer_hello){.version = PEER_VERSION,
				   .max_frame = RAFT_CODEC_MAX_FRAME_DEFAULT,
				   .cluster_id = 77,
				   .node_id = 2,
				   .to_node = 5,
				   .incarnation = 0xABCDEF};
}

Test(peer_wire, header_roundtrip_and_incomplete)
{
	uint8_t b[PEER_HDR_BYTES];
	peer_hdr_encode(b, PEER_FRAME_RAFT, 1234);
	uint8_t t = 0;
	uint32_t n = 0;
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 4096, &t, &n), (int)PEER_HDR_BYTES);
	cr_assert_eq(t, PEER_FRAME_RAFT);
	cr_assert_eq(n, 1234);
	for (size_t k = 0; k < PEER_HDR_BYTES; k++)
		cr_assert_eq(peer_hdr_decode(b, k, 4096, &t, &n), 0, "prefix %zu", k);
}

Test(peer_wire, header_errors)
{
	uint8_t b[PEER_HDR_BYTES];
	uint8_t t;
	uint32_t n;
	peer_hdr_encode(b, PEER_FRAME_RAFT, 5000);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 4999, &t, &n), -PARLEY_ETOOBIG);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 5000, &t, &n), (int)PEER_HDR_BYTES);
	/* any flipped bit in the first 6 bytes breaks the check */
	for (int bit = 0; bit < 48; bit++) {
		uint8_t c[PEER_HDR_BYTES];
		memcpy(c, b, sizeof c);
		c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		cr_assert_eq(peer_hdr_decode(c, sizeof c, 1u << 30, &t, &n),
			     -PARLEY_ECORRUPT, "bit %d", bit);
	}
	/* the application frames of request forwarding are known types */
	peer_hdr_encode(b, PEER_FRAME_FWD_REQ, 10);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 100, &t, &n), (int)PEER_HDR_BYTES);
	cr_assert_eq(t, PEER_FRAME_FWD_REQ);
	peer_hdr_encode(b, PEER_FRAME_FWD_REP, 10);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 100, &t, &n), (int)PEER_HDR_BYTES);
	cr_assert_eq(t, PEER_FRAME_FWD_REP);
	/* ... and those of forwarded appends (peer_fwd.h) */
	peer_hdr_encode(b, PEER_FRAME_APPEND_REQ, 10);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 100, &t, &n), (int)PEER_HDR_BYTES);
	cr_assert_eq(t, PEER_FRAME_APPEND_REQ);
	peer_hdr_encode(b, PEER_FRAME_APPEND_RES, 10);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 100, &t, &n), (int)PEER_HDR_BYTES);
	cr_assert_eq(t, PEER_FRAME_APPEND_RES);
	/* unknown type, nonzero flags, PING with a payload: well-checked but refused */
	peer_hdr_encode(b, PEER_FRAME_LAST + 1, 0);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 100, &t, &n), -PARLEY_EPROTO);
	peer_hdr_encode(b, 0, 0);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 100, &t, &n), -PARLEY_EPROTO);
	peer_hdr_encode(b, PEER_FRAME_PING, 1);
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 100, &t, &n), -PARLEY_EPROTO);
	peer_hdr_encode(b, PEER_FRAME_PING, 0);
	b[5] = 1;
	le_put16(b + 6, (uint16_t)parley_xxh3(b, 6, PEER_SEED_HDR));
	cr_assert_eq(peer_hdr_decode(b, sizeof b, 100, &t, &n), -PARLEY_EPROTO);
}

Test(peer_wire, hello_roundtrip)
{
	struct peer_hello h = hello(), d;
	uint8_t b[128];
	int n = peer_hello_encode(b, sizeof b, &h);
	cr_assert_eq(n, (int)(PEER_HDR_BYTES + PEER_HELLO_BYTES));
	uint8_t t;
	uint32_t pl;
	cr_assert_eq(peer_hdr_decode(b, (size_t)n, PEER_HANDSHAKE_MAX_PAYLOAD, &t, &pl),
		     (int)PEER_HDR_BYTES);
	cr_assert_eq(t, PEER_FRAME_HELLO);
	cr_assert_eq(pl, PEER_HELLO_BYTES);
	cr_assert_eq(peer_hello_decode(b + PEER_HDR_BYTES, pl, &d), 0);
	cr_assert_eq(d.cluster_id, 77);
	cr_assert_eq(d.node_id, 2);
	cr_assert_eq(d.to_node, 5);
	cr_assert_eq(d.incarnation, 0xABCDEF);
	cr_assert_eq(d.max_frame, RAFT_CODEC_MAX_FRAME_DEFAULT);
	cr_assert_eq(peer_hello_encode(b, (size_t)n - 1, &h), -PARLEY_ETOOBIG);
}

static int decode_mutated(struct peer_hello h, void (*mut)(uint8_t *p))
{
	uint8_t b[128];
	peer_hello_encode(b, sizeof b, &h);
	uint8_t *p = b + PEER_HDR_BYTES;
	mut(p);
	struct peer_hello d;
	return peer_hello_decode(p, PEER_HELLO_BYTES, &d);
}

static void reseal(uint8_t *p)
{
	le_put64(p + 48, parley_xxh3(p, 48, PEER_SEED_HELLO));
}
static void m_magic(uint8_t *p) { p[0] ^= 1; reseal(p); }
static void m_version(uint8_t *p) { le_put16(p + 8, 2); reseal(p); }
static void m_flags(uint8_t *p) { le_put16(p + 10, 2); reseal(p); } /* an unknown bit */
static void m_node0(uint8_t *p) { le_put64(p + 24, 0); reseal(p); }
static void m_cluster0(uint8_t *p) { le_put64(p + 16, 0); reseal(p); }
static void m_frame_small(uint8_t *p) { le_put32(p + 12, 10); reseal(p); }
static void m_frame_big(uint8_t *p) { le_put32(p + 12, RAFT_CODEC_MAX_FRAME_HARD + 1); reseal(p); }
static void m_bitflip(uint8_t *p) { p[30] ^= 0x40; }

Test(peer_wire, hello_errors)
{
	struct peer_hello h = hello();
	cr_assert_eq(decode_mutated(h, m_magic), -PARLEY_EPROTO);
	cr_assert_eq(decode_mutated(h, m_version), -PARLEY_EVERSION);
	cr_assert_eq(decode_mutated(h, m_flags), -PARLEY_EPROTO);
	cr_assert_eq(decode_mutated(h, m_node0), -PARLEY_EPROTO);
	cr_assert_eq(decode_mutated(h, m_cluster0), -PARLEY_EPROTO);
	cr_assert_eq(decode_mutated(h, m_frame_small), -PARLEY_EPROTO);
	cr_assert_eq(decode_mutated(h, m_frame_big), -PARLEY_EPROTO);
	cr_assert_eq(decode_mutated(h, m_bitflip), -PARLEY_ECORRUPT);
	uint8_t b[128];
	struct peer_hello d;
	peer_hello_encode(b, sizeof b, &h);
	cr_assert_eq(peer_hello_decode(b + PEER_HDR_BYTES, PEER_HELLO_BYTES - 1, &d),
		     -PARLEY_EPROTO);
}

static bool known_2_3(void *arg, uint64_t id)
{
	(void)arg;
	return id == 2 || id == 3;
}

Test(peer_wire, hello_verdict)
{
	struct peer_hello h = hello(); /* node 2 of cluster 77 to node 5 */
	cr_assert_eq(peer_hello_verdict(&h, 77, 5, 0, known_2_3, NULL), PEER_REJ_NONE);
	cr_assert_eq(peer_hello_verdict(&h, 77, 5, 2, NULL, NULL), PEER_REJ_NONE);
	cr_assert_eq(peer_hello_verdict(&h, 78, 5, 0, known_2_3, NULL), PEER_REJ_CLUSTER);
	cr_assert_eq(peer_hello_verdict(&h, 77, 4, 0, known_2_3, NULL), PEER_REJ_TARGET);
	cr_assert_eq(peer_hello_verdict(&h, 77, 5, 3, known_2_3, NULL), PEER_REJ_UNKNOWN);
	h.node_id = 9;
	cr_assert_eq(peer_hello_verdict(&h, 77, 5, 0, known_2_3, NULL), PEER_REJ_UNKNOWN);
	h.node_id = 5; /* claims the receiver's own id */
	cr_assert_eq(peer_hello_verdict(&h, 77, 5, 0, known_2_3, NULL), PEER_REJ_SELF);
	h = hello();
	h.version = 2;
	cr_assert_eq(peer_hello_verdict(&h, 77, 5, 0, known_2_3, NULL), PEER_REJ_VERSION);
	for (uint16_t c = 0; c <= 8; c++)
		cr_assert_not_null(peer_reject_name(c));
}

Test(peer_wire, reject_roundtrip_and_errors)
{
	uint8_t b[PEER_HDR_BYTES + 4 + PEER_REASON_MAX + 8];
	int n = peer_reject_encode(b, sizeof b, PEER_REJ_CLUSTER, "wrong cluster id");
	cr_assert_eq(n, (int)(PEER_HDR_BYTES + 4 + 16));
	uint16_t code;
	char txt[64];
	cr_assert_eq(peer_reject_decode(b + PEER_HDR_BYTES, (size_t)n - PEER_HDR_BYTES,
					&code, txt, sizeof txt), 0);
	cr_assert_eq(code, PEER_REJ_CLUSTER);
	cr_assert_str_eq(txt, "wrong cluster id");
	/* a long reason is cut at PEER_REASON_MAX; a small buffer truncates */
	char longr[400];
	memset(longr, 'x', sizeof longr - 1);
	longr[sizeof longr - 1] = '\0';
	n = peer_reject_encode(b, sizeof b, 1, longr);
	cr_assert_eq(n, (int)(PEER_HDR_BYTES + 4 + PEER_REASON_MAX));
	cr_assert_eq(peer_reject_decode(b + PEER_HDR_BYTES, (size_t)n - PEER_HDR_BYTES,
					&code, txt, 8), 0);
	cr_assert_str_eq(txt, "xxxxxxx");
	cr_assert_eq(peer_reject_encode(b, 10, 1, "abc"), -PARLEY_ETOOBIG);
	/* control bytes from the wire are not copied into logs */
	n = peer_reject_encode(b, sizeof b, 1, "a\nb\x1b");
	cr_assert_eq(peer_reject_decode(b + PEER_HDR_BYTES, (size_t)n - PEER_HDR_BYTES,
					&code, txt, sizeof txt), 0);
	cr_assert_str_eq(txt, "a?b?");
	/* length disagreements */
	uint8_t p[8] = {1, 0, 5, 0, 'a', 'b', 'c', 'd'};
	cr_assert_eq(peer_reject_decode(p, 8, &code, txt, sizeof txt), -PARLEY_EPROTO);
	cr_assert_eq(peer_reject_decode(p, 3, &code, txt, sizeof txt), -PARLEY_EPROTO);
	le_put16(p + 2, PEER_REASON_MAX + 1);
	cr_assert_eq(peer_reject_decode(p, 8, &code, txt, sizeof txt), -PARLEY_EPROTO);
}

Test(peer_wire, backoff_bounds_and_growth)
{
	uint64_t seed = parley_mono_ns();
	printf("peer_wire backoff seed %" PRIu64 "\n", seed);
	struct parley_rng rng = {seed};
	for (uint32_t a = 0; a < 40; a++) {
		uint64_t b = 50;
		for (uint32_t i = 0; i < a && b < 5000; i++)
			b *= 2;
		if (b > 5000)
			b = 5000;
		uint32_t lo = UINT32_MAX, hi = 0;
		for (int k = 0; k < 200; k++) {
			uint32_t d = peer_backoff_ms(a, 50, 5000, &rng);
			cr_assert(d >= b / 2 && d <= b, "attempt %u: %u not in [%" PRIu64 ", %" PRIu64 "]",
				  a, d, b / 2, b);
			lo = d < lo ? d : lo;
			hi = d > hi ? d : hi;
		}
		cr_assert(hi > lo, "attempt %u: no jitter", a); /* jitter is there */
	}
	/* degenerate settings stay sane */
	cr_assert_leq(peer_backoff_ms(3, 0, 0, &rng), 1);
	cr_assert_leq(peer_backoff_ms(100, 10, 5, &rng), 10);
}

/* INFO (contract items 8, 9): what peer_new sends decodes to its text and
 * keys; the keys are taken out of the text; malformed values count as 0;
 * unprintable bytes become '?'; a payload over PEER_INFO_MAX is refused. */
Test(peer_wire, info_roundtrip_and_keys)
{
	char w[PEER_INFO_MAX + 1], v[PEER_INFO_MAX + 1];
	uint32_t rf = 0, fr = 0;
	cr_assert(peer_info_encode(w, "build=7 zone=a", PEER_FRAMES_ALL,
				   RAFT_MSGF_ALL));
	cr_assert_eq(peer_info_decode((const uint8_t *)w, strlen(w), v, &rf,
				      &fr), 0);
	cr_assert_str_eq(v, "build=7 zone=a");
	cr_assert_eq(fr, PEER_FRAMES_ALL);
	cr_assert_eq(rf, RAFT_MSGF_ALL);
	/* base flags only: no raftf key, decoded as the base */
	cr_assert(peer_info_encode(w, "", PEER_FRAMES_LEGACY, RAFT_MSGF_BASE));
	cr_assert_null(strstr(w, PEER_INFO_RAFTF));
	cr_assert_eq(peer_info_decode((const uint8_t *)w, strlen(w), v, &rf,
				      &fr), 0);
	cr_assert_str_eq(v, "");
	cr_assert_eq(fr, PEER_FRAMES_LEGACY);
	cr_assert_eq(rf, RAFT_MSGF_BASE);
	/* malformed values, unknown flags, control bytes */
	const char *in = "a frames=zz raftf=ffffffff \x01 b  raftf=123456789";
	cr_assert_eq(peer_info_decode((const uint8_t *)in, strlen(in), v, &rf,
				      &fr), 0);
	cr_assert_str_eq(v, "a ? b");
	cr_assert_eq(fr, 0);
	cr_assert_eq(rf, RAFT_MSGF_BASE); /* the last raftf= was malformed */
	uint8_t big[PEER_INFO_MAX + 1];
	memset(big, 'x', sizeof big);
	cr_assert_eq(peer_info_decode(big, sizeof big, v, &rf, &fr),
		     -PARLEY_ETOOBIG);
	cr_assert_eq(peer_info_decode(big, PEER_INFO_MAX, v, &rf, &fr), 0);
	cr_assert_eq(strlen(v), PEER_INFO_MAX);
	/* an info that leaves no room for the frame set */
	memset(big, 'y', PEER_INFO_MAX);
	big[PEER_INFO_MAX] = '\0';
	cr_assert_not(peer_info_encode(w, (const char *)big, PEER_FRAMES_ALL,
				       RAFT_MSGF_BASE));
	cr_assert_eq(strlen(w), PEER_INFO_MAX);
}

Test(peer_wire, xfer_roundtrip_and_length)
{
	uint8_t b[PEER_XFER_BYTES + 1] = {0};
	peer_xfer_encode(b, 0xfffffff0u, 0x1122334455667788ull);
	uint32_t part = 0;
	uint64_t to = 0;
	cr_assert_eq(peer_xfer_decode(b, PEER_XFER_BYTES, &part, &to), 0);
	cr_assert_eq(part, 0xfffffff0u);
	cr_assert_eq(to, 0x1122334455667788ull);
	for (uint32_t n = 0; n <= PEER_XFER_BYTES + 1; n++)
		if (n != PEER_XFER_BYTES)
			cr_assert_eq(peer_xfer_decode(b, n, &part, &to),
				     -PARLEY_EPROTO, "n %u", n);
}

/* LEADS: the count must match the length exactly and stay within the
 * receiver's partitions; a count near 2^32 does not wrap the length
 * check (4 + k * 12 in 32 bits would). */
Test(peer_wire, leads_roundtrip_and_errors)
{
	uint8_t b[PEER_LEADS_BYTES(3) + 1];
	peer_leads_put(b, 0, 0, 5);
	peer_leads_put(b, 1, 3, UINT64_MAX);
	peer_leads_put(b, 2, 9, 1);
	size_t n = peer_leads_encode(b, 3);
	cr_assert_eq(n, 4u + 3u * PEER_LEADS_ENTRY);
	cr_assert_eq(peer_leads_decode(b, (uint32_t)n, 16), 3);
	uint32_t part;
	uint64_t term;
	peer_leads_get(b, 1, &part, &term);
	cr_assert(part == 3 && term == UINT64_MAX);
	peer_leads_get(b, 2, &part, &term);
	cr_assert(part == 9 && term == 1);
	cr_assert_eq(peer_leads_decode(b, (uint32_t)n, 2), -PARLEY_EPROTO);
	cr_assert_eq(peer_leads_decode(b, (uint32_t)n - 1, 16), -PARLEY_EPROTO);
	cr_assert_eq(peer_leads_decode(b, (uint32_t)n + 1, 16), -PARLEY_EPROTO);
	cr_assert_eq(peer_leads_decode(b, 3, 16), -PARLEY_EPROTO);
	cr_assert_eq(peer_leads_decode(b, (uint32_t)peer_leads_encode(b, 0), 0),
		     0);
	/* 4 + 0x15555556 * 12 = 4 + 8 mod 2^32: 16 bytes would pass a 32-bit
	 * check */
	le_put32(b, 0x15555556u);
	cr_assert_eq(peer_leads_decode(b, 16, UINT32_MAX), -PARLEY_EPROTO);
}
