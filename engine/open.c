/*
 * open.c — pe_open (options, directory lock, MANIFEST, history then WAL
 * recovery per shard, threads), pe_close, pe_abort and freeing the engine.
 *
 * Recovery order per shard: every partition's history opens first (its
 * flushed index, stream continuations and idempotency records), then the
 * shard's WAL replays through the same apply function as the live path,
 * skipping records the history already holds.
 *
 * Threads: the controlling thread (pe_open/pe_close/pe_abort).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define DEF_PARTITIONS 64u
#define DEF_SHARDS 1u
#define DEF_MEMTABLE (64ull << 20)
#define DEF_IDEM_WINDOW (7ull * 24 * 3600 * 1000)
#define DEF_IDEM_MAX 1000000u
#define DEF_QUEUE 65536u
#define DEF_BLOCK_CACHE (64ull << 20)
#define DEF_COMPACTION_RATE (32ull << 20)
#define DEF_RETENTION_INTERVAL (3600ull * 1000)
#define DEF_WAL_PIN 2u
#define DEF_READ_THREADS 2u
#define DEF_READ_QUEUE 256u

/* A partition's history: at open, and again after a snapshot replaced
 * it (log/part_snap.c). */
int part_hist_open(struct pe_engine *e, struct shard *sh, struct part *p)
{
	char hd[700];
	snprintf(hd, sizeof hd, "%s/hist/%u", e->dir, p->id);
	if (!e->opt.read_only) {
		int rc = pio_dir_ensure(e->io, hd);
		if (rc)
			return rc;
	}
	struct hpart_opts ho = {
		.partition = p->id, .cache = sh->cache,
		.retention = e->retention.n ? &e->retention : NULL,
		.read_only = e->opt.read_only,
		.idem_window_ms = e->idem_window_ms,
		.filter = e->opt.compact_filter,
		.filter_arg = e->opt.compact_filter_arg};
	int rc = hpart_open(e->io, hd, &ho, &p->hist);
	if (rc == -PARLEY_ECORRUPT) {
		char f[64];
		snprintf(f, sizeof f, "hist/%u", p->id);
		part_mark_corrupt(p, f, 0,
				  "history segment, dictionary or HISTORY unreadable");
		return 0;
	}
	if (rc)
		return rc;
	p->flushed_index = hpart_manifest(p->hist)->flushed_index;
	p->last_index = p->flushed_index;
	/* the table the live engine had at the flushed index, from the
	 * segments' records in command time (idem.c), never the clock now */
	rc = idem_rebuild(p);
	if (rc == -PARLEY_ECORRUPT) {
		char f[64];
		snprintf(f, sizeof f, "hist/%u", p->id);
		part_mark_corrupt(p, f, 0, "idempotency section unreadable");
		return 0;
	}
	return rc;
}

static void engine_free(struct pe_engine *e)
{
	if (!e)
		return;
	if (e->parts) {
		for (uint32_t i = 0; i < e->nparts; i++) {
			struct part *p = &e->parts[i];
			if (p->hist) {
				if (p->fjob || p->cjob) /* abort: no file touched */
					hpart_abort(p->hist, p->fjob, p->cjob);
				else
					hpart_close(p->hist);
			}
			hist_job_fsrc_free(p->fsrc);
			hpart_man_free(p->cman);
			hpart_man_free(p->fman);
			part_raft_free(p);
			part_snap_free(p);
			struct req *lists[6] = {p->fwait_cur, p->fwait_next,
						p->cwait_cur, p->cwait_next,
						p->wait_head, p->prop_head};
			for (int l = 0; l < 6; l++) /* waiters only exist on abort */
				while (lists[l]) {
					struct req *n = lists[l]->next;
					api_req_free(lists[l]);
					lists[l] = n;
				}
			part_free_state(p);
		}
		free(e->parts);
	}
	if (e->shards) {
		for (uint32_t i = 0; i < e->nshards; i++) {
			struct shard *sh = &e->shards[i];
			struct req *lists[3] = {sh->in_head, sh->backlog,
						sh->rd_wait};
			for (int l = 0; l < 3; l++)
				while (lists[l]) {
					struct req *n = lists[l]->next;
					if (lists[l]->kind == REQ_UNSUBSCRIBE)
						sub_free(lists[l]->sub);
					if (lists[l]->kind == REQ_READ_DONE ||
					    lists[l]->kind == REQ_SUB_READ_DONE)
						hist_read_free(lists[l]); /* abort */
					else if (lists[l]->kind == REQ_SNAP_DONE)
						part_snap_job_free(lists[l]);
					else
						api_req_free(lists[l]);
					lists[l] = n;
				}
			if (sh->wal)
				wal_close(sh->wal);
			if (sh->ring)
				e->io->ops->ring_free(sh->ring);
			if (sh->cache)
				bcache_free(sh->cache);
			pthread_mutex_destroy(&sh->mu);
		}
		free(e->shards);
	}
	if (e->rules) {
		for (size_t i = 0; i < e->retention.n; i++)
			free((void *)e->rules[i].prefix);
		free(e->rules);
	}
	/* last: every WAL file is closed and no ring op is in flight */
	if (e->locked)
		e->io->ops->unlock(e->io, e->lock_token);
	if (e->own_io)
		pio_free(e->io);
	free(e);
}

/* pe_open, and pe_open_stepped (engine/step.c) with `st`: no threads. */
int engine_open(const struct pe_options *opt, const struct pe_stepper *st,
		struct pe_engine **out)
{
	if (!opt || !opt->dir || strlen(opt->dir) > 400 ||
	    (st && (!st->pick || !st->now_ns)))
		return -PARLEY_EINVAL;
	struct pe_engine *e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->opt = *opt;
	if (st)
		e->step = *st;
	snprintf(e->dir, sizeof e->dir, "%s", opt->dir);
	e->opt.dir = e->dir;
	if (!e->opt.memtable_bytes)
		e->opt.memtable_bytes = DEF_MEMTABLE;
	if (!e->opt.queue_depth)
		e->opt.queue_depth = DEF_QUEUE;
	if (!e->opt.block_cache_bytes)
		e->opt.block_cache_bytes = DEF_BLOCK_CACHE;
	if (!e->opt.compaction_rate)
		e->opt.compaction_rate = DEF_COMPACTION_RATE;
	if (!e->opt.retention_interval_ms)
		e->opt.retention_interval_ms = DEF_RETENTION_INTERVAL;
	if (!e->opt.wal_pin_segments)
		e->opt.wal_pin_segments = DEF_WAL_PIN;
	if (!e->opt.read_threads)
		e->opt.read_threads = DEF_READ_THREADS;
	if (!e->opt.read_queue_depth)
		e->opt.read_queue_depth = DEF_READ_QUEUE;
	if (e->opt.read_threads > PE_MAX_READ_THREADS) {
		free(e);
		return -PARLEY_EINVAL;
	}
	for (int i = 0; i < HW_COUNT; i++) {
		pthread_mutex_init(&e->hw[i].mu, NULL);
		pthread_cond_init(&e->hw[i].cv, NULL);
	}
	e->opt.retention = NULL;
	e->opt.nretention = 0;
	if (opt->nretention) {
		if (!opt->retention) {
			free(e);
			return -PARLEY_EINVAL;
		}
		e->rules = calloc(opt->nretention, sizeof *e->rules);
		if (!e->rules) {
			free(e);
			return -ENOMEM;
		}
		e->retention.rules = e->rules;
		for (size_t i = 0; i < opt->nretention; i++) {
			const struct pe_retention_rule *q = &opt->retention[i];
			uint8_t *pf = malloc(q->plen ? q->plen : 1);
			if (!pf || (q->plen && !q->prefix)) {
				free(pf);
				engine_free(e);
				return pf ? -PARLEY_EINVAL : -ENOMEM;
			}
			if (q->plen)
				memcpy(pf, q->prefix, q->plen);
			e->rules[i] = (struct retention_rule){
				.prefix = pf, .plen = q->plen,
				.max_age_ms = q->max_age_ms,
				.max_count = q->max_count};
			e->retention.n = i + 1;
		}
	}
	if (engine_cluster_init(e, opt->cluster)) {
		engine_free(e); /* no io, lock or shard yet */
		return -PARLEY_EINVAL;
	}
	e->opt.cluster = NULL; /* copied into e->cl */
	e->io = opt->io;
	if (!e->io) {
		e->io = pio_uring_new();
		if (!e->io) {
			free(e);
			return -ENOMEM;
		}
		e->own_io = true;
	}
	int rc = 0;
	if (!opt->read_only) {
		rc = pio_dir_ensure(e->io, e->dir);
		if (rc)
			goto fail;
	}
	/* One writer per data directory: a second process appending to the
	 * same WAL would interleave batches and corrupt it. Read-only opens
	 * (inspect) share the lock with each other, never with a writer. */
	rc = e->io->ops->lock(e->io, e->dir, !opt->read_only, &e->lock_token);
	if (rc) {
		if (rc == -PARLEY_ELOCKED)
			PLOG_E("engine", "data directory is locked by another "
			       "process (see its LOCK file for the pid)",
			       "dir=%s", e->dir);
		goto fail;
	}
	e->locked = true;
	bool exists;
	rc = manifest_read(e, &exists);
	if (rc)
		goto fail;
	if (exists) {
		if (opt->partitions && opt->partitions != e->nparts) {
			PLOG_E("engine", "partition count differs from the data "
			       "directory's", "dir=%s have=%u asked=%u", e->dir,
			       e->nparts, opt->partitions);
			rc = -PARLEY_EINVAL;
			goto fail;
		}
	} else {
		if (opt->read_only) {
			rc = -PARLEY_ENOTFOUND;
			goto fail;
		}
		e->nparts = opt->partitions ? opt->partitions : DEF_PARTITIONS;
		e->nshards = opt->shards ? opt->shards : DEF_SHARDS;
		e->idem_window_ms =
			opt->idem_window_ms ? opt->idem_window_ms : DEF_IDEM_WINDOW;
		e->idem_max = opt->idem_max_keys ? opt->idem_max_keys : DEF_IDEM_MAX;
		if (e->nparts > 65536 || e->nshards > 256 ||
		    e->nshards > e->nparts) {
			rc = -PARLEY_EINVAL;
			goto fail;
		}
		char wdir[600];
		snprintf(wdir, sizeof wdir, "%s/wal", e->dir);
		rc = pio_dir_ensure(e->io, wdir);
		if (rc)
			goto fail;
		rc = manifest_write(e);
		if (rc)
			goto fail;
	}
	e->parts = calloc(e->nparts, sizeof *e->parts);
	e->shards = calloc(e->nshards, sizeof *e->shards);
	if (!e->parts || !e->shards) {
		rc = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < e->nparts; i++) {
		e->parts[i].id = i;
		e->parts[i].cfg = (struct part_cfg){
			.idem_window_ms = e->idem_window_ms,
			.idem_max = e->idem_max};
	}
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct shard *sh = &e->shards[i];
		sh->e = e;
		sh->idx = i;
		pthread_mutex_init(&sh->mu, NULL);
		rc = e->io->ops->ring_new(e->io, RING_DEPTH, &sh->ring);
		if (rc)
			goto fail;
		/* shared by the shard thread and the read pool */
		rc = bcache_new_sharded(e->opt.block_cache_bytes,
					BCACHE_LOCK_SHARDS, &sh->cache);
		if (rc)
			goto fail;
		if (!opt->read_only) {
			char hdir[600];
			snprintf(hdir, sizeof hdir, "%s/hist", e->dir);
			rc = pio_dir_ensure(e->io, hdir);
			if (rc)
				goto fail;
		}
		/* history first: WAL replay skips what segments already hold,
		 * continues streams from them and extends their idempotency */
		for (uint32_t p = i; p < e->nparts; p += e->nshards) {
			/* a snapshot install cut short is finished first */
			rc = part_snap_open(e, &e->parts[p]);
			if (rc)
				goto fail;
			rc = part_hist_open(e, sh, &e->parts[p]);
			if (rc)
				goto fail;
		}
		char wdir[600];
		snprintf(wdir, sizeof wdir, "%s/wal/%u", e->dir, i);
		struct apply_ctx ctx = {.sh = sh, .live = false};
		struct wal_recovery rec = {.record = shard_apply_record,
					   .corrupt = shard_recover_corrupt,
					   .damaged = shard_recover_damaged,
					   .lost = shard_recover_lost,
					   .flushed = shard_recover_flushed,
					   .repair_from_peers = e->cl.conf.n > 1,
					   .arg = &ctx};
		struct wal_exec wx = {.now_ns = e->step.now_ns,
				      .arg = e->step.arg};
		rc = wal_open(e->io, wdir, e->opt.wal_segment_bytes,
			      opt->read_only, &rec, st ? &wx : NULL, &sh->wal);
		if (rc)
			goto fail;
		wal_set_ring(sh->wal, sh->ring);
		/* every partition becomes a Raft group of one on this log: the
		 * group elects itself (a new term, its no-op in the WAL) and
		 * its commit applies the recovered log in index order */
		rc = part_raft_hs_load(e, sh);
		if (rc)
			goto fail;
		for (uint32_t p = i; p < e->nparts; p += e->nshards) {
			struct part *pt = &e->parts[p];
			if (pt->corrupt) {
				part_raft_free(pt);
			} else if (opt->read_only) {
				part_raft_apply_recovered(sh, pt);
			} else {
				rc = part_raft_open(e, pt);
				if (rc)
					goto fail;
			}
		}
		/* a group of one elects itself now; with several voters the
		 * groups start as followers and elect by ticks (replication) */
		if (!opt->read_only && e->cl.conf.n == 1) {
			rc = part_raft_elect(sh);
			if (rc)
				goto fail;
		}
	}
	if (st) { /* stepped: the shards' loops run in pe_step */
		for (uint32_t i = 0; i < e->nshards; i++)
			shard_begin(&e->shards[i]);
		goto opened;
	}
	rc = hist_workers_start(e);
	if (!rc)
		rc = rpool_start(&e->rpool, e->opt.read_threads);
	if (rc)
		goto fail;
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct shard *sh = &e->shards[i];
		if (pthread_create(&sh->thread, NULL, shard_main, sh)) {
			rc = -errno;
			goto fail;
		}
		sh->started = true;
	}
opened:;
	uint64_t streams = 0, entries = 0, corrupt = 0;
	for (uint32_t i = 0; i < e->nparts; i++) {
		streams += e->parts[i].nstreams;
		entries += e->parts[i].nentries;
		corrupt += e->parts[i].corrupt;
	}
	PLOG_I("engine", "opened", "dir=%s partitions=%u shards=%u streams=%" PRIu64
	       " entries=%" PRIu64 " corrupt_partitions=%" PRIu64, e->dir,
	       e->nparts, e->nshards, streams, entries, corrupt);
	*out = e;
	return 0;
fail:
	if (e->shards && !e->step.pick) {
		atomic_store(&e->aborting, true);
		for (uint32_t i = 0; i < e->nshards; i++)
			if (e->shards[i].started) {
				e->io->ops->ring_wake(e->shards[i].ring);
				pthread_join(e->shards[i].thread, NULL);
			}
	}
	hist_workers_stop(e);
	rpool_stop(&e->rpool);
	engine_free(e);
	return rc;
}

int pe_open(const struct pe_options *opt, struct pe_engine **out)
{
	return engine_open(opt, NULL, out);
}

void pe_close(struct pe_engine *e)
{
	if (!e)
		return;
	atomic_store(&e->closing, true);
	for (uint32_t i = 0; i < e->nshards; i++) {
		struct req *r = api_part_req(REQ_STOP, i);
		PARLEY_ASSERT(r);
		PARLEY_ASSERT(shard_push(e, r) == 0);
	}
	if (e->step.pick)
		engine_step_stop(e);
	else
		for (uint32_t i = 0; i < e->nshards; i++)
			pthread_join(e->shards[i].thread, NULL);
	hist_workers_stop(e); /* idle: the shards waited for their jobs */
	rpool_stop(&e->rpool); /* idle: the shards waited for their reads */
	engine_free(e);
}

void pe_abort(struct pe_engine *e)
{
	if (!e)
		return;
	atomic_store(&e->closing, true);
	atomic_store(&e->aborting, true);
	for (uint32_t i = 0; i < e->nshards && !e->step.pick; i++) {
		e->io->ops->ring_wake(e->shards[i].ring);
		pthread_join(e->shards[i].thread, NULL);
	}
	hist_workers_stop(e); /* a running job ends early (its files are orphans) */
	rpool_stop(&e->rpool); /* queued reads dropped, no callback (a crash) */
	engine_free(e);
}
