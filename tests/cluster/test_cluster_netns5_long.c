/*
 * test_cluster_netns5_long.c — ctest launcher for test_cluster_netns.sh with
 * five parleyd processes, long tier (labels cluster and long, `make
 * test-long`): the short tier's bridge, isolated leader and damaged leader
 * WAL, then one-way loss, two more bridges, ten flaps, five kill -9 of the
 * leader under load and damaged WALs on a follower and the leader again,
 * checked by netns_chaos.c through libparley and by comparing every
 * replica's digest at the end. The script's exit status is the test's: 0,
 * 1, or 77 (skipped).
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
	execl("/bin/bash", "bash", script, chaos, "long", "5", (char *)NULL);
	perror("exec bash");
	return 1;
}
