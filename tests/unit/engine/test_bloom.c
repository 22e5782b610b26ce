/*
 * test_bloom.c — engine/bloom.c: no false negatives, a false-positive rate
 * near the theory for the chosen bits per key, serialization round trip,
 * and rejection of malformed serialized filters.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "bloom.h"
#include "parley_common.h"

static size_t mkkey(char *buf, const char *pfx, unsigned i)
{
	return (size_t)snprintf(buf, 64, "%s/%u", pfx, i);
}

Test(bloom, no_false_negatives_and_low_fp_rate)
{
	struct bloom b;
	cr_assert_eq(bloom_init(&b, 10000, 10), 0);
	char k[64];
	for (unsigned i = 0; i < 10000; i++)
		bloom_add(&b, k, mkkey(k, "c", i));
	for (unsigned i = 0; i < 10000; i++)
		cr_assert(bloom_may_contain(&b, k, mkkey(k, "c", i)), "false negative %u", i);
	unsigned fp = 0;
	for (unsigned i = 0; i < 100000; i++)
		fp += bloom_may_contain(&b, k, mkkey(k, "u", i));
	/* theory for 10 bits/key, k=7: ~0.8% */
	printf("bloom fp: %u / 100000 at 10 bits/key\n", fp);
	cr_assert_lt(fp, 2000u);
	cr_assert_gt(fp, 0u); /* a filter that never says yes would be suspect */
	bloom_free(&b);
}

Test(bloom, round_trip)
{
	struct bloom b, d;
	cr_assert_eq(bloom_init(&b, 500, 12), 0);
	char k[64];
	for (unsigned i = 0; i < 500; i += 2)
		bloom_add(&b, k, mkkey(k, "c", i));
	size_t n = bloom_encoded_size(&b);
	uint8_t *buf = malloc(n);
	cr_assert_eq(bloom_encode(&b, buf, n - 1), -PARLEY_ETOOBIG);
	cr_assert_eq(bloom_encode(&b, buf, n), (int64_t)n);
	cr_assert_eq(bloom_decode(&d, buf, n), 0);
	cr_assert_eq(d.nbits, b.nbits);
	cr_assert_eq(d.k, b.k);
	for (unsigned i = 0; i < 2000; i++) {
		mkkey(k, "c", i);
		cr_assert_eq(bloom_may_contain(&b, k, strlen(k)),
			     bloom_may_contain(&d, k, strlen(k)));
	}
	bloom_free(&d);

	/* malformed: short, wrong length, bad k, bad version, reserved set */
	cr_assert_eq(bloom_decode(&d, buf, 5), -PARLEY_ECORRUPT);
	cr_assert_eq(bloom_decode(&d, buf, n - 1), -PARLEY_ECORRUPT);
	uint8_t *bad = malloc(n + 1);
	memcpy(bad, buf, n);
	bad[n] = 0;
	cr_assert_eq(bloom_decode(&d, bad, n + 1), -PARLEY_ECORRUPT);
	memcpy(bad, buf, n);
	bad[4] = 0;
	cr_assert_eq(bloom_decode(&d, bad, n), -PARLEY_ECORRUPT);
	bad[4] = 31;
	cr_assert_eq(bloom_decode(&d, bad, n), -PARLEY_ECORRUPT);
	memcpy(bad, buf, n);
	bad[5] = 2;
	cr_assert_eq(bloom_decode(&d, bad, n), -PARLEY_EVERSION);
	memcpy(bad, buf, n);
	bad[6] = 1;
	cr_assert_eq(bloom_decode(&d, bad, n), -PARLEY_ECORRUPT);
	memcpy(bad, buf, n);
	le_put32(bad, 1u << 20); /* nbits says far more bytes than present */
	cr_assert_eq(bloom_decode(&d, bad, n), -PARLEY_ECORRUPT);
	free(bad);
	free(buf);
	bloom_free(&b);
}

Test(bloom, init_limits)
{
	struct bloom b;
	cr_assert_eq(bloom_init(&b, 10, 0), -PARLEY_EINVAL);
	cr_assert_eq(bloom_init(&b, 10, 65), -PARLEY_EINVAL);
	cr_assert_eq(bloom_init(&b, 1ull << 40, 10), -PARLEY_ETOOBIG);
	cr_assert_eq(bloom_init(&b, 0, 10), 0); /* empty segment: minimum size */
	cr_assert_geq(b.nbits, 64u);
	cr_assert_not(bloom_may_contain(&b, "x", 1));
	bloom_free(&b);
	/* an unset filter rules nothing out */
	struct bloom z = { 0 };
	cr_assert(bloom_may_contain(&z, "x", 1));
}
