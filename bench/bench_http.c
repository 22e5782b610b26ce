/*
 * bench_http.c — HTTP/1.x response status line, Prometheus sample lookup
 * and stage histograms (see bench_http.h). Pure: no I/O, no allocation.
 */
#include "bench_http.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bench_http_status(const char *buf, size_t len)
{
	const char *eol = memchr(buf, '\n', len);
	if (!eol) {
		/* a prefix that is still a possible status line: wait for more */
		static const char pre[] = "HTTP/1.";
		size_t k = len < sizeof pre - 1 ? len : sizeof pre - 1;
		return memcmp(buf, pre, k) ? -EPROTO : -EAGAIN;
	}
	size_t n = (size_t)(eol - buf);
	/* "HTTP/1.x NNN" at least, then end of line or a space */
	if (n < 12 || memcmp(buf, "HTTP/1.", 7) || (buf[7] != '0' && buf[7] != '1') ||
	    buf[8] != ' ')
		return -EPROTO;
	int code = 0;
	for (int i = 9; i < 12; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return -EPROTO;
		code = code * 10 + (buf[i] - '0');
	}
	if (n > 12 && buf[12] != ' ' && buf[12] != '\r')
		return -EPROTO;
	if (code < 100 || code > 599)
		return -EPROTO;
	return code;
}

int bench_metric_value(const char *text, const char *name, double *out)
{
	size_t l = strlen(name);
	if (!l)
		return -EINVAL;
	for (const char *p = text; p && *p;) {
		const char *eol = strchr(p, '\n');
		if (!strncmp(p, name, l) && p[l] == ' ') {
			char *end;
			errno = 0;
			double v = strtod(p + l + 1, &end);
			if (end == p + l + 1 || errno ||
			    (*end && *end != '\n' && *end != '\r' && *end != ' '))
				return -EPROTO;
			*out = v;
			return 0;
		}
		p = eol ? eol + 1 : NULL;
	}
	return -ENOENT;
}

/* ---- stage histograms -------------------------------------------------------------- */

static struct bench_stage *stage_get(struct bench_stages *o, const char *fam,
				     size_t flen, const char *name, size_t nlen)
{
	for (unsigned i = 0; i < o->n; i++)
		if (strlen(o->s[i].family) == flen && !memcmp(o->s[i].family, fam, flen) &&
		    strlen(o->s[i].name) == nlen && !memcmp(o->s[i].name, name, nlen))
			return &o->s[i];
	if (o->n == BENCH_STAGE_MAX || flen >= sizeof o->s[0].family ||
	    nlen >= sizeof o->s[0].name)
		return NULL;
	struct bench_stage *s = &o->s[o->n++];
	memset(s, 0, sizeof *s);
	memcpy(s->family, fam, flen);
	memcpy(s->name, name, nlen);
	return s;
}

/* The value of label `key` ("stage=" or "le=") inside {...}: start and
 * length, or NULL. */
static const char *label(const char *lb, const char *end, const char *key,
			 size_t *len)
{
	size_t kl = strlen(key);
	for (const char *p = lb; p + kl + 1 < end; p++) {
		if ((p == lb || p[-1] == ',' || p[-1] == '{') && !memcmp(p, key, kl) &&
		    p[kl] == '"') {
			const char *v = p + kl + 1, *q = memchr(v, '"', (size_t)(end - v));
			if (!q)
				return NULL;
			*len = (size_t)(q - v);
			return v;
		}
	}
	return NULL;
}

int bench_stages_parse(const char *text, struct bench_stages *out)
{
	static const char pre[] = "parley_", mid[] = "_stage_seconds_";
	int rc = 0;
	out->n = 0;
	for (const char *p = text; p && *p;) {
		const char *eol = strchr(p, '\n');
		const char *end = eol ? eol : p + strlen(p);
		const char *m;
		if (strncmp(p, pre, sizeof pre - 1) ||
		    !(m = strstr(p, mid)) || m >= end) {
			p = eol ? eol + 1 : NULL;
			continue;
		}
		const char *fam = p + sizeof pre - 1, *kind = m + sizeof mid - 1;
		size_t flen = (size_t)(m - fam);
		const char *lb = strchr(kind, '{'), *rb = lb ? strchr(lb, '}') : NULL;
		if (!lb || !rb || rb >= end) {
			rc = -EPROTO;
			break;
		}
		size_t klen = (size_t)(lb - kind), nlen = 0, llen = 0;
		const char *name = label(lb, rb, "stage=", &nlen);
		char *vend;
		double v = strtod(rb + 1, &vend);
		if (!name || vend == rb + 1 || (vend != end && *vend != '\r' && *vend != ' ')) {
			rc = -EPROTO;
			break;
		}
		struct bench_stage *s = stage_get(out, fam, flen, name, nlen);
		if (!s) {
			rc = -E2BIG;
		} else if (klen == 6 && !memcmp(kind, "bucket", 6)) {
			const char *le = label(lb, rb, "le=", &llen);
			char b[32];
			if (!le || llen == 0 || llen >= sizeof b) {
				rc = -EPROTO;
				break;
			}
			memcpy(b, le, llen);
			b[llen] = 0;
			double bound = strcmp(b, "+Inf") ? strtod(b, NULL) : INFINITY;
			if (s->nb == BENCH_STAGE_BUCKETS) {
				rc = -E2BIG;
			} else {
				s->le[s->nb] = bound;
				s->cum[s->nb++] = v;
			}
		} else if (klen == 3 && !memcmp(kind, "sum", 3)) {
			s->sum = v;
		} else if (klen == 5 && !memcmp(kind, "count", 5)) {
			s->count = v;
		}
		p = eol ? eol + 1 : NULL;
	}
	return rc;
}

void bench_stages_delta(const struct bench_stages *before,
			const struct bench_stages *after, struct bench_stages *out)
{
	*out = *after;
	for (unsigned i = 0; i < out->n; i++) {
		struct bench_stage *s = &out->s[i];
		for (unsigned j = 0; j < before->n; j++) {
			const struct bench_stage *b = &before->s[j];
			if (strcmp(b->family, s->family) || strcmp(b->name, s->name))
				continue;
			s->sum -= b->sum;
			s->count -= b->count;
			for (unsigned k = 0; k < s->nb && k < b->nb; k++)
				s->cum[k] -= b->cum[k];
			break;
		}
	}
}

double bench_stage_quantile(const struct bench_stage *s, double q)
{
	if (s->count <= 0 || s->nb == 0)
		return NAN;
	double want = q * s->count;
	for (unsigned k = 0; k < s->nb; k++)
		if (s->cum[k] >= want)
			return s->le[k];
	return INFINITY;
}
