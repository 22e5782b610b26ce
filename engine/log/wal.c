/*
 * wal.c — one shard's write-ahead log: group-committed batches of
 * checksummed records in pre-zeroed, recycled segment files. See wal.h for
 * the on-disk format and invariants.
 *
 * Batch lifecycle:
 *
 *      wal_reserve/commit_rec          wal_submit          its ops done, and
 *                                                        every earlier batch's
 *   (empty) ---------------> OPEN ---------------> IN FLIGHT ------------> DURABLE
 *                              ^ (a free buffer        |  (<= WAL_FLIGHT_MAX)   |
 *                              |  becomes the open one)| write/sync error    | wal_for_each_durable
 *                              +-----------------------+--> FAILED (sticky)  v
 *                                                                       (buffer free)
 *
 * Pipelining: while batch N syncs, batch N+1 may be submitted (its records
 * name N as their predecessor in flight, wal.h), so an append that arrives
 * during N's sync waits for one sync, not for N's and then its own. The
 * completions of N and N+1 may arrive in any order; wal_on_cqe counts a
 * batch durable only in submission order, so nothing of N+1 is noted,
 * marked or acknowledged before N is durable, and recovery (torn_tail)
 * drops N+1 with a torn N.
 *
 * Segment lifecycle: spare (pre-zeroed, no header) -> active (header
 * written, synced, renamed to wal-<seq>.log) -> sealed (a SEAL record ends
 * it) -> released (renamed back to a spare once history holds its records).
 *
 * Loss detection (wal.h has the rules and the residual window): the
 * per-segment maps (partition -> highest index, durable end) count a batch
 * only once its fdatasync completed; wal.hwm is written from them at open,
 * roll, release and clean shutdown, and about once a second by the prep
 * thread; recovery compares the scan with it (hwm_check). After damage the mark is frozen: the evidence survives
 * restarts until an operator acts.
 *
 * Ownership: the WAL owns its batch buffers, the active segment's file and
 * the spare list. Records handed to callbacks point into WAL buffers and are
 * valid only during the callback.
 */
#include "wal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parley_common.h"

#define WAL_MAGIC 0x52574C50u           /* "PLWR" */
#define WAL_SEG_MAGIC 0x4745534C41574C50ull /* "PLWALSEG" */
#define WAL_SEG_VERSION 2u               /* 1: no created size */
#define WAL_HWM_MAGIC 0x4D57484C41574C50ull /* "PLWALHWM" */
#define WAL_HWM_VERSION 1u
#define WAL_HWM_CLEAN 1u
#define WAL_HWM_HDR 48u
#define WAL_HWM_SEG 24u
#define WAL_HWM_ENT 16u
#define WAL_SEED_HWM 0x5057414C48574D31ull
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

/* A submitted batch (wal_submit) until wal_for_each_durable takes it. */
struct wal_flight {
	struct wal_buf *b;
	int cqes;          /* completions still expected */
	int ops;           /* ring ops of the batch (1 or 2) */
	bool done;         /* every op completed without error */
	uint64_t start_ns;
	uint64_t seq;      /* its segment */
	uint64_t start;    /* its file offset */
	uint64_t end;      /* its end offset (block-aligned) */
};

/* Per segment: highest record index per partition (release rule). */
struct wal_pmax {
	uint32_t part;
	uint64_t max;
};
struct wal_segmap {
	uint64_t seq;
	uint64_t end;  /* durable end of the log in it (recovered or synced) */
	struct wal_pmax *v;
	uint32_t n, cap;
	bool drop;     /* being released (wal_release) */
	bool hold;     /* holds a lost range (wal_recovery.lost): kept while
			  w->hold_damaged */
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
	bool seal_asap;        /* seal the active segment with the next batch
				  (a batch of the seal alone when nothing is
				  open): it holds a lost range that may go */
	uint32_t batch_seq;    /* last used batch seq */

	/* one open batch and up to WAL_FLIGHT_MAX in flight: one more
	 * buffer than flights, so a submit always finds a free one */
	struct wal_buf bufs[WAL_FLIGHT_MAX + 1];
	struct wal_buf *open;
	/* batches submitted and not yet taken by wal_for_each_durable, oldest
	 * first: fl[(fl_head + k) % WAL_FLIGHT_MAX], k < fl_n. A slot's ring
	 * ops carry user_data ud_base + its index in fl[]. */
	struct wal_flight fl[WAL_FLIGHT_MAX];
	uint32_t fl_head, fl_n;
	uint32_t fl_noted;     /* oldest batches counted durable (in order),
				  not yet taken by wal_for_each_durable */
	uint64_t ud_base;
	enum wal_commit commit; /* how a batch reaches the disk */
	int seg_oflags;        /* open flags of segments (PIO_DIRECT or 0) */
	int failed;            /* sticky error */

	struct wal_stats stats;

	/* release bookkeeping: segments holding records, oldest first */
	struct wal_segmap *maps;
	uint32_t nmaps, capmaps;
	bool maps_broken; /* damage or out of memory: never release again */
	bool maps_oom;    /* the maps are incomplete: no mark from them */
	bool mark_frozen; /* recovery found damage: keep the old mark */
	bool hold_damaged; /* segments with a lost range are kept (hold) */
	/* maps_mu: the shard thread changes maps, nmaps, seg_seq, mark_gen
	 * and mark_dirty under it; the prep thread reads them under it to make
	 * the periodic mark. (The shard thread reads without it.) */
	pthread_mutex_t maps_mu;
	uint64_t mark_gen;     /* generation of the last mark made */
	bool mark_dirty;       /* durable batches since the last mark */
	pthread_mutex_t mark_mu; /* serialises writing wal.hwm */
	uint64_t mark_written; /* under mark_mu: generation on disk */

	/* spare preparation */
	pthread_t prep;
	bool prep_running;
	pthread_mutex_t spare_mu;
	pthread_cond_t spare_cv;
	uint32_t spares_ready;  /* spare files on disk */
	uint32_t spare_next;    /* name counter */
	bool stop;
	/* the prep clock's timers (ns; wal_now_ns) */
	uint64_t next_mark_ns;  /* the next periodic mark (0: not set yet) */
	uint64_t prep_retry_ns; /* a failed next segment: retry from then */
	uint64_t spare_retry_ns; /* a failed spare: retry from then */
	struct wal_exec ex;     /* stepped: no prep thread (wal_prep_step) */

	/* Background work of the prep thread, so that no disk wait is left on
	 * the shard thread (under spare_mu unless said):
	 *  - the next segment, prepared ahead (header written and synced,
	 *    renamed to wal-<next_want>.log, directory synced): a roll only
	 *    swaps it in;
	 *  - segment release (mark, then rename/unlink + directory sync),
	 *    queued by wal_release and finished by wal_poll. */
	uint64_t next_want;          /* seq to prepare (0: none) */
	struct pio_file *next_f;     /* prepared for next_want (NULL: not yet) */
	int next_err;                /* last preparation failure (0: none) */
	atomic_bool next_ready;      /* next_f is set (read without the lock) */
	atomic_bool bg_done;         /* a release finished: wal_poll */
	bool roll_wait;              /* the shard waits for next_f: wake it */
	struct pio_ring *ring;       /* woken when background work completes */
	enum { REL_IDLE = 0, REL_QUEUED, REL_RUNNING, REL_DONE } rel_st;
	uint64_t *rel_seqs;          /* REL_RUNNING/DONE: segments released */
	bool *rel_ok;
	uint32_t rel_n;
	bool rel_marked;             /* the release's mark was stored */
};

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* PARLEY_WAL_COMMIT (wal.h): read once per wal_open */
static enum wal_commit wal_commit_mode(void)
{
	const char *v = getenv("PARLEY_WAL_COMMIT");
	if (!v || !*v)
		return WAL_COMMIT_DEFAULT;
	if (!strcmp(v, "link"))
		return WAL_COMMIT_LINK;
	if (!strcmp(v, "dsync"))
		return WAL_COMMIT_DSYNC;
	if (!strcmp(v, "direct"))
		return WAL_COMMIT_DIRECT;
	if (!strcmp(v, "direct-link"))
		return WAL_COMMIT_DIRECT_LINK;
	PLOG_W("wal", "unknown PARLEY_WAL_COMMIT, using the default", "value=%s",
	       v);
	return WAL_COMMIT_DEFAULT;
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
		if (!m) {
			w->maps_oom = w->maps_broken = true;
			return NULL;
		}
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
	if (w->maps_oom)
		return;
	struct wal_segmap *m = segmap_get(w, seq);
	if (!m)
		return;
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
			w->maps_oom = w->maps_broken = true;
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

/* The record at h as callbacks see it (header already checked). */
static struct wal_rec rec_view(const uint8_t *h, const char *file,
			       uint64_t off)
{
	return (struct wal_rec){
		.partition = le_get32(h + 24),
		.type = le_get16(h + 28),
		.term = le_get64(h + 32),
		.index = le_get64(h + 40),
		.body = h + WAL_REC_HDR,
		.len = le_get32(h + 4),
		.file = file,
		.off = off,
	};
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

void wal_encode_seg_header(uint8_t *hdr, uint64_t seq, uint64_t file_bytes)
{
	memset(hdr, 0, WAL_BLOCK);
	le_put64(hdr, WAL_SEG_MAGIC);
	le_put64(hdr + 16, seq);
	if (!file_bytes) { /* version 1: what older directories hold */
		le_put32(hdr + 8, 1);
		le_put64(hdr + 24, parley_xxh3(hdr, 24, WAL_SEED_SEG));
		return;
	}
	le_put32(hdr + 8, WAL_SEG_VERSION);
	le_put64(hdr + 24, file_bytes);
	le_put64(hdr + 32, parley_xxh3(hdr, 32, WAL_SEED_SEG));
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

/* *created: the file size recorded at creation (version 2), 0 if unknown. */
static bool seg_header_ok(const uint8_t *d, uint64_t size, uint64_t *seq,
			  uint64_t *created)
{
	if (size < WAL_BLOCK || le_get64(d) != WAL_SEG_MAGIC)
		return false;
	uint32_t v = le_get32(d + 8);
	if (v == 1) {
		if (le_get64(d + 24) != parley_xxh3(d, 24, WAL_SEED_SEG))
			return false;
		*created = 0;
	} else if (v == 2) {
		if (le_get64(d + 32) != parley_xxh3(d, 32, WAL_SEED_SEG))
			return false;
		*created = le_get64(d + 24);
	} else {
		return false;
	}
	*seq = le_get64(d + 16);
	return true;
}

/*
 * Invariant 3: a bad record at `off` in the last segment is a torn tail
 * iff every valid record (checked at block boundaries, where a batch can
 * start) of a batch that started after it belongs to one batch B that was
 * submitted while the batch holding `off` was still in flight (B's records
 * name that batch's start: `cur_start`, the batch being read, or `off`
 * itself when the bad record began a batch). A crash with both in flight
 * can leave exactly that: the earlier batch torn, the later one complete.
 * Neither was acknowledged (acks wait for every earlier batch), so the log
 * ends before both. Any other later batch was written after the bad
 * record's batch was durable: corruption.
 */
static bool torn_tail(const uint8_t *d, uint64_t size, uint64_t off,
		      uint64_t seg_seq, uint32_t cur_batch, uint64_t cur_start)
{
	uint64_t b_start = 0;
	for (uint64_t a = align_up(off + 1, WAL_BLOCK); a + WAL_REC_HDR <= size;
	     a += WAL_BLOCK) {
		const uint8_t *h = d + a;
		if (!rec_header_ok(h, seg_seq) || le_get32(h + 20) <= off)
			continue;
		uint64_t start = le_get32(h + 20);
		uint64_t back = (uint64_t)le_get16(h + 30) * WAL_BLOCK;
		if (!back || back > start || le_get32(h + 16) <= cur_batch)
			return false;
		uint64_t pred = start - back;
		if (pred != off && !(cur_start && pred == cur_start))
			return false;
		if (b_start && start != b_start)
			return false;
		b_start = start;
	}
	return true;
}

/*
 * The last segment, past where its log ends (`from`, block-aligned): the
 * end of the furthest record of this segment found at a block boundary
 * (a torn batch's later blocks, or a batch written behind one that is
 * torn or never reached the disk), or 0. wal_open zeroes up to there
 * before the log goes on, so no leftover of them outlives the batches
 * written over their start.
 */
static uint64_t junk_end(const uint8_t *d, uint64_t size, uint64_t from,
			 uint64_t seg_seq)
{
	uint64_t end = 0;
	for (uint64_t a = from; a + WAL_REC_HDR <= size; a += WAL_BLOCK)
		if (rec_header_ok(d + a, seg_seq))
			end = PARLEY_MIN(size, align_up(a + WAL_REC_HDR +
							le_get32(d + a + 4),
							WAL_BLOCK));
	return end;
}

/*
 * Resync after a record header that fails its check (wal_recovery.lost):
 * is there, at `c`, a record the log can go on from? Its header must hold
 * (magic, this segment's seq, checksum), it must fit in the file, and it
 * must continue the log: a later record of the batch being read, a later
 * record of the damaged record's own batch (when that one started a batch
 * at a block boundary), or the first record of a later batch at a block
 * boundary. Stale records (another segment's seq, an older batch) never
 * pass. *b and *start get its batch and batch start.
 */
static bool resync_ok(const uint8_t *d, uint64_t size, uint64_t c,
		      uint64_t off, uint64_t seg_seq, uint32_t cur_batch,
		      uint64_t cur_start, uint32_t *b, uint64_t *start)
{
	if (c <= off || c + WAL_REC_HDR > size)
		return false;
	const uint8_t *h = d + c;
	if (!rec_header_ok(h, seg_seq) ||
	    c + WAL_REC_HDR + le_get32(h + 4) > size)
		return false;
	*b = le_get32(h + 16);
	*start = le_get32(h + 20);
	if (cur_start && *b == cur_batch && *start == cur_start && c != *start)
		return true; /* the batch being read goes on */
	if (off % WAL_BLOCK == 0 && *start == off && *b > cur_batch)
		return true; /* the damaged record started this batch */
	return c % WAL_BLOCK == 0 && *start == c && *b > cur_batch;
}

/* Where the log goes on after a damaged record header at `off`, or 0. The
 * damaged header's own length is tried first (right after that record, or
 * after its batch's padding), then every 8-byte step to the end of the
 * segment: bounded by the segment's size, one magic compare per step and a
 * checksum only where the magic matches. */
static uint64_t resync_find(const uint8_t *d, uint64_t size, uint64_t off,
			    uint64_t seg_seq, uint32_t cur_batch,
			    uint64_t cur_start, uint32_t *b, uint64_t *start)
{
	uint32_t len = le_get32(d + off + 4);
	if (len <= WAL_MAX_BODY) {
		uint64_t c = align_up(off + WAL_REC_HDR + len, 8);
		if (resync_ok(d, size, c, off, seg_seq, cur_batch, cur_start, b,
			      start))
			return c;
		uint64_t n = align_up(c, WAL_BLOCK);
		if (c < size && n < size && all_zero(d + c, n - c) &&
		    resync_ok(d, size, n, off, seg_seq, cur_batch, cur_start, b,
			      start))
			return n;
	}
	for (uint64_t c = off + 8; c + WAL_REC_HDR <= size; c += 8)
		if (le_get32(d + c) == WAL_MAGIC &&
		    resync_ok(d, size, c, off, seg_seq, cur_batch, cur_start, b,
			      start))
			return c;
	return 0;
}

/* What a scan found beyond the records it reported. */
struct scan_out {
	uint64_t tail;      /* where the next batch may start */
	uint64_t end;       /* block-aligned end of the last valid record */
	uint64_t created;   /* size at creation (v2 header) or 0 */
	uint32_t max_batch;
	bool eof;           /* the log ran into the end of the file */
	bool sealed;        /* a seal record ends it */
	bool hdr_damaged;   /* its header failed: records read by name_seq and
			       handed over as damaged (repair_from_peers) */
	bool lost_to_end;   /* a damaged record header with no record after
			       it: the rest of the file (its seal) is lost */
	uint32_t lost;      /* damaged record headers skipped (wal_recovery.lost) */
	uint64_t torn_at;   /* a torn tail's first byte, or 0 */
	uint64_t junk_end;  /* last segment, not sealed: records past the
			       log's end reach to here (junk_end()), or 0 */
	uint64_t zero_at;   /* with torn_at: the first block boundary after it
			       holding an all-zero header (where a scan stops
			       as at the log's end), or the file's size */
};

/* why + ", file cut to N bytes (created M): bytes N..M missing" when the
 * file is shorter than created: every error in a cut file says so. */
static void why_cut(char *why, size_t n, const char *what, uint64_t size,
		    uint64_t created)
{
	if (created > size)
		snprintf(why, n, "%s; file cut to %" PRIu64 " bytes (created %"
			 PRIu64 "): bytes %" PRIu64 "..%" PRIu64 " missing",
			 what, size, created, size, created);
	else
		snprintf(why, n, "%s", what);
}

/* name_seq: the segment seq its file name gives (0: unknown); path: the
 * file's path, for the error a damaged header gives. */
static int scan_segment(const uint8_t *d, uint64_t size, const char *name,
			bool is_last, const struct wal_recovery *rec,
			struct scan_out *so, uint64_t name_seq, const char *path)
{
	uint64_t seg_seq;
	char why[200];
	uint64_t *tail_off = &so->tail;
	uint32_t *max_batch = &so->max_batch;
	memset(so, 0, sizeof *so);
	*tail_off = WAL_BLOCK;
	so->end = WAL_BLOCK;
	if (!seg_header_ok(d, size, &seg_seq, &so->created)) {
		/* Replicated: the records still name themselves (partition,
		 * term, index under their own checksums, which cover the
		 * segment seq its name gives), but nothing proves the file
		 * is that segment: every record is handed over as damaged, to
		 * be repaired from the leader (wal.h). Else the shard's
		 * partitions are corrupt, as before. */
		if (!rec->repair_from_peers || !rec->damaged || !name_seq ||
		    size < WAL_BLOCK) {
			snprintf(why, sizeof why, "bad segment header (%s, offset "
				 "0)", path ? path : name);
			rec->corrupt(rec->arg, -1, name, 0, why);
			return -PARLEY_ECORRUPT;
		}
		PLOG_E("wal", "bad segment header: its records are taken as "
		       "damaged, to be repaired from the leader", "path=%s "
		       "offset=0 seq=%" PRIu64, path ? path : name, name_seq);
		seg_seq = name_seq;
		so->created = 0;
		so->hdr_damaged = true;
	}
	uint64_t off = WAL_BLOCK;
	uint32_t cur_batch = 0;
	uint64_t cur_start = 0;
	bool sealed = false;
	for (;;) {
		if (off + WAL_REC_HDR > size) {
			so->eof = true;
			break;
		}
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
		bool hdr_bad = !hdr_ok; /* its own check, not the batch's */
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
		if (!bad && so->hdr_damaged && le_get16(h + 28) != WAL_REC_SEAL) {
			/* in a segment whose header failed: not trusted */
			struct wal_rec r = rec_view(h, name, off);
			r.body = NULL;
			int drc = rec->damaged(rec->arg, &r);
			if (drc < 0)
				return drc;
			if (drc)
				rec->corrupt(rec->arg, le_get32(h + 24), name, off,
					     "record of a segment with a bad "
					     "header");
			if (cur_batch > *max_batch)
				*max_batch = cur_batch;
			off = align_up(off + WAL_REC_HDR + len, 8);
			*tail_off = align_up(off, WAL_BLOCK);
			so->end = *tail_off;
			continue;
		}
		if (bad) {
			if (is_last && torn_tail(d, size, off, seg_seq,
						 cur_batch, cur_start)) {
				/* torn tail: never acknowledged (unless the
				 * file was cut here: the caller judges) */
				so->eof = off + WAL_REC_HDR + len > size;
				so->torn_at = off;
				uint64_t a = align_up(off + 1, WAL_BLOCK);
				while (a + WAL_REC_HDR <= size &&
				       !all_zero(d + a, WAL_REC_HDR))
					a += WAL_BLOCK;
				so->zero_at = PARLEY_MIN(a, size);
				break;
			}
			if (hdr_bad && rec->lost && rec->repair_from_peers) {
				/* its partition, term, index and length are
				 * unknown: find where the log goes on and hand
				 * the byte range over (repaired from peers) */
				uint32_t nb = 0;
				uint64_t ns = 0;
				uint64_t c = resync_find(d, size, off, seg_seq,
							 cur_batch, cur_start,
							 &nb, &ns);
				uint64_t to = c ? c : size;
				if (!c && is_last)
					goto corrupt_hdr; /* the log's end unknown */
				int lrc = rec->lost(rec->arg, name, off, to);
				if (lrc < 0)
					return lrc;
				if (lrc == 0) {
					PLOG_E("wal", "bad record header: the records "
					       "in its byte range are lost here, "
					       "to be repaired from the leader",
					       "path=%s offset=%" PRIu64 " end=%"
					       PRIu64, path ? path : name, off, to);
					so->lost++;
					if (!c) { /* to the end: its seal too */
						so->lost_to_end = true;
						break;
					}
					if (ns == off && nb > cur_batch) {
						/* the damaged record began
						 * this batch */
						cur_batch = nb;
						cur_start = ns;
					}
					off = c;
					continue;
				}
			}
			if (hdr_ok && rec->damaged &&
			    le_get16(h + 28) != WAL_REC_SEAL) {
				/* header intact, body damaged: the caller may
				 * know the entry from elsewhere (a peer) */
				struct wal_rec r = rec_view(h, name, off);
				r.body = NULL;
				int drc = rec->damaged(rec->arg, &r);
				if (drc < 0)
					return drc;
				if (drc == 0) {
					if (cur_batch > *max_batch)
						*max_batch = cur_batch;
					off = align_up(off + WAL_REC_HDR + len, 8);
					*tail_off = align_up(off, WAL_BLOCK);
					so->end = *tail_off;
					continue;
				}
			}
		corrupt_hdr:
			why_cut(why, sizeof why, bad, size, so->created);
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
			so->sealed = true;
			so->end = align_up(off + WAL_REC_HDR, WAL_BLOCK);
			*tail_off = size; /* nothing may follow a seal */
			break;
		}
		struct wal_rec r = rec_view(h, name, off);
		int rc = rec->record(rec->arg, &r);
		if (rc)
			return rc;
		off = align_up(off + WAL_REC_HDR + len, 8);
		*tail_off = align_up(off, WAL_BLOCK);
		so->end = *tail_off;
	}
	if (is_last && !sealed && !so->hdr_damaged)
		so->junk_end = junk_end(d, size, so->tail, seg_seq);
	/* A new batch must outnumber every batch that left records in this
	 * segment, torn ones included, or a stale record could pass as part
	 * of it. Only block-aligned records can be reached after a batch's
	 * padding, so checking those is enough. */
	for (uint64_t a = WAL_BLOCK; a + WAL_REC_HDR <= size; a += WAL_BLOCK)
		if (rec_header_ok(d + a, seg_seq) && le_get32(d + a + 16) > *max_batch)
			*max_batch = le_get32(d + a + 16);
	if (!is_last && !sealed && (so->hdr_damaged || so->lost_to_end)) {
		/* a header-damaged last segment is never written again (the
		 * log goes on in a new one) and so never sealed; after a
		 * damaged record header with nothing valid after it the seal
		 * is in the lost range */
		PLOG_W("wal", so->hdr_damaged ? "segment with a bad header ends "
		       "without a seal record" : "segment's seal is in a lost "
		       "range", "file=%s offset=%" PRIu64, name, off);
	} else if (!is_last && !sealed) {
		why_cut(why, sizeof why, "segment ends without a seal record",
			size, so->created);
		rec->corrupt(rec->arg, -1, name, off, why);
		return -PARLEY_ECORRUPT;
	}
	return 0;
}

int wal_scan_buffer(const uint8_t *d, uint64_t size, const char *name,
		    bool is_last, const struct wal_recovery *rec,
		    uint64_t *tail_off, uint32_t *max_batch)
{
	struct scan_out so;
	int rc = scan_segment(d, size, name, is_last, rec, &so, 0, NULL);
	*tail_off = so.tail;
	*max_batch = so.max_batch;
	return rc;
}

/* ---- segment files --------------------------------------------------------- */

#define ZERO_SYNC_BYTES (1u << 20)

static int zero_fill(struct pio *io, struct pio_file *f, uint64_t size)
{
	/* aligned: the spare is opened PIO_DIRECT_FILL, so these writes go
	 * around the page cache (no copy of 64 MiB of zeros into it per
	 * spare, nor its dirty pages to write back; seg_bytes and the
	 * offsets are WAL_BLOCK multiples), one MiB per write (a direct
	 * write's cost is mostly per call). Never written: in .bss, its
	 * pages are the kernel's zero page. */
	static uint8_t zeros[ZERO_SYNC_BYTES]
		__attribute__((aligned(PIO_DIRECT_ALIGN)));
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
	int rc = w->io->ops->open(w->io, tmp, PIO_CREATE | PIO_DIRECT_FILL, &f);
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

static void hwm_periodic(struct wal *w);

/* spare_cv waits on CLOCK_MONOTONIC until `deadline_ns` (spare_mu held). */
static void prep_wait(struct wal *w, uint64_t deadline_ns)
{
	struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
			      .tv_nsec = (long)(deadline_ns % 1000000000u)};
	pthread_cond_timedwait(&w->spare_cv, &w->spare_mu, &ts);
}

static int seg_prepare(struct wal *w, uint64_t seq, struct pio_file **out);
static void bg_release(struct wal *w);
static void prep_stop(struct wal *w);

/* Wakes the shard's ring when it waits for background work (any thread). */
static void bg_wake(struct wal *w)
{
	if (w->ring)
		w->io->ops->ring_wake(w->ring);
}

/*
 * The prep thread: everything the WAL has to wait on a disk for, off the
 * shard thread, in this order of urgency:
 *   1. the next segment (a roll waits for it);
 *   2. a queued release (its mark, renames/unlinks, directory syncs);
 *   3. the periodic high-water mark;
 *   4. one pre-zeroed spare kept ready.
 */
static uint64_t wal_now_ns(const struct wal *w)
{
	return w->ex.now_ns ? w->ex.now_ns(w->ex.arg) : parley_mono_ns();
}

/*
 * One unit of the prep thread's work, in the order above (spare_mu held on
 * entry and on return). Returns true when it did something; false when
 * nothing is due before *idle_until (ns, the prep clock). The thread
 * (prep_main) waits on spare_cv until then; a stepped WAL (the
 * simulator, wal_exec) runs it from wal_prep_step instead.
 */
static bool prep_round(struct wal *w, uint64_t *idle_until)
{
	const uint64_t every = (uint64_t)WAL_HWM_EVERY_MS * 1000000u;
	uint64_t now = wal_now_ns(w);
	if (!w->next_mark_ns)
		w->next_mark_ns = now + every;
	if (w->next_want && !w->next_f && !w->next_err &&
	    (w->roll_wait || now >= w->prep_retry_ns)) {
		uint64_t seq = w->next_want;
		pthread_mutex_unlock(&w->spare_mu);
		struct pio_file *f = NULL;
		int rc = seg_prepare(w, seq, &f);
		if (rc)
			PLOG_W("wal", "next segment not prepared", "dir=%s "
			       "seq=%016" PRIx64 " err=%s", w->dir, seq,
			       parley_errname(rc));
		pthread_mutex_lock(&w->spare_mu);
		bool wake = w->roll_wait;
		if (!rc) {
			w->next_f = f;
			atomic_store(&w->next_ready, true);
		} else if (w->roll_wait) {
			w->next_err = rc; /* the roll fails: the WAL is failed */
		} else {
			/* not needed yet: retry after a pause (or when a
			 * roll starts waiting for it) */
			w->prep_retry_ns = wal_now_ns(w) + 100000000u;
		}
		pthread_mutex_unlock(&w->spare_mu);
		if (wake)
			bg_wake(w);
		pthread_mutex_lock(&w->spare_mu);
		return true;
	}
	if (w->rel_st == REL_QUEUED) {
		w->rel_st = REL_RUNNING;
		pthread_mutex_unlock(&w->spare_mu);
		bg_release(w);
		pthread_mutex_lock(&w->spare_mu);
		w->rel_st = REL_DONE;
		atomic_store(&w->bg_done, true);
		pthread_mutex_unlock(&w->spare_mu);
		bg_wake(w);
		pthread_mutex_lock(&w->spare_mu);
		return true;
	}
	if (now >= w->next_mark_ns) {
		/* the periodic mark: off the shard thread */
		pthread_mutex_unlock(&w->spare_mu);
		hwm_periodic(w);
		w->next_mark_ns = wal_now_ns(w) + every;
		pthread_mutex_lock(&w->spare_mu);
		return true;
	}
	*idle_until = w->next_mark_ns;
	if (w->next_want && !w->next_f && !w->next_err)
		*idle_until = PARLEY_MIN(*idle_until, w->prep_retry_ns);
	/* one spare kept ready; after a failure (a full disk) not again
	 * before the next mark: do not spin, the roll path retries */
	if (w->spares_ready >= 1 || now < w->spare_retry_ns)
		return false;
	pthread_mutex_unlock(&w->spare_mu);
	int rc = spare_create(w);
	if (rc)
		PLOG_W("wal", "spare creation failed", "dir=%s err=%s",
		       w->dir, parley_errname(rc));
	pthread_mutex_lock(&w->spare_mu);
	if (rc)
		w->spare_retry_ns = w->next_mark_ns;
	return true;
}

static void *prep_main(void *arg)
{
	struct wal *w = arg;
	pthread_mutex_lock(&w->spare_mu);
	while (!w->stop) {
		uint64_t until = 0;
		if (!prep_round(w, &until))
			prep_wait(w, until);
	}
	pthread_mutex_unlock(&w->spare_mu);
	return NULL;
}

bool wal_prep_step(struct wal *w)
{
	if (!w || w->read_only || w->prep_running || w->stop)
		return false;
	uint64_t until = 0;
	pthread_mutex_lock(&w->spare_mu);
	bool did = prep_round(w, &until);
	pthread_mutex_unlock(&w->spare_mu);
	return did;
}

/* ---- high-water mark (wal.hwm) ---------------------------------------------- */

/*
 * File layout (little-endian), replaced whole, never edited in place:
 *    0 u64 magic "PLWALHWM"   16 u64 active segment seq
 *    8 u32 version            24 u32 segments   28 u32 entries
 *   12 u32 flags (1 = clean)  32..47 reserved (0)
 *   48 segments: {u64 seq, u64 durable end, u32 entries, u32 0} each
 *      entries:  {u32 partition, u32 0, u64 max log index} each, grouped by
 *                segment in segment order
 *   ... u64 xxh3 of everything before it
 */
struct hwm_seg {
	uint64_t seq, end;
	uint32_t first, n; /* its entries in hwm.ents */
};
struct hwm {
	uint32_t flags;
	uint64_t seq;
	uint32_t nseg, nent;
	struct hwm_seg *segs;
	struct wal_pmax *ents;
};

static void hwm_free(struct hwm *m)
{
	free(m->segs);
	free(m->ents);
	memset(m, 0, sizeof *m);
}

static int read_whole(struct pio *io, const char *path, uint8_t **out,
		      uint64_t *size);

/* Decodes a mark; -PARLEY_ECORRUPT when anything does not add up. */
static int hwm_decode(const uint8_t *d, uint64_t size, struct hwm *m)
{
	memset(m, 0, sizeof *m);
	if (size < WAL_HWM_HDR + 8 || le_get64(d) != WAL_HWM_MAGIC ||
	    le_get32(d + 8) != WAL_HWM_VERSION)
		return -PARLEY_ECORRUPT;
	uint32_t nseg = le_get32(d + 24), nent = le_get32(d + 28);
	if (nseg > WAL_HWM_MAX_SEGS || nent > WAL_HWM_MAX_ENTS ||
	    size != WAL_HWM_HDR + (uint64_t)nseg * WAL_HWM_SEG +
			    (uint64_t)nent * WAL_HWM_ENT + 8 ||
	    le_get64(d + size - 8) != parley_xxh3(d, size - 8, WAL_SEED_HWM))
		return -PARLEY_ECORRUPT;
	m->flags = le_get32(d + 12);
	m->seq = le_get64(d + 16);
	m->segs = calloc(nseg ? nseg : 1, sizeof *m->segs);
	m->ents = calloc(nent ? nent : 1, sizeof *m->ents);
	if (!m->segs || !m->ents) {
		hwm_free(m);
		return -ENOMEM;
	}
	const uint8_t *p = d + WAL_HWM_HDR;
	uint64_t used = 0;
	for (uint32_t i = 0; i < nseg; i++, p += WAL_HWM_SEG) {
		struct hwm_seg *g = &m->segs[i];
		g->seq = le_get64(p);
		g->end = le_get64(p + 8);
		g->n = le_get32(p + 16);
		g->first = (uint32_t)PARLEY_MIN(used, (uint64_t)UINT32_MAX);
		used += g->n;
	}
	if (used != nent) {
		hwm_free(m);
		return -PARLEY_ECORRUPT;
	}
	for (uint32_t i = 0; i < nent; i++, p += WAL_HWM_ENT) {
		m->ents[i].part = le_get32(p);
		m->ents[i].max = le_get64(p + 8);
	}
	m->nseg = nseg;
	m->nent = nent;
	return 0;
}

/* Reads <dir>/wal.hwm: 0 (*found says whether it exists), or an error. */
static int hwm_read(struct pio *io, const char *dir, struct hwm *m,
		    bool *found)
{
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, WAL_HWM_NAME);
	uint8_t *d = NULL;
	uint64_t size = 0;
	*found = false;
	memset(m, 0, sizeof *m);
	int rc = read_whole(io, path, &d, &size);
	if (rc == -ENOENT || rc == -PARLEY_ENOTFOUND)
		return 0;
	if (rc)
		return rc;
	rc = hwm_decode(d, size, m);
	free(d);
	if (!rc)
		*found = true;
	return rc;
}

/*
 * Encodes the mark from the durable maps (shard thread): every segment not
 * being released (drop), plus `next` (a segment about to become active, no
 * records yet) when non-zero. The active segment recorded is `next` or the
 * current one.
 */
static int hwm_encode(struct wal *w, bool clean, uint64_t next, uint8_t **out,
		      size_t *out_len)
{
	uint32_t nseg = 0, nent = 0;
	for (uint32_t i = 0; i < w->nmaps; i++)
		if (!w->maps[i].drop) {
			nseg++;
			nent += w->maps[i].n;
		}
	if (next)
		nseg++;
	if (nseg > WAL_HWM_MAX_SEGS || nent > WAL_HWM_MAX_ENTS)
		return -PARLEY_EINVAL;
	size_t size = WAL_HWM_HDR + (size_t)nseg * WAL_HWM_SEG +
		      (size_t)nent * WAL_HWM_ENT + 8;
	uint8_t *d = calloc(1, size);
	if (!d)
		return -ENOMEM;
	le_put64(d, WAL_HWM_MAGIC);
	le_put32(d + 8, WAL_HWM_VERSION);
	le_put32(d + 12, clean ? WAL_HWM_CLEAN : 0);
	le_put64(d + 16, next ? next : w->seg_seq);
	le_put32(d + 24, nseg);
	le_put32(d + 28, nent);
	uint8_t *sp = d + WAL_HWM_HDR;
	uint8_t *ep = sp + (size_t)nseg * WAL_HWM_SEG;
	for (uint32_t i = 0; i < w->nmaps; i++) {
		const struct wal_segmap *m = &w->maps[i];
		if (m->drop)
			continue;
		le_put64(sp, m->seq);
		le_put64(sp + 8, m->end);
		le_put32(sp + 16, m->n);
		sp += WAL_HWM_SEG;
		for (uint32_t k = 0; k < m->n; k++, ep += WAL_HWM_ENT) {
			le_put32(ep, m->v[k].part);
			le_put64(ep + 8, m->v[k].max);
		}
	}
	if (next) {
		le_put64(sp, next);
		le_put64(sp + 8, WAL_BLOCK);
	}
	le_put64(d + size - 8, parley_xxh3(d, size - 8, WAL_SEED_HWM));
	*out = d;
	*out_len = size;
	return 0;
}

/*
 * Stores an encoded mark (mark_mu held, any thread) unless a newer one is
 * already on disk: marks are made in generation order on the shard thread
 * but the prep thread may store one late, and an older mark stored after a
 * release's mark would list a released segment. dir_sync=false when the
 * caller syncs the directory right after.
 */
static int hwm_store(struct wal *w, const uint8_t *d, size_t size,
		     uint64_t gen, bool dir_sync)
{
	if (gen <= w->mark_written)
		return 0;
	char tmp[600], fin[600];
	snprintf(tmp, sizeof tmp, "%s/%s.tmp", w->dir, WAL_HWM_NAME);
	snprintf(fin, sizeof fin, "%s/%s", w->dir, WAL_HWM_NAME);
	int rc = pio_file_write_tmp(w->io, tmp, d, size);
	if (!rc)
		rc = dir_sync ? pio_file_publish(w->io, w->dir, tmp, fin)
			      : w->io->ops->rename(w->io, tmp, fin);
	if (rc)
		PLOG_W("wal", "high-water mark not written (the previous one "
		       "stays)", "dir=%s err=%s", w->dir, parley_errname(rc));
	else
		w->mark_written = gen;
	return rc;
}

/* Makes and stores a mark now (shard thread, or open). */
static int hwm_write(struct wal *w, bool clean, uint64_t next, bool dir_sync)
{
	if (w->read_only || w->mark_frozen || w->maps_oom)
		return 0;
	uint8_t *d;
	size_t n;
	pthread_mutex_lock(&w->maps_mu);
	int rc = hwm_encode(w, clean, next, &d, &n);
	uint64_t gen = ++w->mark_gen;
	if (!rc)
		w->mark_dirty = false;
	pthread_mutex_unlock(&w->maps_mu);
	if (rc)
		return rc;
	pthread_mutex_lock(&w->mark_mu);
	rc = hwm_store(w, d, n, gen, dir_sync);
	pthread_mutex_unlock(&w->mark_mu);
	free(d);
	return rc;
}

/* The prep thread, every WAL_HWM_EVERY_MS: when batches became durable
 * since the last mark, makes and stores one, off the append path. Best
 * effort: a mark not stored leaves the previous one, which is still true.
 * Made under maps_mu with its generation, so one made before a release's
 * mark (listing a segment about to go) is never stored after it. */
static void hwm_periodic(struct wal *w)
{
	uint8_t *d = NULL;
	size_t n = 0;
	uint64_t gen = 0;
	pthread_mutex_lock(&w->maps_mu);
	if (w->mark_dirty && !w->mark_frozen && !w->maps_oom &&
	    hwm_encode(w, false, 0, &d, &n) == 0) {
		gen = ++w->mark_gen;
		w->mark_dirty = false;
	}
	pthread_mutex_unlock(&w->maps_mu);
	if (!d)
		return;
	pthread_mutex_lock(&w->mark_mu);
	(void)hwm_store(w, d, n, gen, true);
	pthread_mutex_unlock(&w->mark_mu);
	free(d);
}

static const struct wal_segmap *segmap_find(const struct wal *w, uint64_t seq)
{
	for (uint32_t i = 0; i < w->nmaps; i++)
		if (w->maps[i].seq == seq)
			return &w->maps[i];
	return NULL;
}

static uint64_t pmax_of(const struct wal_segmap *m, uint32_t part)
{
	for (uint32_t k = 0; m && k < m->n; k++)
		if (m->v[k].part == part)
			return m->v[k].max;
	return 0;
}

/*
 * Recovery's check against the mark: every (segment, partition, index) it
 * lists must have been found again by the scan (w->maps) or be in history.
 * Reports each partition missing records, with file, bytes and indexes.
 * Returns how many losses were reported.
 */
static uint32_t hwm_check(struct wal *w, const struct hwm *m,
			  const struct wal_recovery *rec)
{
	uint32_t lost = 0;
	for (uint32_t i = 0; i < m->nseg; i++) {
		const struct hwm_seg *g = &m->segs[i];
		const struct wal_segmap *sm = segmap_find(w, g->seq);
		char name[64], why[200];
		snprintf(name, sizeof name, "wal-%016" PRIx64 ".log", g->seq);
		if (sm && sm->hold) {
			/* its lost range's records cannot be counted; the
			 * partitions that may have lost them are repaired
			 * from peers (wal_recovery.lost) */
			PLOG_W("wal", "high-water mark not checked against a "
			       "segment with a lost range", "dir=%s file=%s",
			       w->dir, name);
			continue;
		}
		for (uint32_t k = 0; k < g->n; k++) {
			const struct wal_pmax *e = &m->ents[g->first + k];
			uint64_t fl = rec->flushed ? rec->flushed(rec->arg, e->part)
						   : 0;
			if (e->max <= fl || pmax_of(sm, e->part) >= e->max)
				continue;
			/* the first missing index: after what survived up to
			 * and including this segment, or what history holds */
			uint64_t from = fl;
			for (uint32_t j = 0; j < w->nmaps; j++)
				if (w->maps[j].seq <= g->seq)
					from = PARLEY_MAX(from,
							  pmax_of(&w->maps[j], e->part));
			from = PARLEY_MIN(from + 1, e->max);
			if (sm)
				snprintf(why, sizeof why, "acknowledged records lost: "
					 "log indexes %" PRIu64 "..%" PRIu64
					 " (log ends at byte %" PRIu64 ", wal.hwm "
					 "recorded it durable to byte %" PRIu64 ")",
					 from, e->max, sm->end, g->end);
			else
				snprintf(why, sizeof why, "segment file missing: "
					 "acknowledged log indexes %" PRIu64 "..%" PRIu64
					 " lost (bytes %u..%" PRIu64 " per wal.hwm)",
					 from, e->max, WAL_BLOCK, g->end);
			PLOG_E("wal", "acknowledged records missing",
			       "dir=%s file=%s partition=%u indexes=%" PRIu64
			       "..%" PRIu64 " bytes=%" PRIu64 "..%" PRIu64,
			       w->dir, name, e->part, from, e->max,
			       sm ? sm->end : (uint64_t)WAL_BLOCK, g->end);
			rec->corrupt(rec->arg, e->part, name, sm ? sm->end : 0, why);
			lost++;
		}
	}
	return lost;
}

/*
 * Turns a spare (or a new file) into segment `seq`, ready to be the active
 * one: header written and synced, renamed to wal-<seq>.log, directory
 * synced. Any thread (the prep thread, or open). A prepared segment that is
 * not active yet holds no record; recovery tells it apart (wal_open) and
 * hands it back as a spare.
 */
static int seg_prepare(struct wal *w, uint64_t seq, struct pio_file **out)
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
	snprintf(from, sizeof from, "%s/%s", w->dir, sf.name);
	seg_path(w, seq, to, sizeof to);

	struct pio_file *f;
	rc = w->io->ops->open(w->io, from, w->seg_oflags, &f);
	if (rc)
		return rc;
	/* The header records the file's size as created, so a later cut is
	 * visible (a recycled spare keeps the size it was made with). */
	int64_t fsz = w->io->ops->size(w->io, f);
	if (fsz < 0) {
		w->io->ops->close(w->io, f);
		return (int)fsz;
	}
	uint8_t hdr[WAL_BLOCK];
	wal_encode_seg_header(hdr, seq,
			      PARLEY_MAX((uint64_t)fsz, (uint64_t)WAL_BLOCK));
	rc = w->io->ops->pwrite(w->io, f, hdr, sizeof hdr, 0);
	if (!rc)
		rc = w->io->ops->fdatasync(w->io, f);
	if (!rc)
		rc = pio_file_publish(w->io, w->dir, from, to);
	if (rc) {
		w->io->ops->close(w->io, f);
		return rc;
	}
	*out = f;
	return 0;
}

/* Makes the prepared segment f (seq) the active one: a pointer swap, no
 * I/O but closing the old handle. Shard thread (or open). */
static void seg_swap(struct wal *w, uint64_t seq, struct pio_file *f)
{
	if (w->seg)
		w->io->ops->close(w->io, w->seg);
	w->seg = f;
	pthread_mutex_lock(&w->maps_mu);
	w->seg_seq = seq;
	struct wal_segmap *sm = segmap_get(w, seq);
	if (sm)
		sm->end = WAL_BLOCK;
	/* the next periodic mark lists the new segment (until then the
	 * previous mark stays true: it just does not name this newer one) */
	w->mark_dirty = true;
	pthread_mutex_unlock(&w->maps_mu);
	snprintf(w->seg_name, sizeof w->seg_name, "wal-%016" PRIx64 ".log", seq);
	w->tail = WAL_BLOCK;
	w->roll_pending = false;
	w->batch_seq = 0; /* batch seqs count within a segment (u32 never wraps) */
	w->stats.segments++;
}

/* Open only: prepares and activates segment `seq` synchronously, and
 * stores a mark naming it. */
static int seg_activate(struct wal *w, uint64_t seq)
{
	struct pio_file *f;
	int rc = seg_prepare(w, seq, &f);
	if (rc)
		return rc;
	seg_swap(w, seq, f);
	/* Not fatal when it fails: the previous mark stays true (it just
	 * does not list the new segment, which is newer than it). */
	(void)hwm_write(w, false, 0, true);
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

static int note_damaged(void *arg, const struct wal_rec *r)
{
	struct note_ctx *c = arg;
	if (!c->rec->damaged)
		return 1;
	int rc = c->rec->damaged(c->rec->arg, r);
	if (rc == 0) /* taken: the index is known, as for a valid record */
		wal_note(c->w, c->seq, r->partition, r->index);
	return rc;
}

static int note_lost(void *arg, const char *file, uint64_t off, uint64_t end)
{
	struct note_ctx *c = arg;
	if (!c->rec->lost)
		return 1;
	int rc = c->rec->lost(c->rec->arg, file, off, end);
	if (rc == 0) {
		struct wal_segmap *m = segmap_get(c->w, c->seq);
		if (m)
			m->hold = true;
		c->w->hold_damaged = true;
	}
	return rc;
}

static void note_corrupt(void *arg, int64_t partition, const char *file,
			 uint64_t off, const char *why)
{
	struct note_ctx *c = arg;
	/* a damaged segment's records past the damage are unknown: keep
	 * every segment (the evidence) rather than guess */
	c->w->maps_broken = true;
	c->w->mark_frozen = true; /* the old mark stays as the evidence */
	c->rec->corrupt(c->rec->arg, partition, file, off, why);
}

/*
 * Does segment `seq` look like one prepared ahead of its roll that never
 * took a record? A valid header naming it, and no valid record header of
 * it at block 1, where its first batch would start (a recycled spare's
 * stale records carry another segment's seq). Reads two blocks. Whether
 * it really is one depends on the segment before it (wal_open).
 * With `lenient` (repair_from_peers) a header that fails its check is
 * accepted too, and *hdr_bad says so: such a segment is never used (a new
 * one is prepared over its name).
 */
static bool looks_prepared(struct wal *w, uint64_t seq, bool lenient,
			   bool *hdr_bad)
{
	*hdr_bad = false;
	char path[600];
	seg_path(w, seq, path, sizeof path);
	struct pio_file *f;
	if (w->io->ops->open(w->io, path, 0, &f))
		return false;
	uint8_t *d = malloc(2 * WAL_BLOCK);
	int64_t n = d ? w->io->ops->pread(w->io, f, d, 2 * WAL_BLOCK, 0) : -1;
	w->io->ops->close(w->io, f);
	uint64_t hseq = 0, created = 0;
	bool full = n == 2 * WAL_BLOCK;
	bool hok = full && seg_header_ok(d, (uint64_t)n, &hseq, &created);
	bool yes = full && (hok ? hseq == seq : lenient) &&
		   !rec_header_ok(d + WAL_BLOCK, seq);
	*hdr_bad = yes && !hok;
	free(d);
	return yes;
}

int wal_open(struct pio *io, const char *dir, uint64_t seg_bytes,
	     bool read_only, const struct wal_recovery *rec,
	     const struct wal_exec *ex, struct wal **out)
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
	w->commit = wal_commit_mode();
	w->seg_oflags = (w->commit == WAL_COMMIT_DIRECT ||
			 w->commit == WAL_COMMIT_DIRECT_LINK) ? PIO_DIRECT : 0;
	if (ex)
		w->ex = *ex;
	snprintf(w->dir, sizeof w->dir, "%s", dir);
	pthread_mutex_init(&w->spare_mu, NULL);
	pthread_mutex_init(&w->mark_mu, NULL);
	pthread_mutex_init(&w->maps_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* prep_wait */
	pthread_cond_init(&w->spare_cv, &ca);
	pthread_condattr_destroy(&ca);
	for (uint32_t i = 0; i < WAL_FLIGHT_MAX + 1 && !read_only; i++) {
		w->bufs[i].p = aligned_alloc(WAL_BLOCK, WAL_MAX_BATCH + WAL_BLOCK);
		if (!w->bufs[i].p) {
			wal_close(w);
			return -ENOMEM;
		}
		memset(w->bufs[i].p, 0, WAL_MAX_BATCH + WAL_BLOCK);
	}
	w->open = &w->bufs[0];

	int rc = 0;
	if (!read_only) {
		rc = pio_dir_ensure(io, dir); /* its entry durable, too */
		if (rc) {
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
	/* A segment prepared ahead of its roll (header only, no record) after
	 * a segment that is not sealed was never active: the log ends in the
	 * one before it, which is then scanned as the last, and the prepared
	 * one is kept as the next segment (a roll swaps it in only after the
	 * seal of the one before is durable, so a segment with records never
	 * follows an unsealed one). */
	bool prep_bad = false; /* its header failed (repair_from_peers) */
	bool last_prep = l.n >= 2 && l.seqs[l.n - 1] == l.seqs[l.n - 2] + 1 &&
			 looks_prepared(w, l.seqs[l.n - 1],
					rec->repair_from_peers, &prep_bad);
	if (last_prep && prep_bad)
		PLOG_E("wal", "bad segment header of a segment prepared ahead "
		       "(no record): a new one is prepared over it", "dir=%s "
		       "file=wal-%016" PRIx64 ".log offset=0", dir,
		       l.seqs[l.n - 1]);
	uint64_t prep_seq = 0; /* the prepared segment, set aside */
	bool prev_corrupt = false;

	struct hwm mark;
	bool have_mark = false;
	rc = hwm_read(io, dir, &mark, &have_mark);
	if (rc == -PARLEY_ECORRUPT) {
		rec->corrupt(rec->arg, -1, WAL_HWM_NAME, 0,
			     "high-water mark file damaged: cannot tell which "
			     "acknowledged records the log must hold");
		w->maps_broken = w->mark_frozen = true;
	} else if (rc) {
		free(l.seqs);
		wal_close(w);
		return rc;
	}

	uint64_t tail = WAL_BLOCK;
	uint32_t max_batch = 0;
	bool last_sealed = false, any_v2 = false;
	uint64_t restore_size = 0; /* give a cut last segment its size back */
	struct scan_out last_so = {0};
	uint64_t last_size = 0;
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
		bool is_last = i + 1 == l.n || (last_prep && i + 2 == l.n);
		struct note_ctx nc = {.w = w, .seq = l.seqs[i], .rec = rec};
		struct wal_recovery nrec = {.record = note_record,
					    .corrupt = note_corrupt,
					    .damaged = note_damaged,
					    .lost = note_lost,
					    .repair_from_peers = rec->repair_from_peers,
					    .arg = &nc};
		/* a segment with no record still counts: it may be released */
		if (!segmap_get(w, l.seqs[i])) {
			free(data);
			free(l.seqs);
			hwm_free(&mark);
			wal_close(w);
			return -ENOMEM;
		}
		struct scan_out so;
		rc = scan_segment(data, size, name, is_last, &nrec, &so,
				  l.seqs[i], path);
		free(data);
		if (rc && rc != -PARLEY_ECORRUPT) {
			free(l.seqs);
			hwm_free(&mark);
			wal_close(w);
			return rc;
		}
		struct wal_segmap *sm = segmap_get(w, l.seqs[i]);
		if (sm)
			sm->end = so.end;
		any_v2 |= so.created != 0;
		tail = so.tail;
		if (so.created > size && !rc && !is_last)
			PLOG_W("wal", "segment file shorter than created (its log "
			       "and seal are intact)", "dir=%s file=%s size=%" PRIu64
			       " created=%" PRIu64, dir, name, size, so.created);
		if (is_last) {
			max_batch = so.max_batch;
			last_sealed = so.sealed;
			last_so = so;
			last_size = size;
			/* never write over it: a corrupt one is the evidence,
			 * and new records in a header-damaged one would be
			 * taken as damaged too on the next start */
			if (rc == -PARLEY_ECORRUPT || so.hdr_damaged)
				last_sealed = true;
		}
		if (last_prep && i + 2 == l.n && !so.sealed) {
			prep_seq = l.seqs[l.n - 1];
			prev_corrupt = rc == -PARLEY_ECORRUPT;
			l.n--; /* the loop ends here: the log's last segment */
		}
	}
	uint64_t last_seq = l.n ? l.seqs[l.n - 1] : 0;
	free(l.seqs);
	if (w->maps_oom) {
		hwm_free(&mark);
		wal_close(w);
		return -ENOMEM;
	}

	/* The high-water mark: what earlier syncs proved durable must be here. */
	uint64_t mark_last_end = 0; /* the last segment's durable end per the mark */
	bool lost = false;
	if (have_mark) {
		for (uint32_t i = 0; i < mark.nseg; i++)
			if (mark.segs[i].seq == last_seq)
				mark_last_end = mark.segs[i].end;
		lost = hwm_check(w, &mark, rec) > 0;
		if (lost)
			w->maps_broken = w->mark_frozen = true;
	} else if (any_v2) {
		PLOG_W("wal", "high-water mark file missing: acknowledged records "
		       "lost from this WAL cannot be detected on this start",
		       "dir=%s file=%s", dir, WAL_HWM_NAME);
	} else if (l.n) {
		PLOG_I("wal", "WAL from an older version: upgraded in place (a "
		       "high-water mark is kept from now on)", "dir=%s", dir);
	}
	/* A cut active segment: records written after the last mark may have
	 * been in the lost bytes, and nothing names their partitions, unless
	 * the mark was written at a clean shutdown (then it knows the end). */
	if (last_so.created > last_size && last_so.eof) {
		char name[64], why[200];
		snprintf(name, sizeof name, "wal-%016" PRIx64 ".log", last_seq);
		bool covered = have_mark && (mark.flags & WAL_HWM_CLEAN) &&
			       mark.seq == last_seq;
		PLOG_E("wal", "segment file cut short", "dir=%s file=%s size=%"
		       PRIu64 " created=%" PRIu64 " log_end=%" PRIu64
		       " clean_mark=%s", dir, name, last_size, last_so.created,
		       last_so.end, covered ? "yes" : "no");
		if (!covered) {
			snprintf(why, sizeof why, "file cut to %" PRIu64 " bytes "
				 "(created %" PRIu64 "): acknowledged records after "
				 "byte %" PRIu64 " may be lost (bytes %" PRIu64
				 "..%" PRIu64 " missing)", last_size,
				 last_so.created, last_so.end, last_size,
				 last_so.created);
			rec->corrupt(rec->arg, -1, name, last_so.end, why);
			w->maps_broken = w->mark_frozen = true;
			last_sealed = true; /* never write over it */
		} else {
			restore_size = last_so.created;
		}
	}
	hwm_free(&mark);

	if (read_only) {
		*out = w;
		return 0;
	}
	if (l.n == 0 || last_sealed) {
		/* what the mark is about to count must be durable: after kill -9
		 * the sealing batch may have been read back from the page cache
		 * before its fdatasync ran */
		if (l.n) {
			char path[600];
			struct pio_file *f;
			seg_path(w, last_seq, path, sizeof path);
			rc = io->ops->open(io, path, 0, &f);
			if (!rc) {
				rc = io->ops->fdatasync(io, f);
				io->ops->close(io, f);
			}
		}
		if (!rc)
			rc = seg_activate(w, last_seq + 1);
	} else {
		char path[600];
		seg_path(w, last_seq, path, sizeof path);
		rc = io->ops->open(io, path, w->seg_oflags, &w->seg);
		/* a cut whose loss the clean mark has measured (and reported):
		 * zeros again after the log, as a pre-zeroed segment has */
		if (!rc && restore_size)
			rc = io->ops->truncate(io, w->seg, restore_size);
		/* A torn record that starts inside a block would outlive the
		 * next batch, which starts at the following block boundary:
		 * the next recovery would then find a bad record followed by
		 * a later batch, which is what corruption looks like. Zero
		 * from the torn record to the boundary (the bytes before it
		 * are rewritten unchanged, sector by sector) and let the
		 * fdatasync below make that durable before anything new is
		 * written after it. */
		uint64_t torn = last_so.torn_at;
		/* Acknowledged records are missing and the "torn" record
		 * starts before where the mark proved the segment durable:
		 * it is damage (a flipped bit) over acknowledged records.
		 * Their partitions are reported corrupt above; the damaged
		 * bytes stay exactly as found (no zeroing of the torn record)
		 * and new batches start after the mark's end, so that
		 * repairing those bytes (restoring the file) brings every
		 * record back, and while they stay damaged the next recovery
		 * still sees a bad record followed by later batches
		 * (corruption, never a torn tail). Before this, the zeroing
		 * and the next batches wrote over them: the loss became
		 * permanent (the engine simulator's flip-and-restore step).
		 * Only when no all-zero block lies between the damage and the
		 * mark's end: a scan stops at one as at the log's end, so new
		 * batches after it would be lost to the next recovery (bytes
		 * zeroed in place keep the old behaviour: the log goes on
		 * where it reads as ending, over zeros). Records made durable
		 * after the last mark, past its end, are the residual window
		 * (wal.h). */
		bool keep = lost && torn && torn < mark_last_end &&
			    last_so.zero_at >= mark_last_end;
		if (keep) {
			PLOG_E("wal", "log ends before its high-water mark: the "
			       "damaged bytes are kept, new records start after "
			       "the mark's end", "dir=%s file=wal-%016" PRIx64
			       ".log log_end=%" PRIu64 " mark_end=%" PRIu64, dir,
			       last_seq, tail, mark_last_end);
			tail = PARLEY_MAX(tail, align_up(mark_last_end, WAL_BLOCK));
			torn = 0; /* and no zeroing of the "torn" record */
		}
		if (!rc && torn % WAL_BLOCK && align_up(torn, WAL_BLOCK) <= tail) {
			static const uint8_t zeros[WAL_BLOCK];
			rc = io->ops->pwrite(io, w->seg, zeros,
					     align_up(torn, WAL_BLOCK) - torn, torn);
		}
		/* Records past the log's end (a torn batch's later blocks, a
		 * batch written behind it: invariant 3) are zeroed too, and
		 * made durable by the fdatasync below before anything new is
		 * written: else a shorter new batch over their start would
		 * leave the rest to read as records out of order (corruption)
		 * once later batches follow. A crash while zeroing leaves the
		 * same log end and less of them: the next open zeroes again.
		 * Not when acknowledged records are missing (lost): what lies
		 * past the log's end may be theirs, the evidence an operator
		 * restores from; new batches go on over it as before. */
		if (!rc && !lost && last_so.junk_end > tail) {
			static const uint8_t zeros[1u << 16];
			PLOG_I("wal", "records past the log's end (never "
			       "acknowledged) zeroed", "dir=%s file=wal-%016"
			       PRIx64 ".log from=%" PRIu64 " to=%" PRIu64, dir,
			       last_seq, tail, last_so.junk_end);
			for (uint64_t o = tail; !rc && o < last_so.junk_end;
			     o += sizeof zeros)
				rc = io->ops->pwrite(io, w->seg, zeros,
						     (size_t)PARLEY_MIN(
							     (uint64_t)sizeof zeros,
							     last_so.junk_end - o),
						     o);
		}
		if (!rc) /* make what we replayed durable before serving it */
			rc = io->ops->fdatasync(io, w->seg);
		w->seg_seq = last_seq;
		snprintf(w->seg_name, sizeof w->seg_name,
			 "wal-%016" PRIx64 ".log", last_seq);
		w->tail = tail;
		w->batch_seq = max_batch;
		/* this run's first mark: it also retires a clean one, whose
		 * end would no longer be final once anything is appended */
		if (!rc)
			rc = hwm_write(w, false, 0, true);
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
	w->next_want = w->seg_seq + 1; /* prepared ahead of the first roll */
	if (prep_seq == w->next_want && !prev_corrupt && !prep_bad) {
		/* the prepared segment found above is that one already (else a
		 * new one was just activated over its name) */
		char path[600];
		seg_path(w, prep_seq, path, sizeof path);
		if (io->ops->open(io, path, w->seg_oflags, &w->next_f) == 0)
			atomic_store(&w->next_ready, true);
		else
			w->next_f = NULL;
	}
	/* the prep thread is not optional: rolls and releases wait for it
	 * (stepped: the caller runs its work through wal_prep_step) */
	if (w->ex.now_ns) {
		*out = w;
		return 0;
	}
	rc = pthread_create(&w->prep, NULL, prep_main, w);
	if (rc) {
		wal_close(w);
		return -rc;
	}
	w->prep_running = true;
	*out = w;
	return 0;
}

void wal_close(struct wal *w)
{
	if (!w)
		return;
	prep_stop(w);
	if (w->seg)
		w->io->ops->close(w->io, w->seg);
	if (w->next_f)
		w->io->ops->close(w->io, w->next_f);
	free(w->rel_seqs);
	free(w->rel_ok);
	for (uint32_t i = 0; i < WAL_FLIGHT_MAX + 1; i++)
		free(w->bufs[i].p);
	for (uint32_t i = 0; i < w->nmaps; i++)
		free(w->maps[i].v);
	free(w->maps);
	pthread_mutex_destroy(&w->spare_mu);
	pthread_mutex_destroy(&w->mark_mu);
	pthread_mutex_destroy(&w->maps_mu);
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
	if (w->seal_asap)
		return true; /* a batch of the seal alone, if nothing else */
	return w->open->nrec > 0;
}

bool wal_in_flight(const struct wal *w)
{
	return w->fl_n > 0;
}

static struct wal_flight *flight_at(struct wal *w, uint32_t k)
{
	return &w->fl[(w->fl_head + k) % WAL_FLIGHT_MAX];
}

/* A buffer neither open nor in flight (there is one at every submit:
 * fl_n < WAL_FLIGHT_MAX buffers in flight, one open). */
static struct wal_buf *buf_free(struct wal *w)
{
	for (uint32_t i = 0; i < WAL_FLIGHT_MAX + 1; i++) {
		struct wal_buf *b = &w->bufs[i];
		bool used = b == w->open;
		for (uint32_t k = 0; k < w->fl_n && !used; k++)
			used = flight_at(w, k)->b == b;
		if (!used)
			return b;
	}
	PARLEY_ASSERT(!"no free WAL batch buffer");
	return NULL;
}

/*
 * The roll (shard thread, nothing in flight, the active segment sealed):
 * the segment prepared ahead by the prep thread becomes the active one (a
 * pointer swap), or -EAGAIN while it is being made (the ring is woken when
 * it is), or the preparation's error (the WAL is then failed).
 */
static int roll_take(struct wal *w)
{
	PARLEY_ASSERT(w->roll_pending && !w->fl_n);
	pthread_mutex_lock(&w->spare_mu);
	struct pio_file *f = w->next_f;
	uint64_t seq = w->next_want;
	int err = w->next_err;
	if (f) {
		/* taken, and the next one asked for, in one step: a prep
		 * round between the two would see next_want with no
		 * prepared file and prepare this seq again (a spare renamed
		 * over the segment made active here, which then wrote to an
		 * unlinked file) */
		w->next_f = NULL;
		atomic_store(&w->next_ready, false);
		w->roll_wait = false;
		w->next_want = seq + 1;
		pthread_cond_signal(&w->spare_cv);
	} else if (!err) {
		w->roll_wait = true;
		pthread_cond_signal(&w->spare_cv);
	}
	pthread_mutex_unlock(&w->spare_mu);
	if (err) {
		w->failed = err;
		return err;
	}
	if (!f)
		return -EAGAIN;
	PARLEY_ASSERT(seq == w->seg_seq + 1);
	seg_swap(w, seq, f);
	return 0;
}

int wal_submit(struct wal *w, struct pio_ring *ring, uint64_t ud)
{
	PARLEY_ASSERT(w->fl_n < WAL_FLIGHT_MAX &&
		      (w->open->nrec > 0 || w->seal_asap));
	PARLEY_ASSERT(!w->fl_n || ud == w->ud_base);
	if (w->failed)
		return w->failed;
	int rc;
	if (w->roll_pending) {
		/* the batch that sealed the active segment is durable
		 * (wal_busy): the next segment may start */
		PARLEY_ASSERT(w->fl_n == 0);
		rc = roll_take(w);
		if (rc)
			return rc;
	}
	struct wal_buf *b = w->open;
	/* Seal the segment in this batch when the next one might not fit,
	 * or when asked to (seal_asap: then the batch may be the seal
	 * alone). */
	uint64_t after = w->tail + align_up(b->len, WAL_BLOCK);
	if (w->seal_asap || after + WAL_MAX_BATCH + 2 * WAL_BLOCK > w->seg_bytes) {
		uint8_t *h = b->p + b->len;
		memset(h, 0, WAL_REC_HDR);
		le_put32(h, WAL_MAGIC);
		le_put32(h + 24, WAL_SEAL_PART);
		le_put16(h + 28, WAL_REC_SEAL);
		b->len += WAL_REC_HDR;
		w->roll_pending = true;
		w->seal_asap = false;
	}
	/* Submitted behind a batch still in flight (its predecessor, the
	 * last one submitted, in this segment: a roll waits for durability):
	 * every record names how far back that batch starts, so a recovery
	 * that finds it torn and this one complete knows a crash can leave
	 * exactly that (invariant 3). */
	uint16_t pred = 0;
	if (w->fl_n > w->fl_noted) {
		const struct wal_flight *p = flight_at(w, w->fl_n - 1);
		PARLEY_ASSERT(p->seq == w->seg_seq && p->end == w->tail &&
			      (w->tail - p->start) / WAL_BLOCK <= UINT16_MAX);
		pred = (uint16_t)((w->tail - p->start) / WAL_BLOCK);
	}
	uint32_t batch = ++w->batch_seq;
	uint32_t start = (uint32_t)w->tail;
	for (uint32_t off = 0; off < b->len;) {
		uint8_t *h = b->p + off;
		le_put16(h + 30, pred);
		rec_stamp(h, w->seg_seq, batch, start);
		off = (uint32_t)align_up(off + WAL_REC_HDR + le_get32(h + 4), 8);
	}
	uint32_t wlen = (uint32_t)align_up(b->len, WAL_BLOCK);
	memset(b->p + b->len, 0, wlen - b->len);
	uint32_t slot = (w->fl_head + w->fl_n) % WAL_FLIGHT_MAX;
	struct wal_flight *f = &w->fl[slot];
	/* b->p is WAL_BLOCK-aligned, and so are w->tail and wlen: what a
	 * PIO_DIRECT segment needs */
	if (w->commit == WAL_COMMIT_DSYNC || w->commit == WAL_COMMIT_DIRECT) {
		rc = w->io->ops->ring_write_dsync(ring, w->seg, b->p, wlen,
						  w->tail, ud + slot);
		f->ops = 1;
	} else {
		rc = w->io->ops->ring_write(ring, w->seg, b->p, wlen, w->tail,
					    ud + slot, true);
		if (!rc)
			rc = w->io->ops->ring_fdatasync(ring, w->seg, ud + slot);
		f->ops = 2;
	}
	if (rc) {
		w->failed = rc;
		return rc;
	}
	w->ud_base = ud;
	f->b = b;
	f->cqes = f->ops;
	f->done = false;
	f->start_ns = parley_mono_ns();
	f->seq = w->seg_seq;
	f->start = w->tail;
	f->end = w->tail + wlen;
	w->fl_n++;
	w->tail += wlen;
	w->stats.batches++;
	w->stats.bytes += wlen;
	if (pred)
		w->stats.piped++;
	w->open = buf_free(w);
	w->open->len = 0;
	w->open->nrec = 0;
	return 0;
}

/* The oldest batch not yet counted completed: durable now, and so is
 * every batch before it. Only from here on do its records count for
 * release and for the high-water mark (which must never claim a record
 * that a crash could still tear away). Its segment is the active one,
 * never released while active. */
static void flight_note(struct wal *w, struct wal_flight *f)
{
	w->stats.sync_ns += parley_mono_ns() - f->start_ns;
	const struct wal_buf *b = f->b;
	pthread_mutex_lock(&w->maps_mu);
	for (uint32_t off = 0; off < b->len;) {
		const uint8_t *h = b->p + off;
		if (le_get16(h + 28) != WAL_REC_SEAL)
			wal_note(w, f->seq, le_get32(h + 24), le_get64(h + 40));
		off = (uint32_t)align_up(off + WAL_REC_HDR + le_get32(h + 4), 8);
	}
	struct wal_segmap *sm = w->maps_oom ? NULL : segmap_get(w, f->seq);
	if (sm)
		sm->end = f->end;
	w->mark_dirty = true;
	pthread_mutex_unlock(&w->maps_mu);
}

int wal_on_cqe(struct wal *w, uint64_t user_data, int res)
{
	PARLEY_ASSERT(w->fl_n > 0 && user_data >= w->ud_base &&
		      user_data - w->ud_base < WAL_FLIGHT_MAX);
	struct wal_flight *f = &w->fl[user_data - w->ud_base];
	/* the slot must be in flight and still expect completions */
	bool live = false;
	for (uint32_t k = w->fl_noted; k < w->fl_n && !live; k++)
		live = flight_at(w, k) == f;
	PARLEY_ASSERT(live && f->cqes > 0);
	if (f->cqes == f->ops) { /* the write (first of a linked chain) */
		uint32_t want = (uint32_t)align_up(f->b->len, WAL_BLOCK);
		if (res >= 0 && (uint32_t)res != want)
			res = -PARLEY_EIO; /* short write: treat as failure */
	}
	if (res < 0 && !w->failed)
		w->failed = res;
	if (--f->cqes > 0)
		return 0;
	if (w->failed)
		return w->failed;
	f->done = true;
	/* durable in order: a batch completed before an earlier one waits
	 * for it (a crash could still tear the earlier one, and recovery
	 * then drops both) */
	int n = 0;
	while (w->fl_noted < w->fl_n && flight_at(w, w->fl_noted)->done) {
		flight_note(w, flight_at(w, w->fl_noted));
		w->fl_noted++;
		n++;
	}
	return n;
}

int wal_for_each_durable(struct wal *w,
			 int (*fn)(void *arg, const struct wal_rec *r), void *arg)
{
	PARLEY_ASSERT(w->fl_noted > 0 && !w->failed);
	struct wal_flight *f = flight_at(w, 0);
	struct wal_buf *b = f->b;
	int rc = 0;
	for (uint32_t off = 0; off < b->len && !rc;) {
		uint8_t *h = b->p + off;
		uint32_t len = le_get32(h + 4);
		if (le_get16(h + 28) != WAL_REC_SEAL) {
			struct wal_rec r = rec_view(h, w->seg_name, 0);
			rc = fn(arg, &r);
		}
		off = (uint32_t)align_up(off + WAL_REC_HDR + len, 8);
	}
	f->b = NULL;
	w->fl_head = (w->fl_head + 1) % WAL_FLIGHT_MAX;
	w->fl_n--;
	w->fl_noted--;
	return rc;
}

/* Releases one sealed segment: back to a spare (recycled, so the next
 * roll overwrites written blocks) or unlinked when spares are plentiful.
 * Prep thread. */
static int seg_release(struct wal *w, uint64_t seq)
{
	char from[600], to[600];
	seg_path(w, seq, from, sizeof from);
	pthread_mutex_lock(&w->spare_mu);
	bool recycle = w->spares_ready < 2;
	uint32_t n = recycle ? w->spare_next++ : 0;
	pthread_mutex_unlock(&w->spare_mu);
	int rc;
	if (recycle) {
		snprintf(to, sizeof to, "%s/spare-%u.log", w->dir, n);
		rc = w->io->ops->rename(w->io, from, to);
	} else {
		rc = w->io->ops->unlink(w->io, from);
	}
	if (rc == -ENOENT) {
		/* Already gone: what the release wants. Retrying can never
		 * succeed, and a map kept for a missing file would hold the
		 * WAL's segment count up for ever. Said, because nothing but a
		 * release should remove a listed segment (the one known cause,
		 * a second preparation of a segment already taken by a roll,
		 * is closed in roll_take: the warning would show a new one). */
		PLOG_W("wal", "segment to release is already gone", "dir=%s "
		       "seq=%016" PRIx64, w->dir, seq);
		return w->io->ops->fsync_dir(w->io, w->dir);
	}
	if (!rc)
		rc = w->io->ops->fsync_dir(w->io, w->dir);
	if (!rc && recycle) {
		pthread_mutex_lock(&w->spare_mu);
		w->spares_ready++;
		pthread_mutex_unlock(&w->spare_mu);
	}
	return rc;
}

/* Prep thread: the queued release. The segments flagged `drop` (set by
 * the shard, which leaves them alone until wal_poll) are listed; the mark
 * without them is stored first (a crash between the two leaves unlisted
 * segments behind, harmless, never a listed one missing; no mark, no
 * release), then each is released. wal_poll applies the outcome. */
static void bg_release(struct wal *w)
{
	pthread_mutex_lock(&w->maps_mu);
	uint32_t n = 0;
	for (uint32_t i = 0; i < w->nmaps; i++)
		n += w->maps[i].drop;
	free(w->rel_seqs);
	free(w->rel_ok);
	w->rel_seqs = calloc(n ? n : 1, sizeof *w->rel_seqs);
	w->rel_ok = calloc(n ? n : 1, sizeof *w->rel_ok);
	w->rel_n = 0;
	for (uint32_t i = 0; i < w->nmaps && w->rel_seqs && w->rel_ok; i++)
		if (w->maps[i].drop)
			w->rel_seqs[w->rel_n++] = w->maps[i].seq;
	pthread_mutex_unlock(&w->maps_mu);
	w->rel_marked = false;
	if (!w->rel_seqs || !w->rel_ok || !w->rel_n)
		return;
	if (hwm_write(w, false, 0, true))
		return;
	w->rel_marked = true;
	for (uint32_t i = 0; i < w->rel_n; i++) {
		int rc = seg_release(w, w->rel_seqs[i]);
		if (rc)
			PLOG_W("wal", "segment release failed (retried later)",
			       "dir=%s seq=%016" PRIx64 " err=%s", w->dir,
			       w->rel_seqs[i], parley_errname(rc));
		w->rel_ok[i] = rc == 0;
	}
}

void wal_set_ring(struct wal *w, struct pio_ring *ring)
{
	w->ring = ring;
}

bool wal_busy(struct wal *w)
{
	if (w->fl_n >= WAL_FLIGHT_MAX)
		return true;
	/* behind a big batch, wait: group commit (WAL_PIPE_MAX_RECS) */
	if (w->fl_n > w->fl_noted &&
	    flight_at(w, w->fl_n - 1)->b->nrec > WAL_PIPE_MAX_RECS)
		return true;
	if (!w->roll_pending || w->failed)
		return false;
	/* a roll: only once the sealing batch is durable (a segment with
	 * records never follows an unsealed one), and the next segment is
	 * prepared */
	if (w->fl_n)
		return true;
	if (atomic_load(&w->next_ready))
		return false;
	/* waiting for the prepared segment: make sure its maker wakes us */
	pthread_mutex_lock(&w->spare_mu);
	bool busy = !w->next_f && !w->next_err;
	if (busy && !w->roll_wait) {
		w->roll_wait = true;
		pthread_cond_signal(&w->spare_cv);
	}
	pthread_mutex_unlock(&w->spare_mu);
	return busy;
}

int wal_poll(struct wal *w)
{
	if (!atomic_load_explicit(&w->bg_done, memory_order_acquire))
		return 0;
	pthread_mutex_lock(&w->spare_mu);
	bool done = w->rel_st == REL_DONE;
	atomic_store(&w->bg_done, false);
	pthread_mutex_unlock(&w->spare_mu);
	if (!done)
		return 0;
	int released = 0;
	uint32_t keep = 0;
	pthread_mutex_lock(&w->maps_mu);
	for (uint32_t i = 0; i < w->nmaps; i++) {
		struct wal_segmap *m = &w->maps[i];
		bool gone = false;
		for (uint32_t k = 0; m->drop && w->rel_marked && k < w->rel_n; k++)
			if (w->rel_seqs[k] == m->seq)
				gone = w->rel_ok[k];
		m->drop = false;
		if (gone && m->hold)
			PLOG_I("wal", "segment with a lost range released: "
			       "later starts do not find the loss again",
			       "dir=%s seq=%016" PRIx64, w->dir, m->seq);
		if (gone) {
			free(m->v);
			released++;
			w->stats.released++;
			continue;
		}
		w->maps[keep++] = *m;
	}
	w->nmaps = keep;
	pthread_mutex_unlock(&w->maps_mu);
	pthread_mutex_lock(&w->spare_mu);
	w->rel_st = REL_IDLE;
	pthread_mutex_unlock(&w->spare_mu);
	return released;
}

/*
 * Once the partitions that may have lost records in a damaged record
 * header are repaired (wal_release_damaged), the segments holding such
 * lost ranges go by the usual release rule; an active one is sealed first
 * (the next batch carries the seal, or a batch of the seal alone) and
 * rolled away from here when no batch comes, so it can be released like
 * any sealed one. Shard thread.
 */
static void purge_active(struct wal *w)
{
	if (w->hold_damaged || !w->seg || w->failed || w->read_only)
		return;
	pthread_mutex_lock(&w->maps_mu);
	const struct wal_segmap *m = segmap_find(w, w->seg_seq);
	bool held = m && m->hold;
	pthread_mutex_unlock(&w->maps_mu);
	if (!held)
		return;
	if (!w->roll_pending)
		w->seal_asap = true; /* the batch after the one in flight */
	else if (!w->fl_n && !w->open->nrec)
		(void)roll_take(w); /* -EAGAIN: at a later call */
}

int wal_release(struct wal *w, uint64_t (*flushed)(void *arg, uint32_t part),
		void *arg, uint32_t *pin, uint32_t pincap, uint32_t *npin,
		uint32_t *sealed_left)
{
	*npin = 0;
	*sealed_left = 0;
	if (w->read_only || w->maps_broken || w->failed)
		return 0;
	(void)wal_poll(w);
	purge_active(w);
	pthread_mutex_lock(&w->spare_mu);
	bool busy = w->rel_st != REL_IDLE;
	pthread_mutex_unlock(&w->spare_mu);
	uint32_t ndrop = 0;
	/* a sealed segment that held a lost range (its partitions are
	 * repaired now): its pinning partitions are reported as due at once,
	 * so that the caller's force-flush releases it soon and later starts
	 * do not find the loss again */
	bool purge = false;
	uint32_t npurge = 0;
	pthread_mutex_lock(&w->maps_mu);
	for (uint32_t i = 0; i < w->nmaps; i++) {
		struct wal_segmap *m = &w->maps[i];
		bool active = m->seq == w->seg_seq && w->seg;
		if (m->drop) /* a release in flight has it */
			continue;
		if (m->hold && w->hold_damaged)
			continue; /* the evidence of a lost range, for now */
		bool free_ok = !active && !busy;
		for (uint32_t k = 0; k < m->n && free_ok; k++)
			if (m->v[k].max > flushed(arg, m->v[k].part))
				free_ok = false;
		if (free_ok) {
			m->drop = true;
			ndrop++;
			continue;
		}
		if (!active && !purge && m->hold && !busy) {
			purge = true;
			for (uint32_t k = 0; k < m->n; k++)
				if (m->v[k].max > flushed(arg, m->v[k].part) &&
				    npurge < pincap)
					pin[npurge++] = m->v[k].part;
		}
		if (!active && *sealed_left == 0 && !m->drop && !purge) {
			/* the oldest kept: its pinning partitions, its age */
			bool pinned = false;
			for (uint32_t k = 0; k < m->n; k++)
				if (m->v[k].max > flushed(arg, m->v[k].part)) {
					pinned = true;
					if (*npin < pincap)
						pin[(*npin)++] = m->v[k].part;
				}
			if (pinned || !busy)
				*sealed_left = (uint32_t)PARLEY_MIN(
					w->seg_seq - m->seq, (uint64_t)UINT32_MAX);
		}
	}
	pthread_mutex_unlock(&w->maps_mu);
	if (purge) {
		*npin = npurge;
		*sealed_left = UINT32_MAX;
	}
	if (ndrop) {
		pthread_mutex_lock(&w->spare_mu);
		w->rel_st = REL_QUEUED;
		pthread_cond_signal(&w->spare_cv);
		pthread_mutex_unlock(&w->spare_mu);
	}
	return (int)ndrop;
}

void wal_release_damaged(struct wal *w)
{
	w->hold_damaged = false;
	purge_active(w);
}

/* Stops the prep thread (it finishes the job in hand). */
static void prep_stop(struct wal *w)
{
	if (!w->prep_running) { /* stepped: no more wal_prep_step work */
		w->stop = true;
		return;
	}
	pthread_mutex_lock(&w->spare_mu);
	w->stop = true;
	pthread_cond_broadcast(&w->spare_cv);
	pthread_mutex_unlock(&w->spare_mu);
	pthread_join(w->prep, NULL);
	w->prep_running = false;
}

int wal_mark_clean(struct wal *w)
{
	if (w->read_only || w->failed || w->fl_n || w->open->nrec ||
	    !w->seg)
		return 0;
	/* Nothing is appended any more: the background work ends here, and a
	 * clean stop leaves no prepared segment behind, so the highest
	 * wal-*.log is the active one (as tools and operators expect). */
	prep_stop(w);
	(void)wal_poll(w);
	if (w->rel_st == REL_QUEUED) { /* never started: the segments stay */
		pthread_mutex_lock(&w->maps_mu);
		for (uint32_t i = 0; i < w->nmaps; i++)
			w->maps[i].drop = false;
		pthread_mutex_unlock(&w->maps_mu);
		w->rel_st = REL_IDLE;
	}
	if (w->next_f) {
		char from[600], to[600];
		w->io->ops->close(w->io, w->next_f);
		w->next_f = NULL;
		atomic_store(&w->next_ready, false);
		seg_path(w, w->next_want, from, sizeof from);
		snprintf(to, sizeof to, "%s/spare-%u.log", w->dir, w->spare_next++);
		int rc = w->io->ops->rename(w->io, from, to);
		if (!rc)
			rc = w->io->ops->fsync_dir(w->io, w->dir);
		if (rc) /* recovery recognises a prepared segment anyway */
			PLOG_W("wal", "prepared segment not returned to the spares",
			       "dir=%s err=%s", w->dir, parley_errname(rc));
	}
	return hwm_write(w, true, 0, true);
}

uint32_t wal_segment_count(const struct wal *w)
{
	return w->nmaps;
}

void wal_get_stats(const struct wal *w, struct wal_stats *out)
{
	*out = w->stats;
}
