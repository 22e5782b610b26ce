/*
 * ctl_cluster_rebalance.c — `parleyctl cluster rebalance`: spread the
 * partitions' leaderships over the nodes (docs/CLUSTER.md §3.2), for a
 * cluster running with --leader-placement spread.
 *
 *   parleyctl cluster rebalance --admin HOST:PORT[,HOST:PORT...]
 *
 * A leadership can only be handed over by the node that holds it, so the
 * command asks every given node in turn, POST /cluster/rebalance: each
 * hands the partitions it leads beyond its share (ceil(partitions /
 * nodes)) to the least loaded nodes below their share, waits until the
 * transfers took effect (at most 10 s) and answers with the counts it
 * sees. Passes repeat (at most REBALANCE_PASSES) until a whole pass
 * handed nothing over. Give every node's admin address: a node not
 * asked keeps what it leads. (With follow0 placement every partition
 * goes back to partition 0's leader at once.)
 * Exit codes: 0 done, 1 a node refused or did not finish in time, 2
 * usage, 3 no node answered.
 * Threads: one, blocking sockets with a receive timeout.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parleyctl.h"

#define REBALANCE_PASSES 3
#define REBALANCE_REPLY 8192

static void rebalance_usage(FILE *f)
{
	fprintf(f, "usage: parleyctl cluster rebalance --admin "
		"HOST:PORT[,HOST:PORT...]\n"
		"--admin: the admin ports of every node; each hands the "
		"partitions it leads beyond\n  its share to the least loaded "
		"nodes (POST /cluster/rebalance).\n");
}

int ctl_cluster_rebalance_main(int argc, char **argv)
{
	const char *admins = NULL;
	for (int i = 1; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			rebalance_usage(stdout);
			return 0;
		} else if (v && !strcmp(argv[i], "--admin")) {
			admins = v;
		} else {
			rebalance_usage(stderr);
			return 2;
		}
	}
	if (!admins || !*admins) {
		rebalance_usage(stderr);
		return 2;
	}
	bool answered = false, failed = false;
	for (int pass = 0; pass < REBALANCE_PASSES; pass++) {
		unsigned handed = 0;
		char list[1024];
		snprintf(list, sizeof list, "%s", admins);
		char *save = NULL;
		for (char *a = strtok_r(list, ",", &save); a;
		     a = strtok_r(NULL, ",", &save)) {
			int code = 0;
			char body[REBALANCE_REPLY];
			if (ctl_http_post(a, "/cluster/rebalance", &code, body,
					  sizeof body)) {
				fprintf(stderr, "%s: no answer\n", a);
				continue;
			}
			answered = true;
			fprintf(code == 200 ? stdout : stderr, "%s: %d %s", a,
				code, body);
			if (code != 200) {
				failed = true;
				continue;
			}
			const char *h = strstr(body, " handed ");
			if (h)
				handed += (unsigned)strtoul(h + 8, NULL, 10);
		}
		if (!handed)
			break;
	}
	if (!answered) {
		fprintf(stderr, "no node answered\n");
		return 3;
	}
	return failed ? 1 : 0;
}
