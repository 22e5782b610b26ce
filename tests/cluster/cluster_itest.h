/*
 * cluster_itest.h — a static cluster of NODES parleyd processes on
 * loopback, for the cluster tests that drive real processes through
 * libparley (test_cluster_failover.c, test_cluster_group_failover.c).
 *
 * cluster_init() names the nodes node1..nodeN, picks their peer ports,
 * writes the client node list (nodes_list) and gives each node the
 * arguments of its place in the cluster (node id i+1, the cluster id,
 * every other node's peer address, a 20 ms Raft tick, 8 partitions, one
 * loop; with cluster_no_forward set before, `--forward 0`: a follower
 * answers NOTLEADER with the leader's address instead of forwarding, for
 * the tests of that redirect path and those that find the leader by it;
 * with cluster_follow0, `--leader-placement follow0`;
 * with cluster_rf set, `--replication-factor <it>`).
 * It starts nothing: the test starts (and kills, and restarts)
 * srv[i] with it_server_start, which reuses the arguments.
 *
 * Ownership: everything here is static storage of the including test;
 * srv[i].extra points into it.
 */
#ifndef PARLEY_CLUSTER_ITEST_H
#define PARLEY_CLUSTER_ITEST_H

#include "itest.h"

#define NODES 3

static struct it_server srv[NODES];
static char nodes_list[256]; /* "127.0.0.1:P1,127.0.0.1:P2,..." */
static bool cluster_no_forward; /* set before cluster_init: --forward 0 */
/* set before cluster_init: --replication-factor (NULL = the default, 3;
 * "0" = every node a voter of every partition, docs/CLUSTER.md §3.7) */
static const char *cluster_rf;
/* set before cluster_init: --partitions (NULL = 8) */
static const char *cluster_partitions;
/* set before cluster_init: --leader-placement follow0 (one node leads
 * every partition), for the tests whose scenario is that layout; the
 * others run with parleyd's default (spread) */
static bool cluster_follow0;

static void cluster_init(const char *cluster_id)
{
	static uint16_t peer_port[NODES];
	static char peers_arg[NODES][128];
	static char node_arg[NODES][8], port_arg[NODES][8];
	for (int i = 0; i < NODES; i++) {
		char name[16];
		snprintf(name, sizeof name, "node%d", i + 1);
		it_server_init(&srv[i], name);
		peer_port[i] = it_free_port();
	}
	int n = 0;
	for (int i = 0; i < NODES; i++)
		n += snprintf(nodes_list + n, sizeof nodes_list - (size_t)n,
			      "%s127.0.0.1:%u", i ? "," : "", srv[i].port);
	for (int i = 0; i < NODES; i++) {
		int m = 0;
		for (int j = 0; j < NODES; j++)
			if (j != i)
				m += snprintf(peers_arg[i] + m,
					      sizeof peers_arg[i] - (size_t)m,
					      "%s%d=127.0.0.1:%u", m ? "," : "",
					      j + 1, peer_port[j]);
		snprintf(node_arg[i], sizeof node_arg[i], "%d", i + 1);
		snprintf(port_arg[i], sizeof port_arg[i], "%u", peer_port[i]);
		const char *x[] = {"--node-id", node_arg[i], "--cluster-id",
				   cluster_id, "--peer-port", port_arg[i],
				   "--peers", peers_arg[i], "--raft-tick-ms", "20",
				   "--partitions",
				   cluster_partitions ? cluster_partitions : "8",
				   "--loops", "1", NULL};
		int k = 0;
		for (; x[k]; k++)
			srv[i].extra[k] = x[k];
		if (cluster_no_forward) {
			srv[i].extra[k++] = "--forward";
			srv[i].extra[k++] = "0";
		}
		if (cluster_rf) {
			srv[i].extra[k++] = "--replication-factor";
			srv[i].extra[k++] = cluster_rf;
		}
		if (cluster_follow0) {
			srv[i].extra[k++] = "--leader-placement";
			srv[i].extra[k++] = "follow0";
		}
		srv[i].extra[k] = NULL;
	}
}

#endif /* PARLEY_CLUSTER_ITEST_H */
