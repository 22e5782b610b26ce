/*
 * part_apply.c — applying one log command (APPEND, DELETE) to a partition:
 * seq assignment, idempotency, the expected-seq precondition, deletion
 * marks. This is the partition state machine.
 *
 * Deterministic: the result depends only on the partition's state and the
 * command (its timestamp was stamped when the command entered the log), so
 * replaying the log rebuilds exactly the seqs that were acknowledged.
 *
 * Threads: the partition's shard thread (live apply) or the opening
 * thread (recovery, before the shards start).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
int part_apply_append(struct pe_engine *e, struct part *p,
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
int part_apply_delete(struct part *p, const uint8_t *body,
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
