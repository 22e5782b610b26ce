/*
 * bench_sink.c — the --json result file of parley-bench's older modes
 * (disk, engine, redis, compare, server-compare, delivery): one header
 * (tool, mode, machine, settings, peers and their configuration) and a
 * "rows" array that every printed table row is also written to, with all
 * its percentiles and its latency CDF. The newer modes (workload, history,
 * plan, idle-conns) write their own documents.
 *
 * Threads: main thread only (rows are printed from it).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench.h"
#include "bench_json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "parley_common.h"

static struct bench_json sink;
static FILE *sink_f;
static const char *sink_path;

static void sink_u32s(struct bench_json *j, const char *key, const uint32_t *v, unsigned n)
{
	bj_arr(j, key);
	for (unsigned i = 0; i < n; i++)
		bj_u64(j, NULL, v[i]);
	bj_end(j);
}

int bench_sink_open(const struct bench_cfg *cfg, const char *mode)
{
	if (!cfg->json)
		return 0;
	sink_f = fopen(cfg->json, "w");
	if (!sink_f) {
		int e = errno;
		fprintf(stderr, "parley-bench: --json %s: %s\n", cfg->json, strerror(e));
		return -e;
	}
	sink_path = cfg->json;
	struct bench_json *j = &sink;
	bj_init(j, sink_f);
	bj_str(j, "tool", "parley-bench");
	bj_str(j, "mode", mode);
	bj_machine(j, "machine");
	bj_obj(j, "settings");
	bj_str(j, "dir", cfg->dir);
	bj_num(j, "seconds", cfg->seconds);
	bj_num(j, "warmup_s", cfg->warmup);
	sink_u32s(j, "producers", cfg->producers, cfg->n_producers);
	sink_u32s(j, "payloads", cfg->payloads, cfg->n_payloads);
	bj_arr(j, "rates");
	for (unsigned i = 0; i < cfg->n_rates; i++)
		bj_num(j, NULL, cfg->rates[i]);
	bj_end(j);
	bj_num(j, "half_fraction", cfg->half_frac);
	bj_u64(j, "shards", cfg->shards);
	bj_u64(j, "partitions", cfg->partitions);
	bj_bool(j, "idempotent_producer_ids", cfg->idem);
	bj_u64(j, "repeat", cfg->repeat);
	bj_u64(j, "seed", cfg->seed);
	bj_bool(j, "tls", cfg->tls);
	if (!strcmp(mode, "compaction"))
		bj_num(j, "compact_gap_s", cfg->compact_gap_s);
	bj_end(j);
	bj_arr(j, "peers");
	if (!strcmp(mode, "disk") || !strcmp(mode, "redis"))
		goto others;
	bj_obj(j, NULL);
	bj_str(j, "system", "parley");
	bj_str(j, "config", !strcmp(mode, "server-compare") || !strcmp(mode, "delivery") ||
				    !strcmp(mode, "compaction")
				    ? cfg->parleyd_args
				    : "engine in process, io_uring backend, fresh temp data dir per run point");
	bj_str(j, "guarantee", "single node; ack after the WAL batch's write + fdatasync");
	bj_end(j);
others:
	if (cfg->redis_server) {
		bj_obj(j, NULL);
		bj_str(j, "system", "redis");
		bj_str(j, "binary", cfg->redis_server);
		bj_str(j, "config", "--bind 127.0.0.1 --appendonly yes --appendfsync always --save \"\"; "
				    "XADD, one connection per producer (version in each row)");
		bj_str(j, "guarantee", "single node; AOF write + fsync before replies");
		bj_end(j);
	}
	if (cfg->nats_server) {
		bj_obj(j, NULL);
		bj_str(j, "system", "nats");
		bj_str(j, "binary", cfg->nats_server);
		bj_str(j, "config", "core pub/sub on 127.0.0.1, no JetStream (no disk, no ack)");
		bj_str(j, "guarantee", "none (memory, at most once)");
		bj_end(j);
	}
	bj_end(j);
	bj_arr(j, "rows");
	return 0;
}

struct bench_json *bench_sink(void)
{
	return sink_f ? &sink : NULL;
}

int bench_sink_close(void)
{
	if (!sink_f)
		return 0;
	bj_end(&sink);
	int rc = bj_finish(&sink);
	if (fclose(sink_f) != 0 && !rc)
		rc = -PARLEY_EIO;
	sink_f = NULL;
	if (rc)
		fprintf(stderr, "parley-bench: --json %s: write failed\n", sink_path);
	return rc;
}
