/*
 * conn_fx.h — the fake loop and fixture of the connection tests
 * (test_conn.c: the state machine; test_conn_req.c: the request
 * handlers). It implements loop_conn.h's loop side and lmsg.h's
 * loop_post, so loop.c is not linked: bytes are fed with conn_on_recv,
 * the frames the connection queues are read back with
 * conn_out_peek/conn_on_sent, posted messages are handed back with
 * conn_on_msg, and the chat service runs on the in-memory engine
 * (chat_world.h).
 *
 * Allocation failure: the binary must be linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (tests.cmake); armed on
 * a thread (nomem_at = k), the k-th allocation of that thread fails.
 *
 * Include it from one .c file per test binary only: it defines the fake
 * loop's and the allocation wrappers' external functions.
 */
#ifndef PARLEY_TEST_CONN_FX_H
#define PARLEY_TEST_CONN_FX_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_world.h"
#include "conn.h"

/* ---- the fake loop ------------------------------------------------------------- */

struct loop {
	struct srv *s;
	uint8_t *scratch;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct lmsg *head, *tail;
	unsigned kicks;
	char closed_why[64];
};

struct srv *loop_srv(struct loop *lp)
{
	return lp->s;
}

uint8_t *loop_scratch(struct loop *lp)
{
	return lp->scratch;
}

void loop_conn_kick(struct conn *c)
{
	conn_sock(c)->ref.lp->kicks++;
}

void loop_conn_close(struct conn *c, const char *why)
{
	struct loop_sock *k = conn_sock(c);
	if (k->closing)
		return;
	k->closing = true;
	snprintf(k->ref.lp->closed_why, sizeof k->ref.lp->closed_why, "%s", why);
	conn_on_close(c);
}

void loop_post(struct loop *lp, struct lmsg *m)
{
	m->next = NULL;
	pthread_mutex_lock(&lp->mu);
	if (lp->tail)
		lp->tail->next = m;
	else
		lp->head = m;
	lp->tail = m;
	pthread_cond_broadcast(&lp->cv);
	pthread_mutex_unlock(&lp->mu);
}

/* ---- fixture ----------------------------------------------------------------------- */

static inline int fake_auth(void *arg, const char *token, size_t len, char *sub,
		     size_t subcap, uint64_t *exp_ms, char *why, size_t whycap)
{
	(void)arg;
	*exp_ms = 0;
	if (len < 5 || memcmp(token, "good:", 5) != 0 || len - 5 >= subcap) {
		snprintf(why, whycap, "bad token");
		return -PARLEY_EAUTH;
	}
	memcpy(sub, token + 5, len - 5);
	sub[len - 5] = '\0';
	return 0;
}

struct fx {
	struct world w;
	bool chat;
	struct srv s;
	struct loop lp;
	struct conn *c;
	uint32_t gen;
	/* bytes the connection wrote, and how far they were read */
	uint8_t *out;
	size_t olen, ocap, opos;
};

static inline void fx_start(struct fx *f, bool with_chat, uint64_t seed)
{
	memset(f, 0, sizeof *f);
	f->chat = with_chat;
	if (with_chat) {
		world_start(&f->w, seed);
		f->s.engine = f->w.e;
		f->s.chat = f->w.c;
	}
	f->s.auth = fake_auth;
	f->s.lim = (struct srv_limits){
		.max_frame = 1 << 20, .preauth_max_frame = 16384,
		.frame_timeout_ms = 1000, .max_body = 65536, .max_inflight = 4,
		.event_window = 4, .idle_timeout_ms = 60000,
		.handshake_timeout_ms = 5000, .slow_consumer_ms = 1000,
		.max_outbound = 1 << 20, .max_conns = 16,
		.drain_timeout_ms = 1000};
	membudget_init(&f->s.mem, 1ull << 30, 0, 0);
	snprintf(f->s.server_id, sizeof f->s.server_id, "test");
	f->lp.s = &f->s;
	f->lp.scratch = malloc(PARLEY_PROTO_MAX_FRAME_HARD);
	pthread_mutex_init(&f->lp.mu, NULL);
	pthread_cond_init(&f->lp.cv, NULL);
	f->gen = 7;
	f->c = conn_new(&f->lp, -1, false, 3, f->gen);
	cr_assert(f->c);
}

static inline void fx_stop(struct fx *f)
{
	if (!conn_sock(f->c)->closing)
		loop_conn_close(f->c, "test over");
	conn_free(f->c);
	if (f->chat)
		world_stop(&f->w);
	struct lmsg *m = f->lp.head;
	while (m) {
		struct lmsg *n = m->next;
		free(m);
		m = n;
	}
	free(f->lp.scratch);
	free(f->out);
}

/* Feed a whole message as one frame, or byte by byte. */
static inline void fx_feed(struct fx *f, uint32_t rid, const struct parley_msg *m,
		    bool trickle)
{
	uint8_t buf[4096];
	int n = parley_proto_encode(buf, sizeof buf, rid, m);
	cr_assert_gt(n, 0);
	if (!trickle) {
		conn_on_recv(f->c, buf, (uint32_t)n);
		return;
	}
	for (int i = 0; i < n; i++)
		conn_on_recv(f->c, buf + i, 1);
}

/* Move what the connection queued into f->out (as the loop's sends would). */
static inline void fx_flush(struct fx *f)
{
	const uint8_t *p;
	uint32_t n;
	while (!conn_sock(f->c)->closing && (n = conn_out_peek(f->c, &p)) > 0) {
		if (f->olen + n > f->ocap) {
			f->ocap = (f->olen + n) * 2;
			f->out = realloc(f->out, f->ocap);
		}
		memcpy(f->out + f->olen, p, n);
		f->olen += n;
		conn_on_sent(f->c, n);
	}
}

/* The next frame the connection wrote (decoded into *m), false if none. */
static inline bool fx_next(struct fx *f, struct parley_msg *m, uint32_t *rid)
{
	fx_flush(f);
	if (f->opos == f->olen)
		return false;
	struct parley_frame fr;
	int n = parley_proto_frame_decode(f->out + f->opos, f->olen - f->opos,
					  PARLEY_PROTO_MAX_FRAME_HARD, &fr);
	cr_assert_gt(n, 0, "the connection wrote a bad frame");
	cr_assert_eq(parley_proto_decode_payload(fr.type, fr.payload,
						 fr.payload_len, m), 0);
	if (rid)
		*rid = fr.request_id;
	f->opos += (size_t)n;
	return true;
}

/* Hands posted messages to the connection (as the loop's drain does),
 * waiting up to ~5 s for at least `want` of them. Returns how many. */
static inline unsigned fx_pump(struct fx *f, unsigned want)
{
	unsigned got = 0;
	for (int spins = 0; spins < 5000; spins++) {
		pthread_mutex_lock(&f->lp.mu);
		struct lmsg *m = f->lp.head;
		f->lp.head = f->lp.tail = NULL;
		pthread_mutex_unlock(&f->lp.mu);
		while (m) {
			struct lmsg *n = m->next;
			if (m->slot == 3 && m->gen == f->gen &&
			    !conn_sock(f->c)->closing)
				conn_on_msg(f->c, m);
			free(m);
			got++;
			m = n;
		}
		if (got >= want)
			break;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	return got;
}

/* The stage histograms' /metrics text (heap). */
static inline char *stage_text(struct fx *f)
{
	size_t n = srv_stage_metrics(&f->s, NULL, 0);
	char *t = malloc(n + 1);
	cr_assert_eq(srv_stage_metrics(&f->s, t, n + 1), n);
	return t;
}

static inline struct parley_msg *msg_new(uint16_t type)
{
	struct parley_msg *m = calloc(1, sizeof *m);
	m->type = type;
	return m;
}

static inline void fx_hello(struct fx *f, const char *device)
{
	struct parley_msg *m = msg_new(PARLEY_T_HELLO);
	m->hello.min_version = m->hello.max_version = PARLEY_PROTO_VERSION;
	m->hello.device_id = parley_str_c(device);
	m->hello.client_name = parley_str_c("test");
	fx_feed(f, 1, m, false);
	cr_assert(fx_next(f, m, NULL));
	cr_assert_eq(m->type, PARLEY_T_HELLO_OK);
	cr_assert_eq(m->hello_ok.event_window, f->s.lim.event_window);
	free(m);
}

static inline void fx_auth(struct fx *f, const char *user)
{
	char tok[64];
	snprintf(tok, sizeof tok, "good:%s", user);
	struct parley_msg *m = msg_new(PARLEY_T_AUTH);
	m->auth.token = parley_str_c(tok);
	fx_feed(f, 2, m, false);
	cr_assert(fx_next(f, m, NULL));
	cr_assert_eq(m->type, PARLEY_T_AUTH_OK);
	cr_assert_eq(m->auth_ok.user_id.len, strlen(user));
	free(m);
}

/* The device "phone" says HELLO and authenticates as alice. */
static inline void fx_login(struct fx *f)
{
	fx_hello(f, "phone");
	fx_auth(f, "alice");
}

/* A ready connection of alice, with d:alice:bob open and holding n
 * messages of bob's. */
static inline void fx_alice(struct fx *f, uint64_t seed, int n)
{
	fx_start(f, true, seed);
	cr_assert_eq(svc_open(f->w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= n; i++)
		svc_send(f->w.c, "d:alice:bob", "bob", i);
	fx_login(f);
}

static inline void expect_error(struct fx *f, uint32_t code, bool fatal)
{
	struct parley_msg *m = msg_new(0);
	cr_assert(fx_next(f, m, NULL), "no frame, want ERROR %u", code);
	cr_assert_eq(m->type, PARLEY_T_ERROR, "type %#x, want ERROR %u",
		     m->type, code);
	cr_assert_eq(m->error.code, code, "ERROR %u (%.*s), want %u",
		     m->error.code, (int)m->error.text.len, m->error.text.p, code);
	cr_assert_eq((m->error.flags & PARLEY_ERRF_FATAL) != 0, fatal);
	free(m);
}

static inline void fx_send(struct fx *f, uint32_t rid, const char *conv, int i)
{
	char body[16];
	snprintf(body, sizeof body, "m%d", i);
	struct parley_msg *m = msg_new(PARLEY_T_SEND);
	m->send.conv = parley_str_c(conv);
	m->send.client_msg_id[0] = (uint8_t)i;
	m->send.content_type = 1;
	m->send.body = (struct parley_bytes){(const uint8_t *)body, strlen(body)};
	fx_feed(f, rid, m, false);
	free(m);
}

/* ---- allocation failure (docs/SERVER.md, "Errors and allocation failure") ---- */

/* This test binary is linked with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc (tests.cmake): every allocation of the server code goes
 * through these. Armed on a thread, the k-th allocation of that thread
 * fails; the engine's and the chat service's threads are never armed. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);

static _Thread_local unsigned nomem_at;   /* 0: off */
static _Thread_local unsigned nomem_seen; /* allocations since armed */
static _Thread_local bool nomem_failed;   /* the k-th one came */
static _Thread_local bool nomem_sticky;   /* ... and every one after it */

static inline bool nomem_now(void)
{
	if (!nomem_at)
		return false;
	++nomem_seen;
	if (nomem_seen != nomem_at && !(nomem_sticky && nomem_seen > nomem_at))
		return false;
	nomem_failed = true;
	return true;
}

void *__wrap_malloc(size_t n)
{
	return nomem_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return nomem_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return nomem_now() ? NULL : __real_realloc(p, n);
}

/* A new connection on the same service (the last one was closed). */
static inline void fx_reconnect(struct fx *f, const char *user)
{
	if (!conn_sock(f->c)->closing)
		loop_conn_close(f->c, "test reconnect");
	conn_free(f->c);
	f->gen++;
	f->c = conn_new(&f->lp, -1, false, 3, f->gen);
	cr_assert(f->c);
	f->olen = f->opos = 0;
	f->lp.closed_why[0] = '\0';
	fx_hello(f, "phone");
	fx_auth(f, user);
}

#endif
