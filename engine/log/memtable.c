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
 *   4. An entry of at most MEM_CHUNK_ENTRY_MAX bytes (header + payload) is
 *      carved from a chunk of its partition (below); a larger one is a
 *      malloc block of its own. Its len alone says which, at free too.
 *   5. A chunk is MEM_CHUNK_BYTES, aligned to its size (an entry finds
 *      its chunk by masking its address), and counts its live entries; it
 *      is unmapped (or kept as the partition's one spare) when the count
 *      drops to zero and it is not the chunk being filled (p->mcur).
 *
 * Entry chunks. Entries are made at apply (part_apply.c) and freed in bulk
 * by a flush, in about the order they were made. As malloc blocks they
 * grew the shard thread's malloc arena page by page (glibc grows a thread
 * arena with one mprotect per growth, then faults the page in): at 1 KiB
 * SENDs ~0.3-0.7 mprotect calls and several page faults per SEND. Carved
 * from 1 MiB chunks, a chunk costs one mmap, its pages are made present
 * MEM_CHUNK_POPULATE bytes at a time (MADV_POPULATE_WRITE: one call
 * instead of a fault per page), and a partition keeps one emptied chunk
 * for its next entries, so a memtable that fills and flushes in turn
 * reuses present pages. Untouched pages of the chunk being filled are not
 * resident. Memory the memtable bound counts is unchanged (mentry_cost);
 * what a partition holds beyond it is the unused tail of its current
 * chunk, at most one spare, and chunks still holding unflushed entries.
 * Builds with AddressSanitizer use plain malloc for every entry, so a use
 * after free is still caught.
 *
 * Threads: the partition's shard thread only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define MEM_CHUNKS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEM_CHUNKS 0
#endif
#endif
#ifndef MEM_CHUNKS
#define MEM_CHUNKS 1
#endif

#define MEM_CHUNK_POPULATE (64u << 10)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* A chunk's header, at its start; entries follow, 8-byte aligned. */
struct mchunk {
	uint32_t live;    /* entries carved and not freed */
	uint32_t used;    /* bytes carved so far (header included) */
	uint32_t present; /* bytes made present (MADV_POPULATE_WRITE) */
	uint32_t pad;
};

#define MEM_CHUNK_HDR ((uint32_t)sizeof(struct mchunk))

static size_t mentry_size(uint32_t len)
{
	return (sizeof(struct mentry) + (size_t)len + 7u) & ~(size_t)7u;
}

bool mentry_in_chunk(uint32_t len)
{
	return MEM_CHUNKS && mentry_size(len) <= MEM_CHUNK_ENTRY_MAX;
}

static struct mchunk *chunk_map(void)
{
	/* twice the size, then the unaligned ends unmapped */
	size_t sz = MEM_CHUNK_BYTES;
	uint8_t *raw = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	uintptr_t a = ((uintptr_t)raw + sz - 1) & ~(uintptr_t)(sz - 1);
	size_t head = a - (uintptr_t)raw;
	if (head)
		(void)munmap(raw, head);
	if (sz - head)
		(void)munmap((uint8_t *)a + sz, sz - head);
	struct mchunk *c = (struct mchunk *)a;
	c->live = 0;
	c->used = MEM_CHUNK_HDR;
	c->present = 0;
	return c;
}

/* An emptied chunk that is not being filled: kept as the spare, or
 * unmapped when there is one. */
static void chunk_release(struct part *p, struct mchunk *c)
{
	PARLEY_ASSERT(c->live == 0 && c != p->mcur);
	if (!p->mspare) {
		c->used = MEM_CHUNK_HDR;
		p->mspare = c;
	} else {
		(void)munmap(c, MEM_CHUNK_BYTES);
	}
}

/* Makes [c->used, c->used + n) present ahead of the first writes. A
 * kernel without MADV_POPULATE_WRITE (before 5.14) answers EINVAL: the
 * pages then fault in on first touch, as they would anyway. */
static void chunk_populate(struct mchunk *c, uint32_t end)
{
	static _Atomic int no_populate;
	if (end <= c->present)
		return;
	uint32_t to = PARLEY_MIN(
		(end + MEM_CHUNK_POPULATE - 1) & ~(MEM_CHUNK_POPULATE - 1),
		MEM_CHUNK_BYTES);
	if (!atomic_load_explicit(&no_populate, memory_order_relaxed) &&
	    madvise((uint8_t *)c + c->present, to - c->present,
		    MADV_POPULATE_WRITE) && errno == EINVAL)
		atomic_store_explicit(&no_populate, 1, memory_order_relaxed);
	c->present = to;
}

struct mentry *mentry_alloc(struct part *p, uint32_t len)
{
	if (!mentry_in_chunk(len))
		return malloc(sizeof(struct mentry) + len);
	uint32_t sz = (uint32_t)mentry_size(len);
	struct mchunk *c = p->mcur;
	if (c && c->used + sz > MEM_CHUNK_BYTES) {
		if (c->live == 0) {
			c->used = MEM_CHUNK_HDR; /* all freed: fill it again */
		} else {
			p->mcur = NULL; /* released by its last entry's free */
			c = NULL;
		}
	}
	if (!c) {
		if (p->mspare) {
			c = p->mspare;
			p->mspare = NULL;
		} else if (!(c = chunk_map())) {
			return NULL;
		}
		p->mcur = c;
	}
	chunk_populate(c, c->used + sz);
	struct mentry *m = (struct mentry *)((uint8_t *)c + c->used);
	c->used += sz;
	c->live++;
	return m;
}

void mentry_free(struct part *p, struct mentry *m)
{
	if (!m)
		return;
	if (!mentry_in_chunk(m->len)) {
		free(m);
		return;
	}
	struct mchunk *c =
		(struct mchunk *)((uintptr_t)m & ~(uintptr_t)(MEM_CHUNK_BYTES - 1));
	PARLEY_ASSERT(c->live > 0);
	if (--c->live)
		return;
	if (c == p->mcur)
		c->used = MEM_CHUNK_HDR; /* empty: fill it from the start */
	else
		chunk_release(p, c);
}

/* Unmaps the partition's chunks; every entry is freed already. */
static void chunks_free(struct part *p)
{
	if (p->mcur) {
		PARLEY_ASSERT(p->mcur->live == 0);
		(void)munmap(p->mcur, MEM_CHUNK_BYTES);
	}
	if (p->mspare)
		(void)munmap(p->mspare, MEM_CHUNK_BYTES);
	p->mcur = p->mspare = NULL;
}

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

/* stream_get of a key whose parley_hash_key is h. */
static struct stream *stream_get_hashed(struct part *p, const uint8_t *key,
					uint8_t klen, uint64_t h, bool create)
{
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

struct stream *stream_get(struct part *p, const uint8_t *key,
				 uint8_t klen, bool create)
{
	return stream_get_hashed(p, key, klen, parley_hash_key(key, klen),
				 create);
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
	return stream_lookup_hashed(p, key, klen, parley_hash_key(key, klen),
				    create);
}

/* stream_lookup of a key whose parley_hash_key is h (a caller that needs
 * the hash for more than the lookup computes it once). */
struct stream *stream_lookup_hashed(struct part *p, const uint8_t *key,
				    uint8_t klen, uint64_t h, bool create)
{
	struct stream *s = stream_get_hashed(p, key, klen, h, false);
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
	s = stream_get_hashed(p, key, klen, h, true);
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
		mentry_free(p, s->ents[i]);
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
				mentry_free(p, s->ents[k]);
			free(s->ents);
			free(s);
			s = n;
		}
	}
	free(p->sbuckets);
	p->sbuckets = NULL;
	p->nsb = p->nstreams = 0;
	chunks_free(p);
	idem_free(p);
	p->idem_clock = 0;
	p->mem_bytes = p->nentries = 0;
}
