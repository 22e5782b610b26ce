/*
 * Scenario: 1,000 idle Raft groups on 3 nodes. After one write each, the
 * groups quiesce: message traffic must drop to ~0 (assert: the messages in
 * a quiet window are under 1% of a busy window of the same length, and under
 * 0.01 per group per tick). A proposal wakes its group; a crashed node's
 * groups elect new leaders (node liveness unquiesces them).
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3;
	o.groups = 1000;
	o.client_ppm = 0;
	o.quiesce_ticks = 20;
	o.snapshot_every = 0;
	struct sim *s = sim_new(&o);
	/* elections in every group, then one write each */
	sim_run(s, 800);
	uint32_t led = 0;
	for (uint32_t g = 0; g < o.groups; g++) {
		int l = sim_leader(s, g);
		if (l >= 0 && sim_propose_raw(s, l, g) == 0)
			led++;
	}
	SCN_CHECK(s, led >= 990, "only %u groups have a leader", led);
	uint64_t m0 = sim_msgs(s);
	sim_run(s, 100);
	uint64_t busy = sim_msgs(s) - m0;
	sim_run(s, 2000); /* quiesce */
	uint32_t quiet_leaders = 0;
	for (uint32_t g = 0; g < o.groups; g++) {
		int l = sim_leader(s, g);
		if (l >= 0 && raft_quiesced(sim_raft(s, l, g)))
			quiet_leaders++;
	}
	uint64_t m1 = sim_msgs(s);
	sim_run(s, 100);
	uint64_t quiet = sim_msgs(s) - m1;
	printf("idle_groups: busy window msgs=%" PRIu64 " quiet window msgs=%" PRIu64
	       " quiesced leaders=%u/%u\n", busy, quiet, quiet_leaders, o.groups);
	size_t mem = 0;
	for (uint32_t g = 0; g < o.groups; g++)
		mem += raft_footprint(sim_raft(s, 1, g));
	printf("idle_groups: Raft core memory on one node: %zu bytes for %u groups (%zu per group)\n",
	       mem, o.groups, mem / o.groups);
	SCN_CHECK(s, mem / o.groups < 16384, "%zu bytes per idle group", mem / o.groups);
	SCN_CHECK(s, quiet_leaders >= 990, "only %u leaders quiesced", quiet_leaders);
	SCN_CHECK(s, quiet * 100 < busy, "quiet %" PRIu64 " vs busy %" PRIu64, quiet, busy);
	SCN_CHECK(s, quiet * 100 < (uint64_t)o.groups * 10,
		  "%" PRIu64 " msgs in 10 ticks for %u groups", quiet, o.groups);
	/* a write wakes its group and commits */
	int l7 = sim_leader(s, 7);
	uint64_t c7 = sim_commit(s, l7, 7);
	SCN_CHECK(s, sim_propose_raw(s, l7, 7) == 0, "propose in a quiesced group");
	sim_run(s, 200);
	SCN_CHECK(s, sim_commit(s, l7, 7) > c7, "woken group did not commit");
	/* a node dies: groups it led elect elsewhere */
	sim_crash(s, 0, false);
	sim_run(s, 1500);
	uint32_t ok = 0;
	for (uint32_t g = 0; g < o.groups; g++) {
		int l = sim_leader(s, g);
		ok += l > 0;
	}
	SCN_CHECK(s, ok >= 990, "only %u groups re-led after a crash", ok);
	scn_done(s, "idle_groups");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_idle_groups", 9000, 2, body);
}
