/*
 * io.h — the engine's I/O vtable (private to engine/).
 *
 * Every file operation of the engine goes through `struct pio`, so the same
 * WAL and segment code runs on the real disk (io_uring backend, io_uring.c)
 * or on a deterministic in-memory file system with fault injection
 * (io_mem.c).
 *
 * Two kinds of operations:
 *   - synchronous ones (open, pread, pwrite, fsync, rename, ...) used at open,
 *     recovery and maintenance, callable from any thread;
 *   - the asynchronous ring used by a shard's hot path: submit writes and
 *     fdatasyncs tagged with a user_data, then reap completions in batches
 *     with pio_ring_wait(). A ring belongs to one shard thread; only
 *     pio_ring_wake() may be called from other threads.
 *
 * Ownership: a buffer passed to ring_write must stay valid and unchanged
 * until its completion has been reaped.
 *
 * Ring contract (both backends):
 *   - A ring holds at most `depth` caller operations in flight (queued,
 *     submitted, or completed but not yet reaped). Beyond that ring_write and
 *     ring_fdatasync return -EBUSY and queue nothing: reap first.
 *   - user_data values >= PIO_UDATA_RESERVED are reserved for the backends
 *     (internal wake-up and timeout tags); ring ops reject them with -EINVAL.
 *   - A write completion carries res = bytes written. A short write
 *     (0 <= res < len) is reported as-is and is NOT retried: the caller must
 *     treat res != len as an I/O error.
 *   - Completion order: io_mem completes in submission order; io_uring may
 *     complete unlinked ops in any order (a linked chain completes in order).
 *   - A failed op with `link` set makes the next op complete with
 *     -ECANCELED (and so on down the chain while `link` is set).
 *   - Before ring_free every queued op should have been reaped; ring_free
 *     waits for ops still in the kernel (io_uring) or drops queued ones
 *     (io_mem, as a crash would).
 */
#ifndef PARLEY_ENGINE_IO_H
#define PARLEY_ENGINE_IO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley_engine.h" /* enum pe_io_op */

struct pio;
struct pio_file;
struct pio_ring;

#define PIO_CREATE 1 /* create if absent */
#define PIO_EXCL 2   /* fail if present */
/* Ring writes of this file may bypass the page cache (O_DIRECT): their
 * buffer address, offset and length must be multiples of PIO_DIRECT_ALIGN
 * (-EINVAL otherwise, on every backend). Synchronous ops on the handle stay
 * buffered. Where the file system refuses O_DIRECT (tmpfs) the backend
 * silently uses the page cache: the flag is a hint, the alignment rule is
 * not. */
#define PIO_DIRECT 4
#define PIO_DIRECT_ALIGN 4096u
/* The synchronous pwrite of this file may bypass the page cache too (no
 * alignment rule: a write, or the rest of one, whose buffer, offset and
 * length are not PIO_DIRECT_ALIGN multiples, or a file system without
 * O_DIRECT, goes through the cache as usual). For writing a new file
 * once, such as a WAL spare's zeros, without copying its bytes into the
 * page cache. Durability is unchanged: fdatasync as ever. A backend
 * without direct I/O ignores it. */
#define PIO_DIRECT_FILL 8

/* user_data values >= this are reserved for the backends. */
#define PIO_UDATA_RESERVED (UINT64_MAX - 255)

struct pio_cqe {
	uint64_t user_data;
	int res; /* >= 0 success (bytes for writes), or -errno */
};

typedef int (*pio_list_cb)(void *arg, const char *name);

struct pio_ops {
	int (*open)(struct pio *io, const char *path, int flags,
		    struct pio_file **out);
	void (*close)(struct pio *io, struct pio_file *f);
	/* Returns bytes read (short only at end of file) or -errno. */
	int64_t (*pread)(struct pio *io, struct pio_file *f, void *buf,
			 size_t len, uint64_t off);
	/* Writes all of buf (retrying short writes and EINTR) or -errno. */
	int (*pwrite)(struct pio *io, struct pio_file *f, const void *buf,
		      size_t len, uint64_t off);
	int (*fdatasync)(struct pio *io, struct pio_file *f);
	int (*truncate)(struct pio *io, struct pio_file *f, uint64_t size);
	int64_t (*size)(struct pio *io, struct pio_file *f);
	int (*rename)(struct pio *io, const char *from, const char *to);
	int (*unlink)(struct pio *io, const char *path);
	int (*mkdir)(struct pio *io, const char *path);
	int (*fsync_dir)(struct pio *io, const char *path);
	/* Calls cb for each entry name (not "." or ".."); stops on non-zero
	 * and returns that value; else 0, or -errno. Never calls cb with an
	 * internal lock held, so cb may call other pio ops. */
	int (*list)(struct pio *io, const char *dir, pio_list_cb cb, void *arg);
	/* Advisory lock on a directory (its LOCK file): exclusive for the one
	 * process that writes it, shared for read-only opens. Never blocks:
	 * -PARLEY_ELOCKED when a conflicting lock is held (by another process,
	 * or by another open in this one). *token identifies it for unlock. The
	 * lock dies with the process (kill -9 included). */
	int (*lock)(struct pio *io, const char *dir, bool exclusive,
		    int64_t *token);
	void (*unlock)(struct pio *io, int64_t token);

	int (*ring_new)(struct pio *io, unsigned depth, struct pio_ring **out);
	void (*ring_free)(struct pio_ring *r);
	/* Queue a write; with `link`, the next queued op starts only if this
	 * one succeeds (io_uring IOSQE_IO_LINK). */
	int (*ring_write)(struct pio_ring *r, struct pio_file *f,
			  const void *buf, size_t len, uint64_t off,
			  uint64_t user_data, bool link);
	int (*ring_fdatasync)(struct pio_ring *r, struct pio_file *f,
			      uint64_t user_data);
	/* Queue a write whose completion means its bytes are durable: a
	 * write and an fdatasync of what it wrote in one op (RWF_DSYNC), one
	 * completion (res = bytes written, as ring_write). Until it completes
	 * a crash may keep any 512-byte-grained prefix of it (a torn write),
	 * exactly as for a write whose fdatasync has not completed. It makes
	 * durable only its own range: other unsynced writes of the file need
	 * their own sync. Never linked. */
	int (*ring_write_dsync)(struct pio_ring *r, struct pio_file *f,
				const void *buf, size_t len, uint64_t off,
				uint64_t user_data);
	/* Submits what is queued, then waits until at least one completion,
	 * a wake-up, or timeout_ms (-1 = forever, 0 = poll). Returns the
	 * number of completions copied to out (0..max) or -errno. 0 means a
	 * wake-up, the timeout, or a spurious return (EINTR): callers loop.
	 * Completions beyond `max` stay queued for the next call. */
	int (*ring_wait)(struct pio_ring *r, struct pio_cqe *out, int max,
			 int timeout_ms);
	/* Thread-safe: make a current or next ring_wait return. */
	void (*ring_wake)(struct pio_ring *r);

	void (*destroy)(struct pio *io);
};

struct pio {
	const struct pio_ops *ops;
	/* synchronous operations performed on a shard thread (io_guard.c) */
	_Atomic uint64_t shard_sync[PE_IO_OP_COUNT];
};

/* ---- the shard-thread guard (io_guard.c) ------------------------------------ */

/*
 * "The shard thread never blocks on a disk", made checkable: a shard thread
 * marks itself (pio_thread_mark_shard, a thread-local flag), and every
 * synchronous file operation of a backend (open, pread, pwrite, fdatasync,
 * truncate, rename, unlink, mkdir, fsync_dir, list: each may wait for the
 * device or the file system's journal) calls pio_guard_note first, which
 * counts it in io->shard_sync[op] when the calling thread is so marked and
 * logs the first one of each kind with its path. Not counted: close and
 * size (fstat), and the ring, which is how a shard thread is meant to reach
 * the disk. pe_shard_sync_io reads the counters.
 */
void pio_thread_mark_shard(bool on);
bool pio_thread_is_shard(void);
void pio_guard_note(struct pio *io, enum pe_io_op op, const char *path);

/* ---- atomic file replacement (io_file.c) ----------------------------------- */

/*
 * The one way the engine makes a file appear or change atomically:
 *
 *   write tmp -> fdatasync(tmp) -> rename(tmp, path) -> fsync(dir)
 *
 * After a crash at any point, `path` holds either its old contents (or is
 * absent) or all of the new bytes; never a prefix. A leftover tmp is the
 * caller's to clean at open.
 *
 * pio_file_replace: the whole sequence for a buffer in memory. tmp is
 *   removed first (a leftover from a crash) and created exclusively; on
 *   failure tmp is unlinked and path is untouched (or, if only the
 *   directory fsync failed, may already be the new file: the error still
 *   says the change is not known durable).
 * pio_file_write_tmp: the first two steps alone (tmp removed first, created
 *   exclusively, written, fdatasync'd; unlinked on failure), for a caller
 *   that renames it itself because a later directory fsync covers the
 *   rename (the WAL's high-water mark at a segment roll).
 * pio_file_publish: the last two steps for a tmp file the caller wrote and
 *   fdatasync'd itself (segments, WAL spares).
 * pio_file_remove: unlink(path) -> fsync(dir), so the removal is durable;
 *   -PARLEY_ENOTFOUND when path does not exist.
 * All return 0 or a negative errno; any thread.
 */
int pio_file_replace(struct pio *io, const char *dir, const char *tmp,
		     const char *path, const void *buf, size_t len);
int pio_file_write_tmp(struct pio *io, const char *tmp, const void *buf,
		       size_t len);
int pio_file_publish(struct pio *io, const char *dir, const char *tmp,
		     const char *path);
int pio_file_remove(struct pio *io, const char *dir, const char *path);

/*
 * pio_dir_ensure: mkdir(path) if absent, then fsync its parent directory,
 * so the directory's entry survives a power loss. The parent is synced
 * also when the directory already existed: a previous run may have died
 * (kill -9) after the mkdir and before any sync, leaving the entry only in
 * the page cache, and what this run writes inside must not depend on it.
 * Returns 0 or a negative errno; any thread.
 */
int pio_dir_ensure(struct pio *io, const char *path);

/* ---- TEST-ONLY: the sync log (io_synclog.c) --------------------------------- */

/*
 * With PARLEY_TEST_SYNC_LOG=<file> in the environment the io_uring backend
 * records every write issued and completed, every fdatasync and what it
 * covered, every truncate, create, rename, unlink and directory fsync, so
 * that tools/drop-unsynced.py can take from a kill -9'd node's data
 * directory exactly what a power loss could take (docs/CLUSTER.md §4.1).
 * Never for production. pio_synclog_on is false without the variable; the
 * other calls are then not made. Ids come from one process-wide counter.
 * rename / unlink perform the operation (keeping a hard link of what it
 * replaces or removes until its directory is synced) and return 0 or
 * -errno. Any thread.
 */
bool pio_synclog_on(void);
void pio_synclog_abs(const char *path, char *out, size_t cap);
uint64_t pio_synclog_id(void);
void pio_synclog_queue(uint64_t id, uint64_t ino, const char *path,
		       uint64_t off, uint64_t len);
void pio_synclog_done(uint64_t id, int64_t res);
void pio_synclog_sync_begin(uint64_t fid, uint64_t ino, const char *path,
			    const uint64_t *linked, unsigned nlinked);
void pio_synclog_sync_done(uint64_t fid);
void pio_synclog_truncate(uint64_t ino, const char *path, uint64_t size);
void pio_synclog_opened(uint64_t ino, const char *path, int64_t size);
void pio_synclog_created(uint64_t ino, const char *path);
int pio_synclog_rename(const char *from, const char *to);
int pio_synclog_unlink(const char *path);
uint64_t pio_synclog_dir_begin(void);
void pio_synclog_dir_synced(uint64_t seq, const char *dir);

#endif /* PARLEY_ENGINE_IO_H */
