/*
 * presence.c — the presence and typing registry of presence.h: the pure
 * core (sessions, online state, typing coalescing and expiry), the
 * sharded registry, the sweep thread, durable last_seen and settings, and
 * the pushes to connections.
 *
 * Ownership: entries belong to the registry (freed by the sweep, or by
 * presence_close); a struct presence_conn belongs to its connection's
 * loop thread and holds pointers to the entries it keeps alive (its own
 * session's entry and the entries it subscribes to): an entry with a
 * session or a subscriber is never freed. Engine callback contexts are
 * malloc'd by the issuer and freed by the callback.
 *
 * Across nodes (presence.h, "across the nodes of a cluster"): the relay
 * hook sends presence_relay.h payloads; remote sessions are pres_user
 * fields like local ones; payloads from other nodes and link changes
 * arrive on the peer node thread and take the shard locks like a loop.
 *
 * Threads: see presence.h. Every struct pres_user field is guarded by its
 * shard's mutex; struct presence_conn is loop-thread only.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "conn.h"
#include "errmap.h"
#include "loop.h"
#include "presence.h"
#include "presence_relay.h"

#define PRES_REC_VERSION 1u
#define PRES_PEERS 16u /* other nodes tracked (>= PEER_NODE_MAX_PEERS) */

const struct pe_retention_rule presence_retention[] = {
	{.prefix = "p/", .plen = 2, .max_count = PRESENCE_RETAIN},
	{.prefix = "ps/", .plen = 3, .max_count = PRESENCE_RETAIN},
};
const size_t presence_nretention =
	sizeof presence_retention / sizeof *presence_retention;

/* ---- pure core ------------------------------------------------------------------ */

static bool peer_eq(struct conn_ref a, struct conn_ref b)
{
	return a.lp == b.lp && a.slot == b.slot && a.gen == b.gen;
}

int pres_sess_add(struct pres_user *u, struct conn_ref h, uint64_t now_ns,
		  uint64_t now_ms)
{
	if (u->nsess == u->capsess) {
		uint32_t cap = u->capsess ? u->capsess * 2 : 2;
		struct pres_sess *n = realloc(u->sess, cap * sizeof *n);
		if (!n)
			return -PARLEY_ENOMEM;
		u->sess = n;
		u->capsess = cap;
	}
	u->sess[u->nsess++] = (struct pres_sess){h, now_ns};
	u->active_ms = now_ms;
	return 0;
}

bool pres_sess_del(struct pres_user *u, struct conn_ref h, uint64_t now_ms)
{
	for (uint32_t i = 0; i < u->nsess; i++) {
		if (peer_eq(u->sess[i].h, h)) {
			u->sess[i] = u->sess[--u->nsess];
			u->active_ms = now_ms;
			return true;
		}
	}
	return false;
}

bool pres_sess_beat(struct pres_user *u, struct conn_ref h, uint64_t now_ns,
		    uint64_t now_ms)
{
	for (uint32_t i = 0; i < u->nsess; i++) {
		if (peer_eq(u->sess[i].h, h)) {
			u->sess[i].hb_ns = now_ns;
			u->active_ms = now_ms;
			return true;
		}
	}
	return false;
}

int pres_user_update(struct pres_user *u, uint64_t now_ns, uint64_t ttl_ns)
{
	bool lon = false;
	/* A beat newer than now_ns is alive: the sweep reads its clock once
	 * before taking the shard lock, so a session added or beaten after
	 * that read carries a later hb_ns; the unsigned difference would
	 * wrap and report a live device expired (an OFFLINE push, then
	 * ONLINE again on the next pass). */
	for (uint32_t i = 0; i < u->nsess && !lon; i++)
		lon = u->sess[i].hb_ns >= now_ns ||
		      now_ns - u->sess[i].hb_ns < ttl_ns;
	if (u->local_online && !lon) { /* our sessions ended: durable */
		u->last_seen_ms = u->active_ms;
		u->dirty = true;
	}
	u->local_online = lon;
	bool on = lon || u->nremote > 0;
	if (on == u->online)
		return 0;
	u->online = on;
	if (on)
		return 1;
	if (u->active_ms > u->last_seen_ms)
		u->last_seen_ms = u->active_ms;
	return -1;
}

bool pres_remote_set(struct pres_user *u, uint64_t node, uint64_t until_ns,
		     uint32_t gen)
{
	for (uint32_t i = 0; i < u->nremote; i++)
		if (u->remote[i].node == node) {
			u->remote[i].until_ns = until_ns;
			u->remote[i].gen = gen;
			return true;
		}
	if (u->nremote == PRESENCE_REMOTE_MAX)
		return false;
	if (u->nremote == u->capremote) { /* one node at first, then 8 */
		uint32_t cap = u->capremote ? PRESENCE_REMOTE_MAX : 1;
		struct pres_remote *r = realloc(u->remote, cap * sizeof *r);
		if (!r)
			return false;
		u->remote = r;
		u->capremote = cap;
	}
	u->remote[u->nremote++] = (struct pres_remote){node, until_ns, gen};
	return true;
}

bool pres_remote_drop_older(struct pres_user *u, uint64_t node, uint32_t gen)
{
	for (uint32_t i = 0; i < u->nremote; i++)
		if (u->remote[i].node == node) {
			if ((int32_t)(u->remote[i].gen - gen) >= 0)
				return false; /* this set's, or a later one's */
			u->remote[i] = u->remote[--u->nremote];
			return true;
		}
	return false;
}

bool pres_remote_del(struct pres_user *u, uint64_t node)
{
	for (uint32_t i = 0; i < u->nremote; i++)
		if (u->remote[i].node == node) {
			u->remote[i] = u->remote[--u->nremote];
			return true;
		}
	return false;
}

unsigned pres_remote_expire(struct pres_user *u, uint64_t now_ns)
{
	unsigned n = 0;
	for (uint32_t i = 0; i < u->nremote;) {
		if (u->remote[i].until_ns <= now_ns) {
			u->remote[i] = u->remote[--u->nremote];
			n++;
		} else {
			i++;
		}
	}
	return n;
}

void pres_user_view(const struct pres_user *u, uint8_t *status,
		    uint64_t *last_seen_ms)
{
	*status = u->online ? PARLEY_PRESENCE_ONLINE : PARLEY_PRESENCE_OFFLINE;
	*last_seen_ms = (u->online || u->hidden || !u->loaded_set)
				? 0
				: u->last_seen_ms;
}

bool pres_user_write_due(const struct pres_user *u, uint64_t now_ms,
			 uint64_t every_ms, uint64_t *value)
{
	if (u->local_online && now_ms - u->written_ms >= every_ms) {
		*value = now_ms;
		return true;
	}
	if (!u->local_online && u->dirty) {
		*value = u->last_seen_ms;
		return true;
	}
	return false;
}

bool pres_user_idle(const struct pres_user *u)
{
	return !u->nsess && !u->nsubs && !u->ntyping && !u->dirty && !u->io &&
	       !u->nremote;
}

int pres_sub_add(struct pres_user *u, struct conn_ref h)
{
	if (u->nsubs == u->capsubs) {
		uint32_t cap = u->capsubs ? u->capsubs * 2 : 4;
		struct conn_ref *n = realloc(u->subs, cap * sizeof *n);
		if (!n)
			return -PARLEY_ENOMEM;
		u->subs = n;
		u->capsubs = cap;
	}
	u->subs[u->nsubs++] = h;
	return 0;
}

bool pres_sub_del(struct pres_user *u, struct conn_ref h)
{
	for (uint32_t i = 0; i < u->nsubs; i++) {
		if (peer_eq(u->subs[i], h)) {
			u->subs[i] = u->subs[--u->nsubs];
			return true;
		}
	}
	return false;
}

int pres_typing_update(struct pres_user *u, const char *conv, size_t clen,
		       bool started, struct conn_ref from, uint64_t now_ns,
		       uint64_t ttl_ns)
{
	PARLEY_ASSERT(clen <= PARLEY_PROTO_MAX_CONV_ID);
	struct pres_typing *t = NULL;
	for (uint32_t i = 0; i < u->ntyping; i++)
		if (u->typing[i].clen == clen &&
		    !memcmp(u->typing[i].conv, conv, clen))
			t = &u->typing[i];
	if (!started) {
		if (!t)
			return 0;
		*t = u->typing[--u->ntyping];
		return 1;
	}
	if (t) {
		t->until_ns = now_ns + ttl_ns;
		t->from = from;
		if (now_ns < t->fwd_ns + ttl_ns / 3) /* a stale now_ns too */
			return 0; /* coalesced: the receivers' TTL still runs */
		t->fwd_ns = now_ns;
		return 1;
	}
	if (u->ntyping == PRESENCE_TYPING_MAX)
		return -PARLEY_EFULL;
	if (!u->typing) {
		u->typing = malloc(PRESENCE_TYPING_MAX * sizeof *u->typing);
		if (!u->typing)
			return -PARLEY_ENOMEM;
	}
	t = &u->typing[u->ntyping++];
	t->until_ns = now_ns + ttl_ns;
	t->fwd_ns = now_ns;
	t->from = from;
	t->clen = (uint8_t)clen;
	memcpy(t->conv, conv, clen);
	return 1;
}

bool pres_typing_forget(struct pres_user *u, const char *conv, size_t clen,
			struct conn_ref *from)
{
	for (uint32_t i = 0; i < u->ntyping; i++)
		if (u->typing[i].clen == clen &&
		    !memcmp(u->typing[i].conv, conv, clen)) {
			*from = u->typing[i].from;
			u->typing[i] = u->typing[--u->ntyping];
			return true;
		}
	return false;
}

static unsigned typing_remove_if(struct pres_user *u, bool by_time,
				 uint64_t now_ns, struct conn_ref from,
				 struct pres_typing *out, unsigned cap)
{
	unsigned n = 0;
	for (uint32_t i = 0; i < u->ntyping;) {
		struct pres_typing *t = &u->typing[i];
		bool gone = by_time ? now_ns >= t->until_ns : peer_eq(t->from, from);
		if (!gone) {
			i++;
			continue;
		}
		if (n < cap)
			out[n] = *t;
		n++;
		*t = u->typing[--u->ntyping];
	}
	return n < cap ? n : cap;
}

unsigned pres_typing_expire(struct pres_user *u, uint64_t now_ns,
			    struct pres_typing *out, unsigned cap)
{
	return typing_remove_if(u, true, now_ns, (struct conn_ref){NULL, 0, 0}, out,
				cap);
}

unsigned pres_typing_drop_peer(struct pres_user *u, struct conn_ref from,
			       struct pres_typing *out, unsigned cap)
{
	return typing_remove_if(u, false, 0, from, out, cap);
}

void pres_user_free(struct pres_user *u)
{
	if (!u)
		return;
	free(u->sess);
	free(u->subs);
	free(u->typing);
	free(u->remote);
	free(u);
}

/* ---- registry ------------------------------------------------------------------------ */

struct shard {
	pthread_mutex_t mu;
	struct pres_user *b[PRESENCE_BUCKETS];
	uint32_t n;
};

struct presence {
	struct presence_config cfg;
	struct srv *s;
	struct pe_engine *e;
	struct shard sh[PRESENCE_SHARDS];
	pthread_t thr;
	pthread_mutex_t mu; /* stop flag + io wait */
	pthread_cond_t cv;
	bool stop, thread_started;
	_Atomic uint64_t io_inflight;    /* engine operations of ours */
	_Atomic uint64_t pushes_pending; /* LM_PUSH in loop queues */
	_Atomic uint64_t online, subscriptions;
	_Atomic uint64_t typing_in, typing_pushes, presence_pushes;
	_Atomic uint64_t pushes_dropped, ls_writes, ls_write_errors, loads;
	/* across nodes (presence.h): fn set after arg */
	_Atomic(presence_relay_fn) relay;
	void *_Atomic relay_arg;
	uint64_t refresh_ns; /* sweep thread: the last whole set to all */
	uint64_t resync_ns;  /* sweep thread: the last repair set */
	uint64_t resync_gap_ms; /* sweep thread: the wait before the next
				   (doubles while the sets fail themselves) */
	_Atomic uint32_t set_gen;  /* our set generation (presence_relay.h);
				      0 only until the first set */
	pthread_mutex_t set_mu;    /* one whole set sent at a time (its parts
				      and SET_END must not interleave with
				      another set's); before shard locks */
	_Atomic bool resync;       /* a payload was lost: send the set again */
	_Atomic uint64_t relay_out, relay_in, relay_dropped;
	_Atomic uint64_t typing_refused, typing_refused_in;
	_Atomic uint64_t relay_failed, sets_sent, set_dropped;
	/* the other nodes as the links tell (presence_link) and whether each
	 * sent a SET_END since its link came up (it speaks generations);
	 * one that did not is a build before them: it gets the whole set
	 * every presence_ttl_ms / 3, as it expects, and no new kind */
	pthread_mutex_t peers_mu;
	struct {
		uint64_t node;
		bool up, gen;
	} peers[PRES_PEERS];
	uint32_t npeers;
	uint64_t legacy_ns; /* sweep thread: the last set to such nodes */
};

/* Whether node's link is up and it has not shown it speaks generations
 * (a build before them, or one whose SET_END is still on its way). */
static bool peer_legacy(struct presence *p, uint64_t node);

struct presence_conn {
	struct conn_ref h;
	struct pres_user *self;          /* this connection's session entry */
	uint64_t beat_ns;                /* last heartbeat forwarded */
	uint32_t nsubs, capsubs;
	struct pres_user **subs;         /* entries subscribed to (kept alive) */
};

static void ctr(_Atomic uint64_t *c, int64_t v)
{
	atomic_fetch_add_explicit(c, (uint64_t)v, memory_order_relaxed);
}

static uint32_t user_hash(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 16777619u;
	return h;
}

static struct shard *shard_of(struct presence *p, uint32_t h)
{
	return &p->sh[h % PRESENCE_SHARDS];
}

/* Under the shard lock. */
static struct pres_user *find(struct shard *sh, uint32_t h, const char *user,
			      size_t ulen)
{
	struct pres_user *u = sh->b[(h / PRESENCE_SHARDS) % PRESENCE_BUCKETS];
	while (u && !(u->hash == h && u->ulen == ulen &&
		      !memcmp(u->user, user, ulen)))
		u = u->next;
	return u;
}

static struct pres_user *find_or_add(struct shard *sh, uint32_t h,
				     const char *user, size_t ulen)
{
	struct pres_user *u = find(sh, h, user, ulen);
	if (u)
		return u;
	u = calloc(1, sizeof *u);
	if (!u)
		return NULL;
	u->hash = h;
	u->ulen = (uint8_t)ulen;
	memcpy(u->user, user, ulen);
	struct pres_user **b = &sh->b[(h / PRESENCE_SHARDS) % PRESENCE_BUCKETS];
	u->next = *b;
	*b = u;
	sh->n++;
	return u;
}

/* ---- pushes ----------------------------------------------------------------------------- */

/* Post an encoded push frame to one connection (under the shard lock of
 * the entry it is about, see presence.h). */
static void push_post(struct presence *p, struct conn_ref to,
		      const uint8_t *frame, size_t n)
{
	if (atomic_load_explicit(&p->pushes_pending, memory_order_relaxed) >=
	    p->cfg.push_queue_max) {
		ctr(&p->pushes_dropped, 1);
		return;
	}
	struct lmsg *m = lmsg_new(LM_PUSH, (uint32_t)n);
	if (!m) {
		ctr(&p->pushes_dropped, 1);
		return;
	}
	memcpy(m->data, frame, n);
	ctr(&p->pushes_pending, 1);
	lmsg_post(&to, m);
}

void presence_push_retired(struct presence *p)
{
	if (p)
		ctr(&p->pushes_pending, -1);
}

/* Encode u's current view as a PRESENCE push into buf (>= 160 bytes). */
static int encode_presence(const struct pres_user *u, uint8_t *buf, size_t cap)
{
	struct parley_msg m = {.type = PARLEY_T_PRESENCE};
	m.presence.user = (struct parley_str){u->user, u->ulen};
	pres_user_view(u, &m.presence.status, &m.presence.last_seen_ms);
	return parley_proto_encode(buf, cap, 0, &m);
}

/* Under u's shard lock: tell every subscriber u's view. */
static void push_presence(struct presence *p, const struct pres_user *u)
{
	if (!u->nsubs)
		return;
	uint8_t buf[256];
	int n = encode_presence(u, buf, sizeof buf);
	PARLEY_ASSERT(n > 0);
	for (uint32_t i = 0; i < u->nsubs; i++)
		push_post(p, u->subs[i], buf, (size_t)n);
	ctr(&p->presence_pushes, u->nsubs);
}

/* ---- relay to the other nodes (presence_relay.h) ------------------------------- */

static bool relay_on(struct presence *p)
{
	return atomic_load_explicit(&p->relay, memory_order_acquire) != NULL;
}

/* Encodes m and hands it to the relay (to 0: every node). May run under
 * a shard lock: the relay only queues (lock order: a shard lock, then
 * the peer node's queue lock, like a loop's queue lock). */
static void relay_send(struct presence *p, uint64_t to,
		       const struct prelay_msg *m)
{
	presence_relay_fn fn = atomic_load_explicit(&p->relay,
						    memory_order_acquire);
	if (!fn)
		return;
	static _Thread_local uint8_t buf[PRELAY_MAX];
	int n = prelay_encode(buf, sizeof buf, m);
	PARLEY_ASSERT(n > 0);
	if (fn(atomic_load(&p->relay_arg), to, buf, (uint32_t)n) < 0) {
		/* not queued (a full peer queue): the others may miss a
		 * transition; the whole set repairs it (sweep thread) */
		ctr(&p->relay_failed, 1);
		atomic_store(&p->resync, true);
	}
	ctr(&p->relay_out, 1);
}

void presence_relay_unsent(struct presence *p)
{
	if (!p)
		return;
	ctr(&p->relay_failed, 1);
	atomic_store(&p->resync, true);
}

/* Under u's shard lock, after pres_user_update: tell the other nodes if
 * u's local state changed (was: local_online before), and count it in
 * `online` (users online on this node). Sent under the lock so that one
 * user's transitions leave in the order they happened. */
static void relay_local(struct presence *p, const struct pres_user *u,
			bool was)
{
	if (was == u->local_online)
		return;
	/* parley_presence_online: users online on this node */
	ctr(&p->online, u->local_online ? 1 : -1);
	if (!relay_on(p))
		return;
	struct prelay_msg m = {.kind = u->local_online ? PRELAY_ONLINE
						       : PRELAY_OFFLINE,
			       .arg = atomic_load(&p->set_gen), .count = 1};
	m.users[0] = (struct parley_str){u->user, u->ulen};
	relay_send(p, 0, &m);
}

/* Our whole local online set to node `to` (0: every node), in payloads of
 * PRELAY_USERS_MAX, under a new set generation, then SET_END (presence_
 * relay.h); each shard's part is sent under its lock (after a transition
 * sent there, never before it), and every transition from the start of
 * the set on carries its generation or a later one, so SET_END drops
 * only users that went offline without their OFFLINE arriving. A set
 * whose payloads could not all be queued ends without SET_END (the
 * repair set follows). */
static void relay_online_set_end(struct presence *p, uint64_t to, bool end)
{
	if (!relay_on(p))
		return;
	pthread_mutex_lock(&p->set_mu);
	uint32_t gen = atomic_fetch_add(&p->set_gen, 1) + 1;
	if (!gen) /* 0 stands for a node without generations */
		gen = atomic_fetch_add(&p->set_gen, 1) + 1;
	uint64_t failed = atomic_load(&p->relay_failed);
	static _Thread_local struct prelay_msg m;
	for (unsigned i = 0; i < PRESENCE_SHARDS; i++) {
		struct shard *sh = &p->sh[i];
		pthread_mutex_lock(&sh->mu);
		m = (struct prelay_msg){.kind = PRELAY_ONLINE, .arg = gen};
		for (unsigned b = 0; b < PRESENCE_BUCKETS; b++)
			for (struct pres_user *u = sh->b[b]; u; u = u->next) {
				if (!u->local_online)
					continue;
				m.users[m.count++] =
					(struct parley_str){u->user, u->ulen};
				if (m.count == PRELAY_USERS_MAX) {
					relay_send(p, to, &m);
					m.count = 0;
				}
			}
		if (m.count)
			relay_send(p, to, &m);
		pthread_mutex_unlock(&sh->mu);
	}
	if (end && atomic_load(&p->relay_failed) == failed) {
		m = (struct prelay_msg){.kind = PRELAY_SET_END, .arg = gen};
		relay_send(p, to, &m);
	}
	ctr(&p->sets_sent, 1);
	pthread_mutex_unlock(&p->set_mu);
}

static void relay_online_set(struct presence *p, uint64_t to)
{
	relay_online_set_end(p, to, true);
}

/* ---- the other nodes (legacy: before set generations) ---- */

static void peer_note(struct presence *p, uint64_t node, bool up, bool gen)
{
	pthread_mutex_lock(&p->peers_mu);
	uint32_t k = 0;
	while (k < p->npeers && p->peers[k].node != node)
		k++;
	if (k == p->npeers && p->npeers < PRES_PEERS)
		p->peers[p->npeers++].node = node;
	if (k < p->npeers) {
		if (gen) {
			p->peers[k].gen = true;
		} else {
			p->peers[k].up = up;
			p->peers[k].gen = false;
		}
	}
	pthread_mutex_unlock(&p->peers_mu);
}

static bool peer_legacy(struct presence *p, uint64_t node)
{
	bool r = false;
	pthread_mutex_lock(&p->peers_mu);
	for (uint32_t k = 0; k < p->npeers; k++)
		if (p->peers[k].node == node)
			r = p->peers[k].up && !p->peers[k].gen;
	pthread_mutex_unlock(&p->peers_mu);
	return r;
}

/* Sweep thread: the whole set, without SET_END, to each node whose link
 * is up and that sent no SET_END (it expires our users after
 * presence_ttl_ms unrefreshed). */
static void relay_legacy_sets(struct presence *p)
{
	uint64_t nodes[PRES_PEERS];
	uint32_t n = 0;
	pthread_mutex_lock(&p->peers_mu);
	for (uint32_t k = 0; k < p->npeers; k++)
		if (p->peers[k].up && !p->peers[k].gen)
			nodes[n++] = p->peers[k].node;
	pthread_mutex_unlock(&p->peers_mu);
	for (uint32_t k = 0; k < n; k++)
		relay_online_set_end(p, nodes[k], false);
}

/* The members of a conversation now (1:1 or group), copied out of the
 * chat service's lock: at most CHAT_GROUP_MAX members. */
struct members {
	uint32_t n, cap;
	struct chat_member *v; /* point into `ids` */
	char *ids;             /* n * (PARLEY_PROTO_MAX_USER_ID + 1) */
};

static void members_add(void *arg, const char *user, size_t ulen, int role)
{
	(void)role;
	struct members *ms = arg;
	if (ms->n == ms->cap || ulen > PARLEY_PROTO_MAX_USER_ID)
		return; /* grew since we sized it: the rest miss this push */
	char *d = ms->ids + (size_t)ms->n * (PARLEY_PROTO_MAX_USER_ID + 1);
	memcpy(d, user, ulen);
	ms->v[ms->n++] = (struct chat_member){d, ulen};
}

/* 0 and *ms filled (free with members_free), or -PARLEY_ENOTFOUND,
 * -PARLEY_ENOMEM. */
static int members_of(struct presence *p, const char *conv, size_t clen,
		      struct members *ms)
{
	memset(ms, 0, sizeof *ms);
	int n = chat_members_each(p->s->chat, conv, clen, UINT64_MAX, 0, 1,
				  members_add, ms);
	if (n < 0)
		return n;
	ms->cap = (uint32_t)n + 16; /* room for a few joining meanwhile */
	ms->v = malloc(ms->cap * sizeof *ms->v);
	ms->ids = malloc((size_t)ms->cap * (PARLEY_PROTO_MAX_USER_ID + 1));
	if (!ms->v || !ms->ids) {
		free(ms->v);
		free(ms->ids);
		return -PARLEY_ENOMEM;
	}
	n = chat_members_each(p->s->chat, conv, clen, UINT64_MAX, 0, 0,
			      members_add, ms);
	return n < 0 ? n : 0;
}

static void members_free(struct members *ms)
{
	free(ms->v);
	free(ms->ids);
}

/* Members online on other nodes, per node, for one typing push. */
struct typing_remote {
	uint32_t n;
	uint64_t node[PRESENCE_REMOTE_MAX];
	struct prelay_msg m[PRESENCE_REMOTE_MAX];
};

static void typing_remote_add(struct presence *p, struct typing_remote *tr,
			      const struct prelay_msg *proto, uint64_t node,
			      struct parley_str member)
{
	uint32_t k = 0;
	while (k < tr->n && tr->node[k] != node)
		k++;
	if (k == tr->n) {
		if (tr->n == PRESENCE_REMOTE_MAX)
			return; /* more nodes than a cluster has */
		tr->node[k] = node;
		tr->m[k] = *proto;
		tr->n++;
	}
	tr->m[k].users[tr->m[k].count++] = member;
	if (tr->m[k].count == PRELAY_USERS_MAX) {
		relay_send(p, node, &tr->m[k]);
		tr->m[k].count = 0;
	}
}

/* Forward a typing change of `user` in conv to every other member's
 * sessions: here, and (with a relay) as TYPING payloads to the nodes
 * where the others are online. A group whose members this node cannot
 * list (it does not lead its partition) goes to every node as
 * TYPING_REQ when `req` (a typist of this node; never for a TYPING_REQ
 * being served, so a request is relayed once). Takes each member's shard
 * lock in turn (never two). */
static void push_typing(struct presence *p, const char *user, size_t ulen,
			const char *conv, size_t clen, bool started, bool req)
{
	struct members ms;
	int mrc = members_of(p, conv, clen, &ms);
	if (mrc < 0) {
		if (req && (mrc == -PARLEY_ENOTLEADER || mrc == -PARLEY_EAGAIN)) {
			struct prelay_msg m = {.kind = PRELAY_TYPING_REQ,
					       .started = started,
					       .conv = {conv, (uint16_t)clen},
					       .user = {user, (uint16_t)ulen}};
			relay_send(p, 0, &m);
		}
		return;
	}
	struct chat_member *mem = ms.v;
	int nm = (int)ms.n;
	uint8_t buf[600];
	struct parley_msg m = {.type = PARLEY_T_TYPING_PUSH};
	m.typing_push.conv = (struct parley_str){conv, (uint16_t)clen};
	m.typing_push.user = (struct parley_str){user, (uint16_t)ulen};
	m.typing_push.state = started ? PARLEY_TYPING_STARTED
				      : PARLEY_TYPING_STOPPED;
	m.typing_push.ttl_ms = started ? p->cfg.typing_ttl_ms : 0;
	int n = parley_proto_encode(buf, sizeof buf, 0, &m);
	PARLEY_ASSERT(n > 0);
	bool remote = relay_on(p);
	struct typing_remote *tr = remote ? malloc(sizeof *tr) : NULL;
	struct prelay_msg proto = {.kind = PRELAY_TYPING,
				   .started = started,
				   .arg = m.typing_push.ttl_ms,
				   .conv = m.typing_push.conv,
				   .user = m.typing_push.user};
	if (tr)
		tr->n = 0;
	for (int i = 0; i < nm; i++) {
		if (mem[i].len == ulen && !memcmp(mem[i].p, user, ulen))
			continue; /* not to the typer's own devices */
		uint32_t h = user_hash(mem[i].p, mem[i].len);
		struct shard *sh = shard_of(p, h);
		uint64_t nodes[PRESENCE_REMOTE_MAX];
		uint32_t nn = 0;
		pthread_mutex_lock(&sh->mu);
		struct pres_user *u = find(sh, h, mem[i].p, mem[i].len);
		for (uint32_t k = 0; u && k < u->nsess; k++) {
			push_post(p, u->sess[k].h, buf, (size_t)n);
			ctr(&p->typing_pushes, 1);
		}
		for (uint32_t k = 0; tr && u && k < u->nremote; k++)
			nodes[nn++] = u->remote[k].node;
		pthread_mutex_unlock(&sh->mu);
		for (uint32_t k = 0; k < nn; k++)
			typing_remote_add(p, tr, &proto, nodes[k],
					  (struct parley_str){mem[i].p,
							      (uint16_t)mem[i].len});
	}
	for (uint32_t k = 0; tr && k < tr->n; k++)
		if (tr->m[k].count)
			relay_send(p, tr->node[k], &tr->m[k]);
	free(tr);
	members_free(&ms);
}

/* ---- durable records -------------------------------------------------------------------- */

static int key_of(char *out, const char *pfx, const char *user, size_t ulen)
{
	size_t pl = strlen(pfx);
	if (pl + ulen >= CHAT_KEY_CAP)
		return -PARLEY_EINVAL;
	memcpy(out, pfx, pl);
	memcpy(out + pl, user, ulen);
	out[pl + ulen] = '\0';
	return (int)(pl + ulen);
}

static void io_begin(struct presence *p)
{
	ctr(&p->io_inflight, 1);
}
static void io_end(struct presence *p)
{
	pthread_mutex_lock(&p->mu);
	ctr(&p->io_inflight, -1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

struct ls_write {
	struct presence *p;
	uint32_t hash;
	uint8_t ulen;
	char user[PARLEY_PROTO_MAX_USER_ID + 1];
};

static void ls_write_cb(void *arg, const struct pe_append_result *r)
{
	struct ls_write *w = arg;
	struct presence *p = w->p;
	struct shard *sh = shard_of(p, w->hash);
	pthread_mutex_lock(&sh->mu);
	struct pres_user *u = find(sh, w->hash, w->user, w->ulen);
	if (u) {
		PARLEY_ASSERT(u->io > 0);
		u->io--;
		if (r->err && !u->online)
			u->dirty = true; /* the next sweep tries again */
	}
	pthread_mutex_unlock(&sh->mu);
	if (r->err) {
		ctr(&p->ls_write_errors, 1);
		PLOG_W("presence", "last_seen write failed", "user=%s err=%s",
		       w->user, parley_errname(r->err));
	} else {
		ctr(&p->ls_writes, 1);
	}
	free(w);
	io_end(p);
}

/* Under u's shard lock: mark the write issued; returns the context to
 * pass to ls_write_issue after unlocking. */
static struct ls_write *ls_write_prepare(struct presence *p, struct pres_user *u,
					 uint64_t now_ms)
{
	struct ls_write *w = malloc(sizeof *w);
	if (!w)
		return NULL;
	w->p = p;
	w->hash = u->hash;
	w->ulen = u->ulen;
	memcpy(w->user, u->user, u->ulen);
	w->user[u->ulen] = '\0';
	u->io++;
	u->dirty = false;
	u->written_ms = now_ms;
	return w;
}

/* Appends one record (copied before return) to <pfx><user>; the caller
 * has counted the write in flight (io_begin). Through chat_append: in a
 * cluster with leadership spread over nodes the user's partition may be
 * led elsewhere, and the write goes to its leader (docs/CLUSTER.md §3.3,
 * "Forwarded appends"); durable there before the callback. */
static int rec_append(struct presence *p, const char *pfx, const char *user,
		      size_t ulen, uint16_t type, const uint8_t *rec,
		      uint32_t len, pe_append_cb cb, void *arg)
{
	char key[CHAT_KEY_CAP];
	int kl = key_of(key, pfx, user, ulen);
	PARLEY_ASSERT(kl > 0);
	struct pe_input in = {.type = type, .len = len, .payload = rec};
	struct pe_append_req q = {.key = key, .klen = (size_t)kl,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	if (p->s->chat)
		return chat_append(p->s->chat, &q, cb, arg);
	return pe_append(p->e, &q, cb, arg);
}

static void ls_write_issue(struct presence *p, struct ls_write *w,
			   uint64_t value)
{
	uint8_t rec[9];
	rec[0] = PRES_REC_VERSION;
	le_put64(rec + 1, value);
	io_begin(p);
	int rc = rec_append(p, "p/", w->user, w->ulen, CHAT_ENT_LAST_SEEN, rec,
			    sizeof rec, ls_write_cb, w);
	if (rc) {
		struct pe_append_result r = {.err = rc};
		ls_write_cb(w, &r);
	}
}

/* ---- the sweep thread ---------------------------------------------------------------------- */

#define SWEEP_BATCH 64u

struct pending_write {
	struct ls_write *w;
	uint64_t value;
};
struct pending_stop {
	uint8_t ulen;
	char user[PARLEY_PROTO_MAX_USER_ID + 1];
	struct pres_typing t;
};

/* One pass over shard i: TTL transitions, typing expiry, due writes,
 * freeing idle entries. Writes and typing stops are issued after the
 * lock is dropped (bounded batches; the rest waits for the next pass). */
static void sweep_shard(struct presence *p, unsigned i, uint64_t now_ns,
			uint64_t now_ms, bool final)
{
	static _Thread_local struct pending_write wr[SWEEP_BATCH];
	static _Thread_local struct pending_stop st[SWEEP_BATCH];
	unsigned nw = 0, ns = 0;
	uint64_t ttl_ns = (uint64_t)p->cfg.ttl_ms * 1000000ull;
	struct shard *sh = &p->sh[i];
	pthread_mutex_lock(&sh->mu);
	for (unsigned b = 0; b < PRESENCE_BUCKETS; b++) {
		struct pres_user **pp = &sh->b[b];
		while (*pp) {
			struct pres_user *u = *pp;
			if (u->nremote && pres_remote_expire(u, now_ns))
				u->active_ms = now_ms; /* for the view only */
			bool was = u->local_online;
			int tr = pres_user_update(u, now_ns, ttl_ns);
			if (tr)
				push_presence(p, u);
			relay_local(p, u, was);
			while (u->ntyping && ns < SWEEP_BATCH) {
				unsigned k = pres_typing_expire(u, now_ns,
								&st[ns].t, 1);
				if (!k)
					break;
				st[ns].ulen = u->ulen;
				memcpy(st[ns].user, u->user, u->ulen);
				ns++;
			}
			uint64_t v;
			uint64_t every = final ? 0 : p->cfg.last_seen_write_ms;
			if (nw < SWEEP_BATCH && !u->io &&
			    pres_user_write_due(u, now_ms, every, &v)) {
				struct ls_write *w = ls_write_prepare(p, u, now_ms);
				if (w)
					wr[nw++] = (struct pending_write){w, v};
			}
			if (pres_user_idle(u)) {
				*pp = u->next;
				sh->n--;
				pres_user_free(u);
				continue;
			}
			pp = &u->next;
		}
	}
	pthread_mutex_unlock(&sh->mu);
	for (unsigned k = 0; k < nw; k++)
		ls_write_issue(p, wr[k].w, wr[k].value);
	for (unsigned k = 0; k < ns; k++)
		push_typing(p, st[k].user, st[k].ulen, st[k].t.conv,
			    st[k].t.clen, false, true);
}

static void *sweep_main(void *arg)
{
	struct presence *p = arg;
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		pthread_mutex_unlock(&p->mu);
		uint64_t now_ns = parley_mono_ns(), now_ms = parley_now_ms();
		for (unsigned i = 0; i < PRESENCE_SHARDS; i++)
			sweep_shard(p, i, now_ns, now_ms, false);
		/* the whole set: the safety net every PRESENCE_SET_MS, and
		 * the repair after a lost payload, PRESENCE_RESYNC_MIN_MS
		 * after the last one, doubling up to PRESENCE_RESYNC_MAX_MS
		 * while a repair set is lost itself (a full peer queue stays
		 * full a while: sets must not feed it) */
		if (relay_on(p) && now_ns - p->legacy_ns >=
				       (uint64_t)p->cfg.ttl_ms * 1000000ull / 3) {
			p->legacy_ns = now_ns;
			relay_legacy_sets(p);
		}
		bool all = relay_on(p) && now_ns - p->refresh_ns >=
					       PRESENCE_SET_MS * 1000000ull;
		if (!p->resync_gap_ms)
			p->resync_gap_ms = PRESENCE_RESYNC_MIN_MS;
		if (all || (atomic_load(&p->resync) &&
			    now_ns - p->resync_ns >=
				    p->resync_gap_ms * 1000000ull)) {
			if (all)
				p->refresh_ns = now_ns;
			p->resync_ns = now_ns;
			atomic_store(&p->resync, false);
			uint64_t failed = atomic_load(&p->relay_failed);
			relay_online_set(p, 0);
			p->resync_gap_ms =
				atomic_load(&p->relay_failed) == failed
					? PRESENCE_RESYNC_MIN_MS
					: PARLEY_MIN(p->resync_gap_ms * 2,
						     PRESENCE_RESYNC_MAX_MS);
		}
		pthread_mutex_lock(&p->mu);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)PRESENCE_SWEEP_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (!p->stop)
			pthread_cond_timedwait(&p->cv, &p->mu, &ts);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* ---- open / close ---------------------------------------------------------------------- */

int presence_config_check(const struct presence_config *c, char *why,
			  size_t whycap)
{
	const char *w = NULL;
	if (c->heartbeat_ms < 100 || c->heartbeat_ms > 3600000)
		w = "presence_heartbeat_ms must be 100..3600000";
	else if (c->ttl_ms <= c->heartbeat_ms || c->ttl_ms > 86400000)
		w = "presence_ttl_ms must be > presence_heartbeat_ms and <= 86400000";
	else if (c->subs_max < 1 || c->subs_max > 65535)
		w = "presence_subs_max must be 1..65535";
	else if (c->typing_ttl_ms < 500 || c->typing_ttl_ms > 60000)
		w = "typing_ttl_ms must be 500..60000";
	else if (c->last_seen_write_ms < 1000)
		w = "presence_last_seen_write_ms must be >= 1000";
	else if (c->push_queue_max < 64)
		w = "presence_push_queue_max must be >= 64";
	if (w) {
		snprintf(why, whycap, "%s", w);
		return -PARLEY_EINVAL;
	}
	return 0;
}

int presence_open(const struct presence_config *cfg, struct srv *s,
		  struct presence **out)
{
	char why[128];
	if (presence_config_check(cfg, why, sizeof why))
		return -PARLEY_EINVAL;
	struct presence *p = calloc(1, sizeof *p);
	if (!p)
		return -PARLEY_ENOMEM;
	p->cfg = *cfg;
	p->s = s;
	p->e = s->engine;
	for (unsigned i = 0; i < PRESENCE_SHARDS; i++)
		pthread_mutex_init(&p->sh[i].mu, NULL);
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->set_mu, NULL);
	pthread_mutex_init(&p->peers_mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pthread_create(&p->thr, NULL, sweep_main, p) != 0) {
		free(p);
		return -PARLEY_ENOMEM;
	}
	p->thread_started = true;
	*out = p;
	return 0;
}

void presence_close(struct presence *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (p->thread_started)
		pthread_join(p->thr, NULL);
	/* every connection has closed: every user went offline; write what
	 * is due (one more pass for writes that failed) and wait for it */
	for (int pass = 0; pass < 2; pass++) {
		uint64_t now_ns = parley_mono_ns(), now_ms = parley_now_ms();
		for (unsigned i = 0; i < PRESENCE_SHARDS; i++)
			sweep_shard(p, i, now_ns, now_ms, true);
		pthread_mutex_lock(&p->mu);
		while (atomic_load(&p->io_inflight))
			pthread_cond_wait(&p->cv, &p->mu);
		pthread_mutex_unlock(&p->mu);
	}
	for (unsigned i = 0; i < PRESENCE_SHARDS; i++) {
		for (unsigned b = 0; b < PRESENCE_BUCKETS; b++) {
			struct pres_user *u = p->sh[i].b[b];
			while (u) {
				struct pres_user *n = u->next;
				pres_user_free(u);
				u = n;
			}
		}
		pthread_mutex_destroy(&p->sh[i].mu);
	}
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->set_mu);
	pthread_mutex_destroy(&p->peers_mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}

void presence_get_stats(struct presence *p, struct presence_stats *st)
{
	memset(st, 0, sizeof *st);
	if (!p)
		return;
	for (unsigned i = 0; i < PRESENCE_SHARDS; i++) {
		pthread_mutex_lock(&p->sh[i].mu);
		st->entries += p->sh[i].n;
		pthread_mutex_unlock(&p->sh[i].mu);
	}
	st->online = atomic_load(&p->online);
	st->subscriptions = atomic_load(&p->subscriptions);
	st->typing_in = atomic_load(&p->typing_in);
	st->typing_pushes = atomic_load(&p->typing_pushes);
	st->presence_pushes = atomic_load(&p->presence_pushes);
	st->pushes_dropped = atomic_load(&p->pushes_dropped);
	st->last_seen_writes = atomic_load(&p->ls_writes);
	st->last_seen_write_errors = atomic_load(&p->ls_write_errors);
	st->loads = atomic_load(&p->loads);
	st->relay_out = atomic_load(&p->relay_out);
	st->relay_in = atomic_load(&p->relay_in);
	st->relay_dropped = atomic_load(&p->relay_dropped);
	st->typing_refused = atomic_load(&p->typing_refused);
	st->typing_refused_in = atomic_load(&p->typing_refused_in);
	st->relay_failed = atomic_load(&p->relay_failed);
	st->sets_sent = atomic_load(&p->sets_sent);
	st->set_dropped = atomic_load(&p->set_dropped);
}

/* ---- connections (loop thread) ------------------------------------------------------------ */

int presence_conn_online(struct presence *p, struct presence_conn **pcp,
			 const char *user, size_t ulen, struct conn_ref h)
{
	if (*pcp)
		return 0; /* re-AUTH of the same user */
	struct presence_conn *pc = calloc(1, sizeof *pc);
	if (!pc)
		return -PARLEY_ENOMEM;
	pc->h = h;
	uint64_t now_ns = parley_mono_ns(), now_ms = parley_now_ms();
	pc->beat_ns = now_ns;
	uint32_t hh = user_hash(user, ulen);
	struct shard *sh = shard_of(p, hh);
	pthread_mutex_lock(&sh->mu);
	struct pres_user *u = find_or_add(sh, hh, user, ulen);
	int rc = u ? pres_sess_add(u, h, now_ns, now_ms) : -PARLEY_ENOMEM;
	if (rc == 0) {
		pc->self = u;
		bool was = u->local_online;
		int tr = pres_user_update(u, now_ns,
					  (uint64_t)p->cfg.ttl_ms * 1000000ull);
		if (tr)
			push_presence(p, u);
		relay_local(p, u, was);
	}
	pthread_mutex_unlock(&sh->mu);
	if (rc) {
		free(pc);
		return rc;
	}
	*pcp = pc;
	return 0;
}

void presence_conn_beat(struct presence *p, struct presence_conn *pc,
			uint64_t now_ns)
{
	if (!pc || !pc->self ||
	    now_ns - pc->beat_ns < (uint64_t)p->cfg.heartbeat_ms * 250000ull)
		return;
	pc->beat_ns = now_ns;
	struct pres_user *u = pc->self;
	struct shard *sh = shard_of(p, u->hash);
	pthread_mutex_lock(&sh->mu);
	pres_sess_beat(u, pc->h, now_ns, parley_now_ms());
	bool was = u->local_online;
	int tr = pres_user_update(u, now_ns, (uint64_t)p->cfg.ttl_ms * 1000000ull);
	if (tr)
		push_presence(p, u);
	relay_local(p, u, was);
	pthread_mutex_unlock(&sh->mu);
}

static void sub_drop(struct presence *p, struct presence_conn *pc,
		     struct pres_user *u)
{
	struct shard *sh = shard_of(p, u->hash);
	pthread_mutex_lock(&sh->mu);
	bool had = pres_sub_del(u, pc->h);
	pthread_mutex_unlock(&sh->mu);
	if (had)
		ctr(&p->subscriptions, -1);
}

void presence_conn_offline(struct presence *p, struct presence_conn **pcp)
{
	struct presence_conn *pc = *pcp;
	if (!pc)
		return;
	*pcp = NULL;
	for (uint32_t i = 0; i < pc->nsubs; i++)
		sub_drop(p, pc, pc->subs[i]);
	free(pc->subs);
	struct pres_user *u = pc->self;
	struct pres_typing stops[PRESENCE_TYPING_MAX];
	unsigned ns = 0;
	char user[PARLEY_PROTO_MAX_USER_ID + 1];
	size_t ulen = u->ulen;
	memcpy(user, u->user, ulen);
	struct shard *sh = shard_of(p, u->hash);
	pthread_mutex_lock(&sh->mu);
	ns = pres_typing_drop_peer(u, pc->h, stops, PRESENCE_TYPING_MAX);
	pres_sess_del(u, pc->h, parley_now_ms());
	bool was = u->local_online;
	int tr = pres_user_update(u, parley_mono_ns(),
				  (uint64_t)p->cfg.ttl_ms * 1000000ull);
	if (tr)
		push_presence(p, u);
	relay_local(p, u, was);
	pthread_mutex_unlock(&sh->mu);
	for (unsigned k = 0; k < ns; k++)
		push_typing(p, user, ulen, stops[k].conv, stops[k].clen, false,
			    true);
	free(pc);
}

int presence_typing(struct presence *p, struct presence_conn *pc,
		    const char *conv, size_t clen, bool started)
{
	struct pres_user *u = pc->self;
	int role = chat_member_role(p->s->chat, conv, clen, u->user, u->ulen);
	/* a group whose partition another node leads: tracked and coalesced
	 * here as any typing (the bound, the stop at close and at expiry),
	 * checked and fanned out by that node (push_typing: TYPING_REQ) */
	bool elsewhere = (role == -PARLEY_ENOTLEADER ||
			  role == -PARLEY_EAGAIN) && relay_on(p);
	if (role < 0 && !elsewhere)
		return -PARLEY_ENOTFOUND;
	if (role == CHAT_ROLE_NONE)
		return -PARLEY_EPERM;
	ctr(&p->typing_in, 1);
	struct shard *sh = shard_of(p, u->hash);
	pthread_mutex_lock(&sh->mu);
	int rc = pres_typing_update(u, conv, clen, started, pc->h,
				    parley_mono_ns(),
				    (uint64_t)p->cfg.typing_ttl_ms * 1000000ull);
	pthread_mutex_unlock(&sh->mu);
	if (rc < 0)
		return rc;
	if (rc == 1)
		push_typing(p, u->user, u->ulen, conv, clen, started, true);
	return 0;
}

/* ---- PRESENCE_SUB --------------------------------------------------------------------------- */

struct sub_req {
	struct presence *p;
	struct conn_ref h;
	uint32_t rid;
	uint16_t subscribed;
	uint16_t count;
	_Atomic uint32_t pending;        /* reads in flight + the issuer's hold */
	/* each pinned (u->io++) until sub_finish has read it: the
	 * subscription alone does not keep it, the connection may close */
	struct pres_user *u[PARLEY_PROTO_MAX_PRESENCE_USERS];
};

struct load_ctx {
	struct sub_req *q;
	struct pres_user *u;             /* kept alive: u->io counts us */
	bool settings;                   /* ps/ (else p/) */
};

/* Posts the reply frame lm (ending request rid) to the connection h; a
 * NULL lm (out of memory even for ERROR NOMEM): nothing can answer the
 * request, which its connection would keep in flight forever: abort
 * (docs/SERVER.md, "Errors and allocation failure"). */
static void reply_post(const struct conn_ref *h, struct lmsg *lm, uint32_t rid)
{
	(void)rid;
	if (!lm)
		srv_oom("the answer to a presence request");
	lm->done_req = true;
	lmsg_post(h, lm);
}

/* Replies PRESENCE_SUB_OK with every requested user's view. The views
 * are read and the reply is posted while the shard locks of all those
 * users are held (taken in ascending shard order, the only place that
 * holds more than one), so every PRESENCE push about them is posted
 * either before the reply (and the reply's view is newer) or after it:
 * the last thing a client hears about a user is current, and no push is
 * sent twice (presence.h, "Pushes"). */
static void sub_finish(struct sub_req *q)
{
	_Static_assert(PRESENCE_SHARDS <= 64, "one bit per shard");
	struct presence *p = q->p;
	uint64_t mask = 0;
	for (unsigned i = 0; i < q->count; i++)
		mask |= 1ull << (shard_of(p, q->u[i]->hash) - p->sh);
	for (unsigned k = 0; k < PRESENCE_SHARDS; k++)
		if (mask & (1ull << k))
			pthread_mutex_lock(&p->sh[k].mu);
	struct parley_msg *m = calloc(1, sizeof *m);
	struct lmsg *lm = NULL;
	if (m) {
		m->type = PARLEY_T_PRESENCE_SUB_OK;
		struct parley_presence_sub_ok *ok = &m->presence_sub_ok;
		ok->heartbeat_ms = p->cfg.heartbeat_ms;
		ok->ttl_ms = p->cfg.ttl_ms;
		ok->subscribed = q->subscribed;
		ok->count = q->count;
		for (unsigned i = 0; i < q->count; i++) {
			struct pres_user *u = q->u[i];
			ok->recs[i].user = (struct parley_str){u->user, u->ulen};
			pres_user_view(u, &ok->recs[i].status,
				       &ok->recs[i].last_seen_ms);
		}
		int n = parley_proto_size(m);
		lm = n > 0 ? lmsg_new(LM_FRAME, (uint32_t)n) : NULL;
		if (lm && parley_proto_encode(lm->data, (size_t)n, q->rid, m) != n) {
			free(lm);
			lm = NULL;
		}
		free(m);
	}
	if (!lm) {
		struct parley_msg e = {.type = PARLEY_T_ERROR};
		e.error.code = PARLEY_ENOMEM;
		e.error.retry_after_ms = SRV_NOMEM_RETRY_MS;
		e.error.text = parley_str_c("out of memory");
		uint8_t buf[64];
		int n = parley_proto_encode(buf, sizeof buf, q->rid, &e);
		lm = n > 0 ? lmsg_new(LM_FRAME, (uint32_t)n) : NULL;
		if (lm)
			memcpy(lm->data, buf, (size_t)n);
	}
	reply_post(&q->h, lm, q->rid);
	for (unsigned i = 0; i < q->count; i++) { /* unpin (see struct sub_req) */
		PARLEY_ASSERT(q->u[i]->io > 0);
		q->u[i]->io--;
	}
	for (unsigned k = PRESENCE_SHARDS; k-- > 0;)
		if (mask & (1ull << k))
			pthread_mutex_unlock(&p->sh[k].mu);
	free(q);
}

static void sub_release(struct sub_req *q)
{
	if (atomic_fetch_sub(&q->pending, 1) == 1)
		sub_finish(q);
}

static void load_cb(void *arg, const struct pe_read_result *r)
{
	struct load_ctx *x = arg;
	struct presence *p = x->q->p;
	struct pres_user *u = x->u;
	struct shard *sh = shard_of(p, u->hash);
	pthread_mutex_lock(&sh->mu);
	const struct pe_entry *en = r->err == 0 && r->count ? &r->entries[0] : NULL;
	if (x->settings) {
		if (en && en->type == CHAT_ENT_PRESENCE_SET && en->len >= 5 &&
		    !u->set_live)
			u->hidden = (le_get32(en->payload + 1) &
				     PARLEY_PRESF_HIDE_LAST_SEEN) != 0;
		if (r->err == 0)
			u->loaded_set = true;
	} else {
		if (en && en->type == CHAT_ENT_LAST_SEEN && en->len >= 9) {
			uint64_t v = le_get64(en->payload + 1);
			if (v > u->last_seen_ms && !u->online)
				u->last_seen_ms = v;
		}
		if (r->err == 0)
			u->loaded_ls = true;
	}
	PARLEY_ASSERT(u->io > 0);
	u->io--;
	pthread_mutex_unlock(&sh->mu);
	if (r->err)
		PLOG_W("presence", "presence read failed", "user=%s err=%s",
		       u->user, parley_errname(r->err));
	ctr(&p->loads, 1);
	sub_release(x->q);
	free(x);
	io_end(p);
}

/* The caller counted this read in u->io (under the shard lock). */
static void load_issue(struct presence *p, struct sub_req *q,
		       struct pres_user *u, bool settings)
{
	struct load_ctx *x = malloc(sizeof *x);
	if (!x) { /* no read: the entry stays not loaded */
		struct shard *sh = shard_of(p, u->hash);
		pthread_mutex_lock(&sh->mu);
		u->io--;
		pthread_mutex_unlock(&sh->mu);
		return;
	}
	*x = (struct load_ctx){q, u, settings};
	char key[CHAT_KEY_CAP];
	int kl = key_of(key, settings ? "ps/" : "p/", u->user, u->ulen);
	PARLEY_ASSERT(kl > 0);
	atomic_fetch_add(&q->pending, 1);
	io_begin(p);
	struct pe_read_req rq = {.key = key, .klen = (size_t)kl,
				 .from = UINT64_MAX, .dir = PE_BACKWARD,
				 .limit = 1};
	int rc = pe_read(p->e, &rq, load_cb, x);
	if (rc) {
		struct pe_read_result r = {.err = rc};
		load_cb(x, &r);
	}
}

static bool conn_has_sub(const struct presence_conn *pc,
			 const struct pres_user *u, uint32_t *at)
{
	for (uint32_t i = 0; i < pc->nsubs; i++)
		if (pc->subs[i] == u) {
			if (at)
				*at = i;
			return true;
		}
	return false;
}

static int conn_unsub(struct presence *p, struct presence_conn *pc,
		      uint32_t rid, const struct parley_presence_sub *m)
{
	for (unsigned i = 0; i < m->count; i++) {
		uint32_t hh = user_hash(m->users[i].p, m->users[i].len);
		struct shard *sh = shard_of(p, hh);
		pthread_mutex_lock(&sh->mu);
		struct pres_user *u = find(sh, hh, m->users[i].p, m->users[i].len);
		pthread_mutex_unlock(&sh->mu);
		uint32_t at;
		if (!u || !conn_has_sub(pc, u, &at))
			continue; /* not subscribed: nothing to do */
		pc->subs[at] = pc->subs[--pc->nsubs];
		sub_drop(p, pc, u);
	}
	struct sub_req *q = calloc(1, sizeof *q);
	if (!q)
		return -PARLEY_ENOMEM;
	q->p = p;
	q->h = pc->h;
	q->rid = rid;
	q->subscribed = (uint16_t)pc->nsubs;
	q->count = 0;
	atomic_store(&q->pending, 1);
	sub_release(q);
	return 0;
}

int presence_sub(struct presence *p, struct presence_conn *pc, uint32_t rid,
		 const struct parley_presence_sub *m)
{
	if (m->op == PARLEY_PRESENCE_UNSUBSCRIBE)
		return conn_unsub(p, pc, rid, m);
	/* how many are new (duplicates in the request count once) */
	uint32_t add = 0;
	struct pres_user *found[PARLEY_PROTO_MAX_PRESENCE_USERS];
	for (unsigned i = 0; i < m->count; i++) {
		uint32_t hh = user_hash(m->users[i].p, m->users[i].len);
		struct shard *sh = shard_of(p, hh);
		pthread_mutex_lock(&sh->mu);
		found[i] = find(sh, hh, m->users[i].p, m->users[i].len);
		pthread_mutex_unlock(&sh->mu);
		bool dup = false;
		for (unsigned k = 0; k < i && !dup; k++)
			dup = m->users[k].len == m->users[i].len &&
			      !memcmp(m->users[k].p, m->users[i].p,
				      m->users[i].len);
		/* found[i] may be freed by the sweep once we unlock if we do
		 * not hold it: only used as a hint for the count below */
		if (!dup && !(found[i] && conn_has_sub(pc, found[i], NULL)))
			add++;
	}
	if (pc->nsubs + add > p->cfg.subs_max)
		return -PARLEY_ELIMIT;
	if (pc->nsubs + add > pc->capsubs) {
		uint32_t cap = PARLEY_MAX(pc->nsubs + add, pc->capsubs * 2);
		cap = PARLEY_MIN(cap, p->cfg.subs_max);
		struct pres_user **n = realloc(pc->subs, cap * sizeof *n);
		if (!n)
			return -PARLEY_ENOMEM;
		pc->subs = n;
		pc->capsubs = cap;
	}
	struct sub_req *q = calloc(1, sizeof *q);
	if (!q)
		return -PARLEY_ENOMEM;
	q->p = p;
	q->h = pc->h;
	q->rid = rid;
	q->count = m->count;
	atomic_store(&q->pending, 1);
	for (unsigned i = 0; i < m->count; i++) {
		uint32_t hh = user_hash(m->users[i].p, m->users[i].len);
		struct shard *sh = shard_of(p, hh);
		pthread_mutex_lock(&sh->mu);
		struct pres_user *u = find_or_add(sh, hh, m->users[i].p,
						  m->users[i].len);
		bool ok = u != NULL;
		if (ok && !conn_has_sub(pc, u, NULL)) {
			ok = pc->nsubs < pc->capsubs && pres_sub_add(u, pc->h) == 0;
			if (ok) {
				pc->subs[pc->nsubs++] = u;
				ctr(&p->subscriptions, 1);
			}
		}
		bool need_ls = ok && !u->loaded_ls, need_set = ok && !u->loaded_set;
		if (ok)
			u->io++; /* pinned until sub_finish (struct sub_req) */
		if (need_ls)
			u->io++;
		if (need_set)
			u->io++;
		pthread_mutex_unlock(&sh->mu);
		if (!ok) {
			/* out of memory half-way: the reply lists what we
			 * have; subscriptions made so far stay */
			q->count = (uint16_t)i;
			break;
		}
		q->u[i] = u;
		if (need_ls)
			load_issue(p, q, u, false);
		if (need_set)
			load_issue(p, q, u, true);
	}
	q->subscribed = (uint16_t)pc->nsubs;
	sub_release(q);
	return 0;
}

/* ---- PRESENCE_SET ------------------------------------------------------------------------- */

struct set_ctx {
	struct presence *p;
	struct conn_ref h;
	uint32_t rid, flags, hash;
	uint8_t ulen;
	char user[PARLEY_PROTO_MAX_USER_ID + 1];
};

static void set_cb(void *arg, const struct pe_append_result *r)
{
	struct set_ctx *x = arg;
	struct presence *p = x->p;
	struct parley_msg m = {.type = PARLEY_T_PRESENCE_SET_OK};
	m.presence_set_ok.flags = x->flags;
	if (r->err == 0) {
		struct shard *sh = shard_of(p, x->hash);
		pthread_mutex_lock(&sh->mu);
		struct pres_user *u = find(sh, x->hash, x->user, x->ulen);
		if (u) {
			bool hide = (x->flags & PARLEY_PRESF_HIDE_LAST_SEEN) != 0;
			bool was = u->hidden;
			u->hidden = hide;
			u->set_live = true;
			u->loaded_set = true;
			if (was != hide && !u->online)
				push_presence(p, u);
		}
		pthread_mutex_unlock(&sh->mu);
		struct prelay_msg rm = {.kind = PRELAY_HIDDEN, .arg = x->flags,
					.user = {x->user, x->ulen}};
		relay_send(p, 0, &rm);
	} else {
		m.type = PARLEY_T_ERROR;
		m.error.code = srv_wire_err(r->err).code;
		m.error.retry_after_ms = srv_wire_err(r->err).retry_after_ms;
		m.error.text = parley_str_c("presence setting not stored");
	}
	uint8_t buf[128];
	int n = parley_proto_encode(buf, sizeof buf, x->rid, &m);
	PARLEY_ASSERT(n > 0);
	struct lmsg *lm = lmsg_new(LM_FRAME, (uint32_t)n);
	if (lm)
		memcpy(lm->data, buf, (size_t)n);
	reply_post(&x->h, lm, x->rid);
	free(x);
	io_end(p);
}

int presence_set(struct presence *p, struct presence_conn *pc, uint32_t rid,
		 uint32_t flags)
{
	struct pres_user *u = pc->self;
	struct set_ctx *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	*x = (struct set_ctx){.p = p, .h = pc->h, .rid = rid, .flags = flags,
			      .hash = u->hash, .ulen = u->ulen};
	memcpy(x->user, u->user, u->ulen);
	x->user[u->ulen] = '\0';
	uint8_t rec[5];
	rec[0] = PRES_REC_VERSION;
	le_put32(rec + 1, flags);
	io_begin(p);
	int rc = rec_append(p, "ps/", u->user, u->ulen, CHAT_ENT_PRESENCE_SET,
			    rec, sizeof rec, set_cb, x);
	if (rc) {
		free(x);
		io_end(p);
		return rc;
	}
	return 0;
}

/* ---- across nodes (presence_relay.h) -------------------------------------------------------- */

void presence_set_relay(struct presence *p, presence_relay_fn fn, void *arg)
{
	atomic_store(&p->relay_arg, arg);
	atomic_store_explicit(&p->relay, fn, memory_order_release);
}

/* ONLINE / OFFLINE of `from`'s users. */
static void remote_users(struct presence *p, uint64_t from,
			 const struct prelay_msg *m)
{
	bool on = m->kind == PRELAY_ONLINE;
	uint64_t now_ns = parley_mono_ns(), now_ms = parley_now_ms();
	uint64_t ttl_ns = (uint64_t)p->cfg.ttl_ms * 1000000ull;
	uint64_t remote_ns = PRESENCE_REMOTE_TTL_MS * 1000000ull;
	for (unsigned i = 0; i < m->count; i++) {
		const struct parley_str *id = &m->users[i];
		uint32_t h = user_hash(id->p, id->len);
		struct shard *sh = shard_of(p, h);
		pthread_mutex_lock(&sh->mu);
		struct pres_user *u = on ? find_or_add(sh, h, id->p, id->len)
					 : find(sh, h, id->p, id->len);
		bool changed = false;
		if (u && on) {
			/* generation 0: a node built before set
			 * generations, which refreshes its whole set every
			 * presence_ttl_ms / 3 (ours never use 0) */
			changed = pres_remote_set(
				u, from, now_ns + (m->arg ? remote_ns : ttl_ns),
				m->arg);
			if (!changed)
				ctr(&p->relay_dropped, 1);
		} else if (u) {
			changed = pres_remote_del(u, from);
		} else if (on) {
			ctr(&p->relay_dropped, 1);
		}
		if (changed) {
			u->active_ms = now_ms;
			bool was = u->local_online;
			int tr = pres_user_update(u, now_ns, ttl_ns);
			if (tr)
				push_presence(p, u);
			relay_local(p, u, was);
		}
		pthread_mutex_unlock(&sh->mu);
	}
}

/* A TYPING payload: the push to the listed users' sessions here. */
static void remote_typing(struct presence *p, const struct prelay_msg *m)
{
	if (!m->conv.len || !m->user.len)
		return;
	uint8_t buf[600];
	struct parley_msg pm = {.type = PARLEY_T_TYPING_PUSH};
	pm.typing_push.conv = m->conv;
	pm.typing_push.user = m->user;
	pm.typing_push.state = m->started ? PARLEY_TYPING_STARTED
					  : PARLEY_TYPING_STOPPED;
	pm.typing_push.ttl_ms = m->started ? m->arg : 0;
	int n = parley_proto_encode(buf, sizeof buf, 0, &pm);
	if (n <= 0)
		return;
	for (unsigned i = 0; i < m->count; i++) {
		const struct parley_str *id = &m->users[i];
		if (id->len == m->user.len &&
		    !memcmp(id->p, m->user.p, id->len))
			continue; /* not to the typer's own devices */
		uint32_t h = user_hash(id->p, id->len);
		struct shard *sh = shard_of(p, h);
		pthread_mutex_lock(&sh->mu);
		struct pres_user *u = find(sh, h, id->p, id->len);
		for (uint32_t k = 0; u && k < u->nsess; k++) {
			push_post(p, u->sess[k].h, buf, (size_t)n);
			ctr(&p->typing_pushes, 1);
		}
		pthread_mutex_unlock(&sh->mu);
	}
}

/* A TYPING_REQ: done here if this node resolves the group's membership
 * (it leads the partition), as presence_typing does for a local typer;
 * dropped elsewhere. The typing entry is this node's (no connection:
 * the sweep's expiry stops it). */
static void remote_typing_req(struct presence *p, uint64_t from,
			      const struct prelay_msg *m)
{
	if (!m->conv.len || !m->user.len || !p->s || !p->s->chat)
		return;
	int role = chat_member_role(p->s->chat, m->conv.p, m->conv.len,
				    m->user.p, m->user.len);
	if (role <= CHAT_ROLE_NONE) {
		/* not the leader (NOTLEADER, AGAIN: another node answers, or
		 * the typist's next refresh does), or a refusal this node
		 * owns: answered to the typist's node as a single node
		 * answers the typist (a STOPPED has nothing to stop there) */
		uint32_t err = role == CHAT_ROLE_NONE	       ? PARLEY_EPERM
			       : role == -PARLEY_ENOTFOUND ? PARLEY_ENOTFOUND
							   : 0;
		if (err && m->started && !peer_legacy(p, from)) {
			struct prelay_msg r = {.kind = PRELAY_TYPING_REFUSED,
					       .started = 1, .arg = err,
					       .conv = m->conv, .user = m->user};
			relay_send(p, from, &r);
			ctr(&p->typing_refused, 1);
		}
		return;
	}
	uint32_t h = user_hash(m->user.p, m->user.len);
	struct shard *sh = shard_of(p, h);
	pthread_mutex_lock(&sh->mu);
	struct pres_user *u = find_or_add(sh, h, m->user.p, m->user.len);
	int rc = u ? pres_typing_update(u, m->conv.p, m->conv.len,
					m->started != 0,
					(struct conn_ref){NULL, 0, 0},
					parley_mono_ns(),
					(uint64_t)p->cfg.typing_ttl_ms *
						1000000ull)
		   : -PARLEY_ENOMEM;
	pthread_mutex_unlock(&sh->mu);
	if (rc == 1)
		push_typing(p, m->user.p, m->user.len, m->conv.p, m->conv.len,
			    m->started != 0, false);
}

/* A TYPING_REFUSED: the group's leader refused our typist's STARTED.
 * The connection that typed last in conv gets the ERROR a single node
 * sends (request id 0) and the indicator is forgotten here (nothing was
 * shown anywhere: no STOPPED). Dropped when the indicator is gone
 * already (stopped, expired, its connection closed, or a second
 * refusal). */
static void remote_typing_refused(struct presence *p,
				  const struct prelay_msg *m)
{
	if (!m->conv.len || !m->user.len ||
	    (m->arg != PARLEY_EPERM && m->arg != PARLEY_ENOTFOUND))
		return;
	struct parley_msg e = {.type = PARLEY_T_ERROR};
	e.error.code = srv_wire_err(-(int)m->arg).code;
	e.error.text = parley_str_c(m->arg == PARLEY_EPERM
					    ? "TYPING: not a member"
					    : "TYPING: no such conversation");
	uint8_t buf[128];
	int n = parley_proto_encode(buf, sizeof buf, 0, &e);
	PARLEY_ASSERT(n > 0);
	uint32_t h = user_hash(m->user.p, m->user.len);
	struct shard *sh = shard_of(p, h);
	pthread_mutex_lock(&sh->mu);
	struct pres_user *u = find(sh, h, m->user.p, m->user.len);
	struct conn_ref to = {NULL, 0, 0};
	if (u && pres_typing_forget(u, m->conv.p, m->conv.len, &to) &&
	    to.lp) {
		push_post(p, to, buf, (size_t)n);
		ctr(&p->typing_refused_in, 1);
	}
	pthread_mutex_unlock(&sh->mu);
}

/* PRESENCE_SET on another node: the hide flag, as set_cb does here. */
static void remote_hidden(struct presence *p, const struct prelay_msg *m)
{
	if (!m->user.len)
		return;
	uint32_t h = user_hash(m->user.p, m->user.len);
	struct shard *sh = shard_of(p, h);
	pthread_mutex_lock(&sh->mu);
	struct pres_user *u = find(sh, h, m->user.p, m->user.len);
	if (u) {
		bool hide = (m->arg & PARLEY_PRESF_HIDE_LAST_SEEN) != 0;
		bool was = u->hidden;
		u->hidden = hide;
		u->set_live = true;
		u->loaded_set = true;
		if (was != hide && !u->online)
			push_presence(p, u);
	}
	pthread_mutex_unlock(&sh->mu);
}

/* Drops, in every shard, node's remote entries older than generation
 * gen (SET_END), or all of them (link down: gen_all); OFFLINE pushes for
 * the users that go offline here. */
static void remote_drop(struct presence *p, uint64_t node, bool all,
			uint32_t gen)
{
	uint64_t now_ns = parley_mono_ns(), now_ms = parley_now_ms();
	uint64_t ttl_ns = (uint64_t)p->cfg.ttl_ms * 1000000ull;
	for (unsigned i = 0; i < PRESENCE_SHARDS; i++) {
		struct shard *sh = &p->sh[i];
		pthread_mutex_lock(&sh->mu);
		for (unsigned b = 0; b < PRESENCE_BUCKETS; b++)
			for (struct pres_user *u = sh->b[b]; u; u = u->next) {
				if (!u->nremote)
					continue;
				if (all ? !pres_remote_del(u, node)
					: !pres_remote_drop_older(u, node, gen))
					continue;
				if (!all)
					ctr(&p->set_dropped, 1);
				u->active_ms = now_ms;
				bool was = u->local_online;
				if (pres_user_update(u, now_ns, ttl_ns))
					push_presence(p, u);
				relay_local(p, u, was);
			}
		pthread_mutex_unlock(&sh->mu);
	}
}

int presence_relay_recv(struct presence *p, uint64_t from, const uint8_t *b,
			uint32_t n)
{
	static _Thread_local struct prelay_msg m;
	if (prelay_decode(b, n, &m))
		return -PARLEY_EPROTO;
	ctr(&p->relay_in, 1);
	switch (m.kind) {
	case PRELAY_ONLINE:
	case PRELAY_OFFLINE:
		remote_users(p, from, &m);
		break;
	case PRELAY_TYPING:
		remote_typing(p, &m);
		break;
	case PRELAY_TYPING_REQ:
		remote_typing_req(p, from, &m);
		break;
	case PRELAY_TYPING_REFUSED:
		remote_typing_refused(p, &m);
		break;
	case PRELAY_HIDDEN:
		remote_hidden(p, &m);
		break;
	case PRELAY_RESEND:
		relay_online_set(p, from);
		break;
	case PRELAY_SET_END:
		peer_note(p, from, true, true);
		remote_drop(p, from, false, m.arg);
		break;
	default:
		break;
	}
	return 0;
}

unsigned presence_user_nodes(struct presence *p, const char *user,
			     size_t ulen, uint64_t *nodes, unsigned cap)
{
	if (!ulen || ulen > PARLEY_PROTO_MAX_USER_ID)
		return 0;
	uint32_t h = user_hash(user, ulen);
	struct shard *sh = shard_of(p, h);
	unsigned n = 0;
	pthread_mutex_lock(&sh->mu);
	struct pres_user *u = find(sh, h, user, ulen);
	for (uint32_t k = 0; u && k < u->nremote && n < cap; k++)
		nodes[n++] = u->remote[k].node;
	pthread_mutex_unlock(&sh->mu);
	return n;
}

void presence_link(struct presence *p, uint64_t node, bool up)
{
	peer_note(p, node, up, false);
	if (up) { /* our set to it, and its set to us */
		relay_online_set(p, node);
		struct prelay_msg m = {.kind = PRELAY_RESEND};
		relay_send(p, node, &m);
		return;
	}
	remote_drop(p, node, true, 0);
}
