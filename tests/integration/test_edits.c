/*
 * test_edits.c — EDIT and DELETE-for-everyone through a real parleyd.
 *
 * Checks:
 *   - EDIT / DELETE are acknowledged with their own conversation seq and
 *     the message's ref_seq; a retry with the same client_msg_id is a
 *     DUPLICATE with the original seq (also a DELETE retried after the
 *     message is deleted);
 *   - refusals: someone else's message -> PERM (edit and delete), unknown
 *     seq -> NOTFOUND, an EDIT entry as ref_seq -> INVAL, a deleted
 *     message -> DELETED (edit and second delete), a non-member -> PERM,
 *     past edit_window_ms -> EXPIRED (while delete_window_ms 0 = no limit
 *     still lets the DELETE through);
 *   - the same current state everywhere: live devices of both users get
 *     EVENTs EDIT / DELETE (ref_seq, body, flags) in conversation order; a
 *     device that syncs afterwards gets the same events, except that the
 *     deleted messages come without their bodies (flag DELETED); HISTORY
 *     shows each message once with its latest body and EDITED, or an empty
 *     body and DELETED, never the EDIT / DELETE entries themselves, and
 *     paging by seq (limit 2, where whole pages are edit entries) yields
 *     every message exactly once and ends with END.
 */
#include "itest.h"

#define CONV "d:alice:bob"
#define EDIT_WINDOW_MS 3000

struct ev {
	uint64_t inbox_seq, conv_seq, ref_seq;
	uint16_t kind;
	uint32_t flags;
	char sender[32];
	char body[64];
};
struct evs {
	uint32_t n;
	struct ev v[64];
};

static void on_ev(void *user, const struct parley_event *e)
{
	struct evs *x = user;
	if (x->n == 64)
		return;
	struct ev *v = &x->v[x->n++];
	memset(v, 0, sizeof *v);
	v->inbox_seq = e->inbox_seq;
	v->conv_seq = e->conv_seq;
	v->ref_seq = e->ref_seq;
	v->kind = e->kind;
	v->flags = e->flags;
	snprintf(v->sender, sizeof v->sender, "%.*s", (int)e->sender.len, e->sender.p);
	snprintf(v->body, sizeof v->body, "%.*s", (int)e->body.len,
		 (const char *)e->body.p);
}

static struct parley_client *client(const struct it_server *s, const char *user,
				    const char *dev, struct evs *ev)
{
	struct parley_client_opts cb = {.on_event = ev ? on_ev : NULL, .user = ev};
	return it_client_cb(s, user, dev, &cb);
}

static void wait_evs(struct parley_client *c, struct evs *e, uint32_t want)
{
	for (int ms = 0; ms < 20000 && e->n < want; ms += 50)
		parley_client_poll(c, 50);
	IT_CHECK(e->n >= want, "got %u events, want %u", e->n, want);
}

/* What every device must see, in this order. */
static const struct {
	uint64_t conv_seq, ref_seq;
	uint16_t kind;
	const char *sender, *body;
} WANT[] = {
	{1, 0, PARLEY_EV_MESSAGE, "alice", "first"},
	{2, 0, PARLEY_EV_MESSAGE, "alice", "second"},
	{3, 0, PARLEY_EV_MESSAGE, "alice", "third"},
	{4, 0, PARLEY_EV_MESSAGE, "bob", "from bob"},
	{5, 1, PARLEY_EV_EDIT, "alice", "first, edited"},
	{6, 1, PARLEY_EV_EDIT, "alice", "first, v3"},
	{7, 2, PARLEY_EV_DELETE, "alice", ""},
	{8, 3, PARLEY_EV_DELETE, "alice", ""},
};
#define NWANT (sizeof WANT / sizeof *WANT)

/* synced: the device subscribed after the DELETEs, so the deleted
 * messages (2 and 3) come without their bodies, flagged DELETED. */
static void check_evs(const struct evs *e, const char *who, bool synced)
{
	IT_CHECK(e->n == NWANT, "%s: %u events, want %zu", who, e->n, NWANT);
	for (uint32_t i = 0; i < NWANT; i++) {
		const struct ev *v = &e->v[i];
		bool gone = synced && WANT[i].kind == PARLEY_EV_MESSAGE &&
			    (WANT[i].conv_seq == 2 || WANT[i].conv_seq == 3);
		/* increasing (RECEIPT events, which go to on_receipt, sit
		 * between them) */
		IT_CHECK(i == 0 || v->inbox_seq > e->v[i - 1].inbox_seq,
			 "%s: inbox order", who);
		IT_CHECK(v->conv_seq == WANT[i].conv_seq && v->kind == WANT[i].kind &&
				 v->ref_seq == WANT[i].ref_seq &&
				 !strcmp(v->sender, WANT[i].sender) &&
				 !strcmp(v->body, gone ? "" : WANT[i].body),
			 "%s: event %u is conv_seq %" PRIu64 " kind %u ref %" PRIu64
			 " sender %s body '%s'", who, i, v->conv_seq, v->kind,
			 v->ref_seq, v->sender, v->body);
		uint32_t fl = WANT[i].kind == PARLEY_EV_EDIT	  ? PARLEY_MSGF_EDITED
			      : WANT[i].kind == PARLEY_EV_DELETE ? PARLEY_MSGF_DELETED
			      : gone				 ? PARLEY_MSGF_DELETED
								 : 0;
		IT_CHECK(v->flags == fl, "%s: event %u flags %u", who, i, v->flags);
	}
}

/* The current state HISTORY must show (newest first). */
static void check_history(struct parley_client *c, uint16_t limit)
{
	static const struct {
		uint64_t seq;
		const char *body;
		uint32_t flags;
	} H[] = {{4, "from bob", 0},
		 {3, "", PARLEY_MSGF_DELETED},
		 {2, "", PARLEY_MSGF_DELETED},
		 {1, "first, v3", PARLEY_MSGF_EDITED}};
	uint64_t before = 0;
	unsigned got = 0;
	for (int pages = 0;; pages++) {
		IT_CHECK(pages < 20, "paging does not end");
		const struct parley_history_page *p;
		IT_OK(parley_client_history(c, CONV, before, limit, &p));
		for (unsigned i = 0; i < p->count; i++) {
			const struct parley_hist_msg *h = &p->msgs[i];
			IT_CHECK(got < 4, "more than 4 records (limit %u)", limit);
			IT_CHECK(h->seq == H[got].seq && h->flags == H[got].flags &&
					 h->body.len == strlen(H[got].body) &&
					 !memcmp(h->body.p, H[got].body, h->body.len) &&
					 (h->kind == PARLEY_EV_MESSAGE),
				 "limit %u: record seq %" PRIu64 " flags %u body "
				 "'%.*s' kind %u (want seq %" PRIu64 ")", limit,
				 h->seq, h->flags, (int)h->body.len,
				 (const char *)h->body.p, h->kind, H[got].seq);
			got++;
		}
		if (p->flags & PARLEY_HISTF_END)
			break;
		IT_CHECK(p->next_before_seq > 0 && (before == 0 || p->next_before_seq < before),
			 "next_before_seq %" PRIu64 " after %" PRIu64,
			 p->next_before_seq, before);
		before = p->next_before_seq;
	}
	IT_CHECK(got == 4, "limit %u: %u records, want 4", limit, got);
}

/* The data directory's files (the WAL's excepted: see below) and every
 * history segment's entries, dumped: does `needle` appear anywhere? */
static int grep_files(const char *dir, const char *needle)
{
	char cmd[1024];
	/* the WAL keeps the bytes it logged until its segment file is
	 * recycled and overwritten (docs/SERVER.md, "Edits and deletes") */
	snprintf(cmd, sizeof cmd, "grep -rlaF --exclude-dir=wal -e '%s' '%s' >/dev/null",
		 needle, dir);
	return system(cmd) == 0;
}

static int grep_segments(const char *dir, const char *needle)
{
	char cmd[2048];
	snprintf(cmd, sizeof cmd,
		 "b='%s/tools/parleyctl'; \"$b\" inspect --data '%s' --segments | "
		 "sed -n 's/.*partition=\\([0-9]*\\) .* id=\\([0-9]*\\) .*/\\1:\\2/p' | "
		 "while read s; do \"$b\" inspect --data '%s' --dump-segment $s "
		 "--limit 1000000; done | grep -qaF -e '%s'",
		 getenv("PARLEY_BIN_DIR"), dir, dir, needle);
	return system(cmd) == 0;
}

/* DELETE removes the content from disk at compaction: the message, its
 * edits, their index entries and the inline copies in both inboxes. */
static void deleted_content_leaves_the_disk(void)
{
	struct it_server srv;
	it_server_init(&srv, "scrub");
	srv.extra[0] = "--admin-compact";
	srv.extra[1] = "1";
	it_server_start(&srv);
	struct parley_client *a = client(&srv, "alice", "a1", NULL);
	const struct parley_conv *conv;
	IT_OK(parley_client_conv_open(a, "bob", &conv));
	char gone[64], gone2[64], kept[64];
	snprintf(gone, sizeof gone, "secret-%016" PRIx64 "-a", it_seed);
	snprintf(gone2, sizeof gone2, "secret-%016" PRIx64 "-b", it_seed);
	snprintf(kept, sizeof kept, "kept-%016" PRIx64, it_seed);
	struct parley_send_result r;
	IT_OK(parley_client_send(a, CONV, PARLEY_CT_TEXT, gone, strlen(gone), &r));
	uint64_t del = r.seq;
	IT_OK(parley_client_send(a, CONV, PARLEY_CT_TEXT, kept, strlen(kept), &r));
	IT_OK(parley_client_edit(a, CONV, del, PARLEY_CT_TEXT, gone2, strlen(gone2), NULL));
	/* flushed and compacted before the delete: the bodies are on disk */
	const char req[] = "POST /admin/compact HTTP/1.1\r\nHost: t\r\n\r\n";
	int code;
	free(it_http_raw(srv.admin_port, req, sizeof req - 1, 60000, &code));
	IT_CHECK(code == 200);
	IT_OK(parley_client_delete(a, CONV, del, NULL));
	free(it_http_raw(srv.admin_port, req, sizeof req - 1, 60000, &code));
	IT_CHECK(code == 200);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);
	IT_CHECK(grep_segments(srv.data, kept), "control: the kept message is in a segment");
	IT_CHECK(!grep_segments(srv.data, gone), "the deleted body is still in a segment");
	IT_CHECK(!grep_segments(srv.data, gone2), "the deleted message's edit is still in a segment");
	IT_CHECK(!grep_files(srv.data, gone), "the deleted body is in a file of the data dir");
	IT_CHECK(!grep_files(srv.data, gone2), "its edit is in a file of the data dir");
	/* after a restart the content stays gone and the state is the same */
	it_server_start(&srv);
	a = client(&srv, "alice", "a1", NULL);
	const struct parley_history_page *p;
	IT_OK(parley_client_history(a, CONV, 0, 100, &p));
	IT_CHECK(p->count == 2 && p->msgs[1].seq == del &&
		 (p->msgs[1].flags & PARLEY_MSGF_DELETED) && p->msgs[1].body.len == 0);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);
}

int main(void)
{
	it_init("edits");
	deleted_content_leaves_the_disk();
	struct it_server srv;
	it_server_init(&srv, "s1");
	srv.extra[0] = "--edit-window-ms";
	srv.extra[1] = "3000";
	srv.extra[2] = "--delete-window-ms";
	srv.extra[3] = "0";
	it_server_start(&srv);

	struct evs a_ev = {0}, b_ev = {0}, l_ev = {0};
	struct parley_client *a = client(&srv, "alice", "alice-phone", &a_ev);
	struct parley_client *b = client(&srv, "bob", "bob-phone", &b_ev);
	struct parley_client *carol = client(&srv, "carol", "carol-phone", NULL);
	struct parley_sync_ok ok;
	IT_OK(parley_client_subscribe(a, 0, &ok));
	IT_OK(parley_client_subscribe(b, 0, &ok));
	const struct parley_conv *conv;
	IT_OK(parley_client_conv_open(a, "bob", &conv));

	struct parley_send_result r, r2;
	IT_OK(parley_client_send(a, CONV, PARLEY_CT_TEXT, "first", 5, &r));
	IT_CHECK(r.seq == 1);
	IT_OK(parley_client_send(a, CONV, PARLEY_CT_TEXT, "second", 6, &r));
	IT_OK(parley_client_send(a, CONV, PARLEY_CT_TEXT, "third", 5, &r));
	IT_OK(parley_client_send(b, CONV, PARLEY_CT_TEXT, "from bob", 8, &r));
	IT_CHECK(r.seq == 4);

	/* EDIT, and its retry */
	uint8_t id[16];
	IT_OK(parley_client_random_id(id));
	IT_OK(parley_client_edit_id(a, CONV, id, 1, PARLEY_CT_TEXT, "first, edited",
				    13, &r));
	IT_CHECK(r.seq == 5 && !r.duplicate, "edit seq %" PRIu64, r.seq);
	IT_OK(parley_client_edit_id(a, CONV, id, 1, PARLEY_CT_TEXT, "first, edited",
				    13, &r2));
	IT_CHECK(r2.seq == 5 && r2.duplicate, "edit retry seq %" PRIu64, r2.seq);
	IT_OK(parley_client_edit(a, CONV, 1, PARLEY_CT_TEXT, "first, v3", 9, &r));
	IT_CHECK(r.seq == 6);

	/* refusals */
	IT_CHECK(parley_client_edit(b, CONV, 1, PARLEY_CT_TEXT, "x", 1, NULL) ==
		 -PARLEY_EPERM);
	IT_CHECK(parley_client_delete(b, CONV, 1, NULL) == -PARLEY_EPERM);
	IT_CHECK(parley_client_edit(a, CONV, 4, PARLEY_CT_TEXT, "x", 1, NULL) ==
		 -PARLEY_EPERM); /* bob's message */
	IT_CHECK(parley_client_edit(a, CONV, 99, PARLEY_CT_TEXT, "x", 1, NULL) ==
		 -PARLEY_ENOTFOUND);
	IT_CHECK(parley_client_delete(a, CONV, 99, NULL) == -PARLEY_ENOTFOUND);
	IT_CHECK(parley_client_edit(a, CONV, 5, PARLEY_CT_TEXT, "x", 1, NULL) ==
		 -PARLEY_EINVAL); /* an EDIT entry is not a message */
	IT_CHECK(parley_client_edit(carol, CONV, 1, PARLEY_CT_TEXT, "x", 1, NULL) ==
		 -PARLEY_EPERM);
	IT_CHECK(parley_client_edit(a, "d:alice:nobody-else", 1, PARLEY_CT_TEXT,
				    "x", 1, NULL) == -PARLEY_EPERM ||
		 parley_client_edit(a, "d:alice:nobody-else", 1, PARLEY_CT_TEXT,
				    "x", 1, NULL) == -PARLEY_ENOTFOUND);
	IT_CHECK(parley_client_edit(a, "g:nope", 1, PARLEY_CT_TEXT, "x", 1, NULL) ==
		 -PARLEY_ENOTFOUND);

	/* DELETE, its retry after the fact, then edit / delete again */
	IT_OK(parley_client_random_id(id));
	IT_OK(parley_client_delete_id(a, CONV, id, 2, &r));
	IT_CHECK(r.seq == 7 && !r.duplicate);
	IT_OK(parley_client_delete_id(a, CONV, id, 2, &r2));
	IT_CHECK(r2.seq == 7 && r2.duplicate);
	IT_CHECK(parley_client_edit(a, CONV, 2, PARLEY_CT_TEXT, "x", 1, NULL) ==
		 -PARLEY_EDELETED);
	IT_CHECK(parley_client_delete(a, CONV, 2, NULL) == -PARLEY_EDELETED);

	/* the edit window: 3 s here, no delete window */
	it_sleep_ms(EDIT_WINDOW_MS + 500);
	IT_CHECK(parley_client_edit(a, CONV, 3, PARLEY_CT_TEXT, "late", 4, NULL) ==
		 -PARLEY_EEXPIRED);
	IT_OK(parley_client_delete(a, CONV, 3, &r));
	IT_CHECK(r.seq == 8);

	/* live devices of both users */
	wait_evs(a, &a_ev, NWANT);
	wait_evs(b, &b_ev, NWANT);
	it_sleep_ms(300); /* nothing more may come */
	parley_client_poll(a, 50);
	parley_client_poll(b, 50);
	check_evs(&a_ev, "alice-phone (live)", false);
	check_evs(&b_ev, "bob-phone (live)", false);

	/* a device that syncs afterwards sees the same */
	struct parley_client *l = client(&srv, "alice", "alice-laptop", &l_ev);
	IT_OK(parley_client_subscribe(l, 1, &ok));
	wait_evs(l, &l_ev, NWANT);
	check_evs(&l_ev, "alice-laptop (sync)", true);

	/* history: current state, every page size */
	for (uint16_t lim = 1; lim <= 5; lim++)
		check_history(b, lim);
	check_history(a, 100);

	/* the counters */
	int code;
	char *m = it_http_get(srv.admin_port, "/metrics", &code);
	IT_CHECK(code == 200);
	IT_CHECK(it_metric(m, "parley_edits_total") == 3, "edits %" PRIu64,
		 it_metric(m, "parley_edits_total"));
	IT_CHECK(it_metric(m, "parley_deletes_total") == 3);
	free(m);

	parley_client_free(l);
	parley_client_free(carol);
	parley_client_free(b);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);
	it_cleanup();
	printf("edits: ok\n");
	return 0;
}
