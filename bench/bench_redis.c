/*
 * bench_redis.c — `parley-bench redis`: the peer. Durable XADD throughput
 * and latency of Redis 7 streams with `appendfsync always`.
 *
 * Each run point starts its own redis-server (127.0.0.1, a free port, a
 * fresh temp dir under --dir, `--appendonly yes --appendfsync always
 * --save ""`), so Redis, like the engine, starts on an empty data dir; the
 * server is SIGKILLed and its dir removed after the run (also by the
 * watchdog if anything hangs). With appendfsync always Redis writes and
 * fsyncs the AOF before replying to the commands of an event-loop round —
 * Redis's own group commit — so every acked XADD is on disk, like an
 * engine ack. Other settings are Redis defaults (incl. AOF auto-rewrite).
 *
 * Load shape mirrors bench_engine.c so the comparison is fair:
 *   closed loop: N connections, one XADD outstanding on each, each on its
 *                own stream key "bench:p<i>"; a reply triggers the next XADD.
 *   open loop:   XADD k goes out at its intended time t0 + k/R on connection
 *                k % N (pipelined: replies come back in order, so each
 *                connection keeps a FIFO of intended times); latency is from
 *                the intended time.
 * One client thread drives all connections with hiredis's low-level API
 * (redisAppendCommandArgv / redisBufferWrite / redisBufferRead /
 * redisReaderGetReply) and ppoll(2) — the engine's producers likewise run
 * their client side on the engine's own threads, with no extra cores.
 *
 * Ownership: everything here belongs to the calling (main) thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "parley_common.h"

#define RCONN_FIFO (1u << 14)    /* in-flight XADDs per connection */
#define REDIS_MAX_OUTSTANDING 200000u
#define REDIS_START_TIMEOUT_S 10.0

struct rconn {
	redisContext *c;
	char key[32];
	size_t klen;
	uint64_t fifo[RCONN_FIFO]; /* send (closed) / intended (open) times */
	uint32_t head, tail;       /* fifo[head..tail) outstanding */
};


static char redis_version_buf[64] = "unknown";

const char *bench_redis_version(void)
{
	return redis_version_buf;
}

/* Checks that the server really runs with the durability we claim
 * (CONFIG GET appendonly / appendfsync) and records its version. */
static int redis_verify(redisContext *c)
{
	static const char *const want[][2] = {{"appendonly", "yes"},
					      {"appendfsync", "always"}};
	for (unsigned i = 0; i < 2; i++) {
		redisReply *r = redisCommand(c, "CONFIG GET %s", want[i][0]);
		bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
			  r->element[1]->type == REDIS_REPLY_STRING &&
			  !strcmp(r->element[1]->str, want[i][1]);
		if (r)
			freeReplyObject(r);
		if (!ok) {
			fprintf(stderr, "parley-bench: redis-server is not running with "
					"%s %s\n", want[i][0], want[i][1]);
			return -PARLEY_EINVAL;
		}
	}
	redisReply *r = redisCommand(c, "INFO server");
	if (r && r->type == REDIS_REPLY_STRING) {
		const char *v = strstr(r->str, "redis_version:");
		if (v) {
			v += strlen("redis_version:");
			size_t n = strcspn(v, "\r\n");
			if (n >= sizeof redis_version_buf)
				n = sizeof redis_version_buf - 1;
			memcpy(redis_version_buf, v, n);
			redis_version_buf[n] = 0;
		}
	}
	if (r)
		freeReplyObject(r);
	return 0;
}

int bench_redis_start(const struct bench_cfg *cfg, struct bench_redis_srv *s)
{
	memset(s, 0, sizeof *s);
	s->pid = -1;
	s->tmp = bench_mkdtemp(cfg->dir, "redis");
	if (!s->tmp) {
		fprintf(stderr, "parley-bench: redis: cannot create a temp dir under %s: %s\n",
			cfg->dir, strerror(errno));
		return -errno;
	}
	int port = bench_free_port();
	if (port < 0)
		return port;
	s->port = port;
	char portbuf[16], logbuf[4200];
	snprintf(portbuf, sizeof portbuf, "%d", port);
	snprintf(logbuf, sizeof logbuf, "%s/redis.log", s->tmp);
	char *argv[] = {(char *)cfg->redis_server, "--port", portbuf,
			"--bind", "127.0.0.1", "--protected-mode", "yes", "--dir",
			s->tmp, "--appendonly", "yes", "--appendfsync", "always",
			"--save", "", "--daemonize", "no", "--logfile", logbuf, NULL};
	pid_t pid = bench_spawn(argv, NULL);
	if (pid < 0)
		return pid;
	s->pid = pid;
	/* wait until it answers PING */
	double end = bench_now_s() + REDIS_START_TIMEOUT_S;
	while (bench_now_s() < end) {
		if (bench_child_exited(&s->pid)) {
			fprintf(stderr, "parley-bench: redis-server exited at start-up "
					"(see %s)\n", logbuf);
			return -PARLEY_EIO;
		}
		struct timeval tv = {0, 200000};
		redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
		if (c && !c->err) {
			redisReply *r = redisCommand(c, "PING");
			bool ok = r && r->type == REDIS_REPLY_STATUS;
			if (r)
				freeReplyObject(r);
			int vrc = ok ? redis_verify(c) : 0;
			redisFree(c);
			if (ok)
				return vrc;
		} else if (c) {
			redisFree(c);
		}
		bench_sleep_ns(20 * 1000000ull);
	}
	fprintf(stderr, "parley-bench: redis-server did not answer on 127.0.0.1:%d "
			"within %.0fs\n", port, REDIS_START_TIMEOUT_S);
	return -PARLEY_ETIMEDOUT;
}

void bench_redis_stop(struct bench_redis_srv *s)
{
	bench_child_kill(&s->pid);
	bench_tmp_remove(&s->tmp);
}

/* Queues one XADD on connection c and writes it out. */
static int rconn_send(struct rconn *rc, const uint8_t *payload, uint32_t plen,
		      uint64_t stamp)
{
	const char *argv[5] = {"XADD", rc->key, "*", "p", (const char *)payload};
	size_t argvlen[5] = {4, rc->klen, 1, 1, plen};
	if (redisAppendCommandArgv(rc->c, 5, argv, argvlen) != REDIS_OK)
		return -PARLEY_EIO;
	int done = 0;
	do {
		if (redisBufferWrite(rc->c, &done) != REDIS_OK)
			return -PARLEY_EIO;
	} while (!done);
	rc->fifo[rc->tail++ % RCONN_FIFO] = stamp;
	return 0;
}

static uint32_t rconn_inflight(const struct rconn *rc)
{
	return rc->tail - rc->head;
}

int bench_redis_run(const struct bench_cfg *cfg, uint32_t producers,
		    uint32_t payload, double rate, struct load_result *out)
{
	bench_load_begin(out, "redis", producers, payload, rate);
	if (producers == 0 || producers > BENCH_MAX_PRODUCERS || payload == 0)
		return -PARLEY_EINVAL;

	struct bench_redis_srv srv;
	int rc = bench_redis_start(cfg, &srv);
	uint8_t *buf = malloc(payload);
	struct rconn *cs = calloc(producers, sizeof *cs);
	struct pollfd *pfd = calloc(producers, sizeof *pfd);
	if (rc == 0 && (!buf || !cs || !pfd))
		rc = -ENOMEM;
	if (rc != 0)
		goto out;
	bench_fill_payload(buf, payload, cfg->seed);
	for (uint32_t i = 0; i < producers; i++) {
		struct timeval tv = {2, 0};
		cs[i].c = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
		if (!cs[i].c || cs[i].c->err) {
			fprintf(stderr, "parley-bench: redis: connect #%u: %s\n", i,
				cs[i].c ? cs[i].c->errstr : "out of memory");
			rc = -PARLEY_EIO;
			goto out;
		}
		cs[i].klen = (size_t)snprintf(cs[i].key, sizeof cs[i].key, "bench:p%u", i);
		pfd[i].fd = cs[i].c->fd;
		pfd[i].events = POLLIN;
	}
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

	uint64_t t0 = parley_mono_ns();
	uint64_t win_start = t0 + (uint64_t)(cfg->warmup * 1e9);
	uint64_t win_end = win_start + (uint64_t)(cfg->seconds * 1e9);
	uint64_t acks = 0, errors = 0, outstanding = 0, not_sent = 0;
	bool open_loop = rate > 0;
	uint64_t k = 0, next = t0;
	uint64_t interval_ns = open_loop ? (uint64_t)(1e9 / rate) : 0;
	if (open_loop && interval_ns == 0)
		interval_ns = 1;
	char errtxt[128] = "";

	if (!open_loop) {
		for (uint32_t i = 0; i < producers && rc == 0; i++) {
			rc = rconn_send(&cs[i], buf, payload, parley_mono_ns());
			outstanding++;
		}
	}
	uint64_t drain_end = win_end + (uint64_t)(BENCH_DRAIN_SECONDS * 1e9);
	while (rc == 0) {
		uint64_t now = parley_mono_ns();
		bool sending = open_loop ? next < win_end : now < win_end;
		if (!sending && outstanding == 0)
			break;
		if (now >= drain_end) {
			snprintf(out->note, sizeof out->note,
				 "%llu XADDs still in flight after %.0fs drain",
				 (unsigned long long)outstanding, BENCH_DRAIN_SECONDS);
			break;
		}
		if (open_loop) {
			while (next <= now && next < win_end &&
			       outstanding < REDIS_MAX_OUTSTANDING) {
				struct rconn *c = &cs[k % producers];
				if (rconn_inflight(c) >= RCONN_FIFO)
					break;
				uint64_t sent = parley_mono_ns();
				rc = rconn_send(c, buf, payload, next);
				if (rc != 0)
					break;
				if (next >= win_start)
					bench_hist_record(&out->lag, sent - next);
				outstanding++;
				k++;
				next = t0 + (uint64_t)((double)k * 1e9 / rate);
			}
			if (rc != 0)
				break;
		}
		/* wait for replies, or until the next send slot */
		int pr = bench_poll(pfd, producers, open_loop && next < win_end ? next : 0);
		if (pr < 0) {
			rc = pr;
			break;
		}
		if (pr == 0)
			continue;
		for (uint32_t i = 0; i < producers && rc == 0; i++) {
			if (!(pfd[i].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			struct rconn *c = &cs[i];
			if (redisBufferRead(c->c) != REDIS_OK) {
				snprintf(errtxt, sizeof errtxt, "read: %.100s", c->c->errstr);
				rc = -PARLEY_EIO;
				break;
			}
			for (;;) {
				void *rep = NULL;
				if (redisReaderGetReply(c->c->reader, &rep) != REDIS_OK) {
					snprintf(errtxt, sizeof errtxt, "protocol error");
					rc = -PARLEY_EPROTO;
					break;
				}
				if (!rep)
					break;
				redisReply *r = rep;
				uint64_t done_ns = parley_mono_ns();
				PARLEY_ASSERT(rconn_inflight(c) > 0);
				uint64_t stamp = c->fifo[c->head++ % RCONN_FIFO];
				outstanding--;
				if (r->type == REDIS_REPLY_ERROR) {
					errors++;
					snprintf(errtxt, sizeof errtxt, "%.100s", r->str);
				} else {
					bool in_win = open_loop
						? (stamp >= win_start && stamp < win_end)
						: (done_ns >= win_start && done_ns <= win_end);
					if (in_win) {
						acks++;
						bench_hist_record(&out->lat, done_ns - stamp);
					}
				}
				freeReplyObject(r);
				if (!open_loop && done_ns < win_end) {
					rc = rconn_send(c, buf, payload, parley_mono_ns());
					if (rc != 0)
						break;
					outstanding++;
				}
			}
		}
	}
	if (open_loop && next < win_end)
		not_sent = (win_end - next) / interval_ns;
	if (rc != 0 && errtxt[0])
		fprintf(stderr, "parley-bench: redis: %s\n", errtxt);
	if (errors && !out->note[0])
		snprintf(out->note, sizeof out->note, "XADD error: %s", errtxt);
	out->seconds = cfg->seconds;
	out->acks = acks;
	out->errors = errors;
	out->not_sent = not_sent;
	out->appends_per_s = (double)acks / cfg->seconds;
	out->mb_per_s = out->appends_per_s * payload / BENCH_MB;
	out->ok = rc == 0 && errors == 0;
out:
	if (cs)
		for (uint32_t i = 0; i < producers; i++)
			if (cs[i].c)
				redisFree(cs[i].c);
	free(cs);
	free(pfd);
	free(buf);
	bench_redis_stop(&srv);
	return rc;
}
