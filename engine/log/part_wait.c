/*
 * part_wait.c — a partition's proposals waiting for their entry to be
 * committed and applied: each waiter (the request whose callback answers
 * the caller) is matched by the (index, term) its command was proposed at,
 * never by its position in a batch.
 *
 * Why (index, term): once a partition is a Raft group, a proposal's entry
 * may be overwritten by a new leader's entry at the same index; that
 * proposal then failed (the caller retries with the same idempotency key),
 * and the entry that applies there belongs to somebody else.
 *
 * Contract
 *   1. Waiters are pushed in increasing index order (proposals are made in
 *      log order) and kept in that order (a FIFO linked by req->next).
 *   2. part_wait_take(index, term) is called for each applied entry, in
 *      index order. It removes every waiter at or below index: the one
 *      proposed at exactly (index, term) is returned; one at index with
 *      another term lost its entry and is handed back through *lost. A
 *      waiter below index cannot exist (its entry applied first) and is
 *      asserted against.
 *   3. part_wait_take_after(index) removes the waiters above index: when
 *      leadership is lost these are exactly the proposals that were not
 *      committed (fail them with -PARLEY_ENOTLEADER, retryable); when the
 *      shard's log fails, all of them (index 0, -PARLEY_EFATAL).
 *   4. Pure bookkeeping: no callback is run here, no allocation.
 *
 * Threads: the partition's shard thread only.
 */
#include "engine_internal.h"

void part_wait_push(struct part *p, struct req *r)
{
	PARLEY_ASSERT(!p->wait_tail || p->wait_tail->index < r->index);
	r->next = NULL;
	if (p->wait_tail)
		p->wait_tail->next = r;
	else
		p->wait_head = r;
	p->wait_tail = r;
}

struct req *part_wait_take(struct part *p, uint64_t index, uint64_t term,
			   struct req **lost)
{
	*lost = NULL;
	struct req *r = p->wait_head;
	if (!r || r->index > index)
		return NULL;
	PARLEY_ASSERT(r->index == index); /* contract 2 */
	p->wait_head = r->next;
	if (!p->wait_head)
		p->wait_tail = NULL;
	r->next = NULL;
	if (r->term == term)
		return r;
	*lost = r;
	return NULL;
}

struct req *part_wait_take_after(struct part *p, uint64_t index)
{
	struct req **pp = &p->wait_head, *prev = NULL;
	while (*pp && (*pp)->index <= index) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	struct req *out = *pp;
	*pp = NULL;
	p->wait_tail = prev;
	return out;
}
