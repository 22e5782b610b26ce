/*
 * test_cli.c — the terminal client's pure parts (tools/cli_core.c,
 * tools/cli_outbox.c): chat-line parsing, the outbox (typed order, ids kept
 * across retries, nothing unsent ever dropped), and error messages that
 * name their cause with the documented exit codes.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static struct cli_cmd parse(const char *text, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s", text);
	struct cli_cmd c;
	cli_parse_line(buf, &c);
	return c;
}

Test(cli_parse, text_and_empty)
{
	char b[256];
	struct cli_cmd c = parse("hello bob\n", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_TEXT);
	cr_assert_eq(c.arg_len, 9);
	cr_assert(!memcmp(c.arg, "hello bob", 9));
	cr_assert_eq(parse("", b, sizeof b).kind, CLI_CMD_EMPTY);
	cr_assert_eq(parse("   \t \r\n", b, sizeof b).kind, CLI_CMD_EMPTY, "blank lines are not sent");
	c = parse("  indented  ", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_TEXT);
	cr_assert_str_eq(c.arg, "  indented", "leading blanks kept, trailing cut");
	c = parse("//not a command", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_TEXT);
	cr_assert_str_eq(c.arg, "/not a command");
}

Test(cli_parse, commands)
{
	char b[256];
	cr_assert_eq(parse("/quit", b, sizeof b).kind, CLI_CMD_QUIT);
	cr_assert_eq(parse("/q", b, sizeof b).kind, CLI_CMD_QUIT);
	cr_assert_eq(parse("/help", b, sizeof b).kind, CLI_CMD_HELP);
	cr_assert_eq(parse("/list", b, sizeof b).kind, CLI_CMD_LIST);
	struct cli_cmd c = parse("/to bob", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_TO);
	cr_assert_str_eq(c.arg, "bob");
	cr_assert_eq(parse("/to", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/to bob carol", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/to a:b", b, sizeof b).kind, CLI_CMD_BAD, "':' is not in user ids");
	c = parse("/frobnicate now", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_UNKNOWN, "an unknown command says so, it is not sent");
	cr_assert_str_eq(c.arg, "/frobnicate");
}

Test(cli_parse, group_commands)
{
	char b[256];
	struct cli_cmd c = parse("/group create Team bob carol", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_GROUP_CREATE);
	cr_assert_str_eq(c.arg, "Team");
	cr_assert_eq(c.nwords, 2);
	cr_assert_str_eq(c.words[0], "bob");
	cr_assert_str_eq(c.words[1], "carol");
	c = parse("/group create Solo", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_GROUP_CREATE, "a group of one");
	cr_assert_eq(c.nwords, 0);
	cr_assert_eq(parse("/group", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/group make Team", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/group create Team bad:id", b, sizeof b).kind, CLI_CMD_BAD);
	c = parse("/add dave eve", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_GROUP_ADD);
	cr_assert_eq(c.nwords, 2);
	cr_assert_eq(parse("/add", b, sizeof b).kind, CLI_CMD_BAD, "/add names someone");
	cr_assert_eq(parse("/remove dave", b, sizeof b).kind, CLI_CMD_GROUP_REMOVE);
	cr_assert_eq(parse("/remove", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/leave", b, sizeof b).kind, CLI_CMD_GROUP_LEAVE);
	cr_assert_eq(parse("/leave now", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/members", b, sizeof b).kind, CLI_CMD_GROUP_MEMBERS);
	c = parse("/to g:0123456789abcdef", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_TO, "a group id");
	cr_assert_str_eq(c.arg, "g:0123456789abcdef");
	cr_assert_eq(parse("/to g:0123456789ABCDEF", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/to g:0123456789abcdef x", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert(cli_is_group_id("g:ffffffffffffffff"));
	cr_assert(!cli_is_group_id("g:fffffffffffffff"));
	cr_assert(!cli_is_group_id("d:alice:bob"));
}

Test(cli_parse, group_set)
{
	char b[512];
	struct cli_cmd c = parse("/group set name  The Club  ", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_GROUP_SET);
	cr_assert_eq(c.gset_fields, PARLEY_GSET_NAME);
	cr_assert_eq(c.arg_len, 8, "the rest of the line, blanks cut: %zu", c.arg_len);
	cr_assert(!memcmp(c.arg, "The Club", 8));
	c = parse("/group set history all", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_GROUP_SET);
	cr_assert_eq(c.gset_fields, PARLEY_GSET_SETTINGS);
	cr_assert_eq(c.gset_settings, PARLEY_GROUPF_HISTORY_ALL);
	c = parse("/group set history join", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_GROUP_SET);
	cr_assert_eq(c.gset_settings, 0);
	cr_assert_eq(parse("/group set", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/group set name", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/group set history", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/group set history some", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/group set history all now", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/group set colour red", b, sizeof b).kind, CLI_CMD_BAD);
	char line[300] = "/group set name ";
	memset(line + 16, 'n', 256);
	line[16 + 256] = 0;
	c = parse(line, b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_BAD, "a 256-byte name");
	cr_assert(strstr(c.err, "255"));
}

Test(cli_parse, history_paging)
{
	char b[256];
	struct cli_cmd c = parse("/history", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_HISTORY);
	cr_assert_eq(c.limit, CLI_HISTORY_DEFAULT);
	cr_assert_eq(c.before, 0);
	c = parse("/history 5", b, sizeof b);
	cr_assert_eq(c.limit, 5);
	c = parse("/history 5 --before 42", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_HISTORY);
	cr_assert_eq(c.limit, 5);
	cr_assert_eq(c.before, 42, "--before is honoured");
	c = parse("/history --before 7 3", b, sizeof b);
	cr_assert_eq(c.limit, 3);
	cr_assert_eq(c.before, 7);
	cr_assert_eq(parse("/history 0", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/history 101", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/history --before", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/history --before -1", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/history 5 6", b, sizeof b).kind, CLI_CMD_BAD);
}

static void id_of(uint8_t id[16], int n)
{
	memset(id, 0, 16);
	id[0] = (uint8_t)n;
	id[1] = (uint8_t)(n >> 8);
}

Test(cli_parse, edit_and_delete)
{
	char b[4096];
	struct cli_cmd c = parse("/edit 12   fixed  typo \n", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_EDIT);
	cr_assert_eq(c.before, 12);
	cr_assert_eq(c.arg_len, strlen("fixed  typo"));
	cr_assert(!memcmp(c.arg, "fixed  typo", c.arg_len));
	cr_assert_eq(parse("/edit 12", b, sizeof b).kind, CLI_CMD_BAD, "no text");
	cr_assert_eq(parse("/edit x hi", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/edit 0 hi", b, sizeof b).kind, CLI_CMD_BAD);
	char big[CLI_EDIT_MAX + 16] = "/edit 3 ";
	memset(big + 8, 'a', CLI_EDIT_MAX + 1);
	big[8 + CLI_EDIT_MAX + 1] = 0;
	cr_assert_eq(parse(big, b, sizeof b).kind, CLI_CMD_BAD, "over CLI_EDIT_MAX");
	c = parse("/delete 7", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_DELETE);
	cr_assert_eq(c.before, 7);
	cr_assert_eq(parse("/del 7", b, sizeof b).kind, CLI_CMD_DELETE);
	cr_assert_eq(parse("/delete", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/delete 7 8", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/delete -1", b, sizeof b).kind, CLI_CMD_BAD);
}

Test(cli_parse, retention)
{
	char b[256];
	struct cli_cmd c = parse("/retention", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_RETENTION);
	cr_assert_eq(c.ret_set, 0, "no argument: show");
	c = parse("/retention count 500 age 30d", b, sizeof b);
	cr_assert_eq(c.kind, CLI_CMD_RETENTION);
	cr_assert(c.ret_set);
	cr_assert_eq(c.ret_count, 500);
	cr_assert_eq(c.ret_age_ms, 30ull * 86400000);
	c = parse("/retention age 90", b, sizeof b);
	cr_assert_eq(c.ret_age_ms, 90000, "plain number: seconds");
	c = parse("/retention off", b, sizeof b);
	cr_assert(c.ret_set && !c.ret_age_ms && !c.ret_count);
	cr_assert_eq(parse("/retention count", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/retention age 3w", b, sizeof b).kind, CLI_CMD_BAD);
	cr_assert_eq(parse("/retention forever", b, sizeof b).kind, CLI_CMD_BAD);
}

Test(cli_outbox, typed_order_one_at_a_time_same_id_on_retry)
{
	struct cli_outbox ob;
	cli_outbox_init(&ob);
	uint8_t id[16];
	id_of(id, 1);
	int a = cli_outbox_add(&ob, "bob", "one", 3, id);
	id_of(id, 2);
	int b = cli_outbox_add(&ob, "bob", "two", 3, id);
	cr_assert(a > 0 && b > a);
	cr_assert_eq(cli_outbox_unsent(&ob), 2);
	struct cli_ob_entry *e = cli_outbox_next(&ob);
	cr_assert_not_null(e);
	cr_assert_eq(e->no, (uint32_t)a, "oldest first");
	cr_assert_null(cli_outbox_next(&ob), "one in flight at a time");
	/* connection lost: fate unknown, back to pending with the same id */
	cli_outbox_retry(&ob, (uint32_t)a);
	e = cli_outbox_next(&ob);
	cr_assert_eq(e->no, (uint32_t)a);
	uint8_t want[16];
	id_of(want, 1);
	cr_assert(!memcmp(e->id, want, 16), "the retry carries the same client_msg_id");
	cli_outbox_sent(&ob, (uint32_t)a, 7, 1000);
	cr_assert_eq(cli_outbox_unsent(&ob), 1);
	const struct cli_ob_entry *f = cli_outbox_find_id(&ob, want);
	cr_assert_not_null(f, "sent entries are remembered (own echo is not shown twice)");
	cr_assert_eq(f->seq, 7);
	e = cli_outbox_next(&ob);
	cr_assert_eq(e->no, (uint32_t)b);
	cli_outbox_failed(&ob, (uint32_t)b, -PARLEY_EPERM);
	cr_assert_eq(cli_outbox_unsent(&ob), 0);
	cr_assert_null(cli_outbox_next(&ob));
	cli_outbox_free(&ob);
}

Test(cli_outbox, full_never_drops_unsent_but_recycles_sent)
{
	struct cli_outbox ob;
	cli_outbox_init(&ob);
	uint8_t id[16];
	for (int i = 0; i < CLI_OUTBOX_MAX; i++) {
		id_of(id, i + 1);
		cr_assert_gt(cli_outbox_add(&ob, "bob", "x", 1, id), 0);
	}
	id_of(id, 9999);
	cr_assert_eq(cli_outbox_add(&ob, "bob", "x", 1, id), -PARLEY_EFULL,
		     "a full outbox refuses instead of dropping an unsent line");
	struct cli_ob_entry *e = cli_outbox_next(&ob);
	uint32_t first = e->no;
	cli_outbox_sent(&ob, first, 1, 1);
	int n = cli_outbox_add(&ob, "bob", "y", 1, id);
	cr_assert_gt(n, 0, "the sent entry's slot is reused");
	cr_assert_eq(cli_outbox_unsent(&ob), CLI_OUTBOX_MAX);
	uint8_t old[16];
	id_of(old, 1);
	cr_assert_null(cli_outbox_find_id(&ob, old));
	cli_outbox_free(&ob);
}

static int explain(int err, const struct parley_client_failure *f, char *out)
{
	struct cli_target t = {"localhost", 7412, 1, NULL};
	return cli_explain(err, f, &t, out, 768);
}

Test(cli_explain, each_cause_named_with_its_exit_code)
{
	char m[768];
	struct parley_client_failure f = {0};

	f.kind = PARLEY_FAIL_TLS_VERIFY;
	snprintf(f.text, sizeof f.text, "unable to get local issuer certificate");
	cr_assert_eq(explain(-PARLEY_EAUTH, &f, m), CLI_EXIT_CONN,
		     "an untrusted certificate is not a refused token");
	cr_assert(strstr(m, "not trusted") && strstr(m, "--ca"), "%s", m);
	cr_assert(!strstr(m, "authentication failed"), "%s", m);

	memset(&f, 0, sizeof f);
	f.kind = PARLEY_FAIL_SERVER;
	f.err = -PARLEY_EAUTH;
	snprintf(f.text, sizeof f.text, "bad signature");
	cr_assert_eq(explain(-PARLEY_EAUTH, &f, m), CLI_EXIT_AUTH);
	cr_assert(strstr(m, "refused the token") && strstr(m, "bad signature"), "%s", m);

	memset(&f, 0, sizeof f);
	f.kind = PARLEY_FAIL_CONNECT;
	cr_assert_eq(explain(-ECONNREFUSED, &f, m), CLI_EXIT_CONN);
	cr_assert(strstr(m, "connection refused") && strstr(m, "7412"), "%s", m);

	f.kind = PARLEY_FAIL_PLAIN_GOT_TLS;
	cr_assert_eq(explain(-PARLEY_EPROTO, &f, m), CLI_EXIT_CONN);
	cr_assert(strstr(m, "--tls"), "%s", m);

	f.kind = PARLEY_FAIL_TLS;
	snprintf(f.text, sizeof f.text, "wrong version number");
	cr_assert_eq(explain(-PARLEY_EPROTO, &f, m), CLI_EXIT_CONN);
	cr_assert(strstr(m, "TLS handshake") && strstr(m, "wrong version number"), "%s", m);

	memset(&f, 0, sizeof f);
	f.kind = PARLEY_FAIL_GOAWAY;
	f.goaway_reason = PARLEY_GOAWAY_AUTH_EXPIRED;
	snprintf(f.text, sizeof f.text, "token expired");
	cr_assert_eq(explain(-PARLEY_EAUTH, &f, m), CLI_EXIT_AUTH);
	cr_assert(strstr(m, "expired"), "%s", m);
	cr_assert(!strstr(m, "draining"), "%s", m);

	/* every GOAWAY reason has its own words */
	const char *seen[8] = {0};
	for (unsigned r = 1; r <= 5; r++) {
		seen[r] = cli_goaway_text(r);
		for (unsigned q = 1; q < r; q++)
			cr_assert_str_neq(seen[q], seen[r]);
	}

	cr_assert_eq(explain(-PARLEY_EPERM, NULL, m), CLI_EXIT_REFUSED);
	cr_assert_eq(explain(-PARLEY_ENOTFOUND, NULL, m), CLI_EXIT_REFUSED);
	cr_assert_eq(explain(-PARLEY_ETIMEDOUT, NULL, m), CLI_EXIT_CONN);
	cr_assert_eq(cli_exit_code(-PARLEY_EAUTH, NULL), CLI_EXIT_AUTH);
}
