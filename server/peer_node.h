/*
 * peer_node.h — parleyd's replication glue: runs the peer transport
 * (peer.h) on a thread of its own and connects it to the replicated engine
 * (parley_engine.h "Replication"): outbound Raft messages from the
 * engine's shard threads, inbound ones to pe_raft_recv, and the engine's
 * ticks (pe_raft_tick every tick_ms of CLOCK_MONOTONIC).
 *
 * Contract
 *   1. peer_node_new() validates the configuration, binds the peer port
 *      and names the peers; nothing runs yet. Its pe_cluster (peer_node_
 *      cluster) is what pe_open gets: voters = this node + every peer,
 *      or cfg.founders for a node added to a running cluster; with
 *      cfg.data_dir, the peers journaled at run time are named too.
 *   5. Membership (docs/CLUSTER.md §3.7): peer_node_start follows the
 *      engine's members stream and names / forgets nodes to the
 *      transport as their records apply; peer_node_add_node /
 *      _remove_node, on the leader of partition 0, change every
 *      partition's configuration and write those records.
 *   2. peer_node_start(e) starts the thread once the engine is open;
 *      messages the engine sends before that are queued (bounded), those
 *      received before it are not read (the sockets wait).
 *   3. Outbound: the engine's send callback copies a group's messages into
 *      one allocation and queues it (at most PEER_NODE_OUTBOX_BYTES queued;
 *      beyond, messages are dropped and counted: Raft retransmits); the
 *      thread hands them to peer_send_all (one coalesced frame per node
 *      pair per round).
 *   4. peer_node_halt() ends the thread: before pe_close, since the thread
 *      calls into the engine. peer_node_stop() frees everything: after
 *      pe_close, since the engine may send until it is closed.
 *   6. peer_node_halt() ends a running membership operation (its loops
 *      see the halt and answer -PARLEY_ECLOSED) and joins its worker
 *      while the node thread still runs, then the node thread.
 * Threads: new/stop on the controlling thread; the send callback from any
 * engine shard thread; peer_node_outbox_drops from any thread; a
 * membership operation on its own worker thread (peer_node_op_start).
 */
#ifndef PARLEYD_PEER_NODE_H
#define PARLEYD_PEER_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley_engine.h"
#include "placement.h"

#define PEER_NODE_MAX_PEERS 8u
#define PEER_NODE_OUTBOX_BYTES (64ull << 20)

struct peer_node_peer {
	uint64_t id;
	char addr[64]; /* numeric IPv4 / IPv6 */
	uint16_t port;
};

struct peer_node_config {
	uint64_t cluster_id, node_id;          /* != 0 */
	const char *listen_addr;               /* numeric; NULL = 127.0.0.1 */
	uint16_t listen_port;
	struct peer_node_peer peers[PEER_NODE_MAX_PEERS];
	uint32_t npeers;                       /* 1.. */
	uint32_t tick_ms;                      /* 0 = 50 */
	uint32_t election_ticks;               /* 0 = engine default */
	uint32_t quiesce_ticks;                /* idle ticks before a group
						  quiesces; 0 = never */
	uint64_t log_keep_bytes;               /* 0 = engine default */
	uint64_t snapshot_rate_bytes;          /* 0 = unlimited */
	const char *tls_ca, *tls_cert, *tls_key; /* all or none */
	/* this node's addresses as clients and operators reach it, told to
	 * every peer after the handshake (peer.h INFO; "host:port", printable,
	 * < PEER_NODE_ADDR_MAX; NULL or "" = not told): the plain TCP and TLS
	 * client ports (the leader hint of ERROR NOTLEADER) and the admin port
	 * (parleyctl cluster status) */
	const char *client_addr, *client_tls_addr, *admin_addr;
	/* The founding voters (pe_cluster.voters, contract items 1 and 12 of
	 * parley_engine.h); 0 = this node and every peer (a founding node).
	 * A node added to the cluster later gives the founders here. */
	const uint64_t *founders;
	uint32_t nfounders;
	/* The data directory: peers added and removed at run time are
	 * journaled in <data_dir>/cluster-peers and replayed at the next
	 * start (NULL = not kept). */
	const char *data_dir;
	/* Leader placement (docs/CLUSTER.md §3.2): false = every partition
	 * follows partition 0's leader (pe_cluster.follow_partition0); true =
	 * no hand-over, each group keeps the leader it elected (writes to a
	 * partition led elsewhere are forwarded: peer_node_forward). */
	bool leader_spread;
	/* With leader_spread: once no partition's role or term changed
	 * for this long (ms), a node leading more than its share of the
	 * partitions hands the excess to the least loaded nodes by itself
	 * (as peer_node_rebalance does; after a failover, after a node came
	 * back); then it waits as long again. 0 = never (config key
	 * leader_rebalance_ms). */
	uint32_t rebalance_ms;
	/* Voters per partition that add-node / remove-node place (placement.h,
	 * docs/CLUSTER.md §3.7); 0 = every node is a voter of every partition
	 * (no placement map is written). */
	uint32_t replication_factor;
	/* Peer frame types this node knows and announces (peer.h
	 * peer_config.frames): 0 = all of this build's; an older set makes
	 * the node act as one built before the newer frames (tests; parleyd
	 * reads it from PARLEY_TEST_PEER_FRAMES). */
	uint32_t frames;
};

struct peer_node;

/* Parses "id=addr:port,id=addr:port,..." ("[v6]:port" for IPv6) into
 * cfg->peers. 0 or -PARLEY_EINVAL (message on stderr). */
int peer_node_parse_peers(const char *s, struct peer_node_config *cfg);

int peer_node_new(const struct peer_node_config *cfg, struct peer_node **out);
/* The engine's replication settings (valid while the node lives). */
const struct pe_cluster *peer_node_cluster(struct peer_node *n);
int peer_node_start(struct peer_node *n, struct pe_engine *e);
/* Ends the thread (before pe_close: it calls into the engine); the engine
 * may still send (queued, never sent). */
void peer_node_halt(struct peer_node *n);
/* Frees everything (after pe_close); halts first if needed. */
void peer_node_stop(struct peer_node *n);
/* Peers added or removed at run time (a node joins or leaves the
 * cluster), from any thread: queued for the node thread, which applies
 * them in order at its next round (peer_add / peer_remove; a removed id is
 * never added again). 0, or -PARLEY_EINVAL (id 0 or this node, address
 * not numeric, port 0) / -PARLEY_ENOMEM; the transport's own refusals
 * are logged. */
int peer_node_add_peer(struct peer_node *n, uint64_t id, const char *addr,
		       uint16_t port);
int peer_node_remove_peer(struct peer_node *n, uint64_t id);
/* Cluster membership (docs/CLUSTER.md §3.7), on the node that leads
 * partition 0, blocking (at most about wait_ms; the admin port runs them
 * on the membership worker, peer_node_op_start below):
 * add_node writes the new node's addresses to the members stream (every
 * node then names it to its transport), adds it as a learner of every
 * partition, waits until this leader sees it caught up everywhere, and
 * promotes it to voter; remove_node first checks that in every partition
 * where the node is a voter, the voters left that are healthy (this node,
 * or link up, active and holding the commit index of the check's start)
 * are a quorum of the new configuration (peer_node_removal_safe; sampled
 * for up to PEER_NODE_HEALTH_WAIT_MS, -PARLEY_EPERM naming the unhealthy
 * voters when not; `force` skips it), then removes it from every
 * partition and writes its removal (forced: the removal is written
 * first, while the node still votes, so that a removal leaving a voter
 * set that cannot commit still finishes in one call; every node forgets
 * a removed node, closing its link, once no partition's configuration
 * there holds it); asked to
 * remove this node itself, it hands the leadership of every partition to
 * another current voter and answers -PARLEY_ENOTLEADER naming it (the
 * caller repeats the command there; docs/CLUSTER.md §3.7), or
 * -PARLEY_EAGAIN when there is no other current voter. Both are
 * idempotent (repeat after a timeout).
 * 0, or -PARLEY_ENOTLEADER (msg names the leader as this node knows it,
 * its last line "leader=N admin=HOST:PORT"), -PARLEY_EINVAL (bad id or
 * address, a reused id, add_node of this node itself), -PARLEY_EPERM (an
 * unsafe removal refused), -PARLEY_ETIMEDOUT (msg says how far it got),
 * -PARLEY_ECLOSED (the node is stopping), another engine error. msg gets
 * a short text answer. */
#define PEER_NODE_HEALTH_WAIT_MS 3000u
int peer_node_add_node(struct peer_node *n, uint64_t id, const char *peer,
		       const char *client, const char *admin, uint32_t wait_ms,
		       char *msg, size_t cap);
int peer_node_remove_node(struct peer_node *n, uint64_t id, bool force,
			  uint32_t wait_ms, char *msg, size_t cap);

/* The removal check, pure: a group whose voters are voters[0..n) (each
 * healthy[i] or not) loses `removed`. True when the healthy voters left
 * are at least a quorum of the n - 1 left (*left and *need get both
 * counts), or when `removed` is not a voter (the quorum does not change)
 * or is the only one (the engine refuses that change itself). */
bool peer_node_removal_safe(const uint64_t *voters, const bool *healthy,
			    uint32_t n, uint64_t removed, uint32_t *left,
			    uint32_t *need);

/* ---- the membership worker (docs/CLUSTER.md §3.7) ---- */

enum peer_node_op_kind {
	PEER_NODE_OP_ADD = 1,
	PEER_NODE_OP_REMOVE = 2,
	PEER_NODE_OP_REBALANCE = 3, /* peer_node_rebalance (id unused) */
};
/* "add", "remove" or "rebalance" */
const char *peer_node_op_name(enum peer_node_op_kind k);

struct peer_node_op {
	enum peer_node_op_kind kind;
	uint64_t id;
	char peer[96], client[96], admin[96]; /* add: as peer_node_add_node */
	bool force;                           /* remove: skip the check */
	uint32_t wait_ms;
};

/* Runs one membership operation on a worker thread of its own (its waits
 * never hold the admin thread or the node thread). At most one runs at a
 * time: 0 and *ticket, or -PARLEY_EAGAIN while another runs (msg:
 * "operation in progress (add node 4, 12 s)"), -PARLEY_ECLOSED once
 * halting / before start, -PARLEY_ENOMEM. Any thread. */
int peer_node_op_start(struct peer_node *n, const struct peer_node_op *op,
		       uint64_t *ticket, char *msg, size_t cap);
/* The outcome of operation `ticket`: 0 with *rc and msg (as
 * peer_node_add_node / _remove_node / _rebalance) once it ended, -PARLEY_EAGAIN while
 * it runs, -PARLEY_ENOTFOUND when a newer operation replaced it. Any
 * thread. */
int peer_node_op_result(struct peer_node *n, uint64_t ticket, int *rc,
			char *msg, size_t cap);
/* The running operation and how long it has run (ms); false when none. */
bool peer_node_op_running(struct peer_node *n, struct peer_node_op *op,
			  uint64_t *elapsed_ms);
/* "add node 4, 12 s"-style text of a running operation into out. */
void peer_node_op_describe(const struct peer_node_op *op, uint64_t elapsed_ms,
			   char *out, size_t cap);

/* ---- application frames (request forwarding, server/proxy.h) ---- */

#define PEER_NODE_APP_BYTES (16ull << 20) /* queued for the node thread */

/* Hooks of the application that uses the peer links besides Raft (the
 * request proxy); all run on the node thread. */
struct peer_node_app {
	/* an application frame (peer.h PEER_FRAME_FWD_*) arrived (borrowed) */
	void (*on_frame)(void *arg, uint64_t from, uint8_t type,
			 const uint8_t *p, uint32_t n);
	/* a frame queued by peer_node_send_app could not be handed to the
	 * link (err: its refusal), so it will never arrive */
	void (*on_unsent)(void *arg, uint64_t to, uint8_t type,
			  const uint8_t *p, uint32_t n, int err);
	void (*on_link)(void *arg, uint64_t node, bool up);
	void (*on_tick)(void *arg, uint64_t now_ms); /* every tick_ms */
	void *arg;
};
/* Installs the hooks; before peer_node_start. */
void peer_node_set_app(struct peer_node *n, const struct peer_node_app *app);
/* Queues an application frame (the concatenation of a and b, copied) for
 * node `to` from any thread; the node thread hands it to the link at its
 * next round (peer_send_app), or reports on_unsent. 0, -PARLEY_EFULL
 * (PEER_NODE_APP_BYTES queued), -PARLEY_ENOMEM. */
int peer_node_send_app(struct peer_node *n, uint64_t to, uint8_t type,
		       const void *a, size_t alen, const void *b, size_t blen);
/* Whether the link to `node` is up now (any thread). */
bool peer_node_link_up(struct peer_node *n, uint64_t node);
/* Whether a peer frame of `type` may go to `node` now: its link is up
 * and both nodes know the type (peer.h contract item 9; a peer of an
 * older build does not know the newer frames: its sender falls back).
 * Any thread. */
bool peer_node_can_send(struct peer_node *n, uint64_t node, uint8_t type);
/* The peer frame types this node knows and announces (peer.h). */
uint32_t peer_node_frames(struct peer_node *n);

/* Leader placement (docs/CLUSTER.md §3.2), blocking (at most about
 * wait_ms; the admin port runs transfer on its thread and rebalance on
 * the membership worker, PEER_NODE_OP_REBALANCE). transfer: this node, the leader of `part`,
 * hands it to voter `to` (pe_raft_transfer_partition, asked again until
 * it took effect). rebalance: this node hands the partitions it leads
 * beyond its share (ceil(partitions / nodes), the nodes being partition
 * 0's voters with a link up) to the least loaded voters below their
 * share, as this node sees the leaders; run it on every node (parleyctl
 * cluster rebalance does) for every node to lead about partitions / N.
 * 0, -PARLEY_ENOTLEADER (transfer: msg names the leader, last line
 * "leader=N admin=HOST:PORT"), -PARLEY_EINVAL, -PARLEY_ETIMEDOUT (msg
 * says what is left; repeat), another engine error. msg: a short text
 * answer. */
int peer_node_transfer(struct peer_node *n, uint32_t part, uint64_t to,
		       uint32_t wait_ms, char *msg, size_t cap);
int peer_node_rebalance(struct peer_node *n, uint32_t wait_ms, char *msg,
			size_t cap);
/* Forwarded appends (server/peer_fwd.h, contract there): queues q for
 * node `to`, the leader of q's partition; arg is the struct peer_node.
 * The shape of chat_fwd_fn (chat.h). Any thread, never blocks. */
int peer_node_forward(void *arg, uint64_t to, const struct pe_append_req *q,
		      pe_append_cb cb, void *cb_arg);
/* The same for pe_delete (chat_fwd_del_fn). */
int peer_node_forward_delete(void *arg, uint64_t to, const void *key,
			     size_t klen, uint64_t through, pe_delete_cb cb,
			     void *cb_arg);
/* Messages dropped because the outbox was full (any thread). */
uint64_t peer_node_outbox_drops(struct peer_node *n);
/* Prometheus text for /metrics: elections (term changes) and leaderships
 * gained as seen on the ticks, outbox drops, and the transport's per-link
 * series (peer_metrics_text). Returns the length written, or the length
 * needed when cap is too small (as admin_metrics_text). Any thread, once
 * started. */
size_t peer_node_metrics_text(struct peer_node *n, char *buf, size_t cap);

/* ---- cluster status (GET /cluster, docs/CLUSTER.md §3.6) ---- */

#define PEER_NODE_ADDR_MAX 80u /* "host:port" as advertised */

/* One peer link as GET /cluster shows it. */
struct peer_node_link {
	uint64_t node;
	bool up;
	uint64_t bytes_in, bytes_out;     /* on the wire */
	uint64_t connects, reconnects, dead, connect_failures;
	/* what the peer advertised ("" = unknown); kept after it went down;
	 * for a node added at run time that never advertised, the client and
	 * admin addresses its members record gives */
	char client_addr[PEER_NODE_ADDR_MAX];
	char client_tls_addr[PEER_NODE_ADDR_MAX];
	char admin_addr[PEER_NODE_ADDR_MAX];
	char last_error[128];
	/* peer frame types it knows (peer.h item 9; 0 = not known yet),
	 * and whether it announced them (else it is a build from before the
	 * announcement, taken to know PEER_FRAMES_LEGACY) */
	uint32_t frames;
	bool frames_announced;
};

uint64_t peer_node_id(const struct peer_node *n);
/* This node's own advertised addresses (its configuration; "" = none). */
const char *peer_node_self_addr(const struct peer_node *n, const char *which);
/* The client or admin address ("client" / "admin") the members stream
 * recorded for node `id` (nodes added at run time), copied into out;
 * false when none is recorded. Any thread. */
bool peer_node_recorded_addr(struct peer_node *n, uint64_t id,
			     const char *which, char *out, size_t cap);
uint64_t peer_node_cluster_id(const struct peer_node *n);
/* Fills out[0..cap) with the links in --peers order; returns how many.
 * Any thread. */
uint32_t peer_node_links(struct peer_node *n, struct peer_node_link *out,
			 uint32_t cap);
/* The leader hint of ERROR NOTLEADER (PROTOCOL.md): node `leader` (the
 * leader of the partition refused, as route.h finds it) and its
 * advertised client addresses, copied into plain / tls (cap bytes each,
 * "" = unknown; a node added at run time whose INFO did not arrive gets
 * the plain client address its members record gives). Returns `leader`,
 * or 0 when it is 0 or this node. Any thread. */
uint64_t peer_node_leader_hint(struct peer_node *n, uint64_t leader,
			       char *plain, char *tls, size_t cap);

/* ---- the placement map (placement.h, docs/CLUSTER.md §3.7) ---- */

/* Partition p's replicas by the placement map as this node applied it
 * from the members stream (the founders while no record placed it);
 * false for p out of range or before peer_node_start. Any thread. */
bool peer_node_placement(struct peer_node *n, uint32_t p,
			 struct placement_part *out, bool *recorded);
/* The meta group's partitions: 0 and the members stream's (one when they
 * are the same), into out; returns how many (0 before start). */
uint32_t peer_node_meta_parts(struct peer_node *n,
			      uint32_t out[PLACEMENT_MAX_META]);
uint32_t peer_node_replication_factor(const struct peer_node *n);
/* Whether this node is a member (voter or learner) of p's group as it
 * has the configuration. Any thread. */
bool peer_node_holds(struct peer_node *n, uint32_t p);
/* The leader of partition p as this node knows it: from its own group
 * when it holds p (this node's id when it leads), else from the leader
 * table the other nodes' LEADS frames fill (every 10 ticks, each node
 * names the partitions it leads); 0 = none known. Any thread. */
uint64_t peer_node_partition_leader(struct peer_node *n, uint32_t p);
/* Where a chat write to partition p goes (chat_set_router's shape; arg
 * is the struct peer_node): UINT64_MAX (CHAT_ROUTE_DEFAULT) when this
 * node holds p (the usual rule, route.h), else the node leading p from
 * the leader table (0 when none is known: the engine answers
 * NOTLEADER). */
uint64_t peer_node_route(void *arg, uint32_t p);
/* One membership change of partition p, on p's leader (POST
 * /cluster/conf): idempotent (a change already made answers 0); a
 * promotion waits for the learner to hold the commit index
 * (-PARLEY_EAGAIN until then). 0, -PARLEY_ENOTLEADER (msg ends with the
 * "leader=N admin=HOST:PORT" line of p's leader as this node knows it),
 * -PARLEY_EINVAL, -PARLEY_EAGAIN, another engine error. Blocks for one
 * commit. */
int peer_node_conf_one(struct peer_node *n, uint32_t p, enum pe_conf_op op,
		       uint64_t node, char *msg, size_t cap);

#endif /* PARLEYD_PEER_NODE_H */
