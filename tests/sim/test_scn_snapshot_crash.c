/*
 * Scenario: a follower far behind gets a snapshot in chunks and is killed
 * in the middle of the install, several times. The chunks it synced survive
 * the crash; after a restart the transfer resumes from that offset (counted
 * as resumed_chunks), and the follower ends with the leader's state.
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3;
	o.snapshot_every = 50;
	o.chunk_bytes = 256;
	o.pad_bytes = 64;
	o.client_ppm = 600000;
	struct sim *s = sim_new(&o);
	int l = sim_wait_leader(s, 0, 5000);
	SCN_CHECK(s, l >= 0, "no leader");
	int f = (l + 1) % 3;
	sim_crash(s, f, false);
	sim_run(s, 6000); /* the others compact far past it */
	sim_clients(s, 0);
	sim_restart(s, f);
	int kills = 0;
	for (int i = 0; i < 4000 && kills < 3; i++) {
		sim_run(s, 1);
		if (sim_up(s, f) && sim_partial_bytes(s, f) > 0 &&
		    sim_snap_index(s, f) < sim_snap_index(s, (f + 1) % 3)) {
			sim_crash(s, f, (i % 2) == 0);
			sim_run(s, 30);
			sim_crash(s, f, false);
			sim_restart(s, f);
			kills++;
		}
	}
	SCN_CHECK(s, kills >= 1, "never caught the follower mid-install");
	sim_clients(s, 300000);
	sim_finish(s, 2000);
	SCN_CHECK(s, sim_snap_installs(s) >= 1, "no snapshot installed");
	SCN_CHECK(s, sim_resumed_chunks(s) >= 1, "no transfer resumed from its offset");
	scn_done(s, "snapshot_crash");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_snapshot_crash", 8000, 10, body);
}
