/*
 * io_mem.c — a deterministic in-memory file system behind the pio vtable,
 * with fault injection, for unit tests and the simulator.
 *
 * Model:
 *   - Files and directories are named by their full (normalised) path. The
 *     root ("/" for absolute paths, "" for relative ones) always exists;
 *     anything else must be created with mkdir, and a file or directory can
 *     only be created inside an existing directory (as on a real disk).
 *   - Each file has `cur` bytes (what reads see) and `dur` bytes (what
 *     survives a crash). pwrite / ring_write change cur; fdatasync makes
 *     dur = cur.
 *   - SIMPLIFICATION: metadata operations (create, mkdir, rename, unlink,
 *     truncate) are durable at once, so fsync_dir never has anything to do
 *     and a crash never loses a file or a rename. (On a real disk they need
 *     an fsync of the file or directory; the real-disk crash tests cover
 *     that.) truncate changes cur and dur alike.
 *   - An unlinked file stays alive while a handle refers to it (POSIX).
 *   - STRICT DIRECTORIES (opt-in, pio_mem_strict_dirs): namespace changes
 *     (create, mkdir, rename, unlink) are not durable until an fsync_dir
 *     of the directory they change (for a rename: the target's); a crash
 *     undoes the others, newest first, as a power loss on a POSIX file
 *     system may. Undoing a mkdir takes everything under the directory
 *     with it (unreachable without its entry). Each change is kept in an
 *     undo journal (which pins the nodes it names) until it is durable.
 *
 * Invariants per file:
 *   1. dur_len <= cur_len.
 *   2. cur and dur differ only inside the dirty range [dlo, dhi) (empty when
 *      dlo == dhi), and [dur_len, cur_len) lies inside it. fdatasync copies
 *      just that range; crash restores just that range.
 *
 * Crash (pio_mem_crash): every file's cur := dur. With `tear`, a prefix of
 * the dirty range ending at a 512-byte boundary (or at its end; possibly
 * empty), chosen by the seeded PRNG, survives as well — bytes outside the
 * dirty range are never altered. Ops still queued on a ring are dropped
 * (they never reached the disk) and unreaped completions are discarded.
 * Handles and rings stay usable (the engine that owned them is gone after
 * pe_abort anyway). A ring must be freed before pio_free.
 *
 * Faults (pio_mem_inject): the next `count` writes (pwrite and ring_write)
 * fail with -EIO or -ENOSPC, the next `count` file fdatasyncs (sync and
 * ring) fail with -EIO. A failed write changes nothing; a failed fsync
 * makes nothing durable. fsync_dir is not a fault target. EIO is checked
 * before ENOSPC when both are armed. pio_mem_fault_scope narrows the
 * armed faults to files whose path contains a given string (say "/wal/" or
 * "/hist/"), so a test can aim them at one writer among several threads;
 * writes and fsyncs of other files neither fail nor use up the count.
 *
 * Ring: ops are queued and executed in order inside ring_wait, so
 * completion order is submission order and runs are deterministic.
 * A dsync write (ring_write_dsync) runs in two halves on two ring_waits:
 * the first writes its bytes (unsynced: a crash now tears them like any
 * unsynced write) and returns without its completion (0, a spurious
 * return; ops queued behind it wait); the next makes exactly its range
 * durable (fsync faults apply) and completes it. PIO_DIRECT files refuse
 * ring writes not aligned to PIO_DIRECT_ALIGN (-EINVAL), as O_DIRECT does.
 * A failed op with `link` makes the next op complete with -ECANCELED
 * (cancellation propagates while `link` is set). ring_wait with nothing to
 * report blocks on a condvar until ring_wake or the timeout. ring_free
 * drops queued ops.
 *
 * Threads: one mutex guards the whole file system and every ring, so shard
 * threads may share one pio_mem. list() calls its callback without the lock.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define MEM_TEAR_GRAIN 512

struct mem_node {
	char *path;
	bool is_dir;
	bool linked;      /* present in the namespace */
	unsigned refs;    /* open handles */
	unsigned pins;    /* undo journal entries naming it */
	uint8_t *cur, *dur;
	size_t cur_len, cur_cap, dur_len, dur_cap;
	size_t dlo, dhi;  /* dirty range, invariant 2 */
	struct mem_node *next; /* all nodes, linked or not */
};

struct pio_file {
	struct mem_node *n;
	bool align; /* opened with PIO_DIRECT: ring writes must be aligned */
	struct pio_file *prev, *next; /* open handles, freed at destroy */
};

enum mem_op_kind { MEM_OP_WRITE, MEM_OP_FSYNC, MEM_OP_WRITE_DSYNC };

struct mem_op {
	enum mem_op_kind kind;
	bool link;
	bool issued; /* a dsync write whose bytes are written, not synced */
	struct pio_file *f;
	const void *buf;
	size_t len;
	uint64_t off;
	uint64_t user_data;
};

struct mem_io;

struct pio_ring {
	struct mem_io *m;
	unsigned depth;
	struct mem_op *ops;      /* queued, [0, nops) */
	unsigned nops;
	struct pio_cqe *cqes;    /* completed, not reaped: [chead, ctail) */
	unsigned chead, ctail;
	bool woken;
	pthread_cond_t cond;
	struct pio_ring *next_ring; /* mem_io.rings */
};

struct mem_io {
	struct pio base; /* first: struct pio * <-> struct mem_io * */
	pthread_mutex_t mu;
	struct parley_rng rng;
	struct mem_node *nodes;
	struct pio_file *handles;
	struct pio_ring *rings;
	uint32_t fault_write_eio, fault_fsync_eio, fault_enospc;
	char *fault_scope; /* NULL = faults hit every file, else only paths
			      containing this (pio_mem_fault_scope) */
	struct mem_lock *locks;
	int64_t next_lock;
	bool strict_dirs;
	struct mem_undo *undo, **undo_tail; /* oldest first */
};

/* A namespace change not yet durable (strict directories). */
enum mem_undo_kind { MEM_U_CREATE, MEM_U_MKDIR, MEM_U_RENAME, MEM_U_UNLINK };
struct mem_undo {
	enum mem_undo_kind kind;
	char *dir;                /* its fsync_dir makes the change durable */
	struct mem_node *node;    /* created / renamed / unlinked node */
	char *old_path;           /* rename: where it was */
	struct mem_node *replaced;/* rename: the target it replaced, or NULL */
	struct mem_undo *next;
};

/* A held directory lock (the in-memory twin of flock on <dir>/LOCK). */
struct mem_lock {
	struct mem_lock *next;
	char *dir; /* normalised */
	bool exclusive;
	int64_t token;
};

static const struct pio_ops mem_ops;

static struct mem_io *mem_of(struct pio *io)
{
	return (struct mem_io *)io;
}

/* ---- paths and nodes ------------------------------------------------------ */

/* Normalised copy: no repeated '/', no trailing '/' (except "/"). */
static char *mem_norm(const char *path)
{
	size_t len = strlen(path);
	char *p = malloc(len + 1);
	if (!p)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (path[i] == '/' && o > 0 && p[o - 1] == '/')
			continue;
		p[o++] = path[i];
	}
	while (o > 1 && p[o - 1] == '/')
		o--;
	p[o] = 0;
	return p;
}

static bool mem_is_root(const char *p)
{
	return p[0] == 0 || !strcmp(p, "/") || !strcmp(p, ".");
}

/* Length of the parent prefix of a normalised path ("/a/b" -> "/a" = 2,
 * "/a" -> "/" = 1, "a" -> "" = 0). */
static size_t mem_parent_len(const char *p)
{
	const char *s = strrchr(p, '/');
	if (!s)
		return 0;
	if (s == p)
		return 1;
	return (size_t)(s - p);
}

static struct mem_node *mem_find(struct mem_io *m, const char *p)
{
	for (struct mem_node *n = m->nodes; n; n = n->next)
		if (n->linked && !strcmp(n->path, p))
			return n;
	return NULL;
}

/* 0 if the parent of p is an existing directory, else -ENOENT/-ENOTDIR. */
static int mem_parent_ok(struct mem_io *m, const char *p)
{
	size_t pl = mem_parent_len(p);
	char buf[PATH_MAX];
	if (pl >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, p, pl);
	buf[pl] = 0;
	if (mem_is_root(buf))
		return 0;
	struct mem_node *d = mem_find(m, buf);
	if (!d)
		return -ENOENT;
	return d->is_dir ? 0 : -ENOTDIR;
}

static struct mem_node *mem_node_new(struct mem_io *m, const char *p,
				     bool is_dir)
{
	struct mem_node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->path = strdup(p);
	if (!n->path) {
		free(n);
		return NULL;
	}
	n->is_dir = is_dir;
	n->linked = true;
	n->next = m->nodes;
	m->nodes = n;
	return n;
}

static void mem_node_unlink_from_list(struct mem_io *m, struct mem_node *n)
{
	for (struct mem_node **pp = &m->nodes; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			return;
		}
	}
}

static void mem_node_free(struct mem_node *n)
{
	free(n->path);
	free(n->cur);
	free(n->dur);
	free(n);
}

/* Drops a node from the namespace; frees it if no handle refers to it. */
static void mem_node_drop(struct mem_io *m, struct mem_node *n)
{
	n->linked = false;
	if (n->refs == 0 && n->pins == 0) {
		mem_node_unlink_from_list(m, n);
		mem_node_free(n);
	}
}

/* ---- strict directories: the undo journal (mutex held) ------------------- */

static char *mem_parent_dup(const char *p)
{
	size_t pl = mem_parent_len(p);
	char *d = malloc(pl + 1);
	if (d) {
		memcpy(d, p, pl);
		d[pl] = 0;
	}
	return d;
}

static void mem_unpin(struct mem_io *m, struct mem_node *n)
{
	if (!n)
		return;
	PARLEY_ASSERT(n->pins > 0);
	n->pins--;
	if (!n->pins && !n->refs && !n->linked) {
		mem_node_unlink_from_list(m, n);
		mem_node_free(n);
	}
}

static void mem_undo_free(struct mem_io *m, struct mem_undo *u)
{
	mem_unpin(m, u->node);
	mem_unpin(m, u->replaced);
	free(u->dir);
	free(u->old_path);
	free(u);
}

/* Records a change of `path`'s directory (strict mode only). Out of
 * memory aborts: silently making a change durable would hide bugs. */
static void mem_journal(struct mem_io *m, enum mem_undo_kind kind,
			const char *path, struct mem_node *node,
			const char *old_path, struct mem_node *replaced)
{
	if (!m->strict_dirs)
		return;
	struct mem_undo *u = calloc(1, sizeof *u);
	PARLEY_ASSERT(u);
	u->kind = kind;
	u->dir = mem_parent_dup(path);
	u->old_path = old_path ? strdup(old_path) : NULL;
	PARLEY_ASSERT(u->dir && (!old_path || u->old_path));
	u->node = node;
	node->pins++;
	u->replaced = replaced;
	if (replaced)
		replaced->pins++;
	if (!m->undo_tail)
		m->undo_tail = &m->undo;
	*m->undo_tail = u;
	m->undo_tail = &u->next;
}

/* fsync_dir(dir): its changes are durable. */
static void mem_journal_sync(struct mem_io *m, const char *dir)
{
	struct mem_undo **pp = &m->undo;
	m->undo_tail = &m->undo;
	while (*pp) {
		struct mem_undo *u = *pp;
		bool root = mem_is_root(dir) && mem_is_root(u->dir);
		if (root || !strcmp(u->dir, dir)) {
			*pp = u->next;
			mem_undo_free(m, u);
		} else {
			pp = &u->next;
			m->undo_tail = pp;
		}
	}
}

static void mem_journal_sync_all(struct mem_io *m)
{
	while (m->undo) {
		struct mem_undo *u = m->undo;
		m->undo = u->next;
		mem_undo_free(m, u);
	}
	m->undo_tail = &m->undo;
}

/* Crash: undo what is not durable, newest first. */
static void mem_journal_crash(struct mem_io *m)
{
	/* reverse the list, then undo in that order */
	struct mem_undo *rev = NULL;
	while (m->undo) {
		struct mem_undo *u = m->undo;
		m->undo = u->next;
		u->next = rev;
		rev = u;
	}
	m->undo_tail = &m->undo;
	while (rev) {
		struct mem_undo *u = rev;
		rev = u->next;
		struct mem_node *n = u->node;
		switch (u->kind) {
		case MEM_U_CREATE:
			n->linked = false;
			break;
		case MEM_U_MKDIR: {
			size_t l = strlen(n->path);
			for (struct mem_node *c = m->nodes; c; c = c->next)
				if (c->linked && !strncmp(c->path, n->path, l) &&
				    c->path[l] == '/')
					c->linked = false;
			n->linked = false;
			break;
		}
		case MEM_U_RENAME:
			free(n->path);
			n->path = u->old_path;
			u->old_path = NULL;
			if (u->replaced)
				u->replaced->linked = true;
			break;
		case MEM_U_UNLINK:
			n->linked = true;
			break;
		}
		mem_undo_free(m, u); /* frees what is now unlinked and unused */
	}
}

static int mem_reserve(uint8_t **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 4096;
	while (nc < need) {
		if (nc > SIZE_MAX / 2)
			return -ENOMEM;
		nc *= 2;
	}
	uint8_t *nb = realloc(*buf, nc);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = nc;
	return 0;
}

static void mem_mark_dirty(struct mem_node *n, size_t lo, size_t hi)
{
	if (lo >= hi)
		return;
	if (n->dlo == n->dhi) {
		n->dlo = lo;
		n->dhi = hi;
	} else {
		n->dlo = PARLEY_MIN(n->dlo, lo);
		n->dhi = PARLEY_MAX(n->dhi, hi);
	}
}

/* ---- file data (mutex held) ------------------------------------------------ */

static bool mem_in_scope(const struct mem_io *m, const struct mem_node *n)
{
	return !m->fault_scope || strstr(n->path, m->fault_scope);
}

static int mem_take_write_fault(struct mem_io *m, const struct mem_node *n)
{
	if (!mem_in_scope(m, n))
		return 0;
	if (m->fault_write_eio) {
		m->fault_write_eio--;
		return -EIO;
	}
	if (m->fault_enospc) {
		m->fault_enospc--;
		return -ENOSPC;
	}
	return 0;
}

static int mem_do_write(struct mem_io *m, struct mem_node *n, const void *buf,
			size_t len, uint64_t off)
{
	int rc = mem_take_write_fault(m, n);
	if (rc)
		return rc;
	if (len == 0)
		return 0;
	if (off > SIZE_MAX - len)
		return -EFBIG;
	size_t end = (size_t)off + len;
	if (end > n->cur_len) {
		rc = mem_reserve(&n->cur, &n->cur_cap, end);
		if (rc)
			return rc;
		size_t old = n->cur_len;
		if (off > old)
			memset(n->cur + old, 0, (size_t)off - old);
		mem_mark_dirty(n, PARLEY_MIN(old, (size_t)off), end);
		n->cur_len = end;
	}
	memcpy(n->cur + off, buf, len);
	mem_mark_dirty(n, (size_t)off, end);
	return 0;
}

static int mem_do_fsync(struct mem_io *m, struct mem_node *n)
{
	if (m->fault_fsync_eio && mem_in_scope(m, n)) {
		m->fault_fsync_eio--;
		return -EIO;
	}
	if (n->dlo == n->dhi)
		return 0;
	int rc = mem_reserve(&n->dur, &n->dur_cap, n->cur_len);
	if (rc)
		return rc;
	size_t hi = PARLEY_MIN(n->dhi, n->cur_len);
	if (hi > n->dlo)
		memcpy(n->dur + n->dlo, n->cur + n->dlo, hi - n->dlo);
	n->dur_len = n->cur_len;
	n->dlo = n->dhi = 0;
	return 0;
}

/* A dsync write's sync: [lo, hi) of cur becomes durable, nothing else
 * (other dirty bytes of the file stay as they are; a gap between the old
 * durable end and lo survives a crash as zeros). Faults as fdatasync. */
static int mem_do_sync_range(struct mem_io *m, struct mem_node *n, size_t lo,
			     size_t hi)
{
	if (m->fault_fsync_eio && mem_in_scope(m, n)) {
		m->fault_fsync_eio--;
		return -EIO;
	}
	if (lo >= hi)
		return 0;
	PARLEY_ASSERT(hi <= n->cur_len);
	int rc = mem_reserve(&n->dur, &n->dur_cap, PARLEY_MAX(n->dur_len, hi));
	if (rc)
		return rc;
	if (n->dur_len < lo)
		memset(n->dur + n->dur_len, 0, lo - n->dur_len);
	memcpy(n->dur + lo, n->cur + lo, hi - lo);
	n->dur_len = PARLEY_MAX(n->dur_len, hi);
	/* invariant 2 holds with the dirty range unchanged (cur and dur now
	 * differ in fewer bytes); clear it when it lay inside [lo, hi) */
	if (n->dlo >= lo && n->dhi <= hi && n->dur_len == n->cur_len)
		n->dlo = n->dhi = 0;
	return 0;
}

/* ---- synchronous ops --------------------------------------------------------- */

static int mem_open(struct pio *io, const char *path, int flags,
		    struct pio_file **out)
{
	pio_guard_note(io, PE_IO_OPEN, path);
	struct mem_io *m = mem_of(io);
	char *p = mem_norm(path);
	struct pio_file *f = calloc(1, sizeof(*f));
	if (!p || !f) {
		free(p);
		free(f);
		return -ENOMEM;
	}
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	struct mem_node *n = mem_find(m, p);
	if (n) {
		if ((flags & PIO_CREATE) && (flags & PIO_EXCL))
			rc = -EEXIST;
		else if (n->is_dir)
			rc = -EISDIR;
	} else if (mem_is_root(p)) {
		rc = -EISDIR;
	} else if (!(flags & PIO_CREATE)) {
		rc = -ENOENT;
	} else {
		rc = mem_parent_ok(m, p);
		if (rc == 0) {
			n = mem_node_new(m, p, false);
			if (!n)
				rc = -ENOMEM;
			else
				mem_journal(m, MEM_U_CREATE, p, n, NULL, NULL);
		}
	}
	if (rc == 0) {
		n->refs++;
		f->n = n;
		f->align = (flags & PIO_DIRECT) != 0;
		f->next = m->handles;
		if (m->handles)
			m->handles->prev = f;
		m->handles = f;
		*out = f;
	}
	pthread_mutex_unlock(&m->mu);
	free(p);
	if (rc)
		free(f);
	return rc;
}

static void mem_close(struct pio *io, struct pio_file *f)
{
	if (!f)
		return;
	struct mem_io *m = mem_of(io);
	pthread_mutex_lock(&m->mu);
	if (f->prev)
		f->prev->next = f->next;
	else
		m->handles = f->next;
	if (f->next)
		f->next->prev = f->prev;
	struct mem_node *n = f->n;
	PARLEY_ASSERT(n->refs > 0);
	n->refs--;
	if (n->refs == 0 && n->pins == 0 && !n->linked) {
		mem_node_unlink_from_list(m, n);
		mem_node_free(n);
	}
	pthread_mutex_unlock(&m->mu);
	free(f);
}

static int64_t mem_pread(struct pio *io, struct pio_file *f, void *buf,
			 size_t len, uint64_t off)
{
	pio_guard_note(io, PE_IO_PREAD, NULL);
	struct mem_io *m = mem_of(io);
	pthread_mutex_lock(&m->mu);
	struct mem_node *n = f->n;
	size_t got = 0;
	if (off < n->cur_len) {
		got = PARLEY_MIN(len, n->cur_len - (size_t)off);
		memcpy(buf, n->cur + off, got);
	}
	pthread_mutex_unlock(&m->mu);
	return (int64_t)got;
}

static int mem_pwrite(struct pio *io, struct pio_file *f, const void *buf,
		      size_t len, uint64_t off)
{
	pio_guard_note(io, PE_IO_PWRITE, NULL);
	struct mem_io *m = mem_of(io);
	pthread_mutex_lock(&m->mu);
	int rc = mem_do_write(m, f->n, buf, len, off);
	pthread_mutex_unlock(&m->mu);
	return rc;
}

static int mem_fdatasync(struct pio *io, struct pio_file *f)
{
	pio_guard_note(io, PE_IO_FDATASYNC, NULL);
	struct mem_io *m = mem_of(io);
	pthread_mutex_lock(&m->mu);
	int rc = mem_do_fsync(m, f->n);
	pthread_mutex_unlock(&m->mu);
	return rc;
}

static int mem_truncate(struct pio *io, struct pio_file *f, uint64_t size)
{
	pio_guard_note(io, PE_IO_TRUNCATE, NULL);
	struct mem_io *m = mem_of(io);
	if (size > SIZE_MAX / 2)
		return -EFBIG;
	size_t sz = (size_t)size;
	pthread_mutex_lock(&m->mu);
	struct mem_node *n = f->n;
	int rc = mem_reserve(&n->cur, &n->cur_cap, sz);
	if (rc == 0)
		rc = mem_reserve(&n->dur, &n->dur_cap, sz);
	if (rc == 0) {
		/* Metadata is durable at once: both views get the new size. */
		if (sz > n->cur_len)
			memset(n->cur + n->cur_len, 0, sz - n->cur_len);
		if (sz > n->dur_len) {
			/* [dur_len, cur_len) is dirty: durable becomes zeros
			 * there (a crash exposes zeros, as a real extended file
			 * would); beyond cur_len both are zeros. */
			memset(n->dur + n->dur_len, 0, sz - n->dur_len);
		}
		n->cur_len = sz;
		n->dur_len = sz;
		if (n->dhi > sz)
			n->dhi = sz;
		if (n->dlo >= n->dhi)
			n->dlo = n->dhi = 0;
	}
	pthread_mutex_unlock(&m->mu);
	return rc;
}

static int64_t mem_size(struct pio *io, struct pio_file *f)
{
	struct mem_io *m = mem_of(io);
	pthread_mutex_lock(&m->mu);
	int64_t s = (int64_t)f->n->cur_len;
	pthread_mutex_unlock(&m->mu);
	return s;
}

static int mem_rename(struct pio *io, const char *from, const char *to)
{
	pio_guard_note(io, PE_IO_RENAME, to);
	struct mem_io *m = mem_of(io);
	char *pf = mem_norm(from), *pt = mem_norm(to);
	if (!pf || !pt) {
		free(pf);
		free(pt);
		return -ENOMEM;
	}
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	struct mem_node *src = mem_find(m, pf);
	struct mem_node *dst = mem_find(m, pt);
	if (!src) {
		rc = -ENOENT;
	} else if (src->is_dir) {
		rc = -ENOTSUP; /* directories are never renamed by the engine */
	} else if (dst && dst->is_dir) {
		rc = -EISDIR;
	} else if (mem_is_root(pt)) {
		rc = -EISDIR;
	} else if ((rc = mem_parent_ok(m, pt)) == 0 && src != dst) {
		char *np = strdup(pt);
		if (!np) {
			rc = -ENOMEM;
		} else {
			mem_journal(m, MEM_U_RENAME, pt, src, pf, dst);
			if (dst)
				mem_node_drop(m, dst);
			free(src->path);
			src->path = np;
		}
	}
	pthread_mutex_unlock(&m->mu);
	free(pf);
	free(pt);
	return rc;
}

static int mem_unlink(struct pio *io, const char *path)
{
	pio_guard_note(io, PE_IO_UNLINK, path);
	struct mem_io *m = mem_of(io);
	char *p = mem_norm(path);
	if (!p)
		return -ENOMEM;
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	struct mem_node *n = mem_find(m, p);
	if (!n)
		rc = mem_is_root(p) ? -EISDIR : -ENOENT;
	else if (n->is_dir)
		rc = -EISDIR;
	else {
		mem_journal(m, MEM_U_UNLINK, p, n, NULL, NULL);
		mem_node_drop(m, n);
	}
	pthread_mutex_unlock(&m->mu);
	free(p);
	return rc;
}

static int mem_mkdir(struct pio *io, const char *path)
{
	pio_guard_note(io, PE_IO_MKDIR, path);
	struct mem_io *m = mem_of(io);
	char *p = mem_norm(path);
	if (!p)
		return -ENOMEM;
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	if (mem_is_root(p) || mem_find(m, p))
		rc = -EEXIST;
	else if ((rc = mem_parent_ok(m, p)) == 0) {
		struct mem_node *d = mem_node_new(m, p, true);
		if (!d)
			rc = -ENOMEM;
		else
			mem_journal(m, MEM_U_MKDIR, p, d, NULL, NULL);
	}
	pthread_mutex_unlock(&m->mu);
	free(p);
	return rc;
}

static int mem_fsync_dir(struct pio *io, const char *path)
{
	pio_guard_note(io, PE_IO_FSYNC_DIR, path);
	struct mem_io *m = mem_of(io);
	char *p = mem_norm(path);
	if (!p)
		return -ENOMEM;
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	if (!mem_is_root(p)) {
		struct mem_node *n = mem_find(m, p);
		if (!n)
			rc = -ENOENT;
		else if (!n->is_dir)
			rc = -ENOTDIR;
	}
	if (rc == 0)
		mem_journal_sync(m, p);
	pthread_mutex_unlock(&m->mu);
	free(p);
	return rc;
}

static int mem_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int mem_list(struct pio *io, const char *dir, pio_list_cb cb, void *arg)
{
	pio_guard_note(io, PE_IO_LIST, dir);
	struct mem_io *m = mem_of(io);
	char *p = mem_norm(dir);
	if (!p)
		return -ENOMEM;
	char **names = NULL;
	size_t nn = 0, cap = 0;
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	bool root = mem_is_root(p);
	/* "." and "" both mean the relative root; "/" the absolute one. */
	const char *want = !strcmp(p, ".") ? "" : p;
	if (!root) {
		struct mem_node *d = mem_find(m, p);
		if (!d)
			rc = -ENOENT;
		else if (!d->is_dir)
			rc = -ENOTDIR;
	}
	for (struct mem_node *n = m->nodes; n && rc == 0; n = n->next) {
		if (!n->linked)
			continue;
		size_t pl = mem_parent_len(n->path);
		if (pl != strlen(want) || strncmp(n->path, want, pl))
			continue;
		if (!strcmp(n->path, "/"))
			continue;
		const char *name = n->path + pl;
		if (*name == '/')
			name++;
		if (nn == cap) {
			size_t nc = cap ? cap * 2 : 16;
			char **nb = realloc(names, nc * sizeof(*nb));
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			names = nb;
			cap = nc;
		}
		if (!(names[nn] = strdup(name))) {
			rc = -ENOMEM;
			break;
		}
		nn++;
	}
	pthread_mutex_unlock(&m->mu);
	free(p);
	/* Sorted: a deterministic order for the simulator. */
	if (rc == 0 && nn > 1)
		qsort(names, nn, sizeof(*names), mem_cmp_str);
	for (size_t i = 0; i < nn && rc == 0; i++)
		rc = cb(arg, names[i]);
	for (size_t i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	return rc;
}

/* ---- ring ----------------------------------------------------------------------- */

static int mem_ring_new(struct pio *io, unsigned depth, struct pio_ring **out)
{
	if (depth == 0 || depth > 32768)
		return -EINVAL;
	struct pio_ring *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->m = mem_of(io);
	r->depth = depth;
	r->ops = calloc(depth, sizeof(*r->ops));
	r->cqes = calloc(depth, sizeof(*r->cqes));
	pthread_condattr_t ca;
	int rc = pthread_condattr_init(&ca);
	if (rc == 0) {
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		rc = pthread_cond_init(&r->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (!r->ops || !r->cqes || rc) {
		if (rc == 0)
			pthread_cond_destroy(&r->cond);
		free(r->ops);
		free(r->cqes);
		free(r);
		return rc ? -rc : -ENOMEM;
	}
	pthread_mutex_lock(&r->m->mu);
	r->next_ring = r->m->rings;
	r->m->rings = r;
	pthread_mutex_unlock(&r->m->mu);
	*out = r;
	return 0;
}

static void mem_ring_free(struct pio_ring *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->m->mu);
	for (struct pio_ring **pp = &r->m->rings; *pp; pp = &(*pp)->next_ring) {
		if (*pp == r) {
			*pp = r->next_ring;
			break;
		}
	}
	pthread_mutex_unlock(&r->m->mu);
	pthread_cond_destroy(&r->cond);
	free(r->ops);
	free(r->cqes);
	free(r);
}

/* Caller ops in flight: queued plus completed-but-unreaped. Lock held. */
static unsigned mem_ring_busy(struct pio_ring *r)
{
	return r->nops + (r->ctail - r->chead);
}

static int mem_ring_queue(struct pio_ring *r, const struct mem_op *op)
{
	if (op->user_data >= PIO_UDATA_RESERVED)
		return -EINVAL;
	if (op->kind == MEM_OP_WRITE && op->len > INT_MAX)
		return -EINVAL;
	int rc = 0;
	pthread_mutex_lock(&r->m->mu);
	if (mem_ring_busy(r) >= r->depth)
		rc = -EBUSY;
	else
		r->ops[r->nops++] = *op;
	pthread_mutex_unlock(&r->m->mu);
	return rc;
}

static bool mem_aligned(const struct pio_file *f, const void *buf, size_t len,
			uint64_t off)
{
	return !f->align || ((uintptr_t)buf % PIO_DIRECT_ALIGN == 0 &&
			     len % PIO_DIRECT_ALIGN == 0 &&
			     off % PIO_DIRECT_ALIGN == 0);
}

static int mem_ring_write(struct pio_ring *r, struct pio_file *f,
			  const void *buf, size_t len, uint64_t off,
			  uint64_t user_data, bool link)
{
	if (!mem_aligned(f, buf, len, off))
		return -EINVAL;
	struct mem_op op = {.kind = MEM_OP_WRITE, .link = link, .f = f,
			    .buf = buf, .len = len, .off = off,
			    .user_data = user_data};
	return mem_ring_queue(r, &op);
}

static int mem_ring_fdatasync(struct pio_ring *r, struct pio_file *f,
			      uint64_t user_data)
{
	struct mem_op op = {.kind = MEM_OP_FSYNC, .f = f,
			    .user_data = user_data};
	return mem_ring_queue(r, &op);
}

static int mem_ring_write_dsync(struct pio_ring *r, struct pio_file *f,
				const void *buf, size_t len, uint64_t off,
				uint64_t user_data)
{
	if (!mem_aligned(f, buf, len, off))
		return -EINVAL;
	struct mem_op op = {.kind = MEM_OP_WRITE_DSYNC, .f = f, .buf = buf,
			    .len = len, .off = off, .user_data = user_data};
	return mem_ring_queue(r, &op);
}

/* Executes every queued op in order into the completion queue. Lock held. */
static void mem_ring_run(struct pio_ring *r)
{
	if (r->chead > 0 && r->chead == r->ctail)
		r->chead = r->ctail = 0;
	if (r->ctail + r->nops > r->depth) {
		/* compact the completion queue to make room */
		unsigned live = r->ctail - r->chead;
		memmove(r->cqes, r->cqes + r->chead, live * sizeof(*r->cqes));
		r->chead = 0;
		r->ctail = live;
	}
	PARLEY_ASSERT(r->ctail + r->nops <= r->depth);
	bool cancel = false;
	unsigned i;
	for (i = 0; i < r->nops; i++) {
		struct mem_op *op = &r->ops[i];
		int res;
		if (op->kind == MEM_OP_WRITE_DSYNC && !cancel && !op->issued) {
			/* First half: the bytes reach the file (a crash from
			 * now tears them like any unsynced write); the op
			 * stays at the head until the next run syncs it. */
			res = mem_do_write(r->m, op->f->n, op->buf, op->len,
					   op->off);
			if (res == 0) {
				op->issued = true;
				break;
			}
		} else if (op->kind == MEM_OP_WRITE_DSYNC && !cancel) {
			/* Second half: its range made durable. */
			res = mem_do_sync_range(r->m, op->f->n, (size_t)op->off,
						(size_t)op->off + op->len);
			if (res == 0)
				res = (int)op->len;
		} else if (cancel) {
			res = -ECANCELED;
		} else if (op->kind == MEM_OP_WRITE) {
			res = mem_do_write(r->m, op->f->n, op->buf, op->len,
					   op->off);
			if (res == 0)
				res = (int)op->len;
		} else {
			res = mem_do_fsync(r->m, op->f->n);
		}
		bool failed = res < 0 ||
			      (op->kind != MEM_OP_FSYNC && res != (int)op->len);
		cancel = op->link && failed;
		r->cqes[r->ctail].user_data = op->user_data;
		r->cqes[r->ctail].res = res;
		r->ctail++;
	}
	/* ops from i on (an issued dsync write first) wait for the next run */
	memmove(r->ops, r->ops + i, (r->nops - i) * sizeof(*r->ops));
	r->nops -= i;
}

static int mem_ring_wait(struct pio_ring *r, struct pio_cqe *out, int max,
			 int timeout_ms)
{
	if (max < 0 || (max > 0 && !out))
		return -EINVAL;
	struct mem_io *m = r->m;
	struct timespec deadline;
	if (timeout_ms > 0) {
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
	}
	int n = 0;
	pthread_mutex_lock(&m->mu);
	mem_ring_run(r);
	for (;;) {
		if (r->ctail > r->chead) {
			while (n < max && r->chead < r->ctail)
				out[n++] = r->cqes[r->chead++];
			/* A pending wake stays set: at worst one extra
			 * (spurious) return, never a lost wake-up. */
			break;
		}
		if (r->woken) {
			r->woken = false;
			break;
		}
		/* a dsync write is half done: return (0, a spurious return)
		 * so that the caller's next wait completes it; a crash
		 * between the two tears it */
		if (timeout_ms == 0 || (r->nops > 0 && r->ops[0].issued))
			break;
		int rc;
		if (timeout_ms < 0)
			rc = pthread_cond_wait(&r->cond, &m->mu);
		else
			rc = pthread_cond_timedwait(&r->cond, &m->mu,
						    &deadline);
		if (rc == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&m->mu);
	return n;
}

static void mem_ring_wake(struct pio_ring *r)
{
	pthread_mutex_lock(&r->m->mu);
	r->woken = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->m->mu);
}

/* ---- lifecycle and test hooks ------------------------------------------------- */

static int mem_lock(struct pio *io, const char *dir, bool exclusive,
		    int64_t *token)
{
	struct mem_io *m = mem_of(io);
	struct mem_lock *l = calloc(1, sizeof *l);
	char *p = mem_norm(dir);
	if (!l || !p) {
		free(l);
		free(p);
		return -ENOMEM;
	}
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	for (struct mem_lock *h = m->locks; h; h = h->next)
		if (!strcmp(h->dir, p) && (exclusive || h->exclusive))
			rc = -PARLEY_ELOCKED;
	if (!rc) {
		l->dir = p;
		l->exclusive = exclusive;
		l->token = ++m->next_lock;
		l->next = m->locks;
		m->locks = l;
		*token = l->token;
	}
	pthread_mutex_unlock(&m->mu);
	if (rc) {
		free(l);
		free(p);
	}
	return rc;
}

static void mem_unlock(struct pio *io, int64_t token)
{
	struct mem_io *m = mem_of(io);
	struct mem_lock *found = NULL;
	pthread_mutex_lock(&m->mu);
	for (struct mem_lock **pp = &m->locks; *pp; pp = &(*pp)->next)
		if ((*pp)->token == token) {
			found = *pp;
			*pp = found->next;
			break;
		}
	pthread_mutex_unlock(&m->mu);
	if (found) {
		free(found->dir);
		free(found);
	}
}

static void mem_destroy(struct pio *io)
{
	struct mem_io *m = mem_of(io);
	while (m->locks) {
		struct mem_lock *l = m->locks;
		m->locks = l->next;
		free(l->dir);
		free(l);
	}
	if (m->rings)
		PLOG_W("io_mem", "pio_free with rings not freed", "%s", "");
	while (m->undo) {
		struct mem_undo *u = m->undo;
		m->undo = u->next;
		free(u->dir);
		free(u->old_path);
		free(u); /* nodes are all freed below */
	}
	while (m->handles) {
		struct pio_file *f = m->handles;
		m->handles = f->next;
		free(f);
	}
	while (m->nodes) {
		struct mem_node *n = m->nodes;
		m->nodes = n->next;
		mem_node_free(n);
	}
	free(m->fault_scope);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

static const struct pio_ops mem_ops = {
	.open = mem_open,
	.close = mem_close,
	.pread = mem_pread,
	.pwrite = mem_pwrite,
	.fdatasync = mem_fdatasync,
	.truncate = mem_truncate,
	.size = mem_size,
	.rename = mem_rename,
	.unlink = mem_unlink,
	.mkdir = mem_mkdir,
	.fsync_dir = mem_fsync_dir,
	.list = mem_list,
	.lock = mem_lock,
	.unlock = mem_unlock,
	.ring_new = mem_ring_new,
	.ring_free = mem_ring_free,
	.ring_write = mem_ring_write,
	.ring_fdatasync = mem_ring_fdatasync,
	.ring_write_dsync = mem_ring_write_dsync,
	.ring_wait = mem_ring_wait,
	.ring_wake = mem_ring_wake,
	.destroy = mem_destroy,
};

struct pio *pio_mem_new(uint64_t seed)
{
	struct mem_io *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	if (pthread_mutex_init(&m->mu, NULL)) {
		free(m);
		return NULL;
	}
	m->base.ops = &mem_ops;
	m->rng.s = seed;
	return &m->base;
}

static bool is_mem(struct pio *io)
{
	return io && io->ops == &mem_ops;
}

void pio_mem_inject(struct pio *io, enum pio_mem_fault f, uint32_t count)
{
	if (!is_mem(io))
		return;
	struct mem_io *m = mem_of(io);
	pthread_mutex_lock(&m->mu);
	switch (f) {
	case PIO_FAULT_WRITE_EIO:
		m->fault_write_eio = count;
		break;
	case PIO_FAULT_FSYNC_EIO:
		m->fault_fsync_eio = count;
		break;
	case PIO_FAULT_ENOSPC:
		m->fault_enospc = count;
		break;
	}
	pthread_mutex_unlock(&m->mu);
}

void pio_mem_strict_dirs(struct pio *io, bool on)
{
	if (!is_mem(io))
		return;
	struct mem_io *m = mem_of(io);
	pthread_mutex_lock(&m->mu);
	m->strict_dirs = on;
	if (!on)
		mem_journal_sync_all(m);
	pthread_mutex_unlock(&m->mu);
}

void pio_mem_fault_scope(struct pio *io, const char *substr)
{
	if (!is_mem(io))
		return;
	struct mem_io *m = mem_of(io);
	char *c = substr && *substr ? strdup(substr) : NULL;
	PARLEY_ASSERT(!substr || !*substr || c);
	pthread_mutex_lock(&m->mu);
	free(m->fault_scope);
	m->fault_scope = c;
	pthread_mutex_unlock(&m->mu);
}

void pio_mem_crash(struct pio *io, bool tear)
{
	if (!is_mem(io))
		return;
	struct mem_io *m = mem_of(io);
	pthread_mutex_lock(&m->mu);
	/* Ops still queued on a ring never reached the disk, and completions
	 * not yet reaped belong to the process that died. */
	for (struct pio_ring *r = m->rings; r; r = r->next_ring) {
		r->nops = 0;
		r->chead = r->ctail = 0;
	}
	mem_journal_crash(m);
	for (struct mem_node *n = m->nodes; n; n = n->next) {
		if (n->is_dir || n->dlo == n->dhi)
			continue;
		size_t lo = n->dlo, hi = PARLEY_MIN(n->dhi, n->cur_len);
		size_t cut = lo;
		if (tear && hi > lo) {
			/* candidates: lo, each 512-multiple in (lo, hi), hi */
			size_t first = (lo / MEM_TEAR_GRAIN + 1) * MEM_TEAR_GRAIN;
			size_t inner = first < hi
					       ? (hi - 1 - first) / MEM_TEAR_GRAIN + 1
					       : 0;
			uint64_t pick = parley_rng_below(&m->rng, inner + 2);
			if (pick == 0)
				cut = lo;
			else if (pick == inner + 1)
				cut = hi;
			else
				cut = first + (size_t)(pick - 1) * MEM_TEAR_GRAIN;
		}
		/* [lo, cut) survives from cur; [cut, hi) reverts to dur. */
		size_t new_len = PARLEY_MAX(n->dur_len, cut);
		size_t rev_hi = PARLEY_MIN(hi, n->dur_len);
		if (rev_hi > cut)
			memcpy(n->cur + cut, n->dur + cut, rev_hi - cut);
		n->cur_len = new_len;
		if (cut > lo) {
			/* what survived is now on disk */
			PARLEY_ASSERT(mem_reserve(&n->dur, &n->dur_cap,
						  new_len) == 0);
			if (n->dur_len < lo)
				memset(n->dur + n->dur_len, 0, lo - n->dur_len);
			memcpy(n->dur + lo, n->cur + lo, cut - lo);
		}
		n->dur_len = new_len;
		n->dlo = n->dhi = 0;
	}
	pthread_mutex_unlock(&m->mu);
}

int pio_mem_flip_bit(struct pio *io, const char *path, uint64_t offset,
		     unsigned bit)
{
	if (!is_mem(io))
		return -ENOTSUP;
	if (bit > 7)
		return -EINVAL;
	struct mem_io *m = mem_of(io);
	char *p = mem_norm(path);
	if (!p)
		return -ENOMEM;
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	struct mem_node *n = mem_find(m, p);
	if (!n || n->is_dir)
		rc = -ENOENT;
	else if (offset >= n->cur_len)
		rc = -EINVAL;
	else {
		n->cur[offset] ^= (uint8_t)(1u << bit);
		if (offset < n->dur_len)
			n->dur[offset] ^= (uint8_t)(1u << bit);
	}
	pthread_mutex_unlock(&m->mu);
	free(p);
	return rc;
}

int64_t pio_mem_file_size(struct pio *io, const char *path)
{
	if (!is_mem(io))
		return -ENOTSUP;
	struct mem_io *m = mem_of(io);
	char *p = mem_norm(path);
	if (!p)
		return -ENOMEM;
	pthread_mutex_lock(&m->mu);
	struct mem_node *n = mem_find(m, p);
	int64_t rc = (!n || n->is_dir) ? -ENOENT : (int64_t)n->cur_len;
	pthread_mutex_unlock(&m->mu);
	free(p);
	return rc;
}
