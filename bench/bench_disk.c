/*
 * bench_disk.c — `parley-bench disk`: this disk's floor, measured in the
 * same run as the systems compared against it.
 *
 * What it measures (buffered pwrite(2) then fdatasync(2), one thread):
 *   1. 4 KiB write + fdatasync latency: sequential 4 KiB overwrites in place
 *      of a PRE-ZEROED file (written and fsync'd before timing), wrapping
 *      around. Overwriting allocated blocks makes fdatasync a pure data
 *      flush with no metadata (extent/size) update — the best case, and the
 *      same situation as the engine's pre-zeroed, recycled WAL segments.
 *   2. Sequential write bandwidth with a sync after every write: 1 MiB and
 *      64 KiB writes, each followed by fdatasync, over the same pre-zeroed
 *      file. This is the ceiling for a group-committing log: every batch
 *      costs at least one write+fdatasync.
 *
 * The file lives in a fresh temp directory under --dir and is removed after.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parley_common.h"

#define DISK_FILE_BYTES (128ull << 20) /* pre-zeroed region we overwrite */
#define DISK_ZERO_CHUNK (1u << 20)

static int prezero(int fd, uint64_t bytes)
{
	uint8_t *z = calloc(1, DISK_ZERO_CHUNK);
	if (!z)
		return -ENOMEM;
	int rc = 0;
	for (uint64_t off = 0; off < bytes; off += DISK_ZERO_CHUNK) {
		ssize_t w = pwrite(fd, z, DISK_ZERO_CHUNK, (off_t)off);
		if (w != (ssize_t)DISK_ZERO_CHUNK) {
			rc = w < 0 ? -errno : -EIO;
			break;
		}
	}
	free(z);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	return rc;
}

/* Writes `bs`-byte blocks sequentially (wrapping in the pre-zeroed region),
 * each followed by fdatasync, for `seconds`. Records each round's latency
 * and returns the bytes written / elapsed in *mbs. */
static int sync_loop(int fd, size_t bs, double seconds, struct bench_hist *h,
		     double *mbs, uint64_t *rounds)
{
	uint8_t *buf = aligned_alloc(4096, bs);
	if (!buf)
		return -ENOMEM;
	bench_fill_payload(buf, bs, 42);
	uint64_t off = 0, bytes = 0, n = 0;
	uint64_t t0 = parley_mono_ns();
	uint64_t end = t0 + (uint64_t)(seconds * 1e9);
	uint64_t now = t0;
	int rc = 0;
	while (now < end) {
		if (off + bs > DISK_FILE_BYTES)
			off = 0;
		uint64_t s = parley_mono_ns();
		ssize_t w = pwrite(fd, buf, bs, (off_t)off);
		if (w != (ssize_t)bs) {
			rc = w < 0 ? -errno : -EIO;
			break;
		}
		if (fdatasync(fd) != 0) {
			rc = -errno;
			break;
		}
		now = parley_mono_ns();
		bench_hist_record(h, now - s);
		off += bs;
		bytes += bs;
		n++;
	}
	double el = (double)(now - t0) / 1e9;
	*mbs = el > 0 ? (double)bytes / BENCH_MB / el : 0;
	*rounds = n;
	free(buf);
	return rc;
}

int bench_disk_run(const struct bench_cfg *cfg, struct disk_result *out)
{
	memset(out, 0, sizeof *out);
	bench_hist_init(&out->lat4k);
	bench_hist_init(&out->lat1m);
	bench_hist_init(&out->lat64k);
	char *tmp = bench_mkdtemp(cfg->dir, "disk");
	if (!tmp) {
		int e = -errno;
		fprintf(stderr, "parley-bench: disk: cannot create a temp dir under %s: %s\n",
			cfg->dir, strerror(errno));
		return e;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/floor.dat", tmp);
	int rc = 0;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		fprintf(stderr, "parley-bench: disk: open %s: %s\n", path, strerror(errno));
		goto out;
	}
	if ((rc = prezero(fd, DISK_FILE_BYTES)) != 0) {
		fprintf(stderr, "parley-bench: disk: pre-zeroing %s: %s\n", path,
			strerror(-rc));
		goto out;
	}
	uint64_t rounds = 0;
	double mbs;
	rc = sync_loop(fd, 4096, cfg->seconds, &out->lat4k, &mbs, &rounds);
	if (rc == 0) {
		double el = cfg->seconds;
		out->syncs_per_s = (double)rounds / el;
		rc = sync_loop(fd, 1u << 20, cfg->seconds, &out->lat1m,
			       &out->bw_1m_mbs, &rounds);
	}
	if (rc == 0)
		rc = sync_loop(fd, 64u << 10, cfg->seconds, &out->lat64k,
			       &out->bw_64k_mbs, &rounds);
	if (rc != 0)
		fprintf(stderr, "parley-bench: disk: write/fdatasync on %s: %s\n", path,
			strerror(-rc));
	else
		out->ok = true;
out:
	if (fd >= 0)
		close(fd);
	bench_rmtree(tmp);
	free(tmp);
	return rc;
}

static void print_hist_row(const char *name, const struct bench_hist *h)
{
	printf("| %s | %llu | %.1f | %.1f | %.1f | %.1f |\n", name,
	       (unsigned long long)h->count,
	       (double)bench_hist_quantile(h, 0.50) / 1e3,
	       (double)bench_hist_quantile(h, 0.99) / 1e3,
	       (double)bench_hist_quantile(h, 0.999) / 1e3,
	       (double)h->max_ns / 1e3);
}

void bench_disk_print(const struct disk_result *r)
{
	printf("\n### disk floor (buffered pwrite + fdatasync, pre-zeroed file, "
	       "overwrite in place)\n\n");
	printf("| write+fdatasync | count | p50 µs | p99 µs | p99.9 µs | max µs |\n");
	printf("|---|---:|---:|---:|---:|---:|\n");
	print_hist_row("4 KiB", &r->lat4k);
	print_hist_row("64 KiB", &r->lat64k);
	print_hist_row("1 MiB", &r->lat1m);
	printf("\n| floor | value |\n|---|---:|\n");
	printf("| 4 KiB write+fdatasync rounds/s | %.0f |\n", r->syncs_per_s);
	printf("| sequential bandwidth, 64 KiB writes + fdatasync each | %.1f MB/s |\n",
	       r->bw_64k_mbs);
	printf("| sequential bandwidth, 1 MiB writes + fdatasync each | %.1f MB/s |\n",
	       r->bw_1m_mbs);
	struct bench_json *j = bench_sink();
	if (j) {
		bj_obj(j, NULL);
		bj_str(j, "kind", "disk_floor");
		bj_str(j, "method", "buffered pwrite + fdatasync, pre-zeroed file, overwrite in place");
		bj_hist(j, "write_4k_fdatasync", &r->lat4k);
		bj_hist(j, "write_64k_fdatasync", &r->lat64k);
		bj_hist(j, "write_1m_fdatasync", &r->lat1m);
		bj_num(j, "syncs_4k_per_s", r->syncs_per_s);
		bj_num(j, "bw_64k_fdatasync_mb_per_s", r->bw_64k_mbs);
		bj_num(j, "bw_1m_fdatasync_mb_per_s", r->bw_1m_mbs);
		bj_end(j);
	}
	fflush(stdout);
}
