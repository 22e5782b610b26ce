/*
 * proxy_node.c — parleyd's wiring of request forwarding (proxy.h): the
 * proxy's I/O on a cluster node. Frames travel as peer application
 * frames through the node thread (peer_node_send_app, hooks of
 * peer_node_set_app); the leader to forward to is the one ERROR
 * NOTLEADER names (conn.c picks it: the leader of the partition refused,
 * route.h); a reply to a client is posted
 * to its connection's loop as an LM_FRAME that ends the request; a
 * request from another node is posted to a loop (chosen by user, so one
 * user's forwarded requests run in order on one loop) as an LM_FWD,
 * which runs it on a virtual connection (conn.c).
 *
 * Linked into the parleyd binary only (it joins parley_peer and
 * parleyd_core), so the unit tests of either link without it.
 * Threads: proxy_node_install on the main thread before the node thread
 * starts; the io callbacks on loops and the node thread.
 */
#include "proxy_node.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "peer.h"
#include "peer_node.h"
#include "presence.h"
#include "proxy.h"
#include "route.h"
#include "srv.h"
#include "tail_relay.h"

_Static_assert(PROXY_FRAME_REQ == PEER_FRAME_FWD_REQ &&
		       PROXY_FRAME_REP == PEER_FRAME_FWD_REP,
	       "proxy.h and peer.h name the same frame types");
_Static_assert(TAIL_FRAME_REQ == PEER_FRAME_TAIL_REQ &&
		       TAIL_FRAME_DATA == PEER_FRAME_TAIL_DATA &&
		       TAIL_FRAME_XREAD == PEER_FRAME_XREAD,
	       "tail_relay.h and peer.h name the same frame types");

/* The node thread may call in before main publishes s->peer: the
 * peer node is kept here. */
static struct peer_node *the_node;
static struct srv *the_srv; /* proxy_node_install's (remote checks) */
/* the chat service that posts other nodes' LIVE frames (proxy_node_live);
 * live_mu keeps it from closing under a frame being posted */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct chat *live_chat;
/* the presence registry that relays across nodes (proxy_node_presence),
 * under live_mu too */
static struct presence *live_pres;

static int io_send(void *arg, uint64_t to, uint8_t type, const void *a,
		   size_t alen, const void *b, size_t blen)
{
	(void)arg;
	return peer_node_send_app(the_node, to, type, a, alen, b, blen);
}

static bool io_link_up(void *arg, uint64_t node)
{
	(void)arg;
	/* a node of an older build that knows no FWD_REQ is not forwarded
	 * to: the client gets NOTLEADER and goes there itself */
	return peer_node_can_send(the_node, node, PEER_FRAME_FWD_REQ);
}

static void io_reply(void *arg, const struct conn_ref *to,
		     const uint8_t *frame, uint32_t n)
{
	(void)arg;
	struct lmsg *m = lmsg_new(LM_FRAME, n);
	if (!m) /* the connection would keep the request in flight forever */
		srv_oom("the answer to a forwarded request");
	memcpy(m->data, frame, n);
	m->done_req = true;
	lmsg_post(to, m);
}

static int io_serve(void *arg, uint64_t from, const struct proxy_req *r,
		    const uint8_t *p, uint32_t n)
{
	struct srv *s = arg;
	unsigned nl = s->nloops;
	if (!nl)
		return -PARLEY_EAGAIN;
	struct lmsg *m = lmsg_new(LM_FWD, n);
	if (!m)
		return -PARLEY_ENOMEM;
	memcpy(m->data, p, n);
	m->u.fwd.node = from;
	uint64_t h = parley_xxh3(r->user, r->ulen, 0);
	loop_post(s->loops[h % nl], m);
	return 0;
}

/* tail_io.serve: an inbox tail another node opened, to the loop of its
 * user (tail_relay.h) */
static int tail_serve(void *arg, uint64_t from, const struct tail_msg *t,
		      const uint8_t *p, uint32_t n)
{
	struct srv *s = arg;
	unsigned nl = s->nloops;
	if (!nl)
		return -PARLEY_EAGAIN;
	struct lmsg *m = lmsg_new(LM_TAIL_OPEN, n);
	if (!m)
		return -PARLEY_ENOMEM;
	memcpy(m->data, p, n);
	m->u.tail.node = from;
	m->u.tail.id = t->id;
	uint64_t h = parley_xxh3(t->user, t->ulen, 0);
	loop_post(s->loops[h % nl], m);
	return 0;
}

/* tail_io.link_up: up, and the node knows the tail frames (frame sets) */
static bool tail_link_up(void *arg, uint64_t node)
{
	(void)arg;
	return peer_node_can_send(the_node, node, PEER_FRAME_TAIL_REQ);
}

/* tail_io.old_build: up, but an older build without the tail frames */
static bool tail_old_build(void *arg, uint64_t node)
{
	(void)arg;
	return peer_node_link_up(the_node, node) &&
	       !peer_node_can_send(the_node, node, PEER_FRAME_TAIL_REQ);
}

/* tail_io.conv_node: the leader of conv's partition when this node holds
 * no replica of it (route.h), else 0 */
static uint64_t tail_conv_node(void *arg, const char *conv, uint16_t clen)
{
	struct srv *s = arg;
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, conv, clen);
	if (kl <= 0 || !s->engine)
		return 0;
	uint32_t p = pe_partition_of(s->engine, key, (size_t)kl);
	return route_holds(p) ? 0 : route_partition_leader(s->engine, p);
}

struct tail_read_ctx {
	struct srv *s;
	uint64_t from, id;
};

/* chat_event_cb of a READ another node asked (engine thread, or the node
 * thread for a pointer that needs no read): the EVENT goes back. */
static void tail_read_done(void *arg, const struct parley_msg *ev)
{
	struct tail_read_ctx *x = arg;
	int n = parley_proto_size(ev);
	uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
	if (buf && parley_proto_encode(buf, (size_t)n, 0, ev) == n)
		tail_relay_read_answer(x->s->tail, x->from, x->id, buf,
				       (uint32_t)n);
	else /* the asker asks again */
		tail_relay_read_answer(x->s->tail, x->from, x->id, NULL, 0);
	free(buf);
	free(x);
}

/* tail_io.resolve: a READ another node asked, resolved here */
static int tail_resolve(void *arg, uint64_t from, uint64_t id,
			const struct chat_inbox_ptr *p)
{
	struct srv *s = arg;
	struct tail_read_ctx *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	*x = (struct tail_read_ctx){.s = s, .from = from, .id = id};
	/* live_chat, under live_mu: the chat service is not closing */
	pthread_mutex_lock(&live_mu);
	int rc = live_chat ? chat_event_resolve(live_chat, p, tail_read_done, x)
			   : -PARLEY_EAGAIN;
	pthread_mutex_unlock(&live_mu);
	if (rc)
		free(x);
	return rc;
}

/* tail_io.open_node: the leader of the partition of conv's open record
 * when this node holds no replica of it (route.h), else 0 */
static uint64_t tail_open_node(void *arg, const char *conv, uint16_t clen)
{
	struct srv *s = arg;
	char key[CHAT_KEY_CAP];
	int kl = chat_key_open(key, conv, clen);
	if (kl <= 0 || !s->engine)
		return 0;
	uint32_t p = pe_partition_of(s->engine, key, (size_t)kl);
	return route_holds(p) ? 0 : route_partition_leader(s->engine, p);
}

struct tail_check_ctx {
	struct srv *s;
	uint64_t from, id;
};

/* chat_check_cb of a check another node asked (engine thread) */
static void tail_check_done(void *arg, int found)
{
	struct tail_check_ctx *x = arg;
	tail_relay_check_answer(x->s->tail, x->from, x->id, found);
	free(x);
}

/* tail_io.check: a check another node asked, read here */
static int tail_check(void *arg, uint64_t from, uint64_t id, const char *conv,
		      uint16_t clen)
{
	struct srv *s = arg;
	struct tail_check_ctx *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	*x = (struct tail_check_ctx){.s = s, .from = from, .id = id};
	pthread_mutex_lock(&live_mu); /* as tail_resolve */
	int rc = live_chat ? chat_conv_opened(live_chat, conv, clen,
					      tail_check_done, x)
			   : -PARLEY_EAGAIN;
	pthread_mutex_unlock(&live_mu);
	if (rc)
		free(x);
	return rc;
}

/* tail_io.key_node: the leader of key's partition when this node holds
 * no replica of it (route.h), else 0 */
static uint64_t tail_key_node(void *arg, const void *key, uint16_t klen)
{
	struct srv *s = arg;
	if (!klen || !s->engine)
		return 0;
	uint32_t p = pe_partition_of(s->engine, key, klen);
	return route_holds(p) ? 0 : route_partition_leader(s->engine, p);
}

/* tail_io.xread_link: up and knows XREAD (1), down (0), an older build */
static int tail_xread_link(void *arg, uint64_t node)
{
	(void)arg;
	if (peer_node_can_send(the_node, node, PEER_FRAME_XREAD))
		return 1;
	return peer_node_link_up(the_node, node) ? -PARLEY_EVERSION : 0;
}

struct tail_xread_ctx {
	struct srv *s;
	uint64_t from, id;
};

/* pe_read_cb of an XREAD another node asked (engine thread) */
static void tail_xread_done(void *arg, const struct pe_read_result *r)
{
	struct tail_xread_ctx *x = arg;
	tail_relay_xread_answer(x->s->tail, x->from, x->id, r);
	free(x);
}

/* tail_io.xread: an XREAD another node asked, read here (route_read: a
 * partition this node does not hold is refused, the asker asks again) */
static int tail_xread(void *arg, uint64_t from, uint64_t id,
		      const struct pe_read_req *q)
{
	struct srv *s = arg;
	if (!s->engine)
		return -PARLEY_EAGAIN;
	struct tail_xread_ctx *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	*x = (struct tail_xread_ctx){.s = s, .from = from, .id = id};
	int rc = route_read(s->engine, q, tail_xread_done, x);
	route_clear(); /* a refusal's note is not this thread's answer */
	if (rc)
		free(x);
	return rc;
}

/* route_remote_fn: a read of a partition this node does not hold, asked
 * of its leader */
static int route_remote(void *arg, const struct pe_read_req *q,
			pe_read_cb cb, void *cb_arg)
{
	struct srv *s = arg;
	return s->tail ? tail_relay_xread(s->tail, q, cb, cb_arg)
		       : -PARLEY_ENOTLEADER;
}

/* chat_check_fn: a SEND's check of a conversation whose open record's
 * partition this node does not hold, asked of its leader */
static int chat_check(void *arg, const char *conv, uint16_t clen,
		      chat_check_cb cb, void *cb_arg)
{
	struct srv *s = arg;
	return tail_relay_check(s->tail, conv, clen, cb, cb_arg);
}

static void app_frame(void *arg, uint64_t from, uint8_t type,
		      const uint8_t *p, uint32_t n)
{
	struct srv *s = arg;
	if (type == PEER_FRAME_TAIL_REQ || type == PEER_FRAME_TAIL_DATA ||
	    type == PEER_FRAME_XREAD) {
		if (s->tail)
			tail_relay_on_frame(s->tail, from, type, p, n);
		return;
	}
	if (type == PEER_FRAME_LIVE) {
		pthread_mutex_lock(&live_mu);
		int rc = live_chat ? chat_rd_live_recv(live_chat, p, n) : 0;
		pthread_mutex_unlock(&live_mu);
		if (rc < 0)
			PLOG_W("proxy", "bad LIVE frame", "from=%" PRIu64
			       " len=%u", from, n);
		return;
	}
	if (type == PEER_FRAME_PRES) {
		pthread_mutex_lock(&live_mu);
		int rc = live_pres ? presence_relay_recv(live_pres, from, p, n)
				   : 0;
		pthread_mutex_unlock(&live_mu);
		if (rc < 0)
			PLOG_W("proxy", "bad PRES frame", "from=%" PRIu64
			       " len=%u", from, n);
		return;
	}
	proxy_on_frame(s->proxy, from, type, p, n);
}

/* the registry the read fan-out asks where members are online
 * (where_fn); where_lk keeps it from closing under a lookup */
static pthread_rwlock_t where_lk = PTHREAD_RWLOCK_INITIALIZER;
static struct presence *where_pres;

/* chat_live_where_fn: the other nodes a member is online on (presence
 * registry); none while presence is off. */
static unsigned where_fn(void *arg, const char *user, size_t ulen,
			 uint64_t *nodes, unsigned cap)
{
	(void)arg;
	pthread_rwlock_rdlock(&where_lk);
	unsigned n = where_pres ? presence_user_nodes(where_pres, user, ulen,
						      nodes, cap)
				: 0;
	pthread_rwlock_unlock(&where_lk);
	return n;
}

/* chat_live_relay_fn: a large group's live EVENT to node `to`, or (0)
 * every other node whose link is up (best effort: a frame that is not
 * queued or lost is covered by the members' ACTIVITY pointers, chat.h). */
static void live_relay(void *arg, uint64_t to, const uint8_t *payload,
		       uint32_t len)
{
	(void)arg;
	if (to) {
		if (peer_node_can_send(the_node, to, PEER_FRAME_LIVE))
			(void)peer_node_send_app(the_node, to, PEER_FRAME_LIVE,
						 payload, len, NULL, 0);
		return;
	}
	struct peer_node_link links[PEER_NODE_MAX_PEERS];
	uint32_t k = peer_node_links(the_node, links, PEER_NODE_MAX_PEERS);
	for (uint32_t i = 0; i < k; i++)
		if (links[i].up && peer_node_can_send(the_node, links[i].node,
						      PEER_FRAME_LIVE))
			(void)peer_node_send_app(the_node, links[i].node,
						 PEER_FRAME_LIVE, payload, len,
						 NULL, 0);
}

void proxy_node_live(struct chat *c, bool on)
{
	/* SENDs check conversations opened elsewhere at that leader */
	chat_set_remote_check(c, on && the_srv && the_srv->tail ? chat_check
								: NULL,
			      the_srv);
	if (!on)
		chat_set_live_where(c, NULL, NULL);
	chat_set_live_relay(c, on ? live_relay : NULL, NULL);
	pthread_mutex_lock(&live_mu);
	live_chat = on ? c : NULL;
	pthread_mutex_unlock(&live_mu);
}

/* presence_relay_fn: to one node, or (to 0) every node whose link is up;
 * best effort (presence.h): < 0 when it could not be queued for one (the
 * registry sends its whole set again). */
static int pres_relay(void *arg, uint64_t to, const uint8_t *payload,
		      uint32_t len)
{
	(void)arg;
	if (to) /* a peer that does not know PRES (an older build): none */
		return peer_node_can_send(the_node, to, PEER_FRAME_PRES)
			       ? peer_node_send_app(the_node, to,
						    PEER_FRAME_PRES, payload,
						    len, NULL, 0)
			       : 0;
	struct peer_node_link links[PEER_NODE_MAX_PEERS];
	uint32_t k = peer_node_links(the_node, links, PEER_NODE_MAX_PEERS);
	int rc = 0;
	for (uint32_t i = 0; i < k; i++)
		if (links[i].up && peer_node_can_send(the_node, links[i].node,
						      PEER_FRAME_PRES)) {
			int r = peer_node_send_app(the_node, links[i].node,
						   PEER_FRAME_PRES, payload,
						   len, NULL, 0);
			if (r < 0)
				rc = r;
		}
	return rc;
}

void proxy_node_presence(struct presence *p, bool on)
{
	if (on)
		presence_set_relay(p, pres_relay, NULL);
	pthread_rwlock_wrlock(&where_lk);
	where_pres = on ? p : NULL;
	pthread_rwlock_unlock(&where_lk);
	pthread_mutex_lock(&live_mu);
	live_pres = on ? p : NULL;
	/* the read fan-out relays LIVE payloads only to the nodes where a
	 * member is online (chat.h); off, where_fn answers none */
	if (on && live_chat)
		chat_set_live_where(live_chat, where_fn, NULL);
	if (on) { /* links that came up before: exchange the online sets */
		struct peer_node_link links[PEER_NODE_MAX_PEERS];
		uint32_t k = peer_node_links(the_node, links,
					     PEER_NODE_MAX_PEERS);
		for (uint32_t i = 0; i < k; i++)
			if (links[i].up)
				presence_link(p, links[i].node, true);
	}
	pthread_mutex_unlock(&live_mu);
	if (!on)
		presence_set_relay(p, NULL, NULL);
}

static void app_unsent(void *arg, uint64_t to, uint8_t type, const uint8_t *p,
		       uint32_t n, int err)
{
	struct srv *s = arg;
	if (type == PEER_FRAME_TAIL_REQ || type == PEER_FRAME_TAIL_DATA ||
	    type == PEER_FRAME_XREAD) {
		if (s->tail)
			tail_relay_on_unsent(s->tail, to, type, p, n);
		return;
	}
	if (type == PEER_FRAME_PRES) { /* lost: the whole set goes again */
		pthread_mutex_lock(&live_mu);
		presence_relay_unsent(live_pres);
		pthread_mutex_unlock(&live_mu);
		return;
	}
	proxy_on_unsent(s->proxy, to, type, p, n, err);
}

static void app_link(void *arg, uint64_t node, bool up)
{
	struct srv *s = arg;
	if (!up) {
		proxy_link_down(s->proxy, node);
		if (s->tail)
			tail_relay_link_down(s->tail, node);
	}
	pthread_mutex_lock(&live_mu);
	if (live_pres) /* a node back gets our online set; one gone, its
			  users are offline here */
		presence_link(live_pres, node, up);
	pthread_mutex_unlock(&live_mu);
}

static void app_tick(void *arg, uint64_t now_ms)
{
	struct srv *s = arg;
	proxy_tick(s->proxy, now_ms);
	if (s->tail)
		tail_relay_tick(s->tail);
}

int proxy_node_install(struct srv *s, struct peer_node *pn,
		       const struct proxy_config *cfg)
{
	the_node = pn;
	the_srv = s;
	struct proxy_io io = {.send = io_send,
			      .link_up = io_link_up, .reply = io_reply,
			      .serve = io_serve, .arg = s};
	int rc = proxy_new(cfg, &io, &s->proxy);
	if (rc)
		return rc;
	struct tail_io tio = {.send = io_send, .link_up = tail_link_up,
			      .old_build = tail_old_build,
			      .serve = tail_serve, .conv_node = tail_conv_node,
			      .resolve = tail_resolve,
			      .open_node = tail_open_node, .check = tail_check,
			      .key_node = tail_key_node,
			      .xread_link = tail_xread_link,
			      .xread = tail_xread, .arg = s};
	rc = tail_relay_new(&tio, &s->tail);
	if (rc)
		return rc;
	route_set_remote(route_remote, s);
	struct peer_node_app app = {.on_frame = app_frame,
				    .on_unsent = app_unsent,
				    .on_link = app_link, .on_tick = app_tick,
				    .arg = s};
	peer_node_set_app(pn, &app);
	return 0;
}
