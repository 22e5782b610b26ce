/*
 * io_synclog.c — TEST-ONLY: a record of what each completed fdatasync and
 * directory fsync of the io_uring backend made durable, so that a test can
 * kill -9 a real parleyd and then take away exactly what a power loss could
 * take (tools/drop-unsynced.py). A kill -9 alone never loses a byte the
 * process wrote: the page cache keeps it.
 *
 * Off unless the environment variable PARLEY_TEST_SYNC_LOG names a file
 * (read once, at the first pio_uring_new). Never set it in production: it
 * costs a write(2) per I/O and keeps hard links of replaced and removed
 * files until their directory is synced.
 *
 * The side log is a text file opened O_APPEND; each event is one write(2)
 * of one line, so lines never interleave and a kill -9 never tears one
 * (page cache). Paths are absolute (a relative path is prefixed with the
 * working directory; symlinks are not resolved). Events:
 *
 *   Q id ino path off len  a write is about to be issued (ring: queued;
 *                       synchronous: before pwrite): its bytes may reach
 *                       the file from now on
 *   W id res            that write completed with res (bytes, or -errno)
 *   F fid ino path [ids]  an fdatasync is about to be issued; it covers
 *                       the writes of that file completed (W) before this
 *                       line, and the ring writes linked ahead of it (ids)
 *   S fid               that fdatasync completed successfully
 *   T ino path size     the file was truncated to size
 *   O ino path size     an existing file was opened, at that size (what
 *                       is there is durable: the previous run's losses
 *                       were taken before this run started)
 *   C eid ino path      open() created the file
 *   R eid bid from to   rename; bid > 0: `to` existed and was first hard-
 *                       linked as <log>.d/<bid> (what a lost rename brings
 *                       back)
 *   U eid bid path      unlink; the file was first linked as <log>.d/<bid>
 *   D seq dir           an fsync of the directory completed: every C, R, U
 *                       of an entry in dir with eid < seq is durable
 *
 * eid and seq come from one counter: an event's eid is drawn after its
 * operation completed, a directory sync's seq before it started, so
 * eid < seq proves the sync saw the change.
 *
 * Ordering is conservative: a line is written before the operation it
 * announces (Q, F) or after it completed but before its caller can act on
 * it (W, S, D: the CQE is handed over, or the call returns, after the
 * line). So the log never claims a byte durable that a power loss could
 * take; it may miss a sync that completed in the instant of the kill,
 * which the engine had not seen either.
 *
 * Hard links are kept for at most until the next fsync of the directories
 * involved (then the event is durable and the link is removed here).
 *
 * Threads: any; one mutex around the pending-link table; log writes are
 * single write(2) calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "parley_common.h"

/* Pending hard links (replaced or removed files whose directory is not
 * synced yet); beyond this many the oldest is kept and new events fall
 * back to no link (then the tool cannot bring that file back: logged). */
#define SYNCLOG_MAX_PENDING 4096

struct synclog_link {
	uint64_t bid;
	uint64_t eid; /* 0 until the rename or unlink is done */
	char dir1[PATH_MAX], dir2[PATH_MAX];
	bool synced1, synced2;
};

static pthread_once_t sl_once = PTHREAD_ONCE_INIT;
static int sl_fd = -1;
static char sl_bdir[PATH_MAX];
static _Atomic uint64_t sl_next = 1;
static pthread_mutex_t sl_mu = PTHREAD_MUTEX_INITIALIZER;
static struct synclog_link *sl_links;
static unsigned sl_nlinks;

static void sl_init(void)
{
	const char *p = getenv("PARLEY_TEST_SYNC_LOG");
	if (!p || !*p)
		return;
	char abs[PATH_MAX];
	pio_synclog_abs(p, abs, sizeof abs);
	if (snprintf(sl_bdir, sizeof sl_bdir, "%s.d", abs) >= (int)sizeof sl_bdir)
		return;
	if (mkdir(sl_bdir, 0755) && errno != EEXIST) {
		PLOG_E("io", "test sync log: cannot make its link directory",
		       "path=%s err=%d", sl_bdir, errno);
		return;
	}
	sl_links = calloc(SYNCLOG_MAX_PENDING, sizeof *sl_links);
	if (!sl_links)
		return;
	sl_fd = open(abs, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (sl_fd < 0) {
		PLOG_E("io", "test sync log: cannot open", "path=%s err=%d", abs,
		       errno);
		return;
	}
	PLOG_W("io", "TEST-ONLY sync log on (PARLEY_TEST_SYNC_LOG)", "path=%s",
	       abs);
}

bool pio_synclog_on(void)
{
	pthread_once(&sl_once, sl_init);
	return sl_fd >= 0;
}

void pio_synclog_abs(const char *path, char *out, size_t cap)
{
	char cwd[PATH_MAX];
	if (path[0] == '/' || !getcwd(cwd, sizeof cwd))
		snprintf(out, cap, "%s", path);
	else
		snprintf(out, cap, "%s/%s", cwd, path);
}

uint64_t pio_synclog_id(void)
{
	return atomic_fetch_add(&sl_next, 1);
}

static void sl_line(const char *fmt, ...)
{
	char line[3 * PATH_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof line - 1)
		return;
	line[n++] = '\n';
	ssize_t w;
	do {
		w = write(sl_fd, line, (size_t)n);
	} while (w < 0 && errno == EINTR);
}

void pio_synclog_queue(uint64_t id, uint64_t ino, const char *path,
		       uint64_t off, uint64_t len)
{
	sl_line("Q %" PRIu64 " %" PRIu64 " %s %" PRIu64 " %" PRIu64, id, ino,
		path, off, len);
}

void pio_synclog_done(uint64_t id, int64_t res)
{
	sl_line("W %" PRIu64 " %" PRId64, id, res);
}

void pio_synclog_sync_begin(uint64_t fid, uint64_t ino, const char *path,
			    const uint64_t *linked, unsigned nlinked)
{
	char ids[512];
	int n = 0;
	ids[0] = 0;
	for (unsigned i = 0; i < nlinked && n < (int)sizeof ids - 24; i++)
		n += snprintf(ids + n, sizeof ids - (size_t)n, " %" PRIu64,
			      linked[i]);
	sl_line("F %" PRIu64 " %" PRIu64 " %s%s", fid, ino, path, ids);
}

void pio_synclog_sync_done(uint64_t fid)
{
	sl_line("S %" PRIu64, fid);
}

void pio_synclog_truncate(uint64_t ino, const char *path, uint64_t size)
{
	sl_line("T %" PRIu64 " %s %" PRIu64, ino, path, size);
}

void pio_synclog_opened(uint64_t ino, const char *path, int64_t size)
{
	sl_line("O %" PRIu64 " %s %" PRId64, ino, path, size);
}

void pio_synclog_created(uint64_t ino, const char *path)
{
	sl_line("C %" PRIu64 " %" PRIu64 " %s", pio_synclog_id(), ino, path);
}

static void sl_dirname(const char *path, char *out, size_t cap)
{
	const char *s = strrchr(path, '/');
	if (!s)
		snprintf(out, cap, ".");
	else if (s == path)
		snprintf(out, cap, "/");
	else
		snprintf(out, cap, "%.*s", (int)(s - path), path);
}

/* Hard-links path into the link directory; 0 when it does not exist or
 * cannot be linked (logged), else the link's id. */
static uint64_t sl_keep(const char *path, const char *d1, const char *d2)
{
	struct stat st;
	if (stat(path, &st))
		return 0;
	uint64_t bid = pio_synclog_id();
	char to[PATH_MAX + 32];
	snprintf(to, sizeof to, "%s/%" PRIu64, sl_bdir, bid);
	pthread_mutex_lock(&sl_mu);
	bool room = sl_nlinks < SYNCLOG_MAX_PENDING;
	if (room && link(path, to) == 0) {
		struct synclog_link *l = &sl_links[sl_nlinks++];
		l->bid = bid;
		l->eid = 0;
		snprintf(l->dir1, sizeof l->dir1, "%s", d1);
		snprintf(l->dir2, sizeof l->dir2, "%s", d2);
		l->synced1 = l->synced2 = false;
	} else {
		PLOG_W("io", "test sync log: cannot keep a replaced file",
		       "path=%s err=%d", path, room ? errno : ENOSPC);
		bid = 0;
	}
	pthread_mutex_unlock(&sl_mu);
	return bid;
}

/* After the rename or unlink: its line, and its link's eid (or the link
 * dropped when the operation failed). */
static void sl_event(uint64_t bid, int rc, const char *op, const char *a,
		     const char *b)
{
	uint64_t eid = pio_synclog_id();
	pthread_mutex_lock(&sl_mu);
	for (unsigned i = 0; bid && i < sl_nlinks; i++) {
		struct synclog_link *l = &sl_links[i];
		if (l->bid != bid)
			continue;
		if (rc) {
			char p[PATH_MAX + 32];
			snprintf(p, sizeof p, "%s/%" PRIu64, sl_bdir, bid);
			(void)unlink(p);
			*l = sl_links[--sl_nlinks];
		} else {
			l->eid = eid;
		}
		break;
	}
	pthread_mutex_unlock(&sl_mu);
	if (rc)
		return;
	if (b)
		sl_line("%s %" PRIu64 " %" PRIu64 " %s %s", op, eid, bid, a, b);
	else
		sl_line("%s %" PRIu64 " %" PRIu64 " %s", op, eid, bid, a);
}

int pio_synclog_rename(const char *from, const char *to)
{
	char af[PATH_MAX], at[PATH_MAX], d1[PATH_MAX], d2[PATH_MAX];
	pio_synclog_abs(from, af, sizeof af);
	pio_synclog_abs(to, at, sizeof at);
	sl_dirname(af, d1, sizeof d1);
	sl_dirname(at, d2, sizeof d2);
	uint64_t bid = sl_keep(at, d1, d2);
	int rc = rename(from, to) < 0 ? -errno : 0;
	sl_event(bid, rc, "R", af, at);
	return rc;
}

int pio_synclog_unlink(const char *path)
{
	char ap[PATH_MAX], d[PATH_MAX];
	pio_synclog_abs(path, ap, sizeof ap);
	sl_dirname(ap, d, sizeof d);
	uint64_t bid = sl_keep(ap, d, d);
	int rc = unlink(path) < 0 ? -errno : 0;
	sl_event(bid, rc, "U", ap, NULL);
	return rc;
}

uint64_t pio_synclog_dir_begin(void)
{
	return pio_synclog_id();
}

void pio_synclog_dir_synced(uint64_t seq, const char *dir)
{
	char ad[PATH_MAX];
	pio_synclog_abs(dir, ad, sizeof ad);
	size_t n = strlen(ad);
	while (n > 1 && ad[n - 1] == '/')
		ad[--n] = 0;
	sl_line("D %" PRIu64 " %s", seq, ad);
	/* links of events now durable are no longer needed */
	pthread_mutex_lock(&sl_mu);
	for (unsigned i = 0; i < sl_nlinks;) {
		struct synclog_link *l = &sl_links[i];
		bool seen = l->eid && l->eid < seq;
		if (seen && !strcmp(l->dir1, ad))
			l->synced1 = true;
		if (seen && !strcmp(l->dir2, ad))
			l->synced2 = true;
		if (l->synced1 && l->synced2) {
			char p[PATH_MAX + 32];
			snprintf(p, sizeof p, "%s/%" PRIu64, sl_bdir, l->bid);
			(void)unlink(p);
			*l = sl_links[--sl_nlinks];
			continue;
		}
		i++;
	}
	pthread_mutex_unlock(&sl_mu);
}
