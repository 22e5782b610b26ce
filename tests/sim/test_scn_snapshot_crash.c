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
	/* quiet, and the leader's snapshot stays put: a new snapshot would
	 * (rightly) restart the transfer from 0 and hide the resume */
	sim_clients(s, 0);
	sim_run(s, 300);
	sim_snapshots(s, 0);
	sim_restart(s, f);
	int kills = 0;
	uint64_t had = sim_partial_bytes(s, f);
	for (int i = 0; i < 4000 && kills < 3; i++) {
		sim_run(s, 1);
		/* kill it once more chunks have landed since its restart */
		int ld = sim_leader(s, 0);
		if (ld >= 0 && sim_up(s, f) && sim_partial_bytes(s, f) > had &&
		    sim_applied(s, f, 0) < sim_snap_index(s, ld)) {
			sim_crash(s, f, (i % 2) == 0);
			sim_run(s, 30);
			sim_crash(s, f, false);
			sim_restart(s, f);
			had = sim_partial_bytes(s, f);
			kills++;
		}
	}
	SCN_CHECK(s, kills >= 1, "never caught the follower mid-install");
	/* let the install finish on the same snapshot */
	int ld = sim_wait_leader(s, 0, 5000);
	SCN_CHECK(s, ld >= 0, "no leader");
	for (int i = 0; i < 200 && sim_applied(s, f, 0) < sim_snap_index(s, ld); i++)
		sim_run(s, 50);
	SCN_CHECK(s, sim_applied(s, f, 0) >= sim_snap_index(s, ld),
		  "the follower never finished installing");
	sim_clients(s, 300000);
	sim_snapshots(s, 50);
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
