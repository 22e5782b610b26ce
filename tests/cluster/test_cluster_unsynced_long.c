/*
 * test_cluster_unsynced_long.c — ctest launcher for test_cluster_netns.sh in
 * mode unsynced-long (label cluster; long: `make test-long`): three parleyd
 * processes in network namespaces, each recording its syncs
 * (PARLEY_TEST_SYNC_LOG), killed with SIGKILL under load — the leader, a
 * follower, or both at once — and restarted after tools/drop-unsynced.py
 * took what a power loss could have taken; checked by netns_chaos.c
 * through libparley and by comparing every replica (docs/CLUSTER.md §4.1).
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
	char script[4096], chaos[4096];
	snprintf(script, sizeof script, "%s/tests/cluster/test_cluster_netns.sh", src);
	snprintf(chaos, sizeof chaos, "%s/tests/cluster_netns_chaos", bin);
	execl("/bin/bash", "bash", script, chaos, "unsynced-long", (char *)NULL);
	perror("exec bash");
	return 1;
}
