/*
 * test_partial_frame.c — a frame must arrive whole within frame_timeout_ms
 * of its first byte, whatever trickles in meanwhile, and partial frames
 * count against the memory budget.
 *
 * 200 authenticated connections each start a 1 MiB frame (the negotiated
 * max_frame), send IT_BODY bytes of it, then one more byte every 200 ms
 * (which kept the idle timer from ever firing). Server: frame_timeout_ms
 * 2000, memory_budget_bytes 32 MiB. Every connection must get a fatal
 * ERROR TIMEDOUT and be closed, and the server's VmHWM must stay within
 * VmRSS before the clients + IT_RSS_BOUND_KB (the 32 MiB budget + 32 MiB
 * of slack for what reading overshoots and struct conn). Before the
 * deadline existed the 200 partial frames stayed forever (200 x 768 KiB =
 * 150 MiB). A normal client on the same server works throughout.
 */
#include "itest.h"

#define IT_CONNS 200
#define IT_BODY (768u << 10)
#define IT_RSS_BOUND_KB (64L << 10) /* 64 MiB */

struct tconn {
	struct it_rx rx;
	size_t sent;         /* of header + IT_BODY */
	uint64_t next_drip;  /* ms */
};

static uint8_t body[IT_BODY];

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pump(struct tconn *c, uint64_t now)
{
	uint8_t hdr[PARLEY_PROTO_HEADER_SIZE];
	le_put32(hdr, (1u << 20) - 4); /* whole frame: exactly max_frame */
	le_put16(hdr + 4, PARLEY_T_SEND);
	le_put16(hdr + 6, 0);
	le_put32(hdr + 8, 7);
	if (it_send_rest(c->rx.fd, hdr, sizeof hdr, body, IT_BODY, &c->sent) <= 0)
		return; /* full (the server is not reading) or closed */
	if (now >= c->next_drip) { /* one more byte of the same frame */
		uint8_t b = 'x';
		if (send(c->rx.fd, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
			c->sent++;
		c->next_drip = now + 200;
	}
}

int main(void)
{
	it_init("partial_frame");
	for (size_t i = 0; i < sizeof body; i++)
		body[i] = (uint8_t)parley_rng_next(&it_rng);
	struct it_server srv;
	it_server_init(&srv, "s1");
	srv.extra[0] = "--frame-timeout-ms";
	srv.extra[1] = "2000";
	srv.extra[2] = "--memory-budget-bytes";
	srv.extra[3] = "33554432";
	it_server_start(&srv);
	struct parley_client *alice = it_client(&srv, "alice", "a", 0, NULL);
	IT_OK(parley_client_conv_open(alice, "bob", NULL)); /* SEND needs it */

	static struct tconn cs[IT_CONNS];
	for (int i = 0; i < IT_CONNS; i++) {
		cs[i].rx.fd = it_tcp_connect(srv.port);
		IT_CHECK(cs[i].rx.fd >= 0);
		char dev[32];
		snprintf(dev, sizeof dev, "trickle-%d", i);
		IT_CHECK(it_raw_login(cs[i].rx.fd, "mallory", dev) == 0);
		it_nonblock(cs[i].rx.fd);
	}
	long rss0 = it_proc_kb(srv.pid, "VmRSS:");
	IT_CHECK(rss0 > 0);

	static struct pollfd pf[IT_CONNS];
	int open_n = IT_CONNS, sends_ok = 0;
	/* bounded wait (90 s), no assertion on time */
	uint64_t start = mono_ms();
	while (open_n > 0 && mono_ms() - start < 90000) {
		uint64_t now = mono_ms();
		for (int i = 0; i < IT_CONNS; i++) {
			if (!cs[i].rx.eof && !cs[i].rx.got_error)
				pump(&cs[i], now);
			pf[i].fd = cs[i].rx.eof ? -1 : cs[i].rx.fd;
			pf[i].events = POLLIN;
			pf[i].revents = 0;
		}
		IT_CHECK(poll(pf, IT_CONNS, 50) >= 0);
		for (int i = 0; i < IT_CONNS; i++)
			if (!cs[i].rx.eof && (pf[i].revents & (POLLIN | POLLHUP | POLLERR))) {
				it_rx_read(&cs[i].rx, false);
				open_n -= cs[i].rx.eof;
			}
		/* the server keeps serving a well-behaved client meanwhile */
		if (parley_client_send(alice, "d:alice:bob", 1, "hi", 2, NULL) == 0)
			sends_ok++;
	}
	long hwm = it_proc_kb(srv.pid, "VmHWM:");
	int errors = 0, closed = 0;
	for (int i = 0; i < IT_CONNS; i++) {
		errors += it_rx_refused(&cs[i].rx, PARLEY_ETIMEDOUT);
		closed += cs[i].rx.eof;
		close(cs[i].rx.fd);
	}
	printf("partial_frame: %d/%d fatal TIMEDOUT, %d/%d closed, %d sends by "
	       "a normal client; VmRSS before %ld KiB, VmHWM %ld KiB (+%ld KiB)\n",
	       errors, IT_CONNS, closed, IT_CONNS, sends_ok, rss0, hwm, hwm - rss0);
	fflush(stdout);
	IT_CHECK(errors == IT_CONNS, "only %d connections got a fatal TIMEDOUT",
		 errors);
	IT_CHECK(closed == IT_CONNS, "only %d connections were closed", closed);
	IT_CHECK(sends_ok > 0, "the normal client could not send");
	if (IT_SANITIZED)
		printf("partial_frame: sanitizer build: memory bound not checked\n");
	IT_CHECK(IT_SANITIZED || hwm - rss0 < IT_RSS_BOUND_KB,
		 "server memory grew by %ld KiB (bound %ld KiB)", hwm - rss0,
		 IT_RSS_BOUND_KB);
	IT_OK(parley_client_ping(alice));
	parley_client_free(alice);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	printf("partial_frame: ok\n");
	return 0;
}
