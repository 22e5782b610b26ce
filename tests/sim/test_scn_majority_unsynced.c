/*
 * Scenario: a majority crashes at once, each inside a persist, losing what
 * it had not synced (a prefix of the batch survives, the cut record torn).
 * Nothing acknowledged was unsynced anywhere, so nothing acked is lost.
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3 + 2 * (seed % 2);
	o.client_ppm = 500000;
	struct sim *s = sim_new(&o);
	for (int round = 0; round < 8; round++) {
		SCN_CHECK(s, sim_wait_leader(s, 0, 5000) >= 0, "no leader");
		sim_run(s, 300);
		uint32_t n = sim_nodes(s), maj = n / 2 + 1;
		uint32_t first = (uint32_t)(seed + (uint64_t)round) % n;
		for (uint32_t k = 0; k < maj; k++)
			sim_lose_unsynced(s, (int)((first + k) % n));
		sim_run(s, 200); /* each dies at its next persist */
		for (uint32_t k = 0; k < n; k++)
			sim_crash(s, (int)k, false); /* and the idle ones now */
		for (uint32_t k = 0; k < n; k++)
			sim_restart(s, (int)k);
	}
	SCN_CHECK(s, sim_acked(s) > 50, "too few acked");
	sim_finish(s, 1000);
	scn_done(s, "majority_unsynced");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_majority_unsynced", 2000, 20, body);
}
