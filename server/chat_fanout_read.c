/*
 * chat_fanout_read.c — read fan-out for large groups: the activity table,
 * the read-mode fan-out of one message (live EVENTs + coalesced ACTIVITY
 * pointers), the ACTIVITY acknowledgement, and GROUP_CATCHUP. The model
 * is in chat.h ("read fan-out for large groups").
 *
 * Why the server posts live EVENTs itself instead of giving each
 * connection an engine subscription on c/<group>: a 500-member group
 * would hold 500 subscriptions on one stream (each append walks them on
 * the shard, and a member of 40 large groups holds 40 per device), while
 * the fan-out thread already has the message in hand and the set of
 * members at its seq; one encode, one copy per connection. A live EVENT
 * that does not reach the device (disconnect, crash) is not retried by
 * the server: the device reads it back with GROUP_CATCHUP from its own
 * position when it reconnects (libparley does), and devices that were
 * not connected get an ACTIVITY pointer.
 *
 * Invariants
 *   1. A read-mode message reaches each member at its seq either as a live
 *      post to every subscribed connection of the member, or (no such
 *      connection) by an ACTIVITY pointer of the group in the member's
 *      inbox that no device has acknowledged yet (written now, or
 *      earlier and still outstanding): a device that processes that
 *      pointer after the message was stored reads the message back.
 *   2. The activity table never claims a pointer that was not issued: an
 *      entry is set right before its append is issued; an append that
 *      fails is logged (fanout_errors) like any fan-out append.
 *   3. ACTIVITY producers mix a per-process random value into
 *      H(conv, seq): within a process a re-fan-out of the same seq is
 *      idempotent; after a restart (table empty) the pointer is a new
 *      entry, never swallowed as a duplicate of an acknowledged one.
 *
 * Across nodes (chat.h, "Live EVENTs to members connected to other
 * nodes"): the LIVE payloads go, with the where hook, only to the nodes
 * a member is online on, each naming its members (struct relay_out).
 *
 * Bounds: CHAT_ACT_MAX table slots (full: pointers are written, not
 * coalesced); members are copied per message (<= CHAT_GROUP_MAX_HARD);
 * at most CHAT_RD_RELAY_NODES LIVE payloads per message.
 * Threads: the table has its own mutex; chat_rd_fanout runs on the
 * fan-out thread; the rest from any thread.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "chat.h"
#include "chat_rd.h"
#include "parley_proto.h"
#include "route.h"

/* ---- the activity table ------------------------------------------------------- */

struct act_slot {
	uint64_t k0, k1;   /* 128-bit key of (user, conv); 0, 0 = empty */
	uint64_t seq;      /* conv_seq of the outstanding pointer */
};

struct chat_act {
	pthread_mutex_t mu;
	struct act_slot *tab;
	uint32_t cap, n, max;
};

struct chat_act *chat_act_new(uint32_t max_slots)
{
	struct chat_act *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	pthread_mutex_init(&t->mu, NULL);
	t->max = max_slots < 64 ? 64 : max_slots;
	return t;
}

void chat_act_free(struct chat_act *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->mu);
	free(t->tab);
	free(t);
}

static void act_key(const char *user, size_t ulen, const char *conv,
		    size_t clen, uint64_t *k0, uint64_t *k1)
{
	uint8_t in[1 + 255 + 1 + 255];
	size_t n = 0;
	in[n++] = (uint8_t)ulen;
	memcpy(in + n, user, ulen);
	n += ulen;
	in[n++] = (uint8_t)clen;
	memcpy(in + n, conv, clen);
	n += clen;
	*k0 = parley_xxh3(in, n, 0x6163746976697479ull);
	*k1 = parley_xxh3(in, n, 0x7265616466616e6full);
	if (*k0 == 0 && *k1 == 0)
		*k1 = 1;
}

static uint32_t act_find(const struct chat_act *t, uint64_t k0, uint64_t k1,
			 bool *found)
{
	uint32_t m = t->cap - 1;
	for (uint32_t i = (uint32_t)k0 & m;; i = (i + 1) & m) {
		const struct act_slot *s = &t->tab[i];
		if (s->k0 == k0 && s->k1 == k1) {
			*found = true;
			return i;
		}
		if (s->k0 == 0 && s->k1 == 0) {
			*found = false;
			return i;
		}
	}
}

static bool act_grow(struct chat_act *t)
{
	uint32_t cap = t->cap ? t->cap * 2 : 256;
	if (cap > t->max)
		return false;
	struct act_slot *nt = calloc(cap, sizeof *nt);
	if (!nt)
		return false;
	struct act_slot *old = t->tab;
	uint32_t ocap = t->cap;
	t->tab = nt;
	t->cap = cap;
	for (uint32_t i = 0; i < ocap; i++) {
		if (old[i].k0 == 0 && old[i].k1 == 0)
			continue;
		bool f;
		t->tab[act_find(t, old[i].k0, old[i].k1, &f)] = old[i];
	}
	free(old);
	return true;
}

bool chat_act_test_set(struct chat_act *t, const char *user, size_t ulen,
		       const char *conv, size_t clen, uint64_t seq)
{
	uint64_t k0, k1;
	act_key(user, ulen, conv, clen, &k0, &k1);
	pthread_mutex_lock(&t->mu);
	bool found = false;
	uint32_t i = 0;
	if (t->cap)
		i = act_find(t, k0, k1, &found);
	if (found) {
		pthread_mutex_unlock(&t->mu);
		return false; /* one is outstanding: coalesced */
	}
	/* load <= 3/4; at the bound the set is not recorded (write anyway) */
	if ((!t->cap || (t->n + 1) * 4 > t->cap * 3) && !act_grow(t) &&
	    (!t->cap || (t->n + 1) * 4 > t->cap * 3)) {
		pthread_mutex_unlock(&t->mu);
		return true;
	}
	i = act_find(t, k0, k1, &found);
	t->tab[i] = (struct act_slot){k0, k1, seq};
	t->n++;
	pthread_mutex_unlock(&t->mu);
	return true;
}

bool chat_act_clear(struct chat_act *t, const char *user, size_t ulen,
		    const char *conv, size_t clen, uint64_t seq)
{
	uint64_t k0, k1;
	act_key(user, ulen, conv, clen, &k0, &k1);
	pthread_mutex_lock(&t->mu);
	bool found = false;
	uint32_t i = t->cap ? act_find(t, k0, k1, &found) : 0;
	if (!found || t->tab[i].seq != seq) {
		pthread_mutex_unlock(&t->mu);
		return false;
	}
	/* backward-shift deletion keeps linear probing exact */
	uint32_t m = t->cap - 1;
	uint32_t hole = i;
	for (uint32_t j = (i + 1) & m;; j = (j + 1) & m) {
		struct act_slot *s = &t->tab[j];
		if (s->k0 == 0 && s->k1 == 0)
			break;
		uint32_t home = (uint32_t)s->k0 & m;
		/* s may move into the hole when its home is not in (hole, j] */
		bool stays = hole <= j ? (home > hole && home <= j)
				       : (home > hole || home <= j);
		if (!stays) {
			t->tab[hole] = *s;
			hole = j;
		}
	}
	t->tab[hole] = (struct act_slot){0, 0, 0};
	t->n--;
	pthread_mutex_unlock(&t->mu);
	return true;
}

uint32_t chat_act_count(struct chat_act *t)
{
	pthread_mutex_lock(&t->mu);
	uint32_t n = t->n;
	pthread_mutex_unlock(&t->mu);
	return n;
}

/* ---- the service state ------------------------------------------------------------ */

struct chat_rd {
	_Atomic uint32_t min;
	_Atomic(chat_live_fn) live;
	void *_Atomic live_arg;
	_Atomic(chat_live_relay_fn) relay;
	void *_Atomic relay_arg;
	_Atomic(chat_live_where_fn) where;
	void *_Atomic where_arg;
	struct chat_act *act;
	uint64_t boot;           /* invariant 3 */
	_Atomic uint64_t msgs, live_posts, activity, coalesced, catchups;
	_Atomic uint64_t relayed, relay_skipped, live_remote, live_in;
	_Atomic uint64_t live_in_idle;
};

struct chat_rd *chat_rd_new(void)
{
	struct chat_rd *rd = calloc(1, sizeof *rd);
	if (!rd)
		return NULL;
	rd->act = chat_act_new(CHAT_ACT_MAX);
	if (!rd->act) {
		free(rd);
		return NULL;
	}
	atomic_store(&rd->min, CHAT_RD_MIN_DEFAULT);
	if (getrandom(&rd->boot, sizeof rd->boot, 0) != sizeof rd->boot)
		rd->boot = parley_mono_ns() ^ (uint64_t)(uintptr_t)rd;
	return rd;
}

void chat_rd_free(struct chat_rd *rd)
{
	if (!rd)
		return;
	chat_act_free(rd->act);
	free(rd);
}

void chat_set_live(struct chat *c, chat_live_fn fn, void *arg)
{
	struct chat_rd *rd = chat_rd_of(c);
	atomic_store(&rd->live_arg, arg);
	atomic_store(&rd->live, fn);
}

void chat_set_live_relay(struct chat *c, chat_live_relay_fn fn, void *arg)
{
	struct chat_rd *rd = chat_rd_of(c);
	atomic_store(&rd->relay_arg, arg);
	atomic_store(&rd->relay, fn);
}

void chat_set_live_where(struct chat *c, chat_live_where_fn fn, void *arg)
{
	struct chat_rd *rd = chat_rd_of(c);
	atomic_store(&rd->where_arg, arg);
	atomic_store(&rd->where, fn);
}

int chat_rd_live_recv(struct chat *c, const uint8_t *p, uint32_t n)
{
	struct chat_rd *rd = chat_rd_of(c);
	/* validate the whole payload before posting anything */
	uint32_t nu, off;
	if (chat_rd_live_decode(p, n, &nu, &off))
		return -PARLEY_EPROTO;
	const uint8_t *frame = p + off;
	uint32_t fl = n - off;
	chat_live_fn live = atomic_load(&rd->live);
	void *live_arg = atomic_load(&rd->live_arg);
	if (!live)
		return 0;
	unsigned posted = 0;
	off = CHAT_RD_LIVE_HDR;
	for (uint32_t i = 0; i < nu; i++) {
		uint8_t ul = p[off];
		posted += live(live_arg, (const char *)p + off + 1, ul, frame, fl);
		off += 1u + ul;
	}
	atomic_fetch_add(&rd->live_posts, posted);
	atomic_fetch_add(&rd->live_remote, posted);
	atomic_fetch_add(&rd->live_in, 1);
	if (!posted)
		atomic_fetch_add(&rd->live_in_idle, 1);
	return (int)posted;
}

void chat_set_group_read_min(struct chat *c, uint32_t min_members)
{
	atomic_store(&chat_rd_of(c)->min, min_members);
}

uint32_t chat_group_read_min(struct chat *c)
{
	return atomic_load(&chat_rd_of(c)->min);
}

void chat_rd_get_stats(struct chat *c, struct chat_rd_stats *out)
{
	struct chat_rd *rd = chat_rd_of(c);
	out->msgs = atomic_load(&rd->msgs);
	out->live = atomic_load(&rd->live_posts);
	out->activity = atomic_load(&rd->activity);
	out->coalesced = atomic_load(&rd->coalesced);
	out->catchups = atomic_load(&rd->catchups);
	out->relayed = atomic_load(&rd->relayed);
	out->relay_skipped = atomic_load(&rd->relay_skipped);
	out->live_remote = atomic_load(&rd->live_remote);
	out->live_in = atomic_load(&rd->live_in);
	out->live_in_idle = atomic_load(&rd->live_in_idle);
	out->outstanding = chat_act_count(rd->act);
}

void chat_activity_acked(struct chat *c, const char *user, size_t ulen,
			 const char *conv, size_t clen, uint64_t conv_seq)
{
	if (ulen > 255 || clen > 255)
		return;
	chat_act_clear(chat_rd_of(c)->act, user, ulen, conv, clen, conv_seq);
}

/* ---- the read-mode fan-out of one message ------------------------------------------- */

struct members {
	uint32_t n, cap;
	struct {
		uint8_t ulen;
		char user[PARLEY_PROTO_MAX_USER_ID];
	} *u;
	bool oom;
};

static void members_add(void *arg, const char *user, size_t ulen, int role)
{
	(void)role;
	struct members *ms = arg;
	if (ms->oom || ulen > PARLEY_PROTO_MAX_USER_ID)
		return;
	if (ms->n == ms->cap) {
		uint32_t cap = ms->cap ? ms->cap * 2 : 128;
		void *p = realloc(ms->u, (size_t)cap * sizeof *ms->u);
		if (!p) {
			ms->oom = true;
			return;
		}
		ms->u = p;
		ms->cap = cap;
	}
	ms->u[ms->n].ulen = (uint8_t)ulen;
	memcpy(ms->u[ms->n].user, user, ulen);
	ms->n++;
}

static void producer_activity(uint8_t out[16], const char *conv, size_t len,
			      uint64_t seq, uint64_t boot)
{
	uint8_t in[1 + 2 + 255 + 8 + 8];
	PARLEY_ASSERT(len <= 255);
	in[0] = 'A';
	le_put16(in + 1, (uint16_t)len);
	memcpy(in + 3, conv, len);
	le_put64(in + 3 + len, seq);
	le_put64(in + 11 + len, boot);
	le_put64(out, parley_xxh3(in, 11 + len + 8, 0x7061726c65792d31ull));
	le_put64(out + 8, parley_xxh3(in, 11 + len + 8, 0x6368617466616e6full));
}

/* The LIVE payloads of one message being built (chat.h): one per other
 * node (node 0: every node, the payload without a where hook), each
 * allocated at the first member named for it, sized for all members. */
struct relay_out {
	bool on;
	uint32_t cap;                  /* bytes of each payload's buffer */
	uint32_t n;                    /* nodes in use */
	struct {
		uint64_t node;
		uint8_t *b;
		uint32_t users, off;
	} v[CHAT_RD_RELAY_NODES];
};

static void relay_out_init(struct relay_out *ro, bool on,
			   const struct members *ms, uint32_t frame_len)
{
	memset(ro, 0, sizeof *ro);
	ro->on = on;
	/* every member named once at most, in any one payload */
	size_t cap = CHAT_RD_LIVE_HDR + (size_t)frame_len;
	for (uint32_t i = 0; i < ms->n; i++)
		cap += 1u + ms->u[i].ulen;
	ro->cap = (uint32_t)cap;
}

static void relay_out_add(struct relay_out *ro, uint64_t node, const char *u,
			  uint8_t ul)
{
	if (!ro->on)
		return;
	uint32_t k = 0;
	while (k < ro->n && ro->v[k].node != node)
		k++;
	if (k == ro->n) {
		if (ro->n == CHAT_RD_RELAY_NODES)
			return; /* more nodes than a cluster has */
		uint8_t *b = malloc(ro->cap);
		if (!b)
			return; /* no relay there: the pointers cover it */
		ro->v[k].node = node;
		ro->v[k].b = b;
		ro->v[k].users = 0;
		ro->v[k].off = CHAT_RD_LIVE_HDR;
		ro->n++;
	}
	PARLEY_ASSERT(ro->v[k].off + 1u + ul <= ro->cap);
	ro->v[k].b[ro->v[k].off] = ul;
	memcpy(ro->v[k].b + ro->v[k].off + 1, u, ul);
	ro->v[k].off += 1u + ul;
	ro->v[k].users++;
}

/* Hands each payload to relay; returns how many. */
static unsigned relay_out_send(struct relay_out *ro, const uint8_t *frame,
			       chat_live_relay_fn relay, void *relay_arg)
{
	unsigned sent = 0;
	for (uint32_t k = 0; k < ro->n; k++) {
		uint32_t flen = le_get32(frame) + 4u;
		PARLEY_ASSERT(ro->v[k].off + flen <= ro->cap);
		le_put32(ro->v[k].b, ro->v[k].users);
		memcpy(ro->v[k].b + ro->v[k].off, frame, flen);
		relay(relay_arg, ro->v[k].node, ro->v[k].b,
		      ro->v[k].off + flen);
		sent++;
	}
	return sent;
}

static void relay_out_free(struct relay_out *ro)
{
	for (uint32_t k = 0; k < ro->n; k++)
		free(ro->v[k].b);
}

int chat_rd_fanout(struct chat *c, const char *conv, size_t len,
		   const struct pe_entry *ent,
		   int (*issue)(void *arg, const struct chat_fanout_item *it,
				const uint8_t *payload, uint32_t plen),
		   void *arg)
{
	struct chat_rd *rd = chat_rd_of(c);
	uint32_t min = atomic_load(&rd->min);
	if (ent->type != CHAT_ENT_MSG || min == 0 || len > 250)
		return 0;
	struct chat_msg m;
	if (chat_msg_decode(ent->payload, ent->len, &m))
		return 0; /* the write path reports it */
	struct members ms = {0};
	int cnt = chat_members_each(c, conv, len, ent->seq, 0, 0, members_add,
				    &ms);
	if (cnt < 0 || !chat_rd_is_read(min, (uint32_t)cnt) || ms.oom) {
		free(ms.u);
		return ms.oom ? -PARLEY_ENOMEM : 0;
	}
	if (!chat_member_at(c, conv, len, m.sender, m.sender_len, ent->seq)) {
		free(ms.u); /* refused at its seq: delivered to nobody */
		return 1;
	}
	/* the live EVENT, encoded once */
	struct parley_msg *ev = calloc(1, sizeof *ev);
	struct chat_fanout_item *it = calloc(1, sizeof *it);
	uint8_t *frame = NULL;
	int fl = -1;
	if (ev && it) {
		ev->type = PARLEY_T_EVENT;
		struct parley_event *e = &ev->event;
		e->inbox_seq = 0;
		e->kind = PARLEY_EV_MESSAGE;
		e->conv = (struct parley_str){conv, (uint16_t)len};
		e->conv_seq = ent->seq;
		e->sender = (struct parley_str){m.sender, m.sender_len};
		memcpy(e->client_msg_id, m.client_msg_id, 16);
		e->server_ts_ms = ent->ts_ms;
		e->content_type = m.content_type;
		e->body = (struct parley_bytes){m.body, m.body_len};
		chat_edit_event_state(c, e);
		fl = parley_proto_size(ev);
		if (fl > 0)
			frame = malloc((size_t)fl);
		if (frame && parley_proto_encode(frame, (size_t)fl, 0, ev) != fl) {
			free(frame);
			frame = NULL;
		}
	}
	if (!ev || !it) {
		free(ev);
		free(it);
		free(ms.u);
		return -PARLEY_ENOMEM;
	}
	chat_live_fn live = atomic_load(&rd->live);
	void *live_arg = atomic_load(&rd->live_arg);
	chat_live_relay_fn relay = atomic_load(&rd->relay);
	void *relay_arg = atomic_load(&rd->relay_arg);
	chat_live_where_fn where = relay ? atomic_load(&rd->where) : NULL;
	void *where_arg = atomic_load(&rd->where_arg);
	/* the LIVE payloads for the other nodes (chat.h): per node with a
	 * member online there (where), or one for every node (no where) */
	struct relay_out ro;
	relay_out_init(&ro, relay && frame, &ms, frame ? (uint32_t)fl : 0);
	int rc = 0;
	for (uint32_t i = 0; i < ms.n && !rc; i++) {
		const char *u = ms.u[i].user;
		uint8_t ul = ms.u[i].ulen;
		unsigned posted = live && frame
					  ? live(live_arg, u, ul, frame, (uint32_t)fl)
					  : 0;
		if (posted)
			atomic_fetch_add(&rd->live_posts, posted);
		if (where && ul) {
			uint64_t nodes[CHAT_RD_RELAY_NODES];
			unsigned nn = where(where_arg, u, ul, nodes,
					    CHAT_RD_RELAY_NODES);
			for (unsigned k = 0; k < nn && k < CHAT_RD_RELAY_NODES;
			     k++) {
				bool dup = !nodes[k];
				for (unsigned j = 0; j < k && !dup; j++)
					dup = nodes[j] == nodes[k];
				if (!dup) /* named once per payload */
					relay_out_add(&ro, nodes[k], u, ul);
			}
			if (!nn)
				atomic_fetch_add(&rd->relay_skipped, 1);
		} else if (!posted && ul) {
			relay_out_add(&ro, 0, u, ul);
		}
		if (posted)
			continue;
		if (!chat_act_test_set(rd->act, u, ul, conv, len, ent->seq)) {
			atomic_fetch_add(&rd->coalesced, 1);
			continue;
		}
		memset(it, 0, sizeof *it);
		int kl = chat_key_inbox(it->key, u, ul);
		struct chat_ptr p = {.kind = PARLEY_EV_ACTIVITY, .conv = conv,
				     .conv_len = (uint16_t)len,
				     .conv_seq = ent->seq};
		int pl = chat_ptr_encode(it->payload, sizeof it->payload, &p);
		if (kl < 0 || pl < 0)
			continue;
		it->klen = (uint8_t)kl;
		it->len = (uint16_t)pl;
		it->type = CHAT_ENT_PTR;
		producer_activity(it->producer, conv, len, ent->seq, rd->boot);
		rc = issue(arg, it, NULL, 0);
		atomic_fetch_add(&rd->activity, 1);
	}
	if (!rc)
		atomic_fetch_add(&rd->relayed,
				 relay_out_send(&ro, frame, relay, relay_arg));
	relay_out_free(&ro);
	atomic_fetch_add(&rd->msgs, 1);
	free(frame);
	free(ev);
	free(it);
	free(ms.u);
	return rc ? rc : 1;
}

/* ---- GROUP_CATCHUP -------------------------------------------------------------------- */

struct catchup_ctx {
	struct chat *c;
	chat_history_cb cb;
	void *arg;
	uint64_t from, to;      /* [from, to] requested */
	uint32_t max_frame;
	uint16_t clen;
	uint8_t ulen;
	char conv[250];
	char user[PARLEY_PROTO_MAX_USER_ID];
};

/* The page (pure but for the membership questions): entries of r are
 * newest first; the records go out oldest first. */
static void catchup_page(struct catchup_ctx *x, const struct pe_read_result *r,
			 const struct chat_edit_state *st, struct parley_msg *m)
{
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_GROUP_CATCHUP_OK;
	struct parley_history_page *hp = &m->history_page;
	hp->conv = (struct parley_str){x->conv, x->clen};
	size_t size = PARLEY_PROTO_HEADER_SIZE + 2 + x->clen + 8 + 1 + 2;
	uint64_t next = x->to + 1;
	for (uint32_t k = r->count; k-- > 0;) {
		const struct pe_entry *e = &r->entries[k];
		if (e->seq < x->from || e->seq > x->to)
			continue;
		struct chat_msg cm;
		if (e->type != CHAT_ENT_MSG ||
		    chat_msg_decode(e->payload, e->len, &cm) ||
		    !chat_member_at(x->c, x->conv, x->clen, cm.sender,
				    cm.sender_len, e->seq) ||
		    !chat_member_at(x->c, x->conv, x->clen, x->user, x->ulen,
				    e->seq))
			continue;
		if (hp->count == PARLEY_PROTO_MAX_HISTORY) {
			next = e->seq;
			break;
		}
		struct parley_hist_msg *h = &hp->msgs[hp->count];
		memset(h, 0, sizeof *h);
		h->seq = e->seq;
		h->ts_ms = e->ts_ms;
		h->sender = (struct parley_str){cm.sender, cm.sender_len};
		memcpy(h->client_msg_id, cm.client_msg_id, 16);
		h->content_type = cm.content_type;
		h->body = (struct parley_bytes){cm.body, cm.body_len};
		h->kind = PARLEY_EV_MESSAGE;
		if (st && st[k].flags) { /* edited or deleted (chat_edit.c) */
			h->flags = st[k].flags;
			if (!(st[k].flags & PARLEY_MSGF_DELETED))
				h->content_type = st[k].content_type;
			h->body = (struct parley_bytes){st[k].body, st[k].body_len};
		}
		size_t hs = parley_proto_hist_msg_size(h);
		if (size + hs > x->max_frame) {
			next = e->seq;
			break;
		}
		size += hs;
		hp->count++;
	}
	/* a window wholly below what retention left: skip to the first
	 * retained seq instead of paging through the gap */
	if (hp->count == 0 && r->first_seq > next)
		next = r->first_seq;
	/* the end: the group's last seq is covered */
	if (next > r->last_seq)
		hp->flags |= PARLEY_HISTF_END;
	if (next > r->last_seq + 1 && r->last_seq)
		next = r->last_seq + 1;
	hp->next_before_seq = next;
}

static void catchup_fold_cb(void *arg, int err, const struct pe_read_result *r,
			    const struct chat_edit_state *st)
{
	struct catchup_ctx *x = arg;
	if (err) {
		x->cb(x->arg, err, NULL);
	} else {
		struct parley_msg *m = malloc(sizeof *m);
		if (m)
			catchup_page(x, r, st, m);
		x->cb(x->arg, m ? 0 : -PARLEY_ENOMEM, m);
		free(m);
		atomic_fetch_add(&chat_rd_of(x->c)->catchups, 1);
	}
	free(x);
}

static void catchup_read_cb(void *arg, const struct pe_read_result *r)
{
	struct catchup_ctx *x = arg;
	int rc = r->err;
	if (rc == -PARLEY_ETRIMMED)
		rc = 0; /* fewer entries: what retention left */
	if (!rc)
		rc = chat_edit_fold(x->c, x->conv, x->clen, r, catchup_fold_cb, x);
	if (rc) {
		x->cb(x->arg, rc, NULL);
		free(x);
	}
}

int chat_group_catchup(struct chat *c, const char *user, size_t ulen,
		       const char *conv, size_t clen, uint64_t from,
		       uint16_t limit, uint32_t max_frame, chat_history_cb cb,
		       void *arg)
{
	if (!chat_conv_is_group(conv, clen))
		return -PARLEY_ENOTFOUND;
	if (from == 0 || limit == 0 || limit > PARLEY_PROTO_MAX_HISTORY ||
	    ulen > PARLEY_PROTO_MAX_USER_ID)
		return -PARLEY_EINVAL;
	int role = chat_member_role(c, conv, clen, user, ulen);
	if (role < 0)
		return role;
	/* a removed member still reads what it was a member for */
	if (role == CHAT_ROLE_NONE &&
	    !chat_member_at(c, conv, clen, user, ulen, from))
		return -PARLEY_EPERM;
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, conv, clen);
	if (kl < 0)
		return kl;
	struct catchup_ctx *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	*x = (struct catchup_ctx){.c = c, .cb = cb, .arg = arg, .from = from,
				  .to = from + limit - 1, .max_frame = max_frame,
				  .clen = (uint16_t)clen, .ulen = (uint8_t)ulen};
	memcpy(x->conv, conv, clen);
	memcpy(x->user, user, ulen);
	/* backward from the window's end: the edit fold wants newest first;
	 * refused at once, naming the partition, where it is not held
	 * (route_read; the membership check above refuses first on such a
	 * node, as on any that does not lead the group) */
	struct pe_read_req q = {.key = key, .klen = (size_t)kl, .from = x->to,
				.dir = PE_BACKWARD, .limit = limit};
	int rc = route_read(chat_engine(c), &q, catchup_read_cb, x);
	if (rc)
		free(x);
	return rc;
}
