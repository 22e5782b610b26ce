/*
 * cli_core.c — `parley`'s pure parts: chat-line parsing and the mapping
 * from an error (code + the library's recorded failure) to one line naming
 * its cause, with the exit code documented in docs/CLIENT.md.
 *
 * Invariant: every message says what happened and, where the user can do
 * something, what to do; a server's own words (ERROR / GOAWAY text) are
 * quoted, never replaced. No I/O, no globals. See cli.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char cli_chat_help[] =
	"commands: /to PEER (talk to PEER), /history [N] [--before SEQ], /list,\n"
	"          /edit SEQ TEXT, /delete SEQ (your message #SEQ, for everyone),\n"
	"          /retention [off | count N | age 30d ...] (of this conversation),\n"
	"          /help, /quit; any other line is sent to the current peer\n"
	"          (start it with // to send a line that begins with /)\n"
	"groups:   /group create NAME USER... (then you are in it), /to g:ID (switch\n"
	"          to a group, see /list), /add USER..., /remove USER..., /leave,\n"
	"          /members (of the current group), /group set name NEW NAME,\n"
	"          /group set history all|join (what members added later may read)";

/* ---- errors ------------------------------------------------------------------- */

const char *cli_goaway_text(unsigned reason)
{
	switch (reason) {
	case PARLEY_GOAWAY_DRAIN:
		return "the server is shutting down or moving this connection";
	case PARLEY_GOAWAY_SLOW_CONSUMER:
		return "this client fell behind acknowledging messages";
	case PARLEY_GOAWAY_AUTH_EXPIRED:
		return "the token has expired";
	case PARLEY_GOAWAY_OVERLOAD:
		return "the server is overloaded";
	case PARLEY_GOAWAY_IDLE:
		return "the connection was idle too long";
	}
	return "the server closed the connection";
}

int cli_exit_code(int err, const struct parley_client_failure *f)
{
	if (f && (f->kind == PARLEY_FAIL_TLS_VERIFY || f->kind == PARLEY_FAIL_TLS ||
		  f->kind == PARLEY_FAIL_PLAIN_GOT_TLS || f->kind == PARLEY_FAIL_CONNECT ||
		  f->kind == PARLEY_FAIL_RESOLVE || f->kind == PARLEY_FAIL_TIMEOUT ||
		  f->kind == PARLEY_FAIL_CLOSED || f->kind == PARLEY_FAIL_PROTOCOL))
		return CLI_EXIT_CONN;
	switch (-err) {
	case PARLEY_EAUTH:
		return CLI_EXIT_AUTH;
	case PARLEY_EPERM:
	case PARLEY_ENOTFOUND:
	case PARLEY_EINVAL:
	case PARLEY_ETOOBIG:
	case PARLEY_EVERSION:
	case PARLEY_EEXIST:
		return CLI_EXIT_REFUSED;
	}
	return CLI_EXIT_CONN;
}

static void put(char *out, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void put(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, cap, fmt, ap);
	va_end(ap);
}

/* " (server: TEXT)" or "" */
static void server_words(const struct parley_client_failure *f, char *buf, size_t cap)
{
	buf[0] = 0;
	if (f && f->text[0])
		snprintf(buf, cap, " (server: %s)", f->text);
}

int cli_explain(int err, const struct parley_client_failure *f,
		const struct cli_target *t, char *out, size_t cap)
{
	const char *host = t && t->host ? t->host : "the server";
	unsigned port = t ? t->port : 0;
	int code = cli_exit_code(err, f);
	int kind = f ? f->kind : PARLEY_FAIL_NONE;
	char sw[300];
	server_words(f, sw, sizeof sw);

	switch (kind) {
	case PARLEY_FAIL_RESOLVE:
		put(out, cap, "cannot find host '%s' (%s): check --host", host, f->text);
		return code;
	case PARLEY_FAIL_CONNECT:
		if (err == -ECONNREFUSED)
			put(out, cap,
			    "cannot connect to %s:%u: connection refused — is parleyd "
			    "running, and is %u its %s port? (defaults: plain 7411, TLS 7412)",
			    host, port, port, t && t->tls ? "TLS" : "plain TCP");
		else
			put(out, cap, "cannot connect to %s:%u: %s", host, port, f->text);
		return code;
	case PARLEY_FAIL_TIMEOUT:
		put(out, cap, "no answer from %s:%u (%s): check the host and port", host,
		    port, f->text);
		return code;
	case PARLEY_FAIL_TLS_VERIFY:
		put(out, cap,
		    "the server's TLS certificate is not trusted (%s): %s",
		    f->text,
		    t && t->ca ? "is --ca the CA that signed the server's certificate, "
				 "and does --host (or --server-name) match its name?"
			       : "pass the CA that signed it with --ca FILE (with `make run`: "
				 "parley-data/dev/ca.pem)");
		return code;
	case PARLEY_FAIL_TLS:
		put(out, cap,
		    "TLS handshake with %s:%u failed (%s): is %u a TLS port? "
		    "(defaults: TLS 7412; plain TCP 7411 without --tls)",
		    host, port, f->text, port);
		return code;
	case PARLEY_FAIL_PLAIN_GOT_TLS:
		put(out, cap,
		    "%s:%u expects TLS: add --tls (and --ca FILE for a development "
		    "certificate), or use the plain port (default 7411)",
		    host, port);
		return code;
	case PARLEY_FAIL_CLOSED:
		if (t && t->tls)
			put(out, cap,
			    "%s:%u closed the connection during the handshake: is it "
			    "parleyd's TLS port? (defaults: TLS 7412, plain 7411)",
			    host, port);
		else
			put(out, cap,
			    "%s:%u closed the connection during the handshake: if it is "
			    "parleyd's TLS port, add --tls (and --ca FILE for a development "
			    "certificate); defaults: plain 7411, TLS 7412",
			    host, port);
		return code;
	case PARLEY_FAIL_PROTOCOL:
		put(out, cap, "%s:%u does not speak parley's protocol (%s): check the port",
		    host, port, f->text);
		return code;
	case PARLEY_FAIL_GOAWAY:
		if (f->goaway_reason == PARLEY_GOAWAY_AUTH_EXPIRED) {
			put(out, cap,
			    "your token has expired%s: get a new one (parleyctl token ...) "
			    "and start again",
			    sw);
			return CLI_EXIT_AUTH;
		}
		put(out, cap, "%s%s", cli_goaway_text(f->goaway_reason), sw);
		return code;
	default:
		break;
	}
	switch (-err) {
	case PARLEY_EAUTH:
		put(out, cap,
		    "the server refused the token%s: check it is for this server "
		    "and not expired (parleyctl token mints a new one)",
		    sw);
		return code;
	case PARLEY_EVERSION:
		put(out, cap, "the server does not support this client's protocol version%s",
		    sw);
		return code;
	case PARLEY_ETIMEDOUT:
		put(out, cap, "no answer from %s:%u in time: the server may be down or "
			      "overloaded", host, port);
		return code;
	case PARLEY_ECLOSED:
		put(out, cap, "the connection to %s:%u was lost%s", host, port, sw);
		return code;
	}
	if (err == -ECONNREFUSED) {
		put(out, cap, "cannot connect to %s:%u: connection refused", host, port);
		return code;
	}
	put(out, cap, "%s%s", parley_strerror(err), sw);
	return code;
}

/* ---- chat lines ------------------------------------------------------------------ */

static int is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Next blank-separated word of *p (NUL-terminated in place), or NULL. */
static char *word(char **p)
{
	char *s = *p;
	while (*s && is_blank(*s))
		s++;
	if (!*s) {
		*p = s;
		return NULL;
	}
	char *w = s;
	while (*s && !is_blank(*s))
		s++;
	if (*s)
		*s++ = 0;
	*p = s;
	return w;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !*s || *s == '-' || *s == '+')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

int cli_is_group_id(const char *s)
{
	if (strncmp(s, "g:", 2) != 0 || strlen(s) != 18)
		return 0;
	for (const char *q = s + 2; *q; q++)
		if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f')))
			return 0;
	return 1;
}

/* /group set name NEW NAME (the rest of the line, 1..255 bytes) and
 * /group set history all|join, on the current group. */
static void parse_group_set(char **p, struct cli_cmd *out)
{
	static const char usage[] =
		"usage: /group set name NEW NAME (up to 255 bytes), "
		"/group set history all|join (the current group)";
	char *what = word(p);
	out->kind = CLI_CMD_BAD;
	out->err = usage;
	if (what && !strcmp(what, "name")) {
		char *s = *p;
		while (*s && is_blank(*s))
			s++;
		size_t n = strlen(s);
		if (n == 0 || n > 255)
			return;
		out->arg = s;
		out->arg_len = n;
		out->gset_fields = PARLEY_GSET_NAME;
	} else if (what && !strcmp(what, "history")) {
		char *v = word(p);
		if (!v || word(p) || (strcmp(v, "all") && strcmp(v, "join")))
			return;
		out->gset_fields = PARLEY_GSET_SETTINGS;
		out->gset_settings = !strcmp(v, "all") ? PARLEY_GROUPF_HISTORY_ALL : 0;
	} else {
		return;
	}
	out->kind = CLI_CMD_GROUP_SET;
	out->err = NULL;
}

/* /group create NAME USER..., /add USER..., /remove USER..., /leave,
 * /members (the last four act on the current group). */
static void parse_group(const char *cmd, char **p, struct cli_cmd *out)
{
	int create = !strcmp(cmd, "/group");
	int none = !strcmp(cmd, "/leave") || !strcmp(cmd, "/members");
	if (create) {
		char *sub = word(p);
		if (sub && !strcmp(sub, "set")) {
			parse_group_set(p, out);
			return;
		}
		char *name = sub && !strcmp(sub, "create") ? word(p) : NULL;
		if (!name || strlen(name) > 255) {
			out->kind = CLI_CMD_BAD;
			out->err = "usage: /group create NAME USER... (NAME: one word, "
				   "up to 255 bytes)";
			return;
		}
		out->arg = name;
		out->arg_len = strlen(name);
	}
	char *w;
	while ((w = word(p)) != NULL) {
		if (none || out->nwords == CLI_GROUP_WORDS_MAX ||
		    !parley_proto_user_id_valid(w, strlen(w))) {
			out->kind = CLI_CMD_BAD;
			out->err = none ? "usage: /leave, /members (no arguments: they act "
					  "on the current group)"
					: "usage: /group create NAME USER..., /add USER..., "
					  "/remove USER... (user ids, at most 32)";
			return;
		}
		out->words[out->nwords++] = w;
	}
	if (!none && !create && out->nwords == 0) {
		out->kind = CLI_CMD_BAD;
		out->err = "usage: /add USER..., /remove USER... (the current group)";
		return;
	}
	out->kind = create ? CLI_CMD_GROUP_CREATE
		    : !strcmp(cmd, "/add") ? CLI_CMD_GROUP_ADD
		    : !strcmp(cmd, "/remove") ? CLI_CMD_GROUP_REMOVE
		    : !strcmp(cmd, "/leave") ? CLI_CMD_GROUP_LEAVE
					     : CLI_CMD_GROUP_MEMBERS;
}

void cli_parse_line(char *line, struct cli_cmd *out)
{
	memset(out, 0, sizeof *out);
	size_t n = strlen(line);
	while (n && is_blank(line[n - 1]))
		line[--n] = 0;
	size_t lead = 0;
	while (lead < n && is_blank(line[lead]))
		lead++;
	if (lead == n) {
		out->kind = CLI_CMD_EMPTY;
		return;
	}
	if (line[0] != '/' || line[1] == '/') {
		out->kind = CLI_CMD_TEXT;
		out->arg = line[0] == '/' ? line + 1 : line; /* "//x" sends "/x" */
		out->arg_len = line[0] == '/' ? n - 1 : n;
		return;
	}
	char *p = line;
	char *cmd = word(&p);
	if (!strcmp(cmd, "/quit") || !strcmp(cmd, "/q") || !strcmp(cmd, "/exit")) {
		out->kind = CLI_CMD_QUIT;
	} else if (!strcmp(cmd, "/help") || !strcmp(cmd, "/?") || !strcmp(cmd, "/h")) {
		out->kind = CLI_CMD_HELP;
	} else if (!strcmp(cmd, "/list") || !strcmp(cmd, "/ls")) {
		out->kind = word(&p) ? CLI_CMD_BAD : CLI_CMD_LIST;
		out->err = "usage: /list";
	} else if (!strcmp(cmd, "/group") || !strcmp(cmd, "/add") ||
		   !strcmp(cmd, "/remove") || !strcmp(cmd, "/leave") ||
		   !strcmp(cmd, "/members")) {
		parse_group(cmd, &p, out);
	} else if (!strcmp(cmd, "/to")) {
		char *peer = word(&p);
		char *extra = word(&p);
		if (peer && !extra && cli_is_group_id(peer)) {
			out->kind = CLI_CMD_TO; /* a group conversation */
			out->arg = peer;
			out->arg_len = strlen(peer);
			return;
		}
		if (!peer || extra || !parley_proto_user_id_valid(peer, strlen(peer))) {
			out->kind = CLI_CMD_BAD;
			out->err = "usage: /to PEER (a user id: 1..64 bytes, no spaces or colons)";
			return;
		}
		out->kind = CLI_CMD_TO;
		out->arg = peer;
		out->arg_len = strlen(peer);
	} else if (!strcmp(cmd, "/history") || !strcmp(cmd, "/hist")) {
		out->kind = CLI_CMD_HISTORY;
		out->limit = CLI_HISTORY_DEFAULT;
		int have_n = 0;
		char *w;
		while ((w = word(&p)) != NULL) {
			uint64_t v;
			if (!strcmp(w, "--before") || !strcmp(w, "-b")) {
				if (parse_u64(word(&p), UINT64_MAX, &v) || v == 0)
					goto bad_history;
				out->before = v;
			} else if (!have_n && !parse_u64(w, PARLEY_PROTO_MAX_HISTORY, &v) && v) {
				out->limit = (unsigned)v;
				have_n = 1;
			} else {
				goto bad_history;
			}
		}
	} else if (!strcmp(cmd, "/edit")) {
		uint64_t v;
		if (parse_u64(word(&p), UINT64_MAX, &v) || v == 0) {
			out->kind = CLI_CMD_BAD;
			out->err = "usage: /edit SEQ NEW TEXT (SEQ: the #number of your message)";
			return;
		}
		while (*p && is_blank(*p))
			p++;
		size_t tl = strlen(p);
		if (tl == 0 || tl > CLI_EDIT_MAX) {
			out->kind = CLI_CMD_BAD;
			out->err = tl ? "/edit: the new text is over 2048 bytes"
				      : "usage: /edit SEQ NEW TEXT (SEQ: the #number of your message)";
			return;
		}
		out->kind = CLI_CMD_EDIT;
		out->before = v;
		out->arg = p;
		out->arg_len = tl;
	} else if (!strcmp(cmd, "/retention")) {
		out->kind = CLI_CMD_RETENTION;
		char *w;
		while ((w = word(&p)) != NULL) {
			uint64_t v;
			out->ret_set = 1;
			if (!strcmp(w, "off")) {
				out->ret_age_ms = out->ret_count = 0;
			} else if (!strcmp(w, "count")) {
				if (parse_u64(word(&p), UINT64_MAX, &v))
					goto bad_retention;
				out->ret_count = v;
			} else if (!strcmp(w, "age")) {
				char *d = word(&p);
				size_t dl = d ? strlen(d) : 0;
				uint64_t unit = 1000;
				if (dl > 1 && strchr("smhd", d[dl - 1])) {
					unit = d[dl - 1] == 's'	  ? 1000ull
					       : d[dl - 1] == 'm' ? 60000ull
					       : d[dl - 1] == 'h' ? 3600000ull
								  : 86400000ull;
					d[--dl] = 0;
				}
				if (parse_u64(d, UINT64_MAX / unit, &v))
					goto bad_retention;
				out->ret_age_ms = v * unit;
			} else {
				goto bad_retention;
			}
		}
	} else if (!strcmp(cmd, "/delete") || !strcmp(cmd, "/del")) {
		uint64_t v;
		if (parse_u64(word(&p), UINT64_MAX, &v) || v == 0 || word(&p)) {
			out->kind = CLI_CMD_BAD;
			out->err = "usage: /delete SEQ (the #number of your message)";
			return;
		}
		out->kind = CLI_CMD_DELETE;
		out->before = v;
	} else {
		out->kind = CLI_CMD_UNKNOWN;
		out->arg = cmd;
		out->arg_len = strlen(cmd);
	}
	return;
bad_retention:
	out->kind = CLI_CMD_BAD;
	out->err = "usage: /retention [off | count N | age N(s|m|h|d)] (both may be given)";
	return;
bad_history:
	out->kind = CLI_CMD_BAD;
	out->err = "usage: /history [N (1..100)] [--before SEQ]";
}
