/*
 * ratelimit.h — token buckets per user and per connection, and admission
 * control for handshakes (private to server/).
 *
 * A pure module: no I/O, no clock, no randomness of its own. Callers pass
 * the monotonic time (ns) and, for jitter, a random value. Only the
 * counters are atomics, so /metrics can read them from any thread.
 *
 * Rate limits
 * -----------
 * Every limited request has a kind (enum ratelimit_kind). Each kind has
 * two buckets: one per connection (struct ratelimit_conn, embedded in the
 * connection, touched only by its loop thread, no lock) and one per user
 * (in a table shared by all loops). A request passes only when both
 * buckets hold a token; then it takes one from each. A refused request
 * takes nothing, so a connection that hammers its own limit does not
 * drain the user's other devices.
 *
 * A bucket with rate r tokens per minute and capacity (burst) b:
 *   level(t) = min(b, level(t0) + (t - t0) * r / 60 s)
 * computed exactly in integers: one token is TOKEN_UNIT = 60e9 units, and
 * (t - t0) in ns times r per minute is in the same unit. The retry-after
 * of a refused request is the exact time until one token is there,
 * rounded up to whole milliseconds (always >= 1 ms). Rate 0 = unlimited.
 *
 * Per-user table: why shards with a mutex each. A user's connections sit
 * on different loops (threads), so the user's buckets must be shared.
 * Sending each check to an owner thread would add a hop to every SEND;
 * lock-free buckets would still need a synchronised table for insertion
 * and eviction. A take holds a shard's mutex for a hash lookup and a few
 * integer operations (no I/O, no allocation); with RATELIMIT_SHARDS
 * shards and one loop per core, two loops rarely meet on one shard.
 *
 * Bounded memory: the table holds at most `max_users` users (config key
 * rate_users_max), split evenly across the shards, allocated once at
 * ratelimit_open. Each shard keeps its users in LRU order. A new user in
 * a full shard evicts the least recently used one. An evicted user whose
 * buckets had refilled completely (the common case: the LRU user is the
 * one idle the longest) loses nothing: a full bucket is what a new entry
 * starts with. Evicting a user whose buckets were not full forgets the
 * tokens they had spent, so they get a full burst early; such evictions
 * are counted (lossy_evictions) so an operator can see the table is too
 * small.
 *
 * Admission control
 * -----------------
 * At most `max_handshakes` connections across the server may be between
 * accept and AUTH_OK at once (TLS handshakes and JWT checks cost CPU). A
 * connection takes a slot when it is accepted, or, if none was free then,
 * when its HELLO arrives; it gives the slot back on AUTH_OK or close. A
 * HELLO without a slot is refused with a retry-after of base + a random
 * part in [0, base] (jitter spreads a reconnect storm's retries).
 *
 * Threads: ratelimit_take, admission_* are safe from any thread; a
 * struct ratelimit_conn belongs to one thread.
 */
#ifndef PARLEYD_RATELIMIT_H
#define PARLEYD_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ratelimit_kind {
	RATELIMIT_SEND = 0,     /* SEND, EDIT, DELETE, GROUP_* changes */
	RATELIMIT_HISTORY,      /* HISTORY, SYNC, RECEIPTS, READ_MARKER, GROUP_INFO,
				   GROUP_CATCHUP (reads of stored data) */
	RATELIMIT_TYPING,       /* TYPING */
	RATELIMIT_PRESENCE,     /* PRESENCE_SUB, PRESENCE_SET */
	RATELIMIT_NKINDS
};

#define RATELIMIT_SHARDS 64u
#define RATELIMIT_USER_MAX 120u        /* = PARLEY_PROTO_MAX_USER_ID */
#define RATELIMIT_USERS_MIN RATELIMIT_SHARDS
#define RATELIMIT_USERS_MAX (1u << 24)
#define RATELIMIT_RATE_MAX 6000000u    /* per minute: 100K/s */
#define RATELIMIT_BURST_MAX 1000000u

struct ratelimit_rate {
	uint32_t per_min; /* tokens added per minute; 0 = unlimited */
	uint32_t burst;   /* bucket capacity (>= 1 when per_min > 0) */
};

struct ratelimit_config {
	struct ratelimit_rate user[RATELIMIT_NKINDS];
	struct ratelimit_rate conn[RATELIMIT_NKINDS];
	uint32_t max_users; /* per-user table capacity, RATELIMIT_USERS_MIN.. */
};

/* One bucket. t_ns == 0: never used (full). */
struct ratelimit_bucket {
	uint64_t level; /* in units of 1/TOKEN_UNIT token */
	uint64_t t_ns;  /* time of `level` */
};

/* Per-connection buckets: zero-initialised = all full. */
struct ratelimit_conn {
	struct ratelimit_bucket b[RATELIMIT_NKINDS];
};

struct ratelimit;

/* Validates cfg; 0 or -PARLEY_EINVAL with a reason in why. */
int ratelimit_config_check(const struct ratelimit_config *cfg, char *why,
			   size_t whycap);
/* Allocates the table (max_users entries); 0, -PARLEY_EINVAL, -PARLEY_ENOMEM. */
int ratelimit_open(const struct ratelimit_config *cfg, struct ratelimit **out);
void ratelimit_close(struct ratelimit *rl);

/* Takes one token of kind k from the connection's and the user's bucket
 * at time now_ns (monotonic, > 0). Returns 0 when the request may go on,
 * or the milliseconds (>= 1) until it would pass; nothing is taken then.
 * conn or user (ulen 0) may be absent: only the other bucket counts. */
uint32_t ratelimit_take(struct ratelimit *rl, struct ratelimit_conn *conn,
			const char *user, size_t ulen, enum ratelimit_kind k,
			uint64_t now_ns);

/* Milliseconds until one token is in bucket b (0 = there now); a pure
 * helper, exposed for tests. */
uint32_t ratelimit_bucket_wait_ms(const struct ratelimit_rate *r,
				  const struct ratelimit_bucket *b,
				  uint64_t now_ns);

struct ratelimit_stats {
	uint64_t limited[RATELIMIT_NKINDS]; /* refused requests per kind */
	uint64_t users;                     /* entries in the table now */
	uint64_t evictions, lossy_evictions;
};
void ratelimit_stats(struct ratelimit *rl, struct ratelimit_stats *st);
const char *ratelimit_kind_name(enum ratelimit_kind k);

/* ---- admission control -------------------------------------------------- */

struct admission {
	_Atomic uint32_t in_progress; /* slots held */
	uint32_t max;                 /* max_handshakes; 0 = no bound */
	uint32_t retry_ms;            /* handshake_retry_ms: base retry-after */
	_Atomic uint64_t rejected;    /* HELLOs refused */
};

void admission_init(struct admission *a, uint32_t max, uint32_t retry_ms);
/* Takes a slot if one is free (and *held is false); returns *held. */
bool admission_enter(struct admission *a, bool *held);
/* Gives the slot back if *held. */
void admission_leave(struct admission *a, bool *held);
/* At HELLO: 0 = admitted (the slot is held), else the retry-after in ms
 * (retry_ms + rnd % (retry_ms + 1)) and the HELLO is to be refused. */
uint32_t admission_hello(struct admission *a, bool *held, uint64_t rnd);

#endif /* PARLEYD_RATELIMIT_H */
