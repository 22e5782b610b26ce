/*
 * test_peer_node.c — parleyd's replication glue (server/peer_node.c): the
 * `peers` configuration value, and two nodes of a three-voter engine
 * exchanging Raft messages over real peer links until a partition has a
 * leader both agree on; the removal check (peer_node_removal_safe) and
 * the membership worker's refusals without a running node.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parley_engine.h"
#include "peer_node.h"

/* A loopback port nothing listens on now (bound to 0, then closed). */
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

Test(peer_node, parses_peers)
{
	struct peer_node_config c;
	memset(&c, 0, sizeof c);
	cr_assert_eq(peer_node_parse_peers("2=127.0.0.1:7512,3=[::1]:7513", &c), 0);
	cr_assert_eq(c.npeers, 2);
	cr_assert_eq(c.peers[0].id, 2);
	cr_assert_str_eq(c.peers[0].addr, "127.0.0.1");
	cr_assert_eq(c.peers[0].port, 7512);
	cr_assert_eq(c.peers[1].id, 3);
	cr_assert_str_eq(c.peers[1].addr, "::1");
	cr_assert_eq(c.peers[1].port, 7513);
	const char *bad[] = {"2", "2=", "=1.2.3.4:5", "0=1.2.3.4:5",
			     "2=1.2.3.4", "2=1.2.3.4:0", "2=1.2.3.4:65536",
			     "2=[::1:5", "x=1.2.3.4:5", "2=1.2.3.4:5,",
			     "2=1.2.3.4:5,,3=1.2.3.4:6"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(peer_node_parse_peers(bad[i], &c), -PARLEY_EINVAL,
			     "\"%s\" accepted", bad[i]);
	char many[1024] = "";
	for (unsigned i = 0; i <= PEER_NODE_MAX_PEERS; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many),
			 "%s%u=127.0.0.1:%u", i ? "," : "", i + 2, 7000 + i);
	cr_assert_eq(peer_node_parse_peers(many, &c), -PARLEY_EINVAL);
}

/* Three engines, each with its peer node on loopback: a partition
 * elects, an append on its leader is acknowledged (a quorum over real
 * links) and read back on every node. */
/* docs/CLUSTER.md §3.7: a removal leaves the healthy voters a quorum of
 * the new configuration, or it is refused. */
Test(peer_node, removal_safe_counts_healthy_voters_left)
{
	uint32_t left, need;
	const uint64_t v3[] = {1, 2, 3};
	/* all healthy: 3 -> 2 voters, both healthy */
	const bool all3[] = {true, true, true};
	cr_assert(peer_node_removal_safe(v3, all3, 3, 2, &left, &need));
	cr_assert_eq(left, 2);
	cr_assert_eq(need, 2);
	/* node 3 dead: removing 2 leaves {1, 3}, one healthy of a quorum 2 */
	const bool dead3[] = {true, true, false};
	cr_assert_not(peer_node_removal_safe(v3, dead3, 3, 2, &left, &need));
	cr_assert_eq(left, 1);
	cr_assert_eq(need, 2);
	/* ... while removing the dead node itself is safe */
	cr_assert(peer_node_removal_safe(v3, dead3, 3, 3, &left, &need));
	cr_assert_eq(left, 2);
	/* four voters, one dead: removing a live one leaves 2 of 3 healthy */
	const uint64_t v4[] = {1, 2, 3, 4};
	const bool dead4[] = {true, false, true, true};
	cr_assert(peer_node_removal_safe(v4, dead4, 4, 3, &left, &need));
	cr_assert_eq(left, 2);
	cr_assert_eq(need, 2);
	/* four voters, two dead (2, 3): removing live 4 leaves 1 healthy of
	 * {1, 2, 3}; removing dead 2 leaves {1, 3, 4}, 2 healthy: a quorum */
	const bool dead44[] = {true, false, false, true};
	cr_assert_not(peer_node_removal_safe(v4, dead44, 4, 4, &left, &need));
	cr_assert_eq(left, 1);
	cr_assert(peer_node_removal_safe(v4, dead44, 4, 2, &left, &need));
	cr_assert_eq(left, 2);
	cr_assert_eq(need, 2);
	/* five voters, two dead: removing a live one leaves 2 of 4 (need 3) */
	const uint64_t v5[] = {1, 2, 3, 4, 5};
	const bool dead5[] = {true, true, false, false, true};
	cr_assert_not(peer_node_removal_safe(v5, dead5, 5, 2, &left, &need));
	cr_assert_eq(left, 2);
	cr_assert_eq(need, 3);
	cr_assert(peer_node_removal_safe(v5, dead5, 5, 3, &left, &need));
	cr_assert_eq(need, 3);
	/* not a voter (a learner, or gone): the quorum does not change */
	cr_assert(peer_node_removal_safe(v3, dead3, 3, 9, &left, &need));
	cr_assert_eq(need, 0);
	/* the only voter: left to the engine's own refusal */
	const uint64_t v1[] = {1};
	const bool h1[] = {true};
	cr_assert(peer_node_removal_safe(v1, h1, 1, 1, &left, &need));
}

/* Operations need a started node: refused with ECLOSED, no thread. */
Test(peer_node, op_refused_before_start)
{
	struct peer_node_config c;
	memset(&c, 0, sizeof c);
	c.cluster_id = 3;
	c.node_id = 1;
	c.listen_port = free_port();
	cr_assert_eq(peer_node_parse_peers("2=127.0.0.1:9", &c), 0);
	struct peer_node *n = NULL;
	cr_assert_eq(peer_node_new(&c, &n), 0);
	struct peer_node_op op = {.kind = PEER_NODE_OP_REMOVE, .id = 2,
				  .wait_ms = 1000};
	uint64_t t = 0;
	char msg[256];
	cr_assert_eq(peer_node_op_start(n, &op, &t, msg, sizeof msg),
		     -PARLEY_ECLOSED);
	int rc;
	cr_assert_eq(peer_node_op_result(n, 1, &rc, msg, sizeof msg),
		     -PARLEY_ENOTFOUND);
	uint64_t ms;
	cr_assert_not(peer_node_op_running(n, &op, &ms));
	char d[96];
	op.force = true;
	peer_node_op_describe(&op, 12500, d, sizeof d);
	cr_assert_str_eq(d, "remove node 2 (forced), 12 s");
	peer_node_stop(n);
}

Test(peer_node, three_engines_replicate_over_peer_links, .timeout = 120)
{
	char dirs[3][64];
	struct peer_node *pn[3];
	struct pe_engine *e[3];
	uint16_t ports[3];
	for (int i = 0; i < 3; i++)
		ports[i] = free_port();
	for (int i = 0; i < 3; i++) {
		struct peer_node_config c;
		memset(&c, 0, sizeof c);
		c.cluster_id = 9;
		c.node_id = (uint64_t)i + 1;
		c.listen_port = ports[i];
		c.tick_ms = 20;
		for (int j = 0, k = 0; j < 3; j++)
			if (j != i) {
				c.peers[k].id = (uint64_t)j + 1;
				snprintf(c.peers[k].addr, sizeof c.peers[k].addr,
					 "127.0.0.1");
				c.peers[k].port = ports[j];
				k++;
			}
		c.npeers = 2;
		cr_assert_eq(peer_node_new(&c, &pn[i]), 0, "port %u", ports[i]);
		snprintf(dirs[i], sizeof dirs[i], "/tmp/parley-pn-XXXXXX");
		cr_assert_not_null(mkdtemp(dirs[i]));
		struct pe_options o = {0};
		o.dir = dirs[i];
		o.partitions = 2;
		o.shards = 1;
		o.wal_segment_bytes = 16u << 20;
		o.cluster = peer_node_cluster(pn[i]);
		cr_assert_eq(pe_open(&o, &e[i]), 0);
		cr_assert_eq(peer_node_start(pn[i], e[i]), 0);
	}
	const char *key = "c/x";
	uint32_t part = pe_partition_of(e[0], key, strlen(key));
	struct pe_append_result r = {.err = -1};
	for (int t = 0; t < 400 && r.err; t++) {
		for (int i = 0; i < 3 && r.err; i++) {
			if (pe_partition_leader_check(e[i], part))
				continue;
			struct pe_input in = {.type = 1, .len = 2, .payload = "hi"};
			struct pe_append_req q = {.key = key, .klen = strlen(key),
						  .expected_last_seq = PE_NO_EXPECT,
						  .entries = &in, .count = 1};
			q.producer[0] = 7;
			(void)pe_append_sync(e[i], &q, &r);
		}
		if (r.err)
			usleep(50000);
	}
	cr_assert_eq(r.err, 0, "no acknowledged append: %s",
		     parley_errname(r.err));
	cr_assert_eq(r.seq, 1);
	for (int i = 0; i < 3; i++) {
		struct pe_meta m = {0};
		for (int t = 0; t < 200; t++) {
			(void)pe_meta_sync(e[i], key, strlen(key), &m);
			if (m.last_seq == 1)
				break;
			usleep(20000);
		}
		cr_assert_eq(m.last_seq, 1, "node %d did not apply it", i + 1);
	}
	for (int i = 0; i < 3; i++)
		peer_node_halt(pn[i]);
	for (int i = 0; i < 3; i++) {
		pe_close(e[i]);
		peer_node_stop(pn[i]);
		char cmd[256];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dirs[i]);
		(void)system(cmd);
	}
}
