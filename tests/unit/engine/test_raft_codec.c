/*
 * test_raft_codec.c — unit tests for engine/raft_codec.c (the Raft wire
 * codec).
 *
 * What is proven: every message type round-trips (borrowed and copied
 * decode, size == encode, re-encode is byte-identical); coalesced batches of
 * thousands of heartbeats round-trip; a frame cut at every length is
 * "incomplete" (0) and touches nothing; every single-bit flip of every sample
 * frame is refused as corrupt; every limit is enforced on both sides
 * (counts, sizes, types, flags, canonical field masks, conf members, batch
 * node pair, max frame, arena capacity); the encoder never writes past cap;
 * garbage, and garbage behind valid checksums, is rejected or re-encodes
 * identically. Randomized tests print their seed (PARLEY_SEED=<n> replays).
 *
 * Golden frames: the fuzz seeds in tests/fuzz/corpus/raft_codec/ are this
 * encoder's output and are compared byte for byte (wire format stability);
 * PARLEY_RAFT_CODEC_SEEDS=<dir> writes them to <dir> instead (how that
 * corpus was made).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "raft_codec.h"

static const char *const TYPE_NAMES[RAFT_MSG_TYPE_COUNT] = {
	"none", "append", "append_resp", "vote", "vote_resp", "prevote",
	"prevote_resp", "heartbeat", "heartbeat_resp", "snapshot",
	"snapshot_resp", "timeout_now", "read_index", "read_index_resp",
};

static uint8_t g_data[4][300];
static struct raft_entry g_ents[RAFT_MAX_MSG_ENTRIES];
static uint8_t g_chunk[RAFT_MAX_CHUNK_BYTES];

#define BUF_CAP (2u << 20)
static uint8_t g_buf[BUF_CAP], g_buf2[BUF_CAP];
static uint8_t g_arena_mem[8u << 20];

static void fill_data(void)
{
	for (size_t i = 0; i < sizeof g_data; i++)
		((uint8_t *)g_data)[i] = (uint8_t)(i * 7 + 3);
	for (size_t i = 0; i < sizeof g_chunk; i++)
		g_chunk[i] = (uint8_t)(i * 13 + 1);
}

static void sample_conf(struct raft_conf *c)
{
	memset(c, 0, sizeof *c);
	c->n = 4;
	c->max_id = 12;
	uint64_t ids[] = {3, 5, 9, 12};
	for (int i = 0; i < 4; i++) {
		c->ids[i] = ids[i];
		c->roles[i] = i == 3 ? RAFT_LEARNER : RAFT_VOTER;
	}
}

/* A representative message of each type, every field it carries nonzero. */
static void sample(uint8_t type, struct raft_msg *m)
{
	fill_data();
	memset(m, 0, sizeof *m);
	m->type = type;
	m->group = 0x1122334455667788ull;
	m->from = 3;
	m->to = 0xFFFFFFFFFFFFFFFFull;
	m->term = 7;
	switch (type) {
	case RAFT_MSG_APPEND:
		m->index = 100;
		m->log_term = 6;
		m->commit = 99;
		m->n_entries = 4;
		for (uint32_t i = 0; i < 4; i++) {
			g_ents[i] = (struct raft_entry){
				.term = 7, .index = 101 + i,
				.csum = 0xC0FFEE00ull + i,
				.len = i == 1 ? 0 : (uint32_t)sizeof g_data[i] - i,
				.type = i == 0 ? RAFT_ENTRY_NOOP
					       : i == 3 ? RAFT_ENTRY_CONF
							: RAFT_ENTRY_NORMAL,
				.data = i == 1 ? NULL : g_data[i]};
		}
		m->entries = g_ents;
		break;
	case RAFT_MSG_APPEND_RESP:
		m->flags = RAFT_MSGF_REJECT | RAFT_MSGF_DAMAGED;
		m->index = 100;
		m->log_term = 5;
		m->hint = 90;
		break;
	case RAFT_MSG_VOTE:
	case RAFT_MSG_PREVOTE:
		m->flags = RAFT_MSGF_TRANSFER;
		m->index = 1u << 31;
		m->log_term = 6;
		break;
	case RAFT_MSG_VOTE_RESP:
	case RAFT_MSG_PREVOTE_RESP:
		m->flags = RAFT_MSGF_REJECT;
		break;
	case RAFT_MSG_HEARTBEAT:
		m->flags = RAFT_MSGF_QUIESCE;
		m->commit = 1234;
		m->ctx = 0xABCDEF;
		break;
	case RAFT_MSG_HEARTBEAT_RESP:
		m->flags = RAFT_MSGF_DAMAGED;
		m->index = 1300;
		m->hint = 1201;
		m->ctx = 0xABCDEF;
		break;
	case RAFT_MSG_SNAPSHOT:
		m->flags = RAFT_MSGF_LAST;
		m->index = 5000;
		m->snap.index = 5000;
		m->snap.term = 6;
		m->snap.size = 3 * RAFT_MAX_CHUNK_BYTES - 17;
		m->snap.csum = 0x5A5A5A5A12345678ull;
		sample_conf(&m->snap.conf);
		m->offset = 2 * RAFT_MAX_CHUNK_BYTES;
		m->chunk_len = RAFT_MAX_CHUNK_BYTES - 17;
		m->chunk = g_chunk;
		break;
	case RAFT_MSG_SNAPSHOT_RESP:
		m->index = 5000;
		m->snap.index = 5000;
		m->snap.term = 6;
		m->offset = RAFT_MAX_CHUNK_BYTES;
		break;
	case RAFT_MSG_TIMEOUT_NOW:
		break;
	case RAFT_MSG_READ_INDEX:
		m->ctx = 42;
		break;
	case RAFT_MSG_READ_INDEX_RESP:
		m->index = 777;
		m->ctx = 42;
		break;
	}
}

static void expect_msg_eq(const struct raft_msg *a, const struct raft_msg *b)
{
	cr_assert_eq(a->type, b->type);
	cr_assert_eq(a->flags, b->flags);
	cr_assert_eq(a->group, b->group);
	cr_assert_eq(a->from, b->from);
	cr_assert_eq(a->to, b->to);
	cr_assert_eq(a->term, b->term);
	cr_assert_eq(a->index, b->index);
	cr_assert_eq(a->log_term, b->log_term);
	cr_assert_eq(a->commit, b->commit);
	cr_assert_eq(a->hint, b->hint);
	cr_assert_eq(a->ctx, b->ctx);
	cr_assert_eq(a->offset, b->offset);
	cr_assert_eq(a->n_entries, b->n_entries);
	for (uint32_t i = 0; i < a->n_entries; i++) {
		const struct raft_entry *x = &a->entries[i], *y = &b->entries[i];
		cr_assert_eq(x->term, y->term);
		cr_assert_eq(x->index, y->index);
		cr_assert_eq(x->csum, y->csum);
		cr_assert_eq(x->type, y->type);
		cr_assert_eq(x->len, y->len);
		if (x->len)
			cr_assert(!memcmp(x->data, y->data, x->len));
	}
	cr_assert_eq(a->snap.index, b->snap.index);
	cr_assert_eq(a->snap.term, b->snap.term);
	cr_assert_eq(a->snap.size, b->snap.size);
	cr_assert_eq(a->snap.csum, b->snap.csum);
	cr_assert_eq(a->snap.conf.n, b->snap.conf.n);
	cr_assert_eq(a->snap.conf.max_id, b->snap.conf.max_id);
	for (uint32_t i = 0; i < RAFT_MAX_MEMBERS; i++) {
		cr_assert_eq(a->snap.conf.ids[i], b->snap.conf.ids[i]);
		cr_assert_eq(a->snap.conf.roles[i], b->snap.conf.roles[i]);
	}
	cr_assert_eq(a->chunk_len, b->chunk_len);
	if (a->chunk_len)
		cr_assert(!memcmp(a->chunk, b->chunk, a->chunk_len));
}

static struct raft_codec_arena g_arena;
static struct raft_codec_arena *arena(void)
{
	raft_codec_arena_init(&g_arena, g_arena_mem, sizeof g_arena_mem);
	return &g_arena;
}

static int enc(const struct raft_msg *m, uint32_t n)
{
	int len = raft_codec_encode(g_buf, BUF_CAP, m, n);
	cr_assert_gt(len, 0, "encode: %s", parley_strerror(len));
	cr_assert_eq(raft_codec_size(m, n), len);
	return len;
}

/* decode g_buf[0..len) and check it equals msgs[0..n) and re-encodes to
 * the same bytes */
static void expect_roundtrip(const struct raft_msg *msgs, uint32_t n, int len,
			     unsigned flags)
{
	struct raft_msg *out;
	uint32_t nout = 0;
	int r = raft_codec_decode(g_buf, (size_t)len, 8u << 20, arena(), flags,
				  &out, &nout);
	cr_assert_eq(r, len, "decode: %d %s", r, parley_strerror(r));
	cr_assert_eq(nout, n);
	for (uint32_t i = 0; i < n; i++)
		expect_msg_eq(&msgs[i], &out[i]);
	if (!(flags & RAFT_CODEC_COPY)) {
		/* borrowed: entry data points into the frame */
		for (uint32_t i = 0; i < n; i++)
			for (uint32_t k = 0; k < out[i].n_entries; k++)
				if (out[i].entries[k].len)
					cr_assert(out[i].entries[k].data > g_buf &&
						  out[i].entries[k].data < g_buf + len);
	}
	int len2 = raft_codec_encode(g_buf2, BUF_CAP, out, nout);
	cr_assert_eq(len2, len);
	cr_assert(!memcmp(g_buf, g_buf2, (size_t)len));
}

Test(raft_codec, roundtrip_every_type)
{
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		struct raft_msg m;
		sample(t, &m);
		int len = enc(&m, 1);
		expect_roundtrip(&m, 1, len, 0);
		expect_roundtrip(&m, 1, len, RAFT_CODEC_COPY);
		/* and with every optional field zero */
		struct raft_msg z = {.type = t, .from = 1, .to = 2};
		len = enc(&z, 1);
		expect_roundtrip(&z, 1, len, 0);
	}
}

/* A commit-only APPEND with RAFT_MSGF_NOACK (raft.h): encodes as flags
 * 0x40 in its u16 flags field and round-trips; the flag is advisory, the
 * only one outside RAFT_MSGF_BASE (what decoders of nodes built before it
 * accept: server/peer.c clears it for them). */
Test(raft_codec, noack_commit_only_append_roundtrips)
{
	cr_assert_eq(RAFT_MSGF_ALL, RAFT_MSGF_BASE | RAFT_MSGF_ADVISORY);
	cr_assert_eq(RAFT_MSGF_BASE & RAFT_MSGF_ADVISORY, 0u);
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .flags = RAFT_MSGF_NOACK,
			     .group = 3, .from = 1, .to = 2, .term = 7,
			     .index = 100, .log_term = 7, .commit = 100};
	int len = enc(&m, 1);
	/* header, from, to, n; then the message: type, u16 flags */
	size_t at = RAFT_CODEC_HEADER_BYTES + RAFT_CODEC_BODY_MIN;
	cr_assert_eq(g_buf[at], RAFT_MSG_APPEND);
	cr_assert_eq(le_get16(g_buf + at + 1), RAFT_MSGF_NOACK);
	expect_roundtrip(&m, 1, len, 0);
}

Test(raft_codec, copy_outlives_input)
{
	struct raft_msg m;
	sample(RAFT_MSG_APPEND, &m);
	int len = enc(&m, 1);
	struct raft_msg *out;
	uint32_t n;
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)len, 0, arena(),
				       RAFT_CODEC_COPY, &out, &n), len);
	memset(g_buf, 0xEE, (size_t)len);
	expect_msg_eq(&m, out);
	for (uint32_t k = 0; k < out->n_entries; k++)
		if (out->entries[k].len)
			cr_assert((const uint8_t *)out->entries[k].data >= g_arena_mem &&
				  (const uint8_t *)out->entries[k].data <
					  g_arena_mem + sizeof g_arena_mem);
}

Test(raft_codec, coalesced_heartbeats)
{
	static struct raft_msg hb[RAFT_CODEC_MAX_BATCH];
	for (uint32_t i = 0; i < RAFT_CODEC_MAX_BATCH; i++) {
		hb[i] = (struct raft_msg){
			.type = i % 3 ? RAFT_MSG_HEARTBEAT : RAFT_MSG_HEARTBEAT_RESP,
			.flags = i % 5 == 0 ? RAFT_MSGF_QUIESCE : 0,
			.group = i + 1, .from = 2, .to = 7, .term = 3 + i % 4,
			.commit = i % 3 ? 1000 + i : 0, .index = i % 3 ? 0 : 50 + i,
			.ctx = i % 7};
	}
	int len = enc(hb, RAFT_CODEC_MAX_BATCH);
	/* one frame, from/to once: well under 40 bytes a group */
	cr_assert_lt(len, 40 * (int)RAFT_CODEC_MAX_BATCH);
	expect_roundtrip(hb, RAFT_CODEC_MAX_BATCH, len, 0);
	/* a mixed batch: every type between one node pair */
	static struct raft_msg mix[RAFT_MSG_TYPE_COUNT - 1];
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++)
		sample(t, &mix[t - 1]);
	len = enc(mix, RAFT_MSG_TYPE_COUNT - 1);
	expect_roundtrip(mix, RAFT_MSG_TYPE_COUNT - 1, len, 0);
	expect_roundtrip(mix, RAFT_MSG_TYPE_COUNT - 1, len, RAFT_CODEC_COPY);
}

Test(raft_codec, stream_of_frames)
{
	size_t off = 0;
	int lens[RAFT_MSG_TYPE_COUNT];
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		struct raft_msg m;
		sample(t, &m);
		lens[t] = raft_codec_encode(g_buf2 + off, BUF_CAP - off, &m, 1);
		cr_assert_gt(lens[t], 0);
		off += (size_t)lens[t];
	}
	size_t at = 0;
	struct raft_codec_arena *a = arena();
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		struct raft_msg *out, m;
		uint32_t n;
		int r = raft_codec_decode(g_buf2 + at, off - at, 0, a, 0, &out, &n);
		cr_assert_eq(r, lens[t]);
		sample(t, &m);
		expect_msg_eq(&m, out);
		at += (size_t)r;
	}
	cr_assert_eq(at, off);
}

Test(raft_codec, every_truncation_is_incomplete)
{
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		struct raft_msg m;
		sample(t, &m);
		int len = enc(&m, 1);
		struct raft_codec_arena *a = arena();
		for (int cut = 0; cut < len; cut++) {
			struct raft_msg *out = NULL;
			uint32_t n = 99;
			int r = raft_codec_decode(g_buf, (size_t)cut, 0, a, 0, &out, &n);
			cr_assert_eq(r, 0, "type %u cut %d: %d", t, cut, r);
			cr_assert_eq(raft_codec_frame_len(g_buf, (size_t)cut, 0), 0);
			cr_assert_null(out);
			cr_assert_eq(n, 99);
			cr_assert_eq(a->used, 0);
		}
		cr_assert_eq(raft_codec_frame_len(g_buf, (size_t)len, 0), len);
	}
}

Test(raft_codec, every_bit_flip_is_detected)
{
	static struct raft_msg hb[64];
	for (uint32_t i = 0; i < 64; i++)
		hb[i] = (struct raft_msg){.type = RAFT_MSG_HEARTBEAT, .group = i,
					  .from = 1, .to = 2, .term = 9,
					  .commit = 40 + i};
	for (uint8_t t = 0; t < RAFT_MSG_TYPE_COUNT; t++) {
		struct raft_msg m;
		int len;
		if (t == 0) {
			len = enc(hb, 64);
		} else {
			sample(t, &m);
			if (t == RAFT_MSG_SNAPSHOT)
				m.chunk_len = 300; /* keep the O(bits x len) loop quick */
			len = enc(&m, 1);
		}
		struct raft_codec_arena *a = arena();
		for (int bit = 0; bit < len * 8; bit++) {
			g_buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			struct raft_msg *out;
			uint32_t n;
			int r = raft_codec_decode(g_buf, (size_t)len, 0, a, 0, &out, &n);
			g_buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			cr_assert_eq(r, -PARLEY_ECORRUPT, "type %u bit %d: %d", t, bit, r);
			cr_assert_eq(a->used, 0);
		}
	}
}

/* ---- limits: encoder ------------------------------------------------------- */

static void expect_enc_inval(const struct raft_msg *m, uint32_t n, const char *what)
{
	cr_assert_eq(raft_codec_size(m, n), -PARLEY_EINVAL, "%s", what);
	cr_assert_eq(raft_codec_encode(g_buf, BUF_CAP, m, n), -PARLEY_EINVAL, "%s", what);
}

Test(raft_codec, encoder_limits)
{
	struct raft_msg m;
	sample(RAFT_MSG_APPEND, &m);
	expect_enc_inval(&m, 0, "empty batch");
	expect_enc_inval(NULL, 1, "NULL msgs");

	static struct raft_entry many[RAFT_MAX_MSG_ENTRIES + 1];
	for (uint32_t i = 0; i <= RAFT_MAX_MSG_ENTRIES; i++)
		many[i] = (struct raft_entry){.term = 1, .index = i + 1};
	m.entries = many;
	m.n_entries = RAFT_MAX_MSG_ENTRIES;
	cr_assert_gt(raft_codec_size(&m, 1), 0);
	m.n_entries = RAFT_MAX_MSG_ENTRIES + 1;
	expect_enc_inval(&m, 1, "too many entries");

	sample(RAFT_MSG_APPEND, &m);
	g_ents[2].len = RAFT_MAX_ENTRY_BYTES + 1;
	expect_enc_inval(&m, 1, "entry too big");
	sample(RAFT_MSG_APPEND, &m);
	g_ents[2].type = 3;
	expect_enc_inval(&m, 1, "entry type");
	sample(RAFT_MSG_APPEND, &m);
	g_ents[2].data = NULL;
	expect_enc_inval(&m, 1, "entry len without data");
	sample(RAFT_MSG_APPEND, &m);
	m.entries = NULL;
	expect_enc_inval(&m, 1, "entries NULL");

	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		sample(t, &m);
		m.flags |= (RAFT_MSGF_ALL + 1);
		expect_enc_inval(&m, 1, "unknown flag");
		sample(t, &m);
		if (t != RAFT_MSG_APPEND) {
			m.n_entries = 1;
			m.entries = g_ents;
			expect_enc_inval(&m, 1, "entries outside APPEND");
		}
		sample(t, &m);
		if (t != RAFT_MSG_SNAPSHOT && t != RAFT_MSG_SNAPSHOT_RESP) {
			m.snap.conf.roles[8] = 1;
			expect_enc_inval(&m, 1, "snap outside SNAPSHOT");
			sample(t, &m);
			m.chunk_len = 1;
			m.chunk = g_chunk;
			expect_enc_inval(&m, 1, "chunk outside SNAPSHOT");
		}
	}
	m = (struct raft_msg){.type = 0, .from = 1, .to = 2};
	expect_enc_inval(&m, 1, "type NONE");
	m.type = RAFT_MSG_TYPE_COUNT;
	expect_enc_inval(&m, 1, "type past the end");

	sample(RAFT_MSG_SNAPSHOT, &m);
	m.chunk_len = RAFT_MAX_CHUNK_BYTES;
	cr_assert_gt(raft_codec_size(&m, 1), 0);
	m.chunk_len = RAFT_MAX_CHUNK_BYTES + 1;
	expect_enc_inval(&m, 1, "chunk too big");
	sample(RAFT_MSG_SNAPSHOT, &m);
	m.chunk = NULL;
	expect_enc_inval(&m, 1, "chunk NULL");
	sample(RAFT_MSG_SNAPSHOT, &m);
	m.snap.conf.n = RAFT_MAX_MEMBERS + 1;
	expect_enc_inval(&m, 1, "conf too many members");
	sample(RAFT_MSG_SNAPSHOT, &m);
	m.snap.conf.ids[1] = 0;
	expect_enc_inval(&m, 1, "conf id 0");
	sample(RAFT_MSG_SNAPSHOT, &m);
	m.snap.conf.roles[1] = 3;
	expect_enc_inval(&m, 1, "conf role");
	sample(RAFT_MSG_SNAPSHOT, &m);
	m.snap.conf.n = RAFT_MAX_MEMBERS;
	for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
		m.snap.conf.ids[i] = (uint64_t)i + 1;
		m.snap.conf.roles[i] = RAFT_VOTER;
	}
	int len = enc(&m, 1);
	expect_roundtrip(&m, 1, len, 0);

	/* a batch must be one node pair, at most RAFT_CODEC_MAX_BATCH */
	static struct raft_msg hb[RAFT_CODEC_MAX_BATCH + 1];
	for (uint32_t i = 0; i <= RAFT_CODEC_MAX_BATCH; i++)
		hb[i] = (struct raft_msg){.type = RAFT_MSG_HEARTBEAT, .group = i,
					  .from = 1, .to = 2};
	expect_enc_inval(hb, RAFT_CODEC_MAX_BATCH + 1, "batch too big");
	hb[77].to = 3;
	expect_enc_inval(hb, 100, "batch of two node pairs");
	hb[77].to = 2;
	hb[78].from = 4;
	expect_enc_inval(hb, 100, "batch of two senders");
	hb[78].from = 1;
	cr_assert_gt(raft_codec_size(hb, 100), 0);
	/* node ids are never 0 */
	m = (struct raft_msg){.type = RAFT_MSG_VOTE, .from = 0, .to = 2};
	expect_enc_inval(&m, 1, "from 0");
	m = (struct raft_msg){.type = RAFT_MSG_VOTE, .from = 1, .to = 0};
	expect_enc_inval(&m, 1, "to 0");
}

Test(raft_codec, encoder_never_writes_past_cap)
{
	struct raft_msg m;
	sample(RAFT_MSG_APPEND, &m);
	int len = raft_codec_size(&m, 1);
	cr_assert_gt(len, 0);
	for (int cap = 0; cap < len; cap++) {
		memset(g_buf, 0xA5, (size_t)len + 16);
		cr_assert_eq(raft_codec_encode(g_buf, (size_t)cap, &m, 1), -PARLEY_ETOOBIG);
		for (int i = cap; i < len + 16; i++)
			cr_assert_eq(g_buf[i], 0xA5, "cap %d wrote at %d", cap, i);
	}
	cr_assert_eq(raft_codec_encode(g_buf, (size_t)len, &m, 1), len);
	cr_assert_eq(raft_codec_encode(NULL, 1000, &m, 1), -PARLEY_EINVAL);
}

Test(raft_codec, frame_too_big)
{
	/* 4 entries of 1 MiB: a legal frame over the 4 MiB default */
	static uint8_t big[RAFT_MAX_ENTRY_BYTES];
	static uint8_t frame[5u << 20];
	struct raft_entry es[4];
	for (int i = 0; i < 4; i++)
		es[i] = (struct raft_entry){.term = 1, .index = (uint64_t)i + 1,
					    .len = RAFT_MAX_ENTRY_BYTES, .data = big};
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2,
			     .term = 1, .n_entries = 4, .entries = es};
	int len = raft_codec_encode(frame, sizeof frame, &m, 1);
	cr_assert_gt(len, (int)RAFT_CODEC_MAX_FRAME_DEFAULT);
	struct raft_msg *out;
	uint32_t n;
	/* refused from its 12-byte header alone, without waiting for the rest */
	cr_assert_eq(raft_codec_decode(frame, 12, 0, arena(), 0, &out, &n),
		     -PARLEY_ETOOBIG);
	cr_assert_eq(raft_codec_decode(frame, (size_t)len, (uint32_t)len - 1,
				       arena(), 0, &out, &n), -PARLEY_ETOOBIG);
	cr_assert_eq(raft_codec_decode(frame, (size_t)len, (uint32_t)len, arena(),
				       0, &out, &n), len);
	cr_assert_eq(n, 1);
	cr_assert_eq(out->entries[3].len, RAFT_MAX_ENTRY_BYTES);
	/* a huge max_frame is capped at HARD */
	uint8_t h[12];
	le_put32(h, RAFT_CODEC_MAX_FRAME_HARD); /* 4 + this > HARD */
	h[4] = RAFT_CODEC_VERSION;
	h[5] = RAFT_CODEC_KIND_BATCH;
	le_put16(h + 6, 0);
	le_put32(h + 8, (uint32_t)parley_xxh3(h, 8, RAFT_CODEC_SEED_HDR));
	cr_assert_eq(raft_codec_frame_len(h, 12, UINT32_MAX), -PARLEY_ETOOBIG);
}

/* ---- limits: decoder (hand-made bodies behind valid checksums) ------------ */

/* Writes header + body + checksum into g_buf; returns the frame length. */
static int seal(const uint8_t *body, size_t blen, uint8_t version, uint8_t kind,
		uint16_t flags)
{
	size_t total = RAFT_CODEC_HEADER_BYTES + blen + RAFT_CODEC_TRAILER_BYTES;
	le_put32(g_buf, (uint32_t)(total - 4));
	g_buf[4] = version;
	g_buf[5] = kind;
	le_put16(g_buf + 6, flags);
	le_put32(g_buf + 8, (uint32_t)parley_xxh3(g_buf, 8, RAFT_CODEC_SEED_HDR));
	memmove(g_buf + RAFT_CODEC_HEADER_BYTES, body, blen);
	le_put64(g_buf + total - 8, parley_xxh3(g_buf, total - 8, RAFT_CODEC_SEED_FRAME));
	return (int)total;
}

static int dec_body(const uint8_t *body, size_t blen)
{
	int len = seal(body, blen, RAFT_CODEC_VERSION, RAFT_CODEC_KIND_BATCH, 0);
	struct raft_msg *out;
	uint32_t n;
	struct raft_codec_arena *a = arena();
	int r = raft_codec_decode(g_buf, (size_t)len, 0, a, 0, &out, &n);
	if (r < 0)
		cr_assert_eq(a->used, 0, "arena rolled back on error");
	return r;
}

/* a little body builder */
struct bb {
	uint8_t b[4096];
	size_t n;
};
static void b8(struct bb *b, uint8_t v) { b->b[b->n++] = v; }
static void b16(struct bb *b, uint16_t v) { le_put16(b->b + b->n, v); b->n += 2; }
static void b32(struct bb *b, uint32_t v) { le_put32(b->b + b->n, v); b->n += 4; }
static void b64(struct bb *b, uint64_t v) { le_put64(b->b + b->n, v); b->n += 8; }
static void bpair(struct bb *b, uint16_t n) { b64(b, 1); b64(b, 2); b16(b, n); }

Test(raft_codec, decoder_header_checks)
{
	struct raft_msg m;
	sample(RAFT_MSG_VOTE, &m);
	int len = enc(&m, 1);
	memcpy(g_buf2, g_buf + 12, (size_t)len - 20);
	size_t blen = (size_t)len - 20;
	struct raft_msg *out;
	uint32_t n;
	int l = seal(g_buf2, blen, 2, RAFT_CODEC_KIND_BATCH, 0);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, arena(), 0, &out, &n),
		     -PARLEY_EVERSION);
	l = seal(g_buf2, blen, RAFT_CODEC_VERSION, 2, 0);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, arena(), 0, &out, &n),
		     -PARLEY_EPROTO);
	l = seal(g_buf2, blen, RAFT_CODEC_VERSION, RAFT_CODEC_KIND_BATCH, 1);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, arena(), 0, &out, &n),
		     -PARLEY_EPROTO);
	/* a length too short for any frame */
	l = seal(g_buf2, 0, RAFT_CODEC_VERSION, RAFT_CODEC_KIND_BATCH, 0);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, arena(), 0, &out, &n),
		     -PARLEY_EPROTO);
	/* unknown decode flags */
	l = seal(g_buf2, blen, RAFT_CODEC_VERSION, RAFT_CODEC_KIND_BATCH, 0);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, arena(), 2, &out, &n),
		     -PARLEY_EINVAL);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, NULL, 0, &out, &n),
		     -PARLEY_EINVAL);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, arena(), 0, NULL, &n),
		     -PARLEY_EINVAL);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, arena(), 0, &out, NULL),
		     -PARLEY_EINVAL);
	cr_assert_eq(raft_codec_decode(g_buf, (size_t)l, 0, arena(), 0, &out, &n), l);
}

Test(raft_codec, decoder_body_limits)
{
	struct bb b;
	/* the valid minimal message, as a control */
	b.n = 0; bpair(&b, 1); b8(&b, RAFT_MSG_TIMEOUT_NOW); b16(&b, 0); b8(&b, 0);
	cr_assert_gt(dec_body(b.b, b.n), 0);
	/* trailing bytes */
	b8(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "trailing byte");
	/* node id 0 */
	b.n = 0; b64(&b, 0); b64(&b, 2); b16(&b, 1); b8(&b, RAFT_MSG_TIMEOUT_NOW); b16(&b, 0); b8(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "from 0");
	b.n = 0; b64(&b, 1); b64(&b, 0); b16(&b, 1); b8(&b, RAFT_MSG_TIMEOUT_NOW); b16(&b, 0); b8(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "to 0");
	/* count 0, count above the limit, count the bytes cannot hold */
	b.n = 0; bpair(&b, 0); b32(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "count 0");
	b.n = 0; bpair(&b, RAFT_CODEC_MAX_BATCH + 1);
	for (uint32_t i = 0; i <= RAFT_CODEC_MAX_BATCH && b.n + 4 < sizeof b.b; i++)
		b32(&b, 0x0000000B);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "count too big");
	b.n = 0; bpair(&b, 3); b8(&b, RAFT_MSG_TIMEOUT_NOW); b16(&b, 0); b8(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "count > bytes");
	/* type, flags, canonical mask */
	uint8_t bad_types[] = {0, RAFT_MSG_TYPE_COUNT, 0xFF};
	for (size_t i = 0; i < sizeof bad_types; i++) {
		b.n = 0; bpair(&b, 1); b8(&b, bad_types[i]); b16(&b, 0); b8(&b, 0);
		cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "type %u", bad_types[i]);
	}
	b.n = 0; bpair(&b, 1); b8(&b, RAFT_MSG_VOTE); b16(&b, RAFT_MSGF_ALL + 1); b8(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "unknown flag");
	b.n = 0; bpair(&b, 1); b8(&b, RAFT_MSG_VOTE); b16(&b, 0); b8(&b, 0x3); b64(&b, 5); b64(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "present zero field");
	b.n = 0; bpair(&b, 1); b8(&b, RAFT_MSG_VOTE); b16(&b, 0); b8(&b, 0x3); b64(&b, 5);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "missing field");
	/* APPEND: entry count, entry length, entry type, data past the end */
	b.n = 0; bpair(&b, 1); b8(&b, RAFT_MSG_APPEND); b16(&b, 0); b8(&b, 0); b16(&b, RAFT_MAX_MSG_ENTRIES + 1);
	while (b.n < sizeof b.b - 8) b64(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "too many entries");
	b.n = 0; bpair(&b, 1); b8(&b, RAFT_MSG_APPEND); b16(&b, 0); b8(&b, 0); b16(&b, 2);
	b64(&b, 1); b64(&b, 1); b64(&b, 0); b8(&b, 0); b32(&b, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "entries > bytes");
	size_t entry_at;
	b.n = 0; bpair(&b, 1); b8(&b, RAFT_MSG_APPEND); b16(&b, 0); b8(&b, 0); b16(&b, 1);
	entry_at = b.n;
	b64(&b, 1); b64(&b, 1); b64(&b, 0); b8(&b, 0); b32(&b, 4); b32(&b, 0xDEADBEEF);
	cr_assert_gt(dec_body(b.b, b.n), 0, "control entry");
	b.b[entry_at + 24] = 3;
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "entry type");
	b.b[entry_at + 24] = 0;
	le_put32(b.b + entry_at + 25, 5);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "entry data past the end");
	le_put32(b.b + entry_at + 25, RAFT_MAX_ENTRY_BYTES + 1);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "entry too big");
	le_put32(b.b + entry_at + 25, 0xFFFFFFFFu);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "entry len 4G");
	/* SNAPSHOT: conf count, id 0, role, chunk length */
	size_t conf_at, chunk_at;
	b.n = 0; bpair(&b, 1); b8(&b, RAFT_MSG_SNAPSHOT); b16(&b, 0); b8(&b, 0);
	for (int i = 0; i < 5; i++) b64(&b, 9);
	conf_at = b.n;
	b8(&b, 1); b64(&b, 4); b8(&b, RAFT_VOTER);
	chunk_at = b.n;
	b32(&b, 2); b16(&b, 0xBEEF);
	cr_assert_gt(dec_body(b.b, b.n), 0, "control snapshot");
	b.b[conf_at] = RAFT_MAX_MEMBERS + 1;
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "conf n");
	b.b[conf_at] = 1;
	le_put64(b.b + conf_at + 1, 0);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "conf id 0");
	le_put64(b.b + conf_at + 1, 4);
	b.b[conf_at + 9] = 0;
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "conf role");
	b.b[conf_at + 9] = RAFT_LEARNER;
	cr_assert_gt(dec_body(b.b, b.n), 0);
	le_put32(b.b + chunk_at, 3);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "chunk past the end");
	le_put32(b.b + chunk_at, RAFT_MAX_CHUNK_BYTES + 1);
	cr_assert_eq(dec_body(b.b, b.n), -PARLEY_EPROTO, "chunk too big");
	/* a short body: every prefix of a valid body, sealed, is malformed */
	le_put32(b.b + chunk_at, 2);
	for (size_t cut = 0; cut < b.n; cut++)
		cr_assert_eq(dec_body(b.b, cut), -PARLEY_EPROTO, "body cut %zu", cut);
}

Test(raft_codec, arena_bound)
{
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		struct raft_msg m;
		sample(t, &m);
		int len = enc(&m, 1);
		for (unsigned flags = 0; flags <= RAFT_CODEC_COPY; flags++) {
			/* how much it needs */
			struct raft_codec_arena *a = arena();
			struct raft_msg *out;
			uint32_t n;
			cr_assert_eq(raft_codec_decode(g_buf, (size_t)len, 0, a, flags,
						       &out, &n), len);
			size_t need = a->used;
			cr_assert_leq(need, RAFT_CODEC_ARENA_BYTES(1, m.n_entries,
							     flags ? (size_t)len : 0));
			if (!flags)
				cr_assert_leq(need, RAFT_CODEC_ARENA_ONE);
			size_t step = need > 4096 ? 97 : 1;
			for (size_t cap = 0; cap < need; cap += step) {
				struct raft_codec_arena s;
				raft_codec_arena_init(&s, g_arena_mem, cap);
				out = NULL;
				cr_assert_eq(raft_codec_decode(g_buf, (size_t)len, 0, &s,
							       flags, &out, &n),
					     -PARLEY_EFULL, "type %u cap %zu", t, cap);
				cr_assert_eq(s.used, 0);
				cr_assert_null(out);
			}
			/* an arena already partly used keeps what it had */
			struct raft_codec_arena s;
			raft_codec_arena_init(&s, g_arena_mem, need + 13);
			s.used = 13;
			cr_assert_eq(raft_codec_decode(g_buf, (size_t)len, 0, &s, flags,
						       &out, &n), -PARLEY_EFULL);
			cr_assert_eq(s.used, 13);
			s.cap = need + 16;
			cr_assert_eq(raft_codec_decode(g_buf, (size_t)len, 0, &s, flags,
						       &out, &n), len);
			cr_assert_eq((uintptr_t)out % 8, 0);
		}
	}
}

/* ---- garbage ---------------------------------------------------------------- */

static uint64_t test_seed(void)
{
	const char *s = getenv("PARLEY_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 0) : parley_mono_ns();
	fprintf(stderr, "test_raft_codec: seed=%llu (PARLEY_SEED=%llu replays)\n",
		(unsigned long long)seed, (unsigned long long)seed);
	return seed;
}

static bool err_ok(int r)
{
	return r == 0 || r == -PARLEY_ECORRUPT || r == -PARLEY_EVERSION ||
	       r == -PARLEY_EPROTO || r == -PARLEY_ETOOBIG || r == -PARLEY_EFULL;
}

Test(raft_codec, garbage_is_rejected)
{
	struct parley_rng rng = {test_seed()};
	/* raw random bytes: refused at the header check (or incomplete) */
	for (int it = 0; it < 20000; it++) {
		size_t len = parley_rng_below(&rng, 200);
		for (size_t i = 0; i < len; i++)
			g_buf[i] = (uint8_t)parley_rng_next(&rng);
		struct raft_msg *out;
		uint32_t n;
		int r = raft_codec_decode(g_buf, len, 0, arena(), 0, &out, &n);
		cr_assert(r <= 0 && err_ok(r), "it %d: %d", it, r);
	}
	/* mutated valid bodies behind valid checksums: refused, or accepted
	 * and re-encoding to exactly the same frame */
	int accepted = 0, refused = 0;
	for (int it = 0; it < 20000; it++) {
		struct raft_msg m;
		sample((uint8_t)(1 + parley_rng_below(&rng, RAFT_MSG_TYPE_COUNT - 1)), &m);
		if (m.type == RAFT_MSG_SNAPSHOT)
			m.chunk_len = 40;
		int len = enc(&m, 1);
		size_t blen = (size_t)len - 20;
		memcpy(g_buf2, g_buf + 12, blen);
		int muts = 1 + (int)parley_rng_below(&rng, 4);
		for (int k = 0; k < muts && blen; k++) {
			size_t at = parley_rng_below(&rng, blen);
			switch (parley_rng_below(&rng, 3)) {
			case 0: g_buf2[at] ^= (uint8_t)(1u << parley_rng_below(&rng, 8)); break;
			case 1: g_buf2[at] = (uint8_t)parley_rng_next(&rng); break;
			default: blen = at; break; /* cut */
			}
		}
		int fl = seal(g_buf2, blen, RAFT_CODEC_VERSION, RAFT_CODEC_KIND_BATCH, 0);
		struct raft_msg *out;
		uint32_t n;
		struct raft_codec_arena *a = arena();
		int r = raft_codec_decode(g_buf, (size_t)fl, 0, a, 0, &out, &n);
		if (r < 0) {
			cr_assert(err_ok(r), "it %d: %d", it, r);
			refused++;
			continue;
		}
		cr_assert_eq(r, fl);
		accepted++;
		int l2 = raft_codec_encode(g_buf2, BUF_CAP, out, n);
		cr_assert_eq(l2, fl, "it %d", it);
		cr_assert(!memcmp(g_buf, g_buf2, (size_t)fl), "it %d", it);
	}
	fprintf(stderr, "test_raft_codec: mutated bodies: %d accepted (re-encoded "
		"identically), %d refused\n", accepted, refused);
	cr_assert_gt(refused, 0);
}

/* ---- fuzz seeds -------------------------------------------------------------- */

/* fuzz_raft_codec's input is a knob byte + data: writes the frame as a
 * stream (knob 0) and its body alone for the sealed-body mode (knob 1). */
static void write_seed(const char *dir, const char *name, const uint8_t *p, size_t n)
{
	for (int body = 0; body < 2; body++) {
		char path[512];
		snprintf(path, sizeof path, "%s/%s%s", dir, name, body ? "_body" : "");
		FILE *f = fopen(path, "wb");
		cr_assert_not_null(f, "%s", path);
		uint8_t knob = (uint8_t)body;
		size_t off = body ? RAFT_CODEC_HEADER_BYTES : 0;
		size_t len = body ? n - RAFT_CODEC_HEADER_BYTES - RAFT_CODEC_TRAILER_BYTES : n;
		cr_assert_eq(fwrite(&knob, 1, 1, f), 1);
		cr_assert_eq(fwrite(p + off, 1, len, f), len);
		fclose(f);
	}
}

/*
 * Golden frames: the seeds committed under tests/fuzz/corpus/raft_codec/
 * were written by this encoder; it must still produce them byte for byte
 * (a wire format change must bump RAFT_CODEC_VERSION and rewrite them).
 * Writes them instead when PARLEY_RAFT_CODEC_SEEDS=<dir> is set.
 */
static void golden(const char *name, const uint8_t *p, size_t n)
{
	const char *out = getenv("PARLEY_RAFT_CODEC_SEEDS");
	if (out) {
		write_seed(out, name, p, n);
		return;
	}
	/* the source tree: $PARLEY_SRC_DIR (ctest sets it), else from __FILE__ */
	const char *src = getenv("PARLEY_SRC_DIR");
	int srclen = src ? (int)strlen(src) : 0;
	if (!src) {
		static const char file[] = __FILE__;
		const char *at = strstr(file, "tests/unit/engine/");
		bool found = at && at > file;
		src = found ? file : ".";
		srclen = found ? (int)(at - file) - 1 : 1;
	}
	char path[512];
	snprintf(path, sizeof path, "%.*s/tests/fuzz/corpus/raft_codec/%s", srclen,
		 src, name);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "golden frame %s missing", path);
	static uint8_t g[1u << 16];
	size_t got = fread(g, 1, sizeof g, f);
	fclose(f);
	cr_assert_eq(got, n + 1, "%s: %zu bytes, encoder makes %zu + knob", name, got, n);
	cr_assert_eq(g[0], 0, "%s: knob byte", name);
	cr_assert(!memcmp(g + 1, p, n), "%s: the encoding changed", name);
}

Test(raft_codec, golden_frames)
{
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		struct raft_msg m;
		sample(t, &m);
		if (t == RAFT_MSG_SNAPSHOT)
			m.chunk_len = 64; /* small seeds mutate faster */
		int len = enc(&m, 1);
		golden(TYPE_NAMES[t], g_buf, (size_t)len);
	}
	static struct raft_msg hb[16];
	for (uint32_t i = 0; i < 16; i++)
		hb[i] = (struct raft_msg){.type = i % 2 ? RAFT_MSG_HEARTBEAT_RESP
						       : RAFT_MSG_HEARTBEAT,
					  .group = i + 1, .from = 2, .to = 5, .term = 4,
					  .commit = i % 2 ? 0 : 30 + i,
					  .index = i % 2 ? 31 + i : 0, .ctx = i};
	int len = enc(hb, 16);
	golden("heartbeats16", g_buf, (size_t)len);
	static struct raft_msg mix[RAFT_MSG_TYPE_COUNT - 1];
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		sample(t, &mix[t - 1]);
		if (t == RAFT_MSG_SNAPSHOT)
			mix[t - 1].chunk_len = 16;
	}
	len = enc(mix, RAFT_MSG_TYPE_COUNT - 1);
	golden("mixed", g_buf, (size_t)len);
}
