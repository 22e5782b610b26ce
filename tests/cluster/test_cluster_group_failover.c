/*
 * test_cluster_group_failover.c — group membership survives a leader
 * change. Three parleyd processes on loopback form a static cluster;
 * through it alice creates a group with bob and carol, adds dave and
 * removes carol. The node leading the group's partition is then killed
 * (kill -9). Through the survivors:
 *   - carol's SEND is refused (EPERM) and carol's inbox gets nothing sent
 *     after her removal;
 *   - alice's new message reaches dave (a new device SYNCing from inbox
 *     seq 1);
 *   - GROUP_INFO lists alice, bob, dave.
 * Then the killed node restarts (loading the group as it stood), bob is
 * removed through the current leader and that one is killed too: bob's
 * SEND is refused and GROUP_INFO lists alice and dave, whichever survivor
 * leads (one whose table was stale, or one that had none).
 * The new leader only learned the group from storage: it reloads the
 * groups of each partition it comes to lead (chat_groups_reload) before
 * answering about them (AGAIN / NOTLEADER meanwhile, which the client
 * retries).
 */
#include "cluster_itest.h"


static char gid[64];

struct inbox {
	int n;
	struct {
		uint64_t conv_seq;
		uint16_t kind;
		char conv[64];
		char body[64];
	} v[256];
};

static void on_ev(void *user, const struct parley_event *ev)
{
	struct inbox *b = user;
	if (b->n == 256)
		return;
	b->v[b->n].conv_seq = ev->conv_seq;
	b->v[b->n].kind = ev->kind;
	snprintf(b->v[b->n].conv, sizeof b->v[b->n].conv, "%.*s",
		 (int)ev->conv.len, ev->conv.p);
	snprintf(b->v[b->n].body, sizeof b->v[b->n].body, "%.*s",
		 (int)(ev->body.len < 63 ? ev->body.len : 63),
		 (const char *)ev->body.p);
	b->n++;
}

/* A client of user (b: its events): through the node list (node < 0)
 * or on node alone (a follower's NOTLEADER comes back). */
static struct parley_client *client(const char *user, const char *dev,
				    int node, struct inbox *b)
{
	return cluster_client_ev(user, dev, node < 0 ? nodes_list : NULL,
				 node < 0 ? 0 : srv[node].port,
				 node < 0 ? 20000 : 300, node >= 0,
				 b ? on_ev : NULL, NULL, b);
}

/* The node whose SEND to the group succeeds leads its partition. */
static int group_leader(void)
{
	return cluster_find_leader_by(-1, "alice", cluster_probe_send, gid,
				      "the group");
}

static void wait_events(struct parley_client *c, struct inbox *b,
			const char *body, int ms)
{
	for (int t = 0; t < ms; t += 50) {
		for (int i = 0; i < b->n; i++)
			if (body && b->v[i].kind == PARLEY_EV_MESSAGE &&
			    !strcmp(b->v[i].body, body))
				return;
		(void)parley_client_poll(c, 50);
	}
}

int main(void)
{
	it_init("cluster_group_failover");
	/* the group's leader is found by the NOTLEADER a follower
	 * answers only with forwarding off */
	cluster_no_forward = true;
	cluster_init("78");
	for (int i = 0; i < NODES; i++) {
		it_server_start(&srv[i]);
	}
	/* the group and its changes, through the cluster */
	struct parley_client *a = client("alice", "a1", -1, NULL);
	IT_OK(parley_client_connect(a));
	const struct parley_group_ok *ok;
	const char *bc[] = {"bob", "carol"}, *d[] = {"dave"}, *cr[] = {"carol"};
	IT_OK(parley_client_group_create(a, "team", 0, bc, 2, &ok));
	snprintf(gid, sizeof gid, "%.*s", (int)ok->conv.len, ok->conv.p);
	IT_OK(parley_client_group_add(a, gid, d, 1, PARLEY_ROLE_MEMBER, &ok));
	IT_OK(parley_client_group_remove(a, gid, cr, 1, &ok));
	uint64_t removed_at = ok->seq;
	IT_OK(parley_client_send(a, gid, 1, "before", 6, NULL));
	parley_client_free(a);
	int leader = group_leader();
	printf("group %s (carol removed at seq %" PRIu64 "), led by node%d: "
	       "kill -9\n", gid, removed_at, leader + 1);
	it_server_kill(&srv[leader]);

	/* carol: refused, through whichever node leads now */
	struct inbox cb = {0};
	struct parley_client *c = client("carol", "c-new", -1, &cb);
	IT_OK(parley_client_connect(c));
	int rc = parley_client_send(c, gid, 1, "carol", 5, NULL);
	IT_CHECK(rc == -PARLEY_EPERM, "removed carol's SEND after failover: %s",
		 parley_strerror(rc));
	/* alice: a new message, and GROUP_INFO */
	a = client("alice", "a2", -1, NULL);
	IT_OK(parley_client_connect(a));
	rc = parley_client_send(a, gid, 1, "after", 5, NULL);
	IT_CHECK(rc == 0, "alice's SEND after failover: %s", parley_strerror(rc));
	const struct parley_group_info_ok *gi;
	rc = parley_client_group_info(a, gid, 0, 16, &gi);
	IT_CHECK(rc == 0, "GROUP_INFO after failover: %s", parley_strerror(rc));
	const char *want[] = {"alice", "bob", "dave"};
	IT_CHECK(gi->member_count == 3 && gi->count == 3,
		 "GROUP_INFO: %u members listed (count %u), want 3",
		 gi->member_count, gi->count);
	for (int i = 0; i < 3; i++) {
		bool found = false;
		for (uint16_t k = 0; k < gi->count; k++)
			found |= gi->members[k].user.len == strlen(want[i]) &&
				 !memcmp(gi->members[k].user.p, want[i],
					 strlen(want[i]));
		IT_CHECK(found, "GROUP_INFO lacks %s", want[i]);
	}
	IT_CHECK(gi->as_of_seq == removed_at, "GROUP_INFO as of seq %" PRIu64
		 ", the removal was %" PRIu64, gi->as_of_seq, removed_at);
	/* dave: a new device receives "after" */
	struct inbox db = {0};
	struct parley_client *dv = client("dave", "d-new", -1, &db);
	IT_OK(parley_client_connect(dv));
	IT_OK(parley_client_subscribe(dv, 1, NULL));
	wait_events(dv, &db, "after", 15000);
	bool got = false;
	for (int i = 0; i < db.n; i++)
		got |= db.v[i].kind == PARLEY_EV_MESSAGE && !strcmp(db.v[i].conv, gid) &&
		       !strcmp(db.v[i].body, "after");
	IT_CHECK(got, "dave (added) did not receive the message sent after "
		 "the failover (%d events)", db.n);
	/* carol: nothing of the group after her removal */
	IT_OK(parley_client_subscribe(c, 1, NULL));
	wait_events(c, &cb, NULL, 1500);
	for (int i = 0; i < cb.n; i++)
		IT_CHECK(strcmp(cb.v[i].conv, gid) || cb.v[i].conv_seq <= removed_at,
			 "removed carol received conv seq %" PRIu64 " (%s)",
			 cb.v[i].conv_seq, cb.v[i].body);
	printf("carol: %d events, none after her removal; dave: %d events\n",
	       cb.n, db.n);
	parley_client_free(c);
	parley_client_free(dv);

	/* a second failover onto a node whose table is stale rather than
	 * empty: the killed node comes back (loading the group as it was),
	 * bob is removed through the current leader, which is killed */
	it_server_start(&srv[leader]);
	const char *b[] = {"bob"};
	IT_OK(parley_client_group_remove(a, gid, b, 1, &ok));
	uint64_t bob_removed = ok->seq;
	parley_client_free(a);
	int leader2 = group_leader();
	/* (the restarted node may lead already: then the other two survive) */
	printf("bob removed at seq %" PRIu64 "; kill -9 node%d\n", bob_removed,
	       leader2 + 1);
	it_server_kill(&srv[leader2]);
	struct parley_client *bo = client("bob", "b-new", -1, NULL);
	IT_OK(parley_client_connect(bo));
	rc = parley_client_send(bo, gid, 1, "bob", 3, NULL);
	IT_CHECK(rc == -PARLEY_EPERM, "removed bob's SEND after the second "
		 "failover: %s", parley_strerror(rc));
	parley_client_free(bo);
	a = client("alice", "a3", -1, NULL);
	IT_OK(parley_client_connect(a));
	rc = parley_client_group_info(a, gid, 0, 16, &gi);
	IT_CHECK(rc == 0 && gi->member_count == 2 && gi->as_of_seq == bob_removed,
		 "GROUP_INFO after the second failover: %s, %u members as of "
		 "seq %" PRIu64, parley_strerror(rc), rc ? 0 : gi->member_count,
		 rc ? 0 : gi->as_of_seq);
	parley_client_free(a);
	for (int i = 0; i < NODES; i++)
		if (i != leader2)
			IT_CHECK(it_server_stop(&srv[i], SIGTERM, 10000) == 0,
				 "node%d did not stop cleanly", i + 1);
	printf("ok: membership after a leader kill is the one stored\n");
	return 0;
}
