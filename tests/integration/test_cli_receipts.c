/*
 * test_cli_receipts.c — read markers and receipts from the terminal client
 * `parley`, against a real parleyd:
 *
 *   1. `parley list` shows the unread count and read position; `parley
 *      read PEER SEQ` marks read (a lower SEQ keeps the stored position);
 *      `parley receipts PEER SEQ` lists who has received / read it; bad
 *      SEQ values are usage errors (exit 2) or refusals (exit 1).
 *   2. `parley chat PEER` (no terminal: lines from stdin) prints a message
 *      that arrives while it runs and then tells the server it was read:
 *      the unread count seen by another device drops to 0, and the sender
 *      gets a READ receipt (`parley watch` prints it).
 */
#include "itest.h"

static char parley_bin[512];

struct proc {
	pid_t pid;
	int in, out; /* its stdin (write end), stdout+stderr (read end) */
	char buf[16384];
	size_t n;
};

static void proc_start(struct proc *p, const struct it_server *s,
		       const char *tok, const char *const *args)
{
	int pin[2], pout[2];
	IT_CHECK(pipe(pin) == 0 && pipe(pout) == 0);
	char port[16];
	snprintf(port, sizeof port, "%u", s->port);
	const char *argv[16] = {parley_bin, "--host", "127.0.0.1", "--port", port,
				"--token", tok, "--device", "cli-test"};
	int n = 9;
	for (int i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	memset(p, 0, sizeof *p);
	p->pid = fork();
	IT_CHECK(p->pid >= 0);
	if (p->pid == 0) {
		dup2(pin[0], 0);
		dup2(pout[1], 1);
		dup2(pout[1], 2);
		close(pin[1]);
		close(pout[0]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pin[0]);
	close(pout[1]);
	p->in = pin[1];
	p->out = pout[0];
}

/* Reads until `text` is in the output (fails after timeout_ms). */
static void proc_wait(struct proc *p, const char *text, int timeout_ms)
{
	for (int ms = 0; ms < timeout_ms; ms += 50) {
		p->buf[p->n] = 0;
		if (strstr(p->buf, text))
			return;
		struct pollfd pf = {p->out, POLLIN, 0};
		if (poll(&pf, 1, 50) > 0) {
			ssize_t r = read(p->out, p->buf + p->n, sizeof p->buf - 1 - p->n);
			if (r > 0)
				p->n += (size_t)r;
		}
	}
	it_fail(__FILE__, __LINE__, "no \"%s\" in: %s", text, p->buf);
}

static int proc_end(struct proc *p)
{
	close(p->in);
	int st = 0;
	for (int ms = 0; ms < 20000; ms += 20) {
		if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
			close(p->out);
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
		}
		char tmp[4096];
		struct pollfd pf = {p->out, POLLIN, 0};
		if (poll(&pf, 1, 20) > 0 && read(p->out, tmp, sizeof tmp) <= 0)
			it_sleep_ms(20); /* EOF: the process is about to exit */
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &st, 0);
	close(p->out);
	return -1;
}

/* Runs parley with args to completion; its output in p->buf. */
static int run(struct proc *p, const struct it_server *s, const char *tok,
	       const char *const *args)
{
	proc_start(p, s, tok, args);
	close(p->in);
	p->in = -1;
	for (;;) {
		struct pollfd pf = {p->out, POLLIN, 0};
		if (poll(&pf, 1, 30000) <= 0)
			break;
		ssize_t r = read(p->out, p->buf + p->n, sizeof p->buf - 1 - p->n);
		if (r <= 0)
			break;
		p->n += (size_t)r;
	}
	p->buf[p->n] = 0;
	int st = 0;
	waitpid(p->pid, &st, 0);
	close(p->out);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static uint32_t unread_of(struct parley_client *c, const char *conv)
{
	const struct parley_conv_list_ok *l;
	IT_OK(parley_client_conv_list(c, 100, &l));
	for (unsigned i = 0; i < l->count; i++)
		if (parley_str_eq(l->entries[i].conv, conv))
			return l->entries[i].unread;
	it_fail(__FILE__, __LINE__, "%s not listed", conv);
}

int main(void)
{
	it_init("cli_receipts");
	snprintf(parley_bin, sizeof parley_bin, "%s/tools/parley",
		 getenv("PARLEY_BIN_DIR"));
	if (access(parley_bin, X_OK) != 0) {
		printf("cli_receipts: %s not built: skipped\n", parley_bin);
		return 77;
	}
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);
	const char *conv = "d:alice:bob";
	char *atok = it_token_for("alice"), *btok = it_token_for("bob");

	struct parley_client *bob = it_client(&srv, "bob", "b1", 0, NULL);
	struct parley_client *alice = it_client(&srv, "alice", "a-phone", 0, NULL);
	IT_OK(parley_client_conv_open(bob, "alice", NULL));
	for (int i = 1; i <= 3; i++)
		IT_OK(parley_client_send(bob, conv, PARLEY_CT_TEXT, "hey", 3, NULL));

	/* 1. list / read / receipts */
	struct proc p;
	IT_CHECK(run(&p, &srv, atok, (const char *[]){"list", NULL}) == 0, "%s", p.buf);
	IT_CHECK(strstr(p.buf, "d:alice:bob\twith bob\tlast #3\t") &&
		 strstr(p.buf, "\t3 unread\tread #0\n"), "list: %s", p.buf);
	IT_CHECK(run(&p, &srv, atok, (const char *[]){"read", "bob", "2", NULL}) == 0,
		 "%s", p.buf);
	IT_CHECK(!strcmp(p.buf, "read d:alice:bob up to #2\n"), "read: %s", p.buf);
	IT_CHECK(run(&p, &srv, atok, (const char *[]){"read", "bob", "1", NULL}) == 0);
	IT_CHECK(!strcmp(p.buf, "read d:alice:bob up to #2\n"), "lower: %s", p.buf);
	IT_CHECK(run(&p, &srv, atok, (const char *[]){"list", NULL}) == 0);
	IT_CHECK(strstr(p.buf, "\t1 unread\tread #2\n"), "list: %s", p.buf);
	IT_CHECK(run(&p, &srv, btok, (const char *[]){"receipts", "alice", "2", NULL}) == 0);
	IT_CHECK(strstr(p.buf, "alice\tdelivered\tread\n"), "receipts: %s", p.buf);
	IT_CHECK(run(&p, &srv, btok, (const char *[]){"receipts", "alice", "3", NULL}) == 0);
	/* no device of alice has received #3 yet (none is subscribed) */
	IT_CHECK(strstr(p.buf, "alice\t-\t-\n"), "receipts 3: %s", p.buf);
	IT_CHECK(run(&p, &srv, atok, (const char *[]){"read", "bob", "0", NULL}) == 2);
	IT_CHECK(run(&p, &srv, atok, (const char *[]){"read", "bob", "x", NULL}) == 2);
	IT_CHECK(run(&p, &srv, atok, (const char *[]){"read", "bob", "99", NULL}) == 1,
		 "%s", p.buf);

	/* 2. the chat reads what it shows */
	struct proc w;
	proc_start(&w, &srv, btok, (const char *[]){"watch", NULL});
	struct proc ch;
	proc_start(&ch, &srv, atok, (const char *[]){"chat", "bob", NULL});
	/* both subscribe live (new devices): bob sends until the chat and
	 * the watch have shown one of his messages */
	int shown = 0;
	for (int k = 1; k <= 20 && !shown; k++) {
		char body[32];
		snprintf(body, sizeof body, "are you there %d", k);
		IT_OK(parley_client_send(bob, conv, PARLEY_CT_TEXT, body,
					 strlen(body), NULL));
		for (int ms = 0; ms < 1000 && !shown; ms += 50) {
			for (struct proc *q = &ch; q; q = q == &ch ? &w : NULL) {
				struct pollfd pf = {q->out, POLLIN, 0};
				if (poll(&pf, 1, 25) > 0) {
					ssize_t r = read(q->out, q->buf + q->n,
							 sizeof q->buf - 1 - q->n);
					if (r > 0)
						q->n += (size_t)r;
				}
				q->buf[q->n] = 0;
			}
			shown = strstr(ch.buf, "are you there") &&
				strstr(w.buf, "are you there");
		}
	}
	IT_CHECK(shown, "chat: %s\nwatch: %s", ch.buf, w.buf);
	uint32_t u = 99;
	for (int ms = 0; ms < 20000 && u; ms += 50) {
		u = unread_of(alice, conv);
		if (u)
			it_sleep_ms(50);
	}
	IT_CHECK(u == 0, "alice still has %u unread after the chat showed it", u);
	proc_wait(&w, "d:alice:bob receipt alice read up to #", 20000);
	int code = proc_end(&ch);
	IT_CHECK(code == 0, "chat exit %d: %s", code, ch.buf);
	kill(w.pid, SIGTERM);
	proc_end(&w);

	free(atok);
	free(btok);
	parley_client_free(alice);
	parley_client_free(bob);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	it_cleanup();
	return 0;
}
