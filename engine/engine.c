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
 *   2. stream->ents[i] has seq first_seq + i; seqs are dense.
 *   3. A subscription's next_seq only moves forward by entries delivered.
 *   4. A request is owned by the inbox, then the shard; the shard frees it
 *      after its callback (or when the engine stops).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	s->hnext = p->sbuckets[h & (p->nsb - 1)];
	p->sbuckets[h & (p->nsb - 1)] = s;
	p->nstreams++;
	return s;
}

static struct mentry *stream_at(const struct stream *s, uint64_t seq)
{
	if (seq < s->first_seq || seq > s->last_seq)
		return NULL;
	return s->ents[seq - s->first_seq];
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
	struct stream *s = stream_get(p, d.key, d.klen, true);
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

/* ---- subscriptions ---------------------------------------------------------------- */

static void sub_free(struct pe_sub *sub)
{
	free(sub);
}

/* Delivers up to `budget` entries. Returns true when caught up (or stopped
 * for a reason other than the budget). */
static bool sub_pump(struct pe_sub *sub, uint32_t budget)
{
	struct stream *s = sub->st;
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
		while (n < SUB_CHUNK && n < budget &&
		       sub->next_seq + n <= s->last_seq) {
			struct mentry *m = stream_at(s, sub->next_seq + n);
			PARLEY_ASSERT(m && m->seq == sub->next_seq + n);
			batch[n] = (struct pe_entry){
				.seq = m->seq, .ts_ms = m->ts, .type = m->type,
				.flags = m->flags, .len = m->len,
				.payload = m->payload};
			memcpy(batch[n].producer, m->producer, PE_PRODUCER_LEN);
			n++;
		}
		sub->next_seq += n;
		budget -= n;
		struct pe_sub_update u = {.event = PE_SUB_ENTRIES,
					  .entries = batch, .count = n,
					  .next_seq = sub->next_seq};
		if (sub->cb(sub->arg, sub, &u) == PE_SUB_PAUSE)
			sub->paused = true;
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
	if (atomic_load(&e->closing) && r->kind != REQ_STOP &&
	    r->kind != REQ_UNSUBSCRIBE)
		return -PARLEY_ECLOSED;
	struct shard *sh = shard_of(e, r->part);
	pthread_mutex_lock(&sh->mu);
	if (sh->in_count >= e->opt.queue_depth && r->kind != REQ_STOP &&
	    r->kind != REQ_UNSUBSCRIBE) {
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
	pthread_mutex_unlock(&sh->mu);
	if (was_empty)
		e->io->ops->ring_wake(sh->ring);
	return 0;
}

/* ---- shard: request handling -------------------------------------------------------- */

static void fail_append(struct req *r, int err)
{
	struct pe_append_result res = {.err = err};
	r->cb.append(r->arg, &res);
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
	if (p->mem_bytes + p->pending_bytes + r->mem_estimate >
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
	/* the timestamp is taken when the command enters the log */
	le_put64(body + 1 + r->klen + PE_PRODUCER_LEN, engine_clock(e));
	wal_commit_rec(sh->wal, p->id, CMD_APPEND, 1, p->next_index++);
	p->pending_bytes += r->mem_estimate;
	sh->open_reqs[sh->open_n++] = r;
	return true;
}

static void handle_read(struct shard *sh, struct req *r)
{
	struct pe_engine *e = sh->e;
	struct part *p = &e->parts[r->part];
	struct pe_read_result res = {0};
	struct pe_entry *out = NULL;
	if (p->corrupt) {
		res.err = -PARLEY_ECORRUPT;
		goto done;
	}
	struct stream *s = stream_get(p, r->data, r->klen, false);
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
	uint32_t n = 0;
	if (r->dir == PE_FORWARD) {
		uint64_t seq = r->from ? r->from : 1;
		if (seq < s->first_seq) {
			res.err = -PARLEY_ETRIMMED;
			goto done;
		}
		for (; n < limit && seq <= s->last_seq; seq++) {
			struct mentry *m = stream_at(s, seq);
			out[n++] = (struct pe_entry){.seq = m->seq, .ts_ms = m->ts,
				.type = m->type, .flags = m->flags, .len = m->len,
				.payload = m->payload};
			memcpy(out[n - 1].producer, m->producer, PE_PRODUCER_LEN);
		}
		res.end = seq > s->last_seq;
	} else {
		uint64_t seq = PARLEY_MIN(r->from, s->last_seq);
		if (seq < s->first_seq && seq != 0 && s->first_seq > 1) {
			res.err = -PARLEY_ETRIMMED;
			goto done;
		}
		for (; n < limit && seq >= s->first_seq && seq > 0; seq--) {
			struct mentry *m = stream_at(s, seq);
			out[n++] = (struct pe_entry){.seq = m->seq, .ts_ms = m->ts,
				.type = m->type, .flags = m->flags, .len = m->len,
				.payload = m->payload};
			memcpy(out[n - 1].producer, m->producer, PE_PRODUCER_LEN);
		}
		res.end = seq < s->first_seq || seq == 0;
	}
	res.entries = out;
	res.count = n;
done:
	r->cb.read(r->arg, &res);
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
		struct stream *s = stream_get(p, r->data, r->klen, false);
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
	struct stream *s = stream_get(p, sub->key, sub->klen, true);
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
	if (r)
		p->pending_bytes -= r->mem_estimate;
	if (p->corrupt) {
		res.err = -PARLEY_ECORRUPT;
	} else if (rec->index != p->last_index + 1) {
		part_mark_corrupt(p, rec->file, rec->off, "log index gap");
		res.err = -PARLEY_ECORRUPT;
	} else if (rec->type != CMD_APPEND) {
		part_mark_corrupt(p, rec->file, rec->off,
				  "unknown log command type");
		res.err = -PARLEY_ECORRUPT;
	} else {
		p->last_index = rec->index;
		int rc = part_apply_append(e, p, rec->body, rec->len, &res,
					   &touched);
		if (rc == -PARLEY_ECORRUPT) {
			part_mark_corrupt(p, rec->file, rec->off,
					  "undecodable append command");
			res.err = rc;
		} else if (rc) {
			/* out of memory while applying: state may be partial,
			 * stop serving the partition rather than diverge */
			part_mark_corrupt(p, rec->file, rec->off,
					  "out of memory while applying");
			res.err = rc;
		}
	}
	if (r) {
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
}

/* Process drained requests; stop at an append that does not fit. */
static void shard_process(struct shard *sh)
{
	while (sh->backlog) {
		struct req *r = sh->backlog;
		struct req *next = r->next;
		if (r->kind == REQ_APPEND) {
			if (!handle_append(sh, r))
				return; /* open batch full: wait for the flight */
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
	for (;;) {
		if (atomic_load(&e->aborting))
			return NULL;
		shard_drain_inbox(sh);
		shard_process(sh);
		shard_submit(sh);
		shard_run_catchup(sh);
		if (sh->stopping && !sh->backlog &&
		    (sh->fatal ||
		     (!wal_in_flight(sh->wal) && !wal_has_open(sh->wal)))) {
			pthread_mutex_lock(&sh->mu);
			bool empty = sh->in_head == NULL;
			pthread_mutex_unlock(&sh->mu);
			if (empty)
				break;
		}
		int timeout = sh->catchup || (sh->backlog && !wal_in_flight(sh->wal)) ? 0 : -1;
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
			pthread_mutex_destroy(&sh->mu);
		}
		free(e->shards);
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
		char wdir[600];
		snprintf(wdir, sizeof wdir, "%s/wal/%u", e->dir, i);
		struct apply_ctx ctx = {.sh = sh, .live = false};
		struct wal_recovery rec = {.record = apply_record,
					   .corrupt = recover_corrupt_ctx,
					   .arg = &ctx};
		rc = wal_open(e->io, wdir, e->opt.wal_segment_bytes,
			      opt->read_only, &rec, &sh->wal);
		if (rc)
			goto fail;
		for (uint32_t p = i; p < e->nparts; p += e->nshards)
			e->parts[p].next_index = e->parts[p].last_index + 1;
	}
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
