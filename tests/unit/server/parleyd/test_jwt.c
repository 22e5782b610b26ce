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
	return jwt_verify(v, t, strlen(t), NOW, c, why, sizeof why);
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
	cr_assert_eq(c.exp_s, NOW + 60);
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
		{"{\"sub\":\"a\",\"iss\":\"iss1\",\"aud\":\"aud1\",\"exp\":\"soon\"}", 1},
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
