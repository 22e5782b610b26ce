/*
 * conn_req.h — private to the connection (conn.c) and its per-feature
 * request handlers (conn_req.c): the helpers both use and the handlers
 * dispatch calls. Not a public header: nothing outside server/conn*.c
 * includes it.
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

/* ---- per-feature requests (conn_req.c) ------------------------------------------ */

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
