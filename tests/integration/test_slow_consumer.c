/*
 * test_slow_consumer.c — a device that does not keep up is cut off with
 * GOAWAY SLOW_CONSUMER, and resyncs from its cursor without losing
 * anything; other clients are not affected.
 *
 *   A. never acknowledges (event_window 16, slow_consumer_ms 300): gets at
 *      most one window (+ one engine batch) of events, then GOAWAY
 *      SLOW_CONSUMER, then EOF.
 *   B. never reads (its receive buffer clamped to 4 KiB) while 9 MB of
 *      events pile up (outbound_queue_bytes 256 KiB): the server drops
 *      what it had queued, sends GOAWAY SLOW_CONSUMER next and closes.
 *      The bytes the client does read are whole frames, in inbox order.
 *   Both then resync with libparley from their last processed inbox_seq
 *   and get every remaining event in order. A normal device of the same
 *   user receives everything throughout.
 */
#include "itest.h"

struct raw_read {
	uint64_t events, last_inbox;
	int goaway_reason;
	int eof;
};

/* Read everything until EOF (or 20 s of silence). */
static void raw_drain(int fd, struct raw_read *rr)
{
	static uint8_t buf[1 << 20];
	struct parley_frame f;
	for (;;) {
		int n = it_read_frame(fd, buf, sizeof buf, 20000, &f);
		if (n == 0) {
			rr->eof = 1;
			return;
		}
		IT_CHECK(n > 0, "read failed before EOF");
		struct parley_msg m;
		if (f.type == PARLEY_T_EVENT) {
			IT_OK(parley_proto_decode(&f, &m));
			IT_CHECK(m.event.inbox_seq == rr->last_inbox + 1,
				 "event %" PRIu64 " after %" PRIu64,
				 m.event.inbox_seq, rr->last_inbox);
			IT_CHECK(!rr->goaway_reason, "event after GOAWAY");
			rr->last_inbox = m.event.inbox_seq;
			rr->events++;
		} else if (f.type == PARLEY_T_GOAWAY) {
			IT_OK(parley_proto_decode(&f, &m));
			rr->goaway_reason = m.goaway.reason;
		}
	}
}

static int raw_subscribe(uint16_t port, const char *device, int small_rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	IT_CHECK(fd >= 0);
	if (small_rcvbuf) {
		int sz = 4096;
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	}
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	IT_CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
	IT_CHECK(it_raw_login(fd, "bob", device) == 0);
	struct parley_msg m = {.type = PARLEY_T_SYNC};
	m.sync.from_inbox_seq = 1;
	IT_CHECK(it_send_msg(fd, 3, &m) == 0);
	uint8_t buf[4096];
	struct parley_frame f;
	IT_CHECK(it_read_frame(fd, buf, sizeof buf, 10000, &f) > 0 &&
		 f.type == PARLEY_T_SYNC_OK);
	return fd;
}

static void resync(const struct it_server *srv, const char *device,
		   uint64_t from, uint64_t total)
{
	struct it_events ev = {0};
	struct parley_client *c = it_client(srv, "bob", device, 0, &ev);
	IT_OK(parley_client_subscribe(c, from, NULL));
	uint64_t want = total - from + 1;
	IT_CHECK(it_wait_events(c, &ev, want, 30000) == want,
		 "%s resync got %" PRIu64 " of %" PRIu64, device, ev.n, want);
	for (uint64_t i = 0; i < ev.n; i++)
		IT_CHECK(ev.v[i].inbox_seq == from + i && ev.v[i].conv_seq == from + i);
	parley_client_free(c);
	it_events_free(&ev);
}

int main(void)
{
	it_init("slow_consumer");
	struct it_server srv;
	it_server_init(&srv, "s1");
	srv.extra[0] = "--event-window";
	srv.extra[1] = "16";
	srv.extra[2] = "--slow-consumer-ms";
	srv.extra[3] = "300";
	srv.extra[4] = "--outbound-queue-bytes";
	srv.extra[5] = "262144";
	it_server_start(&srv);

	struct parley_client *alice = it_client(&srv, "alice", "a", 0, NULL);
	IT_OK(parley_client_conv_open(alice, "bob", NULL)); /* SEND needs it */
	struct it_events normal = {0};
	struct parley_client *bn = it_client(&srv, "bob", "bob-normal", 1, &normal);
	IT_OK(parley_client_subscribe(bn, 1, NULL));

	/* ---- A: reads but never acknowledges ---- */
	int fa = raw_subscribe(srv.port, "bob-noack", 0);
	uint64_t total = 0;
	for (int i = 0; i < 40; i++) {
		IT_OK(parley_client_send(alice, "d:alice:bob", 1, "x", 1, NULL));
		total++;
		parley_client_poll(bn, 0);
	}
	struct raw_read ra = {0};
	raw_drain(fa, &ra);
	close(fa);
	IT_CHECK(ra.eof && ra.goaway_reason == PARLEY_GOAWAY_SLOW_CONSUMER,
		 "eof=%d reason=%d", ra.eof, ra.goaway_reason);
	IT_CHECK(ra.events >= 1 && ra.events <= 16 + 64, "events=%" PRIu64,
		 ra.events);
	resync(&srv, "bob-noack", ra.last_inbox + 1, total);

	/* ---- B: stops reading while big events pile up ---- */
	int fb = raw_subscribe(srv.port, "bob-stuck", 1);
	static uint8_t body[60000];
	for (size_t k = 0; k < sizeof body; k++)
		body[k] = (uint8_t)('a' + parley_rng_below(&it_rng, 26));
	for (int i = 0; i < 150; i++) {
		IT_OK(parley_client_send(alice, "d:alice:bob", 1, body, sizeof body,
					 NULL));
		total++;
		for (int k = 0; k < 3; k++)
			parley_client_poll(bn, 0);
	}
	struct raw_read rb = {0};
	raw_drain(fb, &rb);
	close(fb);
	IT_CHECK(rb.eof && rb.goaway_reason == PARLEY_GOAWAY_SLOW_CONSUMER,
		 "eof=%d reason=%d events=%" PRIu64, rb.eof, rb.goaway_reason,
		 rb.events);
	IT_CHECK(rb.events < 150, "a stuck reader got all %" PRIu64, rb.events);
	resync(&srv, "bob-stuck", rb.last_inbox + 1, total);

	/* the normal device got everything, in order */
	IT_CHECK(it_wait_events(bn, &normal, total, 30000) == total,
		 "normal device got %" PRIu64 " of %" PRIu64, normal.n, total);
	for (uint64_t i = 0; i < normal.n; i++)
		IT_CHECK(normal.v[i].conv_seq == i + 1);

	parley_client_free(bn);
	parley_client_free(alice);
	it_events_free(&normal);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	printf("slow_consumer: ok (A got %" PRIu64 " events, B got %" PRIu64 ")\n",
	       ra.events, rb.events);
	return 0;
}
