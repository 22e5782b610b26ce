/*
 * bench_engine.c — `parley-bench engine`: durable append throughput and ack
 * latency of the storage engine on the real disk (io_uring backend).
 *
 * Each run point opens the engine on a fresh temp data directory under
 * --dir and closes and deletes it afterwards.
 *
 * Closed loop (no --rate): N producers, each with its own stream
 * "bench/p<i>" and exactly one append outstanding: the append callback (on
 * the engine shard thread) records the latency from issue to ack and issues
 * the producer's next append. This finds saturation throughput at a given
 * concurrency. Latency here is service time under that concurrency.
 *
 * Open loop (--rate R): a pacer thread (the main thread) issues append k at
 * its intended time t0 + k/R, round-robin over the N streams, whether or not
 * earlier appends were acked; latency is measured from the INTENDED time, so
 * a stall delays every append scheduled during it and shows up in the
 * percentiles (no coordinated omission). Slots the pacer could not issue
 * before the end (engine back-pressure, or more than OPEN_MAX_OUTSTANDING
 * in flight) are counted as not_sent and reported.
 *
 * Measurement window: after --warmup seconds, for --seconds. Closed loop
 * counts acks that complete inside the window; open loop counts appends
 * whose intended time is inside the window (and waits for them to finish,
 * up to BENCH_DRAIN_SECONDS).
 *
 * Ownership/threads: struct producer is written by the callbacks of its own
 * stream (which run serially on the one shard owning the stream) and by the
 * main thread only before the run starts and after it has drained.
 * `outstanding` and `stalled` are atomics shared with the main thread.
 * Syncs/s come from pe_stats() (WAL write+fdatasync rounds) when the engine
 * provides it (weak symbol), else they are reported as not available.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h" /* pe_flush_sync: --history-readers */

/* Present only once the engine implements it; checked at run time. */
#pragma weak pe_stats
#pragma weak pe_stage_stats
#pragma weak pe_stage_name
#pragma weak pe_hist_bucket_le_ns

#define OPEN_MAX_OUTSTANDING 200000u

struct eng_run;

struct producer {
	struct eng_run *run;
	uint32_t idx;
	char key[32];
	size_t klen;
	uint64_t sent_ns;        /* closed loop: issue time of the append */
	uint64_t next_idem;      /* counter for idempotent producer ids */
	uint64_t acks;           /* inside the window */
	uint64_t errors;
	int last_err;
	atomic_bool stalled;     /* closed loop: EFULL on reissue, main retries */
	struct bench_hist hist;
};

struct eng_run {
	struct pe_engine *e;
	const uint8_t *payload;
	uint32_t payload_len;
	bool open_loop;
	bool idem;
	uint64_t win_start_ns;
	uint64_t win_end_ns;
	atomic_bool stop;
	atomic_long outstanding;
	struct producer *p;
	uint32_t np;
};

/* open-loop request context: malloc'd by the pacer, freed by the callback */
struct open_req {
	struct producer *p;
	uint64_t intended_ns;
};

static struct bench_hist *pacer_lag; /* main thread only */

static void fill_req(struct producer *p, struct pe_append_req *req,
		     struct pe_input *in)
{
	struct eng_run *run = p->run;
	memset(req, 0, sizeof *req);
	in->type = 1;
	in->flags = 0;
	in->len = run->payload_len;
	in->payload = run->payload;
	req->key = p->key;
	req->klen = p->klen;
	req->expected_last_seq = PE_NO_EXPECT;
	req->entries = in;
	req->count = 1;
	if (run->idem) {
		/* unique per append: (producer index, counter), never zero */
		uint64_t c = ++p->next_idem;
		le_put32(req->producer, p->idx + 1);
		le_put64(req->producer + 8, c);
	}
}

static void closed_cb(void *arg, const struct pe_append_result *r);

/* Issues the producer's next closed-loop append. Returns 0 or -errno. */
static int closed_issue(struct producer *p)
{
	struct pe_append_req req;
	struct pe_input in;
	fill_req(p, &req, &in);
	atomic_fetch_add(&p->run->outstanding, 1);
	p->sent_ns = parley_mono_ns();
	int rc = pe_append(p->run->e, &req, closed_cb, p);
	if (rc != 0)
		atomic_fetch_sub(&p->run->outstanding, 1);
	return rc;
}

static void closed_cb(void *arg, const struct pe_append_result *r)
{
	struct producer *p = arg;
	struct eng_run *run = p->run;
	uint64_t now = parley_mono_ns();
	if (r->err != 0) {
		p->errors++;
		p->last_err = r->err;
	} else if (now >= run->win_start_ns && now <= run->win_end_ns) {
		p->acks++;
		bench_hist_record(&p->hist, now - p->sent_ns);
	}
	if (!atomic_load(&run->stop) && r->err == 0) {
		int rc = closed_issue(p);
		if (rc == -PARLEY_EFULL || rc == -PARLEY_EAGAIN) {
			atomic_store(&p->stalled, true);
		} else if (rc != 0) {
			p->errors++;
			p->last_err = rc;
		}
	}
	atomic_fetch_sub(&run->outstanding, 1);
}

static void open_cb(void *arg, const struct pe_append_result *r)
{
	struct open_req *q = arg;
	struct producer *p = q->p;
	struct eng_run *run = p->run;
	uint64_t now = parley_mono_ns();
	if (r->err != 0) {
		p->errors++;
		p->last_err = r->err;
	} else if (q->intended_ns >= run->win_start_ns &&
		   q->intended_ns < run->win_end_ns) {
		p->acks++;
		bench_hist_record(&p->hist, now - q->intended_ns);
	}
	free(q);
	atomic_fetch_sub(&run->outstanding, 1);
}

/* Returns 0, or -PARLEY_EFULL (retry later), or another error. */
static int open_issue(struct producer *p, uint64_t intended)
{
	struct open_req *q = malloc(sizeof *q);
	if (!q)
		return -ENOMEM;
	q->p = p;
	q->intended_ns = intended;
	struct pe_append_req req;
	struct pe_input in;
	fill_req(p, &req, &in);
	atomic_fetch_add(&p->run->outstanding, 1);
	uint64_t now = parley_mono_ns();
	int rc = pe_append(p->run->e, &req, open_cb, q);
	if (rc != 0) {
		atomic_fetch_sub(&p->run->outstanding, 1);
		free(q);
	} else if (intended >= p->run->win_start_ns && intended < p->run->win_end_ns) {
		bench_hist_record(pacer_lag, now - intended);
	}
	return rc;
}

/* ---- history readers (--history-readers) --------------------------------------------- */

#define HR_STREAMS 64u   /* streams flushed to history before the run */
#define HR_ENTRIES 300u  /* entries each */
#define HR_PAGE 50u      /* entries per read */

struct hreader {
	pthread_t t;
	struct pe_engine *e;
	atomic_bool *stop;
	uint64_t seed;
	uint64_t win_start_ns, win_end_ns;
	uint64_t reads, errors;
	struct bench_hist lat;  /* reads started inside the window */
};

static void *hreader_main(void *arg)
{
	struct hreader *h = arg;
	uint64_t x = h->seed | 1;
	while (!atomic_load(h->stop)) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		char key[32];
		int kl = snprintf(key, sizeof key, "bench/h%u",
				  (unsigned)(x % HR_STREAMS));
		struct pe_read_req q = {.key = key, .klen = (size_t)kl,
					.from = 1 + (x >> 8) % (HR_ENTRIES - HR_PAGE),
					.dir = PE_FORWARD, .limit = HR_PAGE};
		struct pe_entry *es = NULL;
		uint32_t n = 0;
		struct pe_read_result rr;
		uint64_t t0 = parley_mono_ns();
		int rc = pe_read_sync(h->e, &q, &es, &n, &rr);
		uint64_t t1 = parley_mono_ns();
		free(es);
		if (rc || rr.err || n != HR_PAGE) {
			h->errors++;
			continue;
		}
		if (t0 >= h->win_start_ns && t0 < h->win_end_ns) {
			h->reads++;
			bench_hist_record(&h->lat, t1 - t0);
		}
	}
	return NULL;
}

/* HR_STREAMS streams of HR_ENTRIES entries, flushed into segments. */
static int hreaders_prefill(struct pe_engine *e, const uint8_t *payload,
			    uint32_t len)
{
	for (uint32_t s = 0; s < HR_STREAMS; s++) {
		char key[32];
		int kl = snprintf(key, sizeof key, "bench/h%u", s);
		for (uint32_t i = 0; i < HR_ENTRIES; i += 10) {
			struct pe_input in[10];
			for (int k = 0; k < 10; k++)
				in[k] = (struct pe_input){.type = 1, .len = len,
							  .payload = payload};
			struct pe_append_req q = {.key = key, .klen = (size_t)kl,
						  .expected_last_seq = PE_NO_EXPECT,
						  .entries = in, .count = 10};
			struct pe_append_result r;
			int rc = pe_append_sync(e, &q, &r);
			if (rc || r.err)
				return rc ? rc : r.err;
		}
	}
	for (uint32_t p = 0; p < pe_partition_count(e); p++) {
		int rc = pe_flush_sync(e, p);
		if (rc)
			return rc;
	}
	return 0;
}

static bool have_stats(void)
{
	return pe_stats != NULL;
}

static void get_stats(struct pe_engine *e, struct pe_stats *s)
{
	memset(s, 0, sizeof *s);
	if (have_stats())
		pe_stats(e, s);
}

/* Open loop: where the window's appends spent their time, per engine stage
 * (pe_stage_stats deltas over the window; quantiles are log2 bucket upper
 * bounds, so "<= x"). Printed to stderr, one line per stage. */
static void print_stages(const struct pe_stage_hist *a,
			 const struct pe_stage_hist *b, double rate)
{
	fprintf(stderr, "parley-bench: engine stages, open loop at %.0f appends/s "
		"(window deltas; p50/p99 are log2-bucket upper bounds):\n", rate);
	for (int s = 0; s < PE_STAGE_COUNT; s++) {
		uint64_t n = b[s].count - a[s].count;
		uint64_t q50 = 0, q99 = 0, cum = 0;
		for (unsigned k = 0; k < PE_HIST_BUCKETS && n; k++) {
			cum += b[s].buckets[k] - a[s].buckets[k];
			if (!q50 && cum * 2 >= n)
				q50 = pe_hist_bucket_le_ns(k);
			if (!q99 && cum * 100 >= n * 99)
				q99 = pe_hist_bucket_le_ns(k);
		}
		fprintf(stderr, "  %-8s n=%-9llu mean=%9.1f us  p50<=%9.1f us  p99<=%9.1f us\n",
			pe_stage_name((enum pe_stage)s), (unsigned long long)n,
			n ? (double)(b[s].sum_ns - a[s].sum_ns) / (double)n / 1e3 : 0.0,
			(double)q50 / 1e3, (double)q99 / 1e3);
	}
}

int bench_engine_run(const struct bench_cfg *cfg, uint32_t producers,
		     uint32_t payload, double rate, struct load_result *out)
{
	bench_load_begin(out, "parley", producers, payload, rate);
	pacer_lag = &out->lag;

	if (producers == 0 || producers > BENCH_MAX_PRODUCERS || payload == 0 ||
	    payload > PE_MAX_PAYLOAD)
		return -PARLEY_EINVAL;

	char *tmp = bench_mkdtemp(cfg->dir, "engine");
	if (!tmp) {
		fprintf(stderr, "parley-bench: engine: cannot create a temp dir under %s: %s\n",
			cfg->dir, strerror(errno));
		return -errno;
	}
	char datadir[4096];
	snprintf(datadir, sizeof datadir, "%s/data", tmp);

	uint8_t *buf = malloc(payload);
	struct eng_run *run = calloc(1, sizeof *run);
	struct producer *ps = calloc(producers, sizeof *ps);
	int rc = 0;
	if (!buf || !run || !ps) {
		rc = -ENOMEM;
		goto out_free;
	}
	bench_fill_payload(buf, payload, cfg->seed);
	run->payload = buf;
	run->payload_len = payload;
	run->open_loop = rate > 0;
	run->idem = cfg->idem;
	run->p = ps;
	run->np = producers;
	atomic_init(&run->stop, false);
	atomic_init(&run->outstanding, 0);
	for (uint32_t i = 0; i < producers; i++) {
		ps[i].run = run;
		ps[i].idx = i;
		ps[i].klen = (size_t)snprintf(ps[i].key, sizeof ps[i].key, "bench/p%u", i);
		atomic_init(&ps[i].stalled, false);
		bench_hist_init(&ps[i].hist);
	}

	struct pe_options opt = {0};
	opt.dir = datadir;
	opt.partitions = cfg->partitions;
	opt.shards = cfg->shards;
	opt.io = NULL; /* io_uring on the real disk */
	if (cfg->hist_readers)
		opt.block_cache_bytes = 1; /* every history read decompresses */
	double t_open = bench_now_s();
	rc = pe_open(&opt, &run->e);
	if (rc != 0) {
		fprintf(stderr, "parley-bench: engine: pe_open(%s): %s\n", datadir,
			parley_strerror(rc));
		goto out_free;
	}
	struct hreader *hrs = NULL;
	atomic_bool hr_stop = false;
	uint32_t nhr = 0;
	if (cfg->hist_readers) {
		rc = hreaders_prefill(run->e, buf, payload);
		hrs = rc ? NULL : calloc(cfg->hist_readers, sizeof *hrs);
		if (rc || !hrs) {
			fprintf(stderr, "parley-bench: engine: history prefill: %s\n",
				parley_strerror(rc ? rc : -PARLEY_ENOMEM));
			rc = rc ? rc : -ENOMEM;
			pe_close(run->e);
			goto out_free;
		}
	}
	if (cfg->verbose)
		fprintf(stderr, "parley-bench: engine: opened %s in %.2fs\n", datadir,
			bench_now_s() - t_open);

	/* short timer slack: the open-loop pacer sleeps in small steps */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

	uint64_t t0 = parley_mono_ns();
	run->win_start_ns = t0 + (uint64_t)(cfg->warmup * 1e9);
	run->win_end_ns = run->win_start_ns + (uint64_t)(cfg->seconds * 1e9);
	for (uint32_t i = 0; i < cfg->hist_readers; i++) {
		hrs[i] = (struct hreader){.e = run->e, .stop = &hr_stop,
					  .seed = cfg->seed * 7919 + i + 1,
					  .win_start_ns = run->win_start_ns,
					  .win_end_ns = run->win_end_ns};
		bench_hist_init(&hrs[i].lat);
		if (pthread_create(&hrs[i].t, NULL, hreader_main, &hrs[i]))
			break;
		nhr++;
	}
	struct pe_stats s0 = {0}, s1 = {0};
	struct pe_stage_hist h0[PE_STAGE_COUNT], h1[PE_STAGE_COUNT];
	bool s0_taken = false;
	bool have_stages = pe_stage_stats != NULL;
	uint64_t not_sent = 0;

	if (!run->open_loop) {
		for (uint32_t i = 0; i < producers; i++) {
			int r = closed_issue(&ps[i]);
			if (r == -PARLEY_EFULL || r == -PARLEY_EAGAIN)
				atomic_store(&ps[i].stalled, true);
			else if (r != 0) {
				fprintf(stderr, "parley-bench: engine: pe_append: %s\n",
					parley_strerror(r));
				rc = r;
				break;
			}
		}
		while (rc == 0) {
			uint64_t now = parley_mono_ns();
			if (!s0_taken && now >= run->win_start_ns) {
				get_stats(run->e, &s0);
				s0_taken = true;
			}
			if (now >= run->win_end_ns)
				break;
			for (uint32_t i = 0; i < producers; i++) {
				if (atomic_load(&ps[i].stalled)) {
					atomic_store(&ps[i].stalled, false);
					int r = closed_issue(&ps[i]);
					if (r == -PARLEY_EFULL || r == -PARLEY_EAGAIN)
						atomic_store(&ps[i].stalled, true);
				}
			}
			bench_sleep_ns(1000000); /* 1 ms */
		}
		get_stats(run->e, &s1);
	} else {
		uint64_t interval_ns = (uint64_t)(1e9 / rate);
		if (interval_ns == 0)
			interval_ns = 1;
		uint64_t k = 0;
		uint64_t next = t0;
		while (rc == 0) {
			uint64_t now = parley_mono_ns();
			if (!s0_taken && now >= run->win_start_ns) {
				get_stats(run->e, &s0);
				if (have_stages)
					pe_stage_stats(run->e, h0);
				s0_taken = true;
			}
			if (next >= run->win_end_ns)
				break;
			/* issue everything that is due (bursts after a late wake-up) */
			while (next <= now && next < run->win_end_ns) {
				if (atomic_load(&run->outstanding) >= (long)OPEN_MAX_OUTSTANDING)
					break;
				int r = open_issue(&ps[k % producers], next);
				if (r == -PARLEY_EFULL || r == -PARLEY_EAGAIN)
					break; /* retry the same slot on the next round */
				if (r != 0) {
					fprintf(stderr, "parley-bench: engine: pe_append: %s\n",
						parley_strerror(r));
					rc = r;
					break;
				}
				k++;
				next = t0 + (uint64_t)((double)k * 1e9 / rate);
			}
			if (rc != 0)
				break;
			uint64_t after = parley_mono_ns();
			if (next > after)
				bench_sleep_until_ns(next);
			else
				bench_sleep_ns(20000); /* behind: let the shards run */
		}
		/* slots of the window the pacer never issued */
		if (next < run->win_end_ns)
			not_sent = (run->win_end_ns - next) / interval_ns;
		get_stats(run->e, &s1);
		if (have_stages && s0_taken) {
			pe_stage_stats(run->e, h1);
			print_stages(h0, h1, rate);
		}
	}

	/* stop and drain (bounded) */
	atomic_store(&run->stop, true);
	atomic_store(&hr_stop, true);
	if (nhr) {
		struct bench_hist all;
		bench_hist_init(&all);
		uint64_t reads = 0, errs = 0;
		for (uint32_t i = 0; i < nhr; i++) {
			pthread_join(hrs[i].t, NULL);
			bench_hist_merge(&all, &hrs[i].lat);
			reads += hrs[i].reads;
			errs += hrs[i].errors;
		}
		fprintf(stderr, "parley-bench: engine: %u history readers alongside "
			"(%u producers, %u B%s): %.0f pages/s of %u entries, page "
			"p50 %.1f us p99 %.1f us, %llu errors\n", nhr, producers,
			payload, run->open_loop ? ", open loop" : "",
			(double)reads / cfg->seconds, HR_PAGE,
			(double)bench_hist_quantile(&all, 0.5) / 1e3,
			(double)bench_hist_quantile(&all, 0.99) / 1e3,
			(unsigned long long)errs);
	}
	free(hrs);
	uint64_t drain_end = parley_mono_ns() + (uint64_t)(BENCH_DRAIN_SECONDS * 1e9);
	while (atomic_load(&run->outstanding) > 0 && parley_mono_ns() < drain_end)
		bench_sleep_ns(1000000);
	long left = atomic_load(&run->outstanding);
	if (left > 0) {
		/* pe_close completes in-flight appends and runs their callbacks */
		snprintf(out->note, sizeof out->note,
			 "%ld appends still in flight after %.0fs drain", left,
			 BENCH_DRAIN_SECONDS);
	}
	pe_close(run->e);
	run->e = NULL;

	double window_s = cfg->seconds;
	for (uint32_t i = 0; i < producers; i++) {
		bench_hist_merge(&out->lat, &ps[i].hist);
		out->acks += ps[i].acks;
		out->errors += ps[i].errors;
		if (ps[i].errors && !out->note[0])
			snprintf(out->note, sizeof out->note, "append error: %s",
				 parley_strerror(ps[i].last_err));
	}
	out->seconds = window_s;
	out->not_sent = not_sent;
	out->appends_per_s = (double)out->acks / window_s;
	out->mb_per_s = out->appends_per_s * payload / BENCH_MB;
	if (have_stats() && s0_taken) {
		out->have_stats = true;
		double batches = (double)(s1.wal_batches - s0.wal_batches);
		out->syncs_per_s = batches / window_s;
		out->wal_mb_per_s = (double)(s1.wal_bytes - s0.wal_bytes) / BENCH_MB / window_s;
		out->entries_per_sync =
			batches > 0 ? (double)(s1.entries - s0.entries) / batches : 0;
		out->mean_sync_us =
			batches > 0 ? (double)(s1.fsync_ns_total - s0.fsync_ns_total) / batches / 1e3
				    : 0;
	}
	out->ok = rc == 0 && out->errors == 0;

out_free:
	free(ps);
	free(run);
	free(buf);
	int rr = bench_rmtree(tmp);
	if (rr != 0 && cfg->verbose)
		fprintf(stderr, "parley-bench: engine: removing %s: %s\n", tmp, strerror(-rr));
	free(tmp);
	return rc;
}
