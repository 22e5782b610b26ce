/*
 * compact.h — history compaction: policy, retention, tombstones, pacing
 * (private to engine/).
 *
 * Policy: SIZE-TIERED. Segments of a partition are grouped into buckets of
 * similar size (within a factor `bucket_ratio` of the bucket's average, all
 * segments below `small_bytes` in one bucket); when a bucket holds at least
 * `min_merge` segments, up to `max_merge` of its smallest are merged into
 * one. Why not leveled: chat history is append-mostly — a stream's entries
 * arrive in seq order and are never overwritten, so segments hold disjoint
 * (key, seq) sets and no merge is ever needed to resolve versions; what
 * compaction buys is fewer files per read, purged tombstones/retention and
 * recompression with the newest dictionary. Size-tiered writes each byte
 * O(log_{min_merge}(N)) times, leveled ~10x per level; reads hit mostly the
 * newest data (memtable, newest segments), which both serve equally well.
 * Because no two segments hold the same (key, seq), ANY subset of segments
 * can be merged — the picker needs no adjacency, and a retried merge after
 * a crash (inputs still listed) only meets exact duplicates, which the merge
 * drops.
 *
 * Deletion and retention (applied while merging; read paths apply the same
 * rules immediately, compaction makes them physical):
 *   - tombstones: per stream `deleted_through`: every entry with
 *     seq <= deleted_through is gone. "Delete range up to N" sets N; "delete
 *     stream" sets the stream's last seq at the time of deletion (seqs are
 *     never reused, so later appends survive); UINT64_MAX drops all.
 *   - retention rules per stream-key prefix (longest matching prefix wins):
 *     by age (ts older than now - max_age_ms) and by count (only the
 *     newest max_count seqs). Retention only ever trims a PREFIX of a
 *     stream: once one entry is kept, every later entry of that stream in
 *     the merge is kept too, so a stream never gets holes and "first
 *     retained seq" is well defined.
 *   Surviving entries are copied byte for byte: seq, ts, type, flags,
 *   producer id (hence the idempotency table's keys) never change.
 *
 * Crash safety: the output is a new segment (segment.h lifecycle: tmp →
 * fdatasync → rename → fsync dir). Inputs are untouched; the caller swaps
 * the manifest (inputs out, output in) and only then removes the inputs.
 * A crash before the swap leaves an unreferenced output to delete; after,
 * unreferenced inputs to delete.
 *
 * Pacing: compaction never blocks appends — it runs on its own thread with
 * its own segment readers (no shared block cache), and calls `pace` with
 * the file bytes it has read and written; the caller sleeps for
 * throttle_charge()'s answer, bounding its I/O to a configured rate.
 *
 * Threads: compact_run runs on the caller's (compaction) thread; the pure
 * functions are reentrant.
 */
#ifndef PARLEY_ENGINE_COMPACT_H
#define PARLEY_ENGINE_COMPACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "segment.h"

#define COMPACT_PACE_CHUNK (64u * 1024) /* call pace() at least this often */

/* ---- retention (pure) ---------------------------------------------------- */

struct retention_rule {
	const uint8_t *prefix; /* stream-key prefix; plen 0 matches every key */
	size_t plen;
	uint64_t max_age_ms;   /* 0 = no age limit */
	uint64_t max_count;    /* 0 = no count limit */
};
struct retention_policy {
	const struct retention_rule *rules;
	size_t n;
};

/* Longest matching prefix rule, or NULL. */
const struct retention_rule *retention_match(const struct retention_policy *p,
					     const void *key, size_t klen);
/* Does the policy keep entry (seq, ts) of stream `key` whose last seq is
 * stream_last_seq, at time now_ms? (Per entry; compact_run adds the prefix
 * rule described above.) */
bool retention_keep(const struct retention_policy *p, const void *key,
		    size_t klen, uint64_t seq, uint64_t ts_ms,
		    uint64_t stream_last_seq, uint64_t now_ms);

/* ---- pacing (pure token bucket) ------------------------------------------ */

struct throttle {
	uint64_t rate;   /* bytes per second; 0 = unlimited */
	uint64_t burst;  /* bytes that may go without waiting */
	int64_t tokens;  /* may go negative (debt) */
	uint64_t last_ns;
	uint64_t rem;    /* refill remainder, in byte-nanoseconds */
};
void throttle_init(struct throttle *t, uint64_t rate_bps, uint64_t burst,
		   uint64_t now_ns);
/* Charges `bytes` of I/O done at now_ns; returns how long (ns) the caller
 * should sleep before more I/O so the long-run rate stays <= rate. */
uint64_t throttle_charge(struct throttle *t, uint64_t bytes, uint64_t now_ns);

/* ---- picking (pure) ------------------------------------------------------- */

struct compact_seg_desc {
	uint64_t seg_id;
	uint64_t bytes;
};
struct compact_tier_opts {
	unsigned min_merge;   /* 0 = 4 */
	unsigned max_merge;   /* 0 = 16 */
	double bucket_ratio;  /* 0 = 2.0 */
	uint64_t small_bytes; /* 0 = 4 MiB */
};
/* Fills idx[] with the positions (into segs) of the segments to merge, in
 * ascending size; returns how many (0 = nothing worth merging). */
size_t compact_pick(const struct compact_seg_desc *segs, size_t n,
		    const struct compact_tier_opts *o, size_t *idx, size_t cap);

/* ---- the merge -------------------------------------------------------------- */

struct compact_stream_state {
	uint64_t deleted_through; /* 0 = no tombstone */
	uint64_t last_seq;        /* stream's last seq anywhere (memtable too);
				     0 = use the largest seq in the inputs */
};
/* Called once per stream met in the inputs, in key order. */
typedef int (*compact_state_fn)(void *arg, const uint8_t *key, size_t klen,
				struct compact_stream_state *out);

struct compact_stream_result {
	uint64_t dropped_through; /* highest seq dropped (0 = none dropped) */
	uint64_t first_kept;      /* 0 = nothing of this stream kept */
	uint64_t last_kept;
	uint64_t kept, dropped_tomb, dropped_retention;
};
typedef void (*compact_stream_fn)(void *arg, const uint8_t *key, size_t klen,
				  const struct compact_stream_result *res);

struct compact_opts {
	struct pio *io;
	const char *dir;
	uint64_t out_seg_id;
	struct seg_write_opts wopts;        /* output block size, dictionary */
	const struct retention_policy *retention; /* NULL = keep all */
	uint64_t now_ms;
	compact_state_fn state;             /* NULL = no tombstones */
	void *state_arg;
	compact_stream_fn on_stream;        /* NULL = not reported */
	void *stream_arg;
	void (*pace)(void *arg, uint64_t bytes); /* NULL = unpaced */
	void *pace_arg;
	/* Idempotency records of the inputs with ts >= idem_min_ts are copied
	 * to the output (deduplicated), whether or not their entries survive:
	 * a retry of a deleted message inside the window stays a duplicate.
	 * 0 = copy all. (If the merge keeps no entry at all there is no output
	 * file and the records are dropped with the inputs.) */
	uint64_t idem_min_ts;
	/* pe_options.compact_filter (NULL = none): may replace a kept
	 * entry's payload, see parley_engine.h */
	int (*filter)(void *arg, const void *key, size_t klen,
		      const struct pe_entry *e, uint8_t *out, size_t cap);
	void *filter_arg;
};

struct compact_stats {
	uint64_t entries_in, entries_out;
	uint64_t dropped_tomb, dropped_retention, duplicates;
	uint64_t filtered;                  /* payloads replaced by the filter */
	uint64_t bytes_read, bytes_written; /* file bytes */
	uint64_t idem_in, idem_out;         /* idempotency records */
	uint32_t streams_in, streams_out;
	bool output;                        /* false: everything was dropped */
	struct seg_write_info out;
};

/*
 * k-way merges the inputs (in any order) into segment out_seg_id, applying
 * tombstones and retention, and carries the idempotency records forward
 * (the output writer never derives its own: o->wopts.no_derive_idem is
 * forced). On error no output segment exists and the
 * inputs are unchanged; -PARLEY_ECORRUPT means an input is bad (its
 * seg_error names file and block).
 */
int compact_run(struct seg_reader *const *inputs, size_t n,
		const struct compact_opts *o, struct compact_stats *st);

#endif /* PARLEY_ENGINE_COMPACT_H */
