/*
 * parley_client.h — libparley: the C client library for parleyd.
 *
 * Speaks docs/PROTOCOL.md over TCP or TLS (OpenSSL; the server certificate
 * is verified against a CA file or the system store, and its name against
 * the host name). One `struct parley_client` is one connection of one
 * device; it reconnects by itself and resumes its inbox subscription from
 * the last event it delivered, so events are neither lost nor delivered
 * twice to the callback (within the life of the object).
 *
 * Two ways to use it:
 *   - blocking: parley_client_connect(), then parley_client_send() /
 *     _history() / _conv_open() / _conv_list() each wait for their reply
 *     (retrying across timeouts and reconnects, see below), and
 *     parley_client_poll(c, timeout) to wait for events;
 *   - event loop: watch parley_client_fd() for readability and call
 *     parley_client_process() (never blocks on reads) when it fires, and at
 *     least every parley_client_next_timeout_ms() for keepalive. When
 *     process() returns -PARLEY_ECLOSED, call parley_client_poll() or
 *     parley_client_reconnect() (those block while reconnecting).
 *   Writes are small and may block up to request_timeout_ms when the
 *   socket's send buffer is full.
 *
 * Events: subscribe with parley_client_subscribe(); every EVENT of kind
 * MESSAGE, EDIT, DELETE or MEMBERSHIP (check ev->kind; EDIT / DELETE
 * carry the changed message's seq in ev->ref_seq; MEMBERSHIP is a group
 * change) is passed to opts.on_event in
 * inbox order, from inside process()/poll() or from
 * inside a blocking call that is waiting for its reply. The client
 * acknowledges events (EVENT_ACK) after the callback returns. A callback
 * may call the accessors (user_id, inbox_cursor, fd, ...) but nothing that
 * does I/O or frees: the blocking calls, process() and poll() return
 * -PARLEY_EINVAL from inside a callback; close() and free() must not be
 * called there.
 *
 * Large groups (read fan-out, docs/PROTOCOL.md "Large groups"): their
 * messages may come live (EVENT with inbox_seq 0, outside the inbox
 * order) or be read back with GROUP_CATCHUP after an ACTIVITY event (an
 * inbox event this library handles itself, never passed to on_event) and
 * after every reconnect; such messages reach on_event with inbox_seq 0,
 * once per (conv, conv_seq) within the life of the object. The catch-up
 * runs inside process() / poll() (one round trip per 100 messages, at
 * most 64 per call), never inside a blocking call or a callback; the
 * inbox is not acknowledged past an ACTIVITY until its catch-up finished,
 * so a restarted process redoes it. To resume across process restarts,
 * persist parley_client_group_position() per group and restore it with
 * parley_client_set_group_position(); without it a new object reads a
 * group from the next ACTIVITY's conv_seq on.
 *
 * Early delivery (opts.want_early, docs/PROTOCOL.md "Early delivery"): a
 * 1:1 or small-group message may reach on_event as soon as it is durable in its
 * conversation, with inbox_seq 0 and ev->flags PARLEY_MSGF_EARLY, one
 * group commit before its inbox EVENT; that inbox EVENT is then not
 * passed to on_event (it only advances the inbox cursor). Within the life
 * of the object each such message reaches on_event once per (conv,
 * conv_seq), also when a server crash made its inbox EVENT come again in
 * full after the reconnect; an application that restarts and resumes
 * from a persisted inbox cursor must itself drop a MESSAGE whose (conv,
 * conv_seq) it already processed (PROTOCOL.md: processing is idempotent
 * by that key). Messages of one conversation still reach on_event in
 * conv_seq order.
 *
 * GOAWAY: the client stops sending new requests on that connection and
 * moves to a new one after the server's retry_after_ms (plus jitter);
 * GOAWAY AUTH_EXPIRED stops reconnecting (-PARLEY_EAUTH) instead: the same
 * token would be dropped again. A HELLO refused by admission control
 * (ERROR AGAIN with retry_after_ms: the server has too many handshakes in
 * progress) makes the next connect attempt wait retry_after_ms plus jitter
 * (0..retry_after_ms/2), or the usual backoff if that is longer.
 *
 * Retries: every request here is idempotent (SEND thanks to its
 * client_msg_id, reused on every retry), so a call that times out or
 * loses its connection reconnects and tries again until its deadline
 * (opts.call_deadline_ms). Server errors that a retry may cure (RATE,
 * AGAIN, NOTLEADER, CLOSED, FULL, TIMEDOUT, IO) wait retry_after_ms (or a
 * backoff) and retry; other errors are returned as -code at once.
 *
 * Ownership: replies returned through a `const struct ... **` pointer
 * borrow from the client's reply buffer and stay valid until the next call
 * into the client. Strings passed in are copied where they are kept.
 * Threads: a client object is used by one thread at a time (no locking
 * inside). Different objects are independent. No global init is needed
 * (OpenSSL 1.1+ initialises itself). SIGPIPE is blocked around socket
 * writes, so applications need not ignore it.
 *
 * Return values: 0 / a positive count, or a negative -PARLEY_E* / -errno.
 * A server ERROR with code C is returned as -C (e.g. -PARLEY_EPERM).
 */
#ifndef PARLEY_CLIENT_H
#define PARLEY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "parley_proto.h"

struct parley_client;

enum parley_client_state {
	PARLEY_CLIENT_CONNECTED = 1, /* HELLO + AUTH done (and SYNC if subscribed) */
	PARLEY_CLIENT_DISCONNECTED = 2, /* err says why */
	PARLEY_CLIENT_GOAWAY = 3, /* server asked us to leave; err = -reason */
};

/* Called for each EVENT; ev borrows from the client's buffers (valid during
 * the call only). */
typedef void (*parley_event_cb)(void *user, const struct parley_event *ev);
/* TYPING_PUSH: someone else is typing (state STARTED, clear it after
 * ttl_ms without a refresh) or stopped. Borrowed during the call. */
typedef void (*parley_typing_cb)(void *user, const struct parley_typing_push *t);
/* PRESENCE: a subscribed user went online / offline (last_seen_ms 0 when
 * online, hidden or never seen). Borrowed during the call. */
typedef void (*parley_presence_cb)(void *user,
				   const struct parley_presence_rec *p);
/* Called on connection state changes (optional). */
typedef void (*parley_state_cb)(void *user, enum parley_client_state st,
				int err);

#define PARLEY_CLIENT_MAX_NODES 16

struct parley_client_opts {
	const char *host; /* required (unless nodes): name or address */
	uint16_t port; /* required (unless nodes) */
	/* A cluster: "host:port,host:port,..." ("[v6]:port"), up to
	 * PARLEY_CLIENT_MAX_NODES; replaces host/port. The client starts with
	 * the first and moves to the next one in the list when a connect
	 * fails or a request is answered NOTLEADER (the node does not lead
	 * that partition: docs/CLUSTER.md), resending the same request (a
	 * SEND keeps its client_msg_id); it backs off only once every node
	 * in a row failed or answered NOTLEADER. With TLS, set
	 * tls_server_name. */
	const char *nodes;
	int tls; /* 1 = TLS */
	const char *ca_file; /* TLS: trust only this CA bundle (PEM); NULL =
				system store */
	const char *tls_server_name; /* TLS: name to verify and send as SNI;
					NULL = host */
	const char *token; /* required: JWT */
	const char *device_id; /* required: 1..64 bytes, stable per device */
	const char *client_name; /* NULL = "libparley/<version>" */
	int want_zstd; /* offer PARLEY_FEAT_ZSTD */
	uint32_t connect_timeout_ms; /* 0 = 5000: TCP + TLS + HELLO + AUTH */
	uint32_t request_timeout_ms; /* 0 = 10000: one attempt's wait */
	uint32_t call_deadline_ms; /* 0 = 30000: a call's total retry budget */
	int no_reconnect; /* 1 = never reconnect by itself */
	uint32_t backoff_min_ms; /* 0 = 100 */
	uint32_t backoff_max_ms; /* 0 = 30000 */
	parley_event_cb on_event;
	parley_state_cb on_state;
	void *user;
	/* typing and presence (optional): pushes, borrowed during the call */
	parley_typing_cb on_typing;
	parley_presence_cb on_presence;
	uint32_t heartbeat_ms; /* presence heartbeat: 0 = the server's (from
				  PRESENCE_SUB_OK), until known idle_timeout/3 */
	/* RECEIPT events (kind PARLEY_EV_RECEIPT: ev->sender has received
	 * (flags PARLEY_RCPTF_DELIVERED) or read (PARLEY_RCPTF_READ) conv up
	 * to ev->ref_seq; sender == you: your own read position from another
	 * device). NULL = skipped (still acknowledged). Same thread rules as
	 * on_event. */
	parley_event_cb on_receipt;
	int want_early; /* offer PARLEY_FEAT_EARLY (early delivery, above) */
};

/* Allocate a client (copies the options' strings). Does not connect. */
int parley_client_new(const struct parley_client_opts *opts,
		      struct parley_client **out);
/* Close the connection and free everything. NULL is fine. */
void parley_client_free(struct parley_client *c);

/* Connect, HELLO, AUTH (blocking, connect_timeout_ms). -PARLEY_EAUTH if the
 * token is refused (or the server's TLS certificate is not trusted),
 * -PARLEY_EVERSION on no common version; parley_client_failure() says
 * which and why. */
int parley_client_connect(struct parley_client *c);
/* Drop the connection (if any) and connect again, honouring GOAWAY's
 * retry_after and resuming the subscription. Blocks. */
int parley_client_reconnect(struct parley_client *c);
/* The node this client is connected to, or will connect to next: the host
 * (borrowed, valid until the next call on c) and port, from the node list,
 * or from the leader hint of an ERROR NOTLEADER it followed. 0 or
 * -PARLEY_EINVAL. */
int parley_client_current_node(const struct parley_client *c,
			       const char **host, uint16_t *port);
/* Close the connection; the object can connect again later. */
void parley_client_close(struct parley_client *c);
/* 1 if connected and authenticated. */
int parley_client_connected(const struct parley_client *c);

/* After a successful connect: the authenticated user id (NUL-terminated). */
const char *parley_client_user_id(const struct parley_client *c);
/* The negotiated limits (valid while connected). */
const struct parley_hello_ok *parley_client_limits(const struct parley_client *c);

/* ---- requests (blocking, with retries) ------------------------------------ */

struct parley_send_result {
	uint64_t seq;
	uint64_t server_ts_ms;
	int duplicate; /* the server already had this client_msg_id */
	uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN];
};

/* Open (create if needed) the 1:1 conversation with peer. *conv borrows. */
int parley_client_conv_open(struct parley_client *c, const char *peer,
			    const struct parley_conv **conv);

/* Send a message with a fresh random client_msg_id; retried with the same
 * id until acknowledged (durable) or the deadline. res may be NULL. */
int parley_client_send(struct parley_client *c, const char *conv,
		       uint16_t content_type, const void *body, size_t len,
		       struct parley_send_result *res);
/* Same with a caller-chosen client_msg_id (for apps with their own outbox
 * that must survive restarts: reuse the id to retry). */
int parley_client_send_id(struct parley_client *c, const char *conv,
			  const uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN],
			  uint16_t content_type, const void *body, size_t len,
			  struct parley_send_result *res);

/* ---- edits and deletes ---- */

/* Replace the body of message ref_seq (which the caller sent) in conv;
 * retried with one fresh client_msg_id until acknowledged (durable) or
 * the deadline. res (may be NULL) gets the EDIT entry's own seq.
 * Refusals: -PARLEY_EPERM (not the sender), -PARLEY_ENOTFOUND,
 * -PARLEY_EINVAL (not a message), -PARLEY_EEXPIRED (edit window passed),
 * -PARLEY_EDELETED. */
int parley_client_edit(struct parley_client *c, const char *conv,
		       uint64_t ref_seq, uint16_t content_type,
		       const void *body, size_t len,
		       struct parley_send_result *res);
/* Delete message ref_seq for everyone (same retries and refusals). */
int parley_client_delete(struct parley_client *c, const char *conv,
			 uint64_t ref_seq, struct parley_send_result *res);
/* The same two with a caller-chosen client_msg_id (reuse it to retry). */
int parley_client_edit_id(struct parley_client *c, const char *conv,
			  const uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN],
			  uint64_t ref_seq, uint16_t content_type,
			  const void *body, size_t len,
			  struct parley_send_result *res);
int parley_client_delete_id(struct parley_client *c, const char *conv,
			    const uint8_t client_msg_id[PARLEY_PROTO_MSG_ID_LEN],
			    uint64_t ref_seq, struct parley_send_result *res);

/* Per-conversation retention: with PARLEY_RETF_SET in flags, keep conv's
 * entries at most max_age_ms (0 = no limit) and at most the newest
 * max_count (0 = no limit); without it, only read. *ok borrows (the
 * conversation's setting, the server's defaults, the first retained seq).
 * Refusals: -PARLEY_EPERM (not a member), -PARLEY_ENOTFOUND. */
int parley_client_retention(struct parley_client *c, const char *conv,
			    uint8_t flags, uint64_t max_age_ms,
			    uint64_t max_count,
			    const struct parley_retention_ok **ok);

/* One page of history, newest first (before_seq 0 = newest, limit 1..100).
 * *page borrows. */
int parley_client_history(struct parley_client *c, const char *conv,
			  uint64_t before_seq, uint16_t limit,
			  const struct parley_history_page **page);

/* The caller's conversations, most recent first (limit 1..100). *list borrows. */
int parley_client_conv_list(struct parley_client *c, uint16_t limit,
			    const struct parley_conv_list_ok **list);

/* The same, one page at a time: the page after (before_ts_ms,
 * before_conv) in list order (0 / NULL = from the most recent); pass the
 * previous page's next_before_ts_ms / next_before_conv; the last page has
 * PARLEY_PAGEF_END in (*list)->flags. */
int parley_client_conv_list_page(struct parley_client *c, uint16_t limit,
				 uint64_t before_ts_ms, const char *before_conv,
				 const struct parley_conv_list_ok **list);

/* READ_MARKER: "I have read conv up to seq". Monotone (a lower seq
 * changes nothing and is not an error); durable when it returns 0.
 * *read_seq (may be NULL) gets the stored position. Send it when the
 * person has seen new messages, not per message or keystroke (the CLI
 * sends one per screenful). Errors: -PARLEY_EINVAL (seq 0 or beyond the
 * last message), -PARLEY_ENOTFOUND, -PARLEY_EPERM. */
int parley_client_read_marker(struct parley_client *c, const char *conv,
			      uint64_t seq, uint64_t *read_seq);

/* RECEIPTS: who of conv's members has received / read message seq, a
 * page of at most limit (1..100) members sorted by id, after `after`
 * (NULL or "" = from the first); next page: after = (*out)->next_after
 * until PARLEY_PAGEF_END. *out borrows. */
int parley_client_receipts(struct parley_client *c, const char *conv,
			   uint64_t seq, const char *after, uint16_t limit,
			   const struct parley_receipts_ok **out);
/* ---- groups (PROTOCOL.md "Groups") ------------------------------------------
 * Each returns 0 once the membership event is durable (*ok borrows: conv
 * and the event's seq), or the server's refusal: -PARLEY_EPERM (the
 * caller's role does not allow it / not a member), -PARLEY_ENOTFOUND (no
 * such group, or a user named is not a member), -PARLEY_ETOOBIG (over the
 * server's group_max_members or 256 users in one call), -PARLEY_EINVAL.
 * GROUP_CREATE is retried with the same create_id, so a retry cannot make
 * a second group; a retried ADD of users already added succeeds.
 */
/* Create a group named `name` (1..255 bytes) with the caller as owner and
 * users[0..n) as members. settings: PARLEY_GROUPF_HISTORY_ALL or 0. */
int parley_client_group_create(struct parley_client *c, const char *name,
			       uint8_t settings, const char *const *users,
			       size_t n, const struct parley_group_ok **ok);
/* Add users (role PARLEY_ROLE_MEMBER, or PARLEY_ROLE_ADMIN: owner only). */
int parley_client_group_add(struct parley_client *c, const char *conv,
			    const char *const *users, size_t n, uint8_t role,
			    const struct parley_group_ok **ok);
int parley_client_group_remove(struct parley_client *c, const char *conv,
			       const char *const *users, size_t n,
			       const struct parley_group_ok **ok);
int parley_client_group_leave(struct parley_client *c, const char *conv,
			      const struct parley_group_ok **ok);
/* Give users[0..n) a role (owner only; PARLEY_ROLE_OWNER hands ownership
 * over to one user, the caller becomes an admin). */
int parley_client_group_role(struct parley_client *c, const char *conv,
			     const char *const *users, size_t n, uint8_t role,
			     const struct parley_group_ok **ok);
/* GROUP_SET: change the group's name (fields PARLEY_GSET_NAME; name
 * 1..255 bytes UTF-8) and/or its history setting (PARLEY_GSET_SETTINGS;
 * settings PARLEY_GROUPF_HISTORY_ALL or 0 = from join). Renaming: owner
 * or admins; the history setting: owner only. A request that changes
 * nothing succeeds with PARLEY_GROUPF_DUPLICATE (seq = the last
 * membership event). Other members' devices get a MEMBERSHIP event. */
int parley_client_group_set(struct parley_client *c, const char *conv,
			    uint8_t fields, const char *name, uint8_t settings,
			    const struct parley_group_ok **ok);
/* Name, settings, the caller's role and members [from_index, +limit) in
 * join order (limit 1..256; next_index 0 = no more). *info borrows. */
int parley_client_group_info(struct parley_client *c, const char *conv,
			     uint32_t from_index, uint16_t limit,
			     const struct parley_group_info_ok **info);

/* A membership event's body (EVENT / HISTORY record of kind MEMBERSHIP,
 * content_type PARLEY_CT_MEMBERSHIP) in words, without the actor, e.g.
 * `added bob, carol`, `removed dave`, `left`, `made bob admin`,
 * `created the group "Team" with bob, carol`, `renamed the group to
 * "Club"`. NUL-terminated into
 * out[0..cap) (cut with "..." when longer); returns its length, or
 * -PARLEY_EPROTO when body is not a membership event. Pure. */
int parley_membership_describe(const uint8_t *body, size_t len, char *out,
			       size_t cap);

/* Round trip to the server (keepalive / latency probe). */
int parley_client_ping(struct parley_client *c);

/* ---- events ----------------------------------------------------------------- */

/*
 * Subscribe to the inbox (SYNC). from_inbox_seq as in the protocol: the
 * first inbox seq wanted, or 0 to resume after this device's server-side
 * cursor. After a reconnect the client re-subscribes from its own cursor
 * (last delivered + 1). *ok (may be NULL) receives SYNC_OK's numbers.
 */
int parley_client_subscribe(struct parley_client *c, uint64_t from_inbox_seq,
			    struct parley_sync_ok *ok);
/* The last inbox_seq delivered to on_event (0 = none yet). Persist it to
 * resume across restarts with parley_client_subscribe(c, cursor + 1). */
uint64_t parley_client_inbox_cursor(const struct parley_client *c);

/* Large groups (read fan-out): this object's position in group conv —
 * every message seq <= *seq was delivered to on_event (or is not the
 * user's). Persist it next to the inbox cursor to resume across process
 * restarts: a new object given it with parley_client_set_group_position()
 * before subscribing reads the group back from *seq + 1 after SYNC_OK
 * (live messages that were in flight when the old process died included).
 * 0, or -PARLEY_ENOTFOUND (no position kept for conv). */
int parley_client_group_position(const struct parley_client *c,
				 const char *conv, uint64_t *seq);
/* 0, -PARLEY_EINVAL (not a group id), -PARLEY_EFULL (too many groups with
 * a catch-up pending). */
int parley_client_set_group_position(struct parley_client *c, const char *conv,
				     uint64_t seq);

/* ---- event loop ------------------------------------------------------------- */

/* The socket, or -1 when not connected. Changes across reconnects. */
int parley_client_fd(const struct parley_client *c);
/* Read what is available without blocking, dispatch frames, send due acks
 * and keepalives. Returns the number of events delivered (>= 0),
 * -PARLEY_ECLOSED when the connection is gone (reconnect to continue),
 * or another negative error. */
int parley_client_process(struct parley_client *c);
/* Milliseconds until process() must run for keepalive even without input. */
int parley_client_next_timeout_ms(const struct parley_client *c);
/* Wait up to timeout_ms (-1 = forever) for input, process it, and
 * reconnect (with backoff, within the timeout) when the connection is
 * gone and reconnecting is allowed. Returns events delivered (>= 0), or a
 * negative error (-PARLEY_EAUTH etc. when reconnecting is hopeless). */
int parley_client_poll(struct parley_client *c, int timeout_ms);

/* ---- typing and presence ---------------------------------------------------- */

/*
 * Tell the conversation's other members that this user is typing
 * (PARLEY_TYPING_STARTED) or stopped. Never blocks for a reply and never
 * reconnects (typing is ephemeral): -PARLEY_ECLOSED when not connected.
 * Call it on every keystroke: STARTED is sent at most every
 * PARLEY_TYPING_REFRESH_MS per conversation (0 is returned for the ones
 * not sent); STOPPED only after a STARTED. When the server refused a
 * TYPING (ERROR with request_id 0, see parley_client_notify_error), the
 * calls return that error without sending until its retry_after_ms has
 * passed (RATE) — never silently.
 */
int parley_client_typing(struct parley_client *c, const char *conv, int state);
/* The last ERROR the server sent about a notification (request_id 0,
 * not fatal: a refused TYPING or EVENT_ACK): -code, or 0 if none since the
 * last call; retry_after_ms (may be NULL) gets its retry-after. Clears it. */
int parley_client_notify_error(struct parley_client *c, uint32_t *retry_after_ms);

/* Subscribe to (op PARLEY_PRESENCE_SUBSCRIBE) or unsubscribe from the
 * presence of n users (1..PARLEY_PROTO_MAX_PRESENCE_USERS). *ok (may be
 * NULL) borrows the reply: the current state of each user subscribed,
 * the server's heartbeat and TTL. Then PRESENCE pushes come to
 * opts.on_presence on every change. A push that arrives right behind the
 * reply may be passed to on_presence before this call returns; its view
 * is then already in *ok, so applying *ok after the callbacks never goes
 * back to an older state. Subscriptions belong to the
 * connection: after a reconnect, subscribe again. -PARLEY_EFULL over the
 * server's presence_subs_max. */
int parley_client_presence_sub(struct parley_client *c, int op,
			       const char *const *users, size_t n,
			       const struct parley_presence_sub_ok **ok);
/* Set the caller's presence settings (PARLEY_PRESF_*), durable before it
 * returns 0. */
int parley_client_presence_set(struct parley_client *c, uint32_t flags);

/* ---- why something failed ----------------------------------------------------- */

/* What the last failed connect or request ran into, beyond its error code,
 * so applications can tell people the cause and what to do. */
enum parley_client_fail_kind {
	PARLEY_FAIL_NONE = 0,
	PARLEY_FAIL_RESOLVE = 1, /* the host name does not resolve */
	PARLEY_FAIL_CONNECT = 2, /* TCP connect failed; err = -errno (-ECONNREFUSED ...) */
	PARLEY_FAIL_TIMEOUT = 3, /* no answer within connect_timeout_ms */
	PARLEY_FAIL_TLS_VERIFY = 4, /* the server's certificate is not trusted or
				       not for this name; text = the reason. Fatal. */
	PARLEY_FAIL_TLS = 5, /* TLS handshake failed otherwise (not a TLS port?) */
	PARLEY_FAIL_PLAIN_GOT_TLS = 6, /* plain client, the server answered with TLS */
	PARLEY_FAIL_CLOSED = 7, /* the server closed during the handshake, no reason */
	PARLEY_FAIL_PROTOCOL = 8, /* the peer does not speak parley's protocol */
	PARLEY_FAIL_SERVER = 9, /* the server answered ERROR: err = -code, text =
				   its text (e.g. why a token was refused) */
	PARLEY_FAIL_GOAWAY = 10, /* the server sent GOAWAY: goaway_reason, text,
				    retry_after_ms; AUTH_EXPIRED is fatal (err =
				    -PARLEY_EAUTH) */
};

struct parley_client_failure {
	int kind; /* enum parley_client_fail_kind */
	int err; /* the negative error code that went with it */
	uint16_t goaway_reason; /* kind GOAWAY: enum parley_goaway_reason */
	uint32_t retry_after_ms; /* kind GOAWAY, or kind SERVER when the server
				    refused HELLO (AGAIN: too many handshakes);
				    the next reconnect waits at least this */
	char text[256]; /* the server's or the TLS library's words ("" = none) */
};

/* The cause of the last failure (kind NONE if the last connect/call had no
 * recorded cause). Reset at the start of each connect and request; a GOAWAY
 * is recorded when it arrives (readable from on_state). Borrowed. */
const struct parley_client_failure *parley_client_failure(const struct parley_client *c);

/* Replace the token used by the next connect (e.g. a refreshed one after
 * -PARLEY_EAUTH or GOAWAY AUTH_EXPIRED); clears the fatal state so the
 * next connect tries again. Copies the string. */
int parley_client_set_token(struct parley_client *c, const char *token);

/* last_inbox_seq from the latest SYNC_OK (first subscribe or resume):
 * events up to it were stored before that (re)subscription (catch-up),
 * later ones are live. 0 before any SYNC_OK. */
uint64_t parley_client_sync_last(const struct parley_client *c);

/* Fill out with 16 random bytes (getrandom). */
int parley_client_random_id(uint8_t out[PARLEY_PROTO_MSG_ID_LEN]);

#endif /* PARLEY_CLIENT_H */
