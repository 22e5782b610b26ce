/*
 * test_proxy.c — server/proxy.c alone, through a fake struct proxy_io
 * (no peer link, no loops, the clock passed in): the gateway's table of
 * forwards in flight (ids, the reply that ends one, late replies, a
 * reply from the wrong node), the per-node cap, the timeout, a link that
 * goes down, a frame that could not be sent, the leader's side (serving
 * on / off, its cap, the reply frame) and the FWD_REQ / FWD_REP codec.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "parley_proto.h"
#include "proxy.h"

/* ---- the fake io ------------------------------------------------------------------ */

#define MAXREC 64

struct sent {
	uint64_t to;
	uint8_t type;
	uint32_t len;
	uint8_t data[1024];
};
struct replied {
	struct conn_ref to;
	uint32_t len;
	uint8_t frame[1024];
};

static struct {
	uint64_t target; /* the leader fwd() forwards to */
	bool link_up;
	int send_rc, serve_rc;
	struct proxy *down_during_send; /* the link drops while sending */
	struct sent sent[MAXREC];
	int nsent;
	struct replied rep[MAXREC];
	int nrep;
	struct proxy_req served[MAXREC];
	uint64_t served_from[MAXREC];
	int nserved;
} io;

static int f_send(void *arg, uint64_t to, uint8_t type, const void *a,
		  size_t alen, const void *b, size_t blen)
{
	(void)arg;
	if (io.down_during_send)
		proxy_link_down(io.down_during_send, to);
	if (io.send_rc)
		return io.send_rc;
	cr_assert_lt(io.nsent, MAXREC);
	struct sent *s = &io.sent[io.nsent++];
	cr_assert_leq(alen + blen, sizeof s->data);
	s->to = to;
	s->type = type;
	s->len = (uint32_t)(alen + blen);
	memcpy(s->data, a, alen);
	if (blen)
		memcpy(s->data + alen, b, blen);
	return 0;
}

static bool f_link_up(void *arg, uint64_t node)
{
	(void)arg;
	(void)node;
	return io.link_up;
}

static void f_reply(void *arg, const struct conn_ref *to, const uint8_t *frame,
		    uint32_t n)
{
	(void)arg;
	cr_assert_lt(io.nrep, MAXREC);
	struct replied *r = &io.rep[io.nrep++];
	cr_assert_leq(n, sizeof r->frame);
	r->to = *to;
	r->len = n;
	memcpy(r->frame, frame, n);
}

static int f_serve(void *arg, uint64_t from, const struct proxy_req *r,
		   const uint8_t *p, uint32_t n)
{
	(void)arg;
	(void)p;
	(void)n;
	if (io.serve_rc)
		return io.serve_rc;
	io.served_from[io.nserved] = from;
	io.served[io.nserved++] = *r; /* borrowed pointers: checked at once */
	return 0;
}

static struct proxy *mk(uint32_t cap, uint32_t timeout_ms)
{
	memset(&io, 0, sizeof io);
	io.target = 2;
	io.link_up = true;
	struct proxy_io pio = {.send = f_send,
			       .link_up = f_link_up, .reply = f_reply,
			       .serve = f_serve};
	struct proxy_config cfg = {.forward = true, .max_inflight = cap,
				   .timeout_ms = timeout_ms};
	struct proxy *px = NULL;
	cr_assert_eq(proxy_new(&cfg, &pio, &px), 0);
	return px;
}

/* A client frame of type SEND (any payload: the proxy does not decode
 * it) with request id rid. */
static uint32_t client_frame(uint8_t *b, uint32_t rid, uint16_t type)
{
	parley_proto_header_put(b, type, 0, rid, 5);
	memcpy(b + PARLEY_PROTO_HEADER_SIZE, "hello", 5);
	return PARLEY_PROTO_HEADER_SIZE + 5;
}

static int fwd(struct proxy *px, uint32_t slot, uint32_t rid, uint64_t now)
{
	uint8_t f[64];
	uint32_t n = client_frame(f, rid, PARLEY_T_SEND);
	struct conn_ref to = {.lp = NULL, .slot = slot, .gen = 1};
	/* io.target: the leader the refusal named (conn.c, route.h) */
	return proxy_forward(px, io.target, &to, "alice", 5, "dev1", 4, f, n,
			     now);
}

/* The reply frame's request id, and its ERROR code (0: not an ERROR). */
static uint32_t rep_rid(int i)
{
	return le_get32(io.rep[i].frame + 8);
}
static uint32_t rep_code(int i)
{
	struct parley_frame f;
	cr_assert_eq(parley_proto_frame_decode(io.rep[i].frame, io.rep[i].len,
					       1u << 20, &f),
		     (int)io.rep[i].len);
	if (f.type != PARLEY_T_ERROR)
		return 0;
	struct parley_msg m;
	cr_assert_eq(parley_proto_decode_payload(f.type, f.payload,
						 f.payload_len, &m), 0);
	return m.error.code;
}

/* The FWD_REP of the leader for sent frame i, carrying an ERROR code
 * (or a PONG-like ok frame when code is 0) with request id rid. */
static uint32_t make_rep(uint8_t *b, uint64_t fwd_id, uint32_t rid,
			 uint32_t code)
{
	le_put64(b, fwd_id);
	struct parley_msg m;
	memset(&m, 0, sizeof m);
	if (code) {
		m.type = PARLEY_T_ERROR;
		m.error.code = code;
		m.error.text = parley_str_c("x");
	} else {
		m.type = PARLEY_T_PONG;
		m.pong.nonce = 7;
	}
	int n = parley_proto_encode(b + 8, 512, rid, &m);
	cr_assert_gt(n, 0);
	return 8 + (uint32_t)n;
}

static uint64_t sent_id(int i)
{
	return le_get64(io.sent[i].data);
}

/* ---- gateway ------------------------------------------------------------------------ */

Test(proxy, forward_then_reply_once)
{
	struct proxy *px = mk(8, 1000);
	cr_assert_eq(fwd(px, 3, 41, 0), 0);
	cr_assert_eq(io.nsent, 1);
	cr_assert_eq(io.sent[0].to, 2);
	cr_assert_eq(io.sent[0].type, PROXY_FRAME_REQ);
	struct proxy_req r;
	cr_assert_eq(proxy_req_decode(io.sent[0].data, io.sent[0].len, &r), 0);
	cr_assert_eq(r.ulen, 5);
	cr_assert_eq(memcmp(r.user, "alice", 5), 0);
	cr_assert_eq(r.dlen, 4);
	cr_assert_eq(memcmp(r.device, "dev1", 4), 0);
	cr_assert_eq(r.rid, 41);
	cr_assert_eq(r.type, PARLEY_T_SEND);
	cr_assert_eq(r.flen, PARLEY_PROTO_HEADER_SIZE + 5);
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.inflight, 1);
	/* the reply carries another request id: the client's is written */
	uint8_t b[600];
	uint32_t n = make_rep(b, r.fwd_id, 999, 0);
	proxy_on_frame(px, 2, PROXY_FRAME_REP, b, n);
	cr_assert_eq(io.nrep, 1);
	cr_assert_eq(io.rep[0].to.slot, 3);
	cr_assert_eq(rep_rid(0), 41);
	cr_assert_eq(rep_code(0), 0);
	/* the same reply again is late: nothing more is answered */
	proxy_on_frame(px, 2, PROXY_FRAME_REP, b, n);
	cr_assert_eq(io.nrep, 1);
	proxy_stats(px, &st);
	cr_assert_eq(st.inflight, 0);
	cr_assert_eq(st.out[PROXY_OUT_REPLIED], 1);
	cr_assert_eq(st.late, 1);
	proxy_free(px);
}

Test(proxy, ids_are_distinct_and_replies_match_them)
{
	struct proxy *px = mk(64, 1000);
	for (uint32_t i = 0; i < 10; i++)
		cr_assert_eq(fwd(px, i, 100 + i, 0), 0);
	for (int i = 0; i < 10; i++)
		for (int j = 0; j < i; j++)
			cr_assert_neq(sent_id(i), sent_id(j));
	/* answered in reverse order: each goes to its own connection */
	for (int i = 9; i >= 0; i--) {
		uint8_t b[600];
		uint32_t n = make_rep(b, sent_id(i), 0, PARLEY_EPERM);
		proxy_on_frame(px, 2, PROXY_FRAME_REP, b, n);
		struct replied *r = &io.rep[io.nrep - 1];
		cr_assert_eq(r->to.slot, (uint32_t)i);
		cr_assert_eq(rep_rid(io.nrep - 1), 100u + (uint32_t)i);
		cr_assert_eq(rep_code(io.nrep - 1), PARLEY_EPERM);
	}
	cr_assert_eq(io.nrep, 10);
	proxy_free(px);
}

Test(proxy, reply_from_another_node_does_not_end_it)
{
	struct proxy *px = mk(8, 1000);
	cr_assert_eq(fwd(px, 1, 5, 0), 0);
	uint8_t b[600];
	uint32_t n = make_rep(b, sent_id(0), 5, 0);
	proxy_on_frame(px, 3, PROXY_FRAME_REP, b, n); /* sent to node 2 */
	cr_assert_eq(io.nrep, 0);
	proxy_on_frame(px, 2, PROXY_FRAME_REP, b, n);
	cr_assert_eq(io.nrep, 1);
	proxy_free(px);
}

Test(proxy, notleader_from_the_leader_is_passed_on_not_forwarded_again)
{
	struct proxy *px = mk(8, 1000);
	cr_assert_eq(fwd(px, 1, 5, 0), 0);
	uint8_t b[600];
	uint32_t n = make_rep(b, sent_id(0), 5, PARLEY_ENOTLEADER);
	proxy_on_frame(px, 2, PROXY_FRAME_REP, b, n);
	cr_assert_eq(io.nrep, 1);
	cr_assert_eq(rep_code(0), PARLEY_ENOTLEADER);
	cr_assert_eq(io.nsent, 1); /* no second FWD_REQ */
	proxy_free(px);
}

Test(proxy, no_leader_or_link_down_is_not_forwarded)
{
	struct proxy *px = mk(8, 1000);
	io.target = 0;
	cr_assert_eq(fwd(px, 1, 5, 0), -PARLEY_ENOTLEADER);
	io.target = 2;
	io.link_up = false;
	cr_assert_eq(fwd(px, 1, 5, 0), -PARLEY_ENOTLEADER);
	cr_assert_eq(io.nsent, 0);
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.out[PROXY_OUT_NO_LEADER], 2);
	proxy_free(px);
	/* forwarding off (forward = 0): never, but the leader side serves */
	px = mk(8, 1000);
	struct proxy_io pio = {.send = f_send,
			       .link_up = f_link_up, .reply = f_reply,
			       .serve = f_serve};
	proxy_free(px);
	struct proxy_config off = {.forward = false};
	cr_assert_eq(proxy_new(&off, &pio, &px), 0);
	cr_assert(!proxy_forwarding(px));
	cr_assert_eq(fwd(px, 1, 5, 0), -PARLEY_ENOTLEADER);
	cr_assert_eq(io.nsent, 0);
	proxy_set_serving(px, true);
	uint8_t b[PROXY_REQ_HDR_MAX + 64];
	uint32_t h = proxy_req_hdr_encode(b, 3, "bob", 3, "", 0);
	parley_proto_header_put(b + h, PARLEY_T_SEND, 0, 8, 0);
	proxy_on_frame(px, 2, PROXY_FRAME_REQ, b, h + PARLEY_PROTO_HEADER_SIZE);
	cr_assert_eq(io.nserved, 1);
	proxy_stats(px, &st);
	cr_assert_eq(st.out[PROXY_OUT_NO_LEADER], 1);
	cr_assert_eq(st.inflight, 0);
	proxy_free(px);
}

Test(proxy, cap_per_node)
{
	struct proxy *px = mk(2, 1000);
	cr_assert_eq(fwd(px, 1, 1, 0), 0);
	cr_assert_eq(fwd(px, 1, 2, 0), 0);
	cr_assert_eq(fwd(px, 1, 3, 0), -PARLEY_EFULL);
	io.target = 3; /* another node has its own bound */
	cr_assert_eq(fwd(px, 1, 4, 0), 0);
	io.target = 2;
	uint8_t b[600];
	uint32_t n = make_rep(b, sent_id(0), 1, 0);
	proxy_on_frame(px, 2, PROXY_FRAME_REP, b, n);
	cr_assert_eq(fwd(px, 1, 5, 0), 0); /* room again */
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.out[PROXY_OUT_FULL], 1);
	cr_assert_eq(st.inflight, 3);
	proxy_free(px);
}

Test(proxy, timeout_answers_again)
{
	struct proxy *px = mk(8, 100);
	cr_assert_eq(fwd(px, 1, 11, 1000), 0);
	cr_assert_eq(fwd(px, 2, 12, 1050), 0);
	proxy_tick(px, 1099);
	cr_assert_eq(io.nrep, 0);
	proxy_tick(px, 1100);
	cr_assert_eq(io.nrep, 1);
	cr_assert_eq(io.rep[0].to.slot, 1);
	cr_assert_eq(rep_rid(0), 11);
	cr_assert_eq(rep_code(0), PARLEY_EAGAIN);
	proxy_tick(px, 5000);
	cr_assert_eq(io.nrep, 2);
	cr_assert_eq(rep_rid(1), 12);
	/* the leader's answer after that is dropped */
	uint8_t b[600];
	uint32_t n = make_rep(b, sent_id(0), 11, 0);
	proxy_on_frame(px, 2, PROXY_FRAME_REP, b, n);
	cr_assert_eq(io.nrep, 2);
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.out[PROXY_OUT_TIMEOUT], 2);
	cr_assert_eq(st.late, 1);
	cr_assert_eq(st.inflight, 0);
	proxy_free(px);
}

Test(proxy, link_down_answers_its_forwards_at_once)
{
	struct proxy *px = mk(8, 1000);
	for (uint32_t i = 0; i < 3; i++)
		cr_assert_eq(fwd(px, i, 20 + i, 0), 0);
	io.target = 3;
	cr_assert_eq(fwd(px, 9, 29, 0), 0);
	proxy_link_down(px, 2);
	cr_assert_eq(io.nrep, 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(rep_code(i), PARLEY_EAGAIN);
		cr_assert_neq(io.rep[i].to.slot, 9);
	}
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.out[PROXY_OUT_LINK_DOWN], 3);
	cr_assert_eq(st.inflight, 1); /* node 3's */
	proxy_link_down(px, 3);
	cr_assert_eq(io.nrep, 4);
	cr_assert_eq(rep_rid(3), 29);
	proxy_free(px);
}

Test(proxy, unsent)
{
	struct proxy *px = mk(8, 1000);
	io.send_rc = -PARLEY_EFULL; /* the node thread's queue is full */
	cr_assert_eq(fwd(px, 1, 5, 0), -PARLEY_EFULL);
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.inflight, 0);
	/* queued, then the link refused it: AGAIN */
	io.send_rc = 0;
	cr_assert_eq(fwd(px, 1, 6, 0), 0);
	proxy_on_unsent(px, 2, PROXY_FRAME_REQ, io.sent[0].data, io.sent[0].len,
			-PARLEY_ECLOSED);
	cr_assert_eq(io.nrep, 1);
	cr_assert_eq(rep_rid(0), 6);
	cr_assert_eq(rep_code(0), PARLEY_EAGAIN);
	proxy_stats(px, &st);
	cr_assert_eq(st.out[PROXY_OUT_UNSENT], 1);
	cr_assert_eq(st.inflight, 0);
	proxy_free(px);
}

Test(proxy, a_link_that_drops_while_sending_answers_once)
{
	/* the link goes down (AGAIN answers the forward) and then the send
	 * fails: the forward is over and answered once; the caller counts it
	 * in flight (0), it must not answer it again */
	struct proxy *px = mk(8, 1000);
	io.down_during_send = px;
	io.send_rc = -PARLEY_ECLOSED;
	cr_assert_eq(fwd(px, 1, 5, 0), 0);
	cr_assert_eq(io.nrep, 1);
	cr_assert_eq(rep_rid(0), 5);
	cr_assert_eq(rep_code(0), PARLEY_EAGAIN);
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.inflight, 0);
	cr_assert_eq(st.out[PROXY_OUT_LINK_DOWN], 1);
	cr_assert_eq(st.out[PROXY_OUT_FULL], 0);
	proxy_free(px);
}

/* ---- leader ------------------------------------------------------------------------- */

static uint32_t req_payload(uint8_t *b, uint64_t id, const char *user,
			    uint32_t rid)
{
	uint32_t h = proxy_req_hdr_encode(b, id, user, (uint8_t)strlen(user),
					  "d", 1);
	return h + client_frame(b + h, rid, PARLEY_T_SEND);
}

Test(proxy, leader_serves_within_its_cap)
{
	struct proxy *px = mk(1, 1000);
	uint8_t b[PROXY_REQ_HDR_MAX + 64];
	uint32_t n = req_payload(b, 77, "bob", 9);
	/* not serving yet (the loops do not run): AGAIN back at once */
	proxy_on_frame(px, 4, PROXY_FRAME_REQ, b, n);
	cr_assert_eq(io.nserved, 0);
	cr_assert_eq(io.nsent, 1);
	cr_assert_eq(io.sent[0].to, 4);
	cr_assert_eq(io.sent[0].type, PROXY_FRAME_REP);
	cr_assert_eq(le_get64(io.sent[0].data), 77);
	proxy_set_serving(px, true);
	proxy_on_frame(px, 4, PROXY_FRAME_REQ, b, n);
	cr_assert_eq(io.nserved, 1);
	cr_assert_eq(io.served_from[0], 4);
	cr_assert_eq(io.served[0].fwd_id, 77);
	cr_assert_eq(io.served[0].rid, 9);
	/* over the cap of node 4: FULL; node 5 has its own */
	n = req_payload(b, 78, "bob", 10);
	proxy_on_frame(px, 4, PROXY_FRAME_REQ, b, n);
	cr_assert_eq(io.nserved, 1);
	cr_assert_eq(io.nsent, 2);
	{
		uint8_t *f = io.sent[1].data + 8;
		struct parley_frame fr;
		cr_assert_eq(parley_proto_frame_decode(f, io.sent[1].len - 8,
						       1u << 20, &fr),
			     (int)io.sent[1].len - 8);
		struct parley_msg m;
		cr_assert_eq(parley_proto_decode_payload(fr.type, fr.payload,
							 fr.payload_len, &m), 0);
		cr_assert_eq(m.error.code, PARLEY_EFULL);
		cr_assert_eq(fr.request_id, 10);
	}
	proxy_on_frame(px, 5, PROXY_FRAME_REQ, b, n);
	cr_assert_eq(io.nserved, 2);
	/* node 4's request answered and over: room again */
	uint8_t rep[64];
	uint32_t rn = client_frame(rep, 9, PARLEY_T_SEND_ACK);
	proxy_served_reply(px, 4, 77, rep, rn);
	cr_assert_eq(io.sent[2].type, PROXY_FRAME_REP);
	cr_assert_eq(le_get64(io.sent[2].data), 77);
	cr_assert_eq(io.sent[2].len, 8 + rn);
	proxy_served_done(px, 4);
	proxy_on_frame(px, 4, PROXY_FRAME_REQ, b, n);
	cr_assert_eq(io.nserved, 3);
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.serving, 2);
	cr_assert_eq(st.served, 3);
	cr_assert_eq(st.served_refused, 2);
	proxy_free(px);
}

Test(proxy, req_decode_refuses_bad_input)
{
	uint8_t b[PROXY_REQ_HDR_MAX + 64];
	struct proxy_req r;
	uint32_t n = req_payload(b, 1, "carol", 3);
	cr_assert_eq(proxy_req_decode(b, n, &r), 0);
	for (uint32_t k = 0; k < n; k++) /* every truncation */
		cr_assert_eq(proxy_req_decode(b, k, &r), -PARLEY_EPROTO, "len %u", k);
	uint8_t c[sizeof b + 1];
	memcpy(c, b, n);
	c[n] = 0; /* a byte after the frame */
	cr_assert_eq(proxy_req_decode(c, n + 1, &r), -PARLEY_EPROTO);
	memcpy(c, b, n);
	c[8] = 0; /* no user */
	cr_assert_eq(proxy_req_decode(c, n, &r), -PARLEY_EPROTO);
	memcpy(c, b, n);
	c[10] = 1; /* reserved bits */
	cr_assert_eq(proxy_req_decode(c, n, &r), -PARLEY_EPROTO);
	memcpy(c, b, n);
	c[PROXY_REQ_HDR] = ' '; /* not a valid user id */
	cr_assert_eq(proxy_req_decode(c, n, &r), -PARLEY_EPROTO);
	memcpy(c, b, n);
	c[9] = 200; /* device longer than what is there */
	cr_assert_eq(proxy_req_decode(c, n, &r), -PARLEY_EPROTO);
	/* a garbage frame from a peer is counted and dropped */
	struct proxy *px = mk(8, 1000);
	proxy_set_serving(px, true);
	proxy_on_frame(px, 2, PROXY_FRAME_REQ, c, n);
	proxy_on_frame(px, 2, PROXY_FRAME_REP, c, 4);
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.bad_frames, 2);
	cr_assert_eq(io.nserved, 0);
	cr_assert_eq(io.nrep, 0);
	proxy_free(px);
}

/* FWD_REP (proxy_rep_decode, what on_reply reads): the id and the
 * frame's type and request id, or EPROTO for anything but u64 | exactly
 * one whole client frame. */
Test(proxy, rep_decode)
{
	uint8_t b[600];
	uint32_t n = make_rep(b, 0x0102030405060708ull, 77, 0);
	uint64_t id = 0;
	uint16_t type = 0;
	uint32_t rid = 0;
	cr_assert_eq(proxy_rep_decode(b, n, &id, &type, &rid), 0);
	cr_assert_eq(id, 0x0102030405060708ull);
	cr_assert_eq(type, PARLEY_T_PONG);
	cr_assert_eq(rid, 77);
	for (uint32_t k = 0; k < n; k++) /* every truncation */
		cr_assert_eq(proxy_rep_decode(b, k, &id, &type, &rid),
			     -PARLEY_EPROTO, "len %u", k);
	b[n] = 0; /* a byte after the frame */
	cr_assert_eq(proxy_rep_decode(b, n + 1, &id, &type, &rid),
		     -PARLEY_EPROTO);
}

Test(proxy, forwardable_types)
{
	cr_assert(proxy_type_forwardable(PARLEY_T_SEND));
	cr_assert(proxy_type_forwardable(PARLEY_T_GROUP_INFO));
	cr_assert(proxy_type_forwardable(PARLEY_T_READ_MARKER));
	cr_assert(proxy_type_forwardable(PARLEY_T_RECEIPTS));
	cr_assert(proxy_type_forwardable(PARLEY_T_EDIT));
	cr_assert(proxy_type_forwardable(PARLEY_T_HISTORY));
	cr_assert(!proxy_type_forwardable(PARLEY_T_SYNC));
	cr_assert(!proxy_type_forwardable(PARLEY_T_EVENT_ACK));
	cr_assert(!proxy_type_forwardable(PARLEY_T_TYPING));
	cr_assert(!proxy_type_forwardable(PARLEY_T_PRESENCE_SUB));
	cr_assert(!proxy_type_forwardable(PARLEY_T_HELLO));
	cr_assert(!proxy_type_forwardable(PARLEY_T_AUTH));
	cr_assert(!proxy_type_forwardable(PARLEY_T_PING));
}

Test(proxy, metrics_text)
{
	struct proxy *px = mk(8, 1000);
	cr_assert_eq(fwd(px, 1, 5, 0), 0);
	char buf[8192];
	size_t n = proxy_metrics_text(px, buf, sizeof buf);
	cr_assert_lt(n, sizeof buf);
	cr_assert(strstr(buf, "\nparley_forward_inflight 1\n"));
	cr_assert(strstr(buf, "parley_forward_requests_total{outcome=\"replied\"} 0\n"));
	cr_assert(strstr(buf, "parley_forward_latency_seconds_count 0\n"));
	/* too small a buffer: the length it needs */
	cr_assert_eq(proxy_metrics_text(px, buf, 10), n);
	proxy_free(px);
}
