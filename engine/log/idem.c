/*
 * idem.c — a partition's idempotency table: (stream, producer) -> the
 * first append's seq, count and timestamp.
 *
 * Part of the replicated state: it is changed only by applying log
 * commands (part_apply.c) and, at open, rebuilt from the records history
 * segments carry (idem_rebuild), and the rebuilt table must be the one
 * the live engine had after applying the same prefix of the log —
 * otherwise WAL replay decides "duplicate or new" differently than the
 * first apply did and acknowledged seqs move (a retry the live table had
 * forgotten and appended anew would be skipped as a duplicate).
 *
 * So the table is a function of the applied commands only, not of their
 * history of evictions nor of any clock:
 *   - idem_clock is the largest timestamp of any APPEND applied (the
 *     proposer stamps it; never the clock of this process);
 *   - the records are kept in one total order, ascending by (ts, key,
 *     producer, seq) — the order hpart_idem_load sorts segment records
 *     in — not in insertion order (which a reload cannot know);
 *   - after every APPEND the table holds exactly the greatest idem_max
 *     records (in that order) among every record ever inserted whose ts
 *     is at least idem_clock - window: expiry and the cap both drop from
 *     the low end (idem_expire), eagerly, after the insertion too.
 * A record leaves only from the low end and an inserted record's ts is
 * at least every earlier record's of its stream, so "the greatest
 * idem_max of all records within the window" is what the live sequence
 * of inserts and trims leaves, and what idem_rebuild computes from the
 * segments' records (every idempotent append's record reaches a segment:
 * flushes derive them from the entries, compaction carries them). A key
 * with two records in the segments (the older one was forgotten, the
 * retry appended anew) keeps the newer one.
 *
 * The rebuild needs idem_clock at the flushed index: it takes the largest
 * entry timestamp of the segments (an entry's ts is max(command ts,
 * stream's last ts), so the largest one is the largest command ts
 * flushed), and WAL recovery raises it further with the APPEND records at
 * or below the flushed index it skips (part_raft_recover).
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

/* The table's total order (the same as hpart.c's idem_ts_cmp). */
static int idem_cmp(const struct idem *a, const struct idem *b)
{
	if (a->ts != b->ts)
		return a->ts < b->ts ? -1 : 1;
	int c = memcmp(a->st->key, b->st->key,
		       PARLEY_MIN(a->st->klen, b->st->klen));
	if (!c)
		c = a->st->klen < b->st->klen ? -1 : a->st->klen > b->st->klen;
	if (!c)
		c = memcmp(a->producer, b->producer, PE_PRODUCER_LEN);
	if (!c)
		c = a->seq < b->seq ? -1 : a->seq > b->seq;
	return c;
}

/* Takes victim out of both the hash table and the order list and frees it. */
static void idem_remove(struct part *p, struct idem *victim)
{
	uint64_t h = idem_hash(victim->st, victim->producer);
	struct idem **pp = &p->ibuckets[h & (p->nib - 1)];
	while (*pp && *pp != victim)
		pp = &(*pp)->hnext;
	PARLEY_ASSERT(*pp == victim);
	*pp = victim->hnext;
	if (victim->fprev)
		victim->fprev->fnext = victim->fnext;
	else
		p->ihead = victim->fnext;
	if (victim->fnext)
		victim->fnext->fprev = victim->fprev;
	else
		p->itail = victim->fprev;
	p->nidem--;
	free(victim);
}

/* Drops from the low end: over the cap, or older than the window before
 * idem_clock (command time). */
void idem_expire(struct part *p)
{
	uint64_t win = p->cfg.idem_window_ms;
	uint64_t min_ts = p->idem_clock > win ? p->idem_clock - win : 0;
	while (p->ihead && (p->nidem > p->cfg.idem_max || p->ihead->ts < min_ts))
		idem_remove(p, p->ihead);
}

/* An APPEND with timestamp ts is applied (or, at recovery, skipped as
 * already in history): command time moves on, old keys are forgotten. */
void idem_advance(struct part *p, uint64_t ts)
{
	if (ts > p->idem_clock)
		p->idem_clock = ts;
	idem_expire(p);
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

/* Links a record allocated by the caller at its place in the order (walked
 * from the high end: timestamps mostly grow); never fails (idem_reserve
 * came first). The caller trims with idem_expire afterwards. */
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
	struct idem *after = p->itail;
	while (after && idem_cmp(after, i) > 0)
		after = after->fprev;
	i->fprev = after;
	i->fnext = after ? after->fnext : p->ihead;
	if (i->fnext)
		i->fnext->fprev = i;
	else
		p->itail = i;
	if (after)
		after->fnext = i;
	else
		p->ihead = i;
	p->nidem++;
}

/* One segment record, in ascending order: a newer record of a key replaces
 * the older one (which the live table had forgotten before the retry was
 * appended anew). */
static int idem_load_cb(void *arg, const struct seg_idem *rec)
{
	struct part *p = arg;
	struct stream *s = stream_lookup(p, rec->key, rec->klen, true);
	if (!s)
		return -PARLEY_ENOMEM;
	struct idem *old = idem_find(p, s, rec->producer);
	if (old)
		idem_remove(p, old);
	int rc = idem_reserve(p);
	if (rc)
		return rc;
	struct idem *i = malloc(sizeof *i);
	if (!i)
		return -PARLEY_ENOMEM;
	idem_link(p, i, s, rec->producer, rec->seq, rec->count, rec->ts);
	idem_expire(p); /* ascending input: the table never exceeds the cap */
	return 0;
}

/* One record of the table as an install gathered it (log/part_snap.c):
 * the same as idem_rebuild's, records given in ascending order. */
int idem_load_record(struct part *p, const struct seg_idem *rec)
{
	return idem_load_cb(p, rec);
}

/* The command time history has reached: the newest entry time in its
 * segments (what idem_rebuild starts the table's clock from). 0 when
 * there is no segment; UINT64_MAX when out of memory (no answer). */
uint64_t idem_history_clock(struct part *p)
{
	uint64_t c = 0;
	size_t n = hpart_segments(p->hist, NULL, 0);
	if (n) {
		struct hpart_seg_view *v = malloc(n * sizeof *v);
		if (!v)
			return UINT64_MAX;
		n = hpart_segments(p->hist, v, n);
		for (size_t k = 0; k < n; k++)
			c = PARLEY_MAX(c, v[k].info.max_ts);
		free(v);
	}
	return c;
}

int idem_rebuild(struct part *p)
{
	uint64_t hc = idem_history_clock(p);
	if (hc == UINT64_MAX)
		return -PARLEY_ENOMEM;
	p->idem_clock = PARLEY_MAX(p->idem_clock, hc);
	uint64_t win = p->cfg.idem_window_ms;
	uint64_t min_ts = p->idem_clock > win ? p->idem_clock - win : 0;
	return hpart_idem_load(p->hist, min_ts, idem_load_cb, p);
}
