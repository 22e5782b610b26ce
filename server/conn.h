/*
 * conn.h — one client connection: lifecycle, framing, TLS, outbound queue,
 * dispatch of the requests of docs/PROTOCOL.md and the connection's
 * delivery state (private to server/). conn.c implements it; the glue of
 * each request is in the conn_req*.c files (conn_req.h).
 *
 * Lifecycle (server side; every arrow is taken on the connection's loop):
 *
 *            accept
 *              |
 *              v
 *   +------ TLS_HS ------+        (TLS listener only: OpenSSL handshake
 *   |          | done    |         over memory BIOs; handshake timeout)
 *   |          v         |
 *   +------>  NEW  ------+-- anything but HELLO / bad version ---+
 *              | HELLO ok                                        |
 *              v                                                 |
 *          HELLO_DONE ---- AUTH fails (fatal ERROR EAUTH) -------+
 *              | AUTH ok        (handshake timeout covers        |
 *              v                 TLS_HS..HELLO_DONE)             |
 *            READY ---- GOAWAY sent (drain, slow consumer,       |
 *              |        auth expired) ---> DRAINING              |
 *              |                              | in-flight done,  |
 *              |                              | queue flushed or |
 *              |                              | deadline         |
 *              +-- EOF / error / idle / fatal ERROR --+          |
 *                                             v       v          v
 *                                            CLOSING (shutdown(2), cancel
 *                                             |       recv; wait for our
 *                                             |       SQEs to complete)
 *                                             v
 *                                            freed (slot generation bumped)
 *
 * Invariants
 *   1. Only the owning loop thread touches a struct conn. Engine callbacks
 *      reach it through lmsg_post() with its struct conn_ref (lmsg.h).
 *   2. Outbound bytes queued <= lim.max_outbound, else the connection is a
 *      slow consumer: GOAWAY SLOW_CONSUMER, then closed (its device resyncs
 *      from its cursor on reconnect).
 *   3. A request counts in `inflight` from dispatch until its reply is
 *      queued; DRAINING closes only at inflight == 0 (a durable SEND still
 *      gets its SEND_ACK).
 *   4. EVENTs are queued in inbox order without gaps: resolved events that
 *      arrive early wait in `stash` (bounded by event_window + 64).
 *   5. A struct conn is freed only when no SQE of ours references it
 *      (`sk.ops` == 0) and the loop is not iterating it.
 *   6. Receive: until AUTH_OK a frame may declare at most
 *      lim.preauth_max_frame bytes, after it lim.max_frame; the declared
 *      length is checked on the header, before any of the body is kept
 *      (fatal ERROR TOOBIG). A partial frame must complete within
 *      lim.frame_timeout_ms of its first byte (fatal ERROR TIMEDOUT);
 *      bytes arriving slowly do not extend that deadline. The receive
 *      buffer grows with the bytes received, never past the frame.
 *   7. Every receive buffer and outbound chunk is charged to the memory
 *      budget (membudget.h) while allocated.
 *   8. Forwarding (proxy.h, docs/CLUSTER.md §3.3): fwd_saved holds at most
 *      one frame per forwardable request in flight (charged to the memory
 *      budget), dropped when the request is answered or handed to the
 *      proxy; so it is bounded by max_inflight. A virtual connection
 *      (virt != NULL: a request another node forwarded; no socket, fd -1)
 *      starts READY as the user the request names, keeps no frames (a
 *      forwarded request is never forwarded again), hands its reply to
 *      the proxy instead of a socket, and closes once it is answered (or
 *      at lim.forward_timeout_ms).
 *
 * TLS: OpenSSL with memory BIOs. Ciphertext read by io_uring is written
 * into the read BIO; SSL_read yields plaintext for the frame parser;
 * SSL_write puts ciphertext in the write BIO, which is drained into the
 * outbound queue and sent by io_uring. So TLS and TCP share one I/O path
 * and one queue bound (the queue holds ciphertext for TLS connections).
 *
 * The loop sees a connection only through loop_conn.h (struct loop_sock
 * and the conn_* entry points); this header is conn.c's own (and its
 * unit tests': test_conn.c, test_conn_req.c, test_conn_fwd.c).
 *
 * Memory per idle plain-TCP connection: struct conn + one slot pointer
 * (no receive buffer: recv uses the loop's provided buffer ring; no
 * outbound chunk while nothing is queued; ident block after AUTH).
 */
#ifndef PARLEYD_CONN_H
#define PARLEYD_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "loop_conn.h"
#include "ratelimit.h"

enum conn_state {
	CS_TLS_HS = 0,
	CS_NEW,
	CS_HELLO_DONE,
	CS_READY,
	CS_DRAINING,
	CS_CLOSING,
};

struct obuf {             /* one chunk of the outbound queue */
	struct obuf *next;
	uint32_t len, cap, off;  /* bytes [off, len) still to send */
	uint8_t data[];
};

struct ev_stash {         /* a resolved EVENT not yet queued (early, or queue full) */
	struct ev_stash *next;
	uint64_t inbox_seq;
	struct lm_conv_pos pos;  /* early delivery (conn.c) */
	uint64_t t_start;        /* its resolution began (stage timing) */
	uint32_t len;
	uint8_t data[];
};

struct conn_ident {       /* set by HELLO (device) and AUTH (user) */
	uint8_t ulen, dlen;
	char user[121];
	char device[65];
};

struct chat_sub;
struct conn_early;
struct resolve;
struct presence_conn;
struct fwd_saved;
struct conn_virt;
struct conn_rtail;

struct conn {
	struct loop_sock sk;     /* the loop's: handle, fd, SQEs in flight */
	uint8_t state;           /* enum conn_state */
	bool zstd;               /* negotiated */
	bool early;              /* PARLEY_FEAT_EARLY negotiated */
	bool cursor_dirty;
	bool closing_after_flush;/* fatal error queued: close once flushed */
	bool oom;                /* a buffer the connection needs could not be
				    allocated: nothing more is queued, and it
				    closes at the end of the current entry
				    point (conn_oom_close) */
	bool sync_busy;          /* SYNC between request and subscribe */
	uint16_t goaway_reason;
	uint32_t inflight;       /* requests in flight */
	uint32_t resolving;      /* EVENT reads in flight */
	uint64_t last_rx_ns;
	uint64_t deadline_ns;    /* handshake or drain deadline, 0 = none */
	uint64_t window_full_ns; /* when the event window filled, 0 = not full */
	uint64_t token_exp_ms;
	uint64_t cursor_written_ns;
	/* receive: partial frame only (heap, freed when empty; its capacity
	 * is charged to the memory budget) */
	uint8_t *inbuf;
	uint32_t inlen, incap;
	uint64_t frame_start_ns; /* first byte of the partial frame in inbuf */
	/* send */
	struct obuf *oq_head, *oq_tail;
	uint64_t oq_bytes;
	/* TLS */
	SSL *ssl;
	/* identity */
	struct conn_ident *id;
	/* inbox delivery */
	struct chat_sub *sub;    /* inbox subscription (chat.h) */
	uint64_t ev_next;        /* next inbox_seq to queue */
	uint64_t ev_acked;       /* device's cursor (EVENT_ACK) */
	uint64_t cursor_stored;  /* last cursor written to k/ */
	/* delivered receipts (chat_receipt.h): acks up to rcpt_acked were
	 * reported; later ones wait at most CHAT_RCPT_ACK_COALESCE_MS */
	uint64_t rcpt_acked;
	uint64_t rcpt_sent_ns;
	struct ev_stash *stash;  /* sorted by inbox_seq */
	struct conn_early *early_st; /* early delivery state while subscribed
					(conn.c "Early delivery"), NULL = none */
	struct resolve *pend_head, *pend_tail; /* inbox pointers not yet read */
	uint64_t last_tx_ns;     /* last send progress (or queue start) */
	bool hs_slot;            /* holds a handshake admission slot */
	struct ratelimit_conn rl; /* this connection's buckets (ratelimit.h) */
	struct presence_conn *pres; /* session + subscriptions (presence.h) */
	/* forwarding (proxy.h, docs/CLUSTER.md §3.3): the requests in flight
	 * that go to the leader if this node answers them NOTLEADER (a
	 * client's connection on a cluster node with forwarding on) */
	struct fwd_saved *fwd_saved;
	/* a virtual connection: one request another node forwarded here,
	 * no socket; its reply goes back over the peer link (NULL: a
	 * client's connection) */
	struct conn_virt *virt;
	/* a remote inbox tail (tail_relay.h): this node holds no replica of
	 * the user's inbox, its SYNC runs on a node that does (NULL: none) */
	struct conn_rtail *rt;
};

#endif /* PARLEYD_CONN_H */
