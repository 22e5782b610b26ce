/*
 * engine_sim.c — the engine simulator (see engine_sim.h).
 *
 * What runs: the real engine through its public API (pe_open_stepped, pe_append,
 * pe_read_sync, pe_meta_sync, pe_delete_sync, pe_flush_sync,
 * pe_compact_sync, pe_abort, pe_close) on one pio_mem backend, with the
 * entry clock injected (opt.clock_ms reads the simulator's clock), against
 * a model kept here: per stream the list of acknowledged entries (seq =
 * index + 1), the first visible seq, and the producer ids used on it.
 *
 * One seeded PRNG picks every step: bursts of asynchronous appends to
 * many streams across partitions (idempotent or not, retries of old ids,
 * retries inside the same burst), reads forward and backward, deletes,
 * flushes and compactions (with retention rules on two key prefixes),
 * crashes (pe_abort + pio_mem_crash: unsynced bytes dropped, optionally a
 * torn tail) in the middle of a burst, clean reopens, disk faults aimed at
 * the WAL or at the history files (EIO on write or fsync, ENOSPC), and at
 * the end of some runs a bit flip in a stored file.
 *
 * Invariants (checked after every burst on the results, after every
 * reopen and every few steps on every stream, and at the end):
 *   1. Every acknowledged append is present at its seq with its bytes
 *      (payload, type, flags, producer), across crashes and reopens.
 *   2. Seqs are dense per stream; an acknowledged append gets exactly the
 *      next seq after what the stream held when it applied.
 *   3. An idempotent retry (same stream and producer id) of a committed
 *      append returns the original seq with `duplicate` set, in the same
 *      burst, after flushes and compactions, and after a reopen.
 *   4. An append that was not acknowledged (in flight at a crash, or failed
 *      by a fault) is either absent or present whole, in queue order,
 *      right after the acknowledged ones; never half-written, never with
 *      other bytes. What is found is adopted by the model.
 *   5. Disk faults produce errors (the engine may turn fatal; the
 *      simulator then reopens), never a wrong acknowledgement: an error
 *      with no fault armed since the last open fails the run.
 *   6. Reads (memtable and history alike) equal the model: forward reads
 *      below the first visible seq fail with ETRIMMED, pages are prefixes
 *      of the expected entries, meta agrees. Retention may raise a
 *      stream's first seq only over entries it allows to drop; nothing
 *      else ever disappears.
 *   7. After a bit flip in a stored file, every answer is either the
 *      model's data or a clear error (open fails, ECORRUPT); acknowledged
 *      data never silently goes missing or changes.
 *   8. Once the flipped bit is flipped back (the operator restored the
 *      file), everything acknowledged reads back: nothing the engine did
 *      while it ran on the damaged file made the loss permanent.
 *   9. A seed replays bit for bit (see Determinism below).
 *  10. The size limit (parley_engine.h): pe_append refuses an append
 *      whose encoded command is over PE_MAX_COMMAND at once with
 *      -PARLEY_ETOOBIG (nothing queued, no callback) and takes every
 *      other; no callback ever reports a size error. Bulk bursts (up to 4
 *      entries of 100..300 KB) land on both sides of it.
 *
 * Bugs this simulator found and what fixed them:
 *   - A flipped bit in the last WAL batch read as a torn tail; the mark
 *     (wal.hwm) reported the lost records, but recovery then zeroed the
 *     "torn" record and wrote the next batches over it, so restoring the
 *     file could not bring them back (invariant 8: what seed 3019 showed
 *     before runs replayed; reproduced by seeds 1, 3, 4 and 8 of
 *     test_engine_sim_flips, whose flips aim at the last batch). Fixed in
 *     wal_open: such a record is kept as found and new batches start
 *     after the mark's end (log/wal.c); test_wal's
 *     damaged_last_record_is_not_written_over. This step used to end the
 *     run and count the damage (flip_damage) instead of failing.
 *   - Runs did not replay: the engine's threads (shards, WAL prep, history
 *     workers) ran for real, and the engine MANIFEST stored the wall
 *     clock. Fixed by stepped execution (engine/step.c) and the injected
 *     clock in the MANIFEST.
 *   - Checker gaps once the engine's timers ran on the simulated clock:
 *     retention applied by a compaction the simulator did not ask for
 *     raised a stream's first seq, which backward reads and the stream
 *     listing reported as a mismatch (seed 100006 of the long tier, seed
 *     11 with flips), and so did a delete's result (seeds 100071,
 *     100076): accepted when retention allows it (invariant 6).
 *   - A stream's last seq recovered lower than acknowledged (seed 100017
 *     of the long tier: "meta last_seq 15, model 18"): a flush's commit
 *     dropped from the memtable, besides what it wrote, the entries
 *     deleted while it ran; the next flush moved the flushed index past
 *     their WAL records with no segment holding them, so a restart
 *     rebuilt the stream from the segments with last seq 15 and the next
 *     append would have reused seq 16. Fixed in the flush commit
 *     (history/hist_job.c); test_step's
 *     delete_during_a_flush_keeps_the_last_seq sets the race up exactly
 *     with a stepped engine (it fails with last_seq 15 on the old code),
 *     and the simulator's flush race (a flush started with
 *     pe_flush_start, its job held while a burst and a delete of the
 *     newest entries apply, then a flush and a restart) finds it in
 *     seeds 1, 4 and 5 of test_engine_sim ("meta last_seq 73, model 76").
 *   - An assertion (a process abort in production) when a compaction
 *     failed (ENOSPC) while a flush's manifest store was in flight (seed 3
 *     once history workers could be slowed down): fixed in
 *     part_compact_store_begin (history/hist_job.c).
 *   - Acknowledged entries read back with other bytes after a compaction
 *     and a restart (long tier seeds 100016 and 100019, with the
 *     simulator as of the compaction-assertion fix; the workload has
 *     changed since): compaction dropped idempotency records by the live
 *     table's clock, while a restart rebuilds the table as of the flushed
 *     index and replays the WAL above it, whose commands may still need
 *     them (a retry of a deleted entry's id, a duplicate when it applied,
 *     at seq 116 of s/6 between acknowledged 115 and 116). Compaction now
 *     uses the command time history has reached (part_compact_start);
 *     both seeds pass with that simulator then.
 *   - Seeds 5 and 22: a bounded idempotency table rebuilt differently at
 *     open (see below).
 *   - An append accepted and then failed for its size (long tier seed
 *     100169, step 984: "append to s/9 failed with too large and no fault
 *     armed"): four entries of 1,072,457 payload bytes, a 1,072,530-byte
 *     Raft entry. pe_append took commands up to 2 MiB, the Raft core
 *     refuses an entry over 1 MiB at propose. Fixed by one limit, the
 *     Raft entry, checked in pe_append (parley_engine.h, "Size limits");
 *     test_engine_limits, and the seed in test_engine_sim_regress.
 *   - A flush that failed while a compaction's manifest store was in
 *     flight (long tier seed 100394, step 516): hist_job_done finished it
 *     at once, under the store, and part_flush_finish's assertion
 *     (flush_st != FLUSH_IDLE && compact_st != COMPACT_STORING) aborted.
 *     A failed flush now waits in FLUSH_DEFERRED like a written one, and
 *     part_compact_stored resumes it; the seed in
 *     test_engine_sim_regress.
 * Deliberately broken engines it catches (tried by hand): the flush
 * commit dropping deleted entries it did not write (above); a WAL batch
 * acknowledged without its fdatasync (seed 1, step 3: the lost records
 * reported as corruption after the crash); idempotency forgetting early
 * ids (seed 1, step 1: a committed id appended again); the recovery that
 * wrote over a damaged last record (above); the wall-clock MANIFEST time
 * (test_engine_sim_replay: the two runs' disk images differ).
 *
 * Bounded idempotency table: a quarter of the seeds (by the seed's draw)
 * run with idem_max_keys of 8..71 and a window of 5..34 min, so that a
 * retry of an old id may be forgotten and appended anew; every restart
 * must then keep the live table's decisions (seeds 5 and 22 used to find
 * acknowledged entries renumbered after a restart, when open rebuilt a
 * different table). PARLEY_ESIM_IDEM_BOUNDED=0 turns it off, =1 keeps the
 * default (the draw decides); the draws happen either way, so that the
 * rest of a seed's workload does not change.
 *
 * Determinism: a seed replays bit for bit. The engine runs stepped
 * (pe_open_stepped, engine/step.c): it starts no thread; every round of a
 * shard's loop, unit of a WAL's background preparation (next segment,
 * release, periodic high-water mark, spares) and history job (flush,
 * compaction, their manifest stores, file removals) runs on the
 * simulator's thread, in the order a PRNG of the seed (srng) picks, inside
 * the blocking calls, while a burst's appends complete, and for a random
 * number of units between steps (background work running on). The engine's
 * timers read the simulated clock. Everything observed (every append,
 * read, meta, delete, flush/compaction and open result, every
 * subscription delivery) is hashed into a trace, and the final disk image
 * too; test_engine_sim_replay runs seeds twice and compares the traces;
 * PARLEY_ESIM_REPLAY=1 does the same for any seed range, and
 * PARLEY_ESIM_VERBOSE=3 prints the trace at every step (and per file at
 * the end) to find where two runs part. A crash (pe_abort) lands between
 * two units of engine work, never inside one. Per seed, WAL prep and
 * history worker units may be slowed (taken only 1 draw in 10 or 100), so
 * that background jobs stay in flight across steps as a busy thread's
 * would; PARLEY_ESIM_SCHED=<n> runs a seed's workload under another
 * schedule. What stepping cannot show: interleavings finer than a unit
 * (a data race inside one), which the crash tests with real processes and
 * threads still cover.
 *
 * Threads: one. The simulator's thread issues every call and runs the
 * engine's work; callbacks run inside pe_step on this thread.
 */
#include "engine_sim.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define ES_DIR "/data"
#define ES_MAX_STREAMS 40
#define ES_MAX_BURST 24
#define ES_MAX_COUNT 4           /* entries per append */
#define ES_RET_COUNT 12          /* "r/" streams keep the newest 12 */
#define ES_RET_AGE_MS 90000      /* "a/" streams keep 90 s */
#define ES_STEP_LIMIT 5000000u   /* engine units a subscription may wait */

/* ---- model ------------------------------------------------------------- */

struct spec {
	uint32_t count;
	uint32_t len[ES_MAX_COUNT];
	uint64_t pseed[ES_MAX_COUNT];
	uint16_t type[ES_MAX_COUNT], flags[ES_MAX_COUNT];
};

struct m_ent {
	uint64_t ts, pseed;
	uint32_t len;
	uint16_t type, flags;
	uint8_t prod[PE_PRODUCER_LEN];
};

enum key_state { KEY_COMMITTED, KEY_LOST, KEY_INFLIGHT };

struct m_key {
	uint8_t prod[PE_PRODUCER_LEN];
	enum key_state st;
	bool failed;    /* an append with this id failed since the reopen */
	uint64_t seq;
	uint32_t count;
	struct spec sp; /* what a retry sends again */
};

enum ret_kind { RET_NONE, RET_COUNT, RET_AGE };

struct m_stream {
	char key[32];
	uint32_t klen, part;
	enum ret_kind ret;
	struct m_ent *e; /* e[i] has seq i + 1 */
	uint64_t n, cap;
	uint64_t first;  /* first visible seq (1 when nothing was removed) */
	struct m_key *keys;
	uint32_t nkeys, capk;
};

/* An append whose outcome is unknown until the next reopen. */
struct pend {
	uint32_t s;
	int key; /* index in the stream's keys or -1 */
	struct spec sp;
};

/* One asynchronous append of a burst. */
struct op {
	uint32_t s;
	int key;
	bool retry;
	struct spec sp;
	bool done;
	bool refused; /* pe_append said -PARLEY_ETOOBIG: never queued */
	struct pe_append_result r;
};

/* A subscription (tail) and what it delivered since the last check. The
 * callback (inside pe_step) only appends to `got`; the simulator checks
 * `got` against the model at its check points. */
#define ES_MAX_SUBS 4
struct got {
	uint64_t seq, h; /* h: hash of the entry's bytes */
};
struct esub {
	bool used;        /* a live subscription (sub valid) */
	uint32_t s;
	struct pe_sub *sub;
	uint64_t start;   /* the from_seq it was (last) started with */
	uint64_t next;    /* the next seq it must deliver */
	uint64_t trimmed_to; /* a TRIMMED event moved next here (0 = none) */
	bool closed, paused, gone;
	int close_err;
	char bad[200];    /* an order violation seen in the callback */
	struct got *got;
	uint32_t ngot, capgot;
};

struct esim {
	uint64_t seed;
	uint32_t step;
	int verbose; /* PARLEY_ESIM_VERBOSE: 1 a line per step, 2 per append */
	struct parley_rng rng;
	struct parley_rng vrng; /* verification's page sizes: kept apart so
				   the workload's draws do not depend on how
				   many pages a check took */
	struct parley_rng frng; /* PARLEY_ESIM_FLIP_PM's draws */
	struct parley_rng srng; /* the engine's schedule (pe_stepper.pick):
				   which shard round, WAL prep unit or
				   history job runs next */
	uint64_t trace;         /* hash of everything observed (esim_run) */
	uint32_t recent;        /* a stream the last burst appended to */
	bool aflush;            /* a flush started without waiting runs */
	bool hold_workers;      /* history worker units are not picked */
	int aflush_rc;
	uint32_t slow_pm[3];    /* per class of unit (shard, WAL prep, history
				   worker): how many draws in 1000 run it */
	struct esim_stats *st;

	struct pio *io;
	struct pe_engine *eng;
	struct pe_options opt;
	struct pe_retention_rule rules[2];
	_Atomic uint64_t now_ms;

	struct m_stream s[ES_MAX_STREAMS];
	uint32_t ns;
	struct pend *pend;
	uint32_t npend, cappend;
	uint64_t next_pseed, next_prod;
	bool strict_dirs;   /* io_mem loses unsynced namespace changes */
	bool idem_bounded;  /* small idem_max_keys / window: a retry of an
			       old id may be forgotten (appended anew), but
			       a duplicate still carries the original seq */
	bool fault_armed;   /* a fault was armed since the last open */
	bool fatal_seen;    /* an error a fault explains: reopen next */

	struct op ops[ES_MAX_BURST];
	uint32_t nops, ndone;
	struct esub subs[ES_MAX_SUBS];
	uint64_t pause_rng; /* callbacks' pause decisions */
};

static struct esim *g_cur; /* for the failure message */
static uint32_t g_flip_pm; /* PARLEY_ESIM_FLIP_PM: extra flips per 1000 steps */
static uint64_t g_sched;   /* PARLEY_ESIM_SCHED: another engine schedule
			      for the same workload (0 = the seed's own) */

static void es_fail(struct esim *x, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "engine_sim: FAIL seed %" PRIu64 " step %u: ", x->seed,
		x->step);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nengine_sim: replay with PARLEY_ESIM_SEED=%" PRIu64,
		x->seed);
	if (g_sched)
		fprintf(stderr, " PARLEY_ESIM_SCHED=%" PRIu64, g_sched);
	fputc('\n', stderr);
	fflush(stderr);
	exit(1);
}

static void es_log(struct esim *x, const char *fmt, ...)
{
	if (!x->verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "esim %" PRIu64 " step %u: ", x->seed, x->step);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static uint64_t rnd(struct esim *x, uint64_t n)
{
	return parley_rng_below(&x->rng, n);
}

static bool chance(struct esim *x, unsigned pct)
{
	return rnd(x, 100) < pct;
}

static uint64_t clock_cb(void *arg)
{
	struct esim *x = arg;
	return x->now_ms;
}

/* Payload bytes are a function of (pseed, len): the model stores 12 bytes
 * per entry instead of the payload. */
static void gen_payload(uint64_t pseed, uint32_t len, uint8_t *out)
{
	struct parley_rng r = {pseed};
	uint32_t i = 0;
	while (i < len) {
		uint64_t v = parley_rng_next(&r);
		for (int b = 0; b < 8 && i < len; b++, i++)
			out[i] = (uint8_t)(v >> (8 * b));
	}
}

static bool ent_matches(const struct m_ent *m, const struct pe_entry *e,
			uint8_t *scratch)
{
	if (e->len != m->len || e->type != m->type || e->flags != m->flags ||
	    memcmp(e->producer, m->prod, PE_PRODUCER_LEN))
		return false;
	gen_payload(m->pseed, m->len, scratch);
	return !m->len || !memcmp(e->payload, scratch, m->len);
}

static uint8_t *g_scratch; /* PE_MAX_PAYLOAD bytes */

static void stream_push(struct esim *x, struct m_stream *s,
			const struct m_ent *e)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->e = realloc(s->e, s->cap * sizeof *s->e);
		if (!s->e)
			es_fail(x, "out of memory");
	}
	s->e[s->n++] = *e;
}

static void push_spec(struct esim *x, struct m_stream *s,
		      const struct spec *sp, const uint8_t *prod, uint64_t ts)
{
	for (uint32_t i = 0; i < sp->count; i++) {
		struct m_ent e = {.ts = ts, .pseed = sp->pseed[i],
				  .len = sp->len[i], .type = sp->type[i],
				  .flags = sp->flags[i]};
		memcpy(e.prod, prod, PE_PRODUCER_LEN);
		stream_push(x, s, &e);
	}
}

static const uint8_t zero_prod[PE_PRODUCER_LEN];

/* ---- engine lifecycle ------------------------------------------------ */

/* ---- the engine's schedule and the trace --------------------------------- */

/* Units are the shards' rounds, then the WALs' prep units, then the
 * history workers' jobs (engine/step.c). Some seeds slow the background
 * down (a WAL prep or history worker unit is taken only `slow_pm` times in
 * 1000 it is drawn), so that a flush or compaction stays in flight across
 * appends, deletes and crashes, as a busy worker thread would. */
static uint32_t step_pick(void *arg, uint32_t n)
{
	struct esim *x = arg;
	uint32_t ns = x->opt.shards;
	for (;;) {
		uint32_t u = (uint32_t)parley_rng_below(&x->srng, n);
		uint32_t cls = u < ns ? 0 : u < 2 * ns ? 1 : 2;
		if (cls == 2 && x->hold_workers)
			continue;
		if (x->slow_pm[cls] >= 1000 ||
		    parley_rng_below(&x->srng, 1000) < x->slow_pm[cls])
			return u;
	}
}

static uint64_t step_now_ns(void *arg)
{
	struct esim *x = arg;
	return x->now_ms * 1000000ull;
}

/* Opens the engine stepped: no engine thread, every unit of its work runs
 * here in the order srng picks (parley_engine_hooks.h). */
static int engine_open(struct esim *x)
{
	struct pe_stepper st = {.pick = step_pick, .now_ns = step_now_ns,
				.arg = x};
	return pe_open_stepped(&x->opt, &st, &x->eng);
}

static void es_step(struct esim *x)
{
	(void)pe_step(x->eng);
}

/* Lets the engine's background work (flushes, compactions, WAL
 * preparation and release) run on for up to n units. */
static void es_idle(struct esim *x, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		es_step(x);
}

/* Everything the simulator observes goes into the trace hash: the same
 * seed must give the same trace, run after run (test_engine_sim_replay). */
static void trace(struct esim *x, const void *p, size_t n)
{
	x->trace = parley_xxh3(p, n, x->trace);
}

static void trace_u64(struct esim *x, uint64_t v)
{
	trace(x, &v, sizeof v);
}

static void es_open(struct esim *x)
{
	int rc = engine_open(x);
	trace_u64(x, (uint64_t)(int64_t)rc);
	if (rc)
		es_fail(x, "pe_open: %s", parley_strerror(rc));
	x->fault_armed = false;
	x->fatal_seen = false;
	x->st->reopens++;
}

static void clear_faults(struct esim *x)
{
	pio_mem_inject(x->io, PIO_FAULT_WRITE_EIO, 0);
	pio_mem_inject(x->io, PIO_FAULT_FSYNC_EIO, 0);
	pio_mem_inject(x->io, PIO_FAULT_ENOSPC, 0);
	pio_mem_fault_scope(x->io, NULL);
}

/* ---- verification ------------------------------------------------------ */

static const struct pend *next_pend(struct esim *x, uint32_t s, uint32_t *from)
{
	for (; *from < x->npend; (*from)++) {
		const struct pend *p = &x->pend[*from];
		if (p->s != s)
			continue;
		/* a retry of a committed id yields no new entry */
		if (p->key >= 0 &&
		    x->s[s].keys[p->key].st == KEY_COMMITTED)
			continue;
		return p;
	}
	return NULL;
}

/* Entries that retention may have dropped: [first, new_first) must all be
 * eligible at the simulator's current time. */
static bool retention_allows(struct esim *x, const struct m_stream *s,
			     uint64_t new_first)
{
	if (s->ret == RET_NONE)
		return false;
	for (uint64_t q = s->first; q < new_first; q++) {
		if (s->ret == RET_COUNT && q + ES_RET_COUNT > s->n)
			return false;
		if (s->ret == RET_AGE &&
		    s->e[q - 1].ts + ES_RET_AGE_MS >= x->now_ms)
			return false;
	}
	return true;
}

/*
 * Reads the whole stream and checks it against the model. With
 * `reconcile`, entries past the model's last seq are matched against the
 * pending (unacknowledged) appends of this stream, in queue order, and
 * adopted. With `tainted` (after a bit flip) an ECORRUPT answer ends the
 * check as "detected"; returns true when an error was seen.
 */
static bool verify_stream(struct esim *x, uint32_t si, bool reconcile,
			  bool tainted)
{
	struct m_stream *s = &x->s[si];
	struct pe_meta meta;
	int rc = pe_meta_sync(x->eng, s->key, s->klen, &meta);
	uint64_t tm[4] = {(uint64_t)(int64_t)rc, meta.first_seq, meta.last_seq,
			  meta.last_ts_ms};
	trace(x, tm, rc ? 8 : sizeof tm);
	if (rc) {
		if (tainted && rc == -PARLEY_ECORRUPT)
			return true;
		es_fail(x, "meta %s: %s", s->key, parley_strerror(rc));
	}
	/* retention (and only retention) may have raised the first seq */
	if (s->n && meta.first_seq != s->first) {
		if (meta.first_seq > s->first && meta.first_seq <= s->n + 1 &&
		    retention_allows(x, s, meta.first_seq))
			s->first = meta.first_seq;
		else if (!reconcile)
			es_fail(x, "%s: first_seq %" PRIu64 ", model %" PRIu64
				   " (last %" PRIu64 ")",
				s->key, meta.first_seq, s->first, s->n);
	}
	uint64_t from = s->n ? s->first : 1;
	uint32_t pi = 0;
	const struct pend *p = NULL;
	uint32_t pk = 0; /* entries of p matched so far */
	uint64_t batch_seq = 0;
	for (;;) {
		struct pe_read_req q = {.key = s->key, .klen = s->klen,
					.from = from, .dir = PE_FORWARD,
					.limit = 1 + (uint32_t)parley_rng_below(
						  &x->vrng, PE_MAX_READ)};
		struct pe_entry *es = NULL;
		uint32_t n = 0;
		struct pe_read_result rr = {0};
		rc = pe_read_sync(x->eng, &q, &es, &n, &rr);
		x->st->reads++;
		uint64_t tv[4] = {(uint64_t)(int64_t)rc, n, rr.first_seq, rr.end};
		trace(x, tv, sizeof tv);
		for (uint32_t i = 0; i < n; i++)
			trace_u64(x, es[i].seq ^ (es[i].ts_ms << 20) ^ es[i].len);
		if (rc == -PARLEY_ETRIMMED && rr.first_seq > from &&
		    rr.first_seq <= s->n + 1 && retention_allows(x, s, rr.first_seq)) {
			/* a compaction applied retention since the meta */
			s->first = rr.first_seq;
			from = rr.first_seq;
			continue;
		}
		if (rc) {
			if (tainted && rc == -PARLEY_ECORRUPT)
				return true;
			es_fail(x, "read %s from %" PRIu64 ": %s (model first %"
				   PRIu64 " last %" PRIu64 ", first_seq %" PRIu64 ")",
				s->key, from, parley_strerror(rc), s->first,
				s->n, rr.first_seq);
		}
		for (uint32_t i = 0; i < n; i++) {
			const struct pe_entry *e = &es[i];
			if (e->seq != from + i)
				es_fail(x, "%s: entry seq %" PRIu64 ", expected %"
					   PRIu64, s->key, e->seq, from + i);
			if (e->seq <= s->n) {
				if (!ent_matches(&s->e[e->seq - 1], e, g_scratch))
					es_fail(x, "%s seq %" PRIu64
						   ": bytes differ from the "
						   "acknowledged entry (len %u vs %u)",
						s->key, e->seq, e->len,
						s->e[e->seq - 1].len);
				continue;
			}
			/* past what the model knows: an unacknowledged append */
			if (!reconcile)
				es_fail(x, "%s: seq %" PRIu64
					   " exists (len %u ts %" PRIu64 "), model ends at %"
					   PRIu64 " (read from %" PRIu64 ", %u entries)",
					s->key, e->seq, e->len, e->ts_ms, s->n, from, n);
			if (!p) {
				p = next_pend(x, si, &pi);
				if (!p)
					es_fail(x, "%s: seq %" PRIu64
						   " exists but no append is pending",
						s->key, e->seq);
				pk = 0;
				batch_seq = e->seq;
			}
			uint32_t k = pk;
			const uint8_t *prod = p->key >= 0
						      ? s->keys[p->key].prod
						      : zero_prod;
			struct m_ent m = {.ts = e->ts_ms, .pseed = p->sp.pseed[k],
					  .len = p->sp.len[k], .type = p->sp.type[k],
					  .flags = p->sp.flags[k]};
			memcpy(m.prod, prod, PE_PRODUCER_LEN);
			if (!ent_matches(&m, e, g_scratch))
				es_fail(x, "%s seq %" PRIu64
					   ": unacknowledged entry is not entry %u "
					   "of the next pending append (len %u vs %u)",
					s->key, e->seq, k, e->len, m.len);
			stream_push(x, s, &m);
			pk++;
			if (pk == p->sp.count) {
				if (p->key >= 0) {
					struct m_key *mk = &s->keys[p->key];
					mk->st = KEY_COMMITTED;
					mk->seq = batch_seq;
					mk->count = p->sp.count;
				}
				x->st->recovered_unacked++;
				pi++;
				p = NULL;
			}
		}
		free(es);
		if (n)
			from += n;
		if (rr.end || !n)
			break;
	}
	if (p)
		es_fail(x, "%s: pending append found half-written (%u of %u "
			   "entries, from seq %" PRIu64 ")",
			s->key, pk, p->sp.count, batch_seq);
	if (from != s->n + 1 && !(s->n == 0 && from == 1))
		es_fail(x, "%s: read ended at %" PRIu64 ", model last %" PRIu64,
			s->key, from - 1, s->n);
	rc = pe_meta_sync(x->eng, s->key, s->klen, &meta);
	if (rc)
		es_fail(x, "meta %s: %s", s->key, parley_strerror(rc));
	if (meta.last_seq != s->n)
		es_fail(x, "%s: meta last_seq %" PRIu64 ", model %" PRIu64,
			s->key, meta.last_seq, s->n);
	return false;
}

static void sub_check(struct esim *x, bool live);
static void subs_restart(struct esim *x);

/* pe_list_streams agrees with the model: every stream that ever had an
 * entry is listed once, with the model's first and last seq. */
struct list_ctx {
	struct esim *x;
	uint32_t part;
	uint8_t seen[ES_MAX_STREAMS];
};

static int list_cb(void *arg, const void *key, size_t klen,
		   const struct pe_meta *m)
{
	struct list_ctx *c = arg;
	struct esim *x = c->x;
	for (uint32_t i = 0; i < x->ns; i++) {
		struct m_stream *s = &x->s[i];
		if (s->klen != klen || memcmp(s->key, key, klen))
			continue;
		if (s->part != c->part || c->seen[i]++)
			es_fail(x, "list: %s listed twice or in partition %u",
				s->key, c->part);
		/* retention (the periodic tick) may have raised the first */
		if (s->n && m->last_seq == s->n && m->first_seq > s->first &&
		    m->first_seq <= s->n + 1 &&
		    retention_allows(x, s, m->first_seq))
			s->first = m->first_seq;
		if (m->last_seq != s->n || (s->n && m->first_seq != s->first))
			es_fail(x, "list: %s first %" PRIu64 " last %" PRIu64
				   ", model %" PRIu64 " %" PRIu64,
				s->key, m->first_seq, m->last_seq, s->first, s->n);
		return 0;
	}
	if (m->last_seq)
		es_fail(x, "list: partition %u lists a stream (%zu bytes, last %"
			   PRIu64 ") the workload never wrote", c->part, klen,
			m->last_seq);
	return 0;
}

static void verify_list(struct esim *x)
{
	struct list_ctx c = {.x = x};
	for (uint32_t p = 0; p < pe_partition_count(x->eng); p++) {
		c.part = p;
		int rc = pe_list_streams(x->eng, p, list_cb, &c);
		if (rc)
			es_fail(x, "list partition %u: %s", p, parley_strerror(rc));
	}
	for (uint32_t i = 0; i < x->ns; i++)
		if (x->s[i].n && !c.seen[i])
			es_fail(x, "list: %s (last %" PRIu64 ") not listed",
				x->s[i].key, x->s[i].n);
}

/* After a reopen (reconcile): adopt what survived of the pending appends,
 * forget the rest (their ids become "lost": a retry appends anew). Then,
 * and otherwise, check every stream and the stream listing. */
static void verify_all(struct esim *x, bool reconcile)
{
	for (uint32_t i = 0; i < x->ns; i++)
		verify_stream(x, i, reconcile, false);
	if (reconcile) {
		for (uint32_t i = 0; i < x->npend; i++) {
			struct pend *p = &x->pend[i];
			if (p->key >= 0) {
				struct m_key *k = &x->s[p->s].keys[p->key];
				if (k->st == KEY_INFLIGHT)
					k->st = KEY_LOST;
				k->failed = false;
			}
		}
		x->npend = 0;
		sub_check(x, false); /* what they saw before the stop */
		subs_restart(x);
	}
	verify_list(x);
	sub_check(x, true);
}

/* ---- subscriptions --------------------------------------------------------- */

static uint64_t ent_hash(const struct pe_entry *e)
{
	uint8_t meta[4 + 4 + PE_PRODUCER_LEN];
	le_put16(meta, e->type);
	le_put16(meta + 2, e->flags);
	le_put32(meta + 4, e->len);
	memcpy(meta + 8, e->producer, PE_PRODUCER_LEN);
	uint64_t h = parley_xxh3(meta, sizeof meta, 2);
	if (e->len)
		h ^= parley_xxh3(e->payload, e->len, 1);
	return h;
}

static uint64_t m_hash(const struct m_ent *m)
{
	gen_payload(m->pseed, m->len, g_scratch);
	struct pe_entry e = {.type = m->type, .flags = m->flags, .len = m->len,
			     .payload = g_scratch};
	memcpy(e.producer, m->prod, PE_PRODUCER_LEN);
	return ent_hash(&e);
}

static enum pe_sub_ret sub_cb(void *arg, struct pe_sub *sub,
			      const struct pe_sub_update *u)
{
	(void)sub;
	struct esub *es = arg;
	struct esim *x = g_cur;
	enum pe_sub_ret ret = PE_SUB_CONTINUE;
	switch (u->event) {
	case PE_SUB_ENTRIES:
		for (uint32_t i = 0; i < u->count; i++) {
			const struct pe_entry *e = &u->entries[i];
			if (e->seq != es->next) {
				if (!es->bad[0])
					snprintf(es->bad, sizeof es->bad,
						 "delivered seq %" PRIu64
						 ", expected %" PRIu64, e->seq,
						 es->next);
				continue;
			}
			if (es->ngot == es->capgot) {
				es->capgot = es->capgot ? 2 * es->capgot : 256;
				es->got = realloc(es->got, es->capgot * sizeof *es->got);
				PARLEY_ASSERT(es->got);
			}
			es->got[es->ngot++] = (struct got){e->seq, ent_hash(e)};
			trace_u64(x, es->got[es->ngot - 1].h ^ e->seq);
			es->next++;
		}
		if (u->next_seq != es->next && !es->bad[0])
			snprintf(es->bad, sizeof es->bad,
				 "update next_seq %" PRIu64 " after entries up to %"
				 PRIu64, u->next_seq, es->next - 1);
		if (parley_rng_below(&(struct parley_rng){x->pause_rng++}, 8) == 0) {
			es->paused = true;
			ret = PE_SUB_PAUSE;
		}
		break;
	case PE_SUB_TRIMMED:
		trace_u64(x, u->next_seq);
		if (u->next_seq < es->next && !es->bad[0])
			snprintf(es->bad, sizeof es->bad,
				 "TRIMMED moved the cursor back from %" PRIu64
				 " to %" PRIu64, es->next, u->next_seq);
		es->trimmed_to = u->next_seq;
		es->next = u->next_seq;
		break;
	case PE_SUB_CLOSED:
		trace_u64(x, (uint64_t)(int64_t)u->err);
		es->closed = true;
		es->close_err = u->err;
		break;
	}
	return ret;
}

static void sub_start(struct esim *x, struct esub *es, uint32_t si,
		      uint64_t from)
{
	struct m_stream *s = &x->s[si];
	es->used = true;
	es->s = si;
	es->start = from;
	es->next = from;
	es->closed = es->paused = es->gone = false;
	es->trimmed_to = 0;
	es->ngot = 0;
	int rc = pe_subscribe(x->eng, s->key, s->klen, from, sub_cb, es, &es->sub);
	if (rc)
		es_fail(x, "subscribe %s from %" PRIu64 ": %s", s->key, from,
			parley_strerror(rc));
	x->st->subs++;
}

/* Checks what the subscriptions delivered against the model (every
 * delivered entry is the model's at its seq: nothing was delivered that
 * a crash then took back). With `live`, also waits until each running,
 * resumed subscription has caught up with the model. */
static void sub_check(struct esim *x, bool live)
{
	for (int i = 0; i < ES_MAX_SUBS; i++) {
		struct esub *es = &x->subs[i];
		if (!es->used)
			continue;
		struct m_stream *s = &x->s[es->s];
		bool resume = false;
		if (live && es->paused && !es->gone && !es->closed) {
			es->paused = false;
			resume = true;
		}
		if (resume && pe_sub_resume(es->sub))
			es_fail(x, "pe_sub_resume failed");
		uint32_t units = 0;
		for (;;) {
			if (es->bad[0]) {
				es_fail(x, "subscription to %s: %s", s->key, es->bad);
			}
			for (uint32_t k = 0; k < es->ngot; k++) {
				struct got g = es->got[k];
				if (g.seq > s->n || g.h != m_hash(&s->e[g.seq - 1])) {
					es_fail(x, "subscription to %s delivered seq %"
						   PRIu64 " %s (model last %" PRIu64 ")",
						s->key, g.seq,
						g.seq > s->n ? "which the log does not hold"
							     : "with other bytes",
						s->n);
				}
			}
			x->st->sub_entries += es->ngot;
			es->ngot = 0;
			if (es->trimmed_to) {
				uint64_t t = es->trimmed_to;
				if (t > s->n + 1 ||
				    (t > s->first && !retention_allows(x, s, t))) {
					es_fail(x, "subscription to %s trimmed to %" PRIu64
						   ", model first %" PRIu64 " last %" PRIu64,
						s->key, t, s->first, s->n);
				}
				es->trimmed_to = 0;
			}
			if (es->next > PARLEY_MAX(s->n + 1, es->start)) {
				es_fail(x, "subscription to %s is at %" PRIu64
					   ", past the log's last seq %" PRIu64,
					s->key, es->next, s->n);
			}
			bool waiting = live && !es->paused && !es->closed &&
				       !es->gone && es->next <= s->n &&
				       !(es->next < s->first);
			if (!waiting) {
				break;
			}
			if (++units > ES_STEP_LIMIT)
				es_fail(x, "subscription to %s stuck at %" PRIu64
					   ", model last %" PRIu64, s->key, es->next,
					s->n);
			es_step(x);
		}
	}
}

/* The engine stopped (abort or close): its subscriptions are gone; what
 * they delivered is checked after the reopen, and they start again there
 * from their cursors. */
static void subs_engine_gone(struct esim *x)
{
	x->aflush = false; /* closed: done; aborted: never answered */
	for (int i = 0; i < ES_MAX_SUBS; i++)
		if (x->subs[i].used) {
			x->subs[i].gone = true;
			x->subs[i].sub = NULL;
		}
}

static void subs_restart(struct esim *x)
{
	for (int i = 0; i < ES_MAX_SUBS; i++) {
		struct esub *es = &x->subs[i];
		if (es->used && es->gone)
			sub_start(x, es, es->s, es->next);
	}
}

static void unsub_done(void *arg)
{
	struct esub *es = arg;
	es->gone = true;
}

static bool sub_gone(void *arg)
{
	return ((struct esub *)arg)->gone;
}

static void sub_stop(struct esim *x, struct esub *es)
{
	if (!es->gone) {
		bool closed = es->closed;
		(void)closed;
		if (pe_unsubscribe(es->sub, unsub_done, es))
			es_fail(x, "pe_unsubscribe failed");
		pe_step_until(x->eng, sub_gone, es);
	}
	sub_check(x, false);
	es->used = false;
	es->sub = NULL;
}

static void subs_stop_all(struct esim *x)
{
	for (int i = 0; i < ES_MAX_SUBS; i++)
		if (x->subs[i].used)
			sub_stop(x, &x->subs[i]);
}

/* Start a subscription (from anywhere in the stream, below its first seq
 * included) or end one. */
static void step_sub(struct esim *x)
{
	struct esub *es = &x->subs[rnd(x, ES_MAX_SUBS)];
	if (es->used) {
		sub_stop(x, es);
		return;
	}
	uint32_t si = (uint32_t)rnd(x, x->ns);
	uint64_t from = 1 + rnd(x, x->s[si].n + 2);
	sub_start(x, es, si, from);
}

static void add_pend(struct esim *x, const struct op *o)
{
	if (x->npend == x->cappend) {
		x->cappend = x->cappend ? 2 * x->cappend : 64;
		x->pend = realloc(x->pend, x->cappend * sizeof *x->pend);
		if (!x->pend)
			es_fail(x, "out of memory");
	}
	x->pend[x->npend++] = (struct pend){.s = o->s, .key = o->key,
					    .sp = o->sp};
}

static void crash_reopen(struct esim *x, bool tear)
{
	pe_abort(x->eng);
	x->eng = NULL;
	subs_engine_gone(x);
	clear_faults(x);
	pio_mem_crash(x->io, tear);
	x->st->crashes++;
	x->st->torn += tear;
	es_log(x, "crash%s, %u pending", tear ? " (torn)" : "", x->npend);
	es_open(x);
	uint32_t before = x->npend;
	uint64_t rec = x->st->recovered_unacked;
	verify_all(x, true);
	x->st->lost_unacked += before - (x->st->recovered_unacked - rec);
}

static void clean_reopen(struct esim *x)
{
	pe_close(x->eng);
	x->eng = NULL;
	subs_engine_gone(x);
	clear_faults(x);
	es_log(x, "close + reopen, %u pending", x->npend);
	es_open(x);
	verify_all(x, true);
}

/* ---- appends ------------------------------------------------------------ */

static void append_cb(void *arg, const struct pe_append_result *r)
{
	struct op *o = arg;
	struct esim *x = g_cur;
	o->r = *r;
	o->done = true;
	x->ndone++;
}

static void make_spec(struct esim *x, struct spec *sp, bool bulk)
{
	sp->count = 1 + (uint32_t)rnd(x, chance(x, 70) ? 1 : ES_MAX_COUNT);
	for (uint32_t i = 0; i < sp->count; i++) {
		uint32_t len;
		if (bulk)
			len = 100000 + (uint32_t)rnd(x, 200000);
		else if (chance(x, 85))
			len = (uint32_t)rnd(x, 300);
		else if (chance(x, 90))
			len = (uint32_t)rnd(x, 5000);
		else
			len = (uint32_t)rnd(x, 70000);
		sp->len[i] = len;
		sp->pseed[i] = x->seed * 1000003u + ++x->next_pseed;
		sp->type[i] = (uint16_t)rnd(x, 4);
		sp->flags[i] = (uint16_t)rnd(x, 3);
	}
}

static int new_key(struct esim *x, struct m_stream *s, const struct spec *sp)
{
	if (s->nkeys == s->capk) {
		s->capk = s->capk ? 2 * s->capk : 16;
		s->keys = realloc(s->keys, s->capk * sizeof *s->keys);
		if (!s->keys)
			es_fail(x, "out of memory");
	}
	struct m_key *k = &s->keys[s->nkeys];
	memset(k, 0, sizeof *k);
	uint64_t id = ++x->next_prod;
	le_put64(k->prod, x->seed);
	le_put64(k->prod + 8, id);
	/* Sometimes a producer id already used on another stream: the key
	 * is (stream, producer), so that must be a fresh append here. */
	const struct m_stream *o = &x->s[rnd(x, x->ns)];
	if (o != s && o->nkeys && chance(x, 25)) {
		const uint8_t *cand = o->keys[rnd(x, o->nkeys)].prod;
		bool used = false;
		for (uint32_t i = 0; i < s->nkeys && !used; i++)
			used = !memcmp(s->keys[i].prod, cand, PE_PRODUCER_LEN);
		if (!used)
			memcpy(k->prod, cand, PE_PRODUCER_LEN);
	}
	k->st = KEY_LOST; /* until something commits it */
	k->sp = *sp;
	return (int)s->nkeys++;
}

/* The size limit (parley_engine.h): whether pe_append must take this
 * spec under the stream's key, by the documented formula. Bulk bursts
 * draw up to 4 entries of up to 300 KB, so some batches are over it. */
static bool spec_fits(const struct m_stream *s, const struct spec *sp)
{
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < sp->count; i++) {
		if (sp->len[i] > PE_MAX_PAYLOAD)
			return false;
		bytes += sp->len[i];
	}
	return PE_APPEND_BYTES(s->klen, sp->count, bytes) <= PE_MAX_COMMAND;
}

/* pe_append's answer against the limit: an oversize append is refused at
 * once (-PARLEY_ETOOBIG, nothing queued), any other is not refused for
 * its size. Returns true when it was refused (correctly). */
static bool check_size_answer(struct esim *x, const struct m_stream *s,
			      const struct spec *sp, int rc)
{
	bool fits = spec_fits(s, sp);
	if (fits && rc == -PARLEY_ETOOBIG)
		es_fail(x, "append to %s within the size limit refused", s->key);
	if (!fits && rc != -PARLEY_ETOOBIG)
		es_fail(x, "append to %s over the size limit (%u entries) "
			   "answered %s, not a refusal", s->key, sp->count,
			rc ? parley_strerror(rc) : "queued");
	if (!fits)
		x->st->refused++;
	return !fits;
}

static int issue(struct esim *x, struct op *o)
{
	struct m_stream *s = &x->s[o->s];
	struct pe_input in[ES_MAX_COUNT];
	uint8_t *bufs[ES_MAX_COUNT] = {0};
	for (uint32_t i = 0; i < o->sp.count; i++) {
		bufs[i] = malloc(o->sp.len[i] ? o->sp.len[i] : 1);
		if (!bufs[i])
			es_fail(x, "out of memory");
		gen_payload(o->sp.pseed[i], o->sp.len[i], bufs[i]);
		in[i] = (struct pe_input){.type = o->sp.type[i],
					  .flags = o->sp.flags[i],
					  .len = o->sp.len[i], .payload = bufs[i]};
	}
	struct pe_append_req rq = {.key = s->key, .klen = s->klen,
				   .expected_last_seq = PE_NO_EXPECT,
				   .entries = in, .count = o->sp.count};
	if (o->key >= 0)
		memcpy(rq.producer, s->keys[o->key].prod, PE_PRODUCER_LEN);
	int rc = pe_append(x->eng, &rq, append_cb, o);
	for (uint32_t i = 0; i < o->sp.count; i++)
		free(bufs[i]);
	o->refused = check_size_answer(x, s, &o->sp, rc);
	return rc;
}

/* Steps the engine until `want` ops of the burst have completed. */
struct done_arg {
	struct esim *x;
	uint32_t want;
};

static bool ops_done(void *arg)
{
	struct done_arg *d = arg;
	return d->x->ndone >= d->want;
}

static void wait_done(struct esim *x, uint32_t want)
{
	struct done_arg d = {x, want};
	pe_step_until(x->eng, ops_done, &d);
}

/* Checks one completed append against the model, in queue order. */
static void account(struct esim *x, struct op *o, bool faults_ok)
{
	struct m_stream *s = &x->s[o->s];
	const struct pe_append_result *r = &o->r;
	struct m_key *k = o->key >= 0 ? &s->keys[o->key] : NULL;
	uint64_t tv[7] = {o->s, (uint64_t)(int64_t)r->err, r->seq, r->count,
			  r->last_seq, r->duplicate, r->ts_ms};
	trace(x, tv, sizeof tv);
	if (r->err) {
		/* EFULL (memory bound) rejects before anything is proposed,
		 * and so does the size limit (at pe_append) */
		if (r->err == -PARLEY_EFULL || o->refused) {
			if (k && k->st == KEY_INFLIGHT)
				k->st = KEY_LOST;
			return;
		}
		if (!faults_ok && !x->fault_armed)
			es_fail(x, "append to %s failed with %s and no fault armed",
				s->key, parley_strerror(r->err));
		x->st->fault_errors++;
		x->fatal_seen = true;
		if (x->verbose > 1)
			es_log(x, "error %s %s count %u len0 %u key %d%s", s->key,
			       parley_strerror(r->err), o->sp.count, o->sp.len[0],
			       o->key, o->retry ? " (retry)" : "");
		if (k)
			k->failed = true;
		add_pend(x, o); /* may be on disk: known at the reopen */
		return;
	}
	if (k && k->failed)
		es_fail(x, "%s: acknowledged after an earlier append of the "
			   "same id failed", s->key);
	if (r->duplicate) {
		if (!k || k->st != KEY_COMMITTED)
			es_fail(x, "%s: duplicate reported for an id never committed "
				   "(seq %" PRIu64 ")", s->key, r->seq);
		if (r->seq != k->seq)
			es_fail(x, "%s: idempotent retry returned seq %" PRIu64
				   ", original %" PRIu64, s->key, r->seq, k->seq);
		x->st->dups++;
		return;
	}
	if (k && k->st == KEY_COMMITTED && !x->idem_bounded)
		es_fail(x, "%s: retry of an id committed at seq %" PRIu64
			   " appended again at %" PRIu64, s->key, k->seq, r->seq);
	if (r->seq != s->n + 1 || r->count != o->sp.count)
		es_fail(x, "%s: acknowledged seq %" PRIu64 " count %u, model "
			   "expects seq %" PRIu64 " count %u",
			s->key, r->seq, r->count, s->n + 1, o->sp.count);
	if (r->last_seq != r->seq + r->count - 1)
		es_fail(x, "%s: last_seq %" PRIu64 " after seq %" PRIu64
			   " count %u", s->key, r->last_seq, r->seq, r->count);
	if (x->verbose > 1)
		es_log(x, "ack %s seq %" PRIu64 " count %u len0 %u key %d%s",
		       s->key, r->seq, r->count, o->sp.len[0], o->key,
		       o->retry ? " (retry)" : "");
	push_spec(x, s, &o->sp, k ? k->prod : zero_prod, r->ts_ms);
	if (k) {
		k->st = KEY_COMMITTED;
		k->seq = r->seq;
		k->count = r->count;
	}
	x->st->acked++;
}

/*
 * A burst of asynchronous appends. mode 0: wait for all; mode 1: crash
 * after some completed (some in flight); mode 2: a WAL fault is armed.
 */
static void burst(struct esim *x, int mode, bool bulk)
{
	uint32_t n = 1 + (uint32_t)rnd(x, bulk ? 4 : ES_MAX_BURST);
	x->nops = n;
	x->ndone = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct op *o = &x->ops[i];
		memset(o, 0, sizeof *o);
		o->s = (uint32_t)rnd(x, x->ns);
		struct m_stream *s = &x->s[o->s];
		o->key = -1;
		unsigned pick = (unsigned)rnd(x, 100);
		if (pick < 20 && s->nkeys) {
			/* a retry of an earlier id: same bytes again */
			int k = (int)rnd(x, s->nkeys);
			bool inflight = s->keys[k].st == KEY_INFLIGHT;
			/* with a bounded table a retry whose outcome is only
			 * known at the reopen could be either: not modelled */
			bool maybe_forgotten = x->idem_bounded &&
					       s->keys[k].st == KEY_COMMITTED &&
					       (mode != 0 || x->fault_armed);
			if ((!inflight || mode == 0) && !maybe_forgotten) {
				o->key = k;
				o->retry = true;
				o->sp = s->keys[k].sp;
			}
		}
		if (o->key < 0) {
			make_spec(x, &o->sp, bulk);
			if (pick < 70)
				o->key = new_key(x, s, &o->sp);
		}
		if (o->key >= 0 && s->keys[o->key].st != KEY_COMMITTED)
			s->keys[o->key].st = KEY_INFLIGHT;
	}
	x->recent = x->ops[n - 1].s;
	uint32_t crash_after = mode == 1 ? (uint32_t)rnd(x, n + 1) : n;
	bool tear = chance(x, 50);
	uint32_t issued = 0;
	for (uint32_t i = 0; i < n; i++) {
		int rc = issue(x, &x->ops[i]);
		if (rc == -PARLEY_EFULL || x->ops[i].refused) {
			/* queue full, or over the size limit: never queued */
			x->ops[i].done = true;
			x->ops[i].r.err = rc;
			x->ndone++;
		} else if (rc) {
			es_fail(x, "pe_append: %s", parley_strerror(rc));
		}
		issued++;
	}
	(void)issued;
	if (mode == 1) {
		wait_done(x, crash_after);
		/* the crash lands between two units of engine work: after
		 * some more of it ran (a batch written, a flush's segment
		 * stored but not its manifest, a release half done ...) */
		es_idle(x, (uint32_t)rnd(x, 4) ? (uint32_t)rnd(x, 40) : 0);
		pe_abort(x->eng);
		x->eng = NULL;
		subs_engine_gone(x);
	} else {
		wait_done(x, n);
	}
	/* the engine is stopped or every op completed: no more callbacks */
	for (uint32_t i = 0; i < n; i++) {
		struct op *o = &x->ops[i];
		if (o->done)
			account(x, o, mode == 2);
		else
			add_pend(x, o);
	}
	es_log(x, "burst of %u (%s): %u completed", n,
	       mode == 0 ? "plain" : mode == 1 ? "crash" : "fault", x->ndone);
	if (mode == 1) {
		clear_faults(x);
		pio_mem_crash(x->io, tear);
		x->st->crashes++;
		x->st->torn += tear;
		uint32_t before = x->npend;
		uint64_t rec = x->st->recovered_unacked;
		es_open(x);
		verify_all(x, true);
		x->st->lost_unacked += before - (x->st->recovered_unacked - rec);
	}
}

/* ---- other steps ---------------------------------------------------------- */

static void step_read(struct esim *x)
{
	struct m_stream *s = &x->s[rnd(x, x->ns)];
	bool back = chance(x, 35);
	uint64_t last = s->n;
	uint64_t from;
	if (back)
		from = chance(x, 30) ? UINT64_MAX : 1 + rnd(x, last + 3);
	else
		from = 1 + rnd(x, last + 3);
	uint32_t limit = 1 + (uint32_t)rnd(x, chance(x, 50) ? 10 : PE_MAX_READ);
	struct pe_read_req q = {.key = s->key, .klen = s->klen, .from = from,
				.dir = back ? PE_BACKWARD : PE_FORWARD,
				.limit = limit};
	struct pe_entry *es = NULL;
	uint32_t n = 0;
	struct pe_read_result rr = {0};
	int rc = pe_read_sync(x->eng, &q, &es, &n, &rr);
	x->st->reads++;
	uint64_t tv[5] = {(uint64_t)(int64_t)rc, n, rr.first_seq, rr.last_seq,
			  rr.end};
	trace(x, tv, sizeof tv);
	for (uint32_t i = 0; i < n; i++)
		trace_u64(x, es[i].seq ^ (es[i].ts_ms << 20) ^ es[i].len);
	/* retention applied by a compaction the simulator did not ask for
	 * (the periodic retention tick, on the simulated clock) raised the
	 * first seq: a forward read below it answers ETRIMMED, a backward
	 * one ends there. Adopted only over entries retention may drop. */
	if ((rc == -PARLEY_ETRIMMED || !rc) && rr.first_seq > s->first &&
	    rr.first_seq <= last + 1 && retention_allows(x, s, rr.first_seq))
		s->first = rr.first_seq;
	bool visible = last && s->first <= last;
	/* a read starting below the first visible seq: ETRIMMED (forward
	 * always; backward may also just find nothing there) */
	uint64_t start = back ? PARLEY_MIN(from, last) : from;
	if (last && start < s->first && (!back || rc)) {
		if (rc != -PARLEY_ETRIMMED || rr.first_seq != s->first)
			es_fail(x, "%s: forward read from %" PRIu64
				   " below first %" PRIu64 ": %s first_seq %" PRIu64,
				s->key, from, s->first, parley_strerror(rc),
				rr.first_seq);
		free(es);
		return;
	}
	if (rc)
		es_fail(x, "%s: read from %" PRIu64 " %s: %s (model first %"
			   PRIu64 " last %" PRIu64 "; first_seq %" PRIu64
			   " last_seq %" PRIu64 ")",
			s->key, from, back ? "backward" : "forward",
			parley_strerror(rc), s->first, last, rr.first_seq,
			rr.last_seq);
	/* expected: seqs from..last ascending, or min(from,last)..first
	 * descending; the page is a prefix of that, non-empty if any */
	uint64_t lo, hi, avail;
	if (!visible) {
		avail = 0;
		lo = hi = 0;
	} else if (!back) {
		lo = from;
		hi = last;
		avail = from <= last ? last - from + 1 : 0;
	} else {
		hi = PARLEY_MIN(from, last);
		lo = s->first;
		avail = hi >= lo ? hi - lo + 1 : 0;
	}
	if (n > avail || n > limit || (avail && !n) || (rr.end && n < avail))
		es_fail(x, "%s: read %s from %" PRIu64 " limit %u: %u entries "
			   "(end %d), %" PRIu64 " available (model first %" PRIu64
			   " last %" PRIu64 "; engine first_seq %" PRIu64
			   " last_seq %" PRIu64 ", first entry %" PRIu64 ")",
			s->key, back ? "backward" : "forward", from, limit, n,
			rr.end, avail, s->first, last, rr.first_seq,
			rr.last_seq, n ? es[0].seq : 0);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t want = back ? hi - i : lo + i;
		if (es[i].seq != want ||
		    !ent_matches(&s->e[want - 1], &es[i], g_scratch))
			es_fail(x, "%s: read %s from %" PRIu64 ": entry %u is seq %"
				   PRIu64 " (want %" PRIu64 ") or its bytes differ",
				s->key, back ? "backward" : "forward", from, i,
				es[i].seq, want);
	}
	free(es);
}

static void step_delete(struct esim *x, int part)
{
	/* half the time a stream the last burst appended to: its newest
	 * entries may be newer than a flush in flight (the race behind seed
	 * 100017's lost last seq); with `part`, one in that partition */
	uint32_t si = (uint32_t)rnd(x, x->ns);
	if (chance(x, 50))
		si = x->recent;
	for (uint32_t i = 0; part >= 0 && i < x->nops; i++)
		if (x->s[x->ops[i].s].part == (uint32_t)part)
			si = x->ops[i].s;
	struct m_stream *s = &x->s[si];
	if (!s->n)
		return;
	uint64_t through = chance(x, 20) ? UINT64_MAX
					  : s->first - 1 + rnd(x, s->n - s->first + 2);
	if (part >= 0 && chance(x, 60)) /* the newest entries too */
		through = chance(x, 50) ? UINT64_MAX : s->n;
	struct pe_delete_result r;
	int rc = pe_delete_sync(x->eng, s->key, s->klen, through, &r);
	uint64_t tv[4] = {(uint64_t)(int64_t)rc, r.first_seq, r.last_seq,
			  (uint64_t)(int64_t)r.err};
	trace(x, tv, sizeof tv);
	if (rc)
		es_fail(x, "delete %s through %" PRIu64 ": %s", s->key, through,
			parley_strerror(rc));
	uint64_t want = PARLEY_MAX(s->first, PARLEY_MIN(through, s->n) + 1);
	if (through == 0)
		want = s->first;
	/* retention the simulator did not ask for (an automatic compaction)
	 * may have raised the first seq past the deletion: accepted only
	 * over entries retention may drop (invariant 6) */
	if (r.last_seq == s->n && r.first_seq > want && r.first_seq <= s->n + 1 &&
	    retention_allows(x, s, r.first_seq))
		want = r.first_seq;
	if (r.first_seq != want || r.last_seq != s->n)
		es_fail(x, "delete %s through %" PRIu64 ": first %" PRIu64
			   " last %" PRIu64 ", model %" PRIu64 " %" PRIu64,
			s->key, through, r.first_seq, r.last_seq, want, s->n);
	s->first = want;
	x->st->deletes++;
}

static void aflush_done(void *arg)
{
	struct esim *x = arg;
	x->aflush = false;
	trace_u64(x, (uint64_t)(int64_t)x->aflush_rc);
}

static void step_history(struct esim *x, bool fault)
{
	uint32_t p = (uint32_t)rnd(x, pe_partition_count(x->eng));
	bool compact = chance(x, 45);
	if (!fault && !compact && !x->aflush && chance(x, 40)) {
		/* a flush the workload goes on past (as one the shard starts
		 * by itself): appends, deletes, crashes race its job. Its
		 * outcome is not judged here (a fault armed later may fail
		 * it); what it leaves is, by every later check. */
		x->aflush = true;
		int rc = pe_flush_start(x->eng, p, &x->aflush_rc, aflush_done, x);
		if (rc)
			es_fail(x, "pe_flush_start: %s", parley_strerror(rc));
		es_log(x, "flush p%u started", p);
		if (chance(x, 50)) { /* appends and a delete race its job */
			x->hold_workers = true; /* its job waits meanwhile */
			burst(x, 0, false);
			step_delete(x, (int)p);
			x->hold_workers = false;
			if (x->fatal_seen || !x->eng || chance(x, 50))
				return;
			/* then the rest flushed too, and a restart from
			 * what the two flushes left (seed 100017's loss) */
			int rc2 = pe_flush_sync(x->eng, p);
			trace_u64(x, (uint64_t)(int64_t)rc2);
			if (rc2 && !x->fault_armed)
				es_fail(x, "flush of partition %u after a racing "
					   "delete: %s with no fault armed", p,
					parley_strerror(rc2));
			if (chance(x, 50))
				crash_reopen(x, false);
			else
				clean_reopen(x);
		}
		return;
	}
	if (fault) {
		static const enum pio_mem_fault kinds[] = {
			PIO_FAULT_WRITE_EIO, PIO_FAULT_FSYNC_EIO, PIO_FAULT_ENOSPC};
		pio_mem_fault_scope(x->io, "/hist/");
		pio_mem_inject(x->io, kinds[rnd(x, 3)], 1 + (uint32_t)rnd(x, 3));
		x->fault_armed = true;
		x->st->faults++;
	}
	int rc = compact ? pe_compact_sync(x->eng, p, chance(x, 50))
			 : pe_flush_sync(x->eng, p);
	trace_u64(x, (uint64_t)(int64_t)rc);
	if (fault) {
		clear_faults(x);
		x->fault_armed = true; /* stays explained until the reopen */
	}
	if (rc) {
		if (!x->fault_armed)
			es_fail(x, "%s of partition %u: %s with no fault armed",
				compact ? "compaction" : "flush", p,
				parley_strerror(rc));
		x->st->fault_errors++;
	} else if (compact) {
		x->st->compactions++;
	} else {
		x->st->flushes++;
	}
	es_log(x, "%s%s p%u: %s", fault ? "faulted " : "",
	       compact ? "compaction" : "flush", p, parley_strerror(rc));
	/* whatever happened, what is acknowledged reads back */
	for (uint32_t i = 0; i < x->ns; i++)
		if (x->s[i].part == p)
			verify_stream(x, i, false, false);
	/* and after a restart, from what the flush left on disk: the WAL
	 * records it made unnecessary are skipped by the replay */
	if (!rc && !fault && chance(x, 25)) {
		if (chance(x, 50))
			crash_reopen(x, false);
		else
			clean_reopen(x);
	}
}

static void step_wal_fault(struct esim *x)
{
	static const enum pio_mem_fault kinds[] = {
		PIO_FAULT_WRITE_EIO, PIO_FAULT_FSYNC_EIO, PIO_FAULT_ENOSPC};
	bool all = chance(x, 25); /* full disk everywhere */
	pio_mem_fault_scope(x->io, all ? NULL : "/wal/");
	unsigned kind = (unsigned)rnd(x, 3);
	uint32_t count = all ? 1000000 : 1 + (uint32_t)rnd(x, 3);
	pio_mem_inject(x->io, kinds[kind], count);
	es_log(x, "WAL fault %s x%u%s",
	       kind == 0 ? "write EIO" : kind == 1 ? "fsync EIO" : "ENOSPC",
	       count, all ? " (every file)" : "");
	x->fault_armed = true;
	x->st->faults++;
	burst(x, 2, false);
	clear_faults(x);
	if (x->fatal_seen || chance(x, 30)) {
		/* an fsync error cannot be retried: restart from the log */
		if (chance(x, 50))
			crash_reopen(x, chance(x, 50));
		else
			clean_reopen(x);
	}
}

/* A synchronous append with an expected-last-seq precondition: right
 * (applies at last + 1) or wrong (-PARLEY_ESEQ, nothing appended). */
static void step_cas(struct esim *x)
{
	uint32_t si = (uint32_t)rnd(x, x->ns);
	struct m_stream *s = &x->s[si];
	bool right = chance(x, 70);
	uint64_t expect = right ? s->n : s->n + 1 + rnd(x, 3);
	if (!right && s->n && chance(x, 50))
		expect = rnd(x, s->n);
	struct op o = {.s = si, .key = -1};
	make_spec(x, &o.sp, false);
	struct pe_input in[ES_MAX_COUNT];
	uint8_t *bufs[ES_MAX_COUNT];
	for (uint32_t i = 0; i < o.sp.count; i++) {
		bufs[i] = malloc(o.sp.len[i] ? o.sp.len[i] : 1);
		if (!bufs[i])
			es_fail(x, "out of memory");
		gen_payload(o.sp.pseed[i], o.sp.len[i], bufs[i]);
		in[i] = (struct pe_input){.type = o.sp.type[i],
					  .flags = o.sp.flags[i],
					  .len = o.sp.len[i], .payload = bufs[i]};
	}
	struct pe_append_req rq = {.key = s->key, .klen = s->klen,
				   .expected_last_seq = expect, .entries = in,
				   .count = o.sp.count};
	int rc = pe_append_sync(x->eng, &rq, &o.r);
	for (uint32_t i = 0; i < o.sp.count; i++)
		free(bufs[i]);
	if (check_size_answer(x, s, &o.sp, rc))
		return; /* nothing appended */
	if (rc == -PARLEY_ESEQ || o.r.err == -PARLEY_ESEQ) {
		if (right || o.r.last_seq != s->n)
			es_fail(x, "%s: expected last %" PRIu64 " refused (last_seq %"
				   PRIu64 "), model last %" PRIu64,
				s->key, expect, o.r.last_seq, s->n);
		return;
	}
	if (!rc && !right)
		es_fail(x, "%s: expected last %" PRIu64 " accepted at seq %" PRIu64
			   ", model last %" PRIu64, s->key, expect, o.r.seq, s->n);
	if (rc && !o.r.err)
		o.r.err = rc;
	account(x, &o, false);
	if (x->npend) /* an error with a fault armed: settled at the reopen */
		return;
}

/* Reopen with a fault armed on every file: the open either fails with an
 * error (then succeeds once the disk is healthy) or works; either way
 * nothing acknowledged is lost. */
static void step_open_faults(struct esim *x)
{
	static const enum pio_mem_fault kinds[] = {
		PIO_FAULT_WRITE_EIO, PIO_FAULT_FSYNC_EIO, PIO_FAULT_ENOSPC};
	if (chance(x, 50)) {
		pe_abort(x->eng);
		clear_faults(x);
		pio_mem_crash(x->io, chance(x, 50));
		x->st->crashes++;
	} else {
		pe_close(x->eng);
	}
	x->eng = NULL;
	subs_engine_gone(x);
	pio_mem_inject(x->io, kinds[rnd(x, 3)], 1 + (uint32_t)rnd(x, 4));
	x->st->faults++;
	int rc = engine_open(x);
	trace_u64(x, (uint64_t)(int64_t)rc);
	es_log(x, "open with a fault armed: %s", parley_strerror(rc));
	if (rc) {
		x->st->fault_errors++;
		clear_faults(x);
		es_open(x);
	} else {
		x->st->reopens++;
		x->fatal_seen = false;
		x->fault_armed = true; /* what is left of it may still fire */
	}
	verify_all(x, true);
}

/* Lists every regular file under dir (recursively) into paths. */
struct flist {
	struct esim *x;
	const char *dir;
	char (*paths)[160];
	uint32_t n, cap;
};

static int flist_cb(void *arg, const char *name)
{
	struct flist *fl = arg;
	char path[160];
	snprintf(path, sizeof path, "%s/%s", fl->dir, name);
	if (pio_mem_file_size(fl->x->io, path) >= 0) {
		if (fl->n < fl->cap)
			snprintf(fl->paths[fl->n++], 160, "%s", path);
		return 0;
	}
	struct flist sub = *fl;
	sub.dir = path;
	(void)fl->x->io->ops->list(fl->x->io, path, flist_cb, &sub);
	fl->n = sub.n;
	return 0;
}

/* Where the written part of a WAL segment ends: one past its last
 * non-zero byte (segments are pre-zeroed), 0 when unreadable. */
static uint64_t log_end(struct esim *x, const char *path)
{
	struct pio_file *f;
	if (x->io->ops->open(x->io, path, 0, &f))
		return 0;
	int64_t size = x->io->ops->size(x->io, f);
	uint8_t *buf = size > 0 ? malloc((size_t)size) : NULL;
	uint64_t end = 0;
	if (buf && x->io->ops->pread(x->io, f, buf, (size_t)size, 0) == size)
		for (end = (uint64_t)size; end > 0 && !buf[end - 1]; end--)
			;
	free(buf);
	x->io->ops->close(x->io, f);
	return end;
}

/* Flip one bit of a stored file after a clean close, reopen, and check
 * that every answer is the model's or a clear error. With `restore`, then
 * close, flip the bit back and reopen: the engine must not have damaged
 * anything while it ran on the flipped file, so everything must check out
 * again (what an operator restoring the file from a backup expects). */
static bool step_flip(struct esim *x, bool restore)
{
	subs_stop_all(x); /* a tainted engine may close them with errors */
	pe_close(x->eng);
	x->eng = NULL;
	char paths[256][160];
	struct flist fl = {.x = x, .dir = ES_DIR, .paths = paths, .cap = 256};
	(void)x->io->ops->list(x->io, ES_DIR, flist_cb, &fl);
	/* aim at data: WAL segments and history segments */
	uint32_t cand[256], nc = 0;
	for (uint32_t i = 0; i < fl.n; i++)
		if (strstr(paths[i], "/wal-") || strstr(paths[i], "/seg-"))
			cand[nc++] = i;
	const char *path = nc ? paths[cand[rnd(x, nc)]] : NULL;
	int64_t size = path ? pio_mem_file_size(x->io, path) : 0;
	if (size <= 0) {
		es_open(x);
		return false;
	}
	uint64_t span = (uint64_t)size;
	if (strstr(path, "/wal-") && chance(x, 80))
		span = PARLEY_MIN(span, 256u * 1024u); /* where the log is */
	uint64_t off = rnd(x, span);
	uint64_t end = strstr(path, "/wal-") ? log_end(x, path) : 0;
	if (end > 64 && chance(x, 40)) /* the last batch: a torn tail? */
		off = end - 1 - rnd(x, PARLEY_MIN(end, 2048u));
	unsigned bit = (unsigned)rnd(x, 8);
	if (pio_mem_flip_bit(x->io, path, off, bit))
		es_fail(x, "flip %s", path);
	x->st->flips++;
	es_log(x, "flip %s offset %" PRIu64 " bit %u", path, off, bit);
	int rc = engine_open(x);
	trace_u64(x, (uint64_t)(int64_t)rc);
	bool detected = rc != 0;
	if (rc) {
		es_log(x, "open after flip: %s", parley_strerror(rc));
	} else {
		for (uint32_t i = 0; i < x->ns; i++)
			detected |= verify_stream(x, i, false, true);
		for (uint32_t p = 0; p < pe_partition_count(x->eng); p++) {
			struct pe_partition_status ps;
			if (pe_partition_status(x->eng, p, &ps) == 0 &&
			    ps.state == PE_PART_CORRUPT)
				detected = true;
		}
	}
	x->st->flips_detected += detected;
	if (!restore)
		return true;
	if (x->eng)
		pe_close(x->eng);
	x->eng = NULL;
	/* the file may be gone: compaction replaced a segment it could read
	 * whole (the flip was in bytes no checksum covers), or a WAL segment
	 * was released after a flush */
	rc = pio_mem_flip_bit(x->io, path, off, bit);
	if (rc && rc != -ENOENT)
		es_fail(x, "flip back %s: %d", path, rc);
	es_log(x, "flip back %s offset %" PRIu64 " bit %u: %s", path, off, bit,
	       rc ? "file gone" : "ok");
	es_open(x);
	if (!detected) {
		verify_all(x, false);
		return false;
	}
	/* The engine saw the damage. Nothing it did since may have made the
	 * loss permanent: once the bit is back, every acknowledged entry
	 * must read back. (A recovery that took a flipped record in the
	 * last WAL batch for a torn tail used to append over it, over the
	 * bytes the high-water mark said were durable: seed 3019.) */
	for (uint32_t i = 0; i < x->ns; i++)
		if (verify_stream(x, i, false, true)) {
			x->st->flip_damage++;
			es_fail(x, "%s: still unreadable after the flipped bit in "
				   "%s was restored: the engine made the damage "
				   "permanent", x->s[i].key, path);
		}
	verify_all(x, false);
	return false;
}

/* ---- the run ------------------------------------------------------------- */

static void setup(struct esim *x)
{
	x->io = pio_mem_new(x->seed ^ 0x5EEDull);
	if (!x->io)
		es_fail(x, "pio_mem_new");
	x->now_ms = 1700000000000ull + rnd(x, 1000000000ull);
	struct pe_options *o = &x->opt;
	memset(o, 0, sizeof *o);
	o->dir = ES_DIR;
	o->io = x->io;
	o->partitions = 1 + (uint32_t)rnd(x, 8);
	o->shards = 1 + (uint32_t)rnd(x, PARLEY_MIN(o->partitions, 2u));
	o->memtable_bytes = (64u << 10) << rnd(x, 6); /* 64 KiB .. 2 MiB */
	o->no_auto_flush = chance(x, 30);
	o->no_auto_compact = chance(x, 50);
	o->block_cache_bytes = (128u << 10) << rnd(x, 4);
	o->compaction_rate = 1ull << 40; /* no throttling sleeps */
	/* A small idempotency table (few keys, a window of minutes) in a
	 * quarter of the seeds; PARLEY_ESIM_IDEM_BOUNDED=0 turns it off (see
	 * the top); the draws happen either way so that turning it off does
	 * not change the rest of a seed's workload. */
	bool bounded = chance(x, 25);
	uint32_t max_keys = 8 + (uint32_t)rnd(x, 64);
	uint64_t window = 60000ull * (5 + rnd(x, 30));
	const char *ib = getenv("PARLEY_ESIM_IDEM_BOUNDED");
	x->idem_bounded = bounded && !(ib && *ib == '0');
	if (x->idem_bounded) {
		x->st->idem_bounded++;
		o->idem_max_keys = max_keys;
		o->idem_window_ms = window;
	}
	o->clock_ms = clock_cb;
	o->clock_arg = x;
	x->rules[0] = (struct pe_retention_rule){.prefix = "r/", .plen = 2,
						  .max_count = ES_RET_COUNT};
	x->rules[1] = (struct pe_retention_rule){.prefix = "a/", .plen = 2,
						  .max_age_ms = ES_RET_AGE_MS};
	o->retention = x->rules;
	o->nretention = 2;
	x->ns = 8 + (uint32_t)rnd(x, ES_MAX_STREAMS - 8);
	for (uint32_t i = 0; i < x->ns; i++) {
		struct m_stream *s = &x->s[i];
		memset(s, 0, sizeof *s);
		unsigned k = (unsigned)rnd(x, 10);
		const char *pre = k == 0 ? "r/" : k == 1 ? "a/" : "s/";
		s->ret = k == 0 ? RET_COUNT : k == 1 ? RET_AGE : RET_NONE;
		s->klen = (uint32_t)snprintf(s->key, sizeof s->key, "%s%u", pre, i);
		s->first = 1;
	}
	int rc = x->io->ops->mkdir(x->io, ES_DIR);
	if (!rc) /* the data directory exists before the engine runs */
		rc = x->io->ops->fsync_dir(x->io, "/");
	if (rc)
		es_fail(x, "mkdir: %d", rc);
	/* most runs: a crash also loses namespace changes (create, rename,
	 * unlink, mkdir) whose directory was not fsync'd */
	x->strict_dirs = chance(x, 75);
	pio_mem_strict_dirs(x->io, x->strict_dirs);
	es_open(x);
	for (uint32_t i = 0; i < x->ns; i++)
		x->s[i].part = pe_partition_of(x->eng, x->s[i].key, x->s[i].klen);
}

static void teardown(struct esim *x)
{
	if (x->eng)
		pe_close(x->eng);
	for (int i = 0; i < ES_MAX_SUBS; i++)
		free(x->subs[i].got);
	pio_free(x->io);
	for (uint32_t i = 0; i < x->ns; i++) {
		free(x->s[i].e);
		free(x->s[i].keys);
	}
	free(x->pend);
}

static int cmp_path(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The whole stored state (every file's path and synced-or-not bytes as
 * the engine would read them) into the trace. */
static void trace_disk(struct esim *x)
{
	static char paths[1024][160];
	struct flist fl = {.x = x, .dir = ES_DIR, .paths = paths, .cap = 1024};
	(void)x->io->ops->list(x->io, ES_DIR, flist_cb, &fl);
	/* list order is the backend's: sort for a stable hash */
	qsort(paths, fl.n, sizeof paths[0], cmp_path);
	for (uint32_t i = 0; i < fl.n; i++) {
		trace(x, paths[i], strlen(paths[i]));
		struct pio_file *f;
		if (x->io->ops->open(x->io, paths[i], 0, &f))
			continue;
		int64_t size = x->io->ops->size(x->io, f);
		trace_u64(x, (uint64_t)size);
		uint8_t *buf = size > 0 ? malloc((size_t)size) : NULL;
		if (buf && x->io->ops->pread(x->io, f, buf, (size_t)size, 0) == size)
			trace(x, buf, (size_t)size);
		if (x->verbose >= 3)
			fprintf(stderr, "esim disk %s %" PRId64 " %016" PRIx64 "\n",
				paths[i], size, x->trace);
		free(buf);
		x->io->ops->close(x->io, f);
	}
}

int esim_run(uint64_t seed, uint32_t steps, int verbose,
	     struct esim_stats *st, uint64_t *trace_out)
{
	struct esim *x = calloc(1, sizeof *x);
	if (!x)
		return -1;
	if (!g_scratch)
		g_scratch = malloc(PE_MAX_PAYLOAD);
	x->seed = seed;
	x->verbose = verbose;
	x->rng.s = seed;
	x->vrng.s = seed ^ 0x7E41F1ull;
	x->srng.s = seed ^ 0x5C4ED11ull ^ g_sched;
	static const uint32_t slow[] = {1000, 1000, 100, 10};
	x->slow_pm[0] = 1000;
	x->slow_pm[1] = slow[parley_rng_below(&x->srng, 4)];
	x->slow_pm[2] = slow[parley_rng_below(&x->srng, 4)];
	x->frng.s = seed ^ 0xF11Bull;
	x->trace = seed;
	x->st = st;
	g_cur = x;
	setup(x);
	for (x->step = 0; x->step < steps; x->step++) {
		st->steps++;
		if (verbose >= 3) /* where two runs of a seed part */
			fprintf(stderr, "esim %" PRIu64 " step %u trace %016" PRIx64
				" srng %016" PRIx64 "\n", seed, x->step,
				x->trace, x->srng.s);
		x->now_ms += rnd(x, 100) < 5 ? 30000 + rnd(x, 60000) : rnd(x, 2000);
		unsigned pick = (unsigned)rnd(x, 1000);
		if (g_flip_pm && parley_rng_below(&x->frng, 1000) < g_flip_pm) {
			/* PARLEY_ESIM_FLIP_PM: more flip-and-restore steps
			 * (their own draws: the workload stays the seed's) */
			(void)step_flip(x, true);
			continue;
		}
		if (pick < 420) {
			burst(x, 0, false);
			if (chance(x, 30))
				sub_check(x, true);
		} else if (pick < 440)
			burst(x, 0, true);
		else if (pick < 620)
			step_read(x);
		else if (pick < 670)
			step_delete(x, -1);
		else if (pick < 780)
			step_history(x, false);
		else if (pick < 820)
			step_history(x, true);
		else if (pick < 890)
			burst(x, 1, false);
		else if (pick < 930)
			step_wal_fault(x);
		else if (pick < 945)
			clean_reopen(x);
		else if (pick < 960)
			crash_reopen(x, chance(x, 50));
		else if (pick < 970)
			step_open_faults(x);
		else if (pick < 978)
			step_cas(x);
		else if (pick < 985)
			step_sub(x);
		else if (pick < 990)
			(void)step_flip(x, true);
		else
			verify_all(x, false);
		if (x->fatal_seen) /* nothing else is possible */
			crash_reopen(x, chance(x, 50));
		else if (chance(x, 50)) /* background work runs on a while */
			es_idle(x, (uint32_t)rnd(x, 60));
	}
	if (x->step == steps) {
		verify_all(x, false);
		subs_stop_all(x);
		if (chance(x, 50))
			(void)step_flip(x, false);
		else
			clean_reopen(x);
	}
	if (x->eng) {
		pe_close(x->eng);
		x->eng = NULL;
	}
	if (x->verbose >= 3)
		fprintf(stderr, "esim before disk %016" PRIx64 "\n", x->trace);
	trace_disk(x);
	if (trace_out)
		*trace_out = x->trace;
	teardown(x);
	free(x);
	g_cur = NULL;
	return 0;
}

int esim_main(const char *name, uint64_t base, uint64_t n, uint32_t steps,
	      bool replay)
{
	const char *v = getenv("PARLEY_ESIM_SEED");
	if (v && *v) {
		base = strtoull(v, NULL, 0);
		n = 1;
	}
	if ((v = getenv("PARLEY_ESIM_BASE")) && *v)
		base = strtoull(v, NULL, 0);
	if ((v = getenv("PARLEY_ESIM_SEEDS")) && *v)
		n = strtoull(v, NULL, 0);
	if ((v = getenv("PARLEY_ESIM_STEPS")) && *v)
		steps = (uint32_t)strtoul(v, NULL, 0);
	int verbose = (v = getenv("PARLEY_ESIM_VERBOSE")) ? atoi(v) : 0;
	if ((v = getenv("PARLEY_ESIM_FLIP_PM")) && *v)
		g_flip_pm = (uint32_t)strtoul(v, NULL, 0);
	if ((v = getenv("PARLEY_ESIM_SCHED")) && *v)
		g_sched = strtoull(v, NULL, 0);
	if ((v = getenv("PARLEY_ESIM_REPLAY")) && *v)
		replay = *v != '0';
	/* the faults make the engine log errors by design */
	parley_log_set_level(verbose ? PLOG_INFO : PLOG_ERROR);
	/* Every reopen reads whole 16 MiB WAL segments into fresh buffers:
	 * keep freed memory in the heap instead of returning it to the
	 * kernel, so each read does not page-fault its buffer in again
	 * (most of a run's time otherwise). Glibc only; a test knob. */
	(void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
	(void)mallopt(M_TRIM_THRESHOLD, 512 << 20);
	/* and grow the heap 256 MiB at a time: half the page faults of a
	 * run otherwise (seed 100150, 60 steps: 743,804 -> 378,685) */
	(void)mallopt(M_TOP_PAD, 256 << 20);
	struct esim_stats st = {0};
	for (uint64_t i = 0; i < n; i++) {
		fprintf(stderr, "%s: seed %" PRIu64 "\n", name, base + i);
		uint64_t h = 0;
		esim_run(base + i, steps, verbose, &st, &h);
		if (replay) {
			/* the same seed again: every observation and the
			 * final disk image must be the same, bit for bit */
			struct esim_stats st2 = {0};
			uint64_t h2 = 0;
			esim_run(base + i, steps, verbose, &st2, &h2);
			if (h2 != h) {
				fprintf(stderr, "%s: FAIL seed %" PRIu64 " does not "
					"replay: trace %016" PRIx64 " then %016"
					PRIx64 "\n", name, base + i, h, h2);
				return 1;
			}
		}
		fprintf(stderr, "%s: seed %" PRIu64 " trace %016" PRIx64 "\n",
			name, base + i, h);
	}
	printf("%s: seeds=%" PRIu64 " (%" PRIu64 "..%" PRIu64 ") steps/seed=%u"
	       " acked=%" PRIu64 " dups=%" PRIu64 " reads=%" PRIu64
	       " deletes=%" PRIu64 " flushes=%" PRIu64 " compactions=%" PRIu64
	       " crashes=%" PRIu64 " torn=%" PRIu64 " reopens=%" PRIu64
	       " unacked_recovered=%" PRIu64 " unacked_lost=%" PRIu64
	       " faults=%" PRIu64 " fault_errors=%" PRIu64 " flips=%" PRIu64
	       " flips_detected=%" PRIu64 " flip_damage=%" PRIu64 " subs=%" PRIu64
	       " sub_entries=%" PRIu64 " idem_bounded=%" PRIu64
	       " refused_too_big=%" PRIu64 " OK\n",
	       name, n, base, base + n - 1, steps, st.acked, st.dups, st.reads,
	       st.deletes, st.flushes, st.compactions, st.crashes, st.torn,
	       st.reopens, st.recovered_unacked, st.lost_unacked, st.faults,
	       st.fault_errors, st.flips, st.flips_detected, st.flip_damage, st.subs,
	       st.sub_entries, st.idem_bounded, st.refused);
	return 0;
}

int esim_cases(const char *name, const struct esim_case *cases, uint32_t n)
{
	const char *v = getenv("PARLEY_ESIM_SEED");
	uint64_t only = v && *v ? strtoull(v, NULL, 0) : 0;
	int verbose = (v = getenv("PARLEY_ESIM_VERBOSE")) ? atoi(v) : 0;
	parley_log_set_level(verbose ? PLOG_INFO : PLOG_ERROR);
	(void)mallopt(M_MMAP_THRESHOLD, 32 << 20); /* as esim_main */
	(void)mallopt(M_TRIM_THRESHOLD, 512 << 20);
	(void)mallopt(M_TOP_PAD, 256 << 20);
	struct esim_stats st = {0};
	uint32_t ran = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct esim_case *c = &cases[i];
		if (only && c->seed != only)
			continue;
		fprintf(stderr, "%s: seed %" PRIu64 " (%u steps): %s\n", name,
			c->seed, c->steps, c->why);
		g_flip_pm = c->flip_pm;
		uint64_t h = 0;
		esim_run(c->seed, c->steps, verbose, &st, &h);
		g_flip_pm = 0;
		ran++;
	}
	printf("%s: cases=%u steps=%" PRIu64 " acked=%" PRIu64 " crashes=%"
	       PRIu64 " faults=%" PRIu64 " flips=%" PRIu64
	       " refused_too_big=%" PRIu64 " OK\n",
	       name, ran, st.steps, st.acked, st.crashes, st.faults, st.flips,
	       st.refused);
	return 0;
}
