/*
 * test_chat_fanout_read.c — server/chat_fanout_read.c: the activity table
 * (coalescing, clear only of the outstanding pointer, deletion keeps
 * every other key findable, the bound), the mode decision, and the read
 * fan-out of the running service on the in-memory engine: members with a
 * live connection get the EVENT posted (the hook) and no inbox entry,
 * the others ONE coalesced ACTIVITY until it is acknowledged, a group
 * under the threshold keeps write fan-out, GROUP_CATCHUP pages filter by
 * the reader's membership at each seq (a removed member up to its
 * removal), oldest first, END / next, and a window below retention
 * skipping to the first retained seq.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "chat_world.h"
#include "parley_proto.h"

Test(chat_act, coalesces_and_clears_only_the_outstanding)
{
	struct chat_act *t = chat_act_new(1024);
	cr_assert(t);
	cr_assert(chat_act_test_set(t, "alice", 5, "g:1", 3, 10));
	cr_assert(!chat_act_test_set(t, "alice", 5, "g:1", 3, 11)); /* coalesced */
	cr_assert(chat_act_test_set(t, "bob", 3, "g:1", 3, 11));
	cr_assert(chat_act_test_set(t, "alice", 5, "g:2", 3, 12));
	cr_assert_eq(chat_act_count(t), 3);
	/* an ack of another pointer of the group does not clear it */
	cr_assert(!chat_act_clear(t, "alice", 5, "g:1", 3, 11));
	cr_assert(!chat_act_test_set(t, "alice", 5, "g:1", 3, 13));
	cr_assert(chat_act_clear(t, "alice", 5, "g:1", 3, 10));
	cr_assert(chat_act_test_set(t, "alice", 5, "g:1", 3, 14)); /* re-armed */
	cr_assert_eq(chat_act_count(t), 3);
	chat_act_free(t);
}

Test(chat_act, deletion_keeps_the_others_and_the_bound_writes)
{
	/* many keys in a small table: probe chains overlap; clearing half of
	 * them (backward-shift deletion) must leave the rest findable */
	struct chat_act *t = chat_act_new(4096);
	char u[32];
	for (int i = 0; i < 3072; i++) {
		int n = snprintf(u, sizeof u, "u%d", i);
		cr_assert(chat_act_test_set(t, u, (size_t)n, "g:x", 3, (uint64_t)i + 1));
	}
	/* over the bound (4096 slots, 3072 at 3/4 load): not recorded, "write" */
	int n0 = snprintf(u, sizeof u, "u%d", 5000);
	cr_assert(chat_act_test_set(t, u, (size_t)n0, "g:x", 3, 1));
	cr_assert(chat_act_test_set(t, u, (size_t)n0, "g:x", 3, 2));
	for (int i = 0; i < 3072; i += 2) {
		int n = snprintf(u, sizeof u, "u%d", i);
		cr_assert(chat_act_clear(t, u, (size_t)n, "g:x", 3, (uint64_t)i + 1));
	}
	for (int i = 0; i < 3072; i++) {
		int n = snprintf(u, sizeof u, "u%d", i);
		/* odd ones still outstanding, even ones free again */
		cr_assert_eq(chat_act_test_set(t, u, (size_t)n, "g:x", 3, 9), i % 2 == 0,
			     "key %d", i);
	}
	chat_act_free(t);
}

Test(chat_act, mode)
{
	cr_assert(!chat_rd_is_read(0, 5000));
	cr_assert(!chat_rd_is_read(100, 99));
	cr_assert(chat_rd_is_read(100, 100));
	cr_assert(chat_rd_is_read(1, 1));
}

/* ---- the running service ------------------------------------------------------------------- */

WAITER_FOR(rgwait, struct chat_group_result)

static int change(struct chat *c, uint8_t op, const char *conv,
		  const char *actor, const char *const *users, uint32_t n,
		  struct chat_group_result *out)
{
	struct chat_member m[64];
	for (uint32_t i = 0; i < n; i++)
		m[i] = (struct chat_member){users[i], strlen(users[i])};
	struct chat_group_req q = {.op = op, .conv = conv,
				   .conv_len = conv ? (uint16_t)strlen(conv) : 0,
				   .actor = actor,
				   .actor_len = (uint16_t)strlen(actor),
				   .name = "big", .name_len = 3, .n = n, .users = m};
	memset(q.create_id, 9, 16);
	struct rgwait x = {.w = WAITER_INIT};
	int rc = chat_group_change(c, &q, rgwait_cb, &x, NULL);
	if (rc)
		return rc;
	waiter_wait(&x.w, 1);
	if (out)
		*out = x.r;
	return x.r.err;
}

/* The live hook: "alice" and "bob" have one connection each. */
static _Atomic unsigned live_posts;
static unsigned fake_live(void *arg, const char *user, size_t ulen,
			  const uint8_t *frame, uint32_t len)
{
	(void)arg;
	struct parley_frame f;
	cr_assert_eq(parley_proto_frame_decode(frame, len, len, &f), (int)len);
	struct parley_msg m;
	cr_assert_eq(parley_proto_decode(&f, &m), 0);
	cr_assert_eq(m.type, PARLEY_T_EVENT);
	cr_assert_eq(m.event.inbox_seq, 0);
	cr_assert_eq(m.event.kind, PARLEY_EV_MESSAGE);
	if ((ulen == 5 && !memcmp(user, "alice", 5)) ||
	    (ulen == 3 && !memcmp(user, "bob", 3))) {
		live_posts++;
		return 1;
	}
	return 0;
}

static uint64_t inbox_last(struct world *w, const char *user)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_inbox(key, user, strlen(user));
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(w->e, key, (size_t)kl, &m), 0);
	return m.last_seq;
}

static void settle(struct world *w)
{
	struct chat_stats st;
	for (int i = 0; i < 5000; i++) {
		chat_get_stats(w->c, &st);
		if (!st.fanout_pending)
			return;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	cr_assert_fail("fan-out never settled");
}

struct pgwait {
	struct waiter w;
	int err;
	struct parley_msg m; /* seqs, counts and flags only (strings borrow) */
};

static void catchup_cb(void *arg, int err, const struct parley_msg *m)
{
	struct pgwait *x = arg;
	x->err = err;
	if (!err)
		x->m = *m;
	waiter_signal(&x->w);
}

static int catchup(struct chat *c, const char *user, const char *g,
		   uint64_t from, uint16_t limit, struct parley_msg *out)
{
	static struct pgwait x;
	x = (struct pgwait){.w = WAITER_INIT};
	int rc = chat_group_catchup(c, user, strlen(user), g, strlen(g), from,
				    limit, 1u << 20, catchup_cb, &x);
	if (rc)
		return rc;
	waiter_wait(&x.w, 1);
	if (!x.err)
		*out = x.m;
	return x.err;
}

Test(chat_fanout_read, live_activity_coalesced_and_catchup)
{
	struct world w;
	world_start(&w, 7);
	chat_set_group_read_min(w.c, 4);
	chat_set_live(w.c, fake_live, NULL);
	const char *mem[4] = {"bob", "carol", "dave", "erin"};
	struct chat_group_result r;
	cr_assert_eq(change(w.c, CHAT_GOP_CREATE, NULL, "alice", mem, 4, &r), 0);
	char g[32];
	memcpy(g, r.conv, r.conv_len);
	g[r.conv_len] = 0;
	settle(&w);
	uint64_t carol0 = inbox_last(&w, "carol"), alice0 = inbox_last(&w, "alice");
	for (int i = 0; i < 10; i++)
		svc_send(w.c, g, i % 2 ? "bob" : "alice", i); /* seqs 2..11 */
	settle(&w);
	/* live members: posts, no inbox entry; offline: one ACTIVITY each */
	cr_assert_eq(live_posts, 20);
	cr_assert_eq(inbox_last(&w, "alice"), alice0);
	cr_assert_eq(inbox_last(&w, "carol"), carol0 + 1);
	struct chat_rd_stats rs;
	chat_rd_get_stats(w.c, &rs);
	cr_assert_eq(rs.msgs, 10);
	cr_assert_eq(rs.activity, 3);   /* carol, dave, erin */
	cr_assert_eq(rs.coalesced, 27);
	cr_assert_eq(rs.outstanding, 3);
	/* carol's device acknowledges: the next message re-arms her only */
	chat_activity_acked(w.c, "carol", 5, g, strlen(g), 2);
	svc_send(w.c, g, "alice", 50);   /* seq 12 */
	settle(&w);
	cr_assert_eq(inbox_last(&w, "carol"), carol0 + 2);
	chat_rd_get_stats(w.c, &rs);
	cr_assert_eq(rs.activity, 4);
	/* remove erin at 13, then more messages */
	const char *rm[1] = {"erin"};
	cr_assert_eq(change(w.c, CHAT_GOP_REMOVE, g, "alice", rm, 1, &r), 0);
	uint64_t removed = r.seq;
	cr_assert_eq(removed, 13);
	svc_send(w.c, g, "bob", 60);     /* 14: 4 members now: still read */
	settle(&w);
	/* GROUP_CATCHUP: carol reads everything from 2, oldest first */
	static struct parley_msg m;
	cr_assert_eq(catchup(w.c, "carol", g, 2, 100, &m), 0);
	cr_assert_eq(m.type, PARLEY_T_GROUP_CATCHUP_OK);
	cr_assert_eq(m.history_page.count, 12); /* 2..12 and 14 */
	cr_assert_eq(m.history_page.msgs[0].seq, 2);
	cr_assert_eq(m.history_page.msgs[11].seq, 14);
	cr_assert(m.history_page.flags & PARLEY_HISTF_END);
	cr_assert_eq(m.history_page.next_before_seq, 15);
	/* a page in the middle: next and no END */
	cr_assert_eq(catchup(w.c, "carol", g, 3, 4, &m), 0);
	cr_assert_eq(m.history_page.count, 4);
	cr_assert_eq(m.history_page.next_before_seq, 7);
	cr_assert(!(m.history_page.flags & PARLEY_HISTF_END));
	/* erin (removed at 13): up to her removal, nothing after */
	cr_assert_eq(catchup(w.c, "erin", g, 2, 100, &m), 0);
	cr_assert_eq(m.history_page.count, 11);
	cr_assert_eq(m.history_page.msgs[10].seq, 12);
	cr_assert_eq(catchup(w.c, "erin", g, 14, 100, &m), -PARLEY_EPERM);
	/* never a member: PERM; not a group: NOTFOUND; bad args: INVAL */
	cr_assert_eq(catchup(w.c, "zed", g, 1, 10, &m), -PARLEY_EPERM);
	cr_assert_eq(catchup(w.c, "carol", "d:a:b", 1, 10, &m), -PARLEY_ENOTFOUND);
	cr_assert_eq(catchup(w.c, "carol", g, 0, 10, &m), -PARLEY_EINVAL);
	cr_assert_eq(catchup(w.c, "carol", g, 1, 0, &m), -PARLEY_EINVAL);
	/* retention removed 1..5: a window below it jumps to the first
	 * retained seq instead of paging through the gap */
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, g, strlen(g));
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(w.e, key, (size_t)kl, 5, &dr), 0);
	cr_assert_eq(dr.err, 0);
	cr_assert_eq(catchup(w.c, "carol", g, 2, 3, &m), 0);
	cr_assert_eq(m.history_page.count, 0);
	cr_assert_eq(m.history_page.next_before_seq, 6);
	cr_assert(!(m.history_page.flags & PARLEY_HISTF_END));
	cr_assert_eq(catchup(w.c, "carol", g, 6, 100, &m), 0);
	cr_assert_eq(m.history_page.msgs[0].seq, 6);
	world_stop(&w);
}

Test(chat_fanout_read, under_the_threshold_writes)
{
	struct world w;
	world_start(&w, 8);
	chat_set_group_read_min(w.c, 10);
	chat_set_live(w.c, fake_live, NULL);
	const char *mem[2] = {"bob", "carol"};
	struct chat_group_result r;
	cr_assert_eq(change(w.c, CHAT_GOP_CREATE, NULL, "alice", mem, 2, &r), 0);
	char g[32];
	memcpy(g, r.conv, r.conv_len);
	g[r.conv_len] = 0;
	settle(&w);
	uint64_t a0 = inbox_last(&w, "alice");
	for (int i = 0; i < 5; i++)
		svc_send(w.c, g, "alice", i);
	settle(&w);
	cr_assert_eq(inbox_last(&w, "alice"), a0 + 5); /* one pointer each */
	struct chat_rd_stats rs;
	chat_rd_get_stats(w.c, &rs);
	cr_assert_eq(rs.msgs, 0);
	world_stop(&w);
}

/* GROUP_CATCHUP on a node that holds no replica of the group's partition
 * (placement) is refused NOTLEADER at once, naming it (the gateway
 * forwards it to its leader); not read from this node's old copy.
 * Checked failing without route_read in chat_group_catchup (not refused
 * NOTLEADER). */
Test(chat_fanout_read, catchup_of_a_partition_not_held_is_refused)
{
	struct world w;
	world_start(&w, 9);
	chat_set_group_read_min(w.c, 2);
	const char *mem[2] = {"bob", "carol"};
	struct chat_group_result r;
	cr_assert_eq(change(w.c, CHAT_GOP_CREATE, NULL, "alice", mem, 2, &r), 0);
	char g[32], ck[CHAT_KEY_CAP];
	memcpy(g, r.conv, r.conv_len);
	g[r.conv_len] = 0;
	settle(&w);
	svc_send(w.c, g, "alice", 1);
	cr_assert_gt(chat_key_conv(ck, g, strlen(g)), 0);
	struct parley_msg m;
	cr_assert_eq(catchup(w.c, "bob", g, 1, 10, &m), 0);
	uint32_t p = world_not_held(&w, ck);
	cr_assert_eq(catchup(w.c, "bob", g, 1, 10, &m), -PARLEY_ENOTLEADER);
	cr_assert_eq(world_noted(), p);
	world_holds_all();
	world_stop(&w);
}

/* ---- live EVENTs across nodes (chat_set_live_relay, chat_rd_live_recv) ---- */

static struct {
	int n;              /* payloads relayed */
	uint8_t p[8192];    /* the last one */
	uint32_t len;
} relayed;

static void fake_relay(void *arg, uint64_t to, const uint8_t *p,
		       uint32_t len)
{
	(void)arg;
	cr_assert_eq(to, 0, "without a where hook: to every node");
	cr_assert_leq(len, sizeof relayed.p);
	memcpy(relayed.p, p, len);
	relayed.len = len;
	relayed.n++;
}

/* The other node: "carol" has two connections there, "dave" one. */
static char remote_seen[256];
static unsigned remote_live(void *arg, const char *user, size_t ulen,
			    const uint8_t *frame, uint32_t len)
{
	(void)arg;
	struct parley_frame f;
	cr_assert_eq(parley_proto_frame_decode(frame, len, len, &f), (int)len);
	struct parley_msg m;
	cr_assert_eq(parley_proto_decode(&f, &m), 0);
	cr_assert_eq(m.type, PARLEY_T_EVENT);
	cr_assert_eq(m.event.inbox_seq, 0);
	cr_assert_eq(m.event.kind, PARLEY_EV_MESSAGE);
	size_t k = strlen(remote_seen);
	snprintf(remote_seen + k, sizeof remote_seen - k, "%.*s,", (int)ulen,
		 user);
	if (ulen == 5 && !memcmp(user, "carol", 5))
		return 2;
	if (ulen == 4 && !memcmp(user, "dave", 4))
		return 1;
	return 0;
}

/* With a where hook: one payload per node that has a member online. */
static struct {
	int n;
	uint64_t to[8];
	uint8_t p[8][2048];
	uint32_t len[8];
} per_node;

static void node_relay(void *arg, uint64_t to, const uint8_t *p,
		       uint32_t len)
{
	(void)arg;
	cr_assert_lt(per_node.n, 8);
	cr_assert_leq(len, sizeof per_node.p[0]);
	per_node.to[per_node.n] = to;
	memcpy(per_node.p[per_node.n], p, len);
	per_node.len[per_node.n++] = len;
}

/* bob (posted here too) has a device on node 2; carol is on nodes 2 and
 * 3; dave on node 3; erin nowhere; node 4 has none of them. */
static unsigned fake_where(void *arg, const char *user, size_t ulen,
			   uint64_t *nodes, unsigned cap)
{
	(void)arg;
	cr_assert_geq(cap, 2);
	if (ulen == 3 && !memcmp(user, "bob", 3)) {
		nodes[0] = 2;
		return 1;
	}
	if (ulen == 5 && !memcmp(user, "carol", 5)) {
		nodes[0] = 3;
		nodes[1] = 2;
		return 2;
	}
	if (ulen == 4 && !memcmp(user, "dave", 4)) {
		nodes[0] = 3;
		nodes[1] = 3; /* a repeat names it once */
		return 2;
	}
	return 0;
}

/* The names of payload i, "a,b,". */
static void payload_names(int i, char *out, size_t cap)
{
	out[0] = '\0';
	uint32_t nu = le_get32(per_node.p[i]), off = CHAT_RD_LIVE_HDR;
	for (uint32_t k = 0; k < nu; k++) {
		size_t l = strlen(out);
		snprintf(out + l, cap - l, "%.*s,", per_node.p[i][off],
			 (const char *)per_node.p[i] + off + 1);
		off += 1u + per_node.p[i][off];
	}
}

Test(chat_fanout_read, live_relay_only_to_nodes_with_a_member_online)
{
	struct world w, other;
	world_start(&w, 11);
	world_start(&other, 12);
	chat_set_group_read_min(w.c, 4);
	chat_set_live(w.c, fake_live, NULL); /* alice, bob here */
	chat_set_live_relay(w.c, node_relay, NULL);
	chat_set_live_where(w.c, fake_where, NULL);
	chat_set_live(other.c, remote_live, NULL);
	const char *mem[4] = {"bob", "carol", "dave", "erin"};
	struct chat_group_result r;
	cr_assert_eq(change(w.c, CHAT_GOP_CREATE, NULL, "alice", mem, 4, &r), 0);
	char g[32];
	memcpy(g, r.conv, r.conv_len);
	g[r.conv_len] = 0;
	settle(&w);
	per_node.n = 0;
	svc_send(w.c, g, "alice", 1);
	settle(&w);
	cr_assert_eq(per_node.n, 2, "nodes 2 and 3 only, one payload each");
	char names[128];
	for (int i = 0; i < 2; i++) {
		payload_names(i, names, sizeof names);
		if (per_node.to[i] == 2)
			cr_assert_str_eq(names, "bob,carol,");
		else
			cr_assert(per_node.to[i] == 3 &&
				  !strcmp(names, "carol,dave,"),
				  "node %" PRIu64 ": %s", per_node.to[i], names);
	}
	/* the receiving side posts to its connections and counts the payload */
	remote_seen[0] = '\0';
	int k = per_node.to[0] == 3 ? 0 : 1;
	cr_assert_eq(chat_rd_live_recv(other.c, per_node.p[k], per_node.len[k]),
		     3);
	cr_assert_str_eq(remote_seen, "carol,dave,");
	struct chat_rd_stats rs;
	chat_rd_get_stats(other.c, &rs);
	cr_assert_eq(rs.live_in, 1);
	cr_assert_eq(rs.live_in_idle, 0);
	chat_rd_get_stats(w.c, &rs);
	cr_assert_eq(rs.relayed, 2);
	/* alice is the sender (no device elsewhere), erin online nowhere */
	cr_assert_eq(rs.relay_skipped, 2);
	cr_assert_eq(rs.activity, 3, "the ACTIVITY pointers stay the safety net");
	world_stop(&other);
	world_stop(&w);
}

Test(chat_fanout_read, live_events_reach_members_on_other_nodes)
{
	struct world w, other;
	world_start(&w, 9);
	world_start(&other, 10);
	chat_set_group_read_min(w.c, 4);
	chat_set_live(w.c, fake_live, NULL); /* alice, bob here */
	chat_set_live_relay(w.c, fake_relay, NULL);
	chat_set_live(other.c, remote_live, NULL);
	const char *mem[4] = {"bob", "carol", "dave", "erin"};
	struct chat_group_result r;
	cr_assert_eq(change(w.c, CHAT_GOP_CREATE, NULL, "alice", mem, 4, &r), 0);
	char g[32];
	memcpy(g, r.conv, r.conv_len);
	g[r.conv_len] = 0;
	settle(&w);
	relayed.n = 0; /* membership events keep write fan-out: no relay */
	svc_send(w.c, g, "alice", 1);
	settle(&w);
	cr_assert_eq(relayed.n, 1, "one LIVE payload per read-mode message");
	/* it names the members not posted here, in member order */
	cr_assert_eq(le_get32(relayed.p), 3);
	uint32_t off = CHAT_RD_LIVE_HDR;
	static const char *want[3] = {"carol", "dave", "erin"};
	for (int i = 0; i < 3; i++) {
		size_t ul = strlen(want[i]);
		cr_assert_eq(relayed.p[off], ul);
		cr_assert(!memcmp(relayed.p + off + 1, want[i], ul));
		off += 1u + (uint32_t)ul;
	}
	/* the other node posts the EVENT to its connections of them */
	remote_seen[0] = '\0';
	cr_assert_eq(chat_rd_live_recv(other.c, relayed.p, relayed.len), 3);
	cr_assert_str_eq(remote_seen, "carol,dave,erin,");
	struct chat_rd_stats rs;
	chat_rd_get_stats(other.c, &rs);
	cr_assert_eq(rs.live, 3);
	cr_assert_eq(rs.live_remote, 3);
	chat_rd_get_stats(w.c, &rs);
	cr_assert_eq(rs.relayed, 1);
	cr_assert_eq(rs.activity, 3, "the ACTIVITY pointers stay the safety net");
	/* bad payloads post nothing */
	remote_seen[0] = '\0';
	static uint8_t bad[8192];
	memcpy(bad, relayed.p, relayed.len);
	cr_assert_eq(chat_rd_live_recv(other.c, bad, 3), -PARLEY_EPROTO);
	cr_assert_eq(chat_rd_live_recv(other.c, bad, relayed.len - 1),
		     -PARLEY_EPROTO, "a cut EVENT frame");
	le_put32(bad, 4); /* one user more than the list holds */
	cr_assert_eq(chat_rd_live_recv(other.c, bad, relayed.len), -PARLEY_EPROTO);
	le_put32(bad, 3);
	bad[CHAT_RD_LIVE_HDR] = 0; /* an empty user id */
	cr_assert_eq(chat_rd_live_recv(other.c, bad, relayed.len), -PARLEY_EPROTO);
	bad[CHAT_RD_LIVE_HDR] = 200; /* runs past the end */
	cr_assert_eq(chat_rd_live_recv(other.c, bad, relayed.len), -PARLEY_EPROTO);
	le_put32(bad, 0xffffffffu);
	cr_assert_eq(chat_rd_live_recv(other.c, bad, relayed.len), -PARLEY_EPROTO);
	cr_assert_str_eq(remote_seen, "");
	world_stop(&other);
	world_stop(&w);
}
