/*
 * presence.h — who is online, typing indicators and presence
 * subscriptions, server-wide across the event loops (private to server/).
 *
 * Registry. One entry per user that is connected, subscribed to, or
 * typing, in a hash table of PRESENCE_SHARDS shards with a mutex each
 * (same reasoning as ratelimit.h: a user's connections and subscribers
 * sit on different loops). An entry holds the user's sessions (one per
 * authenticated connection: its handle and last heartbeat), the handles
 * of the connections subscribed to it, the conversations it is typing
 * in, and its last_seen. Entries are bounded by what keeps them alive:
 * connections (max_connections), subscriptions (presence_subs_max per
 * connection) and typing (PRESENCE_TYPING_MAX per user); the sweep frees
 * an entry once nothing does and its last_seen is written.
 *
 * Heartbeat: rides on existing traffic. Every frame an authenticated
 * connection sends refreshes its session (the connection forwards it to
 * the registry at most every heartbeat_ms / 4, without a lock between);
 * an otherwise idle client sends PING every heartbeat_ms. A session whose
 * last heartbeat is ttl_ms old no longer counts. A user is ONLINE while at
 * least one session counts; closing the last connection makes the user
 * OFFLINE at once, a silent one after ttl_ms (found by the sweep).
 *
 * Pushes: a transition (online <-> offline, a changed hidden setting) is
 * pushed as PRESENCE to every subscribed connection, posted to its loop
 * while the user's shard lock is held, so one subscriber sees one user's
 * transitions in order. PRESENCE_SUB_OK is built and posted under the
 * shard locks of all the users it names, so each push about them comes
 * either before it (older than its view) or after it: the last thing a
 * client hears about a user (reply or push) is current. Typing is forwarded as TYPING_PUSH to every
 * session of every other member of the conversation (never to the
 * typer's own devices). A push is an lmsg of kind LM_PUSH; at most
 * push_queue_max of them wait in all loops' queues together, beyond that
 * a push is dropped and counted (pushes_dropped): presence and typing are
 * soft state, and a client learns the current state again with
 * PRESENCE_SUB.
 *
 * Typing (pure core, pres_typing_*): STARTED adds or refreshes (user,
 * conv) with expiry now + typing_ttl_ms and is forwarded when it is new
 * or the last forward is typing_ttl_ms / 3 old (coalescing: a client
 * repeating faster costs no pushes); STOPPED removes it and is forwarded
 * if it was there. The sweep turns an entry not refreshed for
 * typing_ttl_ms into a forwarded STOPPED, and closing a connection stops
 * what it was typing. The push carries ttl_ms so that a receiver also
 * clears the indicator by itself if a STOPPED never comes.
 *
 * last_seen: durable in stream p/<user> (CHAT_ENT_LAST_SEEN: u8 version,
 * u64 unix ms), written lazily by the sweep thread: when the user goes
 * offline (the time of its last heartbeat), and every last_seen_write_ms
 * while online (then "now"). A crash loses what was not yet written: the
 * offline transitions of the last sweep (~PRESENCE_SWEEP_MS) and, for
 * users online at the crash, up to last_seen_write_ms (they show the last
 * periodic write). A graceful stop writes every user's last_seen. The
 * hide setting is durable in ps/<user> (CHAT_ENT_PRESENCE_SET: u8 version,
 * u32 flags), written before PRESENCE_SET_OK. Both are read when a
 * subscription needs an entry not loaded yet; retention keeps the last
 * few records of each.
 *
 * Cluster: see "across the nodes of a cluster" below: a user online on
 * another node is ONLINE here too; typing reaches members on every node.
 * Threads: presence_conn_* / presence_typing / presence_sub / presence_set
 * run on the connection's loop thread (a struct presence_conn belongs to
 * it); engine callbacks and the sweep thread touch entries under their
 * shard lock; loop_post is the only way to a connection. Lock order: a
 * shard lock, then a loop's queue lock or the relay's (the peer node's
 * app queue: the relay hook only queues, it never calls back in); the
 * relay's caller (proxy_node.c) may hold its own mutex around
 * presence_relay_recv / presence_link, never taken under a shard lock;
 * several shard locks only in sub_finish, in ascending shard order.
 */
#ifndef PARLEYD_PRESENCE_H
#define PARLEYD_PRESENCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lmsg.h"
#include "parley_engine.h"
#include "parley_proto.h"

struct loop;
struct srv;

#define PRESENCE_SHARDS 64u
#define PRESENCE_BUCKETS 1024u      /* hash chains per shard */
#define PRESENCE_TYPING_MAX 8u      /* conversations one user types in at once */
#define PRESENCE_SWEEP_MS 100u      /* TTL / typing expiry / last_seen writes */
#define PRESENCE_RETAIN 4u          /* records kept in p/ and ps/ streams */
#define PRESENCE_REMOTE_MAX 8u      /* nodes one user is online on, besides
				       this one (PEER_NODE_MAX_PEERS) */
/* Across nodes: the whole online set goes to every node this often (a
 * safety net: transitions and the sets at link up, RESEND and after a
 * payload could not be queued keep the others current), at most every
 * PRESENCE_RESYNC_MIN_MS after a failure (doubling up to
 * PRESENCE_RESYNC_MAX_MS while the repair sets fail too); a remote entry
 * not refreshed for PRESENCE_REMOTE_TTL_MS goes. */
#define PRESENCE_SET_MS 600000u
#define PRESENCE_RESYNC_MIN_MS 1000u
#define PRESENCE_RESYNC_MAX_MS 60000u
#define PRESENCE_REMOTE_TTL_MS (3u * PRESENCE_SET_MS)

/* Engine entry types (chat.h's range for presence). */
#define CHAT_ENT_LAST_SEEN 14
#define CHAT_ENT_PRESENCE_SET 15

struct presence_config {
	uint32_t heartbeat_ms;       /* presence_heartbeat_ms */
	uint32_t ttl_ms;             /* presence_ttl_ms (> heartbeat_ms) */
	uint32_t subs_max;           /* presence_subs_max, per connection */
	uint32_t typing_ttl_ms;      /* typing_ttl_ms */
	uint32_t last_seen_write_ms; /* presence_last_seen_write_ms */
	uint32_t push_queue_max;     /* presence_push_queue_max */
};

/* Connections are named by struct conn_ref (lmsg.h): loop, slot,
 * generation; it may have closed since. */

/* ---- pure core (no locks, no clock, no I/O; tested by unit tests) -------- */

struct pres_sess {
	struct conn_ref h;
	uint64_t hb_ns;              /* last heartbeat, monotonic */
};

struct pres_typing {
	uint64_t until_ns;           /* expires (no refresh) */
	uint64_t fwd_ns;             /* last forwarded */
	struct conn_ref from;   /* the connection typing */
	uint8_t clen;
	char conv[PARLEY_PROTO_MAX_CONV_ID];
};

/* The user is online on another node of the cluster (presence_relay.h):
 * until its OFFLINE, the link to it going down, or until_ns. */
struct pres_remote {
	uint64_t node;
	uint64_t until_ns;           /* monotonic; refreshed by ONLINE */
	uint32_t gen;                /* the node's set generation it came in */
};

struct pres_user {
	struct pres_user *next;      /* hash chain */
	uint32_t hash;
	uint8_t ulen;
	char user[PARLEY_PROTO_MAX_USER_ID + 1];
	bool online;                 /* last announced state */
	bool local_online;           /* a session of this node counts */
	bool dirty;                  /* last_seen_ms not written yet */
	bool loaded_ls, loaded_set;  /* p/ and ps/ read (or written) */
	bool hidden;                 /* PARLEY_PRESF_HIDE_LAST_SEEN */
	bool set_live;               /* hidden set by PRESENCE_SET: reads
					do not override it */
	uint32_t io;                 /* reads and writes in flight */
	uint64_t active_ms;          /* wall time of the last heartbeat */
	uint64_t last_seen_ms;       /* 0 = unknown */
	uint64_t written_ms;         /* when last_seen was last written */
	struct pres_sess *sess;
	uint32_t nsess, capsess;
	struct conn_ref *subs;
	uint32_t nsubs, capsubs;
	struct pres_typing *typing;  /* PRESENCE_TYPING_MAX, allocated lazily */
	uint32_t ntyping;
	struct pres_remote *remote;  /* capremote allocated (1 at first: most
					users are online on one node; at
					most PRESENCE_REMOTE_MAX) */
	uint32_t nremote, capremote;
};

/* Sessions. add: 0 or -PARLEY_ENOMEM; del/beat: true if it was there. */
int pres_sess_add(struct pres_user *u, struct conn_ref h, uint64_t now_ns,
		  uint64_t now_ms);
bool pres_sess_del(struct pres_user *u, struct conn_ref h,
		   uint64_t now_ms);
bool pres_sess_beat(struct pres_user *u, struct conn_ref h,
		    uint64_t now_ns, uint64_t now_ms);
/* Re-evaluates the state at now: +1 became online, -1 became offline
 * (last_seen_ms = the last heartbeat's wall time, dirty), 0 unchanged.
 * now_ns may be older than a session's last beat (a clock read before
 * another thread's beat): that session counts as alive. */
int pres_user_update(struct pres_user *u, uint64_t now_ns, uint64_t ttl_ns);
/* Remote sessions (other nodes). set: adds or refreshes (node, until_ns,
 * gen),
 * false when PRESENCE_REMOTE_MAX nodes are there already (or no memory
 * for one more); del: true if
 * node was there; expire: drops those with until_ns <= now_ns, returns how
 * many. The caller then calls pres_user_update: a user is online while a
 * local session counts or a remote entry is there; last_seen (durable)
 * is written only for the local sessions' end (dirty), a remote end sets
 * last_seen_ms to active_ms for the view only (the other node writes). */
bool pres_remote_set(struct pres_user *u, uint64_t node, uint64_t until_ns,
		     uint32_t gen);
/* SET_END of node's set generation gen: drops node's entry when its
 * generation is older (serial arithmetic: gen wraps); true if dropped. */
bool pres_remote_drop_older(struct pres_user *u, uint64_t node, uint32_t gen);
bool pres_remote_del(struct pres_user *u, uint64_t node);
unsigned pres_remote_expire(struct pres_user *u, uint64_t now_ns);
/* What a subscriber sees. last_seen is 0 while online, when hidden, or
 * while the hide setting is not known yet. */
void pres_user_view(const struct pres_user *u, uint8_t *status,
		    uint64_t *last_seen_ms);
/* True if last_seen should be written now; *value is what to write. */
bool pres_user_write_due(const struct pres_user *u, uint64_t now_ms,
			 uint64_t every_ms, uint64_t *value);
/* Nothing keeps the entry alive. */
bool pres_user_idle(const struct pres_user *u);
/* Subscribers: add 0 / -PARLEY_ENOMEM; del true if it was there. */
int pres_sub_add(struct pres_user *u, struct conn_ref h);
bool pres_sub_del(struct pres_user *u, struct conn_ref h);

/* Typing. 1 = forward this state change, 0 = coalesced / nothing to stop,
 * -PARLEY_EFULL = already typing in PRESENCE_TYPING_MAX conversations,
 * -PARLEY_ENOMEM. */
int pres_typing_update(struct pres_user *u, const char *conv, size_t clen,
		       bool started, struct conn_ref from, uint64_t now_ns,
		       uint64_t ttl_ns);
/* Removes the entries expired at now (or, with `from`, every entry of
 * that connection) and copies them to out (at most cap); returns how
 * many were removed. */
unsigned pres_typing_expire(struct pres_user *u, uint64_t now_ns,
			    struct pres_typing *out, unsigned cap);
unsigned pres_typing_drop_peer(struct pres_user *u, struct conn_ref from,
			       struct pres_typing *out, unsigned cap);
/* Removes the indicator of conv (a refusal from the group's leader):
 * true and *from = the connection typing, or false (not there). */
bool pres_typing_forget(struct pres_user *u, const char *conv, size_t clen,
			struct conn_ref *from);
void pres_user_free(struct pres_user *u);

/* ---- the running registry ------------------------------------------------ */

struct presence;
struct presence_conn; /* a connection's part (owned by its loop thread) */

struct presence_stats {
	uint64_t entries;            /* registry entries now */
	uint64_t online;             /* users online on this node now */
	uint64_t subscriptions;      /* connection -> user subscriptions now */
	uint64_t typing_in, typing_pushes, presence_pushes, pushes_dropped;
	uint64_t last_seen_writes, last_seen_write_errors, loads;
	uint64_t relay_out, relay_in;  /* PEER_FRAME_PRES payloads */
	uint64_t relay_dropped;        /* remote entries refused (full) */
	uint64_t typing_refused;       /* TYPING_REQs refused here (leader) */
	uint64_t typing_refused_in;    /* refusals answered to our typists */
	uint64_t relay_failed;         /* payloads not queued / not sent */
	uint64_t sets_sent;            /* whole online sets sent */
	uint64_t set_dropped;          /* remote entries a SET_END dropped */
};

/* ---- across the nodes of a cluster (presence_relay.h) --------------------
 * With a relay installed (parleyd in a cluster: proxy_node_presence) the
 * registry tells the other nodes about its users' online / offline
 * transitions (at once), its whole local online set (to a node whose link
 * comes up or asks with RESEND, to every node after a payload could not
 * be queued, at most every PRESENCE_RESYNC_MIN_MS, and each
 * PRESENCE_SET_MS; a set is numbered, and its SET_END drops the users the
 * receiver had from an older set: deltas, with the whole set only to
 * repair; a node that sends no SET_END is a build before generations
 * and gets the whole set every presence_ttl_ms / 3 instead), its
 * users'
 * PRESENCE_SET, and typing: a TYPING push for members online on another
 * node goes there as a TYPING payload naming them; a TYPING in a group
 * this node cannot resolve (it does not lead the group's partition) goes
 * to every node as TYPING_REQ (tracked here as any typing: coalescing,
 * the bound, the stop at close and expiry) and the leader checks the
 * membership and fans it out, or refuses a STARTED (not a member, no such
 * group) back to this node as TYPING_REFUSED, which answers the typing
 * connection ERROR PERM / NOTFOUND as a single node does. The read
 * fan-out of large groups asks presence_user_nodes where members are
 * online, to send LIVE payloads only there. Best effort: a payload
 * that cannot be queued, or is queued and not sent, makes the whole set
 * go again; a link going down drops the users online there. */
typedef int (*presence_relay_fn)(void *arg, uint64_t to, const uint8_t *p,
				 uint32_t n); /* to 0: every node, link up;
						 0, or < 0 when it could
						 not be queued for one */
/* Any thread; fn NULL: none (single node). */
void presence_set_relay(struct presence *p, presence_relay_fn fn, void *arg);
/* A payload from node `from` (any thread; borrowed). 0 or -PARLEY_EPROTO. */
int presence_relay_recv(struct presence *p, uint64_t from, const uint8_t *b,
			uint32_t n);
/* The link to `node` went up (send it our online set and ask for its:
 * RESEND) or down (drop the users online there: OFFLINE pushes). Any
 * thread. */
void presence_link(struct presence *p, uint64_t node, bool up);
/* A PRES payload queued earlier was not sent (the peer node's on_unsent):
 * the whole set goes again soon (as after a failed queueing). Any
 * thread. */
void presence_relay_unsent(struct presence *p);

/* The other nodes `user` is online on, as this node knows (the remote
 * entries): fills nodes (at most cap), returns how many. Any thread (one
 * shard lock). The read fan-out asks it which nodes a large group's LIVE
 * payload must reach (chat.h, chat_set_live_where). */
unsigned presence_user_nodes(struct presence *p, const char *user,
			     size_t ulen, uint64_t *nodes, unsigned cap);

/* 0 or -PARLEY_EINVAL with a reason in why. */
int presence_config_check(const struct presence_config *cfg, char *why,
			  size_t whycap);
/* Allocates the registry and starts the sweep thread. s->engine must be
 * open. 0, -PARLEY_EINVAL, -PARLEY_ENOMEM. */
int presence_open(const struct presence_config *cfg, struct srv *s,
		  struct presence **out);
/* After every loop has stopped (all connections closed): writes every
 * pending last_seen, waits for the engine, stops the thread, frees. */
void presence_close(struct presence *p);
void presence_get_stats(struct presence *p, struct presence_stats *st);
/* Retention rules for p/ and ps/ (to add to pe_options.retention). */
extern const struct pe_retention_rule presence_retention[];
extern const size_t presence_nretention;

/* Loop thread. At AUTH_OK: the connection becomes a session of user. */
int presence_conn_online(struct presence *p, struct presence_conn **pc,
			 const char *user, size_t ulen, struct conn_ref h);
/* Any frame from the connection (throttled inside, lock-free mostly). */
void presence_conn_beat(struct presence *p, struct presence_conn *pc,
			uint64_t now_ns);
/* At close: ends the session, its subscriptions and its typing; frees *pc. */
void presence_conn_offline(struct presence *p, struct presence_conn **pc);
/* TYPING from the connection's user. 0, -PARLEY_ENOTFOUND (no such
 * conversation), -PARLEY_EPERM (not a member), -PARLEY_EFULL. */
int presence_typing(struct presence *p, struct presence_conn *pc,
		    const char *conv, size_t clen, bool started);
/* PRESENCE_SUB. 0: the reply (PRESENCE_SUB_OK, done_req) will be posted
 * to the connection; or -PARLEY_ELIMIT (over presence_subs_max: nothing
 * changed), -PARLEY_ENOMEM. */
int presence_sub(struct presence *p, struct presence_conn *pc, uint32_t rid,
		 const struct parley_presence_sub *m);
/* PRESENCE_SET. 0: PRESENCE_SET_OK (or an ERROR) will be posted once the
 * setting is durable; or -PARLEY_ENOMEM / -PARLEY_EFULL (engine queue). */
int presence_set(struct presence *p, struct presence_conn *pc, uint32_t rid,
		 uint32_t flags);
/* loop.c: an LM_PUSH left a loop's queue (delivered or dropped). */
void presence_push_retired(struct presence *p);

#endif /* PARLEYD_PRESENCE_H */
