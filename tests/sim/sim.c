/*
 * sim.c — the deterministic Raft cluster simulator (see sim.h).
 *
 * One thread, one splitmix64 stream (s->rng) for every decision. Nothing here
 * reads a clock or iterates over anything whose order depends on addresses,
 * so a seed replays bit for bit.
 *
 * Layout: a node slot holds, per group, a replica = struct raft + simulated
 * disk + state machine. The network is a binary heap of deep-copied messages
 * ordered by (delivery time, send sequence). The disk holds what was synced;
 * a ready is persisted op by op (chunk, entries, repairs, hard state) and a
 * crash in the middle keeps only a prefix of the ops (the cut record may be
 * torn, which the storage's frame check drops on reload, like the WAL's torn
 * tail rule). Acks are sent only after the whole ready is synced (the
 * durable-before-send contract of raft.h); a leader's appends of its term
 * (the ready's n_early messages, raft.h 3a) leave before its persist, so a
 * crash inside that persist loses the leader's copy of entries its
 * followers may already hold (sim_opts.persist_first turns that off).
 *
 * Ownership: the sim owns every message copy, disk entry and state machine
 * table; the raft cores own their own memory.
 */
#include "sim.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

#define NSTREAMS 4
#define MAX_CLIENTS 16
#define SNAP_SEED 0x534E415053484F54ull

/* ---- the state machine -------------------------------------------------- */

struct sim_sm {
	uint64_t applied;
	struct raft_conf conf;
	uint64_t stream_next[NSTREAMS];
	uint64_t *seq_of[MAX_CLIENTS]; /* [client][pseq] -> seq (0 = none) */
	uint32_t cap[MAX_CLIENTS];
};

/* ---- the disk ------------------------------------------------------------ */

struct sim_ent {
	struct raft_entry e;
	uint8_t *buf; /* owned copy of e.data */
	bool flipped; /* a bit flip we injected (not yet repaired) */
	bool torn;    /* half-written at a crash: the frame check drops it */
};

struct sim_disk {
	struct raft_hardstate hs;
	struct raft_snapshot_meta snap;
	uint8_t *snap_data;
	struct sim_ent *log; /* index snap.index+1+k */
	uint64_t n, cap;
	struct raft_snapshot_meta partial;
	uint8_t *partial_data;
	uint64_t partial_bytes;
};

struct sim_replica {
	struct raft *raft;
	struct sim_disk disk;
	struct sim_sm sm;
	enum raft_role last_role;
	uint64_t last_term;
	uint64_t since_snap;
	bool fresh; /* restarted, no chunk persisted since */
	struct sim *s;
	int slot;
	uint32_t group;
};

struct sim_node {
	uint64_t id; /* 0 = slot unused */
	bool up;
	bool removed;
	bool eio_next, lose_next;
	uint64_t rate;      /* units per tick (skew) */
	uint64_t next_tick; /* global time of the next tick */
	struct sim_replica *rep; /* [groups] */
	uint32_t reach;     /* slots this node could reach at its last tick */
};

struct net_msg {
	uint64_t at, seq;
	int to_slot;
	uint64_t to_id;
	int from_slot;
	struct raft_msg m; /* pointers into this allocation */
};

struct client {
	uint32_t pseq;       /* current key's producer seq (1-based) */
	bool pending;
	int slot;            /* where proposed */
	uint64_t index;      /* log index it got */
	uint64_t term;
	uint64_t sent_at;
	uint64_t *acked_seq; /* [pseq] -> seq acked (0 = not acked) */
	uint64_t *acked_idx; /* [pseq] -> index */
	uint32_t cap;
};

struct pending_read {
	uint64_t ctx;
	int slot;
	uint64_t node_id;
	uint64_t min_index; /* max acked index when issued */
	int state;          /* 0 pending, 1 done, -1 failed */
};

struct canon {
	uint64_t term, csum;
};

struct sim {
	struct sim_opts o;
	struct parley_rng rng;
	uint64_t now, steps, msgs_sent, acked, installs, repairs;
	uint32_t n_slots;
	uint64_t next_id;
	struct sim_node nodes[SIM_MAX_NODES];
	bool cut[SIM_MAX_NODES][SIM_MAX_NODES]; /* from -> to blocked */

	struct net_msg **heap;
	uint64_t n_heap, cap_heap, msg_seq;

	struct client clients[MAX_CLIENTS];

	struct pending_read *reads;
	uint64_t n_reads, cap_reads, read_ctx;

	/* invariants (group 0 only for the data ones; S1 for all groups) */
	uint64_t **term_leader;   /* [group][term] -> id */
	uint64_t *cap_terms;
	struct canon *applied_canon; /* [index] */
	uint64_t cap_canon;
	uint64_t *stream_keys[NSTREAMS]; /* [seq] -> key+1 */
	uint64_t *key_seq[MAX_CLIENTS];   /* [pseq] -> the seq the key got */
	uint64_t cap_key_seq[MAX_CLIENTS];
	uint64_t cap_stream[NSTREAMS];
	uint64_t max_acked_index;
	/* log matching: open-addressed (index, term) -> csum */
	uint64_t *lm_keys, *lm_vals;
	uint64_t lm_cap, lm_n;
	uint64_t trace; /* PARLEY_SIM_TRACE=<time>: print deliveries from then */
	uint64_t reads_ok, reads_failed, resumed_chunks, torn_dropped;
	uint64_t removed_ids; /* bit per id whose removal committed */
	bool early_ok;        /* send a ready's n_early before persisting */
	uint64_t early_sent;  /* messages sent before their ready was durable */
	uint64_t early_lost;  /* readies that crashed after an early send */
	uint64_t noack_delivered; /* commit-only APPENDs with RAFT_MSGF_NOACK */
};

/* ---- failure and logging ------------------------------------------------ */

void sim_fail(struct sim *s, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "SIM FAILURE seed=%" PRIu64 " step=%" PRIu64
			" now=%" PRIu64 ": ",
		s->o.seed, s->steps, s->now);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nreplay: PARLEY_SIM_SEED=%" PRIu64 " <test>\n",
		s->o.seed);
	fflush(stderr);
	exit(1);
}

void sim_log(struct sim *s, const char *fmt, ...)
{
	if (s->o.quiet)
		return;
	va_list ap;
	fprintf(stderr, "sim t=%" PRIu64 " ", s->now);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static uint64_t rnd(struct sim *s, uint64_t n)
{
	return n ? parley_rng_below(&s->rng, n) : 0;
}

static bool chance_ppm(struct sim *s, uint32_t ppm)
{
	return ppm && rnd(s, 1000000) < ppm;
}

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);
	if (!p)
		abort();
	return p;
}

static void ensure(void **p, uint64_t *cap, uint64_t need, size_t elem)
{
	if (need <= *cap)
		return;
	uint64_t c = *cap ? *cap : 16;
	while (c < need)
		c *= 2;
	*p = realloc(*p, c * elem);
	if (!*p)
		abort();
	memset((char *)*p + *cap * elem, 0, (c - *cap) * elem);
	*cap = c;
}

/* ---- options ------------------------------------------------------------ */

void sim_default_opts(struct sim_opts *o, uint64_t seed)
{
	memset(o, 0, sizeof(*o));
	o->seed = seed;
	o->nodes = 3;
	o->groups = 1;
	o->clients = 4;
	o->client_ppm = 200000;
	o->read_ppm = 20000;
	o->snapshot_every = 150;
	o->election_ticks = 10;
	o->heartbeat_ticks = 2;
	o->max_inflight = 4;
	o->max_batch = 16;
	o->chunk_bytes = 512;
	o->pad_bytes = 16;
	o->pre_vote = true;
	o->check_quorum = true;
	o->quiet = true;
	o->f.loss_pct = 3;
	o->f.dup_pct = 2;
	o->f.delay_max = 25;
	o->f.crash_ppm = 400;
	o->f.restart_ppm = 4000;
	o->f.partition_ppm = 300;
	o->f.heal_ppm = 1500;
	o->f.flip_ppm = 150;
	o->f.eio_ppm = 400;
	o->f.torn_pct = 50;
	o->f.jump_ppm = 300;
	o->f.conf_ppm = 150;
	o->f.transfer_ppm = 150;
	o->f.skew_pct = 20;
}

uint64_t sim_seed(uint64_t dflt)
{
	const char *e = getenv("PARLEY_SIM_SEED");
	if (e && *e)
		return strtoull(e, NULL, 0);
	return dflt;
}

/* ---- state machine ------------------------------------------------------ */

static void sm_free(struct sim_sm *sm)
{
	for (int c = 0; c < MAX_CLIENTS; c++)
		free(sm->seq_of[c]);
	memset(sm, 0, sizeof(*sm));
}

static void sm_set(struct sim_sm *sm, uint32_t c, uint32_t pseq, uint64_t seq)
{
	if (pseq >= sm->cap[c]) {
		uint32_t nc = sm->cap[c] ? sm->cap[c] : 64;
		while (nc <= pseq)
			nc *= 2;
		sm->seq_of[c] = realloc(sm->seq_of[c], nc * sizeof(uint64_t));
		if (!sm->seq_of[c])
			abort();
		memset(sm->seq_of[c] + sm->cap[c], 0,
		       (nc - sm->cap[c]) * sizeof(uint64_t));
		sm->cap[c] = nc;
	}
	sm->seq_of[c][pseq] = seq;
}

static uint64_t sm_get(const struct sim_sm *sm, uint32_t c, uint32_t pseq)
{
	return pseq < sm->cap[c] ? sm->seq_of[c][pseq] : 0;
}

/* Serialized: applied, conf(raw fields), streams, then per client: cap,
 * seqs. */
static uint8_t *sm_serialize(const struct sim_sm *sm, uint64_t *len)
{
	uint64_t n = 8 + 4 + 8 + RAFT_MAX_MEMBERS * 9 + NSTREAMS * 8;
	for (int c = 0; c < MAX_CLIENTS; c++)
		n += 4 + (uint64_t)sm->cap[c] * 8;
	uint8_t *p = xcalloc(1, n), *q = p;
	le_put64(q, sm->applied), q += 8;
	le_put32(q, sm->conf.n), q += 4;
	le_put64(q, sm->conf.max_id), q += 8;
	for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
		le_put64(q, sm->conf.ids[i]), q += 8;
		*q++ = sm->conf.roles[i];
	}
	for (int i = 0; i < NSTREAMS; i++)
		le_put64(q, sm->stream_next[i]), q += 8;
	for (int c = 0; c < MAX_CLIENTS; c++) {
		le_put32(q, sm->cap[c]), q += 4;
		for (uint32_t k = 0; k < sm->cap[c]; k++)
			le_put64(q, sm->seq_of[c][k]), q += 8;
	}
	*len = n;
	return p;
}

static void sm_deserialize(struct sim_sm *sm, const uint8_t *p, uint64_t len)
{
	sm_free(sm);
	struct le_reader r;
	le_reader_init(&r, p, len);
	sm->applied = le_read64(&r);
	sm->conf.n = le_read32(&r);
	sm->conf.max_id = le_read64(&r);
	for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
		sm->conf.ids[i] = le_read64(&r);
		sm->conf.roles[i] = le_read8(&r);
	}
	for (int i = 0; i < NSTREAMS; i++)
		sm->stream_next[i] = le_read64(&r);
	for (int c = 0; c < MAX_CLIENTS; c++) {
		uint32_t cap = le_read32(&r);
		for (uint32_t k = 0; k < cap; k++) {
			uint64_t v = le_read64(&r);
			if (v)
				sm_set(sm, (uint32_t)c, k, v);
		}
	}
	PARLEY_ASSERT(r.ok);
}

/* ---- invariant tables ---------------------------------------------------- */

static void lm_check(struct sim *s, uint64_t index, uint64_t term,
		     uint64_t csum, int slot)
{
	if (s->lm_n * 2 >= s->lm_cap) {
		uint64_t oc = s->lm_cap, nc = oc ? oc * 2 : 4096;
		uint64_t *ok = s->lm_keys, *ov = s->lm_vals;
		s->lm_keys = xcalloc(nc * 2, sizeof(uint64_t));
		s->lm_vals = xcalloc(nc, sizeof(uint64_t));
		s->lm_cap = nc;
		s->lm_n = 0;
		for (uint64_t i = 0; i < oc; i++)
			if (ok[2 * i])
				lm_check(s, ok[2 * i], ok[2 * i + 1], ov[i], -1);
		free(ok);
		free(ov);
	}
	uint64_t h = (index * 0x9E3779B97F4A7C15ull) ^ (term * 0xC2B2AE3D27D4EB4Full);
	for (uint64_t i = h % s->lm_cap;; i = (i + 1) % s->lm_cap) {
		if (s->lm_keys[2 * i] == 0) {
			s->lm_keys[2 * i] = index;
			s->lm_keys[2 * i + 1] = term;
			s->lm_vals[i] = csum;
			s->lm_n++;
			return;
		}
		if (s->lm_keys[2 * i] == index && s->lm_keys[2 * i + 1] == term) {
			if (s->lm_vals[i] != csum)
				sim_fail(s, "S2 log matching: node slot %d has a different entry at index %" PRIu64 " term %" PRIu64,
					 slot, index, term);
			return;
		}
	}
}

static void leader_check(struct sim *s, uint32_t g, uint64_t term, uint64_t id)
{
	ensure((void **)&s->term_leader[g], &s->cap_terms[g], term + 1,
	       sizeof(uint64_t));
	if (s->term_leader[g][term] && s->term_leader[g][term] != id)
		sim_fail(s, "S1 two leaders in group %u term %" PRIu64 ": %" PRIu64 " and %" PRIu64,
			 g, term, s->term_leader[g][term], id);
	s->term_leader[g][term] = id;
}

/* ---- storage vtable ------------------------------------------------------ */

static int st_load(void *ctx, struct raft_hardstate *hs,
		   struct raft_snapshot_meta *snap, uint64_t *last,
		   struct raft_snapshot_meta *partial, uint64_t *pbytes)
{
	struct sim_replica *rp = ctx;
	struct sim_disk *d = &rp->disk;
	*hs = d->hs;
	*snap = d->snap;
	*last = d->snap.index + d->n;
	*partial = d->partial;
	*pbytes = d->partial_bytes;
	return 0;
}

static int st_entry(void *ctx, uint64_t index, struct raft_entry *out)
{
	struct sim_replica *rp = ctx;
	struct sim_disk *d = &rp->disk;
	if (index <= d->snap.index || index > d->snap.index + d->n)
		return -PARLEY_ENOTFOUND;
	*out = d->log[index - d->snap.index - 1].e;
	return 0;
}

static int st_snap_read(void *ctx, uint64_t off, void *buf, uint32_t len)
{
	struct sim_replica *rp = ctx;
	struct sim_disk *d = &rp->disk;
	if (off > d->snap.size)
		return -PARLEY_EINVAL;
	uint64_t n = PARLEY_MIN((uint64_t)len, d->snap.size - off);
	memcpy(buf, d->snap_data + off, n);
	return (int)n;
}

static void disk_truncate(struct sim_disk *d, uint64_t from_index)
{
	uint64_t keep = from_index - d->snap.index - 1;
	if (from_index <= d->snap.index)
		keep = 0;
	while (d->n > keep) {
		d->n--;
		free(d->log[d->n].buf);
	}
}

static void disk_append(struct sim_disk *d, const struct raft_entry *e)
{
	PARLEY_ASSERT(e->index == d->snap.index + d->n + 1);
	ensure((void **)&d->log, &d->cap, d->n + 1, sizeof(*d->log));
	struct sim_ent *se = &d->log[d->n++];
	se->e = *e;
	se->buf = xcalloc(1, e->len);
	if (e->len)
		memcpy(se->buf, e->data, e->len);
	se->e.data = se->buf;
	se->flipped = false;
	se->torn = false;
}

static void disk_free(struct sim_disk *d)
{
	disk_truncate(d, 0);
	free(d->log);
	free(d->snap_data);
	free(d->partial_data);
	memset(d, 0, sizeof(*d));
}

/* ---- nodes ---------------------------------------------------------------- */

static struct raft_conf founders(struct sim *s)
{
	struct raft_conf c = {0};
	for (uint32_t i = 0; i < s->o.nodes; i++) {
		c.ids[c.n] = i + 1;
		c.roles[c.n] = RAFT_VOTER;
		c.n++;
	}
	c.max_id = s->o.nodes;
	return c;
}

static void replica_start(struct sim *s, int slot, uint32_t g)
{
	struct sim_node *nd = &s->nodes[slot];
	struct sim_replica *rp = &nd->rep[g];
	struct raft_config cfg = {0};
	cfg.id = nd->id;
	cfg.group = g;
	cfg.election_ticks = s->o.election_ticks;
	cfg.heartbeat_ticks = s->o.heartbeat_ticks;
	cfg.max_inflight = s->o.max_inflight;
	cfg.max_batch_entries = s->o.max_batch;
	cfg.max_batch_bytes = 64 << 10;
	cfg.max_uncommitted = 1024;
	cfg.chunk_bytes = s->o.chunk_bytes;
	cfg.quiesce_ticks = s->o.quiesce_ticks;
	cfg.rng_seed = parley_rng_next(&s->rng);
	cfg.pre_vote = s->o.pre_vote;
	cfg.check_quorum = s->o.check_quorum;
	cfg.bootstrap = founders(s);
	cfg.storage = (struct raft_storage){.ctx = rp,
					    .load = st_load,
					    .entry = st_entry,
					    .snapshot_read = st_snap_read};
	/* the state machine restarts from the snapshot on disk */
	sm_free(&rp->sm);
	if (rp->disk.snap.index) {
		sm_deserialize(&rp->sm, rp->disk.snap_data, rp->disk.snap.size);
		if (rp->sm.applied != rp->disk.snap.index)
			sim_fail(s, "snapshot on slot %d claims %" PRIu64 " holds %" PRIu64,
				 slot, rp->disk.snap.index, rp->sm.applied);
	} else {
		rp->sm.conf = founders(s);
	}
	rp->s = s;
	rp->slot = slot;
	rp->group = g;
	rp->since_snap = 0;
	rp->fresh = true;
	int rc = raft_new(&cfg, &rp->raft);
	if (rc < 0)
		sim_fail(s, "raft_new slot %d: %s", slot, parley_strerror(rc));
	rp->last_role = RAFT_FOLLOWER;
	rp->last_term = raft_term(rp->raft);
}

/* The storage's recovery: a torn record at the tail fails its frame check
 * and is dropped (it was never synced, so never acknowledged). A torn record
 * anywhere else would be a simulator bug. */
static void disk_recover(struct sim *s, struct sim_disk *d, int slot)
{
	for (uint64_t k = 0; k + 1 < d->n; k++)
		if (d->log[k].torn)
			sim_fail(s, "torn record in the middle of slot %d's log", slot);
	if (d->n && d->log[d->n - 1].torn) {
		d->n--;
		free(d->log[d->n].buf);
		s->torn_dropped++;
	}
}

static void node_start(struct sim *s, int slot)
{
	struct sim_node *nd = &s->nodes[slot];
	for (uint32_t g = 0; g < s->o.groups; g++) {
		disk_recover(s, &nd->rep[g].disk, slot);
		replica_start(s, slot, g);
	}
	nd->up = true;
	nd->next_tick = s->now + rnd(s, nd->rate) + 1;
}

static int slot_of(struct sim *s, uint64_t id)
{
	for (uint32_t i = 0; i < s->n_slots; i++)
		if (s->nodes[i].id == id)
			return (int)i;
	return -1;
}

static void new_slot(struct sim *s, int slot, uint64_t id)
{
	struct sim_node *nd = &s->nodes[slot];
	nd->id = id;
	nd->up = false;
	nd->removed = false;
	nd->rep = xcalloc(s->o.groups, sizeof(*nd->rep));
	uint64_t spread = s->o.f.skew_pct * SIM_UNITS_PER_TICK / 100;
	nd->rate = SIM_UNITS_PER_TICK - spread / 2 + rnd(s, spread + 1);
	if (nd->rate == 0)
		nd->rate = 1;
}

struct sim *sim_new(const struct sim_opts *o)
{
	struct sim *s = xcalloc(1, sizeof(*s));
	s->o = *o;
	if (o->quiet)
		parley_log_set_level(PLOG_ERROR);
	if (getenv("PARLEY_SIM_TRACE"))
		s->trace = strtoull(getenv("PARLEY_SIM_TRACE"), NULL, 0);
	s->rng.s = o->seed;
	s->early_ok = !o->persist_first;
	if (s->o.nodes > SIM_MAX_NODES)
		s->o.nodes = SIM_MAX_NODES;
	if (s->o.clients > MAX_CLIENTS)
		s->o.clients = MAX_CLIENTS;
	s->term_leader = xcalloc(o->groups, sizeof(uint64_t *));
	s->cap_terms = xcalloc(o->groups, sizeof(uint64_t));
	s->n_slots = s->o.nodes;
	for (uint32_t c = 0; c < MAX_CLIENTS; c++)
		s->clients[c].pseq = 1;
	s->next_id = s->o.nodes + 1;
	for (uint32_t i = 0; i < s->o.nodes; i++)
		new_slot(s, (int)i, i + 1);
	for (uint32_t i = 0; i < s->o.nodes; i++)
		node_start(s, (int)i);
	if (!o->quiet)
		fprintf(stderr, "sim seed=%" PRIu64 " nodes=%u groups=%u\n",
			o->seed, o->nodes, o->groups);
	return s;
}

static void replica_stop(struct sim_replica *rp)
{
	raft_free(rp->raft);
	rp->raft = NULL;
}

void sim_free(struct sim *s)
{
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *nd = &s->nodes[i];
		if (!nd->rep)
			continue;
		for (uint32_t g = 0; g < s->o.groups; g++) {
			if (nd->rep[g].raft)
				replica_stop(&nd->rep[g]);
			disk_free(&nd->rep[g].disk);
			sm_free(&nd->rep[g].sm);
		}
		free(nd->rep);
	}
	for (uint64_t i = 0; i < s->n_heap; i++)
		free(s->heap[i]);
	free(s->heap);
	for (uint32_t c = 0; c < MAX_CLIENTS; c++) {
		free(s->clients[c].acked_seq);
		free(s->clients[c].acked_idx);
	}
	free(s->reads);
	for (uint32_t g = 0; g < s->o.groups; g++)
		free(s->term_leader[g]);
	free(s->term_leader);
	free(s->cap_terms);
	free(s->applied_canon);
	for (int i = 0; i < NSTREAMS; i++)
		free(s->stream_keys[i]);
	for (int i = 0; i < MAX_CLIENTS; i++)
		free(s->key_seq[i]);
	free(s->lm_keys);
	free(s->lm_vals);
	free(s);
}

/* ---- network ------------------------------------------------------------- */

static bool heap_less(const struct net_msg *a, const struct net_msg *b)
{
	return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void heap_push(struct sim *s, struct net_msg *m)
{
	ensure((void **)&s->heap, &s->cap_heap, s->n_heap + 1, sizeof(*s->heap));
	uint64_t i = s->n_heap++;
	s->heap[i] = m;
	while (i > 0) {
		uint64_t p = (i - 1) / 2;
		if (!heap_less(s->heap[i], s->heap[p]))
			break;
		struct net_msg *t = s->heap[i];
		s->heap[i] = s->heap[p];
		s->heap[p] = t;
		i = p;
	}
}

static struct net_msg *heap_pop(struct sim *s)
{
	struct net_msg *top = s->heap[0];
	s->heap[0] = s->heap[--s->n_heap];
	uint64_t i = 0;
	for (;;) {
		uint64_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < s->n_heap && heap_less(s->heap[l], s->heap[m]))
			m = l;
		if (r < s->n_heap && heap_less(s->heap[r], s->heap[m]))
			m = r;
		if (m == i)
			break;
		struct net_msg *t = s->heap[i];
		s->heap[i] = s->heap[m];
		s->heap[m] = t;
		i = m;
	}
	return top;
}

static struct net_msg *msg_copy(const struct raft_msg *m)
{
	size_t sz = sizeof(struct net_msg) + m->n_entries * sizeof(struct raft_entry) +
		    m->chunk_len;
	for (uint32_t i = 0; i < m->n_entries; i++)
		sz += m->entries[i].len;
	struct net_msg *n = xcalloc(1, sz);
	n->m = *m;
	uint8_t *p = (uint8_t *)(n + 1);
	struct raft_entry *es = (struct raft_entry *)p;
	p += m->n_entries * sizeof(struct raft_entry);
	for (uint32_t i = 0; i < m->n_entries; i++) {
		es[i] = m->entries[i];
		if (m->entries[i].len)
			memcpy(p, m->entries[i].data, m->entries[i].len);
		es[i].data = p;
		p += m->entries[i].len;
	}
	n->m.entries = m->n_entries ? es : NULL;
	if (m->chunk_len) {
		memcpy(p, m->chunk, m->chunk_len);
		n->m.chunk = p;
	} else {
		n->m.chunk = NULL;
	}
	return n;
}

static void net_send(struct sim *s, int from_slot, const struct raft_msg *m)
{
	s->msgs_sent++;
	if (m->to == 0 || m->to == m->from || m->to >= s->next_id ||
	    m->from != s->nodes[from_slot].id)
		sim_fail(s, "slot %d sent %s from %" PRIu64 " to %" PRIu64
			    " (no such peer)",
			 from_slot, raft_msg_type_name(m->type), m->from, m->to);
	int to = slot_of(s, m->to);
	if (to < 0)
		return;
	uint32_t copies = 1;
	if (rnd(s, 100) < s->o.f.loss_pct)
		return;
	if (rnd(s, 100) < s->o.f.dup_pct)
		copies = 2;
	for (uint32_t c = 0; c < copies; c++) {
		struct net_msg *n = msg_copy(m);
		n->at = s->now + 1 + rnd(s, s->o.f.delay_max + 1);
		n->seq = s->msg_seq++;
		n->to_slot = to;
		n->to_id = m->to;
		n->from_slot = from_slot;
		heap_push(s, n);
	}
}

/* ---- applying and persisting --------------------------------------------- */

static uint64_t key_of(uint32_t c, uint32_t pseq)
{
	return ((uint64_t)c << 32) | pseq;
}

static uint32_t stream_of(uint32_t c, uint32_t pseq)
{
	return (uint32_t)(parley_xxh3(&pseq, 4, c) % NSTREAMS);
}

static void check_apply(struct sim *s, struct sim_replica *rp,
			const struct raft_entry *e)
{
	if (rp->group != 0)
		return;
	ensure((void **)&s->applied_canon, &s->cap_canon, e->index + 1,
	       sizeof(struct canon));
	struct canon *c = &s->applied_canon[e->index];
	if (c->term == 0) {
		c->term = e->term;
		c->csum = e->csum;
	} else if (c->term != e->term || c->csum != e->csum) {
		sim_fail(s, "S4 state-machine safety: slot %d applies a different entry at %" PRIu64 " (term %" PRIu64 " vs %" PRIu64 ")",
			 rp->slot, e->index, e->term, c->term);
	}
}

static void sm_apply(struct sim *s, struct sim_replica *rp,
		     const struct raft_entry *e)
{
	struct sim_sm *sm = &rp->sm;
	if (e->index != sm->applied + 1)
		sim_fail(s, "apply gap on slot %d: applied %" PRIu64 " got %" PRIu64,
			 rp->slot, sm->applied, e->index);
	if (!raft_entry_ok(e))
		sim_fail(s, "slot %d was handed a damaged entry %" PRIu64 " to apply",
			 rp->slot, e->index);
	check_apply(s, rp, e);
	sm->applied = e->index;
	if (e->type == RAFT_ENTRY_CONF) {
		struct raft_conf_change cc;
		if (raft_conf_change_decode(e->data, e->len, &cc) == 0) {
			struct raft_conf c = sm->conf;
			if (raft_conf_apply(&c, &cc) == 0) {
				sm->conf = c;
				if (cc.op == RAFT_CONF_REMOVE && rp->group == 0 &&
				    cc.node < 64)
					s->removed_ids |= 1ull << cc.node;
			}
		}
		return;
	}
	if (e->type != RAFT_ENTRY_NORMAL || e->len < 12)
		return;
	uint32_t c = le_get32(e->data), pseq = le_get32(e->data + 4);
	uint32_t st = le_get32(e->data + 8);
	if (c >= MAX_CLIENTS || st >= NSTREAMS)
		sim_fail(s, "garbage entry applied at %" PRIu64, e->index);
	uint64_t seq = sm_get(sm, c, pseq);
	if (!seq) {
		seq = ++sm->stream_next[st];
		sm_set(sm, c, pseq, seq);
		if (rp->group == 0) {
			ensure((void **)&s->stream_keys[st], &s->cap_stream[st],
			       seq + 1, sizeof(uint64_t));
			uint64_t k = key_of(c, pseq) + 1;
			if (s->stream_keys[st][seq] == 0)
				s->stream_keys[st][seq] = k;
			else if (s->stream_keys[st][seq] != k)
				sim_fail(s, "S6 stream %u seq %" PRIu64 " names two keys on slot %d",
					 st, seq, rp->slot);
			/* S7: a key (first try or retry) gets one seq ever */
			ensure((void **)&s->key_seq[c], &s->cap_key_seq[c],
			       (uint64_t)pseq + 1, sizeof(uint64_t));
			if (s->key_seq[c][pseq] == 0)
				s->key_seq[c][pseq] = seq;
			else if (s->key_seq[c][pseq] != seq)
				sim_fail(s, "S7 key %u/%u got seq %" PRIu64 " on slot %d, earlier %" PRIu64,
					 c, pseq, seq, rp->slot, s->key_seq[c][pseq]);
		}
	}
	if (rp->group != 0)
		return;
	/* S5: an acked key keeps its seq */
	struct client *cl = &s->clients[c];
	if (pseq < cl->cap && cl->acked_seq[pseq] && cl->acked_seq[pseq] != seq)
		sim_fail(s, "S5/S7 key %u/%u acked with seq %" PRIu64 " but slot %d has %" PRIu64,
			 c, pseq, cl->acked_seq[pseq], rp->slot, seq);
	/* acknowledge to the client if this node is where it proposed */
	if (cl->pending && cl->pseq == pseq && cl->slot == rp->slot &&
	    cl->index == e->index) {
		if (pseq >= cl->cap) {
			uint32_t nc = cl->cap ? cl->cap * 2 : 256;
			while (nc <= pseq)
				nc *= 2;
			cl->acked_seq = realloc(cl->acked_seq, nc * 8);
			cl->acked_idx = realloc(cl->acked_idx, nc * 8);
			memset(cl->acked_seq + cl->cap, 0, (nc - cl->cap) * 8);
			memset(cl->acked_idx + cl->cap, 0, (nc - cl->cap) * 8);
			cl->cap = nc;
		}
		cl->acked_seq[pseq] = seq;
		/* the index that first applied the key (a retry's entry may
		 * be a later one that is a no-op for the state machine) */
		cl->acked_idx[pseq] = e->index;
		if (e->index > s->max_acked_index)
			s->max_acked_index = e->index;
		cl->pending = false;
		cl->pseq++; /* the next key */
		s->acked++;
	}
}

static void take_snapshot(struct sim *s, struct sim_replica *rp)
{
	struct sim_disk *d = &rp->disk;
	uint64_t idx = rp->sm.applied;
	if (idx <= d->snap.index)
		return;
	uint64_t term = raft_term_at(rp->raft, idx);
	if (!term)
		return;
	uint64_t len;
	uint8_t *data = sm_serialize(&rp->sm, &len);
	struct raft_snapshot_meta meta = {.index = idx,
					  .term = term,
					  .size = len,
					  .csum = parley_xxh3(data, len, SNAP_SEED),
					  .conf = rp->sm.conf};
	/* durable snapshot first, then drop the covered log */
	uint64_t drop = idx - d->snap.index;
	if (drop > d->n)
		drop = d->n;
	for (uint64_t k = 0; k < drop; k++)
		free(d->log[k].buf);
	memmove(d->log, d->log + drop, (d->n - drop) * sizeof(*d->log));
	d->n -= drop;
	free(d->snap_data);
	d->snap_data = data;
	d->snap = meta;
	int rc = raft_compacted(rp->raft, &meta);
	if (rc < 0)
		sim_fail(s, "raft_compacted: %s", parley_strerror(rc));
	rp->since_snap = 0;
}

static void node_crash_now(struct sim *s, int slot);

/*
 * Persist one ready. Returns false if the node crashed (EIO or a scripted
 * loss): then nothing of the ready was acknowledged.
 */
static bool persist(struct sim *s, struct sim_replica *rp,
		    const struct raft_ready *rd)
{
	struct sim_node *nd = &s->nodes[rp->slot];
	struct sim_disk *d = &rp->disk;
	/* ops: chunk, one per entry, one per repair, hard state */
	uint64_t nops = (rd->has_chunk ? 1 : 0) + (rd->truncate_from ? 1 : 0) +
			rd->n_entries + rd->n_repair + (rd->hs_changed ? 1 : 0);
	bool fail = false;
	uint64_t cut = nops;
	if (nd->lose_next || nd->eio_next ||
	    (nops && chance_ppm(s, s->o.f.eio_ppm))) {
		fail = true;
		cut = rnd(s, nops + 1); /* some prefix reached the disk */
		if (!nd->lose_next && !nd->eio_next)
			sim_log(s, "slot %d fsync EIO", rp->slot);
	}
	uint64_t op = 0;
	if (rd->has_chunk && op++ < cut) {
		if (d->partial.index != rd->chunk_snap.index ||
		    d->partial.term != rd->chunk_snap.term ||
		    d->partial.csum != rd->chunk_snap.csum ||
		    rd->chunk_offset == 0) {
			free(d->partial_data);
			d->partial = rd->chunk_snap;
			d->partial_data = xcalloc(1, rd->chunk_snap.size);
			d->partial_bytes = 0;
		}
		if (rd->chunk_offset && rd->chunk_offset == d->partial_bytes &&
		    rp->fresh)
			s->resumed_chunks++; /* first chunk after a restart
					      * continues the durable partial */
		rp->fresh = false;
		if (rd->chunk_offset != d->partial_bytes && rd->chunk_len)
			sim_fail(s, "chunk at %" PRIu64 " but slot %d holds %" PRIu64,
				 rd->chunk_offset, rp->slot, d->partial_bytes);
		if (rd->chunk_len)
			memcpy(d->partial_data + rd->chunk_offset, rd->chunk,
			       rd->chunk_len);
		d->partial_bytes = rd->chunk_offset + rd->chunk_len;
	}
	if (rd->truncate_from && op++ < cut) {
		if (rd->truncate_from <= d->hs.commit &&
		    rd->truncate_from <= d->snap.index + d->n)
			sim_fail(s, "slot %d truncates committed index %" PRIu64,
				 rp->slot, rd->truncate_from);
		disk_truncate(d, rd->truncate_from);
	}
	for (uint32_t i = 0; i < rd->n_entries; i++) {
		const struct raft_entry *e = &rd->entries[i];
		if (op++ >= cut) {
			/* the record the crash cut: torn on disk, or absent */
			if (op - 1 == cut && rnd(s, 100) < s->o.f.torn_pct &&
			    e->index == d->snap.index + d->n + 1 &&
			    (i > 0 || e->index > d->snap.index + d->n)) {
				disk_append(d, e);
				struct sim_ent *se = &d->log[d->n - 1];
				se->torn = true;
				se->e.csum ^= 0x5A5A; /* its frame fails its check */
				if (se->e.len)
					se->buf[rnd(s, se->e.len)] ^= 0xFF;
			}
			break;
		}
		if (i == 0) {
			if (e->index <= d->hs.commit && e->index <= d->snap.index + d->n)
				sim_fail(s, "slot %d truncates committed index %" PRIu64,
					 rp->slot, e->index);
			disk_truncate(d, e->index);
		}
		if (rp->group == 0)
			lm_check(s, e->index, e->term, e->csum, rp->slot);
		disk_append(d, e);
	}
	for (uint32_t i = 0; i < rd->n_repair; i++) {
		if (op++ >= cut)
			break;
		const struct raft_entry *e = &rd->repair[i];
		if (e->index <= d->snap.index || e->index > d->snap.index + d->n)
			continue;
		struct sim_ent *se = &d->log[e->index - d->snap.index - 1];
		if (se->e.term != e->term)
			sim_fail(s, "repair with another term at %" PRIu64, e->index);
		free(se->buf);
		se->buf = xcalloc(1, e->len);
		if (e->len)
			memcpy(se->buf, e->data, e->len);
		se->e = *e;
		se->e.data = se->buf;
		if (se->flipped)
			s->repairs++;
		se->flipped = false;
	}
	if (rd->hs_changed && op++ < cut) {
		if (rd->hs.term < d->hs.term)
			sim_fail(s, "term went back on slot %d", rp->slot);
		d->hs = rd->hs;
	}
	if (fail) {
		bool lose = nd->lose_next;
		nd->lose_next = false;
		nd->eio_next = false;
		if (!lose)
			raft_persist_failed(rp->raft);
		node_crash_now(s, rp->slot);
		return false;
	}
	return true;
}

static void check_role(struct sim *s, struct sim_replica *rp);

static void process(struct sim *s, struct sim_replica *rp)
{
	for (int guard = 0; guard < 64; guard++) {
		if (!rp->raft)
			return;
		struct raft_ready *rd = raft_ready(rp->raft);
		if (rd->empty) {
			raft_advance(rp->raft);
			break;
		}
		/* raft.h 3a: a leader's appends of its term leave before its
		 * own write; a crash in persist() below then loses the
		 * leader's copy while the followers may hold (and commit)
		 * the entries */
		if (s->early_ok)
			for (uint32_t i = 0; i < rd->n_early; i++) {
				net_send(s, rp->slot, &rd->msgs[i]);
				s->early_sent++;
			}
		uint32_t sent = s->early_ok ? rd->n_early : 0;
		if (!persist(s, rp, rd)) {
			if (sent)
				s->early_lost++;
			return;
		}
		for (uint32_t i = sent; i < rd->n_msgs; i++)
			net_send(s, rp->slot, &rd->msgs[i]);
		if (rd->has_install) {
			struct sim_disk *d = &rp->disk;
			if (d->partial_bytes != rd->install.size ||
			    parley_xxh3(d->partial_data, d->partial_bytes,
					SNAP_SEED) != rd->install.csum)
				sim_fail(s, "slot %d installs a snapshot it does not hold whole",
					 rp->slot);
			if (rd->install_keeps_tail &&
			    rd->install.index <= d->snap.index + d->n) {
				uint64_t drop = rd->install.index - d->snap.index;
				for (uint64_t k = 0; k < drop; k++)
					free(d->log[k].buf);
				memmove(d->log, d->log + drop,
					(d->n - drop) * sizeof(*d->log));
				d->n -= drop;
			} else {
				disk_truncate(d, 0);
			}
			free(d->snap_data);
			d->snap_data = d->partial_data;
			d->snap = rd->install;
			d->partial_data = NULL;
			memset(&d->partial, 0, sizeof(d->partial));
			d->partial_bytes = 0;
			sm_deserialize(&rp->sm, d->snap_data, d->snap.size);
			if (rp->sm.applied != d->snap.index)
				sim_fail(s, "installed snapshot mismatch");
			if (d->hs.commit < d->snap.index)
				d->hs.commit = d->snap.index;
			s->installs++;
		}
		for (uint32_t i = 0; i < rd->n_committed; i++) {
			sm_apply(s, rp, &rd->committed[i]);
			rp->since_snap++;
		}
		for (uint32_t i = 0; i < rd->n_reads; i++) {
			const struct raft_read *rr = &rd->reads[i];
			for (uint64_t k = 0; k < s->n_reads; k++) {
				struct pending_read *p = &s->reads[k];
				if (p->ctx != rr->ctx || p->state)
					continue;
				if (rr->err) {
					p->state = -1;
					s->reads_failed++;
					break;
				}
				if (rr->index < p->min_index)
					sim_fail(s, "S8 stale read on slot %d: read index %" PRIu64 " < acked %" PRIu64,
						 rp->slot, rr->index, p->min_index);
				p->state = 1;
				s->reads_ok++;
				break;
			}
		}
		raft_advance(rp->raft);
		check_role(s, rp);
		if (s->o.snapshot_every && rp->since_snap >= s->o.snapshot_every)
			take_snapshot(s, rp);
	}
	check_role(s, rp);
}

/* S1 and S3 when a replica changes role. */
static void check_role(struct sim *s, struct sim_replica *rp)
{
	if (!rp->raft)
		return;
	enum raft_role role = raft_role(rp->raft);
	uint64_t term = raft_term(rp->raft);
	if (role == RAFT_LEADER &&
	    (rp->last_role != RAFT_LEADER || rp->last_term != term)) {
		leader_check(s, rp->group, term, s->nodes[rp->slot].id);
		if (rp->group == 0) {
			/* S3: holds every entry applied anywhere */
			for (uint64_t i = rp->disk.snap.index + 1;
			     i < s->cap_canon && s->applied_canon[i].term; i++) {
				uint64_t t = raft_term_at(rp->raft, i);
				if (t != s->applied_canon[i].term)
					sim_fail(s, "S3 leader completeness: new leader slot %d term %" PRIu64 " lacks applied index %" PRIu64,
						 rp->slot, term, i);
			}
		}
	}
	rp->last_role = role;
	rp->last_term = term;
}

/* ---- faults ---------------------------------------------------------------- */

static void node_crash_now(struct sim *s, int slot)
{
	struct sim_node *nd = &s->nodes[slot];
	if (!nd->up)
		return;
	for (uint32_t g = 0; g < s->o.groups; g++)
		replica_stop(&nd->rep[g]);
	nd->up = false;
	sim_log(s, "slot %d (id %" PRIu64 ") crashed", slot, nd->id);
}

void sim_crash(struct sim *s, int slot, bool mid_persist)
{
	if (mid_persist && s->nodes[slot].up) {
		s->nodes[slot].lose_next = true;
		/* the node crashes at its next persist, or now if idle */
		return;
	}
	node_crash_now(s, slot);
}

void sim_restart(struct sim *s, int slot)
{
	struct sim_node *nd = &s->nodes[slot];
	if (nd->up || nd->removed || nd->id == 0)
		return;
	nd->lose_next = nd->eio_next = false;
	node_start(s, slot);
	sim_log(s, "slot %d restarted", slot);
}

bool sim_up(struct sim *s, int slot)
{
	return s->nodes[slot].up;
}

void sim_isolate(struct sim *s, int slot)
{
	for (uint32_t i = 0; i < SIM_MAX_NODES; i++) {
		s->cut[slot][i] = true;
		s->cut[i][slot] = true;
	}
}

void sim_cut(struct sim *s, int from, int to)
{
	s->cut[from][to] = true;
}

void sim_heal(struct sim *s)
{
	memset(s->cut, 0, sizeof(s->cut));
}

void sim_set_faults(struct sim *s, const struct sim_faults *f)
{
	s->o.f = *f;
}

void sim_clients(struct sim *s, uint32_t ppm)
{
	s->o.client_ppm = ppm;
}

void sim_snapshots(struct sim *s, uint32_t every)
{
	s->o.snapshot_every = every;
}

static uint32_t damaged_nodes(struct sim *s)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *nd = &s->nodes[i];
		if (!nd->id || nd->removed)
			continue;
		struct sim_disk *d = &nd->rep[0].disk;
		for (uint64_t k = 0; k < d->n; k++)
			if (d->log[k].flipped) {
				n++;
				break;
			}
	}
	return n;
}

uint64_t sim_flip(struct sim *s, int slot, uint64_t index)
{
	struct sim_node *nd = &s->nodes[slot];
	struct sim_disk *d = &nd->rep[0].disk;
	if (d->n == 0)
		return 0;
	uint64_t k;
	if (index) {
		if (index <= d->snap.index || index > d->snap.index + d->n)
			return 0;
		k = index - d->snap.index - 1;
	} else {
		k = rnd(s, d->n);
	}
	struct sim_ent *se = &d->log[k];
	if (se->e.len)
		se->buf[rnd(s, se->e.len)] ^= (uint8_t)(1u << rnd(s, 8));
	else
		se->e.csum ^= 1ull << rnd(s, 64);
	se->flipped = true;
	sim_log(s, "flip slot %d index %" PRIu64, slot, se->e.index);
	return se->e.index;
}

void sim_eio_next(struct sim *s, int slot)
{
	s->nodes[slot].eio_next = true;
}

void sim_lose_unsynced(struct sim *s, int slot)
{
	s->nodes[slot].lose_next = true;
}

int sim_leader(struct sim *s, uint32_t g)
{
	int best = -1;
	uint64_t bt = 0;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *nd = &s->nodes[i];
		if (!nd->up || !nd->rep[g].raft)
			continue;
		struct raft *r = nd->rep[g].raft;
		if (raft_role(r) == RAFT_LEADER && raft_term(r) >= bt) {
			best = (int)i;
			bt = raft_term(r);
		}
	}
	return best;
}

int sim_propose_conf(struct sim *s, uint32_t op, int target)
{
	int l = sim_leader(s, 0);
	if (l < 0)
		return -PARLEY_ENOTLEADER;
	struct raft_conf_change cc = {.op = (uint8_t)op};
	int new_slot_at = -1;
	if (op == RAFT_CONF_ADD_LEARNER || op == RAFT_CONF_ADD_VOTER) {
		/* a brand-new node: fresh id, empty disk, in a free slot */
		for (uint32_t i = 0; i < SIM_MAX_NODES; i++) {
			if (i >= s->n_slots || s->nodes[i].removed ||
			    s->nodes[i].id == 0) {
				new_slot_at = (int)i;
				break;
			}
		}
		if (new_slot_at < 0 || s->next_id >= 63)
			return -PARLEY_EFULL; /* removed_ids is a 64-bit set */
		cc.node = s->next_id;
	} else {
		if (target < 0 || s->nodes[target].id == 0)
			return -PARLEY_EINVAL;
		cc.node = s->nodes[target].id;
	}
	uint64_t idx;
	int rc = raft_propose_conf(s->nodes[l].rep[0].raft, &cc, &idx);
	if (rc < 0)
		return rc;
	sim_log(s, "conf op %u node %" PRIu64 " proposed at %" PRIu64, op,
		cc.node, idx);
	if (new_slot_at >= 0) {
		struct sim_node *nd = &s->nodes[new_slot_at];
		if (nd->rep) {
			for (uint32_t g = 0; g < s->o.groups; g++) {
				if (nd->rep[g].raft)
					replica_stop(&nd->rep[g]);
				disk_free(&nd->rep[g].disk);
				sm_free(&nd->rep[g].sm);
			}
			free(nd->rep);
		}
		memset(nd, 0, sizeof(*nd));
		new_slot(s, new_slot_at, s->next_id++);
		if ((uint32_t)new_slot_at >= s->n_slots)
			s->n_slots = (uint32_t)new_slot_at + 1;
		node_start(s, new_slot_at);
	}
	process(s, &s->nodes[l].rep[0]);
	return 0;
}

int sim_transfer(struct sim *s, int to)
{
	int l = sim_leader(s, 0);
	if (l < 0)
		return -PARLEY_ENOTLEADER;
	int rc = raft_transfer(s->nodes[l].rep[0].raft, s->nodes[to].id);
	if (rc == 0) {
		sim_log(s, "transfer %d -> %d", l, to);
		process(s, &s->nodes[l].rep[0]);
	}
	return rc;
}

/* ---- clients --------------------------------------------------------------- */

static void client_propose(struct sim *s, uint32_t c, int slot)
{
	struct client *cl = &s->clients[c];
	struct sim_replica *rp = &s->nodes[slot].rep[0];
	if (!rp->raft)
		return;
	uint8_t buf[12 + 256];
	uint32_t pad = s->o.pad_bytes > 256 ? 256 : s->o.pad_bytes;
	le_put32(buf, c);
	le_put32(buf + 4, cl->pseq);
	le_put32(buf + 8, stream_of(c, cl->pseq));
	for (uint32_t i = 0; i < pad; i++)
		buf[12 + i] = (uint8_t)rnd(s, 256);
	uint64_t idx;
	int rc = raft_propose(rp->raft, buf, 12 + pad, &idx);
	if (rc == 0) {
		cl->pending = true;
		cl->slot = slot;
		cl->index = idx;
		cl->term = raft_term(rp->raft);
		cl->sent_at = s->now;
		process(s, rp);
	}
}

int sim_propose(struct sim *s, int slot)
{
	/* client 0 proposes its current key on `slot` */
	struct client *cl = &s->clients[0];
	struct sim_replica *rp = &s->nodes[slot].rep[0];
	if (!rp->raft)
		return -PARLEY_ECLOSED;
	if (raft_role(rp->raft) != RAFT_LEADER)
		return -PARLEY_ENOTLEADER;
	client_propose(s, 0, slot);
	return cl->pending && cl->slot == slot ? 0 : -PARLEY_EAGAIN;
}

static void client_act(struct sim *s)
{
	uint32_t c = (uint32_t)rnd(s, s->o.clients);
	struct client *cl = &s->clients[c];
	uint64_t timeout = 4ull * s->o.election_ticks * SIM_UNITS_PER_TICK;
	if (cl->pending && s->now - cl->sent_at < timeout) {
		/* still waiting; the node may have lost leadership */
		struct sim_replica *rp = &s->nodes[cl->slot].rep[0];
		if (rp->raft && raft_term(rp->raft) == cl->term &&
		    s->nodes[cl->slot].up)
			return;
	}
	/* a new key after an ack, else a retry of the same key (idempotent) */
	int l = sim_leader(s, 0);
	if (l < 0)
		return;
	client_propose(s, c, l);
}

uint64_t sim_read(struct sim *s, int slot)
{
	struct sim_replica *rp = &s->nodes[slot].rep[0];
	if (!rp->raft)
		return 0;
	uint64_t ctx = ++s->read_ctx;
	int rc = raft_read_index(rp->raft, ctx);
	if (rc < 0)
		return 0;
	ensure((void **)&s->reads, &s->cap_reads, s->n_reads + 1,
	       sizeof(*s->reads));
	s->reads[s->n_reads++] = (struct pending_read){
		.ctx = ctx,
		.slot = slot,
		.node_id = s->nodes[slot].id,
		.min_index = s->max_acked_index};
	process(s, rp);
	return ctx;
}

int sim_read_done(struct sim *s, uint64_t ctx)
{
	for (uint64_t k = 0; k < s->n_reads; k++)
		if (s->reads[k].ctx == ctx)
			return s->reads[k].state;
	return -1;
}

/* ---- the main loop ---------------------------------------------------------- */

static void random_partition(struct sim *s)
{
	uint32_t n = s->n_slots;
	sim_heal(s);
	switch (rnd(s, 4)) {
	case 0: /* isolate one */
		sim_isolate(s, (int)rnd(s, n));
		break;
	case 1: { /* one-way */
		int a = (int)rnd(s, n), b = (int)rnd(s, n);
		if (a != b)
			sim_cut(s, a, b);
		break;
	}
	case 2: { /* split in two */
		uint64_t mask = rnd(s, 1ull << n);
		for (uint32_t a = 0; a < n; a++)
			for (uint32_t b = 0; b < n; b++)
				if (((mask >> a) & 1) != ((mask >> b) & 1))
					s->cut[a][b] = true;
		break;
	}
	default: { /* bridge: two halves talk only through one node */
		int br = (int)rnd(s, n);
		uint64_t mask = rnd(s, 1ull << n);
		for (uint32_t a = 0; a < n; a++)
			for (uint32_t b = 0; b < n; b++)
				if ((int)a != br && (int)b != br &&
				    ((mask >> a) & 1) != ((mask >> b) & 1))
					s->cut[a][b] = true;
		break;
	}
	}
}

static void random_faults(struct sim *s)
{
	const struct sim_faults *f = &s->o.f;
	uint32_t n = s->n_slots;
	if (chance_ppm(s, f->crash_ppm)) {
		int v = (int)rnd(s, n);
		if (s->nodes[v].up && !s->nodes[v].removed)
			sim_crash(s, v, rnd(s, 2));
	}
	if (chance_ppm(s, f->restart_ppm)) {
		int v = (int)rnd(s, n);
		sim_restart(s, v);
	}
	if (chance_ppm(s, f->partition_ppm))
		random_partition(s);
	if (chance_ppm(s, f->heal_ppm))
		sim_heal(s);
	if (chance_ppm(s, f->flip_ppm)) {
		/* damage stays on a minority of the voters: at most
		 * (voters - 1) / 2 of the leader's voters at once */
		int v = (int)rnd(s, n);
		int l = sim_leader(s, 0);
		if (l >= 0 && s->nodes[v].id && !s->nodes[v].removed) {
			const struct raft_conf *c = raft_conf(s->nodes[l].rep[0].raft);
			uint32_t voters = 0;
			for (uint32_t k = 0; k < c->n; k++)
				voters += c->roles[k] == RAFT_VOTER;
			if (damaged_nodes(s) < (voters - 1) / 2)
				sim_flip(s, v, 0);
		}
	}
	if (chance_ppm(s, f->jump_ppm)) {
		int v = (int)rnd(s, n);
		struct sim_node *nd = &s->nodes[v];
		if (rnd(s, 2))
			nd->next_tick = s->now; /* jump forward: tick now */
		else
			nd->next_tick = s->now + rnd(s, 8 * nd->rate); /* pause */
	}
	if (chance_ppm(s, f->conf_ppm)) {
		int l = sim_leader(s, 0);
		if (l >= 0) {
			const struct raft_conf *c = raft_conf(s->nodes[l].rep[0].raft);
			uint32_t op = 1 + (uint32_t)rnd(s, 4);
			int target = -1;
			if (op == RAFT_CONF_PROMOTE) {
				for (uint32_t i = 0; i < c->n; i++)
					if (c->roles[i] == RAFT_LEARNER)
						target = slot_of(s, c->ids[i]);
			} else if (op == RAFT_CONF_REMOVE) {
				uint32_t pick = (uint32_t)rnd(s, c->n);
				target = slot_of(s, c->ids[pick]);
				/* keep at least 3 voters */
				uint32_t voters = 0;
				for (uint32_t i = 0; i < c->n; i++)
					voters += c->roles[i] == RAFT_VOTER;
				if (c->roles[pick] == RAFT_VOTER && voters <= 3)
					target = -1;
			} else if (c->n >= 5) {
				op = 0;
			}
			if (op && (target >= 0 || op == RAFT_CONF_ADD_LEARNER ||
				   op == RAFT_CONF_ADD_VOTER))
				sim_propose_conf(s, op, target);
		}
	}
	if (chance_ppm(s, f->transfer_ppm)) {
		int l = sim_leader(s, 0);
		if (l >= 0) {
			const struct raft_conf *c = raft_conf(s->nodes[l].rep[0].raft);
			uint32_t pick = (uint32_t)rnd(s, c->n);
			int to = slot_of(s, c->ids[pick]);
			if (to >= 0 && to != l && c->roles[pick] == RAFT_VOTER)
				sim_transfer(s, to);
		}
	}
}

/* Stop replicas of nodes whose removal was committed (a removed node is
 * shut down by the real system too). */
static void reap_removed(struct sim *s)
{
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *nd = &s->nodes[i];
		if (!nd->id || nd->removed)
			continue;
		if (nd->id < 64 && (s->removed_ids >> nd->id) & 1) {
			/* removed from the committed conf */
			node_crash_now(s, (int)i);
			nd->removed = true;
			sim_log(s, "slot %d (id %" PRIu64 ") removed and stopped",
				i, nd->id);
		}
	}
}

static void deliver(struct sim *s, struct net_msg *n)
{
	struct sim_node *nd = &s->nodes[n->to_slot];
	bool ok = nd->up && nd->id == n->to_id && !s->cut[n->from_slot][n->to_slot] &&
		  n->m.group < s->o.groups;
	if (ok) {
		struct sim_replica *rp = &nd->rep[n->m.group];
		s->steps++;
		if (s->trace && s->now >= s->trace)
			fprintf(stderr, "t=%" PRIu64 " %" PRIu64 "->%" PRIu64 " %s term %" PRIu64 " idx %" PRIu64 " lt %" PRIu64 " commit %" PRIu64 " hint %" PRIu64 " flags %x n %u off %" PRIu64 " len %u snap %" PRIu64 "\n",
				s->now, n->m.from, n->m.to, raft_msg_type_name(n->m.type), n->m.term, n->m.index, n->m.log_term, n->m.commit, n->m.hint, n->m.flags, n->m.n_entries, n->m.offset, n->m.chunk_len, n->m.snap.index);
		if (n->m.type == RAFT_MSG_APPEND &&
		    (n->m.flags & RAFT_MSGF_NOACK))
			s->noack_delivered++;
		int rc = raft_step(rp->raft, &n->m);
		if (rc < 0)
			sim_fail(s, "raft_step %s: %s",
				 raft_msg_type_name(n->m.type),
				 parley_strerror(rc));
		process(s, rp);
	}
	free(n);
}

/* Node liveness (coalesced per node pair, outside Raft): a quiesced
 * follower whose leader's node is down or unreachable wakes up. */
static void liveness(struct sim *s, struct sim_node *nd, uint32_t g)
{
	struct raft *r = nd->rep[g].raft;
	if (!raft_quiesced(r) || raft_role(r) == RAFT_LEADER)
		return;
	int ls = slot_of(s, raft_leader(r));
	int me = slot_of(s, nd->id);
	if (ls < 0 || !s->nodes[ls].up || s->cut[ls][me])
		raft_unquiesce(r);
}

/* The transport's link events as node `me` sees them (parleyd's
 * pe_raft_node_down / _up): true when the set of nodes it can reach (up,
 * not cut either way) changed since its last tick; its quiesced leaders
 * then wake, so one cut off from its quorum is deposed by check-quorum
 * and a node that comes back is caught up. */
static bool reach_changed(struct sim *s, struct sim_node *nd, uint32_t me)
{
	uint32_t m = 0;
	for (uint32_t j = 0; j < s->n_slots; j++)
		if (j != me && s->nodes[j].id && s->nodes[j].up &&
		    !s->cut[me][j] && !s->cut[j][me])
			m |= 1u << j;
	bool ch = m != nd->reach;
	nd->reach = m;
	return ch;
}

/*
 * S2, the prefix half: for every pair of replicas, find the highest index
 * both hold with the same term; every entry both hold below it must be the
 * same entry. (Run every 256 units: O(nodes^2 x log).)
 */
static void check_log_prefixes(struct sim *s)
{
	for (uint32_t a = 0; a < s->n_slots; a++) {
		struct sim_node *na = &s->nodes[a];
		if (!na->id || na->removed || !na->rep)
			continue;
		struct sim_disk *da = &na->rep[0].disk;
		for (uint32_t b = a + 1; b < s->n_slots; b++) {
			struct sim_node *nb = &s->nodes[b];
			if (!nb->id || nb->removed || !nb->rep)
				continue;
			struct sim_disk *db = &nb->rep[0].disk;
			uint64_t lo = PARLEY_MAX(da->snap.index, db->snap.index) + 1;
			uint64_t hi = PARLEY_MIN(da->snap.index + da->n,
						 db->snap.index + db->n);
			bool below = false;
			for (uint64_t i = hi; i >= lo && i > 0; i--) {
				const struct sim_ent *ea =
					&da->log[i - da->snap.index - 1];
				const struct sim_ent *eb =
					&db->log[i - db->snap.index - 1];
				if (ea->torn || eb->torn)
					continue;
				if (ea->e.term == eb->e.term)
					below = true;
				if (!below)
					continue;
				if (ea->e.term != eb->e.term ||
				    (!ea->flipped && !eb->flipped &&
				     ea->e.csum != eb->e.csum))
					sim_fail(s, "S2 log matching: slots %u and %u agree above index %" PRIu64 " but differ at it",
						 a, b, i);
			}
		}
	}
}

static void one_unit(struct sim *s, bool faults)
{
	s->now++;
	if (faults)
		random_faults(s);
	if (chance_ppm(s, s->o.client_ppm))
		client_act(s);
	if (chance_ppm(s, s->o.read_ppm)) {
		int l = sim_leader(s, 0);
		int v = l >= 0 && rnd(s, 4) ? l : (int)rnd(s, s->n_slots);
		if (s->nodes[v].up)
			sim_read(s, v);
	}
	/* ticks (skewed per node) */
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *nd = &s->nodes[i];
		if (!nd->up || nd->next_tick > s->now)
			continue;
		nd->next_tick = s->now + nd->rate;
		bool wake = s->o.quiesce_ticks && reach_changed(s, nd, i);
		for (uint32_t g = 0; g < s->o.groups; g++) {
			struct sim_replica *rp = &nd->rep[g];
			if (!rp->raft)
				continue;
			s->steps++;
			if (wake && raft_role(rp->raft) == RAFT_LEADER)
				raft_unquiesce(rp->raft);
			if (s->o.quiesce_ticks)
				liveness(s, nd, g);
			raft_tick(rp->raft);
			process(s, rp);
		}
	}
	/* deliveries */
	while (s->n_heap && s->heap[0]->at <= s->now)
		deliver(s, heap_pop(s));
	if (s->now % 64 == 0)
		reap_removed(s);
	if (s->now % 256 == 0)
		check_log_prefixes(s);
}

void sim_run(struct sim *s, uint64_t units)
{
	for (uint64_t u = 0; u < units; u++)
		one_unit(s, true);
}

int sim_wait_leader(struct sim *s, uint32_t g, uint64_t max_units)
{
	for (uint64_t u = 0; u < max_units; u++) {
		int l = sim_leader(s, g);
		if (l >= 0)
			return l;
		one_unit(s, false);
	}
	return -1;
}

/* Every acked write is in this replica's state machine with its seq. */
static void check_acked_in(struct sim *s, struct sim_replica *rp)
{
	for (uint32_t c = 0; c < MAX_CLIENTS; c++) {
		struct client *cl = &s->clients[c];
		for (uint32_t k = 0; k < cl->cap; k++) {
			if (!cl->acked_seq[k] || cl->acked_idx[k] > rp->sm.applied)
				continue;
			uint64_t got = sm_get(&rp->sm, c, k);
			if (got != cl->acked_seq[k])
				sim_fail(s, "S5 acked key %u/%u (seq %" PRIu64 " at %" PRIu64 ") lost on slot %d (has %" PRIu64 ", applied %" PRIu64 ")",
					 c, k, cl->acked_seq[k], cl->acked_idx[k],
					 rp->slot, got, rp->sm.applied);
		}
	}
}

uint64_t sim_finish(struct sim *s, uint64_t max_ticks)
{
	struct sim_faults none = {0};
	none.delay_max = s->o.f.delay_max;
	none.skew_pct = s->o.f.skew_pct;
	s->o.f = none;
	sim_heal(s);
	for (uint32_t i = 0; i < s->n_slots; i++) {
		s->nodes[i].lose_next = s->nodes[i].eio_next = false;
		sim_restart(s, (int)i);
	}
	uint64_t start = s->now, limit = max_ticks * SIM_UNITS_PER_TICK;
	uint32_t saved_ppm = s->o.client_ppm;
	s->o.client_ppm = 0;
	/* drop pending client requests: they retry below */
	bool proposed = false;
	uint64_t target = 0;
	while (s->now - start < limit) {
		one_unit(s, false);
		reap_removed(s);
		int l = sim_leader(s, 0);
		if (l < 0)
			continue;
		struct raft *lr = s->nodes[l].rep[0].raft;
		if (!proposed) {
			if (sim_propose(s, l) == 0) {
				proposed = true;
				target = s->clients[0].index;
			}
			continue;
		}
		if (s->clients[0].pending) {
			/* the leader changed before commit: propose again */
			if (raft_term(lr) != s->clients[0].term)
				proposed = false;
			continue;
		}
		/* committed and acked; every member applied it? */
		const struct raft_conf *c = raft_conf(lr);
		bool all = true;
		for (uint32_t i = 0; i < c->n; i++) {
			int sl = slot_of(s, c->ids[i]);
			if (sl < 0 || !s->nodes[sl].up ||
			    s->nodes[sl].rep[0].sm.applied < target) {
				all = false;
				break;
			}
		}
		if (all) {
			for (uint32_t i = 0; i < s->n_slots; i++)
				if (s->nodes[i].up && !s->nodes[i].removed)
					check_acked_in(s, &s->nodes[i].rep[0]);
			s->o.client_ppm = saved_ppm;
			return (s->now - start) / SIM_UNITS_PER_TICK;
		}
	}
	int l = sim_leader(s, 0);
	sim_dump(s);
	sim_fail(s, "liveness: no commit on every member within %" PRIu64 " ticks after faults stopped (leader slot %d)",
		 max_ticks, l);
}

int sim_propose_raw(struct sim *s, int slot, uint32_t g)
{
	struct sim_replica *rp = &s->nodes[slot].rep[g];
	if (!rp->raft)
		return -PARLEY_ECLOSED;
	uint8_t b[4] = {1, 2, 3, 4};
	int rc = raft_propose(rp->raft, b, sizeof(b), NULL);
	if (rc == 0)
		process(s, rp);
	return rc;
}

uint64_t sim_partial_bytes(struct sim *s, int slot)
{
	return s->nodes[slot].rep[0].disk.partial_bytes;
}

uint64_t sim_snap_index(struct sim *s, int slot)
{
	return s->nodes[slot].rep[0].disk.snap.index;
}

uint64_t sim_reads_ok(struct sim *s) { return s->reads_ok; }
uint64_t sim_reads_failed(struct sim *s) { return s->reads_failed; }
uint64_t sim_resumed_chunks(struct sim *s) { return s->resumed_chunks; }
uint64_t sim_torn_dropped(struct sim *s) { return s->torn_dropped; }
uint64_t sim_early_sent(struct sim *s) { return s->early_sent; }
uint64_t sim_noack_delivered(struct sim *s) { return s->noack_delivered; }
uint64_t sim_early_lost(struct sim *s) { return s->early_lost; }
uint64_t sim_node_id(struct sim *s, int slot) { return s->nodes[slot].id; }

void sim_dump(struct sim *s)
{
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *nd = &s->nodes[i];
		struct raft *r = nd->rep ? nd->rep[0].raft : NULL;
		uint64_t dmg = 0;
		if (r)
			raft_damaged(r, &dmg);
		fprintf(stderr,
			"  slot %u id %" PRIu64 " up %d removed %d role %s term %" PRIu64
			" leader %" PRIu64 " commit %" PRIu64 " last %" PRIu64
			" applied %" PRIu64 " snap %" PRIu64 " damaged %" PRIu64
			" quiesced %d conf_n %u\n",
			i, nd->id, nd->up, nd->removed,
			r ? raft_role_name(raft_role(r)) : "-", r ? raft_term(r) : 0,
			r ? raft_leader(r) : 0, r ? raft_commit(r) : 0,
			r ? raft_last_index(r) : 0,
			nd->rep ? nd->rep[0].sm.applied : 0,
			nd->rep ? nd->rep[0].disk.snap.index : 0, dmg,
			r ? raft_quiesced(r) : 0, r ? raft_conf(r)->n : 0);
		if (r) {
			const struct raft_conf *c = raft_conf(r);
			fprintf(stderr, "    conf:");
			for (uint32_t k = 0; k < c->n; k++)
				fprintf(stderr, " %" PRIu64 "%s", c->ids[k],
					c->roles[k] == RAFT_LEARNER ? "L" : "");
			fprintf(stderr, "\n");
		}
	}
}

/* ---- observers --------------------------------------------------------------- */

uint64_t sim_commit(struct sim *s, int slot, uint32_t g)
{
	struct raft *r = s->nodes[slot].rep[g].raft;
	return r ? raft_commit(r) : 0;
}

uint64_t sim_applied(struct sim *s, int slot, uint32_t g)
{
	return s->nodes[slot].rep[g].sm.applied;
}

struct raft *sim_raft(struct sim *s, int slot, uint32_t g)
{
	return s->nodes[slot].up ? s->nodes[slot].rep[g].raft : NULL;
}

uint32_t sim_nodes(struct sim *s) { return s->n_slots; }
uint64_t sim_msgs(struct sim *s) { return s->msgs_sent; }
uint64_t sim_steps(struct sim *s) { return s->steps; }
uint64_t sim_acked(struct sim *s) { return s->acked; }
uint64_t sim_snap_installs(struct sim *s) { return s->installs; }
uint64_t sim_repairs(struct sim *s) { return s->repairs; }
uint64_t sim_now(struct sim *s) { return s->now; }
