/*
 * bench_commit.c — `parley-bench commit-floor`: what one durable 4 KiB
 * commit costs on this disk, by each way a log can make it durable, in
 * the same minutes (docs/SERVER.md, "What a SEND costs": the WAL's commit
 * modes, engine/log/wal.h enum wal_commit).
 *
 * Every method writes 4 KiB blocks sequentially over a PRE-ZEROED file
 * (written and synced before timing, wrapping around), one commit at a
 * time from this thread, and times each from its submission to "durable":
 *
 *   sync    pwrite + fdatasync            (the disk floor of `disk` mode)
 *   dsync   pwritev2(RWF_DSYNC)           (one syscall)
 *   direct-sync   O_DIRECT pwrite + fdatasync
 *   direct-dsync  O_DIRECT pwritev2(RWF_DSYNC)
 *   uring-link    io_uring write linked to fdatasync (buffered; the kernel
 *                 runs both on an io-wq worker thread: WAL mode `link`)
 *   uring-dsync   io_uring write with RWF_DSYNC (buffered: `dsync`)
 *   uring-direct-link   O_DIRECT write linked to fdatasync (`direct-link`)
 *   uring-direct-dsync  O_DIRECT write with RWF_DSYNC (`direct`)
 *   uring-direct-nosync O_DIRECT write alone: the device's write without
 *                 the cache flush (a reference, not durable)
 *
 * The methods run interleaved: --repeat rounds (default 5), each running
 * every method for COMMIT_OPS commits in turn, so a neighbour's burst on
 * this shared machine hits all of them alike. Printed per method: p50 and
 * p99 over all rounds, and the median and min–max of the rounds' p50s.
 * Needs a file system with O_DIRECT (not tmpfs): --dir on the disk.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_json.h"
#include "bench_spread.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "parley_common.h"

#define COMMIT_FILE_BYTES (64ull << 20) /* pre-zeroed region */
#define COMMIT_BLOCK 4096u
#define COMMIT_OPS 400u                 /* commits per method per round */
#define COMMIT_MAX_ROUNDS 64u

enum commit_method {
	CM_SYNC,
	CM_DSYNC,
	CM_DIRECT_SYNC,
	CM_DIRECT_DSYNC,
	CM_URING_LINK,
	CM_URING_DSYNC,
	CM_URING_DIRECT_LINK,
	CM_URING_DIRECT_DSYNC,
	CM_URING_DIRECT_NOSYNC,
	CM_COUNT
};

static const char *const cm_name[CM_COUNT] = {
	"sync", "dsync", "direct-sync", "direct-dsync", "uring-link",
	"uring-dsync", "uring-direct-link", "uring-direct-dsync",
	"uring-direct-nosync",
};

static const char *const cm_what[CM_COUNT] = {
	"pwrite + fdatasync",
	"pwritev2 RWF_DSYNC",
	"O_DIRECT pwrite + fdatasync",
	"O_DIRECT pwritev2 RWF_DSYNC",
	"io_uring write -> fdatasync, linked (WAL `link`)",
	"io_uring write RWF_DSYNC (WAL `dsync`)",
	"io_uring O_DIRECT write -> fdatasync (WAL `direct-link`)",
	"io_uring O_DIRECT write RWF_DSYNC (WAL `direct`)",
	"io_uring O_DIRECT write, no sync (not durable)",
};

static bool cm_direct(enum commit_method m)
{
	return m == CM_DIRECT_SYNC || m == CM_DIRECT_DSYNC ||
	       m == CM_URING_DIRECT_LINK || m == CM_URING_DIRECT_DSYNC ||
	       m == CM_URING_DIRECT_NOSYNC;
}

/* Reaps `want` completions; returns 0 or the first failure. */
static int reap(struct io_uring *ring, unsigned want, int expect_write)
{
	int rc = 0;
	for (unsigned i = 0; i < want; i++) {
		struct io_uring_cqe *c;
		int w = io_uring_wait_cqe(ring, &c);
		if (w < 0)
			return w;
		if (c->res < 0 && !rc)
			rc = c->res;
		else if (i == 0 && c->res >= 0 && c->res != expect_write && !rc)
			rc = -EIO;
		io_uring_cqe_seen(ring, c);
	}
	return rc;
}

static int commit_one(enum commit_method m, int fd, struct io_uring *ring,
		      const uint8_t *buf, uint64_t off)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = COMMIT_BLOCK};
	struct io_uring_sqe *q;
	switch (m) {
	case CM_SYNC:
	case CM_DIRECT_SYNC:
		if (pwrite(fd, buf, COMMIT_BLOCK, (off_t)off) != COMMIT_BLOCK)
			return errno ? -errno : -EIO;
		return fdatasync(fd) ? -errno : 0;
	case CM_DSYNC:
	case CM_DIRECT_DSYNC:
		if (pwritev2(fd, &iov, 1, (off_t)off, RWF_DSYNC) != COMMIT_BLOCK)
			return errno ? -errno : -EIO;
		return 0;
	case CM_URING_LINK:
	case CM_URING_DIRECT_LINK:
		q = io_uring_get_sqe(ring);
		io_uring_prep_write(q, fd, buf, COMMIT_BLOCK, off);
		io_uring_sqe_set_flags(q, IOSQE_IO_LINK);
		q = io_uring_get_sqe(ring);
		io_uring_prep_fsync(q, fd, IORING_FSYNC_DATASYNC);
		if (io_uring_submit(ring) < 0)
			return -EIO;
		return reap(ring, 2, COMMIT_BLOCK);
	case CM_URING_DSYNC:
	case CM_URING_DIRECT_DSYNC:
	case CM_URING_DIRECT_NOSYNC:
		q = io_uring_get_sqe(ring);
		io_uring_prep_write(q, fd, buf, COMMIT_BLOCK, off);
		if (m != CM_URING_DIRECT_NOSYNC)
			q->rw_flags = RWF_DSYNC;
		if (io_uring_submit(ring) < 0)
			return -EIO;
		return reap(ring, 1, COMMIT_BLOCK);
	case CM_COUNT:
		break;
	}
	return -EINVAL;
}

static int prezero(int fd)
{
	uint8_t *z = calloc(1, 1u << 20);
	if (!z)
		return -ENOMEM;
	int rc = 0;
	for (uint64_t off = 0; off < COMMIT_FILE_BYTES && !rc; off += 1u << 20)
		if (pwrite(fd, z, 1u << 20, (off_t)off) != (ssize_t)(1u << 20))
			rc = errno ? -errno : -EIO;
	free(z);
	if (!rc && fsync(fd))
		rc = -errno;
	return rc;
}

int bench_commit_floor(const struct bench_cfg *cfg)
{
	unsigned rounds = cfg->repeat > 1 ? cfg->repeat : 5;
	if (rounds > COMMIT_MAX_ROUNDS)
		rounds = COMMIT_MAX_ROUNDS;
	char *tmp = bench_mkdtemp(cfg->dir, "commit");
	if (!tmp) {
		fprintf(stderr, "parley-bench: commit-floor: cannot create a temp dir under %s: %s\n",
			cfg->dir, strerror(errno));
		return -errno;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/commit.dat", tmp);
	int rc = 0, fd = -1, dfd = -1;
	bool ring_ok = false;
	struct io_uring ring;
	uint8_t *buf = aligned_alloc(COMMIT_BLOCK, COMMIT_BLOCK);
	static struct bench_hist all[CM_COUNT], round_h;
	static double p50s[CM_COUNT][COMMIT_MAX_ROUNDS];
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	bench_fill_payload(buf, COMMIT_BLOCK, 7);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || (rc = prezero(fd)) != 0) {
		rc = rc ? rc : -errno;
		fprintf(stderr, "parley-bench: commit-floor: %s: %s\n", path, strerror(-rc));
		goto out;
	}
	dfd = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
	if (dfd < 0) {
		rc = -errno;
		fprintf(stderr, "parley-bench: commit-floor: O_DIRECT on %s: %s (tmpfs? give --dir on a disk)\n",
			path, strerror(errno));
		goto out;
	}
	if ((rc = io_uring_queue_init(8, &ring, 0)) < 0) {
		fprintf(stderr, "parley-bench: commit-floor: io_uring: %s\n", strerror(-rc));
		goto out;
	}
	ring_ok = true;
	for (int m = 0; m < CM_COUNT; m++)
		bench_hist_init(&all[m]);
	uint64_t off = 0;
	for (unsigned r = 0; r < rounds && !rc; r++) {
		for (int m = 0; m < CM_COUNT && !rc; m++) {
			bench_hist_init(&round_h);
			int f = cm_direct((enum commit_method)m) ? dfd : fd;
			for (unsigned i = 0; i < COMMIT_OPS; i++) {
				if (off + COMMIT_BLOCK > COMMIT_FILE_BYTES)
					off = 0;
				uint64_t s = parley_mono_ns();
				rc = commit_one((enum commit_method)m, f, &ring, buf, off);
				if (rc) {
					fprintf(stderr, "parley-bench: commit-floor: %s: %s\n",
						cm_name[m], strerror(-rc));
					break;
				}
				bench_hist_record(&round_h, parley_mono_ns() - s);
				off += COMMIT_BLOCK;
			}
			bench_hist_merge(&all[m], &round_h);
			p50s[m][r] = (double)bench_hist_quantile(&round_h, 0.5) / 1e3;
		}
	}
	if (rc)
		goto out;
	printf("\n### commit floor: one 4 KiB commit at a time, pre-zeroed file, "
	       "%u rounds x %u commits per method, interleaved\n\n", rounds, COMMIT_OPS);
	printf("| method | what | p50 µs | p99 µs | median of round p50s | round p50 min–max |\n");
	printf("|---|---|---:|---:|---:|---:|\n");
	struct bench_json *j = bench_sink();
	if (j) {
		bj_obj(j, NULL);
		bj_str(j, "kind", "commit_floor");
		bj_num(j, "rounds", rounds);
		bj_num(j, "ops_per_round", COMMIT_OPS);
	}
	for (int m = 0; m < CM_COUNT; m++) {
		struct bench_spread sp;
		double v[COMMIT_MAX_ROUNDS];
		memcpy(v, p50s[m], rounds * sizeof v[0]);
		bench_spread(v, rounds, &sp);
		printf("| %s | %s | %.1f | %.1f | %.1f | %.1f–%.1f |\n", cm_name[m],
		       cm_what[m], (double)bench_hist_quantile(&all[m], 0.5) / 1e3,
		       (double)bench_hist_quantile(&all[m], 0.99) / 1e3, sp.median,
		       sp.min, sp.max);
		if (j)
			bj_hist(j, cm_name[m], &all[m]);
	}
	if (j)
		bj_end(j);
	fflush(stdout);
out:
	if (ring_ok)
		io_uring_queue_exit(&ring);
	if (dfd >= 0)
		close(dfd);
	if (fd >= 0)
		close(fd);
	free(buf);
	bench_rmtree(tmp);
	free(tmp);
	return rc;
}
