/*
 * tail_relay.h — inbox tails served across nodes (private to server/;
 * docs/CLUSTER.md §3.3, "Inbox tails across nodes").
 *
 * With a replication factor below the node count a client's node (the
 * gateway) may hold no replica of the partition of its user's inbox
 * u/<user>. Its SYNC then runs on a node that does (the holder: the
 * partition's leader as the leader table names it, route.h) on a *tail
 * virtual connection* (conn.c): the same SYNC, subscription, event
 * window, pacing, device cursor and delivered receipts as a local
 * device's, whose frames go back over the peer link and which the
 * gateway writes to the client. Two roles, both in every clustered node:
 *
 *   gateway  a client connection (loop thread) opens a tail
 *            (tail_relay_open: a fresh id, TAIL_REQ OPEN with the
 *            client's SYNC frame), passes the device's EVENT_ACKs on
 *            (tail_relay_ack) and closes it (tail_relay_close); the
 *            holder's frames come back (peer thread) as LM_TAIL messages
 *            posted to the connection. The connection keeps the delivery
 *            position (struct tail_gw, pure, below): it writes each inbox
 *            EVENT once, in inbox order, and after the tail broke (the
 *            link went down, the holder ended it or drained) opens a new
 *            one, to the partition's leader then, from the device's last
 *            acknowledged seq + 1, dropping what it already wrote.
 *   holder   TAIL_REQ OPEN (peer thread) becomes an LM_TAIL_OPEN on a
 *            loop (io.serve), which runs the SYNC on a tail virtual
 *            connection bound to (node, id) (tail_relay_served_bind);
 *            its frames leave as TAIL_DATA (tail_relay_served_data);
 *            ACK and CLOSE are posted to it (LM_TAIL_ACK, LM_TAIL_CLOSE);
 *            when it closes, TAIL_DATA END tells the gateway
 *            (tail_relay_served_end).
 *
 * Invariants
 *   1. Nothing skipped or doubled: a device gets inbox EVENT s only after
 *      s - 1 (tail_gw_event), each once; a re-subscription starts at the
 *      device's acknowledged seq + 1, so every EVENT it might not hold is
 *      sent again and those it was already given are dropped on the
 *      gateway. The holder's SYNC start is linearizable (chat_sync's
 *      ReadIndex reads, docs/CLUSTER.md §3.5), as on one node.
 *   2. Bounded: at most TAIL_MAX_PER_NODE tails served per gateway node
 *      (beyond: END FULL at once; the device gets ERROR FULL,
 *      retryable); a served tail holds what one device's tail holds on
 *      one node (event_window unacknowledged EVENTs, a bounded pending
 *      FIFO). The holder sends only within the event window the device's
 *      acknowledgements open, so a slow device stops its tail, and a
 *      device that stays stuck is cut off by the holder's slow-consumer
 *      rule (GOAWAY SLOW_CONSUMER, passed on to the device, whose
 *      connection the gateway then closes: the answer a slow device gets
 *      on one node). A frame the peer link refuses (its queue full) ends
 *      the served tail; the gateway re-subscribes.
 *   3. Early EVENTs are not offered across nodes (the tail virtual
 *      connection never negotiates PARLEY_FEAT_EARLY); large groups' live
 *      EVENTs reach the holder's tail connection (live.h) and pass
 *      through.
 *   4. The holder trusts the user and device the OPEN names (the peer link
 *      is authenticated, as for forwarding, proxy.h invariant 3).
 *   5. Remote reads. A node serving a tail (its own device's or a
 *      gateway's) may hold the inbox but not the partition of a
 *      conversation its pointers name. A pointer without the message
 *      (version 1, written by a fan-out recovery, chat.h) is then resolved
 *      by the leader of the conversation's partition (tail_relay_resolve:
 *      READ, answered READ_RES with the EVENT chat_event_resolve made
 *      there), asked again of the leader as then known when the link goes
 *      down, the answer is a placeholder or none comes within
 *      TAIL_READ_TIMEOUT_MS, for up to TAIL_READ_GIVEUP_MS; only then the
 *      device gets the placeholder a cut-off node gives (chat.h). At most
 *      TAIL_MAX_READS in flight per node (beyond: the caller retries at
 *      its tick, as for a full engine queue).
 *   6. Remote checks ride on the same reads. A SEND's leader that holds
 *      no replica of its conversation's open record's partition (o/<conv>,
 *      chat.h chat_set_remote_check) asks that partition's leader whether
 *      the conversation was opened (tail_relay_check: a READ of kind
 *      TAIL_READ_KIND_OPEN, answered READ_RES FOUND / NONE after a
 *      linearizable read there, chat_conv_opened), asked again like a
 *      pointer's read (also while no leader is known), for up to
 *      TAIL_CHECK_GIVEUP_MS, then -PARLEY_EAGAIN. A node of the build
 *      before checks answers such a READ with a placeholder EVENT: the
 *      asker then checks locally, as before (-PARLEY_EVERSION).
 *   7. Generic remote reads (docs/CLUSTER.md §3.3, "Reads of partitions
 *      not held"). A request that reads several partitions (CONV_LIST's
 *      per-conversation reads, SYNC's device cursor, READ_MARKER's
 *      re-read of the position) runs where its primary partition is
 *      held; a secondary read of a partition this node holds no replica
 *      of (route_read_any, route.h) is asked of that partition's leader
 *      (tail_relay_xread: XREAD with the pe_read_req, answered XREAD_RES
 *      with the pe_read_result after route_read there, linearizable when
 *      asked). The answer carries at most TAIL_XREAD_MAX_BYTES of
 *      entries (always the first one: an entry's payload is at most
 *      PE_MAX_PAYLOAD); entries beyond are left out and `end` is false,
 *      as a read stopped by its limit. The asker copies the entries into
 *      memory the result owns and calls the read's pe_read_cb on the peer
 *      thread (or, given up, from the tick: -PARLEY_EAGAIN). Asked again
 *      like a check: no leader known, the link down, no answer within
 *      TAIL_READ_TIMEOUT_MS, or the holder answering NOTLEADER / AGAIN
 *      (it does not hold it any more, an election); given up after
 *      TAIL_XREAD_GIVEUP_MS. XREAD has a frame type of its own
 *      (TAIL_FRAME_XREAD), so only a node that announced it is asked
 *      (frame sets, docs/CLUSTER.md §1.2); toward another the read fails
 *      -PARLEY_EVERSION and route_read_any refuses NOTLEADER as before.
 *      Bounded like the rest: TAIL_MAX_READS per node, four times that in
 *      all (reads, checks and XREADs), beyond: -PARLEY_EFULL.
 *
 * Wire (peer frame payloads, little-endian; TAIL_REQ gateway -> holder,
 * TAIL_DATA holder -> gateway):
 *   header   u8 op | u8 reason | u16 0 | u32 0 | u64 tail_id   (16 bytes)
 *   OPEN     (TAIL_REQ)  header | u8 user_len | u8 device_len | u16 0 |
 *                        user | device | the SYNC frame (uncompressed)
 *   ACK      (TAIL_REQ)  header | u64 up_to_inbox_seq
 *   CLOSE    (TAIL_REQ)  header
 *   DATA     (TAIL_DATA) header | whole client frames, back to back
 *   END      (TAIL_DATA) header, reason: TAIL_END_*
 *   READ     (TAIL_REQ)  header (id: the read's) | u64 inbox_seq |
 *                        u64 conv_seq | u16 kind | u16 conv_len | conv
 *   READ_RES (TAIL_DATA) header | one EVENT frame, or nothing (failed);
 *                        a check's (kind TAIL_READ_KIND_OPEN): reason
 *                        TAIL_RES_FOUND / TAIL_RES_NONE and nothing, or
 *                        TAIL_RES_FAILED and nothing
 *   XREAD    (TAIL_XREAD) header (id: the read's) | u64 from |
 *                        u32 limit | u8 dir | u8 flags (bit 0:
 *                        linearizable) | u16 key_len | key
 *   XREAD_RES (TAIL_XREAD) header, reason TAIL_XRES_* | i32 err |
 *                        u32 count | u64 first_seq | u64 last_seq |
 *                        u8 end | u8 0 | u16 0 | count x (u64 seq |
 *                        u64 ts_ms | u16 type | u16 flags |
 *                        producer[16] | u32 len | payload)
 *
 * Threads: every call from any thread (one mutex); messages are posted to
 * loops, io callbacks run without the mutex held.
 */
#ifndef PARLEYD_TAIL_RELAY_H
#define PARLEYD_TAIL_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "lmsg.h"

/* the peer frame types (peer.h PEER_FRAME_TAIL_REQ / _DATA; proxy_node.c
 * checks they agree) */
#define TAIL_FRAME_REQ 14u
#define TAIL_FRAME_DATA 15u
#define TAIL_FRAME_XREAD 16u /* peer.h PEER_FRAME_XREAD */
#define TAIL_HDR 16u
#define TAIL_OPEN_HDR_MAX (TAIL_HDR + 4u + 255u + 255u) /* >= READ's */
#define TAIL_MAX_PER_NODE 1024u     /* tails served per gateway node */
#define TAIL_RESUB_MIN_MS 20u       /* first re-subscription delay */
#define TAIL_RESUB_MAX_MS 1000u     /* backoff cap between attempts */
#define TAIL_RESUB_GIVEUP_MS 30000u /* then the device is told to reconnect */
#define TAIL_BUCKETS 1024u
#define TAIL_MAX_READS 4096u        /* remote reads in flight per node */
#define TAIL_READ_TIMEOUT_MS 2000u  /* one attempt */
#define TAIL_READ_GIVEUP_MS 15000u  /* then the placeholder */
#define TAIL_CHECK_GIVEUP_MS 5000u  /* a check: then -PARLEY_EAGAIN */
/* READ kind of a check (invariant 6): no event kind is this large */
#define TAIL_READ_KIND_OPEN 0xffffu
/* XREAD (invariant 7) */
#define TAIL_XREAD_HDR 16u      /* from, limit, dir, flags, key_len */
#define TAIL_XRES_HDR 28u       /* err .. end's padding */
#define TAIL_XRES_ENT 40u       /* an entry before its payload */
#define TAIL_XREAD_MAX_BYTES (1536u * 1024u) /* entries of one answer */
#define TAIL_XREAD_GIVEUP_MS 5000u /* then -PARLEY_EAGAIN */

enum tail_op {
	TAIL_OP_OPEN = 1,
	TAIL_OP_ACK = 2,
	TAIL_OP_CLOSE = 3,
	TAIL_OP_DATA = 4,
	TAIL_OP_END = 5,
	TAIL_OP_READ = 6,
	TAIL_OP_READ_RES = 7,
	TAIL_OP_XREAD = 8,     /* TAIL_FRAME_XREAD, asker -> holder */
	TAIL_OP_XREAD_RES = 9, /* TAIL_FRAME_XREAD, holder -> asker */
};

/* XREAD_RES reason */
enum tail_xres_reason {
	TAIL_XRES_DONE = 0,  /* the read's result (err 0 or final) */
	TAIL_XRES_RETRY = 1, /* not read there (not held, an election, a
				full queue): ask again */
};

/* READ_RES reason (a check's answer; a pointer's is TAIL_RES_FAILED) */
enum tail_res_reason {
	TAIL_RES_FAILED = 0, /* no answer from there: ask again */
	TAIL_RES_FOUND = 1,  /* the conversation was opened */
	TAIL_RES_NONE = 2,   /* no open record */
};

enum tail_end_reason {
	TAIL_END_CLOSED = 0,  /* the served tail closed (drain, link, error) */
	TAIL_END_FULL = 1,    /* TAIL_MAX_PER_NODE tails served for that node */
	TAIL_END_REFUSED = 2, /* could not be started (stopping, memory) */
};

/* A decoded TAIL_REQ / TAIL_DATA payload (borrowed from it). */
struct tail_msg {
	uint8_t op, reason;
	uint64_t id;
	uint64_t seq;               /* ACK; READ: inbox_seq */
	uint64_t conv_seq;          /* READ */
	uint16_t kind;              /* READ */
	const char *conv;           /* READ */
	uint16_t clen;
	const char *user, *device;  /* OPEN */
	uint8_t ulen, dlen;
	const uint8_t *body;        /* OPEN: the SYNC frame; DATA: frames;
				       READ_RES: an EVENT frame or nothing;
				       XREAD_RES: the entries (count) */
	uint32_t blen;
	/* XREAD: the request (seq: from); XREAD_RES: the result's fields */
	const uint8_t *key;
	uint16_t klen;
	uint8_t dir;
	bool lin, end;
	uint32_t limit, count;
	int32_t err;
	uint64_t first_seq, last_seq;
};

/* ---- codec (pure) ---- */

/* The bytes before body[] of m (op, reason, id, and OPEN's user/device,
 * ACK's seq or READ's pointer) into out; its length. */
uint32_t tail_hdr_encode(uint8_t out[TAIL_OPEN_HDR_MAX],
			 const struct tail_msg *m);
/* A payload of peer frame `type`: 0 or -PARLEY_EPROTO (short, an op the
 * frame type does not carry, bad lengths, OPEN's body not one whole SYNC
 * frame, DATA's not whole frames). */
int tail_msg_decode(uint8_t type, const uint8_t *p, uint32_t n,
		    struct tail_msg *m);
/* XREAD_RES of read `id` answering r, into out[0..cap): its length, or 0
 * when cap is too small for the header. Entries are taken while their
 * bytes stay within TAIL_XREAD_MAX_BYTES and cap (the first whatever its
 * size, if cap holds it); a result cut short says end false. */
uint32_t tail_xres_encode(uint8_t *out, uint32_t cap, uint64_t id,
			  uint8_t reason, const struct pe_read_result *r);
/* The bytes tail_xres_encode needs for r (cut at TAIL_XREAD_MAX_BYTES). */
uint32_t tail_xres_size(const struct pe_read_result *r);
/* The entries of a decoded XREAD_RES (m->count of them, checked by
 * tail_msg_decode) into out[0..m->count), payloads borrowed from m. */
void tail_xres_entries(const struct tail_msg *m, struct pe_entry *out);

/* ---- the gateway's delivery position (pure; conn.c) ---- */

/*
 * Per remote tail on the gateway:
 *
 *     OPEN(from) --SYNC_OK(start)--> SYNCED --EVENT s--> write if s == next
 *        ^                                               drop if s < next
 *        |                                               gap if s > next
 *        +--- link down / END / GOAWAY DRAIN / gap --- re-subscribe
 *                         from acked + 1 (tail_gw_resub)
 *
 * next: the next inbox seq the device gets; acked: the device's last
 * EVENT_ACK; h_next: the next seq the current subscription sends;
 * ack_sent: the last ack passed to the current subscription (its window
 * opens by the acks of EVENTs it sent, never beyond).
 */
struct tail_gw {
	uint64_t next, acked, h_next, ack_sent;
	bool synced; /* SYNC_OK went to the device */
};
enum tail_gw_verdict { TAIL_GW_WRITE = 0, TAIL_GW_DROP, TAIL_GW_GAP };

/* A subscription answered SYNC_OK with start: the first one sets the
 * device's position; a later one (a re-subscription) only its own, and
 * skips the device ahead when retention trimmed past it. */
void tail_gw_synced(struct tail_gw *g, uint64_t start);
/* An inbox EVENT seq (> 0) of the current subscription. */
enum tail_gw_verdict tail_gw_event(struct tail_gw *g, uint64_t seq);
/* The device acknowledged up to `up` (acked < up < next, checked by the
 * caller): the ack to pass to the holder, 0 = none now. */
uint64_t tail_gw_ack(struct tail_gw *g, uint64_t up);
/* The ack still owed to the current subscription (0 = none): after more
 * of its EVENTs arrived. */
uint64_t tail_gw_ack_due(struct tail_gw *g);
/* A new subscription: returns its from_inbox_seq (acked + 1). */
uint64_t tail_gw_resub(struct tail_gw *g);

/* ---- the relay ---- */

struct tail_relay;

struct tail_io {
	/* queue a peer frame of `type` (TAIL_FRAME_*) whose payload is
	 * a ++ b for node `to`: 0 or < 0 */
	int (*send)(void *arg, uint64_t to, uint8_t type, const void *a,
		    size_t alen, const void *b, size_t blen);
	/* the link to node is up and node knows TAIL_REQ / TAIL_DATA */
	bool (*link_up)(void *arg, uint64_t node);
	/* the link to node is up but node is an older build that knows no
	 * tail frames (peer.h frame sets); NULL = never */
	bool (*old_build)(void *arg, uint64_t node);
	/* remote reads: the node leading conv's partition when this node
	 * holds no replica of it (route.h), else 0 */
	uint64_t (*conv_node)(void *arg, const char *conv, uint16_t clen);
	/* answering a READ: resolve p here (chat_event_resolve) and hand the
	 * EVENT to tail_relay_read_answer(from, id, ...): 0, or < 0 (nothing
	 * will be answered: the relay answers "failed") */
	int (*resolve)(void *arg, uint64_t from, uint64_t id,
		       const struct chat_inbox_ptr *p);
	/* checks (invariant 6): the node leading the partition of conv's
	 * open record when this node holds no replica of it, else 0 */
	uint64_t (*open_node)(void *arg, const char *conv, uint16_t clen);
	/* answering a check: read o/<conv> here (chat_conv_opened) and hand
	 * the outcome to tail_relay_check_answer(from, id, ...): 0, or < 0
	 * (the relay answers "failed"). NULL: answered "failed" */
	int (*check)(void *arg, uint64_t from, uint64_t id, const char *conv,
		     uint16_t clen);
	/* holder: post an LM_TAIL_OPEN (payload p[0..n), a whole TAIL_REQ
	 * OPEN, borrowed) to the loop of m's user: 0 or < 0 */
	int (*serve)(void *arg, uint64_t from, const struct tail_msg *m,
		     const uint8_t *p, uint32_t n);
	/* XREADs (invariant 7): the node leading the partition of key when
	 * this node holds no replica of it, else 0. NULL: never */
	uint64_t (*key_node)(void *arg, const void *key, uint16_t klen);
	/* the link to node: 1 up and node knows TAIL_FRAME_XREAD, 0 down
	 * (or not yet settled), -PARLEY_EVERSION up but node is a build
	 * without it. NULL: never up */
	int (*xread_link)(void *arg, uint64_t node);
	/* answering an XREAD: route_read q here and hand the result to
	 * tail_relay_xread_answer(from, id, ...): 0, or < 0 (the relay
	 * answers RETRY). NULL: answered RETRY */
	int (*xread)(void *arg, uint64_t from, uint64_t id,
		     const struct pe_read_req *q);
	/* the remote reads' clock in ms (timeouts, give-ups); NULL: the
	 * monotonic clock (a test injects its own) */
	uint64_t (*now_ms)(void *arg);
	void *arg;
};

struct tail_stats {
	uint64_t gw_open;        /* gateway: remote tails open now */
	uint64_t gw_opened;      /* gateway: OPENs sent (first and again) */
	uint64_t gw_resubs;      /* gateway: re-subscriptions */
	uint64_t gw_bytes_in;    /* gateway: TAIL_DATA bytes received */
	uint64_t gw_dups;        /* gateway: EVENTs dropped, already written */
	uint64_t served_open;    /* holder: tails served now */
	uint64_t served_total;   /* holder: tails started */
	uint64_t served_full;    /* holder: OPENs refused TAIL_MAX_PER_NODE */
	uint64_t served_bytes;   /* holder: TAIL_DATA bytes sent */
	uint64_t served_unsent;  /* holder: tails ended by a refused frame */
	uint64_t bad_frames;     /* undecodable TAIL_REQ / TAIL_DATA */
	uint64_t reads;          /* remote reads started */
	uint64_t read_retries;   /* ... asked again */
	uint64_t read_giveups;   /* ... ended with a placeholder */
	uint64_t reads_served;   /* READs answered here for other nodes */
	uint64_t checks;         /* remote checks started */
	uint64_t check_giveups;  /* ... ended -PARLEY_EAGAIN */
	uint64_t checks_served;  /* checks answered here for other nodes */
	uint64_t xreads;         /* generic remote reads started */
	uint64_t xread_giveups;  /* ... ended -PARLEY_EAGAIN */
	uint64_t xreads_served;  /* XREADs answered here for other nodes */
	uint64_t xread_cut;      /* ... answers cut at TAIL_XREAD_MAX_BYTES */
};

int tail_relay_new(const struct tail_io *io, struct tail_relay **out);
void tail_relay_free(struct tail_relay *tr);

/* ---- gateway ---- */

/* Opens a tail of user/device at `node` for the connection `to`, the
 * SYNC frame sync[0..n) (whole, uncompressed): *id is its id. 0, or
 * -PARLEY_ENOTLEADER (no link up to node: nothing sent), -PARLEY_EAGAIN
 * (the frame was refused), -PARLEY_ENOMEM. */
int tail_relay_open(struct tail_relay *tr, uint64_t node,
		    const struct conn_ref *to, const char *user, uint8_t ulen,
		    const char *device, uint8_t dlen, const uint8_t *sync,
		    uint32_t n, uint64_t *id);
/* Passes an EVENT_ACK on (best effort: 0 or < 0, the caller retries). */
int tail_relay_ack(struct tail_relay *tr, uint64_t id, uint64_t up);
/* Forgets tail id and tells its holder (best effort). */
void tail_relay_close(struct tail_relay *tr, uint64_t id);
/* Counts a re-subscription / an EVENT dropped as already written. */
void tail_relay_count(struct tail_relay *tr, bool resub, bool dup);

/* ---- holder ---- */

/* The tail virtual connection `to` runs tail (node, id): false when that
 * tail was closed meanwhile (the connection closes at once). */
bool tail_relay_served_bind(struct tail_relay *tr, uint64_t node,
			    uint64_t id, const struct conn_ref *to);
/* Frames p[0..n) of tail (node, id) to its gateway: 0, or < 0 when the
 * link refused them (the connection must end: its stream has a hole). */
int tail_relay_served_data(struct tail_relay *tr, uint64_t node, uint64_t id,
			   const uint8_t *p, size_t n);
/* Tail (node, id) is over here: END goes to the gateway unless the
 * gateway closed it (or its link went down). */
void tail_relay_served_end(struct tail_relay *tr, uint64_t node, uint64_t id);

/* ---- remote reads (invariant 5) ---- */

/* The EVENT of pointer p, read at the leader of its conversation's
 * partition: cb(arg, frame, n) runs exactly once, on the peer thread (or
 * a loop, before this returns never), with one EVENT frame (request id
 * 0), or frame NULL after TAIL_READ_GIVEUP_MS (the caller writes the
 * placeholder). 0, or -PARLEY_ENOTLEADER (no leader known / link down:
 * retry later), -PARLEY_EVERSION (the leader is an older build without
 * tail frames: resolve here), -PARLEY_EFULL (TAIL_MAX_READS),
 * -PARLEY_ENOMEM. */
typedef void (*tail_read_cb)(void *arg, const uint8_t *frame, uint32_t n);
int tail_relay_resolve(struct tail_relay *tr, const struct chat_inbox_ptr *p,
		       tail_read_cb cb, void *arg);
/* The answering side's EVENT frame (NULL: failed) for READ id of `from`. */
void tail_relay_read_answer(struct tail_relay *tr, uint64_t from, uint64_t id,
			    const uint8_t *frame, uint32_t n);

/* Whether conversation conv was opened, asked of the leader of its open
 * record's partition (invariant 6): cb(arg, rc) runs exactly once, on
 * the peer thread (never before this returns), rc 1 (opened), 0 (no open
 * record), -PARLEY_EVERSION (that leader is a build before checks: check
 * here), -PARLEY_EAGAIN (no answer within TAIL_CHECK_GIVEUP_MS). 0, or
 * -PARLEY_EVERSION (the leader is an older build without tail frames),
 * -PARLEY_EFULL (TAIL_MAX_READS), -PARLEY_ENOMEM; no leader known or no
 * link is not an error: the check waits for one. The shape of
 * chat_check_fn's call (chat.h). */
typedef void (*tail_check_cb)(void *arg, int rc);
int tail_relay_check(struct tail_relay *tr, const char *conv, uint16_t clen,
		     tail_check_cb cb, void *arg);
/* The answering side's outcome for check id of `from`: 1 opened, 0 no
 * open record, < 0 failed (the asker asks again). */
void tail_relay_check_answer(struct tail_relay *tr, uint64_t from,
			     uint64_t id, int found);

/* A read of a partition this node holds no replica of, asked of that
 * partition's leader (invariant 7): cb(arg, r) runs exactly once, on
 * the peer thread (never before this returns), with the holder's result
 * (its entries valid during the call, owned by the relay), or r->err
 * -PARLEY_EAGAIN after TAIL_XREAD_GIVEUP_MS. 0, or -PARLEY_EVERSION
 * (that leader is up but a build without XREAD: nothing asked),
 * -PARLEY_EFULL, -PARLEY_ENOMEM, -PARLEY_EINVAL (no key, key over
 * PE_MAX_KEY); no leader known or no link is not an error: the read
 * waits for one. */
int tail_relay_xread(struct tail_relay *tr, const struct pe_read_req *q,
		     pe_read_cb cb, void *arg);
/* The answering side's result for XREAD id of `from` (any thread; r
 * NULL or err -PARLEY_ENOTLEADER / -PARLEY_EAGAIN / -PARLEY_EFULL:
 * RETRY). */
void tail_relay_xread_answer(struct tail_relay *tr, uint64_t from,
			     uint64_t id, const struct pe_read_result *r);

/* ---- both ---- */

/* A TAIL_REQ / TAIL_DATA / TAIL_XREAD payload from node `from` (peer
 * thread). */
void tail_relay_on_frame(struct tail_relay *tr, uint64_t from, uint8_t type,
			 const uint8_t *p, uint32_t n);
/* The link to `node` went down: the gateway's tails there break (an
 * LM_TAIL end to each connection: it re-subscribes), the tails served
 * for it close. */
void tail_relay_link_down(struct tail_relay *tr, uint64_t node);
/* A frame the relay queued could not be handed to the link to `to`
 * (peer thread): an OPEN or ACK that did not leave breaks that tail (the
 * gateway re-subscribes), a DATA ends the served tail (END follows,
 * retried), a READ is asked again; the rest times out on its own. */
void tail_relay_on_unsent(struct tail_relay *tr, uint64_t to, uint8_t type,
			  const uint8_t *p, uint32_t n);
/* Retries END frames the link refused; asks remote reads again (peer
 * thread; callbacks of reads given up run from here). */
void tail_relay_tick(struct tail_relay *tr);

void tail_relay_stats(struct tail_relay *tr, struct tail_stats *st);
/* Prometheus text (parley_tail_*): the length it needed. Any thread. */
size_t tail_relay_metrics_text(struct tail_relay *tr, char *buf, size_t cap);

#endif /* PARLEYD_TAIL_RELAY_H */
