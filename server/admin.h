/*
 * admin.h — parleyd's admin HTTP port (private to server/): /metrics
 * (Prometheus text format 0.0.4), /livez, /readyz.
 *
 * One thread with one poll() loop over non-blocking sockets: the admin
 * port is for scrapers and probes, not for clients, so it stays out of
 * the event loops, and no admin client can make it wait (a slow or idle
 * client only holds its own slot). Bounds (admin_opts, config keys in
 * parentheses):
 *   - at most max_conns connections (admin_max_connections); a new one
 *     beyond that evicts the oldest (one waiting for a membership
 *     operation only when all are), which gets 503;
 *   - a request (request line + headers) of at most ADMIN_MAX_REQUEST
 *     bytes, else 431;
 *   - the whole request must arrive within request_timeout_ms of the
 *     accept (admin_request_timeout_ms; not reset by each byte), else 408;
 *     the response must be taken within the same time after it starts.
 * A request is answered and the connection closed (Connection: close).
 * Malformed request line: 400; a method other than GET/HEAD: 405; an
 * unknown path: 404.
 *
 *   /livez   200 while the process runs its admin thread.
 *   /readyz  200 once the loops serve and until a drain starts, else 503.
 *   /metrics counters of every loop (struct srv_counters), the engine
 *            (pe_stats: appends, WAL batches = fdatasyncs, bytes, fsync
 *            time) and the fan-out service (chat_stats).
 *   POST /cluster/add-node?id=N&peer=addr:port[&client=..][&admin=..]
 *   POST /cluster/remove-node?id=N[&force=1]
 *            cluster membership (peer_node_add_node / _remove_node,
 *            docs/CLUSTER.md §3.7) on the node leading partition 0: 200
 *            done, 409 not the leader (the body names its id), an unsafe
 *            removal refused (force=1 overrides) or another operation in
 *            progress, 400 bad request, 504 not done within 60 s
 *            (idempotent: repeat). The operation runs on the membership
 *            worker (peer_node_op_start); the request waits for it while
 *            the admin thread answers other requests.
 *   GET /cluster  this node's view as JSON (admin_cluster_json).
 *
 * Threads: admin_start/admin_stop from the main thread; the srv fields it
 * reads are atomics or read-only after start.
 */
#ifndef PARLEYD_ADMIN_H
#define PARLEYD_ADMIN_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "loop.h"

#define ADMIN_MAX_REQUEST 4096

struct admin;

struct admin_opts {
	const char *host;            /* admin_listen */
	uint16_t port;               /* admin_port, 0 = no admin port */
	uint32_t max_conns;          /* admin_max_connections, >= 1 */
	uint32_t request_timeout_ms; /* admin_request_timeout_ms, >= 1 */
	bool compact;                /* admin_compact: POST /admin/compact
					flushes and compacts every partition
					(blocking the admin thread meanwhile) */
	bool digest;                 /* admin_digest: GET /debug/digest reads
					every partition whole (blocking the
					admin thread meanwhile) */
};

/* Binds host:port (port 0: no admin port, *out = NULL, returns 0) and
 * starts the admin thread. */
int admin_start(struct srv *s, const struct admin_opts *o, struct admin **out);
void admin_set_ready(struct admin *a, int ready);
void admin_stop(struct admin *a);

/* The /metrics body into buf (NUL-terminated); returns its length, or the
 * length it needs when cap is too small. */
size_t admin_metrics_text(struct srv *s, char *buf, size_t cap);
/* The JSON of GET /cluster (docs/CLUSTER.md §3.6): this node's ids and
 * readiness (`ready`, as /readyz), its peer links, and every partition's
 * group state with, on the leader, each member's match and lag. Same
 * length convention as admin_metrics_text. Any thread. */
size_t admin_cluster_json(struct srv *s, bool ready, char *buf, size_t cap);

#endif /* PARLEYD_ADMIN_H */
