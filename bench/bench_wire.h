/*
 * bench_wire.h — a minimal blocking client of the parley wire protocol
 * (docs/PROTOCOL.md) for parley-bench's server modes, on the pure codec in
 * proto/parley_proto.h, plus HS256 JWT minting for development tokens.
 *
 * Why not libparley: the idle-connection mode holds thousands of
 * connections whose only client-side state must be a file descriptor, and
 * the delivery mode needs raw timestamps at the socket. This client keeps
 * one small read buffer per live session and nothing per idle connection.
 *
 * TLS: wire_tls_start turns a connected wire_conn into a TLS session
 * (OpenSSL, no certificate check: parley-bench talks to the parleyd it
 * started with a throw-away certificate); wire_send, wire_fill, wire_recv
 * and wire_close then go through it (the socket turns non-blocking; writes
 * still block until the whole frame is written).
 *
 * Ownership/threads: a struct wire_conn belongs to one thread.
 */
#ifndef PARLEY_BENCH_WIRE_H
#define PARLEY_BENCH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley_proto.h"

#define WIRE_RBUF (1u << 20)

struct ssl_st;
struct ssl_ctx_st;

struct wire_conn {
	int fd;
	struct ssl_st *ssl;  /* TLS session (wire_tls_start) or NULL */
	uint32_t next_req;
	uint32_t max_frame;
	uint32_t features;   /* PARLEY_FEAT_* wire_handshake offers (kept by
				wire_connect) */
	size_t rlen;         /* bytes buffered in rbuf */
	size_t roff;         /* bytes of rbuf already consumed */
	uint8_t *rbuf;       /* WIRE_RBUF bytes, NULL for idle connections */
	uint8_t wbuf[70000]; /* one encoded frame */
};

struct jwt_params {
	const char *secret;  /* HS256 key */
	const char *iss;     /* NULL = omit */
	const char *aud;     /* NULL = omit */
	uint64_t ttl_s;
};

/* Mint an HS256 JWT for `sub` into out[0..cap). Returns length or -errno. */
int bench_jwt_hs256(const struct jwt_params *p, const char *sub, char *out,
		    size_t cap);

/* Connects (TCP_NODELAY) to host:port. Returns 0 or -errno. */
int wire_connect(struct wire_conn *c, const char *host, int port, int timeout_ms);
void wire_close(struct wire_conn *c);
/* A client SSL_CTX that does not verify the server (see above), or NULL. */
struct ssl_ctx_st *wire_tls_client_ctx(void);
/* TLS handshake on the connected c (blocking, bounded by timeout_ms per
 * wait). 0 or -PARLEY_EPROTO. */
int wire_tls_start(struct wire_conn *c, struct ssl_ctx_st *ctx, int timeout_ms);
/* Encodes and writes one message (blocking). Returns 0 or negative. */
int wire_send(struct wire_conn *c, uint32_t request_id, const struct parley_msg *m);
/* Reads until one frame is available (or timeout_ms passes: -PARLEY_ETIMEDOUT),
 * decodes it into *m (fields borrow from the connection's buffer until the
 * next call). Returns 0 or negative. *rid gets the request_id. */
int wire_recv(struct wire_conn *c, int timeout_ms, struct parley_msg *m,
	      uint32_t *rid);
/* Decodes the next buffered frame: 1 and *m, -PARLEY_EINCOMPLETE when no
 * whole frame is buffered, or another negative error. */
int wire_next(struct wire_conn *c, struct parley_msg *m, uint32_t *rid);
/* One non-blocking recv into the buffer: bytes read, 0 (nothing now), or
 * negative (-PARLEY_ECLOSED at end of stream). */
int wire_fill(struct wire_conn *c);
/* The pump of a connection poll(2) found readable: the first call of a
 * round (*filled false; it is set) reads what the socket holds, once
 * (wire_fill: no connection starves the others), then each call hands
 * out the next whole frame buffered. Returns 1 and *m (and *rid unless
 * NULL), 0 when no whole frame is left this round, or negative: a read
 * error, or a frame that does not decode (consumed: -PARLEY_EVERSION for
 * a type this client does not know, which a caller may skip). */
int wire_pump(struct wire_conn *c, bool *filled, struct parley_msg *m,
	      uint32_t *rid);

/* parley-bench's client_msg_id: a tag (the run, the mode) and the send
 * slot's index, little-endian, so an ack or an event names the slot it
 * answers. */
void wire_msgid_put(uint8_t id[PARLEY_PROTO_MSG_ID_LEN], uint64_t tag,
		    uint64_t idx);
uint64_t wire_msgid_tag(const uint8_t id[PARLEY_PROTO_MSG_ID_LEN]);
uint64_t wire_msgid_idx(const uint8_t id[PARLEY_PROTO_MSG_ID_LEN]);

/* The two halves of wire_handshake, for callers that pipeline many
 * handshakes (write every connection's HELLO + AUTH, then wait for each):
 * _send writes HELLO (offering `features`) and AUTH, using m as scratch;
 * _wait reads until HELLO_OK and AUTH_OK (an ERROR: its negated code),
 * keeping max_frame; *hello_out may be NULL. 0 or negative. */
int wire_hello_auth_send(struct wire_conn *c, struct parley_msg *m,
			 const char *device, const char *token,
			 const char *client_name, uint32_t features);
int wire_hello_auth_wait(struct wire_conn *c, struct parley_msg *m,
			 int timeout_ms, struct parley_hello_ok *hello_out);
/* HELLO + AUTH, waiting for HELLO_OK and AUTH_OK. *hello_out may be NULL. */
int wire_handshake(struct wire_conn *c, const char *device, const char *token,
		   int timeout_ms, struct parley_hello_ok *hello_out);

#endif /* PARLEY_BENCH_WIRE_H */
