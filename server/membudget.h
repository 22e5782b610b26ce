/*
 * membudget.h — parleyd's global memory budget (private to server/).
 *
 * One budget per process (memory_budget_bytes). What counts against it:
 *
 *   conn   every connection's receive buffer (a partial frame) and
 *          outbound queue chunks, charged and released exactly where they
 *          are allocated and freed (server/conn.c);
 *   engine the engine's memtables (applied + proposed entries), its
 *          idempotency table and its queued requests (pe_memory), sampled
 *          by the event loops on every tick (100 ms).
 *
 * Back-pressure, not growth: while used > limit, or while the engine's
 * memtables are near their bounds (past MEMBUDGET_PRESSURE_ON of
 * memtable_total_bytes, or the fullest partition plus every queued
 * request past that fraction of one partition's memtable_bytes, until
 * both are back under MEMBUDGET_PRESSURE_OFF: the engine would otherwise
 * fail appends with EFULL while its flush catches up; the headroom left
 * above ON covers what the loops read before they see the pause), the
 * budget is "over" and
 * the event loops stop reading from client sockets (a connection's recv is
 * cancelled after the bytes already received are parsed, and re-armed only
 * once the budget recovers), so TCP flow control slows the clients down.
 * Nothing is dropped: requests already read run to their reply (SEND_ACK
 * or ERROR), queued replies and events are still sent. The budget recovers
 * as outbound queues drain, partial frames complete or time out
 * (frame_timeout_ms) and the engine flushes its memtables (it is given
 * half the budget as its memtable bound, memtable_total_bytes, and starts
 * flushing at half of that). Hysteresis: reading resumes once used <=
 * limit * MEMBUDGET_RESUME_NUM / MEMBUDGET_RESUME_DEN.
 *
 * Not counted (fixed or bounded elsewhere, the "slack" of docs/SERVER.md):
 * the binary, thread stacks, the loops' provided receive buffers and
 * scratch buffers, the engine's block cache, segment readers and flush /
 * compaction working memory, OpenSSL's per-connection state, struct conn.
 *
 * Threads: every function may be called from any thread (relaxed atomics;
 * the budget is a soft bound, exact to within one receive buffer per
 * connection and one engine sample).
 */
#ifndef PARLEYD_MEMBUDGET_H
#define PARLEYD_MEMBUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define MEMBUDGET_DEFAULT (1ull << 30)   /* memory_budget_bytes default */
#define MEMBUDGET_MIN (32ull << 20)      /* smallest accepted budget */
#define MEMBUDGET_RESUME_NUM 7u          /* resume reading at 7/8 */
#define MEMBUDGET_RESUME_DEN 8u
#define MEMBUDGET_PRESSURE_ON 0.625      /* of the engine's memtable bounds */
#define MEMBUDGET_PRESSURE_OFF 0.5

struct pe_memory;

struct membudget {
	uint64_t limit;
	uint64_t memtable_total;         /* the engine's bounds, as configured */
	uint64_t memtable_part;
	_Atomic int64_t conn_bytes;      /* receive + outbound buffers */
	_Atomic uint64_t engine_bytes;   /* last engine sample */
	atomic_bool engine_pressure;     /* memtables near their bounds */
	atomic_bool over;                /* loops are not reading */
	_Atomic uint64_t pauses;         /* times it went over */
	_Atomic uint64_t high_water;     /* largest used seen */
};

void membudget_init(struct membudget *b, uint64_t limit,
		    uint64_t memtable_total, uint64_t memtable_part);
/* A connection buffer of n bytes was allocated (n > 0) or freed (n < 0). */
void membudget_charge(struct membudget *b, int64_t n);
/* A new sample of the engine's usage (pe_memory()). */
void membudget_set_engine(struct membudget *b, const struct pe_memory *m);
uint64_t membudget_used(struct membudget *b);
/* Re-evaluates the over/under state with hysteresis and returns it:
 * true = stop reading client sockets. */
bool membudget_over(struct membudget *b);

#endif /* PARLEYD_MEMBUDGET_H */
