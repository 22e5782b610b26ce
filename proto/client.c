/*
 * client.c — libparley: a parley client connection (see parley_client.h).
 *
 * Connection lifecycle:
 *
 *   DOWN --tcp connect + TLS handshake--> HANDSHAKE --HELLO_OK, AUTH_OK-->
 *   UP (--SYNC_OK if subscribed) --error / EOF / timeout / GOAWAY close--> DOWN
 *        DOWN --backoff (or GOAWAY retry_after) + jitter--> connect again
 *   A refused token or version, an untrusted server certificate or a
 *   GOAWAY AUTH_EXPIRED (fatal_err) stops automatic reconnecting until the
 *   application calls parley_client_connect() again (after
 *   parley_client_set_token() for a new token). A connection that dies
 *   within CLIENT_STABLE_MS of coming up backs off before the next connect,
 *   so a server that accepts and drops at once is not hammered.
 *   Every failure also records its cause (parley_client_failure()).
 *
 * Invariants:
 *   1. `cursor` is the last inbox_seq passed to on_event (or start-1 of the
 *      subscription); events arrive cursor+1, cursor+2, ... A duplicate
 *      (<= cursor) is dropped, a gap is a protocol violation: the
 *      connection is dropped and the subscription resumes from cursor+1.
 *   2. EVENT_ACK never exceeds an inbox_seq received on this connection.
 *   3. Every request is idempotent, so a request whose fate is unknown
 *      (timeout, lost connection) is simply sent again; SEND reuses its
 *      client_msg_id.
 *   4. The awaited reply is copied out of the receive buffer before it is
 *      decoded, so it survives further reads until the next call.
 *   5. A large group's MESSAGE reaches on_event once per (conv, seq) within
 *      the object's life, whichever way it came (struct rd_conv); no
 *      EVENT_ACK passes an ACTIVITY whose catch-up has not finished.
 *   6. A message delivered early (PARLEY_MSGF_EARLY) is marked in its
 *      conversation's struct rd_conv before on_event sees it, so its
 *      inbox EVENT (EARLY_SEEN, or in full after a server restart) does
 *      not reach on_event again while the entry is tracked.
 *
 * Ownership: the client owns its buffers, socket and SSL objects; option
 * strings are copied in parley_client_new. Threads: one thread at a time
 * per client; no globals besides OpenSSL's own.
 */
#include "parley_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define CLIENT_VERSION "0.1"
#define RX_INITIAL (64u << 10)
#define ZSTD_SEND_MIN 1024 /* compress SEND frames at least this big */
#define ZSTD_LEVEL 3
/*
 * Large groups (read fan-out, docs/PROTOCOL.md "Large groups"): a group's
 * messages may come live (EVENT with inbox_seq 0), in the inbox, or from
 * GROUP_CATCHUP after an ACTIVITY event or a reconnect. Per group this
 * client keeps which MESSAGE seqs it delivered: every seq < lo is unknown
 * (delivered before this object saw the group: never read back), every
 * seq in [lo, base] is done, and a ring of CLIENT_RD_WIN bits covers
 * (base, base + CLIENT_RD_WIN]. A catch-up reads from base + 1 (or the
 * ACTIVITY's seq for a new group) to the group's end and then marks its
 * whole range done (it returned every message of the range that is the
 * user's). At most CLIENT_RD_CONVS groups are tracked (least recently
 * used first out, never one with a catch-up pending).
 */
#define CLIENT_RD_CONVS 256
#define CLIENT_RD_WIN 1024
struct rd_conv {
	uint16_t clen; /* 0 = free slot */
	char conv[PARLEY_PROTO_MAX_CONV_ID];
	uint64_t lo, base;
	uint64_t bits[CLIENT_RD_WIN / 64]; /* seq s at bit s % CLIENT_RD_WIN */
	uint64_t from; /* catch-up pending from this seq (0 = none) */
	uint64_t hold; /* inbox_seq of the ACTIVITY that asked (0 = none) */
	uint64_t used;
	int large; /* read fan-out seen: catch up after reconnects */
};

/* A connection that dies younger than this did not prove the server
 * healthy: the next connect backs off instead of starting over at
 * backoff_min_ms (no tight reconnect loop against a server that accepts
 * and then drops us at once). */
#define CLIENT_STABLE_MS 10000

/* Leader hints (ERROR NOTLEADER's leader address) followed at once within
 * one call; beyond, hints are ignored and the node list is walked (with
 * its pauses): two nodes naming each other during a leader change cannot
 * bounce a request for ever. */
#define CLIENT_MAX_REDIRECTS 4

struct parley_client {
	/* options (strings owned) */
	struct parley_client_opts o;
	char *host, *ca_file, *sni, *token, *device, *cname;
	/* opts.nodes: the node list; host/o.port are the current one */
	char *nodes_buf;
	char *node_host[PARLEY_CLIENT_MAX_NODES];
	uint16_t node_port[PARLEY_CLIENT_MAX_NODES];
	uint32_t nnodes, node_i;
	bool redirected; /* host/o.port: a leader hint, not node_i */
	uint32_t round_fails; /* failed connects since the last backoff (ensure_up) */

	/* connection */
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	int up; /* HELLO + AUTH done */
	int fatal_err; /* stop reconnecting (EAUTH, EVERSION) */
	int closing_err; /* fatal ERROR push seen: drop after this batch */
	int draining; /* GOAWAY seen: no new requests on this connection */
	uint64_t up_since_ms; /* when this connection became usable (0 = not) */
	uint64_t sync_last; /* last_inbox_seq of the latest SYNC_OK */
	struct parley_client_failure fail; /* why the last thing failed */
	struct parley_hello_ok limits;
	char server_id[PARLEY_PROTO_MAX_TEXT + 1];
	char user_id[PARLEY_PROTO_MAX_USER_ID + 1];
	uint32_t max_frame;
	int zstd;
	uint32_t next_rid;

	/* buffers */
	uint8_t *rx;
	size_t rx_cap, rx_len;
	uint8_t *tx, *ztx;
	size_t tx_cap, ztx_cap;
	uint8_t *zin; /* decompressed incoming payload */
	size_t zin_cap;
	uint8_t *reply; /* copy of the awaited reply's payload */
	size_t reply_cap;
	struct parley_msg *msg; /* scratch for pushes */
	struct parley_msg *rmsg; /* the awaited reply, decoded from `reply` */

	/* the one outstanding blocking request */
	uint32_t wait_rid;
	int wait_done;

	/* subscription */
	int subscribed;
	uint64_t sub_from; /* as given to subscribe() */
	uint64_t cursor; /* invariant 1 */
	int cursor_valid; /* a SYNC_OK was seen: resume from cursor + 1 */
	uint64_t expect_next; /* 0 = not streaming on this connection */
	uint64_t acked; /* last EVENT_ACK sent on this connection */
	uint64_t recv_max; /* highest inbox_seq received on this connection */
	int in_cb;

	/* large groups: read fan-out (invariant 5) */
	struct rd_conv *rd; /* [CLIENT_RD_CONVS] */
	uint64_t rd_clock;

	/* typing and presence */
	char typing_conv[PARLEY_PROTO_MAX_CONV_ID + 1]; /* last STARTED for */
	uint64_t typing_sent_ms;  /* when that STARTED was sent */
	uint64_t note_pause_until; /* a RATE on a notification: wait till */
	int note_err;             /* last notification ERROR (-code), 0 = none */
	uint32_t note_retry_ms;
	uint32_t server_hb_ms;    /* from PRESENCE_SUB_OK */

	/* timing (monotonic ms) */
	uint64_t last_tx_ms, last_rx_ms;
	uint64_t not_before_ms; /* GOAWAY retry_after / backoff */
	uint32_t backoff_ms;
	struct parley_rng rng;
};

static uint64_t now_ms(void)
{
	return parley_mono_ns() / 1000000u;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void set_fail(struct parley_client *c, int kind, int err, const char *text,
		     size_t text_len)
{
	c->fail.kind = kind;
	c->fail.err = err;
	c->fail.goaway_reason = 0;
	c->fail.retry_after_ms = 0;
	size_t n = PARLEY_MIN(text_len, sizeof c->fail.text - 1);
	if (n)
		memcpy(c->fail.text, text, n);
	c->fail.text[n] = 0;
}

static void set_fail_str(struct parley_client *c, int kind, int err, const char *text)
{
	set_fail(c, kind, err, text, text ? strlen(text) : 0);
}

const struct parley_client_failure *parley_client_failure(const struct parley_client *c)
{
	return &c->fail;
}

int parley_client_set_token(struct parley_client *c, const char *token)
{
	if (c->in_cb)
		return -PARLEY_EINVAL;
	if (!token || !*token || strlen(token) > PARLEY_PROTO_MAX_TOKEN)
		return -PARLEY_EINVAL;
	char *t = strdup(token);
	if (!t)
		return -PARLEY_ENOMEM;
	if (c->token) {
		memset(c->token, 0, strlen(c->token));
		free(c->token);
	}
	c->token = t;
	c->fatal_err = 0; /* the next connect tries the new token */
	return 0;
}

uint64_t parley_client_sync_last(const struct parley_client *c)
{
	return c->sync_last;
}

int parley_client_random_id(uint8_t out[PARLEY_PROTO_MSG_ID_LEN])
{
	size_t got = 0;
	while (got < PARLEY_PROTO_MSG_ID_LEN) {
		ssize_t r = getrandom(out + got, PARLEY_PROTO_MSG_ID_LEN - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	return 0;
}

/* ---- setup / teardown ------------------------------------------------------ */

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
	if (*cap >= need)
		return 0;
	size_t n = *cap ? *cap : 4096;
	while (n < need)
		n *= 2;
	uint8_t *p = realloc(*buf, n);
	if (!p)
		return -PARLEY_ENOMEM;
	*buf = p;
	*cap = n;
	return 0;
}

/* Parses opts.nodes into c->node_*; 0 or -PARLEY_EINVAL. */
static int nodes_parse(struct parley_client *c, const char *list)
{
	c->nodes_buf = strdup(list);
	if (!c->nodes_buf)
		return -PARLEY_ENOMEM;
	char *rest = c->nodes_buf, *t;
	while ((t = strsep(&rest, ",")) != NULL) {
		char *host;
		uint16_t port;
		if (parley_hostport_split(t, &host, &port) ||
		    c->nnodes >= PARLEY_CLIENT_MAX_NODES)
			return -PARLEY_EINVAL;
		c->node_host[c->nnodes] = host;
		c->node_port[c->nnodes] = port;
		c->nnodes++;
	}
	return c->nnodes ? 0 : -PARLEY_EINVAL;
}

/* Moves to the next node of opts.nodes (the connection is down). After
 * a redirect (node_redirect) that is the node after the list's current
 * one: a dead or wrong hint falls back to the list. */
static void node_next(struct parley_client *c)
{
	if (c->redirected && c->nnodes == 1) {
		char *h = strdup(c->node_host[0]);
		if (!h)
			return;
		c->redirected = false;
		free(c->host);
		c->host = h;
		c->o.port = c->node_port[0];
		return;
	}
	c->redirected = false;
	if (c->nnodes < 2)
		return;
	char *h = strdup(c->node_host[(c->node_i + 1) % c->nnodes]);
	if (!h)
		return;
	c->node_i = (c->node_i + 1) % c->nnodes;
	free(c->host);
	c->host = h;
	c->o.port = c->node_port[c->node_i];
	PLOG_D("client", "moving to the next node", "host=%s port=%u", c->host,
	       c->o.port);
}

/* ERROR NOTLEADER named the leader's client address (PROTOCOL.md,
 * ERROR): connect there next — the list's entry when it is one of the
 * list, else the address itself until it fails (node_next). 0, or
 * -PARLEY_EINVAL for an address that does not parse (the caller moves on
 * through the list). */
static int node_redirect(struct parley_client *c, struct parley_str a)
{
	char buf[PARLEY_PROTO_MAX_ADDR + 1];
	if (!a.len || a.len > PARLEY_PROTO_MAX_ADDR)
		return -PARLEY_EINVAL;
	memcpy(buf, a.p, a.len);
	buf[a.len] = '\0';
	char *host;
	uint16_t port;
	if (parley_hostport_split(buf, &host, &port))
		return -PARLEY_EINVAL;
	char *h = strdup(host);
	if (!h)
		return -PARLEY_ENOMEM;
	c->redirected = true;
	for (uint32_t i = 0; i < c->nnodes; i++)
		if (c->node_port[i] == port && !strcmp(c->node_host[i], host)) {
			c->node_i = i;
			c->redirected = false;
		}
	free(c->host);
	c->host = h;
	c->o.port = (uint16_t)port;
	PLOG_D("client", "redirected to the leader", "host=%s port=%u", c->host,
	       c->o.port);
	return 0;
}

int parley_client_current_node(const struct parley_client *c,
			       const char **host, uint16_t *port)
{
	if (!c || !host || !port)
		return -PARLEY_EINVAL;
	*host = c->host;
	*port = c->o.port;
	return 0;
}

int parley_client_new(const struct parley_client_opts *opts,
		      struct parley_client **out)
{
	struct parley_client_opts so;
	if (opts && opts->nodes) { /* the first node stands for host/port */
		so = *opts;
		so.host = "-";
		so.port = 1;
		opts = &so;
	}
	if (!opts || !opts->host || !opts->port || !opts->token ||
	    !opts->device_id || !*opts->device_id ||
	    strlen(opts->device_id) > PARLEY_PROTO_MAX_DEVICE_ID ||
	    strlen(opts->token) > PARLEY_PROTO_MAX_TOKEN || !*opts->token)
		return -PARLEY_EINVAL;
	struct parley_client *c = calloc(1, sizeof *c);
	if (!c)
		return -PARLEY_ENOMEM;
	c->o = *opts;
	c->fd = -1;
	c->host = strdup(opts->host);
	c->ca_file = dup_or_null(opts->ca_file);
	c->sni = strdup(opts->tls_server_name ? opts->tls_server_name : opts->host);
	c->token = strdup(opts->token);
	c->device = strdup(opts->device_id);
	c->cname = strdup(opts->client_name ? opts->client_name
					    : "libparley/" CLIENT_VERSION);
	c->msg = malloc(sizeof *c->msg);
	c->rmsg = malloc(sizeof *c->rmsg);
	c->rd = calloc(CLIENT_RD_CONVS, sizeof *c->rd);
	int err = 0;
	if (!c->host || (opts->ca_file && !c->ca_file) || !c->sni || !c->token ||
	    !c->device || !c->cname || !c->msg || !c->rmsg || !c->rd)
		err = -PARLEY_ENOMEM;
	if (!err && opts->nodes) {
		err = nodes_parse(c, opts->nodes);
		if (!err) {
			free(c->host);
			c->host = strdup(c->node_host[0]);
			c->o.port = c->node_port[0];
			if (!opts->tls_server_name) {
				free(c->sni);
				c->sni = strdup(c->node_host[0]);
			}
			if (!c->host || !c->sni)
				err = -PARLEY_ENOMEM;
		}
	}
	if (!c->o.connect_timeout_ms)
		c->o.connect_timeout_ms = 5000;
	if (!c->o.request_timeout_ms)
		c->o.request_timeout_ms = 10000;
	if (!c->o.call_deadline_ms)
		c->o.call_deadline_ms = 30000;
	if (!c->o.backoff_min_ms)
		c->o.backoff_min_ms = 100;
	if (!c->o.backoff_max_ms)
		c->o.backoff_max_ms = 30000;
	c->backoff_ms = c->o.backoff_min_ms;
	c->max_frame = PARLEY_PROTO_MAX_FRAME_DEFAULT;
	uint8_t seed[8];
	if (getrandom(seed, sizeof seed, 0) == sizeof seed)
		c->rng.s = le_get64(seed); /* jitter only: any seed works */
	else
		c->rng.s = parley_mono_ns();
	if (!err && opts->tls) {
		c->ctx = SSL_CTX_new(TLS_client_method());
		if (!c->ctx) {
			err = -PARLEY_ENOMEM;
		} else {
			SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
			SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
			int ok = c->ca_file ? SSL_CTX_load_verify_locations(
						      c->ctx, c->ca_file, NULL)
					    : SSL_CTX_set_default_verify_paths(c->ctx);
			if (ok != 1) {
				PLOG_E("client", "cannot load CA certificates",
				       "ca_file=\"%s\"", c->ca_file ? c->ca_file : "(system)");
				err = -PARLEY_EINVAL;
			}
		}
	}
	if (err) {
		parley_client_free(c);
		return err;
	}
	*out = c;
	return 0;
}

static void conn_drop(struct parley_client *c, int err)
{
	int was = c->fd >= 0;
	if (c->ssl) {
		/* no close_notify round trip: the peer may be gone */
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->up = 0;
	c->rx_len = 0;
	c->expect_next = 0;
	c->wait_rid = 0;
	c->closing_err = 0;
	c->draining = 0;
	if (c->up_since_ms) {
		uint64_t now = now_ms();
		if (now - c->up_since_ms >= CLIENT_STABLE_MS) {
			c->backoff_ms = c->o.backoff_min_ms;
		} else {
			/* died young: wait before the next connect (full jitter in
			 * [b/2, b]), unless a GOAWAY already asked for longer */
			uint32_t b = c->backoff_ms;
			uint64_t t = now + b / 2 + parley_rng_below(&c->rng, b / 2 + 1);
			if (t > c->not_before_ms)
				c->not_before_ms = t;
			c->backoff_ms = (uint32_t)PARLEY_MIN((uint64_t)b * 2, c->o.backoff_max_ms);
		}
		c->up_since_ms = 0;
	}
	if (was) {
		PLOG_D("client", "disconnected", "err=%s", parley_errname(err));
		if (c->o.on_state)
			c->o.on_state(c->o.user, PARLEY_CLIENT_DISCONNECTED, err);
	}
}

void parley_client_close(struct parley_client *c)
{
	if (c)
		conn_drop(c, -PARLEY_ECLOSED);
}

void parley_client_free(struct parley_client *c)
{
	if (!c)
		return;
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	if (c->ctx)
		SSL_CTX_free(c->ctx);
	free(c->host);
	free(c->nodes_buf);
	free(c->ca_file);
	free(c->sni);
	if (c->token) /* it is a credential: do not leave it in freed memory */
		memset(c->token, 0, strlen(c->token));
	free(c->token);
	free(c->device);
	free(c->cname);
	free(c->rx);
	free(c->tx);
	free(c->ztx);
	free(c->zin);
	free(c->reply);
	free(c->msg);
	free(c->rmsg);
	free(c->rd);
	free(c);
}

int parley_client_connected(const struct parley_client *c)
{
	return c->up;
}
const char *parley_client_user_id(const struct parley_client *c)
{
	return c->user_id;
}
const struct parley_hello_ok *parley_client_limits(const struct parley_client *c)
{
	return &c->limits;
}
uint64_t parley_client_inbox_cursor(const struct parley_client *c)
{
	return c->cursor;
}
int parley_client_fd(const struct parley_client *c)
{
	return c->fd;
}

/* ---- raw I/O ----------------------------------------------------------------- */

/* Wait for fd readiness until deadline (monotonic ms). 1 ready, 0 timeout. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = now_ms();
		int t = deadline == UINT64_MAX ? -1
			: deadline > now	  ? (int)PARLEY_MIN(deadline - now, 1u << 30)
						  : 0;
		struct pollfd p = {fd, events, 0};
		int r = poll(&p, 1, t);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		return r > 0;
	}
}

/* Write all of buf before deadline. SIGPIPE is held back around the write. */
static int write_all(struct parley_client *c, const uint8_t *buf, size_t len,
		     uint64_t deadline)
{
	sigset_t pipe_set, old;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigset_t pending;
	sigpending(&pending);
	int pipe_was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	int err = 0;
	size_t off = 0;
	while (off < len && !err) {
		short want = POLLOUT;
		if (c->ssl) {
			ERR_clear_error();
			int n = SSL_write(c->ssl, buf + off, (int)(len - off));
			if (n > 0) {
				off += (size_t)n;
				continue;
			}
			int e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ)
				want = POLLIN;
			else if (e != SSL_ERROR_WANT_WRITE)
				err = -PARLEY_ECLOSED;
		} else {
			ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
			if (n > 0) {
				off += (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (!(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
				err = -PARLEY_ECLOSED;
		}
		if (!err) {
			int r = wait_fd(c->fd, want, deadline);
			if (r == 0)
				err = -PARLEY_ETIMEDOUT;
			else if (r < 0)
				err = r;
		}
	}
	if (!pipe_was_pending) {
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!err)
		c->last_tx_ms = now_ms();
	return err;
}

/* Read what is there into rx. >0 bytes read, 0 would block, <0 closed/error. */
static int read_some(struct parley_client *c)
{
	if (c->rx_len == c->rx_cap) {
		/* grow only as far as the frame at the front needs */
		size_t need = c->rx_cap * 2;
		if (c->rx_len >= 4) {
			size_t fl = 4 + (size_t)le_get32(c->rx);
			need = PARLEY_MAX(fl, c->rx_len + 1);
		}
		need = PARLEY_MAX(need, (size_t)RX_INITIAL);
		if (need > (size_t)c->max_frame + 4096)
			need = (size_t)c->max_frame + 4096;
		if (need <= c->rx_len)
			return -PARLEY_EPROTO; /* decode would have said ETOOBIG */
		int r = grow(&c->rx, &c->rx_cap, need);
		if (r < 0)
			return r;
	}
	size_t room = c->rx_cap - c->rx_len;
	if (c->ssl) {
		ERR_clear_error();
		int n = SSL_read(c->ssl, c->rx + c->rx_len, (int)PARLEY_MIN(room, INT32_MAX));
		if (n > 0) {
			c->rx_len += (size_t)n;
			c->last_rx_ms = now_ms();
			return n;
		}
		int e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return 0;
		return -PARLEY_ECLOSED;
	}
	for (;;) {
		ssize_t n = recv(c->fd, c->rx + c->rx_len, room, 0);
		if (n > 0) {
			c->rx_len += (size_t)n;
			c->last_rx_ms = now_ms();
			return (int)n;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return -PARLEY_ECLOSED;
	}
}

/* Encode m and send it (compressing big SENDs when negotiated). */
static int send_msg(struct parley_client *c, uint32_t rid,
		    const struct parley_msg *m, uint64_t deadline)
{
	int n = parley_proto_size(m);
	if (n < 0)
		return n;
	if ((uint32_t)n > c->max_frame)
		return -PARLEY_ETOOBIG;
	int r = grow(&c->tx, &c->tx_cap, (size_t)n);
	if (r < 0)
		return r;
	n = parley_proto_encode(c->tx, c->tx_cap, rid, m);
	if (n < 0)
		return n;
	const uint8_t *out = c->tx;
	if (c->zstd && m->type == PARLEY_T_SEND && n >= ZSTD_SEND_MIN) {
		r = grow(&c->ztx, &c->ztx_cap, (size_t)n);
		if (r < 0)
			return r;
		int z = parley_proto_compress(c->tx, (size_t)n, c->ztx, c->ztx_cap,
					      ZSTD_LEVEL);
		if (z > 0) {
			out = c->ztx;
			n = z;
		}
	}
	return write_all(c, out, (size_t)n, deadline);
}

static uint32_t next_rid(struct parley_client *c)
{
	if (++c->next_rid == 0)
		c->next_rid = 1;
	return c->next_rid;
}

static uint64_t rd_hold(const struct parley_client *c);
static void rd_resume(struct parley_client *c);
static int call(struct parley_client *c, const struct parley_msg *req,
		uint16_t reply_type);

static void send_ack_if_due(struct parley_client *c, int force)
{
	if (!c->up || c->recv_max <= c->acked || c->cursor <= c->acked)
		return;
	uint64_t upto = PARLEY_MIN(c->cursor, c->recv_max);
	uint64_t hold = rd_hold(c); /* invariant 5 */
	if (hold && upto >= hold)
		upto = hold - 1;
	if (upto <= c->acked)
		return;
	uint32_t win = c->limits.event_window ? c->limits.event_window : 64;
	if (!force && upto - c->acked < PARLEY_MAX(win / 2, 1u))
		return;
	struct parley_msg m = {.type = PARLEY_T_EVENT_ACK};
	m.event_ack.up_to_inbox_seq = upto;
	if (send_msg(c, 0, &m, now_ms() + c->o.request_timeout_ms) == 0)
		c->acked = upto;
	else
		conn_drop(c, -PARLEY_ECLOSED);
}

/* ---- dispatch ---------------------------------------------------------------- */

static void apply_sync_ok(struct parley_client *c, const struct parley_sync_ok *ok)
{
	uint64_t start = ok->start_inbox_seq;
	if (start == 0)
		start = ok->last_inbox_seq + 1;
	if (c->cursor && start > c->cursor + 1)
		PLOG_W("client", "inbox events trimmed before resume",
		       "cursor=%llu start=%llu", (unsigned long long)c->cursor,
		       (unsigned long long)start);
	if (start > c->cursor + 1 || !c->cursor_valid)
		c->cursor = start - 1;
	c->cursor_valid = 1;
	c->sync_last = ok->last_inbox_seq;
	/* a server starting below cursor+1 re-sends what we had: skipped as
	 * duplicates by on_event */
	c->expect_next = c->cursor + 1;
	c->acked = c->cursor;
	c->recv_max = c->cursor;
	rd_resume(c);
}

/* ---- large groups (invariant 5) ---------------------------------------------------- */

static int is_group(struct parley_str conv)
{
	return conv.len > 2 && conv.p[0] == 'g' && conv.p[1] == ':';
}

static uint64_t rd_hold(const struct parley_client *c)
{
	uint64_t h = 0;
	for (unsigned i = 0; c->rd && i < CLIENT_RD_CONVS; i++)
		if (c->rd[i].clen && c->rd[i].hold && (!h || c->rd[i].hold < h))
			h = c->rd[i].hold;
	return h;
}

/* The group's entry; created with lo = seq when absent (evicting the
 * least recently used idle one). NULL: the table is full of groups with
 * a catch-up pending. */
static struct rd_conv *rd_get(struct parley_client *c, struct parley_str conv,
			      uint64_t seq)
{
	struct rd_conv *fr = NULL, *old = NULL;
	for (unsigned i = 0; i < CLIENT_RD_CONVS; i++) {
		struct rd_conv *e = &c->rd[i];
		if (!e->clen) {
			if (!fr)
				fr = e;
			continue;
		}
		if (e->clen == conv.len && !memcmp(e->conv, conv.p, conv.len)) {
			e->used = ++c->rd_clock;
			return e;
		}
		if (!e->from && !e->hold && (!old || e->used < old->used))
			old = e;
	}
	struct rd_conv *e = fr ? fr : old;
	if (!e || conv.len > PARLEY_PROTO_MAX_CONV_ID)
		return NULL;
	memset(e, 0, sizeof *e);
	e->clen = conv.len;
	memcpy(e->conv, conv.p, conv.len);
	e->lo = seq ? seq : 1;
	e->base = e->lo - 1;
	e->used = ++c->rd_clock;
	return e;
}

static int rd_bit(const struct rd_conv *e, uint64_t s)
{
	uint64_t k = s % CLIENT_RD_WIN;
	return (int)((e->bits[k / 64] >> (k % 64)) & 1);
}

static void rd_bit_put(struct rd_conv *e, uint64_t s, int v)
{
	uint64_t k = s % CLIENT_RD_WIN;
	if (v)
		e->bits[k / 64] |= 1ull << (k % 64);
	else
		e->bits[k / 64] &= ~(1ull << (k % 64));
}

/* Delivered already? (seqs below lo are unknown: never called done) */
static int rd_seen(const struct rd_conv *e, uint64_t s)
{
	if (s < e->lo)
		return 0;
	if (s <= e->base)
		return 1;
	if (s > e->base + CLIENT_RD_WIN)
		return 0;
	return rd_bit(e, s);
}

static void rd_mark(struct rd_conv *e, uint64_t s)
{
	if (s < e->lo || s <= e->base)
		return;
	if (s > e->base + CLIENT_RD_WIN) {
		/* slide: what falls below the window counts as done */
		uint64_t nb = s - CLIENT_RD_WIN;
		if (nb - e->base >= CLIENT_RD_WIN)
			memset(e->bits, 0, sizeof e->bits);
		else
			for (uint64_t t = e->base + 1; t <= nb; t++)
				rd_bit_put(e, t, 0);
		e->base = nb;
	}
	rd_bit_put(e, s, 1);
	while (rd_bit(e, e->base + 1)) {
		rd_bit_put(e, e->base + 1, 0);
		e->base++;
	}
}

/* Calls the application's callback o.cb (when set) with arg, in_cb set
 * meanwhile (the calls a callback may not make check it). */
#define APP_CALLBACK(c, cb, arg)                                 \
	do {                                                     \
		if ((c)->o.cb) {                                 \
			(c)->in_cb = 1;                          \
			(c)->o.cb((c)->o.user, (arg));           \
			(c)->in_cb = 0;                          \
		}                                                \
	} while (0)

static void deliver(struct parley_client *c, const struct parley_event *ev)
{
	APP_CALLBACK(c, on_event, ev);
}

/* The tracked entry of conv, NULL when none (takes no slot). */
static struct rd_conv *rd_find(struct parley_client *c, struct parley_str conv)
{
	for (unsigned i = 0; i < CLIENT_RD_CONVS; i++) {
		struct rd_conv *e = &c->rd[i];
		if (e->clen && e->clen == conv.len && !memcmp(e->conv, conv.p, conv.len)) {
			e->used = ++c->rd_clock;
			return e;
		}
	}
	return NULL;
}

/* An early EVENT (inbox_seq 0, PARLEY_MSGF_EARLY): the message is durable
 * in its conversation and its inbox EVENT follows. Delivered once per
 * (conv, seq): marked here, so the inbox EVENT (or the full one a server
 * restart sends again) is dropped. */
static int on_early(struct parley_client *c, const struct parley_event *ev)
{
	if (!c->expect_next || ev->kind != PARLEY_EV_MESSAGE || !ev->conv_seq)
		return 0;
	struct rd_conv *e = rd_get(c, ev->conv, ev->conv_seq);
	if (e) {
		if (rd_seen(e, ev->conv_seq))
			return 0;
		rd_mark(e, ev->conv_seq);
	}
	deliver(c, ev);
	return 1;
}

/* A live EVENT (inbox_seq 0) of a large group. */
static int on_live(struct parley_client *c, const struct parley_event *ev)
{
	if (!c->expect_next || ev->kind != PARLEY_EV_MESSAGE || !is_group(ev->conv))
		return 0;
	struct rd_conv *e = rd_get(c, ev->conv, ev->conv_seq);
	if (e) {
		e->large = 1;
		/* a catch-up pending reads it back in its place */
		if (e->from || rd_seen(e, ev->conv_seq))
			return 0;
		rd_mark(e, ev->conv_seq);
	}
	deliver(c, ev);
	return 1;
}

/* ACTIVITY (inbox): catch the group up from our position. 0, or < 0 when
 * it cannot be tracked now (the connection is dropped and the event comes
 * again after the pending catch-ups). */
static int on_activity(struct parley_client *c, const struct parley_event *ev)
{
	struct rd_conv *e = rd_get(c, ev->conv, ev->conv_seq);
	if (!e)
		return -PARLEY_EFULL;
	e->large = 1;
	if (!e->from)
		e->from = ev->conv_seq < e->lo	  ? ev->conv_seq
			  : e->base + 1 > e->lo ? e->base + 1
						: e->lo;
	if (!e->hold)
		e->hold = ev->inbox_seq;
	return 0;
}

/* After every SYNC_OK: live EVENTs of the previous connection may be lost,
 * so every large group catches up from its position. */
static void rd_resume(struct parley_client *c)
{
	for (unsigned i = 0; i < CLIENT_RD_CONVS; i++) {
		struct rd_conv *e = &c->rd[i];
		if (e->clen && e->large && !e->from)
			e->from = e->base + 1 > e->lo ? e->base + 1 : e->lo;
	}
}

#define RD_PAGES_PER_RUN 64 /* catch-up pages per process() call */

/* Runs pending catch-ups (GROUP_CATCHUP pages); outside blocking calls
 * and callbacks only. Returns events delivered or a negative error (a
 * catch-up not finished stays pending). */
static int rd_run(struct parley_client *c)
{
	int delivered = 0, pages = 0;
	for (unsigned i = 0; i < CLIENT_RD_CONVS; i++) {
		struct rd_conv *e = &c->rd[i];
		while (e->clen && e->from && pages < RD_PAGES_PER_RUN) {
			struct parley_msg m = {.type = PARLEY_T_GROUP_CATCHUP};
			m.group_catchup.conv = (struct parley_str){e->conv, e->clen};
			m.group_catchup.from_seq = e->from;
			m.group_catchup.limit = PARLEY_PROTO_MAX_HISTORY;
			uint64_t from = e->from;
			int r = call(c, &m, PARLEY_T_GROUP_CATCHUP_OK);
			pages++;
			if (r == -PARLEY_EPERM || r == -PARLEY_ENOTFOUND ||
			    r == -PARLEY_EINVAL) {
				/* not ours (any more): nothing to read */
				PLOG_I("client", "group catch-up refused: not a member",
				       "conv=%.*s from=%llu err=%s", (int)e->clen,
				       e->conv, (unsigned long long)from,
				       parley_errname(r));
				e->from = e->hold = 0;
				e->large = 0;
				break;
			}
			if (r < 0) {
				PLOG_W("client", "group catch-up failed, retried later",
				       "conv=%.*s from=%llu err=%s", (int)e->clen,
				       e->conv, (unsigned long long)from,
				       parley_errname(r));
				return delivered ? delivered : r;
			}
			const struct parley_history_page *pg = &c->rmsg->history_page;
			for (unsigned k = 0; k < pg->count; k++) {
				const struct parley_hist_msg *h = &pg->msgs[k];
				if (h->kind != PARLEY_EV_MESSAGE || rd_seen(e, h->seq))
					continue;
				rd_mark(e, h->seq);
				struct parley_event ev = {
					.inbox_seq = 0, .kind = PARLEY_EV_MESSAGE,
					.conv = pg->conv, .conv_seq = h->seq,
					.sender = h->sender, .server_ts_ms = h->ts_ms,
					.content_type = h->content_type,
					.body = h->body, .flags = h->flags};
				memcpy(ev.client_msg_id, h->client_msg_id,
				       PARLEY_PROTO_MSG_ID_LEN);
				deliver(c, &ev);
				delivered++;
			}
			/* the range is decided: mark it done */
			uint64_t next = pg->next_before_seq;
			if (next > from) {
				if (from < e->lo)
					e->lo = from;
				for (uint64_t s2 = from; s2 < next; s2++)
					rd_mark(e, s2);
			}
			if ((pg->flags & PARLEY_HISTF_END) || next <= from) {
				e->from = e->hold = 0;
				break;
			}
			e->from = next;
		}
	}
	return delivered;
}

int parley_client_group_position(const struct parley_client *c,
				 const char *conv, uint64_t *seq)
{
	size_t n = strlen(conv);
	for (unsigned i = 0; i < CLIENT_RD_CONVS; i++) {
		const struct rd_conv *e = &c->rd[i];
		if (e->clen && e->clen == n && !memcmp(e->conv, conv, n)) {
			/* during a catch-up: what is before it */
			*seq = e->from && e->from - 1 < e->base ? e->from - 1 : e->base;
			return 0;
		}
	}
	return -PARLEY_ENOTFOUND;
}

int parley_client_set_group_position(struct parley_client *c, const char *conv,
				     uint64_t seq)
{
	struct parley_str s = {conv, (uint16_t)strlen(conv)};
	if (strlen(conv) > PARLEY_PROTO_MAX_CONV_ID || !is_group(s))
		return -PARLEY_EINVAL;
	struct rd_conv *e = rd_get(c, s, seq + 1);
	if (!e)
		return -PARLEY_EFULL;
	memset(e->bits, 0, sizeof e->bits);
	e->lo = 1;
	e->base = seq;
	e->large = 1; /* caught up from seq + 1 after the next SYNC_OK */
	if (c->cursor_valid && !e->from)
		e->from = seq + 1; /* already subscribed: now */
	return 0;
}

static int on_event(struct parley_client *c, const struct parley_event *ev)
{
	if (ev->inbox_seq == 0)
		return (ev->flags & PARLEY_MSGF_EARLY) ? on_early(c, ev)
						       : on_live(c, ev);
	if (!c->expect_next) {
		PLOG_W("client", "EVENT without subscription", "inbox_seq=%llu",
		       (unsigned long long)ev->inbox_seq);
		return 0;
	}
	if (ev->inbox_seq <= c->cursor)
		return 0; /* already delivered (e.g. re-sent after a resume) */
	if (ev->inbox_seq != c->expect_next) {
		PLOG_W("client", "gap in inbox events, resubscribing",
		       "expected=%llu got=%llu", (unsigned long long)c->expect_next,
		       (unsigned long long)ev->inbox_seq);
		return -PARLEY_EPROTO;
	}
	if (ev->kind == PARLEY_EV_ACTIVITY && is_group(ev->conv)) {
		int r = on_activity(c, ev);
		if (r < 0)
			return -PARLEY_EPROTO; /* comes again after a resubscribe */
	}
	c->expect_next = ev->inbox_seq + 1;
	c->recv_max = ev->inbox_seq;
	int delivered = 0;
	if (ev->kind == PARLEY_EV_MESSAGE) {
		/* a message from the inbox: drop it if it came early on this
		 * connection (EARLY_SEEN: no body), or came early or by a
		 * group catch-up before (a reconnect, a server restart) */
		struct rd_conv *e = is_group(ev->conv)
					    ? rd_get(c, ev->conv, ev->conv_seq)
					    : rd_find(c, ev->conv);
		if ((ev->flags & PARLEY_MSGF_EARLY_SEEN) ||
		    (e && rd_seen(e, ev->conv_seq))) {
			if (e)
				rd_mark(e, ev->conv_seq);
			c->cursor = ev->inbox_seq;
			return 0;
		}
		if (e)
			rd_mark(e, ev->conv_seq);
	}
	/* kinds this library knows (MEMBERSHIP: group changes, body as in
	 * PROTOCOL.md); unknown kinds are acknowledged, not delivered */
	if ((ev->kind == PARLEY_EV_MESSAGE || ev->kind == PARLEY_EV_EDIT ||
	     ev->kind == PARLEY_EV_DELETE || ev->kind == PARLEY_EV_MEMBERSHIP) &&
	    c->o.on_event) {
		deliver(c, ev);
		delivered = 1;
	} else if (ev->kind == PARLEY_EV_RECEIPT) {
		APP_CALLBACK(c, on_receipt, ev);
	}
	c->cursor = ev->inbox_seq;
	return delivered;
}

/* Handle one whole frame. Returns events delivered (0/1) or <0 to drop. */
/* A PRESENCE push that follows a PRESENCE_SUB_OK still held for its
 * caller (the same read can carry both) is newer than the reply's view of
 * that user: put it into the reply, so the caller, applying the reply
 * after the push's callback ran, does not go back to the older view. */
static void presence_into_reply(struct parley_client *c,
				const struct parley_presence_rec *p)
{
	if (!c->wait_rid || !c->wait_done ||
	    c->rmsg->type != PARLEY_T_PRESENCE_SUB_OK)
		return;
	struct parley_presence_sub_ok *ok = &c->rmsg->presence_sub_ok;
	for (unsigned i = 0; i < ok->count; i++) {
		if (ok->recs[i].user.len == p->user.len &&
		    !memcmp(ok->recs[i].user.p, p->user.p, p->user.len)) {
			ok->recs[i].status = p->status;
			ok->recs[i].last_seen_ms = p->last_seen_ms;
		}
	}
}

static int dispatch(struct parley_client *c, const struct parley_frame *f)
{
	const uint8_t *p = f->payload;
	size_t len = f->payload_len;
	if (f->flags & PARLEY_FLAG_ZSTD) {
		if (!c->zstd)
			return -PARLEY_EPROTO;
		int r = grow(&c->zin, &c->zin_cap, c->max_frame);
		if (r < 0)
			return r;
		int d = parley_proto_decompress(f, c->zin, c->max_frame -
							       PARLEY_PROTO_HEADER_SIZE);
		if (d < 0)
			return -PARLEY_EPROTO;
		p = c->zin;
		len = (size_t)d;
	}
	if (f->request_id != 0) {
		if (f->request_id != c->wait_rid || c->wait_done)
			return 0; /* keepalive PONG, or a reply we gave up on */
		/* invariant 4: copy, then decode from the copy */
		int r = grow(&c->reply, &c->reply_cap, len ? len : 1);
		if (r < 0)
			return r;
		memcpy(c->reply, p, len);
		r = parley_proto_decode_payload(f->type, c->reply, len, c->rmsg);
		if (r < 0) {
			PLOG_W("client", "malformed reply", "type=%s err=%s",
			       parley_proto_type_name(f->type), parley_errname(r));
			return -PARLEY_EPROTO;
		}
		c->wait_done = 1;
		if (f->type == PARLEY_T_SYNC_OK)
			apply_sync_ok(c, &c->rmsg->sync_ok);
		return 0;
	}
	if (!parley_type_is_push(f->type) && f->type != PARLEY_T_ERROR)
		return -PARLEY_EPROTO;
	int r = parley_proto_decode_payload(f->type, p, len, c->msg);
	if (r == -PARLEY_EVERSION)
		return 0; /* a push type from a newer server: ignore */
	if (r < 0)
		return -PARLEY_EPROTO;
	if (f->type == PARLEY_T_PRESENCE)
		presence_into_reply(c, &c->msg->presence);
	switch (f->type) {
	case PARLEY_T_EVENT:
		return on_event(c, &c->msg->event);
	case PARLEY_T_GOAWAY: {
		const struct parley_goaway *g = &c->msg->goaway;
		PLOG_I("client", "server said goaway", "reason=%u retry_after_ms=%u text=\"%.*s\"",
		       g->reason, g->retry_after_ms, (int)g->text.len, g->text.p);
		uint64_t ra = g->retry_after_ms;
		ra += ra ? parley_rng_below(&c->rng, ra / 2 + 1) : 0;
		if (now_ms() + ra > c->not_before_ms)
			c->not_before_ms = now_ms() + ra;
		c->draining = 1;
		set_fail(c, PARLEY_FAIL_GOAWAY, -PARLEY_ECLOSED, g->text.p, g->text.len);
		c->fail.goaway_reason = g->reason;
		c->fail.retry_after_ms = g->retry_after_ms;
		if (g->reason == PARLEY_GOAWAY_AUTH_EXPIRED) {
			/* the same token will not get better: stop, do not loop */
			c->fatal_err = -PARLEY_EAUTH;
			c->fail.err = -PARLEY_EAUTH;
		}
		if (c->o.on_state)
			c->o.on_state(c->o.user, PARLEY_CLIENT_GOAWAY, -(int)g->reason);
		return 0;
	}
	case PARLEY_T_TYPING_PUSH:
		APP_CALLBACK(c, on_typing, &c->msg->typing_push);
		return 0;
	case PARLEY_T_PRESENCE:
		APP_CALLBACK(c, on_presence, &c->msg->presence);
		return 0;
	case PARLEY_T_ERROR: {
		const struct parley_error_msg *e = &c->msg->error;
		PLOG_W("client", "server error", "code=%u fatal=%d text=\"%.*s\"", e->code,
		       !!(e->flags & PARLEY_ERRF_FATAL), (int)e->text.len, e->text.p);
		if (!(e->flags & PARLEY_ERRF_FATAL)) { /* about a notification */
			c->note_err = -(int)e->code;
			c->note_retry_ms = e->retry_after_ms;
			if (e->code == PARLEY_ERATE)
				c->note_pause_until = now_ms() + e->retry_after_ms;
		}
		if (e->flags & PARLEY_ERRF_FATAL) {
			set_fail(c, PARLEY_FAIL_SERVER, -(int)e->code, e->text.p, e->text.len);
			c->closing_err = -(int)e->code;
			if (e->code == PARLEY_EAUTH || e->code == PARLEY_EVERSION)
				c->fatal_err = -(int)e->code;
		}
		return 0;
	}
	default:
		return 0;
	}
}

/*
 * Read everything available without blocking and dispatch it. Returns the
 * number of events delivered or a negative error (the connection is then
 * dropped).
 */
static int pump(struct parley_client *c)
{
	if (c->fd < 0)
		return -PARLEY_ECLOSED;
	int events = 0;
	for (;;) {
		int rr = read_some(c);
		size_t off = 0;
		int derr = 0;
		/* A plain client on a TLS port gets a TLS record (alert 0x15 or
		 * handshake 0x16, version 3.x, length < 64 KiB) back: as a frame
		 * header that would be a length above 64 KiB, more than any
		 * handshake reply, so the test cannot misfire on a real reply. */
		if (!c->up && !c->ssl && c->rx_len >= 4 &&
		    (c->rx[0] == 0x15 || c->rx[0] == 0x16) && c->rx[1] == 0x03 &&
		    c->rx[2] >= 1 && c->rx[2] <= 4 && c->rx[3] == 0) {
			set_fail_str(c, PARLEY_FAIL_PLAIN_GOT_TLS, -PARLEY_EPROTO,
				     "the server answered with TLS");
			conn_drop(c, -PARLEY_EPROTO);
			return -PARLEY_EPROTO;
		}
		while (off < c->rx_len) {
			struct parley_frame f;
			int n = parley_proto_frame_decode(c->rx + off, c->rx_len - off,
							  c->max_frame, &f);
			if (n == -PARLEY_EINCOMPLETE)
				break;
			if (n < 0) {
				derr = n;
				break;
			}
			int d = dispatch(c, &f);
			off += (size_t)n;
			if (d < 0) {
				derr = d;
				break;
			}
			events += d;
			if (c->fd < 0)
				return -PARLEY_ECLOSED; /* dropped inside (ack failed) */
		}
		if (derr && !c->up) {
			/* garbage before the handshake is done: not a parley port */
			int http = c->rx_len >= 5 && !memcmp(c->rx, "HTTP/", 5);
			set_fail_str(c, PARLEY_FAIL_PROTOCOL, -PARLEY_EPROTO,
				     http ? "it answered with HTTP: the admin port?"
					  : "its answer is not a parley frame");
			derr = -PARLEY_EPROTO;
		}
		if (derr) {
			conn_drop(c, derr);
			return derr;
		}
		if (off) {
			memmove(c->rx, c->rx + off, c->rx_len - off);
			c->rx_len -= off;
		}
		if (rr < 0) {
			if (!c->up && !c->closing_err && !c->fail.kind) /* keep a GOAWAY's */
				set_fail_str(c, PARLEY_FAIL_CLOSED, -PARLEY_ECLOSED,
					     "the server closed the connection during the handshake");
			int e = c->closing_err ? c->closing_err : rr;
			conn_drop(c, e);
			return e == -PARLEY_EAUTH || e == -PARLEY_EVERSION ? e
									   : -PARLEY_ECLOSED;
		}
		if (rr == 0)
			break;
		send_ack_if_due(c, 0);
		if (c->fd < 0)
			return -PARLEY_ECLOSED;
	}
	send_ack_if_due(c, 1);
	if (c->fd < 0)
		return -PARLEY_ECLOSED;
	return events;
}

/* Wait for the reply to rid until deadline; pushes are dispatched meanwhile. */
static int wait_reply(struct parley_client *c, uint32_t rid, uint64_t deadline)
{
	c->wait_rid = rid;
	c->wait_done = 0;
	for (;;) {
		int r = pump(c);
		/* a reply that arrived just before the connection dropped still
		 * counts (it was copied out): no needless retry */
		if (c->wait_done) {
			c->wait_rid = 0;
			return 0;
		}
		if (r < 0) {
			c->wait_rid = 0; /* nothing is awaited any more */
			return r;
		}
		if (!(c->ssl && SSL_pending(c->ssl))) {
			r = wait_fd(c->fd, POLLIN, deadline);
			if (r < 0) {
				c->wait_rid = 0;
				return r;
			}
			if (r == 0 && now_ms() >= deadline) {
				c->wait_rid = 0;
				return -PARLEY_ETIMEDOUT;
			}
		}
	}
}

/* ---- connecting --------------------------------------------------------------- */

static int tcp_connect(struct parley_client *c, uint64_t deadline)
{
	char port[8];
	snprintf(port, sizeof port, "%u", c->o.port);
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int g = getaddrinfo(c->host, port, &hints, &res);
	if (g != 0) {
		PLOG_W("client", "cannot resolve", "host=%s err=\"%s\"", c->host,
		       gai_strerror(g));
		set_fail_str(c, PARLEY_FAIL_RESOLVE, -PARLEY_ENOTFOUND, gai_strerror(g));
		return -PARLEY_ENOTFOUND;
	}
	int err = -PARLEY_ECLOSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (r < 0 && errno == EINPROGRESS) {
			r = wait_fd(fd, POLLOUT, deadline);
			if (r == 1) {
				int soerr = 0;
				socklen_t sl = sizeof soerr;
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
				r = soerr ? (errno = soerr, -1) : 0;
			} else {
				errno = r == 0 ? ETIMEDOUT : -r;
				r = -1;
			}
		}
		if (r == 0) {
			c->fd = fd;
			freeaddrinfo(res);
			return 0;
		}
		err = errno == ETIMEDOUT ? -PARLEY_ETIMEDOUT : -errno;
		if (err == -PARLEY_ETIMEDOUT)
			set_fail_str(c, PARLEY_FAIL_TIMEOUT, err, "TCP connect timed out");
		else
			set_fail_str(c, PARLEY_FAIL_CONNECT, err, strerror(errno));
		close(fd);
	}
	freeaddrinfo(res);
	return err;
}

static int tls_handshake(struct parley_client *c, uint64_t deadline)
{
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl)
		return -PARLEY_ENOMEM;
	SSL_set_fd(c->ssl, c->fd);
	struct in6_addr a6;
	struct in_addr a4;
	int is_ip = inet_pton(AF_INET, c->sni, &a4) == 1 ||
		    inet_pton(AF_INET6, c->sni, &a6) == 1;
	if (is_ip) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
		X509_VERIFY_PARAM_set1_ip_asc(vp, c->sni);
	} else {
		SSL_set_tlsext_host_name(c->ssl, c->sni);
		SSL_set1_host(c->ssl, c->sni);
	}
	for (;;) {
		ERR_clear_error();
		int r = SSL_connect(c->ssl);
		if (r == 1)
			return 0;
		int e = SSL_get_error(c->ssl, r);
		short want;
		if (e == SSL_ERROR_WANT_READ)
			want = POLLIN;
		else if (e == SSL_ERROR_WANT_WRITE)
			want = POLLOUT;
		else {
			long v = SSL_get_verify_result(c->ssl);
			unsigned long ec = ERR_peek_last_error();
			char buf[256];
			ERR_error_string_n(ec, buf, sizeof buf);
			PLOG_W("client", "TLS handshake failed", "verify=\"%s\" err=\"%s\"",
			       X509_verify_cert_error_string(v), buf);
			if (v != X509_V_OK) {
				/* the server's certificate is not trusted: retrying
				 * will not change that, so stop reconnecting */
				set_fail_str(c, PARLEY_FAIL_TLS_VERIFY, -PARLEY_EAUTH,
					     X509_verify_cert_error_string(v));
				c->fatal_err = -PARLEY_EAUTH;
				return -PARLEY_EAUTH;
			}
			const char *why = ec ? ERR_reason_error_string(ec) : NULL;
			set_fail_str(c, PARLEY_FAIL_TLS, -PARLEY_EPROTO,
				     why ? why : "connection closed during the TLS handshake");
			return -PARLEY_EPROTO;
		}
		int w = wait_fd(c->fd, want, deadline);
		if (w == 0) {
			set_fail_str(c, PARLEY_FAIL_TIMEOUT, -PARLEY_ETIMEDOUT,
				     "no answer to the TLS handshake");
			return -PARLEY_ETIMEDOUT;
		}
		if (w < 0)
			return w;
	}
}

/* An ERROR answering a handshake step carried retry_after_ms (HELLO
 * refused by admission control, SYNC rate limited): the next connect
 * waits that plus jitter 0..retry_after/2. */
static void handshake_retry_after(struct parley_client *c, uint64_t ra)
{
	c->fail.retry_after_ms = (uint32_t)ra;
	if (!ra)
		return;
	ra += parley_rng_below(&c->rng, ra / 2 + 1);
	if (now_ms() + ra > c->not_before_ms)
		c->not_before_ms = now_ms() + ra;
}

/* HELLO, AUTH and (if subscribed) SYNC on a fresh transport. */
static int handshake(struct parley_client *c, uint64_t deadline)
{
	struct parley_msg m;
	memset(&m, 0, sizeof m);
	m.type = PARLEY_T_HELLO;
	m.hello.min_version = PARLEY_PROTO_VERSION;
	m.hello.max_version = PARLEY_PROTO_VERSION;
	m.hello.features = (c->o.want_zstd ? PARLEY_FEAT_ZSTD : 0) |
			   (c->o.want_early ? PARLEY_FEAT_EARLY : 0);
	m.hello.device_id = parley_str_c(c->device);
	m.hello.client_name = parley_str_c(c->cname);
	uint32_t rid = next_rid(c);
	int r = send_msg(c, rid, &m, deadline);
	if (r < 0)
		return r;
	r = wait_reply(c, rid, deadline);
	if (r < 0)
		return r;
	if (c->rmsg->type == PARLEY_T_ERROR) {
		r = -(int)c->rmsg->error.code;
		set_fail(c, PARLEY_FAIL_SERVER, r, c->rmsg->error.text.p, c->rmsg->error.text.len);
		if (r == -PARLEY_EVERSION)
			c->fatal_err = r;
		handshake_retry_after(c, c->rmsg->error.retry_after_ms);
		return r;
	}
	if (c->rmsg->type != PARLEY_T_HELLO_OK)
		return -PARLEY_EPROTO;
	const struct parley_hello_ok *h = &c->rmsg->hello_ok;
	if (h->version != PARLEY_PROTO_VERSION || h->max_frame < PARLEY_PROTO_MAX_FRAME_MIN ||
	    h->max_frame > PARLEY_PROTO_MAX_FRAME_HARD)
		return -PARLEY_EPROTO;
	c->limits = *h;
	size_t sl = PARLEY_MIN(h->server_id.len, sizeof c->server_id - 1);
	if (sl)
		memcpy(c->server_id, h->server_id.p, sl);
	c->server_id[sl] = 0;
	c->limits.server_id = (struct parley_str){c->server_id, (uint16_t)sl};
	c->max_frame = h->max_frame;
	c->zstd = c->o.want_zstd && (h->features & PARLEY_FEAT_ZSTD);

	m.type = PARLEY_T_AUTH;
	m.auth.token = parley_str_c(c->token);
	rid = next_rid(c);
	if ((r = send_msg(c, rid, &m, deadline)) < 0)
		return r;
	if ((r = wait_reply(c, rid, deadline)) < 0)
		return r;
	if (c->rmsg->type == PARLEY_T_ERROR) {
		r = -(int)c->rmsg->error.code;
		set_fail(c, PARLEY_FAIL_SERVER, r, c->rmsg->error.text.p, c->rmsg->error.text.len);
		if (r == -PARLEY_EAUTH)
			c->fatal_err = r;
		return r;
	}
	if (c->rmsg->type != PARLEY_T_AUTH_OK)
		return -PARLEY_EPROTO;
	memcpy(c->user_id, c->rmsg->auth_ok.user_id.p, c->rmsg->auth_ok.user_id.len);
	c->user_id[c->rmsg->auth_ok.user_id.len] = 0;
	if (c->fd < 0) /* e.g. GOAWAY right after AUTH_OK (AUTH_EXPIRED: fatal) */
		return c->fatal_err ? c->fatal_err : -PARLEY_ECLOSED;
	c->up = 1;

	if (c->subscribed) {
		m.type = PARLEY_T_SYNC;
		/* never SYNC(0) again once we know our place: a device the server
		 * has not seen ack anything would restart live and skip events */
		m.sync.from_inbox_seq = c->cursor_valid ? c->cursor + 1 : c->sub_from;
		rid = next_rid(c);
		if ((r = send_msg(c, rid, &m, deadline)) < 0)
			return r;
		if ((r = wait_reply(c, rid, deadline)) < 0)
			return r;
		if (c->rmsg->type == PARLEY_T_ERROR) {
			r = -(int)c->rmsg->error.code;
			set_fail(c, PARLEY_FAIL_SERVER, r, c->rmsg->error.text.p,
				 c->rmsg->error.text.len);
			handshake_retry_after(c, c->rmsg->error.retry_after_ms);
			return r;
		}
		if (c->rmsg->type != PARLEY_T_SYNC_OK)
			return -PARLEY_EPROTO;
	}
	if (c->up && c->fd >= 0)
		return 0;
	return c->fatal_err ? c->fatal_err : -PARLEY_ECLOSED;
}

static int connect_once(struct parley_client *c, uint64_t deadline)
{
	conn_drop(c, -PARLEY_ECLOSED);
	memset(&c->fail, 0, sizeof c->fail);
	uint64_t d = PARLEY_MIN(deadline, now_ms() + c->o.connect_timeout_ms);
	int r = tcp_connect(c, d);
	if (r == 0 && c->ctx)
		r = tls_handshake(c, d);
	if (r == 0) {
		c->last_rx_ms = c->last_tx_ms = now_ms();
		c->closing_err = 0;
		r = handshake(c, d);
		if (r == -PARLEY_ETIMEDOUT && !c->fail.kind)
			set_fail_str(c, PARLEY_FAIL_TIMEOUT, r,
				     "no answer to the handshake (is this a parley port?)");
		else if (r == -PARLEY_EPROTO && !c->fail.kind)
			set_fail_str(c, PARLEY_FAIL_PROTOCOL, r,
				     "the server's answer is not parley's protocol");
	}
	if (r < 0) {
		conn_drop(c, r);
		return r;
	}
	/* backoff resets once the connection has lived CLIENT_STABLE_MS */
	c->up_since_ms = now_ms();
	PLOG_D("client", "connected", "host=%s port=%u user=%s server=%s", c->host,
	       c->o.port, c->user_id, c->server_id);
	if (c->o.on_state)
		c->o.on_state(c->o.user, PARLEY_CLIENT_CONNECTED, 0);
	/* events may have come in right behind SYNC_OK */
	r = pump(c);
	if (r < 0 && c->fatal_err)
		return c->fatal_err; /* e.g. GOAWAY AUTH_EXPIRED right behind AUTH_OK */
	return r < 0 ? r : 0;
}

/* Sleep until t (monotonic ms), but no later than deadline. */
static void sleep_until(uint64_t t)
{
	for (;;) {
		uint64_t now = now_ms();
		if (now >= t)
			return;
		uint64_t ms = t - now;
		struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* Reconnect with backoff until up, a fatal error, or the deadline. */
static int ensure_up(struct parley_client *c, uint64_t deadline)
{
	for (;;) {
		if (c->up)
			return 0;
		if (c->fatal_err)
			return c->fatal_err;
		uint64_t now = now_ms();
		if (c->not_before_ms > now) {
			if (c->not_before_ms >= deadline) {
				sleep_until(deadline);
				return -PARLEY_ETIMEDOUT;
			}
			sleep_until(c->not_before_ms);
		}
		if (now_ms() >= deadline)
			return -PARLEY_ETIMEDOUT;
		int r = connect_once(c, deadline);
		if (r == 0) {
			c->round_fails = 0;
			return 0;
		}
		if (c->fatal_err)
			return c->fatal_err;
		if (c->o.no_reconnect)
			return r;
		node_next(c); /* a cluster: try another node next */
		/* ... at once: back off only once every node of the list
		 * failed in a row (a dead node must not delay the move to a
		 * live one during a failover) */
		if (c->nnodes > 1 && ++c->round_fails < c->nnodes)
			continue;
		c->round_fails = 0;
		/* exponential backoff with full jitter in [b/2, b], unless the
		 * server asked for longer (HELLO refused with retry_after) */
		uint32_t b = c->backoff_ms;
		uint64_t nb = now_ms() + b / 2 + parley_rng_below(&c->rng, b / 2 + 1);
		if (nb > c->not_before_ms)
			c->not_before_ms = nb;
		c->backoff_ms = (uint32_t)PARLEY_MIN((uint64_t)b * 2, c->o.backoff_max_ms);
		PLOG_D("client", "connect failed, backing off", "err=%s backoff_ms=%u",
		       parley_errname(r), b);
	}
}

int parley_client_connect(struct parley_client *c)
{
	if (c->in_cb)
		return -PARLEY_EINVAL;
	c->fatal_err = 0;
	c->not_before_ms = 0;
	/* a node list: each node once, from the current one */
	int r = -PARLEY_ECLOSED;
	for (uint32_t k = 0; k < PARLEY_MAX(1u, c->nnodes); k++) {
		r = connect_once(c, now_ms() + c->o.connect_timeout_ms);
		if (r == 0 || c->fatal_err)
			return r;
		node_next(c);
	}
	return r;
}

int parley_client_reconnect(struct parley_client *c)
{
	if (c->in_cb)
		return -PARLEY_EINVAL;
	conn_drop(c, -PARLEY_ECLOSED);
	return ensure_up(c, now_ms() + c->o.call_deadline_ms);
}

/* ---- requests ------------------------------------------------------------------- */

static int retryable(uint32_t code)
{
	switch (code) {
	case PARLEY_ERATE:
	case PARLEY_EAGAIN:
	case PARLEY_ENOTLEADER:
	case PARLEY_ECLOSED:
	case PARLEY_EFULL:
	case PARLEY_ETIMEDOUT:
	case PARLEY_EIO:
		return 1;
	}
	return 0;
}

/* Sleep until t while still serving the connection (events keep flowing). */
static void pause_serving(struct parley_client *c, uint64_t t)
{
	while (now_ms() < t) {
		if (c->fd < 0) {
			sleep_until(t);
			return;
		}
		int r = wait_fd(c->fd, POLLIN, t);
		if (r > 0 && pump(c) < 0)
			continue;
	}
}

/* Send req and wait for reply_type, retrying (invariant 3). */
static int call(struct parley_client *c, const struct parley_msg *req,
		uint16_t reply_type)
{
	if (c->in_cb)
		return -PARLEY_EINVAL;
	int r = parley_proto_size(req);
	if (r < 0)
		return r;
	if (!c->fatal_err && !c->draining) /* keep the cause of what is coming */
		memset(&c->fail, 0, sizeof c->fail);
	uint64_t deadline = now_ms() + c->o.call_deadline_ms;
	int last = -PARLEY_ETIMEDOUT;
	uint32_t backoff = c->o.backoff_min_ms;
	uint32_t hops = 0; /* NOTLEADER answers in a row */
	uint32_t redirects = 0; /* of them, followed leader hints */
	while (now_ms() < deadline) {
		/* after GOAWAY the server answers new requests with CLOSED: move
		 * to a new connection (after retry_after) instead */
		if (c->up && c->draining)
			conn_drop(c, -PARLEY_ECLOSED);
		if (!c->up) {
			if (c->o.no_reconnect && c->fd < 0)
				return -PARLEY_ECLOSED;
			r = ensure_up(c, deadline);
			if (r < 0) {
				if (c->fatal_err)
					return c->fatal_err;
				return last != -PARLEY_ETIMEDOUT ? last : r;
			}
		}
		uint32_t rid = next_rid(c);
		uint64_t t = PARLEY_MIN(deadline, now_ms() + c->o.request_timeout_ms);
		r = send_msg(c, rid, req, t);
		if (r == -PARLEY_ETOOBIG || r == -PARLEY_EINVAL || r == -PARLEY_ENOMEM)
			return r;
		if (r == 0)
			r = wait_reply(c, rid, t);
		if (r < 0) {
			/* fate unknown: drop and resend on a fresh connection */
			last = r;
			conn_drop(c, r);
			if (c->o.no_reconnect)
				return r;
			continue;
		}
		if (c->rmsg->type == PARLEY_T_ERROR) {
			const struct parley_error_msg *e = &c->rmsg->error;
			last = -(int)e->code;
			set_fail(c, PARLEY_FAIL_SERVER, last, e->text.p, e->text.len);
			if (!retryable(e->code))
				return last;
			struct parley_str hint = c->o.tls ? e->leader_tls_addr
							  : e->leader_addr;
			if (e->code == PARLEY_ENOTLEADER && c->nnodes &&
			    !c->o.no_reconnect &&
			    (c->nnodes > 1 || (hint.len && redirects < CLIENT_MAX_REDIRECTS))) {
				/* that node does not lead the partition: the
				 * same request at the leader it names, else at
				 * the next node. The node answered, so leaving
				 * it is no failure: the reconnect backoff does
				 * not grow (during an election every node
				 * answers NOTLEADER) */
				uint32_t b = c->backoff_ms;
				conn_drop(c, -PARLEY_ENOTLEADER);
				c->backoff_ms = b;
				bool hinted = redirects < CLIENT_MAX_REDIRECTS &&
					      node_redirect(c, hint) == 0;
				if (!hinted)
					node_next(c);
				c->not_before_ms = 0;
				/* ... at once: pause (and grow the pause) only
				 * once every node answered NOTLEADER in a row
				 * (an election) or the hints went round in
				 * circles, so one follower or a dead node in
				 * the list does not stretch a failover */
				if (hinted && ++redirects <= CLIENT_MAX_REDIRECTS)
					continue;
				if (!hinted && ++hops % c->nnodes != 0)
					continue;
			}
			uint64_t pause_ms = e->retry_after_ms ? e->retry_after_ms : backoff;
			backoff = (uint32_t)PARLEY_MIN((uint64_t)backoff * 2, c->o.backoff_max_ms);
			pause_ms += parley_rng_below(&c->rng, pause_ms / 4 + 1);
			if (now_ms() + pause_ms >= deadline)
				return last;
			pause_serving(c, now_ms() + pause_ms);
			continue;
		}
		if (c->rmsg->type != reply_type) {
			conn_drop(c, -PARLEY_EPROTO);
			return -PARLEY_EPROTO;
		}
		/* the server answered a request: it proved healthy, so losing
		 * this connection later (a node's death, a failover) starts
		 * over at backoff_min_ms instead of growing the backoff of
		 * every connection that died within CLIENT_STABLE_MS */
		c->backoff_ms = c->o.backoff_min_ms;
		return 0;
	}
	return last;
}

int parley_client_conv_open(struct parley_client *c, const char *peer,
			    const struct parley_conv **conv)
{
	size_t n = strlen(peer);
	if (!parley_proto_user_id_valid(peer, n))
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_CONV_OPEN};
	m.conv_open.peer = (struct parley_str){peer, (uint16_t)n};
	int r = call(c, &m, PARLEY_T_CONV);
	if (r == 0 && conv)
		*conv = &c->rmsg->conv;
	return r;
}

/* A SEND's or EDIT's conversation id and body: 0 (*cl its length),
 * -PARLEY_EINVAL, or -PARLEY_ETOOBIG over the server's max_body. */
static int check_conv_body(const struct parley_client *c, const char *conv,
			   const void *body, size_t len, size_t *cl)
{
	*cl = strlen(conv);
	if (*cl == 0 || *cl > PARLEY_PROTO_MAX_CONV_ID || len > UINT32_MAX ||
	    (len && !body))
		return -PARLEY_EINVAL;
	if (c->up && c->limits.max_body && len > c->limits.max_body)
		return -PARLEY_ETOOBIG;
	return 0;
}

/* An ACK (SEND / EDIT / DELETE) of request id: -PARLEY_EPROTO if it names
 * another client_msg_id, else 0 and res (when given) filled from it. */
static int ack_result(const uint8_t got[PARLEY_PROTO_MSG_ID_LEN],
		      const uint8_t id[PARLEY_PROTO_MSG_ID_LEN], uint64_t seq,
		      uint64_t server_ts_ms, uint8_t flags, struct parley_send_result *res)
{
	if (memcmp(got, id, PARLEY_PROTO_MSG_ID_LEN) != 0)
		return -PARLEY_EPROTO;
	if (res) {
		res->seq = seq;
		res->server_ts_ms = server_ts_ms;
		res->duplicate = !!(flags & PARLEY_ACKF_DUPLICATE);
		memcpy(res->client_msg_id, id, PARLEY_PROTO_MSG_ID_LEN);
	}
	return 0;
}

int parley_client_send_id(struct parley_client *c, const char *conv,
			  const uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN],
			  uint16_t content_type, const void *body, size_t len,
			  struct parley_send_result *res)
{
	size_t cl;
	int r = check_conv_body(c, conv, body, len, &cl);
	if (r < 0)
		return r;
	struct parley_msg m = {.type = PARLEY_T_SEND};
	m.send.conv = (struct parley_str){conv, (uint16_t)cl};
	memcpy(m.send.client_msg_id, client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	m.send.content_type = content_type;
	m.send.body = (struct parley_bytes){body, (uint32_t)len};
	r = call(c, &m, PARLEY_T_SEND_ACK);
	if (r < 0)
		return r;
	const struct parley_send_ack *a = &c->rmsg->send_ack;
	return ack_result(a->client_msg_id, client_msg_id, a->seq, a->server_ts_ms,
			  a->flags, res);
}

int parley_client_send(struct parley_client *c, const char *conv,
		       uint16_t content_type, const void *body, size_t len,
		       struct parley_send_result *res)
{
	uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
	int r = parley_client_random_id(id);
	if (r < 0)
		return r;
	return parley_client_send_id(c, conv, id, content_type, body, len, res);
}

/* ---- edits and deletes ---- */

static int edit_call(struct parley_client *c, struct parley_msg *m,
		     uint16_t reply_type, const uint8_t id[PARLEY_PROTO_MSG_ID_LEN],
		     struct parley_send_result *res)
{
	int r = call(c, m, reply_type);
	if (r < 0)
		return r;
	const struct parley_edit_ack *a = &c->rmsg->edit_ack;
	return ack_result(a->client_msg_id, id, a->seq, a->server_ts_ms, a->flags, res);
}

int parley_client_edit_id(struct parley_client *c, const char *conv,
			  const uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN],
			  uint64_t ref_seq, uint16_t content_type,
			  const void *body, size_t len,
			  struct parley_send_result *res)
{
	size_t cl;
	int r = ref_seq == 0 ? -PARLEY_EINVAL : check_conv_body(c, conv, body, len, &cl);
	if (r < 0)
		return r;
	struct parley_msg m = {.type = PARLEY_T_EDIT};
	m.edit.conv = (struct parley_str){conv, (uint16_t)cl};
	memcpy(m.edit.client_msg_id, client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	m.edit.ref_seq = ref_seq;
	m.edit.content_type = content_type;
	m.edit.body = (struct parley_bytes){body, (uint32_t)len};
	return edit_call(c, &m, PARLEY_T_EDIT_ACK, client_msg_id, res);
}

int parley_client_delete_id(struct parley_client *c, const char *conv,
			    const uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN],
			    uint64_t ref_seq, struct parley_send_result *res)
{
	size_t cl = strlen(conv);
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID || ref_seq == 0)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_DELETE};
	m.del.conv = (struct parley_str){conv, (uint16_t)cl};
	memcpy(m.del.client_msg_id, client_msg_id, PARLEY_PROTO_MSG_ID_LEN);
	m.del.ref_seq = ref_seq;
	return edit_call(c, &m, PARLEY_T_DELETE_ACK, client_msg_id, res);
}

int parley_client_edit(struct parley_client *c, const char *conv,
		       uint64_t ref_seq, uint16_t content_type,
		       const void *body, size_t len,
		       struct parley_send_result *res)
{
	uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
	int r = parley_client_random_id(id);
	if (r < 0)
		return r;
	return parley_client_edit_id(c, conv, id, ref_seq, content_type, body,
				     len, res);
}

int parley_client_delete(struct parley_client *c, const char *conv,
			 uint64_t ref_seq, struct parley_send_result *res)
{
	uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
	int r = parley_client_random_id(id);
	if (r < 0)
		return r;
	return parley_client_delete_id(c, conv, id, ref_seq, res);
}

int parley_client_retention(struct parley_client *c, const char *conv,
			    uint8_t flags, uint64_t max_age_ms,
			    uint64_t max_count,
			    const struct parley_retention_ok **ok)
{
	size_t cl = strlen(conv);
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_RETENTION};
	m.retention = (struct parley_retention){
		.conv = {conv, (uint16_t)cl}, .flags = flags,
		.max_age_ms = max_age_ms, .max_count = max_count};
	int r = call(c, &m, PARLEY_T_RETENTION_OK);
	if (r == 0 && ok)
		*ok = &c->rmsg->retention_ok;
	return r;
}

int parley_client_history(struct parley_client *c, const char *conv,
			  uint64_t before_seq, uint16_t limit,
			  const struct parley_history_page **page)
{
	size_t cl = strlen(conv);
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID || limit < 1 ||
	    limit > PARLEY_PROTO_MAX_HISTORY)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_HISTORY};
	m.history = (struct parley_history){{conv, (uint16_t)cl}, before_seq, limit};
	int r = call(c, &m, PARLEY_T_HISTORY_PAGE);
	if (r == 0 && page)
		*page = &c->rmsg->history_page;
	return r;
}

int parley_client_conv_list(struct parley_client *c, uint16_t limit,
			    const struct parley_conv_list_ok **list)
{
	if (limit < 1 || limit > PARLEY_PROTO_MAX_LIST)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_CONV_LIST};
	m.conv_list.limit = limit;
	int r = call(c, &m, PARLEY_T_CONV_LIST_OK);
	if (r == 0 && list)
		*list = &c->rmsg->conv_list_ok;
	return r;
}

int parley_client_conv_list_page(struct parley_client *c, uint16_t limit,
				 uint64_t before_ts_ms, const char *before_conv,
				 const struct parley_conv_list_ok **list)
{
	size_t bl = before_conv ? strlen(before_conv) : 0;
	if (limit < 1 || limit > PARLEY_PROTO_MAX_LIST ||
	    bl > PARLEY_PROTO_MAX_CONV_ID)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_CONV_LIST};
	m.conv_list.limit = limit;
	m.conv_list.before_ts_ms = before_ts_ms;
	m.conv_list.before_conv = (struct parley_str){before_conv, (uint16_t)bl};
	int r = call(c, &m, PARLEY_T_CONV_LIST_OK);
	if (r == 0 && list)
		*list = &c->rmsg->conv_list_ok;
	return r;
}

int parley_client_read_marker(struct parley_client *c, const char *conv,
			      uint64_t seq, uint64_t *read_seq)
{
	size_t cl = strlen(conv);
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID || seq == 0)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_READ_MARKER};
	m.read_marker = (struct parley_read_marker){{conv, (uint16_t)cl}, seq};
	int r = call(c, &m, PARLEY_T_READ_MARKER_OK);
	if (r == 0 && read_seq)
		*read_seq = c->rmsg->read_marker_ok.read_seq;
	return r;
}

int parley_client_receipts(struct parley_client *c, const char *conv,
			   uint64_t seq, const char *after, uint16_t limit,
			   const struct parley_receipts_ok **out)
{
	size_t cl = strlen(conv), al = after ? strlen(after) : 0;
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID || seq == 0 || limit < 1 ||
	    limit > PARLEY_PROTO_MAX_RECEIPTS || al > PARLEY_PROTO_MAX_USER_ID)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_RECEIPTS};
	m.receipts = (struct parley_receipts){{conv, (uint16_t)cl}, seq,
					      {after, (uint16_t)al}, limit};
	int r = call(c, &m, PARLEY_T_RECEIPTS_OK);
	if (r == 0 && out)
		*out = &c->rmsg->receipts_ok;
	return r;
}

/* ---- groups ---------------------------------------------------------------- */

static int group_users(struct parley_str *out, const char *const *users,
		       size_t n)
{
	if (n > PARLEY_PROTO_MAX_GROUP_USERS || (n && !users))
		return -PARLEY_EINVAL;
	for (size_t i = 0; i < n; i++) {
		size_t l = users[i] ? strlen(users[i]) : 0;
		if (!parley_proto_user_id_valid(users[i], l))
			return -PARLEY_EINVAL;
		out[i] = (struct parley_str){users[i], (uint16_t)l};
	}
	return 0;
}

int parley_client_group_create(struct parley_client *c, const char *name,
			       uint8_t settings, const char *const *users,
			       size_t n, const struct parley_group_ok **ok)
{
	size_t nl = name ? strlen(name) : 0;
	if (nl < 1 || nl > 255)
		return -PARLEY_EINVAL;
	/* ~16 KiB: the union holds a CONV with 1024 members */
	struct parley_msg *m = calloc(1, sizeof *m);
	if (!m)
		return -PARLEY_ENOMEM;
	m->type = PARLEY_T_GROUP_CREATE;
	int r = group_users(m->group_create.users, users, n);
	if (!r)
		r = parley_client_random_id(m->group_create.create_id);
	if (!r) {
		m->group_create.name = (struct parley_str){name, (uint16_t)nl};
		m->group_create.settings = settings;
		m->group_create.count = (uint16_t)n;
		r = call(c, m, PARLEY_T_GROUP_CREATE_OK);
	}
	free(m);
	if (r == 0 && ok)
		*ok = &c->rmsg->group_ok;
	return r;
}

static int group_change(struct parley_client *c, uint16_t type,
			const char *conv, const char *const *users, size_t n,
			uint8_t role, const struct parley_group_ok **ok)
{
	size_t cl = conv ? strlen(conv) : 0;
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID)
		return -PARLEY_EINVAL;
	struct parley_msg *m = calloc(1, sizeof *m);
	if (!m)
		return -PARLEY_ENOMEM;
	m->type = type;
	int r = group_users(m->group_change.users, users, n);
	if (!r) {
		m->group_change.conv = (struct parley_str){conv, (uint16_t)cl};
		m->group_change.role = role;
		m->group_change.count = (uint16_t)n;
		r = call(c, m, PARLEY_REPLY_OF(type));
	}
	free(m);
	if (r == 0 && ok)
		*ok = &c->rmsg->group_ok;
	return r;
}

int parley_client_group_add(struct parley_client *c, const char *conv,
			    const char *const *users, size_t n, uint8_t role,
			    const struct parley_group_ok **ok)
{
	return group_change(c, PARLEY_T_GROUP_ADD, conv, users, n, role, ok);
}

int parley_client_group_remove(struct parley_client *c, const char *conv,
			       const char *const *users, size_t n,
			       const struct parley_group_ok **ok)
{
	return group_change(c, PARLEY_T_GROUP_REMOVE, conv, users, n, 0, ok);
}

int parley_client_group_leave(struct parley_client *c, const char *conv,
			      const struct parley_group_ok **ok)
{
	return group_change(c, PARLEY_T_GROUP_LEAVE, conv, NULL, 0, 0, ok);
}

int parley_client_group_role(struct parley_client *c, const char *conv,
			     const char *const *users, size_t n, uint8_t role,
			     const struct parley_group_ok **ok)
{
	return group_change(c, PARLEY_T_GROUP_ROLE, conv, users, n, role, ok);
}

int parley_client_group_set(struct parley_client *c, const char *conv,
			    uint8_t fields, const char *name, uint8_t settings,
			    const struct parley_group_ok **ok)
{
	size_t cl = conv ? strlen(conv) : 0;
	size_t nl = name && (fields & PARLEY_GSET_NAME) ? strlen(name) : 0;
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID || !fields ||
	    (fields & ~PARLEY_GSET_KNOWN) || nl > PARLEY_PROTO_MAX_TITLE)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_GROUP_SET};
	m.group_set = (struct parley_group_set){
		{conv, (uint16_t)cl}, fields, {nl ? name : NULL, (uint16_t)nl},
		fields & PARLEY_GSET_SETTINGS ? settings : 0};
	int r = call(c, &m, PARLEY_T_GROUP_SET_OK);
	if (r == 0 && ok)
		*ok = &c->rmsg->group_ok;
	return r;
}

int parley_client_group_info(struct parley_client *c, const char *conv,
			     uint32_t from_index, uint16_t limit,
			     const struct parley_group_info_ok **info)
{
	size_t cl = conv ? strlen(conv) : 0;
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID || limit < 1 ||
	    limit > PARLEY_PROTO_MAX_GROUP_USERS)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_GROUP_INFO};
	m.group_info = (struct parley_group_info){{conv, (uint16_t)cl},
						  from_index, limit};
	int r = call(c, &m, PARLEY_T_GROUP_INFO_OK);
	if (r == 0 && info)
		*info = &c->rmsg->group_info_ok;
	return r;
}

static const char *role_name(uint8_t r)
{
	return r == PARLEY_ROLE_OWNER ? "owner"
	       : r == PARLEY_ROLE_ADMIN ? "admin"
				       : "member";
}

int parley_membership_describe(const uint8_t *body, size_t len, char *out,
			       size_t cap)
{
	if (!out || cap < 8)
		return -PARLEY_EINVAL;
	struct le_reader r;
	le_reader_init(&r, body ? body : (const uint8_t *)"", body ? len : 0);
	uint8_t ver = le_read8(&r), op = le_read8(&r);
	uint8_t settings = le_read8(&r);
	uint8_t al = le_read8(&r);
	le_read_bytes(&r, al);
	uint16_t nl = le_read16(&r);
	const char *name = (const char *)le_read_bytes(&r, nl);
	uint16_t n = le_read16(&r);
	if (!r.ok || ver != 1 || op < PARLEY_GOP_CREATE || op > PARLEY_GOP_SET)
		return -PARLEY_EPROTO;
	size_t o = 0;
#define PUT(...)                                                               \
	do {                                                                   \
		int k_ = snprintf(out + o, cap - o, __VA_ARGS__);              \
		o = k_ < 0 ? o : PARLEY_MIN(cap - 1, o + (size_t)k_);          \
	} while (0)
	switch (op) {
	case PARLEY_GOP_CREATE:
		PUT("created the group \"%.*s\"%s", (int)nl, name, n ? " with " : "");
		break;
	case PARLEY_GOP_ADD: PUT("added "); break;
	case PARLEY_GOP_REMOVE: PUT("removed "); break;
	case PARLEY_GOP_LEAVE: PUT("left"); break;
	case PARLEY_GOP_ROLE: PUT("made "); break;
	case PARLEY_GOP_SET: {
		const char *hist = settings & PARLEY_GROUPF_HISTORY_ALL
					   ? "new members see the whole history"
					   : "new members see the history from their join";
		if (settings & PARLEY_GEV_SET_NAME)
			PUT("renamed the group to \"%.*s\"%s%s", (int)nl, name,
			    settings & PARLEY_GEV_SET_SETTINGS ? "; " : "",
			    settings & PARLEY_GEV_SET_SETTINGS ? hist : "");
		else if (settings & PARLEY_GEV_SET_SETTINGS)
			PUT("changed the group's history: %s", hist);
		else
			PUT("changed the group's settings");
		break;
	}
	}
	uint8_t last_role = 0;
	for (uint16_t i = 0; i < n; i++) {
		uint8_t ul = le_read8(&r);
		const char *u = (const char *)le_read_bytes(&r, ul);
		uint8_t role = le_read8(&r);
		if (!r.ok)
			return -PARLEY_EPROTO;
		PUT("%s%.*s", i ? ", " : "", (int)ul, u);
		if (op != PARLEY_GOP_ROLE && role == PARLEY_ROLE_ADMIN)
			PUT(" (admin)");
		last_role = role;
	}
	if (op == PARLEY_GOP_ROLE)
		PUT(" %s", role_name(last_role));
#undef PUT
	if (o >= cap - 1 && cap >= 4)
		memcpy(out + cap - 4, "...", 4);
	return (int)strlen(out);
}

int parley_client_ping(struct parley_client *c)
{
	struct parley_msg m = {.type = PARLEY_T_PING};
	m.ping.nonce = parley_rng_next(&c->rng);
	int r = call(c, &m, PARLEY_T_PONG);
	if (r == 0 && c->rmsg->pong.nonce != m.ping.nonce)
		return -PARLEY_EPROTO;
	return r;
}

int parley_client_subscribe(struct parley_client *c, uint64_t from_inbox_seq,
			    struct parley_sync_ok *ok)
{
	if (c->in_cb)
		return -PARLEY_EINVAL;
	if (c->subscribed)
		return -PARLEY_EEXIST;
	struct parley_msg m = {.type = PARLEY_T_SYNC};
	m.sync.from_inbox_seq = from_inbox_seq;
	c->sub_from = from_inbox_seq;
	if (from_inbox_seq) {
		c->cursor = from_inbox_seq - 1;
		c->cursor_valid = 0; /* SYNC_OK decides */
	}
	/* If the connection drops mid-call, the reconnect path re-sends SYNC
	 * only once `subscribed` is set; until then call() retries it. */
	int r = call(c, &m, PARLEY_T_SYNC_OK);
	if (r < 0)
		return r;
	c->subscribed = 1;
	if (ok)
		*ok = c->rmsg->sync_ok;
	return 0;
}

/* ---- typing and presence ------------------------------------------------------------ */

int parley_client_typing(struct parley_client *c, const char *conv, int state)
{
	if (c->in_cb)
		return -PARLEY_EINVAL;
	size_t cl = strlen(conv);
	if (cl == 0 || cl > PARLEY_PROTO_MAX_CONV_ID ||
	    (state != PARLEY_TYPING_STARTED && state != PARLEY_TYPING_STOPPED))
		return -PARLEY_EINVAL;
	if (!c->up)
		return -PARLEY_ECLOSED;
	uint64_t now = now_ms();
	if (now < c->note_pause_until)
		return -PARLEY_ERATE; /* the server said when to try again */
	int same = strcmp(c->typing_conv, conv) == 0;
	if (state == PARLEY_TYPING_STARTED && same &&
	    now - c->typing_sent_ms < PARLEY_TYPING_REFRESH_MS)
		return 0; /* the receivers' TTL still runs: coalesced here */
	if (state == PARLEY_TYPING_STOPPED && !same)
		return 0; /* nothing started here */
	struct parley_msg m = {.type = PARLEY_T_TYPING};
	m.typing.conv = (struct parley_str){conv, (uint16_t)cl};
	m.typing.state = (uint8_t)state;
	int r = send_msg(c, 0, &m, now + c->o.request_timeout_ms);
	if (r < 0) {
		conn_drop(c, r);
		return -PARLEY_ECLOSED;
	}
	if (state == PARLEY_TYPING_STARTED) {
		memcpy(c->typing_conv, conv, cl + 1);
		c->typing_sent_ms = now;
	} else {
		c->typing_conv[0] = '\0';
	}
	return 0;
}

int parley_client_notify_error(struct parley_client *c, uint32_t *retry_after_ms)
{
	int e = c->note_err;
	if (retry_after_ms)
		*retry_after_ms = c->note_retry_ms;
	c->note_err = 0;
	c->note_retry_ms = 0;
	return e;
}

int parley_client_presence_sub(struct parley_client *c, int op,
			       const char *const *users, size_t n,
			       const struct parley_presence_sub_ok **ok)
{
	if (n < 1 || n > PARLEY_PROTO_MAX_PRESENCE_USERS ||
	    (op != PARLEY_PRESENCE_SUBSCRIBE && op != PARLEY_PRESENCE_UNSUBSCRIBE))
		return -PARLEY_EINVAL;
	struct parley_msg *m = calloc(1, sizeof *m);
	if (!m)
		return -PARLEY_ENOMEM;
	m->type = PARLEY_T_PRESENCE_SUB;
	m->presence_sub.op = (uint8_t)op;
	m->presence_sub.count = (uint16_t)n;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(users[i]);
		if (!parley_proto_user_id_valid(users[i], l)) {
			free(m);
			return -PARLEY_EINVAL;
		}
		m->presence_sub.users[i] = (struct parley_str){users[i], (uint16_t)l};
	}
	int r = call(c, m, PARLEY_T_PRESENCE_SUB_OK);
	free(m);
	if (r == 0) {
		c->server_hb_ms = c->rmsg->presence_sub_ok.heartbeat_ms;
		if (ok)
			*ok = &c->rmsg->presence_sub_ok;
	}
	return r;
}

int parley_client_presence_set(struct parley_client *c, uint32_t flags)
{
	if (flags & ~PARLEY_PRESF_KNOWN)
		return -PARLEY_EINVAL;
	struct parley_msg m = {.type = PARLEY_T_PRESENCE_SET};
	m.presence_set.flags = flags;
	return call(c, &m, PARLEY_T_PRESENCE_SET_OK);
}

/* ---- event loop ------------------------------------------------------------------- */

/* Keepalive period: a third of the idle timeout, or the presence
 * heartbeat when that is shorter (any frame is a heartbeat). */
static uint32_t keepalive_ms(const struct parley_client *c)
{
	uint32_t idle = c->limits.idle_timeout_ms ? c->limits.idle_timeout_ms : 30000;
	uint32_t k = idle / 3;
	uint32_t hb = c->o.heartbeat_ms ? c->o.heartbeat_ms : c->server_hb_ms;
	if (hb && hb * 3 / 4 < k)
		k = hb * 3 / 4; /* a margin: the server counts from its side */
	return k ? k : 1;
}

int parley_client_next_timeout_ms(const struct parley_client *c)
{
	if (!c->up)
		return (int)PARLEY_MIN(c->backoff_ms, 1000u);
	uint64_t due = c->last_tx_ms + keepalive_ms(c);
	uint64_t now = now_ms();
	return due > now ? (int)PARLEY_MIN(due - now, 1u << 30) : 0;
}

static int keepalive(struct parley_client *c)
{
	uint32_t idle = c->limits.idle_timeout_ms ? c->limits.idle_timeout_ms : 30000;
	uint64_t now = now_ms();
	/* a server that says nothing (not even PONG) for this long is gone */
	if (now - c->last_rx_ms > (uint64_t)idle + c->o.request_timeout_ms) {
		conn_drop(c, -PARLEY_ETIMEDOUT);
		return -PARLEY_ECLOSED;
	}
	if (now - c->last_tx_ms >= keepalive_ms(c)) {
		struct parley_msg m = {.type = PARLEY_T_PING};
		m.ping.nonce = parley_rng_next(&c->rng);
		if (send_msg(c, next_rid(c), &m, now + c->o.request_timeout_ms) < 0) {
			conn_drop(c, -PARLEY_ECLOSED);
			return -PARLEY_ECLOSED;
		}
	}
	return 0;
}

int parley_client_process(struct parley_client *c)
{
	if (c->in_cb)
		return -PARLEY_EINVAL;
	if (!c->up)
		return c->fatal_err ? c->fatal_err : -PARLEY_ECLOSED;
	int r = pump(c);
	if (r < 0)
		return r;
	if (!c->wait_rid) { /* large groups' catch-ups (invariant 5) */
		int d = rd_run(c);
		if (d > 0)
			r += d;
		else if (d < 0 && !c->up)
			return -PARLEY_ECLOSED;
	}
	if (!c->up)
		return -PARLEY_ECLOSED;
	int k = keepalive(c);
	return k < 0 ? k : r;
}

int parley_client_poll(struct parley_client *c, int timeout_ms)
{
	if (c->in_cb)
		return -PARLEY_EINVAL;
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ms() + (uint64_t)timeout_ms;
	int total = 0;
	for (;;) {
		if (c->up && c->draining && !c->o.no_reconnect)
			conn_drop(c, -PARLEY_ECLOSED); /* resume elsewhere after retry_after */
		if (!c->up) {
			if (c->fatal_err)
				return c->fatal_err;
			if (c->o.no_reconnect)
				return -PARLEY_ECLOSED;
			int r = ensure_up(c, deadline);
			if (r == -PARLEY_ETIMEDOUT)
				return total;
			if (r < 0)
				return r;
		}
		if (!(c->ssl && SSL_pending(c->ssl))) {
			uint64_t t = PARLEY_MIN(deadline,
						now_ms() + (uint64_t)parley_client_next_timeout_ms(c));
			int w = wait_fd(c->fd, POLLIN, t);
			if (w < 0)
				return w;
		}
		int r = parley_client_process(c);
		if (r > 0)
			total += r;
		else if (r < 0 && (c->fatal_err || c->o.no_reconnect))
			return c->fatal_err ? c->fatal_err : r;
		if (total > 0 || now_ms() >= deadline)
			return total;
	}
}
