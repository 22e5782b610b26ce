/*
 * route.h — which node leads a partition, and which partition a request
 * was refused NOTLEADER for (private to server/; docs/CLUSTER.md §3.3).
 *
 * Every route of a cluster node asks one function which node to send a
 * partition's work to: route_partition_leader (a chat write forwarded to
 * its partition's leader, chat_append; a client request forwarded by the
 * gateway, proxy.h; the leader hint of ERROR NOTLEADER, conn.c). Today it
 * reads the engine's published Raft state (pe_raft_status); a placement
 * map that knows partitions this node holds no replica of extends it
 * here, and every route follows.
 *
 * The refusal note. A request the chat service refuses NOTLEADER was
 * refused for one partition (the conversation's, the group's, ...), and
 * the gateway must forward it to *that* partition's leader, not to
 * partition 0's. The chat service notes the partition (and the leader the
 * engine named, if it did) on the thread that answers, right where it
 * refuses: route_leader_check for a refusal before anything is proposed,
 * route_read for a read of a partition this node holds no replica of,
 * route_note around a callback that carries an engine NOTLEADER. The
 * connection that writes (or forwards) that NOTLEADER takes the note on
 * the same thread (route_take); a NOTLEADER with no note falls back to
 * partition 0's leader (the old hint). Invariants:
 *   1. A note lives on one thread and names a refusal of the request
 *      being answered there: whoever notes around a callback clears after
 *      it (route_clear), and a connection clears before it runs a new
 *      request (a loop thread). A check that refuses without its refusal
 *      becoming an answer (a leader check made for another purpose on an
 *      engine thread) leaves its note until the next clear there; a
 *      NOTLEADER answered on that thread meanwhile, without a note of its
 *      own, is routed to that partition's leader, which answers
 *      NOTLEADER naming the right one: a wrong hop, never a wrong answer.
 *   2. Taking a note consumes it (one NOTLEADER, one note).
 *
 * Threads: route_partition_leader any thread (published state, never
 * blocks); the note is thread-local.
 */
#ifndef PARLEYD_ROUTE_H
#define PARLEYD_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "parley_engine.h"

/* Partition unknown: partition 0's leader stands for it. */
#define ROUTE_PARTITION_ANY UINT32_MAX

/* The node that leads partition p as this node knows it; 0 when none is
 * known (an election) or when it is this node. */
uint64_t route_partition_leader(struct pe_engine *e, uint32_t p);

/* A resolver for partitions this node does not hold (a placement map,
 * docs/CLUSTER.md §3.7: peer_node_route): returns the node leading p, 0
 * for none known, or UINT64_MAX when this node holds p (the rules here
 * apply). Installed before clients are served; NULL = none. When it
 * names a node, route_partition_leader and route_refusal_leader answer
 * it (this node's own group for p is stale or was never a member). */
typedef uint64_t (*route_resolver_fn)(void *arg, uint32_t p);
void route_set_resolver(route_resolver_fn fn, void *arg);

/* Whether this node holds a replica of p (no resolver: every node holds
 * every partition). A tail of an inbox it does not hold is served by a
 * node that does (tail_relay.h). */
bool route_holds(uint32_t p);
/* pe_partition_leader_check, noting p when it answers NOTLEADER. */
int route_leader_check(struct pe_engine *e, uint32_t p);

/* The read of a client request's stream (any thread, never blocks):
 * pe_read when this node holds a replica of the key's partition
 * (route_holds); else -PARLEY_ENOTLEADER at once (only then: pe_read
 * never answers it at once), cb not called, the partition noted
 * (route_note), so that the gateway forwards the request
 * to that partition's leader (docs/CLUSTER.md §3.3). A node taken off a
 * partition by a membership change is not told: its own group there is
 * stale, a linearizable read on it fails NOTLEADER only after the
 * ReadIndex bound (3 election timeouts) and a plain one answers from an
 * old copy. Every primary read a request makes of a partition it needs
 * current goes through here (its secondary reads: route_read_any); a
 * caller whose answer leaves on another thread than the refusal (reads
 * in parallel) carries the partition to it (route_take right after the
 * refusal, route_note before the answer). */
int route_read(struct pe_engine *e, const struct pe_read_req *q,
	       pe_read_cb cb, void *arg);
/* The reader of partitions this node holds no replica of (tail_relay.h
 * invariant 7, tail_relay_xread): asks the partition's leader to read q
 * and calls cb with its result, on another thread, exactly once; 0, or
 * < 0 and cb not called (-PARLEY_EVERSION: that leader cannot be asked).
 * Installed before clients are served (proxy_node.c); NULL = none. */
typedef int (*route_remote_fn)(void *arg, const struct pe_read_req *q,
			       pe_read_cb cb, void *cb_arg);
void route_set_remote(route_remote_fn fn, void *arg);

/* A secondary read of a request that reads several partitions (its
 * primary read went through route_read, so the request runs where that
 * partition is held): pe_read when this node holds a replica of the
 * key's partition; else the remote reader asks that partition's leader
 * (docs/CLUSTER.md §3.3, "Reads of partitions not held"): cb then runs
 * on the peer thread, with entries the relay owns for the call, or
 * r->err -PARLEY_EAGAIN when no answer came in time. Without a remote
 * reader, or toward a leader of a build without it: -PARLEY_ENOTLEADER
 * at once, noting the partition, as route_read. Other errors as pe_read
 * (-PARLEY_EFULL: too many remote reads in flight). */
int route_read_any(struct pe_engine *e, const struct pe_read_req *q,
		   pe_read_cb cb, void *arg);

/* route_read's check alone, for a request that must run where key's
 * partition is held before it reads it (CONV_OPEN): 0, or
 * -PARLEY_ENOTLEADER noting the partition. */
int route_hold_check(struct pe_engine *e, const void *key, size_t klen);

/* Notes that the request answered on this thread was refused NOTLEADER
 * for partition p (ROUTE_PARTITION_ANY: unknown) with the engine's
 * leader hint `leader` (0 = none); replaces an earlier note. */
void route_note(uint32_t p, uint64_t leader);
/* Takes (and clears) this thread's note: false when there is none. */
bool route_take(uint32_t *p, uint64_t *leader);
void route_clear(void);

/* The leader a NOTLEADER refusal routes to: the engine's hint when it
 * named one (other than self), else p's leader by route_partition_leader
 * (p ROUTE_PARTITION_ANY: partition 0's). 0 = none / this node. */
uint64_t route_refusal_leader(struct pe_engine *e, uint32_t p,
			      uint64_t leader, uint64_t self);

#endif /* PARLEYD_ROUTE_H */
