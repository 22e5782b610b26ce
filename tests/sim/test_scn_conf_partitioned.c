/*
 * Scenario: membership changes while the cluster is partitioned: a learner is
 * added, promoted, a voter removed, with a minority cut off (sometimes the
 * one being changed, sometimes one-way). Changes go one at a time, take
 * effect at commit, and the cluster converges on one configuration after
 * healing; node ids are never reused.
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 5;
	o.client_ppm = 200000;
	o.snapshot_every = 80;
	struct sim *s = sim_new(&o);
	SCN_CHECK(s, sim_wait_leader(s, 0, 5000) >= 0, "no leader");
	sim_run(s, 500);
	static const uint32_t ops[] = {RAFT_CONF_ADD_LEARNER, RAFT_CONF_PROMOTE,
				       RAFT_CONF_REMOVE, RAFT_CONF_ADD_VOTER,
				       RAFT_CONF_REMOVE};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(ops); i++) {
		int l = sim_wait_leader(s, 0, 5000);
		SCN_CHECK(s, l >= 0, "no leader at op %zu", i);
		/* cut someone off: a follower both ways, or one way */
		int victim = (l + 1 + (int)((seed + i) % 4)) % 5;
		if ((seed + i) % 2)
			sim_isolate(s, victim);
		else
			sim_cut(s, l, victim);
		const struct raft_conf *c = raft_conf(sim_raft(s, l, 0));
		int target = -1;
		if (ops[i] == RAFT_CONF_PROMOTE) {
			for (uint32_t k = 0; k < c->n; k++)
				if (c->roles[k] == RAFT_LEARNER)
					for (uint32_t sl = 0; sl < sim_nodes(s); sl++)
						if (sim_node_id(s, (int)sl) == c->ids[k])
							target = (int)sl;
		} else if (ops[i] == RAFT_CONF_REMOVE) {
			target = victim == l ? (l + 1) % 5 : victim;
		}
		int rc = -1;
		for (int tries = 0; tries < 100 && rc != 0; tries++) {
			rc = sim_propose_conf(s, ops[i], target);
			if (rc != 0)
				sim_run(s, 50);
		}
		SCN_CHECK(s, rc == 0, "conf op %u refused: %d", ops[i], rc);
		sim_run(s, 1500);
		sim_heal(s);
		sim_run(s, 500);
	}
	sim_finish(s, 1500);
	/* every live member holds the same configuration */
	int l = sim_leader(s, 0);
	const struct raft_conf *lc = raft_conf(sim_raft(s, l, 0));
	for (uint32_t k = 0; k < lc->n; k++) {
		for (uint32_t sl = 0; sl < sim_nodes(s); sl++) {
			if (sim_node_id(s, (int)sl) != lc->ids[k])
				continue;
			const struct raft_conf *c = raft_conf(sim_raft(s, (int)sl, 0));
			SCN_CHECK(s, c->n == lc->n && c->max_id == lc->max_id,
				  "slot %u conf differs", sl);
		}
	}
	scn_done(s, "conf_partitioned");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_conf_partitioned", 6000, 20, body);
}
