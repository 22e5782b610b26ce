/*
 * admin.h — parleyd's admin HTTP port (private to server/): /metrics
 * (Prometheus text format 0.0.4), /livez, /readyz.
 *
 * One thread, blocking sockets with short timeouts: the admin port is for
 * scrapers and probes, not for clients, so it stays out of the event
 * loops. A request is read (at most 4 KiB, 2 s), answered and closed
 * (HTTP/1.0 semantics, Connection: close). Anything but GET of the three
 * paths gets 404 / 405.
 *
 *   /livez   200 while the process runs its admin thread.
 *   /readyz  200 once the loops serve and until a drain starts, else 503.
 *   /metrics counters of every loop (struct srv_counters), the engine
 *            (pe_stats: appends, WAL batches = fdatasyncs, bytes, fsync
 *            time) and the fan-out service (chat_stats).
 *
 * Threads: admin_start/admin_stop from the main thread; the srv fields it
 * reads are atomics or read-only after start.
 */
#ifndef PARLEYD_ADMIN_H
#define PARLEYD_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"

struct admin;

/* Binds host:port (port 0: no admin port, *out = NULL, returns 0). */
int admin_start(struct srv *s, const char *host, uint16_t port,
		struct admin **out);
void admin_set_ready(struct admin *a, int ready);
void admin_stop(struct admin *a);

/* The /metrics body into buf (NUL-terminated); returns its length, or the
 * length it needs when cap is too small. */
size_t admin_metrics_text(struct srv *s, char *buf, size_t cap);

#endif /* PARLEYD_ADMIN_H */
