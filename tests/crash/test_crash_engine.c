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

#define NSTREAMS CRASH_NSTREAMS

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
	(void)crash_load_start(dir, fd, cycle, 0);
	for (;;)
		pause(); /* the parent kills us */
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
