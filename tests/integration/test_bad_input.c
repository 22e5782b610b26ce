/*
 * test_bad_input.c — malformed and oversized input never crashes parleyd
 * nor disturbs other clients.
 *
 * Framing errors (the stream can no longer be trusted) get a fatal ERROR
 * and a close: first frame not HELLO, length < 8, unknown flag bit, a
 * frame over max_frame. Payload errors on a well-framed frame get a
 * non-fatal ERROR with the request's id and the connection keeps working:
 * truncated SEND, unknown request type, body over max_body, EVENT_ACK
 * without SYNC. Then seeded random garbage on many connections. Then the
 * conversation rules: SEND to a never-opened conversation is NOTFOUND,
 * CONV_OPEN with a peer that is not a user id (`--help`, `a:b`, ...) or
 * with oneself is INVAL, and neither creates anything. Between
 * every case alice and bob exchange a message, and at the end parleyd must
 * exit 0 on SIGTERM (it did not crash).
 */
#include "itest.h"

static struct parley_client *alice, *bob;
static struct it_events bob_ev;
static uint64_t exchanged;

static void exchange(void)
{
	char body[32];
	snprintf(body, sizeof body, "still here %" PRIu64, exchanged);
	struct parley_send_result r;
	IT_OK(parley_client_send(alice, "d:alice:bob", 1, body, strlen(body), &r));
	exchanged++;
	IT_CHECK(r.seq == exchanged);
	IT_CHECK(it_wait_events(bob, &bob_ev, exchanged, 20000) == exchanged);
	IT_CHECK(bob_ev.v[exchanged - 1].conv_seq == exchanged);
}

/* Read frames until an ERROR for rid arrives; returns its decoded fields. */
static void expect_error(int fd, uint32_t rid, uint32_t code, int fatal)
{
	uint8_t buf[70000];
	struct parley_frame f;
	for (;;) {
		int n = it_read_frame(fd, buf, sizeof buf, 10000, &f);
		IT_CHECK(n > 0, "no ERROR frame (rid %u code %u), got %d", rid, code, n);
		if (f.type != PARLEY_T_ERROR)
			continue;
		struct parley_msg m;
		IT_OK(parley_proto_decode(&f, &m));
		IT_CHECK(f.request_id == rid && m.error.code == code,
			 "rid %u code %u, want rid %u code %u", f.request_id,
			 m.error.code, rid, code);
		IT_CHECK(!!(m.error.flags & PARLEY_ERRF_FATAL) == fatal);
		break;
	}
	if (fatal)
		IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) == 0,
			 "no close after fatal error");
}

static void expect_pong(int fd)
{
	struct parley_msg m = {.type = PARLEY_T_PING};
	m.ping.nonce = 0xfeed;
	IT_CHECK(it_send_msg(fd, 77, &m) == 0);
	uint8_t buf[4096];
	struct parley_frame f;
	IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) > 0);
	IT_CHECK(f.type == PARLEY_T_PONG && f.request_id == 77, "type %#x",
		 f.type);
}

static void raw_bytes_case(uint16_t port, const uint8_t *b, size_t n,
			   uint32_t code)
{
	int fd = it_tcp_connect(port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_write_all(fd, b, n) == 0);
	expect_error(fd, 0, code, 1);
	close(fd);
}

int main(void)
{
	it_init("bad_input");
	struct it_server srv;
	it_server_init(&srv, "s1");
	/* a TLS record header promising more bytes than we send keeps the
	 * handshake waiting: the handshake timeout is what closes it */
	srv.extra[0] = "--handshake-timeout-ms";
	srv.extra[1] = "1500";
	it_server_start(&srv);
	alice = it_client(&srv, "alice", "a", 0, NULL);
	bob = it_client(&srv, "bob", "b", 1, &bob_ev);
	IT_OK(parley_client_conv_open(alice, "bob", NULL));
	IT_OK(parley_client_subscribe(bob, 1, NULL));
	exchange();

	uint8_t hdr[16];
	/* 1. first frame is not HELLO */
	{
		int fd = it_tcp_connect(srv.port);
		struct parley_msg m = {.type = PARLEY_T_PING};
		IT_CHECK(it_send_msg(fd, 5, &m) == 0);
		expect_error(fd, 5, PARLEY_EPROTO, 1);
		close(fd);
	}
	exchange();
	/* 2. length < 8 */
	le_put32(hdr, 4);
	memset(hdr + 4, 0, 8);
	raw_bytes_case(srv.port, hdr, 12, PARLEY_EPROTO);
	exchange();
	/* 3. unknown flag bit */
	parley_proto_header_put(hdr, PARLEY_T_HELLO, 0x0100, 1, 0);
	raw_bytes_case(srv.port, hdr, 12, PARLEY_EPROTO);
	exchange();
	/* 4. a frame over 1 MiB before HELLO_OK: known from 4 bytes */
	le_put32(hdr, 2u << 20);
	raw_bytes_case(srv.port, hdr, 4, PARLEY_ETOOBIG);
	exchange();

	/* logged-in raw connection for payload errors */
	int fd = it_tcp_connect(srv.port);
	IT_CHECK(fd >= 0 && it_raw_login(fd, "carol", "c") == 0);
	/* 5. truncated SEND payload */
	{
		uint8_t f[12 + 5];
		parley_proto_header_put(f, PARLEY_T_SEND, 0, 10, 5);
		memcpy(f + 12, "\x0b\x00d:a", 5);
		IT_CHECK(it_write_all(fd, f, sizeof f) == 0);
		expect_error(fd, 10, PARLEY_EPROTO, 0);
		expect_pong(fd);
	}
	exchange();
	/* 6. unknown and reserved request types */
	{
		uint8_t f[12];
		parley_proto_header_put(f, 0x0123, 0, 11, 0);
		IT_CHECK(it_write_all(fd, f, sizeof f) == 0);
		expect_error(fd, 11, PARLEY_EPROTO, 0);
		parley_proto_header_put(f, PARLEY_T_READ_MARKER, 0, 12, 0);
		IT_CHECK(it_write_all(fd, f, sizeof f) == 0);
		expect_error(fd, 12, PARLEY_EPROTO, 0);
		expect_pong(fd);
	}
	/* 7. body over max_body (65536 by default) */
	{
		static uint8_t big[70000];
		struct parley_msg m = {.type = PARLEY_T_SEND};
		m.send.conv = parley_str_c("d:carol:dave");
		m.send.body = (struct parley_bytes){big, 65537};
		uint8_t *fr = malloc(80000);
		int n = parley_proto_encode(fr, 80000, 13, &m);
		IT_CHECK(n > 0);
		IT_CHECK(it_write_all(fd, fr, (size_t)n) == 0);
		free(fr);
		expect_error(fd, 13, PARLEY_ETOOBIG, 0);
		/* not a member / no such conversation */
		m.send.body = (struct parley_bytes){big, 1};
		m.send.conv = parley_str_c("d:alice:bob");
		IT_CHECK(it_send_msg(fd, 14, &m) == 0);
		expect_error(fd, 14, PARLEY_EPERM, 0);
		m.send.conv = parley_str_c("d:zed:carol"); /* not canonical order */
		IT_CHECK(it_send_msg(fd, 15, &m) == 0);
		expect_error(fd, 15, PARLEY_ENOTFOUND, 0);
		expect_pong(fd);
	}
	/* 8. EVENT_ACK without SYNC: error with request_id 0, not fatal */
	{
		struct parley_msg m = {.type = PARLEY_T_EVENT_ACK};
		m.event_ack.up_to_inbox_seq = 5;
		IT_CHECK(it_send_msg(fd, 0, &m) == 0);
		expect_error(fd, 0, PARLEY_EINVAL, 0);
		expect_pong(fd);
	}
	exchange();
	/* 9. a frame over max_frame after HELLO_OK: fatal */
	le_put32(hdr, 20u << 20);
	IT_CHECK(it_write_all(fd, hdr, 4) == 0);
	expect_error(fd, 0, PARLEY_ETOOBIG, 1);
	close(fd);
	exchange();

	/* 10. plaintext and garbage on the TLS port: the handshake fails and
	 * the server closes (after its alert), or, for a plausible record
	 * header waiting for more bytes, the handshake timeout closes it */
	for (int i = 0; i < 6; i++) {
		int t = it_tcp_connect(srv.tls_port);
		IT_CHECK(t >= 0);
		if (i == 0) {
			(void)it_send_hello(t, 1, "plain-on-tls", NULL);
		} else {
			uint8_t junk[700];
			for (size_t k = 0; k < sizeof junk; k++)
				junk[k] = (uint8_t)parley_rng_next(&it_rng);
			if (i % 2) { /* looks like a TLS handshake record */
				junk[0] = 0x16;
				junk[1] = 3;
				junk[2] = 1;
			}
			(void)it_write_all(t, junk, sizeof junk);
		}
		uint8_t buf[4096];
		int eof = 0;
		for (int k = 0; k < 20 && !eof; k++) {
			struct pollfd pf = {.fd = t, .events = POLLIN};
			if (poll(&pf, 1, 10000) <= 0)
				break;
			ssize_t n = recv(t, buf, sizeof buf, 0);
			eof = n <= 0;
		}
		IT_CHECK(eof, "TLS port kept a garbage connection open");
		close(t);
	}
	exchange();

	/* 11. seeded random garbage, some starting with a valid HELLO */
	for (int i = 0; i < 40; i++) {
		int g = it_tcp_connect(srv.port);
		IT_CHECK(g >= 0);
		if (i % 2 && it_raw_login(g, "mallory", "m") != 0)
			IT_CHECK(0, "login failed");
		uint8_t junk[2048];
		size_t n = 1 + parley_rng_below(&it_rng, sizeof junk);
		for (size_t k = 0; k < n; k++)
			junk[k] = (uint8_t)parley_rng_next(&it_rng);
		if (i % 4 == 1) { /* plausible header, random payload */
			uint16_t types[] = {PARLEY_T_SEND, PARLEY_T_HISTORY,
					    PARLEY_T_SYNC, PARLEY_T_CONV_OPEN,
					    PARLEY_T_CONV_LIST, PARLEY_T_AUTH};
			n = PARLEY_MIN(n, 1000);
			parley_proto_header_put(junk, types[i % 6], 0, 3,
						(uint32_t)n - 12);
		}
		(void)it_write_all(g, junk, n);
		if (i % 3 == 0) { /* half-written frame, then vanish */
			close(g);
			continue;
		}
		uint8_t buf[4096];
		struct parley_frame f;
		for (int k = 0; k < 50; k++)
			if (it_read_frame(g, buf, sizeof buf, 200, &f) <= 0)
				break;
		close(g);
	}
	exchange();

	/* Conversations (issue 9): a SEND to a conversation nobody opened is
	 * NOTFOUND and creates nothing; CONV_OPEN with a peer that is not a
	 * user id, or with oneself, is INVAL and lists nothing. */
	{
		int g = it_tcp_connect(srv.port);
		IT_CHECK(g >= 0 && it_raw_login(g, "dave", "d") == 0);
		struct parley_msg m = {.type = PARLEY_T_SEND};
		m.send.conv = parley_str_c("d:dave:erin");
		m.send.client_msg_id[0] = 0x42;
		m.send.body = (struct parley_bytes){(const uint8_t *)"hi", 2};
		IT_CHECK(it_send_msg(g, 30, &m) == 0);
		expect_error(g, 30, PARLEY_ENOTFOUND, 0);
		static const char *bad_peers[] = {"--help", "dave", "a:b", "-x",
						  "a b", "caf\xc3\xa9", ".x"};
		for (uint32_t i = 0; i < sizeof bad_peers / sizeof *bad_peers; i++) {
			m = (struct parley_msg){.type = PARLEY_T_CONV_OPEN};
			m.conv_open.peer = parley_str_c(bad_peers[i]);
			IT_CHECK(it_send_msg(g, 40 + i, &m) == 0);
			expect_error(g, 40 + i, PARLEY_EINVAL, 0);
		}
		/* still NOTFOUND (the failed attempts created nothing), and
		 * dave's conversation list is empty */
		m = (struct parley_msg){.type = PARLEY_T_SEND};
		m.send.conv = parley_str_c("d:dave:erin");
		m.send.client_msg_id[0] = 0x43;
		IT_CHECK(it_send_msg(g, 50, &m) == 0);
		expect_error(g, 50, PARLEY_ENOTFOUND, 0);
		m = (struct parley_msg){.type = PARLEY_T_CONV_LIST};
		m.conv_list.limit = 100;
		IT_CHECK(it_send_msg(g, 51, &m) == 0);
		uint8_t buf[4096];
		struct parley_frame f;
		IT_CHECK(it_read_frame(g, buf, sizeof buf, 10000, &f) > 0 &&
			 f.type == PARLEY_T_CONV_LIST_OK);
		static struct parley_msg lm;
		IT_OK(parley_proto_decode(&f, &lm));
		IT_CHECK(lm.conv_list_ok.count == 0, "dave lists %u conversations",
			 lm.conv_list_ok.count);
		/* once opened, the same SEND works */
		m = (struct parley_msg){.type = PARLEY_T_CONV_OPEN};
		m.conv_open.peer = parley_str_c("erin");
		IT_CHECK(it_send_msg(g, 52, &m) == 0);
		IT_CHECK(it_read_frame(g, buf, sizeof buf, 10000, &f) > 0 &&
			 f.type == PARLEY_T_CONV);
		m = (struct parley_msg){.type = PARLEY_T_SEND};
		m.send.conv = parley_str_c("d:dave:erin");
		m.send.client_msg_id[0] = 0x44;
		IT_CHECK(it_send_msg(g, 53, &m) == 0);
		IT_CHECK(it_read_frame(g, buf, sizeof buf, 10000, &f) > 0 &&
			 f.type == PARLEY_T_SEND_ACK && f.request_id == 53);
		close(g);
	}
	/* libparley refuses a bad peer before it reaches the wire */
	IT_CHECK(parley_client_conv_open(alice, "--help", NULL) == -PARLEY_EINVAL);
	exchange();

	parley_client_free(alice);
	parley_client_free(bob);
	int st = it_server_stop(&srv, SIGTERM, 20000);
	IT_CHECK(st == 0, "parleyd exit status %d", st);
	printf("bad_input: ok\n");
	return 0;
}
