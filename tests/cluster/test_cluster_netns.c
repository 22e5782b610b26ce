/*
 * test_cluster_netns.c — ctest launcher for test_cluster_netns.sh in its
 * short tier (label cluster, part of `make test`): three parleyd
 * processes in network namespaces under an isolated leader, one-way loss
 * and a few flaps, checked by netns_chaos.c through libparley. The
 * script's exit status is the test's: 0, 1, or 77 (skipped).
 */
#include "netns_launch.h"

int main(void)
{
	return netns_launch("short", NULL);
}
