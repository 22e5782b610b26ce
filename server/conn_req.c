/*
 * conn_req.c — the glue every request handler shares (reply contexts,
 * posting a chat service reply, answering a refusal), and the requests
 * on a conversation's messages and the conversation list that are one
 * chat service call and one reply: HISTORY and GROUP_CATCHUP (reads),
 * EDIT / DELETE, RETENTION, CONV_OPEN, CONV_LIST.
 *
 * Rule of the conn_req*.c files (conn_req.h): a file holds one feature's
 * request glue and nothing else: it maps a decoded request onto its
 * service call and the result onto its reply or ERROR, keeps no state of
 * its own, and touches the connection only to count the request in
 * flight (c->inflight) and through the calls conn_req.h declares. The
 * other features: SEND in conn_req_send.c, SYNC / EVENT_ACK in
 * conn_req_sync.c, groups in conn_req_group.c, READ_MARKER / RECEIPTS in
 * conn_req_rcpt.c, TYPING / PRESENCE_* in conn_req_presence.c. The chat
 * rules are the service's (chat.h); transport, framing, dispatch and the
 * connection's state are conn.c's.
 *
 * DURABLE BEFORE ACK: EDIT_ACK / DELETE_ACK are encoded only in edit_cb,
 * which the chat service runs after the entry and its index entry are
 * durable; CONV's reply likewise after the conversation's open is durable.
 *
 * Ownership: each callback context is malloc'd by the handler and freed by
 * the callback that finishes it (or by the handler when the service
 * refuses the request).
 * Threads: handlers on the connection's loop; callbacks on engine shard
 * threads (retention_cb on the retention sweeper's; conn_reply_cb also on
 * the loop, for a reply that needs no read).
 */
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "conn_req.h"

/* Shared glue ------------------------------------------------------------------------- */

/* A reply of the chat service, encoded on the engine thread and posted
 * (an error becomes ERROR with the wire code of errmap.c). */
void conn_post_msg(const struct conn_ref *to, uint32_t req_id, int err,
		   const struct parley_msg *m)
{
	struct lmsg *lm = err ? conn_error_msg(req_id, wire_code(err), 0,
					            parley_strerror(err))
			      : conn_frame_msg(LM_FRAME, req_id, m);
	conn_post_reply(to, lm, req_id);
}

struct reply_ctx *conn_reply_ctx_new(struct conn *c, uint32_t rid)
{
	struct reply_ctx *x = malloc(sizeof *x);
	if (x)
		*x = (struct reply_ctx){.to = c->sk.ref, .req_id = rid};
	return x;
}

/* A request the chat service refused before starting it. */
void conn_refused(struct conn *c, uint32_t rid, int rc)
{
	conn_error(c, rid, wire_code(rc), false,
		   0,
		   rc == -PARLEY_EPERM	     ? "not a member"
		   : rc == -PARLEY_ENOTFOUND ? "no such conversation"
		   : rc == -PARLEY_EFULL     ? "server busy"
		   : rc == -PARLEY_ENOMEM    ? "out of memory"
					     : parley_strerror(rc));
}

/* Engine thread (HISTORY, GROUP_CATCHUP, CONV_LIST; or the loop): the
 * reply is ready. */
void conn_reply_cb(void *arg, int err, const struct parley_msg *m)
{
	struct reply_ctx *x = arg;
	conn_post_msg(&x->to, x->req_id, err, m);
	free(x);
}


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
			           0, why);
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
		conn_error(c, rid, PARLEY_ENOMEM, false, SRV_NOMEM_RETRY_MS,
			   "out of memory");
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
	conn_req_started(c, rid, rc, x,
			 0,
			 rc == -PARLEY_EPERM	  ? "not a member"
			 : rc == -PARLEY_ENOTFOUND ? "no such conversation or message"
			 : rc == -PARLEY_EFULL	  ? "server busy"
						  : parley_strerror(rc));
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
					      0,
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
		conn_error(c, rid, PARLEY_ENOMEM, false, SRV_NOMEM_RETRY_MS,
			   "out of memory");
		return;
	}
	*x = (struct ret_ctx){.to = c->sk.ref, .req_id = rid};
	struct chat_retention_req q = {.conv = m->conv.p, .conv_len = m->conv.len,
				       .user = c->id->user,
				       .user_len = c->id->ulen, .flags = m->flags,
				       .max_age_ms = m->max_age_ms,
				       .max_count = m->max_count};
	int rc = chat_retention_request(s->ret, &q, retention_cb, x);
	conn_req_started(c, rid, rc, x,
			 0,
			 rc == -PARLEY_EPERM	  ? "not a member"
			 : rc == -PARLEY_ENOTFOUND ? "no such conversation"
						  : parley_strerror(rc));
}

/* HISTORY and GROUP_CATCHUP (read fan-out of large groups, chat_fanout_read.c) ------- */

/* A page read of the conversation's messages (chat_history,
 * chat_group_catchup: the same arguments, a different start): within the
 * history rate limit, answered by conn_reply_cb. */
typedef int (*page_read_fn)(struct chat *ch, const char *user, size_t ulen,
			    const char *conv, size_t clen, uint64_t seq,
			    uint16_t limit, uint32_t max_frame,
			    chat_history_cb cb, void *arg);

static void req_page(struct conn *c, uint32_t rid, page_read_fn read,
		     struct parley_str conv, uint64_t seq, uint16_t limit)
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
	int rc = read(s->chat, c->id->user, c->id->ulen, conv.p, conv.len, seq,
		      limit, s->lim.max_frame, conn_reply_cb, x);
	if (rc) { /* not a member, no such conversation, not a group, busy */
		c->inflight--;
		free(x);
		conn_refused(c, rid, rc);
		return;
	}
	ctr_add(&s->ctr.history, 1);
}

void conn_req_history(struct conn *c, uint32_t rid,
		      const struct parley_history *m)
{
	req_page(c, rid, chat_history, m->conv, m->before_seq, m->limit);
}

void conn_req_group_catchup(struct conn *c, uint32_t rid,
			    const struct parley_group_catchup *m)
{
	req_page(c, rid, chat_group_catchup, m->conv, m->from_seq, m->limit);
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
			        conn_error_msg(x->req_id, wire_code(r->err),
				       0,
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
		conn_error(c, rid, PARLEY_ENOMEM, false, SRV_NOMEM_RETRY_MS,
			   "out of memory");
		return;
	}
	int rc = chat_conv_open(S(c)->chat, c->id->user, c->id->ulen,
				m->peer.p, m->peer.len, conv_open_cb, x);
	conn_req_started(c, rid, rc, x, 0,
			 rc == -PARLEY_EINVAL
				 ? "invalid peer: a user id other than yours "
				   "(1-120 bytes: letters, digits and . _ - @ + = |, "
				   "starting with a letter or digit)"
				 : parley_strerror(rc));
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
	/* EINVAL: a cursor the codec would not let through (before_conv
	 * over PARLEY_PROTO_MAX_CONV_ID) */
	conn_req_started(c, rid, rc, x,
			 0,
			 rc == -PARLEY_ENOMEM	  ? "out of memory"
			 : rc == -PARLEY_EINVAL ? "bad before_conv"
						 : "server busy");
}

