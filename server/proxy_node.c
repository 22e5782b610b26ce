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
#include "srv.h"

_Static_assert(PROXY_FRAME_REQ == PEER_FRAME_FWD_REQ &&
		       PROXY_FRAME_REP == PEER_FRAME_FWD_REP,
	       "proxy.h and peer.h name the same frame types");

/* The node thread may call in before main publishes s->peer: the
 * peer node is kept here. */
static struct peer_node *the_node;
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

static void app_frame(void *arg, uint64_t from, uint8_t type,
		      const uint8_t *p, uint32_t n)
{
	struct srv *s = arg;
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

/* chat_live_relay_fn: a large group's live EVENT to every other node
 * whose link is up (best effort: a frame that is not queued or lost is
 * covered by the members' ACTIVITY pointers, chat.h). */
static void live_relay(void *arg, const uint8_t *payload, uint32_t len)
{
	(void)arg;
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
	chat_set_live_relay(c, on ? live_relay : NULL, NULL);
	pthread_mutex_lock(&live_mu);
	live_chat = on ? c : NULL;
	pthread_mutex_unlock(&live_mu);
}

/* presence_relay_fn: to one node, or (to 0) every node whose link is up;
 * best effort (presence.h). */
static void pres_relay(void *arg, uint64_t to, const uint8_t *payload,
		       uint32_t len)
{
	(void)arg;
	if (to) {
		if (peer_node_can_send(the_node, to, PEER_FRAME_PRES))
			(void)peer_node_send_app(the_node, to, PEER_FRAME_PRES,
						 payload, len, NULL, 0);
		return;
	}
	struct peer_node_link links[PEER_NODE_MAX_PEERS];
	uint32_t k = peer_node_links(the_node, links, PEER_NODE_MAX_PEERS);
	for (uint32_t i = 0; i < k; i++)
		if (links[i].up && peer_node_can_send(the_node, links[i].node,
						      PEER_FRAME_PRES))
			(void)peer_node_send_app(the_node, links[i].node,
						 PEER_FRAME_PRES, payload, len,
						 NULL, 0);
}

void proxy_node_presence(struct presence *p, bool on)
{
	if (on)
		presence_set_relay(p, pres_relay, NULL);
	pthread_mutex_lock(&live_mu);
	live_pres = on ? p : NULL;
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
	proxy_on_unsent(s->proxy, to, type, p, n, err);
}

static void app_link(void *arg, uint64_t node, bool up)
{
	struct srv *s = arg;
	if (!up)
		proxy_link_down(s->proxy, node);
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
}

int proxy_node_install(struct srv *s, struct peer_node *pn,
		       const struct proxy_config *cfg)
{
	the_node = pn;
	struct proxy_io io = {.send = io_send,
			      .link_up = io_link_up, .reply = io_reply,
			      .serve = io_serve, .arg = s};
	int rc = proxy_new(cfg, &io, &s->proxy);
	if (rc)
		return rc;
	struct peer_node_app app = {.on_frame = app_frame,
				    .on_unsent = app_unsent,
				    .on_link = app_link, .on_tick = app_tick,
				    .arg = s};
	peer_node_set_app(pn, &app);
	return 0;
}
