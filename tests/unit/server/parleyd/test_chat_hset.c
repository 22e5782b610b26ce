/*
 * test_chat_hset.c — the bounded (k1, k2) table behind the deleted-message
 * set and the retention floors (server/chat_hset.h): both keys count, values
 * survive growth, and past the bound a put fails leaving the table as it
 * was.
 */
#include <criterion/criterion.h>
#include <inttypes.h>

#include "chat_hset.h"

Test(chat_hset, pairs_values_and_growth)
{
	struct chat_hset t;
	chat_hset_init(&t, true);
	cr_assert_eq(chat_hset_find(&t, 7, 1), -1); /* empty, no arrays */
	for (uint64_t i = 1; i <= 3000; i++) { /* grows 1024 -> 2048 -> 4096 */
		int64_t s = chat_hset_put(&t, 1 + i % 50, i, 1u << 20);
		cr_assert_geq(s, 0);
		t.v[s] = i * 10;
	}
	cr_assert_eq(t.n, 3000);
	cr_assert_eq(t.cap, 4096);
	for (uint64_t i = 1; i <= 3000; i++) {
		int64_t s = chat_hset_find(&t, 1 + i % 50, i);
		cr_assert_geq(s, 0, "pair %" PRIu64 " lost", i);
		cr_assert_eq(t.v[s], i * 10);
	}
	cr_assert_eq(chat_hset_find(&t, 2 + 5 % 50, 5), -1); /* k2 alone */
	cr_assert_eq(chat_hset_put(&t, 1 + 5 % 50, 5, 1u << 20),
		     chat_hset_find(&t, 1 + 5 % 50, 5)); /* again: same slot */
	cr_assert_eq(t.n, 3000);
	chat_hset_free(&t);
	cr_assert_eq(t.cap, 0);
}

Test(chat_hset, bounded)
{
	struct chat_hset t;
	chat_hset_init(&t, false);
	uint64_t i = 1;
	while (chat_hset_put(&t, i, 0, 1024) >= 0)
		i++;
	cr_assert_eq(i - 1, 768, "3/4 of 1024 slots fit, got %" PRIu64, i - 1);
	cr_assert_eq(chat_hset_put(&t, i, 0, 1024), -PARLEY_EFULL);
	cr_assert_eq(t.n, 768);
	cr_assert_eq(t.cap, 1024);
	cr_assert_null(t.v);
	for (uint64_t k = 1; k <= 768; k++)
		cr_assert_geq(chat_hset_find(&t, k, 0), 0);
	cr_assert_eq(chat_hset_find(&t, i, 0), -1);
	chat_hset_free(&t);
}
