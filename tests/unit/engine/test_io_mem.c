/*
 * test_io_mem.c — contract tests for the in-memory I/O backend
 * (engine/io_mem.c): reads and writes, current vs durable bytes, crashes
 * with and without torn writes, every fault kind on the sync and ring paths,
 * linked-op cancellation, bit flips, namespace ops and cross-thread wake-up.
 *
 * Randomised tests print their seed (PARLEY_SEED overrides it).
 * Single-threaded except the wake-up test, which uses one helper thread.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

static struct pio *io;

static void setup(void)
{
	io = pio_mem_new(1);
	cr_assert_not_null(io);
	cr_assert_eq(io->ops->mkdir(io, "/d"), 0);
}
static void teardown(void)
{
	pio_free(io);
	io = NULL;
}

TestSuite(io_mem, .init = setup, .fini = teardown);

static struct pio_file *open_file(const char *path, int flags)
{
	struct pio_file *f = NULL;
	cr_assert_eq(io->ops->open(io, path, flags, &f), 0, "open %s", path);
	cr_assert_not_null(f);
	return f;
}

static void expect_bytes(struct pio_file *f, uint64_t off, const void *want,
			 size_t len)
{
	uint8_t buf[8192];
	cr_assert(len <= sizeof(buf));
	cr_assert_eq(io->ops->pread(io, f, buf, len, off), (int64_t)len);
	cr_assert_arr_eq(buf, want, len);
}

Test(io_mem, write_read_overwrite_extend)
{
	struct pio_file *f = open_file("/d/a", PIO_CREATE);
	cr_assert_eq(io->ops->size(io, f), 0);
	cr_assert_eq(io->ops->pwrite(io, f, "hello", 5, 0), 0);
	expect_bytes(f, 0, "hello", 5);
	cr_assert_eq(io->ops->pwrite(io, f, "J", 1, 0), 0);
	expect_bytes(f, 0, "Jello", 5);
	/* extend with a hole: the gap reads as zeros */
	cr_assert_eq(io->ops->pwrite(io, f, "xy", 2, 10), 0);
	cr_assert_eq(io->ops->size(io, f), 12);
	expect_bytes(f, 0, "Jello\0\0\0\0\0xy", 12);
	/* short read only at end of file, 0 beyond */
	char buf[32];
	cr_assert_eq(io->ops->pread(io, f, buf, sizeof(buf), 8), 4);
	cr_assert_eq(io->ops->pread(io, f, buf, sizeof(buf), 100), 0);
	cr_assert_eq(pio_mem_file_size(io, "/d/a"), 12);
	/* truncate both ways */
	cr_assert_eq(io->ops->truncate(io, f, 3), 0);
	cr_assert_eq(io->ops->size(io, f), 3);
	cr_assert_eq(io->ops->truncate(io, f, 6), 0);
	expect_bytes(f, 0, "Jel\0\0\0", 6);
	io->ops->close(io, f);
}

Test(io_mem, open_flags)
{
	struct pio_file *f = NULL;
	cr_assert_eq(io->ops->open(io, "/d/x", 0, &f), -ENOENT);
	cr_assert_eq(io->ops->open(io, "/nodir/x", PIO_CREATE, &f), -ENOENT);
	f = open_file("/d/x", PIO_CREATE | PIO_EXCL);
	io->ops->close(io, f);
	cr_assert_eq(io->ops->open(io, "/d/x", PIO_CREATE | PIO_EXCL, &f),
		     -EEXIST);
	cr_assert_eq(io->ops->open(io, "/d", 0, &f), -EISDIR);
	f = open_file("/d//x", 0); /* normalised path */
	io->ops->close(io, f);
	cr_assert_eq(pio_mem_file_size(io, "/d/nope"), -ENOENT);
}

Test(io_mem, crash_drops_unsynced)
{
	struct pio_file *f = open_file("/d/a", PIO_CREATE);
	cr_assert_eq(io->ops->pwrite(io, f, "synced", 6, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	cr_assert_eq(io->ops->pwrite(io, f, "SY", 2, 0), 0);
	cr_assert_eq(io->ops->pwrite(io, f, "more", 4, 6), 0);
	expect_bytes(f, 0, "SYncedmore", 10);
	pio_mem_crash(io, false);
	cr_assert_eq(io->ops->size(io, f), 6);
	expect_bytes(f, 0, "synced", 6);
	/* a file never synced comes back empty but present (metadata durable) */
	struct pio_file *g = open_file("/d/b", PIO_CREATE);
	cr_assert_eq(io->ops->pwrite(io, g, "lost", 4, 0), 0);
	pio_mem_crash(io, false);
	cr_assert_eq(pio_mem_file_size(io, "/d/b"), 0);
	io->ops->close(io, f);
	io->ops->close(io, g);
}

static uint64_t test_seed(void)
{
	const char *s = getenv("PARLEY_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 0) : parley_mono_ns();
	fprintf(stderr, "test_io_mem seed=%llu\n", (unsigned long long)seed);
	return seed;
}

/* Random writes + syncs + torn crashes, against a model: after the crash
 * every byte equals either the synced value or (only inside the unsynced
 * region, as one prefix ending at a 512 boundary or the region's end) the
 * written value. */
Test(io_mem, tear_keeps_aligned_prefix_of_unsynced_only)
{
	uint64_t seed = test_seed();
	struct parley_rng rng = {seed};
	enum { MAX = 16384 };
	static uint8_t synced[MAX], written[MAX], got[MAX];
	for (int round = 0; round < 200; round++) {
		pio_free(io);
		io = pio_mem_new(seed + (uint64_t)round);
		cr_assert_not_null(io);
		struct pio_file *f = open_file("/t", PIO_CREATE);
		size_t slen = parley_rng_below(&rng, 8192);
		for (size_t i = 0; i < slen; i++)
			synced[i] = (uint8_t)parley_rng_next(&rng);
		cr_assert_eq(io->ops->pwrite(io, f, synced, slen, 0), 0);
		cr_assert_eq(io->ops->fdatasync(io, f), 0);
		memcpy(written, synced, slen);
		size_t wlen = slen;
		/* unsynced writes: mostly appends, sometimes overwrites */
		size_t lo = SIZE_MAX, hi = 0;
		int nw = 1 + (int)parley_rng_below(&rng, 4);
		for (int k = 0; k < nw; k++) {
			size_t off = parley_rng_below(&rng, 4) == 0 && wlen > 0
					     ? parley_rng_below(&rng, wlen)
					     : wlen;
			size_t len = 1 + parley_rng_below(&rng, 2000);
			uint8_t b[2000];
			for (size_t i = 0; i < len; i++)
				b[i] = (uint8_t)(parley_rng_next(&rng) | 1);
			cr_assert_eq(io->ops->pwrite(io, f, b, len, off), 0);
			if (off > wlen)
				memset(written + wlen, 0, off - wlen);
			memcpy(written + off, b, len);
			wlen = PARLEY_MAX(wlen, off + len);
			lo = PARLEY_MIN(lo, off);
			hi = PARLEY_MAX(hi, off + len);
		}
		pio_mem_crash(io, true);
		int64_t n = io->ops->size(io, f);
		cr_assert(n >= (int64_t)slen && n <= (int64_t)wlen,
			  "seed=%llu round=%d size %lld not in [%zu,%zu]",
			  (unsigned long long)seed, round, (long long)n, slen,
			  wlen);
		cr_assert_eq(io->ops->pread(io, f, got, (size_t)n, 0), n);
		/* find the cut: first byte in [lo,hi) that is not the written
		 * value, then everything after must be the synced value */
		for (size_t i = 0; i < lo; i++)
			cr_assert_eq(got[i], synced[i], "seed=%llu round=%d "
				     "synced byte %zu altered",
				     (unsigned long long)seed, round, i);
		size_t cut = lo;
		while (cut < (size_t)n && got[cut] == written[cut])
			cut++;
		/* the true cut may be later if synced==written there; it must
		 * be a grain boundary, lo, or hi: check the bytes after it */
		for (size_t i = cut; i < (size_t)n; i++) {
			cr_assert(i < slen && got[i] == synced[i],
				  "seed=%llu round=%d byte %zu is neither "
				  "prefix nor synced",
				  (unsigned long long)seed, round, i);
		}
		if ((size_t)n > slen) {
			/* the file grew: its new end is the cut itself */
			cr_assert((size_t)n % 512 == 0 || (size_t)n == hi,
				  "seed=%llu round=%d torn length %lld not "
				  "at a 512 boundary",
				  (unsigned long long)seed, round,
				  (long long)n);
		}
		/* the crash result is durable: a second crash changes nothing */
		pio_mem_crash(io, true);
		cr_assert_eq(io->ops->size(io, f), n);
		uint8_t again[MAX];
		cr_assert_eq(io->ops->pread(io, f, again, (size_t)n, 0), n);
		cr_assert_arr_eq(again, got, (size_t)n);
		io->ops->close(io, f);
	}
}

Test(io_mem, tear_varies_with_seed_and_replays)
{
	/* Same seed -> same outcome; across seeds more than one outcome. */
	int64_t sizes[16];
	bool differ = false;
	for (int s = 0; s < 16; s++) {
		for (int rep = 0; rep < 2; rep++) {
			struct pio *m = pio_mem_new((uint64_t)s);
			struct pio_file *f = NULL;
			cr_assert_eq(m->ops->open(m, "/f", PIO_CREATE, &f), 0);
			static uint8_t z[8192];
			memset(z, 0xab, sizeof(z));
			cr_assert_eq(m->ops->pwrite(m, f, z, sizeof(z), 0), 0);
			pio_mem_crash(m, true);
			int64_t sz = pio_mem_file_size(m, "/f");
			cr_assert(sz >= 0 && sz <= 8192 && sz % 512 == 0);
			if (rep == 0)
				sizes[s] = sz;
			else
				cr_assert_eq(sz, sizes[s], "seed %d not replayed",
					     s);
			m->ops->close(m, f);
			pio_free(m);
		}
		if (s > 0 && sizes[s] != sizes[0])
			differ = true;
	}
	cr_assert(differ, "16 seeds all tore at the same point");
}

Test(io_mem, flip_bit)
{
	struct pio_file *f = open_file("/d/a", PIO_CREATE);
	cr_assert_eq(io->ops->pwrite(io, f, "\x00\x00\x00", 3, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	cr_assert_eq(pio_mem_flip_bit(io, "/d/a", 1, 3), 0);
	expect_bytes(f, 0, "\x00\x08\x00", 3);
	pio_mem_crash(io, false); /* flipped in durable bytes too */
	expect_bytes(f, 0, "\x00\x08\x00", 3);
	cr_assert_eq(pio_mem_flip_bit(io, "/d/a", 1, 3), 0);
	expect_bytes(f, 0, "\x00\x00\x00", 3);
	cr_assert_eq(pio_mem_flip_bit(io, "/d/none", 0, 0), -ENOENT);
	cr_assert_eq(pio_mem_flip_bit(io, "/d/a", 3, 0), -EINVAL);
	cr_assert_eq(pio_mem_flip_bit(io, "/d/a", 0, 8), -EINVAL);
	io->ops->close(io, f);
}

Test(io_mem, faults_sync_path)
{
	struct pio_file *f = open_file("/d/a", PIO_CREATE);
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 2);
	cr_assert_eq(io->ops->pwrite(io, f, "a", 1, 0), -EIO);
	cr_assert_eq(io->ops->pwrite(io, f, "a", 1, 0), -EIO);
	cr_assert_eq(io->ops->size(io, f), 0, "failed write changed file");
	cr_assert_eq(io->ops->pwrite(io, f, "a", 1, 0), 0);

	pio_mem_inject(io, PIO_FAULT_ENOSPC, 1);
	cr_assert_eq(io->ops->pwrite(io, f, "b", 1, 1), -ENOSPC);
	cr_assert_eq(io->ops->size(io, f), 1);
	cr_assert_eq(io->ops->pwrite(io, f, "b", 1, 1), 0);

	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	cr_assert_eq(io->ops->fdatasync(io, f), -EIO);
	pio_mem_crash(io, false);
	cr_assert_eq(io->ops->size(io, f), 0, "failed fsync made data durable");
	cr_assert_eq(io->ops->pwrite(io, f, "ab", 2, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	pio_mem_crash(io, false);
	expect_bytes(f, 0, "ab", 2);
	io->ops->close(io, f);
}

Test(io_mem, fault_scope_aims_at_matching_paths)
{
	struct pio_file *w = open_file("/d/wal-1", PIO_CREATE);
	struct pio_file *h = open_file("/d/seg-1", PIO_CREATE);
	pio_mem_fault_scope(io, "/wal-");
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 1);
	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	/* other files neither fail nor use the counts up */
	cr_assert_eq(io->ops->pwrite(io, h, "h", 1, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, h), 0);
	cr_assert_eq(io->ops->pwrite(io, w, "w", 1, 0), -EIO);
	cr_assert_eq(io->ops->pwrite(io, w, "w", 1, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, w), -EIO);
	cr_assert_eq(io->ops->fdatasync(io, w), 0);
	pio_mem_fault_scope(io, NULL);
	pio_mem_inject(io, PIO_FAULT_ENOSPC, 1);
	cr_assert_eq(io->ops->pwrite(io, h, "h", 1, 1), -ENOSPC);
	io->ops->close(io, w);
	io->ops->close(io, h);
}

/* Strict directories: a namespace change survives a crash only after an
 * fsync of its directory; the rest is undone, newest first. */
Test(io_mem, strict_dirs_undo_unsynced_namespace_changes)
{
	cr_assert_eq(io->ops->fsync_dir(io, "/"), 0); /* "/d" is durable */
	pio_mem_strict_dirs(io, true);
	/* create: gone unless the directory was synced */
	struct pio_file *f = open_file("/d/kept", PIO_CREATE);
	cr_assert_eq(io->ops->pwrite(io, f, "k", 1, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	cr_assert_eq(io->ops->fsync_dir(io, "/d"), 0);
	io->ops->close(io, f);
	f = open_file("/d/lost", PIO_CREATE);
	cr_assert_eq(io->ops->fdatasync(io, f), 0); /* the file, not its entry */
	io->ops->close(io, f);
	/* tmp -> final rename over an existing file, not synced */
	f = open_file("/d/tmp", PIO_CREATE);
	cr_assert_eq(io->ops->pwrite(io, f, "new", 3, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);
	cr_assert_eq(io->ops->rename(io, "/d/tmp", "/d/kept"), 0);
	/* a new directory with a synced file in it, parent not synced */
	cr_assert_eq(io->ops->mkdir(io, "/d/sub"), 0);
	f = open_file("/d/sub/x", PIO_CREATE);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	cr_assert_eq(io->ops->fsync_dir(io, "/d/sub"), 0);
	io->ops->close(io, f);
	pio_mem_crash(io, false);
	cr_assert_eq(pio_mem_file_size(io, "/d/lost"), -ENOENT);
	cr_assert_eq(pio_mem_file_size(io, "/d/tmp"), -ENOENT,
		     "rename undone, and the tmp's create too");
	cr_assert_eq(pio_mem_file_size(io, "/d/kept"), 1, "old file back");
	cr_assert_eq(pio_mem_file_size(io, "/d/sub/x"), -ENOENT,
		     "a directory's entry lost takes its files along");
	/* unlink: undone until synced; then durable */
	cr_assert_eq(io->ops->unlink(io, "/d/kept"), 0);
	pio_mem_crash(io, false);
	cr_assert_eq(pio_mem_file_size(io, "/d/kept"), 1, "unlink undone");
	cr_assert_eq(io->ops->unlink(io, "/d/kept"), 0);
	cr_assert_eq(io->ops->fsync_dir(io, "/d"), 0);
	pio_mem_crash(io, false);
	cr_assert_eq(pio_mem_file_size(io, "/d/kept"), -ENOENT);
	/* the synced rename survives, over the old file */
	f = open_file("/d/a.tmp", PIO_CREATE);
	cr_assert_eq(io->ops->pwrite(io, f, "AA", 2, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);
	cr_assert_eq(pio_file_publish(io, "/d", "/d/a.tmp", "/d/a"), 0);
	pio_mem_crash(io, false);
	cr_assert_eq(pio_mem_file_size(io, "/d/a"), 2);
	cr_assert_eq(pio_mem_file_size(io, "/d/a.tmp"), -ENOENT);
	/* pio_dir_ensure makes the new directory's entry durable */
	cr_assert_eq(pio_dir_ensure(io, "/d/sub2"), 0);
	cr_assert_eq(pio_dir_ensure(io, "/d/sub2"), 0); /* already there */
	pio_mem_crash(io, false);
	struct pio_file *g = NULL;
	cr_assert_eq(io->ops->open(io, "/d/sub2/y", PIO_CREATE, &g), 0,
		     "directory survived");
	io->ops->close(io, g);
}

static int ring_collect(struct pio_ring *r, struct pio *m,
			struct pio_cqe *out, int want)
{
	int got = 0;
	while (got < want) {
		int n = m->ops->ring_wait(r, out + got, want - got, 0);
		cr_assert(n >= 0);
		if (n == 0)
			break;
		got += n;
	}
	return got;
}

Test(io_mem, ring_order_and_faults)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 8, &r), 0);
	struct pio_file *f = open_file("/d/w", PIO_CREATE);
	cr_assert_eq(io->ops->ring_write(r, f, "abcd", 4, 0, 1, false), 0);
	cr_assert_eq(io->ops->ring_write(r, f, "efgh", 4, 4, 2, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 3), 0);
	/* nothing runs until ring_wait */
	cr_assert_eq(io->ops->size(io, f), 0);
	struct pio_cqe c[8];
	cr_assert_eq(ring_collect(r, io, c, 3), 3);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(c[i].user_data, (uint64_t)i + 1);
	cr_assert_eq(c[0].res, 4);
	cr_assert_eq(c[1].res, 4);
	cr_assert_eq(c[2].res, 0);
	pio_mem_crash(io, false);
	expect_bytes(f, 0, "abcdefgh", 8);

	/* write EIO on the ring, with link: the fsync is cancelled */
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 1);
	cr_assert_eq(io->ops->ring_write(r, f, "XXXX", 4, 0, 10, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 11), 0);
	cr_assert_eq(io->ops->ring_write(r, f, "YY", 2, 8, 12, false), 0);
	cr_assert_eq(ring_collect(r, io, c, 3), 3);
	cr_assert_eq(c[0].user_data, 10);
	cr_assert_eq(c[0].res, -EIO);
	cr_assert_eq(c[1].user_data, 11);
	cr_assert_eq(c[1].res, -ECANCELED);
	cr_assert_eq(c[2].user_data, 12);
	cr_assert_eq(c[2].res, 2, "unlinked op after the chain must run");
	expect_bytes(f, 0, "abcdefghYY", 10);

	/* ENOSPC on the ring: a chain of three, cancellation propagates */
	pio_mem_inject(io, PIO_FAULT_ENOSPC, 1);
	cr_assert_eq(io->ops->ring_write(r, f, "Z", 1, 0, 20, true), 0);
	cr_assert_eq(io->ops->ring_write(r, f, "Z", 1, 1, 21, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 22), 0);
	cr_assert_eq(ring_collect(r, io, c, 3), 3);
	cr_assert_eq(c[0].res, -ENOSPC);
	cr_assert_eq(c[1].res, -ECANCELED);
	cr_assert_eq(c[2].res, -ECANCELED);
	expect_bytes(f, 0, "ab", 2);

	/* fsync EIO on the ring: nothing becomes durable */
	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	cr_assert_eq(io->ops->ring_write(r, f, "Q", 1, 0, 30, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 31), 0);
	cr_assert_eq(ring_collect(r, io, c, 2), 2);
	cr_assert_eq(c[0].res, 1);
	cr_assert_eq(c[1].res, -EIO);
	pio_mem_crash(io, false);
	expect_bytes(f, 0, "abcdefgh", 8);
	cr_assert_eq(io->ops->size(io, f), 8);

	io->ops->close(io, f);
	io->ops->ring_free(r);
}

Test(io_mem, ring_depth_max_and_reserved)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 4, &r), 0);
	struct pio_file *f = open_file("/d/w", PIO_CREATE);
	cr_assert_eq(io->ops->ring_write(r, f, "a", 1, 0, PIO_UDATA_RESERVED,
					 false), -EINVAL);
	for (uint64_t i = 0; i < 4; i++)
		cr_assert_eq(io->ops->ring_write(r, f, "a", 1, i, i, false), 0);
	cr_assert_eq(io->ops->ring_write(r, f, "a", 1, 9, 9, false), -EBUSY);
	struct pio_cqe c[4];
	/* max=1: the rest stay for later calls, in order */
	cr_assert_eq(io->ops->ring_wait(r, c, 1, -1), 1);
	cr_assert_eq(c[0].user_data, 0);
	/* completed-but-unreaped still count against depth */
	cr_assert_eq(io->ops->ring_write(r, f, "b", 1, 4, 4, false), 0);
	cr_assert_eq(io->ops->ring_write(r, f, "b", 1, 5, 5, false), -EBUSY);
	cr_assert_eq(io->ops->ring_wait(r, c, 2, 0), 2);
	cr_assert_eq(c[0].user_data, 1);
	cr_assert_eq(c[1].user_data, 2);
	cr_assert_eq(io->ops->ring_wait(r, c, 4, 0), 2);
	cr_assert_eq(c[0].user_data, 3);
	cr_assert_eq(c[1].user_data, 4);
	cr_assert_eq(io->ops->ring_wait(r, c, 4, 0), 0);
	cr_assert_eq(io->ops->ring_wait(r, c, 4, 10), 0); /* times out */
	io->ops->close(io, f);
	io->ops->ring_free(r);
}

struct waker {
	struct pio *io;
	struct pio_ring *r;
};
static void *wake_thread(void *arg)
{
	struct waker *w = arg;
	usleep(20000);
	w->io->ops->ring_wake(w->r);
	return NULL;
}

Test(io_mem, wake_from_other_thread, .timeout = 30)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 4, &r), 0);
	struct waker w = {io, r};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, wake_thread, &w), 0);
	struct pio_cqe c[4];
	/* would block forever without the wake (the test timeout catches it) */
	cr_assert_eq(io->ops->ring_wait(r, c, 4, -1), 0);
	pthread_join(t, NULL);
	/* a wake before the wait is not lost */
	io->ops->ring_wake(r);
	cr_assert_eq(io->ops->ring_wait(r, c, 4, -1), 0);
	io->ops->ring_free(r);
}

struct names {
	char buf[8][32];
	int n;
};
static int collect_name(void *arg, const char *name)
{
	struct names *ns = arg;
	cr_assert(ns->n < 8);
	snprintf(ns->buf[ns->n++], 32, "%s", name);
	return 0;
}
static int stop_after_one(void *arg, const char *name)
{
	(*(int *)arg)++;
	return 7;
}

Test(io_mem, namespace_ops)
{
	cr_assert_eq(io->ops->mkdir(io, "/d"), -EEXIST);
	cr_assert_eq(io->ops->mkdir(io, "/x/y"), -ENOENT);
	cr_assert_eq(io->ops->mkdir(io, "/d/sub"), 0);
	struct pio_file *f = open_file("/d/b", PIO_CREATE);
	cr_assert_eq(io->ops->pwrite(io, f, "B", 1, 0), 0);
	io->ops->close(io, f);
	f = open_file("/d/a", PIO_CREATE);
	io->ops->close(io, f);
	f = open_file("/d/sub/deep", PIO_CREATE);
	io->ops->close(io, f);

	struct names ns = {0};
	cr_assert_eq(io->ops->list(io, "/d", collect_name, &ns), 0);
	cr_assert_eq(ns.n, 3, "direct children only");
	cr_assert_str_eq(ns.buf[0], "a");
	cr_assert_str_eq(ns.buf[1], "b");
	cr_assert_str_eq(ns.buf[2], "sub");
	int calls = 0;
	cr_assert_eq(io->ops->list(io, "/d", stop_after_one, &calls), 7);
	cr_assert_eq(calls, 1);
	cr_assert_eq(io->ops->list(io, "/nope", collect_name, &ns), -ENOENT);

	/* rename replaces the target; data follows the file */
	cr_assert_eq(io->ops->rename(io, "/d/b", "/d/a"), 0);
	cr_assert_eq(pio_mem_file_size(io, "/d/b"), -ENOENT);
	cr_assert_eq(pio_mem_file_size(io, "/d/a"), 1);
	cr_assert_eq(io->ops->rename(io, "/d/b", "/d/c"), -ENOENT);
	cr_assert_eq(io->ops->rename(io, "/d/a", "/nodir/a"), -ENOENT);

	/* unlink while open: the handle keeps the data */
	f = open_file("/d/a", 0);
	cr_assert_eq(io->ops->unlink(io, "/d/a"), 0);
	cr_assert_eq(io->ops->unlink(io, "/d/a"), -ENOENT);
	cr_assert_eq(io->ops->unlink(io, "/d"), -EISDIR);
	expect_bytes(f, 0, "B", 1);
	io->ops->close(io, f);
	ns.n = 0;
	cr_assert_eq(io->ops->list(io, "/d", collect_name, &ns), 0);
	cr_assert_eq(ns.n, 1);
	cr_assert_str_eq(ns.buf[0], "sub");

	cr_assert_eq(io->ops->fsync_dir(io, "/d"), 0);
	cr_assert_eq(io->ops->fsync_dir(io, "/"), 0);
	cr_assert_eq(io->ops->fsync_dir(io, "/zz"), -ENOENT);
	cr_assert_eq(io->ops->fsync_dir(io, "/d/sub/deep"), -ENOTDIR);
	/* metadata survives a crash */
	pio_mem_crash(io, true);
	cr_assert_eq(pio_mem_file_size(io, "/d/sub/deep"), 0);
}

Test(io_mem, other_backend_hooks_are_noops)
{
	struct pio *u = pio_uring_new();
	cr_assert_not_null(u);
	pio_mem_inject(u, PIO_FAULT_WRITE_EIO, 1);
	pio_mem_crash(u, true);
	cr_assert_eq(pio_mem_flip_bit(u, "/x", 0, 0), -ENOTSUP);
	cr_assert_eq(pio_mem_file_size(u, "/x"), -ENOTSUP);
	pio_free(u);
	pio_free(NULL);
}

Test(io_mem, truncate_is_durable_and_bounds_the_dirty_range)
{
	struct pio_file *f = open_file("/d/t", PIO_CREATE);
	cr_assert_eq(io->ops->pwrite(io, f, "0123456789", 10, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	cr_assert_eq(io->ops->pwrite(io, f, "abcdefghijklmnop", 16, 4), 0);
	cr_assert_eq(io->ops->truncate(io, f, 8), 0);
	pio_mem_crash(io, false);
	/* the shrink survived (metadata is durable); unsynced bytes did not */
	cr_assert_eq(io->ops->size(io, f), 8);
	expect_bytes(f, 0, "01234567", 8);
	/* extension: zeros in both views */
	cr_assert_eq(io->ops->truncate(io, f, 12), 0);
	pio_mem_crash(io, true);
	expect_bytes(f, 0, "01234567\0\0\0\0", 12);
	/* unsynced write into an extended, never-synced tail, then crash */
	cr_assert_eq(io->ops->pwrite(io, f, "ZZ", 2, 10), 0);
	pio_mem_crash(io, false);
	expect_bytes(f, 0, "01234567\0\0\0\0", 12);
	io->ops->close(io, f);
}

/* Several threads share one pio_mem, each with its own ring and file, plus
 * sync writes to disjoint ranges of a shared file and directory listings,
 * while a waker thread pokes every ring. Checks every byte at the end. */
enum { MT_THREADS = 4, MT_ITERS = 400, MT_CHUNK = 256 };
struct mt_arg {
	struct pio_ring *ring;
	int id;
	uint64_t seed;
};
static struct pio_ring *mt_rings[MT_THREADS];
static atomic_int mt_stop;
static int count_cb(void *arg, const char *name)
{
	(*(int *)arg)++;
	return 0;
}
static void *mt_worker(void *p)
{
	struct mt_arg *a = p;
	char path[32];
	snprintf(path, sizeof(path), "/d/t%d", a->id);
	struct pio_file *f = NULL, *shared = NULL;
	PARLEY_ASSERT(io->ops->open(io, path, PIO_CREATE, &f) == 0);
	PARLEY_ASSERT(io->ops->open(io, "/d/shared", PIO_CREATE, &shared) == 0);
	struct parley_rng rng = {a->seed};
	static uint8_t bufs[MT_THREADS][MT_CHUNK];
	uint8_t *b = bufs[a->id];
	for (int i = 0; i < MT_ITERS; i++) {
		memset(b, (uint8_t)(a->id * 31 + i), MT_CHUNK);
		PARLEY_ASSERT(io->ops->ring_write(a->ring, f, b, MT_CHUNK,
						  (uint64_t)i * MT_CHUNK,
						  (uint64_t)i, true) == 0);
		PARLEY_ASSERT(io->ops->ring_fdatasync(a->ring, f,
						      (uint64_t)i) == 0);
		struct pio_cqe c[2];
		int got = 0;
		while (got < 2) {
			int n = io->ops->ring_wait(a->ring, c + got, 2 - got, -1);
			PARLEY_ASSERT(n >= 0);
			got += n;
		}
		PARLEY_ASSERT(c[0].user_data == (uint64_t)i &&
			      c[0].res == MT_CHUNK);
		PARLEY_ASSERT(c[1].res == 0);
		uint8_t v = (uint8_t)(a->id + 1);
		PARLEY_ASSERT(io->ops->pwrite(io, shared, &v, 1,
					      (uint64_t)i * MT_THREADS +
						      (uint64_t)a->id) == 0);
		if (parley_rng_below(&rng, 8) == 0) {
			int cnt = 0;
			PARLEY_ASSERT(io->ops->list(io, "/d", count_cb, &cnt) == 0);
			PARLEY_ASSERT(cnt >= 2);
		}
	}
	io->ops->close(io, f);
	io->ops->close(io, shared);
	return NULL;
}
static void *mt_waker(void *p)
{
	while (!atomic_load(&mt_stop)) {
		for (int i = 0; i < MT_THREADS; i++)
			io->ops->ring_wake(mt_rings[i]);
		usleep(100);
	}
	return NULL;
}

Test(io_mem, threads_share_one_fs, .timeout = 120)
{
	uint64_t seed = test_seed();
	struct mt_arg args[MT_THREADS];
	pthread_t th[MT_THREADS], waker;
	for (int i = 0; i < MT_THREADS; i++) {
		cr_assert_eq(io->ops->ring_new(io, 4, &mt_rings[i]), 0);
		args[i] = (struct mt_arg){mt_rings[i], i, seed + (uint64_t)i};
	}
	atomic_store(&mt_stop, 0);
	cr_assert_eq(pthread_create(&waker, NULL, mt_waker, NULL), 0);
	for (int i = 0; i < MT_THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, mt_worker, &args[i]),
			     0);
	for (int i = 0; i < MT_THREADS; i++)
		pthread_join(th[i], NULL);
	atomic_store(&mt_stop, 1);
	pthread_join(waker, NULL);
	pio_mem_crash(io, true); /* every ring write was synced: no change */
	for (int t = 0; t < MT_THREADS; t++) {
		char path[32];
		snprintf(path, sizeof(path), "/d/t%d", t);
		struct pio_file *f = open_file(path, 0);
		cr_assert_eq(io->ops->size(io, f), MT_ITERS * MT_CHUNK);
		uint8_t buf[MT_CHUNK], want[MT_CHUNK];
		for (int i = 0; i < MT_ITERS; i++) {
			memset(want, (uint8_t)(t * 31 + i), MT_CHUNK);
			cr_assert_eq(io->ops->pread(io, f, buf, MT_CHUNK,
						    (uint64_t)i * MT_CHUNK),
				     MT_CHUNK);
			cr_assert_arr_eq(buf, want, MT_CHUNK);
		}
		io->ops->close(io, f);
		io->ops->ring_free(mt_rings[t]);
	}
	/* the shared file's sync writes were never fsynced: the torn crash
	 * kept some 512-aligned prefix of them, and nothing else */
	int64_t ssz = pio_mem_file_size(io, "/d/shared");
	cr_assert(ssz >= 0 && ssz <= MT_ITERS * MT_THREADS);
	cr_assert(ssz % 512 == 0 || ssz == MT_ITERS * MT_THREADS);
	struct pio_file *s = open_file("/d/shared", 0);
	static uint8_t sb[MT_ITERS * MT_THREADS];
	cr_assert_eq(io->ops->pread(io, s, sb, sizeof(sb), 0), ssz);
	for (int64_t i = 0; i < ssz; i++)
		cr_assert_eq(sb[i], (uint8_t)(i % MT_THREADS + 1));
	io->ops->close(io, s);
}

Test(io_mem, crash_drops_queued_ring_ops)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 4, &r), 0);
	struct pio_file *f = open_file("/d/q", PIO_CREATE);
	cr_assert_eq(io->ops->ring_write(r, f, "done", 4, 0, 1, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 2), 0);
	struct pio_cqe c[4];
	cr_assert_eq(ring_collect(r, io, c, 2), 2);
	/* queued, never waited for: the crash loses it */
	cr_assert_eq(io->ops->ring_write(r, f, "lost", 4, 4, 3, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 4), 0);
	pio_mem_crash(io, true);
	cr_assert_eq(io->ops->ring_wait(r, c, 4, 0), 0);
	cr_assert_eq(io->ops->size(io, f), 4);
	expect_bytes(f, 0, "done", 4);
	/* the ring is usable afterwards */
	cr_assert_eq(io->ops->ring_write(r, f, "more", 4, 4, 5, false), 0);
	cr_assert_eq(ring_collect(r, io, c, 1), 1);
	cr_assert_eq(c[0].res, 4);
	io->ops->close(io, f);
	io->ops->ring_free(r);
}

/* ---- ring_write_dsync (RWF_DSYNC) and PIO_DIRECT ----------------------------- */

/* Like ring_collect, but a dsync write completes only on the wait after
 * the one that wrote its bytes: a bounded number of empty returns is
 * part of the contract (0 = spurious, callers loop). */
static int ring_collect_dsync(struct pio_ring *r, struct pio_cqe *out,
			      int want)
{
	int got = 0;
	for (int spins = 0; got < want && spins < 64; spins++) {
		int n = io->ops->ring_wait(r, out + got, want - got, 0);
		cr_assert(n >= 0);
		got += n;
	}
	return got;
}

static struct pio_file *zeroed_file(const char *path, size_t len, int flags)
{
	static const uint8_t z[16384];
	cr_assert(len <= sizeof z);
	struct pio_file *f = open_file(path, PIO_CREATE | flags);
	cr_assert_eq(io->ops->pwrite(io, f, z, len, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	return f;
}

Test(io_mem, ring_write_dsync_durable_at_completion)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 4, &r), 0);
	struct pio_file *f = zeroed_file("/d/ds", 8192, 0);
	/* an unsynced write elsewhere in the file: the dsync write does not
	 * make it durable */
	cr_assert_eq(io->ops->pwrite(io, f, "other", 5, 100), 0);
	static uint8_t x[1024];
	memset(x, 'x', sizeof x);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, x, sizeof x, 4096, 1), 0);
	struct pio_cqe c[2];
	cr_assert_eq(ring_collect_dsync(r, c, 1), 1);
	cr_assert_eq(c[0].user_data, 1);
	cr_assert_eq(c[0].res, (int)sizeof x);
	pio_mem_crash(io, false);
	expect_bytes(f, 4096, x, sizeof x);
	static const uint8_t z5[5];
	expect_bytes(f, 100, z5, 5);
	cr_assert_eq(io->ops->size(io, f), 8192);

	/* extending the file: the new size is durable with the bytes */
	cr_assert_eq(io->ops->ring_write_dsync(r, f, x, sizeof x, 8192, 2), 0);
	cr_assert_eq(ring_collect_dsync(r, c, 1), 1);
	cr_assert_eq(c[0].res, (int)sizeof x);
	pio_mem_crash(io, true);
	cr_assert_eq(io->ops->size(io, f), 8192 + (int64_t)sizeof x);
	expect_bytes(f, 8192, x, sizeof x);
	io->ops->close(io, f);
	io->ops->ring_free(r);
}

/* A crash while the bytes are written but the sync has not completed
 * keeps a 512-grained prefix of them (any, including none or all), and
 * nothing outside the write: torn writes under RWF_DSYNC. Over many seeds
 * more than one cut must show up, or the tear is not modelled. */
Test(io_mem, ring_write_dsync_torn_before_completion)
{
	unsigned long long seed0 = (unsigned long long)test_seed();
	bool seen[9] = {false};
	for (unsigned s = 0; s < 64; s++) {
		struct pio *m = pio_mem_new(seed0 + s);
		struct pio *keep = io;
		io = m;
		cr_assert_eq(io->ops->mkdir(io, "/d"), 0);
		struct pio_ring *r = NULL;
		cr_assert_eq(io->ops->ring_new(io, 4, &r), 0);
		struct pio_file *f = zeroed_file("/d/t", 12288, 0);
		static uint8_t x[4096];
		memset(x, 'x', sizeof x);
		cr_assert_eq(io->ops->ring_write_dsync(r, f, x, sizeof x, 4096,
						       7), 0);
		/* queued behind it: runs only after it completes */
		cr_assert_eq(io->ops->ring_write(r, f, "after", 5, 0, 8, false), 0);
		struct pio_cqe c[2];
		cr_assert_eq(io->ops->ring_wait(r, c, 2, 0), 0,
			     "bytes written, not yet durable: no completion");
		expect_bytes(f, 4096, x, sizeof x); /* readers see them */
		pio_mem_crash(io, true);
		static uint8_t back[12288];
		cr_assert_eq(io->ops->pread(io, f, back, sizeof back, 0),
			     (int64_t)sizeof back);
		size_t cut = 0;
		while (cut < sizeof x && back[4096 + cut] == 'x')
			cut++;
		cr_assert_eq(cut % 512, 0, "seed %llu: cut at %zu",
			     seed0 + s, cut);
		for (size_t i = 0; i < sizeof back; i++)
			if (i < 4096 || i >= 4096 + cut)
				cr_assert_eq(back[i], 0, "seed %llu: byte %zu",
					     seed0 + s, i);
		seen[cut / 512] = true;
		/* the dropped ops never complete */
		cr_assert_eq(io->ops->ring_wait(r, c, 2, 0), 0);
		io->ops->close(io, f);
		io->ops->ring_free(r);
		pio_free(m);
		io = keep;
	}
	int kinds = 0;
	for (int i = 0; i < 9; i++)
		kinds += seen[i];
	cr_assert(kinds >= 2, "seed %llu: the tear never varied", seed0);
}

Test(io_mem, ring_write_dsync_order_and_faults)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 8, &r), 0);
	struct pio_file *f = zeroed_file("/d/o", 8192, 0);
	static uint8_t x[512];
	memset(x, 'x', sizeof x);
	/* completion order stays submission order around a dsync write */
	cr_assert_eq(io->ops->ring_write(r, f, "a", 1, 0, 1, false), 0);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, x, sizeof x, 512, 2), 0);
	cr_assert_eq(io->ops->ring_write(r, f, "b", 1, 1, 3, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 4), 0);
	struct pio_cqe c[8];
	cr_assert_eq(ring_collect_dsync(r, c, 4), 4);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(c[i].user_data, (uint64_t)i + 1);
	cr_assert_eq(c[1].res, (int)sizeof x);

	/* its sync fails: the bytes are not durable, a crash takes them */
	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	static uint8_t y[512];
	memset(y, 'y', sizeof y);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, y, sizeof y, 512, 5), 0);
	cr_assert_eq(ring_collect_dsync(r, c, 1), 1);
	cr_assert_eq(c[0].res, -EIO);
	pio_mem_crash(io, false);
	expect_bytes(f, 512, x, sizeof x);

	/* its write fails: nothing written */
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 1);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, y, sizeof y, 512, 6), 0);
	cr_assert_eq(ring_collect_dsync(r, c, 1), 1);
	cr_assert_eq(c[0].res, -EIO);
	expect_bytes(f, 512, x, sizeof x);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, y, sizeof y,
					       0, PIO_UDATA_RESERVED), -EINVAL);
	io->ops->close(io, f);
	io->ops->ring_free(r);
}

Test(io_mem, direct_files_take_aligned_ring_writes_only)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 8, &r), 0);
	struct pio_file *d = zeroed_file("/d/direct", 16384, PIO_DIRECT);
	uint8_t *buf = aligned_alloc(PIO_DIRECT_ALIGN, 2 * PIO_DIRECT_ALIGN);
	cr_assert_not_null(buf);
	memset(buf, 'd', 2 * PIO_DIRECT_ALIGN);
	/* unaligned address, length or offset: refused, nothing queued */
	cr_assert_eq(io->ops->ring_write_dsync(r, d, buf + 512, 4096, 0, 1),
		     -EINVAL);
	cr_assert_eq(io->ops->ring_write_dsync(r, d, buf, 1000, 0, 1), -EINVAL);
	cr_assert_eq(io->ops->ring_write_dsync(r, d, buf, 4096, 512, 1),
		     -EINVAL);
	cr_assert_eq(io->ops->ring_write(r, d, buf, 4096, 100, 1, false),
		     -EINVAL);
	/* aligned: fine, both kinds */
	cr_assert_eq(io->ops->ring_write_dsync(r, d, buf, 8192, 4096, 2), 0);
	cr_assert_eq(io->ops->ring_write(r, d, buf, 4096, 12288, 3, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, d, 4), 0);
	struct pio_cqe c[4];
	cr_assert_eq(ring_collect_dsync(r, c, 3), 3);
	cr_assert_eq(c[0].res, 8192);
	cr_assert_eq(c[1].res, 4096);
	cr_assert_eq(c[2].res, 0);
	/* synchronous ops stay unrestricted */
	cr_assert_eq(io->ops->pwrite(io, d, "s", 1, 3), 0);
	/* a file opened without the flag takes any write */
	struct pio_file *f = zeroed_file("/d/plain", 4096, 0);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, "u", 1, 3, 5), 0);
	cr_assert_eq(ring_collect_dsync(r, c, 1), 1);
	cr_assert_eq(c[0].res, 1);
	free(buf);
	io->ops->close(io, f);
	io->ops->close(io, d);
	io->ops->ring_free(r);
}
