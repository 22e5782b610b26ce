/*
 * test_part_apply.c — the partition state machine (engine/log/part_apply.c)
 * and its waiters (engine/log/part_wait.c), without an engine: commands
 * applied at (index, term) to a bare partition.
 *
 * Determinism: the same commands give the same state hash, applied to two
 * partitions side by side (a random sequence; the seed is printed and
 * PARLEY_SEED replays it); one changed command gives another hash.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_internal.h"

static struct part *part_new(uint64_t window_ms, uint32_t max)
{
	struct part *p = calloc(1, sizeof *p);
	cr_assert_not_null(p);
	p->cfg = (struct part_cfg){.idem_window_ms = window_ms, .idem_max = max};
	return p;
}

static void part_del(struct part *p)
{
	part_free_state(p);
	free(p);
}

static uint8_t g_body[4096];

static size_t append_cmd(const char *key, uint8_t prod, uint64_t ts,
			 uint64_t expected, const char *payload, uint32_t count)
{
	uint8_t producer[PE_PRODUCER_LEN] = {0};
	producer[0] = prod;
	struct pe_input in[8];
	for (uint32_t i = 0; i < count; i++)
		in[i] = (struct pe_input){.type = (uint16_t)i, .len = (uint32_t)strlen(payload),
					  .payload = payload};
	int64_t n = cmd_append_encode(g_body, sizeof g_body, key, strlen(key),
				      producer, ts, expected, in, count);
	cr_assert_gt(n, 0);
	return (size_t)n;
}

static size_t delete_cmd(const char *key, uint64_t through)
{
	int64_t n = cmd_delete_encode(g_body, sizeof g_body, key, strlen(key),
				      through);
	cr_assert_gt(n, 0);
	return (size_t)n;
}

static struct part_apply_res apply_ok(struct part *p, uint16_t kind, size_t len)
{
	struct part_apply_res r;
	int rc = part_apply(p, p->last_index + 1, 1, kind, g_body, len, &r);
	cr_assert_eq(rc, 0, "apply at %" PRIu64 ": %d (%s)", p->last_index + 1,
		     rc, r.why ? r.why : "");
	return r;
}

static uint64_t hash_of(const struct part *p)
{
	uint64_t h;
	cr_assert_eq(part_state_hash(p, &h), 0);
	return h;
}

Test(part_apply, seqs_idempotency_precondition_delete)
{
	struct part *p = part_new(60000, 100);
	struct part_apply_res r = apply_ok(p, CMD_APPEND, append_cmd("a", 0, 10, PE_NO_EXPECT, "x", 3));
	cr_assert_eq(r.append.err, 0);
	cr_assert_eq(r.append.seq, 1);
	cr_assert_eq(r.append.count, 3);
	cr_assert_eq(r.append.last_seq, 3);
	cr_assert_eq(r.append.ts_ms, 10);
	cr_assert_not_null(r.touched);
	/* idempotent: producer 7 twice -> the first seq, duplicate */
	r = apply_ok(p, CMD_APPEND, append_cmd("a", 7, 20, PE_NO_EXPECT, "y", 1));
	cr_assert_eq(r.append.seq, 4);
	r = apply_ok(p, CMD_APPEND, append_cmd("a", 7, 30, PE_NO_EXPECT, "y", 1));
	cr_assert(r.append.duplicate);
	cr_assert_eq(r.append.seq, 4);
	cr_assert_eq(r.append.ts_ms, 20);
	cr_assert_null(r.touched);
	/* precondition: a failed one consumes its index, changes nothing else */
	uint64_t h = hash_of(p);
	r = apply_ok(p, CMD_APPEND, append_cmd("a", 0, 40, 3, "z", 1));
	cr_assert_eq(r.append.err, -PARLEY_ESEQ);
	cr_assert_eq(r.append.last_seq, 4);
	cr_assert_eq(p->last_index, 4);
	cr_assert_neq(hash_of(p), h); /* only the applied index moved */
	r = apply_ok(p, CMD_APPEND, append_cmd("a", 0, 40, 4, "z", 1));
	cr_assert_eq(r.append.seq, 5);
	/* timestamps are monotone per stream, from the commands only */
	r = apply_ok(p, CMD_APPEND, append_cmd("a", 0, 5, PE_NO_EXPECT, "w", 1));
	cr_assert_eq(r.append.ts_ms, 40);
	/* delete through 2: first visible seq 3; seqs never reused */
	r = apply_ok(p, CMD_DELETE, delete_cmd("a", 2));
	cr_assert_eq(r.del.first_seq, 3);
	cr_assert_eq(r.del.last_seq, 6);
	r = apply_ok(p, CMD_DELETE, delete_cmd("a", UINT64_MAX));
	cr_assert_eq(r.del.first_seq, 7);
	r = apply_ok(p, CMD_APPEND, append_cmd("a", 0, 50, PE_NO_EXPECT, "v", 1));
	cr_assert_eq(r.append.seq, 7);
	/* a delete of an unknown stream is a no-op that still applies */
	r = apply_ok(p, CMD_DELETE, delete_cmd("nope", 1));
	cr_assert_eq(r.del.first_seq, 0);
	cr_assert_eq(p->last_index, 10);
	part_del(p);
}

Test(part_apply, idempotency_expires_in_command_time)
{
	struct part *p = part_new(1000, 100);
	struct part_apply_res r = apply_ok(p, CMD_APPEND, append_cmd("s", 9, 1000, PE_NO_EXPECT, "a", 1));
	cr_assert_eq(r.append.seq, 1);
	r = apply_ok(p, CMD_APPEND, append_cmd("s", 9, 2000, PE_NO_EXPECT, "a", 1));
	cr_assert(r.append.duplicate); /* exactly at the window's edge */
	/* a later command's time (not any clock) pushes the key out */
	r = apply_ok(p, CMD_APPEND, append_cmd("s", 9, 2001, PE_NO_EXPECT, "a", 1));
	cr_assert_not(r.append.duplicate);
	cr_assert_eq(r.append.seq, 2);
	part_del(p);
}

Test(part_apply, idempotency_cap_forgets_oldest_first)
{
	struct part *p = part_new(UINT64_MAX / 2, 2);
	for (uint8_t k = 1; k <= 4; k++)
		apply_ok(p, CMD_APPEND, append_cmd("s", k, 10, PE_NO_EXPECT, "a", 1));
	/* cap 2: expiry runs before each insert, so up to cap + 1 are held */
	struct part_apply_res r = apply_ok(p, CMD_APPEND, append_cmd("s", 1, 10, PE_NO_EXPECT, "a", 1));
	cr_assert_not(r.append.duplicate);
	r = apply_ok(p, CMD_APPEND, append_cmd("s", 4, 10, PE_NO_EXPECT, "a", 1));
	cr_assert(r.append.duplicate);
	part_del(p);
}

Test(part_apply, refused_commands_change_nothing)
{
	struct part *p = part_new(60000, 100);
	apply_ok(p, CMD_APPEND, append_cmd("a", 1, 10, PE_NO_EXPECT, "x", 2));
	uint64_t h = hash_of(p);
	struct part_apply_res r;
	size_t len = append_cmd("a", 2, 10, PE_NO_EXPECT, "x", 1);
	/* a gap */
	cr_assert_eq(part_apply(p, 3, 1, CMD_APPEND, g_body, len, &r),
		     -PARLEY_ECORRUPT);
	cr_assert_str_eq(r.why, "log index gap");
	/* an index already applied */
	cr_assert_eq(part_apply(p, 1, 1, CMD_APPEND, g_body, len, &r),
		     -PARLEY_ECORRUPT);
	/* unknown kind, truncated body */
	cr_assert_eq(part_apply(p, 2, 1, 9, g_body, len, &r), -PARLEY_ECORRUPT);
	cr_assert_str_eq(r.why, "unknown log command type");
	cr_assert_eq(part_apply(p, 2, 1, CMD_APPEND, g_body, len - 1, &r),
		     -PARLEY_ECORRUPT);
	cr_assert_str_eq(r.why, "undecodable log command");
	cr_assert_eq(p->last_index, 1);
	cr_assert_eq(hash_of(p), h);
	part_del(p);
}

/* A random but replayable command sequence. */
static uint64_t rnd_state;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static size_t random_cmd(uint16_t *kind, uint64_t step)
{
	static const char *keys[] = {"c/1", "c/2", "u/alice", "u/bob", "x"};
	const char *key = keys[rnd() % 5];
	if (rnd() % 10 == 0) {
		*kind = CMD_DELETE;
		return delete_cmd(key, rnd() % 4 ? rnd() % (step + 1) : UINT64_MAX);
	}
	*kind = CMD_APPEND;
	char pl[32];
	snprintf(pl, sizeof pl, "m%" PRIu64, rnd() % 1000);
	uint64_t exp = rnd() % 8 == 0 ? rnd() % (step + 1) : PE_NO_EXPECT;
	return append_cmd(key, (uint8_t)(rnd() % 6), 1000 + step * 10 + rnd() % 5,
			  exp, pl, 1 + (uint32_t)(rnd() % 3));
}

Test(part_apply, same_commands_same_state_hash)
{
	uint64_t seed = getenv("PARLEY_SEED") ? strtoull(getenv("PARLEY_SEED"), NULL, 10)
					      : (uint64_t)time(NULL);
	fprintf(stderr, "test_part_apply: seed=%" PRIu64 " (replay: PARLEY_SEED=%" PRIu64 ")\n",
		seed, seed);
	rnd_state = seed * 2654435761u + 1;
	struct part *a = part_new(500, 8), *b = part_new(500, 8), *c = part_new(500, 8);
	uint64_t changed_at = 200 + rnd() % 100;
	bool diverged = false;
	for (uint64_t i = 1; i <= 400; i++) {
		uint16_t kind;
		size_t len = random_cmd(&kind, i);
		struct part_apply_res ra, rb, rc;
		cr_assert_eq(part_apply(a, i, 1, kind, g_body, len, &ra), 0);
		cr_assert_eq(part_apply(b, i, 1, kind, g_body, len, &rb), 0);
		cr_assert_eq(ra.append.seq, rb.append.seq);
		cr_assert_eq(ra.append.err, rb.append.err);
		cr_assert_eq(ra.del.first_seq, rb.del.first_seq);
		/* change a command that stores its payload (not a duplicate,
		 * not a failed precondition) */
		if (i == changed_at && kind == CMD_APPEND && !ra.append.err &&
		    !ra.append.duplicate) {
			g_body[len - 1] ^= 1; /* one payload byte differs */
			diverged = true;
		} else if (i == changed_at) {
			changed_at++; /* change the next append instead */
		}
		cr_assert_eq(part_apply(c, i, 1, kind, g_body, len, &rc), 0);
		cr_assert_eq(hash_of(a), hash_of(b), "seed %" PRIu64 " step %" PRIu64,
			     seed, i);
		if (diverged)
			cr_assert_neq(hash_of(a), hash_of(c), "seed %" PRIu64 " step %" PRIu64,
				      seed, i);
		else
			cr_assert_eq(hash_of(a), hash_of(c));
	}
	cr_assert(diverged);
	part_del(a);
	part_del(b);
	part_del(c);
}

/* The idempotency table's index (engine/log/idem.c: open addressing,
 * linear probing, deletion by backward shift) against a model: thousands
 * of keys over a cap that forgets one key per new one, so the index grows
 * several times and nearly every insert deletes from a cluster. The model
 * remembers the last `cap` new keys (strictly growing command time: the
 * table's order is the order of insertion) and each key's seq. */
Test(part_apply, idempotency_table_matches_a_model)
{
	uint64_t seed = getenv("PARLEY_SEED") ? strtoull(getenv("PARLEY_SEED"), NULL, 10)
					      : (uint64_t)time(NULL);
	fprintf(stderr, "test_part_apply: idem model seed=%" PRIu64
		" (replay: PARLEY_SEED=%" PRIu64 ")\n", seed, seed);
	rnd_state = seed * 2654435761u + 1;
	enum { NKEYS = 3000, NSTREAMS = 4, CAP = 700, STEPS = 30000 };
	struct part *p = part_new(UINT64_MAX / 2, CAP);
	static uint64_t seq_of[NSTREAMS][NKEYS]; /* 0 = not remembered */
	static uint32_t ring[CAP + 1][2];        /* remembered keys, oldest first */
	uint64_t last[NSTREAMS] = {0};
	memset(seq_of, 0, sizeof seq_of);
	uint32_t head = 0, n = 0;
	for (uint64_t step = 1; step <= STEPS; step++) {
		uint32_t st = (uint32_t)(rnd() % NSTREAMS);
		uint32_t k = (uint32_t)(rnd() % NKEYS);
		char key[8];
		snprintf(key, sizeof key, "s%u", st);
		uint8_t producer[PE_PRODUCER_LEN] = {0};
		producer[0] = (uint8_t)k;
		producer[1] = (uint8_t)(k >> 8);
		producer[7] = 0x5a;
		struct pe_input in = {.type = 1, .len = 1, .payload = "x"};
		int64_t len = cmd_append_encode(g_body, sizeof g_body, key,
						strlen(key), producer, step,
						PE_NO_EXPECT, &in, 1);
		cr_assert_gt(len, 0);
		struct part_apply_res r = apply_ok(p, CMD_APPEND, (size_t)len);
		if (seq_of[st][k]) {
			cr_assert(r.append.duplicate, "seed %" PRIu64 " step %" PRIu64
				  ": a remembered key was not found", seed, step);
			cr_assert_eq(r.append.seq, seq_of[st][k]);
		} else {
			cr_assert_not(r.append.duplicate, "seed %" PRIu64
				      " step %" PRIu64 ": a forgotten key was found",
				      seed, step);
			cr_assert_eq(r.append.seq, ++last[st]);
			seq_of[st][k] = r.append.seq;
			ring[(head + n) % (CAP + 1)][0] = st;
			ring[(head + n) % (CAP + 1)][1] = k;
			if (++n > CAP) { /* the oldest is forgotten */
				seq_of[ring[head][0]][ring[head][1]] = 0;
				head = (head + 1) % (CAP + 1);
				n--;
			}
		}
		cr_assert_eq(p->nidem, n, "seed %" PRIu64 " step %" PRIu64, seed, step);
	}
	/* the order list holds the model's keys, oldest first */
	uint32_t i = 0;
	for (const struct idem *e = idem_first(p); e; e = idem_next(p, e), i++) {
		cr_assert_lt(i, n);
		uint32_t k = (uint32_t)e->producer[0] | (uint32_t)e->producer[1] << 8;
		cr_assert_eq(k, ring[(head + i) % (CAP + 1)][1]);
	}
	cr_assert_eq(i, n);
	part_del(p);
}

/* ---- waiters ------------------------------------------------------------------ */

static struct req *wreq(uint64_t index, uint64_t term)
{
	struct req *r = calloc(1, sizeof *r);
	cr_assert_not_null(r);
	r->index = index;
	r->term = term;
	return r;
}

Test(part_wait, matched_by_index_and_term)
{
	struct part *p = part_new(1, 1);
	struct req *r1 = wreq(1, 1), *r2 = wreq(2, 1), *r3 = wreq(3, 1),
		   *r4 = wreq(4, 1);
	part_wait_push(p, r1);
	part_wait_push(p, r2);
	part_wait_push(p, r3);
	part_wait_push(p, r4);
	struct req *lost;
	/* an entry below every waiter (a follower's, or a no-op) matches none */
	cr_assert_null(part_wait_take(p, 0, 1, &lost));
	cr_assert_null(lost);
	cr_assert_eq(part_wait_take(p, 1, 1, &lost), r1);
	cr_assert_null(lost);
	/* index 2 now holds a term-2 entry: r2's proposal was overwritten */
	cr_assert_null(part_wait_take(p, 2, 2, &lost));
	cr_assert_eq(lost, r2);
	/* leadership lost with commit at 2: exactly r3 and r4 are uncommitted */
	struct req *after = part_wait_take_after(p, 2);
	cr_assert_eq(after, r3);
	cr_assert_eq(r3->next, r4);
	cr_assert_null(r4->next);
	cr_assert_null(p->wait_head);
	cr_assert_null(p->wait_tail);
	/* the list works again after being emptied */
	struct req *r5 = wreq(5, 2);
	part_wait_push(p, r5);
	cr_assert_null(part_wait_take_after(p, 5));
	cr_assert_eq(part_wait_take(p, 5, 2, &lost), r5);
	free(r1);
	free(r2);
	free(r3);
	free(r4);
	free(r5);
	part_del(p);
}

Test(part_wait, take_after_keeps_committed_prefix)
{
	struct part *p = part_new(1, 1);
	struct req *r[4];
	for (int i = 0; i < 4; i++) {
		r[i] = wreq((uint64_t)(10 + i), 3);
		part_wait_push(p, r[i]);
	}
	struct req *after = part_wait_take_after(p, 11);
	cr_assert_eq(after, r[2]);
	cr_assert_eq(p->wait_tail, r[1]);
	struct req *lost;
	cr_assert_eq(part_wait_take(p, 10, 3, &lost), r[0]);
	cr_assert_eq(part_wait_take(p, 11, 3, &lost), r[1]);
	cr_assert_null(p->wait_head);
	/* a new proposal after the prefix appends behind the tail correctly */
	struct req *r5 = wreq(12, 4);
	part_wait_push(p, r5);
	cr_assert_eq(p->wait_head, r5);
	for (int i = 0; i < 4; i++)
		free(r[i]);
	free(r5);
	part_del(p);
}

/* Looking ahead (part_apply.c): applying with the hints of the
 * look-ahead schedule (part_ahead_*, made a few commands early while the
 * commands in between change the tables: new streams, a growing
 * idempotency index, deletes, a growing ents array) gives the same
 * results and the same state as part_apply. Batches of 1..9 commands,
 * like a ready's committed entries. */
struct cmd_batch {
	uint8_t body[9][512];
	size_t len[9];
	uint16_t kind[9];
};

static void batch_get(void *arg, uint32_t i, uint16_t *kind,
		      const uint8_t **body, size_t *len)
{
	struct cmd_batch *b = arg;
	*kind = b->kind[i];
	*body = b->body[i];
	*len = b->len[i];
}

Test(part_apply, hints_made_ahead_change_nothing)
{
	uint64_t seed = getenv("PARLEY_SEED") ? strtoull(getenv("PARLEY_SEED"), NULL, 10)
					      : (uint64_t)time(NULL);
	fprintf(stderr, "test_part_apply: hints seed=%" PRIu64
		" (replay: PARLEY_SEED=%" PRIu64 ")\n", seed, seed);
	rnd_state = seed * 2654435761u + 1;
	static struct cmd_batch bt;
	struct part *a = part_new(500, 64), *b = part_new(500, 64);
	uint64_t step = 0;
	for (int round = 0; round < 800; round++) {
		uint32_t n = 1 + (uint32_t)(rnd() % 9);
		for (uint32_t i = 0; i < n; i++) {
			bt.len[i] = random_cmd(&bt.kind[i], step + i + 1);
			cr_assert_leq(bt.len[i], sizeof bt.body[i]);
			memcpy(bt.body[i], g_body, bt.len[i]);
		}
		struct part_ahead ah;
		part_ahead_init(&ah, b, n, batch_get, &bt);
		for (uint32_t i = 0; i < n; i++) {
			step++;
			struct part_apply_res ra, rb;
			cr_assert_eq(part_apply(a, step, 1, bt.kind[i], bt.body[i],
						bt.len[i], &ra), 0);
			const struct part_apply_hint *h = part_ahead_next(&ah, b, i);
			cr_assert(bt.kind[i] != CMD_APPEND || h->body == bt.body[i],
				  "an APPEND's hint was made from its body");
			cr_assert_eq(part_apply_hinted(b, step, 1, bt.kind[i],
						       bt.body[i], bt.len[i], h,
						       &rb), 0);
			cr_assert_eq(ra.append.seq, rb.append.seq,
				     "seed %" PRIu64 " step %" PRIu64, seed, step);
			cr_assert_eq(ra.append.duplicate, rb.append.duplicate);
			cr_assert_eq(ra.append.err, rb.append.err);
			cr_assert_eq(ra.del.first_seq, rb.del.first_seq);
		}
		if (round % 37 == 0)
			cr_assert_eq(hash_of(a), hash_of(b), "seed %" PRIu64
				     " step %" PRIu64, seed, step);
	}
	cr_assert_eq(hash_of(a), hash_of(b), "seed %" PRIu64, seed);
	part_del(a);
	part_del(b);
}

/* A hint is used only for the body it was made from: one made from
 * another command (another key) is ignored, not trusted. */
Test(part_apply, hint_of_another_command_is_ignored)
{
	struct part *p = part_new(1000, 100);
	static uint8_t other[512];
	size_t olen = append_cmd("c/other", 1, 10, PE_NO_EXPECT, "x", 1);
	memcpy(other, g_body, olen);
	struct part_apply_hint h;
	part_apply_look(p, CMD_APPEND, other, olen, &h);
	cr_assert_not_null(h.body);
	/* c/1 gets seqs 1, 2; then c/1 is applied with c/other's hint */
	size_t len = append_cmd("c/1", 0, 10, PE_NO_EXPECT, "a", 2);
	apply_ok(p, CMD_APPEND, len);
	len = append_cmd("c/1", 2, 11, PE_NO_EXPECT, "b", 1);
	struct part_apply_res r;
	cr_assert_eq(part_apply_hinted(p, p->last_index + 1, 1, CMD_APPEND,
				       g_body, len, &h, &r), 0);
	cr_assert_eq(r.append.seq, 3); /* not a new stream at seq 1 */
	/* the same bytes at another address are another command too */
	part_apply_look(p, CMD_APPEND, g_body, len, &h);
	memcpy(other, g_body, len);
	cr_assert_eq(part_apply_hinted(p, p->last_index + 1, 1, CMD_APPEND,
				       other, len, &h, &r), 0);
	cr_assert(r.append.duplicate); /* (c/1, producer 2) again */
	cr_assert_eq(r.append.seq, 3);
	part_del(p);
}
