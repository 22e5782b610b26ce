/*
 * manifest.c — the data directory's MANIFEST: partition and shard counts
 * and the idempotency bounds, fixed when the directory is created.
 *
 * Format (64 bytes, little-endian): u64 magic "PLMANIF1" | u32 version |
 * u32 partitions | u32 shards | u32 pad | u64 idem_window_ms |
 * u32 idem_max | u32 pad | u64 created_ms | u64 pad | u64 xxh3(bytes 0..55).
 * Replaced atomically (temp file, fdatasync, rename, fsync the directory).
 *
 * Threads: pe_open only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define MANIFEST_MAGIC 0x3146494E414D4C50ull /* "PLMANIF1" */
#define MANIFEST_VERSION 1u
#define MANIFEST_SIZE 64u
#define MANIFEST_SEED 0x4D414E4946455354ull

int manifest_read(struct pe_engine *e, bool *exists)
{
	char path[600];
	snprintf(path, sizeof path, "%s/MANIFEST", e->dir);
	struct pio_file *f;
	int rc = e->io->ops->open(e->io, path, 0, &f);
	if (rc == -ENOENT) {
		*exists = false;
		return 0;
	}
	if (rc)
		return rc;
	*exists = true;
	uint8_t b[MANIFEST_SIZE];
	int64_t n = e->io->ops->pread(e->io, f, b, sizeof b, 0);
	e->io->ops->close(e->io, f);
	if (n != (int64_t)sizeof b || le_get64(b) != MANIFEST_MAGIC ||
	    le_get64(b + 56) != parley_xxh3(b, 56, MANIFEST_SEED)) {
		PLOG_E("engine", "MANIFEST unreadable", "dir=%s", e->dir);
		return -PARLEY_ECORRUPT;
	}
	if (le_get32(b + 8) != MANIFEST_VERSION)
		return -PARLEY_EVERSION;
	e->nparts = le_get32(b + 12);
	e->nshards = le_get32(b + 16);
	e->idem_window_ms = le_get64(b + 24);
	e->idem_max = le_get32(b + 32);
	if (!e->nparts || !e->nshards || e->nparts > 65536 || e->nshards > 256)
		return -PARLEY_ECORRUPT;
	return 0;
}

/* The manifest is replaced atomically (pio_file_replace). */
int manifest_write(struct pe_engine *e)
{
	char tmp[600], fin[600];
	snprintf(tmp, sizeof tmp, "%s/MANIFEST.tmp", e->dir);
	snprintf(fin, sizeof fin, "%s/MANIFEST", e->dir);
	uint8_t b[MANIFEST_SIZE] = {0};
	le_put64(b, MANIFEST_MAGIC);
	le_put32(b + 8, MANIFEST_VERSION);
	le_put32(b + 12, e->nparts);
	le_put32(b + 16, e->nshards);
	le_put64(b + 24, e->idem_window_ms);
	le_put32(b + 32, e->idem_max);
	le_put64(b + 40, engine_clock(e)); /* created (the injected clock) */
	le_put64(b + 56, parley_xxh3(b, 56, MANIFEST_SEED));
	return pio_file_replace(e->io, e->dir, tmp, fin, b, sizeof b);
}
