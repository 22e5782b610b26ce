/*
 * test_crash_history.c — kill -9 during history flushes, compactions and
 * deletions never loses an acknowledged entry nor resurrects a deleted one.
 *
 * Like test_crash_engine.c, with the history tier busy: the child's
 * memtable is tiny (flushes every few hundred appends, WAL segments are
 * released), a maintenance thread forces flushes and full compactions of
 * random partitions, and deletes a prefix of stream 0 (acknowledged
 * deletions go through the pipe too). After each kill the parent checks:
 *
 * (as in test_crash_engine.c) Each cycle forks a child that opens the engine on a real directory
 * (io_uring backend, real fdatasync) and keeps many idempotent appends in
 * flight on several streams. For every acknowledgement it writes
 * (stream, seq, producer id) to a pipe *after* the callback reported the
 * entry durable. The parent SIGKILLs the child at a random moment (seeded,
 * seed printed), reopens the directory itself and checks:
 *   - every acknowledged entry is present at its seq with its producer id;
 *   - every stream's seqs are dense from 1 (no gap, no duplicate);
 *   - retrying an acknowledged producer id returns the original seq with
 *     `duplicate` set.
 * Cycles: PARLEY_CRASH_CYCLES, else 300 with PARLEY_LONG=1, else 25.
 * Replay one run with PARLEY_SEED=<seed>.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crash_driver.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define NSTREAMS CRASH_NSTREAMS
#define DELETE_MARK 0xFFFFu /* ack record: stream 0 deleted through seq */

/* Forces flushes, full compactions and deletions of stream 0's prefix. */
static void *maint_main(void *arg)
{
	struct pe_engine *e = arg;
	struct parley_rng rng = {crash_cycle * 7919u + 1};
	for (;;) {
		uint32_t p = (uint32_t)parley_rng_below(&rng, pe_partition_count(e));
		uint64_t op = parley_rng_below(&rng, 10);
		if (op < 4) {
			(void)pe_flush_sync(e, p);
		} else if (op < 7) {
			(void)pe_compact_sync(e, p, true);
		} else {
			char key[16];
			stream_key(0, key);
			struct pe_meta m;
			if (pe_meta_sync(e, key, strlen(key), &m) == 0 && m.last_seq > 10) {
				uint64_t through = m.last_seq - 10;
				struct pe_delete_result dr;
				if (pe_delete_sync(e, key, strlen(key), through, &dr) == 0) {
					uint8_t rec[ACK_SIZE] = {0};
					le_put32(rec, DELETE_MARK);
					le_put64(rec + 8, through);
					crash_send(rec);
				}
			}
		}
		usleep(2000 + (useconds_t)parley_rng_below(&rng, 8000));
	}
	return NULL;
}

static uint64_t deleted_through; /* acked deletions of stream 0 */
static uint64_t hist_segments;   /* live segments seen by the last verify */

static int verify(const char *dir, struct crash_ack *acks, size_t nacks,
		  uint64_t *entries_out)
{
	struct pe_engine *e;
	int rc = crash_open(dir, 0, &e);
	if (rc) {
		fprintf(stderr, "verify: open failed: %s\n", parley_strerror(rc));
		return 1;
	}
	int bad = 0;
	uint64_t entries = 0;
	hist_segments = 0;
	struct pe_entry *all[NSTREAMS];
	uint64_t counts[NSTREAMS], firsts[NSTREAMS];
	for (uint32_t s = 0; s < NSTREAMS; s++) {
		char key[16];
		stream_key(s, key);
		all[s] = NULL;
		counts[s] = 0;
		firsts[s] = 1;
		struct pe_meta m = {0};
		if (pe_meta_sync(e, key, strlen(key), &m)) {
			bad++;
			continue;
		}
		firsts[s] = m.first_seq ? m.first_seq : 1;
		if (s == 0 && deleted_through && firsts[s] <= deleted_through) {
			fprintf(stderr, "verify: deletion through %" PRIu64
				" acked but stream 0 starts at %" PRIu64 "\n",
				deleted_through, firsts[s]);
			bad++;
		}
		if (s == 0 && firsts[s] > 1) { /* below it: said so explicitly */
			struct pe_read_req q = {.key = key, .klen = strlen(key),
						.from = firsts[s] - 1,
						.dir = PE_FORWARD, .limit = 1};
			struct pe_entry *es;
			uint32_t n;
			if (pe_read_sync(e, &q, &es, &n, NULL) != -PARLEY_ETRIMMED) {
				fprintf(stderr, "verify: read below first_seq not TRIMMED\n");
				bad++;
			}
		}
		bad += crash_read_stream(e, key, firsts[s], &all[s], &counts[s]);
		entries += counts[s];
	}
	for (uint32_t s = 1; s < NSTREAMS; s++)
		if (firsts[s] != 1) {
			fprintf(stderr, "verify: stream %u starts at %" PRIu64 "\n",
				s, firsts[s]);
			bad++;
		}
	bad += crash_check_acks(acks, nacks, all, firsts, counts, firsts[0]);
	if (!bad)
		bad += crash_check_retries(e, acks, nacks);
	for (uint32_t s = 0; s < NSTREAMS; s++)
		free(all[s]);
	uint32_t np = pe_partition_count(e);
	pe_close(e);
	/* every live segment verifies, block by block */
	for (uint32_t p = 0; p < np; p++) {
		struct pe_hist_report hr;
		rc = pe_history_inspect(NULL, dir, p, true, &hr, NULL, NULL);
		if (rc) {
			fprintf(stderr, "verify: partition %u history: %s\n", p,
				parley_strerror(rc));
			bad++;
		}
		hist_segments += hr.segments;
	}
	*entries_out = entries;
	return bad ? 1 : 0;
}

/*
 * PARLEY_CRASH_PREFILL=N (0 by default; the 10-million-entry run
 * uses 10000000 with a few cycles): before the first cycle, append N
 * entries to the streams in batches, without producer ids, on the same
 * real directory; they count as acknowledged, so every cycle's verify
 * reads all of them back across flushes, compactions and kills.
 */
static int prefill(const char *dir, struct crash_acks *acks)
{
	const char *ev = getenv("PARLEY_CRASH_PREFILL");
	uint64_t want = ev ? strtoull(ev, NULL, 0) : 0;
	if (!want)
		return 0;
	/* the child's layout, a larger memtable */
	struct pe_engine *e;
	if (crash_open(dir, 4u << 20, &e))
		return 1;
	static struct pe_input in[PE_MAX_BATCH];
	static char body[PE_MAX_BATCH][24];
	uint64_t done = 0;
	int rc = 0;
	for (uint32_t s = 0; done < want && !rc; s = (s + 1) % NSTREAMS) {
		char key[16];
		stream_key(s, key);
		uint32_t n = (uint32_t)PARLEY_MIN((uint64_t)PE_MAX_BATCH, want - done);
		for (uint32_t i = 0; i < n; i++) {
			int l = snprintf(body[i], sizeof body[i], "prefill %" PRIu64,
					 done + i);
			in[i] = (struct pe_input){.len = (uint32_t)l, .payload = body[i]};
		}
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = in, .count = n};
		struct pe_append_result r;
		rc = pe_append_sync(e, &q, &r);
		if (rc == -PARLEY_EFULL) { /* memtable full: a flush is running */
			rc = 0;
			usleep(1000);
			continue;
		}
		for (uint32_t i = 0; !rc && i < n; i++) {
			struct crash_ack *a = crash_acks_push(acks);
			memset(a, 0, sizeof *a);
			a->stream = s;
			a->seq = r.seq + i;
		}
		done += n;
	}
	/* everything into segments, so the child starts with a short WAL */
	for (uint32_t p = 0; !rc && p < pe_partition_count(e); p++)
		rc = pe_flush_sync(e, p);
	pe_close(e);
	if (rc)
		fprintf(stderr, "prefill: %s\n", parley_strerror(rc));
	return rc ? 1 : 0;
}

/* The child: the shared load with a tiny memtable (flushes every few
 * hundred appends; an append refused while it is full is issued again),
 * plus the maintenance thread. */
static void child_entry(const char *dir, int fd, uint32_t cycle)
{
	crash_retry_full = true;
	crash_payload_tail = " see you at the station tomorrow, bring the photos "
			     "from the weekend";
	struct pe_engine *e = crash_load_start(dir, fd, cycle, 192 * 1024);
	pthread_t mt;
	if (pthread_create(&mt, NULL, maint_main, e))
		_exit(6);
	for (;;)
		pause(); /* the parent kills us */
}

/* Acknowledged deletions of stream 0 travel in the ack pipe too. */
static bool delete_record(const uint8_t *rec)
{
	if (le_get32(rec) != DELETE_MARK)
		return false;
	uint64_t t = le_get64(rec + 8);
	if (t > deleted_through)
		deleted_through = t;
	return true;
}

static void summary(int cycles, size_t nacks, uint64_t entries, int failed)
{
	printf("history crash test: %d cycles, %zu acknowledged appends checked, "
	       "deleted through %" PRIu64 ", %" PRIu64 " entries readable, %" PRIu64
	       " live segments verified, %s\n",
	       cycles, nacks, deleted_through, entries, hist_segments,
	       failed ? "FAILED" : "nothing lost");
}

int main(void)
{
	const struct crash_driver d = {
		.name = "history crash test",
		.run_min_ms = 50,
		.run_span_ms = 350,
		.child = child_entry,
		.record = delete_record,
		.verify = verify,
		.summary = summary,
		.prefill = prefill,
	};
	return crash_driver_main(&d);
}
