/*
 * raft.h — parley's Raft core: a pure, deterministic state machine.
 *
 * One `struct raft` per replication group (multi-Raft: one group per
 * partition plus the meta group). The core does no I/O, reads no clock and
 * has no randomness of its own:
 *
 *   inputs   raft_step(msg)       a message from a peer (decoded by raft_codec)
 *            raft_tick()          one logical clock tick (the caller's clock)
 *            raft_propose(data)   a client command (leader only)
 *            raft_propose_conf()  a membership change (leader only)
 *            raft_transfer()      leader transfer to a peer (TimeoutNow)
 *            raft_read_index()    a linearizable read barrier (ReadIndex)
 *            raft_compacted()     the caller took a state-machine snapshot
 *            raft_persist_failed() the caller's disk failed (leader steps down)
 *            raft_unquiesce()     wake an idle group (node liveness says so)
 *   output   raft_ready()         a batch: hard state + entries to persist,
 *                                 messages to send, committed entries to
 *                                 apply, snapshot chunk to store / snapshot to
 *                                 install, confirmed reads
 *            raft_advance()       the caller acknowledges the batch
 *   time     ticks; randomness: a seed in raft_config (splitmix64), used only
 *            for the randomized election timeout.
 *
 * THE CONTRACT (durable before send, with one exception: 3a):
 *   1. r = raft_ready(); if nothing is ready, r->empty is true.
 *   2. The caller makes durable, in this order: r->snap_chunk (if any), the
 *      truncation (if r->truncate_from: drop stable entries >= it), the
 *      r->entries (truncating its stable log after entries[0].index-1 first),
 *      r->repair entries (overwritten in place, nothing truncated), and the
 *      hard state r->hs (if r->hs_changed). Then fsync.
 *  3a. The first r->n_early messages of r->msgs MAY be sent before (or
 *      while) step 2 runs: the leader replicating in parallel with its own
 *      write (Ongaro's thesis §10.2.1). The core puts there only a
 *      leader's MSG_APPEND whose entries are all of its current term, and
 *      only when that term and its vote are already durable (no new
 *      hard-state term/vote in this ready), and the ready truncates and
 *      installs nothing. Never a vote or pre-vote, never a response (a
 *      response claims durability), never anything sent under a term or
 *      vote not yet durable. Safe because the leader counts its own match
 *      only after raft_advance (I5): such entries commit by a quorum of
 *      durable copies, which includes the leader only once its fsync
 *      completed, or by a quorum of followers without it; and committed
 *      entries are handed out for apply only once durable on this node
 *      (I4), so a leader that crashes after sending but before its fsync
 *      acknowledges nothing (its followers may still commit the entries
 *      under a later leader). Sending them after step 2 is equally valid.
 *   3. Only then it sends the rest of r->msgs (any order, any transport;
 *      loss is fine),
 *      installs r->snap_install (if set: replaces the state machine, drops
 *      the log up to that index) and applies r->committed in order.
 *      Confirmed reads r->reads may be served once the state machine has
 *      applied through their index.
 *      A leader makes the APPENDs of its new entries (proposals, and an
 *      answer that opened a follower's window) when raft_ready() is
 *      called, not in raft_propose()/raft_step(): one APPEND per follower
 *      per ready carries every entry taken since the last one (up to the
 *      batch limits and the in-flight window), with the commit index.
 *   4. raft_advance(). Between raft_ready() and raft_advance() no other raft_*
 *      call is allowed. Everything a ready points to stays valid until
 *      raft_advance() and is owned by the core.
 *   If step 2 fails, the caller calls raft_persist_failed() instead of
 *   advance: the batch's messages are dropped (early ones may be out: the
 *   entries they carry were never counted on this node), a leader steps
 *   down, and the
 *   node must not acknowledge anything it did not persist (the simulator
 *   crashes such a node and restarts it from its disk).
 *
 * Stable log: the caller's storage, read through struct raft_storage (a
 * small vtable, so the engine's WAL can be the storage and the simulator an
 * in-memory fault-injecting disk). The core keeps only *unstable* entries
 * (not yet acknowledged by raft_advance) in memory.
 *
 * Entries carry a checksum (raft_entry_csum). The core verifies it whenever
 * it reads an entry back from storage (unless the storage vouches for what
 * it returns: raft_storage.verified_data) and whenever an entry arrives in a
 * message. A node that finds a damaged entry:
 *   - never applies or sends it (apply stops just before it);
 *   - never truncates it away (a damaged entry may be part of a quorum);
 *   - asks the leader to resend it (RAFT_MSGF_DAMAGED + hint in its
 *     responses; a follower also sends an unasked HEARTBEAT_RESP saying so
 *     when it finds the damage, and again every two heartbeat intervals its
 *     leader stays silent, and does not quiesce until repaired: it may find
 *     the damage only on apply, after answering the heartbeat that told it
 *     the commit, which may have been the leader's last before sleeping),
 *     and overwrites it in place ("repair"); if the leader has
 *     compacted it, a snapshot replaces the damaged prefix and the log after
 *     the snapshot is kept (ready.install_keeps_tail);
 *   - if it is the leader, it refuses proposals (-PARLEY_EAGAIN) and hands
 *     leadership (TimeoutNow) to a voter known to hold the entry, which then
 *     repairs it; with none found in two election timeouts it steps down.
 * Assumption: a stored entry's term and index are trustworthy even when its
 * payload is not (the storage protects its record headers with their own
 * checksum, as the WAL does; a record whose header is damaged leaves the
 * storage a log cut at its last entry known good: raft_set_lost). Because the
 * terms are intact, a damaged node still votes and campaigns by the normal
 * rules (it may be the only up-to-date voter). Limitation: a damaged entry
 * that no other node holds cannot be repaired: when the leader can prove it
 * was never committed (more than voters - quorum voters report logs ending
 * before it) it steps down and drops it like any uncommitted tail; otherwise
 * it steps down after two election timeouts and tries again later.
 *
 * Roles (the state machine):
 *
 *                 election timeout              quorum of pre-votes
 *   +----------+  (not quiesced)   +--------------+ -------------+
 *   |          | ----------------> |              |              |
 *   | FOLLOWER |                   | PRECANDIDATE |              v
 *   |          | <---------------- |              |       +-----------+
 *   +----------+  higher term or   +--------------+       |           |
 *     ^  ^   ^    leader's append                          | CANDIDATE | --+ election
 *     |  |   |                                             |           | <-+ timeout:
 *     |  |   +-------- higher term / leader's append ------+-----------+   new term
 *     |  |                                                        |
 *     |  |  higher term, check-quorum failure,            quorum of votes
 *     |  |  persistence failure, removed from conf,              |
 *     |  |  damaged entry and no voter holds it                  v
 *     |  +---------------------------------------------- +--------+
 *     |                                                  | LEADER | appends a
 *     |  TimeoutNow skips PRECANDIDATE (leader transfer) +--------+ no-op first
 *     +---- (FOLLOWER -> CANDIDATE directly)
 *
 *   Learners are FOLLOWERs that never campaign and never vote.
 *   Quiesced: a flag, not a role. An idle leader tells its followers to stop
 *   ticking (QUIESCE heartbeat); any proposal, any non-quiesce message from
 *   the leader, or raft_unquiesce() wakes the group.
 *
 * Invariants (asserted, on in release builds):
 *   I1. term never decreases; a node votes at most once per term (hs.vote).
 *   I2. commit never decreases and never exceeds the last index.
 *   I3. a leader never truncates its own log; entries at or below commit are
 *       never truncated.
 *   I4. applied <= commit; entries are handed out for apply exactly once, in
 *       index order, and only once durable on this node.
 *   I5. a leader counts a peer's match only from that peer's responses and
 *       its own match only after raft_advance (durable before counted).
 *   I6. every conf entry of the log takes effect exactly once, in index
 *       order, when its index commits (on top of the configuration loaded
 *       at raft_new, or installed from a snapshot, for entries after the
 *       index that configuration is as of): none is dropped, however many
 *       a node holds before it learns their commit (their queue's order
 *       is asserted; the pending ones were a list of 8, and a restarted
 *       replica receiving a re-placed group's history silently lost the
 *       rest: a stale configuration it then led with, docs/CLUSTER.md
 *       §2.7). One found damaged in the log at raft_new takes effect once
 *       repaired (or replaced by a snapshot), the ones after it wait for
 *       it; until then the node's configuration is that of before it.
 *
 * Reads: raft_read_index() on a follower forwards to the leader; the answer
 * may be lost like any message, so the caller times out and retries. The
 * leader confirms a read once a quorum acknowledged a heartbeat sent after
 * the read arrived (no leases, no clock assumption).
 *
 * Quiescing: the core cannot tell a quiet leader from a dead one while it
 * does not tick, so the caller's node-level liveness (one heartbeat per node
 * pair, coalesced across groups) must raft_unquiesce() the groups whose
 * leader's node stopped answering (raft_leader_down does it too). Heartbeats
 * of many groups between the same two nodes carry the group id and may be
 * coalesced by the transport. A leader quiesces (after quiesce_ticks idle
 * ticks, at a heartbeat) only when its log is committed, nothing is pending
 * (reads, transfer, conf change, damaged entries), every member that
 * answered within the current or previous check-quorum window holds its
 * whole log (a dead or cut-off member does not keep the group awake: its
 * return, an old index in an answer or a pre-vote, wakes the leader), and,
 * with check_quorum, a quorum answered in the current window.
 * raft_unquiesce() of a leader opens a fresh check-quorum window in which
 * the followers must answer anew: a leader woken because links went down
 * either hears from a quorum again or is deposed by check-quorum, instead
 * of sleeping on as a leader nobody follows.
 *
 * Membership: one change at a time, as a RAFT_ENTRY_CONF log entry, taking
 * effect when committed. A leader proposes a change only after it committed an
 * entry of its own term and when no other change is pending. A node joins
 * only when it is not a member; a member removed before may join again
 * (as a learner, catching up from its own log): an id always names the
 * same node and its data, never another node (conf.max_id records the
 * highest id the group ever held).
 *
 * Threading: a struct raft is owned by one thread; nothing here locks.
 * Memory per group: ~3.3 KB for an idle (quiesced) 3-node group, measured by
 * raft_footprint() in tests/sim/test_scn_idle_groups.c (struct raft with
 * RAFT_MAX_MEMBERS progress slots; batch buffers are released while quiesced)
 * plus unstable entries and in-flight ready buffers when busy.
 */
#ifndef PARLEY_RAFT_H
#define PARLEY_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits ------------------------------------------------------------ */

#define RAFT_MAX_MEMBERS 9          /* voters + learners in one group */
#define RAFT_MAX_ENTRY_BYTES (1u << 20)
#define RAFT_MAX_CHUNK_BYTES (64u << 10) /* one snapshot chunk on the wire */
#define RAFT_MAX_MSG_ENTRIES 256    /* entries in one APPEND */

/* ---- entries ----------------------------------------------------------- */

enum raft_entry_type {
	RAFT_ENTRY_NORMAL = 0, /* a client command */
	RAFT_ENTRY_NOOP = 1,   /* appended by a new leader at term start */
	RAFT_ENTRY_CONF = 2,   /* a membership change (struct raft_conf_change) */
};

/*
 * One log entry. `data` is borrowed: in a message it points into the
 * message's buffer (valid while the message is); in a ready it is owned by
 * the core until raft_advance(). The core copies what it keeps.
 */
struct raft_entry {
	uint64_t term;
	uint64_t index;
	uint64_t csum;       /* raft_entry_csum(term, index, type, data, len) */
	uint32_t len;        /* <= RAFT_MAX_ENTRY_BYTES */
	uint8_t type;        /* enum raft_entry_type */
	const uint8_t *data;
};

/* xxh3 over (term, index, type, data): what makes a damaged entry visible. */
uint64_t raft_entry_csum(uint64_t term, uint64_t index, uint8_t type,
			 const void *data, uint32_t len);
static inline bool raft_entry_ok(const struct raft_entry *e)
{
	return e->csum == raft_entry_csum(e->term, e->index, e->type, e->data,
					  e->len);
}

/* ---- membership -------------------------------------------------------- */

enum raft_role_in_conf { RAFT_VOTER = 1, RAFT_LEARNER = 2 };

struct raft_conf {
	uint32_t n;                          /* members in use */
	uint64_t max_id;                     /* highest id ever a member */
	uint64_t ids[RAFT_MAX_MEMBERS];      /* node ids, never 0, never reused */
	uint8_t roles[RAFT_MAX_MEMBERS];     /* enum raft_role_in_conf */
};

enum raft_conf_op {
	RAFT_CONF_ADD_VOTER = 1,   /* a new node straight into the voters */
	RAFT_CONF_ADD_LEARNER = 2, /* a new node as a non-voting learner */
	RAFT_CONF_PROMOTE = 3,     /* learner -> voter */
	RAFT_CONF_REMOVE = 4,      /* voter or learner leaves for good */
};

/* Payload of a RAFT_ENTRY_CONF entry: 1 byte op + 8 bytes node id (LE). */
#define RAFT_CONF_CHANGE_BYTES 9
struct raft_conf_change {
	uint8_t op;        /* enum raft_conf_op */
	uint64_t node;
};

/* ---- snapshots --------------------------------------------------------- */

struct raft_snapshot_meta {
	uint64_t index;          /* last entry the snapshot covers (0 = none) */
	uint64_t term;           /* its term */
	uint64_t size;           /* bytes of snapshot data */
	uint64_t csum;           /* xxh3 of the snapshot bytes */
	struct raft_conf conf;   /* membership as of `index` */
};

/* ---- messages ---------------------------------------------------------- */

enum raft_msg_type {
	RAFT_MSG_NONE = 0,
	RAFT_MSG_APPEND = 1,          /* leader -> follower: entries after (index, log_term) */
	RAFT_MSG_APPEND_RESP = 2,     /* follower -> leader: match index, or reject + hints */
	RAFT_MSG_VOTE = 3,            /* candidate -> voters */
	RAFT_MSG_VOTE_RESP = 4,
	RAFT_MSG_PREVOTE = 5,         /* pre-candidate -> voters, for term+1, term not bumped */
	RAFT_MSG_PREVOTE_RESP = 6,
	RAFT_MSG_HEARTBEAT = 7,       /* leader -> follower: commit, read ctx, quiesce */
	RAFT_MSG_HEARTBEAT_RESP = 8,
	RAFT_MSG_SNAPSHOT = 9,        /* leader -> follower: one chunk of a snapshot */
	RAFT_MSG_SNAPSHOT_RESP = 10,  /* follower -> leader: next offset wanted */
	RAFT_MSG_TIMEOUT_NOW = 11,    /* leader -> transfer target: campaign now */
	RAFT_MSG_READ_INDEX = 12,     /* follower -> leader: forward a read (ctx) */
	RAFT_MSG_READ_INDEX_RESP = 13,/* leader -> follower: read index for ctx (0 + REJECT: retry) */
	RAFT_MSG_TYPE_COUNT
};

/* flags */
#define RAFT_MSGF_REJECT 0x1u    /* *_RESP: refused (append mismatch, vote denied, ...) */
#define RAFT_MSGF_TRANSFER 0x2u  /* VOTE/PREVOTE: leader transfer, ignore the leader lease */
#define RAFT_MSGF_QUIESCE 0x4u   /* HEARTBEAT: group is idle, stop ticking */
#define RAFT_MSGF_LAST 0x8u      /* SNAPSHOT: this chunk is the last one */
#define RAFT_MSGF_DAMAGED 0x10u  /* APPEND_RESP/HEARTBEAT_RESP: sender holds a damaged
				  * entry at `hint`; please resend from there */
#define RAFT_MSGF_LOST 0x20u     /* *_RESP: sender may have lost entries (raft_set_lost):
				  * its match is what it says now. HEARTBEAT to such a
				  * follower: index/log_term = the leader's last entry */
#define RAFT_MSGF_NOACK 0x40u   /* APPEND without entries that only tells a commit
				  * advance: a follower that accepts it and has
				  * nothing to report (no REJECT, DAMAGED or LOST)
				  * sends no APPEND_RESP. Advisory, see below */
#define RAFT_MSGF_ALL 0x7Fu
/*
 * Flags every codec accepts since RAFT_CODEC_VERSION 1 (decoders refuse a
 * flag they do not know), and the ADVISORY ones: a message means the same
 * without them and only costs more (NOACK: an answer the leader learns
 * nothing from). A transport clears the advisory flags a receiver did not
 * announce it decodes (server/peer.c: the "raftf" key of a node's INFO),
 * so nodes built before a flag keep working beside nodes built after it.
 */
#define RAFT_MSGF_BASE 0x3Fu
#define RAFT_MSGF_ADVISORY RAFT_MSGF_NOACK

/*
 * One Raft message. Every field is fixed width for the codec; which fields
 * mean something depends on `type` (unused fields are 0 and the codec may
 * skip them):
 *
 *   type            index               log_term            commit  hint                 ctx
 *   APPEND          prev log index      prev log term       yes     -                    -
 *   APPEND_RESP     match/last index    conflict term       -       conflict index /     -
 *                   (reject: prev idx)  (reject)                    damaged index
 *   VOTE, PREVOTE   last log index      last log term       -       -                    -
 *   *VOTE_RESP      -                   -                   -       -                    -
 *   HEARTBEAT       (LOST: last index)  (LOST: last term)   yes     -                    read ctx
 *   HEARTBEAT_RESP  last index          -                   -       damaged index        read ctx
 *   SNAPSHOT        (snap.index)        -                   -       -                    -
 *   SNAPSHOT_RESP   snapshot index      -                   -       -                    -
 *   TIMEOUT_NOW     -                   -                   -       -                    -
 *   READ_INDEX      -                   -                   -       -                    read ctx
 *   READ_INDEX_RESP read index          -                   -       -                    read ctx
 *
 *   SNAPSHOT carries `snap` (meta incl. conf), `offset` (byte offset of
 *   this chunk), `chunk`/`chunk_len` (<= RAFT_MAX_CHUNK_BYTES), LAST flag.
 *   SNAPSHOT_RESP carries `offset` = next byte offset the follower wants
 *   (resume point), snap.index/snap.term = which snapshot.
 *   APPEND carries `entries`/`n_entries` (<= RAFT_MAX_MSG_ENTRIES).
 *   An APPEND with NOACK carries no entries: a leader sends it only to
 *   tell a commit advance to a follower it replicates to (pipelined, not
 *   probing) at the index it already sent; an accepted one is not
 *   answered (the APPENDs that carried those entries were, and the
 *   heartbeats keep the follower counted as active). A refused one is
 *   answered as any APPEND (REJECT: the leader probes), and so is one
 *   that finds a damaged entry or lost entries to report.
 *
 * `group` is the multi-Raft group id: the core copies it into every message
 * it sends and ignores it on receipt (the caller routes by it). Pointers are
 * borrowed (see struct raft_entry).
 */
struct raft_msg {
	uint8_t type;                 /* enum raft_msg_type */
	uint32_t flags;               /* RAFT_MSGF_* */
	uint64_t group;
	uint64_t from;
	uint64_t to;
	uint64_t term;
	uint64_t index;
	uint64_t log_term;
	uint64_t commit;
	uint64_t hint;
	uint64_t ctx;
	/* APPEND */
	uint32_t n_entries;
	const struct raft_entry *entries;
	/* SNAPSHOT / SNAPSHOT_RESP */
	struct raft_snapshot_meta snap;
	uint64_t offset;
	uint32_t chunk_len;
	const uint8_t *chunk;
};

/* ---- persistent state and storage -------------------------------------- */

struct raft_hardstate {
	uint64_t term;
	uint64_t vote;    /* node voted for in `term`, 0 = none */
	uint64_t commit;
};

/*
 * The caller's stable storage. Reads only; every write goes through a ready.
 * All functions return 0 or a negative code.
 */
struct raft_storage {
	void *ctx;
	/*
	 * At raft_new: the durable hard state, the latest installed snapshot
	 * (meta; index 0 = none), the last durable log index (>= snap->index),
	 * and a partially received snapshot (partial->index 0 = none;
	 * *partial_bytes = bytes of it durably stored) so an interrupted
	 * install resumes where it stopped.
	 */
	int (*load)(void *ctx, struct raft_hardstate *hs,
		    struct raft_snapshot_meta *snap, uint64_t *last_index,
		    struct raft_snapshot_meta *partial, uint64_t *partial_bytes);
	/*
	 * Entry at `index` (snap.index < index <= last durable index). `out->data`
	 * may point into storage memory valid until the next storage call.
	 * -PARLEY_ENOTFOUND if compacted or beyond the end. The core verifies
	 * the checksum itself; storage may also return -PARLEY_ECORRUPT with
	 * out->term/index filled when it knows the entry's header but not its
	 * payload.
	 */
	int (*entry)(void *ctx, uint64_t index, struct raft_entry *out);
	/* Up to `len` bytes of the current snapshot at `offset` into buf;
	 * returns bytes read (>= 0) or a negative code. */
	int (*snapshot_read)(void *ctx, uint64_t offset, void *buf, uint32_t len);
	/* true: the `data` that entry() returns for an index <= the commit
	 * index stays valid and unchanged until the caller's raft_advance()
	 * of the ready that read it, whatever storage calls come between
	 * (the caller frees such entries only after that advance, e.g. when
	 * it compacts). The core then hands committed entries out in the
	 * ready without copying them. false: they are copied. */
	bool stable_data;
	/* true: the `data` that entry() returns (0) always matches its
	 * `csum`: the storage verified or computed it from those bytes when
	 * it took the entry (from a ready, or from its disk under checks of
	 * its own) and never changes them, and it reports what it cannot
	 * vouch for as -PARLEY_ECORRUPT. The core then does not hash an
	 * entry again when it reads it back (apply, send, repair); it still
	 * verifies every entry that arrives in a message. What this gives up
	 * is the check of the storage's memory between its taking and its
	 * reading an entry. false: every read is verified. */
	bool verified_data;
	/* Optional, both or neither: the memory of the core's own copy of
	 * each entry it adds to its log (a proposal, an entry taken from an
	 * APPEND). data_alloc(ctx, len) returns room for len bytes (NULL: the
	 * core aborts, as when its own malloc fails); data_free(ctx, data)
	 * gives it back, exactly once per data_alloc, when the core drops its
	 * copy (at the raft_advance after the entry was persisted, at a
	 * truncation, at raft_free). The data of a ready's entries[] is such
	 * memory, so a storage that counts references to it can keep it as
	 * its stored copy at persist instead of copying it (it then holds a
	 * reference of its own, released by its own rules, and never changes
	 * the bytes). Called on the thread that drives the core. NULL: malloc
	 * and free. */
	void *(*data_alloc)(void *ctx, uint32_t len);
	void (*data_free)(void *ctx, void *data);
};

/* ---- configuration ------------------------------------------------------ */

struct raft_config {
	uint64_t id;                 /* this node, never 0 */
	uint64_t group;              /* copied into messages */
	uint32_t election_ticks;     /* base election timeout (randomized in [e, 2e)) */
	uint32_t heartbeat_ticks;    /* < election_ticks */
	uint32_t max_inflight;       /* APPEND messages in flight per follower */
	uint32_t max_batch_entries;  /* entries per APPEND (<= RAFT_MAX_MSG_ENTRIES) */
	uint32_t max_batch_bytes;    /* payload bytes per APPEND */
	uint32_t max_uncommitted;    /* unstable+uncommitted entries before EFULL */
	uint32_t chunk_bytes;        /* snapshot chunk size (<= RAFT_MAX_CHUNK_BYTES) */
	uint32_t quiesce_ticks;      /* idle ticks before a leader quiesces (0 = never) */
	uint64_t rng_seed;           /* injected randomness (election jitter) */
	bool pre_vote;
	bool check_quorum;
	/* Bootstrap: the initial configuration when storage holds nothing
	 * (every founding member gets the same one). Ignored otherwise. */
	struct raft_conf bootstrap;
	/* The index the loaded configuration (the snapshot meta's, or the
	 * bootstrap) is as of, when the caller keeps it newer than the
	 * snapshot (0 = the snapshot's own index): conf entries of the log
	 * at or below it are already in it and are not applied again. */
	uint64_t conf_index;
	struct raft_storage storage;
};

/* ---- the ready batch ---------------------------------------------------- */

struct raft_read {
	uint64_t ctx;     /* as given to raft_read_index */
	uint64_t index;   /* serve once applied >= index */
	int err;          /* 0, or -PARLEY_ENOTLEADER / -PARLEY_ETIMEDOUT (retry) */
};

struct raft_ready {
	bool empty;
	bool hs_changed;
	struct raft_hardstate hs;
	/* persist: drop stable entries >= truncate_from (0 = none), then
	 * truncate the stable log after entries[0].index - 1 and append */
	uint64_t truncate_from;
	const struct raft_entry *entries;
	uint32_t n_entries;
	/* persist: overwrite these damaged entries in place (no truncation) */
	const struct raft_entry *repair;
	uint32_t n_repair;
	/* persist: a chunk of an incoming snapshot (chunk_len > 0 or LAST) */
	bool has_chunk;
	struct raft_snapshot_meta chunk_snap;
	uint64_t chunk_offset;
	uint32_t chunk_len;
	const uint8_t *chunk;
	/* after persisting: install this (fully received) snapshot: replace
	 * the state machine, drop the log up to install.index and, unless
	 * install_keeps_tail, the rest of the log too (install_keeps_tail is
	 * set when a node with a damaged entry repairs it from a snapshot and
	 * its log after install.index is intact and agrees with the leader) */
	bool has_install;
	bool install_keeps_tail;
	struct raft_snapshot_meta install;
	/* after persisting: send; msgs[0..n_early) may leave before
	 * (contract 3a), the rest only after */
	const struct raft_msg *msgs;
	uint32_t n_msgs;
	uint32_t n_early;
	/* after persisting: apply, in order (checksums verified) */
	const struct raft_entry *committed;
	uint32_t n_committed;
	/* linearizable reads confirmed (or failed) */
	const struct raft_read *reads;
	uint32_t n_reads;
};

/* ---- the API ------------------------------------------------------------ */

enum raft_role {
	RAFT_FOLLOWER = 0,
	RAFT_PRECANDIDATE = 1,
	RAFT_CANDIDATE = 2,
	RAFT_LEADER = 3,
};

struct raft;

/* Creates a core from the caller's storage; 0 or -PARLEY_E*. */
int raft_new(const struct raft_config *cfg, struct raft **out);
void raft_free(struct raft *r);

/* Inputs. Each returns 0 or a negative code; none blocks. */
int raft_step(struct raft *r, const struct raft_msg *m);
void raft_tick(struct raft *r);
/* Leader only: appends a NORMAL entry; *index gets its log index.
 * -PARLEY_ENOTLEADER (see raft_leader() for a hint), -PARLEY_EFULL
 * (too many uncommitted entries), -PARLEY_EAGAIN (leader transfer in
 * progress), -PARLEY_ETOOBIG. */
int raft_propose(struct raft *r, const void *data, uint32_t len,
		 uint64_t *index);
/* Leader only: one membership change at a time. -PARLEY_EAGAIN while one is
 * pending or before the leader committed in its term; -PARLEY_EINVAL for a
 * reused id, an unknown node, a promote of a non-learner, or a removal that
 * would leave no voter. */
int raft_propose_conf(struct raft *r, const struct raft_conf_change *cc,
		      uint64_t *index);
/* Leader only: hand leadership to `to` (a voter). */
int raft_transfer(struct raft *r, uint64_t to);
/* Leader only: `id` has acknowledged an entry of this leader's term, so it
 * is alive and following this term (a transfer to it can complete); false
 * on a follower, for an unknown id, for a peer not heard from since
 * the election, or for one that says it lost entries (raft_set_lost: it
 * would not campaign). */
bool raft_peer_current(struct raft *r, uint64_t id);
/* ReadIndex: the result comes back in a ready's reads with the same ctx.
 * Works on a follower too (forwarded to the leader). */
int raft_read_index(struct raft *r, uint64_t ctx);
/* The caller's storage now holds a snapshot `meta` and may have dropped
 * the log up to meta->index (which must be <= applied). */
int raft_compacted(struct raft *r, const struct raft_snapshot_meta *meta);
/* The caller failed to persist the last ready (EIO on fsync). */
void raft_persist_failed(struct raft *r);
/* Wake a quiesced group (e.g. node liveness saw the leader's node die). */
void raft_unquiesce(struct raft *r);
/* The transport saw node `id`'s link go down. A follower whose leader is
 * `id` ends its leader lease at once (it grants votes, check_quorum's
 * stickiness no longer holds) and campaigns after 1 + 2 * rank ticks
 * (rank: how many other surviving voters have a smaller id; at most
 * election_ticks) instead of a whole randomized election timeout, so the
 * survivors do not tie. Any other role or
 * leader: nothing. A wrong hint (the link flapped, the leader lives) costs
 * one pre-vote round that the leader's other followers refuse, and the
 * leader's next message resets the timer. The core keeps no memory of
 * it: a message from `id` stepped afterwards makes the node follow `id`
 * again (a QUIESCE heartbeat puts it back to sleep, and a quiesced
 * follower never campaigns). So a caller that steps a message from `id`
 * while it still holds `id`'s link down (one `id` sent before the link
 * went down, queued behind the notification) calls this again after the
 * step (the engine does: part_raft.c repl_inputs). */
void raft_leader_down(struct raft *r, uint64_t id);

struct raft_ready *raft_ready(struct raft *r);
void raft_advance(struct raft *r);

/* Observers (pure reads). */
enum raft_role raft_role(const struct raft *r);
uint64_t raft_term(const struct raft *r);
uint64_t raft_leader(const struct raft *r);   /* 0 = unknown */
uint64_t raft_commit(const struct raft *r);
uint64_t raft_applied(const struct raft *r);
uint64_t raft_last_index(const struct raft *r);
uint64_t raft_id(const struct raft *r);
bool raft_quiesced(const struct raft *r);
bool raft_damaged(const struct raft *r, uint64_t *first_damaged);
/*
 * Lost entries (a follower's storage could not read back part of its log:
 * a damaged record header, whose entries' terms and indexes are unknown).
 * Called right after raft_new, before any other input, when the storage
 * handed over a log that may end before entries this node acknowledged
 * (the storage truncated it at its last entry known good). Such a node
 * may be the copy that made an entry committed; if it voted by its
 * shorter log it could help elect a leader that lacks that entry. So,
 * until it holds its current leader's whole log again:
 *   - it neither grants votes nor pre-votes, and never campaigns (an
 *     election timeout or TimeoutNow does nothing);
 *   - its answers carry RAFT_MSGF_LOST: the leader lowers that member's
 *     match to what the answer says it holds (a leader never lowers a
 *     match otherwise, and would wait for ever on entries the follower no
 *     longer has) and probes from there, by log or snapshot;
 *   - the leader's heartbeats to it carry its last index and term; when
 *     they equal the follower's own last entry (log matching: the same
 *     log), the follower holds every entry committed so far (a leader
 *     holds them all) and votes again. A leader does not quiesce while a
 *     member says it lost entries.
 * Not durable: the caller sets it again at every start for as long as it
 * keeps the evidence (the damaged bytes). A no-op on a leader.
 */
void raft_set_lost(struct raft *r);
bool raft_lost(const struct raft *r);
const struct raft_conf *raft_conf(const struct raft *r);
/* The index raft_conf() is as of: its last committed conf entry's, or the
 * index of the configuration loaded at raft_new (max of the snapshot's and
 * raft_config.conf_index) or installed from a snapshot, whichever came
 * last. A snapshot image of index i carries raft_conf() only when this is
 * <= i (its meta's conf is the membership as of i). */
uint64_t raft_conf_index(const struct raft *r);
/* Times this node campaigned as a candidate (a real election, after a
 * won pre-vote or without pre-vote), since raft_new. */
uint64_t raft_elections(const struct raft *r);
/* Commit-advance APPENDs not sent because an APPEND of the same ready
 * already carried the new commit index to that follower (raft.c,
 * flush_commit_bcast). */
uint64_t raft_commit_sends_skipped(const struct raft *r);
/* Commit-only APPENDs this leader sent with RAFT_MSGF_NOACK, and those this
 * follower received and did not answer (accepted, nothing to report). */
uint64_t raft_noack_sent(const struct raft *r);
uint64_t raft_noack_unanswered(const struct raft *r);
/* Leader only: what it knows of each member (itself included, match =
 * its durable last index), at most `max` (RAFT_MAX_MEMBERS is enough).
 * `active`: the member answered within the current or the previous
 * check-quorum window (one to two election timeouts; always true
 * without check_quorum). Returns the count, 0 on a non-leader. */
struct raft_member_progress {
	uint64_t id;
	uint64_t match;  /* highest index known replicated on it */
	bool voter;
	bool active;
	bool snapshot;   /* being sent a snapshot */
};
uint32_t raft_progress_get(const struct raft *r, struct raft_member_progress *out,
			   uint32_t max);
/* Bytes this group holds in memory (struct + buffers, not the caller's
 * storage): what "small per-group memory" is measured by. */
size_t raft_footprint(const struct raft *r);
/* Entry term at index, from unstable or storage; 0 if unknown. */
uint64_t raft_term_at(struct raft *r, uint64_t index);

/* Helpers shared with the codec and callers. */
const char *raft_msg_type_name(uint8_t type);
const char *raft_role_name(enum raft_role role);
int raft_conf_change_encode(const struct raft_conf_change *cc,
			    uint8_t out[RAFT_CONF_CHANGE_BYTES]);
int raft_conf_change_decode(const uint8_t *p, uint32_t len,
			    struct raft_conf_change *cc);
/* Applies cc to conf (the rule set of raft_propose_conf); 0 or -PARLEY_EINVAL. */
int raft_conf_apply(struct raft_conf *conf, const struct raft_conf_change *cc);
int raft_conf_find(const struct raft_conf *conf, uint64_t id);  /* slot or -1 */

#endif /* PARLEY_RAFT_H */
