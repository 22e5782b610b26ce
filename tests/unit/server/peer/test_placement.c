/*
 * test_placement.c — the placement algorithm and map (server/placement.c):
 * the meta group's size, today's placement kept as is, a fourth and fifth
 * node getting a fair share with the least moves, a removed node's
 * replicas moved to nodes the id rule allows, random maps staying
 * balanced (seed printed), and the record codec.
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
