/*
 * test_chat_edit.c — unit tests for server/chat_edit.c on the in-memory
 * engine: the EDIT / DELETE record (round trip, never taken for a
 * message and the other way round, cut records refused), chat_edit's
 * rules in their documented order (not found, not a message, not the
 * sender, window, deleted; a retry acknowledged as a duplicate even when
 * the checks would now refuse it), the edit index, HISTORY's current
 * state (folded edits, deletes, skipped EDIT entries and paging over
 * them), the EVENT of an edit entry, and the engine retention rules
 * built from the defaults.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <time.h>

#include "chat_world.h"

#define CONV "d:alice:bob"

/* ---- records ------------------------------------------------------------------- */

Test(chat_edit, record_round_trip_and_refusals)
{
	struct chat_edit_rec r = {.kind = PARLEY_EV_EDIT, .sender = "alice",
				  .sender_len = 5, .ref_seq = 42,
				  .content_type = 1,
				  .body = (const uint8_t *)"new body",
				  .body_len = 8};
	memset(r.client_msg_id, 7, 16);
	uint8_t b[128];
	int n = chat_edit_rec_encode(b, sizeof b, &r);
	cr_assert_eq(n, chat_edit_rec_encode(NULL, 0, &r));
	struct chat_edit_rec d;
	cr_assert_eq(chat_edit_rec_decode(b, (size_t)n, &d), 0);
	cr_assert_eq(d.kind, PARLEY_EV_EDIT);
	cr_assert_eq(d.ref_seq, 42);
	cr_assert_eq(d.body_len, 8);
	cr_assert(!memcmp(d.body, "new body", 8));
	cr_assert(!memcmp(d.client_msg_id, r.client_msg_id, 16));
	/* an edit record is never a message record, nor the other way */
	struct chat_msg m;
	cr_assert_neq(chat_msg_decode(b, (size_t)n, &m), 0);
	struct chat_msg cm = {.sender = "alice", .sender_len = 5,
			      .body = (const uint8_t *)"x", .body_len = 1};
	uint8_t mb[64];
	int mn = chat_msg_encode(mb, sizeof mb, &cm);
	cr_assert_neq(chat_edit_rec_decode(mb, (size_t)mn, &d), 0);
	/* every cut is refused */
	for (int k = 0; k < n; k++)
		cr_assert_neq(chat_edit_rec_decode(b, (size_t)k, &d), 0, "cut at %d", k);
	/* an unknown kind is refused */
	r.kind = 9;
	n = chat_edit_rec_encode(b, sizeof b, &r);
	cr_assert_neq(chat_edit_rec_decode(b, (size_t)n, &d), 0);
	cr_assert_eq(chat_edit_rec_encode(b, 10, &r), -PARLEY_ETOOBIG);
}

Test(chat_edit, producers_are_distinct)
{
	uint8_t id[16] = {1}, a[16], b[16], c[16], e[16];
	chat_producer_edit(a, "alice", 5, id);
	chat_producer_send(b, "alice", 5, id);
	cr_assert(memcmp(a, b, 16), "an EDIT's key is not its client_msg_id's SEND key");
	chat_producer_edit_index(c, CONV, strlen(CONV), 5);
	chat_producer_edit_index(e, CONV, strlen(CONV), 6);
	cr_assert(memcmp(c, e, 16));
}

Test(chat_edit, retention_rules_from_the_defaults)
{
	struct pe_retention_rule r[CHAT_RETENTION_RULES_MAX];
	size_t n = chat_retention_rules(0, 0, r);
	cr_assert_eq(n, chat_nretention, "no default: only the internal rules");
	n = chat_retention_rules(0, 100, r);
	cr_assert_eq(n, chat_nretention + 1);
	cr_assert_eq(r[n - 1].plen, 2);
	cr_assert(!memcmp(r[n - 1].prefix, "c/", 2));
	cr_assert_eq(r[n - 1].max_count, 100);
	n = chat_retention_rules(86400000, 100, r);
	cr_assert_eq(n, chat_nretention + 3, "c/, e/ and u/");
	cr_assert(!memcmp(r[n - 1].prefix, "u/", 2));
	cr_assert_eq(r[n - 1].max_age_ms, 86400000);
	cr_assert_eq(r[n - 1].max_count, 0, "inboxes are never trimmed by count");
}

/* ---- chat_edit ------------------------------------------------------------------- */

WAITER_FOR(edit_wait, struct chat_edit_result)

static int do_edit(struct world *w, uint16_t kind, const char *user,
		   uint64_t ref, const char *body, uint8_t id, uint64_t window,
		   struct chat_edit_result *out)
{
	struct chat_edit_req q = {.kind = kind, .conv = CONV,
				  .conv_len = (uint16_t)strlen(CONV),
				  .user = user, .user_len = (uint16_t)strlen(user),
				  .ref_seq = ref, .content_type = 1,
				  .body = (const uint8_t *)body,
				  .body_len = body ? (uint32_t)strlen(body) : 0,
				  .window_ms = window};
	q.client_msg_id[0] = id;
	q.client_msg_id[15] = 0xed;
	struct edit_wait x = {.w = WAITER_INIT};
	int rc = chat_edit(w->c, &q, edit_wait_cb, &x);
	if (rc)
		return rc;
	waiter_wait(&x.w, 1);
	if (out)
		*out = x.r;
	return x.r.err;
}

/* EDIT / DELETE on a node that holds no replica of the conversation's
 * partition (placement): refused NOTLEADER at once, naming it (the
 * gateway forwards it to its leader), the target not looked up in this
 * node's old copy. Checked failing without route_read in chat_edit (not
 * refused NOTLEADER). */
Test(chat_edit, edit_of_a_partition_not_held_is_refused)
{
	struct world w;
	world_start(&w, 33);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	char ck[CHAT_KEY_CAP];
	cr_assert_gt(chat_key_conv(ck, CONV, strlen(CONV)), 0);
	uint32_t p = world_not_held(&w, ck);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 1, "x", 1, 0, NULL),
		     -PARLEY_ENOTLEADER);
	cr_assert_eq(world_noted(), p);
	cr_assert_eq(do_edit(&w, PARLEY_EV_DELETE, "alice", 1, NULL, 2, 0, NULL),
		     -PARLEY_ENOTLEADER);
	cr_assert_eq(world_noted(), p);
	world_holds_all();
	world_stop(&w);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

Test(chat_edit, rules_in_order)
{
	struct world w;
	world_start(&w, 31);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	cr_assert_eq(svc_send(w.c, CONV, "alice", 1), 1);
	cr_assert_eq(svc_send(w.c, CONV, "bob", 2), 2);
	struct chat_edit_result r;
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 1, "m1'", 1, 0, &r), 0);
	cr_assert_eq(r.seq, 3);
	cr_assert(!r.duplicate);
	/* the same request again: the original seq */
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 1, "m1'", 1, 0, &r), 0);
	cr_assert_eq(r.seq, 3);
	cr_assert(r.duplicate);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 9, "x", 2, 0, NULL),
		     -PARLEY_ENOTFOUND);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 0, "x", 2, 0, NULL),
		     -PARLEY_ENOTFOUND);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 3, "x", 2, 0, NULL),
		     -PARLEY_EINVAL, "an EDIT entry is not a message");
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 2, "x", 2, 0, NULL),
		     -PARLEY_EPERM, "bob's message");
	cr_assert_eq(do_edit(&w, PARLEY_EV_DELETE, "bob", 1, NULL, 2, 0, NULL),
		     -PARLEY_EPERM);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "carol", 1, "x", 2, 0, NULL),
		     -PARLEY_EPERM, "not a member");
	cr_assert_eq(do_edit(&w, 7, "alice", 1, "x", 2, 0, NULL), -PARLEY_EINVAL);
	/* delete, retry, then edit and delete again */
	cr_assert_eq(do_edit(&w, PARLEY_EV_DELETE, "alice", 1, NULL, 3, 0, &r), 0);
	cr_assert_eq(r.seq, 4);
	cr_assert_eq(do_edit(&w, PARLEY_EV_DELETE, "alice", 1, NULL, 3, 0, &r), 0);
	cr_assert(r.duplicate && r.seq == 4, "a retry after the fact is a duplicate");
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 1, "x", 4, 0, NULL),
		     -PARLEY_EDELETED);
	cr_assert_eq(do_edit(&w, PARLEY_EV_DELETE, "alice", 1, NULL, 5, 0, NULL),
		     -PARLEY_EDELETED);
	/* the window: bob's message is older than 1 ms now */
	sleep_ms(20);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "bob", 2, "late", 6, 1, NULL),
		     -PARLEY_EEXPIRED);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "bob", 2, "ok", 6, 60000, &r), 0);
	cr_assert_eq(r.seq, 5);
	/* ... and a retry of a stored edit is acknowledged even when late */
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "bob", 2, "ok", 6, 1, &r), 0);
	cr_assert(r.duplicate && r.seq == 5);
	world_stop(&w);
}

/* ---- HISTORY's current state --------------------------------------------------------- */

struct page {
	struct waiter w;
	int err;
	uint16_t count;
	uint8_t flags;
	uint64_t next_before;
	uint64_t seq[16];
	uint32_t mflags[16];
	char body[16][16];
};

static void page_cb(void *arg, int err, const struct parley_msg *m)
{
	struct page *x = arg;
	x->err = err;
	if (!err) {
		const struct parley_history_page *hp = &m->history_page;
		x->count = hp->count;
		x->flags = hp->flags;
		x->next_before = hp->next_before_seq;
		for (uint16_t i = 0; i < hp->count && i < 16; i++) {
			x->seq[i] = hp->msgs[i].seq;
			x->mflags[i] = hp->msgs[i].flags;
			snprintf(x->body[i], sizeof x->body[i], "%.*s",
				 (int)hp->msgs[i].body.len,
				 (const char *)hp->msgs[i].body.p);
		}
	}
	waiter_signal(&x->w);
}

static void page(struct world *w, uint64_t before, uint16_t limit, struct page *x)
{
	*x = (struct page){.w = WAITER_INIT};
	cr_assert_eq(chat_history(w->c, "bob", 3, CONV, strlen(CONV), before,
				  limit, 1 << 20, page_cb, x), 0);
	waiter_wait(&x->w, 1);
	cr_assert_eq(x->err, 0);
}

Test(chat_edit, history_shows_the_current_state)
{
	struct world w;
	world_start(&w, 32);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 3; i++)
		svc_send(w.c, CONV, "alice", i);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 1, "one", 1, 0, NULL), 0);
	cr_assert_eq(do_edit(&w, PARLEY_EV_EDIT, "alice", 1, "uno", 2, 0, NULL), 0);
	cr_assert_eq(do_edit(&w, PARLEY_EV_DELETE, "alice", 2, NULL, 3, 0, NULL), 0);
	/* seqs: 1..3 messages, 4 and 5 edits of 1, 6 delete of 2 */
	struct page x;
	page(&w, 0, 10, &x);
	cr_assert_eq(x.count, 3, "the EDIT / DELETE entries are not records");
	cr_assert_eq(x.seq[0], 3);
	cr_assert_str_eq(x.body[0], "m3");
	cr_assert_eq(x.mflags[0], 0);
	cr_assert_eq(x.seq[1], 2);
	cr_assert_str_eq(x.body[1], "");
	cr_assert_eq(x.mflags[1], PARLEY_MSGF_DELETED);
	cr_assert_eq(x.seq[2], 1);
	cr_assert_str_eq(x.body[2], "uno", "the latest edit");
	cr_assert_eq(x.mflags[2], PARLEY_MSGF_EDITED);
	cr_assert(x.flags & PARLEY_HISTF_END);
	/* a page of edit entries only: empty, not the end, and it moves on */
	page(&w, 0, 2, &x);
	cr_assert_eq(x.count, 0);
	cr_assert_eq(x.flags & PARLEY_HISTF_END, 0);
	cr_assert_eq(x.next_before, 5);
	page(&w, 5, 2, &x);
	cr_assert_eq(x.count, 1);
	cr_assert_eq(x.seq[0], 3);
	cr_assert_eq(x.next_before, 3);
	page(&w, 3, 2, &x);
	cr_assert_eq(x.count, 2);
	cr_assert_str_eq(x.body[1], "uno", "folded on an older page too");
	cr_assert(x.flags & PARLEY_HISTF_END);
	world_stop(&w);
}

Test(chat_edit, event_of_an_edit_entry)
{
	struct chat_edit_rec r = {.kind = PARLEY_EV_DELETE, .sender = "bob",
				  .sender_len = 3, .ref_seq = 7};
	uint8_t b[64];
	int n = chat_edit_rec_encode(b, sizeof b, &r);
	struct pe_entry e = {.seq = 9, .ts_ms = 1234, .type = CHAT_ENT_EDIT,
			     .len = (uint32_t)n, .payload = b};
	struct parley_msg m;
	memset(&m, 0, sizeof m);
	cr_assert_eq(chat_edit_event(&e, &m), 0);
	cr_assert_eq(m.event.kind, PARLEY_EV_DELETE);
	cr_assert_eq(m.event.conv_seq, 9);
	cr_assert_eq(m.event.ref_seq, 7);
	cr_assert_eq(m.event.flags, PARLEY_MSGF_DELETED);
	cr_assert_eq(m.event.server_ts_ms, 1234);
	e.type = CHAT_ENT_MSG;
	cr_assert_eq(chat_edit_event(&e, &m), -PARLEY_ECORRUPT);
}
