/*
 * conn_req_sync.c — SYNC and EVENT_ACK: the protocol rules of a device's
 * inbox delivery (one SYNC per connection, SYNC_OK before the first
 * EVENT, acks within what was sent). Where the delivery starts is the
 * chat service's (chat_sync); the delivery itself — the subscription, the
 * event window, pacing, the device cursor — is per-connection state and
 * stays in conn.c, reached through conn_inbox_start / conn_inbox_ack.
 *
 * Rule of the conn_req*.c files (conn_req.h): a file holds one feature's
 * request glue and nothing else: it maps a decoded request onto its
 * service call and the result onto its reply or ERROR, keeps no state of
 * its own, and touches the connection only to count the request in
 * flight (c->inflight) and through the calls conn_req.h declares. Here
 * also c->sync_busy (SYNC between its request and its subscription) and,
 * read only, the delivery positions EVENT_ACK is checked against.
 *
 * A SYNC of an inbox this node holds no replica of runs on a node that
 * does (conn_tail_sync, tail_relay.h); the device sees the same SYNC_OK,
 * EVENTs and acknowledgement rules.
 *
 * A SYNC in three steps: conn_req_sync (loop) asks chat_sync where the
 * device's delivery starts; sync_cb (engine thread) posts the answer as
 * a typed LM_SYNC_DONE; conn_req_sync_done (loop) subscribes and answers
 * SYNC_OK, or ERROR. The request counts in flight from the first step to
 * the last.
 *
 * Ownership: the struct reply_ctx of a SYNC is malloc'd by conn_req_sync
 * and freed by sync_cb.
 * Threads: sync_cb on an engine shard thread; everything else on the
 * connection's loop.
 */
#include <stdlib.h>

#include "chat.h"
#include "conn_req.h"

/* Engine thread: where the device's delivery starts (or why not). */
static void sync_cb(void *arg, const struct chat_sync_info *r)
{
	struct reply_ctx *x = arg;
	struct lmsg *m = lmsg_new(LM_SYNC_DONE, 0);
	if (!m) /* the request is in flight: nothing else could end it */
		srv_oom("SYNC completion");
	m->u.sync.req_id = x->req_id;
	m->u.sync.err = r->err;
	m->u.sync.cursor = r->cursor;
	m->u.sync.first_seq = r->first;
	m->u.sync.last_seq = r->last;
	m->u.sync.start_seq = r->start;
	lmsg_post(&x->to, m);
	free(x);
}

void conn_req_sync(struct conn *c, uint32_t rid, const struct parley_sync *m)
{
	if (conn_limited(c, rid, RATELIMIT_HISTORY))
		return;
	if (c->sub || c->sync_busy || c->rt) {
		conn_error(c, rid, PARLEY_EEXIST, false, 0, "already syncing");
		return;
	}
	ctr_add(&S(c)->ctr.syncs, 1);
	if (conn_tail_sync(c, rid, m->from_inbox_seq))
		return; /* the inbox is held elsewhere (tail_relay.h) */
	struct reply_ctx *x = conn_reply_ctx_new(c, rid);
	int rc = x ? chat_sync(S(c)->chat, c->id->user, c->id->ulen,
			       c->id->device, c->id->dlen, m->from_inbox_seq,
			       sync_cb, x)
		   : -PARLEY_ENOMEM;
	if (conn_req_started(c, rid, rc, x,
			     0,
			     "server busy"))
		c->sync_busy = true;
}

/* Ends the SYNC in flight with an ERROR. */
static void sync_fail(struct conn *c, uint32_t rid, uint32_t code,
		      uint32_t retry, const char *text)
{
	c->sync_busy = false;
	c->inflight--;
	conn_error(c, rid, code, false, retry, text);
}

/* Loop thread: the SYNC's reads are in; subscribe and answer SYNC_OK. */
void conn_req_sync_done(struct conn *c, const struct lmsg *m)
{
	uint32_t rid = m->u.sync.req_id;
	if (c->state != CS_READY) { /* draining: the device resyncs elsewhere */
		sync_fail(c, rid, PARLEY_ECLOSED, 0, "draining");
		return;
	}
	int err = m->u.sync.err;
	if (!err)
		err = conn_inbox_start(c, m->u.sync.start_seq, m->u.sync.cursor);
	if (err) {
		sync_fail(c, rid, wire_code(err),
			  0,
			  parley_strerror(err));
		return;
	}
	c->sync_busy = false;
	c->inflight--;
	/* SYNC_OK goes out before the first EVENT: both are queued on this
	 * loop, and EVENTs only arrive through later messages. */
	struct parley_msg ok = {.type = PARLEY_T_SYNC_OK};
	ok.sync_ok.first_inbox_seq = m->u.sync.first_seq;
	ok.sync_ok.last_inbox_seq = m->u.sync.last_seq;
	ok.sync_ok.start_inbox_seq = m->u.sync.start_seq;
	conn_send(c, rid, &ok);
}

/* EVENT_ACK is a notification: a bad one is an ERROR with request id 0. */
void conn_req_event_ack(struct conn *c, const struct parley_event_ack *m)
{
	if (!c->sub && !conn_tail_active(c)) {
		if (c->state == CS_DRAINING)
			return;
		conn_error(c, 0, PARLEY_EINVAL, false, 0, "no SYNC active");
		return;
	}
	uint64_t up = m->up_to_inbox_seq;
	if (up >= c->ev_next) {
		conn_error(c, 0, PARLEY_EINVAL, false, 0,
			   "ack above the last sent event");
		return;
	}
	if (up <= c->ev_acked)
		return;
	conn_inbox_ack(c, up);
}
