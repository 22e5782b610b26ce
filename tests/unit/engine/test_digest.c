/*
 * test_digest.c — pe_partition_digest (engine/digest.c): two single-node
 * engines on in-memory backends with one clock, given the same streams in
 * another order, digest every partition the same at the same applied
 * index; one payload byte, one entry more, a deleted prefix or another
 * timestamp makes the partition holding it differ (and only it); what
 * retention dropped on one replica only (its own compaction) does not.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define NP 4

static uint64_t now_ms = 1700000000000ull;
static uint64_t clock_fn(void *arg)
{
	(void)arg;
	return now_ms;
}

struct eng {
	struct pio *io;
	struct pe_engine *e;
};

static struct eng open_opts(uint64_t seed, const struct pe_retention_rule *rr,
			    size_t nrr)
{
	struct eng x = {.io = pio_mem_new(seed)};
	cr_assert_not_null(x.io);
	struct pe_options o = {.dir = "/d", .partitions = NP, .io = x.io,
			       .clock_ms = clock_fn, .retention = rr,
			       .nretention = nrr, .no_auto_compact = nrr > 0};
	cr_assert_eq(pe_open(&o, &x.e), 0);
	return x;
}

static struct eng open_one(uint64_t seed)
{
	return open_opts(seed, NULL, 0);
}

static void close_one(struct eng *x)
{
	pe_close(x->e);
	pio_free(x->io);
}

static void put(struct eng *x, const char *key, const char *payload)
{
	struct pe_input in = {.type = 7, .len = (uint32_t)strlen(payload),
			      .payload = payload};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(x->e, &q, &r), 0);
}

/* The same 30 entries over 6 streams, in stream order or reversed. */
static void fill(struct eng *x, bool reverse)
{
	for (int k = 0; k < 6; k++) {
		int s = reverse ? 5 - k : k;
		char key[16], p[32];
		snprintf(key, sizeof key, "c/s%d", s);
		for (int i = 0; i < 5; i++) {
			snprintf(p, sizeof p, "m%d.%d", s, i);
			put(x, key, p);
		}
	}
}

static void digests(struct eng *x, struct pe_digest d[NP])
{
	for (uint32_t p = 0; p < NP; p++)
		cr_assert_eq(pe_partition_digest(x->e, p, &d[p]), 0);
}

static uint32_t part(struct eng *x, const char *key)
{
	return pe_partition_of(x->e, key, strlen(key));
}

Test(digest, equal_state_equal_digest_and_one_change_shows)
{
	struct eng a = open_one(1), b = open_one(2);
	fill(&a, false);
	fill(&b, true);
	struct pe_digest da[NP], db[NP];
	digests(&a, da);
	digests(&b, db);
	uint64_t total = 0;
	for (int p = 0; p < NP; p++) {
		cr_assert_eq(da[p].digest, db[p].digest, "partition %d", p);
		cr_assert_eq(da[p].entries, db[p].entries);
		cr_assert_eq(da[p].streams, db[p].streams);
		total += da[p].entries;
	}
	cr_assert_eq(total, 30);

	/* one payload byte: only that partition differs */
	put(&a, "c/x", "hello");
	put(&b, "c/x", "hellp");
	digests(&a, da);
	digests(&b, db);
	uint32_t px = part(&a, "c/x");
	for (uint32_t p = 0; p < NP; p++)
		if (p == px)
			cr_assert_neq(da[p].digest, db[p].digest);
		else
			cr_assert_eq(da[p].digest, db[p].digest);

	/* an entry more in a stream */
	put(&a, "c/s1", "extra");
	digests(&a, da);
	digests(&b, db);
	cr_assert_neq(da[part(&a, "c/s1")].digest, db[part(&a, "c/s1")].digest);
	close_one(&a);
	close_one(&b);
}

Test(digest, timestamps_and_deletions_count)
{
	struct eng a = open_one(3), b = open_one(4);
	put(&a, "c/t", "x");
	now_ms++;
	put(&b, "c/t", "x");
	struct pe_digest da[NP], db[NP];
	digests(&a, da);
	digests(&b, db);
	uint32_t pt = part(&a, "c/t");
	cr_assert_neq(da[pt].digest, db[pt].digest, "another timestamp");

	/* a deleted prefix: the visible entries differ */
	struct eng c = open_one(5), d = open_one(6);
	for (int i = 0; i < 3; i++) {
		put(&c, "c/d", "y");
		put(&d, "c/d", "y");
	}
	struct pe_delete_result r;
	cr_assert_eq(pe_delete_sync(c.e, "c/d", 3, 1, &r), 0);
	struct pe_digest dc[NP], dd[NP];
	digests(&c, dc);
	digests(&d, dd);
	uint32_t pd = part(&c, "c/d");
	cr_assert_neq(dc[pd].digest, dd[pd].digest);
	cr_assert_eq(dc[pd].entries + 1, dd[pd].entries);
	/* the same delete on the other: equal again (the delete is an
	 * applied log entry on both) */
	cr_assert_eq(pe_delete_sync(d.e, "c/d", 3, 1, &r), 0);
	digests(&c, dc);
	digests(&d, dd);
	cr_assert_eq(dc[pd].digest, dd[pd].digest);
	close_one(&a);
	close_one(&b);
	close_one(&c);
	close_one(&d);
}

/* Retention is each replica's own compaction (not replicated): a replica
 * that compacted a retained stream shows it from a later first seq than
 * one that did not, and both hold the same log. Their digests must be
 * equal (before, they differed: cluster_test_cluster_netns_long's final
 * comparison failed on a node that had compacted partition 1, 1886
 * entries of `r/` and `k/` streams fewer); a difference in what every
 * replica keeps (the newest entries, the last seq) still shows. */
Test(digest, retention_done_by_one_replica_only_does_not_count)
{
	static const struct pe_retention_rule rr[] = {
		{.prefix = "k/", .plen = 2, .max_count = 2},
		{.prefix = "a/", .plen = 2, .max_age_ms = 1000},
	};
	struct eng a = open_opts(8, rr, 2), b = open_opts(9, rr, 2);
	char p[32];
	for (int i = 0; i < 6; i++) {
		snprintf(p, sizeof p, "k%d", i);
		put(&a, "k/cur", p);
		put(&b, "k/cur", p);
		put(&a, "a/old", p);
		put(&b, "a/old", p);
	}
	now_ms += 5000; /* a/old's entries are past their age now */
	uint32_t pk = part(&a, "k/cur"), pa = part(&a, "a/old");
	cr_assert_eq(pe_flush_sync(a.e, pk), 0);
	cr_assert_eq(pe_compact_sync(a.e, pk, true), 0);
	if (pa != pk) {
		cr_assert_eq(pe_flush_sync(a.e, pa), 0);
		cr_assert_eq(pe_compact_sync(a.e, pa, true), 0);
	}
	/* a's compaction dropped what retention allows, b's did not run */
	struct pe_meta ma, mb;
	cr_assert_eq(pe_meta_sync(a.e, "k/cur", 5, &ma), 0);
	cr_assert_eq(pe_meta_sync(b.e, "k/cur", 5, &mb), 0);
	cr_assert_eq(ma.first_seq, 5, "retention did not run on a (%llu)",
		     (unsigned long long)ma.first_seq);
	cr_assert_eq(mb.first_seq, 1);
	cr_assert_eq(pe_meta_sync(a.e, "a/old", 5, &ma), 0);
	cr_assert_gt(ma.first_seq, 1, "age retention did not run on a");
	struct pe_digest da[NP], db[NP];
	digests(&a, da);
	digests(&b, db);
	for (int q = 0; q < NP; q++) {
		cr_assert_eq(da[q].digest, db[q].digest, "partition %d", q);
		cr_assert_eq(da[q].entries, db[q].entries, "partition %d", q);
	}
	/* an age-retained stream's last seq counts */
	put(&a, "a/old", "x");
	digests(&a, da);
	digests(&b, db);
	cr_assert_neq(da[pa].digest, db[pa].digest);
	put(&b, "a/old", "x");
	digests(&a, da);
	digests(&b, db);
	cr_assert_eq(da[pa].digest, db[pa].digest);
	/* and a count-retained stream's newest entries */
	put(&a, "k/cur", "k6");
	put(&b, "k/cur", "K6");
	digests(&a, da);
	digests(&b, db);
	cr_assert_neq(da[pk].digest, db[pk].digest);
	close_one(&a);
	close_one(&b);
}

Test(digest, bad_arguments)
{
	struct eng a = open_one(7);
	struct pe_digest d;
	cr_assert_eq(pe_partition_digest(a.e, NP, &d), -PARLEY_EINVAL);
	cr_assert_eq(pe_partition_digest(a.e, 0, NULL), -PARLEY_EINVAL);
	close_one(&a);
}
