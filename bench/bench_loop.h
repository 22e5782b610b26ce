/*
 * bench_loop.h — small pieces the load loops of parley-bench's server
 * modes share (bench_server.c, bench_compaction.c, bench_nats.c,
 * bench_jetstream.c): the run's timeline, a closed-loop run's totals, one
 * delivery's bookkeeping, and a producer's session with its conversation.
 *
 * Pure helpers over the caller's state (no allocation, no threads of
 * their own); each is called from the thread that runs the loop.
 */
#ifndef PARLEY_BENCH_LOOP_H
#define PARLEY_BENCH_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bench.h"
#include "bench_hist.h"

/* The run's timeline from t0: the measured window [*win_start, *win_end)
 * after --warmup, then at most BENCH_DRAIN_SECONDS of drain. */
static inline void bench_window(const struct bench_cfg *cfg, uint64_t t0, uint64_t *win_start,
				uint64_t *win_end, uint64_t *drain_end)
{
	*win_start = t0 + (uint64_t)(cfg->warmup * 1e9);
	*win_end = *win_start + (uint64_t)(cfg->seconds * 1e9);
	*drain_end = *win_end + (uint64_t)(BENCH_DRAIN_SECONDS * 1e9);
}

/* A closed-loop run's totals into out: acks inside the window over
 * --seconds, payload MB/s, ok when rc is 0 and nothing failed. */
static inline void bench_load_end(struct load_result *out, const struct bench_cfg *cfg,
				  uint64_t acks, uint64_t errors, uint32_t payload, int rc)
{
	out->seconds = cfg->seconds;
	out->acks = acks;
	out->errors = errors;
	out->appends_per_s = (double)acks / cfg->seconds;
	out->mb_per_s = out->appends_per_s * payload / BENCH_MB;
	out->ok = rc == 0 && errors == 0;
}

/* Send slot idx (< the slots issued) delivered at `at`: a repeat counts
 * in *dups; a first delivery counts in *delivered, its latency from the
 * intended send time into h when that time lies inside [win_start, win_end). */
static inline void bench_delivered(uint8_t *seen, const uint64_t *intended, uint64_t idx,
				   uint64_t at, uint64_t win_start, uint64_t win_end,
				   struct bench_hist *h, uint64_t *delivered, uint64_t *dups)
{
	if (seen[idx]++) {
		(*dups)++;
		return;
	}
	(*delivered)++;
	if (intended[idx] >= win_start && intended[idx] < win_end)
		bench_hist_record(h, at - intended[idx]);
}

/* A producer's session as `user` (device "d0") and its 1:1 conversation
 * with `peer` (id into conv[0..cap)): bench_session_open then
 * bench_conv_open, each wait bounded by timeout_ms. */
static inline int bench_chat_open(const struct bench_cfg *cfg, struct wire_conn *c,
				  struct parley_msg *m, const char *host, int port,
				  struct ssl_ctx_st *tctx, const char *user, const char *peer,
				  int timeout_ms, struct parley_hello_ok *hello, char *conv,
				  size_t cap, char *errtxt, size_t errcap)
{
	int rc = bench_session_open(cfg, c, host, port, tctx, user, "d0", timeout_ms, hello);
	if (rc)
		return rc;
	return bench_conv_open(c, m, peer, timeout_ms, conv, cap, errtxt, errcap);
}

#endif
