/*
 * jwt.c — JWT verification (HS256 / RS256 / ES256 with OpenSSL) and
 * development minting. See jwt.h for the rules.
 *
 * Structure: base64url decode (bounded) -> the header through the one
 * strict JSON reader (jr_doc: whole-object validation, decoded member
 * names, no duplicates) -> header types, alg, crit -> signature check ->
 * the claims through the same reader -> claim types -> exp / nbf / iss /
 * aud / sub. Values are decoded on demand with explicit lengths.
 *
 * Threads: reentrant; no globals.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "jwt.h"
#include "parley_common.h"

struct jwt_verifier {
	enum jwt_alg alg;
	EVP_PKEY *pub;
	uint8_t *secret;
	size_t slen;
	char *iss, *aud;
	uint32_t leeway_s;
};

enum jwt_alg jwt_alg_parse(const char *name)
{
	if (!strcmp(name, "HS256"))
		return JWT_HS256;
	if (!strcmp(name, "RS256"))
		return JWT_RS256;
	if (!strcmp(name, "ES256"))
		return JWT_ES256;
	return 0;
}

static const char *alg_name(enum jwt_alg a)
{
	return a == JWT_HS256 ? "HS256" : a == JWT_RS256 ? "RS256" : "ES256";
}

int jwt_verifier_new(enum jwt_alg alg, const void *key, size_t keylen,
		     const char *iss, const char *aud, uint32_t leeway_s,
		     struct jwt_verifier **out)
{
	struct jwt_verifier *v = calloc(1, sizeof *v);
	if (!v)
		return -PARLEY_ENOMEM;
	v->alg = alg;
	v->leeway_s = leeway_s;
	if (alg == JWT_HS256) {
		if (keylen < 16)
			goto bad;
		v->secret = malloc(keylen);
		if (!v->secret)
			goto bad;
		memcpy(v->secret, key, keylen);
		v->slen = keylen;
	} else if (alg == JWT_RS256 || alg == JWT_ES256) {
		BIO *b = BIO_new_mem_buf(key, (int)keylen);
		if (!b)
			goto bad;
		v->pub = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
		if (!v->pub) { /* maybe a certificate */
			BIO_reset(b);
			X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
			if (x) {
				v->pub = X509_get_pubkey(x);
				X509_free(x);
			}
		}
		BIO_free(b);
		if (!v->pub)
			goto bad;
		int id = EVP_PKEY_get_base_id(v->pub);
		if ((alg == JWT_RS256 && id != EVP_PKEY_RSA) ||
		    (alg == JWT_ES256 && id != EVP_PKEY_EC))
			goto bad;
	} else {
		goto bad;
	}
	if ((iss && !(v->iss = strdup(iss))) || (aud && !(v->aud = strdup(aud))))
		goto bad;
	*out = v;
	return 0;
bad:
	jwt_verifier_free(v);
	return -PARLEY_EINVAL;
}

void jwt_verifier_free(struct jwt_verifier *v)
{
	if (!v)
		return;
	EVP_PKEY_free(v->pub);
	if (v->secret)
		OPENSSL_cleanse(v->secret, v->slen);
	free(v->secret);
	free(v->iss);
	free(v->aud);
	free(v);
}

/* ---- the one JSON reader -------------------------------------------------- */

/*
 * Header and claims both go through jr_doc(): it validates the whole
 * object (strict RFC 8259 grammar, bounded depth and size), decodes every
 * top-level member name, refuses duplicates and remembers each member's
 * type and raw span. Typed getters (member_str, member_date, aud_match)
 * then decode one value with an explicit length. A string may never
 * contain U+0000 (raw or escaped), a lone surrogate or invalid UTF-8, so
 * a decoded claim cannot be truncated by C string handling anywhere later.
 */

enum jt { JT_STR = 1, JT_NUM = 2, JT_ARR = 4, JT_OBJ = 8, JT_LIT = 16 };

struct jmember {
	char name[JWT_MAX_SUB + 1];
	size_t nlen;
	enum jt t;
	const uint8_t *v, *vend; /* the raw value */
};

struct jdoc {
	struct jmember m[JWT_MAX_MEMBERS];
	size_t n;
};

struct jr {
	const uint8_t *p, *end;
	const char *err; /* first error, a fixed text */
};

static int jr_fail(struct jr *j, const char *why)
{
	if (!j->err)
		j->err = why;
	return -1;
}

static void jr_ws(struct jr *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
				 *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int jr_hex4(struct jr *j, uint32_t *out)
{
	if (j->end - j->p < 4)
		return -1;
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) {
		uint8_t c = j->p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	j->p += 4;
	*out = v;
	return 0;
}

/* Length of the valid UTF-8 sequence (2..4 bytes) at p, 0 if invalid:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const uint8_t *p, const uint8_t *end)
{
	uint8_t c = p[0];
	size_t n;
	uint32_t cp, min;
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2, cp = c & 0x1Fu, min = 0x80;
	} else if ((c & 0xF0) == 0xE0) {
		n = 3, cp = c & 0x0Fu, min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4, cp = c & 0x07u, min = 0x10000;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3Fu);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

static size_t utf8_put(uint32_t cp, uint8_t *o)
{
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xC0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t)(0xE0 | cp >> 12);
		o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
		o[2] = (uint8_t)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (uint8_t)(0xF0 | cp >> 18);
	o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
	o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
	o[3] = (uint8_t)(0x80 | (cp & 0x3F));
	return 4;
}

/* A string at j->p (which must be '"'), decoded into out[0..cap) when out
 * is set (not NUL-terminated; *olen = its length). */
static int jr_str(struct jr *j, char *out, size_t cap, size_t *olen)
{
	if (j->p >= j->end || *j->p != '"')
		return jr_fail(j, "syntax error");
	j->p++;
	size_t n = 0;
	for (;;) {
		if (j->p >= j->end)
			return jr_fail(j, "unterminated string");
		uint8_t c = *j->p, tmp[4];
		size_t tl = 1;
		if (c == '"') {
			j->p++;
			break;
		}
		if (c == 0)
			return jr_fail(j, "NUL in a string");
		if (c < 0x20)
			return jr_fail(j, "control character in a string");
		if (c == '\\') {
			if (j->end - j->p < 2)
				return jr_fail(j, "unterminated string");
			uint8_t e = j->p[1];
			j->p += 2;
			switch (e) {
			case '"': case '\\': case '/': tmp[0] = e; break;
			case 'b': tmp[0] = '\b'; break;
			case 'f': tmp[0] = '\f'; break;
			case 'n': tmp[0] = '\n'; break;
			case 'r': tmp[0] = '\r'; break;
			case 't': tmp[0] = '\t'; break;
			case 'u': {
				uint32_t cp, lo;
				if (jr_hex4(j, &cp))
					return jr_fail(j, "invalid \\u escape");
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					if (j->end - j->p < 2 || j->p[0] != '\\' ||
					    j->p[1] != 'u')
						return jr_fail(j, "lone surrogate");
					j->p += 2;
					if (jr_hex4(j, &lo) || lo < 0xDC00 || lo > 0xDFFF)
						return jr_fail(j, "lone surrogate");
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
					return jr_fail(j, "lone surrogate");
				}
				if (cp == 0)
					return jr_fail(j, "NUL in a string");
				tl = utf8_put(cp, tmp);
				break;
			}
			default:
				return jr_fail(j, "invalid escape");
			}
		} else if (c < 0x80) {
			tmp[0] = c;
			j->p++;
		} else {
			tl = utf8_seq(j->p, j->end);
			if (!tl)
				return jr_fail(j, "invalid UTF-8");
			memcpy(tmp, j->p, tl);
			j->p += tl;
		}
		if (out) {
			if (tl > cap - n)
				return jr_fail(j, "string too long");
			memcpy(out + n, tmp, tl);
		}
		n += tl;
	}
	if (olen)
		*olen = n;
	return 0;
}

static int is_digit(const struct jr *j, const uint8_t *p)
{
	return p < j->end && *p >= '0' && *p <= '9';
}

/* A number (RFC 8259 grammar) into *out. */
static int jr_num(struct jr *j, double *out)
{
	const uint8_t *p = j->p, *s = p;
	if (p < j->end && *p == '-')
		p++;
	if (!is_digit(j, p))
		return jr_fail(j, "syntax error");
	if (*p == '0')
		p++;
	else
		while (is_digit(j, p))
			p++;
	if (p < j->end && *p == '.') {
		p++;
		if (!is_digit(j, p))
			return jr_fail(j, "bad number");
		while (is_digit(j, p))
			p++;
	}
	if (p < j->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < j->end && (*p == '+' || *p == '-'))
			p++;
		if (!is_digit(j, p))
			return jr_fail(j, "bad number");
		while (is_digit(j, p))
			p++;
	}
	char buf[64];
	size_t n = (size_t)(p - s);
	if (n >= sizeof buf)
		return jr_fail(j, "number too long");
	memcpy(buf, s, n);
	buf[n] = '\0';
	*out = strtod(buf, NULL);
	j->p = p;
	return 0;
}

/* Validates one value of any type at j->p; *t = its type. */
static int jr_value(struct jr *j, int depth, enum jt *t)
{
	jr_ws(j);
	if (j->p >= j->end)
		return jr_fail(j, "syntax error");
	uint8_t c = *j->p;
	if (c == '"') {
		*t = JT_STR;
		return jr_str(j, NULL, 0, NULL);
	}
	if (c == '{' || c == '[') {
		uint8_t close = c == '{' ? '}' : ']';
		enum jt sub;
		*t = c == '{' ? JT_OBJ : JT_ARR;
		if (depth >= JWT_MAX_DEPTH)
			return jr_fail(j, "nesting too deep");
		j->p++;
		jr_ws(j);
		if (j->p < j->end && *j->p == close) {
			j->p++;
			return 0;
		}
		for (;;) {
			if (c == '{') {
				jr_ws(j);
				if (jr_str(j, NULL, 0, NULL))
					return -1;
				jr_ws(j);
				if (j->p >= j->end || *j->p != ':')
					return jr_fail(j, "syntax error");
				j->p++;
			}
			if (jr_value(j, depth + 1, &sub))
				return -1;
			jr_ws(j);
			if (j->p < j->end && *j->p == ',') {
				j->p++;
				continue;
			}
			if (j->p < j->end && *j->p == close) {
				j->p++;
				return 0;
			}
			return jr_fail(j, "syntax error");
		}
	}
	if (c == 't' || c == 'f' || c == 'n') {
		const char *w = c == 't' ? "true" : c == 'f' ? "false" : "null";
		size_t l = strlen(w);
		if ((size_t)(j->end - j->p) < l || memcmp(j->p, w, l))
			return jr_fail(j, "syntax error");
		j->p += l;
		*t = JT_LIT;
		return 0;
	}
	double d;
	*t = JT_NUM;
	return jr_num(j, &d);
}

/* The whole document: exactly one object, nothing after it but spaces.
 * Fills doc with its members; a member name may appear only once. */
static int jr_doc(const uint8_t *p, size_t n, struct jdoc *doc,
		  const char **err)
{
	struct jr j = {p, p + n, NULL};
	doc->n = 0;
	jr_ws(&j);
	if (j.p >= j.end || *j.p != '{') {
		*err = "not a JSON object";
		return -1;
	}
	j.p++;
	jr_ws(&j);
	if (j.p < j.end && *j.p == '}') {
		j.p++;
	} else {
		for (;;) {
			if (doc->n == JWT_MAX_MEMBERS) {
				jr_fail(&j, "too many members");
				break;
			}
			struct jmember *m = &doc->m[doc->n];
			jr_ws(&j);
			if (jr_str(&j, m->name, JWT_MAX_SUB, &m->nlen))
				break;
			for (size_t i = 0; i < doc->n; i++)
				if (doc->m[i].nlen == m->nlen &&
				    !memcmp(doc->m[i].name, m->name, m->nlen))
					jr_fail(&j, "duplicate member name");
			if (j.err)
				break;
			m->name[m->nlen] = '\0';
			jr_ws(&j);
			if (j.p >= j.end || *j.p != ':') {
				jr_fail(&j, "syntax error");
				break;
			}
			j.p++;
			jr_ws(&j);
			m->v = j.p;
			if (jr_value(&j, 1, &m->t))
				break;
			m->vend = j.p;
			doc->n++;
			jr_ws(&j);
			if (j.p < j.end && *j.p == ',') {
				j.p++;
				continue;
			}
			if (j.p < j.end && *j.p == '}')
				j.p++;
			else
				jr_fail(&j, "syntax error");
			break;
		}
	}
	if (!j.err) {
		jr_ws(&j);
		if (j.p != j.end)
			jr_fail(&j, "trailing data");
	}
	*err = j.err;
	return j.err ? -1 : 0;
}

/* The member called name (a C string: registered names have no NUL), or
 * NULL. */
static const struct jmember *doc_get(const struct jdoc *d, const char *name)
{
	size_t l = strlen(name);
	for (size_t i = 0; i < d->n; i++)
		if (d->m[i].nlen == l && !memcmp(d->m[i].name, name, l))
			return &d->m[i];
	return NULL;
}

/* The registered members' types (RFC 7519 4.1, RFC 7515 4.1). */
struct jtype {
	const char *name;
	unsigned types;
};
static const struct jtype CLAIM_TYPES[] = {
	{"exp", JT_NUM}, {"nbf", JT_NUM}, {"iat", JT_NUM}, {"iss", JT_STR},
	{"sub", JT_STR}, {"jti", JT_STR}, {"aud", JT_STR | JT_ARR},
};
static const struct jtype HEADER_TYPES[] = {
	{"alg", JT_STR}, {"typ", JT_STR}, {"cty", JT_STR}, {"kid", JT_STR},
	{"crit", JT_ARR},
};

/* NULL, or the name of the first registered member of the wrong type. */
static const char *doc_types_bad(const struct jdoc *d, const struct jtype *tt,
				 size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct jmember *m = doc_get(d, tt[i].name);
		if (m && !(m->t & tt[i].types))
			return tt[i].name;
	}
	return NULL;
}

/* Decodes a string member (validated by jr_doc) into out[cap] with a NUL
 * after it; -1 if it does not fit. */
static int member_str(const uint8_t *v, const uint8_t *vend, char *out,
		      size_t cap, size_t *len)
{
	struct jr j = {v, vend, NULL};
	if (jr_str(&j, out, cap - 1, len))
		return -1;
	out[*len] = '\0';
	return 0;
}

/* A string value equals want (a configured C string) byte for byte. */
static bool str_equals(const uint8_t *v, const uint8_t *vend, const char *want)
{
	char b[JWT_MAX_SUB + 1];
	size_t l;
	return member_str(v, vend, b, sizeof b, &l) == 0 && l == strlen(want) &&
	       !memcmp(b, want, l);
}

/* aud (string or array of strings, validated) contains want (NULL: only
 * the element types are checked). -1: an array element is not a string. */
static int aud_match(const struct jmember *m, const char *want)
{
	if (m->t == JT_STR)
		return want && str_equals(m->v, m->vend, want);
	struct jr j = {m->v + 1, m->vend, NULL};
	int found = 0;
	for (;;) {
		jr_ws(&j);
		if (j.p >= j.end || *j.p == ']')
			return found;
		if (*j.p != '"')
			return -1;
		const uint8_t *s = j.p;
		if (jr_str(&j, NULL, 0, NULL))
			return -1;
		if (want && str_equals(s, j.p, want))
			found = 1;
		jr_ws(&j);
		if (j.p < j.end && *j.p == ',')
			j.p++;
	}
}

/* A NumericDate member in unix ms (ceil), or -1 when out of range. */
static int member_date_ms(const struct jmember *m, uint64_t *ms)
{
	struct jr j = {m->v, m->vend, NULL};
	double d;
	if (jr_num(&j, &d) || !(d >= 0 && d <= JWT_MAX_NUMERIC_DATE))
		return -1;
	double x = d * 1000.0; /* <= 2.6e14: exact in a double's integer range */
	uint64_t u = (uint64_t)x;
	*ms = (double)u < x ? u + 1 : u; /* ceil, without libm */
	return 0;
}

/* ---- signatures ----------------------------------------------------------------- */

static int verify_sig(const struct jwt_verifier *v, const char *signing,
		      size_t slen, const uint8_t *sig, size_t siglen)
{
	if (v->alg == JWT_HS256) {
		uint8_t mac[32];
		unsigned ml = 0;
		if (!HMAC(EVP_sha256(), v->secret, (int)v->slen,
			  (const uint8_t *)signing, slen, mac, &ml) ||
		    ml != 32 || siglen != 32)
			return -1;
		return CRYPTO_memcmp(mac, sig, 32) == 0 ? 0 : -1;
	}
	uint8_t der[80];
	const uint8_t *s = sig;
	size_t sl = siglen;
	if (v->alg == JWT_ES256) {
		/* JWS carries r||s (32 + 32); OpenSSL wants DER */
		if (siglen != 64)
			return -1;
		ECDSA_SIG *es = ECDSA_SIG_new();
		BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
		if (!es || !r || !ss || !ECDSA_SIG_set0(es, r, ss)) {
			ECDSA_SIG_free(es);
			BN_free(r);
			BN_free(ss);
			return -1;
		}
		uint8_t *q = der;
		int dl = i2d_ECDSA_SIG(es, NULL);
		if (dl <= 0 || (size_t)dl > sizeof der) {
			ECDSA_SIG_free(es);
			return -1;
		}
		dl = i2d_ECDSA_SIG(es, &q);
		ECDSA_SIG_free(es);
		s = der;
		sl = (size_t)dl;
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL,
					     v->pub) == 1 &&
		 EVP_DigestVerify(ctx, s, sl, (const uint8_t *)signing, slen) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

/* ---- verify ------------------------------------------------------------------------ */

#define FAIL(...)                                                              \
	do {                                                                   \
		snprintf(why, whycap, __VA_ARGS__);                            \
		return -PARLEY_EAUTH;                                          \
	} while (0)

uint64_t jwt_deadline_ms(const struct jwt_verifier *v, uint64_t exp_ms)
{
	if (!exp_ms)
		return 0;
	uint64_t l = (uint64_t)v->leeway_s * 1000;
	return exp_ms > UINT64_MAX - l ? UINT64_MAX : exp_ms + l;
}

bool jwt_expired_at(const struct jwt_verifier *v, uint64_t exp_ms,
		    uint64_t now_ms)
{
	return exp_ms && now_ms >= jwt_deadline_ms(v, exp_ms);
}

int jwt_verify(const struct jwt_verifier *v, const char *tok, size_t len,
	       uint64_t now_ms, struct jwt_claims *out, char *why, size_t whycap)
{
	if (len == 0 || len > JWT_MAX_TOKEN)
		FAIL("token empty or longer than %d bytes", JWT_MAX_TOKEN);
	const char *d1 = memchr(tok, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
	if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
		FAIL("not a compact JWS (three parts)");
	uint8_t hdr[1024], pay[JWT_MAX_TOKEN], sig[600];
	int hl = parley_b64url_decode(tok, (size_t)(d1 - tok), hdr, sizeof hdr);
	int pl = parley_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), pay, sizeof pay);
	int sl = parley_b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), sig, sizeof sig);
	if (hl <= 0 || pl <= 0 || sl < 0)
		FAIL("bad base64url");
	/* one struct jdoc at a time: header first, then (after the signature)
	 * the claims reuse it */
	struct jdoc doc;
	const char *err = NULL, *bad;
	char alg[16];
	size_t al = 0;
	if (jr_doc(hdr, (size_t)hl, &doc, &err))
		FAIL("bad header JSON: %s", err);
	if ((bad = doc_types_bad(&doc, HEADER_TYPES,
				 PARLEY_ARRAY_LEN(HEADER_TYPES))))
		FAIL("header %s has the wrong type", bad);
	const struct jmember *m = doc_get(&doc, "alg");
	if (!m || member_str(m->v, m->vend, alg, sizeof alg, &al) ||
	    strcmp(alg, alg_name(v->alg)))
		FAIL("alg is not %s", alg_name(v->alg));
	if (doc_get(&doc, "crit"))
		FAIL("unsupported critical header (crit)");
	if (verify_sig(v, tok, (size_t)(d2 - tok), sig, (size_t)sl))
		FAIL("bad signature");

	if (jr_doc(pay, (size_t)pl, &doc, &err))
		FAIL("bad claims JSON: %s", err);
	if ((bad = doc_types_bad(&doc, CLAIM_TYPES, PARLEY_ARRAY_LEN(CLAIM_TYPES))))
		FAIL("claim %s has the wrong type", bad);
	const struct jmember *aud = doc_get(&doc, "aud");
	int aud_ok = aud ? aud_match(aud, v->aud) : 0;
	if (aud_ok < 0)
		FAIL("claim aud has the wrong type");
	uint64_t exp_ms = 0, nbf_ms = 0, iat_ms = 0;
	if ((m = doc_get(&doc, "exp")) && member_date_ms(m, &exp_ms))
		FAIL("claim exp is out of range");
	if ((m = doc_get(&doc, "nbf")) && member_date_ms(m, &nbf_ms))
		FAIL("claim nbf is out of range");
	if ((m = doc_get(&doc, "iat")) && member_date_ms(m, &iat_ms))
		FAIL("claim iat is out of range");
	if (doc_get(&doc, "exp") && exp_ms == 0)
		exp_ms = 1; /* exp 0 (1970): 0 means "no exp" in exp_ms */
	if (jwt_expired_at(v, exp_ms, now_ms))
		FAIL("token expired");
	if (nbf_ms && nbf_ms > now_ms + (uint64_t)v->leeway_s * 1000)
		FAIL("token not valid yet (nbf)");
	if (v->iss && (!(m = doc_get(&doc, "iss")) ||
		       !str_equals(m->v, m->vend, v->iss)))
		FAIL("wrong issuer");
	if (v->aud && aud_ok != 1)
		FAIL("wrong audience");
	if (!(m = doc_get(&doc, "sub")))
		FAIL("no sub");
	if (member_str(m->v, m->vend, out->sub, sizeof out->sub, &out->sub_len))
		FAIL("sub longer than %d bytes", JWT_MAX_SUB);
	if (out->sub_len == 0)
		FAIL("sub is empty");
	/* jr_str refuses NUL: the C string is the whole claim */
	PARLEY_ASSERT(strlen(out->sub) == out->sub_len);
	out->exp_ms = exp_ms;
	out->deadline_ms = jwt_deadline_ms(v, exp_ms);
	return 0;
}

int jwt_mint_hs256(const void *secret, size_t slen, const char *sub,
		   const char *iss, const char *aud, uint64_t now_s,
		   uint64_t ttl_s, char *out, size_t cap)
{
	char claims[1024];
	int n = snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"iat\":%llu",
			 sub, (unsigned long long)now_s);
	if (ttl_s)
		n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"exp\":%llu",
			      (unsigned long long)(now_s + ttl_s));
	if (iss)
		n += snprintf(claims + n, sizeof claims - (size_t)n,
			      ",\"iss\":\"%s\"", iss);
	if (aud)
		n += snprintf(claims + n, sizeof claims - (size_t)n,
			      ",\"aud\":\"%s\"", aud);
	n += snprintf(claims + n, sizeof claims - (size_t)n, "}");
	if (n >= (int)sizeof claims || strpbrk(sub, "\"\\"))
		return -PARLEY_EINVAL;
	for (const char *p = sub; *p; p++)
		if ((unsigned char)*p < 0x20)
			return -PARLEY_EINVAL; /* would need escaping */
	const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char buf[2048];
	size_t o = parley_b64url_encode((const uint8_t *)hdr, strlen(hdr), buf);
	buf[o++] = '.';
	o += parley_b64url_encode((const uint8_t *)claims, (size_t)n, buf + o);
	uint8_t mac[32];
	unsigned ml = 0;
	HMAC(EVP_sha256(), secret, (int)slen, (const uint8_t *)buf, o, mac, &ml);
	char sig[64];
	parley_b64url_encode(mac, ml, sig);
	int total = snprintf(out, cap, "%.*s.%s", (int)o, buf, sig);
	return total < (int)cap ? total : -PARLEY_ETOOBIG;
}
