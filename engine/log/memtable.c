/*
 * memtable.c — a partition's streams in memory: the stream table (hash by
 * key), each stream's entries by seq, and how a stream the memtable does
 * not know continues from the history tier.
 *
 * Invariants
 *   1. stream->ents[i] has seq mem_first + i; seqs are dense. Seqs below
 *      mem_first are in history segments (flushed); seqs below first_seq
 *      are invisible (deleted or past retention) wherever they lie.
 *   2. A stream, once created, lives until the engine is freed (subs and
 *      idempotency records point at it); its key never changes.
 *   3. Entries (struct mentry) are immutable once applied and freed only by
 *      stream_drop_through (after a committed flush) or at engine free.
 *
 * Threads: the partition's shard thread only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* Memory an entry costs the memtable bound (entry + its slot). */
uint64_t mentry_cost(uint32_t len)
{
	return sizeof(struct mentry) + len + sizeof(struct mentry *);
}

static struct stream *stream_find(struct part *p, const uint8_t *key,
				  uint8_t klen, uint64_t h)
{
	if (!p->nsb)
		return NULL;
	for (struct stream *s = p->sbuckets[h & (p->nsb - 1)]; s; s = s->hnext)
		if (s->hash == h && s->klen == klen && !memcmp(s->key, key, klen))
			return s;
	return NULL;
}

static int stream_table_grow(struct part *p)
{
	uint64_t nn = p->nsb ? p->nsb * 2 : 64;
	struct stream **nb = calloc(nn, sizeof *nb);
	if (!nb)
		return -ENOMEM;
	for (uint64_t i = 0; i < p->nsb; i++) {
		struct stream *s = p->sbuckets[i];
		while (s) {
			struct stream *n = s->hnext;
			s->hnext = nb[s->hash & (nn - 1)];
			nb[s->hash & (nn - 1)] = s;
			s = n;
		}
	}
	free(p->sbuckets);
	p->sbuckets = nb;
	p->nsb = nn;
	return 0;
}

struct stream *stream_get(struct part *p, const uint8_t *key,
				 uint8_t klen, bool create)
{
	uint64_t h = parley_hash_key(key, klen);
	struct stream *s = stream_find(p, key, klen, h);
	if (s || !create)
		return s;
	if (p->nstreams + 1 > p->nsb && stream_table_grow(p))
		return NULL;
	s = calloc(1, sizeof *s + klen);
	if (!s)
		return NULL;
	s->hash = h;
	s->klen = klen;
	memcpy(s->key, key, klen);
	s->first_seq = 1;
	s->mem_first = 1;
	s->hnext = p->sbuckets[h & (p->nsb - 1)];
	p->sbuckets[h & (p->nsb - 1)] = s;
	p->nstreams++;
	return s;
}

struct mentry *stream_at(const struct stream *s, uint64_t seq)
{
	if (seq < s->mem_first || seq > s->last_seq)
		return NULL;
	return s->ents[seq - s->mem_first];
}

void mentry_to_pe(const struct mentry *m, struct pe_entry *o)
{
	*o = (struct pe_entry){.seq = m->seq, .ts_ms = m->ts, .type = m->type,
			       .flags = m->flags, .len = m->len,
			       .payload = m->payload};
	memcpy(o->producer, m->producer, PE_PRODUCER_LEN);
}

/*
 * Finds a stream, continuing it from history when the memtable does not
 * know it (after a flush dropped it, or after a restart): its seqs go on
 * from the last one in the segments or named by a deletion/retention mark
 * (seqs are never reused, even when every entry is gone). create: make an
 * empty stream when history has none either.
 */
struct stream *stream_lookup(struct part *p, const uint8_t *key,
				    uint8_t klen, bool create)
{
	struct stream *s = stream_get(p, key, klen, false);
	if (s)
		return s;
	bool found = false;
	uint64_t first = 1, last = 0, lts = 0;
	if (p->hist) {
		uint64_t fv, l, t;
		if (hpart_stream_meta(p->hist, key, klen, &fv, &l, &t) == 0) {
			found = true;
			first = fv;
			last = l;
			lts = t;
		}
		const struct hman_stream *m =
			hman_stream(hpart_manifest(p->hist), key, klen);
		if (m && m->deleted_through != UINT64_MAX) {
			/* Only compaction's first_retained proves seqs that are
			 * gone from the segments. A deletion mark may run ahead of
			 * the flushed index (stored by a commit while its WAL
			 * record is still to be replayed): it must not move
			 * last_seq, or the replay would give the entries it
			 * re-applies other seqs. */
			uint64_t ml = m->first_retained ? m->first_retained - 1 : 0;
			if (ml > last)
				last = ml;
			first = PARLEY_MAX(first, m->deleted_through + 1);
			first = PARLEY_MAX(first, m->first_retained);
			found |= ml > 0;
		}
	}
	if (!found && !create)
		return NULL;
	s = stream_get(p, key, klen, true);
	if (!s || !found)
		return s;
	s->last_seq = last;
	s->last_ts = lts;
	s->mem_first = last + 1;
	s->first_seq = PARLEY_MIN(first, last + 1);
	return s;
}

/* Frees the memtable's entries with seq <= through (already in history,
 * or deleted). Never while a flush job may read them. */
void stream_drop_through(struct part *p, struct stream *s,
				uint64_t through)
{
	through = PARLEY_MIN(through, s->last_seq);
	if (through < s->mem_first || !s->nents)
		return;
	uint64_t k = PARLEY_MIN(through - s->mem_first + 1, s->nents);
	for (uint64_t i = 0; i < k; i++) {
		p->mem_bytes -= mentry_cost(s->ents[i]->len);
		p->nentries--;
		free(s->ents[i]);
	}
	s->nents -= k;
	if (s->nents)
		memmove(s->ents, s->ents + k, s->nents * sizeof *s->ents);
	s->mem_first += k;
	if (!s->nents) {
		free(s->ents);
		s->ents = NULL;
		s->cap = 0;
	} else if (s->cap > 64 && s->nents < s->cap / 4) {
		struct mentry **ne = realloc(s->ents, s->cap / 2 * sizeof *ne);
		if (ne) {
			s->ents = ne;
			s->cap /= 2;
		}
	}
}

/* Frees the partition's streams, entries and idempotency table (the state
 * part_apply builds); the history tier and the waiters are the caller's. */
void part_free_state(struct part *p)
{
	for (uint64_t b = 0; b < p->nsb; b++) {
		struct stream *s = p->sbuckets[b];
		while (s) {
			struct stream *n = s->hnext;
			for (uint64_t k = 0; k < s->nents; k++)
				free(s->ents[k]);
			free(s->ents);
			free(s);
			s = n;
		}
	}
	free(p->sbuckets);
	p->sbuckets = NULL;
	p->nsb = p->nstreams = 0;
	idem_free(p);
	p->idem_clock = 0;
	p->mem_bytes = p->nentries = 0;
}
