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
#include "netns_launch.h"

int main(void)
{
	return netns_launch("walhdr", NULL);
}
