/*
 * test_placement.c — the placement algorithm and map (server/placement.c):
 * the meta group's size, today's placement kept as is, a fourth and fifth
 * node getting a fair share with the least moves, a removed node's
 * replicas moved to nodes the id rule allows, random maps staying
 * balanced (seed printed), the record codec, five founders trimmed to
 * replication factor 3 evenly, and the leadership hand-over decisions
 * (direct, chains; random views converge, seed printed).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "placement.h"

#define NP 8u
static const uint32_t META[2] = {0, 3};

static void all_on(struct placement_part *pp, uint32_t np, const uint64_t *ids,
		   uint32_t n)
{
	memset(pp, 0, np * sizeof *pp);
	for (uint32_t p = 0; p < np; p++) {
		for (uint32_t i = 0; i < n; i++)
			pp[p].voters[i] = ids[i];
		pp[p].nvoters = n;
		pp[p].max_id = ids[n - 1];
	}
}

static uint32_t load_of(const struct placement_part *pp, uint32_t np,
			uint64_t id)
{
	uint32_t l = 0;
	for (uint32_t p = 0; p < np; p++)
		if (p != META[0] && p != META[1])
			l += placement_has(pp[p].voters, pp[p].nvoters, id);
	return l;
}

/* every non-meta partition has r voters on nodes, none twice; the meta
 * partitions have mv voters and every other node as learner */
static void check_map(const struct placement_part *pp, uint32_t np,
		      const uint64_t *nodes, uint32_t n, uint32_t r,
		      uint32_t mv)
{
	for (uint32_t p = 0; p < np; p++) {
		bool meta = p == META[0] || p == META[1];
		cr_assert_eq(pp[p].nvoters, meta ? mv : r, "partition %u has "
			     "%u voters", p, pp[p].nvoters);
		cr_assert_eq(pp[p].nlearners, meta ? n - mv : 0);
		for (uint32_t i = 0; i < pp[p].nvoters; i++)
			cr_assert(placement_has(nodes, n, pp[p].voters[i]));
	}
}

Test(placement, meta_voters_are_odd_up_to_five)
{
	const uint32_t want[10] = {0, 1, 1, 3, 3, 5, 5, 5, 5, 5};
	for (uint32_t n = 0; n < 10; n++)
		cr_assert_eq(placement_meta_voters(n), want[n], "n=%u", n);
}

Test(placement, three_founders_rf3_is_todays_placement)
{
	const uint64_t nodes[3] = {1, 2, 3};
	struct placement_part cur[NP], out[NP];
	all_on(cur, NP, nodes, 3);
	cr_assert_eq(placement_compute(nodes, 3, 3, cur, NP, META, 2, out), 0);
	cr_assert_eq(placement_moves(cur, out, NP), 0);
	check_map(out, NP, nodes, 3, 3, 3);
}

Test(placement, add_fourth_and_fifth_node_fair_share_least_moves)
{
	const uint64_t n3[3] = {1, 2, 3}, n4[4] = {1, 2, 3, 4},
		       n5[5] = {1, 2, 3, 4, 5};
	struct placement_part cur[NP], t4[NP], t5[NP];
	all_on(cur, NP, n3, 3);
	cr_assert_eq(placement_compute(n4, 4, 3, cur, NP, META, 2, t4), 0);
	check_map(t4, NP, n4, 4, 3, 3);
	/* 6 partitions x 3 replicas over 4 nodes: 4 or 5 each */
	for (uint32_t i = 0; i < 4; i++) {
		uint32_t l = load_of(t4, NP, n4[i]);
		cr_assert(l == 4 || l == 5, "node %u holds %u", i + 1, l);
	}
	/* only node 4 is added anywhere: its 4 replicas + 2 meta learners */
	cr_assert_eq(placement_moves(cur, t4, NP), load_of(t4, NP, 4) + 2);
	cr_assert_eq(load_of(t4, NP, 4), 4);
	/* the new node's id exceeds every group's max_id */
	for (uint32_t p = 0; p < NP; p++)
		t4[p].max_id = 4;
	cr_assert_eq(placement_compute(n5, 5, 3, t4, NP, META, 2, t5), 0);
	check_map(t5, NP, n5, 5, 3, 5);
	for (uint32_t i = 0; i < 5; i++) {
		uint32_t l = load_of(t5, NP, n5[i]);
		cr_assert(l == 3 || l == 4, "node %u holds %u", i + 1, l);
	}
	/* node 5's replicas, and node 5 as a meta voter twice */
	cr_assert_eq(placement_moves(t4, t5, NP), load_of(t5, NP, 5) + 2);
	/* the meta learner 4 became a voter, not re-added */
	cr_assert(placement_has(t5[0].voters, t5[0].nvoters, 4));
}

Test(placement, remove_moves_replicas_where_ids_allow)
{
	const uint64_t n5[5] = {1, 2, 3, 4, 5}, left[4] = {1, 3, 4, 5};
	struct placement_part cur[NP], out[NP];
	memset(cur, 0, sizeof cur);
	/* partitions 1, 2: {1,2,3} max 3 (4 or 5 may come); 4, 5: {1,2,5}
	 * max 5 (nobody may come: 3 and 4 are below 5); 6, 7: {2,3,4}, max 4
	 * (5 may come) */
	const uint64_t sets[NP][3] = {{1, 2, 3}, {1, 2, 3}, {1, 2, 3},
				      {1, 2, 3}, {1, 2, 5}, {1, 2, 5},
				      {2, 3, 4}, {2, 3, 4}};
	for (uint32_t p = 0; p < NP; p++) {
		memcpy(cur[p].voters, sets[p], sizeof sets[p]);
		cur[p].nvoters = 3;
		cur[p].max_id = (p == 0 || p == 3 ? 5 : sets[p][2]) |
				PLACEMENT_ID_RULE;
	}
	cur[0].voters[3] = 4;
	cur[0].voters[4] = 5;
	cur[0].nvoters = 5;
	cur[3] = cur[0];
	(void)n5;
	int miss = placement_compute(left, 4, 3, cur, NP, META, 2, out);
	cr_assert_eq(miss, 2, "partitions 4 and 5 cannot get a third replica");
	for (uint32_t p = 0; p < NP; p++) {
		cr_assert_not(placement_has(out[p].voters, out[p].nvoters, 2));
		for (uint32_t i = 0; i < out[p].nvoters; i++) {
			uint64_t id = out[p].voters[i];
			bool had = placement_has(cur[p].voters, cur[p].nvoters,
						 id);
			uint64_t mx = cur[p].max_id & ~PLACEMENT_ID_RULE;
			cr_assert(had || id > mx, "partition %u "
				  "got node %llu (max_id %llu)", p,
				  (unsigned long long)id,
				  (unsigned long long)mx);
		}
	}
	cr_assert_eq(out[4].nvoters, 2);
	cr_assert_eq(out[1].nvoters, 3);
	cr_assert_eq(out[6].nvoters, 3);
	cr_assert(placement_has(out[6].voters, 3, 5));
	/* the meta group keeps its 4 remaining voters (no demotion) */
	cr_assert_eq(out[0].nvoters, 4);
	cr_assert_eq(out[0].nlearners, 0);
}

Test(placement, remove_moves_every_replica)
{
	/* the same map without the id rule (a member removed from a group
	 * may join it again): every partition gets its third replica back */
	const uint64_t left[4] = {1, 3, 4, 5};
	struct placement_part cur[NP], out[NP];
	memset(cur, 0, sizeof cur);
	const uint64_t sets[NP][3] = {{1, 2, 3}, {1, 2, 3}, {1, 2, 3},
				      {1, 2, 3}, {1, 2, 5}, {1, 2, 5},
				      {2, 3, 4}, {2, 3, 4}};
	for (uint32_t p = 0; p < NP; p++) {
		memcpy(cur[p].voters, sets[p], sizeof sets[p]);
		cur[p].nvoters = 3;
		cur[p].max_id = 5; /* no PLACEMENT_ID_RULE */
	}
	cr_assert_eq(placement_compute(left, 4, 3, cur, NP, META, 2, out), 0);
	for (uint32_t p = 0; p < NP; p++) {
		cr_assert_not(placement_has(out[p].voters, out[p].nvoters, 2));
		if (p != META[0] && p != META[1]) {
			cr_assert_eq(out[p].nvoters, 3, "partition %u", p);
			/* only node 2's replica moved */
			uint32_t kept = 0;
			for (uint32_t i = 0; i < 3; i++)
				kept += placement_has(out[p].voters, 3,
						      cur[p].voters[i]);
			cr_assert_eq(kept, 2, "partition %u kept %u", p, kept);
		}
	}
	/* 6 x 3 replicas over 4 nodes: 4 or 5 each */
	for (uint32_t i = 0; i < 4; i++) {
		uint32_t l = load_of(out, NP, left[i]);
		cr_assert(l == 4 || l == 5, "node %llu holds %u",
			  (unsigned long long)left[i], l);
	}
}

Test(placement, add_fills_short_partitions)
{
	/* two nodes left of three (rf 3): every partition is one replica
	 * short; an added node fills all of them and nothing else moves */
	const uint64_t two[2] = {1, 2}, three[3] = {1, 2, 4};
	struct placement_part cur[NP], out[NP];
	all_on(cur, NP, two, 2);
	for (uint32_t p = 0; p < NP; p++)
		cur[p].max_id = 3; /* node 3 was there: no PLACEMENT_ID_RULE */
	/* with two nodes, two replicas is all there is (min(rf, nodes)) */
	int missing = placement_compute(two, 2, 3, cur, NP, META, 2, out);
	cr_assert_eq(missing, 0);
	cr_assert_eq(placement_moves(cur, out, NP), 0);
	missing = placement_compute(three, 3, 3, cur, NP, META, 2, out);
	cr_assert_eq(missing, 0, "an add leaves %d replicas unplaced", missing);
	for (uint32_t p = 0; p < NP; p++) {
		if (p == META[0] || p == META[1])
			continue;
		cr_assert_eq(out[p].nvoters, 3, "partition %u: %u voters", p,
			     out[p].nvoters);
		cr_assert(placement_has(out[p].voters, 3, 1) &&
			  placement_has(out[p].voters, 3, 2) &&
			  placement_has(out[p].voters, 3, 4), "partition %u", p);
	}
	cr_assert_eq(placement_moves(cur, out, NP), NP - 2 + 2,
		     "the new node's replicas (and the meta learners) only");
}

Test(placement, random_maps_balanced_and_minimal)
{
	unsigned seed = (unsigned)time(NULL);
	printf("placement random seed %u\n", seed);
	srand(seed);
	for (int round = 0; round < 300; round++) {
		uint32_t n = 1 + (uint32_t)rand() % 8, np = 2 + (uint32_t)rand() % 60;
		uint32_t rf = (uint32_t)rand() % 5;
		uint64_t nodes[PLACEMENT_MAX_NODES];
		for (uint32_t i = 0; i < n; i++)
			nodes[i] = i + 1;
		struct placement_part *empty = calloc(np, sizeof *empty);
		struct placement_part *a = calloc(np, sizeof *a);
		struct placement_part *b = calloc(np, sizeof *b);
		uint32_t meta[2] = {0, (uint32_t)rand() % np};
		uint32_t nm = meta[1] ? 2 : 1;
		cr_assert_eq(placement_compute(nodes, n, rf, empty, np, meta, nm,
					       a), 0, "seed %u round %d", seed,
			     round);
		uint32_t r = rf == 0 || rf > n ? n : rf;
		uint32_t lo = UINT32_MAX, hi = 0;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t l = 0;
			for (uint32_t p = 0; p < np; p++)
				if (p != meta[0] && p != meta[1])
					l += placement_has(a[p].voters,
							   a[p].nvoters, nodes[i]);
			lo = l < lo ? l : lo;
			hi = l > hi ? l : hi;
		}
		cr_assert_leq(hi - lo, 1, "seed %u round %d: loads %u..%u", seed,
			      round, lo, hi);
		for (uint32_t p = 0; p < np; p++) {
			if (p != meta[0] && p != meta[1])
				cr_assert_eq(a[p].nvoters, r);
			a[p].max_id = n;
		}
		/* a new node (a fresh, higher id): it takes its share and
		 * nothing else moves */
		if (n < PLACEMENT_MAX_NODES) {
			nodes[n] = n + 1;
			cr_assert_eq(placement_compute(nodes, n + 1, rf, a, np,
						       meta, nm, b), 0);
			uint32_t l = 0, lo2 = UINT32_MAX, hi2 = 0;
			for (uint32_t i = 0; i <= n; i++) {
				uint32_t li = 0;
				for (uint32_t p = 0; p < np; p++)
					if (p != meta[0] && p != meta[1])
						li += placement_has(b[p].voters,
								    b[p].nvoters,
								    nodes[i]);
				lo2 = li < lo2 ? li : lo2;
				hi2 = li > hi2 ? li : hi2;
				if (i == n)
					l = li;
			}
			cr_assert_leq(hi2 - lo2, 1, "seed %u round %d", seed,
				      round);
			uint32_t metadd = 0;
			for (uint32_t k = 0; k < nm; k++)
				metadd += 1;
			cr_assert_eq(placement_moves(a, b, np), l + metadd,
				     "seed %u round %d", seed, round);
		}
		free(empty);
		free(a);
		free(b);
	}
}

Test(placement, codec_and_map)
{
	struct placement_part pp, q;
	cr_assert_eq(placement_part_decode("1,2,3/4", &pp), 0);
	cr_assert_eq(pp.nvoters, 3);
	cr_assert_eq(pp.nlearners, 1);
	char b[64];
	cr_assert_gt(placement_part_encode(&pp, b, sizeof b), 0);
	cr_assert_str_eq(b, "1,2,3/4");
	cr_assert_eq(placement_part_encode(&pp, b, 4), 0);
	const char *bad[] = {"", "1,,2", "1,2/", "/4", "1,1", "1/1", "a", "1,"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_neq(placement_part_decode(bad[i], &q), 0, "%s",
			      bad[i]);
	struct placement_map m;
	const uint64_t f[3] = {1, 2, 3};
	cr_assert_eq(placement_map_init(&m, 4, f, 3), 0);
	bool rec;
	cr_assert(placement_map_get(&m, 2, &q, &rec));
	cr_assert_not(rec);
	cr_assert_eq(q.nvoters, 3);
	cr_assert_eq(placement_map_apply(&m, "2 1,3,4 3 1,2,3/4"), 0);
	cr_assert(placement_map_get(&m, 2, &q, &rec));
	cr_assert(rec);
	cr_assert_eq(q.voters[2], 4);
	cr_assert_neq(placement_map_apply(&m, "9 1,2"), 0);
	cr_assert_neq(placement_map_apply(&m, "1 1,2 x"), 0);
	cr_assert_neq(placement_map_apply(&m, ""), 0);
	cr_assert(placement_map_get(&m, 1, &q, &rec));
	cr_assert_not(rec, "a malformed record applies nothing");
	cr_assert_not(placement_map_get(&m, 4, &q, &rec));
	placement_map_free(&m);
}

/* ---- a cluster formed with more founders than the replication factor ---- */

/* Five founders hold all 64 partitions; the placement with replication
 * factor 3 only removes replicas (nothing copied), keeps the meta group
 * on its five voters and leaves every node 37 or 38 of the 62 others.
 * Applied as the formation rounds do it (at most 16 partitions a round,
 * recomputed from what is placed then), it ends at the same balance. */
Test(placement, five_founders_rf3_trimmed_evenly)
{
	enum { P = 64 };
	const uint64_t n5[5] = {1, 2, 3, 4, 5};
	const uint32_t meta[2] = {0, 41};
	struct placement_part cur[P], t[P];
	all_on(cur, P, n5, 5);
	for (int round = 0;; round++) {
		cr_assert_lt(round, 10, "rounds do not converge");
		cr_assert_eq(placement_compute(n5, 5, 3, cur, P, meta, 2, t), 0);
		cr_assert_eq(placement_moves(cur, t, P), 0,
			     "round %d adds a replica", round);
		uint32_t k = 0;
		for (uint32_t p = 0; p < P && k < 16; p++) {
			bool same = cur[p].nvoters == t[p].nvoters;
			for (uint32_t i = 0; same && i < t[p].nvoters; i++)
				same = placement_has(cur[p].voters,
						     cur[p].nvoters,
						     t[p].voters[i]);
			if (same)
				continue;
			cur[p] = t[p];
			k++;
		}
		if (!k)
			break;
	}
	for (uint32_t p = 0; p < P; p++) {
		bool m = p == meta[0] || p == meta[1];
		cr_assert_eq(cur[p].nvoters, m ? 5u : 3u, "partition %u", p);
		cr_assert_eq(cur[p].nlearners, 0);
	}
	for (uint32_t i = 0; i < 5; i++) {
		uint32_t l = 0;
		for (uint32_t p = 0; p < P; p++)
			if (p != meta[0] && p != meta[1])
				l += placement_has(cur[p].voters,
						   cur[p].nvoters, n5[i]);
		cr_assert(l == 37 || l == 38, "node %u holds %u", i + 1, l);
	}
}

/* ---- leadership hand-over (placement_lead_*) ---- */

struct lsim {
	uint32_t n, np;
	uint8_t leader[256];
	uint16_t voters[256];
	uint32_t moves, chains;
	uint32_t u0; /* the unevenness before the rounds */
};

static struct placement_leads lsim_view(const struct lsim *s)
{
	return (struct placement_leads){.n = s->n, .np = s->np,
					.leader = s->leader,
					.voters = s->voters};
}

static uint64_t lsim_sq(const struct lsim *s, uint32_t *excess)
{
	struct placement_leads v = lsim_view(s);
	uint32_t cnt[PLACEMENT_MAX_NODES];
	placement_lead_counts(&v, cnt);
	uint32_t hi = placement_lead_share(s->np, s->n), lo = s->np / s->n;
	uint64_t q = 0;
	*excess = 0; /* the unevenness: above ceil plus missing below floor */
	for (uint32_t k = 0; k < s->n; k++) {
		q += (uint64_t)cnt[k] * cnt[k];
		*excess += cnt[k] > hi ? cnt[k] - hi : 0;
		*excess += cnt[k] < lo ? lo - cnt[k] : 0;
	}
	return q;
}

/* One hand-over of p to `to`, with the invariants: the target stays at
 * or below ceil, the unevenness and the sum of squared counts never
 * grow, and a direct hand-over lowers the unevenness. */
static void lsim_move(struct lsim *s, uint32_t p, uint32_t to, bool direct,
		      const char *ctx)
{
	uint32_t e0, e1;
	uint64_t q0 = lsim_sq(s, &e0);
	uint32_t from = s->leader[p];
	cr_assert((s->voters[p] >> to) & 1u, "%s: %u is no voter of %u", ctx,
		  to, p);
	cr_assert_neq(from, to);
	if (getenv("LSIM_TRACE")) {
		struct placement_leads v0 = lsim_view(s);
		uint32_t c0[PLACEMENT_MAX_NODES];
		placement_lead_counts(&v0, c0);
		printf("%s: p%u %u->%u %s cnt", ctx, p, from, to,
		       direct ? "direct" : "hop");
		for (uint32_t k = 0; k < s->n; k++)
			printf(" %u", c0[k]);
		printf("\n");
	}
	s->leader[p] = (uint8_t)to;
	s->moves++;
	uint64_t q1 = lsim_sq(s, &e1);
	struct placement_leads v = lsim_view(s);
	uint32_t cnt[PLACEMENT_MAX_NODES];
	placement_lead_counts(&v, cnt);
	cr_assert_leq(cnt[to], placement_lead_share(s->np, s->n),
		      "%s: node %u above its share", ctx, to);
	cr_assert_leq(e1, e0, "%s: the unevenness grew", ctx);
	cr_assert_leq(q1, q0, "%s: the spread grew", ctx);
	if (direct)
		cr_assert_lt(e1, e0, "%s: a direct hand-over kept the "
			     "unevenness", ctx);
}

/* Rounds as the nodes run them: each node's direct hand-over, and when
 * no node handed anything, the leader of partition 0's chain hop. */
static void lsim_run(struct lsim *s, const char *ctx)
{
	(void)lsim_sq(s, &s->u0);
	for (int round = 0;; round++) {
		cr_assert_lt(round, 4 * (int)s->np, "%s: no end", ctx);
		uint32_t handed = 0;
		for (uint32_t self = 0; self < s->n; self++) {
			struct placement_leads v = lsim_view(s);
			uint32_t cnt[PLACEMENT_MAX_NODES];
			uint8_t want[256];
			placement_lead_counts(&v, cnt);
			uint32_t h = placement_lead_shed(&v, self, cnt, want);
			handed += h;
			for (uint32_t p = 0; p < s->np; p++)
				if (want[p] != PLACEMENT_NO_NODE) {
					cr_assert_eq(s->leader[p], self);
					lsim_move(s, p, want[p], true, ctx);
					h--;
				}
			cr_assert_eq(h, 0);
		}
		if (handed)
			continue;
		struct placement_leads v = lsim_view(s);
		uint32_t cnt[PLACEMENT_MAX_NODES], p, from, to;
		placement_lead_counts(&v, cnt);
		if (!placement_lead_chain(&v, cnt, &p, &from, &to))
			break;
		cr_assert_eq(s->leader[p], from);
		cr_assert_geq(cnt[from], s->np / s->n);
		lsim_move(s, p, to, false, ctx);
		s->chains++;
	}
	/* no churn: each unit of unevenness costs one direct hand-over and
	 * at most n - 2 hops before it (a hop shortens the chain) */
	cr_assert_leq(s->moves, s->u0 * (s->n - 1), "%s: %u moves for an "
		      "unevenness of %u", ctx, s->moves, s->u0);
}

static void lsim_check_even(const struct lsim *s, const char *ctx)
{
	struct placement_leads v = lsim_view(s);
	uint32_t cnt[PLACEMENT_MAX_NODES];
	placement_lead_counts(&v, cnt);
	for (uint32_t k = 0; k < s->n; k++)
		cr_assert(cnt[k] == s->np / s->n ||
			  cnt[k] == placement_lead_share(s->np, s->n),
			  "%s: node %u leads %u of %u", ctx, k, cnt[k], s->np);
}

/* What was seen on five nodes, replication factor 3, 64 partitions:
 * leaderships 17 13 13 13 8, the node with 17 leading only partitions
 * whose other voters lead 13 each (at the share, 13): it cannot hand
 * anything directly. A chain does it: a node at its share hands the
 * node with 8 a partition, and the node with 17 one to it. */
Test(placement, lead_chain_through_a_node_at_its_share)
{
	struct lsim s = {.n = 5, .np = 64};
	uint32_t want[5] = {17, 13, 13, 13, 8}, k = 0, left = 0;
	for (uint32_t p = 0; p < 64; p++) {
		while (left == 0)
			left = want[k++];
		uint32_t l = k - 1;
		left--;
		s.leader[p] = (uint8_t)l;
		/* node 0's partitions: voters 0, 1, 2; the others: the
		 * leader and the next two (so node 4 is a voter of some of
		 * nodes 2 and 3's) */
		if (l == 0)
			s.voters[p] = 0x7;
		else
			s.voters[p] = (uint16_t)((1u << l) | (1u << ((l + 1) % 5)) |
						 (1u << ((l + 2) % 5)));
	}
	struct placement_leads v = lsim_view(&s);
	uint32_t cnt[PLACEMENT_MAX_NODES];
	uint8_t w[64];
	placement_lead_counts(&v, cnt);
	cr_assert_eq(cnt[0], 17);
	cr_assert_eq(cnt[4], 8);
	/* the direct rule alone: nobody can move anything */
	for (uint32_t self = 0; self < 5; self++) {
		uint32_t c2[PLACEMENT_MAX_NODES];
		memcpy(c2, cnt, sizeof c2);
		cr_assert_eq(placement_lead_shed(&v, self, c2, w), 0, "node %u",
			     self);
	}
	cr_assert(placement_lead_stuck(&v, cnt, 0));
	uint32_t p, from, to;
	cr_assert(placement_lead_chain(&v, cnt, &p, &from, &to));
	cr_assert_eq(to, 4, "the hop ends at the node below its share");
	cr_assert(from == 2 || from == 3, "from %u", from);
	lsim_run(&s, "seen");
	lsim_check_even(&s, "seen");
	cr_assert_geq(s.chains, 1);
	/* 17 -> 13 takes 4 direct hand-overs and one hop each at least */
	cr_assert_leq(s.moves, 16, "%u moves", s.moves);
}

/* Nothing moves when every node is within one of the share, and a
 * direct hand-over goes before any chain. */
Test(placement, lead_no_move_when_even_direct_first)
{
	struct lsim s = {.n = 5, .np = 64};
	for (uint32_t p = 0; p < 64; p++) {
		s.leader[p] = (uint8_t)(p % 5);
		s.voters[p] = 0x1F;
	}
	struct placement_leads v = lsim_view(&s);
	uint32_t cnt[PLACEMENT_MAX_NODES], p, from, to;
	uint8_t w[64];
	placement_lead_counts(&v, cnt);
	for (uint32_t self = 0; self < 5; self++)
		cr_assert_eq(placement_lead_shed(&v, self, cnt, w), 0);
	cr_assert_not(placement_lead_chain(&v, cnt, &p, &from, &to));
	/* node 0 above, every node a voter: the direct one, no chain */
	s.leader[1] = 0;
	s.leader[2] = 0;
	placement_lead_counts(&v, cnt);
	cr_assert_not(placement_lead_stuck(&v, cnt, 0));
	cr_assert_not(placement_lead_chain(&v, cnt, &p, &from, &to));
	lsim_run(&s, "direct");
	lsim_check_even(&s, "direct");
	cr_assert_eq(s.chains, 0);
}

/* Random balanced placements (placement_compute, replication factor 3 on
 * 4 to 7 nodes) with random leaders among each partition's voters: the
 * rounds end with every node within one of the even share, no move
 * against the invariants (lsim_move). Seed printed. */
Test(placement, lead_random_converges)
{
	unsigned seed = getenv("LSIM_SEED") ? (unsigned)atoi(getenv("LSIM_SEED"))
					    : (unsigned)time(NULL);
	printf("placement lead seed %u\n", seed);
	srand(seed);
	for (int round = 0; round < 200; round++) {
		char ctx[64];
		snprintf(ctx, sizeof ctx, "seed %u round %d", seed, round);
		uint32_t n = 4 + (uint32_t)rand() % 4, np = 16 + (uint32_t)rand() % 113;
		uint64_t nodes[PLACEMENT_MAX_NODES];
		for (uint32_t i = 0; i < n; i++)
			nodes[i] = i + 1;
		struct placement_part *empty = calloc(np, sizeof *empty);
		struct placement_part *a = calloc(np, sizeof *a);
		uint32_t meta[1] = {0};
		cr_assert_eq(placement_compute(nodes, n, 3, empty, np, meta, 1,
					       a), 0, "%s", ctx);
		struct lsim s = {.n = n, .np = np};
		for (uint32_t p = 0; p < np; p++) {
			for (uint32_t i = 0; i < a[p].nvoters; i++)
				s.voters[p] |= (uint16_t)(1u << (a[p].voters[i] - 1));
			/* skewed: the lowest voter leads more often */
			uint32_t pick = (uint32_t)rand() % (a[p].nvoters + 2);
			if (pick >= a[p].nvoters)
				pick = 0;
			uint64_t lo = a[p].voters[0];
			for (uint32_t i = 1; i < a[p].nvoters && pick == 0; i++)
				lo = a[p].voters[i] < lo ? a[p].voters[i] : lo;
			s.leader[p] = (uint8_t)((pick ? a[p].voters[pick] : lo) - 1);
		}
		lsim_run(&s, ctx);
		lsim_check_even(&s, ctx);
		free(empty);
		free(a);
	}
}
