/*
 * test_cluster_netns.c — ctest launcher for test_cluster_netns.sh in its
 * short tier (label cluster, part of `make test`): three parleyd
 * processes in network namespaces under an isolated leader, one-way loss
 * and a few flaps, checked by netns_chaos.c through libparley. The
 * script's exit status is the test's: 0, 1, or 77 (skipped).
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
	execl("/bin/bash", "bash", script, chaos, "short", (char *)NULL);
	perror("exec bash");
	return 1;
}
