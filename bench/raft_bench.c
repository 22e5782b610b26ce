/*
 * raft_bench.c — `parley-raft-bench`: throughput and CPU cost of the pure
 * Raft core (engine/raft.h) alone, issue 5.
 *
 * What runs: N in-process cores (one group, N voters) in ONE thread, driven
 * through the public API only (raft_propose / raft_ready / raft_advance /
 * raft_step / raft_tick). The world is ideal, so what is measured is the
 * core plus the harness's bookkeeping, nothing else:
 *   - storage: an in-memory log per node; "persisting" a ready copies its
 *     entries (and payloads) into that log and its hard state into a struct:
 *     instant, never fails (struct raft_storage reads from it);
 *   - network: perfect; every message of a ready is handed to its
 *     destination's raft_step right after the sender "persisted" (contract
 *     step 3), in order, never lost. In `codec` mode each ready's messages
 *     are also encoded per destination as one raft_codec frame (a batch)
 *     and decoded from it before raft_step — the same run then shows what
 *     the wire codec adds on top of the core;
 *   - clock: no ticks during the measured phase (a real node ticks every
 *     ~100 ms, thousands of commits apart), so no heartbeats are counted.
 *
 * One round = propose `batch` entries of `payload` bytes on the leader, then
 * pump every node's ready until all are empty (the entries are committed
 * and applied on the leader). Throughput = entries applied on the leader per
 * wall second; CPU per entry = CLOCK_PROCESS_CPUTIME_ID over the measured
 * phase / entries (all N nodes' work: the whole cluster's cost of one
 * entry, in one thread). After the phase one heartbeat round lets the
 * followers learn the last commit, and every node must have applied the same
 * entries (count and last index) or the run fails.
 *
 * Exit status: 0 ok, 1 a run failed (no leader, divergent apply), 64 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "parley_common.h"
#include "raft.h"
#include "raft_codec.h"

#define EXIT_USAGE 64
#define MAX_NODES 7
#define SLAB_BYTES (4u << 20)
#define MAX_REPEAT 9

/* ---- in-memory stable storage -------------------------------------------- */

struct slab {
	struct slab *next;
	size_t used;
	uint8_t data[];
};

struct node {
	uint64_t id;
	struct raft *r;
	struct raft_hardstate hs;
	struct raft_entry *log; /* log[i - 1] is index i; data in slabs */
	uint64_t n_log, cap_log;
	struct slab *slabs;
	uint64_t applied_n;     /* NORMAL entries applied */
	uint64_t applied_last;  /* last index applied */
};

static uint8_t *slab_copy(struct node *n, const void *p, uint32_t len)
{
	if (!len)
		return NULL;
	size_t need = len;
	if (!n->slabs || SLAB_BYTES - n->slabs->used < need) {
		size_t sz = PARLEY_MAX((size_t)SLAB_BYTES, need);
		struct slab *s = malloc(sizeof *s + sz);
		PARLEY_ASSERT(s);
		s->next = n->slabs;
		s->used = 0;
		n->slabs = s;
	}
	uint8_t *d = n->slabs->data + n->slabs->used;
	memcpy(d, p, len);
	n->slabs->used += (len + 7u) & ~7u;
	if (n->slabs->used > SLAB_BYTES)
		n->slabs->used = SLAB_BYTES;
	return d;
}

static int st_load(void *ctx, struct raft_hardstate *hs,
		   struct raft_snapshot_meta *snap, uint64_t *last_index,
		   struct raft_snapshot_meta *partial, uint64_t *partial_bytes)
{
	struct node *n = ctx;
	*hs = n->hs;
	memset(snap, 0, sizeof *snap);
	memset(partial, 0, sizeof *partial);
	*last_index = n->n_log;
	*partial_bytes = 0;
	return 0;
}

static int st_entry(void *ctx, uint64_t index, struct raft_entry *out)
{
	struct node *n = ctx;
	if (index == 0 || index > n->n_log)
		return -PARLEY_ENOTFOUND;
	*out = n->log[index - 1];
	return 0;
}

static int st_snapshot_read(void *ctx, uint64_t offset, void *buf, uint32_t len)
{
	return -PARLEY_ENOTFOUND; /* never compacted in this bench */
}

static void st_put(struct node *n, const struct raft_entry *e)
{
	PARLEY_ASSERT(e->index >= 1 && e->index <= n->n_log + 1);
	if (e->index > n->cap_log) {
		n->cap_log = n->cap_log ? n->cap_log * 2 : 1024;
		n->log = realloc(n->log, n->cap_log * sizeof *n->log);
		PARLEY_ASSERT(n->log);
	}
	struct raft_entry c = *e;
	c.data = slab_copy(n, e->data, e->len);
	n->log[e->index - 1] = c;
	if (e->index > n->n_log)
		n->n_log = e->index;
}

/* ---- the cluster ------------------------------------------------------------ */

struct cluster {
	int n;
	bool codec;
	struct node nodes[MAX_NODES];
	uint64_t msgs;       /* messages delivered */
	uint64_t wire_bytes; /* codec mode: frame bytes */
	uint8_t *wire;       /* codec mode: one frame */
	size_t wire_cap;
	void *arena_mem;
	size_t arena_cap;
};

static struct node *node_by_id(struct cluster *c, uint64_t id)
{
	for (int i = 0; i < c->n; i++)
		if (c->nodes[i].id == id)
			return &c->nodes[i];
	return NULL;
}

static int cluster_init(struct cluster *c, int n, bool codec, uint64_t seed)
{
	memset(c, 0, sizeof *c);
	c->n = n;
	c->codec = codec;
	c->wire_cap = RAFT_CODEC_MAX_FRAME_HARD;
	c->arena_cap = RAFT_CODEC_ARENA_BYTES(RAFT_CODEC_MAX_BATCH,
					      RAFT_CODEC_MAX_BATCH, 0);
	if (codec) {
		c->wire = malloc(c->wire_cap);
		c->arena_mem = malloc(c->arena_cap);
		if (!c->wire || !c->arena_mem)
			return -PARLEY_ENOMEM;
	}
	struct raft_conf conf = {0};
	conf.n = (uint32_t)n;
	conf.max_id = (uint64_t)n;
	for (int i = 0; i < n; i++) {
		conf.ids[i] = (uint64_t)i + 1;
		conf.roles[i] = RAFT_VOTER;
	}
	for (int i = 0; i < n; i++) {
		struct node *nd = &c->nodes[i];
		nd->id = (uint64_t)i + 1;
		struct raft_config cfg = {
			.id = nd->id,
			.group = 1,
			.election_ticks = 10,
			.heartbeat_ticks = 1,
			.max_inflight = 256,
			.max_batch_entries = RAFT_MAX_MSG_ENTRIES,
			.max_batch_bytes = 1u << 20,
			.max_uncommitted = 1u << 20,
			.chunk_bytes = RAFT_MAX_CHUNK_BYTES,
			.quiesce_ticks = 0,
			.rng_seed = seed,
			.pre_vote = true,
			.check_quorum = true,
			.bootstrap = conf,
			/* stable_data: slab memory is freed only at the end
			 * of the run point, so committed entries are lent
			 * (as the engine's storage does) */
			.storage = {nd, st_load, st_entry, st_snapshot_read,
				    true},
		};
		int rc = raft_new(&cfg, &nd->r);
		if (rc)
			return rc;
	}
	return 0;
}

static void cluster_free(struct cluster *c)
{
	for (int i = 0; i < c->n; i++) {
		struct node *nd = &c->nodes[i];
		raft_free(nd->r);
		free(nd->log);
		while (nd->slabs) {
			struct slab *s = nd->slabs->next;
			free(nd->slabs);
			nd->slabs = s;
		}
	}
	free(c->wire);
	free(c->arena_mem);
}

static void deliver(struct cluster *c, const struct raft_msg *m, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct node *to = node_by_id(c, m[i].to);
		PARLEY_ASSERT(to);
		int rc = raft_step(to->r, &m[i]);
		PARLEY_ASSERT(rc == 0 || rc < 0); /* refusals are the core's business */
		c->msgs++;
	}
}

/* codec mode: the messages of one ready, grouped per destination, each
 * group encoded as one frame and decoded from it (borrowing) */
static void deliver_wire(struct cluster *c, const struct raft_msg *m, uint32_t n)
{
	static struct raft_msg grp[RAFT_CODEC_MAX_BATCH];
	static bool *done;
	static uint32_t done_cap;
	if (n > done_cap) {
		done_cap = n * 2;
		done = realloc(done, done_cap);
		PARLEY_ASSERT(done);
	}
	memset(done, 0, n);
	for (uint32_t i = 0; i < n; i++) {
		if (done[i])
			continue;
		uint32_t g = 0;
		for (uint32_t k = i; k < n && g < RAFT_CODEC_MAX_BATCH; k++)
			if (!done[k] && m[k].to == m[i].to && m[k].from == m[i].from) {
				grp[g++] = m[k];
				done[k] = true;
			}
		int len = raft_codec_encode(c->wire, c->wire_cap, grp, g);
		PARLEY_ASSERT(len > 0);
		struct raft_codec_arena a;
		raft_codec_arena_init(&a, c->arena_mem, c->arena_cap);
		struct raft_msg *out;
		uint32_t nout;
		int r = raft_codec_decode(c->wire, (size_t)len,
					  RAFT_CODEC_MAX_FRAME_HARD, &a, 0, &out,
					  &nout);
		PARLEY_ASSERT(r == len && nout == g);
		c->wire_bytes += (uint64_t)len;
		deliver(c, out, nout);
	}
}

/* Processes one node's ready; returns whether it had anything. */
static bool node_ready(struct cluster *c, struct node *nd)
{
	struct raft_ready *rd = raft_ready(nd->r);
	if (rd->empty) {
		raft_advance(nd->r);
		return false;
	}
	/* 1. persist (instantly): truncation, entries (truncating first),
	 * repairs, hs */
	PARLEY_ASSERT(!rd->has_chunk && !rd->has_install);
	if (rd->truncate_from && rd->truncate_from <= nd->n_log)
		nd->n_log = rd->truncate_from - 1;
	if (rd->n_entries) {
		uint64_t first = rd->entries[0].index;
		PARLEY_ASSERT(first >= 1 && first <= nd->n_log + 1);
		nd->n_log = first - 1;
		for (uint32_t i = 0; i < rd->n_entries; i++)
			st_put(nd, &rd->entries[i]);
	}
	for (uint32_t i = 0; i < rd->n_repair; i++)
		st_put(nd, &rd->repair[i]);
	if (rd->hs_changed)
		nd->hs = rd->hs;
	/* 2. send, 3. apply */
	if (rd->n_msgs) {
		if (c->codec)
			deliver_wire(c, rd->msgs, rd->n_msgs);
		else
			deliver(c, rd->msgs, rd->n_msgs);
	}
	for (uint32_t i = 0; i < rd->n_committed; i++) {
		const struct raft_entry *e = &rd->committed[i];
		PARLEY_ASSERT(e->index == nd->applied_last + 1);
		nd->applied_last = e->index;
		if (e->type == RAFT_ENTRY_NORMAL)
			nd->applied_n++;
	}
	raft_advance(nd->r);
	return true;
}

static void pump(struct cluster *c)
{
	for (;;) {
		bool any = false;
		for (int i = 0; i < c->n; i++)
			any |= node_ready(c, &c->nodes[i]);
		if (!any)
			return;
	}
}

static struct node *leader_of(struct cluster *c)
{
	for (int i = 0; i < c->n; i++)
		if (raft_role(c->nodes[i].r) == RAFT_LEADER)
			return &c->nodes[i];
	return NULL;
}

static struct node *elect(struct cluster *c)
{
	for (int t = 0; t < 10000; t++) {
		for (int i = 0; i < c->n; i++)
			raft_tick(c->nodes[i].r);
		pump(c);
		struct node *l = leader_of(c);
		if (l && raft_commit(l->r) >= raft_last_index(l->r) &&
		    raft_applied(l->r) == raft_commit(l->r))
			return l;
	}
	return NULL;
}

/* ---- one run point ---------------------------------------------------------- */

struct result {
	int voters;
	uint32_t batch;
	bool codec;
	uint64_t entries;
	uint64_t rounds;
	double wall_s;
	double cpu_s;
	uint64_t msgs;
	uint64_t wire_bytes;
};

static double ts_s(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run_point(int voters, uint32_t batch, bool codec, uint32_t payload,
		     double seconds, uint64_t max_entries, uint64_t seed,
		     struct result *res)
{
	struct cluster c;
	int rc = cluster_init(&c, voters, codec, seed);
	if (rc) {
		fprintf(stderr, "parley-raft-bench: raft_new: %s\n", parley_strerror(rc));
		cluster_free(&c);
		return 1;
	}
	struct node *l = elect(&c);
	if (!l) {
		fprintf(stderr, "parley-raft-bench: no leader elected\n");
		cluster_free(&c);
		return 1;
	}
	uint8_t *data = malloc(payload ? payload : 1);
	PARLEY_ASSERT(data);
	struct parley_rng rng = {seed};
	for (uint32_t i = 0; i < payload; i++)
		data[i] = (uint8_t)parley_rng_next(&rng);

	uint64_t applied0 = l->applied_n, msgs0 = c.msgs, wire0 = c.wire_bytes;
	uint64_t rounds = 0, proposed = 0;
	double w0 = ts_s(CLOCK_MONOTONIC), c0 = ts_s(CLOCK_PROCESS_CPUTIME_ID);
	double w1 = w0;
	for (;;) {
		for (uint32_t b = 0; b < batch; b++) {
			uint64_t idx;
			le_put64(data, proposed); /* distinct payloads */
			int prc = raft_propose(l->r, data, payload, &idx);
			if (prc) {
				fprintf(stderr, "parley-raft-bench: propose: %s\n",
					parley_strerror(prc));
				free(data);
				cluster_free(&c);
				return 1;
			}
			proposed++;
		}
		pump(&c);
		rounds++;
		if ((rounds & 63) == 0 || batch >= 64) {
			w1 = ts_s(CLOCK_MONOTONIC);
			if (w1 - w0 >= seconds || proposed >= max_entries)
				break;
		}
	}
	w1 = ts_s(CLOCK_MONOTONIC);
	double c1 = ts_s(CLOCK_PROCESS_CPUTIME_ID);
	res->voters = voters;
	res->batch = batch;
	res->codec = codec;
	res->entries = l->applied_n - applied0;
	res->rounds = rounds;
	res->wall_s = w1 - w0;
	res->cpu_s = c1 - c0;
	res->msgs = c.msgs - msgs0;
	res->wire_bytes = c.wire_bytes - wire0;

	/* unmeasured: followers learn the last commit, then all must agree */
	for (int t = 0; t < 3; t++) {
		for (int i = 0; i < c.n; i++)
			raft_tick(c.nodes[i].r);
		pump(&c);
	}
	int bad = 0;
	if (res->entries != proposed) {
		fprintf(stderr, "parley-raft-bench: leader applied %llu of %llu\n",
			(unsigned long long)res->entries, (unsigned long long)proposed);
		bad = 1;
	}
	for (int i = 0; i < c.n; i++) {
		struct node *nd = &c.nodes[i];
		if (nd->applied_n != l->applied_n || nd->applied_last != l->applied_last) {
			fprintf(stderr, "parley-raft-bench: node %llu applied %llu (last %llu), "
				"leader %llu (last %llu)\n", (unsigned long long)nd->id,
				(unsigned long long)nd->applied_n,
				(unsigned long long)nd->applied_last,
				(unsigned long long)l->applied_n,
				(unsigned long long)l->applied_last);
			bad = 1;
		}
	}
	free(data);
	cluster_free(&c);
	return bad;
}

static double rate(const struct result *r)
{
	return r->wall_s > 0 ? (double)r->entries / r->wall_s : 0;
}
static int by_rate(const void *a, const void *b)
{
	double x = rate(a), y = rate(b);
	return x < y ? -1 : x > y;
}

/* ---- main --------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
"usage: parley-raft-bench [options]\n"
"\n"
"Committed entries per second and CPU time per entry of the pure Raft core\n"
"(engine/raft.h): N voters in one thread, in-memory instant persistence, a\n"
"perfect in-process network, no ticks while measuring. Each run point is\n"
"measured twice in the same run: messages handed over as structs (the core\n"
"alone) and through the wire codec (raft_codec frames, one per destination\n"
"per ready).\n"
"\n"
"options:\n"
"  --voters LIST     comma-separated voter counts (default 3,5; max %d)\n"
"  --batch LIST      entries proposed per round (default 1,64)\n"
"  --payload BYTES   entry payload size (default 64)\n"
"  --seconds S       measured time per run point (default 3)\n"
"  --max-entries N   stop a run point after N entries (default 5000000)\n"
"  --mode M          direct, codec or both (default both)\n"
"  --seed N          rng seed (election jitter, payload bytes; default 1;\n"
"                    repeat k uses seed + k)\n"
"  --repeat K        runs per row, interleaved by mode; the median by\n"
"                    entries/s is printed with the range (default 3, max %d)\n"
"  --help\n", MAX_NODES, MAX_REPEAT);
}

static int parse_list(const char *s, unsigned long *out, int max)
{
	int n = 0;
	char *end;
	while (*s && n < max) {
		errno = 0;
		unsigned long v = strtoul(s, &end, 10);
		if (errno || end == s || v == 0)
			return -1;
		out[n++] = v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return n;
}

int main(int argc, char **argv)
{
	unsigned long voters[8] = {3, 5}, batches[8] = {1, 64};
	int n_voters = 2, n_batches = 2;
	unsigned long payload = 64, max_entries = 5000000;
	double seconds = 3;
	uint64_t seed = 1;
	int modes = 3; /* bit 0 direct, bit 1 codec */
	int repeat = 3;
	static const struct option opts[] = {
		{"voters", required_argument, 0, 'v'},
		{"batch", required_argument, 0, 'b'},
		{"payload", required_argument, 0, 'p'},
		{"seconds", required_argument, 0, 's'},
		{"max-entries", required_argument, 0, 'm'},
		{"mode", required_argument, 0, 'M'},
		{"seed", required_argument, 0, 'S'},
		{"repeat", required_argument, 0, 'r'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'v':
			n_voters = parse_list(optarg, voters, 8);
			if (n_voters <= 0)
				goto bad;
			for (int i = 0; i < n_voters; i++)
				if (voters[i] > MAX_NODES)
					goto bad;
			break;
		case 'b':
			n_batches = parse_list(optarg, batches, 8);
			if (n_batches <= 0)
				goto bad;
			for (int i = 0; i < n_batches; i++)
				if (batches[i] > 100000)
					goto bad;
			break;
		case 'p':
			payload = strtoul(optarg, NULL, 10);
			if (payload < 8 || payload > RAFT_MAX_ENTRY_BYTES)
				goto bad;
			break;
		case 's':
			seconds = strtod(optarg, NULL);
			if (!(seconds > 0))
				goto bad;
			break;
		case 'm':
			max_entries = strtoul(optarg, NULL, 10);
			if (!max_entries)
				goto bad;
			break;
		case 'M':
			if (!strcmp(optarg, "direct"))
				modes = 1;
			else if (!strcmp(optarg, "codec"))
				modes = 2;
			else if (!strcmp(optarg, "both"))
				modes = 3;
			else
				goto bad;
			break;
		case 'S':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'r':
			repeat = atoi(optarg);
			if (repeat < 1 || repeat > MAX_REPEAT)
				goto bad;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind != argc)
		goto bad;

	struct utsname u;
	uname(&u);
	printf("parley-raft-bench: %s %s, payload %lu B, %.1f s per point, seed %llu\n",
	       u.sysname, u.release, payload, seconds, (unsigned long long)seed);
	printf("median of %d runs per row (by entries/s; range over the runs)\n",
	       repeat);
	printf("\n| voters | batch | messages | entries | entries/s | range | "
	       "CPU us/entry | msgs/entry | wire B/entry | CPU vs direct |\n"
	       "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
	fflush(stdout);
	int status = 0;
	for (int v = 0; v < n_voters; v++)
		for (int b = 0; b < n_batches; b++) {
			/* repeats interleave the modes so drift hits both alike */
			struct result res[2][MAX_REPEAT];
			int got[2] = {0, 0};
			for (int rep = 0; rep < repeat; rep++)
				for (int mode = 0; mode < 2; mode++) {
					if (!(modes & (1 << mode)))
						continue;
					struct result *r = &res[mode][got[mode]];
					memset(r, 0, sizeof *r);
					if (run_point((int)voters[v], (uint32_t)batches[b],
						      mode == 1, (uint32_t)payload, seconds,
						      max_entries, seed + (uint64_t)rep, r)) {
						status = 1;
						continue;
					}
					got[mode]++;
				}
			double direct_cpu = 0;
			for (int mode = 0; mode < 2; mode++) {
				if (!got[mode])
					continue;
				qsort(res[mode], (size_t)got[mode], sizeof res[mode][0], by_rate);
				const struct result *r = &res[mode][got[mode] / 2];
				double e = r->entries ? (double)r->entries : 1;
				double cpu = r->cpu_s * 1e6 / e;
				printf("| %d | %u | %s | %llu | %.0f | %.0f..%.0f | %.3f | %.2f | ",
				       r->voters, r->batch, r->codec ? "codec" : "direct",
				       (unsigned long long)r->entries, rate(r),
				       rate(&res[mode][0]), rate(&res[mode][got[mode] - 1]),
				       cpu, (double)r->msgs / e);
				if (r->codec)
					printf("%.1f | %s%.2fx |\n", (double)r->wire_bytes / e,
					       direct_cpu > 0 ? "" : "-",
					       direct_cpu > 0 ? cpu / direct_cpu : 0.0);
				else
					printf("- | 1.00x |\n");
				if (mode == 0)
					direct_cpu = cpu;
				fflush(stdout);
			}
		}
	return status;
bad:
	usage(stderr);
	return EXIT_USAGE;
}
