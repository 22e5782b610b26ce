/*
 * bench_natsconn.h — the small blocking/non-blocking NATS client
 * connection of parley-bench's NATS peers (bench_nats.c: core pub/sub for
 * the delivery mode; bench_jetstream.c: JetStream publish-with-ack for the
 * cluster mode), on the pure parser of bench_natsproto.h.
 *
 * Ownership/threads: a struct nconn belongs to one thread; rbuf is the
 * caller's NATS_RBUF-byte buffer.
 */
#ifndef PARLEY_BENCH_NATSCONN_H
#define PARLEY_BENCH_NATSCONN_H

#include <stddef.h>
#include <stdint.h>

#include "bench_natsproto.h"

#define NATS_RBUF (4u << 20)

struct nconn {
	int fd;
	uint8_t *rbuf;
	size_t rlen, roff;
};

/* Connects to 127.0.0.1:port, reads INFO (its "version" into version[0..vcap)
 * when version != NULL), sends CONNECT, then `extra` (protocol lines or
 * NULL), PING, and waits for PONG. 0 or negative. */
int nconn_open(struct nconn *c, int port, const char *extra, char *version, size_t vcap);
void nconn_close(struct nconn *c);
/* Writes all n bytes (blocking). 0 or -errno. */
int nconn_send(struct nconn *c, const void *p, size_t n);
/* One non-blocking read into the buffer: bytes, 0 (nothing now), or < 0. */
int nconn_fill(struct nconn *c);
/* Next parsed frame: 1, 0 (need more), or < 0. PINGs are answered here. */
int nconn_next(struct nconn *c, struct nats_frame *f);
/* Blocks until a frame of type `want` (-ERR: -PARLEY_EIO; timeout:
 * -PARLEY_ETIMEDOUT). */
int nconn_wait(struct nconn *c, enum nats_op want, int timeout_ms, struct nats_frame *f);

#endif /* PARLEY_BENCH_NATSCONN_H */
