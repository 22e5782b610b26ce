/*
 * fuzz_peer.c — libFuzzer target for what a peer node sends besides Raft
 * messages (fuzz_raft_codec.c has those): the decoders of every peer frame.
 *
 * Input byte 0 picks the decoder (byte 0 % MODES); the rest is the payload,
 * copied into an exact-size allocation so an over-read is an ASan report:
 *   0 peer frame header (peer_hdr_decode); bit 7 of byte 0 seals the
 *     header's check so the type / length rules are reached;
 *   1 HELLO payload (peer_hello_decode); bit 7 seals magic and checksum;
 *   2 REJECT payload (peer_reject_decode), byte 1 the text buffer size;
 *   3 INFO payload (peer_info_decode: raftf=, frames=);
 *   4 FWD_REQ (proxy_req_decode)        5 FWD_REP (proxy_rep_decode);
 *   6 APPEND_REQ, 7 APPEND_RES (fwd_rec_decode, fwd_res_decode, then
 *     fwd_on_frame on a forwarder without an engine: every request is
 *     answered, results go to a sink);
 *   8 PRES (prelay_decode);
 *   9 TAIL_REQ, 10 TAIL_DATA (tail_msg_decode);
 *   11 LEADS, 12 XFER (peer_leads_decode, peer_xfer_decode);
 *   13 LIVE (chat_rd_live_decode);
 *   14 XREAD (tail_msg_decode of TAIL_FRAME_XREAD: XREAD, XREAD_RES and
 *      its entries, tail_xres_entries).
 * Properties checked (abort on violation): results are 0 or a documented
 * negative code; what decodes re-encodes to the same bytes where the
 * format has one encoding (header, HELLO, FWD_REQ records, PRES, TAIL
 * headers, LEADS, XFER), and decodes again to the same value where it
 * has several (INFO, APPEND_RES); borrowed pointers stay inside the
 * payload; INFO text stays printable and bounded.
 * Seeds: gen_peer_corpus.c writes them from the real encoders before each
 * run (run_fuzz.sh).
 * sources: server/peer_wire.c server/proxy.c server/peer_fwd.c server/presence_relay.c server/tail_relay.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "peer.h"
#include "peer_fwd.h"
#include "presence_relay.h"
#include "proxy.h"
#include "raft_codec.h"
#include "server_stubs.h"
#include "tail_relay.h"

#define MODES 15

static void check(int cond)
{
	if (!cond)
		abort();
}

static int within(const void *q, size_t qn, const uint8_t *p, size_t n)
{
	const uint8_t *a = q;
	return qn == 0 || (a >= p && a + qn <= p + n);
}

static int sink_send(void *arg, uint64_t to, uint8_t type,
		     const uint8_t *payload, uint32_t len)
{
	(void)arg;
	(void)to;
	check(type == PEER_FRAME_APPEND_RES || type == PEER_FRAME_APPEND_REQ);
	check(len > 0 && payload != NULL);
	return 0;
}
static void sink_wake(void *arg)
{
	(void)arg;
}

static struct fwd *g_fwd;

static void mode_hdr(uint8_t *p, size_t n, int seal)
{
	if (seal && n >= PEER_HDR_BYTES)
		le_put16(p + 6, (uint16_t)parley_xxh3(p, 6, PEER_SEED_HDR));
	uint8_t t = 0;
	uint32_t pl = 0;
	uint32_t max = 1u << 20;
	int r = peer_hdr_decode(p, n, max, &t, &pl);
	check(r == 0 || r == (int)PEER_HDR_BYTES || r == -PARLEY_ECORRUPT ||
	      r == -PARLEY_EPROTO || r == -PARLEY_ETOOBIG);
	if (r > 0) {
		check(t >= PEER_FRAME_HELLO && t <= PEER_FRAME_LAST && pl <= max);
		uint8_t e[PEER_HDR_BYTES];
		peer_hdr_encode(e, t, pl);
		check(memcmp(e, p, PEER_HDR_BYTES) == 0);
	}
}

static void mode_hello(uint8_t *p, size_t n, int seal)
{
	if (seal && n == PEER_HELLO_BYTES) {
		le_put64(p, PEER_MAGIC);
		le_put64(p + 48, parley_xxh3(p, 48, PEER_SEED_HELLO));
	}
	struct peer_hello h;
	int r = peer_hello_decode(p, n, &h);
	check(r == 0 || r == -PARLEY_EPROTO || r == -PARLEY_ECORRUPT ||
	      r == -PARLEY_EVERSION);
	if (r == 0) {
		uint8_t e[PEER_HDR_BYTES + PEER_HELLO_BYTES];
		check(peer_hello_encode(e, sizeof e, &h) == (int)sizeof e);
		check(memcmp(e + PEER_HDR_BYTES, p, PEER_HELLO_BYTES) == 0);
		(void)peer_hello_verdict(&h, h.cluster_id, h.to_node, 0, NULL, NULL);
	}
}

static void mode_reject(const uint8_t *p, size_t n, size_t cap)
{
	char *txt = malloc(cap ? cap : 1);
	check(txt != NULL);
	uint16_t code = 0;
	int r = peer_reject_decode(p, n, &code, txt, cap);
	check(r == 0 || r == -PARLEY_EPROTO);
	if (r == 0) {
		size_t k = strlen(txt);
		check(k < cap && k + 4 <= n);
		for (size_t i = 0; i < k; i++)
			check(txt[i] >= 0x20 && txt[i] < 0x7f);
		check(peer_reject_name(code) != NULL);
	}
	free(txt);
}

static void mode_info(const uint8_t *p, size_t n)
{
	char v[PEER_INFO_MAX + 1];
	uint32_t rf = 0xdeadbeef, fr = 0xdeadbeef;
	int r = peer_info_decode(p, n, v, &rf, &fr);
	if (n > PEER_INFO_MAX) {
		check(r == -PARLEY_ETOOBIG);
		return;
	}
	check(r == 0);
	size_t k = strlen(v);
	check(k <= n);
	for (size_t i = 0; i < k; i++)
		check(v[i] >= 0x20 && v[i] < 0x7f);
	check((rf & RAFT_MSGF_BASE) == RAFT_MSGF_BASE && !(rf & ~RAFT_MSGF_ALL));
	/* what decodes is sent again as it was read: the same text and keys
	 * (when both keys still fit beside the text) */
	char w[PEER_INFO_MAX + 1], v2[PEER_INFO_MAX + 1];
	if (!peer_info_encode(w, v, fr, rf))
		return;
	uint32_t rf2 = 0, fr2 = 0;
	check(peer_info_decode((const uint8_t *)w, strlen(w), v2, &rf2, &fr2) ==
	      0);
	check(strcmp(v, v2) == 0 && fr2 == fr);
	check(rf2 == rf || strlen(w) + sizeof " raftf=ffffffff" > PEER_INFO_MAX);
}

static void mode_fwd_req(const uint8_t *p, size_t n)
{
	struct proxy_req q;
	int r = proxy_req_decode(p, (uint32_t)n, &q);
	check(r == 0 || r == -PARLEY_EPROTO);
	if (r == 0) {
		check(within(q.user, q.ulen, p, n) && within(q.device, q.dlen, p, n));
		check(within(q.frame, q.flen, p, n) && q.flen > 0);
		check(q.ulen > 0 && q.ulen <= PARLEY_PROTO_MAX_USER_ID);
	}
}

static void mode_fwd_rep(const uint8_t *p, size_t n)
{
	uint64_t id;
	uint16_t t;
	uint32_t rid;
	int r = proxy_rep_decode(p, (uint32_t)n, &id, &t, &rid);
	check(r == 0 || r == -PARLEY_EPROTO);
	if (r == 0)
		check(n > PROXY_REP_HDR && id == le_get64(p));
}

/* APPEND_REQ: each record as on_req walks them decodes and re-encodes to
 * its own bytes; APPEND_RES: each result survives encode(decode(x)).
 * Then the forwarder takes the frame (answers to a sink). */
static void mode_append(uint8_t type, const uint8_t *p, size_t n)
{
	static struct pe_input in[PE_MAX_BATCH];
	if (type == PEER_FRAME_APPEND_REQ && n >= 4) {
		uint32_t k = le_get32(p);
		size_t off = 4;
		for (uint32_t i = 0; i < k && n - off >= 4; i++) {
			uint32_t rl = le_get32(p + off);
			if (n - off - 4 < rl)
				break;
			struct fwd_rec r;
			int rc = fwd_rec_decode(p + off + 4, rl, &r, in);
			check(rc == 0 || rc == -PARLEY_EPROTO);
			if (rc)
				break;
			check(within(r.q.key, r.q.klen, p, n) && r.q.klen > 0);
			for (uint32_t j = 0; r.op == FWD_OP_APPEND && j < r.q.count;
			     j++)
				check(within(r.q.entries[j].payload,
					     r.q.entries[j].len, p, n));
			size_t sz = fwd_rec_size(&r);
			check(sz == 4u + rl);
			uint8_t *e = malloc(sz);
			check(e != NULL);
			fwd_rec_encode(e, &r);
			check(memcmp(e, p + off, sz) == 0);
			free(e);
			off += 4u + rl;
		}
	} else if (type == PEER_FRAME_APPEND_RES) {
		int k = fwd_res_count(p, (uint32_t)n);
		check(k >= 0 || k == -PARLEY_EPROTO);
		for (int i = 0; i < k; i++) {
			uint64_t id, id2;
			struct fwd_res r, r2;
			uint8_t e[FWD_RES_BYTES];
			fwd_res_decode(p + 4 + (size_t)i * FWD_RES_BYTES, &id, &r);
			fwd_res_encode(e, id, &r);
			fwd_res_decode(e, &id2, &r2);
			check(id2 == id && r2.err == r.err && r2.seq == r.seq &&
			      r2.count == r.count && r2.ts_ms == r.ts_ms &&
			      r2.last_seq == r.last_seq &&
			      r2.duplicate == r.duplicate && r2.leader == r.leader);
		}
	}
	if (!g_fwd) {
		struct fwd_config c = {.self = 1, .send = sink_send,
				       .wake = sink_wake};
		check(fwd_new(&c, &g_fwd) == 0);
	}
	fwd_on_frame(g_fwd, 2, type, p, (uint32_t)n, 0);
	fwd_poll(g_fwd, 0); /* sends the results queued for node 2 */
}

static void mode_pres(const uint8_t *p, size_t n)
{
	struct prelay_msg m;
	int r = prelay_decode(p, n, &m);
	check(r == 0 || r == -PARLEY_EPROTO);
	if (r == 0) {
		check(within(m.conv.p, m.conv.len, p, n) &&
		      within(m.user.p, m.user.len, p, n));
		for (unsigned i = 0; i < m.count; i++)
			check(within(m.users[i].p, m.users[i].len, p, n));
		uint8_t *e = malloc(n);
		check(e != NULL);
		check(prelay_encode(e, n, &m) == (int)n);
		check(memcmp(e, p, n) == 0);
		free(e);
	}
}

static void mode_tail(uint8_t type, const uint8_t *p, size_t n)
{
	struct tail_msg m;
	int r = tail_msg_decode(type, p, (uint32_t)n, &m);
	check(r == 0 || r == -PARLEY_EPROTO);
	if (r != 0)
		return;
	check(within(m.body, m.blen, p, n));
	check(within(m.user, m.ulen, p, n) && within(m.device, m.dlen, p, n));
	check(within(m.conv, m.clen, p, n));
	/* header + body is the whole payload, in one encoding */
	uint8_t h[TAIL_OPEN_HDR_MAX];
	uint32_t hl = tail_hdr_encode(h, &m);
	check(hl + m.blen == n);
	check(memcmp(h, p, hl) == 0);
}

static void mode_xread(const uint8_t *p, size_t n)
{
	struct tail_msg m;
	int r = tail_msg_decode(TAIL_FRAME_XREAD, p, (uint32_t)n, &m);
	check(r == 0 || r == -PARLEY_EPROTO);
	if (r != 0)
		return;
	check(m.op == TAIL_OP_XREAD || m.op == TAIL_OP_XREAD_RES);
	if (m.op == TAIL_OP_XREAD) { /* one encoding: header and key */
		check(within(m.key, m.klen, p, n));
		uint8_t h[TAIL_OPEN_HDR_MAX];
		check(tail_hdr_encode(h, &m) == n && memcmp(h, p, n) == 0);
		return;
	}
	check(within(m.body, m.blen, p, n) && m.count <= PE_MAX_READ);
	struct pe_entry *e = calloc(m.count ? m.count : 1, sizeof *e);
	check(e != NULL);
	tail_xres_entries(&m, e);
	for (uint32_t i = 0; i < m.count; i++)
		check(within(e[i].payload, e[i].len, p, n));
	/* one encoding: the result encodes back to the same bytes */
	struct pe_read_result res = {.err = m.err, .entries = e,
				     .count = m.count,
				     .first_seq = m.first_seq,
				     .last_seq = m.last_seq, .end = m.end};
	uint8_t *o = malloc(n);
	check(o != NULL);
	check(tail_xres_encode(o, (uint32_t)n, m.id, m.reason, &res) == n &&
	      memcmp(o, p, n) == 0);
	free(o);
	free(e);
}

static void mode_leads(const uint8_t *p, size_t n)
{
	uint32_t np = 64;
	int k = peer_leads_decode(p, (uint32_t)n, np);
	check(k >= 0 || k == -PARLEY_EPROTO);
	if (k < 0)
		return;
	check((uint32_t)k <= np && n == PEER_LEADS_BYTES(k));
	uint8_t *e = malloc(n);
	check(e != NULL);
	for (int i = 0; i < k; i++) {
		uint32_t part;
		uint64_t term;
		peer_leads_get(p, (uint32_t)i, &part, &term);
		peer_leads_put(e, (uint32_t)i, part, term);
	}
	check(peer_leads_encode(e, (uint32_t)k) == n && memcmp(e, p, n) == 0);
	free(e);
}

static void mode_xfer(const uint8_t *p, size_t n)
{
	uint32_t part = 0;
	uint64_t to = 0;
	int r = peer_xfer_decode(p, (uint32_t)n, &part, &to);
	check(r == 0 || r == -PARLEY_EPROTO);
	if (r == 0) {
		uint8_t e[PEER_XFER_BYTES];
		peer_xfer_encode(e, part, to);
		check(n == PEER_XFER_BYTES && memcmp(e, p, n) == 0);
	}
}

/* the decoders' warnings (a bad frame from a peer) would be most of the
 * run's time */
/* LIVE: the user records lie between the header and the frame, each
 * within the payload and non-empty; the frame is an EVENT as long as its
 * header says. (Its encoder is the read fan-out's, not callable alone.) */
static void mode_live(const uint8_t *p, size_t n)
{
	uint32_t nu = 0, off = 0;
	int r = chat_rd_live_decode(p, (uint32_t)n, &nu, &off);
	check(r == 0 || r == -PARLEY_EPROTO);
	if (r)
		return;
	size_t at = CHAT_RD_LIVE_HDR;
	for (uint32_t i = 0; i < nu; i++) {
		check(at < off && p[at] > 0 && p[at] <= PARLEY_PROTO_MAX_USER_ID);
		at += 1u + p[at];
	}
	check(at == off && n - off >= PARLEY_PROTO_HEADER_SIZE);
	check(le_get32(p + off) == n - off - 4 &&
	      le_get16(p + off + 4) == PARLEY_T_EVENT);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	parley_log_set_level(PLOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t k = data[0];
	unsigned mode = k % MODES;
	int seal = (k & 0x80) != 0;
	data++;
	size--;
	size_t cap = 0;
	if (mode == 2) { /* REJECT: byte 1 the text buffer size */
		if (size < 1)
			return 0;
		cap = data[0];
		data++;
		size--;
	}
	uint8_t *p = malloc(size ? size : 1);
	check(p != NULL);
	if (size)
		memcpy(p, data, size);
	switch (mode) {
	case 0: mode_hdr(p, size, seal); break;
	case 1: mode_hello(p, size, seal); break;
	case 2: mode_reject(p, size, cap); break;
	case 3: mode_info(p, size); break;
	case 4: mode_fwd_req(p, size); break;
	case 5: mode_fwd_rep(p, size); break;
	case 6: mode_append(PEER_FRAME_APPEND_REQ, p, size); break;
	case 7: mode_append(PEER_FRAME_APPEND_RES, p, size); break;
	case 8: mode_pres(p, size); break;
	case 9: mode_tail(TAIL_FRAME_REQ, p, size); break;
	case 10: mode_tail(TAIL_FRAME_DATA, p, size); break;
	case 11: mode_leads(p, size); break;
	case 12: mode_xfer(p, size); break;
	case 13: mode_live(p, size); break;
	case 14: mode_xread(p, size); break;
	}
	free(p);
	return 0;
}
