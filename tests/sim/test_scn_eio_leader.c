/*
 * Scenario: the leader's fsync fails (EIO). The batch is not acknowledged,
 * the core steps down (raft_persist_failed) and the node crashes; the others
 * elect a new leader in a higher term and carry on. Repeated with writes in
 * flight; no acked write is lost.
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3 + 2 * (seed % 2);
	o.client_ppm = 400000;
	struct sim *s = sim_new(&o);
	for (int round = 0; round < 8; round++) {
		int l = sim_wait_leader(s, 0, 5000);
		SCN_CHECK(s, l >= 0, "no leader");
		sim_run(s, 300);
		l = sim_leader(s, 0);
		if (l < 0)
			continue;
		uint64_t term = raft_term(sim_raft(s, l, 0));
		sim_eio_next(s, l);
		sim_run(s, 50); /* its next persist fails */
		SCN_CHECK(s, !sim_up(s, l), "EIO node still up");
		int nl = sim_wait_leader(s, 0, 5000);
		SCN_CHECK(s, nl >= 0 && nl != l, "no new leader after EIO");
		SCN_CHECK(s, raft_term(sim_raft(s, nl, 0)) > term, "term did not move");
		sim_run(s, 200);
		sim_restart(s, l);
	}
	sim_finish(s, 1000);
	scn_done(s, "eio_leader");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_eio_leader", 4000, 20, body);
}
