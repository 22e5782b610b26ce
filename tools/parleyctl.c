/*
 * parleyctl.c — the admin CLI's dispatcher: `parleyctl <subcommand> ...`.
 *
 * Subcommands are listed in one table; each is implemented in
 * tools/ctl_<name>.c (see parleyctl.h for the exit-code convention).
 */
#include <stdio.h>
#include <string.h>

#include "parleyctl.h"

struct ctl_cmd {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *help;
};

static const struct ctl_cmd cmds[] = {
	{"inspect", ctl_inspect_main,
	 "offline look at a data directory: partitions, streams, entries, "
	 "checksum verification"},
	{"token", ctl_token_main, "mint a development JWT"},
	{"cluster", ctl_cluster_main,
	 "a running cluster: `cluster status` (nodes, partitions, lag)"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: parleyctl <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
	fprintf(f, "\n`parleyctl <command> --help` (or `parleyctl help <command>`) for a "
		   "command's options.\n"
		   "exit codes: 0 ok, 1 check failed, 2 usage, 3 runtime error\n");
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "help")) { /* parleyctl help [COMMAND] */
		if (argc < 3) {
			usage(stdout);
			return 0;
		}
		for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
			if (!strcmp(argv[2], cmds[i].name)) {
				char *hv[] = {argv[2], "--help", NULL};
				return cmds[i].main(2, hv);
			}
		fprintf(stderr, "parleyctl: unknown command '%s'\n", argv[2]);
		usage(stderr);
		return 2;
	}
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].main(argc - 1, argv + 1);
	fprintf(stderr, "parleyctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
