/*
 * Scenario: bit flips in stored entries on one node (a minority), follower or
 * leader. The node must never apply a damaged entry (the simulator fails the
 * run if one is handed to the state machine), never truncate it away (the
 * disk refuses to truncate committed entries), and must repair it from its
 * peers: at the end no node reports damage and every flipped entry that was
 * read back has been rewritten.
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3;
	o.snapshot_every = seed % 3 == 0 ? 60 : 100000; /* some repairs via snapshot */
	o.client_ppm = 300000;
	struct sim *s = sim_new(&o);
	SCN_CHECK(s, sim_wait_leader(s, 0, 5000) >= 0, "no leader");
	sim_run(s, 2000);
	for (int round = 0; round < 6; round++) {
		int l = sim_leader(s, 0);
		if (l < 0) {
			sim_run(s, 500);
			continue;
		}
		/* odd rounds damage the leader, even rounds a follower */
		int v = round % 2 ? l : (l + 1 + round / 2 % 2) % 3;
		for (int k = 0; k < 15; k++)
			sim_flip(s, v, 0);
		/* a restart re-reads its log (applies from its snapshot on) */
		sim_crash(s, v, false);
		sim_restart(s, v);
		sim_run(s, 1500);
	}
	sim_finish(s, 1500);
	for (uint32_t i = 0; i < sim_nodes(s); i++) {
		struct raft *r = sim_raft(s, (int)i, 0);
		uint64_t d = 0;
		SCN_CHECK(s, r && !raft_damaged(r, &d), "slot %u still damaged at %" PRIu64, i, d);
	}
	SCN_CHECK(s, sim_repairs(s) > 0 || sim_snap_installs(s) > 0,
		  "no repair happened");
	scn_done(s, "bitflip_minority");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_bitflip_minority", 3000, 20, body);
}
