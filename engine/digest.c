/*
 * digest.c — a partition's replicated state as one number, for comparing
 * replicas (pe_partition_digest, parley_engine_hooks.h): xxh3 over every
 * visible entry of every stream of the partition, streams in key order,
 * entries in seq order (key, seq, ts, type, flags, producer, payload), at
 * the applied log index reported with it.
 *
 * Retention (pe_options.retention) is applied by each replica's own
 * compaction, whenever that runs there: it is not replicated, so two equal
 * replicas may show a retained stream from different first seqs. What
 * every replica must hold is folded in, nothing more: for a stream under
 * a count rule its newest max_count seqs (and its last seq); for one under
 * an age rule only its last seq (which entries a replica still shows there
 * depends on its clock and its compactions). Found by
 * cluster_test_cluster_netns_long: a node whose header-flipped WAL made it
 * flush and compact more than the others had applied the `r/` and `k/`
 * rules (server/chat.c) to partition 1 and differed by exactly the 1886
 * entries retention had dropped there. Deletions (pe_delete) are log
 * entries, applied alike everywhere: they count.
 *
 * Built on the public API (pe_raft_status, pe_list_streams, pe_meta_sync,
 * pe_read_sync) and the engine's retention rules (history/compact.h,
 * retention_match): the digest is taken at a consistent index only when the
 * partition applied nothing while it was read, so the applied index is read
 * before and after, and a run that saw it move is thrown away and taken
 * again (at most DIGEST_TRIES times, then -PARLEY_EAGAIN). Meant for a quiet
 * partition (a test's load stopped): two replicas at the same applied index
 * must give the same digest.
 *
 * Threads: the caller's (blocking; not from an engine callback). Memory:
 * the partition's stream keys (bounded by its stream count) and one read
 * page at a time.
 */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "parley_engine_hooks.h"

#define DIGEST_TRIES 5
#define DIGEST_SEED 0x5044494745535431ull /* "PDIGEST1" */

struct dkey {
	uint8_t k[PE_MAX_KEY];
	uint8_t len;
};

struct dkeys {
	struct dkey *v;
	size_t n, cap;
	int err;
};

static int keys_cb(void *arg, const void *key, size_t klen,
		   const struct pe_meta *m)
{
	(void)m;
	struct dkeys *ks = arg;
	if (ks->n == ks->cap) {
		size_t nc = ks->cap ? ks->cap * 2 : 64;
		struct dkey *nv = realloc(ks->v, nc * sizeof *nv);
		if (!nv) {
			ks->err = -PARLEY_ENOMEM;
			return 1;
		}
		ks->v = nv;
		ks->cap = nc;
	}
	if (klen > PE_MAX_KEY) {
		ks->err = -PARLEY_EINVAL;
		return 1;
	}
	memcpy(ks->v[ks->n].k, key, klen);
	ks->v[ks->n].len = (uint8_t)klen;
	ks->n++;
	return 0;
}

static int key_cmp(const void *a, const void *b)
{
	const struct dkey *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->k, y->k, n);
	return c ? c : (int)x->len - (int)y->len;
}

/* Folds one stream into *h; counts its entries. A stream under a
 * retention rule: what every replica holds of it (top of file). */
static int digest_stream(struct pe_engine *e, const struct dkey *k,
			 uint64_t *h, uint64_t *entries)
{
	uint8_t kb[1 + PE_MAX_KEY];
	kb[0] = k->len;
	memcpy(kb + 1, k->k, k->len);
	*h = parley_xxh3(kb, 1u + k->len, *h);
	uint64_t from = 1;
	const struct retention_rule *rr =
		retention_match(&e->retention, k->k, k->len);
	if (rr && (rr->max_count || rr->max_age_ms)) {
		struct pe_meta m;
		int rc = pe_meta_sync(e, k->k, k->len, &m);
		if (rc)
			return rc;
		uint8_t lb[8];
		le_put64(lb, m.last_seq);
		*h = parley_xxh3(lb, sizeof lb, *h);
		if (rr->max_age_ms)
			return 0;
		if (m.last_seq > rr->max_count)
			from = m.last_seq - rr->max_count + 1;
	}
	for (;;) {
		struct pe_read_req q = {.key = k->k, .klen = k->len,
					.from = from, .dir = PE_FORWARD,
					.limit = PE_MAX_READ};
		struct pe_entry *es = NULL;
		uint32_t n = 0;
		struct pe_read_result meta = {0};
		int rc = pe_read_sync(e, &q, &es, &n, &meta);
		if (rc == -PARLEY_ETRIMMED && meta.first_seq > from) {
			from = meta.first_seq; /* deleted or expired below */
			continue;
		}
		if (rc) {
			free(es);
			return rc;
		}
		for (uint32_t i = 0; i < n; i++) {
			const struct pe_entry *x = &es[i];
			uint8_t b[8 * 3 + 2 * 2 + PE_PRODUCER_LEN + 4];
			le_put64(b, x->seq);
			le_put64(b + 8, x->ts_ms);
			le_put16(b + 16, x->type);
			le_put16(b + 18, x->flags);
			memcpy(b + 20, x->producer, PE_PRODUCER_LEN);
			le_put32(b + 20 + PE_PRODUCER_LEN, x->len);
			le_put64(b + 24 + PE_PRODUCER_LEN,
				 parley_xxh3(x->payload, x->len, DIGEST_SEED));
			*h = parley_xxh3(b, sizeof b, *h);
			from = x->seq + 1;
		}
		*entries += n;
		free(es);
		if (!n || meta.end)
			return 0;
	}
}

int pe_partition_digest(struct pe_engine *e, uint32_t partition,
			struct pe_digest *out)
{
	if (!e || !out || partition >= pe_partition_count(e))
		return -PARLEY_EINVAL;
	int rc = -PARLEY_EAGAIN;
	for (int t = 0; t < DIGEST_TRIES; t++) {
		struct pe_raft_status s0, s1;
		rc = pe_raft_status(e, partition, &s0);
		if (rc)
			return rc;
		struct dkeys ks = {0};
		rc = pe_list_streams(e, partition, keys_cb, &ks);
		if (!rc)
			rc = ks.err;
		if (!rc && ks.n) /* qsort(NULL, 0) is undefined */
			qsort(ks.v, ks.n, sizeof *ks.v, key_cmp);
		uint64_t h = DIGEST_SEED, entries = 0;
		for (size_t i = 0; i < ks.n && !rc; i++)
			rc = digest_stream(e, &ks.v[i], &h, &entries);
		free(ks.v);
		if (rc && rc != -PARLEY_EAGAIN)
			return rc;
		int rc1 = pe_raft_status(e, partition, &s1);
		if (rc1)
			return rc1;
		if (!rc && s1.applied == s0.applied) {
			*out = (struct pe_digest){.applied = s0.applied,
						  .commit = s1.commit,
						  .streams = ks.n,
						  .entries = entries,
						  .digest = h};
			return 0;
		}
		rc = -PARLEY_EAGAIN; /* applied meanwhile: take it again */
	}
	return rc;
}
