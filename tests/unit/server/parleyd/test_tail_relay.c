/*
 * test_tail_relay.c — server/tail_relay.c alone (tail_relay.h), through a
 * fake struct tail_io and a fake loop_post that keeps what the relay posts
 * to connections: the TAIL_REQ / TAIL_DATA codec and its refusals; the
 * gateway's delivery position (struct tail_gw: the first SYNC_OK, each
 * inbox EVENT written once and in order, the ack passed on only for what
 * the current subscription sent, a re-subscription from the device's ack
 * and the EVENTs it sends again dropped, a trimmed inbox); the gateway's
 * table (open, frames to the right connection, END, a link going down,
 * a refused frame); the holder's table (OPEN served, ACK and CLOSE posted
 * to the bound connection, a CLOSE before the bind, the per-node cap,
 * END after the connection closed, END retried when the link refused it);
 * remote reads (READ to the conversation's leader, a placeholder answer
 * asked again, a dropped link asked again, the answer delivered once; a
 * READ served and a failed one answered empty); remote checks (a READ of
 * kind TAIL_READ_KIND_OPEN to the open record's leader, waiting while none
 * is known, asked again after a failed answer or a dropped link, FOUND /
 * NONE delivered once; a build before checks answering with an EVENT;
 * a check served here and a failed one answered FAILED; the READ_RES
 * reasons' codec); generic remote reads, XREAD (the codec: round trips,
 * every truncation and bad field refused, an answer cut at
 * TAIL_XREAD_MAX_BYTES; the asker on a fake clock: waiting while no
 * leader is known, asked again after RETRY, a timeout or a dropped link,
 * the result delivered once with entries it owns, given up -PARLEY_EAGAIN;
 * a leader of a build without XREAD not asked; the bound; a read served
 * here and a refused one answered RETRY).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "lmsg.h"
#include "parley_proto.h"
#include "tail_relay.h"

/* ---- the fake io and loop ---------------------------------------------------------- */

#define MAXREC 64

struct sent {
	uint64_t to;
	uint8_t type;
	uint32_t len;
	uint8_t data[2048];
};

static struct {
	bool link_up, old_build;
	int send_rc, serve_rc, resolve_rc, check_rc;
	uint64_t conv_node, open_node;
	int nchecked;
	uint64_t checked_id[MAXREC];
	int ncheck_cb, check_res;
	struct sent sent[MAXREC];
	int nsent;
	int nserved;
	uint64_t served_id[MAXREC];
	int nresolved;
	uint64_t resolved_id[MAXREC];
	struct lmsg *posted[MAXREC];
	int nposted;
	int nread_cb;
	uint32_t read_len;
	bool read_null;
	/* XREAD */
	uint64_t key_node, now;
	int xread_link, xread_rc, nxread, nxread_cb;
	uint64_t xread_id[MAXREC];
	struct pe_read_req xq; /* the last served (key borrowed) */
	struct pe_read_result xres; /* the last delivered (copied below) */
	uint8_t xpay[8][64];
} io;

static int f_send(void *arg, uint64_t to, uint8_t type, const void *a,
		  size_t alen, const void *b, size_t blen)
{
	(void)arg;
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

static bool f_old_build(void *arg, uint64_t node)
{
	(void)arg;
	(void)node;
	return io.old_build;
}

static int f_serve(void *arg, uint64_t from, const struct tail_msg *m,
		   const uint8_t *p, uint32_t n)
{
	(void)arg;
	(void)from;
	(void)p;
	(void)n;
	if (io.serve_rc)
		return io.serve_rc;
	if (io.nserved < MAXREC)
		io.served_id[io.nserved++] = m->id;
	else
		io.nserved = MAXREC; /* the first ones are kept */
	return 0;
}

static uint64_t f_conv_node(void *arg, const char *conv, uint16_t clen)
{
	(void)arg;
	(void)conv;
	(void)clen;
	return io.conv_node;
}

static int f_resolve(void *arg, uint64_t from, uint64_t id,
		     const struct chat_inbox_ptr *p)
{
	(void)arg;
	(void)from;
	(void)p;
	if (io.resolve_rc)
		return io.resolve_rc;
	io.resolved_id[io.nresolved++] = id;
	return 0;
}

static uint64_t f_open_node(void *arg, const char *conv, uint16_t clen)
{
	(void)arg;
	(void)conv;
	(void)clen;
	return io.open_node;
}

static int f_check(void *arg, uint64_t from, uint64_t id, const char *conv,
		   uint16_t clen)
{
	(void)arg;
	(void)from;
	cr_assert(clen == 11 && !memcmp(conv, "d:alice:bob", 11));
	if (io.check_rc)
		return io.check_rc;
	io.checked_id[io.nchecked++] = id;
	return 0;
}

static uint64_t f_key_node(void *arg, const void *key, uint16_t klen)
{
	(void)arg;
	cr_assert(klen == 7 && !memcmp(key, "c/d:a:b", 7));
	return io.key_node;
}

static int f_xread_link(void *arg, uint64_t node)
{
	(void)arg;
	(void)node;
	return io.xread_link;
}

static int f_xread(void *arg, uint64_t from, uint64_t id,
		   const struct pe_read_req *q)
{
	(void)arg;
	(void)from;
	if (io.xread_rc)
		return io.xread_rc;
	io.xq = *q;
	io.xread_id[io.nxread++] = id;
	return 0;
}

static uint64_t f_now(void *arg)
{
	(void)arg;
	return io.now;
}

/* The relay posts to connections through lmsg_post -> loop_post. */
void loop_post(struct loop *lp, struct lmsg *m)
{
	(void)lp;
	cr_assert_lt(io.nposted, MAXREC);
	io.posted[io.nposted++] = m;
}

static void done(struct tail_relay *tr)
{
	for (int i = 0; i < io.nposted; i++)
		free(io.posted[i]);
	io.nposted = 0;
	tail_relay_free(tr);
}

static struct tail_relay *relay(void)
{
	memset(&io, 0, sizeof io);
	io.link_up = true;
	io.xread_link = 1;
	io.now = 1000;
	struct tail_io tio = {.send = f_send, .link_up = f_link_up,
			      .old_build = f_old_build,
			      .serve = f_serve, .conv_node = f_conv_node,
			      .resolve = f_resolve, .open_node = f_open_node,
			      .check = f_check, .key_node = f_key_node,
			      .xread_link = f_xread_link, .xread = f_xread,
			      .now_ms = f_now};
	struct tail_relay *tr = NULL;
	cr_assert_eq(tail_relay_new(&tio, &tr), 0);
	return tr;
}

static uint32_t encode(uint8_t *buf, size_t cap, uint32_t rid,
		       const struct parley_msg *m)
{
	int n = parley_proto_encode(buf, cap, rid, m);
	cr_assert_gt(n, 0);
	return (uint32_t)n;
}

static uint32_t sync_frame(uint8_t *buf, uint32_t rid, uint64_t from)
{
	struct parley_msg m = {.type = PARLEY_T_SYNC};
	m.sync.from_inbox_seq = from;
	return encode(buf, 64, rid, &m);
}

static uint32_t event_frame(uint8_t *buf, size_t cap, uint64_t seq,
			    uint16_t kind)
{
	struct parley_msg m = {.type = PARLEY_T_EVENT};
	m.event.inbox_seq = seq;
	m.event.kind = kind;
	m.event.conv = parley_str_c("d:alice:bob");
	m.event.conv_seq = seq;
	m.event.sender = parley_str_c("alice");
	m.event.body = (struct parley_bytes){(const uint8_t *)"hi", 2};
	return encode(buf, cap, 0, &m);
}

/* A TAIL_DATA / TAIL_REQ payload: header of m, then body. */
static uint32_t payload(uint8_t *out, const struct tail_msg *m,
			const uint8_t *body, uint32_t blen)
{
	uint32_t n = tail_hdr_encode(out, m);
	memcpy(out + n, body, blen);
	return n + blen;
}

/* ---- codec ------------------------------------------------------------------------- */

Test(tail_codec, every_op_round_trips)
{
	uint8_t sf[64], p[2048];
	uint32_t sn = sync_frame(sf, 7, 42);
	struct tail_msg m = {.op = TAIL_OP_OPEN, .id = 9, .user = "bob",
			     .ulen = 3, .device = "phone", .dlen = 5};
	uint32_t n = payload(p, &m, sf, sn);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), 0);
	cr_assert_eq(d.op, TAIL_OP_OPEN);
	cr_assert_eq(d.id, 9);
	cr_assert(d.ulen == 3 && !memcmp(d.user, "bob", 3));
	cr_assert(d.dlen == 5 && !memcmp(d.device, "phone", 5));
	cr_assert(d.blen == sn && !memcmp(d.body, sf, sn));
	/* OPEN travels only gateway -> holder */
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), -PARLEY_EPROTO);

	m = (struct tail_msg){.op = TAIL_OP_ACK, .id = 3, .seq = 77};
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), 0);
	cr_assert(d.op == TAIL_OP_ACK && d.id == 3 && d.seq == 77);

	m = (struct tail_msg){.op = TAIL_OP_CLOSE, .id = 4};
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), 0);
	cr_assert(d.op == TAIL_OP_CLOSE && d.id == 4);

	uint8_t ev[256];
	uint32_t en = event_frame(ev, sizeof ev, 5, PARLEY_EV_MESSAGE);
	uint8_t two[512];
	memcpy(two, ev, en);
	memcpy(two + en, ev, en);
	m = (struct tail_msg){.op = TAIL_OP_DATA, .id = 5};
	n = payload(p, &m, two, 2 * en);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), 0);
	cr_assert(d.op == TAIL_OP_DATA && d.blen == 2 * en);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), -PARLEY_EPROTO);

	m = (struct tail_msg){.op = TAIL_OP_END, .id = 6,
			      .reason = TAIL_END_FULL};
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), 0);
	cr_assert(d.op == TAIL_OP_END && d.reason == TAIL_END_FULL);

	m = (struct tail_msg){.op = TAIL_OP_READ, .id = 8, .seq = 11,
			      .conv_seq = 12, .kind = PARLEY_EV_MESSAGE,
			      .conv = "d:alice:bob", .clen = 11};
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), 0);
	cr_assert(d.op == TAIL_OP_READ && d.seq == 11 && d.conv_seq == 12 &&
		  d.kind == PARLEY_EV_MESSAGE && d.clen == 11 &&
		  !memcmp(d.conv, "d:alice:bob", 11));

	m = (struct tail_msg){.op = TAIL_OP_READ_RES, .id = 8};
	n = payload(p, &m, ev, en);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), 0);
	cr_assert(d.op == TAIL_OP_READ_RES && d.blen == en);
	n = tail_hdr_encode(p, &m); /* failed: no frame */
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), 0);
	cr_assert(d.body == NULL && d.blen == 0);
}

Test(tail_codec, refuses_what_does_not_fit)
{
	uint8_t p[2048] = {0}, sf[64], ev[256];
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, 15, &d), -PARLEY_EPROTO);
	/* an unknown op */
	struct tail_msg m = {.op = 99, .id = 1};
	uint32_t n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), -PARLEY_EPROTO);
	/* reserved header bytes */
	m = (struct tail_msg){.op = TAIL_OP_CLOSE, .id = 1};
	n = tail_hdr_encode(p, &m);
	p[2] = 1;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), -PARLEY_EPROTO);
	/* CLOSE with bytes after it, ACK of the wrong size */
	n = tail_hdr_encode(p, &m);
	p[n] = 0;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n + 1, &d),
		     -PARLEY_EPROTO);
	m = (struct tail_msg){.op = TAIL_OP_ACK, .id = 1, .seq = 2};
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n - 1, &d),
		     -PARLEY_EPROTO);
	/* OPEN: no user, a frame that is not a SYNC, a cut SYNC */
	uint32_t en = event_frame(ev, sizeof ev, 1, PARLEY_EV_MESSAGE);
	m = (struct tail_msg){.op = TAIL_OP_OPEN, .id = 1, .user = "bob",
			      .ulen = 3, .device = "d", .dlen = 1};
	n = payload(p, &m, ev, en);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), -PARLEY_EPROTO);
	uint32_t sn = sync_frame(sf, 1, 1);
	n = payload(p, &m, sf, sn);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n - 1, &d),
		     -PARLEY_EPROTO);
	m.ulen = 0;
	n = payload(p, &m, sf, sn);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), -PARLEY_EPROTO);
	/* DATA: empty, or a frame cut short */
	m = (struct tail_msg){.op = TAIL_OP_DATA, .id = 1};
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), -PARLEY_EPROTO);
	n = payload(p, &m, ev, en);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n - 1, &d),
		     -PARLEY_EPROTO);
	/* END with an unknown reason */
	m = (struct tail_msg){.op = TAIL_OP_END, .id = 1, .reason = 9};
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), -PARLEY_EPROTO);
	/* READ: empty conversation id, a length that disagrees */
	m = (struct tail_msg){.op = TAIL_OP_READ, .id = 1, .conv = "c",
			      .clen = 0};
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), -PARLEY_EPROTO);
	m.clen = 1;
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n + 1, &d),
		     -PARLEY_EPROTO);
	/* READ_RES carrying something else than one EVENT */
	m = (struct tail_msg){.op = TAIL_OP_READ_RES, .id = 1};
	n = payload(p, &m, sf, sn);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), -PARLEY_EPROTO);
}

/* ---- the gateway's delivery position --------------------------------------------- */

Test(tail_gw, first_sync_then_each_event_once_in_order)
{
	struct tail_gw g = {0};
	tail_gw_synced(&g, 5);
	cr_assert(g.synced && g.next == 5 && g.acked == 4 && g.h_next == 5);
	cr_assert_eq(tail_gw_event(&g, 5), TAIL_GW_WRITE);
	cr_assert_eq(tail_gw_event(&g, 6), TAIL_GW_WRITE);
	cr_assert_eq(g.next, 7);
	/* a repeat or a skip of the subscription is a gap */
	struct tail_gw h = g;
	cr_assert_eq(tail_gw_event(&h, 6), TAIL_GW_GAP);
	h = g;
	cr_assert_eq(tail_gw_event(&h, 8), TAIL_GW_GAP);
	/* a SYNC_OK from 0 (an empty inbox, live) starts at 1 */
	struct tail_gw z = {0};
	tail_gw_synced(&z, 0);
	cr_assert(z.next == 1 && z.acked == 0);
}

Test(tail_gw, acks_pass_on_what_the_subscription_sent)
{
	struct tail_gw g = {0};
	tail_gw_synced(&g, 1);
	for (uint64_t s = 1; s <= 10; s++)
		cr_assert_eq(tail_gw_event(&g, s), TAIL_GW_WRITE);
	cr_assert_eq(tail_gw_ack(&g, 4), 4);
	cr_assert_eq(tail_gw_ack(&g, 4), 0); /* nothing new */
	cr_assert_eq(tail_gw_ack(&g, 10), 10);
	cr_assert_eq(tail_gw_ack_due(&g), 0);
}

Test(tail_gw, resubscription_resends_from_the_ack_and_drops_what_was_written)
{
	struct tail_gw g = {0};
	tail_gw_synced(&g, 1);
	for (uint64_t s = 1; s <= 10; s++)
		cr_assert_eq(tail_gw_event(&g, s), TAIL_GW_WRITE);
	cr_assert_eq(tail_gw_ack(&g, 6), 6);
	/* the holder died: events 7..10 went to the device, unacknowledged */
	uint64_t from = tail_gw_resub(&g);
	cr_assert_eq(from, 7);
	tail_gw_synced(&g, 7);
	cr_assert(g.next == 11 && g.acked == 6); /* the device's position */
	/* the device acknowledges 9 before the new subscription re-sent it:
	 * the holder only gets what it sent */
	cr_assert_eq(tail_gw_ack(&g, 9), 0);
	cr_assert_eq(tail_gw_event(&g, 7), TAIL_GW_DROP);
	cr_assert_eq(tail_gw_event(&g, 8), TAIL_GW_DROP);
	cr_assert_eq(tail_gw_ack_due(&g), 8);
	cr_assert_eq(tail_gw_event(&g, 9), TAIL_GW_DROP);
	cr_assert_eq(tail_gw_event(&g, 10), TAIL_GW_DROP);
	cr_assert_eq(tail_gw_ack_due(&g), 9);
	cr_assert_eq(tail_gw_event(&g, 11), TAIL_GW_WRITE);
	cr_assert_eq(tail_gw_event(&g, 12), TAIL_GW_WRITE);
	cr_assert_eq(g.next, 13);
}

Test(tail_gw, a_trimmed_inbox_skips_the_device_ahead)
{
	struct tail_gw g = {0};
	tail_gw_synced(&g, 1);
	cr_assert_eq(tail_gw_event(&g, 1), TAIL_GW_WRITE);
	cr_assert_eq(tail_gw_resub(&g), 1);
	/* retention trimmed the inbox to 20 meanwhile: the holder starts there */
	tail_gw_synced(&g, 20);
	cr_assert(g.next == 20 && g.h_next == 20 && g.ack_sent == 19);
	cr_assert_eq(tail_gw_event(&g, 20), TAIL_GW_WRITE);
}

/* ---- the gateway's table ----------------------------------------------------------- */

static struct conn_ref ref1 = {.lp = (struct loop *)0x1, .slot = 1, .gen = 1};

Test(tail_gateway, frames_and_end_reach_the_connection)
{
	struct tail_relay *tr = relay();
	uint8_t sf[64];
	uint32_t sn = sync_frame(sf, 3, 1);
	uint64_t id = 0;
	cr_assert_eq(tail_relay_open(tr, 7, &ref1, "bob", 3, "phone", 5, sf, sn,
				     &id), 0);
	cr_assert_eq(io.nsent, 1);
	cr_assert(io.sent[0].to == 7 && io.sent[0].type == TAIL_FRAME_REQ);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, io.sent[0].data,
				     io.sent[0].len, &d), 0);
	cr_assert(d.op == TAIL_OP_OPEN && d.id == id && d.blen == sn);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert_eq(st.gw_open, 1);

	uint8_t ev[256], p[2048];
	uint32_t en = event_frame(ev, sizeof ev, 1, PARLEY_EV_MESSAGE);
	struct tail_msg m = {.op = TAIL_OP_DATA, .id = id};
	uint32_t n = payload(p, &m, ev, en);
	tail_relay_on_frame(tr, 8, TAIL_FRAME_DATA, p, n); /* another node */
	cr_assert_eq(io.nposted, 0);
	tail_relay_on_frame(tr, 7, TAIL_FRAME_DATA, p, n);
	cr_assert_eq(io.nposted, 1);
	struct lmsg *lm = io.posted[0];
	cr_assert(lm->kind == LM_TAIL && lm->u.tail.id == id &&
		  !lm->u.tail.end && lm->len == en &&
		  !memcmp(lm->data, ev, en) && lm->slot == 1 && lm->gen == 1);

	cr_assert_eq(tail_relay_ack(tr, id, 1), 0);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, io.sent[1].data,
				     io.sent[1].len, &d), 0);
	cr_assert(d.op == TAIL_OP_ACK && d.seq == 1);

	m = (struct tail_msg){.op = TAIL_OP_END, .id = id};
	n = tail_hdr_encode(p, &m);
	tail_relay_on_frame(tr, 7, TAIL_FRAME_DATA, p, n);
	cr_assert_eq(io.nposted, 2);
	cr_assert(io.posted[1]->kind == LM_TAIL && io.posted[1]->u.tail.end);
	tail_relay_stats(tr, &st);
	cr_assert_eq(st.gw_open, 0);
	/* forgotten: an ACK has nowhere to go, a CLOSE sends nothing */
	cr_assert_eq(tail_relay_ack(tr, id, 1), -PARLEY_ECLOSED);
	int before = io.nsent;
	tail_relay_close(tr, id);
	cr_assert_eq(io.nsent, before);
	done(tr);
}

Test(tail_gateway, a_link_down_ends_its_tails_and_close_tells_the_holder)
{
	struct tail_relay *tr = relay();
	uint8_t sf[64];
	uint32_t sn = sync_frame(sf, 3, 1);
	uint64_t a = 0, b = 0, c = 0;
	cr_assert_eq(tail_relay_open(tr, 7, &ref1, "bob", 3, "", 0, sf, sn, &a),
		     0);
	cr_assert_eq(tail_relay_open(tr, 7, &ref1, "eve", 3, "", 0, sf, sn, &b),
		     0);
	cr_assert_eq(tail_relay_open(tr, 9, &ref1, "amy", 3, "", 0, sf, sn, &c),
		     0);
	cr_assert(a != b && b != c);
	tail_relay_link_down(tr, 7);
	cr_assert_eq(io.nposted, 2);
	for (int i = 0; i < 2; i++)
		cr_assert(io.posted[i]->kind == LM_TAIL &&
			  io.posted[i]->u.tail.end &&
			  (io.posted[i]->u.tail.id == a ||
			   io.posted[i]->u.tail.id == b));
	int before = io.nsent;
	tail_relay_close(tr, c);
	cr_assert_eq(io.nsent, before + 1);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, io.sent[before].data,
				     io.sent[before].len, &d), 0);
	cr_assert(d.op == TAIL_OP_CLOSE && d.id == c && io.sent[before].to == 9);
	done(tr);
}

Test(tail_gateway, no_link_or_a_refused_frame_opens_nothing)
{
	struct tail_relay *tr = relay();
	uint8_t sf[64];
	uint32_t sn = sync_frame(sf, 3, 1);
	uint64_t id = 0;
	io.link_up = false;
	cr_assert_eq(tail_relay_open(tr, 7, &ref1, "bob", 3, "", 0, sf, sn, &id),
		     -PARLEY_ENOTLEADER);
	cr_assert_eq(tail_relay_open(tr, 0, &ref1, "bob", 3, "", 0, sf, sn, &id),
		     -PARLEY_ENOTLEADER);
	io.link_up = true;
	io.send_rc = -PARLEY_EFULL;
	cr_assert_eq(tail_relay_open(tr, 7, &ref1, "bob", 3, "", 0, sf, sn, &id),
		     -PARLEY_EAGAIN);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert_eq(st.gw_open, 0);
	done(tr);
}

/* ---- the holder's table ------------------------------------------------------------ */

static void holder_open(struct tail_relay *tr, uint64_t from, uint64_t id)
{
	uint8_t sf[64], p[2048];
	uint32_t sn = sync_frame(sf, 3, 1);
	struct tail_msg m = {.op = TAIL_OP_OPEN, .id = id, .user = "bob",
			     .ulen = 3, .device = "phone", .dlen = 5};
	uint32_t n = payload(p, &m, sf, sn);
	tail_relay_on_frame(tr, from, TAIL_FRAME_REQ, p, n);
}

static void holder_ctl(struct tail_relay *tr, uint64_t from, uint8_t op,
		       uint64_t id, uint64_t seq)
{
	uint8_t p[2048];
	struct tail_msg m = {.op = op, .id = id, .seq = seq};
	uint32_t n = tail_hdr_encode(p, &m);
	tail_relay_on_frame(tr, from, TAIL_FRAME_REQ, p, n);
}

static struct conn_ref ref2 = {.lp = (struct loop *)0x2, .slot = 2, .gen = 5};

Test(tail_holder, open_ack_close)
{
	struct tail_relay *tr = relay();
	holder_open(tr, 4, 11);
	cr_assert(io.nserved == 1 && io.served_id[0] == 11);
	cr_assert(tail_relay_served_bind(tr, 4, 11, &ref2));
	holder_ctl(tr, 4, TAIL_OP_ACK, 11, 30);
	cr_assert_eq(io.nposted, 1);
	cr_assert(io.posted[0]->kind == LM_TAIL_ACK &&
		  io.posted[0]->u.tail.seq == 30 && io.posted[0]->slot == 2);
	/* frames go to the gateway */
	uint8_t ev[256];
	uint32_t en = event_frame(ev, sizeof ev, 1, PARLEY_EV_MESSAGE);
	cr_assert_eq(tail_relay_served_data(tr, 4, 11, ev, en), 0);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, io.sent[0].data,
				     io.sent[0].len, &d), 0);
	cr_assert(d.op == TAIL_OP_DATA && d.id == 11 && d.blen == en);
	holder_ctl(tr, 4, TAIL_OP_CLOSE, 11, 0);
	cr_assert_eq(io.nposted, 2);
	cr_assert_eq(io.posted[1]->kind, LM_TAIL_CLOSE);
	/* the connection closes: the gateway closed it, no END */
	int before = io.nsent;
	tail_relay_served_end(tr, 4, 11);
	cr_assert_eq(io.nsent, before);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert(st.served_open == 0 && st.served_total == 1);
	done(tr);
}

Test(tail_holder, end_goes_to_the_gateway_and_is_retried_when_refused)
{
	struct tail_relay *tr = relay();
	holder_open(tr, 4, 11);
	cr_assert(tail_relay_served_bind(tr, 4, 11, &ref2));
	io.send_rc = -PARLEY_EFULL;
	tail_relay_served_end(tr, 4, 11);
	cr_assert_eq(io.nsent, 0);
	io.send_rc = 0;
	tail_relay_tick(tr);
	cr_assert_eq(io.nsent, 1);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, io.sent[0].data,
				     io.sent[0].len, &d), 0);
	cr_assert(d.op == TAIL_OP_END && d.id == 11 &&
		  d.reason == TAIL_END_CLOSED);
	tail_relay_tick(tr); /* once */
	cr_assert_eq(io.nsent, 1);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert_eq(st.served_open, 0);
	done(tr);
}

Test(tail_holder, a_close_before_the_bind_closes_the_connection)
{
	struct tail_relay *tr = relay();
	holder_open(tr, 4, 11);
	holder_ctl(tr, 4, TAIL_OP_CLOSE, 11, 0);
	cr_assert_eq(io.nposted, 0);
	cr_assert_not(tail_relay_served_bind(tr, 4, 11, &ref2));
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert_eq(st.served_open, 0);
	/* the same after the gateway's link went down */
	holder_open(tr, 4, 12);
	tail_relay_link_down(tr, 4);
	cr_assert_not(tail_relay_served_bind(tr, 4, 12, &ref2));
	done(tr);
}

Test(tail_holder, at_most_TAIL_MAX_PER_NODE_per_gateway)
{
	struct tail_relay *tr = relay();
	for (uint64_t i = 1; i <= TAIL_MAX_PER_NODE; i++)
		holder_open(tr, 4, i);
	cr_assert_eq(io.nserved, MAXREC); /* the fake records the first ones */
	cr_assert_eq(io.nsent, 0);
	holder_open(tr, 4, TAIL_MAX_PER_NODE + 1);
	cr_assert_eq(io.nsent, 1);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, io.sent[0].data,
				     io.sent[0].len, &d), 0);
	cr_assert(d.op == TAIL_OP_END && d.reason == TAIL_END_FULL &&
		  d.id == TAIL_MAX_PER_NODE + 1);
	/* another gateway is not affected */
	holder_open(tr, 5, 1);
	cr_assert_eq(io.nsent, 1);
	/* one served tail ends: room again */
	cr_assert(tail_relay_served_bind(tr, 4, 1, &ref2));
	holder_ctl(tr, 4, TAIL_OP_CLOSE, 1, 0);
	holder_open(tr, 4, TAIL_MAX_PER_NODE + 2);
	cr_assert_eq(io.nsent, 1);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert_eq(st.served_full, 1);
	done(tr);
}

/* ---- remote reads ------------------------------------------------------------------ */

static void read_cb(void *arg, const uint8_t *frame, uint32_t n)
{
	(void)arg;
	io.nread_cb++;
	io.read_null = frame == NULL;
	io.read_len = n;
}

static uint64_t last_read_id(void)
{
	struct tail_msg d;
	cr_assert_gt(io.nsent, 0);
	struct sent *s = &io.sent[io.nsent - 1];
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, s->data, s->len, &d), 0);
	cr_assert_eq(d.op, TAIL_OP_READ);
	return d.id;
}

static void answer(struct tail_relay *tr, uint64_t from, uint64_t id,
		   uint16_t kind)
{
	uint8_t ev[256], p[2048];
	uint32_t en = event_frame(ev, sizeof ev, 3, kind);
	struct tail_msg m = {.op = TAIL_OP_READ_RES, .id = id};
	uint32_t n = payload(p, &m, ev, en);
	tail_relay_on_frame(tr, from, TAIL_FRAME_DATA, p, n);
}

Test(tail_read, asked_of_the_leader_again_until_it_answers)
{
	struct tail_relay *tr = relay();
	struct chat_inbox_ptr ptr = {.inbox_seq = 3, .conv_seq = 3,
				     .kind = PARLEY_EV_MESSAGE, .clen = 11};
	memcpy(ptr.conv, "d:alice:bob", 11);
	io.conv_node = 0; /* no leader known */
	cr_assert_eq(tail_relay_resolve(tr, &ptr, read_cb, NULL),
		     -PARLEY_ENOTLEADER);
	io.conv_node = 6;
	cr_assert_eq(tail_relay_resolve(tr, &ptr, read_cb, NULL), 0);
	cr_assert(io.nsent == 1 && io.sent[0].to == 6);
	uint64_t id = last_read_id();
	/* a placeholder (the node could not read it): asked again */
	answer(tr, 6, id, 0);
	cr_assert_eq(io.nread_cb, 0);
	io.conv_node = 8; /* the leader moved */
	tail_relay_tick(tr);
	cr_assert(io.nsent == 2 && io.sent[1].to == 8);
	/* the old node's late answer is not taken */
	answer(tr, 6, id, PARLEY_EV_MESSAGE);
	cr_assert_eq(io.nread_cb, 0);
	/* the link drops: asked again at the tick */
	tail_relay_link_down(tr, 8);
	io.conv_node = 9;
	tail_relay_tick(tr);
	cr_assert(io.nsent == 3 && io.sent[2].to == 9);
	answer(tr, 9, id, PARLEY_EV_MESSAGE);
	cr_assert(io.nread_cb == 1 && !io.read_null && io.read_len > 0);
	answer(tr, 9, id, PARLEY_EV_MESSAGE); /* once */
	cr_assert_eq(io.nread_cb, 1);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert(st.reads == 1 && st.read_retries == 2 && st.read_giveups == 0);
	done(tr);
}

Test(tail_read, a_read_is_served_here_or_answered_empty)
{
	struct tail_relay *tr = relay();
	uint8_t p[2048];
	struct tail_msg m = {.op = TAIL_OP_READ, .id = 5, .seq = 3,
			     .conv_seq = 3, .kind = PARLEY_EV_MESSAGE,
			     .conv = "d:alice:bob", .clen = 11};
	uint32_t n = tail_hdr_encode(p, &m);
	tail_relay_on_frame(tr, 4, TAIL_FRAME_REQ, p, n);
	cr_assert(io.nresolved == 1 && io.resolved_id[0] == 5);
	cr_assert_eq(io.nsent, 0); /* the answer comes from resolve's callback */
	uint8_t ev[256];
	uint32_t en = event_frame(ev, sizeof ev, 3, PARLEY_EV_MESSAGE);
	tail_relay_read_answer(tr, 4, 5, ev, en);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, io.sent[0].data,
				     io.sent[0].len, &d), 0);
	cr_assert(d.op == TAIL_OP_READ_RES && d.id == 5 && d.blen == en);
	io.resolve_rc = -PARLEY_EFULL;
	tail_relay_on_frame(tr, 4, TAIL_FRAME_REQ, p, n);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, io.sent[1].data,
				     io.sent[1].len, &d), 0);
	cr_assert(d.op == TAIL_OP_READ_RES && d.blen == 0);
	done(tr);
}

Test(tail_unsent, an_open_or_data_that_did_not_leave_breaks_the_tail)
{
	struct tail_relay *tr = relay();
	uint8_t sf[64];
	uint32_t sn = sync_frame(sf, 3, 1);
	uint64_t id = 0;
	cr_assert_eq(tail_relay_open(tr, 7, &ref1, "bob", 3, "", 0, sf, sn, &id),
		     0);
	/* the node thread could not hand the OPEN to the link */
	tail_relay_on_unsent(tr, 7, TAIL_FRAME_REQ, io.sent[0].data,
			     io.sent[0].len);
	cr_assert_eq(io.nposted, 1);
	cr_assert(io.posted[0]->kind == LM_TAIL && io.posted[0]->u.tail.end &&
		  io.posted[0]->u.tail.id == id);
	/* holder: a DATA that did not leave closes the served tail, and END
	 * goes at the tick */
	holder_open(tr, 4, 11);
	cr_assert(tail_relay_served_bind(tr, 4, 11, &ref2));
	uint8_t ev[256];
	uint32_t en = event_frame(ev, sizeof ev, 1, PARLEY_EV_MESSAGE);
	cr_assert_eq(tail_relay_served_data(tr, 4, 11, ev, en), 0);
	int k = io.nsent - 1;
	tail_relay_on_unsent(tr, 4, TAIL_FRAME_DATA, io.sent[k].data,
			     io.sent[k].len);
	cr_assert_eq(io.nposted, 2);
	cr_assert_eq(io.posted[1]->kind, LM_TAIL_CLOSE);
	int before = io.nsent;
	tail_relay_tick(tr);
	cr_assert_eq(io.nsent, before + 1);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, io.sent[before].data,
				     io.sent[before].len, &d), 0);
	cr_assert(d.op == TAIL_OP_END && d.id == 11);
	tail_relay_served_end(tr, 4, 11); /* the connection closed: no more */
	cr_assert_eq(io.nsent, before + 1);
	done(tr);
}

Test(tail_read, an_older_build_is_not_asked)
{
	struct tail_relay *tr = relay();
	struct chat_inbox_ptr ptr = {.inbox_seq = 3, .conv_seq = 3,
				     .kind = PARLEY_EV_MESSAGE, .clen = 11};
	memcpy(ptr.conv, "d:alice:bob", 11);
	io.conv_node = 6;
	io.old_build = true; /* up, without the tail frames */
	io.link_up = false;  /* what peer_node_can_send says of it */
	cr_assert_eq(tail_relay_resolve(tr, &ptr, read_cb, NULL),
		     -PARLEY_EVERSION);
	cr_assert_eq(io.nsent, 0);
	done(tr);
}

/* ---- remote checks ------------------------------------------------------------------ */

static void check_cb(void *arg, int rc)
{
	(void)arg;
	io.ncheck_cb++;
	io.check_res = rc;
}

static void check_res(struct tail_relay *tr, uint64_t from, uint64_t id,
		      uint8_t reason)
{
	uint8_t p[TAIL_OPEN_HDR_MAX];
	struct tail_msg m = {.op = TAIL_OP_READ_RES, .id = id, .reason = reason};
	uint32_t n = tail_hdr_encode(p, &m);
	tail_relay_on_frame(tr, from, TAIL_FRAME_DATA, p, n);
}

Test(tail_check, asked_of_the_open_records_leader_until_it_answers)
{
	struct tail_relay *tr = relay();
	io.open_node = 0; /* no leader known: the check waits for one */
	cr_assert_eq(tail_relay_check(tr, "d:alice:bob", 11, check_cb, NULL), 0);
	cr_assert_eq(io.nsent, 0);
	tail_relay_tick(tr);
	cr_assert(io.nsent == 0 && io.ncheck_cb == 0);
	io.open_node = 6;
	tail_relay_tick(tr);
	cr_assert(io.nsent == 1 && io.sent[0].to == 6);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, io.sent[0].data,
				     io.sent[0].len, &d), 0);
	cr_assert(d.op == TAIL_OP_READ && d.kind == TAIL_READ_KIND_OPEN &&
		  d.clen == 11 && !memcmp(d.conv, "d:alice:bob", 11));
	uint64_t id = d.id;
	/* that node could not read it (not the leader any more): asked
	 * again, of the leader as then known */
	check_res(tr, 6, id, TAIL_RES_FAILED);
	cr_assert_eq(io.ncheck_cb, 0);
	io.open_node = 8;
	tail_relay_tick(tr);
	cr_assert(io.nsent == 2 && io.sent[1].to == 8);
	check_res(tr, 6, id, TAIL_RES_FOUND); /* the old node's: not taken */
	cr_assert_eq(io.ncheck_cb, 0);
	tail_relay_link_down(tr, 8);
	tail_relay_tick(tr);
	cr_assert(io.nsent == 3 && io.sent[2].to == 8);
	check_res(tr, 8, id, TAIL_RES_FOUND);
	cr_assert(io.ncheck_cb == 1 && io.check_res == 1);
	check_res(tr, 8, id, TAIL_RES_NONE); /* once */
	cr_assert_eq(io.ncheck_cb, 1);
	/* a conversation never opened */
	cr_assert_eq(tail_relay_check(tr, "d:alice:bob", 11, check_cb, NULL), 0);
	cr_assert(io.nsent == 4 && io.sent[3].to == 8);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, io.sent[3].data,
				     io.sent[3].len, &d), 0);
	check_res(tr, 8, d.id, TAIL_RES_NONE);
	cr_assert(io.ncheck_cb == 2 && io.check_res == 0);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert(st.checks == 2 && st.check_giveups == 0 && st.reads == 0);
	done(tr);
}

Test(tail_check, an_older_build_checks_nothing)
{
	struct tail_relay *tr = relay();
	io.open_node = 6;
	/* a build before checks resolves the READ as a pointer of an
	 * unknown kind: a placeholder EVENT */
	cr_assert_eq(tail_relay_check(tr, "d:alice:bob", 11, check_cb, NULL), 0);
	answer(tr, 6, last_read_id(), 0);
	cr_assert(io.ncheck_cb == 1 && io.check_res == -PARLEY_EVERSION);
	/* a build without tail frames is not asked */
	io.old_build = true;
	io.link_up = false;
	cr_assert_eq(tail_relay_check(tr, "d:alice:bob", 11, check_cb, NULL),
		     -PARLEY_EVERSION);
	cr_assert_eq(io.nsent, 1);
	done(tr);
}

Test(tail_check, a_check_is_served_here_or_answered_failed)
{
	struct tail_relay *tr = relay();
	uint8_t p[2048];
	struct tail_msg m = {.op = TAIL_OP_READ, .id = 5,
			     .kind = TAIL_READ_KIND_OPEN,
			     .conv = "d:alice:bob", .clen = 11};
	uint32_t n = tail_hdr_encode(p, &m);
	tail_relay_on_frame(tr, 4, TAIL_FRAME_REQ, p, n);
	cr_assert(io.nchecked == 1 && io.checked_id[0] == 5 &&
		  io.nresolved == 0);
	cr_assert_eq(io.nsent, 0); /* the answer comes from check's callback */
	tail_relay_check_answer(tr, 4, 5, 1);
	tail_relay_check_answer(tr, 4, 6, 0);
	io.check_rc = -PARLEY_EFULL;
	tail_relay_on_frame(tr, 4, TAIL_FRAME_REQ, p, n);
	const uint8_t want[3] = {TAIL_RES_FOUND, TAIL_RES_NONE, TAIL_RES_FAILED};
	cr_assert_eq(io.nsent, 3);
	for (int i = 0; i < 3; i++) {
		struct tail_msg d;
		cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, io.sent[i].data,
					     io.sent[i].len, &d), 0);
		cr_assert(d.op == TAIL_OP_READ_RES && d.blen == 0 &&
			  d.reason == want[i] && io.sent[i].to == 4);
	}
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert_eq(st.checks_served, 3);
	done(tr);
}

Test(tail_check, read_res_reasons_are_checked)
{
	uint8_t p[2048], ev[256];
	uint32_t en = event_frame(ev, sizeof ev, 3, PARLEY_EV_MESSAGE);
	struct tail_msg d;
	struct tail_msg m = {.op = TAIL_OP_READ_RES, .id = 1,
			     .reason = TAIL_RES_FOUND};
	uint32_t n = payload(p, &m, ev, en); /* FOUND carries nothing */
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), -PARLEY_EPROTO);
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), 0);
	cr_assert_eq(d.reason, TAIL_RES_FOUND);
	m.reason = TAIL_RES_NONE + 1;
	n = tail_hdr_encode(p, &m);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_DATA, p, n, &d), -PARLEY_EPROTO);
}

/* ---- generic remote reads (XREAD) -------------------------------------------------- */

static const struct pe_read_req xq = {.key = "c/d:a:b", .klen = 7,
				      .from = UINT64_MAX, .dir = PE_BACKWARD,
				      .limit = 3, .linearizable = true};

/* A result of n entries, payload i "p<i>..." of len[i] bytes (from buf). */
static struct pe_read_result xresult(struct pe_entry *ents, uint32_t n,
				     const uint32_t *len, const uint8_t *buf)
{
	for (uint32_t i = 0; i < n; i++)
		ents[i] = (struct pe_entry){.seq = 10 - i, .ts_ms = 500 + i,
					    .type = (uint16_t)(3 + i),
					    .flags = 1, .len = len[i],
					    .payload = buf};
	for (uint32_t i = 0; i < n; i++)
		memset(ents[i].producer, 0x40 + (int)i, PE_PRODUCER_LEN);
	return (struct pe_read_result){.entries = ents, .count = n,
				       .first_seq = 2, .last_seq = 10,
				       .end = true};
}

Test(tail_xread, codec_round_trips)
{
	uint8_t p[2048];
	struct tail_msg m = {.op = TAIL_OP_XREAD, .id = 9, .seq = 77,
			     .limit = 3, .dir = PE_BACKWARD, .lin = true,
			     .key = (const uint8_t *)"c/d:a:b", .klen = 7};
	uint32_t n = tail_hdr_encode(p, &m);
	cr_assert_eq(n, TAIL_HDR + TAIL_XREAD_HDR + 7);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, p, n, &d), 0);
	cr_assert(d.op == TAIL_OP_XREAD && d.id == 9 && d.seq == 77 &&
		  d.limit == 3 && d.dir == PE_BACKWARD && d.lin &&
		  d.klen == 7 && !memcmp(d.key, "c/d:a:b", 7));
	/* only in its own frame type; no other op in it */
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_REQ, p, n, &d), -PARLEY_EPROTO);
	for (uint32_t k = 0; k < n; k++) /* every truncation */
		cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, p, k, &d),
			     -PARLEY_EPROTO, "XREAD cut at %u", k);
	uint8_t bad[2048];
	const uint32_t off[] = {TAIL_HDR + 8, TAIL_HDR + 12, TAIL_HDR + 13,
				TAIL_HDR + 14};
	const uint8_t val[] = {0, 2, 2, 0}; /* limit 0, dir, flags, klen 0 */
	for (int i = 0; i < 4; i++) {
		memcpy(bad, p, n);
		if (i == 0)
			memset(bad + off[i], 0, 4);
		else if (i == 3)
			memset(bad + off[i], 0, 2);
		else
			bad[off[i]] = val[i];
		cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, bad, n, &d),
			     -PARLEY_EPROTO, "field %d", i);
	}
	struct tail_msg o = {.op = TAIL_OP_ACK, .id = 1, .seq = 2};
	uint32_t on = tail_hdr_encode(bad, &o);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, bad, on, &d),
		     -PARLEY_EPROTO);

	/* the answer */
	uint8_t pl[16] = "p0p1p2p3p4p5p6p";
	struct pe_entry ents[3];
	const uint32_t lens[3] = {5, 0, 16};
	struct pe_read_result r = xresult(ents, 3, lens, pl);
	uint32_t sz = tail_xres_size(&r);
	cr_assert_eq(sz, TAIL_HDR + TAIL_XRES_HDR + 3 * TAIL_XRES_ENT + 21);
	n = tail_xres_encode(p, sizeof p, 9, TAIL_XRES_DONE, &r);
	cr_assert_eq(n, sz);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, p, n, &d), 0);
	cr_assert(d.op == TAIL_OP_XREAD_RES && d.id == 9 && d.err == 0 &&
		  d.count == 3 && d.first_seq == 2 && d.last_seq == 10 && d.end);
	struct pe_entry got[3];
	tail_xres_entries(&d, got);
	for (int i = 0; i < 3; i++) {
		cr_assert(got[i].seq == ents[i].seq &&
			  got[i].ts_ms == ents[i].ts_ms &&
			  got[i].type == ents[i].type && got[i].flags == 1 &&
			  got[i].len == lens[i] &&
			  !memcmp(got[i].payload, pl, lens[i]) &&
			  !memcmp(got[i].producer, ents[i].producer,
				  PE_PRODUCER_LEN), "entry %d", i);
	}
	for (uint32_t k = 0; k < n; k++)
		cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, p, k, &d),
			     -PARLEY_EPROTO, "XREAD_RES cut at %u", k);
	memcpy(bad, p, n); /* a count the entries do not fill */
	le_put32(bad + TAIL_HDR + 4, 4);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, bad, n, &d),
		     -PARLEY_EPROTO);
	memcpy(bad, p, n); /* an entry's length past the end */
	le_put32(bad + TAIL_HDR + TAIL_XRES_HDR + 36, 6);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, bad, n, &d),
		     -PARLEY_EPROTO);
	memcpy(bad, p, n); /* end neither 0 nor 1 */
	bad[TAIL_HDR + 24] = 2;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, bad, n, &d),
		     -PARLEY_EPROTO);
	memcpy(bad, p, n); /* a reason beyond RETRY */
	bad[1] = TAIL_XRES_RETRY + 1;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, bad, n, &d),
		     -PARLEY_EPROTO);
	/* an error carries no entries */
	struct pe_read_result er = {.err = -PARLEY_ETRIMMED, .first_seq = 5,
				    .last_seq = 4};
	n = tail_xres_encode(p, sizeof p, 9, TAIL_XRES_DONE, &er);
	cr_assert_eq(n, TAIL_HDR + TAIL_XRES_HDR);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, p, n, &d), 0);
	cr_assert(d.err == -PARLEY_ETRIMMED && d.count == 0 &&
		  d.first_seq == 5 && d.last_seq == 4);
	le_put32(p + TAIL_HDR + 4, 1); /* an error with a count */
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, p, n, &d),
		     -PARLEY_EPROTO);
	le_put32(p + TAIL_HDR + 4, 0);
	le_put32(p + TAIL_HDR, 5); /* a positive err */
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, p, n, &d),
		     -PARLEY_EPROTO);
}

Test(tail_xread, an_answer_is_cut_at_its_byte_bound)
{
	/* three entries of 700 KiB: two fit TAIL_XREAD_MAX_BYTES */
	uint32_t big = 700u * 1024u;
	uint8_t *pl = calloc(1, big);
	cr_assert(pl);
	struct pe_entry ents[3];
	const uint32_t lens[3] = {big, big, big};
	struct pe_read_result r = xresult(ents, 3, lens, pl);
	uint32_t sz = tail_xres_size(&r);
	cr_assert_eq(sz, TAIL_HDR + TAIL_XRES_HDR + 2 * (TAIL_XRES_ENT + big));
	uint8_t *out = malloc(sz);
	cr_assert(out);
	uint32_t n = tail_xres_encode(out, sz, 1, TAIL_XRES_DONE, &r);
	cr_assert_eq(n, sz);
	struct tail_msg d;
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, out, n, &d), 0);
	cr_assert(d.count == 2 && !d.end, "count %u end %d", d.count, d.end);
	/* one entry as large as an entry can be always fits */
	const uint32_t one[1] = {PE_MAX_PAYLOAD};
	uint8_t *mp = calloc(1, PE_MAX_PAYLOAD);
	cr_assert(mp);
	r = xresult(ents, 1, one, mp);
	cr_assert_eq(tail_xres_size(&r),
		     TAIL_HDR + TAIL_XRES_HDR + TAIL_XRES_ENT + PE_MAX_PAYLOAD);
	free(mp);
	free(out);
	free(pl);
}

static void xread_cb(void *arg, const struct pe_read_result *r)
{
	cr_assert_eq(arg, (void *)&io);
	io.nxread_cb++;
	io.xres = *r;
	for (uint32_t i = 0; i < r->count && i < 8; i++) {
		cr_assert_leq(r->entries[i].len, sizeof io.xpay[i]);
		memcpy(io.xpay[i], r->entries[i].payload, r->entries[i].len);
	}
	io.xres.entries = NULL; /* not valid after the call */
}

static uint64_t last_xread_id(uint64_t to)
{
	struct tail_msg d;
	cr_assert_gt(io.nsent, 0);
	struct sent *s = &io.sent[io.nsent - 1];
	cr_assert_eq(s->to, to);
	cr_assert_eq(s->type, TAIL_FRAME_XREAD);
	cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, s->data, s->len, &d), 0);
	cr_assert(d.op == TAIL_OP_XREAD && d.klen == 7 &&
		  !memcmp(d.key, "c/d:a:b", 7) && d.seq == UINT64_MAX &&
		  d.dir == PE_BACKWARD && d.limit == 3 && d.lin);
	return d.id;
}

static void xres(struct tail_relay *tr, uint64_t from, uint64_t id,
		 uint8_t reason, const struct pe_read_result *r)
{
	uint8_t p[2048];
	uint32_t n = tail_xres_encode(p, sizeof p, id, reason, r);
	cr_assert_gt(n, 0);
	tail_relay_on_frame(tr, from, TAIL_FRAME_XREAD, p, n);
}

Test(tail_xread, asked_of_the_leader_again_until_it_answers)
{
	struct tail_relay *tr = relay();
	io.key_node = 0; /* no leader known: the read waits for one */
	cr_assert_eq(tail_relay_xread(tr, &xq, xread_cb, &io), 0);
	cr_assert_eq(io.nsent, 0);
	tail_relay_tick(tr);
	cr_assert(io.nsent == 0 && io.nxread_cb == 0);
	io.key_node = 6;
	io.xread_link = 0; /* its link is down: still waiting */
	tail_relay_tick(tr);
	cr_assert_eq(io.nsent, 0);
	io.xread_link = 1;
	tail_relay_tick(tr);
	uint64_t id = last_xread_id(6);
	/* that node does not hold it any more: asked again, of the leader
	 * as then known */
	struct pe_read_result nl = {.err = -PARLEY_ENOTLEADER};
	xres(tr, 6, id, TAIL_XRES_RETRY, &nl);
	cr_assert_eq(io.nxread_cb, 0);
	io.key_node = 8;
	tail_relay_tick(tr);
	cr_assert_eq(last_xread_id(8), id);
	/* the old node's late answer is not taken */
	uint8_t pl[16] = "abcdefghijklmno";
	struct pe_entry ents[2];
	const uint32_t lens[2] = {3, 5};
	struct pe_read_result ok = xresult(ents, 2, lens, pl);
	xres(tr, 6, id, TAIL_XRES_DONE, &ok);
	cr_assert_eq(io.nxread_cb, 0);
	/* no answer within TAIL_READ_TIMEOUT_MS: asked again */
	io.now += TAIL_READ_TIMEOUT_MS - 1;
	tail_relay_tick(tr);
	cr_assert_eq(io.nsent, 2);
	io.now += 1;
	tail_relay_tick(tr);
	cr_assert(io.nsent == 3 && last_xread_id(8) == id);
	/* the link drops: asked again at the tick */
	tail_relay_link_down(tr, 8);
	io.key_node = 9;
	tail_relay_tick(tr);
	cr_assert_eq(last_xread_id(9), id);
	/* a frame that did not leave: asked again too */
	tail_relay_on_unsent(tr, 9, TAIL_FRAME_XREAD, io.sent[3].data,
			     io.sent[3].len);
	tail_relay_tick(tr);
	cr_assert(io.nsent == 5 && last_xread_id(9) == id);
	/* the result, once, with entries the relay owns */
	xres(tr, 9, id, TAIL_XRES_DONE, &ok);
	cr_assert(io.nxread_cb == 1 && io.xres.err == 0 &&
		  io.xres.count == 2 && io.xres.first_seq == 2 &&
		  io.xres.last_seq == 10 && io.xres.end);
	cr_assert(!memcmp(io.xpay[0], "abc", 3) && !memcmp(io.xpay[1], "abcde", 5));
	xres(tr, 9, id, TAIL_XRES_DONE, &ok);
	cr_assert_eq(io.nxread_cb, 1);
	/* a final error is delivered as the engine's would be */
	cr_assert_eq(tail_relay_xread(tr, &xq, xread_cb, &io), 0);
	struct pe_read_result tr_ = {.err = -PARLEY_ETRIMMED, .first_seq = 4,
				     .last_seq = 3};
	xres(tr, 9, last_xread_id(9), TAIL_XRES_DONE, &tr_);
	cr_assert(io.nxread_cb == 2 && io.xres.err == -PARLEY_ETRIMMED &&
		  io.xres.count == 0 && io.xres.first_seq == 4);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert(st.xreads == 2 && st.xread_giveups == 0 && st.reads == 0 &&
		  st.checks == 0);
	done(tr);
}

Test(tail_xread, given_up_after_its_bound)
{
	struct tail_relay *tr = relay();
	io.key_node = 6;
	cr_assert_eq(tail_relay_xread(tr, &xq, xread_cb, &io), 0);
	uint64_t id = last_xread_id(6);
	for (uint32_t t = 0; t + TAIL_READ_TIMEOUT_MS < TAIL_XREAD_GIVEUP_MS;
	     t += TAIL_READ_TIMEOUT_MS) {
		io.now += TAIL_READ_TIMEOUT_MS;
		tail_relay_tick(tr);
		cr_assert_eq(io.nxread_cb, 0);
	}
	io.now += TAIL_READ_TIMEOUT_MS;
	tail_relay_tick(tr);
	cr_assert(io.nxread_cb == 1 && io.xres.err == -PARLEY_EAGAIN);
	/* a late answer finds nothing */
	uint8_t pl[4] = "abc";
	struct pe_entry ents[1];
	const uint32_t lens[1] = {3};
	struct pe_read_result ok = xresult(ents, 1, lens, pl);
	xres(tr, 6, id, TAIL_XRES_DONE, &ok);
	cr_assert_eq(io.nxread_cb, 1);
	/* a leader that became a build without XREAD: refused NOTLEADER
	 * (the request's fallback) at the next tick */
	io.key_node = 0;
	cr_assert_eq(tail_relay_xread(tr, &xq, xread_cb, &io), 0);
	io.key_node = 6;
	io.xread_link = -PARLEY_EVERSION;
	tail_relay_tick(tr);
	cr_assert(io.nxread_cb == 2 && io.xres.err == -PARLEY_ENOTLEADER);
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert(st.xreads == 2 && st.xread_giveups == 2);
	done(tr);
}

Test(tail_xread, an_older_build_is_not_asked_and_reads_are_bounded)
{
	struct tail_relay *tr = relay();
	io.key_node = 6;
	io.xread_link = -PARLEY_EVERSION;
	cr_assert_eq(tail_relay_xread(tr, &xq, xread_cb, &io), -PARLEY_EVERSION);
	cr_assert(io.nsent == 0 && io.nxread_cb == 0);
	struct pe_read_req bad = xq;
	bad.limit = 0;
	cr_assert_eq(tail_relay_xread(tr, &bad, xread_cb, &io), -PARLEY_EINVAL);
	bad = xq;
	bad.klen = PE_MAX_KEY + 1;
	cr_assert_eq(tail_relay_xread(tr, &bad, xread_cb, &io), -PARLEY_EINVAL);
	/* waiting ones count too: at most 4 x TAIL_MAX_READS in all */
	io.key_node = 0;
	io.xread_link = 1;
	for (uint32_t i = 0; i < TAIL_MAX_READS * 4u; i++)
		cr_assert_eq(tail_relay_xread(tr, &xq, xread_cb, &io), 0);
	cr_assert_eq(tail_relay_xread(tr, &xq, xread_cb, &io), -PARLEY_EFULL);
	cr_assert_eq(io.nxread_cb, 0);
	done(tr);
}

Test(tail_xread, a_read_is_served_here_or_answered_retry)
{
	struct tail_relay *tr = relay();
	uint8_t p[2048];
	struct tail_msg m = {.op = TAIL_OP_XREAD, .id = 5, .seq = 1,
			     .limit = 10, .dir = PE_FORWARD,
			     .key = (const uint8_t *)"c/d:a:b", .klen = 7};
	uint32_t n = tail_hdr_encode(p, &m);
	tail_relay_on_frame(tr, 4, TAIL_FRAME_XREAD, p, n);
	cr_assert(io.nxread == 1 && io.xread_id[0] == 5);
	cr_assert(io.xq.klen == 7 && io.xq.from == 1 && io.xq.limit == 10 &&
		  io.xq.dir == PE_FORWARD && !io.xq.linearizable);
	cr_assert_eq(io.nsent, 0); /* the answer comes from the read's callback */
	uint8_t pl[8] = "xyz";
	struct pe_entry ents[1];
	const uint32_t lens[1] = {3};
	struct pe_read_result ok = xresult(ents, 1, lens, pl);
	tail_relay_xread_answer(tr, 4, 5, &ok);
	struct pe_read_result nl = {.err = -PARLEY_ENOTLEADER};
	tail_relay_xread_answer(tr, 4, 6, &nl); /* not held here */
	io.xread_rc = -PARLEY_EFULL; /* could not be started */
	tail_relay_on_frame(tr, 4, TAIL_FRAME_XREAD, p, n);
	struct pe_read_result tr_ = {.err = -PARLEY_ETRIMMED};
	tail_relay_xread_answer(tr, 4, 7, &tr_); /* final */
	cr_assert_eq(io.nsent, 4);
	const uint8_t want[4] = {TAIL_XRES_DONE, TAIL_XRES_RETRY,
				 TAIL_XRES_RETRY, TAIL_XRES_DONE};
	const uint32_t cnt[4] = {1, 0, 0, 0};
	for (int i = 0; i < 4; i++) {
		struct tail_msg d;
		cr_assert(io.sent[i].to == 4 &&
			  io.sent[i].type == TAIL_FRAME_XREAD);
		cr_assert_eq(tail_msg_decode(TAIL_FRAME_XREAD, io.sent[i].data,
					     io.sent[i].len, &d), 0);
		cr_assert(d.op == TAIL_OP_XREAD_RES && d.reason == want[i] &&
			  d.count == cnt[i], "answer %d", i);
	}
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	cr_assert_eq(st.xreads_served, 4);
	done(tr);
}
