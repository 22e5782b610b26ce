/*
 * test_bench_profile.c — unit tests for bench/bench_profile.c, the
 * workload profile parser.
 *
 * What must hold: every key is read into its field; comments and blank
 * lines are ignored; distributions are normalised and picked by their
 * cumulative weights; every kind of bad input (unknown key, duplicate,
 * missing '=', empty value, bad number, out of range, bad pair, too many
 * pairs, zero weight, over-long line) is refused with "FILE:LINE:" naming
 * the offending line; the shipped example profiles parse.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../../../bench/bench_profile.h"

Test(bench_profile, reads_every_key)
{
	const char *text =
		"# a comment\n"
		"\n"
		"name = test-prof   # trailing comment\n"
		"users = 1e6\n"
		"devices_per_user = 1.5\n"
		"online_fraction = 0.3\n"
		"conversations_per_user = 12\n"
		"group_share = 0.25\n"
		"group_size = 4:1, 10:3\n"
		"messages_per_user_day = 40\n"
		"peak_factor = 3\n"
		"body_bytes = 20:2 200:2\n"
		"read_receipts_per_message = 1\n"
		"delivery_receipts_per_message = 0.5\n"
		"typing_per_message = 0.25\n"
		"history_reads_per_user_day = 7\n"
		"reconnects_per_device_day = 9\n"
		"replication_factor = 3\n"
		"retention_days = 30\n"
		"target_utilisation = 0.5\n"
		"\ttarget_p99_ms=25\r\n";
	struct bench_profile p;
	char err[256];
	cr_assert_eq(bench_profile_parse(text, "t.profile", &p, err, sizeof err), 0, "%s", err);
	cr_assert_str_eq(p.name, "test-prof");
	cr_assert_eq(p.users, 1e6);
	cr_assert_eq(p.devices_per_user, 1.5);
	cr_assert_eq(p.online_fraction, 0.3);
	cr_assert_eq(p.conversations_per_user, 12);
	cr_assert_eq(p.group_share, 0.25);
	cr_assert_eq(p.group_size.n, 2);
	cr_assert_eq(p.group_size.weight[0], 0.25);
	cr_assert_eq(p.group_size.weight[1], 0.75);
	cr_assert_float_eq(bp_dist_mean(&p.group_size), 4 * 0.25 + 10 * 0.75, 1e-12);
	cr_assert_eq(p.messages_per_user_day, 40);
	cr_assert_eq(p.peak_factor, 3);
	cr_assert_float_eq(bp_dist_mean(&p.body_bytes), 110, 1e-12);
	cr_assert_eq(p.read_receipts_per_message, 1);
	cr_assert_eq(p.delivery_receipts_per_message, 0.5);
	cr_assert_eq(p.typing_per_message, 0.25);
	cr_assert_eq(p.history_reads_per_user_day, 7);
	cr_assert_eq(p.reconnects_per_device_day, 9);
	cr_assert_eq(p.replication_factor, 3);
	cr_assert_eq(p.retention_days, 30);
	cr_assert_eq(p.target_utilisation, 0.5);
	cr_assert_eq(p.target_p99_ms, 25);
	/* picks by cumulative weight */
	cr_assert_eq(bp_dist_pick(&p.group_size, 0.0), 4);
	cr_assert_eq(bp_dist_pick(&p.group_size, 0.2499), 4);
	cr_assert_eq(bp_dist_pick(&p.group_size, 0.25), 10);
	cr_assert_eq(bp_dist_pick(&p.group_size, 0.9999), 10);
}

Test(bench_profile, missing_keys_take_defaults)
{
	struct bench_profile p, d;
	char err[256];
	cr_assert_eq(bench_profile_parse("users = 10\n", "t", &p, err, sizeof err), 0, "%s", err);
	bench_profile_defaults(&d);
	cr_assert_eq(p.users, 10);
	cr_assert_eq(p.peak_factor, d.peak_factor);
	cr_assert_eq(p.replication_factor, d.replication_factor);
	cr_assert_eq(bench_profile_parse("", "t", &p, err, sizeof err), 0);
}

Test(bench_profile, bad_input_names_file_and_line)
{
	static const struct { const char *text, *want; } bad[] = {
		{"users = 10\nfoo = 1\n", "p.profile:2: unknown key \"foo\""},
		{"users = 10\n\nusers = 20\n", "p.profile:3: \"users\" given twice"},
		{"# c\nusers 10\n", "p.profile:2: expected \"key = value\""},
		{"users =\n", "p.profile:1: \"users\" has no value"},
		{"users = ten\n", "p.profile:1: users: \"ten\" is not a number"},
		{"users = 10x\n", "p.profile:1: users: \"10x\" is not a number"},
		{"online_fraction = 1.5\n", "p.profile:1: online_fraction: 1.5 outside"},
		{"peak_factor = 0.5\n", "p.profile:1: peak_factor: 0.5 outside"},
		{"users = nan\n", "p.profile:1: users: \"nan\" is not a number"},
		{"\n\n\nbody_bytes = 20\n", "p.profile:4: body_bytes: \"20\" is not value:weight"},
		{"body_bytes = 20:x\n", "p.profile:1: body_bytes: \"20:x\" is not a number pair"},
		{"body_bytes = 0:1\n", "p.profile:1: body_bytes: value 0 outside"},
		{"group_size = 2:1\n", "p.profile:1: group_size: value 2 outside"},
		{"body_bytes = 20:0\n", "p.profile:1: body_bytes: weight 0 must be > 0"},
		{"body_bytes = ,\n", "p.profile:1: body_bytes: empty distribution"},
		{"body_bytes = 1:1 2:1 3:1 4:1 5:1 6:1 7:1 8:1 9:1 10:1 11:1 12:1 13:1 14:1 15:1 "
		 "16:1 17:1\n", "p.profile:1: body_bytes: more than 16 pairs"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct bench_profile p;
		char err[256];
		cr_assert_lt(bench_profile_parse(bad[i].text, "p.profile", &p, err, sizeof err), 0,
			     "accepted: %s", bad[i].text);
		cr_assert(strstr(err, bad[i].want), "got \"%s\", want \"%s\"", err, bad[i].want);
	}
	char longl[BP_MAX_LINE + 20];
	memset(longl, 'x', sizeof longl - 1);
	longl[sizeof longl - 1] = 0;
	struct bench_profile p;
	char err[256];
	cr_assert_lt(bench_profile_parse(longl, "p.profile", &p, err, sizeof err), 0);
	cr_assert(strstr(err, "p.profile:1: line longer than"), "%s", err);
}

Test(bench_profile, shipped_examples_parse)
{
	const char *src = getenv("PARLEY_SRC_DIR");
	if (!src)
		cr_skip_test("PARLEY_SRC_DIR not set");
	static const char *const names[] = {"whatsapp-like", "slack-like", "smoke"};
	for (size_t i = 0; i < 3; i++) {
		char path[1024], err[256];
		snprintf(path, sizeof path, "%s/bench/profiles/%s.profile", src, names[i]);
		struct bench_profile p;
		cr_assert_eq(bench_profile_load(path, &p, err, sizeof err), 0, "%s", err);
		cr_assert_str_eq(p.name, names[i]);
	}
	char err[256];
	struct bench_profile p;
	cr_assert_lt(bench_profile_load("/nonexistent/x.profile", &p, err, sizeof err), 0);
	cr_assert(strstr(err, "/nonexistent/x.profile: "), "%s", err);
}
