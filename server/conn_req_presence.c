/*
 * conn_req_presence.c — TYPING, PRESENCE_SUB and PRESENCE_SET on the
 * presence service (presence.h). The session itself (online on AUTH, a
 * heartbeat per frame, offline on close) is the connection's state and
 * stays in conn.c.
 *
 * Rule of the conn_req*.c files (conn_req.h): a file holds one feature's
 * request glue and nothing else: it maps a decoded request onto its
 * service call and the result onto its reply or ERROR, keeps no state of
 * its own, and touches the connection only to count the request in
 * flight (c->inflight) and through the calls conn_req.h declares.
 *
 * Replies: presence.c answers PRESENCE_SUB / PRESENCE_SET itself (an
 * LM_FRAME completing the request); TYPING is a notification, answered
 * only when refused (an ERROR with request id 0).
 * Threads: the connection's loop.
 */
#include "conn_req.h"
#include "presence.h"

/* TYPING is a notification: a refusal is an ERROR with request_id 0
 * (RATE with retry_after_ms, PERM, NOTFOUND, FULL), never a silent drop. */
void conn_note_typing(struct conn *c, const struct parley_typing *m)
{
	struct srv *s = S(c);
	if (!s->pres || !c->pres) {
		conn_error(c, 0, PARLEY_EAGAIN, false, 1000, "typing unavailable");
		return;
	}
	if (conn_limited(c, 0, RATELIMIT_TYPING))
		return;
	int rc = presence_typing(s->pres, c->pres, m->conv.p, m->conv.len,
				 m->state == PARLEY_TYPING_STARTED);
	if (rc)
		conn_error(c, 0, wire_code(rc), false, 0,
			   rc == -PARLEY_EPERM ? "TYPING: not a member"
			   : rc == -PARLEY_ENOTFOUND
				   ? "TYPING: no such conversation"
			   : rc == -PARLEY_EFULL
				   ? "TYPING: typing in too many conversations"
				   : "TYPING failed");
}

/* A PRESENCE_SUB / PRESENCE_SET request may go on: presence is there and
 * the presence rate limit allows it (else the ERROR is sent); on true the
 * request is counted in flight. */
static bool presence_admit(struct conn *c, uint32_t rid)
{
	struct srv *s = S(c);
	if (!s->pres || !c->pres) {
		conn_error(c, rid, PARLEY_EAGAIN, false, 1000,
			   "presence unavailable");
		return false;
	}
	if (conn_limited(c, rid, RATELIMIT_PRESENCE))
		return false;
	c->inflight++;
	return true;
}

void conn_req_presence_sub(struct conn *c, uint32_t rid,
			   const struct parley_presence_sub *m)
{
	struct srv *s = S(c);
	if (!presence_admit(c, rid))
		return;
	int rc = presence_sub(s->pres, c->pres, rid, m);
	if (rc) {
		c->inflight--;
		conn_error(c, rid, wire_code(rc), false,
			   0,
			   rc == -PARLEY_ELIMIT
				   ? "too many presence subscriptions "
				     "(presence_subs_max)"
				   : "out of memory");
	}
}

void conn_req_presence_set(struct conn *c, uint32_t rid,
			   const struct parley_presence_set *m)
{
	struct srv *s = S(c);
	if (!presence_admit(c, rid))
		return;
	int rc = presence_set(s->pres, c->pres, rid, m->flags);
	if (rc) {
		c->inflight--;
		conn_error(c, rid, wire_code(rc), false,
			   srv_wire_err(rc).retry_after_ms, "server busy");
	}
}
