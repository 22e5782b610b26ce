/*
 * parley_cli.c — `parley`, the terminal chat client on libparley.
 *
 *   parley [--host H] [--port P] [--tls [--ca FILE] [--server-name N]]
 *          --token JWT --device NAME [-v] <command> [args]
 *
 * Commands: send PEER TEXT..., history PEER [--before N] [--limit N],
 * list [--limit N], watch [--from N], chat (interactive; the default).
 * Options fall back to the environment (PARLEY_HOST, PARLEY_PORT,
 * PARLEY_TLS=1, PARLEY_CA, PARLEY_TOKEN, PARLEY_DEVICE): flag > env >
 * default, as everywhere in parley.
 *
 * Output: one line per message/event, so `parley watch | grep` works.
 * Exit codes: 0 ok, 1 the server refused (auth, permission, not found),
 * 2 usage, 3 connection or runtime error.
 *
 * Single-threaded: the interactive mode polls stdin and the client's socket
 * together; events are printed from the library's callback.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parley_client.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_RUNTIME 3

struct cli {
	struct parley_client *c;
	char peer[PARLEY_PROTO_MAX_USER_ID + 1]; /* chat: current peer */
	char conv[PARLEY_PROTO_MAX_CONV_ID + 1]; /* chat: its conversation */
	/* chat: ids this session sent, so their echo events are not printed twice */
	uint8_t sent[64][PARLEY_PROTO_MSG_ID_LEN];
	unsigned nsent;
	int interactive;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: parley [options] <command> [args]\n"
		"\n"
		"commands:\n"
		"  send PEER TEXT...                 send a message to PEER\n"
		"  history PEER [--before N] [--limit N]\n"
		"                                    print messages with PEER (oldest first)\n"
		"  list [--limit N]                  your conversations, most recent first\n"
		"  watch [--from N]                  print incoming events as they arrive\n"
		"  chat [PEER]                       interactive (default): /to PEER, then type;\n"
		"                                    /history [N], /list, /quit\n"
		"\n"
		"options (environment in brackets):\n"
		"  --host H          server [PARLEY_HOST] (127.0.0.1)\n"
		"  --port P          port [PARLEY_PORT] (7411, TLS 7412)\n"
		"  --tls             use TLS [PARLEY_TLS=1]\n"
		"  --ca FILE         trust only this CA (e.g. the dev cert) [PARLEY_CA]\n"
		"  --server-name N   TLS name to verify (default: host)\n"
		"  --token JWT       access token [PARLEY_TOKEN]\n"
		"  --device NAME     this device's id [PARLEY_DEVICE] (cli-<hostname>)\n"
		"  -v                debug logs on stderr\n"
		"\n"
		"exit codes: 0 ok, 1 refused by the server, 2 usage, 3 connection/runtime error\n");
}

static int exit_code(int err)
{
	switch (-err) {
	case PARLEY_EAUTH:
	case PARLEY_EPERM:
	case PARLEY_ENOTFOUND:
	case PARLEY_EINVAL:
	case PARLEY_ETOOBIG:
	case PARLEY_EVERSION:
		return EXIT_REFUSED;
	}
	return EXIT_RUNTIME;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "parley: %s: %s\n", what, parley_strerror(err));
	return exit_code(err);
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
	if (cli->interactive) {
		unsigned n = PARLEY_MIN(cli->nsent, (unsigned)PARLEY_ARRAY_LEN(cli->sent));
		for (unsigned i = 0; i < n; i++)
			if (!memcmp(cli->sent[i], ev->client_msg_id, PARLEY_PROTO_MSG_ID_LEN))
				return; /* our own send, already shown */
	}
	print_msg(ev->conv.p, ev->conv.len, ev->conv_seq, ev->server_ts_ms, ev->sender,
		  ev->content_type, ev->body);
}

static void on_state(void *user, enum parley_client_state st, int err)
{
	struct cli *cli = user;
	if (!cli->interactive)
		return;
	if (st == PARLEY_CLIENT_DISCONNECTED)
		fprintf(stderr, "* disconnected (%s), reconnecting...\n", parley_strerror(err));
	else if (st == PARLEY_CLIENT_CONNECTED)
		fprintf(stderr, "* connected\n");
	else if (st == PARLEY_CLIENT_GOAWAY)
		fprintf(stderr, "* server is draining, will reconnect\n");
}

/* ---- commands ------------------------------------------------------------------ */

static int open_peer(struct cli *cli, const char *peer, char *conv, size_t cap)
{
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

static int cmd_send(struct cli *cli, int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: parley send PEER TEXT...\n");
		return EXIT_USAGE;
	}
	char text[65536];
	size_t n = 0;
	for (int i = 2; i < argc; i++) {
		size_t l = strlen(argv[i]);
		if (n + l + 1 >= sizeof text) {
			fprintf(stderr, "parley: message too long\n");
			return EXIT_USAGE;
		}
		if (i > 2)
			text[n++] = ' ';
		memcpy(text + n, argv[i], l);
		n += l;
	}
	char conv[PARLEY_PROTO_MAX_CONV_ID + 1];
	int r = open_peer(cli, argv[1], conv, sizeof conv);
	if (r < 0)
		return fail("open conversation", r);
	struct parley_send_result res;
	r = parley_client_send(cli->c, conv, PARLEY_CT_TEXT, text, n, &res);
	if (r < 0)
		return fail("send", r);
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
	int r = open_peer(cli, peer, conv, sizeof conv);
	if (r < 0)
		return fail("open conversation", r);
	r = print_history(cli, conv, before, (unsigned)limit);
	return r < 0 ? fail("history", r) : 0;
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
		printf("%.*s\t%s%.*s\tlast #%llu\t%s\n", (int)e->conv.len, e->conv.p,
		       e->kind == PARLEY_CONV_DIRECT ? "with " : "", (int)e->peer.len,
		       e->peer.p, (unsigned long long)e->last_seq, t);
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
	return r < 0 ? fail("list", r) : 0;
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
		return fail("subscribe", r);
	for (;;) {
		r = parley_client_poll(cli->c, -1);
		if (r < 0)
			return fail("watch", r);
	}
}

/* ---- interactive ------------------------------------------------------------------ */

static void chat_help(void)
{
	fprintf(stderr, "commands: /to PEER, /history [N], /list, /quit; "
			"other lines are sent to the current peer\n");
}

/* Returns 1 to quit, 0 to go on. Errors are reported and the chat goes on. */
static int chat_line(struct cli *cli, char *line)
{
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = 0;
	if (!n)
		return 0;
	int r = 0;
	if (line[0] == '/') {
		char *cmd = strtok(line, " \t");
		char *arg = strtok(NULL, " \t");
		if (!strcmp(cmd, "/quit") || !strcmp(cmd, "/q"))
			return 1;
		if (!strcmp(cmd, "/to") && arg) {
			char conv[sizeof cli->conv];
			r = open_peer(cli, arg, conv, sizeof conv);
			if (r == 0) {
				snprintf(cli->peer, sizeof cli->peer, "%s", arg);
				memcpy(cli->conv, conv, sizeof conv);
				fprintf(stderr, "* talking to %s (%s)\n", cli->peer, cli->conv);
			}
		} else if (!strcmp(cmd, "/history")) {
			unsigned long long lim = 20;
			if (!cli->conv[0]) {
				fprintf(stderr, "* /to PEER first\n");
				return 0;
			}
			if (arg && (parse_uint(arg, PARLEY_PROTO_MAX_HISTORY, &lim) || !lim)) {
				fprintf(stderr, "* /history [1..100]\n");
				return 0;
			}
			r = print_history(cli, cli->conv, 0, (unsigned)lim);
		} else if (!strcmp(cmd, "/list")) {
			r = print_list(cli, 50);
		} else {
			chat_help();
		}
	} else if (!cli->conv[0]) {
		fprintf(stderr, "* no peer yet: /to PEER\n");
		return 0;
	} else {
		uint8_t id[PARLEY_PROTO_MSG_ID_LEN];
		r = parley_client_random_id(id);
		if (r == 0) {
			memcpy(cli->sent[cli->nsent++ % PARLEY_ARRAY_LEN(cli->sent)], id, sizeof id);
			struct parley_send_result res;
			r = parley_client_send_id(cli->c, cli->conv, id, PARLEY_CT_TEXT, line, n,
						  &res);
			if (r == 0) {
				struct parley_str me = parley_str_c(parley_client_user_id(cli->c));
				print_msg(cli->conv, strlen(cli->conv), res.seq, res.server_ts_ms,
					  me, PARLEY_CT_TEXT,
					  (struct parley_bytes){(const uint8_t *)line, (uint32_t)n});
			}
		}
	}
	if (r < 0)
		fprintf(stderr, "* error: %s\n", parley_strerror(r));
	if (r == -PARLEY_EAUTH)
		return 1;
	return 0;
}

static int cmd_chat(struct cli *cli, int argc, char **argv)
{
	if (argc > 2) {
		fprintf(stderr, "usage: parley chat [PEER]\n");
		return EXIT_USAGE;
	}
	cli->interactive = 1;
	int r = parley_client_subscribe(cli->c, 0, NULL);
	if (r < 0)
		return fail("subscribe", r);
	fprintf(stderr, "* signed in as %s. ", parley_client_user_id(cli->c));
	chat_help();
	if (argc == 2) {
		char to[16 + PARLEY_PROTO_MAX_USER_ID];
		snprintf(to, sizeof to, "/to %s", argv[1]);
		chat_line(cli, to);
	}
	char line[65536];
	size_t ln = 0;
	for (;;) {
		if (!parley_client_connected(cli->c)) {
			r = parley_client_poll(cli->c, 500); /* reconnects */
			if (r < 0 && r != -PARLEY_ECLOSED)
				return fail("connection", r);
		}
		struct pollfd p[2] = {{STDIN_FILENO, POLLIN, 0},
				      {parley_client_fd(cli->c), POLLIN, 0}};
		int t = parley_client_next_timeout_ms(cli->c);
		int pr = poll(p, p[1].fd >= 0 ? 2 : 1, t);
		if (pr < 0 && errno != EINTR)
			return fail("poll", -errno);
		if (p[1].fd >= 0) {
			r = parley_client_process(cli->c);
			if (r == -PARLEY_EAUTH || r == -PARLEY_EVERSION)
				return fail("connection", r);
		}
		if (pr > 0 && (p[0].revents & (POLLIN | POLLHUP))) {
			ssize_t n = read(STDIN_FILENO, line + ln, sizeof line - 1 - ln);
			if (n <= 0)
				return 0; /* EOF: done */
			ln += (size_t)n;
			char *nl;
			while ((nl = memchr(line, '\n', ln)) != NULL) {
				size_t one = (size_t)(nl - line) + 1;
				char msg[sizeof line];
				memcpy(msg, line, one);
				msg[one] = 0;
				memmove(line, line + one, ln - one);
				ln -= one;
				if (chat_line(cli, msg))
					return 0;
			}
			if (ln == sizeof line - 1) { /* an over-long line: send as is */
				line[ln] = 0;
				ln = 0;
				if (chat_line(cli, line))
					return 0;
			}
		}
	}
}

/* ---- main ------------------------------------------------------------------------- */

static const char *env_or(const char *flag, const char *env, const char *def)
{
	if (flag)
		return flag;
	const char *e = getenv(env);
	return e && *e ? e : def;
}

int main(int argc, char **argv)
{
	const char *host = NULL, *port_s = NULL, *ca = NULL, *token = NULL,
		   *device = NULL, *sni = NULL;
	int tls = -1, verbose = 0;
	static const struct option opts[] = {
		{"host", required_argument, NULL, 'H'},
		{"port", required_argument, NULL, 'p'},
		{"tls", no_argument, NULL, 't'},
		{"ca", required_argument, NULL, 'c'},
		{"server-name", required_argument, NULL, 's'},
		{"token", required_argument, NULL, 'T'},
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
		case 't': tls = 1; break;
		case 'c': ca = optarg; break;
		case 's': sni = optarg; break;
		case 'T': token = optarg; break;
		case 'd': device = optarg; break;
		case 'v': verbose = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (tls < 0) {
		const char *e = getenv("PARLEY_TLS");
		tls = e && !strcmp(e, "1");
	}
	host = env_or(host, "PARLEY_HOST", "127.0.0.1");
	port_s = env_or(port_s, "PARLEY_PORT", tls ? "7412" : "7411");
	ca = env_or(ca, "PARLEY_CA", NULL);
	token = env_or(token, "PARLEY_TOKEN", NULL);
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
		fprintf(stderr, "parley: bad port '%s'\n", port_s);
		return EXIT_USAGE;
	}
	if (!token) {
		fprintf(stderr, "parley: --token (or PARLEY_TOKEN) is required\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (ca && !tls)
		tls = 1; /* a CA only makes sense with TLS */
	parley_log_set_level(verbose ? PLOG_DEBUG : PLOG_ERROR);

	const char *cmd = optind < argc ? argv[optind] : "chat";
	int cargc = argc - optind;
	char **cargv = argv + optind;
	if (strcmp(cmd, "send") && strcmp(cmd, "history") && strcmp(cmd, "list") &&
	    strcmp(cmd, "watch") && strcmp(cmd, "chat")) {
		fprintf(stderr, "parley: unknown command '%s'\n", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}

	struct cli cli;
	memset(&cli, 0, sizeof cli);
	struct parley_client_opts co = {0};
	co.host = host;
	co.port = (uint16_t)port;
	co.tls = tls;
	co.ca_file = ca;
	co.tls_server_name = sni;
	co.token = token;
	co.device_id = device;
	co.client_name = "parley-cli/0.1";
	co.want_zstd = 1;
	co.on_event = on_event;
	co.on_state = on_state;
	co.user = &cli;
	int r = parley_client_new(&co, &cli.c);
	if (r < 0)
		return fail("setup", r);
	r = parley_client_connect(cli.c);
	if (r < 0) {
		int code = fail("connect", r);
		parley_client_free(cli.c);
		return code;
	}
	int rc;
	if (!strcmp(cmd, "send"))
		rc = cmd_send(&cli, cargc, cargv);
	else if (!strcmp(cmd, "history"))
		rc = cmd_history(&cli, cargc, cargv);
	else if (!strcmp(cmd, "list"))
		rc = cmd_list(&cli, cargc, cargv);
	else if (!strcmp(cmd, "watch"))
		rc = cmd_watch(&cli, cargc, cargv);
	else
		rc = cmd_chat(&cli, cargc, cargv); /* cargc 0: no command given */
	parley_client_free(cli.c);
	return rc;
}
