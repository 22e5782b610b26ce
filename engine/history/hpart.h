/*
 * hpart.h — one partition's history tier, assembled (private to engine/):
 * the manifest (hmanifest.h), the live segments' readers (segment.h), the
 * dictionaries (dict.h), merged reads (history.h), flush and compaction
 * jobs (compact.h). The engine core calls this; it knows nothing of the
 * memtable, the WAL or threads.
 *
 * Jobs are split so the slow parts run off the shard thread:
 *
 *   shard thread               any thread                shard thread
 *   ─────────────              ──────────                ────────────
 *   hpart_flush_begin   ──►    hpart_flush_run     ──►   hpart_flush_prepare
 *    (seg id, dict,             (sample, maybe train,     (dict + segment into
 *     retrain decision)          write dict + segment)     a new manifest)
 *                              hpart_flush_store   ◄──
 *                               (manifest stored,   ──►   hpart_flush_install
 *                                reader opened)            (swapped in; the WAL
 *                                                          up to the flushed
 *                                                          index may go)
 *   hpart_compact_begin ──►    hpart_compact_run   ──►   hpart_compact_commit
 *    (size-tiered pick,         (own readers, merge,      (manifest swap + new
 *     marks snapshot)            paced by a throttle)      first-retained marks,
 *                                                          stored; inputs closed,
 *                                                          uncached, deleted)
 *   Either job may instead be abandoned (its output file is removed).
 *
 * Invariants
 *   1. At most one flush job and one compaction job per partition at a time
 *      (begin returns -PARLEY_EAGAIN otherwise).
 *   2. A segment is readable through hpart_read only after its commit (the
 *      manifest store) — and from then on until a compaction commit
 *      replaces it. Between begin and commit the caller keeps serving those
 *      entries from its memtable.
 *   3. A dictionary is freed only when no live segment names it, it is not
 *      current, and no job is in flight.
 *   4. Commits are the only writers of the manifest; a crash anywhere
 *      leaves the previous manifest and files that hpart_open's cleanup
 *      removes.
 *
 * Ownership: struct hpart owns the manifest, readers and dictionaries; it
 * borrows the block cache and the retention policy (both outlive it). A job
 * is owned by whoever holds it and is freed by commit or abandon.
 * Threads: every hpart_* call except *_run, *_store, hpart_view_read and
 * hpart_view_free on the partition's owner thread; those touch only their
 * job or view.
 */
#ifndef PARLEY_ENGINE_HPART_H
#define PARLEY_ENGINE_HPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bcache.h"
#include "compact.h"
#include "dict.h"
#include "history.h"
#include "hmanifest.h"
#include "io.h"
#include "segment.h"

struct hpart;
struct hpart_fjob;
struct hpart_cjob;

struct hpart_opts {
	uint32_t partition;
	struct bcache *cache;                /* NULL = uncached reads */
	uint32_t block_bytes;                /* 0 = SEG_DEFAULT_BLOCK */
	int level;                           /* 0 = DICT_DEFAULT_LEVEL (compaction,
						dictionaries) */
	int flush_level;                     /* blocks a flush writes; 0 =
						DICT_FLUSH_LEVEL */
	size_t dict_bytes;                   /* 0 = DICT_DEFAULT_BYTES */
	struct dict_retrain_policy retrain;  /* zeros = {1.15, 8 MiB}; a factor < 1
						retrains at every flush (tests) */
	const struct retention_policy *retention; /* NULL = keep all */
	struct compact_tier_opts tiers;      /* zeros = compact.h defaults */
	bool read_only;                      /* inspect: never write (no cleanup; jobs refused) */
	uint64_t idem_window_ms;             /* 0 = 7 days; compaction keeps records this young */
	/* pe_options.compact_filter (NULL = none) */
	int (*filter)(void *arg, const void *key, size_t klen,
		      const struct pe_entry *e, uint8_t *out, size_t cap);
	void *filter_arg;
};

/* Loads (or creates) the partition's history in `dir` (which must exist):
 * manifest, dictionaries, segment readers; deletes unreferenced files. A
 * missing or corrupt live file is -PARLEY_ECORRUPT (message logged, naming
 * it): the partition must not serve reads with history missing. */
int hpart_open(struct pio *io, const char *dir, const struct hpart_opts *o,
	       struct hpart **out);
void hpart_close(struct hpart *h);
/* Closes h without removing its retired dictionaries: its directory holds
 * another history's files now (a snapshot install, log/part_snap.c). Any
 * thread, once h is not used any more. */
void hpart_close_detached(struct hpart *h);
/* Simulated crash for tests (like pe_abort): frees h and the given
 * in-flight jobs (either may be NULL) without touching any file. Never
 * used in production. */
void hpart_abort(struct hpart *h, struct hpart_fjob *fj, struct hpart_cjob *cj);
const struct hman *hpart_manifest(const struct hpart *h);
/* Erases every block of h's live segments from its block cache (keyed by
 * partition and segment id). With retire, h's segment readers also stop
 * caching first, so a read still running on h cannot bring a block back:
 * for a history about to be replaced by another whose segments may carry
 * the same ids (a snapshot install, log/part_snap.c; ids count per
 * partition). The owner's thread. */
void hpart_uncache(struct hpart *h, bool retire);

/* ---- reads -------------------------------------------------------------------------- */

/* history_read over the live segments with the manifest's marks for the
 * stream applied (q's own deleted_through / first_retained are combined
 * with them: the larger wins). */
int hpart_read(struct hpart *h, const struct history_read_req *q,
	       struct pe_entry *out, struct history_read_res *res,
	       struct history_hold **hold);
/*
 * Reads off the owner thread (the engine's history read pool):
 *   hpart_view_get (owner)   a snapshot for one stream: a reference on
 *                            every live segment reader that may hold the
 *                            key (bloom) and the stream's marks as they
 *                            are now. A compaction or flush that commits
 *                            afterwards changes neither: the view's
 *                            readers stay open (seg_ref) until it is freed.
 *   hpart_view_read (any)    hpart_read over the view; one thread at a
 *                            time per view.
 *   hpart_view_free (any)    after every hold of its reads was freed.
 */
struct hpart_view;
int hpart_view_get(struct hpart *h, const void *key, size_t klen,
		   struct hpart_view **out);
int hpart_view_read(struct hpart_view *v, const struct history_read_req *q,
		    struct pe_entry *out, struct history_read_res *res,
		    struct history_hold **hold);
void hpart_view_free(struct hpart_view *v);

/* Stream bounds over live segments, marks applied: first visible seq and
 * last seq; -PARLEY_ENOTFOUND if nothing is visible. */
int hpart_stream_bounds(struct hpart *h, const void *key, size_t klen,
			uint64_t *first_visible, uint64_t *last);

/* What a memtable needs to continue a stream whose older entries were
 * flushed: last seq and last ts over live segments (marks ignored), and
 * the first visible seq (marks applied; last + 1 when all are hidden).
 * -PARLEY_ENOTFOUND if no live segment has the stream. */
int hpart_stream_meta(struct hpart *h, const void *key, size_t klen,
		      uint64_t *first_visible, uint64_t *last_seq,
		      uint64_t *last_ts);

/* The idempotency records of live segments with ts >= min_ts, ordered by
 * ts (then key, producer), duplicates removed: what the engine loads into
 * its idempotency table at open, before replaying the WAL past the
 * manifest's flushed_index. cb's non-zero return stops and is returned. */
int hpart_idem_load(struct hpart *h, uint64_t min_ts,
		    int (*cb)(void *arg, const struct seg_idem *rec), void *arg);

/* ---- deletion ----------------------------------------------------------------------------- */

/* Durable when it returns 0 (stores the manifest: a small write+fsync). */
int hpart_delete_through(struct hpart *h, const void *key, size_t klen,
			 uint64_t through);
/* In memory only: reads honour it at once; it becomes durable with the
 * next commit (flush, compaction or delete_through). For callers whose
 * delete is already durable elsewhere (a log record) until that commit —
 * the flush that covers the record stores the mark with it. */
int hpart_mark_deleted(struct hpart *h, const void *key, size_t klen,
		       uint64_t through);

/* Records that every log record <= index is reflected in the history
 * (used when the memtable holds nothing to flush, e.g. only deletes were
 * logged: the marks set by hpart_mark_deleted are stored with it). Durable
 * when it returns 0. Never lowers flushed_index. */
int hpart_set_flushed(struct hpart *h, uint64_t index);

/* ---- flush ---------------------------------------------------------------------------- */

/* Entries to flush, in strictly increasing (key, seq) order. next() returns
 * 1 (filled; pointers valid until the next call), 0 at the end, or an
 * error; rewind() restarts (the job reads the source twice: once to sample
 * payloads for the dictionary, once to write). The caller guarantees the
 * entries do not change while the job runs (a frozen memtable). */
struct hpart_src {
	int (*next)(void *arg, const uint8_t **key, size_t *klen,
		    struct pe_entry *e);
	int (*rewind)(void *arg);
	void *arg;
};

struct hpart_flush_result {
	struct seg_write_info seg;
	bool trained;            /* a new dictionary came with this flush */
	uint64_t dict_id;        /* dictionary the segment uses (0 = none) */
	uint64_t flushed_index;
};

/* flushed_index: the log index the flushed entries reach; recorded at
 * commit, after which the WAL may release what precedes it. */
int hpart_flush_begin(struct hpart *h, uint64_t flushed_index,
		      struct hpart_fjob **out);
int hpart_flush_run(struct hpart_fjob *j, const struct hpart_src *src);
/* On success fills *res (may be NULL) and frees the job; on error the job
 * is still the caller's (abandon it). prepare + store + install in one. */
int hpart_flush_commit(struct hpart *h, struct hpart_fjob *j,
		       struct hpart_flush_result *res);
/*
 * The same commit in three steps, so that the store (write, fdatasync,
 * rename, directory fsync) and the new segment's reader open (open, footer
 * and index reads) run off the owner thread:
 *   prepare (owner)   the new manifest, in memory (*out);
 *   store (any)       hman_store of it, then the segment's reader opened;
 *   install (owner)   marks and ids changed in memory since prepare are
 *                     merged in, the manifest replaces the current one,
 *                     the dictionary and the reader are linked in; frees
 *                     the job; -PARLEY_ECORRUPT when the stored segment
 *                     could not be opened (the disk lies).
 * Between prepare and install the owner stores no other manifest (as for
 * compaction's). On a store error: hpart_man_free(n) and abandon the job.
 */
int hpart_flush_prepare(struct hpart *h, struct hpart_fjob *j,
			struct hman **out);
int hpart_flush_store(struct hpart_fjob *j, struct hman *n);
int hpart_flush_install(struct hpart *h, struct hpart_fjob *j,
			struct hman *n, struct hpart_flush_result *res);

/* hpart_set_flushed in the same three steps: prepare (owner), any thread
 * stores it with hpart_store (which reads only h's immutable directory and
 * backend), install (owner) after the store succeeded. */
int hpart_flushed_prepare(struct hpart *h, uint64_t index, struct hman **out);
int hpart_store(const struct hpart *h, struct hman *n);
void hpart_flushed_install(struct hpart *h, struct hman *n);

/* Dictionaries retired by commits (no live segment names them any more):
 * their files are removed off the owner thread. take hands the ids over
 * (*ids is the caller's to free; returns how many); remove_dicts (any
 * thread) unlinks them with a directory sync, returns the first error. A
 * crash before that only leaves work for hpart_open's cleanup. */
size_t hpart_take_dict_removals(struct hpart *h, uint64_t **ids);
int hpart_remove_dicts(struct pio *io, const char *dir, const uint64_t *ids,
		       size_t n);
void hpart_flush_abandon(struct hpart *h, struct hpart_fjob *j);

/* ---- compaction -------------------------------------------------------------------------- */

struct hpart_compact_opts {
	bool all;                  /* merge every live segment (purge) */
	uint64_t now_ms;           /* retention's clock */
	/* the idempotency window's clock: the partition's command time
	 * (log/idem.c idem_clock), so that compaction drops only records the
	 * live table has already forgotten; 0 = now_ms */
	uint64_t idem_now_ms;
	uint64_t rate_bytes_per_s; /* I/O bound; 0 = unpaced */
	/* how run() waits when the throttle says so (NULL = no sleeping;
	 * tests pass a fake). */
	void (*sleep_ns)(void *arg, uint64_t ns);
	void *sleep_arg;
	uint64_t (*now_ns)(void *arg); /* NULL = parley_mono_ns */
};

/* -PARLEY_EAGAIN: nothing worth merging (or a compaction is in flight). */
int hpart_compact_begin(struct hpart *h, const struct hpart_compact_opts *o,
			struct hpart_cjob **out);
int hpart_compact_run(struct hpart_cjob *j, struct compact_stats *st);
int hpart_compact_commit(struct hpart *h, struct hpart_cjob *j);
/* The same commit, but the replaced input files are left on disk and
 * their ids handed back (*ids, *nids; the caller frees *ids) for
 * hpart_remove_files, which any thread may run: after the commit no
 * manifest names them, so a crash before their removal only leaves work
 * for hpart_open's cleanup. Keeps the unlink + fsync-dir per input off the
 * partition's owner thread (an engine shard serving appends). */
int hpart_compact_commit_defer(struct hpart *h, struct hpart_cjob *j,
			       uint64_t **ids, size_t *nids);
/*
 * The same commit in three steps, so that the store (a write, fdatasync,
 * rename and directory fsync) can run off the owner thread:
 *   prepare (owner)   the new manifest, in memory (*out);
 *   store (any)       hman_store of it;
 *   install (owner)   marks and segment ids that changed in memory since
 *                     prepare are merged in, the manifest replaces the
 *                     current one, readers are swapped (ids as for
 *                     _defer, may be NULL to remove the inputs here).
 * Between prepare and install the owner must not store any other manifest
 * (no flush commit, hpart_set_flushed or hpart_delete_through): the stored
 * file would lose that change or this one. Marks (hpart_mark_deleted) and
 * flush begins are fine. On a store error: hpart_man_free(n) and abandon
 * the job.
 */
int hpart_compact_prepare(struct hpart *h, struct hpart_cjob *j,
			  struct hman **out);
int hpart_compact_store(struct hpart_cjob *j, struct hman *n);
int hpart_compact_install(struct hpart *h, struct hpart_cjob *j,
			  struct hman *n, uint64_t **ids, size_t *nids);
void hpart_man_free(struct hman *n);
/* Removes segment files that no manifest names any more (any thread).
 * Returns the first error (the rest are still tried). */
int hpart_remove_files(struct pio *io, const char *dir, const uint64_t *ids,
		       size_t n);
void hpart_compact_abandon(struct hpart *h, struct hpart_cjob *j);

/* ---- inspection --------------------------------------------------------------------------- */

struct hpart_seg_view {
	uint64_t id;
	struct seg_info info;
	const struct seg_reader *r; /* for seg_verify / seg_stream_at, until the next commit */
};
size_t hpart_segments(const struct hpart *h, struct hpart_seg_view *out,
		      size_t cap);

#endif /* PARLEY_ENGINE_HPART_H */
