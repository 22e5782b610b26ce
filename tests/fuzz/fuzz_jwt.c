/*
 * fuzz_jwt.c — libFuzzer target for parleyd's token verifier (server/jwt.c).
 *
 * A token is the first untrusted thing a client sends. The input is used
 * two ways:
 *   (1) as a whole compact token, verified as it is (header/payload/
 *       signature splitting, base64url, HMAC path);
 *   (2) after its first byte, as a header JSON and a claims JSON (split at
 *       the first NUL) that this target signs with the verifier's secret,
 *       so the JSON reader and every claim rule are reached behind a valid
 *       signature.
 * Properties (abort on violation): verification returns 0 or -PARLEY_EAUTH;
 * on success sub is a NUL-terminated string of 1..255 bytes; a "why" is
 * always NUL-terminated. ASan/UBSan catch over-reads.
 */
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "parley_common.h"

static const char SECRET[] = "fuzzing-secret-0123456789";
static struct jwt_verifier *g_v, *g_v_aud;

static void check(const struct jwt_verifier *v, const char *tok, size_t n)
{
	struct jwt_claims c;
	char why[64];
	memset(why, 'x', sizeof why);
	int rc = jwt_verify(v, tok, n, 1700000000, &c, why, sizeof why);
	if (rc != 0 && rc != -PARLEY_EAUTH)
		abort();
	if (!memchr(why, 0, sizeof why) && rc != 0)
		abort();
	if (rc == 0) {
		size_t l = strnlen(c.sub, sizeof c.sub);
		if (l == 0 || l == sizeof c.sub)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	if (!g_v) {
		if (jwt_verifier_new(JWT_HS256, SECRET, strlen(SECRET), NULL, NULL,
				     30, &g_v) ||
		    jwt_verifier_new(JWT_HS256, SECRET, strlen(SECRET), "parley",
				     "chat", 30, &g_v_aud))
			abort();
	}
	if (n > JWT_MAX_TOKEN + 16)
		return 0;
	/* (1) the raw token */
	check(g_v, (const char *)d, n);
	if (n < 1)
		return 0;
	/* (2) header and claims behind a valid signature */
	const uint8_t *p = d + 1;
	size_t rest = n - 1;
	const uint8_t *nul = memchr(p, 0, rest);
	size_t hl = nul ? (size_t)(nul - p) : 0;
	const uint8_t *hdr = p;
	const uint8_t *cl = nul ? nul + 1 : p;
	size_t cll = nul ? rest - hl - 1 : rest;
	static const char std_hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	if (!nul || (d[0] & 1)) { /* most runs: a valid header, fuzzed claims */
		hdr = (const uint8_t *)std_hdr;
		hl = sizeof std_hdr - 1;
	}
	size_t cap = 4 * (hl + cll) / 3 + 128;
	char *tok = malloc(cap);
	if (!tok)
		return 0;
	size_t o = parley_b64url_encode(hdr, hl, tok);
	tok[o++] = '.';
	o += parley_b64url_encode(cl, cll, tok + o);
	unsigned char mac[32];
	unsigned ml = 0;
	HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const uint8_t *)tok, o,
	     mac, &ml);
	tok[o++] = '.';
	o += parley_b64url_encode(mac, ml, tok + o);
	check(d[0] & 2 ? g_v_aud : g_v, tok, o);
	free(tok);
	return 0;
}
