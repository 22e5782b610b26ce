/*
 * engine_internal.h — the engine's private structures (engine/ only).
 *
 * Ownership map
 *   struct pe_engine   owns the shards, the partitions and the manifest.
 *   struct shard       one thread; owns its WAL, its io ring, its inbox and
 *                      every partition p with p % nshards == shard index.
 *                      Nothing else touches a partition's state.
 *   struct part        streams (hash table), idempotency table, counters.
 *   struct stream      the memtable of one stream: entries by seq, plus the
 *                      subscriptions tailing it.
 *   struct mentry      one entry, payload inline; immutable once applied.
 *   struct req         a request from any thread to a shard; allocated by
 *                      the caller in one piece, freed by the shard.
 *   struct hpart       (hpart.h) a partition's history tier: owned by the
 *                      partition, used only on its shard thread, except
 *                      that a flush or compaction job in flight is run by
 *                      a history worker thread (struct hworker) and handed
 *                      back to the shard (REQ_HIST_DONE) for its commit.
 *   struct fsrc        a frozen copy of the memtable's entry pointers for
 *                      one flush job; the entries it names are not freed
 *                      while the job is in flight (flush_busy).
 *
 * Log commands (WAL record types). Their bodies are what a Raft log entry
 * will carry; applying them is deterministic (timestamps come from the
 * command, idempotency expiry is measured in command time), so replaying the
 * log always rebuilds the same seqs.
 */
#ifndef PARLEY_ENGINE_INTERNAL_H
#define PARLEY_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "compact.h"
#include "hpart.h"
#include "io.h"
#include "parley_engine.h"
#include "wal.h"

#define CMD_APPEND 1u
#define CMD_DELETE 2u

/* DELETE body: u8 klen | key | u64 through (UINT64_MAX = whole stream as of
 * the moment the command applies). Applying it hides seq <= through at
 * once (memtable + hpart_mark_deleted); the mark becomes durable with the
 * next history commit, until then the WAL record is the durable copy. */

/* APPEND body: u8 klen | key | producer[16] | u64 ts | u64 expected |
 *              u32 count | count x (u16 type | u16 flags | u32 len | bytes) */
#define CMD_MAX_BYTES (2u << 20) /* one append command, all entries */

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

struct idem {
	struct idem *hnext;
	struct idem *fnext;     /* FIFO by insertion, for expiry and the cap */
	struct stream *st;
	uint64_t seq;
	uint64_t ts;
	uint32_t count;
	uint8_t producer[PE_PRODUCER_LEN];
};

struct part {
	uint32_t id;
	bool corrupt;
	char err[256];
	uint64_t last_index;    /* last applied log index */
	uint64_t next_index;    /* next index to propose */
	struct stream **sbuckets;
	uint64_t nsb, nstreams;
	struct idem **ibuckets;
	uint64_t nib, nidem;
	struct idem *ihead, *itail;
	uint64_t mem_bytes;     /* applied entries */
	uint64_t pending_bytes; /* proposed, not yet applied */
	uint64_t nentries;
	/* history tier */
	struct hpart *hist;
	uint64_t flushed_index; /* log index covered by committed history */
	bool flush_busy, compact_busy;
	struct hpart_fjob *fjob;
	struct fsrc *fsrc;
	struct hpart_cjob *cjob;
	struct hman *cman;      /* compaction's new manifest, being stored by
				   the worker (compact_storing) */
	bool compact_storing;   /* no other manifest store until installed */
	bool flush_deferred;    /* a finished flush waits for that install */
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
};

struct req {
	enum req_kind kind;
	struct req *next;
	uint32_t part;
	void *arg;
	union {
		pe_append_cb append;
		pe_read_cb read;
		pe_delete_cb del;
		void (*generic)(void *arg);
	} cb;
	struct pe_sub *sub;
	/* READ / META / LIST / STATUS */
	uint64_t from;
	uint32_t limit;
	enum pe_dir dir;
	void *out;
	/* APPEND: encoded command; READ/META: key */
	uint32_t mem_estimate;
	uint32_t len;
	uint8_t klen;
	uint8_t data[];
};

struct shard {
	struct pe_engine *e;
	uint32_t idx;
	pthread_t thread;
	bool started;
	struct pio_ring *ring;
	struct wal *wal;

	pthread_mutex_t mu;     /* guards the inbox */
	struct req *in_head, *in_tail;
	uint32_t in_count;

	struct req *backlog, *backlog_tail; /* drained but not yet processed */
	struct req **open_reqs, **flight_reqs;
	uint32_t open_n, flight_n, reqs_cap;
	struct pe_sub *catchup;
	struct bcache *cache;   /* decompressed history blocks, this shard's */
	uint64_t wal_rolls;     /* WAL segments rolled, last seen */
	uint64_t next_tick_ms;  /* periodic retention compaction */
	bool stopping;
	int fatal;

	atomic_uint_fast64_t n_appends, n_entries;
};

/* A history worker thread: runs flush and compaction jobs off the shards.
 * Two per engine: flushes never queue behind a (throttled) compaction. */
struct hjob {
	struct hjob *next;
	uint32_t part;
	int kind;               /* 1 flush, 2 compaction, 3 remove files,
				   4 store a compaction's manifest */
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

struct pe_engine {
	struct pe_options opt;
	struct hworker hw[2];   /* [0] flushes, [1] compactions */
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
};

#endif /* PARLEY_ENGINE_INTERNAL_H */
