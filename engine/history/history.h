/*
 * history.h — merged stream reads over a partition's history segments
 * (private to engine/).
 *
 * A stream's entries may lie in several segments (one per flush, until
 * compaction merges them); each segment holds a disjoint set of the
 * stream's seqs. history_read merges them by seq so that a range read or a
 * paginated cursor gets the same answer whatever the segment layout —
 * before a flush, after it, after any compaction. The engine combines it
 * with its memtable by passing `below` = the memtable's first seq of the
 * stream: history_read then serves seqs < below, the memtable the rest.
 *
 * Visibility rules applied here, at read time (compaction applies the same
 * ones physically later, see compact.h):
 *   - entries with seq <= deleted_through are gone (tombstone);
 *   - entries with seq < first_retained are gone (retention already
 *     enforced by a compaction, or decided by the engine);
 *   - a read that starts below the visible range reports `trimmed` (the
 *     engine turns it into -PARLEY_ETRIMMED or PE_SUB_TRIMMED) and is
 *     served from the first visible seq.
 *
 * Ownership: returned entries point into blocks pinned by *hold (block
 * cache or private copies); they stay valid until history_hold_free.
 * Threads: like segment readers: one thread at a time per reader (and per
 * block cache).
 */
#ifndef PARLEY_ENGINE_HISTORY_H
#define PARLEY_ENGINE_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "segment.h"

#define HISTORY_MAX_SEGS 4096u /* segments one read may merge (= HMAN_MAX_SEGS) */

struct history_hold;

struct history_read_req {
	const void *key;
	size_t klen;
	uint64_t from;            /* PE_FORWARD: seq >= from; PE_BACKWARD: seq <= from */
	enum pe_dir dir;
	uint32_t limit;           /* >= 1 */
	uint64_t below;           /* only seqs < below (UINT64_MAX or 0 = no bound) */
	uint64_t deleted_through; /* tombstone, 0 = none */
	uint64_t first_retained;  /* 0 or 1 = everything retained */
};

struct history_read_res {
	uint32_t count;
	bool end;       /* nothing more in this direction (within the bounds) */
	bool trimmed;   /* FORWARD read started below the first visible seq */
	uint64_t first_visible; /* max(first_retained, deleted_through + 1) */
};

/*
 * Reads up to q->limit entries of one stream from segs[0..n) (any order)
 * into out[]. Returns 0, -PARLEY_EINVAL, -PARLEY_ENOMEM, or -PARLEY_ECORRUPT
 * (the damaged segment's seg_error() names file and block; nothing is
 * returned in that case, never a partial answer that skips the bad block).
 */
int history_read(struct seg_reader *const *segs, size_t n,
		 const struct history_read_req *q, struct pe_entry *out,
		 struct history_read_res *res, struct history_hold **hold);
void history_hold_free(struct history_hold *h);

/* First and last seq of a stream over the segments, and entry count.
 * -PARLEY_ENOTFOUND if no segment has it. */
int history_stream_bounds(struct seg_reader *const *segs, size_t n,
			  const void *key, size_t klen, uint64_t *first,
			  uint64_t *last, uint64_t *count);

#endif /* PARLEY_ENGINE_HISTORY_H */
