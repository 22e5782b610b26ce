/*
 * engine_util.h — small pieces the unit tests that drive one engine
 * directly share (test_shard.c, test_noblock.c, test_engine_history.c):
 *   - append_wait: pe_append_sync, waiting out back-pressure (it answers
 *     -PARLEY_EFULL while the partition's queue or memtable is full) with
 *     a pause of backoff_us between tries;
 *   - tail_cb / tail_next: a pe_subscribe callback that counts the
 *     consecutive seqs delivered to it: tail_next is the next seq it
 *     expects (the test sets it to the first one).
 * Threads: append_wait on the test's thread; tail_cb on the engine's
 * delivery thread, so tail_next is atomic.
 */
#ifndef ENGINE_UTIL_H
#define ENGINE_UTIL_H

#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "parley_engine.h"

static inline int append_wait(struct pe_engine *e, const struct pe_append_req *q,
			      struct pe_append_result *r, unsigned backoff_us)
{
	int rc;
	while ((rc = pe_append_sync(e, q, r)) == -PARLEY_EFULL)
		usleep(backoff_us);
	return rc;
}

static __attribute__((unused)) _Atomic uint64_t tail_next;

static inline enum pe_sub_ret tail_cb(void *arg, struct pe_sub *sub,
				      const struct pe_sub_update *u)
{
	(void)arg;
	(void)sub;
	if (u->event == PE_SUB_ENTRIES)
		for (uint32_t i = 0; i < u->count; i++)
			if (u->entries[i].seq == atomic_load(&tail_next))
				atomic_fetch_add(&tail_next, 1);
	return PE_SUB_CONTINUE;
}

#endif /* ENGINE_UTIL_H */
