/*
 * test_jwt.c — unit tests for server/jwt.c.
 *
 * What is proven: HS256 tokens minted by jwt_mint_hs256 verify; each claim
 * rule rejects what it must (exp, nbf with leeway, iss, aud as string and
 * as array, missing sub); signatures are bound to the header and claims
 * (any flipped character is refused); "alg":"none" and algorithm confusion
 * (an HS256 token against an ES256/RS256 verifier keyed with the public
 * key) are refused; ES256 and RS256 signatures made with OpenSSL verify;
 * the JSON reader copes with whitespace, escapes, nested values and
 * exponent numbers, and refuses truncated / malformed JSON; oversized and
 * malformed compact forms are refused without crashing (seeded fuzz).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "jwt.h"
#include "parley_common.h"

static const char SECRET[] = "unit-test-secret-0123456789";
#define NOW 1800000000ull

static struct jwt_verifier *hs(const char *iss, const char *aud)
{
	struct jwt_verifier *v;
	cr_assert_eq(jwt_verifier_new(JWT_HS256, SECRET, strlen(SECRET), iss, aud,
				      30, &v), 0);
	return v;
}

/* HS256 token with arbitrary header and claims JSON. */
static char *hs_tok(const char *hdr, const char *claims, const char *secret)
{
	char *t = malloc(8192);
	parley_b64url_encode(hdr, strlen(hdr), t);
	strcat(t, ".");
	parley_b64url_encode(claims, strlen(claims), t + strlen(t));
	uint8_t mac[32];
	unsigned ml;
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)t,
	     strlen(t), mac, &ml);
	strcat(t, ".");
	parley_b64url_encode(mac, ml, t + strlen(t));
	return t;
}

static int check(struct jwt_verifier *v, const char *t, struct jwt_claims *c)
{
	char why[128];
	return jwt_verify(v, t, strlen(t), NOW * 1000, c, why, sizeof why);
}

#define HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

Test(jwt, mint_and_verify)
{
	struct jwt_verifier *v = hs("iss1", "aud1");
	char tok[2048];
	int n = jwt_mint_hs256(SECRET, strlen(SECRET), "alice", "iss1", "aud1",
			       NOW, 60, tok, sizeof tok);
	cr_assert_gt(n, 0);
	struct jwt_claims c;
	cr_assert_eq(check(v, tok, &c), 0);
	cr_assert_str_eq(c.sub, "alice");
	cr_assert_eq(c.exp_ms, (NOW + 60) * 1000);
	cr_assert_eq(c.deadline_ms, (NOW + 60 + 30) * 1000);
	cr_assert_eq(c.sub_len, 5);
	/* every single-character change is refused */
	for (int i = 0; i < n; i++) {
		char t2[2048];
		strcpy(t2, tok);
		if (t2[i] == '.')
			continue;
		t2[i] = t2[i] == 'A' ? 'B' : 'A';
		cr_assert_neq(check(v, t2, &c), 0, "flip at %d accepted", i);
	}
	jwt_verifier_free(v);
}

Test(jwt, claims_rules)
{
	struct jwt_verifier *v = hs("iss1", "aud1");
	struct jwt_claims c;
	struct {
		const char *claims;
		int ok;
	} cases[] = {
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"exp\":1800000100}", 1},
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\"}", 1}, /* no exp */
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"exp\":1799999990}", 1}, /* leeway */
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"exp\":1799999960}", 0},
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"nbf\":1800000020}", 1},
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"nbf\":1800000100}", 0},
		{"{\"sub\":\"a\",\"iss\":\"iss2\",\"aud\":\"aud1\"}", 0},
		{"{\"sub\":\"a\",\"aud\":\"aud1\"}", 0},
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":[\"x\",\"aud1\"]}", 1},
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":[\"x\",\"y\"]}", 0},
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":[]}", 0},
		{"{\"sub\":\"a\",\"iss\":\"iss1\"}", 0},
		{"{\"iss\":\"iss1\",\"aud\":\"aud1\"}", 0}, /* no sub */
		{"{\"sub\":\"\",\"iss\":\"iss1\",\"aud\":\"aud1\"}", 0},
		/* whitespace, escapes, nested values, exponent numbers */
		{" { \"x\" : {\"y\":[1,2,{\"z\":null}]}, \"sub\" : \"b\\u0062\" ,"
		 "\"iss\":\"iss\\u0031\",\"aud\":\"aud1\",\"exp\":1.9e9,\"f\":true } ", 1},
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\"", 0},  /* truncated */
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\"}x", 0}, /* trailing */
		{"{\"sub\":\"a\" \"iss\":\"iss1\"}", 0},                  /* no comma */
		{"[1,2]", 0},
		/* a string exp used to be skipped (never expiring): wrong type */
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"exp\":\"soon\"}", 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *t = hs_tok(HDR, cases[i].claims, SECRET);
		int rc = check(v, t, &c);
		cr_assert_eq(rc == 0, cases[i].ok, "case %zu (%s): rc %d", i,
			     cases[i].claims, rc);
		free(t);
	}
	char *t = hs_tok(HDR, " { \"x\" : {\"y\":[1,2,{\"z\":null}]}, \"sub\" : "
			 "\"b\\u0062\" ,\"iss\":\"iss1\",\"aud\":\"aud1\"}", SECRET);
	cr_assert_eq(check(v, t, &c), 0);
	cr_assert_str_eq(c.sub, "bb");
	free(t);
	jwt_verifier_free(v);
}

Test(jwt, header_rules)
{
	struct jwt_verifier *v = hs(NULL, NULL);
	struct jwt_claims c;
	const char *cl = "{\"sub\":\"a\"}";
	char *t = hs_tok("{\"alg\":\"none\"}", cl, SECRET);
	cr_assert_neq(check(v, t, &c), 0);
	free(t);
	t = hs_tok("{\"alg\":\"HS512\"}", cl, SECRET);
	cr_assert_neq(check(v, t, &c), 0);
	free(t);
	t = hs_tok("{\"typ\":\"JWT\"}", cl, SECRET);
	cr_assert_neq(check(v, t, &c), 0);
	free(t);
	t = hs_tok(HDR, cl, "another-secret-of-enough-length");
	cr_assert_neq(check(v, t, &c), 0);
	free(t);
	/* unsigned: empty signature */
	char u[512] = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.";
	cr_assert_neq(check(v, u, &c), 0);
	cr_assert_neq(check(v, "a.b", &c), 0);
	cr_assert_neq(check(v, "a.b.c.d", &c), 0);
	cr_assert_neq(check(v, "", &c), 0);
	cr_assert_neq(check(v, "!!!.###.$$$", &c), 0);
	char *big = malloc(JWT_MAX_TOKEN + 10);
	memset(big, 'A', JWT_MAX_TOKEN + 9);
	big[JWT_MAX_TOKEN + 9] = 0;
	big[100] = '.';
	big[200] = '.';
	cr_assert_neq(check(v, big, &c), 0);
	free(big);
	/* short HS256 secrets are refused at configuration time */
	struct jwt_verifier *w;
	cr_assert_eq(jwt_verifier_new(JWT_HS256, "short", 5, NULL, NULL, 0, &w),
		     -PARLEY_EINVAL);
	jwt_verifier_free(v);
}

/* Sign with an OpenSSL private key (RS256, or ES256 as r||s). */
static char *pk_tok(EVP_PKEY *k, const char *alg, const char *claims)
{
	char hdr[64];
	snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\"}", alg);
	char *t = malloc(8192);
	parley_b64url_encode(hdr, strlen(hdr), t);
	strcat(t, ".");
	parley_b64url_encode(claims, strlen(claims), t + strlen(t));
	uint8_t der[600];
	size_t dl = sizeof der;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	cr_assert(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) == 1);
	cr_assert(EVP_DigestSign(ctx, der, &dl, (const uint8_t *)t, strlen(t)) == 1);
	EVP_MD_CTX_free(ctx);
	uint8_t sig[600];
	size_t sl = dl;
	if (!strcmp(alg, "ES256")) {
		const uint8_t *p = der;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
		const BIGNUM *r, *s;
		ECDSA_SIG_get0(es, &r, &s);
		BN_bn2binpad(r, sig, 32);
		BN_bn2binpad(s, sig + 32, 32);
		ECDSA_SIG_free(es);
		sl = 64;
	} else {
		memcpy(sig, der, dl);
	}
	strcat(t, ".");
	parley_b64url_encode(sig, sl, t + strlen(t));
	return t;
}

static char *pub_pem(EVP_PKEY *k, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	cr_assert(PEM_write_bio_PUBKEY(b, k) == 1);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *out = malloc((size_t)n + 1);
	memcpy(out, p, (size_t)n);
	out[n] = '\0'; /* hs_tok uses it as a C string */
	*len = (size_t)n;
	BIO_free(b);
	return out;
}

Test(jwt, es256_rs256_and_confusion)
{
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	cr_assert(ec && rsa);
	size_t el, rl;
	char *epem = pub_pem(ec, &el), *rpem = pub_pem(rsa, &rl);
	struct jwt_verifier *ve, *vr;
	cr_assert_eq(jwt_verifier_new(JWT_ES256, epem, el, NULL, "p", 0, &ve), 0);
	cr_assert_eq(jwt_verifier_new(JWT_RS256, rpem, rl, NULL, "p", 0, &vr), 0);
	/* key type must match the algorithm */
	struct jwt_verifier *x;
	cr_assert_eq(jwt_verifier_new(JWT_ES256, rpem, rl, NULL, NULL, 0, &x),
		     -PARLEY_EINVAL);
	struct jwt_claims c;
	const char *cl = "{\"sub\":\"eve\",\"aud\":\"p\"}";
	char *te = pk_tok(ec, "ES256", cl), *tr = pk_tok(rsa, "RS256", cl);
	cr_assert_eq(check(ve, te, &c), 0);
	cr_assert_str_eq(c.sub, "eve");
	cr_assert_eq(check(vr, tr, &c), 0);
	cr_assert_neq(check(ve, tr, &c), 0);
	cr_assert_neq(check(vr, te, &c), 0);
	/* algorithm confusion: HMAC keyed with the public key's PEM */
	char *conf = hs_tok("{\"alg\":\"HS256\"}", cl, epem);
	cr_assert_neq(check(ve, conf, &c), 0);
	free(conf);
	/* a wrong audience with a valid signature */
	char *wa = pk_tok(ec, "ES256", "{\"sub\":\"eve\",\"aud\":\"q\"}");
	cr_assert_neq(check(ve, wa, &c), 0);
	free(wa);
	free(te);
	free(tr);
	free(epem);
	free(rpem);
	jwt_verifier_free(ve);
	jwt_verifier_free(vr);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
}

Test(jwt, seeded_garbage_never_verifies)
{
	const char *s = getenv("PARLEY_SEED");
	struct parley_rng r = {s ? strtoull(s, NULL, 0) : parley_now_ms()};
	fprintf(stderr, "test_jwt: seed=%llu\n", (unsigned long long)r.s);
	struct jwt_verifier *v = hs(NULL, NULL);
	char tok[2048];
	int n = jwt_mint_hs256(SECRET, strlen(SECRET), "alice", NULL, NULL, NOW,
			       60, tok, sizeof tok);
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.{}\"";
	for (int i = 0; i < 20000; i++) {
		char t[2048];
		memcpy(t, tok, (size_t)n + 1);
		int edits = 1 + (int)parley_rng_below(&r, 4);
		for (int e = 0; e < edits; e++)
			t[parley_rng_below(&r, (uint64_t)n)] =
				alpha[parley_rng_below(&r, sizeof alpha - 1)];
		if (!strcmp(t, tok))
			continue;
		struct jwt_claims c;
		cr_assert_neq(check(v, t, &c), 0, "mutant accepted: %s", t);
	}
	jwt_verifier_free(v);
}

/* ---- the strict claim parser ------------------------------------------------ */

/* HS256 token over n bytes of claims (may contain NUL bytes). */
static char *hs_tok_n(const char *hdr, const void *claims, size_t n)
{
	char *t = malloc(16384);
	parley_b64url_encode(hdr, strlen(hdr), t);
	strcat(t, ".");
	parley_b64url_encode(claims, n, t + strlen(t));
	uint8_t mac[32];
	unsigned ml;
	HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const uint8_t *)t,
	     strlen(t), mac, &ml);
	strcat(t, ".");
	parley_b64url_encode(mac, ml, t + strlen(t));
	return t;
}

/* Verifies claims (header HDR) with v; returns rc, reason in why. */
static int verify_claims(struct jwt_verifier *v, const char *claims,
			 struct jwt_claims *c, char *why, size_t whycap)
{
	char *t = hs_tok_n(HDR, claims, strlen(claims));
	why[0] = '\0';
	int rc = jwt_verify(v, t, strlen(t), NOW * 1000, c, why, whycap);
	free(t);
	return rc;
}

#define REJECTS(v, claims, reason)                                             \
	do {                                                                   \
		struct jwt_claims c_;                                          \
		char w_[128];                                                  \
		int rc_ = verify_claims(v, claims, &c_, w_, sizeof w_);        \
		cr_assert_eq(rc_, -PARLEY_EAUTH, "accepted: %s", claims);      \
		cr_assert(strstr(w_, reason), "%s: why \"%s\", want \"%s\"",   \
			  claims, w_, reason);                                 \
	} while (0)

Test(jwt, nul_in_a_string_is_refused)
{
	struct jwt_verifier *v = hs("iss1", "aud1");
	/* the impersonation: sub "bob\0mallory" used to verify as bob */
	REJECTS(v, "{\"sub\":\"bob\\u0000mallory\",\"iss\":\"iss1\",\"aud\":\"aud1\"}",
		"NUL in a string");
	/* the issuer check used to compare only up to the NUL */
	REJECTS(v, "{\"sub\":\"bob\",\"iss\":\"iss1\\u0000suffix\",\"aud\":\"aud1\"}",
		"NUL in a string");
	REJECTS(v, "{\"sub\":\"bob\",\"iss\":\"iss1\",\"aud\":\"aud1\\u0000x\"}",
		"NUL in a string");
	REJECTS(v, "{\"sub\":\"bob\",\"iss\":\"iss1\",\"aud\":[\"aud1\\u0000\"]}",
		"NUL in a string");
	/* anywhere: an unknown claim, a member name, a nested value */
	REJECTS(v, "{\"sub\":\"bob\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"x\":\"\\u0000\"}",
		"NUL in a string");
	REJECTS(v, "{\"sub\\u0000\":\"bob\",\"iss\":\"iss1\",\"aud\":\"aud1\"}",
		"NUL in a string");
	REJECTS(v, "{\"sub\":\"bob\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"x\":[{\"y\":\"\\u0000\"}]}",
		"NUL in a string");
	/* a raw NUL byte inside the string, and an overlong UTF-8 NUL */
	static const char raw[] = "{\"sub\":\"bob\0mallory\",\"iss\":\"iss1\",\"aud\":\"aud1\"}";
	char *t = hs_tok_n(HDR, raw, sizeof raw - 1);
	struct jwt_claims c;
	char why[128];
	cr_assert_eq(jwt_verify(v, t, strlen(t), NOW * 1000, &c, why, sizeof why),
		     -PARLEY_EAUTH);
	cr_assert(strstr(why, "NUL in a string"), "why %s", why);
	free(t);
	REJECTS(v, "{\"sub\":\"bob\xc0\x80mallory\",\"iss\":\"iss1\",\"aud\":\"aud1\"}",
		"invalid UTF-8");
	jwt_verifier_free(v);
}

Test(jwt, wrong_claim_types_are_refused)
{
	struct jwt_verifier *v = hs(NULL, NULL);
	struct {
		const char *claims, *reason;
	} cases[] = {
		{"{\"sub\":\"a\",\"exp\":\"1000\"}", "claim exp has the wrong type"},
		{"{\"sub\":\"a\",\"exp\":true}", "claim exp has the wrong type"},
		{"{\"sub\":\"a\",\"exp\":null}", "claim exp has the wrong type"},
		{"{\"sub\":\"a\",\"exp\":[1900000000]}", "claim exp has the wrong type"},
		{"{\"sub\":\"a\",\"nbf\":\"0\"}", "claim nbf has the wrong type"},
		{"{\"sub\":\"a\",\"iat\":{}}", "claim iat has the wrong type"},
		{"{\"sub\":\"a\",\"iss\":5}", "claim iss has the wrong type"},
		{"{\"sub\":5}", "claim sub has the wrong type"},
		{"{\"sub\":[\"a\"]}", "claim sub has the wrong type"},
		{"{\"sub\":null}", "claim sub has the wrong type"},
		{"{\"sub\":\"a\",\"jti\":1}", "claim jti has the wrong type"},
		{"{\"sub\":\"a\",\"aud\":5}", "claim aud has the wrong type"},
		{"{\"sub\":\"a\",\"aud\":{\"x\":\"y\"}}", "claim aud has the wrong type"},
		{"{\"sub\":\"a\",\"aud\":[\"x\",1]}", "claim aud has the wrong type"},
		{"{\"sub\":\"a\",\"aud\":[[\"x\"]]}", "claim aud has the wrong type"},
		/* NumericDate range */
		{"{\"sub\":\"a\",\"exp\":-1}", "claim exp is out of range"},
		{"{\"sub\":\"a\",\"exp\":1e300}", "claim exp is out of range"},
		{"{\"sub\":\"a\",\"nbf\":-5}", "claim nbf is out of range"},
		{"{\"sub\":\"a\",\"iat\":1e12}", "claim iat is out of range"},
		/* strict number grammar */
		{"{\"sub\":\"a\",\"exp\":01}", "bad claims JSON"},
		{"{\"sub\":\"a\",\"exp\":1.}", "bad claims JSON"},
		{"{\"sub\":\"a\",\"exp\":+1}", "bad claims JSON"},
		{"{\"sub\":\"a\",\"exp\":1e}", "bad claims JSON"},
		{"{\"sub\":\"a\",\"exp\":0x10}", "bad claims JSON"},
		/* exp 0 is 1970, not "no exp" */
		{"{\"sub\":\"a\",\"exp\":0}", "token expired"},
	};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(cases); i++)
		REJECTS(v, cases[i].claims, cases[i].reason);
	/* the right types pass: aud as a string or an array of strings,
	 * fractional NumericDates, -0, unregistered claims of any type */
	const char *ok[] = {
		"{\"sub\":\"a\",\"aud\":\"x\",\"iat\":1800000000,\"jti\":\"j\"}",
		"{\"sub\":\"a\",\"aud\":[\"x\",\"y\"],\"exp\":1800000000.5}",
		"{\"sub\":\"a\",\"aud\":[],\"nbf\":-0,\"iat\":1.8e9}",
		"{\"sub\":\"a\",\"x\":5,\"y\":[null,true,{\"z\":\"\"}],\"exp\":253402300799}",
	};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(ok); i++) {
		struct jwt_claims c;
		char why[128];
		cr_assert_eq(verify_claims(v, ok[i], &c, why, sizeof why), 0,
			     "%s: %s", ok[i], why);
	}
	jwt_verifier_free(v);
}

Test(jwt, duplicate_members_are_refused)
{
	struct jwt_verifier *v = hs(NULL, NULL);
	REJECTS(v, "{\"sub\":\"bob\",\"sub\":\"mallory\"}", "duplicate member name");
	/* the same name spelled with an escape is the same name */
	REJECTS(v, "{\"sub\":\"bob\",\"s\\u0075b\":\"mallory\"}",
		"duplicate member name");
	REJECTS(v, "{\"exp\":1,\"sub\":\"bob\",\"exp\":1900000000}",
		"duplicate member name");
	/* unknown claims too (a later reader might use them) */
	REJECTS(v, "{\"sub\":\"bob\",\"x\":1,\"x\":2}", "duplicate member name");
	/* nested objects are not claims: their names may repeat */
	struct jwt_claims c;
	char why[128];
	cr_assert_eq(verify_claims(v, "{\"sub\":\"bob\",\"x\":{\"y\":1,\"y\":2}}",
				   &c, why, sizeof why), 0, "%s", why);
	/* the header: two algs */
	char *t = hs_tok("{\"alg\":\"HS256\",\"alg\":\"none\"}", "{\"sub\":\"a\"}",
			 SECRET);
	cr_assert_eq(jwt_verify(v, t, strlen(t), NOW * 1000, &c, why, sizeof why),
		     -PARLEY_EAUTH);
	cr_assert(strstr(why, "duplicate member name"), "%s", why);
	free(t);
	jwt_verifier_free(v);
}

Test(jwt, crit_header_is_refused)
{
	struct jwt_verifier *v = hs(NULL, NULL);
	const char *hdrs[] = {
		"{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1900000000}",
		"{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}",
		"{\"alg\":\"HS256\",\"crit\":[]}",
	};
	struct jwt_claims c;
	char why[128];
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(hdrs); i++) {
		char *t = hs_tok(hdrs[i], "{\"sub\":\"a\"}", SECRET);
		cr_assert_eq(jwt_verify(v, t, strlen(t), NOW * 1000, &c, why,
					sizeof why), -PARLEY_EAUTH, "%s", hdrs[i]);
		cr_assert(strstr(why, "unsupported critical header"), "%s", why);
		free(t);
	}
	const char *bad_types[] = {
		"{\"alg\":\"HS256\",\"crit\":\"exp\"}",
		"{\"alg\":\"HS256\",\"typ\":7}",
		"{\"alg\":[\"HS256\"]}",
		"{\"alg\":\"HS256\",\"kid\":{}}",
	};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(bad_types); i++) {
		char *t = hs_tok(bad_types[i], "{\"sub\":\"a\"}", SECRET);
		cr_assert_eq(jwt_verify(v, t, strlen(t), NOW * 1000, &c, why,
					sizeof why), -PARLEY_EAUTH, "%s", bad_types[i]);
		cr_assert(strstr(why, "has the wrong type"), "%s: %s", bad_types[i], why);
		free(t);
	}
	/* an unknown non-critical header member is fine */
	char *t = hs_tok("{\"alg\":\"HS256\",\"kid\":\"k1\",\"x5t\":\"abc\"}",
			 "{\"sub\":\"a\"}", SECRET);
	cr_assert_eq(jwt_verify(v, t, strlen(t), NOW * 1000, &c, why, sizeof why), 0,
		     "%s", why);
	free(t);
	jwt_verifier_free(v);
}

Test(jwt, strings_escapes_and_utf8)
{
	struct jwt_verifier *v = hs(NULL, NULL);
	struct jwt_claims c;
	char why[128];
	struct {
		const char *claims, *sub;
		size_t len;
	} ok[] = {
		{"{\"sub\":\"\\u00e9t\\u00E9\"}", "\xc3\xa9t\xc3\xa9", 5},
		{"{\"sub\":\"\\ud83d\\ude00\"}", "\xf0\x9f\x98\x80", 4},
		{"{\"sub\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}",
		 "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9},
		{"{\"sub\":\"a\\/b\\\\c\\\"d\"}", "a/b\\c\"d", 7},
	};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(ok); i++) {
		cr_assert_eq(verify_claims(v, ok[i].claims, &c, why, sizeof why), 0,
			     "%s: %s", ok[i].claims, why);
		cr_assert_eq(c.sub_len, ok[i].len);
		cr_assert_eq(memcmp(c.sub, ok[i].sub, ok[i].len), 0);
		cr_assert_eq(strlen(c.sub), c.sub_len);
	}
	struct {
		const char *claims, *reason;
	} bad[] = {
		{"{\"sub\":\"\\ud83d\"}", "lone surrogate"},
		{"{\"sub\":\"\\ud83dx\"}", "lone surrogate"},
		{"{\"sub\":\"\\ud83d\\u0041\"}", "lone surrogate"},
		{"{\"sub\":\"\\ude00\"}", "lone surrogate"},
		{"{\"sub\":\"\\x41\"}", "invalid escape"},
		{"{\"sub\":\"\\u12\"}", "invalid \\u escape"},
		{"{\"sub\":\"\\u12g4\"}", "invalid \\u escape"},
		{"{\"sub\":\"a\xff\"}", "invalid UTF-8"},
		{"{\"sub\":\"a\xc3\"}", "invalid UTF-8"},
		{"{\"sub\":\"\xed\xa0\x80\"}", "invalid UTF-8"},      /* surrogate */
		{"{\"sub\":\"\xe0\x80\xaf\"}", "invalid UTF-8"},      /* overlong */
		{"{\"sub\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8"},  /* > U+10FFFF */
		{"{\"sub\":\"a\nb\"}", "control character"},
		{"{\"sub\":\"abc", "unterminated string"},
	};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(bad); i++)
		REJECTS(v, bad[i].claims, bad[i].reason);
	/* sub length: 255 bytes fit, 256 do not */
	char cl[600];
	char s255[256];
	memset(s255, 'x', 255);
	s255[255] = '\0';
	snprintf(cl, sizeof cl, "{\"sub\":\"%s\"}", s255);
	cr_assert_eq(verify_claims(v, cl, &c, why, sizeof why), 0, "%s", why);
	cr_assert_eq(c.sub_len, 255);
	snprintf(cl, sizeof cl, "{\"sub\":\"%sy\"}", s255);
	REJECTS(v, cl, "sub longer than 255 bytes");
	REJECTS(v, "{\"sub\":\"\"}", "sub is empty");
	REJECTS(v, "{\"iat\":1}", "no sub");
	jwt_verifier_free(v);
}

Test(jwt, bounds_on_members_and_depth)
{
	struct jwt_verifier *v = hs(NULL, NULL);
	char cl[4096];
	int n = snprintf(cl, sizeof cl, "{\"sub\":\"a\"");
	for (int i = 1; i < JWT_MAX_MEMBERS; i++)
		n += snprintf(cl + n, sizeof cl - (size_t)n, ",\"m%d\":%d", i, i);
	snprintf(cl + n, sizeof cl - (size_t)n, "}");
	struct jwt_claims c;
	char why[128];
	cr_assert_eq(verify_claims(v, cl, &c, why, sizeof why), 0, "%s", why);
	cl[n] = '\0';
	snprintf(cl + n, sizeof cl - (size_t)n, ",\"one_more\":1}");
	REJECTS(v, cl, "too many members");
	/* nesting: JWT_MAX_DEPTH levels below the top object are refused */
	n = snprintf(cl, sizeof cl, "{\"sub\":\"a\",\"x\":");
	for (int i = 0; i < JWT_MAX_DEPTH; i++)
		cl[n++] = '[';
	for (int i = 0; i < JWT_MAX_DEPTH; i++)
		cl[n++] = ']';
	snprintf(cl + n, sizeof cl - (size_t)n, "}");
	REJECTS(v, cl, "nesting too deep");
	jwt_verifier_free(v);
}

/* Acceptance and expiry are one rule: a token verify accepts at t is not
 * expired at t, and it expires exactly at exp + leeway. */
Test(jwt, acceptance_and_expiry_agree)
{
	struct jwt_verifier *v = hs(NULL, NULL);
	for (int64_t d = -40; d <= 5; d++) {
		uint64_t exp = (uint64_t)((int64_t)NOW + d);
		char cl[128];
		snprintf(cl, sizeof cl, "{\"sub\":\"a\",\"exp\":%llu}",
			 (unsigned long long)exp);
		char *t = hs_tok_n(HDR, cl, strlen(cl));
		for (uint64_t off = 0; off < 2000; off += 250) {
			uint64_t now = NOW * 1000 + off;
			struct jwt_claims c;
			char why[128];
			int rc = jwt_verify(v, t, strlen(t), now, &c, why, sizeof why);
			bool expired = jwt_expired_at(v, exp * 1000, now);
			cr_assert_eq(rc == 0, !expired, "exp %+lld off %llu", (long long)d,
				     (unsigned long long)off);
			cr_assert_eq(expired, now >= (exp + 30) * 1000);
			if (rc == 0) {
				cr_assert_eq(c.deadline_ms, (exp + 30) * 1000);
				cr_assert_gt(c.deadline_ms, now);
				cr_assert(!jwt_expired_at(v, c.exp_ms, c.deadline_ms - 1));
				cr_assert(jwt_expired_at(v, c.exp_ms, c.deadline_ms));
			} else {
				cr_assert(strstr(why, "token expired"), "%s", why);
			}
		}
		free(t);
	}
	cr_assert(!jwt_expired_at(v, 0, UINT64_MAX)); /* no exp: never */
	jwt_verifier_free(v);
}

Test(jwt, reasons_name_the_failure)
{
	struct jwt_verifier *v = hs("iss1", "aud1");
	struct jwt_claims c;
	char why[128];
	REJECTS(v, "{\"sub\":\"a\",\"iss\":\"iss2\",\"aud\":\"aud1\"}", "wrong issuer");
	REJECTS(v, "{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud2\"}", "wrong audience");
	REJECTS(v, "{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"nbf\":1900000000}",
		"not valid yet");
	REJECTS(v, "{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"exp\":1700000000}",
		"token expired");
	REJECTS(v, "[]", "bad claims JSON: not a JSON object");
	REJECTS(v, "{\"sub\":\"a\"} x", "bad claims JSON: trailing data");
	char *t = hs_tok(HDR, "{\"sub\":\"a\"}", "some-other-secret-of-enough-length");
	cr_assert_eq(jwt_verify(v, t, strlen(t), NOW * 1000, &c, why, sizeof why),
		     -PARLEY_EAUTH);
	cr_assert_str_eq(why, "bad signature");
	free(t);
	cr_assert_eq(jwt_verify(v, "abc", 3, NOW * 1000, &c, why, sizeof why),
		     -PARLEY_EAUTH);
	cr_assert_str_eq(why, "not a compact JWS (three parts)");
	jwt_verifier_free(v);
}
