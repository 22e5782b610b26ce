/*
 * test_crash_engine.c — kill -9 under load never loses an acknowledged
 * entry.
 *
 * Each cycle forks a child that opens the engine on a real directory
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

#define NSTREAMS 16
#define INFLIGHT_PER_STREAM 4

static int ack_fd;
static uint32_t cycle_no;

struct slot {
	struct pe_engine *e;
	uint32_t stream;
	uint64_t counter;
	uint32_t lane;
};

static void issue(struct slot *sl);

static void on_ack(void *arg, const struct pe_append_result *r)
{
	struct slot *sl = arg;
	if (r->err) {
		fprintf(stderr, "child: append failed: %s\n",
			parley_strerror(r->err));
		_exit(3);
	}
	uint8_t rec[ACK_SIZE];
	le_put32(rec, sl->stream);
	le_put32(rec + 4, 0);
	le_put64(rec + 8, r->seq);
	make_producer(rec + 16, cycle_no, sl->stream, sl->lane, sl->counter);
	if (write(ack_fd, rec, sizeof rec) != (ssize_t)sizeof rec)
		_exit(4);
	sl->counter++;
	issue(sl);
}

static void issue(struct slot *sl)
{
	char key[16];
	stream_key(sl->stream, key);
	char payload[64];
	int n = snprintf(payload, sizeof payload, "cycle %u lane %u msg %" PRIu64,
			 cycle_no, sl->lane, sl->counter);
	struct pe_input in = {.type = 1, .len = (uint32_t)n, .payload = payload};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	make_producer(q.producer, cycle_no, sl->stream, sl->lane, sl->counter);
	int rc;
	while ((rc = pe_append(sl->e, &q, on_ack, sl)) == -PARLEY_EFULL)
		usleep(100);
	if (rc) {
		fprintf(stderr, "child: enqueue failed: %s\n", parley_strerror(rc));
		_exit(5);
	}
}

static void child_main(const char *dir)
{
	struct pe_options o = {.dir = dir, .partitions = 8, .shards = 2,
			       .wal_segment_bytes = 16u << 20};
	struct pe_engine *e;
	int rc = pe_open(&o, &e);
	if (rc) {
		fprintf(stderr, "child: open: %s\n", parley_strerror(rc));
		_exit(2);
	}
	static struct slot slots[NSTREAMS * INFLIGHT_PER_STREAM];
	for (uint32_t i = 0; i < NSTREAMS * INFLIGHT_PER_STREAM; i++) {
		slots[i] = (struct slot){.e = e, .stream = i % NSTREAMS,
					 .lane = i / NSTREAMS};
		issue(&slots[i]);
	}
	for (;;)
		pause(); /* the parent kills us */
}


static int verify(const char *dir, struct crash_ack *acks, size_t nacks,
		  uint64_t *entries_out)
{
	/* the child's layout: a child killed before its first open finished
	 * leaves no manifest, and an open with the defaults would create the
	 * directory with 64 partitions, which the next child (8) refuses */
	struct pe_options o = {.dir = dir, .partitions = 8, .shards = 2,
			       .wal_segment_bytes = 16u << 20};
	struct pe_engine *e;
	int rc = pe_open(&o, &e);
	if (rc) {
		fprintf(stderr, "verify: open failed: %s\n", parley_strerror(rc));
		return 1;
	}
	int bad = 0;
	uint64_t entries = 0;
	struct pe_entry *all[NSTREAMS];
	uint64_t counts[NSTREAMS], firsts[NSTREAMS];
	for (uint32_t s = 0; s < NSTREAMS; s++) {
		char key[16];
		stream_key(s, key);
		firsts[s] = 1;
		bad += crash_read_stream(e, key, 1, &all[s], &counts[s]);
		entries += counts[s];
	}
	bad += crash_check_acks(acks, nacks, all, firsts, counts, 0);
	if (!bad)
		bad += crash_check_retries(e, acks, nacks);
	for (uint32_t s = 0; s < NSTREAMS; s++)
		free(all[s]);
	pe_close(e);
	*entries_out = entries;
	return bad ? 1 : 0;
}

static void child_entry(const char *dir, int fd, uint32_t cycle)
{
	ack_fd = fd;
	cycle_no = cycle;
	child_main(dir);
}

static void summary(int cycles, size_t nacks, uint64_t entries, int failed)
{
	printf("crash test: %d cycles, %zu acknowledged appends checked, %" PRIu64
	       " entries on disk, %s\n", cycles, nacks, entries,
	       failed ? "FAILED" : "nothing lost");
}

int main(void)
{
	const struct crash_driver d = {
		.name = "crash test",
		.run_min_ms = 20,
		.run_span_ms = 230,
		.child = child_entry,
		.verify = verify,
		.summary = summary,
	};
	return crash_driver_main(&d);
}
