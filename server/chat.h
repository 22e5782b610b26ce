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
 *   s/fanout/<k>      fan-out checkpoints (CHAT_ENT_WATERMARK) of one
 *                     partition p: k is the first number whose key lands
 *                     in p, so p's leader writes it locally (see below).
 *                     (s/fanout: the older whole-cluster record, read at
 *                     recovery, no longer written.)
 *   e/<conv>          the edit index (CHAT_ENT_EDIT), see "edits and
 *                     deletes" below (chat_edit.c).
 *   t/<conv>          the conversation's own retention (CHAT_ENT_RETENTION),
 *                     see "per-conversation retention" (chat_retention.c).
 *
 * Send path and fan-out (durable before ack; no skip, no double):
 *
 *   chat_send -> register a fan-out job on the conversation's partition
 *             -> append c/<conv> with producer = H(sender, client_msg_id)
 *             -> durable (engine callback) -> the caller's callback (ACK)
 *                -> the fan-out: issued right there, from the callback,
 *                   when the fan-out queue is empty and its thread idle
 *                   ("direct"); otherwise the job joins the queue
 *   fan-out (direct or the thread): for each member m: append u/<m> a
 *        pointer (conv, seq, and for a live message its record inline)
 *        with producer = H(conv, seq)   (idempotent: a replay never doubles)
 *        and for seq 1 also l/<m> with producer = H(conv) (list entry).
 *        A direct fan-out never waits: on a full engine queue the whole
 *        job goes to the thread, which re-issues it (what was already
 *        appended comes back as a duplicate).
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
 * Checkpoints: per partition. Partition p's record (u8 3 | u32 np | u32
 * p | u64 cursor) is appended to s/fanout/<k>, a key of partition p, by
 * p's leader, at most every CHAT_CKPT_INTERVAL_MS (sooner after
 * CHAT_CKPT_MSGS new messages), asynchronously, one round (one append per
 * partition due) at a time, and only for partitions where something was
 * registered or completed since p's previous one (an idle server writes
 * nothing) and that this node may write (see Leadership). A graceful
 * stop waits for every fan-out and then writes a last checkpoint of
 * every partition it leads with nothing outstanding: a clean restart
 * re-fans out nothing. After kill -9 the restart re-fans out at most what
 * the gauge `fanout_uncheckpointed` counted at the moment of the kill (the
 * messages outstanding at the last durable checkpoint round, those
 * registered since, and those whose fan-out had ended by the checkpoint
 * but whose ts may be >= its cursor: every message of the partition that
 * ended after the clock reached the cursor, chat.c struct pdone).
 *
 * Recovery (chat_open): read the last checkpoints (each partition's own,
 * and the older whole-cluster one: the larger cursor wins); list each partition's
 * streams (metadata only) and, for every conversation with messages
 * stamped >= its partition's cursor, find the first such seq (backward
 * reads: cost = what is past the cursor) and queue ONE job "seqs
 * first..last". Nothing is fanned out inside chat_open: the jobs run on
 * the fan-out thread, ahead of every live message (FIFO), while clients
 * are already served. The clock's floor is raised to the newest stored
 * timestamp and to the largest cursor.
 *
 * Leadership (a cluster, docs/CLUSTER.md §3.2-3.4): only the leader of a
 * partition can append to it, and a message touches several partitions
 * (its conversation, the members' inboxes and lists). The conversation's
 * partition p is the one that matters: its leader stores the message and
 * runs its fan-out, and owns p's cursor and checkpoint. Writes to other
 * partitions go through chat_append: to the local engine when this node
 * leads the key's partition, else (a forwarder installed: parleyd's
 * --leader-placement spread) forwarded to that partition's leader over
 * the peer link (server/peer_fwd.h), executed there with the same
 * producer id, answered after its commit. So p's fan-out completes while
 * the inboxes' partitions are led elsewhere, and p's cursor advances.
 * The fan-out thread polls the engine's published Raft state
 * (pe_raft_status) every CHAT_LEAD_POLL_MS (reading every partition only
 * when pe_raft_status_gen moved since a poll that left nothing to do, or
 * the last one left work): when this node leads p in a
 * term it has not recovered p in, it runs the recovery above for p (once
 * it can write p, i.e. has applied all its predecessor committed), so
 * whatever the previous leader had in flight is re-fanned out
 * (idempotent). A partition it no longer leads, or one of whose fan-out
 * appends (local or forwarded) or SENDs failed NOTLEADER / AGAIN, is "not
 * ready" until its recovery runs again (in the same term at most every
 * CHAT_LEAD_RETRY_MS); p's checkpoint is written only while p is ready
 * (a cursor may pass a message only if this node saw its fan-out
 * through). Other partitions' readiness does not matter: their leaders
 * checkpoint them. At open, jobs are queued only for partitions this node
 * can write. Messages recovered after a leader change may reach an inbox
 * after newer ones of the same conversation fanned out directly in the
 * meantime.
 *
 * Ordering: an inbox receives pointers of one conversation in seq order:
 * engine append callbacks of one stream run in seq order on its shard;
 * a callback issues its job's appends itself only when no job is queued
 * or being issued by the fan-out thread (checked under the service's
 * mutex), else queues it FIFO behind them; the thread issues queued jobs
 * in order (an inbox lives on one shard, whose request queue is FIFO). A
 * full engine queue (-PARLEY_EFULL) makes the fan-out thread wait and
 * retry the same append, and a direct fan-out hand its job to the queue
 * (so later messages of its conversation queue behind it): order is kept.
 * Forwarded appends keep it too: those to one node leave in submission
 * order on one link and reach the leader's engine in that order
 * (peer_fwd.h item 3), and a forwarder at its in-flight bound answers
 * -PARLEY_EFULL like a full engine queue. Only when an inbox's leadership
 * moves between two of its appends can they land out of order (as after
 * a recovery: each message still once).
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
	/* groups (chat_group.c) */
	CHAT_ENT_MEMBER = 7, /* c/<group>: a membership event */
	CHAT_ENT_GSNAP = 8,  /* m/<group>: the membership as of an event */
	/* receipts (chat_receipt.h): a user's read/delivered position */
	CHAT_ENT_RCPT_POS = 12,
	/* edits (chat_edit.c): EDIT and DELETE entries of c/<conv> and of the
	 * edit index e/<conv>; the record's kind says which */
	CHAT_ENT_EDIT = 10,
	/* per-conversation retention (chat_retention.c): t/<conv> */
	CHAT_ENT_RETENTION = 11,
};

#define CHAT_REC_VERSION 1u
#define CHAT_FANOUT_MARGIN_MS 10000u /* version-1 checkpoints only */
#define CHAT_CKPT_INTERVAL_MS 100u   /* fan-out checkpoint at most this often */
#define CHAT_CKPT_MSGS 4096u         /* ... or after this many new messages */
#define CHAT_LEAD_POLL_MS 20u        /* leadership poll (a cluster) */
#define CHAT_LEAD_RETRY_MS 500u      /* re-recovery of a partition in the same term */
#define CHAT_CKPT_KEY_CAP 32u        /* "s/fanout/<k>" + NUL */
#define CHAT_CKPT_KEY_TRIES 64u      /* k tried per partition at most (chat_open) */
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
#define CHAT_GSNAP_KEEP 4u /* group membership snapshots (m/<group>): read
			      as the last one only */
extern const struct pe_retention_rule chat_retention[];
extern const size_t chat_nretention;
/* The engine's retention rules: chat_retention, then the configured
 * defaults for conversations (retention_max_age_ms / _max_count): c/ and
 * the edit index e/ by age and count (e/ by age only), inboxes u/ by age
 * (their pointers would only resolve to trimmed entries). 0, 0 = none.
 * Writes at most CHAT_RETENTION_RULES_MAX rules to out, returns how many. */
#define CHAT_RETENTION_RULES_MAX 8u
size_t chat_retention_rules(uint64_t max_age_ms, uint64_t max_count,
			    struct pe_retention_rule *out);

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
	uint64_t fanout_recovered; /* messages re-fanned out after a restart
				      or a leader change */
	uint64_t lead_recoveries;  /* recoveries run on gaining leadership */
	uint64_t fanout_direct;    /* live messages whose inbox appends were
				      issued from their durable callback */
	uint64_t fanout_deferred;  /* ... of which a full engine queue handed
				      to the fan-out thread */
	uint64_t fanout_pending;   /* messages whose fan-out is not durable yet */
	uint64_t fanout_uncheckpointed; /* at most this many would be re-fanned
					   out if the process died now */
	uint64_t checkpoints;      /* durable fan-out checkpoints written */
	uint64_t watermark_ms;     /* smallest durable cursor of the partitions
				      this node leads and fanned out in */
	/* groups (chat_group.c) */
	uint64_t groups;           /* groups that exist */
	uint64_t group_changes;    /* membership events applied (live) */
	uint64_t group_refused;    /* SENDs stored after their sender's removal,
				      refused at their seq */
	uint64_t early_posted;     /* early EVENTs handed to connections
				      (chat_set_early) */
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
	uint64_t t_durable_ns; /* parley_mono_ns() when the engine answered
				  (the send's durable stage), 0 = not read */
};
typedef void (*chat_send_cb)(void *arg, const struct chat_send_result *r);
/* Checks membership, stores the message and, once it is durable, calls
 * cb (on an engine shard thread, or on the peer thread when a remote
 * existence check fails the SEND; it must not block) and queues its
 * fan-out. Returns 0 (cb will run once) or an error and cb will not run:
 * -PARLEY_ENOTFOUND (no such conversation), -PARLEY_EPERM (not a member),
 * -PARLEY_ETOOBIG, -PARLEY_ENOMEM, -PARLEY_EFULL (engine queue full: retry
 * later), -PARLEY_ECLOSED. Any thread. A conversation that was never
 * opened (no o/<conv>, no message) fails with -PARLEY_ENOTFOUND through
 * cb: existence is cached in memory (CHAT_KNOWN_MAX), a miss costs one or
 * two reads before the append (the first at the leader of o/<conv>'s
 * partition when this node holds no replica of it:
 * chat_set_remote_check). */
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

/* ---- routing of writes (a cluster, docs/CLUSTER.md §3.3) ----------------------- */

/* Forwards an append to node `to`, the leader of its partition
 * (peer_node_forward, server/peer_fwd.h): 0 = the callback will run
 * (from another thread), -PARLEY_EFULL (back off), -PARLEY_ECLOSED (no
 * link: append locally instead), other pe_append refusals. */
typedef int (*chat_fwd_fn)(void *arg, uint64_t to,
			   const struct pe_append_req *q, pe_append_cb cb,
			   void *cb_arg);
typedef int (*chat_fwd_del_fn)(void *arg, uint64_t to, const void *key,
			       size_t klen, uint64_t through, pe_delete_cb cb,
			       void *cb_arg);
/* Installs the forwarder (a cluster node; none = every write is local):
 * fn for appends, dfn for deletes. Before clients are served. */
void chat_set_forward(struct chat *c, chat_fwd_fn fn, chat_fwd_del_fn dfn,
		      void *arg);
/* Where a write to partition p goes (0 = the local engine, else the node
 * to forward it to); installed, it replaces the published-state rule
 * below (peer_node_route: it also knows the leaders of partitions this
 * node does not hold, docs/CLUSTER.md §3.7). Before clients are served. */
typedef uint64_t (*chat_route_fn)(void *arg, uint32_t partition);
#define CHAT_ROUTE_DEFAULT UINT64_MAX /* chat_route_fn: the usual rule */
void chat_set_router(struct chat *c, chat_route_fn fn, void *arg);
/* Reads across nodes (docs/CLUSTER.md §3.3, "Reads of partitions this
 * node does not hold"). A SEND whose conversation is not in the "known"
 * cache checks that it was opened: its open record o/<conv> lives in
 * another partition than c/<conv>, which this node (the conversation's
 * leader) may hold no replica of. Then fn asks that partition's leader
 * (tail_relay_check, server/tail_relay.h) and calls cb(cb_arg, rc)
 * exactly once, from another thread and never inside fn: rc 1 (opened),
 * 0 (no open record), -PARLEY_EVERSION (that leader is an older build:
 * check here, as before), other < 0 (no answer: the SEND fails with it).
 * fn returns 0, or < 0 when cb will not run (-PARLEY_EVERSION: check
 * here; -PARLEY_EFULL / -PARLEY_ENOTLEADER / ...: the SEND fails AGAIN).
 * NULL (the default) = every check is local. Any time (atomic). */
typedef void (*chat_check_cb)(void *arg, int rc);
typedef int (*chat_check_fn)(void *arg, const char *conv, uint16_t clen,
			     chat_check_cb cb, void *cb_arg);
void chat_set_remote_check(struct chat *c, chat_check_fn fn, void *arg);
/* The answering side of such a check (the leader of o/<conv>'s
 * partition): a linearizable read of o/<conv> (ReadIndex, §3.5), then
 * cb(cb_arg, 1 / 0 / < 0 on failure) once, on an engine thread. 0, or
 * < 0 (cb will not run). */
int chat_conv_opened(struct chat *c, const char *conv, uint16_t clen,
		     chat_check_cb cb, void *cb_arg);
/* pe_append, routed: a key whose partition another node leads (as
 * published: pe_raft_status) goes to that leader through the forwarder,
 * which executes it there with the same producer id and expected seq;
 * else (this node leads, no leader known, no link) the local engine.
 * Same returns and callback contract as pe_append, except that the
 * callback of a forwarded append runs on the peer thread and gets
 * -PARLEY_EAGAIN when the answer is lost (retry with the same producer).
 * Every chat write to a partition other than its conversation's goes
 * through here. Any thread. */
int chat_append(struct chat *c, const struct pe_append_req *q, pe_append_cb cb,
		void *arg);
/* Blocking chat_append (not from an engine callback nor the peer
 * thread); returns r->err (or the enqueue error) and fills *r. */
int chat_append_sync(struct chat *c, const struct pe_append_req *q,
		     struct pe_append_result *r);
/* pe_delete_sync, routed as chat_append (retention's deletions of a
 * conversation's edit index, whose partition may be led elsewhere).
 * Blocking: not from an engine callback nor the peer thread. */
int chat_delete_sync(struct chat *c, const void *key, size_t klen,
		     uint64_t through, struct pe_delete_result *r);
/* Appends handed to the forwarder so far. */
uint64_t chat_forwarded(struct chat *c);

/* 0 when user may read conv; -PARLEY_ENOTFOUND (not a conversation id)
 * or -PARLEY_EPERM (not a member). Pure: 1:1 ids only (a group id is
 * NOTFOUND here) — use chat_conv_access, which knows groups. */
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
 * -PARLEY_ENOMEM, -PARLEY_EFULL (engine queue full), -PARLEY_ENOTLEADER
 * with the partition noted (route.h) on a node that holds no replica of
 * the conversation's partition (route_holds); a NOTLEADER through cb is
 * noted likewise. before_seq == 1
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
/* The same with each entry's current state st[i] (NULL = as stored): an
 * edited message shows its latest body with PARLEY_MSGF_EDITED, a deleted
 * one an empty body with PARLEY_MSGF_DELETED. */
struct chat_edit_state;
void chat_history_page_state(const struct pe_read_result *r,
			     const struct chat_edit_state *st, const char *conv,
			     uint16_t clen, uint32_t max_frame,
			     struct parley_msg *out);

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

/* CONV_LIST: the user's conversations, most recent activity first, at
 * most `limit`, after the cursor (before_ts, before_conv): the position
 * of the previous page's last entry (0 / empty: from the top). Each entry
 * carries the user's read position, the unread count (messages from
 * others after it and at or after the first seq the user may read (a
 * "from join" group): exact up to CHAT_UNREAD_SCAN unread messages; beyond,
 * the older unread ones are counted as from others) and the last
 * message's sender, content type and first PARLEY_PROTO_MAX_PREVIEW
 * bytes. cb gets a CONV_LIST_OK (flags END, next_before_*) or an error.
 * Errors returned: -PARLEY_EINVAL, -PARLEY_ENOMEM, -PARLEY_EFULL. */
#define CHAT_UNREAD_SCAN 100u
/* A CONV_LIST_OK never exceeds the smallest max_frame a server announces:
 * a page stops early (not END) when the next record would not fit. */
#define CHAT_LIST_FRAME_MAX PARLEY_PROTO_MAX_FRAME_MIN
typedef void (*chat_list_cb)(void *arg, int err, const struct parley_msg *list);
int chat_conv_list_page(struct chat *c, const char *user, size_t ulen,
			uint16_t limit, uint64_t before_ts,
			const char *before_conv, size_t bclen, chat_list_cb cb,
			void *arg);
/* The first page (no cursor). */
int chat_conv_list(struct chat *c, const char *user, size_t ulen,
		   uint16_t limit, chat_list_cb cb, void *arg);
/* One conversation as the list builder sees it. */
struct chat_list_ent {
	uint16_t clen;
	char conv[250];
	uint64_t last_seq, last_ts;
	/* groups: filled from chat_group_meta before chat_list_build */
	bool group;
	uint32_t members;
	uint16_t title_len;
	char title[256];
	/* appended by the receipts work (0 / empty when unknown) */
	uint64_t open_ts;     /* when it entered the user's list (l/ entry) */
	uint64_t read_seq;    /* the user's read position (r/) */
	uint32_t unread;
	uint16_t sender_len, content_type, preview_len;
	char sender[PARLEY_PROTO_MAX_USER_ID];
	uint8_t preview[PARLEY_PROTO_MAX_PREVIEW];
	/* groups the user is no longer in (chat_group_left): the entry is
	 * as of the event that removed them (PARLEY_CONVF_LEFT) */
	uint8_t flags;        /* PARLEY_CONVF_* */
	uint64_t left_seq;    /* LEFT: that event's seq */
	bool from_snap;       /* group, title, members, LEFT from the group's
				 stored snapshot (chat_gsnap_view), not memory */
	uint64_t vis_from;    /* group: the first seq the user may read (0:
				 unknown); unread counts only from there */
	uint64_t unread_from; /* unread = messages from others after this
				 (read_seq, raised to vis_from - 1) */
	bool gone;            /* retention removed every entry (up to the
				 departure when LEFT): nothing to count */
};
/* A conversation's activity time, the list's sort key: the later of its
 * last message and its entry into the list. */
uint64_t chat_list_activity(const struct chat_list_ent *e);
/* Sorts ents (most recent activity first, then by id: shorter first,
 * then bytewise) and returns how many of them, at most `limit`, form the
 * page after the cursor (before_ts, before_conv[0..bclen); bclen 0 and
 * before_ts 0: from the first); *start = index of its first entry,
 * *more = entries follow the page. Pure. */
uint32_t chat_list_select(struct chat_list_ent *ents, uint32_t n,
			  uint16_t limit, uint64_t before_ts,
			  const char *before_conv, size_t bclen,
			  uint32_t *start, bool *more);
/* Fills out->conv_list_ok with ents[0..n) in that order (at most
 * PARLEY_PROTO_MAX_LIST), as seen by user (DIRECT: the other member is
 * the peer); ids that are not conversations are skipped. The cursor of
 * the next page is the last entry's; END when !more. Pure. */
void chat_list_fill(const struct chat_list_ent *ents, uint32_t n, bool more,
		    const char *user, size_t ulen, struct parley_msg *out);
/* select (no cursor) + fill: the first page. Pure. */
void chat_list_build(struct chat_list_ent *ents, uint32_t n, uint16_t limit,
		     const char *user, size_t ulen, struct parley_msg *out);

/* Stores rec as an entry of `type` in c/<conv> (idempotent on producer)
 * and fans it out to the members' inboxes like a message (a pointer to
 * its seq; chat_event_resolve reads the entry's type). Same contract as
 * chat_send, without the membership check (the caller did it). rec is
 * copied. */
int chat_conv_append(struct chat *c, const char *conv, uint16_t clen,
		     uint16_t type, const uint8_t *rec, uint32_t rec_len,
		     const uint8_t producer[16], chat_send_cb cb, void *arg);
/* The service's clock now (ms; the one the engine stamps entries with). */
uint64_t chat_now_ms(const struct chat *c);

/*
 * ---- edits and deletes (chat_edit.c) --------------------------------------------
 *
 * Streams:
 *   c/<conv>  an EDIT or DELETE is an entry (CHAT_ENT_EDIT) of its own,
 *             with its own seq, referring to the message's seq (ref_seq);
 *             producer = H('E', sender, client_msg_id): a retry is a
 *             duplicate. Fanned out like a message (EVENT kind EDIT /
 *             DELETE, from the entry's record).
 *   e/<conv>  the edit index: one entry per EDIT / DELETE (u64 seq of the
 *             c/ entry + the same record), producer = H('E', 'I', conv,
 *             seq), appended after the c/ entry is durable and before the
 *             ack. HISTORY reads it backwards to show each message's
 *             current state; it stops at the first index entry older than
 *             the page's oldest message (an edit is never older than its
 *             message) or after CHAT_EDIT_SCAN_MAX entries.
 *
 * Rules (checked on the stored message, in this order): the conversation
 * exists and the user is a member (ENOTFOUND / EPERM); ref_seq is a stored
 * entry (ENOTFOUND, also when past retention) that is a message (EINVAL);
 * the user sent it (EPERM); it is at most edit_window_ms / delete_window_ms
 * old (EEXPIRED; 0 = no limit); it is not deleted (EDELETED; for a DELETE
 * too: it happened already). A retry of an EDIT / DELETE already stored
 * (same sender and client_msg_id) skips the last two checks and is
 * acknowledged with DUPLICATE and the original seq.
 */
#define CHAT_EDIT_REC_VERSION 0x45u  /* 'E': never a chat_msg record */
#define CHAT_EDIT_SCAN_MAX 10000u    /* index entries one HISTORY page reads at most */
#define CHAT_EDIT_WINDOW_DEFAULT_MS (48ull * 3600 * 1000)   /* 48 h */
#define CHAT_DELETE_WINDOW_DEFAULT_MS (48ull * 3600 * 1000) /* 48 h */

int chat_key_edits(char *out, const char *conv, size_t len);

/* An EDIT / DELETE record (c/<conv> payload; e/<conv> payload after a
 * u64 seq). Fields borrow from the decoded buffer. */
struct chat_edit_rec {
	uint16_t kind;          /* PARLEY_EV_EDIT or PARLEY_EV_DELETE */
	const char *sender;
	uint16_t sender_len;
	uint8_t client_msg_id[16];
	uint64_t ref_seq;
	uint16_t content_type;  /* EDIT: of the new body */
	const uint8_t *body;    /* EDIT: the new body; DELETE: empty */
	uint32_t body_len;
};
int chat_edit_rec_encode(uint8_t *buf, size_t cap, const struct chat_edit_rec *m);
int chat_edit_rec_decode(const uint8_t *p, size_t len, struct chat_edit_rec *out);
void chat_producer_edit(uint8_t out[16], const char *sender, size_t slen,
			const uint8_t client_msg_id[16]);
void chat_producer_edit_index(uint8_t out[16], const char *conv, size_t len,
			      uint64_t seq);

struct chat_edit_req {
	uint16_t kind;          /* PARLEY_EV_EDIT or PARLEY_EV_DELETE */
	const char *conv;
	uint16_t conv_len;
	const char *user;
	uint16_t user_len;
	uint8_t client_msg_id[16];
	uint64_t ref_seq;
	uint16_t content_type;
	const uint8_t *body;
	uint32_t body_len;
	uint64_t window_ms;     /* edit_window_ms / delete_window_ms; 0 = none */
};
struct chat_edit_result {
	int err;
	uint64_t seq, ts_ms;    /* the EDIT / DELETE entry */
	bool duplicate;
};
typedef void (*chat_edit_cb)(void *arg, const struct chat_edit_result *r);
/* EDIT / DELETE. Returns 0 (cb runs once, on an engine thread, after the
 * entry and its index entry are durable, or with the error) or an error
 * (cb will not run): -PARLEY_ENOTFOUND, -PARLEY_EPERM, -PARLEY_EINVAL,
 * -PARLEY_ETOOBIG, -PARLEY_ENOMEM, -PARLEY_EFULL. Any thread. */
int chat_edit(struct chat *c, const struct chat_edit_req *q, chat_edit_cb cb,
	      void *arg);

/* The current state of one entry of a HISTORY page. */
struct chat_edit_state {
	uint32_t flags;         /* PARLEY_MSGF_EDITED / PARLEY_MSGF_DELETED */
	uint16_t content_type;  /* EDITED: the latest edit's */
	const uint8_t *body;    /* EDITED: the latest body; DELETED: empty */
	uint32_t body_len;
	uint64_t edit_seq;      /* seq of the EDIT / DELETE that applies */
};
/* Folds the edit index into a page read from c/<conv>: copies the page,
 * reads e/<conv> and calls cb (engine thread) with the copied page and
 * st[i] for page->entries[i]. Returns 0 or an error (cb will not run). */
typedef void (*chat_edit_fold_cb)(void *arg, int err,
				  const struct pe_read_result *page,
				  const struct chat_edit_state *st);
int chat_edit_fold(struct chat *c, const char *conv, size_t clen,
		   const struct pe_read_result *page, chat_edit_fold_cb cb,
		   void *arg);
/* The EVENT of an EDIT / DELETE entry e of conv (kind, ref_seq, sender,
 * client_msg_id, body; inbox_seq left to the caller). 0, or
 * -PARLEY_ECORRUPT when e is not an edit record. m borrows from e. */
int chat_edit_event(const struct pe_entry *e, struct parley_msg *m);

/*
 * ---- per-conversation retention (chat_retention.c) ---------------------------------
 *
 * t/<conv>: the conversation's own retention (CHAT_ENT_RETENTION entries,
 * the last one counts). A sweeper thread enforces every setting each
 * sweep_ms (and at once when one is set) with engine tombstones
 * (pe_delete of the prefix of c/<conv> past it, and of the edit-index
 * entries of trimmed EDITs); compaction removes them from disk. It can
 * only shorten retention: the server-wide defaults (engine rules) apply
 * too. Who may set it: either member of a 1:1 conversation.
 */
#define CHAT_RET_MAX_CONVS (1u << 20)     /* conversations with a setting */
#define CHAT_RET_MAX_QUEUED 1024u         /* RETENTION requests waiting */
#define CHAT_RET_SWEEP_DEFAULT_MS 60000u
struct chat_ret;
int chat_retention_start(struct chat *c, uint64_t def_age_ms,
			 uint64_t def_count, uint64_t sweep_ms,
			 struct chat_ret **out);
void chat_retention_stop(struct chat_ret *r);
struct chat_retention_req {
	const char *conv;
	uint16_t conv_len;
	const char *user;
	uint16_t user_len;
	uint8_t flags;          /* PARLEY_RETF_SET: set, else only read */
	uint64_t max_age_ms, max_count; /* 0 = none */
};
/* cb runs on the sweeper thread with a RETENTION_OK (or err). Returns 0
 * or -PARLEY_ENOTFOUND / -PARLEY_EPERM (chat_conv_check), -PARLEY_EINVAL,
 * -PARLEY_ENOMEM, -PARLEY_EFULL (too many waiting), and cb will not run. */
typedef void (*chat_retention_cb)(void *arg, int err, const struct parley_msg *ok);
int chat_retention_request(struct chat_ret *r, const struct chat_retention_req *q,
			   chat_retention_cb cb, void *arg);

/* Retention floors: per conversation, the first seq retention left (known
 * from tombstones the sweeper wrote and from the streams' metadata after
 * compaction, refreshed every sweep). Inline inbox pointers (which carry a
 * copy of the message) below a conversation's floor are not delivered
 * from their copy but resolved by a read, which finds them gone. A
 * bounded table (CHAT_FLOORS_MAX); past it every inline pointer is
 * resolved by a read. Any thread. */
#define CHAT_FLOORS_MAX (1u << 20)
struct chat_floors;
struct chat_floors *chat_floors_new(void);
void chat_floors_free(struct chat_floors *f);
struct chat_floors *chat_floors_of(const struct chat *c);
/* True when conv_seq of conv may be past retention (do not trust a copy). */
bool chat_floor_below(struct chat_floors *f, const char *conv, size_t len,
		      uint64_t conv_seq);
void chat_floor_set(struct chat_floors *f, const char *conv, size_t len,
		    uint64_t first_seq);
/* Refreshes every floor from the engine's stream metadata (blocking: the
 * sweeper; the admin thread after POST /admin/compact). */
void chat_retention_refresh(struct chat *c);

/* A delivered EVENT of a message deleted for everyone (or of an EDIT of
 * it) carries no content any more: empty body, PARLEY_MSGF_DELETED. A
 * device that syncs after the DELETE never receives the deleted body.
 * In-memory lookup; any thread. */
struct parley_event;
void chat_edit_event_state(struct chat *c, struct parley_event *ev);

/* Deleted messages' content leaves the disk at compaction (chat_edit.c):
 * give chat_scrub_filter / the set to pe_options.compact_filter /
 * compact_filter_arg, attach the set to the service (chat_scrub_attach),
 * and load the stored deletes (chat_scrub_load, blocking). */
#define CHAT_SCRUB_MAX (1u << 21) /* slots: about 1.5 M deleted messages */
struct chat_scrub;
struct chat_scrub *chat_scrub_new(void);
void chat_scrub_free(struct chat_scrub *x);
void chat_scrub_add(struct chat_scrub *x, const char *conv, size_t len,
		    uint64_t seq);
bool chat_scrub_has(struct chat_scrub *x, const char *conv, size_t len,
		    uint64_t seq);
int chat_scrub_filter(void *arg, const void *key, size_t klen,
		      const struct pe_entry *e, uint8_t *out, size_t cap);
void chat_scrub_load(struct chat_scrub *x, struct pe_engine *e);
void chat_scrub_attach(struct chat *c, struct chat_scrub *x);
struct chat_scrub *chat_scrub_of(const struct chat *c);

/* ---- groups (server/chat_group.c) -------------------------------------------------- *
 *
 * A group conversation's id is "g:" + 16 lowercase hex digits, derived by
 * the server from (creator, the creator's 16-byte request id), so a retried
 * GROUP_CREATE names the same group. Its stream c/<conv> holds messages
 * (CHAT_ENT_MSG) and membership events (CHAT_ENT_MEMBER) in one order: the
 * stream order decides every race between a membership change and a send.
 * A member's interval of seqs runs from the event that added them
 * (inclusive) to the event that removed them (inclusive: the removed member
 * still learns of the removal), so:
 *   - the fan-out of seq N goes to the members at N (live or recovered);
 *   - a SEND whose entry lands after its sender's removal is answered
 *     EPERM and is never fanned out nor shown by HISTORY.
 * m/<conv> holds a snapshot of the membership (CHAT_ENT_GSNAP) written by
 * the fan-out of each membership event; chat_open rebuilds memory from the
 * last one plus the events the fan-out cursor does not cover.
 *
 * Roles and who may do what (docs/PROTOCOL.md, Groups):
 *   create: anyone; the creator is the owner.
 *   add: owner or admin (adding as admin: owner only).
 *   remove: owner removes anyone but themself; admin removes plain members.
 *   leave: any member (an owner leaving hands ownership to the earliest
 *          admin, else the earliest member).
 *   set role: owner only (giving OWNER transfers ownership: the old owner
 *             becomes an admin).
 *   info, send, history: members only.
 *   set (GROUP_SET): rename: owner or admin; the history setting: owner
 *             only. The setting in force when HISTORY is read decides what
 *             every member sees (it is not remembered per message).
 */
#define CHAT_GROUP_ID_LEN 18u           /* "g:" + 16 hex */
#define CHAT_GROUP_MAX_DEFAULT 1024u    /* config group_max_members */
#define CHAT_GROUP_MAX_HARD 5000u       /* the largest value it accepts (a
					   group's snapshot fits one entry) */
#define CHAT_GROUP_MAX_TARGETS 256u     /* users named in one change */
#define CHAT_GROUP_HISTORY_ALL 0x01u    /* setting: new members see everything */
#define CHAT_CT_MEMBERSHIP 0xF001u      /* content type of a membership event */

enum chat_role {
	CHAT_ROLE_NONE = 0, /* not a member */
	CHAT_ROLE_MEMBER = 1,
	CHAT_ROLE_ADMIN = 2,
	CHAT_ROLE_OWNER = 3,
};

enum chat_gop {
	CHAT_GOP_CREATE = 1,
	CHAT_GOP_ADD = 2,
	CHAT_GOP_REMOVE = 3,
	CHAT_GOP_LEAVE = 4,
	CHAT_GOP_ROLE = 5,
	CHAT_GOP_SET = 6,    /* name / settings (GROUP_SET) */
};

/* chat_conv_check for 1:1 and groups: 0 when user is a member of conv now,
 * -PARLEY_ENOTFOUND (no such conversation) or -PARLEY_EPERM. */
int chat_conv_access(struct chat *c, const char *conv, size_t len,
		     const char *user, size_t ulen);

/* True iff conv is shaped like a group id (it may still not exist). */
bool chat_conv_is_group(const char *conv, size_t len);

/*
 * Membership questions, for 1:1 ("d:a:b") and group conversations alike.
 * Any thread, never blocking on I/O (memory only; a shared lock).
 *
 * chat_member_role: the user's role now (CHAT_ROLE_NONE = not a member; a
 *   1:1 member is CHAT_ROLE_MEMBER) or -PARLEY_ENOTFOUND (no such group /
 *   not a conversation id).
 * chat_is_member: role >= MEMBER.
 * chat_member_at: was the user a member when entry `seq` of the
 *   conversation was appended (the stream order decides)? For 1:1: member.
 * chat_member_visible_from: the first seq the user may read (1 = the whole
 *   history; the join seq for a "from join" group), 0 if not a member now.
 * chat_members_each: fn(arg, user, ulen, role) for each member at `seq`
 *   (UINT64_MAX = now), in join order, skipping the first `skip`; stops
 *   after `limit` calls (0 = no limit). Returns the number of members at
 *   seq, or -PARLEY_ENOTFOUND; for a group asked about "now" also the
 *   chat_groups_ready errors (-PARLEY_ENOTLEADER / -PARLEY_EAGAIN: this
 *   node's table may be stale, as chat_member_role). fn runs under the
 *   lock: it must not call back into chat.
 */
int chat_member_role(struct chat *c, const char *conv, size_t len,
		     const char *user, size_t ulen);
bool chat_is_member(struct chat *c, const char *conv, size_t len,
		    const char *user, size_t ulen);
bool chat_member_at(struct chat *c, const char *conv, size_t len,
		    const char *user, size_t ulen, uint64_t seq);
uint64_t chat_member_visible_from(struct chat *c, const char *conv,
				  size_t len, const char *user, size_t ulen);
typedef void (*chat_member_fn)(void *arg, const char *user, size_t ulen,
			       int role);
int chat_members_each(struct chat *c, const char *conv, size_t len,
		      uint64_t seq, uint32_t skip, uint32_t limit,
		      chat_member_fn fn, void *arg);

/* A group's name and settings (what CONV_LIST and GROUP_INFO show). */
struct chat_group_meta {
	char name[256];
	uint16_t name_len;
	uint8_t settings;        /* CHAT_GROUP_HISTORY_ALL */
	uint32_t member_count;   /* now */
	uint64_t as_of;          /* seq of the last membership event */
};
/* 0, or -PARLEY_ENOTFOUND. */
int chat_group_meta(struct chat *c, const char *conv, size_t len,
		    struct chat_group_meta *out);

/* GROUP_INFO: fills m (GROUP_INFO_OK) with members [from, from + limit)
 * in join order; their ids are copied into store[cap] (cap >=
 * limit x PARLEY_PROTO_MAX_USER_ID) and m borrows from it and from conv.
 * 0, -PARLEY_ENOTFOUND, -PARLEY_EPERM (the caller is not a member).
 * Memory only, any thread. */
int chat_group_info(struct chat *c, const char *user, size_t ulen,
		    const char *conv, size_t len, uint32_t from, uint16_t limit,
		    struct parley_msg *m, char *store, size_t cap);

/* Has user left conv (removed or left, not back)? 1 with *left_seq = the
 * seq of the REMOVE / LEAVE event that ended their last membership and
 * *members = the group's members right after it; 0 when user is a member
 * now; -PARLEY_ENOTFOUND (no such group, or never a member); the
 * chat_groups_ready errors (a follower). On 0 and 1 also *vis_from: the
 * first seq the user may read of that (current or last) membership under
 * the group's setting now (1 with HISTORY_ALL, else where it began).
 * Memory only, any thread. */
int chat_group_left(struct chat *c, const char *conv, size_t len,
		    const char *user, size_t ulen, uint64_t *left_seq,
		    uint32_t *members, uint64_t *vis_from);

/* A group as a user sees it from its last membership snapshot (the last
 * entry of m/<group>, CHAT_ENT_GSNAP) rather than from memory: what a
 * node that cannot answer from memory (chat_groups_ready fails: a
 * follower, whose table is stale) shows in CONV_LIST. Pure. 0 with *out
 * (left_seq 0: user is a member as of the snapshot, members = its
 * members; else the seq of the REMOVE / LEAVE that ended user's last
 * membership and members = those right after it), -PARLEY_ENOTFOUND
 * (user was never a member), -PARLEY_ECORRUPT. */
struct chat_gsnap_view {
	char name[256];
	uint16_t name_len;
	uint8_t settings;
	uint32_t members;
	uint64_t as_of;
	uint64_t left_seq;
	uint64_t vis_from;      /* as chat_group_left's */
};
int chat_gsnap_view(const uint8_t *p, size_t len, const char *user,
		    size_t ulen, struct chat_gsnap_view *out);

/* Group size limit (config group_max_members); 1..CHAT_GROUP_MAX_HARD. */
void chat_set_group_max(struct chat *c, uint32_t max_members);

/* A membership change. */
struct chat_group_req {
	uint8_t op;                  /* enum chat_gop */
	const char *conv;            /* not for CREATE */
	uint16_t conv_len;
	const char *actor;           /* the authenticated caller */
	uint16_t actor_len;
	uint8_t create_id[16];       /* CREATE: the client's request id */
	const char *name;            /* CREATE: 1..255 bytes UTF-8 */
	uint16_t name_len;
	uint8_t settings;            /* CREATE, SET: CHAT_GROUP_HISTORY_ALL */
	uint8_t set_fields;          /* SET: PARLEY_GSET_NAME (name, 1..255
					bytes UTF-8) | PARLEY_GSET_SETTINGS */
	uint8_t role;                /* ADD: role given; ROLE: the new role */
	uint32_t n;                  /* users (CREATE: initial members besides
					the creator; ADD/REMOVE/ROLE: targets) */
	const struct chat_member *users;
};
struct chat_group_result {
	int err;
	const char *why;            /* a short reason when err != 0 */
	char conv[CHAT_GROUP_ID_LEN + 1];
	uint16_t conv_len;
	uint64_t seq;               /* the membership event's seq */
	bool duplicate;             /* a retried CREATE: the group exists */
};
typedef void (*chat_group_cb)(void *arg, const struct chat_group_result *r);
/*
 * Validates the change against the membership now (roles, size limit,
 * unknown or duplicate users), appends the membership event to c/<conv>
 * and, once durable, applies it and calls cb (engine thread, must not
 * block); the event's fan-out (inbox pointers, list entries for new
 * members, the snapshot) follows like a message's. Returns 0 (cb will
 * run once) or an error (cb will not run, *why says why when given):
 * -PARLEY_EINVAL (bad name, user id, role, or nothing to change),
 * -PARLEY_ENOTFOUND (no such group), -PARLEY_EPERM (not a member / the
 * role does not allow it), -PARLEY_ETOOBIG (over group_max_members or
 * CHAT_GROUP_MAX_TARGETS), -PARLEY_EAGAIN (another change of this group is
 * being stored: retry shortly), -PARLEY_ENOMEM, -PARLEY_EFULL. An ADD
 * whose users are all members already stores nothing and is answered as
 * done (duplicate, seq = the last membership event's): a retry succeeds.
 */
int chat_group_change(struct chat *c, const struct chat_group_req *q,
		      chat_group_cb cb, void *arg, const char **why);

/* A membership event record (payload of CHAT_ENT_MEMBER; also the body
 * of a MEMBERSHIP event / history record, see PROTOCOL.md). name: CREATE
 * and SET: the group's name (SET: name and settings as they are after the
 * event, changed or not); REMOVE and LEAVE: the name when it happened (a
 * removed member's conversation list shows it); ROLE, ADD: empty.
 *   u8 version(1) | u8 op | u8 settings | u8 actor_len | actor |
 *   u16 name_len | name | u16 n | n x (u8 user_len | user | u8 role) */
/* SET events: the settings byte also says what changed (the rest of the
 * byte is the settings after the event). */
#define CHAT_GEV_SET_NAME 0x80u
#define CHAT_GEV_SET_SETTINGS 0x40u
#define CHAT_GEV_SET_MARKS (CHAT_GEV_SET_NAME | CHAT_GEV_SET_SETTINGS)
struct chat_gev {
	uint8_t op, settings;
	const char *actor;
	uint8_t actor_len;
	const char *name;
	uint16_t name_len;
	uint16_t n;
	const uint8_t *targets;     /* n encoded (user, role) pairs */
	uint32_t targets_len;
};
int chat_gev_decode(const uint8_t *p, size_t len, struct chat_gev *out);
/* Iterates targets: returns 1 and fills *user/ulen/role, 0 at the end. */
int chat_gev_next(const struct chat_gev *ev, uint32_t *off, const char **user,
		  uint8_t *ulen, uint8_t *role);


/* ---- read fan-out for large groups (server/chat_fanout_read.c) ------------------------ *
 *
 * A group message whose group has at least group_read_fanout_min members
 * at the message's seq (CHAT_RD_MIN_DEFAULT; 0 = never) is fanned out by
 * READ instead of by WRITE: it is stored once in c/<group>, and its
 * fan-out job (registered, checkpointed and recovered like any other:
 * chat.h, "Recoverable fan-out")
 *   - posts the ready EVENT (inbox_seq 0) to every connection of every
 *     member at the seq that is subscribed (SYNC) now: the live hook
 *     (chat_set_live; the transport's registry, server/live.h);
 *   - and, for each member with no such connection, appends ONE ACTIVITY
 *     pointer (kind PARLEY_EV_ACTIVITY, conv, conv_seq = this message) to
 *     u/<member> unless the member already has one outstanding for the
 *     group: "outstanding" = written by this process and not yet
 *     acknowledged (EVENT_ACK) by any device of the member (the activity
 *     table below, memory only: after a restart every offline member gets
 *     at most one more).
 * Membership events, edits and deletes keep write fan-out in every group
 * (they are rare; the inbox orders them), so only messages change mode,
 * and a group crossing the threshold switches at the exact seq whose
 * membership crosses it (the decision is a function of the membership at
 * the seq: a recovered fan-out decides the same way).
 * Devices learn a read-mode message live, or by GROUP_CATCHUP (a forward
 * read of the group from the device's own position, filtered by the
 * caller's membership at each seq) after an ACTIVITY event or a
 * reconnect; libparley does it and removes duplicates by (conv, seq)
 * (docs/PROTOCOL.md, "Large groups: read fan-out").
 */
#define CHAT_RD_MIN_DEFAULT 100u     /* config group_read_fanout_min */
#define CHAT_ACT_MAX (1u << 20)      /* activity table slots (24 MiB at most) */

/* The activity table (pure, thread-safe): (user, conv) -> the conv_seq
 * of the member's outstanding ACTIVITY pointer. Bounded: when full, a
 * set is not recorded (and answered "write"): the safe direction. */
struct chat_act;
struct chat_act *chat_act_new(uint32_t max_slots);
void chat_act_free(struct chat_act *t);
/* True when (user, conv) had no outstanding pointer: records seq and the
 * caller writes the pointer. False: one is outstanding (coalesced). */
bool chat_act_test_set(struct chat_act *t, const char *user, size_t ulen,
		       const char *conv, size_t clen, uint64_t seq);
/* The pointer (user, conv, seq) was acknowledged: forget it if it is the
 * outstanding one. Returns true when something was forgotten. */
bool chat_act_clear(struct chat_act *t, const char *user, size_t ulen,
		    const char *conv, size_t clen, uint64_t seq);
uint32_t chat_act_count(struct chat_act *t);

/* Read or write fan-out for a group of `members` members at the seq. */
static inline bool chat_rd_is_read(uint32_t min, uint32_t members)
{
	return min != 0 && members >= min;
}

/* The live hook: posts the encoded EVENT frame to every subscribed
 * connection of user and returns how many; 0 = none (the user then gets
 * an ACTIVITY pointer). Called from the fan-out thread. */
typedef unsigned (*chat_live_fn)(void *arg, const char *user, size_t ulen,
				 const uint8_t *frame, uint32_t len);
void chat_set_live(struct chat *c, chat_live_fn fn, void *arg);

/* Early delivery (docs/SERVER.md "Early delivery"): once a 1:1 message, or
 * a message of a group under group_read_fanout_min members at its seq, is
 * durable in c/<conv> (its send callback, on the engine shard, before its
 * inbox appends are even issued), the early hook gets its EVENT (inbox_seq
 * 0, PARLEY_MSGF_EARLY) once per member at its seq and posts it to that user's
 * connections that asked for early EVENTs; returns how many. The inbox
 * pointers follow as always: early EVENTs are optional and the inbox
 * stays the record of what a device has (cursor, receipts, SYNC).
 * NULL (the default) = off. */
typedef unsigned (*chat_early_fn)(void *arg, const char *user, size_t ulen,
				  const uint8_t *frame, uint32_t len,
				  const char *conv, size_t clen,
				  uint64_t conv_seq, uint64_t t_durable_ns);
void chat_set_early(struct chat *c, chat_early_fn fn, void *arg);
void chat_set_group_read_min(struct chat *c, uint32_t min_members);
uint32_t chat_group_read_min(struct chat *c);

/* Live EVENTs to members connected to other nodes (a cluster; docs/
 * CLUSTER.md §3.3, "Live events of large groups"). The conversation's
 * leader runs the read fan-out; its live hook reaches only its own
 * connections. The relay hook gets LIVE payloads (borrowed) for the
 * other nodes, once per read-mode message:
 *   - with a where hook (chat_set_live_where: the presence registry's
 *     knowledge of which other nodes each user is online on), one payload
 *     per node that has at least one member online, naming exactly those
 *     members (also the ones posted here: a user may have devices on two
 *     nodes), sent to that node only; a node with no member online gets
 *     nothing (chat_rd_stats: `relayed` counts payloads sent,
 *     `relay_skipped` members online on no other node);
 *   - without one, a single payload naming the members this node posted
 *     nothing to, to every other node (to = 0).
 * Best effort: members not posted here also get their ACTIVITY pointer as
 * before, so a relay that is lost (or a user whose ONLINE has not reached
 * this node yet) costs a catch-up, never a message; a node that receives
 * one posts the EVENT to its own subscribed connections of those members
 * (chat_rd_live_recv). A device that gets both the live EVENT and the
 * ACTIVITY pointer reads nothing twice: libparley removes duplicates by
 * (conv, seq), as for a local live post.
 * Payload: u32 nusers | nusers x (u8 ulen | user) | one EVENT frame.
 * The fan-out thread calls relay and where; recv from any thread. */
#define CHAT_RD_LIVE_HDR 4u
#define CHAT_RD_RELAY_NODES 8u /* other nodes one user is online on */
typedef void (*chat_live_relay_fn)(void *arg, uint64_t to,
				   const uint8_t *payload, uint32_t len);
void chat_set_live_relay(struct chat *c, chat_live_relay_fn fn, void *arg);
/* The other nodes user is online on: fills nodes (at most cap) and
 * returns how many (0: none, or unknown). */
typedef unsigned (*chat_live_where_fn)(void *arg, const char *user,
				       size_t ulen, uint64_t *nodes,
				       unsigned cap);
void chat_set_live_where(struct chat *c, chat_live_where_fn fn, void *arg);
/* A LIVE payload from another node: posts its EVENT through the live
 * hook to each named member's subscribed connections; returns how many
 * posts, or -PARLEY_EPROTO (a bad payload: nothing posted). */
int chat_rd_live_recv(struct chat *c, const uint8_t *p, uint32_t n);
/* The parts of a LIVE payload p[0..n) (pure: chat_rd_live_recv's check,
 * callable without a chat service, tests/fuzz/fuzz_peer.c): 0 with
 * *nusers user records (u8 ulen | user, from p + CHAT_RD_LIVE_HDR) and
 * the EVENT frame at p + *frame_off to the end; -PARLEY_EPROTO when a
 * user is empty, longer than PARLEY_PROTO_MAX_USER_ID or past the end,
 * there are more than CHAT_GROUP_MAX_HARD, or the rest is not one whole
 * EVENT frame by its header. */
static inline int chat_rd_live_decode(const uint8_t *p, uint32_t n,
				      uint32_t *nusers, uint32_t *frame_off)
{
	if (n < CHAT_RD_LIVE_HDR)
		return -PARLEY_EPROTO;
	uint32_t nu = le_get32(p);
	uint32_t off = CHAT_RD_LIVE_HDR;
	if (nu > CHAT_GROUP_MAX_HARD)
		return -PARLEY_EPROTO;
	for (uint32_t i = 0; i < nu; i++) {
		if (off >= n || p[off] == 0 ||
		    p[off] > PARLEY_PROTO_MAX_USER_ID || n - off - 1 < p[off])
			return -PARLEY_EPROTO;
		off += 1u + p[off];
	}
	/* one whole EVENT frame: u32 length (of what follows it) | u16 type
	 * | u16 flags | u32 request_id | payload */
	uint32_t fl = n - off;
	if (fl < PARLEY_PROTO_HEADER_SIZE || le_get32(p + off) != fl - 4 ||
	    le_get16(p + off + 4) != PARLEY_T_EVENT)
		return -PARLEY_EPROTO;
	*nusers = nu;
	*frame_off = off;
	return 0;
}

/* chat.c's fan-out: 1 = entry `ent` of group conv was fanned out by read
 * (live posts issued; ACTIVITY appends given to issue like the write
 * path's), 0 = not a read-mode entry (write fan-out), < 0 an error. */
struct chat_fanout_item;
int chat_rd_fanout(struct chat *c, const char *conv, size_t len,
		   const struct pe_entry *ent,
		   int (*issue)(void *arg, const struct chat_fanout_item *it,
				const uint8_t *payload, uint32_t plen),
		   void *arg);

/* The receipts' ack path: a device of user acknowledged an ACTIVITY
 * pointer (conv, conv_seq). Any thread. */
void chat_activity_acked(struct chat *c, const char *user, size_t ulen,
			 const char *conv, size_t clen, uint64_t conv_seq);

/* GROUP_CATCHUP: the messages of group conv with seq in [from, from +
 * limit) that user was a member for (and whose sender was a member at
 * them), in their current state (edits folded), oldest first, as a
 * GROUP_CATCHUP_OK page (struct parley_history_page: next_before_seq =
 * the next from; PARLEY_HISTF_END when it reached the group's last seq).
 * cb on an engine thread. 0, or -PARLEY_ENOTFOUND (not a group),
 * -PARLEY_EPERM (user is not a member now and was not at from),
 * -PARLEY_EINVAL, -PARLEY_ENOMEM, -PARLEY_EFULL (cb will not run). */
int chat_group_catchup(struct chat *c, const char *user, size_t ulen,
		       const char *conv, size_t clen, uint64_t from,
		       uint16_t limit, uint32_t max_frame, chat_history_cb cb,
		       void *arg);

struct chat_rd_stats {
	uint64_t msgs;        /* messages fanned out by read */
	uint64_t live;        /* EVENTs posted live to connections */
	uint64_t activity;    /* ACTIVITY pointers appended */
	uint64_t coalesced;   /* offline members skipped: one outstanding */
	uint64_t catchups;    /* GROUP_CATCHUP pages served */
	uint64_t relayed;     /* LIVE payloads handed to the relay hook */
	uint64_t relay_skipped; /* members online on no other node (where
				   hook): named in no LIVE payload */
	uint64_t live_remote; /* of `live`: posted for another node's fan-out */
	uint64_t live_in;     /* LIVE payloads received from other nodes */
	uint64_t live_in_idle; /* of live_in: none of its members had a
				  subscribed connection here */
	uint32_t outstanding; /* activity table entries */
};
void chat_rd_get_stats(struct chat *c, struct chat_rd_stats *out);

#endif /* PARLEYD_CHAT_H */
