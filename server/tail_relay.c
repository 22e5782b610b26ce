/*
 * tail_relay.c — inbox tails served across nodes: the codec of peer
 * frames TAIL_REQ / TAIL_DATA / TAIL_XREAD, the gateway's delivery
 * position (pure), the two tables (the gateway's tails by id, the tails
 * served here by (node, id)) and the remote reads' table (pointers,
 * checks, XREADs: tail_relay.h invariants 5-7). The contract is in tail_relay.h; the connections' side is
 * in conn.c ("Remote inbox tails").
 *
 * Invariants (beyond tail_relay.h):
 *   1. An entry is in exactly one bucket chain; a gateway entry names the
 *      connection that opened it, a served entry the tail virtual
 *      connection once bound (before: `bound` false; a CLOSE then marks
 *      it closed so the bind fails and the connection closes).
 *   2. Messages to connections are posted under the mutex (lmsg_post
 *      never blocks); frames are sent without it.
 *
 * Ownership: entries are the relay's; LM_* messages posted belong to
 * their loop.
 * Threads: any (one mutex).
 */
#include "tail_relay.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_proto.h"
#include "srv.h"

/* ---- codec ---- */

uint32_t tail_hdr_encode(uint8_t out[TAIL_OPEN_HDR_MAX],
			 const struct tail_msg *m)
{
	memset(out, 0, TAIL_HDR);
	out[0] = m->op;
	out[1] = m->reason;
	le_put64(out + 8, m->id);
	uint32_t n = TAIL_HDR;
	if (m->op == TAIL_OP_OPEN) {
		out[n] = m->ulen;
		out[n + 1] = m->dlen;
		out[n + 2] = out[n + 3] = 0;
		n += 4;
		memcpy(out + n, m->user, m->ulen);
		n += m->ulen;
		memcpy(out + n, m->device, m->dlen);
		n += m->dlen;
	} else if (m->op == TAIL_OP_ACK) {
		le_put64(out + n, m->seq);
		n += 8;
	} else if (m->op == TAIL_OP_READ) {
		le_put64(out + n, m->seq);
		le_put64(out + n + 8, m->conv_seq);
		le_put16(out + n + 16, m->kind);
		le_put16(out + n + 18, m->clen);
		memcpy(out + n + 20, m->conv, m->clen);
		n += 20u + m->clen;
	} else if (m->op == TAIL_OP_XREAD) {
		le_put64(out + n, m->seq);
		le_put32(out + n + 8, m->limit);
		out[n + 12] = m->dir;
		out[n + 13] = m->lin ? 1 : 0;
		le_put16(out + n + 14, m->klen);
		memcpy(out + n + TAIL_XREAD_HDR, m->key, m->klen);
		n += TAIL_XREAD_HDR + m->klen;
	}
	return n;
}

_Static_assert(TAIL_HDR + TAIL_XREAD_HDR + PE_MAX_KEY <= TAIL_OPEN_HDR_MAX,
	       "an XREAD's header fits tail_hdr_encode's buffer");
_Static_assert(TAIL_XRES_ENT + PE_MAX_PAYLOAD <= TAIL_XREAD_MAX_BYTES,
	       "an answer holds at least its first entry");

/* How many of r's entries an answer carries, and their bytes. */
static uint32_t xres_fit(const struct pe_read_result *r, uint32_t room,
			 uint32_t *bytes)
{
	uint32_t k = 0, b = 0;
	if (room > TAIL_XREAD_MAX_BYTES)
		room = TAIL_XREAD_MAX_BYTES;
	while (k < r->count && k < PE_MAX_READ) {
		uint64_t e = (uint64_t)TAIL_XRES_ENT + r->entries[k].len;
		if (b + e > room)
			break;
		b += (uint32_t)e;
		k++;
	}
	*bytes = b;
	return k;
}

uint32_t tail_xres_size(const struct pe_read_result *r)
{
	uint32_t b = 0;
	if (!r->err)
		(void)xres_fit(r, TAIL_XREAD_MAX_BYTES, &b);
	return TAIL_HDR + TAIL_XRES_HDR + b;
}

uint32_t tail_xres_encode(uint8_t *out, uint32_t cap, uint64_t id,
			  uint8_t reason, const struct pe_read_result *r)
{
	if (cap < TAIL_HDR + TAIL_XRES_HDR)
		return 0;
	struct tail_msg m = {.op = TAIL_OP_XREAD_RES, .reason = reason,
			     .id = id};
	uint8_t h[TAIL_OPEN_HDR_MAX];
	uint32_t n = tail_hdr_encode(h, &m);
	memcpy(out, h, n);
	uint32_t bytes;
	uint32_t k = r->err ? 0 : xres_fit(r, cap - n - TAIL_XRES_HDR, &bytes);
	le_put32(out + n, (uint32_t)r->err);
	le_put32(out + n + 4, k);
	le_put64(out + n + 8, r->first_seq);
	le_put64(out + n + 16, r->last_seq);
	out[n + 24] = r->end && k == r->count ? 1 : 0;
	out[n + 25] = out[n + 26] = out[n + 27] = 0;
	n += TAIL_XRES_HDR;
	for (uint32_t i = 0; i < k; i++) {
		const struct pe_entry *e = &r->entries[i];
		le_put64(out + n, e->seq);
		le_put64(out + n + 8, e->ts_ms);
		le_put16(out + n + 16, e->type);
		le_put16(out + n + 18, e->flags);
		memcpy(out + n + 20, e->producer, PE_PRODUCER_LEN);
		le_put32(out + n + 36, e->len);
		if (e->len)
			memcpy(out + n + TAIL_XRES_ENT, e->payload, e->len);
		n += TAIL_XRES_ENT + e->len;
	}
	return n;
}

void tail_xres_entries(const struct tail_msg *m, struct pe_entry *out)
{
	const uint8_t *q = m->body;
	for (uint32_t i = 0; i < m->count; i++) {
		struct pe_entry *e = &out[i];
		e->seq = le_get64(q);
		e->ts_ms = le_get64(q + 8);
		e->type = le_get16(q + 16);
		e->flags = le_get16(q + 18);
		memcpy(e->producer, q + 20, PE_PRODUCER_LEN);
		e->len = le_get32(q + 36);
		e->payload = q + TAIL_XRES_ENT;
		q += TAIL_XRES_ENT + e->len;
	}
}

/* XREAD_RES's entries: exactly m->count whole ones in q[0..left). */
static bool xres_whole(const uint8_t *q, uint32_t left, uint32_t count)
{
	uint32_t off = 0;
	for (uint32_t i = 0; i < count; i++) {
		if (left - off < TAIL_XRES_ENT)
			return false;
		uint32_t len = le_get32(q + off + 36);
		if (len > left - off - TAIL_XRES_ENT)
			return false;
		off += TAIL_XRES_ENT + len;
	}
	return off == left;
}

/* Whole client frames back to back in p[0..n), at least one. */
static bool whole_frames(const uint8_t *p, uint32_t n, uint32_t *count,
			 uint16_t *first_type)
{
	uint32_t off = 0, k = 0;
	while (off < n) {
		struct parley_frame f;
		int rc = parley_proto_frame_decode(p + off, n - off,
						   PARLEY_PROTO_MAX_FRAME_HARD,
						   &f);
		if (rc <= 0)
			return false;
		if (!k && first_type)
			*first_type = f.type;
		off += (uint32_t)rc;
		k++;
	}
	*count = k;
	return k > 0;
}

int tail_msg_decode(uint8_t type, const uint8_t *p, uint32_t n,
		    struct tail_msg *m)
{
	memset(m, 0, sizeof *m);
	if (n < TAIL_HDR || p[2] || p[3] || le_get32(p + 4))
		return -PARLEY_EPROTO;
	m->op = p[0];
	m->reason = p[1];
	m->id = le_get64(p + 8);
	const uint8_t *q = p + TAIL_HDR;
	uint32_t left = n - TAIL_HDR;
	uint32_t k = 0;
	uint16_t ft = 0;
	bool req = type == TAIL_FRAME_REQ, data = type == TAIL_FRAME_DATA;
	bool xr = type == TAIL_FRAME_XREAD;
	if (xr != (m->op == TAIL_OP_XREAD || m->op == TAIL_OP_XREAD_RES))
		return -PARLEY_EPROTO; /* XREAD's ops in its type alone */
	switch (m->op) {
	case TAIL_OP_OPEN:
		if (!req || left < 4 || q[2] || q[3])
			return -PARLEY_EPROTO;
		m->ulen = q[0];
		m->dlen = q[1];
		if (!m->ulen || (uint32_t)4 + m->ulen + m->dlen > left)
			return -PARLEY_EPROTO;
		m->user = (const char *)q + 4;
		m->device = m->user + m->ulen;
		m->body = q + 4 + m->ulen + m->dlen;
		m->blen = left - 4 - m->ulen - m->dlen;
		if (!whole_frames(m->body, m->blen, &k, &ft) || k != 1 ||
		    ft != PARLEY_T_SYNC)
			return -PARLEY_EPROTO;
		return 0;
	case TAIL_OP_ACK:
		if (!req || left != 8)
			return -PARLEY_EPROTO;
		m->seq = le_get64(q);
		return 0;
	case TAIL_OP_CLOSE:
		return req && !left ? 0 : -PARLEY_EPROTO;
	case TAIL_OP_DATA:
		if (!data || !whole_frames(q, left, &k, NULL))
			return -PARLEY_EPROTO;
		m->body = q;
		m->blen = left;
		return 0;
	case TAIL_OP_END:
		return data && !left && m->reason <= TAIL_END_REFUSED
			       ? 0
			       : -PARLEY_EPROTO;
	case TAIL_OP_READ:
		if (!req || left < 20)
			return -PARLEY_EPROTO;
		m->seq = le_get64(q);
		m->conv_seq = le_get64(q + 8);
		m->kind = le_get16(q + 16);
		m->clen = le_get16(q + 18);
		if (!m->clen || m->clen > 249 || left != 20u + m->clen)
			return -PARLEY_EPROTO;
		m->conv = (const char *)q + 20;
		return 0;
	case TAIL_OP_READ_RES:
		/* a check's FOUND / NONE carries nothing */
		if (!data || m->reason > TAIL_RES_NONE ||
		    (m->reason != TAIL_RES_FAILED && left))
			return -PARLEY_EPROTO;
		if (left && (!whole_frames(q, left, &k, &ft) || k != 1 ||
			     ft != PARLEY_T_EVENT))
			return -PARLEY_EPROTO;
		m->body = left ? q : NULL;
		m->blen = left;
		return 0;
	case TAIL_OP_XREAD:
		if (m->reason || left < TAIL_XREAD_HDR)
			return -PARLEY_EPROTO;
		m->seq = le_get64(q);
		m->limit = le_get32(q + 8);
		m->dir = q[12];
		m->lin = q[13] & 1;
		m->klen = le_get16(q + 14);
		if (m->dir > PE_BACKWARD || (q[13] & ~1u) || !m->limit ||
		    m->limit > PE_MAX_READ || !m->klen || m->klen > PE_MAX_KEY ||
		    left != TAIL_XREAD_HDR + m->klen)
			return -PARLEY_EPROTO;
		m->key = q + TAIL_XREAD_HDR;
		return 0;
	case TAIL_OP_XREAD_RES:
		if (m->reason > TAIL_XRES_RETRY || left < TAIL_XRES_HDR ||
		    q[25] || q[26] || q[27] || q[24] > 1)
			return -PARLEY_EPROTO;
		m->err = (int32_t)le_get32(q);
		m->count = le_get32(q + 4);
		m->first_seq = le_get64(q + 8);
		m->last_seq = le_get64(q + 16);
		m->end = q[24];
		m->body = q + TAIL_XRES_HDR;
		m->blen = left - TAIL_XRES_HDR;
		if (m->err > 0 || m->count > PE_MAX_READ ||
		    (m->err && m->count) ||
		    !xres_whole(m->body, m->blen, m->count))
			return -PARLEY_EPROTO;
		return 0;
	default:
		return -PARLEY_EPROTO;
	}
}

/* ---- the gateway's delivery position ---- */

void tail_gw_synced(struct tail_gw *g, uint64_t start)
{
	if (start == 0)
		start = 1;
	if (!g->synced) {
		g->synced = true;
		g->next = start;
		g->acked = start - 1;
		g->ack_sent = start - 1;
		g->h_next = start;
		return;
	}
	/* a re-subscription from acked + 1: the holder clamps its start to
	 * the inbox's bounds, so a start above that means retention trimmed
	 * those entries (a single node skips the device ahead the same way) */
	g->h_next = start;
	if (start - 1 > g->ack_sent)
		g->ack_sent = start - 1; /* its window starts there */
	if (start > g->next)
		g->next = start;
}

enum tail_gw_verdict tail_gw_event(struct tail_gw *g, uint64_t seq)
{
	if (seq != g->h_next)
		return TAIL_GW_GAP; /* the subscription skipped or repeated */
	g->h_next = seq + 1;
	if (seq < g->next)
		return TAIL_GW_DROP;
	if (seq > g->next)
		return TAIL_GW_GAP;
	g->next = seq + 1;
	return TAIL_GW_WRITE;
}

uint64_t tail_gw_ack_due(struct tail_gw *g)
{
	uint64_t up = g->acked;
	if (g->h_next && up > g->h_next - 1)
		up = g->h_next - 1; /* only what this subscription sent */
	if (up <= g->ack_sent)
		return 0;
	g->ack_sent = up;
	return up;
}

uint64_t tail_gw_ack(struct tail_gw *g, uint64_t up)
{
	if (up > g->acked)
		g->acked = up;
	return tail_gw_ack_due(g);
}

uint64_t tail_gw_resub(struct tail_gw *g)
{
	uint64_t from = g->acked + 1;
	g->h_next = from;
	g->ack_sent = g->acked;
	return from;
}

/* ---- the relay ---- */

struct tail_ent {
	struct tail_ent *next;
	uint64_t node, id;
	struct conn_ref ref;
	bool served;      /* holder side (else gateway) */
	bool bound;       /* served: its connection is known */
	bool closed;      /* served, unbound: CLOSE came first */
	bool end_pending; /* served, over: END not yet handed to the link */
};

struct node_count {
	uint64_t node;
	uint32_t served;
	uint32_t reads; /* remote reads in flight to it */
};

/* A remote read in flight (invariant 5), a check (invariant 6:
 * check set, p.kind TAIL_READ_KIND_OPEN, p.conv the conversation), or an
 * XREAD (invariant 7: xread set, q its request, q.key -> key). */
struct tail_read {
	struct tail_read *next;
	uint64_t id, node;    /* node: 0 = waiting to be sent */
	struct chat_inbox_ptr p;
	bool check, xread;
	struct pe_read_req q;
	pe_read_cb rcb;       /* an XREAD's */
	uint8_t key[PE_MAX_KEY];
	int res;              /* a check given up: its outcome */
	tail_read_cb cb;      /* a pointer's */
	tail_check_cb ccb;    /* a check's */
	void *arg;
	uint64_t first_ms, deadline_ms;
};

struct tail_relay {
	struct tail_io io;
	pthread_mutex_t mu;
	struct tail_ent *buckets[TAIL_BUCKETS];
	uint64_t next_id;
	struct node_count nodes[64];
	uint32_t nnodes;
	_Atomic uint64_t gw_open, gw_opened, gw_resubs, gw_bytes_in, gw_dups;
	_Atomic uint64_t served_open, served_total, served_full, served_bytes,
		served_unsent, bad_frames;
	_Atomic uint32_t ends_pending;
	struct tail_read *reads[TAIL_BUCKETS];
	uint64_t next_read;
	_Atomic uint32_t nreads;
	_Atomic uint64_t st_reads, st_read_retries, st_read_giveups,
		st_reads_served, st_checks, st_check_giveups,
		st_checks_served, st_xreads, st_xread_giveups,
		st_xreads_served, st_xread_cut;
};

static void reads_tick(struct tail_relay *tr);
struct tail_read;
static int read_link(struct tail_relay *tr, const struct tail_read *r,
		     uint64_t node);

#define ADD(x, v) atomic_fetch_add_explicit(&(x), (v), memory_order_relaxed)
#define SUB(x, v) atomic_fetch_sub_explicit(&(x), (v), memory_order_relaxed)
#define GET(x) atomic_load_explicit(&(x), memory_order_relaxed)

static uint32_t bucket(uint64_t node, uint64_t id, bool served)
{
	uint64_t h = (node * 0x9e3779b97f4a7c15ull) ^ id ^ (served ? 1ull << 63 : 0);
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return (uint32_t)(h % TAIL_BUCKETS);
}

static struct tail_ent **find(struct tail_relay *tr, uint64_t node,
			      uint64_t id, bool served)
{
	struct tail_ent **pp = &tr->buckets[bucket(node, id, served)];
	while (*pp && !((*pp)->node == node && (*pp)->id == id &&
			(*pp)->served == served))
		pp = &(*pp)->next;
	return pp;
}

static struct node_count *node_slot(struct tail_relay *tr, uint64_t node,
				    bool add)
{
	for (uint32_t i = 0; i < tr->nnodes; i++)
		if (tr->nodes[i].node == node)
			return &tr->nodes[i];
	if (!add || tr->nnodes == sizeof tr->nodes / sizeof tr->nodes[0])
		return NULL;
	tr->nodes[tr->nnodes] = (struct node_count){.node = node};
	return &tr->nodes[tr->nnodes++];
}

int tail_relay_new(const struct tail_io *io, struct tail_relay **out)
{
	struct tail_relay *tr = calloc(1, sizeof *tr);
	if (!tr)
		return -PARLEY_ENOMEM;
	tr->io = *io;
	tr->next_id = 1;
	tr->next_read = 1;
	pthread_mutex_init(&tr->mu, NULL);
	*out = tr;
	return 0;
}

void tail_relay_free(struct tail_relay *tr)
{
	if (!tr)
		return;
	for (uint32_t b = 0; b < TAIL_BUCKETS; b++) {
		struct tail_ent *e = tr->buckets[b];
		while (e) {
			struct tail_ent *n = e->next;
			free(e);
			e = n;
		}
	}
	for (uint32_t b = 0; b < TAIL_BUCKETS; b++) {
		struct tail_read *r = tr->reads[b];
		while (r) {
			struct tail_read *n = r->next;
			free(r);
			r = n;
		}
	}
	pthread_mutex_destroy(&tr->mu);
	free(tr);
}

static int send_ctl(struct tail_relay *tr, uint64_t node, uint8_t type,
		    uint8_t op, uint8_t reason, uint64_t id, uint64_t seq)
{
	uint8_t h[TAIL_OPEN_HDR_MAX];
	struct tail_msg m = {.op = op, .reason = reason, .id = id, .seq = seq};
	uint32_t n = tail_hdr_encode(h, &m);
	return tr->io.send(tr->io.arg, node, type, h, n, NULL, 0);
}

/* Posts the end of a gateway tail to its connection (mutex held). */
static void post_gw_end(const struct tail_ent *e)
{
	struct lmsg *m = lmsg_new(LM_TAIL, 0);
	if (!m) /* the connection would wait for its tail forever */
		srv_oom("the end of a remote inbox tail");
	m->u.tail.id = e->id;
	m->u.tail.end = true;
	lmsg_post(&e->ref, m);
}

/* Posts LM_TAIL_CLOSE to a bound served tail (mutex held). */
static void post_served_close(const struct tail_ent *e)
{
	struct lmsg *m = lmsg_new(LM_TAIL_CLOSE, 0);
	if (!m)
		srv_oom("the end of a served inbox tail");
	m->u.tail.id = e->id;
	m->u.tail.node = e->node;
	lmsg_post(&e->ref, m);
}

/* Removes a served entry (mutex held): *pp is it. */
static void served_forget(struct tail_relay *tr, struct tail_ent **pp)
{
	struct tail_ent *e = *pp;
	*pp = e->next;
	struct node_count *nc = node_slot(tr, e->node, false);
	if (nc && nc->served)
		nc->served--;
	if (e->end_pending)
		SUB(tr->ends_pending, 1);
	SUB(tr->served_open, 1);
	free(e);
}

/* ---- gateway ---- */

/* A gateway tail by id (mutex held): ids are unique per gateway, so
 * gateway entries hash by id alone. NULL = gone. */
static struct tail_ent **gw_find(struct tail_relay *tr, uint64_t id)
{
	struct tail_ent **pp = &tr->buckets[bucket(0, id, false)];
	while (*pp && ((*pp)->served || (*pp)->id != id))
		pp = &(*pp)->next;
	return *pp ? pp : NULL;
}


int tail_relay_open(struct tail_relay *tr, uint64_t node,
		    const struct conn_ref *to, const char *user, uint8_t ulen,
		    const char *device, uint8_t dlen, const uint8_t *sync,
		    uint32_t n, uint64_t *id)
{
	if (!node || !tr->io.link_up(tr->io.arg, node))
		return -PARLEY_ENOTLEADER;
	struct tail_ent *e = calloc(1, sizeof *e);
	if (!e)
		return -PARLEY_ENOMEM;
	pthread_mutex_lock(&tr->mu);
	e->id = tr->next_id++;
	e->node = node;
	e->ref = *to;
	struct tail_ent **pp = &tr->buckets[bucket(0, e->id, false)];
	e->next = *pp;
	*pp = e;
	pthread_mutex_unlock(&tr->mu);
	ADD(tr->gw_open, 1);
	ADD(tr->gw_opened, 1);
	uint8_t h[TAIL_OPEN_HDR_MAX];
	struct tail_msg m = {.op = TAIL_OP_OPEN, .id = e->id, .user = user,
			     .ulen = ulen, .device = device, .dlen = dlen};
	uint32_t hn = tail_hdr_encode(h, &m);
	uint64_t my = e->id; /* e may be gone once unlocked (link down) */
	int rc = tr->io.send(tr->io.arg, node, TAIL_FRAME_REQ, h, hn, sync, n);
	if (rc) {
		pthread_mutex_lock(&tr->mu);
		pp = gw_find(tr, my);
		if (pp) {
			struct tail_ent *x = *pp;
			*pp = x->next;
			free(x);
			SUB(tr->gw_open, 1);
		}
		pthread_mutex_unlock(&tr->mu);
		return -PARLEY_EAGAIN;
	}
	*id = my;
	return 0;
}

int tail_relay_ack(struct tail_relay *tr, uint64_t id, uint64_t up)
{
	pthread_mutex_lock(&tr->mu);
	struct tail_ent **pp = gw_find(tr, id);
	uint64_t node = pp ? (*pp)->node : 0;
	pthread_mutex_unlock(&tr->mu);
	if (!node)
		return -PARLEY_ECLOSED;
	return send_ctl(tr, node, TAIL_FRAME_REQ, TAIL_OP_ACK, 0, id, up);
}

void tail_relay_close(struct tail_relay *tr, uint64_t id)
{
	pthread_mutex_lock(&tr->mu);
	struct tail_ent **pp = gw_find(tr, id);
	uint64_t node = 0;
	if (pp) {
		struct tail_ent *e = *pp;
		node = e->node;
		*pp = e->next;
		free(e);
		SUB(tr->gw_open, 1);
	}
	pthread_mutex_unlock(&tr->mu);
	if (node)
		(void)send_ctl(tr, node, TAIL_FRAME_REQ, TAIL_OP_CLOSE, 0, id, 0);
}

void tail_relay_count(struct tail_relay *tr, bool resub, bool dup)
{
	if (resub)
		ADD(tr->gw_resubs, 1);
	if (dup)
		ADD(tr->gw_dups, 1);
}

/* TAIL_DATA from `from` (peer thread). */
static void gw_on_data(struct tail_relay *tr, uint64_t from,
		       const struct tail_msg *m, uint32_t n)
{
	ADD(tr->gw_bytes_in, n);
	pthread_mutex_lock(&tr->mu);
	struct tail_ent **pp = gw_find(tr, m->id);
	struct tail_ent *e = pp ? *pp : NULL;
	if (!e || e->node != from) { /* closed here meanwhile */
		pthread_mutex_unlock(&tr->mu);
		return;
	}
	if (m->op == TAIL_OP_END) {
		*pp = e->next;
		post_gw_end(e);
		free(e);
		SUB(tr->gw_open, 1);
	} else {
		struct lmsg *lm = lmsg_new(LM_TAIL, m->blen);
		if (!lm) /* a hole in the device's stream: end the tail */
			srv_oom("a remote inbox tail's EVENTs");
		memcpy(lm->data, m->body, m->blen);
		lm->u.tail.id = m->id;
		lm->u.tail.end = false;
		lmsg_post(&e->ref, lm);
	}
	pthread_mutex_unlock(&tr->mu);
}

/* ---- holder ---- */

static void holder_on_req(struct tail_relay *tr, uint64_t from,
			  const struct tail_msg *m, const uint8_t *p,
			  uint32_t n)
{
	pthread_mutex_lock(&tr->mu);
	struct tail_ent **pp = find(tr, from, m->id, true);
	struct tail_ent *e = *pp;
	if (m->op == TAIL_OP_ACK) {
		if (e && e->bound && !e->end_pending) {
			struct lmsg *lm = lmsg_new(LM_TAIL_ACK, 0);
			if (!lm)
				srv_oom("an inbox tail's acknowledgement");
			lm->u.tail.id = m->id;
			lm->u.tail.node = from;
			lm->u.tail.seq = m->seq;
			lmsg_post(&e->ref, lm);
		}
		pthread_mutex_unlock(&tr->mu);
		return;
	}
	if (m->op == TAIL_OP_CLOSE) {
		if (e && e->bound && !e->end_pending)
			post_served_close(e);
		if (e && !e->bound) { /* the bind fails: it closes at once */
			e->closed = true;
			pthread_mutex_unlock(&tr->mu);
			return;
		}
		if (e)
			served_forget(tr, pp);
		pthread_mutex_unlock(&tr->mu);
		return;
	}
	/* OPEN */
	uint8_t refuse = 0xff;
	struct node_count *nc = node_slot(tr, from, true);
	if (e || !nc)
		refuse = TAIL_END_REFUSED; /* an id twice, or too many nodes */
	else if (nc->served >= TAIL_MAX_PER_NODE)
		refuse = TAIL_END_FULL;
	if (refuse == 0xff) {
		e = calloc(1, sizeof *e);
		if (!e) {
			refuse = TAIL_END_REFUSED;
		} else {
			e->node = from;
			e->id = m->id;
			e->served = true;
			e->next = *pp;
			*pp = e;
			nc->served++;
			ADD(tr->served_open, 1);
		}
	}
	pthread_mutex_unlock(&tr->mu);
	if (refuse == 0xff && tr->io.serve(tr->io.arg, from, m, p, n) != 0) {
		pthread_mutex_lock(&tr->mu);
		pp = find(tr, from, m->id, true);
		if (*pp)
			served_forget(tr, pp);
		pthread_mutex_unlock(&tr->mu);
		refuse = TAIL_END_REFUSED;
	}
	if (refuse != 0xff) {
		if (refuse == TAIL_END_FULL)
			ADD(tr->served_full, 1);
		(void)send_ctl(tr, from, TAIL_FRAME_DATA, TAIL_OP_END, refuse,
			       m->id, 0);
		return;
	}
	ADD(tr->served_total, 1);
}

bool tail_relay_served_bind(struct tail_relay *tr, uint64_t node,
			    uint64_t id, const struct conn_ref *to)
{
	pthread_mutex_lock(&tr->mu);
	struct tail_ent **pp = find(tr, node, id, true);
	struct tail_ent *e = *pp;
	bool ok = e && !e->closed;
	if (ok) {
		e->ref = *to;
		e->bound = true;
	} else if (e) {
		served_forget(tr, pp);
	}
	pthread_mutex_unlock(&tr->mu);
	return ok;
}

int tail_relay_served_data(struct tail_relay *tr, uint64_t node, uint64_t id,
			   const uint8_t *p, size_t n)
{
	uint8_t h[TAIL_OPEN_HDR_MAX];
	struct tail_msg m = {.op = TAIL_OP_DATA, .id = id};
	uint32_t hn = tail_hdr_encode(h, &m);
	int rc = tr->io.send(tr->io.arg, node, TAIL_FRAME_DATA, h, hn, p, n);
	if (rc) {
		ADD(tr->served_unsent, 1);
		return rc;
	}
	ADD(tr->served_bytes, hn + n);
	return 0;
}

void tail_relay_served_end(struct tail_relay *tr, uint64_t node, uint64_t id)
{
	pthread_mutex_lock(&tr->mu);
	struct tail_ent **pp = find(tr, node, id, true);
	if (!*pp) { /* the gateway closed it, or its link went down */
		pthread_mutex_unlock(&tr->mu);
		return;
	}
	pthread_mutex_unlock(&tr->mu);
	int rc = send_ctl(tr, node, TAIL_FRAME_DATA, TAIL_OP_END,
			  TAIL_END_CLOSED, id, 0);
	pthread_mutex_lock(&tr->mu);
	pp = find(tr, node, id, true);
	if (*pp) {
		if (rc && tr->io.link_up(tr->io.arg, node)) {
			/* the queue is full: the tick tries again, else the
			 * gateway would wait for this tail forever */
			if (!(*pp)->end_pending)
				ADD(tr->ends_pending, 1);
			(*pp)->end_pending = true;
		} else {
			served_forget(tr, pp);
		}
	}
	pthread_mutex_unlock(&tr->mu);
}

void tail_relay_tick(struct tail_relay *tr)
{
	reads_tick(tr);
	if (!GET(tr->ends_pending))
		return;
	struct {
		uint64_t node, id;
	} todo[64];
	uint32_t k = 0;
	pthread_mutex_lock(&tr->mu);
	for (uint32_t b = 0; b < TAIL_BUCKETS && k < 64; b++)
		for (struct tail_ent *e = tr->buckets[b]; e && k < 64; e = e->next)
			if (e->served && e->end_pending) {
				todo[k].node = e->node;
				todo[k].id = e->id;
				k++;
			}
	pthread_mutex_unlock(&tr->mu);
	for (uint32_t i = 0; i < k; i++) {
		int rc = send_ctl(tr, todo[i].node, TAIL_FRAME_DATA, TAIL_OP_END,
				  TAIL_END_CLOSED, todo[i].id, 0);
		if (rc && tr->io.link_up(tr->io.arg, todo[i].node))
			continue;
		pthread_mutex_lock(&tr->mu);
		struct tail_ent **pp = find(tr, todo[i].node, todo[i].id, true);
		if (*pp)
			served_forget(tr, pp);
		pthread_mutex_unlock(&tr->mu);
	}
}

/* ---- remote reads ---- */

/* The reads' clock: io.now_ms (a test's), else the monotonic clock. */
static uint64_t now_ms(struct tail_relay *tr)
{
	if (tr->io.now_ms)
		return tr->io.now_ms(tr->io.arg);
	return parley_mono_ns() / 1000000u;
}

static int read_send(struct tail_relay *tr, uint64_t node,
		     const struct tail_read *r)
{
	uint8_t h[TAIL_OPEN_HDR_MAX];
	if (r->xread) {
		struct tail_msg x = {.op = TAIL_OP_XREAD, .id = r->id,
				     .seq = r->q.from, .limit = r->q.limit,
				     .dir = (uint8_t)r->q.dir,
				     .lin = r->q.linearizable, .key = r->key,
				     .klen = (uint16_t)r->q.klen};
		uint32_t xn = tail_hdr_encode(h, &x);
		return tr->io.send(tr->io.arg, node, TAIL_FRAME_XREAD, h, xn,
				   NULL, 0);
	}
	struct tail_msg m = {.op = TAIL_OP_READ, .id = r->id,
			     .seq = r->p.inbox_seq, .conv_seq = r->p.conv_seq,
			     .kind = r->p.kind, .conv = r->p.conv,
			     .clen = r->p.clen};
	uint32_t n = tail_hdr_encode(h, &m);
	return tr->io.send(tr->io.arg, node, TAIL_FRAME_REQ, h, n, NULL, 0);
}

/* Moves r to `node` (0: none, waiting) in the per-node counts (mutex
 * held). */
static void read_assign(struct tail_relay *tr, struct tail_read *r,
			uint64_t node)
{
	struct node_count *nc;
	if (r->node && (nc = node_slot(tr, r->node, false)) && nc->reads)
		nc->reads--;
	r->node = node;
	if (node && (nc = node_slot(tr, node, true)))
		nc->reads++;
}

static struct tail_read **read_find(struct tail_relay *tr, uint64_t id)
{
	struct tail_read **pp = &tr->reads[id % TAIL_BUCKETS];
	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

int tail_relay_resolve(struct tail_relay *tr, const struct chat_inbox_ptr *p,
		       tail_read_cb cb, void *arg)
{
	uint64_t node = tr->io.conv_node(tr->io.arg, p->conv, p->clen);
	if (node && tr->io.old_build && tr->io.old_build(tr->io.arg, node))
		return -PARLEY_EVERSION;
	if (!node || !tr->io.link_up(tr->io.arg, node))
		return -PARLEY_ENOTLEADER;
	struct tail_read *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->p = *p;
	r->cb = cb;
	r->arg = arg;
	r->first_ms = now_ms(tr);
	r->deadline_ms = r->first_ms + TAIL_READ_TIMEOUT_MS;
	pthread_mutex_lock(&tr->mu);
	struct node_count *nc = node_slot(tr, node, true);
	if (!nc || nc->reads >= TAIL_MAX_READS) {
		pthread_mutex_unlock(&tr->mu);
		free(r);
		return -PARLEY_EFULL;
	}
	r->id = tr->next_read++;
	read_assign(tr, r, node);
	struct tail_read **pp = read_find(tr, r->id);
	r->next = *pp;
	*pp = r;
	ADD(tr->nreads, 1);
	/* sent under the mutex: an answer cannot overtake the entry */
	int rc = read_send(tr, node, r);
	if (rc) {
		pp = read_find(tr, r->id);
		*pp = r->next;
		read_assign(tr, r, 0);
		SUB(tr->nreads, 1);
		pthread_mutex_unlock(&tr->mu);
		free(r);
		return -PARLEY_ENOTLEADER;
	}
	pthread_mutex_unlock(&tr->mu);
	ADD(tr->st_reads, 1);
	return 0;
}

/* The node r is to be asked: its conversation's partition's leader (a
 * pointer), its open record's (a check); 0 = none known / held here. */
static uint64_t read_node(struct tail_relay *tr, const struct tail_read *r)
{
	if (r->xread)
		return tr->io.key_node ? tr->io.key_node(tr->io.arg, r->key,
							 (uint16_t)r->q.klen)
				       : 0;
	if (!r->check)
		return tr->io.conv_node(tr->io.arg, r->p.conv, r->p.clen);
	return tr->io.open_node ? tr->io.open_node(tr->io.arg, r->p.conv,
						   r->p.clen)
				: 0;
}

int tail_relay_check(struct tail_relay *tr, const char *conv, uint16_t clen,
		     tail_check_cb cb, void *arg)
{
	if (!clen || clen > 249) /* READ's bound (tail_msg_decode) */
		return -PARLEY_EINVAL;
	struct tail_read *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->check = true;
	r->p.kind = TAIL_READ_KIND_OPEN;
	r->p.clen = clen;
	memcpy(r->p.conv, conv, clen);
	uint64_t node = read_node(tr, r);
	if (node && tr->io.old_build && tr->io.old_build(tr->io.arg, node)) {
		free(r);
		return -PARLEY_EVERSION;
	}
	if (node && !tr->io.link_up(tr->io.arg, node))
		node = 0; /* the tick asks once the link is up */
	r->ccb = cb;
	r->arg = arg;
	r->first_ms = now_ms(tr);
	pthread_mutex_lock(&tr->mu);
	struct node_count *nc = node ? node_slot(tr, node, true) : NULL;
	if ((node && (!nc || nc->reads >= TAIL_MAX_READS)) ||
	    GET(tr->nreads) >= TAIL_MAX_READS * 4u) {
		pthread_mutex_unlock(&tr->mu);
		free(r);
		return -PARLEY_EFULL;
	}
	r->id = tr->next_read++;
	struct tail_read **pp = read_find(tr, r->id);
	r->next = *pp;
	*pp = r;
	ADD(tr->nreads, 1);
	/* sent under the mutex: an answer cannot overtake the entry; not
	 * sent (no leader known, no link, a full queue): the tick asks */
	if (node && read_send(tr, node, r) == 0) {
		read_assign(tr, r, node);
		r->deadline_ms = r->first_ms + TAIL_READ_TIMEOUT_MS;
	}
	pthread_mutex_unlock(&tr->mu);
	ADD(tr->st_checks, 1);
	return 0;
}

void tail_relay_check_answer(struct tail_relay *tr, uint64_t from,
			     uint64_t id, int found)
{
	uint8_t h[TAIL_OPEN_HDR_MAX];
	struct tail_msg m = {.op = TAIL_OP_READ_RES, .id = id,
			     .reason = found < 0    ? TAIL_RES_FAILED
				       : found > 0 ? TAIL_RES_FOUND
						   : TAIL_RES_NONE};
	uint32_t hn = tail_hdr_encode(h, &m);
	ADD(tr->st_checks_served, 1);
	(void)tr->io.send(tr->io.arg, from, TAIL_FRAME_DATA, h, hn, NULL, 0);
}

void tail_relay_read_answer(struct tail_relay *tr, uint64_t from, uint64_t id,
			    const uint8_t *frame, uint32_t n)
{
	uint8_t h[TAIL_OPEN_HDR_MAX];
	struct tail_msg m = {.op = TAIL_OP_READ_RES, .id = id};
	uint32_t hn = tail_hdr_encode(h, &m);
	ADD(tr->st_reads_served, 1);
	(void)tr->io.send(tr->io.arg, from, TAIL_FRAME_DATA, h, hn, frame,
			  frame ? n : 0);
}

/* A READ from `from`: resolve it here. */
static void read_serve(struct tail_relay *tr, uint64_t from,
		       const struct tail_msg *m)
{
	if (m->kind == TAIL_READ_KIND_OPEN) { /* a check (invariant 6) */
		if (!tr->io.check ||
		    tr->io.check(tr->io.arg, from, m->id, m->conv, m->clen) != 0)
			tail_relay_check_answer(tr, from, m->id, -PARLEY_EAGAIN);
		return;
	}
	struct chat_inbox_ptr p = {.inbox_seq = m->seq, .conv_seq = m->conv_seq,
				   .kind = m->kind, .clen = m->clen};
	memcpy(p.conv, m->conv, m->clen);
	if (!tr->io.resolve || tr->io.resolve(tr->io.arg, from, m->id, &p) != 0)
		tail_relay_read_answer(tr, from, m->id, NULL, 0);
}

/* Whether frame is an EVENT that is not a placeholder (kind 0). */
static bool real_event(const uint8_t *frame, uint32_t n)
{
	static _Thread_local struct parley_msg tm;
	struct parley_frame f;
	return frame && n &&
	       parley_proto_frame_decode(frame, n, PARLEY_PROTO_MAX_FRAME_HARD,
					 &f) == (int)n &&
	       parley_proto_decode(&f, &tm) == 0 && tm.type == PARLEY_T_EVENT &&
	       tm.event.kind != 0;
}

/* READ_RES from `from` (peer thread). */
static void read_on_res(struct tail_relay *tr, uint64_t from,
			const struct tail_msg *m)
{
	pthread_mutex_lock(&tr->mu);
	struct tail_read **pp = read_find(tr, m->id);
	struct tail_read *r = *pp;
	if (!r || r->node != from || r->xread) { /* given up, or asked
						    elsewhere since */
		pthread_mutex_unlock(&tr->mu);
		return;
	}
	if (r->check) {
		/* an EVENT: a build before checks resolved it as a pointer */
		int res = m->blen ? -PARLEY_EVERSION
			  : m->reason == TAIL_RES_FOUND ? 1
			  : m->reason == TAIL_RES_NONE  ? 0
							: -PARLEY_EAGAIN;
		if (res == -PARLEY_EAGAIN) { /* ask again at the tick */
			read_assign(tr, r, 0);
			r->deadline_ms = 0;
			pthread_mutex_unlock(&tr->mu);
			return;
		}
		*pp = r->next;
		read_assign(tr, r, 0);
		SUB(tr->nreads, 1);
		pthread_mutex_unlock(&tr->mu);
		r->ccb(r->arg, res);
		free(r);
		return;
	}
	if (!real_event(m->body, m->blen)) {
		/* that node could not read it (not the leader any more, an
		 * election): ask again at the tick */
		read_assign(tr, r, 0);
		r->deadline_ms = 0;
		pthread_mutex_unlock(&tr->mu);
		return;
	}
	*pp = r->next;
	read_assign(tr, r, 0);
	SUB(tr->nreads, 1);
	pthread_mutex_unlock(&tr->mu);
	r->cb(r->arg, m->body, m->blen);
	free(r);
}

/* The tick's part for reads: ask again what timed out, failed or lost its
 * link; give up after TAIL_READ_GIVEUP_MS. */
static void reads_tick(struct tail_relay *tr)
{
	if (!GET(tr->nreads))
		return;
	uint64_t now = now_ms(tr);
	struct tail_read *done = NULL;
	pthread_mutex_lock(&tr->mu);
	for (uint32_t b = 0; b < TAIL_BUCKETS; b++) {
		struct tail_read **pp = &tr->reads[b];
		while (*pp) {
			struct tail_read *r = *pp;
			if (r->node && now < r->deadline_ms) {
				pp = &r->next;
				continue;
			}
			uint64_t node = 0;
			int lk = 0;
			if (now - r->first_ms >= (r->xread  ? TAIL_XREAD_GIVEUP_MS
						  : r->check ? TAIL_CHECK_GIVEUP_MS
							     : TAIL_READ_GIVEUP_MS)) {
				r->res = -PARLEY_EAGAIN;
			} else if (r->xread && (node = read_node(tr, r)) &&
				   (lk = read_link(tr, r, node)) < 0) {
				/* that leader is a build without XREAD */
				r->res = -PARLEY_ENOTLEADER;
			} else if (r->check && (node = read_node(tr, r)) &&
				   tr->io.old_build &&
				   tr->io.old_build(tr->io.arg, node)) {
				r->res = -PARLEY_EVERSION; /* checked there */
			} else {
				r->res = 0;
			}
			if (r->res) {
				*pp = r->next;
				read_assign(tr, r, 0);
				SUB(tr->nreads, 1);
				r->next = done;
				done = r;
				continue;
			}
			read_assign(tr, r, 0);
			if (!r->check && !r->xread)
				node = read_node(tr, r);
			if (node && read_link(tr, r, node) > 0 &&
			    read_send(tr, node, r) == 0) {
				read_assign(tr, r, node);
				r->deadline_ms = now + TAIL_READ_TIMEOUT_MS;
				ADD(tr->st_read_retries, 1);
			}
			pp = &r->next;
		}
	}
	pthread_mutex_unlock(&tr->mu);
	while (done) {
		struct tail_read *r = done;
		done = r->next;
		if (r->xread) {
			ADD(tr->st_xread_giveups, 1);
			struct pe_read_result er = {.err = r->res};
			r->rcb(r->arg, &er);
		} else if (r->check) {
			if (r->res == -PARLEY_EAGAIN)
				ADD(tr->st_check_giveups, 1);
			r->ccb(r->arg, r->res);
		} else {
			ADD(tr->st_read_giveups, 1);
			r->cb(r->arg, NULL, 0);
		}
		free(r);
	}
}

/* ---- generic remote reads (invariant 7) ---- */

/* Whether r can be sent to node now: 1, 0 (down), -PARLEY_EVERSION. */
static int read_link(struct tail_relay *tr, const struct tail_read *r,
		     uint64_t node)
{
	if (!r->xread)
		return tr->io.link_up(tr->io.arg, node) ? 1 : 0;
	return tr->io.xread_link ? tr->io.xread_link(tr->io.arg, node) : 0;
}

int tail_relay_xread(struct tail_relay *tr, const struct pe_read_req *q,
		     pe_read_cb cb, void *arg)
{
	if (!q->klen || q->klen > PE_MAX_KEY || !q->limit ||
	    q->limit > PE_MAX_READ || (unsigned)q->dir > PE_BACKWARD)
		return -PARLEY_EINVAL;
	struct tail_read *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->xread = true;
	r->q = *q;
	memcpy(r->key, q->key, q->klen);
	r->q.key = r->key;
	r->rcb = cb;
	r->arg = arg;
	uint64_t node = read_node(tr, r);
	int lk = node ? read_link(tr, r, node) : 0;
	if (lk < 0) {
		free(r);
		return -PARLEY_EVERSION;
	}
	if (!lk)
		node = 0; /* the tick asks once a leader is known, its link up */
	r->first_ms = now_ms(tr);
	pthread_mutex_lock(&tr->mu);
	struct node_count *nc = node ? node_slot(tr, node, true) : NULL;
	if ((node && (!nc || nc->reads >= TAIL_MAX_READS)) ||
	    GET(tr->nreads) >= TAIL_MAX_READS * 4u) {
		pthread_mutex_unlock(&tr->mu);
		free(r);
		return -PARLEY_EFULL;
	}
	r->id = tr->next_read++;
	struct tail_read **pp = read_find(tr, r->id);
	r->next = *pp;
	*pp = r;
	ADD(tr->nreads, 1);
	/* sent under the mutex: an answer cannot overtake the entry */
	if (node && read_send(tr, node, r) == 0) {
		read_assign(tr, r, node);
		r->deadline_ms = r->first_ms + TAIL_READ_TIMEOUT_MS;
	}
	pthread_mutex_unlock(&tr->mu);
	ADD(tr->st_xreads, 1);
	return 0;
}

void tail_relay_xread_answer(struct tail_relay *tr, uint64_t from,
			     uint64_t id, const struct pe_read_result *r)
{
	struct pe_read_result none = {.err = -PARLEY_EAGAIN};
	if (!r)
		r = &none;
	bool retry = r->err == -PARLEY_ENOTLEADER || r->err == -PARLEY_EAGAIN ||
		     r->err == -PARLEY_EFULL || r->err == -PARLEY_ECLOSED;
	struct pe_read_result head = {.err = r->err, .first_seq = r->first_seq,
				      .last_seq = r->last_seq, .end = r->end};
	const struct pe_read_result *w = r->err ? &head : r;
	uint32_t cap = tail_xres_size(w);
	uint8_t small[TAIL_HDR + TAIL_XRES_HDR];
	uint8_t *buf = cap > sizeof small ? malloc(cap) : small;
	if (!buf) { /* the asker asks again */
		head = (struct pe_read_result){.err = -PARLEY_ENOMEM};
		w = &head;
		retry = true;
		buf = small;
		cap = sizeof small;
	}
	uint32_t n = tail_xres_encode(buf, cap, id,
				      retry ? TAIL_XRES_RETRY : TAIL_XRES_DONE,
				      w);
	if (!w->err && w->count && le_get32(buf + TAIL_HDR + 4) < w->count)
		ADD(tr->st_xread_cut, 1); /* cut at TAIL_XREAD_MAX_BYTES */
	ADD(tr->st_xreads_served, 1);
	(void)tr->io.send(tr->io.arg, from, TAIL_FRAME_XREAD, buf, n, NULL, 0);
	if (buf != small)
		free(buf);
}

/* An XREAD from `from`: read it here. */
static void xread_serve(struct tail_relay *tr, uint64_t from,
			const struct tail_msg *m)
{
	struct pe_read_req q = {.key = m->key, .klen = m->klen,
				.from = m->seq, .dir = (enum pe_dir)m->dir,
				.limit = m->limit, .linearizable = m->lin};
	int rc = tr->io.xread ? tr->io.xread(tr->io.arg, from, m->id, &q)
			      : -PARLEY_EAGAIN;
	if (rc) {
		struct pe_read_result er = {.err = rc};
		tail_relay_xread_answer(tr, from, m->id, &er);
	}
}

/* XREAD_RES from `from` (peer thread). */
static void xread_on_res(struct tail_relay *tr, uint64_t from,
			 const struct tail_msg *m)
{
	/* the result's memory: entries, then their payloads */
	size_t sz = (size_t)m->count * sizeof(struct pe_entry) + m->blen;
	struct pe_entry *ents = m->count ? malloc(sz) : NULL;
	pthread_mutex_lock(&tr->mu);
	struct tail_read **pp = read_find(tr, m->id);
	struct tail_read *r = *pp;
	if (!r || r->node != from || !r->xread) { /* given up, or asked
						     elsewhere since */
		pthread_mutex_unlock(&tr->mu);
		free(ents);
		return;
	}
	if (m->reason == TAIL_XRES_RETRY || (m->count && !ents)) {
		/* not read there (or no memory here): ask again at the tick */
		read_assign(tr, r, 0);
		r->deadline_ms = 0;
		pthread_mutex_unlock(&tr->mu);
		free(ents);
		return;
	}
	*pp = r->next;
	read_assign(tr, r, 0);
	SUB(tr->nreads, 1);
	pthread_mutex_unlock(&tr->mu);
	if (m->count) {
		tail_xres_entries(m, ents);
		uint8_t *pl = (uint8_t *)(ents + m->count);
		for (uint32_t i = 0; i < m->count; i++) {
			if (ents[i].len)
				memcpy(pl, ents[i].payload, ents[i].len);
			ents[i].payload = pl;
			pl += ents[i].len;
		}
	}
	struct pe_read_result res = {.err = m->err, .entries = ents,
				     .count = m->count,
				     .first_seq = m->first_seq,
				     .last_seq = m->last_seq, .end = m->end};
	r->rcb(r->arg, &res);
	free(ents);
	free(r);
}

/* ---- both ---- */

void tail_relay_on_frame(struct tail_relay *tr, uint64_t from, uint8_t type,
			 const uint8_t *p, uint32_t n)
{
	struct tail_msg m;
	if (tail_msg_decode(type, p, n, &m)) {
		ADD(tr->bad_frames, 1);
		PLOG_W("tail", "bad tail frame", "from=%" PRIu64 " type=%u len=%u",
		       from, type, n);
		return;
	}
	if (m.op == TAIL_OP_READ)
		read_serve(tr, from, &m);
	else if (m.op == TAIL_OP_READ_RES)
		read_on_res(tr, from, &m);
	else if (m.op == TAIL_OP_XREAD)
		xread_serve(tr, from, &m);
	else if (m.op == TAIL_OP_XREAD_RES)
		xread_on_res(tr, from, &m);
	else if (type == TAIL_FRAME_DATA)
		gw_on_data(tr, from, &m, n);
	else
		holder_on_req(tr, from, &m, p, n);
}

void tail_relay_on_unsent(struct tail_relay *tr, uint64_t to, uint8_t type,
			  const uint8_t *p, uint32_t n)
{
	struct tail_msg m;
	if (tail_msg_decode(type, p, n, &m))
		return;
	pthread_mutex_lock(&tr->mu);
	if (m.op == TAIL_OP_OPEN || m.op == TAIL_OP_ACK) {
		struct tail_ent **pp = gw_find(tr, m.id);
		if (pp && (*pp)->node == to) {
			struct tail_ent *e = *pp;
			*pp = e->next;
			post_gw_end(e);
			free(e);
			SUB(tr->gw_open, 1);
		}
	} else if (m.op == TAIL_OP_DATA || m.op == TAIL_OP_END) {
		struct tail_ent **pp = find(tr, to, m.id, true);
		struct tail_ent *e = *pp;
		if (e) {
			if (e->bound && !e->end_pending) {
				post_served_close(e);
				ADD(tr->served_unsent, 1);
			}
			if (!e->end_pending)
				ADD(tr->ends_pending, 1);
			e->end_pending = true; /* END at the tick */
			e->closed = true;
		}
	} else if (m.op == TAIL_OP_READ || m.op == TAIL_OP_XREAD) {
		struct tail_read *r = *read_find(tr, m.id);
		if (r && r->node == to) {
			read_assign(tr, r, 0);
			r->deadline_ms = 0; /* asked again at the tick */
		}
	}
	pthread_mutex_unlock(&tr->mu);
}

void tail_relay_link_down(struct tail_relay *tr, uint64_t node)
{
	pthread_mutex_lock(&tr->mu);
	for (uint32_t b = 0; b < TAIL_BUCKETS; b++) /* asked again at the tick */
		for (struct tail_read *r = tr->reads[b]; r; r = r->next)
			if (r->node == node) {
				read_assign(tr, r, 0);
				r->deadline_ms = 0;
			}
	for (uint32_t b = 0; b < TAIL_BUCKETS; b++) {
		struct tail_ent **pp = &tr->buckets[b];
		while (*pp) {
			struct tail_ent *e = *pp;
			if (e->node != node) {
				pp = &e->next;
				continue;
			}
			if (e->served) {
				if (e->bound && !e->end_pending)
					post_served_close(e);
				if (!e->bound) {
					e->closed = true; /* its bind fails */
					pp = &e->next;
					continue;
				}
				served_forget(tr, pp);
			} else {
				*pp = e->next;
				post_gw_end(e);
				free(e);
				SUB(tr->gw_open, 1);
			}
		}
	}
	pthread_mutex_unlock(&tr->mu);
}

void tail_relay_stats(struct tail_relay *tr, struct tail_stats *st)
{
	*st = (struct tail_stats){
		.gw_open = GET(tr->gw_open),
		.gw_opened = GET(tr->gw_opened),
		.gw_resubs = GET(tr->gw_resubs),
		.gw_bytes_in = GET(tr->gw_bytes_in),
		.gw_dups = GET(tr->gw_dups),
		.served_open = GET(tr->served_open),
		.served_total = GET(tr->served_total),
		.served_full = GET(tr->served_full),
		.served_bytes = GET(tr->served_bytes),
		.served_unsent = GET(tr->served_unsent),
		.bad_frames = GET(tr->bad_frames),
		.reads = GET(tr->st_reads),
		.read_retries = GET(tr->st_read_retries),
		.read_giveups = GET(tr->st_read_giveups),
		.reads_served = GET(tr->st_reads_served),
		.checks = GET(tr->st_checks),
		.check_giveups = GET(tr->st_check_giveups),
		.checks_served = GET(tr->st_checks_served),
		.xreads = GET(tr->st_xreads),
		.xread_giveups = GET(tr->st_xread_giveups),
		.xreads_served = GET(tr->st_xreads_served),
		.xread_cut = GET(tr->st_xread_cut)};
}

size_t tail_relay_metrics_text(struct tail_relay *tr, char *buf, size_t cap)
{
	struct srv_text o = {buf, cap, 0};
	struct tail_stats st;
	tail_relay_stats(tr, &st);
	struct {
		const char *name, *type, *help;
		uint64_t v;
	} rows[] = {
		{"parley_tail_remote_open", "gauge",
		 "Inbox tails of this node's clients served by another node "
		 "(the inbox partition is not held here).", st.gw_open},
		{"parley_tail_remote_subscribes_total", "counter",
		 "Remote tail subscriptions sent (first ones and "
		 "re-subscriptions).", st.gw_opened},
		{"parley_tail_resubscribes_total", "counter",
		 "Remote tails re-subscribed after their holder, its link or "
		 "its subscription went away.", st.gw_resubs},
		{"parley_tail_remote_bytes_total", "counter",
		 "TAIL_DATA bytes received for this node's clients.",
		 st.gw_bytes_in},
		{"parley_tail_resent_dropped_total", "counter",
		 "EVENTs a re-subscription sent again that the device already "
		 "had (dropped here).", st.gw_dups},
		{"parley_tail_served_open", "gauge",
		 "Inbox tails served here for other nodes' clients.",
		 st.served_open},
		{"parley_tail_served_total", "counter",
		 "Inbox tails started here for other nodes' clients.",
		 st.served_total},
		{"parley_tail_served_full_total", "counter",
		 "Tail subscriptions refused: TAIL_MAX_PER_NODE served for that "
		 "node.", st.served_full},
		{"parley_tail_served_bytes_total", "counter",
		 "TAIL_DATA bytes sent to other nodes.", st.served_bytes},
		{"parley_tail_served_unsent_total", "counter",
		 "Served tails ended because the peer link refused a frame.",
		 st.served_unsent},
		{"parley_tail_remote_reads_total", "counter",
		 "Inbox pointers resolved by the leader of their conversation's "
		 "partition (not held here).", st.reads},
		{"parley_tail_remote_read_retries_total", "counter",
		 "Remote reads asked again (timeout, link down, no answer).",
		 st.read_retries},
		{"parley_tail_remote_read_giveups_total", "counter",
		 "Remote reads given up: the device got a placeholder.",
		 st.read_giveups},
		{"parley_tail_reads_served_total", "counter",
		 "Remote reads answered here for other nodes.", st.reads_served},
		{"parley_tail_remote_checks_total", "counter",
		 "SENDs' checks that their conversation was opened, asked of "
		 "the leader of its open record's partition (not held here).",
		 st.checks},
		{"parley_tail_remote_check_giveups_total", "counter",
		 "Remote checks given up (the SEND failed AGAIN).",
		 st.check_giveups},
		{"parley_tail_checks_served_total", "counter",
		 "Remote checks answered here for other nodes.",
		 st.checks_served},
		{"parley_tail_remote_xreads_total", "counter",
		 "Reads of partitions not held here (a multi-partition "
		 "request's secondary reads) asked of their leader.",
		 st.xreads},
		{"parley_tail_remote_xread_giveups_total", "counter",
		 "Remote reads of partitions not held here given up (AGAIN).",
		 st.xread_giveups},
		{"parley_tail_xreads_served_total", "counter",
		 "Remote reads of partitions answered here for other nodes.",
		 st.xreads_served},
		{"parley_tail_xreads_cut_total", "counter",
		 "Remote read answers cut at TAIL_XREAD_MAX_BYTES (end false).",
		 st.xread_cut},
		{"parley_tail_bad_frames_total", "counter",
		 "Undecodable TAIL_REQ / TAIL_DATA frames (dropped).",
		 st.bad_frames},
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
		srv_text_put(&o, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n",
			     rows[i].name, rows[i].help, rows[i].name,
			     rows[i].type, rows[i].name, rows[i].v);
	return o.n;
}
