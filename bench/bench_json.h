/*
 * bench_json.h — parley-bench's machine-readable results: a streaming JSON
 * writer (every mode's --json FILE) and a small reader (report and plan
 * read result files back). No dependency; RFC 8259 subset: no duplicate-key
 * check, numbers as double.
 *
 * Writer: calls nest like the document; keys are given for members of an
 * object and NULL inside arrays. Non-finite numbers are written as null
 * (JSON has no NaN: "not measured"). The first error (I/O, nesting deeper
 * than BJ_MAX_DEPTH, unbalanced end) is sticky and reported by bj_finish.
 *
 * Reader: bjv_parse builds a tree (one malloc per container's member
 * array, strings decoded to UTF-8); errors name the line and column.
 * Bounded: nesting <= BJ_MAX_DEPTH, input <= BJ_MAX_INPUT bytes.
 *
 * Threads/ownership: a writer or a tree belongs to one thread; the tree
 * owns all its strings (bjv_free frees everything).
 */
#ifndef PARLEY_BENCH_JSON_H
#define PARLEY_BENCH_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bench_hist.h"

#define BJ_MAX_DEPTH 32
#define BJ_MAX_INPUT (64u << 20)

struct bench_json {
	FILE *f;
	unsigned depth;
	bool in_arr[BJ_MAX_DEPTH + 1];
	bool need_comma[BJ_MAX_DEPTH + 1];
	int err; /* first error, 0 = none */
};

void bj_init(struct bench_json *j, FILE *f); /* opens the top-level object */
void bj_obj(struct bench_json *j, const char *key);
void bj_arr(struct bench_json *j, const char *key);
void bj_end(struct bench_json *j); /* closes the innermost object or array */
void bj_str(struct bench_json *j, const char *key, const char *v); /* NULL -> null */
void bj_num(struct bench_json *j, const char *key, double v);
void bj_u64(struct bench_json *j, const char *key, uint64_t v);
void bj_bool(struct bench_json *j, const char *key, bool v);
void bj_null(struct bench_json *j, const char *key);
/* Closes the top-level object and flushes. 0, or the first error. */
int bj_finish(struct bench_json *j);

/* A latency histogram: count, min/mean/max and p50..p99.99 in µs, and
 * "cdf": [[µs, fraction at or below], ...] at BJ_CDF_POINTS quantiles. */
void bj_hist(struct bench_json *j, const char *key, const struct bench_hist *h);
/* "machine": cores, kernel, /proc/loadavg and UTC date when it is
 * written (the end of a run), and at bj_note_start() if that was called. */
void bj_machine(struct bench_json *j, const char *key);
void bj_note_start(void);

/* ---- reader ---------------------------------------------------------------- */

enum bjv_type { BJV_NULL, BJV_BOOL, BJV_NUM, BJV_STR, BJV_ARR, BJV_OBJ };

struct bjv {
	enum bjv_type type;
	char *key;          /* member name inside an object, else NULL */
	double num;         /* BJV_NUM; BJV_BOOL: 0/1 */
	char *str;          /* BJV_STR, NUL-terminated UTF-8 */
	size_t n;           /* BJV_ARR / BJV_OBJ: members */
	struct bjv *kids;
};

/* Parses text[0..len). 0 and *out (free with bjv_free), or -PARLEY_EPROTO
 * with "line L col C: what" in err. */
int bjv_parse(const char *text, size_t len, struct bjv **out, char *err, size_t errcap);
/* Reads and parses a file; errors are prefixed with its path. */
int bjv_load(const char *path, struct bjv **out, char *err, size_t errcap);
void bjv_free(struct bjv *v);
/* Member `key` of an object (NULL if absent or v is not an object). */
const struct bjv *bjv_get(const struct bjv *v, const char *key);
/* Dotted path of object members, e.g. "result.sends.count". */
const struct bjv *bjv_path(const struct bjv *v, const char *path);
/* The number at path, or dflt when absent or not a number. */
double bjv_num_at(const struct bjv *v, const char *path, double dflt);
/* The string at path, or NULL. */
const char *bjv_str_at(const struct bjv *v, const char *path);

#endif /* PARLEY_BENCH_JSON_H */
