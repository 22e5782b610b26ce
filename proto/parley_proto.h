/*
 * parley_proto.h — the parley wire protocol: frame and message codec.
 *
 * The normative spec is docs/PROTOCOL.md; this header is its C mirror. Both
 * the server (server/) and libparley (proto/client.c) use it.
 *
 * Frame (all integers little-endian):
 *
 *   u32 length | u16 type | u16 flags | u32 request_id | payload
 *
 * `length` counts the bytes AFTER the length field (8 + payload length), so
 * a whole frame is 4 + length bytes. A frame is never larger than the
 * negotiated max_frame (whole-frame bytes, header included).
 *
 * Invariants of this codec (it is pure: no I/O, no clock, no allocation
 * except inside the optional zstd helpers):
 *   1. Decoders never read outside [buf, buf+len) and never allocate.
 *   2. Decoded byte/string fields point INTO the caller's payload buffer
 *      (zero-copy): they stay valid exactly as long as that buffer does.
 *      Strings are NOT NUL-terminated; use .len.
 *   3. Every count is bounded by a named constant below, checked before the
 *      elements are read; a count the payload cannot hold is an error.
 *   4. Encoders write into a caller buffer and return the frame length, or
 *      -PARLEY_ETOOBIG when it does not fit, or -PARLEY_EINVAL when a field
 *      breaks a protocol limit. The buffer may hold garbage on error.
 *   5. Decoders ignore bytes after the fields they know at the end of a
 *      payload and at the end of a length-prefixed list record: this is how
 *      later protocol revisions add fields (additively, see the changelog).
 *
 * Ownership: the caller owns every buffer; structs only borrow.
 * Threads: every function is reentrant and may be called from any thread.
 */
#ifndef PARLEY_PROTO_H
#define PARLEY_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "parley_common.h"

/* ---- constants ----------------------------------------------------------- */

#define PARLEY_PROTO_VERSION 1 /* the only version this codec speaks */
#define PARLEY_PROTO_HEADER_SIZE 12u /* u32 length + u16 + u16 + u32 */
#define PARLEY_PROTO_LENGTH_MIN 8u /* length field of an empty payload */

/* Frame size limits (whole frame, header included). */
#define PARLEY_PROTO_MAX_FRAME_DEFAULT (1u << 20) /* until HELLO_OK says otherwise */
#define PARLEY_PROTO_MAX_FRAME_MIN (64u << 10) /* a server never announces less */
#define PARLEY_PROTO_MAX_FRAME_HARD (16u << 20) /* nobody ever accepts more */

/* Field limits (bytes). */
#define PARLEY_PROTO_MAX_USER_ID 120
#define PARLEY_PROTO_MAX_CONV_ID 250
#define PARLEY_PROTO_MAX_DEVICE_ID 64
#define PARLEY_PROTO_MAX_TOKEN 8192
#define PARLEY_PROTO_MAX_ADDR 255 /* ERROR leader addresses */
#define PARLEY_PROTO_MAX_TEXT 1024 /* error/goaway text, server id, client name */
#define PARLEY_PROTO_MAX_BODY_DEFAULT (64u << 10) /* announced in HELLO_OK */
#define PARLEY_PROTO_MSG_ID_LEN 16 /* client_msg_id */

/* Count limits. */
#define PARLEY_PROTO_MAX_HISTORY 100 /* HISTORY limit / HISTORY_PAGE count */
#define PARLEY_PROTO_MAX_LIST 100 /* CONV_LIST limit / entries */
#define PARLEY_PROTO_MAX_MEMBERS 1024 /* members in one CONV reply */
#define PARLEY_PROTO_MAX_PREVIEW 256 /* CONV_LIST_OK preview bytes */
#define PARLEY_PROTO_MAX_TITLE 256 /* group name */
#define PARLEY_PROTO_MAX_GROUP_USERS 256 /* users in one group request / info page */

/* Frame flags. Bits not defined here must be zero (else fatal EPROTO). */
#define PARLEY_FLAG_ZSTD 0x0001u /* payload is one zstd frame */
#define PARLEY_FLAGS_KNOWN PARLEY_FLAG_ZSTD

/* HELLO feature bits. */
#define PARLEY_FEAT_ZSTD (1u << 0) /* frames may carry PARLEY_FLAG_ZSTD */
/* early delivery (PROTOCOL.md "Early delivery"): a message may come as an
 * EVENT with inbox_seq 0 and PARLEY_MSGF_EARLY as soon as it is durable,
 * before its inbox EVENT, which then carries PARLEY_MSGF_EARLY_SEEN */
#define PARLEY_FEAT_EARLY (1u << 1)
/* bits 2..31 reserved */
#define PARLEY_FEATS_KNOWN (PARLEY_FEAT_ZSTD | PARLEY_FEAT_EARLY)

/*
 * Message types. Ranges:
 *   0x0001-0x3FFF  client requests (request_id != 0); the reply's type is
 *                  the request's | 0x8000, with the same request_id; any
 *                  request may instead be answered by ERROR.
 *   0x4000-0x7FFF  client notifications (request_id 0, no reply).
 *   0x8000         ERROR (a reply to a request, or request_id 0 when it is
 *                  about the connection or a notification).
 *   0xC000-0xFFFF  server pushes (request_id 0).
 *
 * Allocation of the numbers not yet defined below (so features added in
 * parallel never collide): 0x0015-0x001F edits, deletes, retention;
 * 0x0020, 0x0023-0x0027, 0x4002-0x400F, 0xC003-0xC00F presence and typing;
 * 0x0021-0x0022, 0x0028-0x002F read markers and receipts; 0x0030-0x003F
 * groups (each request's reply is | 0x8000).
 */
enum parley_msg_type {
	PARLEY_T_HELLO = 0x0001,
	PARLEY_T_AUTH = 0x0002,
	PARLEY_T_PING = 0x0003,
	PARLEY_T_CONV_OPEN = 0x0010,
	PARLEY_T_SEND = 0x0011,
	PARLEY_T_HISTORY = 0x0012,
	PARLEY_T_SYNC = 0x0013,
	PARLEY_T_CONV_LIST = 0x0014,
	PARLEY_T_EDIT = 0x0015, /* edits and deletes */
	PARLEY_T_DELETE = 0x0016,
	PARLEY_T_RETENTION = 0x0017,
	PARLEY_T_PRESENCE_SUB = 0x0020, /* subscribe / unsubscribe users' presence */
	PARLEY_T_READ_MARKER = 0x0021, /* "read up to seq N in conv" */
	PARLEY_T_RECEIPTS = 0x0022, /* who has read / received a message */
	PARLEY_T_PRESENCE_SET = 0x0023, /* the caller's presence settings */
	/* groups (docs/PROTOCOL.md section "Groups") */
	PARLEY_T_GROUP_CREATE = 0x0030,
	PARLEY_T_GROUP_ADD = 0x0031,
	PARLEY_T_GROUP_REMOVE = 0x0032,
	PARLEY_T_GROUP_LEAVE = 0x0033,
	PARLEY_T_GROUP_ROLE = 0x0034,
	PARLEY_T_GROUP_INFO = 0x0035,
	PARLEY_T_GROUP_SET = 0x0036, /* rename, history visibility */
	PARLEY_T_GROUP_CATCHUP = 0x003A, /* read fan-out catch-up (large groups) */

	PARLEY_T_EVENT_ACK = 0x4001,
	PARLEY_T_TYPING = 0x4002, /* "I am typing in conv" (client -> server) */

	PARLEY_T_ERROR = 0x8000,
	PARLEY_T_HELLO_OK = 0x8001,
	PARLEY_T_AUTH_OK = 0x8002,
	PARLEY_T_PONG = 0x8003,
	PARLEY_T_CONV = 0x8010,
	PARLEY_T_SEND_ACK = 0x8011,
	PARLEY_T_HISTORY_PAGE = 0x8012,
	PARLEY_T_SYNC_OK = 0x8013,
	PARLEY_T_CONV_LIST_OK = 0x8014,
	PARLEY_T_EDIT_ACK = 0x8015, /* struct parley_edit_ack */
	PARLEY_T_DELETE_ACK = 0x8016, /* struct parley_edit_ack too */
	PARLEY_T_RETENTION_OK = 0x8017,
	PARLEY_T_PRESENCE_SUB_OK = 0x8020,
	PARLEY_T_READ_MARKER_OK = 0x8021,
	PARLEY_T_RECEIPTS_OK = 0x8022,
	PARLEY_T_PRESENCE_SET_OK = 0x8023,
	PARLEY_T_GROUP_CREATE_OK = 0x8030, /* struct parley_group_ok */
	PARLEY_T_GROUP_ADD_OK = 0x8031, /* struct parley_group_ok */
	PARLEY_T_GROUP_REMOVE_OK = 0x8032, /* struct parley_group_ok */
	PARLEY_T_GROUP_LEAVE_OK = 0x8033, /* struct parley_group_ok */
	PARLEY_T_GROUP_ROLE_OK = 0x8034, /* struct parley_group_ok */
	PARLEY_T_GROUP_INFO_OK = 0x8035,
	PARLEY_T_GROUP_SET_OK = 0x8036, /* struct parley_group_ok */
	PARLEY_T_GROUP_CATCHUP_OK = 0x803A, /* struct parley_history_page,
					       oldest first */

	PARLEY_T_EVENT = 0xC001,
	PARLEY_T_GOAWAY = 0xC002,
	PARLEY_T_TYPING_PUSH = 0xC003, /* someone is typing / stopped */
	PARLEY_T_PRESENCE = 0xC004, /* a subscribed user's presence changed */
};

#define PARLEY_REPLY_BIT 0x8000u
#define PARLEY_REPLY_OF(req_type) ((uint16_t)((req_type) | PARLEY_REPLY_BIT))
static inline int parley_type_is_request(uint16_t t)
{
	return t >= 0x0001 && t <= 0x3FFF;
}
static inline int parley_type_is_notification(uint16_t t)
{
	return t >= 0x4000 && t <= 0x7FFF;
}
static inline int parley_type_is_push(uint16_t t)
{
	return t >= 0xC000;
}

/* ERROR flags */
#define PARLEY_ERRF_FATAL 0x0001u /* the server closes after this frame */

/* SEND_ACK flags */
#define PARLEY_ACKF_DUPLICATE 0x01u /* client_msg_id seen before: original seq/ts */

/* CONV flags */
#define PARLEY_CONVF_CREATED 0x01u /* this CONV_OPEN created the conversation */

/* HISTORY_PAGE flags */
#define PARLEY_HISTF_END 0x01u /* nothing older than this page */

/* READ_MARKER_OK flags */
#define PARLEY_READF_STALE 0x01u /* the position was already >= seq: unchanged */

/* RECEIPT EVENT flags / RECEIPTS_OK record state */
#define PARLEY_RCPTF_DELIVERED 0x0001u /* a device of `sender` has it (up to ref_seq) */
#define PARLEY_RCPTF_READ 0x0002u /* `sender` has read up to ref_seq */

/* RECEIPTS_OK / CONV_LIST_OK paging flags */
#define PARLEY_PAGEF_END 0x01u /* nothing after this page */

#define PARLEY_PROTO_MAX_RECEIPTS 100 /* RECEIPTS limit / records */

/* Conversation kinds. */
enum parley_conv_kind {
	PARLEY_CONV_DIRECT = 1, /* 1:1, id "d:<min>:<max>" */
	PARLEY_CONV_GROUP = 2, /* group, id "g:" + 16 hex digits */
};

/* Group roles (GROUP_* requests, GROUP_INFO_OK, membership events). */
enum parley_group_role {
	PARLEY_ROLE_MEMBER = 1,
	PARLEY_ROLE_ADMIN = 2,
	PARLEY_ROLE_OWNER = 3,
};
/* GROUP_CREATE settings */
#define PARLEY_GROUPF_HISTORY_ALL 0x01u /* new members read the whole history */
/* GROUP_*_OK flags */
#define PARLEY_GROUPF_DUPLICATE 0x01u /* a retried GROUP_CREATE: the group exists */
/* Content type of a MEMBERSHIP event / history record (body: PROTOCOL.md) */
#define PARLEY_CT_MEMBERSHIP 0xF001u
/* Membership event ops (first bytes of the body, PROTOCOL.md) */
enum parley_group_op {
	PARLEY_GOP_CREATE = 1,
	PARLEY_GOP_ADD = 2,
	PARLEY_GOP_REMOVE = 3,
	PARLEY_GOP_LEAVE = 4,
	PARLEY_GOP_ROLE = 5,
	PARLEY_GOP_SET = 6, /* name / settings changed (GROUP_SET) */
};
/* GROUP_SET: which fields it changes */
#define PARLEY_GSET_NAME 0x01u /* name */
#define PARLEY_GSET_SETTINGS 0x02u /* settings (PARLEY_GROUPF_HISTORY_ALL) */
#define PARLEY_GSET_KNOWN (PARLEY_GSET_NAME | PARLEY_GSET_SETTINGS)
/* A SET membership event's settings byte: the settings after it, plus */
#define PARLEY_GEV_SET_NAME 0x80u /* the name changed */
#define PARLEY_GEV_SET_SETTINGS 0x40u /* the settings changed */

/* EVENT kinds. Clients skip (but still acknowledge) kinds they do not know. */
enum parley_event_kind {
	PARLEY_EV_MESSAGE = 1,
	PARLEY_EV_RECEIPT = 2, /* delivered / read receipts (read markers) */
	PARLEY_EV_MEMBERSHIP = 3, /* group created, members added/removed, roles */
	PARLEY_EV_EDIT = 4, /* ref_seq = the edited message; body = new body */
	PARLEY_EV_DELETE = 5, /* ref_seq = the message deleted for everyone */
	PARLEY_EV_ACTIVITY = 6, /* coalesced "new messages in conv up to conv_seq"
				   (large groups: read fan-out) */
};

/* HISTORY record / EVENT flags (the current state of the referenced message). */
#define PARLEY_MSGF_EDITED 0x0001u /* the body shown is the latest edit */
#define PARLEY_MSGF_DELETED 0x0002u /* deleted for everyone: body is empty */
/* MESSAGE EVENT flags of early delivery (PARLEY_FEAT_EARLY) */
#define PARLEY_MSGF_EARLY 0x0004u /* inbox_seq 0: the message, durable in its
				     conversation; its inbox EVENT follows */
#define PARLEY_MSGF_EARLY_SEEN 0x0008u /* an inbox EVENT whose message this
					  connection got early: body omitted */


/* Content types (SEND / message body). The server treats bodies as opaque. */
enum parley_content_type {
	PARLEY_CT_BINARY = 0, /* opaque bytes */
	PARLEY_CT_TEXT = 1, /* UTF-8 text */
	PARLEY_CT_JSON = 2, /* UTF-8 JSON document */
	/* 0x1000-0xEFFF: application-defined; 0xF000-0xFFFF: reserved (system) */
};

/* GOAWAY reasons. */
enum parley_goaway_reason {
	PARLEY_GOAWAY_DRAIN = 1, /* server shutting down / rebalancing */
	PARLEY_GOAWAY_SLOW_CONSUMER = 2, /* events not acknowledged in time */
	PARLEY_GOAWAY_AUTH_EXPIRED = 3, /* token expired: reconnect with a new one */
	PARLEY_GOAWAY_OVERLOAD = 4, /* admission control: try later */
	PARLEY_GOAWAY_IDLE = 5, /* nothing received for idle_timeout_ms */
};

/* Typing and presence (PROTOCOL.md "TYPING", "PRESENCE_SUB"). */
#define PARLEY_PROTO_MAX_PRESENCE_USERS 100 /* users in one PRESENCE_SUB */
#define PARLEY_TYPING_REFRESH_MS 3000u /* a typing client repeats TYPING
					  STARTED this often (at most) */
enum parley_typing_state {
	PARLEY_TYPING_STOPPED = 0,
	PARLEY_TYPING_STARTED = 1,
};
enum parley_presence_status {
	PARLEY_PRESENCE_OFFLINE = 0,
	PARLEY_PRESENCE_ONLINE = 1,
};
enum parley_presence_op {
	PARLEY_PRESENCE_SUBSCRIBE = 1,
	PARLEY_PRESENCE_UNSUBSCRIBE = 2,
};
/* PRESENCE_SET flags */
#define PARLEY_PRESF_HIDE_LAST_SEEN 0x0001u /* others see last_seen 0 */
#define PARLEY_PRESF_KNOWN PARLEY_PRESF_HIDE_LAST_SEEN

/* ---- borrowed byte views ------------------------------------------------- */

/* u16-length-prefixed UTF-8 string on the wire. Not NUL-terminated. */
struct parley_str {
	const char *p;
	uint16_t len;
};
/* u32-length-prefixed opaque bytes on the wire. */
struct parley_bytes {
	const uint8_t *p;
	uint32_t len;
};

/* Make a parley_str from a C string (strlen must be <= 65535: asserted). */
struct parley_str parley_str_c(const char *s);
/* True iff s equals the C string c. */
int parley_str_eq(struct parley_str s, const char *c);

/* ---- frames --------------------------------------------------------------- */

struct parley_frame {
	uint16_t type;
	uint16_t flags;
	uint32_t request_id;
	const uint8_t *payload; /* points into the decoded buffer */
	uint32_t payload_len;
};

/*
 * Decode one frame from the front of buf.
 * Returns the whole frame's size (>= 12, bytes consumed) and fills *out;
 * -PARLEY_EINCOMPLETE when buf holds less than one whole frame (read more);
 * -PARLEY_ETOOBIG when the length says the frame exceeds max_frame (known as
 *   soon as 4 bytes are there);
 * -PARLEY_EPROTO when length < 8 or an unknown flag bit is set.
 * ETOOBIG and EPROTO are fatal for a stream: frame boundaries are lost.
 * max_frame is clamped to PARLEY_PROTO_MAX_FRAME_HARD.
 */
int parley_proto_frame_decode(const uint8_t *buf, size_t len, uint32_t max_frame,
			      struct parley_frame *out);

/* Write a 12-byte header for a payload of payload_len bytes. */
void parley_proto_header_put(uint8_t *hdr, uint16_t type, uint16_t flags,
			     uint32_t request_id, uint32_t payload_len);

/* ---- messages ------------------------------------------------------------- */

struct parley_hello { /* PARLEY_T_HELLO, client -> server */
	uint16_t min_version;
	uint16_t max_version;
	uint32_t features; /* PARLEY_FEAT_* the client supports */
	struct parley_str device_id; /* 1..64 bytes, stable per device */
	struct parley_str client_name; /* informative, e.g. "libparley/0.1" */
};

struct parley_hello_ok { /* PARLEY_T_HELLO_OK */
	uint16_t version; /* chosen, within the client's range */
	uint32_t features; /* subset of the client's: what is now enabled */
	uint32_t max_frame; /* whole-frame bytes either side may send from now on */
	uint32_t max_body; /* SEND body limit */
	uint32_t max_inflight; /* outstanding requests per connection */
	uint32_t event_window; /* unacknowledged EVENTs the server allows */
	uint32_t idle_timeout_ms; /* server closes after this much silence */
	uint64_t server_time_ms; /* wall clock, informative */
	struct parley_str server_id;
};

struct parley_auth { /* PARLEY_T_AUTH */
	struct parley_str token; /* JWT compact serialisation, 1..8192 bytes */
};

struct parley_auth_ok { /* PARLEY_T_AUTH_OK */
	struct parley_str user_id; /* the JWT `sub` */
	uint64_t expires_ms; /* token exp in unix ms, 0 = no expiry */
};

struct parley_ping { /* PARLEY_T_PING */
	uint64_t nonce; /* echoed in PONG */
};

struct parley_pong { /* PARLEY_T_PONG */
	uint64_t nonce;
	uint64_t server_time_ms;
};

struct parley_error_msg { /* PARLEY_T_ERROR */
	uint32_t code; /* positive PARLEY_E* value, e.g. 1011 = PARLEY_EAUTH */
	uint16_t flags; /* PARLEY_ERRF_* */
	uint32_t retry_after_ms; /* 0 = none; set with ERATE / EAGAIN / EFULL */
	struct parley_str text; /* human-readable, 0..1024 bytes */
	/* appended 2026-12-05, sent with NOTLEADER when the node knows the
	 * leader (absent = 0 / empty; encoded only when one is set): the
	 * leader's node id and its client addresses as it advertises them,
	 * "host:port" ("[v6]:port"), 0..PARLEY_PROTO_MAX_ADDR printable
	 * ASCII bytes each: plain TCP and TLS (empty = unknown / none) */
	uint64_t leader_node;
	struct parley_str leader_addr;
	struct parley_str leader_tls_addr;
};

struct parley_conv_open { /* PARLEY_T_CONV_OPEN */
	struct parley_str peer; /* a user id, not the caller's own */
};

struct parley_conv { /* PARLEY_T_CONV */
	struct parley_str conv; /* conversation id */
	uint8_t kind; /* enum parley_conv_kind */
	uint8_t flags; /* PARLEY_CONVF_* */
	uint64_t last_seq; /* 0 = empty */
	uint64_t last_ts_ms; /* 0 = empty */
	uint16_t member_count; /* <= PARLEY_PROTO_MAX_MEMBERS */
	struct parley_str members[PARLEY_PROTO_MAX_MEMBERS];
};

struct parley_send { /* PARLEY_T_SEND */
	struct parley_str conv;
	uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN];
	uint16_t content_type; /* enum parley_content_type */
	struct parley_bytes body; /* <= max_body */
};

struct parley_send_ack { /* PARLEY_T_SEND_ACK, only once durable */
	struct parley_str conv;
	uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN];
	uint64_t seq; /* conversation seq of the message */
	uint64_t server_ts_ms;
	uint8_t flags; /* PARLEY_ACKF_* */
};

/* ---- edits, deletes, retention (0x0015-0x0017) ---- */

struct parley_edit { /* PARLEY_T_EDIT: replace the body of message ref_seq */
	struct parley_str conv;
	uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN]; /* of this edit (idempotent) */
	uint64_t ref_seq; /* the message edited */
	uint16_t content_type;
	struct parley_bytes body; /* <= max_body */
};

struct parley_delete { /* PARLEY_T_DELETE: delete message ref_seq for everyone */
	struct parley_str conv;
	uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN]; /* of this delete */
	uint64_t ref_seq;
};

struct parley_edit_ack { /* PARLEY_T_EDIT_ACK / PARLEY_T_DELETE_ACK, once durable */
	struct parley_str conv;
	uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN];
	uint64_t seq; /* conversation seq of the EDIT / DELETE entry */
	uint64_t server_ts_ms;
	uint64_t ref_seq; /* the message it changed */
	uint8_t flags; /* PARLEY_ACKF_* */
};

/* RETENTION flags */
#define PARLEY_RETF_SET 0x01u /* set max_age_ms / max_count (else: only read) */

struct parley_retention { /* PARLEY_T_RETENTION */
	struct parley_str conv;
	uint8_t flags; /* PARLEY_RETF_* */
	uint64_t max_age_ms; /* 0 = no age limit (the server default applies) */
	uint64_t max_count; /* 0 = no count limit (the server default applies) */
};

struct parley_retention_ok { /* PARLEY_T_RETENTION_OK */
	struct parley_str conv;
	uint64_t max_age_ms; /* the conversation's own setting (0 = none) */
	uint64_t max_count;
	uint64_t default_max_age_ms; /* the server's defaults for conversations */
	uint64_t default_max_count;
	uint64_t first_seq; /* first retained seq now (0 = empty) */
};

struct parley_history { /* PARLEY_T_HISTORY */
	struct parley_str conv;
	uint64_t before_seq; /* messages with seq < before_seq; 0 = newest */
	uint16_t limit; /* 1..PARLEY_PROTO_MAX_HISTORY */
};

struct parley_hist_msg { /* one HISTORY_PAGE record */
	uint64_t seq;
	uint64_t ts_ms;
	struct parley_str sender;
	uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN];
	uint16_t content_type;
	struct parley_bytes body;
	/* appended 2026-12-04; a record without them decodes as kind MESSAGE,
	 * ref_seq 0, flags 0 */
	uint16_t kind; /* enum parley_event_kind (0 is sent as MESSAGE) */
	uint64_t ref_seq; /* EDIT / DELETE: the message it refers to; else 0 */
	uint32_t flags; /* PARLEY_MSGF_* */
};

struct parley_history_page { /* PARLEY_T_HISTORY_PAGE */
	struct parley_str conv;
	uint64_t next_before_seq; /* pass as before_seq for the next older page */
	uint8_t flags; /* PARLEY_HISTF_* */
	uint16_t count; /* <= PARLEY_PROTO_MAX_HISTORY */
	struct parley_hist_msg msgs[PARLEY_PROTO_MAX_HISTORY]; /* newest first */
};

struct parley_sync { /* PARLEY_T_SYNC */
	/* First inbox seq wanted (inclusive): normally the last acknowledged
	 * inbox seq + 1. 0 = resume after this device's server-side cursor (or,
	 * for a device the server has never seen, from now: live only). */
	uint64_t from_inbox_seq;
};

struct parley_sync_ok { /* PARLEY_T_SYNC_OK */
	uint64_t first_inbox_seq; /* first retained (0 = inbox empty) */
	uint64_t last_inbox_seq; /* last existing (0 = inbox empty) */
	uint64_t start_inbox_seq; /* inbox_seq of the first EVENT that will follow */
};

struct parley_event { /* PARLEY_T_EVENT push */
	uint64_t inbox_seq; /* dense per user: no gaps within a subscription */
	uint16_t kind; /* enum parley_event_kind */
	struct parley_str conv;
	uint64_t conv_seq;
	struct parley_str sender;
	uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN];
	uint64_t server_ts_ms;
	uint16_t content_type;
	struct parley_bytes body;
	/* appended 2026-12-04; absent = 0 */
	uint64_t ref_seq; /* EDIT / DELETE / RECEIPT: the message it refers to */
	uint32_t flags; /* PARLEY_MSGF_* or kind-specific (see PROTOCOL.md) */
};

struct parley_event_ack { /* PARLEY_T_EVENT_ACK notification */
	uint64_t up_to_inbox_seq; /* cumulative */
};

struct parley_conv_list { /* PARLEY_T_CONV_LIST */
	uint16_t limit; /* 1..PARLEY_PROTO_MAX_LIST */
	/* appended 2026-12-04 (absent = 0 / empty: from the most recent):
	 * the page starts after this (last_ts_ms, conv) position in list
	 * order, i.e. the previous page's next_before_* */
	uint64_t before_ts_ms;
	struct parley_str before_conv; /* empty or a conversation id */
};

struct parley_conv_entry { /* one CONV_LIST_OK record */
	struct parley_str conv;
	uint8_t kind; /* enum parley_conv_kind */
	uint64_t last_seq;
	uint64_t last_ts_ms;
	uint32_t member_count;
	struct parley_str peer; /* DIRECT: the other user; GROUP: empty */
	/* appended 2026-12-04; absent = empty / 0 */
	struct parley_str title; /* GROUP: its name; DIRECT: empty */
	uint64_t read_seq; /* the caller's read position (READ_MARKER) */
	uint32_t unread; /* messages from others after read_seq */
	struct parley_str last_sender; /* sender of the message at last_seq */
	uint16_t last_content_type;
	struct parley_bytes preview; /* its first <= PARLEY_PROTO_MAX_PREVIEW bytes */
	/* appended later (absent = 0) */
	uint8_t flags; /* PARLEY_CONVF_LEFT */
};
/* CONV_LIST_OK record flags */
#define PARLEY_CONVF_LEFT 0x01u /* group: the caller is no longer a member; the
				   record is as of the event that removed them */

struct parley_conv_list_ok { /* PARLEY_T_CONV_LIST_OK, most recent first */
	uint16_t count; /* <= PARLEY_PROTO_MAX_LIST */
	struct parley_conv_entry entries[PARLEY_PROTO_MAX_LIST];
	/* appended 2026-12-04 after the records (absent = 0 / empty) */
	uint8_t flags; /* PARLEY_PAGEF_END: no conversation after this page */
	uint64_t next_before_ts_ms; /* pass as before_ts_ms for the next page */
	struct parley_str next_before_conv; /* ... and as before_conv */
};

struct parley_read_marker { /* PARLEY_T_READ_MARKER */
	struct parley_str conv;
	uint64_t seq; /* read up to and including this seq (>= 1) */
};

struct parley_read_marker_ok { /* PARLEY_T_READ_MARKER_OK, once durable */
	struct parley_str conv;
	uint64_t read_seq; /* the caller's stored position now (>= seq) */
	uint8_t flags; /* PARLEY_READF_STALE */
};

struct parley_receipts { /* PARLEY_T_RECEIPTS */
	struct parley_str conv;
	uint64_t seq; /* the message asked about */
	struct parley_str after; /* member cursor: empty = from the first */
	uint16_t limit; /* 1..PARLEY_PROTO_MAX_RECEIPTS members */
};

struct parley_receipt_rec { /* one RECEIPTS_OK record (a member) */
	struct parley_str user;
	uint8_t state; /* PARLEY_RCPTF_* for the asked seq */
	uint64_t delivered_seq; /* the member's positions in conv */
	uint64_t read_seq;
};

struct parley_receipts_ok { /* PARLEY_T_RECEIPTS_OK */
	struct parley_str conv;
	uint64_t seq;
	uint32_t member_count; /* members of conv now */
	uint32_t delivered; /* records of this page with DELIVERED */
	uint32_t read; /* records of this page with READ */
	uint8_t flags; /* PARLEY_PAGEF_END */
	struct parley_str next_after; /* pass as `after` for the next page */
	uint16_t count; /* <= PARLEY_PROTO_MAX_RECEIPTS */
	struct parley_receipt_rec recs[PARLEY_PROTO_MAX_RECEIPTS];
};

struct parley_group_create { /* PARLEY_T_GROUP_CREATE */
	uint8_t create_id[PARLEY_PROTO_MSG_ID_LEN]; /* retry-safe: same id, same group */
	struct parley_str name; /* 1..255 bytes UTF-8 */
	uint8_t settings; /* PARLEY_GROUPF_HISTORY_ALL */
	uint16_t count; /* initial members besides the caller, <= MAX_GROUP_USERS */
	struct parley_str users[PARLEY_PROTO_MAX_GROUP_USERS];
};

/* PARLEY_T_GROUP_ADD / _REMOVE / _LEAVE / _ROLE */
struct parley_group_change {
	struct parley_str conv; /* "g:..." */
	uint8_t role; /* ADD: role given (0 = MEMBER); ROLE: the new role; else 0 */
	uint16_t count; /* LEAVE: 0 */
	struct parley_str users[PARLEY_PROTO_MAX_GROUP_USERS];
};

struct parley_group_ok { /* PARLEY_T_GROUP_*_OK (not INFO), once durable */
	struct parley_str conv;
	uint64_t seq; /* the membership event's conversation seq */
	uint8_t flags; /* PARLEY_GROUPF_DUPLICATE */
};

struct parley_group_set { /* PARLEY_T_GROUP_SET */
	struct parley_str conv; /* "g:..." */
	uint8_t fields; /* PARLEY_GSET_*: at least one */
	struct parley_str name; /* NAME: the new name (1..255 bytes UTF-8); else empty */
	uint8_t settings; /* SETTINGS: the new settings; else 0 */
};

struct parley_group_info { /* PARLEY_T_GROUP_INFO */
	struct parley_str conv;
	uint32_t from_index; /* members are listed in join order; 0 = first */
	uint16_t limit; /* 1..PARLEY_PROTO_MAX_GROUP_USERS */
};

/* GROUP_CATCHUP: the read fan-out messages of a group from from_seq on
 * (oldest first) that the caller was a member for; answered with
 * GROUP_CATCHUP_OK = a struct parley_history_page whose records are in
 * ascending seq order and whose next_before_seq is the next from_seq
 * (PARLEY_HISTF_END: nothing after it yet). */
struct parley_group_catchup { /* PARLEY_T_GROUP_CATCHUP */
	struct parley_str conv;
	uint64_t from_seq; /* >= 1 */
	uint16_t limit; /* 1..PARLEY_PROTO_MAX_HISTORY */
};

struct parley_group_member {
	struct parley_str user;
	uint8_t role; /* enum parley_group_role */
};

struct parley_group_info_ok { /* PARLEY_T_GROUP_INFO_OK */
	struct parley_str conv;
	struct parley_str name;
	uint8_t settings; /* PARLEY_GROUPF_HISTORY_ALL */
	uint8_t my_role; /* the caller's role */
	uint32_t member_count;
	uint64_t as_of_seq; /* the last membership event's seq */
	uint32_t next_index; /* pass as from_index; 0 = this was the last page */
	uint16_t count;
	struct parley_group_member members[PARLEY_PROTO_MAX_GROUP_USERS];
};

struct parley_goaway { /* PARLEY_T_GOAWAY push */
	uint16_t reason; /* enum parley_goaway_reason */
	uint32_t retry_after_ms; /* wait this long (plus jitter) before reconnecting */
	struct parley_str text;
};

struct parley_typing { /* PARLEY_T_TYPING notification */
	struct parley_str conv;
	uint8_t state; /* enum parley_typing_state */
};

struct parley_typing_push { /* PARLEY_T_TYPING_PUSH */
	struct parley_str conv;
	struct parley_str user; /* who is typing */
	uint8_t state; /* enum parley_typing_state */
	uint32_t ttl_ms; /* STARTED: clear it after this long without a
			    refresh; STOPPED: 0 */
};

struct parley_presence_sub { /* PARLEY_T_PRESENCE_SUB */
	uint8_t op; /* enum parley_presence_op */
	uint16_t count; /* 1..PARLEY_PROTO_MAX_PRESENCE_USERS */
	struct parley_str users[PARLEY_PROTO_MAX_PRESENCE_USERS];
};

struct parley_presence_rec { /* one PRESENCE_SUB_OK record; the PRESENCE push */
	struct parley_str user;
	uint8_t status; /* enum parley_presence_status */
	uint64_t last_seen_ms; /* unix ms; 0 = online, never seen, or hidden */
};

struct parley_presence_sub_ok { /* PARLEY_T_PRESENCE_SUB_OK */
	uint32_t heartbeat_ms; /* send a frame (PING if idle) at least this often */
	uint32_t ttl_ms; /* a device silent this long counts as offline */
	uint16_t subscribed; /* subscriptions of this connection now */
	uint16_t count; /* SUBSCRIBE: one record per user asked; UNSUBSCRIBE: 0 */
	struct parley_presence_rec recs[PARLEY_PROTO_MAX_PRESENCE_USERS];
};

struct parley_presence_set { /* PARLEY_T_PRESENCE_SET */
	uint32_t flags; /* PARLEY_PRESF_* */
};

struct parley_presence_set_ok { /* PARLEY_T_PRESENCE_SET_OK, once durable */
	uint32_t flags; /* the settings now in force */
};

/*
 * A decoded (or to-be-encoded) message: `type` selects the union member.
 * It is large (~16 KiB, mostly CONV's member array): keep it off small stacks if
 * you must (it is fine on a normal thread stack).
 */
struct parley_msg {
	uint16_t type; /* enum parley_msg_type */
	union {
		struct parley_hello hello;
		struct parley_hello_ok hello_ok;
		struct parley_auth auth;
		struct parley_auth_ok auth_ok;
		struct parley_ping ping;
		struct parley_pong pong;
		struct parley_error_msg error;
		struct parley_conv_open conv_open;
		struct parley_conv conv;
		struct parley_send send;
		struct parley_send_ack send_ack;
		struct parley_history history;
		struct parley_history_page history_page;
		struct parley_sync sync;
		struct parley_sync_ok sync_ok;
		struct parley_event event;
		struct parley_event_ack event_ack;
		struct parley_conv_list conv_list;
		struct parley_conv_list_ok conv_list_ok;
		struct parley_goaway goaway;
		struct parley_typing typing;
		struct parley_typing_push typing_push;
		struct parley_presence_sub presence_sub;
		struct parley_presence_sub_ok presence_sub_ok;
		struct parley_presence_rec presence; /* PARLEY_T_PRESENCE push */
		struct parley_presence_set presence_set;
		struct parley_presence_set_ok presence_set_ok;
		struct parley_group_create group_create;
		struct parley_group_change group_change; /* ADD/REMOVE/LEAVE/ROLE */
		struct parley_group_ok group_ok; /* *_OK but INFO_OK */
		struct parley_group_info group_info;
		struct parley_group_set group_set;
		struct parley_group_catchup group_catchup;
		struct parley_group_info_ok group_info_ok;
		struct parley_read_marker read_marker;
		struct parley_read_marker_ok read_marker_ok;
		struct parley_receipts receipts;
		struct parley_receipts_ok receipts_ok;
		struct parley_edit edit;
		struct parley_delete del;
		struct parley_edit_ack edit_ack; /* EDIT_ACK and DELETE_ACK */
		struct parley_retention retention;
		struct parley_retention_ok retention_ok;
	};
};

/*
 * Encode m as a whole frame (header + uncompressed payload, flags 0) into
 * buf[0..cap). Returns the frame length, -PARLEY_ETOOBIG if cap is too
 * small, -PARLEY_EINVAL if a field breaks a limit (string too long, count
 * over its bound, unknown or reserved type). buf may be NULL with cap 0 to
 * learn the size (returns -PARLEY_ETOOBIG then; use parley_proto_size).
 * The caller also keeps the result <= the negotiated max_frame.
 */
int parley_proto_encode(uint8_t *buf, size_t cap, uint32_t request_id,
			const struct parley_msg *m);

/* Size in bytes of m's encoded frame, or -PARLEY_EINVAL (see encode). */
int parley_proto_size(const struct parley_msg *m);

/* Encoded size of one HISTORY_PAGE record (to fill a page up to max_frame). */
size_t parley_proto_hist_msg_size(const struct parley_hist_msg *hm);

/*
 * Decode a payload of the given type into *out (out->type = type). Fields
 * borrow from payload. Returns 0, -PARLEY_EPROTO for a malformed payload
 * (short, count too large, bad UTF-8, a limit exceeded), or
 * -PARLEY_EVERSION for a type this codec does not know (incl. reserved
 * ones). Both are non-fatal for the stream: the frame boundary is intact.
 */
int parley_proto_decode_payload(uint16_t type, const uint8_t *payload,
				size_t len, struct parley_msg *out);

/* parley_proto_decode_payload on a frame; -PARLEY_EINVAL if the frame is
 * compressed (decompress first with parley_proto_decompress). */
int parley_proto_decode(const struct parley_frame *f, struct parley_msg *out);

/* ---- optional zstd compression (PARLEY_FEAT_ZSTD) -------------------------- */

/*
 * Compress the payload of an encoded, uncompressed frame (frame[0..len))
 * into out[0..cap) as a new frame with PARLEY_FLAG_ZSTD set and the same
 * type and request_id. Returns the new frame length; 0 when compression
 * would not make the frame smaller (send the original); -PARLEY_ETOOBIG if
 * cap is too small; -PARLEY_EINVAL if frame is not a whole uncompressed frame.
 * Allocates a zstd context internally.
 */
int parley_proto_compress(const uint8_t *frame, size_t len, uint8_t *out,
			  size_t cap, int level);

/*
 * Decompress a PARLEY_FLAG_ZSTD frame's payload into out[0..cap). Returns
 * the payload length; -PARLEY_ETOOBIG if it would exceed cap (a zstd bomb
 * stops at cap: never more than cap bytes are produced); -PARLEY_EPROTO if
 * the payload is not exactly one valid zstd frame. cap should be
 * max_frame - PARLEY_PROTO_HEADER_SIZE. Then decode with
 * parley_proto_decode_payload(f->type, out, n, &msg).
 */
int parley_proto_decompress(const struct parley_frame *f, uint8_t *out,
			    size_t cap);

/* ---- ids and names --------------------------------------------------------- */

/* A user id (the JWT `sub`, a CONV_OPEN peer): 1..120 bytes of ASCII
 * letters, digits and . _ - @ + = |, starting with a letter or digit. */
int parley_proto_user_id_valid(const char *p, size_t len);

/*
 * The 1:1 conversation id of users a and b: "d:" + min(a,b) + ":" + max(a,b)
 * (memcmp order, shorter-is-smaller on a common prefix), NUL-terminated into
 * out[0..cap). Returns its length, -PARLEY_EINVAL if an id is invalid or
 * a == b, -PARLEY_ETOOBIG if cap is too small (cap 244 always suffices).
 */
int parley_proto_dm_conv_id(const char *a, size_t alen, const char *b,
			    size_t blen, char *out, size_t cap);

/* "HELLO", "SEND_ACK", ... or "UNKNOWN". Never NULL. */
const char *parley_proto_type_name(uint16_t type);

/* True iff p[0..len) is valid UTF-8 (no overlongs, no surrogates). */
int parley_proto_utf8_valid(const char *p, size_t len);

#endif /* PARLEY_PROTO_H */
