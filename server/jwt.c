/*
 * jwt.c — JWT verification (HS256 / RS256 / ES256 with OpenSSL) and
 * development minting. See jwt.h for the rules.
 *
 * Structure: base64url decode (bounded) -> a tiny JSON reader that walks
 * the top-level object of the header and of the claims (strings with
 * escapes, numbers, arrays of strings for aud, nested values skipped with
 * a depth bound) -> signature check -> claim checks.
 *
 * Threads: reentrant; no globals.
 */
#include <math.h>
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

/* ---- a tiny JSON reader ------------------------------------------------------ */

struct js {
	const char *p, *end;
	int ok;
};

static void js_ws(struct js *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
				 *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int js_peek(struct js *j)
{
	js_ws(j);
	return j->p < j->end ? (unsigned char)*j->p : -1;
}

static int js_eat(struct js *j, char c)
{
	if (js_peek(j) != c) {
		j->ok = 0;
		return 0;
	}
	j->p++;
	return 1;
}

/* A string into out (NUL-terminated, escapes decoded; \u00XX only as a
 * byte, other \u escapes kept as '?', which never equals a configured
 * ASCII iss/aud). Returns its length or -1. */
static int js_string(struct js *j, char *out, size_t cap)
{
	if (!js_eat(j, '"'))
		return -1;
	size_t n = 0;
	while (j->p < j->end && *j->p != '"') {
		char c = *j->p++;
		if ((unsigned char)c < 0x20) {
			j->ok = 0;
			return -1;
		}
		if (c == '\\') {
			if (j->p >= j->end) {
				j->ok = 0;
				return -1;
			}
			char e = *j->p++;
			switch (e) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case '"': case '\\': case '/': c = e; break;
			case 'u':
				if (j->end - j->p < 4) {
					j->ok = 0;
					return -1;
				}
				c = (j->p[0] == '0' && j->p[1] == '0')
					    ? (char)strtol((char[3]){j->p[2], j->p[3], 0},
							   NULL, 16)
					    : '?';
				j->p += 4;
				break;
			default:
				j->ok = 0;
				return -1;
			}
		}
		if (out) {
			if (n + 1 >= cap) {
				j->ok = 0;
				return -1;
			}
			out[n] = c;
		}
		n++;
	}
	if (!js_eat(j, '"'))
		return -1;
	if (out)
		out[n] = '\0';
	return (int)n;
}

static int js_number(struct js *j, double *v)
{
	js_ws(j);
	char buf[64];
	size_t n = 0;
	while (j->p < j->end && n < sizeof buf - 1 &&
	       strchr("+-0123456789.eE", *j->p))
		buf[n++] = *j->p++;
	buf[n] = '\0';
	char *e;
	*v = strtod(buf, &e);
	if (n == 0 || *e) {
		j->ok = 0;
		return -1;
	}
	return 0;
}

static void js_skip(struct js *j, int depth)
{
	int c = js_peek(j);
	if (depth > 16) {
		j->ok = 0;
		return;
	}
	if (c == '"') {
		js_string(j, NULL, 0);
	} else if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		j->p++;
		if (js_peek(j) == close) {
			j->p++;
			return;
		}
		while (j->ok) {
			if (c == '{') {
				js_string(j, NULL, 0);
				js_eat(j, ':');
			}
			js_skip(j, depth + 1);
			if (js_peek(j) == ',') {
				j->p++;
				continue;
			}
			js_eat(j, close);
			return;
		}
	} else if (c == 't' || c == 'f' || c == 'n') {
		const char *w = c == 't' ? "true" : c == 'f' ? "false" : "null";
		size_t l = strlen(w);
		if ((size_t)(j->end - j->p) < l || memcmp(j->p, w, l)) {
			j->ok = 0;
			return;
		}
		j->p += l;
	} else {
		double d;
		js_number(j, &d);
	}
}

struct claims_raw {
	char alg[16];
	int has_alg;
	char sub[256];
	int has_sub;
	char iss[256];
	int has_iss;
	double exp, nbf;
	int has_exp, has_nbf;
	int aud_match, has_aud;
};

/* Walks the top-level object, filling what it knows. want_aud: the aud to
 * look for (string or array element). */
static int js_object(const char *p, size_t n, struct claims_raw *c,
		     const char *want_aud)
{
	struct js j = {p, p + n, 1};
	if (!js_eat(&j, '{'))
		return -1;
	if (js_peek(&j) == '}') {
		j.p++;
		return js_peek(&j) == -1 ? 0 : -1;
	}
	while (j.ok) {
		char key[32];
		if (js_string(&j, key, sizeof key) < 0)
			return -1;
		if (!js_eat(&j, ':'))
			return -1;
		int t = js_peek(&j);
		if (!strcmp(key, "alg") && t == '"') {
			c->has_alg = js_string(&j, c->alg, sizeof c->alg) >= 0;
		} else if (!strcmp(key, "sub") && t == '"') {
			c->has_sub = js_string(&j, c->sub, sizeof c->sub) > 0;
		} else if (!strcmp(key, "iss") && t == '"') {
			c->has_iss = js_string(&j, c->iss, sizeof c->iss) >= 0;
		} else if (!strcmp(key, "exp") && t != '"') {
			c->has_exp = js_number(&j, &c->exp) == 0;
		} else if (!strcmp(key, "nbf") && t != '"') {
			c->has_nbf = js_number(&j, &c->nbf) == 0;
		} else if (!strcmp(key, "aud") && (t == '"' || t == '[')) {
			char a[256];
			c->has_aud = 1;
			if (t == '"') {
				if (js_string(&j, a, sizeof a) >= 0 && want_aud &&
				    !strcmp(a, want_aud))
					c->aud_match = 1;
			} else {
				j.p++;
				if (js_peek(&j) == ']') {
					j.p++;
				} else {
					while (j.ok) {
						if (js_string(&j, a, sizeof a) >= 0 &&
						    want_aud && !strcmp(a, want_aud))
							c->aud_match = 1;
						if (js_peek(&j) == ',') {
							j.p++;
							continue;
						}
						js_eat(&j, ']');
						break;
					}
				}
			}
		} else {
			js_skip(&j, 1);
		}
		if (!j.ok)
			return -1;
		if (js_peek(&j) == ',') {
			j.p++;
			continue;
		}
		if (!js_eat(&j, '}'))
			return -1;
		break;
	}
	return j.ok && js_peek(&j) == -1 ? 0 : -1;
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

int jwt_verify(const struct jwt_verifier *v, const char *tok, size_t len,
	       uint64_t now_s, struct jwt_claims *out, char *why, size_t whycap)
{
	if (len == 0 || len > JWT_MAX_TOKEN)
		FAIL("token length");
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
	struct claims_raw h = {0}, c = {0};
	if (js_object((const char *)hdr, (size_t)hl, &h, NULL))
		FAIL("bad header JSON");
	if (!h.has_alg || strcmp(h.alg, alg_name(v->alg)))
		FAIL("alg is not %s", alg_name(v->alg));
	if (verify_sig(v, tok, (size_t)(d2 - tok), sig, (size_t)sl))
		FAIL("bad signature");
	if (js_object((const char *)pay, (size_t)pl, &c, v->aud))
		FAIL("bad claims JSON");
	double now = (double)now_s;
	if (c.has_exp && !(c.exp > now - v->leeway_s))
		FAIL("token expired");
	if (c.has_nbf && !(c.nbf <= now + v->leeway_s))
		FAIL("token not valid yet (nbf)");
	if (v->iss && (!c.has_iss || strcmp(c.iss, v->iss)))
		FAIL("wrong issuer");
	if (v->aud && !c.aud_match)
		FAIL("wrong audience");
	if (!c.has_sub)
		FAIL("no sub");
	snprintf(out->sub, sizeof out->sub, "%s", c.sub);
	out->exp_s = c.has_exp && c.exp > 0 && c.exp < 1e15 ? (uint64_t)c.exp : 0;
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
