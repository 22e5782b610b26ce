/*
 * test_ratelimit.c — unit tests for server/ratelimit.c.
 *
 * What is proven, all with injected time: a bucket refills exactly (whole
 * and fractional token intervals, to the nanosecond), refills nothing when
 * a take carries an older time than the bucket's, is capped at its
 * burst, and its retry-after is the exact wait rounded up to a millisecond;
 * a request needs a token in both its connection's and its user's bucket
 * and a refused one takes nothing; a user's bucket is shared by all of the
 * user's connections, also from several threads at once (never more
 * grants than tokens); rate 0 is unlimited; the per-user table never holds
 * more than max_users users, evicts the least recently used, and counts an
 * eviction as lossy only when the victim's buckets were not full; bad
 * configurations are refused; admission slots are bounded and a refused
 * HELLO gets base + jitter from the injected random value.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "parley_common.h"
#include "ratelimit.h"

#define SEC 1000000000ull
#define MS 1000000ull

static struct ratelimit_config cfg_zero(void)
{
	struct ratelimit_config c;
	memset(&c, 0, sizeof c);
	c.max_users = 1024;
	return c;
}

static struct ratelimit *open_rl(const struct ratelimit_config *c)
{
	struct ratelimit *rl = NULL;
	cr_assert_eq(ratelimit_open(c, &rl), 0);
	return rl;
}

static size_t ulen_of(const char *u)
{
	return u ? strlen(u) : 0;
}
#define TAKE(rl, conn, u, k, t) ratelimit_take(rl, conn, u, ulen_of(u), k, t)

Test(ratelimit, whole_token_refill_is_exact)
{
	struct ratelimit_config c = cfg_zero();
	c.conn[RATELIMIT_SEND] = (struct ratelimit_rate){.per_min = 60, .burst = 3};
	struct ratelimit *rl = open_rl(&c);
	struct ratelimit_conn cn;
	memset(&cn, 0, sizeof cn);
	uint64_t t = 5 * SEC;
	for (int i = 0; i < 3; i++)
		cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t), 0u, "take %d", i);
	cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t), 1000u);
	cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t + 999 * MS), 1u);
	cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t + SEC - 1), 1u);
	cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t + SEC), 0u);
	cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t + SEC), 1000u);
	/* 2.5 tokens later: two pass, the third waits the missing half */
	uint64_t t2 = t + SEC + 2500 * MS;
	cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t2), 0u);
	cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t2), 0u);
	cr_assert_eq(TAKE(rl, &cn, NULL, RATELIMIT_SEND, t2), 500u);
	struct ratelimit_stats st;
	ratelimit_stats(rl, &st);
	cr_assert_eq(st.limited[RATELIMIT_SEND], 5u);
	cr_assert_eq(st.limited[RATELIMIT_HISTORY], 0u);
	ratelimit_close(rl);
}

Test(ratelimit, fractional_interval_is_exact_to_the_ns)
{
	/* 7 per minute: one token every 60/7 s = 8571428571.43 ns */
	struct ratelimit_rate r = {.per_min = 7, .burst = 1};
	struct ratelimit_bucket b = {.level = 0, .t_ns = 10 * SEC};
	cr_assert_eq(ratelimit_bucket_wait_ms(&r, &b, 10 * SEC), 8572u);
	cr_assert_eq(ratelimit_bucket_wait_ms(&r, &b, 10 * SEC + 8571428571ull), 1u);
	cr_assert_eq(ratelimit_bucket_wait_ms(&r, &b, 10 * SEC + 8571428572ull), 0u);
	/* capped at the burst however long it was idle */
	cr_assert_eq(ratelimit_bucket_wait_ms(&r, &b, UINT64_MAX / 2), 0u);
	struct ratelimit_rate un = {.per_min = 0, .burst = 0};
	cr_assert_eq(ratelimit_bucket_wait_ms(&un, &b, 10 * SEC), 0u);
}

Test(ratelimit, time_going_backwards_refills_nothing)
{
	/* two loops read the monotonic clock before taking the shard lock: a
	 * take may carry a slightly older time than the bucket's */
	struct ratelimit_config c = cfg_zero();
	c.user[RATELIMIT_SEND] = (struct ratelimit_rate){.per_min = 60, .burst = 2};
	struct ratelimit *rl = open_rl(&c);
	uint64_t t = 100 * SEC;
	cr_assert_eq(TAKE(rl, NULL, "dave", RATELIMIT_SEND, t), 0u);
	cr_assert_eq(TAKE(rl, NULL, "dave", RATELIMIT_SEND, t - 5 * MS), 0u);
	cr_assert_eq(TAKE(rl, NULL, "dave", RATELIMIT_SEND, t - 10 * MS), 1000u);
	/* the bucket's time did not move back: refill counts from t */
	cr_assert_eq(TAKE(rl, NULL, "dave", RATELIMIT_SEND, t + 999 * MS), 1u);
	cr_assert_eq(TAKE(rl, NULL, "dave", RATELIMIT_SEND, t + SEC), 0u);
	ratelimit_close(rl);
}

Test(ratelimit, burst_caps_after_long_idle)
{
	struct ratelimit_config c = cfg_zero();
	c.user[RATELIMIT_HISTORY] = (struct ratelimit_rate){.per_min = 6000000, .burst = 4};
	struct ratelimit *rl = open_rl(&c);
	uint64_t t = 1;
	for (int i = 0; i < 4; i++)
		cr_assert_eq(TAKE(rl, NULL, "alice", RATELIMIT_HISTORY, t), 0u);
	cr_assert_gt(TAKE(rl, NULL, "alice", RATELIMIT_HISTORY, t), 0u);
	t += 3600 * SEC;
	int ok = 0;
	while (TAKE(rl, NULL, "alice", RATELIMIT_HISTORY, t) == 0)
		ok++;
	cr_assert_eq(ok, 4);
	ratelimit_close(rl);
}

Test(ratelimit, both_buckets_needed_refusal_takes_nothing)
{
	struct ratelimit_config c = cfg_zero();
	c.conn[RATELIMIT_SEND] = (struct ratelimit_rate){.per_min = 60, .burst = 1};
	c.user[RATELIMIT_SEND] = (struct ratelimit_rate){.per_min = 30, .burst = 2};
	struct ratelimit *rl = open_rl(&c);
	struct ratelimit_conn a, b, d;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	memset(&d, 0, sizeof d);
	uint64_t t = 7 * SEC;
	cr_assert_eq(TAKE(rl, &a, "bob", RATELIMIT_SEND, t), 0u);
	/* a's own bucket is empty: refused, the user's last token stays */
	cr_assert_eq(TAKE(rl, &a, "bob", RATELIMIT_SEND, t), 1000u);
	cr_assert_eq(TAKE(rl, &a, "bob", RATELIMIT_SEND, t), 1000u);
	/* a second connection of the same user gets that token */
	cr_assert_eq(TAKE(rl, &b, "bob", RATELIMIT_SEND, t), 0u);
	/* the user is empty now: a third connection waits for the user (2 s) */
	cr_assert_eq(TAKE(rl, &d, "bob", RATELIMIT_SEND, t), 2000u);
	/* another user is not affected */
	cr_assert_eq(TAKE(rl, &d, "carol", RATELIMIT_SEND, t), 0u);
	/* other kinds are unlimited here */
	cr_assert_eq(TAKE(rl, &a, "bob", RATELIMIT_TYPING, t), 0u);
	cr_assert_eq(TAKE(rl, &a, "bob", RATELIMIT_PRESENCE, t), 0u);
	cr_assert_eq(TAKE(rl, &b, "bob", RATELIMIT_SEND, t + 2 * SEC), 0u);
	ratelimit_close(rl);
}

struct thr_arg {
	struct ratelimit *rl;
	int granted;
};

static void *thr_take(void *p)
{
	struct thr_arg *x = p;
	struct ratelimit_conn cn;
	memset(&cn, 0, sizeof cn);
	for (int i = 0; i < 20000; i++)
		if (TAKE(x->rl, &cn, "shared", RATELIMIT_SEND, 42 * SEC) == 0)
			x->granted++;
	return NULL;
}

Test(ratelimit, user_bucket_shared_across_threads_never_overgrants)
{
	struct ratelimit_config c = cfg_zero();
	c.user[RATELIMIT_SEND] = (struct ratelimit_rate){.per_min = 1, .burst = 1000};
	struct ratelimit *rl = open_rl(&c);
	pthread_t th[4];
	struct thr_arg xs[4];
	for (int i = 0; i < 4; i++) {
		xs[i] = (struct thr_arg){.rl = rl};
		cr_assert_eq(pthread_create(&th[i], NULL, thr_take, &xs[i]), 0);
	}
	int total = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		total += xs[i].granted;
	}
	cr_assert_eq(total, 1000);
	struct ratelimit_stats st;
	ratelimit_stats(rl, &st);
	cr_assert_eq(st.limited[RATELIMIT_SEND], 4u * 20000u - 1000u);
	ratelimit_close(rl);
}

Test(ratelimit, table_is_bounded_and_evicts_lru)
{
	struct ratelimit_config c = cfg_zero();
	c.max_users = RATELIMIT_USERS_MIN; /* one user per shard */
	c.user[RATELIMIT_SEND] = (struct ratelimit_rate){.per_min = 60, .burst = 1};
	struct ratelimit *rl = open_rl(&c);
	char u[32];
	struct ratelimit_stats st;
	/* phase 1: each user drains its bucket; evicting such a user is lossy */
	uint64_t t = SEC;
	for (int i = 0; i < 1000; i++) {
		snprintf(u, sizeof u, "u%d", i);
		cr_assert_eq(TAKE(rl, NULL, u, RATELIMIT_SEND, t), 0u);
		ratelimit_stats(rl, &st);
		cr_assert_leq(st.users, (uint64_t)c.max_users);
	}
	ratelimit_stats(rl, &st);
	cr_assert_eq(st.users, (uint64_t)c.max_users);
	cr_assert_eq(st.evictions, 1000u - c.max_users);
	cr_assert_eq(st.lossy_evictions, st.evictions);
	/* the most recent user of its shard is still there, still limited */
	cr_assert_eq(TAKE(rl, NULL, "u999", RATELIMIT_SEND, t), 1000u);
	/* phase 2, an hour later, one user every 10 s (a bucket refills in
	 * 1 s): every victim is full again, evicting loses nothing */
	uint64_t lossy = st.lossy_evictions;
	t += 3600 * SEC;
	for (int i = 1000; i < 2000; i++) {
		snprintf(u, sizeof u, "u%d", i);
		cr_assert_eq(TAKE(rl, NULL, u, RATELIMIT_SEND, t + (uint64_t)i * 10 * SEC), 0u);
	}
	ratelimit_stats(rl, &st);
	cr_assert_eq(st.users, (uint64_t)c.max_users);
	cr_assert_eq(st.evictions, 2000u - c.max_users);
	cr_assert_eq(st.lossy_evictions, lossy);
	ratelimit_close(rl);
}

Test(ratelimit, lru_keeps_the_active_user)
{
	struct ratelimit_config c = cfg_zero();
	c.max_users = RATELIMIT_USERS_MIN * 2; /* two users per shard */
	c.user[RATELIMIT_SEND] = (struct ratelimit_rate){.per_min = 1, .burst = 2};
	struct ratelimit *rl = open_rl(&c);
	uint64_t t = SEC;
	cr_assert_eq(TAKE(rl, NULL, "active", RATELIMIT_SEND, t), 0u);
	cr_assert_eq(TAKE(rl, NULL, "active", RATELIMIT_SEND, t), 0u);
	char u[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(u, sizeof u, "x%d", i);
		(void)TAKE(rl, NULL, u, RATELIMIT_SEND, t);
		/* "active" keeps using its bucket: it is never the LRU */
		cr_assert_gt(TAKE(rl, NULL, "active", RATELIMIT_SEND, t), 0u, "i=%d", i);
	}
	ratelimit_close(rl);
}

Test(ratelimit, config_check)
{
	char why[160];
	struct ratelimit_config c = cfg_zero();
	cr_assert_eq(ratelimit_config_check(&c, why, sizeof why), 0);
	c.user[RATELIMIT_TYPING] = (struct ratelimit_rate){.per_min = 10, .burst = 0};
	cr_assert_eq(ratelimit_config_check(&c, why, sizeof why), -PARLEY_EINVAL);
	cr_assert(strstr(why, "typing"), "%s", why);
	c = cfg_zero();
	c.conn[RATELIMIT_SEND].per_min = RATELIMIT_RATE_MAX + 1;
	c.conn[RATELIMIT_SEND].burst = 1;
	cr_assert_eq(ratelimit_config_check(&c, why, sizeof why), -PARLEY_EINVAL);
	c = cfg_zero();
	c.max_users = RATELIMIT_USERS_MIN - 1;
	cr_assert_eq(ratelimit_config_check(&c, why, sizeof why), -PARLEY_EINVAL);
	struct ratelimit *rl = NULL;
	cr_assert_eq(ratelimit_open(&c, &rl), -PARLEY_EINVAL);
	cr_assert_null(rl);
	cr_assert_str_eq(ratelimit_kind_name(RATELIMIT_HISTORY), "history");
}

Test(admission, bounded_slots_and_jittered_retry)
{
	struct admission a;
	admission_init(&a, 2, 1000);
	bool h1 = false, h2 = false, h3 = false;
	cr_assert(admission_enter(&a, &h1));
	cr_assert(admission_enter(&a, &h1)); /* held already: no second slot */
	cr_assert(admission_enter(&a, &h2));
	cr_assert_not(admission_enter(&a, &h3));
	cr_assert_not(h3);
	cr_assert_eq(admission_hello(&a, &h3, 0), 1000u);
	cr_assert_eq(admission_hello(&a, &h3, 1000), 2000u);
	cr_assert_eq(admission_hello(&a, &h3, 1001), 1000u);
	cr_assert_eq(admission_hello(&a, &h3, 12345), 1000u + 12345u % 1001u);
	cr_assert_eq(atomic_load(&a.rejected), 4u);
	/* a slot holder's HELLO passes */
	cr_assert_eq(admission_hello(&a, &h1, 7), 0u);
	admission_leave(&a, &h1);
	admission_leave(&a, &h1); /* idempotent */
	cr_assert_eq(atomic_load(&a.in_progress), 1u);
	cr_assert_eq(admission_hello(&a, &h3, 7), 0u);
	cr_assert(h3);
	admission_leave(&a, &h2);
	admission_leave(&a, &h3);
	cr_assert_eq(atomic_load(&a.in_progress), 0u);
	/* max 0: no bound */
	admission_init(&a, 0, 1000);
	bool hs[100] = {false};
	for (int i = 0; i < 100; i++)
		cr_assert_eq(admission_hello(&a, &hs[i], 0), 0u);
}
