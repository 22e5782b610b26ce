/*
 * bench_history.c — `parley-bench history`: history page reads through a
 * real parleyd (libparley HISTORY, 50 messages) against Redis 7 streams
 * (XREVRANGE ... COUNT 50) holding the same records, in the same run.
 *
 * Steps (each printed):
 *   1. load: --convs 1:1 conversations (user hist-a with hist-b<i>) of
 *      --msgs messages each, bodies 20..200 B of Debian fortunes text, sent
 *      through libparley by LOADERS threads (durable SENDs; the server's
 *      group commit batches them); the same records (sender, 16-byte
 *      client message id, body) are XADDed to one Redis stream per
 *      conversation (pipelined) and the stream ids kept.
 *   2. hot: last page (before_seq 0) of a random conversation, closed
 *      loop on READERS connections for --seconds: parleyd serves it from
 *      the memtable; Redis from memory. Reads/s and p50/p99/p99.9/max.
 *   3. flush: parleyd is stopped (SIGTERM: drain, everything durable),
 *      the engine is opened on its data dir here and every partition is
 *      flushed into compressed history segments (pe_flush_sync — parleyd
 *      flushes on its own only at its memtable or WAL-pin bounds, far
 *      beyond a short run), the bytes of segments are read from the
 *      partition status, parleyd is started again on the same data, and
 *      the page cache is dropped (echo 1 > /proc/sys/vm/drop_caches; said
 *      when not permitted).
 *   4. older page: the page ending OLDER_DEPTH messages below the newest
 *      (before_seq = last - OLDER_DEPTH): first one read per conversation
 *      ("cold": first touch after restart + drop_caches, one connection),
 *      then a closed loop for --seconds ("warm": block cache). Redis:
 *      XREVRANGE key (<id> - COUNT 50 at the same depth (memory; Redis has
 *      no colder tier to compare with).
 * Redis runs with appendonly yes + appendfsync always (as bench_redis.c),
 * so both hold the records durably.
 *
 * With --connect (a running server) steps 3-4's restart cannot be done:
 * the older page is read warm only, and the output says so.
 *
 * Threads: the main thread, plus LOADERS / READERS worker threads that each
 * own one libparley client or one hiredis connection.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench.h"
#include "bench_json.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parley_client.h"
#include "parley_common.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define LOADERS 8u
#define READERS 4u
#define PAGE 50u
#define OLDER_DEPTH 200u
#define MAX_CONVS 1024u
#define MAX_MSGS 100000u

struct hconv {
	char id[72];        /* parley conversation id */
	char key[32];       /* redis stream key */
	uint64_t last_seq;  /* parley seq of the newest message */
	char older_id[48];  /* redis id of the message at depth OLDER_DEPTH */
};

struct hctx {
	const struct bench_cfg *cfg;
	struct bench_srv srv;
	struct bench_redis_srv redis;
	bool have_redis;
	unsigned nconv, nmsg;
	struct hconv *conv;
	/* per phase */
	bool older;           /* read the older page (else the last page) */
	bool use_redis;
	uint64_t end_ns;
	int fail;
};

struct hworker {
	struct hctx *x;
	unsigned idx;
	pthread_t tid;
	struct bench_hist h;
	uint64_t ok, err;
};

static int new_client(struct hctx *x, const char *user, const char *dev, struct parley_client **c)
{
	char tok[2048];
	int rc = bench_mint(x->cfg, user, tok, sizeof tok);
	if (rc)
		return rc;
	struct parley_client_opts o = {
		.host = x->srv.host, .port = (uint16_t)x->srv.port, .token = tok, .device_id = dev,
		.client_name = "parley-bench history", .request_timeout_ms = 10000,
		.call_deadline_ms = 30000,
	};
	if ((rc = parley_client_new(&o, c)) != 0)
		return rc;
	if ((rc = parley_client_connect(*c)) != 0) {
		parley_client_free(*c);
		*c = NULL;
	}
	return rc;
}

/* ---- load --------------------------------------------------------------------------- */

/* The next record of a conversation's stream, the same for parley and
 * Redis: a 20..200-byte text body and a random message id. Returns the
 * body's length (body holds 256 bytes). */
static size_t next_record(struct parley_rng *rng, uint8_t *body,
			  uint8_t id[PARLEY_PROTO_MSG_ID_LEN])
{
	size_t len = 20 + parley_rng_below(rng, 181);
	bench_text_body(body, len, parley_rng_next(rng));
	for (unsigned b = 0; b < PARLEY_PROTO_MSG_ID_LEN; b++)
		id[b] = (uint8_t)parley_rng_next(rng);
	return len;
}

static void *load_main(void *arg)
{
	struct hworker *w = arg;
	struct hctx *x = w->x;
	char dev[32];
	snprintf(dev, sizeof dev, "hist-a-load%u", w->idx);
	struct parley_client *c;
	int rc = new_client(x, "hist-a", dev, &c);
	if (rc) {
		fprintf(stderr, "parley-bench: history: loader connect: %s\n", parley_strerror(rc));
		w->err++;
		return NULL;
	}
	uint8_t body[256];
	for (unsigned ci = w->idx; ci < x->nconv; ci += LOADERS) {
		struct parley_rng rng = {x->cfg->seed * 7919u + ci};
		for (unsigned m = 0; m < x->nmsg; m++) {
			uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
			size_t len = next_record(&rng, body, id);
			struct parley_send_result res;
			uint64_t t0 = parley_mono_ns();
			rc = parley_client_send_id(c, x->conv[ci].id, id, 1, body, len, &res);
			if (rc) {
				w->err++;
				continue;
			}
			bench_hist_record(&w->h, parley_mono_ns() - t0);
			w->ok++;
			x->conv[ci].last_seq = res.seq;
		}
	}
	parley_client_free(c);
	return NULL;
}

/* The same records into Redis, one stream per conversation, pipelined. */
static int load_redis(struct hctx *x)
{
	struct timeval tv = {10, 0};
	redisContext *r = redisConnectWithTimeout("127.0.0.1", x->redis.port, tv);
	if (!r || r->err)
		return -PARLEY_EIO;
	uint8_t body[256];
	int rc = 0;
	for (unsigned ci = 0; ci < x->nconv && !rc; ci++) {
		struct parley_rng rng = {x->cfg->seed * 7919u + ci};
		for (unsigned m = 0; m < x->nmsg; m++) {
			uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
			size_t len = next_record(&rng, body, id);
			redisAppendCommand(r, "XADD %s * s hist-a m %b b %b", x->conv[ci].key, id,
					   sizeof id, body, len);
		}
		for (unsigned m = 0; m < x->nmsg; m++) {
			redisReply *rep;
			if (redisGetReply(r, (void **)&rep) != REDIS_OK || !rep) {
				rc = -PARLEY_EIO;
				break;
			}
			/* message m has seq m+1; the older page ends at depth
			 * OLDER_DEPTH below the newest (seq nmsg - OLDER_DEPTH) */
			if (rep->type == REDIS_REPLY_STRING && m + 1 == x->nmsg - OLDER_DEPTH)
				snprintf(x->conv[ci].older_id, sizeof x->conv[ci].older_id, "%s",
					 rep->str);
			if (rep->type != REDIS_REPLY_STRING)
				rc = -PARLEY_EIO;
			freeReplyObject(rep);
		}
	}
	redisFree(r);
	return rc;
}

/* ---- reads --------------------------------------------------------------------------- */

static void *read_main(void *arg)
{
	struct hworker *w = arg;
	struct hctx *x = w->x;
	struct parley_rng rng = {x->cfg->seed * 31u + w->idx + (x->older ? 1000 : 0)};
	if (x->use_redis) {
		struct timeval tv = {10, 0};
		redisContext *r = redisConnectWithTimeout("127.0.0.1", x->redis.port, tv);
		if (!r || r->err) {
			w->err++;
			if (r)
				redisFree(r);
			return NULL;
		}
		while (parley_mono_ns() < x->end_ns) {
			struct hconv *cv = &x->conv[parley_rng_below(&rng, x->nconv)];
			uint64_t t0 = parley_mono_ns();
			redisReply *rep = x->older ? redisCommand(r, "XREVRANGE %s (%s - COUNT %u",
								   cv->key, cv->older_id, PAGE)
						   : redisCommand(r, "XREVRANGE %s + - COUNT %u",
								   cv->key, PAGE);
			uint64_t t1 = parley_mono_ns();
			if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == PAGE) {
				w->ok++;
				bench_hist_record(&w->h, t1 - t0);
			} else {
				w->err++;
			}
			if (rep)
				freeReplyObject(rep);
			else
				break;
		}
		redisFree(r);
		return NULL;
	}
	char dev[32];
	snprintf(dev, sizeof dev, "hist-a-read%u", w->idx);
	struct parley_client *c;
	int rc = new_client(x, "hist-a", dev, &c);
	if (rc) {
		w->err++;
		return NULL;
	}
	while (parley_mono_ns() < x->end_ns) {
		struct hconv *cv = &x->conv[parley_rng_below(&rng, x->nconv)];
		const struct parley_history_page *pg;
		uint64_t before = x->older ? cv->last_seq - OLDER_DEPTH : 0;
		uint64_t t0 = parley_mono_ns();
		rc = parley_client_history(c, cv->id, before, PAGE, &pg);
		uint64_t t1 = parley_mono_ns();
		if (!rc && pg->count == PAGE) {
			w->ok++;
			bench_hist_record(&w->h, t1 - t0);
		} else {
			w->err++;
		}
	}
	parley_client_free(c);
	return NULL;
}

struct hres {
	struct bench_hist h;
	uint64_t ok, err;
	double secs;
};

static int run_workers(struct hctx *x, void *(*fn)(void *), unsigned n, double secs,
		       struct hres *out)
{
	struct hworker *w = calloc(n, sizeof *w);
	if (!w)
		return -ENOMEM;
	memset(out, 0, sizeof *out);
	bench_hist_init(&out->h);
	uint64_t t0 = parley_mono_ns();
	x->end_ns = t0 + (uint64_t)(secs * 1e9);
	for (unsigned i = 0; i < n; i++) {
		w[i].x = x;
		w[i].idx = i;
		bench_hist_init(&w[i].h);
		if (pthread_create(&w[i].tid, NULL, fn, &w[i]) != 0)
			abort();
	}
	for (unsigned i = 0; i < n; i++) {
		pthread_join(w[i].tid, NULL);
		bench_hist_merge(&out->h, &w[i].h);
		out->ok += w[i].ok;
		out->err += w[i].err;
	}
	out->secs = (double)(parley_mono_ns() - t0) / 1e9;
	free(w);
	return 0;
}

static void row(const char *sys, const char *what, const struct hres *r)
{
	printf("| %s | %s | %llu | %llu | %.0f | %.1f | %.1f | %.1f | %.1f |\n", sys, what,
	       (unsigned long long)r->ok, (unsigned long long)r->err, (double)r->ok / r->secs,
	       (double)bench_hist_quantile(&r->h, 0.5) / 1e3,
	       (double)bench_hist_quantile(&r->h, 0.99) / 1e3,
	       (double)bench_hist_quantile(&r->h, 0.999) / 1e3, (double)r->h.max_ns / 1e3);
}

static void jres(struct bench_json *j, const char *key, const struct hres *r)
{
	bj_obj(j, key);
	bj_u64(j, "ok", r->ok);
	bj_u64(j, "errors", r->err);
	bj_num(j, "seconds", r->secs);
	bj_num(j, "reads_per_s", (double)r->ok / r->secs);
	bj_hist(j, "latency", &r->h);
	bj_end(j);
}

/* Stops parleyd, flushes every partition with the engine, restarts it. */
static int flush_offline(struct hctx *x, uint64_t *seg_bytes, uint32_t *segs,
			 uint64_t *mem_entries)
{
	int rc = bench_srv_term(&x->srv);
	if (rc) {
		fprintf(stderr, "parley-bench: history: parleyd did not stop cleanly\n");
		return rc;
	}
	char dir[4200];
	snprintf(dir, sizeof dir, "%s/data", x->srv.tmp);
	struct pe_options eo = {.dir = dir};
	struct pe_engine *e;
	if ((rc = pe_open(&eo, &e)) != 0) {
		fprintf(stderr, "parley-bench: history: engine open %s: %s\n", dir,
			parley_strerror(rc));
		return rc;
	}
	*seg_bytes = 0;
	*segs = 0;
	*mem_entries = 0;
	for (uint32_t p = 0; p < pe_partition_count(e) && !rc; p++) {
		rc = pe_flush_sync(e, p);
		struct pe_partition_status st;
		if (!rc && (rc = pe_partition_status(e, p, &st)) == 0) {
			*seg_bytes += st.segment_bytes;
			*segs += st.segments;
			*mem_entries += st.entries;
		}
	}
	pe_close(e);
	if (rc) {
		fprintf(stderr, "parley-bench: history: flush: %s\n", parley_strerror(rc));
		return rc;
	}
	return bench_srv_respawn(x->cfg, &x->srv);
}

static bool drop_caches(char *why, size_t cap)
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, cap, "not permitted: open /proc/sys/vm/drop_caches: %s",
			 strerror(errno));
		return false;
	}
	bool ok = write(fd, "1", 1) == 1;
	if (!ok)
		snprintf(why, cap, "not permitted: write /proc/sys/vm/drop_caches: %s",
			 strerror(errno));
	else
		snprintf(why, cap, "page cache dropped (echo 1 > /proc/sys/vm/drop_caches)");
	close(fd);
	return ok;
}

int bench_history(const struct bench_cfg *cfg)
{
	struct hctx *x = calloc(1, sizeof *x);
	if (!x)
		return -ENOMEM;
	x->cfg = cfg;
	x->nconv = cfg->convs ? cfg->convs : 32;
	x->nmsg = cfg->msgs ? cfg->msgs : 300;
	if (x->nconv > MAX_CONVS)
		x->nconv = MAX_CONVS;
	if (x->nmsg > MAX_MSGS)
		x->nmsg = MAX_MSGS;
	if (x->nmsg <= OLDER_DEPTH + PAGE) { /* seqs start at 1 */
		fprintf(stderr, "parley-bench: history: --msgs must be > %u (the older page "
				"ends %u messages below the newest)\n", OLDER_DEPTH + PAGE, OLDER_DEPTH);
		free(x);
		return -PARLEY_EINVAL;
	}
	x->conv = calloc(x->nconv, sizeof *x->conv);
	if (!x->conv) {
		free(x);
		return -ENOMEM;
	}
	bool have_text = bench_text_load(NULL) == 0;
	struct hres load = {0}, hot_p = {0}, hot_r = {0}, cold_p = {0}, old_p = {0}, old_r = {0};
	uint64_t seg_bytes = 0, mem_entries = 0;
	uint32_t segs = 0;
	char dropped[200] = "not attempted (--no-drop-caches)";
	bool restarted = false;
	int rc;
	bench_watchdog_arm(120 + x->nconv * x->nmsg / 200.0);
	if ((rc = bench_srv_start(cfg, &x->srv)) != 0)
		goto out;
	if (!cfg->no_redis) {
		if (!cfg->redis_server) {
			fprintf(stderr, "parley-bench: history: redis-server not found: no Redis peer\n");
		} else if ((rc = bench_redis_start(cfg, &x->redis)) != 0) {
			goto out;
		} else {
			x->have_redis = true;
		}
	}
	/* conversations */
	{
		struct parley_client *c;
		if ((rc = new_client(x, "hist-a", "hist-a-setup", &c)) != 0)
			goto out;
		for (unsigned i = 0; i < x->nconv && !rc; i++) {
			char peer[32];
			snprintf(peer, sizeof peer, "hist-b%04u", i);
			const struct parley_conv *cv;
			rc = parley_client_conv_open(c, peer, &cv);
			if (!rc)
				snprintf(x->conv[i].id, sizeof x->conv[i].id, "%.*s", (int)cv->conv.len,
					 cv->conv.p);
			snprintf(x->conv[i].key, sizeof x->conv[i].key, "conv:%04u", i);
		}
		parley_client_free(c);
		if (rc)
			goto out;
	}
	printf("\n### history reads: parleyd vs Redis %s XREVRANGE (same records, same run)\n\n",
	       x->have_redis ? bench_redis_version() : "(not run)");
	printf("- records: %u conversations × %u messages, bodies 20..200 B of %s, 16-byte "
	       "client message id and sender with each (Redis: XADD key * s <sender> m <id> b "
	       "<body>)\n", x->nconv, x->nmsg,
	       have_text ? "Debian fortunes text" : "word-list filler");
	printf("- guarantees: parleyd single node, SEND_ACK after fdatasync; redis-server "
	       "appendonly yes, appendfsync always; both on %s\n", cfg->dir);
	printf("- page = %u messages, newest first; older page ends %u messages below the newest; "
	       "%u reader connections each, closed loop, %.1f s per row\n", PAGE, OLDER_DEPTH,
	       READERS, cfg->seconds);
	run_workers(x, load_main, LOADERS, 0, &load);
	printf("- loaded %llu messages through parleyd in %.2f s (%llu errors; %u loader "
	       "connections, send p50 %.1f µs p99 %.1f µs)\n",
	       (unsigned long long)load.ok, load.secs, (unsigned long long)load.err, LOADERS,
	       (double)bench_hist_quantile(&load.h, 0.5) / 1e3,
	       (double)bench_hist_quantile(&load.h, 0.99) / 1e3);
	if (load.err) {
		rc = -PARLEY_EIO;
		goto out;
	}
	if (x->have_redis && (rc = load_redis(x)) != 0) {
		fprintf(stderr, "parley-bench: history: loading redis failed\n");
		goto out;
	}
	x->older = false;
	x->use_redis = false;
	run_workers(x, read_main, READERS, cfg->seconds, &hot_p);
	if (x->have_redis) {
		x->use_redis = true;
		run_workers(x, read_main, READERS, cfg->seconds, &hot_r);
	}
	if (x->srv.pid > 0) {
		if ((rc = flush_offline(x, &seg_bytes, &segs, &mem_entries)) != 0)
			goto out;
		restarted = true;
		if (!cfg->no_drop_caches)
			drop_caches(dropped, sizeof dropped);
		/* cold: first touch of each conversation's older page, one connection */
		struct parley_client *c;
		if ((rc = new_client(x, "hist-a", "hist-a-cold", &c)) != 0)
			goto out;
		bench_hist_init(&cold_p.h);
		uint64_t t0 = parley_mono_ns();
		for (unsigned i = 0; i < x->nconv; i++) {
			const struct parley_history_page *pg;
			uint64_t a = parley_mono_ns();
			int r2 = parley_client_history(c, x->conv[i].id, x->conv[i].last_seq - OLDER_DEPTH,
						       PAGE, &pg);
			uint64_t b = parley_mono_ns();
			if (!r2 && pg->count == PAGE) {
				cold_p.ok++;
				bench_hist_record(&cold_p.h, b - a);
			} else {
				cold_p.err++;
			}
		}
		cold_p.secs = (double)(parley_mono_ns() - t0) / 1e9;
		parley_client_free(c);
	} else {
		snprintf(dropped, sizeof dropped, "not done: --connect server (cannot restart it)");
	}
	x->older = true;
	x->use_redis = false;
	run_workers(x, read_main, READERS, cfg->seconds, &old_p);
	if (x->have_redis) {
		x->use_redis = true;
		run_workers(x, read_main, READERS, cfg->seconds, &old_r);
	}
	if (restarted)
		printf("- flush: parleyd stopped (SIGTERM), every partition flushed with the engine, "
		       "parleyd restarted on the same data; %u history segments, %llu bytes (%.1f B per "
		       "message sent, all streams the server keeps: conversation + inboxes), %llu "
		       "entries left in memtables\n",
		       segs, (unsigned long long)seg_bytes, load.ok ? (double)seg_bytes / load.ok : 0.0,
		       (unsigned long long)mem_entries);
	else
		printf("- flush: not done (a running server given with --connect cannot be stopped "
		       "and flushed from here): the older page is read from wherever the server keeps "
		       "it\n");
	printf("- page cache before the older-page reads: %s\n\n", dropped);
	printf("| system | page | reads | errors | reads/s | p50 µs | p99 µs | p99.9 µs | max µs "
	       "|\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
	row("parleyd", "last 50 (hot: memtable)", &hot_p);
	if (x->have_redis)
		row("redis", "last 50 (XREVRANGE + - COUNT 50)", &hot_r);
	if (restarted)
		row("parleyd", "older 50, cold (first read per conversation after restart)", &cold_p);
	row("parleyd", restarted ? "older 50, warm (segments via block cache)" : "older 50 (no flush)",
	    &old_p);
	if (x->have_redis)
		row("redis", "older 50 (XREVRANGE (id - COUNT 50)", &old_r);
	if (x->have_redis) {
		double ph = (double)hot_p.ok / hot_p.secs, rh = (double)hot_r.ok / hot_r.secs;
		double po = (double)old_p.ok / old_p.secs, ro = (double)old_r.ok / old_r.secs;
		printf("\nratios (same run): hot reads/s parleyd ÷ redis %.2f×, p99 %.2f×; older "
		       "(warm) reads/s %.2f×, p99 %.2f×\n", rh > 0 ? ph / rh : NAN,
		       (double)bench_hist_quantile(&hot_p.h, 0.99) /
			       (double)bench_hist_quantile(&hot_r.h, 0.99),
		       ro > 0 ? po / ro : NAN,
		       (double)bench_hist_quantile(&old_p.h, 0.99) /
			       (double)bench_hist_quantile(&old_r.h, 0.99));
	}
	if (cfg->json) {
		FILE *f = fopen(cfg->json, "w");
		if (!f) {
			rc = -errno;
			fprintf(stderr, "parley-bench: --json %s: %s\n", cfg->json, strerror(errno));
			goto out;
		}
		struct bench_json j;
		bj_init(&j, f);
		bj_str(&j, "tool", "parley-bench");
		bj_str(&j, "mode", "history");
		bj_machine(&j, "machine");
		bj_obj(&j, "settings");
		bj_u64(&j, "conversations", x->nconv);
		bj_u64(&j, "messages_per_conversation", x->nmsg);
		bj_u64(&j, "page", PAGE);
		bj_u64(&j, "older_depth", OLDER_DEPTH);
		bj_u64(&j, "readers", READERS);
		bj_u64(&j, "loaders", LOADERS);
		bj_num(&j, "seconds", cfg->seconds);
		bj_str(&j, "bodies", have_text ? "fortunes 20..200 B" : "filler 20..200 B");
		bj_str(&j, "page_cache", dropped);
		bj_bool(&j, "flushed_and_restarted", restarted);
		bj_end(&j);
		bj_arr(&j, "peers");
		bj_obj(&j, NULL);
		bj_str(&j, "system", "parleyd");
		bj_str(&j, "args", cfg->connect ? cfg->connect : cfg->parleyd_args);
		bj_str(&j, "guarantee", "single node, SEND_ACK after fdatasync");
		bj_end(&j);
		if (x->have_redis) {
			bj_obj(&j, NULL);
			bj_str(&j, "system", "redis");
			bj_str(&j, "version", bench_redis_version());
			bj_str(&j, "args", "--appendonly yes --appendfsync always --save \"\"");
			bj_str(&j, "guarantee", "single node, AOF fsync before replies");
			bj_end(&j);
		}
		bj_end(&j);
		bj_obj(&j, "load");
		bj_u64(&j, "messages", load.ok);
		bj_u64(&j, "errors", load.err);
		bj_num(&j, "seconds", load.secs);
		bj_hist(&j, "send_latency", &load.h);
		bj_end(&j);
		bj_obj(&j, "storage");
		bj_u64(&j, "segments", segs);
		bj_u64(&j, "segment_bytes", seg_bytes);
		bj_num(&j, "segment_bytes_per_message", load.ok && restarted ?
			       (double)seg_bytes / load.ok : NAN);
		bj_end(&j);
		bj_obj(&j, "parleyd");
		jres(&j, "hot", &hot_p);
		if (restarted)
			jres(&j, "older_cold", &cold_p);
		jres(&j, "older_warm", &old_p);
		bj_end(&j);
		if (x->have_redis) {
			bj_obj(&j, "redis");
			jres(&j, "hot", &hot_r);
			jres(&j, "older", &old_r);
			bj_end(&j);
		}
		rc = bj_finish(&j);
		fclose(f);
	}
out:
	bench_watchdog_arm(0);
	bench_srv_stop(&x->srv);
	if (x->have_redis)
		bench_redis_stop(&x->redis);
	free(x->conv);
	free(x);
	return rc;
}
