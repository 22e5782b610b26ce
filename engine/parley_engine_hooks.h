/*
 * parley_engine_hooks.h — the engine's test and tool hooks.
 *
 * Not for the serving path: a simulated crash, synchronous history
 * maintenance, offline history inspection (`parleyctl inspect`) and the
 * in-memory I/O backend's fault injection. Kept out of parley_engine.h so
 * that what a server may call and what a test may do are visibly apart.
 * Same conventions as parley_engine.h (0 / negative -PARLEY_E* codes).
 */
#ifndef PARLEY_ENGINE_HOOKS_H
#define PARLEY_ENGINE_HOOKS_H

#include "parley_engine.h"

/* ---- simulated crash ---------------------------------------------------------- */

/* Simulated crash for tests: stops the shard threads at once, without
 * waiting for in-flight I/O or running pending callbacks, and frees memory.
 * On the in-memory backend follow with pio_mem_crash() to drop unsynced
 * bytes. Never used in production. */
void pe_abort(struct pe_engine *e);

/* ---- stepped execution (the engine simulator) ------------------------------------ */

/*
 * A stepped engine starts no thread: every unit of its work (a round of a
 * shard's loop, a unit of a WAL's background preparation, a history job)
 * runs on the caller's thread inside pe_step, in the order `pick` chooses,
 * and every timer of the engine (retention ticks, the WAL's periodic
 * high-water mark) reads `now_ns`. With the in-memory backend and an
 * injected clock_ms, the same calls and the same picks give the same run,
 * bit for bit (tests/sim/engine_sim.c). The blocking wrappers (pe_*_sync),
 * pe_open and pe_close step the engine themselves until their work is done;
 * callbacks run inside pe_step (or those), on the caller's thread.
 * Single-threaded: every call on a stepped engine from one thread.
 */
struct pe_stepper {
	/* which of n units of work goes next: a value below n */
	uint32_t (*pick)(void *arg, uint32_t n);
	/* monotonic nanoseconds for the engine's timers */
	uint64_t (*now_ns)(void *arg);
	void *arg;
};
int pe_open_stepped(const struct pe_options *opt, const struct pe_stepper *st,
		    struct pe_engine **out);
/* Runs one unit of work (the one `pick` chooses; it may find nothing to
 * do). Returns how many units there are to pick from. */
uint32_t pe_step(struct pe_engine *e);
/* Steps until done(arg) is true; aborts the process (assertion) after
 * PE_STEP_LIMIT units without it: a hung engine fails loudly. */
#define PE_STEP_LIMIT (50u * 1000u * 1000u)
void pe_step_until(struct pe_engine *e, bool (*done)(void *arg), void *arg);

/* ---- history maintenance (tools and tests) --------------------------------------- */

/* Flushes the partition's memtable into a history segment now and waits
 * for the commit (a flush already running is waited for, then another one
 * covers what arrived meanwhile). Blocking; not from a callback. */
int pe_flush_sync(struct pe_engine *e, uint32_t partition);
/* The same flush without waiting for it (what the shard starts on its own
 * when a memtable fills): *rc is set (0 or a negative error) and then
 * cb(arg) runs, on the shard thread (inside pe_step when stepped), once it
 * committed or failed; never after pe_abort. *rc must stay valid until
 * then. Returns 0 or an error (nothing started). */
int pe_flush_start(struct pe_engine *e, uint32_t partition, int *rc,
		   void (*cb)(void *arg), void *arg);
/* Runs a compaction of the partition now (all = merge every segment, else
 * the size-tiered pick; nothing to do is success) and waits for it. */
int pe_compact_sync(struct pe_engine *e, uint32_t partition, bool all);

/* Offline view of history segments, for `parleyctl inspect`: opens the
 * partition's history read-only (never writes) on `io` (NULL = real disk)
 * and calls cb per live segment. With verify, every block is read and
 * checked (the first bad block is named in error). */
struct pe_seg_report {
	uint32_t partition;
	uint64_t seg_id;
	char file[128];
	uint64_t entries;
	uint32_t streams, blocks;
	uint64_t raw_payload_bytes, file_bytes;
	double ratio;                /* file_bytes / raw_payload_bytes */
	uint64_t dict_id;            /* 0 = compressed without dictionary */
	uint64_t min_ts, max_ts;
	uint32_t idem_records;
	bool verified;               /* verify ran */
	int verify_err;              /* 0 or -PARLEY_ECORRUPT */
	uint32_t blocks_ok, blocks_bad;
	char error[256];
};
struct pe_hist_report {
	uint64_t flushed_index;
	uint64_t generation;
	uint64_t dict_id;            /* current dictionary */
	uint32_t segments;
	uint32_t marked_streams;     /* streams with deletion/retention marks */
};
int pe_history_inspect(struct pio *io, const char *dir, uint32_t partition,
		       bool verify, struct pe_hist_report *hr,
		       int (*cb)(void *arg, const struct pe_seg_report *r),
		       void *arg);
/* Every entry of one segment in (key, seq) order. cb returns non-zero to
 * stop. -PARLEY_ECORRUPT names the bad block in err (if given). */
int pe_history_dump(struct pio *io, const char *dir, uint32_t partition,
		    uint64_t seg_id,
		    int (*cb)(void *arg, const void *key, size_t klen,
			      const struct pe_entry *e),
		    void *arg, char *err, size_t errcap);

/* ---- comparing replicas --------------------------------------------------------- */

/* A partition's visible state as one number (engine/digest.c): xxh3 over
 * every stream (in key order) and every visible entry of it (in seq order:
 * key, seq, ts, type, flags, producer, payload), taken at log index
 * `applied` (nothing applied while it was read: read before and after,
 * retried a few times, else -PARLEY_EAGAIN). Two replicas of a partition at
 * the same applied index must have the same digest. A compaction filter
 * that rewrites payloads (pe_options.compact_filter) makes replicas that
 * compacted at different times differ; no other state does. Blocking; not
 * from a callback; reads the whole partition (a test and debug tool). */
struct pe_digest {
	uint64_t applied;  /* the log index the digest was taken at */
	uint64_t commit;   /* the commit index this node knew then */
	uint64_t streams, entries;
	uint64_t digest;
};
int pe_partition_digest(struct pe_engine *e, uint32_t partition,
			struct pe_digest *out);

/* ---- in-memory backend faults ---------------------------------------------------- */

/* In-memory backend faults (no-ops on other backends). */
enum pio_mem_fault {
	PIO_FAULT_WRITE_EIO = 1,   /* the next `count` writes fail with -EIO */
	PIO_FAULT_FSYNC_EIO = 2,   /* the next `count` fsyncs fail with -EIO */
	PIO_FAULT_ENOSPC = 3,      /* the next `count` writes fail with -ENOSPC */
};
void pio_mem_inject(struct pio *io, enum pio_mem_fault f, uint32_t count);
/* Aim the armed faults at files whose path contains `substr` (copied;
 * NULL or "" = every file, the default): other files' writes and fsyncs
 * neither fail nor use up the counts. */
void pio_mem_fault_scope(struct pio *io, const char *substr);
/* Crash: every file loses the bytes written since its last fsync. With
 * `tear`, a random prefix (at 512-byte granularity) of the unsynced
 * writes survives instead, as a real torn write would. */
void pio_mem_crash(struct pio *io, bool tear);
/* Strict directories: from now on a create, mkdir, rename or unlink
 * survives a crash only once its directory was fsync'd (fsync_dir), as
 * on a POSIX file system after a power loss; off (the default), they are
 * durable at once. Turning it off makes pending changes durable. */
void pio_mem_strict_dirs(struct pio *io, bool on);
/* Flip one bit of a stored file (synced contents). Returns 0 or -ENOENT. */
int pio_mem_flip_bit(struct pio *io, const char *path, uint64_t offset,
		     unsigned bit);
/* Size of a stored file or -ENOENT (for tests that aim faults). */
int64_t pio_mem_file_size(struct pio *io, const char *path);

#endif /* PARLEY_ENGINE_HOOKS_H */
