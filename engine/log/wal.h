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
 *    8 u64 segment seq         30 u16 pred blocks   64 body ...
 *   16 u32 batch seq (low)     32 u64 term
 *   20 u32 batch start offset  40 u64 index
 *
 * pred blocks: 0, or for a batch submitted while the batch before it was
 * still in flight (WAL_FLIGHT_MAX), how many WAL_BLOCKs back that batch
 * starts (it is the same in every record of the batch). Older binaries
 * wrote 0 there and ignore it.
 *
 * Segment header (block 0, written once and synced before the segment is
 * used): version 1 is {magic, version, seq, checksum}; version 2 adds the
 * file's size when it was created (pre-zeroed spares are full size), so a
 * file found shorter than that was cut by something outside parley.
 *
 * High-water mark (wal.hwm, one per shard WAL, replaced atomically by
 * tmp + fdatasync + rename + fsync_dir): the durable state of the log as of
 * its writing — the active segment, and for every live segment its durable
 * end offset and, per partition, the highest log index it holds. Only
 * records whose batch completed its fdatasync are ever counted, so the mark
 * never claims more than was acknowledgeable. It is written at points that
 * already sync (no extra fdatasync on the append path):
 *   - open (after recovery; read-write only), which also retires a "clean"
 *     mark of the previous run before anything new is appended;
 *   - when a segment is first activated at open (after its rename); a
 *     roll marks the maps dirty instead, so the periodic mark names the
 *     new segment (until then the previous mark stays true);
 *   - release (written first, without the segments about to go);
 *   - clean shutdown (wal_mark_clean): flagged clean, its end is final;
 *   - every WAL_HWM_EVERY_MS when batches became durable since the last
 *     mark: made and stored by the spare-preparing thread (under maps_mu,
 *     with a generation that keeps an older mark from landing after a
 *     newer one).
 * Recovery checks it (recovery and `parleyctl inspect` alike, both through
 * wal_open): every (segment, partition, index) it lists must be found again
 * (or be in history: index <= flushed), else that partition is reported
 * corrupt with the file, the byte range and the log index range that are
 * missing. A segment file listed in the mark but absent is reported the
 * same way. A version-2 segment shorter than created whose log runs into the
 * cut is corruption of the whole shard unless a clean mark proves where the
 * log ended (records written after the last mark cannot be named).
 *
 * What cannot be detected (the residual window): with no clean shutdown,
 * records made durable after the last stored mark (about the last
 * WAL_HWM_EVERY_MS before the crash, plus the time to store a mark) whose
 * bytes are lost *in place* — zeroed or replaced by older contents
 * while the file keeps its size; and, even under a mark, damage to the
 * last two batches when the later one was submitted while the earlier was
 * in flight (invariant 3: it reads as a crash with both in flight) unless
 * the mark names their records. A cut file is always detected
 * (v2 segments). Losing the mark file itself only loses the check (logged);
 * a damaged mark is reported as corruption. A whole directory restored
 * from an older backup is consistent and cannot be told apart from an
 * older state. Segments in version 1 (older data directories) are upgraded
 * in place: read as before without the size check; the first read-write
 * open writes a mark; new segments are version 2. Older binaries refuse
 * version-2 segments ("bad segment header"): no downgrade.
 *
 * Invariants
 *   1. At most WAL_FLIGHT_MAX (2) batches are in flight (written but not
 *      yet synced), both in the active segment (a roll waits until the
 *      batch sealing the segment is durable). A batch counts as durable
 *      (release, mark, acknowledgements) only once it and every batch
 *      before it completed. So after a crash only the last two batches of
 *      the last segment can be torn, and the later one only if it names
 *      the earlier one (pred blocks).
 *   2. A record is valid iff magic, segment seq, header checksum and body
 *      checksum all match; batch seqs never decrease along a segment.
 *   3. Recovery: an invalid record in the last segment is a torn tail iff
 *      every valid record of a batch that *started after it* belongs to
 *      one batch whose records name the bad record's batch as the batch in
 *      flight when it was submitted (a crash with both in flight: the
 *      earlier torn, the later complete or torn; neither acknowledged).
 *      The log then ends at the bad record; the later batch is dropped
 *      with it and its bytes are zeroed at open, before anything new is
 *      written. Any other later batch was written after the bad one was
 *      synced: corruption, reported with file and offset, never
 *      truncated away (replicated, wal_recovery.damaged / .lost hand it
 *      over to be repaired from peers instead; the bytes stay). The
 *      residual window (below) covers the last two batches when the later
 *      was submitted behind the earlier: damage to both acknowledged
 *      batches reads as a crash with both in flight unless wal.hwm names
 *      them.
 *   4. Stale records from a segment's previous life carry another segment
 *      seq and are never read as valid.
 *   5. wal.hwm never claims a record whose batch has not completed its
 *      fdatasync, and never omits a segment file that still exists unless
 *      that segment is being released (mark first, then release). So after
 *      any crash, everything it lists is on disk unless something outside
 *      parley removed it.
 *
 * Threads: after wal_open, all calls come from the owning shard thread,
 * which never waits on the disk but for the ring's write + fdatasync. Every
 * other WAL file operation runs on the WAL's prep thread: spare creation,
 * the next segment prepared ahead of its roll (so a roll is a pointer
 * swap), segment release (mark first, then rename or unlink, directory
 * sync) and the periodic mark. It reads the segment maps under `maps_mu`
 * (the shard thread changes them under it), hands results back under
 * `spare_mu` and wakes the shard's ring; wal.hwm is written under
 * `mark_mu`. (Open, recovery and wal_mark_clean at a clean stop still
 * write synchronously: no append is waiting then.)
 *
 * A prepared segment (header synced, renamed to wal-<seq>.log) exists
 * while the segment before it is still active and unsealed. Recovery
 * recognises it — the last file, no record, the one before it unsealed —
 * and hands it back as a spare: a roll swaps it in only after the seal of
 * the previous segment is durable, so a segment with records never
 * follows an unsealed one.
 */
#ifndef PARLEY_ENGINE_WAL_H
#define PARLEY_ENGINE_WAL_H

#include <stdbool.h>
#include <stdint.h>

#include "io.h"

#define WAL_BLOCK 4096u
#define WAL_REC_HDR 64u
#define WAL_MAX_BATCH (8u << 20)   /* bytes in one write+fdatasync */
/* Batches written but not yet durable at once: while batch N syncs, the
 * next one's write + fdatasync is already submitted (wal_submit), so an
 * append arriving during N's sync waits for one sync, not two. */
#define WAL_FLIGHT_MAX 2u
/* ... but only behind a batch of at most this many records. At low load
 * (a SEND arriving while the previous SEND's few fan-out records sync)
 * the second batch saves a sync of waiting; under load the batches are
 * bigger, and two fdatasyncs of one device at once mostly queue behind
 * each other: a second batch in flight then only splits the group commit
 * into more, slower syncs (50 connections: fewer SENDs/s; bench/
 * RESULTS.md, "Two WAL batches in flight"). */
#define WAL_PIPE_MAX_RECS 8u
#define WAL_MAX_BODY (4u << 20)    /* one record's body */
#define WAL_MIN_SEGMENT (16u << 20)
#define WAL_DEFAULT_SEGMENT (64u << 20)
/* Record type (no body) of a partition's log end marker: written when a
 * replicated engine opens after a lost range (wal_recovery.lost), with the
 * partition's last index and its term as recovered then. Records after it
 * extend that log (its group went on from it by Raft's log matching), so
 * a later recovery that finds the same range again cuts the partition's
 * log there instead of judging those records anew. Older binaries refuse
 * the type (the partition is corrupt to them): no downgrade past one. */
#define WAL_REC_LOGEND 0xFFFEu

struct wal;

/*
 * How a batch reaches the disk (the commit), chosen at wal_open from the
 * environment variable PARLEY_WAL_COMMIT (a benchmarking knob; unset: the
 * default, direct-link). Every mode completes a batch only when its bytes are durable
 * and tears the same way (any 512-byte-grained prefix of the batch's
 * blocks may survive a crash before its completion):
 *   link        ring_write linked to ring_fdatasync (two ops; for a
 *               buffered file the fdatasync, and often the write, run on
 *               an io-wq worker thread)
 *   dsync       one ring_write_dsync (RWF_DSYNC), through the page cache
 *   direct      one ring_write_dsync on a PIO_DIRECT segment (O_DIRECT:
 *               batches are whole, aligned WAL_BLOCKs already)
 *   direct-link ring_write on a PIO_DIRECT segment linked to
 *               ring_fdatasync
 */
enum wal_commit {
	WAL_COMMIT_LINK,
	WAL_COMMIT_DSYNC,
	WAL_COMMIT_DIRECT,
	WAL_COMMIT_DIRECT_LINK,
};
/* direct-link: bench/RESULTS.md, "One commit's cost" (2026-12-05) */
#define WAL_COMMIT_DEFAULT WAL_COMMIT_DIRECT_LINK

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
	/* Optional: a record whose header (partition, type, term, index,
	 * length: covered by its own checksum) is intact but whose body fails
	 * its checksum, outside a torn tail. r->body is NULL. Return 0 when
	 * the caller takes it as a known entry with a lost payload (a
	 * replicated partition repairs it from a peer): the scan goes on as
	 * past a valid record, the record counts for the high-water mark
	 * check, and nothing is reported corrupt; 1 to have it reported
	 * through `corrupt` as without this callback; a negative error aborts
	 * the open. NULL = always 1. */
	int (*damaged)(void *arg, const struct wal_rec *r);
	/* Optional: the highest log index of `partition` already in history
	 * (its WAL records are no longer needed). NULL means 0. The mark check
	 * reports only missing records above it. */
	uint64_t (*flushed)(void *arg, uint32_t partition);
	/* A segment whose header block fails its check (a flipped bit):
	 * false (a single node, nobody to repair from) reports it through
	 * `corrupt` with partition -1 and the file's path and offset 0, which
	 * dooms the shard's partitions; true (replicated partitions, with
	 * `damaged` set) reads its records by the segment seq its file name
	 * gives and hands every one (valid or not, seals aside) to `damaged`
	 * (the file is not proven to be that segment, so no body is trusted;
	 * a refused one is reported corrupt for its partition), and the log
	 * goes on in a new segment (none is ever written into it again, so
	 * it stays unsealed; the seal check is waived for it). */
	bool repair_from_peers;
	/* Optional, with repair_from_peers: a record whose own header fails
	 * its check (a flipped bit: partition, term, index and length all
	 * unknown), outside a torn tail. The scan resyncs: the next offset
	 * holding a valid record header that goes on with the log (the same
	 * batch, or a later batch at a block boundary; stale records never
	 * qualify), trying first where the damaged header's length says it
	 * ends, then every 8-byte step to the end of the segment. The bytes
	 * [off, end) held one or more records of unknown partitions (end is
	 * the file's size when nothing valid follows in a segment that is
	 * not the last: its seal is lost too, the seal check is waived).
	 * Return 0 when the caller takes the loss (every partition of the
	 * shard may have lost records there and must be repaired from a
	 * peer): the scan goes on at `end`, the segment is held (never
	 * released) until wal_release_damaged, and wal.hwm is not checked
	 * against it (its lost records cannot be counted); 1 to have it
	 * reported through `corrupt` with partition -1, as without this
	 * callback; a negative error aborts the open. NULL = always 1. */
	int (*lost)(void *arg, const char *file, uint64_t off, uint64_t end);
	void *arg;
};

#define WAL_HWM_NAME "wal.hwm"
/* The spare-preparing thread also makes and stores a mark this often when
 * batches became durable since the last one, off the append path. Time,
 * not bytes: storing a mark (temp file, fdatasync, rename, directory sync)
 * costs the file system a journal commit that a concurrent WAL fdatasync
 * may wait for, so it is bounded to one per interval whatever the load. */
#define WAL_HWM_EVERY_MS 1000u
#define WAL_HWM_MAX_SEGS (1u << 20)
#define WAL_HWM_MAX_ENTS (1u << 26)

/*
 * Stepped execution (the engine simulator, deterministic): no prep thread;
 * its work (next segment, release, periodic mark, spares) runs one unit per
 * wal_prep_step call on the caller's thread, and its timers read now_ns
 * instead of the monotonic clock. NULL (the default): the prep thread.
 */
struct wal_exec {
	uint64_t (*now_ns)(void *arg);
	void *arg;
};

/*
 * Opens the WAL in `dir` (created if absent), replays every valid record
 * through rec->record, and positions the tail after the last valid batch.
 * With read_only nothing is written (no spare files, no new segment).
 */
int wal_open(struct pio *io, const char *dir, uint64_t seg_bytes,
	     bool read_only, const struct wal_recovery *rec,
	     const struct wal_exec *ex, struct wal **out);
/* Stepped WAL only: runs one unit of the prep thread's work; true when it
 * did something (false: idle, or not a stepped WAL). Shard thread. */
bool wal_prep_step(struct wal *w);
void wal_close(struct wal *w);

/*
 * Clean shutdown (shard thread, nothing open or in flight): stops the prep
 * thread, returns a prepared next segment to the spares (so the highest
 * wal-*.log is the active one after a clean stop), and writes the
 * high-water mark flagged clean, so the next recovery knows where the log
 * ends exactly. Nothing may be appended after it. Returns 0, or a negative error (the mark is then the last
 * one written, still true). A no-op when read-only, failed, or when recovery
 * found damage (the old mark stays as the evidence).
 */
int wal_mark_clean(struct wal *w);

/*
 * Building the open batch (shard thread). wal_reserve returns a pointer to
 * `len` bytes of body to fill in, or NULL when the open batch is full (try
 * again after the in-flight batch completes). wal_commit_rec then stamps
 * the header of that record. Exactly one commit follows each reserve.
 */
uint8_t *wal_reserve(struct wal *w, uint32_t len);
void wal_commit_rec(struct wal *w, uint32_t partition, uint16_t type,
		    uint64_t term, uint64_t index);

/* open batch has records, or a seal is due (wal_release_damaged): submit */
bool wal_has_open(const struct wal *w);
/* Record bytes the open batch can still take: a record of body len fits
 * iff WAL_REC_SPACE(len) <= wal_open_room(). */
uint32_t wal_open_room(const struct wal *w);
#define WAL_REC_SPACE(len) ((((uint64_t)WAL_REC_HDR + (len)) + 7u) & ~7ull)
bool wal_in_flight(const struct wal *w);    /* a batch awaits its sync */
/* No wal_submit now: WAL_FLIGHT_MAX batches are in flight (or one of more
 * than WAL_PIPE_MAX_RECS records is), a roll waits
 * for the batch sealing the active segment to be durable, or a roll waits
 * for the segment the prep thread is still preparing (then the ring is
 * woken when it is ready; a true return makes sure it will be). */
bool wal_busy(struct wal *w);

/* The ring the WAL's background thread wakes (ring_wake) when a prepared
 * segment a roll waits for is ready or a release finished. Set once,
 * before the first wal_submit / wal_release. */
void wal_set_ring(struct wal *w, struct pio_ring *ring);
/* Shard thread, every loop round: applies a finished background release
 * (its segments leave the maps). Returns how many segments it released. */
int wal_poll(struct wal *w);

/*
 * Seals the open batch and queues its commit on `ring` (write + linked
 * fdatasync, or one dsync write: enum wal_commit); a new open batch
 * starts. Up to WAL_FLIGHT_MAX batches may be in flight: the commit of
 * batch N+1 is queued while N's sync still runs, and their completions
 * may arrive in any order. A batch submitted while another is in flight
 * says so in its records (the distance back to that batch's start), so
 * recovery can tell "N torn, N+1 complete" (a crash with both in flight:
 * neither counts) from damage to an acknowledged N (wal.h invariant 3).
 * The batch's ring ops carry user_data ud + its slot (0 <= slot <
 * WAL_FLIGHT_MAX): the caller hands every completion whose user_data is
 * in [ud, ud + WAL_FLIGHT_MAX) to wal_on_cqe; ud must be the same for
 * every call. Rolls to the next segment first when the previous batch
 * sealed the active one (only once that batch is durable: wal_busy): the
 * next segment is prepared ahead by the prep thread, so the roll is a
 * pointer swap; if it is not ready yet, returns -EAGAIN (nothing queued,
 * not an error: the ring is woken when it is). Requires !wal_busy.
 */
int wal_submit(struct wal *w, struct pio_ring *ring, uint64_t ud);

/*
 * Feed each completion of a batch in flight here (user_data as received).
 * Returns how many batches became durable *in submission order* with it
 * (0 when none did: more is expected, or an earlier batch is still
 * syncing), or a negative error (the WAL is then failed for good). A
 * batch counts as durable only once it and every batch submitted before
 * it completed: only then do its records count for release and the
 * high-water mark, and only then may anything acknowledge them.
 */
int wal_on_cqe(struct wal *w, uint64_t user_data, int res);

/* Iterate the records of the oldest batch wal_on_cqe counted durable,
 * then release it; call once per batch counted, in order. */
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
/* (wal_release decides on the shard thread; the mark and the renames or
 * unlinks with their directory syncs run on the prep thread, and wal_poll
 * applies the outcome: the count wal_release returns is of segments
 * queued for release. One release at a time; segments that became free
 * meanwhile go with the next call.) */
/* Lets wal_release release the segments holding lost ranges
 * (wal_recovery.lost) by the usual rule: the caller calls it once every
 * partition that may have lost records there was repaired (as long as
 * the damaged bytes exist, each recovery finds the loss again, and the
 * shard's partitions abstain from voting until repaired again). So that
 * they go soon rather than whenever the usual rule gets to them: an
 * active one is sealed by the next batch (a batch of the seal alone when
 * nothing else is open: wal_has_open says so) and rolled away, and
 * wal_release reports the partitions pinning a sealed one as due at once
 * (*oldest_age UINT32_MAX), which the caller force-flushes. Its release
 * is logged ("segment with a lost range released"). Shard thread. */
void wal_release_damaged(struct wal *w);
/* Segment files currently holding log records (sealed + active). */
uint32_t wal_segment_count(const struct wal *w);

struct wal_stats {
	uint64_t batches;
	uint64_t bytes;
	uint64_t segments; /* segments rolled */
	uint64_t sync_ns;  /* sum of submit→durable times */
	uint64_t released; /* segments released (recycled or unlinked) */
	uint64_t piped;    /* batches submitted while another was in flight */
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
 * writer lays them out. file_bytes is the created size recorded in a
 * version-2 header; 0 writes a version-1 header (older data directories). */
void wal_encode_seg_header(uint8_t *block, uint64_t seg_seq,
			   uint64_t file_bytes);
void wal_encode_record(uint8_t *out, uint64_t seg_seq, uint32_t batch,
		       uint32_t batch_start, uint32_t partition, uint16_t type,
		       uint64_t term, uint64_t index, const void *body,
		       uint32_t len);

#endif /* PARLEY_ENGINE_WAL_H */
