/*
 * bench_natsproto.c — pure parser for the NATS server->client lines
 * parley-bench reads (see bench_natsproto.h).
 */
#include "bench_natsproto.h"

#include <string.h>
#include <strings.h>

/* Index of "\r\n" in buf[0..len), or -1. */
static long find_crlf(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n')
			return (long)i;
	return -1;
}

/* Splits line[0..n) on spaces/tabs into at most `max` tokens. */
static unsigned tokens(const char *line, size_t n, const char **tok, size_t *tl,
		       unsigned max)
{
	unsigned k = 0;
	size_t i = 0;
	while (i < n) {
		while (i < n && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == n)
			break;
		size_t s = i;
		while (i < n && line[i] != ' ' && line[i] != '\t')
			i++;
		if (k == max)
			return max + 1; /* too many */
		tok[k] = line + s;
		tl[k] = i - s;
		k++;
	}
	return k;
}

/* Decimal digits only, no sign, no overflow past `max`. */
static int parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	if (n == 0 || n > 20)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static int verb_is(const char *line, size_t n, const char *verb)
{
	size_t vl = strlen(verb);
	if (n < vl || strncasecmp(line, verb, vl) != 0)
		return 0;
	return n == vl || line[vl] == ' ' || line[vl] == '\t';
}

static void rest_of_line(const char *line, size_t n, size_t verb_len,
			 struct nats_frame *f)
{
	size_t i = verb_len;
	while (i < n && (line[i] == ' ' || line[i] == '\t'))
		i++;
	f->text = line + i;
	f->text_len = n - i;
}

long nats_parse(const uint8_t *buf, size_t len, struct nats_frame *f)
{
	memset(f, 0, sizeof *f);
	long eol = find_crlf(buf, len < NATS_MAX_CONTROL + 2 ? len : NATS_MAX_CONTROL + 2);
	if (eol < 0)
		return len >= NATS_MAX_CONTROL + 2 ? -1 : 0;
	const char *line = (const char *)buf;
	size_t n = (size_t)eol;
	size_t used = n + 2;
	if (verb_is(line, n, "PING")) {
		if (n != 4)
			return -1;
		f->op = NATS_OP_PING;
		return (long)used;
	}
	if (verb_is(line, n, "PONG")) {
		if (n != 4)
			return -1;
		f->op = NATS_OP_PONG;
		return (long)used;
	}
	if (verb_is(line, n, "+OK")) {
		if (n != 3)
			return -1;
		f->op = NATS_OP_OK;
		return (long)used;
	}
	if (verb_is(line, n, "-ERR")) {
		f->op = NATS_OP_ERR;
		rest_of_line(line, n, 4, f);
		return (long)used;
	}
	if (verb_is(line, n, "INFO")) {
		f->op = NATS_OP_INFO;
		rest_of_line(line, n, 4, f);
		return (long)used;
	}
	if (verb_is(line, n, "MSG")) {
		const char *tok[5];
		size_t tl[5];
		unsigned k = tokens(line + 3, n - 3, tok, tl, 4);
		if (k != 3 && k != 4)
			return -1;
		uint64_t sid, plen;
		if (parse_u64(tok[1], tl[1], UINT64_MAX, &sid) != 0 ||
		    parse_u64(tok[k - 1], tl[k - 1], NATS_MAX_PAYLOAD, &plen) != 0)
			return -1;
		if (len - used < plen + 2)
			return 0;
		if (buf[used + plen] != '\r' || buf[used + plen + 1] != '\n')
			return -1;
		f->op = NATS_OP_MSG;
		f->subject = tok[0];
		f->subject_len = tl[0];
		f->sid = sid;
		f->payload = buf + used;
		f->payload_len = (size_t)plen;
		return (long)(used + plen + 2);
	}
	return -1;
}
