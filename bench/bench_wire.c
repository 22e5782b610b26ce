/*
 * bench_wire.c — minimal blocking parley protocol client and HS256 JWT
 * minting for parley-bench (see bench_wire.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- JWT -------------------------------------------------------------------- */

int bench_jwt_hs256(const struct jwt_params *p, const char *sub, char *out,
		    size_t cap)
{
	char claims[1024];
	uint64_t now = (uint64_t)time(NULL);
	int n = snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"iat\":%llu,\"exp\":%llu",
			 sub, (unsigned long long)now,
			 (unsigned long long)(now + (p->ttl_s ? p->ttl_s : 3600)));
	if (p->iss)
		n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"iss\":\"%s\"", p->iss);
	if (p->aud)
		n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"aud\":\"%s\"", p->aud);
	n += snprintf(claims + n, sizeof claims - (size_t)n, "}");
	if (n >= (int)sizeof claims)
		return -EINVAL;
	static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char signing[2048];
	size_t o = parley_b64url_encode(hdr, sizeof hdr - 1, signing);
	signing[o++] = '.';
	o += parley_b64url_encode(claims, (size_t)n, signing + o);
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	if (!HMAC(EVP_sha256(), p->secret, (int)strlen(p->secret),
		  (const uint8_t *)signing, o, mac, &maclen))
		return -EIO;
	char sig[128];
	size_t sl = parley_b64url_encode(mac, maclen, sig);
	if (o + 1 + sl + 1 > cap)
		return -ENOSPC;
	memcpy(out, signing, o);
	out[o] = '.';
	memcpy(out + o + 1, sig, sl + 1);
	return (int)(o + 1 + sl);
}

/* ---- connection ---------------------------------------------------------------- */

int wire_connect(struct wire_conn *c, const char *host, int port, int timeout_ms)
{
	c->fd = -1;
	c->ssl = NULL;
	c->next_req = 1;
	c->max_frame = PARLEY_PROTO_MAX_FRAME_DEFAULT;
	c->rlen = c->roff = 0;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	return 0;
}

struct ssl_ctx_st *wire_tls_client_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

/* Waits until SSL's last error (WANT_READ / WANT_WRITE) may be retried:
 * 0, or -PARLEY_ETIMEDOUT / -PARLEY_EPROTO. */
static int tls_wait(struct wire_conn *c, int err, int timeout_ms)
{
	short ev;
	if (err == SSL_ERROR_WANT_READ)
		ev = POLLIN;
	else if (err == SSL_ERROR_WANT_WRITE)
		ev = POLLOUT;
	else
		return -PARLEY_EPROTO;
	struct pollfd p = {c->fd, ev, 0};
	int pr;
	while ((pr = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
		;
	return pr > 0 ? 0 : pr == 0 ? -PARLEY_ETIMEDOUT : -PARLEY_EPROTO;
}

int wire_tls_start(struct wire_conn *c, struct ssl_ctx_st *ctx, int timeout_ms)
{
	if (!ctx || c->fd < 0 || c->ssl)
		return -PARLEY_EPROTO;
	int fl = fcntl(c->fd, F_GETFL);
	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -PARLEY_EPROTO;
	SSL *ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_fd(ssl, c->fd)) {
		SSL_free(ssl);
		return -PARLEY_EPROTO;
	}
	for (;;) {
		int r = SSL_connect(ssl);
		if (r == 1)
			break;
		int rc = tls_wait(c, SSL_get_error(ssl, r), timeout_ms);
		if (rc != 0) {
			SSL_free(ssl);
			return rc;
		}
	}
	c->ssl = ssl;
	return 0;
}

void wire_close(struct wire_conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

int wire_send(struct wire_conn *c, uint32_t request_id, const struct parley_msg *m)
{
	int n = parley_proto_encode(c->wbuf, sizeof c->wbuf, request_id, m);
	if (n < 0)
		return n;
	if (c->ssl) {
		/* a non-blocking SSL_write is retried with the same arguments
		 * until it has written the whole frame */
		for (;;) {
			int w = SSL_write(c->ssl, c->wbuf, n);
			if (w == n)
				return 0;
			if (w > 0)
				return -PARLEY_EIO;
			int rc = tls_wait(c, SSL_get_error(c->ssl, w), 10000);
			if (rc != 0)
				return rc == -PARLEY_EPROTO ? -PARLEY_EIO : rc;
		}
	}
	size_t off = 0;
	while (off < (size_t)n) {
		ssize_t w = send(c->fd, c->wbuf + off, (size_t)n - off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		off += (size_t)w;
	}
	return 0;
}

int wire_next(struct wire_conn *c, struct parley_msg *m, uint32_t *rid)
{
	struct parley_frame f;
	int n = parley_proto_frame_decode(c->rbuf + c->roff, c->rlen - c->roff,
					  c->max_frame, &f);
	if (n < 0)
		return n;
	c->roff += (size_t)n;
	if (rid)
		*rid = f.request_id;
	int rc = parley_proto_decode(&f, m);
	return rc == 0 ? 1 : rc;
}

int wire_pump(struct wire_conn *c, bool *filled, struct parley_msg *m,
	      uint32_t *rid)
{
	if (!*filled) {
		*filled = true;
		int r = wire_fill(c);
		if (r < 0)
			return r;
	}
	int d = wire_next(c, m, rid);
	return d == -PARLEY_EINCOMPLETE ? 0 : d;
}

void wire_msgid_put(uint8_t id[PARLEY_PROTO_MSG_ID_LEN], uint64_t tag,
		    uint64_t idx)
{
	le_put64(id, tag);
	le_put64(id + 8, idx);
}

uint64_t wire_msgid_tag(const uint8_t id[PARLEY_PROTO_MSG_ID_LEN])
{
	return le_get64(id);
}

uint64_t wire_msgid_idx(const uint8_t id[PARLEY_PROTO_MSG_ID_LEN])
{
	return le_get64(id + 8);
}

int wire_fill(struct wire_conn *c)
{
	if (c->roff) {
		memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
		c->rlen -= c->roff;
		c->roff = 0;
	}
	if (c->rlen == WIRE_RBUF)
		return -PARLEY_ETOOBIG;
	if (c->ssl) {
		/* one record per SSL_read: take what is already decrypted too,
		 * so no buffered plaintext waits for the socket to turn
		 * readable again */
		int got = 0;
		while (c->rlen < WIRE_RBUF) {
			int r = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(WIRE_RBUF - c->rlen));
			if (r > 0) {
				c->rlen += (size_t)r;
				got += r;
				continue;
			}
			int e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				break;
			if (got)
				break; /* report the error on the next call */
			return e == SSL_ERROR_ZERO_RETURN ? -PARLEY_ECLOSED : -PARLEY_EIO;
		}
		return got;
	}
	for (;;) {
		ssize_t r = recv(c->fd, c->rbuf + c->rlen, WIRE_RBUF - c->rlen,
				 MSG_DONTWAIT);
		if (r == 0)
			return -PARLEY_ECLOSED;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		c->rlen += (size_t)r;
		return (int)r;
	}
}

int wire_recv(struct wire_conn *c, int timeout_ms, struct parley_msg *m,
	      uint32_t *rid)
{
	if (!c->rbuf)
		return -EINVAL;
	for (;;) {
		int n = wire_next(c, m, rid);
		if (n == 1)
			return 0;
		if (n != -PARLEY_EINCOMPLETE)
			return n;
		struct pollfd p = {c->fd, POLLIN, 0};
		int pr = poll(&p, 1, timeout_ms);
		if (pr == 0)
			return -PARLEY_ETIMEDOUT;
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		int r = wire_fill(c);
		if (r < 0)
			return r;
	}
}

int wire_hello_auth_send(struct wire_conn *c, struct parley_msg *m,
			 const char *device, const char *token,
			 const char *client_name, uint32_t features)
{
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_HELLO;
	m->hello.min_version = PARLEY_PROTO_VERSION;
	m->hello.max_version = PARLEY_PROTO_VERSION;
	m->hello.features = features;
	m->hello.device_id = parley_str_c(device);
	m->hello.client_name = parley_str_c(client_name);
	int rc = wire_send(c, c->next_req++, m);
	if (rc)
		return rc;
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_AUTH;
	m->auth.token = parley_str_c(token);
	return wire_send(c, c->next_req++, m);
}

int wire_hello_auth_wait(struct wire_conn *c, struct parley_msg *m,
			 int timeout_ms, struct parley_hello_ok *hello_out)
{
	for (int got = 0; got < 2;) {
		uint32_t rid;
		int rc = wire_recv(c, timeout_ms, m, &rid);
		if (rc)
			return rc;
		if (m->type == PARLEY_T_HELLO_OK) {
			c->max_frame = m->hello_ok.max_frame;
			if (hello_out)
				*hello_out = m->hello_ok; /* server_id borrows rbuf */
			got++;
		} else if (m->type == PARLEY_T_AUTH_OK) {
			got++;
		} else if (m->type == PARLEY_T_ERROR) {
			fprintf(stderr, "parley-bench: server error %u during handshake: %.*s\n",
				m->error.code, m->error.text.len, m->error.text.p);
			return -(int)m->error.code;
		}
	}
	return 0;
}

int wire_handshake(struct wire_conn *c, const char *device, const char *token,
		   int timeout_ms, struct parley_hello_ok *hello_out)
{
	struct parley_msg *m = malloc(sizeof *m);
	if (!m)
		return -ENOMEM;
	int rc = wire_hello_auth_send(c, m, device, token, "parley-bench",
				      c->features);
	if (!rc)
		rc = wire_hello_auth_wait(c, m, timeout_ms, hello_out);
	free(m);
	return rc;
}
