/*
 * loop.c — one io_uring event loop: listeners, connection slots, receive
 * through a provided buffer ring, sends, timers and the MPSC message list.
 * The design is described in loop.h; the connection state machine in
 * conn.h. A connection is opaque here: the loop keeps its transport state
 * in the struct loop_sock it embeds and calls the conn_* entry points of
 * loop_conn.h (never conn.h).
 *
 * user_data layout of our SQEs: op (8 bits) | slot (24 bits) | gen (32
 * bits). A CQE whose (slot, gen) no longer names a live connection cannot
 * exist: a connection is freed only once its `ops` count (SQEs in flight)
 * is zero (conn.h invariant 5).
 *
 * Invariants
 *   1. slots[i].c != NULL  <=>  slot i is in use; slots[i].gen increases
 *      every time the slot is freed, so stale handles never match.
 *   2. Every provided buffer is either owned by the kernel (in the buffer
 *      ring) or being parsed right now; it is handed back before the next
 *      CQE is looked at.
 *   3. The loop exits only after a stop request and once every connection
 *      is freed.
 *   4. A virtual connection (a request another node forwarded, LM_FWD,
 *      proxy.h, or an inbox tail it relays, LM_TAIL_OPEN, tail_relay.h)
 *      holds a slot like any other and counts in nconns, but has
 *      no socket (fd -1): it is never armed for receive, paused, shut
 *      down or closed, and not counted as a client connection (nor
 *      against max_conns: nvirt).
 *
 * Threads: loop_main runs on its own thread; loop_post/loop_stop from any.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "loop.h"
#include "loop_conn.h"
#include "presence.h"
#include "proxy.h"
#include "tail_relay.h"
#include "parley_proto.h"

#define LOOP_RING_DEPTH 1024u
#define LOOP_NBUFS 256u          /* provided receive buffers per loop */
#define LOOP_BUFSZ (16u << 10)
#define LOOP_BGID 7
#define LOOP_TICK_MS 100

enum loop_op {
	OP_ACCEPT = 1,
	OP_RECV,
	OP_SEND,
	OP_TIMER,
	OP_WAKE,
	OP_CANCEL,
};

#define UD(op, slot, gen)                                                      \
	(((uint64_t)(op) << 56) | ((uint64_t)((slot) & 0xFFFFFF) << 32) |       \
	 (uint64_t)(uint32_t)(gen))
#define UD_OP(u) ((unsigned)((u) >> 56))
#define UD_SLOT(u) ((uint32_t)(((u) >> 32) & 0xFFFFFF))
#define UD_GEN(u) ((uint32_t)(u))

struct slotent {
	struct conn *c;
	uint32_t gen;
	uint32_t next_free;
};

struct listener {
	int fd;
	bool tls;
	bool armed;
};

struct loop {
	struct srv *s;
	unsigned idx;
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	struct listener ls[2];
	unsigned nls;
	int efd;
	uint64_t efd_val;
	struct __kernel_timespec tick;
	struct slotent *slots;
	uint32_t nslots, slot_cap, free_head; /* free list through next_free */
	_Atomic uint32_t nconns;
	uint32_t nvirt;          /* of them virtual (LM_FWD): not clients */
	pthread_mutex_t mu;
	struct lmsg *mhead, *mtail;
	bool wake_pending;
	bool stopping;
	bool rx_paused;          /* memory budget over: no connection reads */
	uint64_t drain_deadline_ns;
	uint8_t *scratch;
	/* connections whose send starts at the end of this round: at most
	 * one entry each (loop_sock.kick_queued), so <= the slots in use */
	struct kick { uint32_t slot, gen; } *kq;
	uint32_t kq_n, kq_cap;
};

#define NO_SLOT UINT32_MAX

struct srv *loop_srv(struct loop *lp)
{
	return lp->s;
}
uint8_t *loop_scratch(struct loop *lp)
{
	return lp->scratch;
}
uint32_t loop_conn_count(struct loop *lp)
{
	return atomic_load_explicit(&lp->nconns, memory_order_relaxed);
}

static struct io_uring_sqe *get_sqe(struct loop *lp)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&lp->ring);
	if (!sqe) {
		/* SQ full: push what we have to the kernel and retry. */
		io_uring_submit(&lp->ring);
		sqe = io_uring_get_sqe(&lp->ring);
	}
	PARLEY_ASSERT(sqe);
	return sqe;
}

/* ---- listeners ------------------------------------------------------------ */

/*
 * Bind a listener for one loop. Every loop has its own socket on the same
 * port (SO_REUSEPORT spreads accepts over the loops), but SO_REUSEPORT would
 * also let a second parleyd of the same user bind the port silently and
 * take half of its connections. So the first loop (`exclusive`) first binds
 * a probe socket without SO_REUSEPORT: that bind fails with EADDRINUSE while
 * anyone else listens on the port, whatever options they used.
 */
static int bind_probe(const struct addrinfo *ai)
{
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	int rc = bind(fd, ai->ai_addr, ai->ai_addrlen) ? -errno : 0;
	close(fd);
	return rc;
}

static int listen_on(const char *host, uint16_t port, bool exclusive, int *out)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char ps[8];
	snprintf(ps, sizeof ps, "%u", port);
	int rc = getaddrinfo(host, ps, &hints, &res);
	if (rc)
		return -PARLEY_EINVAL;
	if (exclusive && (rc = bind_probe(res)) != 0) {
		freeaddrinfo(res);
		return rc;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		freeaddrinfo(res);
		return rc;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 4096)) {
		rc = -errno;
		close(fd);
		freeaddrinfo(res);
		return rc;
	}
	freeaddrinfo(res);
	*out = fd;
	return 0;
}

static void arm_accept(struct loop *lp, unsigned i)
{
	struct io_uring_sqe *sqe = get_sqe(lp);
	io_uring_prep_multishot_accept(sqe, lp->ls[i].fd, NULL, NULL,
				       SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, i, 0));
	lp->ls[i].armed = true;
}

static void arm_wake(struct loop *lp)
{
	struct io_uring_sqe *sqe = get_sqe(lp);
	io_uring_prep_read(sqe, lp->efd, &lp->efd_val, sizeof lp->efd_val, 0);
	io_uring_sqe_set_data64(sqe, UD(OP_WAKE, 0, 0));
}

static void arm_timer(struct loop *lp)
{
	struct io_uring_sqe *sqe = get_sqe(lp);
	io_uring_prep_timeout(sqe, &lp->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, UD(OP_TIMER, 0, 0));
}

int loop_create(struct srv *s, unsigned idx, const struct loop_listen *ls,
		struct loop **out)
{
	struct loop *lp = calloc(1, sizeof *lp);
	if (!lp)
		return -PARLEY_ENOMEM;
	lp->s = s;
	lp->idx = idx;
	lp->efd = -1;
	lp->free_head = NO_SLOT;
	lp->tick.tv_nsec = LOOP_TICK_MS * 1000000L;
	pthread_mutex_init(&lp->mu, NULL);
	int rc;
	/* COOP_TASKRUN: completions are run when we enter the kernel anyway
	 * (no IPIs). Not SINGLE_ISSUER: the ring is set up on the main thread
	 * and driven by the loop thread. */
	struct io_uring_params p = {.flags = IORING_SETUP_COOP_TASKRUN};
	rc = io_uring_queue_init_params(LOOP_RING_DEPTH, &lp->ring, &p);
	if (rc < 0) {
		/* older kernels: no COOP_TASKRUN */
		memset(&p, 0, sizeof p);
		rc = io_uring_queue_init_params(LOOP_RING_DEPTH, &lp->ring, &p);
	}
	if (rc < 0) {
		free(lp);
		return rc;
	}
	size_t brsz = LOOP_NBUFS * sizeof(struct io_uring_buf);
	if (posix_memalign((void **)&lp->br, 4096, brsz) ||
	    posix_memalign((void **)&lp->bufs, 4096,
			   (size_t)LOOP_NBUFS * LOOP_BUFSZ)) {
		rc = -PARLEY_ENOMEM;
		goto fail;
	}
	io_uring_buf_ring_init(lp->br);
	struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)lp->br,
				       .ring_entries = LOOP_NBUFS,
				       .bgid = LOOP_BGID};
	rc = io_uring_register_buf_ring(&lp->ring, &reg, 0);
	if (rc < 0)
		goto fail;
	int mask = io_uring_buf_ring_mask(LOOP_NBUFS);
	for (unsigned i = 0; i < LOOP_NBUFS; i++)
		io_uring_buf_ring_add(lp->br, lp->bufs + (size_t)i * LOOP_BUFSZ,
				      LOOP_BUFSZ, (unsigned short)i, mask, (int)i);
	io_uring_buf_ring_advance(lp->br, LOOP_NBUFS);
	lp->scratch = malloc(PARLEY_PROTO_MAX_FRAME_HARD);
	lp->efd = eventfd(0, EFD_CLOEXEC);
	if (!lp->scratch || lp->efd < 0) {
		rc = -PARLEY_ENOMEM;
		goto fail;
	}
	if (ls->tcp_port) {
		rc = listen_on(ls->host, ls->tcp_port, idx == 0,
			       &lp->ls[lp->nls].fd);
		if (rc)
			goto fail;
		lp->ls[lp->nls++].tls = false;
	}
	if (ls->tls_port && s->tls) {
		rc = listen_on(ls->host, ls->tls_port, idx == 0,
			       &lp->ls[lp->nls].fd);
		if (rc)
			goto fail;
		lp->ls[lp->nls++].tls = true;
	}
	*out = lp;
	return 0;
fail:
	for (unsigned i = 0; i < lp->nls; i++)
		close(lp->ls[i].fd);
	if (lp->efd >= 0)
		close(lp->efd);
	free(lp->scratch);
	free(lp->bufs);
	free(lp->br);
	io_uring_queue_exit(&lp->ring);
	free(lp);
	return rc;
}

void loop_free(struct loop *lp)
{
	if (!lp)
		return;
	struct lmsg *m = lp->mhead;
	while (m) {
		struct lmsg *n = m->next;
		free(m);
		m = n;
	}
	for (unsigned i = 0; i < lp->nls; i++)
		if (lp->ls[i].fd >= 0)
			close(lp->ls[i].fd);
	close(lp->efd);
	io_uring_queue_exit(&lp->ring);
	free(lp->scratch);
	free(lp->bufs);
	free(lp->br);
	free(lp->slots);
	free(lp->kq);
	pthread_mutex_destroy(&lp->mu);
	free(lp);
}

/* ---- messages ---------------------------------------------------------------- */

void loop_post(struct loop *lp, struct lmsg *m)
{
	m->next = NULL;
	bool wake = false;
	pthread_mutex_lock(&lp->mu);
	if (lp->mtail)
		lp->mtail->next = m;
	else
		lp->mhead = m;
	lp->mtail = m;
	if (!lp->wake_pending) {
		lp->wake_pending = true;
		wake = true;
	}
	pthread_mutex_unlock(&lp->mu);
	if (wake) {
		uint64_t one = 1;
		ssize_t w = write(lp->efd, &one, sizeof one);
		(void)w; /* an eventfd write only fails on overflow: already awake */
	}
}

void loop_stop(struct loop *lp)
{
	struct lmsg *m = lmsg_new(LM_STOP, 0);
	if (!m) /* a loop that never stops would hang the graceful stop */
		srv_oom("loop stop message");
	loop_post(lp, m);
}

/* ---- slots --------------------------------------------------------------------- */

static uint32_t slot_alloc(struct loop *lp)
{
	if (lp->free_head != NO_SLOT) {
		uint32_t i = lp->free_head;
		lp->free_head = lp->slots[i].next_free;
		return i;
	}
	if (lp->nslots == lp->slot_cap) {
		uint32_t nc = lp->slot_cap ? lp->slot_cap * 2 : 256;
		if (nc > 0xFFFFFF)
			return NO_SLOT;
		struct slotent *ns = realloc(lp->slots, nc * sizeof *ns);
		if (!ns)
			return NO_SLOT;
		memset(ns + lp->slot_cap, 0, (nc - lp->slot_cap) * sizeof *ns);
		lp->slots = ns;
		lp->slot_cap = nc;
	}
	return lp->nslots++;
}

static struct conn *slot_conn(struct loop *lp, uint32_t slot, uint32_t gen)
{
	if (slot >= lp->nslots)
		return NULL;
	struct slotent *se = &lp->slots[slot];
	return se->c && se->gen == gen ? se->c : NULL;
}

/* ---- connections ------------------------------------------------------------------ */

static void arm_recv(struct loop *lp, struct conn *c)
{
	struct loop_sock *k = conn_sock(c);
	struct io_uring_sqe *sqe = get_sqe(lp);
	io_uring_prep_recv_multishot(sqe, k->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = LOOP_BGID;
	io_uring_sqe_set_data64(sqe, UD(OP_RECV, k->ref.slot, k->ref.gen));
	k->recv_armed = true;
	k->ops++;
}

/* Starts a send of the bytes at the head of c's outbound queue, if none
 * is in flight. */
static void send_start(struct conn *c)
{
	struct loop_sock *k = conn_sock(c);
	const uint8_t *p;
	uint32_t n;
	if (k->send_inflight || k->closing || !(n = conn_out_peek(c, &p)))
		return;
	struct io_uring_sqe *sqe = get_sqe(k->ref.lp);
	io_uring_prep_send(sqe, k->fd, p, n, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, UD(OP_SEND, k->ref.slot, k->ref.gen));
	k->send_inflight = true;
	k->ops++;
}

/* Batched writes: the send starts in loop_kicks_run, at the end of the
 * round, after every frame of the round is queued. */
void loop_conn_kick(struct conn *c)
{
	struct loop_sock *k = conn_sock(c);
	struct loop *lp = k->ref.lp;
	if (k->kick_queued || k->send_inflight || k->closing)
		return;
	if (lp->kq_n == lp->kq_cap) {
		uint32_t nc = lp->kq_cap ? lp->kq_cap * 2 : 64;
		struct kick *nk = realloc(lp->kq, nc * sizeof *nk);
		if (!nk) { /* no room to defer: send now */
			send_start(c);
			return;
		}
		lp->kq = nk;
		lp->kq_cap = nc;
	}
	lp->kq[lp->kq_n++] = (struct kick){k->ref.slot, k->ref.gen};
	k->kick_queued = true;
}

void loop_conn_close(struct conn *c, const char *why)
{
	struct loop_sock *k = conn_sock(c);
	struct loop *lp = k->ref.lp;
	if (k->closing)
		return;
	PLOG_D("loop", "closing connection", "loop=%u slot=%u why=\"%s\"",
	       lp->idx, k->ref.slot, why);
	k->closing = true;
	conn_on_close(c);
	/* shutdown(2) completes a pending recv with EOF and fails sends; the
	 * cancel covers a recv the kernel has not started. */
	if (k->fd >= 0) /* not a virtual connection */
		shutdown(k->fd, SHUT_RDWR);
	if (k->recv_armed) {
		struct io_uring_sqe *sqe = get_sqe(lp);
		io_uring_prep_cancel64(sqe, UD(OP_RECV, k->ref.slot, k->ref.gen), 0);
		io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, 0));
	}
}

/* Frees a closing connection once the kernel holds nothing of it. */
static void conn_maybe_free(struct loop *lp, struct conn *c)
{
	struct loop_sock *k = conn_sock(c);
	if (!k->closing || k->ops)
		return;
	uint32_t slot = k->ref.slot;
	bool virt = k->fd < 0;
	if (!virt)
		close(k->fd);
	conn_free(c);
	lp->slots[slot].c = NULL;
	lp->slots[slot].gen++;
	lp->slots[slot].next_free = lp->free_head;
	lp->free_head = slot;
	atomic_fetch_sub_explicit(&lp->nconns, 1, memory_order_relaxed);
	if (virt) {
		lp->nvirt--;
		return;
	}
	atomic_fetch_sub_explicit(&lp->s->ctr.conns_open, 1,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&lp->s->ctr.conns_closed, 1,
				  memory_order_relaxed);
}

static void on_accept(struct loop *lp, unsigned li, int res, unsigned flags)
{
	if (!(flags & IORING_CQE_F_MORE)) {
		lp->ls[li].armed = false;
		if (!lp->stopping && lp->ls[li].fd >= 0)
			arm_accept(lp, li);
	}
	if (res < 0) {
		if (res != -ECANCELED)
			PLOG_W("loop", "accept failed", "loop=%u err=%s", lp->idx,
			       parley_errname(res));
		return;
	}
	int fd = res;
	struct srv *s = lp->s;
	if (lp->stopping ||
	    atomic_load(&lp->nconns) - lp->nvirt >= s->lim.max_conns) {
		close(fd); /* admission control: over the connection bound */
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	uint32_t slot = slot_alloc(lp);
	if (slot == NO_SLOT) {
		close(fd);
		return;
	}
	struct conn *c = conn_new(lp, fd, lp->ls[li].tls, slot,
				  lp->slots[slot].gen);
	if (!c) {
		close(fd);
		lp->slots[slot].next_free = lp->free_head;
		lp->free_head = slot;
		return;
	}
	lp->slots[slot].c = c;
	atomic_fetch_add_explicit(&lp->nconns, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->ctr.conns_open, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->ctr.conns_accepted, 1,
				  memory_order_relaxed);
	if (lp->ls[li].tls)
		atomic_fetch_add_explicit(&s->ctr.conns_tls, 1,
					  memory_order_relaxed);
	if (lp->rx_paused)
		conn_sock(c)->rx_paused = true; /* on_tick arms it once the budget recovers */
	else
		arm_recv(lp, c);
}

/* The engine's side of the memory budget: a few relaxed atomic loads. */
static void budget_sample(struct srv *s)
{
	if (!s->engine)
		return;
	struct pe_memory pm;
	pe_memory(s->engine, &pm);
	membudget_set_engine(&s->mem, &pm);
}

/* Memory budget over (membudget.h): stop reading from c. The bytes the
 * kernel already handed us are parsed; the multishot recv is cancelled
 * (its last CQE, -ECANCELED, is expected) and on_tick re-arms it once the
 * budget has recovered. TCP flow control then slows the client down. */
static void pause_recv(struct loop *lp, struct conn *c)
{
	struct loop_sock *k = conn_sock(c);
	if (k->rx_paused || k->closing || k->fd < 0)
		return;
	k->rx_paused = true;
	atomic_fetch_add_explicit(&lp->s->ctr.recv_paused, 1,
				  memory_order_relaxed);
	if (k->recv_armed) {
		struct io_uring_sqe *sqe = get_sqe(lp);
		io_uring_prep_cancel64(sqe, UD(OP_RECV, k->ref.slot, k->ref.gen), 0);
		io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, 0));
	}
}

/* Stops reading on every connection of the loop at once. Pausing only the
 * connections whose data arrives would not bound anything: the kernel
 * posts all of a socket's pending bytes as soon as it has provided
 * buffers, so what is over the budget is at most the CQEs already posted
 * (LOOP_NBUFS x LOOP_BUFSZ per loop). */
static void loop_pause_all(struct loop *lp)
{
	if (lp->rx_paused)
		return;
	lp->rx_paused = true;
	for (uint32_t i = 0; i < lp->nslots; i++)
		if (lp->slots[i].c)
			pause_recv(lp, lp->slots[i].c);
	/* now, not at the end of this CQE batch: the kernel keeps posting
	 * receives while we reap (and recycle buffers) */
	io_uring_submit(&lp->ring);
}

static void recycle_buf(struct loop *lp, unsigned bid)
{
	io_uring_buf_ring_add(lp->br, lp->bufs + (size_t)bid * LOOP_BUFSZ,
			      LOOP_BUFSZ, (unsigned short)bid,
			      io_uring_buf_ring_mask(LOOP_NBUFS), 0);
	io_uring_buf_ring_advance(lp->br, 1);
}

static void on_recv(struct loop *lp, struct conn *c, int res, unsigned flags)
{
	struct loop_sock *k = conn_sock(c);
	bool more = flags & IORING_CQE_F_MORE;
	if (!more) {
		k->recv_armed = false;
		k->ops--;
	}
	if (res > 0) {
		PARLEY_ASSERT(flags & IORING_CQE_F_BUFFER);
		unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
		if (!k->closing) {
			atomic_fetch_add_explicit(&lp->s->ctr.bytes_in,
						  (uint64_t)res,
						  memory_order_relaxed);
			conn_on_recv(c, lp->bufs + (size_t)bid * LOOP_BUFSZ,
				     (uint32_t)res);
		}
		recycle_buf(lp, bid);
		budget_sample(lp->s);
		if (!k->closing && membudget_over(&lp->s->mem))
			loop_pause_all(lp);
		if (!more && !k->closing && !k->rx_paused)
			arm_recv(lp, c);
		return;
	}
	if (res == -ECANCELED && k->rx_paused)
		return; /* our pause_recv: on_tick re-arms */
	if (res == -ENOBUFS) {
		/* every provided buffer is in use: conn_tick re-arms shortly */
		return;
	}
	if (!k->closing)
		loop_conn_close(c, res == 0 ? "eof" : "recv error");
}

static void on_send(struct loop *lp, struct conn *c, int res)
{
	struct loop_sock *k = conn_sock(c);
	k->ops--;
	k->send_inflight = false;
	if (k->closing)
		return;
	if (res < 0) {
		loop_conn_close(c, "send error");
		return;
	}
	atomic_fetch_add_explicit(&lp->s->ctr.bytes_out, (uint64_t)res,
				  memory_order_relaxed);
	conn_on_sent(c, (uint32_t)res);
	loop_conn_kick(c);
}

/* Starts the sends the round asked for (loop_conn_kick). */
static void loop_kicks_run(struct loop *lp)
{
	for (uint32_t i = 0; i < lp->kq_n; i++) {
		struct conn *c = slot_conn(lp, lp->kq[i].slot, lp->kq[i].gen);
		if (!c)
			continue; /* closed and freed since */
		conn_sock(c)->kick_queued = false;
		send_start(c);
	}
	lp->kq_n = 0;
}

/* ---- drain / stop ------------------------------------------------------------------ */

static void loop_begin_stop(struct loop *lp)
{
	if (lp->stopping)
		return;
	lp->stopping = true;
	lp->drain_deadline_ns = parley_mono_ns() +
				(uint64_t)lp->s->lim.drain_timeout_ms * 1000000ull;
	for (unsigned i = 0; i < lp->nls; i++) {
		/* closing the fd does not end a multishot accept: cancel it */
		struct io_uring_sqe *sqe = get_sqe(lp);
		io_uring_prep_cancel64(sqe, UD(OP_ACCEPT, i, 0), 0);
		io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, 0));
		io_uring_submit(&lp->ring);
		close(lp->ls[i].fd);
		lp->ls[i].fd = -1;
	}
	PLOG_I("loop", "draining", "loop=%u conns=%u", lp->idx,
	       atomic_load(&lp->nconns));
	for (uint32_t i = 0; i < lp->nslots; i++) {
		struct conn *c = lp->slots[i].c;
		if (c)
			conn_drain(c, PARLEY_GOAWAY_DRAIN, 1000,
				   "server shutting down");
	}
}

/* A request another node forwarded (LM_FWD, proxy.h): run it on a
 * virtual connection of this loop, or refuse it (AGAIN) at once. */
static void loop_fwd(struct loop *lp, struct lmsg *m)
{
	struct srv *s = lp->s;
	struct proxy_req r;
	if (proxy_req_decode(m->data, m->len, &r)) /* checked before posting */
		return;
	uint64_t node = m->u.fwd.node;
	uint32_t slot = lp->stopping ? NO_SLOT : slot_alloc(lp);
	struct conn *c = slot == NO_SLOT
				 ? NULL
				 : conn_virtual_new(lp, slot, lp->slots[slot].gen,
						    node, &r);
	if (!c) {
		if (slot != NO_SLOT) {
			lp->slots[slot].next_free = lp->free_head;
			lp->free_head = slot;
		}
		proxy_served_refuse(s->proxy, node, &r,
				    lp->stopping ? "node stopping, retry"
						 : "out of memory, retry");
		return;
	}
	lp->slots[slot].c = c;
	atomic_fetch_add_explicit(&lp->nconns, 1, memory_order_relaxed);
	lp->nvirt++;
	conn_virtual_run(c, r.frame, r.flen);
	conn_maybe_free(lp, c);
}

/* An inbox tail another node opened (LM_TAIL_OPEN, tail_relay.h): run
 * its SYNC on a tail virtual connection of this loop, or tell the gateway
 * it ended (END: it answers its device AGAIN or re-subscribes). */
static void loop_tail(struct loop *lp, struct lmsg *m)
{
	struct srv *s = lp->s;
	struct tail_msg t;
	if (!s->tail || tail_msg_decode(TAIL_FRAME_REQ, m->data, m->len, &t) ||
	    t.op != TAIL_OP_OPEN) /* checked before posting */
		return;
	uint64_t node = m->u.tail.node;
	uint32_t slot = lp->stopping ? NO_SLOT : slot_alloc(lp);
	struct conn *c = slot == NO_SLOT
				 ? NULL
				 : conn_tail_virtual_new(lp, slot,
							 lp->slots[slot].gen,
							 node, &t);
	if (!c) {
		if (slot != NO_SLOT) {
			lp->slots[slot].next_free = lp->free_head;
			lp->free_head = slot;
		}
		tail_relay_served_end(s->tail, node, t.id);
		return;
	}
	lp->slots[slot].c = c;
	atomic_fetch_add_explicit(&lp->nconns, 1, memory_order_relaxed);
	lp->nvirt++;
	if (tail_relay_served_bind(s->tail, node, t.id, &conn_sock(c)->ref))
		conn_tail_virtual_run(c, t.body, t.blen);
	else /* the gateway closed it meanwhile */
		loop_conn_close(c, "inbox tail closed by its gateway");
	conn_maybe_free(lp, c);
}

static void drain_msgs(struct loop *lp)
{
	pthread_mutex_lock(&lp->mu);
	struct lmsg *m = lp->mhead;
	lp->mhead = lp->mtail = NULL;
	lp->wake_pending = false;
	pthread_mutex_unlock(&lp->mu);
	while (m) {
		struct lmsg *n = m->next;
		if (m->kind == LM_PUSH) /* delivered below or dropped */
			presence_push_retired(lp->s->pres);
		if (m->kind == LM_STOP) {
			loop_begin_stop(lp);
		} else if (m->kind == LM_FWD) {
			loop_fwd(lp, m);
		} else if (m->kind == LM_TAIL_OPEN) {
			loop_tail(lp, m);
		} else {
			struct conn *c = slot_conn(lp, m->slot, m->gen);
			if (c && !conn_sock(c)->closing) {
				conn_on_msg(c, m);
				conn_maybe_free(lp, c);
			}
		}
		free(m);
		m = n;
	}
}

static void on_tick(struct loop *lp)
{
	uint64_t now_ns = parley_mono_ns();
	uint64_t now_ms = parley_now_ms();
	bool force = lp->stopping && now_ns >= lp->drain_deadline_ns;
	struct srv *s = lp->s;
	budget_sample(s);
	bool over = membudget_over(&s->mem);
	if (over)
		loop_pause_all(lp);
	else
		lp->rx_paused = false;
	for (uint32_t i = 0; i < lp->nslots; i++) {
		struct conn *c = lp->slots[i].c;
		if (!c)
			continue;
		struct loop_sock *k = conn_sock(c);
		if (force)
			loop_conn_close(c, "drain deadline");
		else
			conn_tick(c, now_ns, now_ms);
		if (!k->closing && !k->recv_armed && k->fd >= 0 &&
		    (!k->rx_paused || !over)) {
			k->rx_paused = false;
			arm_recv(lp, c);
		}
		conn_maybe_free(lp, c);
	}
}

void *loop_main(void *arg)
{
	struct loop *lp = arg;
	/* a SEND's engine request and chat job are made here and freed on a
	 * shard: they come back to this thread's pool (parley_common.h) */
	int prc = parley_pool_thread_start();
	if (prc)
		PLOG_W("loop", "no block pool: plain malloc", "loop=%u err=%s",
		       lp->idx, parley_errname(prc));
	for (unsigned i = 0; i < lp->nls; i++)
		arm_accept(lp, i);
	arm_wake(lp);
	arm_timer(lp);
	while (!(lp->stopping && atomic_load(&lp->nconns) == 0)) {
		int rc = io_uring_submit_and_wait(&lp->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			PLOG_E("loop", "io_uring_submit_and_wait failed",
			       "loop=%u err=%s", lp->idx, parley_errname(rc));
			PARLEY_ASSERT(0 && "event loop ring failed");
		}
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&lp->ring, head, cqe) {
			seen++;
			uint64_t ud = cqe->user_data;
			int res = cqe->res;
			unsigned flags = cqe->flags;
			switch (UD_OP(ud)) {
			case OP_ACCEPT:
				on_accept(lp, UD_SLOT(ud), res, flags);
				break;
			case OP_RECV: {
				struct conn *c = slot_conn(lp, UD_SLOT(ud), UD_GEN(ud));
				PARLEY_ASSERT(c);
				on_recv(lp, c, res, flags);
				conn_maybe_free(lp, c);
				break;
			}
			case OP_SEND: {
				struct conn *c = slot_conn(lp, UD_SLOT(ud), UD_GEN(ud));
				PARLEY_ASSERT(c);
				on_send(lp, c, res);
				conn_maybe_free(lp, c);
				break;
			}
			case OP_TIMER:
				on_tick(lp);
				arm_timer(lp);
				break;
			case OP_WAKE:
				arm_wake(lp);
				break;
			default:
				break;
			}
		}
		io_uring_cq_advance(&lp->ring, seen);
		drain_msgs(lp);
		loop_kicks_run(lp);
	}
	PLOG_I("loop", "stopped", "loop=%u", lp->idx);
	parley_pool_thread_end();
	return NULL;
}
