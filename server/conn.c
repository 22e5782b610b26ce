/*
 * conn.c — a client connection on its loop: framing, TLS over memory BIOs,
 * the bounded outbound queue, the state machine drawn in conn.h (with the
 * handshake, HELLO / AUTH, that drives it), dispatch of the requests of
 * docs/PROTOCOL.md, and the connection's delivery state (inbox
 * subscription, event window and pacing, device cursor, delivered
 * receipts, large groups' live EVENTs).
 *
 * A device whose inbox partition this node holds no replica of has its
 * tail relayed from a node that does ("Remote inbox tails" at the end,
 * tail_relay.h): here on the gateway its client connection writes what
 * the holder's *tail virtual connection* writes there.
 *
 * No chat logic here. The chat application (keys, records, membership,
 * history pages, where a SYNC starts, resolving inbox pointers into
 * EVENTs, device cursors, the conversation list) is the chat service's
 * (chat.h, chat*.c); the glue of each request (its service call, its
 * reply or ERROR) is in the conn_req*.c files, one per feature, listed
 * with their rule in conn_req.h. Dispatch (handle_frame) calls them
 * after the checks every request shares: handshake state, request id,
 * decompression, decoding, draining, max_inflight.
 *
 * DURABLE BEFORE ACK: this file encodes no acknowledgement of a write. A
 * reply (SEND_ACK, EDIT_ACK, GROUP_OK, ...) reaches it as an LM_FRAME
 * built by the request's durable callback in a conn_req*.c file (SEND_ACK:
 * send_cb in conn_req_send.c, its only producer) and is queued as it is.
 *
 * The callbacks given to the chat service from this file (inbox_cb,
 * event_cb) run on engine shard threads (event_cb also on the loop, for
 * a pointer that needs no read): they only read their own heap context,
 * encode frames with the pure codec and loop_post() them. Everything
 * else runs on the connection's loop thread.
 *
 * Allocation failure (docs/SERVER.md, "Errors and allocation failure"):
 * a request's memory -> ERROR NOMEM with a retry_after, the connection
 * lives; the connection's own buffers -> c->oom, nothing more is queued
 * and conn_oom_close closes it at the end of the entry point; a hand-over
 * from an engine thread that cannot be allocated -> srv_oom (abort).
 *
 * Ownership: a pointer being resolved (struct resolve) is owned by the
 * pending FIFO, then by event_cb, which frees it. A subscription's context
 * (struct sub_arg) is freed by the chat service once the subscription is
 * gone (chat_inbox_subscribe's `done`). The request handlers' contexts are
 * their conn_req*.c file's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "chat.h"
#include "chat_receipt.h"
#include "conn.h"
#include "conn_req.h"
#include "errmap.h"
#include "live.h"
#include "membudget.h"
#include "parley_proto.h"
#include "presence.h"
#include "proxy.h"
#include "route.h"
#include "tail_relay.h"

#define OBUF_CHUNK (16u << 10)
#define CURSOR_FLUSH_NS (5ull * 1000000000ull)
#define SLOW_CLOSE_GRACE_NS (10ull * 1000000000ull) /* reader gone: give up */

static _Thread_local uint8_t tls_plain[16384];

/* ---- replies from other threads (conn_req.h) -------------------------------- */

/* Encode m into a new lmsg (engine threads). NULL on failure. */
struct lmsg *conn_frame_msg(uint16_t kind, uint32_t req_id,
			    const struct parley_msg *m)
{
	int n = parley_proto_size(m);
	if (n < 0)
		return NULL;
	struct lmsg *lm = lmsg_new(kind, (uint32_t)n);
	if (!lm)
		return NULL;
	int rc = parley_proto_encode(lm->data, (size_t)n, req_id, m);
	if (rc != n) {
		free(lm);
		return NULL;
	}
	return lm;
}

/* retry_after_ms of an ERROR: a request refused for memory (non-fatal
 * NOMEM) always SRV_NOMEM_RETRY_MS, whatever the caller passed; else the
 * caller's, else the table's default for the code (errmap.c), so every
 * NOMEM and FULL says when to retry. */
static uint32_t retry_of(uint32_t code, bool fatal, uint32_t retry)
{
	if (code == PARLEY_ENOMEM && !fatal)
		return SRV_NOMEM_RETRY_MS;
	return retry ? retry : srv_wire_err(-(int)code).retry_after_ms;
}

/* ---- the leader hint of ERROR NOTLEADER (PROTOCOL.md, ERROR) ---------------------- */

static _Atomic(srv_leader_hint_fn) hint_fn;
static void *_Atomic hint_arg;

void conn_leader_hint_install(srv_leader_hint_fn fn, void *arg)
{
	atomic_store(&hint_fn, NULL);
	atomic_store(&hint_arg, arg);
	atomic_store(&hint_fn, fn);
}

#define CONN_HINT_ADDR_MAX 80 /* >= PEER_NODE_ADDR_MAX */

struct leader_hint {
	uint64_t node; /* the leader to name / forward to, 0 = none */
	char plain[CONN_HINT_ADDR_MAX], tls[CONN_HINT_ADDR_MAX];
};

/* The leader a NOTLEADER answered on this thread routes to: the leader of
 * the partition the chat service noted it refused (route.h), or, with no
 * note, partition 0's; and its advertised client addresses (both kinds:
 * the client picks the one it speaks). Takes the note. */
static void refusal_hint(struct leader_hint *h)
{
	uint32_t p = ROUTE_PARTITION_ANY;
	uint64_t leader = 0;
	(void)route_take(&p, &leader);
	h->node = 0;
	h->plain[0] = h->tls[0] = '\0';
	srv_leader_hint_fn fn = atomic_load(&hint_fn);
	if (fn)
		h->node = fn(atomic_load(&hint_arg), p, leader, h->plain,
			     h->tls, sizeof h->plain);
}

static void error_hint(struct parley_error_msg *e, const struct leader_hint *h)
{
	if (e->code != PARLEY_ENOTLEADER)
		return;
	e->leader_node = h->node;
	e->leader_addr = parley_str_c(h->plain);
	e->leader_tls_addr = parley_str_c(h->tls);
}

struct lmsg *conn_error_msg(uint32_t req_id, uint32_t code, uint32_t retry,
			    const char *text)
{
	retry = retry_of(code, false, retry);
	struct parley_msg m = {.type = PARLEY_T_ERROR};
	m.error.code = code;
	m.error.retry_after_ms = retry;
	m.error.text = parley_str_c(text);
	struct leader_hint h = {0};
	if (code == PARLEY_ENOTLEADER)
		refusal_hint(&h);
	error_hint(&m.error, &h);
	struct lmsg *lm = conn_frame_msg(LM_FRAME, req_id, &m);
	if (lm) {
		lm->u.frame.notleader = code == PARLEY_ENOTLEADER;
		lm->u.frame.leader = h.node;
	}
	return lm;
}

/* Post an encoded reply to `to`; a reply we cannot allocate
 * becomes a short ERROR NOMEM; if even that fails, nothing can answer the
 * request (its connection would keep it in flight forever): abort. */
void conn_post_reply(const struct conn_ref *to, struct lmsg *m,
		     uint32_t req_id)
{
	if (!m)
		m = conn_error_msg(req_id, PARLEY_ENOMEM, SRV_NOMEM_RETRY_MS,
				   "out of memory");
	if (!m)
		srv_oom("the answer to a request (even ERROR NOMEM)");
	m->done_req = true;
	lmsg_post(to, m);
}

/* ---- forwarding to the leader (proxy.h, docs/CLUSTER.md §3.3) ----------------------------- */

/*
 * Gateway: a client's request of a forwardable type is kept (its frame,
 * uncompressed) while it is in flight. If this node answers it
 * NOTLEADER — at once (conn_error) or from an engine callback (an
 * LM_FRAME marked notleader) — the answer is not written: the kept frame
 * goes to the leader instead (proxy_forward) and the request stays in
 * flight until the proxy posts the leader's reply (or AGAIN). Any other
 * answer drops the kept frame. A virtual connection keeps nothing, so a
 * forwarded request is never forwarded again (proxy.h invariant 1).
 *
 * Leader: a virtual connection (conn_virtual_new) runs one forwarded
 * request through handle_frame like a client's; conn_write_frames hands
 * its reply to the proxy instead of a socket, and it closes once the
 * request is answered.
 */
struct fwd_saved {
	struct fwd_saved *next;
	uint32_t rid, len;
	uint8_t frame[];
};

struct conn_virt {
	uint64_t node, fwd_id;
	uint32_t rid;
	bool replied;
	bool tail;        /* a tail virtual connection (tail_relay.h) */
	uint64_t tail_id; /* ... its id on node `node` */
};

static void saved_free(struct conn *c, struct fwd_saved *sv)
{
	membudget_charge(&S(c)->mem, -(int64_t)(sizeof *sv + sv->len));
	free(sv);
}

/* Keeps the request (header + payload as decoded) for forwarding. */
static void saved_keep(struct conn *c, const struct parley_frame *f,
		       const uint8_t *payload, size_t plen)
{
	size_t len = PARLEY_PROTO_HEADER_SIZE + plen;
	struct fwd_saved *sv = malloc(sizeof *sv + len);
	if (!sv)
		return; /* not forwarded: NOTLEADER redirects as before */
	membudget_charge(&S(c)->mem, (int64_t)(sizeof *sv + len));
	parley_proto_header_put(sv->frame, f->type, 0, f->request_id,
				(uint32_t)plen);
	memcpy(sv->frame + PARLEY_PROTO_HEADER_SIZE, payload, plen);
	sv->rid = f->request_id;
	sv->len = (uint32_t)len;
	sv->next = c->fwd_saved;
	c->fwd_saved = sv;
}

static struct fwd_saved *saved_take(struct conn *c, uint32_t rid)
{
	for (struct fwd_saved **pp = &c->fwd_saved; *pp; pp = &(*pp)->next)
		if ((*pp)->rid == rid) {
			struct fwd_saved *sv = *pp;
			*pp = sv->next;
			return sv;
		}
	return NULL;
}

/* The request rid was answered: nothing to forward any more. */
static void saved_drop(struct conn *c, uint32_t rid)
{
	if (!c->fwd_saved || !rid)
		return;
	struct fwd_saved *sv = saved_take(c, rid);
	if (sv)
		saved_free(c, sv);
}

enum fwd_result { FWD_NO = 0, FWD_SENT, FWD_FULL };

/* rid would be answered NOTLEADER naming `leader` (0 = none known): forward
 * it there instead if it was kept. */
static enum fwd_result fwd_instead(struct conn *c, uint32_t rid,
				   uint64_t leader)
{
	struct srv *s = S(c);
	struct fwd_saved *sv = saved_take(c, rid);
	if (!sv || !s->proxy || !c->id) {
		if (sv)
			saved_free(c, sv);
		return FWD_NO;
	}
	int rc = proxy_forward(s->proxy, leader, &c->sk.ref, c->id->user,
			       c->id->ulen, c->id->device, c->id->dlen,
			       sv->frame, sv->len, parley_mono_ns() / 1000000u);
	saved_free(c, sv);
	return rc == 0 ? FWD_SENT : rc == -PARLEY_EFULL ? FWD_FULL : FWD_NO;
}

/* ---- buffers charged to the memory budget ------------------------------------------ */

static void obuf_release(struct conn *c, struct obuf *b)
{
	membudget_charge(&S(c)->mem, -(int64_t)(sizeof *b + b->cap));
	free(b);
}

static void inbuf_release(struct conn *c)
{
	if (c->inbuf)
		membudget_charge(&S(c)->mem, -(int64_t)c->incap);
	free(c->inbuf);
	c->inbuf = NULL;
	c->inlen = c->incap = 0;
	c->frame_start_ns = 0;
}

/* ---- outbound queue ------------------------------------------------------------- */

/* Appends one unit (a whole frame, or the TLS records of one frame) to
 * the queue. A unit never straddles two chunks, so the chunks after the
 * head hold whole frames and can be dropped as a whole (slow consumer). */
static void out_raw(struct conn *c, const uint8_t *p, size_t n)
{
	if (c->oom)
		return; /* a unit was lost: nothing after it may leave */
	if (c->goaway_reason == PARLEY_GOAWAY_SLOW_CONSUMER &&
	    c->oq_bytes > S(c)->lim.max_outbound)
		return; /* already cut off: bytes are dropped, the client resyncs */
	struct obuf *t = c->oq_tail;
	if (!t || t->cap - t->len < n) {
		uint32_t cap = (uint32_t)PARLEY_MAX(n, (size_t)OBUF_CHUNK);
		t = malloc(sizeof *t + cap);
		if (!t) {
			/* the frame cannot be queued: the connection closes
			 * (conn_oom_close); the client reconnects, a retried
			 * SEND is deduplicated and events resume from the
			 * device's cursor */
			PLOG_W("conn", "out of memory for the outbound queue: "
			       "closing the connection", "bytes=%zu", n);
			c->oom = true;
			return;
		}
		membudget_charge(&S(c)->mem, (int64_t)(sizeof *t + cap));
		t->next = NULL;
		t->len = t->off = 0;
		t->cap = cap;
		if (c->oq_tail)
			c->oq_tail->next = t;
		else
			c->oq_head = t;
		c->oq_tail = t;
	}
	memcpy(t->data + t->len, p, n);
	t->len += (uint32_t)n;
	if (!c->oq_bytes)
		c->last_tx_ns = parley_mono_ns(); /* the stall clock starts now */
	c->oq_bytes += n;
}

static void tls_flush(struct conn *c)
{
	BIO *w = SSL_get_wbio(c->ssl);
	char *p = NULL;
	long k = BIO_get_mem_data(w, &p);
	if (k > 0) {
		out_raw(c, (const uint8_t *)p, (size_t)k);
		BIO_reset(w);
	}
}

static void conn_slow_consumer(struct conn *c, const char *why);
static void on_tail(struct conn *c, struct lmsg *m);
static bool rt_tick(struct conn *c, uint64_t now_ns);
static void conn_oom_close(struct conn *c);
static uint32_t conn_max_frame(const struct conn *c);
static void pump_resolves(struct conn *c);
static void flush_stash(struct conn *c);
static void rcpt_flush(struct conn *c, uint64_t now_ns, bool force);

/* Queue whole frames (plaintext; nframes of them back to back in p[0..n),
 * written as one unit: one copy, one TLS write) and make sure they get
 * sent. */
static void virt_out(struct conn *c, const uint8_t *p, size_t n);

static void conn_write_frames(struct conn *c, const uint8_t *p, size_t n,
			      uint32_t nframes)
{
	if (c->state == CS_CLOSING)
		return;
	if (c->virt) {
		virt_out(c, p, n);
		return;
	}
	if (c->ssl) {
		int k = SSL_write(c->ssl, p, (int)n);
		if (k <= 0) {
			loop_conn_close(c, "tls write failed");
			return;
		}
		tls_flush(c);
	} else {
		out_raw(c, p, n);
	}
	ctr_add(&S(c)->ctr.frames_out, nframes);
	/* One frame may overshoot the bound (a HISTORY page can be as large
	 * as max_frame); more than that means the client does not read. */
	if (c->oq_bytes > S(c)->lim.max_outbound + S(c)->lim.max_frame &&
	    c->goaway_reason != PARLEY_GOAWAY_SLOW_CONSUMER)
		conn_slow_consumer(c, "outbound queue over its bound");
	loop_conn_kick(c);
}

static void conn_write(struct conn *c, const uint8_t *p, size_t n)
{
	conn_write_frames(c, p, n, 1);
}

void conn_send(struct conn *c, uint32_t req_id, const struct parley_msg *m)
{
	saved_drop(c, req_id);
	uint8_t *buf = loop_scratch(c->sk.ref.lp);
	int n = parley_proto_encode(buf, PARLEY_PROTO_MAX_FRAME_HARD, req_id, m);
	if (n < 0) {
		PLOG_E("conn", "encode failed", "type=%s err=%s",
		       parley_proto_type_name(m->type), parley_errname(n));
		return;
	}
	conn_write(c, buf, (size_t)n);
}

void conn_error(struct conn *c, uint32_t req_id, uint32_t code, bool fatal,
		uint32_t retry, const char *text)
{
	struct leader_hint h = {0};
	if (code == PARLEY_ENOTLEADER)
		refusal_hint(&h);
	if (code == PARLEY_ENOTLEADER && !fatal && c->fwd_saved) {
		enum fwd_result fr = fwd_instead(c, req_id, h.node);
		if (fr == FWD_SENT) {
			c->inflight++; /* the proxy answers it (LM_FRAME) */
			return;
		}
		if (fr == FWD_FULL) {
			code = PARLEY_EFULL;
			retry = 0; /* the error table's */
			text = "too many requests forwarded to the leader";
		}
	}
	struct parley_msg m = {.type = PARLEY_T_ERROR};
	m.error.code = code;
	m.error.flags = fatal ? PARLEY_ERRF_FATAL : 0;
	m.error.retry_after_ms = retry_of(code, fatal, retry);
	m.error.text = parley_str_c(text);
	error_hint(&m.error, &h);
	ctr_add(&S(c)->ctr.errors_sent, 1);
	conn_send(c, req_id, &m);
	if (fatal) {
		c->closing_after_flush = true;
		if (!c->oq_head)
			loop_conn_close(c, text);
	}
}

/* Rate limit (ratelimit.h): true when the request was refused with RATE
 * and a retry-after (never a silent drop). */
bool conn_limited(struct conn *c, uint32_t rid, enum ratelimit_kind k)
{
	struct srv *s = S(c);
	uint32_t ms = s->rl ? ratelimit_take(s->rl, &c->rl, c->id->user,
					     c->id->ulen, k, parley_mono_ns())
			    : 0;
	if (ms)
		conn_error(c, rid, PARLEY_ERATE, false, ms, "rate limited");
	return ms != 0;
}

static void conn_goaway(struct conn *c, uint16_t reason, uint32_t retry,
			const char *text)
{
	struct parley_msg m = {.type = PARLEY_T_GOAWAY};
	m.goaway.reason = reason;
	m.goaway.retry_after_ms = retry;
	m.goaway.text = parley_str_c(text);
	conn_send(c, 0, &m);
}

void conn_on_sent(struct conn *c, uint32_t n)
{
	c->last_tx_ns = parley_mono_ns();
	while (n && c->oq_head) {
		struct obuf *b = c->oq_head;
		uint32_t k = PARLEY_MIN(n, b->len - b->off);
		b->off += k;
		n -= k;
		c->oq_bytes -= k;
		if (b->off == b->len && (b != c->oq_tail || b->len == b->cap)) {
			c->oq_head = b->next;
			if (!c->oq_head)
				c->oq_tail = NULL;
			obuf_release(c, b);
		} else if (b->off == b->len) {
			/* tail chunk drained: free it too, keep nothing idle */
			c->oq_head = c->oq_tail = NULL;
			obuf_release(c, b);
		}
	}
	if ((c->stash || c->pend_head) && c->oq_bytes < S(c)->lim.max_outbound / 2)
		flush_stash(c);
	if (!c->oq_head && c->closing_after_flush)
		loop_conn_close(c, "closed after fatal error");
	else if (!c->oq_head && c->state == CS_DRAINING && !c->inflight &&
		 !c->resolving && !c->pend_head && !c->sync_busy)
		loop_conn_close(c, "drained");
	conn_oom_close(c);
}

/* ---- early delivery ------------------------------------------------------------------ */

/*
 * Early delivery (docs/SERVER.md "Early delivery", docs/PROTOCOL.md). A
 * 1:1 message's early EVENT (LM_EARLY: inbox_seq 0, PARLEY_MSGF_EARLY),
 * posted by the chat service once the message is durable in c/<conv>,
 * reaches a connection that negotiated PARLEY_FEAT_EARLY about one group
 * commit before the message's inbox EVENT. A device must still see one
 * conversation's messages in conv seq order, so the connection keeps,
 * for up to EARLY_CONVS conversations (least recently used out),
 *
 *   last[C] = the highest conv seq of C written to the device, by an
 *             inbox EVENT or an early one.
 *
 * Invariants
 *   E1. An early EVENT (C, n) is written only while last[C] == n - 1 is
 *       known: every entry of C before n that is the user's was written
 *       before it (inbox EVENTs of one conversation come in conv seq
 *       order, and each early one was written by this rule). Otherwise it
 *       is held (at most EARLY_HOLD of them, EARLY_HOLD_BYTES bytes) until
 *       last[C] reaches n - 1 (written then) or n (its inbox EVENT was
 *       written first: dropped). One that does not fit, or would take the
 *       outbound queue over half its bound, is dropped. Dropping is always
 *       safe: the inbox EVENT, which follows in any case, delivers it.
 *   E2. An inbox MESSAGE EVENT (C, s) goes out without its body, flagged
 *       PARLEY_MSGF_EARLY_SEEN, exactly when s was written early on this
 *       connection: each conversation's slot remembers which of the 64
 *       seqs above its window base (the highest early seq - 64) went out
 *       early, and the inbox EVENT clears its bit. Every other inbox EVENT
 *       goes out as it is (one whose bit slid out or whose slot was
 *       reused goes out whole: the client drops it by (conv, conv_seq)).
 *   E3. Only MESSAGE EVENTs (inbox or early) move last[C]; an inbox EVENT
 *       of another kind that names C with a conv seq makes last[C]
 *       unknown (0: the next early EVENT of C is held until the inbox
 *       catches up); its early bits stay.
 * The inbox path is unchanged (order, window, cursor, acknowledgements,
 * receipts): an early EVENT is never acknowledged and carries no inbox
 * seq, so a crash that loses an inbox pointer cannot make a device skip
 * anything; the device may get the message again in full after it, and
 * libparley drops it by (conv, conv_seq).
 * Conversations are named by lm_conv_hash (64 bits, keyed per process):
 * a collision among one connection's tracked conversations (the only way
 * E1 or E2 could be wrong) has probability about EARLY_CONVS^2 / 2^64.
 * Memory: allocated at SYNC for a connection that asked for it, freed
 * when the subscription ends; held EVENTs are charged to the memory
 * budget (membudget.h), and none is held while it is over.
 */
#define EARLY_CONVS 8u
#define EARLY_HOLD 16u
#define EARLY_HOLD_BYTES (64u << 10)
#define EARLY_STRIP_CAP 2048u /* an EVENT without its body fits */

struct early_held {
	struct early_held *next;
	uint64_t conv_h, conv_seq;
	uint64_t t_durable;      /* stage "early" */
	uint32_t len;
	uint8_t frame[];
};

struct conn_early {
	struct {
		uint64_t h, used;   /* used == 0: free */
		uint64_t last;      /* last[C], 0 = unknown (E1, E3) */
		uint64_t ebase;     /* E2: bit k of emask = seq ebase + 1 + k */
		uint64_t emask;     /* ... went out early, its inbox EVENT not yet */
	} cv[EARLY_CONVS];
	uint64_t clock;
	struct early_held *held; /* oldest first */
	uint32_t nheld, held_bytes;
};

/* A held early EVENT's memory, charged to the memory budget while held. */
static void early_held_free(struct conn *c, struct early_held *h)
{
	membudget_charge(&S(c)->mem, -(int64_t)(sizeof *h + h->len));
	free(h);
}

static void early_free(struct conn *c)
{
	struct conn_early *e = c->early_st;
	if (!e)
		return;
	c->early_st = NULL;
	while (e->held) {
		struct early_held *h = e->held;
		e->held = h->next;
		early_held_free(c, h);
	}
	free(e);
}

static int early_find(const struct conn_early *e, uint64_t h)
{
	for (unsigned i = 0; i < EARLY_CONVS; i++)
		if (e->cv[i].used && e->cv[i].h == h)
			return (int)i;
	return -1;
}

/* last[C] = last, in C's slot (a free one or the least recently used
 * one, its early bits cleared, when C has none). */
static void early_set(struct conn_early *e, uint64_t h, uint64_t last)
{
	int i = early_find(e, h);
	if (i < 0) {
		i = 0;
		for (unsigned k = 1; k < EARLY_CONVS; k++)
			if (e->cv[k].used < e->cv[i].used)
				i = (int)k;
		e->cv[i].h = h;
		e->cv[i].ebase = e->cv[i].emask = 0;
	}
	e->cv[i].last = last;
	e->cv[i].used = ++e->clock;
}

/* Early EVENT seq of slot i went out: last[C] = seq, its E2 bit set. */
static void early_wrote(struct conn_early *e, int i, uint64_t seq)
{
	e->cv[i].last = seq;
	e->cv[i].used = ++e->clock;
	if (seq <= e->cv[i].ebase)
		return;
	if (seq > e->cv[i].ebase + 64) { /* slide: the oldest bits go */
		uint64_t nb = seq - 64, sh = nb - e->cv[i].ebase;
		e->cv[i].emask = sh >= 64 ? 0 : e->cv[i].emask >> sh;
		e->cv[i].ebase = nb;
	}
	e->cv[i].emask |= 1ull << (seq - e->cv[i].ebase - 1);
}

/* E2: did the message at pos go out early here (its bit is set)? */
static bool early_is_early(const struct conn_early *e,
			   const struct lm_conv_pos *pos)
{
	if (!e || pos->kind != PARLEY_EV_MESSAGE || pos->conv_seq == 0)
		return false;
	int i = early_find(e, pos->conv_h);
	if (i < 0)
		return false;
	uint64_t b = e->cv[i].ebase, s = pos->conv_seq;
	return s > b && s <= b + 64 && (e->cv[i].emask >> (s - b - 1) & 1);
}

/* Its inbox EVENT went out: clear the bit. */
static void early_clear(struct conn_early *e, const struct lm_conv_pos *pos)
{
	int i = early_find(e, pos->conv_h);
	uint64_t b = e->cv[i].ebase;
	e->cv[i].emask &= ~(1ull << (pos->conv_seq - b - 1));
}

/* Writes an early EVENT unless the outbound queue is over half its bound;
 * true when written (E1). t_durable: when its message was durable. */
static bool early_write(struct conn *c, const uint8_t *f, uint32_t len,
			uint64_t t_durable)
{
	struct srv *s = S(c);
	if (c->state == CS_CLOSING ||
	    c->goaway_reason == PARLEY_GOAWAY_SLOW_CONSUMER ||
	    c->oq_bytes + len > s->lim.max_outbound / 2)
		return false;
	conn_write(c, f, len);
	ctr_add(&s->ctr.early_out, 1);
	if (t_durable)
		srv_hist_since(&s->stages.deliver[SRV_DELIVER_EARLY], t_durable,
			       parley_mono_ns());
	return true;
}

/* Held early EVENTs whose turn came (E1): written, or dropped when their
 * inbox EVENT was written first. */
static void early_release(struct conn *c)
{
	struct conn_early *e = c->early_st;
	bool again = e && e->held;
	while (again) {
		again = false;
		for (struct early_held **pp = &e->held; *pp;) {
			struct early_held *h = *pp;
			int i = early_find(e, h->conv_h);
			if (i < 0 || e->cv[i].last == 0 ||
			    h->conv_seq > e->cv[i].last + 1) {
				pp = &h->next;
				continue;
			}
			*pp = h->next;
			e->nheld--;
			e->held_bytes -= h->len;
			uint64_t seq = h->conv_seq;
			bool wrote = seq == e->cv[i].last + 1 &&
				     early_write(c, h->frame, h->len, h->t_durable);
			early_held_free(c, h);
			if (c->early_st != e) /* the write closed the connection */
				return;
			if (wrote) {
				early_wrote(e, i, seq);
				again = true; /* the next one of C may follow */
			} else {
				ctr_add(&S(c)->ctr.early_dropped, 1);
			}
		}
	}
}

static void on_early(struct conn *c, struct lmsg *m)
{
	struct conn_early *e = c->early_st;
	const struct lm_conv_pos *p = &m->u.early.pos;
	if (!e || !c->sub || p->conv_seq == 0) {
		ctr_add(&S(c)->ctr.early_dropped, 1);
		return;
	}
	int i = early_find(e, p->conv_h);
	if (i >= 0 && p->conv_seq <= e->cv[i].last) {
		ctr_add(&S(c)->ctr.early_dropped, 1); /* its inbox EVENT came first */
		return;
	}
	if (i >= 0 && e->cv[i].last && p->conv_seq == e->cv[i].last + 1) {
		if (early_write(c, m->data, m->len, m->u.early.t_durable_ns)) {
			if (c->early_st == e) { /* still open */
				early_wrote(e, i, p->conv_seq);
				early_release(c);
			}
		} else {
			ctr_add(&S(c)->ctr.early_dropped, 1);
		}
		return;
	}
	/* not its turn yet (E1): hold it, oldest out; not over the memory
	 * budget (held EVENTs are charged to it) */
	struct early_held *h = membudget_over(&S(c)->mem)
				       ? NULL
				       : malloc(sizeof *h + m->len);
	if (!h) {
		ctr_add(&S(c)->ctr.early_dropped, 1);
		return;
	}
	membudget_charge(&S(c)->mem, (int64_t)(sizeof *h + m->len));
	h->next = NULL;
	h->conv_h = p->conv_h;
	h->conv_seq = p->conv_seq;
	h->t_durable = m->u.early.t_durable_ns;
	h->len = m->len;
	memcpy(h->frame, m->data, m->len);
	struct early_held **pp = &e->held;
	while (*pp)
		pp = &(*pp)->next;
	*pp = h;
	e->nheld++;
	e->held_bytes += h->len;
	while (e->held && (e->nheld > EARLY_HOLD ||
			   e->held_bytes > EARLY_HOLD_BYTES)) {
		struct early_held *o = e->held;
		e->held = o->next;
		e->nheld--;
		e->held_bytes -= o->len;
		early_held_free(c, o);
		ctr_add(&S(c)->ctr.early_dropped, 1);
	}
}

/* The inbox EVENT frame f without its body, flagged EARLY_SEEN (E2), in
 * out: its length, or 0 when it is not a MESSAGE EVENT we can re-encode
 * (then it goes out whole: the client drops it by (conv, conv_seq)). */
static uint32_t early_strip(const uint8_t *f, uint32_t len, uint8_t *out,
			    uint32_t cap)
{
	/* a parley_msg is ~16 KiB: one per thread, not on the stack */
	static _Thread_local struct parley_msg tm;
	struct parley_frame fr;
	if (parley_proto_frame_decode(f, len, PARLEY_PROTO_MAX_FRAME_HARD, &fr) !=
		    (int)len ||
	    fr.type != PARLEY_T_EVENT || fr.flags != 0 ||
	    parley_proto_decode(&fr, &tm) != 0 ||
	    tm.event.kind != PARLEY_EV_MESSAGE)
		return 0;
	tm.event.body = (struct parley_bytes){NULL, 0};
	tm.event.flags |= PARLEY_MSGF_EARLY_SEEN;
	int n = parley_proto_encode(out, cap, 0, &tm);
	return n > 0 ? (uint32_t)n : 0;
}

/* After an inbox EVENT at pos was written: E3. */
static void early_note(struct conn_early *e, const struct lm_conv_pos *pos)
{
	if (!e || pos->conv_seq == 0)
		return; /* RECEIPTs and the like name no conv seq */
	int i = early_find(e, pos->conv_h);
	if (pos->kind == PARLEY_EV_MESSAGE) {
		if (i < 0 || pos->conv_seq > e->cv[i].last)
			early_set(e, pos->conv_h, pos->conv_seq);
	} else if (i >= 0) {
		e->cv[i].last = 0; /* unknown (E3) */
	}
}

/* Writes one inbox EVENT frame (stripped when E2 says so) and notes it. */
static void inbox_write(struct conn *c, const struct lm_conv_pos *pos,
			const uint8_t *f, uint32_t len)
{
	uint32_t n = 0;
	uint8_t sb[EARLY_STRIP_CAP];
	bool early = early_is_early(c->early_st, pos);
	if (early)
		early_clear(c->early_st, pos);
	if (early && (n = early_strip(f, len, sb, sizeof sb)) > 0) {
		conn_write(c, sb, n);
		ctr_add(&S(c)->ctr.early_seen, 1);
	} else {
		conn_write(c, f, len);
	}
	early_note(c->early_st, pos);
}

/* A run of ready inbox EVENT frames (items[0..n), contiguous in blob) on
 * a connection with early delivery: the sub-runs not written early go out
 * in one write each, the others stripped (E2). */
static void inbox_write_run(struct conn *c, const struct lm_inbox_item *items,
			    uint32_t n, const uint8_t *blob)
{
	uint32_t start = 0;
	for (uint32_t k = 0; k < n && c->state != CS_CLOSING; k++) {
		struct lm_conv_pos pos = {.conv_h = items[k].conv_h,
					  .conv_seq = items[k].conv_seq,
					  .kind = items[k].kind};
		if (!early_is_early(c->early_st, &pos)) {
			early_note(c->early_st, &pos);
			continue;
		}
		if (k > start) {
			uint32_t off = items[start].off;
			conn_write_frames(c, blob + off,
					  items[k].off - off, k - start);
		}
		inbox_write(c, &pos, blob + items[k].off, items[k].len);
		start = k + 1;
	}
	if (start < n && c->state != CS_CLOSING) {
		uint32_t off = items[start].off;
		conn_write_frames(c, blob + off,
				  items[n - 1].off + items[n - 1].len - off,
				  n - start);
	}
}

/* ---- inbox delivery (the chat service resolves; we pace and order) ----------------- */

/*
 * Direct delivery. The live fan-out writes inline inbox pointers (chat.h:
 * the message travels with the pointer), so the subscription callback,
 * on the engine shard, already has every EVENT of a batch: it encodes
 * them as ready frames into ONE message to the loop (inbox_cb). The loop
 * writes a run of in-order ready frames with one conn_write_frames (one
 * copy into the outbound queue, one TLS record per 16 KiB, one send),
 * without a per-event allocation, whenever nothing is waiting before
 * them (on_inbox). Everything else takes the paced path below: pointers
 * without the message (written before inline pointers existed, or by
 * recovery after a crash) are resolved by a read, and ready frames wait
 * in the pending FIFO while the event window or the outbound queue is
 * full. Hops from the inbox append being durable to the EVENT queued:
 * engine -> loop (was engine -> loop -> engine -> loop).
 */

/* The subscription's callback context: lives until the chat service's
 * `done` (after unsubscribe), so it holds a handle, never the conn. */
struct sub_arg {
	struct conn_ref to;
};

/* LM_INBOX payload (lmsg.h): u.inbox.count struct lm_inbox_item, then
 * the bytes they point at: a ready item's encoded EVENT frame, or a
 * pointer packed as {u16 kind, u16 clen, conv, u64 conv_seq}. */
#define INBOX_PACKED(clen) (12u + (uint32_t)(clen))

/* Engine thread (the inbox's shard). */
static void inbox_cb(void *arg, const struct chat_inbox_update *u)
{
	/* a parley_msg is ~16 KiB: one per thread, not on the stack */
	static _Thread_local struct parley_msg tm;
	struct sub_arg *x = arg;
	struct lmsg *m;
	if (u->what == CHAT_INBOX_CLOSED) {
		m = lmsg_new(LM_SUB_CLOSED, 0);
		if (!m)
			return;
		m->u.sub_closed.err = u->err;
	} else if (u->what == CHAT_INBOX_TRIMMED) {
		m = lmsg_new(LM_INBOX, 0);
		if (!m)
			srv_oom("inbox trim notice for a connection");
		m->u.inbox.next_seq = u->next_seq;
		m->u.inbox.trimmed = true;
	} else {
		uint32_t sz[CHAT_INBOX_BATCH];
		size_t total = 0;
		tm.type = PARLEY_T_EVENT;
		for (uint32_t i = 0; i < u->count; i++) {
			const struct chat_inbox_item *it = &u->items[i];
			int n = -1;
			if (it->ready) {
				tm.event = it->ev;
				n = parley_proto_size(&tm);
			}
			/* not encodable: the paced path resolves it (and
			 * answers a placeholder if it still cannot) */
			sz[i] = n > 0 ? (uint32_t)n : 0;
			total += sz[i] ? sz[i] : INBOX_PACKED(it->p.clen);
		}
		m = lmsg_inbox_new(u->count, total);
		if (!m) /* dropping entries would leave a gap */
			srv_oom("inbox entries handed over by the engine");
		struct lm_inbox_item *items = lmsg_inbox_items(m);
		uint8_t *blob = lmsg_inbox_bytes(m);
		uint32_t off = 0;
		for (uint32_t i = 0; i < u->count; i++) {
			const struct chat_inbox_item *it = &u->items[i];
			const struct chat_inbox_ptr *p = &it->p;
			uint32_t len;
			if (sz[i]) {
				tm.event = it->ev;
				int n = parley_proto_encode(blob + off, sz[i], 0, &tm);
				PARLEY_ASSERT(n == (int)sz[i]);
				len = sz[i];
			} else {
				uint8_t *q = blob + off;
				le_put16(q, p->kind);
				le_put16(q + 2, p->clen);
				memcpy(q + 4, p->conv, p->clen);
				le_put64(q + 4 + p->clen, p->conv_seq);
				len = INBOX_PACKED(p->clen);
			}
			items[i] = (struct lm_inbox_item){
				.seq = p->inbox_seq, .off = off, .len = len,
				.ready = sz[i] != 0,
				/* early delivery: the EVENT's own kind and
				 * conv seq when ready (an inline edit is kind
				 * EDIT under a MESSAGE pointer) */
				.kind = sz[i] ? it->ev.kind : p->kind,
				.conv_h = lm_conv_hash(p->conv, p->clen),
				.conv_seq = sz[i] ? it->ev.conv_seq : p->conv_seq};
			off += len;
		}
		m->u.inbox.t_post_ns = parley_mono_ns();
	}
	lmsg_post(&x->to, m);
}

static void rt_free(struct conn *c);

static void sub_end(struct conn *c)
{
	rt_free(c); /* a remote tail: closed on its holder */
	if (!c->sub)
		return;
	if (S(c)->live && c->id) /* no more live group EVENTs (live.h) */
		live_detach(S(c)->live, c->id->user, c->id->ulen, &c->sk.ref);
	chat_inbox_unsubscribe(c->sub); /* frees its sub_arg when gone */
	c->sub = NULL;
	early_free(c);
}

/* An inbox entry waiting in the connection's pending FIFO: a ready EVENT
 * frame (flen > 0, bytes in frame[]), or a pointer to resolve, then the
 * resolve callback's context until its EVENT is posted. */
struct resolve {
	struct resolve *next;     /* conn's pending FIFO */
	struct conn_ref to;
	uint64_t t_taken, t_start; /* the loop got it / resolution began */
	struct chat_inbox_ptr p;
	struct lm_conv_pos pos;   /* early delivery */
	uint32_t flen;
	uint8_t frame[];
};

/* Engine thread (or the loop, for a pointer that needs no read): the
 * EVENT is ready; encode it and post it. */
static void event_cb(void *arg, const struct parley_msg *ev)
{
	struct resolve *r = arg;
	struct lmsg *lm = conn_frame_msg(LM_EVENT, 0, ev);
	if (!lm) { /* not encodable (cannot happen: we wrote it): placeholder */
		struct parley_msg ph;
		chat_event_placeholder(&r->p, &ph);
		ph.event.conv = parley_str_c("-");
		lm = conn_frame_msg(LM_EVENT, 0, &ph);
	}
	if (!lm) /* the connection waits for this seq: dropping it stalls it */
		srv_oom("resolved EVENT");
	lm->u.event.inbox_seq = r->p.inbox_seq;
	lm->u.event.t_start_ns = r->t_start;
	lm->u.event.pos = r->pos;
	lmsg_post(&r->to, lm);
	free(r);
}

/* A remote read's answer (tail_relay.h invariant 5; the peer thread): the
 * EVENT the conversation's leader resolved, or NULL after the relay gave
 * up (the placeholder a cut-off node gives). */
static void remote_resolved(void *arg, const uint8_t *frame, uint32_t n)
{
	struct resolve *r = arg;
	if (!frame) {
		struct parley_msg ph;
		chat_event_placeholder(&r->p, &ph);
		event_cb(r, &ph);
		return;
	}
	struct lmsg *lm = lmsg_new(LM_EVENT, n);
	if (!lm) /* the connection waits for this seq: dropping it stalls it */
		srv_oom("resolved EVENT");
	memcpy(lm->data, frame, n);
	lm->u.event.inbox_seq = r->p.inbox_seq;
	lm->u.event.t_start_ns = r->t_start;
	lm->u.event.pos = r->pos;
	lmsg_post(&r->to, lm);
	free(r);
}

/* Resolves r's pointer: here, or — a message of a conversation whose
 * partition this node holds no replica of (placement, docs/CLUSTER.md
 * §3.7) — at that partition's leader (tail_relay_resolve). 0, or
 * -PARLEY_EFULL (the tick retries; nothing will call back). */
static int resolve_start(struct conn *c, struct resolve *r)
{
	struct srv *s = S(c);
	if (s->tail && s->engine && r->p.clen &&
	    (r->p.kind == PARLEY_EV_MESSAGE || r->p.kind == PARLEY_EV_MEMBERSHIP)) {
		char key[CHAT_KEY_CAP];
		int kl = chat_key_conv(key, r->p.conv, r->p.clen);
		if (kl > 0 &&
		    !route_holds(pe_partition_of(s->engine, key, (size_t)kl))) {
			int rc = tail_relay_resolve(s->tail, &r->p,
						    remote_resolved, r);
			if (rc != -PARLEY_EVERSION) /* an older build: here */
				return rc == 0 ? 0 : -PARLEY_EFULL; /* retried */
		}
	}
	return chat_event_resolve(s->chat, &r->p, event_cb, r);
}

/*
 * Delivery pacing. Entries wait in the connection's pending FIFO; the
 * head goes out (a ready frame is written, a pointer is resolved into an
 * EVENT) only while
 *   - fewer than event_window events are unacknowledged (the protocol's
 *     flow control: the client never has more than a window outstanding),
 *   - fewer than RESOLVE_MAX reads are in flight, and
 *   - the outbound queue is under half its bound (a client that does not
 *     read stops the delivery instead of growing the queue).
 * The pending FIFO is bounded by the engine subscription's credit
 * (event_window + one engine batch). A client that stays stuck is cut off
 * by conn_tick (window full or no send progress for slow_consumer_ms).
 */
#define RESOLVE_MAX 32u

/* May the event inbox_seq be written now, bypassing the pending FIFO? */
static bool deliver_direct_ok(const struct conn *c, uint64_t seq)
{
	struct srv *s = loop_srv(c->sk.ref.lp);
	return seq == c->ev_next && !c->pend_head && !c->resolving &&
	       !c->stash && seq - c->ev_acked <= s->lim.event_window &&
	       c->oq_bytes < s->lim.max_outbound / 2 &&
	       c->goaway_reason != PARLEY_GOAWAY_SLOW_CONSUMER &&
	       c->state != CS_CLOSING;
}

/* Queue a ready event (out of the direct path) into the in-order stash. */
static void stash_insert(struct conn *c, uint64_t seq, uint64_t t_start,
			 const struct lm_conv_pos *pos, const uint8_t *p,
			 uint32_t len)
{
	struct ev_stash *e = malloc(sizeof *e + len);
	if (!e) { /* a gap on a live connection: close it instead */
		PLOG_W("conn", "out of memory for an event: closing the "
		       "connection", "inbox_seq=%" PRIu64, seq);
		c->oom = true;
		return;
	}
	e->inbox_seq = seq;
	e->t_start = t_start;
	e->pos = *pos;
	e->len = len;
	memcpy(e->data, p, len);
	struct ev_stash **pp = &c->stash;
	while (*pp && (*pp)->inbox_seq < seq)
		pp = &(*pp)->next;
	e->next = *pp;
	*pp = e;
	c->resolving++; /* counted like a resolution until written */
}

static void stash_write(struct conn *c);

static void pump_resolves(struct conn *c)
{
	struct srv *s = S(c);
	bool stashed = false;
	while (c->pend_head && c->resolving < RESOLVE_MAX &&
	       c->oq_bytes < s->lim.max_outbound / 2 &&
	       c->goaway_reason != PARLEY_GOAWAY_SLOW_CONSUMER &&
	       c->state != CS_CLOSING &&
	       c->pend_head->p.inbox_seq - c->ev_acked <= s->lim.event_window) {
		struct resolve *r = c->pend_head;
		struct resolve *next = r->next;
		uint64_t t_taken = r->t_taken, t_start = parley_mono_ns();
		if (r->flen) { /* ready: write it, or stash it behind reads */
			c->pend_head = next;
			if (!next)
				c->pend_tail = NULL;
			srv_hist_since(&s->stages.deliver[SRV_DELIVER_PENDING],
				       t_taken, t_start);
			if (!c->resolving && !c->stash &&
			    r->p.inbox_seq == c->ev_next) {
				inbox_write(c, &r->pos, r->frame, r->flen);
				ctr_add(&s->ctr.events_out, 1);
				c->ev_next++;
			} else {
				stash_insert(c, r->p.inbox_seq, t_start, &r->pos,
					     r->frame, r->flen);
				stashed = true;
			}
			free(r);
			continue;
		}
		r->t_start = t_start;
		c->resolving++; /* before: event_cb may post from here */
		if (resolve_start(c, r) != 0) {
			c->resolving--;
			break; /* engine queue full: the tick retries */
		}
		/* r may be gone already (event_cb frees it) */
		srv_hist_since(&s->stages.deliver[SRV_DELIVER_PENDING], t_taken,
			       t_start);
		c->pend_head = next;
		if (!next)
			c->pend_tail = NULL;
	}
	if (stashed)
		stash_write(c);
	early_release(c); /* what went out may let held early EVENTs go */
}

static void pend_drop(struct conn *c)
{
	while (c->pend_head) {
		struct resolve *r = c->pend_head;
		c->pend_head = r->next;
		free(r);
	}
	c->pend_tail = NULL;
}

static void pend_push(struct conn *c, uint64_t now, uint64_t seq, bool ready,
		      const struct lm_conv_pos *pos, const uint8_t *q,
		      uint32_t len)
{
	struct resolve *r = malloc(sizeof *r + (ready ? len : 0));
	if (!r) { /* a gap on a live connection: close it instead */
		PLOG_W("conn", "out of memory for an event: closing the "
		       "connection", "inbox_seq=%" PRIu64, seq);
		c->oom = true;
		return;
	}
	r->next = NULL;
	r->to = c->sk.ref;
	r->t_taken = now;
	r->t_start = 0;
	r->p.inbox_seq = seq;
	r->pos = *pos;
	r->flen = ready ? len : 0;
	if (ready) {
		memcpy(r->frame, q, len);
		r->p.kind = r->p.clen = 0;
		r->p.conv_seq = 0;
	} else {
		r->p.kind = le_get16(q);
		r->p.clen = le_get16(q + 2);
		memcpy(r->p.conv, q + 4, r->p.clen);
		r->p.conv_seq = le_get64(q + 4 + r->p.clen);
	}
	if (c->pend_tail)
		c->pend_tail->next = r;
	else
		c->pend_head = r;
	c->pend_tail = r;
}

static void on_inbox(struct conn *c, struct lmsg *m)
{
	if (!c->sub)
		return; /* subscription ended since */
	if (m->u.inbox.trimmed) {
		/* retention trimmed the inbox below our cursor: skip ahead */
		if (m->u.inbox.next_seq > c->ev_next && !c->pend_head &&
		    !c->resolving)
			c->ev_next = m->u.inbox.next_seq;
		return;
	}
	struct srv *s = S(c);
	uint64_t now = parley_mono_ns();
	srv_hist_since(&s->stages.deliver[SRV_DELIVER_NOTIFY],
		       m->u.inbox.t_post_ns, now);
	uint32_t count = m->u.inbox.count;
	const struct lm_inbox_item *items = lmsg_inbox_items(m);
	const uint8_t *blob = lmsg_inbox_bytes(m);
	for (uint32_t i = 0; i < count && c->sub;) { /* a write may cut us off */
		const struct lm_inbox_item *it = &items[i];
		uint64_t seq = it->seq;
		if (it->ready && deliver_direct_ok(c, seq)) {
			/* the run of ready, consecutive, in-window events
			 * starting here: one write */
			uint32_t j = i + 1, run = it->len;
			while (j < count) {
				const struct lm_inbox_item *nj = &items[j];
				if (!nj->ready || nj->seq != seq + (j - i) ||
				    seq + (j - i) - c->ev_acked > s->lim.event_window)
					break;
				run += nj->len;
				j++;
			}
			if (c->early_st)
				inbox_write_run(c, items + i, j - i, blob);
			else
				conn_write_frames(c, blob + it->off, run, j - i);
			ctr_add(&s->ctr.events_out, j - i);
			c->ev_next += j - i;
			i = j;
			continue;
		}
		struct lm_conv_pos pos = {.conv_h = it->conv_h,
					  .conv_seq = it->conv_seq,
					  .kind = it->kind};
		pend_push(c, now, seq, it->ready, &pos, blob + it->off, it->len);
		i++;
	}
	pump_resolves(c);
	early_release(c);
}

/* Writes stashed events in inbox order while the outbound queue is under
 * half its bound. */
static void stash_write(struct conn *c)
{
	struct srv *s = S(c);
	while (c->stash && c->stash->inbox_seq == c->ev_next &&
	       c->oq_bytes < s->lim.max_outbound / 2 && c->state != CS_CLOSING) {
		struct ev_stash *e = c->stash;
		c->stash = e->next;
		inbox_write(c, &e->pos, e->data, e->len);
		srv_hist_since(&s->stages.deliver[SRV_DELIVER_RESOLVE], e->t_start,
			       parley_mono_ns());
		ctr_add(&s->ctr.events_out, 1);
		c->ev_next++;
		c->resolving--;
		free(e);
	}
}

/* Writes what the stash can, then lets more through the pending FIFO. */
static void flush_stash(struct conn *c)
{
	stash_write(c);
	pump_resolves(c);
}

static void on_event(struct conn *c, struct lmsg *m)
{
	uint64_t seq = m->u.event.inbox_seq;
	if ((!c->sub && c->state != CS_DRAINING) ||
	    c->goaway_reason == PARLEY_GOAWAY_SLOW_CONSUMER || seq < c->ev_next) {
		c->resolving--; /* cut off: the device resyncs from its cursor */
		return;
	}
	c->resolving--; /* stash_insert counts it again */
	stash_insert(c, seq, m->u.event.t_start_ns, &m->u.event.pos, m->data,
		     m->len);
	flush_stash(c);
	early_release(c);
}

/* A live EVENT of a large group (live.h): written while subscribed; a
 * connection that cannot take it is cut off, never skipped silently (its
 * device reads it back with GROUP_CATCHUP after reconnecting). */
static void on_live(struct conn *c, struct lmsg *m)
{
	struct srv *s = S(c);
	if (!c->sub || c->state == CS_CLOSING ||
	    c->goaway_reason == PARLEY_GOAWAY_SLOW_CONSUMER)
		return;
	if (c->oq_bytes + m->len > s->lim.max_outbound) {
		conn_slow_consumer(c, "live group events not read");
		return;
	}
	conn_write(c, m->data, m->len);
	ctr_add(&s->ctr.events_out, 1);
}

/* SYNC's subscription (conn_req_sync.c): subscribes the connection's inbox
 * from inbox_seq `from`, the device's stored cursor being `cursor`
 * (UINT64_MAX: none), and attaches the user to large groups' live EVENTs.
 * 0, or a negative error with nothing changed. */
int conn_inbox_start(struct conn *c, uint64_t from, uint64_t cursor)
{
	struct sub_arg *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	*x = (struct sub_arg){.to = c->sk.ref};
	struct chat_sub *sub;
	int rc = chat_inbox_subscribe(S(c)->chat, c->id->user, c->id->ulen, from,
				      S(c)->lim.event_window, inbox_cb, free, x,
				      &sub);
	if (rc) {
		free(x);
		return rc;
	}
	c->ev_next = from;
	c->ev_acked = from - 1;
	c->cursor_stored = cursor == UINT64_MAX ? 0 : cursor;
	if (c->cursor_stored < c->ev_acked)
		c->cursor_stored = c->ev_acked; /* nothing to store yet */
	c->rcpt_acked = c->ev_acked; /* receipts: from what this SYNC starts at */
	c->sub = sub;
	if (c->early && S(c)->live) /* early delivery: optional */
		c->early_st = calloc(1, sizeof *c->early_st);
	if (S(c)->live) /* large groups' live EVENTs (live.h) */
		live_attach(S(c)->live, c->id->user, c->id->ulen, &c->sk.ref,
			    c->early_st != NULL);
	return 0;
}

/* EVENT_ACK (conn_req_sync.c, which checked ev_acked < up < ev_next): the
 * device holds every event up to `up`; the window opens by as many. */
static void rt_ack(struct conn *c, uint64_t up);

void conn_inbox_ack(struct conn *c, uint64_t up)
{
	if (c->rt) {
		rt_ack(c, up);
		return;
	}
	PARLEY_ASSERT(c->sub && up > c->ev_acked && up < c->ev_next);
	uint64_t delta = up - c->ev_acked;
	c->ev_acked = up;
	rcpt_flush(c, parley_mono_ns(), false);
	c->cursor_dirty = true;
	c->window_full_ns = 0;
	chat_inbox_grant(c->sub, (int64_t)delta);
	pump_resolves(c);
}

/* ---- device cursor ------------------------------------------------------------------- */

/* Delivered receipts for what the device acknowledged (chat_receipt.h):
 * at most one report per CHAT_RCPT_ACK_COALESCE_MS (covering every ack
 * since the last), or now when forced (close, drain). A report the
 * engine cannot take now stays pending for the tick. */
static void rcpt_flush(struct conn *c, uint64_t now_ns, bool force)
{
	/* a remote tail's receipts and cursor are its holder's */
	if (!c->id || c->rt || c->ev_acked <= c->rcpt_acked)
		return;
	if (!force && now_ns - c->rcpt_sent_ns <
			      (uint64_t)CHAT_RCPT_ACK_COALESCE_MS * 1000000ull)
		return;
	c->rcpt_sent_ns = now_ns;
	int rc = chat_rcpt_acked(S(c)->chat, c->id->user, c->id->ulen,
				 c->rcpt_acked, c->ev_acked);
	if (rc == 0 || rc != -PARLEY_EFULL)
		c->rcpt_acked = c->ev_acked;
	if (rc)
		PLOG_W("conn", "delivered receipts not reported", "user=%s err=%s",
		       c->id->user, parley_errname(rc));
}

static void cursor_store(struct conn *c)
{
	if (!c->id || c->rt || c->ev_acked <= c->cursor_stored)
		return;
	if (chat_cursor_store(S(c)->chat, c->id->user, c->id->ulen,
			      c->id->device, c->id->dlen, c->ev_acked) == 0)
		c->cursor_stored = c->ev_acked;
}
/* ---- lifecycle -------------------------------------------------------------------------- */

struct conn *conn_new(struct loop *lp, int fd, bool tls, uint32_t slot,
		      uint32_t gen)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->sk.ref = (struct conn_ref){.lp = lp, .slot = slot, .gen = gen};
	c->sk.fd = fd;
	c->sk.tls = tls;
	c->last_rx_ns = parley_mono_ns();
	c->deadline_ns = c->last_rx_ns +
			 (uint64_t)loop_srv(lp)->lim.handshake_timeout_ms * 1000000ull;
	c->state = CS_NEW;
	if (tls) {
		c->ssl = SSL_new(loop_srv(lp)->tls);
		BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
		if (!c->ssl || !r || !w) {
			SSL_free(c->ssl);
			BIO_free(r);
			BIO_free(w);
			free(c);
			return NULL;
		}
		BIO_set_mem_eof_return(r, -1);
		BIO_set_mem_eof_return(w, -1);
		SSL_set_bio(c->ssl, r, w);
		SSL_set_accept_state(c->ssl);
		c->state = CS_TLS_HS;
	}
	if (loop_srv(lp)->adm) /* may fail: HELLO tries again */
		admission_enter(loop_srv(lp)->adm, &c->hs_slot);
	return c;
}

void conn_on_close(struct conn *c)
{
	if (S(c)->adm)
		admission_leave(S(c)->adm, &c->hs_slot);
	sub_end(c);
	cursor_store(c);
	rcpt_flush(c, parley_mono_ns(), true);
	pend_drop(c);
	if (S(c)->pres)
		presence_conn_offline(S(c)->pres, &c->pres);
	c->state = CS_CLOSING;
}

struct loop_sock *conn_sock(struct conn *c)
{
	return &c->sk;
}

uint32_t conn_out_peek(struct conn *c, const uint8_t **p)
{
	struct obuf *b = c->oq_head;
	if (!b || c->state == CS_CLOSING)
		return 0;
	*p = b->data + b->off;
	return b->len - b->off;
}

void conn_free(struct conn *c)
{
	if (c->hs_slot)
		admission_leave(S(c)->adm, &c->hs_slot);
	while (c->fwd_saved) {
		struct fwd_saved *sv = c->fwd_saved;
		c->fwd_saved = sv->next;
		saved_free(c, sv);
	}
	if (c->virt) {
		if (c->virt->tail) {
			if (S(c)->tail)
				tail_relay_served_end(S(c)->tail, c->virt->node,
						      c->virt->tail_id);
		} else if (S(c)->proxy) {
			proxy_served_done(S(c)->proxy, c->virt->node);
		}
		free(c->virt);
	}
	rt_free(c);
	while (c->oq_head) {
		struct obuf *b = c->oq_head;
		c->oq_head = b->next;
		obuf_release(c, b);
	}
	while (c->stash) {
		struct ev_stash *s = c->stash;
		c->stash = s->next;
		free(s);
	}
	early_free(c);
	if (c->ssl)
		SSL_free(c->ssl);
	inbuf_release(c);
	free(c->id);
	free(c);
}

static void conn_slow_consumer(struct conn *c, const char *why)
{
	PLOG_I("conn", "slow consumer cut off", "user=%s why=\"%s\" queued=%" PRIu64,
	       c->id ? c->id->user : "-", why, c->oq_bytes);
	ctr_add(&S(c)->ctr.slow_consumers, 1);
	sub_end(c); /* no more events: memory stays bounded */
	pend_drop(c);
	while (c->stash) {
		struct ev_stash *e = c->stash;
		c->stash = e->next;
		c->resolving--;
		free(e);
	}
	c->goaway_reason = PARLEY_GOAWAY_SLOW_CONSUMER;
	c->state = CS_DRAINING;
	c->deadline_ns = parley_mono_ns() + SLOW_CLOSE_GRACE_NS;
	struct parley_msg m = {.type = PARLEY_T_GOAWAY};
	m.goaway.reason = PARLEY_GOAWAY_SLOW_CONSUMER;
	m.goaway.retry_after_ms = 1000;
	m.goaway.text = parley_str_c(why);
	uint8_t buf[256];
	int n = parley_proto_encode(buf, sizeof buf, 0, &m);
	if (!c->ssl && c->oq_head) {
		/* Plain TCP: every chunk after the head holds whole frames that
		 * were never started: drop them, so the GOAWAY is next on the
		 * wire and memory is released now. (TLS records cannot be
		 * dropped without breaking the TLS stream: there the GOAWAY
		 * queues behind them and the deadline bounds the wait.) */
		struct obuf *b = c->oq_head->next;
		c->oq_head->next = NULL;
		c->oq_tail = c->oq_head;
		while (b) {
			struct obuf *nx = b->next;
			c->oq_bytes -= b->len - b->off;
			obuf_release(c, b);
			b = nx;
		}
	}
	if (c->virt) { /* a tail virtual connection: to the gateway, then
			  closed (the gateway passes the GOAWAY on) */
		if (n > 0)
			virt_out(c, buf, (size_t)n);
		if (c->state != CS_CLOSING)
			loop_conn_close(c, "slow consumer");
		return;
	}
	if (n > 0) {
		uint64_t saved = c->oq_bytes;
		c->oq_bytes = 0; /* bypass the drop rule for the GOAWAY itself */
		if (c->ssl) {
			if (SSL_write(c->ssl, buf, n) > 0)
				tls_flush(c);
		} else {
			out_raw(c, buf, (size_t)n);
		}
		c->oq_bytes += saved;
	}
	c->closing_after_flush = true;
	loop_conn_kick(c);
}

static void on_drain(struct conn *c, uint16_t reason,
		     uint32_t retry_after_ms, const char *text)
{
	if (c->state == CS_CLOSING || c->state == CS_DRAINING)
		return;
	if (c->state != CS_READY) {
		loop_conn_close(c, "drain before ready");
		return;
	}
	c->state = CS_DRAINING;
	c->goaway_reason = reason;
	sub_end(c); /* the device resumes from its cursor elsewhere */
	cursor_store(c);
	rcpt_flush(c, parley_mono_ns(), true);
	conn_goaway(c, reason, retry_after_ms, text);
	c->deadline_ns = parley_mono_ns() +
			 (uint64_t)S(c)->lim.drain_timeout_ms * 1000000ull;
	if (!c->oq_head && !c->inflight && !c->resolving && !c->pend_head && !c->sync_busy)
		loop_conn_close(c, "drained");
}

static void on_tick(struct conn *c, uint64_t now_ns, uint64_t now_ms)
{
	struct srv *s = S(c);
	if (c->state == CS_CLOSING)
		return;
	if (c->sk.rx_paused || (c->virt && c->virt->tail))
		c->last_rx_ns = now_ns; /* not reading it / no reader: not idle */
	if (c->inlen && !c->closing_after_flush &&
	    now_ns - c->frame_start_ns >
		    (uint64_t)s->lim.frame_timeout_ms * 1000000ull) {
		/* a frame started long ago and is still incomplete (a client
		 * trickling bytes): its buffer goes now (conn.h invariant 6) */
		ctr_add(&s->ctr.frame_timeouts, 1);
		inbuf_release(c);
		conn_error(c, 0, PARLEY_ETIMEDOUT, true, 0,
			   "frame not completed within frame_timeout_ms");
		return;
	}
	if (c->deadline_ns && now_ns >= c->deadline_ns) {
		if (c->state < CS_READY) {
			ctr_add(&s->ctr.handshake_timeouts, 1);
			loop_conn_close(c, "handshake timeout");
		} else {
			loop_conn_close(c, "drain deadline");
		}
		return;
	}
	if (c->state >= CS_READY &&
	    now_ns - c->last_rx_ns > (uint64_t)s->lim.idle_timeout_ms * 1000000ull) {
		ctr_add(&s->ctr.idle_closes, 1);
		if (c->state == CS_READY)
			on_drain(c, PARLEY_GOAWAY_IDLE, 0, "idle timeout");
		else
			loop_conn_close(c, "idle timeout");
		return;
	}
	/* token_exp_ms is the auth hook's session deadline (exp + leeway, see
	 * jwt_expired_at): the same instant AUTH starts refusing the token */
	if (c->state == CS_READY && c->token_exp_ms && now_ms >= c->token_exp_ms) {
		on_drain(c, PARLEY_GOAWAY_AUTH_EXPIRED, 0, "token expired");
		return;
	}
	uint64_t slow_ns = (uint64_t)s->lim.slow_consumer_ms * 1000000ull;
	if (c->oq_head && now_ns - c->last_tx_ns > slow_ns &&
	    c->goaway_reason != PARLEY_GOAWAY_SLOW_CONSUMER) {
		conn_slow_consumer(c, "not reading");
		return;
	}
	if (c->sub) {
		if (c->ev_next - 1 - c->ev_acked >= s->lim.event_window) {
			if (!c->window_full_ns)
				c->window_full_ns = now_ns;
			else if (now_ns - c->window_full_ns > slow_ns) {
				conn_slow_consumer(c, "events not acknowledged");
				return;
			}
		} else {
			c->window_full_ns = 0;
		}
		chat_inbox_poll(c->sub);
	}
	if (c->rt && rt_tick(c, now_ns))
		return;
	pump_resolves(c);
	rcpt_flush(c, now_ns, false);
	if (c->cursor_dirty && now_ns - c->cursor_written_ns > CURSOR_FLUSH_NS) {
		cursor_store(c);
		c->cursor_dirty = false;
		c->cursor_written_ns = now_ns;
	}
}

/* ---- the handshake (HELLO / AUTH; PING is answered in dispatch) ---------------------- */

static void req_hello(struct conn *c, uint32_t rid, const struct parley_hello *m)
{
	struct srv *s = S(c);
	/* admission control (ratelimit.h): a handshake slot, or a retry-after
	 * with jitter and a close */
	static _Thread_local struct parley_rng jitter;
	if (!jitter.s)
		jitter.s = parley_mono_ns() ^ (uint64_t)(uintptr_t)&jitter;
	uint32_t retry = s->adm ? admission_hello(s->adm, &c->hs_slot,
						  parley_rng_next(&jitter))
				: 0;
	if (retry) {
		conn_error(c, rid, PARLEY_EAGAIN, true, retry,
			   "too many handshakes in progress, retry later");
		return;
	}
	if (m->min_version > PARLEY_PROTO_VERSION ||
	    m->max_version < PARLEY_PROTO_VERSION) {
		conn_error(c, rid, PARLEY_EVERSION, true, 0,
			   "no common protocol version (server speaks 1)");
		return;
	}
	c->id = calloc(1, sizeof *c->id);
	if (!c->id) {
		conn_error(c, rid, PARLEY_ENOMEM, true, SRV_NOMEM_RETRY_MS,
			   "out of memory");
		return;
	}
	c->id->dlen = (uint8_t)m->device_id.len;
	memcpy(c->id->device, m->device_id.p, m->device_id.len);
	c->zstd = (m->features & PARLEY_FEAT_ZSTD) != 0;
	c->early = (m->features & PARLEY_FEAT_EARLY) && s->lim.early_delivery &&
		   !c->virt;
	struct parley_msg ok = {.type = PARLEY_T_HELLO_OK};
	ok.hello_ok.version = PARLEY_PROTO_VERSION;
	ok.hello_ok.features = (c->zstd ? PARLEY_FEAT_ZSTD : 0) |
			       (c->early ? PARLEY_FEAT_EARLY : 0);
	ok.hello_ok.max_frame = s->lim.max_frame;
	ok.hello_ok.max_body = s->lim.max_body;
	ok.hello_ok.max_inflight = s->lim.max_inflight;
	ok.hello_ok.event_window = s->lim.event_window;
	ok.hello_ok.idle_timeout_ms = s->lim.idle_timeout_ms;
	ok.hello_ok.server_time_ms = parley_now_ms();
	ok.hello_ok.server_id = parley_str_c(s->server_id);
	c->state = CS_HELLO_DONE;
	conn_send(c, rid, &ok);
}

static void req_auth(struct conn *c, uint32_t rid, const struct parley_auth *m)
{
	struct srv *s = S(c);
	char sub[256], why[128] = "token rejected";
	uint64_t exp = 0;
	int rc = s->auth(s->auth_arg, m->token.p, m->token.len, sub, sizeof sub,
			 &exp, why, sizeof why);
	size_t sl = rc == 0 ? strlen(sub) : 0;
	if (rc == 0 && !parley_proto_user_id_valid(sub, sl)) {
		rc = -PARLEY_EAUTH;
		snprintf(why, sizeof why, "token subject is not a valid user id");
	}
	if (rc == 0 && c->state == CS_READY &&
	    (sl != c->id->ulen || memcmp(sub, c->id->user, sl) != 0)) {
		rc = -PARLEY_EAUTH;
		snprintf(why, sizeof why, "re-AUTH with a different subject");
	}
	if (rc) {
		ctr_add(&s->ctr.auth_failures, 1);
		PLOG_I("conn", "auth failed", "why=\"%s\"", why);
		conn_error(c, rid, PARLEY_EAUTH, true, 0, why);
		return;
	}
	c->id->ulen = (uint8_t)sl;
	memcpy(c->id->user, sub, sl);
	c->id->user[sl] = '\0';
	c->token_exp_ms = exp;
	if (c->state == CS_HELLO_DONE) {
		c->state = CS_READY;
		c->deadline_ns = 0;
		if (s->adm)
			admission_leave(s->adm, &c->hs_slot);
		if (s->pres) /* a session: the user is online (presence.h) */
			presence_conn_online(s->pres, &c->pres, c->id->user,
					     c->id->ulen,
					     c->sk.ref);
	}
	struct parley_msg ok = {.type = PARLEY_T_AUTH_OK};
	ok.auth_ok.user_id = (struct parley_str){c->id->user, (uint16_t)sl};
	ok.auth_ok.expires_ms = exp;
	conn_send(c, rid, &ok);
}

/* ---- dispatch -------------------------------------------------------------------------------- */

static void handle_frame(struct conn *c, const struct parley_frame *f)
{
	struct srv *s = S(c);
	ctr_add(&s->ctr.frames_in, 1);
	uint16_t t = f->type;
	uint32_t rid = f->request_id;
	route_clear(); /* no refusal of another request routes this one */
	if (c->state == CS_NEW && t != PARLEY_T_HELLO) {
		ctr_add(&s->ctr.proto_errors, 1);
		conn_error(c, rid, PARLEY_EPROTO, true, 0,
			   "the first frame must be HELLO");
		return;
	}
	bool is_req = parley_type_is_request(t);
	bool is_note = parley_type_is_notification(t);
	if ((is_req && rid == 0) || (is_note && rid != 0) || (!is_req && !is_note)) {
		ctr_add(&s->ctr.proto_errors, 1);
		conn_error(c, rid, PARLEY_EPROTO, false, 0,
			   !is_req && !is_note ? "not a client message type"
					       : "bad request_id for this type");
		return;
	}
	/* decompress if needed */
	const uint8_t *payload = f->payload;
	size_t plen = f->payload_len;
	uint8_t *dbuf = NULL;
	if (f->flags & PARLEY_FLAG_ZSTD) {
		if (!c->zstd || t == PARLEY_T_HELLO) {
			ctr_add(&s->ctr.proto_errors, 1);
			conn_error(c, rid, PARLEY_EPROTO, false, 0,
				   "compressed frame without the ZSTD feature");
			return;
		}
		size_t cap = conn_max_frame(c) - PARLEY_PROTO_HEADER_SIZE;
		dbuf = malloc(cap);
		int n = dbuf ? parley_proto_decompress(f, dbuf, cap) : -PARLEY_ENOMEM;
		if (n < 0) {
			free(dbuf);
			ctr_add(&s->ctr.proto_errors, 1);
			conn_error(c, rid, n == -PARLEY_ENOMEM ? PARLEY_ENOMEM
							       : PARLEY_EPROTO,
				   false, 0, "bad compressed payload");
			return;
		}
		payload = dbuf;
		plen = (size_t)n;
	}
	/* The decoded request (~16 KiB, it borrows from payload): one per
	 * loop thread, not a malloc per frame. handle_frame never runs nested
	 * on a thread (no handler parses frames). */
	static _Thread_local struct parley_msg decoded;
	struct parley_msg *m = &decoded;
	int rc = parley_proto_decode_payload(t, payload, plen, m);
	if (rc) {
		ctr_add(&s->ctr.proto_errors, 1);
		/* A bad HELLO leaves nothing to talk about: fatal. */
		conn_error(c, rid, PARLEY_EPROTO, c->state == CS_NEW, 0,
			   rc == -PARLEY_EVERSION ? "unknown or reserved message type"
						  : "malformed payload");
		goto out;
	}
	if (c->pres) /* any frame is a presence heartbeat (presence.h) */
		presence_conn_beat(s->pres, c->pres, parley_mono_ns());
	if (t == PARLEY_T_HELLO) {
		if (c->state != CS_NEW)
			conn_error(c, rid, PARLEY_EPROTO, false, 0,
				   "HELLO already done");
		else
			req_hello(c, rid, &m->hello);
		goto out;
	}
	if (t == PARLEY_T_PING) {
		struct parley_msg p = {.type = PARLEY_T_PONG};
		p.pong.nonce = m->ping.nonce;
		p.pong.server_time_ms = parley_now_ms();
		conn_send(c, rid, &p);
		goto out;
	}
	if (t == PARLEY_T_AUTH) {
		if (c->state == CS_DRAINING)
			conn_error(c, rid, PARLEY_ECLOSED, false, 0, "draining");
		else
			req_auth(c, rid, &m->auth);
		goto out;
	}
	if (c->state == CS_HELLO_DONE) {
		conn_error(c, rid, PARLEY_EAUTH, false, 0, "AUTH first");
		goto out;
	}
	if (t == PARLEY_T_EVENT_ACK) {
		conn_req_event_ack(c, &m->event_ack);
		goto out;
	}
	if (c->state == CS_DRAINING) {
		conn_error(c, rid, PARLEY_ECLOSED, false,
			   c->goaway_reason == PARLEY_GOAWAY_DRAIN ? 1000 : 0,
			   "draining");
		goto out;
	}
	if (is_req && c->inflight >= s->lim.max_inflight) {
		conn_error(c, rid, PARLEY_EFULL, false, 0,
			   "too many requests in flight");
		goto out;
	}
	if (s->proxy && !c->virt && proxy_type_forwardable(t) &&
	    proxy_forwarding(s->proxy))
		saved_keep(c, f, payload, plen);
	switch (t) {
	case PARLEY_T_SEND: conn_req_send(c, rid, &m->send); break;
	case PARLEY_T_HISTORY: conn_req_history(c, rid, &m->history); break;
	case PARLEY_T_SYNC: conn_req_sync(c, rid, &m->sync); break;
	case PARLEY_T_CONV_OPEN: conn_req_conv_open(c, rid, &m->conv_open); break;
	case PARLEY_T_CONV_LIST: conn_req_conv_list(c, rid, &m->conv_list); break;
	case PARLEY_T_TYPING: conn_note_typing(c, &m->typing); break;
	case PARLEY_T_PRESENCE_SUB:
		conn_req_presence_sub(c, rid, &m->presence_sub);
		break;
	case PARLEY_T_PRESENCE_SET:
		conn_req_presence_set(c, rid, &m->presence_set);
		break;
	case PARLEY_T_GROUP_CREATE:
	case PARLEY_T_GROUP_ADD:
	case PARLEY_T_GROUP_REMOVE:
	case PARLEY_T_GROUP_LEAVE:
	case PARLEY_T_GROUP_ROLE:
	case PARLEY_T_GROUP_SET: conn_req_group_change(c, rid, m); break;
	case PARLEY_T_GROUP_INFO: conn_req_group_info(c, rid, &m->group_info); break;
	case PARLEY_T_GROUP_CATCHUP:
		conn_req_group_catchup(c, rid, &m->group_catchup);
		break;
	case PARLEY_T_READ_MARKER:
		conn_req_read_marker(c, rid, &m->read_marker);
		break;
	case PARLEY_T_RECEIPTS: conn_req_receipts(c, rid, &m->receipts); break;
	case PARLEY_T_EDIT:
		conn_req_edit(c, rid, PARLEY_EV_EDIT, m->edit.conv, m->edit.client_msg_id,
			 m->edit.ref_seq, m->edit.content_type, m->edit.body);
		break;
	case PARLEY_T_RETENTION: conn_req_retention(c, rid, &m->retention); break;
	case PARLEY_T_DELETE:
		conn_req_edit(c, rid, PARLEY_EV_DELETE, m->del.conv,
			 m->del.client_msg_id, m->del.ref_seq, 0,
			 (struct parley_bytes){NULL, 0});
		break;
	default:
		ctr_add(&s->ctr.proto_errors, 1);
		conn_error(c, rid, PARLEY_EPROTO, false, 0,
			   "unsupported message type");
		break;
	}
out:
	free(dbuf);
}

/* The largest frame accepted in the connection's current state: until
 * AUTH_OK only HELLO, AUTH and PING are useful, and the largest of them (an
 * AUTH with an 8 KiB token) fits in preauth_max_frame (conn.h invariant 6). */
static uint32_t conn_max_frame(const struct conn *c)
{
	struct srv *s = loop_srv(c->sk.ref.lp);
	return c->state >= CS_READY ? s->lim.max_frame : s->lim.preauth_max_frame;
}

/* Parses whole frames from p[0..n); returns bytes consumed. The frame
 * decoder checks a frame's declared length against the limit as soon as
 * its 4-byte length is in, before any of its body is buffered. */
static size_t parse_frames(struct conn *c, const uint8_t *p, size_t n)
{
	size_t off = 0;
	while (off < n && c->state != CS_CLOSING && !c->closing_after_flush) {
		uint32_t maxf = conn_max_frame(c);
		struct parley_frame f;
		int rc = parley_proto_frame_decode(p + off, n - off, maxf, &f);
		if (rc == -PARLEY_EINCOMPLETE)
			break;
		if (rc < 0) {
			bool big = rc == -PARLEY_ETOOBIG;
			bool pre = c->state < CS_READY;
			ctr_add(&S(c)->ctr.proto_errors, 1);
			if (big && pre)
				ctr_add(&S(c)->ctr.preauth_too_big, 1);
			conn_error(c, 0, big ? PARLEY_ETOOBIG : PARLEY_EPROTO, true, 0,
				   !big ? "bad frame header"
				   : pre ? "frame over the pre-authentication limit"
					 : "frame over max_frame");
			return n;
		}
		handle_frame(c, &f);
		off += (size_t)rc;
	}
	return off;
}

/* Whole length of the frame starting at p[0..n), 0 while its length field
 * is incomplete. Only called on bytes parse_frames left (so <= max). */
static size_t frame_total(const uint8_t *p, size_t n)
{
	return n >= 4 ? 4 + (size_t)le_get32(p) : 0;
}

/* The partial frame cannot be kept: the stream cannot continue. A
 * fatal ERROR NOMEM (retry after SRV_NOMEM_CLOSE_RETRY_MS) tells the
 * client to reconnect;
 * requests already taken are answered before the close. */
static void inbuf_nomem(struct conn *c)
{
	PLOG_W("conn", "out of memory for a partial frame: closing the "
	       "connection", "have=%u", c->inlen);
	inbuf_release(c);
	conn_error(c, 0, PARLEY_ENOMEM, true, SRV_NOMEM_CLOSE_RETRY_MS,
		   "out of memory");
}

/* Keeps the unparsed tail p[0..rem) as the connection's partial frame
 * (inbuf empty before). */
static void inbuf_keep(struct conn *c, const uint8_t *p, size_t rem)
{
	size_t cap = PARLEY_MAX(rem, (size_t)4096);
	size_t total = frame_total(p, rem);
	if (total && total < cap)
		cap = PARLEY_MAX(total, rem);
	c->inbuf = malloc(cap);
	if (!c->inbuf) {
		inbuf_nomem(c);
		return;
	}
	membudget_charge(&S(c)->mem, (int64_t)cap);
	c->incap = (uint32_t)cap;
	memcpy(c->inbuf, p, rem);
	c->inlen = (uint32_t)rem;
	c->frame_start_ns = parley_mono_ns();
}

static void conn_feed(struct conn *c, const uint8_t *p, size_t n)
{
	if (c->closing_after_flush)
		return;
	if (c->inlen == 0) {
		size_t used = parse_frames(c, p, n);
		if (used < n && c->state != CS_CLOSING && !c->closing_after_flush)
			inbuf_keep(c, p + used, n - used);
		return;
	}
	/* A partial frame is pending: its declared length was already checked
	 * against the limit when its header arrived (or is checked by
	 * parse_frames below). Grow with the bytes received — doubling, but
	 * never past the frame's declared end unless more frames follow. */
	size_t need = (size_t)c->inlen + n;
	if (need > c->incap) {
		size_t cap = PARLEY_MAX(need, (size_t)c->incap * 2);
		size_t total = frame_total(c->inbuf, c->inlen);
		if (!total && c->inlen < 4 && need >= 4) {
			uint8_t h[4];
			memcpy(h, c->inbuf, c->inlen);
			memcpy(h + c->inlen, p, 4 - c->inlen);
			total = frame_total(h, 4);
		}
		if (total && total <= conn_max_frame(c))
			cap = PARLEY_MAX(need, PARLEY_MIN(cap, total));
		else if (total) /* over the limit: parse_frames rejects it */
			cap = need;
		uint8_t *nb = realloc(c->inbuf, cap);
		if (!nb) {
			inbuf_nomem(c);
			return;
		}
		membudget_charge(&S(c)->mem, (int64_t)cap - (int64_t)c->incap);
		c->inbuf = nb;
		c->incap = (uint32_t)cap;
	}
	memcpy(c->inbuf + c->inlen, p, n);
	c->inlen += (uint32_t)n;
	size_t used = parse_frames(c, c->inbuf, c->inlen);
	if (c->state == CS_CLOSING || c->closing_after_flush) {
		c->inlen = 0;
	} else if (used) {
		memmove(c->inbuf, c->inbuf + used, c->inlen - used);
		c->inlen -= (uint32_t)used;
		/* what is left is a frame that started in this read */
		c->frame_start_ns = parley_mono_ns();
	}
	if (c->inlen == 0)
		inbuf_release(c);
}

static void on_recv(struct conn *c, const uint8_t *p, uint32_t n)
{
	c->last_rx_ns = parley_mono_ns();
	if (!c->ssl) {
		conn_feed(c, p, n);
		return;
	}
	if (BIO_write(SSL_get_rbio(c->ssl), p, (int)n) != (int)n) {
		loop_conn_close(c, "tls bio write failed");
		return;
	}
	if (c->state == CS_TLS_HS) {
		int rc = SSL_do_handshake(c->ssl);
		tls_flush(c);
		if (rc != 1) {
			int e = SSL_get_error(c->ssl, rc);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
				loop_conn_kick(c);
				return;
			}
			unsigned long ee = ERR_get_error();
			char eb[160];
			ERR_error_string_n(ee, eb, sizeof eb);
			PLOG_I("conn", "tls handshake failed", "err=\"%s\"", eb);
			ERR_clear_error();
			if (c->oq_head) /* send the alert, then close */
				c->closing_after_flush = true;
			else
				loop_conn_close(c, "tls handshake failed");
			loop_conn_kick(c);
			return;
		}
		c->state = CS_NEW;
	}
	BIO *rb = SSL_get_rbio(c->ssl);
	for (;;) {
		int k = SSL_read(c->ssl, tls_plain, sizeof tls_plain);
		if (k > 0) {
			conn_feed(c, tls_plain, (size_t)k);
			if (c->state == CS_CLOSING || c->closing_after_flush)
				break;
			/* nothing buffered on either side of the TLS layer: the
			 * next SSL_read would only say WANT_READ (a call, an
			 * error-queue round trip), so skip it */
			if (!BIO_ctrl_pending(rb) && !SSL_pending(c->ssl))
				break;
			continue;
		}
		int e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			loop_conn_close(c, "tls close_notify");
			return;
		}
		ERR_clear_error();
		loop_conn_close(c, "tls read failed");
		return;
	}
	tls_flush(c);
	loop_conn_kick(c);
}

/* ---- virtual connections: requests forwarded by other nodes (proxy.h) ---------------------- */

/* The frames a virtual connection writes: the answer to its request goes
 * back to the node that forwarded it; anything else (a GOAWAY while
 * draining) has no one to go to. */
static void virt_out(struct conn *c, const uint8_t *p, size_t n)
{
	struct conn_virt *v = c->virt;
	if (v->tail) { /* every frame goes to the gateway, in order */
		ctr_add(&S(c)->ctr.frames_out, 1);
		if (S(c)->tail &&
		    tail_relay_served_data(S(c)->tail, v->node, v->tail_id, p,
					   n) == 0)
			return;
		/* a hole in the device's stream: end the tail, the gateway
		 * re-subscribes from the device's acknowledged seq */
		if (c->state != CS_CLOSING)
			loop_conn_close(c, "tail frame refused by the peer link");
		return;
	}
	size_t off = 0;
	while (off + PARLEY_PROTO_HEADER_SIZE <= n) {
		size_t len = 4 + (size_t)le_get32(p + off);
		if (len > n - off)
			break; /* cannot happen: whole frames only */
		if (!v->replied && le_get32(p + off + 8) == v->rid) {
			v->replied = true;
			if (S(c)->proxy)
				proxy_served_reply(S(c)->proxy, v->node, v->fwd_id,
						   p + off, (uint32_t)len);
		}
		off += len;
	}
	ctr_add(&S(c)->ctr.frames_out, 1);
}

/* A virtual connection closes once its request is answered. */
static void virt_maybe_close(struct conn *c)
{
	if (c->virt && c->virt->replied && !c->inflight &&
	    c->state != CS_CLOSING)
		loop_conn_close(c, "forwarded request answered");
}

struct conn *conn_virtual_new(struct loop *lp, uint32_t slot, uint32_t gen,
			      uint64_t node, const struct proxy_req *r)
{
	struct srv *s = loop_srv(lp);
	struct conn *c = calloc(1, sizeof *c);
	struct conn_ident *id = calloc(1, sizeof *id);
	struct conn_virt *v = calloc(1, sizeof *v);
	if (!c || !id || !v || r->ulen > PARLEY_PROTO_MAX_USER_ID ||
	    r->dlen >= sizeof id->device) {
		free(c);
		free(id);
		free(v);
		return NULL;
	}
	c->sk.ref = (struct conn_ref){.lp = lp, .slot = slot, .gen = gen};
	c->sk.fd = -1;
	c->last_rx_ns = parley_mono_ns();
	uint32_t ms = s->lim.forward_timeout_ms ? s->lim.forward_timeout_ms
						: PROXY_DEFAULT_TIMEOUT_MS;
	c->deadline_ns = c->last_rx_ns + (uint64_t)ms * 1000000ull;
	c->state = CS_READY;
	id->ulen = r->ulen;
	memcpy(id->user, r->user, r->ulen);
	id->dlen = r->dlen;
	memcpy(id->device, r->device, r->dlen);
	c->id = id;
	*v = (struct conn_virt){.node = node, .fwd_id = r->fwd_id, .rid = r->rid};
	c->virt = v;
	return c;
}

void conn_virtual_run(struct conn *c, const uint8_t *frame, uint32_t n)
{
	struct parley_frame f;
	int rc = parley_proto_frame_decode(frame, n, PARLEY_PROTO_MAX_FRAME_HARD,
					   &f);
	if (rc != (int)n || (f.flags & PARLEY_FLAG_ZSTD) ||
	    !proxy_type_forwardable(f.type))
		conn_error(c, c->virt->rid, PARLEY_EPROTO, false, 0,
			   "not a forwardable request");
	else
		handle_frame(c, &f);
	if (!c->virt->replied && !c->inflight && c->state != CS_CLOSING)
		conn_error(c, c->virt->rid, PARLEY_EAGAIN, false, 100,
			   "forwarded request not answered");
	virt_maybe_close(c);
	conn_oom_close(c);
}

/* ---- posted messages --------------------------------------------------------------------------- */

static void ack_latency(struct srv *s, uint64_t t0)
{
	uint64_t ns = parley_mono_ns() - t0;
	ctr_add(&s->ctr.ack_lat_ns_sum, ns);
	ctr_add(&s->ctr.ack_lat_count, 1);
	double sec = (double)ns / 1e9;
	unsigned b = 0;
	while (b < 10 && sec > srv_ack_lat_bounds_s[b])
		b++;
	ctr_add(&s->ctr.ack_lat_bucket[b], 1);
}

/* A buffer the connection needed could not be allocated during this
 * entry point (c->oom): close it now, at the top level, where nothing of
 * it is in use any more. */
static void conn_oom_close(struct conn *c)
{
	if (c->oom && c->state != CS_CLOSING)
		loop_conn_close(c, "out of memory");
}

void conn_on_recv(struct conn *c, const uint8_t *p, uint32_t n)
{
	on_recv(c, p, n);
	conn_oom_close(c);
}

void conn_tick(struct conn *c, uint64_t now_ns, uint64_t now_ms)
{
	on_tick(c, now_ns, now_ms);
	conn_oom_close(c);
}

void conn_drain(struct conn *c, uint16_t reason, uint32_t retry_after_ms,
		const char *text)
{
	on_drain(c, reason, retry_after_ms, text);
	conn_oom_close(c);
}

void conn_on_msg(struct conn *c, struct lmsg *m)
{
	switch (m->kind) {
	case LM_FRAME:
		if (m->done_req && c->fwd_saved) {
			uint32_t rid = le_get32(m->data + 8);
			enum fwd_result fr =
				m->u.frame.notleader
					? fwd_instead(c, rid, m->u.frame.leader)
					: FWD_NO;
			if (fr == FWD_SENT)
				break; /* still in flight: the proxy answers */
			saved_drop(c, rid);
			if (fr == FWD_FULL) {
				PARLEY_ASSERT(c->inflight > 0);
				c->inflight--;
				conn_error(c, rid, PARLEY_EFULL, false, 0,
					   "too many requests forwarded to the "
					   "leader");
				break;
			}
		}
		if (m->done_req) {
			PARLEY_ASSERT(c->inflight > 0);
			c->inflight--;
		}
		if (m->u.frame.ack != LM_ACK_NONE) {
			ack_latency(S(c), m->u.frame.t0_ns);
			srv_hist_since(&S(c)->stages.send[SRV_SEND_REPLY],
				       m->u.frame.t_durable_ns, parley_mono_ns());
			ctr_add(&S(c)->ctr.appends, 1);
			if (m->u.frame.ack == LM_ACK_DUPLICATE)
				ctr_add(&S(c)->ctr.duplicates, 1);
		}
		conn_write(c, m->data, m->len);
		break;
	case LM_INBOX:
		on_inbox(c, m);
		break;
	case LM_EVENT:
		on_event(c, m);
		break;
	case LM_SUB_CLOSED:
		if (c->sub) {
			PLOG_W("conn", "subscription closed by the engine",
			       "user=%s err=%s", c->id ? c->id->user : "-",
			       parley_errname(m->u.sub_closed.err));
			/* The engine frees a closed subscription on unsubscribe. */
			sub_end(c);
			on_drain(c, PARLEY_GOAWAY_DRAIN, 1000,
				   "inbox unavailable, reconnect");
		}
		break;
	case LM_SYNC_DONE:
		conn_req_sync_done(c, m);
		break;
	case LM_PUSH: /* TYPING_PUSH / PRESENCE (presence.h) */
		conn_write(c, m->data, m->len);
		break;
	case LM_LIVE: /* a large group's EVENT (live.h) */
		on_live(c, m);
		break;
	case LM_EARLY: /* a 1:1 message durable, its pointer not yet */
		on_early(c, m);
		break;
	case LM_TAIL: /* a remote tail's frames or end (tail_relay.h) */
		on_tail(c, m);
		break;
	case LM_TAIL_ACK: /* tail virtual connection: the device's ack */
		if (c->virt && c->virt->tail && c->sub &&
		    m->u.tail.seq > c->ev_acked && m->u.tail.seq < c->ev_next)
			conn_inbox_ack(c, m->u.tail.seq);
		break;
	case LM_TAIL_CLOSE:
		if (c->virt && c->virt->tail && c->state != CS_CLOSING)
			loop_conn_close(c, "inbox tail closed by its gateway");
		break;
	default:
		break;
	}
	if (c->state == CS_DRAINING && !c->oq_head && !c->inflight &&
	    !c->resolving && !c->pend_head && !c->sync_busy)
		loop_conn_close(c, "drained");
	virt_maybe_close(c);
	conn_oom_close(c);
}

/* ---- remote inbox tails (tail_relay.h, docs/CLUSTER.md §3.3) ----------------------------- */

/*
 * Gateway. A device whose inbox partition this node holds no replica of
 * gets its SYNC run on the partition's leader, on a tail virtual
 * connection there (below); its frames come back as LM_TAIL and are
 * written here: SYNC_OK once, each inbox EVENT once and in inbox order
 * (struct tail_gw), large groups' live EVENTs as they come. The device's
 * EVENT_ACKs go to the holder, whose connection keeps the event window,
 * the device cursor and the delivered receipts, as a local tail's does.
 * When the tail breaks (the link to the holder went down, the holder
 * ended the tail or drains, a subscription skipped) the connection opens
 * a new one, to the partition's leader as then known, from the device's
 * acknowledged seq + 1 (what it may not hold), after TAIL_RESUB_MIN_MS
 * doubling up to TAIL_RESUB_MAX_MS, and drops what it already wrote; after
 * TAIL_RESUB_GIVEUP_MS without a tail the device is told to reconnect
 * (GOAWAY, as when a local subscription closes).
 *
 *     SYNC -> opening --SYNC_OK--> synced <--SYNC_OK-- waiting (re-open)
 *               |  ERROR / END             |  end, gap,        ^    |
 *               v  (the device's answer)   |  GOAWAY DRAIN     |    | give up:
 *             none                         +-------------------+    v GOAWAY
 */
struct conn_rtail {
	struct tail_gw g;
	uint64_t id;      /* the subscription open now, 0 = none (waiting) */
	uint32_t rid;     /* the device's SYNC */
	uint32_t partition;
	uint64_t retry_ns, giveup_ns;
	uint32_t backoff_ms;
};

bool conn_tail_active(const struct conn *c)
{
	return c->rt && c->rt->g.synced;
}

/* Opens a subscription from `from` at p's leader: 0 or < 0. */
static int rt_open(struct conn *c, uint64_t from)
{
	struct srv *s = S(c);
	struct conn_rtail *rt = c->rt;
	uint64_t node = route_partition_leader(s->engine, rt->partition);
	struct parley_msg q = {.type = PARLEY_T_SYNC};
	q.sync.from_inbox_seq = from;
	uint8_t f[64];
	int n = parley_proto_encode(f, sizeof f, rt->rid, &q);
	if (n <= 0)
		return -PARLEY_EINVAL;
	uint64_t id = 0;
	int rc = tail_relay_open(s->tail, node, &c->sk.ref, c->id->user,
				 c->id->ulen, c->id->device, c->id->dlen, f,
				 (uint32_t)n, &id);
	if (rc == 0)
		rt->id = id;
	return rc;
}

/* Ends the remote tail (the connection closes, drains or is cut off); a
 * SYNC still unanswered is no longer in flight. */
static void rt_free(struct conn *c)
{
	struct conn_rtail *rt = c->rt;
	if (!rt)
		return;
	if (rt->id && S(c)->tail)
		tail_relay_close(S(c)->tail, rt->id);
	if (!rt->g.synced && c->sync_busy) {
		c->sync_busy = false;
		PARLEY_ASSERT(c->inflight > 0);
		c->inflight--;
	}
	free(rt);
	c->rt = NULL;
}

/* The first SYNC ends with an ERROR (frame f, or a code): no tail. */
static void rt_fail(struct conn *c, const uint8_t *frame, uint32_t n,
		    uint32_t code, const char *why)
{
	uint32_t rid = c->rt->rid;
	rt_free(c); /* sync_busy and inflight too */
	if (frame)
		conn_write(c, frame, n);
	else
		conn_error(c, rid, code, false, 0, why);
}

/* The subscription broke: close it, try again later. */
static void rt_broken(struct conn *c, const char *why)
{
	struct conn_rtail *rt = c->rt;
	if (rt->id) {
		tail_relay_close(S(c)->tail, rt->id);
		rt->id = 0;
	}
	if (!rt->g.synced) { /* the device's SYNC was not answered yet */
		rt_fail(c, NULL, 0, PARLEY_EAGAIN, "inbox tail unavailable, retry");
		return;
	}
	uint64_t now = parley_mono_ns();
	rt->backoff_ms = rt->backoff_ms ? PARLEY_MIN(rt->backoff_ms * 2,
						     TAIL_RESUB_MAX_MS)
					: TAIL_RESUB_MIN_MS;
	rt->retry_ns = now + (uint64_t)rt->backoff_ms * 1000000ull;
	if (!rt->giveup_ns)
		rt->giveup_ns = now + (uint64_t)TAIL_RESUB_GIVEUP_MS * 1000000ull;
	tail_relay_count(S(c)->tail, true, false);
	PLOG_I("conn", "remote inbox tail broken, re-subscribing",
	       "user=%s why=\"%s\" acked=%" PRIu64 " next=%" PRIu64,
	       c->id->user, why, rt->g.acked, rt->g.next);
}

/* Passes the ack the holder is owed; one refused waits for the tick. */
static void rt_ack_flush(struct conn *c)
{
	struct conn_rtail *rt = c->rt;
	uint64_t before = rt->g.ack_sent;
	uint64_t up = rt->id ? tail_gw_ack_due(&rt->g) : 0;
	if (up && tail_relay_ack(S(c)->tail, rt->id, up) != 0)
		rt->g.ack_sent = before;
}

static void rt_ack(struct conn *c, uint64_t up)
{
	struct conn_rtail *rt = c->rt;
	uint64_t before = rt->g.ack_sent;
	uint64_t a = tail_gw_ack(&rt->g, up);
	c->ev_acked = rt->g.acked;
	/* the holder stores the cursor and reports the receipts: nothing is
	 * owed here, also once the tail is gone (close, drain) */
	c->cursor_stored = c->rcpt_acked = c->ev_acked;
	if (a && rt->id && tail_relay_ack(S(c)->tail, rt->id, a) != 0)
		rt->g.ack_sent = before;
}

/* conn_tick: re-subscribe when due, pass a refused ack again; true when
 * the connection was told to go. */
static bool rt_tick(struct conn *c, uint64_t now_ns)
{
	struct conn_rtail *rt = c->rt;
	if (rt->id) {
		rt_ack_flush(c);
		return false;
	}
	if (!rt->g.synced || now_ns < rt->retry_ns || c->state != CS_READY)
		return false;
	if (now_ns >= rt->giveup_ns) {
		PLOG_W("conn", "remote inbox tail not re-established",
		       "user=%s", c->id->user);
		on_drain(c, PARLEY_GOAWAY_DRAIN, 1000,
			 "inbox unavailable, reconnect");
		return true;
	}
	uint64_t from = tail_gw_resub(&rt->g);
	if (rt_open(c, from) != 0) {
		rt->backoff_ms = PARLEY_MIN(rt->backoff_ms * 2, TAIL_RESUB_MAX_MS);
		rt->retry_ns = now_ns + (uint64_t)rt->backoff_ms * 1000000ull;
	}
	return false;
}

bool conn_tail_sync(struct conn *c, uint32_t rid, uint64_t from_inbox_seq)
{
	struct srv *s = S(c);
	if (!s->tail || c->virt || !c->id || !s->engine)
		return false;
	char key[256];
	int kl = chat_key_inbox(key, c->id->user, c->id->ulen);
	if (kl <= 0)
		return false;
	uint32_t p = pe_partition_of(s->engine, key, (size_t)kl);
	if (route_holds(p))
		return false;
	struct conn_rtail *rt = calloc(1, sizeof *rt);
	if (!rt) {
		conn_error(c, rid, PARLEY_ENOMEM, false, 0, "out of memory");
		return true;
	}
	rt->rid = rid;
	rt->partition = p;
	c->rt = rt;
	c->sync_busy = true;
	c->inflight++;
	int rc = rt_open(c, from_inbox_seq);
	if (rc) {
		if (rc == -PARLEY_ENOTLEADER)
			route_note(p, 0); /* the hint names p's leader */
		rt_fail(c, NULL, 0, wire_code(rc), parley_strerror(rc));
	}
	return true;
}

/* The holder's frames (or the end of its tail), in order. */
static void on_tail(struct conn *c, struct lmsg *m)
{
	static _Thread_local struct parley_msg tm;
	struct conn_rtail *rt = c->rt;
	if (!rt || !rt->id || m->u.tail.id != rt->id)
		return; /* a subscription given up meanwhile */
	if (m->u.tail.end) {
		rt->id = 0; /* the relay forgot it */
		rt_broken(c, "the holder ended the tail");
		return;
	}
	struct srv *s = S(c);
	uint32_t off = 0;
	while (off < m->len && c->rt == rt && rt->id &&
	       c->state != CS_CLOSING) {
		struct parley_frame f;
		int n = parley_proto_frame_decode(m->data + off, m->len - off,
						  PARLEY_PROTO_MAX_FRAME_HARD, &f);
		if (n <= 0 || parley_proto_decode(&f, &tm) != 0) {
			rt_broken(c, "undecodable frame");
			return;
		}
		const uint8_t *fp = m->data + off;
		off += (uint32_t)n;
		switch (f.type) {
		case PARLEY_T_SYNC_OK: {
			if (f.request_id != rt->rid)
				break;
			bool first = !rt->g.synced;
			tail_gw_synced(&rt->g, tm.sync_ok.start_inbox_seq);
			c->ev_next = rt->g.next;
			c->ev_acked = rt->g.acked;
			rt->backoff_ms = 0;
			rt->giveup_ns = 0;
			if (first) {
				c->sync_busy = false;
				PARLEY_ASSERT(c->inflight > 0);
				c->inflight--;
				c->rcpt_acked = c->cursor_stored = c->ev_acked;
				conn_write(c, fp, (uint32_t)n);
			}
			break;
		}
		case PARLEY_T_EVENT: {
			uint64_t seq = tm.event.inbox_seq;
			if (!seq) { /* a large group's live EVENT */
				conn_write(c, fp, (uint32_t)n);
				ctr_add(&s->ctr.events_out, 1);
				break;
			}
			if (!rt->g.synced)
				break; /* cannot happen: SYNC_OK comes first */
			enum tail_gw_verdict v = tail_gw_event(&rt->g, seq);
			if (v == TAIL_GW_GAP) {
				rt_broken(c, "inbox seq out of order");
				return;
			}
			if (v == TAIL_GW_DROP) {
				tail_relay_count(s->tail, false, true);
				break;
			}
			c->ev_next = rt->g.next;
			conn_write(c, fp, (uint32_t)n);
			ctr_add(&s->ctr.events_out, 1);
			break;
		}
		case PARLEY_T_ERROR:
			if (f.request_id != rt->rid || !rt->rid)
				break; /* not about the SYNC: the holder's own */
			if (!rt->g.synced) {
				rt_fail(c, fp, (uint32_t)n, 0, NULL);
				return;
			}
			rt_broken(c, "re-subscription refused");
			return;
		case PARLEY_T_GOAWAY:
			if (tm.goaway.reason == PARLEY_GOAWAY_SLOW_CONSUMER &&
			    rt->g.synced) {
				/* the device did not acknowledge: the answer
				 * a slow device gets on one node */
				conn_slow_consumer(c, "events not acknowledged");
				return;
			}
			rt_broken(c, "the holder let go of the tail");
			return;
		default:
			break; /* nothing else belongs to the device */
		}
	}
	if (c->rt == rt && rt->id)
		rt_ack_flush(c);
}

/* ---- holder: tail virtual connections ---- */

struct conn *conn_tail_virtual_new(struct loop *lp, uint32_t slot, uint32_t gen,
				   uint64_t node, const struct tail_msg *m)
{
	struct parley_frame f;
	if (parley_proto_frame_decode(m->body, m->blen,
				      PARLEY_PROTO_MAX_FRAME_HARD, &f) <= 0)
		return NULL;
	struct proxy_req r = {.fwd_id = 0, .user = m->user, .device = m->device,
			      .ulen = m->ulen, .dlen = m->dlen,
			      .frame = m->body, .flen = m->blen,
			      .rid = f.request_id, .type = f.type};
	struct conn *c = conn_virtual_new(lp, slot, gen, node, &r);
	if (!c)
		return NULL;
	c->deadline_ns = 0; /* lives until closed */
	c->virt->tail = true;
	c->virt->tail_id = m->id;
	return c;
}

void conn_tail_virtual_run(struct conn *c, const uint8_t *frame, uint32_t n)
{
	struct parley_frame f;
	int rc = parley_proto_frame_decode(frame, n, PARLEY_PROTO_MAX_FRAME_HARD,
					   &f);
	if (rc != (int)n || (f.flags & PARLEY_FLAG_ZSTD) ||
	    f.type != PARLEY_T_SYNC) {
		conn_error(c, c->virt->rid, PARLEY_EPROTO, false, 0,
			   "not a SYNC");
		if (c->state != CS_CLOSING)
			loop_conn_close(c, "bad tail request");
	} else {
		handle_frame(c, &f);
	}
	conn_oom_close(c);
}
