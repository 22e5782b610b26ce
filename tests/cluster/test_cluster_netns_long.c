/*
 * test_cluster_netns_long.c — ctest launcher for test_cluster_netns.sh in its
 * long tier (labels cluster and long, `make test-long`): the short
 * tier's faults, twenty flaps, a second leader isolation, ten kill -9
 * of the leader under load (each restarted), damaged WALs on the leader
 * and a follower, one-way loss again, lossy one-way links (30% of what
 * the leader, then a follower, receives from the other servers dropped),
 * and a follower's damaged WAL
 * segment header and WAL record header (modes walhdr and walrec's
 * faults after a long history), checked the same way. The
 * script's exit status is the test's: 0, 1, or 77 (skipped).
 */
#include "netns_launch.h"

int main(void)
{
	return netns_launch("long", NULL);
}
