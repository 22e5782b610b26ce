/*
 * proxy_node.h — parleyd's wiring of request forwarding (proxy.h) to the
 * peer links (peer_node.h) and the loops (proxy_node.c). Private to
 * server/, used by main.c only.
 */
#ifndef PARLEYD_PROXY_NODE_H
#define PARLEYD_PROXY_NODE_H

#include <stdbool.h>

#include "proxy.h"

struct srv;
struct peer_node;
struct chat;

/* Creates s->proxy and hooks it to pn's node thread (one per process);
 * before peer_node_start. Its leader side serves once
 * proxy_set_serving(s->proxy, true) (after the loops run). 0 or
 * -PARLEY_ENOMEM. proxy_free(s->proxy) after the node thread and the
 * loops stopped. */
int proxy_node_install(struct srv *s, struct peer_node *pn,
		       const struct proxy_config *cfg);

/* The chat service across nodes: large groups' live EVENTs (chat.h,
 * chat_set_live_relay): on, c relays its read fan-out's live EVENTs to
 * the other nodes and posts theirs (PEER_FRAME_LIVE) to its connections;
 * and reads for other nodes (a pointer's EVENT, a SEND's check that its
 * conversation was opened: tail_relay.h) are answered by c, and c's own
 * checks of conversations whose open record is in a partition this node
 * does not hold go to that partition's leader (chat_set_remote_check);
 * off (before chat_close, c must outlive the call) none of it. After
 * proxy_node_install. */
void proxy_node_live(struct chat *c, bool on);

/* Presence and typing across nodes (presence.h): on, p relays its users'
 * presence and typing to the other nodes (PEER_FRAME_PRES) and takes
 * theirs, and learns of links going up and down, and (after
 * proxy_node_live on) the read fan-out sends LIVE payloads only to the
 * nodes p knows a member online on; off (before presence_close) none of
 * it. After proxy_node_install. */
struct presence;
void proxy_node_presence(struct presence *p, bool on);

#endif /* PARLEYD_PROXY_NODE_H */
