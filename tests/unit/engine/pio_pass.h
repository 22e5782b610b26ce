/*
 * pio_pass.h — a pass-through I/O backend for the engine unit tests that
 * watch or hold the engine's file operations on their way to the disk
 * (test_shard.c: which thread makes them; test_noblock.c: a staged
 * snapshot file's fdatasync held at a gate). Every operation of
 * pio_pass_ops goes unchanged to the inner backend pio_pass_in; a test
 * copies pio_pass_ops, replaces the operations it watches, and reaches
 * the inner backend through pio_pass_in from them.
 *
 * One inner backend per test process: the ring operations carry no
 * struct pio, so the inner backend is this global, not a field.
 * Ownership: the test creates and frees pio_pass_in; destroy here does
 * nothing. Threads: whatever the inner backend allows (the engine's
 * shard threads, flush workers and read pool all call through).
 */
#ifndef PIO_PASS_H
#define PIO_PASS_H

#include "io.h"

static struct pio *pio_pass_in;

static int pass_open(struct pio *io, const char *path, int flags,
		     struct pio_file **out)
{
	(void)io;
	return pio_pass_in->ops->open(pio_pass_in, path, flags, out);
}
static void pass_close(struct pio *io, struct pio_file *f)
{
	(void)io;
	pio_pass_in->ops->close(pio_pass_in, f);
}
static int64_t pass_pread(struct pio *io, struct pio_file *f, void *buf,
			  size_t len, uint64_t off)
{
	(void)io;
	return pio_pass_in->ops->pread(pio_pass_in, f, buf, len, off);
}
static int pass_pwrite(struct pio *io, struct pio_file *f, const void *buf,
		       size_t len, uint64_t off)
{
	(void)io;
	return pio_pass_in->ops->pwrite(pio_pass_in, f, buf, len, off);
}
static int pass_fdatasync(struct pio *io, struct pio_file *f)
{
	(void)io;
	return pio_pass_in->ops->fdatasync(pio_pass_in, f);
}
static int pass_truncate(struct pio *io, struct pio_file *f, uint64_t size)
{
	(void)io;
	return pio_pass_in->ops->truncate(pio_pass_in, f, size);
}
static int64_t pass_size(struct pio *io, struct pio_file *f)
{
	(void)io;
	return pio_pass_in->ops->size(pio_pass_in, f);
}
static int pass_rename(struct pio *io, const char *from, const char *to)
{
	(void)io;
	return pio_pass_in->ops->rename(pio_pass_in, from, to);
}
static int pass_unlink(struct pio *io, const char *path)
{
	(void)io;
	return pio_pass_in->ops->unlink(pio_pass_in, path);
}
static int pass_mkdir(struct pio *io, const char *path)
{
	(void)io;
	return pio_pass_in->ops->mkdir(pio_pass_in, path);
}
static int pass_fsync_dir(struct pio *io, const char *path)
{
	(void)io;
	return pio_pass_in->ops->fsync_dir(pio_pass_in, path);
}
static int pass_list(struct pio *io, const char *dir, pio_list_cb cb,
		     void *arg)
{
	(void)io;
	return pio_pass_in->ops->list(pio_pass_in, dir, cb, arg);
}
static int pass_lock(struct pio *io, const char *dir, bool ex,
		     int64_t *token)
{
	(void)io;
	return pio_pass_in->ops->lock(pio_pass_in, dir, ex, token);
}
static void pass_unlock(struct pio *io, int64_t token)
{
	(void)io;
	pio_pass_in->ops->unlock(pio_pass_in, token);
}
static int pass_ring_new(struct pio *io, unsigned depth,
			 struct pio_ring **out)
{
	(void)io;
	return pio_pass_in->ops->ring_new(pio_pass_in, depth, out);
}
static void pass_ring_free(struct pio_ring *r)
{
	pio_pass_in->ops->ring_free(r);
}
static int pass_ring_write(struct pio_ring *r, struct pio_file *f,
			   const void *buf, size_t len, uint64_t off,
			   uint64_t ud, bool link)
{
	return pio_pass_in->ops->ring_write(r, f, buf, len, off, ud, link);
}
static int pass_ring_fdatasync(struct pio_ring *r, struct pio_file *f,
			       uint64_t ud)
{
	return pio_pass_in->ops->ring_fdatasync(r, f, ud);
}
static int pass_ring_write_dsync(struct pio_ring *r, struct pio_file *f,
				 const void *buf, size_t len, uint64_t off,
				 uint64_t ud)
{
	return pio_pass_in->ops->ring_write_dsync(r, f, buf, len, off, ud);
}
static int pass_ring_wait(struct pio_ring *r, struct pio_cqe *out, int max,
			  int timeout_ms)
{
	return pio_pass_in->ops->ring_wait(r, out, max, timeout_ms);
}
static void pass_ring_wake(struct pio_ring *r)
{
	pio_pass_in->ops->ring_wake(r);
}
static void pass_destroy(struct pio *io)
{
	(void)io;
}

static const struct pio_ops pio_pass_ops = {
	.open = pass_open, .close = pass_close, .pread = pass_pread,
	.pwrite = pass_pwrite, .fdatasync = pass_fdatasync,
	.truncate = pass_truncate, .size = pass_size, .rename = pass_rename,
	.unlink = pass_unlink, .mkdir = pass_mkdir,
	.fsync_dir = pass_fsync_dir, .list = pass_list, .lock = pass_lock,
	.unlock = pass_unlock, .ring_new = pass_ring_new,
	.ring_free = pass_ring_free, .ring_write = pass_ring_write,
	.ring_fdatasync = pass_ring_fdatasync,
	.ring_write_dsync = pass_ring_write_dsync, .ring_wait = pass_ring_wait,
	.ring_wake = pass_ring_wake, .destroy = pass_destroy,
};

#endif /* PIO_PASS_H */
