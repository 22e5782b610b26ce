/*
 * placement.h — the placement map: which nodes hold each partition
 * (docs/CLUSTER.md §3.7, "The meta group and the placement map").
 *
 * Two parts:
 *   - placement_compute, pure: from the nodes of the cluster, the
 *     replication factor and the current map, the target map of an
 *     operation (a node added or removed). Non-meta partitions get
 *     min(rf, nodes) voters (rf 0 = every node), balanced (every node
 *     holds floor or ceil of partitions x replicas / nodes of them, as far
 *     as the id rule below allows) with as few replica moves as that
 *     takes: a replica moves only off a node above its share or off a
 *     node that left. The meta partitions (the group that orders
 *     membership and holds the members stream) get placement_meta_voters
 *     voters (1, 3 or 5) and every other node as a learner, so that every
 *     node applies the members stream and its placement records locally.
 *     Any node may be placed on any partition (a member removed from a
 *     group may join it again, raft.h); the older rule of engines where
 *     ids were never reused in a group (an id above the group's max_id
 *     only) is kept for a caller that asks for it (PLACEMENT_ID_RULE in
 *     max_id); where no node qualifies, the partition stays short of
 *     replicas (placement_compute counts them).
 *     Voters are never demoted to learners (the engine has no such
 *     change): a meta voter stays a voter while it is a node.
 *   - placement_lead_shed / placement_lead_chain, pure: who hands which
 *     leadership to whom so that every node leads floor or ceil of
 *     partitions / nodes (docs/CLUSTER.md §3.2, the automatic hand-over).
 *     Invariants: a hand-over never takes a node above ceil, nothing
 *     moves once every node is at floor or ceil; a direct hand-over
 *     lowers the unevenness by one, a chain's hops leave it as it is
 *     until its last, which lowers it.
 *   - struct placement_map: the map as the members stream's "place"
 *     records give it, one entry per partition, behind a mutex; a
 *     partition that has no record yet is held by the founders (the
 *     bootstrap configuration, pe_options.cluster.voters).
 *
 * Threads: placement_compute and the encode / decode helpers are pure;
 * a placement_map is read and written from any thread (its mutex).
 */
#ifndef PARLEYD_PLACEMENT_H
#define PARLEYD_PLACEMENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLACEMENT_MAX_NODES 9u        /* RAFT_MAX_MEMBERS */
#define PLACEMENT_MAX_PARTS 4096u     /* bounded like pe_options.partitions */
#define PLACEMENT_MAX_META 2u         /* partition 0 and the members stream's */
#define PLACEMENT_DEFAULT_RF 3u       /* replication_factor's default */
#define PLACEMENT_ID_RULE (1ull << 63) /* placement_part.max_id flag */

struct placement_part {
	uint64_t voters[PLACEMENT_MAX_NODES];
	uint64_t learners[PLACEMENT_MAX_NODES];
	uint32_t nvoters, nlearners;
	/* input: with PLACEMENT_ID_RULE or'd in, only ids above the rest
	 * (the group's highest id ever) and above every current member may
	 * join; without it any node may */
	uint64_t max_id;
};

/* The meta group's size for a cluster of `nodes`: min(nodes, 5) rounded
 * down to odd (1, 3 or 5). */
uint32_t placement_meta_voters(uint32_t nodes);

/* The target map. nodes[0..n) are the cluster's nodes after the
 * operation (distinct, non-zero, n <= PLACEMENT_MAX_NODES); cur[0..np)
 * the current map (voters and learners; a learner left by an unfinished
 * operation counts as a replica); meta[0..nmeta) the meta partitions.
 * out[0..np) gets the target (out may not alias cur; out[p].max_id =
 * cur[p].max_id). Returns how many replicas the target lacks in all
 * (0 = every partition has its full count), or -1 for bad arguments. */
int placement_compute(const uint64_t *nodes, uint32_t n, uint32_t rf,
		      const struct placement_part *cur, uint32_t np,
		      const uint32_t *meta, uint32_t nmeta,
		      struct placement_part *out);

/* How many replica additions the change from a to b takes (nodes in b's
 * voters or learners that are in neither of a's): what "minimal moves"
 * is measured by. */
uint32_t placement_moves(const struct placement_part *a,
			 const struct placement_part *b, uint32_t np);

bool placement_has(const uint64_t *ids, uint32_t n, uint64_t id);

/* "V1,V2,V3" or "V1,V2/L1,L2" (no spaces) and back. encode returns the
 * length written (< cap) or 0 when it does not fit; decode 0 or -1. */
size_t placement_part_encode(const struct placement_part *pp, char *out,
			     size_t cap);
int placement_part_decode(const char *s, struct placement_part *pp);

/* ---- leadership hand-over decisions (docs/CLUSTER.md §3.2) ---- */

#define PLACEMENT_NO_NODE 0xFFu

/* A view of who leads what: nodes are indexes 0..n) (n <=
 * PLACEMENT_MAX_NODES), leader[p] the index of p's leader
 * (PLACEMENT_NO_NODE: unknown or not one of the nodes), voters[p] a bit
 * per node index that is a voter of p. */
struct placement_leads {
	uint32_t n, np;
	const uint8_t *leader;  /* np */
	const uint16_t *voters; /* np */
};

/* The most partitions a node should lead: ceil(np / n); the even
 * share is floor(np / n) or this. */
uint32_t placement_lead_share(uint32_t np, uint32_t n);
/* cnt[k] = how many partitions node k leads. */
void placement_lead_counts(const struct placement_leads *l, uint32_t *cnt);

/* Uneven is a node above ceil (then nodes above ceil give to nodes below
 * ceil) or else a node below floor (nodes above floor give to nodes
 * below floor). The direct hand-over of node `self`, a giver: each
 * partition it leads goes, while it gives, to the least loaded taker
 * among p's voters (lowest index on a tie). want[p] (np) gets the
 * target's index for each partition handed, PLACEMENT_NO_NODE for the
 * others; cnt (n, from placement_lead_counts) is updated. Returns how
 * many are handed. */
uint32_t placement_lead_shed(const struct placement_leads *l, uint32_t self,
			     uint32_t *cnt, uint8_t *want);

/* Is node a a giver none of whose partitions has a taker among its
 * voters (its direct hand-over can do nothing)? */
bool placement_lead_stuck(const struct placement_leads *l,
			  const uint32_t *cnt, uint32_t a);

/* The leadership chain, when every giver is stuck: from the most loaded
 * giver a (lowest index on a tie) the shortest chain a -> x1 -> .. -> c,
 * each hop a partition led by one node with the next as a voter, through
 * nodes that do not take, to the nearest taker c. Gives its last hop,
 * partition *part from its leader *from to *to: c ends at ceil at most,
 * the unevenness stays as it is, and the chain is one hop shorter (x_k
 * now takes); when it is one hop long, a's direct hand-over takes it and
 * lowers the unevenness. Returns false when the leaderships are even, a
 * giver is not stuck, or no chain exists. */
bool placement_lead_chain(const struct placement_leads *l,
			  const uint32_t *cnt, uint32_t *part, uint32_t *from,
			  uint32_t *to);

/* ---- the map as the members stream gives it ---- */

struct placement_map {
	pthread_mutex_t mu;
	uint32_t np;
	struct placement_part *parts; /* np */
	bool *recorded;               /* np: a "place" record was applied */
	uint64_t *max_ids;            /* np: the highest id ever placed there */
	struct placement_part founders;
	uint64_t records;             /* "place" records applied */
};

int placement_map_init(struct placement_map *m, uint32_t np,
		       const uint64_t *founders, uint32_t nfounders);
void placement_map_free(struct placement_map *m);
/* Applies one "place P SPEC [P SPEC ...]" record (the text after "place "):
 * 0, or -1 for a malformed record (nothing applied). */
int placement_map_apply(struct placement_map *m, const char *rec);
/* Partition p's replicas by the map (founders when never recorded);
 * false for p out of range. *recorded tells which. */
bool placement_map_get(struct placement_map *m, uint32_t p,
		       struct placement_part *out, bool *recorded);

/* The highest node id any record (or the founders) placed on p: with the
 * group's current members, what the id rule compares to. */
uint64_t placement_map_max_id(struct placement_map *m, uint32_t p);

#endif /* PARLEYD_PLACEMENT_H */
