/*
 * loop_conn.h — the narrow interface between an event loop (loop.c) and
 * its connections (conn.c), both directions (private to server/).
 *
 * The loop knows a connection only as an opaque struct conn plus the
 * transport state it keeps for it (struct loop_sock, embedded in the
 * connection, written by the loop only). The connection knows its loop
 * only through the four calls below and lmsg.h. So conn.c builds and is
 * tested without loop.c (tests/unit/server/parleyd/test_conn.c runs it
 * against a fake loop: feed bytes, see the frames it queues).
 *
 * Threads: everything here runs on the loop's thread.
 */
#ifndef PARLEYD_LOOP_CONN_H
#define PARLEYD_LOOP_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "lmsg.h"
#include "srv.h"

struct conn;

/* The loop's transport state of one connection. */
struct loop_sock {
	struct conn_ref ref;  /* loop, slot, generation: names it across threads */
	int fd;
	uint16_t ops;         /* our SQEs in flight (recv, send) */
	bool tls;             /* accepted on the TLS listener */
	bool recv_armed;
	bool send_inflight;
	bool rx_paused;       /* recv cancelled: memory budget over */
	bool closing;         /* loop_conn_close ran: no more I/O */
	bool kick_queued;     /* on the loop's list of sends to start */
};

/* ---- the loop, for its connections (loop.c) ------------------------------------- */
struct srv *loop_srv(struct loop *lp);
/* A per-loop scratch buffer of PARLEY_PROTO_MAX_FRAME_HARD bytes. */
uint8_t *loop_scratch(struct loop *lp);
/* Make sure a send will be in flight if the connection has bytes queued
 * (conn_out_peek). The loop starts it at the end of its current round of
 * completions and messages, so everything queued in that round (all the
 * SEND_ACKs and EVENTs of one wake-up) goes out in one send. */
void loop_conn_kick(struct conn *c);
/* Start closing: conn_on_close, shutdown(2) + cancel; conn_free runs
 * once no SQE of ours references the connection. */
void loop_conn_close(struct conn *c, const char *why);

/* ---- a connection, for its loop (conn.c) ------------------------------------------ */
/* NULL when out of memory (the loop closes fd). */
struct conn *conn_new(struct loop *lp, int fd, bool tls, uint32_t slot,
		      uint32_t gen);
struct loop_sock *conn_sock(struct conn *c);
/* The bytes at the head of the outbound queue (0: nothing to send). */
uint32_t conn_out_peek(struct conn *c, const uint8_t **p);
/* Bytes received from the socket (ciphertext for TLS). */
void conn_on_recv(struct conn *c, const uint8_t *p, uint32_t n);
/* A send of n bytes completed (n <= conn_out_peek's length). */
void conn_on_sent(struct conn *c, uint32_t n);
/* A posted message for this connection. The loop frees m afterwards. */
void conn_on_msg(struct conn *c, struct lmsg *m);
/* Timers, ~10 times a second. */
void conn_tick(struct conn *c, uint64_t now_ns, uint64_t now_ms);
/* Server drain: GOAWAY DRAIN, stop taking requests. */
void conn_drain(struct conn *c, uint16_t reason, uint32_t retry_after_ms,
		const char *text);
/* Called once when closing begins (unsubscribe, store cursor). */
void conn_on_close(struct conn *c);
/* Frees everything; the loop has no more references. */
void conn_free(struct conn *c);
/* A virtual connection (no socket: fd -1) for one request node `node`
 * forwarded (proxy.h; r borrowed): ready as user r->user, answered back
 * over the peer link, closed once answered or after
 * lim.forward_timeout_ms. NULL when out of memory. */
struct proxy_req;
struct conn *conn_virtual_new(struct loop *lp, uint32_t slot, uint32_t gen,
			      uint64_t node, const struct proxy_req *r);
/* Runs its request (the client frame frame[0..n)); then it may be closing. */
void conn_virtual_run(struct conn *c, const uint8_t *frame, uint32_t n);
/* A tail virtual connection for the inbox tail m->id that node `node`
 * opened (tail_relay.h; m borrowed): ready as user m->user, its frames go
 * back over the peer link, it lives until the gateway closes it, the link
 * goes down or it ends itself (slow consumer, drain). NULL when out of
 * memory. */
struct tail_msg;
struct conn *conn_tail_virtual_new(struct loop *lp, uint32_t slot, uint32_t gen,
				   uint64_t node, const struct tail_msg *m);
/* Runs its SYNC (m->body); then it may be closing. */
void conn_tail_virtual_run(struct conn *c, const uint8_t *frame, uint32_t n);

#endif /* PARLEYD_LOOP_CONN_H */
