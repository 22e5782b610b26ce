/*
 * raft_codec.h — the wire encoding of Raft messages (struct raft_msg,
 * engine/raft.h) between two nodes. A pure codec: no I/O, no clock, no
 * allocation; decode returns bytes consumed, 0 for "incomplete, read more",
 * or a negative -PARLEY_E* error.
 *
 * One frame carries a BATCH of 1..RAFT_CODEC_MAX_BATCH messages that all go
 * from one node to one other node, for any groups. That is how multi-Raft
 * heartbeats are coalesced: a node sends one frame per peer per tick with the
 * HEARTBEAT (or HEARTBEAT_RESP) of every group the two share, and `from`/`to`
 * are written once per frame. A single message is a batch of one.
 *
 * Frame (all integers little-endian):
 *
 *   off  size
 *   0    u32  length     bytes after this field; the frame is 4 + length
 *   4    u8   version    RAFT_CODEC_VERSION
 *   5    u8   kind       RAFT_CODEC_KIND_BATCH (the only kind so far)
 *   6    u16  flags      0 (reserved)
 *   8    u32  hcheck     low 32 bits of xxh3(bytes 0..7, RAFT_CODEC_SEED_HDR)
 *   12        body       see below
 *   end-8 u64 csum       xxh3(bytes 0..end-9, RAFT_CODEC_SEED_FRAME)
 *
 * The header check lets a receiver refuse a damaged length as soon as it has
 * 12 bytes, instead of waiting for (or buffering) bytes that never come.
 * These 12 bytes keep this layout in every version, so that a peer speaking
 * another version gets -PARLEY_EVERSION, not -PARLEY_ECORRUPT.
 *
 * Body:
 *   u64 from | u64 to | u16 n | n x message      (from, to != 0; 1 <= n)
 * Message:
 *   u8 type | u16 flags | u8 mask | one u64 per set bit of mask, in order:
 *     bit 0 group, 1 term, 2 index, 3 log_term, 4 commit, 5 hint, 6 ctx,
 *     7 offset
 *   A field is present iff it is nonzero (absent fields decode as 0; a
 *   present zero is refused, so every message has exactly one encoding).
 *   Then, by type:
 *   APPEND:                 u16 n_entries, n_entries x entry
 *     entry:                u64 term | u64 index | u64 csum | u8 type |
 *                           u32 len | len bytes data
 *   SNAPSHOT, SNAPSHOT_RESP: snapshot meta, then u32 chunk_len | chunk
 *     meta:                 u64 index | u64 term | u64 size | u64 csum |
 *                           u64 conf.max_id | u8 conf.n |
 *                           conf.n x (u64 id | u8 role)
 *   other types:            nothing more
 *
 * Invariants:
 *   1. Decoding never reads outside [buf, buf+len) nor past the frame, and
 *      never allocates: counts and lengths are checked against the named
 *      limits below and against the bytes left before use.
 *   2. Decoded arrays (the messages, each APPEND's entries) are carved from
 *      a caller-provided arena of fixed size (struct raft_codec_arena); when
 *      it is too small the decode fails with -PARLEY_EFULL and nothing else
 *      happens. Entry data and snapshot chunks are BORROWED from the input
 *      buffer (valid while it is) unless RAFT_CODEC_COPY asks to copy them
 *      into the arena too (then the messages outlive the input buffer).
 *   3. The encoder validates exactly what the decoder validates, so anything
 *      encoded decodes to an equal message and re-encodes to the same bytes.
 *      Fields a type cannot carry (entries outside APPEND, snapshot meta or
 *      chunk outside SNAPSHOT/SNAPSHOT_RESP) must be zero, or the encode
 *      fails with -PARLEY_EINVAL rather than dropping them silently.
 *   4. Structural checks only: the codec does not check Raft semantics
 *      (entry index continuity, terms, chunk offsets vs snapshot size, entry
 *      checksums). The entry checksum travels unchanged so the receiving
 *      core and storage verify it end to end; the frame checksum covers the
 *      transport.
 *
 * Ownership: the caller owns every buffer and the arena; decoded structs
 * borrow from them. Threads: reentrant, no globals.
 */
#ifndef PARLEY_RAFT_CODEC_H
#define PARLEY_RAFT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "parley_common.h"
#include "raft.h"

#define RAFT_CODEC_VERSION 1
#define RAFT_CODEC_KIND_BATCH 1
#define RAFT_CODEC_HEADER_BYTES 12u
#define RAFT_CODEC_TRAILER_BYTES 8u
#define RAFT_CODEC_SEED_HDR 0x5241465448445231ull   /* "RAFTHDR1" */
#define RAFT_CODEC_SEED_FRAME 0x52414654464d5231ull /* "RAFTFMR1" */

/* Whole-frame size limits (header and trailer included). A receiver passes
 * its own max_frame (0 = the default); nobody accepts more than HARD. */
#define RAFT_CODEC_MAX_FRAME_DEFAULT (4u << 20)
#define RAFT_CODEC_MAX_FRAME_HARD (64u << 20)
/* Messages in one frame (e.g. coalesced heartbeats of 4096 groups). */
#define RAFT_CODEC_MAX_BATCH 4096u
/* Entries per APPEND, bytes per entry and per chunk: raft.h's limits. */
#define RAFT_CODEC_MAX_ENTRIES RAFT_MAX_MSG_ENTRIES
#define RAFT_CODEC_MAX_ENTRY_BYTES RAFT_MAX_ENTRY_BYTES
#define RAFT_CODEC_MAX_CHUNK_BYTES RAFT_MAX_CHUNK_BYTES

/* Smallest encodings, used to refuse counts the bytes left cannot hold. */
#define RAFT_CODEC_BODY_MIN 18u   /* from, to, n */
#define RAFT_CODEC_MSG_MIN 4u     /* type, flags, mask */
#define RAFT_CODEC_ENTRY_MIN 29u  /* term, index, csum, type, len */
#define RAFT_CODEC_FRAME_MIN                                                   \
	(RAFT_CODEC_HEADER_BYTES + RAFT_CODEC_BODY_MIN + RAFT_CODEC_MSG_MIN +  \
	 RAFT_CODEC_TRAILER_BYTES)

/* Decode flags. */
#define RAFT_CODEC_COPY 0x1u /* copy entry data and chunks into the arena */

/*
 * A bump allocator over caller memory. Decode carves from buf[used..cap)
 * (8-byte aligned) and never frees; reset `used` to 0 to reuse it once the
 * decoded messages are no longer needed.
 */
struct raft_codec_arena {
	void *buf;
	size_t cap;
	size_t used;
};

static inline void raft_codec_arena_init(struct raft_codec_arena *a, void *buf,
					 size_t cap)
{
	a->buf = buf;
	a->cap = cap;
	a->used = 0;
}

/* Arena bytes that always suffice to decode a frame of n_msgs messages
 * holding n_entries entries in all, plus copy_bytes when RAFT_CODEC_COPY is
 * given (copy_bytes <= the frame's size is always enough). */
#define RAFT_CODEC_ARENA_BYTES(n_msgs, n_entries, copy_bytes)                  \
	((size_t)(n_msgs) * sizeof(struct raft_msg) +                          \
	 (size_t)(n_entries) * sizeof(struct raft_entry) +                     \
	 (size_t)(n_msgs) * 8u + (size_t)(n_entries) * 8u +                    \
	 (size_t)(copy_bytes) + 8u)
/* Enough for any frame carrying ONE message, without RAFT_CODEC_COPY. */
#define RAFT_CODEC_ARENA_ONE RAFT_CODEC_ARENA_BYTES(1, RAFT_CODEC_MAX_ENTRIES, 0)

/*
 * Encoded size of a frame carrying msgs[0..n): > 0, or -PARLEY_EINVAL (a
 * field breaks a limit, messages of different node pairs, node id 0,
 * n == 0 or > RAFT_CODEC_MAX_BATCH) or -PARLEY_ETOOBIG (> RAFT_CODEC_MAX_FRAME_HARD).
 */
int raft_codec_size(const struct raft_msg *msgs, uint32_t n);

/*
 * Encodes msgs[0..n) (all with the same from and to) as one frame into
 * buf[0..cap). Returns the frame length, -PARLEY_ETOOBIG when it does not
 * fit in cap (or exceeds RAFT_CODEC_MAX_FRAME_HARD), or -PARLEY_EINVAL.
 * Never writes at or past cap; buf may hold garbage on error.
 */
int raft_codec_encode(uint8_t *buf, size_t cap, const struct raft_msg *msgs,
		      uint32_t n);

/*
 * Checks a frame's header at buf without decoding the body. Returns the
 * whole frame length when the header is valid and the entire frame is in
 * buf (its checksum is NOT verified), 0 when more bytes are needed, or:
 *   -PARLEY_ECORRUPT  header check mismatch (the stream is not trustworthy)
 *   -PARLEY_EVERSION  unknown version
 *   -PARLEY_EPROTO    unknown kind, nonzero flags, impossible length
 *   -PARLEY_ETOOBIG   frame longer than max_frame (0 = default, capped at HARD)
 * A receiver that gets -PARLEY_EFULL from raft_codec_decode can use this to
 * skip the frame.
 */
int raft_codec_frame_len(const uint8_t *buf, size_t len, uint32_t max_frame);

/*
 * Decodes one frame from buf[0..len). On success returns the bytes consumed
 * (the frame length) and sets *msgs to an arena array of *n messages (each
 * with from/to set from the frame). Returns 0 when the frame is incomplete
 * (nothing is consumed; *msgs and the arena untouched), or a negative code:
 * those of raft_codec_frame_len, -PARLEY_ECORRUPT (checksum mismatch),
 * -PARLEY_EPROTO (malformed body: bad count, type, flags, mask, length,
 * trailing bytes), -PARLEY_EFULL (the arena is too small; a->used is left
 * as it was). flags: 0 or RAFT_CODEC_COPY. a, msgs and n must not be NULL
 * (-PARLEY_EINVAL).
 */
int raft_codec_decode(const uint8_t *buf, size_t len, uint32_t max_frame,
		      struct raft_codec_arena *a, unsigned flags,
		      struct raft_msg **msgs, uint32_t *n);

#endif /* PARLEY_RAFT_CODEC_H */
