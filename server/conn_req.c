/*
 * conn_req.c — a connection's per-feature requests that are one chat
 * service call and one reply: EDIT / DELETE, RETENTION, HISTORY,
 * CONV_OPEN, CONV_LIST. Each maps the request onto its chat_* call and the
 * result onto its reply or ERROR; the chat rules are the service's
 * (chat.h), transport, framing, dispatch and the connection's state are
 * conn.c's. Shared helpers: conn_req.h.
 *
 * DURABLE BEFORE ACK: EDIT_ACK / DELETE_ACK are encoded only in edit_cb,
 * which the chat service runs after the entry and its index entry are
 * durable; CONV's reply likewise after the conversation's open is durable.
 *
 * Ownership: each callback context is malloc'd by the handler and freed by
 * the callback that finishes it.
 * Threads: handlers on the connection's loop; callbacks on engine shard
 * threads (retention_cb on the retention sweeper's).
 */
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "conn_req.h"

/* EDIT / DELETE ------------------------------------------------------------------------ */

struct edit_ctx {
	struct conn_ref to;
	struct srv *s;
	uint32_t req_id;
	uint16_t kind;
	uint64_t ref_seq;
	uint8_t cmid[16];
	uint16_t clen;
	char conv[];
};

/* Runs on the engine shard after the EDIT / DELETE entry and its index
 * entry are durable (chat_edit's contract): the only producer of
 * EDIT_ACK / DELETE_ACK. */
static void edit_cb(void *arg, const struct chat_edit_result *r)
{
	struct edit_ctx *x = arg;
	struct lmsg *m;
	if (r->err) {
		const char *why =
			r->err == -PARLEY_EPERM	      ? "not the sender of that message"
			: r->err == -PARLEY_ENOTFOUND ? "no such message"
			: r->err == -PARLEY_EINVAL    ? "that entry is not a message"
			: r->err == -PARLEY_EEXPIRED
				? (x->kind == PARLEY_EV_EDIT
					   ? "edit window has passed"
					   : "delete window has passed")
			: r->err == -PARLEY_EDELETED ? "the message was deleted"
						     : parley_strerror(r->err);
		m = conn_error_msg(x->req_id, wire_code(r->err),
			           r->err == -PARLEY_EFULL ? 100 : 0, why);
	} else {
		struct parley_msg am = {.type = x->kind == PARLEY_EV_EDIT
							? PARLEY_T_EDIT_ACK
							: PARLEY_T_DELETE_ACK};
		am.edit_ack.conv = (struct parley_str){x->conv, x->clen};
		memcpy(am.edit_ack.client_msg_id, x->cmid, 16);
		am.edit_ack.seq = r->seq;
		am.edit_ack.server_ts_ms = r->ts_ms;
		am.edit_ack.ref_seq = x->ref_seq;
		am.edit_ack.flags = r->duplicate ? PARLEY_ACKF_DUPLICATE : 0;
		m = conn_frame_msg(LM_FRAME, x->req_id, &am);
		ctr_add(x->kind == PARLEY_EV_EDIT ? &x->s->ctr.edits
						  : &x->s->ctr.deletes, 1);
	}
	conn_post_reply(&x->to, m, x->req_id);
	free(x);
}

void conn_req_edit(struct conn *c, uint32_t rid, uint16_t kind,
		   struct parley_str conv, const uint8_t cmid[16],
		   uint64_t ref_seq, uint16_t ct, struct parley_bytes body)
{
	if (conn_limited(c, rid, RATELIMIT_SEND))
		return;
	struct srv *s = S(c);
	if (body.len > s->lim.max_body) {
		conn_error(c, rid, PARLEY_ETOOBIG, false, 0, "body over max_body");
		return;
	}
	struct edit_ctx *x = malloc(sizeof *x + conv.len);
	if (!x) {
		conn_error(c, rid, PARLEY_ENOMEM, false, 100, "out of memory");
		return;
	}
	*x = (struct edit_ctx){.to = c->sk.ref, .s = s, .req_id = rid,
			       .kind = kind, .ref_seq = ref_seq,
			       .clen = conv.len};
	memcpy(x->cmid, cmid, 16);
	memcpy(x->conv, conv.p, conv.len);
	struct chat_edit_req q = {.kind = kind, .conv = conv.p,
				  .conv_len = conv.len, .user = c->id->user,
				  .user_len = c->id->ulen, .ref_seq = ref_seq,
				  .content_type = ct, .body = body.p,
				  .body_len = body.len,
				  .window_ms = kind == PARLEY_EV_EDIT
						       ? s->lim.edit_window_ms
						       : s->lim.delete_window_ms};
	memcpy(q.client_msg_id, cmid, 16);
	int rc = chat_edit(s->chat, &q, edit_cb, x);
	if (rc) {
		free(x);
		conn_error(c, rid, wire_code(rc), false,
			   rc == -PARLEY_EFULL || rc == -PARLEY_ENOMEM ? 50 : 0,
			   rc == -PARLEY_EPERM	    ? "not a member"
			   : rc == -PARLEY_ENOTFOUND ? "no such conversation or message"
			   : rc == -PARLEY_EFULL     ? "server busy"
						     : parley_strerror(rc));
		return;
	}
	c->inflight++;
}

/* RETENTION ------------------------------------------------------------------------------ */

struct ret_ctx {
	struct conn_ref to;
	uint32_t req_id;
};

/* The sweeper thread (chat_retention.c) answers. */
static void retention_cb(void *arg, int err, const struct parley_msg *ok)
{
	struct ret_ctx *x = arg;
	struct lmsg *m = err ? conn_error_msg(x->req_id, wire_code(err),
					      err == -PARLEY_EFULL ? 100 : 0,
					      parley_strerror(err))
			     : conn_frame_msg(LM_FRAME, x->req_id, ok);
	conn_post_reply(&x->to, m, x->req_id);
	free(x);
}

void conn_req_retention(struct conn *c, uint32_t rid,
			const struct parley_retention *m)
{
	struct srv *s = S(c);
	if (!s->ret) {
		conn_error(c, rid, PARLEY_EAGAIN, false, 1000, "starting");
		return;
	}
	struct ret_ctx *x = malloc(sizeof *x);
	if (!x) {
		conn_error(c, rid, PARLEY_ENOMEM, false, 100, "out of memory");
		return;
	}
	*x = (struct ret_ctx){.to = c->sk.ref, .req_id = rid};
	struct chat_retention_req q = {.conv = m->conv.p, .conv_len = m->conv.len,
				       .user = c->id->user,
				       .user_len = c->id->ulen, .flags = m->flags,
				       .max_age_ms = m->max_age_ms,
				       .max_count = m->max_count};
	int rc = chat_retention_request(s->ret, &q, retention_cb, x);
	if (rc) {
		free(x);
		conn_error(c, rid, wire_code(rc), false,
			   rc == -PARLEY_EFULL || rc == -PARLEY_ENOMEM ? 100 : 0,
			   rc == -PARLEY_EPERM	    ? "not a member"
			   : rc == -PARLEY_ENOTFOUND ? "no such conversation"
						     : parley_strerror(rc));
		return;
	}
	c->inflight++;
}

/* HISTORY ------------------------------------------------------------------------------ */

void conn_req_history(struct conn *c, uint32_t rid,
		      const struct parley_history *m)
{
	if (conn_limited(c, rid, RATELIMIT_HISTORY))
		return;
	struct srv *s = S(c);
	struct reply_ctx *x = conn_reply_ctx_new(c, rid);
	if (!x) {
		conn_refused(c, rid, -PARLEY_ENOMEM);
		return;
	}
	c->inflight++; /* before: an empty page is answered at once */
	int rc = chat_history(s->chat, c->id->user, c->id->ulen, m->conv.p,
			      m->conv.len, m->before_seq, m->limit,
			      s->lim.max_frame, conn_reply_cb, x);
	if (rc) { /* not a member, no such conversation, busy */
		c->inflight--;
		free(x);
		conn_refused(c, rid, rc);
		return;
	}
	ctr_add(&s->ctr.history, 1);
}

/* GROUP_CATCHUP (read fan-out of large groups, chat_fanout_read.c) ------------------- */

void conn_req_group_catchup(struct conn *c, uint32_t rid,
			    const struct parley_group_catchup *m)
{
	if (conn_limited(c, rid, RATELIMIT_HISTORY))
		return;
	struct srv *s = S(c);
	struct reply_ctx *x = conn_reply_ctx_new(c, rid);
	if (!x) {
		conn_refused(c, rid, -PARLEY_ENOMEM);
		return;
	}
	c->inflight++;
	int rc = chat_group_catchup(s->chat, c->id->user, c->id->ulen, m->conv.p,
				    m->conv.len, m->from_seq, m->limit,
				    s->lim.max_frame, conn_reply_cb, x);
	if (rc) { /* not a group, not a member, busy */
		c->inflight--;
		free(x);
		conn_refused(c, rid, rc);
		return;
	}
	ctr_add(&s->ctr.history, 1);
}

/* CONV_OPEN ------------------------------------------------------------------------------ */

/* Engine thread: the conversation is open (durable) or failed. */
static void conv_open_cb(void *arg, const struct chat_conv_info *r)
{
	struct reply_ctx *x = arg;
	/* a parley_msg holds room for 1024 members: not on the stack */
	struct parley_msg *m = r->err ? NULL : malloc(sizeof *m);
	if (m)
		chat_conv_msg(r, m);
	if (r->err)
		conn_post_reply(&x->to,
			        conn_error_msg(x->req_id, wire_code(r->err), 50,
				               parley_strerror(r->err)),
			        x->req_id);
	else
		conn_post_msg(&x->to, x->req_id,
			      m ? 0 : -PARLEY_ENOMEM, m);
	free(m);
	free(x);
}

void conn_req_conv_open(struct conn *c, uint32_t rid,
			const struct parley_conv_open *m)
{
	struct reply_ctx *x = conn_reply_ctx_new(c, rid);
	if (!x) {
		conn_error(c, rid, PARLEY_ENOMEM, false, 100, "out of memory");
		return;
	}
	int rc = chat_conv_open(S(c)->chat, c->id->user, c->id->ulen,
				m->peer.p, m->peer.len, conv_open_cb, x);
	if (rc) {
		free(x);
		conn_error(c, rid, wire_code(rc), false, 0,
			   rc == -PARLEY_EINVAL
				   ? "invalid peer: a user id other than yours "
				     "(1-120 bytes: letters, digits and . _ - @ + = |, "
				     "starting with a letter or digit)"
				   : parley_strerror(rc));
		return;
	}
	c->inflight++;
}

/* CONV_LIST ---------------------------------------------------------------------------- */

void conn_req_conv_list(struct conn *c, uint32_t rid,
			const struct parley_conv_list *m)
{
	struct reply_ctx *x = conn_reply_ctx_new(c, rid);
	int rc = x ? chat_conv_list_page(S(c)->chat, c->id->user, c->id->ulen,
					 m->limit, m->before_ts_ms,
					 m->before_conv.p, m->before_conv.len,
					 conn_reply_cb, x)
		   : -PARLEY_ENOMEM;
	if (rc) {
		free(x);
		if (rc == -PARLEY_ENOMEM || rc == -PARLEY_EINVAL)
			conn_error(c, rid, PARLEY_ENOMEM, false, 100, "out of memory");
		else
			conn_error(c, rid, wire_code(rc), false, 50, "server busy");
		return;
	}
	c->inflight++;
}

