/*
 * cmd.c — the log command codec (see cmd.h for the formats and the
 * contract). Pure functions: no allocation, no I/O, any thread.
 */
#include <string.h>

#include "cmd.h"

size_t cmd_append_size(size_t klen, const struct pe_input *in, uint32_t count)
{
	if (klen == 0 || klen > PE_MAX_KEY || count == 0 ||
	    count > PE_MAX_BATCH || !in)
		return 0;
	uint64_t len = CMD_APPEND_HDR(klen);
	for (uint32_t i = 0; i < count; i++) {
		if (in[i].len > PE_MAX_PAYLOAD)
			return 0;
		len += CMD_ENTRY_HDR + in[i].len;
	}
	return len > CMD_MAX_BYTES ? 0 : (size_t)len;
}

int64_t cmd_append_encode(uint8_t *buf, size_t cap, const void *key,
			  size_t klen, const uint8_t producer[PE_PRODUCER_LEN],
			  uint64_t ts, uint64_t expected,
			  const struct pe_input *in, uint32_t count)
{
	size_t need = cmd_append_size(klen, in, count);
	if (!need)
		return -PARLEY_ETOOBIG;
	if (!key || need > cap)
		return -PARLEY_EINVAL;
	uint8_t *b = buf;
	*b++ = (uint8_t)klen;
	memcpy(b, key, klen);
	b += klen;
	memcpy(b, producer, PE_PRODUCER_LEN);
	b += PE_PRODUCER_LEN;
	le_put64(b, ts);
	b += 8;
	le_put64(b, expected);
	b += 8;
	le_put32(b, count);
	b += 4;
	for (uint32_t i = 0; i < count; i++) {
		if (in[i].len && !in[i].payload)
			return -PARLEY_EINVAL;
		le_put16(b, in[i].type);
		le_put16(b + 2, in[i].flags);
		le_put32(b + 4, in[i].len);
		b += CMD_ENTRY_HDR;
		if (in[i].len)
			memcpy(b, in[i].payload, in[i].len);
		b += in[i].len;
	}
	PARLEY_ASSERT((size_t)(b - buf) == need);
	return (int64_t)need;
}

int64_t cmd_delete_encode(uint8_t *buf, size_t cap, const void *key,
			  size_t klen, uint64_t through)
{
	if (!key || klen == 0 || klen > PE_MAX_KEY || cap < CMD_DELETE_BYTES(klen))
		return -PARLEY_EINVAL;
	buf[0] = (uint8_t)klen;
	memcpy(buf + 1, key, klen);
	le_put64(buf + 1 + klen, through);
	return (int64_t)CMD_DELETE_BYTES(klen);
}

static int decode_append(const uint8_t *body, size_t len, struct cmd *d)
{
	struct le_reader r;
	le_reader_init(&r, body, len);
	d->klen = le_read8(&r);
	d->key = le_read_bytes(&r, d->klen);
	d->producer = le_read_bytes(&r, PE_PRODUCER_LEN);
	d->ts = le_read64(&r);
	d->expected = le_read64(&r);
	d->count = le_read32(&r);
	if (!r.ok || d->klen == 0 || d->count == 0 || d->count > PE_MAX_BATCH)
		return -PARLEY_ECORRUPT;
	d->entries = body + r.off;
	/* validate every entry before anyone changes state on its behalf */
	for (uint32_t i = 0; i < d->count; i++) {
		le_read16(&r);
		le_read16(&r);
		uint32_t n = le_read32(&r);
		if (!le_read_bytes(&r, n)) /* bounded by the body only */
			return -PARLEY_ECORRUPT;
	}
	if (!r.ok || r.off != r.len)
		return -PARLEY_ECORRUPT;
	d->entries_len = (uint32_t)(body + len - d->entries);
	return 0;
}

int cmd_decode(uint16_t kind, const uint8_t *body, size_t len, struct cmd *out)
{
	memset(out, 0, sizeof *out);
	out->kind = kind;
	if (!body || len > CMD_MAX_BYTES)
		return -PARLEY_ECORRUPT;
	if (kind == CMD_APPEND)
		return decode_append(body, len, out);
	if (kind != CMD_DELETE || len < 1)
		return -PARLEY_ECORRUPT;
	out->klen = body[0];
	if (out->klen == 0 || len != CMD_DELETE_BYTES(out->klen))
		return -PARLEY_ECORRUPT;
	out->key = body + 1;
	out->through = le_get64(body + 1 + out->klen);
	return 0;
}

void cmd_entry_iter_init(struct cmd_entry_iter *it, const struct cmd *c)
{
	le_reader_init(&it->r, c->entries, c->entries_len);
	it->left = c->kind == CMD_APPEND ? c->count : 0;
}

bool cmd_entry_next(struct cmd_entry_iter *it, struct cmd_entry *out)
{
	if (!it->left)
		return false;
	it->left--;
	out->type = le_read16(&it->r);
	out->flags = le_read16(&it->r);
	out->len = le_read32(&it->r);
	out->payload = le_read_bytes(&it->r, out->len);
	PARLEY_ASSERT(it->r.ok); /* only decoded (validated) commands */
	return true;
}

void cmd_stamp_ts(uint8_t *body, size_t len, uint64_t ts)
{
	PARLEY_ASSERT(len >= 1 && len >= CMD_APPEND_HDR(body[0]));
	le_put64(body + 1 + body[0] + PE_PRODUCER_LEN, ts);
}
