/*
 * conn_req.h — private to the connection (conn.c) and its per-feature
 * request handlers (conn_req*.c): the helpers both use, the handlers
 * dispatch calls, and the few calls into conn.c's per-connection state a
 * handler may make. Not a public header: nothing outside server/conn*.c
 * (and their unit tests) includes it.
 *
 * The split (one rule): conn.c is the connection — transport, TLS,
 * framing, the state machine of conn.h, dispatch, the outbound queue, and
 * the per-connection delivery state (inbox subscription, event window,
 * pacing, device cursor, live group events). A conn_req*.c file holds one
 * feature's request glue and nothing else: it maps a decoded request onto
 * its service call and the result onto its reply or ERROR, keeps no state
 * of its own, and touches the connection only to count the request in
 * flight (c->inflight) and through the calls declared here.
 *
 *   conn_req.c           shared glue; HISTORY, GROUP_CATCHUP, EDIT / DELETE,
 *                        RETENTION, CONV_OPEN, CONV_LIST
 *   conn_req_send.c      SEND (the only producer of SEND_ACK)
 *   conn_req_sync.c      SYNC, EVENT_ACK
 *   conn_req_group.c     GROUP_CREATE / ADD / REMOVE / LEAVE / ROLE / SET,
 *                        GROUP_INFO
 *   conn_req_rcpt.c      READ_MARKER, RECEIPTS
 *   conn_req_presence.c  TYPING, PRESENCE_SUB, PRESENCE_SET
 *
 * A handler runs on the connection's loop thread: it checks limits,
 * allocates its callback context (ERROR NOMEM with a retry_after when it
 * cannot, docs/SERVER.md "Errors and allocation failure"), calls the chat
 * service and counts the request in flight; the callback runs on an
 * engine (or sweeper) thread, encodes the reply with the pure codec and
 * posts it (conn_post_reply), never touching the connection.
 */
#ifndef PARLEYD_CONN_REQ_H
#define PARLEYD_CONN_REQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "conn.h"
#include "errmap.h"
#include "lmsg.h"
#include "parley_proto.h"
#include "ratelimit.h"

/* The wire code for an internal error: one table, server/errmap.c. */
static inline uint32_t wire_code(int err)
{
	return srv_wire_err(err).code;
}

static inline void ctr_add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static inline struct srv *S(struct conn *c)
{
	return loop_srv(c->sk.ref.lp);
}

/* ---- replies from other threads ------------------------------------------------ */

/* Encode m into a new lmsg (engine threads). NULL on failure. */
struct lmsg *conn_frame_msg(uint16_t kind, uint32_t req_id,
			    const struct parley_msg *m);
/* An encoded ERROR (retry 0: the error table's default for the code). */
struct lmsg *conn_error_msg(uint32_t req_id, uint32_t code, uint32_t retry,
			    const char *text);
/* Posts the reply ending request req_id (m NULL: ERROR NOMEM instead). */
void conn_post_reply(const struct conn_ref *to, struct lmsg *m,
		     uint32_t req_id);
/* A chat service reply (err: an ERROR with the table's wire code). */
void conn_post_msg(const struct conn_ref *to, uint32_t req_id, int err,
		   const struct parley_msg *m);

/* The callback context of a request answered by one chat service reply
 * (conn_reply_cb frees it). */
struct reply_ctx {
	struct conn_ref to;
	uint32_t req_id;
};
struct reply_ctx *conn_reply_ctx_new(struct conn *c, uint32_t rid);
void conn_reply_cb(void *arg, int err, const struct parley_msg *m);

/* ---- answers on the loop thread ------------------------------------------------ */

void conn_send(struct conn *c, uint32_t req_id, const struct parley_msg *m);
void conn_error(struct conn *c, uint32_t req_id, uint32_t code, bool fatal,
		uint32_t retry, const char *text);
/* A request the chat service refused before starting it. */
void conn_refused(struct conn *c, uint32_t rid, int rc);
/* Rate limit: true when the request was refused with RATE. */
bool conn_limited(struct conn *c, uint32_t rid, enum ratelimit_kind k);

/* The end of a handler that handed its request to a service with the
 * callback context x: rc 0, the request is in flight (the callback
 * answers it) and true; else the service will not call back, so x is
 * freed and the refusal answered (ERROR with rc's wire code, retry and
 * text), and false. */
static inline bool conn_req_started(struct conn *c, uint32_t rid, int rc,
				    void *x, uint32_t retry, const char *text)
{
	if (rc) {
		free(x);
		conn_error(c, rid, wire_code(rc), false, retry, text);
		return false;
	}
	c->inflight++;
	return true;
}

/* ---- the connection's delivery state, for SYNC / EVENT_ACK (conn.c) ------------- */

/* Subscribes the connection's inbox from inbox_seq `from` (the device's
 * stored cursor: `cursor`, UINT64_MAX = none) and attaches the user to
 * large groups' live EVENTs. 0, or a negative error with nothing changed. */
int conn_inbox_start(struct conn *c, uint64_t from, uint64_t cursor);
/* The device holds every event up to `up` (ev_acked < up < ev_next):
 * the event window opens by as many, receipts and the cursor follow. */
void conn_inbox_ack(struct conn *c, uint64_t up);
/* SYNC of a device whose inbox this node holds no replica of: runs it on
 * a node that does (tail_relay.h): true when it did (the request is in
 * flight or answered), false when the inbox is local (or this is a
 * virtual connection: a tail is never relayed twice). */
bool conn_tail_sync(struct conn *c, uint32_t rid, uint64_t from_inbox_seq);
/* Whether the connection's inbox tail is remote and synced (EVENT_ACK
 * goes through conn_inbox_ack all the same). */
bool conn_tail_active(const struct conn *c);

/* ---- per-feature requests (conn_req*.c) ----------------------------------------- */

/* conn_req_send.c */
void conn_req_send(struct conn *c, uint32_t rid, const struct parley_send *m);
/* conn_req_sync.c */
void conn_req_sync(struct conn *c, uint32_t rid, const struct parley_sync *m);
/* The LM_SYNC_DONE posted by SYNC's chat_sync callback. */
void conn_req_sync_done(struct conn *c, const struct lmsg *m);
void conn_req_event_ack(struct conn *c, const struct parley_event_ack *m);
/* conn_req_group.c (m: any GROUP_* request but GROUP_INFO / CATCHUP) */
void conn_req_group_change(struct conn *c, uint32_t rid,
			   const struct parley_msg *m);
void conn_req_group_info(struct conn *c, uint32_t rid,
			 const struct parley_group_info *m);
/* conn_req_rcpt.c */
void conn_req_read_marker(struct conn *c, uint32_t rid,
			  const struct parley_read_marker *m);
void conn_req_receipts(struct conn *c, uint32_t rid,
		       const struct parley_receipts *m);
/* conn_req_presence.c */
void conn_note_typing(struct conn *c, const struct parley_typing *m);
void conn_req_presence_sub(struct conn *c, uint32_t rid,
			   const struct parley_presence_sub *m);
void conn_req_presence_set(struct conn *c, uint32_t rid,
			   const struct parley_presence_set *m);
/* conn_req.c */

void conn_req_edit(struct conn *c, uint32_t rid, uint16_t kind,
		   struct parley_str conv, const uint8_t cmid[16],
		   uint64_t ref_seq, uint16_t ct, struct parley_bytes body);
void conn_req_retention(struct conn *c, uint32_t rid,
			const struct parley_retention *m);
void conn_req_history(struct conn *c, uint32_t rid,
		      const struct parley_history *m);
void conn_req_group_catchup(struct conn *c, uint32_t rid,
			    const struct parley_group_catchup *m);
void conn_req_conv_open(struct conn *c, uint32_t rid,
			const struct parley_conv_open *m);
void conn_req_conv_list(struct conn *c, uint32_t rid,
			const struct parley_conv_list *m);

#endif /* PARLEYD_CONN_REQ_H */
