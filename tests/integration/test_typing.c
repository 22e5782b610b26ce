/*
 * test_typing.c — typing indicators against a real parleyd (two loops):
 * TYPING -> TYPING_PUSH through server/presence.c.
 *
 * What is proven:
 *   1. alice's TYPING STARTED in d:alice:bob reaches both of bob's online
 *      devices (on different connections, possibly different loops) with
 *      the server's typing TTL; carol (not a member) and alice's own other
 *      device get nothing.
 *   2. Without a refresh, the server ends it: bob receives an explicit
 *      STOPPED (typing_ttl_ms is small here; we wait for the event with a
 *      generous timeout, no durations asserted).
 *   3. An explicit STOPPED is forwarded; closing the typing connection
 *      stops its typing for the receivers.
 *   4. Typing is never stored: bob's HISTORY of the conversation stays
 *      empty and the engine's entry counter does not move.
 *   5. Bad input: typing in a conversation one is not a member of is
 *      ERROR PERM with request_id 0, in a conversation id that does not
 *      exist ERROR NOTFOUND — and libparley reports them through
 *      parley_client_notify_error.
 *   7. Groups: typing in a group reaches every other member's devices
 *      (not the typer's, not a non-member); a non-member typing in it gets
 *      ERROR PERM.
 *   6. Rate limit: a connection sending TYPING faster than its bucket gets
 *      ERROR RATE (request_id 0) with retry_after_ms > 0 for each refused
 *      frame, never a silent drop; /metrics counts kind="typing".
 */
#include "itest.h"

struct seen {
	int started, stopped;
	uint32_t ttl_ms;
	char last_user[64], last_conv[64];
};

static void on_typing(void *user, const struct parley_typing_push *t)
{
	struct seen *s = user;
	if (t->state == PARLEY_TYPING_STARTED) {
		s->started++;
		s->ttl_ms = t->ttl_ms;
	} else {
		s->stopped++;
	}
	snprintf(s->last_user, sizeof s->last_user, "%.*s", (int)t->user.len,
		 t->user.p);
	snprintf(s->last_conv, sizeof s->last_conv, "%.*s", (int)t->conv.len,
		 t->conv.p);
}

static struct parley_client *client(const struct it_server *srv,
				    const char *user, const char *dev,
				    struct seen *s)
{
	struct parley_client_opts cb = {.on_typing = on_typing, .user = s};
	return it_client_cb(srv, user, dev, &cb);
}

/* Poll every client until cond holds or ~timeout_ms passed. */
#define WAIT_FOR(cond, timeout_ms, ...)                                        \
	do {                                                                   \
		for (int _ms = 0; _ms < (timeout_ms) && !(cond); _ms += 20) {  \
			struct parley_client *_cs[] = {__VA_ARGS__};           \
			for (size_t _i = 0; _i < sizeof _cs / sizeof *_cs; _i++)\
				parley_client_poll(_cs[_i], 5);                \
		}                                                              \
	} while (0)

/* Poll for a while (nothing is expected to arrive). */
static void settle(struct parley_client **cs, size_t n, int ms)
{
	for (int t = 0; t < ms; t += 10 * (int)n)
		for (size_t i = 0; i < n; i++)
			parley_client_poll(cs[i], 10);
}

static uint8_t fbuf[1 << 16];

int main(void)
{
	it_init("typing");
	struct it_server srv;
	it_server_init(&srv, "typing");
	srv.extra[0] = "--loops";
	srv.extra[1] = "2";
	srv.extra[2] = "--typing-ttl-ms";
	srv.extra[3] = "1000";
	srv.extra[4] = "--rate-typing-conn-burst";
	srv.extra[5] = "3";
	srv.extra[6] = "--rate-typing-conn-per-min";
	srv.extra[7] = "60";
	it_server_start(&srv);

	struct seen sa1 = {0}, sa2 = {0}, sb1 = {0}, sb2 = {0}, sc = {0};
	struct parley_client *a1 = client(&srv, "alice", "a1", &sa1);
	struct parley_client *a2 = client(&srv, "alice", "a2", &sa2);
	struct parley_client *b1 = client(&srv, "bob", "b1", &sb1);
	struct parley_client *b2 = client(&srv, "bob", "b2", &sb2);
	struct parley_client *cc = client(&srv, "carol", "c1", &sc);
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(a1, "bob", &cv));
	char conv[64];
	snprintf(conv, sizeof conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	IT_CHECK(strcmp(conv, "d:alice:bob") == 0);
	IT_OK(parley_client_conv_open(cc, "alice", NULL));
	/* let the conversation's asynchronous writes (fan-out checkpoint)
	 * finish: then, while nobody disconnects (a disconnect writes
	 * last_seen), nothing but typing happens */
	uint64_t entries0 = 0;
	for (int i = 0; i < 50; i++) {
		it_sleep_ms(100);
		uint64_t e = it_metric_get(srv.admin_port, "parley_engine_entries_total");
		if (e == entries0 && i >= 3)
			break;
		entries0 = e;
	}

	/* 1 + 2: started reaches bob's devices only, then expires */
	IT_OK(parley_client_typing(a1, conv, PARLEY_TYPING_STARTED));
	WAIT_FOR(sb1.started && sb2.started, 15000, a1, a2, b1, b2, cc);
	IT_CHECK(sb1.started == 1 && sb2.started == 1, "bob's devices: %d %d",
		 sb1.started, sb2.started);
	IT_CHECK(strcmp(sb1.last_user, "alice") == 0);
	IT_CHECK(strcmp(sb1.last_conv, conv) == 0);
	IT_CHECK(sb1.ttl_ms == 1000, "ttl %u", sb1.ttl_ms);
	/* a second call right away is coalesced by libparley (nothing sent) */
	IT_OK(parley_client_typing(a1, conv, PARLEY_TYPING_STARTED));
	WAIT_FOR(sb1.stopped && sb2.stopped, 15000, a1, a2, b1, b2, cc);
	IT_CHECK(sb1.stopped == 1 && sb2.stopped == 1,
		 "expiry: explicit STOPPED expected, got %d %d", sb1.stopped,
		 sb2.stopped);
	IT_CHECK(sb1.started == 1, "coalesced refresh was forwarded");
	IT_CHECK(sc.started == 0 && sc.stopped == 0, "carol saw alice typing");
	IT_CHECK(sa2.started == 0 && sa1.started == 0,
		 "alice's own devices saw her typing");
	/* 4 (part): typing wrote nothing */
	IT_CHECK(it_metric_get(srv.admin_port, "parley_engine_entries_total") == entries0,
		 "typing wrote engine entries");

	/* 3: explicit stop, and stop on disconnect */
	IT_OK(parley_client_typing(a2, conv, PARLEY_TYPING_STARTED));
	WAIT_FOR(sb1.started == 2, 15000, a1, a2, b1, b2);
	IT_OK(parley_client_typing(a2, conv, PARLEY_TYPING_STOPPED));
	WAIT_FOR(sb1.stopped == 2, 15000, a1, a2, b1, b2);
	IT_CHECK(sb1.started == 2 && sb1.stopped == 2, "%d %d", sb1.started,
		 sb1.stopped);
	/* a long TTL would hide it: the stop must come from the close */
	IT_OK(parley_client_typing(a2, conv, PARLEY_TYPING_STARTED));
	WAIT_FOR(sb2.started == 3, 15000, a1, a2, b1, b2);
	parley_client_free(a2);
	a2 = NULL;
	WAIT_FOR(sb2.stopped == 3, 15000, a1, b1, b2);
	IT_CHECK(sb2.started == 3 && sb2.stopped == 3, "%d %d", sb2.started,
		 sb2.stopped);

	/* 4: never stored */
	const struct parley_history_page *pg;
	IT_OK(parley_client_history(b1, conv, 0, 10, &pg));
	IT_CHECK(pg->count == 0, "typing stored in history: %u", pg->count);
	IT_CHECK(it_metric_get(srv.admin_port, "parley_typing_pushes_total") >= 6);

	/* 5: not a member / no such conversation */
	IT_OK(parley_client_typing(cc, conv, PARLEY_TYPING_STARTED));
	int ne = 0;
	for (int ms = 0; ms < 15000 && !ne; ms += 20) {
		parley_client_poll(cc, 20);
		ne = parley_client_notify_error(cc, NULL);
	}
	IT_CHECK(ne == -PARLEY_EPERM, "non-member typing: %d", ne);
	IT_OK(parley_client_typing(cc, "x:no-such-conv", PARLEY_TYPING_STARTED));
	ne = 0;
	for (int ms = 0; ms < 15000 && !ne; ms += 20) {
		parley_client_poll(cc, 20);
		ne = parley_client_notify_error(cc, NULL);
	}
	IT_CHECK(ne == -PARLEY_ENOTFOUND, "unknown conversation: %d", ne);
	struct parley_client *none[] = {b1, b2};
	settle(none, 2, 300);
	IT_CHECK(sb1.started == 3 && sb2.started == 3,
		 "a refused TYPING was forwarded");

	/* 7: a group: alice, bob, carol; dave is not in it */
	{
		const char *members[] = {"bob", "carol"};
		const struct parley_group_ok *gok;
		IT_OK(parley_client_group_create(a1, "team", 0, members, 2, &gok));
		char gconv[PARLEY_PROTO_MAX_CONV_ID + 1];
		snprintf(gconv, sizeof gconv, "%.*s", (int)gok->conv.len, gok->conv.p);
		struct seen sd = {0};
		struct parley_client *dd = client(&srv, "dave", "d1", &sd);
		int b0 = sb1.started, c0 = sc.started;
		IT_OK(parley_client_typing(a1, gconv, PARLEY_TYPING_STARTED));
		WAIT_FOR(sb1.started > b0 && sb2.started > b0 && sc.started > c0,
			 15000, a1, b1, b2, cc, dd);
		IT_CHECK(sb1.started == b0 + 1 && sc.started == c0 + 1,
			 "group typing: bob %d carol %d", sb1.started - b0,
			 sc.started - c0);
		IT_CHECK(strcmp(sc.last_conv, gconv) == 0 &&
			 strcmp(sc.last_user, "alice") == 0);
		IT_CHECK(sd.started == 0 && sa1.started == 0,
			 "a non-member or the typer saw group typing");
		IT_OK(parley_client_typing(dd, gconv, PARLEY_TYPING_STARTED));
		int ge = 0;
		for (int ms = 0; ms < 15000 && !ge; ms += 20) {
			parley_client_poll(dd, 20);
			ge = parley_client_notify_error(dd, NULL);
		}
		IT_CHECK(ge == -PARLEY_EPERM, "non-member typing in a group: %d", ge);
		parley_client_free(dd);
	}

	/* 6: rate limit on a raw connection (no client-side coalescing):
	 * burst 3, then every frame is refused with RATE + retry-after */
	int fd = it_tcp_connect(srv.port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_raw_login(fd, "carol", "raw") == 0);
	const int N = 8;
	for (int i = 0; i < N; i++) {
		struct parley_msg m = {.type = PARLEY_T_TYPING};
		m.typing.conv = parley_str_c("d:alice:carol");
		m.typing.state = i % 2 ? PARLEY_TYPING_STOPPED
				       : PARLEY_TYPING_STARTED;
		IT_CHECK(it_send_msg(fd, 0, &m) == 0);
	}
	struct parley_msg ping = {.type = PARLEY_T_PING};
	ping.ping.nonce = 77;
	IT_CHECK(it_send_msg(fd, 5, &ping) == 0);
	int rate = 0, other = 0;
	for (;;) {
		struct parley_frame f;
		int n = it_read_frame(fd, fbuf, sizeof fbuf, 15000, &f);
		IT_CHECK(n > 0, "no PONG after the TYPING burst");
		if (f.type == PARLEY_T_PONG)
			break;
		if (f.type != PARLEY_T_ERROR)
			continue;
		static struct parley_msg e;
		IT_OK(parley_proto_decode(&f, &e));
		IT_CHECK(f.request_id == 0);
		if (e.error.code == PARLEY_ERATE) {
			IT_CHECK(e.error.retry_after_ms > 0);
			rate++;
		} else {
			other++;
		}
	}
	/* the bucket refills 1/s: over a slow machine's run at most a few
	 * more than the burst pass; every refused one was answered */
	IT_CHECK(rate >= 1 && rate <= N - 3 && other == 0,
		 "RATE errors %d (other %d) for %d frames, burst 3", rate,
		 other, N);
	IT_CHECK(it_metric_get(srv.admin_port,
			"parley_rate_limited_total{kind=\"typing\"}") ==
			 (uint64_t)rate,
		 "metrics typing refusals");
	close(fd);

	parley_client_free(a1);
	parley_client_free(b1);
	parley_client_free(b2);
	parley_client_free(cc);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 30000) == 0);
	it_cleanup();
	printf("typing: ok\n");
	return 0;
}
