/*
 * test_cluster_walrec.c — ctest launcher for test_cluster_netns.sh in mode
 * walrec (label cluster, part of `make test`): three parleyd processes in
 * network namespaces; a follower, then the leader, is killed, one bit of
 * the header of one of its committed WAL records flipped (the record's
 * partition, term, index and length unknown) and the node restarted: it
 * must come up with no partition corrupt and have the shard's partitions
 * repaired from their leaders (docs/CLUSTER.md §2.5), with nothing
 * acknowledged lost and every replica equal at the end (netns_chaos.c).
 * The script's exit status is the test's: 0, 1, or 77 (skipped).
 */
#include "netns_launch.h"

int main(void)
{
	return netns_launch("walrec", NULL);
}
