/*
 * io_uring.c — the production I/O backend: real files, with the hot-path
 * writes and fdatasyncs going through io_uring (see io.h for the contract).
 *
 * Synchronous ops are plain syscalls returning -errno; pread/pwrite loop over
 * EINTR and short transfers. They may be called from any thread.
 *
 * Ring (one struct io_uring per struct uring_ring, owned by one shard thread):
 *   - ring_write / ring_fdatasync / ring_write_dsync only queue SQEs; if
 *     the SQ is full they submit first. ring_wait submits and waits in one
 *     io_uring_enter. ring_write_dsync is a write with RWF_DSYNC.
 *   - PIO_DIRECT: the file gets a second descriptor opened O_DIRECT, used
 *     by the ring writes only (synchronous ops keep the buffered one, but
 *     for PIO_DIRECT_FILL's aligned pwrites; a
 *     direct write writes back and drops the cached pages it overlaps, so
 *     both views agree). A direct write of an allocated, already-written
 *     extent needs no io-wq worker: the kernel issues it from
 *     io_uring_enter and completes it from the device's interrupt. With
 *     RWF_DSYNC on a device without FUA a kernel worker then issues the
 *     cache flush; with FUA the write itself is durable.
 *   - Wake-up: an eventfd read is kept armed inside the ring under the
 *     internal tag UR_TAG_WAKE; its completion is consumed (never reported)
 *     and the read is re-armed. ring_wake() writes to the eventfd and is the
 *     only ring function other threads may call. Because the eventfd counter
 *     persists until read, a wake that arrives while the read is not armed
 *     is not lost: the re-armed read completes at once.
 *
 * Invariants:
 *   1. r->inflight counts caller ops queued or submitted whose CQE has not
 *      been reaped; it never exceeds r->depth (ring ops return -EBUSY).
 *   2. The SQ has depth+1 entries and the CQ 2*(depth+1), so the caller ops
 *      plus the one wake read always fit: the CQ cannot overflow.
 *   3. At most one wake read is armed (r->wake_armed), reading into
 *      r->wake_buf, which lives until ring_free has seen its CQE.
 *
 * TEST-ONLY sync log (io_synclog.c): with PARLEY_TEST_SYNC_LOG set, every
 * file remembers its absolute path and every operation is recorded there;
 * ring ops then go to the kernel tagged with a slot index (r->slots keeps
 * the caller's user_data, the op's log id and kind), so a completion can be
 * logged before it is handed back. Writes queued with `link` ahead of an
 * fdatasync of the same file are named on its F line: the kernel runs
 * them first. Off, none of this runs.
 *
 * pio_free() for every backend lives here as well (it only calls destroy).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"

#define UR_TAG_WAKE (UINT64_MAX - 1)
#define UR_TAG_CANCEL (UINT64_MAX - 2)
/* ring_free gives up waiting for the kernel after this many idle seconds */
#define UR_FREE_WAIT_S 30
/* LIBURING_UDATA_TIMEOUT (UINT64_MAX) may appear on kernels without
 * IORING_FEAT_EXT_ARG; both tags are >= PIO_UDATA_RESERVED. */

struct pio_file {
	int fd;
	int dfd;    /* PIO_DIRECT / _FILL: an O_DIRECT handle, or -1 */
	bool align; /* PIO_DIRECT was asked: ring writes must be aligned */
	bool dfill; /* PIO_DIRECT_FILL: aligned pwrites go through dfd */
	char *path; /* absolute; only with the test-only sync log */
	uint64_t ino; /* its inode: the sync log's key (renames keep it) */
};

/* a ring op in flight, with the sync log on */
struct ur_slot {
	uint64_t ud; /* the caller's user_data */
	uint64_t id; /* the op's sync log id */
	uint64_t fid; /* a dsync write: the id of the sync it carries */
	bool used, sync;
};

#define UR_CHAIN_MAX 16 /* linked writes remembered ahead of an fdatasync */

struct pio_ring {
	struct io_uring ring;
	int efd;
	unsigned depth;
	unsigned inflight;   /* invariant 1 */
	bool wake_armed;     /* invariant 3 */
	uint64_t wake_buf;
	/* test-only sync log (NULL slots: off) */
	struct ur_slot *slots;
	unsigned slot_hint;
	unsigned nchain;
	uint64_t chain_id[UR_CHAIN_MAX];
	uint64_t chain_ino[UR_CHAIN_MAX];
};

static const struct pio_ops uring_ops;
static int64_t ur_size(struct pio *io, struct pio_file *f);
static uint64_t ur_slot_give(struct pio_ring *r, uint64_t tag, int res,
			     bool log);

/* ---- synchronous ops ---------------------------------------------------- */

static int ur_open(struct pio *io, const char *path, int flags,
		   struct pio_file **out)
{
	int oflags = O_RDWR | O_CLOEXEC;
	if (flags & PIO_CREATE)
		oflags |= O_CREAT;
	if (flags & PIO_EXCL)
		oflags |= O_EXCL;
	pio_guard_note(io, PE_IO_OPEN, path);
	struct pio_file *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	bool trk = pio_synclog_on();
	bool existed = (flags & PIO_CREATE) && trk && access(path, F_OK) == 0;
	int fd;
	do {
		fd = open(path, oflags, 0644);
	} while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		int err = -errno;
		free(f);
		return err;
	}
	f->fd = fd;
	f->dfd = -1;
	if (flags & (PIO_DIRECT | PIO_DIRECT_FILL)) {
		/* A second open file description on the same inode: the page
		 * cache stays coherent (a direct write writes back and drops the
		 * cached pages it overlaps). EINVAL: the file system has no
		 * O_DIRECT (tmpfs); the ring writes then go through the cache. */
		f->align = (flags & PIO_DIRECT) != 0;
		f->dfill = (flags & PIO_DIRECT_FILL) != 0;
		do {
			f->dfd = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
		} while (f->dfd < 0 && errno == EINTR);
		if (f->dfd < 0 && errno != EINVAL) {
			int err = -errno;
			close(fd);
			free(f);
			return err;
		}
		/* A file system that reports its direct I/O alignment must
		 * accept PIO_DIRECT_ALIGN (0: no direct I/O for this file) */
		struct statx sx;
		if (f->dfd >= 0 &&
		    statx(f->dfd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
		    (sx.stx_mask & STATX_DIOALIGN) &&
		    (sx.stx_dio_mem_align == 0 || sx.stx_dio_offset_align == 0 ||
		     PIO_DIRECT_ALIGN % sx.stx_dio_mem_align ||
		     PIO_DIRECT_ALIGN % sx.stx_dio_offset_align)) {
			close(f->dfd);
			f->dfd = -1;
		}
	}
	if (trk) {
		char abs[PATH_MAX];
		pio_synclog_abs(path, abs, sizeof abs);
		f->path = strdup(abs);
		if (!f->path) {
			close(fd);
			if (f->dfd >= 0)
				close(f->dfd);
			free(f);
			return -ENOMEM;
		}
		struct stat st;
		f->ino = fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
		if ((flags & PIO_CREATE) && !existed)
			pio_synclog_created(f->ino, abs);
		else
			pio_synclog_opened(f->ino, abs, ur_size(io, f));
	}
	*out = f;
	return 0;
}

static void ur_close(struct pio *io, struct pio_file *f)
{
	if (!f)
		return;
	close(f->fd); /* close(2) must not be retried on Linux */
	if (f->dfd >= 0)
		close(f->dfd);
	free(f->path);
	free(f);
}

static int64_t ur_pread(struct pio *io, struct pio_file *f, void *buf,
			size_t len, uint64_t off)
{
	pio_guard_note(io, PE_IO_PREAD, NULL);
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(f->fd, (uint8_t *)buf + done, len - done,
				  (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break; /* end of file */
		done += (size_t)n;
	}
	return (int64_t)done;
}

static bool ur_aligned(const void *buf, size_t len, uint64_t off);

static int ur_pwrite(struct pio *io, struct pio_file *f, const void *buf,
		     size_t len, uint64_t off)
{
	pio_guard_note(io, PE_IO_PWRITE, NULL);
	uint64_t id = 0;
	if (f->path) {
		id = pio_synclog_id();
		pio_synclog_queue(id, f->ino, f->path, off, len);
	}
	size_t done = 0;
	int rc = 0;
	while (done < len) {
		const uint8_t *b = (const uint8_t *)buf + done;
		/* PIO_DIRECT_FILL: around the page cache when aligned */
		bool direct = f->dfill && f->dfd >= 0 &&
			      ur_aligned(b, len - done, off + done);
		ssize_t n = pwrite(direct ? f->dfd : f->fd, b, len - done,
				   (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (direct && errno == EINVAL) {
				f->dfill = false; /* refused: buffered from now */
				continue;
			}
			rc = -errno;
			break;
		}
		if (n == 0) {
			rc = -EIO; /* no progress: do not spin */
			break;
		}
		done += (size_t)n;
	}
	if (f->path)
		pio_synclog_done(id, rc ? rc : (int64_t)done);
	return rc;
}

static int ur_fdatasync(struct pio *io, struct pio_file *f)
{
	/* No retry on EINTR-like failures of fsync: an error is reported as is
	 * and the caller treats it as fatal (see DESIGN: no fsync retry). */
	pio_guard_note(io, PE_IO_FDATASYNC, NULL);
	uint64_t fid = 0;
	if (f->path) {
		fid = pio_synclog_id();
		pio_synclog_sync_begin(fid, f->ino, f->path, NULL, 0);
	}
	int rc = fdatasync(f->fd) < 0 ? -errno : 0;
	if (f->path && rc == 0)
		pio_synclog_sync_done(fid);
	return rc;
}

static int ur_truncate(struct pio *io, struct pio_file *f, uint64_t size)
{
	pio_guard_note(io, PE_IO_TRUNCATE, NULL);
	int rc;
	do {
		rc = ftruncate(f->fd, (off_t)size);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return -errno;
	if (f->path)
		pio_synclog_truncate(f->ino, f->path, size);
	return 0;
}

static int64_t ur_size(struct pio *io, struct pio_file *f)
{
	struct stat st;
	if (fstat(f->fd, &st) < 0)
		return -errno;
	return (int64_t)st.st_size;
}

static int ur_rename(struct pio *io, const char *from, const char *to)
{
	pio_guard_note(io, PE_IO_RENAME, to);
	if (pio_synclog_on())
		return pio_synclog_rename(from, to);
	return rename(from, to) < 0 ? -errno : 0;
}

static int ur_unlink(struct pio *io, const char *path)
{
	pio_guard_note(io, PE_IO_UNLINK, path);
	if (pio_synclog_on())
		return pio_synclog_unlink(path);
	return unlink(path) < 0 ? -errno : 0;
}

static int ur_mkdir(struct pio *io, const char *path)
{
	pio_guard_note(io, PE_IO_MKDIR, path);
	return mkdir(path, 0755) < 0 ? -errno : 0;
}

static int ur_fsync_dir(struct pio *io, const char *path)
{
	pio_guard_note(io, PE_IO_FSYNC_DIR, path);
	bool trk = pio_synclog_on();
	uint64_t seq = trk ? pio_synclog_dir_begin() : 0;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	if (trk && rc == 0)
		pio_synclog_dir_synced(seq, path);
	return rc;
}

/* flock() on <dir>/LOCK: the lock belongs to the open file description, so
 * it conflicts with a second open in this process too, and the kernel drops
 * it when the process dies. The holder's pid is written for diagnostics. */
static int ur_lock(struct pio *io, const char *dir, bool exclusive,
		   int64_t *token)
{
	char path[1024];
	if (snprintf(path, sizeof path, "%s/LOCK", dir) >= (int)sizeof path)
		return -PARLEY_EINVAL;
	int fd = open(path, (exclusive ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC,
		      0644);
	if (fd < 0 && !exclusive && errno == ENOENT) {
		*token = -1; /* no writer ever ran here: nothing to share */
		return 0;
	}
	if (fd < 0)
		return -errno;
	int rc;
	do {
		rc = flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int err = errno == EWOULDBLOCK ? -PARLEY_ELOCKED : -errno;
		close(fd);
		return err;
	}
	if (exclusive) {
		char pid[32];
		int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
		if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) != n)
			PLOG_W("io", "could not record the lock holder", "path=%s", path);
	}
	*token = fd;
	return 0;
}

static void ur_unlock(struct pio *io, int64_t token)
{
	(void)io;
	if (token >= 0)
		close((int)token); /* releases the flock */
}

static int ur_list(struct pio *io, const char *dir, pio_list_cb cb, void *arg)
{
	pio_guard_note(io, PE_IO_LIST, dir);
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	int rc = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				rc = -errno;
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		rc = cb(arg, de->d_name);
		if (rc)
			break;
	}
	closedir(d);
	return rc;
}

/* ---- ring --------------------------------------------------------------- */

/* Returns an SQE, submitting queued ones first if the SQ is full. */
static struct io_uring_sqe *ur_get_sqe(struct pio_ring *r, int *err)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	if (sqe)
		return sqe;
	int rc = io_uring_submit(&r->ring);
	if (rc < 0) {
		*err = rc;
		return NULL;
	}
	sqe = io_uring_get_sqe(&r->ring);
	if (!sqe)
		*err = -EBUSY;
	return sqe;
}

static int ur_arm_wake(struct pio_ring *r)
{
	if (r->wake_armed)
		return 0;
	int err = 0;
	struct io_uring_sqe *sqe = ur_get_sqe(r, &err);
	if (!sqe)
		return err;
	io_uring_prep_read(sqe, r->efd, &r->wake_buf, sizeof(r->wake_buf), 0);
	io_uring_sqe_set_data64(sqe, UR_TAG_WAKE);
	r->wake_armed = true;
	return 0;
}

static int ur_ring_new(struct pio *io, unsigned depth, struct pio_ring **out)
{
	if (depth == 0 || depth > 32768)
		return -EINVAL;
	struct pio_ring *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->depth = depth;
	r->efd = eventfd(0, EFD_CLOEXEC);
	if (r->efd < 0) {
		int err = -errno;
		free(r);
		return err;
	}
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = 2 * (depth + 1);
	if (pio_synclog_on()) {
		r->slots = calloc(depth, sizeof *r->slots);
		if (!r->slots) {
			close(r->efd);
			free(r);
			return -ENOMEM;
		}
	}
	int rc = io_uring_queue_init_params(depth + 1, &r->ring, &p);
	if (rc < 0) {
		close(r->efd);
		free(r->slots);
		free(r);
		return rc;
	}
	rc = ur_arm_wake(r);
	if (rc == 0) {
		rc = io_uring_submit(&r->ring);
		rc = rc < 0 ? rc : 0;
	}
	if (rc < 0) {
		/* nothing reached the kernel: no op can still be pending */
		io_uring_queue_exit(&r->ring);
		close(r->efd);
		free(r->slots);
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

static void ur_ring_free(struct pio_ring *r)
{
	if (!r)
		return;
	/* Cancel the wake read and wait for every op still in the kernel, so
	 * no completion can write into memory we are about to free. */
	if (r->wake_armed) {
		int err = 0;
		struct io_uring_sqe *sqe = ur_get_sqe(r, &err);
		if (sqe) {
			io_uring_prep_cancel64(sqe, UR_TAG_WAKE, 0);
			io_uring_sqe_set_data64(sqe, UR_TAG_CANCEL);
		}
	}
	io_uring_submit(&r->ring);
	/* Bounded: an op that never completes (a hung device, or an SQE that
	 * could not be submitted) must not hang shutdown. Then the ring and
	 * its buffers are leaked on purpose: the kernel may still write. */
	unsigned idle_s = 0;
	while (r->wake_armed || r->inflight > 0) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {.tv_sec = 1};
		int rc = io_uring_wait_cqe_timeout(&r->ring, &cqe, &ts);
		if (rc == -EINTR)
			continue;
		if (rc == -ETIME && ++idle_s < UR_FREE_WAIT_S)
			continue;
		if (rc < 0) {
			PLOG_E("io_uring", "ring_free: ops still in flight, "
			       "leaking the ring", "inflight=%u wake=%d err=%d",
			       r->inflight, (int)r->wake_armed, rc);
			return;
		}
		idle_s = 0;
		uint64_t ud = io_uring_cqe_get_data64(cqe);
		if (ud == UR_TAG_WAKE)
			r->wake_armed = false;
		else if (ud < PIO_UDATA_RESERVED && r->inflight > 0) {
			if (r->slots)
				(void)ur_slot_give(r, ud, cqe->res, true);
			r->inflight--;
		}
		io_uring_cqe_seen(&r->ring, cqe);
	}
	io_uring_queue_exit(&r->ring);
	close(r->efd);
	free(r->slots);
	free(r);
}

static int ur_check_op(struct pio_ring *r, uint64_t user_data)
{
	if (user_data >= PIO_UDATA_RESERVED)
		return -EINVAL;
	if (r->inflight >= r->depth)
		return -EBUSY;
	return 0;
}

/* Test-only sync log: a free slot for a ring op (there is one per depth,
 * and ur_check_op keeps in-flight ops within depth); returns its index,
 * the tag the kernel sees. */
static uint64_t ur_slot_take(struct pio_ring *r, uint64_t ud, uint64_t id,
			     bool sync)
{
	for (unsigned k = 0; k < r->depth; k++) {
		unsigned i = (r->slot_hint + k) % r->depth;
		if (!r->slots[i].used) {
			r->slots[i] = (struct ur_slot){.ud = ud, .id = id,
						       .used = true, .sync = sync};
			/* .fid: set by the caller of a dsync write */
			r->slot_hint = (i + 1) % r->depth;
			return i;
		}
	}
	PARLEY_ASSERT(!"ring slot table full");
	return 0;
}

/* A write joined the current chain of linked ops (or ended it). */
static void ur_chain_note(struct pio_ring *r, bool link, uint64_t id,
			  uint64_t ino)
{
	if (!link) {
		r->nchain = 0;
		return;
	}
	if (r->nchain < UR_CHAIN_MAX) {
		r->chain_id[r->nchain] = id;
		r->chain_ino[r->nchain] = ino;
		r->nchain++;
	}
}

/* The caller's user_data of a reaped tag, the sync log told first. */
static uint64_t ur_slot_give(struct pio_ring *r, uint64_t tag, int res,
			     bool log)
{
	PARLEY_ASSERT(tag < r->depth && r->slots[tag].used);
	struct ur_slot *s = &r->slots[tag];
	s->used = false;
	if (log && s->id) {
		if (s->sync) {
			if (res == 0)
				pio_synclog_sync_done(s->id);
		} else {
			pio_synclog_done(s->id, res);
			if (s->fid && res >= 0)
				pio_synclog_sync_done(s->fid);
		}
	}
	return s->ud;
}

static bool ur_aligned(const void *buf, size_t len, uint64_t off)
{
	return (uintptr_t)buf % PIO_DIRECT_ALIGN == 0 &&
	       len % PIO_DIRECT_ALIGN == 0 && off % PIO_DIRECT_ALIGN == 0;
}

/* The SQE of a write of buf (len bytes at off) to f, through its
 * O_DIRECT descriptor when it has one, tagged user_data; NULL with *rc
 * when the op is refused (bad tag, over INT_MAX — res is an int: keep it
 * unambiguous —, unaligned on a PIO_DIRECT file, no SQE). */
static struct io_uring_sqe *ur_write_sqe(struct pio_ring *r, struct pio_file *f,
					 const void *buf, size_t len,
					 uint64_t off, uint64_t user_data,
					 int *rc)
{
	*rc = ur_check_op(r, user_data);
	if (*rc)
		return NULL;
	*rc = -EINVAL;
	if (len > INT_MAX || (f->align && !ur_aligned(buf, len, off)))
		return NULL;
	struct io_uring_sqe *sqe = ur_get_sqe(r, rc);
	if (!sqe)
		return NULL;
	io_uring_prep_write(sqe, f->dfd >= 0 ? f->dfd : f->fd, buf,
			    (unsigned)len, off);
	io_uring_sqe_set_data64(sqe, user_data);
	return sqe;
}

static int ur_ring_write(struct pio_ring *r, struct pio_file *f,
			 const void *buf, size_t len, uint64_t off,
			 uint64_t user_data, bool link)
{
	int rc;
	struct io_uring_sqe *sqe = ur_write_sqe(r, f, buf, len, off, user_data,
						&rc);
	if (!sqe)
		return rc;
	if (r->slots && f->path) {
		uint64_t id = pio_synclog_id();
		io_uring_sqe_set_data64(sqe, ur_slot_take(r, user_data, id, false));
		pio_synclog_queue(id, f->ino, f->path, off, len);
		ur_chain_note(r, link, id, f->ino);
	} else if (r->slots) {
		io_uring_sqe_set_data64(sqe, ur_slot_take(r, user_data, 0, false));
		ur_chain_note(r, link, 0, 0);
	}
	if (link)
		io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
	r->inflight++;
	return 0;
}

static int ur_ring_fdatasync(struct pio_ring *r, struct pio_file *f,
			     uint64_t user_data)
{
	int rc = ur_check_op(r, user_data);
	if (rc)
		return rc;
	struct io_uring_sqe *sqe = ur_get_sqe(r, &rc);
	if (!sqe)
		return rc;
	io_uring_prep_fsync(sqe, f->fd, IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data64(sqe, user_data);
	if (r->slots) {
		uint64_t fid = f->path ? pio_synclog_id() : 0;
		io_uring_sqe_set_data64(sqe, ur_slot_take(r, user_data, fid, true));
		if (f->path) {
			uint64_t ids[UR_CHAIN_MAX];
			unsigned n = 0;
			for (unsigned i = 0; i < r->nchain; i++)
				if (r->chain_id[i] && r->chain_ino[i] == f->ino)
					ids[n++] = r->chain_id[i];
			pio_synclog_sync_begin(fid, f->ino, f->path, ids, n);
		}
		r->nchain = 0; /* not linked: the chain ends here */
	}
	r->inflight++;
	return 0;
}

/* One op: the kernel writes, then syncs what it wrote (RWF_DSYNC: for a
 * direct write on a device without FUA, a cache flush after the write;
 * for a buffered one, the range's writeback and a flush), and completes
 * once both are done. The sync log names the write on the sync's F line,
 * as for a write linked ahead of an fdatasync. */
static int ur_ring_write_dsync(struct pio_ring *r, struct pio_file *f,
			       const void *buf, size_t len, uint64_t off,
			       uint64_t user_data)
{
	int rc;
	struct io_uring_sqe *sqe = ur_write_sqe(r, f, buf, len, off, user_data,
						&rc);
	if (!sqe)
		return rc;
	sqe->rw_flags = RWF_DSYNC;
	if (r->slots) {
		uint64_t id = f->path ? pio_synclog_id() : 0;
		uint64_t fid = f->path ? pio_synclog_id() : 0;
		uint64_t tag = ur_slot_take(r, user_data, id, false);
		r->slots[tag].fid = fid;
		io_uring_sqe_set_data64(sqe, tag);
		if (f->path) {
			pio_synclog_queue(id, f->ino, f->path, off, len);
			pio_synclog_sync_begin(fid, f->ino, f->path, &id, 1);
		}
		r->nchain = 0;
	}
	r->inflight++;
	return 0;
}

static int ur_ring_wait(struct pio_ring *r, struct pio_cqe *out, int max,
			int timeout_ms)
{
	if (max < 0 || (max > 0 && !out))
		return -EINVAL;
	/* Completions left over from a previous call: do not block. */
	if (io_uring_cq_ready(&r->ring) > 0)
		timeout_ms = 0;

	int rc;
	if (timeout_ms == 0) {
		rc = io_uring_submit(&r->ring);
	} else if (timeout_ms < 0) {
		rc = io_uring_submit_and_wait(&r->ring, 1);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ms / 1000,
			.tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
		};
		struct io_uring_cqe *cqe = NULL;
		rc = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts,
						      NULL);
	}
	if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN &&
	    rc != -EBUSY)
		return rc;

	/* Reap a batch. */
	int n = 0;
	unsigned seen = 0;
	unsigned head;
	struct io_uring_cqe *cqe;
	io_uring_for_each_cqe(&r->ring, head, cqe)
	{
		uint64_t ud = io_uring_cqe_get_data64(cqe);
		if (ud >= PIO_UDATA_RESERVED) {
			if (ud == UR_TAG_WAKE)
				r->wake_armed = false;
			seen++;
			continue;
		}
		if (n >= max)
			break;
		out[n].user_data = r->slots ? ur_slot_give(r, ud, cqe->res, true)
					    : ud;
		out[n].res = cqe->res;
		n++;
		seen++;
		PARLEY_ASSERT(r->inflight > 0);
		r->inflight--;
	}
	io_uring_cq_advance(&r->ring, seen);

	if (!r->wake_armed) {
		/* Queued now, submitted by this or the next ring_wait. */
		rc = ur_arm_wake(r);
		if (rc == 0)
			io_uring_submit(&r->ring);
		else if (n == 0)
			return rc;
	}
	return n;
}

static void ur_ring_wake(struct pio_ring *r)
{
	uint64_t one = 1;
	ssize_t w;
	do {
		w = write(r->efd, &one, sizeof(one));
	} while (w < 0 && errno == EINTR);
	/* EAGAIN means the counter is saturated: a wake is already pending. */
}

static void ur_destroy(struct pio *io)
{
	free(io);
}

static const struct pio_ops uring_ops = {
	.open = ur_open,
	.close = ur_close,
	.pread = ur_pread,
	.pwrite = ur_pwrite,
	.fdatasync = ur_fdatasync,
	.truncate = ur_truncate,
	.size = ur_size,
	.rename = ur_rename,
	.unlink = ur_unlink,
	.mkdir = ur_mkdir,
	.fsync_dir = ur_fsync_dir,
	.list = ur_list,
	.lock = ur_lock,
	.unlock = ur_unlock,
	.ring_new = ur_ring_new,
	.ring_free = ur_ring_free,
	.ring_write = ur_ring_write,
	.ring_fdatasync = ur_ring_fdatasync,
	.ring_write_dsync = ur_ring_write_dsync,
	.ring_wait = ur_ring_wait,
	.ring_wake = ur_ring_wake,
	.destroy = ur_destroy,
};

struct pio *pio_uring_new(void)
{
	struct pio *io = calloc(1, sizeof(*io));
	if (!io)
		return NULL;
	io->ops = &uring_ops;
	return io;
}

void pio_free(struct pio *io)
{
	if (io)
		io->ops->destroy(io);
}
