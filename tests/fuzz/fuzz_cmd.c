/*
 * fuzz_cmd.c — libFuzzer target for the log command codec
 * (engine/log/cmd.c): the bytes a WAL record body or a Raft entry payload
 * hands to the partition state machine.
 *
 * Input byte 0 picks the kind (bit 0: CMD_APPEND / CMD_DELETE; bit 1: an
 * unknown kind, which must be refused); the rest is the body.
 * Properties checked (abort on violation, so libFuzzer reports):
 *   - cmd_decode returns 0 or -PARLEY_ECORRUPT, never anything else;
 *   - a decoded command's pointers lie inside the body, its entries
 *     iterate exactly `count` times and cover the entry bytes exactly;
 *   - whatever decodes re-encodes to exactly the same bytes
 *     (cmd_append_encode / cmd_delete_encode: one encoding per command),
 *     and cmd_append_size agrees;
 *   - cmd_stamp_ts changes only the timestamp.
 * ASan/UBSan (the runner's flags) catch any over-read.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

static struct pe_input g_in[PE_MAX_BATCH];
static uint8_t g_enc[CMD_MAX_BYTES];

static void check(int cond)
{
	if (!cond)
		abort();
}

static int within(const void *p, size_t n, const uint8_t *base, size_t len)
{
	const uint8_t *q = p;
	return q >= base && q + n <= base + len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint16_t kind = (data[0] & 2) ? (uint16_t)(3 + (data[0] >> 2))
				      : (data[0] & 1) ? CMD_DELETE : CMD_APPEND;
	const uint8_t *body = data + 1;
	size_t len = size - 1;
	struct cmd c;
	int rc = cmd_decode(kind, body, len, &c);
	check(rc == 0 || rc == -PARLEY_ECORRUPT);
	if (kind != CMD_APPEND && kind != CMD_DELETE)
		check(rc != 0);
	if (rc)
		return 0;
	check(c.kind == kind && c.klen > 0 && within(c.key, c.klen, body, len));
	if (kind == CMD_DELETE) {
		int64_t n = cmd_delete_encode(g_enc, sizeof g_enc, c.key, c.klen,
					      c.through);
		check(n == (int64_t)len && !memcmp(g_enc, body, len));
		return 0;
	}
	check(c.count >= 1 && c.count <= PE_MAX_BATCH);
	check(within(c.producer, PE_PRODUCER_LEN, body, len));
	check(within(c.entries, c.entries_len, body, len));
	struct cmd_entry_iter it;
	struct cmd_entry ce;
	uint32_t n = 0;
	size_t covered = 0;
	bool legacy = false; /* an entry over PE_MAX_PAYLOAD (cmd.h, 1) */
	cmd_entry_iter_init(&it, &c);
	while (cmd_entry_next(&it, &ce)) {
		check(n < c.count && ce.len <= CMD_MAX_BYTES);
		legacy |= ce.len > PE_MAX_PAYLOAD;
		check(within(ce.payload, ce.len, body, len));
		g_in[n] = (struct pe_input){.type = ce.type, .flags = ce.flags,
					    .len = ce.len, .payload = ce.payload};
		covered += CMD_ENTRY_HDR + ce.len;
		n++;
	}
	check(n == c.count && covered == c.entries_len);
	if (legacy) { /* decodes, but nothing may propose it again */
		check(cmd_append_size(c.klen, g_in, n) == 0);
		return 0;
	}
	check(cmd_append_size(c.klen, g_in, n) == len);
	int64_t m = cmd_append_encode(g_enc, sizeof g_enc, c.key, c.klen,
				      c.producer, c.ts, c.expected, g_in, n);
	check(m == (int64_t)len && !memcmp(g_enc, body, len));
	/* stamping changes the timestamp and nothing else */
	cmd_stamp_ts(g_enc, len, ~c.ts);
	struct cmd d;
	check(cmd_decode(CMD_APPEND, g_enc, len, &d) == 0);
	check(d.ts == ~c.ts && d.expected == c.expected && d.count == c.count &&
	      d.klen == c.klen && !memcmp(d.key, c.key, c.klen));
	return 0;
}
