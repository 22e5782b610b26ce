/*
 * presence_relay.h — the payload of the peer frame PEER_FRAME_PRES
 * (peer.h): presence and typing of the users connected to one node,
 * relayed to the other nodes of a cluster (docs/CLUSTER.md §3.3,
 * "Presence and typing across nodes"). Pure encode / decode, no I/O.
 *
 * Kinds:
 *   ONLINE   users that are online on the sender (a transition, or part
 *            of a whole online set: to a node whose link comes up, after
 *            RESEND, after a payload could not be queued, and every
 *            PRESENCE_SET_MS); arg = the sender's set generation now (0:
 *            before its first set, or a sender built before generations,
 *            whose entries expire after presence_ttl_ms as then). The
 *            receiver keeps (user, sender, generation) until OFFLINE, the
 *            link to the sender going down, a SET_END that does not
 *            include it, or PRESENCE_REMOTE_TTL_MS without a refresh.
 *   OFFLINE  users whose last session on the sender ended.
 *   TYPING_REQ  user started / stopped typing in group conv on a node
 *            that does not lead the group's partition: the node that does
 *            (it alone answers chat_member_role) checks membership,
 *            coalesces and fans out; the others drop it.
 *   TYPING   a TYPING_PUSH (conv, typer, started, ttl_ms) for the listed
 *            users' sessions on the receiver (the members the sender knows
 *            to be online there); never relayed further.
 *   HIDDEN   user's presence flags changed (PRESENCE_SET), flags.
 *   RESEND   "send me your online set" (the sender's link came up or its
 *            registry started: what it was sent before may be lost).
 *   SET_END  the whole online set of generation arg was sent: the
 *            receiver drops the sender's users whose generation is older
 *            (an OFFLINE lost, or a user the set no longer names).
 *   TYPING_REFUSED  the answer of the node that leads a group to a
 *            TYPING_REQ STARTED it refused: user may not type in conv;
 *            arg = the error (PARLEY_EPERM not a member, PARLEY_ENOTFOUND
 *            no such group). Sent to the typist's node only, which
 *            answers the typing connection ERROR (request id 0), as a
 *            single node does, and forgets the indicator.
 *
 * Wire (little-endian): u8 version (PRELAY_VERSION) | u8 kind |
 * u8 started | u32 arg (TYPING: ttl_ms, HIDDEN: flags, TYPING_REFUSED:
 * the error, ONLINE / SET_END: the set generation, else 0) |
 * u8 clen | conv | u8 ulen | user | u16 count | count x (u8 len | id).
 * Bounds: conv <= PARLEY_PROTO_MAX_CONV_ID, ids <= PARLEY_PROTO_MAX_USER_ID
 * and non-empty (user may be empty for ONLINE / OFFLINE), count <=
 * PRELAY_USERS_MAX; so a payload is at most PRELAY_MAX bytes.
 * Threads: none (pure).
 */
#ifndef PARLEYD_PRESENCE_RELAY_H
#define PARLEYD_PRESENCE_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "parley_proto.h"

#define PRELAY_VERSION 1u
#define PRELAY_USERS_MAX 64u /* ids per payload */
#define PRELAY_HDR 11u       /* the fixed bytes */
#define PRELAY_MAX                                                      \
	(PRELAY_HDR + PARLEY_PROTO_MAX_CONV_ID + PARLEY_PROTO_MAX_USER_ID + \
	 PRELAY_USERS_MAX * (1u + PARLEY_PROTO_MAX_USER_ID))

enum prelay_kind {
	PRELAY_ONLINE = 1,
	PRELAY_OFFLINE = 2,
	PRELAY_TYPING_REQ = 3,
	PRELAY_TYPING = 4,
	PRELAY_HIDDEN = 5,
	PRELAY_RESEND = 6,
	PRELAY_TYPING_REFUSED = 7,
	PRELAY_SET_END = 8,
};

struct prelay_msg {
	uint8_t kind;
	uint8_t started;              /* TYPING_REQ / TYPING: 1 started */
	uint32_t arg;                 /* TYPING: ttl_ms; HIDDEN: flags;
					 TYPING_REFUSED: the error;
					 ONLINE / SET_END: generation */
	struct parley_str conv;       /* TYPING_REQ / TYPING */
	struct parley_str user;       /* the typer; HIDDEN: whose flags */
	uint16_t count;
	struct parley_str users[PRELAY_USERS_MAX];
};

/* Bytes written (<= PRELAY_MAX), -PARLEY_EINVAL (a bound above broken,
 * an unknown kind) or -PARLEY_ETOOBIG (cap too small). */
int prelay_encode(uint8_t *buf, size_t cap, const struct prelay_msg *m);
/* 0 and *m filled (its strings borrow from p), or -PARLEY_EPROTO
 * (short, trailing bytes, bad version / kind / lengths). */
int prelay_decode(const uint8_t *p, size_t n, struct prelay_msg *m);

#endif /* PARLEYD_PRESENCE_RELAY_H */
