/*
 * conn_req_send.c — SEND: the request glue of the hot path, and the only
 * producer of SEND_ACK.
 *
 * Rule of the conn_req*.c files (conn_req.h): a file holds one feature's
 * request glue and nothing else: it maps a decoded request onto its
 * service call and the result onto its reply or ERROR, keeps no state of
 * its own, and touches the connection only to count the request in
 * flight (c->inflight) and through the calls conn_req.h declares.
 * Transport, framing, dispatch and per-connection state are conn.c's; the
 * chat rules (membership, keys, deduplication, fan-out) chat.c's.
 *
 * DURABLE BEFORE ACK: a SEND_ACK is encoded only inside send_cb(), which
 * chat_send runs from the engine's append callback, and the engine runs
 * that only after the entry's WAL batch is fdatasync'd (on this node, or
 * on a quorum when replicated: engine/parley_engine.h, "Durability
 * invariant"). No other code path produces SEND_ACK; a refusal before the
 * append, or a failed append, is an ERROR.
 *
 * Stage timing (srv.h): recv and submit are taken here on the loop,
 * durable in send_cb; the reply stage is taken by conn.c when the
 * LM_FRAME carrying the ack is written (u.frame.t0_ns / t_durable_ns).
 *
 * Ownership: struct send_ctx is malloc'd by conn_req_send and freed by
 * send_cb (or at once when chat_send refuses the request).
 * Threads: conn_req_send on the connection's loop; send_cb on the engine
 * shard of the conversation.
 */
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "conn_req.h"

struct send_ctx {
	struct conn_ref to;
	struct srv_stages *st;
	uint32_t req_id;
	uint64_t t0_ns;          /* decoded; the chat service called next */
	uint8_t cmid[16];
	uint16_t clen;
	char conv[];
};

/* Runs on the engine shard after the message is durable (chat_send calls
 * it from the engine's append callback): the only producer of SEND_ACK. */
static void send_cb(void *arg, const struct chat_send_result *r)
{
	struct send_ctx *x = arg;
	struct lmsg *m;
	uint64_t now = parley_mono_ns();
	srv_hist_since(&x->st->send[SRV_SEND_DURABLE], x->t0_ns, now);
	if (r->err) {
		m = conn_error_msg(x->req_id, wire_code(r->err),
			           r->err == -PARLEY_EFULL ? 100 : 0,
			           parley_strerror(r->err));
	} else {
		struct parley_msg am = {.type = PARLEY_T_SEND_ACK};
		am.send_ack.conv = (struct parley_str){x->conv, x->clen};
		memcpy(am.send_ack.client_msg_id, x->cmid, 16);
		am.send_ack.seq = r->seq;
		am.send_ack.server_ts_ms = r->ts_ms;
		am.send_ack.flags = r->duplicate ? PARLEY_ACKF_DUPLICATE : 0;
		m = conn_frame_msg(LM_FRAME, x->req_id, &am);
		if (m) {
			m->u.frame.t0_ns = x->t0_ns;
			m->u.frame.t_durable_ns = now;
			m->u.frame.ack = r->duplicate ? LM_ACK_DUPLICATE : LM_ACK_NEW;
		}
	}
	conn_post_reply(&x->to, m, x->req_id);
	free(x);
}

void conn_req_send(struct conn *c, uint32_t rid, const struct parley_send *m)
{
	if (conn_limited(c, rid, RATELIMIT_SEND))
		return;
	struct srv *s = S(c);
	if (m->body.len > s->lim.max_body) {
		conn_error(c, rid, PARLEY_ETOOBIG, false, 0, "body over max_body");
		return;
	}
	struct send_ctx *x = malloc(sizeof *x + m->conv.len);
	if (!x) {
		conn_error(c, rid, PARLEY_ENOMEM, false, 100, "out of memory");
		return;
	}
	uint64_t t_dec = parley_mono_ns();
	srv_hist_since(&s->stages.send[SRV_SEND_RECV], c->last_rx_ns, t_dec);
	*x = (struct send_ctx){.to = c->sk.ref, .st = &s->stages,
			       .req_id = rid, .t0_ns = t_dec,
			       .clen = m->conv.len};
	memcpy(x->cmid, m->client_msg_id, 16);
	memcpy(x->conv, m->conv.p, m->conv.len);
	struct chat_send_req q = {.conv = m->conv.p, .conv_len = m->conv.len,
				  .sender = c->id->user,
				  .sender_len = c->id->ulen,
				  .content_type = m->content_type,
				  .body = m->body.p, .body_len = m->body.len};
	memcpy(q.client_msg_id, m->client_msg_id, 16);
	int rc = chat_send(s->chat, &q, send_cb, x);
	if (rc) {
		free(x);
		conn_error(c, rid, wire_code(rc), false,
			   rc == -PARLEY_EFULL || rc == -PARLEY_ENOMEM ? 50 : 0,
			   rc == -PARLEY_EPERM	    ? "not a member"
			   : rc == -PARLEY_ENOTFOUND ? "no such conversation"
			   : rc == -PARLEY_EFULL     ? "server busy"
						     : parley_strerror(rc));
		return;
	}
	srv_hist_since(&s->stages.send[SRV_SEND_SUBMIT], t_dec, parley_mono_ns());
	ctr_add(&s->ctr.sends, 1);
	c->inflight++;
}
