/*
 * test_engine_limits.c — the engine's one size limit (parley_engine.h,
 * "Size limits"): an append whose encoded command is over PE_MAX_COMMAND
 * (the Raft core's largest entry) is refused by pe_append at once with
 * -PARLEY_ETOOBIG and its callback never runs; one exactly at the limit is
 * accepted and goes end to end through the partition's Raft group (one
 * voter), WAL and recovery. Earlier, pe_append took a command up to 2 MiB
 * and entries up to 1 MiB, the Raft core refused it at propose, and the
 * callback reported -PARLEY_ETOOBIG later (the engine simulator found it:
 * seed 100169 of the long tier).
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "parley_engine.h"
#include "io.h"

#define MEM_ENGINE_PARTITIONS 4
#define MEM_ENGINE_SHARDS 1
#include "mem_engine.h"

TestSuite(limits, .init = mem_engine_setup, .fini = mem_engine_teardown);

/* Entry i's payload: bytes derived from (i, offset), so a mix-up shows. */
static uint8_t *payload(uint32_t i, uint32_t len)
{
	uint8_t *p = malloc(len ? len : 1);
	cr_assert_not_null(p);
	for (uint32_t k = 0; k < len; k++)
		p[k] = (uint8_t)(k * 31u + i * 7u + (k >> 9));
	return p;
}

static atomic_int g_calls;
static atomic_int g_err;

static void count_cb(void *arg, const struct pe_append_result *r)
{
	(void)arg;
	atomic_store(&g_err, r->err);
	atomic_fetch_add(&g_calls, 1);
}

static uint64_t last_seq(const char *key)
{
	struct pe_read_req q = {.key = key, .klen = strlen(key),
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1};
	struct pe_entry *es = NULL;
	uint32_t n = 0;
	cr_assert_eq(pe_read_sync(eng, &q, &es, &n, NULL), 0);
	uint64_t s = n ? es[0].seq : 0;
	free(es);
	return s;
}

/* Appends `count` entries of the given lengths under `key` (pe_append_sync),
 * then reads them back (before and after a reopen) byte for byte. */
static void append_and_check(const char *key, const uint32_t *lens,
			     uint32_t count)
{
	struct pe_input in[4];
	uint8_t *bufs[4];
	cr_assert(count <= 4);
	for (uint32_t i = 0; i < count; i++) {
		bufs[i] = payload(i, lens[i]);
		in[i] = (struct pe_input){.type = (uint16_t)(i + 1),
					  .len = lens[i], .payload = bufs[i]};
	}
	cr_assert(pe_append_fits(strlen(key), in, count));
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = in, .count = count};
	memset(q.producer, 0x5a, PE_PRODUCER_LEN);
	struct pe_append_result r;
	int rc = pe_append_sync(eng, &q, &r);
	cr_assert_eq(rc, 0, "append at the limit: %s", parley_strerror(rc));
	cr_assert_eq(r.seq, 1);
	cr_assert_eq(r.count, count);
	for (int pass = 0; pass < 2; pass++) {
		struct pe_read_req rq = {.key = key, .klen = strlen(key),
					 .from = 1, .dir = PE_FORWARD,
					 .limit = PE_MAX_READ};
		struct pe_entry *es = NULL;
		uint32_t n = 0;
		cr_assert_eq(pe_read_sync(eng, &rq, &es, &n, NULL), 0);
		cr_assert_eq(n, count, "pass %d", pass);
		for (uint32_t i = 0; i < count; i++) {
			cr_assert_eq(es[i].seq, i + 1);
			cr_assert_eq(es[i].type, i + 1);
			cr_assert_eq(es[i].len, lens[i]);
			cr_assert(!memcmp(es[i].payload, bufs[i], lens[i]),
				  "entry %u differs (pass %d)", i, pass);
		}
		free(es);
		if (pass == 0)
			mem_engine_reopen(); /* recovery replays it from the WAL */
	}
	/* the same producer again: an idempotent duplicate, not a new one */
	struct pe_append_result r2;
	cr_assert_eq(pe_append_sync(eng, &q, &r2), 0);
	cr_assert(r2.duplicate);
	cr_assert_eq(r2.seq, 1);
	for (uint32_t i = 0; i < count; i++)
		free(bufs[i]);
}

/* The arithmetic the header documents. */
Test(limits, documented_sizes)
{
	cr_assert_eq(PE_MAX_COMMAND, 1u << 20);
	cr_assert_eq(PE_APPEND_OVERHEAD(0), 38u);
	cr_assert_eq(PE_ENTRY_OVERHEAD, 8u);
	cr_assert_eq(PE_DELETE_BYTES(0), 10u);
	cr_assert_eq(PE_MAX_PAYLOAD, (1u << 20) - 301u);
	cr_assert_eq(PE_APPEND_BYTES(PE_MAX_KEY, 1, PE_MAX_PAYLOAD),
		     PE_MAX_COMMAND);
	cr_assert_eq(PE_APPEND_BYTES(3, 2, 1000), 38u + 3u + 16u + 1000u);
}

/* Two entries, each well under PE_MAX_PAYLOAD, whose command is one byte
 * over PE_MAX_COMMAND: refused at once, nothing queued, no callback. */
Test(limits, batch_over_the_limit_is_refused_at_once)
{
	const char *key = "s/9";
	uint32_t total = PE_MAX_COMMAND - PE_APPEND_OVERHEAD(3) -
			 2 * PE_ENTRY_OVERHEAD + 1; /* one byte over */
	uint32_t lens[2] = {total / 2, total - total / 2};
	cr_assert(lens[0] < PE_MAX_PAYLOAD && lens[1] < PE_MAX_PAYLOAD);
	cr_assert_eq(PE_APPEND_BYTES(3, 2, total), PE_MAX_COMMAND + 1ull);
	struct pe_input in[2];
	uint8_t *bufs[2];
	for (int i = 0; i < 2; i++) {
		bufs[i] = payload((uint32_t)i, lens[i]);
		in[i] = (struct pe_input){.len = lens[i], .payload = bufs[i]};
	}
	cr_assert_not(pe_append_fits(3, in, 2));
	struct pe_append_req q = {.key = key, .klen = 3,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = in, .count = 2};
	atomic_store(&g_calls, 0);
	int rc = pe_append(eng, &q, count_cb, NULL);
	cr_assert_eq(rc, -PARLEY_ETOOBIG, "pe_append returned %s",
		     parley_strerror(rc));
	/* anything queued on that shard before a later append has completed
	 * by the time it completes: the refused one must not show up */
	struct pe_input one = {.len = 1, .payload = "x"};
	struct pe_append_req q1 = {.key = key, .klen = 3,
				   .expected_last_seq = PE_NO_EXPECT,
				   .entries = &one, .count = 1};
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(eng, &q1, &r), 0);
	cr_assert_eq(r.seq, 1, "the refused batch took seqs");
	cr_assert_eq(atomic_load(&g_calls), 0,
		     "the refused append's callback ran (err %d)",
		     atomic_load(&g_err));
	cr_assert_eq(last_seq(key), 1);
	/* one byte less fits and goes through */
	in[1].len--;
	cr_assert(pe_append_fits(3, in, 2));
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert_eq(r.seq, 2);
	cr_assert_eq(last_seq(key), 3);
	free(bufs[0]);
	free(bufs[1]);
}

/* Batches whose commands are exactly PE_MAX_COMMAND bytes: accepted,
 * committed through the partition's Raft group, read back, recovered. */
Test(limits, batch_exactly_at_the_limit_goes_end_to_end)
{
	uint32_t total = PE_MAX_COMMAND - PE_APPEND_OVERHEAD(3) -
			 3 * PE_ENTRY_OVERHEAD;
	uint32_t lens[3] = {total / 3, total / 3, total - 2 * (total / 3)};
	append_and_check("s/1", lens, 3);
}

/* One entry of PE_MAX_PAYLOAD under the longest key: the largest single
 * entry fits whatever the key (a SEND's record is one such entry). */
Test(limits, largest_entry_under_longest_key_goes_end_to_end)
{
	char key[PE_MAX_KEY + 1];
	memset(key, 'k', PE_MAX_KEY);
	key[PE_MAX_KEY] = 0;
	uint32_t len = PE_MAX_PAYLOAD;
	append_and_check(key, &len, 1);
}

Test(limits, entry_over_the_payload_limit_is_refused_at_once)
{
	uint32_t len = PE_MAX_PAYLOAD + 1;
	uint8_t *b = payload(0, len);
	struct pe_input in = {.len = len, .payload = b};
	cr_assert_not(pe_append_fits(1, &in, 1));
	struct pe_append_req q = {.key = "k", .klen = 1,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	atomic_store(&g_calls, 0);
	cr_assert_eq(pe_append(eng, &q, count_cb, NULL), -PARLEY_ETOOBIG);
	in.len = 1;
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	cr_assert_eq(r.seq, 1);
	cr_assert_eq(atomic_load(&g_calls), 0);
	free(b);
}

/* A delete is always within the limit, under any key. */
Test(limits, delete_under_the_longest_key)
{
	char key[PE_MAX_KEY];
	memset(key, 'd', sizeof key);
	struct pe_input in = {.len = 3, .payload = "abc"};
	struct pe_append_req q = {.key = key, .klen = sizeof key,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(eng, &q, &r), 0);
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(eng, key, sizeof key, UINT64_MAX, &dr), 0);
}
