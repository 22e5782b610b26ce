/*
 * test_group_set.c — GROUP_SET and a removed member's conversation list
 * against a real parleyd (issue 13, Groups; docs/PROTOCOL.md "Groups").
 *
 *   1. GROUP_SET rules and bad input: a non-member, a plain member
 *      renaming, an admin changing the history setting (PERM); an unknown
 *      group, a 1:1 id (NOTFOUND); a 256-byte or empty name, an unknown
 *      setting (INVAL); an admin renames, the owner changes the setting; a
 *      request that changes nothing is done (DUPLICATE) without a new
 *      event. The change is a MEMBERSHIP event: members' devices receive
 *      it live (described as a rename), HISTORY shows it, GROUP_INFO and
 *      CONV_LIST's title show the new name.
 *   2. history visibility: a member who joined later reads from the join
 *      while the setting is "from join", everything once the owner sets
 *      "all", and from the join again when it is set back; a founding
 *      member always reads everything; the late joiner's unread count
 *      follows (what they may not read is never unread).
 *   3. a removed member's CONV_LIST: the group stays, flagged LEFT, frozen
 *      at the REMOVE event (last_seq, title of that time, members after
 *      it, unread counted up to it only) while the group goes on; a member
 *      who left likewise; re-added, the entry is a member's again.
 *   4. after SIGTERM and after kill -9: name, setting, what a late joiner
 *      reads and the removed member's list are the same.
 *   5. the terminal client: /group set name ..., /group set history all,
 *      a plain member's refused /group set, /list marking a left group;
 *   6. retention removing the group's history past a member's departure:
 *      their list still answers (LEFT at the same seq, nothing unread).
 * Counts and contents are asserted, never times.
 */
#include "itest.h"
#include "igroup.h"

static struct it_server srv;
static char gid[32];

static struct parley_client *cl(const char *user)
{
	char dev[32];
	snprintf(dev, sizeof dev, "%s-phone", user);
	return it_client(&srv, user, dev, 0, NULL);
}

/* MEMBERSHIP events of a device, described in words. */
struct memb_log {
	unsigned n;
	uint64_t seq[64];
	char text[64][300];
};

static void on_memb(void *user, const struct parley_event *ev)
{
	struct memb_log *l = user;
	if (ev->kind != PARLEY_EV_MEMBERSHIP || l->n == 64)
		return;
	l->seq[l->n] = ev->conv_seq;
	if (parley_membership_describe(ev->body.p, ev->body.len, l->text[l->n],
				       sizeof l->text[l->n]) < 0)
		snprintf(l->text[l->n], sizeof l->text[l->n], "(undescribed)");
	l->n++;
}

static const struct parley_conv_entry *list_find(struct parley_client *c,
						 const char *conv)
{
	const struct parley_conv_list_ok *lo;
	IT_OK(parley_client_conv_list(c, 100, &lo));
	for (unsigned i = 0; i < lo->count; i++)
		if (parley_str_eq(lo->entries[i].conv, conv))
			return &lo->entries[i];
	return NULL;
}

/* The same, waiting for an added member's entry: the ADD's fan-out
 * writes it after GROUP_ADD_OK (the event reaches the member after it). */
static const struct parley_conv_entry *list_wait(struct parley_client *c,
						 const char *conv)
{
	for (int i = 0; i < 400; i++) {
		const struct parley_conv_entry *e = list_find(c, conv);
		if (e)
			return e;
		it_sleep_ms(25);
	}
	it_fail(__FILE__, __LINE__, "%s never entered the list", conv);
	return NULL;
}

/* HISTORY of c in gid from the newest: count, oldest seq, END. */
static void hist(struct parley_client *c, unsigned *count, uint64_t *oldest)
{
	const struct parley_history_page *pg;
	IT_OK(parley_client_history(c, gid, 0, 100, &pg));
	IT_CHECK(pg->flags & PARLEY_HISTF_END, "one page holds it all");
	*count = pg->count;
	*oldest = pg->count ? pg->msgs[pg->count - 1].seq : 0;
}

static uint64_t join_seq;   /* erin's ADD */
static uint64_t removed_at; /* carol's REMOVE */
static uint64_t left_at;    /* frank's LEAVE */

/* ---- 1: rules and bad input ------------------------------------------------------- */

static void test_rules(void)
{
	struct memb_log clog = {0};
	struct parley_client_opts o = {.on_event = on_memb, .user = &clog};
	struct parley_client *alice = cl("alice"), *bob = cl("bob"),
			     *dave = cl("dave");
	struct parley_client *carol = it_client_cb(&srv, "carol", "carol-phone", &o);
	IT_OK(parley_client_subscribe(carol, 1, NULL));
	const struct parley_group_ok *ok;
	IT_OK(parley_client_group_create(alice, "Club", 0,
					 (const char *[]){"bob", "carol", "frank"},
					 3, &ok));
	snprintf(gid, sizeof gid, "%.*s", (int)ok->conv.len, ok->conv.p);
	IT_OK(parley_client_group_role(alice, gid, (const char *[]){"bob"}, 1,
				       PARLEY_ROLE_ADMIN, NULL));

	/* who may */
	IT_CHECK(parley_client_group_set(dave, gid, PARLEY_GSET_NAME, "Mine", 0,
					 NULL) == -PARLEY_EPERM, "a non-member");
	IT_CHECK(parley_client_group_set(carol, gid, PARLEY_GSET_NAME, "Mine", 0,
					 NULL) == -PARLEY_EPERM, "a plain member renaming");
	IT_CHECK(parley_client_group_set(bob, gid, PARLEY_GSET_SETTINGS, NULL,
					 PARLEY_GROUPF_HISTORY_ALL, NULL) ==
		 -PARLEY_EPERM, "an admin changing the history setting");
	/* unknown groups */
	IT_CHECK(parley_client_group_set(alice, "g:0000000000000000",
					 PARLEY_GSET_NAME, "x", 0, NULL) ==
		 -PARLEY_ENOTFOUND);
	IT_CHECK(parley_client_group_set(alice, "d:alice:bob", PARLEY_GSET_NAME,
					 "x", 0, NULL) == -PARLEY_ENOTFOUND);
	/* bad values: the server says which rule */
	char longname[257];
	memset(longname, 'n', 256);
	longname[256] = 0;
	IT_CHECK(parley_client_group_set(alice, gid, PARLEY_GSET_NAME, longname, 0,
					 NULL) == -PARLEY_EINVAL, "a 256-byte name");
	IT_CHECK(strstr(parley_client_failure(alice)->text, "1-255"), "why: %s",
		 parley_client_failure(alice)->text);
	IT_CHECK(parley_client_group_set(alice, gid, PARLEY_GSET_NAME, "", 0,
					 NULL) == -PARLEY_EINVAL, "an empty name");
	IT_CHECK(parley_client_group_set(alice, gid, PARLEY_GSET_SETTINGS, NULL,
					 0x02, NULL) == -PARLEY_EINVAL, "an unknown setting");
	IT_CHECK(parley_client_group_set(alice, gid, 0x04, NULL, 0, NULL) ==
		 -PARLEY_EINVAL, "an unknown field (refused by libparley)");

	/* an admin renames; the owner opens the history */
	IT_OK(parley_client_group_set(bob, gid, PARLEY_GSET_NAME, "Club ünï 2", 0,
				      &ok));
	uint64_t ren = ok->seq;
	IT_CHECK(!(ok->flags & PARLEY_GROUPF_DUPLICATE));
	IT_OK(parley_client_group_set(alice, gid, PARLEY_GSET_SETTINGS, NULL,
				      PARLEY_GROUPF_HISTORY_ALL, &ok));
	uint64_t hs = ok->seq;
	IT_CHECK(hs == ren + 1, "seq %" PRIu64 " after %" PRIu64, hs, ren);
	/* nothing to change: done, nothing stored */
	IT_OK(parley_client_group_set(alice, gid, PARLEY_GSET_NAME | PARLEY_GSET_SETTINGS,
				      "Club ünï 2", PARLEY_GROUPF_HISTORY_ALL, &ok));
	IT_CHECK((ok->flags & PARLEY_GROUPF_DUPLICATE) && ok->seq == hs,
		 "a no-op: flags %u seq %" PRIu64, ok->flags, ok->seq);

	const struct parley_group_info_ok *gi;
	IT_OK(parley_client_group_info(carol, gid, 0, 10, &gi));
	IT_CHECK(parley_str_eq(gi->name, "Club ünï 2"));
	IT_CHECK(gi->settings == PARLEY_GROUPF_HISTORY_ALL && gi->as_of_seq == hs,
		 "settings %u as_of %" PRIu64, gi->settings, gi->as_of_seq);
	const struct parley_conv_entry *e = list_wait(carol, gid);
	IT_CHECK(e && parley_str_eq(e->title, "Club ünï 2") && !e->flags,
		 "carol's list title");

	/* carol's device learnt both live, described */
	for (int i = 0; i < 200 && clog.n < 4; i++)
		parley_client_poll(carol, 50);
	IT_CHECK(clog.n == 4, "membership events: %u", clog.n);
	IT_CHECK(clog.seq[2] == ren && !strcmp(clog.text[2],
					       "renamed the group to \"Club ünï 2\""),
		 "event: %s", clog.text[2]);
	IT_CHECK(clog.seq[3] == hs && strstr(clog.text[3], "whole history"),
		 "event: %s", clog.text[3]);
	/* HISTORY shows them as MEMBERSHIP records */
	const struct parley_history_page *pg;
	IT_OK(parley_client_history(carol, gid, 0, 10, &pg));
	IT_CHECK(pg->count == 4 && pg->msgs[0].seq == hs &&
		 pg->msgs[0].kind == PARLEY_EV_MEMBERSHIP &&
		 parley_str_eq(pg->msgs[1].sender, "bob"), "history");

	parley_client_free(alice);
	parley_client_free(bob);
	parley_client_free(carol);
	parley_client_free(dave);
	printf("rules: ok (%s)\n", gid);
}

/* ---- 2: history visibility ------------------------------------------------------------ */

static void check_visibility(int all)
{
	struct parley_client *erin = cl("erin"), *bob = cl("bob");
	unsigned n;
	uint64_t oldest;
	hist(erin, &n, &oldest);
	if (all)
		IT_CHECK(oldest == 1, "erin reads everything: oldest %" PRIu64, oldest);
	else
		IT_CHECK(oldest == join_seq, "erin reads from her join %" PRIu64
			 ": oldest %" PRIu64, join_seq, oldest);
	hist(bob, &n, &oldest);
	IT_CHECK(oldest == 1, "a founding member reads everything");
	parley_client_free(erin);
	parley_client_free(bob);
}

static void test_visibility(void)
{
	struct parley_client *alice = cl("alice");
	const struct parley_group_ok *ok;
	/* back to "from join" (the default) before erin joins */
	IT_OK(parley_client_group_set(alice, gid, PARLEY_GSET_SETTINGS, NULL, 0, NULL));
	IT_OK(parley_client_send(alice, gid, 1, "before erin", 11, NULL));
	IT_OK(parley_client_group_add(alice, gid, (const char *[]){"erin"}, 1, 0, &ok));
	join_seq = ok->seq;
	/* erin's unread count follows what she may read: not "before erin"
	 * while the history is "from join", it once the history is open */
	struct parley_client *erin = cl("erin");
	const struct parley_conv_entry *e;
	check_visibility(0);
	e = list_wait(erin, gid);
	IT_CHECK(e->unread == 0, "from join: unread %u", e->unread);
	IT_OK(parley_client_group_set(alice, gid, PARLEY_GSET_SETTINGS, NULL,
				      PARLEY_GROUPF_HISTORY_ALL, NULL));
	check_visibility(1);
	e = list_find(erin, gid);
	IT_CHECK(e && e->unread == 1, "all: unread %u", e ? e->unread : 99);
	IT_OK(parley_client_group_set(alice, gid, PARLEY_GSET_SETTINGS, NULL, 0, NULL));
	check_visibility(0);
	e = list_find(erin, gid);
	IT_CHECK(e && e->unread == 0, "from join again: unread %u", e ? e->unread : 99);
	parley_client_free(erin);
	parley_client_free(alice);
	printf("visibility: ok (erin joined at %" PRIu64 ")\n", join_seq);
}

/* ---- 3: a removed member's conversation list ------------------------------------------- */

static void check_left_lists(void)
{
	struct parley_client *carol = cl("carol"), *frank = cl("frank"),
			     *bob = cl("bob");
	const struct parley_conv_entry *e = list_find(carol, gid);
	IT_CHECK(e, "a removed member keeps the group in the list");
	IT_CHECK(e->flags & PARLEY_CONVF_LEFT, "flagged LEFT");
	IT_CHECK(e->last_seq == removed_at, "frozen at the removal %" PRIu64
		 ": last_seq %" PRIu64, removed_at, e->last_seq);
	IT_CHECK(parley_str_eq(e->title, "Club 3"), "the name at the removal: %.*s",
		 (int)e->title.len, e->title.p);
	/* alice, bob, erin, frank after carol's removal */
	IT_CHECK(e->member_count == 4, "members after it: %u", e->member_count);
	/* two messages from alice before the removal, none counted after */
	IT_CHECK(e->unread == 2, "unread %u", e->unread);
	IT_CHECK(e->last_sender.len == 0, "the last entry is the removal");

	e = list_find(frank, gid);
	IT_CHECK(e && (e->flags & PARLEY_CONVF_LEFT) && e->last_seq == left_at,
		 "a member who left");
	IT_CHECK(parley_str_eq(e->title, "Club 4"), "%.*s", (int)e->title.len,
		 e->title.p);
	IT_CHECK(e->member_count == 3, "members after frank left: %u",
		 e->member_count);

	e = list_find(bob, gid);
	IT_CHECK(e && !(e->flags & PARLEY_CONVF_LEFT) &&
		 parley_str_eq(e->title, "Club 4") && e->member_count == 3 &&
		 e->last_seq > left_at, "a member's entry goes on");
	parley_client_free(carol);
	parley_client_free(frank);
	parley_client_free(bob);
}

static void test_left_list(void)
{
	struct parley_client *alice = cl("alice"), *frank = cl("frank");
	const struct parley_group_ok *ok;
	IT_OK(parley_client_group_set(alice, gid, PARLEY_GSET_NAME, "Club 3", 0, NULL));
	/* carol reads everything so far, then two new messages, then out */
	const struct parley_history_page *pg;
	struct parley_client *carol = cl("carol");
	IT_OK(parley_client_history(carol, gid, 0, 1, &pg));
	IT_OK(parley_client_read_marker(carol, gid, pg->msgs[0].seq, NULL));
	IT_OK(parley_client_send(alice, gid, 1, "one", 3, NULL));
	IT_OK(parley_client_send(alice, gid, 1, "two", 3, NULL));
	IT_OK(parley_client_group_remove(alice, gid, (const char *[]){"carol"}, 1, &ok));
	removed_at = ok->seq;
	/* the group goes on: rename, messages, frank leaves, more messages */
	IT_OK(parley_client_group_set(alice, gid, PARLEY_GSET_NAME, "Club 4", 0, NULL));
	for (int i = 0; i < 3; i++)
		IT_OK(parley_client_send(alice, gid, 1, "after", 5, NULL));
	IT_OK(parley_client_group_leave(frank, gid, &ok));
	left_at = ok->seq;
	IT_OK(parley_client_send(alice, gid, 1, "later", 5, NULL));
	check_left_lists();
	parley_client_free(carol);
	parley_client_free(alice);
	parley_client_free(frank);
	printf("left list: ok (removed at %" PRIu64 ", left at %" PRIu64 ")\n",
	       removed_at, left_at);
}

/* Re-added, carol's entry is a member's again (run last: it changes 3;
 * the group is "The Club" since 5). */
static void test_readd(void)
{
	struct parley_client *alice = cl("alice"), *carol = cl("carol");
	/* removed, carol may still mark what she received (her LEFT entry's
	 * unread count goes to 0 on every device), nothing after */
	IT_CHECK(parley_client_read_marker(carol, gid, removed_at + 1, NULL) ==
		 -PARLEY_EPERM, "a mark past the removal");
	IT_OK(parley_client_read_marker(carol, gid, removed_at, NULL));
	const struct parley_conv_entry *l = list_find(carol, gid);
	IT_CHECK(l && (l->flags & PARLEY_CONVF_LEFT) && l->unread == 0 &&
		 l->read_seq == removed_at, "carol's LEFT entry after her mark: "
		 "unread %u", l ? l->unread : 99);
	IT_OK(parley_client_group_add(alice, gid, (const char *[]){"carol"}, 1, 0, NULL));
	IT_OK(parley_client_send(alice, gid, 1, "welcome back", 12, NULL));
	const struct parley_conv_entry *e = list_find(carol, gid);
	IT_CHECK(e && !(e->flags & PARLEY_CONVF_LEFT) &&
		 parley_str_eq(e->title, "The Club") &&
		 parley_str_eq(e->last_sender, "alice") && e->last_seq > left_at,
		 "re-added: a member's entry");
	parley_client_free(alice);
	parley_client_free(carol);
}

/* Retention removes the group's history up to (and past) frank's
 * departure: his list still answers, the entry LEFT at the same seq with
 * nothing to count (run last). */
static void test_left_after_retention(void)
{
	struct parley_client *alice = cl("alice"), *frank = cl("frank");
	IT_OK(parley_client_retention(alice, gid, PARLEY_RETF_SET, 0, 1, NULL));
	IT_OK(parley_client_send(alice, gid, 1, "kept", 4, NULL));
	const struct parley_history_page *pg;
	int trimmed = 0;
	for (int i = 0; i < 400 && !trimmed; i++) {
		IT_OK(parley_client_history(alice, gid, 0, 100, &pg));
		trimmed = pg->count && pg->msgs[pg->count - 1].seq > left_at + 1;
		if (!trimmed)
			it_sleep_ms(25);
	}
	IT_CHECK(trimmed, "retention never trimmed the group (%u records, "
		 "oldest %" PRIu64 ")", pg->count,
		 pg->count ? pg->msgs[pg->count - 1].seq : 0);
	const struct parley_conv_entry *e = list_find(frank, gid);
	IT_CHECK(e && (e->flags & PARLEY_CONVF_LEFT) && e->last_seq == left_at &&
		 e->unread == 0, "frank's entry after retention");
	/* a member who never marked anything: only what is left is unread */
	struct parley_client *erin = cl("erin");
	e = list_find(erin, gid);
	IT_CHECK(e && e->unread <= 2, "erin's unread after retention: %u",
		 e ? e->unread : 999);
	parley_client_free(erin);
	parley_client_free(alice);
	parley_client_free(frank);
	printf("left after retention: ok\n");
}

/* ---- 4: restart ------------------------------------------------------------------------- */

static void start(void)
{
	it_server_start_ready(&srv);
}

static void check_after_restart(void)
{
	struct parley_client *bob = cl("bob");
	const struct parley_group_info_ok *gi;
	IT_OK(parley_client_group_info(bob, gid, 0, 10, &gi));
	IT_CHECK(parley_str_eq(gi->name, "Club 4") && gi->settings == 0,
		 "name %.*s settings %u", (int)gi->name.len, gi->name.p, gi->settings);
	const struct parley_conv_entry *e = list_find(bob, gid);
	IT_CHECK(e && parley_str_eq(e->title, "Club 4"));
	parley_client_free(bob);
	check_visibility(0);
	check_left_lists();
}

/* ---- 5: the terminal client ------------------------------------------------------------- */

/* `parley A1 [A2]` as user with input on stdin; its output (malloc'd).
 * The client must exit 0. */
static char *run_cli(const char *user, const char *input, const char *a1,
		     const char *a2)
{
	int st;
	char *buf = ig_run_cli(&srv, user, input, &st, a1, a2, NULL);
	IT_CHECK(st == 0, "parley %s: %s", a1, buf);
	return buf;
}

static char *run_chat(const char *user, const char *input)
{
	return run_cli(user, input, "chat", NULL);
}

static void test_cli(void)
{
	char in[512];
	snprintf(in, sizeof in,
		 "/to %s\n/group set name The Club\n/group set history all\n"
		 "/members\n/history\n/group set history maybe\n", gid);
	char *o = run_chat("alice", in);
	IT_CHECK(strstr(o, "* /group set: done"), "%s", o);
	IT_CHECK(strstr(o, "* The Club: "), "the new name in /members: %s", o);
	IT_CHECK(strstr(o, "alice: * renamed the group to \"The Club\""), "%s", o);
	IT_CHECK(strstr(o, "alice: * changed the group's history: new members see "
			   "the whole history"), "%s", o);
	IT_CHECK(strstr(o, "usage: /group set name NEW NAME"), "%s", o);
	free(o);
	snprintf(in, sizeof in, "/to %s\n/group set name Mine\n/list\n", gid);
	o = run_chat("erin", in);
	IT_CHECK(strstr(o, "* /group set:") && strstr(o, "rename"),
		 "a plain member is refused, saying why: %s", o);
	IT_CHECK(strstr(o, "[group] The Club ("), "%s", o);
	free(o);
	/* a script whose last line is /list leaves once it is shown */
	o = run_chat("frank", "/list\n");
	IT_CHECK(strstr(o, "[group] Club 4 (3 members, you left)"), "%s", o);
	free(o);
	o = run_cli("frank", "", "list", NULL);
	IT_CHECK(strstr(o, "group Club 4 (3 members, you left)"), "%s", o);
	free(o);
	printf("cli: ok\n");
}

int main(void)
{
	it_init("group_set");
	it_server_init(&srv, "group_set");
	start();
	test_rules();
	test_visibility();
	test_left_list();
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	start();
	check_after_restart();
	it_server_kill(&srv);
	start();
	check_after_restart();
	test_cli();
	test_readd();
	test_left_after_retention();
	it_cleanup();
	printf("test_group_set: ok\n");
	return 0;
}
