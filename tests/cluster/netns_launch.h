/*
 * netns_launch.h — the body of every ctest launcher of
 * test_cluster_netns.sh (test_cluster_netns*.c, test_cluster_unsynced*.c,
 * test_cluster_walhdr.c): find the source and build trees ctest names in
 * PARLEY_SRC_DIR / PARLEY_BIN_DIR, then exec the script with the checker
 * (cluster_netns_chaos), the mode and an optional node count. The script's
 * exit status is the test's: 0, 1, or 77 (skipped). Each launcher's own
 * comment says what its mode proves.
 */
#ifndef PARLEY_NETNS_LAUNCH_H
#define PARLEY_NETNS_LAUNCH_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* nodes: NULL for the script's default (3). Returns only on failure. */
static inline int netns_launch(const char *mode, const char *nodes)
{
	const char *src = getenv("PARLEY_SRC_DIR"), *bin = getenv("PARLEY_BIN_DIR");
	if (!src || !bin) {
		fprintf(stderr, "PARLEY_SRC_DIR / PARLEY_BIN_DIR not set (run through ctest)\n");
		return 77;
	}
	char script[4096], chaos[4096];
	snprintf(script, sizeof script, "%s/tests/cluster/test_cluster_netns.sh", src);
	snprintf(chaos, sizeof chaos, "%s/tests/cluster_netns_chaos", bin);
	execl("/bin/bash", "bash", script, chaos, mode, nodes, (char *)NULL);
	perror("exec bash");
	return 1;
}

#endif /* PARLEY_NETNS_LAUNCH_H */
