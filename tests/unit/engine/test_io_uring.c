/*
 * test_io_uring.c — contract tests for the real-disk backend
 * (engine/io_uring.c) on real files in a mkdtemp directory under /tmp:
 * ring write + linked fdatasync, many queued writes reaped in batches,
 * completions beyond `max` kept for the next call, the depth bound,
 * cross-thread wake-up of a -1 wait, the synchronous ops and their error
 * paths, list(), the dsync write (RWF_DSYNC) buffered and on a PIO_DIRECT
 * file, PIO_DIRECT on a file system without O_DIRECT (/dev/shm), and
 * PIO_DIRECT_FILL's synchronous writes around the page cache.
 *
 * If io_uring is unavailable here (ring_new fails with -ENOSYS or -EPERM)
 * the whole program exits 77 (skipped), not 0.
 * Threads: the main test thread, plus one helper in the wake-up test.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"

static struct pio *io;
static char dir[64];
static char pathbuf[256];

static const char *P(const char *name)
{
	snprintf(pathbuf, sizeof(pathbuf), "%s/%s", dir, name);
	return pathbuf;
}

static void rm_rf(const char *d)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", d);
}

/* Runs before Criterion's main: skip the program when io_uring is absent. */
__attribute__((constructor)) static void probe_uring(void)
{
	struct pio *u = pio_uring_new();
	if (!u)
		return;
	struct pio_ring *r = NULL;
	int rc = u->ops->ring_new(u, 4, &r);
	if (rc == -ENOSYS || rc == -EPERM) {
		fprintf(stderr, "io_uring unavailable (%d): skipping\n", rc);
		pio_free(u);
		_exit(77);
	}
	if (rc == 0)
		u->ops->ring_free(r);
	pio_free(u);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/parley-io-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	io = pio_uring_new();
	cr_assert_not_null(io);
}
static void teardown(void)
{
	pio_free(io);
	rm_rf(dir);
}

TestSuite(io_uring, .init = setup, .fini = teardown, .timeout = 60);

static struct pio_file *open_file(const char *name, int flags)
{
	struct pio_file *f = NULL;
	cr_assert_eq(io->ops->open(io, P(name), flags, &f), 0, "open %s",
		     name);
	return f;
}

Test(io_uring, sync_ops)
{
	struct pio_file *f = NULL;
	cr_assert_eq(io->ops->open(io, P("missing"), 0, &f), -ENOENT);
	f = open_file("a", PIO_CREATE | PIO_EXCL);
	struct pio_file *g = NULL;
	cr_assert_eq(io->ops->open(io, P("a"), PIO_CREATE | PIO_EXCL, &g),
		     -EEXIST);
	cr_assert_eq(io->ops->size(io, f), 0);
	static uint8_t big[1 << 20];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + 3);
	cr_assert_eq(io->ops->pwrite(io, f, big, sizeof(big), 100), 0);
	cr_assert_eq(io->ops->size(io, f), (int64_t)sizeof(big) + 100);
	static uint8_t back[1 << 20];
	cr_assert_eq(io->ops->pread(io, f, back, sizeof(back), 100),
		     (int64_t)sizeof(back));
	cr_assert_arr_eq(back, big, sizeof(big));
	/* short read at end of file only */
	cr_assert_eq(io->ops->pread(io, f, back, 1000, sizeof(big)), 100);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	cr_assert_eq(io->ops->truncate(io, f, 10), 0);
	cr_assert_eq(io->ops->size(io, f), 10);
	io->ops->close(io, f);

	cr_assert_eq(io->ops->rename(io, P("a"), "/tmp/../tmp/x/../none/b"),
		     -ENOENT);
	char from[256];
	snprintf(from, sizeof(from), "%s", P("a"));
	cr_assert_eq(io->ops->rename(io, from, P("b")), 0);
	cr_assert_eq(io->ops->open(io, from, 0, &f), -ENOENT);
	cr_assert_eq(io->ops->unlink(io, P("b")), 0);
	cr_assert_eq(io->ops->unlink(io, P("b")), -ENOENT);
	cr_assert_eq(io->ops->mkdir(io, P("sub")), 0);
	cr_assert_eq(io->ops->mkdir(io, P("sub")), -EEXIST);
	cr_assert_eq(io->ops->fsync_dir(io, P("sub")), 0);
	cr_assert_eq(io->ops->fsync_dir(io, P("nodir")), -ENOENT);
}

struct names {
	int n;
	bool seen_a, seen_b;
};
static int collect(void *arg, const char *name)
{
	struct names *ns = arg;
	ns->n++;
	cr_assert(strcmp(name, ".") && strcmp(name, ".."));
	if (!strcmp(name, "a"))
		ns->seen_a = true;
	if (!strcmp(name, "b"))
		ns->seen_b = true;
	return 0;
}
static int stop_cb(void *arg, const char *name)
{
	(*(int *)arg)++;
	return 5;
}

Test(io_uring, list)
{
	io->ops->close(io, open_file("a", PIO_CREATE));
	io->ops->close(io, open_file("b", PIO_CREATE));
	struct names ns = {0};
	cr_assert_eq(io->ops->list(io, dir, collect, &ns), 0);
	cr_assert_eq(ns.n, 2);
	cr_assert(ns.seen_a && ns.seen_b);
	int calls = 0;
	cr_assert_eq(io->ops->list(io, dir, stop_cb, &calls), 5);
	cr_assert_eq(calls, 1);
	cr_assert_eq(io->ops->list(io, P("nodir"), collect, &ns), -ENOENT);
}

static int wait_all(struct pio_ring *r, struct pio_cqe *out, int want)
{
	int got = 0;
	int loops = 0;
	while (got < want) {
		int n = io->ops->ring_wait(r, out + got, want - got, 1000);
		cr_assert(n >= 0, "ring_wait: %d", n);
		got += n;
		cr_assert(++loops < 10000, "completions never arrived");
	}
	return got;
}

Test(io_uring, ring_write_linked_fdatasync)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 16, &r), 0);
	struct pio_file *f = open_file("w", PIO_CREATE);
	static const char msg[] = "linked write then datasync";
	cr_assert_eq(io->ops->ring_write(r, f, msg, sizeof(msg), 0, 7, true),
		     0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 8), 0);
	struct pio_cqe c[4];
	cr_assert_eq(wait_all(r, c, 2), 2);
	/* a linked chain completes in order */
	cr_assert_eq(c[0].user_data, 7);
	cr_assert_eq(c[0].res, (int)sizeof(msg));
	cr_assert_eq(c[1].user_data, 8);
	cr_assert_eq(c[1].res, 0);
	char back[sizeof(msg)];
	cr_assert_eq(io->ops->pread(io, f, back, sizeof(back), 0),
		     (int64_t)sizeof(back));
	cr_assert_str_eq(back, msg);

	/* a failing link head cancels the rest: a write past the largest
	 * possible file size fails (-EFBIG) on every file system */
	cr_assert_eq(io->ops->ring_write(r, f, msg, 4, (uint64_t)INT64_MAX - 1,
					 9, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 10), 0);
	cr_assert_eq(wait_all(r, c, 2), 2);
	cr_assert_eq(c[0].user_data, 9);
	cr_assert(c[0].res < 0, "write past max file size gave %d", c[0].res);
	cr_assert_eq(c[1].user_data, 10);
	cr_assert_eq(c[1].res, -ECANCELED);
	io->ops->close(io, f);
	io->ops->ring_free(r);
}

Test(io_uring, many_writes_batches_and_max)
{
	enum { DEPTH = 64, N = 1000, SZ = 512 };
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, DEPTH, &r), 0);
	struct pio_file *f = open_file("many", PIO_CREATE);
	static uint8_t data[N][SZ];
	static bool done[N];
	for (int i = 0; i < N; i++)
		memset(data[i], (uint8_t)(i * 13 + 1), SZ);
	int submitted = 0, completed = 0, inflight = 0, loops = 0;
	int max_batch = 0;
	while (completed < N) {
		while (submitted < N && inflight < DEPTH) {
			cr_assert_eq(io->ops->ring_write(
					     r, f, data[submitted], SZ,
					     (uint64_t)submitted * SZ,
					     (uint64_t)submitted, false),
				     0);
			submitted++;
			inflight++;
		}
		if (submitted < N)
			cr_assert_eq(io->ops->ring_write(r, f, data[0], SZ, 0,
							 N + 1, false),
				     -EBUSY, "depth bound not enforced");
		struct pio_cqe c[16];
		int n = io->ops->ring_wait(r, c, 16, 1000);
		cr_assert(n >= 0 && n <= 16, "ring_wait: %d", n);
		max_batch = PARLEY_MAX(max_batch, n);
		for (int k = 0; k < n; k++) {
			cr_assert(c[k].user_data < N);
			cr_assert(!done[c[k].user_data], "duplicate completion");
			done[c[k].user_data] = true;
			cr_assert_eq(c[k].res, SZ);
		}
		completed += n;
		inflight -= n;
		cr_assert(++loops < 100000);
	}
	cr_assert(max_batch > 1, "completions were never reaped in batches");
	cr_assert_eq(io->ops->size(io, f), (int64_t)N * SZ);
	static uint8_t back[SZ];
	for (int i = 0; i < N; i += 97) {
		cr_assert_eq(io->ops->pread(io, f, back, SZ, (uint64_t)i * SZ),
			     SZ);
		cr_assert_arr_eq(back, data[i], SZ);
	}
	io->ops->close(io, f);
	io->ops->ring_free(r);
}

Test(io_uring, completions_beyond_max_are_kept)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 8, &r), 0);
	struct pio_file *f = open_file("k", PIO_CREATE);
	for (uint64_t i = 0; i < 8; i++)
		cr_assert_eq(io->ops->ring_write(r, f, "x", 1, i, 100 + i,
						 i < 7), 0);
	/* the chain completes in order; take them one or two at a time */
	struct pio_cqe c[8];
	int got = 0, loops = 0;
	while (got < 8) {
		int n = io->ops->ring_wait(r, c + got, got % 2 ? 1 : 2, 1000);
		cr_assert(n >= 0 && n <= 2);
		got += n;
		cr_assert(++loops < 1000);
	}
	for (int i = 0; i < 8; i++) {
		cr_assert_eq(c[i].user_data, 100 + (uint64_t)i);
		cr_assert_eq(c[i].res, 1);
	}
	cr_assert_eq(io->ops->ring_wait(r, c, 8, 0), 0, "extra completion");
	cr_assert_eq(io->ops->ring_write(r, f, "x", 1, 0, PIO_UDATA_RESERVED,
					 false), -EINVAL);
	io->ops->close(io, f);
	io->ops->ring_free(r);
}

struct waker {
	struct pio_ring *r;
};
static void *wake_thread(void *arg)
{
	struct waker *w = arg;
	usleep(20000);
	io->ops->ring_wake(w->r);
	return NULL;
}

Test(io_uring, wake_interrupts_forever_wait)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 4, &r), 0);
	for (int round = 0; round < 3; round++) {
		struct waker w = {r};
		pthread_t t;
		cr_assert_eq(pthread_create(&t, NULL, wake_thread, &w), 0);
		struct pio_cqe c[4];
		/* blocks until the wake (the suite timeout catches a hang) */
		cr_assert_eq(io->ops->ring_wait(r, c, 4, -1), 0);
		pthread_join(t, NULL);
	}
	/* a wake before the wait is not lost */
	io->ops->ring_wake(r);
	struct pio_cqe c[4];
	cr_assert_eq(io->ops->ring_wait(r, c, 4, -1), 0);
	/* and the wake never shows up as a caller completion */
	cr_assert_eq(io->ops->ring_wait(r, c, 4, 0), 0);
	cr_assert_eq(io->ops->ring_wait(r, c, 4, 5), 0);
	io->ops->ring_free(r);
}

Test(io_uring, ring_new_bad_depth)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 0, &r), -EINVAL);
}

Test(io_uring, ring_free_waits_for_inflight_ops)
{
	enum { N = 32, SZ = 4096 };
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, N + 1, &r), 0);
	struct pio_file *f = open_file("inflight", PIO_CREATE);
	static uint8_t data[N][SZ];
	for (int i = 0; i < N; i++) {
		memset(data[i], 'A' + i % 26, SZ);
		cr_assert_eq(io->ops->ring_write(r, f, data[i], SZ,
						 (uint64_t)i * SZ, (uint64_t)i,
						 false), 0);
	}
	cr_assert_eq(io->ops->ring_fdatasync(r, f, N), 0);
	/* submit without reaping anything, then free: ring_free must wait
	 * for the kernel to finish with the buffers */
	cr_assert_eq(io->ops->ring_wait(r, NULL, 0, 0), 0);
	io->ops->ring_free(r);
	cr_assert_eq(io->ops->size(io, f), (int64_t)N * SZ);
	static uint8_t back[SZ];
	for (int i = 0; i < N; i++) {
		cr_assert_eq(io->ops->pread(io, f, back, SZ, (uint64_t)i * SZ),
			     SZ);
		cr_assert_arr_eq(back, data[i], SZ);
	}
	io->ops->close(io, f);
}

/* One op that writes and syncs (RWF_DSYNC), through the page cache and on
 * a PIO_DIRECT file (O_DIRECT where the file system has it); what it wrote
 * reads back through the handle's buffered descriptor, also where the page
 * cache held the old bytes of the range before the direct write. */
Test(io_uring, ring_write_dsync_buffered_and_direct)
{
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 8, &r), 0);
	uint8_t *buf = aligned_alloc(PIO_DIRECT_ALIGN, 2 * PIO_DIRECT_ALIGN);
	cr_assert_not_null(buf);
	static uint8_t old[3 * 4096];
	memset(old, 'o', sizeof old);
	for (int direct = 0; direct < 2; direct++) {
		struct pio_file *f = open_file(direct ? "d" : "b",
					       PIO_CREATE | (direct ? PIO_DIRECT : 0));
		cr_assert_eq(io->ops->pwrite(io, f, old, sizeof old, 0), 0);
		cr_assert_eq(io->ops->fdatasync(io, f), 0);
		uint8_t back[sizeof old];
		/* the old bytes in the page cache */
		cr_assert_eq(io->ops->pread(io, f, back, sizeof back, 0),
			     (int64_t)sizeof back);
		memset(buf, direct ? 'D' : 'B', 2 * PIO_DIRECT_ALIGN);
		cr_assert_eq(io->ops->ring_write_dsync(r, f, buf,
						       2 * PIO_DIRECT_ALIGN,
						       4096, 40 + direct), 0);
		struct pio_cqe c[2];
		cr_assert_eq(wait_all(r, c, 1), 1);
		cr_assert_eq(c[0].user_data, 40u + (unsigned)direct);
		cr_assert_eq(c[0].res, 2 * (int)PIO_DIRECT_ALIGN);
		cr_assert_eq(io->ops->pread(io, f, back, sizeof back, 0),
			     (int64_t)sizeof back);
		cr_assert_arr_eq(back, old, 4096);
		cr_assert_arr_eq(back + 4096, buf, 2 * PIO_DIRECT_ALIGN);
		if (direct) {
			/* the alignment rule holds on every file system */
			cr_assert_eq(io->ops->ring_write_dsync(r, f, buf + 1,
							       4096, 0, 1),
				     -EINVAL);
			cr_assert_eq(io->ops->ring_write(r, f, buf, 100, 0, 1,
							 false), -EINVAL);
			cr_assert_eq(io->ops->ring_write(r, f, buf, 4096, 512,
							 1, false), -EINVAL);
		}
		io->ops->close(io, f);
	}
	/* a failing dsync write reports its error */
	struct pio_file *f = open_file("e", PIO_CREATE);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, buf, 4,
					       (uint64_t)INT64_MAX - 1, 9), 0);
	struct pio_cqe c[1];
	cr_assert_eq(wait_all(r, c, 1), 1);
	cr_assert(c[0].res < 0, "write past max file size gave %d", c[0].res);
	io->ops->close(io, f);
	free(buf);
	io->ops->ring_free(r);
}

/* Pages of the file at `path` (of `len` bytes) in the page cache. */
static size_t resident_pages(const char *path, size_t len)
{
	int fd = open(path, O_RDONLY);
	cr_assert(fd >= 0);
	void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	size_t np = len / 4096, n = 0;
	unsigned char *v = malloc(np);
	cr_assert_not_null(v);
	cr_assert_eq(mincore(m, len, v), 0);
	for (size_t i = 0; i < np; i++)
		n += v[i] & 1;
	free(v);
	munmap(m, len);
	close(fd);
	return n;
}

/* PIO_DIRECT_FILL: a synchronous pwrite whose buffer, offset and length are
 * aligned goes around the page cache (none of its pages are cached after
 * it), what it wrote reads back, and an unaligned one (or its unaligned
 * rest) still writes, through the cache. Skipped where the file system has
 * no O_DIRECT. */
Test(io_uring, direct_fill_pwrite_goes_around_the_page_cache)
{
	int probe = open(P("probe"), O_RDWR | O_CREAT | O_DIRECT, 0644);
	if (probe < 0)
		cr_skip_test("no O_DIRECT under %s", dir);
	close(probe);
	enum { SZ = 64 * 4096 };
	uint8_t *buf = aligned_alloc(PIO_DIRECT_ALIGN, SZ);
	cr_assert_not_null(buf);
	memset(buf, 'z', SZ);
	for (int fill = 0; fill < 2; fill++) {
		const char *name = fill ? "fill" : "plain";
		struct pio_file *f = open_file(name,
					       PIO_CREATE | (fill ? PIO_DIRECT_FILL : 0));
		cr_assert_eq(io->ops->pwrite(io, f, buf, SZ, 0), 0);
		cr_assert_eq(io->ops->fdatasync(io, f), 0);
		size_t res = resident_pages(P(name), SZ);
		if (fill)
			cr_assert_eq(res, 0, "%zu of 64 pages cached", res);
		else
			cr_assert_eq(res, 64, "buffered: %zu of 64 cached", res);
		/* unaligned: through the cache, and still written */
		cr_assert_eq(io->ops->pwrite(io, f, "ab", 2, 4097), 0);
		uint8_t back[SZ];
		cr_assert_eq(io->ops->pread(io, f, back, SZ, 0), (int64_t)SZ);
		cr_assert_eq(back[4097], 'a');
		cr_assert_eq(back[4098], 'b');
		back[4097] = back[4098] = 'z';
		cr_assert_arr_eq(back, buf, SZ);
		io->ops->close(io, f);
	}
	free(buf);
}

/* PIO_DIRECT where the file system has no O_DIRECT (or reports no direct
 * I/O for the file; tmpfs on older kernels): the open still succeeds, the
 * writes go through the page cache, and the alignment rule still holds.
 * Run on /dev/shm when it is there; either way the contract is the same. */
Test(io_uring, direct_hint_on_a_cache_only_fs)
{
	char d[64];
	snprintf(d, sizeof d, "/dev/shm/parley-io-XXXXXX");
	if (!mkdtemp(d)) {
		cr_log_warn("no /dev/shm here: nothing to check");
		return;
	}
	char p[128];
	snprintf(p, sizeof p, "%s/f", d);
	struct pio_file *f = NULL;
	cr_assert_eq(io->ops->open(io, p, PIO_CREATE | PIO_DIRECT, &f), 0);
	struct pio_ring *r = NULL;
	cr_assert_eq(io->ops->ring_new(io, 4, &r), 0);
	uint8_t *buf = aligned_alloc(PIO_DIRECT_ALIGN, PIO_DIRECT_ALIGN);
	cr_assert_not_null(buf);
	memset(buf, 's', PIO_DIRECT_ALIGN);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, buf + 8, 64, 0, 1), -EINVAL);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, buf, PIO_DIRECT_ALIGN, 0, 2),
		     0);
	struct pio_cqe c[1];
	cr_assert_eq(wait_all(r, c, 1), 1);
	cr_assert_eq(c[0].user_data, 2);
	cr_assert_eq(c[0].res, (int)PIO_DIRECT_ALIGN);
	uint8_t back[PIO_DIRECT_ALIGN];
	cr_assert_eq(io->ops->pread(io, f, back, sizeof back, 0),
		     (int64_t)sizeof back);
	cr_assert_arr_eq(back, buf, sizeof back);
	free(buf);
	io->ops->close(io, f);
	io->ops->ring_free(r);
	unlink(p);
	rmdir(d);
}
