/*
 * engine.c — the storage engine's log core: shards, partitions, the
 * memtable, idempotent appends, reads, tails and recovery.
 *
 * Threads: every partition belongs to one shard thread (p % nshards). Public
 * calls from any thread turn into a `struct req` pushed on the shard's
 * bounded inbox; the shard thread does all the work and runs callbacks.
 *
 * The append path (durable before ack):
 *
 *   caller: encode command -> inbox
 *   shard:  check partition, memory -> copy into the WAL's open batch
 *           (log index assigned) -> [group commit] write + fdatasync
 *           -> completion -> apply every record of the batch in log order
 *           (seq assigned, idempotency checked) -> callback -> tails
 *
 * An append's callback is called from exactly one place,
 * shard_apply_durable(), which runs only after wal_on_cqe() reported the
 * batch durable. Recovery replays the same apply function, so a replayed
 * log rebuilds exactly the seqs that were acknowledged.
 *
 * Invariants
 *   1. part->last_index counts applied records; records apply in index
 *      order with no gap (a gap at recovery marks the partition corrupt).
 *   2. stream->ents[i] has seq mem_first + i; seqs are dense. Seqs below
 *      mem_first are in history segments (flushed); seqs below first_seq
 *      are invisible (deleted or past retention) wherever they lie.
 *   5. History: a flush freezes every entry applied up to part->last_index
 *      (flush_busy); the memtable drops them only after the segment is in
 *      the stored HISTORY manifest (flushed_index), and the WAL releases a
 *      segment only after that. Recovery skips records <= flushed_index.
 *      Entries named by a frozen flush are never freed while it runs.
 *
 * History jobs (flush, compaction) run on two worker threads (struct
 * hworker) and come back to the shard as REQ_HIST_DONE for their commit:
 *
 *   shard: freeze (fsrc) + hpart_flush_begin ──► worker: hpart_flush_run
 *   shard: hpart_flush_commit ◄── REQ_HIST_DONE ◄──┘
 *          drop frozen prefix, wal_release, maybe compact
 *   3. A subscription's next_seq only moves forward by entries delivered.
 *   4. A request is owned by the inbox, then the shard; the shard frees it
 *      after its callback (or when the engine stops).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engine_internal.h"

#define MANIFEST_MAGIC 0x3146494E414D4C50ull /* "PLMANIF1" */
#define MANIFEST_VERSION 1u
#define MANIFEST_SIZE 64u
#define MANIFEST_SEED 0x4D414E4946455354ull

#define DEF_PARTITIONS 64u
#define DEF_SHARDS 1u
#define DEF_MEMTABLE (64ull << 20)
#define DEF_IDEM_WINDOW (7ull * 24 * 3600 * 1000)
#define DEF_IDEM_MAX 1000000u
#define DEF_QUEUE 65536u
#define RING_DEPTH 64u
#define SUB_CHUNK 64u          /* entries per subscription callback */
#define CATCHUP_BUDGET 1024u   /* entries per catching-up sub per loop turn */
#define DEF_BLOCK_CACHE (64ull << 20)
#define DEF_COMPACTION_RATE (32ull << 20)
#define DEF_RETENTION_INTERVAL (3600ull * 1000)
#define DEF_WAL_PIN 2u
#define WAL_PIN_MAX 16u        /* partitions force-flushed per release round */

static void shard_wal_release(struct shard *sh);
static void shard_maybe_flush(struct shard *sh);
static int part_flush_start(struct shard *sh, struct part *p);
static int part_compact_start(struct shard *sh, struct part *p, bool all);
static void part_compact_finish(struct shard *sh, struct part *p, int rc,
				size_t segs_before);

static const uint8_t zero_producer[PE_PRODUCER_LEN];

/* ---- small helpers ------------------------------------------------------------ */

static uint64_t engine_clock(struct pe_engine *e)
{
	return e->opt.clock_ms ? e->opt.clock_ms(e->opt.clock_arg)
			       : parley_now_ms();
}

static uint64_t mentry_cost(uint32_t len)
{
	return sizeof(struct mentry) + len + sizeof(struct mentry *);
}

/* ---- partitions: streams ------------------------------------------------------ */

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

static struct stream *stream_get(struct part *p, const uint8_t *key,
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

static struct mentry *stream_at(const struct stream *s, uint64_t seq)
{
	if (seq < s->mem_first || seq > s->last_seq)
		return NULL;
	return s->ents[seq - s->mem_first];
}

static void mentry_to_pe(const struct mentry *m, struct pe_entry *o)
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
static struct stream *stream_lookup(struct part *p, const uint8_t *key,
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
static void stream_drop_through(struct part *p, struct stream *s,
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

/* ---- partitions: idempotency ----------------------------------------------- */

static uint64_t idem_hash(const struct stream *s, const uint8_t *producer)
{
	uint8_t b[8 + PE_PRODUCER_LEN];
	le_put64(b, s->hash);
	memcpy(b + 8, producer, PE_PRODUCER_LEN);
	return parley_xxh3(b, sizeof b, 0x4944454D);
}

static struct idem *idem_find(struct part *p, const struct stream *s,
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
static void idem_expire(struct pe_engine *e, struct part *p, uint64_t now)
{
	while (p->ihead &&
	       (p->nidem > e->idem_max ||
		p->ihead->ts + e->idem_window_ms < now)) {
		struct idem *i = p->ihead;
		p->ihead = i->fnext;
		if (!p->ihead)
			p->itail = NULL;
		idem_unlink(p, i);
		free(i);
	}
}

static int idem_insert(struct part *p, struct stream *s,
		       const uint8_t *producer, uint64_t seq, uint32_t count,
		       uint64_t ts)
{
	if (p->nidem + 1 > p->nib) {
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
	}
	struct idem *i = calloc(1, sizeof *i);
	if (!i)
		return -ENOMEM;
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
	return 0;
}

/* ---- applying log commands (deterministic) ------------------------------------ */

static void part_mark_corrupt(struct part *p, const char *fmt_file,
			      uint64_t off, const char *why)
{
	if (p->corrupt)
		return;
	p->corrupt = true;
	snprintf(p->err, sizeof p->err, "%s offset %" PRIu64 ": %s", fmt_file,
		 off, why);
	PLOG_E("engine", "partition corrupt, refusing to serve it",
	       "partition=%u file=%s offset=%" PRIu64 " why=\"%s\"", p->id,
	       fmt_file, off, why);
}

struct decoded_append {
	const uint8_t *key;
	uint8_t klen;
	const uint8_t *producer;
	uint64_t ts;
	uint64_t expected;
	uint32_t count;
	struct le_reader entries; /* positioned at the first entry */
};

static int append_decode(const uint8_t *body, uint32_t len,
			 struct decoded_append *d)
{
	struct le_reader r;
	le_reader_init(&r, body, len);
	d->klen = le_read8(&r);
	d->key = le_read_bytes(&r, d->klen);
	d->producer = le_read_bytes(&r, PE_PRODUCER_LEN);
	d->ts = le_read64(&r);
	d->expected = le_read64(&r);
	d->count = le_read32(&r);
	if (!r.ok || d->klen == 0 || d->count == 0 || d->count > PE_MAX_BATCH)
		return -PARLEY_ECORRUPT;
	d->entries = r;
	/* validate every entry before changing any state */
	for (uint32_t i = 0; i < d->count; i++) {
		le_read16(&r);
		le_read16(&r);
		uint32_t n = le_read32(&r);
		if (n > PE_MAX_PAYLOAD || !le_read_bytes(&r, n))
			return -PARLEY_ECORRUPT;
	}
	if (r.off != r.len)
		return -PARLEY_ECORRUPT;
	return 0;
}

/*
 * Applies one APPEND command. Deterministic: depends only on the command
 * and the partition state. Fills *res. Returns 0, or -PARLEY_ECORRUPT when
 * the command cannot be decoded (the caller marks the partition), or
 * -ENOMEM.
 */
static int part_apply_append(struct pe_engine *e, struct part *p,
			     const uint8_t *body, uint32_t len,
			     struct pe_append_result *res,
			     struct stream **touched)
{
	struct decoded_append d;
	memset(res, 0, sizeof *res);
	*touched = NULL;
	int rc = append_decode(body, len, &d);
	if (rc)
		return rc;
	struct stream *s = stream_lookup(p, d.key, d.klen, true);
	if (!s)
		return -ENOMEM;
	bool idem = memcmp(d.producer, zero_producer, PE_PRODUCER_LEN) != 0;
	idem_expire(e, p, d.ts);
	if (idem) {
		struct idem *i = idem_find(p, s, d.producer);
		if (i) {
			res->seq = i->seq;
			res->count = i->count;
			res->ts_ms = i->ts;
			res->last_seq = s->last_seq;
			res->duplicate = true;
			return 0;
		}
	}
	if (d.expected != PE_NO_EXPECT && d.expected != s->last_seq) {
		res->err = -PARLEY_ESEQ;
		res->last_seq = s->last_seq;
		return 0;
	}
	if (s->nents + d.count > s->cap) {
		uint64_t nc = s->cap ? s->cap * 2 : 8;
		while (nc < s->nents + d.count)
			nc *= 2;
		struct mentry **ne = realloc(s->ents, nc * sizeof *ne);
		if (!ne)
			return -ENOMEM;
		s->ents = ne;
		s->cap = nc;
	}
	uint64_t ts = PARLEY_MAX(d.ts, s->last_ts); /* monotone per stream */
	struct le_reader r = d.entries;
	uint64_t first = s->last_seq + 1;
	for (uint32_t i = 0; i < d.count; i++) {
		uint16_t type = le_read16(&r);
		uint16_t flags = le_read16(&r);
		uint32_t n = le_read32(&r);
		const uint8_t *pl = le_read_bytes(&r, n);
		struct mentry *m = malloc(sizeof *m + n);
		if (!m)
			return -ENOMEM; /* entries so far stay: seqs still dense */
		m->seq = s->last_seq + 1;
		m->ts = ts;
		m->type = type;
		m->flags = flags;
		m->len = n;
		memcpy(m->producer, d.producer, PE_PRODUCER_LEN);
		memcpy(m->payload, pl, n);
		s->ents[s->nents++] = m;
		s->last_seq = m->seq;
		p->mem_bytes += mentry_cost(n);
		p->nentries++;
	}
	s->last_ts = ts;
	if (idem && idem_insert(p, s, d.producer, first, d.count, ts))
		return -ENOMEM;
	res->seq = first;
	res->count = d.count;
	res->ts_ms = ts;
	res->last_seq = s->last_seq;
	*touched = s;
	return 0;
}

/* Applies one DELETE command (deterministic, like an append). */
static int part_apply_delete(struct part *p, const uint8_t *body,
			     uint32_t len, struct pe_delete_result *res,
			     struct stream **touched)
{
	memset(res, 0, sizeof *res);
	*touched = NULL;
	if (len < 1)
		return -PARLEY_ECORRUPT;
	uint8_t klen = body[0];
	if (klen == 0 || len != 1u + klen + 8)
		return -PARLEY_ECORRUPT;
	const uint8_t *key = body + 1;
	uint64_t through = le_get64(body + 1 + klen);
	struct stream *s = stream_lookup(p, key, klen, false);
	if (!s || !s->last_seq)
		return 0;
	uint64_t t = PARLEY_MIN(through, s->last_seq);
	if (t >= s->first_seq) {
		/* hidden now; the memory goes with the next flush, which writes
		 * them (hidden by the mark) so that their idempotency records
		 * reach a segment; compaction purges them */
		s->first_seq = t + 1;
		if (p->hist) {
			int rc = hpart_mark_deleted(p->hist, key, klen, t);
			if (rc)
				return rc;
		}
		*touched = s;
	}
	res->first_seq = s->first_seq;
	res->last_seq = s->last_seq;
	return 0;
}

/* ---- subscriptions ---------------------------------------------------------------- */

static void sub_free(struct pe_sub *sub)
{
	free(sub);
}

/* Delivers up to `budget` entries, from history while the cursor is below
 * the memtable, then from memory. Returns true when caught up (or stopped
 * for a reason other than the budget). */
static bool sub_pump(struct pe_sub *sub, uint32_t budget)
{
	struct stream *s = sub->st;
	struct part *p = &sub->e->parts[sub->part];
	struct pe_entry batch[SUB_CHUNK];
	if (sub->next_seq < s->first_seq) {
		struct pe_sub_update u = {.event = PE_SUB_TRIMMED,
					  .next_seq = s->first_seq};
		sub->next_seq = s->first_seq;
		if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
			sub->paused = true;
	}
	while (!sub->paused && !atomic_load(&sub->dead) &&
	       sub->next_seq <= s->last_seq) {
		if (budget == 0)
			return false;
		uint32_t n = 0;
		uint32_t want = PARLEY_MIN(SUB_CHUNK, budget);
		struct history_hold *hold = NULL;
		if (sub->next_seq < s->mem_first) {
			struct history_read_req q = {
				.key = s->key, .klen = s->klen,
				.from = sub->next_seq, .dir = PE_FORWARD,
				.limit = want, .below = s->mem_first,
				.first_retained = s->first_seq};
			struct history_read_res hr;
			int rc = p->hist ? hpart_read(p->hist, &q, batch, &hr, &hold)
					 : -PARLEY_ECORRUPT;
			if (rc) {
				PLOG_E("engine", "history read failed; subscription closed",
				       "partition=%u err=%s", p->id, parley_errname(rc));
				struct pe_sub_update u = {.event = PE_SUB_CLOSED,
							  .err = rc,
							  .next_seq = sub->next_seq};
				atomic_store(&sub->dead, true);
				sub->cb(sub->arg, sub, &u);
				return true;
			}
			n = hr.count;
			uint64_t got = n ? batch[0].seq : s->mem_first;
			if (got != sub->next_seq) {
				/* hidden by a mark the memtable did not know yet */
				struct pe_sub_update u = {.event = PE_SUB_TRIMMED,
							  .next_seq = got};
				sub->next_seq = got;
				if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
					sub->paused = true;
				if (!n || sub->paused || atomic_load(&sub->dead)) {
					history_hold_free(hold);
					continue;
				}
			}
		} else {
			while (n < want && sub->next_seq + n <= s->last_seq) {
				struct mentry *m = stream_at(s, sub->next_seq + n);
				PARLEY_ASSERT(m && m->seq == sub->next_seq + n);
				mentry_to_pe(m, &batch[n]);
				n++;
			}
		}
		sub->next_seq += n;
		budget -= n;
		struct pe_sub_update u = {.event = PE_SUB_ENTRIES,
					  .entries = batch, .count = n,
					  .next_seq = sub->next_seq};
		if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
			sub->paused = true;
		history_hold_free(hold);
	}
	return true;
}

static void shard_catchup_add(struct shard *sh, struct pe_sub *sub)
{
	if (sub->in_catchup)
		return;
	sub->in_catchup = true;
	sub->cnext = sh->catchup;
	sh->catchup = sub;
}

static void sub_start(struct shard *sh, struct pe_sub *sub)
{
	if (!sub_pump(sub, CATCHUP_BUDGET))
		shard_catchup_add(sh, sub);
}

static void shard_run_catchup(struct shard *sh)
{
	struct pe_sub **pp = &sh->catchup;
	while (*pp) {
		struct pe_sub *sub = *pp;
		bool done = atomic_load(&sub->dead) || sub->paused ||
			    sub_pump(sub, CATCHUP_BUDGET);
		if (done) {
			sub->in_catchup = false;
			*pp = sub->cnext;
		} else {
			pp = &sub->cnext;
		}
	}
}

static void stream_notify(struct shard *sh, struct stream *s)
{
	for (struct pe_sub *sub = s->subs; sub; sub = sub->next)
		if (!sub->paused && !sub->in_catchup && !atomic_load(&sub->dead))
			sub_start(sh, sub);
}

static void sub_detach(struct shard *sh, struct pe_sub *sub)
{
	if (sub->attached) {
		struct pe_sub **pp = &sub->st->subs;
		while (*pp && *pp != sub)
			pp = &(*pp)->next;
		if (*pp)
			*pp = sub->next;
		sub->attached = false;
	}
	if (sub->in_catchup) {
		struct pe_sub **pp = &sh->catchup;
		while (*pp && *pp != sub)
			pp = &(*pp)->cnext;
		if (*pp)
			*pp = sub->cnext;
		sub->in_catchup = false;
	}
}

/* ---- shard: inbox ------------------------------------------------------------------ */

static struct shard *shard_of(struct pe_engine *e, uint32_t part)
{
	return &e->shards[part % e->nshards];
}

static int shard_push(struct pe_engine *e, struct req *r)
{
	/* STOP, UNSUBSCRIBE and HIST_DONE always get through: they release
	 * resources (a worker's finished job must reach its shard) */
	bool forced = r->kind == REQ_STOP || r->kind == REQ_UNSUBSCRIBE ||
		      r->kind == REQ_HIST_DONE;
	if (atomic_load(&e->closing) && !forced)
		return -PARLEY_ECLOSED;
	struct shard *sh = shard_of(e, r->part);
	pthread_mutex_lock(&sh->mu);
	if (sh->in_count >= e->opt.queue_depth && !forced) {
		pthread_mutex_unlock(&sh->mu);
		return -PARLEY_EFULL;
	}
	bool was_empty = sh->in_head == NULL;
	r->next = NULL;
	if (sh->in_tail)
		sh->in_tail->next = r;
	else
		sh->in_head = r;
	sh->in_tail = r;
	sh->in_count++;
	atomic_fetch_add_explicit(&sh->queued_bytes, sizeof *r + r->len,
				  memory_order_relaxed);
	pthread_mutex_unlock(&sh->mu);
	if (was_empty)
		e->io->ops->ring_wake(sh->ring);
	return 0;
}

/* ---- shard: request handling -------------------------------------------------------- */

/* Fails a WAL-bound request (append or delete): its callback runs once. */
static void fail_append(struct req *r, int err)
{
	if (r->kind == REQ_DELETE) {
		struct pe_delete_result res = {.err = err};
		r->cb.del(r->arg, &res);
	} else {
		struct pe_append_result res = {.err = err};
		r->cb.append(r->arg, &res);
	}
	free(r);
}

static int reqs_reserve(struct shard *sh)
{
	if (sh->open_n < sh->reqs_cap)
		return 0;
	uint32_t nc = sh->reqs_cap ? sh->reqs_cap * 2 : 256;
	struct req **a = realloc(sh->open_reqs, nc * sizeof *a);
	if (!a)
		return -ENOMEM;
	sh->open_reqs = a;
	struct req **b = realloc(sh->flight_reqs, nc * sizeof *b);
	if (!b)
		return -ENOMEM;
	sh->flight_reqs = b;
	sh->reqs_cap = nc;
	return 0;
}

/* Returns false when the open batch is full (keep the request for later). */
static bool handle_append(struct shard *sh, struct req *r)
{
	struct pe_engine *e = sh->e;
	struct part *p = &e->parts[r->part];
	if (sh->fatal) {
		fail_append(r, -PARLEY_EFATAL);
		return true;
	}
	if (e->opt.read_only) {
		fail_append(r, -PARLEY_EPERM);
		return true;
	}
	if (p->corrupt) {
		fail_append(r, -PARLEY_ECORRUPT);
		return true;
	}
	if (r->kind == REQ_APPEND &&
	    p->mem_bytes + p->pending_bytes + r->mem_estimate >
	    e->opt.memtable_bytes) {
		fail_append(r, -PARLEY_EFULL);
		return true;
	}
	if (reqs_reserve(sh)) {
		fail_append(r, -PARLEY_ENOMEM);
		return true;
	}
	uint8_t *body = wal_reserve(sh->wal, r->len);
	if (!body)
		return false;
	memcpy(body, r->data, r->len);
	if (r->kind == REQ_APPEND) /* the timestamp is taken when the command enters the log */
		le_put64(body + 1 + r->klen + PE_PRODUCER_LEN, engine_clock(e));
	wal_commit_rec(sh->wal, p->id,
		       r->kind == REQ_DELETE ? CMD_DELETE : CMD_APPEND, 1,
		       p->next_index++);
	p->pending_bytes += r->mem_estimate;
	atomic_fetch_add_explicit(&sh->pend_pub, r->mem_estimate,
				  memory_order_relaxed);
	sh->open_reqs[sh->open_n++] = r;
	return true;
}

static void log_hist_error(struct part *p, int rc)
{
	PLOG_E("engine", "history read failed", "partition=%u err=%s",
	       p->id, parley_errname(rc));
}

/*
 * Reads merge history (seqs < mem_first) and the memtable (the rest);
 * first_seq bounds both. Payloads of history entries point into pinned
 * cache blocks (`hold`), released after the callback.
 */
static void handle_read(struct shard *sh, struct req *r)
{
	struct pe_engine *e = sh->e;
	struct part *p = &e->parts[r->part];
	struct pe_read_result res = {0};
	struct pe_entry *out = NULL;
	struct history_hold *hold = NULL;
	if (p->corrupt) {
		res.err = -PARLEY_ECORRUPT;
		goto done;
	}
	struct stream *s = stream_lookup(p, r->data, r->klen, false);
	if (!s || s->last_seq == 0) {
		res.end = true;
		goto done;
	}
	res.first_seq = s->first_seq;
	res.last_seq = s->last_seq;
	uint32_t limit = r->limit;
	out = malloc(sizeof *out * limit);
	if (!out) {
		res.err = -PARLEY_ENOMEM;
		goto done;
	}
	uint64_t F = s->first_seq;
	uint64_t mlo = PARLEY_MAX(s->mem_first, F);
	uint32_t n = 0;
	struct history_read_res hr;
	if (r->dir == PE_FORWARD) {
		uint64_t seq = r->from ? r->from : 1;
		if (seq < F) {
			res.err = -PARLEY_ETRIMMED;
			goto done;
		}
		if (seq < s->mem_first && p->hist) {
			struct history_read_req q = {
				.key = s->key, .klen = s->klen, .from = seq,
				.dir = PE_FORWARD, .limit = limit,
				.below = s->mem_first, .first_retained = F};
			int rc = hpart_read(p->hist, &q, out, &hr, &hold);
			if (rc) {
				log_hist_error(p, rc);
				res.err = rc;
				goto done;
			}
			n = hr.count;
			seq = s->mem_first; /* history had every entry below it */
		}
		for (seq = PARLEY_MAX(seq, mlo); n < limit && seq <= s->last_seq;
		     seq++)
			mentry_to_pe(stream_at(s, seq), &out[n++]);
		res.end = n == 0 || out[n - 1].seq >= s->last_seq;
	} else {
		uint64_t seq = PARLEY_MIN(r->from, s->last_seq);
		if (seq < F && seq != 0 && F > 1) {
			res.err = -PARLEY_ETRIMMED;
			goto done;
		}
		for (; n < limit && seq >= mlo && seq > 0; seq--)
			mentry_to_pe(stream_at(s, seq), &out[n++]);
		if (n < limit && seq >= F && seq > 0 && seq < s->mem_first &&
		    p->hist) {
			struct history_read_req q = {
				.key = s->key, .klen = s->klen, .from = seq,
				.dir = PE_BACKWARD, .limit = limit - n,
				.below = s->mem_first, .first_retained = F};
			int rc = hpart_read(p->hist, &q, out + n, &hr, &hold);
			if (rc) {
				log_hist_error(p, rc);
				res.err = rc;
				goto done;
			}
			n += hr.count;
		}
		res.end = n == 0 || out[n - 1].seq <= F;
	}
	res.entries = out;
	res.count = n;
done:
	if (res.err) {
		res.entries = NULL;
		res.count = 0;
	}
	r->cb.read(r->arg, &res);
	history_hold_free(hold);
	free(out);
	free(r);
}

struct meta_out {
	int err;
	struct pe_meta meta;
};

static void handle_meta(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	struct meta_out *o = r->out;
	memset(o, 0, sizeof *o);
	if (p->corrupt) {
		o->err = -PARLEY_ECORRUPT;
	} else {
		struct stream *s = stream_lookup(p, r->data, r->klen, false);
		if (s && s->last_seq) {
			o->meta.first_seq = s->first_seq;
			o->meta.last_seq = s->last_seq;
			o->meta.last_ts_ms = s->last_ts;
		}
	}
	r->cb.generic(r->arg);
	free(r);
}

static void handle_status(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	struct pe_partition_status *o = r->out;
	memset(o, 0, sizeof *o);
	o->state = p->corrupt ? PE_PART_CORRUPT : PE_PART_OK;
	o->streams = p->nstreams;
	o->entries = p->nentries;
	o->mem_bytes = p->mem_bytes;
	o->last_index = p->last_index;
	snprintf(o->error, sizeof o->error, "%s", p->err);
	o->flushed_index = p->flushed_index;
	o->flushes = p->flushes;
	o->compactions = p->compactions;
	if (p->hist) {
		const struct hman *m = hpart_manifest(p->hist);
		o->segments = (uint32_t)m->nsegs;
		for (size_t i = 0; i < m->nsegs; i++)
			o->segment_bytes += m->segs[i].bytes;
	}
	r->cb.generic(r->arg);
	free(r);
}

/* LIST copies every stream key + meta into one buffer:
 * repeated { u8 klen | key | u64 first | u64 last | u64 last_ts }. */
struct list_out {
	int err;
	uint8_t *buf;
	size_t len;
};

static void handle_list(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	struct list_out *o = r->out;
	memset(o, 0, sizeof *o);
	if (p->corrupt) {
		o->err = -PARLEY_ECORRUPT;
		goto done;
	}
	/* streams that live only in history join the table first */
	if (p->hist) {
		size_t nseg = hpart_segments(p->hist, NULL, 0);
		struct hpart_seg_view *v = calloc(nseg ? nseg : 1, sizeof *v);
		if (!v) {
			o->err = -PARLEY_ENOMEM;
			goto done;
		}
		hpart_segments(p->hist, v, nseg);
		for (size_t i = 0; i < nseg; i++)
			for (uint32_t k = 0; k < v[i].info.streams; k++) {
				const uint8_t *key;
				uint8_t kl;
				struct seg_stream_info si;
				if (seg_stream_at(v[i].r, k, &key, &kl, &si) == 0)
					(void)stream_lookup(p, key, kl, false);
			}
		free(v);
		const struct hman *m = hpart_manifest(p->hist);
		for (size_t i = 0; i < m->nstreams; i++)
			(void)stream_lookup(p, m->streams[i].key,
					    m->streams[i].klen, false);
	}
	size_t need = 1;
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext)
			need += 1 + s->klen + 24;
	o->buf = malloc(need);
	if (!o->buf) {
		o->err = -PARLEY_ENOMEM;
		goto done;
	}
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext) {
			if (!s->last_seq)
				continue;
			uint8_t *q = o->buf + o->len;
			q[0] = s->klen;
			memcpy(q + 1, s->key, s->klen);
			le_put64(q + 1 + s->klen, s->first_seq);
			le_put64(q + 9 + s->klen, s->last_seq);
			le_put64(q + 17 + s->klen, s->last_ts);
			o->len += 1 + s->klen + 24;
		}
done:
	r->cb.generic(r->arg);
	free(r);
}

static void handle_subscribe(struct shard *sh, struct req *r)
{
	struct pe_sub *sub = r->sub;
	struct part *p = &sh->e->parts[r->part];
	free(r);
	if (atomic_load(&sub->dead))
		return; /* unsubscribed before it started; UNSUBSCRIBE frees */
	if (p->corrupt) {
		struct pe_sub_update u = {.event = PE_SUB_CLOSED,
					  .err = -PARLEY_ECORRUPT,
					  .next_seq = sub->next_seq};
		atomic_store(&sub->dead, true);
		sub->cb(sub->arg, sub, &u);
		return;
	}
	struct stream *s = stream_lookup(p, sub->key, sub->klen, true);
	if (!s) {
		struct pe_sub_update u = {.event = PE_SUB_CLOSED,
					  .err = -PARLEY_ENOMEM,
					  .next_seq = sub->next_seq};
		atomic_store(&sub->dead, true);
		sub->cb(sub->arg, sub, &u);
		return;
	}
	sub->st = s;
	sub->next = s->subs;
	s->subs = sub;
	sub->attached = true;
	sub_start(sh, sub);
}

static void handle_resume(struct shard *sh, struct req *r)
{
	struct pe_sub *sub = r->sub;
	free(r);
	if (!sub->attached || atomic_load(&sub->dead))
		return;
	sub->paused = false;
	sub_start(sh, sub);
}

static void handle_unsubscribe(struct shard *sh, struct req *r)
{
	struct pe_sub *sub = r->sub;
	sub_detach(sh, sub);
	if (r->cb.generic)
		r->cb.generic(r->arg);
	sub_free(sub);
	free(r);
}

/* Applies a durable record (live path and recovery). */
struct apply_ctx {
	struct shard *sh;
	uint32_t i; /* index into flight_reqs (live path) */
	bool live;
};

static int apply_record(void *arg, const struct wal_rec *rec)
{
	struct apply_ctx *c = arg;
	struct pe_engine *e = c->sh->e;
	struct req *r = c->live ? c->sh->flight_reqs[c->i++] : NULL;
	struct pe_append_result res = {0};
	struct stream *touched = NULL;
	if (rec->partition >= e->nparts ||
	    rec->partition % e->nshards != c->sh->idx) {
		/* only possible from disk: a valid record in the wrong WAL */
		PLOG_E("engine", "record for a foreign partition",
		       "file=%s offset=%" PRIu64 " partition=%u", rec->file,
		       rec->off, rec->partition);
		return 0;
	}
	struct part *p = &e->parts[rec->partition];
	struct pe_delete_result dres = {0};
	if (r)
		p->pending_bytes -= r->mem_estimate;
	/* already in history segments (recovery only: live records are
	 * always past the flushed index) */
	if (!c->live && !p->corrupt && rec->index <= p->flushed_index)
		return 0;
	if (p->corrupt) {
		res.err = -PARLEY_ECORRUPT;
	} else if (rec->index != p->last_index + 1) {
		part_mark_corrupt(p, rec->file, rec->off, "log index gap");
		res.err = -PARLEY_ECORRUPT;
	} else if (rec->type != CMD_APPEND && rec->type != CMD_DELETE) {
		part_mark_corrupt(p, rec->file, rec->off,
				  "unknown log command type");
		res.err = -PARLEY_ECORRUPT;
	} else {
		p->last_index = rec->index;
		int rc = rec->type == CMD_DELETE
				 ? part_apply_delete(p, rec->body, rec->len, &dres,
						     &touched)
				 : part_apply_append(e, p, rec->body, rec->len,
						     &res, &touched);
		if (rc == -PARLEY_ECORRUPT) {
			part_mark_corrupt(p, rec->file, rec->off,
					  "undecodable log command");
			res.err = rc;
		} else if (rc) {
			/* out of memory while applying: state may be partial,
			 * stop serving the partition rather than diverge */
			part_mark_corrupt(p, rec->file, rec->off,
					  "out of memory while applying");
			res.err = rc;
		}
	}
	if (r && r->kind == REQ_DELETE) {
		dres.err = res.err;
		r->cb.del(r->arg, &dres);
		free(r);
	} else if (r) {
		if (!res.err) {
			atomic_fetch_add(&c->sh->n_appends, 1);
			atomic_fetch_add(&c->sh->n_entries, res.count);
		}
		r->cb.append(r->arg, &res);
		free(r);
	}
	if (touched && c->live)
		stream_notify(c->sh, touched);
	return 0;
}


/* ---- history: flush and compaction jobs ------------------------------------------- */

/* A flush job's source: the frozen memtable (entry pointers copied at
 * freeze; the entries themselves are immutable and not freed until the
 * commit), streams in segment key order. */
struct fsrc_str {
	struct stream *s;
	uint64_t first, last; /* frozen seq range */
	uint64_t off;         /* into pool */
};
struct fsrc {
	struct pe_engine *e;
	struct fsrc_str *v;
	size_t n;
	struct mentry **pool;
	size_t si;
	uint64_t ei;
};

static void fsrc_free(struct fsrc *f)
{
	if (!f)
		return;
	free(f->v);
	free(f->pool);
	free(f);
}

static int fsrc_next(void *arg, const uint8_t **key, size_t *klen,
		     struct pe_entry *out)
{
	struct fsrc *f = arg;
	if (atomic_load(&f->e->aborting))
		return -PARLEY_ECLOSED;
	while (f->si < f->n) {
		struct fsrc_str *st = &f->v[f->si];
		if (f->ei < st->last - st->first + 1) {
			mentry_to_pe(f->pool[st->off + f->ei++], out);
			*key = st->s->key; /* a stream's key never changes */
			*klen = st->s->klen;
			return 1;
		}
		f->si++;
		f->ei = 0;
	}
	return 0;
}

static int fsrc_rewind(void *arg)
{
	struct fsrc *f = arg;
	f->si = 0;
	f->ei = 0;
	return 0;
}

static int fsrc_cmp(const void *x, const void *y)
{
	const struct fsrc_str *a = x, *b = y;
	int c = memcmp(a->s->key, b->s->key, PARLEY_MIN(a->s->klen, b->s->klen));
	if (!c)
		c = a->s->klen < b->s->klen ? -1 : a->s->klen > b->s->klen;
	return c;
}

static void hworker_push(struct pe_engine *e, int w, uint32_t part, int kind,
			 uint64_t *ids, size_t nids)
{
	struct hjob *j = calloc(1, sizeof *j);
	PARLEY_ASSERT(j);
	j->part = part;
	j->kind = kind;
	j->ids = ids;
	j->nids = nids;
	struct hworker *hw = &e->hw[w];
	pthread_mutex_lock(&hw->mu);
	if (hw->tail)
		hw->tail->next = j;
	else
		hw->head = j;
	hw->tail = j;
	pthread_cond_signal(&hw->cv);
	pthread_mutex_unlock(&hw->mu);
}

static void hist_sleep(void *arg, uint64_t ns)
{
	struct pe_engine *e = arg;
	/* closing: finish the job at full speed rather than hold up close */
	if (atomic_load(&e->closing) || atomic_load(&e->aborting))
		return;
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
			      .tv_nsec = (long)(ns % 1000000000u)};
	nanosleep(&ts, NULL);
}

static void *hworker_main(void *arg)
{
	struct hworker *hw = arg;
	struct pe_engine *e = hw->e;
	/* Compaction is background work: on a machine with few cores its
	 * compression must not take CPU from the shards serving appends
	 * (Linux: nice applies per thread). Flushes keep normal priority:
	 * they free memtable memory appends wait for. */
	if (hw == &e->hw[1] && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10))
		PLOG_D("engine", "compaction thread keeps normal priority",
		       "err=%s", parley_errname(-errno));
	pthread_mutex_lock(&hw->mu);
	for (;;) {
		while (!hw->head && !hw->stop)
			pthread_cond_wait(&hw->cv, &hw->mu);
		if (hw->stop)
			break;
		struct hjob *j = hw->head;
		hw->head = j->next;
		if (!hw->head)
			hw->tail = NULL;
		pthread_mutex_unlock(&hw->mu);
		struct part *p = &e->parts[j->part];
		if (j->kind == 3) { /* no shard state involved: nothing to hand back */
			char hd[700];
			snprintf(hd, sizeof hd, "%s/hist/%u", e->dir, j->part);
			(void)hpart_remove_files(e->io, hd, j->ids, j->nids);
			free(j->ids);
			free(j);
			pthread_mutex_lock(&hw->mu);
			continue;
		}
		if (j->kind == 1) {
			struct hpart_src src = {.next = fsrc_next,
						.rewind = fsrc_rewind,
						.arg = p->fsrc};
			p->flush_rc = hpart_flush_run(p->fjob, &src);
		} else if (j->kind == 2) {
			p->compact_rc = hpart_compact_run(p->cjob, NULL);
		} else { /* 4: the manifest store, off the shard */
			p->compact_rc = hpart_compact_store(p->cjob, p->cman);
		}
		struct req *r = calloc(1, sizeof *r);
		PARLEY_ASSERT(r);
		r->kind = REQ_HIST_DONE;
		r->part = j->part;
		r->from = (uint64_t)j->kind;
		free(j);
		if (!atomic_load(&e->aborting))
			PARLEY_ASSERT(shard_push(e, r) == 0);
		else
			free(r);
		pthread_mutex_lock(&hw->mu);
	}
	while (hw->head) { /* jobs never started are dropped (removals: the
			      next open's cleanup deletes those files) */
		struct hjob *j = hw->head;
		hw->head = j->next;
		free(j->ids);
		free(j);
	}
	hw->tail = NULL;
	pthread_mutex_unlock(&hw->mu);
	return NULL;
}

static void answer_int(struct req *r, int rc)
{
	*(int *)r->out = rc;
	r->cb.generic(r->arg);
	free(r);
}

static void answer_all(struct req **list, int rc)
{
	struct req *r = *list;
	*list = NULL;
	while (r) {
		struct req *n = r->next;
		answer_int(r, rc);
		r = n;
	}
}

/* May a history job (flush or compaction) start on this partition now?
 * 0, or the error the caller reports. */
static int part_hist_job_check(const struct shard *sh, const struct part *p,
			       bool busy)
{
	const struct pe_engine *e = sh->e;
	if (p->corrupt)
		return -PARLEY_ECORRUPT;
	if (e->opt.read_only || !p->hist)
		return -PARLEY_EPERM;
	if (sh->stopping || atomic_load(&e->closing))
		return -PARLEY_ECLOSED;
	if (busy)
		return -PARLEY_EAGAIN;
	return 0;
}

/*
 * Freezes the partition's memtable and hands a flush job to the worker.
 * Returns 0 (started: finish_flush will run), 1 (nothing to write; the
 * flushed index was brought up to date here), or a negative error.
 */
static int part_flush_start(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	int crc = part_hist_job_check(sh, p, p->flush_busy);
	if (crc)
		return crc;
	if (p->nentries == 0) {
		/* only deletes or duplicates were logged: no segment, but the
		 * marks and the flushed index are stored so the WAL can go */
		if (p->last_index <= p->flushed_index)
			return 1;
		if (p->compact_storing)
			return -PARLEY_EAGAIN; /* one manifest store at a time */
		int rc = hpart_set_flushed(p->hist, p->last_index);
		if (rc)
			return rc;
		p->flushed_index = p->last_index;
		return 1;
	}
	struct fsrc *f = calloc(1, sizeof *f);
	if (!f)
		return -PARLEY_ENOMEM;
	f->e = e;
	size_t ns = 0;
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext)
			ns += s->nents > 0;
	f->v = calloc(ns ? ns : 1, sizeof *f->v);
	f->pool = malloc((p->nentries ? p->nentries : 1) * sizeof *f->pool);
	if (!f->v || !f->pool) {
		fsrc_free(f);
		return -PARLEY_ENOMEM;
	}
	uint64_t off = 0;
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext) {
			if (!s->nents)
				continue;
			PARLEY_ASSERT(s->mem_first + s->nents - 1 == s->last_seq);
			PARLEY_ASSERT(off + s->nents <= p->nentries);
			f->v[f->n++] = (struct fsrc_str){
				.s = s, .first = s->mem_first,
				.last = s->last_seq, .off = off};
			memcpy(f->pool + off, s->ents, s->nents * sizeof *s->ents);
			off += s->nents;
		}
	qsort(f->v, f->n, sizeof *f->v, fsrc_cmp);
	int rc = hpart_flush_begin(p->hist, p->last_index, &p->fjob);
	if (rc) {
		fsrc_free(f);
		return rc;
	}
	p->fsrc = f;
	p->flush_busy = true;
	hworker_push(e, 0, p->id, 1, NULL, 0);
	return 0;
}

static void part_flush_finish(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	int rc = p->flush_rc;
	struct hpart_flush_result fr;
	if (!rc) {
		rc = hpart_flush_commit(p->hist, p->fjob, &fr);
		if (rc == -PARLEY_ECORRUPT) { /* committed, but unreadable */
			char f[64];
			snprintf(f, sizeof f, "hist/%u", p->id);
			part_mark_corrupt(p, f, 0, "new history segment unreadable");
		} else if (rc) {
			hpart_flush_abandon(p->hist, p->fjob);
		}
	} else {
		hpart_flush_abandon(p->hist, p->fjob);
	}
	p->fjob = NULL;
	p->flush_busy = false;
	struct fsrc *f = p->fsrc;
	p->fsrc = NULL;
	if (!rc) {
		for (size_t i = 0; i < f->n; i++) {
			struct stream *s = f->v[i].s;
			stream_drop_through(p, s, PARLEY_MAX(f->v[i].last,
							      s->first_seq - 1));
		}
		p->flushed_index = fr.flushed_index;
		p->flushes++;
	} else if (rc != -PARLEY_ECLOSED) {
		PLOG_E("engine", "history flush failed (retried later)",
		       "partition=%u err=%s", p->id, parley_errname(rc));
	}
	fsrc_free(f);
	answer_all(&p->fwait_cur, rc);
	if (!rc) {
		shard_wal_release(sh);
		if (!e->opt.no_auto_compact)
			(void)part_compact_start(sh, p, false);
	}
	if (p->fwait_next) {
		p->fwait_cur = p->fwait_next;
		p->fwait_next = NULL;
		int s2 = part_flush_start(sh, p);
		if (s2 != 0)
			answer_all(&p->fwait_cur, s2 == 1 ? 0 : s2);
	}
}

/* Returns 0 (started), 1 (nothing worth merging), or a negative error. */
static int part_compact_start(struct shard *sh, struct part *p, bool all)
{
	struct pe_engine *e = sh->e;
	int crc = part_hist_job_check(sh, p, p->compact_busy);
	if (crc)
		return crc;
	struct hpart_compact_opts o = {
		.all = all, .now_ms = engine_clock(e),
		.rate_bytes_per_s = e->opt.compaction_rate,
		.sleep_ns = hist_sleep, .sleep_arg = e};
	int rc = hpart_compact_begin(p->hist, &o, &p->cjob);
	if (rc == -PARLEY_EAGAIN)
		return 1;
	if (rc)
		return rc;
	p->compact_busy = true;
	hworker_push(e, 1, p->id, 2, NULL, 0);
	return 0;
}

/* The compaction ran (worker): build its manifest and hand the store to
 * the worker too, so the shard never waits for those fsyncs. */
static void part_compact_ran(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	int rc = p->compact_rc;
	if (!rc && !atomic_load(&e->aborting)) {
		rc = hpart_compact_prepare(p->hist, p->cjob, &p->cman);
		if (!rc) {
			p->compact_storing = true;
			hworker_push(e, 1, p->id, 4, NULL, 0);
			return;
		}
	}
	p->compact_rc = rc ? rc : -PARLEY_ECLOSED;
	hpart_compact_abandon(p->hist, p->cjob);
	p->cjob = NULL;
	p->compact_busy = false;
	part_compact_finish(sh, p, p->compact_rc, 0);
}

/* The manifest is stored (or failed): install it on the shard. */
static void part_compact_stored(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	int rc = p->compact_rc;
	size_t segs_before = hpart_manifest(p->hist)->nsegs;
	p->compact_storing = false;
	if (!rc) {
		uint64_t *gone = NULL;
		size_t ngone = 0;
		/* the inputs' unlink + fsync-dir go to the worker as well */
		rc = hpart_compact_install(p->hist, p->cjob, p->cman, &gone, &ngone);
		if (gone && ngone)
			hworker_push(e, 1, p->id, 3, gone, ngone);
		else
			free(gone);
		if (rc == -PARLEY_ECORRUPT) {
			char f[64];
			snprintf(f, sizeof f, "hist/%u", p->id);
			part_mark_corrupt(p, f, 0, "compacted segment unreadable");
		}
	} else {
		hpart_man_free(p->cman);
		hpart_compact_abandon(p->hist, p->cjob);
	}
	p->cman = NULL;
	p->cjob = NULL;
	p->compact_busy = false;
	part_compact_finish(sh, p, rc, segs_before);
	if (p->flush_deferred) { /* its commit waited for this store */
		p->flush_deferred = false;
		part_flush_finish(sh, p);
	} else if (p->fwait_next && !p->flush_busy) {
		p->fwait_cur = p->fwait_next;
		p->fwait_next = NULL;
		int s2 = part_flush_start(sh, p);
		if (s2 != 0)
			answer_all(&p->fwait_cur, s2 == 1 ? 0 : s2);
	}
}

static void part_compact_finish(struct shard *sh, struct part *p, int rc,
				size_t segs_before)
{
	struct pe_engine *e = sh->e;
	if (!rc) {
		p->compactions++;
		/* retention marks the compaction stored: streams the memtable
		 * knows see them at once (their subscribers get TRIMMED) */
		const struct hman *m = hpart_manifest(p->hist);
		for (size_t i = 0; i < m->nstreams; i++) {
			const struct hman_stream *ms = &m->streams[i];
			if (ms->first_retained <= 1)
				continue;
			struct stream *s = stream_get(p, ms->key, ms->klen, false);
			if (s && s->first_seq < ms->first_retained)
				s->first_seq = PARLEY_MIN(ms->first_retained,
							  s->last_seq + 1);
		}
	} else if (rc != -PARLEY_ECLOSED) {
		PLOG_E("engine", "history compaction failed (retried later)",
		       "partition=%u err=%s", p->id, parley_errname(rc));
	}
	answer_all(&p->cwait_cur, rc);
	if (p->cwait_next) {
		p->cwait_cur = p->cwait_next;
		p->cwait_next = NULL;
		bool all = p->cnext_all;
		p->cnext_all = false;
		int s2 = part_compact_start(sh, p, all);
		if (s2 != 0)
			answer_all(&p->cwait_cur, s2 == 1 ? 0 : s2);
	} else if (!rc && !e->opt.no_auto_compact &&
		   hpart_manifest(p->hist)->nsegs < segs_before) {
		(void)part_compact_start(sh, p, false); /* another tier may be full */
	}
}

static void handle_hist_done(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	int kind = (int)r->from;
	free(r);
	if (kind == 1) {
		if (p->compact_storing) /* one manifest store at a time */
			p->flush_deferred = true;
		else
			part_flush_finish(sh, p);
	} else if (kind == 2) {
		part_compact_ran(sh, p);
	} else {
		part_compact_stored(sh, p);
	}
	shard_maybe_flush(sh); /* memory pressure goes on without appends */
}

static void handle_flush(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	if (p->flush_busy || p->compact_storing) {
		r->next = p->fwait_next;
		p->fwait_next = r;
		return;
	}
	int rc = part_flush_start(sh, p);
	if (rc == 0) {
		r->next = p->fwait_cur;
		p->fwait_cur = r;
		return;
	}
	answer_int(r, rc == 1 ? 0 : rc);
}

static void handle_compact(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	bool all = r->from != 0;
	if (p->compact_busy) {
		p->cnext_all |= all;
		r->next = p->cwait_next;
		p->cwait_next = r;
		return;
	}
	int rc = part_compact_start(sh, p, all);
	if (rc == 0) {
		r->next = p->cwait_cur;
		p->cwait_cur = r;
		return;
	}
	answer_int(r, rc == 1 ? 0 : rc);
}

static uint64_t flushed_of(void *arg, uint32_t part)
{
	struct pe_engine *e = arg;
	if (part >= e->nparts)
		return UINT64_MAX; /* foreign record: ignored by recovery */
	return e->parts[part].flushed_index;
}

/* Releases WAL segments every partition has flushed past; when the oldest
 * segment still kept is more than wal_pin_segments rolls old, the
 * partitions pinning it are flushed (an idle partition must not pin the
 * disk forever). */
static void shard_wal_release(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	if (e->opt.read_only || sh->fatal)
		return;
	for (int round = 0; round < 4; round++) {
		uint32_t pin[WAL_PIN_MAX], npin = 0, left = 0;
		int n = wal_release(sh->wal, flushed_of, e, pin, WAL_PIN_MAX,
				    &npin, &left);
		if (n > 0)
			PLOG_D("engine", "WAL segments released", "shard=%u n=%d",
			       sh->idx, n);
		if (left <= e->opt.wal_pin_segments || e->opt.no_auto_flush)
			return;
		bool again = false;
		for (uint32_t i = 0; i < npin; i++) {
			if (pin[i] >= e->nparts)
				continue;
			struct part *p = &e->parts[pin[i]];
			if (p->flush_busy)
				continue;
			int rc = part_flush_start(sh, p);
			again |= rc == 1;
		}
		if (!again)
			return;
	}
}

#define IDEM_KEY_BYTES (sizeof(struct idem) + 16u + 2u * sizeof(void *))

uint64_t pe_idem_key_bytes(void)
{
	return IDEM_KEY_BYTES;
}

/* Publishes this shard's memory for pe_memory(); returns its memtable
 * bytes. Shard thread. */
static uint64_t shard_publish_mem(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	uint64_t mem = 0, idem = 0, maxp = 0;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		uint64_t m = e->parts[i].mem_bytes + e->parts[i].pending_bytes;
		mem += m;
		maxp = PARLEY_MAX(maxp, m);
		idem += e->parts[i].nidem;
	}
	atomic_store_explicit(&sh->mem_pub, mem, memory_order_relaxed);
	atomic_store_explicit(&sh->maxp_pub, maxp, memory_order_relaxed);
	atomic_store_explicit(&sh->pend_pub, 0, memory_order_relaxed);
	atomic_store_explicit(&sh->idem_pub, idem, memory_order_relaxed);
	return mem;
}

void pe_memory(struct pe_engine *e, struct pe_memory *out)
{
	*out = (struct pe_memory){0};
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct shard *sh = &e->shards[i];
		out->memtable_bytes += atomic_load_explicit(&sh->mem_pub,
							    memory_order_relaxed);
		out->proposed_bytes += atomic_load_explicit(&sh->pend_pub,
							    memory_order_relaxed);
		out->idem_keys += atomic_load_explicit(&sh->idem_pub,
						       memory_order_relaxed);
		out->memtable_max_partition_bytes = PARLEY_MAX(
			out->memtable_max_partition_bytes,
			atomic_load_explicit(&sh->maxp_pub, memory_order_relaxed));
		out->queued_bytes += atomic_load_explicit(&sh->queued_bytes,
							  memory_order_relaxed);
	}
	out->idem_bytes = out->idem_keys * IDEM_KEY_BYTES;
	out->memtable_bytes += out->proposed_bytes;
	out->total_bytes = out->memtable_bytes + out->idem_bytes +
			   out->queued_bytes;
}

/* After a durable batch or a history commit: partitions past half their
 * memtable flush; past half of the shard's share of memtable_total_bytes
 * the largest memtable flushes too (memory pressure). */
static void shard_maybe_flush(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	uint64_t total = shard_publish_mem(sh);
	if (e->opt.read_only || e->opt.no_auto_flush || sh->stopping)
		return;
	struct part *big = NULL;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		if (p->flush_busy || p->corrupt)
			continue;
		if (p->mem_bytes > e->opt.memtable_bytes / 2)
			(void)part_flush_start(sh, p);
		else if (p->mem_bytes && (!big || p->mem_bytes > big->mem_bytes))
			big = p;
	}
	uint64_t share = e->opt.memtable_total_bytes / e->nshards;
	if (share && total > share / 2 && big)
		(void)part_flush_start(sh, big);
}

static bool shard_hist_busy(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards)
		if (e->parts[i].flush_busy || e->parts[i].compact_busy)
			return true;
	return false;
}

/* Periodic retention: a full compaction of every partition with segments. */
static void shard_tick(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	if (!e->retention.n || e->opt.no_auto_compact || e->opt.read_only)
		return;
	uint64_t now = parley_mono_ns() / 1000000u;
	if (now < sh->next_tick_ms)
		return;
	sh->next_tick_ms = now + e->opt.retention_interval_ms;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		if (p->hist && hpart_manifest(p->hist)->nsegs)
			(void)part_compact_start(sh, p, true);
	}
}

static int shard_tick_timeout(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	if (!e->retention.n || e->opt.no_auto_compact || e->opt.read_only)
		return -1;
	uint64_t now = parley_mono_ns() / 1000000u;
	if (now >= sh->next_tick_ms)
		return 0;
	return (int)PARLEY_MIN(sh->next_tick_ms - now, 60000u);
}

static void recover_corrupt(void *arg, int64_t partition, const char *file,
			    uint64_t off, const char *why)
{
	struct shard *sh = arg;
	struct pe_engine *e = sh->e;
	if (partition >= 0 && (uint64_t)partition < e->nparts &&
	    (uint64_t)partition % e->nshards == sh->idx) {
		part_mark_corrupt(&e->parts[partition], file, off, why);
		return;
	}
	for (uint32_t p = sh->idx; p < e->nparts; p += e->nshards)
		part_mark_corrupt(&e->parts[p], file, off, why);
}

/* Recovery's view of history (the WAL mark check): its arg is the
 * apply_ctx. */
static uint64_t recover_flushed(void *arg, uint32_t part)
{
	struct apply_ctx *c = arg;
	return flushed_of(c->sh->e, part);
}

/* Recovery's corruption callback: its arg is the apply_ctx. */
static void recover_corrupt_ctx(void *arg, int64_t partition, const char *file,
				uint64_t off, const char *why)
{
	struct apply_ctx *c = arg;
	recover_corrupt(c->sh, partition, file, off, why);
}

static void shard_fatal(struct shard *sh, int err)
{
	if (sh->fatal)
		return;
	sh->fatal = -PARLEY_EFATAL;
	PLOG_E("engine", "WAL write or fdatasync failed; appends disabled",
	       "shard=%u err=%s", sh->idx, parley_errname(err));
	for (uint32_t i = 0; i < sh->flight_n; i++) {
		struct req *r = sh->flight_reqs[i];
		sh->e->parts[r->part].pending_bytes -= r->mem_estimate;
		fail_append(r, -PARLEY_EFATAL);
	}
	sh->flight_n = 0;
	for (uint32_t i = 0; i < sh->open_n; i++) {
		struct req *r = sh->open_reqs[i];
		sh->e->parts[r->part].pending_bytes -= r->mem_estimate;
		fail_append(r, -PARLEY_EFATAL);
	}
	sh->open_n = 0;
	if (sh->e->opt.on_fatal)
		sh->e->opt.on_fatal(sh->e->opt.fatal_arg, err);
}

static void shard_submit(struct shard *sh)
{
	if (sh->fatal || wal_in_flight(sh->wal) || !wal_has_open(sh->wal))
		return;
	int rc = wal_submit(sh->wal, sh->ring, 1);
	if (rc) {
		shard_fatal(sh, rc);
		return;
	}
	struct req **t = sh->flight_reqs;
	sh->flight_reqs = sh->open_reqs;
	sh->open_reqs = t;
	sh->flight_n = sh->open_n;
	sh->open_n = 0;
	struct wal_stats ws;
	wal_get_stats(sh->wal, &ws);
	if (ws.segments != sh->wal_rolls) { /* rolled: maybe release, force-flush */
		sh->wal_rolls = ws.segments;
		shard_wal_release(sh);
	}
}

static void shard_on_cqe(struct shard *sh, const struct pio_cqe *c)
{
	if (!wal_in_flight(sh->wal))
		return;
	int rc = wal_on_cqe(sh->wal, c->res);
	if (rc < 0) {
		shard_fatal(sh, rc);
		return;
	}
	if (rc == 0)
		return;
	struct apply_ctx ctx = {.sh = sh, .i = 0, .live = true};
	wal_for_each_durable(sh->wal, apply_record, &ctx);
	PARLEY_ASSERT(ctx.i == sh->flight_n);
	sh->flight_n = 0;
	shard_maybe_flush(sh);
}

/* Process drained requests; stop at an append that does not fit. */
static void shard_process(struct shard *sh)
{
	while (sh->backlog) {
		struct req *r = sh->backlog;
		struct req *next = r->next;
		atomic_fetch_sub_explicit(&sh->queued_bytes, sizeof *r + r->len,
					  memory_order_relaxed);
		if (r->kind == REQ_APPEND || r->kind == REQ_DELETE) {
			if (!handle_append(sh, r)) {
				atomic_fetch_add_explicit(&sh->queued_bytes,
							  sizeof *r + r->len,
							  memory_order_relaxed);
				return; /* open batch full: wait for the flight */
			}
			/* r may be freed by now */
			sh->backlog = next;
			if (!sh->backlog)
				sh->backlog_tail = NULL;
			continue;
		}
		sh->backlog = next;
		if (!sh->backlog)
			sh->backlog_tail = NULL;
		switch (r->kind) {
		case REQ_APPEND:
		case REQ_DELETE:
			break;
		case REQ_HIST_DONE:
			handle_hist_done(sh, r);
			break;
		case REQ_FLUSH:
			handle_flush(sh, r);
			break;
		case REQ_COMPACT:
			handle_compact(sh, r);
			break;
		case REQ_READ:
			handle_read(sh, r);
			break;
		case REQ_META:
			handle_meta(sh, r);
			break;
		case REQ_STATUS:
			handle_status(sh, r);
			break;
		case REQ_LIST:
			handle_list(sh, r);
			break;
		case REQ_SUBSCRIBE:
			handle_subscribe(sh, r);
			break;
		case REQ_RESUME:
			handle_resume(sh, r);
			break;
		case REQ_UNSUBSCRIBE:
			handle_unsubscribe(sh, r);
			break;
		case REQ_STOP:
			sh->stopping = true;
			free(r);
			break;
		}
	}
}

static void shard_drain_inbox(struct shard *sh)
{
	pthread_mutex_lock(&sh->mu);
	struct req *h = sh->in_head, *t = sh->in_tail;
	sh->in_head = sh->in_tail = NULL;
	sh->in_count = 0;
	pthread_mutex_unlock(&sh->mu);
	if (!h)
		return;
	if (sh->backlog_tail)
		sh->backlog_tail->next = h;
	else
		sh->backlog = h;
	sh->backlog_tail = t;
}

static void shard_close_subs(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	for (uint32_t p = sh->idx; p < e->nparts; p += e->nshards) {
		struct part *pt = &e->parts[p];
		for (uint64_t b = 0; b < pt->nsb; b++)
			for (struct stream *s = pt->sbuckets[b]; s; s = s->hnext)
				for (struct pe_sub *sub = s->subs; sub;
				     sub = sub->next) {
					if (atomic_load(&sub->dead))
						continue;
					struct pe_sub_update u = {
						.event = PE_SUB_CLOSED,
						.err = -PARLEY_ECLOSED,
						.next_seq = sub->next_seq};
					atomic_store(&sub->dead, true);
					sub->cb(sub->arg, sub, &u);
				}
	}
}

static void *shard_main(void *arg)
{
	struct shard *sh = arg;
	struct pe_engine *e = sh->e;
	struct pio_cqe cqes[RING_DEPTH];
	struct wal_stats ws;
	wal_get_stats(sh->wal, &ws);
	sh->wal_rolls = ws.segments;
	sh->next_tick_ms = parley_mono_ns() / 1000000u + e->opt.retention_interval_ms;
	shard_wal_release(sh); /* what the last run flushed but did not release */
	shard_publish_mem(sh); /* what recovery rebuilt */
	for (;;) {
		if (atomic_load(&e->aborting))
			return NULL;
		shard_drain_inbox(sh);
		shard_process(sh);
		shard_submit(sh);
		shard_run_catchup(sh);
		shard_tick(sh);
		if (sh->stopping && !sh->backlog && !shard_hist_busy(sh) &&
		    (sh->fatal ||
		     (!wal_in_flight(sh->wal) && !wal_has_open(sh->wal)))) {
			pthread_mutex_lock(&sh->mu);
			bool empty = sh->in_head == NULL;
			pthread_mutex_unlock(&sh->mu);
			if (empty) {
				/* clean stop: the WAL's high-water mark gets
				 * the final end of the log */
				if (!sh->fatal)
					(void)wal_mark_clean(sh->wal);
				break;
			}
		}
		int timeout = sh->catchup || (sh->backlog && !wal_in_flight(sh->wal))
				      ? 0 : shard_tick_timeout(sh);
		int n = e->io->ops->ring_wait(sh->ring, cqes, RING_DEPTH, timeout);
		if (atomic_load(&e->aborting))
			return NULL;
		if (n < 0) {
			if (n != -EINTR && n != -EAGAIN && n != -ETIME)
				shard_fatal(sh, n);
			continue;
		}
		for (int i = 0; i < n; i++)
			shard_on_cqe(sh, &cqes[i]);
	}
	shard_close_subs(sh);
	return NULL;
}

/* ---- manifest ------------------------------------------------------------------------ */

static int manifest_read(struct pe_engine *e, bool *exists)
{
	char path[600];
	snprintf(path, sizeof path, "%s/MANIFEST", e->dir);
	struct pio_file *f;
	int rc = e->io->ops->open(e->io, path, 0, &f);
	if (rc == -ENOENT) {
		*exists = false;
		return 0;
	}
	if (rc)
		return rc;
	*exists = true;
	uint8_t b[MANIFEST_SIZE];
	int64_t n = e->io->ops->pread(e->io, f, b, sizeof b, 0);
	e->io->ops->close(e->io, f);
	if (n != (int64_t)sizeof b || le_get64(b) != MANIFEST_MAGIC ||
	    le_get64(b + 56) != parley_xxh3(b, 56, MANIFEST_SEED)) {
		PLOG_E("engine", "MANIFEST unreadable", "dir=%s", e->dir);
		return -PARLEY_ECORRUPT;
	}
	if (le_get32(b + 8) != MANIFEST_VERSION)
		return -PARLEY_EVERSION;
	e->nparts = le_get32(b + 12);
	e->nshards = le_get32(b + 16);
	e->idem_window_ms = le_get64(b + 24);
	e->idem_max = le_get32(b + 32);
	if (!e->nparts || !e->nshards || e->nparts > 65536 || e->nshards > 256)
		return -PARLEY_ECORRUPT;
	return 0;
}

/* write temp, fsync, rename, fsync dir: the manifest is replaced atomically */
static int manifest_write(struct pe_engine *e)
{
	char tmp[600], fin[600];
	snprintf(tmp, sizeof tmp, "%s/MANIFEST.tmp", e->dir);
	snprintf(fin, sizeof fin, "%s/MANIFEST", e->dir);
	uint8_t b[MANIFEST_SIZE] = {0};
	le_put64(b, MANIFEST_MAGIC);
	le_put32(b + 8, MANIFEST_VERSION);
	le_put32(b + 12, e->nparts);
	le_put32(b + 16, e->nshards);
	le_put64(b + 24, e->idem_window_ms);
	le_put32(b + 32, e->idem_max);
	le_put64(b + 40, parley_now_ms());
	le_put64(b + 56, parley_xxh3(b, 56, MANIFEST_SEED));
	struct pio_file *f;
	int rc = e->io->ops->open(e->io, tmp, PIO_CREATE, &f);
	if (rc)
		return rc;
	rc = e->io->ops->truncate(e->io, f, 0);
	if (!rc)
		rc = e->io->ops->pwrite(e->io, f, b, sizeof b, 0);
	if (!rc)
		rc = e->io->ops->fdatasync(e->io, f);
	e->io->ops->close(e->io, f);
	if (!rc)
		rc = e->io->ops->rename(e->io, tmp, fin);
	if (!rc)
		rc = e->io->ops->fsync_dir(e->io, e->dir);
	return rc;
}

/* ---- open / close ---------------------------------------------------------------------- */

static int hworkers_start(struct pe_engine *e)
{
	for (int i = 0; i < 2; i++) {
		struct hworker *hw = &e->hw[i];
		hw->e = e;
		if (pthread_create(&hw->thread, NULL, hworker_main, hw))
			return -errno;
		hw->started = true;
	}
	return 0;
}

static void hworkers_stop(struct pe_engine *e)
{
	for (int i = 0; i < 2; i++) {
		struct hworker *hw = &e->hw[i];
		if (!hw->started)
			continue;
		pthread_mutex_lock(&hw->mu);
		hw->stop = true;
		pthread_cond_broadcast(&hw->cv);
		pthread_mutex_unlock(&hw->mu);
		pthread_join(hw->thread, NULL);
		hw->started = false;
	}
}

/* Idempotency records of history segments (at open, before the WAL). */
static int idem_load_cb(void *arg, const struct seg_idem *rec)
{
	struct part *p = arg;
	struct stream *s = stream_lookup(p, rec->key, rec->klen, true);
	if (!s)
		return -PARLEY_ENOMEM;
	if (idem_find(p, s, rec->producer))
		return 0;
	return idem_insert(p, s, rec->producer, rec->seq, rec->count, rec->ts);
}

static int part_hist_open(struct pe_engine *e, struct shard *sh,
			  struct part *p)
{
	char hd[700];
	snprintf(hd, sizeof hd, "%s/hist/%u", e->dir, p->id);
	if (!e->opt.read_only) {
		int rc = e->io->ops->mkdir(e->io, hd);
		if (rc && rc != -EEXIST)
			return rc;
	}
	struct hpart_opts ho = {
		.partition = p->id, .cache = sh->cache,
		.retention = e->retention.n ? &e->retention : NULL,
		.read_only = e->opt.read_only,
		.idem_window_ms = e->idem_window_ms};
	int rc = hpart_open(e->io, hd, &ho, &p->hist);
	if (rc == -PARLEY_ECORRUPT) {
		char f[64];
		snprintf(f, sizeof f, "hist/%u", p->id);
		part_mark_corrupt(p, f, 0,
				  "history segment, dictionary or HISTORY unreadable");
		return 0;
	}
	if (rc)
		return rc;
	p->flushed_index = hpart_manifest(p->hist)->flushed_index;
	p->last_index = p->flushed_index;
	uint64_t now = engine_clock(e);
	uint64_t min_ts = now > e->idem_window_ms ? now - e->idem_window_ms : 0;
	rc = hpart_idem_load(p->hist, min_ts, idem_load_cb, p);
	if (rc == -PARLEY_ECORRUPT) {
		char f[64];
		snprintf(f, sizeof f, "hist/%u", p->id);
		part_mark_corrupt(p, f, 0, "idempotency section unreadable");
		return 0;
	}
	return rc;
}

static void engine_free(struct pe_engine *e)
{
	if (!e)
		return;
	if (e->parts) {
		for (uint32_t i = 0; i < e->nparts; i++) {
			struct part *p = &e->parts[i];
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
			if (p->hist) {
				if (p->fjob || p->cjob) /* abort: no file touched */
					hpart_abort(p->hist, p->fjob, p->cjob);
				else
					hpart_close(p->hist);
			}
			fsrc_free(p->fsrc);
			hpart_man_free(p->cman);
			struct req *lists[4] = {p->fwait_cur, p->fwait_next,
						p->cwait_cur, p->cwait_next};
			for (int l = 0; l < 4; l++) /* waiters only exist on abort */
				while (lists[l]) {
					struct req *n = lists[l]->next;
					free(lists[l]);
					lists[l] = n;
				}
			struct idem *i2 = p->ihead;
			while (i2) {
				struct idem *n = i2->fnext;
				free(i2);
				i2 = n;
			}
			free(p->ibuckets);
		}
		free(e->parts);
	}
	if (e->shards) {
		for (uint32_t i = 0; i < e->nshards; i++) {
			struct shard *sh = &e->shards[i];
			struct req *lists[2] = {sh->in_head, sh->backlog};
			for (int l = 0; l < 2; l++)
				while (lists[l]) {
					struct req *n = lists[l]->next;
					if (lists[l]->kind == REQ_UNSUBSCRIBE)
						sub_free(lists[l]->sub);
					free(lists[l]);
					lists[l] = n;
				}
			for (uint32_t k = 0; k < sh->open_n; k++)
				free(sh->open_reqs[k]);
			for (uint32_t k = 0; k < sh->flight_n; k++)
				free(sh->flight_reqs[k]);
			free(sh->open_reqs);
			free(sh->flight_reqs);
			if (sh->wal)
				wal_close(sh->wal);
			if (sh->ring)
				e->io->ops->ring_free(sh->ring);
			if (sh->cache)
				bcache_free(sh->cache);
			pthread_mutex_destroy(&sh->mu);
		}
		free(e->shards);
	}
	if (e->rules) {
		for (size_t i = 0; i < e->retention.n; i++)
			free((void *)e->rules[i].prefix);
		free(e->rules);
	}
	/* last: every WAL file is closed and no ring op is in flight */
	if (e->locked)
		e->io->ops->unlock(e->io, e->lock_token);
	if (e->own_io)
		pio_free(e->io);
	free(e);
}

int pe_open(const struct pe_options *opt, struct pe_engine **out)
{
	if (!opt || !opt->dir || strlen(opt->dir) > 400)
		return -PARLEY_EINVAL;
	struct pe_engine *e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->opt = *opt;
	snprintf(e->dir, sizeof e->dir, "%s", opt->dir);
	e->opt.dir = e->dir;
	if (!e->opt.memtable_bytes)
		e->opt.memtable_bytes = DEF_MEMTABLE;
	if (!e->opt.queue_depth)
		e->opt.queue_depth = DEF_QUEUE;
	if (!e->opt.block_cache_bytes)
		e->opt.block_cache_bytes = DEF_BLOCK_CACHE;
	if (!e->opt.compaction_rate)
		e->opt.compaction_rate = DEF_COMPACTION_RATE;
	if (!e->opt.retention_interval_ms)
		e->opt.retention_interval_ms = DEF_RETENTION_INTERVAL;
	if (!e->opt.wal_pin_segments)
		e->opt.wal_pin_segments = DEF_WAL_PIN;
	for (int i = 0; i < 2; i++) {
		pthread_mutex_init(&e->hw[i].mu, NULL);
		pthread_cond_init(&e->hw[i].cv, NULL);
	}
	e->opt.retention = NULL;
	e->opt.nretention = 0;
	if (opt->nretention) {
		if (!opt->retention) {
			free(e);
			return -PARLEY_EINVAL;
		}
		e->rules = calloc(opt->nretention, sizeof *e->rules);
		if (!e->rules) {
			free(e);
			return -ENOMEM;
		}
		e->retention.rules = e->rules;
		for (size_t i = 0; i < opt->nretention; i++) {
			const struct pe_retention_rule *q = &opt->retention[i];
			uint8_t *pf = malloc(q->plen ? q->plen : 1);
			if (!pf || (q->plen && !q->prefix)) {
				free(pf);
				engine_free(e);
				return pf ? -PARLEY_EINVAL : -ENOMEM;
			}
			if (q->plen)
				memcpy(pf, q->prefix, q->plen);
			e->rules[i] = (struct retention_rule){
				.prefix = pf, .plen = q->plen,
				.max_age_ms = q->max_age_ms,
				.max_count = q->max_count};
			e->retention.n = i + 1;
		}
	}
	e->io = opt->io;
	if (!e->io) {
		e->io = pio_uring_new();
		if (!e->io) {
			free(e);
			return -ENOMEM;
		}
		e->own_io = true;
	}
	int rc = 0;
	if (!opt->read_only) {
		rc = e->io->ops->mkdir(e->io, e->dir);
		if (rc && rc != -EEXIST)
			goto fail;
	}
	/* One writer per data directory: a second process appending to the
	 * same WAL would interleave batches and corrupt it. Read-only opens
	 * (inspect) share the lock with each other, never with a writer. */
	rc = e->io->ops->lock(e->io, e->dir, !opt->read_only, &e->lock_token);
	if (rc) {
		if (rc == -PARLEY_ELOCKED)
			PLOG_E("engine", "data directory is locked by another "
			       "process (see its LOCK file for the pid)",
			       "dir=%s", e->dir);
		goto fail;
	}
	e->locked = true;
	bool exists;
	rc = manifest_read(e, &exists);
	if (rc)
		goto fail;
	if (exists) {
		if (opt->partitions && opt->partitions != e->nparts) {
			PLOG_E("engine", "partition count differs from the data "
			       "directory's", "dir=%s have=%u asked=%u", e->dir,
			       e->nparts, opt->partitions);
			rc = -PARLEY_EINVAL;
			goto fail;
		}
	} else {
		if (opt->read_only) {
			rc = -PARLEY_ENOTFOUND;
			goto fail;
		}
		e->nparts = opt->partitions ? opt->partitions : DEF_PARTITIONS;
		e->nshards = opt->shards ? opt->shards : DEF_SHARDS;
		e->idem_window_ms =
			opt->idem_window_ms ? opt->idem_window_ms : DEF_IDEM_WINDOW;
		e->idem_max = opt->idem_max_keys ? opt->idem_max_keys : DEF_IDEM_MAX;
		if (e->nparts > 65536 || e->nshards > 256 ||
		    e->nshards > e->nparts) {
			rc = -PARLEY_EINVAL;
			goto fail;
		}
		char wdir[600];
		snprintf(wdir, sizeof wdir, "%s/wal", e->dir);
		rc = e->io->ops->mkdir(e->io, wdir);
		if (rc && rc != -EEXIST)
			goto fail;
		rc = manifest_write(e);
		if (rc)
			goto fail;
	}
	e->parts = calloc(e->nparts, sizeof *e->parts);
	e->shards = calloc(e->nshards, sizeof *e->shards);
	if (!e->parts || !e->shards) {
		rc = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < e->nparts; i++) {
		e->parts[i].id = i;
		e->parts[i].next_index = 1;
	}
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct shard *sh = &e->shards[i];
		sh->e = e;
		sh->idx = i;
		pthread_mutex_init(&sh->mu, NULL);
		rc = e->io->ops->ring_new(e->io, RING_DEPTH, &sh->ring);
		if (rc)
			goto fail;
		rc = bcache_new(e->opt.block_cache_bytes, &sh->cache);
		if (rc)
			goto fail;
		if (!opt->read_only) {
			char hdir[600];
			snprintf(hdir, sizeof hdir, "%s/hist", e->dir);
			rc = e->io->ops->mkdir(e->io, hdir);
			if (rc && rc != -EEXIST)
				goto fail;
		}
		/* history first: WAL replay skips what segments already hold,
		 * continues streams from them and extends their idempotency */
		for (uint32_t p = i; p < e->nparts; p += e->nshards) {
			rc = part_hist_open(e, sh, &e->parts[p]);
			if (rc)
				goto fail;
		}
		char wdir[600];
		snprintf(wdir, sizeof wdir, "%s/wal/%u", e->dir, i);
		struct apply_ctx ctx = {.sh = sh, .live = false};
		struct wal_recovery rec = {.record = apply_record,
					   .corrupt = recover_corrupt_ctx,
					   .flushed = recover_flushed,
					   .arg = &ctx};
		rc = wal_open(e->io, wdir, e->opt.wal_segment_bytes,
			      opt->read_only, &rec, &sh->wal);
		if (rc)
			goto fail;
		for (uint32_t p = i; p < e->nparts; p += e->nshards)
			e->parts[p].next_index = e->parts[p].last_index + 1;
	}
	rc = hworkers_start(e);
	if (rc)
		goto fail;
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct shard *sh = &e->shards[i];
		if (pthread_create(&sh->thread, NULL, shard_main, sh)) {
			rc = -errno;
			goto fail;
		}
		sh->started = true;
	}
	uint64_t streams = 0, entries = 0, corrupt = 0;
	for (uint32_t i = 0; i < e->nparts; i++) {
		streams += e->parts[i].nstreams;
		entries += e->parts[i].nentries;
		corrupt += e->parts[i].corrupt;
	}
	PLOG_I("engine", "opened", "dir=%s partitions=%u shards=%u streams=%" PRIu64
	       " entries=%" PRIu64 " corrupt_partitions=%" PRIu64, e->dir,
	       e->nparts, e->nshards, streams, entries, corrupt);
	*out = e;
	return 0;
fail:
	if (e->shards) {
		atomic_store(&e->aborting, true);
		for (uint32_t i = 0; i < e->nshards; i++)
			if (e->shards[i].started) {
				e->io->ops->ring_wake(e->shards[i].ring);
				pthread_join(e->shards[i].thread, NULL);
			}
	}
	hworkers_stop(e);
	engine_free(e);
	return rc;
}

void pe_close(struct pe_engine *e)
{
	if (!e)
		return;
	atomic_store(&e->closing, true);
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct req *r = calloc(1, sizeof *r);
		PARLEY_ASSERT(r);
		r->kind = REQ_STOP;
		r->part = i;
		PARLEY_ASSERT(shard_push(e, r) == 0);
	}
	for (uint32_t i = 0; i < e->nshards; i++)
		pthread_join(e->shards[i].thread, NULL);
	hworkers_stop(e); /* idle: the shards waited for their jobs */
	engine_free(e);
}

void pe_abort(struct pe_engine *e)
{
	if (!e)
		return;
	atomic_store(&e->closing, true);
	atomic_store(&e->aborting, true);
	for (uint32_t i = 0; i < e->nshards; i++) {
		e->io->ops->ring_wake(e->shards[i].ring);
		pthread_join(e->shards[i].thread, NULL);
	}
	hworkers_stop(e); /* a running job ends early (its files are orphans) */
	engine_free(e);
}

uint32_t pe_partition_count(const struct pe_engine *e)
{
	return e->nparts;
}

uint32_t pe_partition_of(const struct pe_engine *e, const void *key,
			 size_t klen)
{
	return (uint32_t)(parley_hash_key(key, klen) % e->nparts);
}

void pe_stats(struct pe_engine *e, struct pe_stats *out)
{
	memset(out, 0, sizeof *out);
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct shard *sh = &e->shards[i];
		out->appends += atomic_load(&sh->n_appends);
		out->entries += atomic_load(&sh->n_entries);
		/* WAL stats are written by the shard thread; a torn read of a
		 * u64 counter cannot happen on x86-64 and they are advisory */
		struct wal_stats ws;
		wal_get_stats(sh->wal, &ws);
		out->wal_batches += ws.batches;
		out->wal_bytes += ws.bytes;
		out->fsync_ns_total += ws.sync_ns;
	}
}

/* ---- public requests ------------------------------------------------------------------ */

static bool key_ok(const void *key, size_t klen)
{
	return key && klen > 0 && klen <= PE_MAX_KEY;
}

int pe_append(struct pe_engine *e, const struct pe_append_req *q,
	      pe_append_cb cb, void *arg)
{
	if (!q || !cb || !key_ok(q->key, q->klen) || q->count == 0 ||
	    q->count > PE_MAX_BATCH || !q->entries)
		return -PARLEY_EINVAL;
	uint64_t len = 1 + q->klen + PE_PRODUCER_LEN + 8 + 8 + 4;
	uint64_t mem = 0;
	for (uint32_t i = 0; i < q->count; i++) {
		if (q->entries[i].len > PE_MAX_PAYLOAD)
			return -PARLEY_ETOOBIG;
		if (q->entries[i].len && !q->entries[i].payload)
			return -PARLEY_EINVAL;
		len += 8 + q->entries[i].len;
		mem += mentry_cost(q->entries[i].len);
	}
	if (len > CMD_MAX_BYTES)
		return -PARLEY_ETOOBIG;
	struct req *r = malloc(sizeof *r + len);
	if (!r)
		return -PARLEY_ENOMEM;
	memset(r, 0, sizeof *r);
	r->kind = REQ_APPEND;
	r->part = pe_partition_of(e, q->key, q->klen);
	r->cb.append = cb;
	r->arg = arg;
	r->len = (uint32_t)len;
	r->klen = (uint8_t)q->klen;
	r->mem_estimate = (uint32_t)PARLEY_MIN(mem, UINT32_MAX);
	uint8_t *b = r->data;
	*b++ = (uint8_t)q->klen;
	memcpy(b, q->key, q->klen);
	b += q->klen;
	memcpy(b, q->producer, PE_PRODUCER_LEN);
	b += PE_PRODUCER_LEN;
	le_put64(b, 0); /* ts: stamped on the shard */
	b += 8;
	le_put64(b, q->expected_last_seq);
	b += 8;
	le_put32(b, q->count);
	b += 4;
	for (uint32_t i = 0; i < q->count; i++) {
		le_put16(b, q->entries[i].type);
		le_put16(b + 2, q->entries[i].flags);
		le_put32(b + 4, q->entries[i].len);
		b += 8;
		if (q->entries[i].len)
			memcpy(b, q->entries[i].payload, q->entries[i].len);
		b += q->entries[i].len;
	}
	int rc = shard_push(e, r);
	if (rc)
		free(r);
	return rc;
}

static struct req *key_req(struct pe_engine *e, enum req_kind kind,
			   const void *key, size_t klen)
{
	struct req *r = malloc(sizeof *r + klen);
	if (!r)
		return NULL;
	memset(r, 0, sizeof *r);
	r->kind = kind;
	r->part = pe_partition_of(e, key, klen);
	r->klen = (uint8_t)klen;
	r->len = (uint32_t)klen;
	memcpy(r->data, key, klen);
	return r;
}

int pe_read(struct pe_engine *e, const struct pe_read_req *q, pe_read_cb cb,
	    void *arg)
{
	if (!q || !cb || !key_ok(q->key, q->klen) || q->limit == 0 ||
	    q->limit > PE_MAX_READ || (q->dir != PE_FORWARD && q->dir != PE_BACKWARD))
		return -PARLEY_EINVAL;
	struct req *r = key_req(e, REQ_READ, q->key, q->klen);
	if (!r)
		return -PARLEY_ENOMEM;
	r->from = q->from;
	r->dir = q->dir;
	r->limit = q->limit;
	r->cb.read = cb;
	r->arg = arg;
	int rc = shard_push(e, r);
	if (rc)
		free(r);
	return rc;
}

int pe_subscribe(struct pe_engine *e, const void *key, size_t klen,
		 uint64_t from_seq, pe_sub_cb cb, void *arg,
		 struct pe_sub **out)
{
	if (!cb || !out || !key_ok(key, klen))
		return -PARLEY_EINVAL;
	struct pe_sub *sub = calloc(1, sizeof *sub);
	if (!sub)
		return -PARLEY_ENOMEM;
	sub->e = e;
	sub->part = pe_partition_of(e, key, klen);
	sub->next_seq = from_seq ? from_seq : 1;
	sub->cb = cb;
	sub->arg = arg;
	sub->klen = (uint8_t)klen;
	memcpy(sub->key, key, klen);
	struct req *r = calloc(1, sizeof *r);
	if (!r) {
		free(sub);
		return -PARLEY_ENOMEM;
	}
	r->kind = REQ_SUBSCRIBE;
	r->part = sub->part;
	r->sub = sub;
	int rc = shard_push(e, r);
	if (rc) {
		free(r);
		free(sub);
		return rc;
	}
	*out = sub;
	return 0;
}

int pe_sub_resume(struct pe_sub *s)
{
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->kind = REQ_RESUME;
	r->part = s->part;
	r->sub = s;
	int rc = shard_push(s->e, r);
	if (rc)
		free(r);
	return rc;
}

int pe_unsubscribe(struct pe_sub *s, void (*done)(void *arg), void *arg)
{
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM; /* caller may retry; sub stays valid */
	atomic_store(&s->dead, true);
	r->kind = REQ_UNSUBSCRIBE;
	r->part = s->part;
	r->sub = s;
	r->cb.generic = done;
	r->arg = arg;
	int rc = shard_push(s->e, r);
	if (rc)
		free(r);
	return rc;
}

/* ---- blocking wrappers ------------------------------------------------------------------- */

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	struct pe_append_result ares;
	struct pe_read_result rres;
	struct pe_entry *entries;
	int err;
};

static void waiter_init(struct waiter *w)
{
	memset(w, 0, sizeof *w);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
}

static void waiter_signal(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void waiter_wait(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	while (!w->done)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

static void sync_append_cb(void *arg, const struct pe_append_result *r)
{
	struct waiter *w = arg;
	w->ares = *r;
	waiter_signal(w);
}

int pe_append_sync(struct pe_engine *e, const struct pe_append_req *q,
		   struct pe_append_result *res)
{
	struct waiter w;
	waiter_init(&w);
	int rc = pe_append(e, q, sync_append_cb, &w);
	if (rc) {
		memset(res, 0, sizeof *res);
		res->err = rc;
		pthread_mutex_destroy(&w.mu);
		pthread_cond_destroy(&w.cv);
		return rc;
	}
	waiter_wait(&w);
	*res = w.ares;
	return res->err;
}

static void sync_read_cb(void *arg, const struct pe_read_result *r)
{
	struct waiter *w = arg;
	w->rres = *r;
	w->rres.entries = NULL;
	w->err = r->err;
	if (!r->err && r->count) {
		size_t total = sizeof(struct pe_entry) * r->count;
		for (uint32_t i = 0; i < r->count; i++)
			total += r->entries[i].len;
		struct pe_entry *out = malloc(total);
		if (!out) {
			w->err = -PARLEY_ENOMEM;
		} else {
			uint8_t *pl = (uint8_t *)(out + r->count);
			for (uint32_t i = 0; i < r->count; i++) {
				out[i] = r->entries[i];
				memcpy(pl, r->entries[i].payload, r->entries[i].len);
				out[i].payload = pl;
				pl += r->entries[i].len;
			}
			w->entries = out;
		}
	}
	waiter_signal(w);
}

int pe_read_sync(struct pe_engine *e, const struct pe_read_req *q,
		 struct pe_entry **out, uint32_t *count,
		 struct pe_read_result *meta)
{
	struct waiter w;
	waiter_init(&w);
	*out = NULL;
	*count = 0;
	int rc = pe_read(e, q, sync_read_cb, &w);
	if (rc) {
		pthread_mutex_destroy(&w.mu);
		pthread_cond_destroy(&w.cv);
		return rc;
	}
	waiter_wait(&w);
	if (meta)
		*meta = w.rres;
	if (w.err) {
		free(w.entries);
		return w.err;
	}
	*out = w.entries;
	*count = w.entries ? w.rres.count : 0;
	return 0;
}

static void sync_generic_cb(void *arg)
{
	waiter_signal(arg);
}

static int blocking_req(struct pe_engine *e, struct req *r, void *outp)
{
	struct waiter w;
	waiter_init(&w);
	r->out = outp;
	r->cb.generic = sync_generic_cb;
	r->arg = &w;
	int rc = shard_push(e, r);
	if (rc) {
		free(r);
		pthread_mutex_destroy(&w.mu);
		pthread_cond_destroy(&w.cv);
		return rc;
	}
	waiter_wait(&w);
	return 0;
}

int pe_meta_sync(struct pe_engine *e, const void *key, size_t klen,
		 struct pe_meta *out)
{
	if (!key_ok(key, klen) || !out)
		return -PARLEY_EINVAL;
	struct req *r = key_req(e, REQ_META, key, klen);
	if (!r)
		return -PARLEY_ENOMEM;
	struct meta_out mo;
	int rc = blocking_req(e, r, &mo);
	if (rc)
		return rc;
	*out = mo.meta;
	return mo.err;
}

int pe_partition_status(struct pe_engine *e, uint32_t partition,
			struct pe_partition_status *out)
{
	if (partition >= e->nparts || !out)
		return -PARLEY_EINVAL;
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->kind = REQ_STATUS;
	r->part = partition;
	return blocking_req(e, r, out);
}

int pe_list_streams(struct pe_engine *e, uint32_t partition, pe_stream_cb cb,
		    void *arg)
{
	if (partition >= e->nparts || !cb)
		return -PARLEY_EINVAL;
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->kind = REQ_LIST;
	r->part = partition;
	struct list_out lo;
	int rc = blocking_req(e, r, &lo);
	if (rc)
		return rc;
	if (lo.err) {
		free(lo.buf);
		return lo.err;
	}
	for (size_t off = 0; off < lo.len && !rc;) {
		uint8_t kl = lo.buf[off];
		struct pe_meta m = {
			.first_seq = le_get64(lo.buf + off + 1 + kl),
			.last_seq = le_get64(lo.buf + off + 9 + kl),
			.last_ts_ms = le_get64(lo.buf + off + 17 + kl),
		};
		rc = cb(arg, lo.buf + off + 1, kl, &m);
		off += 1 + kl + 24;
	}
	free(lo.buf);
	return rc > 0 ? 0 : rc;
}

/* ---- delete and history maintenance --------------------------------------------------- */

int pe_delete(struct pe_engine *e, const void *key, size_t klen,
	      uint64_t through, pe_delete_cb cb, void *arg)
{
	if (!cb || !key_ok(key, klen))
		return -PARLEY_EINVAL;
	uint32_t len = (uint32_t)(1 + klen + 8);
	struct req *r = malloc(sizeof *r + len);
	if (!r)
		return -PARLEY_ENOMEM;
	memset(r, 0, sizeof *r);
	r->kind = REQ_DELETE;
	r->part = pe_partition_of(e, key, klen);
	r->cb.del = cb;
	r->arg = arg;
	r->len = len;
	r->klen = (uint8_t)klen;
	r->data[0] = (uint8_t)klen;
	memcpy(r->data + 1, key, klen);
	le_put64(r->data + 1 + klen, through);
	int rc = shard_push(e, r);
	if (rc)
		free(r);
	return rc;
}

struct del_waiter {
	struct waiter w;
	struct pe_delete_result res;
};

static void sync_delete_cb(void *arg, const struct pe_delete_result *r)
{
	struct del_waiter *d = arg;
	d->res = *r;
	waiter_signal(&d->w);
}

int pe_delete_sync(struct pe_engine *e, const void *key, size_t klen,
		   uint64_t through, struct pe_delete_result *r)
{
	struct del_waiter d;
	waiter_init(&d.w);
	memset(&d.res, 0, sizeof d.res);
	int rc = pe_delete(e, key, klen, through, sync_delete_cb, &d);
	if (rc) {
		pthread_mutex_destroy(&d.w.mu);
		pthread_cond_destroy(&d.w.cv);
		memset(r, 0, sizeof *r);
		r->err = rc;
		return rc;
	}
	waiter_wait(&d.w);
	*r = d.res;
	return r->err;
}

int pe_flush_sync(struct pe_engine *e, uint32_t partition)
{
	if (partition >= e->nparts)
		return -PARLEY_EINVAL;
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->kind = REQ_FLUSH;
	r->part = partition;
	int out = 0;
	int rc = blocking_req(e, r, &out);
	return rc ? rc : out;
}

int pe_compact_sync(struct pe_engine *e, uint32_t partition, bool all)
{
	if (partition >= e->nparts)
		return -PARLEY_EINVAL;
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->kind = REQ_COMPACT;
	r->part = partition;
	r->from = all;
	int out = 0;
	int rc = blocking_req(e, r, &out);
	return rc ? rc : out;
}

/* ---- offline history inspection ----------------------------------------------------------- */

static int hist_open_ro(struct pio **io, bool *own, const char *dir,
			uint32_t partition, struct hpart **h)
{
	*own = false;
	if (!*io) {
		*io = pio_uring_new();
		if (!*io)
			return -PARLEY_ENOMEM;
		*own = true;
	}
	char hd[700];
	snprintf(hd, sizeof hd, "%s/hist/%u", dir, partition);
	struct hpart_opts o = {.partition = partition, .read_only = true};
	int rc = hpart_open(*io, hd, &o, h);
	if (rc && *own) {
		pio_free(*io);
		*own = false;
	}
	return rc;
}

int pe_history_inspect(struct pio *io, const char *dir, uint32_t partition,
		       bool verify, struct pe_hist_report *hr,
		       int (*cb)(void *arg, const struct pe_seg_report *r),
		       void *arg)
{
	bool own;
	struct hpart *h;
	int rc = hist_open_ro(&io, &own, dir, partition, &h);
	if (rc)
		return rc;
	const struct hman *m = hpart_manifest(h);
	size_t n = hpart_segments(h, NULL, 0);
	if (hr) {
		*hr = (struct pe_hist_report){
			.flushed_index = m->flushed_index,
			.generation = m->generation, .dict_id = m->dict_id,
			.segments = (uint32_t)n,
			.marked_streams = (uint32_t)m->nstreams};
	}
	struct hpart_seg_view *v = calloc(n ? n : 1, sizeof *v);
	if (!v)
		rc = -PARLEY_ENOMEM;
	else
		hpart_segments(h, v, n);
	int worst = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		struct pe_seg_report sr = {0};
		sr.partition = partition;
		sr.seg_id = v[i].id;
		seg_file_name(sr.file, sizeof sr.file, v[i].id);
		sr.entries = v[i].info.entries;
		sr.streams = v[i].info.streams;
		sr.blocks = v[i].info.blocks;
		sr.raw_payload_bytes = v[i].info.raw_payload_bytes;
		sr.file_bytes = v[i].info.file_bytes;
		sr.ratio = sr.raw_payload_bytes
				   ? (double)sr.file_bytes / (double)sr.raw_payload_bytes
				   : 0.0;
		sr.dict_id = v[i].info.dict_id;
		sr.min_ts = v[i].info.min_ts;
		sr.max_ts = v[i].info.max_ts;
		sr.idem_records = v[i].info.idem_records;
		if (verify) {
			struct seg_verify_report rep;
			memset(&rep, 0, sizeof rep);
			/* the view's reader is ours alone here: hpart is private
			 * to this call */
			sr.verify_err = seg_verify((struct seg_reader *)v[i].r, &rep);
			sr.verified = true;
			sr.blocks_ok = rep.blocks_ok;
			sr.blocks_bad = rep.blocks_bad;
			snprintf(sr.error, sizeof sr.error, "%s", rep.first_error);
			if (sr.verify_err)
				worst = sr.verify_err;
		}
		rc = cb ? cb(arg, &sr) : 0;
		if (rc > 0) {
			rc = 0;
			break; /* the callback says stop */
		}
	}
	free(v);
	hpart_close(h);
	if (own)
		pio_free(io);
	return rc ? rc : worst;
}

int pe_history_dump(struct pio *io, const char *dir, uint32_t partition,
		    uint64_t seg_id,
		    int (*cb)(void *arg, const void *key, size_t klen,
			      const struct pe_entry *e),
		    void *arg, char *err, size_t errcap)
{
	bool own;
	struct hpart *h;
	if (err && errcap)
		err[0] = 0;
	int rc = hist_open_ro(&io, &own, dir, partition, &h);
	if (rc)
		return rc;
	size_t n = hpart_segments(h, NULL, 0);
	struct hpart_seg_view *v = calloc(n ? n : 1, sizeof *v);
	struct seg_reader *r = NULL;
	if (!v) {
		rc = -PARLEY_ENOMEM;
	} else {
		hpart_segments(h, v, n);
		for (size_t i = 0; i < n; i++)
			if (v[i].id == seg_id)
				r = (struct seg_reader *)v[i].r;
		if (!r)
			rc = -PARLEY_ENOTFOUND;
	}
	struct seg_iter *it = NULL;
	if (!rc)
		rc = seg_iter_all(r, &it);
	while (!rc) {
		struct seg_item item;
		int k = seg_iter_next(it, &item);
		if (k <= 0) {
			rc = k;
			break;
		}
		if (cb(arg, item.key, item.klen, &item.e))
			break;
	}
	if (rc == -PARLEY_ECORRUPT && err && errcap && r)
		snprintf(err, errcap, "%s", seg_error(r));
	seg_iter_free(it);
	free(v);
	hpart_close(h);
	if (own)
		pio_free(io);
	return rc;
}
