/*
 * chat_receipt.h — delivered / read positions and receipts (private to
 * server/). See docs/PROTOCOL.md, READ_MARKER and RECEIPTS.
 *
 * Stream (keys are byte strings, see chat.h for the others):
 *
 *   r/<user>:<h>   the user's positions in one conversation, h = 16 hex
 *                  digits of xxh3(conv). Each entry (CHAT_ENT_RCPT_POS) is
 *                  the whole state {conv, read_seq, delivered_seq}; the
 *                  last entry is the current one (older ones are dropped
 *                  by retention, CHAT_RCPT_KEEP). The conversation id is
 *                  in the record, so a hash collision reads as "nothing
 *                  stored" instead of another conversation's positions.
 *
 * Positions only grow. Every change is a read of the last entry followed
 * by an append with expected_last_seq = that entry's seq (compare and
 * swap in the engine); a concurrent writer (another device, the delivery
 * path) makes the append fail with -PARLEY_ESEQ and the change is redone
 * on the new state (at most CHAT_RCPT_RETRIES times). A marker at or below
 * the stored position writes nothing. read_seq <= delivered_seq always
 * (reading implies having received).
 *
 * delivered: a device's EVENT_ACK over inbox entries (from, to] makes the
 * user's delivered_seq in each conversation the largest conv_seq among
 * the pointers in that range other than RECEIPT ones (messages, and the
 * other entries of the conversation stream: membership, edits, activity) (an inbox carries a
 * conversation's pointers in seq order, so every earlier message of the
 * conversation was acknowledged too).
 *
 * Receipt events: after a position has changed (durable), RECEIPT
 * pointers (CHAT_ENT_PTR, kind PARLEY_EV_RECEIPT) are appended to inboxes:
 *   read:      to every other member (flags READ|DELIVERED) and to the
 *              reader's own inbox (flags READ: his other devices learn his
 *              position), if the conversation has at most
 *              CHAT_RCPT_PUSH_MAX members; above that only to the
 *              reader's own inbox (others ask with RECEIPTS).
 *   delivered: to every other member (flags DELIVERED), same bound.
 * The members are those of the conversation now, as the node that leads
 * the group's partition knows them (chat_members_each): a node that cannot
 * answer for the group (a follower, whose table is stale) pushes no
 * receipt to other members rather than pushing by a stale list (READ:
 * READ_MARKER is refused there anyway, NOTLEADER; DELIVERED: the position
 * is stored, the others see it through RECEIPTS).
 * A receipt pointer is the chat_ptr prefix {kind, conv, conv_seq = the
 * up-to seq} followed by {actor str, flags u32}; its producer id is
 * H('R', conv, actor, up_to, flags), so a replay never doubles it.
 *
 * Threads: every function may be called from any thread, including an
 * engine callback; callbacks run on engine shard threads and must not
 * block. Nothing here keeps state between calls: the engine does.
 */
#ifndef PARLEYD_CHAT_RECEIPT_H
#define PARLEYD_CHAT_RECEIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "parley_engine.h"
#include "parley_proto.h"

#define CHAT_RCPT_KEEP 4u       /* r/ entries kept by retention */
#define CHAT_RCPT_RETRIES 16    /* compare-and-swap rounds before EAGAIN */
#define CHAT_RCPT_PUSH_MAX 32u  /* members up to which receipts are pushed */
#define CHAT_RCPT_ACK_CONVS 16u /* conversations updated per EVENT_ACK */
#define CHAT_RCPT_ACK_COALESCE_MS 100u /* a connection reports its acks
					  at most this often (and at close) */
#define CHAT_RCPT_MAX_TARGETS CHAT_RCPT_PUSH_MAX

/* ---- keys and records ------------------------------------------------------ */

/* "r/<user>:<16 hex>" into out[CHAT_KEY_CAP]; its length or -PARLEY_EINVAL. */
int chat_key_rcpt(char *out, const char *user, size_t ulen, const char *conv,
		  size_t clen);

struct chat_rcpt_pos {
	uint64_t read_seq;
	uint64_t delivered_seq;
};
int chat_rcpt_pos_encode(uint8_t *buf, size_t cap, const char *conv,
			 size_t clen, const struct chat_rcpt_pos *p);
/* 0 or -PARLEY_ECORRUPT. conv borrows from p. */
int chat_rcpt_pos_decode(const uint8_t *p, size_t len, const char **conv,
			 uint16_t *clen, struct chat_rcpt_pos *out);
/* The position in the last entry of a backward read of r/<user>:<h>
 * (count 0, another conversation's record, or an undecodable one: 0, 0). */
void chat_rcpt_pos_of(const struct pe_read_result *r, const char *conv,
		      size_t clen, struct chat_rcpt_pos *out);

/* A receipt inbox pointer (see above). chat_ptr_decode reads its prefix. */
int chat_rcpt_ptr_encode(uint8_t *buf, size_t cap, const char *conv,
			 size_t clen, uint64_t up_to, const char *actor,
			 size_t alen, uint32_t flags);
/* The suffix of a receipt pointer: 0 or -PARLEY_ECORRUPT. */
int chat_rcpt_ptr_decode(const uint8_t *p, size_t len, const char **actor,
			 uint16_t *alen, uint32_t *flags);
void chat_producer_rcpt(uint8_t out[16], const char *conv, size_t clen,
			const char *actor, size_t alen, uint64_t up_to,
			uint32_t flags);

/* The EVENT of a receipt pointer entry of an inbox (pure; ev borrows
 * from e's payload): kind RECEIPT, conv_seq 0, ref_seq = the up-to seq,
 * sender = the actor, flags, the entry's time. 0 or -PARLEY_ECORRUPT. */
int chat_rcpt_event_of(const struct pe_entry *e, struct parley_event *ev);

/* ---- READ_MARKER ----------------------------------------------------------- */

struct chat_rcpt_mark_result {
	int err;          /* 0, -PARLEY_EINVAL (seq beyond the last message),
			     -PARLEY_EAGAIN (too many concurrent writers), or
			     the engine's error */
	uint64_t read_seq;/* the stored position now */
	bool stale;       /* it was already >= seq: nothing written */
};
typedef void (*chat_rcpt_mark_cb)(void *arg,
				  const struct chat_rcpt_mark_result *r);
/* Raises user's read position in conv to seq (>= 1), durably, then
 * appends the receipt pointers (durable too) and calls cb once. Returns 0
 * (cb will run) or (cb will not run) -PARLEY_ENOTFOUND (no such
 * conversation) / -PARLEY_EPERM (user is not a member now; a group member
 * who was removed or left may still mark up to their departure) — checked
 * first, then -PARLEY_EINVAL (seq 0), -PARLEY_ENOMEM, -PARLEY_EFULL, and
 * for a group on a node that cannot answer for its membership
 * -PARLEY_ENOTLEADER / -PARLEY_EAGAIN. */
int chat_rcpt_mark(struct chat *c, const char *user, size_t ulen,
		   const char *conv, size_t clen, uint64_t seq,
		   chat_rcpt_mark_cb cb, void *arg);

/* ---- delivered (EVENT_ACK) --------------------------------------------------- */

/* user's device acknowledged inbox entries (from, to]: raises delivered
 * positions and sends DELIVERED receipts, in the background (failures
 * are logged: a later ack covers them). Returns 0 or an enqueue error. */
int chat_rcpt_acked(struct chat *c, const char *user, size_t ulen,
		    uint64_t from, uint64_t to);

/* ---- RECEIPTS query ------------------------------------------------------------ */

struct chat_rcpt_member {
	uint16_t ulen;
	char user[PARLEY_PROTO_MAX_USER_ID];
	struct chat_rcpt_pos pos;
};
struct chat_rcpt_query_result {
	int err;              /* 0, -PARLEY_EINVAL (seq not a message), engine's */
	uint32_t member_count;
	bool end;             /* no member after the last of this page */
	uint32_t n;
	struct chat_rcpt_member m[PARLEY_PROTO_MAX_RECEIPTS];
};
typedef void (*chat_rcpt_query_cb)(void *arg,
				   const struct chat_rcpt_query_result *r);
/* The positions of conv's members whose id sorts after `after` (bytewise,
 * shorter first on a common prefix; empty = from the first), at most
 * limit (1..PARLEY_PROTO_MAX_RECEIPTS), asked by `user`. The rule is
 * checked here, first: user is a member of conv now (else
 * -PARLEY_ENOTFOUND / -PARLEY_EPERM, or NOTLEADER / AGAIN as for
 * chat_rcpt_mark), seq is 1..last seq (0: -PARLEY_EINVAL before any read;
 * beyond: cb with -PARLEY_EINVAL). Returns 0 (cb will run) or an error. */
int chat_rcpt_query(struct chat *c, const char *user, size_t ulen,
		    const char *conv, size_t clen, uint64_t seq,
		    const char *after, size_t alen, uint32_t limit,
		    chat_rcpt_query_cb cb, void *arg);

#endif /* PARLEYD_CHAT_RECEIPT_H */
