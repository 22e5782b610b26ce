/*
 * test_cluster_unsynced.c — ctest launcher for test_cluster_netns.sh in
 * mode unsynced (label cluster, part of `make test`): three parleyd
 * processes in network namespaces, each recording its syncs
 * (PARLEY_TEST_SYNC_LOG), killed with SIGKILL under load — the leader, a
 * follower, or both at once — and restarted after tools/drop-unsynced.py
 * took what a power loss could have taken; checked by netns_chaos.c
 * through libparley and by comparing every replica (docs/CLUSTER.md §4.1).
 * The script's exit status is the test's: 0, 1, or 77 (skipped).
 */
#include "netns_launch.h"

int main(void)
{
	return netns_launch("unsynced", NULL);
}
