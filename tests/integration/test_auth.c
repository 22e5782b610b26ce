/*
 * test_auth.c — token checks at AUTH against a real parleyd.
 *
 * Rejected with ERROR AUTH (fatal; libparley returns -PARLEY_EAUTH):
 * expired, not yet valid (nbf), wrong signature key, wrong audience,
 * wrong issuer, a tampered payload, garbage, an unsigned ("alg":"none")
 * token. Accepted: a valid token. A request before AUTH gets a non-fatal
 * AUTH error and the connection stays usable; a failed AUTH closes it.
 *
 * The claim parser's rules, end to end with validly signed tokens: a sub
 * of "bob\u0000mallory" (which used to log in as bob) and an iss with a
 * NUL suffix are refused, as are exp of the wrong type ("exp":"1000"), a
 * duplicate sub and an unknown crit header; each ERROR text names the
 * reason (docs/PROTOCOL.md). Expiry: a token accepted inside the clock
 * skew leeway stays connected (AUTH_OK expires_ms = exp + leeway) and its
 * GOAWAY AUTH_EXPIRED comes at that instant, not before; the same token
 * is then refused at AUTH as expired.
 */
#include "itest.h"

#define IT_SECRET "it-secret-0123456789-abcdefghijklmnop"

/* An HS256 token with this exact header and claims JSON, validly signed
 * with the server's secret (the JSON may hold escapes it_token cannot). */
static char *signed_token(const char *hdr, const char *claims)
{
	char *tok = malloc(2 * (strlen(hdr) + strlen(claims)) + 128);
	IT_CHECK(tok);
	size_t o = parley_b64url_encode(hdr, strlen(hdr), tok);
	tok[o++] = '.';
	o += parley_b64url_encode(claims, strlen(claims), tok + o);
	uint8_t mac[32];
	unsigned ml = 0;
	HMAC(EVP_sha256(), IT_SECRET, (int)strlen(IT_SECRET), (const uint8_t *)tok,
	     o, mac, &ml);
	tok[o++] = '.';
	parley_b64url_encode(mac, ml, tok + o);
	return tok;
}

#define HS_HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* Claims with the server's iss/aud, exp an hour ahead, and `extra` members
 * (",..."), sub given as raw JSON text. */
static char *claims_token(const char *sub_json, const char *extra)
{
	char cl[1024];
	snprintf(cl, sizeof cl,
		 "{\"sub\":%s,\"iss\":\"parley-it\",\"aud\":\"parley\","
		 "\"exp\":%lld%s}", sub_json, (long long)time(NULL) + 3600, extra);
	return signed_token(HS_HDR, cl);
}

/* HELLO + AUTH on a raw socket. Returns the reply frame type; *r is the
 * decoded reply (its strings point into buf); the socket stays open in *fdp
 * (or is closed when fdp is NULL). */
static uint16_t raw_auth(const struct it_server *s, const char *tok,
			 struct parley_msg *r, uint8_t *buf, size_t cap, int *fdp)
{
	int fd = it_tcp_connect(s->port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_send_hello(fd, 1, "raw", NULL) == 0);
	struct parley_frame f;
	IT_CHECK(it_read_frame(fd, buf, cap, 10000, &f) > 0 &&
		 f.type == PARLEY_T_HELLO_OK);
	struct parley_msg m = (struct parley_msg){.type = PARLEY_T_AUTH};
	m.auth.token = parley_str_c(tok);
	IT_CHECK(it_send_msg(fd, 2, &m) == 0);
	IT_CHECK(it_read_frame(fd, buf, cap, 10000, &f) > 0, "no reply to AUTH");
	IT_OK(parley_proto_decode(&f, r));
	if (fdp)
		*fdp = fd;
	else
		close(fd);
	return f.type;
}

/* The token is refused at AUTH: fatal ERROR AUTH whose text contains
 * `reason`; libparley's connect reports -PARLEY_EAUTH too. */
static void expect_reason(const struct it_server *s, const char *tok,
			  const char *reason, const char *what)
{
	uint8_t buf[4096];
	struct parley_msg r;
	uint16_t t = raw_auth(s, tok, &r, buf, sizeof buf, NULL);
	IT_CHECK(t == PARLEY_T_ERROR, "%s: accepted (reply type 0x%04x, user %.*s)",
		 what, t, t == PARLEY_T_AUTH_OK ? (int)r.auth_ok.user_id.len : 0,
		 t == PARLEY_T_AUTH_OK ? r.auth_ok.user_id.p : "");
	IT_CHECK(r.error.code == PARLEY_EAUTH && (r.error.flags & PARLEY_ERRF_FATAL),
		 "%s: code %u flags %u", what, r.error.code, r.error.flags);
	char text[1100];
	snprintf(text, sizeof text, "%.*s", (int)r.error.text.len, r.error.text.p);
	IT_CHECK(strstr(text, reason), "%s: error text \"%s\" lacks \"%s\"", what,
		 text, reason);
	int err = 0;
	struct parley_client *c = it_client_tok(s, tok, "dev", 0, NULL, &err);
	IT_CHECK(c == NULL && err == -PARLEY_EAUTH, "%s: libparley connect %d",
		 what, err);
}

static void claim_rules(const struct it_server *s)
{
	char *t;
	/* the impersonation token: validly signed, sub "bob\u0000mallory" */
	t = claims_token("\"bob\\u0000mallory\"", "");
	expect_reason(s, t, "NUL in a string", "sub bob\\u0000mallory");
	free(t);
	/* iss "<expected>\u0000suffix" used to pass the issuer check */
	char cl[512];
	snprintf(cl, sizeof cl, "{\"sub\":\"bob\",\"iss\":\"parley-it\\u0000x\","
		 "\"aud\":\"parley\",\"exp\":%lld}", (long long)time(NULL) + 3600);
	t = signed_token(HS_HDR, cl);
	expect_reason(s, t, "NUL in a string", "iss with a NUL suffix");
	free(t);
	/* "exp":"1000" used to be skipped: a token that never expires */
	t = signed_token(HS_HDR, "{\"sub\":\"bob\",\"iss\":\"parley-it\","
			 "\"aud\":\"parley\",\"exp\":\"1000\"}");
	expect_reason(s, t, "claim exp has the wrong type", "exp as a string");
	free(t);
	t = claims_token("[\"bob\"]", "");
	expect_reason(s, t, "claim sub has the wrong type", "sub as an array");
	free(t);
	t = claims_token("\"bob\"", ",\"sub\":\"mallory\"");
	expect_reason(s, t, "duplicate member name", "two subs");
	free(t);
	snprintf(cl, sizeof cl, "{\"sub\":\"bob\",\"iss\":\"parley-it\","
		 "\"aud\":\"parley\",\"exp\":%lld}", (long long)time(NULL) + 3600);
	t = signed_token("{\"alg\":\"HS256\",\"crit\":[\"x-policy\"],"
			 "\"x-policy\":1}", cl);
	expect_reason(s, t, "unsupported critical header", "crit header");
	free(t);
	/* the same claims without crit log in as bob, and only as bob */
	t = signed_token(HS_HDR, cl);
	uint8_t buf[4096];
	struct parley_msg r;
	IT_CHECK(raw_auth(s, t, &r, buf, sizeof buf, NULL) == PARLEY_T_AUTH_OK);
	IT_CHECK(r.auth_ok.user_id.len == 3 && !memcmp(r.auth_ok.user_id.p, "bob", 3));
	free(t);
	/* a valid escape is decoded, not truncated: "b\u006fb" is bob */
	t = claims_token("\"b\\u006fb\"", "");
	IT_CHECK(raw_auth(s, t, &r, buf, sizeof buf, NULL) == PARLEY_T_AUTH_OK);
	IT_CHECK(r.auth_ok.user_id.len == 3 && !memcmp(r.auth_ok.user_id.p, "bob", 3));
	free(t);
}

/* Reasons in the ERROR text for the common failures. */
static void reasons(const struct it_server *s)
{
	struct it_claims cl = {.sub = "alice"};
	char *t;
	cl.exp_rel_s = -3600;
	t = it_token(&cl);
	expect_reason(s, t, "token expired", "expired");
	free(t);
	cl.exp_rel_s = 0;
	cl.secret = "some-other-secret-that-is-long-enough";
	t = it_token(&cl);
	expect_reason(s, t, "bad signature", "wrong key");
	free(t);
	cl.secret = NULL;
	cl.iss = "evil";
	t = it_token(&cl);
	expect_reason(s, t, "wrong issuer", "wrong issuer");
	free(t);
	cl.iss = NULL;
	cl.aud = "other";
	t = it_token(&cl);
	expect_reason(s, t, "wrong audience", "wrong audience");
	free(t);
	expect_reason(s, "garbage", "not a compact JWS", "garbage");
}

/* A token accepted inside the leeway (default 30 s) is not expired at the
 * next tick: its session ends at exp + leeway, announced in AUTH_OK. */
static void leeway_and_expiry(const struct it_server *s)
{
	uint8_t buf[4096];
	struct parley_msg r;
	struct parley_frame f;
	/* exp 5 s ago: inside the leeway */
	long long exp = (long long)time(NULL) - 5;
	char cl[512];
	snprintf(cl, sizeof cl, "{\"sub\":\"lee\",\"iss\":\"parley-it\","
		 "\"aud\":\"parley\",\"exp\":%lld}", exp);
	char *t = signed_token(HS_HDR, cl);
	int fd;
	IT_CHECK(raw_auth(s, t, &r, buf, sizeof buf, &fd) == PARLEY_T_AUTH_OK,
		 "a token inside the leeway was refused");
	IT_CHECK(r.auth_ok.expires_ms == (uint64_t)(exp + 30) * 1000,
		 "expires_ms %" PRIu64 ", want (exp + leeway) * 1000 = %lld",
		 r.auth_ok.expires_ms, (exp + 30) * 1000);
	/* a few timer ticks (100 ms) later the session is still up: a PING
	 * gets its PONG, not GOAWAY AUTH_EXPIRED */
	for (int i = 0; i < 3; i++) {
		it_sleep_ms(300);
		struct parley_msg m = {.type = PARLEY_T_PING};
		m.ping.nonce = 100 + (uint64_t)i;
		IT_CHECK(it_send_msg(fd, 10 + (uint32_t)i, &m) == 0);
		IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) > 0);
		IT_CHECK(f.type == PARLEY_T_PONG, "got frame 0x%04x instead of PONG "
			 "(dropped right after acceptance)", f.type);
	}
	close(fd);
	free(t);

	/* exp 27 s ago: accepted, and the GOAWAY comes at exp + 30 s */
	exp = (long long)time(NULL) - 27;
	snprintf(cl, sizeof cl, "{\"sub\":\"lee\",\"iss\":\"parley-it\","
		 "\"aud\":\"parley\",\"exp\":%lld}", exp);
	t = signed_token(HS_HDR, cl);
	IT_CHECK(raw_auth(s, t, &r, buf, sizeof buf, &fd) == PARLEY_T_AUTH_OK);
	uint64_t deadline = r.auth_ok.expires_ms;
	IT_CHECK(deadline == (uint64_t)(exp + 30) * 1000);
	int got = 0;
	for (int i = 0; i < 60 && !got; i++) {
		struct parley_msg m = {.type = PARLEY_T_PING};
		IT_CHECK(it_send_msg(fd, 20 + (uint32_t)i, &m) == 0);
		int n;
		while (!got && (n = it_read_frame(fd, buf, sizeof buf, 300, &f)) > 0) {
			if (f.type != PARLEY_T_GOAWAY)
				continue; /* PONG */
			uint64_t now = parley_now_ms();
			IT_OK(parley_proto_decode(&f, &r));
			IT_CHECK(r.goaway.reason == PARLEY_GOAWAY_AUTH_EXPIRED,
				 "GOAWAY reason %u", r.goaway.reason);
			IT_CHECK(now >= deadline, "GOAWAY %" PRIu64 " ms before "
				 "exp + leeway", deadline - now);
			got = 1;
		}
		IT_CHECK(got || n != 0, "closed without GOAWAY");
	}
	IT_CHECK(got, "no GOAWAY AUTH_EXPIRED after exp + leeway");
	close(fd);
	/* past exp + leeway the same token is refused at AUTH, consistently */
	expect_reason(s, t, "token expired", "past exp + leeway");
	free(t);
}

static void expect_rejected(const struct it_server *s, const char *tok,
			    const char *what)
{
	int err = 0;
	struct parley_client *c = it_client_tok(s, tok, "dev", (int)(parley_rng_below(&it_rng, 2)), NULL, &err);
	IT_CHECK(c == NULL && err == -PARLEY_EAUTH, "%s: connect returned %d (%s)",
		 what, err, parley_strerror(err));
}

int main(void)
{
	it_init("auth");
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);

	struct it_claims cl = {.sub = "alice"};
	char *tok;

	cl.exp_rel_s = -60;
	tok = it_token(&cl);
	expect_rejected(&srv, tok, "expired");
	free(tok);
	cl.exp_rel_s = 0;

	cl.nbf_rel_s = 3600;
	tok = it_token(&cl);
	expect_rejected(&srv, tok, "not yet valid");
	free(tok);
	cl.nbf_rel_s = 0;

	cl.secret = "some-other-secret-that-is-long-enough";
	tok = it_token(&cl);
	expect_rejected(&srv, tok, "wrong signature");
	free(tok);
	cl.secret = NULL;

	cl.aud = "someone-else";
	tok = it_token(&cl);
	expect_rejected(&srv, tok, "wrong audience");
	free(tok);
	cl.aud = NULL;

	cl.iss = "evil-issuer";
	tok = it_token(&cl);
	expect_rejected(&srv, tok, "wrong issuer");
	free(tok);
	cl.iss = NULL;

	/* tamper: a valid token for alice with the payload swapped for bob's */
	char *ta = it_token(&cl);
	struct it_claims cb = {.sub = "bob"};
	char *tb = it_token(&cb);
	char *a1 = strchr(ta, '.'), *a2 = strchr(a1 + 1, '.');
	char *b1 = strchr(tb, '.'), *b2 = strchr(b1 + 1, '.');
	char tampered[4096];
	snprintf(tampered, sizeof tampered, "%.*s%.*s%s", (int)(a1 - ta), ta,
		 (int)(b2 - b1), b1, a2);
	expect_rejected(&srv, tampered, "tampered payload");
	/* alg none: header {"alg":"none"} with an empty signature */
	char none[4096];
	snprintf(none, sizeof none, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0%.*s.",
		 (int)(b2 - b1), b1);
	expect_rejected(&srv, none, "alg none");
	expect_rejected(&srv, "not-a-jwt", "garbage");
	free(tb);

	/* valid token works (both transports) */
	struct parley_client *c = it_client_tok(&srv, ta, "dev", 0, NULL, NULL);
	IT_CHECK(!strcmp(parley_client_user_id(c), "alice"));
	parley_client_free(c);
	c = it_client_tok(&srv, ta, "dev", 1, NULL, NULL);
	IT_CHECK(!strcmp(parley_client_user_id(c), "alice"));
	parley_client_free(c);
	free(ta);

	/* raw: a request before AUTH is refused but not fatal */
	int fd = it_tcp_connect(srv.port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_send_hello(fd, 1, "raw", NULL) == 0);
	uint8_t buf[4096];
	struct parley_frame f;
	IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) > 0 &&
		 f.type == PARLEY_T_HELLO_OK);
	struct parley_msg m = (struct parley_msg){.type = PARLEY_T_CONV_LIST};
	m.conv_list.limit = 5;
	IT_CHECK(it_send_msg(fd, 2, &m) == 0);
	struct parley_msg r;
	IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) > 0 &&
		 f.type == PARLEY_T_ERROR && f.request_id == 2);
	IT_OK(parley_proto_decode(&f, &r));
	IT_CHECK(r.error.code == PARLEY_EAUTH && !(r.error.flags & PARLEY_ERRF_FATAL));
	/* then a bad token: fatal error and the server closes */
	m = (struct parley_msg){.type = PARLEY_T_AUTH};
	m.auth.token = parley_str_c("x.y.z");
	IT_CHECK(it_send_msg(fd, 3, &m) == 0);
	IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) > 0 &&
		 f.type == PARLEY_T_ERROR && f.request_id == 3);
	IT_OK(parley_proto_decode(&f, &r));
	IT_CHECK(r.error.code == PARLEY_EAUTH && (r.error.flags & PARLEY_ERRF_FATAL));
	IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) == 0, "expected EOF");
	close(fd);

	claim_rules(&srv);
	reasons(&srv);
	leeway_and_expiry(&srv);

	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	printf("auth: ok\n");
	return 0;
}
