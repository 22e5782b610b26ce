/*
 * ctl_cluster.c — `parleyctl cluster <subcommand>`: the cluster commands,
 * each in its own function (add-node / remove-node:
 * ctl_cluster_members.c).
 */
#include <stdio.h>
#include <string.h>

#include "parleyctl.h"

int ctl_cluster_main(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "add-node") ||
			  !strcmp(argv[1], "remove-node")))
		return ctl_cluster_members_main(argc - 1, argv + 1);
	fprintf(argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr,
		"usage: parleyctl cluster add-node|remove-node [options] "
		"(--help for each)\n");
	return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
}
