/*
 * engine_internal.h — the engine's private structures and the functions its
 * files share (engine/ only; never on another component's include path).
 *
 * Where each concern lives
 *   log/memtable.c     streams and their entries in memory
 *   log/idem.c         the idempotency table
 *   log/part_apply.c   applying a log command (the partition state machine)
 *   log/sub.c          subscriptions (tails)
 *   log/shard.c        the shard thread: inbox, loop, group commit, apply
 *   log/shard_req.c    the shard's request handlers
 *   log/part_raft.c    each partition a Raft group on the shard's WAL
 *   log/part_repl.c    replication API: inbound messages, ticks, status
 *   log/part_wait.c    proposals waiting by (index, term)
 *   log/cmd.c          the log command codec
 *   log/wal.c          the shard's write-ahead log
 *   history/hist_job.c flush/compaction jobs, WAL release, retention ticks
 *   history/hist_read.c the read pool: history reads off the shard thread
 *   manifest.c         the data directory's MANIFEST
 *   open.c             pe_open (recovery), pe_close, pe_abort
 *   api.c              the public asynchronous calls (marshalling)
 *   blocking.c         the *_sync wrappers
 *   inspect.c          offline history inspection
 *
 * Ownership map
 *   struct pe_engine   owns the shards, the partitions and the manifest.
 *   struct shard       one thread; owns its WAL, its io ring, its inbox and
 *                      every partition p with p % nshards == shard index.
 *                      Nothing else touches a partition's state.
 *   struct part        streams (hash table), idempotency table, counters,
 *                      and its Raft group (struct raft, log/part_raft.c):
 *                      proposals queued (prop_*), proposals waiting for
 *                      commit and apply (wait_*), durable entries not yet
 *                      applied (rlog).
 *   struct stream      the memtable of one stream: entries by seq, plus the
 *                      subscriptions tailing it.
 *   struct mentry      one entry, payload inline; immutable once applied.
 *   struct req         a request from any thread to a shard; allocated by
 *                      the caller in one piece, freed by the shard.
 *   struct hpart       (hpart.h) a partition's history tier: owned by the
 *                      partition, used only on its shard thread, except
 *                      that a flush or compaction job in flight is run by
 *                      a history worker thread (struct hworker) and handed
 *                      back to the shard (REQ_HIST_DONE) for its commit,
 *                      and that history reads run on the read pool (struct
 *                      rpool) over a snapshot (struct hpart_view: its own
 *                      references on the segment readers), answered back
 *                      on the shard (REQ_READ_DONE, REQ_SUB_READ_DONE).
 *   struct snap_out /  a partition's snapshot image (leader) and the
 *   struct snap_in     snapshot being received (follower), log/part_snap.c:
 *                      their file work runs as jobs on the read pool and
 *                      comes back as REQ_SNAP_DONE; while a job runs the
 *                      shard leaves what it names alone.
 *   struct bcache      one per shard, shared by the shard and the read pool
 *                      (thread-safe, lock shards).
 *   struct fsrc        a frozen copy of the memtable's entry pointers for
 *                      one flush job; the entries it names are not freed
 *                      while the job is in flight (flush_st).
 *
 * Log commands (WAL record types) and their codec: log/cmd.h. Applying
 * them (log/part_apply.c) is deterministic, so replaying the log always
 * rebuilds the same seqs.
 */
#ifndef PARLEY_ENGINE_INTERNAL_H
#define PARLEY_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "cmd.h"
#include "compact.h"
#include "hpart.h"
#include "raft.h"
#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "wal.h"

struct mentry {
	uint64_t seq;
	uint64_t ts;
	uint16_t type;
	uint16_t flags;
	uint32_t len;
	uint8_t producer[PE_PRODUCER_LEN];
	uint8_t payload[];
};

struct pe_sub {
	struct pe_engine *e;
	uint32_t part;
	struct stream *st;      /* shard side, set when attached */
	uint64_t next_seq;
	pe_sub_cb cb;
	void *arg;
	atomic_bool dead;       /* unsubscribed: deliver nothing more */
	bool paused;
	bool in_catchup;
	bool attached;
	bool rd_flight;         /* a history chunk is in the read pool */
	bool rd_waiting;        /* on the shard's sub_wait list */
	bool free_pending;      /* unsubscribed while rd_flight: freed when
				   the chunk comes back */
	struct pe_sub *wnext;   /* shard's sub_wait list */
	struct pe_sub *next;    /* stream's list */
	struct pe_sub *cnext;   /* shard's catch-up list */
	uint8_t klen;
	uint8_t key[PE_MAX_KEY];
};

struct stream {
	struct stream *hnext;
	uint64_t hash;
	uint64_t first_seq;     /* first visible (retained, not deleted) seq */
	uint64_t mem_first;     /* seq of ents[0]; older seqs are in history */
	uint64_t last_seq;      /* 0 when empty */
	uint64_t last_ts;
	struct mentry **ents;   /* ents[i] has seq mem_first + i */
	uint64_t nents, cap;
	struct pe_sub *subs;
	uint8_t klen;
	uint8_t key[];
};

/* One idempotency record, 64 bytes: a node of the partition's pool
 * (idem.c), named by a 32-bit id (from 1; IDEM_NIL = none, so a zeroed
 * partition holds an empty table); linked in the order list by ids. */
struct idem {
	struct stream *st;
	uint64_t seq;
	uint64_t ts;
	uint64_t h;             /* idem_hash(st, producer), kept for the index */
	uint32_t count;
	uint32_t fnext;         /* the order list (idem.c): ascending by */
	uint32_t fprev;         /* (ts, key, producer, seq); IDEM_NIL ends it */
	uint8_t producer[PE_PRODUCER_LEN];
};

#define IDEM_NIL 0u

/* A partition's history job lanes (see history/hist_job.c). */
enum part_flush_state {
	FLUSH_IDLE = 0,
	FLUSH_RUNNING,  /* frozen memtable being written by the flush worker */
	FLUSH_DEFERRED, /* written (or failed); its store (or finish) waits
			   for a compaction's store */
	FLUSH_STORING,  /* the flush worker stores the new HISTORY manifest */
};
enum part_compact_state {
	COMPACT_IDLE = 0,
	COMPACT_RUNNING,  /* the compaction worker merges segments */
	COMPACT_DEFERRED, /* merged; its store waits for a flush's store */
	COMPACT_STORING,  /* the worker stores the new HISTORY manifest */
};

/* What the partition state machine needs from the engine's configuration
 * (fixed in the MANIFEST: the same on every replica). */
struct part_cfg {
	uint64_t idem_window_ms;
	uint32_t idem_max;
};

/* The outcome of applying one command (part_apply). */
struct part_apply_res {
	uint16_t kind;                  /* CMD_APPEND or CMD_DELETE */
	struct pe_append_result append; /* CMD_APPEND's result */
	struct pe_delete_result del;    /* CMD_DELETE's result */
	struct stream *touched;         /* stream whose tails may move */
	const char *why;                /* when part_apply failed */
};

struct part {
	uint32_t id;
	bool corrupt;
	char err[256];
	struct part_cfg cfg;
	uint64_t last_index;    /* last applied log index */
	uint64_t last_term;     /* term of that entry */
	/* the partition's Raft group (log/part_raft.c) */
	struct raft *raft;      /* NULL: corrupt or read-only */
	uint64_t hs_term, hs_vote; /* stored in the shard's HARDSTATE */
	uint64_t snap_term;     /* term at flushed_index (0: not known) */
	uint64_t rsnap_index;   /* the group was told: compacted to here */
	struct raft_entry *rlog; /* durable entries not applied yet, owned:
				  * rlog[0..rlog_n); rlog_head slots before
				  * rlog[0] are dropped ones of the same
				  * allocation (rlog_cap slots, part_raft.c) */
	uint64_t rlog_first, rlog_n, rlog_cap, rlog_head;
	uint64_t rlog_bytes;    /* payload bytes held in rlog */
	struct rlog_chunk *rchunk; /* rlog's current payload chunk (part_raft.c) */
	const struct engine_cluster *cl; /* the engine's (set at raft open) */
	bool ready_out;         /* a ready is out: not advanced yet */
	bool wal_wait;          /* ... its entries await their WAL batch */
	uint64_t hs_wait;       /* ... its term/vote await this HARDSTATE
				   store generation (0: none) */
	/* replication (log/part_raft.c, log/part_repl.c) */
	const struct raft_msg *out_msgs; /* the out ready's messages: sent
					    when its batch is durable */
	uint32_t out_n;
	struct req *rin_head, *rin_tail; /* inbound messages not stepped yet */
	uint32_t pend_ticks;    /* ticks not given to the group yet */
	/* the nodes whose links went down, not told to the group yet (each
	 * once; only members of its configuration, so never more than
	 * RAFT_MAX_MEMBERS): one slot would lose the leader's when another
	 * link went down before the group ran, and a quiesced follower of a
	 * dead leader that is not told sleeps on as its follower for ever */
	uint64_t pend_down[RAFT_MAX_MEMBERS];
	uint32_t npend_down;
	/* the members whose link is down now (a link-down not yet followed
	 * by a link-up; part_repl.c): a message from one of them stepped
	 * after its link-down (sent before it, queued behind it) makes the
	 * group follow that node again, asleep if it was a QUIESCE
	 * heartbeat; repl_inputs then tells the core again (raft_leader_down) */
	uint64_t down[RAFT_MAX_MEMBERS];
	uint32_t ndown;
	uint64_t pend_xfer;     /* pe_raft_transfer's target, not tried yet */
	bool pend_wake;         /* a node's link went down or came up: a
				   quiesced leader wakes (part_repl.c) */
	uint32_t follow_wait;   /* ticks before the next leadership handoff */
	bool was_leader;
	bool snap_logged;
	/* membership changes (log/part_conf.c, contract item 12) */
	struct req *conf_req;   /* REQ_CONF queued, not proposed yet */
	struct req *conf_wait;  /* proposed at (index, term): awaits apply */
	bool conf_have;         /* conf_stored is the newest applied (or
				   stored) configuration, as of conf_index */
	uint64_t conf_index;
	struct raft_conf conf_stored;
	bool conf_unstored;     /* conf_stored is not yet in <data>/conf/<p>:
				   the next flush store writes it first */
	/* the flush store's copy (set on the shard before HJOB_FLUSH_STORE,
	 * written by the flush worker before the manifest) */
	bool fconf;
	uint64_t fconf_index;
	struct raft_conf fconf_c;
	struct raft_conf conf_pubbed; /* last published (shard thread) */
	_Atomic uint64_t pub_conf_seq; /* seqlock: odd while writing */
	_Atomic uint64_t pub_conf_n;   /* members */
	_Atomic uint64_t pub_conf_ids[RAFT_MAX_MEMBERS];
	_Atomic uint64_t pub_conf_roles[RAFT_MAX_MEMBERS];
	/* catch-up by snapshot (log/part_snap.c) */
	struct snap_out *snap_out; /* leader: the image followers are sent */
	struct snap_in *snap_in;   /* follower: the snapshot being received */
	bool snap_want;            /* the core asked for a snapshot it lacks */
	bool snap_img_busy;        /* leader: an image job runs */
	struct snap_out *snap_img; /* leader: an image job's, not taken yet */
	bool snap_wait;            /* follower: a ready waits for its chunk's
				      store job (ready_out) */
	struct raft_ready *snap_rd; /* that ready, resumed by part_raft_run
				       once the store is back ... */
	int snap_rc;               /* ... with its result (part_snap_persist) */
	_Atomic uint64_t pub_snap_started, pub_snap_done, pub_snap_failed,
		pub_snap_sent, pub_snap_recv, pub_snap_installed,
		pub_snap_install_failed;
	/* WAL records found damaged at open and taken as placeholders, and
	 * entries repaired from the leader (part_raft_recover_damaged);
	 * placeholders the log dropped unrepaired because a later entry
	 * superseded them at their index (rlog_truncate:
	 * nothing to repair). Once a node settles, found = repaired +
	 * superseded; a placeholder neither repaired nor superseded is an
	 * entry the node still lacks. */
	_Atomic uint64_t pub_damaged_found, pub_damaged_repaired,
		pub_damaged_superseded;
	/* A lost range (a damaged WAL record header, wal_recovery.lost;
	 * part_raft_recover_lost): lost_seen once one was met; after_lost
	 * while no record since has proved that the recovered log goes on
	 * where it stands (lost_admit); lost_cut once a record was
	 * discarded. lost: set at open from lost_seen, until the group
	 * holds its leader's whole log again (raft_set_lost); counted once
	 * in pub_damaged_found, and in _repaired when it clears. */
	bool lost_seen, after_lost, lost_cut, lost;
	uint64_t term_start;    /* leader: index of its term's no-op */
	/* linearizable reads in flight (log/part_repl.c), in arrival order;
	 * the last read context used and the ticks seen */
	struct req *ri_head, *ri_tail;
	uint64_t ri_ctx, ri_now;
	_Atomic uint64_t pub_role, pub_term, pub_leader, pub_commit,
		pub_applied, pub_last, pub_snap_needed, pub_dropped,
		pub_writable;
	/* leader's view of its members (pe_raft_status.members): id, match,
	 * flags (PE_MEMBER_*); pub_n_mem 0 when not leading. Each slot is
	 * published on its own, so a reader may see members of two
	 * consecutive publishes: each value is one the leader held. */
#define PE_MEMBER_ACTIVE 0x1u
#define PE_MEMBER_VOTER 0x2u
#define PE_MEMBER_SNAPSHOT 0x4u
	_Atomic uint64_t pub_mem_id[RAFT_MAX_MEMBERS],
		pub_mem_match[RAFT_MAX_MEMBERS];
	_Atomic uint32_t pub_mem_flags[RAFT_MAX_MEMBERS];
	_Atomic uint32_t pub_n_mem;
	_Atomic uint64_t pub_elections, pub_ri_served, pub_ri_failed;
	_Atomic uint64_t pub_down_retold; /* pe_raft_status.down_retold */
	_Atomic bool pub_quiesced;
	struct part *rnext;     /* shard's ready_open / ready_flight list */
	bool in_dirty;          /* on the shard's dirty list */
	struct part *dnext;
	struct req *prop_head, *prop_tail; /* appends/deletes not yet proposed */
	struct req *wait_head, *wait_tail; /* proposals awaiting apply, by
					      index (log/part_wait.c) */
	struct stream **sbuckets;
	uint64_t nsb, nstreams;
	/* idempotency table (idem.c): an open-addressing index of 8-byte
	 * slots (hash tag | node id + 1) over a pool of node chunks */
	uint64_t *islots;
	uint64_t nislots, nidem;
	struct idem **ichunks;
	uint32_t nichunks, ichunk_cap;
	uint32_t inodes;        /* node ids handed out (the pool's high mark) */
	uint32_t ifree;         /* free nodes, linked by fnext */
	uint32_t ihead, itail;  /* the order list */
	/* the last idem_find that found no record, for the idem_link that
	 * follows it at apply: the key's hash, and the empty slot its probe
	 * ended at while islots is unchanged since (imod == ihint_mod) */
	uint64_t imod;          /* bumped on every change of islots */
	uint64_t ihint_mod, ihint_h, ihint_k;
	const struct stream *ihint_s;
	uint8_t ihint_prod[PE_PRODUCER_LEN];
	uint64_t idem_clock;    /* largest APPEND timestamp applied (idem.c) */
	uint64_t mem_bytes;     /* applied entries */
	uint64_t pending_bytes; /* proposed, not yet applied */
	uint64_t nentries;
	/* the chunks entries are carved from (log/memtable.c): the one being
	 * filled and at most one empty spare */
	struct mchunk *mcur, *mspare;
	/* history tier */
	struct hpart *hist;
	uint64_t flushed_index; /* log index covered by committed history */
	enum part_flush_state flush_st;     /* history/hist_job.c draws */
	enum part_compact_state compact_st; /* both state machines */
	struct hpart_fjob *fjob;
	struct fsrc *fsrc;
	struct hpart_cjob *cjob;
	struct hman *cman;      /* compaction's new manifest, being stored by
				   the worker (COMPACT_STORING) */
	struct hman *fman;      /* the flush lane's, likewise (FLUSH_STORING);
				   with no fjob: the flushed index alone */
	bool compact_all;       /* the running compaction merges everything */
	int flush_rc, compact_rc; /* worker's results, read after REQ_HIST_DONE */
	struct req *fwait_cur, *fwait_next; /* pe_flush_sync waiters */
	struct req *cwait_cur, *cwait_next; /* pe_compact_sync waiters */
	bool cnext_all;
	uint64_t flushes, compactions;
};

enum req_kind {
	REQ_APPEND = 1,
	REQ_READ,
	REQ_META,
	REQ_SUBSCRIBE,
	REQ_RESUME,
	REQ_UNSUBSCRIBE,
	REQ_STATUS,
	REQ_LIST,
	REQ_STOP,
	REQ_DELETE,    /* goes through the WAL like an append */
	REQ_HIST_DONE, /* a history worker finished a job (from == kind) */
	REQ_FLUSH,
	REQ_COMPACT,
	REQ_RAFT,      /* one inbound Raft message (log/part_repl.c) */
	REQ_TICK,      /* a Raft tick for every group of the shard */
	REQ_NODE,      /* node liveness or a transfer: from = the node id,
			  index = its enum node_event */
	REQ_READ_DONE, /* a history read came back from the read pool
			  (history/hist_read.c); out = its struct hread */
	REQ_SUB_READ_DONE, /* a tail's history chunk came back from the
			      read pool; out = its struct hsubread */
	REQ_HS_DONE,   /* a HARDSTATE store finished (log/part_raft.c):
			  index = its generation, from = -result */
	REQ_CONF,      /* a membership change (log/part_conf.c): from = the
			  node, limit = the raft_conf_op */
	REQ_SNAP_DONE, /* a snapshot job came back from the read pool
			  (log/part_snap.c); out = its struct snap_job */
};

/* What a REQ_NODE says about its node (part_repl.c part_repl_node). */
enum node_event {
	NODE_EV_DOWN = 0,     /* its link went down */
	NODE_EV_UP = 1,       /* its link came up */
	NODE_EV_TRANSFER = 2, /* hand every group this node leads to it */
	NODE_EV_TRANSFER_ONE = 3, /* ... only partition req.part's group */
};

struct req {
	enum req_kind kind;
	struct req *next;
	uint32_t part;
	uint64_t index, term;   /* APPEND/DELETE: where it was proposed */
	uint64_t t_enq, t_shard; /* APPEND/DELETE: enqueued, taken (mono ns) */
	void *arg;
	union {
		pe_append_cb append;
		pe_read_cb read;
		pe_delete_cb del;
		pe_conf_cb conf;
		void (*generic)(void *arg);
	} cb;
	struct pe_sub *sub;
	/* READ / META / LIST / STATUS */
	uint64_t from;
	uint32_t limit;
	enum pe_dir dir;
	void *out;
	/* READ with pe_read_req.linearizable (log/part_repl.c, ReadIndex):
	 * its state, the read's context, the index to serve it at once
	 * applied, and the tick by which it must be confirmed */
	uint8_t ri_linear, ri_state;
	uint64_t ri_ctx, ri_index, ri_deadline;
	/* APPEND: encoded command; READ/META: key */
	uint32_t mem_estimate;
	uint32_t len;
	uint8_t klen;
	bool pooled;            /* from parley_pool_alloc (pe_append) */
	uint8_t data[];
};

/* A stage histogram (pe_stage_stats): one writer (the shard thread), so
 * plain relaxed loads and stores, no read-modify-write. */
struct stage_hist {
	_Atomic uint64_t count, sum_ns, max_ns;
	_Atomic uint64_t b[PE_HIST_BUCKETS];
};
void stage_hist_add(struct stage_hist *h, uint64_t ns);

/* A job of the engine's read pool (history/hist_read.c): history reads,
 * HARDSTATE stores and snapshot file work (log/part_snap.c). run on a pool thread; drop when the pool stops before
 * running it (pe_abort). */
struct rpool_job {
	struct rpool_job *next;
	void (*run)(struct rpool_job *j);
	void (*drop)(struct rpool_job *j);
};
struct rpool {
	pthread_t *threads;
	uint32_t n;             /* threads running */
	bool inited, stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rpool_job *head, *tail;
	uint64_t queued;
};

struct shard {
	struct pe_engine *e;
	uint32_t idx;
	uint32_t lost_parts;    /* partitions with part->lost: while any, the
				   WAL keeps its lost ranges (wal_release_damaged) */
	pthread_t thread;
	bool started;
	bool done;              /* stepped: the loop ended (clean stop) */
	struct pio_ring *ring;
	struct wal *wal;

	pthread_mutex_t mu;     /* guards the inbox */
	struct req *in_head, *in_tail;
	uint32_t in_count;
	/* shard thread only: a request was pushed by this thread itself (a
	 * callback's append) since the inbox was last drained; it did not
	 * wake the ring, so this round must not sleep (shard_round) */
	bool self_pushed;
	bool sent;              /* cl.send called since the last cl.flush */

	struct req *backlog, *backlog_tail; /* drained but not yet processed */
	struct pe_sub *catchup;
	struct part *ready_open;   /* groups whose ready is in the open batch */
	/* ... in the batches being written (WAL_FLIGHT_MAX at most), oldest
	 * first: ready_fl[(fl_head + k) % WAL_FLIGHT_MAX], k < fl_n, with the
	 * time each was submitted at */
	struct part *ready_fl[WAL_FLIGHT_MAX];
	uint64_t fl_submit_ns[WAL_FLIGHT_MAX];
	uint32_t fl_head, fl_n;
	struct part *dirty;        /* groups with proposals to make */
	bool hs_dirty;             /* open: HARDSTATE to store before advancing */
	/* live HARDSTATE stores (log/part_raft.c): generations asked for and
	 * durable; one store in flight at a time */
	uint64_t hs_want, hs_done;
	bool hs_flight;
	/* history reads in the read pool (history/hist_read.c) */
	uint32_t rd_inflight;
	struct req *rd_wait, *rd_wait_tail; /* reads waiting for a slot */
	struct pe_sub *sub_wait, *sub_wait_tail; /* tails waiting for one */
	struct bcache *cache;   /* decompressed history blocks, this shard's */
	uint64_t wal_rolls;     /* WAL segments rolled, last seen */
	uint64_t next_tick_ms;  /* periodic retention compaction */
	bool stopping;
	int fatal;

	atomic_uint_fast64_t n_appends, n_entries;
	/* pe_memory(): published by the shard after each durable batch and
	 * history commit; queued_bytes counts requests in inbox + backlog */
	_Atomic uint64_t mem_pub, idem_pub, queued_bytes, maxp_pub;
	_Atomic uint64_t pend_pub; /* proposed since the last publish */
	struct stage_hist hist[PE_STAGE_COUNT]; /* written by this shard only */
	uint64_t snap_tokens, snap_tok_ns; /* snapshot send throttle
					     (log/part_snap.c) */
	uint32_t snap_jobs;        /* snapshot jobs in the read pool whose
				      completion is not back yet */
	uint64_t durable_submit_ns; /* the batch that became durable last was */
};

/* A history worker thread: runs flush and compaction jobs off the shards.
 * Two per engine: flushes never queue behind a (throttled) compaction. */
enum hist_worker {
	HW_FLUSH = 0,   /* flushes: never queue behind a throttled compaction */
	HW_COMPACT = 1, /* compactions, their manifest stores, file removals */
	HW_COUNT
};
enum hist_job_kind {
	HJOB_FLUSH = 1,         /* hpart_flush_run; handed back */
	HJOB_COMPACT = 2,       /* hpart_compact_run; handed back */
	HJOB_REMOVE_FILES = 3,  /* unlink a compaction's inputs; not handed back */
	HJOB_COMPACT_STORE = 4, /* hpart_compact_store; handed back */
	HJOB_FLUSH_STORE = 5,   /* hpart_flush_store / hpart_store; handed back */
	HJOB_REMOVE_DICTS = 6,  /* unlink retired dictionaries; not handed back */
};
struct hjob {
	struct hjob *next;
	uint32_t part;
	enum hist_job_kind kind;
	uint64_t *ids;          /* kind 3: segment files to remove */
	size_t nids;
};
struct hworker {
	struct pe_engine *e;
	pthread_t thread;
	bool started, stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct hjob *head, *tail;
};

/* Replication settings (pe_options.cluster, copied at open). */
struct engine_cluster {
	bool on;                /* pe_options.cluster was given */
	uint64_t node_id;       /* this node in its groups (1 without a cluster) */
	struct raft_conf conf;  /* every group's voters */
	uint32_t election_ticks, heartbeat_ticks;
	uint32_t quiesce_ticks; /* 0: never (pe_cluster.quiesce_ticks) */
	uint64_t log_keep_bytes;
	uint64_t snapshot_rate_bytes; /* 0 = unlimited */
	pe_raft_send_fn send;
	void *send_arg;
	pe_raft_flush_fn flush; /* NULL: send wakes the transport itself */
	bool follow0;           /* pe_cluster.follow_partition0 */
	_Atomic uint64_t *lead0; /* partition 0's published leader */
};

struct pe_engine {
	struct pe_options opt;
	struct engine_cluster cl;
	_Atomic uint64_t status_gen; /* pe_raft_status_gen */
	struct hworker hw[HW_COUNT];
	struct rpool rpool;     /* history reads, HARDSTATE stores, snapshots */
	struct retention_policy retention;
	struct retention_rule *rules;
	char dir[512];
	struct pio *io;
	bool own_io;
	bool locked;            /* holds the data directory's LOCK */
	int64_t lock_token;
	uint32_t nparts, nshards;
	uint64_t idem_window_ms;
	uint32_t idem_max;
	struct part *parts;
	struct shard *shards;
	atomic_bool closing;
	atomic_bool aborting;
	/* Stepped execution (pe_open_stepped, engine/step.c; the simulator):
	 * step.pick set = no engine thread at all; the caller's thread runs
	 * every shard round, WAL prep unit and history job, in the order
	 * step.pick chooses, from pe_step and the blocking wrappers. */
	struct pe_stepper step;
};

#define RING_DEPTH 64u /* a shard's io_uring ring entries */

/* ---- shapes shared between the engine's files ------------------------------- */

/* Applies a durable record (live path and recovery). */
struct apply_ctx {
	struct shard *sh;
	bool live;
};

struct meta_out {
	int err;
	struct pe_meta meta;
};

/* LIST copies every stream key + meta into one buffer:
 * repeated { u8 klen | key | u64 first | u64 last | u64 last_ts }. */
struct list_out {
	int err;
	uint8_t *buf;
	size_t len;
};

/* ---- functions shared between the engine's files, by file ------------------- */

/* log/memtable.c */
uint64_t mentry_cost(uint32_t len);
struct stream *stream_get(struct part *p, const uint8_t *key, uint8_t klen, bool create);
struct mentry *stream_at(const struct stream *s, uint64_t seq);
void mentry_to_pe(const struct mentry *m, struct pe_entry *o);
/* Entry chunks (memtable.c): an entry of at most MEM_CHUNK_ENTRY_MAX
 * bytes with its header is carved from a MEM_CHUNK_BYTES chunk of its
 * partition (mentry_in_chunk; never in AddressSanitizer builds). */
#define MEM_CHUNK_BYTES (1u << 20)
#define MEM_CHUNK_ENTRY_MAX (MEM_CHUNK_BYTES / 16)
bool mentry_in_chunk(uint32_t len);
struct mentry *mentry_alloc(struct part *p, uint32_t len);
void mentry_free(struct part *p, struct mentry *m);
struct stream *stream_lookup(struct part *p, const uint8_t *key, uint8_t klen, bool create);
struct stream *stream_lookup_hashed(struct part *p, const uint8_t *key, uint8_t klen,
				    uint64_t h, bool create);
void stream_drop_through(struct part *p, struct stream *s, uint64_t through);
void part_free_state(struct part *p);

/* log/idem.c */
struct idem *idem_find(struct part *p, const struct stream *s, const uint8_t *producer);
uint64_t idem_hash_key(uint64_t key_hash, const uint8_t *producer);
void idem_prefetch(const struct part *p, uint64_t h);
struct idem *idem_find_hashed(struct part *p, const struct stream *s,
			      const uint8_t *producer, uint64_t h);
void idem_advance(struct part *p, uint64_t ts);
void idem_expire(struct part *p);
int idem_reserve(struct part *p);
void idem_link(struct part *p, struct stream *s, const uint8_t *producer, uint64_t seq, uint32_t count, uint64_t ts);
const struct idem *idem_first(const struct part *p);
const struct idem *idem_next(const struct part *p, const struct idem *i);
void idem_free(struct part *p);
int idem_rebuild(struct part *p);
struct seg_idem;
int idem_load_record(struct part *p, const struct seg_idem *rec);
uint64_t idem_history_clock(struct part *p);

/* log/part_apply.c */
void part_mark_corrupt(struct part *p, const char *fmt_file, uint64_t off, const char *why);
int part_apply(struct part *p, uint64_t index, uint64_t term, uint16_t kind, const uint8_t *body, size_t len, struct part_apply_res *res);
/* Looking ahead (part_apply.c, "looking ahead"): part_apply_look hashes a
 * command's keys and prefetches what applying it reads first, keeping the
 * hashes in *h; part_apply_look2, called later (the first loads have
 * arrived), prefetches the stream, and part_apply_look3, later still,
 * the memtable slot the command's first entry takes; part_apply_hinted is part_apply using
 * h's hashes when h was made from this body (else it computes them).
 * Hints never change the outcome, only which loads are already done. */
struct part_apply_hint {
	const uint8_t *body;    /* the body it was made from; NULL = none */
	size_t len;
	uint64_t kh, ih;        /* parley_hash_key(key), idem_hash_key(kh, producer) */
	bool idem;              /* the producer is not all zero */
};
void part_apply_look(const struct part *p, uint16_t kind, const uint8_t *body, size_t len, struct part_apply_hint *h);
void part_apply_look2(const struct part *p, const struct part_apply_hint *h);
void part_apply_look3(const struct part *p, const struct part_apply_hint *h);
int part_apply_hinted(struct part *p, uint64_t index, uint64_t term, uint16_t kind, const uint8_t *body, size_t len, const struct part_apply_hint *h, struct part_apply_res *res);
/* The look-ahead schedule over n commands applied in order, the i-th
 * given by get: part_ahead_init looks at the first ones; before applying
 * command k (k = 0, 1, ... in order), part_ahead_next runs the stages for
 * the commands after it (stage 1 for k + PART_AHEAD, 2 for k + 2, 3 for
 * k + 1) and returns k's hint, valid until the next call. */
#define PART_AHEAD 3u
typedef void (*part_cmd_get_fn)(void *arg, uint32_t i, uint16_t *kind, const uint8_t **body, size_t *len);
struct part_ahead {
	struct part_apply_hint h[PART_AHEAD + 1];
	part_cmd_get_fn get;
	void *arg;
	uint32_t n;
};
void part_ahead_init(struct part_ahead *a, const struct part *p, uint32_t n, part_cmd_get_fn get, void *arg);
const struct part_apply_hint *part_ahead_next(struct part_ahead *a, const struct part *p, uint32_t k);
/* A hash of the partition's replicated state as the memtable holds it
 * (streams by key with their entries, the idempotency table, last applied
 * index and term): equal states, equal hashes. */
int part_state_hash(const struct part *p, uint64_t *out);

/* log/part_raft.c */
int part_raft_recover(struct part *p, const struct wal_rec *rec);
void part_raft_recover_lost(struct part *p, const char *file, uint64_t off,
			    uint64_t end);
int part_raft_recover_damaged(struct part *p, const struct wal_rec *rec,
			      bool replicated);
int part_raft_hs_load(struct pe_engine *e, struct shard *sh);
int part_raft_open(struct pe_engine *e, struct part *p);
int part_raft_run(struct shard *sh, struct part *p, bool live, bool propose);
int part_raft_run_inputs(struct shard *sh, struct part *p);
bool part_raft_idle(const struct part *p);
void part_raft_durable(struct part *p);
int part_raft_hs_done(struct shard *sh, struct req *r);
void part_raft_compact(struct part *p);
int part_raft_elect(struct shard *sh);
void part_raft_free(struct part *p);
void part_raft_apply_recovered(struct shard *sh, struct part *p);
void part_raft_publish(struct part *p);
int part_raft_read_check(struct part *p);
void part_raft_close(struct shard *sh);

/* log/part_conf.c */
int part_conf_load(struct pe_engine *e, struct part *p);
int part_conf_write(struct pio *io, const char *datadir, uint32_t part,
		    uint64_t index, const struct raft_conf *conf);
void part_conf_set(struct part *p, uint64_t index, const struct raft_conf *c);
bool part_conf_stale(const struct part *p, uint64_t index);
void part_conf_flush_begin(struct part *p);
int part_conf_flush_write(struct pe_engine *e, struct part *p);
void part_conf_flush_done(struct part *p, int rc);
const struct raft_conf *part_conf_boot(const struct part *p);
void part_conf_req(struct shard *sh, struct req *r);
uint64_t part_conf_propose(struct part *p);
void part_conf_applied(struct shard *sh, struct part *p,
		       const struct raft_entry *e, bool live);
void part_conf_fail(struct part *p, uint64_t above, int err);
bool part_conf_msg_ok(const struct part *p, const struct raft_msg *m);
void part_conf_publish(struct part *p);

/* log/part_repl.c */
void part_repl_recv(struct shard *sh, struct req *r);
void part_repl_tick(struct shard *sh, struct req *r);
void part_repl_node(struct shard *sh, struct req *r);
/* Node `node`'s link is down as far as p's shard was told (a link-down
 * not followed by a link-up; only members of p's group). */
bool part_repl_down(const struct part *p, uint64_t node);
const struct raft_msg *part_repl_msg(const struct req *r);
bool part_repl_read(struct shard *sh, struct req *r);
void part_repl_reads_issue(struct shard *sh, struct part *p);
void part_repl_reads_ready(struct shard *sh, struct part *p,
			   const struct raft_read *reads, uint32_t n);
void part_repl_reads_close(struct part *p);
int engine_cluster_init(struct pe_engine *e, const struct pe_cluster *c);

/* log/part_snap.c */
struct snap_out;
struct snap_in;
int part_snap_open(struct pe_engine *e, struct part *p);
void part_snap_free(struct part *p);
void part_snap_partial(const struct part *p, struct raft_snapshot_meta *meta, uint64_t *bytes);
int part_snap_read(struct part *p, uint64_t off, void *buf, uint32_t len);
int part_snap_image(struct part *p, struct raft_snapshot_meta *out);
void part_snap_image_taken(struct part *p, bool ok);
bool part_snap_pinned(struct part *p);
void part_snap_release(struct part *p, const char *why);
void part_snap_tick(struct part *p);
void part_snap_sent(struct part *p, const struct raft_msg *m, uint32_t n);
void part_snap_inbound(struct part *p, const struct raft_msg *m);
bool part_snap_step_ok(const struct part *p, const struct raft_msg *m);
#define PART_SNAP_PENDING 2 /* part_snap_persist: a store job has the chunk */
int part_snap_persist(struct shard *sh, struct part *p, const struct raft_ready *rd);
void part_snap_done(struct shard *sh, struct req *r);
void part_snap_job_free(struct req *r);
bool part_snap_busy(const struct part *p);

/* log/part_wait.c */
void part_wait_push(struct part *p, struct req *r);
struct req *part_wait_take(struct part *p, uint64_t index, uint64_t term, struct req **lost);
struct req *part_wait_take_after(struct part *p, uint64_t index);

/* log/sub.c */
void sub_free(struct pe_sub *sub);
void sub_start(struct shard *sh, struct pe_sub *sub);
void sub_run_catchup(struct shard *sh);
void sub_notify(struct shard *sh, struct stream *s);
void sub_detach(struct shard *sh, struct pe_sub *sub);
void sub_hist_deliver(struct shard *sh, struct pe_sub *sub, int rc,
		      const struct pe_entry *batch, uint32_t n, uint64_t below);

/* log/shard.c */
uint64_t engine_clock(struct pe_engine *e);
uint64_t engine_mono_ns(struct pe_engine *e);
int shard_push(struct pe_engine *e, struct req *r);
uint32_t shard_push_chain(struct pe_engine *e, uint32_t shard, struct req *head);
uint64_t shard_answer(struct shard *sh, struct part *p, struct req *r, int rc, const struct part_apply_res *res, uint64_t t0);
void shard_fail_chain(struct shard *sh, struct req *r, int err);
int shard_wal_sync(struct shard *sh);
void shard_mark_dirty(struct shard *sh, struct part *p);
uint64_t shard_publish_mem(struct shard *sh);
uint64_t shard_recover_flushed(void *arg, uint32_t part);

/* Memory one idempotency key costs (pe_memory, pe_idem_key_bytes). */
#define IDEM_KEY_BYTES (sizeof(struct idem) + 3u * sizeof(uint64_t)) /* node + index slots at the lowest load (idem.c) */
int shard_apply_record(void *arg, const struct wal_rec *rec);
int shard_recover_damaged(void *arg, const struct wal_rec *rec);
int shard_recover_lost(void *arg, const char *file, uint64_t off, uint64_t end);
void shard_recover_corrupt(void *arg, int64_t partition, const char *file, uint64_t off, const char *why);
void *shard_main(void *arg);
void shard_begin(struct shard *sh);
int shard_round(struct shard *sh, bool wait);
void shard_end(struct shard *sh);

/* log/shard_req.c */
void shard_req_fail(struct req *r, int err);
bool shard_req_append(struct shard *sh, struct req *r, uint64_t now);
void shard_req_read(struct shard *sh, struct req *r);
void shard_req_meta(struct shard *sh, struct req *r);
void shard_req_status(struct shard *sh, struct req *r);
void shard_req_list(struct shard *sh, struct req *r);
void shard_req_subscribe(struct shard *sh, struct req *r);
void shard_req_resume(struct shard *sh, struct req *r);
void shard_req_unsubscribe(struct shard *sh, struct req *r);

/* history/hist_job.c */
void hist_job_fsrc_free(struct fsrc *f);
void hist_job_done(struct shard *sh, struct req *r);
void hist_job_flush_req(struct shard *sh, struct req *r);
void hist_job_compact_req(struct shard *sh, struct req *r);
int hist_job_flush_part(struct shard *sh, struct part *p);
void hist_job_wal_release(struct shard *sh);
void hist_job_maybe_flush(struct shard *sh);
bool hist_job_busy(struct shard *sh);
void hist_job_tick(struct shard *sh);
int hist_job_tick_timeout(struct shard *sh);
int hist_workers_start(struct pe_engine *e);
void hist_workers_stop(struct pe_engine *e);
bool hworker_step(struct pe_engine *e, int i); /* stepped: one job */

/* open.c, step.c */
int engine_open(const struct pe_options *opt, const struct pe_stepper *st,
		struct pe_engine **out);
/* stepped: runs the engine until every shard's loop ended (pe_close) */
void engine_step_stop(struct pe_engine *e);

/* history/hist_read.c */
int rpool_start(struct rpool *p, uint32_t nthreads);
void rpool_push(struct rpool *p, struct rpool_job *j, bool urgent);
void rpool_stop(struct rpool *p);
bool hist_read_async(const struct shard *sh);
int hist_read_dispatch(struct shard *sh, struct req *r, struct part *p, struct stream *s);
void hist_read_wait(struct shard *sh, struct req *r);
void hist_read_done(struct shard *sh, struct req *r);
void hist_read_free(struct req *r);
int hist_read_sub(struct shard *sh, struct pe_sub *sub, struct part *p,
		  struct stream *s, uint32_t want);
void hist_read_sub_done(struct shard *sh, struct req *r);
void hist_read_sub_wait(struct shard *sh, struct pe_sub *sub);

/* open.c */
int part_hist_open(struct pe_engine *e, struct shard *sh, struct part *p);

/* manifest.c */
int manifest_read(struct pe_engine *e, bool *exists);
int manifest_write(struct pe_engine *e);

/* api.c */
bool api_key_ok(const void *key, size_t klen);
/* Frees any request: pe_append's come from the calling thread's block
 * pool (parley_common.h) and go back to it, the rest are malloc'd. Every
 * free of a request that may be an append or a delete goes through here. */
void api_req_free(struct req *r);
struct req *api_key_req(struct pe_engine *e, enum req_kind kind, const void *key, size_t klen);
/* A zeroed request of `kind` for partition `part` (no key), or NULL. */
struct req *api_part_req(enum req_kind kind, uint32_t part);
#endif /* PARLEY_ENGINE_INTERNAL_H */
