/*
 * proxy.c — client request forwarding over the peer link (proxy.h): the
 * gateway's table of forwards in flight, the leader's count of requests
 * it serves per node, the FWD_REQ / FWD_REP codec and the metrics.
 *
 * The table: forwards in flight are kept twice, in a hash by id (the
 * reply finds its forward) and in a list in the order they were sent,
 * which is also the order their time runs out (one timeout for all), so
 * proxy_tick only looks at the list's head. Per node a count bounds them
 * (invariant 2 of proxy.h).
 *
 *   proxy_forward --insert--> [in flight] --FWD_REP-----> io.reply(frame)
 *                                  |------timeout------> io.reply(AGAIN)
 *                                  |------link down----> io.reply(AGAIN)
 *                                  +------unsent-------> io.reply(AGAIN)
 *
 * Each path removes the forward under the mutex before it calls io.reply,
 * so exactly one of them answers it.
 *
 * No I/O here: the peer link, the clock, the loops and the connections
 * are the caller's (struct proxy_io, now_ms arguments), so the unit test
 * (tests/unit/server/parleyd/test_proxy.c) drives it alone.
 *
 * Threads: any; one mutex over the table and the counts; the io
 * callbacks run without it.
 */
#include "proxy.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_proto.h"
#include "srv.h"

#define PROXY_BUCKETS 1024u /* hash buckets (power of 2) */

/* a forward in flight (gateway side); not peer_fwd.h's struct fwd */
struct px_fwd {
	struct px_fwd *hnext;        /* hash chain */
	struct px_fwd *prev, *next;  /* send order = deadline order */
	uint64_t id, node;
	uint64_t deadline_ms;
	uint64_t t0_ns;
	struct conn_ref to;
	uint32_t rid;
};

struct node_count {
	uint64_t node;
	uint32_t fwd;   /* gateway: forwards in flight to it */
	uint32_t serve; /* leader: its requests running here */
};

struct proxy {
	struct proxy_config cfg;
	struct proxy_io io;
	pthread_mutex_t mu;
	struct px_fwd *buckets[PROXY_BUCKETS];
	struct px_fwd *head, *tail;
	uint64_t next_id;
	uint64_t inflight;
	struct node_count nodes[PROXY_MAX_NODES];
	uint32_t nnodes;
	atomic_bool serving;
	_Atomic uint64_t out[PROXY_OUT_COUNT];
	_Atomic uint64_t late, served, serving_now, served_refused, bad_frames;
	struct srv_hist lat; /* forward -> reply passed on */
};

#define ADD(x, v) atomic_fetch_add_explicit(&(x), (v), memory_order_relaxed)
#define GET(x) atomic_load_explicit(&(x), memory_order_relaxed)

int proxy_new(const struct proxy_config *cfg, const struct proxy_io *io,
	      struct proxy **out)
{
	struct proxy *px = calloc(1, sizeof *px);
	if (!px)
		return -PARLEY_ENOMEM;
	px->cfg = *cfg;
	if (!px->cfg.max_inflight)
		px->cfg.max_inflight = PROXY_DEFAULT_MAX_INFLIGHT;
	if (!px->cfg.timeout_ms)
		px->cfg.timeout_ms = PROXY_DEFAULT_TIMEOUT_MS;
	px->io = *io;
	px->next_id = 1;
	pthread_mutex_init(&px->mu, NULL);
	*out = px;
	return 0;
}

void proxy_free(struct proxy *px)
{
	if (!px)
		return;
	struct px_fwd *f = px->head;
	while (f) {
		struct px_fwd *n = f->next;
		free(f);
		f = n;
	}
	pthread_mutex_destroy(&px->mu);
	free(px);
}

void proxy_set_serving(struct proxy *px, bool on)
{
	atomic_store(&px->serving, on);
}

bool proxy_forwarding(const struct proxy *px)
{
	return px->cfg.forward;
}

bool proxy_type_forwardable(uint16_t type)
{
	switch (type) {
	case PARLEY_T_CONV_OPEN:
	case PARLEY_T_SEND:
	case PARLEY_T_HISTORY:
	case PARLEY_T_CONV_LIST:
	case PARLEY_T_EDIT:
	case PARLEY_T_DELETE:
	case PARLEY_T_RETENTION:
	case PARLEY_T_READ_MARKER:
	case PARLEY_T_RECEIPTS:
	case PARLEY_T_GROUP_CREATE:
	case PARLEY_T_GROUP_ADD:
	case PARLEY_T_GROUP_REMOVE:
	case PARLEY_T_GROUP_LEAVE:
	case PARLEY_T_GROUP_ROLE:
	case PARLEY_T_GROUP_INFO:
	case PARLEY_T_GROUP_SET:
	case PARLEY_T_GROUP_CATCHUP:
		return true;
	default:
		return false;
	}
}

/* ---- codec ---------------------------------------------------------------------- */

uint32_t proxy_req_hdr_encode(uint8_t out[PROXY_REQ_HDR_MAX], uint64_t fwd_id,
			      const char *user, uint8_t ulen,
			      const char *device, uint8_t dlen)
{
	le_put64(out, fwd_id);
	out[8] = ulen;
	out[9] = dlen;
	le_put16(out + 10, 0);
	memcpy(out + PROXY_REQ_HDR, user, ulen);
	if (dlen)
		memcpy(out + PROXY_REQ_HDR + ulen, device, dlen);
	return PROXY_REQ_HDR + ulen + dlen;
}

/* p[0..n) is exactly one whole client frame: its type and request id. */
static int one_frame(const uint8_t *p, uint32_t n, uint16_t *type,
		     uint32_t *rid)
{
	struct parley_frame f;
	int rc = parley_proto_frame_decode(p, n, PARLEY_PROTO_MAX_FRAME_HARD, &f);
	if (rc != (int)n)
		return -PARLEY_EPROTO;
	*type = f.type;
	*rid = f.request_id;
	return 0;
}

int proxy_req_decode(const uint8_t *p, uint32_t n, struct proxy_req *r)
{
	if (n < PROXY_REQ_HDR)
		return -PARLEY_EPROTO;
	memset(r, 0, sizeof *r);
	r->fwd_id = le_get64(p);
	r->ulen = p[8];
	r->dlen = p[9];
	if (le_get16(p + 10) != 0 || r->ulen == 0 ||
	    r->ulen > PARLEY_PROTO_MAX_USER_ID ||
	    (uint64_t)PROXY_REQ_HDR + r->ulen + r->dlen > n)
		return -PARLEY_EPROTO;
	r->user = (const char *)p + PROXY_REQ_HDR;
	r->device = (const char *)p + PROXY_REQ_HDR + r->ulen;
	r->frame = p + PROXY_REQ_HDR + r->ulen + r->dlen;
	r->flen = n - (PROXY_REQ_HDR + r->ulen + r->dlen);
	if (!parley_proto_user_id_valid(r->user, r->ulen))
		return -PARLEY_EPROTO;
	return one_frame(r->frame, r->flen, &r->type, &r->rid);
}

int proxy_rep_decode(const uint8_t *p, uint32_t n, uint64_t *fwd_id,
		     uint16_t *type, uint32_t *rid)
{
	if (n < PROXY_REP_HDR ||
	    one_frame(p + PROXY_REP_HDR, n - PROXY_REP_HDR, type, rid))
		return -PARLEY_EPROTO;
	*fwd_id = le_get64(p);
	return 0;
}

/* An ERROR frame for request rid into buf (>= 256 bytes); its length. */
static uint32_t error_frame(uint8_t *buf, size_t cap, uint32_t rid,
			    uint32_t code, uint32_t retry, const char *text)
{
	struct parley_msg m = {.type = PARLEY_T_ERROR};
	m.error.code = code;
	m.error.retry_after_ms = retry;
	m.error.text = parley_str_c(text);
	int n = parley_proto_encode(buf, cap, rid, &m);
	PARLEY_ASSERT(n > 0); /* a short text always fits */
	return (uint32_t)n;
}

/* ---- the table (under mu) ------------------------------------------------------- */

static struct node_count *node_of(struct proxy *px, uint64_t node, bool add)
{
	for (uint32_t i = 0; i < px->nnodes; i++)
		if (px->nodes[i].node == node)
			return &px->nodes[i];
	if (!add || px->nnodes == PROXY_MAX_NODES)
		return NULL;
	struct node_count *c = &px->nodes[px->nnodes++];
	*c = (struct node_count){.node = node};
	return c;
}

static void px_fwd_link(struct proxy *px, struct px_fwd *f)
{
	struct px_fwd **b = &px->buckets[f->id & (PROXY_BUCKETS - 1)];
	f->hnext = *b;
	*b = f;
	f->prev = px->tail;
	f->next = NULL;
	if (px->tail)
		px->tail->next = f;
	else
		px->head = f;
	px->tail = f;
	px->inflight++;
	node_of(px, f->node, true)->fwd++;
}

static void px_fwd_unlink(struct proxy *px, struct px_fwd *f)
{
	struct px_fwd **b = &px->buckets[f->id & (PROXY_BUCKETS - 1)];
	while (*b != f)
		b = &(*b)->hnext;
	*b = f->hnext;
	if (f->prev)
		f->prev->next = f->next;
	else
		px->head = f->next;
	if (f->next)
		f->next->prev = f->prev;
	else
		px->tail = f->prev;
	px->inflight--;
	struct node_count *c = node_of(px, f->node, false);
	PARLEY_ASSERT(c && c->fwd > 0);
	c->fwd--;
}

static struct px_fwd *px_fwd_find(struct proxy *px, uint64_t id)
{
	struct px_fwd *f = px->buckets[id & (PROXY_BUCKETS - 1)];
	while (f && f->id != id)
		f = f->hnext;
	return f;
}

/* Ends a forward removed from the table with ERROR AGAIN (no lock held). */
static void px_fwd_again(struct proxy *px, struct px_fwd *f, enum proxy_outcome o,
		      const char *why)
{
	uint8_t buf[256];
	uint32_t n = error_frame(buf, sizeof buf, f->rid, PARLEY_EAGAIN, 100, why);
	ADD(px->out[o], 1);
	px->io.reply(px->io.arg, &f->to, buf, n);
	free(f);
}

/* ---- gateway -------------------------------------------------------------------- */

int proxy_forward(struct proxy *px, uint64_t leader, const struct conn_ref *to,
		  const char *user, uint8_t ulen, const char *device,
		  uint8_t dlen, const uint8_t *frame, uint32_t n,
		  uint64_t now_ms)
{
	uint64_t node = px->cfg.forward ? leader : 0;
	if (!node || !px->io.link_up(px->io.arg, node)) {
		ADD(px->out[PROXY_OUT_NO_LEADER], 1);
		return -PARLEY_ENOTLEADER;
	}
	if (n < PARLEY_PROTO_HEADER_SIZE)
		return -PARLEY_EINVAL;
	struct px_fwd *f = malloc(sizeof *f);
	if (!f)
		return -PARLEY_ENOMEM;
	pthread_mutex_lock(&px->mu);
	struct node_count *c = node_of(px, node, true);
	if (!c || c->fwd >= px->cfg.max_inflight) {
		pthread_mutex_unlock(&px->mu);
		free(f);
		ADD(px->out[PROXY_OUT_FULL], 1);
		return -PARLEY_EFULL;
	}
	*f = (struct px_fwd){.id = px->next_id++, .node = node,
			  .deadline_ms = now_ms + px->cfg.timeout_ms,
			  .t0_ns = parley_mono_ns(), .to = *to,
			  .rid = le_get32(frame + 8)};
	uint64_t id = f->id;
	px_fwd_link(px, f);
	pthread_mutex_unlock(&px->mu);
	uint8_t hdr[PROXY_REQ_HDR_MAX];
	uint32_t hl = proxy_req_hdr_encode(hdr, id, user, ulen, device, dlen);
	int rc = px->io.send(px->io.arg, node, PROXY_FRAME_REQ, hdr, hl,
			     frame, n);
	if (rc) {
		/* not queued: take it back. If another path (a link that went
		 * down, the timeout) took it meanwhile, that path has answered
		 * it already: it is over, and the caller must count it in
		 * flight like a sent one (its answer is posted). */
		pthread_mutex_lock(&px->mu);
		f = px_fwd_find(px, id);
		if (f)
			px_fwd_unlink(px, f);
		pthread_mutex_unlock(&px->mu);
		if (!f)
			return 0;
		free(f);
		ADD(px->out[PROXY_OUT_FULL], 1);
		return rc == -PARLEY_ENOMEM ? rc : -PARLEY_EFULL;
	}
	return 0;
}

static void on_reply(struct proxy *px, uint64_t from, const uint8_t *p,
		     uint32_t n)
{
	uint64_t id;
	uint16_t type;
	uint32_t rid;
	if (proxy_rep_decode(p, n, &id, &type, &rid)) {
		ADD(px->bad_frames, 1);
		return;
	}
	pthread_mutex_lock(&px->mu);
	struct px_fwd *f = px_fwd_find(px, id);
	if (f && f->node != from)
		f = NULL; /* another node's id space: not ours to end */
	if (f)
		px_fwd_unlink(px, f);
	pthread_mutex_unlock(&px->mu);
	if (!f) {
		ADD(px->late, 1);
		return;
	}
	srv_hist_since(&px->lat, f->t0_ns, parley_mono_ns());
	ADD(px->out[PROXY_OUT_REPLIED], 1);
	/* the leader ran the client's own frame: the reply carries its
	 * request id already; written as the client's all the same */
	uint32_t fl = n - PROXY_REP_HDR;
	uint8_t small[512];
	uint8_t *b = fl <= sizeof small ? small : malloc(fl);
	if (b) {
		memcpy(b, p + PROXY_REP_HDR, fl);
		le_put32(b + 8, f->rid);
		px->io.reply(px->io.arg, &f->to, b, fl);
		if (b != small)
			free(b);
	} else {
		uint8_t e[256];
		uint32_t en = error_frame(e, sizeof e, f->rid, PARLEY_ENOMEM,
					  0, "out of memory");
		px->io.reply(px->io.arg, &f->to, e, en);
	}
	free(f);
}

void proxy_on_unsent(struct proxy *px, uint64_t to, uint8_t type,
		     const uint8_t *p, uint32_t n, int err)
{
	(void)err;
	if (type != PROXY_FRAME_REQ || n < 8)
		return; /* a reply that did not leave: the gateway times out */
	uint64_t id = le_get64(p);
	pthread_mutex_lock(&px->mu);
	struct px_fwd *f = px_fwd_find(px, id);
	if (f && f->node == to)
		px_fwd_unlink(px, f);
	else
		f = NULL;
	pthread_mutex_unlock(&px->mu);
	if (f)
		px_fwd_again(px, f, PROXY_OUT_UNSENT,
			  "forward to the leader failed, retry");
}

/* Takes every forward matching (node, or deadline <= now) off the table
 * into a private list, then answers them without the lock. */
static void fail_where(struct proxy *px, bool by_node, uint64_t node,
		       uint64_t now_ms, enum proxy_outcome o, const char *why)
{
	struct px_fwd *list = NULL, **tail = &list;
	pthread_mutex_lock(&px->mu);
	struct px_fwd *f = px->head;
	while (f) {
		struct px_fwd *n = f->next;
		bool hit = by_node ? f->node == node : f->deadline_ms <= now_ms;
		if (!by_node && !hit)
			break; /* the list is in deadline order */
		if (hit) {
			px_fwd_unlink(px, f);
			f->next = NULL;
			*tail = f;
			tail = &f->next;
		}
		f = n;
	}
	pthread_mutex_unlock(&px->mu);
	while (list) {
		struct px_fwd *n = list->next;
		px_fwd_again(px, list, o, why);
		list = n;
	}
}

void proxy_link_down(struct proxy *px, uint64_t node)
{
	fail_where(px, true, node, 0, PROXY_OUT_LINK_DOWN,
		   "link to the leader lost, retry");
}

void proxy_tick(struct proxy *px, uint64_t now_ms)
{
	fail_where(px, false, 0, now_ms, PROXY_OUT_TIMEOUT,
		   "forwarded request timed out, retry");
}

/* ---- leader --------------------------------------------------------------------- */

static void send_reply(struct proxy *px, uint64_t node, uint64_t fwd_id,
		       const uint8_t *frame, uint32_t n)
{
	uint8_t h[PROXY_REP_HDR];
	le_put64(h, fwd_id);
	/* a reply that cannot be queued is lost: the gateway times out and
	 * the client retries (a SEND with its client_msg_id) */
	(void)px->io.send(px->io.arg, node, PROXY_FRAME_REP, h, sizeof h,
			  frame, n);
}

static void on_request(struct proxy *px, uint64_t from, const uint8_t *p,
		       uint32_t n)
{
	struct proxy_req r;
	if (proxy_req_decode(p, n, &r)) {
		/* nothing to answer it by: the gateway times it out */
		ADD(px->bad_frames, 1);
		return;
	}
	const char *why = NULL;
	uint32_t code = PARLEY_EAGAIN;
	pthread_mutex_lock(&px->mu);
	struct node_count *c = node_of(px, from, true);
	if (!atomic_load(&px->serving)) {
		why = "node not serving, retry";
	} else if (!c || c->serve >= px->cfg.max_inflight) {
		why = "too many forwarded requests, retry";
		code = PARLEY_EFULL;
	} else {
		c->serve++;
	}
	pthread_mutex_unlock(&px->mu);
	if (!why) {
		ADD(px->serving_now, 1);
		if (px->io.serve(px->io.arg, from, &r, p, n) == 0) {
			ADD(px->served, 1);
			return;
		}
		proxy_served_done(px, from);
		why = "node not serving, retry";
	}
	ADD(px->served_refused, 1);
	uint8_t e[256];
	uint32_t en = error_frame(e, sizeof e, r.rid, code, 100, why);
	send_reply(px, from, r.fwd_id, e, en);
}

void proxy_served_reply(struct proxy *px, uint64_t node, uint64_t fwd_id,
			const uint8_t *frame, uint32_t n)
{
	send_reply(px, node, fwd_id, frame, n);
}

void proxy_served_refuse(struct proxy *px, uint64_t node,
			 const struct proxy_req *r, const char *why)
{
	uint8_t e[256];
	uint32_t en = error_frame(e, sizeof e, r->rid, PARLEY_EAGAIN, 100, why);
	send_reply(px, node, r->fwd_id, e, en);
	ADD(px->served_refused, 1);
	proxy_served_done(px, node);
}

void proxy_served_done(struct proxy *px, uint64_t node)
{
	pthread_mutex_lock(&px->mu);
	struct node_count *c = node_of(px, node, false);
	PARLEY_ASSERT(c && c->serve > 0);
	c->serve--;
	pthread_mutex_unlock(&px->mu);
	atomic_fetch_sub_explicit(&px->serving_now, 1, memory_order_relaxed);
}

void proxy_on_frame(struct proxy *px, uint64_t from, uint8_t type,
		    const uint8_t *p, uint32_t n)
{
	if (type == PROXY_FRAME_REQ)
		on_request(px, from, p, n);
	else if (type == PROXY_FRAME_REP)
		on_reply(px, from, p, n);
}

/* ---- metrics -------------------------------------------------------------------- */

void proxy_stats(struct proxy *px, struct proxy_stats *st)
{
	memset(st, 0, sizeof *st);
	for (unsigned i = 0; i < PROXY_OUT_COUNT; i++)
		st->out[i] = GET(px->out[i]);
	st->late = GET(px->late);
	pthread_mutex_lock(&px->mu);
	st->inflight = px->inflight;
	pthread_mutex_unlock(&px->mu);
	st->served = GET(px->served);
	st->serving = GET(px->serving_now);
	st->served_refused = GET(px->served_refused);
	st->bad_frames = GET(px->bad_frames);
}

size_t proxy_metrics_text(struct proxy *px, char *buf, size_t cap)
{
	static const char *const names[PROXY_OUT_COUNT] = {
		"replied", "timeout", "link_down", "unsent", "full", "no_leader"};
	struct srv_text o = {buf, cap, 0};
	struct proxy_stats st;
	proxy_stats(px, &st);
	const char *h = "parley_forward_requests_total";
	srv_text_put(&o, "# HELP %s Client requests this node would have "
		     "answered NOTLEADER, by what became of forwarding them to "
		     "the leader: replied (the leader's answer passed on), "
		     "timeout / link_down / unsent (ERROR AGAIN), full (over "
		     "forward_max_inflight: ERROR FULL), no_leader (no leader "
		     "known or its link down: NOTLEADER, a redirect).\n"
		     "# TYPE %s counter\n", h, h);
	for (unsigned i = 0; i < PROXY_OUT_COUNT; i++)
		srv_text_put(&o, "%s{outcome=\"%s\"} %" PRIu64 "\n", h, names[i],
			     st.out[i]);
	srv_text_put(&o, "# HELP parley_forward_inflight Forwarded requests "
		     "waiting for the leader's reply.\n# TYPE "
		     "parley_forward_inflight gauge\nparley_forward_inflight %"
		     PRIu64 "\n", st.inflight);
	srv_text_put(&o, "# HELP parley_forward_late_replies_total Replies that "
		     "came after their forward was answered AGAIN.\n# TYPE "
		     "parley_forward_late_replies_total counter\n"
		     "parley_forward_late_replies_total %" PRIu64 "\n", st.late);
	srv_text_put(&o, "# HELP parley_forward_served_total Requests other "
		     "nodes forwarded here, run (ok) or refused (AGAIN / FULL).\n"
		     "# TYPE parley_forward_served_total counter\n"
		     "parley_forward_served_total{outcome=\"ok\"} %" PRIu64 "\n"
		     "parley_forward_served_total{outcome=\"refused\"} %" PRIu64
		     "\n", st.served, st.served_refused);
	srv_text_put(&o, "# HELP parley_forward_serving Forwarded requests "
		     "running here now.\n# TYPE parley_forward_serving gauge\n"
		     "parley_forward_serving %" PRIu64 "\n", st.serving);
	srv_text_put(&o, "# HELP parley_forward_bad_frames_total Undecodable "
		     "forwarding frames from peers (dropped).\n# TYPE "
		     "parley_forward_bad_frames_total counter\n"
		     "parley_forward_bad_frames_total %" PRIu64 "\n",
		     st.bad_frames);
	struct pe_stage_hist hs;
	srv_hist_read(&px->lat, &hs);
	h = "parley_forward_latency_seconds";
	srv_text_put(&o, "# HELP %s Forward to the leader -> its reply back "
		     "on this node.\n# TYPE %s histogram\n", h, h);
	uint64_t cum = 0;
	for (unsigned b = 0; b < PE_HIST_BUCKETS; b++) {
		cum += hs.buckets[b];
		if (b < 10 || b > 34) /* ~1 us .. ~17 s, as srv.c */
			continue;
		srv_text_put(&o, "%s_bucket{le=\"%.9g\"} %" PRIu64 "\n", h,
			     (double)pe_hist_bucket_le_ns(b) / 1e9, cum);
	}
	srv_text_put(&o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.9f\n"
		     "%s_count %" PRIu64 "\n", h, hs.count, h,
		     (double)hs.sum_ns / 1e9, h, hs.count);
	return o.n;
}
