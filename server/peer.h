/*
 * peer.h — the node-to-node transport: Raft messages between parleyd nodes
 * over their own TCP port (optionally mutual TLS), one connection per node
 * pair, carrying the Raft codec's coalesced per-node-pair frames
 * (raft_codec.h).
 *
 * This is the transport layer the replicated engine will use. It knows
 * nothing of groups or partitions: it moves batches of struct raft_msg from
 * this node to another node and hands received batches to a callback. The
 * caller (today the tests; later the engine's shard threads through a
 * routing layer) decides what to send; coalescing the heartbeats of many
 * groups into one frame is done by passing them in one peer_send() call.
 *
 * THE CONTRACT
 *   1. Identity. Every node has a cluster id and a node id (both != 0).
 *      peer_new() binds the peer port; peer_add() names each other node
 *      (id, numeric address, port). Of two nodes the one with the lower id
 *      dials, the higher one accepts: one TCP connection per pair, no
 *      crossing-connection races. Addresses are numeric (IPv4 or IPv6): no
 *      name resolution, so nothing ever blocks on DNS.
 *   2. Handshake. The dialer sends HELLO {cluster id, its node id, the node
 *      id it expects to reach, max_frame, incarnation}; the acceptor checks
 *      it and answers HELLO (the same fields) or REJECT {code, text} and
 *      closes. Refused: another cluster id (PEER_REJ_CLUSTER), a peer
 *      claiming this node's own id (PEER_REJ_SELF), a node id not
 *      configured here (PEER_REJ_UNKNOWN), a second connection for a node
 *      that already has a live link (PEER_REJ_DUPLICATE; the old link must
 *      first be found dead by the read deadline), a HELLO meant for another
 *      node (PEER_REJ_TARGET), another protocol version (PEER_REJ_VERSION),
 *      or, with TLS, a certificate that does not name the claimed node
 *      (PEER_REJ_CERT). The dialer checks the acceptor's HELLO the same way.
 *      Every refusal is logged with its reason, counted, and kept as the
 *      link's last_error (peer_stats).
 *      Node info: every HELLO sets PEER_HELLO_F_INFO; a side whose peer
 *      set it sends one INFO frame right after the handshake carrying
 *      peer_config.info (opaque printable text, <= PEER_INFO_MAX). The
 *      receiver keeps the last one per link, also after the link goes
 *      down (peer_link_stats.info). Nodes built before INFO refuse any
 *      HELLO flag: a cluster moves to this version with all its nodes.
 *   3. Frames. After the handshake the stream is a sequence of peer frames:
 *        u32 len | u8 type | u8 flags (0) | u16 check | len bytes payload
 *      (little-endian; check = low 16 bits of xxh3 over the first 6 bytes).
 *      RAFT frames carry exactly one raft codec frame; PING frames are empty
 *      and keep an idle link alive. A payload is at most the receiver's
 *      max_frame (announced in its HELLO; default and hard limit are the
 *      codec's); before the handshake completes at most
 *      PEER_HANDSHAKE_MAX_PAYLOAD, so an unauthenticated connection cannot
 *      make us buffer megabytes. A frame that breaks a limit, fails a check
 *      or does not decode closes the link (the stream cannot be trusted);
 *      the dialer reconnects.
 *   4. Sending never blocks. peer_send() encodes messages for one node into
 *      frames (split to fit the peer's max_frame and the codec's batch
 *      limit) and appends them to that node's bounded queue
 *      (queue_frames / queue_bytes). Backpressure policy when full:
 *        a. the oldest queued heartbeat-only frames (every message HEARTBEAT
 *           or HEARTBEAT_RESP, not yet started on the wire) are dropped to
 *           make room: a newer message supersedes them (counted drops_hb);
 *        b. if there is still no room, a new heartbeat-only frame is dropped
 *           (drops_hb) and any other frame is refused (refused_full); both
 *           return -PARLEY_EFULL so the caller can slow its proposals.
 *      On a link that is not up, messages are dropped (drops_down,
 *      -PARLEY_ECLOSED); when a link goes down its queue is discarded
 *      (drops_down): a half-written frame cannot continue on a new
 *      connection and Raft retransmits what matters. A single message
 *      larger than the peer's max_frame is dropped (too_big, -PARLEY_ETOOBIG).
 *      Raft tolerates message loss; nothing is retried here.
 *   5. Liveness. A link that received no byte for read_deadline_ms is dead:
 *      closed, counted (dead), and redialled. An up link with nothing to
 *      send for ping_interval_ms sends a PING, so a healthy idle link never
 *      hits the deadline (ping_interval_ms < read_deadline_ms).
 *      A handshake must finish within handshake_timeout_ms.
 *   6. Reconnect. The dialer redials a down link after an exponential
 *      backoff with jitter: attempt k waits a uniform time in
 *      [b/2, b] with b = min(backoff_max_ms, backoff_min_ms * 2^k)
 *      (peer_backoff_ms); k resets when a handshake succeeds.
 *   7. TLS (optional: tls_ca + tls_cert + tls_key). TLS 1.3 with mutual
 *      authentication: each side presents its node certificate, verifies
 *      the other's against the cluster CA, and checks that it names the
 *      node id the HELLO claims: DNS name "node-<id>" in the SAN (or CN
 *      when there is no DNS SAN). A certificate from another CA fails the
 *      TLS handshake; one for another node gets PEER_REJ_CERT. OpenSSL
 *      writes with write(2), so TLS requires SIGPIPE to be ignored
 *      (parleyd does; peer_new refuses TLS otherwise).
 *   8. Raft message flags. A decoder refuses a flag it does not know, so
 *      a flag added later is sent only to a node that says it decodes it:
 *      the transport appends " raftf=<hex>" (PEER_INFO_RAFTF, the
 *      RAFT_MSGF_* mask its decoder accepts) to the INFO it sends when
 *      that fits PEER_INFO_MAX, and takes the key out of the INFO it
 *      receives. Toward a node that announced no such key (built before
 *      it, or its INFO not received yet) it clears the advisory flags
 *      (raft.h RAFT_MSGF_ADVISORY: the message means the same without
 *      them) it did not announce, counted (flags_cleared). Nodes built
 *      before the key ignore it (an INFO is "k=v" pairs), so such a node
 *      and a newer one keep working together.
 *   9. Frame sets (rolling upgrades). Application frames were added over
 *      time and a node closes a link that carries a type it does not
 *      know, so every node announces the frame types it knows: the
 *      transport appends " frames=<hex>" (PEER_INFO_FRAMES, a bitmap,
 *      bit t = type t) to its INFO and takes the key out of the INFO it
 *      receives. A node that announces no set is taken to know
 *      PEER_FRAMES_LEGACY (builds before the key). peer_send_app sends a
 *      type only when both this node's set (peer_config.frames) and the
 *      peer's hold it (else -PARLEY_EVERSION, counted `unsupported`);
 *      a received type outside this node's set closes the link, as on a
 *      node built before it. A peer's set is known from its first frame
 *      after the handshake (its INFO comes first when it sends one), so
 *      on_link(up) is called then, not at the handshake: until it, the
 *      application sees the link down. A set other than this node's is
 *      logged (peer_link_stats.frames shows it).
 *
 * Threads and ownership. A struct peer is owned by one thread (its loop
 * thread): every call but peer_stats / peer_metrics_text must come from
 * it. peer_poll() waits in epoll_wait on non-blocking sockets and never
 * blocks elsewhere. Received messages are passed to on_recv borrowed (valid
 * until it returns); on_recv may call peer_send. peer_stats and
 * peer_metrics_text may be called from any thread (counters are relaxed
 * atomics, last_error is under a mutex); nodes can only be added before the
 * first peer_poll.
 *
 * Errors: 0 / positive counts, or negative -PARLEY_E* / -errno codes.
 */
#ifndef PARLEYD_PEER_H
#define PARLEYD_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley_common.h"
#include "raft.h"

/* ---- limits and defaults ----------------------------------------------- */

#define PEER_MAX_NODES 64u          /* other nodes one node talks to */
#define PEER_MAX_PENDING 16u        /* accepted connections still in handshake */
#define PEER_HANDSHAKE_MAX_PAYLOAD 512u
#define PEER_REASON_MAX 200u        /* REJECT text bytes */
#define PEER_ERROR_MAX 256u         /* last_error kept per link */

#define PEER_DEFAULT_QUEUE_FRAMES 1024u
#define PEER_DEFAULT_QUEUE_BYTES (32ull << 20)
#define PEER_DEFAULT_READ_DEADLINE_MS 1000u
#define PEER_DEFAULT_PING_MS 200u
#define PEER_DEFAULT_HANDSHAKE_MS 3000u
#define PEER_DEFAULT_BACKOFF_MIN_MS 50u
#define PEER_DEFAULT_BACKOFF_MAX_MS 5000u

/* ---- wire format (pure codec, used by the transport and the tests) ----- */

#define PEER_VERSION 1
#define PEER_MAGIC 0x5245455059454c50ull /* "PLEYPEER" little-endian */
#define PEER_HDR_BYTES 8u
#define PEER_HELLO_BYTES 56u             /* HELLO payload */
#define PEER_SEED_HDR 0x5045455248445231ull   /* "PEERHDR1" */
#define PEER_SEED_HELLO 0x5045455248454c4full /* "PEERHELO" */

enum peer_frame_type {
	PEER_FRAME_HELLO = 1,
	PEER_FRAME_REJECT = 2,
	PEER_FRAME_RAFT = 3,
	PEER_FRAME_PING = 4,
	PEER_FRAME_INFO = 5, /* the sender's node info (peer_config.info) */
	/* Application frames: opaque to the transport, handed to
	 * peer_config.on_app (docs/CLUSTER.md §1.3, §3.3). */
	PEER_FRAME_FWD_REQ = 6, /* a client request forwarded to the leader */
	PEER_FRAME_FWD_REP = 7, /* the leader's reply to a forwarded request */
	/* engine appends / deletes forwarded to their partition's leader
	 * (server/peer_fwd.h) and the leader's results */
	PEER_FRAME_APPEND_REQ = 8,
	PEER_FRAME_APPEND_RES = 9,
	/* a large group's live EVENT for members connected to the receiving
	 * node (server/chat.h, chat_set_live_relay) */
	PEER_FRAME_LIVE = 10,
	/* "hand partition P's leadership to node N" (u32 P | u64 N), asked
	 * of P's leader by a node running a membership change (peer_node.c,
	 * conf_all; spread placement) */
	PEER_FRAME_XFER = 11,
	/* presence and typing of the sender's users for the receiver's
	 * connections (server/presence_relay.h) */
	PEER_FRAME_PRES = 12,
	/* the partitions the sender leads, with their terms (server/peer_node.c,
	 * the leader table of partitions a node does not hold) */
	PEER_FRAME_LEADS = 13,
	/* inbox tails served across nodes (server/tail_relay.h): OPEN / ACK /
	 * CLOSE from the client's node, and the holder's frames / END */
	PEER_FRAME_TAIL_REQ = 14,
	PEER_FRAME_TAIL_DATA = 15,
	/* remote reads of a partition the asker does not hold
	 * (server/tail_relay.h, invariant 7): XREAD one way, XREAD_RES the
	 * other, both in this one type */
	PEER_FRAME_XREAD = 16,
};
#define PEER_FRAME_LAST PEER_FRAME_XREAD

/*
 * Frame sets (contract item 9): bit t stands for frame type t.
 *   PEER_FRAMES_BASE    what every node that negotiates knows: HELLO,
 *                       REJECT, RAFT, PING, INFO (never refused);
 *   PEER_FRAMES_LEGACY  what a node that announces no set is taken to
 *                       know: the builds before the negotiation, which all
 *                       had frames 1..13 (an older one cannot be in a
 *                       cluster with them: it closes the link on LEADS);
 *   PEER_FRAMES_ALL     this build's.
 * A new frame type is registered by giving it the next number in
 * enum peer_frame_type and moving PEER_FRAME_LAST to it: it is then in
 * PEER_FRAMES_ALL (announced, accepted, handed to on_app) and never in
 * LEGACY, so peer_send_app refuses it (-PARLEY_EVERSION) toward a node
 * that did not announce it; its sender checks peer_can_send first and
 * falls back to what such a node gets without it.
 */
#define PEER_FRAME_BIT(t) (1u << (t))
#define PEER_FRAMES_UPTO(t) (((1u << ((t) + 1)) - 1u) & ~1u) /* 1..t */
#define PEER_FRAMES_BASE PEER_FRAMES_UPTO(PEER_FRAME_INFO)
#define PEER_FRAMES_LEGACY PEER_FRAMES_UPTO(PEER_FRAME_LEADS)
#define PEER_FRAMES_ALL PEER_FRAMES_UPTO(PEER_FRAME_LAST)
_Static_assert(PEER_FRAME_LAST < 32, "frame sets are 32-bit bitmaps");

/* HELLO flags: bit 0 — the sender understands INFO frames and sends its
 * own right after the handshake when the other side set this bit too. */
#define PEER_HELLO_F_INFO 0x1u
#define PEER_INFO_MAX 200u /* INFO payload bytes (printable ASCII) */
#define PEER_INFO_RAFTF "raftf" /* the transport's INFO key (item 8) */
#define PEER_INFO_FRAMES "frames" /* the frame set it knows (item 9) */

enum peer_reject_code {
	PEER_REJ_NONE = 0,
	PEER_REJ_CLUSTER = 1,   /* another cluster id */
	PEER_REJ_SELF = 2,      /* the peer claims the receiver's own node id */
	PEER_REJ_UNKNOWN = 3,   /* node id not configured on the receiver */
	PEER_REJ_DUPLICATE = 4, /* that node already has a live link */
	PEER_REJ_TARGET = 5,    /* HELLO addressed to another node id */
	PEER_REJ_VERSION = 6,   /* unsupported protocol version */
	PEER_REJ_CERT = 7,      /* TLS certificate names another node */
};

struct peer_hello {
	uint16_t version;
	uint16_t flags;        /* PEER_HELLO_F_*; other bits refused */
	uint32_t max_frame;    /* largest RAFT payload the sender accepts */
	uint64_t cluster_id;
	uint64_t node_id;      /* the sender */
	uint64_t to_node;      /* whom the sender means to reach */
	uint64_t incarnation;  /* random per process start (logs, future use) */
};

/* A frame header at buf[0..len): PEER_HDR_BYTES when valid (type and
 * payload length set), 0 when fewer than PEER_HDR_BYTES bytes, or
 * -PARLEY_ECORRUPT (check mismatch), -PARLEY_EPROTO (unknown type, nonzero
 * flags, a PING with a payload), -PARLEY_ETOOBIG (payload > max_payload). */
int peer_hdr_decode(const uint8_t *buf, size_t len, uint32_t max_payload,
		    uint8_t *type, uint32_t *plen);
void peer_hdr_encode(uint8_t out[PEER_HDR_BYTES], uint8_t type, uint32_t plen);

/* Whole HELLO frame (header + payload) into buf; returns its length or
 * -PARLEY_ETOOBIG when cap is too small. */
int peer_hello_encode(uint8_t *buf, size_t cap, const struct peer_hello *h);
/* A HELLO payload: 0, -PARLEY_EPROTO (length, magic, flags),
 * -PARLEY_ECORRUPT (checksum), -PARLEY_EVERSION (version; h is filled). */
int peer_hello_decode(const uint8_t *p, size_t len, struct peer_hello *h);
/* The acceptance rule of contract item 2 for a HELLO received by node
 * `self` of `cluster`: expect_from is the node id the receiver dialled (0
 * on the accepting side: any configured node); known(arg, id) says whether
 * id is configured. Returns PEER_REJ_NONE or the refusal code. (Duplicate
 * and certificate checks need the transport's state and are done there.) */
enum peer_reject_code peer_hello_verdict(const struct peer_hello *h,
					 uint64_t cluster, uint64_t self,
					 uint64_t expect_from,
					 bool (*known)(void *arg, uint64_t id),
					 void *arg);
/* REJECT frame: u16 code | u16 text length | text (<= PEER_REASON_MAX,
 * truncated). Returns the frame length or -PARLEY_ETOOBIG. */
int peer_reject_encode(uint8_t *buf, size_t cap, uint16_t code,
		       const char *text);
/* A REJECT payload; text is copied NUL-terminated into txt[0..txtcap).
 * 0 or -PARLEY_EPROTO. */
int peer_reject_decode(const uint8_t *p, size_t len, uint16_t *code,
		       char *txt, size_t txtcap);
const char *peer_reject_name(uint16_t code);
/* An INFO payload (contract items 8, 9) of n bytes: its text, made
 * printable ASCII, into v (NUL-terminated) with the transport's keys
 * "raftf=<hex>" and "frames=<hex>" taken out; *raftf the Raft message
 * flags the peer decodes (RAFT_MSGF_BASE without the key, only flags this
 * build knows), *frames the frame set it announced (0: none, or a
 * malformed value). 0, or -PARLEY_ETOOBIG when n > PEER_INFO_MAX. */
int peer_info_decode(const uint8_t *pl, size_t n, char v[PEER_INFO_MAX + 1],
		     uint32_t *raftf, uint32_t *frames);
/* The INFO text a node sends: its own info (<= PEER_INFO_MAX, printable,
 * no transport key) then, each when it fits in PEER_INFO_MAX, " frames=<hex>"
 * and " raftf=<hex>" (the latter only when raftf is more than
 * RAFT_MSGF_BASE), into out (NUL-terminated). false when the frame set did
 * not fit (a peer then assumes PEER_FRAMES_LEGACY). */
bool peer_info_encode(char out[PEER_INFO_MAX + 1], const char *info,
		      uint32_t frames, uint32_t raftf);
/* XFER payload (PEER_XFER_BYTES): u32 partition | u64 to (the node that
 * asks for the partition's leadership). decode: 0 or -PARLEY_EPROTO (not
 * exactly PEER_XFER_BYTES). */
#define PEER_XFER_BYTES 12u
void peer_xfer_encode(uint8_t out[PEER_XFER_BYTES], uint32_t part,
		      uint64_t to);
int peer_xfer_decode(const uint8_t *p, uint32_t n, uint32_t *part,
		     uint64_t *to);
/* LEADS payload: u32 k | k x (u32 partition | u64 term), the partitions
 * the sender leads (PEER_LEADS_BYTES(k) bytes). The encoder writes entry
 * i with peer_leads_put and the count with peer_leads_encode (its length
 * back). peer_leads_decode: k (<= max_entries) when n is exactly that
 * long, else -PARLEY_EPROTO; then peer_leads_get reads entry i < k. */
#define PEER_LEADS_ENTRY 12u
#define PEER_LEADS_BYTES(k) (4u + (size_t)(k) * PEER_LEADS_ENTRY)
void peer_leads_put(uint8_t *b, uint32_t i, uint32_t part, uint64_t term);
size_t peer_leads_encode(uint8_t *b, uint32_t k);
int peer_leads_decode(const uint8_t *p, uint32_t n, uint32_t max_entries);
void peer_leads_get(const uint8_t *p, uint32_t i, uint32_t *part,
		    uint64_t *term);

/* Contract item 6: the delay before redial attempt `attempt` (0-based). */
uint32_t peer_backoff_ms(uint32_t attempt, uint32_t min_ms, uint32_t max_ms,
			 struct parley_rng *rng);

/* ---- the transport ------------------------------------------------------ */

struct peer;

/* Received messages, all from node `from` to this node (borrowed). */
typedef void (*peer_recv_fn)(void *arg, uint64_t from,
			     const struct raft_msg *msgs, uint32_t n);
/* An application frame (type >= PEER_FRAME_FWD_REQ) from node `from`,
 * payload borrowed for the duration of the call; optional (without it
 * such frames are dropped). */
typedef void (*peer_app_fn)(void *arg, uint64_t from, uint8_t type,
			    const uint8_t *p, uint32_t n);
/* A link came up (up = true) or went down; optional. Liveness for quiesced
 * groups: raft_unquiesce() the groups led by a node whose link went down. */
typedef void (*peer_link_fn)(void *arg, uint64_t node, bool up);

struct peer_config {
	uint64_t cluster_id;          /* != 0 */
	uint64_t node_id;             /* != 0 */
	const char *listen_addr;      /* numeric; NULL = 127.0.0.1 */
	uint16_t listen_port;         /* 0 = any (see peer_port) */
	uint32_t max_frame;           /* RAFT payload accepted; 0 = codec default */
	uint32_t queue_frames;        /* per node; 0 = default */
	uint64_t queue_bytes;         /* per node; 0 = default */
	uint32_t read_deadline_ms;    /* 0 = default */
	uint32_t ping_interval_ms;    /* 0 = default; must be < read deadline */
	uint32_t handshake_timeout_ms;/* 0 = default */
	uint32_t backoff_min_ms;      /* 0 = default */
	uint32_t backoff_max_ms;      /* 0 = default */
	uint64_t rng_seed;            /* jitter and incarnation */
	/* mutual TLS: all three or none (PEM files) */
	const char *tls_ca;
	const char *tls_cert;
	const char *tls_key;
	peer_recv_fn on_recv;         /* required */
	peer_link_fn on_link;         /* optional */
	peer_app_fn on_app;           /* optional: application frames */
	void *arg;
	/* the clock, in ms (monotonic); NULL = CLOCK_MONOTONIC */
	uint64_t (*now_ms)(void *arg);
	/* node info announced to every peer that set PEER_HELLO_F_INFO in its
	 * HELLO, in an INFO frame right after the handshake (printable ASCII,
	 * at most PEER_INFO_MAX bytes, opaque to the transport: parleyd puts
	 * its client and admin addresses there); NULL or "" = none. Copied.
	 * The transport appends its own key to what goes on the wire (item
	 * 8 above) when it fits PEER_INFO_MAX, and strips it from what it
	 * receives. */
	const char *info;
	/* Raft message flags this node's decoder accepts (raft.h
	 * RAFT_MSGF_*): 0 = all of this build's (RAFT_MSGF_ALL); a test sets
	 * RAFT_MSGF_BASE to act as a node built before the advisory flags
	 * (it then announces nothing, item 8). */
	uint32_t raft_flags;
	/* Peer frame types this node knows and announces (item 9): 0 = all of
	 * this build's (PEER_FRAMES_ALL); a test (parleyd:
	 * PARLEY_TEST_PEER_FRAMES) sets an older set to act as a node built
	 * before some frames. Must hold PEER_FRAMES_BASE. */
	uint32_t frames;
};

/* Validates cfg, binds and listens. -PARLEY_EINVAL with a log line naming
 * the bad field, -PARLEY_EIO for TLS files that do not load, -errno for
 * the socket. */
int peer_new(const struct peer_config *cfg, struct peer **out);
/* Closes every connection (queued frames are dropped) and frees. */
void peer_free(struct peer *p);
/* The bound peer port (useful with listen_port 0). */
uint16_t peer_port(const struct peer *p);
/* An epoll fd that is readable when peer_poll has work (for nesting). */
int peer_fd(const struct peer *p);

/* Names another node: before the first peer_poll, or later from the
 * owner thread (a node added to the cluster at run time; the lower id
 * dials, as for the others). -PARLEY_EINVAL (id 0, own id, bad address),
 * -PARLEY_EEXIST (known, or removed: ids are never reused),
 * -PARLEY_EFULL (PEER_MAX_NODES slots, removed ones included). */
int peer_add(struct peer *p, uint64_t node_id, const char *addr,
	     uint16_t port);
/* Forgets a node for good (removed from the cluster), from the owner
 * thread: its link is closed now (queue dropped, on_link(down) if it was
 * up), never redialled, its HELLOs are refused as UNKNOWN and sends to it
 * fail (-PARLEY_ENOTFOUND). Its slot and counters stay (stats say
 * `removed`). 0 (also when already removed) or -PARLEY_ENOTFOUND. */
int peer_remove(struct peer *p, uint64_t node_id);

/* Runs the transport: waits up to timeout_ms (0 = do not wait) for socket
 * events, handles them (on_recv, on_link), runs the timers (redial, read
 * deadline, ping, handshake timeout) and writes queued frames. Returns the
 * number of RAFT frames delivered, or a negative code for a failure of the
 * poller itself. */
int peer_poll(struct peer *p, int timeout_ms);

/* Queues msgs[0..n) (all from this node to node `to`) per contract item 4.
 * Returns 0 when every message was queued, else the first error
 * (-PARLEY_EFULL, -PARLEY_ECLOSED, -PARLEY_ETOOBIG, -PARLEY_EINVAL); frames
 * that fit are queued either way. Bytes go out at the next peer_flush /
 * peer_poll. */
int peer_send(struct peer *p, uint64_t to, const struct raft_msg *msgs,
	      uint32_t n);
/* Queues one application frame (type PEER_FRAME_FWD_REQ .. _LAST,
 * payload copied) for node `to`, behind what is queued; never dropped
 * for a heartbeat. 0, -PARLEY_ECLOSED (link not up, or its frame set not
 * known yet), -PARLEY_EVERSION (a type the peer or this node does not
 * know, item 9; counted unsupported), -PARLEY_EFULL
 * (queue full, counted refused_full), -PARLEY_ETOOBIG (over the peer's
 * max_frame), -PARLEY_EINVAL / -PARLEY_ENOTFOUND (unknown / removed
 * node, bad type), -PARLEY_ENOMEM. */
int peer_send_app(struct peer *p, uint64_t to, uint8_t type,
		  const uint8_t *pl, uint32_t n);
/* Whether an application frame of `type` may go to `node` now: its
 * link is up, its frame set is known (item 9) and both sides know the
 * type. Any thread. */
bool peer_can_send(struct peer *p, uint64_t node, uint8_t type);
/* The frame set this node announces (peer_config.frames resolved). */
uint32_t peer_frames(const struct peer *p);
/* A Raft ready's messages (any destinations): groups them by destination
 * (one coalesced batch per node) and peer_send()s each; returns 0 or the
 * first error. */
int peer_send_all(struct peer *p, const struct raft_msg *msgs, uint32_t n);
/* Writes what the queues hold as far as the sockets take it, now. */
void peer_flush(struct peer *p);
/* Closes the link to `node` now (operator or test action); a dialer
 * redials after the backoff. -PARLEY_ENOTFOUND for an unknown node. */
int peer_disconnect(struct peer *p, uint64_t node);

/* ---- metrics ----------------------------------------------------------- */

enum peer_link_state {
	PEER_LINK_DOWN = 0,       /* no connection (waiting for backoff / dialer) */
	PEER_LINK_CONNECTING = 1, /* TCP connect in progress */
	PEER_LINK_HANDSHAKE = 2,  /* TLS and/or HELLO in progress */
	PEER_LINK_UP = 3,
};
const char *peer_link_state_name(enum peer_link_state s);

struct peer_link_stats {
	uint64_t node;
	bool removed;                   /* peer_remove'd: gone for good */
	enum peer_link_state state;
	uint64_t bytes_in, bytes_out;   /* on the wire incl. headers (before TLS) */
	uint64_t frames_in, frames_out; /* RAFT frames */
	uint64_t msgs_in, msgs_out;     /* Raft messages in those frames */
	uint64_t connects;              /* handshakes that succeeded */
	uint64_t reconnects;            /* connects after the first */
	uint64_t connect_failures;      /* dial, TLS or HELLO failures */
	uint64_t refused;               /* REJECTs sent to or received from it */
	uint64_t dead;                  /* read deadlines hit */
	uint64_t drops_hb;              /* heartbeat frames dropped (item 4a/b) */
	uint64_t drops_down;            /* messages dropped: link not up */
	uint64_t refused_full;          /* frames refused: queue full */
	uint64_t too_big;               /* messages over max_frame */
	uint64_t queue_frames, queue_bytes; /* queued now */
	char last_error[PEER_ERROR_MAX];
	char info[PEER_INFO_MAX + 1]; /* the peer's last INFO ("" = none yet);
				       * kept after the link goes down; the
				       * transport's own key left out */
	uint32_t raft_flags;          /* Raft message flags the peer decodes
				       * (item 8; RAFT_MSGF_BASE until its
				       * INFO says more) */
	uint64_t flags_cleared;       /* messages sent with advisory flags
				       * cleared for it (item 8) */
	uint32_t frames;              /* frame types the peer knows (item 9;
				       * 0 until its first frame after the
				       * handshake, then kept after it
				       * goes down) */
	bool frames_announced;        /* it said so (else LEGACY assumed) */
	uint64_t unsupported;         /* app frames refused: the peer (or
				       * this node) does not know the type */
};

/* Node-wide counters for connections that never got a link. */
struct peer_stats_global {
	uint64_t accepted;            /* inbound TCP connections */
	uint64_t inbound_refused;     /* HELLOs refused (any reason) */
	uint64_t inbound_failed;      /* TLS failures, timeouts, bad frames, pending full */
};

/* Fills out[0..cap) with the links' stats in peer_add order; returns the
 * number of links. Any thread. */
int peer_stats(struct peer *p, struct peer_link_stats *out, uint32_t cap,
	       struct peer_stats_global *g);
/* One link's stats; -PARLEY_ENOTFOUND. Any thread. */
int peer_link_stats(struct peer *p, uint64_t node, struct peer_link_stats *out);
/* Prometheus text (parley_peer_* series, label node="<id>") into buf,
 * NUL-terminated; returns the length, or the length it needs when cap is
 * too small (as admin_metrics_text). Any thread. */
size_t peer_metrics_text(struct peer *p, char *buf, size_t cap);

#endif /* PARLEYD_PEER_H */
