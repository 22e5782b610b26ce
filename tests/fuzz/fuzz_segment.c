/*
 * fuzz_segment.c — history segment readers on arbitrary bytes never crash,
 * hang or read out of bounds, and never return an entry they could not
 * verify.
 *
 * Input byte 0 picks the mode:
 *   even: the rest is a whole segment file (mostly rejected at the footer
 *         and meta checksums: exercises the open path's bounds checks);
 *   odd:  the rest is cut into three fuzzed parts — a raw block, a raw
 *         stream directory and a raw idempotency section — and the harness
 *         wraps them in a segment with VALID compression, index fields
 *         (first/last key and seq taken from the input), checksums and
 *         footer, so the block decoder, the directory parser and the
 *         idempotency parser all see hostile bytes behind good checksums.
 * Every opened segment is verified, iterated fully and read by stream in
 * both directions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"
#include "segment.h"

static void put_file(struct pio *io, const char *path, const void *b, size_t n)
{
	struct pio_file *f;
	if (io->ops->open(io, path, PIO_CREATE, &f))
		abort();
	if (n && io->ops->pwrite(io, f, b, n, 0))
		abort();
	io->ops->fdatasync(io, f);
	io->ops->close(io, f);
}

static void exercise(struct pio *io)
{
	struct seg_reader *r;
	char err[SEG_ERR_LEN];
	if (seg_open(io, "d", "seg-0000000000000001.pseg", NULL, &r, err, sizeof err))
		return;
	struct seg_verify_report rep;
	(void)seg_verify(r, &rep);
	struct seg_iter *it;
	if (seg_iter_all(r, &it) == 0) {
		struct seg_item item;
		int n = 0;
		volatile uint8_t sink = 0;
		while (seg_iter_next(it, &item) == 1 && n++ < 100000)
			if (item.e.len) /* touch the last payload byte (ASan) */
				sink ^= item.e.payload[item.e.len - 1];
		(void)sink;
		seg_iter_free(it);
	}
	struct seg_info si;
	seg_get_info(r, &si);
	for (uint32_t i = 0; i < si.streams && i < 64; i++) {
		const uint8_t *k;
		uint8_t kl;
		struct seg_stream_info st;
		if (seg_stream_at(r, i, &k, &kl, &st))
			break;
		uint8_t key[PE_MAX_KEY];
		memcpy(key, k, kl);
		for (int d = 0; d < 2; d++) {
			struct pe_entry out[16];
			uint32_t cnt;
			bool end;
			struct seg_iter *hold;
			if (seg_read(r, key, kl, d ? UINT64_MAX : st.first_seq,
				     (enum pe_dir)d, 16, out, &cnt, &end, &hold) == 0)
				seg_iter_free(hold);
		}
	}
	seg_close(r);
}

/* Builds a structurally valid file around fuzzed raw parts. */
static size_t build(const uint8_t *d, size_t n, uint8_t **outp)
{
	if (n < 8)
		return 0;
	size_t la = d[0] | (size_t)d[1] << 8, lb = d[2] | (size_t)d[3] << 8;
	uint32_t count = d[4] | (uint32_t)d[5] << 8;
	uint8_t nstreams = d[6], flags = d[7];
	d += 8;
	n -= 8;
	la = PARLEY_MIN(la, n);
	lb = PARLEY_MIN(lb, n - la);
	const uint8_t *A = d, *B = d + la, *C = d + la + lb;
	size_t lc = n - la - lb;
	/* block 0: raw A compressed */
	size_t cb = ZSTD_compressBound(la ? la : 1);
	uint8_t *blk = malloc(cb);
	size_t clen = ZSTD_compress(blk, cb, A, la, 1);
	if (ZSTD_isError(clen)) {
		free(blk);
		return 0;
	}
	/* index: one block, first/last key "k" seqs from flags */
	uint8_t idx[64];
	size_t il = 0;
	le_put64(idx + il, 0); il += 8;
	le_put32(idx + il, (uint32_t)clen); il += 4;
	le_put32(idx + il, (uint32_t)la); il += 4;
	le_put32(idx + il, count ? count : 1); il += 4;
	le_put64(idx + il, parley_xxh3(blk, clen, SEG_BLOCK_SEED + 0)); il += 8;
	idx[il++] = 1; idx[il++] = 'k';
	le_put64(idx + il, 1); il += 8;
	idx[il++] = 1; idx[il++] = 'k';
	le_put64(idx + il, 1 + (flags & 0x3f)); il += 8;
	/* meta: zstd(index + B) | bloom (accepting everything) | idem C */
	size_t raw = il + lb;
	uint8_t *rawm = malloc(raw);
	memcpy(rawm, idx, il);
	if (lb)
		memcpy(rawm + il, B, lb);
	size_t zb = ZSTD_compressBound(raw);
	size_t blen = 8 + 8;
	size_t idl = 0;
	uint8_t *zid = NULL;
	if (lc && (flags & 0x40)) {
		size_t zib = ZSTD_compressBound(lc);
		zid = malloc(8 + zib);
		size_t z = ZSTD_compress(zid + 8, zib, C, lc, 1);
		if (!ZSTD_isError(z)) {
			le_put32(zid, (uint32_t)(lc / 38 ? lc / 38 : 1));
			le_put32(zid + 4, (uint32_t)lc);
			idl = 8 + z;
		}
	}
	size_t total = clen + zb + blen + idl + 128;
	uint8_t *f = calloc(1, total);
	memcpy(f, blk, clen);
	size_t zl = ZSTD_compress(f + clen, zb, rawm, raw, 1);
	if (ZSTD_isError(zl)) {
		free(blk); free(rawm); free(zid); free(f);
		return 0;
	}
	uint8_t *bl = f + clen + zl;
	le_put32(bl, 64); /* nbits */
	bl[4] = 1;        /* k */
	bl[5] = 1;        /* version */
	memset(bl + 8, 0xff, 8);
	if (idl)
		memcpy(bl + blen, zid, idl);
	size_t mlen = zl + blen + idl;
	uint8_t *ft = f + clen + mlen;
	le_put64(ft, 0x3130764745534c50ull);
	le_put32(ft + 8, 1);
	le_put64(ft + 16, 1);
	le_put64(ft + 32, count ? count : 1);
	le_put32(ft + 40, nstreams ? nstreams : 1);
	le_put32(ft + 44, 1);
	le_put64(ft + 48, clen);
	le_put32(ft + 56, (uint32_t)il);
	le_put32(ft + 60, (uint32_t)lb);
	le_put32(ft + 64, (uint32_t)blen);
	le_put32(ft + 68, (uint32_t)idl);
	le_put64(ft + 72, parley_xxh3(f + clen, mlen, SEG_META_SEED));
	le_put64(ft + 112, clen);
	le_put64(ft + 120, parley_xxh3(ft, 120, SEG_FOOT_SEED));
	free(blk);
	free(rawm);
	free(zid);
	*outp = f;
	return clen + mlen + 128;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	parley_log_set_level(PLOG_ERROR + 1);
	struct pio *io = pio_mem_new(1);
	if (io->ops->mkdir(io, "d"))
		abort();
	if (data[0] % 2 == 0) {
		put_file(io, "d/seg-0000000000000001.pseg", data + 1, size - 1);
	} else {
		uint8_t *f = NULL;
		size_t n = build(data + 1, size - 1, &f);
		if (n)
			put_file(io, "d/seg-0000000000000001.pseg", f, n);
		free(f);
	}
	exercise(io);
	pio_free(io);
	return 0;
}
