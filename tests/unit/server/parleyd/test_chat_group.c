/*
 * test_chat_group.c — unit tests for server/chat_group.c on the in-memory
 * engine.
 *
 * What is proven:
 *   - the rules: who may add, remove, change roles; unknown members; the
 *     size limit; a retried CREATE names the same group; a retried ADD is
 *     a no-op; LEAVE of the owner hands ownership on;
 *   - membership is exact per seq: after a random sequence of changes
 *     (seeded), "member at seq s" and "role now" for every user and every
 *     seq are the same after the service is reopened (from the snapshots)
 *     and after the engine is reopened too;
 *   - a membership event whose fan-out (and snapshot) never ran — stored
 *     past the durable fan-out cursor, as after a crash — is replayed at
 *     open: memory has it and the new member's inbox gets its pointer;
 *   - a message stored after its sender's removal is refused at its seq
 *     and fanned out to nobody.
 *   - GROUP_SET (op SET): who may rename / change the history setting,
 *     bad values, a no-op stores nothing, the setting moves
 *     chat_member_visible_from at once, name and setting survive reopens
 *     and an unfanned SET is replayed;
 *   - chat_group_left: the seq that ended a membership and the members
 *     right after it, across role changes next to it and an owner's leave.
 * Randomized parts print their seed (PARLEY_SEED=<n> replays).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "chat.h"
#include "chat_group.h" /* chat_key_gsnap */
#include "chat_world.h"
#include "parley_proto.h"

static uint64_t seed_get(void)
{
	const char *s = getenv("PARLEY_SEED");
	uint64_t v = s ? strtoull(s, NULL, 0) : parley_now_ms();
	fprintf(stderr, "test_chat_group: seed=%llu\n", (unsigned long long)v);
	return v;
}

WAITER_FOR(gwait, struct chat_group_result)

/* One change, waited for. Returns its error; *out (optional) the result. */
static int change(struct chat *c, uint8_t op, const char *conv,
		  const char *actor, uint8_t role, const char *const *users,
		  uint32_t n, struct chat_group_result *out)
{
	struct chat_member m[64];
	for (uint32_t i = 0; i < n; i++)
		m[i] = (struct chat_member){users[i], strlen(users[i])};
	struct chat_group_req q = {.op = op, .conv = conv,
				   .conv_len = conv ? (uint16_t)strlen(conv) : 0,
				   .actor = actor,
				   .actor_len = (uint16_t)strlen(actor),
				   .name = "grp", .name_len = 3, .role = role,
				   .n = n, .users = m};
	memset(q.create_id, 7, 16);
	struct gwait x = {.w = WAITER_INIT};
	int rc = chat_group_change(c, &q, gwait_cb, &x, NULL);
	if (rc)
		return rc;
	waiter_wait(&x.w, 1);
	if (out)
		*out = x.r;
	return x.r.err;
}

/* A CREATE by owner with these members, waited for; the new group's id
 * into g (NUL-terminated), the result into *out (optional). */
static void create(struct chat *c, const char *owner, const char *const *users,
		   uint32_t n, char g[32], struct chat_group_result *out)
{
	struct chat_group_result r;
	cr_assert_eq(change(c, CHAT_GOP_CREATE, NULL, owner, 0, users, n, &r), 0);
	cr_assert_lt(r.conv_len, 32);
	memcpy(g, r.conv, r.conv_len);
	g[r.conv_len] = 0;
	if (out)
		*out = r;
}

static uint64_t send_msg(struct chat *c, const char *conv, const char *who,
			 int i, int *err)
{
	struct chat_send_req q = {.conv = conv, .conv_len = (uint16_t)strlen(conv),
				  .sender = who, .sender_len = (uint16_t)strlen(who),
				  .content_type = 1, .body = (const uint8_t *)"x",
				  .body_len = 1};
	memcpy(q.client_msg_id, &i, sizeof i);
	memcpy(q.client_msg_id + 8, who, PARLEY_MIN(strlen(who), 8u));
	struct chat_send_result r;
	*err = chat_send_sync(c, &q, &r);
	return r.seq;
}

/* Conversation seqs of conv in user's inbox, in order (n returned). */
static uint32_t inbox_seqs(struct world *w, const char *user, const char *conv,
			   uint64_t *out, uint32_t cap)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_inbox(key, user, strlen(user));
	struct pe_read_req q = {.key = key, .klen = (size_t)kl, .from = 1,
				.dir = PE_FORWARD, .limit = PE_MAX_READ};
	struct pe_entry *ents = NULL;
	uint32_t n = 0, k = 0;
	struct pe_read_result meta;
	cr_assert_eq(pe_read_sync(w->e, &q, &ents, &n, &meta), 0);
	for (uint32_t i = 0; i < n; i++) {
		struct chat_ptr p;
		cr_assert_eq(chat_ptr_decode(ents[i].payload, ents[i].len, &p), 0);
		if (p.conv_len == strlen(conv) && !memcmp(p.conv, conv, p.conv_len) &&
		    k < cap)
			out[k++] = p.conv_seq;
	}
	free(ents);
	return k;
}

Test(chat_group, rules)
{
	struct world w = {.io = pio_mem_new(11)};
	world_open(&w, 8);
	struct chat *c = w.c;
	struct chat_group_result r;
	char g[32];
	create(c, "alice", (const char *[]){"bob", "carol"}, 2, g, &r);
	cr_assert(chat_conv_is_group(g, strlen(g)));
	cr_assert_eq(r.seq, 1);
	/* the same create id: the same group, nothing new */
	cr_assert_eq(change(c, CHAT_GOP_CREATE, NULL, "alice", 0,
			    (const char *[]){"bob", "carol"}, 2, &r), 0);
	cr_assert(r.duplicate && r.seq == 1 && !memcmp(r.conv, g, strlen(g)));
	cr_assert_eq(chat_member_role(c, g, strlen(g), "alice", 5), CHAT_ROLE_OWNER);
	cr_assert_eq(chat_member_role(c, g, strlen(g), "bob", 3), CHAT_ROLE_MEMBER);
	cr_assert_eq(chat_member_role(c, g, strlen(g), "dave", 4), CHAT_ROLE_NONE);
	cr_assert_eq(chat_member_role(c, "g:0000000000000000", 18, "bob", 3),
		     -PARLEY_ENOTFOUND);
	/* a member may not add, remove or change roles */
	cr_assert_eq(change(c, CHAT_GOP_ADD, g, "bob", 0, (const char *[]){"dave"},
			    1, NULL), -PARLEY_EPERM);
	cr_assert_eq(change(c, CHAT_GOP_REMOVE, g, "bob", 0,
			    (const char *[]){"carol"}, 1, NULL), -PARLEY_EPERM);
	cr_assert_eq(change(c, CHAT_GOP_ROLE, g, "bob", CHAT_ROLE_ADMIN,
			    (const char *[]){"bob"}, 1, NULL), -PARLEY_EPERM);
	/* non-members may do nothing; unknown members are not found */
	cr_assert_eq(change(c, CHAT_GOP_LEAVE, g, "dave", 0, NULL, 0, NULL),
		     -PARLEY_EPERM);
	cr_assert_eq(change(c, CHAT_GOP_REMOVE, g, "alice", 0,
			    (const char *[]){"zed"}, 1, NULL), -PARLEY_ENOTFOUND);
	cr_assert_eq(change(c, CHAT_GOP_ADD, g, "alice", 0,
			    (const char *[]){"bad id"}, 1, NULL), -PARLEY_EINVAL);
	/* admin: adds members, not admins; removes members, not the owner */
	cr_assert_eq(change(c, CHAT_GOP_ROLE, g, "alice", CHAT_ROLE_ADMIN,
			    (const char *[]){"bob"}, 1, &r), 0);
	uint64_t promoted = r.seq;
	cr_assert_eq(change(c, CHAT_GOP_ADD, g, "bob", CHAT_ROLE_ADMIN,
			    (const char *[]){"dave"}, 1, NULL), -PARLEY_EPERM);
	cr_assert_eq(change(c, CHAT_GOP_ADD, g, "bob", 0, (const char *[]){"dave"},
			    1, &r), 0);
	uint64_t dave_in = r.seq;
	cr_assert_eq(change(c, CHAT_GOP_ADD, g, "bob", 0, (const char *[]){"dave"},
			    1, &r), 0);
	cr_assert(r.duplicate && r.seq == dave_in, "a retried ADD is a no-op");
	cr_assert_eq(change(c, CHAT_GOP_REMOVE, g, "bob", 0,
			    (const char *[]){"alice"}, 1, NULL), -PARLEY_EPERM);
	/* size limit */
	chat_set_group_max(c, 4);
	cr_assert_eq(change(c, CHAT_GOP_ADD, g, "alice", 0, (const char *[]){"eve"},
			    1, NULL), -PARLEY_ETOOBIG);
	chat_set_group_max(c, CHAT_GROUP_MAX_DEFAULT);
	/* from join: dave reads from his ADD on; bob from the start (his
	 * promotion split his membership without a gap) */
	cr_assert_eq(chat_member_visible_from(c, g, strlen(g), "dave", 4), dave_in);
	cr_assert_eq(chat_member_visible_from(c, g, strlen(g), "bob", 3), 1);
	cr_assert(chat_member_at(c, g, strlen(g), "bob", 3, promoted - 1));
	cr_assert(chat_member_at(c, g, strlen(g), "bob", 3, promoted));
	cr_assert(!chat_member_at(c, g, strlen(g), "dave", 4, dave_in - 1));
	/* the owner leaves: the earliest admin (bob) owns the group */
	cr_assert_eq(change(c, CHAT_GOP_LEAVE, g, "alice", 0, NULL, 0, NULL), 0);
	cr_assert_eq(chat_member_role(c, g, strlen(g), "bob", 3), CHAT_ROLE_OWNER);
	cr_assert_eq(chat_member_role(c, g, strlen(g), "alice", 5), CHAT_ROLE_NONE);
	int err;
	send_msg(c, g, "alice", 1, &err);
	cr_assert_eq(err, -PARLEY_EPERM);
	struct chat_group_meta gm;
	cr_assert_eq(chat_group_meta(c, g, strlen(g), &gm), 0);
	cr_assert_eq(gm.member_count, 3);
	world_close(&w);
	pio_free(w.io);
}

#define NUSERS 12
#define NOPS 80

static const char *uname(int i)
{
	static char names[NUSERS][8];
	snprintf(names[i], sizeof names[i], "u%02d", i);
	return names[i];
}

/* Every user's membership at every seq, and role now. */
static void snapshot_answers(struct chat *c, const char *g, uint64_t last,
			     uint8_t *at, int *role)
{
	for (int u = 0; u < NUSERS; u++) {
		role[u] = chat_member_role(c, g, strlen(g), uname(u), strlen(uname(u)));
		for (uint64_t s = 1; s <= last; s++)
			at[u * (last + 1) + s] = chat_member_at(c, g, strlen(g), uname(u),
								strlen(uname(u)), s);
	}
}

Test(chat_group, membership_survives_reopen)
{
	uint64_t seed = seed_get();
	struct parley_rng rng = {seed};
	struct world w = {.io = pio_mem_new(seed)};
	world_open(&w, 8);
	struct chat_group_result r;
	char g[32];
	create(w.c, uname(0), (const char *[]){uname(1), uname(2)}, 2, g, &r);
	uint64_t last = 1;
	int msgs = 0;
	for (int i = 0; i < NOPS; i++) {
		/* mostly members acting (else every change is just refused) */
		int mem[NUSERS], nm = 0, adm[NUSERS], na = 0;
		for (int u = 0; u < NUSERS; u++) {
			int ro = chat_member_role(w.c, g, strlen(g), uname(u), 3);
			if (ro > 0)
				mem[nm++] = u;
			if (ro >= CHAT_ROLE_ADMIN)
				adm[na++] = u;
		}
		if (nm == 0)
			break; /* everyone left */
		uint64_t x = parley_rng_below(&rng, 100);
		int actor = x % 10 == 0 ? (int)parley_rng_below(&rng, NUSERS)
			    : x < 40	? mem[parley_rng_below(&rng, (uint64_t)nm)]
			    : na	? adm[parley_rng_below(&rng, (uint64_t)na)]
					: mem[0];
		int target = (int)parley_rng_below(&rng, NUSERS);
		uint8_t op = x < 40 ? 6 : x < 62 ? CHAT_GOP_ADD : x < 80 ? CHAT_GOP_REMOVE
			     : x < 96 ? CHAT_GOP_ROLE : CHAT_GOP_LEAVE;
		int rc;
		if (op == 6) { /* a message */
			uint64_t s = send_msg(w.c, g, uname(actor), i, &rc);
			if (!rc) {
				last = s;
				msgs++;
			}
			continue;
		}
		uint8_t role = (uint8_t)(1 + parley_rng_below(&rng, 3));
		const char *t[1] = {uname(target)};
		rc = change(w.c, op, g, uname(actor),
			    op == CHAT_GOP_ADD ? (role == 3 ? 1 : role) : role,
			    op == CHAT_GOP_LEAVE ? NULL : t,
			    op == CHAT_GOP_LEAVE ? 0 : 1, &r);
		if (!rc && !r.duplicate)
			last = r.seq;
	}
	uint8_t *at0 = calloc(NUSERS * (last + 1), 1);
	uint8_t *at1 = calloc(NUSERS * (last + 1), 1);
	int role0[NUSERS], role1[NUSERS];
	snapshot_answers(w.c, g, last, at0, role0);
	/* the service alone, then engine and service */
	chat_close(w.c);
	cr_assert_eq(chat_open(w.e, &w.clock, &w.c), 0);
	snapshot_answers(w.c, g, last, at1, role1);
	cr_assert(!memcmp(role0, role1, sizeof role0), "roles differ after reopen");
	for (int u = 0; u < NUSERS; u++)
		for (uint64_t s = 1; s <= last; s++)
			cr_assert_eq(at0[u * (last + 1) + s], at1[u * (last + 1) + s],
				     "%s at seq %llu differs after reopen (seed %llu)",
				     uname(u), (unsigned long long)s,
				     (unsigned long long)seed);
	world_close(&w);
	world_open(&w, 8);
	memset(at1, 0, NUSERS * (last + 1));
	snapshot_answers(w.c, g, last, at1, role1);
	cr_assert(!memcmp(role0, role1, sizeof role0));
	cr_assert(!memcmp(at0, at1, NUSERS * (last + 1)),
		  "membership differs after an engine reopen (seed %llu)",
		  (unsigned long long)seed);
	/* every member's inbox holds exactly the seqs they were members at */
	for (int u = 0; u < NUSERS; u++) {
		uint64_t got[1024];
		uint32_t n = inbox_seqs(&w, uname(u), g, got, 1024);
		uint32_t k = 0;
		for (uint64_t s = 1; s <= last; s++) {
			if (!at0[u * (last + 1) + s])
				continue;
			cr_assert(k < n && got[k] == s, "%s: seq %llu missing or out of "
				  "order (seed %llu)", uname(u), (unsigned long long)s,
				  (unsigned long long)seed);
			k++;
		}
		cr_assert_eq(k, n, "%s: %u inbox entries, %u expected", uname(u), n, k);
	}
	fprintf(stderr, "test_chat_group: %llu seqs, %d messages\n",
		(unsigned long long)last, msgs);
	free(at0);
	free(at1);
	world_close(&w);
	pio_free(w.io);
}

/* A membership event stored, durable, but never fanned out (the process
 * died right after): the next open replays it from c/<conv> and fans it
 * out. */
Test(chat_group, unfanned_event_replayed_at_open)
{
	struct world w = {.io = pio_mem_new(5)};
	world_open(&w, 8);
	char g[32];
	create(w.c, "alice", (const char *[]){"bob"}, 1, g, NULL);
	chat_close(w.c); /* checkpoint: everything so far is fanned out */
	/* ADD zoe by alice, appended as the service would, with no fan-out */
	uint8_t rec[64];
	size_t n = 0;
	rec[n++] = 1;               /* version */
	rec[n++] = CHAT_GOP_ADD;
	rec[n++] = 0;               /* settings */
	rec[n++] = 5;
	memcpy(rec + n, "alice", 5);
	n += 5;
	rec[n++] = 0;               /* name: empty */
	rec[n++] = 0;
	rec[n++] = 1;               /* one user */
	rec[n++] = 0;
	rec[n++] = 3;
	memcpy(rec + n, "zoe", 3);
	n += 3;
	rec[n++] = CHAT_ROLE_MEMBER;
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, g, strlen(g));
	struct pe_input in = {.type = CHAT_ENT_MEMBER, .len = (uint32_t)n,
			      .payload = rec};
	struct pe_append_req q = {.key = key, .klen = (size_t)kl,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	struct pe_append_result ar;
	cr_assert_eq(pe_append_sync(w.e, &q, &ar), 0);
	cr_assert_eq(ar.seq, 2);
	pe_close(w.e);
	world_open(&w, 8);
	cr_assert_eq(chat_member_role(w.c, g, strlen(g), "zoe", 3), CHAT_ROLE_MEMBER);
	cr_assert_eq(chat_member_visible_from(w.c, g, strlen(g), "zoe", 3), 2);
	chat_close(w.c); /* waits for the recovered fan-out */
	uint64_t got[8];
	cr_assert_eq(inbox_seqs(&w, "zoe", g, got, 8), 1);
	cr_assert_eq(got[0], 2);
	cr_assert_eq(inbox_seqs(&w, "bob", g, got, 8), 2);
	cr_assert_eq(chat_open(w.e, &w.clock, &w.c), 0); /* and from the snapshot */
	cr_assert_eq(chat_member_role(w.c, g, strlen(g), "zoe", 3), CHAT_ROLE_MEMBER);
	world_close(&w);
	pio_free(w.io);
}

/* GROUP_SET through chat_group_change (op SET). */
static int gset(struct chat *c, const char *conv, const char *actor,
		uint8_t fields, const char *name, uint8_t settings,
		struct chat_group_result *out)
{
	struct chat_group_req q = {.op = CHAT_GOP_SET, .conv = conv,
				   .conv_len = (uint16_t)strlen(conv),
				   .actor = actor,
				   .actor_len = (uint16_t)strlen(actor),
				   .set_fields = fields, .name = name,
				   .name_len = name ? (uint16_t)strlen(name) : 0,
				   .settings = settings};
	struct gwait x = {.w = WAITER_INIT};
	int rc = chat_group_change(c, &q, gwait_cb, &x, NULL);
	if (rc)
		return rc;
	waiter_wait(&x.w, 1);
	if (out)
		*out = x.r;
	return x.r.err;
}

static void meta_is(struct chat *c, const char *g, const char *name,
		    uint8_t settings)
{
	struct chat_group_meta m;
	cr_assert_eq(chat_group_meta(c, g, strlen(g), &m), 0);
	cr_assert(m.name_len == strlen(name) && !memcmp(m.name, name, m.name_len),
		  "name %.*s, want %s", (int)m.name_len, m.name, name);
	cr_assert_eq(m.settings, settings);
}

/* Who may rename / change the history setting; a no-op stores nothing;
 * the setting decides chat_member_visible_from at once; the name and the
 * setting survive a reopen of the service (snapshot) and of the engine,
 * and a SET stored past the fan-out cursor (no snapshot) is replayed. */
Test(chat_group, set_rules_and_reopen)
{
	struct world w = {.io = pio_mem_new(17)};
	world_open(&w, 8);
	struct chat_group_result r;
	char g[32];
	create(w.c, "alice", (const char *[]){"bob", "carol"}, 2, g, NULL);
	cr_assert_eq(change(w.c, CHAT_GOP_ROLE, g, "alice", CHAT_ROLE_ADMIN,
			    (const char *[]){"bob"}, 1, NULL), 0);
	cr_assert_eq(gset(w.c, g, "carol", PARLEY_GSET_NAME, "x", 0, NULL),
		     -PARLEY_EPERM, "a plain member renames");
	cr_assert_eq(gset(w.c, g, "bob", PARLEY_GSET_SETTINGS, NULL,
			  CHAT_GROUP_HISTORY_ALL, NULL), -PARLEY_EPERM);
	cr_assert_eq(gset(w.c, g, "bob", PARLEY_GSET_NAME | PARLEY_GSET_SETTINGS,
			  "x", CHAT_GROUP_HISTORY_ALL, NULL), -PARLEY_EPERM,
		     "both need both rights");
	cr_assert_eq(gset(w.c, g, "zed", PARLEY_GSET_NAME, "x", 0, NULL),
		     -PARLEY_EPERM, "a non-member");
	cr_assert_eq(gset(w.c, "g:0000000000000000", "alice", PARLEY_GSET_NAME,
			  "x", 0, NULL), -PARLEY_ENOTFOUND);
	cr_assert_eq(gset(w.c, g, "alice", 0, NULL, 0, NULL), -PARLEY_EINVAL);
	cr_assert_eq(gset(w.c, g, "alice", PARLEY_GSET_NAME, "", 0, NULL),
		     -PARLEY_EINVAL);
	cr_assert_eq(gset(w.c, g, "alice", PARLEY_GSET_NAME, "\xff", 0, NULL),
		     -PARLEY_EINVAL, "not UTF-8");
	cr_assert_eq(gset(w.c, g, "alice", PARLEY_GSET_SETTINGS, NULL, 0x02, NULL),
		     -PARLEY_EINVAL);
	meta_is(w.c, g, "grp", 0);
	cr_assert_eq(gset(w.c, g, "bob", PARLEY_GSET_NAME, "Renamed", 0, &r), 0);
	uint64_t ren = r.seq;
	cr_assert(ren == 3 && !r.duplicate);
	cr_assert_eq(gset(w.c, g, "bob", PARLEY_GSET_NAME, "Renamed", 0, &r), 0);
	cr_assert(r.duplicate && r.seq == ren, "a no-op: nothing stored");
	cr_assert_eq(change(w.c, CHAT_GOP_ADD, g, "alice", 0,
			    (const char *[]){"dave"}, 1, &r), 0);
	uint64_t join = r.seq;
	cr_assert_eq(chat_member_visible_from(w.c, g, strlen(g), "dave", 4), join);
	cr_assert_eq(gset(w.c, g, "alice", PARLEY_GSET_SETTINGS, NULL,
			  CHAT_GROUP_HISTORY_ALL, NULL), 0);
	cr_assert_eq(chat_member_visible_from(w.c, g, strlen(g), "dave", 4), 1);
	meta_is(w.c, g, "Renamed", CHAT_GROUP_HISTORY_ALL);
	cr_assert_eq(chat_member_role(w.c, g, strlen(g), "bob", 3), CHAT_ROLE_ADMIN,
		     "roles untouched");

	chat_close(w.c); /* from the snapshot */
	cr_assert_eq(chat_open(w.e, &w.clock, &w.c), 0);
	meta_is(w.c, g, "Renamed", CHAT_GROUP_HISTORY_ALL);
	cr_assert_eq(chat_member_visible_from(w.c, g, strlen(g), "dave", 4), 1);
	/* a SET by alice (back to "from join", renamed) stored with no
	 * fan-out, as if the process died before it: replayed at open */
	chat_close(w.c);
	uint8_t rec[64];
	size_t n = 0;
	rec[n++] = 1;
	rec[n++] = CHAT_GOP_SET;
	rec[n++] = CHAT_GEV_SET_NAME | CHAT_GEV_SET_SETTINGS; /* settings 0 */
	rec[n++] = 5;
	memcpy(rec + n, "alice", 5);
	n += 5;
	rec[n++] = 4;
	rec[n++] = 0;
	memcpy(rec + n, "Last", 4);
	n += 4;
	rec[n++] = 0;
	rec[n++] = 0;
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, g, strlen(g));
	struct pe_input in = {.type = CHAT_ENT_MEMBER, .len = (uint32_t)n,
			      .payload = rec};
	struct pe_append_req q = {.key = key, .klen = (size_t)kl,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	struct pe_append_result ar;
	cr_assert_eq(pe_append_sync(w.e, &q, &ar), 0);
	pe_close(w.e);
	world_open(&w, 8);
	meta_is(w.c, g, "Last", 0);
	cr_assert_eq(chat_member_visible_from(w.c, g, strlen(g), "dave", 4), join);
	world_close(&w);
	world_open(&w, 8); /* and from its snapshot, written by the recovery */
	meta_is(w.c, g, "Last", 0);
	struct chat_group_meta m;
	cr_assert_eq(chat_group_meta(w.c, g, strlen(g), &m), 0);
	cr_assert_eq(m.as_of, ar.seq);
	world_close(&w);
	pio_free(w.io);
}

/* chat_group_left: the seq that ended a user's last membership and the
 * members right after it, exact across role changes next to it. */
Test(chat_group, left_seq_and_members_after)
{
	struct world w = {.io = pio_mem_new(19)};
	world_open(&w, 8);
	struct chat_group_result r;
	char g[32];
	create(w.c, "alice", (const char *[]){"bob", "carol", "dave"}, 3, g, NULL);
	uint64_t seq, vis = 0;
	uint32_t members;
	size_t gl = strlen(g);
	cr_assert_eq(chat_group_left(w.c, g, gl, "bob", 3, &seq, &members, &vis), 0);
	cr_assert_eq(chat_group_left(w.c, g, gl, "zed", 3, &seq, &members, &vis),
		     -PARLEY_ENOTFOUND);
	cr_assert_eq(change(w.c, CHAT_GOP_REMOVE, g, "alice", 0,
			    (const char *[]){"dave"}, 1, &r), 0);
	uint64_t rm = r.seq;
	/* a role change right after: bob's interval splits at rm */
	cr_assert_eq(change(w.c, CHAT_GOP_ROLE, g, "alice", CHAT_ROLE_ADMIN,
			    (const char *[]){"bob"}, 1, NULL), 0);
	cr_assert_eq(chat_group_left(w.c, g, gl, "dave", 4, &seq, &members, &vis), 1);
	cr_assert(seq == rm && members == 3, "seq %llu members %u",
		  (unsigned long long)seq, members);
	cr_assert_eq(vis, 1, "a founding member's membership began at 1");
	/* the owner leaves: bob inherits in the same event */
	cr_assert_eq(change(w.c, CHAT_GOP_LEAVE, g, "alice", 0, NULL, 0, &r), 0);
	cr_assert_eq(chat_group_left(w.c, g, gl, "alice", 5, &seq, &members, &vis), 1);
	cr_assert(seq == r.seq && members == 2, "members %u", members);
	uint64_t left = r.seq;
	/* the same answers from the stored snapshot (what a follower uses) */
	chat_close(w.c); /* every fan-out (and snapshot) is durable */
	char key[CHAT_KEY_CAP];
	int kl = chat_key_gsnap(key, g, gl);
	struct pe_read_req q = {.key = key, .klen = (size_t)kl, .from = UINT64_MAX,
				.dir = PE_BACKWARD, .limit = 1};
	struct pe_entry *ents = NULL;
	uint32_t ne = 0;
	struct pe_read_result meta;
	cr_assert_eq(pe_read_sync(w.e, &q, &ents, &ne, &meta), 0);
	cr_assert(ne == 1 && ents[0].type == CHAT_ENT_GSNAP);
	struct chat_gsnap_view v;
	cr_assert_eq(chat_gsnap_view(ents[0].payload, ents[0].len, "dave", 4, &v), 0);
	cr_assert(v.left_seq == rm && v.members == 3, "dave: left %llu members %u",
		  (unsigned long long)v.left_seq, v.members);
	cr_assert_eq(v.vis_from, 1);
	cr_assert(v.name_len == 3 && !memcmp(v.name, "grp", 3) && v.as_of == left);
	cr_assert_eq(chat_gsnap_view(ents[0].payload, ents[0].len, "alice", 5, &v), 0);
	cr_assert(v.left_seq == left && v.members == 2);
	cr_assert_eq(chat_gsnap_view(ents[0].payload, ents[0].len, "bob", 3, &v), 0);
	cr_assert(v.left_seq == 0 && v.members == 2, "bob: a member of 2");
	cr_assert_eq(v.vis_from, 1, "bob's run spans his role changes");
	cr_assert_eq(chat_gsnap_view(ents[0].payload, ents[0].len, "zed", 3, &v),
		     -PARLEY_ENOTFOUND);
	cr_assert_eq(chat_gsnap_view(ents[0].payload, ents[0].len - 1, "bob", 3, &v),
		     -PARLEY_ECORRUPT);
	free(ents);
	cr_assert_eq(chat_open(w.e, &w.clock, &w.c), 0);
	/* back again: a member, reading from the new join ("from join") */
	cr_assert_eq(change(w.c, CHAT_GOP_ADD, g, "bob", 0,
			    (const char *[]){"dave"}, 1, &r), 0);
	cr_assert_eq(chat_group_left(w.c, g, gl, "dave", 4, &seq, &members, &vis), 0);
	cr_assert_eq(vis, r.seq);
	world_close(&w);
	pio_free(w.io);
}

/* A SEND checked while its sender was a member but stored after their
 * removal: refused at its seq, fanned out to nobody. Simulated by storing
 * the message record directly after the removal. */
Test(chat_group, send_after_removal_is_refused_at_its_seq)
{
	struct world w = {.io = pio_mem_new(6)};
	world_open(&w, 8);
	struct chat_group_result r;
	char g[32];
	create(w.c, "alice", (const char *[]){"bob", "carol"}, 2, g, &r);
	int err;
	cr_assert_eq(send_msg(w.c, g, "bob", 1, &err), 2);
	cr_assert_eq(err, 0);
	cr_assert_eq(change(w.c, CHAT_GOP_REMOVE, g, "alice", 0,
			    (const char *[]){"bob"}, 1, &r), 0);
	cr_assert_eq(r.seq, 3);
	send_msg(w.c, g, "bob", 2, &err);
	cr_assert_eq(err, -PARLEY_EPERM); /* the check before storing */
	/* a message of bob's stored at seq 4 anyway (the race) */
	struct chat_msg m = {.sender = "bob", .sender_len = 3, .body = (const uint8_t *)"late",
			     .body_len = 4};
	uint8_t rec[64];
	int n = chat_msg_encode(rec, sizeof rec, &m);
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, g, strlen(g));
	struct pe_input in = {.type = CHAT_ENT_MSG, .len = (uint32_t)n, .payload = rec};
	struct pe_append_req q = {.key = key, .klen = (size_t)kl,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	struct pe_append_result ar;
	chat_close(w.c);
	cr_assert_eq(pe_append_sync(w.e, &q, &ar), 0);
	cr_assert_eq(ar.seq, 4);
	pe_close(w.e);
	world_open(&w, 8); /* recovery re-fans out seq 4: to nobody */
	cr_assert(!chat_member_at(w.c, g, strlen(g), "bob", 3, 4));
	chat_close(w.c);
	uint64_t got[8];
	cr_assert_eq(inbox_seqs(&w, "carol", g, got, 8), 3); /* 1, 2, 3 */
	cr_assert_eq(got[2], 3);
	cr_assert_eq(inbox_seqs(&w, "bob", g, got, 8), 3); /* 1, 2 and his removal */
	pe_close(w.e);
	pio_free(w.io);
}

WAITER_FOR(swait, struct chat_send_result)

/* The race itself: the REMOVE is issued, then bob's SEND at once (its check
 * before storing almost always still sees bob as a member): the SEND lands
 * after the removal in the stream and is refused at its seq. Either way
 * bob's SEND fails with PERM and reaches nobody. */
Test(chat_group, send_racing_its_senders_removal)
{
	struct world w = {.io = pio_mem_new(8)};
	world_open(&w, 8);
	char g[32];
	create(w.c, "alice", (const char *[]){"bob", "carol"}, 2, g, NULL);
	struct chat_member bob = {"bob", 3};
	struct chat_group_req q = {.op = CHAT_GOP_REMOVE, .conv = g,
				   .conv_len = (uint16_t)strlen(g), .actor = "alice",
				   .actor_len = 5, .n = 1, .users = &bob};
	struct gwait gw = {.w = WAITER_INIT};
	struct swait sw = {.w = WAITER_INIT};
	cr_assert_eq(chat_group_change(w.c, &q, gwait_cb, &gw, NULL), 0);
	struct chat_send_req sq = {.conv = g, .conv_len = (uint16_t)strlen(g),
				   .sender = "bob", .sender_len = 3,
				   .content_type = 1, .body = (const uint8_t *)"late",
				   .body_len = 4};
	sq.client_msg_id[0] = 42;
	int rc = chat_send(w.c, &sq, swait_cb, &sw);
	bool raced = rc == 0;
	if (raced) {
		waiter_wait(&sw.w, 1);
		rc = sw.r.err;
	}
	cr_assert_eq(rc, -PARLEY_EPERM);
	waiter_wait(&gw.w, 1);
	cr_assert_eq(gw.r.err, 0);
	struct chat_stats st;
	chat_get_stats(w.c, &st);
	cr_assert_eq(st.group_refused, raced ? 1 : 0);
	fprintf(stderr, "test_chat_group: the send %s\n",
		raced ? "was stored after the removal and refused at its seq"
		      : "was refused before storing (the removal was applied first)");
	chat_close(w.c);
	uint64_t got[8];
	cr_assert_eq(inbox_seqs(&w, "carol", g, got, 8), 2); /* create, removal */
	cr_assert_eq(inbox_seqs(&w, "bob", g, got, 8), 2);
	cr_assert(chat_open(w.e, &w.clock, &w.c) == 0);
	world_close(&w);
	pio_free(w.io);
}
