/*
 * raft_node.h — a Raft core (engine raft.h) on an in-memory log, wired to
 * the peer transport (server/peer.h): what test_peer_raft.c runs, several
 * per process over loopback or one per network namespace.
 *
 * The storage is memory only ("durable" the moment a ready is handled);
 * that is enough here: these tests check the transport carries a real Raft
 * group through elections, replication, broken links and reconnects, not
 * the disk. No snapshots are taken, so every entry stays in the log and
 * logs can be compared index by index.
 *
 * Applied entries feed a chained digest: digest(i) = xxh3(digest(i-1) ||
 * term || csum), so two nodes with the same (applied, digest) applied the
 * same entries. Threads: one; a node is driven by rn_* calls only.
 */
#ifndef PARLEY_TEST_RAFT_NODE_H
#define PARLEY_TEST_RAFT_NODE_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"
#include "peer.h"
#include "raft.h"

#define RN_TICK_MS 10
#define RN_ELECTION_TICKS 15
#define RN_HEARTBEAT_TICKS 3

struct rn {
	uint64_t id;
	struct raft *r;
	struct peer *p; /* NULL while the transport is stopped */
	struct raft_hardstate hs;
	struct raft_entry *log; /* log[i] = entry i+1 */
	uint64_t n, cap;
	uint64_t applied, digest, normal_applied;
	uint64_t steps_failed;
};

static inline void rn_die(const char *what)
{
	fprintf(stderr, "FAIL: %s\n", what);
	exit(1);
}

static int rn_load(void *ctx, struct raft_hardstate *hs,
		   struct raft_snapshot_meta *snap, uint64_t *last,
		   struct raft_snapshot_meta *partial, uint64_t *partial_bytes)
{
	struct rn *n = ctx;
	*hs = n->hs;
	memset(snap, 0, sizeof *snap);
	memset(partial, 0, sizeof *partial);
	*partial_bytes = 0;
	*last = n->n;
	return 0;
}

static int rn_entry(void *ctx, uint64_t index, struct raft_entry *out)
{
	struct rn *n = ctx;
	if (index < 1 || index > n->n)
		return -PARLEY_ENOTFOUND;
	*out = n->log[index - 1];
	return 0;
}

static int rn_snap_read(void *ctx, uint64_t off, void *buf, uint32_t len)
{
	return -PARLEY_ENOTFOUND;
}

static void rn_truncate(struct rn *n, uint64_t keep)
{
	while (n->n > keep) {
		n->n--;
		free((void *)n->log[n->n].data);
	}
}

static void rn_append(struct rn *n, const struct raft_entry *e)
{
	if (e->index != n->n + 1)
		rn_die("non-contiguous append");
	if (n->n == n->cap) {
		n->cap = n->cap ? n->cap * 2 : 1024;
		n->log = realloc(n->log, n->cap * sizeof *n->log);
		if (!n->log)
			rn_die("oom");
	}
	uint8_t *d = malloc(e->len ? e->len : 1);
	if (!d)
		rn_die("oom");
	if (e->len)
		memcpy(d, e->data, e->len);
	n->log[n->n] = *e;
	n->log[n->n].data = d;
	n->n++;
}

static void rn_on_recv(void *arg, uint64_t from, const struct raft_msg *msgs,
		       uint32_t k)
{
	struct rn *n = arg;
	for (uint32_t i = 0; i < k; i++)
		if (raft_step(n->r, &msgs[i]) < 0)
			n->steps_failed++;
}

static void rn_init_group(struct rn *n, uint64_t id, uint32_t voters,
			  uint64_t seed, uint64_t group)
{
	memset(n, 0, sizeof *n);
	n->id = id;
	struct raft_config c = {0};
	c.id = id;
	c.group = group;
	c.election_ticks = RN_ELECTION_TICKS;
	c.heartbeat_ticks = RN_HEARTBEAT_TICKS;
	c.max_inflight = 64;
	c.max_batch_entries = 64;
	c.max_batch_bytes = 256 << 10;
	c.max_uncommitted = 2048;
	c.chunk_bytes = 64 << 10;
	c.quiesce_ticks = 0;
	c.rng_seed = seed * 1000003u + id * 7919u + group;
	c.pre_vote = true;
	c.check_quorum = true;
	for (uint32_t i = 0; i < voters; i++) {
		c.bootstrap.ids[i] = i + 1;
		c.bootstrap.roles[i] = RAFT_VOTER;
	}
	c.bootstrap.n = voters;
	c.bootstrap.max_id = voters;
	c.storage = (struct raft_storage){.ctx = n,
					  .load = rn_load,
					  .entry = rn_entry,
					  .snapshot_read = rn_snap_read};
	if (raft_new(&c, &n->r) < 0)
		rn_die("raft_new");
}

static void rn_init(struct rn *n, uint64_t id, uint32_t voters, uint64_t seed)
{
	rn_init_group(n, id, voters, seed, 1);
}

static void rn_free(struct rn *n)
{
	if (n->p)
		peer_free(n->p);
	raft_free(n->r);
	rn_truncate(n, 0);
	free(n->log);
}

/* A ready in two halves, so that several groups' messages can be sent as
 * one coalesced batch per node in between (what a shard will do):
 * rn_ready_begin persists (memory) and returns the ready, or NULL (and
 * advances) when it is empty; rn_ready_end applies and advances. Between
 * the two, rd->msgs are valid and no other raft_* call may touch n->r. */
static struct raft_ready *rn_ready_begin(struct rn *n)
{
	struct raft_ready *rd = raft_ready(n->r);
	if (rd->empty) {
		raft_advance(n->r);
		return NULL;
	}
	if (rd->has_chunk || rd->has_install || rd->n_repair)
		rn_die("unexpected snapshot or repair in this test");
	if (rd->truncate_from) {
		if (rd->truncate_from <= n->hs.commit)
			rn_die("truncating committed entries");
		rn_truncate(n, rd->truncate_from - 1);
	}
	for (uint32_t i = 0; i < rd->n_entries; i++) {
		const struct raft_entry *e = &rd->entries[i];
		if (i == 0) {
			if (e->index <= n->hs.commit && e->index <= n->n)
				rn_die("overwriting committed entries");
			rn_truncate(n, e->index - 1);
		}
		rn_append(n, e);
	}
	if (rd->hs_changed)
		n->hs = rd->hs;
	return rd;
}

static void rn_ready_end(struct rn *n, struct raft_ready *rd)
{
	for (uint32_t i = 0; i < rd->n_committed; i++) {
		const struct raft_entry *e = &rd->committed[i];
		if (e->index != n->applied + 1)
			rn_die("apply out of order");
		uint8_t b[24];
		le_put64(b, n->digest);
		le_put64(b + 8, e->term);
		le_put64(b + 16, e->csum);
		n->digest = parley_xxh3(b, sizeof b, 0x6469676573743031ull);
		n->applied = e->index;
		if (e->type == RAFT_ENTRY_NORMAL)
			n->normal_applied++;
	}
	raft_advance(n->r);
}

/* Handles every ready of a single-group node: persist, send, apply. */
static void rn_process(struct rn *n)
{
	for (int guard = 0; guard < 256; guard++) {
		struct raft_ready *rd = rn_ready_begin(n);
		if (!rd)
			break;
		if (n->p && rd->n_msgs)
			(void)peer_send_all(n->p, rd->msgs, rd->n_msgs);
		rn_ready_end(n, rd);
	}
	if (n->p)
		peer_flush(n->p);
}

static int rn_propose(struct rn *n, uint64_t k, struct parley_rng *rng)
{
	uint8_t buf[256];
	uint32_t len = 16 + (uint32_t)parley_rng_below(rng, 200);
	int h = snprintf((char *)buf, sizeof buf, "n%" PRIu64 "-%" PRIu64 ":", n->id, k);
	for (uint32_t i = (uint32_t)h; i < len; i++)
		buf[i] = (uint8_t)('a' + parley_rng_below(rng, 26));
	uint64_t idx;
	return raft_propose(n->r, buf, len, &idx);
}

#endif /* PARLEY_TEST_RAFT_NODE_H */
