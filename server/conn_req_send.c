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
 * Ownership: one block per SEND, malloc'd by conn_req_send: the SEND_ACK
 * lmsg at its head, struct send_ctx after it. send_cb posts the lmsg (the
 * loop frees the block once the ack is written) or, on an error, frees
 * the block itself; conn_req_send frees it at once when chat_send
 * refuses the request.
 * Threads: conn_req_send on the connection's loop; send_cb on the engine
 * shard of the conversation (or, for a SEND a remote existence check
 * failed, the peer thread: chat.h).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "conn_req.h"

/* One allocation per SEND, made and freed on the connection's loop: the
 * SEND_ACK message (its head, so the loop's free() of the posted message
 * frees the whole block) with room for the encoded ack, then this
 * context. send_cb (on the engine shard) encodes the ack in place and
 * posts it; an error reply is a message of its own and the block is
 * freed there. A block made on one thread and freed on another costs
 * glibc an arena lock each way; this way a SEND makes one fewer
 * allocation and frees nothing across threads. */
struct send_ctx {
	struct conn_ref to;
	struct srv_stages *st;
	struct lmsg *ack;        /* the block's head: SEND_ACK, ack_len bytes */
	uint32_t ack_len;
	uint32_t req_id;
	uint64_t t0_ns;          /* decoded; the chat service called next */
	uint8_t cmid[16];
	uint16_t clen;
	char conv[];
};

/* Offset of the send_ctx in its block: after the ack message's bytes. */
static size_t send_ctx_off(uint32_t ack_len)
{
	size_t a = _Alignof(max_align_t);
	return (sizeof(struct lmsg) + ack_len + a - 1) / a * a;
}

/* Runs on the engine shard after the message is durable (chat_send calls
 * it from the engine's append callback): the only producer of SEND_ACK. */
static void send_cb(void *arg, const struct chat_send_result *r)
{
	struct send_ctx *x = arg;
	struct lmsg *m = NULL;
	uint64_t now = r->t_durable_ns ? r->t_durable_ns : parley_mono_ns();
	srv_hist_since(&x->st->send[SRV_SEND_DURABLE], x->t0_ns, now);
	struct conn_ref to = x->to;
	uint32_t req_id = x->req_id;
	if (r->err) {
		m = conn_error_msg(req_id, wire_code(r->err),
			           0,
			           parley_strerror(r->err));
		free(x->ack); /* the block, x included */
	} else {
		struct parley_msg am = {.type = PARLEY_T_SEND_ACK};
		am.send_ack.conv = (struct parley_str){x->conv, x->clen};
		memcpy(am.send_ack.client_msg_id, x->cmid, 16);
		am.send_ack.seq = r->seq;
		am.send_ack.server_ts_ms = r->ts_ms;
		am.send_ack.flags = r->duplicate ? PARLEY_ACKF_DUPLICATE : 0;
		m = x->ack;
		uint32_t n = x->ack_len;
		uint64_t t0 = x->t0_ns;
		memset(m, 0, sizeof *m); /* as lmsg_new */
		m->kind = LM_FRAME;
		m->len = n;
		int rc = parley_proto_encode(m->data, n, req_id, &am);
		/* its size was taken from the same conversation id */
		PARLEY_ASSERT(rc == (int)n);
		m->u.frame.t0_ns = t0;
		m->u.frame.t_durable_ns = now;
		m->u.frame.ack = r->duplicate ? LM_ACK_DUPLICATE : LM_ACK_NEW;
	}
	/* x lives in m's block: not touched once posted */
	conn_post_reply(&to, m, req_id);
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
	struct parley_msg am = {.type = PARLEY_T_SEND_ACK};
	am.send_ack.conv = m->conv;
	int an = parley_proto_size(&am);
	if (an < 0) { /* the conversation id was decoded: cannot happen */
		conn_error(c, rid, PARLEY_EINVAL, false, 0, "bad conversation id");
		return;
	}
	size_t off = send_ctx_off((uint32_t)an);
	struct lmsg *blk = malloc(off + sizeof(struct send_ctx) + m->conv.len);
	if (!blk) {
		conn_error(c, rid, PARLEY_ENOMEM, false, SRV_NOMEM_RETRY_MS,
			   "out of memory");
		return;
	}
	struct send_ctx *x = (struct send_ctx *)((uint8_t *)blk + off);
	uint64_t t_dec = parley_mono_ns();
	srv_hist_since(&s->stages.send[SRV_SEND_RECV], c->last_rx_ns, t_dec);
	*x = (struct send_ctx){.to = c->sk.ref, .st = &s->stages,
			       .ack = blk, .ack_len = (uint32_t)an,
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
		free(blk);
		conn_error(c, rid, wire_code(rc), false,
			   0,
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
