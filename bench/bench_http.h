/*
 * bench_http.h — the status line of an HTTP/1.x response, for
 * parley-bench's calls to parleyd's admin port (POST /admin/compact in the
 * compaction mode), one sample of a Prometheus text page (GET /metrics in
 * the cluster mode), and the server's stage histograms (the delivery
 * mode's per-stage breakdown). Pure (no I/O, no allocation);
 * unit-tested in tests/unit/bench/test_bench_http.c.
 */
#ifndef PARLEY_BENCH_HTTP_H
#define PARLEY_BENCH_HTTP_H

#include <stddef.h>

/* Status code (100..599) of the response in buf[0..len), which must start
 * with a whole status line "HTTP/1.x NNN ...\r\n" (or "\n"). -EAGAIN when
 * the line is not complete yet, -EPROTO when it is malformed. */
int bench_http_status(const char *buf, size_t len);

/* The value of the sample whose line starts with `name` (the metric name
 * with its labels exactly as written, e.g. parley_raft_role{partition="0"})
 * followed by a space, in the NUL-terminated text: 0 and *out; -ENOENT when
 * no line has it (a longer name sharing the prefix does not match);
 * -EPROTO when its value is not a number; -EINVAL for an empty name. */
int bench_metric_value(const char *text, const char *name, double *out);

/* ---- stage histograms -------------------------------------------------------------- */

/* One stage histogram of a /metrics page: a family parleyd writes as
 *   parley_<family>_stage_seconds_bucket{stage="<name>",le="<bound>"} <cumulative>
 *   parley_<family>_stage_seconds_sum{stage="<name>"} <seconds>
 *   parley_<family>_stage_seconds_count{stage="<name>"} <samples>
 * (families send, delivery, engine: docs/SERVER.md). Buckets in page
 * order (ascending bounds, the last +Inf). */
#define BENCH_STAGE_MAX 32u     /* stages kept from one page */
#define BENCH_STAGE_BUCKETS 32u /* buckets kept per stage */

struct bench_stage {
	char family[16], name[24];
	unsigned nb;
	double le[BENCH_STAGE_BUCKETS];  /* upper bounds in seconds (+Inf: INFINITY) */
	double cum[BENCH_STAGE_BUCKETS]; /* cumulative samples */
	double sum, count;
};

struct bench_stages {
	unsigned n;
	struct bench_stage s[BENCH_STAGE_MAX];
};

/* Every parley_*_stage_seconds histogram of the NUL-terminated page into
 * *out (in first-seen order). 0; -E2BIG when a stage or bucket did not
 * fit (the rest is kept); -EPROTO for a malformed sample line of such a
 * family. */
int bench_stages_parse(const char *text, struct bench_stages *out);

/* out = after - before, stage by stage (matched by family and name;
 * stages missing from before count from 0). */
void bench_stages_delta(const struct bench_stages *before,
			const struct bench_stages *after, struct bench_stages *out);

/* The upper bound (seconds) of the first bucket holding the q-quantile
 * (0 < q <= 1) of a stage's samples: "the q-quantile is <= this". NAN
 * when the stage has no sample; INFINITY when it falls in +Inf. */
double bench_stage_quantile(const struct bench_stage *s, double q);

#endif /* PARLEY_BENCH_HTTP_H */
