/*
 * common.c — error table, logfmt logger, checksums, clocks and address
 * parsing shared by every parley component (see parley_common.h).
 *
 * Thread safety: all functions may be called from any thread. The log level
 * is a relaxed atomic; each log line is emitted with a single write(2).
 */

#include "parley_common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

const char *parley_strerror(int err)
{
	if (err == 0)
		return "ok";
	int e = err < 0 ? -err : err;
	switch (e) {
#define PARLEY_ERR_TEXT(name, val, text)                                       \
	case val:                                                              \
		return text;
		PARLEY_ERRORS(PARLEY_ERR_TEXT)
#undef PARLEY_ERR_TEXT
	default:
		break;
	}
	if (e < 1000)
		return strerror(e);
	return "unknown error";
}

const char *parley_errname(int err)
{
	if (err == 0)
		return "OK";
	int e = err < 0 ? -err : err;
	switch (e) {
#define PARLEY_ERR_NAME(name, val, text)                                       \
	case val:                                                              \
		return #name;
		PARLEY_ERRORS(PARLEY_ERR_NAME)
#undef PARLEY_ERR_NAME
	default:
		break;
	}
	if (e < 1000) {
		const char *n = strerrorname_np(e);
		return n ? n : "ERRNO";
	}
	return "UNKNOWN";
}

void parley_assert_fail(const char *expr, const char *file, int line)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf,
			 "level=fatal comp=assert msg=\"assertion failed\" "
			 "expr=\"%s\" file=%s line=%d\n",
			 expr, file, line);
	if (n > 0)
		(void)!write(2, buf, (size_t)PARLEY_MIN(n, (int)sizeof buf - 1));
	abort();
}

static atomic_int log_level = -1;

static int log_level_from_env(void)
{
	const char *v = getenv("PARLEY_LOG_LEVEL");
	if (!v)
		return PLOG_INFO;
	if (!strcmp(v, "debug"))
		return PLOG_DEBUG;
	if (!strcmp(v, "warn"))
		return PLOG_WARN;
	if (!strcmp(v, "error"))
		return PLOG_ERROR;
	return PLOG_INFO;
}

void parley_log_set_level(enum parley_log_level lvl)
{
	atomic_store_explicit(&log_level, (int)lvl, memory_order_relaxed);
}

enum parley_log_level parley_log_get_level(void)
{
	int l = atomic_load_explicit(&log_level, memory_order_relaxed);
	if (l < 0) {
		l = log_level_from_env();
		atomic_store_explicit(&log_level, l, memory_order_relaxed);
	}
	return (enum parley_log_level)l;
}

void parley_log(enum parley_log_level lvl, const char *comp, const char *msg,
		const char *kvfmt, ...)
{
	if (lvl < parley_log_get_level())
		return;
	static const char *names[] = {"debug", "info", "warn", "error"};
	char line[2048];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof line,
			 "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s "
			 "comp=%s msg=\"%s\"",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
			 names[lvl & 3], comp, msg);
	if (n < 0)
		return;
	if ((size_t)n < sizeof line - 2 && kvfmt && kvfmt[0]) {
		line[n++] = ' ';
		va_list ap;
		va_start(ap, kvfmt);
		int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, kvfmt, ap);
		va_end(ap);
		if (m > 0)
			n += m;
	}
	if ((size_t)n > sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	(void)!write(2, line, (size_t)n);
}

uint64_t parley_xxh3(const void *p, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(p, len, seed);
}

uint64_t parley_hash_key(const void *key, size_t len)
{
	return XXH3_64bits(key, len);
}

uint64_t parley_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t parley_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- base64url ------------------------------------------------------------- */

static const char b64url_tab[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t parley_b64url_encode(const void *inp, size_t n, char *out)
{
	const uint8_t *in = inp;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = b64url_tab[(v >> 18) & 63];
		out[o++] = b64url_tab[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = b64url_tab[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = b64url_tab[v & 63];
	}
	out[o] = '\0';
	return o;
}

static int b64url_val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int parley_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	if (n % 4 == 1)
		return -1;
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int d = b64url_val((unsigned char)in[i]);
		if (d < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	if (bits && (acc & ((1u << bits) - 1)))
		return -1;
	return (int)o;
}

int parley_hostport_split(char *s, char **host, uint16_t *port)
{
	char *h = s, *colon;
	if (*s == '[') {
		h = s + 1;
		char *rb = strchr(h, ']');
		if (!rb || rb[1] != ':')
			return -PARLEY_EINVAL;
		*rb = '\0';
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -PARLEY_EINVAL;
	}
	*colon = '\0';
	char *end;
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (!*h || *end || end == colon + 1 || !p || p > 65535)
		return -PARLEY_EINVAL;
	*host = h;
	*port = (uint16_t)p;
	return 0;
}
