/*
 * cli_chat.c — `parley chat`: the interactive terminal client.
 *
 * Two threads, so typing never waits for the network:
 *
 *   UI thread (main)                       network thread
 *   ----------------                       --------------
 *   libedit line editing + history         owns the parley_client: connects,
 *   (callback interface), prompt =         reconnects with backoff, sends the
 *   status line; parses typed lines;       outbox in typed order, serves
 *   puts messages in the outbox and        /to /history /list, receives events
 *   requests in the queue; prints what     and formats them into lines for
 *   the network thread formatted           the UI
 *            \_____ shared under ch->mu: outbox, request queue, lines to
 *                   show, status (online, peer, unsent count) _____/
 *   Each side wakes the other through a pipe. Only the UI thread writes to
 *   the terminal: a line arriving while the user types is printed above
 *   the input line, which is then redrawn with what was typed so far.
 *
 * Invariants:
 *   1. A typed line goes into the outbox with its client_msg_id before
 *      anything is sent; it leaves only when acknowledged (or refused for
 *      good), and retries reuse the id: never lost, never doubled.
 *   2. The UI thread never blocks on the network; the network thread never
 *      touches the terminal.
 *   3. Nothing takes ch->mu while calling into the client library (its
 *      callbacks take ch->mu themselves).
 *   4. An authentication failure (refused token, GOAWAY AUTH_EXPIRED, an
 *      untrusted certificate) never loops: the token command (if any) is
 *      tried once, else the chat ends with the cause and exit code 4/3.
 *
 * Typing and presence: while the user types a line to a peer (not a
 * command), the UI thread asks the network thread to send TYPING STARTED
 * (libparley sends it at most every 3 s) and STOPPED when the line is sent
 * or erased. The peer's TYPING_PUSH shows "PEER is typing..." in the
 * prompt until STOPPED or its ttl_ms; the network thread subscribes to the
 * peer's presence (again after each reconnect, and when the peer changes)
 * and the prompt shows "online" or "last seen HH:MM".
 *
 * Own lines: shown once. A typed line is drawn as "[sending]" (or
 * "[pending: offline]") in a block just above the prompt; other output is
 * printed above that block, and when the server acknowledges the line it
 * leaves the block as "#seq ... [sent]" (the block is erased and redrawn,
 * so each line stays one line on screen). At most CHAT_PEND_MAX lines, and
 * no more rows than the terminal has minus two, stay in the block; older
 * ones are left where they are and their sent line is printed anew. Without a terminal
 * (stdin or stdout not a tty) there is no line editing: lines are read from
 * stdin, and each own message is printed once, when acknowledged.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <editline/readline.h>

#include "cli.h"

#define CHAT_SHOW_MAX 4096 /* formatted lines waiting for the UI thread */
#define CHAT_REQ_MAX 16 /* queued /to /history /list requests */
#define CHAT_RECONNECT_MIN_MS 250
#define CHAT_RECONNECT_MAX_MS 8000
#define CHAT_INPUT_MAX 65536 /* one typed line without a terminal */
#define CHAT_TOKEN_PROVEN_MS 10000 /* a refreshed token that held this long */
#define CHAT_PEND_MAX 32 /* own pending lines kept redrawable at the bottom */

enum show_kind {
	SHOW_LINE, /* print text */
	SHOW_OWN_FINAL, /* entry `no` was acknowledged (or refused): text is its
			   final line */
	SHOW_STATUS, /* status changed: redraw the prompt */
	SHOW_FATAL, /* print text, then leave with `code` */
};

struct show {
	enum show_kind kind;
	uint32_t no;
	int code;
	char *text;
	struct show *next;
};

enum req_kind { REQ_TO, REQ_HISTORY, REQ_LIST, REQ_EDIT, REQ_DELETE, REQ_RETENTION,
		REQ_GROUP };

struct req {
	enum req_kind kind;
	char peer[PARLEY_PROTO_MAX_USER_ID + 1]; /* GROUP: the group (not create) */
	unsigned limit;
	uint64_t before;      /* HISTORY; EDIT / DELETE: the message's seq */
	char *text;           /* EDIT: malloc'd new text (freed when done) */
	size_t text_len;
	int ret_set;          /* RETENTION */
	uint64_t ret_age_ms, ret_count;
	/* REQ_GROUP */
	enum cli_cmd_kind gcmd;
	char name[256];
	unsigned nusers;
	char users[CLI_GROUP_WORDS_MAX][PARLEY_PROTO_MAX_USER_ID + 1];
	uint8_t gset_fields, gset_settings; /* CLI_CMD_GROUP_SET */
};

struct cli_chat {
	struct parley_client *c;
	const struct cli_target *t;
	const char *token_cmd;
	int tty;
	int wake_net[2], wake_ui[2];
	pthread_t net;

	pthread_mutex_t mu; /* guards everything down to "network thread only" */
	pthread_cond_t room;
	struct cli_outbox ob;
	struct req req[CHAT_REQ_MAX];
	unsigned req_head, req_n;
	struct show *sh_head, *sh_tail;
	unsigned sh_n;
	char me[PARLEY_PROTO_MAX_USER_ID + 1];
	char peer[PARLEY_PROTO_MAX_USER_ID + 1]; /* current peer ("" = none) */
	int online;
	int quit;
	uint32_t max_body;
	int typing_want; /* 1 = STARTED, 2 = STOPPED to send, 0 = nothing */
	int typing_on; /* UI thread: a STARTED was asked for this line */
	uint64_t peer_typing_until; /* mono ms; 0 = the peer is not typing */
	char peer_presence[48]; /* "online", "last seen ...", "" = unknown */

	/* network thread only */
	char conv_peer[PARLEY_PROTO_MAX_USER_ID + 1]; /* conv_id below is for it */
	char conv_id[PARLEY_PROTO_MAX_CONV_ID + 1];
	int in_catchup;
	uint64_t catchup_end;
	uint32_t goaway_ms; /* a GOAWAY asked us to come back after this */
	int goaway;
	int goaway_shown; /* the outage was already explained */
	int just_refreshed; /* a new token was fetched and has not yet held */
	uint64_t connected_at_ms;
	char pres_peer[PARLEY_PROTO_MAX_USER_ID + 1]; /* subscribed on this
							 connection ("" = none) */
	/* read markers: messages of conv_id shown up to read_want; the server
	 * has read_sent (one READ_MARKER per batch of shown messages) */
	uint64_t read_want, read_sent;
	uint64_t peer_read_shown; /* the peer's read receipt last shown */

	/* UI thread only */
	struct pend_line { /* own lines not yet final, drawn just above the prompt */
		uint32_t no;
		char *text;
	} pend[CHAT_PEND_MAX];
	int npend;
	int quit_warned;
	int quit_when_sent; /* no terminal: /quit or end of input, once sent */
	int group_pending; /* a /group create is under way: typed lines wait
			      (they may be meant for the new group) */
	int in_handler;
	int exit_code;
	int done;
	char prompt[320]; /* see ui_make_prompt */
};

static volatile sig_atomic_t chat_sigint;
static int chat_sig_fd = -1;

static uint64_t mono_ms(void)
{
	return parley_mono_ns() / 1000000u;
}

static void wake(int fd)
{
	char b = 1;
	ssize_t r = write(fd, &b, 1); /* a full pipe is already awake */
	(void)r;
}

static void drain(int fd)
{
	char buf[256];
	while (read(fd, buf, sizeof buf) > 0)
		;
}

/* ---- lines for the UI (any thread; takes mu) ------------------------------------------ */

static void show_push(struct cli_chat *ch, enum show_kind kind, uint32_t no, int code,
		      char *text /* owned, may be NULL */)
{
	struct show *s = calloc(1, sizeof *s);
	if (!s) {
		free(text);
		return;
	}
	s->kind = kind;
	s->no = no;
	s->code = code;
	s->text = text;
	pthread_mutex_lock(&ch->mu);
	/* bounded: the network thread waits for the UI (back-pressure) */
	while (ch->sh_n >= CHAT_SHOW_MAX && !ch->quit)
		pthread_cond_wait(&ch->room, &ch->mu);
	if (ch->sh_tail)
		ch->sh_tail->next = s;
	else
		ch->sh_head = s;
	ch->sh_tail = s;
	ch->sh_n++;
	pthread_mutex_unlock(&ch->mu);
	wake(ch->wake_ui[1]);
}

static void show_f(struct cli_chat *ch, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void show_f(struct cli_chat *ch, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n >= 0)
		show_push(ch, SHOW_LINE, 0, 0, s);
}

/* ---- formatting ------------------------------------------------------------------------ */

static void fmt_time(uint64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000), now = time(NULL);
	struct tm tm, tn;
	localtime_r(&t, &tm);
	localtime_r(&now, &tn);
	if (tm.tm_year == tn.tm_year && tm.tm_yday == tn.tm_yday)
		strftime(out, cap, "%H:%M:%S", &tm);
	else
		strftime(out, cap, "%Y-%m-%d %H:%M", &tm);
}

/* Body on one line: text with control characters escaped. */
static void put_body(FILE *f, uint16_t ct, const uint8_t *p, size_t len)
{
	char desc[512];
	if (ct == PARLEY_CT_MEMBERSHIP &&
	    parley_membership_describe(p, len, desc, sizeof desc) >= 0) {
		fprintf(f, "* %s", desc); /* a group membership change */
		return;
	}
	if (ct != PARLEY_CT_TEXT && ct != PARLEY_CT_JSON) {
		fprintf(f, "<%zu bytes, content type %u>", len, ct);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t c = p[i];
		if (c == '\n')
			fputs("\\n", f);
		else if (c == '\\')
			fputs("\\\\", f);
		else if (c < 0x20 || c == 0x7F)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
}

/* What a message line shows. */
struct line_msg {
	const char *prefix; /* "  | " for history */
	uint64_t ts_ms, seq; /* seq 0 = not yet known (pending) */
	const char *who; /* as shown on a terminal ("you", "bob") */
	size_t who_len;
	const char *sender; /* the user id (script format) */
	size_t sender_len;
	const char *conv; /* script format */
	size_t conv_len;
	uint16_t ct;
	const uint8_t *body;
	size_t len;
	const char *suffix; /* "  [sent]", "   (in conv)" */
};

/*
 * One message line, malloc'd. On a terminal: "[time] #seq who: body" with
 * the prefix and suffix. Without one (script): the stable format of
 * `parley watch`: "[YYYY-MM-DD HH:MM:SS] conv #seq sender: body" (UTC).
 */
static char *fmt_msg(int tty, const struct line_msg *m)
{
	char *s = NULL;
	size_t sl = 0;
	FILE *f = open_memstream(&s, &sl);
	if (!f)
		return NULL;
	if (!tty) {
		time_t t = (time_t)(m->ts_ms / 1000);
		struct tm tm;
		char ts[32];
		gmtime_r(&t, &tm);
		strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
		fprintf(f, "[%s] %.*s #%llu %.*s: ", ts, (int)m->conv_len, m->conv,
			(unsigned long long)m->seq, (int)m->sender_len, m->sender);
		put_body(f, m->ct, m->body, m->len);
		fclose(f);
		return s;
	}
	char t[32] = "--:--:--";
	if (m->ts_ms)
		fmt_time(m->ts_ms, t, sizeof t);
	fprintf(f, "%s[%s] ", m->prefix ? m->prefix : "", t);
	if (m->seq)
		fprintf(f, "#%llu ", (unsigned long long)m->seq);
	fprintf(f, "%.*s: ", (int)m->who_len, m->who);
	put_body(f, m->ct, m->body, m->len);
	fputs(m->suffix ? m->suffix : "", f);
	fclose(f);
	return s;
}

/* An own line (conv may be NULL while it is pending). Called under mu. */
static char *fmt_own(const struct cli_chat *ch, const struct cli_ob_entry *e,
		     const char *conv, const char *suffix)
{
	struct line_msg m = {
		.ts_ms = e->ts_ms ? e->ts_ms : (uint64_t)time(NULL) * 1000,
		.seq = e->seq, .who = "you", .who_len = 3,
		.sender = ch->me, .sender_len = strlen(ch->me),
		.conv = conv ? conv : "", .conv_len = conv ? strlen(conv) : 0,
		.ct = PARLEY_CT_TEXT, .body = (const uint8_t *)e->body, .len = e->len,
		.suffix = suffix,
	};
	return fmt_msg(ch->tty, &m);
}

/* ---- callbacks (network thread, inside library calls) --------------------------------- */

void cli_chat_on_event(struct cli_chat *ch, const struct parley_event *ev)
{
	if (!ch)
		return;
	pthread_mutex_lock(&ch->mu);
	int own = cli_outbox_find_id(&ch->ob, ev->client_msg_id) != NULL;
	int from_me = ev->sender.len == strlen(ch->me) &&
		      !memcmp(ev->sender.p, ch->me, ev->sender.len);
	pthread_mutex_unlock(&ch->mu);
	/* catch-up: events stored before the latest (re)subscription. Its
	 * header is printed before the first line shown, so a catch-up made
	 * only of our own echoes prints nothing. */
	uint64_t last = parley_client_sync_last(ch->c);
	int catchup = ev->inbox_seq <= last && ev->inbox_seq > ch->catchup_end;
	if (!own) { /* our own typed lines are shown by the outbox already */
		if (catchup && !ch->in_catchup && ch->tty) {
			char t[32];
			fmt_time(ev->server_ts_ms, t, sizeof t);
			show_f(ch, "-- %llu new since %s --",
			       (unsigned long long)(last - ev->inbox_seq + 1), t);
			ch->in_catchup = 1;
		}
		char suffix[PARLEY_PROTO_MAX_CONV_ID + 64] = "";
		int here = ch->conv_id[0] && ev->conv.len == strlen(ch->conv_id) &&
			   !memcmp(ev->conv.p, ch->conv_id, ev->conv.len);
		if (!here)
			snprintf(suffix, sizeof suffix, "   (in %.*s)", (int)ev->conv.len,
				 ev->conv.p);
		/* an edit / delete is shown as the message it changes: its seq,
		 * the new body, and what happened */
		char note[64];
		if (ev->kind == PARLEY_EV_EDIT || ev->kind == PARLEY_EV_DELETE) {
			snprintf(note, sizeof note, "%s", ev->kind == PARLEY_EV_EDIT
						      ? "  (edited)" : "");
			size_t sl = strlen(suffix);
			snprintf(suffix + sl, sizeof suffix - sl, "%s", note);
		}
		struct line_msg m = {
			.ts_ms = ev->server_ts_ms, .seq = ev->conv_seq,
			.who = from_me ? "you (other device)" : ev->sender.p,
			.who_len = from_me ? strlen("you (other device)") : ev->sender.len,
			.sender = ev->sender.p, .sender_len = ev->sender.len,
			.conv = ev->conv.p, .conv_len = ev->conv.len,
			.ct = ev->content_type, .body = ev->body.p, .len = ev->body.len,
			.suffix = suffix,
		};
		if (ev->kind == PARLEY_EV_EDIT || ev->kind == PARLEY_EV_DELETE)
			m.seq = ev->ref_seq; /* the message it changes */
		if (ev->kind == PARLEY_EV_DELETE) {
			m.ct = PARLEY_CT_TEXT;
			m.body = (const uint8_t *)"(deleted)";
			m.len = strlen("(deleted)");
		}
		char *s = fmt_msg(ch->tty, &m);
		if (s)
			show_push(ch, SHOW_LINE, 0, 0, s);
		if (here && !from_me && ev->conv_seq > ch->read_want)
			ch->read_want = ev->conv_seq; /* shown: read (net_read) */
	}
	if (catchup && ev->inbox_seq >= last) {
		if (ch->in_catchup)
			show_f(ch, "-- end of new messages --");
		ch->in_catchup = 0;
		ch->catchup_end = last;
	}
}

void cli_chat_on_receipt(struct cli_chat *ch, const struct parley_event *ev)
{
	if (!ch || !(ev->flags & PARLEY_RCPTF_READ))
		return; /* delivered receipts are not shown (one per ack batch) */
	int here = ch->conv_id[0] && ev->conv.len == strlen(ch->conv_id) &&
		   !memcmp(ev->conv.p, ch->conv_id, ev->conv.len);
	int from_me = ev->sender.len == strlen(ch->me) &&
		      !memcmp(ev->sender.p, ch->me, ev->sender.len);
	if (!here || from_me || ev->ref_seq <= ch->peer_read_shown)
		return;
	ch->peer_read_shown = ev->ref_seq;
	char t[32];
	fmt_time(ev->server_ts_ms, t, sizeof t);
	show_f(ch, "[%s] %.*s has read up to #%llu  [read]", t, (int)ev->sender.len,
	       ev->sender.p, (unsigned long long)ev->ref_seq);
}

void cli_chat_on_state(struct cli_chat *ch, enum parley_client_state st, int err)
{
	if (!ch || st != PARLEY_CLIENT_GOAWAY)
		return;
	const struct parley_client_failure *f = parley_client_failure(ch->c);
	ch->goaway = 1;
	ch->goaway_ms = f->kind == PARLEY_FAIL_GOAWAY ? f->retry_after_ms : 0;
	if (-err == PARLEY_GOAWAY_AUTH_EXPIRED)
		return; /* the network loop handles it as an auth failure */
	show_f(ch, "* %s%s%s%s: reconnecting in the background; what you type is kept "
		   "and sent when it is back", cli_goaway_text((unsigned)-err),
	       f->text[0] ? " (server: " : "", f->text, f->text[0] ? ")" : "");
	ch->goaway_shown = 1;
}

static int is_peer(const struct cli_chat *ch, struct parley_str u)
{
	return ch->peer[0] && u.len == strlen(ch->peer) && !memcmp(u.p, ch->peer, u.len);
}

void cli_chat_on_typing(struct cli_chat *ch, const struct parley_typing_push *t)
{
	if (!ch)
		return;
	pthread_mutex_lock(&ch->mu);
	int here = is_peer(ch, t->user) && ch->conv_id[0] &&
		   t->conv.len == strlen(ch->conv_id) &&
		   !memcmp(t->conv.p, ch->conv_id, t->conv.len);
	if (here)
		ch->peer_typing_until = t->state == PARLEY_TYPING_STARTED
						? mono_ms() + t->ttl_ms
						: 0;
	pthread_mutex_unlock(&ch->mu);
	if (here)
		show_push(ch, SHOW_STATUS, 0, 0, NULL);
}

static void fmt_presence(char *out, size_t cap, uint8_t status, uint64_t last_seen)
{
	if (status == PARLEY_PRESENCE_ONLINE) {
		snprintf(out, cap, "online");
	} else if (last_seen) {
		char t[32];
		fmt_time(last_seen, t, sizeof t);
		snprintf(out, cap, "last seen %s", t);
	} else {
		snprintf(out, cap, "offline");
	}
}

void cli_chat_on_presence(struct cli_chat *ch, const struct parley_presence_rec *p)
{
	if (!ch)
		return;
	pthread_mutex_lock(&ch->mu);
	int here = is_peer(ch, p->user);
	if (here)
		fmt_presence(ch->peer_presence, sizeof ch->peer_presence, p->status,
			     p->last_seen_ms);
	pthread_mutex_unlock(&ch->mu);
	if (here)
		show_push(ch, SHOW_STATUS, 0, 0, NULL);
}

/* ---- network thread ----------------------------------------------------------------- */

static int net_quitting(struct cli_chat *ch)
{
	pthread_mutex_lock(&ch->mu);
	int q = ch->quit;
	pthread_mutex_unlock(&ch->mu);
	return q;
}

static void set_online(struct cli_chat *ch, int online)
{
	pthread_mutex_lock(&ch->mu);
	int changed = ch->online != online;
	ch->online = online;
	if (online) {
		const struct parley_hello_ok *l = parley_client_limits(ch->c);
		ch->max_body = l->max_body;
	}
	pthread_mutex_unlock(&ch->mu);
	if (changed)
		show_push(ch, SHOW_STATUS, 0, 0, NULL);
}

/* Wait for the socket (fd >= 0), a wake-up, or timeout_ms. */
static void net_wait(struct cli_chat *ch, int fd, int timeout_ms)
{
	struct pollfd p[2] = {{ch->wake_net[0], POLLIN, 0}, {fd, POLLIN, 0}};
	int r = poll(p, fd >= 0 ? 2 : 1, timeout_ms);
	if (r > 0 && (p[0].revents & POLLIN))
		drain(ch->wake_net[0]);
}

static int is_auth_failure(int r, const struct parley_client_failure *f)
{
	return r == -PARLEY_EAUTH || r == -PARLEY_EVERSION ||
	       f->kind == PARLEY_FAIL_TLS_VERIFY;
}

/* The same token will not work again: refresh it once, or end the chat. */
static int net_auth_failed(struct cli_chat *ch, int r)
{
	const struct parley_client_failure *f = parley_client_failure(ch->c);
	int token_problem = (r == -PARLEY_EAUTH && f->kind != PARLEY_FAIL_TLS_VERIFY);
	/* a refreshed token that carried a connection for a while has proven
	 * itself; one refused at once (or expiring at once) ends the chat */
	if (ch->just_refreshed && ch->connected_at_ms &&
	    mono_ms() - ch->connected_at_ms >= CHAT_TOKEN_PROVEN_MS)
		ch->just_refreshed = 0;
	if (token_problem && ch->token_cmd && !ch->just_refreshed) {
		char tok[PARLEY_PROTO_MAX_TOKEN + 2];
		if (cli_token_from_cmd(ch->token_cmd, tok, sizeof tok) == 0 &&
		    parley_client_set_token(ch->c, tok) == 0) {
			memset(tok, 0, sizeof tok);
			ch->just_refreshed = 1;
			ch->connected_at_ms = 0; /* the new token has not held yet */
			ch->goaway_shown = 1; /* this outage is explained */
			show_f(ch, "* the token was refused or expired: got a new one from "
				   "--token-cmd, reconnecting");
			return 0;
		}
		show_f(ch, "* --token-cmd failed: %s", tok);
	}
	char msg[768];
	int code = cli_explain(r, f, ch->t, msg, sizeof msg);
	pthread_mutex_lock(&ch->mu);
	unsigned unsent = cli_outbox_unsent(&ch->ob);
	pthread_mutex_unlock(&ch->mu);
	if (unsent)
		show_f(ch, "* %u typed line%s could not be sent", unsent, unsent == 1 ? "" : "s");
	char *s = NULL;
	if (asprintf(&s, "parley: %s", msg) < 0)
		s = NULL;
	show_push(ch, SHOW_FATAL, 0, code, s);
	return -1;
}

/* The conversation with peer (cached). */
static int net_conv(struct cli_chat *ch, const char *peer)
{
	if (ch->conv_id[0] && !strcmp(ch->conv_peer, peer))
		return 0;
	if (cli_is_group_id(peer)) { /* a group: its id is the conversation */
		snprintf(ch->conv_id, sizeof ch->conv_id, "%s", peer);
		snprintf(ch->conv_peer, sizeof ch->conv_peer, "%s", peer);
		return 0;
	}
	const struct parley_conv *cv;
	int r = parley_client_conv_open(ch->c, peer, &cv);
	if (r < 0)
		return r;
	if (cv->conv.len > PARLEY_PROTO_MAX_CONV_ID)
		return -PARLEY_EPROTO;
	memcpy(ch->conv_id, cv->conv.p, cv->conv.len);
	ch->conv_id[cv->conv.len] = 0;
	snprintf(ch->conv_peer, sizeof ch->conv_peer, "%s", peer);
	ch->read_want = ch->read_sent = ch->peer_read_shown = 0;
	return 0;
}

/* Worth retrying: not a refusal that the same request would get again
 * (the same classification as the exit codes, cli_core.c). */
static int transient(int r)
{
	return cli_exit_code(r, NULL) == CLI_EXIT_CONN;
}

/* Tells the server what was shown of the current conversation: one
 * READ_MARKER for everything printed since the last one (not one per
 * message). Returns 1 if it sent one. */
static int net_read(struct cli_chat *ch)
{
	if (!ch->conv_id[0] || ch->read_want <= ch->read_sent)
		return 0;
	uint64_t want = ch->read_want;
	int r = parley_client_read_marker(ch->c, ch->conv_id, want, NULL);
	if (r == 0 || !transient(r))
		ch->read_sent = want; /* a refusal is not worth repeating */
	return 1;
}

static void net_history(struct cli_chat *ch, const struct req *q)
{
	int r = net_conv(ch, q->peer);
	const struct parley_history_page *pg = NULL;
	if (r == 0)
		r = parley_client_history(ch->c, ch->conv_id, q->before, (uint16_t)q->limit, &pg);
	if (r < 0) {
		char msg[768];
		cli_explain(r, parley_client_failure(ch->c), ch->t, msg, sizeof msg);
		show_f(ch, "* /history: %s", msg);
		return;
	}
	if (pg->count == 0) {
		show_f(ch, ch->tty ? "  | (no messages with %s%s)" : "(no messages with %s%s)",
		       q->peer, q->before ? " before that" : "");
		return;
	}
	if (ch->tty)
		show_f(ch, "  .-- history with %s: #%llu..#%llu --", q->peer,
		       (unsigned long long)pg->msgs[pg->count - 1].seq,
		       (unsigned long long)pg->msgs[0].seq);
	for (int i = pg->count - 1; i >= 0; i--) {
		const struct parley_hist_msg *m = &pg->msgs[i];
		int mine = m->sender.len == strlen(ch->me) &&
			   !memcmp(m->sender.p, ch->me, m->sender.len);
		struct line_msg lm = {
			.prefix = "  | ", .ts_ms = m->ts_ms, .seq = m->seq,
			.who = mine ? "you" : m->sender.p, .who_len = mine ? 3 : m->sender.len,
			.sender = m->sender.p, .sender_len = m->sender.len,
			.conv = ch->conv_id, .conv_len = strlen(ch->conv_id),
			.ct = m->content_type, .body = m->body.p, .len = m->body.len,
			.suffix = (m->flags & PARLEY_MSGF_EDITED) ? "  (edited)" : NULL,
		};
		if (m->flags & PARLEY_MSGF_DELETED) {
			lm.ct = PARLEY_CT_TEXT;
			lm.body = (const uint8_t *)"(deleted)";
			lm.len = strlen("(deleted)");
		}
		char *s = fmt_msg(ch->tty, &lm);
		if (s)
			show_push(ch, SHOW_LINE, 0, 0, s);
	}
	if (!ch->tty) {
		if (!(pg->flags & PARLEY_HISTF_END))
			show_f(ch, "(older: /history %u --before %llu)", q->limit,
			       (unsigned long long)pg->next_before_seq);
	} else if (pg->flags & PARLEY_HISTF_END) {
		show_f(ch, "  '-- start of the conversation --");
	} else {
		show_f(ch, "  '-- older: /history %u --before %llu --", q->limit,
		       (unsigned long long)pg->next_before_seq);
	}
}

/* /edit SEQ TEXT, /delete SEQ in the current conversation. */
static int net_edit(struct cli_chat *ch, const struct req *q)
{
	const char *what = q->kind == REQ_EDIT ? "/edit" : "/delete";
	int r = net_conv(ch, q->peer);
	struct parley_send_result res;
	if (r == 0)
		r = q->kind == REQ_EDIT
			    ? parley_client_edit(ch->c, ch->conv_id, q->before,
						 PARLEY_CT_TEXT, q->text, q->text_len,
						 &res)
			    : parley_client_delete(ch->c, ch->conv_id, q->before, &res);
	if (r < 0 && transient(r))
		return r; /* kept queued: done when the connection is back */
	if (r < 0) {
		char msg[768];
		if (r == -PARLEY_EPERM)
			snprintf(msg, sizeof msg, "#%llu is not your message",
				 (unsigned long long)q->before);
		else if (r == -PARLEY_ENOTFOUND)
			snprintf(msg, sizeof msg, "there is no message #%llu",
				 (unsigned long long)q->before);
		else
			cli_explain(r, parley_client_failure(ch->c), ch->t, msg,
				    sizeof msg);
		show_f(ch, "* %s %llu: %s", what, (unsigned long long)q->before, msg);
		return 0;
	}
	show_f(ch, "* #%llu %s", (unsigned long long)q->before,
	       q->kind == REQ_EDIT ? "edited" : "deleted for everyone");
	return 0;
}

static void fmt_limit(char *out, size_t cap, uint64_t age_ms, uint64_t count)
{
	if (!age_ms && !count) {
		snprintf(out, cap, "forever");
		return;
	}
	int n = 0;
	if (age_ms)
		n = snprintf(out, cap, "%llu s", (unsigned long long)(age_ms / 1000));
	if (count && n >= 0 && (size_t)n < cap)
		snprintf(out + n, cap - (size_t)n, "%sat most %llu messages",
			 n ? ", " : "", (unsigned long long)count);
}

/* /retention: show or set the conversation's own retention. */
static int net_retention(struct cli_chat *ch, const struct req *q)
{
	int r = net_conv(ch, q->peer);
	const struct parley_retention_ok *ok = NULL;
	if (r == 0)
		r = parley_client_retention(ch->c, ch->conv_id,
					    q->ret_set ? PARLEY_RETF_SET : 0,
					    q->ret_age_ms, q->ret_count, &ok);
	if (r < 0 && transient(r))
		return r;
	if (r < 0) {
		char msg[768];
		cli_explain(r, parley_client_failure(ch->c), ch->t, msg, sizeof msg);
		show_f(ch, "* /retention: %s", msg);
		return 0;
	}
	char own[128], def[128];
	fmt_limit(own, sizeof own, ok->max_age_ms, ok->max_count);
	fmt_limit(def, sizeof def, ok->default_max_age_ms, ok->default_max_count);
	show_f(ch, "* retention with %s: %s (server default: %s); oldest kept #%llu",
	       q->peer, ok->max_age_ms || ok->max_count ? own : "the default",
	       def, (unsigned long long)ok->first_seq);
	return 0;
}

static void net_list(struct cli_chat *ch)
{
	const struct parley_conv_list_ok *l;
	int r = parley_client_conv_list(ch->c, 50, &l);
	if (r < 0) {
		char msg[768];
		cli_explain(r, parley_client_failure(ch->c), ch->t, msg, sizeof msg);
		show_f(ch, "* /list: %s", msg);
		return;
	}
	if (l->count == 0)
		show_f(ch, "* no conversations yet: /to PEER to start one");
	for (int i = 0; i < l->count; i++) {
		const struct parley_conv_entry *e = &l->entries[i];
		char t[32] = "-";
		if (e->last_ts_ms)
			fmt_time(e->last_ts_ms, t, sizeof t);
		char unread[32] = "";
		if (e->unread)
			snprintf(unread, sizeof unread, "  %u unread", e->unread);
		if (e->kind == PARLEY_CONV_GROUP)
			show_f(ch, "  [group] %.*s (%u members%s)  last #%llu at %s%s   (/to %.*s)",
			       (int)e->title.len, e->title.p, e->member_count,
			       e->flags & PARLEY_CONVF_LEFT ? ", you left" : "",
			       (unsigned long long)e->last_seq, t, unread,
			       (int)e->conv.len, e->conv.p);
		else
			show_f(ch, "  %.*s  last #%llu at %s%s   (/to %.*s)", (int)e->peer.len,
			       e->peer.p, (unsigned long long)e->last_seq, t, unread,
			       (int)e->peer.len, e->peer.p);
	}
}

static const char *role_word(uint8_t r)
{
	return r == PARLEY_ROLE_OWNER ? "owner"
	       : r == PARLEY_ROLE_ADMIN ? "admin"
				       : "member";
}

/* /group create, /add, /remove, /leave, /members. Returns the error. */
static int net_group(struct cli_chat *ch, const struct req *q)
{
	const char *us[CLI_GROUP_WORDS_MAX];
	for (unsigned i = 0; i < q->nusers; i++)
		us[i] = q->users[i];
	const struct parley_group_ok *ok = NULL;
	int r;
	const char *what = "";
	switch (q->gcmd) {
	case CLI_CMD_GROUP_CREATE:
		what = "/group create";
		r = parley_client_group_create(ch->c, q->name, 0, us, q->nusers, &ok);
		if (r == 0) {
			char conv[PARLEY_PROTO_MAX_USER_ID + 1];
			snprintf(conv, sizeof conv, "%.*s", (int)ok->conv.len, ok->conv.p);
			pthread_mutex_lock(&ch->mu);
			snprintf(ch->peer, sizeof ch->peer, "%s", conv);
			pthread_mutex_unlock(&ch->mu);
			net_conv(ch, conv);
			show_f(ch, "* created the group %s (%s) with %u other member%s: "
				   "talking there now", q->name, conv, q->nusers,
			       q->nusers == 1 ? "" : "s");
		}
		if (r == 0 || !transient(r)) { /* done: the UI reads on */
			pthread_mutex_lock(&ch->mu);
			ch->group_pending = 0;
			pthread_mutex_unlock(&ch->mu);
			show_push(ch, SHOW_STATUS, 0, 0, NULL);
		}
		break;
	case CLI_CMD_GROUP_ADD:
		what = "/add";
		r = parley_client_group_add(ch->c, q->peer, us, q->nusers, 0, &ok);
		break;
	case CLI_CMD_GROUP_REMOVE:
		what = "/remove";
		r = parley_client_group_remove(ch->c, q->peer, us, q->nusers, &ok);
		break;
	case CLI_CMD_GROUP_LEAVE:
		what = "/leave";
		r = parley_client_group_leave(ch->c, q->peer, &ok);
		if (r == 0)
			show_f(ch, "* you left %s", q->peer);
		break;
	case CLI_CMD_GROUP_SET:
		what = "/group set";
		r = parley_client_group_set(ch->c, q->peer, q->gset_fields, q->name,
					    q->gset_settings, &ok);
		if (r == 0 && (ok->flags & PARLEY_GROUPF_DUPLICATE))
			show_f(ch, "* /group set: nothing to change");
		else if (r == 0)
			show_f(ch, "* /group set: done (#%llu)",
			       (unsigned long long)ok->seq);
		break;
	default: { /* CLI_CMD_GROUP_MEMBERS */
		what = "/members";
		uint32_t from = 0;
		do {
			const struct parley_group_info_ok *gi;
			r = parley_client_group_info(ch->c, q->peer, from, 256, &gi);
			if (r < 0)
				break;
			if (from == 0)
				show_f(ch, "* %.*s: %u member%s (you: %s)", (int)gi->name.len,
				       gi->name.p, gi->member_count,
				       gi->member_count == 1 ? "" : "s",
				       role_word(gi->my_role));
			for (unsigned i = 0; i < gi->count; i++)
				show_f(ch, "  %.*s%s%s", (int)gi->members[i].user.len,
				       gi->members[i].user.p,
				       gi->members[i].role == PARLEY_ROLE_MEMBER ? "" : " - ",
				       gi->members[i].role == PARLEY_ROLE_MEMBER
					       ? ""
					       : role_word(gi->members[i].role));
			from = gi->next_index;
		} while (from);
		break;
	}
	}
	if (r < 0 && !transient(r)) {
		char msg[768];
		cli_explain(r, parley_client_failure(ch->c), ch->t, msg, sizeof msg);
		show_f(ch, "* %s: %s", what, msg);
	}
	return r;
}

/* One queued request, if any. Returns 1 if it did something. */
static int net_request(struct cli_chat *ch)
{
	pthread_mutex_lock(&ch->mu);
	if (!ch->req_n) {
		pthread_mutex_unlock(&ch->mu);
		return 0;
	}
	struct req q = ch->req[ch->req_head];
	pthread_mutex_unlock(&ch->mu);

	int r = 0;
	if (q.kind == REQ_TO) {
		r = net_conv(ch, q.peer);
		if (r == 0) {
			show_f(ch, "* talking to %s (%s)", q.peer, ch->conv_id);
		} else if (!transient(r)) {
			char msg[768];
			cli_explain(r, parley_client_failure(ch->c), ch->t, msg, sizeof msg);
			show_f(ch, "* cannot talk to %s: %s", q.peer, msg);
			pthread_mutex_lock(&ch->mu);
			if (!strcmp(ch->peer, q.peer))
				ch->peer[0] = 0;
			pthread_mutex_unlock(&ch->mu);
			show_push(ch, SHOW_STATUS, 0, 0, NULL);
		}
	} else if (q.kind == REQ_HISTORY) {
		net_history(ch, &q);
	} else if (q.kind == REQ_EDIT || q.kind == REQ_DELETE) {
		r = net_edit(ch, &q);
	} else if (q.kind == REQ_RETENTION) {
		r = net_retention(ch, &q);
	} else if (q.kind == REQ_GROUP) {
		r = net_group(ch, &q);
	} else {
		net_list(ch);
	}
	if (r < 0 && transient(r))
		return 1; /* keep it queued: done when the connection is back */
	pthread_mutex_lock(&ch->mu);
	free(ch->req[ch->req_head].text);
	ch->req[ch->req_head].text = NULL;
	ch->req_head = (ch->req_head + 1) % CHAT_REQ_MAX;
	ch->req_n--;
	pthread_mutex_unlock(&ch->mu);
	/* a script waiting to leave once its requests are done (the UI may
	 * have drained this request's output before req_n dropped) */
	wake(ch->wake_ui[1]);
	return 1;
}

/* Typing and presence for the current peer (see the top). Never blocks
 * for long; failures only leave the prompt without the information. */
static void net_live(struct cli_chat *ch)
{
	pthread_mutex_lock(&ch->mu);
	char peer[sizeof ch->peer];
	memcpy(peer, ch->peer, sizeof peer);
	int want = ch->typing_want;
	ch->typing_want = 0;
	int expired = ch->peer_typing_until && mono_ms() >= ch->peer_typing_until;
	if (expired)
		ch->peer_typing_until = 0;
	pthread_mutex_unlock(&ch->mu);
	if (expired)
		show_push(ch, SHOW_STATUS, 0, 0, NULL);
	if (strcmp(peer, ch->pres_peer) != 0) {
		if (ch->pres_peer[0]) {
			const char *old[] = {ch->pres_peer};
			parley_client_presence_sub(ch->c, PARLEY_PRESENCE_UNSUBSCRIBE, old, 1,
						   NULL);
		}
		snprintf(ch->pres_peer, sizeof ch->pres_peer, "%s", peer);
		pthread_mutex_lock(&ch->mu);
		ch->peer_presence[0] = 0;
		ch->peer_typing_until = 0;
		pthread_mutex_unlock(&ch->mu);
		if (peer[0]) {
			const char *u[] = {peer};
			const struct parley_presence_sub_ok *ok;
			if (parley_client_presence_sub(ch->c, PARLEY_PRESENCE_SUBSCRIBE, u, 1,
						       &ok) == 0 && ok->count == 1) {
				pthread_mutex_lock(&ch->mu);
				if (!strcmp(ch->peer, peer))
					fmt_presence(ch->peer_presence,
						     sizeof ch->peer_presence,
						     ok->recs[0].status,
						     ok->recs[0].last_seen_ms);
				pthread_mutex_unlock(&ch->mu);
			}
		}
		show_push(ch, SHOW_STATUS, 0, 0, NULL);
	}
	if (want && peer[0] && net_conv(ch, peer) == 0)
		parley_client_typing(ch->c, ch->conv_id,
				     want == 1 ? PARLEY_TYPING_STARTED
					       : PARLEY_TYPING_STOPPED);
}

/* Milliseconds until the peer's typing indicator expires (or dflt). */
static int net_typing_timeout(struct cli_chat *ch, int dflt)
{
	pthread_mutex_lock(&ch->mu);
	uint64_t u = ch->peer_typing_until;
	pthread_mutex_unlock(&ch->mu);
	if (!u)
		return dflt;
	uint64_t now = mono_ms();
	int left = u > now ? (int)PARLEY_MIN(u - now, (uint64_t)INT32_MAX) : 0;
	return dflt < 0 || left < dflt ? left : dflt;
}

/* Send the next outbox entry, if any. Returns 1 if it tried. */
static int net_send(struct cli_chat *ch)
{
	pthread_mutex_lock(&ch->mu);
	struct cli_ob_entry *e = cli_outbox_next(&ch->ob);
	if (!e) {
		pthread_mutex_unlock(&ch->mu);
		return 0;
	}
	/* copies: the entry is only touched under mu (invariant 3) */
	uint32_t no = e->no;
	uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
	memcpy(id, e->id, sizeof id);
	char peer[sizeof e->peer];
	memcpy(peer, e->peer, sizeof peer);
	size_t len = e->len;
	char *body = malloc(len ? len : 1);
	if (body && len)
		memcpy(body, e->body, len);
	pthread_mutex_unlock(&ch->mu);
	if (!body) {
		pthread_mutex_lock(&ch->mu);
		cli_outbox_retry(&ch->ob, no);
		pthread_mutex_unlock(&ch->mu);
		return 0;
	}

	struct parley_send_result res;
	int r = net_conv(ch, peer);
	if (r == 0)
		r = parley_client_send_id(ch->c, ch->conv_id, id, PARLEY_CT_TEXT, body, len,
					  &res);
	free(body);
	pthread_mutex_lock(&ch->mu);
	if (r == 0) {
		/* the line is queued for the UI before the entry counts as sent,
		 * so "everything sent" (quit_when_sent) implies "everything shown" */
		const struct cli_ob_entry *s = cli_outbox_find_id(&ch->ob, id);
		char *line = NULL;
		if (s) {
			struct cli_ob_entry tmp = *s;
			tmp.seq = res.seq;
			tmp.ts_ms = res.server_ts_ms;
			line = fmt_own(ch, &tmp, ch->conv_id, "  [sent]");
		}
		pthread_mutex_unlock(&ch->mu);
		show_push(ch, SHOW_OWN_FINAL, no, 0, line);
		pthread_mutex_lock(&ch->mu);
		cli_outbox_sent(&ch->ob, no, res.seq, res.server_ts_ms);
		pthread_mutex_unlock(&ch->mu);
		show_push(ch, SHOW_STATUS, 0, 0, NULL);
		return 1;
	}
	if (transient(r) || r == -PARLEY_EAUTH) {
		cli_outbox_retry(&ch->ob, no); /* same id next time (invariant 1) */
		pthread_mutex_unlock(&ch->mu);
		return 1;
	}
	const struct cli_ob_entry *fe = cli_outbox_find_id(&ch->ob, id);
	char excerpt[48] = "";
	char *fline = NULL;
	if (fe) {
		snprintf(excerpt, sizeof excerpt, "%.*s%s", (int)PARLEY_MIN(fe->len, 40u),
			 fe->body, fe->len > 40 ? "..." : "");
		if (ch->tty)
			fline = fmt_own(ch, fe, NULL, "  [not sent]");
	}
	pthread_mutex_unlock(&ch->mu);
	/* as for a sent line: shown before the entry stops counting as
	 * unsent, so a script's end of input (quit_when_sent) never leaves
	 * before its "not sent" line is out */
	if (fline)
		show_push(ch, SHOW_OWN_FINAL, no, 0, fline);
	char msg[768];
	cli_explain(r, parley_client_failure(ch->c), ch->t, msg, sizeof msg);
	show_f(ch, "* not sent to %s: %s: \"%s\"", peer, msg, excerpt);
	pthread_mutex_lock(&ch->mu);
	cli_outbox_failed(&ch->ob, no, r);
	pthread_mutex_unlock(&ch->mu);
	show_push(ch, SHOW_STATUS, 0, 0, NULL);
	return 1;
}

static void *net_main(void *arg)
{
	struct cli_chat *ch = arg;
	uint32_t backoff = CHAT_RECONNECT_MIN_MS;
	uint64_t next_try = 0;
	int online = 1;
	struct parley_rng rng = {.s = parley_mono_ns()};
	while (!net_quitting(ch)) {
		if (ch->goaway && parley_client_connected(ch->c)) {
			/* leave the draining connection; come back after retry_after */
			parley_client_close(ch->c);
			uint32_t ra = PARLEY_MAX(ch->goaway_ms, backoff);
			next_try = mono_ms() + ra + parley_rng_below(&rng, ra / 2 + 1);
		}
		ch->goaway = 0;
		if (!parley_client_connected(ch->c)) {
			const struct parley_client_failure *f = parley_client_failure(ch->c);
			if (f->kind == PARLEY_FAIL_GOAWAY &&
			    f->goaway_reason == PARLEY_GOAWAY_AUTH_EXPIRED) {
				if (net_auth_failed(ch, -PARLEY_EAUTH) < 0)
					return NULL;
				next_try = 0;
			}
			if (online) {
				online = 0;
				set_online(ch, 0);
				if (!ch->goaway_shown)
					show_f(ch, "* connection to %s:%u lost: reconnecting in the "
					   "background; what you type is kept and sent when it "
					   "is back", ch->t->host, ch->t->port);
			}
			uint64_t now = mono_ms();
			if (now < next_try) {
				net_wait(ch, -1, (int)(next_try - now));
				continue;
			}
			int r = parley_client_connect(ch->c);
			if (r == 0) {
				ch->pres_peer[0] = 0; /* subscriptions were the old connection's */
				backoff = CHAT_RECONNECT_MIN_MS;
				online = 1;
				ch->goaway_shown = 0;
				ch->connected_at_ms = mono_ms();
				set_online(ch, 1);
				show_f(ch, "* connected again");
				continue;
			}
			f = parley_client_failure(ch->c);
			if (is_auth_failure(r, f)) {
				if (net_auth_failed(ch, r) < 0)
					return NULL;
				continue;
			}
			next_try = mono_ms() + backoff / 2 + parley_rng_below(&rng, backoff / 2 + 1);
			backoff = PARLEY_MIN(backoff * 2, CHAT_RECONNECT_MAX_MS);
			continue;
		}
		if (net_request(ch) || net_send(ch) || net_read(ch))
			continue;
		net_live(ch);
		int fd = parley_client_fd(ch->c);
		net_wait(ch, fd, net_typing_timeout(ch, parley_client_next_timeout_ms(ch->c)));
		int r = parley_client_process(ch->c);
		if (r < 0 && r != -PARLEY_ECLOSED &&
		    is_auth_failure(r, parley_client_failure(ch->c)) &&
		    net_auth_failed(ch, r) < 0)
			return NULL;
	}
	return NULL;
}

/* ---- UI thread ------------------------------------------------------------------------ */

static struct cli_chat *ui_chat; /* for the libedit line handler */

static int term_cols(void)
{
	struct winsize ws;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

/* Terminal rows a string takes (UTF-8 code points as one column each). */
static int rows_of(const char *s, size_t extra_cols)
{
	size_t cols = extra_cols;
	for (; *s; s++)
		cols += ((unsigned char)*s & 0xC0) != 0x80;
	int w = term_cols();
	return cols == 0 ? 1 : (int)((cols + (size_t)w - 1) / (size_t)w);
}

static void ui_make_prompt(struct cli_chat *ch)
{
	pthread_mutex_lock(&ch->mu);
	unsigned unsent = cli_outbox_unsent(&ch->ob);
	/* every part is bounded: user ids <= 64 bytes, so the prompt fits */
	const char *st = ch->online ? "" : " | offline, reconnecting";
	char pend[32] = "";
	if (unsent)
		snprintf(pend, sizeof pend, " | %u pending", unsent);
	char live[96] = ""; /* the peer's presence and typing */
	if (ch->peer[0] && ch->online) {
		if (ch->peer_presence[0])
			snprintf(live, sizeof live, " (%.47s)", ch->peer_presence);
		if (ch->peer_typing_until)
			snprintf(live + strlen(live), sizeof live - strlen(live),
				 " | %.30s is typing...", ch->peer);
	}
	if (ch->peer[0])
		snprintf(ch->prompt, sizeof ch->prompt, "[%.64s -> %.64s%.95s%s%.31s] > ",
			 ch->me, ch->peer, live, st, pend);
	else
		snprintf(ch->prompt, sizeof ch->prompt, "[%.64s%s%.31s | /to PEER] > ", ch->me, st,
			 pend);
	pthread_mutex_unlock(&ch->mu);
}

/* Erase the prompt and what is being typed (the cursor ends at column 0). */
static void ui_clear_input(struct cli_chat *ch)
{
	int rows = rows_of(ch->prompt, (size_t)rl_end);
	int up = rows_of(ch->prompt, (size_t)rl_point) - 1;
	(void)rows;
	if (up > 0)
		printf("\033[%dA", up);
	fputs("\r\033[J", stdout);
}

static void ui_redraw(struct cli_chat *ch)
{
	if (ch->tty && !ch->in_handler)
		rl_forced_update_display();
	fflush(stdout);
}

static int pend_rows(const struct cli_chat *ch)
{
	int rows = 0;
	for (int i = 0; i < ch->npend; i++)
		rows += rows_of(ch->pend[i].text, 0);
	return rows;
}

/* Leave pend[i] where it is on screen: it is no longer redrawn. */
static void pend_drop(struct cli_chat *ch, int i)
{
	free(ch->pend[i].text);
	memmove(&ch->pend[i], &ch->pend[i + 1], (size_t)(ch->npend - i - 1) * sizeof ch->pend[0]);
	ch->npend--;
}

/*
 * Print text above the pending block (own_no 0), or add it to the block as
 * own line own_no. The cursor starts where the prompt (or, inside the
 * line handler, the erased input) begins, right below the block.
 */
static void ui_print(struct cli_chat *ch, const char *text, uint32_t own_no)
{
	if (!ch->tty) {
		fputs(text, stdout);
		fputc('\n', stdout);
		fflush(stdout);
		return;
	}
	if (!ch->in_handler)
		ui_clear_input(ch);
	int up = pend_rows(ch);
	if (up)
		printf("\033[%dA\r\033[J", up);
	if (own_no) {
		struct winsize ws;
		int max_rows = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 4
				       ? ws.ws_row - 2
				       : 20;
		while (ch->npend && (ch->npend == CHAT_PEND_MAX ||
				     pend_rows(ch) + rows_of(text, 0) > max_rows)) {
			fputs(ch->pend[0].text, stdout); /* the oldest stays put */
			fputc('\n', stdout);
			pend_drop(ch, 0);
		}
		char *copy = strdup(text);
		if (copy) {
			ch->pend[ch->npend].no = own_no;
			ch->pend[ch->npend].text = copy;
			ch->npend++;
		} else {
			fputs(text, stdout);
			fputc('\n', stdout);
		}
	} else {
		fputs(text, stdout);
		fputc('\n', stdout);
	}
	for (int i = 0; i < ch->npend; i++) {
		fputs(ch->pend[i].text, stdout);
		fputc('\n', stdout);
	}
	ui_redraw(ch);
}

/* Own line no is final (sent or refused): it leaves the block as text. */
static void ui_final(struct cli_chat *ch, uint32_t no, const char *text)
{
	int k = -1;
	for (int i = 0; i < ch->npend; i++)
		if (ch->pend[i].no == no)
			k = i;
	if (k < 0 || !ch->tty) {
		ui_print(ch, text, 0);
		return;
	}
	if (!ch->in_handler)
		ui_clear_input(ch);
	int up = pend_rows(ch);
	printf("\033[%dA\r\033[J", up);
	fputs(text, stdout);
	fputc('\n', stdout);
	free(ch->pend[k].text);
	memmove(&ch->pend[k], &ch->pend[k + 1], (size_t)(ch->npend - k - 1) * sizeof ch->pend[0]);
	ch->npend--;
	for (int i = 0; i < ch->npend; i++) {
		fputs(ch->pend[i].text, stdout);
		fputc('\n', stdout);
	}
	ui_redraw(ch);
}

static void ui_info(struct cli_chat *ch, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void ui_info(struct cli_chat *ch, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (ch->tty) {
		ui_print(ch, buf, 0);
	} else {
		fprintf(stderr, "%s\n", buf);
	}
}

static void ui_set_prompt(struct cli_chat *ch)
{
	ui_make_prompt(ch);
	if (!ch->tty)
		return;
	if (!ch->in_handler)
		ui_clear_input(ch);
	rl_set_prompt(ch->prompt);
	ui_redraw(ch);
}

/* Show what the network thread queued. */
static void ui_drain(struct cli_chat *ch)
{
	for (;;) {
		pthread_mutex_lock(&ch->mu);
		struct show *s = ch->sh_head;
		if (s) {
			ch->sh_head = s->next;
			if (!ch->sh_head)
				ch->sh_tail = NULL;
			ch->sh_n--;
			pthread_cond_signal(&ch->room);
		}
		pthread_mutex_unlock(&ch->mu);
		if (!s)
			return;
		switch (s->kind) {
		case SHOW_LINE:
			if (s->text) {
				if (ch->tty || s->text[0] != '*')
					ui_print(ch, s->text, 0);
				else
					fprintf(stderr, "%s\n", s->text);
			}
			break;
		case SHOW_OWN_FINAL:
			if (s->text)
				ui_final(ch, s->no, s->text);
			break;
		case SHOW_STATUS:
			ui_set_prompt(ch);
			break;
		case SHOW_FATAL:
			if (ch->tty)
				ui_clear_input(ch);
			fprintf(stderr, "%s\n", s->text ? s->text : "parley: fatal error");
			ch->exit_code = s->code;
			ch->done = 1;
			break;
		}
		free(s->text);
		free(s);
	}
}

static void ui_queue_req(struct cli_chat *ch, const struct req *q)
{
	pthread_mutex_lock(&ch->mu);
	int ok = ch->req_n < CHAT_REQ_MAX;
	if (ok) {
		ch->req[(ch->req_head + ch->req_n) % CHAT_REQ_MAX] = *q;
		ch->req_n++;
	}
	int online = ch->online;
	pthread_mutex_unlock(&ch->mu);
	if (!ok) {
		free(q->text);
		ui_info(ch, "* too many requests waiting; try again when connected");
		return;
	}
	if (!online && q->kind != REQ_TO)
		ui_info(ch, "* offline: it will be done when the connection is back");
	wake(ch->wake_net[1]);
}

static void ui_text(struct cli_chat *ch, const char *text, size_t len)
{
	pthread_mutex_lock(&ch->mu);
	char peer[sizeof ch->peer];
	memcpy(peer, ch->peer, sizeof peer);
	uint32_t max_body = ch->max_body;
	int online = ch->online;
	pthread_mutex_unlock(&ch->mu);
	if (!peer[0]) {
		ui_info(ch, "* no peer yet: /to PEER first (then type your message)");
		return;
	}
	if (max_body && len > max_body) {
		ui_info(ch, "* message too long: %zu bytes, the server's limit is %u bytes "
			    "(not sent)", len, max_body);
		return;
	}
	uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
	if (parley_client_random_id(id) < 0) {
		ui_info(ch, "* cannot make a message id (getrandom failed): not sent");
		return;
	}
	pthread_mutex_lock(&ch->mu);
	int no = cli_outbox_add(&ch->ob, peer, text, len, id);
	const struct cli_ob_entry *e = no > 0 ? cli_outbox_find_id(&ch->ob, id) : NULL;
	char *line = e && ch->tty ? fmt_own(ch, e, NULL, online ? "  [sending]"
								  : "  [pending: offline]")
				  : NULL;
	pthread_mutex_unlock(&ch->mu);
	if (no < 0) {
		if (no == -PARLEY_EFULL)
			ui_info(ch, "* %d lines are already waiting to be sent: not sent",
				CLI_OUTBOX_MAX);
		else
			ui_info(ch, "* %s: not sent", parley_strerror(no));
		return;
	}
	if (ch->tty && line) {
		ui_print(ch, line, (uint32_t)no);
	} else if (!online) {
		fprintf(stderr, "* pending (offline), will be sent when connected: %.*s\n",
			(int)PARLEY_MIN(len, 60u), text);
	}
	free(line);
	ui_set_prompt(ch);
	wake(ch->wake_net[1]);
}

static int ui_want_quit(struct cli_chat *ch)
{
	if (!ch->tty) { /* a script: leave once what it typed is sent */
		ch->quit_when_sent = 1;
		return 0;
	}
	pthread_mutex_lock(&ch->mu);
	unsigned unsent = cli_outbox_unsent(&ch->ob);
	pthread_mutex_unlock(&ch->mu);
	if (unsent && !ch->quit_warned) {
		ch->quit_warned = 1;
		ui_info(ch, "* %u line%s not sent yet (waiting for the connection): /quit "
			    "again to leave anyway (they are lost)", unsent, unsent == 1 ? "" : "s");
		return 0;
	}
	return 1;
}

static void ui_line(struct cli_chat *ch, char *line);

/* Without a terminal: handle the whole lines of in[0..*len) (at eof also a
 * last one without a newline), stopping while a /group create is under
 * way: the lines after it may be meant for the new group. */
static void ui_feed(struct cli_chat *ch, char *in, size_t *len, int eof)
{
	for (;;) {
		pthread_mutex_lock(&ch->mu);
		int gpend = ch->group_pending;
		pthread_mutex_unlock(&ch->mu);
		if (gpend || ch->done || !*len)
			return;
		char *nl = memchr(in, '\n', *len);
		if (!nl && !eof) {
			if (*len == CHAT_INPUT_MAX) {
				ui_info(ch, "* line longer than %d bytes: not sent",
					CHAT_INPUT_MAX);
				*len = 0;
			}
			return;
		}
		size_t one = nl ? (size_t)(nl - in) + 1 : *len;
		in[nl ? (size_t)(nl - in) : *len] = 0;
		ui_line(ch, in);
		memmove(in, in + one, *len - one);
		*len -= one;
	}
}

static void ui_line(struct cli_chat *ch, char *line)
{
	struct cli_cmd cmd;
	cli_parse_line(line, &cmd);
	struct req q = {0};
	switch (cmd.kind) {
	case CLI_CMD_EMPTY:
		return;
	case CLI_CMD_TEXT:
		ui_text(ch, cmd.arg, cmd.arg_len);
		return;
	case CLI_CMD_QUIT:
		if (ui_want_quit(ch))
			ch->done = 1;
		return;
	case CLI_CMD_HELP:
		ui_info(ch, "%s", cli_chat_help);
		return;
	case CLI_CMD_UNKNOWN:
		ui_info(ch, "* unknown command %.*s (/help lists them; // sends a line "
			    "starting with /)", (int)cmd.arg_len, cmd.arg);
		return;
	case CLI_CMD_BAD:
		ui_info(ch, "* %s", cmd.err);
		return;
	case CLI_CMD_TO:
		if (!strcmp(cmd.arg, ch->me)) {
			ui_info(ch, "* %s is you: /to someone else", cmd.arg);
			return;
		}
		pthread_mutex_lock(&ch->mu);
		snprintf(ch->peer, sizeof ch->peer, "%s", cmd.arg);
		pthread_mutex_unlock(&ch->mu);
		q.kind = REQ_TO;
		snprintf(q.peer, sizeof q.peer, "%s", cmd.arg);
		ui_set_prompt(ch);
		ui_queue_req(ch, &q);
		return;
	case CLI_CMD_HISTORY:
		pthread_mutex_lock(&ch->mu);
		snprintf(q.peer, sizeof q.peer, "%s", ch->peer);
		pthread_mutex_unlock(&ch->mu);
		if (!q.peer[0]) {
			ui_info(ch, "* /to PEER first: history is per conversation");
			return;
		}
		q.kind = REQ_HISTORY;
		q.limit = cmd.limit;
		q.before = cmd.before;
		ui_queue_req(ch, &q);
		return;
	case CLI_CMD_LIST:
		q.kind = REQ_LIST;
		ui_queue_req(ch, &q);
		return;
	case CLI_CMD_RETENTION:
		pthread_mutex_lock(&ch->mu);
		snprintf(q.peer, sizeof q.peer, "%s", ch->peer);
		pthread_mutex_unlock(&ch->mu);
		if (!q.peer[0]) {
			ui_info(ch, "* /to PEER first: retention is per conversation");
			return;
		}
		q.kind = REQ_RETENTION;
		q.ret_set = cmd.ret_set;
		q.ret_age_ms = cmd.ret_age_ms;
		q.ret_count = cmd.ret_count;
		ui_queue_req(ch, &q);
		return;
	case CLI_CMD_EDIT:
	case CLI_CMD_DELETE:
		pthread_mutex_lock(&ch->mu);
		snprintf(q.peer, sizeof q.peer, "%s", ch->peer);
		pthread_mutex_unlock(&ch->mu);
		if (!q.peer[0]) {
			ui_info(ch, "* /to PEER first: edits are per conversation");
			return;
		}
		q.kind = cmd.kind == CLI_CMD_EDIT ? REQ_EDIT : REQ_DELETE;
		q.before = cmd.before;
		if (cmd.kind == CLI_CMD_EDIT) {
			q.text = malloc(cmd.arg_len);
			if (!q.text) {
				ui_info(ch, "* out of memory");
				return;
			}
			memcpy(q.text, cmd.arg, cmd.arg_len);
			q.text_len = cmd.arg_len;
		}
		ui_queue_req(ch, &q);
		return;
	case CLI_CMD_GROUP_CREATE:
	case CLI_CMD_GROUP_ADD:
	case CLI_CMD_GROUP_REMOVE:
	case CLI_CMD_GROUP_LEAVE:
	case CLI_CMD_GROUP_MEMBERS:
	case CLI_CMD_GROUP_SET:
		q.kind = REQ_GROUP;
		q.gcmd = cmd.kind;
		if (cmd.kind == CLI_CMD_GROUP_SET) {
			snprintf(q.name, sizeof q.name, "%.*s", (int)cmd.arg_len,
				 cmd.arg ? cmd.arg : "");
			q.gset_fields = cmd.gset_fields;
			q.gset_settings = cmd.gset_settings;
		}
		if (cmd.kind == CLI_CMD_GROUP_CREATE) {
			snprintf(q.name, sizeof q.name, "%s", cmd.arg);
			pthread_mutex_lock(&ch->mu);
			ch->group_pending = 1; /* lines typed next wait for its id */
			pthread_mutex_unlock(&ch->mu);
		} else {
			pthread_mutex_lock(&ch->mu);
			snprintf(q.peer, sizeof q.peer, "%s", ch->peer);
			pthread_mutex_unlock(&ch->mu);
			if (!cli_is_group_id(q.peer)) {
				ui_info(ch, "* not in a group: /to g:ID first (/list shows "
					    "your groups) or /group create NAME USER...");
				return;
			}
		}
		q.nusers = cmd.nwords;
		for (unsigned i = 0; i < cmd.nwords; i++)
			snprintf(q.users[i], sizeof q.users[i], "%s", cmd.words[i]);
		ui_queue_req(ch, &q);
		return;
	}
}

/* libedit calls this with each finished line (NULL = end of input). */
static void ui_rl_handler(char *line)
{
	struct cli_chat *ch = ui_chat;
	if (!line) { /* Ctrl-D on an empty line */
		rl_callback_handler_remove();
		fputc('\n', stdout);
		if (ui_want_quit(ch))
			ch->done = 1;
		else
			rl_callback_handler_install(ch->prompt, ui_rl_handler);
		return;
	}
	/* libedit's callback mode neither empties its line nor shows a prompt
	 * after a finished line: take the handler out and put it back at the
	 * end, which starts a fresh line with the (maybe new) prompt */
	rl_callback_handler_remove();
	/* libedit left "prompt + line" on screen: replace it by our one echo */
	int rows = rows_of(ch->prompt, strlen(line));
	printf("\033[%dA\r\033[J", rows);
	ch->in_handler = 1;
	if (ch->typing_on) { /* the line is done: stop the indicator */
		ch->typing_on = 0;
		pthread_mutex_lock(&ch->mu);
		ch->typing_want = 2;
		pthread_mutex_unlock(&ch->mu);
		wake(ch->wake_net[1]);
	}
	if (line[strspn(line, " \t")])
		add_history(line);
	ui_line(ch, line);
	ch->in_handler = 0;
	fflush(stdout);
	free(line);
	if (!ch->done) {
		ui_make_prompt(ch);
		rl_callback_handler_install(ch->prompt, ui_rl_handler);
	}
}

/* After a keystroke: typing a line to the peer (not a command) starts the
 * indicator, erasing it stops it (a sent line stops it in ui_rl_handler). */
static void ui_typing(struct cli_chat *ch)
{
	int typing = !ch->done && rl_line_buffer && rl_end > 0 && rl_line_buffer[0] != '/';
	if (typing == ch->typing_on && !typing)
		return;
	pthread_mutex_lock(&ch->mu);
	int to_peer = ch->peer[0] != 0;
	if (to_peer)
		ch->typing_want = typing ? 1 : 2;
	pthread_mutex_unlock(&ch->mu);
	ch->typing_on = typing && to_peer;
	if (to_peer)
		wake(ch->wake_net[1]);
}

static void on_sigint(int sig)
{
	(void)sig;
	chat_sigint = 1;
	if (chat_sig_fd >= 0)
		wake(chat_sig_fd);
}

static int make_pipe(int p[2])
{
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int cli_chat_run(struct parley_client *c, struct cli_chat **slot, const char *peer,
		 const struct cli_target *t, const char *token_cmd)
{
	struct cli_chat *ch = calloc(1, sizeof *ch);
	if (!ch) {
		fprintf(stderr, "parley: out of memory\n");
		return CLI_EXIT_CONN;
	}
	ch->c = c;
	ch->t = t;
	ch->token_cmd = token_cmd;
	ch->tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
	pthread_mutex_init(&ch->mu, NULL);
	pthread_cond_init(&ch->room, NULL);
	cli_outbox_init(&ch->ob);
	if (make_pipe(ch->wake_net) || make_pipe(ch->wake_ui)) {
		fprintf(stderr, "parley: cannot create pipes: %s\n", strerror(errno));
		return CLI_EXIT_CONN;
	}
	snprintf(ch->me, sizeof ch->me, "%s", parley_client_user_id(c));
	ch->online = 1;
	ch->connected_at_ms = mono_ms();
	ch->max_body = parley_client_limits(c)->max_body;
	*slot = ch;

	/* the first /to and subscribe run here, before the UI: their errors end
	 * the program with a clear message and exit code. The conversation is
	 * opened first so that catch-up events already know it. */
	int r;
	if (peer) {
		if (!strcmp(peer, ch->me)) {
			fprintf(stderr, "parley: %s is you: chat with someone else\n", peer);
			return CLI_EXIT_USAGE;
		}
		r = net_conv(ch, peer);
		if (r < 0) {
			char msg[768];
			int code = cli_explain(r, parley_client_failure(c), t, msg, sizeof msg);
			fprintf(stderr, "parley: cannot talk to %s: %s\n", peer, msg);
			return code;
		}
		snprintf(ch->peer, sizeof ch->peer, "%s", peer);
	}
	r = parley_client_subscribe(c, 0, NULL);
	if (r < 0) {
		char msg[768];
		int code = cli_explain(r, parley_client_failure(c), t, msg, sizeof msg);
		fprintf(stderr, "parley: %s\n", msg);
		return code;
	}

	ui_chat = ch;
	chat_sig_fd = ch->wake_ui[1];
	struct sigaction sa = {0};
	sa.sa_handler = on_sigint;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	ui_make_prompt(ch);
	if (ch->tty) {
		rl_catch_signals = 0;
		rl_callback_handler_install(ch->prompt, ui_rl_handler);
		ui_info(ch, "* signed in as %s on %s:%u%s. %s", ch->me, t->host, t->port,
			t->tls ? " (TLS)" : "", "/help for commands, /quit to leave");
		if (ch->peer[0])
			ui_info(ch, "* talking to %s (%s)", ch->peer, ch->conv_id);
	} else {
		fprintf(stderr, "* signed in as %s. %s\n", ch->me, cli_chat_help);
	}
	/* the network thread runs with the signals blocked: they go to the UI
	 * thread, and its socket calls are never interrupted by them */
	sigset_t sigs, old;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGWINCH);
	pthread_sigmask(SIG_BLOCK, &sigs, &old);
	int tr = pthread_create(&ch->net, NULL, net_main, ch);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (tr != 0) {
		fprintf(stderr, "parley: cannot start the network thread\n");
		return CLI_EXIT_CONN;
	}

	char *in = ch->tty ? NULL : malloc(CHAT_INPUT_MAX + 1);
	size_t in_len = 0;
	int eof = 0;
	while (!ch->done) {
		pthread_mutex_lock(&ch->mu);
		int gpend = ch->group_pending;
		pthread_mutex_unlock(&ch->mu);
		if (!ch->tty && !gpend && in_len && !ch->quit_when_sent &&
		    (eof || memchr(in, '\n', in_len))) {
			/* lines read while a /group create was under way */
			ui_feed(ch, in, &in_len, eof);
			if (eof && !in_len)
				ch->quit_when_sent = 1;
			continue;
		}
		if (ch->quit_when_sent) {
			pthread_mutex_lock(&ch->mu);
			unsigned unsent = cli_outbox_unsent(&ch->ob);
			unsigned reqs = ch->req_n;
			pthread_mutex_unlock(&ch->mu);
			if (!unsent && !reqs)
				break;
		}
		struct pollfd p[2] = {{ch->wake_ui[0], POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
		int pr = poll(p, eof || gpend ? 1 : 2, -1);
		if (pr < 0 && errno != EINTR)
			break;
		if (chat_sigint) { /* Ctrl-C: leave now */
			chat_sigint = 0;
			if (ch->tty)
				ui_clear_input(ch);
			pthread_mutex_lock(&ch->mu);
			unsigned unsent = cli_outbox_unsent(&ch->ob);
			pthread_mutex_unlock(&ch->mu);
			if (unsent)
				fprintf(stderr, "parley: %u typed line%s not sent\n", unsent,
					unsent == 1 ? " was" : "s were");
			break;
		}
		if (pr <= 0)
			continue;
		if (p[0].revents & POLLIN) {
			drain(ch->wake_ui[0]);
			ui_drain(ch);
		}
		if (ch->done || eof || gpend || ch->quit_when_sent ||
		    !(p[1].revents & (POLLIN | POLLHUP)))
			continue;
		if (ch->tty) {
			rl_callback_read_char();
			ui_typing(ch);
			continue;
		}
		ssize_t n = read(STDIN_FILENO, in + in_len, CHAT_INPUT_MAX - in_len);
		if (n <= 0)
			eof = 1; /* end of piped input: wait until what was typed is sent */
		else
			in_len += (size_t)n;
		ui_feed(ch, in, &in_len, eof);
		if (eof && !in_len)
			ch->quit_when_sent = 1; /* piped input ended: send, then leave */
	}
	ui_drain(ch);
	if (ch->tty) {
		if (!ch->done || ch->exit_code)
			ui_clear_input(ch);
		rl_callback_handler_remove();
		fflush(stdout);
	}
	free(in);
	/* The network thread may be blocked inside a call: it is told to stop
	 * but not joined, and the caller exits without freeing the client. */
	pthread_mutex_lock(&ch->mu);
	ch->quit = 1;
	pthread_cond_broadcast(&ch->room);
	pthread_mutex_unlock(&ch->mu);
	wake(ch->wake_net[1]);
	return ch->exit_code;
}

int cli_token_from_cmd(const char *token_cmd, char *out, size_t cap)
{
	out[0] = 0;
	FILE *f = popen(token_cmd, "r");
	if (!f) {
		snprintf(out, cap, "cannot run it: %s", strerror(errno));
		return -1;
	}
	size_t n = 0;
	int ch;
	while ((ch = fgetc(f)) != EOF && ch != '\n')
		if (n + 1 < cap)
			out[n++] = (char)ch;
	out[n] = 0;
	while (fgetc(f) != EOF)
		;
	int st = pclose(f);
	while (n && (out[n - 1] == '\r' || out[n - 1] == ' '))
		out[--n] = 0;
	if (st != 0 || n == 0) {
		snprintf(out, cap, "it exited with status %d and %s", st,
			 n ? "printed a line" : "printed nothing");
		return -1;
	}
	return 0;
}
