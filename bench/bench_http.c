/*
 * bench_http.c — HTTP/1.x response status line and Prometheus sample
 * lookup (see bench_http.h).
 */
#include "bench_http.h"

#include <errno.h>
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
