/*
 * test_cmd.c — the log command codec (engine/log/cmd.c): every command
 * kind round-trips, the encoding is canonical, every truncation and every
 * out-of-bounds field is refused, the proposer's timestamp stamp touches
 * nothing else.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

static const uint8_t producer[PE_PRODUCER_LEN] = {1, 2, 3, 4, 5, 6, 7, 8,
						   9, 10, 11, 12, 13, 14, 15, 16};

static size_t enc_append(uint8_t *buf, size_t cap, const struct pe_input *in,
			 uint32_t n)
{
	int64_t len = cmd_append_encode(buf, cap, "c/room", 6, producer, 1234,
					PE_NO_EXPECT, in, n);
	cr_assert_gt(len, 0);
	return (size_t)len;
}

Test(cmd, append_round_trips_every_field)
{
	struct pe_input in[3] = {
		{.type = 7, .flags = 0x8001, .len = 5, .payload = "hello"},
		{.type = 0, .flags = 0, .len = 0, .payload = NULL},
		{.type = 65535, .flags = 1, .len = 3, .payload = "abc"},
	};
	uint8_t buf[256];
	size_t len = enc_append(buf, sizeof buf, in, 3);
	cr_assert_eq(len, cmd_append_size(6, in, 3));
	struct cmd c;
	cr_assert_eq(cmd_decode(CMD_APPEND, buf, len, &c), 0);
	cr_assert_eq(c.kind, CMD_APPEND);
	cr_assert_eq(c.klen, 6);
	cr_assert_arr_eq(c.key, "c/room", 6);
	cr_assert_arr_eq(c.producer, producer, PE_PRODUCER_LEN);
	cr_assert_eq(c.ts, 1234);
	cr_assert_eq(c.expected, PE_NO_EXPECT);
	cr_assert_eq(c.count, 3);
	struct cmd_entry_iter it;
	struct cmd_entry e;
	cmd_entry_iter_init(&it, &c);
	for (int i = 0; i < 3; i++) {
		cr_assert(cmd_entry_next(&it, &e));
		cr_assert_eq(e.type, in[i].type);
		cr_assert_eq(e.flags, in[i].flags);
		cr_assert_eq(e.len, in[i].len);
		if (e.len)
			cr_assert_arr_eq(e.payload, in[i].payload, e.len);
	}
	cr_assert_not(cmd_entry_next(&it, &e));
}

Test(cmd, delete_round_trips)
{
	uint8_t buf[300];
	uint8_t key[PE_MAX_KEY];
	memset(key, 'k', sizeof key);
	int64_t len = cmd_delete_encode(buf, sizeof buf, key, sizeof key, 42);
	cr_assert_eq(len, CMD_DELETE_BYTES(PE_MAX_KEY));
	struct cmd c;
	cr_assert_eq(cmd_decode(CMD_DELETE, buf, (size_t)len, &c), 0);
	cr_assert_eq(c.klen, PE_MAX_KEY);
	cr_assert_arr_eq(c.key, key, sizeof key);
	cr_assert_eq(c.through, 42);
	len = cmd_delete_encode(buf, sizeof buf, "s", 1, UINT64_MAX);
	cr_assert_eq(cmd_decode(CMD_DELETE, buf, (size_t)len, &c), 0);
	cr_assert_eq(c.through, UINT64_MAX);
}

Test(cmd, every_truncation_and_extension_is_refused)
{
	struct pe_input in[2] = {{.type = 1, .len = 4, .payload = "abcd"},
				 {.type = 2, .len = 2, .payload = "xy"}};
	uint8_t buf[256];
	size_t len = enc_append(buf, sizeof buf, in, 2);
	struct cmd c;
	for (size_t n = 0; n < len; n++)
		cr_assert_eq(cmd_decode(CMD_APPEND, buf, n, &c), -PARLEY_ECORRUPT,
			     "prefix of %zu bytes decoded", n);
	buf[len] = 0;
	cr_assert_eq(cmd_decode(CMD_APPEND, buf, len + 1, &c), -PARLEY_ECORRUPT);
	uint8_t d[16];
	int64_t dl = cmd_delete_encode(d, sizeof d, "key", 3, 9);
	for (int64_t n = 0; n < dl; n++)
		cr_assert_eq(cmd_decode(CMD_DELETE, d, (size_t)n, &c),
			     -PARLEY_ECORRUPT);
	cr_assert_eq(cmd_decode(CMD_DELETE, d, (size_t)dl + 1, &c),
		     -PARLEY_ECORRUPT);
	/* a body of one kind is not the other's, and unknown kinds fail */
	cr_assert_eq(cmd_decode(CMD_DELETE, buf, len, &c), -PARLEY_ECORRUPT);
	cr_assert_eq(cmd_decode(CMD_APPEND, d, (size_t)dl, &c), -PARLEY_ECORRUPT);
	cr_assert_eq(cmd_decode(3, buf, len, &c), -PARLEY_ECORRUPT);
	cr_assert_eq(cmd_decode(0, d, (size_t)dl, &c), -PARLEY_ECORRUPT);
}

Test(cmd, bounds_are_enforced_both_ways)
{
	struct pe_input one = {.type = 1, .len = 1, .payload = "a"};
	uint8_t buf[256];
	size_t len = enc_append(buf, sizeof buf, &one, 1);
	struct cmd c;
	/* klen 0 */
	uint8_t b2[256];
	memcpy(b2, buf, len);
	b2[0] = 0;
	cr_assert_eq(cmd_decode(CMD_APPEND, b2, len, &c), -PARLEY_ECORRUPT);
	/* count 0 and count > PE_MAX_BATCH */
	size_t coff = 1 + 6 + PE_PRODUCER_LEN + 16;
	memcpy(b2, buf, len);
	le_put32(b2 + coff, 0);
	cr_assert_eq(cmd_decode(CMD_APPEND, b2, len, &c), -PARLEY_ECORRUPT);
	le_put32(b2 + coff, PE_MAX_BATCH + 1);
	cr_assert_eq(cmd_decode(CMD_APPEND, b2, len, &c), -PARLEY_ECORRUPT);
	/* an entry length past the end of the body */
	memcpy(b2, buf, len);
	le_put32(b2 + coff + 4 + 4, PE_MAX_PAYLOAD + 1);
	cr_assert_eq(cmd_decode(CMD_APPEND, b2, len, &c), -PARLEY_ECORRUPT);
	/* the encoder refuses what the decoder would */
	cr_assert_eq(cmd_append_size(0, &one, 1), 0);
	cr_assert_eq(cmd_append_size(PE_MAX_KEY + 1, &one, 1), 0);
	cr_assert_eq(cmd_append_size(6, &one, 0), 0);
	struct pe_input big = {.len = PE_MAX_PAYLOAD + 1};
	cr_assert_eq(cmd_append_size(6, &big, 1), 0);
	/* all entries together over CMD_MAX_BYTES */
	static struct pe_input many[3];
	static uint8_t payload[PE_MAX_PAYLOAD];
	for (int i = 0; i < 3; i++)
		many[i] = (struct pe_input){.len = PE_MAX_PAYLOAD, .payload = payload};
	cr_assert_eq(cmd_append_size(6, many, 2), 0); /* 2 MiB + headers */
	cr_assert_gt(cmd_append_size(6, many, 1), 0);
	cr_assert_lt(cmd_append_encode(buf, 10, "c/room", 6, producer, 0, 0,
				       &one, 1), 0);
}

/* The encoder's bound is the Raft entry: kind byte + body <= PE_MAX_COMMAND
 * = RAFT_MAX_ENTRY_BYTES (parley_engine.h, "Size limits"). */
Test(cmd, the_encoded_command_is_bounded_by_the_raft_entry)
{
	cr_assert_eq(CMD_MAX_BYTES + CMD_KIND_BYTES, RAFT_MAX_ENTRY_BYTES);
	static uint8_t payload[PE_MAX_PAYLOAD];
	/* two entries under "c/room" filling the entry exactly */
	uint32_t total = PE_MAX_COMMAND - PE_APPEND_OVERHEAD(6) -
			 2 * PE_ENTRY_OVERHEAD;
	struct pe_input two[2] = {{.len = total / 2, .payload = payload},
				  {.len = total - total / 2, .payload = payload}};
	cr_assert_eq(cmd_append_size(6, two, 2), CMD_MAX_BYTES);
	cr_assert(pe_append_fits(6, two, 2));
	two[1].len++;
	cr_assert_eq(cmd_append_size(6, two, 2), 0, "one byte over");
	cr_assert_not(pe_append_fits(6, two, 2));
	uint8_t *buf = malloc(CMD_MAX_BYTES + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(cmd_append_encode(buf, CMD_MAX_BYTES + 1, "c/room", 6,
				       producer, 0, 0, two, 2),
		     -PARLEY_ETOOBIG);
	/* the largest entry under the longest key: exactly the limit */
	char key[PE_MAX_KEY];
	memset(key, 'k', sizeof key);
	struct pe_input one = {.len = PE_MAX_PAYLOAD, .payload = payload};
	cr_assert_eq(cmd_append_size(PE_MAX_KEY, &one, 1), CMD_MAX_BYTES);
	cr_assert_eq(cmd_append_encode(buf, CMD_MAX_BYTES, key, PE_MAX_KEY,
				       producer, 0, 0, &one, 1),
		     (int64_t)CMD_MAX_BYTES);
	struct cmd c;
	cr_assert_eq(cmd_decode(CMD_APPEND, buf, CMD_MAX_BYTES, &c), 0);
	/* a body over CMD_MAX_BYTES never decodes */
	cr_assert_eq(cmd_decode(CMD_APPEND, buf, CMD_MAX_BYTES + 1, &c),
		     -PARLEY_ECORRUPT);
	free(buf);
}

/* A log written while entries up to 1 MiB passed pe_append holds entries a
 * little over today's PE_MAX_PAYLOAD (under a short key, in a command the
 * Raft core took): they still decode, so recovery reads them; only
 * proposing such a command again is refused. */
Test(cmd, an_entry_over_the_payload_limit_in_a_stored_command_decodes)
{
	static uint8_t payload[PE_MAX_PAYLOAD + 200];
	uint32_t len = PE_MAX_PAYLOAD + 200;
	uint32_t body = CMD_APPEND_HDR(1) + CMD_ENTRY_HDR + len;
	cr_assert_leq(body, CMD_MAX_BYTES);
	uint8_t *b = malloc(body);
	cr_assert_not_null(b);
	b[0] = 1;
	b[1] = 'k';
	memcpy(b + 2, producer, PE_PRODUCER_LEN);
	le_put64(b + 2 + 16, 99);
	le_put64(b + 2 + 24, PE_NO_EXPECT);
	le_put32(b + 2 + 32, 1);
	uint8_t *e = b + CMD_APPEND_HDR(1);
	le_put16(e, 5);
	le_put16(e + 2, 0);
	le_put32(e + 4, len);
	memset(payload, 0xab, len);
	memcpy(e + 8, payload, len);
	struct cmd c;
	cr_assert_eq(cmd_decode(CMD_APPEND, b, body, &c), 0);
	struct cmd_entry_iter it;
	struct cmd_entry ce;
	cmd_entry_iter_init(&it, &c);
	cr_assert(cmd_entry_next(&it, &ce));
	cr_assert_eq(ce.len, len);
	cr_assert_eq(ce.payload[len - 1], 0xab);
	struct pe_input in = {.len = len, .payload = payload};
	cr_assert_eq(cmd_append_size(1, &in, 1), 0);
	free(b);
}

Test(cmd, stamp_changes_only_the_timestamp)
{
	struct pe_input in = {.type = 3, .flags = 4, .len = 2, .payload = "hi"};
	uint8_t buf[128], before[128];
	size_t len = enc_append(buf, sizeof buf, &in, 1);
	memcpy(before, buf, len);
	cmd_stamp_ts(buf, len, 0x0102030405060708ull);
	struct cmd c;
	cr_assert_eq(cmd_decode(CMD_APPEND, buf, len, &c), 0);
	cr_assert_eq(c.ts, 0x0102030405060708ull);
	size_t toff = 1 + 6 + PE_PRODUCER_LEN;
	cr_assert_arr_eq(buf, before, toff);
	cr_assert_arr_eq(buf + toff + 8, before + toff + 8, len - toff - 8);
}
