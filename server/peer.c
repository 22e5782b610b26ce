/*
 * peer.c — the node-to-node transport (contract in peer.h): one epoll loop
 * over non-blocking sockets, owned by the caller's thread.
 *
 * Why epoll and not io_uring like the client loops (loop.c): a node has at
 * most PEER_MAX_NODES peer connections, so the per-connection costs that
 * io_uring's provided buffers save do not matter here, while OpenSSL on a
 * non-blocking fd (SSL_set_fd) is the simplest correct mutual-TLS path.
 * Nothing here blocks: sockets are O_NONBLOCK, connect() completes on
 * EPOLLOUT, addresses are numeric, epoll_wait is the only wait.
 *
 * Connection state machine (one struct pconn):
 *
 *   dialer:   TCP ──connected──> TLS* ──done, cert names node──> HELLO_SENT
 *   acceptor: (accepted) ──> TLS* ──done──> WAIT_HELLO
 *                                                   │ (* skipped without TLS)
 *   HELLO_SENT ──peer HELLO ok──> UP      WAIT_HELLO ──HELLO ok: send HELLO──> UP
 *       │ REJECT / bad HELLO                  │ refused: send REJECT
 *       v                                     v
 *     closed <──── any error, EOF, read deadline, handshake timeout ───── UP
 *
 * Invariants
 *   1. A link has at most one connection (link->c); a pending (accepted,
 *      not yet identified) connection has no link until its HELLO passes.
 *   2. Frames are queued only while the link is UP; closing a connection
 *      discards its link's queue (counted drops_down), so a new connection
 *      always starts at a frame boundary.
 *   3. A closed connection is unlinked at once (fd closed, epoll entry
 *      removed) but freed only when no peer_poll is running (the
 *      graveyard), so an event for it later in the same batch is ignored
 *      instead of touching freed memory.
 *   4. queue_frames/queue_bytes never exceed the configured bounds.
 *   5. A connection's read buffer is at most PEER_HDR_BYTES + the payload
 *      limit (PEER_HANDSHAKE_MAX_PAYLOAD before the handshake, max_frame
 *      after); it grows to the largest frame received and is freed with
 *      the connection.
 *
 * Ownership: the peer owns its sockets, SSL objects, buffers and queued
 * frames. Received messages are borrowed from the connection's read buffer
 * and the decode arena during on_recv.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "peer.h"
#include "raft_codec.h"

#define PEER_EVENTS 64
#define PEER_CTL_BYTES 320u /* HELLO (+ INFO) or REJECT or PING, one at a time */
#define PEER_READ_CHUNK (64u << 10)

enum cstate {
	C_TCP,        /* dialer: connect in progress */
	C_TLS,        /* TLS handshake in progress */
	C_HELLO_SENT, /* dialer: waiting for the acceptor's HELLO */
	C_WAIT_HELLO, /* acceptor: waiting for the dialer's HELLO */
	C_UP,
	C_CLOSED,
};

struct pframe {
	struct pframe *next;
	uint32_t len, off;
	uint32_t nmsgs;
	bool hb; /* heartbeat-only: may be dropped for a newer frame */
	uint8_t data[];
};

struct plink;

struct pconn {
	int fd;
	SSL *ssl;
	enum cstate st;
	bool inbound;
	bool want_out;      /* EPOLLOUT registered */
	bool close_after_ctl;
	struct plink *link; /* NULL while an inbound conn is unidentified */
	uint64_t deadline;  /* handshake deadline (ms) */
	uint64_t last_rx, last_tx;
	uint8_t *rbuf;
	uint32_t rcap, rlen;
	uint8_t ctl[PEER_CTL_BYTES];
	uint32_t ctl_len, ctl_off;
	struct pconn *next_dead;
};

struct plink {
	uint64_t node;
	struct sockaddr_storage sa;
	socklen_t salen;
	char addr[64];
	uint16_t port;
	bool dial; /* we dial it (our id is lower) */
	_Atomic bool removed; /* peer_remove: no dial, HELLO refused, no send */
	struct pconn *c;
	struct pframe *qh, *qt;
	bool dirty; /* frames queued since the last flush */
	uint32_t attempts;
	uint64_t next_dial;
	uint32_t peer_max_frame;
	bool ever_up;
	_Atomic int state;
	_Atomic uint64_t bytes_in, bytes_out, frames_in, frames_out, msgs_in,
		msgs_out, connects, reconnects, connect_failures, refused, dead,
		drops_hb, drops_down, refused_full, too_big, qframes, qbytes,
		flags_cleared, unsupported;
	/* Raft message flags the peer's decoder accepts (contract item 8):
	 * RAFT_MSGF_BASE from link up until its INFO announces more */
	_Atomic uint32_t raft_flags;
	/* frame types the peer knows (contract item 9): 0 from link up until
	 * its first frame (then its INFO's set, or LEGACY); kept after down */
	_Atomic uint32_t frames;
	_Atomic bool frames_announced;
	/* the peer's first frame after the handshake came: frames is known
	 * and on_link(up) was called (owner thread) */
	bool greeted;
	pthread_mutex_t mu; /* last_error, info */
	char last_error[PEER_ERROR_MAX];
	char info[PEER_INFO_MAX + 1]; /* the peer's INFO */
};

struct peer {
	struct peer_config cfg;
	int ep;
	int lfd;
	uint16_t port;
	bool polled;
	int depth; /* peer_poll / flush nesting: the graveyard waits for 0 */
	struct plink links[PEER_MAX_NODES];
	/* slots in use; grows at run time (peer_add), read by the stats
	 * readers of other threads: a slot is whole before it is counted */
	_Atomic uint32_t nlinks;
	struct pconn *pending[PEER_MAX_PENDING];
	struct pconn *graveyard;
	SSL_CTX *tls;
	struct parley_rng rng;
	uint64_t incarnation;
	uint8_t *arena;
	size_t arena_cap;
	struct raft_msg *scratch; /* peer_send_all grouping */
	uint32_t scratch_cap;
	_Atomic uint64_t accepted, inbound_refused, inbound_failed;
	int delivered;
	char info[PEER_INFO_MAX + 1]; /* ours (cfg.info copied) */
	char wire_info[PEER_INFO_MAX + 1]; /* what INFO sends: ours + raftf */
	uint32_t raft_flags; /* what our decoder accepts (contract item 8) */
	uint32_t frames;     /* frame types we know (contract item 9) */
	struct raft_msg *strip; /* peer_send: messages with flags cleared */
	uint32_t strip_cap;
};

#define ADD(x, v) atomic_fetch_add_explicit(&(x), (v), memory_order_relaxed)
#define GET(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define SET(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

static uint64_t now_ms(struct peer *p)
{
	if (p->cfg.now_ms)
		return p->cfg.now_ms(p->cfg.arg);
	return parley_mono_ns() / 1000000u;
}

static void link_error(struct plink *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void link_error(struct plink *l, const char *fmt, ...)
{
	va_list ap;
	char buf[PEER_ERROR_MAX];
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&l->mu);
	memcpy(l->last_error, buf, sizeof buf);
	pthread_mutex_unlock(&l->mu);
}

static void tls_errstr(char *buf, size_t cap)
{
	unsigned long e = ERR_get_error();
	if (!e) {
		snprintf(buf, cap, "connection closed during TLS handshake");
		return;
	}
	ERR_error_string_n(e, buf, cap);
	ERR_clear_error();
}

static struct plink *link_find(struct peer *p, uint64_t node)
{
	for (uint32_t i = 0; i < p->nlinks; i++)
		if (p->links[i].node == node)
			return &p->links[i];
	return NULL;
}

static bool known_node(void *arg, uint64_t id)
{
	struct plink *l = link_find(arg, id);
	return l && !l->removed;
}

/* ---- connections -------------------------------------------------------- */

static void conn_readable(struct peer *p, struct pconn *c);

static void conn_events(struct peer *p, struct pconn *c, bool out)
{
	if (c->fd < 0 || c->want_out == out)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
				 .data.ptr = c};
	if (epoll_ctl(p->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->want_out = out;
}

static void queue_clear(struct plink *l)
{
	uint64_t dropped = 0;
	while (l->qh) {
		struct pframe *f = l->qh;
		l->qh = f->next;
		dropped += f->nmsgs;
		free(f);
	}
	l->qt = NULL;
	SET(l->qframes, 0);
	SET(l->qbytes, 0);
	if (dropped)
		ADD(l->drops_down, dropped);
}

/* A link lost its connection (or a dial failed): counters, last_error,
 * the redial time, on_link. */
static void link_down(struct peer *p, struct plink *l, bool was_up,
		      const char *why)
{
	l->c = NULL;
	queue_clear(l);
	SET(l->state, PEER_LINK_DOWN);
	if (!was_up)
		ADD(l->connect_failures, 1);
	if (why)
		link_error(l, "%s", why);
	if (l->dial) {
		uint32_t d = peer_backoff_ms(l->attempts, p->cfg.backoff_min_ms,
					     p->cfg.backoff_max_ms, &p->rng);
		if (l->attempts < 32)
			l->attempts++;
		l->next_dial = now_ms(p) + d;
	}
	if (was_up) {
		PLOG_W("peer", "link down", "node=%" PRIu64 " peer=%" PRIu64 " why=\"%s\"",
		       p->cfg.node_id, l->node, why ? why : "");
		/* the application heard of the link only once greeted */
		if (l->greeted && p->cfg.on_link)
			p->cfg.on_link(p->cfg.arg, l->node, false);
	}
	l->greeted = false;
}

static void conn_close(struct peer *p, struct pconn *c, const char *why)
{
	if (c->st == C_CLOSED)
		return;
	enum cstate was = c->st;
	c->st = C_CLOSED;
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	for (uint32_t i = 0; i < PEER_MAX_PENDING; i++)
		if (p->pending[i] == c)
			p->pending[i] = NULL;
	struct plink *l = c->link;
	if (l && l->c == c)
		link_down(p, l, was == C_UP, why);
	else if (!l && !c->close_after_ctl)
		ADD(p->inbound_failed, 1);
	c->next_dead = p->graveyard;
	p->graveyard = c;
}

static void graveyard_free(struct peer *p)
{
	if (p->depth)
		return;
	while (p->graveyard) {
		struct pconn *c = p->graveyard;
		p->graveyard = c->next_dead;
		free(c->rbuf);
		free(c);
	}
}

static struct pconn *conn_new(struct peer *p, int fd, bool inbound)
{
	struct pconn *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->fd = fd;
	c->inbound = inbound;
	c->rcap = PEER_HDR_BYTES + PEER_HANDSHAKE_MAX_PAYLOAD;
	c->rbuf = malloc(c->rcap);
	uint64_t now = now_ms(p);
	c->deadline = now + p->cfg.handshake_timeout_ms;
	c->last_rx = c->last_tx = now;
	struct epoll_event ev = {.events = EPOLLIN | (inbound ? 0 : EPOLLOUT),
				 .data.ptr = c};
	c->want_out = !inbound;
	if (!c->rbuf || epoll_ctl(p->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
		free(c->rbuf);
		free(c);
		return NULL;
	}
	return c;
}

/* Raw I/O through TLS or not: > 0 bytes, 0 = would block, < 0 = closed or
 * failed (the connection must be closed). */
static ssize_t conn_write_raw(struct pconn *c, const uint8_t *b, size_t n)
{
	if (c->ssl) {
		int k = SSL_write(c->ssl, b, (int)(n > INT32_MAX ? INT32_MAX : n));
		if (k > 0)
			return k;
		int e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
			return 0;
		ERR_clear_error();
		return -1;
	}
	ssize_t k = send(c->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (k >= 0)
		return k;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	return -1;
}

static ssize_t conn_read_raw(struct pconn *c, uint8_t *b, size_t n)
{
	if (c->ssl) {
		int k = SSL_read(c->ssl, b, (int)(n > INT32_MAX ? INT32_MAX : n));
		if (k > 0)
			return k;
		int e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return 0;
		ERR_clear_error();
		return -1;
	}
	ssize_t k = recv(c->fd, b, n, MSG_DONTWAIT);
	if (k > 0)
		return k;
	if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	return -1;
}

/* Writes b[*off..len) until done or the socket would block, advancing *off,
 * the connection's last_tx and its link's bytes_out. Returns 1 when all was
 * written, 0 when blocked, -1 when the write failed (c is closed then). */
static int conn_write_buf(struct peer *p, struct pconn *c, const uint8_t *b,
			  uint32_t *off, uint32_t len)
{
	while (*off < len) {
		ssize_t k = conn_write_raw(c, b + *off, len - *off);
		if (k < 0) {
			conn_close(p, c, "write failed");
			return -1;
		}
		if (k == 0)
			return 0;
		*off += (uint32_t)k;
		c->last_tx = now_ms(p);
		if (c->link)
			ADD(c->link->bytes_out, (uint64_t)k);
	}
	return 1;
}

/* Writes the control buffer, then (when UP) the link's queue. */
static void conn_flush(struct peer *p, struct pconn *c)
{
	if (c->st == C_CLOSED || c->st == C_TCP || c->st == C_TLS)
		return;
	struct plink *l = c->link;
	int w = conn_write_buf(p, c, c->ctl, &c->ctl_off, c->ctl_len);
	if (w < 0)
		return;
	bool blocked = w == 0;
	if (!blocked && c->ctl_len && c->ctl_off == c->ctl_len) {
		c->ctl_len = c->ctl_off = 0;
		if (c->close_after_ctl) {
			conn_close(p, c, NULL);
			return;
		}
	}
	if (!blocked && c->st == C_UP && l) {
		while (l->qh) {
			struct pframe *f = l->qh;
			w = conn_write_buf(p, c, f->data, &f->off, f->len);
			if (w < 0)
				return;
			if (w == 0) {
				blocked = true;
				break;
			}
			l->qh = f->next;
			if (!l->qh)
				l->qt = NULL;
			ADD(l->frames_out, 1);
			ADD(l->msgs_out, f->nmsgs);
			atomic_fetch_sub_explicit(&l->qframes, 1, memory_order_relaxed);
			atomic_fetch_sub_explicit(&l->qbytes, f->len, memory_order_relaxed);
			free(f);
		}
		l->dirty = false;
	}
	conn_events(p, c, blocked);
}

static void conn_ctl_set(struct pconn *c, const uint8_t *b, int n)
{
	PARLEY_ASSERT(n > 0 && (uint32_t)n <= PEER_CTL_BYTES && c->ctl_len == 0);
	memcpy(c->ctl, b, (size_t)n);
	c->ctl_len = (uint32_t)n;
	c->ctl_off = 0;
}

static void send_hello(struct peer *p, struct pconn *c, uint64_t to)
{
	struct peer_hello h = {.version = PEER_VERSION,
			       .flags = PEER_HELLO_F_INFO,
			       .max_frame = p->cfg.max_frame,
			       .cluster_id = p->cfg.cluster_id,
			       .node_id = p->cfg.node_id,
			       .to_node = to,
			       .incarnation = p->incarnation};
	uint8_t b[PEER_HDR_BYTES + PEER_HELLO_BYTES];
	int n = peer_hello_encode(b, sizeof b, &h);
	PARLEY_ASSERT(n > 0);
	conn_ctl_set(c, b, n);
}

/* Our INFO after the handshake, behind whatever control bytes are still
 * unsent (the acceptor's HELLO): both fit PEER_CTL_BYTES. */
static void send_info(struct peer *p, struct pconn *c)
{
	size_t n = strlen(p->wire_info);
	if (!n)
		return;
	PARLEY_ASSERT(c->ctl_len + PEER_HDR_BYTES + n <= PEER_CTL_BYTES);
	peer_hdr_encode(c->ctl + c->ctl_len, PEER_FRAME_INFO, (uint32_t)n);
	memcpy(c->ctl + c->ctl_len + PEER_HDR_BYTES, p->wire_info, n);
	c->ctl_len += PEER_HDR_BYTES + (uint32_t)n;
}

static void send_reject(struct peer *p, struct pconn *c, uint16_t code,
			const char *text)
{
	uint8_t b[PEER_CTL_BYTES];
	int n = peer_reject_encode(b, sizeof b, code, text);
	PARLEY_ASSERT(n > 0);
	c->ctl_len = c->ctl_off = 0;
	conn_ctl_set(c, b, n);
	c->close_after_ctl = true;
	conn_flush(p, c);
	/* A REJECT that could not leave at once is abandoned: a refused
	 * connection holds no resources while it waits. */
	if (c->st != C_CLOSED)
		conn_close(p, c, NULL);
}

/* TLS: does the peer's verified certificate name node `id`? */
static bool cert_names_node(struct pconn *c, uint64_t id)
{
	if (!c->ssl)
		return true;
	X509 *x = SSL_get0_peer_certificate(c->ssl);
	if (!x || SSL_get_verify_result(c->ssl) != X509_V_OK)
		return false;
	char name[40];
	snprintf(name, sizeof name, "node-%" PRIu64, id);
	/* DNS SAN entries, or the subject CN when there are none */
	return X509_check_host(x, name, strlen(name),
			       X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1;
}

static void link_up(struct peer *p, struct plink *l, struct pconn *c,
		    uint32_t peer_max_frame)
{
	c->st = C_UP;
	l->peer_max_frame = peer_max_frame;
	SET(l->raft_flags, RAFT_MSGF_BASE); /* until its INFO says more */
	SET(l->frames, 0);                  /* until its first frame */
	l->greeted = false;
	l->attempts = 0;
	ADD(l->connects, 1);
	if (l->ever_up)
		ADD(l->reconnects, 1);
	l->ever_up = true;
	SET(l->state, PEER_LINK_UP);
	PLOG_I("peer", "link up", "node=%" PRIu64 " peer=%" PRIu64 " tls=%d inbound=%d",
	       p->cfg.node_id, l->node, c->ssl != NULL, c->inbound);
	/* on_link(up) waits for the peer's first frame (greet) */
}

/* Contract item 9: the peer's first frame after the handshake came (its
 * INFO, when it sends one, comes first): its frame set is known from now
 * on (`frames` announced, or 0: none announced, LEGACY assumed); the
 * application hears of the link. */
static void greet(struct peer *p, struct plink *l, uint32_t frames)
{
	bool said = frames != 0;
	if (!said)
		frames = PEER_FRAMES_LEGACY;
	frames |= PEER_FRAMES_BASE;
	SET(l->frames_announced, said);
	SET(l->frames, frames);
	l->greeted = true;
	if (frames != p->frames)
		PLOG_W("peer", "peer knows another frame set", "node=%" PRIu64
		       " peer=%" PRIu64 " ours=%x theirs=%x announced=%d"
		       " common=%x", p->cfg.node_id, l->node,
		       (unsigned)p->frames, (unsigned)frames, said,
		       (unsigned)(frames & p->frames));
	if (p->cfg.on_link)
		p->cfg.on_link(p->cfg.arg, l->node, true);
}

/* After TCP (and TLS) are established. */
static void conn_ready(struct peer *p, struct pconn *c)
{
	if (c->inbound) {
		c->st = C_WAIT_HELLO;
		return;
	}
	struct plink *l = c->link;
	if (!cert_names_node(c, l->node)) {
		char why[PEER_ERROR_MAX];
		snprintf(why, sizeof why,
			 "node %" PRIu64 "'s certificate does not name node-%" PRIu64,
			 l->node, l->node);
		PLOG_E("peer", "peer certificate refused", "node=%" PRIu64 " peer=%" PRIu64,
		       p->cfg.node_id, l->node);
		conn_close(p, c, why);
		return;
	}
	c->st = C_HELLO_SENT;
	SET(l->state, PEER_LINK_HANDSHAKE);
	send_hello(p, c, l->node);
	conn_flush(p, c);
}

static void conn_tls_step(struct peer *p, struct pconn *c)
{
	ERR_clear_error();
	int k = SSL_do_handshake(c->ssl);
	if (k == 1) {
		conn_ready(p, c);
		/* the peer's first frame may have come with the handshake */
		if (c->st != C_CLOSED)
			conn_readable(p, c);
		return;
	}
	int e = SSL_get_error(c->ssl, k);
	if (e == SSL_ERROR_WANT_READ) {
		conn_events(p, c, false);
		return;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		conn_events(p, c, true);
		return;
	}
	char err[120], why[PEER_ERROR_MAX];
	tls_errstr(err, sizeof err);
	long vr = SSL_get_verify_result(c->ssl);
	snprintf(why, sizeof why, "TLS handshake failed: %s%s%s", err,
		 vr != X509_V_OK ? " / " : "",
		 vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
	PLOG_W("peer", "TLS handshake failed", "node=%" PRIu64 " peer=%" PRIu64 " err=\"%s\"",
	       p->cfg.node_id, c->link ? c->link->node : 0, why);
	conn_close(p, c, why);
}

static int conn_start_tls(struct peer *p, struct pconn *c)
{
	c->ssl = SSL_new(p->tls);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
		return -PARLEY_ENOMEM;
	if (c->inbound)
		SSL_set_accept_state(c->ssl);
	else
		SSL_set_connect_state(c->ssl);
	c->st = C_TLS;
	conn_tls_step(p, c);
	return 0;
}

static void link_dial(struct peer *p, struct plink *l)
{
	int fd = socket(l->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		l->next_dial = now_ms(p) + p->cfg.backoff_max_ms;
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	int rc = connect(fd, (struct sockaddr *)&l->sa, l->salen);
	if (rc != 0 && errno != EINPROGRESS) {
		char why[PEER_ERROR_MAX];
		snprintf(why, sizeof why, "connect %s:%u: %s", l->addr, l->port,
			 strerror(errno));
		close(fd);
		link_down(p, l, false, why);
		return;
	}
	struct pconn *c = conn_new(p, fd, false);
	if (!c) {
		close(fd);
		l->next_dial = now_ms(p) + p->cfg.backoff_max_ms;
		return;
	}
	c->link = l;
	c->st = C_TCP;
	l->c = c;
	SET(l->state, PEER_LINK_CONNECTING);
}

/* ---- receiving ---------------------------------------------------------- */

static int arena_need(struct peer *p, uint32_t flen)
{
	uint32_t msgs = flen / RAFT_CODEC_MSG_MIN;
	if (msgs > RAFT_CODEC_MAX_BATCH)
		msgs = RAFT_CODEC_MAX_BATCH;
	size_t need = RAFT_CODEC_ARENA_BYTES(msgs, flen / RAFT_CODEC_ENTRY_MIN, 0);
	if (need <= p->arena_cap)
		return 0;
	uint8_t *a = realloc(p->arena, need);
	if (!a)
		return -PARLEY_ENOMEM;
	p->arena = a;
	p->arena_cap = need;
	return 0;
}

static void on_hello(struct peer *p, struct pconn *c, const uint8_t *pl,
		     uint32_t n)
{
	struct peer_hello h;
	char why[PEER_ERROR_MAX];
	int rc = peer_hello_decode(pl, n, &h);
	uint64_t expect = c->inbound ? 0 : c->link->node;
	enum peer_reject_code v = PEER_REJ_NONE;
	if (rc == -PARLEY_EVERSION)
		v = PEER_REJ_VERSION;
	else if (rc < 0) {
		conn_close(p, c, "malformed HELLO");
		return;
	} else
		v = peer_hello_verdict(&h, p->cfg.cluster_id, p->cfg.node_id,
				       expect, known_node, p);
	struct plink *l = c->inbound ? link_find(p, h.node_id) : c->link;
	if (v == PEER_REJ_NONE && c->inbound && l && l->c && l->c != c)
		v = PEER_REJ_DUPLICATE;
	if (v == PEER_REJ_NONE && c->inbound && !cert_names_node(c, h.node_id))
		v = PEER_REJ_CERT;
	if (v != PEER_REJ_NONE) {
		snprintf(why, sizeof why,
			 "%s: hello from node %" PRIu64 " cluster %" PRIu64
			 " to node %" PRIu64 " (this is node %" PRIu64 " of cluster %" PRIu64 ")",
			 peer_reject_name(v), h.node_id, h.cluster_id, h.to_node,
			 p->cfg.node_id, p->cfg.cluster_id);
		PLOG_E("peer", "peer refused", "node=%" PRIu64 " reason=\"%s\"",
		       p->cfg.node_id, why);
		if (l && l != c->link) {
			ADD(l->refused, 1);
			link_error(l, "refused inbound: %s", why);
		}
		if (c->inbound) {
			ADD(p->inbound_refused, 1);
			send_reject(p, c, (uint16_t)v, why);
		} else {
			ADD(c->link->refused, 1);
			conn_close(p, c, why);
		}
		return;
	}
	if (c->inbound) {
		for (uint32_t i = 0; i < PEER_MAX_PENDING; i++)
			if (p->pending[i] == c)
				p->pending[i] = NULL;
		c->link = l;
		l->c = c;
		send_hello(p, c, h.node_id);
	}
	link_up(p, l, c, h.max_frame);
	if (h.flags & PEER_HELLO_F_INFO)
		send_info(p, c);
	conn_flush(p, c);
}

/* One whole frame at c->rbuf[off..]; false when the connection closed. */
static bool on_frame(struct peer *p, struct pconn *c, uint8_t type,
		     const uint8_t *pl, uint32_t n)
{
	struct plink *l = c->link;
	/* contract item 9: the peer's first frame after the handshake; an
	 * INFO greets the link itself, with the set it announces */
	if (c->st == C_UP && l && !l->greeted && type != PEER_FRAME_INFO &&
	    type != PEER_FRAME_HELLO && type != PEER_FRAME_REJECT) {
		p->depth++;
		greet(p, l, 0);
		p->depth--;
		if (c->st != C_UP)
			return false;
	}
	/* a type this node does not know (a test's older set): closed as a
	 * node built before it would */
	if (type >= PEER_FRAME_FWD_REQ && !(p->frames & PEER_FRAME_BIT(type))) {
		conn_close(p, c, "unknown frame type");
		return false;
	}
	switch (type) {
	case PEER_FRAME_HELLO:
		if (c->st != C_HELLO_SENT && c->st != C_WAIT_HELLO) {
			conn_close(p, c, "unexpected HELLO");
			return false;
		}
		on_hello(p, c, pl, n);
		return c->st == C_UP;
	case PEER_FRAME_REJECT: {
		uint16_t code = 0;
		char txt[PEER_REASON_MAX + 1], why[PEER_ERROR_MAX];
		if (peer_reject_decode(pl, n, &code, txt, sizeof txt) < 0)
			snprintf(txt, sizeof txt, "(malformed REJECT)");
		snprintf(why, sizeof why, "refused by node %" PRIu64 ": %.200s",
			 l ? l->node : 0, txt);
		PLOG_E("peer", "refused by peer", "node=%" PRIu64 " reason=\"%s\"",
		       p->cfg.node_id, txt);
		if (l)
			ADD(l->refused, 1);
		conn_close(p, c, why);
		return false;
	}
	case PEER_FRAME_PING:
		if (c->st != C_UP) {
			conn_close(p, c, "PING before handshake");
			return false;
		}
		return true;
	case PEER_FRAME_INFO: {
		if (c->st != C_UP) {
			conn_close(p, c, "INFO before handshake");
			return false;
		}
		if (n > PEER_INFO_MAX) {
			conn_close(p, c, "INFO too long");
			return false;
		}
		char v[PEER_INFO_MAX + 1];
		uint32_t rf = 0, fr = 0;
		(void)peer_info_decode(pl, n, v, &rf, &fr); /* n checked */
		SET(l->raft_flags, rf);
		pthread_mutex_lock(&l->mu);
		memcpy(l->info, v, strlen(v) + 1);
		pthread_mutex_unlock(&l->mu);
		PLOG_D("peer", "peer info", "node=%" PRIu64 " peer=%" PRIu64
		       " info=\"%s\"", p->cfg.node_id, l->node, v);
		if (!l->greeted) {
			p->depth++;
			greet(p, l, fr);
			p->depth--;
		}
		return c->st == C_UP;
	}
	case PEER_FRAME_RAFT:
		break;
	default: /* an application frame (FWD_REQ .. PEER_FRAME_LAST) */
		if (type < PEER_FRAME_FWD_REQ || type > PEER_FRAME_LAST) {
			conn_close(p, c, "unknown frame type");
			return false;
		}
		if (c->st != C_UP) {
			conn_close(p, c, "application frame before handshake");
			return false;
		}
		if (p->cfg.on_app) {
			p->depth++;
			p->cfg.on_app(p->cfg.arg, l->node, type, pl, n);
			p->depth--;
		}
		return c->st == C_UP;
	}
	if (c->st != C_UP) {
		conn_close(p, c, "RAFT frame before handshake");
		return false;
	}
	if (arena_need(p, n) < 0) {
		conn_close(p, c, "out of memory for a frame");
		return false;
	}
	struct raft_codec_arena a;
	raft_codec_arena_init(&a, p->arena, p->arena_cap);
	struct raft_msg *msgs = NULL;
	uint32_t nm = 0;
	int rc = raft_codec_decode(pl, n, p->cfg.max_frame, &a, 0, &msgs, &nm);
	char why[PEER_ERROR_MAX];
	if (rc != (int)n) {
		snprintf(why, sizeof why, "bad RAFT frame from node %" PRIu64 ": %s",
			 l->node, rc < 0 ? parley_strerror(rc) : "length mismatch");
		PLOG_E("peer", "bad frame", "node=%" PRIu64 " err=\"%s\"", p->cfg.node_id, why);
		conn_close(p, c, why);
		return false;
	}
	if (msgs[0].from != l->node || msgs[0].to != p->cfg.node_id) {
		snprintf(why, sizeof why,
			 "frame from %" PRIu64 " to %" PRIu64 " on the link to node %" PRIu64,
			 msgs[0].from, msgs[0].to, l->node);
		conn_close(p, c, why);
		return false;
	}
	ADD(l->frames_in, 1);
	ADD(l->msgs_in, nm);
	p->delivered++;
	p->depth++;
	p->cfg.on_recv(p->cfg.arg, l->node, msgs, nm);
	p->depth--;
	return c->st == C_UP;
}

static void conn_readable(struct peer *p, struct pconn *c)
{
	for (int rounds = 0; rounds < 64 && c->st != C_CLOSED; rounds++) {
		bool up = c->st == C_UP;
		uint32_t maxp = up ? p->cfg.max_frame : PEER_HANDSHAKE_MAX_PAYLOAD;
		/* make room: at least a chunk, or the whole announced frame */
		uint32_t want = c->rlen + PEER_READ_CHUNK;
		uint32_t cap_lim = PEER_HDR_BYTES + maxp;
		if (want > cap_lim)
			want = cap_lim;
		if (want > c->rcap) {
			uint8_t *b = realloc(c->rbuf, want);
			if (!b) {
				conn_close(p, c, "out of memory");
				return;
			}
			c->rbuf = b;
			c->rcap = want;
		}
		if (c->rlen == c->rcap) {
			/* cannot happen: a full buffer always holds a whole frame */
			conn_close(p, c, "read buffer full");
			return;
		}
		ssize_t k = conn_read_raw(c, c->rbuf + c->rlen, c->rcap - c->rlen);
		if (k == 0)
			return;
		if (k < 0) {
			conn_close(p, c, "connection closed by peer");
			return;
		}
		c->rlen += (uint32_t)k;
		c->last_rx = now_ms(p);
		if (c->link)
			ADD(c->link->bytes_in, (uint64_t)k);
		uint32_t off = 0, need = 0;
		while (c->st != C_CLOSED) {
			uint8_t type;
			uint32_t plen;
			uint32_t lim = c->st == C_UP ? p->cfg.max_frame
						     : PEER_HANDSHAKE_MAX_PAYLOAD;
			int h = peer_hdr_decode(c->rbuf + off, c->rlen - off, lim,
						&type, &plen);
			if (h == 0)
				break;
			if (h < 0) {
				char why[PEER_ERROR_MAX];
				snprintf(why, sizeof why, "bad frame header: %s",
					 parley_strerror(h));
				conn_close(p, c, why);
				return;
			}
			if (c->rlen - off < PEER_HDR_BYTES + plen) {
				/* partial frame: room for all of it once it
				 * is moved to the front (below) */
				need = PEER_HDR_BYTES + plen;
				break;
			}
			if (!on_frame(p, c, type, c->rbuf + off + PEER_HDR_BYTES, plen) &&
			    c->st == C_CLOSED)
				return;
			off += PEER_HDR_BYTES + plen;
		}
		if (c->st == C_CLOSED)
			return;
		if (off) {
			memmove(c->rbuf, c->rbuf + off, c->rlen - off);
			c->rlen -= off;
		}
		if (need > c->rcap) { /* need <= PEER_HDR_BYTES + the limit */
			uint8_t *b = realloc(c->rbuf, need);
			if (!b) {
				conn_close(p, c, "out of memory");
				return;
			}
			c->rbuf = b;
			c->rcap = need;
		}
	}
}

static void conn_event(struct peer *p, struct pconn *c, uint32_t ev)
{
	if (c->st == C_CLOSED)
		return;
	if (c->st == C_TCP) {
		if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		int err = 0;
		socklen_t el = sizeof err;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			char why[PEER_ERROR_MAX];
			snprintf(why, sizeof why, "connect %s:%u: %s", c->link->addr,
				 c->link->port, strerror(err));
			conn_close(p, c, why);
			return;
		}
		SET(c->link->state, PEER_LINK_HANDSHAKE);
		if (p->tls) {
			if (conn_start_tls(p, c) < 0)
				conn_close(p, c, "TLS setup failed");
			return;
		}
		conn_ready(p, c);
		return;
	}
	if (c->st == C_TLS) {
		conn_tls_step(p, c);
		return;
	}
	if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_readable(p, c);
	if (c->st != C_CLOSED && (ev & EPOLLOUT))
		conn_flush(p, c);
}

static void on_accept(struct peer *p)
{
	for (int i = 0; i < 16; i++) {
		int fd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		ADD(p->accepted, 1);
		uint32_t slot = PEER_MAX_PENDING;
		for (uint32_t k = 0; k < PEER_MAX_PENDING; k++)
			if (!p->pending[k]) {
				slot = k;
				break;
			}
		struct pconn *c = slot < PEER_MAX_PENDING ? conn_new(p, fd, true) : NULL;
		if (!c) {
			PLOG_W("peer", "inbound connection dropped",
			       "node=%" PRIu64 " why=\"too many pending handshakes\"",
			       p->cfg.node_id);
			ADD(p->inbound_failed, 1);
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		p->pending[slot] = c;
		if (p->tls) {
			if (conn_start_tls(p, c) < 0)
				conn_close(p, c, NULL);
		} else {
			c->st = C_WAIT_HELLO;
		}
	}
}

/* ---- timers ------------------------------------------------------------- */

static uint64_t run_timers(struct peer *p)
{
	uint64_t now = now_ms(p);
	uint64_t next = now + 1000;
	for (uint32_t i = 0; i < PEER_MAX_PENDING; i++) {
		struct pconn *c = p->pending[i];
		if (!c)
			continue;
		if (now >= c->deadline)
			conn_close(p, c, NULL);
		else if (c->deadline < next)
			next = c->deadline;
	}
	for (uint32_t i = 0; i < p->nlinks; i++) {
		struct plink *l = &p->links[i];
		struct pconn *c = l->c;
		if (!c) {
			if (l->dial) {
				if (now >= l->next_dial)
					link_dial(p, l);
				else if (l->next_dial < next)
					next = l->next_dial;
			}
			continue;
		}
		if (c->st != C_UP) {
			if (now >= c->deadline) {
				conn_close(p, c, "handshake timed out");
				continue;
			}
			if (c->deadline < next)
				next = c->deadline;
			continue;
		}
		uint64_t dl = c->last_rx + p->cfg.read_deadline_ms;
		if (now >= dl) {
			char why[PEER_ERROR_MAX];
			snprintf(why, sizeof why, "dead: nothing received for %u ms",
				 p->cfg.read_deadline_ms);
			ADD(l->dead, 1);
			conn_close(p, c, why);
			continue;
		}
		if (dl < next)
			next = dl;
		uint64_t ping = c->last_tx + p->cfg.ping_interval_ms;
		if (now >= ping && !l->qh && c->ctl_len == 0) {
			uint8_t b[PEER_HDR_BYTES];
			peer_hdr_encode(b, PEER_FRAME_PING, 0);
			conn_ctl_set(c, b, PEER_HDR_BYTES);
			conn_flush(p, c);
			c->last_tx = now; /* even if it waits in ctl */
			ping = now + p->cfg.ping_interval_ms;
		}
		if (ping < next)
			next = ping;
	}
	return next;
}

/* ---- public API --------------------------------------------------------- */

static int parse_addr(const char *a, uint16_t port, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof *s4;
		return 0;
	}
	if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof *s6;
		return 0;
	}
	return -PARLEY_EINVAL;
}

static int tls_setup(struct peer *p)
{
	const struct peer_config *c = &p->cfg;
	if (!c->tls_ca && !c->tls_cert && !c->tls_key)
		return 0;
	if (!c->tls_ca || !c->tls_cert || !c->tls_key) {
		PLOG_E("peer", "invalid TLS configuration",
		       "why=\"peer TLS needs a CA, a certificate and a key\"");
		return -PARLEY_EINVAL;
	}
	/* OpenSSL writes to the socket with write(2): a peer that closed
	 * would kill the process with SIGPIPE. parleyd ignores it; so must
	 * any other user of peer TLS. */
	struct sigaction sa;
	if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_IGN) {
		PLOG_E("peer", "invalid TLS configuration",
		       "why=\"peer TLS needs SIGPIPE ignored (signal(SIGPIPE, SIG_IGN))\"");
		return -PARLEY_EINVAL;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	if (!ctx)
		return -PARLEY_ENOMEM;
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_load_verify_locations(ctx, c->tls_ca, NULL) != 1 ||
	    SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		char err[120];
		tls_errstr(err, sizeof err);
		PLOG_E("peer", "cannot load peer TLS files",
		       "ca=%s cert=%s key=%s err=\"%s\"", c->tls_ca, c->tls_cert,
		       c->tls_key, err);
		SSL_CTX_free(ctx);
		return -PARLEY_EIO;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
			   NULL);
	SSL_CTX_set_verify_depth(ctx, 4);
	p->tls = ctx;
	return 0;
}

int peer_new(const struct peer_config *cfg, struct peer **out)
{
	*out = NULL;
	const char *bad = NULL;
	if (!cfg->cluster_id)
		bad = "cluster_id must not be 0";
	else if (!cfg->node_id)
		bad = "node_id must not be 0";
	else if (!cfg->on_recv)
		bad = "on_recv is required";
	else if (cfg->max_frame && (cfg->max_frame < RAFT_CODEC_FRAME_MIN ||
				    cfg->max_frame > RAFT_CODEC_MAX_FRAME_HARD))
		bad = "max_frame out of range";
	else if (cfg->info && strlen(cfg->info) > PEER_INFO_MAX)
		bad = "info longer than PEER_INFO_MAX";
	else if (cfg->frames && ((cfg->frames & PEER_FRAMES_BASE) !=
					 PEER_FRAMES_BASE ||
				 (cfg->frames & ~PEER_FRAMES_ALL)))
		bad = "frames must hold HELLO..INFO and only known types";
	for (const char *q = cfg->info; !bad && q && *q; q++)
		if (*q < 0x20 || *q == 0x7f)
			bad = "info is not printable ASCII";
	if (bad) {
		PLOG_E("peer", "invalid configuration", "why=\"%s\"", bad);
		return -PARLEY_EINVAL;
	}
	struct peer *p = calloc(1, sizeof *p);
	if (!p)
		return -PARLEY_ENOMEM;
	p->cfg = *cfg;
	if (cfg->info)
		snprintf(p->info, sizeof p->info, "%s", cfg->info);
	p->cfg.info = p->info;
	p->raft_flags = cfg->raft_flags ? (cfg->raft_flags & RAFT_MSGF_ALL) |
						  RAFT_MSGF_BASE
					: RAFT_MSGF_ALL;
	p->frames = cfg->frames ? cfg->frames : PEER_FRAMES_ALL;
	/* our info plus the transport's keys, each when it fits: the frame
	 * set first (item 9; without it a peer assumes LEGACY, which this
	 * build's set holds, so only an older test set must fit), then the
	 * Raft flags (item 8; a node that decodes only the base flags
	 * announces none, as before) */
	if (!peer_info_encode(p->wire_info, p->info, p->frames,
			      p->raft_flags) &&
	    p->frames != PEER_FRAMES_ALL) {
		PLOG_E("peer", "invalid configuration",
		       "why=\"info leaves no room for the frame set\"");
		free(p);
		return -PARLEY_EINVAL;
	}
	struct peer_config *c = &p->cfg;
	if (!c->max_frame)
		c->max_frame = RAFT_CODEC_MAX_FRAME_DEFAULT;
	if (!c->queue_frames)
		c->queue_frames = PEER_DEFAULT_QUEUE_FRAMES;
	if (!c->queue_bytes)
		c->queue_bytes = PEER_DEFAULT_QUEUE_BYTES;
	if (!c->read_deadline_ms)
		c->read_deadline_ms = PEER_DEFAULT_READ_DEADLINE_MS;
	if (!c->ping_interval_ms)
		c->ping_interval_ms = PEER_DEFAULT_PING_MS;
	if (!c->handshake_timeout_ms)
		c->handshake_timeout_ms = PEER_DEFAULT_HANDSHAKE_MS;
	if (!c->backoff_min_ms)
		c->backoff_min_ms = PEER_DEFAULT_BACKOFF_MIN_MS;
	if (!c->backoff_max_ms)
		c->backoff_max_ms = PEER_DEFAULT_BACKOFF_MAX_MS;
	if (!c->listen_addr)
		c->listen_addr = "127.0.0.1";
	if (c->ping_interval_ms >= c->read_deadline_ms ||
	    c->backoff_max_ms < c->backoff_min_ms ||
	    c->queue_bytes < PEER_HDR_BYTES + RAFT_CODEC_FRAME_MIN) {
		PLOG_E("peer", "invalid configuration",
		       "why=\"ping_interval_ms must be < read_deadline_ms, backoff_min_ms <= backoff_max_ms, queue_bytes >= one frame\"");
		free(p);
		return -PARLEY_EINVAL;
	}
	p->rng.s = c->rng_seed ^ 0x70656572u;
	p->incarnation = parley_rng_next(&p->rng) ^ parley_mono_ns();
	p->ep = -1;
	p->lfd = -1;
	int rc = tls_setup(p);
	if (rc < 0) {
		free(p);
		return rc;
	}
	struct sockaddr_storage ss;
	socklen_t sl;
	if (parse_addr(c->listen_addr, c->listen_port, &ss, &sl) < 0) {
		PLOG_E("peer", "invalid configuration",
		       "why=\"listen address is not a numeric IPv4/IPv6 address\" addr=%s",
		       c->listen_addr);
		rc = -PARLEY_EINVAL;
		goto fail;
	}
	p->ep = epoll_create1(EPOLL_CLOEXEC);
	p->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->ep < 0 || p->lfd < 0) {
		rc = -errno;
		goto fail;
	}
	int one = 1;
	setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(p->lfd, (struct sockaddr *)&ss, sl) != 0 || listen(p->lfd, 64) != 0) {
		rc = -errno;
		PLOG_E("peer", "cannot listen", "addr=%s port=%u err=\"%s\"",
		       c->listen_addr, c->listen_port, strerror(errno));
		goto fail;
	}
	struct sockaddr_storage bound;
	socklen_t bl = sizeof bound;
	getsockname(p->lfd, (struct sockaddr *)&bound, &bl);
	p->port = ntohs(bound.ss_family == AF_INET
				? ((struct sockaddr_in *)&bound)->sin_port
				: ((struct sockaddr_in6 *)&bound)->sin6_port);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
	if (epoll_ctl(p->ep, EPOLL_CTL_ADD, p->lfd, &ev) != 0) {
		rc = -errno;
		goto fail;
	}
	*out = p;
	return 0;
fail:
	if (p->lfd >= 0)
		close(p->lfd);
	if (p->ep >= 0)
		close(p->ep);
	if (p->tls)
		SSL_CTX_free(p->tls);
	free(p);
	return rc;
}

void peer_free(struct peer *p)
{
	if (!p)
		return;
	p->depth = 0;
	p->cfg.on_link = NULL; /* no callbacks into a caller tearing down */
	for (uint32_t i = 0; i < PEER_MAX_PENDING; i++)
		if (p->pending[i])
			conn_close(p, p->pending[i], NULL);
	for (uint32_t i = 0; i < p->nlinks; i++) {
		struct plink *l = &p->links[i];
		if (l->c)
			conn_close(p, l->c, "transport stopped");
		queue_clear(l);
		pthread_mutex_destroy(&l->mu);
	}
	graveyard_free(p);
	close(p->lfd);
	close(p->ep);
	if (p->tls)
		SSL_CTX_free(p->tls);
	free(p->arena);
	free(p->scratch);
	free(p->strip);
	free(p);
}

uint16_t peer_port(const struct peer *p)
{
	return p->port;
}

int peer_fd(const struct peer *p)
{
	return p->ep;
}

int peer_add(struct peer *p, uint64_t node_id, const char *addr, uint16_t port)
{
	if (!node_id || node_id == p->cfg.node_id || !addr)
		return -PARLEY_EINVAL;
	if (link_find(p, node_id))
		return -PARLEY_EEXIST;
	if (p->nlinks >= PEER_MAX_NODES)
		return -PARLEY_EFULL;
	struct plink *l = &p->links[p->nlinks];
	memset(l, 0, sizeof *l);
	if (parse_addr(addr, port, &l->sa, &l->salen) < 0 || !port)
		return -PARLEY_EINVAL;
	l->node = node_id;
	snprintf(l->addr, sizeof l->addr, "%s", addr);
	l->port = port;
	l->dial = p->cfg.node_id < node_id;
	pthread_mutex_init(&l->mu, NULL);
	p->nlinks++;
	if (p->polled)
		PLOG_I("peer", "peer added", "node=%" PRIu64 " peer=%" PRIu64
		       " addr=%s:%u", p->cfg.node_id, node_id, addr, port);
	return 0;
}

int peer_remove(struct peer *p, uint64_t node_id)
{
	struct plink *l = link_find(p, node_id);
	if (!l)
		return -PARLEY_ENOTFOUND;
	if (l->removed)
		return 0;
	l->removed = true;
	if (l->c) {
		p->depth++;
		conn_close(p, l->c, "removed from the cluster");
		p->depth--;
		graveyard_free(p);
	}
	queue_clear(l);
	l->dial = false;
	SET(l->state, PEER_LINK_DOWN);
	link_error(l, "removed from the cluster");
	PLOG_I("peer", "peer removed", "node=%" PRIu64 " peer=%" PRIu64,
	       p->cfg.node_id, node_id);
	return 0;
}

int peer_poll(struct peer *p, int timeout_ms)
{
	p->polled = true;
	p->depth++;
	p->delivered = 0;
	uint64_t next = run_timers(p);
	uint64_t now = now_ms(p);
	int wait = timeout_ms;
	if (wait > 0 && next > now && next - now < (uint64_t)wait)
		wait = (int)(next - now);
	if (wait > 0 && next <= now)
		wait = 0;
	struct epoll_event evs[PEER_EVENTS];
	int n = epoll_wait(p->ep, evs, PEER_EVENTS, wait < 0 ? 0 : wait);
	int rc = 0;
	if (n < 0 && errno != EINTR)
		rc = -errno;
	for (int i = 0; i < n; i++) {
		if (evs[i].data.ptr == p) {
			on_accept(p);
			continue;
		}
		conn_event(p, evs[i].data.ptr, evs[i].events);
	}
	/* TLS may hold decrypted bytes the socket no longer signals (a read
	 * round limit hit mid-record): drain them now */
	for (uint32_t i = 0; p->tls && i < p->nlinks; i++) {
		struct pconn *c = p->links[i].c;
		if (c && c->ssl && c->st == C_UP && SSL_pending(c->ssl) > 0)
			conn_readable(p, c);
	}
	run_timers(p);
	p->depth--;
	peer_flush(p);
	return rc < 0 ? rc : p->delivered;
}

void peer_flush(struct peer *p)
{
	p->depth++;
	for (uint32_t i = 0; i < p->nlinks; i++) {
		struct plink *l = &p->links[i];
		if (l->c && (l->dirty || l->c->ctl_len) && !l->c->want_out)
			conn_flush(p, l->c);
	}
	p->depth--;
	graveyard_free(p);
}

static bool frame_hb_only(const struct raft_msg *m, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (m[i].type != RAFT_MSG_HEARTBEAT &&
		    m[i].type != RAFT_MSG_HEARTBEAT_RESP)
			return false;
	return true;
}

/* Contract item 4: room for a frame of len bytes, or false. */
static bool queue_room(struct plink *l, const struct peer *p, uint32_t len)
{
	for (;;) {
		if (GET(l->qframes) + 1 <= p->cfg.queue_frames &&
		    GET(l->qbytes) + len <= p->cfg.queue_bytes)
			return true;
		/* drop the oldest heartbeat-only frame not started on the wire */
		struct pframe *prev = NULL, *f = l->qh;
		while (f && !(f->hb && f->off == 0)) {
			prev = f;
			f = f->next;
		}
		if (!f)
			return false;
		if (prev)
			prev->next = f->next;
		else
			l->qh = f->next;
		if (l->qt == f)
			l->qt = prev;
		ADD(l->drops_hb, f->nmsgs);
		atomic_fetch_sub_explicit(&l->qframes, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&l->qbytes, f->len, memory_order_relaxed);
		free(f);
	}
}

/* Appends the encoded frame f (len bytes, n Raft messages, hb: only
 * heartbeats) to l's send queue, counted. */
static void frame_enqueue(struct plink *l, struct pframe *f, uint32_t len,
			  uint32_t n, bool hb)
{
	f->next = NULL;
	f->len = len;
	f->off = 0;
	f->nmsgs = n;
	f->hb = hb;
	if (l->qt)
		l->qt->next = f;
	else
		l->qh = f;
	l->qt = f;
	ADD(l->qframes, 1);
	ADD(l->qbytes, len);
	l->dirty = true;
}

static int queue_frame(struct peer *p, struct plink *l,
		       const struct raft_msg *msgs, uint32_t n, int size)
{
	bool hb = frame_hb_only(msgs, n);
	uint32_t len = PEER_HDR_BYTES + (uint32_t)size;
	if (!queue_room(l, p, len)) {
		if (hb)
			ADD(l->drops_hb, n);
		else
			ADD(l->refused_full, 1);
		return -PARLEY_EFULL;
	}
	struct pframe *f = malloc(sizeof *f + len);
	if (!f)
		return -PARLEY_ENOMEM;
	int k = raft_codec_encode(f->data + PEER_HDR_BYTES, (size_t)size, msgs, n);
	if (k != size) {
		free(f);
		return k < 0 ? k : -PARLEY_EINVAL;
	}
	peer_hdr_encode(f->data, PEER_FRAME_RAFT, (uint32_t)size);
	frame_enqueue(l, f, len, n, hb);
	return 0;
}

int peer_send(struct peer *p, uint64_t to, const struct raft_msg *msgs,
	      uint32_t n)
{
	struct plink *l = link_find(p, to);
	if (!l)
		return -PARLEY_EINVAL;
	if (l->removed)
		return -PARLEY_ENOTFOUND;
	for (uint32_t i = 0; i < n; i++)
		if (msgs[i].to != to || msgs[i].from != p->cfg.node_id)
			return -PARLEY_EINVAL;
	if (n == 0)
		return 0;
	if (!l->c || l->c->st != C_UP) {
		ADD(l->drops_down, n);
		return -PARLEY_ECLOSED;
	}
	/* advisory flags the peer does not decode leave cleared (item 8) */
	uint32_t clear = RAFT_MSGF_ADVISORY & ~(uint32_t)GET(l->raft_flags);
	uint32_t nclear = 0;
	for (uint32_t i = 0; clear && i < n; i++)
		nclear += (msgs[i].flags & clear) != 0;
	if (nclear) {
		if (p->strip_cap < n) {
			struct raft_msg *s = realloc(p->strip, n * sizeof *s);
			if (!s)
				return -PARLEY_ENOMEM;
			p->strip = s;
			p->strip_cap = n;
		}
		memcpy(p->strip, msgs, n * sizeof *msgs);
		for (uint32_t i = 0; i < n; i++)
			p->strip[i].flags &= ~clear;
		msgs = p->strip;
		ADD(l->flags_cleared, nclear);
	}
	uint32_t limit = l->peer_max_frame;
	if (limit > p->cfg.max_frame)
		limit = p->cfg.max_frame; /* what we send, we also bound */
	const int per_frame = (int)(RAFT_CODEC_HEADER_BYTES + RAFT_CODEC_BODY_MIN +
				    RAFT_CODEC_TRAILER_BYTES);
	int first_err = 0;
	uint32_t i = 0;
	while (i < n) {
		/* greedy batch: message sizes add up exactly (raft_codec.h) */
		uint32_t start = i;
		int size = per_frame;
		while (i < n && i - start < RAFT_CODEC_MAX_BATCH) {
			int one = raft_codec_size(&msgs[i], 1);
			if (one < 0) {
				if (i == start) {
					ADD(l->too_big, 1);
					if (!first_err)
						first_err = one;
					start = ++i;
					continue;
				}
				break;
			}
			if (one > (int)limit) {
				if (i == start) {
					ADD(l->too_big, 1);
					if (!first_err)
						first_err = -PARLEY_ETOOBIG;
					start = ++i;
					continue;
				}
				break;
			}
			int body = one - per_frame;
			if ((int64_t)size + body > (int64_t)limit)
				break;
			size += body;
			i++;
		}
		if (i == start)
			continue;
		int rc = queue_frame(p, l, msgs + start, i - start, size);
		if (rc < 0 && !first_err)
			first_err = rc;
	}
	return first_err;
}

int peer_send_app(struct peer *p, uint64_t to, uint8_t type,
		  const uint8_t *pl, uint32_t n)
{
	struct plink *l = link_find(p, to);
	if (!l || type < PEER_FRAME_FWD_REQ || type > PEER_FRAME_LAST)
		return -PARLEY_EINVAL;
	if (l->removed)
		return -PARLEY_ENOTFOUND;
	if (!l->c || l->c->st != C_UP || !l->greeted) {
		ADD(l->drops_down, 1);
		return -PARLEY_ECLOSED;
	}
	if (!(p->frames & GET(l->frames) & PEER_FRAME_BIT(type))) {
		ADD(l->unsupported, 1); /* contract item 9 */
		return -PARLEY_EVERSION;
	}
	if (n > l->peer_max_frame || n > p->cfg.max_frame) {
		ADD(l->too_big, 1);
		return -PARLEY_ETOOBIG;
	}
	uint32_t len = PEER_HDR_BYTES + n;
	if (!queue_room(l, p, len)) {
		ADD(l->refused_full, 1);
		return -PARLEY_EFULL;
	}
	struct pframe *f = malloc(sizeof *f + len);
	if (!f)
		return -PARLEY_ENOMEM;
	peer_hdr_encode(f->data, type, n);
	memcpy(f->data + PEER_HDR_BYTES, pl, n);
	frame_enqueue(l, f, len, 0, false);
	return 0;
}

bool peer_can_send(struct peer *p, uint64_t node, uint8_t type)
{
	struct plink *l = link_find(p, node);
	if (!l || l->removed || type > PEER_FRAME_LAST ||
	    GET(l->state) != PEER_LINK_UP)
		return false;
	/* frames is 0 from the handshake until the peer's first frame */
	return (p->frames & GET(l->frames) & PEER_FRAME_BIT(type)) != 0;
}

uint32_t peer_frames(const struct peer *p)
{
	return p->frames;
}

int peer_send_all(struct peer *p, const struct raft_msg *msgs, uint32_t n)
{
	if (n == 0)
		return 0;
	if (p->scratch_cap < n) {
		struct raft_msg *s = realloc(p->scratch, n * sizeof *s);
		if (!s)
			return -PARLEY_ENOMEM;
		p->scratch = s;
		p->scratch_cap = n;
	}
	int first_err = 0;
	for (uint32_t li = 0; li < p->nlinks; li++) {
		uint64_t to = p->links[li].node;
		if (p->links[li].removed)
			continue; /* counted as unknown below */
		uint32_t k = 0;
		for (uint32_t i = 0; i < n; i++)
			if (msgs[i].to == to)
				p->scratch[k++] = msgs[i];
		if (!k)
			continue;
		int rc = peer_send(p, to, p->scratch, k);
		if (rc < 0 && !first_err)
			first_err = rc;
	}
	for (uint32_t i = 0; i < n; i++)
		if (!known_node(p, msgs[i].to) && !first_err)
			first_err = -PARLEY_EINVAL;
	return first_err;
}

int peer_disconnect(struct peer *p, uint64_t node)
{
	struct plink *l = link_find(p, node);
	if (!l)
		return -PARLEY_ENOTFOUND;
	if (l->c) {
		p->depth++;
		conn_close(p, l->c, "disconnected by request");
		p->depth--;
		graveyard_free(p);
	}
	return 0;
}

/* ---- metrics ------------------------------------------------------------ */

static void stats_fill(struct plink *l, struct peer_link_stats *s)
{
	s->node = l->node;
	s->removed = l->removed;
	s->state = (enum peer_link_state)GET(l->state);
	s->bytes_in = GET(l->bytes_in);
	s->bytes_out = GET(l->bytes_out);
	s->frames_in = GET(l->frames_in);
	s->frames_out = GET(l->frames_out);
	s->msgs_in = GET(l->msgs_in);
	s->msgs_out = GET(l->msgs_out);
	s->connects = GET(l->connects);
	s->reconnects = GET(l->reconnects);
	s->connect_failures = GET(l->connect_failures);
	s->refused = GET(l->refused);
	s->dead = GET(l->dead);
	s->drops_hb = GET(l->drops_hb);
	s->drops_down = GET(l->drops_down);
	s->refused_full = GET(l->refused_full);
	s->too_big = GET(l->too_big);
	s->raft_flags = GET(l->raft_flags);
	s->flags_cleared = GET(l->flags_cleared);
	s->frames = GET(l->frames);
	s->frames_announced = GET(l->frames_announced);
	s->unsupported = GET(l->unsupported);
	s->queue_frames = GET(l->qframes);
	s->queue_bytes = GET(l->qbytes);
	pthread_mutex_lock(&l->mu);
	memcpy(s->last_error, l->last_error, sizeof s->last_error);
	memcpy(s->info, l->info, sizeof s->info);
	pthread_mutex_unlock(&l->mu);
}

int peer_stats(struct peer *p, struct peer_link_stats *out, uint32_t cap,
	       struct peer_stats_global *g)
{
	uint32_t n = p->nlinks;
	for (uint32_t i = 0; i < n && i < cap; i++)
		stats_fill(&p->links[i], &out[i]);
	if (g) {
		g->accepted = GET(p->accepted);
		g->inbound_refused = GET(p->inbound_refused);
		g->inbound_failed = GET(p->inbound_failed);
	}
	return (int)n;
}

int peer_link_stats(struct peer *p, uint64_t node, struct peer_link_stats *out)
{
	struct plink *l = link_find(p, node);
	if (!l)
		return -PARLEY_ENOTFOUND;
	stats_fill(l, out);
	return 0;
}

size_t peer_metrics_text(struct peer *p, char *buf, size_t cap)
{
	size_t len = 0;
#define EMIT(...)                                                              \
	do {                                                                   \
		int k_ = snprintf(len < cap ? buf + len : NULL,                \
				  len < cap ? cap - len : 0, __VA_ARGS__);     \
		if (k_ > 0)                                                    \
			len += (size_t)k_;                                     \
	} while (0)
	static const struct {
		const char *name, *type, *help;
		size_t off;
	} series[] = {
#define S(f, t, h) {"parley_peer_" #f, t, h, offsetof(struct peer_link_stats, f)}
		S(bytes_in, "counter", "bytes received from the node"),
		S(bytes_out, "counter", "bytes sent to the node"),
		S(frames_in, "counter", "Raft frames received"),
		S(frames_out, "counter", "Raft frames sent"),
		S(msgs_in, "counter", "Raft messages received"),
		S(msgs_out, "counter", "Raft messages sent"),
		S(connects, "counter", "handshakes completed"),
		S(reconnects, "counter", "handshakes completed after the first"),
		S(connect_failures, "counter", "dial, TLS or HELLO failures"),
		S(refused, "counter", "handshakes refused (either side)"),
		S(dead, "counter", "links closed by the read deadline"),
		S(drops_hb, "counter", "heartbeat messages dropped (queue full)"),
		S(drops_down, "counter", "messages dropped while the link was down"),
		S(refused_full, "counter", "frames refused: send queue full"),
		S(too_big, "counter", "messages larger than the peer's max_frame"),
		S(flags_cleared, "counter",
		  "messages sent with advisory Raft flags the node does not decode cleared"),
		S(unsupported, "counter",
		  "application frames not sent: the node (or this one) does not know their type"),
		S(queue_frames, "gauge", "frames queued"),
		S(queue_bytes, "gauge", "bytes queued"),
#undef S
	};
	struct peer_link_stats st[PEER_MAX_NODES];
	struct peer_stats_global g;
	int n = peer_stats(p, st, PEER_MAX_NODES, &g);
	EMIT("# HELP parley_peer_link_up 1 when the link to the node is up\n"
	     "# TYPE parley_peer_link_up gauge\n");
	for (int i = 0; i < n; i++)
		EMIT("parley_peer_link_up{node=\"%" PRIu64 "\"} %d\n", st[i].node,
		     st[i].state == PEER_LINK_UP);
	for (size_t s = 0; s < sizeof series / sizeof series[0]; s++) {
		EMIT("# HELP %s %s\n# TYPE %s %s\n", series[s].name, series[s].help,
		     series[s].name, series[s].type);
		for (int i = 0; i < n; i++) {
			uint64_t v;
			memcpy(&v, (const char *)&st[i] + series[s].off, sizeof v);
			EMIT("%s{node=\"%" PRIu64 "\"} %" PRIu64 "\n", series[s].name,
			     st[i].node, v);
		}
	}
	EMIT("# TYPE parley_peer_inbound_accepted counter\n"
	     "parley_peer_inbound_accepted %" PRIu64 "\n"
	     "# TYPE parley_peer_inbound_refused counter\n"
	     "parley_peer_inbound_refused %" PRIu64 "\n"
	     "# TYPE parley_peer_inbound_failed counter\n"
	     "parley_peer_inbound_failed %" PRIu64 "\n",
	     g.accepted, g.inbound_refused, g.inbound_failed);
#undef EMIT
	if (cap)
		buf[len < cap ? len : cap - 1] = '\0';
	return len;
}
