/*
 * test_io_synclog.c — the test-only sync log of the io_uring backend
 * (engine/io/io_synclog.c, PARLEY_TEST_SYNC_LOG) together with
 * tools/drop-unsynced.py, on real files in a mkdtemp directory: what a
 * completed fdatasync covered survives the tool, what no sync covered is
 * cut (past the durable end) or zeroed (inside it); a ring write linked
 * ahead of an fdatasync counts as covered; a create, rename or unlink that
 * no directory fsync covered is undone (the file a rename replaced comes
 * back), and one that a directory fsync covered stays.
 *
 * Each test runs in its own process (Criterion), so the variable is read
 * fresh by each. Skipped (exit 77) without io_uring or python3.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "parley_engine.h"

static struct pio *io;
static char dir[64], logp[128], pbuf[4][160];
static int pn;

static const char *P(const char *name)
{
	char *b = pbuf[pn++ % 4];
	snprintf(b, sizeof pbuf[0], "%s/%s", dir, name);
	return b;
}

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/parley-synclog-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(logp, sizeof logp, "%s/sync.log", dir);
	setenv("PARLEY_TEST_SYNC_LOG", logp, 1);
	io = pio_uring_new();
	cr_assert_not_null(io);
	cr_assert(pio_synclog_on());
}

static void teardown(void)
{
	pio_free(io);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", dir);
}

TestSuite(synclog, .init = setup, .fini = teardown);

static void drop(void)
{
	const char *src = getenv("PARLEY_SRC_DIR");
	if (!src || system("python3 -c pass") != 0)
		exit(77); /* not under ctest, or no python3 here */
	char cmd[512];
	snprintf(cmd, sizeof cmd, "python3 %s/tools/drop-unsynced.py %s", src,
		 logp);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void fill(uint8_t *b, size_t n, uint8_t v)
{
	memset(b, v, n);
}

static int64_t fsize(const char *p)
{
	struct stat st;
	return stat(p, &st) ? -1 : (int64_t)st.st_size;
}

static void read_at(const char *p, uint64_t off, uint8_t *b, size_t n)
{
	FILE *f = fopen(p, "rb");
	cr_assert_not_null(f, "%s", p);
	cr_assert_eq(fseek(f, (long)off, SEEK_SET), 0);
	cr_assert_eq(fread(b, 1, n, f), n);
	fclose(f);
}

static bool all(const uint8_t *b, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != v)
			return false;
	return true;
}

static void ring_do(struct pio_ring *r, int ops)
{
	struct pio_cqe c[8];
	int got = 0;
	while (got < ops) {
		int n = io->ops->ring_wait(r, c, 8, 1000);
		cr_assert_geq(n, 0);
		for (int i = 0; i < n; i++)
			cr_assert_geq(c[i].res, 0);
		got += n;
	}
}

/* Data: a ring write linked to its fdatasync is durable; a later ring
 * write and a synchronous pwrite past it, never synced, are cut; an
 * unsynced overwrite inside the durable part is zeroed. */
Test(synclog, unsynced_bytes_are_cut_or_zeroed)
{
	struct pio_ring *r;
	int rc = io->ops->ring_new(io, 8, &r);
	if (rc == -ENOSYS || rc == -EPERM)
		exit(77);
	cr_assert_eq(rc, 0);
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, P("seg"), PIO_CREATE, &f), 0);
	cr_assert_eq(io->ops->fsync_dir(io, dir), 0);
	static uint8_t a[8192], b[4096], c[4096], d[100];
	fill(a, sizeof a, 0xaa);
	fill(b, sizeof b, 0xbb);
	fill(c, sizeof c, 0xcc);
	fill(d, sizeof d, 0xdd);
	cr_assert_eq(io->ops->ring_write(r, f, a, sizeof a, 0, 1, true), 0);
	cr_assert_eq(io->ops->ring_fdatasync(r, f, 1), 0);
	ring_do(r, 2);
	cr_assert_eq(io->ops->ring_write(r, f, b, sizeof b, 8192, 2, false), 0);
	ring_do(r, 1);
	cr_assert_eq(io->ops->pwrite(io, f, c, sizeof c, 12288), 0);
	cr_assert_eq(io->ops->pwrite(io, f, d, sizeof d, 100), 0);
	io->ops->close(io, f);
	io->ops->ring_free(r);
	cr_assert_eq(fsize(P("seg")), 16384);
	drop();
	cr_assert_eq(fsize(P("seg")), 8192, "cut to the durable end");
	uint8_t x[8192];
	read_at(P("seg"), 0, x, sizeof x);
	cr_assert(all(x, 100, 0xaa));
	cr_assert(all(x + 100, 100, 0), "the unsynced overwrite is zeroed");
	cr_assert(all(x + 200, sizeof x - 200, 0xaa));
	cr_assert_eq(access(logp, F_OK), -1, "the log is set aside");
}

/* A dsync ring write (RWF_DSYNC, here on a PIO_DIRECT file) is durable
 * at its completion, as a write linked to an fdatasync; a plain ring write
 * after it, never synced, is cut. */
Test(synclog, dsync_ring_write_is_durable)
{
	struct pio_ring *r;
	int rc = io->ops->ring_new(io, 8, &r);
	if (rc == -ENOSYS || rc == -EPERM)
		exit(77);
	cr_assert_eq(rc, 0);
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, P("seg"), PIO_CREATE | PIO_DIRECT, &f), 0);
	cr_assert_eq(io->ops->fsync_dir(io, dir), 0);
	uint8_t *a = aligned_alloc(PIO_DIRECT_ALIGN, 8192);
	uint8_t *b = aligned_alloc(PIO_DIRECT_ALIGN, 4096);
	cr_assert(a && b);
	fill(a, 8192, 0xaa);
	fill(b, 4096, 0xbb);
	cr_assert_eq(io->ops->ring_write_dsync(r, f, a, 8192, 0, 1), 0);
	ring_do(r, 1);
	cr_assert_eq(io->ops->ring_write(r, f, b, 4096, 8192, 2, false), 0);
	ring_do(r, 1);
	io->ops->close(io, f);
	io->ops->ring_free(r);
	cr_assert_eq(fsize(P("seg")), 12288);
	drop();
	cr_assert_eq(fsize(P("seg")), 8192, "cut to the durable end");
	uint8_t x[8192];
	read_at(P("seg"), 0, x, sizeof x);
	cr_assert(all(x, sizeof x, 0xaa));
	free(a);
	free(b);
}

/* A synced file that was open before this run (an O line) keeps what it
 * had; a synchronous write + fdatasync is durable. */
Test(synclog, synced_writes_and_old_contents_stay)
{
	FILE *o = fopen(P("old"), "wb");
	cr_assert_not_null(o);
	static uint8_t z[3000];
	fill(z, sizeof z, 0x11);
	cr_assert_eq(fwrite(z, 1, sizeof z, o), sizeof z);
	fclose(o);
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, P("old"), PIO_CREATE, &f), 0);
	uint8_t y[1000];
	fill(y, sizeof y, 0x22);
	cr_assert_eq(io->ops->pwrite(io, f, y, sizeof y, 3000), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	cr_assert_eq(io->ops->pwrite(io, f, y, sizeof y, 4000), 0);
	io->ops->close(io, f);
	drop();
	cr_assert_eq(fsize(P("old")), 4000);
	uint8_t x[4000];
	read_at(P("old"), 0, x, sizeof x);
	cr_assert(all(x, 3000, 0x11));
	cr_assert(all(x + 3000, 1000, 0x22));
}

static void make_file(const char *name, uint8_t v, bool dir_sync)
{
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, P(name), PIO_CREATE | PIO_EXCL, &f), 0);
	uint8_t b[512];
	fill(b, sizeof b, v);
	cr_assert_eq(io->ops->pwrite(io, f, b, sizeof b, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);
	if (dir_sync)
		cr_assert_eq(io->ops->fsync_dir(io, dir), 0);
}

static uint8_t first_byte(const char *name)
{
	uint8_t b;
	read_at(P(name), 0, &b, 1);
	return b;
}

/* Names: a create without a directory sync is undone; a rename over an
 * existing file without one is undone and the replaced file comes back;
 * an unlink without one is undone; what a directory sync covered stays. */
Test(synclog, names_no_directory_sync_covered_are_undone)
{
	make_file("kept", 1, true);
	make_file("target", 3, true);
	make_file("target.tmp", 4, true);
	make_file("gone", 5, true);
	make_file("moved.tmp", 6, true);
	make_file("removed", 7, true);
	make_file("late", 8, true);
	cr_assert_eq(io->ops->rename(io, P("moved.tmp"), P("moved")), 0);
	cr_assert_eq(io->ops->unlink(io, P("removed")), 0);
	cr_assert_eq(io->ops->fsync_dir(io, dir), 0); /* covers the two */
	/* none of these is covered by a directory sync */
	make_file("lost", 2, false);
	cr_assert_eq(io->ops->rename(io, P("target.tmp"), P("target")), 0);
	cr_assert_eq(io->ops->unlink(io, P("gone")), 0);
	cr_assert_eq(io->ops->rename(io, P("late"), P("late2")), 0);
	drop();
	cr_assert_eq(first_byte("kept"), 1);
	cr_assert_eq(access(P("lost"), F_OK), -1, "an unsynced create");
	cr_assert_eq(first_byte("target"), 3, "the replaced file is back");
	cr_assert_eq(first_byte("target.tmp"), 4, "under its old name");
	cr_assert_eq(first_byte("gone"), 5, "an unsynced unlink");
	cr_assert_eq(first_byte("moved"), 6, "a synced rename stays");
	cr_assert_eq(access(P("moved.tmp"), F_OK), -1);
	cr_assert_eq(access(P("removed"), F_OK), -1, "a synced unlink stays");
	cr_assert_eq(first_byte("late"), 8);
	cr_assert_eq(access(P("late2"), F_OK), -1);
}
