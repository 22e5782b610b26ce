/*
 * jwt.h — JSON Web Token verification for parleyd's AUTH (private to
 * server/). HS256, RS256 and ES256 signatures are checked with OpenSSL;
 * the claims exp, nbf, iss and aud are checked against the configuration
 * and the caller's clock; sub is the user id.
 *
 * Rules (RFC 7519 / 7515 compact serialisation):
 *   - the header's "alg" must be exactly the configured algorithm ("none"
 *     and any other value are refused: no algorithm confusion); a header
 *     with "crit" is refused (RFC 7515 4.1.11: this verifier understands
 *     no extension header, so every critical one is unknown);
 *   - header and claims are each one JSON object, parsed by one strict
 *     reader (jwt.c): strings are decoded with explicit lengths and may
 *     not contain U+0000, invalid escapes, lone surrogates or invalid
 *     UTF-8; a member name may appear only once (duplicates refused, RFC
 *     7515 5.2); at most JWT_MAX_MEMBERS members, nesting at most
 *     JWT_MAX_DEPTH deep;
 *   - registered claims must have their RFC 7519 type when present: exp,
 *     nbf, iat are NumericDates (JSON numbers in 0..JWT_MAX_NUMERIC_DATE);
 *     iss, sub, jti are strings; aud is a string or an array of strings.
 *     Header: alg, typ, cty, kid are strings;
 *   - expiry: one predicate, jwt_expired_at(): a token with exp is expired
 *     at t_ms iff t_ms >= exp_ms + leeway. jwt_verify refuses a token that
 *     is expired at `now`, and the connection ends the session at the same
 *     instant (jwt_claims.deadline_ms), so a token accepted is never
 *     "expired" before its deadline;
 *   - nbf (if present) must be <= now + leeway; a configured iss must
 *     equal "iss" byte for byte; a configured aud must equal "aud" or be
 *     one element of an "aud" array;
 *   - sub is required, a string of 1..JWT_MAX_SUB bytes (the caller checks
 *     it is a valid parley user id).
 * Every input byte is untrusted: lengths are bounded (JWT_MAX_TOKEN),
 * nothing is read out of bounds. A rejection's reason (`why`) is a short
 * fixed text (plus a claim name) that never echoes token bytes; it is safe
 * to send to the client that presented the token.
 *
 * Ownership: struct jwt_verifier owns its key (EVP_PKEY) and secret copy.
 * Threads: jwt_verify() is reentrant and may run on every loop at once
 * (OpenSSL EVP contexts are created per call).
 */
#ifndef PARLEYD_JWT_H
#define PARLEYD_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_TOKEN 8192
#define JWT_MAX_SUB 255             /* bytes of sub (and of iss / aud values) */
#define JWT_MAX_MEMBERS 64          /* top-level members of header / claims */
#define JWT_MAX_DEPTH 16            /* nesting of (ignored) nested values */
#define JWT_MAX_NUMERIC_DATE 253402300799.0 /* 9999-12-31T23:59:59Z */

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
	char sub[JWT_MAX_SUB + 1]; /* NUL-terminated, contains no NUL */
	size_t sub_len;            /* == strlen(sub) */
	uint64_t exp_ms;           /* the token's exp in unix ms; 0 = no exp */
	uint64_t deadline_ms;      /* first instant it counts as expired
				    * (exp + leeway); 0 = never */
};

/* The first instant (unix ms) at which a token whose exp is exp_ms counts
 * as expired: exp_ms + leeway (saturating); 0 when exp_ms is 0 (no exp). */
uint64_t jwt_deadline_ms(const struct jwt_verifier *v, uint64_t exp_ms);
/* true iff a token whose exp is exp_ms (0 = none) is expired at now_ms.
 * The one expiry rule: acceptance and session end both use it. */
bool jwt_expired_at(const struct jwt_verifier *v, uint64_t exp_ms,
		    uint64_t now_ms);

/* 0 and *out, or -PARLEY_EAUTH with a short reason in why (see the top;
 * the reasons are listed in docs/PROTOCOL.md). now_ms: unix ms. */
int jwt_verify(const struct jwt_verifier *v, const char *tok, size_t len,
	       uint64_t now_ms, struct jwt_claims *out, char *why,
	       size_t whycap);

/* Mint an HS256 token (development): returns its length or a negative
 * error. ttl_s 0 = no exp. iss/aud may be NULL. */
int jwt_mint_hs256(const void *secret, size_t slen, const char *sub,
		   const char *iss, const char *aud, uint64_t now_s,
		   uint64_t ttl_s, char *out, size_t cap);

#endif /* PARLEYD_JWT_H */
