/*
 * io_guard.c — the shard-thread guard (io.h): a thread-local flag that
 * shard threads set on themselves, and the per-backend counters of
 * synchronous file operations made on a thread so flagged.
 *
 * Invariant checked by it: while a shard thread serves (shard_main's loop),
 * every counter stays 0; the only way it reaches a disk is its ring.
 * tests/unit/engine/test_noblock.c asserts it on real files.
 *
 * Threads: pio_thread_mark_shard / pio_thread_is_shard act on the calling
 * thread; pio_guard_note from any thread (relaxed atomics).
 */
#include <stdio.h>

#include "io.h"
#include "parley_common.h"

static _Thread_local bool tl_shard;

void pio_thread_mark_shard(bool on)
{
	tl_shard = on;
}

bool pio_thread_is_shard(void)
{
	return tl_shard;
}

void pio_guard_note(struct pio *io, enum pe_io_op op, const char *path)
{
	if (!tl_shard || !io || (unsigned)op >= PE_IO_OP_COUNT)
		return;
	uint64_t n = atomic_fetch_add_explicit(&io->shard_sync[op], 1,
					       memory_order_relaxed);
	if (n == 0)
		PLOG_W("io", "synchronous file operation on a shard thread",
		       "op=%s path=%s", pe_io_op_name(op), path ? path : "-");
}

const char *pe_io_op_name(enum pe_io_op op)
{
	static const char *const names[PE_IO_OP_COUNT] = {
		"open", "pread", "pwrite", "fdatasync", "truncate",
		"rename", "unlink", "mkdir", "fsync_dir", "list"};
	return (unsigned)op < PE_IO_OP_COUNT ? names[op] : NULL;
}
