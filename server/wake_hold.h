/*
 * wake_hold.h — eventfd wake-ups a thread holds until the end of its burst
 * (private to server/).
 *
 * An engine shard thread answers a round's SENDs one callback at a time,
 * each posting to an event loop (loop_post), and every post that finds
 * the loop idle writes its eventfd: under load nearly one write, and one
 * loop wake-up, per answered SEND. A thread that holds its wake-ups
 * instead remembers each eventfd once and writes them all at the end of
 * its burst (wake_hold_flush), so a loop wakes once per shard stretch
 * with every answer of it queued. parleyd installs wake_hold_cb_flush as
 * the engine's pe_options.cb_flush, which the shard thread calls at the
 * end of every stretch and before it can block: a held wake-up is late
 * by at most the rest of that stretch, never lost.
 *
 * Invariants
 *   1. Only a thread that called wake_hold_begin holds; on any other
 *      wake_hold_add returns false and the caller writes at once.
 *   2. An eventfd is held at most once per burst (a second add of it is
 *      a no-op that still reports it held).
 *   3. At most WAKE_HOLD_MAX distinct eventfds are held; one more is not
 *      held (false: the caller writes at once), so nothing waits on a
 *      full list.
 *
 * Threads: every function acts on the calling thread's own state only.
 */
#ifndef PARLEYD_WAKE_HOLD_H
#define PARLEYD_WAKE_HOLD_H

#include <stdbool.h>
#include <stdint.h>

#define WAKE_HOLD_MAX 32u /* event loops are one per core */

/* From now on the calling thread holds its wake-ups (invariant 1). */
void wake_hold_begin(void);
/* Holds a wake-up of eventfd `fd` for this thread's next flush: true if
 * held (the caller does not write), false if the caller must write it
 * now (this thread does not hold, or the list is full). */
bool wake_hold_add(int fd);
/* Writes every held eventfd once (1) and forgets them; returns how many. */
uint32_t wake_hold_flush(void);
/* pe_options.cb_flush of parleyd: wake_hold_begin + wake_hold_flush on the
 * calling (shard) thread; arg unused. */
void wake_hold_cb_flush(void *arg);

#endif /* PARLEYD_WAKE_HOLD_H */
