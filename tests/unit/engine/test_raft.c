/*
 * test_raft.c — engine/raft.c rule by rule: elections (pre-vote, votes,
 * leases, one vote per term), leader no-op, log matching with conflict
 * hints, the current-term commit rule, follower commit bounds, persistence
 * failure, proposal errors, membership rules (ids never reused, one change at
 * a time), learners, checksums and damaged entries, ReadIndex, TimeoutNow,
 * quiescing, snapshot chunk resumption, commit advances told once per
 * ready, commit-only APPENDs not answered (RAFT_MSGF_NOACK).
 *
 * A tiny in-memory harness: each node's storage is an array filled from its
 * readies; messages are collected and delivered by hand or until quiet.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"
#include "raft.h"

#define TN 5
#define TMAXE 4096

struct tnode {
	uint64_t id;
	struct raft *r;
	struct raft_hardstate hs;
	struct raft_snapshot_meta snap;
	uint8_t snapdata[64];
	struct raft_entry ents[TMAXE]; /* index i at ents[i] */
	uint8_t *bufs[TMAXE];
	uint64_t last;
	uint64_t applied;
	uint64_t reads_ok, reads_err, last_read_index;
	int n_installs;
};

struct tq {
	struct raft_msg m;
	struct raft_entry ents[RAFT_MAX_MSG_ENTRIES];
	uint8_t data[8192];
	bool live;
};

static struct tnode nodes[TN];
static struct tq q[4096];
static int nq;
static bool drop_to[TN + 1];

static int t_load(void *ctx, struct raft_hardstate *hs,
		  struct raft_snapshot_meta *snap, uint64_t *last,
		  struct raft_snapshot_meta *partial, uint64_t *pbytes)
{
	struct tnode *n = ctx;
	*hs = n->hs;
	*snap = n->snap;
	*last = n->last;
	memset(partial, 0, sizeof(*partial));
	*pbytes = 0;
	return 0;
}

static int t_entry(void *ctx, uint64_t i, struct raft_entry *e)
{
	struct tnode *n = ctx;
	if (i <= n->snap.index || i > n->last)
		return -PARLEY_ENOTFOUND;
	*e = n->ents[i];
	return 0;
}

static int t_snap_read(void *ctx, uint64_t off, void *buf, uint32_t len)
{
	struct tnode *n = ctx;
	uint64_t k = PARLEY_MIN((uint64_t)len, n->snap.size - off);
	memcpy(buf, n->snapdata + off, k);
	return (int)k;
}

static struct raft_config tcfg(struct tnode *n, uint32_t voters)
{
	struct raft_config c = {0};
	c.id = n->id;
	c.election_ticks = 10;
	c.heartbeat_ticks = 2;
	c.max_inflight = 4;
	c.max_batch_entries = 8;
	c.max_uncommitted = 64;
	c.chunk_bytes = 16;
	c.quiesce_ticks = 0;
	c.rng_seed = 42;
	c.pre_vote = true;
	c.check_quorum = true;
	for (uint32_t i = 0; i < voters; i++) {
		c.bootstrap.ids[i] = i + 1;
		c.bootstrap.roles[i] = RAFT_VOTER;
	}
	c.bootstrap.n = voters;
	c.bootstrap.max_id = voters;
	c.storage = (struct raft_storage){.ctx = n,
					  .load = t_load,
					  .entry = t_entry,
					  .snapshot_read = t_snap_read};
	return c;
}

static void start(int i, uint32_t voters, void (*tweak)(struct raft_config *))
{
	struct tnode *n = &nodes[i];
	n->id = (uint64_t)i + 1;
	struct raft_config c = tcfg(n, voters);
	if (tweak)
		tweak(&c);
	cr_assert_eq(raft_new(&c, &n->r), 0);
}

static void setup(void)
{
	memset(nodes, 0, sizeof(nodes));
	memset(drop_to, 0, sizeof(drop_to));
	nq = 0;
	parley_log_set_level(PLOG_ERROR);
}

static void teardown(void)
{
	for (int i = 0; i < TN; i++) {
		raft_free(nodes[i].r);
		for (int k = 0; k < TMAXE; k++)
			free(nodes[i].bufs[k]);
	}
}

static void enqueue(const struct raft_msg *m)
{
	cr_assert_lt(nq, 4096);
	struct tq *t = &q[nq++];
	t->m = *m;
	t->live = true;
	size_t off = 0;
	for (uint32_t k = 0; k < m->n_entries; k++) {
		t->ents[k] = m->entries[k];
		memcpy(t->data + off, m->entries[k].data, m->entries[k].len);
		t->ents[k].data = t->data + off;
		off += m->entries[k].len;
	}
	t->m.entries = t->ents;
	if (m->chunk_len) {
		memcpy(t->data + off, m->chunk, m->chunk_len);
		t->m.chunk = t->data + off;
	}
}

/* Persist + send + apply every ready of node i. */
static void drain(int i)
{
	struct tnode *n = &nodes[i];
	for (;;) {
		struct raft_ready *rd = raft_ready(n->r);
		if (rd->empty) {
			raft_advance(n->r);
			return;
		}
		for (uint32_t k = 0; k < rd->n_entries; k++) {
			const struct raft_entry *e = &rd->entries[k];
			if (k == 0)
				n->last = e->index - 1;
			free(n->bufs[e->index]);
			n->bufs[e->index] = malloc(e->len + 1);
			memcpy(n->bufs[e->index], e->data, e->len);
			n->ents[e->index] = *e;
			n->ents[e->index].data = n->bufs[e->index];
			n->last = e->index;
		}
		for (uint32_t k = 0; k < rd->n_repair; k++) {
			const struct raft_entry *e = &rd->repair[k];
			memcpy(n->bufs[e->index], e->data, e->len);
			n->ents[e->index] = *e;
			n->ents[e->index].data = n->bufs[e->index];
		}
		if (rd->hs_changed)
			n->hs = rd->hs;
		for (uint32_t k = 0; k < rd->n_msgs; k++)
			enqueue(&rd->msgs[k]);
		if (rd->has_install)
			n->n_installs++;
		for (uint32_t k = 0; k < rd->n_committed; k++) {
			cr_assert_eq(rd->committed[k].index, n->applied + 1);
			cr_assert(raft_entry_ok(&rd->committed[k]));
			n->applied = rd->committed[k].index;
		}
		for (uint32_t k = 0; k < rd->n_reads; k++) {
			if (rd->reads[k].err)
				n->reads_err++;
			else {
				n->reads_ok++;
				n->last_read_index = rd->reads[k].index;
			}
		}
		raft_advance(n->r);
	}
}

/* Deliver queued messages until nothing moves (bounded). */
static void settle(void)
{
	for (int rounds = 0; rounds < 10000; rounds++) {
		int i;
		for (i = 0; i < nq; i++)
			if (q[i].live)
				break;
		if (i == nq) {
			nq = 0;
			return;
		}
		q[i].live = false;
		struct raft_msg *m = &q[i].m;
		int to = (int)m->to - 1;
		if (to >= 0 && to < TN && nodes[to].r && !drop_to[m->to]) {
			raft_step(nodes[to].r, m);
			drain(to);
		}
		if (i == nq - 1)
			nq = 0;
	}
}

static void tick(int i, int n)
{
	for (int k = 0; k < n; k++) {
		raft_tick(nodes[i].r);
		drain(i);
	}
}

/* Elect node `i` leader of a `voters` cluster (all started). */
static void elect(int i)
{
	tick(i, 25);
	settle();
	cr_assert_eq(raft_role(nodes[i].r), RAFT_LEADER);
}

static void cluster(uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		start((int)i, n, NULL);
}

TestSuite(raft, .init = setup, .fini = teardown);

Test(raft, single_node_elects_itself_and_commits_its_noop)
{
	start(0, 1, NULL);
	tick(0, 25);
	cr_assert_eq(raft_role(nodes[0].r), RAFT_LEADER);
	cr_assert_eq(raft_term(nodes[0].r), 1);
	cr_assert_eq(nodes[0].last, 1);
	cr_assert_eq(nodes[0].ents[1].type, RAFT_ENTRY_NOOP);
	cr_assert_eq(nodes[0].ents[1].term, 1);
	cr_assert_eq(raft_commit(nodes[0].r), 1);
	uint64_t idx;
	cr_assert_eq(raft_propose(nodes[0].r, "x", 1, &idx), 0);
	cr_assert_eq(idx, 2);
	drain(0);
	cr_assert_eq(nodes[0].applied, 2);
}

Test(raft, prevote_does_not_bump_term_and_vote_is_persisted_before_sent)
{
	cluster(3);
	struct tnode *n = &nodes[0];
	for (int k = 0; k < 25 && raft_role(n->r) == RAFT_FOLLOWER; k++)
		raft_tick(n->r);
	cr_assert_eq(raft_role(n->r), RAFT_PRECANDIDATE);
	struct raft_ready *rd = raft_ready(n->r);
	cr_assert_eq(rd->n_msgs, 2);
	cr_assert_eq(rd->msgs[0].type, RAFT_MSG_PREVOTE);
	cr_assert_eq(rd->msgs[0].term, 1);
	cr_assert_eq(raft_term(n->r), 0, "pre-vote must not change the term");
	for (uint32_t k = 0; k < rd->n_msgs; k++)
		enqueue(&rd->msgs[k]);
	raft_advance(n->r);
	/* deliver the pre-votes, collect the answers */
	int before = nq;
	for (int i = 0; i < before; i++) {
		q[i].live = false;
		raft_step(nodes[q[i].m.to - 1].r, &q[i].m);
		drain((int)q[i].m.to - 1);
	}
	for (int i = before; i < nq; i++) {
		q[i].live = false;
		cr_assert_eq(q[i].m.type, RAFT_MSG_PREVOTE_RESP);
		raft_step(n->r, &q[i].m);
	}
	nq = 0;
	cr_assert_eq(raft_role(n->r), RAFT_CANDIDATE);
	rd = raft_ready(n->r);
	cr_assert(rd->hs_changed);
	cr_assert_eq(rd->hs.term, 1);
	cr_assert_eq(rd->hs.vote, 1, "the vote for itself is in the same ready as the VOTEs");
	cr_assert_eq(rd->msgs[0].type, RAFT_MSG_VOTE);
	raft_advance(n->r);
}

Test(raft, leader_appends_noop_of_its_term_and_replicates)
{
	cluster(3);
	elect(0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(nodes[i].last, 1);
		cr_assert_eq(nodes[i].ents[1].type, RAFT_ENTRY_NOOP);
	}
	cr_assert_eq(raft_commit(nodes[0].r), 1);
	tick(0, 2);
	settle();
	cr_assert_eq(raft_commit(nodes[1].r), 1);
	cr_assert_eq(raft_leader(nodes[2].r), 1);
}

Test(raft, vote_refused_to_stale_log_and_once_per_term)
{
	cluster(3);
	elect(0);
	cr_assert_eq(raft_propose(nodes[0].r, "a", 1, NULL), 0);
	drain(0);
	settle();
	/* node 3 asks for a vote in a higher term with a shorter log */
	struct raft_msg m = {.type = RAFT_MSG_VOTE, .from = 3, .to = 2,
			     .term = 9, .index = 1, .log_term = 1,
			     .flags = RAFT_MSGF_TRANSFER};
	raft_step(nodes[1].r, &m);
	struct raft_ready *rd = raft_ready(nodes[1].r);
	cr_assert_eq(rd->n_msgs, 1);
	cr_assert(rd->msgs[0].flags & RAFT_MSGF_REJECT);
	cr_assert_eq(raft_term(nodes[1].r), 9);
	raft_advance(nodes[1].r);
	/* an up-to-date candidate gets it; a second one in the same term not */
	m.index = 2;
	raft_step(nodes[1].r, &m);
	rd = raft_ready(nodes[1].r);
	cr_assert(!(rd->msgs[0].flags & RAFT_MSGF_REJECT));
	cr_assert_eq(rd->hs.vote, 3);
	raft_advance(nodes[1].r);
	m.from = 1;
	raft_step(nodes[1].r, &m);
	rd = raft_ready(nodes[1].r);
	cr_assert(rd->msgs[0].flags & RAFT_MSGF_REJECT);
	raft_advance(nodes[1].r);
}

Test(raft, lease_ignores_votes_while_leader_is_alive_unless_transfer)
{
	cluster(3);
	elect(0);
	struct raft_msg m = {.type = RAFT_MSG_PREVOTE, .from = 3, .to = 2,
			     .term = 5, .index = 100, .log_term = 1};
	raft_step(nodes[1].r, &m);
	struct raft_ready *rd = raft_ready(nodes[1].r);
	cr_assert_eq(rd->n_msgs, 0, "a follower with a live leader ignores it");
	raft_advance(nodes[1].r);
	m.type = RAFT_MSG_VOTE;
	m.flags = RAFT_MSGF_TRANSFER;
	raft_step(nodes[1].r, &m);
	rd = raft_ready(nodes[1].r);
	cr_assert_eq(rd->n_msgs, 1);
	cr_assert(!(rd->msgs[0].flags & RAFT_MSGF_REJECT));
	raft_advance(nodes[1].r);
}

Test(raft, append_reject_carries_conflict_hints)
{
	start(1, 3, NULL);
	struct tnode *n = &nodes[1];
	/* follower log: terms 1 1 2 2 2 */
	uint64_t terms[] = {0, 1, 1, 2, 2, 2};
	for (uint64_t i = 1; i <= 5; i++) {
		n->bufs[i] = malloc(1);
		n->ents[i] = (struct raft_entry){.term = terms[i], .index = i,
						 .data = n->bufs[i]};
		n->ents[i].csum = raft_entry_csum(terms[i], i, 0, n->bufs[i], 0);
	}
	n->last = 5;
	n->hs.term = 2;
	raft_free(n->r);
	struct raft_config c = tcfg(n, 3);
	cr_assert_eq(raft_new(&c, &n->r), 0);
	/* leader (term 3) probes at index 5 with prev term 3: mismatch */
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2,
			     .term = 3, .index = 5, .log_term = 3};
	raft_step(n->r, &m);
	struct raft_ready *rd = raft_ready(n->r);
	cr_assert_eq(rd->n_msgs, 1);
	const struct raft_msg *r = &rd->msgs[0];
	cr_assert(r->flags & RAFT_MSGF_REJECT);
	cr_assert_eq(r->index, 5);
	cr_assert_eq(r->hint, 5, "largest index with term <= 3");
	cr_assert_eq(r->log_term, 2);
	raft_advance(n->r);
	/* prev beyond our log: hint is our last index */
	m.index = 9;
	m.log_term = 1;
	raft_step(n->r, &m);
	rd = raft_ready(n->r);
	cr_assert_eq(rd->msgs[0].hint, 2, "term <= 1 ends at index 2");
	cr_assert_eq(rd->msgs[0].log_term, 1);
	raft_advance(n->r);
}

Test(raft, follower_truncates_conflicts_and_commit_is_bounded_by_new_entries)
{
	cluster(3);
	elect(0);
	struct tnode *f = &nodes[2];
	/* leader term 1 sends entries 2..3 with commit 10 */
	struct raft_entry es[2];
	for (int k = 0; k < 2; k++) {
		es[k] = (struct raft_entry){.term = 1, .index = 2 + (uint64_t)k,
					    .data = (const uint8_t *)"zz", .len = 2};
		es[k].csum = raft_entry_csum(1, 2 + (uint64_t)k, 0, "zz", 2);
	}
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 3,
			     .term = 1, .index = 1, .log_term = 1, .commit = 10,
			     .n_entries = 2, .entries = es};
	raft_step(f->r, &m);
	cr_assert_eq(raft_commit(f->r), 3, "commit <= last new entry");
	drain(2);
	cr_assert_eq(f->last, 3);
	cr_assert_eq(f->applied, 3);
}

Test(raft, entries_of_a_damaged_checksum_are_not_accepted)
{
	cluster(3);
	elect(0);
	struct raft_entry e = {.term = 1, .index = 2, .data = (const uint8_t *)"ab", .len = 2};
	e.csum = raft_entry_csum(1, 2, 0, "ab", 2) ^ 1;
	cr_assert(!raft_entry_ok(&e));
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2,
			     .term = 1, .index = 1, .log_term = 1, .commit = 1,
			     .n_entries = 1, .entries = &e};
	raft_step(nodes[1].r, &m);
	cr_assert_eq(raft_last_index(nodes[1].r), 1);
	drain(1);
	nq = 0;
}

Test(raft, damaged_committed_entry_is_not_applied_and_is_repaired)
{
	cluster(3);
	elect(0);
	for (int k = 0; k < 5; k++)
		cr_assert_eq(raft_propose(nodes[0].r, "hello", 5, NULL), 0);
	drain(0);
	settle();
	tick(0, 2);
	settle();
	cr_assert_eq(nodes[2].applied, 6);
	/* flip a bit in node 3's entry 4 and restart it (re-applies) */
	nodes[2].bufs[4][0] ^= 0x10;
	raft_free(nodes[2].r);
	nodes[2].applied = 0;
	struct raft_config c = tcfg(&nodes[2], 3);
	cr_assert_eq(raft_new(&c, &nodes[2].r), 0);
	drain(2);
	cr_assert_eq(nodes[2].applied, 3, "stops before the damaged entry");
	uint64_t d;
	cr_assert(raft_damaged(nodes[2].r, &d));
	cr_assert_eq(d, 4);
	cr_assert_eq(nodes[2].last, 6, "nothing truncated");
	/* the leader's heartbeat round brings the repair */
	tick(0, 2);
	settle();
	tick(0, 2);
	settle();
	cr_assert(!raft_damaged(nodes[2].r, NULL));
	cr_assert_eq(nodes[2].applied, 6);
	cr_assert(raft_entry_ok(&nodes[2].ents[4]));
}

static void verified_data(struct raft_config *c)
{
	c->storage.verified_data = true;
}

/* raft_storage.verified_data: the storage vouches for what entry() returns,
 * so the core does not hash an entry again when it reads it back. Shown
 * with bytes that changed in storage after they were taken (which a storage
 * setting the flag must never let happen): they are handed out as stored,
 * where without the flag (damaged_committed_entry_is_not_applied_and_is_
 * repaired) apply stops before them. An entry that arrives in a message is
 * still verified. */
Test(raft, verified_storage_entries_are_not_hashed_again_on_read)
{
	for (int i = 0; i < 3; i++)
		start(i, 3, verified_data);
	elect(0);
	for (int k = 0; k < 5; k++)
		cr_assert_eq(raft_propose(nodes[0].r, "hello", 5, NULL), 0);
	drain(0);
	settle();
	tick(0, 2);
	settle();
	cr_assert_eq(nodes[2].applied, 6);
	nodes[2].bufs[4][0] ^= 0x10;
	raft_free(nodes[2].r);
	nodes[2].applied = 0;
	struct raft_config c = tcfg(&nodes[2], 3);
	verified_data(&c);
	cr_assert_eq(raft_new(&c, &nodes[2].r), 0);
	struct raft_ready *rd = raft_ready(nodes[2].r);
	cr_assert_eq(rd->n_committed, 6, "read back without hashing");
	cr_assert_eq(rd->committed[3].index, 4);
	cr_assert(!memcmp(rd->committed[3].data, nodes[2].bufs[4], 5),
		  "as stored");
	cr_assert(!raft_entry_ok(&rd->committed[3]));
	cr_assert(!raft_damaged(nodes[2].r, NULL));
	raft_advance(nodes[2].r);
	nodes[2].applied = 6;
	/* a message's entries are verified whatever the storage says */
	struct raft_entry e = {.term = 1, .index = 7,
			       .data = (const uint8_t *)"ab", .len = 2};
	e.csum = raft_entry_csum(1, 7, 0, "ab", 2) ^ 1;
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2,
			     .term = 1, .index = 6, .log_term = 1, .commit = 6,
			     .n_entries = 1, .entries = &e};
	raft_step(nodes[1].r, &m);
	cr_assert_eq(raft_last_index(nodes[1].r), 6, "refused");
	drain(1);
	nq = 0;
}

/* A storage allocator that tags and counts what the core takes from it. */
static int data_allocs, data_frees;

static void *t_data_alloc(void *ctx, uint32_t len)
{
	(void)ctx;
	uint8_t *d = malloc(8 + (size_t)len);
	cr_assert_not_null(d);
	memcpy(d, "TDATA!!", 8);
	data_allocs++;
	return d + 8;
}

static void t_data_free(void *ctx, void *data)
{
	(void)ctx;
	uint8_t *d = (uint8_t *)data - 8;
	cr_assert(!memcmp(d, "TDATA!!", 8), "given back what it took");
	memset(d, 0, 8);
	free(d);
	data_frees++;
}

static void data_hooks(struct raft_config *c)
{
	c->storage.data_alloc = t_data_alloc;
	c->storage.data_free = t_data_free;
}

static bool is_tdata(const void *p)
{
	return !memcmp((const uint8_t *)p - 8, "TDATA!!", 8);
}

static void store(struct tnode *n, const struct raft_ready *rd);

/* raft_storage.data_alloc/data_free: the core's copies of proposals and
 * of entries taken from APPENDs are the storage's memory (so a ready's
 * entries can be kept without a copy), each given back exactly once:
 * after the advance that persisted it, or, dropped by a truncation while
 * a message may still borrow it, at the next advance. */
Test(raft, core_copies_of_entries_come_from_the_storage_allocator)
{
	data_allocs = data_frees = 0;
	for (int i = 0; i < 3; i++)
		start(i, 3, data_hooks);
	elect(0);
	cr_assert_eq(raft_propose(nodes[0].r, "mine", 4, NULL), 0);
	struct raft_ready *rd = raft_ready(nodes[0].r);
	cr_assert_eq(rd->n_entries, 1);
	cr_assert(is_tdata(rd->entries[0].data), "the leader's copy");
	int frees = data_frees;
	for (uint32_t k = 0; k < rd->n_msgs; k++)
		enqueue(&rd->msgs[k]);
	store(&nodes[0], rd);
	raft_advance(nodes[0].r);
	cr_assert_eq(data_frees, frees + 1, "given back at the advance");
	/* a follower's copy of an entry from an APPEND */
	struct raft_entry e = {.term = 1, .index = 3,
			       .data = (const uint8_t *)"xy", .len = 2};
	e.csum = raft_entry_csum(1, 3, 0, "xy", 2);
	settle();
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 3,
			     .term = 1, .index = 2, .log_term = 1,
			     .commit = raft_commit(nodes[0].r), .n_entries = 1,
			     .entries = &e};
	cr_assert_eq(raft_step(nodes[2].r, &m), 0);
	rd = raft_ready(nodes[2].r);
	cr_assert_eq(rd->n_entries, 1);
	cr_assert(is_tdata(rd->entries[0].data), "the follower's copy");
	cr_assert(!memcmp(rd->entries[0].data, "xy", 2));
	store(&nodes[2], rd);
	raft_advance(nodes[2].r);
	/* unstable entries dropped by a conflicting APPEND go back at the
	 * next advance, not at once */
	struct raft_entry f = {.term = 1, .index = 4,
			       .data = (const uint8_t *)"zz", .len = 2};
	f.csum = raft_entry_csum(1, 4, 0, "zz", 2);
	struct raft_msg m2 = m;
	m2.index = 3;
	m2.log_term = 1;
	m2.entries = &f;
	m2.commit = 0;
	cr_assert_eq(raft_step(nodes[2].r, &m2), 0);
	cr_assert_eq(raft_last_index(nodes[2].r), 4);
	struct raft_entry g = f;
	g.term = 2;
	g.csum = raft_entry_csum(2, 4, 0, "zz", 2);
	struct raft_msg m3 = m2;
	m3.term = 2;
	m3.entries = &g;
	frees = data_frees;
	cr_assert_eq(raft_step(nodes[2].r, &m3), 0);
	cr_assert_eq(data_frees, frees, "kept while a message may borrow it");
	cr_assert_eq(raft_last_index(nodes[2].r), 4);
	rd = raft_ready(nodes[2].r);
	cr_assert_eq(rd->n_entries, 1);
	cr_assert_eq(rd->entries[0].term, 2);
	cr_assert(is_tdata(rd->entries[0].data));
	store(&nodes[2], rd);
	raft_advance(nodes[2].r);
	cr_assert_geq(data_frees, frees + 2, "the dropped and the persisted");
	for (int i = 0; i < 3; i++) {
		raft_free(nodes[i].r);
		nodes[i].r = NULL;
	}
	cr_assert_eq(data_frees, data_allocs, "each given back once");
	cr_assert_gt(data_allocs, 3);
}

static void no_cq(struct raft_config *c);

Test(raft, damaged_leader_hands_leadership_to_a_voter_holding_the_entry)
{
	cluster(3);
	elect(0);
	drop_to[3] = true; /* node 3 lags */
	for (int k = 0; k < 5; k++)
		cr_assert_eq(raft_propose(nodes[0].r, "data!", 5, NULL), 0);
	drain(0);
	settle();
	tick(0, 2);
	settle();
	cr_assert_eq(raft_commit(nodes[0].r), 6);
	nodes[0].bufs[4][1] ^= 0x01; /* the leader's copy of entry 4 rots */
	drop_to[3] = false;
	for (int k = 0; k < 40 && raft_role(nodes[1].r) != RAFT_LEADER; k++) {
		tick(0, 1);
		settle();
	}
	cr_assert_eq(raft_role(nodes[1].r), RAFT_LEADER,
		     "node 2 holds entry 4 and takes over");
	cr_assert_neq(raft_role(nodes[0].r), RAFT_LEADER);
	for (int k = 0; k < 10; k++) {
		tick(1, 1);
		settle();
	}
	cr_assert(!raft_damaged(nodes[0].r, NULL), "the old leader was repaired");
	cr_assert(raft_entry_ok(&nodes[0].ents[4]));
	cr_assert_eq(nodes[2].applied, raft_commit(nodes[1].r), "the lagging node caught up");
	cr_assert_geq(nodes[2].applied, 6);
}

Test(raft, leader_commits_only_entries_of_its_term_by_counting)
{
	/* no check-quorum: no leader lease keeps the followers from voting
	 * for the restarted node */
	for (int i = 0; i < 3; i++)
		start(i, 3, no_cq);
	elect(0);
	/* node 1 (leader, term 1) appends an entry that only it holds */
	drop_to[2] = drop_to[3] = true;
	cr_assert_eq(raft_propose(nodes[0].r, "old", 3, NULL), 0);
	drain(0);
	settle();
	drop_to[2] = drop_to[3] = false;
	cr_assert_eq(raft_commit(nodes[0].r), 1);
	/* node 1 restarts and wins term 2..; entry 2 has term 1 */
	raft_free(nodes[0].r);
	nodes[0].applied = 0;
	struct raft_config c = tcfg(&nodes[0], 3);
	c.check_quorum = false;
	cr_assert_eq(raft_new(&c, &nodes[0].r), 0);
	/* make node 2 replicate the old entry (match 2) but hold its acks */
	tick(0, 25);
	/* deliver only vote traffic first */
	settle();
	cr_assert_eq(raft_role(nodes[0].r), RAFT_LEADER);
	/* entry 2 (term 1) is committed only together with the term-2 no-op */
	cr_assert_eq(nodes[0].ents[3].type, RAFT_ENTRY_NOOP);
	cr_assert_eq(raft_term_at(nodes[0].r, 2), 1);
	cr_assert_eq(raft_commit(nodes[0].r), 3);
}

static void no_cq(struct raft_config *c)
{
	c->check_quorum = false;
}

static void no_cq_batch1(struct raft_config *c)
{
	c->check_quorum = false;
	c->max_batch_entries = 1;
}

/* Delivers queued messages, dropping APPENDs that carry index `drop_idx`. */
static void settle_dropping(uint64_t drop_idx)
{
	for (int rounds = 0; rounds < 10000; rounds++) {
		int i;
		for (i = 0; i < nq; i++)
			if (q[i].live)
				break;
		if (i == nq) {
			nq = 0;
			return;
		}
		q[i].live = false;
		struct raft_msg *m = &q[i].m;
		bool drop = false;
		for (uint32_t k = 0; k < m->n_entries; k++)
			drop |= m->entries[k].index == drop_idx;
		int to = (int)m->to - 1;
		if (!drop && to >= 0 && to < TN && nodes[to].r) {
			raft_step(nodes[to].r, m);
			drain(to);
		}
	}
}

Test(raft, figure8_old_term_entry_on_a_majority_is_not_committed)
{
	for (int i = 0; i < 3; i++)
		start(i, 3, no_cq_batch1);
	elect(0);
	/* entry 2 (term 1) only on the leader */
	drop_to[2] = drop_to[3] = true;
	cr_assert_eq(raft_propose(nodes[0].r, "old", 3, NULL), 0);
	drain(0);
	settle();
	drop_to[2] = drop_to[3] = false;
	/* the leader restarts and wins term 2: log [1:t1 2:t1 3:t2 no-op] */
	raft_free(nodes[0].r);
	nodes[0].applied = 0;
	struct raft_config c = tcfg(&nodes[0], 3);
	no_cq_batch1(&c);
	cr_assert_eq(raft_new(&c, &nodes[0].r), 0);
	tick(0, 25);
	settle_dropping(3); /* entry 2 reaches the followers, the no-op not */
	for (int k = 0; k < 3; k++) {
		tick(0, 2);
		settle_dropping(3);
	}
	cr_assert_eq(raft_role(nodes[0].r), RAFT_LEADER);
	cr_assert_eq(raft_term(nodes[0].r), 2);
	cr_assert_eq(nodes[1].last, 2, "the old entry is on a majority");
	cr_assert_eq(raft_commit(nodes[0].r), 1,
		     "an old-term entry is never committed by counting replicas");
	/* once the no-op is replicated, both commit */
	tick(0, 2);
	settle();
	cr_assert_eq(raft_commit(nodes[0].r), 3);
}

Test(raft, persistence_failure_makes_the_leader_step_down)
{
	start(0, 1, no_cq);
	tick(0, 25);
	cr_assert_eq(raft_role(nodes[0].r), RAFT_LEADER);
	cr_assert_eq(raft_propose(nodes[0].r, "x", 1, NULL), 0);
	struct raft_ready *rd = raft_ready(nodes[0].r);
	cr_assert_eq(rd->n_entries, 1);
	raft_persist_failed(nodes[0].r);
	cr_assert_eq(raft_role(nodes[0].r), RAFT_FOLLOWER);
	cr_assert_eq(raft_commit(nodes[0].r), 1, "the failed entry is not committed");
	cr_assert_eq(raft_propose(nodes[0].r, "y", 1, NULL), -PARLEY_ENOTLEADER);
	drain(0);
}

Test(raft, proposal_errors)
{
	cluster(3);
	elect(0);
	cr_assert_eq(raft_propose(nodes[1].r, "x", 1, NULL), -PARLEY_ENOTLEADER);
	uint8_t *big = calloc(1, RAFT_MAX_ENTRY_BYTES + 1);
	cr_assert_eq(raft_propose(nodes[0].r, big, RAFT_MAX_ENTRY_BYTES + 1, NULL),
		     -PARLEY_ETOOBIG);
	free(big);
	drop_to[2] = drop_to[3] = true;
	int rc = 0, k;
	for (k = 0; k < 100 && rc == 0; k++)
		rc = raft_propose(nodes[0].r, "x", 1, NULL);
	cr_assert_eq(rc, -PARLEY_EFULL, "bounded uncommitted entries");
	cr_assert_eq(k, 65);
	drain(0);
	settle();
}

Test(raft, membership_rules)
{
	struct raft_conf c = {.n = 2, .max_id = 5, .ids = {1, 5},
			      .roles = {RAFT_VOTER, RAFT_LEARNER}};
	struct raft_conf_change cc = {.op = RAFT_CONF_ADD_VOTER, .node = 5};
	cr_assert_eq(raft_conf_apply(&c, &cc), -PARLEY_EINVAL, "a member");
	cc.node = 6;
	cr_assert_eq(raft_conf_apply(&c, &cc), 0);
	cr_assert_eq(c.max_id, 6);
	cc = (struct raft_conf_change){.op = RAFT_CONF_PROMOTE, .node = 1};
	cr_assert_eq(raft_conf_apply(&c, &cc), -PARLEY_EINVAL, "not a learner");
	cc.node = 5;
	cr_assert_eq(raft_conf_apply(&c, &cc), 0);
	cc = (struct raft_conf_change){.op = RAFT_CONF_REMOVE, .node = 5};
	cr_assert_eq(raft_conf_apply(&c, &cc), 0);
	cc.node = 6;
	cr_assert_eq(raft_conf_apply(&c, &cc), 0);
	cc.node = 1;
	cr_assert_eq(raft_conf_apply(&c, &cc), -PARLEY_EINVAL, "last voter stays");
	cc = (struct raft_conf_change){.op = RAFT_CONF_ADD_LEARNER, .node = 5};
	cr_assert_eq(raft_conf_apply(&c, &cc), 0, "a removed member joins again");
	cr_assert_eq(c.max_id, 6, "max_id stays the highest");
	cc = (struct raft_conf_change){.op = RAFT_CONF_REMOVE, .node = 5};
	cr_assert_eq(raft_conf_apply(&c, &cc), 0);
	uint8_t b[RAFT_CONF_CHANGE_BYTES];
	cc = (struct raft_conf_change){.op = RAFT_CONF_ADD_LEARNER, .node = 77};
	cr_assert_eq(raft_conf_change_encode(&cc, b), 0);
	struct raft_conf_change d;
	cr_assert_eq(raft_conf_change_decode(b, sizeof(b), &d), 0);
	cr_assert_eq(d.op, cc.op);
	cr_assert_eq(d.node, 77);
	b[0] = 9;
	cr_assert_eq(raft_conf_change_decode(b, sizeof(b), &d), -PARLEY_EINVAL);
}

Test(raft, one_membership_change_at_a_time_and_learners_do_not_campaign)
{
	cluster(3);
	start(3, 3, NULL); /* id 4: not in the bootstrap conf */
	cr_assert_eq(raft_propose_conf(nodes[1].r,
				       &(struct raft_conf_change){RAFT_CONF_ADD_LEARNER, 4},
				       NULL),
		     -PARLEY_ENOTLEADER);
	tick(0, 25);
	/* before the no-op commits: refused */
	cr_assert_eq(raft_role(nodes[0].r), RAFT_PRECANDIDATE);
	settle();
	cr_assert_eq(raft_role(nodes[0].r), RAFT_LEADER);
	struct raft_conf_change cc = {RAFT_CONF_ADD_LEARNER, 4};
	cr_assert_eq(raft_propose_conf(nodes[0].r, &cc, NULL), 0);
	struct raft_conf_change cc2 = {RAFT_CONF_ADD_LEARNER, 5};
	cr_assert_eq(raft_propose_conf(nodes[0].r, &cc2, NULL), -PARLEY_EAGAIN);
	drain(0);
	settle();
	tick(0, 2);
	settle();
	tick(0, 2);
	settle();
	cr_assert_eq(raft_conf(nodes[0].r)->n, 4);
	cr_assert_eq(raft_conf(nodes[3].r)->n, 4, "the learner caught up");
	cr_assert_eq(nodes[3].last, raft_last_index(nodes[0].r));
	/* a learner never campaigns */
	tick(3, 100);
	cr_assert_eq(raft_role(nodes[3].r), RAFT_FOLLOWER);
	nq = 0;
}

Test(raft, read_index_needs_a_quorum_of_heartbeat_acks)
{
	cluster(3);
	elect(0);
	tick(0, 2);
	settle();
	drop_to[2] = drop_to[3] = true;
	cr_assert_eq(raft_read_index(nodes[0].r, 77), 0);
	drain(0);
	settle();
	cr_assert_eq(nodes[0].reads_ok, 0, "no quorum, no read");
	drop_to[3] = false;
	cr_assert_eq(raft_read_index(nodes[0].r, 78), 0);
	drain(0);
	settle();
	cr_assert_eq(nodes[0].reads_ok, 2, "both confirmed by one ack round");
	cr_assert_eq(nodes[0].last_read_index, raft_commit(nodes[0].r));
	/* a follower forwards to the leader */
	drop_to[2] = false;
	cr_assert_eq(raft_read_index(nodes[2].r, 79), 0);
	drain(2);
	settle();
	cr_assert_eq(nodes[2].reads_ok, 1);
}

/* A member removed while cut off keeps its old configuration, term and
 * leader: its forwarded ReadIndex must be refused, not answered with a
 * commit index it will never reach (the leader sends it no entries any
 * more). Answered, the engine's read waited for that index forever
 * (confirmed reads do not expire): a SEND's existence check on such a
 * stale group of a node with no replica waited until the client's
 * deadline (cluster_test_cluster_replace without the remote check). */
Test(raft, read_index_from_a_removed_member_is_refused)
{
	cluster(3);
	elect(0);
	tick(0, 2);
	settle();
	drop_to[3] = true; /* node 3 misses its removal */
	cr_assert_eq(raft_propose_conf(nodes[0].r,
				       &(struct raft_conf_change){RAFT_CONF_REMOVE, 3},
				       NULL),
		     0);
	drain(0);
	settle();
	tick(0, 2);
	settle();
	cr_assert_eq(raft_conf(nodes[0].r)->n, 2);
	cr_assert_eq(raft_conf(nodes[2].r)->n, 3, "node 3 still a member to itself");
	cr_assert_eq(raft_role(nodes[2].r), RAFT_FOLLOWER);
	cr_assert_lt(nodes[2].last, raft_commit(nodes[0].r));
	drop_to[3] = false;
	cr_assert_eq(raft_read_index(nodes[2].r, 81), 0);
	drain(2);
	settle();
	cr_assert_eq(nodes[2].reads_ok, 0, "confirmed at index %llu (node 3 has %llu)",
		     (unsigned long long)nodes[2].last_read_index,
		     (unsigned long long)nodes[2].last);
	cr_assert_eq(nodes[2].reads_err, 1);
	/* a member's read is still answered */
	cr_assert_eq(raft_read_index(nodes[1].r, 82), 0);
	drain(1);
	settle();
	cr_assert_eq(nodes[1].reads_ok, 1);
}

Test(raft, transfer_sends_timeout_now_and_target_campaigns_at_once)
{
	cluster(3);
	elect(0);
	cr_assert_eq(raft_transfer(nodes[0].r, 1), -PARLEY_EINVAL);
	cr_assert_eq(raft_transfer(nodes[0].r, 3), 0);
	cr_assert_eq(raft_propose(nodes[0].r, "x", 1, NULL), -PARLEY_EAGAIN);
	drain(0);
	settle();
	cr_assert_eq(raft_role(nodes[2].r), RAFT_LEADER);
	cr_assert_eq(raft_role(nodes[0].r), RAFT_FOLLOWER);
	cr_assert_eq(raft_term(nodes[2].r), 2);
}

/* A partition's leader hands itself to partition 0's leader only once
 * that node follows its term (engine/log/part_raft.c): a dead node, or
 * one not heard from since the election, is not current. */
Test(raft, peer_current_only_after_an_ack_of_this_term)
{
	cluster(3);
	drop_to[3] = true; /* node 3 hears nothing */
	elect(0);
	tick(0, 2);
	settle();
	cr_assert(raft_peer_current(nodes[0].r, 2));
	cr_assert(!raft_peer_current(nodes[0].r, 3), "never answered this term");
	cr_assert(!raft_peer_current(nodes[0].r, 9), "unknown id");
	cr_assert(!raft_peer_current(nodes[1].r, 1), "a follower answers false");
	drop_to[3] = false;
	tick(0, 2);
	settle();
	cr_assert(raft_peer_current(nodes[0].r, 3), "caught up with this term");
}

/* pe_raft_node_down's core: a follower told its leader's link is down
 * campaigns after 1 + 2 * rank ticks (node 2: one tick; not a whole
 * timeout), and the other survivor grants the vote although it heard from the old leader
 * a moment ago; a hint about another node, or to the leader, does
 * nothing. */
Test(raft, leader_down_hint_elects_within_a_few_ticks)
{
	cluster(3);
	elect(0);
	tick(0, 2);
	settle();
	raft_leader_down(nodes[1].r, 3); /* not its leader: ignored */
	raft_leader_down(nodes[0].r, 1); /* the leader itself: ignored */
	drop_to[1] = true; /* node 1 is dead from here on (never ticked again) */
	raft_leader_down(nodes[1].r, 1);
	raft_leader_down(nodes[2].r, 1);
	int t = 0;
	while (t < 3 && raft_role(nodes[1].r) != RAFT_LEADER &&
	       raft_role(nodes[2].r) != RAFT_LEADER) {
		tick(1, 1);
		tick(2, 1);
		settle();
		t++;
	}
	cr_assert(raft_role(nodes[1].r) == RAFT_LEADER,
		  "node 2 does not lead %d ticks after the hint (node 3: %d)", t,
		  (int)raft_role(nodes[2].r));
}

Test(raft, check_quorum_makes_an_isolated_leader_step_down)
{
	cluster(3);
	elect(0);
	drop_to[2] = drop_to[3] = true;
	for (int k = 0; k < 30; k++) {
		tick(0, 1);
		settle();
	}
	cr_assert_eq(raft_role(nodes[0].r), RAFT_FOLLOWER);
}

static void quiesce_on(struct raft_config *c)
{
	c->quiesce_ticks = 6;
}

Test(raft, idle_group_quiesces_and_a_proposal_wakes_it)
{
	for (int i = 0; i < 3; i++)
		start(i, 3, quiesce_on);
	elect(0);
	for (int k = 0; k < 20; k++) {
		tick(0, 1);
		tick(1, 1);
		tick(2, 1);
		settle();
	}
	cr_assert(raft_quiesced(nodes[0].r));
	cr_assert(raft_quiesced(nodes[1].r));
	tick(0, 50);
	tick(1, 50);
	cr_assert_eq(nq, 0, "a quiesced group sends nothing");
	cr_assert_eq(raft_role(nodes[1].r), RAFT_FOLLOWER, "and does not time out");
	cr_assert_eq(raft_propose(nodes[0].r, "w", 1, NULL), 0);
	cr_assert(!raft_quiesced(nodes[0].r));
	drain(0);
	settle();
	cr_assert(!raft_quiesced(nodes[1].r));
	tick(0, 2);
	settle();
	cr_assert_eq(nodes[1].applied, raft_commit(nodes[0].r));
	/* node liveness may wake a follower */
	for (int k = 0; k < 20; k++) {
		tick(0, 1);
		tick(1, 1);
		settle();
	}
	cr_assert(raft_quiesced(nodes[1].r));
	raft_unquiesce(nodes[1].r);
	cr_assert(!raft_quiesced(nodes[1].r));
}

Test(raft, snapshot_chunk_out_of_order_is_answered_with_the_resume_offset)
{
	start(1, 3, NULL);
	struct raft_snapshot_meta s = {.index = 50, .term = 3, .size = 40, .csum = 1};
	s.conf.n = 3;
	s.conf.max_id = 3;
	for (int i = 0; i < 3; i++) {
		s.conf.ids[i] = (uint64_t)i + 1;
		s.conf.roles[i] = RAFT_VOTER;
	}
	uint8_t chunk[16] = {0};
	struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 2,
			     .term = 3, .snap = s, .index = 50, .offset = 16,
			     .chunk = chunk, .chunk_len = 16};
	raft_step(nodes[1].r, &m);
	struct raft_ready *rd = raft_ready(nodes[1].r);
	cr_assert(!rd->has_chunk);
	cr_assert_eq(rd->msgs[0].type, RAFT_MSG_SNAPSHOT_RESP);
	cr_assert(rd->msgs[0].flags & RAFT_MSGF_REJECT);
	cr_assert_eq(rd->msgs[0].offset, 0);
	raft_advance(nodes[1].r);
	m.offset = 0;
	raft_step(nodes[1].r, &m);
	rd = raft_ready(nodes[1].r);
	cr_assert(rd->has_chunk);
	cr_assert_eq(rd->chunk_offset, 0);
	cr_assert_eq(rd->msgs[0].offset, 16);
	raft_advance(nodes[1].r);
	m.offset = 16;
	raft_step(nodes[1].r, &m);
	raft_advance(raft_ready(nodes[1].r) ? nodes[1].r : NULL);
	m.offset = 32;
	m.chunk_len = 8;
	m.flags = RAFT_MSGF_LAST;
	raft_step(nodes[1].r, &m);
	rd = raft_ready(nodes[1].r);
	cr_assert(rd->has_install);
	cr_assert_eq(rd->install.index, 50);
	cr_assert_eq(rd->n_committed, 0);
	raft_advance(nodes[1].r);
	cr_assert_eq(raft_commit(nodes[1].r), 50);
	cr_assert_eq(raft_applied(nodes[1].r), 50);
	rd = raft_ready(nodes[1].r);
	cr_assert_eq(rd->msgs[0].type, RAFT_MSG_APPEND_RESP);
	cr_assert_eq(rd->msgs[0].index, 50);
	raft_advance(nodes[1].r);
}

Test(raft, step_rejects_misaddressed_and_bad_messages)
{
	start(0, 3, NULL);
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 2, .to = 9, .term = 1};
	cr_assert_eq(raft_step(nodes[0].r, &m), -PARLEY_EINVAL);
	m.to = 1;
	m.type = 99;
	cr_assert_eq(raft_step(nodes[0].r, &m), -PARLEY_EINVAL);
	m.type = RAFT_MSG_APPEND;
	m.n_entries = RAFT_MAX_MSG_ENTRIES + 1;
	cr_assert_eq(raft_step(nodes[0].r, &m), -PARLEY_EINVAL);
}

/* A follower restarted on a snapshot whose term its storage no longer
 * knows (0: the engine's history at a flushed index whose WAL record was
 * released, or a snapshot it installed) still takes the leader's appends
 * at that index: at its commit index the logs agree by leader
 * completeness. Without that it refused them forever (its term 0 against
 * the leader's) and the leader's snapshot fallback was below its commit. */
Test(raft, follower_on_a_snapshot_of_unknown_term_takes_appends_at_its_commit)
{
	cluster(3);
	elect(0);
	for (int k = 0; k < 5; k++)
		cr_assert_eq(raft_propose(nodes[0].r, "a", 1, NULL), 0);
	drain(0);
	settle();
	tick(0, 2);
	settle();
	cr_assert_eq(raft_commit(nodes[2].r), 6);
	/* node 3 restarts with everything in a snapshot of unknown term */
	raft_free(nodes[2].r);
	nodes[2].snap = (struct raft_snapshot_meta){.index = nodes[2].last};
	nodes[2].snap.conf = tcfg(&nodes[2], 3).bootstrap;
	start(2, 3, NULL);
	cr_assert_eq(raft_commit(nodes[2].r), 6);
	for (int k = 0; k < 3; k++)
		cr_assert_eq(raft_propose(nodes[0].r, "b", 1, NULL), 0);
	drain(0);
	for (int r = 0; r < 10; r++) {
		settle();
		tick(0, 2);
	}
	settle();
	cr_assert_eq(raft_last_index(nodes[2].r), 9);
	cr_assert_eq(raft_commit(nodes[2].r), 9);
	cr_assert_eq(nodes[2].applied, 9);
	cr_assert_eq(nodes[2].n_installs, 0);
}

/* Contract 3a: a leader's APPENDs of its current term are offered for
 * sending before the ready is durable (ready.n_early, first in msgs);
 * followers' answers, pre-votes and votes never are; the leader counts
 * its own copy only after raft_advance, so the entry commits only once a
 * follower's durable answer arrives after that. */
/* Persists a ready's entries and hard state into the harness's disk. */
static void store(struct tnode *n, const struct raft_ready *rd)
{
	for (uint32_t k = 0; k < rd->n_entries; k++) {
		const struct raft_entry *e = &rd->entries[k];
		free(n->bufs[e->index]);
		n->bufs[e->index] = malloc(e->len + 1);
		memcpy(n->bufs[e->index], e->data, e->len);
		n->ents[e->index] = *e;
		n->ents[e->index].data = n->bufs[e->index];
		n->last = e->index;
	}
	if (rd->hs_changed)
		n->hs = rd->hs;
}

Test(raft, only_a_leaders_appends_of_its_term_leave_before_persist)
{
	cluster(3);
	elect(0);
	tick(0, 2);
	settle();
	struct tnode *l = &nodes[0];
	uint64_t idx, term = raft_term(l->r);
	cr_assert_eq(raft_propose(l->r, "x", 1, &idx), 0);
	struct raft_ready *rd = raft_ready(l->r);
	cr_assert_eq(rd->n_entries, 1);
	cr_assert_eq(rd->n_early, 2, "both APPENDs may leave before the write");
	for (uint32_t k = 0; k < rd->n_early; k++) {
		cr_assert_eq(rd->msgs[k].type, RAFT_MSG_APPEND);
		cr_assert_gt(rd->msgs[k].n_entries, 0);
		for (uint32_t j = 0; j < rd->msgs[k].n_entries; j++)
			cr_assert_eq(rd->msgs[k].entries[j].term, term);
	}
	/* the followers store and answer while the leader has not persisted */
	for (uint32_t k = 0; k < rd->n_early; k++)
		enqueue(&rd->msgs[k]);
	int before = nq;
	for (int i = 0; i < before; i++) {
		q[i].live = false;
		int to = (int)q[i].m.to - 1;
		raft_step(nodes[to].r, &q[i].m);
		struct raft_ready *fr = raft_ready(nodes[to].r);
		cr_assert_gt(fr->n_msgs, 0);
		cr_assert_eq(fr->n_early, 0, "a follower's answer claims "
			     "durability: never before its write");
		store(&nodes[to], fr);
		for (uint32_t k = 0; k < fr->n_msgs; k++)
			enqueue(&fr->msgs[k]); /* its answer, after its write */
		raft_advance(nodes[to].r);
	}
	/* the leader's own write completes now; its answers wait (no
	 * raft_* call between ready and advance) */
	store(l, rd);
	cr_assert_lt(raft_commit(l->r), idx);
	raft_advance(l->r);
	cr_assert_lt(raft_commit(l->r), idx, "its own copy alone is no quorum");
	for (int i = before; i < nq; i++) {
		q[i].live = false;
		cr_assert_eq(q[i].m.type, RAFT_MSG_APPEND_RESP);
		raft_step(l->r, &q[i].m);
	}
	nq = 0;
	cr_assert_eq(raft_commit(l->r), idx);
	drain(0);
	cr_assert_eq(l->applied, idx);
	/* a pre-candidate's pre-votes never leave early */
	struct tnode *c = &nodes[2];
	for (int k = 0; k < 60 && raft_role(c->r) == RAFT_FOLLOWER; k++)
		raft_tick(c->r);
	if (raft_role(c->r) != RAFT_FOLLOWER) {
		struct raft_ready *cr = raft_ready(c->r);
		cr_assert_gt(cr->n_msgs, 0);
		cr_assert_eq(cr->n_early, 0);
		raft_advance(c->r);
	}
}

/* ---- lost entries (raft_set_lost) --------------------------------------- */

static void restart_lost(int i, uint64_t last, uint32_t voters)
{
	raft_free(nodes[i].r);
	nodes[i].last = last;
	nodes[i].applied = nodes[i].snap.index;
	struct raft_config c = tcfg(&nodes[i], voters);
	cr_assert_eq(raft_new(&c, &nodes[i].r), 0);
	raft_set_lost(nodes[i].r);
	cr_assert(raft_lost(nodes[i].r));
}

/* No queued message is a (pre-)vote request from node id `from`. */
static bool asked_votes(uint64_t from)
{
	for (int k = 0; k < nq; k++)
		if (q[k].live && q[k].m.from == from &&
		    (q[k].m.type == RAFT_MSG_VOTE ||
		     q[k].m.type == RAFT_MSG_PREVOTE))
			return true;
	return false;
}

/* Entries 5..7 were committed by nodes 1 and 3 while node 2 was cut off;
 * node 3 then loses them (its log cut at 4) and node 1 dies. Node 2 must
 * not be elected with node 3's vote (it lacks committed entries), nor node
 * 3 with node 2's. Without raft_set_lost node 3's shorter log is as up to
 * date as node 2's and one of them is elected (checked first). Node 1 returns, is elected, lowers its
 * match for node 3 (which answers RAFT_MSGF_LOST) and repairs it; once node
 * 3 holds the leader's whole log it votes again. */
Test(raft, lost_entries_node_neither_votes_nor_campaigns_until_repaired)
{
	for (int lost = 0; lost < 2; lost++) {
		if (lost) {
			teardown();
			setup();
		}
		cluster(3);
		elect(0);
		drop_to[2] = true;
		for (int k = 0; k < 3; k++)
			cr_assert_eq(raft_propose(nodes[0].r, "x", 1, NULL), 0);
		drain(0);
		settle();
		tick(0, 2);
		settle();
		cr_assert_eq(raft_commit(nodes[0].r), 4);
		cr_assert_eq(nodes[2].last, 4);
		cr_assert_eq(nodes[1].last, 1);
		/* node 3 loses 2..4; node 1 dies */
		if (lost)
			restart_lost(2, 1, 3);
		else {
			raft_free(nodes[2].r);
			nodes[2].last = 1;
			nodes[2].applied = 0;
			struct raft_config c = tcfg(&nodes[2], 3);
			cr_assert_eq(raft_new(&c, &nodes[2].r), 0);
		}
		raft_free(nodes[0].r);
		nodes[0].r = NULL;
		drop_to[2] = false;
		nq = 0;
		for (int t = 0; t < 60; t++) {
			tick(1, 1);
			tick(2, 1);
			if (lost)
				cr_assert(!asked_votes(3), "a lost node campaigns");
			settle();
		}
		if (!lost) {
			/* the hazard: a leader without the committed
			 * entries 2..4 (node 2, or node 3 by node 2's vote) */
			cr_assert(raft_role(nodes[1].r) == RAFT_LEADER ||
				  raft_role(nodes[2].r) == RAFT_LEADER);
			continue;
		}
		cr_assert_neq(raft_role(nodes[1].r), RAFT_LEADER);
		cr_assert_neq(raft_role(nodes[2].r), RAFT_LEADER);
		cr_assert_eq(raft_elections(nodes[2].r), 0);
		/* TimeoutNow does nothing either */
		struct raft_msg tn = {.type = RAFT_MSG_TIMEOUT_NOW, .from = 2,
				      .to = 3, .term = raft_term(nodes[2].r)};
		raft_step(nodes[2].r, &tn);
		drain(2);
		cr_assert_eq(raft_elections(nodes[2].r), 0);
		/* node 1 returns with its log: elected, it repairs node 3 */
		nodes[0].applied = 0;
		start(0, 3, NULL);
		for (int t = 0; t < 80 && raft_role(nodes[0].r) != RAFT_LEADER; t++) {
			tick(0, 1);
			tick(1, 1);
			settle();
		}
		cr_assert_eq(raft_role(nodes[0].r), RAFT_LEADER);
		for (int t = 0; t < 10; t++) {
			tick(0, 2);
			settle();
		}
		cr_assert(!raft_lost(nodes[2].r), "repaired: votes again");
		cr_assert_eq(nodes[2].last, raft_last_index(nodes[0].r));
		for (uint64_t i = 2; i <= 4; i++)
			cr_assert_eq(nodes[2].ents[i].len, 1, "entry %llu",
				     (unsigned long long)i);
		struct raft_member_progress mp[RAFT_MAX_MEMBERS];
		uint32_t n = raft_progress_get(nodes[0].r, mp, RAFT_MAX_MEMBERS);
		for (uint32_t k = 0; k < n; k++)
			cr_assert_eq(mp[k].match, raft_last_index(nodes[0].r));
		/* an up-to-date candidate gets its vote again */
		struct raft_msg v = {.type = RAFT_MSG_VOTE, .from = 2, .to = 3,
				     .term = raft_term(nodes[2].r) + 1,
				     .index = nodes[2].last,
				     .log_term = raft_term_at(nodes[2].r,
							      nodes[2].last),
				     .flags = RAFT_MSGF_TRANSFER};
		raft_step(nodes[2].r, &v);
		struct raft_ready *rd = raft_ready(nodes[2].r);
		cr_assert_geq(rd->n_msgs, 1);
		cr_assert(!(rd->msgs[rd->n_msgs - 1].flags & RAFT_MSGF_REJECT));
		raft_advance(nodes[2].r);
	}
}

/* The leader stays up while a follower loses the end of its log: its match
 * for that follower says 4, the follower holds 1. Its answers (LOST) make
 * the leader lower the match and send the entries again (a leader never
 * lowers a match otherwise: without the flag it would probe at 5 for
 * ever); a heartbeat then tells the follower where the log ends, and it
 * votes again. Until then the leader does not quiesce. */
Test(raft, leader_lowers_its_match_for_a_follower_that_lost_entries)
{
	cluster(3);
	elect(0);
	for (int k = 0; k < 3; k++)
		cr_assert_eq(raft_propose(nodes[0].r, "y", 1, NULL), 0);
	drain(0);
	settle();
	tick(0, 2);
	settle();
	cr_assert_eq(nodes[2].last, 4);
	restart_lost(2, 1, 3);
	for (int t = 0; t < 6; t++) {
		tick(0, 2);
		settle();
	}
	cr_assert_eq(nodes[2].last, 4);
	cr_assert(!raft_lost(nodes[2].r));
	for (uint64_t i = 2; i <= 4; i++)
		cr_assert_eq(nodes[2].ents[i].len, 1);
	cr_assert_eq(raft_commit(nodes[2].r), 4);
}

/* Appends stop with an APPEND lost to a follower: the next heartbeat's
 * answer tells the leader it is behind, and it catches up without timing
 * out. */
Test(raft, a_lost_append_is_recovered_by_the_next_heartbeat)
{
	cluster(3);
	elect(0);
	uint64_t term = raft_term(nodes[0].r);
	drop_to[2] = true;
	cr_assert_eq(raft_propose(nodes[0].r, "x", 1, NULL), 0);
	drain(0);
	settle(); /* node 2 loses it; node 3 commits it with the leader */
	drop_to[2] = false;
	for (int k = 0; k < 8; k++) {
		for (int i = 0; i < 3; i++)
			tick(i, 1);
		settle();
	}
	cr_assert_eq(nodes[1].applied, raft_commit(nodes[0].r));
	cr_assert_eq(raft_term(nodes[1].r), term);
}

/* Delivers every queued message addressed to node index `i`; with `ready`
 * the node's readies are taken after each (its answers queue), without
 * it the node only steps them. */
static void deliver_to(int i, bool ready)
{
	int n = nq;
	for (int k = 0; k < n; k++) {
		if (!q[k].live || (int)q[k].m.to - 1 != i)
			continue;
		q[k].live = false;
		raft_step(nodes[i].r, &q[k].m);
		if (ready)
			drain(i);
	}
}

/* Queued APPENDs from the leader (id 1) to `to`. */
static int queued_appends(uint64_t to)
{
	int n = 0;
	for (int i = 0; i < nq; i++)
		n += q[i].live && q[i].m.type == RAFT_MSG_APPEND &&
		     q[i].m.from == 1 && q[i].m.to == to;
	return n;
}

/* A commit advance reaches the followers in the ready that follows it,
 * without a tick (a commit-only APPEND); when a proposal's APPENDs of
 * that same ready carry the new commit index, no commit-only APPEND goes
 * with them. A leader that never told the followers (the APPEND left
 * out, or left for a later heartbeat) fails the first part. */
Test(raft, commit_advance_reaches_followers_once_in_the_next_ready)
{
	cluster(3);
	elect(0);
	settle();
	cr_assert_eq(raft_propose(nodes[0].r, "a", 1, NULL), 0);
	drain(0);
	settle(); /* no tick */
	for (int i = 1; i < 3; i++)
		cr_assert_eq(raft_commit(nodes[i].r), raft_commit(nodes[0].r),
			     "node %d: commit %llu, leader's %llu", i,
			     (unsigned long long)raft_commit(nodes[i].r),
			     (unsigned long long)raft_commit(nodes[0].r));
	/* the followers answer "b"; the leader steps the answers (its commit
	 * advances) and takes "c" before its next ready */
	cr_assert_eq(raft_propose(nodes[0].r, "b", 1, NULL), 0);
	drain(0);
	deliver_to(1, true);
	deliver_to(2, true);
	uint64_t c0 = raft_commit(nodes[0].r);
	deliver_to(0, false);
	cr_assert_gt(raft_commit(nodes[0].r), c0, "the answers advance the commit");
	uint64_t skipped = raft_commit_sends_skipped(nodes[0].r);
	cr_assert_eq(raft_propose(nodes[0].r, "c", 1, NULL), 0);
	drain(0);
	cr_assert_eq(raft_commit_sends_skipped(nodes[0].r), skipped + 2);
	for (uint64_t to = 2; to <= 3; to++)
		cr_assert_eq(queued_appends(to), 1, "to %llu: %d APPENDs",
			     (unsigned long long)to, queued_appends(to));
	settle();
	for (int i = 1; i < 3; i++)
		cr_assert_eq(nodes[i].applied, nodes[0].applied, "node %d", i);
}

/* Queued messages of `type` from node id `from` (flags: all of them set). */
static int queued_from(uint64_t from, uint8_t type, uint32_t flags)
{
	int n = 0;
	for (int i = 0; i < nq; i++)
		n += q[i].live && q[i].m.type == type && q[i].m.from == from &&
		     (q[i].m.flags & flags) == flags;
	return n;
}

/* The commit-only APPENDs of a commit advance carry RAFT_MSGF_NOACK and
 * the followers that accept them do not answer; one whose flag a
 * transport cleared (a node built before it) is answered as before. Old
 * code: the APPENDs carry no flag and both followers answer. */
Test(raft, an_accepted_commit_only_append_is_not_answered)
{
	cluster(3);
	elect(0);
	settle();
	uint64_t sent0 = raft_noack_sent(nodes[0].r);
	uint64_t un2 = raft_noack_unanswered(nodes[1].r);
	uint64_t un3 = raft_noack_unanswered(nodes[2].r);
	cr_assert_eq(raft_propose(nodes[0].r, "a", 1, NULL), 0);
	drain(0);
	deliver_to(1, true);
	deliver_to(2, true);
	uint64_t c0 = raft_commit(nodes[0].r);
	deliver_to(0, false);
	cr_assert_gt(raft_commit(nodes[0].r), c0);
	drain(0); /* the commit-only APPENDs */
	for (uint64_t to = 2; to <= 3; to++)
		cr_assert_eq(queued_appends(to), 1);
	cr_assert_eq(queued_from(1, RAFT_MSG_APPEND, RAFT_MSGF_NOACK), 2);
	cr_assert_eq(raft_noack_sent(nodes[0].r), sent0 + 2);
	/* node 3's copy loses its flag on the way (an older transport) */
	for (int k = 0; k < nq; k++)
		if (q[k].live && q[k].m.to == 3)
			q[k].m.flags &= ~RAFT_MSGF_NOACK;
	deliver_to(1, true);
	deliver_to(2, true);
	for (int i = 1; i < 3; i++)
		cr_assert_eq(raft_commit(nodes[i].r), raft_commit(nodes[0].r),
			     "node %d learnt the commit", i);
	cr_assert_eq(queued_from(2, RAFT_MSG_APPEND_RESP, 0), 0,
		     "node 2 answered a NOACK APPEND");
	cr_assert_eq(raft_noack_unanswered(nodes[1].r), un2 + 1);
	cr_assert_eq(queued_from(3, RAFT_MSG_APPEND_RESP, 0), 1,
		     "node 3 (no flag) answers as before");
	cr_assert_eq(raft_noack_unanswered(nodes[2].r), un3);
	settle();
	for (int i = 1; i < 3; i++)
		cr_assert_eq(nodes[i].applied, nodes[0].applied, "node %d", i);
}

/* A follower that lost the APPEND before a NOACK commit-only APPEND
 * refuses it and answers (REJECT): the leader probes and the follower
 * catches up at once, without waiting for a heartbeat. */
Test(raft, a_refused_commit_only_append_is_answered)
{
	cluster(3);
	elect(0);
	settle();
	uint64_t un2 = raft_noack_unanswered(nodes[1].r);
	cr_assert_eq(raft_propose(nodes[0].r, "a", 1, NULL), 0);
	drain(0);
	for (int k = 0; k < nq; k++) /* lost on its way to node 2 */
		if (q[k].live && q[k].m.to == 2)
			q[k].live = false;
	deliver_to(2, true);
	uint64_t c0 = raft_commit(nodes[0].r);
	deliver_to(0, false);
	cr_assert_gt(raft_commit(nodes[0].r), c0, "node 3 and the leader commit");
	drain(0);
	cr_assert_eq(queued_from(1, RAFT_MSG_APPEND, RAFT_MSGF_NOACK), 2);
	deliver_to(1, true);
	cr_assert_eq(queued_from(2, RAFT_MSG_APPEND_RESP, RAFT_MSGF_REJECT), 1,
		     "node 2 refuses and answers");
	cr_assert_eq(raft_noack_unanswered(nodes[1].r), un2);
	settle(); /* no tick */
	cr_assert_eq(nodes[1].applied, nodes[0].applied);
	cr_assert_eq(raft_commit(nodes[1].r), raft_commit(nodes[0].r));
}

static void stable_data(struct raft_config *c)
{
	c->storage.stable_data = true;
}

/* raft_storage.stable_data: committed entries read from storage are
 * handed out in the ready as the storage's own bytes (no copy); without
 * it, as copies. Either way they are the committed bytes. */
Test(raft, committed_entries_are_lent_from_stable_storage)
{
	for (int lend = 0; lend < 2; lend++) {
		if (lend) {
			teardown();
			setup();
		}
		for (int i = 0; i < 3; i++)
			start(i, 3, lend ? stable_data : NULL);
		elect(0);
		settle();
		cr_assert_eq(raft_propose(nodes[0].r, "lend", 4, NULL), 0);
		drain(0);
		deliver_to(1, true);
		deliver_to(2, true);
		deliver_to(0, false); /* the leader commits the entry */
		struct raft_ready *rd = raft_ready(nodes[0].r);
		cr_assert_eq(rd->n_committed, 1);
		const struct raft_entry *e = &rd->committed[0];
		cr_assert_eq(e->len, 4);
		cr_assert(!memcmp(e->data, "lend", 4));
		cr_assert(raft_entry_ok(e));
		const uint8_t *stored = nodes[0].bufs[e->index];
		if (lend)
			cr_assert_eq(e->data, stored, "lent, not copied");
		else
			cr_assert_neq(e->data, stored, "copied");
		nodes[0].applied = e->index;
		for (uint32_t k = 0; k < rd->n_msgs; k++)
			enqueue(&rd->msgs[k]);
		raft_advance(nodes[0].r);
		settle();
		for (int i = 1; i < 3; i++)
			cr_assert_eq(nodes[i].applied, nodes[0].applied);
	}
}

/* A restarted follower learns its commit index only from its leader (the
 * engine does not store it), so it finds a damaged entry only when it
 * applies, after it answered the message that told it the commit. When
 * that message was the leader's QUIESCE heartbeat, both sides slept: the
 * answer carried no RAFT_MSGF_DAMAGED (the damage was not known yet), the
 * leader stayed quiesced and the follower, quiesced too, never asked
 * again; the entry stayed damaged for good. The follower must wake when it
 * finds the damage and tell its leader, again while the leader is silent. */
Test(raft, follower_finding_damage_after_a_quiesce_heartbeat_still_gets_it_repaired)
{
	for (int i = 0; i < 3; i++)
		start(i, 3, quiesce_on);
	elect(0);
	for (int k = 0; k < 3; k++)
		cr_assert_eq(raft_propose(nodes[0].r, "idle", 4, NULL), 0);
	drain(0);
	settle();
	tick(0, 2);
	settle();
	cr_assert_eq(nodes[2].applied, 4);
	/* tick until the leader's QUIESCE heartbeat is on its way */
	bool queued = false;
	for (int k = 0; k < 40 && !queued; k++) {
		tick(0, 1);
		tick(1, 1);
		tick(2, 1);
		for (int j = 0; j < nq && !queued; j++)
			queued = q[j].live && q[j].m.to == 3 &&
				 q[j].m.type == RAFT_MSG_HEARTBEAT &&
				 (q[j].m.flags & RAFT_MSGF_QUIESCE);
		if (!queued)
			settle();
	}
	cr_assert(queued, "the leader quiesces");
	/* node 3 restarts with entry 2 damaged; its commit is not stored */
	nodes[2].bufs[2][0] ^= 0x10;
	raft_free(nodes[2].r);
	nodes[2].applied = 0;
	nodes[2].hs.commit = 0;
	struct raft_config c = tcfg(&nodes[2], 3);
	quiesce_on(&c);
	cr_assert_eq(raft_new(&c, &nodes[2].r), 0);
	drain(2);
	cr_assert_eq(nodes[2].applied, 0);
	/* the QUIESCE heartbeat reaches the restarted node first */
	for (int j = 0; j < nq; j++)
		if (q[j].live && q[j].m.to == 3) {
			q[j].live = false;
			raft_step(nodes[2].r, &q[j].m);
			drain(2);
			break;
		}
	cr_assert(raft_damaged(nodes[2].r, NULL), "found on apply");
	/* it tells the leader at once; that notice is lost here, so the
	 * repair must come from its retry */
	bool told = false;
	for (int j = 0; j < nq; j++)
		if (q[j].live && q[j].m.from == 3 &&
		    (q[j].m.flags & RAFT_MSGF_DAMAGED)) {
			told = true;
			q[j].live = false;
		}
	cr_assert(told, "the damage is told unasked");
	settle();
	cr_assert(raft_damaged(nodes[2].r, NULL));
	for (int k = 0; k < 60; k++) {
		tick(0, 1);
		tick(1, 1);
		tick(2, 1);
		settle();
	}
	cr_assert(!raft_damaged(nodes[2].r, NULL), "repaired from the leader");
	cr_assert(raft_entry_ok(&nodes[2].ents[2]));
	cr_assert_eq(nodes[2].applied, raft_commit(nodes[0].r));
	cr_assert_eq(raft_leader(nodes[2].r), 1, "no election on the way");
}

/* The proposals a leader takes between two readies leave as one APPEND per
 * follower carrying all of them (and the commit index), not one APPEND per
 * proposal: before, each proposal broadcast at once, so five proposals made
 * five APPENDs per follower (four with max_inflight 4, the fifth waiting
 * for an answer). An answer that opens a follower's window likewise sends
 * at the ready, together with that round's proposals. */
static void inflight4(struct raft_config *c)
{
	c->max_inflight = 4;
	c->max_batch_entries = 64;
}

Test(raft, proposals_of_one_round_leave_as_one_append_per_follower)
{
	for (int i = 0; i < 3; i++)
		start(i, 3, inflight4);
	elect(0);
	settle();
	static const char five[] = "abcde";
	for (int k = 0; k < 5; k++)
		cr_assert_eq(raft_propose(nodes[0].r, &five[k], 1, NULL), 0);
	drain(0);
	for (uint64_t to = 2; to <= 3; to++) {
		cr_assert_eq(queued_appends(to), 1, "to %llu: %d APPENDs",
			     (unsigned long long)to, queued_appends(to));
		for (int i = 0; i < nq; i++)
			if (q[i].live && q[i].m.type == RAFT_MSG_APPEND &&
			    q[i].m.to == to)
				cr_assert_eq(q[i].m.n_entries, 5);
	}
	/* the followers answer; the leader steps the answers, proposes two
	 * more, and its next ready sends each follower one APPEND with both */
	deliver_to(1, true);
	deliver_to(2, true);
	deliver_to(0, false);
	cr_assert_eq(raft_propose(nodes[0].r, "f", 1, NULL), 0);
	cr_assert_eq(raft_propose(nodes[0].r, "g", 1, NULL), 0);
	drain(0);
	for (uint64_t to = 2; to <= 3; to++) {
		cr_assert_eq(queued_appends(to), 1, "to %llu: %d APPENDs",
			     (unsigned long long)to, queued_appends(to));
		for (int i = 0; i < nq; i++)
			if (q[i].live && q[i].m.type == RAFT_MSG_APPEND &&
			    q[i].m.to == to)
				cr_assert_eq(q[i].m.n_entries, 2);
	}
	settle();
	for (int i = 1; i < 3; i++) {
		cr_assert_eq(nodes[i].applied, nodes[0].applied, "node %d", i);
		cr_assert_eq(nodes[i].last, nodes[0].last);
		for (uint64_t x = 1; x <= nodes[0].last; x++)
			cr_assert(nodes[i].ents[x].len == nodes[0].ents[x].len &&
				  !memcmp(nodes[i].ents[x].data, nodes[0].ents[x].data,
					  nodes[0].ents[x].len));
	}
}

/* ---- conf entries are never dropped (more than 8 pending) --------------- */

/* A conf entry at `index` of term 1 into buf (RAFT_CONF_CHANGE_BYTES). */
static struct raft_entry conf_ent(uint64_t index, uint8_t op, uint64_t node,
				  uint8_t *buf)
{
	struct raft_conf_change cc = {.op = op, .node = node};
	cr_assert_eq(raft_conf_change_encode(&cc, buf), 0);
	struct raft_entry e = {.term = 1, .index = index,
			       .len = RAFT_CONF_CHANGE_BYTES,
			       .type = RAFT_ENTRY_CONF, .data = buf};
	e.csum = raft_entry_csum(e.term, e.index, e.type, e.data, e.len);
	return e;
}

/* Eleven changes of {1,2,3}, each one applying: the members of a group
 * re-placed twice while node 2 stayed (cluster_test_cluster_replace's
 * partition 4 had 12 before a restarted node learned their commit). */
static const struct raft_conf_change conf_hist[] = {
	{RAFT_CONF_ADD_LEARNER, 4}, {RAFT_CONF_PROMOTE, 4},
	{RAFT_CONF_REMOVE, 1},      {RAFT_CONF_ADD_LEARNER, 5},
	{RAFT_CONF_PROMOTE, 5},     {RAFT_CONF_REMOVE, 3},
	{RAFT_CONF_ADD_LEARNER, 1}, {RAFT_CONF_PROMOTE, 1},
	{RAFT_CONF_REMOVE, 5},      {RAFT_CONF_ADD_LEARNER, 3},
	{RAFT_CONF_PROMOTE, 3},
};
#define CONF_HIST_N (sizeof(conf_hist) / sizeof(conf_hist[0]))

/* {1,2,3} after conf_hist[0..n): the expected configuration. */
static struct raft_conf conf_after(uint32_t n)
{
	struct raft_conf c = {.n = 3, .max_id = 3, .ids = {1, 2, 3},
			      .roles = {RAFT_VOTER, RAFT_VOTER, RAFT_VOTER}};
	for (uint32_t k = 0; k < n; k++)
		cr_assert_eq(raft_conf_apply(&c, &conf_hist[k]), 0);
	return c;
}

static void conf_assert_eq(const struct raft_conf *a, const struct raft_conf *b)
{
	cr_assert_eq(a->n, b->n, "members %u, expected %u", a->n, b->n);
	for (uint32_t k = 0; k < b->n; k++) {
		int s = raft_conf_find(a, b->ids[k]);
		cr_assert_geq(s, 0, "node %llu missing",
			      (unsigned long long)b->ids[k]);
		cr_assert_eq(a->roles[s], b->roles[k], "node %llu's role",
			     (unsigned long long)b->ids[k]);
	}
}

/* An APPEND of leader 1 in term 1 after (index, term 1 or 0). */
static void append_to(int i, uint64_t index, const struct raft_entry *e,
		      uint32_t n, uint64_t commit)
{
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1,
			     .to = nodes[i].id, .term = 1, .index = index,
			     .log_term = index ? 1 : 0, .commit = commit,
			     .entries = e, .n_entries = n};
	raft_step(nodes[i].r, &m);
	drain(i);
	nq = 0;
}

Test(raft, a_follower_applies_every_conf_entry_of_one_append)
{
	cluster(3);
	uint8_t b[CONF_HIST_N][RAFT_CONF_CHANGE_BYTES];
	struct raft_entry e[CONF_HIST_N];
	for (uint32_t k = 0; k < CONF_HIST_N; k++)
		e[k] = conf_ent(k + 1, conf_hist[k].op, conf_hist[k].node,
				b[k]);
	/* every entry before its commit is known, then the commit */
	append_to(1, 0, e, CONF_HIST_N, 0);
	cr_assert_eq(nodes[1].last, CONF_HIST_N);
	struct raft_conf boot = conf_after(0);
	conf_assert_eq(raft_conf(nodes[1].r), &boot);
	append_to(1, CONF_HIST_N, NULL, 0, CONF_HIST_N);
	cr_assert_eq(raft_commit(nodes[1].r), CONF_HIST_N);
	struct raft_conf want = conf_after(CONF_HIST_N);
	conf_assert_eq(raft_conf(nodes[1].r), &want);
}

Test(raft, a_restarted_node_applies_every_conf_entry_of_its_log)
{
	cluster(3);
	uint8_t b[CONF_HIST_N][RAFT_CONF_CHANGE_BYTES];
	struct raft_entry e[CONF_HIST_N];
	for (uint32_t k = 0; k < CONF_HIST_N; k++)
		e[k] = conf_ent(k + 1, conf_hist[k].op, conf_hist[k].node,
				b[k]);
	/* node 2 held six of them (commit unknown) when it stopped */
	append_to(1, 0, e, 6, 0);
	cr_assert_eq(nodes[1].last, 6);
	raft_free(nodes[1].r);
	nodes[1].r = NULL;
	start(1, 3, NULL);
	struct raft_conf boot = conf_after(0);
	conf_assert_eq(raft_conf(nodes[1].r), &boot);
	cr_assert_eq(raft_conf_index(nodes[1].r), 0, "none committed yet");
	/* back: the rest, then their commit (the replay's six pending ones
	 * and the APPEND's five are more than 8) */
	append_to(1, 6, e + 6, CONF_HIST_N - 6, 0);
	cr_assert_eq(nodes[1].last, CONF_HIST_N);
	append_to(1, CONF_HIST_N, NULL, 0, CONF_HIST_N);
	struct raft_conf want = conf_after(CONF_HIST_N);
	conf_assert_eq(raft_conf(nodes[1].r), &want);
	cr_assert_eq(raft_conf_index(nodes[1].r), CONF_HIST_N);
	/* and at a restart that knows their commit (a stored one) */
	nodes[1].hs.commit = CONF_HIST_N;
	raft_free(nodes[1].r);
	nodes[1].r = NULL;
	start(1, 3, NULL);
	cr_assert_eq(raft_commit(nodes[1].r), CONF_HIST_N);
	conf_assert_eq(raft_conf(nodes[1].r), &want);
	cr_assert_eq(raft_conf_index(nodes[1].r), CONF_HIST_N);
}

/* A conf entry whose payload is damaged in the log at a restart takes
 * effect once the leader repaired it, and the changes after it wait for
 * it (in order). It was skipped at raft_new, and the repair did not bring
 * it back: that replica never took the change. */
Test(raft, a_damaged_conf_entry_takes_effect_once_repaired)
{
	cluster(3);
	uint8_t b[3][RAFT_CONF_CHANGE_BYTES];
	struct raft_entry e[3];
	e[0] = conf_ent(1, RAFT_CONF_ADD_LEARNER, 4, b[0]);
	e[1] = conf_ent(2, RAFT_CONF_PROMOTE, 4, b[1]);
	e[2] = conf_ent(3, RAFT_CONF_ADD_LEARNER, 5, b[2]);
	append_to(1, 0, e, 3, 0);
	cr_assert_eq(nodes[1].last, 3);
	nodes[1].bufs[2][1] ^= 0x40; /* entry 2's payload rots */
	raft_free(nodes[1].r);
	nodes[1].r = NULL;
	start(1, 3, NULL);
	append_to(1, 3, NULL, 0, 3);
	cr_assert_eq(raft_commit(nodes[1].r), 3);
	/* committed, not repaired: 1 took effect, 2 and 3 wait */
	const struct raft_conf *c = raft_conf(nodes[1].r);
	int s4 = raft_conf_find(c, 4);
	cr_assert(s4 >= 0 && c->roles[s4] == RAFT_LEARNER);
	cr_assert_lt(raft_conf_find(c, 5), 0, "3 waits for 2");
	cr_assert_eq(raft_conf_index(nodes[1].r), 1);
	/* the leader resends entry 2: repaired in place */
	append_to(1, 1, e + 1, 2, 3);
	cr_assert(raft_entry_ok(&nodes[1].ents[2]), "repaired");
	c = raft_conf(nodes[1].r);
	s4 = raft_conf_find(c, 4);
	int s5 = raft_conf_find(c, 5);
	cr_assert(s4 >= 0 && s5 >= 0, "4 at %d, 5 at %d", s4, s5);
	cr_assert_eq(c->roles[s4], RAFT_VOTER, "node 4 promoted");
	cr_assert_eq(c->roles[s5], RAFT_LEARNER);
	cr_assert_eq(raft_conf_index(nodes[1].r), 3);
}

/* The same damaged conf entry replaced by a snapshot that keeps the log
 * after it (install_keeps_tail): the snapshot's configuration (as of its
 * index) takes the waiting change's place, and the change after it
 * follows at once (it is committed). */
Test(raft, a_damaged_conf_entry_replaced_by_a_snapshot_keeping_the_tail)
{
	cluster(3);
	uint8_t b[3][RAFT_CONF_CHANGE_BYTES];
	struct raft_entry e[3];
	e[0] = conf_ent(1, RAFT_CONF_ADD_LEARNER, 4, b[0]);
	e[1] = conf_ent(2, RAFT_CONF_PROMOTE, 4, b[1]);
	e[2] = conf_ent(3, RAFT_CONF_ADD_LEARNER, 5, b[2]);
	append_to(1, 0, e, 3, 0);
	nodes[1].bufs[2][1] ^= 0x40; /* entry 2's payload rots */
	raft_free(nodes[1].r);
	nodes[1].r = NULL;
	start(1, 3, NULL);
	append_to(1, 3, NULL, 0, 3);
	cr_assert_lt(raft_conf_find(raft_conf(nodes[1].r), 5), 0);
	/* the leader compacted entry 2: a snapshot of index 2 replaces it */
	struct raft_snapshot_meta s = {.index = 2, .term = 1, .size = 8,
				       .csum = 1};
	s.conf = conf_after(0);
	cr_assert_eq(raft_conf_apply(&s.conf, &(struct raft_conf_change){RAFT_CONF_ADD_LEARNER, 4}), 0);
	cr_assert_eq(raft_conf_apply(&s.conf, &(struct raft_conf_change){RAFT_CONF_PROMOTE, 4}), 0);
	uint8_t chunk[8] = {0};
	struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 2,
			     .term = 1, .snap = s, .index = 2, .offset = 0,
			     .chunk = chunk, .chunk_len = 8,
			     .flags = RAFT_MSGF_LAST};
	raft_step(nodes[1].r, &m);
	struct raft_ready *rd = raft_ready(nodes[1].r);
	cr_assert(rd->has_install);
	cr_assert(rd->install_keeps_tail);
	raft_advance(nodes[1].r);
	nodes[1].applied = s.index; /* the snapshot is the state machine */
	drain(1);
	nq = 0;
	const struct raft_conf *c = raft_conf(nodes[1].r);
	int s4 = raft_conf_find(c, 4), s5 = raft_conf_find(c, 5);
	cr_assert(s4 >= 0 && s5 >= 0, "4 at %d, 5 at %d", s4, s5);
	cr_assert_eq(c->roles[s4], RAFT_VOTER, "node 4 promoted");
	cr_assert_eq(c->roles[s5], RAFT_LEARNER);
	cr_assert_eq(raft_conf_index(nodes[1].r), 3);
}
