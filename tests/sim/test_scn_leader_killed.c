/*
 * Scenario: the leader is killed mid-replication, again and again. Clients
 * keep writing; each round the current leader crashes in the middle of
 * persisting a batch (part of it reaches the disk, none of it was acked),
 * the others elect a new leader, the old one restarts. No acked write may be
 * lost (S5) and retries after the failover keep their seqs (S7).
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3 + 2 * (seed % 2);
	o.client_ppm = 400000;
	struct sim *s = sim_new(&o);
	uint64_t acked0 = 0;
	for (int round = 0; round < 12; round++) {
		int l = sim_wait_leader(s, 0, 5000);
		SCN_CHECK(s, l >= 0, "no leader in round %d", round);
		sim_run(s, 300 + (seed * 7 + (uint64_t)round * 13) % 200);
		l = sim_leader(s, 0);
		if (l < 0)
			continue;
		sim_crash(s, l, true); /* dies inside its next persist */
		sim_run(s, 400);
		sim_restart(s, l);
	}
	acked0 = sim_acked(s);
	SCN_CHECK(s, acked0 > 100, "too few writes acked: %" PRIu64, acked0);
	sim_finish(s, 1000);
	scn_done(s, "leader_killed");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_leader_killed", 1000, 20, body);
}
