/*
 * hmanifest.h — a partition's history manifest (private to engine/): which
 * segments are live, which dictionary is current, how far the log has been
 * flushed, and the per-stream deletion/retention marks that reads and
 * compaction apply.
 *
 * One file per partition directory, <dir>/HISTORY, replaced atomically
 * (write HISTORY.tmp, fdatasync, rename, fsync dir). Everything else in the
 * directory (seg-*.pseg, dict-*.zd) is live iff the manifest says so;
 * hman_cleanup deletes the rest. That makes every history step crash-safe
 * with a single atomic commit point:
 *
 *   flush:      seal seg-N ──► manifest{+N, flushed_index=I} stored ──► WAL
 *               prefix <= I may be released.  Crash before the store: seg-N
 *               is an orphan (cleanup deletes it); the WAL still has the
 *               entries and the flush is redone.
 *   compaction: seal seg-M ──► manifest{-inputs, +M, marks} stored ──►
 *               inputs deleted.  Crash before: M is an orphan; after: the
 *               inputs are (cleanup deletes them).
 *   new dict:   dict file stored ──► manifest{dict_id} stored (with the
 *               flush that first uses it). Old dict files go when no live
 *               segment names them.
 *   delete:     manifest{deleted_through} stored, then acknowledged; reads
 *               honour it at once, compaction makes it physical.
 *
 * File layout (little-endian):
 *    0 u64 magic "PLHMAN01" | 8 u32 version | 12 u32 partition
 *   16 u64 generation | 24 u64 flushed_index | 32 u64 next_seg_id
 *   40 u64 dict_id | 48 u32 dict baseline ratio (x 1e6) | 52 u32 nsegs
 *   56 u32 nstreams | 60 u32 reserved
 *   64 nsegs x { u64 id | u64 bytes | u64 dict_id | u64 entries }
 *   .. nstreams x { u8 klen | key | u64 deleted_through | u64 first_retained }
 *   .. u64 xxh3(everything before, HMAN_SEED)
 *
 * Ownership: struct hman owns its arrays. Threads: a manifest belongs to
 * its partition's owner (the shard, or the compaction thread handing its
 * result back); not synchronized.
 */
#ifndef PARLEY_ENGINE_HMANIFEST_H
#define PARLEY_ENGINE_HMANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "parley_engine.h"

#define HMAN_FILE "HISTORY"
#define HMAN_SEED 0x686d616e69666573ull /* "hmanifes" */
#define HMAN_MAX_SEGS 4096u
#define HMAN_MAX_STREAMS (1u << 22) /* marked streams (deleted/trimmed) */

struct hman_seg {
	uint64_t id, bytes, dict_id, entries;
};

struct hman_stream {
	uint8_t klen;
	uint8_t key[PE_MAX_KEY];
	uint64_t deleted_through; /* 0 = none */
	uint64_t first_retained;  /* 0 = none */
};

struct hman {
	uint32_t partition;
	uint64_t generation;     /* +1 per store */
	uint64_t flushed_index;  /* log index covered by live segments */
	uint64_t next_seg_id;
	uint64_t dict_id;        /* current dictionary, 0 = none yet */
	uint32_t dict_ratio_ppm; /* its baseline compressed/raw, x 1e6 */
	struct hman_seg *segs;
	size_t nsegs, capsegs;
	struct hman_stream *streams; /* sorted by key */
	size_t nstreams, capstreams;
};

/* Fresh, empty manifest for a partition. */
void hman_init(struct hman *m, uint32_t partition);
void hman_free(struct hman *m);
/* -PARLEY_ENOTFOUND when there is no HISTORY yet (start with hman_init),
 * -PARLEY_ECORRUPT when it does not verify. */
int hman_load(struct pio *io, const char *dir, struct hman *m);
/* Bumps the generation and replaces HISTORY atomically. On error the file
 * on disk is the previous one (or none) and m->generation is unchanged. */
int hman_store(struct pio *io, const char *dir, struct hman *m);

/* Allocates the next segment id (persisted with the next store). */
uint64_t hman_next_seg_id(struct hman *m);
int hman_add_seg(struct hman *m, const struct hman_seg *s);
bool hman_has_seg(const struct hman *m, uint64_t id);
/* Removes inputs[0..n) and adds `out` (NULL: the merge kept nothing). All
 * inputs must be live; nothing changes otherwise (-PARLEY_ENOTFOUND). */
int hman_replace_segs(struct hman *m, const uint64_t *inputs, size_t n,
		      const struct hman_seg *out);

const struct hman_stream *hman_stream(const struct hman *m, const void *key,
				      size_t klen);
/* Marks only move forward (a smaller value than the current one is
 * ignored): deletion and trimming are never undone. */
int hman_set_deleted(struct hman *m, const void *key, size_t klen,
		     uint64_t through);
int hman_set_retained(struct hman *m, const void *key, size_t klen,
		      uint64_t first_retained);

/* Deletes files of `dir` the manifest does not reference: seg-*.pseg not
 * live, dict-*.zd named by no live segment and not current, and the temp
 * files of segments, dictionaries and HISTORY (other files are left alone). Returns
 * the number deleted or a negative error. Call after a successful load or
 * store, never concurrently with a writer in the same directory. */
int hman_cleanup(struct pio *io, const char *dir, const struct hman *m);

#endif /* PARLEY_ENGINE_HMANIFEST_H */
