/*
 * raft.c — the pure Raft core (see raft.h for the contract, the role state
 * machine and the invariants I1..I5).
 *
 * Log layout in memory:
 *
 *   snap.index | stable (caller's storage) ... stable_last
 *              |                 unstable_first ... last   (owned here)
 *
 *   Entries >= unstable_first are read from `unstable` (not yet durable);
 *   entries in (snap.index, unstable_first) from storage. unstable_first may
 *   be <= stable_last when a conflicting append truncated the stable tail:
 *   the next ready then tells the caller to truncate there.
 *
 * Followers' replication progress (leader only): PROBE (one APPEND at a time
 * until a match is found; fast backtracking from the follower's conflict
 * hints), REPLICATE (pipelined APPENDs, a window of max_inflight messages),
 * SNAPSHOT (chunks of the storage's snapshot; the follower tells the offset
 * it wants next, so a broken transfer resumes).
 *
 * Batching (leader): raft_propose and an answer that opens a follower's
 * window only set append_due; raft_ready's flush_appends then sends each
 * follower one APPEND with every entry since its `next` (bounded by
 * max_batch_*, the window), before flush_commit_bcast, so that APPEND also
 * carries the commit. A round's k proposals in one group cost one APPEND
 * and one answer per follower instead of k of each.
 *
 * Ownership: everything a ready points to (messages, their entries and data,
 * committed entries, chunks) is allocated here and lives to raft_advance():
 * the message and committed-entry arrays are buffers kept from ready to
 * ready, the rest is tracked in r->garbage and freed by raft_advance().
 * Unstable entries own their data; an APPEND lends it (send_append copies
 * only what it reads from storage, whose memory lasts to the next storage
 * call), so unstable data dropped by a truncation goes to the garbage too
 * (r->gdata: it goes back through data_drop, not free) and outlives the
 * messages that borrow it (unstable_free_from). Unstable data is the
 * storage's memory when it provides some (raft_storage.data_alloc). An
 * APPEND made by raft_ready whose entries are all unstable lends the
 * unstable array itself (nothing pushes to it before the advance).
 */
#include "raft.h"

#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

#define RAFT_MAX_INFLIGHT 8
#define RAFT_MAX_PENDING_READS 64
#define RAFT_MAX_APPLY_BATCH 512
#define RAFT_CSUM_SEED 0x52414654454E5452ull /* "RAFTENTR" */

enum pr_state { PR_PROBE = 0, PR_REPLICATE = 1, PR_SNAPSHOT = 2 };

struct raft_progress {
	uint64_t id;
	uint64_t match, next;
	uint64_t read_ack;
	uint64_t damaged;
	uint64_t last_seen; /* follower's last index from its last heartbeat
			     * answer (UINT64_MAX: not heard in this term) */
	uint64_t snap_index, snap_sent, snap_acked, snap_reject;
	uint64_t infl[RAFT_MAX_INFLIGHT]; /* last index of each in-flight APPEND */
	uint8_t infl_head, infl_n;
	uint8_t role, state;
	bool active, probe_sent, voted, granted;
	bool active_prev; /* `active` at the last check-quorum reset */
	bool lost;        /* its last answer said it lost entries (raft_set_lost) */
	uint64_t commit_sent; /* the commit index its last APPEND carried */
	uint16_t snap_stall;
};

struct pending_read {
	uint64_t ctx, index, seq, from; /* from == self: local */
};

struct pending_conf {
	uint64_t index;
	struct raft_conf_change cc;
	bool damaged; /* read damaged at raft_new: cc unknown until the entry
		       * is repaired (conf_repaired); it and every change
		       * after it wait */
};

struct raft {
	struct raft_config cfg;
	struct parley_rng rng;
	uint64_t id;

	/* persistent */
	struct raft_hardstate hs, hs_saved;

	/* log */
	struct raft_snapshot_meta snap;
	uint64_t stable_last;
	uint64_t unstable_first;
	struct raft_entry *unstable;
	uint32_t n_unstable, cap_unstable;
	uint64_t applied;
	uint64_t damaged; /* first damaged index, 0 = none */
	bool lost;        /* may have lost acknowledged entries: neither votes
			     nor campaigns until it holds a leader's whole
			     log (raft_set_lost) */

	/* membership */
	struct raft_conf conf;
	uint64_t conf_at; /* the index `conf` is as of (raft_conf_index) */
	/* conf entries of the log above the commit index, in log order: each
	 * takes effect when its index commits (on_commit_advance). Never
	 * bounded: a follower may hold any number of them before it learns
	 * their commit (a restarted node replays its log's, then receives
	 * the rest); one dropped would never apply (I6) */
	struct pending_conf *pconf;
	uint32_t n_pconf, cap_pconf;
	uint64_t pending_conf_index; /* leader: uncommitted conf entry */
	struct raft_progress pr[RAFT_MAX_MEMBERS];

	/* role */
	enum raft_role role;
	uint64_t leader;
	uint32_t election_elapsed, heartbeat_elapsed, randomized_timeout;
	bool commit_bcast;          /* the commit advanced: followers that no
				     * APPEND told yet get one at raft_ready */
	bool append_due;            /* new entries (proposals) or an opened
				     * window: APPENDs go at raft_ready
				     * (flush_appends) */
	bool lend_unstable;         /* flush_appends runs: an APPEND may lend
				     * the unstable array itself, which no
				     * push moves before the advance */
	uint64_t commit_bcast_skipped; /* followers an APPEND had told already */
	uint64_t commit_noack;         /* commit-only APPENDs sent with NOACK */
	uint64_t noack_unanswered;     /* NOACK APPENDs received, not answered */
	uint32_t idle_ticks;
	uint32_t damaged_elapsed; /* leader ticks spent holding a damaged entry */
	bool quiesced;
	uint64_t transfer_to;
	uint32_t transfer_elapsed;
	uint64_t elections; /* campaigns as candidate (not pre-vote) */

	/* snapshot receive */
	struct raft_snapshot_meta rx;
	uint64_t rx_bytes;

	/* reads */
	struct pending_read *reads; /* grown on demand: idle groups pay nothing */
	uint32_t n_reads, cap_reads;
	uint64_t read_seq;

	/* ready under construction / handed out */
	struct raft_msg *msgs;
	uint32_t n_msgs, cap_msgs;
	struct raft_read *out_reads;
	uint32_t n_out_reads, cap_out_reads;
	void **garbage;
	uint32_t n_garbage, cap_garbage;
	void **gdata; /* dropped unstable data still lent: data_drop at advance */
	uint32_t n_gdata, cap_gdata;
	struct raft_entry *repair;
	uint32_t n_repair, cap_repair;
	/* a ready's committed-entry array and order_early's scratch: kept
	 * from ready to ready (given back with the others when quiesced) */
	struct raft_entry *cbuf;
	uint32_t cap_cbuf;
	struct raft_msg *mtmp;
	uint32_t cap_mtmp;
	bool has_chunk;
	struct raft_snapshot_meta chunk_snap;
	uint64_t chunk_offset;
	uint8_t *chunk;
	uint32_t chunk_len;
	bool chunk_last;
	bool chunk_keep_tail;
	struct raft_ready rd;
	bool in_ready;
	uint64_t rd_last;           /* last unstable index handed out */
	uint64_t rd_applied;        /* applied after this ready */
	uint32_t rd_n_unstable;
};

/* ---- small helpers ------------------------------------------------------ */

uint64_t raft_entry_csum(uint64_t term, uint64_t index, uint8_t type,
			 const void *data, uint32_t len)
{
	uint8_t h[21];
	le_put64(h, term);
	le_put64(h + 8, index);
	h[16] = type;
	le_put32(h + 17, len);
	uint64_t s = parley_xxh3(h, sizeof(h), RAFT_CSUM_SEED);
	return parley_xxh3(data ? data : (const void *)"", len, s);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	PARLEY_ASSERT(p != NULL);
	return p;
}

static void *grow(void *p, uint32_t *cap, uint32_t need, size_t elem)
{
	if (need <= *cap)
		return p;
	uint32_t c = *cap ? *cap : 8;
	while (c < need)
		c *= 2;
	p = realloc(p, (size_t)c * elem);
	PARLEY_ASSERT(p != NULL);
	*cap = c;
	return p;
}

/* Queues the conf entry at `index` (after every one queued); cc NULL: its
 * payload is damaged, the change is read again once repaired. */
static void pconf_push(struct raft *r, uint64_t index,
		       const struct raft_conf_change *cc)
{
	PARLEY_ASSERT(!r->n_pconf || r->pconf[r->n_pconf - 1].index < index);
	r->pconf = grow(r->pconf, &r->cap_pconf, r->n_pconf + 1,
			sizeof(*r->pconf));
	r->pconf[r->n_pconf] = (struct pending_conf){
		.index = index, .cc = cc ? *cc : (struct raft_conf_change){0},
		.damaged = cc == NULL};
	r->n_pconf++;
}

static void keep(struct raft *r, void *p)
{
	r->garbage = grow(r->garbage, &r->cap_garbage, r->n_garbage + 1,
			  sizeof(void *));
	r->garbage[r->n_garbage++] = p;
}

/* The core's own copy of an entry's data (unstable entries): the
 * storage's memory when it provides some (raft_storage.data_alloc), else
 * malloc's; data_drop gives it back the same way, once per data_new. */
static uint8_t *data_new(struct raft *r, uint32_t len)
{
	if (!r->cfg.storage.data_alloc)
		return xmalloc(len);
	uint8_t *d = r->cfg.storage.data_alloc(r->cfg.storage.ctx, len);
	PARLEY_ASSERT(d != NULL);
	return d;
}

static void data_drop(struct raft *r, const uint8_t *d)
{
	if (r->cfg.storage.data_free)
		r->cfg.storage.data_free(r->cfg.storage.ctx, (void *)d);
	else
		free((void *)d);
}

/* Frees the garbage: the ready's allocations and dropped unstable data. */
static void garbage_free(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_garbage; i++)
		free(r->garbage[i]);
	r->n_garbage = 0;
	for (uint32_t i = 0; i < r->n_gdata; i++)
		data_drop(r, r->gdata[i]);
	r->n_gdata = 0;
}

const char *raft_msg_type_name(uint8_t t)
{
	static const char *n[] = {"NONE", "APPEND", "APPEND_RESP", "VOTE",
				  "VOTE_RESP", "PREVOTE", "PREVOTE_RESP",
				  "HEARTBEAT", "HEARTBEAT_RESP", "SNAPSHOT",
				  "SNAPSHOT_RESP", "TIMEOUT_NOW", "READ_INDEX",
				  "READ_INDEX_RESP"};
	return t < PARLEY_ARRAY_LEN(n) ? n[t] : "?";
}

const char *raft_role_name(enum raft_role role)
{
	switch (role) {
	case RAFT_FOLLOWER: return "follower";
	case RAFT_PRECANDIDATE: return "precandidate";
	case RAFT_CANDIDATE: return "candidate";
	case RAFT_LEADER: return "leader";
	}
	return "?";
}

/* ---- membership helpers ------------------------------------------------- */

int raft_conf_find(const struct raft_conf *c, uint64_t id)
{
	for (uint32_t i = 0; i < c->n; i++)
		if (c->ids[i] == id)
			return (int)i;
	return -1;
}

static uint32_t conf_voters(const struct raft_conf *c)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->n; i++)
		n += c->roles[i] == RAFT_VOTER;
	return n;
}

int raft_conf_change_encode(const struct raft_conf_change *cc,
			    uint8_t out[RAFT_CONF_CHANGE_BYTES])
{
	if (cc->op < RAFT_CONF_ADD_VOTER || cc->op > RAFT_CONF_REMOVE ||
	    cc->node == 0)
		return -PARLEY_EINVAL;
	out[0] = cc->op;
	le_put64(out + 1, cc->node);
	return 0;
}

int raft_conf_change_decode(const uint8_t *p, uint32_t len,
			    struct raft_conf_change *cc)
{
	if (len != RAFT_CONF_CHANGE_BYTES || !p)
		return -PARLEY_EINVAL;
	cc->op = p[0];
	cc->node = le_get64(p + 1);
	if (cc->op < RAFT_CONF_ADD_VOTER || cc->op > RAFT_CONF_REMOVE ||
	    cc->node == 0)
		return -PARLEY_EINVAL;
	return 0;
}

int raft_conf_apply(struct raft_conf *c, const struct raft_conf_change *cc)
{
	int s = raft_conf_find(c, cc->node);
	switch (cc->op) {
	case RAFT_CONF_ADD_VOTER:
	case RAFT_CONF_ADD_LEARNER:
		/* a node that is not a member joins; one removed before may
		 * join again, with its own log (an id always names the same
		 * node and its data: never another node's) */
		if (s >= 0 || c->n >= RAFT_MAX_MEMBERS)
			return -PARLEY_EINVAL;
		c->ids[c->n] = cc->node;
		c->roles[c->n] = cc->op == RAFT_CONF_ADD_VOTER ? RAFT_VOTER
							       : RAFT_LEARNER;
		c->n++;
		if (cc->node > c->max_id)
			c->max_id = cc->node;
		return 0;
	case RAFT_CONF_PROMOTE:
		if (s < 0 || c->roles[s] != RAFT_LEARNER)
			return -PARLEY_EINVAL;
		c->roles[s] = RAFT_VOTER;
		return 0;
	case RAFT_CONF_REMOVE:
		if (s < 0)
			return -PARLEY_EINVAL;
		if (c->roles[s] == RAFT_VOTER && conf_voters(c) == 1)
			return -PARLEY_EINVAL;
		for (uint32_t i = (uint32_t)s; i + 1 < c->n; i++) {
			c->ids[i] = c->ids[i + 1];
			c->roles[i] = c->roles[i + 1];
		}
		c->n--;
		return 0;
	}
	return -PARLEY_EINVAL;
}

static struct raft_progress *pr_find(struct raft *r, uint64_t id)
{
	for (uint32_t i = 0; i < r->conf.n; i++)
		if (r->pr[i].id == id)
			return &r->pr[i];
	return NULL;
}

static bool is_voter(const struct raft *r, uint64_t id)
{
	int s = raft_conf_find(&r->conf, id);
	return s >= 0 && r->conf.roles[s] == RAFT_VOTER;
}

static uint32_t quorum(const struct raft *r)
{
	return conf_voters(&r->conf) / 2 + 1;
}

/* Rebuild the progress slots after a configuration change, keeping what
 * is known about members that stay. */
static void pr_rebuild(struct raft *r, uint64_t last)
{
	struct raft_progress old[RAFT_MAX_MEMBERS];
	memcpy(old, r->pr, sizeof(old));
	uint32_t old_n = RAFT_MAX_MEMBERS;
	memset(r->pr, 0, sizeof(r->pr));
	for (uint32_t i = 0; i < r->conf.n; i++) {
		struct raft_progress *p = &r->pr[i];
		bool found = false;
		for (uint32_t j = 0; j < old_n; j++) {
			if (old[j].id == r->conf.ids[i] && old[j].id != 0) {
				*p = old[j];
				found = true;
				break;
			}
		}
		if (!found) {
			p->id = r->conf.ids[i];
			p->next = last + 1;
			p->state = PR_PROBE;
			p->active = true;
		}
		p->role = r->conf.roles[i];
	}
}

/* ---- log access -------------------------------------------------------- */

static uint64_t last_index(const struct raft *r)
{
	/* unstable_first is stable_last + 1, or lower after a truncation */
	return r->unstable_first + r->n_unstable - 1;
}

/* Durable and not about to be truncated. */
static uint64_t durable_last(const struct raft *r)
{
	uint64_t d = r->stable_last;
	if (r->unstable_first <= d)
		d = r->unstable_first - 1;
	return d;
}

/* Reads entry `i`. *e borrows storage/unstable memory valid until the next
 * storage call. Returns 0, -PARLEY_ENOTFOUND (compacted / beyond the end) or
 * -PARLEY_ECORRUPT (term/index valid, payload not). The payload is hashed
 * again unless the storage vouches for it (raft_storage.verified_data):
 * unstable entries were verified or hashed from their bytes when taken. */
static int log_get(struct raft *r, uint64_t i, struct raft_entry *e)
{
	if (i <= r->snap.index || i > last_index(r))
		return -PARLEY_ENOTFOUND;
	if (i >= r->unstable_first) {
		*e = r->unstable[i - r->unstable_first];
		return 0;
	}
	int rc = r->cfg.storage.entry(r->cfg.storage.ctx, i, e);
	if (rc == -PARLEY_ECORRUPT)
		return rc;
	if (rc < 0)
		return rc;
	if (e->index != i)
		return -PARLEY_ECORRUPT;
	if (!r->cfg.storage.verified_data && !raft_entry_ok(e))
		return -PARLEY_ECORRUPT;
	return 0;
}

/* Only the term is read, so the payload's checksum is not computed: the
 * term survives a damaged payload (the storage contract), and log_get,
 * which verifies it, is what every apply and send reads through. (The
 * term lookups of a replication round — the leader's prev-index terms,
 * its commit check, the follower's match check — hashed every payload
 * they touched.) */
uint64_t raft_term_at(struct raft *r, uint64_t i)
{
	if (i == r->snap.index)
		return r->snap.term;
	if (i < r->snap.index || i > last_index(r))
		return 0;
	if (i >= r->unstable_first)
		return r->unstable[i - r->unstable_first].term;
	struct raft_entry e;
	int rc = r->cfg.storage.entry(r->cfg.storage.ctx, i, &e);
	if (rc == 0 || rc == -PARLEY_ECORRUPT)
		return e.term;
	return 0;
}

static uint64_t last_term(struct raft *r)
{
	return raft_term_at(r, last_index(r));
}

static struct raft_msg *msg_new(struct raft *r, uint8_t type, uint64_t to);
static void mark_damaged_resp(struct raft *r, struct raft_msg *m);

/* A follower holding a damaged entry tells its leader so, unasked: an
 * answer-shaped HEARTBEAT_RESP with RAFT_MSGF_DAMAGED (the leader repairs
 * from it as from any answer, and a quiesced leader wakes on it). Needed
 * because a follower may find the damage only when it applies, after it
 * answered the message that raised its commit (a restarted node learns its
 * commit from its leader): if that was a QUIESCE heartbeat, nobody would
 * speak again. */
static void tell_damaged(struct raft *r)
{
	if (r->role != RAFT_FOLLOWER || !r->leader || !r->damaged)
		return;
	struct raft_msg *m = msg_new(r, RAFT_MSG_HEARTBEAT_RESP, r->leader);
	m->index = last_index(r);
	mark_damaged_resp(r, m);
}

static void note_damaged(struct raft *r, uint64_t i)
{
	if (r->damaged == 0 || i < r->damaged) {
		r->damaged = i;
		PLOG_W("raft", "damaged entry", "node=%llu group=%llu index=%llu",
		       (unsigned long long)r->id,
		       (unsigned long long)r->cfg.group,
		       (unsigned long long)i);
		/* a follower stays awake until repaired (handle_heartbeat
		 * does not quiesce it meanwhile) and asks at once */
		if (r->role != RAFT_LEADER) {
			r->quiesced = false;
			tell_damaged(r);
		}
	}
}

/*
 * Drops unstable entries k.. . Their data may be borrowed by messages
 * queued since the last advance (send_append lends unstable payloads
 * instead of copying them), so unless the caller says no message can
 * hold them (`now`: raft_advance after the garbage went, raft_free) it
 * goes to the garbage, freed at the next advance like the messages.
 */
static void unstable_free_from(struct raft *r, uint32_t k, bool now)
{
	for (uint32_t j = k; j < r->n_unstable; j++) {
		if (now) {
			data_drop(r, r->unstable[j].data);
		} else {
			r->gdata = grow(r->gdata, &r->cap_gdata, r->n_gdata + 1,
					sizeof(void *));
			r->gdata[r->n_gdata++] = (void *)r->unstable[j].data;
		}
	}
	r->n_unstable = k;
}

/* Appends an owned copy of e (which must follow last_index()). */
static void unstable_push(struct raft *r, const struct raft_entry *e)
{
	PARLEY_ASSERT(e->index == r->unstable_first + r->n_unstable);
	r->unstable = grow(r->unstable, &r->cap_unstable, r->n_unstable + 1,
			   sizeof(*r->unstable));
	struct raft_entry c = *e;
	uint8_t *d = data_new(r, e->len);
	if (e->len)
		memcpy(d, e->data, e->len);
	c.data = d;
	r->unstable[r->n_unstable++] = c;
	if (e->type == RAFT_ENTRY_CONF) {
		struct raft_conf_change cc;
		if (raft_conf_change_decode(e->data, e->len, &cc) == 0)
			pconf_push(r, e->index, &cc);
	}
}

/* Drops every entry >= i (never a committed one: I3). */
static void log_truncate(struct raft *r, uint64_t i)
{
	PARLEY_ASSERT(i > r->hs.commit);
	PARLEY_ASSERT(r->role != RAFT_LEADER);
	if (i >= r->unstable_first) {
		unstable_free_from(r, (uint32_t)(i - r->unstable_first), false);
	} else {
		/* below the stable tail: the next ready's entries start at i,
		 * which tells the caller to truncate there (the caller always
		 * appends right after, see handle_append) */
		unstable_free_from(r, 0, false);
		r->unstable_first = i;
	}
	uint32_t k = 0;
	for (uint32_t j = 0; j < r->n_pconf; j++)
		if (r->pconf[j].index < i)
			r->pconf[k++] = r->pconf[j];
	r->n_pconf = k;
	if (r->damaged >= i)
		r->damaged = 0;
}

/* ---- messages ---------------------------------------------------------- */

static struct raft_msg *msg_new(struct raft *r, uint8_t type, uint64_t to)
{
	r->msgs = grow(r->msgs, &r->cap_msgs, r->n_msgs + 1, sizeof(*r->msgs));
	struct raft_msg *m = &r->msgs[r->n_msgs++];
	memset(m, 0, sizeof(*m));
	m->type = type;
	m->group = r->cfg.group;
	m->from = r->id;
	m->to = to;
	m->term = r->hs.term;
	return m;
}

static void out_read(struct raft *r, uint64_t ctx, uint64_t index, int err)
{
	r->out_reads = grow(r->out_reads, &r->cap_out_reads,
			    r->n_out_reads + 1, sizeof(*r->out_reads));
	r->out_reads[r->n_out_reads++] =
		(struct raft_read){.ctx = ctx, .index = index, .err = err};
}

/* ---- role changes ------------------------------------------------------ */

static void reset_timeout(struct raft *r)
{
	r->election_elapsed = 0;
	r->heartbeat_elapsed = 0;
	r->randomized_timeout =
		r->cfg.election_ticks +
		(uint32_t)parley_rng_below(&r->rng, r->cfg.election_ticks);
}

static void fail_reads(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_reads; i++) {
		struct pending_read *p = &r->reads[i];
		if (p->from == r->id)
			out_read(r, p->ctx, 0, -PARLEY_ENOTLEADER);
		else {
			struct raft_msg *m =
				msg_new(r, RAFT_MSG_READ_INDEX_RESP, p->from);
			m->ctx = p->ctx;
			m->flags = RAFT_MSGF_REJECT;
		}
	}
	r->n_reads = 0;
}

static void set_term(struct raft *r, uint64_t term)
{
	PARLEY_ASSERT(term >= r->hs.term); /* I1 */
	if (term > r->hs.term) {
		r->hs.term = term;
		r->hs.vote = 0;
	}
}

static void become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
	if (r->role == RAFT_LEADER)
		fail_reads(r);
	set_term(r, term);
	r->role = RAFT_FOLLOWER;
	r->leader = leader;
	r->transfer_to = 0;
	r->quiesced = false;
	r->pending_conf_index = 0;
	reset_timeout(r);
}

static void send_append(struct raft *r, struct raft_progress *p, bool empty_ok);

static void bcast_append(struct raft *r, bool empty_ok)
{
	for (uint32_t i = 0; i < r->conf.n; i++)
		if (r->pr[i].id != r->id)
			send_append(r, &r->pr[i], empty_ok);
}

static void append_local(struct raft *r, uint8_t type, const void *data,
			 uint32_t len)
{
	struct raft_entry e = {.term = r->hs.term,
			       .index = last_index(r) + 1,
			       .type = type,
			       .len = len,
			       .data = data};
	e.csum = raft_entry_csum(e.term, e.index, type, data, len);
	unstable_push(r, &e);
	r->idle_ticks = 0;
}

static void become_leader(struct raft *r)
{
	PARLEY_ASSERT(r->role == RAFT_CANDIDATE);
	r->role = RAFT_LEADER;
	r->leader = r->id;
	r->transfer_to = 0;
	r->n_reads = 0;
	r->quiesced = false;
	r->idle_ticks = 0;
	reset_timeout(r);
	uint64_t last = last_index(r);
	for (uint32_t i = 0; i < r->conf.n; i++) {
		struct raft_progress *p = &r->pr[i];
		uint64_t id = p->id;
		uint8_t role = p->role;
		memset(p, 0, sizeof(*p));
		p->id = id;
		p->role = role;
		p->next = last + 1;
		p->active = true;
		p->last_seen = UINT64_MAX;
		if (id == r->id)
			p->match = durable_last(r);
	}
	r->pending_conf_index = 0;
	for (uint32_t j = 0; j < r->n_pconf; j++)
		if (r->pconf[j].index > r->hs.commit)
			r->pending_conf_index = r->pconf[j].index;
	append_local(r, RAFT_ENTRY_NOOP, NULL, 0);
	PLOG_D("raft", "became leader", "node=%llu term=%llu",
	       (unsigned long long)r->id, (unsigned long long)r->hs.term);
	bcast_append(r, true);
}

static void campaign(struct raft *r, bool pre, bool transfer)
{
	if (!is_voter(r, r->id))
		return;
	if (r->lost) { /* raft_set_lost: it may lack committed entries */
		reset_timeout(r);
		return;
	}
	if (r->role == RAFT_LEADER)
		return;
	for (uint32_t i = 0; i < r->conf.n; i++)
		r->pr[i].voted = r->pr[i].granted = false;
	uint64_t term;
	uint8_t type;
	if (pre) {
		r->role = RAFT_PRECANDIDATE;
		r->leader = 0;
		term = r->hs.term + 1;
		type = RAFT_MSG_PREVOTE;
	} else {
		set_term(r, r->hs.term + 1);
		r->hs.vote = r->id;
		r->role = RAFT_CANDIDATE;
		r->elections++;
		r->leader = 0;
		term = r->hs.term;
		type = RAFT_MSG_VOTE;
	}
	r->quiesced = false;
	reset_timeout(r);
	struct raft_progress *self = pr_find(r, r->id);
	self->voted = self->granted = true;
	if (quorum(r) == 1) {
		if (pre)
			campaign(r, false, transfer);
		else
			become_leader(r);
		return;
	}
	uint64_t li = last_index(r), lt = last_term(r);
	for (uint32_t i = 0; i < r->conf.n; i++) {
		struct raft_progress *p = &r->pr[i];
		if (p->id == r->id || p->role != RAFT_VOTER)
			continue;
		struct raft_msg *m = msg_new(r, type, p->id);
		m->term = term;
		m->index = li;
		m->log_term = lt;
		if (transfer)
			m->flags |= RAFT_MSGF_TRANSFER;
	}
}

/* ---- replication (leader) ---------------------------------------------- */

static bool infl_full(const struct raft *r, const struct raft_progress *p)
{
	uint32_t w = r->cfg.max_inflight ? r->cfg.max_inflight : 1;
	if (w > RAFT_MAX_INFLIGHT)
		w = RAFT_MAX_INFLIGHT;
	return p->infl_n >= w;
}

static void infl_add(struct raft_progress *p, uint64_t last)
{
	uint32_t pos = (p->infl_head + p->infl_n) % RAFT_MAX_INFLIGHT;
	p->infl[pos] = last;
	p->infl_n++;
}

static void infl_free_to(struct raft_progress *p, uint64_t idx)
{
	while (p->infl_n && p->infl[p->infl_head] <= idx) {
		p->infl_head = (uint8_t)((p->infl_head + 1) % RAFT_MAX_INFLIGHT);
		p->infl_n--;
	}
}

static void pr_become(struct raft_progress *p, enum pr_state st)
{
	p->state = st;
	p->probe_sent = false;
	p->infl_n = 0;
	p->infl_head = 0;
	if (st == PR_PROBE || st == PR_REPLICATE)
		p->next = p->match + 1;
}

/*
 * A leader holding a damaged entry cannot send it. It hands leadership
 * (TimeoutNow) to the voter known to hold the most of its log past the damaged
 * index; the new leader then repairs it. Until such a voter is known it keeps
 * replicating (a probe that matches past the damaged index reveals one);
 * after two election timeouts without one it steps down. Campaigning while
 * damaged is safe: the entry's term and index are intact, so the vote rules
 * see the log as it is.
 */
static void send_append(struct raft *r, struct raft_progress *p, bool empty_ok);

static void damaged_handoff(struct raft *r)
{
	if (r->role != RAFT_LEADER || !r->damaged || r->transfer_to)
		return;
	struct raft_progress *best = NULL;
	for (uint32_t i = 0; i < r->conf.n; i++) {
		struct raft_progress *p = &r->pr[i];
		if (p->id == r->id || p->role != RAFT_VOTER ||
		    p->match < r->damaged)
			continue;
		if (!best || p->match > best->match)
			best = p;
	}
	if (!best)
		return;
	r->transfer_to = best->id;
	r->transfer_elapsed = 0;
	if (best->match == last_index(r))
		msg_new(r, RAFT_MSG_TIMEOUT_NOW, best->id);
	else
		send_append(r, best, false);
}

/*
 * A damaged entry above commit that too many voters lack to have ever been
 * committed: a committed entry is durable on a quorum, and a voter drops an
 * acknowledged entry only when a leader overwrites it, which never happens
 * to a committed one. If more than (voters - quorum) voters report a log
 * that ends before it, fewer than a quorum can hold it.
 */
static bool damaged_uncommitted(struct raft *r)
{
	if (r->damaged <= r->hs.commit)
		return false;
	uint32_t lacking = 0, voters = 0;
	for (uint32_t i = 0; i < r->conf.n; i++) {
		struct raft_progress *p = &r->pr[i];
		if (p->role != RAFT_VOTER)
			continue;
		voters++;
		if (p->id != r->id && p->last_seen < r->damaged)
			lacking++;
	}
	return lacking > voters - quorum(r);
}

static void step_down_damaged(struct raft *r, uint64_t i)
{
	note_damaged(r, i);
	damaged_handoff(r);
}

static void send_snapshot_chunks(struct raft *r, struct raft_progress *p)
{
	if (p->snap_index != r->snap.index) {
		p->snap_index = r->snap.index;
		p->snap_sent = p->snap_acked = p->snap_reject = 0;
	}
	uint32_t chunk = r->cfg.chunk_bytes ? r->cfg.chunk_bytes
					    : RAFT_MAX_CHUNK_BYTES;
	if (chunk > RAFT_MAX_CHUNK_BYTES)
		chunk = RAFT_MAX_CHUNK_BYTES;
	uint32_t window = 4; /* chunks in flight */
	while (p->snap_sent < r->snap.size + (r->snap.size == 0) &&
	       p->snap_sent - p->snap_acked < (uint64_t)chunk * window) {
		uint64_t off = p->snap_sent;
		uint32_t n = (uint32_t)PARLEY_MIN((uint64_t)chunk,
						  r->snap.size - off);
		uint8_t *buf = xmalloc(n);
		int rc = n ? r->cfg.storage.snapshot_read(r->cfg.storage.ctx,
							  off, buf, n)
			   : 0;
		if (rc < 0 || (uint32_t)rc != n) {
			free(buf);
			return; /* retried on the next heartbeat */
		}
		keep(r, buf);
		struct raft_msg *m = msg_new(r, RAFT_MSG_SNAPSHOT, p->id);
		m->snap = r->snap;
		m->index = r->snap.index;
		m->offset = off;
		m->chunk = buf;
		m->chunk_len = n;
		m->commit = r->hs.commit;
		if (off + n >= r->snap.size)
			m->flags |= RAFT_MSGF_LAST;
		p->snap_sent = off + n + (r->snap.size == 0);
		if (r->snap.size == 0)
			break;
	}
}

/* Sends the entries p needs (or a snapshot). */
static void send_append(struct raft *r, struct raft_progress *p, bool empty_ok)
{
	if (p->id == r->id)
		return;
	if (p->state == PR_SNAPSHOT) {
		send_snapshot_chunks(r, p);
		return;
	}
	if (p->state == PR_PROBE && p->probe_sent)
		return;
	if (p->state == PR_REPLICATE && infl_full(r, p))
		return;
	uint64_t last = last_index(r);
	if (p->next > last + 1)
		p->next = last + 1;
	if (p->next <= last && p->damaged && p->damaged < p->next &&
	    p->damaged > p->match)
		p->next = p->damaged;
	if (p->next > last && !empty_ok)
		return;
	uint64_t prev = p->next - 1;
	if (prev < r->snap.index) {
		pr_become(p, PR_SNAPSHOT);
		send_snapshot_chunks(r, p);
		return;
	}
	uint64_t pterm = raft_term_at(r, prev);
	/* gather entries [next, ...] bounded by batch limits */
	uint32_t maxn = r->cfg.max_batch_entries ? r->cfg.max_batch_entries : 64;
	if (maxn > RAFT_MAX_MSG_ENTRIES)
		maxn = RAFT_MAX_MSG_ENTRIES;
	uint32_t maxb = r->cfg.max_batch_bytes ? r->cfg.max_batch_bytes
					       : (1u << 20);
	uint32_t n = 0;
	size_t bytes = 0;
	struct raft_entry tmp[RAFT_MAX_MSG_ENTRIES];
	uint8_t *datas[RAFT_MAX_MSG_ENTRIES];
	for (uint64_t i = p->next; i <= last && n < maxn; i++) {
		struct raft_entry e;
		int rc = log_get(r, i, &e);
		if (rc == -PARLEY_ENOTFOUND) {
			/* compacted under us: fall back to a snapshot */
			for (uint32_t k = 0; k < n; k++)
				free(datas[k]);
			pr_become(p, PR_SNAPSHOT);
			send_snapshot_chunks(r, p);
			return;
		}
		if (rc < 0) {
			for (uint32_t k = 0; k < n; k++)
				free(datas[k]);
			step_down_damaged(r, i);
			return;
		}
		if (n > 0 && bytes + e.len > maxb)
			break;
		tmp[n] = e;
		if (i >= r->unstable_first) {
			/* lent: unstable data lives until the advance that
			 * takes this message (unstable_free_from) */
			datas[n] = NULL;
		} else {
			/* storage memory lasts only to the next storage call */
			datas[n] = xmalloc(e.len);
			if (e.len)
				memcpy(datas[n], e.data, e.len);
			tmp[n].data = datas[n];
		}
		bytes += e.len;
		n++;
	}
	struct raft_msg *m = msg_new(r, RAFT_MSG_APPEND, p->id);
	m->index = prev;
	m->log_term = pterm;
	m->commit = r->hs.commit;
	if (n && r->lend_unstable && p->next >= r->unstable_first) {
		/* all unstable, contiguous in r->unstable, which nothing
		 * pushes to (or frees) before the advance of this ready */
		m->entries = &r->unstable[p->next - r->unstable_first];
		m->n_entries = n;
	} else if (n) {
		struct raft_entry *es = xmalloc(sizeof(*es) * n);
		memcpy(es, tmp, sizeof(*es) * n);
		keep(r, es);
		for (uint32_t k = 0; k < n; k++)
			if (datas[k])
				keep(r, datas[k]);
		m->entries = es;
		m->n_entries = n;
	}
	uint64_t sent_last = prev + n;
	p->commit_sent = m->commit;
	if (p->state == PR_REPLICATE) {
		if (n) {
			p->next = sent_last + 1;
			infl_add(p, sent_last);
		}
	} else {
		p->probe_sent = true;
	}
}

/* Resends entries from `from` to a follower that reported them damaged,
 * outside the normal window (progress unchanged). */
static void send_repair(struct raft *r, struct raft_progress *p, uint64_t from)
{
	if (p->state == PR_SNAPSHOT || from == 0 || from > last_index(r))
		return;
	if (from - 1 < r->snap.index) {
		pr_become(p, PR_SNAPSHOT);
		send_snapshot_chunks(r, p);
		return;
	}
	uint32_t n = 0;
	struct raft_entry tmp[16];
	for (uint64_t i = from; i <= last_index(r) && n < 16; i++) {
		struct raft_entry e;
		int rc = log_get(r, i, &e);
		if (rc == -PARLEY_ENOTFOUND)
			break;
		if (rc < 0) {
			step_down_damaged(r, i);
			break;
		}
		uint8_t *d = xmalloc(e.len);
		if (e.len)
			memcpy(d, e.data, e.len);
		keep(r, d);
		tmp[n] = e;
		tmp[n].data = d;
		n++;
	}
	if (!n)
		return;
	struct raft_entry *es = xmalloc(sizeof(*es) * n);
	memcpy(es, tmp, sizeof(*es) * n);
	keep(r, es);
	struct raft_msg *m = msg_new(r, RAFT_MSG_APPEND, p->id);
	m->index = from - 1;
	m->log_term = raft_term_at(r, from - 1);
	m->commit = PARLEY_MIN(r->hs.commit, p->match);
	m->entries = es;
	m->n_entries = n;
}

static void send_heartbeat(struct raft *r, struct raft_progress *p, bool q)
{
	struct raft_msg *m = msg_new(r, RAFT_MSG_HEARTBEAT, p->id);
	m->commit = PARLEY_MIN(p->match, r->hs.commit);
	m->ctx = r->read_seq;
	if (q)
		m->flags |= RAFT_MSGF_QUIESCE;
	if (p->lost) { /* tell it where this log ends (handle_heartbeat) */
		m->flags |= RAFT_MSGF_LOST;
		m->index = last_index(r);
		m->log_term = last_term(r);
	}
}

static void bcast_heartbeat(struct raft *r, bool q)
{
	for (uint32_t i = 0; i < r->conf.n; i++)
		if (r->pr[i].id != r->id)
			send_heartbeat(r, &r->pr[i], q);
}

static void apply_conf_change(struct raft *r, const struct raft_conf_change *cc);

/* Commit-time effects: membership changes take effect when committed. */
static void on_commit_advance(struct raft *r)
{
	for (;;) {
		uint32_t k = r->n_pconf;
		for (uint32_t j = 0; j < r->n_pconf; j++) {
			if (r->pconf[j].index <= r->hs.commit) {
				if (r->pconf[j].damaged)
					break; /* in order: wait for its repair */
				struct raft_conf_change cc = r->pconf[j].cc;
				r->conf_at = r->pconf[j].index;
				memmove(&r->pconf[j], &r->pconf[j + 1],
					(r->n_pconf - j - 1) *
						sizeof(r->pconf[0]));
				r->n_pconf--;
				apply_conf_change(r, &cc);
				break;
			}
		}
		if (k == r->n_pconf)
			break;
	}
	if (r->pending_conf_index && r->pending_conf_index <= r->hs.commit)
		r->pending_conf_index = 0;
}

static void maybe_commit(struct raft *r)
{
	uint64_t m[RAFT_MAX_MEMBERS];
	uint32_t n = 0;
	for (uint32_t i = 0; i < r->conf.n; i++)
		if (r->pr[i].role == RAFT_VOTER)
			m[n++] = r->pr[i].match;
	if (n == 0)
		return;
	/* sort descending (n <= 9) */
	for (uint32_t i = 1; i < n; i++)
		for (uint32_t j = i; j > 0 && m[j] > m[j - 1]; j--) {
			uint64_t t = m[j];
			m[j] = m[j - 1];
			m[j - 1] = t;
		}
	uint64_t c = m[n / 2 + 1 - 1];
	if (c > r->hs.commit && raft_term_at(r, c) == r->hs.term) {
		r->hs.commit = c;
		on_commit_advance(r);
		if (r->role == RAFT_LEADER)
			r->commit_bcast = true; /* flush_commit_bcast */
	}
}

/*
 * The APPENDs of new entries (raft_propose, an answer that opened a window:
 * append_due), made when the ready is taken: each follower gets one APPEND
 * with every entry from its next index on (the batch limits, the window),
 * so a group's k proposals of a round cost one message and one answer per
 * follower, not k of each (and none waits for the window to reopen).
 */
static void flush_appends(struct raft *r)
{
	if (!r->append_due)
		return;
	r->append_due = false;
	if (r->role != RAFT_LEADER)
		return;
	for (uint32_t i = 0; i < r->conf.n; i++) {
		struct raft_progress *p = &r->pr[i];
		if (p->id == r->id)
			continue;
		if (p->state != PR_REPLICATE) {
			send_append(r, p, false); /* a probe, a snapshot */
			continue;
		}
		while (p->next <= last_index(r) && !infl_full(r, p)) {
			uint64_t before = p->next;
			send_append(r, p, false);
			if (p->next == before || r->role != RAFT_LEADER)
				break;
		}
	}
}

/*
 * The followers learn a commit advance from an APPEND. It used to leave
 * at once, from maybe_commit; it now leaves when the ready is taken, and
 * only to followers that no APPEND sent since has told: under load the
 * step batch that advanced the commit is usually followed, in the same
 * ready, by proposals whose APPENDs carry the new commit index, and
 * several advances in one batch make one message. Same ready, same
 * content: nothing reaches a follower later than before.
 */
static void flush_commit_bcast(struct raft *r)
{
	if (!r->commit_bcast)
		return;
	r->commit_bcast = false;
	if (r->role != RAFT_LEADER)
		return;
	for (uint32_t i = 0; i < r->conf.n; i++) {
		struct raft_progress *p = &r->pr[i];
		if (p->id == r->id)
			continue;
		if (p->commit_sent >= r->hs.commit) {
			r->commit_bcast_skipped++;
			continue;
		}
		uint32_t k = r->n_msgs;
		bool repl = p->state == PR_REPLICATE;
		send_append(r, p, true);
		/* only the commit index is new to a follower that holds (or
		 * is being sent) everything up to `index`: its answer would
		 * tell nothing the APPENDs of those entries' answers do not
		 * (raft.h, RAFT_MSGF_NOACK); a probe or one with entries is
		 * answered as ever */
		if (repl && r->n_msgs == k + 1 &&
		    r->msgs[k].type == RAFT_MSG_APPEND &&
		    r->msgs[k].n_entries == 0) {
			r->msgs[k].flags |= RAFT_MSGF_NOACK;
			r->commit_noack++;
		}
	}
}

static void apply_conf_change(struct raft *r, const struct raft_conf_change *cc)
{
	struct raft_conf c = r->conf;
	if (raft_conf_apply(&c, cc) < 0) {
		/* a committed change that does not apply (e.g. a duplicate
		 * proposal): every node skips it the same way */
		PLOG_W("raft", "conf change skipped", "node=%llu op=%u target=%llu",
		       (unsigned long long)r->id, cc->op,
		       (unsigned long long)cc->node);
		return;
	}
	r->conf = c;
	pr_rebuild(r, last_index(r));
	if (r->role == RAFT_LEADER) {
		if (!is_voter(r, r->id)) {
			/* tell the remaining members the change committed
			 * before stepping down, so they elect among themselves */
			bcast_append(r, true);
			become_follower(r, r->hs.term, 0);
			return;
		}
		maybe_commit(r);
	}
}

/* ---- ReadIndex ---------------------------------------------------------- */

static void check_reads(struct raft *r)
{
	uint32_t done = 0;
	for (; done < r->n_reads; done++) {
		struct pending_read *p = &r->reads[done];
		uint32_t acks = 0;
		for (uint32_t i = 0; i < r->conf.n; i++)
			if (r->pr[i].role == RAFT_VOTER &&
			    (r->pr[i].id == r->id || r->pr[i].read_ack >= p->seq))
				acks++;
		if (acks < quorum(r))
			break;
		if (p->from == r->id) {
			out_read(r, p->ctx, p->index, 0);
		} else {
			struct raft_msg *m =
				msg_new(r, RAFT_MSG_READ_INDEX_RESP, p->from);
			m->ctx = p->ctx;
			m->index = p->index;
		}
	}
	if (done) {
		memmove(r->reads, r->reads + done,
			(r->n_reads - done) * sizeof(r->reads[0]));
		r->n_reads -= done;
	}
}

static int leader_read(struct raft *r, uint64_t ctx, uint64_t from)
{
	if (raft_term_at(r, r->hs.commit) != r->hs.term)
		return -PARLEY_EAGAIN; /* no commit in this term yet */
	if (r->n_reads >= RAFT_MAX_PENDING_READS)
		return -PARLEY_EFULL;
	r->quiesced = false;
	r->idle_ticks = 0;
	r->read_seq++;
	r->reads = grow(r->reads, &r->cap_reads, r->n_reads + 1,
			sizeof(*r->reads));
	r->reads[r->n_reads++] = (struct pending_read){
		.ctx = ctx, .index = r->hs.commit, .seq = r->read_seq, .from = from};
	if (quorum(r) == 1)
		check_reads(r);
	else
		bcast_heartbeat(r, false);
	return 0;
}

int raft_read_index(struct raft *r, uint64_t ctx)
{
	PARLEY_ASSERT(!r->in_ready);
	if (r->role == RAFT_LEADER)
		return leader_read(r, ctx, r->id);
	if (r->leader == 0)
		return -PARLEY_ENOTLEADER;
	struct raft_msg *m = msg_new(r, RAFT_MSG_READ_INDEX, r->leader);
	m->ctx = ctx;
	return 0;
}

/* ---- receiving ---------------------------------------------------------- */

static void respond(struct raft *r, const struct raft_msg *in, uint8_t type,
		    struct raft_msg **out)
{
	*out = msg_new(r, type, in->from);
}

static void mark_damaged_resp(struct raft *r, struct raft_msg *m)
{
	if (r->damaged) {
		m->flags |= RAFT_MSGF_DAMAGED;
		m->hint = r->damaged;
	}
	if (r->lost) /* the leader must not trust what it matched before */
		m->flags |= RAFT_MSGF_LOST;
}

/* Largest index <= i whose term is <= t (etcd's findConflictByTerm). */
static uint64_t find_conflict_by_term(struct raft *r, uint64_t i, uint64_t t,
				      uint64_t *term_out)
{
	for (;;) {
		uint64_t ti = raft_term_at(r, i);
		if (i <= r->snap.index) {
			*term_out = r->snap.term;
			return i;
		}
		if (ti <= t) {
			*term_out = ti;
			return i;
		}
		i--;
	}
}

/* Queue a whole copy of a damaged entry for rewriting in place. */
static void push_repair(struct raft *r, const struct raft_entry *e)
{
	r->repair = grow(r->repair, &r->cap_repair, r->n_repair + 1,
			 sizeof(*r->repair));
	struct raft_entry c = *e;
	uint8_t *d = xmalloc(e->len);
	if (e->len)
		memcpy(d, e->data, e->len);
	keep(r, d);
	c.data = d;
	r->repair[r->n_repair++] = c;
}

static void handle_append(struct raft *r, const struct raft_msg *m)
{
	struct raft_msg *resp;
	respond(r, m, RAFT_MSG_APPEND_RESP, &resp);
	uint32_t ri = r->n_msgs - 1;
	if (m->index < r->hs.commit) {
		/* may still repair damaged entries below commit */
		for (uint32_t k = 0; k < m->n_entries; k++) {
			const struct raft_entry *e = &m->entries[k];
			if (r->damaged && e->index == r->damaged &&
			    raft_entry_ok(e) && raft_term_at(r, e->index) == e->term)
				push_repair(r, e);
		}
		resp->index = r->hs.commit;
		mark_damaged_resp(r, resp);
		return;
	}
	uint64_t last = last_index(r);
	/* at the commit index the logs agree whatever term this node can
	 * still tell for it (a current leader holds every committed entry):
	 * after a restart the commit index is the snapshot's, whose term the
	 * storage may no longer know (its log was released) */
	if (m->index > last ||
	    (m->index > r->hs.commit &&
	     raft_term_at(r, m->index) != m->log_term)) {
		uint64_t hint = PARLEY_MIN(m->index, last), hterm = 0;
		hint = find_conflict_by_term(r, hint, m->log_term, &hterm);
		resp->flags |= RAFT_MSGF_REJECT;
		resp->index = m->index;
		resp->hint = hint;
		resp->log_term = hterm;
		mark_damaged_resp(r, resp);
		return;
	}
	for (uint32_t k = 0; k < m->n_entries; k++) {
		const struct raft_entry *e = &m->entries[k];
		if (!raft_entry_ok(e) || e->index != m->index + 1 + k) {
			/* damaged in transit: keep what we took so far */
			resp->index = e->index - 1;
			goto done;
		}
		if (e->index <= r->snap.index)
			continue;
		if (e->index <= last_index(r)) {
			uint64_t t = raft_term_at(r, e->index);
			if (t == e->term) {
				if (r->damaged == e->index)
					push_repair(r, e);
				continue;
			}
			/* a conflict is above commit (leader completeness),
			 * so a damaged entry it drops was never committed */
			log_truncate(r, e->index);
		}
		unstable_push(r, e);
	}
	resp->index = m->index + m->n_entries;
done:;
	uint64_t nc = PARLEY_MIN(m->commit, resp->index);
	if (nc > r->hs.commit) {
		r->hs.commit = nc;
		on_commit_advance(r);
	}
	mark_damaged_resp(r, resp);
	/* a commit-only APPEND accepted, nothing to report: no answer
	 * (RAFT_MSGF_NOACK); the answer is still the last message queued */
	if ((m->flags & RAFT_MSGF_NOACK) && m->n_entries == 0 &&
	    ri == r->n_msgs - 1 && r->msgs[ri].flags == 0) {
		r->n_msgs--;
		r->noack_unanswered++;
	}
}

static void handle_heartbeat(struct raft *r, const struct raft_msg *m)
{
	/* a node that may have lost entries holds its leader's whole log
	 * again (same last index and term there: by log matching the same
	 * log), so it holds every entry committed before: it may vote again */
	if (r->lost && (m->flags & RAFT_MSGF_LOST) && m->index &&
	    m->index == last_index(r) &&
	    (m->index <= r->snap.index ||
	     raft_term_at(r, m->index) == m->log_term)) {
		r->lost = false;
		PLOG_I("raft", "holds its leader's whole log again: votes and "
		       "campaigns again", "node=%llu group=%llu index=%llu "
		       "leader=%llu", (unsigned long long)r->id,
		       (unsigned long long)r->cfg.group,
		       (unsigned long long)m->index,
		       (unsigned long long)m->from);
	}
	uint64_t nc = PARLEY_MIN(m->commit, last_index(r));
	if (nc > r->hs.commit) {
		r->hs.commit = nc;
		on_commit_advance(r);
	}
	struct raft_msg *resp;
	respond(r, m, RAFT_MSG_HEARTBEAT_RESP, &resp);
	resp->index = last_index(r);
	resp->ctx = m->ctx;
	mark_damaged_resp(r, resp);
	if ((m->flags & RAFT_MSGF_QUIESCE) && r->hs.commit == last_index(r) &&
	    !r->damaged)
		r->quiesced = true;
	else
		r->quiesced = false;
}

static void handle_snapshot(struct raft *r, const struct raft_msg *m)
{
	const struct raft_snapshot_meta *s = &m->snap;
	bool need = s->index > r->hs.commit ||
		    (r->damaged && s->index >= r->damaged);
	if (!need) {
		struct raft_msg *resp;
		respond(r, m, RAFT_MSG_APPEND_RESP, &resp);
		resp->index = r->hs.commit;
		mark_damaged_resp(r, resp);
		return;
	}
	if (!r->damaged && raft_term_at(r, s->index) == s->term &&
	    s->index <= durable_last(r)) {
		/* we hold the entries: fast-forward instead of installing */
		r->hs.commit = s->index;
		on_commit_advance(r);
		struct raft_msg *resp;
		respond(r, m, RAFT_MSG_APPEND_RESP, &resp);
		resp->index = s->index;
		return;
	}
	/* a damaged node whose log agrees at the snapshot's index keeps the
	 * entries after it: they may be committed with its vote. At or below
	 * our commit index it agrees by log matching, also when the snapshot
	 * does not know its own term (0: an image made below the leader's
	 * compaction point) */
	bool keep_tail = (raft_term_at(r, s->index) == s->term ||
			  (r->damaged && s->index <= r->hs.commit)) &&
			 s->index <= durable_last(r);
	if (r->rx.index != s->index || r->rx.term != s->term ||
	    r->rx.size != s->size || r->rx.csum != s->csum) {
		r->rx = *s;
		r->rx_bytes = 0;
	}
	struct raft_msg *resp;
	if (!r->has_chunk && r->rx_bytes == s->size && m->offset <= s->size) {
		/* all bytes are durable already (a crash came between the
		 * last chunk and the install): install now */
		r->has_chunk = true;
		r->chunk_snap = *s;
		r->chunk_keep_tail = keep_tail;
		r->chunk_offset = s->size;
		r->chunk_len = 0;
		r->chunk = NULL;
		r->chunk_last = true;
		return;
	}
	if (m->offset != r->rx_bytes || r->has_chunk ||
	    m->offset + m->chunk_len > s->size) {
		respond(r, m, RAFT_MSG_SNAPSHOT_RESP, &resp);
		resp->snap = *s;
		resp->index = s->index;
		resp->offset = r->rx_bytes;
		resp->flags |= RAFT_MSGF_REJECT;
		return;
	}
	r->has_chunk = true;
	r->chunk_snap = *s;
	r->chunk_keep_tail = keep_tail;
	r->chunk_offset = m->offset;
	r->chunk_len = m->chunk_len;
	r->chunk = xmalloc(m->chunk_len);
	if (m->chunk_len)
		memcpy(r->chunk, m->chunk, m->chunk_len);
	keep(r, r->chunk);
	r->rx_bytes += m->chunk_len;
	r->chunk_last = (m->flags & RAFT_MSGF_LAST) && r->rx_bytes == s->size;
	if (!r->chunk_last) {
		respond(r, m, RAFT_MSG_SNAPSHOT_RESP, &resp);
		resp->snap = *s;
		resp->index = s->index;
		resp->offset = r->rx_bytes;
	}
	/* on the last chunk the APPEND_RESP is sent by raft_advance, after
	 * the install */
}

/* A follower that may have lost entries (RAFT_MSGF_LOST) holds less than
 * its earlier answers said: what it holds now is all that counts. */
static bool lost_lower_match(struct raft_progress *p, uint64_t has)
{
	p->lost = true;
	if (has >= p->match || p->state == PR_SNAPSHOT)
		return false;
	p->match = has;
	pr_become(p, PR_PROBE);
	return true;
}

static void handle_append_resp(struct raft *r, struct raft_progress *p,
			       const struct raft_msg *m)
{
	p->active = true;
	if (m->flags & RAFT_MSGF_LOST) {
		if (lost_lower_match(p, (m->flags & RAFT_MSGF_REJECT) ? m->hint
								      : m->index) &&
		    r->role == RAFT_LEADER) {
			send_append(r, p, true);
			return;
		}
	} else {
		p->lost = false;
	}
	if (m->flags & RAFT_MSGF_DAMAGED) {
		p->damaged = m->hint;
		send_repair(r, p, m->hint);
		if (r->role != RAFT_LEADER)
			return;
	} else {
		p->damaged = 0;
	}
	if (m->flags & RAFT_MSGF_REJECT) {
		if (p->state == PR_REPLICATE) {
			if (m->index <= p->match)
				return; /* stale */
			pr_become(p, PR_PROBE);
		} else if (p->state == PR_PROBE) {
			if (p->next - 1 != m->index)
				return; /* stale */
			uint64_t probe = m->hint;
			if (m->log_term > 0) {
				uint64_t t;
				probe = find_conflict_by_term(r, m->hint,
							      m->log_term, &t);
			}
			uint64_t nx = PARLEY_MIN(m->index, probe + 1);
			p->next = PARLEY_MAX(nx, p->match + 1);
			p->probe_sent = false;
		} else {
			return;
		}
		send_append(r, p, true);
		return;
	}
	bool progressed = false;
	if (m->index > p->match) {
		p->match = m->index;
		progressed = true;
	}
	if (p->next < m->index + 1)
		p->next = m->index + 1;
	if (p->state == PR_PROBE) {
		if (progressed || m->index >= p->match) {
			pr_become(p, PR_REPLICATE);
			p->next = p->match + 1;
		}
	} else if (p->state == PR_SNAPSHOT) {
		/* done once the follower is past the snapshot, unless it still
		 * holds a damaged entry the snapshot must cover */
		if (p->match >= p->snap_index &&
		    !(p->damaged && p->damaged <= p->snap_index))
			pr_become(p, PR_PROBE);
	} else {
		infl_free_to(p, m->index);
	}
	if (progressed) {
		uint64_t id = p->id;
		maybe_commit(r);
		/* a committed membership change rebuilds r->pr: p may now be
		 * a wiped slot (the sender was removed) or another member's */
		p = pr_find(r, id);
		if (!p)
			return;
	}
	if (r->role != RAFT_LEADER)
		return;
	if (r->transfer_to == p->id && p->match == last_index(r)) {
		msg_new(r, RAFT_MSG_TIMEOUT_NOW, p->id);
	}
	/* keep the pipeline full: at raft_ready (flush_appends), with the
	 * proposals of the same round in the same APPEND */
	if (p->state == PR_REPLICATE && p->next <= last_index(r) &&
	    !infl_full(r, p))
		r->append_due = true;
	if (p->state == PR_PROBE)
		send_append(r, p, false);
	if (r->damaged)
		damaged_handoff(r);
}

static void handle_leader_msg(struct raft *r, const struct raft_msg *m)
{
	struct raft_progress *p = pr_find(r, m->from);
	switch (m->type) {
	case RAFT_MSG_APPEND_RESP:
		if (p)
			handle_append_resp(r, p, m);
		break;
	case RAFT_MSG_HEARTBEAT_RESP:
		if (!p)
			break;
		p->active = true;
		p->last_seen = m->index;
		if (m->ctx > p->read_ack)
			p->read_ack = m->ctx;
		if (m->flags & RAFT_MSGF_LOST)
			(void)lost_lower_match(p, m->index);
		else
			p->lost = false;
		if (m->flags & RAFT_MSGF_DAMAGED) {
			struct raft_msg fake = *m;
			fake.type = RAFT_MSG_APPEND_RESP;
			fake.flags = RAFT_MSGF_DAMAGED |
				     (m->flags & RAFT_MSGF_LOST);
			fake.index = p->match;
			handle_append_resp(r, p, &fake);
		}
		if (r->role != RAFT_LEADER)
			break;
		if (p->match < last_index(r) || m->index < last_index(r)) {
			if (p->state == PR_REPLICATE && m->index < p->next - 1 &&
			    m->index >= p->match) {
				/* APPENDs lost: back to probing from match */
				pr_become(p, PR_PROBE);
			} else if (p->state == PR_PROBE && m->index + 1 < p->next &&
				   m->index >= p->match) {
				/* the follower's log ends before our probe:
				 * probe right after its last entry */
				p->next = m->index + 1;
			}
			p->probe_sent = false;
			if (p->state == PR_REPLICATE && infl_full(r, p))
				infl_free_to(p, p->infl[p->infl_head]);
			send_append(r, p, true);
		}
		check_reads(r);
		break;
	case RAFT_MSG_SNAPSHOT_RESP:
		if (!p || p->state != PR_SNAPSHOT)
			break;
		p->active = true;
		if (m->snap.index != p->snap_index)
			break;
		if (m->flags & RAFT_MSGF_REJECT) {
			/* the follower holds exactly m->offset bytes. Resume
			 * there, at most once per heartbeat interval: with
			 * duplication and reordering, stale rejections would
			 * otherwise multiply the chunks in flight. A rejection
			 * below what was acked (the follower restarted into
			 * another snapshot) is honoured by the stall timer. */
			p->snap_reject = m->offset;
			if (m->offset >= p->snap_acked) {
				if (m->offset > p->snap_acked)
					p->snap_stall = 0;
				p->snap_acked = m->offset;
				if (!p->probe_sent) {
					p->snap_sent = m->offset;
					p->probe_sent = true;
				}
			}
		} else if (m->offset > p->snap_acked) {
			/* also where a stalled transfer resumes: the follower
			 * holds these bytes (not the last rejection's) */
			p->snap_acked = m->offset;
			p->snap_reject = m->offset;
			p->snap_stall = 0;
		}
		if (p->snap_sent < p->snap_acked)
			p->snap_sent = p->snap_acked;
		send_snapshot_chunks(r, p);
		break;
	case RAFT_MSG_READ_INDEX: {
		/* a node not in the configuration (removed while it did not
		 * hear of it: its own group still follows this leader) gets no
		 * entries from here: an index it could never apply through
		 * would hold its read forever; refused, it fails at its read
		 * deadline (NOTLEADER) */
		int rc = raft_conf_find(&r->conf, m->from) < 0
				 ? -PARLEY_ENOTLEADER
				 : leader_read(r, m->ctx, m->from);
		if (rc < 0) {
			struct raft_msg *resp =
				msg_new(r, RAFT_MSG_READ_INDEX_RESP, m->from);
			resp->ctx = m->ctx;
			resp->flags = RAFT_MSGF_REJECT;
		}
		break;
	}
	default:
		break;
	}
}

static void handle_vote(struct raft *r, const struct raft_msg *m)
{
	bool pre = m->type == RAFT_MSG_PREVOTE;
	uint8_t rt = pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP;
	bool can = (r->hs.vote == m->from) ||
		   (r->hs.vote == 0 && r->leader == 0) ||
		   (pre && m->term > r->hs.term);
	/* a node that may have lost acknowledged entries must not help
	 * elect a leader that lacks them (raft_set_lost) */
	if (r->lost)
		can = false;
	uint64_t lt = last_term(r), li = last_index(r);
	bool uptodate = m->log_term > lt || (m->log_term == lt && m->index >= li);
	struct raft_msg *resp = msg_new(r, rt, m->from);
	/* no membership test on our side: a node added as a voter votes
	 * before its log tells it so (the candidate counts the voters) */
	if (can && uptodate) {
		resp->term = m->term;
		if (!pre) {
			r->hs.vote = m->from;
			r->election_elapsed = 0;
		}
	} else {
		resp->term = r->hs.term;
		resp->flags |= RAFT_MSGF_REJECT;
	}
}

static void handle_vote_resp(struct raft *r, const struct raft_msg *m)
{
	struct raft_progress *p = pr_find(r, m->from);
	if (!p || p->voted)
		return;
	p->voted = true;
	p->granted = !(m->flags & RAFT_MSGF_REJECT);
	uint32_t yes = 0, no = 0;
	for (uint32_t i = 0; i < r->conf.n; i++) {
		if (r->pr[i].role != RAFT_VOTER || !r->pr[i].voted)
			continue;
		if (r->pr[i].granted)
			yes++;
		else
			no++;
	}
	if (yes >= quorum(r)) {
		if (r->role == RAFT_PRECANDIDATE)
			campaign(r, false, false);
		else
			become_leader(r);
	} else if (no >= quorum(r)) {
		become_follower(r, r->hs.term, 0);
	}
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
	PARLEY_ASSERT(!r->in_ready);
	if (m->to != r->id || m->type == RAFT_MSG_NONE ||
	    m->type >= RAFT_MSG_TYPE_COUNT)
		return -PARLEY_EINVAL;
	if (m->n_entries > RAFT_MAX_MSG_ENTRIES)
		return -PARLEY_EINVAL;
	bool vote_req = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
	bool from_leader = m->type == RAFT_MSG_APPEND ||
			   m->type == RAFT_MSG_HEARTBEAT ||
			   m->type == RAFT_MSG_SNAPSHOT;
	/* a quiesced leader wakes on anything but a plain heartbeat answer;
	 * a quiesced follower on anything but a quiesce heartbeat or a vote
	 * request (which it ignores: its leader is alive as far as it knows) */
	if (r->quiesced) {
		bool stay;
		if (r->role == RAFT_LEADER)
			stay = m->type == RAFT_MSG_HEARTBEAT_RESP &&
			       !(m->flags & RAFT_MSGF_DAMAGED) &&
			       m->index == last_index(r);
		else
			stay = (m->type == RAFT_MSG_HEARTBEAT &&
				(m->flags & RAFT_MSGF_QUIESCE)) ||
			       vote_req;
		if (!stay) {
			r->quiesced = false;
			r->idle_ticks = 0;
			if (r->role != RAFT_LEADER)
				r->election_elapsed = 0;
		}
	}

	if (m->term > r->hs.term) {
		if (vote_req) {
			bool in_lease = r->cfg.check_quorum && r->leader != 0 &&
					r->election_elapsed <
						r->cfg.election_ticks;
			if (in_lease && !(m->flags & RAFT_MSGF_TRANSFER))
				return 0; /* a live leader: ignore */
		}
		if (m->type == RAFT_MSG_PREVOTE ||
		    (m->type == RAFT_MSG_PREVOTE_RESP &&
		     !(m->flags & RAFT_MSGF_REJECT))) {
			/* pre-votes never change terms */
		} else {
			become_follower(r, m->term, from_leader ? m->from : 0);
		}
	} else if (m->term < r->hs.term) {
		if (from_leader) {
			/* tell a stale leader about the newer term */
			msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
		} else if (m->type == RAFT_MSG_PREVOTE) {
			struct raft_msg *resp =
				msg_new(r, RAFT_MSG_PREVOTE_RESP, m->from);
			resp->flags |= RAFT_MSGF_REJECT;
		}
		return 0;
	}

	if (vote_req) {
		handle_vote(r, m);
		return 0;
	}

	switch (r->role) {
	case RAFT_LEADER:
		handle_leader_msg(r, m);
		break;
	case RAFT_PRECANDIDATE:
	case RAFT_CANDIDATE:
		if (from_leader) {
			become_follower(r, m->term, m->from);
			goto follower;
		}
		if ((r->role == RAFT_PRECANDIDATE &&
		     m->type == RAFT_MSG_PREVOTE_RESP &&
		     m->term == r->hs.term +
				     ((m->flags & RAFT_MSGF_REJECT) ? 0 : 1)) ||
		    (r->role == RAFT_CANDIDATE &&
		     m->type == RAFT_MSG_VOTE_RESP && m->term == r->hs.term))
			handle_vote_resp(r, m);
		break;
	case RAFT_FOLLOWER:
	follower:
		switch (m->type) {
		case RAFT_MSG_APPEND:
			r->leader = m->from;
			r->election_elapsed = 0;
			handle_append(r, m);
			break;
		case RAFT_MSG_HEARTBEAT:
			r->leader = m->from;
			r->election_elapsed = 0;
			handle_heartbeat(r, m);
			break;
		case RAFT_MSG_SNAPSHOT:
			r->leader = m->from;
			r->election_elapsed = 0;
			handle_snapshot(r, m);
			break;
		case RAFT_MSG_TIMEOUT_NOW:
			if (m->from == r->leader || r->leader == 0)
				campaign(r, false, true);
			break;
		case RAFT_MSG_READ_INDEX_RESP:
			out_read(r, m->ctx, m->index,
				 (m->flags & RAFT_MSGF_REJECT) ? -PARLEY_EAGAIN
							       : 0);
			break;
		default:
			break;
		}
		break;
	}
	return 0;
}

/* ---- ticks -------------------------------------------------------------- */

static bool can_quiesce(struct raft *r)
{
	uint64_t last = last_index(r);
	if (r->hs.commit != last || r->n_reads || r->transfer_to ||
	    r->pending_conf_index || r->damaged || r->n_unstable)
		return false;
	/* a leader sleeps only while a quorum answers it in the current
	 * check-quorum window: one cut off from its quorum (woken by node
	 * liveness, raft_unquiesce) must stay awake until check-quorum
	 * deposes it, not fall asleep again as a leader nobody follows */
	if (r->cfg.check_quorum) {
		uint32_t act = 0;
		for (uint32_t i = 0; i < r->conf.n; i++)
			act += r->pr[i].role == RAFT_VOTER &&
			       (r->pr[i].active || r->pr[i].id == r->id);
		if (act < quorum(r))
			return false;
	}
	/* every member that answers must hold the whole log; one that did
	 * not answer for one to two election timeouts (check_quorum's
	 * `active`: a dead or cut-off node) does not keep the group awake —
	 * when it is heard from again its answer (an old index, a pre-vote)
	 * wakes the leader, and the caller's node liveness wakes the group
	 * when that node's link comes back (raft.h, Quiescing) */
	for (uint32_t i = 0; i < r->conf.n; i++) {
		const struct raft_progress *p = &r->pr[i];
		bool alive = !r->cfg.check_quorum || p->id == r->id ||
			     p->active || p->active_prev;
		if (alive && (p->match != last || p->damaged || p->lost))
			return false;
	}
	return true;
}

void raft_tick(struct raft *r)
{
	PARLEY_ASSERT(!r->in_ready);
	if (r->quiesced)
		return;
	r->election_elapsed++;
	if (r->role != RAFT_LEADER) {
		/* a damaged follower whose leader went silent (its answer or
		 * the repair lost, the leader asleep): ask again, every two
		 * heartbeat intervals, before its election timeout would */
		uint32_t every = 2 * (r->cfg.heartbeat_ticks ? r->cfg.heartbeat_ticks : 1);
		if (r->damaged && r->election_elapsed % every == 0)
			tell_damaged(r);
		if (r->election_elapsed >= r->randomized_timeout) {
			r->election_elapsed = 0;
			if (is_voter(r, r->id))
				campaign(r, r->cfg.pre_vote, false);
			else
				reset_timeout(r);
		}
		return;
	}
	/* leader */
	r->heartbeat_elapsed++;
	if (r->damaged) {
		if (damaged_uncommitted(r)) {
			/* provably never committed: drop it (and what follows)
			 * as a follower, like any uncommitted tail */
			uint64_t d = r->damaged;
			become_follower(r, r->hs.term, 0);
			log_truncate(r, d);
			return;
		}
		if (++r->damaged_elapsed >= 2 * r->cfg.election_ticks) {
			r->damaged_elapsed = 0;
			become_follower(r, r->hs.term, 0);
			return;
		}
		damaged_handoff(r);
	} else {
		r->damaged_elapsed = 0;
	}
	r->idle_ticks++;
	if (r->transfer_to) {
		if (++r->transfer_elapsed >= r->cfg.election_ticks)
			r->transfer_to = 0; /* give up */
	}
	if (r->election_elapsed >= r->cfg.election_ticks) {
		r->election_elapsed = 0;
		if (r->cfg.check_quorum) {
			uint32_t act = 0;
			for (uint32_t i = 0; i < r->conf.n; i++) {
				if (r->pr[i].role == RAFT_VOTER &&
				    (r->pr[i].active || r->pr[i].id == r->id))
					act++;
				r->pr[i].active_prev = r->pr[i].active;
				r->pr[i].active = false;
			}
			if (act < quorum(r)) {
				become_follower(r, r->hs.term, 0);
				return;
			}
		}
		/* snapshot transfers that stalled restart from the ack */
		for (uint32_t i = 0; i < r->conf.n; i++) {
			struct raft_progress *p = &r->pr[i];
			if (p->state == PR_SNAPSHOT &&
			    ++p->snap_stall >= 2) {
				p->snap_stall = 0;
				p->snap_sent = p->snap_acked = p->snap_reject;
				if (p->snap_sent >= r->snap.size) {
					/* resend the tail so the follower
					 * answers (and installs) */
					uint64_t c = r->cfg.chunk_bytes
							     ? r->cfg.chunk_bytes
							     : RAFT_MAX_CHUNK_BYTES;
					p->snap_sent = r->snap.size > c
							       ? r->snap.size - c
							       : 0;
				}
				send_snapshot_chunks(r, p);
			}
		}
	}
	if (r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
		r->heartbeat_elapsed = 0;
		bool q = r->cfg.quiesce_ticks &&
			 r->idle_ticks >= r->cfg.quiesce_ticks && can_quiesce(r);
		bcast_heartbeat(r, q);
		for (uint32_t i = 0; i < r->conf.n; i++)
			if (r->pr[i].state != PR_REPLICATE)
				r->pr[i].probe_sent = false;
		if (q)
			r->quiesced = true;
	}
}

void raft_unquiesce(struct raft *r)
{
	if (!r->quiesced)
		return;
	r->quiesced = false;
	r->idle_ticks = 0;
	reset_timeout(r);
	/* a leader: a fresh check-quorum window in which its followers must
	 * answer again (what they said before it slept proves nothing about
	 * now); can_quiesce wants a quorum of them before it sleeps again */
	if (r->role == RAFT_LEADER)
		for (uint32_t i = 0; i < r->conf.n; i++)
			if (r->pr[i].id != r->id)
				r->pr[i].active = false;
}

void raft_leader_down(struct raft *r, uint64_t id)
{
	PARLEY_ASSERT(!r->in_ready);
	if (r->role == RAFT_LEADER || id == 0 || r->leader != id)
		return;
	r->quiesced = false;
	r->idle_ticks = 0;
	/* the survivors campaign in the order of their ids, two ticks apart
	 * (a random delay this short would often tie and split the vote) */
	uint32_t rank = 0;
	for (uint32_t i = 0; i < r->conf.n; i++)
		if (r->conf.roles[i] == RAFT_VOTER && r->conf.ids[i] != id &&
		    r->conf.ids[i] < r->id)
			rank++;
	uint32_t delay = PARLEY_MIN(1 + 2 * rank, r->cfg.election_ticks);
	r->election_elapsed = r->cfg.election_ticks; /* the lease is over */
	r->randomized_timeout = r->cfg.election_ticks + delay;
}

/* ---- client inputs ------------------------------------------------------ */

int raft_propose(struct raft *r, const void *data, uint32_t len,
		 uint64_t *index)
{
	PARLEY_ASSERT(!r->in_ready);
	if (r->role != RAFT_LEADER)
		return -PARLEY_ENOTLEADER;
	if (r->transfer_to || r->damaged)
		return -PARLEY_EAGAIN; /* handing over (see damaged_handoff) */
	if (len > RAFT_MAX_ENTRY_BYTES)
		return -PARLEY_ETOOBIG;
	uint32_t lim = r->cfg.max_uncommitted ? r->cfg.max_uncommitted : 4096;
	if (last_index(r) - r->hs.commit >= lim)
		return -PARLEY_EFULL;
	r->quiesced = false;
	append_local(r, RAFT_ENTRY_NORMAL, data, len);
	if (index)
		*index = last_index(r);
	r->append_due = true; /* flush_appends: one APPEND per ready */
	return 0;
}

int raft_propose_conf(struct raft *r, const struct raft_conf_change *cc,
		      uint64_t *index)
{
	PARLEY_ASSERT(!r->in_ready);
	if (r->role != RAFT_LEADER)
		return -PARLEY_ENOTLEADER;
	if (r->transfer_to)
		return -PARLEY_EAGAIN;
	/* the single-server-change rule: a leader first commits in its own
	 * term, and only one change is in flight */
	if (r->pending_conf_index || r->n_pconf ||
	    raft_term_at(r, r->hs.commit) != r->hs.term)
		return -PARLEY_EAGAIN;
	struct raft_conf c = r->conf;
	if (raft_conf_apply(&c, cc) < 0)
		return -PARLEY_EINVAL;
	uint8_t buf[RAFT_CONF_CHANGE_BYTES];
	int rc = raft_conf_change_encode(cc, buf);
	if (rc < 0)
		return rc;
	r->quiesced = false;
	append_local(r, RAFT_ENTRY_CONF, buf, sizeof(buf));
	r->pending_conf_index = last_index(r);
	if (index)
		*index = last_index(r);
	bcast_append(r, false);
	return 0;
}

bool raft_peer_current(struct raft *r, uint64_t id)
{
	if (r->role != RAFT_LEADER)
		return false;
	const struct raft_progress *p = pr_find(r, id);
	/* a member that says it lost entries would ignore the TimeoutNow */
	return p && p->match > 0 && !p->lost &&
	       raft_term_at(r, p->match) == r->hs.term;
}

int raft_transfer(struct raft *r, uint64_t to)
{
	PARLEY_ASSERT(!r->in_ready);
	if (r->role != RAFT_LEADER)
		return -PARLEY_ENOTLEADER;
	if (to == r->id || !is_voter(r, to))
		return -PARLEY_EINVAL;
	if (r->transfer_to)
		return -PARLEY_EAGAIN;
	r->quiesced = false;
	r->transfer_to = to;
	r->transfer_elapsed = 0;
	struct raft_progress *p = pr_find(r, to);
	if (p->match == last_index(r))
		msg_new(r, RAFT_MSG_TIMEOUT_NOW, to);
	else
		send_append(r, p, false);
	return 0;
}

int raft_compacted(struct raft *r, const struct raft_snapshot_meta *meta)
{
	PARLEY_ASSERT(!r->in_ready);
	if (meta->index > r->applied || meta->index < r->snap.index)
		return -PARLEY_EINVAL;
	r->snap = *meta;
	return 0;
}

void raft_persist_failed(struct raft *r)
{
	PARLEY_ASSERT(r->in_ready);
	/* nothing of this batch may be acknowledged: drop the messages, the
	 * reads and the applies; a leader steps down */
	garbage_free(r);
	r->n_msgs = 0;
	r->n_out_reads = 0;
	r->n_repair = 0;
	r->has_chunk = false;
	r->rx.index = 0;
	r->rx_bytes = 0;
	r->in_ready = false;
	if (r->role != RAFT_FOLLOWER)
		become_follower(r, r->hs.term, 0);
	PLOG_W("raft", "persistence failed, stepped down", "node=%llu",
	       (unsigned long long)r->id);
}

/* ---- ready / advance ---------------------------------------------------- */

/*
 * Contract item 3a (raft.h): may m leave before this ready is durable? Only
 * a leader's APPEND carrying entries, all of its current term, while its
 * term and vote are durable (hs_saved is what the last advance made
 * durable) and nothing of the ready truncates or installs. Such a message
 * claims nothing about this node's disk: the leader counts its own match
 * only at raft_advance (I5), so a crash before its fsync loses only copies
 * no quorum counted on it.
 */
static bool msg_early_ok(const struct raft *r, const struct raft_ready *rd,
			 const struct raft_msg *m)
{
#ifdef RAFT_TEST_BROKEN_EARLY_ALL
	/* deliberately broken build (tests/sim, scn_early_broken): every
	 * message may leave before the ready is durable, votes and responses
	 * included; the simulator must catch it */
	(void)r;
	(void)rd;
	(void)m;
	return true;
#endif
	if (r->role != RAFT_LEADER || rd->has_chunk || rd->truncate_from ||
	    r->hs.term != r->hs_saved.term || r->hs.vote != r->hs_saved.vote)
		return false;
	if (m->type != RAFT_MSG_APPEND || !m->n_entries ||
	    m->term != r->hs.term)
		return false;
	for (uint32_t i = 0; i < m->n_entries; i++)
		if (m->entries[i].term != r->hs.term)
			return false;
	return true;
}

/* Puts the messages that may leave early first (stable order otherwise);
 * returns how many. */
static uint32_t order_early(struct raft *r, const struct raft_ready *rd)
{
	uint32_t n = r->n_msgs, k = 0;
	for (uint32_t i = 0; i < n; i++)
		k += msg_early_ok(r, rd, &r->msgs[i]);
	if (k && k < n) {
		r->mtmp = grow(r->mtmp, &r->cap_mtmp, n, sizeof(*r->mtmp));
		struct raft_msg *tmp = r->mtmp;
		uint32_t a = 0, b = k;
		for (uint32_t i = 0; i < n; i++) {
			bool ok = msg_early_ok(r, rd, &r->msgs[i]);
			tmp[ok ? a++ : b++] = r->msgs[i];
		}
		memcpy(r->msgs, tmp, n * sizeof(*tmp));
	}
	return k;
}

struct raft_ready *raft_ready(struct raft *r)
{
	PARLEY_ASSERT(!r->in_ready);
	/* the round's new entries first, so their APPENDs carry the commit
	 * index and flush_commit_bcast has nothing left to tell */
	r->lend_unstable = true;
	flush_appends(r);
	flush_commit_bcast(r);
	r->lend_unstable = false;
	struct raft_ready *rd = &r->rd;
	memset(rd, 0, sizeof(*rd));
	rd->hs_changed = memcmp(&r->hs, &r->hs_saved, sizeof(r->hs)) != 0;
	rd->hs = r->hs;
	rd->entries = r->n_unstable ? r->unstable : NULL;
	rd->n_entries = r->n_unstable;
	rd->truncate_from = r->unstable_first <= r->stable_last ? r->unstable_first
								: 0;
	r->rd_n_unstable = r->n_unstable;
	rd->repair = r->n_repair ? r->repair : NULL;
	rd->n_repair = r->n_repair;
	if (r->has_chunk) {
		rd->has_chunk = true;
		rd->chunk_snap = r->chunk_snap;
		rd->chunk_offset = r->chunk_offset;
		rd->chunk_len = r->chunk_len;
		rd->chunk = r->chunk;
		if (r->chunk_last) {
			rd->has_install = true;
			rd->install = r->chunk_snap;
			rd->install_keeps_tail = r->chunk_keep_tail;
		}
	}
	/* committed entries: durable here, not past a damaged one */
	uint64_t hi = PARLEY_MIN(r->hs.commit, durable_last(r));
	if (r->damaged && r->damaged <= hi)
		hi = r->damaged - 1;
	if (rd->has_install)
		hi = 0;
	uint64_t from = r->applied + 1;
	uint32_t n = 0;
	struct raft_entry *ce = NULL;
	if (hi >= from) {
		uint64_t cnt = hi - from + 1;
		if (cnt > RAFT_MAX_APPLY_BATCH)
			cnt = RAFT_MAX_APPLY_BATCH;
		r->cbuf = grow(r->cbuf, &r->cap_cbuf, (uint32_t)cnt,
			       sizeof(*r->cbuf));
		ce = r->cbuf; /* valid to the advance: no ready before it */
		for (uint64_t i = from; i < from + cnt; i++) {
			struct raft_entry e;
			int rc = log_get(r, i, &e);
			if (rc == -PARLEY_ECORRUPT) {
				step_down_damaged(r, i);
				break;
			}
			PARLEY_ASSERT(rc == 0);
			/* lent when the storage keeps it to the advance
			 * (raft_storage.stable_data; i <= commit) or it is
			 * ours (unstable) */
			if (!r->cfg.storage.stable_data && i < r->unstable_first) {
				uint8_t *d = xmalloc(e.len);
				if (e.len)
					memcpy(d, e.data, e.len);
				keep(r, d);
				e.data = d;
			}
			ce[n++] = e;
		}
	}
	rd->committed = n ? ce : NULL;
	rd->n_committed = n;
	r->rd_applied = r->applied + n;
	rd->msgs = r->n_msgs ? r->msgs : NULL;
	rd->n_msgs = r->n_msgs;
	rd->n_early = order_early(r, rd);
	rd->reads = r->n_out_reads ? r->out_reads : NULL;
	rd->n_reads = r->n_out_reads;
	rd->empty = !rd->hs_changed && !rd->n_entries && !rd->truncate_from &&
		    !rd->n_repair &&
		    !rd->has_chunk && !rd->n_msgs && !rd->n_committed &&
		    !rd->n_reads;
	r->in_ready = true;
	return rd;
}

/* Repairs were made durable: a damaged conf entry waiting in pconf that is
 * whole again takes its change (or leaves the queue: not a change), and
 * the queue moves on. */
static void conf_repaired(struct raft *r)
{
	uint32_t k = 0;
	bool moved = false;
	for (uint32_t j = 0; j < r->n_pconf; j++) {
		struct pending_conf *pc = &r->pconf[j];
		struct raft_entry e;
		if (pc->damaged && log_get(r, pc->index, &e) == 0) {
			moved = true;
			pc->damaged = false;
			if (e.type != RAFT_ENTRY_CONF ||
			    raft_conf_change_decode(e.data, e.len, &pc->cc) < 0)
				continue; /* every node skips it the same way */
		}
		r->pconf[k++] = *pc;
	}
	r->n_pconf = k;
	if (moved)
		on_commit_advance(r);
}

static void install_done(struct raft *r, const struct raft_snapshot_meta *s,
			 bool keep_tail)
{
	if (keep_tail) {
		/* only a damaged prefix is replaced: the log after s->index,
		 * the commit index and the membership stay; the term at
		 * s->index is our entry's when the snapshot does not know it */
		uint64_t t = raft_term_at(r, s->index);
		r->snap = *s;
		if (!r->snap.term)
			r->snap.term = t;
		if (r->hs.commit < s->index) {
			r->hs.commit = s->index;
			r->conf = s->conf;
			r->conf_at = s->index;
			pr_rebuild(r, last_index(r));
		}
		uint32_t k = 0;
		bool held = false; /* a damaged conf entry it replaces */
		for (uint32_t j = 0; j < r->n_pconf; j++) {
			if (r->pconf[j].index > s->index)
				r->pconf[k++] = r->pconf[j];
			else
				held |= r->pconf[j].damaged;
		}
		r->n_pconf = k;
		if (held) {
			/* the changes up to s->index waited behind it: the
			 * snapshot's configuration is the one as of s->index,
			 * the later ones follow at their commit */
			r->conf = s->conf;
			r->conf_at = s->index;
			pr_rebuild(r, last_index(r));
			on_commit_advance(r);
		}
		r->applied = s->index;
		if (r->damaged <= s->index)
			r->damaged = 0;
		r->rx.index = 0;
		r->rx_bytes = 0;
		return;
	}
	unstable_free_from(r, 0, true); /* from raft_advance: no messages */
	r->snap = *s;
	r->stable_last = s->index;
	r->unstable_first = s->index + 1;
	r->conf = s->conf;
	r->conf_at = s->index;
	r->n_pconf = 0;
	pr_rebuild(r, s->index);
	/* a full install only happens past our commit: at or below it our
	 * log agrees with the leader's at s->index (log matching), which is
	 * the keep_tail case above (I2 holds) */
	PARLEY_ASSERT(s->index >= r->hs.commit);
	r->hs.commit = s->index;
	r->applied = s->index;
	r->damaged = 0;
	r->rx.index = 0;
	r->rx_bytes = 0;
}

void raft_advance(struct raft *r)
{
	PARLEY_ASSERT(r->in_ready);
	struct raft_ready *rd = &r->rd;
	r->in_ready = false;
	r->hs_saved = rd->hs;
	garbage_free(r);
	r->n_msgs = 0;
	r->n_out_reads = 0;
	if (rd->truncate_from)
		r->stable_last = rd->truncate_from - 1;
	if (rd->n_entries) {
		PARLEY_ASSERT(r->rd_n_unstable == r->n_unstable);
		r->stable_last = last_index(r);
		unstable_free_from(r, 0, true); /* the messages are gone */
	}
	if (r->n_unstable == 0)
		r->unstable_first = r->stable_last + 1;
	/* repairs: the damaged entry is whole again; the apply path
	 * re-checks the following ones */
	for (uint32_t i = 0; i < r->n_repair; i++)
		if (r->repair[i].index == r->damaged)
			r->damaged = 0;
	if (r->n_repair)
		conf_repaired(r);
	r->n_repair = 0;
	r->applied = r->rd_applied;
	bool installed = false;
	uint64_t leader = r->leader;
	if (r->has_chunk) {
		r->has_chunk = false;
		if (rd->has_install) {
			install_done(r, &rd->install, rd->install_keeps_tail);
			installed = true;
		}
	}
	if (r->role == RAFT_LEADER) {
		struct raft_progress *self = pr_find(r, r->id);
		if (self && durable_last(r) > self->match) {
			self->match = durable_last(r);
			maybe_commit(r);
		}
	}
	if (installed && leader) {
		struct raft_msg *m = msg_new(r, RAFT_MSG_APPEND_RESP, leader);
		m->index = r->snap.index;
		r->hs_saved.commit = 0; /* force the hard state out again */
	}
	if (r->quiesced && r->n_msgs == 0 && r->n_garbage == 0 &&
	    r->n_gdata == 0) {
		/* an idle group gives its batch buffers back */
		free(r->msgs);
		free(r->garbage);
		free(r->gdata);
		r->gdata = NULL;
		r->cap_gdata = 0;
		free(r->out_reads);
		free(r->repair);
		free(r->cbuf);
		free(r->mtmp);
		if (!r->n_pconf) {
			free(r->pconf);
			r->pconf = NULL;
			r->cap_pconf = 0;
		}
		r->msgs = NULL;
		r->garbage = NULL;
		r->out_reads = NULL;
		r->repair = NULL;
		r->cbuf = NULL;
		r->mtmp = NULL;
		r->cap_msgs = r->cap_garbage = r->cap_out_reads = 0;
		r->cap_repair = r->cap_cbuf = r->cap_mtmp = 0;
	}
}

/* ---- construction ------------------------------------------------------- */

int raft_new(const struct raft_config *cfg, struct raft **out)
{
	if (!cfg || cfg->id == 0 || cfg->election_ticks < 2 ||
	    cfg->heartbeat_ticks == 0 ||
	    cfg->heartbeat_ticks >= cfg->election_ticks ||
	    !cfg->storage.load || !cfg->storage.entry ||
	    !cfg->storage.snapshot_read)
		return -PARLEY_EINVAL;
	struct raft *r = calloc(1, sizeof(*r));
	if (!r)
		return -PARLEY_ENOMEM;
	r->cfg = *cfg;
	r->id = cfg->id;
	/* hashed once: splitmix64 steps its state by the same constant the
	 * id is scaled by, so unhashed, node k+1's draws would be node k's
	 * shifted by one, and two voters one draw apart campaign in lockstep
	 * (split votes forever) */
	struct parley_rng seed = {.s = cfg->rng_seed ^
				       (cfg->id * 0x9E3779B97F4A7C15ull)};
	r->rng.s = parley_rng_next(&seed);
	uint64_t last = 0, pbytes = 0;
	struct raft_snapshot_meta partial = {0};
	int rc = cfg->storage.load(cfg->storage.ctx, &r->hs, &r->snap, &last,
				   &partial, &pbytes);
	if (rc < 0) {
		free(r);
		return rc;
	}
	r->hs_saved = r->hs;
	if (last < r->snap.index)
		last = r->snap.index;
	r->stable_last = last;
	r->unstable_first = last + 1;
	if (r->hs.commit > last)
		r->hs.commit = last; /* never beyond what we hold */
	if (r->hs.commit < r->snap.index)
		r->hs.commit = r->snap.index;
	r->applied = r->snap.index;
	if (partial.index) {
		r->rx = partial;
		r->rx_bytes = pbytes;
	}
	r->conf = r->snap.index ? r->snap.conf : cfg->bootstrap;
	r->conf_at = r->snap.index > cfg->conf_index ? r->snap.index
						  : cfg->conf_index;
	/* replay membership changes in the log: committed ones take effect,
	 * later ones wait for their commit */
	bool held = false; /* a damaged one waits: the later ones too */
	for (uint64_t i = r->snap.index + 1; i <= last; i++) {
		struct raft_entry e;
		int g = cfg->storage.entry(cfg->storage.ctx, i, &e);
		if ((g < 0 && g != -PARLEY_ECORRUPT) ||
		    e.type != RAFT_ENTRY_CONF)
			continue;
		if (g < 0 || !raft_entry_ok(&e)) {
			/* its change takes effect once it is repaired
			 * (conf_repaired), in order */
			if (g == 0)
				note_damaged(r, i);
			if (i > cfg->conf_index) {
				pconf_push(r, i, NULL);
				held = true;
			}
			continue;
		}
		struct raft_conf_change cc;
		if (raft_conf_change_decode(e.data, e.len, &cc) < 0)
			continue;
		if (i <= cfg->conf_index)
			continue; /* already in the loaded configuration: a
				     member removed and added again must not
				     be removed by the older entry */
		if (i <= r->hs.commit && !held) {
			struct raft_conf c = r->conf;
			if (raft_conf_apply(&c, &cc) == 0)
				r->conf = c;
			r->conf_at = i;
		} else {
			pconf_push(r, i, &cc);
		}
	}
	pr_rebuild(r, last);
	r->role = RAFT_FOLLOWER;
	reset_timeout(r);
	*out = r;
	return 0;
}

void raft_free(struct raft *r)
{
	if (!r)
		return;
	garbage_free(r);
	unstable_free_from(r, 0, true);
	free(r->unstable);
	free(r->garbage);
	free(r->gdata);
	free(r->msgs);
	free(r->out_reads);
	free(r->repair);
	free(r->cbuf);
	free(r->mtmp);
	free(r->reads);
	free(r->pconf);
	free(r);
}

/* ---- observers ---------------------------------------------------------- */

enum raft_role raft_role(const struct raft *r) { return r->role; }
uint64_t raft_term(const struct raft *r) { return r->hs.term; }
uint64_t raft_leader(const struct raft *r) { return r->leader; }
uint64_t raft_commit(const struct raft *r) { return r->hs.commit; }
uint64_t raft_applied(const struct raft *r) { return r->applied; }
uint64_t raft_last_index(const struct raft *r) { return last_index(r); }
uint64_t raft_id(const struct raft *r) { return r->id; }
bool raft_quiesced(const struct raft *r) { return r->quiesced; }
const struct raft_conf *raft_conf(const struct raft *r) { return &r->conf; }
uint64_t raft_conf_index(const struct raft *r) { return r->conf_at; }
uint64_t raft_elections(const struct raft *r) { return r->elections; }
uint64_t raft_commit_sends_skipped(const struct raft *r) { return r->commit_bcast_skipped; }
uint64_t raft_noack_sent(const struct raft *r) { return r->commit_noack; }
uint64_t raft_noack_unanswered(const struct raft *r) { return r->noack_unanswered; }

uint32_t raft_progress_get(const struct raft *r, struct raft_member_progress *out,
			   uint32_t max)
{
	if (r->role != RAFT_LEADER)
		return 0;
	uint32_t n = 0;
	for (uint32_t i = 0; i < r->conf.n && n < max; i++) {
		const struct raft_progress *p = &r->pr[i];
		bool self = p->id == r->id;
		out[n++] = (struct raft_member_progress){
			.id = p->id,
			.match = p->match,
			.voter = p->role == RAFT_VOTER,
			.active = self || p->active || p->active_prev,
			.snapshot = p->state == PR_SNAPSHOT};
	}
	return n;
}
size_t raft_footprint(const struct raft *r)
{
	size_t n = sizeof(*r);
	n += (size_t)r->cap_unstable * sizeof(*r->unstable);
	for (uint32_t i = 0; i < r->n_unstable; i++)
		n += r->unstable[i].len;
	n += (size_t)r->cap_msgs * sizeof(*r->msgs);
	n += (size_t)r->cap_out_reads * sizeof(*r->out_reads);
	n += (size_t)r->cap_garbage * sizeof(void *);
	n += (size_t)r->cap_gdata * sizeof(void *);
	n += (size_t)r->cap_repair * sizeof(*r->repair);
	n += (size_t)r->cap_cbuf * sizeof(*r->cbuf);
	n += (size_t)r->cap_mtmp * sizeof(*r->mtmp);
	n += (size_t)r->cap_reads * sizeof(*r->reads);
	n += (size_t)r->cap_pconf * sizeof(*r->pconf);
	return n;
}

void raft_set_lost(struct raft *r)
{
	PARLEY_ASSERT(!r->in_ready);
	if (r->role == RAFT_LEADER)
		return; /* only at open, where every group starts as a follower */
	r->lost = true;
}

bool raft_lost(const struct raft *r) { return r->lost; }

bool raft_damaged(const struct raft *r, uint64_t *first)
{
	if (first)
		*first = r->damaged;
	return r->damaged != 0;
}
