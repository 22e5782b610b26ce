/*
 * sim.h — the deterministic cluster simulator for the Raft core.
 *
 * N nodes (struct raft + a simulated disk + a tiny replicated state machine)
 * run in one thread from one seed. Everything nondeterministic — message
 * delays, loss, duplication, reordering, partitions, crashes, torn writes,
 * bit flips, fsync errors, clock skew and jumps, client behaviour — comes
 * from one splitmix64 stream seeded by the test, so a seed replays bit for
 * bit (PARLEY_SIM_SEED=<n> overrides the seed of a test).
 *
 * Time: one global clock in "units" (10 units = one nominal Raft tick); each
 * node ticks at its own skewed rate and may jump.
 *
 * The state machine mirrors parley's engine semantics: an entry carries
 * (producer, producer seq, stream); at apply the stream assigns the next
 * dense seq, and a retried (producer, producer seq) gets its original seq.
 *
 * Invariants checked after every step (a step = one delivered message, one
 * node tick, one client action or one fault), see sim_check():
 *   S1 at most one leader per term
 *   S2 log matching: one (index, term) names one entry (checksum) on every
 *      node, at every persist
 *   S3 leader completeness: a new leader holds every entry applied anywhere
 *   S4 state-machine safety: every node applies the same entry at an index
 *   S5 no acknowledged proposal lost: an acked key is applied at its index on
 *      every node that gets there, with its acked seq
 *   S6 per-stream seqs dense and stable: (stream, seq) names one key
 *   S7 a key (first try or any retry, on any node, after any failover) gets
 *      one seq ever, and a retry is answered with the original seq
 *   S8 a confirmed linearizable read's index covers every write acked before
 *      the read was issued
 * and at the end (sim_finish): faults stopped, partitions healed, every node
 * restarted -> a leader is elected and a new proposal commits on every member
 * within a bounded number of ticks (liveness), and every acked write is in
 * every node's state machine.
 *
 * A violation prints the seed and the step and exits 1.
 */
#ifndef PARLEY_SIM_H
#define PARLEY_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "raft.h"

#define SIM_MAX_NODES 9
#define SIM_UNITS_PER_TICK 10

struct sim_faults {
	uint32_t loss_pct;        /* message loss, percent */
	uint32_t dup_pct;         /* duplication */
	uint32_t delay_max;       /* units; reordering comes from random delays */
	uint32_t crash_ppm;       /* per unit, per cluster: crash a node (mid-persist) */
	uint32_t restart_ppm;     /* per unit: restart a crashed node */
	uint32_t partition_ppm;   /* per unit: new partition (isolate/one-way/split/bridge) */
	uint32_t heal_ppm;        /* per unit: heal all partitions */
	uint32_t flip_ppm;        /* per unit: flip a bit in a stored entry (minority) */
	uint32_t eio_ppm;         /* per persist, x1e-6: fsync EIO (node crashes) */
	uint32_t torn_pct;        /* on crash mid-persist: the cut record is torn */
	uint32_t jump_ppm;        /* per unit: a node's clock jumps or pauses */
	uint32_t conf_ppm;        /* per unit: membership change */
	uint32_t transfer_ppm;    /* per unit: leader transfer */
	uint32_t skew_pct;        /* clock rate spread, percent */
};

struct sim_opts {
	uint64_t seed;
	uint32_t nodes;            /* founding voters */
	uint32_t groups;           /* 1, or many for the quiescing scenario */
	uint32_t clients;          /* producers */
	uint32_t client_ppm;       /* per unit: a client acts */
	uint32_t read_ppm;         /* per unit: a linearizable read */
	uint32_t snapshot_every;   /* applied entries between snapshots (0 = never) */
	uint32_t election_ticks, heartbeat_ticks;
	uint32_t quiesce_ticks;
	uint32_t max_inflight, max_batch;
	uint32_t chunk_bytes;
	uint32_t pad_bytes;        /* extra payload per entry (snapshot size) */
	bool pre_vote, check_quorum;
	bool persist_first;        /* send nothing before its ready is durable
				    * (default: a ready's n_early go first) */
	struct sim_faults f;
	bool quiet;
};

struct sim;

/* Default options (3 voters, moderate faults); tests override fields. */
void sim_default_opts(struct sim_opts *o, uint64_t seed);
/* Seed from PARLEY_SIM_SEED if set, else `dflt`. */
uint64_t sim_seed(uint64_t dflt);

struct sim *sim_new(const struct sim_opts *o);
void sim_free(struct sim *s);

/* Advance the world `units` units (faults and clients as configured). */
void sim_run(struct sim *s, uint64_t units);
/* Stop all faults, heal, restart every crashed node, then run until a leader
 * commits a fresh entry on every live member and all acked writes are in
 * every state machine; fails the run after max_ticks. Returns ticks taken. */
uint64_t sim_finish(struct sim *s, uint64_t max_ticks);

/* Scripted control for named scenarios. Node numbers are slots 0..n-1. */
int sim_leader(struct sim *s, uint32_t group);          /* slot or -1 */
int sim_wait_leader(struct sim *s, uint32_t group, uint64_t max_units);
void sim_crash(struct sim *s, int slot, bool mid_persist);
void sim_restart(struct sim *s, int slot);
bool sim_up(struct sim *s, int slot);
void sim_isolate(struct sim *s, int slot);               /* both ways */
void sim_cut(struct sim *s, int from, int to);           /* one way */
void sim_heal(struct sim *s);
void sim_set_faults(struct sim *s, const struct sim_faults *f);
void sim_clients(struct sim *s, uint32_t client_ppm);
/* Applied entries between snapshots (0 = no new snapshots). */
void sim_snapshots(struct sim *s, uint32_t every);
/* Flip a bit in node's stored entry at `index` (0 = a random committed
 * one); returns the index flipped or 0. */
uint64_t sim_flip(struct sim *s, int slot, uint64_t index);
/* The node's next fsync fails with EIO. */
void sim_eio_next(struct sim *s, int slot);
/* Defer persistence on a node: its next ready is written but not synced
 * and the node crashes with it (the unsynced writes are lost). */
void sim_lose_unsynced(struct sim *s, int slot);
int sim_propose_conf(struct sim *s, uint32_t op, int slot_or_new);
int sim_transfer(struct sim *s, int to_slot);
/* Issue a linearizable read on a node: returns ctx (0 = refused). */
uint64_t sim_read(struct sim *s, int slot);
/* Did the read with ctx complete (1), fail (-1) or is it pending (0)? */
int sim_read_done(struct sim *s, uint64_t ctx);
/* Propose directly on a node; returns 0 or a negative code. */
int sim_propose(struct sim *s, int slot);
uint64_t sim_commit(struct sim *s, int slot, uint32_t group);
uint64_t sim_applied(struct sim *s, int slot, uint32_t group);
struct raft *sim_raft(struct sim *s, int slot, uint32_t group);
uint32_t sim_nodes(struct sim *s);
/* Messages sent so far (all groups), steps so far, acked writes so far. */
uint64_t sim_msgs(struct sim *s);
uint64_t sim_steps(struct sim *s);
uint64_t sim_acked(struct sim *s);
uint64_t sim_snap_installs(struct sim *s);
uint64_t sim_repairs(struct sim *s);
uint64_t sim_now(struct sim *s);
void sim_dump(struct sim *s);
/* Propose a small opaque entry in group g on slot (multi-group tests). */
int sim_propose_raw(struct sim *s, int slot, uint32_t g);
uint64_t sim_partial_bytes(struct sim *s, int slot);
uint64_t sim_snap_index(struct sim *s, int slot);
uint64_t sim_reads_ok(struct sim *s);
uint64_t sim_reads_failed(struct sim *s);
uint64_t sim_resumed_chunks(struct sim *s);
uint64_t sim_torn_dropped(struct sim *s);
uint64_t sim_node_id(struct sim *s, int slot);
/* Messages sent before their ready was durable (raft.h 3a), and readies
 * whose node crashed in the persist after such a send. */
uint64_t sim_early_sent(struct sim *s);
uint64_t sim_early_lost(struct sim *s);
/* Commit-only APPENDs with RAFT_MSGF_NOACK delivered (their accepted ones
 * go unanswered: raft.h). */
uint64_t sim_noack_delivered(struct sim *s);
/* Fail the run (prints seed). */
void sim_fail(struct sim *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
void sim_log(struct sim *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif /* PARLEY_SIM_H */
