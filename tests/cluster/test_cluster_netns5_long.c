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
#include "netns_launch.h"

int main(void)
{
	return netns_launch("long", "5");
}
