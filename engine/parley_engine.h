/*
 * parley_engine.h — the storage engine's one public header.
 *
 * The engine keeps per-stream append-only logs. It knows nothing of chat.
 *
 * Vocabulary
 *   stream     an append-only sequence of entries named by a byte-string key
 *              (1..PE_MAX_KEY bytes), e.g. "c/<conversation>" or "u/<user>".
 *   entry      {seq, ts_ms, type, flags, producer_id, payload}. seq is dense
 *              per stream (1, 2, 3, ...), assigned when the entry is applied
 *              and never changed afterwards.
 *   partition  unit of ownership and (later) replication: a stream lives in
 *              partition xxh3(key) % P. P is fixed when the data directory is
 *              created.
 *   shard      an engine thread with its own io_uring ring and its own WAL,
 *              owning partitions p where p % shards == shard index. Shards
 *              share nothing; requests reach a shard through a bounded queue.
 *
 * Threading
 *   - pe_open/pe_close/pe_abort: from one controlling thread.
 *   - pe_append, pe_read, pe_meta, pe_subscribe, pe_sub_resume,
 *     pe_unsubscribe, pe_partition_status: from ANY thread. They copy what
 *     they need and enqueue to the owning shard; they never block on I/O.
 *     When the shard's queue is full they return -PARLEY_EFULL (back-pressure:
 *     retry later), never block.
 *   - Every callback runs on the shard thread that owns the stream. A callback
 *     must not block; it may call any of the functions above (including on
 *     other streams). Pointers handed to a callback (entries, payloads) are
 *     valid only until the callback returns: copy what you keep.
 *   - The *_sync wrappers block the calling thread until the callback has run;
 *     they are for tools and tests, and must not be called from a callback.
 *
 * Durability invariant
 *   An append's callback reports success only after the WAL batch holding it
 *   has been written and fdatasync'd and the entry is committed and applied.
 *   Entries become visible to reads and tails at the same moment, so no
 *   reader ever sees an entry that could be lost by a crash.
 *
 * Raft
 *   Every partition is a Raft group whose log is its shard's WAL; a single
 *   node runs each partition as a group of one voter, through the same path
 *   (appends are proposals, acknowledged after commit and apply). A group
 *   elects itself at open. An append whose entry is not committed because
 *   its partition's leadership was lost fails with -PARLEY_ENOTLEADER:
 *   retry it with the same producer id (idempotency makes that safe).
 *
 * Idempotency
 *   An append with a non-zero producer_id is idempotent on
 *   (stream, producer_id): a second append with the same key returns the
 *   first one's seq with `duplicate` set, also after restart, for
 *   idem_window_ms (default 7 days) and up to idem_max_keys keys per
 *   partition (oldest forgotten first). Past the window a retry is appended
 *   again as a new entry: clients must not retry older than the window.
 *   An all-zero producer_id means "no idempotency". The table survives
 *   flushes and compaction: segments carry the (stream, producer, seq)
 *   records and the engine reloads them at open.
 *
 * History (issue 4)
 *   When a partition's memtable passes half of memtable_bytes, its entries
 *   are flushed (on a background thread) into an immutable, zstd-compressed
 *   history segment; once the segment is recorded in the partition's
 *   HISTORY manifest the memtable drops them and the WAL segments they came
 *   from are released. Reads, metadata and subscriptions merge memtable and
 *   segments transparently. Compaction (size-tiered, throttled to
 *   compaction_rate bytes/s, on its own thread) merges segments and applies
 *   deletions and retention physically.
 *   Deletion (pe_delete) and retention hide entries at once; a read that
 *   starts below the first visible seq fails with -PARLEY_ETRIMMED and
 *   reports first_seq, never an empty page that looks like the end.
 */
#ifndef PARLEY_ENGINE_H
#define PARLEY_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley_common.h"

#define PE_MAX_KEY 255u
#define PE_MAX_BATCH 256u              /* entries in one append */
#define PE_NO_EXPECT UINT64_MAX        /* no expected-last-seq precondition */
#define PE_PRODUCER_LEN 16u

/*
 * Size limits: one limit, on the encoded command.
 *
 * Every call that changes a stream (pe_append, pe_delete) becomes one log
 * command, and one command is carried whole by one Raft entry (the WAL
 * record and the replication message carry the same bytes). So the one
 * bound is PE_MAX_COMMAND, the Raft core's largest entry, on the encoded
 * command; everything else derives from it:
 *
 *   append: PE_APPEND_BYTES(klen, count, payload_bytes)
 *             = PE_APPEND_OVERHEAD(klen) + count * PE_ENTRY_OVERHEAD
 *               + the sum of the entries' payload lengths
 *           PE_APPEND_OVERHEAD(klen) = 38 + klen  (command kind 1, key
 *             length 1, key, producer 16, timestamp 8, expected seq 8,
 *             entry count 4)
 *           PE_ENTRY_OVERHEAD = 8 per entry  (type 2, flags 2, length 4)
 *   delete: PE_DELETE_BYTES(klen) = 10 + klen, always under the limit.
 *
 * What a caller may send:
 *   - per call: an append whose PE_APPEND_BYTES is <= PE_MAX_COMMAND
 *     (1 MiB) and 1..PE_MAX_BATCH entries;
 *   - per entry: at most PE_MAX_PAYLOAD bytes of payload, which is what a
 *     single-entry append with the longest key leaves (1 MiB - 301 bytes):
 *     one entry of up to PE_MAX_PAYLOAD always fits, whatever the key.
 * pe_append refuses anything larger with -PARLEY_ETOOBIG before anything
 * is queued (the callback does not run); an accepted append never fails
 * later for its size. pe_append_fits says in advance whether a batch fits.
 */
#define PE_MAX_COMMAND (1u << 20)      /* one encoded command = one Raft entry */
#define PE_APPEND_OVERHEAD(klen) (38u + (uint32_t)(klen))
#define PE_ENTRY_OVERHEAD 8u
#define PE_APPEND_BYTES(klen, count, payload_bytes)                        \
	((uint64_t)PE_APPEND_OVERHEAD(klen) +                               \
	 (uint64_t)(count) * PE_ENTRY_OVERHEAD + (uint64_t)(payload_bytes))
#define PE_DELETE_BYTES(klen) (10u + (uint32_t)(klen))
#define PE_MAX_PAYLOAD                                                     \
	(PE_MAX_COMMAND - PE_APPEND_OVERHEAD(PE_MAX_KEY) - PE_ENTRY_OVERHEAD)

struct pe_engine;
struct pe_sub;
struct pe_entry; /* below */
struct pio; /* I/O backend, see "I/O backends" below */

/* Retention rule: entries of streams whose key starts with prefix are kept
 * for max_age_ms (0 = no age limit) and at most the newest max_count
 * (0 = no limit). The longest matching prefix wins; plen 0 matches all.
 * Enforced by compaction (always a prefix of a stream is trimmed). */
struct pe_retention_rule {
	const void *prefix;
	size_t plen;
	uint64_t max_age_ms;
	uint64_t max_count;
};

/* ---- open / close -------------------------------------------------------- */

struct pe_options {
	const char *dir;            /* data directory (created if absent) */
	uint32_t partitions;        /* P at creation; 0 = default 64; must match an existing dir or be 0 */
	uint32_t shards;            /* engine threads; 0 = default 1 */
	uint64_t wal_segment_bytes; /* 0 = default 64 MiB */
	uint64_t memtable_bytes;    /* per partition bound; 0 = default 256 MiB */
	uint64_t idem_window_ms;    /* 0 = default 7 days */
	uint32_t idem_max_keys;     /* per partition; 0 = default 1,000,000 */
	uint32_t queue_depth;       /* per shard request queue; 0 = default 65536 */
	struct pio *io;             /* NULL = io_uring backend on the real disk */
	/* Clock for entry timestamps (ms since epoch); NULL = wall clock. */
	uint64_t (*clock_ms)(void *arg);
	void *clock_arg;
	/* Open for inspection only: recover and serve reads, never write a
	 * byte (appends fail with -PARLEY_EPERM). Used by `parleyctl inspect`. */
	bool read_only;
	/* Called (from a shard thread) when a WAL write or fdatasync fails.
	 * After that every append fails with -PARLEY_EFATAL: on Linux a failed
	 * fsync cannot be retried safely, so the process should exit and
	 * recover from the log. NULL = only log it. */
	void (*on_fatal)(void *arg, int err);
	void *fatal_arg;
	/* History tier (0 = default). */
	uint64_t block_cache_bytes;   /* per shard; default 64 MiB */
	/* History reads (entries the memtable no longer holds) run on a pool
	 * of read_threads threads (default 2, at most PE_MAX_READ_THREADS),
	 * off the shard threads; at most read_queue_depth per shard are in
	 * the pool at once (default 256), more wait in order on their shard.
	 * Their callbacks still run on the shard thread. */
	uint32_t read_threads;
	uint32_t read_queue_depth;
	uint64_t compaction_rate;     /* bytes/s of compaction I/O; default 32 MiB/s */
	const struct pe_retention_rule *retention; /* copied at open */
	size_t nretention;
	uint64_t retention_interval_ms; /* how often retention compacts; default 1 h */
	uint32_t wal_pin_segments;    /* WAL segments rolled after the oldest
					 one still kept before the partitions
					 pinning it are force-flushed; default 2 */
	uint64_t memtable_total_bytes;/* all partitions together; 0 = no
					 global bound. Past half of it (per
					 shard: / shards) the shard flushes its
					 largest memtable, again after every
					 batch and flush, until under. */
	/* Compaction filter (NULL = none): called by compaction for every
	 * entry it keeps, on the compaction thread. It may replace the
	 * entry's payload (the entry keeps its seq, ts, type, flags and
	 * producer): write the new payload (<= cap bytes) to out and return
	 * its length; return -1 to keep the payload as it is. It must be
	 * deterministic in the durable state (replicas compact on their
	 * own) and must not block or call the engine. How an application
	 * removes one entry's content (a message deleted for everyone) from
	 * disk: the next compaction that merges its segment rewrites it. */
	int (*compact_filter)(void *arg, const void *key, size_t klen,
			      const struct pe_entry *e, uint8_t *out,
			      size_t cap);
	void *compact_filter_arg;
	bool no_auto_flush;           /* tests: flush only via pe_flush_sync
					 (and the memtable bound is EFULL) */
	bool no_auto_compact;         /* tests: compact only via pe_compact_sync */
	/* Replication (see "Replication" below); NULL = a single node: every
	 * partition a group of one voter, exactly as without this field. */
	const struct pe_cluster *cluster;
};

/*
 * Opens (creating if needed) the data directory and recovers every
 * partition by replaying its WAL. A partition whose log is corrupt (bad
 * checksum outside the torn tail of the last segment) is left CORRUPT: its
 * operations fail with -PARLEY_ECORRUPT and pe_partition_status says which
 * file and offset; the other partitions serve normally. Except: a record
 * whose header is intact and only its body damaged is ignored when history
 * holds its entry already, and in a replicated partition its entry is held
 * as damaged and repaired from the leader (docs/CLUSTER.md §2.5).
 * Returns 0 and *out, or a negative error (the engine is not created).
 */
int pe_open(const struct pe_options *opt, struct pe_engine **out);

/* Stops accepting work, completes in-flight appends (their callbacks run),
 * stops the shards and frees everything. Subscriptions end with
 * PE_SUB_CLOSED. */
void pe_close(struct pe_engine *e);

/* Test and tool hooks (pe_abort, pe_flush_sync, pe_compact_sync, offline
 * history inspection, in-memory backend faults) are declared in
 * parley_engine_hooks.h. */


uint32_t pe_partition_count(const struct pe_engine *e);
uint32_t pe_partition_of(const struct pe_engine *e, const void *key, size_t klen);

enum pe_part_state { PE_PART_OK = 0, PE_PART_CORRUPT = 1 };
struct pe_partition_status {
	enum pe_part_state state;
	uint64_t streams;
	uint64_t entries;           /* in memory (the memtable; flushed
				       entries are in the segments below) */
	uint64_t mem_bytes;
	uint64_t last_index;        /* last WAL (log) index applied */
	char error[256];            /* for CORRUPT: "wal-...log offset N: ..." */
	uint64_t flushed_index;     /* log index covered by history segments */
	uint32_t segments;          /* live history segments */
	uint64_t segment_bytes;     /* their file bytes */
	uint64_t flushes, compactions; /* committed since open */
};
/* Memory the engine holds for data that grows with load, summed over
 * shards; a cheap snapshot (atomics published by the shards after every
 * durable batch and history commit), any thread, never blocks. Not
 * included: block caches, segment readers, flush/compaction buffers. */
struct pe_memory {
	uint64_t memtable_bytes;    /* applied + proposed entries */
	uint64_t memtable_max_partition_bytes; /* the fullest partition's */
	uint64_t proposed_bytes;    /* taken into a WAL batch since the last
				       publish (in memtable_bytes too) */
	uint64_t idem_keys;         /* idempotency keys held */
	uint64_t idem_bytes;        /* their memory (estimate per key) */
	uint64_t queued_bytes;      /* requests not yet taken by their shard */
	uint64_t total_bytes;       /* the three byte counts summed */
};
void pe_memory(struct pe_engine *e, struct pe_memory *out);
/* Bytes one idempotency key costs (struct, allocator, hash bucket). */
uint64_t pe_idem_key_bytes(void);

/* Blocking; any thread except a callback. */
int pe_partition_status(struct pe_engine *e, uint32_t partition,
			struct pe_partition_status *out);

/* Calls cb(arg, key, klen, meta) for every stream of the partition, on
 * the calling thread, from a snapshot taken on the shard. Blocking; not from
 * a callback. cb returns non-zero to stop. */
struct pe_meta;
typedef int (*pe_stream_cb)(void *arg, const void *key, size_t klen,
			    const struct pe_meta *meta);
int pe_list_streams(struct pe_engine *e, uint32_t partition, pe_stream_cb cb,
		    void *arg);

/* Engine-wide counters (monotonic since open), for metrics and benchmarks. */
struct pe_stats {
	uint64_t appends;      /* append commands acknowledged */
	uint64_t entries;      /* entries appended */
	uint64_t wal_batches;  /* write+fdatasync rounds (group commits) */
	uint64_t wal_piped;    /* ... of them submitted while another was in
				  flight (two batches in flight, wal.h) */
	uint64_t wal_bytes;    /* bytes written to the WAL */
	uint64_t fsync_ns_total; /* time spent waiting for write+fdatasync */
};
void pe_stats(struct pe_engine *e, struct pe_stats *out);

/*
 * Where an append's time goes, per stage, as log2 histograms (for /metrics
 * and benchmarks). Stages, in the order an append passes them:
 *   PE_STAGE_QUEUE     pe_append/pe_delete -> its shard takes it
 *   PE_STAGE_FILL      taken -> the WAL batch holding it is submitted
 *                      (waiting for the batch in flight, filling the next)
 *   PE_STAGE_SYNC      one WAL batch: submitted -> write + fdatasync done
 *                      (one sample per batch, not per append)
 *   PE_STAGE_APPLY     applying one committed entry to its partition
 *   PE_STAGE_CALLBACK  the append's callback (the caller's code)
 * and for reads that need entries the memtable no longer holds (history
 * segments, served by the read pool off the shard thread):
 *   PE_STAGE_READ_QUEUE  the shard hands the read to the pool -> a pool
 *                        thread starts it
 *   PE_STAGE_READ_IO     the pool's history read: block cache lookups,
 *                        pread + checksum + zstd + decode of the misses
 * Bucket b counts samples in [2^(b-1), 2^b) ns (bucket 0: 0 ns); the last
 * bucket also takes everything above. Counters are monotonic since open;
 * a snapshot taken while shards run may be a few samples inconsistent
 * across fields (each field is read atomically).
 */
enum pe_stage {
	PE_STAGE_QUEUE = 0,
	PE_STAGE_FILL,
	PE_STAGE_SYNC,
	PE_STAGE_APPLY,
	PE_STAGE_CALLBACK,
	PE_STAGE_READ_QUEUE,
	PE_STAGE_READ_IO,
	PE_STAGE_COUNT
};
#define PE_HIST_BUCKETS 40
struct pe_stage_hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t max_ns;
	uint64_t buckets[PE_HIST_BUCKETS];
};
/* Sums every shard's histograms into out[PE_STAGE_COUNT]. Any thread. */
void pe_stage_stats(struct pe_engine *e, struct pe_stage_hist *out);
/* "queue", "fill", "sync", "apply", "callback", "read_queue", "read_io";
 * NULL for others. */
const char *pe_stage_name(enum pe_stage s);
/* Upper bound of bucket b in ns (2^b), for Prometheus "le" labels. */
uint64_t pe_hist_bucket_le_ns(unsigned b);

/*
 * "The shard thread never blocks on a disk", as a number: the synchronous
 * file operations (each may wait for the device or the file system's
 * journal) the engine's I/O backend performed on one of its shard threads
 * while they served, by kind, since the backend was made (a backend shared
 * by several engines counts for all of them). Every shard thread reaches
 * the disk only through its ring (the WAL's batched write + fdatasync);
 * everything else runs on the WAL's prep thread, the history workers or
 * the read pool. So every count is 0 unless something regressed; the first
 * operation of each kind is also logged (component "io") with its path.
 * Not counted: close, fstat. Any thread.
 */
enum pe_io_op {
	PE_IO_OPEN = 0,
	PE_IO_PREAD,
	PE_IO_PWRITE,
	PE_IO_FDATASYNC,
	PE_IO_TRUNCATE,
	PE_IO_RENAME,
	PE_IO_UNLINK,
	PE_IO_MKDIR,
	PE_IO_FSYNC_DIR,
	PE_IO_LIST,
	PE_IO_OP_COUNT
};
void pe_shard_sync_io(struct pe_engine *e, uint64_t out[PE_IO_OP_COUNT]);
/* "open", "pread", ... "list"; NULL for others. */
const char *pe_io_op_name(enum pe_io_op op);

/* ---- entries -------------------------------------------------------------- */

struct pe_entry {
	uint64_t seq;
	uint64_t ts_ms;
	uint16_t type;    /* opaque to the engine */
	uint16_t flags;   /* opaque to the engine */
	uint8_t producer[PE_PRODUCER_LEN];
	uint32_t len;
	const uint8_t *payload;
};

/* What the caller provides for each entry of an append. */
struct pe_input {
	uint16_t type;
	uint16_t flags;
	uint32_t len;
	const void *payload; /* copied by pe_append before it returns */
};

/* ---- append ----------------------------------------------------------------- */

struct pe_append_req {
	const void *key;
	size_t klen;
	uint8_t producer[PE_PRODUCER_LEN]; /* all zero = not idempotent */
	uint64_t expected_last_seq;        /* PE_NO_EXPECT or the stream's last seq */
	const struct pe_input *entries;
	uint32_t count;                    /* 1..PE_MAX_BATCH */
};

struct pe_append_result {
	int err;          /* 0, -PARLEY_ESEQ (precondition), -PARLEY_ECORRUPT,
			     -PARLEY_EFULL (memory), -PARLEY_EFATAL, -PARLEY_ECLOSED,
			     -PARLEY_ENOTLEADER (not committed: retry with
			     the same producer id, at `leader` if known),
			     -PARLEY_EAGAIN (leader transfer: retry) */
	uint64_t seq;     /* seq of the first entry of the batch */
	uint32_t count;   /* entries appended (the batch is all or nothing) */
	uint64_t ts_ms;   /* timestamp given to the entries */
	uint64_t last_seq;/* stream's last seq after the operation */
	bool duplicate;   /* idempotent retry: seq/ts are the original ones */
	uint64_t leader;  /* -PARLEY_ENOTLEADER: the partition's leader node
			     as this node knows it (0 = unknown) */
};

typedef void (*pe_append_cb)(void *arg, const struct pe_append_result *r);

/*
 * Appends a batch of entries to one stream, atomically. The callback runs
 * once, on the owning shard, after the batch is durable (or failed).
 * Returns 0 (queued; the callback will run) or a negative error and the
 * callback will NOT run: -PARLEY_EINVAL, -PARLEY_ETOOBIG (over the size
 * limits above: an entry over PE_MAX_PAYLOAD or the encoded batch over
 * PE_MAX_COMMAND), -PARLEY_EFULL (queue full: back off and retry),
 * -PARLEY_ECLOSED.
 */
int pe_append(struct pe_engine *e, const struct pe_append_req *req,
	      pe_append_cb cb, void *arg);
/* True when an append of these entries under a key of klen bytes is
 * within the size limits above (PE_APPEND_BYTES <= PE_MAX_COMMAND, every
 * entry <= PE_MAX_PAYLOAD, 1..PE_MAX_BATCH entries, 1..PE_MAX_KEY key
 * bytes): what pe_append checks before it queues anything. */
bool pe_append_fits(size_t klen, const struct pe_input *entries,
		    uint32_t count);
/* Blocking wrapper; returns r.err (or the enqueue error) and fills *r. */
int pe_append_sync(struct pe_engine *e, const struct pe_append_req *req,
		   struct pe_append_result *r);

/* ---- read --------------------------------------------------------------------- */

enum pe_dir { PE_FORWARD = 0, PE_BACKWARD = 1 };

struct pe_read_req {
	const void *key;
	size_t klen;
	/* PE_FORWARD: entries with seq >= from, ascending.
	 * PE_BACKWARD: entries with seq <= from, descending (from = UINT64_MAX
	 * means "from the newest"). */
	uint64_t from;
	enum pe_dir dir;
	uint32_t limit; /* 1..PE_MAX_READ */
	/* With several voters (Replication, contract item 7): answer only
	 * with everything committed before the read arrived (ReadIndex), or
	 * fail with -PARLEY_ENOTLEADER / -PARLEY_EAGAIN (retryable). Ignored
	 * by a single node, whose reads are always current. */
	bool linearizable;
};
#define PE_MAX_READ 1000u
#define PE_MAX_READ_THREADS 64u

struct pe_read_result {
	int err;                 /* 0, -PARLEY_ECORRUPT (a history block failed
				    its checksum: the log names segment and
				    block; never wrong data), -PARLEY_ETRIMMED
				    (the read starts below first_seq: deleted
				    or past retention; first_seq says where
				    the stream now begins) */
	const struct pe_entry *entries; /* valid only during the callback */
	uint32_t count;
	uint64_t first_seq;      /* first retained seq (0 if stream empty) */
	uint64_t last_seq;       /* last seq (0 if stream empty / unknown) */
	bool end;                /* no more entries in this direction (now) */
};
typedef void (*pe_read_cb)(void *arg, const struct pe_read_result *r);

/* A stream that does not exist reads as empty (count 0, end true).
 * A read sees the stream as it was when its shard took the read (its
 * place in the shard's queue, after every request queued before it); a
 * read that needs history entries is served by the read pool and answered
 * later, so read callbacks may run in another order than the reads were
 * issued. */
int pe_read(struct pe_engine *e, const struct pe_read_req *req, pe_read_cb cb,
	    void *arg);

/* Blocking read that copies entries out. On success *out is an array of
 * *count entries whose payloads live in the same allocation; free(*out). */
int pe_read_sync(struct pe_engine *e, const struct pe_read_req *req,
		 struct pe_entry **out, uint32_t *count,
		 struct pe_read_result *meta);

struct pe_meta {
	uint64_t first_seq; /* first visible seq; 0 when the stream never had
			       an entry; last_seq + 1 when every entry was
			       deleted or expired (seqs are never reused) */
	uint64_t last_seq;  /* 0 when empty */
	uint64_t last_ts_ms;
};
int pe_meta_sync(struct pe_engine *e, const void *key, size_t klen,
		 struct pe_meta *out);

/* ---- delete --------------------------------------------------------------------- */

struct pe_delete_result {
	int err;          /* 0, -PARLEY_ECORRUPT, -PARLEY_EFATAL, -PARLEY_EPERM */
	uint64_t first_seq; /* stream's first visible seq after the delete */
	uint64_t last_seq;  /* unchanged: seqs are never reused */
	uint64_t leader;    /* -PARLEY_ENOTLEADER: leader hint (0 = unknown) */
};
typedef void (*pe_delete_cb)(void *arg, const struct pe_delete_result *r);

/*
 * Deletes a stream's entries with seq <= through (a tombstone); through =
 * UINT64_MAX (or >= last seq) deletes every entry present when the delete
 * applies — later appends continue at last_seq + 1 and stay visible. Goes
 * through the WAL like an append: the callback runs after the delete is
 * durable, and from then on no read, meta or tail returns those entries
 * (forward reads below first_seq fail with -PARLEY_ETRIMMED; subscribers
 * get PE_SUB_TRIMMED). Compaction removes them from disk later. The
 * idempotency records of deleted entries stay: a late retry is still a
 * duplicate within the window. Same threading as pe_append.
 */
int pe_delete(struct pe_engine *e, const void *key, size_t klen,
	      uint64_t through, pe_delete_cb cb, void *arg);
int pe_delete_sync(struct pe_engine *e, const void *key, size_t klen,
		   uint64_t through, struct pe_delete_result *r);


/* ---- tail (subscribe) ------------------------------------------------------- */

/*
 * A subscription delivers a stream's entries with seq >= from_seq: first the
 * backlog, then live entries as they become durable, in order, with no gap
 * and no duplicate. Live entries that apply together (one WAL batch of the
 * stream's partition) come in one callback (up to 64 entries each), after
 * all of them applied.
 *
 * Flow control (how a slow subscriber stays bounded): the callback returns
 * PE_SUB_CONTINUE to keep receiving or PE_SUB_PAUSE when the consumer's own
 * buffer is full. A paused subscription holds only its cursor (no queued
 * entries); appends never wait for it. pe_sub_resume() restarts delivery from
 * the cursor — from memory, or from history — and catches up to live.
 *
 * Events: PE_SUB_ENTRIES (entries/count set), PE_SUB_CLOSED (engine closing
 * or partition failed; err says why; no more callbacks after it),
 * PE_SUB_TRIMMED (the cursor fell below the first retained seq; delivery
 * continues from first_seq).
 */
enum pe_sub_event { PE_SUB_ENTRIES = 0, PE_SUB_CLOSED = 1, PE_SUB_TRIMMED = 2 };
enum pe_sub_ret { PE_SUB_CONTINUE = 0, PE_SUB_PAUSE = 1 };

struct pe_sub_update {
	enum pe_sub_event event;
	int err;
	const struct pe_entry *entries; /* valid only during the callback */
	uint32_t count;
	uint64_t next_seq;              /* the cursor after this update */
};
typedef enum pe_sub_ret (*pe_sub_cb)(void *arg, struct pe_sub *sub,
				     const struct pe_sub_update *u);

/* Creates the subscription (delivery starts asynchronously on the shard).
 * *out stays valid until pe_unsubscribe. */
int pe_subscribe(struct pe_engine *e, const void *key, size_t klen,
		 uint64_t from_seq, pe_sub_cb cb, void *arg,
		 struct pe_sub **out);
/* Resume a paused subscription. Any thread. */
int pe_sub_resume(struct pe_sub *s);
/* Ends the subscription; after the shard processes it no callback runs and
 * the memory is freed. From any thread; from inside its own callback too.
 * `done` (may be NULL) runs on the shard once the subscription is gone. */
int pe_unsubscribe(struct pe_sub *s, void (*done)(void *arg), void *arg);

/* ---- replication ----------------------------------------------------------------- */

/*
 * Replication: every partition a Raft group of several voters over a
 * transport the caller provides (engine/raft/raft.h is the Raft core;
 * struct raft_msg is defined there, raft_codec.h encodes it for a wire).
 *
 * THE CONTRACT
 *   1. Bootstrap membership. pe_options.cluster names this node (node_id)
 *      and the founding voters of every partition (voters[]: 1..PE_MAX_VOTERS
 *      distinct ids, never 0). Every node of a cluster, including one added
 *      later (item 12), must be given the same founding voters and the same
 *      partition count; a node added later is not among them (a founder
 *      is). The founders are each group's configuration only while the
 *      data directory holds none of its own (a new directory, or one
 *      written before item 12): from the first membership change on, a
 *      group's configuration is what its log, its stored conf and its
 *      snapshots say (item 12). A data directory must always be opened
 *      with the same node id. A voter set of one is a single node (the
 *      group elects itself at open, as without pe_options.cluster) and
 *      cannot change its membership.
 *   2. Time is injected. The engine never ticks its groups by itself:
 *      the caller calls pe_raft_tick() every tick (parleyd: a timer; tests:
 *      when they choose). A group's election timeout is a uniform number
 *      of ticks in [election_ticks, 2 * election_ticks), drawn from a seed
 *      mixing the partition and the node id; a leader sends heartbeats
 *      every heartbeat_ticks. With several voters no group elects itself
 *      at open: it waits as a follower for its election timeout.
 *   3. Inbound. pe_raft_recv() hands the engine messages received from
 *      another node (any thread; copied before it returns). A message
 *      for an unknown group, from node 0 or this node, or addressed to
 *      another node is dropped and counted. On the shard, a message from
 *      a node that is not a member (voter or learner) of the group's
 *      current configuration is dropped and counted too, except the
 *      leader's APPEND, HEARTBEAT and SNAPSHOT while this node is not a
 *      member of its own configuration (it is being added and has not yet
 *      learnt so, or was removed: Raft's rule, so a new node can catch
 *      up). When a shard's inbox is full the message is dropped
 *      (-PARLEY_EFULL): Raft tolerates loss.
 *   4. Outbound, persist before send. The engine calls cluster->send(arg,
 *      msgs, n) from a shard thread with messages of one group (all from
 *      this node, any destinations; borrowed for the duration of the
 *      call: copy them). A message leaves only after everything it
 *      depends on is durable: the term and vote (HARDSTATE, stored before
 *      the group goes on) and the log entries of its ready (the WAL batch
 *      holding them has been written and fdatasync'd). send must not
 *      block; it may drop messages.
 *   5. Followers append the leader's entries to their WAL and apply them
 *      once committed (a committed entry is applied exactly once, in log
 *      order, after it is durable here). The leader acknowledges an append
 *      after a quorum of voters made it durable (commit) and it applied
 *      it: an acknowledged append survives the loss of any minority of
 *      voters, with its seq.
 *   6. Proposals on a node that is not the partition's leader fail at
 *      once with -PARLEY_ENOTLEADER and the leader hint (result.leader;
 *      0 when no leader is known, e.g. during an election). When a leader
 *      loses its leadership, exactly its waiters above its commit index
 *      fail with -PARLEY_ENOTLEADER (retryable: the entry may still be
 *      committed by the next leader, so retry with the same producer id,
 *      which turns a committed retry into the original seq); those at or
 *      below its commit index are answered when they apply.
 *   7. Reads, metadata and tails are served by any node from what it has
 *      applied (a follower's or deposed leader's answer may be stale),
 *      except that a leader which has not yet applied through its own
 *      term's first entry answers reads and metadata with -PARLEY_EAGAIN
 *      (retryable): it could miss what its predecessor committed.
 *      A read with pe_read_req.linearizable is linearizable (ReadIndex,
 *      no clock assumption): the node asks the partition's leader (itself,
 *      or the leader it follows, over the transport) for the commit index;
 *      the leader answers only after a quorum acknowledged a heartbeat
 *      sent after the read arrived (so it was still the leader then), and
 *      the read is served once this node applied through that index. A
 *      read not confirmed within 3 election timeouts (counted in ticks)
 *      fails, with -PARLEY_ENOTLEADER on a node that is not the leader
 *      then (no leader known, the leader does not answer, or leadership
 *      lost before a quorum answered: a deposed leader never answers
 *      from its stale state) and -PARLEY_EAGAIN on a leader; within that
 *      bound it waits for a leader, and a new leader for its first
 *      commit in its term. pe_close answers proposals still
 *      waiting for a quorum, and such reads, with -PARLEY_ECLOSED.
 *   8. Catch-up by log, then by snapshot: a leader keeps the applied
 *      entries of each partition in memory up to log_keep_bytes (plus
 *      those not applied yet) to send to lagging followers. A follower
 *      behind that point gets the partition's snapshot (its history
 *      files at the flushed index) in chunks through the Raft messages,
 *      at most snapshot_rate_bytes per second, resumable after a link
 *      break or a restart, installed atomically; it then goes on by log
 *      (docs/CLUSTER.md §2.4, engine/log/part_snap.c). Data directories
 *      gain snap/<partition>/ for what a follower receives.
 *   9. Quiescing (pe_cluster.quiesce_ticks, 0 = never): a group whose
 *      leader had nothing to do for quiesce_ticks ticks, whose log is
 *      committed and held by every member that answered within one to
 *      two election timeouts, and which heard from a quorum in its
 *      current check-quorum window, quiesces: the leader sends one
 *      QUIESCE heartbeat and stops ticking, caught-up followers stop too,
 *      and the engine gives such a group no ticks (no heartbeats, no
 *      shard work; pe_raft_status.quiesced). A proposal, a linearizable
 *      read, a membership change or any message but a quiesce heartbeat
 *      wakes it. Since a sleeping follower cannot tell a quiet leader
 *      from a dead one, the caller MUST report node liveness when it
 *      sets quiesce_ticks: pe_raft_node_down(node) when its link to a
 *      node is lost (followers of that node campaign, item 11, and every
 *      quiesced leader wakes, so one cut off from its quorum is deposed
 *      by check-quorum: a leader woken this way sleeps again only after
 *      a quorum answered it anew), and pe_raft_node_up(node) when the
 *      link comes back (quiesced leaders wake, so the node catches up).
 *      A member silent for one to two election timeouts does not keep
 *      its group awake.
 *  10. With follow_partition0, every group whose leader is this node and
 *      whose partition is not 0 transfers its leadership (Raft's
 *      TimeoutNow, once the target holds its whole log) to the node that
 *      leads partition 0, so that one node leads every partition once
 *      things settle: a caller whose operations span partitions (a chat
 *      message and its inbox fan-out) then finds them all on one node.
 *      During a transfer proposals fail with -PARLEY_EAGAIN (retryable).
 *      A group transfers only to a node that has acknowledged an entry
 *      of its current term (raft_peer_current): never to a node that
 *      this node still believes leads partition 0 but that died.
 *  11. Link loss is a hint: pe_raft_node_down(node) makes the groups that
 *      follow `node` campaign within a few ticks (quiesced or not) instead
 *      of waiting out the election timeout (pre-vote still asks a quorum, so a flapping
 *      link cannot depose a leader the others still hear from). The
 *      engine holds the link down until pe_raft_node_up(node): a message
 *      from `node` handled after the link-down (sent before it, e.g. its
 *      last QUIESCE heartbeat) does not put its followers back to sleep
 *      behind it; they still campaign.
 *  12. Membership changes, per partition group (pe_partition_conf_change):
 *      one change at a time, proposed on the group's leader as a log entry
 *      (WAL record CMD_CONF) that takes effect when committed: add a
 *      learner (a node that is not a member: a new one, or a member
 *      removed before, which joins again with its own data; an id always
 *      names the same node and data directory), promote a learner to voter, remove a voter
 *      or learner (never the last voter). The callback runs once the
 *      entry is committed and applied on the leader (err 0), or when it
 *      cannot be (-PARLEY_ENOTLEADER with the leader hint when leadership
 *      is lost first: the change may still commit, read the conf in
 *      pe_raft_status before proposing again). -PARLEY_EAGAIN: another
 *      change is pending, or the leader has not committed in its term
 *      yet, or a leader transfer runs (retry). -PARLEY_EINVAL: the change
 *      does not apply to the current conf (adding a member, promote of a
 *      non-learner, removal of an unknown node or of the last voter).
 *      Durability: conf entries travel through the WAL like every entry
 *      (replayed at recovery); when one is applied, the group's
 *      configuration is also stored in <data>/conf/<partition> (atomic
 *      replace, before anything later can be flushed into history and
 *      its WAL released), and a snapshot carries the configuration in its
 *      meta, which a follower stores there before the snapshot's install
 *      commits. At open a group starts from that stored configuration
 *      (the newest committed one this node applied; later entries of its
 *      WAL are replayed on top), else from the founders (item 1).
 *      A learner receives the log (and snapshots) but never votes or
 *      campaigns and does not count for commit. A removed node's groups
 *      stop: it is no member of their configuration, never campaigns,
 *      and the members drop its messages; proposals there fail
 *      -PARLEY_ENOTLEADER. A node not yet added keeps its group as a
 *      follower with no vote until the leader's first append or snapshot
 *      tells it the configuration that includes it.
 *      pe_raft_status reports the group's current (committed)
 *      configuration.
 */
struct raft_msg; /* engine/raft/raft.h */

#define PE_MAX_VOTERS 9u

typedef void (*pe_raft_send_fn)(void *arg, const struct raft_msg *msgs,
				uint32_t n);
/* Optional (pe_cluster.flush): called with send_arg on a shard thread that
 * called send since its last flush, once per stretch of its round: before
 * it waits for completions and after it handled them. A transport that
 * has it may queue what send gives it without waking its own thread and
 * wake it here, once per stretch instead of once per group's ready. */
typedef void (*pe_raft_flush_fn)(void *arg);

struct pe_cluster {
	uint64_t node_id;          /* != 0 */
	const uint64_t *voters;    /* the founding voters of every partition
				      (contract items 1 and 12) */
	uint32_t nvoters;          /* 1..PE_MAX_VOTERS */
	uint32_t election_ticks;   /* 0 = default 10 */
	uint32_t heartbeat_ticks;  /* 0 = default 1; < election_ticks */
	uint32_t quiesce_ticks;    /* contract item 9: idle ticks before a
				      group quiesces; 0 = never (only a
				      caller that reports node liveness,
				      pe_raft_node_down / _up, may set it) */
	uint64_t log_keep_bytes;   /* per partition, applied entries kept for
				      followers; 0 = default 4 MiB */
	uint64_t snapshot_rate_bytes; /* snapshot bytes sent per second, all
				      partitions together; 0 = unlimited */
	pe_raft_send_fn send;      /* required with more than one voter */
	void *send_arg;
	pe_raft_flush_fn flush;    /* optional, see pe_raft_flush_fn */
	/* Leader placement (contract item 10): a node leading a partition
	 * other than 0 hands its leadership to the node that leads
	 * partition 0, as this node knows it. */
	bool follow_partition0;
};

/* Contract item 3. Any thread. Returns 0 or the first error
 * (-PARLEY_EFULL, -PARLEY_ECLOSED, -PARLEY_EINVAL, -PARLEY_ENOMEM);
 * messages that could be queued are queued either way. */
int pe_raft_recv(struct pe_engine *e, const struct raft_msg *msgs, uint32_t n);
/* Contract item 2: one tick for every group. Any thread. 0,
 * -PARLEY_EFULL (that shard misses the tick) or -PARLEY_ECLOSED. */
int pe_raft_tick(struct pe_engine *e);
/* Contract item 11: the transport lost its link to `node` (a process that
 * dies closes its sockets, so this comes long before an election
 * timeout). Groups that follow `node` end its lease and campaign within a
 * few ticks (raft_leader_down). Any thread. 0, -PARLEY_ECLOSED,
 * -PARLEY_ENOMEM or -PARLEY_EINVAL (never -PARLEY_EFULL: node liveness
 * is not bounded by the shard queue). */
int pe_raft_node_down(struct pe_engine *e, uint64_t node);
/* Contract item 9: the transport's link to `node` is up (again): quiesced
 * groups this node leads wake, so a node that was away is caught up, and
 * `node`'s link-down ends (item 11). Any thread; same returns as
 * pe_raft_node_down. */
int pe_raft_node_up(struct pe_engine *e, uint64_t node);
/* Leader transfer on request (docs/CLUSTER.md §3.7, removing the leading
 * node): every group this node leads hands its leadership to `to`
 * (Raft's TimeoutNow once `to` holds the whole log), as item 10 does,
 * and only when `to` is a voter of the group that acknowledged an entry
 * of the leader's current term (raft_peer_current); a group where it is
 * not keeps its leader (the caller watches pe_raft_status and may ask
 * again). During a transfer proposals fail -PARLEY_EAGAIN. Any thread,
 * never blocks. 0, -PARLEY_EINVAL (no cluster, `to` is this node or 0),
 * -PARLEY_EFULL, -PARLEY_ECLOSED, -PARLEY_ENOMEM. */
int pe_raft_transfer(struct pe_engine *e, uint64_t to);
/* The same for one partition's group only (rebalancing leaderships over
 * the nodes, docs/CLUSTER.md §3.2): hands it to `to` if this node leads
 * it and `to` is a current voter of it. Same returns, and -PARLEY_EINVAL
 * for a partition out of range. */
int pe_raft_transfer_partition(struct pe_engine *e, uint32_t partition,
			       uint64_t to);

enum pe_raft_role { PE_FOLLOWER = 0, PE_PRECANDIDATE = 1, PE_CANDIDATE = 2,
		    PE_LEADER = 3 };
/* A partition's group as its shard last published it (after every step,
 * tick and ready): any thread, never blocks. */
#define PE_RAFT_MAX_MEMBERS 9 /* members of one group (voters + learners) */
struct pe_raft_status {
	enum pe_raft_role role;
	uint64_t term;
	uint64_t leader;           /* 0 = unknown */
	uint64_t commit;
	uint64_t applied;
	uint64_t last_index;
	uint64_t snapshot_needed;  /* times a follower needed a snapshot */
	uint64_t dropped;          /* inbound messages dropped (contract 3) */
	/* catch-up by snapshot, counted since open (docs/CLUSTER.md §2.4):
	 * as leader, transfers to a follower started / finished (it installed)
	 * / abandoned, and chunk bytes sent; as follower, chunk bytes stored,
	 * snapshots installed / refused or failed */
	uint64_t snap_sends_started, snap_sends_completed, snap_sends_failed;
	uint64_t snap_sent_bytes, snap_received_bytes;
	uint64_t snap_installed, snap_install_failed;
	uint64_t elections;        /* campaigns as candidate, since open */
	/* messages from this group's leader stepped while its link was down
	 * (sent before the link-down, handled after it): each time the group
	 * was told the leader is down again (item 11), since open */
	uint64_t down_retold;
	bool quiesced;             /* idle: not ticking (contract item 9) */
	/* linearizable reads (contract 7) answered from the state machine /
	 * failed (NOTLEADER, AGAIN, closed), since open */
	uint64_t reads_served, reads_failed;
	/* On the leader only (n_members 0 elsewhere): every member of the
	 * group, the leader included, with the highest index the leader knows
	 * it holds (`match`) and `lag` = last_index - match, in entries. A
	 * member is `active` when it answered the leader within the last one
	 * to two election timeouts; a cut-off or dead follower turns inactive
	 * and its lag grows with every append. lag_max: the largest lag of a
	 * member other than the leader. Commit and apply lag of a follower
	 * are its own (commit, applied) against the leader's commit: see
	 * docs/CLUSTER.md §3.6. */
	uint32_t n_members;
	struct pe_raft_member {
		uint64_t node;
		uint64_t match;
		uint64_t lag;
		bool active, voter, snapshot;
	} members[PE_RAFT_MAX_MEMBERS];
	uint64_t lag_max;
	/* WAL records of this partition found with an intact header and a
	 * damaged body at open (their entries held as damaged, never applied
	 * or sent), and entries repaired in place from the leader since;
	 * superseded: entries held as damaged that the log dropped instead
	 * (a later entry at their index with another term, met later in the
	 * WAL or sent by the leader: never committed; or a log end marker:
	 * the log went on from there), so nothing to repair. Settled, found
	 * = repaired + superseded (docs/CLUSTER.md §2.5) */
	uint64_t damaged_found, damaged_repaired, damaged_superseded;
	/* the group's current configuration (contract item 12), as of the
	 * same publish: its voters and learners, ascending ids */
	uint32_t nvoters, nlearners;
	uint64_t voters[PE_MAX_VOTERS];
	uint64_t learners[PE_MAX_VOTERS];
	/* How far each of them caught up, as the leader knows it: members[]
	 * above (match; a caller promotes a learner once its match reaches
	 * the commit index). */
};
/* The leader's view of how far `node` caught up (its members[] match);
 * 0 on a node that is not the leader or for a node not in the group. */
static inline uint64_t pe_raft_member_match(const struct pe_raft_status *st,
					    uint64_t node)
{
	for (uint32_t i = 0; i < st->n_members; i++)
		if (st->members[i].node == node)
			return st->members[i].match;
	return 0;
}
int pe_raft_status(struct pe_engine *e, uint32_t partition,
		   struct pe_raft_status *out);
/* A generation that grows whenever some partition's published role or
 * term (pe_raft_status.role, .term) changes: a caller that read it, then
 * pe_raft_status of the partitions it watches, and later reads the same
 * value has seen their current roles and terms, and may skip reading them
 * again (the chat layer's leadership poll; the node's election metrics).
 * Bumped after the new values are published (release), read with acquire.
 * Any thread, never blocks; 0 for NULL. */
uint64_t pe_raft_status_gen(struct pe_engine *e);
/* Contract item 12: a membership change of one partition's group. */
enum pe_conf_op {
	PE_CONF_ADD_LEARNER = 2, /* a new node (id above every earlier one) */
	PE_CONF_PROMOTE = 3,     /* a learner becomes a voter */
	PE_CONF_REMOVE = 4,      /* a voter or learner leaves for good */
};
struct pe_conf_result {
	int err;          /* 0, -PARLEY_ENOTLEADER, -PARLEY_EAGAIN,
			     -PARLEY_EINVAL, -PARLEY_ECLOSED, -PARLEY_EFATAL,
			     -PARLEY_ECORRUPT */
	uint64_t index;   /* err 0: the log index of the conf entry */
	uint64_t leader;  /* -PARLEY_ENOTLEADER: leader hint (0 = unknown) */
};
typedef void (*pe_conf_cb)(void *arg, const struct pe_conf_result *r);
/* Queues the change for the partition's shard; the callback runs once, on
 * the shard thread (contract item 12 says when). Returns 0 (the callback
 * will run) or -PARLEY_EINVAL (no cluster, a single voter, bad op / node
 * / partition), -PARLEY_EPERM (read-only), -PARLEY_EFULL, -PARLEY_ECLOSED
 * (the callback will not run). Any thread. */
int pe_partition_conf_change(struct pe_engine *e, uint32_t partition,
			     enum pe_conf_op op, uint64_t node, pe_conf_cb cb,
			     void *arg);
/* Blocking wrapper (tools, tests; not from a callback): r->err. */
int pe_partition_conf_change_sync(struct pe_engine *e, uint32_t partition,
				  enum pe_conf_op op, uint64_t node,
				  struct pe_conf_result *r);

/* For callers that read before they write (a read on a follower may be
 * stale): 0 when this node takes writes for the partition now (a single
 * node, or its leader caught up with its own term), -PARLEY_ENOTLEADER
 * (another node leads, or none is known), -PARLEY_EAGAIN (this node
 * leads but still applies its predecessor's entries). Any thread, never
 * blocks; from published state, so a proposal may still fail. */
int pe_partition_leader_check(struct pe_engine *e, uint32_t partition);

/* ---- I/O backends ------------------------------------------------------------- */

/*
 * The engine does all file I/O through `struct pio` (engine/io.h has the
 * vtable). Two backends:
 *   pio_uring_new()  real files; hot-path writes and fdatasync via io_uring.
 *   pio_mem_new()    a deterministic in-memory file system for tests and the
 *                    simulator, with fault injection.
 * A backend outlives every engine opened on it; free it after pe_close.
 * Fault injection for the in-memory backend: parley_engine_hooks.h.
 */
struct pio *pio_uring_new(void);
struct pio *pio_mem_new(uint64_t seed);
void pio_free(struct pio *io);


#endif /* PARLEY_ENGINE_H */
