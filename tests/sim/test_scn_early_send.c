/*
 * Scenario: a leader sends its appends before its own write (raft.h 3a)
 * and crashes inside that write. Each round: the cluster is quiet, the
 * leader takes one proposal and dies in the persist of its ready, after
 * its early APPENDs left; the followers elect a new leader. Checked:
 *   - the early path ran and lost the leader's copy (sim_early_lost);
 *   - the crashed leader acknowledged nothing (S5/S7 would catch an ack of
 *     an entry it lost; the client's retry gets the entry's seq, S7);
 *   - in most rounds the followers commit the entry without the leader
 *     (the new leader's commit covers it, with the old leader's term);
 *     with persist_first (the old contract) they never can.
 * Second part (the same body in every build): a follower must not answer
 * before its own write. A follower A is made to lose its next write, the
 * third node B cannot hear the leader, the leader takes one proposal; then
 * the leader crashes and A, B elect. With a core that lets responses leave
 * early (built with RAFT_TEST_BROKEN_EARLY_ALL: scn_early_broken in
 * tests.cmake) the leader commits and acks on A's word, A loses the entry,
 * and the new leader lacks an applied entry: S3 (leader completeness)
 * fails. With the real core the entry is never acked, so nothing fails.
 */
#include "scn.h"

static uint64_t round_early(struct sim *s, uint64_t seed, int round)
{
	int l = sim_wait_leader(s, 0, 5000);
	SCN_CHECK(s, l >= 0, "no leader in round %d", round);
	sim_clients(s, 0);
	sim_run(s, 300); /* settle: nothing in flight */
	l = sim_leader(s, 0);
	if (l < 0)
		return 0;
	struct raft *r = sim_raft(s, l, 0);
	uint64_t term = raft_term(r), idx = raft_last_index(r) + 1;
	uint64_t lost0 = sim_early_lost(s);
	sim_lose_unsynced(s, l); /* dies in the persist of its next ready */
	int rc = sim_propose(s, l);
	if (rc == 0)
		SCN_CHECK(s, sim_early_lost(s) == lost0 + 1 || sim_up(s, l) == false,
			  "leader did not crash in its persist");
	SCN_CHECK(s, !sim_up(s, l), "leader still up after a lost persist");
	sim_run(s, 800 + (seed * 7 + (uint64_t)round * 13) % 300);
	uint64_t committed = 0;
	int nl = sim_leader(s, 0);
	if (nl >= 0 && nl != l) {
		struct raft *nr = sim_raft(s, nl, 0);
		if (raft_commit(nr) >= idx && raft_term_at(nr, idx) == term)
			committed = 1;
	}
	sim_restart(s, l);
	sim_clients(s, 400000);
	return committed;
}

static void round_follower(struct sim *s, int round)
{
	int l = sim_wait_leader(s, 0, 5000);
	SCN_CHECK(s, l >= 0, "no leader in round %d", round);
	sim_clients(s, 0);
	sim_run(s, 300);
	l = sim_leader(s, 0);
	if (l < 0)
		return;
	uint32_t n = sim_nodes(s);
	int a = (l + 1) % (int)n, b = (l + 2) % (int)n;
	sim_cut(s, l, b); /* b hears nothing from the leader */
	sim_lose_unsynced(s, a); /* a dies in its next write */
	(void)sim_propose(s, l);
	sim_run(s, 200); /* a gets the append, writes, dies */
	sim_crash(s, l, false);
	sim_heal(s);
	sim_restart(s, a);
	sim_run(s, 800); /* a and b elect */
	sim_restart(s, l);
	sim_clients(s, 400000);
}

static void body(uint64_t seed)
{
	struct sim_opts o;
	scn_opts(&o, seed);
	o.nodes = 3;
	o.client_ppm = 400000;
	o.persist_first = getenv("SCN_PERSIST_FIRST") != NULL;
	struct sim *s = sim_new(&o);
	uint64_t committed = 0, rounds = 10;
	for (int round = 0; round < (int)rounds; round++) {
		committed += round_early(s, seed, round);
		sim_run(s, 200);
	}
	if (!o.persist_first) {
		SCN_CHECK(s, sim_early_lost(s) >= rounds / 2,
			  "early path not exercised: lost=%" PRIu64,
			  sim_early_lost(s));
		SCN_CHECK(s, committed >= rounds / 2,
			  "followers committed a dead leader's early entry in "
			  "only %" PRIu64 " of %" PRIu64 " rounds", committed,
			  rounds);
	} else {
		SCN_CHECK(s, committed == 0, "committed without early sends");
	}
	for (int round = 0; round < 6; round++)
		round_follower(s, round);
	SCN_CHECK(s, sim_acked(s) > 50, "too few acked");
	sim_finish(s, 1000);
	printf("early_send: seed %" PRIu64 " early_sent=%" PRIu64
	       " early_lost=%" PRIu64 " committed_without_leader=%" PRIu64
	       "/%" PRIu64 "\n", seed, sim_early_sent(s), sim_early_lost(s),
	       committed, rounds);
	scn_done(s, "early_send");
	sim_free(s);
}

int main(void)
{
	return scn_main("scn_early_send", 3000, 10, body);
}
