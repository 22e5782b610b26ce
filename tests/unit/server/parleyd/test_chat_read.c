/*
 * test_chat_read.c — unit tests for server/chat_read.c on the in-memory
 * engine: HISTORY pages (paging, END, the frame bound, membership), the
 * page builder skipping records that are not messages, the SYNC start
 * rule and chat_sync (stored cursor vs none), the inbox subscription's
 * credit (pauses at the window, resumes on grant, done runs after
 * unsubscribe), resolving inbox pointers into EVENTs (and the kind-0
 * placeholder), and device cursors (one whose partition is not held:
 * refused naming it, or read at its leader through a remote reader).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <time.h>

#include "chat_keys.h"
#include "chat_world.h"
#include "route.h"

#define CONV "d:alice:bob"

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---- HISTORY ---------------------------------------------------------------- */

struct hist_wait {
	struct waiter w;
	int err;
	uint16_t count;
	uint8_t flags;
	uint64_t next_before;
	uint64_t seq[PARLEY_PROTO_MAX_HISTORY];
	char body0[32];
	char sender0[16];
};

static void hist_cb(void *arg, int err, const struct parley_msg *m)
{
	struct hist_wait *x = arg;
	x->err = err;
	if (!err) {
		const struct parley_history_page *hp = &m->history_page;
		cr_assert_eq(m->type, PARLEY_T_HISTORY_PAGE);
		x->count = hp->count;
		x->flags = hp->flags;
		x->next_before = hp->next_before_seq;
		for (uint16_t i = 0; i < hp->count; i++)
			x->seq[i] = hp->msgs[i].seq;
		if (hp->count) {
			snprintf(x->body0, sizeof x->body0, "%.*s",
				 (int)hp->msgs[0].body.len,
				 (const char *)hp->msgs[0].body.p);
			snprintf(x->sender0, sizeof x->sender0, "%.*s",
				 (int)hp->msgs[0].sender.len, hp->msgs[0].sender.p);
		}
	}
	waiter_signal(&x->w);
}

static int history(struct world *w, const char *user, const char *conv,
		   uint64_t before, uint16_t limit, uint32_t max_frame,
		   struct hist_wait *x)
{
	*x = (struct hist_wait){.w = WAITER_INIT};
	int rc = chat_history(w->c, user, strlen(user), conv, strlen(conv),
			      before, limit, max_frame, hist_cb, x);
	if (rc)
		return rc;
	waiter_wait(&x->w, 1);
	return x->err;
}

Test(chat_read, history_pages_newest_first_to_the_end)
{
	struct world w;
	world_start(&w, 11);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 5; i++)
		cr_assert_eq(svc_send(w.c, CONV, i % 2 ? "alice" : "bob", i),
			     (uint64_t)i);
	struct hist_wait x;
	cr_assert_eq(history(&w, "bob", CONV, 0, 3, 1 << 20, &x), 0);
	cr_assert_eq(x.count, 3);
	cr_assert_eq(x.seq[0], 5);
	cr_assert_eq(x.seq[2], 3);
	cr_assert_str_eq(x.body0, "m5");
	cr_assert_str_eq(x.sender0, "alice");
	cr_assert_eq(x.next_before, 3);
	cr_assert_eq(x.flags & PARLEY_HISTF_END, 0);
	cr_assert_eq(history(&w, "alice", CONV, 3, 10, 1 << 20, &x), 0);
	cr_assert_eq(x.count, 2);
	cr_assert_eq(x.seq[0], 2);
	cr_assert_eq(x.seq[1], 1);
	cr_assert(x.flags & PARLEY_HISTF_END);
	/* nothing is older than seq 1: answered at once, on this thread */
	x = (struct hist_wait){.w = WAITER_INIT};
	cr_assert_eq(chat_history(w.c, "bob", 3, CONV, strlen(CONV), 1, 10,
				  1 << 20, hist_cb, &x), 0);
	cr_assert_eq(x.w.done, 1);
	cr_assert_eq(x.count, 0);
	cr_assert(x.flags & PARLEY_HISTF_END);
	cr_assert_eq(x.next_before, 0);
	world_stop(&w);
}

Test(chat_read, history_respects_the_frame_bound)
{
	struct world w;
	world_start(&w, 12);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 10; i++)
		svc_send(w.c, CONV, "alice", i);
	/* room for the page header and about three messages */
	struct parley_hist_msg h = {.sender = parley_str_c("alice"),
				    .body = {(const uint8_t *)"m10", 3}};
	size_t one = parley_proto_hist_msg_size(&h);
	uint32_t maxf = (uint32_t)(PARLEY_PROTO_HEADER_SIZE + 2 + strlen(CONV) +
				   8 + 1 + 2 + 3 * one + one / 2);
	struct hist_wait x;
	cr_assert_eq(history(&w, "alice", CONV, 0, 10, maxf, &x), 0);
	cr_assert_eq(x.count, 3);
	cr_assert_eq(x.flags & PARLEY_HISTF_END, 0, "a cut page is not the end");
	cr_assert_eq(x.next_before, 8);
	world_stop(&w);
}

Test(chat_read, history_checks_membership)
{
	struct world w;
	world_start(&w, 13);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	struct hist_wait x;
	cr_assert_eq(history(&w, "carol", CONV, 0, 10, 1 << 20, &x), -PARLEY_EPERM);
	cr_assert_eq(history(&w, "alice", "d:bob:alice", 0, 10, 1 << 20, &x),
		     -PARLEY_ENOTFOUND);
	cr_assert_eq(history(&w, "alice", "group-1", 0, 10, 1 << 20, &x),
		     -PARLEY_ENOTFOUND);
	/* an opened conversation without messages: an empty END page */
	cr_assert_eq(history(&w, "alice", CONV, 0, 10, 1 << 20, &x), 0);
	cr_assert_eq(x.count, 0);
	cr_assert(x.flags & PARLEY_HISTF_END);
	world_stop(&w);
}

/* A node that holds no replica of the conversation's partition (its
 * resolver names the leader, node 7) refuses NOTLEADER at once and notes
 * that partition, so the gateway forwards to its leader (route.h); it
 * does not read its own copy. Checked failing without the check in
 * chat_history (the page was read here: 0, no note). */
Test(chat_read, history_of_a_partition_not_held_is_refused_naming_it)
{
	struct world w;
	world_start(&w, 17);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, CONV, strlen(CONV));
	cr_assert_gt(kl, 0);
	uint32_t nh = world_not_held(&w, key);
	struct hist_wait x;
	cr_assert_eq(history(&w, "alice", CONV, 0, 10, 1 << 20, &x),
		     -PARLEY_ENOTLEADER);
	uint32_t p = ROUTE_PARTITION_ANY;
	uint64_t leader = 0;
	cr_assert(route_take(&p, &leader));
	cr_assert_eq(p, nh);
	cr_assert_eq(route_refusal_leader(w.e, p, leader, 1), 7);
	/* held again: read here */
	world_holds_all();
	cr_assert_eq(history(&w, "alice", CONV, 0, 10, 1 << 20, &x), 0);
	cr_assert(!route_take(&p, &leader));
	world_stop(&w);
}

Test(chat_read, history_page_skips_records_that_are_not_messages)
{
	uint8_t rec[64];
	struct chat_msg cm = {.sender = "bob", .sender_len = 3,
			      .body = (const uint8_t *)"hi", .body_len = 2};
	int n = chat_msg_encode(rec, sizeof rec, &cm);
	cr_assert_gt(n, 0);
	uint8_t junk[3] = {99, 1, 2};
	struct pe_entry ents[3] = {
		{.seq = 7, .ts_ms = 70, .type = CHAT_ENT_MSG, .len = (uint32_t)n, .payload = rec},
		{.seq = 6, .ts_ms = 60, .type = CHAT_ENT_MSG, .len = 3, .payload = junk},
		{.seq = 5, .ts_ms = 50, .type = CHAT_ENT_MSG, .len = (uint32_t)n, .payload = rec},
	};
	struct pe_read_result r = {.entries = ents, .count = 3, .end = true};
	struct parley_msg *m = malloc(sizeof *m);
	chat_history_page(&r, CONV, (uint16_t)strlen(CONV), 1 << 20, m);
	cr_assert_eq(m->history_page.count, 2);
	cr_assert_eq(m->history_page.msgs[0].seq, 7);
	cr_assert_eq(m->history_page.msgs[0].ts_ms, 70);
	cr_assert_eq(m->history_page.msgs[1].seq, 5);
	cr_assert_eq(m->history_page.next_before_seq, 5);
	/* a skipped record means count != r.count: not claimed as the end */
	cr_assert_eq(m->history_page.flags & PARLEY_HISTF_END, 0);
	free(m);
}

/* ---- SYNC --------------------------------------------------------------------- */

Test(chat_read, sync_start_rule)
{
	const uint64_t NONE = UINT64_MAX;
	/* explicit from: kept inside [first, last + 1] */
	cr_assert_eq(chat_sync_start(5, NONE, 1, 10), 5);
	cr_assert_eq(chat_sync_start(50, NONE, 1, 10), 11);
	cr_assert_eq(chat_sync_start(2, NONE, 4, 10), 4);
	/* from 0: after the stored cursor, or live when there is none */
	cr_assert_eq(chat_sync_start(0, 6, 1, 10), 7);
	cr_assert_eq(chat_sync_start(0, NONE, 1, 10), 11);
	cr_assert_eq(chat_sync_start(0, 2, 5, 10), 5);
	/* an empty inbox starts at 1 */
	cr_assert_eq(chat_sync_start(0, NONE, 0, 0), 1);
	cr_assert_eq(chat_sync_start(7, NONE, 0, 0), 1);
}

WAITER_FOR(sync_wait, struct chat_sync_info)

static struct chat_sync_info do_sync(struct world *w, const char *user,
				     const char *dev, uint64_t from)
{
	struct sync_wait x = {.w = WAITER_INIT};
	cr_assert_eq(chat_sync(w->c, user, strlen(user), dev, strlen(dev), from,
			       sync_wait_cb, &x), 0);
	waiter_wait(&x.w, 1);
	return x.r;
}

Test(chat_read, sync_reads_cursor_and_inbox_bounds)
{
	struct world w;
	world_start(&w, 14);
	struct chat_sync_info r = do_sync(&w, "alice", "phone", 0);
	cr_assert_eq(r.err, 0);
	cr_assert_eq(r.cursor, UINT64_MAX);
	cr_assert_eq(r.last, 0);
	cr_assert_eq(r.start, 1);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 4; i++)
		svc_send(w.c, CONV, "bob", i);
	wait_inbox(&w, "alice", 4);
	r = do_sync(&w, "alice", "phone", 0);
	cr_assert_eq(r.err, 0);
	cr_assert_eq(r.first, 1);
	cr_assert_eq(r.last, 4);
	cr_assert_eq(r.start, 5, "an unknown device starts live");
	cr_assert_eq(chat_cursor_store(w.c, "alice", 5, "phone", 5, 2), 0);
	for (int i = 0; i < 5000; i++) { /* the store is asynchronous */
		r = do_sync(&w, "alice", "phone", 0);
		if (r.cursor == 2)
			break;
		sleep_ms(1);
	}
	cr_assert_eq(r.cursor, 2);
	cr_assert_eq(r.start, 3, "resume after the stored cursor");
	r = do_sync(&w, "alice", "laptop", 1);
	cr_assert_eq(r.cursor, UINT64_MAX, "from given: the cursor is not read");
	cr_assert_eq(r.start, 1);
	struct sync_wait x = {.w = WAITER_INIT};
	cr_assert_eq(chat_sync(w.c, "a:b", 3, "phone", 5, 0, sync_wait_cb, &x),
		     -PARLEY_EINVAL);
	world_stop(&w);
}

/* SYNC's two reads on a node that holds no replica of their partition
 * (placement): the cursor's (from 0) or the inbox's is refused NOTLEADER
 * at once naming that partition, also when the refusal comes from the
 * cursor read's callback (the note is on the thread that answers), never
 * read from the node's own old copy. Checked failing without route_read
 * in chat_sync (the cursor's was read here: 0). */
struct sync_note {
	struct waiter w;
	struct chat_sync_info r;
	uint32_t noted;
};

static void sync_note_cb(void *arg, const struct chat_sync_info *r)
{
	struct sync_note *x = arg;
	x->r = *r;
	x->noted = world_noted();
	waiter_signal(&x->w);
}

/* A device of alice's whose cursor key is in another partition than her
 * inbox: its name in dev (16 bytes), the inbox and cursor keys in ik and
 * ck (CHAT_KEY_CAP bytes). Returns the inbox's partition. */
static uint32_t cursor_elsewhere(struct world *w, char *ik, char *ck,
				 char *dev)
{
	dev[0] = '\0';
	cr_assert_gt(chat_key_inbox(ik, "alice", 5), 0);
	uint32_t pi = pe_partition_of(w->e, ik, strlen(ik));
	for (int i = 0; i < 100 && !dev[0]; i++) { /* its cursor elsewhere */
		char d[16];
		snprintf(d, sizeof d, "dev%d", i);
		cr_assert_gt(chat_key_cursor(ck, "alice", 5, d, strlen(d)), 0);
		if (pe_partition_of(w->e, ck, strlen(ck)) != pi)
			memcpy(dev, d, sizeof d);
	}
	cr_assert(dev[0]);
	return pi;
}

Test(chat_read, sync_of_partitions_not_held_is_refused_naming_them)
{
	struct world w;
	world_start(&w, 18);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	svc_send(w.c, CONV, "bob", 1);
	wait_inbox(&w, "alice", 1);
	char ik[CHAT_KEY_CAP], ck[CHAT_KEY_CAP], dev[16];
	uint32_t pi = cursor_elsewhere(&w, ik, ck, dev);
	size_t dl = strlen(dev);
	/* the cursor's partition: refused before anything is read */
	uint32_t pc = world_not_held(&w, ck);
	struct sync_note x = {.w = WAITER_INIT};
	cr_assert_eq(chat_sync(w.c, "alice", 5, dev, dl, 0, sync_note_cb, &x),
		     -PARLEY_ENOTLEADER);
	cr_assert_eq(world_noted(), pc);
	/* from a given seq the cursor is not read: answered */
	x = (struct sync_note){.w = WAITER_INIT};
	cr_assert_eq(chat_sync(w.c, "alice", 5, dev, dl, 1, sync_note_cb, &x), 0);
	waiter_wait(&x.w, 1);
	cr_assert_eq(x.r.err, 0);
	cr_assert_eq(x.r.last, 1);
	/* the inbox's: at once from a seq, from the cursor's callback from 0 */
	cr_assert_eq(world_not_held(&w, ik), pi);
	x = (struct sync_note){.w = WAITER_INIT};
	cr_assert_eq(chat_sync(w.c, "alice", 5, dev, dl, 1, sync_note_cb, &x),
		     -PARLEY_ENOTLEADER);
	cr_assert_eq(world_noted(), pi);
	x = (struct sync_note){.w = WAITER_INIT};
	cr_assert_eq(chat_sync(w.c, "alice", 5, dev, dl, 0, sync_note_cb, &x), 0);
	waiter_wait(&x.w, 1);
	cr_assert_eq(x.r.err, -PARLEY_ENOTLEADER);
	cr_assert_eq(x.noted, pi);
	world_holds_all();
	world_stop(&w);
}

/* A remote reader (route_set_remote) standing in for the leader of the
 * cursor's partition: it reads on the same engine and counts its calls. */
static struct pe_engine *rr_e;
static int rr_asked;

static int fake_remote(void *arg, const struct pe_read_req *q, pe_read_cb cb,
		       void *cb_arg)
{
	(void)arg;
	rr_asked++;
	return pe_read(rr_e, q, cb, cb_arg);
}

/* SYNC from the cursor where the inbox is held but the cursor's partition
 * is not: the cursor is read at its leader (route_read_any, remote
 * reads) and delivery resumes after it. Without a remote reader it is
 * refused as above. */
Test(chat_read, sync_reads_a_cursor_not_held_at_its_leader)
{
	struct world w;
	world_start(&w, 19);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 3; i++)
		svc_send(w.c, CONV, "bob", i);
	wait_inbox(&w, "alice", 3);
	char ik[CHAT_KEY_CAP], ck[CHAT_KEY_CAP], dev[16];
	cursor_elsewhere(&w, ik, ck, dev);
	size_t dl = strlen(dev);
	cr_assert_eq(chat_cursor_store(w.c, "alice", 5, dev, dl, 2), 0);
	struct sync_note x;
	for (int i = 0; i < 5000; i++) { /* the store is asynchronous */
		x = (struct sync_note){.w = WAITER_INIT};
		cr_assert_eq(chat_sync(w.c, "alice", 5, dev, dl, 0, sync_note_cb,
				       &x), 0);
		waiter_wait(&x.w, 1);
		if (x.r.cursor == 2)
			break;
		sleep_ms(1);
	}
	cr_assert_eq(x.r.cursor, 2);
	rr_e = w.e;
	rr_asked = 0;
	uint32_t pc = world_not_held(&w, ck);
	route_set_remote(fake_remote, NULL);
	x = (struct sync_note){.w = WAITER_INIT};
	cr_assert_eq(chat_sync(w.c, "alice", 5, dev, dl, 0, sync_note_cb, &x), 0);
	waiter_wait(&x.w, 1);
	cr_assert_eq(x.r.err, 0);
	cr_assert_eq(x.r.cursor, 2);
	cr_assert_eq(x.r.start, 3, "resume after the stored cursor");
	cr_assert_eq(rr_asked, 1); /* the cursor; the inbox is read here */
	route_set_remote(NULL, NULL);
	cr_assert_eq(chat_sync(w.c, "alice", 5, dev, dl, 0, sync_note_cb, &x),
		     -PARLEY_ENOTLEADER);
	cr_assert_eq(world_noted(), pc);
	world_holds_all();
	world_stop(&w);
}

/* An inbox that retention emptied (every pointer aged out, or a delete
 * through its end): SYNC still answers, starting after its last seq. The
 * bounds read (backward from the end) fails TRIMMED on such a stream;
 * taken as an error, every SYNC of that user failed until a new pointer
 * arrived (integration_test_retention by age, when compaction reached the
 * inbox's partition after its last pointer aged out). */
Test(chat_read, sync_of_an_emptied_inbox)
{
	struct world w;
	world_start(&w, 15);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 4; i++)
		svc_send(w.c, CONV, "bob", i);
	wait_inbox(&w, "alice", 4);
	char key[CHAT_KEY_CAP];
	int kl = chat_key_inbox(key, "alice", 5);
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(w.e, key, (size_t)kl, UINT64_MAX, &dr), 0);
	cr_assert_eq(dr.err, 0);
	cr_assert_eq(dr.first_seq, 5);
	for (uint64_t from = 0; from <= 6; from += 3) {
		struct chat_sync_info r = do_sync(&w, "alice", "phone", from);
		cr_assert_eq(r.err, 0, "from %llu: err %d", (unsigned long long)from,
			     r.err);
		cr_assert_eq(r.first, 5);
		cr_assert_eq(r.last, 4);
		cr_assert_eq(r.start, 5, "from %llu: start %llu",
			     (unsigned long long)from, (unsigned long long)r.start);
	}
	/* the next pointer is delivered from there */
	svc_send(w.c, CONV, "bob", 5);
	wait_inbox(&w, "alice", 5);
	struct chat_sync_info r = do_sync(&w, "alice", "phone", 1);
	cr_assert_eq(r.err, 0);
	cr_assert_eq(r.first, 5);
	cr_assert_eq(r.last, 5);
	cr_assert_eq(r.start, 5);
	world_stop(&w);
}

/* ---- inbox subscription and EVENT resolution ------------------------------------- */

#define MAXP 64

struct sub_rec {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint32_t n;
	struct chat_inbox_ptr p[MAXP];
	bool ready[MAXP];
	uint64_t ev_seq[MAXP], ev_ts[MAXP];
	char ev_body[MAXP][16];
	bool done;
};

static void sub_cb(void *arg, const struct chat_inbox_update *u)
{
	struct sub_rec *s = arg;
	if (u->what != CHAT_INBOX_PTRS)
		return;
	pthread_mutex_lock(&s->mu);
	for (uint32_t i = 0; i < u->count && s->n < MAXP; i++) {
		const struct chat_inbox_item *it = &u->items[i];
		if (it->ready) { /* an inline pointer: the EVENT is complete */
			s->ready[s->n] = true;
			s->ev_seq[s->n] = it->ev.conv_seq;
			s->ev_ts[s->n] = it->ev.server_ts_ms;
			snprintf(s->ev_body[s->n], sizeof s->ev_body[0], "%.*s",
				 (int)it->ev.body.len, (const char *)it->ev.body.p);
		}
		s->p[s->n++] = it->p;
	}
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void sub_done(void *arg)
{
	struct sub_rec *s = arg;
	pthread_mutex_lock(&s->mu);
	s->done = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static uint32_t sub_wait(struct sub_rec *s, uint32_t n)
{
	pthread_mutex_lock(&s->mu);
	while (s->n < n)
		pthread_cond_wait(&s->cv, &s->mu);
	uint32_t got = s->n;
	pthread_mutex_unlock(&s->mu);
	return got;
}

struct ev_wait {
	struct waiter w;
	uint16_t kind;
	uint64_t inbox_seq, conv_seq, ts;
	char body[32], sender[16], conv[32];
	uint8_t cmid[16];
	int size; /* parley_proto_size of the EVENT: < 0 = not encodable */
};

static void ev_cb(void *arg, const struct parley_msg *m)
{
	struct ev_wait *x = arg;
	cr_assert_eq(m->type, PARLEY_T_EVENT);
	x->size = parley_proto_size(m);
	x->kind = m->event.kind;
	x->inbox_seq = m->event.inbox_seq;
	x->conv_seq = m->event.conv_seq;
	x->ts = m->event.server_ts_ms;
	memcpy(x->cmid, m->event.client_msg_id, 16);
	snprintf(x->body, sizeof x->body, "%.*s", (int)m->event.body.len,
		 (const char *)m->event.body.p);
	snprintf(x->sender, sizeof x->sender, "%.*s", (int)m->event.sender.len,
		 m->event.sender.p);
	snprintf(x->conv, sizeof x->conv, "%.*s", (int)m->event.conv.len,
		 m->event.conv.p);
	waiter_signal(&x->w);
}

Test(chat_read, subscription_credit_and_resolution)
{
	struct world w;
	world_start(&w, 15);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 6; i++)
		svc_send(w.c, CONV, "bob", i);
	wait_inbox(&w, "alice", 6);
	struct sub_rec s = {.mu = PTHREAD_MUTEX_INITIALIZER,
			    .cv = PTHREAD_COND_INITIALIZER};
	struct chat_sub *sub;
	cr_assert_eq(chat_inbox_subscribe(w.c, "alice", 5, 2, 1, sub_cb, sub_done,
					  &s, &sub), 0);
	cr_assert_geq(sub_wait(&s, 1), 1);
	/* The engine may hand over a whole batch at once, but once the credit
	 * (1) is spent nothing more comes until a grant: a live message now
	 * stays in the inbox. */
	sleep_ms(20);
	pthread_mutex_lock(&s.mu);
	uint32_t n0 = s.n;
	pthread_mutex_unlock(&s.mu);
	cr_assert_leq(n0, 5);
	svc_send(w.c, CONV, "bob", 7);
	wait_inbox(&w, "alice", 7);
	sleep_ms(50);
	pthread_mutex_lock(&s.mu);
	cr_assert_eq(s.n, n0, "delivered past the credit while paused");
	pthread_mutex_unlock(&s.mu);
	chat_inbox_grant(sub, 10);
	cr_assert_eq(sub_wait(&s, 6), 6); /* inbox seqs 2..7 */
	for (uint32_t i = 0; i < 6; i++) {
		cr_assert_eq(s.p[i].inbox_seq, i + 2);
		cr_assert_eq(s.p[i].conv_seq, i + 2);
		cr_assert_eq(s.p[i].kind, PARLEY_EV_MESSAGE);
		cr_assert_eq(s.p[i].clen, strlen(CONV));
		struct ev_wait x = {.w = WAITER_INIT};
		cr_assert_eq(chat_event_resolve(w.c, &s.p[i], ev_cb, &x), 0);
		waiter_wait(&x.w, 1);
		char want[16];
		snprintf(want, sizeof want, "m%u", i + 2);
		cr_assert_str_eq(x.body, want);
		cr_assert_str_eq(x.sender, "bob");
		cr_assert_str_eq(x.conv, CONV);
		cr_assert_eq(x.kind, PARLEY_EV_MESSAGE);
		cr_assert_eq(x.inbox_seq, i + 2);
		cr_assert_eq(x.cmid[0], (uint8_t)(i + 2));
		cr_assert_eq(x.cmid[15], 0x5a);
		cr_assert_gt(x.ts, 0);
		/* live messages travel inline: the same EVENT without a read */
		cr_assert(s.ready[i], "inbox seq %u not inline", i + 2);
		cr_assert_eq(s.ev_seq[i], i + 2);
		cr_assert_eq(s.ev_ts[i], x.ts);
		cr_assert_str_eq(s.ev_body[i], want);
	}
	chat_inbox_unsubscribe(sub);
	pthread_mutex_lock(&s.mu);
	while (!s.done)
		pthread_cond_wait(&s.cv, &s.mu);
	pthread_mutex_unlock(&s.mu);
	world_stop(&w);
}

Test(chat_read, unresolvable_pointers_become_placeholders)
{
	struct world w;
	world_start(&w, 16);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	svc_send(w.c, CONV, "bob", 1);
	/* unknown kind: answered at once, on this thread, without a read */
	struct chat_inbox_ptr p = {.inbox_seq = 9, .conv_seq = 1, .kind = 77,
				   .clen = (uint16_t)strlen(CONV)};
	memcpy(p.conv, CONV, p.clen);
	struct ev_wait x = {.w = WAITER_INIT};
	cr_assert_eq(chat_event_resolve(w.c, &p, ev_cb, &x), 0);
	cr_assert_eq(x.w.done, 1);
	cr_assert_eq(x.kind, 0);
	cr_assert_eq(x.inbox_seq, 9);
	cr_assert_str_eq(x.conv, CONV);
	/* the wire wants a valid user id as sender: "-" made every
	 * placeholder unencodable (parleyd asserted in conn.c's event_cb) */
	cr_assert_str_eq(x.sender, "parley");
	cr_assert_gt(x.size, 0, "the placeholder EVENT must encode");
	/* a message that is not there (seq 5 of 1): placeholder after the read */
	p.kind = PARLEY_EV_MESSAGE;
	p.conv_seq = 5;
	x = (struct ev_wait){.w = WAITER_INIT};
	cr_assert_eq(chat_event_resolve(w.c, &p, ev_cb, &x), 0);
	waiter_wait(&x.w, 1);
	cr_assert_eq(x.kind, 0);
	cr_assert_eq(x.conv_seq, 5);
	cr_assert_gt(x.size, 0);
	/* an undecodable pointer (clen 0) */
	struct chat_inbox_ptr q = {.inbox_seq = 3};
	x = (struct ev_wait){.w = WAITER_INIT};
	cr_assert_eq(chat_event_resolve(w.c, &q, ev_cb, &x), 0);
	cr_assert_eq(x.kind, 0);
	cr_assert_str_eq(x.conv, "-");
	world_stop(&w);
}

Test(chat_read, cursor_store_refuses_bad_ids)
{
	struct world w;
	world_start(&w, 17);
	cr_assert_eq(chat_cursor_store(w.c, "a:b", 3, "phone", 5, 1), -PARLEY_EINVAL);
	cr_assert_eq(chat_cursor_store(w.c, "alice", 5, "", 0, 1), -PARLEY_EINVAL);
	world_stop(&w);
}
