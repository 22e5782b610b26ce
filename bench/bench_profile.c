/*
 * bench_profile.c — parser of parley-bench workload profiles (format in
 * bench_profile.h). Table-driven: each key names its field, its kind
 * (number or distribution) and its allowed range.
 */
#include "bench_profile.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

void bench_profile_defaults(struct bench_profile *p)
{
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "unnamed");
	p->users = 1000;
	p->devices_per_user = 1;
	p->online_fraction = 0.5;
	p->conversations_per_user = 5;
	p->group_share = 0;
	p->group_size = (struct bp_dist){1, {5}, {1}};
	p->messages_per_user_day = 20;
	p->peak_factor = 3;
	p->body_bytes = (struct bp_dist){1, {60}, {1}};
	p->read_receipts_per_message = 0;
	p->delivery_receipts_per_message = 0;
	p->typing_per_message = 0;
	p->history_reads_per_user_day = 2;
	p->reconnects_per_device_day = 4;
	p->replication_factor = 3;
	p->retention_days = 365;
	p->target_utilisation = 0.6;
	p->target_p99_ms = 50;
}

enum kind { K_NUM, K_DIST, K_NAME };

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	double lo, hi; /* numbers, and each value of a distribution */
};

#define F(f) offsetof(struct bench_profile, f)
static const struct key keys[] = {
	{"name", K_NAME, F(name), 0, 0},
	{"users", K_NUM, F(users), 1, 1e11},
	{"devices_per_user", K_NUM, F(devices_per_user), 1, 100},
	{"online_fraction", K_NUM, F(online_fraction), 1e-6, 1},
	{"conversations_per_user", K_NUM, F(conversations_per_user), 1, 1e6},
	{"group_share", K_NUM, F(group_share), 0, 1},
	{"group_size", K_DIST, F(group_size), 3, 1e6},
	{"messages_per_user_day", K_NUM, F(messages_per_user_day), 0, 1e6},
	{"peak_factor", K_NUM, F(peak_factor), 1, 1000},
	{"body_bytes", K_DIST, F(body_bytes), 1, 65536},
	{"read_receipts_per_message", K_NUM, F(read_receipts_per_message), 0, 1000},
	{"delivery_receipts_per_message", K_NUM, F(delivery_receipts_per_message), 0, 1000},
	{"typing_per_message", K_NUM, F(typing_per_message), 0, 1000},
	{"history_reads_per_user_day", K_NUM, F(history_reads_per_user_day), 0, 1e6},
	{"reconnects_per_device_day", K_NUM, F(reconnects_per_device_day), 0, 1e6},
	{"replication_factor", K_NUM, F(replication_factor), 1, 9},
	{"retention_days", K_NUM, F(retention_days), 0, 1e5},
	{"target_utilisation", K_NUM, F(target_utilisation), 0.01, 1},
	{"target_p99_ms", K_NUM, F(target_p99_ms), 0.001, 1e6},
};
#undef F
#define NKEYS (sizeof keys / sizeof keys[0])

static int fail(char *err, size_t cap, const char *file, unsigned line, const char *fmt, ...)
{
	if (cap) {
		int n = snprintf(err, cap, "%s:%u: ", file, line);
		if (n >= 0 && (size_t)n < cap) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(err + n, cap - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -PARLEY_EINVAL;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t l = strlen(s);
	while (l && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r'))
		s[--l] = 0;
	return s;
}

/* A whole-token number; false on junk, empty, inf/nan. */
static bool num(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v))
		return false;
	*out = v;
	return true;
}

static int parse_dist(char *v, const struct key *k, struct bp_dist *d, char *err, size_t cap,
		      const char *file, unsigned line)
{
	memset(d, 0, sizeof *d);
	double sum = 0;
	for (char *save = NULL, *tok = strtok_r(v, " ,\t", &save); tok;
	     tok = strtok_r(NULL, " ,\t", &save)) {
		char *colon = strchr(tok, ':');
		if (!colon)
			return fail(err, cap, file, line, "%s: \"%s\" is not value:weight", k->name, tok);
		*colon = 0;
		double x, w;
		if (!num(tok, &x) || !num(colon + 1, &w))
			return fail(err, cap, file, line, "%s: \"%s:%s\" is not a number pair",
				    k->name, tok, colon + 1);
		if (x < k->lo || x > k->hi)
			return fail(err, cap, file, line, "%s: value %g outside [%g, %g]", k->name, x,
				    k->lo, k->hi);
		if (!(w > 0))
			return fail(err, cap, file, line, "%s: weight %g must be > 0", k->name, w);
		if (d->n == BP_MAX_DIST)
			return fail(err, cap, file, line, "%s: more than %d pairs", k->name,
				    BP_MAX_DIST);
		d->value[d->n] = x;
		d->weight[d->n] = w;
		d->n++;
		sum += w;
	}
	if (!d->n)
		return fail(err, cap, file, line, "%s: empty distribution", k->name);
	for (unsigned i = 0; i < d->n; i++)
		d->weight[i] /= sum;
	return 0;
}

int bench_profile_parse(const char *text, const char *file, struct bench_profile *p,
			char *err, size_t errcap)
{
	bench_profile_defaults(p);
	if (errcap)
		err[0] = 0;
	bool seen[NKEYS] = {0};
	unsigned line = 0;
	const char *s = text;
	while (*s) {
		line++;
		size_t l = strcspn(s, "\n");
		if (l >= BP_MAX_LINE)
			return fail(err, errcap, file, line, "line longer than %d bytes", BP_MAX_LINE - 1);
		char buf[BP_MAX_LINE];
		memcpy(buf, s, l);
		buf[l] = 0;
		s += l + (s[l] == '\n');
		char *hash = strchr(buf, '#');
		if (hash)
			*hash = 0;
		char *t = trim(buf);
		if (!*t)
			continue;
		char *eq = strchr(t, '=');
		if (!eq)
			return fail(err, errcap, file, line, "expected \"key = value\", got \"%s\"", t);
		*eq = 0;
		char *key = trim(t), *val = trim(eq + 1);
		size_t i;
		for (i = 0; i < NKEYS; i++)
			if (!strcmp(keys[i].name, key))
				break;
		if (i == NKEYS)
			return fail(err, errcap, file, line, "unknown key \"%s\"", key);
		if (seen[i])
			return fail(err, errcap, file, line, "\"%s\" given twice", key);
		seen[i] = true;
		if (!*val)
			return fail(err, errcap, file, line, "\"%s\" has no value", key);
		const struct key *k = &keys[i];
		void *field = (char *)p + k->off;
		if (k->kind == K_NAME) {
			if (strlen(val) >= BP_NAME_LEN)
				return fail(err, errcap, file, line, "name longer than %d bytes",
					    BP_NAME_LEN - 1);
			snprintf(field, BP_NAME_LEN, "%s", val);
		} else if (k->kind == K_NUM) {
			double v;
			if (!num(val, &v))
				return fail(err, errcap, file, line, "%s: \"%s\" is not a number", key, val);
			if (v < k->lo || v > k->hi)
				return fail(err, errcap, file, line, "%s: %g outside [%g, %g]", key, v, k->lo,
					    k->hi);
			*(double *)field = v;
		} else {
			int rc = parse_dist(val, k, field, err, errcap, file, line);
			if (rc)
				return rc;
		}
	}
	return 0;
}

int bench_profile_load(const char *path, struct bench_profile *p, char *err, size_t errcap)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		int e = errno;
		snprintf(err, errcap, "%s: %s", path, strerror(e));
		return -e;
	}
	static char text[1 << 20];
	size_t n = fread(text, 1, sizeof text - 1, f);
	bool more = fgetc(f) != EOF;
	fclose(f);
	if (more) {
		snprintf(err, errcap, "%s: larger than %zu bytes", path, sizeof text - 1);
		return -PARLEY_ETOOBIG;
	}
	text[n] = 0;
	if (strlen(text) != n) {
		snprintf(err, errcap, "%s: contains a NUL byte", path);
		return -PARLEY_EINVAL;
	}
	return bench_profile_parse(text, path, p, err, errcap);
}

double bp_dist_mean(const struct bp_dist *d)
{
	double m = 0;
	for (unsigned i = 0; i < d->n; i++)
		m += d->value[i] * d->weight[i];
	return m;
}

double bp_dist_pick(const struct bp_dist *d, double u)
{
	double c = 0;
	for (unsigned i = 0; i < d->n; i++) {
		c += d->weight[i];
		if (u < c)
			return d->value[i];
	}
	return d->n ? d->value[d->n - 1] : 0;
}
