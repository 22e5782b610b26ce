/*
 * fuzz_jwt.c — libFuzzer target for parleyd's token verifier (server/jwt.c).
 *
 * A token is the first untrusted thing a client sends. The first input
 * byte picks one of three uses of the rest:
 *   (0) a whole compact token, verified as it is (header/payload/
 *       signature splitting, base64url, HMAC path);
 *   (1) a header JSON and a claims JSON (split at the first NUL) that this
 *       target signs with the verifier's secret, so the JSON reader and
 *       every claim rule are reached behind a valid signature;
 *   (2) structured claims: the input chooses, member by member, a sub
 *       (arbitrary bytes, each encoded raw or as a \u escape / surrogate
 *       pair / short escape), exp, nbf, iat, iss, aud and an unknown
 *       member, each of a right or wrong type or value, their order,
 *       a duplicated member and header variants (crit, a typ of the
 *       wrong type, another alg). This target knows the rules
 *       independently (jwt.h) and checks the verdict.
 * Properties (abort on violation):
 *   - verification returns 0 or -PARLEY_EAUTH; a "why" is NUL-terminated;
 *   - an accepted sub is 1..255 bytes, sub_len == strlen(sub) (no NUL),
 *     valid UTF-8;
 *   - (2) accepted exactly when the rules say so, and then sub equals the
 *     bytes that were JSON-encoded, byte for byte;
 *   - an accepted token is not expired at the verification instant, and
 *     is expired at its deadline (exp + leeway).
 * ASan/UBSan catch over-reads.
 */
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "parley_common.h"

static const char SECRET[] = "fuzzing-secret-0123456789";
#define NOW_S 1700000000ull
#define NOW_MS (NOW_S * 1000)
#define LEEWAY 30
static struct jwt_verifier *g_v, *g_v_aud;

/* Independent UTF-8 check (no overlongs, surrogates, > U+10FFFF); returns
 * the sequence length at p or 0; *cp = the code point. */
static size_t u8_dec(const uint8_t *p, size_t n, uint32_t *cp)
{
	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	size_t l = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC0 ? 2 : 0;
	if (!l || l > n || p[0] > 0xF4)
		return 0;
	uint32_t c = p[0] & (0x7F >> l);
	for (size_t i = 1; i < l; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3F);
	}
	static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
	if (c < min[l] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return l;
}

static bool utf8_ok(const uint8_t *p, size_t n)
{
	uint32_t cp;
	for (size_t i = 0; i < n;) {
		size_t l = u8_dec(p + i, n - i, &cp);
		if (!l)
			return false;
		i += l;
	}
	return true;
}

static void check_accepted(const struct jwt_verifier *v, const struct jwt_claims *c)
{
	if (c->sub_len == 0 || c->sub_len > JWT_MAX_SUB ||
	    strlen(c->sub) != c->sub_len || !utf8_ok((const uint8_t *)c->sub, c->sub_len))
		abort();
	if (jwt_expired_at(v, c->exp_ms, NOW_MS))
		abort();
	if (c->exp_ms && (c->deadline_ms != c->exp_ms + LEEWAY * 1000ull ||
			  !jwt_expired_at(v, c->exp_ms, c->deadline_ms) ||
			  jwt_expired_at(v, c->exp_ms, c->deadline_ms - 1)))
		abort();
}

static int check(const struct jwt_verifier *v, const char *tok, size_t n,
		 struct jwt_claims *c)
{
	char why[64];
	memset(why, 'x', sizeof why);
	int rc = jwt_verify(v, tok, n, NOW_MS, c, why, sizeof why);
	if (rc != 0 && rc != -PARLEY_EAUTH)
		abort();
	if (!memchr(why, 0, sizeof why) && rc != 0)
		abort();
	if (rc == 0)
		check_accepted(v, c);
	return rc;
}

/* header.claims.signature with the fuzzing secret (malloc'd, *len). */
static char *sign(const void *hdr, size_t hl, const void *cl, size_t cll,
		  size_t *len)
{
	char *tok = malloc(4 * (hl + cll) / 3 + 128);
	if (!tok)
		return NULL;
	size_t o = parley_b64url_encode(hdr, hl, tok);
	tok[o++] = '.';
	o += parley_b64url_encode(cl, cll, tok + o);
	unsigned char mac[32];
	unsigned ml = 0;
	HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const uint8_t *)tok, o,
	     mac, &ml);
	tok[o++] = '.';
	o += parley_b64url_encode(mac, ml, tok + o);
	*len = o;
	return tok;
}

/* ---- (2) structured claims ---------------------------------------------------- */

struct rd {
	const uint8_t *p;
	size_t n;
};

static unsigned take(struct rd *r, unsigned below)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++ % below;
}

struct sb {
	char b[8192];
	size_t n;
	bool full;
};

static void sb_put(struct sb *s, const void *p, size_t n)
{
	if (n > sizeof s->b - s->n) {
		s->full = true;
		return;
	}
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static void sb_str(struct sb *s, const char *t)
{
	sb_put(s, t, strlen(t));
}

/* JSON-encodes bytes p[0..n) as a string, each character in a form the
 * input chooses; bytes that are not valid UTF-8 go raw (JSON cannot escape
 * them), NUL as \u0000. */
static void enc_string(struct sb *s, struct rd *r, const uint8_t *p, size_t n)
{
	sb_str(s, "\"");
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = u8_dec(p + i, n - i, &cp);
		char e[16];
		unsigned how = take(r, 4);
		if (!l) { /* invalid UTF-8: raw */
			sb_put(s, p + i, 1);
			i++;
			continue;
		}
		if (cp == '"' || cp == '\\' || cp < 0x20 || how == 1) {
			if (cp == '\n' && how == 2) {
				sb_str(s, "\\n");
			} else if (cp == '\\' && how != 1) {
				sb_str(s, "\\\\");
			} else if (cp < 0x10000) {
				snprintf(e, sizeof e, how == 3 ? "\\u%04X" : "\\u%04x", cp);
				sb_str(s, e);
			} else {
				uint32_t v = cp - 0x10000;
				snprintf(e, sizeof e, "\\u%04x\\u%04x", 0xD800 + (v >> 10),
					 0xDC00 + (v & 0x3FF));
				sb_str(s, e);
			}
		} else if (cp == '/' && how == 2) {
			sb_str(s, "\\/");
		} else {
			sb_put(s, p + i, l);
		}
		i += l;
	}
	sb_str(s, "\"");
}

enum { M_SUB, M_EXP, M_NBF, M_IAT, M_ISS, M_AUD, M_X, M_N };

/* One member's JSON value into v; returns whether it is acceptable. */
static bool member(int k, struct rd *r, struct sb *v, const uint8_t *sub,
		   size_t subl)
{
	char t[128];
	unsigned c = take(r, 8);
	switch (k) {
	case M_SUB:
		if (c == 7) {
			sb_str(v, "[\"a\"]");
			return false;
		}
		enc_string(v, r, sub, subl);
		return subl >= 1 && subl <= JWT_MAX_SUB && !memchr(sub, 0, subl) &&
		       utf8_ok(sub, subl);
	case M_EXP: {
		static const char *ev[8] = {"%llu", "%llu.5", "\"%llu\"", "true",
					    "null", "[%llu]", "-5", "1e13"};
		static const long long d[8] = {100, -10, 100, 0, 0, 100, 0, 0};
		static const bool okv[8] = {1, 1, 0, 0, 0, 0, 0, 0};
		unsigned x = take(r, 4);
		long long off = x == 0 ? d[c] : x == 1 ? -(LEEWAY + 1) : x == 2 ? -LEEWAY + 1 : LEEWAY;
		/* x: 0 table offset, 1 expired (beyond the leeway), 2 inside
		 * the leeway, 3 ahead */
		snprintf(t, sizeof t, ev[c], (unsigned long long)((long long)NOW_S + off));
		sb_str(v, t);
		return okv[c] && x != 1;
	}
	case M_NBF: {
		unsigned x = take(r, 3);
		long long off = x == 0 ? -100 : x == 1 ? LEEWAY - 1 : LEEWAY + 1;
		if (c >= 6) {
			sb_str(v, c == 6 ? "\"0\"" : "{}");
			return false;
		}
		snprintf(t, sizeof t, "%llu", (unsigned long long)((long long)NOW_S + off));
		sb_str(v, t);
		return x != 2;
	}
	case M_IAT:
		sb_str(v, c == 7 ? "\"now\"" : "1699999999");
		return c != 7;
	case M_ISS: {
		static const char *iv[8] = {"\"parley\"", "\"parley\"", "\"par\\u006cey\"",
					    "\"parley\\u0000x\"", "\"parlex\"", "5",
					    "[\"parley\"]", "\"parley \""};
		sb_str(v, iv[c]);
		return c <= 2;
	}
	case M_AUD: {
		static const char *av[8] = {"\"chat\"", "[\"x\",\"chat\"]", "[\"chat\"]",
					    "[\"x\"]", "[\"chat\",1]", "5",
					    "\"chat\\u0000\"", "[]"};
		sb_str(v, av[c]);
		return c <= 2;
	}
	default: {
		static const char *xv[8] = {"1", "\"s\"", "[1,{\"a\":null}]",
					    "{\"y\":{\"y\":[]}}", "true", "\"\\u0000\"",
					    "\"\\ud800\"", "-0.5e-3"};
		sb_str(v, xv[c]);
		return c != 5 && c != 6;
	}
	}
}

static void structured(struct rd *r)
{
	static const char *names[M_N] = {"sub", "exp", "nbf", "iat", "iss", "aud", "x"};
	uint8_t sub[300];
	size_t subl = take(r, 8) == 0 ? 256 + take(r, 4) : take(r, 24);
	for (size_t i = 0; i < subl; i++)
		sub[i] = i < 255 && r->n ? (uint8_t)take(r, 256) : 'a';
	/* which members, in which order */
	int order[M_N], n = 0;
	for (int k = 0; k < M_N; k++)
		order[n++] = k;
	for (int i = M_N - 1; i > 0; i--) {
		int j = (int)take(r, (unsigned)i + 1), tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
	unsigned present = take(r, 4) == 0 ? take(r, 128) : 0x7F;
	int dup = take(r, 8) == 0 ? (int)take(r, M_N) : -1;
	bool ok = true;
	struct sb s = {.n = 0};
	sb_str(&s, "{");
	bool first = true;
	for (int i = 0; i < M_N; i++) {
		int k = order[i];
		bool here = present & (1u << k);
		if (!here) {
			/* iss, aud and sub are required by g_v_aud */
			if (k == M_SUB || k == M_ISS || k == M_AUD)
				ok = false;
			continue;
		}
		for (int rep = 0; rep < (k == dup ? 2 : 1); rep++) {
			if (!first)
				sb_str(&s, take(r, 4) ? "," : " ,\n ");
			first = false;
			sb_str(&s, "\"");
			sb_str(&s, names[k]);
			sb_str(&s, "\":");
			ok &= member(k, r, &s, sub, subl);
		}
		if (k == dup)
			ok = false;
	}
	sb_str(&s, "}");
	static const char *hdrs[8] = {
		"{\"alg\":\"HS256\"}",
		"{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
		"{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"k\"}",
		"{\"alg\":\"HS256\"}",
		"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
		"{\"alg\":\"HS256\",\"typ\":1}",
		"{\"alg\":\"none\"}",
		"{\"alg\":\"HS256\",\"alg\":\"HS256\"}",
	};
	unsigned h = take(r, 8);
	if (h >= 4)
		ok = false;
	if (s.full)
		return;
	size_t tl;
	char *tok = sign(hdrs[h], strlen(hdrs[h]), s.b, s.n, &tl);
	if (!tok)
		return;
	struct jwt_claims c;
	int rc = check(g_v_aud, tok, tl, &c);
	if ((rc == 0) != ok) {
		fprintf(stderr, "verdict %d, expected %s: header %s claims %.*s\n",
			rc, ok ? "accept" : "reject", hdrs[h], (int)s.n, s.b);
		abort();
	}
	if (rc == 0 && (c.sub_len != subl || memcmp(c.sub, sub, subl))) {
		fprintf(stderr, "sub differs from the encoded bytes: %.*s\n",
			(int)s.n, s.b);
		abort();
	}
	free(tok);
}

/* "\u0000" as an escape: "u0000" after an odd run of backslashes. */
static bool has_nul_escape(const uint8_t *p, size_t n)
{
	for (size_t i = 1; i + 5 <= n; i++) {
		if (memcmp(p + i, "u0000", 5))
			continue;
		size_t b = 0;
		while (b < i && p[i - 1 - b] == '\\')
			b++;
		if (b % 2)
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	if (!g_v) {
		if (jwt_verifier_new(JWT_HS256, SECRET, strlen(SECRET), NULL, NULL,
				     LEEWAY, &g_v) ||
		    jwt_verifier_new(JWT_HS256, SECRET, strlen(SECRET), "parley",
				     "chat", LEEWAY, &g_v_aud))
			abort();
	}
	if (n < 1 || n > JWT_MAX_TOKEN + 16)
		return 0;
	struct jwt_claims c;
	unsigned mode = d[0] % 3;
	const uint8_t *p = d + 1;
	size_t rest = n - 1;
	if (mode == 0) {
		check(g_v, (const char *)p, rest, &c);
		return 0;
	}
	if (mode == 2) {
		struct rd r = {p, rest};
		structured(&r);
		return 0;
	}
	/* (1) header and claims behind a valid signature */
	const uint8_t *nul = memchr(p, 0, rest);
	size_t hl = nul ? (size_t)(nul - p) : 0;
	const uint8_t *hdr = p;
	const uint8_t *cl = nul ? nul + 1 : p;
	size_t cll = nul ? rest - hl - 1 : rest;
	static const char std_hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	if (!nul || (d[0] & 8)) { /* most runs: a valid header, fuzzed claims */
		hdr = (const uint8_t *)std_hdr;
		hl = sizeof std_hdr - 1;
	}
	size_t tl;
	char *tok = sign(hdr, hl, cl, cll, &tl);
	if (!tok)
		return 0;
	int rc = check(d[0] & 16 ? g_v_aud : g_v, tok, tl, &c);
	/* a NUL byte or a \u0000 escape anywhere in the claims is never
	 * accepted */
	if (rc == 0 && (memchr(cl, 0, cll) || has_nul_escape(cl, cll)))
		abort();
	free(tok);
	return 0;
}
