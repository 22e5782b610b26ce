/*
 * test_presence.c — the pure core of server/presence.c with injected
 * time: sessions and the online state (any device online, TTL expiry,
 * last_seen = the last heartbeat), what a subscriber sees (hidden,
 * unknown setting), lazy last_seen writes, typing coalescing, expiry and
 * the per-user bound; and the running registry's relay across nodes on
 * the in-memory engine (set generations, SET_END, the repair set).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "chat_world.h"
#include "presence.h"
#include "presence_relay.h"
#include "srv.h"

#define MS 1000000ull
#define TTL (60000 * MS)

static struct pres_user *user(void)
{
	struct pres_user *u = calloc(1, sizeof *u);
	cr_assert(u);
	strcpy(u->user, "alice");
	u->ulen = 5;
	return u;
}

static struct conn_ref peer(uint32_t slot)
{
	return (struct conn_ref){(struct loop *)0x1000, slot, 7};
}

Test(presence, online_while_any_device_is)
{
	struct pres_user *u = user();
	uint64_t t = 1000 * MS;
	cr_assert_eq(pres_sess_add(u, peer(1), t, 5000), 0);
	cr_assert_eq(pres_user_update(u, t, TTL), 1);
	cr_assert_eq(pres_sess_add(u, peer(2), t + MS, 5001), 0);
	cr_assert_eq(pres_user_update(u, t + MS, TTL), 0); /* still online */
	cr_assert(pres_sess_del(u, peer(1), 6000));
	cr_assert_eq(pres_user_update(u, t + 2 * MS, TTL), 0);
	cr_assert(!pres_sess_del(u, peer(1), 6000)); /* only once */
	cr_assert(pres_sess_del(u, peer(2), 7000));
	cr_assert_eq(pres_user_update(u, t + 3 * MS, TTL), -1);
	cr_assert_eq(u->last_seen_ms, 7000); /* when the last device left */
	cr_assert(u->dirty);
	pres_user_free(u);
}

Test(presence, ttl_expiry_uses_last_heartbeat)
{
	struct pres_user *u = user();
	uint64_t t = 1000 * MS;
	pres_sess_add(u, peer(1), t, 10000);
	cr_assert_eq(pres_user_update(u, t, TTL), 1);
	cr_assert(pres_sess_beat(u, peer(1), t + 20000 * MS, 30000));
	/* just before the TTL after the last beat: online */
	cr_assert_eq(pres_user_update(u, t + 20000 * MS + TTL - 1, TTL), 0);
	cr_assert(u->online);
	/* at the TTL: offline, last_seen = the beat's wall time */
	cr_assert_eq(pres_user_update(u, t + 20000 * MS + TTL, TTL), -1);
	cr_assert_eq(u->last_seen_ms, 30000);
	/* a beat from the silent (still connected) device: online again */
	cr_assert(pres_sess_beat(u, peer(1), t + 100000 * MS, 110000));
	cr_assert_eq(pres_user_update(u, t + 100000 * MS, TTL), 1);
	cr_assert(!pres_sess_beat(u, peer(9), t, 0)); /* unknown session */
	pres_user_free(u);
}

/* The sweep reads its clock before taking the shard lock; a login on a
 * loop thread between that read and the lock adds a session whose beat is
 * newer than the sweep's now. CI once saw carol get ONLINE, OFFLINE,
 * ONLINE for one login: the unsigned now - hb wrapped. */
Test(presence, beat_newer_than_now_is_alive)
{
	struct pres_user *u = user();
	uint64_t t = 1000 * MS;
	pres_sess_add(u, peer(1), t + 5 * MS, 10000);
	cr_assert_eq(pres_user_update(u, t + 5 * MS, TTL), 1);
	cr_assert_eq(pres_user_update(u, t, TTL), 0); /* the sweep's older now */
	cr_assert(u->online);
	cr_assert(!u->dirty);
	/* a beat after the stale read, on a user not yet marked online */
	struct pres_user *v = user();
	pres_sess_add(v, peer(2), t + 5 * MS, 10000);
	cr_assert_eq(pres_user_update(v, t, TTL), 1);
	pres_user_free(u);
	pres_user_free(v);
}

Test(presence, view_hides_last_seen)
{
	struct pres_user *u = user();
	uint8_t st;
	uint64_t ls;
	u->last_seen_ms = 1234;
	pres_user_view(u, &st, &ls);
	cr_assert_eq(st, PARLEY_PRESENCE_OFFLINE);
	cr_assert_eq(ls, 0, "setting not known yet: nothing shown");
	u->loaded_set = true;
	pres_user_view(u, &st, &ls);
	cr_assert_eq(ls, 1234);
	u->hidden = true;
	pres_user_view(u, &st, &ls);
	cr_assert_eq(ls, 0);
	u->hidden = false;
	u->online = true;
	pres_user_view(u, &st, &ls);
	cr_assert_eq(st, PARLEY_PRESENCE_ONLINE);
	cr_assert_eq(ls, 0);
	pres_user_free(u);
}

Test(presence, last_seen_written_lazily)
{
	struct pres_user *u = user();
	uint64_t v = 0, every = 300000;
	uint64_t t = 1000 * MS;
	pres_sess_add(u, peer(1), t, 1000000);
	pres_user_update(u, t, TTL);
	u->written_ms = 1000000;
	/* heartbeats do not make writes due */
	for (int i = 1; i < 100; i++) {
		pres_sess_beat(u, peer(1), t + (uint64_t)i * 1000 * MS,
			       1000000 + (uint64_t)i * 1000);
		cr_assert(!pres_user_write_due(u, 1000000 + (uint64_t)i * 1000,
					       every, &v));
	}
	/* every `every` ms while online, with the time of the write */
	cr_assert(pres_user_write_due(u, 1300000, every, &v));
	cr_assert_eq(v, 1300000);
	u->written_ms = 1300000;
	/* going offline: due at once, with the last heartbeat's time */
	pres_sess_del(u, peer(1), 1350000);
	cr_assert_eq(pres_user_update(u, t + 400000 * MS, TTL), -1);
	cr_assert(pres_user_write_due(u, 1350001, every, &v));
	cr_assert_eq(v, 1350000);
	u->dirty = false; /* written */
	cr_assert(!pres_user_write_due(u, 9999999, every, &v));
	cr_assert(pres_user_idle(u));
	pres_user_free(u);
}

Test(presence, typing_coalesces_and_expires)
{
	struct pres_user *u = user();
	uint64_t ttl = 6000 * MS, t = 1000 * MS;
	const char *c = "d:alice:bob";
	size_t cl = strlen(c);
	cr_assert_eq(pres_typing_update(u, c, cl, true, peer(1), t, ttl), 1);
	/* refreshes within ttl/3 are coalesced, later ones forwarded */
	for (int i = 1; i < 20; i++)
		cr_assert_eq(pres_typing_update(u, c, cl, true, peer(1),
						t + (uint64_t)i * 100 * MS, ttl),
			     0);
	cr_assert_eq(pres_typing_update(u, c, cl, true, peer(1),
					t + 2000 * MS, ttl), 1);
	cr_assert_eq(u->ntyping, 1);
	/* expiry counts from the last refresh (t + 2000 ms) */
	struct pres_typing out[PRESENCE_TYPING_MAX];
	cr_assert_eq(pres_typing_expire(u, t + 7999 * MS, out, 8), 0);
	cr_assert_eq(pres_typing_expire(u, t + 8000 * MS, out, 8), 1);
	cr_assert_eq(out[0].clen, cl);
	cr_assert(!memcmp(out[0].conv, c, cl));
	cr_assert_eq(u->ntyping, 0);
	/* stop: forwarded only if it was typing */
	cr_assert_eq(pres_typing_update(u, c, cl, false, peer(1), t, ttl), 0);
	cr_assert_eq(pres_typing_update(u, c, cl, true, peer(1), t, ttl), 1);
	cr_assert_eq(pres_typing_update(u, c, cl, false, peer(1), t, ttl), 1);
	cr_assert_eq(u->ntyping, 0);
	pres_user_free(u);
}

Test(presence, typing_bounded_and_dropped_with_connection)
{
	struct pres_user *u = user();
	uint64_t ttl = 6000 * MS, t = 1000 * MS;
	char conv[PRESENCE_TYPING_MAX + 1][32];
	for (unsigned i = 0; i <= PRESENCE_TYPING_MAX; i++)
		snprintf(conv[i], sizeof conv[i], "d:alice:u%u", i);
	for (unsigned i = 0; i < PRESENCE_TYPING_MAX; i++)
		cr_assert_eq(pres_typing_update(u, conv[i], strlen(conv[i]),
						true, peer(i % 2), t, ttl),
			     1);
	cr_assert_eq(pres_typing_update(u, conv[8], strlen(conv[8]), true,
					peer(0), t, ttl),
		     -PARLEY_EFULL);
	struct pres_typing out[PRESENCE_TYPING_MAX];
	cr_assert_eq(pres_typing_drop_peer(u, peer(1), out, 8),
		     PRESENCE_TYPING_MAX / 2);
	cr_assert_eq(u->ntyping, PRESENCE_TYPING_MAX / 2);
	cr_assert(!pres_user_idle(u));
	cr_assert_eq(pres_typing_drop_peer(u, peer(0), out, 8),
		     PRESENCE_TYPING_MAX / 2);
	cr_assert(pres_user_idle(u));
	pres_user_free(u);
}

/* A refusal from a group's leader forgets the indicator and names the
 * connection that typed last (it gets the ERROR). */
Test(presence, typing_forget_names_the_typing_connection)
{
	struct pres_user *u = user();
	uint64_t ttl = 6000 * MS, t = 1000 * MS;
	const char *g = "g:crew", *d = "d:alice:bob";
	struct conn_ref from;
	cr_assert(!pres_typing_forget(u, g, strlen(g), &from));
	cr_assert_eq(pres_typing_update(u, d, strlen(d), true, peer(1), t, ttl),
		     1);
	cr_assert_eq(pres_typing_update(u, g, strlen(g), true, peer(1), t, ttl),
		     1);
	/* a refresh from another device of the user takes the indicator */
	cr_assert_eq(pres_typing_update(u, g, strlen(g), true, peer(2),
					t + 100 * MS, ttl),
		     0);
	cr_assert(pres_typing_forget(u, g, strlen(g), &from));
	cr_assert(from.slot == peer(2).slot && from.gen == peer(2).gen);
	cr_assert_eq(u->ntyping, 1, "the other conversation stays");
	cr_assert(!pres_typing_forget(u, g, strlen(g), &from),
		  "a second refusal finds nothing");
	/* a STARTED after the refusal is new again: forwarded (and refused) */
	cr_assert_eq(pres_typing_update(u, g, strlen(g), true, peer(2),
					t + 200 * MS, ttl),
		     1);
	pres_user_free(u);
}

Test(presence, subscribers)
{
	struct pres_user *u = user();
	for (uint32_t i = 0; i < 100; i++)
		cr_assert_eq(pres_sub_add(u, peer(i)), 0);
	cr_assert(!pres_user_idle(u));
	for (uint32_t i = 0; i < 100; i++)
		cr_assert(pres_sub_del(u, peer(i)));
	cr_assert(!pres_sub_del(u, peer(0)));
	cr_assert(pres_user_idle(u));
	pres_user_free(u);
}

Test(presence, config_check)
{
	struct presence_config c = {30000, 60000, 256, 6000, 300000, 65536};
	char why[128];
	cr_assert_eq(presence_config_check(&c, why, sizeof why), 0);
	c.ttl_ms = 30000;
	cr_assert_eq(presence_config_check(&c, why, sizeof why), -PARLEY_EINVAL);
	cr_assert(strstr(why, "presence_ttl_ms"));
	c.ttl_ms = 60000;
	c.subs_max = 0;
	cr_assert_eq(presence_config_check(&c, why, sizeof why), -PARLEY_EINVAL);
}

/* ---- remote sessions (other nodes, presence_relay.h) ---- */

Test(presence, remote_online_offline_no_durable_write)
{
	struct pres_user *u = user();
	uint64_t t = 1000 * MS, v;
	cr_assert(pres_remote_set(u, 2, t + TTL, 1));
	u->active_ms = 5000;
	cr_assert_eq(pres_user_update(u, t, TTL), 1); /* online elsewhere */
	cr_assert(!u->local_online);
	cr_assert(!pres_user_write_due(u, 999999, 1000, &v)); /* node 2 writes */
	cr_assert(pres_remote_set(u, 2, t + 2 * TTL, 1)); /* refresh: same slot */
	cr_assert_eq(u->nremote, 1);
	cr_assert(!pres_user_idle(u)); /* kept while online elsewhere */
	cr_assert(pres_remote_del(u, 2));
	cr_assert(!pres_remote_del(u, 2));
	u->active_ms = 6000;
	cr_assert_eq(pres_user_update(u, t + MS, TTL), -1);
	cr_assert_eq(u->last_seen_ms, 6000); /* for the view */
	cr_assert(!u->dirty);                /* not ours to write */
	cr_assert(!pres_user_write_due(u, 999999, 1000, &v));
	cr_assert(pres_user_idle(u));
	pres_user_free(u);
}

Test(presence, remote_and_local_sessions_together)
{
	struct pres_user *u = user();
	uint64_t t = 1000 * MS;
	cr_assert_eq(pres_sess_add(u, peer(1), t, 5000), 0);
	cr_assert_eq(pres_user_update(u, t, TTL), 1);
	cr_assert(u->local_online);
	cr_assert(pres_remote_set(u, 3, t + TTL, 1));
	cr_assert_eq(pres_user_update(u, t, TTL), 0);
	/* the local device leaves: still online (node 3), last_seen due */
	cr_assert(pres_sess_del(u, peer(1), 7000));
	cr_assert_eq(pres_user_update(u, t + MS, TTL), 0);
	cr_assert(u->online && !u->local_online);
	cr_assert(u->dirty);
	uint64_t v;
	cr_assert(pres_user_write_due(u, 8000, 60000, &v));
	cr_assert_eq(v, 7000);
	/* node 3's entry expires unrefreshed: offline */
	cr_assert_eq(pres_remote_expire(u, t + TTL - 1), 0);
	cr_assert_eq(pres_remote_expire(u, t + TTL), 1);
	cr_assert_eq(pres_user_update(u, t + TTL, TTL), -1);
	cr_assert(!u->online);
	pres_user_free(u);
}

Test(presence, remote_bounded_by_node_count)
{
	struct pres_user *u = user();
	for (uint64_t n = 1; n <= PRESENCE_REMOTE_MAX; n++)
		cr_assert(pres_remote_set(u, n, 100, 1));
	cr_assert(!pres_remote_set(u, 99, 100, 1)); /* full */
	cr_assert(pres_remote_set(u, 1, 200, 1));   /* a refresh still fits */
	cr_assert_eq(pres_remote_expire(u, 150), PRESENCE_REMOTE_MAX - 1);
	cr_assert_eq(u->nremote, 1);
	cr_assert_eq(u->remote[0].node, 1);
	pres_user_free(u);
}

/* SET_END of a node's set generation drops that node's entries from
 * older sets only (a lost OFFLINE), never those refreshed by this set or
 * a later one's transition, and never another node's; generations wrap. */
Test(presence, set_end_drops_only_older_generations)
{
	struct pres_user *u = user();
	cr_assert(pres_remote_set(u, 2, 100, 7));
	cr_assert(pres_remote_set(u, 3, 100, 1));
	cr_assert(!pres_remote_drop_older(u, 2, 7), "refreshed by this set");
	cr_assert(!pres_remote_drop_older(u, 2, 6), "a later generation");
	cr_assert(!pres_remote_drop_older(u, 4, 9), "not online there");
	cr_assert(pres_remote_drop_older(u, 2, 8), "not in set 8: gone");
	cr_assert_eq(u->nremote, 1);
	cr_assert_eq(u->remote[0].node, 3, "another node's entry stays");
	/* across the wrap: 0xffffffff is older than 2 */
	cr_assert(pres_remote_set(u, 2, 100, 0xffffffffu));
	cr_assert(!pres_remote_drop_older(u, 2, 0xfffffff0u));
	cr_assert(pres_remote_drop_older(u, 2, 2));
	/* the user goes offline here once no entry is left */
	cr_assert(pres_remote_drop_older(u, 3, 2));
	cr_assert_eq(u->nremote, 0);
	pres_user_free(u);
}

/* ---- the running registry across nodes (presence_relay_recv) ---- */

static struct {
	pthread_mutex_t mu;
	int set_ends;
	int bad;              /* payloads that did not decode */
} fr = {PTHREAD_MUTEX_INITIALIZER, 0, 0};

static int fake_relay(void *arg, uint64_t to, const uint8_t *p, uint32_t n)
{
	(void)arg;
	(void)to;
	struct prelay_msg m;
	pthread_mutex_lock(&fr.mu);
	if (prelay_decode(p, n, &m))
		fr.bad++;
	else if (m.kind == PRELAY_SET_END)
		fr.set_ends++;
	pthread_mutex_unlock(&fr.mu);
	return 0;
}

static int set_ends(void)
{
	pthread_mutex_lock(&fr.mu);
	int n = fr.set_ends;
	pthread_mutex_unlock(&fr.mu);
	return n;
}

static void recv_msg(struct presence *p, uint64_t from,
		     const struct prelay_msg *m)
{
	static uint8_t buf[PRELAY_MAX];
	int n = prelay_encode(buf, sizeof buf, m);
	cr_assert_gt(n, 0);
	cr_assert_eq(presence_relay_recv(p, from, buf, (uint32_t)n), 0);
}

static unsigned nodes_of(struct presence *p, const char *u)
{
	uint64_t nodes[PRESENCE_REMOTE_MAX];
	return presence_user_nodes(p, u, strlen(u), nodes, PRESENCE_REMOTE_MAX);
}

/* A SET_END drops the sender's users its set no longer names (a lost
 * OFFLINE), keeps a later set's transition and other nodes' entries; a
 * PRES payload that was not sent makes the whole set (with its SET_END)
 * go again. */
Test(presence, set_end_repairs_lost_offline_and_lost_payload_resends_set)
{
	struct world w;
	world_start(&w, 21);
	struct srv s = {.engine = w.e, .chat = w.c};
	struct presence_config cfg = {.heartbeat_ms = 30000, .ttl_ms = 60000,
				      .subs_max = 100, .typing_ttl_ms = 6000,
				      .last_seen_write_ms = 60000,
				      .push_queue_max = 1024};
	struct presence *p;
	cr_assert_eq(presence_open(&cfg, &s, &p), 0);
	presence_set_relay(p, fake_relay, NULL);
	struct prelay_msg m = {.kind = PRELAY_ONLINE, .arg = 5, .count = 2};
	m.users[0] = (struct parley_str){"ann", 3};
	m.users[1] = (struct parley_str){"ben", 3};
	recv_msg(p, 2, &m); /* node 2's set 5: ann, ben */
	m.users[1] = (struct parley_str){"dan", 3};
	recv_msg(p, 3, &m); /* node 3: ann, dan (its own generations) */
	cr_assert_eq(nodes_of(p, "ben"), 1);
	cr_assert_eq(nodes_of(p, "ann"), 2);
	/* ben's OFFLINE from node 2 is lost; node 2's set 6 names ann only,
	 * and cy comes online there after set 7 began */
	m.arg = 6;
	m.count = 1;
	recv_msg(p, 2, &m);
	m.arg = 7;
	m.users[0] = (struct parley_str){"cy", 2};
	recv_msg(p, 2, &m);
	struct prelay_msg e = {.kind = PRELAY_SET_END, .arg = 6};
	recv_msg(p, 2, &e);
	cr_assert_eq(nodes_of(p, "ben"), 0, "ben's lost OFFLINE repaired");
	cr_assert_eq(nodes_of(p, "ann"), 2, "named by the set: stays");
	cr_assert_eq(nodes_of(p, "cy"), 1, "a later set's transition stays");
	cr_assert_eq(nodes_of(p, "dan"), 1, "node 3's entries untouched");
	struct presence_stats st;
	presence_get_stats(p, &st);
	cr_assert_eq(st.set_dropped, 1);
	/* the sweep's first whole set after the relay came (then none for
	 * PRESENCE_SET_MS) */
	for (int t = 0; t < 1000 && (presence_get_stats(p, &st), !st.sets_sent);
	     t++)
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	cr_assert_eq(st.sets_sent, 1);
	/* a payload the peer node could not send: the whole set goes again
	 * (the sweep thread, PRESENCE_RESYNC_MIN_MS after the last one) */
	int before = set_ends();
	presence_relay_unsent(p);
	for (int t = 0; t < 1000 && set_ends() == before; t++)
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	cr_assert_gt(set_ends(), before, "no repair set after a lost payload");
	presence_get_stats(p, &st);
	cr_assert_eq(st.relay_failed, 1);
	cr_assert_eq(st.sets_sent, 2);
	cr_assert_eq(fr.bad, 0);
	presence_set_relay(p, NULL, NULL);
	presence_close(p);
	world_stop(&w);
}

/* A node whose link is up and that sent no SET_END is a build before set
 * generations: it gets the whole set every presence_ttl_ms / 3 (it
 * expires our users otherwise); once it sends a SET_END, deltas only. */
Test(presence, node_without_generations_gets_periodic_sets)
{
	struct world w;
	world_start(&w, 22);
	struct srv s = {.engine = w.e, .chat = w.c};
	struct presence_config cfg = {.heartbeat_ms = 100, .ttl_ms = 300,
				      .subs_max = 100, .typing_ttl_ms = 6000,
				      .last_seen_write_ms = 60000,
				      .push_queue_max = 1024};
	struct presence *p;
	cr_assert_eq(presence_open(&cfg, &s, &p), 0);
	presence_set_relay(p, fake_relay, NULL);
	struct presence_stats st;
	for (int t = 0; t < 1000 && (presence_get_stats(p, &st), !st.sets_sent);
	     t++)
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	cr_assert_eq(st.sets_sent, 1, "the first whole set to every node");
	presence_link(p, 2, true); /* our set to node 2, and RESEND */
	presence_get_stats(p, &st);
	uint64_t s0 = st.sets_sent;
	for (int t = 0; t < 1000 && st.sets_sent < s0 + 2; t++) {
		nanosleep(&(struct timespec){0, 10000000}, NULL);
		presence_get_stats(p, &st);
	}
	cr_assert_geq(st.sets_sent, s0 + 2, "no periodic set to a node "
		      "without generations");
	/* node 2 speaks generations: its SET_END; then no more sets */
	struct prelay_msg e = {.kind = PRELAY_SET_END, .arg = 1};
	recv_msg(p, 2, &e);
	nanosleep(&(struct timespec){0, 300000000}, NULL); /* a set in flight */
	presence_get_stats(p, &st);
	uint64_t s1 = st.sets_sent;
	nanosleep(&(struct timespec){0, 600000000}, NULL); /* >= 6 x ttl / 3 */
	presence_get_stats(p, &st);
	cr_assert_eq(st.sets_sent, s1, "whole sets to a node that has "
		     "generations");
	presence_link(p, 2, false);
	presence_set_relay(p, NULL, NULL);
	presence_close(p);
	world_stop(&w);
}
