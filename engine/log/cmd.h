/*
 * cmd.h — a partition's log commands and their one codec (private to
 * engine/).
 *
 * A command is what a partition's log carries: the body of a WAL record
 * (whose header gives its kind as the record type, and its partition, term
 * and index) and the payload of the partition's Raft entries
 * (RAFT_ENTRY_NORMAL: u8 kind | body, see log/part_raft.c). Applying commands in log order (part_apply.c) is the
 * partition state machine.
 *
 * Bodies (little-endian):
 *   CMD_APPEND  u8 klen | key | producer[16] | u64 ts | u64 expected |
 *               u32 count | count x (u16 type | u16 flags | u32 len | bytes)
 *   CMD_DELETE  u8 klen | key | u64 through
 *               (UINT64_MAX = the whole stream as of the moment it applies)
 *
 * The timestamp of an APPEND is stamped by whoever puts the command into
 * the log (the shard today, the Raft leader when it proposes) with
 * cmd_stamp_ts, so applying it never reads a clock.
 *
 * Contract
 *   1. cmd_decode validates the whole body (lengths, counts, every entry)
 *      before returning 0: a decoded command never over-reads and applies
 *      all or nothing. Anything else is -PARLEY_ECORRUPT. It bounds the
 *      body by CMD_MAX_BYTES and each entry only by the body: an entry of
 *      a log written before PE_MAX_PAYLOAD was derived from the Raft
 *      limit (up to 1 MiB under a short key) still decodes.
 *   1a. cmd_append_size / cmd_append_encode refuse what could not be
 *      proposed (the public limits, parley_engine.h): whatever they
 *      encode, the Raft core takes.
 *   2. Encoding then decoding gives back every field; decoding a valid body
 *      and encoding its fields gives back the same bytes (one encoding per
 *      command: the codec is canonical) — for every body within the
 *      limits of 1a (a legacy one over them decodes but is not encoded).
 *   3. Pure: no allocation, no I/O, no clock; any thread.
 */
#ifndef PARLEY_ENGINE_CMD_H
#define PARLEY_ENGINE_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley_common.h"
#include "parley_engine.h"
#include "raft.h"
#include "wal.h"

#define CMD_APPEND 1u
#define CMD_DELETE 2u
/* The Raft core's own entries, as the WAL records them (no body for a
 * NOOP; a CONF body is a raft_conf_change). Applying them changes no
 * partition state: they only take their index. */
#define CMD_NOOP 3u
#define CMD_CONF 4u

/*
 * Sizes. One command travels as one Raft entry, u8 kind | body, so the
 * Raft core's entry limit bounds the body: CMD_MAX_BYTES is that limit
 * less the kind byte. The public limits of parley_engine.h (PE_MAX_COMMAND,
 * PE_APPEND_OVERHEAD, PE_ENTRY_OVERHEAD, PE_DELETE_BYTES, PE_MAX_PAYLOAD)
 * count the kind byte too; the static asserts below tie them to this
 * codec and to the Raft core, so the limits cannot drift apart again
 * (they did: an append could pass pe_append and fail later at propose).
 */
#define CMD_KIND_BYTES 1u          /* the entry's u8 kind before the body */
#define CMD_MAX_BYTES (PE_MAX_COMMAND - CMD_KIND_BYTES) /* one body */
#define CMD_APPEND_HDR(klen) (1u + (klen) + PE_PRODUCER_LEN + 8u + 8u + 4u)
#define CMD_ENTRY_HDR 8u
#define CMD_DELETE_BYTES(klen) (1u + (klen) + 8u)

_Static_assert(PE_MAX_COMMAND == RAFT_MAX_ENTRY_BYTES,
	       "one command is one Raft entry");
_Static_assert(CMD_APPEND_HDR(1u) + CMD_KIND_BYTES == PE_APPEND_OVERHEAD(1u) &&
		       CMD_APPEND_HDR(PE_MAX_KEY) + CMD_KIND_BYTES ==
			       PE_APPEND_OVERHEAD(PE_MAX_KEY),
	       "PE_APPEND_OVERHEAD is the APPEND header plus the kind byte");
_Static_assert(CMD_ENTRY_HDR == PE_ENTRY_OVERHEAD, "per-entry overhead");
_Static_assert(CMD_DELETE_BYTES(1u) + CMD_KIND_BYTES == PE_DELETE_BYTES(1u) &&
		       CMD_DELETE_BYTES(PE_MAX_KEY) + CMD_KIND_BYTES ==
			       PE_DELETE_BYTES(PE_MAX_KEY),
	       "PE_DELETE_BYTES is the DELETE body plus the kind byte");
_Static_assert(PE_DELETE_BYTES(PE_MAX_KEY) <= PE_MAX_COMMAND,
	       "every delete fits");
_Static_assert(PE_APPEND_BYTES(PE_MAX_KEY, 1u, PE_MAX_PAYLOAD) == PE_MAX_COMMAND,
	       "one entry of PE_MAX_PAYLOAD fits under the longest key");
_Static_assert(CMD_MAX_BYTES <= WAL_MAX_BODY, "a command fits a WAL record");

/* A decoded command. Pointers point into the decoded body. */
struct cmd {
	uint16_t kind;             /* CMD_APPEND or CMD_DELETE */
	const uint8_t *key;
	uint8_t klen;
	/* CMD_APPEND */
	const uint8_t *producer;   /* PE_PRODUCER_LEN bytes; all zero = none */
	uint64_t ts;
	uint64_t expected;         /* PE_NO_EXPECT or the expected last seq */
	uint32_t count;            /* 1..PE_MAX_BATCH */
	const uint8_t *entries;    /* the encoded entries, validated */
	uint32_t entries_len;
	/* CMD_DELETE */
	uint64_t through;
};

/* One entry of an APPEND, as cmd_entry_next yields it. */
struct cmd_entry {
	uint16_t type;
	uint16_t flags;
	uint32_t len;
	const uint8_t *payload;
};

struct cmd_entry_iter {
	struct le_reader r;
	uint32_t left;
};

/* Bytes an APPEND body of these entries takes (without the kind byte), or
 * 0 when it cannot be proposed (bad key length, count, an entry over
 * PE_MAX_PAYLOAD, or a body over CMD_MAX_BYTES: the entry over
 * PE_MAX_COMMAND). */
size_t cmd_append_size(size_t klen, const struct pe_input *in, uint32_t count);
/* Encodes an APPEND into buf (cap >= cmd_append_size). Returns the bytes
 * written or -PARLEY_EINVAL / -PARLEY_ETOOBIG. */
int64_t cmd_append_encode(uint8_t *buf, size_t cap, const void *key,
			  size_t klen, const uint8_t producer[PE_PRODUCER_LEN],
			  uint64_t ts, uint64_t expected,
			  const struct pe_input *in, uint32_t count);
/* Encodes a DELETE (cap >= CMD_DELETE_BYTES(klen)). Returns bytes or
 * -PARLEY_EINVAL. */
int64_t cmd_delete_encode(uint8_t *buf, size_t cap, const void *key,
			  size_t klen, uint64_t through);

/* Decodes and validates a body of the given kind. 0 or -PARLEY_ECORRUPT. */
int cmd_decode(uint16_t kind, const uint8_t *body, size_t len, struct cmd *out);

/* Iterates a decoded APPEND's entries (never fails on a decoded one). */
void cmd_entry_iter_init(struct cmd_entry_iter *it, const struct cmd *c);
bool cmd_entry_next(struct cmd_entry_iter *it, struct cmd_entry *out);

/* Writes the timestamp into an encoded APPEND body (the proposer's stamp).
 * The body must be a valid APPEND. */
void cmd_stamp_ts(uint8_t *body, size_t len, uint64_t ts);

#endif /* PARLEY_ENGINE_CMD_H */
