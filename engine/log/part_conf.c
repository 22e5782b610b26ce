/*
 * part_conf.c — membership changes of a partition's Raft group
 * (parley_engine.h "Replication", contract item 12): the stored
 * configuration, the change requests, the inbound membership filter and
 * the published configuration.
 *
 * Where a group's configuration lives:
 *   - conf entries (RAFT_ENTRY_CONF, WAL records CMD_CONF) are in the log
 *     like every entry: persisted in the WAL, replayed at recovery (the
 *     Raft core rebuilds its conf from them at raft_new, part_raft.c);
 *   - the history tier does not know them, and the WAL records of a
 *     partition are released once history covers them. So when a conf
 *     entry is applied, the configuration after it becomes the
 *     partition's newest (conf_stored, in memory, conf_unstored), and the
 *     next flush's manifest store writes it to <data>/conf/<partition>
 *     (pio_file_replace: atomic, durable) first, on the flush worker
 *     (part_conf_flush_write, engine/history/hist_job.c): the WAL records
 *     are released only after that store, and a failed conf write fails
 *     the flush. Nothing of this runs on the shard thread;
 *   - a snapshot carries the configuration in its meta; a follower's
 *     install job stores it here (index = the snapshot's, part_conf_write
 *     off the shard thread) before the install's commit point (INSTALL,
 *     part_snap.c install_run); the shard records it (part_conf_set);
 *   - at open the group starts from the stored configuration, else from
 *     the founders (pe_options.cluster.voters): part_conf_boot.
 * The stored configuration may be newer than the history's flushed index
 * (an entry applied after the last flush, or a snapshot whose install did
 * not commit before a crash): it is always a committed configuration, so
 * using it early is safe; the conf entries at or below its index are not
 * applied onto it again (raft_config.conf_index at raft_new, the index
 * check of part_conf_applied): a member removed and added again must not
 * be removed by the older entry.
 *
 * File: u64 magic | u32 version 1 | u32 partition | u64 index |
 *       u64 max_id | u32 n | n x (u64 id | u8 role) | u64 xxh3 of all before.
 *
 * Requests: one change at a time per group. A REQ_CONF waits in
 * p->conf_req until part_raft_run may call the core (no ready out), is
 * proposed (part_conf_propose) and then waits in p->conf_wait, answered
 * when its entry applies (same index and term: 0; another term: the
 * entry was lost, -PARLEY_ENOTLEADER), or failed when leadership is lost
 * with the entry above the commit index, when the shard fails, at close.
 *
 * Threads: pe_partition_conf_change and pe_raft_status (via
 * part_conf_read) from any thread; everything else on the partition's
 * shard thread (or pe_open before the shards run).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define CONF_MAGIC 0x31464E434C504Bull /* "KPLCNF1" */
#define CONF_SEED 0x434F4E4653454544ull
#define CONF_VERSION 1u
#define CONF_MAX_BYTES (36u + RAFT_MAX_MEMBERS * 9u + 8u)

static void conf_paths(const char *datadir, uint32_t part, char *dir,
		       size_t dcap, char *tmp, size_t tcap, char *fin,
		       size_t fcap)
{
	snprintf(dir, dcap, "%s/conf", datadir);
	snprintf(tmp, tcap, "%s/conf/%u.tmp", datadir, part);
	snprintf(fin, fcap, "%s/conf/%u", datadir, part);
}

static size_t conf_encode(uint32_t part, uint64_t index,
			  const struct raft_conf *c, uint8_t *b)
{
	le_put64(b, CONF_MAGIC);
	le_put32(b + 8, CONF_VERSION);
	le_put32(b + 12, part);
	le_put64(b + 16, index);
	le_put64(b + 24, c->max_id);
	le_put32(b + 32, c->n);
	size_t off = 36;
	for (uint32_t i = 0; i < c->n; i++, off += 9) {
		le_put64(b + off, c->ids[i]);
		b[off + 8] = c->roles[i];
	}
	le_put64(b + off, parley_xxh3(b, off, CONF_SEED));
	return off + 8;
}

static int conf_decode(const struct part *p, const uint8_t *b, size_t len,
		       uint64_t *index, struct raft_conf *c)
{
	if (len < 44 || le_get64(b) != CONF_MAGIC ||
	    le_get32(b + 8) != CONF_VERSION || le_get32(b + 12) != p->id)
		return -PARLEY_ECORRUPT;
	memset(c, 0, sizeof *c);
	*index = le_get64(b + 16);
	c->max_id = le_get64(b + 24);
	c->n = le_get32(b + 32);
	if (c->n == 0 || c->n > RAFT_MAX_MEMBERS || len != 44u + c->n * 9u ||
	    le_get64(b + len - 8) != parley_xxh3(b, len - 8, CONF_SEED))
		return -PARLEY_ECORRUPT;
	uint32_t voters = 0;
	for (uint32_t i = 0; i < c->n; i++) {
		c->ids[i] = le_get64(b + 36 + i * 9);
		c->roles[i] = b[36 + i * 9 + 8];
		if (!c->ids[i] || c->ids[i] > c->max_id ||
		    (c->roles[i] != RAFT_VOTER && c->roles[i] != RAFT_LEARNER))
			return -PARLEY_ECORRUPT;
		for (uint32_t j = 0; j < i; j++)
			if (c->ids[j] == c->ids[i])
				return -PARLEY_ECORRUPT;
		voters += c->roles[i] == RAFT_VOTER;
	}
	return voters ? 0 : -PARLEY_ECORRUPT;
}

int part_conf_load(struct pe_engine *e, struct part *p)
{
	p->conf_have = false;
	p->conf_unstored = false;
	p->conf_index = 0;
	char dir[600], tmp[700], fin[700];
	conf_paths(e->dir, p->id, dir, sizeof dir, tmp, sizeof tmp, fin,
		   sizeof fin);
	struct pio_file *f;
	int rc = e->io->ops->open(e->io, fin, 0, &f);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	uint8_t b[CONF_MAX_BYTES];
	int64_t size = e->io->ops->size(e->io, f);
	int64_t n = size > 0 && size <= (int64_t)sizeof b
			    ? e->io->ops->pread(e->io, f, b, (size_t)size, 0)
			    : -1;
	e->io->ops->close(e->io, f);
	rc = n == size && n > 0
		     ? conf_decode(p, b, (size_t)n, &p->conf_index,
				   &p->conf_stored)
		     : -PARLEY_ECORRUPT;
	if (rc) {
		PLOG_E("engine", "stored group configuration unreadable",
		       "file=%s", fin);
		return rc;
	}
	p->conf_have = true;
	return 0;
}

const struct raft_conf *part_conf_boot(const struct part *p)
{
	return p->conf_have ? &p->conf_stored : &p->cl->conf;
}

/* The file alone: any thread (the snapshot install job writes it off the
 * shard thread, log/part_snap.c). */
int part_conf_write(struct pio *io, const char *datadir, uint32_t part,
		    uint64_t index, const struct raft_conf *conf)
{
	char dir[600], tmp[700], fin[700];
	conf_paths(datadir, part, dir, sizeof dir, tmp, sizeof tmp, fin,
		   sizeof fin);
	uint8_t b[CONF_MAX_BYTES];
	size_t len = conf_encode(part, index, conf, b);
	int rc = pio_dir_ensure(io, dir);
	if (!rc)
		rc = pio_file_replace(io, dir, tmp, fin, b, len);
	if (rc)
		PLOG_E("engine", "group configuration not stored",
		       "partition=%u index=%" PRIu64 " err=%s", part, index,
		       parley_errname(rc));
	else
		PLOG_I("engine", "group configuration stored", "partition=%u "
		       "index=%" PRIu64 " members=%u", part, index, conf->n);
	return rc;
}

/* What the file now holds (shard thread). */
void part_conf_set(struct part *p, uint64_t index, const struct raft_conf *c)
{
	if (p->conf_have && index <= p->conf_index)
		return;
	p->conf_have = true;
	p->conf_index = index;
	p->conf_stored = *c;
}

bool part_conf_stale(const struct part *p, uint64_t index)
{
	return !p->conf_have || index > p->conf_index;
}

/* An applied conf entry's configuration becomes the partition's newest;
 * the next flush store writes it (durable before a flush can cover the
 * entry and release its WAL record). Nothing here can fail. */
static void part_conf_note(struct pe_engine *e, struct part *p,
			   uint64_t index, const struct raft_conf *conf)
{
	if (e->opt.read_only || !part_conf_stale(p, index))
		return; /* known already (as of a later index) */
	part_conf_set(p, index, conf);
	p->conf_unstored = true;
}

/* Shard thread, as a flush's manifest store is handed to the flush
 * worker: the configuration it is to write first, if one is unstored. */
void part_conf_flush_begin(struct part *p)
{
	p->fconf = p->conf_unstored;
	if (p->fconf) {
		p->fconf_index = p->conf_index;
		p->fconf_c = p->conf_stored;
	}
}

/* The flush worker, before the manifest store: 0 or the write's error
 * (the flush then fails and the WAL keeps the entry). */
int part_conf_flush_write(struct pe_engine *e, struct part *p)
{
	if (!p->fconf)
		return 0;
	return part_conf_write(e->io, e->dir, p->id, p->fconf_index, &p->fconf_c);
}

/* Shard thread, the flush store back (rc its result). */
void part_conf_flush_done(struct part *p, int rc)
{
	if (p->fconf && !rc && p->conf_index == p->fconf_index)
		p->conf_unstored = false; /* no newer change meanwhile */
	p->fconf = false;
}

/* ---- requests ---------------------------------------------------------------- */

static void conf_answer(struct req *r, int err, uint64_t index,
			uint64_t leader)
{
	struct pe_conf_result res = {.err = err, .index = index,
				     .leader = leader};
	r->cb.conf(r->arg, &res);
	free(r);
}

int pe_partition_conf_change(struct pe_engine *e, uint32_t partition,
			     enum pe_conf_op op, uint64_t node, pe_conf_cb cb,
			     void *arg)
{
	if (!e || !cb || partition >= e->nparts || !node ||
	    (op != PE_CONF_ADD_LEARNER && op != PE_CONF_PROMOTE &&
	     op != PE_CONF_REMOVE))
		return -PARLEY_EINVAL;
	if (e->opt.read_only)
		return -PARLEY_EPERM;
	if (!e->cl.on || e->cl.conf.n < 2)
		return -PARLEY_EINVAL; /* a single node has no peers to add */
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	r->kind = REQ_CONF;
	r->part = partition;
	r->from = node;
	r->limit = (uint32_t)op;
	r->cb.conf = cb;
	r->arg = arg;
	int rc = shard_push(e, r);
	if (rc)
		free(r);
	return rc;
}

struct conf_sync {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	struct pe_conf_result res;
};

static void conf_sync_cb(void *arg, const struct pe_conf_result *r)
{
	struct conf_sync *w = arg;
	pthread_mutex_lock(&w->mu);
	w->res = *r;
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int pe_partition_conf_change_sync(struct pe_engine *e, uint32_t partition,
				  enum pe_conf_op op, uint64_t node,
				  struct pe_conf_result *r)
{
	struct conf_sync w = {.done = false};
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	int rc = pe_partition_conf_change(e, partition, op, node, conf_sync_cb,
					  &w);
	if (rc) {
		w.res = (struct pe_conf_result){.err = rc};
	} else {
		pthread_mutex_lock(&w.mu);
		while (!w.done)
			pthread_cond_wait(&w.cv, &w.mu);
		pthread_mutex_unlock(&w.mu);
	}
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	if (r)
		*r = w.res;
	return w.res.err;
}

/* Shard thread: a REQ_CONF waits for the group's next run. */
void part_conf_req(struct shard *sh, struct req *r)
{
	struct part *p = &sh->e->parts[r->part];
	if (sh->fatal) {
		conf_answer(r, -PARLEY_EFATAL, 0, 0);
		return;
	}
	if (p->corrupt) {
		conf_answer(r, -PARLEY_ECORRUPT, 0, 0);
		return;
	}
	if (!p->raft) {
		conf_answer(r, -PARLEY_ENOTLEADER, 0, 0);
		return;
	}
	if (p->conf_req || p->conf_wait) {
		conf_answer(r, -PARLEY_EAGAIN, 0, raft_leader(p->raft));
		return;
	}
	p->conf_req = r;
	shard_mark_dirty(sh, p);
}

/* part_raft_run, no ready out: proposes the queued change. Returns the
 * WAL bytes its entry takes in the open batch (0: none proposed). The
 * caller checked that a record of RAFT_CONF_CHANGE_BYTES fits. */
uint64_t part_conf_propose(struct part *p)
{
	struct req *r = p->conf_req;
	if (!r)
		return 0;
	p->conf_req = NULL;
	struct raft_conf_change cc = {.op = (uint8_t)r->limit, .node = r->from};
	uint64_t index = 0;
	int rc = raft_propose_conf(p->raft, &cc, &index);
	if (rc) {
		conf_answer(r, rc, 0, raft_leader(p->raft));
		return 0;
	}
	PLOG_I("engine", "membership change proposed", "partition=%u op=%u "
	       "node=%" PRIu64 " index=%" PRIu64, p->id, cc.op, cc.node, index);
	r->index = index;
	r->term = raft_term(p->raft);
	p->conf_wait = r;
	return WAL_REC_SPACE(RAFT_CONF_CHANGE_BYTES);
}

/* A committed conf entry applied (apply_entry, part_raft.c): the
 * configuration after it becomes the partition's newest (written by the
 * next flush store); the proposal waiting for it is answered. */
void part_conf_applied(struct shard *sh, struct part *p,
		       const struct raft_entry *ent, bool live)
{
	struct pe_engine *e = sh->e;
	struct raft_conf_change cc;
	if (!p->corrupt && (!p->conf_have || ent->index > p->conf_index) &&
	    raft_conf_change_decode(ent->data, ent->len, &cc) == 0) {
		struct raft_conf c = *part_conf_boot(p);
		/* a change that does not apply is skipped by every node
		 * (raft.c apply_conf_change): nothing to store */
		if (raft_conf_apply(&c, &cc) == 0)
			part_conf_note(e, p, ent->index, &c);
	}
	struct req *r = p->conf_wait;
	if (!live || !r || r->index > ent->index)
		return;
	p->conf_wait = NULL;
	if (p->corrupt)
		conf_answer(r, -PARLEY_ECORRUPT, 0, 0);
	else if (r->index == ent->index && r->term == ent->term)
		conf_answer(r, 0, ent->index, 0);
	else /* another leader's entry at its index: it was lost */
		conf_answer(r, -PARLEY_ENOTLEADER, 0, raft_leader(p->raft));
}

/* Fails the waiting change if its entry is above `above` (leadership
 * lost: it may not commit; 0 with the queued one too: close, failure). */
void part_conf_fail(struct part *p, uint64_t above, int err)
{
	uint64_t leader = p->raft ? raft_leader(p->raft) : 0;
	if (p->conf_wait && p->conf_wait->index > above) {
		conf_answer(p->conf_wait, err, 0, leader);
		p->conf_wait = NULL;
	}
	if (!above && p->conf_req) {
		conf_answer(p->conf_req, err, 0, leader);
		p->conf_req = NULL;
	}
}

/* ---- inbound filter and published configuration ------------------------------- */

/* Contract item 3: members of the group's current configuration; a
 * leader's appends, heartbeats and snapshots from any node (Raft's term
 * rule refuses a stale one): this node may be being added, or added
 * again after a removal it never learnt of, its configuration then
 * naming members of old and not the leader that added it. Votes,
 * pre-votes and answers of non-members are dropped (a removed node does
 * not disturb the group). */
bool part_conf_msg_ok(const struct part *p, const struct raft_msg *m)
{
	const struct raft_conf *c = raft_conf(p->raft);
	if (raft_conf_find(c, m->from) >= 0)
		return true;
	return m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
	       m->type == RAFT_MSG_SNAPSHOT;
}

void part_conf_publish(struct part *p)
{
	const struct raft_conf *c = raft_conf(p->raft);
	struct raft_conf *o = &p->conf_pubbed;
	if (o->n == c->n && !memcmp(o->ids, c->ids, c->n * sizeof c->ids[0]) &&
	    !memcmp(o->roles, c->roles, c->n))
		return;
	*o = *c;
	uint64_t s = atomic_load_explicit(&p->pub_conf_seq, memory_order_relaxed);
	atomic_store_explicit(&p->pub_conf_seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&p->pub_conf_n, c->n, memory_order_relaxed);
	for (uint32_t i = 0; i < c->n; i++) {
		atomic_store_explicit(&p->pub_conf_ids[i], c->ids[i],
				      memory_order_relaxed);
		atomic_store_explicit(&p->pub_conf_roles[i], c->roles[i],
				      memory_order_relaxed);
	}
	atomic_store_explicit(&p->pub_conf_seq, s + 2, memory_order_release);
}
