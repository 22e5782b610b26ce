/*
 * test_chat_list.c — unit tests for server/chat_list.c: the pure list
 * builder (most recent first, ties by id, the peer seen from the caller,
 * the limit, ids that are not conversations skipped) and CONV_LIST on the
 * in-memory engine (conversations opened with and without messages, the
 * order following the last message, an empty list; partitions not held:
 * refused naming them, or read at their leader through a remote reader).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <time.h>

#include "chat_world.h"

static void ent(struct chat_list_ent *e, const char *conv, uint64_t seq,
		uint64_t ts)
{
	memset(e, 0, sizeof *e);
	e->clen = (uint16_t)strlen(conv);
	memcpy(e->conv, conv, e->clen);
	e->last_seq = seq;
	e->last_ts = ts;
}

static const char *str(struct parley_str s, char *buf)
{
	memcpy(buf, s.p, s.len);
	buf[s.len] = '\0';
	return buf;
}

Test(chat_list, build_orders_and_names_the_peer)
{
	struct chat_list_ent e[5];
	ent(&e[0], "d:alice:bob", 3, 100);
	ent(&e[1], "d:alice:dave", 1, 300);
	ent(&e[2], "x-not-a-conv", 1, 999);
	ent(&e[3], "d:alice:carol", 0, 0);
	ent(&e[4], "d:alice:ann", 0, 0); /* same time as carol: shorter id first */
	struct parley_msg *m = malloc(sizeof *m);
	chat_list_build(e, 5, 100, "alice", 5, m);
	cr_assert_eq(m->type, PARLEY_T_CONV_LIST_OK);
	const struct parley_conv_list_ok *l = &m->conv_list_ok;
	cr_assert_eq(l->count, 4);
	char b[256];
	cr_assert_str_eq(str(l->entries[0].conv, b), "d:alice:dave");
	cr_assert_str_eq(str(l->entries[0].peer, b), "dave");
	cr_assert_eq(l->entries[0].last_ts_ms, 300);
	cr_assert_str_eq(str(l->entries[1].conv, b), "d:alice:bob");
	cr_assert_eq(l->entries[1].last_seq, 3);
	cr_assert_str_eq(str(l->entries[2].conv, b), "d:alice:ann");
	cr_assert_str_eq(str(l->entries[3].conv, b), "d:alice:carol");
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(l->entries[i].kind, PARLEY_CONV_DIRECT);
		cr_assert_eq(l->entries[i].member_count, 2);
	}
	/* seen from bob, the peer of d:alice:bob is alice */
	ent(&e[0], "d:alice:bob", 3, 100);
	chat_list_build(e, 1, 100, "bob", 3, m);
	cr_assert_str_eq(str(m->conv_list_ok.entries[0].peer, b), "alice");
	/* the limit */
	ent(&e[0], "d:alice:bob", 3, 100);
	ent(&e[1], "d:alice:dave", 1, 300);
	chat_list_build(e, 2, 1, "alice", 5, m);
	cr_assert_eq(m->conv_list_ok.count, 1);
	cr_assert_str_eq(str(m->conv_list_ok.entries[0].conv, b), "d:alice:dave");
	free(m);
}

struct list_wait {
	struct waiter w;
	int err;
	uint16_t count;
	char conv[8][32];
	char peer[8][16];
	uint64_t last_seq[8];
};

static void list_cb(void *arg, int err, const struct parley_msg *m)
{
	struct list_wait *x = arg;
	x->err = err;
	if (!err) {
		x->count = m->conv_list_ok.count;
		for (uint16_t i = 0; i < x->count && i < 8; i++) {
			const struct parley_conv_entry *e = &m->conv_list_ok.entries[i];
			snprintf(x->conv[i], 32, "%.*s", (int)e->conv.len, e->conv.p);
			snprintf(x->peer[i], 16, "%.*s", (int)e->peer.len, e->peer.p);
			x->last_seq[i] = e->last_seq;
		}
	}
	waiter_signal(&x->w);
}

static int conv_list(struct world *w, const char *user, uint16_t limit,
		     struct list_wait *x)
{
	*x = (struct list_wait){.w = WAITER_INIT};
	int rc = chat_conv_list(w->c, user, strlen(user), limit, list_cb, x);
	if (rc)
		return rc;
	waiter_wait(&x->w, 1);
	return x->err;
}

Test(chat_list, conv_list_on_the_engine)
{
	struct world w;
	world_start(&w, 21);
	struct list_wait x;
	cr_assert_eq(conv_list(&w, "alice", 50, &x), 0);
	cr_assert_eq(x.count, 0, "no conversations yet");
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	cr_assert_eq(svc_open(w.c, "carol", "alice", NULL), 0);
	cr_assert_eq(svc_send(w.c, "d:alice:bob", "bob", 1), 1);
	/* a later millisecond for carol's messages (the order is by time) */
	struct timespec ts = {0, 5000000};
	nanosleep(&ts, NULL);
	cr_assert_eq(svc_send(w.c, "d:alice:carol", "carol", 1), 1);
	cr_assert_eq(svc_send(w.c, "d:alice:carol", "alice", 2), 2);
	cr_assert_eq(conv_list(&w, "alice", 50, &x), 0);
	cr_assert_eq(x.count, 2);
	cr_assert_str_eq(x.conv[0], "d:alice:carol"); /* most recent message */
	cr_assert_str_eq(x.peer[0], "carol");
	cr_assert_eq(x.last_seq[0], 2);
	cr_assert_str_eq(x.conv[1], "d:alice:bob");
	cr_assert_eq(x.last_seq[1], 1);
	cr_assert_eq(conv_list(&w, "alice", 1, &x), 0);
	cr_assert_eq(x.count, 1);
	cr_assert_eq(conv_list(&w, "bob", 50, &x), 0);
	cr_assert_eq(x.count, 1);
	cr_assert_str_eq(x.peer[0], "alice");
	cr_assert_eq(conv_list(&w, "a:b", 50, &x), -PARLEY_EINVAL);
	world_stop(&w);
}

/* CONV_LIST on a node that holds no replica of a partition it reads
 * (placement): the list's own (l/<user>) is refused NOTLEADER at once; a
 * conversation's (c/<conv>, read in parallel from the list's callback)
 * fails the list NOTLEADER, and the note at the answer names that
 * partition (the refusal may be on another engine thread than the
 * answer), so the gateway forwards the CONV_LIST to its leader. Never
 * read from this node's old copy. Checked failing without route_read in
 * chat_list.c (the first list was read here: 0). */
struct list_note {
	struct list_wait l;
	uint32_t noted;
};

static void list_note_cb(void *arg, int err, const struct parley_msg *m)
{
	struct list_note *x = arg;
	x->noted = world_noted();
	list_cb(&x->l, err, m);
}

Test(chat_list, conv_list_of_partitions_not_held_is_refused_naming_them)
{
	struct world w;
	world_start(&w, 23);
	char lk[CHAT_KEY_CAP], ck[CHAT_KEY_CAP], conv[64] = "";
	cr_assert_gt(chat_key_list(lk, "alice", 5), 0);
	uint32_t pl = pe_partition_of(w.e, lk, strlen(lk));
	for (int i = 0; i < 100 && !conv[0]; i++) { /* c/<conv> elsewhere */
		char peer[16], cv[64];
		snprintf(peer, sizeof peer, "bob%d", i);
		snprintf(cv, sizeof cv, "d:alice:%s", peer);
		cr_assert_gt(chat_key_conv(ck, cv, strlen(cv)), 0);
		if (pe_partition_of(w.e, ck, strlen(ck)) != pl) {
			cr_assert_eq(svc_open(w.c, "alice", peer, NULL), 0);
			svc_send(w.c, cv, peer, 1);
			memcpy(conv, cv, sizeof cv);
		}
	}
	cr_assert(conv[0]);
	struct list_wait x;
	cr_assert_eq(conv_list(&w, "alice", 50, &x), 0);
	cr_assert_eq(x.count, 1);
	uint32_t p = world_not_held(&w, lk);
	cr_assert_eq(conv_list(&w, "alice", 50, &x), -PARLEY_ENOTLEADER);
	cr_assert_eq(world_noted(), p);
	p = world_not_held(&w, ck);
	struct list_note y = {.l = {.w = WAITER_INIT}};
	cr_assert_eq(chat_conv_list(w.c, "alice", 5, 50, list_note_cb, &y), 0);
	waiter_wait(&y.l.w, 1);
	cr_assert_eq(y.l.err, -PARLEY_ENOTLEADER);
	cr_assert_eq(y.noted, p);
	world_holds_all();
	cr_assert_eq(conv_list(&w, "alice", 50, &x), 0);
	cr_assert_eq(x.count, 1);
	world_stop(&w);
}

/* A remote reader (route_set_remote) standing in for the leader of a
 * partition this node does not hold: it reads on the same engine and
 * counts what it was asked, of that partition and of others. */
static struct {
	struct pe_engine *e;
	uint32_t part;
	int asked, other;
} rr;

static int fake_remote(void *arg, const struct pe_read_req *q, pe_read_cb cb,
		       void *cb_arg)
{
	(void)arg;
	if (pe_partition_of(rr.e, q->key, q->klen) == rr.part)
		rr.asked++;
	else
		rr.other++;
	return pe_read(rr.e, q, cb, cb_arg);
}

/* The list's per-conversation reads of a partition not held here are
 * read at its leader (route_read_any, remote reads): the list is
 * answered. Without a remote reader they are refused as before. */
Test(chat_list, conv_list_reads_partitions_not_held_at_their_leader)
{
	struct world w;
	world_start(&w, 24);
	char lk[CHAT_KEY_CAP], ck[CHAT_KEY_CAP], conv[64] = "";
	cr_assert_gt(chat_key_list(lk, "alice", 5), 0);
	uint32_t pl = pe_partition_of(w.e, lk, strlen(lk));
	for (int i = 0; i < 100 && !conv[0]; i++) { /* c/<conv> elsewhere */
		char peer[16], cv[64];
		snprintf(peer, sizeof peer, "bob%d", i);
		snprintf(cv, sizeof cv, "d:alice:%s", peer);
		cr_assert_gt(chat_key_conv(ck, cv, strlen(cv)), 0);
		if (pe_partition_of(w.e, ck, strlen(ck)) != pl) {
			cr_assert_eq(svc_open(w.c, "alice", peer, NULL), 0);
			svc_send(w.c, cv, peer, 1);
			svc_send(w.c, cv, peer, 2);
			memcpy(conv, cv, sizeof cv);
		}
	}
	cr_assert(conv[0]);
	rr.e = w.e;
	rr.asked = rr.other = 0;
	rr.part = world_not_held(&w, ck);
	route_set_remote(fake_remote, NULL);
	struct list_wait x;
	cr_assert_eq(conv_list(&w, "alice", 50, &x), 0, "err %d", x.err);
	cr_assert_eq(x.count, 1);
	cr_assert_str_eq(x.conv[0], conv);
	cr_assert_eq(x.last_seq[0], 2);
	cr_assert_gt(rr.asked, 0); /* c/<conv> (newest entry, unread) */
	cr_assert_eq(rr.other, 0); /* what is held is read here */
	route_set_remote(NULL, NULL);
	struct list_note y = {.l = {.w = WAITER_INIT}};
	cr_assert_eq(chat_conv_list(w.c, "alice", 5, 50, list_note_cb, &y), 0);
	waiter_wait(&y.l.w, 1);
	cr_assert_eq(y.l.err, -PARLEY_ENOTLEADER);
	cr_assert_eq(y.noted, rr.part);
	world_holds_all();
	world_stop(&w);
}

/* A conversation whose every entry retention removed (max age, or a delete
 * through its end): the backward read from its end fails TRIMMED. The list
 * keeps the entry (at its last seq, nothing to show or count) instead of
 * failing for the whole user, as it did. */
Test(chat_list, a_conversation_retention_emptied_stays_listed)
{
	struct world w;
	world_start(&w, 22);
	cr_assert_eq(svc_open(w.c, "alice", "bob", NULL), 0);
	cr_assert_eq(svc_open(w.c, "carol", "alice", NULL), 0);
	cr_assert_eq(svc_send(w.c, "d:alice:bob", "bob", 1), 1);
	cr_assert_eq(svc_send(w.c, "d:alice:bob", "bob", 2), 2);
	/* a later millisecond: bob's entry sorts by its opening, before */
	struct timespec ts = {0, 5000000};
	nanosleep(&ts, NULL);
	cr_assert_eq(svc_send(w.c, "d:alice:carol", "carol", 1), 1);
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, "d:alice:bob", 11);
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(w.e, key, (size_t)kl, UINT64_MAX, &dr), 0);
	cr_assert_eq(dr.err, 0);
	cr_assert_eq(dr.first_seq, 3);
	struct list_wait x;
	cr_assert_eq(conv_list(&w, "alice", 50, &x), 0, "err %d", x.err);
	cr_assert_eq(x.count, 2);
	cr_assert_str_eq(x.conv[0], "d:alice:carol");
	cr_assert_str_eq(x.conv[1], "d:alice:bob");
	cr_assert_eq(x.last_seq[1], 2);
	world_stop(&w);
}
