/*
 * bench_http.h — the status line of an HTTP/1.x response, for
 * parley-bench's calls to parleyd's admin port (POST /admin/compact in the
 * compaction mode), and one sample of a Prometheus text page (GET
 * /metrics in the cluster mode). Pure (no I/O, no allocation);
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

#endif /* PARLEY_BENCH_HTTP_H */
