/*
 * chat.h — parleyd's chat model on engine streams (private to server/).
 *
 * Streams (keys are byte strings, see engine/parley_engine.h):
 *
 *   c/<conv>          a conversation: one entry per message (CHAT_ENT_MSG),
 *                     seq = the message's conversation seq (dense 1, 2, ...).
 *   u/<user>          a user's inbox: one small pointer per event
 *                     (CHAT_ENT_PTR: kind, conv, conv_seq). inbox_seq = seq.
 *   l/<user>          a user's conversation list: one CHAT_ENT_LIST entry per
 *                     conversation the user is in (idempotent per conv).
 *   o/<conv>          the conversation was opened (CONV_OPEN): one
 *                     CHAT_ENT_OPEN entry (idempotent). SEND requires it
 *                     (or messages in c/<conv>, for conversations stored
 *                     before CONV_OPEN was required); otherwise NOTFOUND.
 *   k/<user>:<device> a device's delivery cursor (CHAT_ENT_CURSOR, u64): the
 *                     last inbox_seq the device acknowledged. Written lazily.
 *   s/fanout          fan-out checkpoints (CHAT_ENT_WATERMARK): one cursor
 *                     per partition, see below.
 *
 * Send path and fan-out (durable before ack; no skip, no double):
 *
 *   chat_send -> register a fan-out job on the conversation's partition
 *             -> append c/<conv> with producer = H(sender, client_msg_id)
 *             -> durable (engine callback) -> the caller's callback (ACK)
 *                                          -> the job joins the fan-out queue
 *   fan-out thread: for each member m: append u/<m> a pointer (conv, seq)
 *        with producer = H(conv, seq)   (idempotent: a replay never doubles)
 *        and for seq 1 also l/<m> with producer = H(conv) (list entry).
 *
 * Recoverable fan-out: a durable cursor per partition. cursor[p] is a
 * chat-clock value such that every message of a conversation in partition
 * p stamped ts < cursor[p] has its whole fan-out durable. A job is
 * registered (with start = the clock then) before its conversation append
 * is even issued, and the engine stamps the entry later, so ts >= start;
 * cursor[p] = the smallest start still outstanding in p, or the clock + 1
 * when none is (the clock is raised to that value first, so nothing can
 * be stamped below it afterwards). No margin, no guess.
 *
 * Checkpoints: one record with every partition's cursor, appended to
 * s/fanout at most every CHAT_CKPT_INTERVAL_MS (sooner after
 * CHAT_CKPT_MSGS new messages), asynchronously, one at a time, and only if
 * something was registered or completed since the previous one (an idle
 * server writes nothing). A graceful stop waits for every fan-out and then
 * writes a last checkpoint with nothing outstanding: a clean restart
 * re-fans out nothing. After kill -9 the restart re-fans out at most what
 * the gauge `fanout_uncheckpointed` counted at the moment of the kill (the
 * messages outstanding at the last durable checkpoint plus those
 * registered since).
 *
 * Recovery (chat_open): read the last checkpoint; list each partition's
 * streams (metadata only) and, for every conversation with messages
 * stamped >= its partition's cursor, find the first such seq (backward
 * reads: cost = what is past the cursor) and queue ONE job "seqs
 * first..last". Nothing is fanned out inside chat_open: the jobs run on
 * the fan-out thread, ahead of every live message (FIFO), while clients
 * are already served. The clock's floor is raised to the newest stored
 * timestamp and to the largest cursor.
 *
 * Ordering: an inbox receives pointers of one conversation in seq order:
 * engine append callbacks of one stream run in seq order on its shard,
 * the send callback queues the job FIFO, and one fan-out thread issues the
 * inbox appends in queue order (an inbox lives on one shard, whose request
 * queue is FIFO). A full engine queue (-PARLEY_EFULL) makes the fan-out
 * thread wait and retry the same append: order is kept.
 *
 * Threads: the pure helpers (keys, records, producers, planner) are
 * reentrant. chat_send() may be called from any thread but an engine
 * callback's: it takes a mutex and never blocks on I/O.
 * chat_open()/chat_close() from the controlling thread.
 */
#ifndef PARLEYD_CHAT_H
#define PARLEYD_CHAT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley_common.h"
#include "parley_engine.h"
#include "parley_proto.h"

/* Engine entry types of the streams above. */
enum chat_ent_type {
	CHAT_ENT_MSG = 1,
	CHAT_ENT_PTR = 2,
	CHAT_ENT_LIST = 3,
	CHAT_ENT_CURSOR = 4,
	CHAT_ENT_WATERMARK = 5,
	CHAT_ENT_OPEN = 6,
};

#define CHAT_REC_VERSION 1u
#define CHAT_FANOUT_MARGIN_MS 10000u /* version-1 checkpoints only */
#define CHAT_CKPT_INTERVAL_MS 100u   /* fan-out checkpoint at most this often */
#define CHAT_CKPT_MSGS 4096u         /* ... or after this many new messages */
#define CHAT_MAX_PARTITIONS 65536u
#define CHAT_KNOWN_MAX (1u << 20)    /* slots of the known-conversation cache (8 MiB) */
#define CHAT_KEY_CAP 256u            /* PE_MAX_KEY + NUL */
#define CHAT_FANOUT_MAX_ITEMS 4u     /* 1:1: two inboxes + two lists */
#define CHAT_PTR_MAX (1 + 2 + 2 + 250 + 8)

/* Retention of the internal streams that would otherwise grow forever
 * (pass to pe_options.retention): a device cursor k/ is read as its last
 * entry only, s/fanout as its last checkpoint only; a few are kept for
 * inspection. Enforced by engine compaction. */
#define CHAT_CURSOR_KEEP 4u
#define CHAT_CKPT_KEEP 16u
extern const struct pe_retention_rule chat_retention[];
extern const size_t chat_nretention;

/* ---- keys ---------------------------------------------------------------- */

/* Each writes a NUL-terminated key into out[CHAT_KEY_CAP] and returns its
 * length, or -PARLEY_EINVAL when an id is invalid or too long. */
int chat_key_conv(char *out, const char *conv, size_t len);
int chat_key_inbox(char *out, const char *user, size_t len);
int chat_key_list(char *out, const char *user, size_t len);
int chat_key_open(char *out, const char *conv, size_t len);
int chat_key_cursor(char *out, const char *user, size_t ulen,
		    const char *device, size_t dlen);

/* ---- conversations ------------------------------------------------------- */

/* Members of a conversation id. For a 1:1 id "d:<a>:<b>" (a < b, both valid
 * user ids, exactly as parley_proto_dm_conv_id builds it) sets the two
 * member ids (pointing into conv) and returns 2; -PARLEY_ENOTFOUND for any
 * id that is not a well-formed 1:1 id (groups do not exist yet). */
struct chat_member {
	const char *p;
	size_t len;
};
int chat_conv_members(const char *conv, size_t len, struct chat_member out[2]);
/* True iff user is one of the conversation's members. */
bool chat_conv_has_member(const char *conv, size_t len, const char *user,
			  size_t ulen);

/* ---- records --------------------------------------------------------------- */

/* A message as stored in c/<conv>. Fields borrow from the decoded buffer. */
struct chat_msg {
	const char *sender;
	uint16_t sender_len;
	uint8_t client_msg_id[16];
	uint16_t content_type;
	const uint8_t *body;
	uint32_t body_len;
};
/* Returns the encoded length (buf may be NULL to size), -PARLEY_ETOOBIG. */
int chat_msg_encode(uint8_t *buf, size_t cap, const struct chat_msg *m);
/* 0 or -PARLEY_ECORRUPT (bytes we wrote ourselves do not parse). */
int chat_msg_decode(const uint8_t *p, size_t len, struct chat_msg *out);

/* An inbox pointer in u/<user>. Version 1 names the message; version 2
 * ("inline", written by the live fan-out for messages whose record is at
 * most CHAT_INLINE_MAX bytes) also carries the message's record and
 * timestamp, so delivery builds the EVENT without reading c/<conv>. Both
 * versions decode; encode writes version 2 when msg is set. */
#define CHAT_PTR_VERSION_INLINE 2u
#define CHAT_INLINE_MAX 4096u  /* message record bytes carried inline */
#define CHAT_PTR_INLINE_CAP (1 + 2 + 2 + 250 + 8 + 8 + 4 + CHAT_INLINE_MAX)
struct chat_ptr {
	uint16_t kind;  /* PARLEY_EV_* */
	const char *conv;
	uint16_t conv_len;
	uint64_t conv_seq;
	uint64_t ts_ms;       /* version 2 only */
	const uint8_t *msg;   /* version 2: the c/<conv> record; NULL for 1 */
	uint32_t msg_len;
};
int chat_ptr_encode(uint8_t *buf, size_t cap, const struct chat_ptr *p);
int chat_ptr_decode(const uint8_t *p, size_t len, struct chat_ptr *out);

/* A conversation-list entry in l/<user>: just the conversation id. */
int chat_list_encode(uint8_t *buf, size_t cap, const char *conv, size_t len);
int chat_list_decode(const uint8_t *p, size_t len, const char **conv,
		     uint16_t *conv_len);

/* ---- producer ids (idempotency keys) --------------------------------------- */

void chat_producer_send(uint8_t out[16], const char *sender, size_t slen,
			const uint8_t client_msg_id[16]);
void chat_producer_fanout(uint8_t out[16], const char *conv, size_t len,
			  uint64_t seq);
void chat_producer_list(uint8_t out[16], const char *conv, size_t len);
void chat_producer_open(uint8_t out[16], const char *conv, size_t len);

/* ---- fan-out planner (pure) -------------------------------------------------- */

struct chat_fanout_item {
	char key[CHAT_KEY_CAP];
	uint8_t klen;
	uint8_t producer[16];
	uint16_t type;                 /* CHAT_ENT_PTR or CHAT_ENT_LIST */
	uint16_t len;
	uint8_t payload[CHAT_PTR_MAX];
	const uint8_t *ext;            /* non-NULL: the payload is ext[0..ext_len) */
	uint32_t ext_len;              /* (an inline pointer, shared by the items) */
};
struct chat_fanout_plan {
	unsigned n;
	struct chat_fanout_item item[CHAT_FANOUT_MAX_ITEMS];
};
/* The appends that deliver message `seq` of `conv`: one inbox pointer per
 * member (sender included, for their other devices) and, when seq == 1,
 * one list entry per member. Deterministic: the same input always yields
 * the same keys, producers and payloads. 0 or -PARLEY_ENOTFOUND. */
int chat_fanout_plan(const char *conv, size_t len, uint64_t seq,
		     struct chat_fanout_plan *out);
/* The same plan with inline (version 2) inbox pointers carrying the
 * message record `msg` stamped ts_ms: the pointer is encoded once into
 * buf[0..cap) (CHAT_PTR_INLINE_CAP is enough) and every inbox item points
 * at it. Falls back to version 1 pointers when msg_len > CHAT_INLINE_MAX.
 * Deterministic like chat_fanout_plan. 0 or -PARLEY_ENOTFOUND. */
int chat_fanout_plan_inline(const char *conv, size_t len, uint64_t seq,
			    uint64_t ts_ms, const uint8_t *msg,
			    uint32_t msg_len, uint8_t *buf, size_t cap,
			    struct chat_fanout_plan *out);
/* The list entries alone (CONV_OPEN registers the conversation). */
int chat_list_plan(const char *conv, size_t len, struct chat_fanout_plan *out);

/* ---- the running chat service -------------------------------------------------- */

struct chat;

struct chat_stats {
	uint64_t fanout_jobs;      /* messages fanned out (live + recovered) */
	uint64_t fanout_appends;   /* inbox/list appends completed */
	uint64_t fanout_errors;    /* appends that failed (logged) */
	uint64_t fanout_recovered; /* messages re-fanned out after a restart */
	uint64_t fanout_pending;   /* messages whose fan-out is not durable yet */
	uint64_t fanout_uncheckpointed; /* at most this many would be re-fanned
					   out if the process died now */
	uint64_t checkpoints;      /* durable fan-out checkpoints written */
	uint64_t watermark_ms;     /* smallest durable partition cursor */
};

/* The clock to give the engine (pe_options.clock_ms, arg = &chat_clock):
 * wall clock, never going backwards, with a floor raised by recovery. */
struct chat_clock {
	_Atomic uint64_t last;
};
uint64_t chat_clock_ms(void *arg);
/* Raise the floor: later readings are >= floor. Any thread. */
void chat_clock_raise(struct chat_clock *c, uint64_t floor);

/* Reads the durable fan-out cursors and queues the fan-out of every
 * message past them (blocking only for metadata and the backward reads
 * that find where each conversation resumes), then starts the fan-out
 * thread. The engine must be open with clock_ms = chat_clock_ms / clock. */
int chat_open(struct pe_engine *e, struct chat_clock *clock,
	      struct chat **out);

/* SEND: one message from `sender` to `conv`. */
struct chat_send_req {
	const char *conv;
	uint16_t conv_len;
	const char *sender;
	uint16_t sender_len;
	uint8_t client_msg_id[16];
	uint16_t content_type;
	const uint8_t *body;
	uint32_t body_len;
};
struct chat_send_result {
	int err;          /* 0 or the engine's error */
	uint64_t seq, ts_ms;
	bool duplicate;   /* an earlier SEND stored it: seq/ts are its */
};
typedef void (*chat_send_cb)(void *arg, const struct chat_send_result *r);
/* Checks membership, stores the message and, once it is durable, calls
 * cb (on an engine shard thread; it must not block) and queues its
 * fan-out. Returns 0 (cb will run once) or an error and cb will not run:
 * -PARLEY_ENOTFOUND (no such conversation), -PARLEY_EPERM (not a member),
 * -PARLEY_ETOOBIG, -PARLEY_ENOMEM, -PARLEY_EFULL (engine queue full: retry
 * later), -PARLEY_ECLOSED. Any thread. A conversation that was never
 * opened (no o/<conv>, no message) fails with -PARLEY_ENOTFOUND through
 * cb: existence is cached in memory (CHAT_KNOWN_MAX), a miss costs one or
 * two reads before the append. */
int chat_send(struct chat *c, const struct chat_send_req *q, chat_send_cb cb,
	      void *arg);
/* CONV_OPEN: the 1:1 conversation of user and peer. */
struct chat_conv_info {
	int err;
	char conv[CHAT_KEY_CAP];
	uint16_t conv_len;
	bool created;          /* this call put it in the caller's list */
	uint64_t last_seq, last_ts_ms;
	struct chat_member members[2]; /* point into conv */
};
typedef void (*chat_open_cb)(void *arg, const struct chat_conv_info *r);
/* Opens (creating if needed) the conversation: o/<conv> and both users'
 * list entries, durable before cb (engine thread). Returns 0 (cb will
 * run once) or -PARLEY_EINVAL (peer is not a valid user id, or is the
 * caller: a conversation with oneself is not a 1:1 conversation),
 * -PARLEY_ENOMEM. Any thread. */
int chat_conv_open(struct chat *c, const char *user, size_t ulen,
		   const char *peer, size_t plen, chat_open_cb cb, void *arg);

/* Blocking form for tools and tests (not from a callback). */
int chat_send_sync(struct chat *c, const struct chat_send_req *q,
		   struct chat_send_result *out);

/* Delivery stages timed by the service (srv.h lists them all). */
enum chat_stage {
	CHAT_STAGE_FANOUT = 0, /* message durable -> its inbox appends issued */
	CHAT_STAGE_INBOX,      /* issued -> every inbox append durable */
	CHAT_STAGE_COUNT
};
const char *chat_stage_name(enum chat_stage s);
void chat_stage_stats(struct chat *c, struct pe_stage_hist out[CHAT_STAGE_COUNT]);

/* Waits for every queued fan-out to be durable, writes a last checkpoint,
 * stops the thread and frees c. No chat_send may run concurrently or
 * later. The engine must still be open. */
void chat_close(struct chat *c);
void chat_get_stats(struct chat *c, struct chat_stats *out);

/* The engine the service runs on (for the chat_*.c files of the service). */
struct pe_engine *chat_engine(const struct chat *c);

/* 0 when user may read conv; -PARLEY_ENOTFOUND (not a conversation id)
 * or -PARLEY_EPERM (not a member). Pure. */
int chat_conv_check(const char *conv, size_t len, const char *user,
		    size_t ulen);

/* The CONV reply for an opened conversation (pure; m borrows from r). */
void chat_conv_msg(const struct chat_conv_info *r, struct parley_msg *m);

/*
 * ---- reads: history, sync, inbox delivery, device cursors (chat_read.c) ----
 *
 * Every asynchronous call below returns 0 (its callback will run exactly
 * once, on an engine shard thread unless said otherwise; it must not
 * block) or a negative error (the callback will not run). A reply is
 * handed over ready to encode: a struct parley_msg whose strings borrow
 * from the callback's arguments (valid only during the callback).
 */

/* HISTORY: a page of conv's messages older than before_seq (0 = newest),
 * newest first, at most `limit` and at most max_frame bytes encoded.
 * Errors: -PARLEY_ENOTFOUND / -PARLEY_EPERM (chat_conv_check),
 * -PARLEY_ENOMEM, -PARLEY_EFULL (engine queue full). before_seq == 1
 * has nothing older: cb runs before chat_history returns, on the calling
 * thread, with an empty END page. */
typedef void (*chat_history_cb)(void *arg, int err, const struct parley_msg *page);
int chat_history(struct chat *c, const char *user, size_t ulen,
		 const char *conv, size_t clen, uint64_t before_seq,
		 uint16_t limit, uint32_t max_frame, chat_history_cb cb,
		 void *arg);
/* The page builder (pure): fills out->history_page from a backward read
 * of c/<conv>. Records that are not messages are skipped. */
void chat_history_page(const struct pe_read_result *r, const char *conv,
		       uint16_t clen, uint32_t max_frame, struct parley_msg *out);

/* SYNC: where a device's delivery starts. Reads the device's stored
 * cursor (only when from_inbox_seq == 0) and the inbox's bounds. */
struct chat_sync_info {
	int err;
	uint64_t cursor;      /* stored cursor, UINT64_MAX = none (or not read) */
	uint64_t first, last; /* inbox bounds (0, 0 = empty) */
	uint64_t start;       /* first inbox_seq to deliver (chat_sync_start) */
};
typedef void (*chat_sync_cb)(void *arg, const struct chat_sync_info *r);
int chat_sync(struct chat *c, const char *user, size_t ulen,
	      const char *device, size_t dlen, uint64_t from_inbox_seq,
	      chat_sync_cb cb, void *arg);
/* Pure: the start of delivery. from_inbox_seq if given (else the
 * cursor + 1; no cursor: live, after the inbox's last), clamped to
 * [first, last + 1] and >= 1. */
uint64_t chat_sync_start(uint64_t from_inbox_seq, uint64_t cursor,
			 uint64_t first, uint64_t last);

/* An inbox entry, decoded (kind 0 / clen 0: not a readable pointer). */
struct chat_inbox_ptr {
	uint64_t inbox_seq, conv_seq;
	uint16_t kind, clen;
	char conv[250];
};

/* Inbox subscription with credit (the protocol's event window): the
 * engine delivers at most `credit` entries beyond what was granted. */
enum chat_inbox_what {
	CHAT_INBOX_PTRS = 1, /* items[0..count) in inbox order */
	CHAT_INBOX_TRIMMED,  /* retention skipped us to next_seq */
	CHAT_INBOX_CLOSED,   /* the engine ended the subscription (err) */
};
/* One inbox entry as delivered: an inline pointer (version 2) comes with
 * its EVENT ready (`ev`, borrowing from the engine's entry: valid during
 * the callback); a version 1 pointer needs chat_event_resolve. */
struct chat_inbox_item {
	struct chat_inbox_ptr p;
	bool ready;
	struct parley_event ev;
};
struct chat_inbox_update {
	enum chat_inbox_what what;
	int err;
	uint64_t next_seq;
	uint32_t count;
	const struct chat_inbox_item *items;
};
#define CHAT_INBOX_BATCH 32u /* items per update at most */
typedef void (*chat_inbox_cb)(void *arg, const struct chat_inbox_update *u);
struct chat_sub;
/* Subscribes to u/<user> from inbox_seq `from`. cb runs on the engine
 * shard (possibly several times per engine batch); done(arg) runs once
 * the subscription is gone (after chat_inbox_unsubscribe), and cb never
 * runs after it. */
int chat_inbox_subscribe(struct chat *c, const char *user, size_t ulen,
			 uint64_t from, uint32_t credit, chat_inbox_cb cb,
			 void (*done)(void *arg), void *arg,
			 struct chat_sub **out);
/* n more entries may be delivered (acknowledged events). Any thread. */
void chat_inbox_grant(struct chat_sub *s, int64_t n);
/* Retries a resume that failed (engine queue full): call periodically. */
void chat_inbox_poll(struct chat_sub *s);
/* Ends the subscription (done runs later on the shard). */
void chat_inbox_unsubscribe(struct chat_sub *s);

/* Resolves an inbox pointer into its EVENT: reads the message and calls
 * cb with a ready EVENT (a kind-0 placeholder when the pointer cannot be
 * resolved, so the inbox sequence stays dense). Returns 0 or
 * -PARLEY_EFULL (engine queue full: retry later; cb will not run). A
 * pointer that needs no read is answered before chat_event_resolve
 * returns, on the calling thread. */
typedef void (*chat_event_cb)(void *arg, const struct parley_msg *ev);
int chat_event_resolve(struct chat *c, const struct chat_inbox_ptr *p,
		       chat_event_cb cb, void *arg);
/* The kind-0 placeholder EVENT for p (pure; m borrows from p). */
void chat_event_placeholder(const struct chat_inbox_ptr *p,
			    struct parley_msg *m);

/* Stores a device's delivery cursor (k/<user>:<device>), asynchronously;
 * a failure is logged (the device then resumes from an older cursor and
 * gets duplicates it acknowledges again). 0 = issued, else the error. */
int chat_cursor_store(struct chat *c, const char *user, size_t ulen,
		      const char *device, size_t dlen, uint64_t seq);

/* ---- the conversation list (chat_list.c) ---------------------------------------- */

/* CONV_LIST: the user's conversations, most recent first, at most
 * `limit`. cb gets a CONV_LIST_OK or an error. Errors returned:
 * -PARLEY_EINVAL, -PARLEY_ENOMEM, -PARLEY_EFULL. */
typedef void (*chat_list_cb)(void *arg, int err, const struct parley_msg *list);
int chat_conv_list(struct chat *c, const char *user, size_t ulen,
		   uint16_t limit, chat_list_cb cb, void *arg);
/* One conversation as the list builder sees it. */
struct chat_list_ent {
	uint16_t clen;
	char conv[250];
	uint64_t last_seq, last_ts;
};
/* The list builder (pure): sorts ents (most recent first, then by id)
 * and fills out->conv_list_ok with at most `limit` of them, as seen by
 * user (DIRECT: the other member is the peer). */
void chat_list_build(struct chat_list_ent *ents, uint32_t n, uint16_t limit,
		     const char *user, size_t ulen, struct parley_msg *out);

#endif /* PARLEYD_CHAT_H */
