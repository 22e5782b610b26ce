/*
 * proxy.h — client request forwarding over the peer link (private to
 * server/; docs/CLUSTER.md §3.3).
 *
 * Every node is a gateway. A request of a client connected to a node
 * that would answer it ERROR NOTLEADER (the node does not lead the
 * partition the request needs: a SEND, a group change, GROUP_INFO,
 * READ_MARKER, ...) is forwarded instead, over the peer link, to the
 * leader that NOTLEADER would name; the leader runs it as if from a
 * local client of that user (a virtual connection, conn.h) and returns
 * its reply frame, which the gateway writes to the client. Two roles,
 * both in every node:
 *
 *   gateway  proxy_forward (a connection's loop) puts the request in the
 *            table of forwards in flight under a fresh id and queues a
 *            FWD_REQ for the leader of the partition it was refused for
 *            (the caller names it: route.h); exactly one answer ends it, through
 *            io.reply: the leader's FWD_REP, or ERROR AGAIN (retryable)
 *            when it times out (timeout_ms), when the link to that node
 *            goes down (every forward on it at once), or when the FWD_REQ
 *            could not be handed to the link. A FWD_REP that comes after
 *            that is dropped (counted `late`).
 *   leader   proxy_on_frame (the peer thread) decodes a FWD_REQ and hands
 *            it to io.serve (parleyd: a loop runs it on a virtual
 *            connection); its reply comes back through proxy_served_reply
 *            and leaves as FWD_REP; proxy_served_done ends it.
 *
 * Invariants
 *   1. A forwarded request is never forwarded again: a virtual connection
 *      keeps no request to forward (conn.c), so a leader that is not the
 *      leader any more answers NOTLEADER, and the gateway passes that on.
 *   2. Bounded: at most max_inflight forwards per peer node in flight on
 *      the gateway (beyond: the caller answers FULL, retryable), and at
 *      most max_inflight requests per peer node served on the leader
 *      (beyond: ERROR FULL comes back at once). Every forward in flight
 *      ends within timeout_ms (+ one tick).
 *   3. The leader trusts the user (and device) id a FWD_REQ names: the
 *      peer link is authenticated (cluster id, and with mutual TLS the
 *      node certificate, docs/CLUSTER.md §1.2, §1.6).
 *   4. Durable before ack: the proxy writes no acknowledgement of its
 *      own; a SEND_ACK it passes on was produced by the leader's durable
 *      callback. What it makes itself are ERROR AGAIN / FULL.
 *
 * Wire (peer frame payloads, little-endian):
 *   FWD_REQ  u64 fwd_id | u8 user_len | u8 device_len | u16 0 |
 *            user | device | the client's request frame (uncompressed,
 *            flags 0, its request_id as the client sent it)
 *   FWD_REP  u64 fwd_id | one reply frame (ERROR or the request's reply)
 *
 * Threads: everything may be called from any thread (one mutex); the io
 * callbacks are called without it held.
 */
#ifndef PARLEYD_PROXY_H
#define PARLEYD_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "lmsg.h"

#define PROXY_DEFAULT_MAX_INFLIGHT 1024u /* per peer node (forward_max_inflight) */
#define PROXY_DEFAULT_TIMEOUT_MS 3000u   /* (forward_timeout_ms) */
#define PROXY_MAX_NODES 64u              /* peer nodes tracked (PEER_MAX_NODES) */
#define PROXY_REQ_HDR 12u                /* FWD_REQ bytes before user */
#define PROXY_REQ_HDR_MAX (PROXY_REQ_HDR + 255u + 255u)
#define PROXY_REP_HDR 8u
/* the peer frame types (peer.h PEER_FRAME_FWD_REQ / _REP; proxy_node.c
 * checks they agree) */
#define PROXY_FRAME_REQ 6u
#define PROXY_FRAME_REP 7u

struct proxy;

/* A decoded FWD_REQ (borrowed from the frame). */
struct proxy_req {
	uint64_t fwd_id;
	const char *user, *device;
	uint8_t ulen, dlen;
	const uint8_t *frame; /* a whole client frame */
	uint32_t flen;
	uint32_t rid;         /* its request_id */
	uint16_t type;        /* its message type */
};

struct proxy_io {
	/* queue a peer frame of `type` (PROXY_FRAME_*) whose
	 * payload is a ++ b for node `to` (peer_node_send_app): 0 or < 0 */
	int (*send)(void *arg, uint64_t to, uint8_t type, const void *a,
		    size_t alen, const void *b, size_t blen);
	/* may requests be forwarded to `node` now: its link is up and it
	 * knows FWD_REQ (parleyd: peer_node_can_send; a node of an older
	 * build does not, docs/CLUSTER.md §1.2) */
	bool (*link_up)(void *arg, uint64_t node);
	/* gateway: the answer that ends a forwarded request (borrowed bytes:
	 * one whole frame carrying the client's request_id) */
	void (*reply)(void *arg, const struct conn_ref *to, const uint8_t *frame,
		      uint32_t n);
	/* leader: run r, decoded from the FWD_REQ payload p[0..n) (both
	 * borrowed: copy what you keep), for node `from`; 0 = started
	 * (proxy_served_reply / _refuse / _done follow), < 0 = refused
	 * (ERROR AGAIN goes back at once) */
	int (*serve)(void *arg, uint64_t from, const struct proxy_req *r,
		     const uint8_t *p, uint32_t n);
	void *arg;
};

struct proxy_config {
	bool forward;          /* gateway side on (config key forward); the
				  leader side always serves, so nodes with
				  forwarding on and off mix in one cluster */
	uint32_t max_inflight; /* 0 = PROXY_DEFAULT_MAX_INFLIGHT */
	uint32_t timeout_ms;   /* 0 = PROXY_DEFAULT_TIMEOUT_MS */
};

/* Outcomes of a forward on the gateway (parley_forward_requests_total). */
enum proxy_outcome {
	PROXY_OUT_REPLIED = 0, /* the leader's reply was passed on */
	PROXY_OUT_TIMEOUT,     /* ERROR AGAIN: no reply within timeout_ms */
	PROXY_OUT_LINK_DOWN,   /* ERROR AGAIN: the link went down */
	PROXY_OUT_UNSENT,      /* ERROR AGAIN: could not be queued on the link */
	PROXY_OUT_FULL,        /* not forwarded: max_inflight to that node */
	PROXY_OUT_NO_LEADER,   /* not forwarded: no leader known, or its
				  link down (the caller redirects) */
	PROXY_OUT_COUNT
};

struct proxy_stats {
	uint64_t out[PROXY_OUT_COUNT];
	uint64_t late;            /* FWD_REPs for forwards already answered */
	uint64_t inflight;        /* gateway: forwards in flight now */
	uint64_t served, serving; /* leader: requests run / running now */
	uint64_t served_refused;  /* leader: refused (cap, not serving) */
	uint64_t bad_frames;      /* undecodable FWD_REQ / FWD_REP */
};

int proxy_new(const struct proxy_config *cfg, const struct proxy_io *io,
	      struct proxy **out);
void proxy_free(struct proxy *px);
/* Leader side on/off (parleyd: on once the loops run, off when it
 * drains); off, FWD_REQs are answered ERROR AGAIN at once. */
void proxy_set_serving(struct proxy *px, bool on);

/* Whether this node forwards (proxy_config.forward). */
bool proxy_forwarding(const struct proxy *px);

/* Whether a request of this type is forwarded when it would be refused
 * NOTLEADER (PROTOCOL.md: everything but the handshake, PING, SYNC /
 * EVENT_ACK (inbox tails stay on the client's node), TYPING and
 * PRESENCE_*, which are node-local). */
bool proxy_type_forwardable(uint16_t type);

/* ---- gateway ---- */

/* Forwards the client frame frame[0..n) (whole, uncompressed, flags 0)
 * of user/device on the connection `to` to node `leader`: the leader of
 * the partition its NOTLEADER refused (conn.c, route.h; 0 = none known or
 * this node). 0: in flight, io.reply will end it exactly once (it may
 * already have when this returns); -PARLEY_ENOTLEADER: not forwarded
 * (forwarding off, no leader known, or its link down: answer NOTLEADER
 * with its hint as before); -PARLEY_EFULL: max_inflight to that node
 * (answer FULL); -PARLEY_ENOMEM. */
int proxy_forward(struct proxy *px, uint64_t leader, const struct conn_ref *to,
		  const char *user, uint8_t ulen, const char *device,
		  uint8_t dlen, const uint8_t *frame, uint32_t n,
		  uint64_t now_ms);
/* An application frame from node `from` (peer thread). */
void proxy_on_frame(struct proxy *px, uint64_t from, uint8_t type,
		    const uint8_t *p, uint32_t n);
/* A frame proxy queued could not be handed to the link to `to`. */
void proxy_on_unsent(struct proxy *px, uint64_t to, uint8_t type,
		     const uint8_t *p, uint32_t n, int err);
/* The link to `node` went down: its forwards end with ERROR AGAIN. */
void proxy_link_down(struct proxy *px, uint64_t node);
/* Ends the forwards whose time is up (ERROR AGAIN). */
void proxy_tick(struct proxy *px, uint64_t now_ms);

/* ---- leader ---- */

/* The reply of the request fwd_id of node `node`, one frame. */
void proxy_served_reply(struct proxy *px, uint64_t node, uint64_t fwd_id,
			const uint8_t *frame, uint32_t n);
/* Refuses a request io.serve accepted (ERROR AGAIN with `why` goes
 * back) and ends it (proxy_served_done). */
void proxy_served_refuse(struct proxy *px, uint64_t node,
			 const struct proxy_req *r, const char *why);
/* The request io.serve started for `node` is over (after its reply). */
void proxy_served_done(struct proxy *px, uint64_t node);

/* ---- codec (pure) ---- */

/* FWD_REQ's header (before the client frame) into out; its length. */
uint32_t proxy_req_hdr_encode(uint8_t out[PROXY_REQ_HDR_MAX], uint64_t fwd_id,
			      const char *user, uint8_t ulen,
			      const char *device, uint8_t dlen);
/* A FWD_REQ payload: 0 or -PARLEY_EPROTO (short, bad lengths, the frame
 * not exactly one whole client frame). */
int proxy_req_decode(const uint8_t *p, uint32_t n, struct proxy_req *r);
/* A FWD_REP payload (u64 fwd_id | one whole client frame): 0 with the
 * id and the frame's type and request id, or -PARLEY_EPROTO. */
int proxy_rep_decode(const uint8_t *p, uint32_t n, uint64_t *fwd_id,
		     uint16_t *type, uint32_t *rid);

/* ---- metrics ---- */

void proxy_stats(struct proxy *px, struct proxy_stats *st);
/* Prometheus text (parley_forward_*), as srv_stage_metrics: the length
 * it needed. Any thread. */
size_t proxy_metrics_text(struct proxy *px, char *buf, size_t cap);

#endif /* PARLEYD_PROXY_H */
