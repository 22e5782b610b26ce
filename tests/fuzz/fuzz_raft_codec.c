/*
 * fuzz_raft_codec.c — libFuzzer target for the Raft wire codec
 * (engine/raft_codec.c).
 *
 * Input byte 0 picks the mode and the knobs:
 *   bit 0 = 0: the rest is a byte stream of frames, decoded back to back
 *              the way a peer connection is read (mostly refused at the
 *              header check or the frame checksum: exercises the framing);
 *   bit 0 = 1: the rest is a frame BODY that the harness seals with a valid
 *              header, length and checksum, so the body parser sees hostile
 *              bytes behind good checksums;
 *   bit 1: decode with RAFT_CODEC_COPY;
 *   bit 2: a small arena (RAFT_CODEC_ARENA_ONE / 4) so -PARLEY_EFULL paths run;
 *   bit 3: a small max_frame (4096) so -PARLEY_ETOOBIG paths run.
 * Properties checked (abort on violation, so libFuzzer reports):
 *   - decode returns 0, a negative code from the documented set, or the
 *     frame length (within the input); frame_len agrees with it;
 *   - a failed decode leaves the arena's `used` as it was;
 *   - whatever decodes re-encodes to exactly the bytes it was decoded from,
 *     and raft_codec_size agrees (one encoding per message);
 *   - borrowed data points into the frame, copied data into the arena.
 * ASan/UBSan (the runner's flags) catch any over-read.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "raft_codec.h"

#define ARENA_BIG (1u << 20)
static uint8_t g_arena[ARENA_BIG] __attribute__((aligned(8)));
static uint8_t g_frame[RAFT_CODEC_HEADER_BYTES + (64u << 10) + RAFT_CODEC_TRAILER_BYTES];
static uint8_t g_enc[sizeof g_frame > (64u << 10) ? sizeof g_frame : (64u << 10)];

static void check(int cond)
{
	if (!cond)
		abort();
}

static int err_ok(int r)
{
	return r == -PARLEY_ECORRUPT || r == -PARLEY_EVERSION ||
	       r == -PARLEY_EPROTO || r == -PARLEY_ETOOBIG || r == -PARLEY_EFULL;
}

static int within(const void *p, const void *base, size_t len)
{
	return (const uint8_t *)p >= (const uint8_t *)base &&
	       (const uint8_t *)p < (const uint8_t *)base + len;
}

/* Decodes one frame at p; returns bytes consumed (0: stop). */
static size_t one(const uint8_t *p, size_t len, uint32_t max_frame,
		  size_t arena_cap, unsigned flags)
{
	struct raft_codec_arena a;
	raft_codec_arena_init(&a, g_arena, arena_cap);
	struct raft_msg *msgs = NULL;
	uint32_t n = 0;
	int fl = raft_codec_frame_len(p, len, max_frame);
	int r = raft_codec_decode(p, len, max_frame, &a, flags, &msgs, &n);
	if (r <= 0) {
		check(r == 0 || err_ok(r));
		check(a.used == 0);
		check(msgs == NULL);
		if (r == 0 || r == -PARLEY_EFULL)
			check(fl == r || (r == -PARLEY_EFULL && fl > 0));
		return 0;
	}
	check(fl == r);
	check((size_t)r <= len && (size_t)r <= (max_frame ? max_frame : RAFT_CODEC_MAX_FRAME_DEFAULT));
	check(n >= 1 && n <= RAFT_CODEC_MAX_BATCH && a.used <= a.cap);
	for (uint32_t i = 0; i < n; i++) {
		const struct raft_msg *m = &msgs[i];
		check(m->n_entries <= RAFT_CODEC_MAX_ENTRIES);
		check(m->chunk_len <= RAFT_CODEC_MAX_CHUNK_BYTES);
		const void *base = flags & RAFT_CODEC_COPY ? (const void *)g_arena : (const void *)p;
		size_t blen = flags & RAFT_CODEC_COPY ? a.used : (size_t)r;
		for (uint32_t k = 0; k < m->n_entries; k++) {
			const struct raft_entry *e = &m->entries[k];
			check(e->len <= RAFT_CODEC_MAX_ENTRY_BYTES);
			if (e->len)
				check(within(e->data, base, blen) &&
				      within(e->data + e->len - 1, base, blen));
		}
		if (m->chunk_len)
			check(within(m->chunk, base, blen) &&
			      within(m->chunk + m->chunk_len - 1, base, blen));
	}
	/* one encoding per message: re-encoding gives back the same bytes */
	int sz = raft_codec_size(msgs, n);
	check(sz == r);
	if ((size_t)r <= sizeof g_enc) {
		int e = raft_codec_encode(g_enc, sizeof g_enc, msgs, n);
		check(e == r);
		check(memcmp(g_enc, p, (size_t)r) == 0);
	}
	return (size_t)r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t knobs = data[0];
	data++;
	size--;
	unsigned flags = knobs & 2 ? RAFT_CODEC_COPY : 0;
	size_t arena_cap = knobs & 4 ? RAFT_CODEC_ARENA_ONE / 4 : ARENA_BIG;
	uint32_t max_frame = knobs & 8 ? 4096 : 0;

	if (!(knobs & 1)) {
		size_t off = 0;
		while (off < size) {
			size_t n = one(data + off, size - off, max_frame, arena_cap, flags);
			if (!n)
				break;
			off += n;
		}
		return 0;
	}

	/* seal the input as a body behind a valid header and checksum */
	if (size > sizeof g_frame - RAFT_CODEC_HEADER_BYTES - RAFT_CODEC_TRAILER_BYTES)
		size = sizeof g_frame - RAFT_CODEC_HEADER_BYTES - RAFT_CODEC_TRAILER_BYTES;
	size_t total = RAFT_CODEC_HEADER_BYTES + size + RAFT_CODEC_TRAILER_BYTES;
	le_put32(g_frame, (uint32_t)(total - 4));
	g_frame[4] = RAFT_CODEC_VERSION;
	g_frame[5] = RAFT_CODEC_KIND_BATCH;
	le_put16(g_frame + 6, 0);
	le_put32(g_frame + 8, (uint32_t)parley_xxh3(g_frame, 8, RAFT_CODEC_SEED_HDR));
	if (size)
		memcpy(g_frame + RAFT_CODEC_HEADER_BYTES, data, size);
	le_put64(g_frame + total - 8, parley_xxh3(g_frame, total - 8, RAFT_CODEC_SEED_FRAME));
	/* exactly the frame, so an over-read past it is an ASan report */
	uint8_t *exact = malloc(total);
	check(exact != NULL);
	memcpy(exact, g_frame, total);
	size_t n = one(exact, total, max_frame, arena_cap, flags);
	check(n == 0 || n == total);
	free(exact);
	return 0;
}
