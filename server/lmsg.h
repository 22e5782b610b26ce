/*
 * lmsg.h — typed messages to a loop thread (private to server/).
 *
 * Engine callbacks run on engine shard threads and never touch a
 * connection: they build a struct lmsg addressed to the connection by
 * handle (struct conn_ref: loop, slot, generation) and post it. The loop
 * drains its list in one go on its own thread and hands each message to
 * the connection it names; a message for a connection that has since
 * closed (slot free or generation changed) is dropped (and freed).
 *
 * Ownership: lmsg_new allocates; after lmsg_post/loop_post the loop owns
 * the message and frees it once handled.
 * Threads: any.
 */
#ifndef PARLEYD_LMSG_H
#define PARLEYD_LMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct loop;

/* A connection named across threads. */
struct conn_ref {
	struct loop *lp;
	uint32_t slot, gen;
};

/* A message to a loop (see top). `data` is owned by the message; `u`
 * holds the typed fields of its kind (only the member named by `kind` is
 * valid). */
enum lmsg_kind {
	LM_FRAME = 1,     /* data = an encoded frame for conn; done_req: inflight-- */
	LM_INBOX,         /* data = u.inbox.count struct lm_inbox_item, then
			     the bytes they point at (lmsg_inbox_*) */
	LM_EVENT,         /* data = an encoded EVENT frame */
	LM_SUB_CLOSED,    /* the engine ended the subscription */
	LM_SYNC_DONE,     /* the SYNC's reads answered (chat_sync; conn_req_sync.c) */
	LM_STOP,          /* drain and stop the loop */
	LM_PUSH,          /* data = an encoded TYPING_PUSH / PRESENCE frame
			     (presence.h; bounded by presence_push_queue_max) */
	LM_LIVE,          /* data = an encoded EVENT frame of a large group's
			     read fan-out (live.h) */
	LM_EARLY,         /* data = an encoded early EVENT frame (inbox_seq
			     0, PARLEY_MSGF_EARLY) of a message durable in
			     its conversation (live.h, conn.c "Early
			     delivery"); u.early names it */
	LM_FWD,           /* to the loop itself: data = a FWD_REQ payload
			     (proxy.h) from node u.fwd.node, run on a
			     virtual connection of the loop */
	LM_TAIL,          /* a remote inbox tail's frames (data, whole
			     client frames) or its end (u.tail.end), for the
			     gateway's client connection (tail_relay.h) */
	LM_TAIL_OPEN,     /* to the loop itself: data = a TAIL_REQ OPEN
			     from node u.tail.node, run on a tail virtual
			     connection of the loop */
	LM_TAIL_ACK,      /* to a tail virtual connection: the device
			     acknowledged up to u.tail.seq */
	LM_TAIL_CLOSE,    /* to a tail virtual connection: its gateway
			     closed it (or the link to it went down) */
};
enum lmsg_ack { LM_ACK_NONE = 0, LM_ACK_NEW, LM_ACK_DUPLICATE };

/* One inbox entry of an LM_INBOX message (engine thread -> loop). Its
 * bytes are len bytes at off from the end of the item array
 * (lmsg_inbox_bytes): a ready item's encoded EVENT frame, or else the
 * inbox pointer for the connection to resolve (conn.c packs it). Items'
 * bytes follow each other in order, so consecutive ready frames are
 * contiguous. */
struct lm_inbox_item {
	uint64_t seq;      /* inbox seq */
	uint32_t off, len; /* its bytes */
	bool ready;        /* the bytes are an encoded EVENT frame */
	uint16_t kind;     /* the pointer's EVENT kind */
	uint64_t conv_h;   /* lm_conv_hash of its conversation */
	uint64_t conv_seq; /* its conversation seq (0: none) */
};

/* What early delivery (conn.c) knows of an inbox EVENT or an early one:
 * the conversation by hash, the seq in it, the EVENT kind. */
struct lm_conv_pos {
	uint64_t conv_h, conv_seq;
	uint16_t kind;
};

/* The hash naming a conversation in early delivery's bookkeeping (a
 * collision can only turn early delivery off for the two conversations
 * it confuses, see conn.c). */
uint64_t lm_conv_hash(const char *conv, size_t len);
struct lmsg {
	struct lmsg *next;
	uint16_t kind;
	bool done_req;           /* completes one in-flight request */
	uint32_t slot, gen;
	union {
		struct {               /* LM_FRAME */
			uint8_t ack;   /* enum lmsg_ack: a SEND_ACK, for metrics */
			uint64_t t0_ns; /* SEND start, for the ack latency histogram */
			uint64_t t_durable_ns; /* its durable callback ran (stages) */
			bool notleader; /* an ERROR NOTLEADER (conn_error_msg):
					   may be forwarded instead (proxy.h) */
			uint64_t leader; /* ...to this node (the leader of
					    the partition refused, route.h);
					    0 = none known */
		} frame;
		struct {               /* LM_INBOX */
			uint32_t count;   /* pointers in data */
			bool trimmed;     /* retention skipped us to next_seq */
			uint64_t next_seq;
			uint64_t t_post_ns; /* posted by the subscription (stages) */
		} inbox;
		struct {               /* LM_EVENT */
			uint64_t inbox_seq;
			uint64_t t_start_ns; /* its resolution started (stages) */
			struct lm_conv_pos pos; /* early delivery (conn.c) */
		} event;
		struct {               /* LM_EARLY */
			struct lm_conv_pos pos;
			uint64_t t_durable_ns; /* the message durable (stages) */
		} early;
		struct {               /* LM_FWD */
			uint64_t node;
		} fwd;
		struct {               /* LM_TAIL* */
			uint64_t id, node, seq;
			bool end;
		} tail;
		struct {               /* LM_SUB_CLOSED */
			int err;
		} sub_closed;
		struct {               /* LM_SYNC_DONE (struct chat_sync_info) */
			uint32_t req_id;
			int err;
			uint64_t cursor;  /* UINT64_MAX = none stored / not read */
			uint64_t first_seq, last_seq, start_seq;
		} sync;
	} u;
	uint32_t len;
	/* aligned for the typed array that starts an LM_INBOX's data */
	_Alignas(struct lm_inbox_item) uint8_t data[];
};

_Static_assert(offsetof(struct lmsg, data) %
			       _Alignof(struct lm_inbox_item) == 0,
	       "an LM_INBOX's item array starts aligned");

/* A zeroed message of `kind` with len bytes of data, NULL when out of
 * memory. */
static inline struct lmsg *lmsg_new(uint16_t kind, uint32_t len)
{
	struct lmsg *m = malloc(sizeof *m + len);
	if (!m)
		return NULL;
	memset(m, 0, sizeof *m);
	m->kind = kind;
	m->len = len;
	return m;
}

/* An LM_INBOX of `count` items and `bytes` bytes after them: one
 * allocation (lmsg_new), u.inbox.count set; NULL when out of memory. */
static inline struct lmsg *lmsg_inbox_new(uint32_t count, size_t bytes)
{
	size_t n = (size_t)count * sizeof(struct lm_inbox_item) + bytes;
	if (n > UINT32_MAX)
		return NULL;
	struct lmsg *m = lmsg_new(LM_INBOX, (uint32_t)n);
	if (m)
		m->u.inbox.count = count;
	return m;
}

/* The item array of an LM_INBOX (u.inbox.count entries). */
static inline struct lm_inbox_item *lmsg_inbox_items(struct lmsg *m)
{
	return (struct lm_inbox_item *)(void *)m->data;
}

/* The bytes the items of an LM_INBOX point into (item.off is from here). */
static inline uint8_t *lmsg_inbox_bytes(struct lmsg *m)
{
	return m->data + (size_t)m->u.inbox.count * sizeof(struct lm_inbox_item);
}

/* Any thread: hand a message to the loop. Never blocks on I/O
 * (implemented by loop.c). */
void loop_post(struct loop *lp, struct lmsg *m);

/* Address m to the connection `to` and post it. */
static inline void lmsg_post(const struct conn_ref *to, struct lmsg *m)
{
	m->slot = to->slot;
	m->gen = to->gen;
	loop_post(to->lp, m);
}

#endif /* PARLEYD_LMSG_H */
