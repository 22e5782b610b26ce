/*
 * conn_req_rcpt.c — READ_MARKER and RECEIPTS (chat_receipt.h): a user's
 * read position in a conversation, and the per-member delivered / read
 * state of one message. Delivered receipts (what a device acknowledged
 * with EVENT_ACK) are reported by conn.c's inbox plumbing, not here.
 *
 * Rule of the conn_req*.c files (conn_req.h): a file holds one feature's
 * request glue and nothing else: it maps a decoded request onto its
 * service call and the result onto its reply or ERROR, keeps no state of
 * its own, and touches the connection only to count the request in
 * flight (c->inflight) and through the calls conn_req.h declares.
 *
 * DURABLE BEFORE ACK: READ_MARKER_OK is encoded only in read_marker_cb,
 * which the chat service runs after the position (and its receipt
 * events) are durable.
 *
 * Ownership: struct rcpt_reply is malloc'd by the handler and freed by
 * its callback (or at once when the service refuses the request).
 * Threads: handlers on the connection's loop; callbacks on engine shard
 * threads.
 */
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "chat_receipt.h"
#include "conn_req.h"

struct rcpt_reply {
	struct conn_ref to;
	uint32_t req_id;
	uint64_t seq;
	uint16_t clen;
	char conv[PARLEY_PROTO_MAX_CONV_ID];
};

static const char *rcpt_errtext(int err)
{
	return err == -PARLEY_EINVAL ? "seq is 0 or beyond the last message"
	       : err == -PARLEY_EPERM ? "not a member"
	       : err == -PARLEY_ENOTFOUND ? "no such conversation"
	       : err == -PARLEY_EFULL ? "server busy"
				      : parley_strerror(err);
}

/* Engine thread: the position (and its receipt events) are durable. */
static void read_marker_cb(void *arg, const struct chat_rcpt_mark_result *r)
{
	struct rcpt_reply *x = arg;
	struct lmsg *lm;
	if (r->err) {
		lm = conn_error_msg(x->req_id, wire_code(r->err),
			            0,
			            rcpt_errtext(r->err));
	} else {
		struct parley_msg m = {.type = PARLEY_T_READ_MARKER_OK};
		m.read_marker_ok.conv = (struct parley_str){x->conv, x->clen};
		m.read_marker_ok.read_seq = r->read_seq;
		m.read_marker_ok.flags = r->stale ? PARLEY_READF_STALE : 0;
		lm = conn_frame_msg(LM_FRAME, x->req_id, &m);
	}
	conn_post_reply(&x->to, lm, x->req_id);
	free(x);
}

static struct rcpt_reply *rcpt_reply_new(struct conn *c, uint32_t rid,
					 struct parley_str conv, uint64_t seq)
{
	struct rcpt_reply *x = malloc(sizeof *x);
	if (!x) {
		conn_error(c, rid, PARLEY_ENOMEM, false, SRV_NOMEM_RETRY_MS,
			   "out of memory");
		return NULL;
	}
	*x = (struct rcpt_reply){.to = c->sk.ref, .req_id = rid, .seq = seq,
				 .clen = conv.len};
	memcpy(x->conv, conv.p, conv.len);
	return x;
}

/* READ_MARKER / RECEIPTS on (conv, seq): within the history rate limit,
 * the reply context, else NULL with the ERROR sent. Who may (a member,
 * seq not 0) is chat_receipt.c's rule: its refusal comes back from
 * chat_rcpt_mark / chat_rcpt_query. */
static struct rcpt_reply *rcpt_admit(struct conn *c, uint32_t rid,
				     struct parley_str conv, uint64_t seq)
{
	if (conn_limited(c, rid, RATELIMIT_HISTORY))
		return NULL;
	return rcpt_reply_new(c, rid, conv, seq);
}

void conn_req_read_marker(struct conn *c, uint32_t rid,
			  const struct parley_read_marker *m)
{
	/* mostly reads: a marker that does not raise the position writes
	 * nothing, and one that does is bounded by the messages (SEND's
	 * limit) */
	struct rcpt_reply *x = rcpt_admit(c, rid, m->conv, m->seq);
	if (!x)
		return;
	int rc = chat_rcpt_mark(S(c)->chat, c->id->user, c->id->ulen,
				m->conv.p, m->conv.len, m->seq, read_marker_cb,
				x);
	if (conn_req_started(c, rid, rc, x, srv_wire_err(rc).retry_after_ms,
			     rcpt_errtext(rc)))
		ctr_add(&S(c)->ctr.read_markers, 1);
}

static void receipts_cb(void *arg, const struct chat_rcpt_query_result *r)
{
	struct rcpt_reply *x = arg;
	struct lmsg *lm = NULL;
	if (r->err) {
		lm = conn_error_msg(x->req_id, wire_code(r->err),
			            0,
			            rcpt_errtext(r->err));
	} else {
		struct parley_msg *m = calloc(1, sizeof *m);
		if (m) {
			struct parley_receipts_ok *o = &m->receipts_ok;
			m->type = PARLEY_T_RECEIPTS_OK;
			o->conv = (struct parley_str){x->conv, x->clen};
			o->seq = x->seq;
			o->member_count = r->member_count;
			o->flags = r->end ? PARLEY_PAGEF_END : 0;
			for (uint32_t i = 0; i < r->n; i++) {
				const struct chat_rcpt_member *cm = &r->m[i];
				struct parley_receipt_rec *e = &o->recs[o->count++];
				e->user = (struct parley_str){cm->user, cm->ulen};
				e->read_seq = cm->pos.read_seq;
				e->delivered_seq = cm->pos.delivered_seq;
				if (cm->pos.delivered_seq >= x->seq) {
					e->state |= PARLEY_RCPTF_DELIVERED;
					o->delivered++;
				}
				if (cm->pos.read_seq >= x->seq) {
					e->state |= PARLEY_RCPTF_READ;
					o->read++;
				}
			}
			if (!r->end && o->count)
				o->next_after = o->recs[o->count - 1].user;
			lm = conn_frame_msg(LM_FRAME, x->req_id, m);
			free(m);
		}
	}
	conn_post_reply(&x->to, lm, x->req_id);
	free(x);
}

void conn_req_receipts(struct conn *c, uint32_t rid,
		       const struct parley_receipts *m)
{
	struct rcpt_reply *x = rcpt_admit(c, rid, m->conv, m->seq);
	if (!x)
		return;
	int rc = chat_rcpt_query(S(c)->chat, c->id->user, c->id->ulen,
				 m->conv.p, m->conv.len, m->seq, m->after.p,
				 m->after.len, m->limit, receipts_cb, x);
	conn_req_started(c, rid, rc, x, srv_wire_err(rc).retry_after_ms,
			 rcpt_errtext(rc));
}
