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
 * Layout (what a lookup costs: SEND writes ~3 idempotent entries, every
 * one looked up at apply on the shard thread). Records are 64-byte nodes
 * in chunks of IDEM_CHUNK (never moved, so a node id stays valid; freed
 * nodes go on a free list and are reused, so the pool never holds more
 * than the table's peak, <= idem_max + 1). The index is open addressing
 * with linear probing over 8-byte slots: the low 32 bits of the record's
 * hash (its tag; its home slot is tag & mask, so the index never reads a
 * node to move a slot) and the node id; 0 is an empty slot. A lookup
 * reads slots until an empty one and a node only when the tag matches,
 * so a new key (the common case) usually costs one cache line; deletion
 * shifts the cluster back (no tombstones). The load stays within
 * (IDEM_LOAD_NUM/IDEM_LOAD_DEN)/2 .. IDEM_LOAD_NUM/IDEM_LOAD_DEN once
 * grown: at most 3 slots of 8 bytes per key, which IDEM_KEY_BYTES counts.
 * An append looks its key up (idem_find) and, when it is new, inserts it
 * (idem_link) right after: the lookup leaves its hash and the empty slot
 * its probe ended at (p->ihint_*), and the insert takes them instead of
 * hashing and probing again, if the key is the same and no slot changed
 * in between (p->imod counts every change; a growth in idem_reserve
 * between the two keeps the hash and probes the new slots).
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

#define IDEM_CHUNK_SHIFT 8u
#define IDEM_CHUNK (1u << IDEM_CHUNK_SHIFT) /* nodes per chunk (16 KiB) */
#define IDEM_MIN_SLOTS 256u
#define IDEM_LOAD_NUM 7u /* grow past 7/10 of the slots in use */
#define IDEM_LOAD_DEN 10u

/* A record's hash from its stream key's hash (struct stream.hash,
 * parley_hash_key) and its producer: computable before the stream is
 * found, so that apply can fetch the index slot meanwhile. */
uint64_t idem_hash_key(uint64_t key_hash, const uint8_t *producer)
{
	uint8_t b[8 + PE_PRODUCER_LEN];
	le_put64(b, key_hash);
	memcpy(b + 8, producer, PE_PRODUCER_LEN);
	return parley_xxh3(b, sizeof b, 0x4944454D);
}

static uint64_t idem_hash(const struct stream *s, const uint8_t *producer)
{
	return idem_hash_key(s->hash, producer);
}

/* Starts loading the index slot a lookup of hash h reads first (a cache
 * miss into a table of a few MB after a while under load: ~1 us of a
 * 1:1 SEND's shard CPU was this first read). A hint: no effect on the
 * table. */
void idem_prefetch(const struct part *p, uint64_t h)
{
	if (p->nidem)
		__builtin_prefetch(&p->islots[h & (p->nislots - 1)], 0, 3);
}

static struct idem *idem_node(const struct part *p, uint32_t id)
{
	PARLEY_ASSERT(id != IDEM_NIL && id <= p->inodes);
	uint32_t k = id - 1;
	return &p->ichunks[k >> IDEM_CHUNK_SHIFT][k & (IDEM_CHUNK - 1)];
}

static uint64_t slot_make(uint64_t h, uint32_t id)
{
	return (uint64_t)(uint32_t)h << 32 | id;
}

static uint32_t slot_id(uint64_t v)
{
	return (uint32_t)v;
}

static uint64_t slot_home(uint64_t v, uint64_t mask)
{
	return (v >> 32) & mask; /* mask < 2^32: the tag holds the home */
}

/* The slot holding a record with hash h whose node satisfies the match,
 * or the empty slot ending its probe (index nislots = none). */
static uint64_t idem_probe(const struct part *p, uint64_t h,
			   const struct stream *s, const uint8_t *producer)
{
	uint64_t mask = p->nislots - 1;
	uint32_t tag = (uint32_t)h;
	for (uint64_t k = h & mask;; k = (k + 1) & mask) {
		uint64_t v = p->islots[k];
		if (!v)
			return k;
		if ((uint32_t)(v >> 32) == tag) {
			const struct idem *i = idem_node(p, slot_id(v));
			if (i->st == s &&
			    !memcmp(i->producer, producer, PE_PRODUCER_LEN))
				return k;
		}
	}
}

/* The id of the record of (s, producer), IDEM_NIL when none. */
static uint32_t idem_lookup(const struct part *p, const struct stream *s,
			    const uint8_t *producer)
{
	if (!p->nidem)
		return IDEM_NIL;
	return slot_id(p->islots[idem_probe(p, idem_hash(s, producer), s,
					    producer)]);
}

struct idem *idem_find(struct part *p, const struct stream *s,
			      const uint8_t *producer)
{
	return idem_find_hashed(p, s, producer, idem_hash(s, producer));
}

/* idem_find with the record's hash h = idem_hash_key(s->hash, producer). */
struct idem *idem_find_hashed(struct part *p, const struct stream *s,
			      const uint8_t *producer, uint64_t h)
{
	uint64_t k = p->nidem ? idem_probe(p, h, s, producer) : 0;
	uint32_t id = p->nidem ? slot_id(p->islots[k]) : IDEM_NIL;
	if (id != IDEM_NIL)
		return idem_node(p, id);
	/* for the idem_link that follows (a new key) */
	p->ihint_s = s;
	memcpy(p->ihint_prod, producer, PE_PRODUCER_LEN);
	p->ihint_h = h;
	p->ihint_k = k;
	p->ihint_mod = p->nidem ? p->imod : p->imod - 1; /* no probe made */
	return NULL;
}

const struct idem *idem_first(const struct part *p)
{
	return p->ihead != IDEM_NIL ? idem_node(p, p->ihead) : NULL;
}

const struct idem *idem_next(const struct part *p, const struct idem *i)
{
	return i->fnext != IDEM_NIL ? idem_node(p, i->fnext) : NULL;
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

/* Empties slot k and shifts the rest of its cluster back so no probe
 * stops early (linear probing without tombstones). */
static void idem_slot_clear(struct part *p, uint64_t k)
{
	uint64_t mask = p->nislots - 1;
	uint64_t j = k;
	for (;;) {
		j = (j + 1) & mask;
		uint64_t v = p->islots[j];
		if (!v)
			break;
		uint64_t home = slot_home(v, mask);
		/* v may move to k unless its home lies cyclically in (k, j] */
		bool stays = k <= j ? (home > k && home <= j)
				    : (home > k || home <= j);
		if (!stays) {
			p->islots[k] = v;
			k = j;
		}
	}
	p->islots[k] = 0;
	p->imod++;
}

/* Takes the record with id out of the index and the order list; its node
 * goes back to the pool. */
static void idem_remove(struct part *p, uint32_t id)
{
	struct idem *victim = idem_node(p, id);
	uint64_t mask = p->nislots - 1;
	uint64_t k = victim->h & mask;
	while (slot_id(p->islots[k]) != id) {
		PARLEY_ASSERT(p->islots[k]);
		k = (k + 1) & mask;
	}
	idem_slot_clear(p, k);
	if (victim->fprev != IDEM_NIL)
		idem_node(p, victim->fprev)->fnext = victim->fnext;
	else
		p->ihead = victim->fnext;
	if (victim->fnext != IDEM_NIL)
		idem_node(p, victim->fnext)->fprev = victim->fprev;
	else
		p->itail = victim->fprev;
	p->nidem--;
	victim->st = NULL;
	victim->fprev = IDEM_NIL;
	victim->fnext = p->ifree;
	p->ifree = id;
}

/* Drops from the low end: over the cap, or older than the window before
 * idem_clock (command time). */
void idem_expire(struct part *p)
{
	uint64_t win = p->cfg.idem_window_ms;
	uint64_t min_ts = p->idem_clock > win ? p->idem_clock - win : 0;
	while (p->ihead != IDEM_NIL &&
	       (p->nidem > p->cfg.idem_max ||
		idem_node(p, p->ihead)->ts < min_ts))
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

/* Makes room for one more record: an index slot within the load bound
 * and a free node (may allocate; nothing changes on failure). */
int idem_reserve(struct part *p)
{
	if (p->ifree == IDEM_NIL && p->inodes == p->nichunks * IDEM_CHUNK) {
		if (p->nichunks == (UINT32_MAX >> IDEM_CHUNK_SHIFT))
			return -ENOMEM; /* 2^32 - 1 ids: never with real memory */
		if (p->nichunks == p->ichunk_cap) {
			uint32_t nc = p->ichunk_cap ? p->ichunk_cap * 2 : 4;
			struct idem **ch = realloc(p->ichunks, nc * sizeof *ch);
			if (!ch)
				return -ENOMEM;
			p->ichunks = ch;
			p->ichunk_cap = nc;
		}
		struct idem *c = malloc(IDEM_CHUNK * sizeof *c);
		if (!c)
			return -ENOMEM;
		p->ichunks[p->nichunks++] = c;
	}
	if ((p->nidem + 1) * IDEM_LOAD_DEN <= p->nislots * IDEM_LOAD_NUM)
		return 0;
	uint64_t nn = p->nislots ? p->nislots * 2 : IDEM_MIN_SLOTS;
	if (nn > (1ull << 32))
		return -ENOMEM; /* the tag holds the home slot: mask < 2^32 */
	uint64_t *ns = calloc(nn, sizeof *ns);
	if (!ns)
		return -ENOMEM;
	/* rehash from the slots alone: no node is read */
	for (uint64_t k = 0; k < p->nislots; k++) {
		uint64_t v = p->islots[k];
		if (!v)
			continue;
		uint64_t j = slot_home(v, nn - 1);
		while (ns[j])
			j = (j + 1) & (nn - 1);
		ns[j] = v;
	}
	free(p->islots);
	p->islots = ns;
	p->nislots = nn;
	p->imod++;
	return 0;
}

/* Links a new record at its place in the order (walked from the high
 * end: timestamps mostly grow); never fails (idem_reserve came first, and
 * the key is not in the table). The caller trims with idem_expire
 * afterwards. */
void idem_link(struct part *p, struct stream *s, const uint8_t *producer,
	       uint64_t seq, uint32_t count, uint64_t ts)
{
	PARLEY_ASSERT((p->nidem + 1) * IDEM_LOAD_DEN <= p->nislots * IDEM_LOAD_NUM);
	uint32_t id;
	if (p->ifree != IDEM_NIL) {
		id = p->ifree;
		p->ifree = idem_node(p, id)->fnext;
	} else {
		PARLEY_ASSERT(p->inodes < p->nichunks * IDEM_CHUNK);
		id = ++p->inodes;
	}
	struct idem *i = idem_node(p, id);
	memset(i, 0, sizeof *i);
	i->st = s;
	memcpy(i->producer, producer, PE_PRODUCER_LEN);
	i->seq = seq;
	i->count = count;
	i->ts = ts;
	bool same = p->ihint_s == s &&
		    !memcmp(p->ihint_prod, producer, PE_PRODUCER_LEN);
	i->h = same ? p->ihint_h : idem_hash(s, producer);
	uint64_t k = same && p->ihint_mod == p->imod
			     ? p->ihint_k
			     : idem_probe(p, i->h, s, producer);
	p->ihint_s = NULL;
	PARLEY_ASSERT(!p->islots[k]); /* not in the table */
	p->islots[k] = slot_make(i->h, id);
	p->imod++;
	uint32_t after = p->itail;
	while (after != IDEM_NIL && idem_cmp(idem_node(p, after), i) > 0)
		after = idem_node(p, after)->fprev;
	i->fprev = after;
	i->fnext = after != IDEM_NIL ? idem_node(p, after)->fnext : p->ihead;
	if (i->fnext != IDEM_NIL)
		idem_node(p, i->fnext)->fprev = id;
	else
		p->itail = id;
	if (after != IDEM_NIL)
		idem_node(p, after)->fnext = id;
	else
		p->ihead = id;
	p->nidem++;
}

/* Frees the whole table (the partition's state is dropped). */
void idem_free(struct part *p)
{
	for (uint32_t c = 0; c < p->nichunks; c++)
		free(p->ichunks[c]);
	free(p->ichunks);
	free(p->islots);
	p->ichunks = NULL;
	p->islots = NULL;
	p->nichunks = p->ichunk_cap = p->inodes = 0;
	p->ifree = p->ihead = p->itail = IDEM_NIL;
	p->nislots = p->nidem = 0;
	p->imod++;
	p->ihint_s = NULL;
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
	uint32_t old = idem_lookup(p, s, rec->producer);
	if (old != IDEM_NIL)
		idem_remove(p, old);
	if (idem_reserve(p))
		return -PARLEY_ENOMEM;
	idem_link(p, s, rec->producer, rec->seq, rec->count, rec->ts);
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
