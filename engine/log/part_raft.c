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
 *               disk; the entry checksum is recomputed when read back.
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
 * Messages: a group of one sends none (asserted); other voters come with
 * replication.
 *
 * Threads: a partition's group is driven by its shard thread only, and by
 * pe_open (the election at open) before the shard threads start.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define HS_MAGIC 0x3153484D4C5041ull /* "PLAMHS1" */
#define HS_SEED 0x48415244535441ull
#define RAFT_NODE_ID 1u              /* this node in its groups of one */
#define RAFT_ELECTION_TICKS 4u
#define RAFT_OPEN_ROUNDS 64u         /* election rounds at open, at most */
#define RAFT_TICK_MS 100u            /* one logical tick of every group */
#define RAFT_TICK_CATCHUP 4u         /* ticks made up at once, at most */
#define PROP_MARGIN 2u               /* records a ready may add (no-op) */

/* ---- rlog: durable entries not yet applied --------------------------------- */

static void rlog_free_from(struct part *p, uint64_t index)
{
	while (p->rlog_n && p->rlog_first + p->rlog_n - 1 >= index) {
		p->rlog_n--;
		free((void *)p->rlog[p->rlog_n].data);
	}
}

static void rlog_drop_through(struct part *p, uint64_t index)
{
	uint64_t k = 0;
	while (k < p->rlog_n && p->rlog_first + k <= index) {
		free((void *)p->rlog[k].data);
		k++;
	}
	if (!k)
		return;
	memmove(p->rlog, p->rlog + k, (p->rlog_n - k) * sizeof *p->rlog);
	p->rlog_n -= k;
	p->rlog_first += k;
}

/* Appends (term, index, type, data) taking ownership of `owned` (a
 * malloc'd copy of the data, freed here on failure) with its checksum
 * (computed when csum is NULL); truncates a conflicting suffix first.
 * -PARLEY_ENOMEM or -PARLEY_ECORRUPT (gap). */
static int rlog_put_owned(struct part *p, uint64_t term, uint64_t index,
			  uint8_t type, uint8_t *owned, uint32_t len,
			  const uint64_t *csum)
{
	if (!p->rlog_n)
		p->rlog_first = index;
	rlog_free_from(p, index);
	if (!p->rlog_n)
		p->rlog_first = index;
	if (index != p->rlog_first + p->rlog_n) {
		free(owned);
		return -PARLEY_ECORRUPT;
	}
	if (p->rlog_n == p->rlog_cap) {
		uint64_t nc = p->rlog_cap ? p->rlog_cap * 2 : 64;
		struct raft_entry *ne = realloc(p->rlog, nc * sizeof *ne);
		if (!ne) {
			free(owned);
			return -PARLEY_ENOMEM;
		}
		p->rlog = ne;
		p->rlog_cap = nc;
	}
	p->rlog[p->rlog_n++] = (struct raft_entry){
		.term = term, .index = index, .len = len, .type = type,
		.data = owned,
		.csum = csum ? *csum
			     : raft_entry_csum(term, index, type, owned, len)};
	return 0;
}

/* rlog_put_owned of a copy of data. */
static int rlog_put(struct part *p, uint64_t term, uint64_t index,
		    uint8_t type, const uint8_t *data, uint32_t len,
		    const uint64_t *csum)
{
	uint8_t *d = malloc(len ? len : 1);
	if (!d)
		return -PARLEY_ENOMEM;
	if (len)
		memcpy(d, data, len);
	return rlog_put_owned(p, term, index, type, d, len, csum);
}

static uint64_t rlog_last(const struct part *p)
{
	return p->rlog_n ? p->rlog_first + p->rlog_n - 1 : p->flushed_index;
}

void part_raft_free(struct part *p)
{
	raft_free(p->raft);
	p->raft = NULL;
	rlog_free_from(p, 0);
	free(p->rlog);
	p->rlog = NULL;
	p->rlog_cap = 0;
}

/* ---- recovery: WAL records -> rlog ------------------------------------------ */

int part_raft_recover(struct part *p, const struct wal_rec *rec)
{
	if (rec->index <= p->flushed_index) {
		if (rec->index == p->flushed_index)
			p->snap_term = rec->term;
		p->hs_term = PARLEY_MAX(p->hs_term, rec->term);
		return 0; /* already in history segments */
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
	uint8_t *d = malloc(len ? len : 1);
	if (!d)
		return -PARLEY_ENOMEM;
	if (framed)
		d[0] = (uint8_t)rec->type;
	if (rec->len)
		memcpy(d + (framed ? 1 : 0), rec->body, rec->len);
	int rc = rlog_put_owned(p, rec->term, rec->index, type, d, len, NULL);
	if (!rc && rec->term > p->hs_term)
		p->hs_term = rec->term; /* a log written before HARDSTATE */
	return rc;
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

/* Stores every partition's (term, vote) of the shard. Blocking (a few
 * small writes and fsyncs): only when a term or vote changed, which for
 * groups of one happens at open only. */
static int hs_store(struct pe_engine *e, struct shard *sh)
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
	char dir[600], tmp[700], fin[700];
	snprintf(dir, sizeof dir, "%s/wal/%u", e->dir, sh->idx);
	snprintf(tmp, sizeof tmp, "%s/HARDSTATE.tmp", dir);
	snprintf(fin, sizeof fin, "%s/HARDSTATE", dir);
	int rc = pio_file_replace(e->io, dir, tmp, fin, b, size);
	free(b);
	return rc;
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
	snap->conf.n = 1;
	snap->conf.max_id = RAFT_NODE_ID;
	snap->conf.ids[0] = RAFT_NODE_ID;
	snap->conf.roles[0] = RAFT_VOTER;
	*last_index = rlog_last(p);
	memset(partial, 0, sizeof *partial);
	*partial_bytes = 0;
	return 0;
}

static int st_entry(void *ctx, uint64_t index, struct raft_entry *out)
{
	struct part *p = ctx;
	if (!p->rlog_n || index < p->rlog_first ||
	    index >= p->rlog_first + p->rlog_n)
		return -PARLEY_ENOTFOUND;
	*out = p->rlog[index - p->rlog_first];
	return 0;
}

static int st_snapshot_read(void *ctx, uint64_t offset, void *buf,
			    uint32_t len)
{
	/* sending a snapshot needs a peer: not in a group of one */
	return -PARLEY_EIO;
}

int part_raft_open(struct part *p)
{
	struct raft_config c = {0};
	c.id = RAFT_NODE_ID;
	c.group = p->id;
	c.election_ticks = RAFT_ELECTION_TICKS;
	c.heartbeat_ticks = 1;
	c.max_inflight = 4;
	c.max_batch_entries = RAFT_MAX_MSG_ENTRIES;
	c.max_batch_bytes = 1u << 20;
	c.max_uncommitted = 1u << 20; /* the memtable bound limits appends */
	c.chunk_bytes = RAFT_MAX_CHUNK_BYTES;
	c.rng_seed = p->id;
	c.pre_vote = true;
	c.check_quorum = true;
	c.bootstrap.n = 1;
	c.bootstrap.max_id = RAFT_NODE_ID;
	c.bootstrap.ids[0] = RAFT_NODE_ID;
	c.bootstrap.roles[0] = RAFT_VOTER;
	c.storage = (struct raft_storage){.ctx = p, .load = st_load,
					  .entry = st_entry,
					  .snapshot_read = st_snapshot_read};
	return raft_new(&c, &p->raft);
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

/* Applies one committed (durable) entry and answers its waiter. */
static void apply_entry(struct shard *sh, struct part *p,
			const struct raft_entry *e, bool live)
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
	} else {
		uint64_t t0 = live ? parley_mono_ns() : 0;
		rc = part_apply(p, e->index, e->term, kind, body, len, &res);
		if (live)
			stage_hist_add(&sh->hist[PE_STAGE_APPLY],
				       parley_mono_ns() - t0);
		if (rc) {
			char f[64];
			snprintf(f, sizeof f, "wal/%u (log index %" PRIu64 ")",
				 sh->idx, e->index);
			part_mark_corrupt(p, f, 0, res.why);
		}
	}
	if (r) {
		PARLEY_ASSERT((r->kind == REQ_DELETE) == (kind == CMD_DELETE));
		shard_answer(sh, p, r, rc, &res);
	}
	if (res.touched && live)
		sub_notify(sh, res.touched);
}

/* ---- one ready ------------------------------------------------------------------ */

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
		/* the core made the checksum when it took the proposal */
		int rc = rlog_put(p, e->term, e->index, e->type, e->data, e->len,
				  &e->csum);
		if (rc)
			return rc;
	}
	return 0;
}

/* Proposes what fits into the open batch. */
static void propose_queued(struct shard *sh, struct part *p)
{
	struct pe_engine *e = sh->e;
	uint64_t room = wal_open_room(sh->wal), used = 0;
	uint64_t margin = PROP_MARGIN * WAL_REC_SPACE(0);
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
		if (r->kind == REQ_APPEND)
			cmd_stamp_ts(r->data + 1, r->len - 1, engine_clock(e));
		uint64_t index;
		int rc = raft_propose(p->raft, r->data, r->len, &index);
		if (rc) {
			p->pending_bytes -= r->mem_estimate;
			shard_req_fail(r, rc);
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
int part_raft_run(struct shard *sh, struct part *p, bool live, bool propose)
{
	if (!p->raft || p->ready_out)
		return 0;
	for (;;) {
		if (live && propose)
			propose_queued(sh, p);
		struct raft_ready *rd = raft_ready(p->raft);
		if (rd->empty) {
			raft_advance(p->raft);
			return 0;
		}
		PARLEY_ASSERT(rd->n_msgs == 0 && !rd->has_chunk &&
			      !rd->n_repair); /* a group of one */
		int rc = 0;
		if (rd->truncate_from)
			rlog_free_from(p, rd->truncate_from);
		/* a new term or vote is durable before the group goes on: at
		 * open, one HARDSTATE store covers every group of the shard
		 * (part_raft_elect); while serving (never, for a group of one)
		 * it is stored at once */
		bool hs_new = rd->hs_changed && (rd->hs.term != p->hs_term ||
						 rd->hs.vote != p->hs_vote);
		if (hs_new) {
			p->hs_term = rd->hs.term;
			p->hs_vote = rd->hs.vote;
			if (live)
				rc = hs_store(sh->e, sh);
			else
				sh->hs_dirty = true;
		}
		if (!rc)
			rc = persist_entries(sh, p, rd);
		if (rc) {
			raft_persist_failed(p->raft);
			return rc;
		}
		for (uint32_t k = 0; k < rd->n_committed; k++)
			apply_entry(sh, p, &rd->committed[k], live);
		if (rd->n_entries || rd->truncate_from || (hs_new && !live)) {
			p->ready_out = true; /* advance when the batch is durable */
			p->rnext = sh->ready_open;
			sh->ready_open = p;
			return 0;
		}
		raft_advance(p->raft);
		part_raft_compact(p);
	}
}

/* The batch holding the group's last ready is durable. */
void part_raft_durable(struct part *p)
{
	PARLEY_ASSERT(p->ready_out);
	p->ready_out = false;
	raft_advance(p->raft);
	part_raft_compact(p);
}

/* Tells the group its log is compacted to what is applied and drops those
 * copies: the state machine (history + memtable) holds them now. */
void part_raft_compact(struct part *p)
{
	uint64_t applied = raft_applied(p->raft);
	if (applied <= p->rsnap_index)
		return;
	struct raft_snapshot_meta m = {0};
	m.index = applied;
	m.term = raft_term_at(p->raft, applied);
	m.conf = *raft_conf(p->raft);
	if (raft_compacted(p->raft, &m) == 0) {
		p->rsnap_index = applied;
		rlog_drop_through(p, applied);
	}
}

/* ---- the groups' clock ------------------------------------------------------------ */

/*
 * Ticks every group of the shard once per RAFT_TICK_MS of the engine's
 * clock (engine_clock: injectable, so a simulator drives it), at most
 * RAFT_TICK_CATCHUP ticks per call after a stall or a clock jump. A group
 * whose ready waits for its WAL batch is skipped (no raft_* call between a
 * ready and its advance): its logical clock slips by those ticks. Cheap
 * for idle groups: a tick and an empty ready each; a group of one, as
 * leader, produces nothing from a tick. Returns 0 or the error of
 * part_raft_run (a failed log). Returns the ms until the next tick in
 * *wait_ms. Shard thread.
 */
int part_raft_tick(struct shard *sh, int *wait_ms)
{
	struct pe_engine *e = sh->e;
	uint64_t now = engine_clock(e);
	if (!sh->raft_tick_ms)
		sh->raft_tick_ms = now + RAFT_TICK_MS;
	if (now < sh->raft_tick_ms) {
		*wait_ms = (int)PARLEY_MIN(sh->raft_tick_ms - now,
					   (uint64_t)RAFT_TICK_MS);
		return 0;
	}
	uint64_t n = (now - sh->raft_tick_ms) / RAFT_TICK_MS + 1;
	sh->raft_tick_ms = now + RAFT_TICK_MS;
	*wait_ms = RAFT_TICK_MS;
	n = PARLEY_MIN(n, (uint64_t)RAFT_TICK_CATCHUP);
	atomic_store_explicit(&sh->raft_ticks,
			      atomic_load_explicit(&sh->raft_ticks, memory_order_relaxed) + n,
			      memory_order_relaxed);
	for (uint32_t i = sh->idx; i < e->nparts; i += e->nshards) {
		struct part *p = &e->parts[i];
		if (!p->raft || p->ready_out || p->corrupt)
			continue;
		for (uint64_t k = 0; k < n; k++)
			raft_tick(p->raft);
		int rc = part_raft_run(sh, p, true, false);
		if (rc)
			return rc;
	}
	return 0;
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
		apply_entry(sh, p, &p->rlog[k], false);
	rlog_free_from(p, 0);
}
