/*
 * test_lifecycle.c — connection timeouts and the graceful stop.
 *
 *   - handshake timeout: a connection that never says HELLO (or stops in
 *     the middle of it, or never AUTHs) is closed;
 *   - idle timeout: an authenticated connection that stays silent gets
 *     GOAWAY IDLE and is closed, while one that PINGs stays up;
 *   - token expiry: a session outliving its token's exp gets GOAWAY
 *     AUTH_EXPIRED and is closed;
 *   - SIGTERM drain: with SENDs pipelined in flight, parleyd answers every
 *     SEND it accepted (SEND_ACK, or ERROR CLOSED after GOAWAY), sends
 *     GOAWAY DRAIN, closes, and exits 0; after a restart history holds
 *     exactly the acknowledged messages and a subscribed device catches up.
 * Timeouts are configured short; the test only bounds how long it waits.
 */
#include "itest.h"

static int wait_eof(int fd, int *goaway_reason)
{
	uint8_t buf[8192];
	struct parley_frame f;
	for (;;) {
		int n = it_read_frame(fd, buf, sizeof buf, 15000, &f);
		if (n <= 0)
			return n;
		if (f.type == PARLEY_T_GOAWAY && goaway_reason) {
			struct parley_msg m;
			IT_OK(parley_proto_decode(&f, &m));
			*goaway_reason = m.goaway.reason;
		}
	}
}

int main(void)
{
	it_init("lifecycle");
	struct it_server srv;
	it_server_init(&srv, "s1");
	srv.extra[0] = "--handshake-timeout-ms";
	srv.extra[1] = "300";
	srv.extra[2] = "--idle-timeout-ms";
	srv.extra[3] = "800";
	/* the session ends at exp + leeway: keep the token-expiry wait short */
	srv.extra[4] = "--jwt-leeway-s";
	srv.extra[5] = "1";
	it_server_start(&srv);

	/* handshake timeouts: silent, half a HELLO, HELLO but no AUTH */
	int f1 = it_tcp_connect(srv.port);
	int f2 = it_tcp_connect(srv.port);
	IT_CHECK(it_write_all(f2, "\x27\x00\x00", 3) == 0);
	int f3 = it_tcp_connect(srv.port);
	IT_CHECK(it_send_hello(f3, 1, "x", NULL) == 0);
	IT_CHECK(wait_eof(f1, NULL) == 0, "silent connection not closed");
	IT_CHECK(wait_eof(f2, NULL) == 0, "half HELLO not closed");
	IT_CHECK(wait_eof(f3, NULL) == 0, "no AUTH not closed");
	close(f1);
	close(f2);
	close(f3);

	/* idle: one silent, one pinging */
	int quiet = it_tcp_connect(srv.port);
	int busy = it_tcp_connect(srv.port);
	IT_CHECK(it_raw_login(quiet, "alice", "q") == 0);
	IT_CHECK(it_raw_login(busy, "alice", "b") == 0);
	int reason = 0;
	uint8_t buf[8192];
	struct parley_frame f;
	/* keep `busy` alive while `quiet` times out */
	for (int i = 0; i < 200; i++) {
		struct parley_msg p = {.type = PARLEY_T_PING};
		IT_CHECK(it_send_msg(busy, 100 + (uint32_t)i, &p) == 0);
		IT_CHECK(it_read_frame(busy, buf, sizeof buf, 5000, &f) > 0 &&
			 f.type == PARLEY_T_PONG, "pinging connection dropped");
		struct pollfd pf = {.fd = quiet, .events = POLLIN};
		if (poll(&pf, 1, 100) > 0)
			break;
	}
	IT_CHECK(wait_eof(quiet, &reason) == 0);
	IT_CHECK(reason == PARLEY_GOAWAY_IDLE, "reason %d", reason);
	close(quiet);
	close(busy);

	/* token expiry: a session whose token expires gets GOAWAY
	 * AUTH_EXPIRED and is closed */
	{
		struct it_claims cl = {.sub = "alice", .exp_rel_s = 2};
		char *tok = it_token(&cl);
		int ef = it_tcp_connect(srv.port);
		IT_CHECK(it_send_hello(ef, 1, "exp", NULL) == 0);
		IT_CHECK(it_read_frame(ef, buf, sizeof buf, 5000, &f) > 0 &&
			 f.type == PARLEY_T_HELLO_OK);
		struct parley_msg au = {.type = PARLEY_T_AUTH};
		au.auth.token = parley_str_c(tok);
		IT_CHECK(it_send_msg(ef, 2, &au) == 0);
		IT_CHECK(it_read_frame(ef, buf, sizeof buf, 5000, &f) > 0 &&
			 f.type == PARLEY_T_AUTH_OK);
		/* keep it from idling out while the token runs out */
		reason = 0;
		for (int i = 0; i < 100 && !reason; i++) {
			struct parley_msg p = {.type = PARLEY_T_PING};
			if (it_send_msg(ef, 500 + (uint32_t)i, &p))
				break;
			int n = it_read_frame(ef, buf, sizeof buf, 5000, &f);
			if (n <= 0)
				break;
			if (f.type == PARLEY_T_GOAWAY) {
				struct parley_msg g;
				IT_OK(parley_proto_decode(&f, &g));
				reason = g.goaway.reason;
			}
			it_sleep_ms(100);
		}
		IT_CHECK(reason == PARLEY_GOAWAY_AUTH_EXPIRED, "reason %d", reason);
		IT_CHECK(wait_eof(ef, NULL) == 0);
		close(ef);
		free(tok);
	}

	/* ---- SIGTERM with SENDs in flight ---- */
	struct it_events bev = {0};
	struct parley_client *bob = it_client(&srv, "bob", "bob-1", 1, &bev);
	IT_OK(parley_client_conv_open(bob, "alice", NULL)); /* SEND needs it */
	IT_OK(parley_client_subscribe(bob, 1, NULL));
	int fd = it_tcp_connect(srv.port);
	IT_CHECK(it_raw_login(fd, "alice", "a-raw") == 0);
	const int N = 60; /* <= max_inflight (64) */
	for (int i = 0; i < N; i++) {
		struct parley_msg s = {.type = PARLEY_T_SEND};
		s.send.conv = parley_str_c("d:alice:bob");
		s.send.client_msg_id[0] = (uint8_t)i;
		s.send.client_msg_id[1] = 0x5a;
		s.send.body = (struct parley_bytes){(const uint8_t *)"drain", 5};
		IT_CHECK(it_send_msg(fd, 1000 + (uint32_t)i, &s) == 0);
	}
	kill(srv.pid, SIGTERM);
	int acked = 0, closed_err = 0, goaway = 0, answered[60] = {0};
	uint64_t max_seq = 0;
	for (;;) {
		int n = it_read_frame(fd, buf, sizeof buf, 15000, &f);
		if (n == 0)
			break;
		IT_CHECK(n > 0, "no EOF after drain");
		struct parley_msg r;
		IT_OK(parley_proto_decode(&f, &r));
		if (f.type == PARLEY_T_SEND_ACK) {
			IT_CHECK(f.request_id >= 1000 && f.request_id < 1000 + (uint32_t)N);
			IT_CHECK(!answered[f.request_id - 1000]++, "answered twice");
			IT_CHECK(!goaway || 1); /* acks may follow GOAWAY: in-flight */
			acked++;
			if (r.send_ack.seq > max_seq)
				max_seq = r.send_ack.seq;
		} else if (f.type == PARLEY_T_ERROR) {
			IT_CHECK(r.error.code == PARLEY_ECLOSED, "error %u", r.error.code);
			IT_CHECK(goaway, "CLOSED before GOAWAY");
			IT_CHECK(!answered[f.request_id - 1000]++, "answered twice");
			closed_err++;
		} else if (f.type == PARLEY_T_GOAWAY) {
			IT_CHECK(r.goaway.reason == PARLEY_GOAWAY_DRAIN);
			goaway = 1;
		}
	}
	close(fd);
	int st = it_server_stop(&srv, 0, 20000);
	IT_CHECK(st == 0, "exit status %d after SIGTERM", st);
	IT_CHECK(goaway, "no GOAWAY DRAIN");
	/* Frames the server read before the stop are all answered; frames it
	 * had not read yet when it closed are neither (the client retries). */
	IT_CHECK(acked + closed_err <= N);
	IT_CHECK((uint64_t)acked == max_seq, "acked %d max seq %" PRIu64, acked,
		 max_seq);

	it_server_start(&srv);
	struct parley_client *alice = it_client(&srv, "alice", "a", 0, NULL);
	const struct parley_history_page *pg;
	IT_OK(parley_client_history(alice, "d:alice:bob", 0, 100, &pg));
	IT_CHECK(pg->count == (unsigned)acked, "history %u, acked %d", pg->count,
		 acked);
	IT_CHECK(it_wait_events(bob, &bev, (uint64_t)acked, 30000) == (uint64_t)acked,
		 "bob got %" PRIu64 " of %d", bev.n, acked);
	for (uint64_t i = 0; i < bev.n; i++)
		IT_CHECK(bev.v[i].conv_seq == i + 1);
	parley_client_free(alice);
	parley_client_free(bob);
	it_events_free(&bev);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	printf("lifecycle: ok (drain: %d acked, %d refused)\n", acked, closed_err);
	return 0;
}
