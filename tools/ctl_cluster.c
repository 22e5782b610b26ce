/*
 * ctl_cluster.c — `parleyctl cluster <subcommand>`: the cluster commands'
 * dispatcher. Each subcommand lives in its own tools/ctl_cluster_<name>.c
 * (add-node and remove-node: ctl_cluster_members.c) and is listed in the
 * table below.
 *
 * Exit codes (parleyctl.h): those of the subcommand; 2 for an unknown one.
 * Threads: a CLI; single-threaded.
 */
#include <stdio.h>
#include <string.h>

#include "parleyctl.h"

struct cluster_cmd {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *help;
};

static const struct cluster_cmd cluster_cmds[] = {
	{"status", ctl_cluster_status_main,
	 "nodes, their health, each partition's replicas, leader, commit and "
	 "apply lag (GET /cluster of every node)"},
	{"add-node", ctl_cluster_members_main,
	 "add a node to every partition: learner, caught up, then voter "
	 "(POST /cluster/add-node on the leader's admin port)"},
	{"remove-node", ctl_cluster_members_main,
	 "take a node out of every partition (POST /cluster/remove-node)"},
	{"rebalance", ctl_cluster_rebalance_main,
	 "spread the partitions' leaderships so each node leads about "
	 "partitions / nodes (POST /cluster/rebalance on every node; "
	 "--leader-placement spread)"},
};

static void cluster_usage(FILE *f)
{
	fprintf(f, "usage: parleyctl cluster <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof cluster_cmds / sizeof cluster_cmds[0]; i++)
		fprintf(f, "  %-12s %s\n", cluster_cmds[i].name, cluster_cmds[i].help);
}

int ctl_cluster_main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		cluster_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < sizeof cluster_cmds / sizeof cluster_cmds[0]; i++)
		if (!strcmp(argv[1], cluster_cmds[i].name))
			return cluster_cmds[i].main(argc - 1, argv + 1);
	fprintf(stderr, "parleyctl cluster: unknown command '%s'\n", argv[1]);
	cluster_usage(stderr);
	return 2;
}
