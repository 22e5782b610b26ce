/*
 * Scenario: a partition isolates the leader. The old leader must not commit
 * anything proposed to it and must not serve a linearizable read, even
 * without check-quorum (which would make it step down): its ReadIndex needs a
 * quorum of heartbeat acks it cannot get. The majority side elects a leader
 * that commits and serves reads. After healing, the old leader's
 * uncommitted entries are replaced and everything converges.
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3 + 2 * (seed % 2);
	o.check_quorum = seed % 4 < 2; /* half the seeds keep the old leader leading */
	o.client_ppm = 300000;
	struct sim *s = sim_new(&o);
	int l = sim_wait_leader(s, 0, 5000);
	SCN_CHECK(s, l >= 0, "no leader");
	sim_run(s, 1000);
	l = sim_leader(s, 0);
	SCN_CHECK(s, l >= 0, "no leader before the partition");
	struct raft *old = sim_raft(s, l, 0);
	uint64_t old_commit = raft_commit(old);
	sim_isolate(s, l);
	/* proposals and reads on the isolated leader */
	for (int i = 0; i < 5; i++)
		(void)sim_propose_raw(s, l, 0);
	uint64_t ctx = sim_read(s, l);
	uint64_t acked_before = sim_acked(s);
	/* the majority elects and commits */
	int nl = -1;
	for (int i = 0; i < 200 && nl < 0; i++) {
		sim_run(s, 50);
		for (uint32_t k = 0; k < sim_nodes(s); k++) {
			struct raft *r = sim_raft(s, (int)k, 0);
			if ((int)k != l && r && raft_role(r) == RAFT_LEADER)
				nl = (int)k;
		}
	}
	SCN_CHECK(s, nl >= 0, "majority elected no leader");
	sim_run(s, 1500);
	SCN_CHECK(s, sim_acked(s) > acked_before, "majority acked nothing");
	struct raft *o2 = sim_raft(s, l, 0);
	SCN_CHECK(s, o2 && raft_commit(o2) == old_commit,
		  "isolated old leader committed (%" PRIu64 " -> %" PRIu64 ")",
		  old_commit, o2 ? raft_commit(o2) : 0);
	if (ctx)
		SCN_CHECK(s, sim_read_done(s, ctx) != 1,
			  "isolated old leader served a linearizable read");
	if (!o.check_quorum)
		SCN_CHECK(s, raft_role(o2) == RAFT_LEADER,
			  "without check-quorum the old leader should still think it leads");
	uint64_t ctx2 = sim_read(s, l);
	sim_run(s, 500);
	if (ctx2)
		SCN_CHECK(s, sim_read_done(s, ctx2) != 1,
			  "isolated old leader served a read");
	/* the new leader serves reads */
	uint64_t ctx3 = sim_read(s, nl);
	sim_run(s, 300);
	SCN_CHECK(s, !ctx3 || sim_read_done(s, ctx3) != 0 || !sim_up(s, nl),
		  "new leader's read still pending");
	sim_heal(s);
	sim_finish(s, 1000);
	scn_done(s, "partition_leader");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_partition_leader", 5000, 20, body);
}
