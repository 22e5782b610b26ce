/*
 * gen_peer_corpus.c — writes fuzz_peer's seeds from the real encoders, so
 * the fuzzer starts from payloads a node actually sends and mutates from
 * there. run_fuzz.sh builds and runs it before fuzz_peer:
 *     gen_peer_corpus DIR     (files DIR/seed-<mode>-<k>, overwritten)
 * Each seed is byte 0 = the mode of fuzz_peer.c (the decoder) then the
 * payload; REJECT's has its text buffer size in byte 1.
 * APPEND_REQ / APPEND_RES come from a forwarder (peer_fwd.h) whose send
 * callback keeps the frames: a request it packs, and the results a
 * forwarder without an engine answers to it. LIVE's encoder is the read
 * fan-out's (chat_fanout_read.c, not callable alone): its layout
 * (chat.h) is written here around a real EVENT frame.
 * sources: server/peer_wire.c server/proxy.c server/peer_fwd.c server/presence_relay.c server/tail_relay.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "peer.h"
#include "peer_fwd.h"
#include "presence_relay.h"
#include "proxy.h"
#include "raft.h"
#include "server_stubs.h"
#include "tail_relay.h"

/* the modes of fuzz_peer.c */
enum { M_HDR, M_HELLO, M_REJECT, M_INFO, M_FWD_REQ, M_FWD_REP, M_APP_REQ,
       M_APP_RES, M_PRES, M_TAIL_REQ, M_TAIL_DATA, M_LEADS, M_XFER,
       M_LIVE, M_XREAD };

static const char *g_dir;
static unsigned g_count[16];

static void die(const char *what)
{
	fprintf(stderr, "gen_peer_corpus: %s\n", what);
	exit(1);
}

/* One seed: mode byte, an optional prefix byte (pre >= 0), the payload. */
static void seed(unsigned mode, int pre, const void *p, size_t n)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/seed-%02u-%03u", g_dir, mode,
		 g_count[mode]++);
	FILE *f = fopen(path, "wb");
	if (!f)
		die("cannot write a seed");
	uint8_t m = (uint8_t)mode;
	fwrite(&m, 1, 1, f);
	if (pre >= 0) {
		uint8_t b = (uint8_t)pre;
		fwrite(&b, 1, 1, f);
	}
	if (n)
		fwrite(p, 1, n, f);
	if (fclose(f))
		die("cannot write a seed");
}

/* A client frame of m into buf; its length. */
static uint32_t client_frame(uint8_t *buf, size_t cap, uint32_t rid,
			     const struct parley_msg *m)
{
	int n = parley_proto_encode(buf, cap, rid, m);
	if (n <= 0)
		die("parley_proto_encode");
	return (uint32_t)n;
}

static struct parley_str str(const char *s)
{
	return (struct parley_str){s, (uint16_t)strlen(s)};
}

static uint32_t sync_frame(uint8_t *buf, size_t cap)
{
	struct parley_msg m = {.type = PARLEY_T_SYNC};
	m.sync.from_inbox_seq = 42;
	return client_frame(buf, cap, 7, &m);
}

static uint32_t event_frame(uint8_t *buf, size_t cap)
{
	struct parley_msg m = {.type = PARLEY_T_EVENT};
	m.event.inbox_seq = 9;
	m.event.kind = 1;
	m.event.conv = str("d:alice:bob");
	m.event.conv_seq = 3;
	m.event.sender = str("alice");
	m.event.server_ts_ms = 1700000000000ull;
	m.event.body = (struct parley_bytes){(const uint8_t *)"hi", 2};
	return client_frame(buf, cap, 0, &m);
}

static uint32_t send_frame(uint8_t *buf, size_t cap)
{
	struct parley_msg m = {.type = PARLEY_T_SEND};
	m.send.conv = str("d:alice:bob");
	memset(m.send.client_msg_id, 0xab, sizeof m.send.client_msg_id);
	m.send.body = (struct parley_bytes){(const uint8_t *)"hello", 5};
	return client_frame(buf, cap, 11, &m);
}

static void gen_transport(void)
{
	uint8_t b[512];
	static const uint8_t types[] = {PEER_FRAME_HELLO, PEER_FRAME_RAFT,
					PEER_FRAME_PING, PEER_FRAME_INFO,
					PEER_FRAME_LEADS, PEER_FRAME_LAST};
	for (size_t i = 0; i < sizeof types; i++) {
		peer_hdr_encode(b, types[i],
				types[i] == PEER_FRAME_PING ? 0 : 100u * i);
		seed(M_HDR, -1, b, PEER_HDR_BYTES);
	}
	struct peer_hello h = {.version = PEER_VERSION,
			       .flags = PEER_HELLO_F_INFO,
			       .max_frame = 1u << 20,
			       .cluster_id = 77,
			       .node_id = 2,
			       .to_node = 1,
			       .incarnation = 0x1234};
	int n = peer_hello_encode(b, sizeof b, &h);
	if (n != (int)(PEER_HDR_BYTES + PEER_HELLO_BYTES))
		die("peer_hello_encode");
	seed(M_HELLO, -1, b + PEER_HDR_BYTES, PEER_HELLO_BYTES);
	n = peer_reject_encode(b, sizeof b, PEER_REJ_CLUSTER,
			       "wrong cluster id 77");
	if (n <= 0)
		die("peer_reject_encode");
	seed(M_REJECT, 64, b + PEER_HDR_BYTES, (size_t)n - PEER_HDR_BYTES);
	seed(M_REJECT, 4, b + PEER_HDR_BYTES, (size_t)n - PEER_HDR_BYTES);
	char v[PEER_INFO_MAX + 1];
	(void)peer_info_encode(v, "version=1.0 role=node", PEER_FRAMES_ALL,
			       RAFT_MSGF_ALL);
	seed(M_INFO, -1, v, strlen(v));
	(void)peer_info_encode(v, "", PEER_FRAMES_LEGACY, RAFT_MSGF_BASE);
	seed(M_INFO, -1, v, strlen(v));
}

static void gen_proxy(void)
{
	uint8_t b[1024];
	uint32_t h = proxy_req_hdr_encode(b, 5, "alice", 5, "phone-1", 7);
	uint32_t f = send_frame(b + h, sizeof b - h);
	seed(M_FWD_REQ, -1, b, h + f);
	h = proxy_req_hdr_encode(b, 6, "bob", 3, NULL, 0);
	f = sync_frame(b + h, sizeof b - h);
	seed(M_FWD_REQ, -1, b, h + f);
	le_put64(b, 5);
	f = event_frame(b + PROXY_REP_HDR, sizeof b - PROXY_REP_HDR);
	seed(M_FWD_REP, -1, b, PROXY_REP_HDR + f);
}

/* ---- forwarded appends: a forwarder's own frames ---- */

static uint8_t g_req[4096]; /* the first APPEND_REQ sent */
static uint32_t g_req_len;

static int fwd_sink(void *arg, uint64_t to, uint8_t type, const uint8_t *p,
		    uint32_t len)
{
	(void)arg;
	(void)to;
	if (type == PEER_FRAME_APPEND_REQ && !g_req_len && len <= sizeof g_req) {
		memcpy(g_req, p, len);
		g_req_len = len;
	}
	seed(type == PEER_FRAME_APPEND_REQ ? M_APP_REQ : M_APP_RES, -1, p, len);
	return 0;
}

static void fwd_nowake(void *arg)
{
	(void)arg;
}

static void on_append(void *arg, const struct pe_append_result *r)
{
	(void)arg;
	(void)r;
}

static void on_delete(void *arg, const struct pe_delete_result *r)
{
	(void)arg;
	(void)r;
}

static void gen_fwd(void)
{
	struct fwd *a = NULL, *b = NULL;
	struct fwd_config ca = {.self = 1, .send = fwd_sink, .wake = fwd_nowake};
	struct fwd_config cb = {.self = 2, .send = fwd_sink, .wake = fwd_nowake};
	if (fwd_new(&ca, &a) || fwd_new(&cb, &b))
		die("fwd_new");
	struct pe_input in[2] = {
		{.type = 1, .flags = 0, .len = 5, .payload = "hello"},
		{.type = 2, .flags = 1, .len = 0, .payload = ""}};
	struct pe_append_req q = {.key = "u/alice", .klen = 7,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = in, .count = 2};
	memset(q.producer, 0x5a, sizeof q.producer);
	if (fwd_append(a, 2, &q, on_append, NULL) ||
	    fwd_delete(a, 2, "c/room", 6, 12, on_delete, NULL))
		die("fwd_append");
	fwd_poll(a, 0); /* one APPEND_REQ with both records */
	q.count = 1;
	if (fwd_append(a, 2, &q, on_append, NULL))
		die("fwd_append");
	fwd_poll(a, 0);
	/* b has no engine: it answers each record of a's first frame
	 * (AGAIN), one APPEND_RES */
	if (!g_req_len)
		die("no APPEND_REQ");
	fwd_on_frame(b, 1, PEER_FRAME_APPEND_REQ, g_req, g_req_len, 0);
	fwd_poll(b, 0);
	fwd_free(a); /* the pending ones fail ECLOSED, into on_append */
	fwd_free(b);
}

static void gen_pres(void)
{
	uint8_t b[PRELAY_MAX];
	struct prelay_msg m;
	for (unsigned kind = PRELAY_ONLINE; kind <= PRELAY_SET_END; kind++) {
		memset(&m, 0, sizeof m);
		m.kind = (uint8_t)kind;
		switch (kind) {
		case PRELAY_ONLINE:
		case PRELAY_OFFLINE:
			m.arg = kind == PRELAY_ONLINE ? 3 : 0;
			m.count = 2;
			m.users[0] = str("alice");
			m.users[1] = str("bob");
			break;
		case PRELAY_TYPING_REQ:
		case PRELAY_TYPING:
			m.started = 1;
			m.arg = kind == PRELAY_TYPING ? 5000 : 0;
			m.conv = str("g:team");
			m.user = str("alice");
			if (kind == PRELAY_TYPING) {
				m.count = 1;
				m.users[0] = str("carol");
			}
			break;
		case PRELAY_HIDDEN:
			m.arg = 1;
			m.user = str("alice");
			break;
		case PRELAY_TYPING_REFUSED:
			m.arg = PARLEY_EPERM;
			m.conv = str("g:team");
			m.user = str("mallory");
			break;
		case PRELAY_SET_END:
			m.arg = 3;
			break;
		default:
			break;
		}
		int n = prelay_encode(b, sizeof b, &m);
		if (n <= 0)
			die("prelay_encode");
		seed(M_PRES, -1, b, (size_t)n);
	}
}

static void tail_seed(unsigned mode, const struct tail_msg *m,
		      const uint8_t *body, uint32_t blen)
{
	uint8_t b[TAIL_OPEN_HDR_MAX + 512];
	uint32_t n = tail_hdr_encode(b, m);
	if (blen)
		memcpy(b + n, body, blen);
	seed(mode, -1, b, n + blen);
}

static void gen_tail(void)
{
	uint8_t f[512];
	uint32_t fl = sync_frame(f, sizeof f);
	struct tail_msg m = {.op = TAIL_OP_OPEN, .id = 1, .user = "alice",
			     .ulen = 5, .device = "phone", .dlen = 5};
	tail_seed(M_TAIL_REQ, &m, f, fl);
	m = (struct tail_msg){.op = TAIL_OP_ACK, .id = 1, .seq = 40};
	tail_seed(M_TAIL_REQ, &m, NULL, 0);
	m = (struct tail_msg){.op = TAIL_OP_CLOSE, .id = 1};
	tail_seed(M_TAIL_REQ, &m, NULL, 0);
	m = (struct tail_msg){.op = TAIL_OP_READ, .id = 8, .seq = 9,
			      .conv_seq = 3, .kind = 1, .conv = "d:alice:bob",
			      .clen = 11};
	tail_seed(M_TAIL_REQ, &m, NULL, 0);
	fl = event_frame(f, sizeof f);
	uint32_t f2 = event_frame(f + fl, sizeof f - fl);
	m = (struct tail_msg){.op = TAIL_OP_DATA, .id = 1};
	tail_seed(M_TAIL_DATA, &m, f, fl + f2);
	m = (struct tail_msg){.op = TAIL_OP_END, .id = 1,
			      .reason = TAIL_END_FULL};
	tail_seed(M_TAIL_DATA, &m, NULL, 0);
	m = (struct tail_msg){.op = TAIL_OP_READ_RES, .id = 8};
	tail_seed(M_TAIL_DATA, &m, f, fl);
	tail_seed(M_TAIL_DATA, &m, NULL, 0);
	/* a SEND's existence check: READ of kind OPEN, READ_RES FOUND */
	m = (struct tail_msg){.op = TAIL_OP_READ, .id = 9,
			      .kind = TAIL_READ_KIND_OPEN,
			      .conv = "d:alice:bob", .clen = 11};
	tail_seed(M_TAIL_REQ, &m, NULL, 0);
	m = (struct tail_msg){.op = TAIL_OP_READ_RES, .id = 9,
			      .reason = TAIL_RES_FOUND};
	tail_seed(M_TAIL_DATA, &m, NULL, 0);
	/* a remote read (XREAD) and its answer with two entries */
	m = (struct tail_msg){.op = TAIL_OP_XREAD, .id = 10, .seq = UINT64_MAX,
			      .limit = 1, .dir = PE_BACKWARD, .lin = true,
			      .key = (const uint8_t *)"c/d:alice:bob",
			      .klen = 13};
	tail_seed(M_XREAD, &m, NULL, 0);
	struct pe_entry ents[2] = {
		{.seq = 7, .ts_ms = 1000, .type = 1, .len = 5,
		 .payload = (const uint8_t *)"hello"},
		{.seq = 6, .ts_ms = 999, .type = 2, .len = 0,
		 .payload = (const uint8_t *)""}};
	struct pe_read_result r = {.entries = ents, .count = 2,
				   .first_seq = 1, .last_seq = 7};
	uint8_t b[512];
	uint32_t n = tail_xres_encode(b, sizeof b, 10, TAIL_XRES_DONE, &r);
	seed(M_XREAD, -1, b, n);
	r = (struct pe_read_result){.err = -PARLEY_ENOTLEADER};
	n = tail_xres_encode(b, sizeof b, 11, TAIL_XRES_RETRY, &r);
	seed(M_XREAD, -1, b, n);
}

static void gen_leads(void)
{
	uint8_t b[PEER_LEADS_BYTES(3)];
	peer_leads_put(b, 0, 0, 5);
	peer_leads_put(b, 1, 3, 7);
	peer_leads_put(b, 2, 9, 1);
	seed(M_LEADS, -1, b, peer_leads_encode(b, 3));
	seed(M_LEADS, -1, b, peer_leads_encode(b, 0));
	uint8_t x[PEER_XFER_BYTES];
	peer_xfer_encode(x, 4, 2);
	seed(M_XFER, -1, x, sizeof x);
}

static void gen_live(void)
{
	uint8_t b[1024];
	uint32_t off = CHAT_RD_LIVE_HDR;
	static const char *const users[] = {"alice", "bob", "carol"};
	for (size_t i = 0; i < 3; i++) {
		b[off] = (uint8_t)strlen(users[i]);
		memcpy(b + off + 1, users[i], b[off]);
		off += 1u + b[off];
	}
	le_put32(b, 3);
	uint32_t fl = event_frame(b + off, sizeof b - off);
	seed(M_LIVE, -1, b, off + fl);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		die("usage: gen_peer_corpus DIR");
	g_dir = argv[1];
	gen_transport();
	gen_proxy();
	gen_fwd();
	gen_pres();
	gen_tail();
	gen_leads();
	gen_live();
	return 0;
}
