/*
 * bench_json.c — JSON writer and reader of parley-bench's result files (see
 * bench_json.h). The writer pretty-prints (two spaces per level) so result
 * files diff well; the reader is a recursive-descent parser bounded by
 * BJ_MAX_DEPTH.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench_json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "parley_common.h"

/* ---- writer ------------------------------------------------------------------ */

static void put_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (*p < 0x20)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

/* Comma, newline, indentation and key of the next value. */
static bool begin_value(struct bench_json *j, const char *key)
{
	if (j->err)
		return false;
	bool want_key = !j->in_arr[j->depth];
	if (want_key != (key != NULL)) {
		j->err = -PARLEY_EINVAL; /* key in an array or none in an object */
		return false;
	}
	if (j->need_comma[j->depth])
		fputc(',', j->f);
	fputc('\n', j->f);
	for (unsigned i = 0; i < j->depth; i++)
		fputs("  ", j->f);
	if (key) {
		put_str(j->f, key);
		fputs(": ", j->f);
	}
	j->need_comma[j->depth] = true;
	return true;
}

static void open_container(struct bench_json *j, const char *key, bool arr)
{
	if (!begin_value(j, key))
		return;
	if (j->depth == BJ_MAX_DEPTH) {
		j->err = -PARLEY_ETOOBIG;
		return;
	}
	fputc(arr ? '[' : '{', j->f);
	j->depth++;
	j->in_arr[j->depth] = arr;
	j->need_comma[j->depth] = false;
}

void bj_init(struct bench_json *j, FILE *f)
{
	memset(j, 0, sizeof *j);
	j->f = f;
	fputc('{', f);
	j->depth = 1;
}

void bj_obj(struct bench_json *j, const char *key) { open_container(j, key, false); }
void bj_arr(struct bench_json *j, const char *key) { open_container(j, key, true); }

void bj_end(struct bench_json *j)
{
	if (j->err)
		return;
	if (j->depth <= 1) {
		j->err = -PARLEY_EINVAL; /* more ends than opens */
		return;
	}
	bool arr = j->in_arr[j->depth];
	bool had = j->need_comma[j->depth];
	j->depth--;
	if (had) {
		fputc('\n', j->f);
		for (unsigned i = 0; i < j->depth; i++)
			fputs("  ", j->f);
	}
	fputc(arr ? ']' : '}', j->f);
}

void bj_str(struct bench_json *j, const char *key, const char *v)
{
	if (!begin_value(j, key))
		return;
	if (v)
		put_str(j->f, v);
	else
		fputs("null", j->f);
}

void bj_num(struct bench_json *j, const char *key, double v)
{
	if (!begin_value(j, key))
		return;
	if (!isfinite(v))
		fputs("null", j->f);
	else if (v == floor(v) && fabs(v) < 1e15)
		fprintf(j->f, "%.0f", v);
	else
		fprintf(j->f, "%.17g", v);
}

void bj_u64(struct bench_json *j, const char *key, uint64_t v)
{
	if (begin_value(j, key))
		fprintf(j->f, "%llu", (unsigned long long)v);
}

void bj_bool(struct bench_json *j, const char *key, bool v)
{
	if (begin_value(j, key))
		fputs(v ? "true" : "false", j->f);
}

void bj_null(struct bench_json *j, const char *key)
{
	if (begin_value(j, key))
		fputs("null", j->f);
}

int bj_finish(struct bench_json *j)
{
	if (!j->err && j->depth != 1)
		j->err = -PARLEY_EINVAL; /* unclosed containers */
	if (!j->err) {
		fputs("\n}\n", j->f);
		j->depth = 0;
	}
	if (fflush(j->f) != 0 || ferror(j->f))
		if (!j->err)
			j->err = -PARLEY_EIO;
	return j->err;
}

static const double cdf_q[] = {
	0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65,
	0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995,
	0.999, 0.9995, 0.9999, 1.0,
};

void bj_hist(struct bench_json *j, const char *key, const struct bench_hist *h)
{
	bj_obj(j, key);
	bj_u64(j, "count", h->count);
	bj_num(j, "min_us", h->count ? (double)h->min_ns / 1e3 : NAN);
	bj_num(j, "mean_us", h->count ? bench_hist_mean(h) / 1e3 : NAN);
	static const struct { const char *k; double q; } pq[] = {
		{"p50_us", 0.5}, {"p90_us", 0.9}, {"p99_us", 0.99},
		{"p999_us", 0.999}, {"p9999_us", 0.9999},
	};
	for (size_t i = 0; i < sizeof pq / sizeof pq[0]; i++)
		bj_num(j, pq[i].k, h->count ? (double)bench_hist_quantile(h, pq[i].q) / 1e3 : NAN);
	bj_num(j, "max_us", h->count ? (double)h->max_ns / 1e3 : NAN);
	bj_arr(j, "cdf");
	if (h->count)
		for (size_t i = 0; i < sizeof cdf_q / sizeof cdf_q[0]; i++) {
			bj_arr(j, NULL);
			bj_num(j, NULL, (double)bench_hist_quantile(h, cdf_q[i]) / 1e3);
			bj_num(j, NULL, cdf_q[i]);
			bj_end(j);
		}
	bj_end(j);
	bj_end(j);
}

static void read_load(char *load, size_t cap)
{
	snprintf(load, cap, "unavailable");
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (!fgets(load, (int)cap, f))
			snprintf(load, cap, "unavailable");
		fclose(f);
		load[strcspn(load, "\n")] = 0;
	}
}

static char start_load[128], start_ts[64];

void bj_note_start(void)
{
	read_load(start_load, sizeof start_load);
	time_t now = time(NULL);
	strftime(start_ts, sizeof start_ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
}

void bj_machine(struct bench_json *j, const char *key)
{
	struct utsname u;
	char load[128], ts[64];
	uname(&u);
	read_load(load, sizeof load);
	time_t now = time(NULL);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	bj_obj(j, key);
	bj_num(j, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
	bj_str(j, "kernel", u.release);
	bj_str(j, "arch", u.machine);
	bj_str(j, "loadavg", load);
	bj_str(j, "date_utc", ts);
	if (start_load[0]) {
		bj_str(j, "loadavg_at_start", start_load);
		bj_str(j, "start_utc", start_ts);
	}
	bj_str(j, "note", "shared machine: absolute numbers move between runs, compare "
			  "ratios measured in the same run");
	bj_end(j);
}

/* ---- reader ------------------------------------------------------------------ */

struct jp {
	const char *s, *end, *start;
	char *err;
	size_t errcap;
	int failed;
};

static int jp_fail(struct jp *p, const char *what)
{
	if (p->failed)
		return -PARLEY_EPROTO;
	p->failed = 1;
	unsigned line = 1, col = 1;
	for (const char *c = p->start; c < p->s && c < p->end; c++) {
		if (*c == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	if (p->errcap)
		snprintf(p->err, p->errcap, "line %u col %u: %s", line, col, what);
	return -PARLEY_EPROTO;
}

static void jp_ws(struct jp *p)
{
	while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
		p->s++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int jp_string(struct jp *p, char **out)
{
	if (p->s >= p->end || *p->s != '"')
		return jp_fail(p, "expected a string");
	p->s++;
	size_t cap = 16, n = 0;
	char *b = malloc(cap);
	if (!b)
		return -PARLEY_ENOMEM;
	for (;;) {
		if (p->s >= p->end) {
			free(b);
			return jp_fail(p, "unterminated string");
		}
		unsigned char c = (unsigned char)*p->s++;
		uint32_t cp;
		if (c == '"')
			break;
		if (c < 0x20) {
			free(b);
			return jp_fail(p, "control character in string");
		}
		if (n + 5 >= cap) { /* room for one UTF-8 sequence and the NUL */
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				return -PARLEY_ENOMEM;
			}
			b = nb;
			cap *= 2;
		}
		if (c != '\\') {
			b[n++] = (char)c;
			continue;
		}
		if (p->s >= p->end) {
			free(b);
			return jp_fail(p, "unterminated escape");
		}
		char e = *p->s++;
		switch (e) {
		case '"': cp = '"'; break;
		case '\\': cp = '\\'; break;
		case '/': cp = '/'; break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			cp = 0;
			for (int i = 0; i < 4; i++) {
				int h = p->s < p->end ? hexval(*p->s) : -1;
				if (h < 0) {
					free(b);
					return jp_fail(p, "bad \\u escape");
				}
				cp = cp * 16 + (uint32_t)h;
				p->s++;
			}
			break;
		default:
			free(b);
			return jp_fail(p, "bad escape");
		}
		if (cp < 0x80) {
			b[n++] = (char)cp;
		} else if (cp < 0x800) {
			b[n++] = (char)(0xc0 | (cp >> 6));
			b[n++] = (char)(0x80 | (cp & 0x3f));
		} else { /* surrogates are passed through as 3-byte sequences */
			b[n++] = (char)(0xe0 | (cp >> 12));
			b[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			b[n++] = (char)(0x80 | (cp & 0x3f));
		}
	}
	b[n] = 0;
	*out = b;
	return 0;
}

static int jp_value(struct jp *p, struct bjv *v, unsigned depth);

static int jp_push(struct bjv *v, size_t *cap, struct bjv **slot)
{
	if (v->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 4;
		struct bjv *k = realloc(v->kids, nc * sizeof *k);
		if (!k)
			return -PARLEY_ENOMEM;
		v->kids = k;
		*cap = nc;
	}
	*slot = &v->kids[v->n];
	memset(*slot, 0, sizeof **slot);
	v->n++;
	return 0;
}

static int jp_container(struct jp *p, struct bjv *v, unsigned depth, bool obj)
{
	if (depth >= BJ_MAX_DEPTH)
		return jp_fail(p, "nested too deeply");
	v->type = obj ? BJV_OBJ : BJV_ARR;
	p->s++;
	size_t cap = 0;
	jp_ws(p);
	if (p->s < p->end && *p->s == (obj ? '}' : ']')) {
		p->s++;
		return 0;
	}
	for (;;) {
		struct bjv *k;
		int rc = jp_push(v, &cap, &k);
		if (rc)
			return rc;
		jp_ws(p);
		if (obj) {
			if ((rc = jp_string(p, &k->key)) != 0)
				return rc;
			jp_ws(p);
			if (p->s >= p->end || *p->s != ':')
				return jp_fail(p, "expected ':'");
			p->s++;
		}
		if ((rc = jp_value(p, k, depth + 1)) != 0)
			return rc;
		jp_ws(p);
		if (p->s < p->end && *p->s == ',') {
			p->s++;
			continue;
		}
		if (p->s < p->end && *p->s == (obj ? '}' : ']')) {
			p->s++;
			return 0;
		}
		return jp_fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static int jp_value(struct jp *p, struct bjv *v, unsigned depth)
{
	jp_ws(p);
	if (p->s >= p->end)
		return jp_fail(p, "unexpected end of input");
	char c = *p->s;
	if (c == '{' || c == '[')
		return jp_container(p, v, depth, c == '{');
	if (c == '"') {
		v->type = BJV_STR;
		return jp_string(p, &v->str);
	}
	static const struct { const char *w; enum bjv_type t; double n; } lit[] = {
		{"true", BJV_BOOL, 1}, {"false", BJV_BOOL, 0}, {"null", BJV_NULL, 0},
	};
	for (size_t i = 0; i < 3; i++) {
		size_t l = strlen(lit[i].w);
		if ((size_t)(p->end - p->s) >= l && !memcmp(p->s, lit[i].w, l)) {
			v->type = lit[i].t;
			v->num = lit[i].n;
			p->s += l;
			return 0;
		}
	}
	if (c == '-' || (c >= '0' && c <= '9')) {
		/* strtod on a bounded copy (the input is not NUL-terminated) */
		char buf[64];
		size_t l = 0;
		while (p->s + l < p->end && l < sizeof buf - 1 &&
		       strchr("+-0123456789.eE", p->s[l]))
			l++;
		memcpy(buf, p->s, l);
		buf[l] = 0;
		char *endp;
		errno = 0;
		v->num = strtod(buf, &endp);
		if (endp == buf || (size_t)(endp - buf) != l || errno)
			return jp_fail(p, "bad number");
		v->type = BJV_NUM;
		p->s += l;
		return 0;
	}
	return jp_fail(p, "unexpected character");
}

static void bjv_clear(struct bjv *v)
{
	free(v->key);
	free(v->str);
	for (size_t i = 0; i < v->n; i++)
		bjv_clear(&v->kids[i]);
	free(v->kids);
}

void bjv_free(struct bjv *v)
{
	if (!v)
		return;
	bjv_clear(v);
	free(v);
}

int bjv_parse(const char *text, size_t len, struct bjv **out, char *err, size_t errcap)
{
	*out = NULL;
	if (errcap)
		err[0] = 0;
	struct jp p = {text, text + len, text, err, errcap, 0};
	struct bjv *v = calloc(1, sizeof *v);
	if (!v)
		return -PARLEY_ENOMEM;
	if (len > BJ_MAX_INPUT) {
		free(v);
		return jp_fail(&p, "input too large");
	}
	int rc = jp_value(&p, v, 0);
	if (!rc) {
		jp_ws(&p);
		if (p.s != p.end)
			rc = jp_fail(&p, "trailing characters after the value");
	}
	if (rc) {
		if (rc == -PARLEY_ENOMEM && errcap)
			snprintf(err, errcap, "out of memory");
		bjv_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

int bjv_load(const char *path, struct bjv **out, char *err, size_t errcap)
{
	*out = NULL;
	FILE *f = fopen(path, "rb");
	if (!f) {
		int e = errno;
		snprintf(err, errcap, "%s: %s", path, strerror(e));
		return -e;
	}
	size_t cap = 1 << 16, n = 0;
	char *b = malloc(cap);
	size_t got;
	while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			if (cap >= BJ_MAX_INPUT + 1u)
				break;
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				b = NULL;
			}
			b = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (!b) {
		snprintf(err, errcap, "%s: out of memory", path);
		return -PARLEY_ENOMEM;
	}
	char e2[200];
	int rc = bjv_parse(b, n, out, e2, sizeof e2);
	free(b);
	if (rc)
		snprintf(err, errcap, "%s: %s", path, e2);
	return rc;
}

const struct bjv *bjv_get(const struct bjv *v, const char *key)
{
	if (!v || v->type != BJV_OBJ)
		return NULL;
	for (size_t i = 0; i < v->n; i++)
		if (!strcmp(v->kids[i].key, key))
			return &v->kids[i];
	return NULL;
}

const struct bjv *bjv_path(const struct bjv *v, const char *path)
{
	char part[128];
	while (v && *path) {
		size_t l = strcspn(path, ".");
		if (l >= sizeof part)
			return NULL;
		memcpy(part, path, l);
		part[l] = 0;
		v = bjv_get(v, part);
		path += l;
		if (*path == '.')
			path++;
	}
	return v;
}

double bjv_num_at(const struct bjv *v, const char *path, double dflt)
{
	const struct bjv *x = bjv_path(v, path);
	return x && x->type == BJV_NUM ? x->num : dflt;
}

const char *bjv_str_at(const struct bjv *v, const char *path)
{
	const struct bjv *x = bjv_path(v, path);
	return x && x->type == BJV_STR ? x->str : NULL;
}
