/*
 * repl_cluster.h — the hand-driven cluster of the replication unit tests
 * (test_part_repl.c, test_membership.c), on top of repl_net.h: real
 * engines in one process, founded as the voters {1, 2, 3}, whose
 * messages travel through repl_net.h's queue and are delivered by
 * pump(). It holds what both tests need around that network: opening,
 * killing and closing nodes, the seeded start-up, the pump, finding the
 * leaders, appends acknowledged through whichever node leads, the record
 * of acknowledged entries and the check that a node holds exactly them.
 *
 * Define before including (and before repl_net.h is pulled in):
 *   REPL_NET_NODES      the number of nodes (ids 1..REPL_NET_NODES);
 *   NPARTS              partitions per engine;
 *   MAX_PUMP            pump rounds before a wait gives up (a failure);
 *   REPL_PUMP_SLEEP_US  the pause at the end of each pump round;
 *   REPL_PRODUCER_TAG   byte 15 of every producer id append_acked builds;
 *   REPL_ACK_ATTEMPTS   how many tries append_acked makes;
 *   REPL_MAXACK         how many acknowledged entries may be recorded;
 * and declare the test's own two hooks, defined anywhere in the test:
 *   static bool repl_lost(int from, int to);  packet from->to (0-based
 *       node indexes) is lost (a cut link, a seeded drop); asked only for
 *       packets to an up node;
 *   static void repl_payload(int n, char *out, size_t cap);  the payload
 *       of the n-th acknowledged entry append_many writes.
 * Threads: the test's thread only (the engines' shard threads reach only
 * repl_net.h's net_send). Ownership: nodes[] holds each engine and its
 * in-memory backend (io NULL: io_uring on a temporary directory, removed
 * by cluster_stop).
 */
#ifndef REPL_CLUSTER_H
#define REPL_CLUSTER_H

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "repl_net.h"

#define NKEYS 6 /* conversations append_many spreads its entries over */

struct node {
	uint64_t id;
	char dir[64];
	struct pe_engine *e;
	struct pio *io;   /* in-memory backend (crashes lose unsynced bytes),
			     or NULL: io_uring on the temporary directory */
	bool up;
};

static struct node nodes[REPL_NET_NODES];
static struct parley_rng rng;
static uint64_t log_keep;
static bool follow0; /* pe_cluster.follow_partition0 of the next opens */
static uint32_t quiesce;   /* pe_cluster.quiesce_ticks of the next opens */
static uint64_t delivered; /* packets pump() handed to an engine */

/* Every node, one added later too, is given the founders {1, 2, 3}. */
static void node_open(int i)
{
	struct node *nd = &nodes[i];
	uint64_t founders[3] = {1, 2, 3};
	struct pe_cluster c = {.node_id = nd->id, .voters = founders,
			       .nvoters = 3, .election_ticks = 10,
			       .heartbeat_ticks = 2, .log_keep_bytes = log_keep,
			       .quiesce_ticks = quiesce,
			       .send = net_send, .send_arg = &nd->id,
			       .flush = net_hold ? net_flush : NULL,
			       .follow_partition0 = follow0};
	struct pe_options o = {0};
	o.dir = nd->dir;
	o.partitions = NPARTS;
	o.shards = 2;
	o.wal_segment_bytes = 16u << 20;
	o.cluster = &c;
	o.io = nd->io;
	int rc = pe_open(&o, &nd->e);
	cr_assert_eq(rc, 0, "open node %d: %s", i, parley_errname(rc));
	nd->up = true;
}

static void node_close(int i)
{
	pe_close(nodes[i].e);
	nodes[i].e = NULL;
	nodes[i].up = false;
}

/* A crash: the shard threads stop at once (nothing more is written); on
 * the in-memory backend every file also loses what was not fsync'd, a
 * random prefix of it surviving (a torn write). */
static void node_kill(int i)
{
	pe_abort(nodes[i].e);
	if (nodes[i].io)
		pio_mem_crash(nodes[i].io, true);
	nodes[i].e = NULL;
	nodes[i].up = false;
}

/* Seeds rng from PARLEY_SEED (printed, under the test's name), prepares
 * every node (in-memory backends seeded from it, or temporary
 * directories) and opens the first `nopen`. Returns the seed. */
static uint64_t cluster_start_nodes(const char *test, uint64_t keep, bool mem,
				    int nopen)
{
	const char *s = getenv("PARLEY_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
	fprintf(stderr, "%s: PARLEY_SEED=%llu\n", test,
		(unsigned long long)seed);
	rng.s = seed;
	log_keep = keep;
	follow0 = false;
	for (int i = 0; i < REPL_NET_NODES; i++) {
		nodes[i].id = (uint64_t)i + 1;
		nodes[i].up = false;
		nodes[i].io = mem ? pio_mem_new(seed + (uint64_t)i) : NULL;
		if (mem) {
			cr_assert_not_null(nodes[i].io);
			snprintf(nodes[i].dir, sizeof nodes[i].dir, "/node%d", i);
		} else {
			snprintf(nodes[i].dir, sizeof nodes[i].dir,
				 "/tmp/parley-repl-XXXXXX");
			cr_assert_not_null(mkdtemp(nodes[i].dir));
		}
	}
	for (int i = 0; i < nopen; i++)
		node_open(i);
	return seed;
}

static void cluster_stop(void)
{
	for (int i = 0; i < REPL_NET_NODES; i++) {
		if (nodes[i].up)
			pe_close(nodes[i].e);
		if (nodes[i].io)
			pio_free(nodes[i].io);
		nodes[i].io = NULL;
		nodes[i].e = NULL;
		nodes[i].up = false;
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf %s", nodes[i].dir);
		if (!strncmp(nodes[i].dir, "/tmp/", 5))
			(void)system(cmd);
	}
	net_clear();
}

static bool repl_lost(int from, int to);
static void repl_payload(int n, char *out, size_t cap);

/* One round: deliver what is queued (minus down nodes and what the test
 * loses), then one tick every 16 rounds (fsyncs stay short in ticks). */
static void pump(void)
{
	static uint32_t round;
	static uint8_t arena[RAFT_CODEC_ARENA_ONE + (4u << 20)];
	struct pkt *p = net_take();
	while (p) {
		struct pkt *n = p->next;
		struct raft_msg *ms;
		uint32_t nm;
		struct raft_codec_arena a;
		raft_codec_arena_init(&a, arena, sizeof arena);
		int rc = raft_codec_decode(p->buf, p->len, 0, &a, 0, &ms, &nm);
		cr_assert_eq((size_t)rc, p->len);
		int from = (int)ms[0].from - 1;
		if (nodes[p->to].up && !repl_lost(from, p->to)) {
			(void)pe_raft_recv(nodes[p->to].e, ms, nm);
			delivered++;
		}
		free(p);
		p = n;
	}
	if (++round % 16 == 0)
		for (int i = 0; i < REPL_NET_NODES; i++)
			if (nodes[i].up)
				(void)pe_raft_tick(nodes[i].e);
	usleep(REPL_PUMP_SLEEP_US);
}

static struct pe_raft_status status(int i, uint32_t part)
{
	struct pe_raft_status st;
	cr_assert_eq(pe_raft_status(nodes[i].e, part, &st), 0);
	return st;
}

static uint32_t part_of(const char *key)
{
	for (int i = 0; i < REPL_NET_NODES; i++)
		if (nodes[i].up)
			return pe_partition_of(nodes[i].e, key, strlen(key));
	cr_assert_fail("no node up");
	return 0;
}

/* The node leading `part` with the highest term among up nodes, or -1. */
static int leader_of(uint32_t part)
{
	int best = -1;
	uint64_t term = 0;
	for (int i = 0; i < REPL_NET_NODES; i++) {
		if (!nodes[i].up)
			continue;
		struct pe_raft_status st = status(i, part);
		if (st.role == PE_LEADER && st.term >= term) {
			best = i;
			term = st.term;
		}
	}
	return best;
}

static void wait_leaders(void)
{
	for (int r = 0; r < MAX_PUMP; r++) {
		bool all = true;
		for (uint32_t p = 0; p < NPARTS; p++)
			all &= leader_of(p) >= 0;
		if (all)
			return;
		pump();
	}
	cr_assert_fail("no leader elected");
}

struct ack {
	atomic_bool done;
	struct pe_append_result r;
};

static void on_ack(void *arg, const struct pe_append_result *r)
{
	struct ack *a = arg;
	a->r = *r;
	atomic_store(&a->done, true);
}

/* Appends through node i and pumps until answered; returns the result. */
static struct pe_append_result append_on(int i, const char *key,
					 const char *payload,
					 const uint8_t producer[PE_PRODUCER_LEN])
{
	struct pe_input in = {.type = 1, .len = (uint32_t)strlen(payload),
			      .payload = payload};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	memcpy(q.producer, producer, PE_PRODUCER_LEN);
	struct ack a = {0};
	int rc = pe_append(nodes[i].e, &q, on_ack, &a);
	if (rc)
		return (struct pe_append_result){.err = rc};
	for (int r = 0; r < MAX_PUMP && !atomic_load(&a.done); r++)
		pump();
	cr_assert(atomic_load(&a.done), "append on node %d never answered", i);
	return a.r;
}

/* Appends until acknowledged, through whichever node leads, retrying with
 * the same producer id (pid, tagged REPL_PRODUCER_TAG); returns the seq. */
static uint64_t append_acked(const char *key, const char *payload,
			     uint64_t pid)
{
	uint8_t producer[PE_PRODUCER_LEN] = {0};
	memcpy(producer, &pid, sizeof pid);
	producer[15] = REPL_PRODUCER_TAG;
	uint32_t part = part_of(key);
	for (int attempt = 0; attempt < REPL_ACK_ATTEMPTS; attempt++) {
		int l = leader_of(part);
		if (l < 0) {
			pump();
			continue;
		}
		struct pe_append_result r = append_on(l, key, payload, producer);
		if (!r.err)
			return r.seq;
		cr_assert(r.err == -PARLEY_ENOTLEADER || r.err == -PARLEY_EAGAIN ||
			  r.err == -PARLEY_EFULL, "append: %s",
			  parley_errname(r.err));
		for (int k = 0; k < 8; k++)
			pump();
	}
	cr_assert_fail("append never acknowledged");
	return 0;
}

/* ---- acknowledged entries and their check -------------------------------- */

struct rec {
	int key;
	uint64_t seq;
	char payload[40];
};
static struct rec acked[REPL_MAXACK];
static int nacked;

static void key_name(int k, char *out, size_t cap)
{
	snprintf(out, cap, "c/conv-%d", k);
}

/* n appends, each to a seeded one of the NKEYS keys, each acknowledged
 * and recorded in acked[]. */
static void append_many(int n)
{
	for (int i = 0; i < n; i++) {
		cr_assert_lt(nacked, REPL_MAXACK);
		struct rec *r = &acked[nacked];
		r->key = (int)parley_rng_below(&rng, NKEYS);
		repl_payload(nacked, r->payload, sizeof r->payload);
		char key[32];
		key_name(r->key, key, sizeof key);
		r->seq = append_acked(key, r->payload, (uint64_t)nacked + 1);
		nacked++;
	}
}

/* Every acked entry is on node i with its seq, each key's stream holds
 * exactly the acked entries (no doubles, no extras), seqs dense. */
static void check_acked(int i)
{
	for (int k = 0; k < NKEYS; k++) {
		char key[32];
		key_name(k, key, sizeof key);
		struct pe_read_req q = {.key = key, .klen = strlen(key),
					.from = 1, .dir = PE_FORWARD,
					.limit = PE_MAX_READ};
		struct pe_entry *es = NULL;
		uint32_t n = 0;
		cr_assert_eq(pe_read_sync(nodes[i].e, &q, &es, &n, NULL), 0);
		uint32_t want = 0;
		for (int a = 0; a < nacked; a++) {
			if (acked[a].key != k)
				continue;
			want++;
			cr_assert_geq(n, acked[a].seq, "node %d key %d: seq %llu "
				      "missing (stream has %u)", i, k,
				      (unsigned long long)acked[a].seq, n);
			const struct pe_entry *e = &es[acked[a].seq - 1];
			cr_assert_eq(e->seq, acked[a].seq);
			cr_assert(e->len == strlen(acked[a].payload) &&
				  !memcmp(e->payload, acked[a].payload, e->len),
				  "node %d key %d seq %llu: wrong payload", i, k,
				  (unsigned long long)e->seq);
		}
		cr_assert_eq(n, want, "node %d key %d: %u entries, %u acked",
			     i, k, n, want);
		for (uint32_t s = 0; s < n; s++)
			cr_assert_eq(es[s].seq, s + 1);
		free(es);
	}
}

/* Pumps until node i applied what the leaders committed, everywhere. */
static void wait_caught_up(int i)
{
	for (int r = 0; r < MAX_PUMP; r++) {
		bool ok = true;
		for (uint32_t p = 0; p < NPARTS && ok; p++) {
			int l = leader_of(p);
			if (l < 0) {
				ok = false;
				break;
			}
			struct pe_raft_status ls = status(l, p), st = status(i, p);
			ok = st.applied >= ls.commit && ls.commit == ls.last_index;
		}
		if (ok)
			return;
		pump();
	}
	cr_assert_fail("node %d did not catch up", i);
}

#endif /* REPL_CLUSTER_H */
