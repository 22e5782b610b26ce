/*
 * part_raft.c — each partition is a Raft group (engine/raft/raft.h) whose
 * log is the shard's WAL. A single node runs every partition as a group of
 * one voter through exactly this path.
 *
 * The group's storage (raft.h contract, step 2) is the WAL:
 *   entries     a NORMAL entry's payload is `u8 kind | command body`
 *               (log/cmd.h); the WAL record stores the kind as its type
 *               and the body as its body, with (partition, term, index) in
 *               its header. NOOP and CONF entries are records of type
 *               CMD_NOOP / CMD_CONF. The record checksums guard them on
 *               disk; at recovery the entry checksum is computed from the
 *               bytes that passed the record's, and the core does not
 *               hash them again when it reads them from rlog
 *               (raft_storage.verified_data, part_raft_open).
 *   truncation  a record at an index at or below the partition's last one
 *               supersedes that suffix (log-structured: the WAL is never
 *               rewritten; recovery keeps the latest record per index).
 *   hard state  term and vote of every partition of the shard live in one
 *               small file, <wal dir>/HARDSTATE, replaced atomically
 *               (pio_file_replace) whenever a term or vote changes; the
 *               commit index is not stored (Raft does not need it durable;
 *               a restarted group re-learns it from its leader's no-op).
 *   snapshot    the partition's history segments (flushed_index) plus the
 *               state the memtable rebuilds from the WAL after it.
 *   reads       entry(i) is served from `rlog`, an in-memory copy of the
 *               durable entries the state machine has not applied yet (all
 *               of the WAL after the snapshot at open; one or two batches
 *               while serving). Once applied, the group is told its log is
 *               compacted to the applied index (raft_compacted), which a
 *               group of one never reads below.
 *
 * One ready per group per WAL batch (the group commit):
 *
 *   queued proposals (stamped with the time) -> raft_propose -> raft_ready:
 *     entries   -> records in the shard's open WAL batch, copied into rlog
 *     committed -> applied now (they are durable: raft.h I4) and answered
 *                  through their waiters, matched by (index, term)
 *   batch written + fdatasync'd -> raft_advance -> the next ready brings
 *   those entries back as committed (a voter of one commits on its own
 *   durable match) and carries the next proposals.
 *
 * Between a group's ready and its advance no proposal is made: appends for
 * that partition queue on part->prop_* and go into the next ready, so the
 * latency stays "one sync of waiting plus one sync of writing".
 *
 * Deviations from raft.h's order, and why they are safe here: committed
 * entries are applied before the same ready's new entries are persisted
 * (they were durable before: I4), and a ready whose only change is the
 * commit index is advanced at once (the commit index is not stored).
 *
 * Several voters (pe_options.cluster, parley_engine.h "Replication"):
 *   - messages: a leader's appends of its current term (the ready's
 *     n_early, raft.h 3a) leave through cl->send as soon as the ready is
 *     taken, so followers write in parallel with the leader's own WAL
 *     batch; the leader's own match counts only at raft_advance, after
 *     that batch's fdatasync, and it applies (answers) nothing not durable
 *     here. Every other message leaves only after
 *     what it depends on is durable: a ready with a new term or vote
 *     keeps its messages (out_msgs) and is not advanced until a HARDSTATE
 *     store holding it is durable (on the read pool, off the shard
 *     thread: part_raft_hs_done), and a ready with entries until its WAL
 *     batch is fdatasync'd (part_raft_durable); one with both waits for
 *     both. A group of one sends none (asserted).
 *   - inputs: inbound messages (rin, from log/part_repl.c) and ticks
 *     (pend_ticks) are given to the group when it has no ready out (no
 *     raft_* call between ready and advance); an APPEND is stepped only
 *     when its entries fit the open WAL batch, else it waits for the next.
 *     While the shard's WAL batch is in flight, messages without entries
 *     (a follower's answer) are stepped too (part_raft_run_inputs), so a
 *     leader commits and acknowledges when the quorum's answer arrives,
 *     not after the flight in progress.
 *   - catch-up: applied entries stay in rlog up to cl->log_keep_bytes so a
 *     leader can send them to lagging followers; below that a follower
 *     would need a snapshot, which is not built: snapshot_read refuses
 *     (logged once, counted) and inbound SNAPSHOT messages are dropped,
 *     so nothing ever installs a fake (empty) snapshot.
 *   - leadership loss: the waiters above the commit index fail with
 *     -PARLEY_ENOTLEADER and the leader hint; the others apply.
 *   - membership (log/part_conf.c): a group starts from its stored
 *     configuration (else the founders, cl->conf); a queued change is
 *     proposed before the queued appends of a run; inbound messages are
 *     filtered by the group's current configuration; an applied conf
 *     entry stores the configuration after it.
 *
 * Threads: a partition's group is driven by its shard thread only, and by
 * pe_open (the election at open) before the shard threads start.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "engine_internal.h"

#define HS_MAGIC 0x3153484D4C5041ull /* "PLAMHS1" */
#define HS_SEED 0x48415244535441ull
#define RAFT_ELECTION_TICKS 4u       /* a group of one (never ticks live) */
#define MAX_PEND_TICKS 2u            /* ticks kept while a ready is out */
#define RAFT_OPEN_ROUNDS 64u         /* election rounds at open, at most */
#define PROP_MARGIN 2u               /* records a ready may add (no-op) */

/* ---- rlog's payload memory ------------------------------------------------- */

/*
 * Every payload rlog holds is a copy in this memory (made at recovery, at
 * a repair; at persist it is the Raft core's own copy, below), and rlog
 * lets go of them nearly always in index order
 * (applied, then compacted), rarely from the end (a truncation) or in the
 * middle (a repaired placeholder). One malloc and one free per entry, on
 * every replica, was a visible part of a follower's shard thread; instead
 * payloads are bump-allocated from the partition's current chunk of
 * RLOG_CHUNK_BYTES, each chunk counting its live payloads:
 *   - a payload is preceded by a pointer to its chunk (8 bytes) and
 *     padded to 8 bytes;
 *   - a chunk other than the current one goes back to malloc when its
 *     last payload is released; the current one, when empty, is filled
 *     again from its start;
 *   - a payload above RLOG_BIG_BYTES gets a chunk of its own (freed with
 *     it).
 * So a payload's memory lives exactly as long as before (from
 * rlog_alloc to rlog_release; the Raft core borrows it in between,
 * raft_storage.stable_data) and a partition holds at most one chunk
 * beyond the ones its live payloads are in.
 *
 * The core's copies (raft_storage.data_alloc/data_free) come from here
 * too: a proposal's bytes, or an entry taken from an APPEND, are copied
 * once, by the core, into a payload; at persist rlog takes a reference of
 * its own to that payload (rlog_retain) instead of copying it again, and
 * the core lets go of its reference at the advance. `live` counts
 * references: a payload so shared counts twice until the advance. Neither
 * side writes the bytes after the core's copy. (Before: the core's copy
 * was a malloc block freed at the advance, and rlog copied it again.)
 *
 * A payload kept long (a damaged placeholder has none; a lagging
 * follower's catch-up keeps log_keep_bytes anyway) pins at most its
 * chunk. Shard thread only (and open), like the rest of rlog.
 */
#define RLOG_CHUNK_BYTES (64u << 10)
#define RLOG_BIG_BYTES (RLOG_CHUNK_BYTES / 8u)

struct rlog_chunk {
	uint32_t live; /* payloads allocated from it and not released */
	uint32_t used; /* bytes of data[] handed out */
	uint32_t cap;  /* bytes of data[] */
	uint32_t pad;
	uint8_t data[];
};

/* Room for len bytes, 8-aligned; NULL when out of memory. */
static uint8_t *rlog_alloc(struct part *p, uint32_t len)
{
	uint32_t need = 8u + ((len + 7u) & ~7u);
	struct rlog_chunk *c = p->rchunk;
	if (need > RLOG_BIG_BYTES) {
		c = malloc(sizeof *c + need);
		if (!c)
			return NULL;
		*c = (struct rlog_chunk){.cap = need};
	} else {
		if (c && !c->live)
			c->used = 0; /* empty: fill it from the start */
		if (!c || c->cap - c->used < need) {
			/* (an empty current chunk always has room) */
			c = malloc(sizeof *c + RLOG_CHUNK_BYTES);
			if (!c)
				return NULL;
			*c = (struct rlog_chunk){.cap = RLOG_CHUNK_BYTES};
			p->rchunk = c; /* the old one goes with its last payload */
		}
	}
	uint8_t *b = c->data + c->used;
	memcpy(b, &c, sizeof c);
	c->used += need;
	c->live++;
	return b + 8;
}

/* One more reference to a payload from rlog_alloc (released by one more
 * rlog_release). */
static void rlog_retain(const uint8_t *d)
{
	struct rlog_chunk *c;
	memcpy(&c, d - 8, sizeof c);
	PARLEY_ASSERT(c->live > 0 && d > c->data && d <= c->data + c->used);
	c->live++;
}

/* Releases a payload from rlog_alloc (NULL: none). */
static void rlog_release(struct part *p, const uint8_t *d)
{
	if (!d)
		return;
	struct rlog_chunk *c;
	memcpy(&c, d - 8, sizeof c);
	PARLEY_ASSERT(c->live > 0 && d > c->data && d <= c->data + c->used);
	if (--c->live == 0 && c != p->rchunk)
		free(c);
}

/* ---- rlog: durable entries not yet applied --------------------------------- */

/*
 * rlog is an array of entries that grows at its end (persist) and is
 * dropped from its front (compaction: after every applied batch once the
 * kept log is full, a few entries at a time). The front is dropped by
 * moving rlog past them (rlog_head counts the dropped slots before it);
 * the live entries are moved down to the allocation's start only when the
 * array is full and at least a quarter of it is dropped slots, so an
 * entry is moved at most ~3 times per quarter-array of drops, and never
 * per compaction. (Before: every compaction moved the whole kept log, up
 * to log_keep_bytes of entries, tens of thousands at 4 MiB and 100 B
 * messages: once the kept log was full that memmove was about half of
 * every shard thread's samples, bench/RESULTS.md 2026-12-06.)
 */

static void rlog_free_from(struct part *p, uint64_t index)
{
	while (p->rlog_n && p->rlog_first + p->rlog_n - 1 >= index) {
		p->rlog_n--;
		p->rlog_bytes -= p->rlog[p->rlog_n].len;
		rlog_release(p, p->rlog[p->rlog_n].data);
	}
}

static void rlog_drop_through(struct part *p, uint64_t index)
{
	uint64_t k = 0;
	while (k < p->rlog_n && p->rlog_first + k <= index) {
		p->rlog_bytes -= p->rlog[k].len;
		rlog_release(p, p->rlog[k].data);
		k++;
	}
	if (!k)
		return;
	p->rlog += k;
	p->rlog_head += k;
	p->rlog_n -= k;
	p->rlog_first += k;
}

/* Room for one more entry at rlog's end; -PARLEY_ENOMEM. */
static int rlog_room(struct part *p)
{
	if (p->rlog_head + p->rlog_n < p->rlog_cap)
		return 0;
	struct raft_entry *base = p->rlog ? p->rlog - p->rlog_head : NULL;
	if (p->rlog_head && p->rlog_head >= p->rlog_cap / 4) {
		memmove(base, p->rlog, p->rlog_n * sizeof *base);
		p->rlog = base;
		p->rlog_head = 0;
		return 0;
	}
	uint64_t nc = p->rlog_cap ? p->rlog_cap * 2 : 64;
	struct raft_entry *ne = realloc(base, nc * sizeof *ne);
	if (!ne)
		return -PARLEY_ENOMEM;
	p->rlog = ne + p->rlog_head;
	p->rlog_cap = nc;
	return 0;
}

/*
 * Drops rlog's entries from `index` on because a later entry supersedes
 * them there (a record later in the WAL at recovery, a log end marker, or
 * the leader's conflicting entry: the core's truncate_from). A damaged
 * placeholder dropped so is counted superseded, never repaired: the entry
 * the log holds at that index now is the later one, not a repair of it.
 * Superseded by a later record or by the leader it was never committed (a
 * committed entry is never superseded: leader completeness; the later
 * record is the log the node went on acknowledging with); dropped at a log
 * end marker it was outside the log the node held at that open, which
 * took that index from the leader again (the records after the marker).
 * Before, such a placeholder stayed counted found only, and a settled node
 * showed found > repaired with nothing missing (the 22 "unrepaired"
 * records of cluster_test_cluster_netns_long, docs/CLUSTER.md §2.5).
 */
static void rlog_truncate(struct part *p, uint64_t index)
{
	uint64_t n = 0, first = 0;
	for (uint64_t k = p->rlog_n; k-- > 0 && p->rlog_first + k >= index;)
		if (!p->rlog[k].data) {
			n++;
			first = p->rlog_first + k;
		}
	if (n) {
		atomic_fetch_add_explicit(&p->pub_damaged_superseded, n,
					  memory_order_relaxed);
		PLOG_I("engine", "damaged entries superseded by a later entry at "
		       "their index: nothing to repair",
		       "partition=%u from=%" PRIu64 " first_damaged=%" PRIu64
		       " count=%" PRIu64, p->id, index, first, n);
	}
	rlog_free_from(p, index);
}

/* Appends (term, index, type, data) taking over a reference to `owned`
 * (an rlog_alloc payload holding the data, released here on failure) with
 * its checksum (computed when csum is NULL); truncates a conflicting
 * suffix first.
 * -PARLEY_ENOMEM or -PARLEY_ECORRUPT (gap). */
static int rlog_put_owned(struct part *p, uint64_t term, uint64_t index,
			  uint8_t type, uint8_t *owned, uint32_t len,
			  const uint64_t *csum)
{
	if (!p->rlog_n)
		p->rlog_first = index;
	rlog_truncate(p, index);
	if (!p->rlog_n)
		p->rlog_first = index;
	if (index != p->rlog_first + p->rlog_n) {
		rlog_release(p, owned);
		return -PARLEY_ECORRUPT;
	}
	if (rlog_room(p)) {
		rlog_release(p, owned);
		return -PARLEY_ENOMEM;
	}
	p->rlog_bytes += len;
	p->rlog[p->rlog_n++] = (struct raft_entry){
		.term = term, .index = index, .len = len, .type = type,
		.data = owned,
		.csum = csum ? *csum
			     : raft_entry_csum(term, index, type, owned, len)};
	return 0;
}

/* Replaces a damaged placeholder (data NULL, see part_raft_recover_damaged)
 * with the whole entry, in place: the entries after it stay (same term and
 * index: the same entry, Raft's log matching). Takes `owned`. */
static void rlog_repair(struct part *p, uint64_t index, uint8_t type,
			uint8_t *owned, uint32_t len, const uint64_t *csum)
{
	PARLEY_ASSERT(p->rlog_n && index >= p->rlog_first &&
		      index < p->rlog_first + p->rlog_n);
	struct raft_entry *x = &p->rlog[index - p->rlog_first];
	p->rlog_bytes -= x->len;
	rlog_release(p, x->data);
	p->rlog_bytes += len;
	x->type = type;
	x->len = len;
	x->data = owned;
	x->csum = csum ? *csum : raft_entry_csum(x->term, index, type, owned, len);
}

/* rlog's entry at `index` when it has `term` (NULL: none): by Raft's log
 * matching, a record with the same term and index is the same entry. */
static const struct raft_entry *rlog_same_at(const struct part *p,
					     uint64_t index, uint64_t term)
{
	if (!p->rlog_n || index < p->rlog_first ||
	    index >= p->rlog_first + p->rlog_n)
		return NULL;
	const struct raft_entry *x = &p->rlog[index - p->rlog_first];
	return x->term == term ? x : NULL;
}

/* The placeholder of a damaged entry at `index` with `term`, if any. */
static bool rlog_damaged_at(const struct part *p, uint64_t index,
			    uint64_t term)
{
	const struct raft_entry *x = rlog_same_at(p, index, term);
	return x && !x->data;
}

static uint64_t rlog_last(const struct part *p)
{
	return p->rlog_n ? p->rlog_first + p->rlog_n - 1 : p->flushed_index;
}

void part_raft_free(struct part *p)
{
	while (p->rin_head) {
		struct req *n = p->rin_head->next;
		free(p->rin_head);
		p->rin_head = n;
	}
	p->rin_tail = NULL;
	raft_free(p->raft);
	p->raft = NULL;
	rlog_free_from(p, 0);
	free(p->rlog ? p->rlog - p->rlog_head : NULL);
	p->rlog = NULL;
	p->rlog_cap = p->rlog_head = 0;
	PARLEY_ASSERT(!p->rchunk || !p->rchunk->live);
	free(p->rchunk);
	p->rchunk = NULL;
}

/* ---- recovery: WAL records -> rlog ------------------------------------------ */

/*
 * A lost range (wal.h, wal_recovery.lost): a damaged record header, whose
 * partition, term, index and length are unknown, so this partition may
 * have had records there. What follows it can be trusted only once a
 * record proves that the log goes on where the recovered one stands
 * (lost_admit); until then the partition is `after_lost`.
 */
void part_raft_recover_lost(struct part *p, const char *file, uint64_t off,
			    uint64_t end)
{
	p->lost_seen = true;
	p->after_lost = true;
	PLOG_W("engine", "damaged WAL record header: the partition may have "
	       "lost records there", "partition=%u file=%s offset=%" PRIu64
	       " end=%" PRIu64 " last_index=%" PRIu64, p->id, file, off, end,
	       rlog_last(p));
}

/* The term of the recovered log at `index` (rlog or the flushed index's),
 * 0 when unknown. */
static uint64_t rlog_term_at(const struct part *p, uint64_t index)
{
	if (index == p->flushed_index && !p->rlog_n)
		return p->snap_term;
	if (!p->rlog_n || index < p->rlog_first ||
	    index >= p->rlog_first + p->rlog_n)
		return 0;
	return p->rlog[index - p->rlog_first].term;
}

/*
 * After a lost range: may the record at (index, term) join the recovered
 * log? It was written after its predecessor in the log of that time, the
 * entry at index - 1. The lost range may have held records of this
 * partition: its own later entries (a gap) or a leader's that superseded
 * part of the recovered log (which then no longer holds the log of that
 * time). The record joins only when that cannot have happened:
 *   - index - 1 is at or below the flushed index: committed, in history,
 *     never superseded;
 *   - the recovered entry at min(index - 1, last) has the record's term:
 *     entries of one term come from that term's one leader, which made
 *     one entry per index, so the recovered entry is the one the record
 *     followed (log matching: the whole prefix is that log's), and any
 *     index between the two (a gap) holds an entry of that same term
 *     (terms never decrease along a log): each becomes a damaged
 *     placeholder with that term, repaired from the leader like a
 *     damaged record body (part_raft_recover_damaged).
 * Otherwise the record is discarded (the partition's log ends where it
 * stands: lost_cut) and the next one is judged the same way. 0: joins
 * (the partition is no longer after_lost), 1: discarded, or -PARLEY_ENOMEM.
 */
static int lost_admit(struct part *p, uint64_t index, uint64_t term)
{
	uint64_t last = rlog_last(p);
	uint64_t prev = index - 1; /* index > flushed_index */
	if (prev > p->flushed_index) {
		uint64_t a = PARLEY_MIN(prev, last);
		uint64_t ta = rlog_term_at(p, a);
		if (!ta || ta != term) {
			if (!p->lost_cut)
				PLOG_W("engine", "record after a damaged WAL record "
				       "header does not join the log: the "
				       "partition's log ends at its last good "
				       "index, repaired from the leader",
				       "partition=%u index=%" PRIu64 " term=%"
				       PRIu64 " last_index=%" PRIu64 " last_term=%"
				       PRIu64, p->id, index, term, a, ta);
			p->lost_cut = true;
			return 1;
		}
		uint64_t zero = 0, n = 0;
		for (uint64_t i = last + 1; i < index; i++, n++)
			if (rlog_put_owned(p, term, i, RAFT_ENTRY_NORMAL, NULL, 0,
					   &zero))
				return -PARLEY_ENOMEM;
		if (n) {
			atomic_fetch_add_explicit(&p->pub_damaged_found, n,
						  memory_order_relaxed);
			PLOG_W("engine", "log indexes lost in a damaged WAL record "
			       "header: their entries will be repaired from the "
			       "leader", "partition=%u indexes=%" PRIu64 "..%"
			       PRIu64 " term=%" PRIu64, p->id, last + 1, index - 1,
			       term);
		}
	}
	p->after_lost = false;
	return 0;
}

/*
 * A log end marker (wal.h, WAL_REC_LOGEND): when it was written (an open
 * after a lost range) the partition's log ended at (index, term), and the
 * records after it extend that log. When the recovered log agrees there
 * (the index in history, or the same term at that index: log matching),
 * it is cut after that index (as a record there would supersede the
 * suffix) and what follows is read as usual. Otherwise (the damage read
 * differently this time) the records after it are judged after a lost
 * range (lost_admit).
 */
static int recover_logend(struct part *p, const struct wal_rec *rec)
{
	if (rec->term > p->hs_term)
		p->hs_term = rec->term;
	bool agree = rec->index <= p->flushed_index ||
		     (rec->index <= rlog_last(p) &&
		      rlog_term_at(p, rec->index) == rec->term);
	if (!agree) {
		PLOG_W("engine", "log end marker does not match the recovered "
		       "log: the records after it are judged as after a lost "
		       "range", "partition=%u index=%" PRIu64 " term=%" PRIu64
		       " last_index=%" PRIu64, p->id, rec->index, rec->term,
		       rlog_last(p));
		p->lost_seen = p->after_lost = true;
		return 0;
	}
	rlog_truncate(p, rec->index + 1);
	p->after_lost = false;
	return 0;
}

int part_raft_recover(struct part *p, const struct wal_rec *rec)
{
	if (rec->type == WAL_REC_LOGEND)
		return recover_logend(p, rec);
	if (rec->index <= p->flushed_index) {
		if (rec->index == p->flushed_index)
			p->snap_term = rec->term;
		p->hs_term = PARLEY_MAX(p->hs_term, rec->term);
		/* its command time still counts for the idempotency table
		 * (idem.c): the rebuild's clock may lag the flushed index's */
		struct cmd c;
		if (rec->type == CMD_APPEND &&
		    !cmd_decode(CMD_APPEND, rec->body, rec->len, &c))
			idem_advance(p, c.ts);
		return 0; /* already in history segments */
	}
	if (p->after_lost &&
	    !rlog_same_at(p, rec->index, rec->term)) {
		if (rec->term > p->hs_term)
			p->hs_term = rec->term; /* never vote below it */
		int arc = lost_admit(p, rec->index, rec->term);
		if (arc)
			return arc < 0 ? arc : 0;
	}
	if (p->rlog_n == 0 && rec->index != p->flushed_index + 1)
		return -PARLEY_ECORRUPT; /* the log does not join the history */
	uint8_t type;
	bool framed = rec->type == CMD_APPEND || rec->type == CMD_DELETE;
	if (framed)
		type = RAFT_ENTRY_NORMAL;
	else if (rec->type == CMD_NOOP)
		type = RAFT_ENTRY_NOOP;
	else if (rec->type == CMD_CONF)
		type = RAFT_ENTRY_CONF;
	else
		return -PARLEY_ECORRUPT;
	/* one copy: the entry's payload (u8 kind | body for a command) */
	uint32_t len = rec->len + (framed ? 1u : 0u);
	uint8_t *d = rlog_alloc(p, len);
	if (!d)
		return -PARLEY_ENOMEM;
	if (framed)
		d[0] = (uint8_t)rec->type;
	if (rec->len)
		memcpy(d + (framed ? 1 : 0), rec->body, rec->len);
	if (rlog_same_at(p, rec->index, rec->term)) {
		/* the same entry again: the repair of a damaged record
		 * (persist_repairs), later in the log. It fills the
		 * placeholder (or replaces the entry with itself, when the
		 * damaged bytes were restored meanwhile); the entries after
		 * it stay, nothing is truncated. A placeholder filled so
		 * counts as repaired (it was counted found) */
		if (rlog_damaged_at(p, rec->index, rec->term))
			atomic_fetch_add_explicit(&p->pub_damaged_repaired, 1,
						  memory_order_relaxed);
		rlog_repair(p, rec->index, type, d, len, NULL);
		return 0;
	}
	int rc = rlog_put_owned(p, rec->term, rec->index, type, d, len, NULL);
	if (!rc && rec->term > p->hs_term)
		p->hs_term = rec->term; /* a log written before HARDSTATE */
	return rc;
}

/*
 * A WAL record whose header is intact but whose body is damaged (wal.h,
 * wal_recovery.damaged). Below the flushed index the entry is in history
 * already: nothing is lost. Above it, in a replicated partition, the entry
 * joins rlog as a placeholder (data NULL): st_entry reports it damaged
 * (-PARLEY_ECORRUPT with its term and index, which the record header
 * vouches for), so the group never applies or sends it, asks the leader
 * for it (raft.h, "damaged entry") and overwrites it in place when it
 * comes (persist_repairs). A partition of a single node has nobody to ask:
 * 1 (reported corrupt, as before). Returns 0 (taken) or 1.
 */
int part_raft_recover_damaged(struct part *p, const struct wal_rec *rec,
			      bool replicated)
{
	if (rec->index <= p->flushed_index) {
		if (rec->index == p->flushed_index)
			p->snap_term = rec->term;
		p->hs_term = PARLEY_MAX(p->hs_term, rec->term);
		PLOG_W("engine", "damaged WAL record already in history",
		       "partition=%u file=%s offset=%" PRIu64 " index=%" PRIu64,
		       p->id, rec->file, rec->off, rec->index);
		return 0;
	}
	if (!replicated)
		return 1;
	/* the same entry again (its term and index: log matching), e.g. the
	 * repair record of an entry found damaged before (persist_repairs),
	 * read in a segment whose header failed since: rlog keeps what it
	 * holds there (whole, or a placeholder counted already) and the
	 * entries after it. rlog_put_owned would truncate them, and the next
	 * record of the partition would not join: CORRUPT (seen in
	 * cluster_test_cluster_netns_long, a segment header damaged after a
	 * repair) */
	if (rlog_same_at(p, rec->index, rec->term))
		return 0;
	uint8_t type;
	if (rec->type == CMD_APPEND || rec->type == CMD_DELETE)
		type = RAFT_ENTRY_NORMAL;
	else if (rec->type == CMD_NOOP)
		type = RAFT_ENTRY_NOOP;
	else if (rec->type == CMD_CONF)
		type = RAFT_ENTRY_CONF;
	else
		return 1;
	if (p->after_lost &&
	    !rlog_same_at(p, rec->index, rec->term)) {
		if (rec->term > p->hs_term)
			p->hs_term = rec->term;
		int arc = lost_admit(p, rec->index, rec->term);
		if (arc)
			return arc < 0 ? 1 : 0; /* discarded: taken */
	}
	if (p->rlog_n == 0 && rec->index != p->flushed_index + 1)
		return 1; /* the log does not join the history */
	uint64_t zero = 0;
	if (rlog_put_owned(p, rec->term, rec->index, type, NULL, 0, &zero))
		return 1;
	if (rec->term > p->hs_term)
		p->hs_term = rec->term;
	atomic_fetch_add_explicit(&p->pub_damaged_found, 1, memory_order_relaxed);
	PLOG_W("engine", "damaged WAL record: its entry will be repaired "
	       "from the leader", "partition=%u file=%s offset=%" PRIu64
	       " index=%" PRIu64 " term=%" PRIu64, p->id, rec->file, rec->off,
	       rec->index, rec->term);
	return 0;
}

/* ---- HARDSTATE: term and vote of the shard's partitions ---------------------- */

/* u64 magic | u32 count | count x (u32 partition | u64 term | u64 vote) |
 * u64 xxh3 of everything before. */
int part_raft_hs_load(struct pe_engine *e, struct shard *sh)
{
	char path[700];
	snprintf(path, sizeof path, "%s/wal/%u/HARDSTATE", e->dir, sh->idx);
	struct pio_file *f;
	int rc = e->io->ops->open(e->io, path, 0, &f);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	int64_t size = e->io->ops->size(e->io, f);
	uint8_t *b = size > 0 && size < (1 << 24) ? malloc((size_t)size) : NULL;
	int64_t n = b ? e->io->ops->pread(e->io, f, b, (size_t)size, 0) : -1;
	e->io->ops->close(e->io, f);
	rc = -PARLEY_ECORRUPT;
	if (n == size && size >= 20 && le_get64(b) == HS_MAGIC &&
	    le_get64(b + size - 8) == parley_xxh3(b, (size_t)size - 8, HS_SEED)) {
		uint32_t cnt = le_get32(b + 8);
		if ((uint64_t)size == 20u + (uint64_t)cnt * 20u) {
			rc = 0;
			for (uint32_t i = 0; i < cnt; i++) {
				const uint8_t *q = b + 12 + (size_t)i * 20;
				uint32_t part = le_get32(q);
				if (part >= e->nparts)
					continue;
				e->parts[part].hs_term = PARLEY_MAX(
					e->parts[part].hs_term, le_get64(q + 4));
				e->parts[part].hs_vote = le_get64(q + 12);
			}
		}
	}
	if (rc)
		PLOG_E("engine", "HARDSTATE unreadable", "file=%s", path);
	free(b);
	return rc;
}

/* Every partition's (term, vote) of the shard, encoded. */
static int hs_encode(struct pe_engine *e, struct shard *sh, uint8_t **out,
		     size_t *len)
{
	uint32_t cnt = 0;
	for (uint32_t p = sh->idx; p < e->nparts; p += e->nshards)
		cnt++;
	size_t size = 20u + (size_t)cnt * 20u;
	uint8_t *b = malloc(size);
	if (!b)
		return -PARLEY_ENOMEM;
	le_put64(b, HS_MAGIC);
	le_put32(b + 8, cnt);
	uint8_t *q = b + 12;
	for (uint32_t p = sh->idx; p < e->nparts; p += e->nshards, q += 20) {
		le_put32(q, p);
		le_put64(q + 4, e->parts[p].hs_term);
		le_put64(q + 12, e->parts[p].hs_vote);
	}
	le_put64(q, parley_xxh3(b, size - 8, HS_SEED));
	*out = b;
	*len = size;
	return 0;
}

static int hs_write(struct pe_engine *e, uint32_t shard, const uint8_t *b,
		    size_t size)
{
	char dir[600], tmp[700], fin[700];
	snprintf(dir, sizeof dir, "%s/wal/%u", e->dir, shard);
	snprintf(tmp, sizeof tmp, "%s/HARDSTATE.tmp", dir);
	snprintf(fin, sizeof fin, "%s/HARDSTATE", dir);
	return pio_file_replace(e->io, dir, tmp, fin, b, size);
}

/* Stores every partition's (term, vote) of the shard, blocking (a few
 * small writes and fsyncs): at open only (part_raft_elect). */
static int hs_store(struct pe_engine *e, struct shard *sh)
{
	uint8_t *b;
	size_t size;
	int rc = hs_encode(e, sh, &b, &size);
	if (rc)
		return rc;
	rc = hs_write(e, sh->idx, b, size);
	free(b);
	return rc;
}

/*
 * Live stores run on the read pool (history/hist_read.c, queued ahead of
 * reads), never on the shard thread. A group whose ready changed its term
 * or vote waits for generation p->hs_wait: its ready stays out (no raft_*
 * call, its messages held) until REQ_HS_DONE says a store at least that
 * new is durable — persist before send (raft.h). One store is in flight
 * per shard; changes made meanwhile go into the next one, encoded when it
 * starts (so it carries every group's latest term and vote).
 */
struct hs_job {
	struct rpool_job job;   /* first */
	struct pe_engine *e;
	uint32_t shard;
	uint8_t *buf;
	size_t len;
	struct req *done;       /* REQ_HS_DONE, preallocated */
};

static void hs_job_run(struct rpool_job *j)
{
	struct hs_job *h = (struct hs_job *)j;
	int rc = hs_write(h->e, h->shard, h->buf, h->len);
	h->done->from = (uint64_t)-rc;
	PARLEY_ASSERT(shard_push(h->e, h->done) == 0); /* always gets through */
	free(h->buf);
	free(h);
}

static void hs_job_drop(struct rpool_job *j)
{
	struct hs_job *h = (struct hs_job *)j;
	free(h->done);
	free(h->buf);
	free(h);
}

/* Starts the next store if one is wanted and none is in flight. */
static int hs_kick(struct shard *sh)
{
	if (sh->hs_flight || sh->hs_done >= sh->hs_want)
		return 0;
	struct hs_job *h = calloc(1, sizeof *h);
	struct req *r = calloc(1, sizeof *r);
	int rc = h && r ? hs_encode(sh->e, sh, &h->buf, &h->len)
			: -PARLEY_ENOMEM;
	if (rc) {
		free(h);
		free(r);
		return rc;
	}
	r->kind = REQ_HS_DONE;
	r->part = sh->idx; /* shard_of(part) is this shard */
	r->index = sh->hs_want;
	h->e = sh->e;
	h->shard = sh->idx;
	h->done = r;
	h->job.run = hs_job_run;
	h->job.drop = hs_job_drop;
	sh->hs_flight = true;
	rpool_push(&sh->e->rpool, &h->job, true);
	return 0;
}

static void ready_finish(struct part *p);

int part_raft_hs_done(struct shard *sh, struct req *r)
{
	uint64_t gen = r->index;
	int rc = -(int)r->from;
	free(r);
	sh->hs_flight = false;
	if (rc) {
		PLOG_E("engine", "HARDSTATE store failed", "shard=%u err=%s",
		       sh->idx, parley_errname(rc));
		return rc; /* the shard fails (a failed log) */
	}
	sh->hs_done = PARLEY_MAX(sh->hs_done, gen);
	struct pe_engine *e = sh->e;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		if (!p->hs_wait || p->hs_wait > sh->hs_done)
			continue;
		p->hs_wait = 0;
		if (p->ready_out && !p->wal_wait) {
			ready_finish(p);
			shard_mark_dirty(sh, p);
		}
	}
	return hs_kick(sh);
}

/* ---- the group's storage (raft.h struct raft_storage) ------------------------ */

static int st_load(void *ctx, struct raft_hardstate *hs,
		   struct raft_snapshot_meta *snap, uint64_t *last_index,
		   struct raft_snapshot_meta *partial, uint64_t *partial_bytes)
{
	struct part *p = ctx;
	*hs = (struct raft_hardstate){.term = p->hs_term, .vote = p->hs_vote};
	memset(snap, 0, sizeof *snap);
	snap->index = p->flushed_index;
	snap->term = p->snap_term;
	/* the stored configuration, else the founders (part_conf.c) */
	snap->conf = *part_conf_boot(p);
	/* several voters: a placeholder (nonzero size) for the compaction
	 * point; a leader that needs to send it asks snapshot_read, which
	 * makes a real image first (log/part_snap.c) */
	snap->size = p->cl->conf.n > 1 ? 1 : 0;
	p->rsnap_index = p->flushed_index;
	*last_index = rlog_last(p);
	part_snap_partial(p, partial, partial_bytes);
	return 0;
}

static int st_entry(void *ctx, uint64_t index, struct raft_entry *out)
{
	struct part *p = ctx;
	if (!p->rlog_n || index < p->rlog_first ||
	    index >= p->rlog_first + p->rlog_n)
		return -PARLEY_ENOTFOUND;
	*out = p->rlog[index - p->rlog_first];
	if (!out->data) /* damaged on disk: term and index known, payload not */
		return -PARLEY_ECORRUPT;
	return 0;
}

/* The core's copies of entries are rlog payloads (see rlog's payload
 * memory above); the core aborts on NULL, as on its own malloc's. */
static void *st_data_alloc(void *ctx, uint32_t len)
{
	return rlog_alloc(ctx, len);
}

static void st_data_free(void *ctx, void *data)
{
	rlog_release(ctx, data);
}

static int st_snapshot_read(void *ctx, uint64_t offset, void *buf,
			    uint32_t len)
{
	/* a follower is behind the log this leader keeps: the partition's
	 * snapshot image (log/part_snap.c) */
	return part_snap_read(ctx, offset, buf, len);
}

int part_raft_open(struct pe_engine *e, struct part *p)
{
	p->cl = &e->cl;
	e->cl.lead0 = &e->parts[0].pub_leader;
	int lrc = part_conf_load(e, p);
	if (lrc)
		return lrc;
	struct raft_config c = {0};
	c.id = e->cl.node_id;
	c.group = p->id;
	if (e->cl.conf.n > 1) {
		c.election_ticks = e->cl.election_ticks;
		c.heartbeat_ticks = e->cl.heartbeat_ticks;
		c.quiesce_ticks = e->cl.quiesce_ticks; /* item 9 */
	} else {
		c.election_ticks = RAFT_ELECTION_TICKS;
		c.heartbeat_ticks = 1;
	}
	/* the core mixes its node id into the seed, so the voters of one
	 * group draw different election timeouts */
	c.rng_seed = p->id;
	c.max_inflight = 4;
	c.max_batch_entries = RAFT_MAX_MSG_ENTRIES;
	c.max_batch_bytes = 1u << 20;
	c.max_uncommitted = 1u << 20; /* the memtable bound limits appends */
	c.chunk_bytes = RAFT_MAX_CHUNK_BYTES;
	c.pre_vote = true;
	c.check_quorum = true;
	/* raft_new takes the bootstrap when the snapshot index is 0 */
	c.bootstrap = *part_conf_boot(p);
	c.conf_index = p->conf_have ? p->conf_index : 0;
	/* stable_data: rlog frees an entry at or below the commit index only
	 * when the group is compacted, after its advance (part_raft_compact;
	 * a truncation drops only uncommitted entries, and a ready that
	 * installs a snapshot applies nothing): applying reads it in place.
	 * verified_data: every payload rlog holds matches its checksum: it
	 * came from a ready (the core hashed a proposal from its bytes or
	 * verified an entry it received), from a repair the core verified,
	 * or from a WAL record whose own checksum recovery checked (the entry
	 * checksum is then computed from those bytes); what recovery could
	 * not read is a placeholder that st_entry reports -PARLEY_ECORRUPT.
	 * So the core does not hash each entry again when it applies or sends
	 * it (2-4 % of a shard thread's samples at 200 connections) */
	c.storage = (struct raft_storage){.ctx = p, .load = st_load,
					  .entry = st_entry,
					  .snapshot_read = st_snapshot_read,
					  .stable_data = true,
					  .verified_data = true,
					  .data_alloc = st_data_alloc,
					  .data_free = st_data_free};
	int rc = raft_new(&c, &p->raft);
	/* A lost range (part_raft_recover_lost) in the shard's WAL: its
	 * records may have been this partition's, and its log may then end
	 * before entries it acknowledged, even when a later record joined
	 * (a repair record rewrites an entry in place and says nothing of
	 * where the log ended). It neither votes nor campaigns until it holds
	 * its leader's whole log again (raft_set_lost); the shard's WAL keeps
	 * the lost range meanwhile, so a restart finds the loss again. */
	if (!rc && p->lost_seen && e->cl.conf.n > 1) {
		/* counted as one damaged record found, repaired once it
		 * holds its leader's whole log (lost_check) */
		p->lost = true;
		e->shards[p->id % e->nshards].lost_parts++;
		atomic_fetch_add_explicit(&p->pub_damaged_found, 1,
					  memory_order_relaxed);
		PLOG_W("engine", "partition may have lost acknowledged entries "
		       "in a damaged WAL record header: it neither votes nor "
		       "campaigns until it holds its leader's whole log",
		       "partition=%u last_index=%" PRIu64 " cut=%s tail_unknown=%s",
		       p->id, rlog_last(p), p->lost_cut ? "yes" : "no",
		       p->after_lost ? "yes" : "no");
		raft_set_lost(p->raft);
		/* where its log ends now: the next recovery that meets the
		 * lost range again goes on from here (recover_logend) */
		uint64_t last = rlog_last(p);
		struct wal *w = e->shards[p->id % e->nshards].wal;
		if (wal_reserve(w, 0))
			wal_commit_rec(w, p->id, WAL_REC_LOGEND,
				       rlog_term_at(p, last), last);
	}
	p->lost_seen = p->after_lost = p->lost_cut = false;
	if (!rc) /* what it recovered shows before the group first runs */
		part_raft_publish(p);
	return rc;
}

/* A partition that may have lost entries (part_raft_open) holds its
 * leader's whole log again: repaired. The last one of the shard lets the
 * WAL release its lost ranges. */
static void lost_check(struct shard *sh, struct part *p)
{
	if (!p->lost || !p->raft || raft_lost(p->raft))
		return;
	p->lost = false;
	atomic_fetch_add_explicit(&p->pub_damaged_repaired, 1,
				  memory_order_relaxed);
	PLOG_I("engine", "partition repaired from the leader after a damaged "
	       "WAL record header: it votes again", "partition=%u "
	       "last_index=%" PRIu64, p->id, raft_last_index(p->raft));
	PARLEY_ASSERT(sh->lost_parts > 0);
	if (--sh->lost_parts == 0)
		wal_release_damaged(sh->wal);
}

/* ---- applying committed entries ---------------------------------------------- */

static uint16_t entry_kind(const struct raft_entry *e, const uint8_t **body,
			   uint32_t *len)
{
	*body = NULL;
	*len = 0;
	if (e->type == RAFT_ENTRY_NOOP)
		return CMD_NOOP;
	if (e->type == RAFT_ENTRY_CONF)
		return CMD_CONF;
	if (e->len < 1)
		return 0; /* refused by part_apply as unknown */
	*body = e->data + 1;
	*len = e->len - 1;
	return e->data[0];
}

/* The streams whose tails may move after a ready's committed entries,
 * notified once those entries are all applied (notify_flush) rather than
 * once per entry: a run of K entries to one inbox reaches its tail as
 * one callback of K entries (for the server: one hand-over to the
 * connection's loop, one write) instead of K. Nothing is delayed beyond
 * the applying of the ready's other entries (microseconds); tails see the
 * same entries in the same order. At NOTIFY_MAX distinct streams the set
 * is notified early. Streams are freed only with their partition's state,
 * never while a ready applies. */
#define NOTIFY_MAX 16u

struct notify_set {
	struct stream *s[NOTIFY_MAX];
	uint32_t n;
};

static void notify_flush(struct shard *sh, struct notify_set *ns)
{
	for (uint32_t i = 0; i < ns->n; i++)
		sub_notify(sh, ns->s[i]);
	ns->n = 0;
}

static void notify_add(struct shard *sh, struct notify_set *ns,
		       struct stream *s)
{
	for (uint32_t i = 0; i < ns->n; i++)
		if (ns->s[i] == s)
			return;
	if (ns->n == NOTIFY_MAX)
		notify_flush(sh, ns);
	ns->s[ns->n++] = s;
}

/* Applies one committed (durable) entry and answers its waiter; a live
 * entry's stream joins ns (its tails are notified by the caller).
 * now (live only): the monotonic time this entry's apply starts at, 0 =
 * read it here; set to the time its callback ended. The entries of one
 * ready are applied back to back, so one clock read ends one entry's
 * callback stage and starts the next entry's apply stage (two reads per
 * entry, not four; the apply stage then also holds the next entry's
 * waiter lookup, nanoseconds). */
static void apply_entry(struct shard *sh, struct part *p,
			const struct raft_entry *e, bool live,
			struct notify_set *ns, uint64_t *now,
			const struct part_apply_hint *h)
{
	const uint8_t *body;
	uint32_t len;
	uint16_t kind = entry_kind(e, &body, &len);
	struct req *lost = NULL;
	struct req *r = live ? part_wait_take(p, e->index, e->term, &lost) : NULL;
	shard_fail_chain(sh, lost, -PARLEY_ENOTLEADER);
	struct part_apply_res res = {.kind = kind};
	int rc;
	if (p->corrupt) {
		rc = -PARLEY_ECORRUPT;
		if (live)
			*now = 0; /* no apply stage: the callback reads its start */
	} else {
		uint64_t t0 = live ? (*now ? *now : parley_mono_ns()) : 0;
		rc = part_apply_hinted(p, e->index, e->term, kind, body, len,
				       h, &res);
		if (live) {
			*now = parley_mono_ns();
			stage_hist_add(&sh->hist[PE_STAGE_APPLY], *now - t0);
		}
		if (rc) {
			char f[64];
			snprintf(f, sizeof f, "wal/%u (log index %" PRIu64 ")",
				 sh->idx, e->index);
			part_mark_corrupt(p, f, 0, res.why);
		}
	}
	if (kind == CMD_CONF)
		part_conf_applied(sh, p, e, live);
	if (r) {
		PARLEY_ASSERT((r->kind == REQ_DELETE) == (kind == CMD_DELETE));
		/* r is live (only live entries take a waiter) */
		*now = shard_answer(sh, p, r, rc, &res, *now);
	}
	if (res.touched && live)
		notify_add(sh, ns, res.touched);
}

/* Applies n committed entries in order, looking ahead (part_apply.c,
 * "looking ahead"): while command k applies, the next ones' first loads
 * are in flight. */
static void committed_get(void *arg, uint32_t i, uint16_t *kind,
			  const uint8_t **body, size_t *len)
{
	const struct raft_entry *ce = arg;
	uint32_t l;
	*kind = entry_kind(&ce[i], body, &l);
	*len = l;
}

static void apply_committed(struct shard *sh, struct part *p,
			    const struct raft_entry *ce, uint32_t n, bool live,
			    struct notify_set *ns, uint64_t *now)
{
	struct part_ahead a;
	part_ahead_init(&a, p, n, committed_get, (void *)ce);
	for (uint32_t k = 0; k < n; k++)
		apply_entry(sh, p, &ce[k], live, ns, now,
			    part_ahead_next(&a, p, k));
}

/* ---- one ready ------------------------------------------------------------------ */

/* Fails a proposal (queued or waiting) with err and the leader hint. */
static void fail_hint(struct part *p, struct req *r, int err)
{
	uint64_t leader = p->raft ? raft_leader(p->raft) : 0;
	p->pending_bytes -= r->mem_estimate;
	if (r->kind == REQ_DELETE) {
		struct pe_delete_result d = {.err = err, .leader = leader};
		r->cb.del(r->arg, &d);
	} else {
		struct pe_append_result a = {.err = err, .leader = leader};
		r->cb.append(r->arg, &a);
	}
	api_req_free(r);
}

static void fail_chain_hint(struct part *p, struct req *r, int err)
{
	while (r) {
		struct req *n = r->next;
		fail_hint(p, r, err);
		r = n;
	}
}

/* Reads on a leader that has not yet applied the entries committed before
 * its term (through its own no-op) would miss them: -PARLEY_EAGAIN
 * (retryable) until it has. Other nodes read what they applied
 * (parley_engine.h, Replication, contract 7). */
int part_raft_read_check(struct part *p)
{
	if (!p->raft || p->cl->conf.n < 2 || raft_role(p->raft) != RAFT_LEADER)
		return 0;
	return raft_applied(p->raft) >= p->term_start ? 0 : -PARLEY_EAGAIN;
}

/* The shard stops (pe_close): proposals still waiting for a quorum that
 * will not answer any more fail with -PARLEY_ECLOSED, so every callback
 * runs once. A group of one has none left by then (its batch is done). */
void part_raft_close(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		fail_chain_hint(p, part_wait_take_after(p, 0), -PARLEY_ECLOSED);
		fail_chain_hint(p, p->prop_head, -PARLEY_ECLOSED);
		p->prop_head = p->prop_tail = NULL;
		part_repl_reads_close(p);
		part_conf_fail(p, 0, -PARLEY_ECLOSED);
	}
}

_Static_assert(PE_RAFT_MAX_MEMBERS == RAFT_MAX_MEMBERS,
	       "pe_raft_status.members holds every member of a group");

/* The leader's view of its members (match index, recently active), for
 * the lag behind the leader (pe_raft_status.members); none elsewhere. */
static void part_raft_publish_members(struct part *p)
{
	struct raft_member_progress m[RAFT_MAX_MEMBERS];
	uint32_t n = raft_progress_get(p->raft, m, RAFT_MAX_MEMBERS);
	for (uint32_t i = 0; i < n; i++) {
		atomic_store_explicit(&p->pub_mem_id[i], m[i].id,
				      memory_order_relaxed);
		atomic_store_explicit(&p->pub_mem_match[i], m[i].match,
				      memory_order_relaxed);
		atomic_store_explicit(&p->pub_mem_flags[i],
				      (m[i].active ? PE_MEMBER_ACTIVE : 0u) |
					      (m[i].voter ? PE_MEMBER_VOTER : 0u) |
					      (m[i].snapshot ? PE_MEMBER_SNAPSHOT : 0u),
				      memory_order_relaxed);
	}
	atomic_store_explicit(&p->pub_n_mem, n, memory_order_relaxed);
}

/* Publishes the group's state for pe_raft_status (any thread). */
void part_raft_publish(struct part *p)
{
	if (!p->raft)
		return;
	uint64_t role = (uint64_t)raft_role(p->raft);
	uint64_t term = raft_term(p->raft);
	bool moved = atomic_load_explicit(&p->pub_role, memory_order_relaxed) != role ||
		     atomic_load_explicit(&p->pub_term, memory_order_relaxed) != term;
	atomic_store_explicit(&p->pub_role, role, memory_order_relaxed);
	atomic_store_explicit(&p->pub_term, term, memory_order_relaxed);
	if (moved) { /* after the stores: a reader that sees the new gen sees them */
		struct pe_engine *e = (struct pe_engine *)(void *)
			((char *)(uintptr_t)p->cl - offsetof(struct pe_engine, cl));
		atomic_fetch_add_explicit(&e->status_gen, 1, memory_order_release);
	}
	atomic_store_explicit(&p->pub_leader, raft_leader(p->raft), memory_order_relaxed);
	atomic_store_explicit(&p->pub_commit, raft_commit(p->raft), memory_order_relaxed);
	atomic_store_explicit(&p->pub_applied, raft_applied(p->raft), memory_order_relaxed);
	atomic_store_explicit(&p->pub_last, raft_last_index(p->raft), memory_order_relaxed);
	atomic_store_explicit(&p->pub_writable,
			      raft_role(p->raft) == RAFT_LEADER &&
			      part_raft_read_check(p) == 0,
			      memory_order_relaxed);
	atomic_store_explicit(&p->pub_elections, raft_elections(p->raft),
			      memory_order_relaxed);
	atomic_store_explicit(&p->pub_quiesced, raft_quiesced(p->raft),
			      memory_order_relaxed);
	part_raft_publish_members(p);
	part_conf_publish(p);
}

/* After the group moved: a lost leadership fails exactly the waiters
 * above the commit index (those at or below it apply); publish. */
static void after_step(struct part *p)
{
	bool lead = raft_role(p->raft) == RAFT_LEADER;
	if (p->was_leader && !lead) {
		struct req *lost = part_wait_take_after(p, raft_commit(p->raft));
		uint64_t n = 0;
		for (struct req *r = lost; r; r = r->next)
			n++;
		if (n)
			PLOG_W("engine", "leadership lost; uncommitted appends "
			       "fail with NOTLEADER", "partition=%u term=%" PRIu64
			       " failed=%" PRIu64 " leader=%" PRIu64, p->id,
			       raft_term(p->raft), n, raft_leader(p->raft));
		fail_chain_hint(p, lost, -PARLEY_ENOTLEADER);
		part_conf_fail(p, raft_commit(p->raft), -PARLEY_ENOTLEADER);
	}
	if (!lead && p->snap_out)
		part_snap_release(p, "leadership lost");
	if (!lead)
		p->snap_want = false;
	if (lead && !p->was_leader) {
		p->snap_logged = false;
		p->term_start = raft_last_index(p->raft); /* its no-op */
	}
	p->was_leader = lead;
	part_raft_publish(p);
}

static void send_msgs(struct part *p, const struct raft_msg *m, uint32_t n)
{
	if (!n)
		return;
	PARLEY_ASSERT(p->cl->conf.n > 1 && p->cl->send);
	part_snap_sent(p, m, n);
	p->cl->send(p->cl->send_arg, m, n);
	if (p->cl->flush) {
		/* the shard's round flushes (shard_flush_sends) */
		struct pe_engine *e = (struct pe_engine *)(void *)
			((char *)(uintptr_t)p->cl - offsetof(struct pe_engine, cl));
		e->shards[p->id % e->nshards].sent = true;
	}
}

/* Gives the group its pending ticks and inbound messages; an APPEND only
 * when its entries fit the open WAL batch (else it waits on rin for the
 * next), and none (nor a SNAPSHOT) without `entries_ok`. Returns the WAL
 * bytes the stepped entries may take. */
static uint64_t repl_inputs(struct shard *sh, struct part *p, bool entries_ok)
{
	if (p->pend_wake) { /* node liveness changed (part_repl.c) */
		if (raft_role(p->raft) == RAFT_LEADER)
			raft_unquiesce(p->raft);
		p->pend_wake = false;
	}
	/* pe_raft_node_down: a follower of one of them campaigns soon */
	for (uint32_t k = 0; k < p->npend_down; k++)
		raft_leader_down(p->raft, p->pend_down[k]);
	p->npend_down = 0;
	if (p->pend_xfer) { /* pe_raft_transfer: only to a current voter */
		uint64_t to = p->pend_xfer;
		p->pend_xfer = 0;
		if (raft_role(p->raft) == RAFT_LEADER && to != p->cl->node_id &&
		    raft_conf_find(raft_conf(p->raft), to) >= 0 &&
		    raft_peer_current(p->raft, to)) {
			p->follow_wait = 2 * p->cl->election_ticks;
			(void)raft_transfer(p->raft, to);
		}
	}
	while (p->pend_ticks) {
		raft_tick(p->raft);
		part_snap_tick(p);
		p->pend_ticks--;
		if (p->follow_wait)
			p->follow_wait--;
	}
	/* leader placement: hand the group to partition 0's leader (at most
	 * one attempt per election timeout), once that node follows this
	 * group's term: after a node dies, partition 0's leader as this node
	 * last knew it may be the dead node until partition 0 elects, and a
	 * transfer to it would stall proposals (EAGAIN) for an election
	 * timeout and then hold off the handoff to the real new leader */
	if (p->cl->follow0 && p->id != 0 && !p->follow_wait &&
	    raft_role(p->raft) == RAFT_LEADER) {
		uint64_t to = atomic_load_explicit(p->cl->lead0,
						   memory_order_relaxed);
		if (to && to != p->cl->node_id &&
		    raft_conf_find(raft_conf(p->raft), to) >= 0 &&
		    raft_peer_current(p->raft, to)) {
			p->follow_wait = 2 * p->cl->election_ticks;
			(void)raft_transfer(p->raft, to);
		}
	}
	uint64_t room = wal_open_room(sh->wal), used = 0;
	bool from_down = false; /* a message from a node whose link is down */
	while (p->rin_head) {
		struct req *r = p->rin_head;
		const struct raft_msg *m = part_repl_msg(r);
		if (!entries_ok && ((m->type == RAFT_MSG_APPEND && m->n_entries) ||
				    m->type == RAFT_MSG_SNAPSHOT))
			break; /* taken with the next batch's readies */
		if (m->type == RAFT_MSG_APPEND && m->n_entries) {
			uint64_t need = PROP_MARGIN * WAL_REC_SPACE(0);
			for (uint32_t k = 0; k < m->n_entries; k++)
				need += WAL_REC_SPACE(m->entries[k].len);
			if (used + need > room && wal_has_open(sh->wal))
				break; /* the next batch takes it */
			used += need;
		}
		if (!part_snap_step_ok(p, m))
			break; /* after the partition's history job */
		p->rin_head = r->next;
		if (!p->rin_head)
			p->rin_tail = NULL;
		if (!part_conf_msg_ok(p, m)) { /* contract item 3 */
			atomic_fetch_add_explicit(&p->pub_dropped, 1,
						  memory_order_relaxed);
			free(r);
			continue;
		}
		part_snap_inbound(p, m);
		from_down |= p->ndown && part_repl_down(p, m->from);
		int rc = raft_step(p->raft, m);
		if (rc)
			atomic_fetch_add_explicit(&p->pub_dropped, 1,
						  memory_order_relaxed);
		free(r);
	}
	/* a message a node sent before its link went down can be stepped
	 * after the link-down was (it was queued behind it: the peer layer
	 * reads the dead node's last frame, then reports the link down, and
	 * the link-down is given first, above; or it waited for WAL room).
	 * If it made the group follow that node again — a QUIESCE heartbeat
	 * puts a follower back to sleep behind it, and nothing would ever
	 * wake it — the core is told again: it campaigns soon */
	if (from_down) {
		uint64_t l = raft_leader(p->raft);
		if (l && raft_role(p->raft) != RAFT_LEADER &&
		    part_repl_down(p, l)) {
			PLOG_I("engine", "a message from a leader whose link is "
			       "down came after the link-down: campaigns",
			       "partition=%u leader=%" PRIu64 " quiesced=%d",
			       p->id, l, (int)raft_quiesced(p->raft));
			atomic_fetch_add_explicit(&p->pub_down_retold, 1,
						  memory_order_relaxed);
			raft_leader_down(p->raft, l);
		}
	}
	return used;
}

/* Persists a ready's entries into the open WAL batch (and rlog). */
static int persist_entries(struct shard *sh, struct part *p,
			   const struct raft_ready *rd)
{
	for (uint32_t k = 0; k < rd->n_entries; k++) {
		const struct raft_entry *e = &rd->entries[k];
		const uint8_t *body;
		uint32_t len;
		uint16_t kind = entry_kind(e, &body, &len);
		if (e->type == RAFT_ENTRY_CONF) {
			body = e->data;
			len = e->len;
		}
		uint8_t *dst = wal_reserve(sh->wal, len);
		PARLEY_ASSERT(dst); /* room was checked before proposing */
		if (len)
			memcpy(dst, body, len);
		wal_commit_rec(sh->wal, p->id, kind, e->term, e->index);
		/* the data is the core's copy, an rlog payload (st_data_alloc):
		 * rlog keeps a reference of its own; the core made or verified
		 * the checksum when it took the entry */
		rlog_retain(e->data);
		int rc = rlog_put_owned(p, e->term, e->index, e->type,
					(uint8_t *)e->data, e->len, &e->csum);
		if (rc)
			return rc;
	}
	return 0;
}

/* Persists a ready's repaired entries (raft.h: overwrite in place): a new
 * WAL record each, with the damaged one's (partition, term, index); the
 * placeholder in rlog is filled, nothing truncated. Recovery does the same
 * when it meets the new record after the damaged one (part_raft_recover). */
static int persist_repairs(struct shard *sh, struct part *p,
			   const struct raft_ready *rd)
{
	for (uint32_t k = 0; k < rd->n_repair; k++) {
		const struct raft_entry *e = &rd->repair[k];
		if (!rlog_damaged_at(p, e->index, e->term))
			continue; /* no longer held here (applied or dropped) */
		const uint8_t *body;
		uint32_t len;
		uint16_t kind = entry_kind(e, &body, &len);
		if (e->type == RAFT_ENTRY_CONF) {
			body = e->data;
			len = e->len;
		}
		uint8_t *dst = wal_reserve(sh->wal, len);
		if (!dst) {
			/* no room (the resend was sized for the open batch,
			 * so not expected): the entry stays damaged, which
			 * the group finds again on its next read and asks
			 * for once more */
			PLOG_W("engine", "no room to repair a damaged entry",
			       "partition=%u index=%" PRIu64, p->id, e->index);
			continue;
		}
		if (len)
			memcpy(dst, body, len);
		wal_commit_rec(sh->wal, p->id, kind, e->term, e->index);
		uint8_t *d = rlog_alloc(p, e->len);
		if (!d)
			return -PARLEY_ENOMEM;
		if (e->len)
			memcpy(d, e->data, e->len);
		rlog_repair(p, e->index, e->type, d, e->len, &e->csum);
		atomic_fetch_add_explicit(&p->pub_damaged_repaired, 1,
					  memory_order_relaxed);
		PLOG_I("engine", "damaged entry repaired from the leader",
		       "partition=%u index=%" PRIu64 " term=%" PRIu64, p->id,
		       e->index, e->term);
	}
	return 0;
}

/* Proposes what fits into the open batch. */
static void propose_queued(struct shard *sh, struct part *p, uint64_t used)
{
	struct pe_engine *e = sh->e;
	uint64_t room = wal_open_room(sh->wal);
	uint64_t margin = PROP_MARGIN * WAL_REC_SPACE(0);
	/* One reading for the entries proposed now: every one of them was
	 * queued before it, so each entry's time is still >= any clock
	 * reading its proposer made before pe_append (the chat service's
	 * registration relies on that, server/chat.c), and the engine's
	 * clock never goes back (entries stay in time order). */
	uint64_t ts = 0;
	while (p->prop_head) {
		struct req *r = p->prop_head;
		uint64_t need = WAL_REC_SPACE(r->len - 1);
		if (used + need + margin > room)
			break; /* the next batch takes it */
		p->prop_head = r->next;
		if (!p->prop_head)
			p->prop_tail = NULL;
		r->next = NULL;
		/* the proposer stamps the time: apply never reads a clock */
		if (r->kind == REQ_APPEND) {
			if (!ts)
				ts = engine_clock(e);
			cmd_stamp_ts(r->data + 1, r->len - 1, ts);
		}
		uint64_t index;
		int rc = raft_propose(p->raft, r->data, r->len, &index);
		if (rc) {
			fail_hint(p, r, rc);
			continue;
		}
		used += need;
		r->index = index;
		r->term = raft_term(p->raft);
		part_wait_push(p, r);
	}
}

/*
 * Runs the partition's group until it waits for a WAL batch (its ready's
 * entries are in the open batch: p->ready_out) or has nothing to do.
 * live: answer waiters and notify tails (false during open's recovery).
 * propose: make the queued proposals first (false right after a batch
 * became durable: only its entries are applied then, so that appends the
 * callbacks issue join the next batch together with the rest).
 * Returns 0, or a negative error when a term/vote could not be stored or
 * memory ran out (the shard treats it as a failed log).
 */
static int run_group(struct shard *sh, struct part *p, bool live,
		     bool propose, bool entries_ok);

int part_raft_run(struct shard *sh, struct part *p, bool live, bool propose)
{
	int rc = run_group(sh, p, live, propose, true);
	lost_check(sh, p);
	return rc;
}

/*
 * While the shard's WAL batch is in flight: steps the group's inbound
 * messages that carry no entries (a leader's APPEND_RESP, heartbeats and
 * their answers, votes) and its ticks, so that a follower's answer commits
 * (and the leader acknowledges) as soon as it arrives instead of after the
 * flight in progress. Proposals and inbound entries still wait for the
 * next batch (one ready per group per batch keeps group commit's
 * batching). Replicated groups only.
 */
/*
 * Quiescing (parley_engine.h item 9): a quiesced group whose tick would
 * change nothing — no ready out, no inputs or liveness news queued, no
 * read waiting on its deadline, no snapshot being sent, and no leader
 * handoff due (follow_partition0: a leader of another partition than 0
 * while another node leads partition 0 keeps running until it hands
 * over) — is not given ticks (part_repl_tick). Anything that reaches
 * it (a message, a proposal, a read, node liveness) marks it dirty as
 * before, and the core wakes on it.
 */
bool part_raft_idle(const struct part *p)
{
	if (!p->raft || !raft_quiesced(p->raft) || p->ready_out ||
	    p->rin_head || p->npend_down || p->pend_xfer || p->pend_wake || p->ri_head ||
	    p->prop_head || p->snap_out || p->snap_rd || p->conf_req)
		return false;
	if (p->cl->follow0 && p->id != 0 &&
	    raft_role(p->raft) == RAFT_LEADER) {
		uint64_t l0 = atomic_load_explicit(p->cl->lead0,
						   memory_order_relaxed);
		/* a handoff is due only to a member of this group (with a
		 * placement map partition 0's leader may hold no replica) */
		if (l0 && l0 != p->cl->node_id &&
		    raft_conf_find(raft_conf(p->raft), l0) >= 0)
			return false;
	}
	return true;
}

int part_raft_run_inputs(struct shard *sh, struct part *p)
{
	if (!p->raft || p->ready_out || p->cl->conf.n < 2 || !p->rin_head)
		return 0;
	const struct raft_msg *m = part_repl_msg(p->rin_head);
	if ((m->type == RAFT_MSG_APPEND && m->n_entries) ||
	    m->type == RAFT_MSG_SNAPSHOT)
		return 0;
	int rc = run_group(sh, p, true, false, false);
	lost_check(sh, p);
	return rc;
}

static int run_group(struct shard *sh, struct part *p, bool live,
		     bool propose, bool entries_ok)
{
	if (!p->raft || p->ready_out)
		return 0;
	/* a ready whose snapshot chunk a store job made durable meanwhile
	 * (log/part_snap.c) goes on from there: no raft_* call before it */
	struct raft_ready *held = p->snap_rd;
	p->snap_rd = NULL;
	uint64_t used = 0;
	if (live && p->cl->conf.n > 1 && !held) {
		used = repl_inputs(sh, p, entries_ok);
		part_repl_reads_issue(sh, p); /* ReadIndex (log/part_repl.c) */
	}
	for (;;) {
		struct raft_ready *rd;
		int src = 0;
		if (held) {
			rd = held;
			held = NULL;
			src = p->snap_rc;
		} else {
			if (live && propose && p->conf_req &&
			    used + WAL_REC_SPACE(RAFT_CONF_CHANGE_BYTES) +
			    PROP_MARGIN * WAL_REC_SPACE(0) <=
			    wal_open_room(sh->wal))
				used += part_conf_propose(p); /* item 12 */
			if (live && propose)
				propose_queued(sh, p, used);
			used = 0;
			rd = raft_ready(p->raft);
			if (rd->empty) {
				raft_advance(p->raft);
				after_step(p);
				return 0;
			}
			/* damaged entries (part_raft_recover_damaged) exist
			 * in groups of several voters only, and so do
			 * snapshots */
			PARLEY_ASSERT(!rd->n_repair || p->cl->conf.n > 1);
			PARLEY_ASSERT(!rd->has_chunk || p->cl->conf.n > 1);
			PARLEY_ASSERT(rd->n_msgs == 0 || p->cl->conf.n > 1);
			/* a snapshot chunk first (raft.h contract, step 2),
			 * before anything else of the ready is stored or
			 * truncated: a store job makes it durable off the
			 * shard thread while the ready stays out (only this
			 * group waits); its failure fails this batch only (the
			 * leader sends it again), and the next ready carries
			 * the same hard state */
			src = rd->has_chunk ? part_snap_persist(sh, p, rd) : 0;
			if (src == PART_SNAP_PENDING) {
				p->ready_out = true;
				p->snap_rd = rd;
				after_step(p);
				return 0;
			}
		}
		if (src < 0) {
			raft_persist_failed(p->raft);
			after_step(p);
			return 0;
		}
		if (src == 1) {
			/* installed: the log starts after it; with
			 * install_keeps_tail (a damaged prefix replaced,
			 * raft.h) the entries after the snapshot stay. A
			 * damaged entry replaced counts as repaired */
			uint64_t upto = rd->install_keeps_tail ? rd->install.index
							       : UINT64_MAX;
			for (uint64_t k = 0; k < p->rlog_n &&
			     p->rlog_first + k <= upto; k++)
				if (!p->rlog[k].data)
					atomic_fetch_add_explicit(
						&p->pub_damaged_repaired, 1,
						memory_order_relaxed);
			if (rd->install_keeps_tail)
				rlog_drop_through(p, rd->install.index);
			else
				rlog_free_from(p, 0);
			p->rsnap_index = rd->install.index;
		}
		int rc = 0;
		if (rd->truncate_from)
			rlog_truncate(p, rd->truncate_from);
		/* a new term or vote is durable before the group goes on: at
		 * open, one HARDSTATE store covers every group of the shard
		 * (part_raft_elect); while serving (never, for a group of one)
		 * it is stored at once */
		bool hs_new = rd->hs_changed && (rd->hs.term != p->hs_term ||
						 rd->hs.vote != p->hs_vote);
		if (hs_new) {
			p->hs_term = rd->hs.term;
			p->hs_vote = rd->hs.vote;
			if (live) {
				/* stored off the shard thread; the ready waits */
				p->hs_wait = ++sh->hs_want;
				rc = hs_kick(sh);
			} else {
				sh->hs_dirty = true;
			}
		}
		if (rc) {
			raft_persist_failed(p->raft);
			return rc;
		}
		rc = persist_entries(sh, p, rd);
		if (!rc && rd->n_repair)
			rc = persist_repairs(sh, p, rd);
		if (rc) {
			raft_persist_failed(p->raft);
			return rc;
		}
		struct notify_set ns = {.n = 0};
		uint64_t now = 0; /* apply_entry: one clock read per boundary */
		apply_committed(sh, p, rd->committed, rd->n_committed, live,
				&ns, &now);
		notify_flush(sh, &ns);
		/* confirmed reads; those whose index is now applied are
		 * served (log/part_repl.c) */
		if (live && p->cl->conf.n > 1)
			part_repl_reads_ready(sh, p, rd->reads, rd->n_reads);
		bool wal = rd->n_entries || rd->n_repair || rd->truncate_from ||
			   (hs_new && !live);
		if (wal || hs_new) {
			/* a leader's appends of its term leave now, while its
			 * own write + fdatasync proceeds (raft.h 3a; the core
			 * offers none under a term or vote not yet durable,
			 * and the HARDSTATE check here says the same) */
			uint32_t early = live && !hs_new ? rd->n_early : 0;
			send_msgs(p, rd->msgs, early);
			/* advance when the batch is durable and the HARDSTATE
			 * store (if any) is, and send the rest then */
			p->ready_out = true;
			p->out_n = rd->n_msgs - early;
			p->out_msgs = p->out_n ? rd->msgs + early : NULL;
			if (wal) {
				p->wal_wait = true;
				p->rnext = sh->ready_open;
				sh->ready_open = p;
			}
			after_step(p);
			return 0;
		}
		send_msgs(p, rd->msgs, rd->n_msgs);
		raft_advance(p->raft);
		part_raft_compact(p);
	}
}

/* The batch holding the group's last ready is durable: the ready is done
 * unless its HARDSTATE store is still in flight (part_raft_hs_done
 * finishes it then). */
void part_raft_durable(struct part *p)
{
	PARLEY_ASSERT(p->ready_out && p->wal_wait);
	p->wal_wait = false;
	if (!p->hs_wait)
		ready_finish(p);
}

/* Everything the ready depends on is durable: its messages go out, the
 * group advances. */
static void ready_finish(struct part *p)
{
	PARLEY_ASSERT(p->ready_out && !p->wal_wait && !p->hs_wait);
	p->ready_out = false;
	send_msgs(p, p->out_msgs, p->out_n); /* persist before send */
	p->out_msgs = NULL;
	p->out_n = 0;
	raft_advance(p->raft);
	part_raft_compact(p);
	after_step(p);
}

/* Tells the group its log is compacted to what is applied and drops those
 * copies: the state machine (history + memtable) holds them now. */
void part_raft_compact(struct part *p)
{
	uint64_t applied = raft_applied(p->raft);
	uint64_t to = applied;
	struct raft_snapshot_meta m = {0};
	if (p->cl->conf.n > 1) {
		/* a snapshot image a follower needs: the group is compacted
		 * to its index; while it is sent the point stays */
		if (part_snap_image(p, &m) == 0) {
			bool ok = raft_compacted(p->raft, &m) == 0;
			part_snap_image_taken(p, ok);
			if (ok) {
				p->rsnap_index = m.index;
				rlog_drop_through(p, m.index);
			}
			return;
		}
		if (part_snap_pinned(p))
			return;
		/* keep the newest applied entries, up to log_keep_bytes, for
		 * followers that lag (catch-up by log) */
		uint64_t bytes = p->rlog_bytes;
		to = 0;
		for (uint64_t k = 0; k < p->rlog_n &&
		     p->rlog_first + k <= applied &&
		     bytes > p->cl->log_keep_bytes; k++) {
			bytes -= p->rlog[k].len;
			to = p->rlog_first + k;
		}
	}
	if (to <= p->rsnap_index)
		return;
	m.index = to;
	m.term = raft_term_at(p->raft, to);
	m.conf = *raft_conf(p->raft);
	m.size = p->cl->conf.n > 1 ? 1 : 0; /* see st_load */
	if (raft_compacted(p->raft, &m) == 0) {
		p->rsnap_index = to;
		rlog_drop_through(p, to);
	}
}

/* ---- open: elect every group of the shard and apply the recovered log ---------- */

int part_raft_elect(struct shard *sh)
{
	struct pe_engine *e = sh->e;
	for (uint32_t round = 0; round < RAFT_OPEN_ROUNDS; round++) {
		/* tick the groups still campaigning; one that has a ready out
		 * waits (no raft_* call between ready and advance) */
		bool campaigning = false, done = true;
		for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
			struct part *p = &e->parts[i];
			if (!p->raft)
				continue;
			if (!p->ready_out) {
				if (raft_role(p->raft) != RAFT_LEADER)
					raft_tick(p->raft);
				int rc = part_raft_run(sh, p, false, false);
				if (rc)
					return rc;
			}
			campaigning |= !p->ready_out &&
				       raft_role(p->raft) != RAFT_LEADER;
			done &= raft_role(p->raft) == RAFT_LEADER &&
				!p->ready_out &&
				raft_applied(p->raft) == raft_last_index(p->raft);
		}
		/* once no group is still campaigning: one HARDSTATE store and
		 * one WAL batch (every group's no-op) for the whole shard */
		if (sh->ready_open && !campaigning) {
			int rc = 0;
			if (sh->hs_dirty) {
				rc = hs_store(e, sh);
				sh->hs_dirty = false;
			}
			if (!rc && wal_has_open(sh->wal))
				rc = shard_wal_sync(sh);
			if (rc)
				return rc;
			while (sh->ready_open) {
				struct part *p = sh->ready_open;
				sh->ready_open = p->rnext;
				p->rnext = NULL;
				part_raft_durable(p);
			}
			/* the commit applies the recovered log and the no-op */
			for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards)
				if (e->parts[i].raft) {
					int rc2 = part_raft_run(sh, &e->parts[i],
								false, false);
					if (rc2)
						return rc2;
				}
			continue;
		}
		if (done)
			return 0;
	}
	PLOG_E("engine", "partitions did not elect themselves at open",
	       "shard=%u rounds=%u", sh->idx, RAFT_OPEN_ROUNDS);
	return -PARLEY_EAGAIN;
}

/* Read-only opens (inspection) write nothing, so they cannot elect: the
 * recovered log is applied as it stands, in index order. */
void part_raft_apply_recovered(struct shard *sh, struct part *p)
{
	for (uint64_t k = 0; k < p->rlog_n && !p->corrupt; k++)
		apply_entry(sh, p, &p->rlog[k], false, NULL, NULL, NULL);
	rlog_free_from(p, 0);
}
