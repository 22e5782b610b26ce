/*
 * ctl_token.c — `parleyctl token`: mint a development JWT for parleyd.
 *
 *   parleyctl token --sub USER [--secret-file F | --secret S]
 *                   [--alg HS256|RS256|ES256 --key PRIVATE.pem]
 *                   [--iss I] [--aud A] [--ttl SECONDS] [--nbf-in SECONDS]
 *
 * HS256 signs with a shared secret (the file's bytes, a trailing newline
 * dropped, exactly as parleyd reads jwt_secret_file); RS256 and ES256 sign
 * with a PEM private key (ES256: P-256, signature as JWS r||s). Prints the
 * token and a newline on stdout, and when it expires on stderr (so
 * `export PARLEY_TOKEN=$(parleyctl token ...)` still shows it; --quiet
 * drops that line). Claims: sub, iat, exp (= now + ttl, default 24 h: a
 * development session outlives a working day's chat; --ttl 0 = no exp),
 * optional nbf, iss, aud.
 *
 * Exit codes (parleyctl.h): 0 ok, 2 usage, 3 runtime error (unreadable
 * key, signing failed).
 * Threads: a CLI; single-threaded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "parley_common.h"
#include "parleyctl.h"

/* Default lifetime: long enough for a development session (a token
 * exported at the start of the day does not expire mid-chat). */
#define CTL_TOKEN_TTL_DEFAULT (24 * 3600)

static void token_usage(FILE *f)
{
	fprintf(f,
		"usage: parleyctl token --sub USER [--secret-file F | --secret S]\n"
		"                       [--alg HS256|RS256|ES256 --key PRIVATE.pem]\n"
		"                       [--iss I] [--aud A] [--ttl SECONDS] [--nbf-in SECONDS]\n"
		"                       [--quiet]\n"
		"Prints a JWT for parleyd (default HS256, valid 24 hours; --ttl 0: no exp)\n"
		"on stdout, and its expiry time on stderr (--quiet: not).\n"
		"exit: 0 ok, 2 usage, 3 runtime error\n");
}

static int json_safe(const char *s)
{
	for (; *s; s++)
		if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
			return 0;
	return 1;
}

static int sign_pkey(const char *alg, const char *keyfile, const char *msg,
		     size_t mlen, unsigned char *sig, size_t *slen)
{
	FILE *f = fopen(keyfile, "r");
	if (!f)
		return -1;
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!k)
		return -1;
	unsigned char der[1024];
	size_t dl = sizeof der;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) == 1 &&
		 EVP_DigestSign(ctx, der, &dl, (const unsigned char *)msg, mlen) == 1;
	EVP_MD_CTX_free(ctx);
	int want_ec = !strcmp(alg, "ES256");
	if (ok && (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC) != want_ec)
		ok = 0; /* key type does not match the algorithm */
	EVP_PKEY_free(k);
	if (!ok)
		return -1;
	if (!want_ec) {
		memcpy(sig, der, dl);
		*slen = dl;
		return 0;
	}
	const unsigned char *p = der;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
	if (!es)
		return -1;
	const BIGNUM *r, *s;
	ECDSA_SIG_get0(es, &r, &s);
	ok = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32;
	ECDSA_SIG_free(es);
	*slen = 64;
	return ok ? 0 : -1;
}

int ctl_token_main(int argc, char **argv)
{
	const char *sub = NULL, *secret = NULL, *secret_file = NULL;
	const char *alg = "HS256", *key = NULL, *iss = NULL, *aud = NULL;
	long long ttl = CTL_TOKEN_TTL_DEFAULT, nbf_in = -1;
	int quiet = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			token_usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
			quiet = 1;
			continue;
		}
		if (!v) {
			token_usage(stderr);
			return 2;
		}
		i++;
		if (!strcmp(a, "--sub"))
			sub = v;
		else if (!strcmp(a, "--secret"))
			secret = v;
		else if (!strcmp(a, "--secret-file"))
			secret_file = v;
		else if (!strcmp(a, "--alg"))
			alg = v;
		else if (!strcmp(a, "--key"))
			key = v;
		else if (!strcmp(a, "--iss"))
			iss = v;
		else if (!strcmp(a, "--aud"))
			aud = v;
		else if (!strcmp(a, "--ttl")) {
			char *end;
			ttl = strtoll(v, &end, 10);
			if (*end || end == v) {
				fprintf(stderr, "parleyctl token: --ttl wants seconds, got '%s'\n", v);
				return 2;
			}
		} else if (!strcmp(a, "--nbf-in"))
			nbf_in = atoll(v);
		else {
			fprintf(stderr, "parleyctl token: unknown option %s\n", a);
			token_usage(stderr);
			return 2;
		}
	}
	int hs = !strcmp(alg, "HS256");
	if (!sub || !*sub || !json_safe(sub) || (iss && !json_safe(iss)) ||
	    (aud && !json_safe(aud)) || ttl < 0 ||
	    (strcmp(alg, "HS256") && strcmp(alg, "RS256") && strcmp(alg, "ES256")) ||
	    (hs && !secret && !secret_file) || (!hs && !key)) {
		token_usage(stderr);
		return 2;
	}
	char sbuf[4096];
	size_t sl = 0;
	if (hs && secret_file) {
		FILE *f = fopen(secret_file, "rb");
		if (!f) {
			fprintf(stderr, "parleyctl token: cannot read the secret file %s: %s "
					"(make run creates parley-data/dev/jwt.secret)\n",
				secret_file, strerror(errno));
			return 3;
		}
		sl = fread(sbuf, 1, sizeof sbuf, f);
		fclose(f);
		while (sl && (sbuf[sl - 1] == '\n' || sbuf[sl - 1] == '\r'))
			sl--;
		secret = sbuf;
	} else if (hs) {
		sl = strlen(secret);
	}
	long long now = (long long)time(NULL);
	char claims[2048];
	int n = snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"iat\":%lld", sub,
			 now);
	if (ttl)
		n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"exp\":%lld",
			      now + ttl);
	if (nbf_in >= 0)
		n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"nbf\":%lld",
			      now + nbf_in);
	if (iss)
		n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"iss\":\"%s\"", iss);
	if (aud)
		n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"aud\":\"%s\"", aud);
	n += snprintf(claims + n, sizeof claims - (size_t)n, "}");
	if (n >= (int)sizeof claims) {
		fprintf(stderr, "parleyctl token: claims too long\n");
		return 2;
	}
	char hdr[64], tok[8192];
	snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
	size_t o = parley_b64url_encode(hdr, strlen(hdr), tok);
	tok[o++] = '.';
	o += parley_b64url_encode(claims, (size_t)n, tok + o);
	unsigned char sig[1024];
	size_t siglen = 0;
	if (hs) {
		unsigned ml = 0;
		if (!HMAC(EVP_sha256(), secret, (int)sl, (const unsigned char *)tok, o,
			  sig, &ml)) {
			fprintf(stderr, "parleyctl token: HMAC failed\n");
			return 3;
		}
		siglen = ml;
	} else if (sign_pkey(alg, key, tok, o, sig, &siglen)) {
		fprintf(stderr, "parleyctl token: cannot sign with %s (%s key?)\n",
			key, alg);
		return 3;
	}
	tok[o++] = '.';
	parley_b64url_encode(sig, siglen, tok + o);
	printf("%s\n", tok);
	if (!quiet) {
		char when[64] = "never (no exp claim)";
		if (ttl) {
			time_t e = (time_t)(now + ttl);
			struct tm tm;
			gmtime_r(&e, &tm);
			strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
		}
		if (ttl)
			fprintf(stderr, "parleyctl token: token for '%s' expires %s (in %lld h %lld min; "
					"--ttl SECONDS to change)\n",
				sub, when, ttl / 3600, ttl % 3600 / 60);
		else
			fprintf(stderr, "parleyctl token: token for '%s' never expires\n", sub);
	}
	return 0;
}
