/*
 * io_file.c — atomic file replacement on top of the I/O vtable (io.h):
 * the single implementation of "write a temp file, fdatasync it, rename it
 * over the final name, fsync the directory" used by the MANIFEST, the
 * HISTORY manifest, dictionaries, segments, WAL spares, the WAL's
 * high-water mark and Raft's HARDSTATE; its counterpart for removal; and
 * the one way a directory is made to exist durably (pio_dir_ensure).
 *
 * Threads: any; the backend's synchronous operations only.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "io.h"
#include "parley_common.h"

int pio_file_publish(struct pio *io, const char *dir, const char *tmp,
		     const char *path)
{
	int rc = io->ops->rename(io, tmp, path);
	if (rc)
		return rc;
	return io->ops->fsync_dir(io, dir);
}

int pio_file_write_tmp(struct pio *io, const char *tmp, const void *buf,
		       size_t len)
{
	struct pio_file *f = NULL;
	(void)io->ops->unlink(io, tmp); /* a crash's leftover; ENOENT is fine */
	int rc = io->ops->open(io, tmp, PIO_CREATE | PIO_EXCL, &f);
	if (rc)
		return rc;
	rc = io->ops->pwrite(io, f, buf, len, 0);
	if (!rc)
		rc = io->ops->fdatasync(io, f);
	io->ops->close(io, f);
	if (rc)
		(void)io->ops->unlink(io, tmp);
	return rc;
}

int pio_file_replace(struct pio *io, const char *dir, const char *tmp,
		     const char *path, const void *buf, size_t len)
{
	int rc = pio_file_write_tmp(io, tmp, buf, len);
	if (rc)
		return rc;
	rc = pio_file_publish(io, dir, tmp, path);
	if (rc)
		(void)io->ops->unlink(io, tmp);
	return rc;
}

int pio_file_remove(struct pio *io, const char *dir, const char *path)
{
	int rc = io->ops->unlink(io, path);
	if (rc == -ENOENT)
		return -PARLEY_ENOTFOUND;
	if (rc)
		return rc;
	return io->ops->fsync_dir(io, dir);
}

int pio_dir_ensure(struct pio *io, const char *path)
{
	int rc = io->ops->mkdir(io, path);
	if (rc && rc != -EEXIST)
		return rc;
	/* The parent: "/" for "/x", "." for "x", else everything before the
	 * last '/'. */
	char parent[1024];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(parent, sizeof parent, ".");
	else if (slash == path)
		snprintf(parent, sizeof parent, "/");
	else if ((size_t)(slash - path) < sizeof parent)
		snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path);
	else
		return -ENAMETOOLONG;
	return io->ops->fsync_dir(io, parent);
}
