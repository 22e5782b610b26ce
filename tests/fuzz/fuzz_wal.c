/*
 * fuzz_wal.c — WAL recovery on arbitrary bytes never crashes, hangs or
 * reads out of bounds, and never serves a record it could not verify.
 *
 * Input byte 0 picks the mode:
 *   even: the rest is a raw segment file (mostly rejected at checksums:
 *         exercises the scanner's bounds and torn-tail logic);
 *   odd:  the rest describes records ([u8 partition][u8 flags][u8 len]
 *         [len bytes body]...) that are laid out with valid checksums, so
 *         the engine's command decoder and apply path see fuzzed bodies;
 *         flag bits corrupt a header, a body, or end the batch.
 * The segment is written to an in-memory file system under a valid
 * MANIFEST and recovered with pe_open(read_only), then every partition's
 * status and one stream are read. It is also scanned as a replicated
 * engine would (repair_from_peers: damaged bodies and lost ranges after a
 * damaged record header taken), as the last segment and as an earlier
 * one: the resync never reads out of bounds, every lost range lies in the
 * file and after the previous one, and every record handed over fits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "parley_engine.h"
#include "wal.h"

static void put_file(struct pio *io, const char *path, const void *b, size_t n)
{
	struct pio_file *f;
	if (io->ops->open(io, path, PIO_CREATE, &f))
		abort();
	if (n && io->ops->pwrite(io, f, b, n, 0))
		abort();
	io->ops->fdatasync(io, f);
	io->ops->close(io, f);
}

static size_t build_structured(const uint8_t *d, size_t n, uint8_t *seg,
			       size_t cap)
{
	wal_encode_seg_header(seg, 1, sizeof seg);
	size_t off = WAL_BLOCK;
	uint32_t batch = 1, start = WAL_BLOCK;
	uint64_t index[4] = {0};
	size_t i = 0;
	while (i + 3 <= n) {
		uint8_t part = d[i] % 4, flags = d[i + 1], len = d[i + 2];
		i += 3;
		if (i + len > n)
			len = (uint8_t)(n - i);
		if (off + WAL_REC_HDR + len + WAL_BLOCK > cap)
			break;
		if (flags & 4) { /* end the batch: next starts on a block */
			off = (off + WAL_BLOCK - 1) / WAL_BLOCK * WAL_BLOCK;
			batch++;
			start = (uint32_t)off;
		}
		wal_encode_record(seg + off, 1, batch, start, part, 1, 1,
				  (flags & 8) ? index[part] + 2 : ++index[part],
				  d + i, len);
		if (flags & 1)
			seg[off + 5] ^= 0x10; /* header corrupt */
		if ((flags & 2) && len)
			seg[off + WAL_REC_HDR] ^= 1; /* body corrupt */
		off = (off + WAL_REC_HDR + len + 7) / 8 * 8;
		i += len;
	}
	return off;
}

struct scan_ck {
	uint64_t size, last_end;
};

static int ck_record(void *arg, const struct wal_rec *r)
{
	struct scan_ck *c = arg;
	if (r->off < c->last_end || r->off + WAL_REC_HDR + r->len > c->size)
		abort();
	return 0;
}

static int ck_damaged(void *arg, const struct wal_rec *r)
{
	return ck_record(arg, r);
}

static int ck_lost(void *arg, const char *file, uint64_t off, uint64_t end)
{
	struct scan_ck *c = arg;
	(void)file;
	if (off < WAL_BLOCK || end <= off || end > c->size || off < c->last_end)
		abort();
	c->last_end = end;
	return 0;
}

static void ck_corrupt(void *arg, int64_t p, const char *file, uint64_t off,
		       const char *why)
{
	(void)arg;
	(void)p;
	(void)file;
	(void)off;
	(void)why;
}

/* The replicated engine's scan (wal_recovery.lost, .damaged). */
static void scan_replicated(const uint8_t *seg, size_t n)
{
	for (int last = 0; last < 2; last++) {
		struct scan_ck c = {.size = n};
		struct wal_recovery rec = {.record = ck_record,
					   .corrupt = ck_corrupt,
					   .damaged = ck_damaged,
					   .lost = ck_lost,
					   .repair_from_peers = true,
					   .arg = &c};
		uint64_t tail;
		uint32_t mb;
		(void)wal_scan_buffer(seg, n, "fuzz", last, &rec, &tail, &mb);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static uint8_t seg[256 * 1024];
	size_t seglen;
	memset(seg, 0, sizeof seg);
	if (data[0] & 1) {
		seglen = build_structured(data + 1, size - 1, seg, sizeof seg);
	} else {
		seglen = PARLEY_MIN(size - 1, sizeof seg);
		memcpy(seg, data + 1, seglen);
		if (seglen >= 32 && (data[0] & 2)) /* keep a valid header */
			wal_encode_seg_header(seg, 1, sizeof seg);
		if (seglen < WAL_BLOCK && (data[0] & 2))
			seglen = WAL_BLOCK;
	}
	parley_log_set_level(PLOG_ERROR + 1);
	scan_replicated(seg, seglen);
	/* one directory with a manifest, made once; each input replaces its WAL */
	static struct pio *io;
	struct pe_engine *e;
	struct pe_options o = {.dir = "/d", .partitions = 4, .shards = 1,
			       .wal_segment_bytes = 16u << 20};
	if (!io) {
		io = pio_mem_new(1);
		o.io = io;
		if (pe_open(&o, &e))
			abort();
		pe_close(e);
	}
	o.io = io;
	io->ops->unlink(io, "/d/wal/0/wal-0000000000000001.log");
	put_file(io, "/d/wal/0/wal-0000000000000001.log", seg, seglen);
	o.read_only = true;
	o.partitions = 0;
	if (pe_open(&o, &e) == 0) {
		for (uint32_t p = 0; p < 4; p++) {
			struct pe_partition_status st;
			if (pe_partition_status(e, p, &st))
				abort();
		}
		struct pe_read_req q = {.key = "k", .klen = 1, .from = 1,
					.dir = PE_FORWARD, .limit = 10};
		struct pe_entry *es;
		uint32_t n;
		if (pe_read_sync(e, &q, &es, &n, NULL) == 0)
			free(es);
		pe_close(e);
	}
	return 0;
}
