/*
 * test_peer_partition.c — ctest launcher for test_peer_partition.sh (the
 * script does the work: namespaces, three cluster_peer_node processes, an
 * nftables partition of the leader, re-election, rejoin). Paths come from
 * the environment parley_add_tests sets (PARLEY_SRC_DIR, PARLEY_BIN_DIR).
 * The script's exit status is the test's: 0, 1, or 77 (skipped).
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
	const char *src = getenv("PARLEY_SRC_DIR"), *bin = getenv("PARLEY_BIN_DIR");
	if (!src || !bin) {
		fprintf(stderr, "PARLEY_SRC_DIR / PARLEY_BIN_DIR not set (run through ctest)\n");
		return 77;
	}
	char script[4096], node[4096];
	snprintf(script, sizeof script, "%s/tests/cluster/test_peer_partition.sh", src);
	snprintf(node, sizeof node, "%s/tests/cluster_peer_node", bin);
	execl("/bin/bash", "bash", script, node, (char *)NULL);
	perror("exec bash");
	return 1;
}
