/*
 * srv.h — parleyd's server-wide context shared by the loops, the
 * connections, the admin endpoint and main (private to server/): limits,
 * counters, the auth hook and the services a connection talks to.
 *
 * Ownership: main.c fills a struct srv before the loops start and frees
 * it after they stopped; everyone else only reads it (counters are
 * relaxed atomics, bumped from any thread).
 */
#ifndef PARLEYD_SRV_H
#define PARLEYD_SRV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "hist.h"
#include "membudget.h"
#include "parley_common.h"
#include "parley_engine.h"

struct admission;
struct presence;
struct chat;
struct chat_ret;
struct loop;
struct ratelimit;
struct proxy;
struct tail_relay;

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
	uint64_t edit_window_ms;     /* EDIT allowed this long after the message (edit_window_ms, 0 = always) */
	uint64_t delete_window_ms;   /* DELETE likewise (delete_window_ms) */
	uint32_t forward_timeout_ms; /* a forwarded request's bound (forward_timeout_ms) */
	bool early_delivery;         /* grant PARLEY_FEAT_EARLY (early_delivery) */
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
	_Atomic uint64_t edits, deletes;  /* EDIT / DELETE acknowledged */
	/* SEND -> SEND_ACK latency histogram, buckets in microseconds:
	 * le 100,250,500,1000,2500,5000,10000,25000,50000,100000,+Inf */
	_Atomic uint64_t ack_lat_bucket[11];
	_Atomic uint64_t read_markers; /* READ_MARKER requests */
	/* early delivery (conn.c): early EVENTs written / not written, inbox
	 * EVENTs sent without their body (EARLY_SEEN) */
	_Atomic uint64_t early_out, early_dropped, early_seen;
};
extern const double srv_ack_lat_bounds_s[10];

/* A bounded text buffer for the metrics pages (srv.c, admin.c):
 * srv_text_put appends printf-style; past cap it only counts, so n > cap
 * after the last put says the text did not fit. */
struct srv_text {
	char *b;
	size_t cap, n;
};
void srv_text_put(struct srv_text *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Per-stage timing of the hot paths (histograms on /metrics, see
 * docs/SERVER.md "Reading the stage histograms"):
 *
 *   send:     recv     the bytes completing a SEND frame arrived -> decoded
 *             submit   decoded -> the chat service issued the append
 *             durable  issued -> durable (the engine's callback)
 *             reply    durable -> SEND_ACK queued on the connection
 *   delivery: fanout   message durable -> its inbox appends issued (chat.c)
 *             inbox    inbox appends issued -> all durable (chat.c)
 *             notify   the inbox subscription's callback -> the
 *                      connection's loop has the pointer
 *             pending  the loop has it -> its resolution starts (waits
 *                      for the event window and the outbound queue)
 *             resolve  resolution started -> EVENT queued on the
 *                      connection (the message read and encoded)
 *             early    message durable -> its early EVENT queued on a
 *                      connection that asked (conn.c "Early delivery";
 *                      a held one's wait included)
 */
enum srv_send_stage {
	SRV_SEND_RECV = 0,
	SRV_SEND_SUBMIT,
	SRV_SEND_DURABLE,
	SRV_SEND_REPLY,
	SRV_SEND_NSTAGES
};
enum srv_deliver_stage {
	SRV_DELIVER_NOTIFY = 0,
	SRV_DELIVER_PENDING,
	SRV_DELIVER_RESOLVE,
	SRV_DELIVER_EARLY,
	SRV_DELIVER_NSTAGES
};
struct srv_stages {
	struct srv_hist send[SRV_SEND_NSTAGES];
	struct srv_hist deliver[SRV_DELIVER_NSTAGES];
};
/* Writes the families parley_send_stage_seconds{stage} and
 * parley_delivery_stage_seconds{stage} (with the chat service's fanout
 * and inbox stages) as Prometheus text into buf[0..cap); returns the
 * length it needed (like snprintf: output is cut at cap). */
struct srv;
struct peer_node;
size_t srv_stage_metrics(struct srv *s, char *buf, size_t cap);

/* Allocation failure where nothing can be answered and dropping would
 * break an invariant (docs/SERVER.md, "Errors and allocation failure",
 * rule 3): logs "out of memory" with `what` and aborts the process. */
void srv_oom(const char *what) __attribute__((noreturn));

/* JWT check hook: fills the token's sub (user id) and exp (unix ms, 0 =
 * none); returns 0 or -PARLEY_EAUTH with a short reason in why. */
typedef int (*srv_auth_fn)(void *arg, const char *token, size_t len,
			   char *sub, size_t subcap, uint64_t *exp_ms,
			   char *why, size_t whycap);

struct srv {
	struct pe_engine *engine;
	struct chat *chat;
	struct chat_ret *ret;        /* per-conversation retention (chat_retention.c) */
	SSL_CTX *tls;                /* NULL: no TLS listener */
	srv_auth_fn auth;
	void *auth_arg;
	struct srv_limits lim;
	struct membudget mem;        /* memory_budget_bytes, see membudget.h */
	char server_id[64];
	struct srv_counters ctr;
	struct srv_stages stages;    /* per-stage timing (above) */
	struct ratelimit *rl;        /* request rate limits; NULL = none */
	struct admission *adm;       /* handshake admission; NULL = none */
	struct presence *pres;       /* typing and presence; NULL = none */
	struct live *live;           /* subscribed connections per user, for
					large groups' live EVENTs (live.h);
					NULL = none */
	struct peer_node *peer;      /* a cluster node's replication (peer_node.h,
					/metrics, /readyz); NULL = one node */
	struct proxy *proxy;         /* request forwarding (proxy.h); NULL = one
					node (with forward = 0 it only serves
					other nodes' forwards) */
	struct tail_relay *tail;     /* inbox tails across nodes (tail_relay.h);
					NULL = one node */
	atomic_bool draining;
	struct loop **loops;
	unsigned nloops;
};

/* The leader hint of ERROR NOTLEADER (PROTOCOL.md, ERROR), in conn.c:
 * `fn` returns the node a NOTLEADER refused for `partition`
 * (ROUTE_PARTITION_ANY: not known, partition 0's leader stands for it)
 * names, `leader` being the engine's own hint when it gave one (0 =
 * none): route_refusal_leader (route.h), 0 = none known or this node; it
 * copies that node's advertised plain / TLS client addresses (cap bytes
 * each, "" = unknown). The gateway forwards to the same node (proxy.h).
 * parleyd installs it once its engine is open and removes it (NULL)
 * before it closes. One per process; any thread. */
typedef uint64_t (*srv_leader_hint_fn)(void *arg, uint32_t partition,
				       uint64_t leader, char *plain, char *tls,
				       size_t cap);
void conn_leader_hint_install(srv_leader_hint_fn fn, void *arg);

#endif /* PARLEYD_SRV_H */
