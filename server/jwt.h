/*
 * jwt.h — JSON Web Token verification for parleyd's AUTH (private to
 * server/). HS256, RS256 and ES256 signatures are checked with OpenSSL;
 * the claims exp, nbf, iss and aud are checked against the configuration
 * and the caller's clock; sub is the user id.
 *
 * Rules (RFC 7519 / 7515 compact serialisation):
 *   - the header's "alg" must be exactly the configured algorithm ("none"
 *     and any other value are refused: no algorithm confusion);
 *   - exp (if present) must be > now - leeway; nbf (if present) must be
 *     <= now + leeway; a configured iss must equal "iss"; a configured aud
 *     must equal "aud" or be one element of an "aud" array;
 *   - sub is required, a string of 1..255 bytes (the caller checks it is a
 *     valid parley user id).
 * Every input byte is untrusted: lengths are bounded (JWT_MAX_TOKEN), JSON
 * nesting is bounded, and nothing is read out of bounds.
 *
 * Ownership: struct jwt_verifier owns its key (EVP_PKEY) and secret copy.
 * Threads: jwt_verify() is reentrant and may run on every loop at once
 * (OpenSSL EVP contexts are created per call).
 */
#ifndef PARLEYD_JWT_H
#define PARLEYD_JWT_H

#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_TOKEN 8192

enum jwt_alg { JWT_HS256 = 1, JWT_RS256 = 2, JWT_ES256 = 3 };

struct jwt_verifier;

/*
 * alg: HS256 with key = the shared secret bytes (>= 16 bytes), or RS256 /
 * ES256 with key = a PEM public key (or certificate). iss/aud may be NULL
 * (not checked). Returns 0 or -PARLEY_EINVAL (bad key, short secret).
 */
int jwt_verifier_new(enum jwt_alg alg, const void *key, size_t keylen,
		     const char *iss, const char *aud, uint32_t leeway_s,
		     struct jwt_verifier **out);
void jwt_verifier_free(struct jwt_verifier *v);
/* "HS256" -> JWT_HS256 ...; 0 when unknown. */
enum jwt_alg jwt_alg_parse(const char *name);

struct jwt_claims {
	char sub[256];
	uint64_t exp_s; /* 0 = no exp */
};

/* 0 and *out, or -PARLEY_EAUTH with a short reason in why. */
int jwt_verify(const struct jwt_verifier *v, const char *tok, size_t len,
	       uint64_t now_s, struct jwt_claims *out, char *why, size_t whycap);

/* Mint an HS256 token (development): returns its length or a negative
 * error. ttl_s 0 = no exp. iss/aud may be NULL. */
int jwt_mint_hs256(const void *secret, size_t slen, const char *sub,
		   const char *iss, const char *aud, uint64_t now_s,
		   uint64_t ttl_s, char *out, size_t cap);

#endif /* PARLEYD_JWT_H */
