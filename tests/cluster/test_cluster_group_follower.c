/*
 * test_cluster_group_follower.c — what a node that does not lead a
 * group's partition answers about the group. Three parleyd processes on
 * loopback form a static cluster; through it alice creates a group with
 * bob and carol, renames it, sends, removes carol, renames it again and
 * sends more. Then, asking each node alone (no redirect, so two of them
 * are followers whose in-memory group table never saw the group):
 *   - carol's CONV_LIST shows the group flagged LEFT, frozen at her
 *     removal (last_seq, the name then, the members after it) — read from
 *     the group's stored snapshot where memory cannot answer;
 *   - bob's CONV_LIST shows the latest name and member count, not LEFT;
 *   - RECEIPTS and READ_MARKER for the group are answered only by the
 *     leader (a follower says NOTLEADER instead of using a stale table).
 * A follower serves what it has applied: each check is retried for a few
 * seconds (replication and fan-out lag), never timed.
 */
#include "cluster_itest.h"

static char gid[64];

/* A connected client of user: through the node list (node < 0) or on
 * node alone (a follower's NOTLEADER comes back). */
static struct parley_client *client(const char *user, const char *dev, int node)
{
	struct parley_client *c =
		node < 0 ? cluster_client_new(user, dev, NULL, 20000)
			 : cluster_client_at(srv[node].port, user, dev, 300, true);
	IT_OK(parley_client_connect(c));
	return c;
}

static int group_leader(void)
{
	return cluster_find_leader_by(-1, "alice", cluster_probe_send, gid,
				      "the group");
}

/* user's CONV_LIST entry for gid on node, as wanted; retried while the
 * node catches up. Returns 1 when it matched. */
static int list_is(int node, const char *user, bool left, uint64_t last_seq,
		   const char *title, uint32_t members)
{
	char last[256] = "";
	for (int t = 0; t < 100; t++) {
		struct parley_client *c = client(user, "lister", node);
		const struct parley_conv_list_ok *lo;
		int rc = parley_client_conv_list(c, 100, &lo);
		for (unsigned i = 0; rc == 0 && i < lo->count; i++) {
			const struct parley_conv_entry *e = &lo->entries[i];
			if (!parley_str_eq(e->conv, gid))
				continue;
			bool ok = !!(e->flags & PARLEY_CONVF_LEFT) == left &&
				  (!last_seq || e->last_seq == last_seq) &&
				  parley_str_eq(e->title, title) &&
				  e->member_count == members;
			snprintf(last, sizeof last,
				 "left %d last_seq %llu title '%.*s' members %u",
				 !!(e->flags & PARLEY_CONVF_LEFT),
				 (unsigned long long)e->last_seq, (int)e->title.len,
				 e->title.p, e->member_count);
			if (ok) {
				parley_client_free(c);
				return 1;
			}
		}
		parley_client_free(c);
		it_sleep_ms(50);
	}
	it_fail(__FILE__, __LINE__, "node%d %s: %s", node + 1, user, last);
	return 0;
}

int main(void)
{
	it_init("cluster_group_follower");
	/* what a follower itself answers (NOTLEADER) is the subject:
	 * forwarding off (test_cluster_forward covers forwarding) */
	cluster_no_forward = true;
	cluster_init("79");
	for (int i = 0; i < NODES; i++)
		it_server_start(&srv[i]);
	struct parley_client *a = client("alice", "a1", -1);
	const struct parley_group_ok *ok;
	IT_OK(parley_client_group_create(a, "team", 0,
					 (const char *[]){"bob", "carol"}, 2, &ok));
	snprintf(gid, sizeof gid, "%.*s", (int)ok->conv.len, ok->conv.p);
	IT_OK(parley_client_group_set(a, gid, PARLEY_GSET_NAME, "Team 2", 0, NULL));
	IT_OK(parley_client_send(a, gid, 1, "one", 3, NULL));
	IT_OK(parley_client_group_remove(a, gid, (const char *[]){"carol"}, 1, &ok));
	uint64_t removed = ok->seq;
	IT_OK(parley_client_group_set(a, gid, PARLEY_GSET_NAME, "Team 3", 0, NULL));
	IT_OK(parley_client_send(a, gid, 1, "two", 3, NULL));
	parley_client_free(a);
	int leader = group_leader();
	printf("group %s led by node%d; carol removed at %" PRIu64 "\n", gid,
	       leader + 1, removed);
	for (int i = 0; i < NODES; i++) {
		list_is(i, "carol", true, removed, "Team 2", 2);
		list_is(i, "bob", false, 0, "Team 3", 2);
		/* each request on its own connection (no_reconnect: after a
		 * request that timed out the client has dropped its
		 * connection, and the next one would say CLOSED); a timeout
		 * (300 ms deadline, a loaded machine) is asked again on the
		 * leader, whose answer must come */
		int rc, mk;
		uint32_t mc = 0;
		for (int t = 0;; t++) {
			struct parley_client *b = client("bob", "rcpt", i);
			const struct parley_receipts_ok *ro;
			rc = parley_client_receipts(b, gid, 1, NULL, 10, &ro);
			mc = rc == 0 ? ro->member_count : 0; /* ro borrows */
			parley_client_free(b);
			if (rc != -PARLEY_ETIMEDOUT || i != leader || t == 50)
				break;
		}
		for (int t = 0;; t++) {
			struct parley_client *b = client("bob", "rcpt", i);
			mk = parley_client_read_marker(b, gid, 1, NULL);
			parley_client_free(b);
			if (mk != -PARLEY_ETIMEDOUT || i != leader || t == 50)
				break;
		}
		if (i == leader) {
			IT_CHECK(rc == 0 && mc == 2,
				 "RECEIPTS on the leader: %s", parley_strerror(rc));
			IT_CHECK(mk == 0, "READ_MARKER on the leader: %s",
				 parley_strerror(mk));
		} else {
			IT_CHECK(rc == -PARLEY_ENOTLEADER || rc == -PARLEY_ETIMEDOUT,
				 "RECEIPTS on follower node%d: %s", i + 1,
				 parley_strerror(rc));
			IT_CHECK(mk == -PARLEY_ENOTLEADER || mk == -PARLEY_ETIMEDOUT,
				 "READ_MARKER on follower node%d: %s", i + 1,
				 parley_strerror(mk));
		}
		printf("node%d (%s): lists ok\n", i + 1,
		       i == leader ? "leader" : "follower");
	}
	it_cleanup();
	printf("test_cluster_group_follower: ok\n");
	return 0;
}
