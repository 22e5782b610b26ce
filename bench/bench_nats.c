/*
 * bench_nats.c — the delivery mode's reference peer: NATS core pub/sub
 * latency at the same open-loop rate and body size, measured in the same
 * run as parleyd.
 *
 * What NATS guarantees here (and parley does not get to skip): nothing
 * durable. Core NATS is in-memory, at-most-once fan-out with no disk and no
 * acknowledgement; it is the cost of one broker hop over loopback on this
 * machine, a floor for the network + scheduling part of parley's
 * send -> deliver path, not a durable peer.
 *
 * The server: nats-server (Debian package, tools/install-deps.sh) started
 * here on 127.0.0.1, a free port, no JetStream, logging to a temp dir under
 * --dir; SIGKILLed and removed at the end (and by the watchdog).
 *
 * Load: one publisher connection, one subscriber connection on subject
 * "bench.lat". Message k is published at its intended time t0 + k/R (the
 * first 8 bytes of the body carry k); latency = arrival at the subscriber -
 * intended time, p50/p99/p99.9/max over the messages intended inside the
 * measurement window. A PING/PONG round trip on each connection before the
 * clock starts guarantees the subscription is registered.
 *
 * Threads: main thread only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_loop.h"
#include "bench_json.h"
#include "bench_natsconn.h"
#include "bench_natsproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "parley_common.h"

#define NATS_START_TIMEOUT_S 10.0
#define NATS_SUBJECT "bench.lat"

struct nats_srv {
	pid_t pid;
	int port;
	char *tmp;
	char version[64];
};

static int tcp_connect(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = {2, 0};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

int nconn_send(struct nconn *c, const void *p, size_t n)
{
	return send_all(c->fd, p, n);
}

int nconn_fill(struct nconn *c)
{
	if (c->roff) {
		memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
		c->rlen -= c->roff;
		c->roff = 0;
	}
	if (c->rlen == NATS_RBUF)
		return -PARLEY_ETOOBIG;
	for (;;) {
		ssize_t r = recv(c->fd, c->rbuf + c->rlen, NATS_RBUF - c->rlen, MSG_DONTWAIT);
		if (r == 0)
			return -PARLEY_ECLOSED;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -errno;
		}
		c->rlen += (size_t)r;
		return (int)r;
	}
}

/* Next parsed frame: 1, 0 (need more), or <0. PINGs are answered here. */
int nconn_next(struct nconn *c, struct nats_frame *f)
{
	for (;;) {
		long n = nats_parse(c->rbuf + c->roff, c->rlen - c->roff, f);
		if (n < 0)
			return -PARLEY_EPROTO;
		if (n == 0)
			return 0;
		c->roff += (size_t)n;
		if (f->op == NATS_OP_PING) {
			int rc = send_all(c->fd, "PONG\r\n", 6);
			if (rc)
				return rc;
			continue;
		}
		return 1;
	}
}

/* Blocks until a frame of type `want` (or -ERR / timeout). */
int nconn_wait(struct nconn *c, enum nats_op want, int timeout_ms,
		      struct nats_frame *f)
{
	uint64_t end = parley_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	for (;;) {
		int r = nconn_next(c, f);
		if (r < 0)
			return r;
		if (r == 1) {
			if (f->op == want)
				return 0;
			if (f->op == NATS_OP_ERR) {
				fprintf(stderr, "parley-bench: nats: -ERR %.*s\n",
					(int)f->text_len, f->text);
				return -PARLEY_EIO;
			}
			continue;
		}
		uint64_t now = parley_mono_ns();
		if (now >= end)
			return -PARLEY_ETIMEDOUT;
		struct pollfd p = {c->fd, POLLIN, 0};
		int pr = poll(&p, 1, (int)((end - now) / 1000000u) + 1);
		if (pr < 0 && errno != EINTR)
			return -errno;
		if (pr > 0 && (r = nconn_fill(c)) < 0)
			return r;
	}
}

/* Connects, reads INFO, sends CONNECT (+ extra), PING, waits for PONG. */
int nconn_open(struct nconn *c, int port, const char *extra,
		      char *version, size_t vcap)
{
	c->rlen = c->roff = 0;
	c->fd = tcp_connect(port);
	if (c->fd < 0)
		return c->fd;
	struct nats_frame f;
	int rc = nconn_wait(c, NATS_OP_INFO, 2000, &f);
	if (rc)
		return rc;
	if (version) {
		const char *v = memmem(f.text, f.text_len, "\"version\":\"", 11);
		if (v) {
			v += 11;
			size_t n = 0;
			while (v + n < f.text + f.text_len && v[n] != '"' && n + 1 < vcap)
				n++;
			memcpy(version, v, n);
			version[n] = 0;
		}
	}
	char cmd[512];
	int n = snprintf(cmd, sizeof cmd,
			 "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"parley-bench\","
			 "\"lang\":\"c\",\"version\":\"1\",\"protocol\":1}\r\n%sPING\r\n",
			 extra ? extra : "");
	if ((rc = send_all(c->fd, cmd, (size_t)n)) != 0)
		return rc;
	return nconn_wait(c, NATS_OP_PONG, 2000, &f);
}

void nconn_close(struct nconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

int bench_nats_start(const struct bench_cfg *cfg, struct nats_srv **out)
{
	struct nats_srv *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->pid = -1;
	snprintf(s->version, sizeof s->version, "unknown");
	*out = s;
	s->tmp = bench_mkdtemp(cfg->dir, "nats");
	if (!s->tmp)
		return -errno;
	int port = bench_free_port();
	if (port < 0)
		return port;
	s->port = port;
	char portbuf[16], logbuf[4200];
	snprintf(portbuf, sizeof portbuf, "%d", port);
	snprintf(logbuf, sizeof logbuf, "%s/nats.log", s->tmp);
	char *argv[] = {(char *)cfg->nats_server, "-a", "127.0.0.1", "-p", portbuf,
			"-l", logbuf, NULL};
	pid_t pid = bench_spawn(argv, NULL);
	if (pid < 0)
		return pid;
	s->pid = pid;
	double end = bench_now_s() + NATS_START_TIMEOUT_S;
	struct nconn c = {.fd = -1, .rbuf = malloc(NATS_RBUF)};
	if (!c.rbuf)
		return -ENOMEM;
	int rc = -PARLEY_ETIMEDOUT;
	while (bench_now_s() < end) {
		if (bench_child_exited(&s->pid)) {
			fprintf(stderr, "parley-bench: nats-server exited at start-up (see %s)\n",
				logbuf);
			rc = -PARLEY_EIO;
			break;
		}
		rc = nconn_open(&c, port, NULL, s->version, sizeof s->version);
		nconn_close(&c);
		if (rc == 0)
			break;
		bench_sleep_ns(50 * 1000000ull);
	}
	free(c.rbuf);
	if (rc)
		fprintf(stderr, "parley-bench: nats-server did not answer on 127.0.0.1:%d: %s\n",
			port, parley_strerror(rc));
	return rc;
}

const char *bench_nats_version(const struct nats_srv *s)
{
	return s ? s->version : "unknown";
}

void bench_nats_stop(struct nats_srv *s)
{
	if (!s)
		return;
	bench_child_kill(&s->pid);
	bench_tmp_remove(&s->tmp);
	free(s);
}

int bench_nats_delivery(const struct bench_cfg *cfg, const struct nats_srv *s,
			double rate, uint32_t payload, struct deliv_stat *st)
{
	memset(st, 0, sizeof *st);
	if (payload < 8)
		payload = 8; /* the body carries the message index */
	struct nconn pub = {.fd = -1, .rbuf = malloc(NATS_RBUF)};
	struct nconn sub = {.fd = -1, .rbuf = malloc(NATS_RBUF)};
	uint64_t nslots = (uint64_t)(rate * (cfg->warmup + cfg->seconds)) + 1;
	uint64_t *intended = calloc(nslots, sizeof *intended);
	uint8_t *seen = calloc(nslots, 1);
	size_t hdr_cap = 64;
	uint8_t *msg = malloc(hdr_cap + payload + 2);
	struct bench_hist *h = malloc(sizeof *h), *lag = malloc(sizeof *lag);
	int rc = 0;
	uint64_t k = 0, sent = 0, delivered = 0, dups = 0;
	if (!pub.rbuf || !sub.rbuf || !intended || !seen || !msg || !h || !lag) {
		rc = -ENOMEM;
		goto out;
	}
	bench_hist_init(h);
	bench_hist_init(lag);
	if ((rc = nconn_open(&sub, s->port, "SUB " NATS_SUBJECT " 1\r\n", NULL, 0)) != 0 ||
	    (rc = nconn_open(&pub, s->port, NULL, NULL, 0)) != 0) {
		fprintf(stderr, "parley-bench: nats: connect: %s\n", parley_strerror(rc));
		goto out;
	}
	int hl = snprintf((char *)msg, hdr_cap, "PUB " NATS_SUBJECT " %u\r\n", payload);
	uint8_t *body = msg + hl;
	bench_fill_payload(body, payload, cfg->seed);
	memcpy(body + payload, "\r\n", 2);
	size_t msg_len = (size_t)hl + payload + 2;

	uint64_t t0 = parley_mono_ns();
	uint64_t win_start, win_end, drain_end;
	bench_window(cfg, t0, &win_start, &win_end, &drain_end);
	uint64_t next = t0;
	struct pollfd pf[2] = {{sub.fd, POLLIN, 0}, {pub.fd, POLLIN, 0}};
	while (rc == 0) {
		uint64_t now = parley_mono_ns();
		if (next >= win_end && delivered >= sent)
			break;
		if (now >= drain_end)
			break;
		while (next <= now && next < win_end && k < nslots) {
			le_put64(body, k);
			intended[k] = next;
			uint64_t t = parley_mono_ns();
			if ((rc = send_all(pub.fd, msg, msg_len)) != 0)
				break;
			if (next >= win_start)
				bench_hist_record(lag, t - next);
			sent++;
			k++;
			next = t0 + (uint64_t)((double)k * 1e9 / rate);
		}
		if (rc)
			break;
		int pr = bench_poll(pf, 2, next < win_end ? next : 0);
		if (pr < 0) {
			rc = pr;
			break;
		}
		if (pr == 0)
			continue;
		for (int side = 0; side < 2 && rc == 0; side++) {
			if (!(pf[side].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			struct nconn *c = side ? &pub : &sub;
			int r = nconn_fill(c);
			if (r < 0) {
				rc = r;
				break;
			}
			struct nats_frame f;
			while ((r = nconn_next(c, &f)) == 1) {
				uint64_t at = parley_mono_ns();
				if (f.op == NATS_OP_ERR) {
					fprintf(stderr, "parley-bench: nats: -ERR %.*s\n",
						(int)f.text_len, f.text);
					rc = -PARLEY_EIO;
					break;
				}
				if (f.op != NATS_OP_MSG || f.payload_len < 8)
					continue;
				uint64_t idx = le_get64(f.payload);
				if (idx >= k)
					continue;
				bench_delivered(seen, intended, idx, at, win_start, win_end, h,
						&delivered, &dups);
			}
			if (r < 0 && rc == 0)
				rc = r;
		}
	}
	uint64_t in_window = bench_in_window(intended, k, win_start, win_end);
	struct bench_json *js = bench_sink();
	if (js) {
		bench_deliv_json_begin(js, "nats", s->version, rate, payload, in_window, h,
				       sent - delivered);
		bj_hist(js, "pacer_lag", lag);
		bj_bool(js, "duplicates", dups);
		bj_bool(js, "ok", rc == 0);
		bj_end(js);
	}
	printf("| nats %s core pub/sub (no disk, no ack) | %.0f | %u | %llu | %llu | %llu | "
	       "%.1f | %.1f | %.1f | %.1f | – | – | – | pacer lag p99 %.1f µs%s%s |\n",
	       s->version, rate, payload, (unsigned long long)in_window,
	       (unsigned long long)h->count, (unsigned long long)(sent - delivered),
	       (double)bench_hist_quantile(h, 0.5) / 1e3,
	       (double)bench_hist_quantile(h, 0.99) / 1e3,
	       (double)bench_hist_quantile(h, 0.999) / 1e3, (double)h->max_ns / 1e3,
	       (double)bench_hist_quantile(lag, 0.99) / 1e3, dups ? "; DUPLICATES" : "",
	       rc ? "; FAILED" : "");
	fflush(stdout);
	if (rc == 0 && delivered < sent)
		rc = -PARLEY_EIO;
	bench_deliv_stat(st, rc == 0 && h->count > 0, h);
out:
	if (rc)
		fprintf(stderr, "parley-bench: nats delivery at %.0f/s: %s\n", rate,
			parley_strerror(rc));
	nconn_close(&pub);
	nconn_close(&sub);
	free(pub.rbuf);
	free(sub.rbuf);
	free(intended);
	free(seen);
	free(msg);
	free(h);
	free(lag);
	return rc;
}
