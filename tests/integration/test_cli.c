/*
 * test_cli.c — the terminal client `parley` as people use it, against a
 * real parleyd.
 *
 *   1. `--help` exits 0 everywhere (parley, parley CMD --help, parley help
 *      [CMD], parleyctl ...); usage errors exit 2.
 *   2. Errors name their cause, with the documented exit code: connection
 *      refused (named as the node tried, also with --nodes), a plain
 *      client on the TLS port, a TLS client on the plain
 *      port, an untrusted certificate (no --ca), a missing CA file, a
 *      refused token (with the server's reason), sending to yourself, an
 *      empty message.
 *   3. A token accepted inside the clock-skew leeway and then dropped with
 *      GOAWAY AUTH_EXPIRED ends the chat with "expired" and exit code 4 —
 *      no reconnect loop.
 *   4. The interactive client in a pseudo-terminal: a typed line shows as
 *      sent with its seq; with the server stopped, a typed line shows as
 *      pending and the prompt keeps answering (/help); after a restart the
 *      pending line is delivered exactly once (checked in bob's history).
 *
 * No wall-clock assertions: waits only bound how long a failure takes.
 */
#include <pty.h>
#include <sys/ioctl.h>

#include "itest.h"

static char parley_bin[512], ctl_bin[512];

/* Run argv (NULL-terminated) with stdin from /dev/null; stdout+stderr into
 * out. Returns the exit status (or -1). */
static int run(char *out, size_t cap, const char *const *argv)
{
	int p[2];
	IT_CHECK(pipe(p) == 0);
	pid_t pid = fork();
	IT_CHECK(pid >= 0);
	if (pid == 0) {
		int dn = open("/dev/null", O_RDONLY);
		dup2(dn, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		close(p[0]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	size_t n = 0;
	for (;;) {
		struct pollfd pf = {p[0], POLLIN, 0};
		if (poll(&pf, 1, 60000) <= 0) {
			kill(pid, SIGKILL);
			break;
		}
		ssize_t r = read(p[0], out + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1)
			break;
	}
	out[n] = 0;
	close(p[0]);
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define RUN(out, ...)                                                          \
	run(out, sizeof out, (const char *const[]){__VA_ARGS__, NULL})

static void check_help(void)
{
	char out[16384];
	IT_CHECK(RUN(out, parley_bin, "--help") == 0, "%s", out);
	IT_CHECK(strstr(out, "exit codes"), "%s", out);
	IT_CHECK(RUN(out, parley_bin, "help") == 0, "%s", out);
	IT_CHECK(RUN(out, parley_bin, "help", "send") == 0, "%s", out);
	IT_CHECK(RUN(out, parley_bin, "send", "--help") == 0, "%s", out);
	IT_CHECK(RUN(out, parley_bin, "chat", "--help") == 0, "%s", out);
	IT_CHECK(RUN(out, parley_bin, "history", "bob", "--help") == 0, "%s", out);
	IT_CHECK(RUN(out, parley_bin, "watch", "--help") == 0, "%s", out);
	IT_CHECK(RUN(out, ctl_bin, "--help") == 0, "%s", out);
	IT_CHECK(RUN(out, ctl_bin, "help") == 0, "%s", out);
	IT_CHECK(RUN(out, ctl_bin, "help", "token") == 0, "%s", out);
	IT_CHECK(RUN(out, ctl_bin, "token", "--help") == 0, "%s", out);
	IT_CHECK(RUN(out, ctl_bin, "inspect", "--help") == 0, "%s", out);
	IT_CHECK(RUN(out, parley_bin, "frobnicate") == 2, "%s", out);
	IT_CHECK(strstr(out, "unknown command"), "%s", out);
	IT_CHECK(RUN(out, parley_bin, "help", "frobnicate") == 2, "%s", out);
}

static void check_errors(struct it_server *s, const char *tok)
{
	char out[16384], port[16], tport[16], dead[16];
	snprintf(port, sizeof port, "%u", s->port);
	snprintf(tport, sizeof tport, "%u", s->tls_port);
	snprintf(dead, sizeof dead, "%u", it_free_port());
	const char *ca = it_path("ca.pem");

	int rc = RUN(out, parley_bin, "--token", tok, "--port", dead, "send", "bob", "hi");
	IT_CHECK(rc == 3 && strstr(out, "connection refused"), "refused: %d %s", rc, out);
	/* with --nodes the message names that node, not the --host/--port
	 * defaults (127.0.0.1:7411 named no node of a run-cluster cluster) */
	char nodes[32], named[32];
	snprintf(nodes, sizeof nodes, "127.0.0.1:%s", dead);
	snprintf(named, sizeof named, "to 127.0.0.1:%s:", dead);
	rc = RUN(out, parley_bin, "--token", tok, "--nodes", nodes, "history", "bob");
	IT_CHECK(rc == 3 && strstr(out, named) && !strstr(out, ":7411:"),
		 "refused through --nodes: %d %s", rc, out);

	rc = RUN(out, parley_bin, "--token", tok, "--port", tport, "send", "bob", "hi");
	IT_CHECK(rc == 3 && strstr(out, "--tls"), "plain on TLS port: %d %s", rc, out);
	IT_CHECK(!strstr(out, "authentication"), "%s", out);

	char aport[16];
	snprintf(aport, sizeof aport, "%u", s->admin_port);
	rc = RUN(out, parley_bin, "--token", tok, "--port", aport, "send", "bob", "hi");
	IT_CHECK(rc == 3 && strstr(out, "HTTP"), "the admin port: %d %s", rc, out);

	rc = RUN(out, parley_bin, "--token", tok, "--tls", "--ca", ca, "--host", "localhost",
		 "--port", port, "send", "bob", "hi");
	IT_CHECK(rc == 3 && strstr(out, "TLS handshake"), "TLS on plain port: %d %s", rc, out);

	rc = RUN(out, parley_bin, "--token", tok, "--tls", "--host", "localhost", "--port",
		 tport, "send", "bob", "hi");
	IT_CHECK(rc == 3 && strstr(out, "not trusted") && strstr(out, "--ca"),
		 "no CA: %d %s", rc, out);
	IT_CHECK(!strstr(out, "authentication failed"), "%s", out);

	rc = RUN(out, parley_bin, "--token", tok, "--ca", it_path("no-such-ca.pem"), "--port",
		 tport, "send", "bob", "hi");
	IT_CHECK(rc == 2 && strstr(out, "no-such-ca.pem"), "missing CA: %d %s", rc, out);

	struct it_claims bad = {.sub = "alice", .secret = "another-secret-long-enough-0123456789"};
	char *badtok = it_token(&bad);
	rc = RUN(out, parley_bin, "--token", badtok, "--port", port, "send", "bob", "hi");
	IT_CHECK(rc == 4 && strstr(out, "refused the token"), "bad token: %d %s", rc, out);
	IT_CHECK(strstr(out, "(server: "), "the server's reason is shown: %s", out);
	free(badtok);

	rc = RUN(out, parley_bin, "--token", tok, "--port", port, "send", "alice", "hi");
	IT_CHECK(rc == 2 && strstr(out, "is you"), "self: %d %s", rc, out);
	rc = RUN(out, parley_bin, "--token", tok, "--port", port, "send", "bob", "  ");
	IT_CHECK(rc == 2 && strstr(out, "empty"), "empty: %d %s", rc, out);

	char *big = malloc(70001);
	IT_CHECK(big);
	memset(big, 'x', 70000);
	big[70000] = 0;
	rc = RUN(out, parley_bin, "--token", tok, "--port", port, "send", "bob", big);
	IT_CHECK(rc == 1 && strstr(out, "too long") && strstr(out, "65536"),
		 "too long names the limit: %d %s", rc, out);
	free(big);

	/* --token-cmd supplies the token when none is given */
	char tcmd[2048];
	snprintf(tcmd, sizeof tcmd, "echo %s", tok);
	rc = RUN(out, parley_bin, "--token-cmd", tcmd, "--port", port, "send", "dave", "via cmd");
	IT_CHECK(rc == 0 && strstr(out, "sent d:alice:dave #1"), "token-cmd: %d %s", rc, out);
	rc = RUN(out, parley_bin, "--token-cmd", "false", "--port", port, "send", "bob", "x");
	IT_CHECK(rc == 4 && strstr(out, "--token-cmd"), "failing token-cmd: %d %s", rc, out);

	/* TLS with the CA works */
	rc = RUN(out, parley_bin, "--token", tok, "--ca", ca, "--host", "localhost", "--port",
		 tport, "send", "carol", "over tls");
	IT_CHECK(rc == 0 && strstr(out, "sent d:alice:carol #1"), "tls send: %d %s", rc, out);
}

/* ---- the interactive client in a pty ----------------------------------------------- */

struct term {
	pid_t pid;
	int fd;
	char *buf;
	size_t len, cap, seen; /* seen: where the next wait starts looking */
};

static void term_read(struct term *t, int timeout_ms)
{
	struct pollfd pf = {t->fd, POLLIN, 0};
	if (poll(&pf, 1, timeout_ms) <= 0)
		return;
	if (t->len + 4096 + 1 > t->cap) {
		t->cap = t->cap ? t->cap * 2 : 1 << 16;
		t->buf = realloc(t->buf, t->cap);
		IT_CHECK(t->buf);
	}
	ssize_t r = read(t->fd, t->buf + t->len, 4096);
	if (r > 0) {
		t->len += (size_t)r;
		t->buf[t->len] = 0;
	} else {
		it_sleep_ms((unsigned)timeout_ms); /* the child is gone (EIO): the
						      callers' loops still count time */
	}
}

/* Wait for text to appear after t->seen; move seen past it. */
static void term_wait(struct term *t, const char *text, int timeout_ms, const char *why)
{
	for (int ms = 0; ms < timeout_ms; ms += 50) {
		if (t->buf && t->len > t->seen) {
			char *p = strstr(t->buf + t->seen, text);
			if (p) {
				t->seen = (size_t)(p - t->buf) + strlen(text);
				return;
			}
		}
		term_read(t, 50);
	}
	fprintf(stderr, "---- terminal output ----\n%s\n----\n", t->buf ? t->buf : "");
	it_fail(__FILE__, __LINE__, "%s: \"%s\" did not appear", why, text);
}

/* Like term_wait, but text may also be in what was already matched past:
 * for state the client draws whenever it changes (the prompt's presence
 * may have been drawn before the output waited for just above it). */
static void term_wait_since_start(struct term *t, const char *text, int timeout_ms,
				  const char *why)
{
	size_t seen = t->seen;
	t->seen = 0;
	term_wait(t, text, timeout_ms, why);
	if (t->seen < seen)
		t->seen = seen;
}

static void term_type(struct term *t, const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t k = write(t->fd, s, n);
		if (k < 0 && errno == EINTR)
			continue;
		IT_CHECK(k > 0, "write to the terminal: %s", strerror(errno));
		s += k;
		n -= (size_t)k;
	}
}

static void term_start(struct term *t, const struct it_server *s, const char *tok)
{
	memset(t, 0, sizeof *t);
	char port[16];
	snprintf(port, sizeof port, "%u", s->port);
	struct winsize ws = {.ws_row = 40, .ws_col = 160};
	pid_t parent = getpid();
	t->pid = forkpty(&t->fd, NULL, NULL, &ws);
	IT_CHECK(t->pid >= 0);
	if (t->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		setenv("TERM", "xterm", 1);
		execl(parley_bin, parley_bin, "--token", tok, "--port", port, "--device",
		      "pty", "chat", "bob", (char *)NULL);
		_exit(127);
	}
}

static void check_pty_chat(struct it_server *s, const char *tok)
{
	struct term t;
	term_start(&t, s, tok);
	term_wait(&t, "talking to bob", 20000, "start");
	term_wait(&t, "[alice -> bob] > ", 20000, "prompt with who and the peer");

	term_type(&t, "hello from the terminal\r");
	term_wait(&t, " you: hello from the terminal  [sent]", 20000, "sent with its seq");
	/* the seq is on the sent line: "#N you: ..." */
	char *line = strstr(t.buf, "you: hello from the terminal  [sent]");
	IT_CHECK(line && line - t.buf > 3 && memchr(line - 8, '#', 8), "no #seq: %s", t.buf);

	IT_CHECK(it_server_stop(s, SIGTERM, 30000) == 0, "graceful stop");
	term_wait(&t, "reconnecting in the background", 30000, "outage reported");
	term_wait(&t, "offline", 30000, "status line says offline");

	term_type(&t, "typed while the server is down\r");
	term_wait(&t, "you: typed while the server is down  [pending: offline]", 20000,
		  "pending shown");
	/* the UI still answers while the line waits */
	term_type(&t, "/help\r");
	term_wait(&t, "commands: /to PEER", 20000, "prompt stays responsive while offline");
	term_type(&t, "/bogus\r");
	term_wait(&t, "unknown command /bogus", 20000, "unknown commands say so");

	it_server_start(s);
	term_wait(&t, "you: typed while the server is down  [sent]", 60000,
		  "the pending line is sent when the server is back");

	/* shown once as sent (the pending block is redrawn, a final line is not) */
	int shown = 0;
	for (const char *p = t.buf; (p = strstr(p, "typed while the server is down  [sent]")); p++)
		shown++;
	IT_CHECK(shown == 1, "the sent line was printed %d times", shown);

	/* exactly once, from the other side */
	char *btok = it_token_for("bob");
	struct parley_client *b = it_client_tok(s, btok, "bob-dev", 0, NULL, NULL);
	free(btok);
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(b, "alice", &cv));
	char conv[80];
	snprintf(conv, sizeof conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	const struct parley_history_page *pg;
	IT_OK(parley_client_history(b, conv, 0, 100, &pg));
	int hello = 0, down = 0;
	for (int i = 0; i < pg->count; i++) {
		const struct parley_hist_msg *m = &pg->msgs[i];
		if (m->body.len == strlen("hello from the terminal") &&
		    !memcmp(m->body.p, "hello from the terminal", m->body.len))
			hello++;
		if (m->body.len == strlen("typed while the server is down") &&
		    !memcmp(m->body.p, "typed while the server is down", m->body.len))
			down++;
	}
	IT_CHECK(hello == 1 && down == 1, "delivered exactly once: hello=%d down=%d (of %d)",
		 hello, down, pg->count);

	/* /history pages back with --before, framed so it is not taken for live */
	term_type(&t, "/history 1 --before 2\r");
	term_wait(&t, ".-- history with bob: #1..#1 --", 20000, "history header");
	term_wait(&t, "  | [", 20000, "history lines are marked");
	term_wait(&t, "#1 you: hello from the terminal", 20000, "--before 2 shows #1");
	term_wait(&t, "start of the conversation", 20000, "history footer");

	/* the prompt shows bob's presence and typing (issue 13) */
	term_wait_since_start(&t, "[alice -> bob (online)", 20000,
			      "bob's presence in the prompt");
	IT_OK(parley_client_typing(b, conv, PARLEY_TYPING_STARTED));
	term_wait(&t, "bob is typing...", 20000, "bob's typing in the prompt");

	/* a message from bob arrives while alice is typing: her half line stays */
	term_type(&t, "half a li");
	struct parley_send_result res;
	IT_OK(parley_client_send(b, conv, PARLEY_CT_TEXT, "ping from bob", 13, &res));
	term_wait(&t, "bob: ping from bob", 20000, "incoming line shown");
	term_wait(&t, "half a li", 20000, "the line being typed is redrawn after it");
	term_type(&t, "ne\r");
	term_wait(&t, "you: half a line  [sent]", 20000, "the finished line is sent whole");

	/* edits and deletes: own, someone else's, and shown live / in history */
	term_type(&t, "/edit 1 hello, edited\r");
	term_wait(&t, "* #1 edited", 20000, "/edit is acknowledged");
	char want[128];
	IT_OK(parley_client_edit(b, conv, res.seq, PARLEY_CT_TEXT, "ping, fixed", 11, NULL));
	snprintf(want, sizeof want, "#%llu bob: ping, fixed  (edited)",
		 (unsigned long long)res.seq);
	term_wait(&t, want, 20000, "bob's edit is shown live on the message's #");
	snprintf(want, sizeof want, "/delete %llu\r", (unsigned long long)res.seq);
	term_type(&t, want);
	snprintf(want, sizeof want, "#%llu is not your message", (unsigned long long)res.seq);
	term_wait(&t, want, 20000, "someone else's message cannot be deleted");
	term_type(&t, "/delete 1\r");
	term_wait(&t, "* #1 deleted for everyone", 20000, "/delete is acknowledged");
	term_type(&t, "/history 1 --before 2\r");
	term_wait(&t, "#1 you: (deleted)", 20000, "history shows the deletion");
	term_type(&t, "/retention count 1000\r");
	term_wait(&t, "* retention with bob: at most 1000 messages", 20000,
		  "/retention sets the conversation's own limit");
	parley_client_free(b);
	term_wait(&t, "[alice -> bob (last seen ", 20000, "bob's last seen after he left");

	term_type(&t, "/quit\r");
	int st = -1;
	for (int ms = 0; ms < 20000; ms += 50) {
		term_read(&t, 50);
		if (waitpid(t.pid, &st, WNOHANG) == t.pid)
			break;
		st = -1;
	}
	IT_CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "/quit exits 0 (status %d)",
		 st);
	close(t.fd);
	free(t.buf);
}

/* Issue 9: accepted inside the leeway, then GOAWAY AUTH_EXPIRED: the chat
 * ends with the cause and exit 4, it does not reconnect in a loop. */
static void check_expired_in_leeway(struct it_server *s)
{
	struct it_claims cl = {.sub = "alice", .exp_rel_s = -5}; /* leeway is 30 s */
	char *tok = it_token(&cl);
	char out[16384], port[16];
	snprintf(port, sizeof port, "%u", s->port);
	/* stdin is /dev/null: without a terminal the chat would leave at end
	 * of input once nothing is unsent, so keep it busy with a peer and let
	 * the GOAWAY decide: use `watch`, which never ends by itself */
	int rc = RUN(out, parley_bin, "--token", tok, "--port", port, "watch");
	IT_CHECK(rc == 4 && strstr(out, "expired"), "watch: %d %s", rc, out);

	/* the interactive client (where the loop was seen) in a terminal */
	struct term t;
	term_start(&t, s, tok);
	int st = -1;
	for (int ms = 0; ms < 60000; ms += 50) {
		term_read(&t, 50);
		if (waitpid(t.pid, &st, WNOHANG) == t.pid)
			break;
		st = -1;
	}
	for (int i = 0; i < 20; i++)
		term_read(&t, 10);
	IT_CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 4,
		 "chat with a token expiring in the leeway: status %d, output %s", st,
		 t.buf ? t.buf : "");
	IT_CHECK(t.buf && strstr(t.buf, "expired"), "%s", t.buf ? t.buf : "");
	close(t.fd);
	free(t.buf);
	free(tok);
}

int main(void)
{
	it_init("cli");
	snprintf(parley_bin, sizeof parley_bin, "%s/tools/parley", getenv("PARLEY_BIN_DIR"));
	snprintf(ctl_bin, sizeof ctl_bin, "%s/tools/parleyctl", getenv("PARLEY_BIN_DIR"));
	if (access(parley_bin, X_OK) != 0) {
		fprintf(stderr, "cli: %s is not built\n", parley_bin);
		return 77;
	}
	check_help();

	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);
	char *tok = it_token_for("alice");
	check_errors(&srv, tok);
	check_expired_in_leeway(&srv);
	check_pty_chat(&srv, tok);
	free(tok);
	printf("cli: ok\n");
	return 0;
}
