/*
 * placement.c — the placement algorithm and the placement map
 * (placement.h; docs/CLUSTER.md §3.7).
 *
 * placement_compute works in three passes over the non-meta partitions:
 * keep what is placed on nodes that stay (trimming a partition above its
 * count from its most loaded replicas, learners first), fill partitions
 * short of replicas from the least loaded eligible nodes, then move
 * replicas from the most loaded node to the least loaded one while they
 * differ by two or more. Each move lowers the excess above the share by
 * one, so the count of moves is the least that reaches a balanced map
 * from the current one. Loads count non-meta partitions only (the meta
 * partitions are on every node).
 *
 * The leadership decisions (placement_lead_*) aim at every node leading
 * floor or ceil of partitions / nodes, and keep rules that make the
 * automatic hand-over converge without churn (lead_mode): only while a
 * node is above ceil or below floor does anything move, a receiver
 * never ends above ceil, and a direct hand-over (giver -> taker) lowers
 * the unevenness by one, so no partition is traded back. A giver none
 * of whose partitions has a taker among its voters is helped by a chain
 * a -> x -> c: x (neither giver nor taker) hands c (a taker) a
 * partition first, which leaves the unevenness as it was and makes x a
 * taker, and a's direct hand-over to x then lowers it.
 *
 * Ownership: a placement_map owns its arrays; placement_compute writes
 * only `out`. Threads: see placement.h.
 */
#include "placement.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t placement_meta_voters(uint32_t nodes)
{
	uint32_t v = nodes < 5 ? nodes : 5;
	if (v && v % 2 == 0)
		v--;
	return v;
}

bool placement_has(const uint64_t *ids, uint32_t n, uint64_t id)
{
	for (uint32_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

static bool part_holds(const struct placement_part *pp, uint64_t id)
{
	return placement_has(pp->voters, pp->nvoters, id) ||
	       placement_has(pp->learners, pp->nlearners, id);
}

/* May `id` be placed on partition cur? With id_rule (max_id set by
 * the caller: PLACEMENT_ID_RULE), only a holder or an id above every id
 * the group ever had; otherwise any node (a member removed before joins
 * again with its own data, raft.h). */
static bool eligible(const struct placement_part *cur, uint64_t id)
{
	if (part_holds(cur, id) || !(cur->max_id & PLACEMENT_ID_RULE))
		return true;
	uint64_t max = cur->max_id & ~PLACEMENT_ID_RULE;
	for (uint32_t i = 0; i < cur->nvoters; i++)
		max = cur->voters[i] > max ? cur->voters[i] : max;
	for (uint32_t i = 0; i < cur->nlearners; i++)
		max = cur->learners[i] > max ? cur->learners[i] : max;
	return id > max;
}

static int node_ix(const uint64_t *nodes, uint32_t n, uint64_t id)
{
	for (uint32_t i = 0; i < n; i++)
		if (nodes[i] == id)
			return (int)i;
	return -1;
}

static void drop_at(uint64_t *ids, uint32_t *n, uint32_t at)
{
	for (uint32_t i = at; i + 1 < *n; i++)
		ids[i] = ids[i + 1];
	(*n)--;
}

static bool is_meta(const uint32_t *meta, uint32_t nmeta, uint32_t p)
{
	for (uint32_t i = 0; i < nmeta; i++)
		if (meta[i] == p)
			return true;
	return false;
}

static void place_meta(const uint64_t *nodes, uint32_t n, uint32_t mv,
		       const struct placement_part *c, struct placement_part *o,
		       int *missing)
{
	for (uint32_t i = 0; i < c->nvoters; i++)
		if (node_ix(nodes, n, c->voters[i]) >= 0)
			o->voters[o->nvoters++] = c->voters[i];
	/* short of voters: current learners first (they hold the log), then
	 * the lowest ids */
	for (int pass = 0; pass < 2 && o->nvoters < mv; pass++)
		for (uint32_t i = 0; i < n && o->nvoters < mv; i++) {
			uint64_t id = nodes[i];
			if (placement_has(o->voters, o->nvoters, id) ||
			    !eligible(c, id) ||
			    (pass == 0 &&
			     !placement_has(c->learners, c->nlearners, id)))
				continue;
			o->voters[o->nvoters++] = id;
		}
	if (o->nvoters < mv)
		*missing += (int)(mv - o->nvoters);
	for (uint32_t i = 0; i < n; i++)
		if (!placement_has(o->voters, o->nvoters, nodes[i]) &&
		    eligible(c, nodes[i]))
			o->learners[o->nlearners++] = nodes[i];
}

int placement_compute(const uint64_t *nodes, uint32_t n, uint32_t rf,
		      const struct placement_part *cur, uint32_t np,
		      const uint32_t *meta, uint32_t nmeta,
		      struct placement_part *out)
{
	if (!nodes || !n || n > PLACEMENT_MAX_NODES || !cur || !out || !np ||
	    np > PLACEMENT_MAX_PARTS || nmeta > PLACEMENT_MAX_META)
		return -1;
	for (uint32_t i = 0; i < n; i++)
		if (!nodes[i] || node_ix(nodes, i, nodes[i]) >= 0)
			return -1;
	for (uint32_t i = 0; i < nmeta; i++)
		if (meta[i] >= np)
			return -1;
	uint32_t r = rf == 0 || rf > n ? n : rf;
	uint32_t mv = rf == 0 ? n : placement_meta_voters(n);
	uint32_t load[PLACEMENT_MAX_NODES] = {0};
	int missing = 0;
	memset(out, 0, np * sizeof *out);
	/* pass 1: keep what stays */
	for (uint32_t p = 0; p < np; p++) {
		const struct placement_part *c = &cur[p];
		struct placement_part *o = &out[p];
		o->max_id = c->max_id;
		if (is_meta(meta, nmeta, p)) {
			place_meta(nodes, n, mv, c, o, &missing);
			continue;
		}
		for (uint32_t i = 0; i < c->nvoters; i++)
			if (node_ix(nodes, n, c->voters[i]) >= 0)
				o->voters[o->nvoters++] = c->voters[i];
		for (uint32_t i = 0; i < c->nlearners; i++)
			if (node_ix(nodes, n, c->learners[i]) >= 0)
				o->voters[o->nvoters++] = c->learners[i];
		for (uint32_t i = 0; i < o->nvoters; i++)
			load[node_ix(nodes, n, o->voters[i])]++;
	}
	/* trim partitions above r: the most loaded replica goes (a learner,
	 * placed after the voters, wins ties) */
	for (uint32_t p = 0; p < np; p++) {
		struct placement_part *o = &out[p];
		if (is_meta(meta, nmeta, p))
			continue;
		while (o->nvoters > r) {
			uint32_t worst = 0;
			for (uint32_t i = 1; i < o->nvoters; i++)
				if (load[node_ix(nodes, n, o->voters[i])] >=
				    load[node_ix(nodes, n, o->voters[worst])])
					worst = i;
			load[node_ix(nodes, n, o->voters[worst])]--;
			drop_at(o->voters, &o->nvoters, worst);
		}
	}
	/* pass 2: fill from the least loaded eligible nodes */
	for (uint32_t p = 0; p < np; p++) {
		struct placement_part *o = &out[p];
		if (is_meta(meta, nmeta, p))
			continue;
		while (o->nvoters < r) {
			int best = -1;
			for (uint32_t i = 0; i < n; i++)
				if (!placement_has(o->voters, o->nvoters,
						   nodes[i]) &&
				    eligible(&cur[p], nodes[i]) &&
				    (best < 0 || load[i] < load[best]))
					best = (int)i;
			if (best < 0) {
				missing += (int)(r - o->nvoters);
				break;
			}
			o->voters[o->nvoters++] = nodes[best];
			load[best]++;
		}
	}
	/* pass 3: move from the most to the least loaded while they differ
	 * by two or more (bounded: each move lowers the spread's excess) */
	for (uint32_t guard = 0; guard < np * PLACEMENT_MAX_NODES; guard++) {
		uint32_t hi = 0, lo = 0;
		for (uint32_t i = 1; i < n; i++) {
			if (load[i] > load[hi])
				hi = i;
			if (load[i] < load[lo])
				lo = i;
		}
		if (load[hi] < load[lo] + 2)
			break;
		bool moved = false;
		/* an overloaded / underloaded pair with a legal move (the id
		 * rule may forbid the widest pair's) */
		for (uint32_t a = 0; a < n && !moved; a++) {
			if (load[a] != load[hi])
				continue;
			for (uint32_t b = 0; b < n && !moved; b++) {
				if (load[b] + 2 > load[a])
					continue;
				for (uint32_t p = 0; p < np && !moved; p++) {
					struct placement_part *o = &out[p];
					if (is_meta(meta, nmeta, p) ||
					    placement_has(o->voters, o->nvoters,
							  nodes[b]) ||
					    !eligible(&cur[p], nodes[b]))
						continue;
					for (uint32_t at = 0; at < o->nvoters;
					     at++)
						if (o->voters[at] == nodes[a]) {
							o->voters[at] = nodes[b];
							load[a]--;
							load[b]++;
							moved = true;
							break;
						}
				}
			}
		}
		if (!moved)
			break;
	}
	return missing;
}

/* ---- leadership hand-over decisions ---- */

uint32_t placement_lead_share(uint32_t np, uint32_t n)
{
	return n ? (np + n - 1) / n : 0;
}

void placement_lead_counts(const struct placement_leads *l, uint32_t *cnt)
{
	memset(cnt, 0, l->n * sizeof *cnt);
	for (uint32_t p = 0; p < l->np; p++)
		if (l->leader[p] < l->n)
			cnt[l->leader[p]]++;
}

static bool lead_voter(const struct placement_leads *l, uint32_t p,
		       uint32_t k)
{
	return (l->voters[p] >> k) & 1u;
}

/* The two ways to be uneven, with who gives and who takes:
 *   over  (a node leads more than ceil): givers above ceil, takers below
 *         ceil;
 *   under (none above ceil, one below floor): givers above floor (at
 *         ceil), takers below floor.
 * A hand-over from a giver to a taker leaves the giver at floor or more
 * and the taker at ceil or less, and lowers the unevenness (the leads
 * above ceil plus those missing below floor) by one. */
struct lead_mode {
	uint32_t give_above, take_below; /* giver: cnt > a; taker: cnt < b */
	bool uneven;
};

static struct lead_mode lead_mode(const struct placement_leads *l,
				  const uint32_t *cnt)
{
	uint32_t hi = placement_lead_share(l->np, l->n);
	uint32_t lo = l->n ? l->np / l->n : 0;
	bool over = false, under = false;
	for (uint32_t k = 0; k < l->n; k++) {
		over = over || cnt[k] > hi;
		under = under || cnt[k] < lo;
	}
	if (over)
		return (struct lead_mode){hi, hi, true};
	if (under)
		return (struct lead_mode){lo, lo, true};
	return (struct lead_mode){0, 0, false};
}

/* The least loaded taker among p's voters other than `self`, or l->n. */
static uint32_t lead_taker(const struct placement_leads *l,
			   const uint32_t *cnt, const struct lead_mode *m,
			   uint32_t p, uint32_t self)
{
	uint32_t best = l->n;
	for (uint32_t k = 0; k < l->n; k++)
		if (k != self && cnt[k] < m->take_below &&
		    lead_voter(l, p, k) && (best == l->n || cnt[k] < cnt[best]))
			best = k;
	return best;
}

uint32_t placement_lead_shed(const struct placement_leads *l, uint32_t self,
			     uint32_t *cnt, uint8_t *want)
{
	uint32_t handed = 0;
	memset(want, PLACEMENT_NO_NODE, l->np);
	if (self >= l->n)
		return 0;
	for (uint32_t p = 0; p < l->np; p++) {
		struct lead_mode m = lead_mode(l, cnt);
		if (!m.uneven || cnt[self] <= m.give_above)
			break;
		if (l->leader[p] != self)
			continue;
		uint32_t best = lead_taker(l, cnt, &m, p, self);
		if (best == l->n) /* none of p's voters takes */
			continue;
		want[p] = (uint8_t)best;
		cnt[best]++;
		cnt[self]--;
		handed++;
	}
	return handed;
}

bool placement_lead_stuck(const struct placement_leads *l,
			  const uint32_t *cnt, uint32_t a)
{
	struct lead_mode m = lead_mode(l, cnt);
	if (a >= l->n || !m.uneven || cnt[a] <= m.give_above)
		return false;
	for (uint32_t p = 0; p < l->np; p++)
		if (l->leader[p] == a && lead_taker(l, cnt, &m, p, a) < l->n)
			return false;
	return true;
}

bool placement_lead_chain(const struct placement_leads *l,
			  const uint32_t *cnt, uint32_t *part, uint32_t *from,
			  uint32_t *to)
{
	struct lead_mode m = lead_mode(l, cnt);
	uint32_t a = l->n;
	for (uint32_t k = 0; m.uneven && k < l->n; k++) {
		if (cnt[k] <= m.give_above)
			continue;
		if (!placement_lead_stuck(l, cnt, k))
			return false; /* its direct hand-over comes first */
		if (a == l->n || cnt[k] > cnt[a])
			a = k;
	}
	if (a == l->n)
		return false; /* even */
	/* breadth first from a over "leads a partition of which the next
	 * is a voter", through nodes that do not take, to the nearest taker */
	uint32_t queue[PLACEMENT_MAX_NODES], qh = 0, qt = 0;
	bool seen[PLACEMENT_MAX_NODES] = {false};
	seen[a] = true;
	queue[qt++] = a;
	while (qh < qt) {
		uint32_t x = queue[qh++];
		for (uint32_t p = 0; p < l->np; p++) {
			if (l->leader[p] != x)
				continue;
			for (uint32_t k = 0; k < l->n; k++) {
				if (seen[k] || !lead_voter(l, p, k))
					continue;
				seen[k] = true;
				if (cnt[k] < m.take_below) {
					*part = p;
					*from = x;
					*to = k;
					return true;
				}
				queue[qt++] = k;
			}
		}
	}
	return false;
}

uint32_t placement_moves(const struct placement_part *a,
			 const struct placement_part *b, uint32_t np)
{
	uint32_t m = 0;
	for (uint32_t p = 0; p < np; p++) {
		for (uint32_t i = 0; i < b[p].nvoters; i++)
			m += !part_holds(&a[p], b[p].voters[i]);
		for (uint32_t i = 0; i < b[p].nlearners; i++)
			m += !part_holds(&a[p], b[p].learners[i]);
	}
	return m;
}

size_t placement_part_encode(const struct placement_part *pp, char *out,
			     size_t cap)
{
	size_t o = 0;
	int w;
	for (uint32_t i = 0; i < pp->nvoters; i++) {
		w = snprintf(out + o, cap - o, "%s%" PRIu64, i ? "," : "",
			     pp->voters[i]);
		if (w < 0 || (size_t)w >= cap - o)
			return 0;
		o += (size_t)w;
	}
	for (uint32_t i = 0; i < pp->nlearners; i++) {
		w = snprintf(out + o, cap - o, "%s%" PRIu64, i ? "," : "/",
			     pp->learners[i]);
		if (w < 0 || (size_t)w >= cap - o)
			return 0;
		o += (size_t)w;
	}
	return o;
}

static int ids_decode(const char *s, const char *end, uint64_t *ids,
		      uint32_t *n)
{
	*n = 0;
	while (s < end) {
		char *e;
		if (*s < '0' || *s > '9')
			return -1;
		unsigned long long v = strtoull(s, &e, 10);
		if (!v || e > end || *n >= PLACEMENT_MAX_NODES ||
		    placement_has(ids, *n, v))
			return -1;
		ids[(*n)++] = v;
		s = e;
		if (s < end) {
			if (*s != ',')
				return -1;
			s++;
			if (s == end)
				return -1;
		}
	}
	return 0;
}

int placement_part_decode(const char *s, struct placement_part *pp)
{
	memset(pp, 0, sizeof *pp);
	const char *end = s + strlen(s);
	const char *slash = strchr(s, '/');
	if (ids_decode(s, slash ? slash : end, pp->voters, &pp->nvoters) ||
	    !pp->nvoters)
		return -1;
	if (slash && (ids_decode(slash + 1, end, pp->learners,
				 &pp->nlearners) || !pp->nlearners))
		return -1;
	for (uint32_t i = 0; i < pp->nlearners; i++)
		if (placement_has(pp->voters, pp->nvoters, pp->learners[i]))
			return -1;
	return 0;
}

int placement_map_init(struct placement_map *m, uint32_t np,
		       const uint64_t *founders, uint32_t nfounders)
{
	memset(m, 0, sizeof *m);
	if (!np || np > PLACEMENT_MAX_PARTS || nfounders > PLACEMENT_MAX_NODES)
		return -1;
	m->parts = calloc(np, sizeof *m->parts);
	m->recorded = calloc(np, sizeof *m->recorded);
	m->max_ids = calloc(np, sizeof *m->max_ids);
	if (!m->parts || !m->recorded || !m->max_ids) {
		free(m->parts);
		free(m->recorded);
		free(m->max_ids);
		return -1;
	}
	m->np = np;
	uint64_t fmax = 0;
	for (uint32_t i = 0; i < nfounders; i++) {
		m->founders.voters[m->founders.nvoters++] = founders[i];
		fmax = founders[i] > fmax ? founders[i] : fmax;
	}
	for (uint32_t p = 0; p < np; p++)
		m->max_ids[p] = fmax;
	pthread_mutex_init(&m->mu, NULL);
	return 0;
}

void placement_map_free(struct placement_map *m)
{
	if (!m->parts)
		return;
	pthread_mutex_destroy(&m->mu);
	free(m->parts);
	free(m->recorded);
	free(m->max_ids);
	m->max_ids = NULL;
	m->parts = NULL;
	m->recorded = NULL;
}

#define REC_MAX_PAIRS 512u

int placement_map_apply(struct placement_map *m, const char *rec)
{
	uint32_t ps[REC_MAX_PAIRS];
	struct placement_part *pp = malloc(REC_MAX_PAIRS * sizeof *pp);
	if (!pp)
		return -1;
	uint32_t k = 0;
	const char *s = rec;
	int rc = 0;
	while (*s) {
		while (*s == ' ')
			s++;
		if (!*s)
			break;
		char spec[160];
		unsigned long p;
		int used = 0;
		if (k == REC_MAX_PAIRS ||
		    sscanf(s, "%lu %159s%n", &p, spec, &used) != 2 ||
		    p >= m->np || placement_part_decode(spec, &pp[k])) {
			rc = -1;
			break;
		}
		ps[k++] = (uint32_t)p;
		s += used;
	}
	if (!rc && k) {
		pthread_mutex_lock(&m->mu);
		for (uint32_t i = 0; i < k; i++) {
			m->parts[ps[i]] = pp[i];
			m->recorded[ps[i]] = true;
			for (uint32_t j = 0; j < pp[i].nvoters; j++)
				if (pp[i].voters[j] > m->max_ids[ps[i]])
					m->max_ids[ps[i]] = pp[i].voters[j];
			for (uint32_t j = 0; j < pp[i].nlearners; j++)
				if (pp[i].learners[j] > m->max_ids[ps[i]])
					m->max_ids[ps[i]] = pp[i].learners[j];
		}
		m->records++;
		pthread_mutex_unlock(&m->mu);
	}
	free(pp);
	return k ? rc : -1;
}

uint64_t placement_map_max_id(struct placement_map *m, uint32_t p)
{
	if (!m->parts || p >= m->np)
		return 0;
	pthread_mutex_lock(&m->mu);
	uint64_t v = m->max_ids[p];
	pthread_mutex_unlock(&m->mu);
	return v;
}

bool placement_map_get(struct placement_map *m, uint32_t p,
		       struct placement_part *out, bool *recorded)
{
	if (!m->parts || p >= m->np)
		return false;
	pthread_mutex_lock(&m->mu);
	bool rec = m->recorded[p];
	*out = rec ? m->parts[p] : m->founders;
	pthread_mutex_unlock(&m->mu);
	if (recorded)
		*recorded = rec;
	return true;
}
