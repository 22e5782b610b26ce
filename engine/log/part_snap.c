/*
 * part_snap.c — catch-up by snapshot: a follower that needs entries its
 * leader no longer keeps gets the partition's state at a snapshot index
 * (its history: HISTORY manifest, segments, dictionaries) through the Raft
 * core's SNAPSHOT / SNAPSHOT_RESP messages (raft.h), in chunks, resumable,
 * throttled, and installs it atomically; replication then goes on by log
 * from the snapshot index (docs/CLUSTER.md §2.4).
 *
 * The snapshot byte stream (what raft_snapshot_meta.size counts):
 *
 *    0 u64 magic "PLSNAP01" | 8 u32 version (1) | 12 u32 partition
 *   16 u64 index | 24 u64 term | 32 u32 nfiles | 36 u32 reserved
 *   40 nfiles x { u8 name length | name | u64 size }
 *   .. u64 xxh3(header before, SNAP_SEED)          (= meta.csum)
 *   then every file's bytes, in header order.
 * Names are "HISTORY", "seg-<16 hex>.pseg" or "dict-<16 hex>.zd" only.
 * The files verify themselves (the manifest's and segments' checksums,
 * hpart_open); the header's checksum names the snapshot (meta.csum), so a
 * follower never mixes the bytes of two snapshots.
 *
 * No file operation of a snapshot runs on the shard thread: each is a job
 * (struct snap_job, kind enum snap_job_kind) on the engine's read pool
 * (history/hist_read.c, the pool that serves history reads and HARDSTATE
 * stores), and its completion comes back to the shard as REQ_SNAP_DONE.
 * Per partition at most one follower job (a chunk store, with the install
 * after the last chunk), one image job and SNAP_WINDOWS read jobs are in
 * flight, so the pool's queue stays bounded by the partitions; the shard
 * counts them (sh->snap_jobs) and stops only when none is left.
 *
 * Leader (the image):
 *   - The group's compaction point (its snapshot index) normally floats
 *     behind the applied index (log_keep_bytes), with a placeholder meta.
 *     When the core asks for snapshot bytes (part_snap_read) and there is
 *     no image for its snapshot index, the partition wants one
 *     (snap_want). The next compaction (part_raft_compact), once no
 *     history job runs, starts a flush first if the history's flushed
 *     index is below the compaction point, then an image job
 *     (SNAP_JOB_IMAGE): the worker opens the live files (open descriptors
 *     keep them readable after a compaction deletes or a store replaces
 *     them) and builds the header. While it runs no flush or compaction
 *     of the partition starts (part_snap_busy). When it is back, the next
 *     compaction step compacts the group to the flushed index with the
 *     image's meta (raft_compacted).
 *   - The core reads chunks synchronously (raft_storage.snapshot_read), so
 *     the bytes are read ahead: an image keeps SNAP_WINDOWS windows of
 *     SNAP_WIN_BYTES in memory, filled by read jobs (SNAP_JOB_READ). A
 *     read the windows hold is served from memory and starts the read of
 *     the window after it; one they do not hold starts a read there and
 *     answers -PARLEY_EAGAIN, which the core retries on the follower's
 *     next answer or heartbeat (as it retries a throttled read).
 *   - While the image is being read the compaction point does not move
 *     (a new one would restart every transfer): the group keeps its log
 *     in memory meanwhile, up to log_keep_bytes + SNAP_PIN_BYTES; beyond
 *     that, or SNAP_IDLE_ELECTIONS election timeouts after its last read,
 *     or on losing leadership, the image is released (transfers not
 *     finished count as failed; a follower that still needs one gets a
 *     new image). A released image's descriptors are closed by a job
 *     (SNAP_JOB_CLOSE) once its reads in flight are back.
 *   - Chunks leave at most at snapshot_rate_bytes per second (a token
 *     bucket per shard, rate / shards each): a read refused by the
 *     throttle is retried by the core on the follower's next answer or
 *     heartbeat.
 *
 * Follower (receive and install):
 *   - A ready that carries a chunk (raft.h contract, step 2: the chunk is
 *     durable before anything else of the ready) hands it to a store job
 *     (SNAP_JOB_STORE) and stays out (p->snap_wait: no raft_* call, its
 *     messages held, not advanced); the shard serves its other groups
 *     meanwhile. When the store is back, part_raft_run resumes that same
 *     ready (p->snap_rd) after its chunk.
 *   - The chunk is written where its bytes belong, not into one stream
 *     file: the header's bytes into <data>/snap/<part>/partial, each
 *     file's bytes into <data>/snap/<part>/stage/<name> at their offset in
 *     that file; every file written is fdatasync'd and a new one's
 *     directory entry fsync'd before the job answers. partial.meta (stored
 *     atomically when a snapshot starts) names the snapshot, so a
 *     restarted follower finds the bytes it holds (the header, then the
 *     staged files in header order: raft_storage.load's partial) and the
 *     leader resumes there; a link break resumes the same way (the core
 *     keeps the offset). A chunk at offset 0 starts the snapshot over.
 *   - The header is verified as soon as it is complete (checksum,
 *     partition, index, term, size, names), so a bad one is refused early.
 *   - The last chunk's job also installs: zero-length files are created,
 *     the staging directory fsync'd, and the header stored as
 *     <data>/snap/<part>/INSTALL (pio_file_replace): that is the commit
 *     point. Then every file of hist/<part> the snapshot does not name is
 *     removed, the staged files are renamed in (no copy: they were written
 *     in place as they arrived), the directory fsync'd and INSTALL
 *     removed; pe_open redoes these steps when it finds INSTALL (a crash in
 *     between). The worker then opens the new history (hpart_open: its
 *     manifest, dictionaries and segment readers, each verified) and
 *     gathers its idempotency records. Back on the shard, the partition's
 *     memtable and idempotency table are rebuilt from those (as at open),
 *     tails re-attach to their streams, the old history is closed by a
 *     job (SNAP_JOB_HIST_CLOSE) and the group continues from the snapshot
 *     index. WAL records of the partition at or below it are skipped at
 *     recovery (they are history now); later ones are superseded by the
 *     leader's appends. While a store or install job runs no flush or
 *     compaction of the partition starts (part_snap_busy).
 *   - A snapshot that does not verify, or a chunk that cannot be stored,
 *     is dropped (the worker removes partial and the staged files) and the
 *     ready reported failed to the core (raft_persist_failed): the leader
 *     starts it again from offset 0.
 *
 * Threads: part_snap_* on the partition's shard thread, except
 * part_snap_open (pe_open, before the shard threads start) and
 * part_snap_free / part_snap_job_free (after they stopped); the jobs' run
 * on a read pool thread, which touches only the job and what it names
 * (an image's files and windows being read, a snap_in while its store
 * runs: the shard leaves those alone until the completion is back). A
 * stepped engine (no pool) runs a job at once on its thread; the
 * completion still comes back through the inbox.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "segment.h"

#define SNAP_MAGIC 0x31305041534e4c50ull      /* "PLSNAP01" */
#define SNAP_SEED 0x504e534e4f495450ull
#define SNAP_META_MAGIC 0x314d50414e534c50ull /* "PLSNAPM1" */
#define SNAP_VERSION 1u
#define SNAP_HDR_FIXED 40u
#define SNAP_MAX_FILES (2u * HMAN_MAX_SEGS + 2u)
#define SNAP_MAX_HDR (SNAP_HDR_FIXED + 8u + SNAP_MAX_FILES * 57u)
#define SNAP_NAME_MAX 40u
#define SNAP_PIN_BYTES (64ull << 20) /* log kept beyond log_keep_bytes while
					an image is being sent */
#define SNAP_IDLE_ELECTIONS 4u       /* image released after this many
					election timeouts without a read */
#define SNAP_META_BYTES (8u * 6u + 4u + RAFT_MAX_MEMBERS * 9u + 8u)
#define SNAP_WIN_BYTES (4u * RAFT_MAX_CHUNK_BYTES) /* one read job: the
						       core's chunks in flight
						       to one follower */
#define SNAP_WINDOWS 4u              /* read-ahead windows per image */
#define SNAP_PATH 700u

enum snap_job_kind {
	SNAP_JOB_IMAGE = 1,  /* leader: open the live files, build the header */
	SNAP_JOB_READ,       /* leader: read one window of the image */
	SNAP_JOB_CLOSE,      /* leader: close a released image; no completion */
	SNAP_JOB_STORE,      /* follower: store a chunk; install after the last */
	SNAP_JOB_HIST_CLOSE, /* follower: close the history an install replaced;
				no completion */
};

enum snap_win_state {
	SNAP_WIN_FREE = 0,
	SNAP_WIN_LOADING,    /* a read job fills it */
	SNAP_WIN_READY,
};

struct snap_file {
	char name[SNAP_NAME_MAX];
	uint64_t start, size;  /* byte range in the stream */
	struct pio_file *f;
};

struct snap_win {
	enum snap_win_state st;
	uint64_t off;
	uint32_t len;
	uint64_t used;         /* o->clock at its last hit (least recently
				  used is refilled first) */
	uint8_t *buf;          /* SNAP_WIN_BYTES */
};

struct snap_out {
	struct raft_snapshot_meta meta;
	bool live;             /* the core took it (raft_compacted) */
	bool released;         /* detached from its partition: closed once
				  its reads in flight are back */
	uint32_t reads;        /* read jobs in flight */
	uint8_t *hdr;
	uint32_t hdr_len;
	struct snap_file *files;
	uint32_t nfiles;
	struct snap_win win[SNAP_WINDOWS];
	uint64_t clock;
	uint32_t idle;         /* ticks since the core last read it */
	uint64_t sending[RAFT_MAX_MEMBERS]; /* followers a transfer started to */
	uint32_t nsending;
};

/* A snapshot being received. meta and bytes are the shard's; the rest is
 * the store job's while one runs (p->snap_wait). */
struct snap_in {
	struct raft_snapshot_meta meta;
	uint64_t bytes;        /* durable: the header's, then the files' */
	bool fresh;            /* its files are not made yet (offset 0) */
	struct pio_file *hf;   /* partial: the header's bytes */
	uint8_t *hdr;          /* SNAP_MAX_HDR, the header as received */
	uint32_t hdr_len;      /* 0 until it is complete and verified */
	struct snap_file *files;
	uint32_t nfiles;
	uint32_t cur;          /* files[cur].f may be open */
};

/* An idempotency record gathered by an install (its key copied). */
struct snap_idem {
	struct seg_idem rec;
	uint8_t key[PE_MAX_KEY];
};

struct snap_job {
	struct rpool_job job;  /* first: the pool's handle */
	enum snap_job_kind kind;
	struct pe_engine *e;   /* shard_push only (any thread) */
	struct pio *io;
	struct req *done;      /* REQ_SNAP_DONE (out = this job), or NULL */
	int rc;
	char sd[SNAP_PATH], hd[SNAP_PATH]; /* snap/<part>, hist/<part> */
	uint32_t part;
	/* IMAGE: what the image is of; READ and CLOSE: the image */
	uint64_t index, term, gen;
	struct raft_conf conf;
	struct snap_out *o;
	struct snap_win *w;    /* READ */
	/* STORE */
	struct snap_in *in;
	struct raft_snapshot_meta meta;
	uint64_t off;
	uint32_t len;
	uint8_t *chunk;        /* a copy: the ready's may go (shard_fatal) */
	bool install;
	bool keeps_tail;       /* install_keeps_tail (raft.h): a damaged
				  prefix replaced, the log after it kept */
	bool conf_store;       /* install: write conf/<part> (index, conf) */
	bool conf_stored;      /* ... done: the shard records it */
	bool committed;        /* INSTALL stored: the snapshot replaces the
				  partition, now or at the next open */
	struct hpart_opts ho;
	uint64_t idem_window_ms;
	struct hpart *hist;    /* the new history, opened (install) */
	int hist_rc;           /* hpart_open's, or the idempotency load's */
	uint64_t idem_clock;
	struct snap_idem *idem;
	size_t nidem, cap_idem;
	/* HIST_CLOSE */
	struct hpart *old;
};

/* ---- helpers ------------------------------------------------------------------ */

static struct pe_engine *eng_of(const struct part *p)
{
	return (struct pe_engine *)(void *)((char *)(uintptr_t)p->cl -
					    offsetof(struct pe_engine, cl));
}

static void snap_dir(const struct pe_engine *e, const struct part *p,
		     char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/snap/%u", e->dir, p->id);
}

static void hist_dir(const struct pe_engine *e, const struct part *p,
		     char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/hist/%u", e->dir, p->id);
}

#define CNT(p, x, n) atomic_fetch_add_explicit(&(p)->x, (n), memory_order_relaxed)

static bool name_ok(const char *n, size_t len)
{
	if (len == 7 && !memcmp(n, "HISTORY", 7))
		return true;
	const char *hex;
	if (len == 4 + 16 + 5 && !memcmp(n, "seg-", 4) &&
	    !memcmp(n + 20, ".pseg", 5))
		hex = n + 4;
	else if (len == 5 + 16 + 3 && !memcmp(n, "dict-", 5) &&
		 !memcmp(n + 21, ".zd", 3))
		hex = n + 5;
	else
		return false;
	for (int i = 0; i < 16; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') ||
		      (hex[i] >= 'a' && hex[i] <= 'f')))
			return false;
	return true;
}

/* A parsed header: names and sizes (into `files`, nfiles of them). */
static int hdr_parse(const uint8_t *b, size_t len, uint32_t part,
		     struct snap_file **files, uint32_t *nfiles,
		     uint32_t *hdr_len, uint64_t *index, uint64_t *term)
{
	*files = NULL;
	if (len < SNAP_HDR_FIXED + 8 || le_get64(b) != SNAP_MAGIC ||
	    le_get32(b + 8) != SNAP_VERSION || le_get32(b + 12) != part)
		return -PARLEY_ECORRUPT;
	uint32_t n = le_get32(b + 32);
	if (n == 0 || n > SNAP_MAX_FILES)
		return -PARLEY_ECORRUPT;
	struct snap_file *f = calloc(n, sizeof *f);
	if (!f)
		return -PARLEY_ENOMEM;
	size_t off = SNAP_HDR_FIXED;
	for (uint32_t i = 0; i < n; i++) {
		if (off + 1 > len)
			goto bad;
		uint8_t nl = b[off++];
		if (nl == 0 || nl >= SNAP_NAME_MAX || off + nl + 8 > len ||
		    !name_ok((const char *)b + off, nl))
			goto bad;
		memcpy(f[i].name, b + off, nl);
		f[i].name[nl] = '\0';
		off += nl;
		f[i].size = le_get64(b + off);
		off += 8;
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(f[j].name, f[i].name))
				goto bad;
	}
	if (off + 8 > len || le_get64(b + off) != parley_xxh3(b, off, SNAP_SEED))
		goto bad;
	off += 8;
	uint64_t pos = off;
	for (uint32_t i = 0; i < n; i++) {
		f[i].start = pos;
		pos += f[i].size;
	}
	*files = f;
	*nfiles = n;
	*hdr_len = (uint32_t)off;
	*index = le_get64(b + 16);
	*term = le_get64(b + 24);
	return 0;
bad:
	free(f);
	return -PARLEY_ECORRUPT;
}


/* Bytes a header needs: its total length once `len` bytes of it show it,
 * 0 while more are needed, -PARLEY_ECORRUPT when they cannot be one. */
static int64_t hdr_need(const uint8_t *b, size_t len)
{
	if (len < SNAP_HDR_FIXED)
		return 0;
	if (le_get64(b) != SNAP_MAGIC || le_get32(b + 8) != SNAP_VERSION)
		return -PARLEY_ECORRUPT;
	uint32_t n = le_get32(b + 32);
	if (n == 0 || n > SNAP_MAX_FILES)
		return -PARLEY_ECORRUPT;
	size_t off = SNAP_HDR_FIXED;
	for (uint32_t i = 0; i < n; i++) {
		if (off + 1 > len)
			return 0;
		uint8_t nl = b[off];
		if (nl == 0 || nl >= SNAP_NAME_MAX)
			return -PARLEY_ECORRUPT;
		off += 1u + nl + 8u;
	}
	off += 8;
	return off <= len ? (int64_t)off : 0;
}

static void files_close(struct pio *io, struct snap_file *f, uint32_t n)
{
	for (uint32_t i = 0; f && i < n; i++)
		if (f[i].f)
			io->ops->close(io, f[i].f);
	free(f);
}

/* ---- jobs: the read pool runs them, REQ_SNAP_DONE brings them back ------------ */

static void job_run(struct rpool_job *j);
static void job_drop(struct rpool_job *j);

static struct snap_job *job_new(struct shard *sh, struct part *p,
				enum snap_job_kind kind, bool answered)
{
	struct snap_job *j = calloc(1, sizeof *j);
	struct req *r = answered ? calloc(1, sizeof *r) : NULL;
	if (!j || (answered && !r)) {
		free(j);
		free(r);
		return NULL;
	}
	struct pe_engine *e = sh->e;
	j->kind = kind;
	j->e = e;
	j->io = e->io;
	j->part = p->id;
	snprintf(j->sd, sizeof j->sd, "%s/snap/%u", e->dir, p->id);
	snprintf(j->hd, sizeof j->hd, "%s/hist/%u", e->dir, p->id);
	j->job.run = job_run;
	j->job.drop = job_drop;
	if (r) {
		r->kind = REQ_SNAP_DONE;
		r->part = p->id;
		r->out = j;
		j->done = r;
	}
	return j;
}

/* Hands j to the pool (a stepped engine: runs it now). Jobs that answer
 * are counted until their completion is back (the shard's stop waits). */
static void job_push(struct shard *sh, struct snap_job *j, bool urgent)
{
	if (j->done)
		sh->snap_jobs++;
	if (hist_read_async(sh))
		rpool_push(&sh->e->rpool, &j->job, urgent);
	else
		j->job.run(&j->job);
}

static void out_free(struct pio *io, struct snap_out *o)
{
	if (!o)
		return;
	files_close(io, o->files, o->nfiles);
	for (uint32_t i = 0; i < SNAP_WINDOWS; i++)
		free(o->win[i].buf);
	free(o->hdr);
	free(o);
}

static void in_close_files(struct pio *io, struct snap_in *in)
{
	if (in->hf)
		io->ops->close(io, in->hf);
	in->hf = NULL;
	for (uint32_t i = 0; in->files && i < in->nfiles; i++)
		if (in->files[i].f) {
			io->ops->close(io, in->files[i].f);
			in->files[i].f = NULL;
		}
}

static void in_free_mem(struct pio *io, struct snap_in *in)
{
	if (!in)
		return;
	in_close_files(io, in);
	free(in->files);
	free(in->hdr);
	free(in);
}

static void job_free(struct snap_job *j)
{
	free(j->chunk);
	free(j->idem);
	free(j->done);
	free(j);
}

static int image_run(struct snap_job *j);
static int read_run(struct snap_job *j);
static int store_run(struct snap_job *j);

static void job_run(struct rpool_job *rj)
{
	struct snap_job *j = (struct snap_job *)rj;
	switch (j->kind) {
	case SNAP_JOB_IMAGE:
		j->rc = image_run(j);
		break;
	case SNAP_JOB_READ:
		j->rc = read_run(j);
		break;
	case SNAP_JOB_STORE:
		j->rc = store_run(j);
		break;
	case SNAP_JOB_CLOSE:
		out_free(j->io, j->o);
		job_free(j);
		return;
	case SNAP_JOB_HIST_CLOSE:
		/* the directory holds the snapshot's files now: the old
		 * history's retired dictionaries are not its to remove */
		hpart_close_detached(j->old);
		job_free(j);
		return;
	}
	struct req *r = j->done;
	PARLEY_ASSERT(r);
	/* always gets through (a completion); the shard owns j from here */
	PARLEY_ASSERT(shard_push(j->e, r) == 0);
}

/* The pool stopped first (pe_abort; or pe_close for jobs that answer
 * nothing): closes run anyway, the others are dropped as a crash would. */
static void job_drop(struct rpool_job *rj)
{
	struct snap_job *j = (struct snap_job *)rj;
	if (j->kind == SNAP_JOB_CLOSE || j->kind == SNAP_JOB_HIST_CLOSE) {
		job_run(rj);
		return;
	}
	job_free(j);
}

/* A completion left on an inbox by pe_abort. The image or snap_in it
 * names is freed with its partition (part_snap_free). */
void part_snap_job_free(struct req *r)
{
	struct snap_job *j = r->out;
	if (j->hist)
		hpart_close_detached(j->hist);
	j->done = NULL;
	job_free(j);
	free(r);
}

/* ---- leader: the image ---------------------------------------------------------- */

/* The worker's part of an image: opens every live file of the history at
 * the index and generation the shard saw, builds the header. */
static int image_run(struct snap_job *j)
{
	struct pio *io = j->io;
	struct snap_out *o = calloc(1, sizeof *o);
	if (!o)
		return -PARLEY_ENOMEM;
	/* HISTORY first: opened before it is read, so its bytes are the
	 * manifest read (no store runs: part_snap_busy holds them off) */
	struct hman m;
	hman_init(&m, j->part);
	char path[SNAP_PATH + 64];
	int rc;
	snprintf(path, sizeof path, "%s/%s", j->hd, HMAN_FILE);
	struct pio_file *hf = NULL;
	rc = io->ops->open(io, path, 0, &hf);
	if (rc)
		goto fail;
	rc = hman_load(io, j->hd, &m);
	if (rc)
		goto fail;
	if (m.generation != j->gen || m.flushed_index != j->index) {
		rc = -PARLEY_EAGAIN;
		goto fail;
	}
	uint32_t cap = 1 + (uint32_t)m.nsegs * 2 + 1;
	o->files = calloc(cap, sizeof *o->files);
	if (!o->files) {
		rc = -PARLEY_ENOMEM;
		goto fail;
	}
	snprintf(o->files[0].name, SNAP_NAME_MAX, "%s", HMAN_FILE);
	o->files[0].f = hf;
	hf = NULL;
	o->nfiles = 1;
	for (size_t i = 0; i < m.nsegs; i++)
		snprintf(o->files[o->nfiles++].name, SNAP_NAME_MAX,
			 "seg-%016" PRIx64 ".pseg", m.segs[i].id);
	uint64_t *dicts = calloc(m.nsegs + 1, sizeof *dicts);
	if (!dicts) {
		rc = -PARLEY_ENOMEM;
		goto fail;
	}
	size_t nd = 0;
	for (size_t i = 0; i <= m.nsegs; i++) {
		uint64_t d = i < m.nsegs ? m.segs[i].dict_id : m.dict_id;
		bool dup = d == 0;
		for (size_t k = 0; k < nd && !dup; k++)
			dup = dicts[k] == d;
		if (!dup)
			dicts[nd++] = d;
	}
	for (size_t k = 0; k < nd; k++)
		snprintf(o->files[o->nfiles++].name, SNAP_NAME_MAX,
			 "dict-%016" PRIx64 ".zd", dicts[k]);
	free(dicts);
	size_t hl = SNAP_HDR_FIXED + 8;
	for (uint32_t i = 0; i < o->nfiles; i++) {
		struct snap_file *f = &o->files[i];
		if (!f->f) {
			snprintf(path, sizeof path, "%s/%s", j->hd, f->name);
			rc = io->ops->open(io, path, 0, &f->f);
			if (rc)
				goto fail;
		}
		int64_t sz = io->ops->size(io, f->f);
		if (sz < 0) {
			rc = (int)sz;
			goto fail;
		}
		f->size = (uint64_t)sz;
		hl += 1 + strlen(f->name) + 8;
	}
	o->hdr = malloc(hl);
	if (!o->hdr) {
		rc = -PARLEY_ENOMEM;
		goto fail;
	}
	le_put64(o->hdr, SNAP_MAGIC);
	le_put32(o->hdr + 8, SNAP_VERSION);
	le_put32(o->hdr + 12, j->part);
	le_put64(o->hdr + 16, j->index);
	le_put64(o->hdr + 24, j->term);
	le_put32(o->hdr + 32, o->nfiles);
	le_put32(o->hdr + 36, 0);
	size_t off = SNAP_HDR_FIXED;
	for (uint32_t i = 0; i < o->nfiles; i++) {
		size_t nl = strlen(o->files[i].name);
		o->hdr[off++] = (uint8_t)nl;
		memcpy(o->hdr + off, o->files[i].name, nl);
		off += nl;
		le_put64(o->hdr + off, o->files[i].size);
		off += 8;
	}
	le_put64(o->hdr + off, parley_xxh3(o->hdr, off, SNAP_SEED));
	off += 8;
	o->hdr_len = (uint32_t)off;
	uint64_t pos = off;
	for (uint32_t i = 0; i < o->nfiles; i++) {
		o->files[i].start = pos;
		pos += o->files[i].size;
	}
	o->meta.index = j->index;
	o->meta.term = j->term;
	o->meta.size = pos;
	o->meta.csum = parley_xxh3(o->hdr, o->hdr_len, SNAP_SEED);
	o->meta.conf = j->conf;
	hman_free(&m);
	j->o = o;
	return 0;
fail:
	if (hf)
		io->ops->close(io, hf);
	hman_free(&m);
	out_free(io, o);
	return rc;
}

/* The worker's part of a read: one window of the stream into memory. */
static int read_run(struct snap_job *j)
{
	struct snap_out *o = j->o;
	struct snap_win *w = j->w;
	uint64_t off = w->off;
	uint32_t len = w->len, done = 0;
	if (off < o->hdr_len) {
		uint32_t n = (uint32_t)PARLEY_MIN((uint64_t)len, o->hdr_len - off);
		memcpy(w->buf, o->hdr + off, n);
		done = n;
	}
	for (uint32_t i = 0; i < o->nfiles && done < len; i++) {
		struct snap_file *f = &o->files[i];
		uint64_t at = off + done;
		if (at >= f->start + f->size || at < f->start)
			continue;
		uint64_t n = PARLEY_MIN((uint64_t)(len - done),
					f->start + f->size - at);
		int64_t got = j->io->ops->pread(j->io, f->f, w->buf + done,
						(size_t)n, at - f->start);
		if (got != (int64_t)n) {
			PLOG_E("engine", "snapshot file unreadable", "partition=%u "
			       "file=%s err=%s", j->part, f->name,
			       parley_errname(got < 0 ? (int)got : -PARLEY_EIO));
			return got < 0 ? (int)got : -PARLEY_EIO;
		}
		done += (uint32_t)n;
	}
	return done == len ? 0 : -PARLEY_EIO;
}

static void close_push(struct shard *sh, struct part *p, struct snap_out *o)
{
	struct snap_job *j = job_new(sh, p, SNAP_JOB_CLOSE, false);
	if (!j) { /* out of memory: closed here rather than leaked */
		out_free(sh->e->io, o);
		return;
	}
	j->o = o;
	job_push(sh, j, false);
}

static struct shard *shard_of_part(struct pe_engine *e, const struct part *p)
{
	return &e->shards[p->id % e->nshards];
}

void part_snap_release(struct part *p, const char *why)
{
	struct snap_out *o = p->snap_out;
	if (!o)
		return;
	if (o->nsending) {
		CNT(p, pub_snap_failed, o->nsending);
		PLOG_W("engine", "snapshot sends abandoned", "partition=%u "
		       "index=%" PRIu64 " followers=%u why=%s", p->id,
		       o->meta.index, o->nsending, why);
	} else {
		PLOG_D("engine", "snapshot image released", "partition=%u "
		       "index=%" PRIu64 " why=%s", p->id, o->meta.index, why);
	}
	p->snap_out = NULL;
	o->released = true;
	if (!o->reads)
		close_push(shard_of_part(eng_of(p), p), p, o);
}

bool part_snap_pinned(struct part *p)
{
	struct snap_out *o = p->snap_out;
	if (!o || !o->live)
		return false;
	if (p->rlog_bytes > p->cl->log_keep_bytes + SNAP_PIN_BYTES) {
		part_snap_release(p, "log kept in memory reached its bound");
		return false;
	}
	return true;
}

void part_snap_tick(struct part *p)
{
	struct snap_out *o = p->snap_out;
	if (o && ++o->idle > SNAP_IDLE_ELECTIONS * p->cl->election_ticks)
		part_snap_release(p, "not read any more");
}

/* A flush or compaction of p may not start: a snapshot job works on its
 * history directory (an image being opened, a store or install). */
bool part_snap_busy(const struct part *p)
{
	return p->snap_img_busy || p->snap_wait;
}

/*
 * After a compaction step: when the core asked for a snapshot it lacks and
 * an image job brought one back, that image (0: *out is its meta, for
 * raft_compacted; the caller reports with part_snap_image_taken); else
 * -PARLEY_EAGAIN (not now: nothing wanted, a history job in flight, a
 * flush of the partition started first, or an image job started or still
 * running).
 */
int part_snap_image(struct part *p, struct raft_snapshot_meta *out)
{
	struct pe_engine *e = eng_of(p);
	struct shard *sh = shard_of_part(e, p);
	if (!p->snap_want || p->corrupt || !p->hist ||
	    raft_role(p->raft) != RAFT_LEADER) {
		if (p->snap_img) { /* made for a leadership since lost */
			close_push(sh, p, p->snap_img);
			p->snap_img = NULL;
		}
		return -PARLEY_EAGAIN;
	}
	if (p->snap_img) {
		struct snap_out *o = p->snap_img;
		p->snap_img = NULL;
		if (o->meta.index != p->flushed_index) { /* not expected */
			close_push(sh, p, o);
			return -PARLEY_EAGAIN;
		}
		part_snap_release(p, "a new image");
		p->snap_out = o;
		*out = o->meta;
		return 0;
	}
	if (p->snap_img_busy || p->flush_st != FLUSH_IDLE ||
	    p->compact_st != COMPACT_IDLE)
		return -PARLEY_EAGAIN;
	if (p->flushed_index < p->rsnap_index || p->flushed_index == 0 ||
	    raft_conf_index(p->raft) > p->flushed_index) {
		/* the history must reach the log's compaction point first,
		 * and the last conf entry applied: the meta's conf is the
		 * membership as of the image's index (raft.h), and
		 * raft_conf() is as of raft_conf_index (a follower would
		 * otherwise apply the entries after the image's index onto
		 * their own result); the next compaction step looks again */
		(void)hist_job_flush_part(sh, p);
		return -PARLEY_EAGAIN;
	}
	struct snap_job *j = job_new(sh, p, SNAP_JOB_IMAGE, true);
	if (!j)
		return -PARLEY_EAGAIN;
	j->index = p->flushed_index;
	j->term = raft_term_at(p->raft, j->index);
	j->conf = *raft_conf(p->raft);
	j->gen = hpart_manifest(p->hist)->generation;
	p->snap_img_busy = true;
	job_push(sh, j, false);
	return -PARLEY_EAGAIN;
}

static void image_done(struct shard *sh, struct part *p, struct snap_job *j)
{
	p->snap_img_busy = false;
	struct snap_out *o = j->o;
	if (j->rc) {
		if (j->rc != -PARLEY_EAGAIN)
			PLOG_E("engine", "cannot make a snapshot image",
			       "partition=%u err=%s", p->id,
			       parley_errname(j->rc));
		return;
	}
	if (!p->snap_want || !p->raft || raft_role(p->raft) != RAFT_LEADER ||
	    p->flushed_index != o->meta.index) {
		close_push(sh, p, o); /* not wanted any more, or stale */
		return;
	}
	if (p->snap_img)
		close_push(sh, p, p->snap_img);
	p->snap_img = o;
	/* taken at the group's next compaction step: now if no ready is
	 * out (no raft_* call between a ready and its advance) */
	if (!p->ready_out)
		part_raft_compact(p);
}

void part_snap_image_taken(struct part *p, bool ok)
{
	struct snap_out *o = p->snap_out;
	if (!o)
		return;
	if (!ok) {
		part_snap_release(p, "refused by the group");
		return;
	}
	o->live = true;
	p->snap_want = false;
	p->snap_logged = false;
	PLOG_I("engine", "snapshot image ready for lagging followers",
	       "partition=%u index=%" PRIu64 " term=%" PRIu64 " bytes=%" PRIu64
	       " files=%u", p->id, o->meta.index, o->meta.term, o->meta.size,
	       o->nfiles);
}

/* Throttle: may `len` bytes leave now? A token bucket per shard. */
static bool tokens_take(struct pe_engine *e, struct part *p, uint32_t len)
{
	uint64_t rate = p->cl->snapshot_rate_bytes;
	if (!rate)
		return true;
	struct shard *sh = &e->shards[p->id % e->nshards];
	rate = PARLEY_MIN(PARLEY_MAX(rate / e->nshards, 1u), 1ull << 33);
	uint64_t burst = 2ull * RAFT_MAX_CHUNK_BYTES;
	uint64_t now = parley_mono_ns();
	if (!sh->snap_tok_ns) {
		sh->snap_tok_ns = now;
		sh->snap_tokens = burst;
	}
	uint64_t dt = now - sh->snap_tok_ns;
	uint64_t add = dt >= 1000000000ull ? burst
					   : dt * rate / 1000000000ull;
	if (add) {
		sh->snap_tokens = PARLEY_MIN(burst, sh->snap_tokens + add);
		sh->snap_tok_ns = now;
	}
	if (sh->snap_tokens < len)
		return false;
	sh->snap_tokens -= len;
	return true;
}

/* A window holding [off, off + len), READY (or LOADING with `loading`). */
static struct snap_win *win_find(struct snap_out *o, uint64_t off,
				 uint32_t len, bool loading)
{
	for (uint32_t i = 0; i < SNAP_WINDOWS; i++) {
		struct snap_win *w = &o->win[i];
		if ((w->st == SNAP_WIN_READY ||
		     (loading && w->st == SNAP_WIN_LOADING)) &&
		    off >= w->off && off + len <= w->off + w->len)
			return w;
	}
	return NULL;
}

/* Starts the read of the window at `off` unless one holds or fills it or
 * every window is being filled. */
static void win_load(struct part *p, struct snap_out *o, uint64_t off,
		     uint32_t len)
{
	if (off >= o->meta.size || win_find(o, off, len, true))
		return;
	struct snap_win *w = NULL;
	for (uint32_t i = 0; i < SNAP_WINDOWS; i++) {
		struct snap_win *c = &o->win[i];
		if (c->st == SNAP_WIN_LOADING)
			continue;
		if (!w || c->st == SNAP_WIN_FREE ||
		    (w->st != SNAP_WIN_FREE && c->used < w->used))
			w = c;
	}
	if (!w)
		return;
	if (!w->buf && !(w->buf = malloc(SNAP_WIN_BYTES)))
		return;
	struct shard *sh = shard_of_part(eng_of(p), p);
	struct snap_job *j = job_new(sh, p, SNAP_JOB_READ, true);
	if (!j)
		return;
	w->st = SNAP_WIN_LOADING;
	w->off = off;
	w->len = (uint32_t)PARLEY_MIN((uint64_t)SNAP_WIN_BYTES,
				      o->meta.size - off);
	j->o = o;
	j->w = w;
	o->reads++;
	job_push(sh, j, false);
}

static void read_done(struct shard *sh, struct part *p, struct snap_job *j)
{
	struct snap_out *o = j->o;
	o->reads--;
	if (o->released) {
		if (!o->reads)
			close_push(sh, p, o);
		return;
	}
	if (j->rc) {
		j->w->st = SNAP_WIN_FREE;
		part_snap_release(p, "file unreadable");
		p->snap_want = true;
		return;
	}
	j->w->st = SNAP_WIN_READY;
	j->w->used = ++o->clock;
}

/* raft_storage.snapshot_read: bytes of the image at the group's snapshot
 * index from the read-ahead windows, or -PARLEY_EAGAIN (no image yet: one
 * is made at the next compaction step; or the bytes are being read: the
 * core asks again on the follower's next answer or heartbeat) or
 * -PARLEY_ERATE (throttled). */
int part_snap_read(struct part *p, uint64_t off, void *buf, uint32_t len)
{
	struct snap_out *o = p->snap_out;
	if (!o || !o->live || o->meta.index != p->rsnap_index) {
		if (!p->snap_want) {
			p->snap_want = true;
			CNT(p, pub_snap_needed, 1);
		}
		if (!p->snap_logged) {
			p->snap_logged = true;
			PLOG_I("engine", "a follower is behind this leader's "
			       "kept log: making a snapshot", "partition=%u "
			       "compacted_to=%" PRIu64 " flushed=%" PRIu64,
			       p->id, p->rsnap_index, p->flushed_index);
		}
		return -PARLEY_EAGAIN;
	}
	o->idle = 0;
	if (off > o->meta.size || len > o->meta.size - off ||
	    len > SNAP_WIN_BYTES)
		return -PARLEY_EINVAL;
	struct snap_win *w = win_find(o, off, len, false);
	if (!w) {
		win_load(p, o, off, len);
		return -PARLEY_EAGAIN;
	}
	if (!tokens_take(eng_of(p), p, len))
		return -PARLEY_ERATE;
	memcpy(buf, w->buf + (off - w->off), len);
	w->used = ++o->clock;
	/* read ahead: the window after this one */
	uint64_t next = w->off + w->len;
	win_load(p, o, next, (uint32_t)PARLEY_MIN((uint64_t)RAFT_MAX_CHUNK_BYTES,
						  o->meta.size - PARLEY_MIN(next, o->meta.size)));
	return (int)len;
}

/* Outbound messages of the group (counted when sent): SNAPSHOT chunks. */
void part_snap_sent(struct part *p, const struct raft_msg *m, uint32_t n)
{
	struct snap_out *o = p->snap_out;
	for (uint32_t i = 0; i < n; i++) {
		if (m[i].type != RAFT_MSG_SNAPSHOT)
			continue;
		CNT(p, pub_snap_sent, m[i].chunk_len);
		if (!o)
			continue;
		bool known = false;
		for (uint32_t k = 0; k < o->nsending && !known; k++)
			known = o->sending[k] == m[i].to;
		if (!known && o->nsending < RAFT_MAX_MEMBERS) {
			o->sending[o->nsending++] = m[i].to;
			CNT(p, pub_snap_started, 1);
			PLOG_I("engine", "snapshot send started", "partition=%u "
			       "to=%" PRIu64 " index=%" PRIu64 " bytes=%" PRIu64,
			       p->id, m[i].to, o->meta.index, o->meta.size);
		}
	}
}

/* Inbound, before the core steps it: a follower past the image's index
 * has installed it (the core answers an install with an APPEND_RESP). */
void part_snap_inbound(struct part *p, const struct raft_msg *m)
{
	struct snap_out *o = p->snap_out;
	if (!o || m->type != RAFT_MSG_APPEND_RESP ||
	    (m->flags & RAFT_MSGF_REJECT) || m->index < o->meta.index)
		return;
	for (uint32_t k = 0; k < o->nsending; k++)
		if (o->sending[k] == m->from) {
			o->sending[k] = o->sending[--o->nsending];
			CNT(p, pub_snap_done, 1);
			PLOG_I("engine", "snapshot send completed",
			       "partition=%u to=%" PRIu64 " index=%" PRIu64,
			       p->id, m->from, o->meta.index);
			return;
		}
}

/* ---- follower ------------------------------------------------------------------ */

static bool meta_same(const struct raft_snapshot_meta *a,
		      const struct raft_snapshot_meta *b)
{
	return a->index == b->index && a->term == b->term &&
	       a->size == b->size && a->csum == b->csum;
}

static void meta_encode(const struct raft_snapshot_meta *m,
			uint8_t b[SNAP_META_BYTES])
{
	memset(b, 0, SNAP_META_BYTES);
	le_put64(b, SNAP_META_MAGIC);
	le_put64(b + 8, m->index);
	le_put64(b + 16, m->term);
	le_put64(b + 24, m->size);
	le_put64(b + 32, m->csum);
	le_put64(b + 40, m->conf.max_id);
	le_put32(b + 48, m->conf.n);
	for (uint32_t i = 0; i < m->conf.n && i < RAFT_MAX_MEMBERS; i++) {
		le_put64(b + 52 + i * 9, m->conf.ids[i]);
		b[52 + i * 9 + 8] = m->conf.roles[i];
	}
	le_put64(b + SNAP_META_BYTES - 8,
		 parley_xxh3(b, SNAP_META_BYTES - 8, SNAP_SEED));
}

static int meta_decode(const uint8_t *b, size_t len,
		       struct raft_snapshot_meta *m)
{
	if (len != SNAP_META_BYTES || le_get64(b) != SNAP_META_MAGIC ||
	    le_get64(b + SNAP_META_BYTES - 8) !=
		    parley_xxh3(b, SNAP_META_BYTES - 8, SNAP_SEED))
		return -PARLEY_ECORRUPT;
	memset(m, 0, sizeof *m);
	m->index = le_get64(b + 8);
	m->term = le_get64(b + 16);
	m->size = le_get64(b + 24);
	m->csum = le_get64(b + 32);
	m->conf.max_id = le_get64(b + 40);
	m->conf.n = le_get32(b + 48);
	if (m->conf.n > RAFT_MAX_MEMBERS)
		return -PARLEY_ECORRUPT;
	for (uint32_t i = 0; i < m->conf.n; i++) {
		m->conf.ids[i] = le_get64(b + 52 + i * 9);
		m->conf.roles[i] = b[52 + i * 9 + 8];
	}
	return 0;
}

struct dir_list {
	char (*names)[256];
	size_t n, cap;
};

static int list_cb(void *arg, const char *name)
{
	struct dir_list *l = arg;
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 32;
		void *nn = realloc(l->names, nc * sizeof *l->names);
		if (!nn)
			return -PARLEY_ENOMEM;
		l->names = nn;
		l->cap = nc;
	}
	snprintf(l->names[l->n++], 256, "%s", name);
	return 0;
}

/* ---- follower: receive (worker side) ------------------------------------------ */

static int stage_path(const struct snap_job *j, const char *name, char *buf,
		      size_t cap)
{
	return snprintf(buf, cap, "%s/stage/%s", j->sd, name) >= (int)cap
		       ? -PARLEY_EINVAL : 0;
}

/* Empties a directory (leftovers of an earlier attempt); creates it. */
static int dir_clean(struct pio *io, const char *dir)
{
	int rc = pio_dir_ensure(io, dir);
	if (rc)
		return rc;
	struct dir_list l = {0};
	rc = io->ops->list(io, dir, list_cb, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		char path[SNAP_PATH + 300];
		snprintf(path, sizeof path, "%s/%s", dir, l.names[i]);
		rc = io->ops->unlink(io, path);
	}
	free(l.names);
	return rc;
}

/* Forgets a partial snapshot on disk (partial.meta first: without it the
 * rest is not looked at). Worker, or pe_open. */
static void in_drop_files(struct pio *io, const char *sd)
{
	char path[SNAP_PATH + 32];
	snprintf(path, sizeof path, "%s/partial.meta", sd);
	(void)pio_file_remove(io, sd, path);
	snprintf(path, sizeof path, "%s/partial", sd);
	(void)pio_file_remove(io, sd, path);
	snprintf(path, sizeof path, "%s/stage", sd);
	(void)dir_clean(io, path);
}

/* A new snapshot: partial.meta names it, partial is empty, stage/ too. */
static int in_start(struct snap_job *j)
{
	struct pio *io = j->io;
	struct snap_in *in = j->in;
	in_close_files(io, in);
	char path[SNAP_PATH + 32], tmp[SNAP_PATH + 32];
	snprintf(path, sizeof path, "%s/partial.meta", j->sd);
	(void)pio_file_remove(io, j->sd, path);
	/* <data>/snap: the parent of sd */
	snprintf(path, sizeof path, "%s", j->sd);
	char *slash = strrchr(path, '/');
	PARLEY_ASSERT(slash);
	*slash = '\0';
	int rc = pio_dir_ensure(io, path);
	if (!rc)
		rc = pio_dir_ensure(io, j->sd);
	if (!rc) {
		snprintf(path, sizeof path, "%s/stage", j->sd);
		rc = dir_clean(io, path);
	}
	if (!rc) {
		snprintf(path, sizeof path, "%s/partial", j->sd);
		rc = io->ops->unlink(io, path);
		if (rc == -ENOENT)
			rc = 0;
	}
	if (!rc)
		rc = io->ops->open(io, path, PIO_CREATE | PIO_EXCL, &in->hf);
	if (!rc)
		rc = io->ops->fdatasync(io, in->hf);
	if (!rc) {
		uint8_t b[SNAP_META_BYTES];
		meta_encode(&in->meta, b);
		snprintf(tmp, sizeof tmp, "%s/partial.meta.tmp", j->sd);
		snprintf(path, sizeof path, "%s/partial.meta", j->sd);
		/* its directory sync also makes partial's entry durable */
		rc = pio_file_replace(io, j->sd, tmp, path, b, sizeof b);
	}
	in->fresh = false;
	return rc;
}

/* The header is complete: parsed and checked against the meta. */
static int in_header(struct snap_job *j, uint32_t need)
{
	struct snap_in *in = j->in;
	uint64_t index, term;
	uint32_t n, len;
	struct snap_file *files;
	int rc = hdr_parse(in->hdr, need, j->part, &files, &n, &len, &index,
			   &term);
	if (rc)
		return rc;
	if (len != need || index != in->meta.index || term != in->meta.term ||
	    parley_xxh3(in->hdr, len, SNAP_SEED) != in->meta.csum ||
	    files[n - 1].start + files[n - 1].size != in->meta.size ||
	    strcmp(files[0].name, HMAN_FILE)) {
		free(files);
		return -PARLEY_ECORRUPT;
	}
	in->files = files;
	in->nfiles = n;
	in->hdr_len = len;
	in->cur = 0;
	return 0;
}

/* Writes the chunk's bytes where they belong: the header's into partial,
 * each file's into its staged file; all of them durable on return. */
static int in_write(struct snap_job *j)
{
	struct pio *io = j->io;
	struct snap_in *in = j->in;
	const uint8_t *b = j->chunk;
	uint64_t off = j->off, end = j->off + j->len;
	bool hf_dirty = false, created = false;
	int rc = 0;
	struct pio_file *dirty = NULL; /* a staged file written, not synced */
	while (!rc && off < end) {
		if (!in->hdr_len) {
			if (off >= SNAP_MAX_HDR)
				return -PARLEY_ECORRUPT;
			uint32_t n = (uint32_t)PARLEY_MIN(end - off,
							  SNAP_MAX_HDR - off);
			memcpy(in->hdr + off, b, n);
			int64_t need = hdr_need(in->hdr, (size_t)(off + n));
			if (need < 0 || (need && (uint64_t)need <= off))
				return need < 0 ? (int)need : -PARLEY_ECORRUPT;
			if (need)
				n = (uint32_t)((uint64_t)need - off);
			rc = io->ops->pwrite(io, in->hf, b, n, off);
			hf_dirty = true;
			if (!rc && need)
				rc = in_header(j, (uint32_t)need);
			b += n;
			off += n;
			continue;
		}
		while (in->cur < in->nfiles &&
		       off >= in->files[in->cur].start + in->files[in->cur].size) {
			struct snap_file *f = &in->files[in->cur];
			if (f->f) {
				if (dirty == f->f) {
					rc = io->ops->fdatasync(io, f->f);
					dirty = NULL;
				}
				io->ops->close(io, f->f);
				f->f = NULL;
			}
			if (rc)
				return rc;
			in->cur++;
		}
		if (in->cur == in->nfiles || off < in->files[in->cur].start)
			return -PARLEY_EPROTO;
		struct snap_file *f = &in->files[in->cur];
		if (!f->f) {
			char path[SNAP_PATH + 64];
			rc = stage_path(j, f->name, path, sizeof path);
			if (!rc)
				rc = io->ops->open(io, path, PIO_CREATE, &f->f);
			if (rc)
				return rc;
			created = true;
		}
		uint64_t n = PARLEY_MIN(end - off, f->start + f->size - off);
		rc = io->ops->pwrite(io, f->f, b, (size_t)n, off - f->start);
		dirty = f->f;
		b += n;
		off += n;
	}
	if (!rc && dirty)
		rc = io->ops->fdatasync(io, dirty);
	if (!rc && hf_dirty)
		rc = io->ops->fdatasync(io, in->hf);
	if (!rc && created) {
		char path[SNAP_PATH + 16];
		snprintf(path, sizeof path, "%s/stage", j->sd);
		rc = io->ops->fsync_dir(io, path);
	}
	return rc;
}

/* The commit's second half (also pe_open's redo): hd holds exactly the
 * snapshot's files, staged ones renamed in; INSTALL removed. */
static int install_move(struct pio *io, const char *sd, const char *hd,
			const struct snap_file *files, uint32_t n)
{
	char from[SNAP_PATH + 300], to[SNAP_PATH + 300];
	int rc = pio_dir_ensure(io, hd);
	if (rc)
		return rc;
	struct dir_list l = {0};
	rc = io->ops->list(io, hd, list_cb, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		bool keep = false;
		for (uint32_t k = 0; k < n && !keep; k++)
			keep = !strcmp(l.names[i], files[k].name);
		if (keep)
			continue;
		snprintf(to, sizeof to, "%s/%s", hd, l.names[i]);
		rc = io->ops->unlink(io, to);
	}
	free(l.names);
	for (uint32_t k = 0; !rc && k < n; k++) {
		snprintf(from, sizeof from, "%s/stage/%s", sd, files[k].name);
		snprintf(to, sizeof to, "%s/%s", hd, files[k].name);
		rc = io->ops->rename(io, from, to);
		if (rc == -ENOENT)
			rc = 0; /* moved before a crash */
	}
	if (!rc)
		rc = io->ops->fsync_dir(io, hd);
	if (!rc) {
		snprintf(to, sizeof to, "%s/INSTALL", sd);
		rc = pio_file_remove(io, sd, to);
		if (rc == -PARLEY_ENOTFOUND)
			rc = 0;
	}
	return rc;
}

static int idem_gather(void *arg, const struct seg_idem *rec)
{
	struct snap_job *j = arg;
	if (j->nidem == j->cap_idem) {
		size_t nc = j->cap_idem ? j->cap_idem * 2 : 64;
		void *nn = realloc(j->idem, nc * sizeof *j->idem);
		if (!nn)
			return -PARLEY_ENOMEM;
		j->idem = nn;
		j->cap_idem = nc;
	}
	struct snap_idem *d = &j->idem[j->nidem++];
	d->rec = *rec;
	memcpy(d->key, rec->key, rec->klen);
	d->rec.key = NULL; /* pointed at d->key when replayed */
	return 0;
}

/* The last chunk is stored: commit and move the snapshot in, open it. */
static int install_run(struct snap_job *j)
{
	struct pio *io = j->io;
	struct snap_in *in = j->in;
	if (!in->hdr_len || in->bytes != in->meta.size)
		return -PARLEY_EPROTO;
	in_close_files(io, in);
	char path[SNAP_PATH + 64], tmp[SNAP_PATH + 16];
	int rc = 0;
	for (uint32_t i = 0; !rc && i < in->nfiles; i++) {
		if (in->files[i].size)
			continue; /* written as its bytes came */
		struct pio_file *f;
		rc = stage_path(j, in->files[i].name, path, sizeof path);
		if (!rc)
			rc = io->ops->open(io, path, PIO_CREATE, &f);
		if (!rc) {
			rc = io->ops->fdatasync(io, f);
			io->ops->close(io, f);
		}
	}
	if (!rc) {
		snprintf(path, sizeof path, "%s/stage", j->sd);
		rc = io->ops->fsync_dir(io, path);
	}
	if (!rc && j->conf_store) {
		rc = part_conf_write(io, j->e->dir, j->part, j->index, &j->conf);
		j->conf_stored = !rc;
	}
	if (!rc) {
		snprintf(tmp, sizeof tmp, "%s/INSTALL.tmp", j->sd);
		snprintf(path, sizeof path, "%s/INSTALL", j->sd);
		rc = pio_file_replace(io, j->sd, tmp, path, in->hdr, in->hdr_len);
	}
	if (rc)
		return rc;
	/* committed: from here the snapshot replaces the partition, now or
	 * at the next open (which redoes install_move) */
	j->committed = true;
	rc = install_move(io, j->sd, j->hd, in->files, in->nfiles);
	if (rc)
		return rc;
	in_drop_files(io, j->sd);
	j->hist_rc = hpart_open(io, j->hd, &j->ho, &j->hist);
	if (j->hist_rc)
		return 0; /* the shard marks the partition corrupt */
	/* the idempotency records the table is rebuilt from (idem.c's
	 * idem_rebuild, here on the worker: they are read from the segments),
	 * by the command time the history reached */
	uint64_t c = 0;
	size_t ns = hpart_segments(j->hist, NULL, 0);
	struct hpart_seg_view *v = ns ? malloc(ns * sizeof *v) : NULL;
	if (ns && !v)
		return -PARLEY_ENOMEM;
	ns = hpart_segments(j->hist, v, ns);
	for (size_t k = 0; k < ns; k++)
		c = PARLEY_MAX(c, v[k].info.max_ts);
	free(v);
	j->idem_clock = c;
	uint64_t min_ts = c > j->idem_window_ms ? c - j->idem_window_ms : 0;
	j->hist_rc = hpart_idem_load(j->hist, min_ts, idem_gather, j);
	return 0;
}

static int store_run(struct snap_job *j)
{
	struct snap_in *in = j->in;
	int rc = 0;
	if (in->fresh)
		rc = in_start(j);
	if (!rc && !in->hf) { /* resumed after a restart */
		char path[SNAP_PATH + 16];
		snprintf(path, sizeof path, "%s/partial", j->sd);
		rc = j->io->ops->open(j->io, path, 0, &in->hf);
	}
	if (!rc && j->len)
		rc = in_write(j);
	if (!rc)
		in->bytes += j->len;
	if (!rc && j->install)
		rc = install_run(j);
	if (rc && !j->committed) {
		in_close_files(j->io, in);
		in_drop_files(j->io, j->sd);
	}
	return rc;
}

/* ---- follower: the shard's side ------------------------------------------------ */

void part_snap_partial(const struct part *p, struct raft_snapshot_meta *meta,
		       uint64_t *bytes)
{
	memset(meta, 0, sizeof *meta);
	*bytes = 0;
	if (p->snap_in) {
		*meta = p->snap_in->meta;
		*bytes = p->snap_in->bytes;
	}
}

/*
 * The ready's snapshot part (raft.h contract step 2, before anything else
 * of it): hands the chunk (and, with the last one, the install) to a store
 * job. Returns PART_SNAP_PENDING (the ready waits for part_snap_done: the
 * caller keeps it out, p->snap_rd) or a negative error found without any
 * I/O (the caller fails the batch with raft_persist_failed).
 */
int part_snap_persist(struct shard *sh, struct part *p,
		      const struct raft_ready *rd)
{
	struct pe_engine *e = sh->e;
	PARLEY_ASSERT(rd->has_chunk && !p->snap_wait);
	struct snap_in *in = p->snap_in;
	int rc = 0;
	if (rd->chunk_offset == 0) {
		/* a snapshot starts (over): a new one, or ours again after a
		 * failure the core restarted from 0 */
		in_free_mem(e->io, in);
		p->snap_in = in = calloc(1, sizeof *in);
		if (in)
			in->hdr = malloc(SNAP_MAX_HDR);
		if (!in || !in->hdr) {
			in_free_mem(e->io, in);
			p->snap_in = NULL;
			rc = -PARLEY_ENOMEM;
		} else {
			in->meta = rd->chunk_snap;
			in->fresh = true;
		}
	} else if (!in || !meta_same(&in->meta, &rd->chunk_snap) ||
		   rd->chunk_offset != in->bytes) {
		rc = -PARLEY_EPROTO; /* the core resumes only ours */
	}
	if (!rc && rd->has_install &&
	    (!meta_same(&rd->install, &in->meta) ||
	     rd->chunk_offset + rd->chunk_len != in->meta.size))
		rc = -PARLEY_EPROTO;
	/* install_keeps_tail: a damaged entry (part_raft_recover_damaged)
	 * below the leader's kept log is replaced with the prefix; the log
	 * after the snapshot stays (part_raft_run) */
	struct snap_job *j = rc ? NULL : job_new(sh, p, SNAP_JOB_STORE, true);
	if (!rc && (!j || (rd->chunk_len && !(j->chunk = malloc(rd->chunk_len))))) {
		if (j)
			job_free(j);
		rc = -PARLEY_ENOMEM;
	}
	if (rc) {
		PLOG_E("engine", "snapshot chunk not stored", "partition=%u "
		       "offset=%" PRIu64 " err=%s", p->id, rd->chunk_offset,
		       parley_errname(rc));
		CNT(p, pub_snap_install_failed, 1);
		return rc;
	}
	if (rd->chunk_len)
		memcpy(j->chunk, rd->chunk, rd->chunk_len);
	j->in = in;
	j->meta = rd->chunk_snap;
	j->off = rd->chunk_offset;
	j->len = rd->chunk_len;
	j->install = rd->has_install;
	j->keeps_tail = rd->has_install && rd->install_keeps_tail;
	if (j->install) {
		/* the snapshot's configuration: stored by the job before
		 * INSTALL, the install's commit point (log/part_conf.c: a
		 * newer committed one is safe after a crash) */
		j->conf_store = part_conf_stale(p, rd->install.index);
		j->conf = rd->install.conf;
		j->index = rd->install.index;
		j->ho = (struct hpart_opts){
			.partition = p->id, .cache = sh->cache,
			.retention = e->retention.n ? &e->retention : NULL,
			.read_only = false,
			.idem_window_ms = e->idem_window_ms,
			.filter = e->opt.compact_filter,
			.filter_arg = e->opt.compact_filter_arg};
		j->idem_window_ms = p->cfg.idem_window_ms;
	}
	p->snap_wait = true;
	job_push(sh, j, true); /* replication waits on it, as on a HARDSTATE */
	return PART_SNAP_PENDING;
}

/* The partition's state is rebuilt from its new history (opened by the
 * install job) as at open; tails move to the new streams; proposals
 * waiting here fail (a follower has none that could still commit: the
 * snapshot is past its commit index). The old history is closed by a
 * job. */
static int install_state(struct shard *sh, struct part *p,
			 struct snap_job *j)
{
	struct hpart *old = p->hist;
	/* the new segments may carry the old ones' ids (they count per
	 * partition from 1): no block of the old may stay cached under them.
	 * The cache keys blocks by partition and id (hpart_uncache); erasing
	 * the bare ids here erased nothing, and reads after an install got
	 * the old segment's blocks (a replica short of entries until its
	 * next restart: cluster_test_cluster_netns_long) */
	hpart_uncache(old, true);
	p->hist = NULL;
	if (old) {
		struct snap_job *c = job_new(sh, p, SNAP_JOB_HIST_CLOSE, false);
		if (c) {
			c->old = old;
			job_push(sh, c, false);
		} else {
			hpart_close_detached(old); /* out of memory: here */
		}
	}
	struct pe_sub *subs = NULL;
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext) {
			while (s->subs) {
				struct pe_sub *sub = s->subs;
				s->subs = sub->next;
				sub->next = subs;
				subs = sub;
				sub->st = NULL;
			}
		}
	shard_fail_chain(sh, part_wait_take_after(p, 0), -PARLEY_ENOTLEADER);
	part_free_state(p);
	p->corrupt = false;
	int rc = 0;
	if (j->hist_rc == -PARLEY_ECORRUPT || (!j->hist && !j->hist_rc)) {
		char f[64];
		snprintf(f, sizeof f, "hist/%u", p->id);
		part_mark_corrupt(p, f, 0, "history segment, dictionary, HISTORY "
				  "or idempotency section unreadable");
	} else if (j->hist_rc) {
		rc = j->hist_rc;
	}
	if (j->hist) {
		p->hist = j->hist;
		j->hist = NULL;
		p->flushed_index = hpart_manifest(p->hist)->flushed_index;
		p->last_index = p->flushed_index;
		p->idem_clock = PARLEY_MAX(p->idem_clock, j->idem_clock);
		for (size_t k = 0; !rc && !p->corrupt && k < j->nidem; k++) {
			j->idem[k].rec.key = j->idem[k].key;
			rc = idem_load_record(p, &j->idem[k].rec);
		}
		hpart_uncache(p->hist, false);
	}
	while (subs) {
		struct pe_sub *sub = subs;
		subs = sub->next;
		struct stream *s = p->hist && !p->corrupt
					   ? stream_lookup(p, sub->key,
							   sub->klen, true)
					   : NULL;
		if (!s) {
			sub->attached = false;
			sub_detach(sh, sub);
			struct pe_sub_update u = {.event = PE_SUB_CLOSED,
						  .err = -PARLEY_ECORRUPT,
						  .next_seq = sub->next_seq};
			atomic_store(&sub->dead, true);
			sub->cb(sub->arg, sub, &u);
			continue;
		}
		sub->st = s;
		sub->next = s->subs;
		s->subs = sub;
		if (!sub->paused && !sub->in_catchup && !atomic_load(&sub->dead))
			sub_start(sh, sub);
	}
	return rc;
}

/* A store (and install) job is back: its result for the ready that waits
 * (0 chunk stored, 1 installed, or a negative error), which part_raft_run
 * resumes. */
static void store_done(struct shard *sh, struct part *p, struct snap_job *j)
{
	struct pe_engine *e = sh->e;
	bool waits = p->snap_wait && p->ready_out;
	p->snap_wait = false;
	int rc = j->rc;
	struct snap_in *in = p->snap_in;
	PARLEY_ASSERT(in == j->in);
	if (j->conf_stored) { /* the file holds it, whatever came next */
		part_conf_set(p, j->index, &j->conf);
		if (p->conf_index == j->index)
			p->conf_unstored = false;
	}
	if (rc && !j->committed) {
		PLOG_E("engine", j->install ? "received snapshot refused"
					    : "snapshot chunk not stored",
		       "partition=%u offset=%" PRIu64 " index=%" PRIu64
		       " err=%s", p->id, j->off, j->meta.index,
		       parley_errname(rc));
		CNT(p, pub_snap_install_failed, 1);
		in_free_mem(e->io, in);
		p->snap_in = NULL;
	} else {
		CNT(p, pub_snap_recv, j->len);
	}
	if (j->committed) {
		/* committed (INSTALL stored): the snapshot replaces the
		 * partition, now or at the next open */
		int src = rc ? rc : install_state(sh, p, j);
		if (!src && (p->corrupt ||
			     p->flushed_index != j->meta.index)) {
			PLOG_E("engine", "installed snapshot does not match its "
			       "index", "partition=%u index=%" PRIu64
			       " flushed=%" PRIu64, p->id, j->meta.index,
			       p->flushed_index);
			src = -PARLEY_ECORRUPT;
		}
		in_free_mem(e->io, in);
		p->snap_in = NULL;
		if (src) {
			if (!p->corrupt)
				part_mark_corrupt(p, "hist (snapshot install)", 0,
						  "snapshot install failed");
			CNT(p, pub_snap_install_failed, 1);
			rc = src;
		} else {
			p->last_term = j->meta.term;
			p->snap_term = j->meta.term;
			/* a leader that sent a prefix whose term it no longer
			 * knew (0): the term of our own entry there */
			if (j->keeps_tail && !p->snap_term)
				p->snap_term = p->last_term =
					raft_term_at(p->raft, j->meta.index);
			CNT(p, pub_snap_installed, 1);
			PLOG_I("engine", "snapshot installed", "partition=%u "
			       "index=%" PRIu64 " term=%" PRIu64 " bytes=%" PRIu64,
			       p->id, j->meta.index, j->meta.term, j->meta.size);
			rc = 1;
		}
	}
	if (!waits)
		return; /* the ready was failed meanwhile (shard_fatal) */
	p->ready_out = false;
	p->snap_rc = rc;
	shard_mark_dirty(sh, p); /* part_raft_run resumes p->snap_rd */
}

/* REQ_SNAP_DONE: a job that answers is back on its partition's shard. */
void part_snap_done(struct shard *sh, struct req *r)
{
	struct snap_job *j = r->out;
	struct part *p = &sh->e->parts[r->part];
	PARLEY_ASSERT(sh->snap_jobs > 0);
	sh->snap_jobs--;
	switch (j->kind) {
	case SNAP_JOB_IMAGE:
		image_done(sh, p, j);
		break;
	case SNAP_JOB_READ:
		read_done(sh, p, j);
		break;
	case SNAP_JOB_STORE:
		store_done(sh, p, j);
		break;
	default:
		PARLEY_ASSERT(!"snapshot job without a completion");
	}
	if (j->hist) /* not installed (the partition failed meanwhile) */
		hpart_close_detached(j->hist);
	j->done = NULL;
	job_free(j);
	free(r);
}

/* A SNAPSHOT message is stepped only while no history job of the
 * partition runs (the install replaces the history directory). */
bool part_snap_step_ok(const struct part *p, const struct raft_msg *m)
{
	return m->type != RAFT_MSG_SNAPSHOT ||
	       (p->flush_st == FLUSH_IDLE && p->compact_st == COMPACT_IDLE);
}

/* ---- open and free ----------------------------------------------------------------- */

static int read_small(struct pio *io, const char *path, uint8_t **out,
		      size_t *len, size_t max)
{
	struct pio_file *f;
	int rc = io->ops->open(io, path, 0, &f);
	if (rc)
		return rc;
	int64_t sz = io->ops->size(io, f);
	uint8_t *b = NULL;
	rc = sz < 0 ? (int)sz : (uint64_t)sz > max ? -PARLEY_ECORRUPT : 0;
	if (!rc) {
		b = malloc(sz ? (size_t)sz : 1);
		rc = b ? 0 : -PARLEY_ENOMEM;
	}
	if (!rc) {
		int64_t got = io->ops->pread(io, f, b, (size_t)sz, 0);
		rc = got == sz ? 0 : got < 0 ? (int)got : -PARLEY_EIO;
	}
	io->ops->close(io, f);
	if (rc) {
		free(b);
		return rc;
	}
	*out = b;
	*len = (size_t)sz;
	return 0;
}

/* A snapshot partly received before a restart: the header's bytes in
 * partial, then the staged files in header order (the bytes held end at
 * the first file that is missing or short). pe_open's thread. */
static int in_resume(struct pe_engine *e, struct part *p,
		     const struct raft_snapshot_meta *m)
{
	char sd[600], path[SNAP_PATH + 64];
	snap_dir(e, p, sd, sizeof sd);
	snprintf(path, sizeof path, "%s/partial", sd);
	uint8_t *b = NULL;
	size_t len = 0;
	int rc = read_small(e->io, path, &b, &len, SNAP_MAX_HDR);
	if (rc)
		return rc;
	struct snap_in *in = calloc(1, sizeof *in);
	uint8_t *hdr = malloc(SNAP_MAX_HDR);
	if (!in || !hdr) {
		free(in);
		free(hdr);
		free(b);
		return -PARLEY_ENOMEM;
	}
	memcpy(hdr, b, len);
	free(b);
	in->hdr = hdr;
	in->meta = *m;
	in->bytes = len;
	int64_t need = hdr_need(hdr, len);
	if (need < 0 || (need && (uint64_t)need != len)) {
		in_free_mem(e->io, in);
		return -PARLEY_ECORRUPT;
	}
	if (need) {
		struct snap_job j = {.part = p->id, .in = in};
		rc = in_header(&j, (uint32_t)need);
		for (uint32_t i = 0; !rc && i < in->nfiles; i++) {
			struct snap_file *f = &in->files[i];
			if (!f->size)
				continue;
			snprintf(path, sizeof path, "%s/stage/%s", sd, f->name);
			struct pio_file *pf;
			if (e->io->ops->open(e->io, path, 0, &pf))
				break;
			int64_t sz = e->io->ops->size(e->io, pf);
			e->io->ops->close(e->io, pf);
			if (sz < 0 || (uint64_t)sz > f->size) {
				rc = -PARLEY_ECORRUPT;
				break;
			}
			in->bytes = f->start + (uint64_t)sz;
			if ((uint64_t)sz < f->size)
				break;
		}
		if (rc) {
			in_free_mem(e->io, in);
			return rc;
		}
	}
	if (in->bytes > m->size) {
		in_free_mem(e->io, in);
		return -PARLEY_ECORRUPT;
	}
	p->snap_in = in;
	return 0;
}

int part_snap_open(struct pe_engine *e, struct part *p)
{
	p->cl = &e->cl;
	if (e->opt.read_only)
		return 0;
	char sd[600], hd[600], path[700];
	snap_dir(e, p, sd, sizeof sd);
	hist_dir(e, p, hd, sizeof hd);
	snprintf(path, sizeof path, "%s/INSTALL", sd);
	uint8_t *b = NULL;
	size_t len = 0;
	int rc = read_small(e->io, path, &b, &len, SNAP_MAX_HDR);
	if (rc == 0) {
		struct snap_file *files = NULL;
		uint32_t n = 0, hl = 0;
		uint64_t index, term;
		rc = hdr_parse(b, len, p->id, &files, &n, &hl, &index, &term);
		if (!rc)
			rc = install_move(e->io, sd, hd, files, n);
		free(files);
		free(b);
		if (rc) {
			PLOG_E("engine", "cannot finish a snapshot install",
			       "partition=%u err=%s", p->id, parley_errname(rc));
			return rc;
		}
		PLOG_I("engine", "snapshot install finished at open",
		       "partition=%u index=%" PRIu64, p->id, index);
		in_drop_files(e->io, sd);
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	snprintf(path, sizeof path, "%s/partial.meta", sd);
	rc = read_small(e->io, path, &b, &len, SNAP_META_BYTES);
	if (rc == -ENOENT)
		return 0;
	struct raft_snapshot_meta m;
	if (!rc)
		rc = meta_decode(b, len, &m);
	free(b);
	if (!rc)
		rc = in_resume(e, p, &m);
	if (rc) {
		if (rc == -PARLEY_ENOMEM)
			return rc;
		in_drop_files(e->io, sd);
		return 0;
	}
	PLOG_I("engine", "resuming a partly received snapshot", "partition=%u "
	       "index=%" PRIu64 " have=%" PRIu64 " size=%" PRIu64, p->id,
	       m.index, p->snap_in->bytes, m.size);
	return 0;
}

/* After the shard threads and the pool stopped. */
void part_snap_free(struct part *p)
{
	if (!p->cl)
		return;
	struct pe_engine *e = eng_of(p);
	if (p->snap_out && !p->snap_out->reads)
		out_free(e->io, p->snap_out);
	p->snap_out = NULL;
	out_free(e->io, p->snap_img);
	p->snap_img = NULL;
	in_free_mem(e->io, p->snap_in);
	p->snap_in = NULL;
}
