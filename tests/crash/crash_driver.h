/*
 * crash_driver.h — the parent side of a kill -9 crash test, shared by the
 * tests in tests/crash (header-only: each test is its own executable).
 *
 * Each cycle forks a child (d->child: opens the engine on a real directory
 * and appends under load, writing one ACK_SIZE record per acknowledgement
 * to the pipe *after* its callback reported it durable; never returns),
 * lets it run d->run_min_ms + rand(d->run_span_ms) ms while collecting the
 * records, SIGKILLs it, reaps it, and calls d->verify on the directory with
 * every acknowledgement so far. Records d->record consumes (returns true)
 * are the test's own (e.g. acknowledged deletions); the rest are acks:
 * u32 stream | u32 pad | u64 seq | 16-byte producer id.
 *
 * Seed: PARLEY_SEED, else time ^ pid; printed first so a failure replays.
 * Cycles: PARLEY_CRASH_CYCLES, else 300 with PARLEY_LONG=1, else 25.
 * The data directory is removed after a pass and kept after a failure.
 *
 * Also shared: the stream names and producer ids both sides use, the
 * data directory's layout (crash_open), the child's load (crash_load_start:
 * CRASH_INFLIGHT_PER_STREAM idempotent appends in flight on each of
 * CRASH_NSTREAMS streams, each acknowledgement written to the pipe from
 * the callback that reported it durable, then the next one issued), and
 * the verify steps (read a stream checking density, every ack at its seq
 * with its producer, idempotent retries answer the original seq).
 */
#ifndef PARLEY_CRASH_DRIVER_H
#define PARLEY_CRASH_DRIVER_H

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "parley_engine.h"

#define ACK_SIZE 32

struct crash_ack {
	uint32_t stream;
	uint64_t seq;
	uint8_t producer[PE_PRODUCER_LEN];
};

/* The acknowledgements collected so far (grows by doubling). */
struct crash_acks {
	struct crash_ack *v;
	size_t n, cap;
};

static struct crash_ack *crash_acks_push(struct crash_acks *a)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 1 << 16;
		struct crash_ack *v = realloc(a->v, cap * sizeof *v);
		if (!v) {
			fprintf(stderr, "crash driver: out of memory\n");
			exit(1);
		}
		a->v = v;
		a->cap = cap;
	}
	return &a->v[a->n++];
}

struct crash_driver {
	const char *name;
	unsigned run_min_ms, run_span_ms;
	void (*child)(const char *dir, int ack_fd, uint32_t cycle);
	bool (*record)(const uint8_t *rec); /* may be NULL */
	int (*verify)(const char *dir, struct crash_ack *acks, size_t nacks,
		      uint64_t *entries_out);
	void (*summary)(int cycles, size_t nacks, uint64_t entries, int failed);
	/* May be NULL: fills the directory before the first cycle (in this
	 * process) and records what it appended as acknowledged. */
	int (*prefill)(const char *dir, struct crash_acks *acks);
};

/* ---- what both the child and verify need ------------------------------- */

static void stream_key(uint32_t s, char *out)
{
	snprintf(out, 16, "c/crash%02u", s);
}

static void make_producer(uint8_t *p, uint32_t cycle, uint32_t stream,
			  uint32_t lane, uint64_t counter)
{
	memset(p, 0, PE_PRODUCER_LEN);
	le_put32(p, cycle + 1);
	le_put16(p + 4, (uint16_t)stream);
	le_put16(p + 6, (uint16_t)lane);
	le_put64(p + 8, counter);
}

/* The layout of every open of the data directory (child, verify,
 * prefill): partitions are fixed when a directory is created, and a child
 * killed before its first open finished leaves no manifest, so every open
 * must ask for the same count (with the defaults it would create 64, which
 * the next child, asking 8, refuses). memtable_bytes 0: the default. */
static int crash_open(const char *dir, uint64_t memtable_bytes, struct pe_engine **e)
{
	struct pe_options o = {.dir = dir, .partitions = 8, .shards = 2,
			       .wal_segment_bytes = 16u << 20,
			       .memtable_bytes = memtable_bytes};
	return pe_open(&o, e);
}

/* ---- the child's load ------------------------------------------------------ */

#define CRASH_NSTREAMS 16
#define CRASH_INFLIGHT_PER_STREAM 4

static int crash_ack_fd;      /* the pipe to the parent */
static uint32_t crash_cycle;  /* this child's cycle (in producer ids) */
static bool crash_retry_full; /* an append answered -PARLEY_EFULL is issued
				 again (else the child fails) */
static const char *crash_payload_tail = ""; /* after "cycle C lane L msg N" */
static pthread_mutex_t crash_ack_mu = PTHREAD_MUTEX_INITIALIZER;

/* One ACK_SIZE record to the parent (several threads may send). */
static void crash_send(const uint8_t *rec)
{
	pthread_mutex_lock(&crash_ack_mu);
	if (write(crash_ack_fd, rec, ACK_SIZE) != (ssize_t)ACK_SIZE)
		_exit(4);
	pthread_mutex_unlock(&crash_ack_mu);
}

struct crash_slot {
	struct pe_engine *e;
	uint32_t stream;
	uint64_t counter;
	uint32_t lane;
};

static void crash_issue(struct crash_slot *sl);

static void crash_on_ack(void *arg, const struct pe_append_result *r)
{
	struct crash_slot *sl = arg;
	if (crash_retry_full && r->err == -PARLEY_EFULL) {
		crash_issue(sl);
		return;
	}
	if (r->err) {
		fprintf(stderr, "child: append failed: %s\n",
			parley_strerror(r->err));
		_exit(3);
	}
	uint8_t rec[ACK_SIZE];
	le_put32(rec, sl->stream);
	le_put32(rec + 4, 0);
	le_put64(rec + 8, r->seq);
	make_producer(rec + 16, crash_cycle, sl->stream, sl->lane, sl->counter);
	crash_send(rec);
	sl->counter++;
	crash_issue(sl);
}

static void crash_issue(struct crash_slot *sl)
{
	char key[16];
	stream_key(sl->stream, key);
	char payload[160];
	int n = snprintf(payload, sizeof payload, "cycle %u lane %u msg %" PRIu64 "%s",
			 crash_cycle, sl->lane, sl->counter, crash_payload_tail);
	struct pe_input in = {.type = 1, .len = (uint32_t)n, .payload = payload};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	make_producer(q.producer, crash_cycle, sl->stream, sl->lane, sl->counter);
	int rc;
	while ((rc = pe_append(sl->e, &q, crash_on_ack, sl)) == -PARLEY_EFULL)
		usleep(100);
	if (rc) {
		fprintf(stderr, "child: enqueue failed: %s\n", parley_strerror(rc));
		_exit(5);
	}
}

/* The child's start: opens dir (crash_open), starts every slot's first
 * append and returns the engine; the caller adds its own work, then
 * pauses until the parent kills it. */
static struct pe_engine *crash_load_start(const char *dir, int ack_fd, uint32_t cycle,
					  uint64_t memtable_bytes)
{
	crash_ack_fd = ack_fd;
	crash_cycle = cycle;
	struct pe_engine *e;
	int rc = crash_open(dir, memtable_bytes, &e);
	if (rc) {
		fprintf(stderr, "child: open: %s\n", parley_strerror(rc));
		_exit(2);
	}
	static struct crash_slot slots[CRASH_NSTREAMS * CRASH_INFLIGHT_PER_STREAM];
	for (uint32_t i = 0; i < CRASH_NSTREAMS * CRASH_INFLIGHT_PER_STREAM; i++) {
		slots[i] = (struct crash_slot){.e = e, .stream = i % CRASH_NSTREAMS,
					       .lane = i / CRASH_NSTREAMS};
		crash_issue(&slots[i]);
	}
	return e;
}

/* ---- verify helpers ------------------------------------------------------- */

/*
 * Reads stream `key` forward from `from` in pages into *all (payloads
 * dropped; free(*all)), checking that seqs are dense. Returns the number of
 * problems found (each printed).
 */
static int crash_read_stream(struct pe_engine *e, const char *key,
			     uint64_t from, struct pe_entry **all,
			     uint64_t *count)
{
	int bad = 0;
	size_t cap = 0;
	*all = NULL;
	*count = 0;
	for (;;) {
		struct pe_read_req q = {.key = key, .klen = strlen(key),
					.from = from, .dir = PE_FORWARD,
					.limit = PE_MAX_READ};
		struct pe_entry *es;
		uint32_t n;
		struct pe_read_result meta;
		int rc = pe_read_sync(e, &q, &es, &n, &meta);
		if (rc) {
			fprintf(stderr, "verify: read %s: %s\n", key,
				parley_strerror(rc));
			return bad + 1;
		}
		if (*count + n > cap) {
			cap = (*count + n) * 2;
			struct pe_entry *na = realloc(*all, cap * sizeof *na);
			if (!na) {
				fprintf(stderr, "verify: out of memory\n");
				exit(1);
			}
			*all = na;
		}
		for (uint32_t i = 0; i < n; i++) {
			if (es[i].seq != from + i) {
				fprintf(stderr, "verify: %s gap: seq %" PRIu64
					" at position %" PRIu64 "\n", key,
					es[i].seq, from + i);
				bad++;
			}
			(*all)[*count + i] = es[i];
			(*all)[*count + i].payload = NULL;
		}
		*count += n;
		free(es);
		if (n == 0 || meta.end)
			return bad;
		from += n;
	}
}

/*
 * Every acknowledged entry is present at its seq with its producer id.
 * Stream s holds counts[s] entries from firsts[s] on (all[s]); acks of
 * stream 0 below stream0_deleted_below were deleted and are skipped.
 * Stops after 10 problems; returns their number.
 */
static int crash_check_acks(const struct crash_ack *acks, size_t nacks,
			    struct pe_entry *const *all, const uint64_t *firsts,
			    const uint64_t *counts, uint64_t stream0_deleted_below)
{
	int bad = 0;
	for (size_t i = 0; i < nacks && bad < 10; i++) {
		const struct crash_ack *a = &acks[i];
		if (a->stream == 0 && a->seq < stream0_deleted_below)
			continue; /* deleted (acked or not, the delete is durable) */
		if (a->seq < firsts[a->stream] ||
		    a->seq - firsts[a->stream] >= counts[a->stream]) {
			fprintf(stderr, "verify: LOST acked entry stream %u seq %"
				PRIu64 " (stream has %" PRIu64 ")\n", a->stream,
				a->seq, counts[a->stream]);
			bad++;
			continue;
		}
		if (memcmp(all[a->stream][a->seq - firsts[a->stream]].producer,
			   a->producer, PE_PRODUCER_LEN)) {
			fprintf(stderr, "verify: stream %u seq %" PRIu64
				" holds another producer's entry\n", a->stream,
				a->seq);
			bad++;
		}
	}
	return bad;
}

/* An idempotent retry of some of the last acks gives back the original
 * seq with `duplicate` set (acks without a producer id are skipped).
 * Returns the number of problems. */
static int crash_check_retries(struct pe_engine *e,
			       const struct crash_ack *acks, size_t nacks)
{
	static const uint8_t no_producer[PE_PRODUCER_LEN];
	int bad = 0;
	for (size_t i = 0; i < nacks && i < 64 && !bad; i += 7) {
		const struct crash_ack *a = &acks[nacks - 1 - i];
		if (!memcmp(a->producer, no_producer, PE_PRODUCER_LEN))
			continue;
		char key[16];
		stream_key(a->stream, key);
		struct pe_input in = {.len = 5, .payload = "retry"};
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		memcpy(q.producer, a->producer, PE_PRODUCER_LEN);
		struct pe_append_result r;
		int rc = pe_append_sync(e, &q, &r);
		if (rc || !r.duplicate || r.seq != a->seq) {
			fprintf(stderr, "verify: retry of stream %u seq %" PRIu64
				" gave rc=%d dup=%d seq=%" PRIu64 "\n", a->stream,
				a->seq, rc, r.duplicate, r.seq);
			bad++;
		}
	}
	return bad;
}

static int crash_driver_main(const struct crash_driver *d)
{
	const char *ev = getenv("PARLEY_SEED");
	uint64_t seed = ev ? strtoull(ev, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
	int cycles = 25;
	if (getenv("PARLEY_LONG"))
		cycles = 300;
	if (getenv("PARLEY_CRASH_CYCLES"))
		cycles = atoi(getenv("PARLEY_CRASH_CYCLES"));
	printf("%s: seed=%" PRIu64 " cycles=%d (replay: PARLEY_SEED=%" PRIu64
	       ")\n", d->name, seed, cycles, seed);
	fflush(stdout);
	struct parley_rng rng = {seed};
	char dir[] = "/tmp/parley-crash-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	char data[64];
	snprintf(data, sizeof data, "%s/data", dir);
	parley_log_set_level(PLOG_WARN);

	struct crash_acks acks = {0};
	uint64_t total_entries = 0;
	int failed = 0;
	if (d->prefill) {
		uint64_t t0 = parley_mono_ns();
		if (d->prefill(data, &acks)) {
			fprintf(stderr, "%s: prefill failed\n", d->name);
			failed = 1;
		} else {
			printf("%s: prefilled %zu entries in %.1f s\n", d->name,
			       acks.n, (double)(parley_mono_ns() - t0) / 1e9);
			fflush(stdout);
		}
	}
	for (int c = 0; c < cycles && !failed; c++) {
		int fds[2];
		if (pipe(fds)) {
			perror("pipe");
			return 1;
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(fds[0]);
			d->child(data, fds[1], (uint32_t)c); /* never returns */
			_exit(5);
		}
		close(fds[1]);
		/* let it run 20..250 ms, reading acks meanwhile */
		uint64_t run_ns = (d->run_min_ms + parley_rng_below(&rng, d->run_span_ms)) *
				  1000000ull;
		uint64_t start = parley_mono_ns();
		uint8_t buf[ACK_SIZE * 256];
		size_t have = 0;
		bool killed = false;
		for (;;) {
			if (!killed && parley_mono_ns() - start > run_ns) {
				kill(pid, SIGKILL);
				killed = true;
			}
			/* non-blocking-ish: poll with a short timeout */
			fd_set rs;
			FD_ZERO(&rs);
			FD_SET(fds[0], &rs);
			struct timeval tv = {0, 2000};
			int pr = select(fds[0] + 1, &rs, NULL, NULL, &tv);
			if (pr < 0 && errno == EINTR)
				continue;
			if (pr <= 0)
				continue;
			ssize_t n = read(fds[0], buf + have, sizeof buf - have);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break; /* child gone, pipe drained */
			have += (size_t)n;
			size_t full = have / ACK_SIZE * ACK_SIZE;
			for (size_t off = 0; off < full; off += ACK_SIZE) {
				if (d->record && d->record(buf + off))
					continue; /* not an ack: the test's own record */
				struct crash_ack *a = crash_acks_push(&acks);
				a->stream = le_get32(buf + off);
				a->seq = le_get64(buf + off + 8);
				memcpy(a->producer, buf + off + 16, PE_PRODUCER_LEN);
			}
			memmove(buf, buf + full, have - full);
			have -= full;
		}
		close(fds[0]);
		int status;
		waitpid(pid, &status, 0);
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
			fprintf(stderr, "cycle %d: child exited on its own (status %d)\n",
				c, status);
			failed = 1;
			break;
		}
		if (d->verify(data, acks.v, acks.n, &total_entries)) {
			fprintf(stderr, "cycle %d FAILED (seed %" PRIu64 ")\n", c, seed);
			failed = 1;
		}
	}
	d->summary(cycles, acks.n, total_entries, failed);
	free(acks.v);
	if (!failed) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	} else {
		fprintf(stderr, "data kept in %s\n", dir);
	}
	return failed;
}

#endif /* PARLEY_CRASH_DRIVER_H */
