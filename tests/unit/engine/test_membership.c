/*
 * test_membership.c — membership changes of the partition groups
 * (parley_engine.h "Replication", contract item 12; engine/log/part_conf.c):
 * up to five real engines in one process, each on its own in-memory
 * backend (a crash loses every byte not fdatasync'd), founded as a
 * 3-voter cluster {1, 2, 3} and wired by an in-memory transport that this
 * test drives (messages encoded and decoded with the Raft codec, as a
 * wire would; links cut; ticks when the test says).
 *
 * What is checked, through the public API only:
 *   - a new node (4, an empty data directory, given the founders) is
 *     added as a learner of every partition while appends go on, catches
 *     up by log, is promoted; a founder is removed; the removed node
 *     never leads again and the remaining voters, the new one among them,
 *     form the quorum (the new voter is needed: one of the others is then
 *     killed and the two left still commit);
 *   - with a small kept log the learner catches up by snapshot instead
 *     (the conf travels in the snapshot's meta);
 *   - that meta's conf is the membership as of the image's index, also
 *     when a change committed after the leader's last flush (the learner
 *     stores it at that index);
 *   - after every node flushed its history (the WAL records holding the
 *     conf entries released) and restarted, every group reports the
 *     changed configuration and serves with it; without the stored
 *     configuration (conf/<partition>) the restarted groups fall back to
 *     the founders and this fails;
 *   - the API's refusals: a second change while one is pending (EAGAIN),
 *     adding a member (EINVAL), a change on a follower (NOTLEADER + hint);
 *   - pe_raft_transfer (docs/CLUSTER.md §3.7, removing the leading node):
 *     every group the node leads moves to the current voter asked for, none
 *     to a node that is no member; appends go on after it.
 * Seed: PARLEY_SEED (printed); it drives the keys and the backends.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "raft.h"
#include "raft_codec.h"

#define NMAX 5
#define NPARTS 4
#define MAX_PUMP 60000 /* pump rounds before a wait gives up (a failure) */
#define REPL_NET_NODES NMAX
#define REPL_PUMP_SLEEP_US 300
#define REPL_PRODUCER_TAG 0x6b
#define REPL_ACK_ATTEMPTS 4000
#define REPL_MAXACK 2048
#include "repl_cluster.h"

static int isolated = -1; /* a node whose messages (both ways) are lost */

static bool repl_lost(int from, int to)
{
	return to == isolated || from == isolated;
}

static void repl_payload(int n, char *out, size_t cap)
{
	snprintf(out, cap, "m%d-%032d", n, 0);
}

/* Five in-memory nodes, the founders {1, 2, 3} open. */
static void cluster_start(uint64_t keep)
{
	(void)cluster_start_nodes("test_membership", keep, true, 3);
}

/* Node i holds exactly the acknowledged entries, at their seqs. */
static void check_node(int i)
{
	check_acked(i);
}

/* ---- membership changes ----------------------------------------------------------- */

struct cack {
	atomic_bool done;
	struct pe_conf_result r;
};

static void on_conf(void *arg, const struct pe_conf_result *r)
{
	struct cack *c = arg;
	c->r = *r;
	atomic_store(&c->done, true);
}

/* Proposes a change on partition `part`'s leader; appends go on while it
 * is pending (the acknowledged set grows). Retries what is retryable.
 * Returns the entry's index. */
static uint64_t conf_change(uint32_t part, enum pe_conf_op op, uint64_t node,
			    int appends_meanwhile)
{
	for (int attempt = 0; attempt < 400; attempt++) {
		int l = leader_of(part);
		if (l < 0) {
			pump();
			continue;
		}
		struct cack c = {0};
		int rc = pe_partition_conf_change(nodes[l].e, part, op, node,
						  on_conf, &c);
		cr_assert_eq(rc, 0, "conf change: %s", parley_errname(rc));
		if (appends_meanwhile)
			append_many(appends_meanwhile);
		for (int r = 0; r < MAX_PUMP && !atomic_load(&c.done); r++)
			pump();
		cr_assert(atomic_load(&c.done), "conf change never answered");
		if (!c.r.err) {
			cr_assert_gt(c.r.index, 0);
			return c.r.index;
		}
		cr_assert(c.r.err == -PARLEY_EAGAIN ||
			  c.r.err == -PARLEY_ENOTLEADER ||
			  /* lost leadership, yet it committed: done */
			  c.r.err == -PARLEY_EINVAL,
			  "conf change: %s", parley_errname(c.r.err));
		if (c.r.err == -PARLEY_EINVAL)
			return 0;
		for (int k = 0; k < 16; k++)
			pump();
	}
	cr_assert_fail("conf change never committed");
	return 0;
}

/* Node i's group of `part` reports exactly these voters and learners. */
static bool conf_is(int i, uint32_t part, const uint64_t *v, uint32_t nv,
		    const uint64_t *l, uint32_t nl)
{
	struct pe_raft_status st = status(i, part);
	if (st.nvoters != nv || st.nlearners != nl)
		return false;
	for (uint32_t k = 0; k < nv; k++)
		if (st.voters[k] != v[k])
			return false;
	for (uint32_t k = 0; k < nl; k++)
		if (st.learners[k] != l[k])
			return false;
	return true;
}

static void wait_conf(int i, const uint64_t *v, uint32_t nv,
		      const uint64_t *l, uint32_t nl)
{
	for (int r = 0; r < MAX_PUMP; r++) {
		bool ok = true;
		for (uint32_t p = 0; p < NPARTS; p++)
			ok &= conf_is(i, p, v, nv, l, nl);
		if (ok)
			return;
		pump();
	}
	for (uint32_t p = 0; p < NPARTS; p++) {
		struct pe_raft_status st = status(i, p);
		fprintf(stderr, "node %d partition %u: %u voters %u learners "
			"(first %llu)\n", i + 1, p, st.nvoters, st.nlearners,
			(unsigned long long)(st.nvoters ? st.voters[0] : 0));
	}
	cr_assert_fail("node %d never reported the expected conf", i + 1);
}

static void flush_all(int i)
{
	for (uint32_t p = 0; p < NPARTS; p++)
		cr_assert_eq(pe_flush_sync(nodes[i].e, p), 0);
}

static void setup(void)
{
	nacked = 0;
	isolated = -1;
}

TestSuite(membership, .init = setup, .fini = cluster_stop, .timeout = 300);

/* Founders report their conf; the API refuses what it must. */
Test(membership, refusals_and_status)
{
	cluster_start(0);
	wait_leaders();
	append_many(10);
	const uint64_t v3[] = {1, 2, 3};
	for (int i = 0; i < 3; i++)
		wait_conf(i, v3, 3, NULL, 0);
	uint32_t part = 0;
	int l = leader_of(part);
	int f = (l + 1) % 3;
	for (int r = 0; r < MAX_PUMP && !status(f, part).leader; r++)
		pump();
	struct cack c = {0};
	/* on a follower: NOTLEADER with the leader's id */
	cr_assert_eq(pe_partition_conf_change(nodes[f].e, part,
					      PE_CONF_ADD_LEARNER, 4, on_conf,
					      &c), 0);
	for (int r = 0; r < MAX_PUMP && !atomic_load(&c.done); r++)
		pump();
	cr_assert_eq(c.r.err, -PARLEY_ENOTLEADER);
	cr_assert_eq(c.r.leader, nodes[l].id);
	/* a member (a founder) */
	c = (struct cack){0};
	cr_assert_eq(pe_partition_conf_change(nodes[l].e, part,
					      PE_CONF_ADD_LEARNER, 2, on_conf,
					      &c), 0);
	for (int r = 0; r < MAX_PUMP && !atomic_load(&c.done); r++)
		pump();
	cr_assert_eq(c.r.err, -PARLEY_EINVAL);
	/* promote of a voter */
	c = (struct cack){0};
	cr_assert_eq(pe_partition_conf_change(nodes[l].e, part,
					      PE_CONF_PROMOTE, 3, on_conf,
					      &c), 0);
	for (int r = 0; r < MAX_PUMP && !atomic_load(&c.done); r++)
		pump();
	cr_assert_eq(c.r.err, -PARLEY_EINVAL);
	/* two at once: the second is refused with EAGAIN */
	struct cack c1 = {0}, c2 = {0};
	cr_assert_eq(pe_partition_conf_change(nodes[l].e, part,
					      PE_CONF_ADD_LEARNER, 4, on_conf,
					      &c1), 0);
	cr_assert_eq(pe_partition_conf_change(nodes[l].e, part,
					      PE_CONF_ADD_LEARNER, 5, on_conf,
					      &c2), 0);
	for (int r = 0; r < MAX_PUMP &&
	     !(atomic_load(&c1.done) && atomic_load(&c2.done)); r++)
		pump();
	cr_assert_eq(c1.r.err, 0, "%s", parley_errname(c1.r.err));
	cr_assert_eq(c2.r.err, -PARLEY_EAGAIN);
	/* bad arguments never reach a shard */
	cr_assert_eq(pe_partition_conf_change(nodes[l].e, NPARTS,
					      PE_CONF_ADD_LEARNER, 9, on_conf,
					      &c), -PARLEY_EINVAL);
	cr_assert_eq(pe_partition_conf_change(nodes[l].e, 0, PE_CONF_REMOVE,
					      0, on_conf, &c), -PARLEY_EINVAL);
	cr_assert_eq(pe_partition_conf_change(nodes[l].e, 0, 1, 9, on_conf,
					      &c), -PARLEY_EINVAL);
	/* the leader reports the learner (node 4 is not running: the group
	 * goes on with its three voters) */
	const uint64_t l4[] = {4};
	cr_assert(conf_is(l, part, v3, 3, l4, 1));
	append_many(10);
	for (int i = 0; i < 3; i++) {
		wait_caught_up(i);
		check_node(i);
	}
}

/* Leader transfer on request: to a node no group has, nothing moves; to
 * a current voter, every group this node leads does, and the groups it
 * does not lead keep their leader. */
Test(membership, transfer_on_request)
{
	cluster_start(0);
	wait_leaders();
	append_many(20);
	for (int i = 0; i < 3; i++)
		wait_caught_up(i);
	int l = leader_of(0);
	cr_assert_eq(pe_raft_transfer(nodes[l].e, nodes[l].id), -PARLEY_EINVAL);
	cr_assert_eq(pe_raft_transfer(nodes[l].e, 0), -PARLEY_EINVAL);
	int before[NPARTS];
	uint64_t term[NPARTS];
	for (uint32_t p = 0; p < NPARTS; p++) {
		before[p] = leader_of(p);
		term[p] = status(before[p], p).term;
	}
	cr_assert_eq(pe_raft_transfer(nodes[l].e, 5), 0); /* not a member */
	for (int r = 0; r < 400; r++)
		pump();
	for (uint32_t p = 0; p < NPARTS; p++) {
		cr_assert_eq(leader_of(p), before[p], "partition %u moved", p);
		cr_assert_eq(status(before[p], p).term, term[p]);
	}
	int t = (l + 1) % 3;
	cr_assert_eq(pe_raft_transfer(nodes[l].e, nodes[t].id), 0);
	bool moved = false;
	for (int r = 0; r < MAX_PUMP && !moved; r++) {
		moved = true;
		for (uint32_t p = 0; p < NPARTS; p++)
			moved &= leader_of(p) == (before[p] == l ? t : before[p]);
		if (!moved)
			pump();
	}
	cr_assert(moved, "the groups node %d led did not move to node %d",
		  l + 1, t + 1);
	for (uint32_t p = 0; p < NPARTS; p++)
		cr_assert_neq(status(l, p).role, PE_LEADER);
	append_many(10);
	for (int i = 0; i < 3; i++) {
		wait_caught_up(i);
		check_node(i);
	}
}

/* A single node has no membership to change. */
Test(membership, single_node_refuses)
{
	struct pio *io = pio_mem_new(1);
	struct pe_options o = {0};
	o.dir = "/single";
	o.partitions = 2;
	o.io = io;
	struct pe_engine *e;
	cr_assert_eq(pe_open(&o, &e), 0);
	struct pe_conf_result r;
	cr_assert_eq(pe_partition_conf_change_sync(e, 0, PE_CONF_ADD_LEARNER,
						   2, &r), -PARLEY_EINVAL);
	struct pe_raft_status st;
	cr_assert_eq(pe_raft_status(e, 0, &st), 0);
	cr_assert_eq(st.nvoters, 1);
	cr_assert_eq(st.voters[0], 1);
	pe_close(e);
	pio_free(io);
}

/* Adds node 4 to every group (learner, under appends), promotes it,
 * removes founder `gone`. */
static void grow_and_shrink(int gone)
{
	node_open(3); /* empty data directory, the founders as bootstrap */
	for (uint32_t p = 0; p < NPARTS; p++)
		conf_change(p, PE_CONF_ADD_LEARNER, 4, 20);
	const uint64_t v3[] = {1, 2, 3}, l4[] = {4};
	for (int i = 0; i < 4; i++)
		wait_conf(i, v3, 3, l4, 1);
	append_many(20);
	wait_caught_up(3);
	check_node(3);
	/* the leaders see the learner caught up (what a caller promotes on) */
	for (uint32_t p = 0; p < NPARTS; p++) {
		bool ok = false;
		for (int r = 0; r < MAX_PUMP && !ok; r++) {
			int l = leader_of(p);
			struct pe_raft_status ls = l >= 0 ? status(l, p)
							  : (struct pe_raft_status){0};
			ok = l >= 0 && ls.nlearners == 1 &&
			     pe_raft_member_match(&ls, ls.learners[0]) == ls.commit &&
			     ls.commit == ls.last_index;
			for (uint32_t k = 0; ok && k < ls.nvoters; k++)
				ok = pe_raft_member_match(&ls, ls.voters[k]) == ls.commit ||
				     ls.voters[k] == nodes[gone].id;
			if (!ok)
				pump();
		}
		cr_assert(ok, "partition %u: leader never saw the learner "
			  "caught up", p);
		struct pe_raft_status fs = status(3, p);
		cr_assert_eq(fs.n_members, 0, "a follower knows no match");
	}
	for (uint32_t p = 0; p < NPARTS; p++)
		conf_change(p, PE_CONF_PROMOTE, 4, 10);
	const uint64_t v4[] = {1, 2, 3, 4};
	for (int i = 0; i < 4; i++)
		wait_conf(i, v4, 4, NULL, 0);
	for (uint32_t p = 0; p < NPARTS; p++)
		conf_change(p, PE_CONF_REMOVE, nodes[gone].id, 10);
	uint64_t v[3];
	uint32_t nv = 0;
	for (int i = 0; i < 4; i++)
		if (i != gone)
			v[nv++] = nodes[i].id;
	for (int i = 0; i < 4; i++)
		if (i != gone)
			wait_conf(i, v, nv, NULL, 0);
}

/* The removed node stays up but never leads again; the others serve. */
static void removed_node_stops(int gone)
{
	for (int round = 0; round < 5; round++) {
		append_many(10);
		for (int r = 0; r < 200; r++)
			pump();
		for (uint32_t p = 0; p < NPARTS; p++) {
			int l = leader_of(p);
			cr_assert(l >= 0 && l != gone, "partition %u led by %d",
				  p, l + 1);
			struct pe_raft_status st = status(gone, p);
			cr_assert_neq(st.role, PE_LEADER);
		}
	}
	/* its proposals fail NOTLEADER */
	struct pe_input in = {.type = 1, .len = 1, .payload = "x"};
	const char *key = "c/conv-0";
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	struct ack a = {0};
	cr_assert_eq(pe_append(nodes[gone].e, &q, on_ack, &a), 0);
	for (int r = 0; r < MAX_PUMP && !atomic_load(&a.done); r++)
		pump();
	cr_assert_eq(a.r.err, -PARLEY_ENOTLEADER);
}

/* With voters {others} of three, a second one is killed: the two left
 * (node 4 among them) must still commit: node 4 is a real voter. */
static void new_voter_counts(int gone, int kill)
{
	node_kill(kill);
	node_close(gone); /* no help from the removed node either */
	wait_leaders();
	append_many(15);
	for (int i = 0; i < 4; i++)
		if (nodes[i].up) {
			wait_caught_up(i);
			check_node(i);
		}
}

Test(membership, learner_by_log_promote_remove_founder)
{
	cluster_start(0); /* default kept log: catch-up by log */
	wait_leaders();
	append_many(40);
	int gone = leader_of(0); /* remove a leader: the hard case */
	grow_and_shrink(gone);
	/* caught up by log: no snapshot was needed */
	for (uint32_t p = 0; p < NPARTS; p++)
		cr_assert_eq(status(3, p).snap_installed, 0);
	removed_node_stops(gone);
	wait_caught_up(3);
	check_node(3);
	int kill = gone == 1 ? 2 : 1;
	new_voter_counts(gone, kill);
}

Test(membership, learner_by_snapshot)
{
	cluster_start(2048); /* a small kept log: the learner needs images */
	wait_leaders();
	append_many(250);
	node_open(3);
	for (uint32_t p = 0; p < NPARTS; p++)
		conf_change(p, PE_CONF_ADD_LEARNER, 4, 5);
	append_many(20);
	wait_caught_up(3);
	uint64_t inst = 0;
	for (uint32_t p = 0; p < NPARTS; p++)
		inst += status(3, p).snap_installed;
	cr_assert_gt(inst, 0, "node 4 installed no snapshot");
	check_node(3);
	const uint64_t v3[] = {1, 2, 3}, l4[] = {4};
	wait_conf(3, v3, 3, l4, 1);
	for (uint32_t p = 0; p < NPARTS; p++)
		conf_change(p, PE_CONF_PROMOTE, 4, 5);
	const uint64_t v4[] = {1, 2, 3, 4};
	for (int i = 0; i < 4; i++)
		wait_conf(i, v4, 4, NULL, 0);
	/* a fifth node joins later still, by snapshot too */
	node_open(4);
	for (uint32_t p = 0; p < NPARTS; p++)
		conf_change(p, PE_CONF_ADD_LEARNER, 5, 5);
	append_many(10);
	wait_caught_up(4);
	check_node(4);
	const uint64_t l5[] = {5};
	wait_conf(4, v4, 4, l5, 1);
	/* both joined by snapshot: after a restart their conf comes from
	 * what the install stored (the conf entries are below the snapshot
	 * index, in no WAL of theirs) */
	for (int i = 3; i < 5; i++) {
		flush_all(i);
		node_close(i);
		node_open(i);
		wait_conf(i, v4, 4, l5, 1);
	}
	append_many(10);
	for (int i = 0; i < 5; i++) {
		wait_caught_up(i);
		check_node(i);
	}
}

/* Node i's stored configuration of `part` (conf/<partition>, part_conf.c's
 * format): its index, and whether `id` is a member of it. */
static uint64_t stored_conf(int i, uint32_t part, uint64_t id, bool *member)
{
	char path[128];
	snprintf(path, sizeof path, "%s/conf/%u", nodes[i].dir, part);
	struct pio *io = nodes[i].io;
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, 0, &f), 0, "no %s", path);
	uint8_t b[256];
	int64_t n = io->ops->pread(io, f, b, sizeof b, 0);
	io->ops->close(io, f);
	cr_assert_geq(n, 44);
	uint64_t index = le_get64(b + 16);
	uint32_t members = le_get32(b + 32);
	cr_assert_eq((int64_t)(44 + members * 9), n);
	*member = false;
	for (uint32_t k = 0; k < members; k++)
		*member |= le_get64(b + 36 + k * 9) == id;
	return index;
}

/* A snapshot image's meta carries the membership as of the image's index
 * (raft.h): the learner's install stores it at that index. The change
 * that added it commits after the leaders' last flush (the test flushes
 * first, so no image needs one to reach the compaction point), so the
 * image must wait for a flush past it (part_snap_image); it carried the leader's
 * configuration of the moment at the older index before, which the
 * learner then stored with node 4 a member at an index below the entry
 * that added it, and re-applied that entry onto it. */
Test(membership, snapshot_image_conf_is_as_of_its_index)
{
	cluster_start(2048); /* a small kept log: the learner needs images */
	wait_leaders();
	append_many(250);
	/* every founder flushed: the leaders' images need no flush first */
	for (int i = 0; i < 3; i++)
		flush_all(i);
	node_open(3);
	uint64_t added[NPARTS];
	for (uint32_t p = 0; p < NPARTS; p++)
		added[p] = conf_change(p, PE_CONF_ADD_LEARNER, 4, 0);
	append_many(20);
	wait_caught_up(3);
	uint32_t checked = 0;
	for (uint32_t p = 0; p < NPARTS; p++) {
		if (!status(3, p).snap_installed)
			continue;
		cr_assert_gt(added[p], 0);
		bool member;
		uint64_t at = stored_conf(3, p, 4, &member);
		cr_assert(member == (at >= added[p]),
			  "partition %u: conf stored as of %" PRIu64 " %s node "
			  "4, added at %" PRIu64, p, at,
			  member ? "holds" : "lacks", added[p]);
		checked++;
	}
	cr_assert_gt(checked, 0, "node 4 installed no snapshot");
	const uint64_t v3[] = {1, 2, 3}, l4[] = {4};
	wait_conf(3, v3, 3, l4, 1);
	check_node(3);
}

/* The conf survives a restart of every node, also once history holds
 * the entries (their WAL records released): only conf/<partition> and
 * snapshot meta know it then. */
Test(membership, conf_survives_restart_of_every_node)
{
	cluster_start(0);
	wait_leaders();
	append_many(30);
	int gone = 0; /* founder 1 leaves */
	grow_and_shrink(gone);
	append_many(20);
	for (int i = 1; i < 4; i++)
		wait_caught_up(i);
	/* flush everything on every node: the conf entries are history now */
	for (int i = 0; i < 4; i++)
		flush_all(i);
	append_many(5);
	for (int i = 1; i < 4; i++)
		wait_caught_up(i);
	for (int i = 0; i < 4; i++)
		node_close(i);
	net_clear();
	/* only the members come back (node 1 is gone for good) */
	for (int i = 1; i < 4; i++)
		node_open(i);
	const uint64_t v[] = {2, 3, 4};
	for (int i = 1; i < 4; i++)
		wait_conf(i, v, 3, NULL, 0);
	wait_leaders();
	append_many(10);
	/* then a crash of one member: {3, 4} or {2, 4} must still commit,
	 * which needs node 4's vote (with the founders' conf back, node 4
	 * would be no voter and this would stall) */
	node_kill(2);
	wait_leaders();
	append_many(10);
	for (int i = 1; i < 4; i++)
		if (nodes[i].up) {
			wait_caught_up(i);
			check_node(i);
		}
	/* and the crashed one recovers its conf from its disk */
	node_open(2);
	wait_conf(2, v, 3, NULL, 0);
	wait_caught_up(2);
	check_node(2);
}

/* A change proposed by a leader cut off from the others never commits:
 * its callback fails NOTLEADER once check-quorum deposes it; the majority
 * makes another change meanwhile; healed, the old leader's log (holding
 * its uncommitted conf entry) is overwritten and every node, also after
 * its restart, reports the majority's configuration. */
Test(membership, uncommitted_change_of_a_deposed_leader_is_dropped)
{
	cluster_start(0);
	wait_leaders();
	append_many(20);
	node_open(3); /* node 4 up, a member of nothing yet */
	node_open(4); /* node 5 too */
	uint32_t part = 0;
	int old = leader_of(part);
	isolated = old;
	static struct cack c; /* static: answered while the test goes on */
	c = (struct cack){0};
	cr_assert_eq(pe_partition_conf_change(nodes[old].e, part,
					      PE_CONF_ADD_LEARNER, 5, on_conf,
					      &c), 0);
	/* the majority elects and adds node 4 instead */
	int nl = -1;
	for (int r = 0; r < MAX_PUMP && nl < 0; r++) {
		for (int i = 0; i < 3; i++) {
			if (i == old)
				continue;
			struct pe_raft_status st = status(i, part);
			if (st.role == PE_LEADER)
				nl = i;
		}
		if (nl < 0)
			pump();
	}
	cr_assert(nl >= 0, "the majority elected no leader");
	for (int r = 0; r < MAX_PUMP && !atomic_load(&c.done); r++)
		pump();
	cr_assert(atomic_load(&c.done), "the deposed leader never answered");
	cr_assert_eq(c.r.err, -PARLEY_ENOTLEADER, "%s", parley_errname(c.r.err));
	struct cack c2 = {0};
	/* EAGAIN until the new leader committed an entry of its term: a
	 * tick (16 pumps) between tries, so a loaded machine gets the same
	 * number of ticks as a quiet one (200 tries without a pause between
	 * them ran out in a loaded full suite) */
	for (int attempt = 0; attempt < 2000; attempt++) {
		c2 = (struct cack){0};
		cr_assert_eq(pe_partition_conf_change(nodes[nl].e, part,
						      PE_CONF_ADD_LEARNER, 4,
						      on_conf, &c2), 0);
		for (int r = 0; r < MAX_PUMP && !atomic_load(&c2.done); r++)
			pump();
		if (c2.r.err != -PARLEY_EAGAIN)
			break;
		for (int k = 0; k < 16; k++)
			pump();
	}
	cr_assert_eq(c2.r.err, 0, "%s", parley_errname(c2.r.err));
	isolated = -1;
	const uint64_t v3[] = {1, 2, 3}, l4[] = {4};
	for (int r = 0; r < 200; r++)
		pump();
	for (int i = 0; i < 4; i++) {
		struct pe_raft_status st;
		for (int r = 0; r < MAX_PUMP; r++) {
			if (conf_is(i, part, v3, 3, l4, 1))
				break;
			pump();
		}
		st = status(i, part);
		cr_assert(conf_is(i, part, v3, 3, l4, 1),
			  "node %d: %u voters, %u learners (first %llu)", i + 1,
			  st.nvoters, st.nlearners,
			  (unsigned long long)(st.nlearners ? st.learners[0] : 0));
	}
	/* node 5 was never added: it stays outside, nobody sends to it */
	struct pe_raft_status s5 = status(4, part);
	cr_assert_eq(s5.applied, 0);
	/* the old leader restarts: its WAL's superseded conf record stays
	 * superseded */
	append_many(10);
	wait_caught_up(old);
	node_kill(old);
	node_open(old);
	for (int r = 0; r < MAX_PUMP && !conf_is(old, part, v3, 3, l4, 1); r++)
		pump();
	cr_assert(conf_is(old, part, v3, 3, l4, 1));
	wait_caught_up(old);
	check_node(old);
}
