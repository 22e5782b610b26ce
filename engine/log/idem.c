/*
 * idem.c — a partition's idempotency table: (stream, producer) -> the
 * first append's seq, count and timestamp.
 *
 * Part of the replicated state: it is changed only by applying log
 * commands (part_apply.c) and by loading the records history segments
 * carry (open.c), so every replica and every recovery builds the same
 * table. Expiry is measured in command time (the timestamp the leader
 * stamped), never by reading a clock. Bounded by idem_max per partition:
 * the oldest key is forgotten first (FIFO list).
 *
 * Threads: the partition's shard thread only (and open, before the shard
 * threads start).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

static uint64_t idem_hash(const struct stream *s, const uint8_t *producer)
{
	uint8_t b[8 + PE_PRODUCER_LEN];
	le_put64(b, s->hash);
	memcpy(b + 8, producer, PE_PRODUCER_LEN);
	return parley_xxh3(b, sizeof b, 0x4944454D);
}

struct idem *idem_find(struct part *p, const struct stream *s,
			      const uint8_t *producer)
{
	if (!p->nib)
		return NULL;
	uint64_t h = idem_hash(s, producer);
	for (struct idem *i = p->ibuckets[h & (p->nib - 1)]; i; i = i->hnext)
		if (i->st == s && !memcmp(i->producer, producer, PE_PRODUCER_LEN))
			return i;
	return NULL;
}

static void idem_unlink(struct part *p, struct idem *victim)
{
	uint64_t h = idem_hash(victim->st, victim->producer);
	struct idem **pp = &p->ibuckets[h & (p->nib - 1)];
	while (*pp && *pp != victim)
		pp = &(*pp)->hnext;
	PARLEY_ASSERT(*pp == victim);
	*pp = victim->hnext;
	p->nidem--;
}

/* Forget keys older than the window (in command time) or over the cap. */
void idem_expire(struct part *p, uint64_t window_ms, uint32_t max,
		 uint64_t now)
{
	while (p->ihead &&
	       (p->nidem > max || p->ihead->ts + window_ms < now)) {
		struct idem *i = p->ihead;
		p->ihead = i->fnext;
		if (!p->ihead)
			p->itail = NULL;
		idem_unlink(p, i);
		free(i);
	}
}

/* Makes room for one more record in the hash table (may allocate). */
int idem_reserve(struct part *p)
{
	if (p->nidem + 1 <= p->nib)
		return 0;
	uint64_t nn = p->nib ? p->nib * 2 : 256;
	struct idem **nb = calloc(nn, sizeof *nb);
	if (!nb)
		return -ENOMEM;
	for (uint64_t b = 0; b < p->nib; b++) {
		struct idem *i = p->ibuckets[b];
		while (i) {
			struct idem *n = i->hnext;
			uint64_t h = idem_hash(i->st, i->producer);
			i->hnext = nb[h & (nn - 1)];
			nb[h & (nn - 1)] = i;
			i = n;
		}
	}
	free(p->ibuckets);
	p->ibuckets = nb;
	p->nib = nn;
	return 0;
}

/* Links a record allocated by the caller; never fails (idem_reserve came
 * first). */
void idem_link(struct part *p, struct idem *i, struct stream *s,
	       const uint8_t *producer, uint64_t seq, uint32_t count,
	       uint64_t ts)
{
	PARLEY_ASSERT(p->nidem + 1 <= p->nib);
	memset(i, 0, sizeof *i);
	i->st = s;
	memcpy(i->producer, producer, PE_PRODUCER_LEN);
	i->seq = seq;
	i->count = count;
	i->ts = ts;
	uint64_t h = idem_hash(s, producer);
	i->hnext = p->ibuckets[h & (p->nib - 1)];
	p->ibuckets[h & (p->nib - 1)] = i;
	if (p->itail)
		p->itail->fnext = i;
	else
		p->ihead = i;
	p->itail = i;
	p->nidem++;
}

int idem_insert(struct part *p, struct stream *s,
		       const uint8_t *producer, uint64_t seq, uint32_t count,
		       uint64_t ts)
{
	int rc = idem_reserve(p);
	if (rc)
		return rc;
	struct idem *i = malloc(sizeof *i);
	if (!i)
		return -ENOMEM;
	idem_link(p, i, s, producer, seq, count, ts);
	return 0;
}
