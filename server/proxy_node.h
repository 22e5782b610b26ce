/*
 * proxy_node.h — parleyd's wiring of request forwarding (proxy.h) to the
 * peer links (peer_node.h) and the loops (proxy_node.c). Private to
 * server/, used by main.c only.
 */
#ifndef PARLEYD_PROXY_NODE_H
#define PARLEYD_PROXY_NODE_H

#include "proxy.h"

struct srv;
struct peer_node;

/* Creates s->proxy and hooks it to pn's node thread (one per process);
 * before peer_node_start. Its leader side serves once
 * proxy_set_serving(s->proxy, true) (after the loops run). 0 or
 * -PARLEY_ENOMEM. proxy_free(s->proxy) after the node thread and the
 * loops stopped. */
int proxy_node_install(struct srv *s, struct peer_node *pn,
		       const struct proxy_config *cfg);

#endif /* PARLEYD_PROXY_NODE_H */
