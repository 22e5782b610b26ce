/*
 * history.c — merged stream reads over history segments. See history.h for
 * the contract, the visibility rules, ownership and threading.
 *
 * Per read: one seg_iter_stream per segment whose stream range intersects
 * the requested range (bloom + stream directory decide without reading a
 * block), each keeping its blocks pinned; then a k-way merge by seq, in the
 * read's direction. Segments hold disjoint seqs of a stream; an equal seq
 * met twice (a manifest that briefly lists a compaction's inputs and
 * output) is returned once.
 */
#include "history.h"

#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

struct history_hold {
	struct seg_iter **its;
	size_t n;
};

void history_hold_free(struct history_hold *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n; i++)
		seg_iter_free(h->its[i]);
	free(h->its);
	free(h);
}

int history_stream_bounds(struct seg_reader *const *segs, size_t n,
			  const void *key, size_t klen, uint64_t *first,
			  uint64_t *last, uint64_t *count)
{
	bool any = false;
	*first = *last = *count = 0;
	for (size_t i = 0; i < n; i++) {
		struct seg_stream_info si;
		if (seg_stream_info(segs[i], key, klen, &si) != 0)
			continue;
		if (!any || si.first_seq < *first)
			*first = si.first_seq;
		if (!any || si.last_seq > *last)
			*last = si.last_seq;
		*count += si.count;
		any = true;
	}
	return any ? 0 : -PARLEY_ENOTFOUND;
}

int history_read(struct seg_reader *const *segs, size_t n,
		 const struct history_read_req *q, struct pe_entry *out,
		 struct history_read_res *res, struct history_hold **hold)
{
	memset(res, 0, sizeof *res);
	*hold = NULL;
	if (q->limit == 0 || q->klen == 0 || q->klen > PE_MAX_KEY ||
	    n > HISTORY_MAX_SEGS)
		return -PARLEY_EINVAL;
	bool fwd = q->dir == PE_FORWARD;
	/* visible range [lo, hi] */
	uint64_t lo = 1;
	if (q->deleted_through)
		lo = q->deleted_through == UINT64_MAX ? UINT64_MAX : q->deleted_through + 1;
	if (q->first_retained > lo)
		lo = q->first_retained;
	res->first_visible = lo;
	uint64_t hi = (q->below == 0 || q->below == UINT64_MAX) ? UINT64_MAX - 1 : q->below - 1;
	uint64_t start;
	if (fwd) {
		res->trimmed = q->from < lo;
		start = PARLEY_MAX(q->from, lo);
	} else {
		start = PARLEY_MIN(q->from, hi);
	}
	struct history_hold *h = calloc(1, sizeof *h);
	if (!h)
		return -PARLEY_ENOMEM;
	h->its = calloc(n ? n : 1, sizeof *h->its);
	struct seg_item *heads = calloc(n ? n : 1, sizeof *heads);
	bool *valid = calloc(n ? n : 1, sizeof *valid);
	int rc = 0;
	if (!h->its || !heads || !valid) {
		rc = -PARLEY_ENOMEM;
		goto out;
	}
	if (lo > hi || (fwd && start > hi) || (!fwd && start < lo)) {
		res->end = true;
		goto out;
	}
	/* open the segments that can contribute */
	size_t *src = calloc(n ? n : 1, sizeof *src);
	if (!src) {
		rc = -PARLEY_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n && !rc; i++) {
		struct seg_stream_info si;
		if (seg_stream_info(segs[i], q->key, q->klen, &si) != 0)
			continue;
		bool overlap = fwd ? (si.last_seq >= start && si.first_seq <= hi)
				   : (si.first_seq <= start && si.last_seq >= lo);
		if (!overlap)
			continue;
		struct seg_iter *it;
		rc = seg_iter_stream(segs[i], q->key, q->klen, start, q->dir, true, &it);
		if (rc)
			break;
		src[h->n] = i;
		h->its[h->n] = it;
		int r = seg_iter_next(it, &heads[h->n]);
		if (r < 0)
			rc = r;
		valid[h->n] = r == 1;
		h->n++;
	}
	free(src);
	uint32_t cnt = 0;
	uint64_t prev = 0;
	bool have_prev = false;
	while (!rc) {
		size_t best = h->n;
		for (size_t i = 0; i < h->n; i++) {
			if (!valid[i])
				continue;
			if (best == h->n ||
			    (fwd ? heads[i].e.seq < heads[best].e.seq
				 : heads[i].e.seq > heads[best].e.seq))
				best = i;
		}
		if (best == h->n) {
			res->end = true;
			break;
		}
		uint64_t seq = heads[best].e.seq;
		if (fwd ? seq > hi : seq < lo) {
			res->end = true;
			break;
		}
		bool dup = have_prev && seq == prev;
		if (!dup && (fwd ? seq >= lo : seq <= hi)) {
			if (cnt == q->limit)
				break; /* more exist: end stays false */
			out[cnt++] = heads[best].e;
			prev = seq;
			have_prev = true;
		}
		int r = seg_iter_next(h->its[best], &heads[best]);
		if (r < 0)
			rc = r;
		valid[best] = r == 1;
	}
	res->count = rc ? 0 : cnt;
out:
	free(heads);
	free(valid);
	if (rc || !h->its) {
		history_hold_free(h);
		return rc;
	}
	*hold = h;
	return 0;
}
