/*
 * test_cluster_walhdr.c — ctest launcher for test_cluster_netns.sh in mode
 * walhdr (label cluster, part of `make test`): three parleyd processes in
 * network namespaces; a follower is killed, one bit of its newest WAL
 * segment's header flipped and the node restarted: it must come up, take
 * that segment's records as damaged and get them repaired from the leader
 * (docs/CLUSTER.md §2.5), with nothing acknowledged lost and every replica
 * equal at the end (netns_chaos.c). The script's exit status is the
 * test's: 0, 1, or 77 (skipped).
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
	execl("/bin/bash", "bash", script, chaos, "walhdr", (char *)NULL);
	perror("exec bash");
	return 1;
}
