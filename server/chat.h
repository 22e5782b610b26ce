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
 *   k/<user>:<device> a device's delivery cursor (CHAT_ENT_CURSOR, u64): the
 *                     last inbox_seq the device acknowledged. Written lazily.
 *   s/fanout          fan-out watermark checkpoints (CHAT_ENT_WATERMARK, u64).
 *
 * Send path and fan-out (durable before ack; no skip, no double):
 *
 *   SEND -> append c/<conv> with producer = H(sender, client_msg_id)
 *        -> durable (engine callback) -> SEND_ACK to the sender
 *                                     -> chat_fanout_submit(conv, seq, ts)
 *   fan-out thread: for each member m: append u/<m> a pointer (conv, seq)
 *        with producer = H(conv, seq)   (idempotent: a replay never doubles)
 *        and for seq 1 also l/<m> with producer = H(conv) (list entry).
 *
 * Recoverable fan-out: the watermark W is a timestamp such that every
 * conversation entry with ts < W has been fully fanned out (all its inbox
 * appends durable). It is computed as min(ts of outstanding fan-out jobs,
 * clock - CHAT_FANOUT_MARGIN_MS) and checkpointed to s/fanout about once a
 * second. At startup, before any client is served, chat_open() reads the
 * last W, lists every c/ stream and re-fans-out, in seq order, every entry
 * with ts >= W - CHAT_FANOUT_MARGIN_MS. Entry timestamps come from a clock
 * this module gives the engine (chat_clock_ms): it never goes backwards,
 * not even across restarts (its floor is the newest timestamp recovered).
 * The margin covers the microseconds between the engine applying an entry
 * (taking its ts) and calling us back; ten seconds is a very wide margin.
 *
 * Ordering: an inbox receives pointers of one conversation in seq order:
 * engine append callbacks of one stream run in seq order on its shard,
 * chat_fanout_submit() queues FIFO, and one fan-out thread issues the
 * inbox appends in queue order (an inbox lives on one shard, whose request
 * queue is FIFO). A full engine queue (-PARLEY_EFULL) makes the fan-out
 * thread wait and retry the same append: order is kept.
 *
 * Threads: the pure helpers (keys, records, producers, planner) are
 * reentrant. chat_fanout_submit() may be called from any thread (engine
 * callbacks included): it takes a mutex and never blocks on I/O.
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

/* Engine entry types of the streams above. */
enum chat_ent_type {
	CHAT_ENT_MSG = 1,
	CHAT_ENT_PTR = 2,
	CHAT_ENT_LIST = 3,
	CHAT_ENT_CURSOR = 4,
	CHAT_ENT_WATERMARK = 5,
};

#define CHAT_REC_VERSION 1u
#define CHAT_FANOUT_MARGIN_MS 10000u
#define CHAT_KEY_CAP 256u            /* PE_MAX_KEY + NUL */
#define CHAT_FANOUT_MAX_ITEMS 4u     /* 1:1: two inboxes + two lists */
#define CHAT_PTR_MAX (1 + 2 + 2 + 250 + 8)

/* ---- keys ---------------------------------------------------------------- */

/* Each writes a NUL-terminated key into out[CHAT_KEY_CAP] and returns its
 * length, or -PARLEY_EINVAL when an id is invalid or too long. */
int chat_key_conv(char *out, const char *conv, size_t len);
int chat_key_inbox(char *out, const char *user, size_t len);
int chat_key_list(char *out, const char *user, size_t len);
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

/* An inbox pointer in u/<user>. */
struct chat_ptr {
	uint16_t kind;  /* PARLEY_EV_* */
	const char *conv;
	uint16_t conv_len;
	uint64_t conv_seq;
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

/* ---- fan-out planner (pure) -------------------------------------------------- */

struct chat_fanout_item {
	char key[CHAT_KEY_CAP];
	uint8_t klen;
	uint8_t producer[16];
	uint16_t type;                 /* CHAT_ENT_PTR or CHAT_ENT_LIST */
	uint16_t len;
	uint8_t payload[CHAT_PTR_MAX];
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
/* The list entries alone (CONV_OPEN registers the conversation). */
int chat_list_plan(const char *conv, size_t len, struct chat_fanout_plan *out);

/* ---- the running chat service -------------------------------------------------- */

struct chat;

struct chat_stats {
	uint64_t fanout_jobs;      /* messages fanned out (live) */
	uint64_t fanout_appends;   /* inbox/list appends completed */
	uint64_t fanout_errors;    /* appends that failed (logged) */
	uint64_t fanout_recovered; /* messages re-fanned out at startup */
	uint64_t fanout_pending;   /* jobs queued or in flight now */
	uint64_t watermark_ms;     /* last checkpointed watermark */
};

/* The clock to give the engine (pe_options.clock_ms, arg = &chat_clock):
 * wall clock, never going backwards, with a floor raised by recovery. */
struct chat_clock {
	_Atomic uint64_t last;
};
uint64_t chat_clock_ms(void *arg);

/* Recovers fan-out (blocking: reads s/fanout, scans c/ streams, re-appends
 * what may be missing) and starts the fan-out thread. The engine must be
 * open with clock_ms = chat_clock_ms / clock. */
int chat_open(struct pe_engine *e, struct chat_clock *clock,
	      struct chat **out);
/* Queue the fan-out of message `seq` (timestamp ts) of conv. Any thread. */
void chat_fanout_submit(struct chat *c, const char *conv, size_t len,
			uint64_t seq, uint64_t ts_ms);
/* Waits for every queued fan-out to be durable, writes a last checkpoint,
 * stops the thread and frees c. The engine must still be open. */
void chat_close(struct chat *c);
void chat_get_stats(struct chat *c, struct chat_stats *out);

#endif /* PARLEYD_CHAT_H */
