/*
 * parley_cli.c — `parley`, the terminal chat client on libparley.
 *
 *   parley [--host H] [--port P | --nodes H:P,H:P,...] [--tls [--ca FILE] [--server-name N]]
 *          [--token JWT | --token-cmd CMD] [--device NAME] [-v] [command] [args]
 *
 * Commands: send PEER TEXT..., history PEER [--before N] [--limit N],
 * list [--limit N], read PEER SEQ, receipts PEER SEQ, watch [--from N],
 * chat [PEER] (interactive; the
 * default, in cli_chat.c), help [COMMAND]. `--help` anywhere prints help
 * and exits 0. Options fall back to the environment (PARLEY_HOST,
 * PARLEY_SERVER_PORT (old spelling PARLEY_PORT), PARLEY_TLS=1, PARLEY_CA,
 * PARLEY_TOKEN, PARLEY_TOKEN_CMD, PARLEY_DEVICE): flag > env > default, as
 * everywhere in parley.
 *
 * Output: one line per message/event, so `parley watch | grep` works.
 * Errors: one line on stderr naming the cause (cli_explain in cli_core.c).
 * Exit codes (cli.h, docs/CLIENT.md): 0 ok, 1 the server refused the
 * request, 2 usage, 3 connection or runtime error, 4 token refused/expired.
 *
 * Threads: the non-interactive commands are single-threaded; `chat` adds a
 * network thread (cli_chat.c) and events reach it through the callbacks.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "parley_client.h"

#define EXIT_USAGE CLI_EXIT_USAGE

struct cli {
	struct parley_client *c;
	struct cli_chat *chat; /* chat: where events and state changes go */
	struct cli_target t;
};

static const char usage_text[] =
	"usage: parley [options] [command] [args]\n"
	"\n"
	"commands:\n"
	"  chat [PEER]                       interactive chat (the default); /help inside\n"
	"  send PEER TEXT...                 send one message to PEER, print its seq\n"
	"  history PEER [--before SEQ] [--limit N]\n"
	"                                    messages with PEER, oldest first\n"
	"  list [--limit N]                  your conversations, most recent first,\n"
	"                                    with unread counts\n"
	"  read PEER SEQ                     mark the conversation read up to SEQ\n"
	"  receipts PEER SEQ                 who has received / read message SEQ\n"
	"  watch [--from INBOX_SEQ]          print incoming messages as they arrive\n"
	"  help [COMMAND]                    this text, or a command's\n"
	"\n"
	"options (environment in brackets):\n"
	"  --host H          server [PARLEY_HOST] (127.0.0.1)\n"
	"  --port P          server port [PARLEY_SERVER_PORT] (7411; 7412 with TLS)\n"
	"  --nodes LIST      a cluster's nodes, host:port,host:port,... instead of\n"
	"                    --host/--port: requests follow the leader [PARLEY_NODES]\n"
	"  --tls             use TLS [PARLEY_TLS=1]\n"
	"  --ca FILE         trust this CA, e.g. the dev CA; implies --tls [PARLEY_CA]\n"
	"  --server-name N   TLS name to verify (default: the host)\n"
	"  --token JWT       access token [PARLEY_TOKEN]\n"
	"  --token-cmd CMD   shell command printing a token: run at start when no\n"
	"                    token is given, and again when it expires [PARLEY_TOKEN_CMD]\n"
	"  --device NAME     this device's id [PARLEY_DEVICE] (cli-<hostname>)\n"
	"  -v                debug logs on stderr\n"
	"  -h, --help        this help\n"
	"\n"
	"exit codes: 0 ok, 1 the server refused the request, 2 usage,\n"
	"            3 connection or runtime error, 4 token refused or expired\n";

static void usage(FILE *f)
{
	fputs(usage_text, f);
}

struct cmd_help {
	const char *name;
	const char *text;
};

static const struct cmd_help cmd_helps[] = {
	{"chat", "usage: parley [options] chat [PEER]\n"
		 "Interactive chat: type a line to send it to the current peer.\n"},
	{"send", "usage: parley [options] send PEER TEXT...\n"
		 "Sends TEXT (the words joined by spaces) to PEER (a user, or a group\n"
		 "id g:...); prints\n"
		 "\"sent CONV #SEQ\" once the server has stored it.\n"},
	{"history", "usage: parley [options] history PEER [--before SEQ] [--limit 1..100]\n"
		    "Prints messages with PEER (a user, or a group id g:...), oldest\n"
		    "first; the last line says how to\n"
		    "page back (--before SEQ).\n"},
	{"list", "usage: parley [options] list [--limit 1..100]\n"
		 "Prints your conversations, most recent first (tab-separated:\n"
		 "conversation, peer, last seq, its time, unread count, your read\n"
		 "position).\n"},
	{"watch", "usage: parley [options] watch [--from INBOX_SEQ]\n"
		  "Prints incoming messages as they arrive, one per line, until stopped;\n"
		  "receipts as \"[TIME] CONV receipt USER read|delivered up to #SEQ\".\n"},
	{"read", "usage: parley [options] read PEER SEQ\n"
		 "Marks your conversation with PEER as read up to SEQ (READ_MARKER);\n"
		 "prints \"read CONV up to #SEQ\" (the stored position: a lower SEQ\n"
		 "changes nothing).\n"},
	{"receipts", "usage: parley [options] receipts PEER SEQ\n"
		     "Prints who has received and read message SEQ of your conversation\n"
		     "with PEER, one member per line (tab-separated: user, delivered|-,\n"
		     "read|-).\n"},
	{"help", "usage: parley help [COMMAND]\n"},
};

static const struct cmd_help *find_cmd(const char *name)
{
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(cmd_helps); i++)
		if (!strcmp(cmd_helps[i].name, name))
			return &cmd_helps[i];
	return NULL;
}

static void cmd_usage(const char *name, FILE *f)
{
	const struct cmd_help *h = find_cmd(name);
	if (h)
		fputs(h->text, f);
	if (h && !strcmp(name, "chat"))
		fprintf(f, "%s\n", cli_chat_help);
	fputs("(parley --help lists the connection options and exit codes)\n", f);
}

static int fail(struct cli *cli, const char *what, int err)
{
	char msg[768];
	/* the node the client last tried: with --nodes, cli->t holds only
	 * the --host/--port defaults, which name no node of that list */
	struct cli_target t = cli->t;
	const char *host;
	uint16_t port;
	if (cli->c && parley_client_current_node(cli->c, &host, &port) == 0 &&
	    host && strcmp(host, "-")) {
		t.host = host;
		t.port = port;
	}
	int code = cli_explain(err, cli->c ? parley_client_failure(cli->c) : NULL, &t,
			       msg, sizeof msg);
	fprintf(stderr, "parley: %s%s%s\n", what ? what : "", what ? ": " : "", msg);
	return code;
}

static void fmt_ts(uint64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, cap, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Print a body on one line: text with control characters escaped. */
static void print_body(uint16_t ct, const uint8_t *p, uint32_t len)
{
	char desc[512];
	if (ct == PARLEY_CT_MEMBERSHIP &&
	    parley_membership_describe(p, len, desc, sizeof desc) >= 0) {
		printf("* %s", desc); /* a group membership change */
		return;
	}
	if (ct != PARLEY_CT_TEXT && ct != PARLEY_CT_JSON) {
		printf("<%u bytes, content type %u>", len, ct);
		return;
	}
	for (uint32_t i = 0; i < len; i++) {
		uint8_t ch = p[i];
		if (ch == '\n')
			fputs("\\n", stdout);
		else if (ch == '\\')
			fputs("\\\\", stdout);
		else if (ch < 0x20 || ch == 0x7F)
			printf("\\x%02x", ch);
		else
			putchar(ch);
	}
}

static void print_msg(const char *conv, size_t conv_len, uint64_t seq, uint64_t ts,
		      struct parley_str sender, uint16_t ct, struct parley_bytes body)
{
	char t[32];
	fmt_ts(ts, t, sizeof t);
	printf("[%s] %.*s #%llu %.*s: ", t, (int)conv_len, conv,
	       (unsigned long long)seq, (int)sender.len, sender.p);
	print_body(ct, body.p, body.len);
	putchar('\n');
	fflush(stdout);
}

static void on_event(void *user, const struct parley_event *ev)
{
	struct cli *cli = user;
	if (cli->chat) {
		cli_chat_on_event(cli->chat, ev);
		return;
	}
	print_msg(ev->conv.p, ev->conv.len, ev->conv_seq, ev->server_ts_ms, ev->sender,
		  ev->content_type, ev->body);
}

static void on_typing(void *user, const struct parley_typing_push *t)
{
	struct cli *cli = user;
	if (cli->chat)
		cli_chat_on_typing(cli->chat, t);
}

static void on_presence(void *user, const struct parley_presence_rec *p)
{
	struct cli *cli = user;
	if (cli->chat)
		cli_chat_on_presence(cli->chat, p);
}

static void on_receipt(void *user, const struct parley_event *ev)
{
	struct cli *cli = user;
	if (cli->chat) {
		cli_chat_on_receipt(cli->chat, ev);
		return;
	}
	char t[32];
	fmt_ts(ev->server_ts_ms, t, sizeof t);
	printf("[%s] %.*s receipt %.*s %s up to #%llu\n", t, (int)ev->conv.len,
	       ev->conv.p, (int)ev->sender.len, ev->sender.p,
	       ev->flags & PARLEY_RCPTF_READ ? "read" : "delivered",
	       (unsigned long long)ev->ref_seq);
	fflush(stdout);
}

static void on_state(void *user, enum parley_client_state st, int err)
{
	struct cli *cli = user;
	if (cli->chat) {
		cli_chat_on_state(cli->chat, st, err);
		return;
	}
	/* watch: say on stderr why the stream paused (stdout stays messages) */
	if (st == PARLEY_CLIENT_GOAWAY && -err != PARLEY_GOAWAY_AUTH_EXPIRED)
		fprintf(stderr, "parley: %s; reconnecting\n", cli_goaway_text((unsigned)-err));
}

/* ---- commands ------------------------------------------------------------------ */

static int open_peer(struct cli *cli, const char *peer, char *conv, size_t cap)
{
	if (cli_is_group_id(peer)) { /* a group: its id is the conversation */
		snprintf(conv, cap, "%s", peer);
		return 0;
	}
	const struct parley_conv *cv;
	int r = parley_client_conv_open(cli->c, peer, &cv);
	if (r < 0)
		return r;
	if (cv->conv.len >= cap)
		return -PARLEY_EPROTO;
	memcpy(conv, cv->conv.p, cv->conv.len);
	conv[cv->conv.len] = 0;
	return 0;
}

/* For reading only: a 1:1 conversation's id is the pair of user ids
 * (parley_proto_dm_conv_id), so no CONV_OPEN — a write, which a
 * cluster's follower refuses (NOTLEADER) — is needed to read it. A group
 * id is used as it is. */
static int read_conv_of(struct cli *cli, const char *peer, char *conv,
			size_t cap)
{
	if (cli_is_group_id(peer)) {
		snprintf(conv, cap, "%s", peer);
		return 0;
	}
	const char *me = parley_client_user_id(cli->c);
	if (!me)
		return -PARLEY_EINVAL;
	int r = parley_proto_dm_conv_id(me, strlen(me), peer, strlen(peer),
					conv, cap);
	return r < 0 ? r : 0;
}

/* The words of `send` joined by spaces (malloc'd), or NULL for blank text. */
static char *join_words(int argc, char **argv, size_t *len)
{
	size_t total = 1;
	for (int i = 0; i < argc; i++)
		total += strlen(argv[i]) + 1;
	char *text = malloc(total);
	if (!text)
		return NULL;
	size_t n = 0;
	for (int i = 0; i < argc; i++) {
		size_t l = strlen(argv[i]);
		if (i)
			text[n++] = ' ';
		memcpy(text + n, argv[i], l);
		n += l;
	}
	text[n] = 0;
	if (!text[strspn(text, " \t\r\n")]) {
		free(text);
		return NULL;
	}
	*len = n;
	return text;
}

static int cmd_send(struct cli *cli, int argc, char **argv)
{
	size_t n = 0;
	char *text = join_words(argc - 2, argv + 2, &n);
	if (!text)
		return CLI_EXIT_USAGE; /* checked before connecting */
	const char *me = parley_client_user_id(cli->c);
	if (!strcmp(argv[1], me)) {
		fprintf(stderr, "parley: %s is you: send to someone else\n", argv[1]);
		free(text);
		return CLI_EXIT_USAGE;
	}
	uint32_t max = parley_client_limits(cli->c)->max_body;
	if (max && n > max) {
		fprintf(stderr, "parley: message too long: %zu bytes, the server's limit is "
				"%u bytes\n", n, max);
		free(text);
		return CLI_EXIT_REFUSED;
	}
	char conv[PARLEY_PROTO_MAX_CONV_ID + 1];
	int r = open_peer(cli, argv[1], conv, sizeof conv);
	if (r < 0) {
		free(text);
		return fail(cli, "open conversation", r);
	}
	struct parley_send_result res;
	r = parley_client_send(cli->c, conv, PARLEY_CT_TEXT, text, n, &res);
	free(text);
	if (r < 0)
		return fail(cli, "send", r);
	printf("sent %s #%llu%s\n", conv, (unsigned long long)res.seq,
	       res.duplicate ? " (duplicate)" : "");
	return 0;
}

static int print_history(struct cli *cli, const char *conv, uint64_t before, unsigned limit)
{
	const struct parley_history_page *pg;
	int r = parley_client_history(cli->c, conv, before, (uint16_t)limit, &pg);
	if (r < 0)
		return r;
	for (int i = pg->count - 1; i >= 0; i--) {
		const struct parley_hist_msg *m = &pg->msgs[i];
		print_msg(conv, strlen(conv), m->seq, m->ts_ms, m->sender, m->content_type,
			  m->body);
	}
	if (pg->count == 0)
		printf("(no messages)\n");
	else if (!(pg->flags & PARLEY_HISTF_END))
		printf("(older: --before %llu)\n", (unsigned long long)pg->next_before_seq);
	fflush(stdout);
	return 0;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v > max || s[0] == '-')
		return -1;
	*out = v;
	return 0;
}

static int cmd_history(struct cli *cli, int argc, char **argv)
{
	unsigned long long before = 0, limit = 20;
	const char *peer = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--before") && i + 1 < argc) {
			if (parse_uint(argv[++i], UINT64_MAX, &before))
				goto bad;
		} else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
			if (parse_uint(argv[++i], PARLEY_PROTO_MAX_HISTORY, &limit) || !limit)
				goto bad;
		} else if (!peer && argv[i][0] != '-') {
			peer = argv[i];
		} else {
			goto bad;
		}
	}
	if (!peer)
		goto bad;
	char conv[PARLEY_PROTO_MAX_CONV_ID + 1];
	int r = read_conv_of(cli, peer, conv, sizeof conv);
	if (r < 0)
		return fail(cli, "history", r);
	r = print_history(cli, conv, before, (unsigned)limit);
	if (r == -PARLEY_ENOTFOUND && !cli_is_group_id(peer)) {
		/* never opened: open it (as before), then its empty page */
		r = open_peer(cli, peer, conv, sizeof conv);
		if (r < 0)
			return fail(cli, "open conversation", r);
		r = print_history(cli, conv, before, (unsigned)limit);
	}
	return r < 0 ? fail(cli, "history", r) : 0;
bad:
	fprintf(stderr, "usage: parley history PEER [--before SEQ] [--limit 1..100]\n");
	return EXIT_USAGE;
}

static int print_list(struct cli *cli, unsigned limit)
{
	const struct parley_conv_list_ok *l;
	int r = parley_client_conv_list(cli->c, (uint16_t)limit, &l);
	if (r < 0)
		return r;
	for (int i = 0; i < l->count; i++) {
		const struct parley_conv_entry *e = &l->entries[i];
		char t[32] = "-";
		if (e->last_ts_ms)
			fmt_ts(e->last_ts_ms, t, sizeof t);
		if (e->kind == PARLEY_CONV_GROUP)
			printf("%.*s\tgroup %.*s (%u members%s)\tlast #%llu\t%s\t%u unread"
			       "\tread #%llu\n", (int)e->conv.len, e->conv.p,
			       (int)e->title.len, e->title.p, e->member_count,
			       e->flags & PARLEY_CONVF_LEFT ? ", you left" : "",
			       (unsigned long long)e->last_seq, t, e->unread,
			       (unsigned long long)e->read_seq);
		else
			printf("%.*s\t%s%.*s\tlast #%llu\t%s\t%u unread\tread #%llu\n",
			       (int)e->conv.len, e->conv.p,
			       e->kind == PARLEY_CONV_DIRECT ? "with " : "",
			       (int)e->peer.len, e->peer.p, (unsigned long long)e->last_seq,
			       t, e->unread, (unsigned long long)e->read_seq);
	}
	if (l->count == 0)
		printf("(no conversations)\n");
	fflush(stdout);
	return 0;
}

static int cmd_list(struct cli *cli, int argc, char **argv)
{
	unsigned long long limit = 50;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--limit") && i + 1 < argc &&
		    !parse_uint(argv[i + 1], PARLEY_PROTO_MAX_LIST, &limit) && limit) {
			i++;
		} else {
			fprintf(stderr, "usage: parley list [--limit 1..100]\n");
			return EXIT_USAGE;
		}
	}
	int r = print_list(cli, (unsigned)limit);
	return r < 0 ? fail(cli, "list", r) : 0;
}

/* PEER SEQ of `read` and `receipts`: 0, or EXIT_USAGE after saying so. */
static int peer_seq(int argc, char **argv, const char *cmd,
		    unsigned long long *seq)
{
	if (argc != 3 || parse_uint(argv[2], UINT64_MAX, seq) || !*seq) {
		fprintf(stderr, "usage: parley %s PEER SEQ (SEQ >= 1)\n", cmd);
		return EXIT_USAGE;
	}
	return 0;
}

static int cmd_read(struct cli *cli, int argc, char **argv)
{
	unsigned long long seq;
	char conv[PARLEY_PROTO_MAX_CONV_ID + 1];
	if (peer_seq(argc, argv, "read", &seq))
		return EXIT_USAGE;
	int r = open_peer(cli, argv[1], conv, sizeof conv);
	if (r < 0)
		return fail(cli, "open conversation", r);
	uint64_t at = 0;
	r = parley_client_read_marker(cli->c, conv, seq, &at);
	if (r < 0)
		return fail(cli, "read", r);
	printf("read %s up to #%llu\n", conv, (unsigned long long)at);
	return 0;
}

static int cmd_receipts(struct cli *cli, int argc, char **argv)
{
	unsigned long long seq;
	char conv[PARLEY_PROTO_MAX_CONV_ID + 1];
	if (peer_seq(argc, argv, "receipts", &seq))
		return EXIT_USAGE;
	int r = open_peer(cli, argv[1], conv, sizeof conv);
	if (r < 0)
		return fail(cli, "open conversation", r);
	char after[PARLEY_PROTO_MAX_USER_ID + 1] = "";
	for (;;) {
		const struct parley_receipts_ok *q;
		r = parley_client_receipts(cli->c, conv, seq, after, 100, &q);
		if (r < 0)
			return fail(cli, "receipts", r);
		for (unsigned i = 0; i < q->count; i++) {
			const struct parley_receipt_rec *e = &q->recs[i];
			printf("%.*s\t%s\t%s\n", (int)e->user.len, e->user.p,
			       e->state & PARLEY_RCPTF_DELIVERED ? "delivered" : "-",
			       e->state & PARLEY_RCPTF_READ ? "read" : "-");
		}
		if ((q->flags & PARLEY_PAGEF_END) || !q->next_after.len)
			break;
		snprintf(after, sizeof after, "%.*s", (int)q->next_after.len,
			 q->next_after.p);
	}
	fflush(stdout);
	return 0;
}

static int cmd_watch(struct cli *cli, int argc, char **argv)
{
	unsigned long long from = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--from") && i + 1 < argc &&
		    !parse_uint(argv[i + 1], UINT64_MAX, &from)) {
			i++;
		} else {
			fprintf(stderr, "usage: parley watch [--from INBOX_SEQ]\n");
			return EXIT_USAGE;
		}
	}
	int r = parley_client_subscribe(cli->c, from, NULL);
	if (r < 0)
		return fail(cli, "subscribe", r);
	for (;;) {
		r = parley_client_poll(cli->c, -1);
		if (r < 0)
			return fail(cli, "watch", r);
	}
}

static const char *env_or(const char *flag, const char *env, const char *def)
{
	if (flag)
		return flag;
	const char *e = getenv(env);
	return e && *e ? e : def;
}

/* `CMD ... --help`: the command's own help (its arguments stop at "--"). */
static int wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return 0;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *host = NULL, *port_s = NULL, *ca = NULL, *token = NULL,
		   *device = NULL, *sni = NULL, *token_cmd = NULL, *nodes = NULL;
	int tls = -1, verbose = 0;
	static const struct option opts[] = {
		{"host", required_argument, NULL, 'H'},
		{"port", required_argument, NULL, 'p'},
		{"nodes", required_argument, NULL, 'N'},
		{"tls", no_argument, NULL, 't'},
		{"ca", required_argument, NULL, 'c'},
		{"server-name", required_argument, NULL, 's'},
		{"token", required_argument, NULL, 'T'},
		{"token-cmd", required_argument, NULL, 'C'},
		{"device", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int o;
	/* "+": stop at the command, so its own options are left for it */
	while ((o = getopt_long(argc, argv, "+vh", opts, NULL)) != -1) {
		switch (o) {
		case 'H': host = optarg; break;
		case 'p': port_s = optarg; break;
		case 'N': nodes = optarg; break;
		case 't': tls = 1; break;
		case 'c': ca = optarg; break;
		case 's': sni = optarg; break;
		case 'T': token = optarg; break;
		case 'C': token_cmd = optarg; break;
		case 'd': device = optarg; break;
		case 'v': verbose = 1; break;
		case 'h': usage(stdout); return 0;
		default:
			fprintf(stderr, "(parley --help lists the options)\n");
			return EXIT_USAGE;
		}
	}
	const char *cmd = optind < argc ? argv[optind] : "chat";
	int cargc = argc - optind;
	char **cargv = argv + optind;
	if (!strcmp(cmd, "help")) {
		if (cargc < 2) {
			usage(stdout);
			return 0;
		}
		if (!find_cmd(cargv[1])) {
			fprintf(stderr, "parley: unknown command '%s' (commands: chat, send, "
					"history, list, read, receipts, watch, help)\n", cargv[1]);
			return EXIT_USAGE;
		}
		cmd_usage(cargv[1], stdout);
		return 0;
	}
	if (!find_cmd(cmd)) {
		fprintf(stderr, "parley: unknown command '%s' (commands: chat, send, history, "
				"list, read, receipts, watch, help; parley --help for more)\n", cmd);
		return EXIT_USAGE;
	}
	if (cargc > 0 && wants_help(cargc, cargv)) {
		cmd_usage(cmd, stdout);
		return 0;
	}
	/* arguments that need no server are checked before connecting */
	if (!strcmp(cmd, "send")) {
		size_t n;
		char *text = cargc >= 3 ? join_words(cargc - 2, cargv + 2, &n) : NULL;
		if (cargc < 3) {
			cmd_usage("send", stderr);
			return EXIT_USAGE;
		}
		if (!text) {
			fprintf(stderr, "parley: empty message: nothing sent\n");
			return EXIT_USAGE;
		}
		free(text);
	}
	if (!strcmp(cmd, "chat") && cargc > 2) {
		cmd_usage("chat", stderr);
		return EXIT_USAGE;
	}

	if (tls < 0) {
		const char *e = getenv("PARLEY_TLS");
		tls = e && !strcmp(e, "1");
	}
	host = env_or(host, "PARLEY_HOST", "127.0.0.1");
	ca = env_or(ca, "PARLEY_CA", NULL);
	if (ca && !tls)
		tls = 1; /* a CA only makes sense with TLS */
	/* PARLEY_SERVER_PORT is where the client connects; PARLEY_PORT is the
	 * old spelling, which the server scripts use for their listen port */
	const char *env_port = getenv("PARLEY_SERVER_PORT");
	if (!port_s && !(env_port && *env_port)) {
		env_port = getenv("PARLEY_PORT");
		if (env_port && *env_port && !port_s)
			fprintf(stderr, "parley: note: using PARLEY_PORT=%s as the server port; "
					"the client's variable is now PARLEY_SERVER_PORT "
					"(PARLEY_PORT is parleyd's listen port)\n", env_port);
	}
	port_s = port_s ? port_s : env_port && *env_port ? env_port : tls ? "7412" : "7411";
	nodes = env_or(nodes, "PARLEY_NODES", NULL);
	if (nodes && !*nodes)
		nodes = NULL;
	token = env_or(token, "PARLEY_TOKEN", NULL);
	token_cmd = env_or(token_cmd, "PARLEY_TOKEN_CMD", NULL);
	char devbuf[PARLEY_PROTO_MAX_DEVICE_ID + 1];
	if (!(device = env_or(device, "PARLEY_DEVICE", NULL))) {
		char hn[48] = "host";
		gethostname(hn, sizeof hn - 1);
		hn[sizeof hn - 1] = 0;
		snprintf(devbuf, sizeof devbuf, "cli-%s", hn);
		device = devbuf;
	}
	unsigned long long port;
	if (parse_uint(port_s, 65535, &port) || !port) {
		fprintf(stderr, "parley: bad port '%s': a number 1..65535\n", port_s);
		return EXIT_USAGE;
	}
	if (ca && access(ca, R_OK) != 0) {
		fprintf(stderr, "parley: cannot read the CA file '%s': %s\n", ca,
			strerror(errno));
		return EXIT_USAGE;
	}
	static char tokbuf[PARLEY_PROTO_MAX_TOKEN + 2];
	if (!token && token_cmd) {
		if (cli_token_from_cmd(token_cmd, tokbuf, sizeof tokbuf) < 0) {
			fprintf(stderr, "parley: --token-cmd '%s' failed: %s\n", token_cmd, tokbuf);
			return CLI_EXIT_AUTH;
		}
		token = tokbuf;
	}
	if (!token) {
		fprintf(stderr, "parley: no token: pass --token JWT or set PARLEY_TOKEN "
				"(a development token: parleyctl token --sub USER --secret-file "
				"parley-data/dev/jwt.secret)\n");
		return EXIT_USAGE;
	}
	if (strlen(token) > PARLEY_PROTO_MAX_TOKEN) {
		fprintf(stderr, "parley: the token is longer than %d bytes\n",
			PARLEY_PROTO_MAX_TOKEN);
		return EXIT_USAGE;
	}
	if (strlen(device) > PARLEY_PROTO_MAX_DEVICE_ID) {
		fprintf(stderr, "parley: --device is longer than %d bytes\n",
			PARLEY_PROTO_MAX_DEVICE_ID);
		return EXIT_USAGE;
	}
	parley_log_set_level(verbose ? PLOG_DEBUG : PLOG_ERROR + 1);

	struct cli cli;
	memset(&cli, 0, sizeof cli);
	cli.t = (struct cli_target){host, (unsigned)port, tls, ca};
	struct parley_client_opts co = {0};
	co.host = host;
	co.port = (uint16_t)port;
	co.nodes = nodes; /* when set, it replaces host/port (libparley) */
	co.tls = tls;
	co.ca_file = ca;
	co.tls_server_name = sni;
	co.token = token;
	co.device_id = device;
	co.client_name = "parley-cli/0.2";
	co.want_zstd = 1;
	co.on_event = on_event;
	co.on_receipt = on_receipt;
	co.on_state = on_state;
	co.on_typing = on_typing;
	co.on_presence = on_presence;
	co.user = &cli;
	if (!strcmp(cmd, "chat")) {
		/* interactive: a request waits less, the outbox keeps the line */
		co.request_timeout_ms = 5000;
		co.call_deadline_ms = 8000;
	}
	int r = parley_client_new(&co, &cli.c);
	if (r < 0) {
		if (ca && r == -PARLEY_EINVAL)
			fprintf(stderr, "parley: cannot load the CA file '%s': is it PEM "
					"certificates?\n", ca);
		else
			fprintf(stderr, "parley: cannot set up the client: %s\n",
				parley_strerror(r));
		return EXIT_USAGE;
	}
	r = parley_client_connect(cli.c);
	if (r < 0 && (r == -PARLEY_EAUTH) && token_cmd &&
	    parley_client_failure(cli.c)->kind == PARLEY_FAIL_SERVER &&
	    cli_token_from_cmd(token_cmd, tokbuf, sizeof tokbuf) == 0 &&
	    parley_client_set_token(cli.c, tokbuf) == 0)
		r = parley_client_connect(cli.c); /* once: no loop */
	if (r < 0) {
		int code = fail(&cli, NULL, r);
		parley_client_free(cli.c);
		return code;
	}
	int rc;
	if (!strcmp(cmd, "send"))
		rc = cmd_send(&cli, cargc, cargv);
	else if (!strcmp(cmd, "history"))
		rc = cmd_history(&cli, cargc, cargv);
	else if (!strcmp(cmd, "read"))
		rc = cmd_read(&cli, cargc, cargv);
	else if (!strcmp(cmd, "receipts"))
		rc = cmd_receipts(&cli, cargc, cargv);
	else if (!strcmp(cmd, "list"))
		rc = cmd_list(&cli, cargc, cargv);
	else if (!strcmp(cmd, "watch"))
		rc = cmd_watch(&cli, cargc, cargv);
	else {
		rc = cli_chat_run(cli.c, &cli.chat, cargc == 2 ? cargv[1] : NULL, &cli.t,
				  token_cmd);
		/* the network thread may still be inside the client: no free */
		fflush(stdout);
		fflush(stderr);
		_exit(rc);
	}
	parley_client_free(cli.c);
	return rc;
}
