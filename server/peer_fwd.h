/*
 * peer_fwd.h — engine appends (and deletes) forwarded between cluster nodes
 * (docs/CLUSTER.md §3.3, "Forwarded appends").
 *
 * A node that does not lead a partition cannot append to it; the chat
 * layer's writes to partitions led elsewhere (a conversation leader's
 * fan-out to members' inboxes and lists, receipts, cursors, ...) are
 * forwarded to the leader over the peer link and executed there with
 * pe_append: the same key, producer id (idempotency) and expected-seq
 * precondition, so a retry anywhere is deduplicated. The result (seq,
 * ts, duplicate, or the error) comes back to the caller's callback, and
 * only after the leader's pe_append callback ran: durable before ack
 * holds across the hop (the leader's callback runs after its commit).
 *
 * Why a server-side layer and not a hook inside the engine: the engine
 * stays transport-free and its shard loop (part_raft.c) untouched; the
 * per-request state (ids, deadlines, the link) belongs to the node thread
 * that owns the transport (peer_node.c); and the only caller that writes
 * across partitions is the chat layer, which picks the route per append
 * from the published Raft state (chat_append in chat.c).
 *
 * CONTRACT
 *   1. fwd_append (any thread, never blocks): copies the request, queues
 *      it for node `to`. 0 = the callback will run exactly once;
 *      -PARLEY_EFULL = FWD_MAX_INFLIGHT requests to `to` are not answered
 *      yet (back off and retry); -PARLEY_ECLOSED = no link to `to` is up
 *      (or `to` is this node, unknown, or the forwarder stopped): the
 *      caller appends locally instead (and gets NOTLEADER with a hint);
 *      -PARLEY_EINVAL / -PARLEY_ETOOBIG: a request pe_append would refuse.
 *   2. The callback runs on the node thread (fwd_poll / fwd_on_frame /
 *      fwd_link_down), never inside fwd_append, with:
 *        the leader's pe_append result (err 0, seq, count, ts, last_seq,
 *        duplicate; or -PARLEY_ESEQ, -PARLEY_ENOTLEADER + leader hint —
 *        the leader lost its leadership: a forwarded request is never
 *        forwarded again —, -PARLEY_EAGAIN, ...); the leader's refusals
 *        for room (-PARLEY_EFULL, -PARLEY_ENOMEM, -PARLEY_ECLOSED) arrive
 *        as -PARLEY_EAGAIN;
 *        -PARLEY_EAGAIN when no answer came within FWD_TIMEOUT_MS of the
 *        send, when the link to `to` went down with it in flight, or when
 *        the frame could not be queued on the link. The append may or may
 *        not have happened: retry with the same producer id.
 *      -PARLEY_ECLOSED when the forwarder stops with it pending.
 *   3. The executing side answers every request it decoded exactly once
 *      (its pe_append's callback, or at once when pe_append refused).
 *      Order: requests to one node leave in submission order on one TCP
 *      link and are passed to pe_append in that order, so appends to one
 *      stream keep their order (an inbox's pointers of one conversation).
 *   4. Bounds: FWD_MAX_INFLIGHT unanswered requests per destination;
 *      frames of at most FWD_FRAME_BYTES (one request may be larger, up to
 *      the link's max frame); FWD_TIMEOUT_MS per request.
 *
 * Frames (payload of PEER_FRAME_APPEND_REQ / PEER_FRAME_APPEND_RES, little
 * endian; the transport checks the header, these codecs the rest):
 *   REQ: u32 n | n x { u32 len | u64 id | u8 op | u8 klen | key | body }
 *        (len = the record's size after the len field)
 *        op 0, append: 16 producer | u64 expected_last_seq | u16 count |
 *                      count x { u16 type | u16 flags | u32 len | bytes }
 *        op 1, delete: u64 through
 *   RES: u32 n | n x { u64 id | i32 err | u64 seq | u32 count | u64 ts |
 *        u64 last_seq | u8 duplicate | u64 leader }
 *        (a delete's first_seq rides in seq)
 *
 * Threads: fwd_append and the executing side's completions from any
 * thread (under the forwarder's mutex); everything else on the node
 * thread that owns the transport.
 */
#ifndef PARLEYD_PEER_FWD_H
#define PARLEYD_PEER_FWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley_engine.h"

#define FWD_MAX_INFLIGHT 4096u       /* unanswered requests per destination */
#define FWD_TIMEOUT_MS 5000u         /* per request, from its send */
#define FWD_FRAME_BYTES (256u << 10) /* target size of one batch frame */
#define FWD_MAX_NODES 64u            /* destinations / sources tracked */
#define FWD_RES_BYTES 49u            /* one RES record */

struct fwd;

/* Sends one frame to node `to` (peer_send_app): 0 or a negative error. */
typedef int (*fwd_send_fn)(void *arg, uint64_t to, uint8_t type,
			   const uint8_t *payload, uint32_t len);
/* Wakes the node thread (an fwd_append or a completion queued work). */
typedef void (*fwd_wake_fn)(void *arg);
/* Is the link to `node` up now? (fwd_append's -PARLEY_ECLOSED) */
typedef bool (*fwd_up_fn)(void *arg, uint64_t node);

struct fwd_config {
	uint64_t self;          /* this node's id */
	fwd_send_fn send;
	fwd_wake_fn wake;
	fwd_up_fn up;           /* NULL = always up */
	void *arg;
	uint32_t timeout_ms;    /* 0 = FWD_TIMEOUT_MS */
	uint32_t max_frame;     /* largest payload the links take; 0 = 4 MiB */
};

struct fwd_stats {
	uint64_t sent;          /* requests sent */
	uint64_t answered;      /* results received and delivered */
	uint64_t timeouts;      /* failed: no answer in time */
	uint64_t link_failed;   /* failed: link down / frame not queued */
	uint64_t late;          /* results for requests no longer waiting */
	uint64_t executed;      /* requests executed here for other nodes */
	uint64_t bad_frames;    /* frames that did not decode (ignored) */
	uint64_t lat_ns_sum;    /* send -> result, over `answered` */
	uint64_t lat_ns_max;
};

int fwd_new(const struct fwd_config *cfg, struct fwd **out);
/* Fails every pending request with -PARLEY_ECLOSED (callbacks run here)
 * and frees. After the engine is closed (its completions may still
 * reference the forwarder until then). */
void fwd_free(struct fwd *f);
/* The engine the executing side appends to (node thread, before the
 * first frame; NULL: requests are answered -PARLEY_EAGAIN). */
void fwd_set_engine(struct fwd *f, struct pe_engine *e);

/* Contract 1. Any thread. */
int fwd_append(struct fwd *f, uint64_t to, const struct pe_append_req *q,
	       pe_append_cb cb, void *arg);
/* The same for pe_delete (key, entries through `through`): executed on
 * `to` with pe_delete, the result (first_seq, last_seq, or the error,
 * NOTLEADER with the leader's hint) to cb under contract 2's rules. */
int fwd_delete(struct fwd *f, uint64_t to, const void *key, size_t klen,
	       uint64_t through, pe_delete_cb cb, void *arg);

/* Node thread, every round: sends what was queued (requests and the
 * executing side's results, batched per node), fails requests past their
 * deadline. now_ms: CLOCK_MONOTONIC ms (injected for tests). */
void fwd_poll(struct fwd *f, uint64_t now_ms);
/* Node thread: a PEER_FRAME_APPEND_REQ / _RES payload from node `from`. */
void fwd_on_frame(struct fwd *f, uint64_t from, uint8_t type,
		  const uint8_t *payload, uint32_t len, uint64_t now_ms);
/* Node thread: the link to `node` went down: its requests fail AGAIN. */
void fwd_link_down(struct fwd *f, uint64_t node);

/* ---- the two codecs (pure: the forwarder's own, and the fuzz target's) ---- */

enum fwd_op { FWD_OP_APPEND = 0, FWD_OP_DELETE = 1 };

/* One REQ record: id, op, q.key / q.klen (both ops); an append's producer,
 * expected_last_seq and entries; a delete's `through`. */
struct fwd_rec {
	uint64_t id;
	uint8_t op;
	struct pe_append_req q;
	uint64_t through;
};
/* The bytes of r's record, its u32 length included. */
size_t fwd_rec_size(const struct fwd_rec *r);
/* r's record (u32 length first) into out[0..fwd_rec_size(r)). */
void fwd_rec_encode(uint8_t *out, const struct fwd_rec *r);
/* One record's bytes after its u32 length, p[0..len): 0 with r filled
 * (key and payloads borrow from p, the entries in in[]), or
 * -PARLEY_EPROTO (short, trailing bytes, unknown op, empty key, an entry
 * count of 0 or over PE_MAX_BATCH, an entry longer than the record). */
int fwd_rec_decode(const uint8_t *p, size_t len, struct fwd_rec *r,
		   struct pe_input in[PE_MAX_BATCH]);

/* One RES record's result (a delete's first_seq rides in seq). */
struct fwd_res {
	int err;
	uint64_t seq, ts_ms, last_seq, leader;
	uint32_t count;
	bool duplicate;
};
void fwd_res_encode(uint8_t out[FWD_RES_BYTES], uint64_t id,
		    const struct fwd_res *r);
void fwd_res_decode(const uint8_t b[FWD_RES_BYTES], uint64_t *id,
		    struct fwd_res *r);
/* An APPEND_RES payload: its record count (the records at p + 4 + i *
 * FWD_RES_BYTES), or -PARLEY_EPROTO when the length does not match it. */
int fwd_res_count(const uint8_t *p, uint32_t len);
/* Any thread. */
void fwd_get_stats(struct fwd *f, struct fwd_stats *out);
/* Requests submitted and not yet answered, all destinations. Any thread. */
uint32_t fwd_pending(struct fwd *f);

#endif /* PARLEYD_PEER_FWD_H */
