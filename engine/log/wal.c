/*
 * wal.c — one shard's write-ahead log: group-committed batches of
 * checksummed records in pre-zeroed, recycled segment files. See wal.h for
 * the on-disk format and invariants.
 *
 * Batch lifecycle:
 *
 *      wal_reserve/commit_rec          wal_submit            fdatasync done
 *   (empty) ---------------> OPEN ---------------> IN FLIGHT ------------> DURABLE
 *                              ^   (buffers swap)      |                     |
 *                              |                       | write/sync error    | wal_for_each_durable
 *                              +-----------------------+--> FAILED (sticky)  v
 *                                                                       (buffer reused)
 *
 * Segment lifecycle: spare (pre-zeroed, no header) -> active (header
 * written, synced, renamed to wal-<seq>.log) -> sealed (a SEAL record ends
 * it) -> released (renamed back to a spare; needs history segments, which
 * come with the history tier).
 *
 * Ownership: the WAL owns both batch buffers, the active segment's file and
 * the spare list. Records handed to callbacks point into WAL buffers and are
 * valid only during the callback.
 */
#include "wal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

#define WAL_MAGIC 0x52574C50u           /* "PLWR" */
#define WAL_SEG_MAGIC 0x4745534C41574C50ull /* "PLWALSEG" */
#define WAL_SEG_VERSION 1u
#define WAL_SEED_HDR 0x5057414C48445231ull
#define WAL_SEED_BODY 0x5057414C424F4459ull
#define WAL_SEED_SEG 0x5057414C53454731ull
#define WAL_REC_SEAL 0xFFFFu
#define WAL_SEAL_PART 0xFFFFFFFFu

struct wal_buf {
	uint8_t *p;
	uint32_t len;  /* bytes used */
	uint32_t nrec;
	uint32_t last; /* offset of the record being reserved */
};

/* Per segment: highest record index per partition (release rule). */
struct wal_pmax {
	uint32_t part;
	uint64_t max;
};
struct wal_segmap {
	uint64_t seq;
	struct wal_pmax *v;
	uint32_t n, cap;
};

struct wal {
	struct pio *io;
	char dir[512];
	uint64_t seg_bytes;
	bool read_only;

	struct pio_file *seg;  /* active segment */
	uint64_t seg_seq;
	char seg_name[64];
	uint64_t tail;         /* next batch's file offset (4096-aligned) */
	bool roll_pending;     /* the active segment is sealed */
	uint32_t batch_seq;    /* last used batch seq */

	struct wal_buf bufs[2];
	struct wal_buf *open;
	struct wal_buf *flight;
	int flight_cqes;       /* completions still expected */
	int failed;            /* sticky error */
	uint64_t flight_start_ns;

	struct wal_stats stats;

	/* release bookkeeping: segments holding records, oldest first */
	struct wal_segmap *maps;
	uint32_t nmaps, capmaps;
	bool maps_broken; /* out of memory once: never release again */

	/* spare preparation */
	pthread_t prep;
	bool prep_running;
	pthread_mutex_t spare_mu;
	pthread_cond_t spare_cv;
	uint32_t spares_ready;  /* spare files on disk */
	uint32_t spare_next;    /* name counter */
	bool stop;
};

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static void seg_path(const struct wal *w, uint64_t seq, char *out, size_t n)
{
	snprintf(out, n, "%s/wal-%016" PRIx64 ".log", w->dir, seq);
}

/* ---- release bookkeeping ---------------------------------------------------- */

static struct wal_segmap *segmap_get(struct wal *w, uint64_t seq)
{
	if (w->nmaps && w->maps[w->nmaps - 1].seq == seq)
		return &w->maps[w->nmaps - 1];
	for (uint32_t i = 0; i < w->nmaps; i++)
		if (w->maps[i].seq == seq)
			return &w->maps[i];
	if (w->nmaps == w->capmaps) {
		uint32_t nc = w->capmaps ? w->capmaps * 2 : 16;
		struct wal_segmap *m = realloc(w->maps, nc * sizeof *m);
		if (!m)
			return NULL;
		w->maps = m;
		w->capmaps = nc;
	}
	/* segments are noted in increasing seq order (recovery, then rolls) */
	struct wal_segmap *m = &w->maps[w->nmaps++];
	memset(m, 0, sizeof *m);
	m->seq = seq;
	return m;
}

static void wal_note(struct wal *w, uint64_t seq, uint32_t part,
		     uint64_t index)
{
	if (w->maps_broken)
		return;
	struct wal_segmap *m = segmap_get(w, seq);
	if (!m) {
		w->maps_broken = true;
		return;
	}
	for (uint32_t i = 0; i < m->n; i++)
		if (m->v[i].part == part) {
			if (index > m->v[i].max)
				m->v[i].max = index;
			return;
		}
	if (m->n == m->cap) {
		uint32_t nc = m->cap ? m->cap * 2 : 8;
		struct wal_pmax *v = realloc(m->v, nc * sizeof *v);
		if (!v) {
			w->maps_broken = true;
			return;
		}
		m->v = v;
		m->cap = nc;
	}
	m->v[m->n++] = (struct wal_pmax){part, index};
}

/* ---- record encode / check ----------------------------------------------- */

static void rec_stamp(uint8_t *h, uint64_t seg_seq, uint32_t batch,
		      uint32_t start)
{
	uint32_t len = le_get32(h + 4);
	le_put64(h + 8, seg_seq);
	le_put32(h + 16, batch);
	le_put32(h + 20, start);
	le_put64(h + 56, parley_xxh3(h + WAL_REC_HDR, len, WAL_SEED_BODY));
	le_put64(h + 48, parley_xxh3(h, 48, WAL_SEED_HDR));
}

/* Header check only (magic, segment, checksum, plausible length). */
static bool rec_header_ok(const uint8_t *h, uint64_t seg_seq)
{
	return le_get32(h) == WAL_MAGIC && le_get64(h + 8) == seg_seq &&
	       le_get64(h + 48) == parley_xxh3(h, 48, WAL_SEED_HDR) &&
	       le_get32(h + 4) <= WAL_MAX_BODY;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

void wal_encode_seg_header(uint8_t *hdr, uint64_t seq)
{
	memset(hdr, 0, WAL_BLOCK);
	le_put64(hdr, WAL_SEG_MAGIC);
	le_put32(hdr + 8, WAL_SEG_VERSION);
	le_put64(hdr + 16, seq);
	le_put64(hdr + 24, parley_xxh3(hdr, 24, WAL_SEED_SEG));
}

void wal_encode_record(uint8_t *h, uint64_t seg_seq, uint32_t batch,
		       uint32_t batch_start, uint32_t partition, uint16_t type,
		       uint64_t term, uint64_t index, const void *body,
		       uint32_t len)
{
	memset(h, 0, WAL_REC_HDR);
	le_put32(h, WAL_MAGIC);
	le_put32(h + 4, len);
	le_put32(h + 24, partition);
	le_put16(h + 28, type);
	le_put64(h + 32, term);
	le_put64(h + 40, index);
	if (len)
		memcpy(h + WAL_REC_HDR, body, len);
	rec_stamp(h, seg_seq, batch, batch_start);
}

/* ---- scanning (recovery, inspect, fuzzing) -------------------------------- */

static bool seg_header_ok(const uint8_t *d, uint64_t size, uint64_t *seq)
{
	if (size < WAL_BLOCK)
		return false;
	if (le_get64(d) != WAL_SEG_MAGIC || le_get32(d + 8) != WAL_SEG_VERSION)
		return false;
	if (le_get64(d + 24) != parley_xxh3(d, 24, WAL_SEED_SEG))
		return false;
	*seq = le_get64(d + 16);
	return true;
}

/* Is there a valid record, in a batch that started after `off`? */
static bool later_batch_exists(const uint8_t *d, uint64_t size, uint64_t off,
			       uint64_t seg_seq)
{
	for (uint64_t a = align_up(off + 1, WAL_BLOCK); a + WAL_REC_HDR <= size;
	     a += WAL_BLOCK) {
		const uint8_t *h = d + a;
		if (rec_header_ok(h, seg_seq) && le_get32(h + 20) > off)
			return true;
	}
	return false;
}

int wal_scan_buffer(const uint8_t *d, uint64_t size, const char *name,
		    bool is_last, const struct wal_recovery *rec,
		    uint64_t *tail_off, uint32_t *max_batch)
{
	uint64_t seg_seq;
	char why[128];
	*tail_off = WAL_BLOCK;
	*max_batch = 0;
	if (!seg_header_ok(d, size, &seg_seq)) {
		rec->corrupt(rec->arg, -1, name, 0, "bad segment header");
		return -PARLEY_ECORRUPT;
	}
	uint64_t off = WAL_BLOCK;
	uint32_t cur_batch = 0;
	uint64_t cur_start = 0;
	bool sealed = false;
	for (;;) {
		if (off + WAL_REC_HDR > size)
			break;
		const uint8_t *h = d + off;
		if (off % WAL_BLOCK) {
			/* padding at the end of a batch runs to the block
			 * boundary, which may be fewer than WAL_REC_HDR bytes
			 * away (the next batch starts right there). A record
			 * starts with its non-zero magic, so zeros up to the
			 * boundary (or for a header's length) are padding. */
			uint64_t next = align_up(off, WAL_BLOCK);
			if (all_zero(h, PARLEY_MIN(next - off, (uint64_t)WAL_REC_HDR))) {
				off = next;
				continue;
			}
		} else if (all_zero(h, WAL_REC_HDR)) {
			break; /* end of the written log */
		}
		const char *bad = NULL;
		bool hdr_ok = rec_header_ok(h, seg_seq);
		uint32_t len = hdr_ok ? le_get32(h + 4) : 0;
		if (!hdr_ok) {
			bad = "bad record header";
		} else if (off + WAL_REC_HDR + len > size) {
			bad = "record runs past end of segment";
			hdr_ok = false;
		} else {
			uint32_t b = le_get32(h + 16);
			uint64_t start = le_get32(h + 20);
			bool new_batch = off % WAL_BLOCK == 0 && start == off &&
					 (cur_start == 0 || b > cur_batch);
			bool cont = cur_start != 0 && b == cur_batch &&
				    start == cur_start && off != start;
			if (new_batch) {
				cur_batch = b;
				cur_start = start;
			} else if (!cont) {
				bad = "batch sequence out of order";
				hdr_ok = false;
			}
			if (!bad && le_get64(h + 56) !=
					    parley_xxh3(h + WAL_REC_HDR, len,
							WAL_SEED_BODY))
				bad = "bad record body checksum";
		}
		if (bad) {
			if (is_last && !later_batch_exists(d, size, off, seg_seq))
				break; /* torn tail: never acknowledged */
			snprintf(why, sizeof why, "%s", bad);
			if (!hdr_ok) {
				rec->corrupt(rec->arg, -1, name, off, why);
				return -PARLEY_ECORRUPT;
			}
			rec->corrupt(rec->arg, le_get32(h + 24), name, off, why);
			off = align_up(off + WAL_REC_HDR + len, 8);
			*tail_off = align_up(off, WAL_BLOCK);
			continue;
		}
		if (cur_batch > *max_batch)
			*max_batch = cur_batch;
		uint16_t type = le_get16(h + 28);
		if (type == WAL_REC_SEAL) {
			sealed = true;
			*tail_off = size; /* nothing may follow a seal */
			break;
		}
		struct wal_rec r = {
			.partition = le_get32(h + 24),
			.type = type,
			.term = le_get64(h + 32),
			.index = le_get64(h + 40),
			.body = h + WAL_REC_HDR,
			.len = len,
			.file = name,
			.off = off,
		};
		int rc = rec->record(rec->arg, &r);
		if (rc)
			return rc;
		off = align_up(off + WAL_REC_HDR + len, 8);
		*tail_off = align_up(off, WAL_BLOCK);
	}
	/* A new batch must outnumber every batch that left records in this
	 * segment, torn ones included, or a stale record could pass as part
	 * of it. Only block-aligned records can be reached after a batch's
	 * padding, so checking those is enough. */
	for (uint64_t a = WAL_BLOCK; a + WAL_REC_HDR <= size; a += WAL_BLOCK)
		if (rec_header_ok(d + a, seg_seq) && le_get32(d + a + 16) > *max_batch)
			*max_batch = le_get32(d + a + 16);
	if (!is_last && !sealed) {
		rec->corrupt(rec->arg, -1, name, off,
			     "segment ends without a seal record");
		return -PARLEY_ECORRUPT;
	}
	return 0;
}

/* ---- segment files --------------------------------------------------------- */

#define ZERO_SYNC_BYTES (1u << 20)

static int zero_fill(struct pio *io, struct pio_file *f, uint64_t size)
{
	static const uint8_t zeros[1 << 16];
	for (uint64_t off = 0; off < size; off += sizeof zeros) {
		size_t n = (size_t)PARLEY_MIN((uint64_t)sizeof zeros, size - off);
		int rc = io->ops->pwrite(io, f, zeros, n, off);
		if (rc)
			return rc;
		/* Sync every MiB: left dirty, the spare's newly allocated
		 * blocks join the file system's next journal commit, which the
		 * active segment's fdatasync then waits for (tens of ms for a
		 * 64 MiB spare on ext4, in the middle of the append path). */
		if ((off + n) % ZERO_SYNC_BYTES == 0 || off + n == size) {
			rc = io->ops->fdatasync(io, f);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* Creates one pre-zeroed spare file (any thread). */
static int spare_create(struct wal *w)
{
	char tmp[600], fin[600];
	pthread_mutex_lock(&w->spare_mu);
	uint32_t n = w->spare_next++;
	pthread_mutex_unlock(&w->spare_mu);
	snprintf(tmp, sizeof tmp, "%s/spare-%u.tmp", w->dir, n);
	snprintf(fin, sizeof fin, "%s/spare-%u.log", w->dir, n);
	struct pio_file *f;
	int rc = w->io->ops->open(w->io, tmp, PIO_CREATE, &f);
	if (rc)
		return rc;
	rc = zero_fill(w->io, f, w->seg_bytes);
	w->io->ops->close(w->io, f);
	if (!rc)
		rc = pio_file_publish(w->io, w->dir, tmp, fin);
	if (rc) {
		w->io->ops->unlink(w->io, tmp);
		return rc;
	}
	pthread_mutex_lock(&w->spare_mu);
	w->spares_ready++;
	pthread_mutex_unlock(&w->spare_mu);
	return 0;
}

struct spare_find {
	char name[64];
	bool found;
};

static int spare_find_cb(void *arg, const char *name)
{
	struct spare_find *s = arg;
	size_t n = strlen(name);
	if (!strncmp(name, "spare-", 6) && n > 10 &&
	    !strcmp(name + n - 4, ".log")) {
		snprintf(s->name, sizeof s->name, "%s", name);
		s->found = true;
		return 1;
	}
	return 0;
}

static void *prep_main(void *arg)
{
	struct wal *w = arg;
	pthread_mutex_lock(&w->spare_mu);
	while (!w->stop) {
		if (w->spares_ready >= 1) {
			pthread_cond_wait(&w->spare_cv, &w->spare_mu);
			continue;
		}
		pthread_mutex_unlock(&w->spare_mu);
		int rc = spare_create(w);
		if (rc)
			PLOG_W("wal", "spare creation failed", "dir=%s err=%s",
			       w->dir, parley_errname(rc));
		pthread_mutex_lock(&w->spare_mu);
		if (rc) /* do not spin on a full disk: the roll path retries */
			pthread_cond_wait(&w->spare_cv, &w->spare_mu);
	}
	pthread_mutex_unlock(&w->spare_mu);
	return NULL;
}

/* Turns a spare (or a new file) into the active segment `seq`. */
static int seg_activate(struct wal *w, uint64_t seq)
{
	struct spare_find sf = {.found = false};
	char from[600], to[600];
	pthread_mutex_lock(&w->spare_mu);
	int rc = w->io->ops->list(w->io, w->dir, spare_find_cb, &sf);
	if (rc < 0) {
		pthread_mutex_unlock(&w->spare_mu);
		return rc;
	}
	if (sf.found && w->spares_ready > 0)
		w->spares_ready--;
	pthread_mutex_unlock(&w->spare_mu);
	if (!sf.found) {
		rc = spare_create(w);
		if (rc)
			return rc;
		pthread_mutex_lock(&w->spare_mu);
		sf.found = false;
		rc = w->io->ops->list(w->io, w->dir, spare_find_cb, &sf);
		if (sf.found && w->spares_ready > 0)
			w->spares_ready--;
		pthread_mutex_unlock(&w->spare_mu);
		if (rc < 0)
			return rc;
		if (!sf.found)
			return -PARLEY_EIO;
	}
	pthread_cond_signal(&w->spare_cv); /* prepare the next one */
	snprintf(from, sizeof from, "%s/%s", w->dir, sf.name);
	seg_path(w, seq, to, sizeof to);

	struct pio_file *f;
	rc = w->io->ops->open(w->io, from, 0, &f);
	if (rc)
		return rc;
	uint8_t hdr[WAL_BLOCK];
	wal_encode_seg_header(hdr, seq);
	rc = w->io->ops->pwrite(w->io, f, hdr, sizeof hdr, 0);
	if (!rc)
		rc = w->io->ops->fdatasync(w->io, f);
	if (!rc)
		rc = w->io->ops->rename(w->io, from, to);
	if (!rc)
		rc = w->io->ops->fsync_dir(w->io, w->dir);
	if (rc) {
		w->io->ops->close(w->io, f);
		return rc;
	}
	if (w->seg)
		w->io->ops->close(w->io, w->seg);
	w->seg = f;
	w->seg_seq = seq;
	snprintf(w->seg_name, sizeof w->seg_name, "wal-%016" PRIx64 ".log", seq);
	w->tail = WAL_BLOCK;
	w->roll_pending = false;
	w->batch_seq = 0; /* batch seqs count within a segment (u32 never wraps) */
	w->stats.segments++;
	return 0;
}

/* ---- open / recovery ------------------------------------------------------- */

struct seg_list {
	uint64_t *seqs;
	size_t n, cap;
	uint32_t max_spare;
	uint32_t spares;
};

static int seg_list_cb(void *arg, const char *name)
{
	struct seg_list *l = arg;
	uint64_t seq;
	unsigned sp;
	char tail[8];
	if (sscanf(name, "wal-%16" SCNx64 ".%4s", &seq, tail) == 2 &&
	    !strcmp(tail, "log") && strlen(name) == 24) {
		if (l->n == l->cap) {
			size_t nc = l->cap ? l->cap * 2 : 16;
			uint64_t *p = realloc(l->seqs, nc * sizeof *p);
			if (!p)
				return -ENOMEM;
			l->seqs = p;
			l->cap = nc;
		}
		l->seqs[l->n++] = seq;
	} else if (sscanf(name, "spare-%u.%4s", &sp, tail) == 2) {
		if (sp + 1 > l->max_spare)
			l->max_spare = sp + 1;
		if (!strcmp(tail, "log"))
			l->spares++;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int read_whole(struct pio *io, const char *path, uint8_t **out,
		      uint64_t *size)
{
	struct pio_file *f;
	int rc = io->ops->open(io, path, 0, &f);
	if (rc)
		return rc;
	int64_t sz = io->ops->size(io, f);
	if (sz < 0) {
		io->ops->close(io, f);
		return (int)sz;
	}
	uint8_t *buf = malloc(sz ? (size_t)sz : 1);
	if (!buf) {
		io->ops->close(io, f);
		return -ENOMEM;
	}
	int64_t n = io->ops->pread(io, f, buf, (size_t)sz, 0);
	io->ops->close(io, f);
	if (n < 0 || n != sz) {
		free(buf);
		return n < 0 ? (int)n : -PARLEY_EIO;
	}
	*out = buf;
	*size = (uint64_t)sz;
	return 0;
}

struct note_ctx {
	struct wal *w;
	uint64_t seq;
	const struct wal_recovery *rec;
};

static int note_record(void *arg, const struct wal_rec *r)
{
	struct note_ctx *c = arg;
	wal_note(c->w, c->seq, r->partition, r->index);
	return c->rec->record(c->rec->arg, r);
}

static void note_corrupt(void *arg, int64_t partition, const char *file,
			 uint64_t off, const char *why)
{
	struct note_ctx *c = arg;
	/* a damaged segment's records past the damage are unknown: keep
	 * every segment (the evidence) rather than guess */
	c->w->maps_broken = true;
	c->rec->corrupt(c->rec->arg, partition, file, off, why);
}

int wal_open(struct pio *io, const char *dir, uint64_t seg_bytes,
	     bool read_only, const struct wal_recovery *rec, struct wal **out)
{
	if (!seg_bytes)
		seg_bytes = WAL_DEFAULT_SEGMENT;
	if (seg_bytes < WAL_MIN_SEGMENT || seg_bytes % WAL_BLOCK ||
	    seg_bytes > UINT32_MAX)
		return -PARLEY_EINVAL;
	struct wal *w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->io = io;
	w->seg_bytes = seg_bytes;
	w->read_only = read_only;
	snprintf(w->dir, sizeof w->dir, "%s", dir);
	pthread_mutex_init(&w->spare_mu, NULL);
	pthread_cond_init(&w->spare_cv, NULL);
	for (int i = 0; i < 2 && !read_only; i++) {
		w->bufs[i].p = aligned_alloc(WAL_BLOCK, WAL_MAX_BATCH + WAL_BLOCK);
		if (!w->bufs[i].p) {
			wal_close(w);
			return -ENOMEM;
		}
		memset(w->bufs[i].p, 0, WAL_MAX_BATCH + WAL_BLOCK);
	}
	w->open = &w->bufs[0];
	w->flight = NULL;

	int rc = 0;
	if (!read_only) {
		rc = io->ops->mkdir(io, dir);
		if (rc && rc != -EEXIST) {
			wal_close(w);
			return rc;
		}
	}
	struct seg_list l = {0};
	rc = io->ops->list(io, dir, seg_list_cb, &l);
	if (rc < 0) {
		free(l.seqs);
		wal_close(w);
		return rc;
	}
	w->spare_next = l.max_spare;
	w->spares_ready = l.spares;
	if (l.n)
		qsort(l.seqs, l.n, sizeof *l.seqs, cmp_u64);

	uint64_t tail = WAL_BLOCK;
	uint32_t max_batch = 0;
	bool last_sealed = false;
	for (size_t i = 0; i < l.n; i++) {
		char path[600], name[64];
		seg_path(w, l.seqs[i], path, sizeof path);
		snprintf(name, sizeof name, "wal-%016" PRIx64 ".log", l.seqs[i]);
		uint8_t *data = NULL;
		uint64_t size = 0;
		rc = read_whole(io, path, &data, &size);
		if (rc) {
			free(l.seqs);
			wal_close(w);
			return rc;
		}
		bool is_last = i + 1 == l.n;
		uint32_t mb = 0;
		struct note_ctx nc = {.w = w, .seq = l.seqs[i], .rec = rec};
		struct wal_recovery nrec = {.record = note_record,
					    .corrupt = note_corrupt, .arg = &nc};
		/* a segment with no record still counts: it may be released */
		if (!segmap_get(w, l.seqs[i]))
			w->maps_broken = true;
		rc = wal_scan_buffer(data, size, name, is_last, &nrec, &tail, &mb);
		free(data);
		if (rc && rc != -PARLEY_ECORRUPT) {
			free(l.seqs);
			wal_close(w);
			return rc;
		}
		if (is_last) {
			max_batch = mb;
			last_sealed = tail >= size;
			if (rc == -PARLEY_ECORRUPT) /* never write over it */
				last_sealed = true;
		}
	}
	uint64_t last_seq = l.n ? l.seqs[l.n - 1] : 0;
	free(l.seqs);

	if (read_only) {
		*out = w;
		return 0;
	}
	if (l.n == 0 || last_sealed) {
		rc = seg_activate(w, last_seq + 1);
	} else {
		char path[600];
		seg_path(w, last_seq, path, sizeof path);
		rc = io->ops->open(io, path, 0, &w->seg);
		if (!rc) /* make what we replayed durable before serving it */
			rc = io->ops->fdatasync(io, w->seg);
		w->seg_seq = last_seq;
		snprintf(w->seg_name, sizeof w->seg_name,
			 "wal-%016" PRIx64 ".log", last_seq);
		w->tail = tail;
		w->batch_seq = max_batch;
		/* An unsealed last segment always has room for one more batch:
		 * the batch that would have sealed it was torn and starts again
		 * here, and wal_submit seals it then. Rolling without a seal
		 * would make this segment read as corrupt on the next start. */
		w->roll_pending = false;
	}
	if (rc) {
		wal_close(w);
		return rc;
	}
	if (pthread_create(&w->prep, NULL, prep_main, w) == 0)
		w->prep_running = true;
	*out = w;
	return 0;
}

void wal_close(struct wal *w)
{
	if (!w)
		return;
	if (w->prep_running) {
		pthread_mutex_lock(&w->spare_mu);
		w->stop = true;
		pthread_cond_broadcast(&w->spare_cv);
		pthread_mutex_unlock(&w->spare_mu);
		pthread_join(w->prep, NULL);
	}
	if (w->seg)
		w->io->ops->close(w->io, w->seg);
	free(w->bufs[0].p);
	free(w->bufs[1].p);
	for (uint32_t i = 0; i < w->nmaps; i++)
		free(w->maps[i].v);
	free(w->maps);
	pthread_mutex_destroy(&w->spare_mu);
	pthread_cond_destroy(&w->spare_cv);
	free(w);
}

/* ---- batches ----------------------------------------------------------------- */

uint8_t *wal_reserve(struct wal *w, uint32_t len)
{
	PARLEY_ASSERT(!w->read_only && len <= WAL_MAX_BODY);
	struct wal_buf *b = w->open;
	/* keep room for a seal record at the end of every batch */
	uint64_t need = align_up((uint64_t)b->len + WAL_REC_HDR + len, 8) +
			WAL_REC_HDR;
	if (need > WAL_MAX_BATCH)
		return NULL;
	b->last = b->len;
	uint8_t *h = b->p + b->len;
	memset(h, 0, WAL_REC_HDR);
	le_put32(h + 4, len);
	b->len = (uint32_t)align_up((uint64_t)b->len + WAL_REC_HDR + len, 8);
	return h + WAL_REC_HDR;
}

void wal_commit_rec(struct wal *w, uint32_t partition, uint16_t type,
		    uint64_t term, uint64_t index)
{
	struct wal_buf *b = w->open;
	uint8_t *h = b->p + b->last;
	uint32_t len = le_get32(h + 4);
	le_put32(h, WAL_MAGIC);
	le_put32(h + 24, partition);
	le_put16(h + 28, type);
	le_put64(h + 32, term);
	le_put64(h + 40, index);
	/* zero the alignment gap so padding reads as zeros */
	uint32_t end = b->last + WAL_REC_HDR + len;
	memset(b->p + end, 0, b->len - end);
	b->nrec++;
}

uint32_t wal_open_room(const struct wal *w)
{
	/* wal_reserve keeps room for the batch's seal record */
	uint64_t used = (uint64_t)w->open->len + WAL_REC_HDR;
	return used >= WAL_MAX_BATCH ? 0 : (uint32_t)(WAL_MAX_BATCH - used);
}

bool wal_has_open(const struct wal *w)
{
	return w->open->nrec > 0;
}

bool wal_in_flight(const struct wal *w)
{
	return w->flight != NULL;
}

int wal_submit(struct wal *w, struct pio_ring *ring, uint64_t ud)
{
	PARLEY_ASSERT(!w->flight && w->open->nrec > 0);
	if (w->failed)
		return w->failed;
	int rc;
	if (w->roll_pending) {
		rc = seg_activate(w, w->seg_seq + 1);
		if (rc) {
			w->failed = rc;
			return rc;
		}
	}
	struct wal_buf *b = w->open;
	/* Seal the segment in this batch when the next one might not fit. */
	uint64_t after = w->tail + align_up(b->len, WAL_BLOCK);
	if (after + WAL_MAX_BATCH + 2 * WAL_BLOCK > w->seg_bytes) {
		uint8_t *h = b->p + b->len;
		memset(h, 0, WAL_REC_HDR);
		le_put32(h, WAL_MAGIC);
		le_put32(h + 24, WAL_SEAL_PART);
		le_put16(h + 28, WAL_REC_SEAL);
		b->len += WAL_REC_HDR;
		w->roll_pending = true;
	}
	uint32_t batch = ++w->batch_seq;
	uint32_t start = (uint32_t)w->tail;
	for (uint32_t off = 0; off < b->len;) {
		uint8_t *h = b->p + off;
		if (le_get16(h + 28) != WAL_REC_SEAL)
			wal_note(w, w->seg_seq, le_get32(h + 24), le_get64(h + 40));
		rec_stamp(h, w->seg_seq, batch, start);
		off = (uint32_t)align_up(off + WAL_REC_HDR + le_get32(h + 4), 8);
	}
	uint32_t wlen = (uint32_t)align_up(b->len, WAL_BLOCK);
	memset(b->p + b->len, 0, wlen - b->len);
	rc = w->io->ops->ring_write(ring, w->seg, b->p, wlen, w->tail, ud, true);
	if (!rc)
		rc = w->io->ops->ring_fdatasync(ring, w->seg, ud);
	if (rc) {
		w->failed = rc;
		return rc;
	}
	w->flight_cqes = 2;
	w->flight_start_ns = parley_mono_ns();
	w->tail += wlen;
	w->stats.batches++;
	w->stats.bytes += wlen;
	w->flight = b;
	w->open = b == &w->bufs[0] ? &w->bufs[1] : &w->bufs[0];
	w->open->len = 0;
	w->open->nrec = 0;
	return 0;
}

int wal_on_cqe(struct wal *w, int res)
{
	PARLEY_ASSERT(w->flight && w->flight_cqes > 0);
	if (w->flight_cqes == 2) { /* the write */
		uint32_t want = (uint32_t)align_up(w->flight->len, WAL_BLOCK);
		if (res >= 0 && (uint32_t)res != want)
			res = -PARLEY_EIO; /* short write: treat as failure */
	}
	if (res < 0 && !w->failed)
		w->failed = res;
	if (--w->flight_cqes > 0)
		return 0;
	if (w->failed)
		return w->failed;
	w->stats.sync_ns += parley_mono_ns() - w->flight_start_ns;
	return 1;
}

int wal_for_each_durable(struct wal *w,
			 int (*fn)(void *arg, const struct wal_rec *r), void *arg)
{
	struct wal_buf *b = w->flight;
	PARLEY_ASSERT(b && w->flight_cqes == 0 && !w->failed);
	int rc = 0;
	for (uint32_t off = 0; off < b->len && !rc;) {
		uint8_t *h = b->p + off;
		uint32_t len = le_get32(h + 4);
		uint16_t type = le_get16(h + 28);
		if (type != WAL_REC_SEAL) {
			struct wal_rec r = {
				.partition = le_get32(h + 24),
				.type = type,
				.term = le_get64(h + 32),
				.index = le_get64(h + 40),
				.body = h + WAL_REC_HDR,
				.len = len,
				.file = w->seg_name,
				.off = 0,
			};
			rc = fn(arg, &r);
		}
		off = (uint32_t)align_up(off + WAL_REC_HDR + len, 8);
	}
	w->flight = NULL;
	return rc;
}

/* Releases one sealed segment: back to a spare (recycled, so the next
 * roll overwrites written blocks) or unlinked when spares are plentiful. */
static int seg_release(struct wal *w, uint64_t seq)
{
	char from[600], to[600];
	seg_path(w, seq, from, sizeof from);
	pthread_mutex_lock(&w->spare_mu);
	int rc;
	bool recycle = w->spares_ready < 2;
	if (recycle) {
		uint32_t n = w->spare_next++;
		snprintf(to, sizeof to, "%s/spare-%u.log", w->dir, n);
		rc = w->io->ops->rename(w->io, from, to);
	} else {
		rc = w->io->ops->unlink(w->io, from);
	}
	if (!rc)
		rc = w->io->ops->fsync_dir(w->io, w->dir);
	if (!rc && recycle)
		w->spares_ready++;
	pthread_mutex_unlock(&w->spare_mu);
	return rc;
}

int wal_release(struct wal *w, uint64_t (*flushed)(void *arg, uint32_t part),
		void *arg, uint32_t *pin, uint32_t pincap, uint32_t *npin,
		uint32_t *sealed_left)
{
	*npin = 0;
	*sealed_left = 0;
	if (w->read_only || w->maps_broken || w->failed)
		return 0;
	int released = 0;
	uint32_t keep = 0;
	for (uint32_t i = 0; i < w->nmaps; i++) {
		struct wal_segmap *m = &w->maps[i];
		bool active = m->seq == w->seg_seq && w->seg;
		bool free_ok = !active;
		for (uint32_t k = 0; k < m->n && free_ok; k++)
			if (m->v[k].max > flushed(arg, m->v[k].part))
				free_ok = false;
		if (free_ok) {
			int rc = seg_release(w, m->seq);
			if (rc) {
				PLOG_W("wal", "segment release failed (retried later)",
				       "dir=%s seq=%016" PRIx64 " err=%s", w->dir,
				       m->seq, parley_errname(rc));
				w->maps[keep++] = *m;
				continue;
			}
			free(m->v);
			released++;
			w->stats.released++;
			continue;
		}
		if (!active && *sealed_left == 0) {
			/* the oldest kept: its pinning partitions, its age */
			for (uint32_t k = 0; k < m->n; k++)
				if (m->v[k].max > flushed(arg, m->v[k].part) &&
				    *npin < pincap)
					pin[(*npin)++] = m->v[k].part;
			*sealed_left = (uint32_t)PARLEY_MIN(w->seg_seq - m->seq,
							    (uint64_t)UINT32_MAX);
		}
		w->maps[keep++] = *m;
	}
	w->nmaps = keep;
	return released;
}

uint32_t wal_segment_count(const struct wal *w)
{
	return w->nmaps;
}

void wal_get_stats(const struct wal *w, struct wal_stats *out)
{
	*out = w->stats;
}
