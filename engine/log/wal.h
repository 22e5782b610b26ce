/*
 * wal.h — one shard's write-ahead log (private to engine/).
 *
 * One WAL per shard, shared by every partition the shard owns: one
 * write+fdatasync makes a whole batch durable, whatever partitions it spans.
 * Records carry (partition, term, index) so the same log serves as each
 * partition's Raft log.
 *
 * On disk: <dir>/wal-<seq:016x>.log segments of `seg_bytes`, pre-zeroed and
 * recycled (spare-<n>.log files wait ready for the next roll). Layout of a
 * segment:
 *
 *   [ header block, 4096 B ][ batch ][ batch ] ... [ zeros ]
 *
 * A batch starts at a 4096-aligned offset, holds one or more records packed
 * at 8-byte alignment, and is zero-padded to the next 4096 boundary, so a
 * new batch never rewrites a block holding synced data.
 *
 * Record (little-endian):
 *    0 u32 magic "PLWR"        24 u32 partition     48 u64 header checksum
 *    4 u32 body length         28 u16 type          56 u64 body checksum
 *    8 u64 segment seq         30 u16 reserved      64 body ...
 *   16 u32 batch seq (low)     32 u64 term
 *   20 u32 batch start offset  40 u64 index
 *
 * Invariants
 *   1. At most one batch is in flight (written but not yet synced); the next
 *      batch is only submitted when it completes. So after a crash at most
 *      the last batch of the last segment can be torn.
 *   2. A record is valid iff magic, segment seq, header checksum and body
 *      checksum all match; batch seqs never decrease along a segment.
 *   3. Recovery: an invalid record in the last segment is a torn tail iff no
 *      valid record of a batch that *started after it* exists (such a batch
 *      was only written after the bad one was synced). Anything else is
 *      corruption, reported with file and offset, never truncated away.
 *   4. Stale records from a segment's previous life carry another segment
 *      seq and are never read as valid.
 *
 * Threads: after wal_open, all calls come from the owning shard thread. The
 * spare-preparing thread only touches spare-*.log files, under `spare_mu`.
 */
#ifndef PARLEY_ENGINE_WAL_H
#define PARLEY_ENGINE_WAL_H

#include <stdbool.h>
#include <stdint.h>

#include "io.h"

#define WAL_BLOCK 4096u
#define WAL_REC_HDR 64u
#define WAL_MAX_BATCH (8u << 20)   /* bytes in one write+fdatasync */
#define WAL_MAX_BODY (4u << 20)    /* one record's body */
#define WAL_MIN_SEGMENT (16u << 20)
#define WAL_DEFAULT_SEGMENT (64u << 20)

struct wal;

struct wal_rec {
	uint32_t partition;
	uint16_t type;
	uint64_t term;
	uint64_t index;
	const uint8_t *body; /* valid during the callback only */
	uint32_t len;
	const char *file;    /* segment file name, for error messages */
	uint64_t off;        /* record offset in that file */
};

struct wal_recovery {
	/* Each valid record, in log order. Non-zero return aborts the open. */
	int (*record)(void *arg, const struct wal_rec *r);
	/* Corruption found: partition, or -1 when the damaged bytes cannot be
	 * attributed (a broken record header), which dooms every partition of
	 * the shard. */
	void (*corrupt)(void *arg, int64_t partition, const char *file,
			uint64_t off, const char *why);
	void *arg;
};

/*
 * Opens the WAL in `dir` (created if absent), replays every valid record
 * through rec->record, and positions the tail after the last valid batch.
 * With read_only nothing is written (no spare files, no new segment).
 */
int wal_open(struct pio *io, const char *dir, uint64_t seg_bytes,
	     bool read_only, const struct wal_recovery *rec, struct wal **out);
void wal_close(struct wal *w);

/*
 * Building the open batch (shard thread). wal_reserve returns a pointer to
 * `len` bytes of body to fill in, or NULL when the open batch is full (try
 * again after the in-flight batch completes). wal_commit_rec then stamps
 * the header of that record. Exactly one commit follows each reserve.
 */
uint8_t *wal_reserve(struct wal *w, uint32_t len);
void wal_commit_rec(struct wal *w, uint32_t partition, uint16_t type,
		    uint64_t term, uint64_t index);

bool wal_has_open(const struct wal *w);     /* open batch has records */
/* Record bytes the open batch can still take: a record of body len fits
 * iff WAL_REC_SPACE(len) <= wal_open_room(). */
uint32_t wal_open_room(const struct wal *w);
#define WAL_REC_SPACE(len) ((((uint64_t)WAL_REC_HDR + (len)) + 7u) & ~7ull)
bool wal_in_flight(const struct wal *w);    /* a batch awaits its sync */

/*
 * Seals the open batch and queues write + linked fdatasync on `ring` with
 * user_data `ud`; the in-flight batch becomes the open one's. Rolls to a new
 * segment first when the batch does not fit. Requires !wal_in_flight.
 */
int wal_submit(struct wal *w, struct pio_ring *ring, uint64_t ud);

/*
 * The in-flight batch's completions arrive as two CQEs (write, fdatasync);
 * feed each here. Returns 1 when the batch is durable, 0 when more is
 * expected, or a negative error (the WAL is then failed for good).
 */
int wal_on_cqe(struct wal *w, int res);

/* Iterate the records of the batch that just became durable (after
 * wal_on_cqe returned 1), then release it. */
int wal_for_each_durable(struct wal *w, int (*fn)(void *arg,
						   const struct wal_rec *r),
			 void *arg);

/*
 * Segment release (the shared WAL's release rule). The WAL remembers, per
 * segment, the highest record index it holds for each partition. A
 * *sealed* segment (not the active one) whose every (partition, max index)
 * is <= flushed(partition) holds nothing a recovery still needs: it is
 * renamed back to a spare (recycled; its stale records carry the old
 * segment seq and never read as valid) or unlinked when spares are
 * plentiful. Call only after the history that covers those indexes is
 * durable (HISTORY stored). Returns the number of segments released or a
 * negative error. pin[] receives up to pincap partitions that pin the
 * oldest sealed segment still kept (*npin of them) and *oldest_age how
 * many segments were rolled since it (0 = none kept): the caller
 * force-flushes the pinning partitions when it is too old, so an idle
 * partition cannot pin the disk forever.
 */
int wal_release(struct wal *w, uint64_t (*flushed)(void *arg, uint32_t part),
		void *arg, uint32_t *pin, uint32_t pincap, uint32_t *npin,
		uint32_t *oldest_age);
/* Segment files currently holding log records (sealed + active). */
uint32_t wal_segment_count(const struct wal *w);

struct wal_stats {
	uint64_t batches;
	uint64_t bytes;
	uint64_t segments; /* segments rolled */
	uint64_t sync_ns;  /* sum of submit→durable times */
	uint64_t released; /* segments released (recycled or unlinked) */
};
void wal_get_stats(const struct wal *w, struct wal_stats *out);

/* Scan one segment file offline (parleyctl inspect, fuzzing): calls
 * rec->record / rec->corrupt as recovery would, treating it as the last
 * segment. `data` is the whole file. Never reads out of bounds. */
int wal_scan_buffer(const uint8_t *data, uint64_t size, const char *name,
		    bool is_last, const struct wal_recovery *rec,
		    uint64_t *tail_off, uint32_t *max_batch);

/* Encoders for tests and fuzzing: a segment header block (WAL_BLOCK bytes)
 * and one record (WAL_REC_HDR + len bytes, body copied) exactly as the
 * writer lays them out. */
void wal_encode_seg_header(uint8_t *block, uint64_t seg_seq);
void wal_encode_record(uint8_t *out, uint64_t seg_seq, uint32_t batch,
		       uint32_t batch_start, uint32_t partition, uint16_t type,
		       uint64_t term, uint64_t index, const void *body,
		       uint32_t len);

#endif /* PARLEY_ENGINE_WAL_H */
