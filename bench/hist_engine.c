/*
 * hist_engine.c — parley-hist-engine: the engine with its history tier, on
 * the real disk (io_uring backend, fdatasync per group commit). Issue 4's
 * two latency questions, each measured against its reference in the same
 * run:
 *
 *   A. Append ack latency, open loop (latency from the intended send time,
 *      so a stall is not hidden), with compaction idle vs running. The
 *      engine is pre-filled with history (many segments per partition);
 *      then the same load runs three times: idle, with a thread running
 *      full compactions of every partition back to back (paced by the
 *      engine's compaction_rate), idle again. Automatic flushes happen in
 *      every phase alike.
 *   B. "Last 50 messages of a conversation" (pe_read backward, limit 50):
 *      hot (the newest entries are in the memtable), cold (in segments,
 *      read through an engine opened with a block cache too small to hold
 *      a block: every read decompresses; the OS page cache is warm —
 *      dropping it needs root), warm (segments, 64 MiB cache after a first
 *      touch), and Redis 7 `XREVRANGE key + - COUNT 50` on the same
 *      messages (redis-server started here, no persistence: reads only).
 *      Each read is one synchronous request: pe_read_sync hands the request
 *      to the shard thread and waits; the Redis client does one loopback
 *      round trip (hiredis, blocking).
 *
 * Messages: the fortunes, literature and riddles files of Debian's
 * fortunes-min (/usr/share/games/fortunes), lines joined into 20..200-byte
 * chat messages (~1k distinct messages, reused in rotation).
 *
 * Usage: parley-hist-engine [--dir DIR] [--rate N] [--seconds S]
 *                           [--compaction-rate BYTES_PER_S]
 *                           [--redis-server PATH]
 * Exits 77 when the corpus is missing. Data under DIR is removed at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

#include "parley_common.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

/* ---- corpus ----------------------------------------------------------------- */

static uint64_t compaction_rate; /* 0 = engine default */
static char **msgs;
static uint32_t *mlens;
static size_t nmsgs;

static int load_corpus(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char line[1024], cur[256];
	size_t cl = 0, cap = 0;
	while (fgets(line, sizeof line, f)) {
		size_t l = strcspn(line, "\n");
		line[l] = 0;
		if (l == 0 || !strcmp(line, "%"))
			continue;
		for (size_t i = 0; i < l && cl < 200; i++)
			cur[cl++] = line[i] == '\t' ? ' ' : line[i];
		if (cl < 200 && cl > 0)
			cur[cl++] = ' ';
		if (cl >= 20 && (cl >= 120 || strchr(".!?", line[l ? l - 1 : 0]))) {
			if (nmsgs == cap) {
				cap = cap ? cap * 2 : 4096;
				msgs = realloc(msgs, cap * sizeof *msgs);
				mlens = realloc(mlens, cap * sizeof *mlens);
			}
			while (cl && cur[cl - 1] == ' ')
				cl--;
			msgs[nmsgs] = malloc(cl);
			memcpy(msgs[nmsgs], cur, cl);
			mlens[nmsgs++] = (uint32_t)cl;
			cl = 0;
		}
	}
	fclose(f);
	return 0;
}

/* ---- latency recording --------------------------------------------------------- */

static int u64cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void report(const char *name, uint64_t *ns, size_t n)
{
	if (!n) {
		printf("| %-44s | %8s | %8s | %8s | %8s | %7s |\n", name, "-", "-", "-", "-", "0");
		return;
	}
	qsort(ns, n, sizeof *ns, u64cmp);
	printf("| %-44s | %8.1f | %8.1f | %8.1f | %8.1f | %7zu |\n", name,
	       ns[n / 2] / 1e3, ns[(size_t)(n * 0.99)] / 1e3,
	       ns[(size_t)(n * 0.999)] / 1e3, ns[n - 1] / 1e3, n);
}

/* ---- A: append latency, compaction idle vs running -------------------------------- */

struct oload {
	struct pe_engine *e;
	uint64_t *lat;
	uint64_t *intended;
	atomic_size_t acked;
	atomic_size_t errors;
};

struct oslot {
	struct oload *ol;
	size_t k;
};

static void oload_cb(void *arg, const struct pe_append_result *r)
{
	struct oslot *s = arg;
	struct oload *ol = s->ol;
	if (r->err)
		atomic_fetch_add(&ol->errors, 1);
	ol->lat[s->k] = parley_mono_ns() - ol->intended[s->k];
	atomic_fetch_add(&ol->acked, 1);
}

/* Open loop at `rate`/s for `secs` s on `nstreams` streams. */
static size_t run_open_loop(struct pe_engine *e, uint64_t rate, double secs,
			    uint32_t nstreams, uint64_t *lat)
{
	size_t total = (size_t)(rate * secs);
	struct oload ol = {.e = e, .lat = lat};
	ol.intended = calloc(total, sizeof *ol.intended);
	struct oslot *slots = calloc(total, sizeof *slots);
	uint64_t t0 = parley_mono_ns() + 1000000;
	struct parley_rng rng = {rate ^ total};
	for (size_t k = 0; k < total; k++) {
		uint64_t at = t0 + (uint64_t)((double)k * 1e9 / (double)rate);
		/* sleep, do not spin: on 2 cores a spinning generator would
		 * take the CPU the shard and the history workers need */
		uint64_t now = parley_mono_ns();
		if (at > now) {
			struct timespec ts = {.tv_sec = (time_t)((at - now) / 1000000000u),
					      .tv_nsec = (long)((at - now) % 1000000000u)};
			nanosleep(&ts, NULL);
		}
		ol.intended[k] = at;
		slots[k] = (struct oslot){&ol, k};
		char key[24];
		snprintf(key, sizeof key, "c/load%05u",
			 (uint32_t)parley_rng_below(&rng, nstreams));
		size_t m = parley_rng_below(&rng, nmsgs);
		struct pe_input in = {.type = 1, .len = mlens[m], .payload = msgs[m]};
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		int rc;
		while ((rc = pe_append(e, &q, oload_cb, &slots[k])) == -PARLEY_EFULL)
			;
		if (rc) {
			fprintf(stderr, "append: %s\n", parley_strerror(rc));
			exit(1);
		}
	}
	while (atomic_load(&ol.acked) < total)
		usleep(1000);
	if (atomic_load(&ol.errors))
		fprintf(stderr, "note: %zu appends failed (memtable full?)\n",
			atomic_load(&ol.errors));
	free(ol.intended);
	free(slots);
	return total;
}

struct compactor {
	struct pe_engine *e;
	atomic_bool stop;
	uint64_t rounds;
};

static void *compactor_main(void *arg)
{
	struct compactor *c = arg;
	while (!atomic_load(&c->stop))
		for (uint32_t p = 0; p < pe_partition_count(c->e) && !atomic_load(&c->stop); p++) {
			if (pe_compact_sync(c->e, p, true) == 0)
				c->rounds++;
		}
	return NULL;
}

static void fill(struct pe_engine *e, const char *prefix, uint32_t nstreams,
		 uint32_t per_stream, uint32_t first_msg)
{
	struct pe_input in[100];
	for (uint32_t round = 0; round < per_stream; round += 100)
		for (uint32_t s = 0; s < nstreams; s++) {
			uint32_t cnt = PARLEY_MIN(100u, per_stream - round);
			for (uint32_t i = 0; i < cnt; i++) {
				size_t m = (first_msg + s * 7919u + round + i) % nmsgs;
				in[i] = (struct pe_input){.type = 1, .len = mlens[m],
							  .payload = msgs[m]};
			}
			char key[24];
			snprintf(key, sizeof key, "%s%05u", prefix, s);
			struct pe_append_req q = {.key = key, .klen = strlen(key),
						  .expected_last_seq = PE_NO_EXPECT,
						  .entries = in, .count = cnt};
			struct pe_append_result r;
			int rc;
			while ((rc = pe_append_sync(e, &q, &r)) == -PARLEY_EFULL)
				usleep(1000);
			if (rc) {
				fprintf(stderr, "fill: %s\n", parley_strerror(rc));
				exit(1);
			}
		}
}

static void flush_all(struct pe_engine *e)
{
	for (uint32_t p = 0; p < pe_partition_count(e); p++)
		if (pe_flush_sync(e, p)) {
			fprintf(stderr, "flush failed\n");
			exit(1);
		}
}

/* The disk's own floor in the same run: 4 KiB pwrite + fdatasync rounds. */
static void disk_floor(const char *dir)
{
	char path[700];
	snprintf(path, sizeof path, "%s/floor", dir);
	int fd = open(path, O_CREAT | O_RDWR, 0600);
	if (fd < 0)
		return;
	static char blk[4096];
	memset(blk, 0, sizeof blk);
	enum { N = 1000 };
	static uint64_t lat[N];
	for (int i = 0; i < 64; i++) /* pre-zero */
		if (pwrite(fd, blk, sizeof blk, (off_t)i * 4096) != (ssize_t)sizeof blk)
			return;
	fdatasync(fd);
	for (int i = 0; i < N; i++) {
		uint64_t t = parley_mono_ns();
		if (pwrite(fd, blk, sizeof blk, (off_t)(i % 64) * 4096) != (ssize_t)sizeof blk)
			break;
		fdatasync(fd);
		lat[i] = parley_mono_ns() - t;
	}
	close(fd);
	unlink(path);
	printf("\nFloor: 4 KiB pwrite + fdatasync on the same disk, same run\n\n");
	printf("| %-44s | %8s | %8s | %8s | %8s | %7s |\n", "what", "p50 µs",
	       "p99 µs", "p99.9 µs", "max µs", "count");
	printf("|%s|----------|----------|----------|----------|---------|\n",
	       "----------------------------------------------");
	report("4 KiB write + fdatasync", lat, N);
}

static void part_a(const char *dir, uint64_t rate, double secs)
{
	char d[700];
	snprintf(d, sizeof d, "%s/a", dir);
	struct pe_options o = {.dir = d, .partitions = 4, .shards = 1,
			       .memtable_bytes = 8u << 20, .no_auto_compact = true,
			       .compaction_rate = compaction_rate};
	struct pe_engine *e;
	if (pe_open(&o, &e)) {
		fprintf(stderr, "open %s failed\n", d);
		exit(1);
	}
	/* history: 16 flushes of 25k messages over 4000 streams */
	for (int i = 0; i < 16; i++) {
		fill(e, "c/hist", 250, 100, (uint32_t)i * 1000u);
		flush_all(e);
	}
	uint64_t segs = 0, bytes = 0;
	for (uint32_t p = 0; p < pe_partition_count(e); p++) {
		struct pe_partition_status st;
		pe_partition_status(e, p, &st);
		segs += st.segments;
		bytes += st.segment_bytes;
	}
	printf("\nA. append ack latency, open loop %" PRIu64 "/s for %.0f s per phase, "
	       "1 shard, 4 partitions, history %" PRIu64 " segments (%.1f MiB)\n\n",
	       rate, secs, segs, bytes / 1048576.0);
	printf("| %-44s | %8s | %8s | %8s | %8s | %7s |\n", "phase", "p50 µs",
	       "p99 µs", "p99.9 µs", "max µs", "count");
	printf("|%s|----------|----------|----------|----------|---------|\n",
	       "----------------------------------------------");
	size_t total = (size_t)(rate * secs);
	uint64_t *lat = calloc(total, sizeof *lat);
	size_t n = run_open_loop(e, rate, secs, 4000, lat);
	report("compaction idle", lat, n);
	struct pe_stats s0, s1;
	pe_stats(e, &s0);
	struct compactor c = {.e = e};
	pthread_t th;
	pthread_create(&th, NULL, compactor_main, &c);
	uint64_t c0 = parley_mono_ns();
	n = run_open_loop(e, rate, secs, 4000, lat);
	atomic_store(&c.stop, true);
	pthread_join(th, NULL);
	double cs = (double)(parley_mono_ns() - c0) / 1e9;
	pe_stats(e, &s1);
	report("full compactions running back to back", lat, n);
	n = run_open_loop(e, rate, secs, 4000, lat);
	report("compaction idle (again)", lat, n);
	printf("\ncompactions completed while running: %" PRIu64 " in %.1f s "
	       "(compaction_rate %" PRIu64 " B/s)\n", c.rounds, cs,
	       compaction_rate ? compaction_rate : (uint64_t)32 << 20);
	free(lat);
	pe_close(e);
}

/* ---- B: last-50 reads -------------------------------------------------------------------- */

static void time_reads(struct pe_engine *e, const char *prefix, uint32_t nstreams,
		       uint32_t nreads, uint64_t *lat, uint32_t expect)
{
	struct parley_rng rng = {nstreams + nreads};
	for (uint32_t i = 0; i < nreads; i++) {
		char key[24];
		snprintf(key, sizeof key, "%s%05u", prefix,
			 (uint32_t)parley_rng_below(&rng, nstreams));
		struct pe_read_req q = {.key = key, .klen = strlen(key),
					.from = UINT64_MAX, .dir = PE_BACKWARD,
					.limit = 50};
		struct pe_entry *es;
		uint32_t n;
		uint64_t t = parley_mono_ns();
		int rc = pe_read_sync(e, &q, &es, &n, NULL);
		lat[i] = parley_mono_ns() - t;
		if (rc || n != expect) {
			fprintf(stderr, "read %s: rc %d n %u\n", key, rc, n);
			exit(1);
		}
		free(es);
	}
}

#ifdef HAVE_HIREDIS
static pid_t redis_pid;

static redisContext *redis_up(const char *server, const char *dir, int port)
{
	char pstr[16];
	snprintf(pstr, sizeof pstr, "%d", port);
	redis_pid = fork();
	if (redis_pid == 0) {
		execl(server, server, "--port", pstr, "--bind", "127.0.0.1",
		      "--save", "", "--appendonly", "no", "--dir", dir,
		      "--daemonize", "no", "--loglevel", "warning", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		usleep(20000);
		redisContext *c = redisConnect("127.0.0.1", port);
		if (c && !c->err)
			return c;
		if (c)
			redisFree(c);
	}
	return NULL;
}

static void redis_fill(redisContext *c, const char *prefix, uint32_t nstreams,
		       uint32_t per_stream, uint32_t first_msg)
{
	for (uint32_t round = 0; round < per_stream; round += 100)
		for (uint32_t s = 0; s < nstreams; s++) {
			uint32_t cnt = PARLEY_MIN(100u, per_stream - round);
			char key[24];
			snprintf(key, sizeof key, "%s%05u", prefix, s);
			for (uint32_t i = 0; i < cnt; i++) {
				size_t m = (first_msg + s * 7919u + round + i) % nmsgs;
				const char *argv[5] = {"XADD", key, "*", "m", msgs[m]};
				size_t lens[5] = {4, strlen(key), 1, 1, mlens[m]};
				redisAppendCommandArgv(c, 5, argv, lens);
			}
			for (uint32_t i = 0; i < cnt; i++) {
				void *rep;
				if (redisGetReply(c, &rep) != REDIS_OK) {
					fprintf(stderr, "redis XADD failed\n");
					exit(1);
				}
				freeReplyObject(rep);
			}
		}
}

static void redis_reads(redisContext *c, const char *prefix, uint32_t nstreams,
			uint32_t nreads, uint64_t *lat)
{
	struct parley_rng rng = {nstreams + nreads};
	for (uint32_t i = 0; i < nreads; i++) {
		char key[24];
		snprintf(key, sizeof key, "%s%05u", prefix,
			 (uint32_t)parley_rng_below(&rng, nstreams));
		uint64_t t = parley_mono_ns();
		redisReply *r = redisCommand(c, "XREVRANGE %s + - COUNT 50", key);
		lat[i] = parley_mono_ns() - t;
		if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 50) {
			fprintf(stderr, "redis XREVRANGE %s failed\n", key);
			exit(1);
		}
		freeReplyObject(r);
	}
}
#endif

static void part_b(const char *dir, const char *redis_server)
{
	char d[700];
	snprintf(d, sizeof d, "%s/b", dir);
	enum { COLD = 2000, HOT = 200, PER = 100, NREADS = 20000 };
	struct pe_options o = {.dir = d, .partitions = 4, .shards = 1,
			       .memtable_bytes = 256u << 20, .no_auto_compact = true};
	struct pe_engine *e;
	if (pe_open(&o, &e)) {
		fprintf(stderr, "open %s failed\n", d);
		exit(1);
	}
	fill(e, "c/cold", COLD, PER, 0);
	flush_all(e);
	for (uint32_t p = 0; p < pe_partition_count(e); p++)
		pe_compact_sync(e, p, true); /* one segment per partition */
	pe_close(e);
	/* hot streams: history below, the newest 100 in the memtable */
	if (pe_open(&o, &e))
		exit(1);
	fill(e, "c/hot", HOT, PER, 500);
	flush_all(e);
	fill(e, "c/hot", HOT, PER, 900);
	/* let the WAL's spare-file thread (64 MiB zero fill + fdatasync after
	 * an open) finish before timing */
	sleep(3);
	uint64_t *lat = calloc(NREADS, sizeof *lat);
	printf("\nB. last-50 read (backward, limit 50) latency, %u reads each, "
	       "%u cold streams and %u hot streams of %u+ messages\n\n",
	       NREADS, COLD, HOT, PER);
	printf("| %-44s | %8s | %8s | %8s | %8s | %7s |\n", "what", "p50 µs",
	       "p99 µs", "p99.9 µs", "max µs", "count");
	printf("|%s|----------|----------|----------|----------|---------|\n",
	       "----------------------------------------------");
	time_reads(e, "c/hot", HOT, NREADS, lat, 50);
	report("parley hot (memtable)", lat, NREADS);
	time_reads(e, "c/cold", COLD, NREADS, lat, 50);
	report("parley warm (segments, 64 MiB block cache)", lat, NREADS);
	pe_close(e);
	o.block_cache_bytes = 1; /* nothing stays cached: every read decompresses */
	if (pe_open(&o, &e))
		exit(1);
	sleep(3);
	time_reads(e, "c/cold", COLD, NREADS, lat, 50);
	report("parley cold (segments, block cache off)", lat, NREADS);
	pe_close(e);
#ifdef HAVE_HIREDIS
	char rd[700];
	snprintf(rd, sizeof rd, "%s/redis", dir);
	mkdir(rd, 0700);
	redisContext *c = redis_up(redis_server, rd, 20000 + (int)(getpid() % 20000));
	if (!c) {
		printf("| %-44s | not measured (redis-server did not start)\n", "redis");
	} else {
		redis_fill(c, "c/cold", COLD, PER, 0);
		redis_reads(c, "c/cold", COLD, NREADS, lat);
		report("redis XREVRANGE key + - COUNT 50 (in memory)", lat, NREADS);
		redisReply *r = redisCommand(c, "INFO server");
		if (r && r->type == REDIS_REPLY_STRING) {
			char *v = strstr(r->str, "redis_version:");
			if (v)
				printf("\n%.*s\n", (int)strcspn(v, "\r\n"), v);
		}
		if (r)
			freeReplyObject(r);
		redisFree(c);
	}
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		waitpid(redis_pid, NULL, 0);
	}
#else
	(void)redis_server;
	printf("| redis: not built (hiredis missing) |\n");
#endif
	free(lat);
}

int main(int argc, char **argv)
{
	const char *base = "/tmp", *redis_server = "/usr/bin/redis-server";
	uint64_t rate = 5000;
	double secs = 10;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			base = argv[++i];
		else if (!strcmp(argv[i], "--rate") && i + 1 < argc)
			rate = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			secs = atof(argv[++i]);
		else if (!strcmp(argv[i], "--compaction-rate") && i + 1 < argc)
			compaction_rate = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--redis-server") && i + 1 < argc)
			redis_server = argv[++i];
		else {
			fprintf(stderr, "usage: parley-hist-engine [--dir DIR] [--rate N] "
				"[--seconds S] [--redis-server PATH]\n");
			return 2;
		}
	}
	static const char *files[] = {"fortunes", "literature", "riddles"};
	for (int i = 0; i < 3; i++) {
		char path[128];
		snprintf(path, sizeof path, "/usr/share/games/fortunes/%s", files[i]);
		(void)load_corpus(path);
	}
	if (nmsgs < 300) {
		fprintf(stderr, "corpus /usr/share/games/fortunes missing "
			"(fortunes-min)\n");
		return 77;
	}
	parley_log_set_level(PLOG_WARN);
	char dir[512];
	snprintf(dir, sizeof dir, "%.400s/parley-hist-engine-XXXXXX", base);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	printf("parley-hist-engine: %zu messages from fortunes, data in %s\n", nmsgs, dir);
	disk_floor(dir);
	if (!getenv("PARLEY_HIST_SKIP_A"))
		part_a(dir, rate, secs);
	if (!getenv("PARLEY_HIST_SKIP_B"))
		part_b(dir, redis_server);
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
	return 0;
}
