/*
 * test_peer_members.c — peers added and removed at run time
 * (server/peer_node.c peer_node_add_peer / _remove_peer, server/peer.c
 * peer_add after the first poll / peer_remove) under the engine's
 * membership changes (parley_engine.h contract item 12), over real
 * loopback links: three founders {1,2,3} replicate; node 4 starts empty
 * with the founders as its bootstrap and the three as peers, the founders
 * learn its address at run time, every partition adds it as a learner
 * and promotes it; it applies what the leaders acknowledge. Then node 3
 * is removed from every partition and forgotten by the transports (link
 * down, its HELLOs refused), is stopped, and the three left still
 * commit; with node 1 stopped as well, {2, 4} still commit: a quorum of
 * {1, 2, 4} only because node 4 is a voter. Last, nodes 1 and then one
 * of {2, 4} are removed, and the one left, asked to remove itself
 * (peer_node_remove_node), answers that it has no other current voter
 * to hand its leadership to, and goes on committing alone. A second
 * test: a voter's removal waits while the voters it would leave are not
 * a quorum of caught-up replicas (peer_node_conf_one).
 * members_record_forwarded_to_the_stream_leader: with spread leaders,
 * another node than partition 0's leader leads the members stream's
 * partition; an add-node there writes its members record by forwarding
 * it to that leader (peer_node.c members_write; before, it answered
 * "members record not written: PARLEY_ENOTLEADER").
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "parley_common.h"
#include "parley_engine.h"
#include "peer_node.h"

#define N 4
#define NPARTS_MAX 8
static uint32_t nparts = 2; /* partitions of the engines start() opens */
static bool spread;         /* peer_node_config.leader_spread */

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t l = sizeof a;
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static char dirs[N][64];
static struct peer_node *pn[N];
static struct pe_engine *eng[N];
static uint16_t ports[N];
static const uint64_t founders[3] = {1, 2, 3};

static void start(int i, bool joiner)
{
	struct peer_node_config c;
	memset(&c, 0, sizeof c);
	c.cluster_id = 9;
	c.node_id = (uint64_t)i + 1;
	c.listen_port = ports[i];
	c.tick_ms = 20;
	c.leader_spread = spread;
	int k = 0;
	for (int j = 0; j < 3; j++) /* the founders know each other */
		if (j != i) {
			c.peers[k].id = (uint64_t)j + 1;
			snprintf(c.peers[k].addr, sizeof c.peers[k].addr,
				 "127.0.0.1");
			c.peers[k].port = ports[j];
			k++;
		}
	c.npeers = (uint32_t)k;
	if (joiner) {
		c.founders = founders;
		c.nfounders = 3;
	}
	cr_assert_eq(peer_node_new(&c, &pn[i]), 0, "port %u", ports[i]);
	snprintf(dirs[i], sizeof dirs[i], "/tmp/parley-pm-XXXXXX");
	cr_assert_not_null(mkdtemp(dirs[i]));
	struct pe_options o = {0};
	o.dir = dirs[i];
	o.partitions = nparts;
	o.shards = 1;
	o.wal_segment_bytes = 16u << 20;
	o.cluster = peer_node_cluster(pn[i]);
	cr_assert_eq(pe_open(&o, &eng[i]), 0);
	cr_assert_eq(peer_node_start(pn[i], eng[i]), 0);
}

static void stop(int i)
{
	if (!pn[i])
		return;
	peer_node_halt(pn[i]);
	pe_close(eng[i]);
	peer_node_stop(pn[i]);
	pn[i] = NULL;
	eng[i] = NULL;
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dirs[i]);
	(void)system(cmd);
}

static void fini(void)
{
	for (int i = 0; i < N; i++)
		if (pn[i])
			peer_node_halt(pn[i]);
	for (int i = 0; i < N; i++)
		stop(i);
}

/* The node leading `part` (and caught up with its term), or -1. */
static int leader(uint32_t part)
{
	for (int i = 0; i < N; i++)
		if (eng[i] && pe_partition_leader_check(eng[i], part) == 0)
			return i;
	return -1;
}

static uint64_t append_acked(const char *key, uint8_t pid)
{
	uint32_t part = pe_partition_of(eng[1], key, strlen(key));
	for (int t = 0; t < 400; t++) {
		int l = leader(part);
		if (l >= 0) {
			struct pe_input in = {.type = 1, .len = 2, .payload = "hi"};
			struct pe_append_req q = {.key = key, .klen = strlen(key),
						  .expected_last_seq = PE_NO_EXPECT,
						  .entries = &in, .count = 1};
			q.producer[0] = pid;
			q.producer[1] = 0x77;
			struct pe_append_result r;
			if (pe_append_sync(eng[l], &q, &r) == 0)
				return r.seq;
		}
		usleep(50000);
	}
	cr_assert_fail("append on %s never acknowledged", key);
	return 0;
}

static void conf_all(enum pe_conf_op op, uint64_t node)
{
	for (uint32_t p = 0; p < nparts; p++) {
		int done = 0;
		for (int t = 0; t < 400 && !done; t++) {
			int l = leader(p);
			if (l >= 0) {
				struct pe_conf_result r;
				int rc = pe_partition_conf_change_sync(
					eng[l], p, op, node, &r);
				/* EINVAL: an earlier attempt committed */
				if (!rc || (t && rc == -PARLEY_EINVAL))
					done = 1;
				else
					cr_assert(rc == -PARLEY_EAGAIN ||
						  rc == -PARLEY_ENOTLEADER,
						  "conf change: %s",
						  parley_errname(rc));
			}
			if (!done)
				usleep(50000);
		}
		cr_assert(done, "partition %u: conf change never committed", p);
	}
}

static void wait_applied(int i, const char *key, uint64_t seq)
{
	struct pe_meta m = {0};
	for (int t = 0; t < 400; t++) {
		(void)pe_meta_sync(eng[i], key, strlen(key), &m);
		if (m.last_seq >= seq)
			return;
		usleep(20000);
	}
	cr_assert_fail("node %d did not apply %s seq %llu (has %llu)", i + 1,
		       key, (unsigned long long)seq,
		       (unsigned long long)m.last_seq);
}

static bool metrics_have(int i, const char *needle)
{
	static char buf[1 << 16];
	(void)peer_node_metrics_text(pn[i], buf, sizeof buf);
	return strstr(buf, needle) != NULL;
}

TestSuite(peer_members, .fini = fini, .timeout = 180);

Test(peer_members, node_joins_and_a_founder_leaves_at_run_time)
{
	for (int i = 0; i < N; i++)
		ports[i] = free_port();
	for (int i = 0; i < 3; i++)
		start(i, false);
	uint64_t s = append_acked("c/a", 1);
	cr_assert_eq(s, 1);
	/* bad runtime peers are refused at once */
	cr_assert_eq(peer_node_add_peer(pn[0], 0, "127.0.0.1", 5), -PARLEY_EINVAL);
	cr_assert_eq(peer_node_add_peer(pn[0], 1, "127.0.0.1", 5), -PARLEY_EINVAL);
	cr_assert_eq(peer_node_add_peer(pn[0], 4, "localhost", 5), -PARLEY_EINVAL);
	cr_assert_eq(peer_node_add_peer(pn[0], 4, "127.0.0.1", 0), -PARLEY_EINVAL);
	/* node 4: empty, the founders as bootstrap, the three as peers */
	start(3, true);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(peer_node_add_peer(pn[i], 4, "127.0.0.1", ports[3]), 0);
	conf_all(PE_CONF_ADD_LEARNER, 4);
	wait_applied(3, "c/a", 1);
	conf_all(PE_CONF_PROMOTE, 4);
	for (uint32_t p = 0; p < nparts; p++) {
		struct pe_raft_status st;
		for (int t = 0; t < 200; t++) {
			cr_assert_eq(pe_raft_status(eng[3], p, &st), 0);
			if (st.nvoters == 4)
				break;
			usleep(20000);
		}
		cr_assert_eq(st.nvoters, 4, "partition %u", p);
		cr_assert_eq(st.voters[3], 4);
	}
	s = append_acked("c/a", 2);
	wait_applied(3, "c/a", s);
	cr_assert(metrics_have(0, "parley_peer_link_up{node=\"4\"} 1"));
	/* node 3 leaves: removed from every group, then from the transports */
	conf_all(PE_CONF_REMOVE, 3);
	for (int i = 0; i < N; i++)
		if (i != 2)
			cr_assert_eq(peer_node_remove_peer(pn[i], 3), 0);
	bool down = false;
	for (int t = 0; t < 200 && !down; t++) {
		down = metrics_have(0, "parley_peer_link_up{node=\"3\"} 0") &&
		       metrics_have(3, "parley_peer_link_up{node=\"3\"} 0");
		if (!down)
			usleep(20000);
	}
	cr_assert(down, "links to the removed node still up");
	/* it stays down: its redials are refused (UNKNOWN) */
	usleep(300000);
	cr_assert(metrics_have(1, "parley_peer_link_up{node=\"3\"} 0"));
	stop(2);
	s = append_acked("c/b", 3);
	/* with node 1 gone too, {2, 4} is a quorum of {1, 2, 4} */
	peer_node_halt(pn[0]);
	stop(0);
	s = append_acked("c/b", 4);
	wait_applied(3, "c/b", s);
	wait_applied(1, "c/b", s);
	/* the dead node 1 and then the follower of {2, 4} are removed: the
	 * one left, asked to remove itself, has no current voter to hand its
	 * leadership to and says so (docs/CLUSTER.md §3.7), leading on */
	conf_all(PE_CONF_REMOVE, 1);
	int l = -1;
	for (int t = 0; t < 400 && l < 0; t++)
		if ((l = leader(0)) < 0)
			usleep(20000);
	cr_assert_geq(l, 0);
	conf_all(PE_CONF_REMOVE, l == 1 ? 4 : 2);
	l = l == 1 ? 1 : 3;
	char msg[512];
	int rc = peer_node_remove_node(pn[l], (uint64_t)l + 1, false, 30000, msg,
				       sizeof msg);
	cr_assert_eq(rc, -PARLEY_EAGAIN, "%s: %s", parley_errname(rc), msg);
	cr_assert(strstr(msg, "no other current voter"), "%s", msg);
	cr_assert(!strstr(msg, "leader="), "%s", msg);
	for (uint32_t p = 0; p < nparts; p++) {
		struct pe_raft_status st;
		cr_assert_eq(pe_raft_status(eng[l], p, &st), 0);
		cr_assert_eq(st.nvoters, 1);
		cr_assert_eq(st.voters[0], (uint64_t)l + 1);
	}
	s = append_acked("c/b", 5);
	wait_applied(l, "c/b", s);
}

/* The members stream's partition led by another node than partition 0's
 * leader (spread leaders, no automatic hand-over): partition 0's leader
 * runs add-node, whose members record goes to the stream's partition.
 * Node 4 never starts, so the add stops at the promotion's wait
 * (ETIMEDOUT, a learner); what counts is that its record was written
 * and every founder applied it. Without the forwarding in members_write
 * the add failed NOTLEADER ("members record not written"). */
Test(peer_members, members_record_forwarded_to_the_stream_leader)
{
	spread = true;
	/* the fewest partitions where the stream is not in partition 0
	 * (pe_partition_of: the key's hash modulo the count) */
	uint64_t h = parley_hash_key("s/cluster/nodes", 15);
	for (nparts = 2; nparts <= NPARTS_MAX && h % nparts == 0; nparts++)
		;
	cr_assert_leq(nparts, NPARTS_MAX);
	for (int i = 0; i < N; i++)
		ports[i] = free_port();
	for (int i = 0; i < 3; i++)
		start(i, false);
	uint32_t mp = pe_partition_of(eng[0], "s/cluster/nodes", 15);
	cr_assert_neq(mp, 0);
	(void)append_acked("c/a", 1); /* the groups have leaders */
	int l0 = -1, lm = -1;
	for (int t = 0; t < 400 && (l0 < 0 || lm < 0); t++) {
		l0 = leader(0);
		lm = leader(mp);
		if (l0 < 0 || lm < 0)
			usleep(20000);
	}
	cr_assert(l0 >= 0 && lm >= 0, "no leaders");
	char msg[1024];
	if (lm == l0) { /* move the stream's partition away */
		int to = (l0 + 1) % 3;
		int rc = peer_node_transfer(pn[l0], mp, (uint64_t)to + 1, 10000,
					    msg, sizeof msg);
		cr_assert_eq(rc, 0, "transfer: %s: %s", parley_errname(rc), msg);
		lm = -1;
		for (int t = 0; t < 400 && lm != to; t++)
			if ((lm = leader(mp)) != to)
				usleep(20000);
		cr_assert_eq(lm, to, "partition %u not led by node %d", mp, to + 1);
	}
	cr_assert_eq(leader(0), l0, "partition 0's leader changed");
	char peer[64];
	snprintf(peer, sizeof peer, "127.0.0.1:%u", ports[3]);
	int rc = peer_node_add_node(pn[l0], 4, peer, "127.0.0.1:7004",
				    "127.0.0.1:8004", 1500, msg, sizeof msg);
	cr_assert(!strstr(msg, "members record not written"), "%s", msg);
	cr_assert(rc == 0 || rc == -PARLEY_ETIMEDOUT, "add: %s: %s",
		  parley_errname(rc), msg);
	for (int i = 0; i < 3; i++) {
		char a[64] = "";
		bool got = false;
		for (int t = 0; t < 200 && !got; t++)
			if (!(got = peer_node_recorded_addr(pn[i], 4, "client",
							    a, sizeof a)))
				usleep(20000);
		cr_assert(got, "node %d did not apply node 4's record", i + 1);
		cr_assert_str_eq(a, "127.0.0.1:7004");
	}
}

/* A voter is removed (peer_node_conf_one, what placement's moves and
 * POST /cluster/conf use) only when the voters it leaves hold a quorum
 * of caught-up, active replicas: with node 3 stopped, removing node 2
 * from {1, 2, 3} would leave {1, 3}, one of them dead, and is refused
 * EAGAIN (retried by the mover) instead of proposed; removing the dead
 * node 3 leaves {1, 2}, both current, and is done. */
Test(peer_members, removal_waits_for_a_quorum_of_current_voters_left)
{
	for (int i = 0; i < 3; i++)
		ports[i] = free_port();
	for (int i = 0; i < 3; i++)
		start(i, false);
	uint64_t s = append_acked("c/a", 1);
	wait_applied(2, "c/a", s);
	/* partition 0 led by node 1 or 2, so that node 3 can be stopped */
	int l = -1;
	for (int t = 0; t < 400; t++) {
		l = leader(0);
		if (l == 2) {
			(void)pe_raft_transfer_partition(eng[2], 0, 1);
			l = -1;
		}
		if (l >= 0)
			break;
		usleep(20000);
	}
	cr_assert_geq(l, 0, "partition 0: no leader on node 1 or 2");
	peer_node_halt(pn[2]);
	stop(2);
	s = append_acked("c/a", 2); /* node 3 falls behind */
	/* the leader sees node 3 inactive within two election timeouts */
	bool inactive = false;
	for (int t = 0; t < 400 && !inactive; t++) {
		struct pe_raft_status st;
		if (leader(0) == l && pe_raft_status(eng[l], 0, &st) == 0)
			for (uint32_t j = 0; j < st.n_members; j++)
				if (st.members[j].node == 3 && !st.members[j].active)
					inactive = true;
		if (!inactive)
			usleep(20000);
	}
	cr_assert(inactive, "node 3 still active on the leader");
	char msg[256];
	uint64_t other = l == 0 ? 2 : 1;
	int rc = peer_node_conf_one(pn[l], 0, PE_CONF_REMOVE, other, msg,
				    sizeof msg);
	cr_assert_eq(rc, -PARLEY_EAGAIN, "%s: %s", parley_errname(rc), msg);
	cr_assert(strstr(msg, "fewer than a quorum of caught-up voters"), "%s",
		  msg);
	struct pe_raft_status st;
	cr_assert_eq(pe_raft_status(eng[l], 0, &st), 0);
	cr_assert_eq(st.nvoters, 3, "nothing proposed");
	rc = peer_node_conf_one(pn[l], 0, PE_CONF_REMOVE, 3, msg, sizeof msg);
	cr_assert_eq(rc, 0, "%s: %s", parley_errname(rc), msg);
	/* the status is published after the change's answer */
	for (int t = 0; t < 200; t++) {
		cr_assert_eq(pe_raft_status(eng[l], 0, &st), 0);
		if (st.nvoters == 2)
			break;
		usleep(20000);
	}
	cr_assert_eq(st.nvoters, 2);
}
