/*
 * apply_bench.c — `parley-apply-bench`: CPU time of the partition state
 * machine (engine/log/part_apply.c) applying a replicated chat load, the
 * way a follower's shard applies it (issue 12: a follower's cost per ack).
 *
 * What runs, in one thread, on bare partitions (no WAL, no Raft, no
 * threads; the same structs and code the engine applies with):
 *   - P partitions (--partitions, default 64, the engine's default) and
 *     --convs 1:1 conversations (default 200); a SEND is three APPEND
 *     commands, as parleyd writes them: the message to `c/<conv>` (no
 *     producer id, or an idempotent one with --idem-conv) and a pointer to
 *     each member's inbox `u/<user>` (idempotent: a producer id of its
 *     own), each in the partition xxh3(key) % P, --payload bytes each
 *     (default 100; pointers 24 B). Conversations are picked at random
 *     (seeded; the seed is printed).
 *   - A round is what a follower's shard applies per WAL batch: the
 *     commands of --per-round SENDs (default 50, ~150 commands, ~2.3 per
 *     partition: what a 3-node run at 200 connections showed), applied
 *     partition by partition in index order, each partition's commands as
 *     one ready's committed entries. Between rounds --pollute KiB of other
 *     memory is written (default 2048: the rest of a shard round — WAL
 *     buffer, Raft, sockets — evicts the tables as it does in a server;
 *     0 = the tables stay cached, the best case).
 *   - Two ways of applying, alternated rep by rep on fresh partitions:
 *     `plain` (part_apply per command: hash, look up, apply) and `ahead`
 *     (the engine's look-ahead schedule, part_ahead_* + part_apply_hinted,
 *     as log/part_raft.c applies a ready).
 * Measured: CLOCK_THREAD_CPUTIME_ID around the applying only (not the
 * pollution, not the command encoding, done before), per command; each
 * rep applies --sends SENDs (default 100,000) to fresh partitions, after
 * --warm SENDs not measured (default 20,000: tables of a busy few
 * seconds). The two runs of a rep must end in the same state (hash of
 * every partition), else the run fails. Prints per rep and the medians
 * (of each way's CPU per command, and of the reps' ahead / plain ratios,
 * the steadier figure on a shared machine).
 *
 * --only plain|ahead runs one way only (for a profiler; the table's
 * columns then both show that way).
 *
 * Exit status: 0 ok, 1 the two ways disagreed, 64 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "engine_internal.h"

#define EXIT_USAGE 64
#define MAX_REPEAT 21
#define MAX_PER_ROUND 4096u

struct cfg {
	uint32_t partitions, convs, payload, per_round, pollute_kib, repeat;
	uint64_t sends, warm, seed;
	bool idem_conv;
	int only; /* -1 both ways, else 0 plain / 1 ahead only (profiling) */
};

struct bcmd {
	uint32_t part;
	uint32_t off, len; /* in the body arena */
};

static uint64_t rnd_state;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static uint64_t cpu_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- the load: every command encoded up front ------------------------------------ */

struct load {
	uint8_t *arena;
	size_t used, cap;
	struct bcmd *cmds;
	uint64_t n;
};

static void put_cmd(struct load *l, const struct cfg *c, const char *key,
		    uint64_t producer, uint64_t ts, uint32_t len)
{
	static uint8_t payload[PE_MAX_PAYLOAD < 65536 ? PE_MAX_PAYLOAD : 65536];
	uint8_t prod[PE_PRODUCER_LEN] = {0};
	if (producer) {
		le_put64(prod, producer);
		le_put64(prod + 8, 0x70617273u);
	}
	struct pe_input in = {.type = 1, .len = len, .payload = payload};
	size_t need = 1 + cmd_append_size(strlen(key), &in, 1);
	if (l->used + need > l->cap) {
		fprintf(stderr, "parley-apply-bench: arena full\n");
		exit(1);
	}
	uint8_t *b = l->arena + l->used;
	b[0] = CMD_APPEND; /* the raft entry's kind byte, as in the WAL */
	int64_t n = cmd_append_encode(b + 1, need - 1, key, strlen(key), prod,
				      ts, PE_NO_EXPECT, &in, 1);
	if (n <= 0) {
		fprintf(stderr, "parley-apply-bench: encode failed\n");
		exit(1);
	}
	l->cmds[l->n++] = (struct bcmd){
		.part = (uint32_t)(parley_hash_key(key, strlen(key)) %
				   c->partitions),
		.off = (uint32_t)(l->used + 1),
		.len = (uint32_t)n};
	l->used += need;
}

static void load_make(struct load *l, const struct cfg *c)
{
	uint64_t total = c->warm + c->sends;
	l->cap = total * 3 * (c->payload + 64 + CMD_APPEND_HDR(16) + 8);
	l->arena = malloc(l->cap);
	l->cmds = malloc(total * 3 * sizeof *l->cmds);
	if (!l->arena || !l->cmds) {
		fprintf(stderr, "parley-apply-bench: out of memory\n");
		exit(1);
	}
	l->used = l->n = 0;
	uint64_t prod = 0;
	for (uint64_t i = 0; i < total; i++) {
		uint32_t cv = (uint32_t)(rnd() % c->convs);
		char key[64];
		uint64_t ts = 1700000000000u + i / 16;
		snprintf(key, sizeof key, "c/%08x", cv);
		put_cmd(l, c, key, c->idem_conv ? ++prod : 0, ts, c->payload);
		snprintf(key, sizeof key, "u/a%07x", cv);
		put_cmd(l, c, key, ++prod, ts, 24);
		snprintf(key, sizeof key, "u/b%07x", cv);
		put_cmd(l, c, key, ++prod, ts, 24);
	}
}

/* ---- applying ---------------------------------------------------------------------- */

struct ready {
	const struct load *l;
	const uint32_t *idx; /* commands of one partition in this round */
};

static void ready_get(void *arg, uint32_t i, uint16_t *kind,
		      const uint8_t **body, size_t *len)
{
	const struct ready *r = arg;
	const struct bcmd *b = &r->l->cmds[r->idx[i]];
	*kind = CMD_APPEND;
	*body = r->l->arena + b->off;
	*len = b->len;
}

static uint8_t *g_pollute;
static size_t g_pollute_bytes, g_pollute_at;

static void pollute(void)
{
	/* every line of the buffer written once per round, from a moving
	 * start so the hardware cannot keep a fixed part of it */
	for (size_t k = 0; k < g_pollute_bytes; k += 64)
		g_pollute[(g_pollute_at + k) % g_pollute_bytes]++;
	g_pollute_at += 4096;
}

/* Applies commands [from, to) round by round; returns the CPU ns spent
 * applying. */
static uint64_t run(struct part **parts, const struct cfg *c,
		    const struct load *l, uint64_t from, uint64_t to,
		    bool ahead)
{
	static uint32_t byp[MAX_PER_ROUND * 3];
	uint32_t *cnt = calloc(c->partitions + 1, sizeof *cnt);
	if (!cnt)
		exit(1);
	uint64_t spent = 0;
	uint64_t per = (uint64_t)c->per_round * 3;
	for (uint64_t r = from; r < to; r += per) {
		uint64_t e = r + per < to ? r + per : to;
		/* group the round's commands by partition, in log order */
		memset(cnt, 0, (c->partitions + 1) * sizeof *cnt);
		for (uint64_t k = r; k < e; k++)
			cnt[l->cmds[k].part + 1]++;
		for (uint32_t q = 0; q < c->partitions; q++)
			cnt[q + 1] += cnt[q];
		for (uint64_t k = r; k < e; k++)
			byp[cnt[l->cmds[k].part]++] = (uint32_t)k;
		/* cnt[q] is now the end of partition q's run */
		if (g_pollute_bytes)
			pollute();
		uint64_t t0 = cpu_ns();
		uint32_t start = 0;
		for (uint32_t q = 0; q < c->partitions; q++) {
			uint32_t n = cnt[q] - start;
			if (!n)
				continue;
			struct part *p = parts[q];
			struct ready rd = {.l = l, .idx = byp + start};
			struct part_ahead a;
			if (ahead)
				part_ahead_init(&a, p, n, ready_get, &rd);
			for (uint32_t i = 0; i < n; i++) {
				uint16_t kind;
				const uint8_t *body;
				size_t len;
				ready_get(&rd, i, &kind, &body, &len);
				struct part_apply_res res;
				const struct part_apply_hint *h =
					ahead ? part_ahead_next(&a, p, i) : NULL;
				int rc = part_apply_hinted(p, p->last_index + 1,
							   1, kind, body, len,
							   h, &res);
				if (rc) {
					fprintf(stderr, "parley-apply-bench: apply "
						"failed: %d (%s)\n", rc,
						res.why ? res.why : "");
					exit(1);
				}
			}
			start = cnt[q];
		}
		spent += cpu_ns() - t0;
	}
	free(cnt);
	return spent;
}

static struct part **parts_new(const struct cfg *c)
{
	struct part **v = calloc(c->partitions, sizeof *v);
	if (!v)
		exit(1);
	for (uint32_t q = 0; q < c->partitions; q++) {
		v[q] = calloc(1, sizeof *v[q]);
		if (!v[q])
			exit(1);
		v[q]->id = q;
		/* the engine's defaults: 7 days, 1,000,000 keys */
		v[q]->cfg = (struct part_cfg){.idem_window_ms = 7ull * 86400000u,
					      .idem_max = 1000000u};
	}
	return v;
}

static uint64_t parts_hash(struct part **v, const struct cfg *c)
{
	uint64_t h = 0;
	for (uint32_t q = 0; q < c->partitions; q++) {
		uint64_t x;
		if (part_state_hash(v[q], &x)) {
			fprintf(stderr, "parley-apply-bench: hash failed\n");
			exit(1);
		}
		h = h * 0x9E3779B97F4A7C15ull + x;
	}
	return h;
}

static void parts_free(struct part **v, const struct cfg *c)
{
	for (uint32_t q = 0; q < c->partitions; q++) {
		part_free_state(v[q]);
		free(v[q]);
	}
	free(v);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: parley-apply-bench [--partitions N] [--convs N] [--payload B]\n"
		"         [--per-round SENDS] [--pollute KIB] [--sends N] [--warm N]\n"
		"         [--repeat N] [--idem-conv] [--seed N]\n"
		"         [--only plain|ahead]   (one way only, for a profiler)\n");
	exit(EXIT_USAGE);
}

int main(int argc, char **argv)
{
	struct cfg c = {.partitions = 64, .convs = 200, .payload = 100,
			.per_round = 50, .pollute_kib = 2048, .repeat = 5,
			.sends = 100000, .warm = 20000,
			.seed = (uint64_t)time(NULL), .only = -1};
	static const struct option lo[] = {
		{"partitions", 1, 0, 'P'}, {"convs", 1, 0, 'c'},
		{"payload", 1, 0, 'b'},    {"per-round", 1, 0, 'r'},
		{"pollute", 1, 0, 'x'},    {"sends", 1, 0, 'n'},
		{"warm", 1, 0, 'w'},       {"repeat", 1, 0, 'R'},
		{"idem-conv", 0, 0, 'i'},  {"seed", 1, 0, 's'},
		{"only", 1, 0, 'o'},       {"help", 0, 0, 'h'},
		{0, 0, 0, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'P': c.partitions = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'c': c.convs = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'b': c.payload = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'r': c.per_round = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'x': c.pollute_kib = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'n': c.sends = strtoull(optarg, NULL, 10); break;
		case 'w': c.warm = strtoull(optarg, NULL, 10); break;
		case 'R': c.repeat = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'i': c.idem_conv = true; break;
		case 's': c.seed = strtoull(optarg, NULL, 10); break;
		case 'o':
			if (!strcmp(optarg, "plain"))
				c.only = 0;
			else if (!strcmp(optarg, "ahead"))
				c.only = 1;
			else
				usage();
			break;
		default: usage();
		}
	}
	if (optind != argc || !c.partitions || !c.convs || !c.sends ||
	    !c.per_round || c.per_round > MAX_PER_ROUND || !c.repeat ||
	    c.repeat > MAX_REPEAT || c.payload > 65536 || c.partitions > 65536)
		usage();
	printf("parley-apply-bench: seed=%" PRIu64 " partitions=%u convs=%u "
	       "payload=%u per-round=%u SENDs (%u commands) pollute=%u KiB "
	       "sends=%" PRIu64 " warm=%" PRIu64 " idem-conv=%s\n",
	       c.seed, c.partitions, c.convs, c.payload, c.per_round,
	       c.per_round * 3, c.pollute_kib, c.sends, c.warm,
	       c.idem_conv ? "yes" : "no");
	rnd_state = c.seed * 2654435761u + 1;
	struct load l;
	load_make(&l, &c);
	g_pollute_bytes = (size_t)c.pollute_kib * 1024;
	if (g_pollute_bytes && !(g_pollute = calloc(1, g_pollute_bytes)))
		return 1;
	uint64_t ns[2][MAX_REPEAT];
	double ratio[MAX_REPEAT]; /* ahead / plain per rep (same minute) */
	uint64_t warm_cmds = c.warm * 3, all = l.n;
	for (uint32_t rep = 0; rep < c.repeat; rep++) {
		uint64_t h[2];
		for (int k = 0; k < 2; k++) {
			/* alternate which way goes first */
			bool ahead = (k + rep) % 2 == 1;
			if (c.only >= 0)
				ahead = c.only; /* the same way twice */
			struct part **v = parts_new(&c);
			run(v, &c, &l, 0, warm_cmds, ahead);
			uint64_t t = run(v, &c, &l, warm_cmds, all, ahead);
			int slot = c.only >= 0 ? k : ahead;
			ns[slot][rep] = t;
			h[slot] = parts_hash(v, &c);
			parts_free(v, &c);
		}
		ratio[rep] = (double)ns[1][rep] / (double)ns[0][rep];
		printf("rep %u: plain %.1f ns/command, ahead %.1f ns/command "
		       "(ahead / plain %.3f)\n", rep + 1,
		       (double)ns[0][rep] / (double)(all - warm_cmds),
		       (double)ns[1][rep] / (double)(all - warm_cmds),
		       (double)ns[1][rep] / (double)ns[0][rep]);
		if (h[0] != h[1]) {
			fprintf(stderr, "parley-apply-bench: plain and ahead ended "
				"in different states (rep %u)\n", rep + 1);
			return 1;
		}
	}
	for (int k = 0; k < 2; k++)
		qsort(ns[k], c.repeat, sizeof ns[k][0], cmp_u64);
	qsort(ratio, c.repeat, sizeof ratio[0], cmp_dbl);
	double mp = (double)ns[0][c.repeat / 2] / (double)(all - warm_cmds);
	double ma = (double)ns[1][c.repeat / 2] / (double)(all - warm_cmds);
	printf("median of %u: plain %.1f ns/command, ahead %.1f ns/command; "
	       "ahead / plain per rep: median %.3f (min %.3f, max %.3f)\n",
	       c.repeat, mp, ma, ratio[c.repeat / 2], ratio[0],
	       ratio[c.repeat - 1]);
	free(l.arena);
	free(l.cmds);
	free(g_pollute);
	return 0;
}
