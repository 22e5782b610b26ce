/*
 * loop.h — parleyd's io_uring event loops and the server-wide context
 * (private to server/).
 *
 * One loop per thread ("one per core", configurable), shared-nothing: each
 * loop owns its ring, its listening sockets (SO_REUSEPORT: the kernel
 * spreads accepted connections over the loops), its provided-buffer ring,
 * its connections and its timers. Nothing but loop_post()/loop_stop() may
 * be called on a loop from another thread.
 *
 * Engine callbacks run on engine shard threads. They never touch a
 * connection: they build a `struct lmsg` naming the connection by handle
 * (loop, slot, generation) and loop_post() it. loop_post() appends to the
 * loop's MPSC list under a mutex and writes the loop's eventfd when the
 * list was empty; the loop drains the whole list at once. A message for a
 * connection that has since closed (slot free or generation changed) is
 * dropped. The list is bounded by construction: every message answers an
 * engine operation the loop started (each connection has at most
 * max_inflight requests and event_window + one batch of events
 * outstanding), so it never holds more than conns * (max_inflight +
 * event_window + 64) messages.
 *
 * io_uring usage: multishot accept per listener; multishot recv with a
 * provided buffer ring (an idle connection holds no receive buffer); one
 * send in flight per connection; a 100 ms timeout drives timers; an
 * eventfd read wakes the loop for posted messages. Completions are reaped
 * in batches (io_uring_for_each_cqe + io_uring_cq_advance). A multishot
 * request whose CQE lacks IORING_CQE_F_MORE is re-armed.
 *
 * Memory budget (membudget.h): while it is over, a loop does not read: it
 * cancels every connection's recv at once (and arms none for new ones) and
 * the 100 ms tick re-arms them once the budget has recovered.
 */
#ifndef PARLEYD_LOOP_H
#define PARLEYD_LOOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "membudget.h"
#include "parley_common.h"
#include "parley_engine.h"

struct admission;
struct chat;
struct loop;
struct presence;
struct ratelimit;
struct srv;

/* Limits a connection lives by (config keys in parentheses). */
struct srv_limits {
	uint32_t max_frame;          /* whole frame after AUTH_OK (max_frame) */
	uint32_t preauth_max_frame;  /* whole frame before AUTH_OK (preauth_max_frame) */
	uint32_t frame_timeout_ms;   /* a started frame must complete within (frame_timeout_ms) */
	uint32_t max_body;           /* SEND body (max_body) */
	uint32_t max_inflight;       /* requests per connection (max_inflight) */
	uint32_t event_window;       /* unacked EVENTs (event_window) */
	uint32_t idle_timeout_ms;    /* (idle_timeout_ms) */
	uint32_t handshake_timeout_ms; /* TLS + HELLO + AUTH (handshake_timeout_ms) */
	uint32_t slow_consumer_ms;   /* window full this long -> GOAWAY (slow_consumer_ms) */
	uint64_t max_outbound;       /* queued bytes per connection (outbound_queue_bytes) */
	uint32_t max_conns;          /* per loop (max_connections / loops) */
	uint32_t drain_timeout_ms;   /* SIGTERM: force close after this (drain_timeout_ms) */
};

/* Counters every loop bumps (relaxed atomics); metrics read them. */
struct srv_counters {
	_Atomic uint64_t conns_accepted, conns_closed, conns_open, conns_tls;
	_Atomic uint64_t frames_in, frames_out, bytes_in, bytes_out;
	_Atomic uint64_t sends, appends, duplicates, events_out, history, syncs;
	_Atomic uint64_t errors_sent, proto_errors, auth_failures;
	_Atomic uint64_t slow_consumers, idle_closes, handshake_timeouts;
	_Atomic uint64_t frame_timeouts, preauth_too_big, recv_paused;
	_Atomic uint64_t ack_lat_ns_sum, ack_lat_count;
	/* SEND -> SEND_ACK latency histogram, buckets in microseconds:
	 * le 100,250,500,1000,2500,5000,10000,25000,50000,100000,+Inf */
	_Atomic uint64_t ack_lat_bucket[11];
};
extern const double srv_ack_lat_bounds_s[10];

/* JWT check hook: fills the token's sub (user id) and exp (unix ms, 0 =
 * none); returns 0 or -PARLEY_EAUTH with a short reason in why. */
typedef int (*srv_auth_fn)(void *arg, const char *token, size_t len,
			   char *sub, size_t subcap, uint64_t *exp_ms,
			   char *why, size_t whycap);

struct srv {
	struct pe_engine *engine;
	struct chat *chat;
	SSL_CTX *tls;                /* NULL: no TLS listener */
	srv_auth_fn auth;
	void *auth_arg;
	struct srv_limits lim;
	struct membudget mem;        /* memory_budget_bytes, see membudget.h */
	char server_id[64];
	struct srv_counters ctr;
	struct ratelimit *rl;        /* request rate limits; NULL = none */
	struct admission *adm;       /* handshake admission; NULL = none */
	struct presence *pres;       /* typing and presence; NULL = none */
	atomic_bool draining;
	struct loop **loops;
	unsigned nloops;
};

/* A message to a loop (see top). `data` is owned by the message; `u`
 * holds the typed fields of its kind (only the member named by `kind` is
 * valid). */
enum lmsg_kind {
	LM_FRAME = 1,     /* data = an encoded frame for conn; done_req: inflight-- */
	LM_INBOX,         /* data = inbox pointers to resolve (see conn.c) */
	LM_EVENT,         /* data = an encoded EVENT frame */
	LM_SUB_CLOSED,    /* the engine ended the subscription */
	LM_SYNC_STEP,     /* one read of the SYNC state machine answered */
	LM_STOP,          /* drain and stop the loop */
	LM_PUSH,          /* data = an encoded TYPING_PUSH / PRESENCE frame
			     (presence.h; bounded by presence_push_queue_max) */
};
enum lmsg_ack { LM_ACK_NONE = 0, LM_ACK_NEW, LM_ACK_DUPLICATE };
enum lmsg_sync_step { LM_SYNC_CURSOR = 1, LM_SYNC_INBOX = 2, LM_SYNC_FAILED = 3 };
struct lmsg {
	struct lmsg *next;
	uint16_t kind;
	bool done_req;           /* completes one in-flight request */
	uint32_t slot, gen;
	union {
		struct {               /* LM_FRAME */
			uint8_t ack;   /* enum lmsg_ack: a SEND_ACK, for metrics */
			uint64_t t0_ns; /* SEND start, for the ack latency histogram */
		} frame;
		struct {               /* LM_INBOX */
			uint32_t count;   /* pointers in data */
			bool trimmed;     /* retention skipped us to next_seq */
			uint64_t next_seq;
		} inbox;
		struct {               /* LM_EVENT */
			uint64_t inbox_seq;
		} event;
		struct {               /* LM_SUB_CLOSED */
			int err;
		} sub_closed;
		struct {               /* LM_SYNC_STEP; data = u32 request id */
			uint8_t step;     /* enum lmsg_sync_step */
			int err;          /* LM_SYNC_FAILED */
			uint64_t cursor;  /* LM_SYNC_CURSOR: UINT64_MAX = none stored */
			uint64_t first_seq, last_seq; /* LM_SYNC_INBOX */
		} sync;
	} u;
	uint32_t len;
	uint8_t data[];
};
struct lmsg *lmsg_new(uint16_t kind, uint32_t len);

struct loop_listen {
	const char *host;
	uint16_t tcp_port;           /* 0: no plain TCP listener */
	uint16_t tls_port;           /* 0: no TLS listener */
};

/* Creates loop idx (opens its listeners with SO_REUSEPORT). */
int loop_create(struct srv *s, unsigned idx, const struct loop_listen *ls,
		struct loop **out);
/* The loop thread's body: runs until stopped and drained. */
void *loop_main(void *arg);
/* Any thread: hand a message to the loop. Never blocks on I/O. */
void loop_post(struct loop *lp, struct lmsg *m);
/* Any thread: ask the loop to drain (GOAWAY DRAIN to every client, finish
 * in-flight requests, flush) and return from loop_main. */
void loop_stop(struct loop *lp);
void loop_free(struct loop *lp);
/* Number of connections open on the loop (relaxed read, any thread). */
uint32_t loop_conn_count(struct loop *lp);

#endif /* PARLEYD_LOOP_H */
