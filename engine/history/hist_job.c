/*
 * hist_job.c — a partition's history jobs (flush, compaction) from the
 * shard's side: starting them, the worker threads that run them, and their
 * commit back on the shard; plus WAL release, forced flushes of partitions
 * that pin the WAL, and periodic retention.
 *
 * History jobs run on two worker threads (struct hworker: HW_FLUSH and
 * HW_COMPACT, so flushes never queue behind a throttled compaction) and
 * come back to the shard as REQ_HIST_DONE (from = enum hist_job_kind) for
 * their commit. Each partition has two lanes, each an explicit state
 * machine (part->flush_st, part->compact_st); every transition below is
 * made on the shard thread:
 *
 *  flush lane                          compaction lane
 *
 *  FLUSH_IDLE <─────────────────┐      COMPACT_IDLE <──────────────────┐
 *    │ part_flush_start:        │        │ part_compact_start:         │
 *    │ freeze memtable (fsrc),  │        │ hpart_compact_begin         │
 *    │ hpart_flush_begin        │        ▼                             │
 *    │ (nothing to write: only  │      COMPACT_RUNNING                 │
 *    │  the flushed index, ─────┼─┐      │ worker: hpart_compact_run   │
 *    ▼  straight to STORING)    │ │      │ REQ_HIST_DONE(COMPACT)      │
 *  FLUSH_RUNNING                │ │      ├─ flush STORING ─┐           │
 *    │ worker: hpart_flush_run  │ │      │                 ▼           │
 *    │ REQ_HIST_DONE(FLUSH)     │ │      │      COMPACT_DEFERRED       │
 *    ├─ compaction STORING ─┐   │ │      │        │ (that store        │
 *    │                      ▼   │ │      │        │  installed)        │
 *    │        FLUSH_DEFERRED    │ │      ▼        ▼                    │
 *    │          │ (that store   │ │    hpart_compact_prepare ────fail──┤
 *    │          │  installed)   │ │      ▼                             │
 *    ▼          ▼               │ │    COMPACT_STORING                 │
 *  hpart_flush_prepare          │ │      │ worker: hpart_compact_store │
 *    ▼                          │ │      │ (manifest, output's reader) │
 *  FLUSH_STORING <──────────────┼─┘      │ REQ_HIST_DONE(COMPACT_STORE)│
 *    │ flush worker:            │        │ hpart_compact_install,      │
 *    │ hpart_flush_store        │        │ inputs' and retired dicts'  │
 *    │ (manifest, new reader)   │        │ removal queued (HJOB_REMOVE_│
 *    │ REQ_HIST_DONE(FLUSH_STORE)        │ FILES/_DICTS, no hand-back) │
 *    ▼                          │        └─────────────────────────────┘
 *  part_flush_finish:           │          └─► a DEFERRED flush stores
 *  hpart_flush_install, drop the│
 *  frozen prefix, wal_release ──┘ (and a DEFERRED compaction stores)
 *
 * A failed job (run, prepare or store) skips to part_flush_finish /
 * part_compact_finish, which abandon it. The shard thread never waits on
 * the disk here: the segment write, dictionary training, every manifest
 * store, the new readers' opens and every file removal run on a worker.
 *
 * One manifest store at a time per partition: nothing stores HISTORY
 * while the other lane is STORING (a flush waits in FLUSH_DEFERRED, a
 * compaction in COMPACT_DEFERRED; a flush with nothing to write returns
 * EAGAIN while a compaction stores). pe_flush_sync / pe_compact_sync
 * waiters queue on fwait_* / cwait_* and are answered when their lane
 * returns to IDLE.
 *
 * Invariants
 *   1. A flush freezes every entry applied up to part->last_index
 *      (flush lane not IDLE); the memtable drops them only after the segment is in
 *      the stored HISTORY manifest (flushed_index), and the WAL releases a
 *      segment only after that. Recovery skips records <= flushed_index.
 *   2. Entries named by a frozen flush are never freed while it runs.
 *   3. One manifest store at a time per partition (above).
 *
 * Threads: everything here runs on the partition's shard thread, except
 * hworker_main and what it calls (hpart_*_run, hpart_flush_store,
 * hpart_store, hpart_compact_store, hpart_remove_files/_dicts), which
 * touch only their job and the manifest prepared for it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engine_internal.h"

#define WAL_PIN_MAX 16u        /* partitions force-flushed per release round */

static int part_flush_start(struct shard *sh, struct part *p);
static void part_flush_finish(struct shard *sh, struct part *p);
static int part_compact_start(struct shard *sh, struct part *p, bool all);
static void part_compact_finish(struct shard *sh, struct part *p, int rc,
				size_t segs_before);

/* A flush job's source: the frozen memtable (entry pointers copied at
 * freeze; the entries themselves are immutable and not freed until the
 * commit), streams in segment key order. */
struct fsrc_str {
	struct stream *s;
	uint64_t first, last; /* frozen seq range */
	uint64_t off;         /* into pool */
};
struct fsrc {
	struct pe_engine *e;
	struct fsrc_str *v;
	size_t n;
	struct mentry **pool;
	size_t si;
	uint64_t ei;
};

void hist_job_fsrc_free(struct fsrc *f)
{
	if (!f)
		return;
	free(f->v);
	free(f->pool);
	free(f);
}

static int fsrc_next(void *arg, const uint8_t **key, size_t *klen,
		     struct pe_entry *out)
{
	struct fsrc *f = arg;
	if (atomic_load(&f->e->aborting))
		return -PARLEY_ECLOSED;
	while (f->si < f->n) {
		struct fsrc_str *st = &f->v[f->si];
		if (f->ei < st->last - st->first + 1) {
			mentry_to_pe(f->pool[st->off + f->ei++], out);
			*key = st->s->key; /* a stream's key never changes */
			*klen = st->s->klen;
			return 1;
		}
		f->si++;
		f->ei = 0;
	}
	return 0;
}

static int fsrc_rewind(void *arg)
{
	struct fsrc *f = arg;
	f->si = 0;
	f->ei = 0;
	return 0;
}

static int fsrc_cmp(const void *x, const void *y)
{
	const struct fsrc_str *a = x, *b = y;
	int c = memcmp(a->s->key, b->s->key, PARLEY_MIN(a->s->klen, b->s->klen));
	if (!c)
		c = a->s->klen < b->s->klen ? -1 : a->s->klen > b->s->klen;
	return c;
}

static void hworker_push(struct pe_engine *e, enum hist_worker w, uint32_t part,
			 enum hist_job_kind kind,
			 uint64_t *ids, size_t nids)
{
	struct hjob *j = calloc(1, sizeof *j);
	PARLEY_ASSERT(j);
	j->part = part;
	j->kind = kind;
	j->ids = ids;
	j->nids = nids;
	struct hworker *hw = &e->hw[w];
	pthread_mutex_lock(&hw->mu);
	if (hw->tail)
		hw->tail->next = j;
	else
		hw->head = j;
	hw->tail = j;
	pthread_cond_signal(&hw->cv);
	pthread_mutex_unlock(&hw->mu);
}

static void hist_sleep(void *arg, uint64_t ns)
{
	struct pe_engine *e = arg;
	/* closing: finish the job at full speed rather than hold up close */
	if (atomic_load(&e->closing) || atomic_load(&e->aborting))
		return;
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
			      .tv_nsec = (long)(ns % 1000000000u)};
	nanosleep(&ts, NULL);
}

/* Runs one job of a worker's queue (its thread, or stepped). */
static void hworker_run(struct hworker *hw, struct hjob *j)
{
	struct pe_engine *e = hw->e;
	struct part *p = &e->parts[j->part];
	if (j->kind == HJOB_REMOVE_FILES || j->kind == HJOB_REMOVE_DICTS) {
		/* no shard state involved: nothing to hand back */
		char hd[700];
		snprintf(hd, sizeof hd, "%s/hist/%u", e->dir, j->part);
		if (j->kind == HJOB_REMOVE_FILES)
			(void)hpart_remove_files(e->io, hd, j->ids, j->nids);
		else
			(void)hpart_remove_dicts(e->io, hd, j->ids, j->nids);
		free(j->ids);
		free(j);
		return;
	}
	if (j->kind == HJOB_FLUSH) {
		struct hpart_src src = {.next = fsrc_next,
					.rewind = fsrc_rewind,
					.arg = p->fsrc};
		p->flush_rc = hpart_flush_run(p->fjob, &src);
	} else if (j->kind == HJOB_FLUSH_STORE) { /* off the shard too */
		/* a membership change the flush covers is durable in
		 * conf/<p> before the manifest lets its WAL record go */
		p->flush_rc = part_conf_flush_write(e, p);
		if (!p->flush_rc)
			p->flush_rc = p->fjob ? hpart_flush_store(p->fjob, p->fman)
					      : hpart_store(p->hist, p->fman);
	} else if (j->kind == HJOB_COMPACT) {
		p->compact_rc = hpart_compact_run(p->cjob, NULL);
	} else { /* HJOB_COMPACT_STORE: the manifest store, off the shard */
		p->compact_rc = hpart_compact_store(p->cjob, p->cman);
	}
	struct req *r = api_part_req(REQ_HIST_DONE, j->part);
	PARLEY_ASSERT(r);
	r->from = (uint64_t)j->kind;
	free(j);
	if (!atomic_load(&e->aborting))
		PARLEY_ASSERT(shard_push(e, r) == 0);
	else
		free(r);
}

static struct hjob *hworker_pop(struct hworker *hw)
{
	struct hjob *j = hw->head;
	if (j) {
		hw->head = j->next;
		if (!hw->head)
			hw->tail = NULL;
	}
	return j;
}

static void hworker_drop(struct hworker *hw)
{
	/* jobs never started are dropped (removals: the next open's cleanup
	 * deletes those files) */
	struct hjob *j;
	while ((j = hworker_pop(hw))) {
		free(j->ids);
		free(j);
	}
}

static void *hworker_main(void *arg)
{
	struct hworker *hw = arg;
	struct pe_engine *e = hw->e;
	/* Compaction is background work: on a machine with few cores its
	 * compression must not take CPU from the shards serving appends
	 * (Linux: nice applies per thread). Flushes keep normal priority:
	 * they free memtable memory appends wait for. */
	if (hw == &e->hw[HW_COMPACT] && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10))
		PLOG_D("engine", "compaction thread keeps normal priority",
		       "err=%s", parley_errname(-errno));
	pthread_mutex_lock(&hw->mu);
	for (;;) {
		while (!hw->head && !hw->stop)
			pthread_cond_wait(&hw->cv, &hw->mu);
		if (hw->stop)
			break;
		struct hjob *j = hworker_pop(hw);
		pthread_mutex_unlock(&hw->mu);
		hworker_run(hw, j);
		pthread_mutex_lock(&hw->mu);
	}
	hworker_drop(hw);
	pthread_mutex_unlock(&hw->mu);
	return NULL;
}

/* Stepped execution: runs the worker's next job, if any; true if it did. */
bool hworker_step(struct pe_engine *e, int i)
{
	struct hworker *hw = &e->hw[i];
	hw->e = e;
	pthread_mutex_lock(&hw->mu);
	struct hjob *j = hw->stop ? NULL : hworker_pop(hw);
	pthread_mutex_unlock(&hw->mu);
	if (!j)
		return false;
	hworker_run(hw, j);
	return true;
}

static void answer_int(struct req *r, int rc)
{
	*(int *)r->out = rc;
	r->cb.generic(r->arg);
	free(r);
}

static void answer_all(struct req **list, int rc)
{
	struct req *r = *list;
	*list = NULL;
	while (r) {
		struct req *n = r->next;
		answer_int(r, rc);
		r = n;
	}
}

/* May a history job (flush or compaction) start on this partition now?
 * 0, or the error the caller reports. */
static int part_hist_job_check(const struct shard *sh, const struct part *p,
			       bool busy)
{
	const struct pe_engine *e = sh->e;
	if (p->corrupt)
		return -PARLEY_ECORRUPT;
	if (e->opt.read_only || !p->hist)
		return -PARLEY_EPERM;
	if (sh->stopping || atomic_load(&e->closing))
		return -PARLEY_ECLOSED;
	/* a snapshot job works on the partition's history directory */
	if (busy || part_snap_busy(p))
		return -PARLEY_EAGAIN;
	return 0;
}

/*
 * Freezes the partition's memtable and hands a flush job to the worker.
 * Returns 0 (started: finish_flush will run), 1 (nothing to write; the
 * flushed index was brought up to date here), or a negative error.
 */
static int part_flush_start(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	int crc = part_hist_job_check(sh, p, p->flush_st != FLUSH_IDLE);
	if (crc)
		return crc;
	if (p->nentries == 0) {
		/* only deletes or duplicates were logged: no segment, but the
		 * marks and the flushed index are stored so the WAL can go */
		if (p->last_index <= p->flushed_index)
			return 1;
		if (p->compact_st == COMPACT_STORING)
			return -PARLEY_EAGAIN; /* one manifest store at a time */
		int rc = hpart_flushed_prepare(p->hist, p->last_index, &p->fman);
		if (rc)
			return rc;
		p->flush_rc = 0;
		p->flush_st = FLUSH_STORING; /* a store with no segment */
		part_conf_flush_begin(p); /* an applied conf, written first */
		hworker_push(e, HW_FLUSH, p->id, HJOB_FLUSH_STORE, NULL, 0);
		return 0;
	}
	struct fsrc *f = calloc(1, sizeof *f);
	if (!f)
		return -PARLEY_ENOMEM;
	f->e = e;
	size_t ns = 0;
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext)
			ns += s->nents > 0;
	f->v = calloc(ns ? ns : 1, sizeof *f->v);
	f->pool = malloc((p->nentries ? p->nentries : 1) * sizeof *f->pool);
	if (!f->v || !f->pool) {
		hist_job_fsrc_free(f);
		return -PARLEY_ENOMEM;
	}
	uint64_t off = 0;
	for (uint64_t b = 0; b < p->nsb; b++)
		for (struct stream *s = p->sbuckets[b]; s; s = s->hnext) {
			if (!s->nents)
				continue;
			PARLEY_ASSERT(s->mem_first + s->nents - 1 == s->last_seq);
			PARLEY_ASSERT(off + s->nents <= p->nentries);
			f->v[f->n++] = (struct fsrc_str){
				.s = s, .first = s->mem_first,
				.last = s->last_seq, .off = off};
			memcpy(f->pool + off, s->ents, s->nents * sizeof *s->ents);
			off += s->nents;
		}
	qsort(f->v, f->n, sizeof *f->v, fsrc_cmp);
	int rc = hpart_flush_begin(p->hist, p->last_index, &p->fjob);
	if (rc) {
		hist_job_fsrc_free(f);
		return rc;
	}
	p->fsrc = f;
	p->flush_st = FLUSH_RUNNING;
	hworker_push(e, HW_FLUSH, p->id, HJOB_FLUSH, NULL, 0);
	return 0;
}

/* Retired files of p's history go to the compaction worker for removal. */
static void part_push_removals(struct shard *sh, struct part *p)
{
	uint64_t *ids = NULL;
	size_t n = hpart_take_dict_removals(p->hist, &ids);
	if (n)
		hworker_push(sh->e, HW_COMPACT, p->id, HJOB_REMOVE_DICTS, ids, n);
	else
		free(ids);
}

/* The flush's segment is written (FLUSH_RUNNING or FLUSH_DEFERRED, no
 * compaction store in flight): its manifest is prepared here and stored by
 * the flush worker, off the shard (FLUSH_STORING). */
static void part_flush_store_begin(struct shard *sh, struct part *p)
{
	PARLEY_ASSERT(p->compact_st != COMPACT_STORING && p->fjob);
	if (!p->flush_rc && !atomic_load(&sh->e->aborting)) {
		int rc = hpart_flush_prepare(p->hist, p->fjob, &p->fman);
		if (!rc) {
			p->flush_st = FLUSH_STORING;
			part_conf_flush_begin(p); /* an applied conf, first */
			hworker_push(sh->e, HW_FLUSH, p->id, HJOB_FLUSH_STORE, NULL, 0);
			return;
		}
		p->flush_rc = rc;
	}
	if (!p->flush_rc)
		p->flush_rc = -PARLEY_ECLOSED;
	part_flush_finish(sh, p);
}

static void part_compact_store_begin(struct shard *sh, struct part *p);

/* The flush lane ends (the store done, or the job failed before it):
 * install or abandon, drop the flushed prefix of the memtable, release the
 * WAL, answer the waiters. */
static void part_flush_finish(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	int rc = p->flush_rc;
	struct hpart_flush_result fr = {0};
	PARLEY_ASSERT(p->flush_st != FLUSH_IDLE && p->compact_st != COMPACT_STORING);
	part_conf_flush_done(p, rc);
	if (p->fjob) {
		if (!rc && p->fman) {
			rc = hpart_flush_install(p->hist, p->fjob, p->fman, &fr);
			p->fman = NULL;
			if (rc == -PARLEY_ECORRUPT) { /* committed, but unreadable */
				char f[64];
				snprintf(f, sizeof f, "hist/%u", p->id);
				part_mark_corrupt(p, f, 0, "new history segment unreadable");
			}
		} else {
			if (!rc)
				rc = -PARLEY_ECLOSED;
			hpart_man_free(p->fman);
			p->fman = NULL;
			hpart_flush_abandon(p->hist, p->fjob);
		}
	} else if (!rc) { /* the flushed index alone */
		hpart_flushed_install(p->hist, p->fman);
		p->fman = NULL;
		fr.flushed_index = hpart_manifest(p->hist)->flushed_index;
	} else {
		hpart_man_free(p->fman);
		p->fman = NULL;
	}
	p->fjob = NULL;
	p->flush_st = FLUSH_IDLE;
	struct fsrc *f = p->fsrc;
	p->fsrc = NULL;
	if (!rc) {
		/* Only what this flush wrote leaves the memtable. Entries
		 * deleted meanwhile but appended after the freeze stay until
		 * the next flush writes them (hidden by the deletion mark):
		 * a segment must hold the stream's last seq before the WAL
		 * records that hold it can go, or a restart rebuilds the
		 * stream from the segments with a lower last seq and hands
		 * out its seqs again (it used to drop them here, through the
		 * first visible seq: the engine simulator's seed 100017,
		 * test_step's delete_during_a_flush_keeps_the_last_seq). */
		for (size_t i = 0; f && i < f->n; i++)
			stream_drop_through(p, f->v[i].s, f->v[i].last);
		p->flushed_index = PARLEY_MAX(p->flushed_index, fr.flushed_index);
		if (f)
			p->flushes++;
		part_push_removals(sh, p);
	} else if (rc != -PARLEY_ECLOSED) {
		PLOG_E("engine", "history flush failed (retried later)",
		       "partition=%u err=%s", p->id, parley_errname(rc));
	}
	hist_job_fsrc_free(f);
	answer_all(&p->fwait_cur, rc);
	if (p->compact_st == COMPACT_DEFERRED) /* its store waited for this one */
		part_compact_store_begin(sh, p);
	if (!rc) {
		hist_job_wal_release(sh);
		if (!e->opt.no_auto_compact)
			(void)part_compact_start(sh, p, false);
	}
	if (p->fwait_next && p->flush_st == FLUSH_IDLE) {
		p->fwait_cur = p->fwait_next;
		p->fwait_next = NULL;
		int s2 = part_flush_start(sh, p);
		if (s2 != 0)
			answer_all(&p->fwait_cur, s2 == 1 ? 0 : s2);
	}
}

/* Returns 0 (started), 1 (nothing worth merging), or a negative error. */
static int part_compact_start(struct shard *sh, struct part *p, bool all)
{
	struct pe_engine *e = sh->e;
	int crc = part_hist_job_check(sh, p, p->compact_st != COMPACT_IDLE);
	if (crc)
		return crc;
	/* The idempotency window's clock: the command time history has
	 * reached, not the live table's (p->idem_clock). A restart rebuilds
	 * the table as of the flushed index and replays the WAL above it:
	 * those replayed commands decide duplicates with records the live
	 * table had at their time, which may be older than the live clock
	 * allows. Dropping them by the live clock let a replayed retry of a
	 * deleted (and purged) entry's id append anew: seqs renumbered,
	 * acknowledged entries read with other bytes (the engine
	 * simulator's seed 100019). */
	uint64_t hclock = idem_history_clock(p);
	if (hclock == UINT64_MAX)
		return -PARLEY_ENOMEM;
	struct hpart_compact_opts o = {
		.all = all, .now_ms = engine_clock(e),
		.idem_now_ms = PARLEY_MIN(p->idem_clock, hclock ? hclock : 1),
		.rate_bytes_per_s = e->opt.compaction_rate,
		.sleep_ns = hist_sleep, .sleep_arg = e};
	int rc = hpart_compact_begin(p->hist, &o, &p->cjob);
	if (rc == -PARLEY_EAGAIN)
		return 1;
	if (rc)
		return rc;
	p->compact_st = COMPACT_RUNNING;
	hworker_push(e, HW_COMPACT, p->id, HJOB_COMPACT, NULL, 0);
	return 0;
}

/* The compaction ran (worker): build its manifest and hand the store to
 * the worker too, so the shard never waits for those fsyncs. */
static void part_compact_ran(struct shard *sh, struct part *p)
{
	if (!p->compact_rc && p->flush_st == FLUSH_STORING) {
		p->compact_st = COMPACT_DEFERRED; /* one manifest store at a time */
		return;
	}
	part_compact_store_begin(sh, p);
}

/* COMPACT_RUNNING or COMPACT_DEFERRED; no flush store in flight unless
 * the compaction failed (then nothing is stored: its output is removed).
 * A compaction that failed (ENOSPC) while a flush's store was in flight
 * used to trip the assertion and abort the process (the engine simulator,
 * with history workers slowed down). */
static void part_compact_store_begin(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	int rc = p->compact_rc;
	PARLEY_ASSERT(rc || p->flush_st != FLUSH_STORING);
	if (!rc && !atomic_load(&e->aborting)) {
		rc = hpart_compact_prepare(p->hist, p->cjob, &p->cman);
		if (!rc) {
			p->compact_st = COMPACT_STORING;
			hworker_push(e, HW_COMPACT, p->id, HJOB_COMPACT_STORE, NULL, 0);
			return;
		}
	}
	p->compact_rc = rc ? rc : -PARLEY_ECLOSED;
	hpart_compact_abandon(p->hist, p->cjob);
	p->cjob = NULL;
	p->compact_st = COMPACT_IDLE;
	part_compact_finish(sh, p, p->compact_rc, 0);
}

/* The manifest is stored (or failed): install it on the shard. */
static void part_compact_stored(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	int rc = p->compact_rc;
	size_t segs_before = hpart_manifest(p->hist)->nsegs;
	PARLEY_ASSERT(p->compact_st == COMPACT_STORING);
	if (!rc) {
		uint64_t *gone = NULL;
		size_t ngone = 0;
		/* the inputs' unlink + fsync-dir go to the worker as well */
		rc = hpart_compact_install(p->hist, p->cjob, p->cman, &gone, &ngone);
		if (gone && ngone)
			hworker_push(e, HW_COMPACT, p->id, HJOB_REMOVE_FILES, gone, ngone);
		else
			free(gone);
		part_push_removals(sh, p);
		if (rc == -PARLEY_ECORRUPT) {
			char f[64];
			snprintf(f, sizeof f, "hist/%u", p->id);
			part_mark_corrupt(p, f, 0, "compacted segment unreadable");
		}
	} else {
		hpart_man_free(p->cman);
		hpart_compact_abandon(p->hist, p->cjob);
	}
	p->cman = NULL;
	p->cjob = NULL;
	p->compact_st = COMPACT_IDLE;
	part_compact_finish(sh, p, rc, segs_before);
	if (p->flush_st == FLUSH_DEFERRED) { /* its store waited for this one */
		part_flush_store_begin(sh, p);
	} else if (p->fwait_next && p->flush_st == FLUSH_IDLE) {
		p->fwait_cur = p->fwait_next;
		p->fwait_next = NULL;
		int s2 = part_flush_start(sh, p);
		if (s2 != 0)
			answer_all(&p->fwait_cur, s2 == 1 ? 0 : s2);
	}
}

static void part_compact_finish(struct shard *sh, struct part *p, int rc,
				size_t segs_before)
{
	struct pe_engine *e = sh->e;
	if (!rc) {
		p->compactions++;
		/* retention marks the compaction stored: streams the memtable
		 * knows see them at once (their subscribers get TRIMMED) */
		const struct hman *m = hpart_manifest(p->hist);
		for (size_t i = 0; i < m->nstreams; i++) {
			const struct hman_stream *ms = &m->streams[i];
			if (ms->first_retained <= 1)
				continue;
			struct stream *s = stream_get(p, ms->key, ms->klen, false);
			if (s && s->first_seq < ms->first_retained)
				s->first_seq = PARLEY_MIN(ms->first_retained,
							  s->last_seq + 1);
		}
	} else if (rc != -PARLEY_ECLOSED) {
		PLOG_E("engine", "history compaction failed (retried later)",
		       "partition=%u err=%s", p->id, parley_errname(rc));
	}
	answer_all(&p->cwait_cur, rc);
	if (p->cwait_next) {
		p->cwait_cur = p->cwait_next;
		p->cwait_next = NULL;
		bool all = p->cnext_all;
		p->cnext_all = false;
		int s2 = part_compact_start(sh, p, all);
		if (s2 != 0)
			answer_all(&p->cwait_cur, s2 == 1 ? 0 : s2);
	} else if (!rc && !e->opt.no_auto_compact &&
		   hpart_manifest(p->hist)->nsegs < segs_before) {
		(void)part_compact_start(sh, p, false); /* another tier may be full */
	}
}

void hist_job_done(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	enum hist_job_kind kind = (enum hist_job_kind)r->from;
	free(r);
	switch (kind) {
	case HJOB_FLUSH:
		PARLEY_ASSERT(p->flush_st == FLUSH_RUNNING);
		if (p->compact_st == COMPACT_STORING) {
			/* one store at a time, and a failed flush's finish
			 * waits too (it must not run under a compaction's
			 * store: engine simulator seed 100394, a flush that
			 * failed while one was in flight, aborted here);
			 * part_compact_stored resumes it */
			p->flush_st = FLUSH_DEFERRED;
		} else if (p->flush_rc) {
			part_flush_finish(sh, p);
		} else {
			part_flush_store_begin(sh, p);
		}
		break;
	case HJOB_FLUSH_STORE:
		PARLEY_ASSERT(p->flush_st == FLUSH_STORING);
		part_flush_finish(sh, p);
		break;
	case HJOB_COMPACT:
		PARLEY_ASSERT(p->compact_st == COMPACT_RUNNING);
		part_compact_ran(sh, p);
		break;
	case HJOB_COMPACT_STORE:
		part_compact_stored(sh, p);
		break;
	case HJOB_REMOVE_FILES: /* never handed back */
	case HJOB_REMOVE_DICTS:
		PARLEY_ASSERT(!"a file removal handed back to a shard");
		break;
	}
	hist_job_maybe_flush(sh); /* memory pressure goes on without appends */
}

void hist_job_flush_req(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	if (p->flush_st != FLUSH_IDLE || p->compact_st == COMPACT_STORING) {
		r->next = p->fwait_next;
		p->fwait_next = r;
		return;
	}
	int rc = part_flush_start(sh, p);
	if (rc == 0) {
		r->next = p->fwait_cur;
		p->fwait_cur = r;
		return;
	}
	answer_int(r, rc == 1 ? 0 : rc);
}

/* A flush of p without a waiter (a snapshot needs its history to reach
 * the log's compaction point, log/part_snap.c): 0 started, 1 nothing to
 * write, or a negative error (-PARLEY_EAGAIN while a job is in the way). */
int hist_job_flush_part(struct shard *sh, struct part *p)
{
	if (p->flush_st != FLUSH_IDLE || p->compact_st == COMPACT_STORING)
		return -PARLEY_EAGAIN;
	return part_flush_start(sh, p);
}

void hist_job_compact_req(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	bool all = r->from != 0;
	if (p->compact_st != COMPACT_IDLE) {
		p->cnext_all |= all;
		r->next = p->cwait_next;
		p->cwait_next = r;
		return;
	}
	int rc = part_compact_start(sh, p, all);
	if (rc == 0) {
		r->next = p->cwait_cur;
		p->cwait_cur = r;
		return;
	}
	answer_int(r, rc == 1 ? 0 : rc);
}

static uint64_t flushed_of(void *arg, uint32_t part)
{
	struct pe_engine *e = arg;
	if (part >= e->nparts)
		return UINT64_MAX; /* foreign record: ignored by recovery */
	return e->parts[part].flushed_index;
}

/* Releases WAL segments every partition has flushed past; when the oldest
 * segment still kept is more than wal_pin_segments rolls old, the
 * partitions pinning it are flushed (an idle partition must not pin the
 * disk forever). */
void hist_job_wal_release(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	if (e->opt.read_only || sh->fatal)
		return;
	for (int round = 0; round < 4; round++) {
		uint32_t pin[WAL_PIN_MAX], npin = 0, left = 0;
		int n = wal_release(sh->wal, flushed_of, e, pin, WAL_PIN_MAX,
				    &npin, &left);
		if (n > 0)
			PLOG_D("engine", "WAL segments queued for release", "shard=%u n=%d",
			       sh->idx, n);
		if (left <= e->opt.wal_pin_segments || e->opt.no_auto_flush)
			return;
		bool again = false;
		for (uint32_t i = 0; i < npin; i++) {
			if (pin[i] >= e->nparts)
				continue;
			struct part *p = &e->parts[pin[i]];
			if (p->flush_st != FLUSH_IDLE)
				continue;
			int rc = part_flush_start(sh, p);
			again |= rc == 1;
		}
		if (!again)
			return;
	}
}

/* After a durable batch or a history commit: partitions past half their
 * memtable flush; past half of the shard's share of memtable_total_bytes
 * the largest memtable flushes too (memory pressure). */
void hist_job_maybe_flush(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	uint64_t total = shard_publish_mem(sh);
	if (e->opt.read_only || e->opt.no_auto_flush || sh->stopping)
		return;
	struct part *big = NULL;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		if (p->flush_st != FLUSH_IDLE || p->corrupt)
			continue;
		if (p->mem_bytes > e->opt.memtable_bytes / 2)
			(void)part_flush_start(sh, p);
		else if (p->mem_bytes && (!big || p->mem_bytes > big->mem_bytes))
			big = p;
	}
	uint64_t share = e->opt.memtable_total_bytes / e->nshards;
	if (share && total > share / 2 && big)
		(void)part_flush_start(sh, big);
}

bool hist_job_busy(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards)
		if (e->parts[i].flush_st != FLUSH_IDLE ||
		    e->parts[i].compact_st != COMPACT_IDLE)
			return true;
	return false;
}

/* Periodic retention: a full compaction of every partition with segments. */
void hist_job_tick(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	if (!e->retention.n || e->opt.no_auto_compact || e->opt.read_only)
		return;
	uint64_t now = engine_mono_ns(e) / 1000000u;
	if (now < sh->next_tick_ms)
		return;
	sh->next_tick_ms = now + e->opt.retention_interval_ms;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		if (p->hist && hpart_manifest(p->hist)->nsegs)
			(void)part_compact_start(sh, p, true);
	}
}

int hist_job_tick_timeout(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	if (!e->retention.n || e->opt.no_auto_compact || e->opt.read_only)
		return -1;
	uint64_t now = engine_mono_ns(e) / 1000000u;
	if (now >= sh->next_tick_ms)
		return 0;
	return (int)PARLEY_MIN(sh->next_tick_ms - now, 60000u);
}

int hist_workers_start(struct pe_engine *e)
{
	for (int i = 0; i < HW_COUNT; i++) {
		struct hworker *hw = &e->hw[i];
		hw->e = e;
		if (pthread_create(&hw->thread, NULL, hworker_main, hw))
			return -errno;
		hw->started = true;
	}
	return 0;
}

void hist_workers_stop(struct pe_engine *e)
{
	for (int i = 0; i < HW_COUNT; i++) {
		struct hworker *hw = &e->hw[i];
		if (!hw->started) { /* stepped (or never started) */
			pthread_mutex_lock(&hw->mu);
			hworker_drop(hw);
			pthread_mutex_unlock(&hw->mu);
			continue;
		}
		pthread_mutex_lock(&hw->mu);
		hw->stop = true;
		pthread_cond_broadcast(&hw->cv);
		pthread_mutex_unlock(&hw->mu);
		pthread_join(hw->thread, NULL);
		hw->started = false;
	}
}
