/*
 * loop.h — parleyd's io_uring event loops (private to server/). The
 * server-wide context is in srv.h, the messages to a loop in lmsg.h, the
 * interface between a loop and its connections in loop_conn.h.
 *
 * One loop per thread ("one per core", configurable), shared-nothing: each
 * loop owns its ring, its listening sockets (SO_REUSEPORT: the kernel
 * spreads accepted connections over the loops), its provided-buffer ring,
 * its connections and its timers. Nothing but loop_post()/loop_stop() may
 * be called on a loop from another thread.
 *
 * Engine callbacks run on engine shard threads. They never touch a
 * connection: they build a `struct lmsg` naming the connection by handle
 * (struct conn_ref: loop, slot, generation) and post it (lmsg.h).
 * loop_post() appends to the
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
 * send in flight per connection, started at the end of a round (batched
 * writes: loop_conn_kick in loop_conn.h); a 100 ms timeout drives timers; an
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

#include "lmsg.h"
#include "srv.h"

struct loop;

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
/* Any thread: ask the loop to drain (GOAWAY DRAIN to every client, finish
 * in-flight requests, flush) and return from loop_main. */
void loop_stop(struct loop *lp);
void loop_free(struct loop *lp);
/* Number of connections open on the loop (relaxed read, any thread). */
uint32_t loop_conn_count(struct loop *lp);

#endif /* PARLEYD_LOOP_H */
