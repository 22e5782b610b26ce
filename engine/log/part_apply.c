/*
 * part_apply.c — the partition state machine: applying one log command
 * (cmd.h) at (index, term) to a partition's memtable, idempotency table
 * and deletion marks; looking ahead over a batch of commands applied in
 * order (prefetches and precomputed hashes only: "looking ahead" below,
 * never a different outcome); and a hash of that state for comparing
 * replicas.
 *
 * Contract (part_apply)
 *   1. Deterministic: the outcome depends only on the partition's state and
 *      (index, term, kind, body). No clock is read (the timestamp is in the
 *      command, stamped by its proposer; idempotency expiry is measured in
 *      command time), nothing random, no file written.
 *   2. Commands apply in index order with no gap: index must be
 *      last_index + 1, else -PARLEY_ECORRUPT and nothing changes.
 *   3. All or nothing: every allocation an APPEND needs is made before the
 *      first visible change. On -PARLEY_ECORRUPT (gap, unknown kind,
 *      undecodable body) or -ENOMEM the partition's entries, seqs,
 *      idempotency records and marks are as before, and last_index did not
 *      move; `why` says what happened. The caller decides (today: the
 *      partition is marked failed, since a replica may not skip an entry).
 *   4. A command's own outcome is not an error of apply: a failed
 *      expected-seq precondition (-PARLEY_ESEQ) and an idempotent duplicate
 *      are results in res, and the index is consumed.
 *   Known exception to "no I/O": a stream the memtable does not hold is
 *   continued from history metadata (hpart_stream_meta: an index lookup in
 *   the partition's segments, which may read a block through the cache).
 *
 * Threads: the partition's shard thread (live apply) or the opening
 * thread (recovery, before the shards start). Never two at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "engine_internal.h"

static const uint8_t zero_producer[PE_PRODUCER_LEN];

void part_mark_corrupt(struct part *p, const char *fmt_file,
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

/* ---- looking ahead ------------------------------------------------------------- */

/*
 * A ready applies its committed commands back to back (log/part_raft.c),
 * and on a follower nearly every one misses the cache several times in a
 * row, each load depending on the one before: the command's body, the
 * stream table's bucket, the stream it points to (two lines: the hash,
 * the key), the idempotency index's slot, and the memtable slot of
 * s->ents its entry takes (a line written once per 8 entries of the
 * stream, long evicted since). These are per-partition tables touched a
 * few times per round, and the rest of a round evicts them.
 *
 * So the applier looks ahead, one stage per dependent load, later stages
 * for nearer commands (PART_AHEAD = 3; before applying command k):
 *   stage 0  prefetch the body of command k + 4
 *   stage 1  command k + 3: hash its key and its record's key (kept in the
 *            hint, so no key is hashed twice), prefetch bucket and slot
 *   stage 2  command k + 2: its bucket has arrived; prefetch the stream
 *   stage 3  command k + 1: its stream has arrived; prefetch, for writing,
 *            the s->ents slot its first entry takes
 * and part_ahead_init runs the stages of the first commands stage by
 * stage, so that a ready of one to four commands (the common case at 64
 * partitions) has its loads of one stage in flight together.
 * A hint is only a hint: the state it was computed against may change
 * before its command applies (a stream created or a table grown by the
 * commands in between), which costs a miss, never a wrong result: the
 * hashes are pure functions of the command's bytes, and part_apply_hinted
 * uses them only with the body (address and length) they were made from,
 * which must not change in between (a ready's entries do not).
 */
void part_apply_look(const struct part *p, uint16_t kind, const uint8_t *body,
		     size_t len, struct part_apply_hint *h)
{
	h->body = NULL;
	if (kind != CMD_APPEND || !body || len < CMD_APPEND_HDR(1u) ||
	    !body[0] || len < CMD_APPEND_HDR(body[0]))
		return; /* part_apply decodes (and refuses) it itself */
	const uint8_t *key = body + 1, *producer = key + body[0];
	h->body = body;
	h->len = len;
	h->kh = parley_hash_key(key, body[0]);
	h->idem = memcmp(producer, zero_producer, PE_PRODUCER_LEN) != 0;
	h->ih = h->idem ? idem_hash_key(h->kh, producer) : 0;
	if (p->nsb)
		__builtin_prefetch(&p->sbuckets[h->kh & (p->nsb - 1)], 0, 3);
	if (h->idem)
		idem_prefetch(p, h->ih);
}

void part_apply_look2(const struct part *p, const struct part_apply_hint *h)
{
	if (!h->body || !p->nsb)
		return;
	const struct stream *s = p->sbuckets[h->kh & (p->nsb - 1)];
	if (!s)
		return;
	/* the hash on the first line, the key (compared next) after the
	 * fixed fields: a stream spans two lines */
	__builtin_prefetch(s, 0, 3);
	__builtin_prefetch(s->key, 0, 3);
}

void part_apply_look3(const struct part *p, const struct part_apply_hint *h)
{
	if (!h->body || !p->nsb)
		return;
	const struct stream *s = p->sbuckets[h->kh & (p->nsb - 1)];
	if (!s || s->hash != h->kh || s->nents >= s->cap)
		return; /* another stream in the chain, or ents grows first */
	__builtin_prefetch(&s->ents[s->nents], 1, 3);
}

static void ahead_body(struct part_ahead *a, uint32_t i)
{
	uint16_t kind;
	const uint8_t *body;
	size_t len;
	a->get(a->arg, i, &kind, &body, &len);
	if (body)
		__builtin_prefetch(body, 0, 3);
}

static void ahead_look(struct part_ahead *a, const struct part *p, uint32_t i)
{
	uint16_t kind;
	const uint8_t *body;
	size_t len;
	a->get(a->arg, i, &kind, &body, &len);
	part_apply_look(p, kind, body, len, &a->h[i % (PART_AHEAD + 1)]);
}

void part_ahead_init(struct part_ahead *a, const struct part *p, uint32_t n,
		     part_cmd_get_fn get, void *arg)
{
	a->n = n;
	a->get = get;
	a->arg = arg;
	/* what part_ahead_next(k) would have done for these by k = 0 */
	for (uint32_t k = 0; k < n && k <= PART_AHEAD; k++)
		ahead_body(a, k);
	for (uint32_t k = 0; k < n && k < PART_AHEAD; k++)
		ahead_look(a, p, k);
	for (uint32_t k = 0; k < n && k < PART_AHEAD - 1; k++)
		part_apply_look2(p, &a->h[k % (PART_AHEAD + 1)]);
	if (n)
		part_apply_look3(p, &a->h[0]);
}

const struct part_apply_hint *part_ahead_next(struct part_ahead *a,
					      const struct part *p, uint32_t k)
{
	PARLEY_ASSERT(k < a->n);
	if (k + PART_AHEAD + 1 < a->n)
		ahead_body(a, k + PART_AHEAD + 1);
	if (k + PART_AHEAD < a->n)
		ahead_look(a, p, k + PART_AHEAD);
	if (k + 2 < a->n)
		part_apply_look2(p, &a->h[(k + 2) % (PART_AHEAD + 1)]);
	if (k + 1 < a->n)
		part_apply_look3(p, &a->h[(k + 1) % (PART_AHEAD + 1)]);
	return &a->h[k % (PART_AHEAD + 1)];
}

static int apply_append(struct part *p, const struct cmd *c,
			const struct part_apply_hint *h,
			struct part_apply_res *res)
{
	struct pe_append_result *o = &res->append;
	bool idem;
	uint64_t kh, ih = 0;
	if (h) {
		idem = h->idem;
		kh = h->kh;
		ih = h->ih;
	} else {
		/* the idempotency slot's load overlaps the stream lookup's
		 * (both are random reads into per-partition tables) */
		idem = memcmp(c->producer, zero_producer, PE_PRODUCER_LEN) != 0;
		kh = parley_hash_key(c->key, c->klen);
		if (idem) {
			ih = idem_hash_key(kh, c->producer);
			idem_prefetch(p, ih);
		}
	}
	struct stream *s = stream_lookup_hashed(p, c->key, c->klen, kh, true);
	if (!s)
		return -ENOMEM;
	/* forgetting keys is a pure function of the applied commands (command
	 * time and the table's total order, idem.c): every replica, and every
	 * recovery of this one, forgets the same ones at the same index */
	idem_advance(p, c->ts);
	if (idem) {
		struct idem *i = idem_find_hashed(p, s, c->producer, ih);
		if (i) {
			o->seq = i->seq;
			o->count = i->count;
			o->ts_ms = i->ts;
			o->last_seq = s->last_seq;
			o->duplicate = true;
			return 0;
		}
	}
	if (c->expected != PE_NO_EXPECT && c->expected != s->last_seq) {
		o->err = -PARLEY_ESEQ;
		o->last_seq = s->last_seq;
		return 0;
	}
	/* everything that can fail, first (contract 3) */
	if (s->nents + c->count > s->cap) {
		uint64_t nc = s->cap ? s->cap * 2 : 8;
		while (nc < s->nents + c->count)
			nc *= 2;
		struct mentry **ne = realloc(s->ents, nc * sizeof *ne);
		if (!ne)
			return -ENOMEM;
		s->ents = ne; /* more room only: nothing visible changed */
		s->cap = nc;
	}
	if (idem && idem_reserve(p))
		return -ENOMEM;
	struct mentry *ms[PE_MAX_BATCH];
	uint32_t n = 0;
	struct cmd_entry_iter it;
	struct cmd_entry ce;
	cmd_entry_iter_init(&it, c);
	while (cmd_entry_next(&it, &ce)) {
		struct mentry *m = mentry_alloc(p, ce.len);
		if (!m) {
			while (n)
				mentry_free(p, ms[--n]);
			return -ENOMEM;
		}
		m->type = ce.type;
		m->flags = ce.flags;
		m->len = ce.len;
		memcpy(m->producer, c->producer, PE_PRODUCER_LEN);
		if (ce.len)
			memcpy(m->payload, ce.payload, ce.len);
		ms[n++] = m;
	}
	PARLEY_ASSERT(n == c->count);
	/* commit: nothing below fails */
	uint64_t ts = PARLEY_MAX(c->ts, s->last_ts); /* monotone per stream */
	uint64_t first = s->last_seq + 1;
	for (uint32_t i = 0; i < n; i++) {
		struct mentry *m = ms[i];
		m->seq = s->last_seq + 1;
		m->ts = ts;
		s->ents[s->nents++] = m;
		s->last_seq = m->seq;
		p->mem_bytes += mentry_cost(m->len);
		p->nentries++;
	}
	s->last_ts = ts;
	if (idem) {
		idem_link(p, s, c->producer, first, c->count, ts);
		idem_expire(p); /* the cap holds after every command */
	}
	o->seq = first;
	o->count = c->count;
	o->ts_ms = ts;
	o->last_seq = s->last_seq;
	res->touched = s;
	return 0;
}

static int apply_delete(struct part *p, const struct cmd *c,
			struct part_apply_res *res)
{
	struct pe_delete_result *o = &res->del;
	struct stream *s = stream_lookup(p, c->key, c->klen, false);
	if (!s || !s->last_seq)
		return 0;
	uint64_t t = PARLEY_MIN(c->through, s->last_seq);
	if (t >= s->first_seq) {
		/* hidden now; the memory goes with the next flush, which writes
		 * them (hidden by the mark) so that their idempotency records
		 * reach a segment; compaction purges them */
		if (p->hist) {
			int rc = hpart_mark_deleted(p->hist, c->key, c->klen, t);
			if (rc)
				return rc;
		}
		s->first_seq = t + 1;
		res->touched = s;
	}
	o->first_seq = s->first_seq;
	o->last_seq = s->last_seq;
	return 0;
}

int part_apply(struct part *p, uint64_t index, uint64_t term, uint16_t kind,
	       const uint8_t *body, size_t len, struct part_apply_res *res)
{
	return part_apply_hinted(p, index, term, kind, body, len, NULL, res);
}

int part_apply_hinted(struct part *p, uint64_t index, uint64_t term,
		      uint16_t kind, const uint8_t *body, size_t len,
		      const struct part_apply_hint *h,
		      struct part_apply_res *res)
{
	memset(res, 0, sizeof *res);
	res->kind = kind;
	if (index != p->last_index + 1) {
		res->why = "log index gap";
		return -PARLEY_ECORRUPT;
	}
	if (kind == CMD_NOOP || kind == CMD_CONF) {
		/* the Raft core's entries: they take their index, nothing else */
		p->last_index = index;
		p->last_term = term;
		return 0;
	}
	if (kind != CMD_APPEND && kind != CMD_DELETE) {
		res->why = "unknown log command type";
		return -PARLEY_ECORRUPT;
	}
	struct cmd c;
	if (cmd_decode(kind, body, len, &c)) {
		res->why = "undecodable log command";
		return -PARLEY_ECORRUPT;
	}
	if (h && (h->body != body || h->len != len))
		h = NULL; /* computed for another command */
	int rc = kind == CMD_APPEND ? apply_append(p, &c, h, res)
				    : apply_delete(p, &c, res);
	if (rc) {
		res->why = rc == -ENOMEM || rc == -PARLEY_ENOMEM
				   ? "out of memory while applying"
				   : "deletion mark could not be recorded";
		memset(&res->append, 0, sizeof res->append);
		memset(&res->del, 0, sizeof res->del);
		res->touched = NULL;
		return rc;
	}
	p->last_index = index;
	p->last_term = term;
	return 0;
}

/* ---- state hash --------------------------------------------------------------- */

static int stream_cmp(const void *x, const void *y)
{
	const struct stream *a = *(const struct stream *const *)x;
	const struct stream *b = *(const struct stream *const *)y;
	int c = memcmp(a->key, b->key, PARLEY_MIN(a->klen, b->klen));
	if (!c)
		c = a->klen < b->klen ? -1 : a->klen > b->klen;
	return c;
}

int part_state_hash(const struct part *p, uint64_t *out)
{
	uint8_t b[8 * 8 + PE_MAX_KEY + 1 + PE_PRODUCER_LEN];
	le_put64(b, p->last_index);
	le_put64(b + 8, p->last_term);
	le_put64(b + 16, p->idem_clock);
	uint64_t h = parley_xxh3(b, 24, 0x50415254);
	size_t n = 0;
	for (uint64_t k = 0; k < p->nsb; k++)
		for (const struct stream *s = p->sbuckets[k]; s; s = s->hnext)
			n += s->last_seq > 0;
	const struct stream **v = malloc((n ? n : 1) * sizeof *v);
	if (!v)
		return -PARLEY_ENOMEM;
	n = 0;
	for (uint64_t k = 0; k < p->nsb; k++)
		for (const struct stream *s = p->sbuckets[k]; s; s = s->hnext)
			if (s->last_seq > 0)
				v[n++] = s;
	qsort(v, n, sizeof *v, stream_cmp);
	for (size_t i = 0; i < n; i++) {
		const struct stream *s = v[i];
		b[0] = s->klen;
		memcpy(b + 1, s->key, s->klen);
		uint8_t *q = b + 1 + s->klen;
		le_put64(q, s->first_seq);
		le_put64(q + 8, s->mem_first);
		le_put64(q + 16, s->last_seq);
		le_put64(q + 24, s->last_ts);
		h = parley_xxh3(b, (size_t)(q + 32 - b), h);
		for (uint64_t k = 0; k < s->nents; k++) {
			const struct mentry *m = s->ents[k];
			le_put64(b, m->seq);
			le_put64(b + 8, m->ts);
			le_put16(b + 16, m->type);
			le_put16(b + 18, m->flags);
			le_put32(b + 20, m->len);
			memcpy(b + 24, m->producer, PE_PRODUCER_LEN);
			h = parley_xxh3(b, 24 + PE_PRODUCER_LEN, h);
			h = parley_xxh3(m->payload, m->len, h);
		}
	}
	free(v);
	/* the idempotency table in its (deterministic) order (idem.c) */
	for (const struct idem *i = idem_first(p); i; i = idem_next(p, i)) {
		b[0] = i->st->klen;
		memcpy(b + 1, i->st->key, i->st->klen);
		uint8_t *q = b + 1 + i->st->klen;
		memcpy(q, i->producer, PE_PRODUCER_LEN);
		q += PE_PRODUCER_LEN;
		le_put64(q, i->seq);
		le_put64(q + 8, i->ts);
		le_put32(q + 16, i->count);
		h = parley_xxh3(b, (size_t)(q + 20 - b), h);
	}
	*out = h;
	return 0;
}
