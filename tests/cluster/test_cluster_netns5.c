/*
 * test_cluster_netns5.c — ctest launcher for test_cluster_netns.sh with
 * five parleyd processes, short tier (label cluster, part of `make test`):
 * a bridge node (the other four split in two halves that hear only it), an
 * isolated leader and the leader's WAL damaged (kill -9, a flipped bit in
 * a committed record, restart), checked by netns_chaos.c through libparley
 * and by comparing every replica's digest at the end. The script's exit
 * status is the test's: 0, 1, or 77 (skipped).
 */
#include "netns_launch.h"

int main(void)
{
	return netns_launch("short", "5");
}
