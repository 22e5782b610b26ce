/*
 * cli.h — the pure parts of `parley`, the terminal client: chat-line
 * parsing, the outbox of typed lines, and turning an error into one line
 * that names its cause (with the exit code that goes with it).
 *
 * Nothing here does I/O or keeps global state, so all of it is unit-tested
 * (tests/unit/tools/test_cli.c). The interactive client (cli_chat.c) and the
 * command dispatcher (parley_cli.c) are built on it.
 * Threads: none inside; an outbox is guarded by its user (cli_chat.c holds
 * one mutex around every call).
 */
#ifndef PARLEY_CLI_H
#define PARLEY_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "parley_client.h"

/* ---- exit codes (docs/CLIENT.md) ---------------------------------------------- */

enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_REFUSED = 1, /* the server refused the request (permission,
				 not found, invalid, too large, version) */
	CLI_EXIT_USAGE = 2, /* bad command line, unreadable file named on it */
	CLI_EXIT_CONN = 3, /* cannot connect / TLS / connection lost / timeout */
	CLI_EXIT_AUTH = 4, /* the token was refused or has expired */
};

/* ---- errors that name their cause --------------------------------------------- */

struct cli_target { /* where we tried to go, for the messages */
	const char *host;
	unsigned port;
	int tls;
	const char *ca; /* NULL = system trust store */
};

/*
 * One line (no trailing newline) saying what went wrong and what to do,
 * from the error code and, when present, the library's recorded failure
 * (f may be NULL). Returns the exit code for it.
 */
int cli_explain(int err, const struct parley_client_failure *f,
		const struct cli_target *t, char *out, size_t cap);
/* The exit code alone. */
int cli_exit_code(int err, const struct parley_client_failure *f);
/* What a GOAWAY reason means, for people ("the server is shutting down"). */
const char *cli_goaway_text(unsigned reason);

/* ---- chat lines ----------------------------------------------------------------- */

enum cli_cmd_kind {
	CLI_CMD_EMPTY = 0, /* nothing (or only blanks): not sent */
	CLI_CMD_TEXT, /* a message: arg/arg_len */
	CLI_CMD_TO, /* /to PEER: arg = peer */
	CLI_CMD_HISTORY, /* /history [N] [--before SEQ]: limit, before */
	CLI_CMD_LIST, /* /list */
	CLI_CMD_HELP, /* /help */
	CLI_CMD_QUIT, /* /quit */
	CLI_CMD_UNKNOWN, /* /something else: arg = the command word */
	CLI_CMD_BAD, /* a known command used wrongly: err = what is right */
	CLI_CMD_EDIT, /* /edit SEQ TEXT: before = SEQ, arg/arg_len = the new text */
	CLI_CMD_DELETE, /* /delete SEQ: before = SEQ */
	CLI_CMD_RETENTION, /* /retention [off | count N | age DUR ...]: ret_* */
	/* groups: words[0..nwords) = the users named */
	CLI_CMD_GROUP_CREATE, /* /group create NAME USER...: arg = NAME */
	CLI_CMD_GROUP_ADD, /* /add USER... */
	CLI_CMD_GROUP_REMOVE, /* /remove USER... */
	CLI_CMD_GROUP_LEAVE, /* /leave */
	CLI_CMD_GROUP_MEMBERS, /* /members */
	CLI_CMD_GROUP_SET, /* /group set name NEW NAME (arg: the rest of the
			      line) | /group set history all|join: gset_* */
};
#define CLI_EDIT_MAX 2048 /* bytes of /edit text the terminal client sends */
#define CLI_GROUP_WORDS_MAX 32 /* users named in one typed group command */

#define CLI_HISTORY_DEFAULT 20

struct cli_cmd {
	enum cli_cmd_kind kind;
	const char *arg; /* points into the line */
	size_t arg_len;
	unsigned limit; /* HISTORY: 1..PARLEY_PROTO_MAX_HISTORY */
	uint64_t before; /* HISTORY: 0 = newest; EDIT / DELETE: the message's seq */
	const char *err; /* BAD: a static usage line */
	int ret_set; /* RETENTION: 1 = set ret_age_ms / ret_count, 0 = show */
	uint64_t ret_age_ms, ret_count;
	const char *words[CLI_GROUP_WORDS_MAX]; /* group commands: users */
	unsigned nwords;
	uint8_t gset_fields; /* GROUP_SET: PARLEY_GSET_NAME or _SETTINGS */
	uint8_t gset_settings; /* ... PARLEY_GROUPF_HISTORY_ALL or 0 (join) */
};

/*
 * Parse one typed line (modified in place: trailing newline and blanks are
 * cut, words are NUL-terminated). A line starting with "//" is the text
 * "/..." (how to send a message that starts with a slash).
 */
void cli_parse_line(char *line, struct cli_cmd *out);
/* True iff s is a group conversation id ("g:" + 16 lowercase hex). */
int cli_is_group_id(const char *s);

/* The interactive commands, one per line, for /help. */
extern const char cli_chat_help[];

/* ---- outbox ----------------------------------------------------------------------- */

/*
 * Every typed message goes through the outbox: it gets its client_msg_id
 * when typed and keeps it until the server acknowledged it, so a line typed
 * while disconnected is sent when the connection returns, and a retry after
 * a lost ack is a duplicate the server recognises (it dedups by
 * (conversation, client_msg_id)) — never lost, never doubled. Messages go
 * out in typed order (cli_outbox_next is the oldest pending one). Sent
 * entries stay until their slot is needed, so the echo of our own message
 * (the inbox EVENT) can be recognised and not printed twice.
 */
#define CLI_OUTBOX_MAX 256

enum cli_ob_state {
	CLI_OB_FREE = 0,
	CLI_OB_PENDING, /* waiting for a connection / its turn */
	CLI_OB_SENDING, /* handed to the network (fate unknown until the ack) */
	CLI_OB_SENT, /* acknowledged: durable at seq */
	CLI_OB_FAILED, /* refused by the server (err): will not be retried */
};

struct cli_ob_entry {
	enum cli_ob_state state;
	uint32_t no; /* 1, 2, ... in typed order: the line's local number */
	uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
	char peer[PARLEY_PROTO_MAX_USER_ID + 1];
	char *body; /* owned (malloc) */
	size_t len;
	uint64_t seq; /* SENT */
	uint64_t ts_ms; /* SENT: server time */
	int err; /* FAILED */
};

struct cli_outbox {
	struct cli_ob_entry e[CLI_OUTBOX_MAX];
	uint32_t next_no;
};

void cli_outbox_init(struct cli_outbox *ob);
void cli_outbox_free(struct cli_outbox *ob);
/* Queue a message for peer with the given id; returns its number (> 0), or
 * -PARLEY_EFULL when CLI_OUTBOX_MAX messages are still unsent, -PARLEY_ENOMEM. */
int cli_outbox_add(struct cli_outbox *ob, const char *peer, const void *body,
		   size_t len, const uint8_t id[PARLEY_PROTO_MSG_ID_LEN]);
/* The oldest PENDING entry (NULL = none); it becomes SENDING. At most one
 * entry is SENDING at a time: NULL while one is. */
struct cli_ob_entry *cli_outbox_next(struct cli_outbox *ob);
/* The fate of entry no: acknowledged at seq / back to pending (fate unknown,
 * same id next time) / refused for good. Unknown numbers are ignored. */
void cli_outbox_sent(struct cli_outbox *ob, uint32_t no, uint64_t seq, uint64_t ts_ms);
void cli_outbox_retry(struct cli_outbox *ob, uint32_t no);
void cli_outbox_failed(struct cli_outbox *ob, uint32_t no, int err);
/* The entry holding this client_msg_id (any state but FREE), or NULL. */
const struct cli_ob_entry *cli_outbox_find_id(const struct cli_outbox *ob,
					      const uint8_t id[PARLEY_PROTO_MSG_ID_LEN]);
/* Entries not yet acknowledged (PENDING + SENDING). */
unsigned cli_outbox_unsent(const struct cli_outbox *ob);

/* ---- the interactive client (cli_chat.c) ------------------------------------------- */

struct cli_chat;

/* Called from the client's callbacks (opts.on_event / on_state, with
 * opts.user pointing at the chat): route them here. */
void cli_chat_on_event(struct cli_chat *ch, const struct parley_event *ev);
/* opts.on_receipt: the peer's read receipts of the current conversation
 * are shown ("has read up to #N  [read]"). */
void cli_chat_on_receipt(struct cli_chat *ch, const struct parley_event *ev);
void cli_chat_on_state(struct cli_chat *ch, enum parley_client_state st, int err);
/* opts.on_typing / on_presence: the peer's typing indicator and presence
 * in the status prompt. */
void cli_chat_on_typing(struct cli_chat *ch, const struct parley_typing_push *t);
void cli_chat_on_presence(struct cli_chat *ch, const struct parley_presence_rec *p);

/*
 * Run the interactive chat on a connected client c (created with the
 * callbacks above and *slot as their user: cli_chat_run stores the chat
 * there for them). peer may be NULL. token_cmd (may be NULL) is a shell
 * command printing a fresh token, run when the server says the token
 * expired or refuses it. Returns the exit code; the network thread may
 * still be inside c then, so the caller exits without freeing c.
 */
int cli_chat_run(struct parley_client *c, struct cli_chat **slot, const char *peer,
		 const struct cli_target *t, const char *token_cmd);

/* Run token_cmd and put its first output line (the token) into out.
 * 0, or -1 (with a message in out) on failure. */
int cli_token_from_cmd(const char *token_cmd, char *out, size_t cap);

#endif /* PARLEY_CLI_H */
