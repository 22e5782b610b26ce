/*
 * test_admin_slow.c — the admin HTTP port cannot be stalled by its clients.
 *
 * Part 1 (slow loris): ten clients each send a request one byte about
 * every second (from a thread that keeps dribbling) and five more sit
 * idle on open sockets. While all of them are still connected, /livez,
 * /readyz and /metrics must each get a correct answer. The client-side
 * wait is 10 s: a server that serves one connection at a time with a
 * per-read timeout needs >= 2 s per slow client (and never finishes with
 * one that keeps dribbling), so only a blocked server fails; no duration
 * is asserted. The request deadline is raised to 60 s for this part
 * (PARLEY_ADMIN_REQUEST_TIMEOUT_MS) so the slow clients are certainly
 * still connected when the probes are answered, which the test checks.
 *
 * Part 2 (bounds, admin_request_timeout_ms 3000, admin_max_connections
 * 4): a client that keeps sending a byte every 200 ms still gets 408 (the
 * deadline is for the whole request, not reset by each byte); an idle one
 * gets 408 too; with 4 idle connections open, a probe evicts the oldest
 * (503) and is answered; 431 for a request over 4 KiB; 400, 404, 405 and
 * HEAD; the admin counters on /metrics moved.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "itest.h"

#define SLOW 10
#define IDLE 5

static const char SLOW_REQ[] = "GET /livez HTTP/1.1\r\nHost: slow\r\n"
			       "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";

struct dribble {
	int *fds;
	int n;
	unsigned interval_ms;
	size_t max_bytes;          /* never send the whole request */
	atomic_int stop;
	atomic_int rounds;         /* completed rounds = bytes sent to each */
};

static void *dribbler(void *arg)
{
	struct dribble *d = arg;
	for (size_t i = 0; !d->stop && i < d->max_bytes; i++) {
		for (int k = 0; k < d->n; k++)
			if (d->fds[k] >= 0 &&
			    send(d->fds[k], SLOW_REQ + i, 1, MSG_NOSIGNAL) != 1)
				d->fds[k] = -1 - d->fds[k]; /* closed by the server */
		d->rounds++;
		for (unsigned t = 0; t < d->interval_ms && !d->stop; t += 10)
			it_sleep_ms(10);
	}
	return NULL;
}

/* The server has not closed fd (nothing to read, no EOF). */
static int still_open(int fd)
{
	char c;
	ssize_t k = recv(fd, &c, 1, MSG_DONTWAIT);
	return k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Waits (bounded) for the server's answer on fd and returns its status. */
static int wait_status(int fd, int timeout_ms)
{
	char buf[512];
	size_t n = 0;
	for (;;) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, timeout_ms) <= 0)
			return -1;
		ssize_t k = recv(fd, buf + n, sizeof buf - 1 - n, 0);
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	buf[n] = '\0';
	int code = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
		return 0; /* closed without an answer */
	return code;
}

static void slow_loris(void)
{
	setenv("PARLEY_ADMIN_REQUEST_TIMEOUT_MS", "60000", 1);
	struct it_server srv;
	it_server_init(&srv, "loris");
	it_server_start(&srv);
	unsetenv("PARLEY_ADMIN_REQUEST_TIMEOUT_MS");

	int slow[SLOW], idle[IDLE];
	for (int i = 0; i < SLOW; i++)
		IT_CHECK((slow[i] = it_tcp_connect(srv.admin_port)) >= 0);
	for (int i = 0; i < IDLE; i++)
		IT_CHECK((idle[i] = it_tcp_connect(srv.admin_port)) >= 0);
	int dfds[SLOW];
	memcpy(dfds, slow, sizeof dfds);
	struct dribble d = {.fds = dfds, .n = SLOW, .interval_ms = 1000,
			    .max_bytes = sizeof SLOW_REQ - 3};
	pthread_t thr;
	IT_CHECK(pthread_create(&thr, NULL, dribbler, &d) == 0);
	while (d.rounds < 2)
		it_sleep_ms(20);
	/* every slow client has sent bytes and keeps sending: probe */
	int code;
	for (int round = 0; round < 3; round++) {
		char *out = it_http_get(srv.admin_port, "/livez", &code);
		IT_CHECK(code == 200 && strstr(out, "\r\n\r\nok\n"), "livez: %s", out);
		free(out);
	}
	char *out = it_http_get(srv.admin_port, "/metrics", &code);
	IT_CHECK(code == 200 && strstr(out, "parley_connections_open"));
	free(out);
	for (int i = 0; i < 50; i++) {
		out = it_http_get(srv.admin_port, "/readyz", &code);
		free(out);
		if (code == 200)
			break;
		it_sleep_ms(50);
	}
	IT_CHECK(code == 200, "readyz %d", code);
	/* the probes were answered while the slow clients were connected */
	for (int i = 0; i < SLOW; i++)
		IT_CHECK(still_open(slow[i]), "slow client %d was disconnected", i);
	for (int i = 0; i < IDLE; i++)
		IT_CHECK(still_open(idle[i]), "idle client %d was disconnected", i);
	d.stop = 1;
	pthread_join(thr, NULL);
	for (int i = 0; i < SLOW; i++) /* no send of the dribbler failed */
		IT_CHECK(dfds[i] >= 0, "slow client %d was disconnected", i);
	/* a slow client that finishes its request is answered too */
	for (int i = 0; i < SLOW; i++) {
		const char *rest = SLOW_REQ + d.rounds;
		IT_CHECK(it_write_all(slow[i], rest, strlen(rest)) == 0);
		IT_CHECK(wait_status(slow[i], 10000) == 200, "slow client %d", i);
		close(slow[i]);
	}
	for (int i = 0; i < IDLE; i++)
		close(idle[i]);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
}

static void bounds(void)
{
	struct it_server srv;
	it_server_init(&srv, "bounds");
	srv.extra[0] = "--admin-request-timeout-ms";
	srv.extra[1] = "3000";
	srv.extra[2] = "--admin-max-connections";
	srv.extra[3] = "4";
	it_server_start(&srv);
	int code;

	/* the deadline is for the whole request: a byte every 200 ms does
	 * not extend it */
	int fd = it_tcp_connect(srv.admin_port);
	IT_CHECK(fd >= 0);
	int dfd = fd;
	struct dribble d = {.fds = &dfd, .n = 1, .interval_ms = 200,
			    .max_bytes = sizeof SLOW_REQ - 3};
	pthread_t thr;
	IT_CHECK(pthread_create(&thr, NULL, dribbler, &d) == 0);
	IT_CHECK(wait_status(fd, 20000) == 408, "dribbling client not timed out");
	d.stop = 1;
	pthread_join(thr, NULL);
	close(fd);
	/* an idle client too */
	fd = it_tcp_connect(srv.admin_port);
	IT_CHECK(fd >= 0);
	IT_CHECK(wait_status(fd, 20000) == 408, "idle client not timed out");
	close(fd);

	/* full: the oldest of 4 idle connections makes room for a probe */
	int held[4];
	for (int i = 0; i < 4; i++) {
		IT_CHECK((held[i] = it_tcp_connect(srv.admin_port)) >= 0);
		it_sleep_ms(20); /* accept order = age order */
	}
	char *out = it_http_get(srv.admin_port, "/livez", &code);
	IT_CHECK(code == 200, "probe with the admin port full: %d", code);
	free(out);
	IT_CHECK(wait_status(held[0], 10000) == 503, "oldest not evicted");
	for (int i = 0; i < 4; i++)
		close(held[i]);

	/* request size: over ADMIN_MAX_REQUEST (4 KiB) without a blank line */
	char big[5000];
	memcpy(big, "GET /livez HTTP/1.1\r\nX-Big: ", 28);
	memset(big + 28, 'a', sizeof big - 28);
	out = it_http_raw(srv.admin_port, big, sizeof big, 10000, &code);
	IT_CHECK(code == 431, "big request: %d", code);
	free(out);
	/* malformed, unknown path, other methods, HEAD */
	out = it_http_raw(srv.admin_port, "garbage\r\n\r\n", 11, 10000, &code);
	IT_CHECK(code == 400, "garbage: %d", code);
	free(out);
	out = it_http_get(srv.admin_port, "/nope", &code);
	IT_CHECK(code == 404);
	free(out);
	const char *post = "POST /livez HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
	out = it_http_raw(srv.admin_port, post, strlen(post), 10000, &code);
	IT_CHECK(code == 405 && strstr(out, "Allow: GET, HEAD"), "%s", out);
	free(out);
	const char *head = "HEAD /livez HTTP/1.1\r\n\r\n";
	out = it_http_raw(srv.admin_port, head, strlen(head), 10000, &code);
	IT_CHECK(code == 200 && strstr(out, "Content-Length: 3\r\n") &&
		 !strcmp(strstr(out, "\r\n\r\n"), "\r\n\r\n"), "HEAD: %s", out);
	free(out);

	out = it_http_get(srv.admin_port, "/metrics", &code);
	IT_CHECK(code == 200);
	IT_CHECK(it_metric(out, "parley_admin_timeouts_total") >= 2);
	IT_CHECK(it_metric(out, "parley_admin_evicted_total") >= 1);
	IT_CHECK(it_metric(out, "parley_admin_rejected_total") >= 1);
	IT_CHECK(it_metric(out, "parley_admin_requests_total") >= 5);
	free(out);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
}

int main(void)
{
	it_init("admin_slow");
	slow_loris();
	bounds();
	printf("admin_slow: ok\n");
	return 0;
}
