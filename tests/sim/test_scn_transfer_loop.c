/*
 * Scenario: leader transfer in a loop while clients write and retry. Each
 * transfer hands leadership to another voter (TimeoutNow); writes in flight
 * on the old leader time out and are retried with the same idempotency key
 * on the new one, which must answer with the original seq (S7).
 */
#include "scn.h"

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3 + 2 * (seed % 2);
	o.client_ppm = 500000;
	o.f.loss_pct = 2;
	o.f.dup_pct = 2;
	struct sim *s = sim_new(&o);
	uint32_t changes = 0;
	for (int round = 0; round < 40; round++) {
		int l = sim_wait_leader(s, 0, 5000);
		SCN_CHECK(s, l >= 0, "no leader");
		uint64_t id = sim_node_id(s, l);
		int to = (l + 1 + round % ((int)o.nodes - 1)) % (int)o.nodes;
		(void)sim_transfer(s, to);
		sim_run(s, 250);
		int nl = sim_leader(s, 0);
		if (nl >= 0 && sim_node_id(s, nl) != id)
			changes++;
	}
	SCN_CHECK(s, changes >= 20, "only %u of 40 transfers moved leadership", changes);
	SCN_CHECK(s, sim_acked(s) > 200, "too few acked");
	sim_finish(s, 1000);
	scn_done(s, "transfer_loop");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_transfer_loop", 7000, 20, body);
}
