/*
 * test_auth.c — token checks at AUTH against a real parleyd.
 *
 * Rejected with ERROR AUTH (fatal; libparley returns -PARLEY_EAUTH):
 * expired, not yet valid (nbf), wrong signature key, wrong audience,
 * wrong issuer, a tampered payload, garbage, an unsigned ("alg":"none")
 * token. Accepted: a valid token. A request before AUTH gets a non-fatal
 * AUTH error and the connection stays usable; a failed AUTH closes it.
 */
#include "itest.h"

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
	struct parley_msg m = {.type = PARLEY_T_HELLO};
	m.hello.min_version = 1;
	m.hello.max_version = 1;
	m.hello.device_id = parley_str_c("raw");
	IT_CHECK(it_send_msg(fd, 1, &m) == 0);
	uint8_t buf[4096];
	struct parley_frame f;
	IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) > 0 &&
		 f.type == PARLEY_T_HELLO_OK);
	m = (struct parley_msg){.type = PARLEY_T_CONV_LIST};
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

	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	printf("auth: ok\n");
	return 0;
}
