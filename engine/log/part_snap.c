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
 * Leader (the image):
 *   - The group's compaction point (its snapshot index) normally floats
 *     behind the applied index (log_keep_bytes), with a placeholder meta.
 *     When the core asks for snapshot bytes (part_snap_read) and there is
 *     no image for its snapshot index, the partition wants one
 *     (snap_want). The next compaction (part_raft_compact) makes it, once
 *     no history job runs: if the history's flushed index is below the
 *     compaction point a flush is started first; then the live files are
 *     opened (open descriptors keep them readable after a compaction
 *     deletes or a store replaces them) and the group is compacted to the
 *     flushed index with the image's meta (raft_compacted).
 *   - While the image is being read the compaction point does not move
 *     (a new one would restart every transfer): the group keeps its log
 *     in memory meanwhile, up to log_keep_bytes + SNAP_PIN_BYTES; beyond
 *     that, or SNAP_IDLE_TICKS ticks after its last read, or on losing
 *     leadership, the image is released (transfers not finished count as
 *     failed; a follower that still needs one gets a new image).
 *   - Chunks leave at most at snapshot_rate_bytes per second (a token
 *     bucket per shard, rate / shards each): a read refused by the
 *     throttle is retried by the core on the follower's next answer or
 *     heartbeat.
 *
 * Follower (receive and install), on the shard thread, before the ready's
 * messages are sent (raft.h contract, step 2):
 *   - each chunk is written at its offset into <data>/snap/<part>/partial
 *     and fdatasync'd; partial.meta (stored atomically when a snapshot
 *     starts) names the snapshot, so a restarted follower reports the
 *     bytes it holds (raft_storage.load's partial) and the leader resumes
 *     there; a link break resumes the same way (the core keeps the offset);
 *   - the last chunk installs: the header is verified, the files are
 *     copied into <data>/snap/<part>/stage and fdatasync'd, and the
 *     header is stored as <data>/snap/<part>/INSTALL (pio_file_replace):
 *     that is the commit point. Then every file of hist/<part> the
 *     snapshot does not name is removed, the staged files are renamed in,
 *     the directory fsync'd and INSTALL removed; pe_open redoes these
 *     steps when it finds INSTALL (a crash in between). The partition's
 *     memtable and idempotency table are rebuilt from the new history
 *     (as at open), tails re-attach to their streams, and the group
 *     continues from the snapshot index. WAL records of the partition at
 *     or below it are skipped at recovery (they are history now); later
 *     ones are superseded by the leader's appends.
 *   - a snapshot that does not verify is dropped (partial removed) and the
 *     batch reported failed to the core (raft_persist_failed): the leader
 *     starts it again from offset 0.
 *
 * Limits: the chunk store, the install's copy and renames, and the image's
 * file opens are blocking file I/O on the shard thread (one chunk of at
 * most RAFT_MAX_CHUNK_BYTES per step; the install copies the snapshot
 * once); moving them to the read pool, as the HARDSTATE store was, is
 * left to do.
 *
 * Threads: everything on the partition's shard thread, except
 * part_snap_open (pe_open, before the shard threads start).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

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
#define SNAP_COPY_BYTES (1u << 20)
#define SNAP_META_BYTES (8u * 6u + 4u + RAFT_MAX_MEMBERS * 9u + 8u)

struct snap_file {
	char name[SNAP_NAME_MAX];
	uint64_t start, size;  /* byte range in the stream */
	struct pio_file *f;
};

struct snap_out {
	struct raft_snapshot_meta meta;
	bool live;             /* the core took it (raft_compacted) */
	uint8_t *hdr;
	uint32_t hdr_len;
	struct snap_file *files;
	uint32_t nfiles;
	uint32_t idle;         /* ticks since the core last read it */
	uint64_t sending[RAFT_MAX_MEMBERS]; /* followers a transfer started to */
	uint32_t nsending;
};

struct snap_in {
	struct raft_snapshot_meta meta;
	uint64_t bytes;        /* durable in `partial` */
	struct pio_file *f;    /* partial, while receiving */
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

static void files_close(struct pio *io, struct snap_file *f, uint32_t n)
{
	for (uint32_t i = 0; f && i < n; i++)
		if (f[i].f)
			io->ops->close(io, f[i].f);
	free(f);
}

/* ---- leader: the image ---------------------------------------------------------- */

static void out_free(struct pe_engine *e, struct snap_out *o)
{
	if (!o)
		return;
	files_close(e->io, o->files, o->nfiles);
	free(o->hdr);
	free(o);
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
	out_free(eng_of(p), o);
	p->snap_out = NULL;
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

/* Opens every live file of p's history and builds the header. */
static int out_make(struct pe_engine *e, struct part *p, struct snap_out **out)
{
	char hd[600];
	hist_dir(e, p, hd, sizeof hd);
	struct pio *io = e->io;
	struct snap_out *o = calloc(1, sizeof *o);
	if (!o)
		return -PARLEY_ENOMEM;
	/* HISTORY first: opened before it is read, so its bytes are the
	 * manifest read (no store runs: no history job is in flight) */
	struct hman m;
	hman_init(&m, p->id);
	char path[700];
	uint32_t cap = 0;
	int rc = -PARLEY_ENOMEM;
	snprintf(path, sizeof path, "%s/%s", hd, HMAN_FILE);
	struct pio_file *hf = NULL;
	rc = io->ops->open(io, path, 0, &hf);
	if (rc)
		goto fail;
	rc = hman_load(io, hd, &m);
	if (rc)
		goto fail_hf;
	const struct hman *live = hpart_manifest(p->hist);
	if (m.generation != live->generation ||
	    m.flushed_index != p->flushed_index) {
		rc = -PARLEY_EAGAIN;
		goto fail_hf;
	}
	cap = 1 + (uint32_t)m.nsegs * 2 + 1;
	o->files = calloc(cap, sizeof *o->files);
	if (!o->files) {
		rc = -PARLEY_ENOMEM;
		goto fail_hf;
	}
	snprintf(o->files[0].name, SNAP_NAME_MAX, "%s", HMAN_FILE);
	o->files[0].f = hf;
	hf = NULL;
	o->nfiles = 1;
	for (size_t i = 0; i < m.nsegs; i++)
		snprintf(o->files[o->nfiles++].name, SNAP_NAME_MAX,
			 "seg-%016" PRIx64 ".pseg", m.segs[i].id);
	uint64_t dicts[HMAN_MAX_SEGS + 1];
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
	size_t hl = SNAP_HDR_FIXED + 8;
	for (uint32_t i = 0; i < o->nfiles; i++) {
		struct snap_file *f = &o->files[i];
		if (!f->f) {
			snprintf(path, sizeof path, "%s/%s", hd, f->name);
			rc = io->ops->open(io, path, 0, &f->f);
			if (rc)
				goto fail_hf;
		}
		int64_t sz = io->ops->size(io, f->f);
		if (sz < 0) {
			rc = (int)sz;
			goto fail_hf;
		}
		f->size = (uint64_t)sz;
		hl += 1 + strlen(f->name) + 8;
	}
	o->hdr = malloc(hl);
	if (!o->hdr) {
		rc = -PARLEY_ENOMEM;
		goto fail_hf;
	}
	uint64_t index = p->flushed_index;
	uint64_t term = raft_term_at(p->raft, index);
	le_put64(o->hdr, SNAP_MAGIC);
	le_put32(o->hdr + 8, SNAP_VERSION);
	le_put32(o->hdr + 12, p->id);
	le_put64(o->hdr + 16, index);
	le_put64(o->hdr + 24, term);
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
	o->meta.index = index;
	o->meta.term = term;
	o->meta.size = pos;
	o->meta.csum = parley_xxh3(o->hdr, o->hdr_len, SNAP_SEED);
	o->meta.conf = *raft_conf(p->raft);
	hman_free(&m);
	*out = o;
	return 0;
fail_hf:
	if (hf)
		io->ops->close(io, hf);
fail:
	hman_free(&m);
	out_free(e, o);
	return rc;
}

/*
 * After a compaction step: when the core asked for a snapshot it lacks, an
 * image at the history's flushed index (0: *out is its meta, for
 * raft_compacted; the caller reports with part_snap_image_taken), or
 * -PARLEY_EAGAIN (not now: nothing wanted, a history job in flight, or a
 * flush of the partition started first).
 */
int part_snap_image(struct part *p, struct raft_snapshot_meta *out)
{
	struct pe_engine *e = eng_of(p);
	struct shard *sh = &e->shards[p->id % e->nshards];
	if (!p->snap_want || p->corrupt || !p->hist ||
	    raft_role(p->raft) != RAFT_LEADER)
		return -PARLEY_EAGAIN;
	if (p->flush_st != FLUSH_IDLE || p->compact_st != COMPACT_IDLE)
		return -PARLEY_EAGAIN;
	if (p->flushed_index < p->rsnap_index || p->flushed_index == 0) {
		/* the history must reach the log's compaction point first;
		 * the next compaction step looks again */
		(void)hist_job_flush_part(sh, p);
		return -PARLEY_EAGAIN;
	}
	part_snap_release(p, "a new image");
	struct snap_out *o;
	int rc = out_make(e, p, &o);
	if (rc) {
		if (rc != -PARLEY_EAGAIN)
			PLOG_E("engine", "cannot make a snapshot image",
			       "partition=%u err=%s", p->id, parley_errname(rc));
		return -PARLEY_EAGAIN;
	}
	p->snap_out = o;
	*out = o->meta;
	return 0;
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

/* raft_storage.snapshot_read: bytes of the image at the group's snapshot
 * index, or -PARLEY_EAGAIN (no image yet: one is made at the next
 * compaction step; or throttled). */
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
	if (off > o->meta.size || len > o->meta.size - off)
		return -PARLEY_EINVAL;
	struct pe_engine *e = eng_of(p);
	if (!tokens_take(e, p, len))
		return -PARLEY_ERATE;
	uint8_t *d = buf;
	uint32_t done = 0;
	if (off < o->hdr_len) {
		uint32_t n = (uint32_t)PARLEY_MIN((uint64_t)len, o->hdr_len - off);
		memcpy(d, o->hdr + off, n);
		done = n;
	}
	for (uint32_t i = 0; i < o->nfiles && done < len; i++) {
		struct snap_file *f = &o->files[i];
		uint64_t at = off + done;
		if (at >= f->start + f->size || at < f->start)
			continue;
		uint64_t n = PARLEY_MIN((uint64_t)(len - done),
					f->start + f->size - at);
		int64_t got = e->io->ops->pread(e->io, f->f, d + done, (size_t)n,
						at - f->start);
		if (got != (int64_t)n) {
			PLOG_E("engine", "snapshot file unreadable", "partition=%u "
			       "file=%s err=%s", p->id, f->name,
			       parley_errname(got < 0 ? (int)got : -PARLEY_EIO));
			part_snap_release(p, "file unreadable");
			p->snap_want = true;
			return -PARLEY_EIO;
		}
		done += (uint32_t)n;
	}
	return done == len ? (int)len : -PARLEY_EIO;
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

/* ---- follower: receive -------------------------------------------------------- */

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

static void in_free(struct pe_engine *e, struct part *p)
{
	if (!p->snap_in)
		return;
	if (p->snap_in->f)
		e->io->ops->close(e->io, p->snap_in->f);
	free(p->snap_in);
	p->snap_in = NULL;
}

/* Forgets the partial snapshot, on disk too. */
static void in_drop(struct pe_engine *e, struct part *p)
{
	in_free(e, p);
	char sd[600], path[700];
	snap_dir(e, p, sd, sizeof sd);
	snprintf(path, sizeof path, "%s/partial.meta", sd);
	(void)pio_file_remove(e->io, sd, path);
	snprintf(path, sizeof path, "%s/partial", sd);
	(void)pio_file_remove(e->io, sd, path);
}

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

/* A new snapshot starts: partial.meta names it, partial is empty. */
static int in_start(struct pe_engine *e, struct part *p,
		    const struct raft_snapshot_meta *m)
{
	in_drop(e, p);
	char sd[600], path[700], tmp[700];
	snprintf(path, sizeof path, "%s/snap", e->dir);
	int rc = pio_dir_ensure(e->io, path);
	snap_dir(e, p, sd, sizeof sd);
	if (!rc)
		rc = pio_dir_ensure(e->io, sd);
	if (rc)
		return rc;
	struct snap_in *in = calloc(1, sizeof *in);
	if (!in)
		return -PARLEY_ENOMEM;
	in->meta = *m;
	snprintf(path, sizeof path, "%s/partial", sd);
	rc = e->io->ops->open(e->io, path, PIO_CREATE | PIO_EXCL, &in->f);
	if (!rc)
		rc = e->io->ops->fdatasync(e->io, in->f);
	if (!rc) {
		uint8_t b[SNAP_META_BYTES];
		meta_encode(m, b);
		snprintf(tmp, sizeof tmp, "%s/partial.meta.tmp", sd);
		snprintf(path, sizeof path, "%s/partial.meta", sd);
		rc = pio_file_replace(e->io, sd, tmp, path, b, sizeof b);
	}
	if (rc) {
		if (in->f)
			e->io->ops->close(e->io, in->f);
		free(in);
		return rc;
	}
	p->snap_in = in;
	return 0;
}

/* The partial file, opened on first use after a restart. */
static int in_open(struct pe_engine *e, struct part *p)
{
	struct snap_in *in = p->snap_in;
	if (in->f)
		return 0;
	char sd[600], path[700];
	snap_dir(e, p, sd, sizeof sd);
	snprintf(path, sizeof path, "%s/partial", sd);
	return e->io->ops->open(e->io, path, 0, &in->f);
}

static int chunk_store(struct pe_engine *e, struct part *p,
		       const struct raft_ready *rd)
{
	struct snap_in *in = p->snap_in;
	if (!in || !meta_same(&in->meta, &rd->chunk_snap)) {
		if (rd->chunk_offset != 0)
			return -PARLEY_EPROTO; /* the core resumes only ours */
		int rc = in_start(e, p, &rd->chunk_snap);
		if (rc)
			return rc;
		in = p->snap_in;
	}
	if (!rd->chunk_len)
		return 0;
	if (rd->chunk_offset != in->bytes)
		return -PARLEY_EPROTO;
	int rc = in_open(e, p);
	if (rc)
		return rc;
	rc = e->io->ops->pwrite(e->io, in->f, rd->chunk, rd->chunk_len,
				    rd->chunk_offset);
	if (!rc)
		rc = e->io->ops->fdatasync(e->io, in->f);
	if (rc)
		return rc;
	in->bytes += rd->chunk_len;
	CNT(p, pub_snap_recv, rd->chunk_len);
	return 0;
}

/* ---- follower: install ----------------------------------------------------------- */

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

/* The commit's second half (also pe_open's redo): hist/<part> holds
 * exactly the snapshot's files, staged ones renamed in; INSTALL removed. */
static int install_move(struct pe_engine *e, struct part *p,
			const struct snap_file *files, uint32_t n)
{
	char sd[600], hd[600], stage[700], from[1000], to[1000];
	snap_dir(e, p, sd, sizeof sd);
	hist_dir(e, p, hd, sizeof hd);
	snprintf(stage, sizeof stage, "%s/stage", sd);
	int rc = pio_dir_ensure(e->io, hd);
	if (rc)
		return rc;
	struct dir_list l = {0};
	rc = e->io->ops->list(e->io, hd, list_cb, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		bool keep = false;
		for (uint32_t k = 0; k < n && !keep; k++)
			keep = !strcmp(l.names[i], files[k].name);
		if (keep)
			continue;
		snprintf(to, sizeof to, "%s/%s", hd, l.names[i]);
		rc = e->io->ops->unlink(e->io, to);
	}
	free(l.names);
	for (uint32_t k = 0; !rc && k < n; k++) {
		snprintf(from, sizeof from, "%s/%s", stage, files[k].name);
		snprintf(to, sizeof to, "%s/%s", hd, files[k].name);
		rc = e->io->ops->rename(e->io, from, to);
		if (rc == -ENOENT)
			rc = 0; /* moved before a crash */
	}
	if (!rc)
		rc = e->io->ops->fsync_dir(e->io, hd);
	if (!rc) {
		snprintf(to, sizeof to, "%s/INSTALL", sd);
		rc = pio_file_remove(e->io, sd, to);
		if (rc == -PARLEY_ENOTFOUND)
			rc = 0;
	}
	return rc;
}

/* Empties the staging directory (leftovers of an earlier attempt). */
static int stage_clean(struct pe_engine *e, const char *stage)
{
	int rc = pio_dir_ensure(e->io, stage);
	if (rc)
		return rc;
	struct dir_list l = {0};
	rc = e->io->ops->list(e->io, stage, list_cb, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		char path[1000];
		snprintf(path, sizeof path, "%s/%s", stage, l.names[i]);
		rc = e->io->ops->unlink(e->io, path);
	}
	free(l.names);
	return rc;
}

/* Verifies the received snapshot and stages its files; then stores
 * INSTALL (the commit point). On error nothing of the partition changed. */
static int install_prepare(struct pe_engine *e, struct part *p,
			   const struct raft_snapshot_meta *m,
			   uint8_t **hdr_out, uint32_t *hdr_len,
			   struct snap_file **files_out, uint32_t *nfiles)
{
	struct snap_in *in = p->snap_in;
	if (!in || !meta_same(&in->meta, m) || in->bytes != m->size)
		return -PARLEY_EPROTO;
	int orc = in_open(e, p); /* all bytes came before a restart */
	if (orc)
		return orc;
	size_t hl = (size_t)PARLEY_MIN(m->size, (uint64_t)SNAP_MAX_HDR);
	uint8_t *hdr = malloc(hl ? hl : 1);
	uint8_t *buf = malloc(SNAP_COPY_BYTES);
	struct snap_file *files = NULL;
	int rc = -PARLEY_ENOMEM;
	if (!hdr || !buf)
		goto out;
	int64_t got = e->io->ops->pread(e->io, in->f, hdr, hl, 0);
	rc = got == (int64_t)hl ? 0 : got < 0 ? (int)got : -PARLEY_EIO;
	uint64_t index = 0, term = 0;
	uint32_t n = 0, len = 0;
	if (!rc)
		rc = hdr_parse(hdr, hl, p->id, &files, &n, &len, &index, &term);
	if (!rc && (index != m->index || term != m->term ||
		    parley_xxh3(hdr, len, SNAP_SEED) != m->csum ||
		    files[n - 1].start + files[n - 1].size != m->size ||
		    strcmp(files[0].name, HMAN_FILE)))
		rc = -PARLEY_ECORRUPT;
	char sd[600], stage[700], path[1000];
	snap_dir(e, p, sd, sizeof sd);
	snprintf(stage, sizeof stage, "%s/stage", sd);
	if (!rc)
		rc = stage_clean(e, stage);
	for (uint32_t i = 0; !rc && i < n; i++) {
		struct pio_file *f;
		snprintf(path, sizeof path, "%s/%s", stage, files[i].name);
		rc = e->io->ops->open(e->io, path, PIO_CREATE | PIO_EXCL, &f);
		if (rc)
			break;
		for (uint64_t o = 0; !rc && o < files[i].size;) {
			size_t k = (size_t)PARLEY_MIN((uint64_t)SNAP_COPY_BYTES,
						      files[i].size - o);
			got = e->io->ops->pread(e->io, in->f, buf, k,
						files[i].start + o);
			rc = got == (int64_t)k ? 0 : got < 0 ? (int)got : -PARLEY_EIO;
			if (!rc)
				rc = e->io->ops->pwrite(e->io, f, buf, k, o);
			o += k;
		}
		if (!rc)
			rc = e->io->ops->fdatasync(e->io, f);
		e->io->ops->close(e->io, f);
	}
	if (!rc)
		rc = e->io->ops->fsync_dir(e->io, stage);
	/* the snapshot's configuration is stored before the commit point
	 * (log/part_conf.c: a newer committed one is safe after a crash) */
	if (!rc)
		rc = part_conf_store(e, p, m->index, &m->conf);
	if (!rc) {
		char tmp[700], fin[700];
		snprintf(tmp, sizeof tmp, "%s/INSTALL.tmp", sd);
		snprintf(fin, sizeof fin, "%s/INSTALL", sd);
		rc = pio_file_replace(e->io, sd, tmp, fin, hdr, len);
	}
	if (!rc) {
		*hdr_out = hdr;
		hdr = NULL;
		*hdr_len = len;
		*files_out = files;
		files = NULL;
		*nfiles = n;
	}
out:
	free(hdr);
	free(buf);
	free(files);
	return rc;
}

/* The partition's state is rebuilt from its new history as at open; tails
 * move to the new streams; proposals waiting here fail (a follower has
 * none that could still commit: the snapshot is past its commit index). */
static int install_state(struct shard *sh, struct part *p,
			 const struct snap_file *files, uint32_t n)
{
	struct pe_engine *e = sh->e;
	const struct hman *old = p->hist ? hpart_manifest(p->hist) : NULL;
	for (size_t i = 0; old && i < old->nsegs; i++)
		bcache_erase_segment(sh->cache, old->segs[i].id);
	hpart_close(p->hist);
	p->hist = NULL;
	int rc = install_move(e, p, files, n);
	if (rc)
		return rc;
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
	rc = part_hist_open(e, sh, p);
	if (!rc && p->hist) {
		const struct hman *nm = hpart_manifest(p->hist);
		for (size_t i = 0; i < nm->nsegs; i++)
			bcache_erase_segment(sh->cache, nm->segs[i].id);
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
	(void)files;
	return rc;
}

/* The ready's snapshot part (raft.h contract step 2, before anything
 * else of it): the chunk is made durable; with the last one the snapshot
 * is installed. Returns 0 (chunk stored), 1 (installed: the caller resets
 * the group's log to the snapshot index) or a negative error (nothing
 * installed; the caller fails the batch with raft_persist_failed). */
int part_snap_persist(struct shard *sh, struct part *p,
		      const struct raft_ready *rd)
{
	struct pe_engine *e = sh->e;
	if (!rd->has_chunk)
		return 0;
	int rc = chunk_store(e, p, rd);
	if (rc) {
		PLOG_E("engine", "snapshot chunk not stored", "partition=%u "
		       "offset=%" PRIu64 " err=%s", p->id, rd->chunk_offset,
		       parley_errname(rc));
		CNT(p, pub_snap_install_failed, 1);
		in_drop(e, p);
		return rc;
	}
	if (!rd->has_install)
		return 0;
	PARLEY_ASSERT(!rd->install_keeps_tail); /* WAL entries are never damaged */
	uint8_t *hdr = NULL;
	uint32_t hl = 0, n = 0;
	struct snap_file *files = NULL;
	rc = install_prepare(e, p, &rd->install, &hdr, &hl, &files, &n);
	if (rc) {
		PLOG_E("engine", "received snapshot refused", "partition=%u "
		       "index=%" PRIu64 " err=%s", p->id, rd->install.index,
		       parley_errname(rc));
		CNT(p, pub_snap_install_failed, 1);
		in_drop(e, p);
		return rc;
	}
	/* committed (INSTALL stored): from here the snapshot replaces the
	 * partition, now or at the next open */
	rc = install_state(sh, p, files, n);
	free(hdr);
	free(files);
	if (!rc && (p->corrupt || p->flushed_index != rd->install.index)) {
		PLOG_E("engine", "installed snapshot does not match its index",
		       "partition=%u index=%" PRIu64 " flushed=%" PRIu64,
		       p->id, rd->install.index, p->flushed_index);
		rc = -PARLEY_ECORRUPT;
	}
	if (rc) {
		if (!p->corrupt)
			part_mark_corrupt(p, "hist (snapshot install)", 0,
					  "snapshot install failed");
		CNT(p, pub_snap_install_failed, 1);
		in_drop(e, p);
		return rc;
	}
	p->last_term = rd->install.term;
	p->snap_term = rd->install.term;
	in_drop(e, p);
	CNT(p, pub_snap_installed, 1);
	PLOG_I("engine", "snapshot installed", "partition=%u index=%" PRIu64
	       " term=%" PRIu64 " bytes=%" PRIu64, p->id, rd->install.index,
	       rd->install.term, rd->install.size);
	return 1;
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

int part_snap_open(struct pe_engine *e, struct part *p)
{
	p->cl = &e->cl;
	if (e->opt.read_only)
		return 0;
	char sd[600], path[700];
	snap_dir(e, p, sd, sizeof sd);
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
			rc = install_move(e, p, files, n);
		free(files);
		free(b);
		if (rc) {
			PLOG_E("engine", "cannot finish a snapshot install",
			       "partition=%u err=%s", p->id, parley_errname(rc));
			return rc;
		}
		PLOG_I("engine", "snapshot install finished at open",
		       "partition=%u index=%" PRIu64, p->id, index);
		in_drop(e, p);
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	/* a snapshot partly received before a restart: resumed */
	snprintf(path, sizeof path, "%s/partial.meta", sd);
	rc = read_small(e->io, path, &b, &len, SNAP_META_BYTES);
	if (rc == -ENOENT)
		return 0;
	struct raft_snapshot_meta m;
	if (!rc)
		rc = meta_decode(b, len, &m);
	free(b);
	int64_t have = -1;
	if (!rc) {
		struct pio_file *f = NULL;
		snprintf(path, sizeof path, "%s/partial", sd);
		if (e->io->ops->open(e->io, path, 0, &f) == 0) {
			have = e->io->ops->size(e->io, f);
			e->io->ops->close(e->io, f);
		}
	}
	if (rc || have < 0 || (uint64_t)have > m.size) {
		in_drop(e, p);
		return 0;
	}
	p->snap_in = calloc(1, sizeof *p->snap_in);
	if (!p->snap_in)
		return -PARLEY_ENOMEM;
	p->snap_in->meta = m;
	p->snap_in->bytes = (uint64_t)have;
	PLOG_I("engine", "resuming a partly received snapshot", "partition=%u "
	       "index=%" PRIu64 " have=%" PRId64 " size=%" PRIu64, p->id,
	       m.index, have, m.size);
	return 0;
}

void part_snap_free(struct part *p)
{
	if (!p->cl)
		return;
	struct pe_engine *e = eng_of(p);
	out_free(e, p->snap_out);
	p->snap_out = NULL;
	in_free(e, p);
}
