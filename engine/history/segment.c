/*
 * segment.c — immutable history segments: writer, reader, iterators and
 * verification. Format, lifecycle, invariants, ownership and threading are
 * in segment.h; this file adds the footer layout and the block codec.
 *
 * Footer (SEG_FOOTER_LEN bytes at the very end of the file):
 *     0 u64 magic "PLSEGv01"     64 u32 bloom length
 *     8 u32 version (1)          68 u32 idem section length (0 = none)
 *    12 u32 flags (0)            72 u64 xxh3(index+dir+bloom+idem, SEG_META_SEED)
 *    16 u64 segment id           80 u64 raw payload bytes
 *    24 u64 dictionary id        88 u64 raw block bytes
 *    32 u64 entries              96 u64 min ts
 *    40 u32 streams             104 u64 max ts
 *    44 u32 blocks              112 u64 compressed block bytes
 *    48 u64 index offset        120 u64 xxh3(footer[0..120), SEG_FOOT_SEED)
 *    56 u32 index length (raw)
 *    60 u32 dir length (raw)
 * Between the blocks (ending at index offset) and the footer lie, in this
 * order: zstd(index + dir), bloom, idem; the compressed part's length is
 * what remains. The meta checksum covers all three as stored.
 */
#include "segment.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "bloom.h"
#include "parley_common.h"

#define SEG_MAGIC 0x3130764745534c50ull /* "PLSEGv01" */
#define SEG_VERSION 1u
#define SEG_FOOTER_LEN 128u

#define H_NEWKEY 0x01u
#define H_PROD 0x02u
#define H_SEQ1 0x04u
#define H_TYPESAME 0x08u
#define H_FLAGS0 0x10u
#define H_TSSAME 0x20u
#define H_PRODREF 0x40u /* producer is the idempotency record's covering this seq */
#define H_KNOWN 0x7fu
#define SEG_IDEM_LEVEL 3
#define SEG_META_LEVEL 6 /* index + stream dir: small, read at every open */
#define SEG_MAX_META_RAW (1u << 30)
#define SEG_BLOCK_HDR 16u /* u32 count | u32 meta_len | u32 ts_len | u32 len_len */
#define SEG_IDEM_MAX_RAW (256u << 20)

/* ---- small helpers --------------------------------------------------------- */

struct sbuf {
	uint8_t *p;
	size_t len, cap;
};

static int sbuf_reserve(struct sbuf *b, size_t more)
{
	if (b->cap - b->len >= more)
		return 0;
	size_t nc = b->cap ? b->cap : 4096;
	while (nc - b->len < more)
		nc *= 2;
	uint8_t *p = realloc(b->p, nc);
	if (!p)
		return -PARLEY_ENOMEM;
	b->p = p;
	b->cap = nc;
	return 0;
}

static void sbuf_put(struct sbuf *b, const void *p, size_t n)
{
	if (n == 0)
		return; /* b->p may still be NULL: memcpy(NULL, ..., 0) is UB */
	memcpy(b->p + b->len, p, n);
	b->len += n;
}
static void sbuf_u8(struct sbuf *b, uint8_t v) { b->p[b->len++] = v; }
static void sbuf_u32(struct sbuf *b, uint32_t v)
{
	le_put32(b->p + b->len, v);
	b->len += 4;
}
static void sbuf_u64(struct sbuf *b, uint64_t v)
{
	le_put64(b->p + b->len, v);
	b->len += 8;
}
static void sbuf_varint(struct sbuf *b, uint64_t v)
{
	while (v >= 0x80) {
		b->p[b->len++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	b->p[b->len++] = (uint8_t)v;
}

static uint64_t read_varint(struct le_reader *r)
{
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t c = le_read8(r);
		if (!r->ok)
			return 0;
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			if (shift == 63 && c > 1)
				break; /* overflow */
			return v;
		}
	}
	r->ok = false;
	return 0;
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* (key, seq) order: bytes, then length, then seq. */
static int kcmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, PARLEY_MIN(alen, blen));
	if (c)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}
static int kscmp(const uint8_t *a, size_t alen, uint64_t aseq, const uint8_t *b,
		 size_t blen, uint64_t bseq)
{
	int c = kcmp(a, alen, b, blen);
	if (c)
		return c;
	return aseq < bseq ? -1 : aseq > bseq ? 1 : 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static int join_path(char *buf, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(buf, cap, "%s/%s", dir, name);
	return (n < 0 || (size_t)n >= cap) ? -PARLEY_ETOOBIG : 0;
}

char *seg_file_name(char *buf, size_t cap, uint64_t seg_id)
{
	snprintf(buf, cap, "seg-%016" PRIx64 ".pseg", seg_id);
	return buf;
}

bool seg_parse_name(const char *name, uint64_t *seg_id)
{
	if (strlen(name) != 4 + 16 + 5 || strncmp(name, "seg-", 4) != 0 ||
	    strcmp(name + 20, ".pseg") != 0)
		return false;
	uint64_t v = 0;
	for (int i = 4; i < 20; i++) {
		char c = name[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		v = (v << 4) | d;
	}
	*seg_id = v;
	return true;
}

/* ---- writer ------------------------------------------------------------------ */

struct seg_writer {
	struct pio *io;
	struct pio_file *f;
	char dir[768];
	char tmp_path[1040];
	char final_path[1024];
	char name[64];
	uint64_t seg_id;
	const struct pdict *dict;
	int level;
	ZSTD_CDict *own_cdict;  /* dict at `level` when dict->level differs */
	uint32_t block_target;
	unsigned bloom_bpk;
	ZSTD_CCtx *cctx;
	int err; /* sticky */

	/* the open block */
	/* the open block's columns: headers, ts deltas, lengths, the rest
	 * (keys, seqs, types, flags, inline producers), payloads */
	struct sbuf mhdr, mts, mlen, meta, pay, raw, comp;
	uint32_t bcount;
	uint8_t bprev_key[PE_MAX_KEY];
	uint8_t bprev_klen;
	uint64_t bprev_seq, bprev_ts;
	uint16_t bprev_type;
	uint8_t bfirst_key[PE_MAX_KEY];
	uint8_t bfirst_klen;
	uint64_t bfirst_seq;

	/* global order and the open stream */
	bool any;
	uint8_t last_key[PE_MAX_KEY];
	uint8_t last_klen;
	uint64_t last_seq, last_ts;
	uint64_t s_first_seq, s_count, s_first_ts;
	uint32_t s_first_block;

	uint64_t off; /* next block offset */
	struct sbuf index, sdir;
	uint32_t nblocks, nstreams;
	uint64_t *key_hashes;
	size_t nhashes, caphashes;

	uint64_t entries, raw_payload, raw_blocks, comp_blocks;
	uint64_t min_ts, max_ts;

	/* idempotency records: the section being built and the open run */
	bool derive_idem;
	struct sbuf idem;
	uint32_t nidem;
	bool run_open;
	uint8_t run_key[PE_MAX_KEY];
	uint8_t run_klen;
	uint8_t run_prod[PE_PRODUCER_LEN];
	uint64_t run_seq, run_last, run_ts;
	uint32_t run_count;
	/* explicit records (no_derive_idem): order check and lookup cursor */
	uint8_t xlast_key[PE_MAX_KEY];
	uint8_t xlast_klen;
	uint64_t xlast_end; /* seq + count of the last explicit record */
	size_t xcur;        /* offset in idem of the first record not passed */
};

static int writer_fail_nomem(struct seg_writer *w);

static int idem_put(struct seg_writer *w, const uint8_t *key, uint8_t klen,
		    const uint8_t *prod, uint64_t seq, uint32_t count, uint64_t ts)
{
	if (sbuf_reserve(&w->idem, 1 + klen + PE_PRODUCER_LEN + 20))
		return -PARLEY_ENOMEM;
	sbuf_u8(&w->idem, klen);
	sbuf_put(&w->idem, key, klen);
	sbuf_put(&w->idem, prod, PE_PRODUCER_LEN);
	sbuf_u64(&w->idem, seq);
	sbuf_u32(&w->idem, count);
	sbuf_u64(&w->idem, ts);
	w->nidem++;
	return 0;
}

static int idem_run_end(struct seg_writer *w)
{
	if (!w->run_open)
		return 0;
	w->run_open = false;
	return idem_put(w, w->run_key, w->run_klen, w->run_prod, w->run_seq,
			w->run_count, w->run_ts);
}

int seg_writer_add_idem(struct seg_writer *w, const struct seg_idem *rec)
{
	if (w->err)
		return w->err;
	if (w->derive_idem || rec->klen == 0 || rec->seq == 0 ||
	    rec->count == 0 || rec->seq + rec->count < rec->seq)
		return -PARLEY_EINVAL;
	/* strictly ordered by (key, seq), ranges of one key disjoint */
	if (w->nidem) {
		int c = memcmp(w->xlast_key, rec->key,
			       PARLEY_MIN(w->xlast_klen, rec->klen));
		if (!c)
			c = w->xlast_klen < rec->klen ? -1 : w->xlast_klen > rec->klen;
		if (c > 0 || (c == 0 && rec->seq < w->xlast_end))
			return -PARLEY_EINVAL;
	}
	int rc = idem_put(w, rec->key, rec->klen, rec->producer, rec->seq,
			  rec->count, rec->ts);
	if (rc)
		return writer_fail_nomem(w);
	memcpy(w->xlast_key, rec->key, rec->klen);
	w->xlast_klen = rec->klen;
	w->xlast_end = rec->seq + rec->count;
	return 0;
}

/* Explicit mode: is there a record covering (key, seq) with this producer?
 * Entries arrive in (key, seq) order, so the cursor only moves forward. */
static bool idem_covers(struct seg_writer *w, const uint8_t *key, size_t klen,
			uint64_t seq, const uint8_t *prod)
{
	while (w->xcur < w->idem.len) {
		struct le_reader r;
		le_reader_init(&r, w->idem.p + w->xcur, w->idem.len - w->xcur);
		uint8_t kl = le_read8(&r);
		const uint8_t *k = le_read_bytes(&r, kl);
		const uint8_t *pr = le_read_bytes(&r, PE_PRODUCER_LEN);
		uint64_t rs = le_read64(&r);
		uint32_t rc = le_read32(&r);
		(void)le_read64(&r);
		PARLEY_ASSERT(r.ok);
		int c = memcmp(k, key, PARLEY_MIN((size_t)kl, klen));
		if (!c)
			c = kl < klen ? -1 : kl > klen;
		if (c < 0 || (c == 0 && rs + rc <= seq)) {
			w->xcur += r.off; /* entirely before this entry */
			continue;
		}
		return c == 0 && rs <= seq && !memcmp(pr, prod, PE_PRODUCER_LEN);
	}
	return false;
}

uint64_t seg_writer_file_bytes(const struct seg_writer *w)
{
	return w->off;
}

uint64_t seg_writer_bytes(const struct seg_writer *w)
{
	return w->raw_blocks + SEG_BLOCK_HDR + w->mhdr.len + w->mts.len +
	       w->mlen.len + w->meta.len + w->pay.len;
}

int seg_writer_new(struct pio *io, const char *dir, uint64_t seg_id,
		   const struct seg_write_opts *o, struct seg_writer **out)
{
	struct seg_write_opts def = { 0 };
	if (!o)
		o = &def;
	uint32_t bt = o->block_bytes ? o->block_bytes : SEG_DEFAULT_BLOCK;
	if (bt < SEG_MIN_BLOCK || bt > SEG_MAX_BLOCK || strlen(dir) >= 768)
		return -PARLEY_EINVAL;
	struct seg_writer *w = calloc(1, sizeof *w);
	if (!w)
		return -PARLEY_ENOMEM;
	w->io = io;
	w->seg_id = seg_id;
	w->dict = o->dict;
	w->level = o->level ? o->level : DICT_DEFAULT_LEVEL;
	w->block_target = bt;
	w->bloom_bpk = o->bloom_bits_per_key ? o->bloom_bits_per_key
					     : SEG_DEFAULT_BLOOM_BITS;
	w->min_ts = UINT64_MAX;
	w->derive_idem = !o->no_derive_idem;
	snprintf(w->dir, sizeof w->dir, "%s", dir);
	seg_file_name(w->name, sizeof w->name, seg_id);
	int rc = join_path(w->final_path, sizeof w->final_path, dir, w->name);
	if (rc) {
		free(w);
		return rc;
	}
	snprintf(w->tmp_path, sizeof w->tmp_path, "%s.tmp", w->final_path);
	w->cctx = ZSTD_createCCtx();
	if (w->cctx && w->dict && w->dict->level != w->level) {
		/* a flush at its own level with the partition's dictionary
		 * (whose CDict has compaction's level baked in) */
		w->own_cdict = ZSTD_createCDict(w->dict->bytes, w->dict->len,
						w->level);
		if (!w->own_cdict) {
			ZSTD_freeCCtx(w->cctx);
			w->cctx = NULL;
		}
	}
	if (!w->cctx) {
		free(w);
		return -PARLEY_ENOMEM;
	}
	(void)io->ops->unlink(io, w->tmp_path); /* a crashed attempt's leftover */
	rc = io->ops->open(io, w->tmp_path, PIO_CREATE | PIO_EXCL, &w->f);
	if (rc) {
		ZSTD_freeCDict(w->own_cdict);
		ZSTD_freeCCtx(w->cctx);
		free(w);
		return rc;
	}
	*out = w;
	return 0;
}

static void writer_free(struct seg_writer *w)
{
	if (w->f)
		w->io->ops->close(w->io, w->f);
	ZSTD_freeCCtx(w->cctx);
	ZSTD_freeCDict(w->own_cdict);
	free(w->meta.p);
	free(w->mhdr.p);
	free(w->mts.p);
	free(w->mlen.p);
	free(w->pay.p);
	free(w->raw.p);
	free(w->comp.p);
	free(w->index.p);
	free(w->sdir.p);
	free(w->key_hashes);
	free(w->idem.p);
	free(w);
}

void seg_writer_abort(struct seg_writer *w)
{
	if (!w)
		return;
	if (w->f) {
		w->io->ops->close(w->io, w->f);
		w->f = NULL;
	}
	(void)w->io->ops->unlink(w->io, w->tmp_path);
	writer_free(w);
}

static int writer_fail(struct seg_writer *w, int rc, const char *what)
{
	if (!w->err) {
		w->err = rc;
		PLOG_E("segment", what, "file=%s err=%s", w->tmp_path,
		       parley_errname(rc));
	}
	return rc;
}

static int writer_fail_nomem(struct seg_writer *w)
{
	return writer_fail(w, -PARLEY_ENOMEM, "out of memory");
}

/* Compress and write the open block, append its index record. */
static int writer_seal_block(struct seg_writer *w)
{
	if (w->bcount == 0)
		return 0;
	size_t mlen = w->mhdr.len + w->mts.len + w->mlen.len + w->meta.len;
	size_t rlen = SEG_BLOCK_HDR + mlen + w->pay.len;
	w->raw.len = 0;
	if (sbuf_reserve(&w->raw, rlen))
		return writer_fail(w, -PARLEY_ENOMEM, "out of memory");
	sbuf_u32(&w->raw, w->bcount);
	sbuf_u32(&w->raw, (uint32_t)mlen);
	sbuf_u32(&w->raw, (uint32_t)w->mts.len);
	sbuf_u32(&w->raw, (uint32_t)w->mlen.len);
	sbuf_put(&w->raw, w->mhdr.p, w->mhdr.len);
	sbuf_put(&w->raw, w->mts.p, w->mts.len);
	sbuf_put(&w->raw, w->mlen.p, w->mlen.len);
	sbuf_put(&w->raw, w->meta.p, w->meta.len);
	sbuf_put(&w->raw, w->pay.p, w->pay.len);

	size_t bound = ZSTD_compressBound(rlen);
	w->comp.len = 0;
	if (sbuf_reserve(&w->comp, bound))
		return writer_fail(w, -PARLEY_ENOMEM, "out of memory");
	size_t clen;
	if (w->dict)
		clen = ZSTD_compress_usingCDict(w->cctx, w->comp.p, bound,
						w->raw.p, rlen,
						w->own_cdict ? w->own_cdict
							     : w->dict->cdict);
	else
		clen = ZSTD_compressCCtx(w->cctx, w->comp.p, bound, w->raw.p,
					 rlen, w->level);
	if (ZSTD_isError(clen)) {
		PLOG_E("segment", "zstd compression failed", "err=\"%s\"",
		       ZSTD_getErrorName(clen));
		return writer_fail(w, -PARLEY_EIO, "compress failed");
	}
	int rc = w->io->ops->pwrite(w->io, w->f, w->comp.p, clen, w->off);
	if (rc)
		return writer_fail(w, rc, "block write failed");
	uint64_t ck = parley_xxh3(w->comp.p, clen, SEG_BLOCK_SEED + w->nblocks);

	if (sbuf_reserve(&w->index, 8 + 4 * 3 + 8 + 2 * (1 + PE_MAX_KEY + 8)))
		return writer_fail(w, -PARLEY_ENOMEM, "out of memory");
	sbuf_u64(&w->index, w->off);
	sbuf_u32(&w->index, (uint32_t)clen);
	sbuf_u32(&w->index, (uint32_t)rlen);
	sbuf_u32(&w->index, w->bcount);
	sbuf_u64(&w->index, ck);
	sbuf_u8(&w->index, w->bfirst_klen);
	sbuf_put(&w->index, w->bfirst_key, w->bfirst_klen);
	sbuf_u64(&w->index, w->bfirst_seq);
	sbuf_u8(&w->index, w->bprev_klen);
	sbuf_put(&w->index, w->bprev_key, w->bprev_klen);
	sbuf_u64(&w->index, w->bprev_seq);

	w->off += clen;
	w->raw_blocks += rlen;
	w->comp_blocks += clen;
	w->nblocks++;
	w->bcount = 0;
	w->meta.len = 0;
	w->mhdr.len = w->mts.len = w->mlen.len = 0;
	w->pay.len = 0;
	return 0;
}

/* Close the open stream: its directory record and bloom key. */
static int writer_end_stream(struct seg_writer *w)
{
	if (!w->any)
		return 0;
	if (sbuf_reserve(&w->sdir, 1 + PE_MAX_KEY + 5 * 8 + 2 * 4))
		return writer_fail(w, -PARLEY_ENOMEM, "out of memory");
	sbuf_u8(&w->sdir, w->last_klen);
	sbuf_put(&w->sdir, w->last_key, w->last_klen);
	sbuf_u64(&w->sdir, w->s_first_seq);
	sbuf_u64(&w->sdir, w->last_seq);
	sbuf_u64(&w->sdir, w->s_count);
	sbuf_u64(&w->sdir, w->s_first_ts);
	sbuf_u64(&w->sdir, w->last_ts);
	sbuf_u32(&w->sdir, w->s_first_block);
	/* The stream's last entry is in the open block (not yet sealed) or
	 * was in the last sealed one. */
	sbuf_u32(&w->sdir, w->bcount ? w->nblocks : w->nblocks - 1);
	if (w->nhashes == w->caphashes) {
		size_t nc = w->caphashes ? w->caphashes * 2 : 256;
		uint64_t *h = realloc(w->key_hashes, nc * sizeof *h);
		if (!h)
			return writer_fail(w, -PARLEY_ENOMEM, "out of memory");
		w->key_hashes = h;
		w->caphashes = nc;
	}
	w->key_hashes[w->nhashes++] = bloom_hash(w->last_key, w->last_klen);
	w->nstreams++;
	return 0;
}

int seg_writer_add(struct seg_writer *w, const void *keyp, size_t klen,
		   const struct pe_entry *e)
{
	const uint8_t *key = keyp;
	if (w->err)
		return w->err;
	if (klen < 1 || klen > PE_MAX_KEY || e->seq == 0 ||
	    e->len > PE_MAX_COMMAND /* SEG_MAX_BLOCK_RAW */ ||
	    (e->len && !e->payload))
		return -PARLEY_EINVAL;
	bool newstream = true;
	if (w->any) {
		int c = kscmp(w->last_key, w->last_klen, w->last_seq, key, klen,
			      e->seq);
		if (c >= 0)
			return -PARLEY_EINVAL; /* out of order or duplicate */
		newstream = kcmp(w->last_key, w->last_klen, key, klen) != 0;
	}
	/* Seal the block first when this entry would overflow it (an entry
	 * is never split; a lone big entry makes a big block). */
	size_t est = 1 + 1 + klen + 10 + 10 + 5 + 5 + 16 + 5 + e->len;
	if (w->bcount > 0 && seg_writer_bytes(w) - w->raw_blocks + est > w->block_target) {
		int rc = writer_seal_block(w);
		if (rc)
			return rc;
	}
	if (newstream) {
		int rc = writer_end_stream(w);
		if (rc)
			return rc;
		w->s_first_seq = e->seq;
		w->s_first_ts = e->ts_ms;
		w->s_count = 0;
		w->s_first_block = w->nblocks;
	}
	if (sbuf_reserve(&w->meta, est - e->len) || sbuf_reserve(&w->pay, e->len) ||
	    sbuf_reserve(&w->mhdr, 1) || sbuf_reserve(&w->mts, 10) ||
	    sbuf_reserve(&w->mlen, 5))
		return writer_fail(w, -PARLEY_ENOMEM, "out of memory");

	bool blocknew = w->bcount == 0 ||
			kcmp(w->bprev_key, w->bprev_klen, key, klen) != 0;
	uint8_t hdr = 0;
	if (blocknew)
		hdr |= H_NEWKEY;
	bool prod = !all_zero(e->producer, PE_PRODUCER_LEN);
	/* A producer id is stored once per batch, in the idempotency
	 * section, when a record there covers this entry (always, when the
	 * writer derives them); otherwise inline. */
	bool pref = prod && (w->derive_idem ||
			     idem_covers(w, key, klen, e->seq, e->producer));
	if (pref)
		hdr |= H_PRODREF;
	else if (prod)
		hdr |= H_PROD;
	if (!blocknew && e->seq == w->bprev_seq + 1)
		hdr |= H_SEQ1;
	uint16_t ptype = w->bcount ? w->bprev_type : 0;
	if (e->type == ptype)
		hdr |= H_TYPESAME;
	if (e->flags == 0)
		hdr |= H_FLAGS0;
	uint64_t pts = w->bcount ? w->bprev_ts : 0;
	if (e->ts_ms == pts)
		hdr |= H_TSSAME;

	sbuf_u8(&w->mhdr, hdr);
	if (blocknew) {
		sbuf_u8(&w->meta, (uint8_t)klen);
		sbuf_put(&w->meta, key, klen);
	}
	if (!(hdr & H_SEQ1))
		sbuf_varint(&w->meta, blocknew ? e->seq : e->seq - w->bprev_seq);
	if (!(hdr & H_TSSAME))
		sbuf_varint(&w->mts, zigzag((int64_t)(e->ts_ms - pts)));
	if (!(hdr & H_TYPESAME))
		sbuf_varint(&w->meta, e->type);
	if (!(hdr & H_FLAGS0))
		sbuf_varint(&w->meta, e->flags);
	if (prod && !pref)
		sbuf_put(&w->meta, e->producer, PE_PRODUCER_LEN);
	sbuf_varint(&w->mlen, e->len);
	if (e->len)
		sbuf_put(&w->pay, e->payload, e->len);
	if (w->derive_idem) {
		bool cont = prod && w->run_open && !newstream &&
			    e->ts_ms == w->run_ts && e->seq == w->run_last + 1 &&
			    !memcmp(w->run_prod, e->producer, PE_PRODUCER_LEN);
		if (cont) {
			w->run_count++;
			w->run_last = e->seq;
		} else {
			if (idem_run_end(w))
				return writer_fail_nomem(w);
			if (prod) {
				w->run_open = true;
				memcpy(w->run_key, key, klen);
				w->run_klen = (uint8_t)klen;
				memcpy(w->run_prod, e->producer, PE_PRODUCER_LEN);
				w->run_seq = w->run_last = e->seq;
				w->run_ts = e->ts_ms;
				w->run_count = 1;
			}
		}
	}

	if (w->bcount == 0) {
		memcpy(w->bfirst_key, key, klen);
		w->bfirst_klen = (uint8_t)klen;
		w->bfirst_seq = e->seq;
	}
	memcpy(w->bprev_key, key, klen);
	w->bprev_klen = (uint8_t)klen;
	w->bprev_seq = e->seq;
	w->bprev_ts = e->ts_ms;
	w->bprev_type = e->type;
	w->bcount++;

	memcpy(w->last_key, key, klen);
	w->last_klen = (uint8_t)klen;
	w->last_seq = e->seq;
	w->last_ts = e->ts_ms;
	w->any = true;
	w->s_count++;
	w->entries++;
	w->raw_payload += e->len;
	w->min_ts = PARLEY_MIN(w->min_ts, e->ts_ms);
	w->max_ts = PARLEY_MAX(w->max_ts, e->ts_ms);
	return 0;
}

int seg_writer_finish(struct seg_writer *w, struct seg_write_info *info)
{
	int rc = w->err;
	if (!rc && !w->any)
		rc = -PARLEY_EINVAL;
	if (!rc && idem_run_end(w))
		rc = -PARLEY_ENOMEM;
	if (!rc)
		rc = writer_end_stream(w); /* before sealing: names the open block */
	if (!rc)
		rc = writer_seal_block(w);
	struct bloom bl = { 0 };
	uint8_t *tail = NULL, *zid = NULL, *zm = NULL;
	size_t tail_len = 0, bloom_len = 0, zid_len = 0, zm_len = 0;
	/* the idempotency section: u32 records | u32 raw length | zstd frame */
	if (!rc && w->nidem) {
		if (w->idem.len > SEG_IDEM_MAX_RAW) {
			rc = -PARLEY_ETOOBIG;
		} else {
			size_t bound = ZSTD_compressBound(w->idem.len);
			zid = malloc(8 + bound);
			if (!zid) {
				rc = -PARLEY_ENOMEM;
			} else {
				size_t z = ZSTD_compressCCtx(w->cctx, zid + 8, bound,
							     w->idem.p, w->idem.len,
							     SEG_IDEM_LEVEL);
				if (ZSTD_isError(z)) {
					rc = -PARLEY_EIO;
				} else {
					le_put32(zid, w->nidem);
					le_put32(zid + 4, (uint32_t)w->idem.len);
					zid_len = 8 + z;
				}
			}
		}
	}
	if (!rc)
		rc = bloom_init(&bl, w->nhashes, w->bloom_bpk);
	if (!rc) {
		for (size_t i = 0; i < w->nhashes; i++)
			bloom_add_hash(&bl, w->key_hashes[i]);
		bloom_len = bloom_encoded_size(&bl);
		/* index + stream dir, compressed together: keys share prefixes
		 * and fixed-width fields are mostly zeros; with many small
		 * streams per segment this section rivals the payloads */
		size_t raw = w->index.len + w->sdir.len;
		size_t bound = ZSTD_compressBound(raw);
		if (raw > SEG_MAX_META_RAW) {
			rc = -PARLEY_ETOOBIG;
		} else if (sbuf_reserve(&w->index, w->sdir.len) ||
			   !(zm = malloc(bound))) {
			rc = -PARLEY_ENOMEM;
		} else {
			size_t ilen = w->index.len;
			sbuf_put(&w->index, w->sdir.p, w->sdir.len);
			zm_len = ZSTD_compressCCtx(w->cctx, zm, bound, w->index.p, raw,
						   SEG_META_LEVEL);
			w->index.len = ilen;
			if (ZSTD_isError(zm_len))
				rc = -PARLEY_EIO;
		}
	}
	if (!rc) {
		tail_len = zm_len + bloom_len + zid_len + SEG_FOOTER_LEN;
		tail = malloc(tail_len);
		if (!tail)
			rc = -PARLEY_ENOMEM;
	}
	if (!rc) {
		uint8_t *p = tail;
		memcpy(p, zm, zm_len);
		p += zm_len;
		PARLEY_ASSERT(bloom_encode(&bl, p, bloom_len) == (int64_t)bloom_len);
		p += bloom_len;
		if (zid_len)
			memcpy(p, zid, zid_len);
		p += zid_len;
		size_t meta_len = (size_t)(p - tail);
		uint8_t *ft = p;
		memset(ft, 0, SEG_FOOTER_LEN);
		le_put64(ft + 0, SEG_MAGIC);
		le_put32(ft + 8, SEG_VERSION);
		le_put32(ft + 12, 0);
		le_put64(ft + 16, w->seg_id);
		le_put64(ft + 24, w->dict ? w->dict->id : 0);
		le_put64(ft + 32, w->entries);
		le_put32(ft + 40, w->nstreams);
		le_put32(ft + 44, w->nblocks);
		le_put64(ft + 48, w->off);
		le_put32(ft + 56, (uint32_t)w->index.len);
		le_put32(ft + 60, (uint32_t)w->sdir.len);
		le_put32(ft + 64, (uint32_t)bloom_len);
		le_put32(ft + 68, (uint32_t)zid_len);
		le_put64(ft + 72, parley_xxh3(tail, meta_len, SEG_META_SEED));
		le_put64(ft + 80, w->raw_payload);
		le_put64(ft + 88, w->raw_blocks);
		le_put64(ft + 96, w->min_ts);
		le_put64(ft + 104, w->max_ts);
		le_put64(ft + 112, w->comp_blocks);
		le_put64(ft + 120, parley_xxh3(ft, 120, SEG_FOOT_SEED));
		if (w->index.len > UINT32_MAX || w->sdir.len > UINT32_MAX)
			rc = -PARLEY_ETOOBIG;
	}
	if (!rc)
		rc = w->io->ops->pwrite(w->io, w->f, tail, tail_len, w->off);
	if (!rc)
		rc = w->io->ops->fdatasync(w->io, w->f);
	if (!rc) {
		w->io->ops->close(w->io, w->f);
		w->f = NULL;
		rc = pio_file_publish(w->io, w->dir, w->tmp_path, w->final_path);
	}
	free(tail);
	free(zid);
	free(zm);
	bloom_free(&bl);
	if (rc) {
		writer_fail(w, rc, "segment finish failed");
		seg_writer_abort(w);
		return rc;
	}
	if (info) {
		memset(info, 0, sizeof *info);
		snprintf(info->name, sizeof info->name, "%s", w->name);
		info->seg_id = w->seg_id;
		info->dict_id = w->dict ? w->dict->id : 0;
		info->entries = w->entries;
		info->streams = w->nstreams;
		info->blocks = w->nblocks;
		info->raw_payload_bytes = w->raw_payload;
		info->raw_block_bytes = w->raw_blocks;
		info->block_bytes = w->comp_blocks;
		info->file_bytes = w->off + tail_len;
	}
	writer_free(w);
	return 0;
}

/* ---- reader ------------------------------------------------------------------ */

struct seg_bmeta {
	uint64_t off;
	uint32_t clen, rlen, count;
	uint64_t cksum;
	const uint8_t *fkey, *lkey;
	uint8_t fklen, lklen;
	uint64_t fseq, lseq;
};

struct seg_dent {
	const uint8_t *key;
	uint8_t klen;
	struct seg_stream_info si;
};

struct seg_reader {
	_Atomic uint32_t refs;  /* seg_ref / seg_close; freed at zero */
	atomic_bool retired;    /* seg_retire: blocks no longer cached */
	pthread_mutex_t mu;     /* err (readers on any thread) */
	pthread_mutex_t idem_mu; /* idem_own: loaded once (seg_fail under it) */
	struct pio *io;
	struct pio_file *f;
	char path[1024];
	struct bcache *cache;
	uint64_t cache_key; /* cache_ns | segment id */
	const struct pdict *dict;
	ZSTD_DCtx *dctx;
	struct seg_info info;
	uint8_t *meta;     /* the meta region as stored (compressed index+dir,
			      bloom, idem section) */
	uint8_t *meta_raw; /* index + dir decompressed; bmeta/dents point here */
	struct seg_bmeta *blocks;
	struct seg_dent *dents;
	struct bloom bloom;
	_Atomic uint64_t bytes_read;
	size_t meta_raw_len;
	/* The idempotency section stays on disk: only where it is and the
	 * checksum of its stored bytes (taken at open, under the meta
	 * checksum) are resident. It is decoded on demand (see idem_acquire)
	 * into the block cache, or, for a reader without a cache, into
	 * idem_own for the reader's (short) lifetime. */
	uint64_t idem_off;
	uint32_t idem_len;
	uint64_t idem_ck;
	struct seg_idemsec *idem_own;
	char err[SEG_ERR_LEN];
};

/* A decoded idempotency section: one allocation holding this header, the
 * record array and the raw bytes the records' keys point into. */
struct seg_idemsec {
	uint32_t n;
	size_t charge;
	struct seg_idem *irec; /* sorted by (key, seq), disjoint per key */
	uint8_t *raw;
};
/* A decoded section in use: pinned in the cache (it) or the reader's. */
struct seg_idemref {
	const struct seg_idemsec *s;
	struct bcache_item *it;
};

/* A decoded block: one allocation holding this header, the entry array and
 * the raw bytes the entries point into. */
struct seg_bent {
	const uint8_t *key;
	uint8_t klen;
	struct pe_entry e;
};
struct seg_block {
	uint32_t blk;
	uint32_t count;
	size_t charge;
	struct seg_bent *ents;
	uint8_t *raw;
};

struct seg_pin {
	struct seg_block *b;
	struct bcache_item *it; /* NULL: b owned by the pin */
};

static int seg_fail(struct seg_reader *r, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int seg_fail(struct seg_reader *r, int rc, const char *fmt, ...)
{
	char msg[192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&r->mu);
	if (snprintf(r->err, sizeof r->err, "file=%s %s", r->path, msg) < 0)
		r->err[0] = '\0'; /* truncation of a long path is acceptable */
	pthread_mutex_unlock(&r->mu);
	PLOG_E("segment", "segment read failed", "file=%s %s err=%s", r->path,
	       msg, parley_errname(rc));
	return rc;
}

const char *seg_error(const struct seg_reader *r) { return r->err; }
const char *seg_path(const struct seg_reader *r) { return r->path; }
uint64_t seg_bytes_read(const struct seg_reader *r)
{
	return atomic_load_explicit(&r->bytes_read, memory_order_relaxed);
}
void seg_get_info(const struct seg_reader *r, struct seg_info *out) { *out = r->info; }

/* The calling thread's decompression context for blocks and idempotency
 * sections: a reader may be used by several threads at once (the engine's
 * read pool), so the per-reader context serves only seg_open. Freed when
 * the thread exits. */
static pthread_key_t tls_dctx_key;
static pthread_once_t tls_dctx_once = PTHREAD_ONCE_INIT;

static void tls_dctx_free(void *p) { ZSTD_freeDCtx(p); }
static void tls_dctx_init(void)
{
	PARLEY_ASSERT(pthread_key_create(&tls_dctx_key, tls_dctx_free) == 0);
}

static ZSTD_DCtx *tls_dctx(void)
{
	pthread_once(&tls_dctx_once, tls_dctx_init);
	ZSTD_DCtx *d = pthread_getspecific(tls_dctx_key);
	if (!d) {
		d = ZSTD_createDCtx();
		if (d && pthread_setspecific(tls_dctx_key, d) != 0) {
			ZSTD_freeDCtx(d);
			d = NULL;
		}
	}
	return d;
}

struct seg_reader *seg_ref(struct seg_reader *r)
{
	atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
	return r;
}

void seg_retire(struct seg_reader *r)
{
	atomic_store_explicit(&r->retired, true, memory_order_release);
}

void seg_close(struct seg_reader *r)
{
	if (!r ||
	    atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) > 1)
		return;
	dict_free((struct pdict *)r->dict);
	pthread_mutex_destroy(&r->mu);
	pthread_mutex_destroy(&r->idem_mu);
	if (r->f)
		r->io->ops->close(r->io, r->f);
	ZSTD_freeDCtx(r->dctx);
	free(r->meta);
	free(r->meta_raw);
	free(r->blocks);
	free(r->dents);
	bloom_free(&r->bloom);
	free(r->idem_own);
	free(r);
}

static int parse_meta(struct seg_reader *r, uint32_t ilen, uint32_t dlen,
		      uint64_t zlen, uint32_t blen)
{
	struct seg_info *in = &r->info;
	if (in->blocks == 0 || in->streams == 0 ||
	    in->blocks > ilen / 30 + 1 || in->streams > dlen / 50 + 1)
		return seg_fail(r, -PARLEY_ECORRUPT, "bad counts in footer");
	r->blocks = calloc(in->blocks, sizeof *r->blocks);
	r->dents = calloc(in->streams, sizeof *r->dents);
	if (!r->blocks || !r->dents)
		return -PARLEY_ENOMEM;
	struct le_reader lr;
	le_reader_init(&lr, r->meta_raw, ilen);
	uint64_t expect_off = 0, entries = 0;
	for (uint32_t i = 0; i < in->blocks; i++) {
		struct seg_bmeta *b = &r->blocks[i];
		b->off = le_read64(&lr);
		b->clen = le_read32(&lr);
		b->rlen = le_read32(&lr);
		b->count = le_read32(&lr);
		b->cksum = le_read64(&lr);
		b->fklen = le_read8(&lr);
		b->fkey = le_read_bytes(&lr, b->fklen);
		b->fseq = le_read64(&lr);
		b->lklen = le_read8(&lr);
		b->lkey = le_read_bytes(&lr, b->lklen);
		b->lseq = le_read64(&lr);
		if (!lr.ok || b->off != expect_off || b->clen == 0 ||
		    b->rlen < SEG_BLOCK_HDR || b->rlen > SEG_MAX_BLOCK_RAW || b->count == 0 ||
		    b->fklen == 0 || b->lklen == 0 ||
		    kscmp(b->fkey, b->fklen, b->fseq, b->lkey, b->lklen, b->lseq) > 0 ||
		    (i > 0 && kscmp(r->blocks[i - 1].lkey, r->blocks[i - 1].lklen,
				    r->blocks[i - 1].lseq, b->fkey, b->fklen,
				    b->fseq) >= 0))
			return seg_fail(r, -PARLEY_ECORRUPT, "block=%u bad index record", i);
		expect_off += b->clen;
		entries += b->count;
	}
	if (lr.off != ilen || expect_off != r->info.block_bytes ||
	    entries != in->entries)
		return seg_fail(r, -PARLEY_ECORRUPT, "index does not match footer");
	le_reader_init(&lr, r->meta_raw + ilen, dlen);
	for (uint32_t i = 0; i < in->streams; i++) {
		struct seg_dent *d = &r->dents[i];
		d->klen = le_read8(&lr);
		d->key = le_read_bytes(&lr, d->klen);
		d->si.first_seq = le_read64(&lr);
		d->si.last_seq = le_read64(&lr);
		d->si.count = le_read64(&lr);
		d->si.first_ts = le_read64(&lr);
		d->si.last_ts = le_read64(&lr);
		d->si.first_block = le_read32(&lr);
		d->si.last_block = le_read32(&lr);
		if (!lr.ok || d->klen == 0 || d->si.first_seq == 0 ||
		    d->si.first_seq > d->si.last_seq || d->si.count == 0 ||
		    d->si.first_block > d->si.last_block ||
		    d->si.last_block >= in->blocks ||
		    (i > 0 && kcmp(r->dents[i - 1].key, r->dents[i - 1].klen,
				   d->key, d->klen) >= 0))
			return seg_fail(r, -PARLEY_ECORRUPT, "stream dir record %u bad", i);
	}
	if (lr.off != dlen)
		return seg_fail(r, -PARLEY_ECORRUPT, "stream dir length mismatch");
	int rc = bloom_decode(&r->bloom, r->meta + zlen, blen);
	if (rc)
		return seg_fail(r, rc, "bloom filter unreadable");
	return 0;
}

/* Decompresses and indexes an idempotency section as stored (z, zlen >= 8),
 * checking bounds, order and disjointness: block decoding relies on it to
 * find the producer of H_PRODREF entries. */
static int idem_decode(struct seg_reader *r, const uint8_t *z, size_t zlen,
		       struct seg_idemsec **out)
{
	*out = NULL;
	if (zlen < 8)
		return seg_fail(r, -PARLEY_ECORRUPT, "idempotency section too short");
	uint32_t n = le_get32(z), raw = le_get32(z + 4);
	/* a record is at least 1 + 1 + 16 + 20 bytes */
	if (raw > SEG_IDEM_MAX_RAW || (uint64_t)n * 38 > raw || n == 0)
		return seg_fail(r, -PARLEY_ECORRUPT, "idempotency section header bad");
	size_t recs = (size_t)n * sizeof(struct seg_idem);
	size_t total = sizeof(struct seg_idemsec) + recs + raw;
	struct seg_idemsec *s = malloc(total);
	if (!s)
		return -PARLEY_ENOMEM;
	s->n = n;
	s->charge = total;
	s->irec = (struct seg_idem *)(s + 1);
	s->raw = (uint8_t *)s->irec + recs;
	ZSTD_DCtx *dctx = tls_dctx();
	if (!dctx) {
		free(s);
		return -PARLEY_ENOMEM;
	}
	size_t got = ZSTD_decompressDCtx(dctx, s->raw, raw, z + 8, zlen - 8);
	int rc = 0;
	if (ZSTD_isError(got) || got != raw) {
		rc = seg_fail(r, -PARLEY_ECORRUPT, "idempotency section undecodable");
		goto out;
	}
	struct le_reader lr;
	le_reader_init(&lr, s->raw, raw);
	for (uint32_t i = 0; i < n; i++) {
		struct seg_idem *rec = &s->irec[i];
		rec->klen = le_read8(&lr);
		rec->key = le_read_bytes(&lr, rec->klen);
		const uint8_t *pr = le_read_bytes(&lr, PE_PRODUCER_LEN);
		rec->seq = le_read64(&lr);
		rec->count = le_read32(&lr);
		rec->ts = le_read64(&lr);
		if (!lr.ok || rec->klen == 0 || rec->seq == 0 || rec->count == 0 ||
		    rec->seq + rec->count < rec->seq) {
			rc = seg_fail(r, -PARLEY_ECORRUPT, "idempotency record %u bad", i);
			goto out;
		}
		memcpy(rec->producer, pr, PE_PRODUCER_LEN);
		if (i > 0) {
			const struct seg_idem *p = &s->irec[i - 1];
			int c = kcmp(p->key, p->klen, rec->key, rec->klen);
			if (c > 0 || (c == 0 && p->seq + p->count > rec->seq)) {
				rc = seg_fail(r, -PARLEY_ECORRUPT,
					      "idempotency records out of order at %u", i);
				goto out;
			}
		}
	}
	if (lr.off != raw)
		rc = seg_fail(r, -PARLEY_ECORRUPT, "idempotency section trailing bytes");
out:
	if (rc) {
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* Reads the section from the file, checks it against the checksum taken at
 * open and decodes it. */
static int idem_load(struct seg_reader *r, struct seg_idemsec **out)
{
	uint8_t *z = malloc(r->idem_len);
	if (!z)
		return -PARLEY_ENOMEM;
	int64_t got = r->io->ops->pread(r->io, r->f, z, r->idem_len, r->idem_off);
	int rc;
	if (got < 0)
		rc = seg_fail(r, (int)got, "idempotency section offset=%" PRIu64
			      " read failed", r->idem_off);
	else if ((uint64_t)got != r->idem_len)
		rc = seg_fail(r, -PARLEY_ECORRUPT, "idempotency section offset=%" PRIu64
			      " short read (truncated file)", r->idem_off);
	else if (parley_xxh3(z, r->idem_len, SEG_META_SEED) != r->idem_ck)
		rc = seg_fail(r, -PARLEY_ECORRUPT, "idempotency section offset=%" PRIu64
			      " checksum mismatch", r->idem_off);
	else
		rc = idem_decode(r, z, r->idem_len, out);
	if (got > 0)
		atomic_fetch_add_explicit(&r->bytes_read, (uint64_t)got,
					  memory_order_relaxed);
	free(z);
	return rc;
}

static void idemsec_free(void *p) { free(p); }

/* The decoded section (the segment must have one), from the cache or the
 * file; give it back with idem_release. */
static int idem_acquire(struct seg_reader *r, struct seg_idemref *ref)
{
	ref->s = NULL;
	ref->it = NULL;
	if (!r->cache ||
	    atomic_load_explicit(&r->retired, memory_order_acquire)) {
		/* kept by the reader, as for a reader without a cache (a
		 * retired one lives only until its last read is done) */
		pthread_mutex_lock(&r->idem_mu);
		int rc = r->idem_own ? 0 : idem_load(r, &r->idem_own);
		ref->s = r->idem_own;
		pthread_mutex_unlock(&r->idem_mu);
		return rc;
	}
	uint64_t key = r->cache_key | r->info.seg_id;
	ref->it = bcache_lookup(r->cache, key, SEG_IDEM_BLK);
	if (!ref->it) {
		struct seg_idemsec *s;
		int rc = idem_load(r, &s);
		if (rc)
			return rc;
		rc = bcache_insert(r->cache, key, SEG_IDEM_BLK, s, s->charge,
				   idemsec_free, &ref->it);
		if (rc)
			return rc;
	}
	ref->s = bcache_value(ref->it);
	return 0;
}

static void idem_release(struct seg_reader *r, struct seg_idemref *ref)
{
	if (ref->it)
		bcache_release(r->cache, ref->it);
	ref->s = NULL;
	ref->it = NULL;
}

/* The record covering (key, seq), or NULL. */
static const struct seg_idem *idem_find(const struct seg_idemsec *s,
					const uint8_t *key, uint8_t klen,
					uint64_t seq)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) { /* first record with (key, seq) > target */
		size_t mid = lo + (hi - lo) / 2;
		const struct seg_idem *x = &s->irec[mid];
		if (kscmp(x->key, x->klen, x->seq, key, klen, seq) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	const struct seg_idem *x = &s->irec[lo - 1];
	if (kcmp(x->key, x->klen, key, klen) || seq >= x->seq + x->count)
		return NULL;
	return x;
}

int seg_idem_foreach(struct seg_reader *r,
		     int (*cb)(void *arg, const struct seg_idem *rec), void *arg)
{
	if (r->info.idem_records == 0)
		return 0;
	struct seg_idemref ref;
	int rc = idem_acquire(r, &ref);
	for (uint32_t i = 0; !rc && i < ref.s->n; i++)
		rc = cb(arg, &ref.s->irec[i]);
	idem_release(r, &ref);
	return rc;
}

uint64_t seg_resident_bytes(const struct seg_reader *r)
{
	return sizeof *r + r->meta_raw_len +
	       (uint64_t)r->info.blocks * sizeof *r->blocks +
	       (uint64_t)r->info.streams * sizeof *r->dents +
	       ((uint64_t)r->bloom.nbits + 7) / 8 +
	       (r->dctx ? ZSTD_sizeof_DCtx(r->dctx) : 0) +
	       (r->idem_own ? r->idem_own->charge : 0);
}

int seg_open(struct pio *io, const char *dir, const char *name,
	     const struct seg_open_opts *o, struct seg_reader **out,
	     char *err, size_t errcap)
{
	*out = NULL;
	struct seg_reader *r = calloc(1, sizeof *r);
	if (!r)
		return -PARLEY_ENOMEM;
	atomic_init(&r->refs, 1);
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->idem_mu, NULL);
	r->io = io;
	r->cache = o ? o->cache : NULL;
	r->cache_key = o ? o->cache_ns : 0;
	int rc = join_path(r->path, sizeof r->path, dir, name);
	if (rc)
		goto fail;
	rc = io->ops->open(io, r->path, 0, &r->f);
	if (rc) {
		r->f = NULL;
		seg_fail(r, rc, "open failed");
		goto fail;
	}
	int64_t size = io->ops->size(io, r->f);
	if (size < 0) {
		rc = seg_fail(r, (int)size, "size failed");
		goto fail;
	}
	r->info.file_bytes = (uint64_t)size;
	uint8_t ft[SEG_FOOTER_LEN];
	if (size < (int64_t)SEG_FOOTER_LEN) {
		rc = seg_fail(r, -PARLEY_ECORRUPT,
			      "truncated: %" PRId64 " bytes, no footer", size);
		goto fail;
	}
	int64_t got = io->ops->pread(io, r->f, ft, SEG_FOOTER_LEN,
				     (uint64_t)size - SEG_FOOTER_LEN);
	if (got != SEG_FOOTER_LEN) {
		rc = got < 0 ? seg_fail(r, (int)got, "footer read failed")
			     : seg_fail(r, -PARLEY_ECORRUPT, "footer short read");
		goto fail;
	}
	if (le_get64(ft) != SEG_MAGIC ||
	    le_get64(ft + 120) != parley_xxh3(ft, 120, SEG_FOOT_SEED)) {
		rc = seg_fail(r, -PARLEY_ECORRUPT,
			      "footer magic/checksum mismatch (torn or truncated write?)");
		goto fail;
	}
	if (le_get32(ft + 8) != SEG_VERSION) {
		rc = seg_fail(r, -PARLEY_EVERSION, "version %u unsupported",
			      le_get32(ft + 8));
		goto fail;
	}
	struct seg_info *in = &r->info;
	in->seg_id = le_get64(ft + 16);
	in->dict_id = le_get64(ft + 24);
	in->entries = le_get64(ft + 32);
	in->streams = le_get32(ft + 40);
	in->blocks = le_get32(ft + 44);
	uint64_t ioff = le_get64(ft + 48);
	uint32_t ilen = le_get32(ft + 56), dlen = le_get32(ft + 60),
		 blen = le_get32(ft + 64), idlen = le_get32(ft + 68);
	uint64_t mck = le_get64(ft + 72);
	in->raw_payload_bytes = le_get64(ft + 80);
	in->raw_block_bytes = le_get64(ft + 88);
	in->min_ts = le_get64(ft + 96);
	in->max_ts = le_get64(ft + 104);
	in->block_bytes = le_get64(ft + 112);
	/* [zstd(index + dir)][bloom][idem] between the blocks and the footer */
	uint64_t mlen = (uint64_t)size - SEG_FOOTER_LEN - PARLEY_MIN(ioff, (uint64_t)size);
	if (ioff != in->block_bytes || ioff + SEG_FOOTER_LEN > (uint64_t)size ||
	    mlen <= (uint64_t)blen + idlen ||
	    (uint64_t)ilen + dlen > SEG_MAX_META_RAW) {
		rc = seg_fail(r, -PARLEY_ECORRUPT, "section sizes do not add up to file size");
		goto fail;
	}
	r->meta = malloc(mlen ? mlen : 1);
	if (!r->meta) {
		rc = -PARLEY_ENOMEM;
		goto fail;
	}
	got = io->ops->pread(io, r->f, r->meta, mlen, ioff);
	if (got < 0 || (uint64_t)got != mlen) {
		rc = got < 0 ? seg_fail(r, (int)got, "index read failed")
			     : seg_fail(r, -PARLEY_ECORRUPT, "index short read");
		goto fail;
	}
	if (parley_xxh3(r->meta, mlen, SEG_META_SEED) != mck) {
		rc = seg_fail(r, -PARLEY_ECORRUPT, "index/dir/bloom checksum mismatch");
		goto fail;
	}
	r->dctx = ZSTD_createDCtx();
	uint64_t zlen = mlen - blen - idlen;
	r->meta_raw_len = (size_t)ilen + dlen + 1;
	r->meta_raw = malloc(r->meta_raw_len);
	if (!r->dctx || !r->meta_raw) {
		rc = -PARLEY_ENOMEM;
		goto fail;
	}
	size_t dn = ZSTD_decompressDCtx(r->dctx, r->meta_raw, (size_t)ilen + dlen,
					r->meta, zlen);
	if (ZSTD_isError(dn) || dn != (size_t)ilen + dlen) {
		rc = seg_fail(r, -PARLEY_ECORRUPT, "index/dir undecodable");
		goto fail;
	}
	rc = parse_meta(r, ilen, dlen, zlen, blen);
	if (rc)
		goto fail;
	/* The idempotency section is checked in full here (a corrupt one
	 * fails the open, as the rest of the meta region does) and then
	 * dropped: it is read again when needed, verified against idem_ck. */
	r->idem_off = ioff + zlen + blen;
	r->idem_len = idlen;
	if (idlen) {
		const uint8_t *z = r->meta + zlen + blen;
		r->idem_ck = parley_xxh3(z, idlen, SEG_META_SEED);
		struct seg_idemsec *s;
		rc = idem_decode(r, z, idlen, &s);
		if (rc)
			goto fail;
		in->idem_records = s->n;
		free(s);
	}
	free(r->meta); /* the bloom filter and index/dir were copied out */
	r->meta = NULL;
	if (in->dict_id) {
		r->dict = o && o->dict_lookup ? o->dict_lookup(o->dict_arg, in->dict_id)
					      : NULL;
		if (!r->dict || r->dict->id != in->dict_id) {
			r->dict = NULL;
			rc = seg_fail(r, -PARLEY_ENOTFOUND,
				      "dictionary %016" PRIx64 " not available",
				      in->dict_id);
			goto fail;
		}
		dict_ref(r->dict); /* dropped by the last seg_close */
	}
	*out = r;
	return 0;
fail:
	if (err && errcap)
		snprintf(err, errcap, "%s", r->err[0] ? r->err : parley_strerror(rc));
	seg_close(r);
	return rc;
}

void seg_set_dict(struct seg_reader *r, const struct pdict *d)
{
	PARLEY_ASSERT(r->dict && d && r->dict->id == d->id);
	const struct pdict *old = r->dict;
	r->dict = dict_ref(d);
	dict_free((struct pdict *)old);
}

int seg_block_meta(const struct seg_reader *r, uint32_t blk,
		   struct seg_block_info *out)
{
	if (blk >= r->info.blocks)
		return -PARLEY_EINVAL;
	const struct seg_bmeta *b = &r->blocks[blk];
	out->offset = b->off;
	out->clen = b->clen;
	out->rlen = b->rlen;
	out->count = b->count;
	out->first_seq = b->fseq;
	out->last_seq = b->lseq;
	out->first_key = b->fkey;
	out->first_klen = b->fklen;
	out->last_key = b->lkey;
	out->last_klen = b->lklen;
	return 0;
}

static int dir_find(const struct seg_reader *r, const uint8_t *key, size_t klen)
{
	size_t lo = 0, hi = r->info.streams;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = kcmp(r->dents[mid].key, r->dents[mid].klen, key, klen);
		if (c == 0)
			return (int)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

bool seg_may_contain(const struct seg_reader *r, const void *key, size_t klen)
{
	return bloom_may_contain(&r->bloom, key, klen);
}

int seg_stream_info(const struct seg_reader *r, const void *key, size_t klen,
		    struct seg_stream_info *out)
{
	if (klen == 0 || klen > PE_MAX_KEY || !bloom_may_contain(&r->bloom, key, klen))
		return -PARLEY_ENOTFOUND;
	int i = dir_find(r, key, klen);
	if (i < 0)
		return -PARLEY_ENOTFOUND;
	*out = r->dents[i].si;
	return 0;
}

int seg_stream_at(const struct seg_reader *r, uint32_t i, const uint8_t **key,
		  uint8_t *klen, struct seg_stream_info *out)
{
	if (i >= r->info.streams)
		return -PARLEY_EINVAL;
	*key = r->dents[i].key;
	*klen = r->dents[i].klen;
	*out = r->dents[i].si;
	return 0;
}

static void block_free(void *p) { free(p); }

/* Decode a raw block into a seg_block; validates everything against the
 * index record. The raw buffer is inside the block allocation. The first
 * H_PRODREF entry acquires the idempotency section into *ref (the caller
 * releases it); producers are copied, nothing points into it. */
static int block_decode(struct seg_reader *r, uint32_t blk, struct seg_block *b,
			struct seg_idemref *ref)
{
	const struct seg_bmeta *bm = &r->blocks[blk];
	struct le_reader lr;
	le_reader_init(&lr, b->raw, bm->rlen);
	uint32_t count = le_read32(&lr), meta_len = le_read32(&lr);
	uint32_t ts_len = le_read32(&lr), len_len = le_read32(&lr);
	if (!lr.ok || count != bm->count || meta_len > bm->rlen - SEG_BLOCK_HDR ||
	    (uint64_t)count + ts_len + len_len > meta_len)
		return seg_fail(r, -PARLEY_ECORRUPT, "block=%u bad block header", blk);
	/* columns: headers | ts deltas | lengths | the rest */
	const uint8_t *col = b->raw + SEG_BLOCK_HDR;
	struct le_reader hr, tr, nr, mr;
	le_reader_init(&hr, col, count);
	le_reader_init(&tr, col + count, ts_len);
	le_reader_init(&nr, col + count + ts_len, len_len);
	uint32_t rest = meta_len - count - ts_len - len_len;
	le_reader_init(&mr, col + count + ts_len + len_len, rest);
	const uint8_t *pay = col + meta_len;
	size_t pay_left = bm->rlen - SEG_BLOCK_HDR - meta_len;
	const uint8_t *key = NULL;
	uint8_t klen = 0;
	uint64_t seq = 0, ts = 0;
	uint16_t type = 0;
	for (uint32_t i = 0; i < count; i++) {
		struct seg_bent *be = &b->ents[i];
		uint8_t hdr = le_read8(&hr);
		if (hdr & ~H_KNOWN)
			mr.ok = false;
		bool newkey = hdr & H_NEWKEY;
		if (i == 0 && !newkey)
			mr.ok = false;
		uint64_t pseq = seq;
		if (newkey) {
			klen = le_read8(&mr);
			const uint8_t *nk = le_read_bytes(&mr, klen);
			if (klen == 0 || (key && nk && kcmp(key, be[-1].klen, nk, klen) >= 0))
				mr.ok = false;
			key = nk;
		}
		if (hdr & H_SEQ1)
			seq = pseq + 1;
		else if (newkey)
			seq = read_varint(&mr);
		else {
			uint64_t d = read_varint(&mr);
			seq = pseq + d;
			if (d == 0 || seq < pseq)
				mr.ok = false;
		}
		if (!(hdr & H_TSSAME))
			ts += (uint64_t)unzigzag(read_varint(&tr));
		if (!(hdr & H_TYPESAME)) {
			uint64_t t = read_varint(&mr);
			if (t > UINT16_MAX)
				mr.ok = false;
			type = (uint16_t)t;
		}
		uint64_t flags = (hdr & H_FLAGS0) ? 0 : read_varint(&mr);
		if (flags > UINT16_MAX)
			mr.ok = false;
		const uint8_t *prod = (hdr & H_PROD) ? le_read_bytes(&mr, PE_PRODUCER_LEN) : NULL;
		if ((hdr & H_PRODREF) && mr.ok && key) {
			if (!ref->s && !(hdr & H_PROD) && r->info.idem_records) {
				int rc = idem_acquire(r, ref);
				if (rc)
					return rc;
			}
			const struct seg_idem *ir = (hdr & H_PROD) || !ref->s ? NULL
					: idem_find(ref->s, key, klen, seq);
			if (!ir)
				return seg_fail(r, -PARLEY_ECORRUPT,
						"block=%u entry=%u producer record missing", blk, i);
			prod = ir->producer;
		}
		uint64_t len = read_varint(&nr);
		if (!mr.ok || !hr.ok || !tr.ok || !nr.ok || seq == 0 ||
		    len > pay_left || (newkey && (hdr & H_SEQ1)))
			return seg_fail(r, -PARLEY_ECORRUPT,
					"block=%u entry=%u undecodable", blk, i);
		be->key = key;
		be->klen = klen;
		be->e.seq = seq;
		be->e.ts_ms = ts;
		be->e.type = type;
		be->e.flags = (uint16_t)flags;
		if (prod)
			memcpy(be->e.producer, prod, PE_PRODUCER_LEN);
		else
			memset(be->e.producer, 0, PE_PRODUCER_LEN);
		be->e.len = (uint32_t)len;
		be->e.payload = pay;
		pay += len;
		pay_left -= len;
	}
	if (mr.off != rest || hr.off != count || tr.off != ts_len ||
	    nr.off != len_len || pay_left != 0)
		return seg_fail(r, -PARLEY_ECORRUPT, "block=%u trailing bytes", blk);
	const struct seg_bent *f = &b->ents[0], *l = &b->ents[count - 1];
	if (kscmp(f->key, f->klen, f->e.seq, bm->fkey, bm->fklen, bm->fseq) ||
	    kscmp(l->key, l->klen, l->e.seq, bm->lkey, bm->lklen, bm->lseq))
		return seg_fail(r, -PARLEY_ECORRUPT,
				"block=%u contents do not match the index", blk);
	b->blk = blk;
	b->count = count;
	return 0;
}

/* Read, verify, decompress and decode block blk (no cache involved). */
static int block_load(struct seg_reader *r, uint32_t blk, struct seg_block **out)
{
	const struct seg_bmeta *bm = &r->blocks[blk];
	size_t ents = (size_t)bm->count * sizeof(struct seg_bent);
	if (bm->count > bm->rlen) /* each entry needs >= 2 bytes of meta */
		return seg_fail(r, -PARLEY_ECORRUPT, "block=%u count too large", blk);
	size_t total = sizeof(struct seg_block) + ents + bm->rlen;
	struct seg_block *b = malloc(total);
	uint8_t *comp = malloc(bm->clen);
	int rc = 0;
	if (!b || !comp) {
		rc = -PARLEY_ENOMEM;
		goto out;
	}
	b->ents = (struct seg_bent *)(b + 1);
	b->raw = (uint8_t *)b->ents + ents;
	b->charge = total;
	int64_t got = r->io->ops->pread(r->io, r->f, comp, bm->clen, bm->off);
	if (got > 0)
		atomic_fetch_add_explicit(&r->bytes_read, (uint64_t)got,
					  memory_order_relaxed);
	if (got < 0) {
		rc = seg_fail(r, (int)got, "block=%u offset=%" PRIu64 " read failed",
			      blk, bm->off);
		goto out;
	}
	if ((uint64_t)got != bm->clen) {
		rc = seg_fail(r, -PARLEY_ECORRUPT, "block=%u offset=%" PRIu64
			      " short read (truncated file)", blk, bm->off);
		goto out;
	}
	if (parley_xxh3(comp, bm->clen, SEG_BLOCK_SEED + blk) != bm->cksum) {
		rc = seg_fail(r, -PARLEY_ECORRUPT, "block=%u offset=%" PRIu64
			      " checksum mismatch", blk, bm->off);
		goto out;
	}
	ZSTD_DCtx *dctx = tls_dctx();
	if (!dctx) {
		rc = -PARLEY_ENOMEM;
		goto out;
	}
	size_t n = r->dict ? ZSTD_decompress_usingDDict(dctx, b->raw, bm->rlen,
							comp, bm->clen,
							r->dict->ddict)
			   : ZSTD_decompressDCtx(dctx, b->raw, bm->rlen,
						 comp, bm->clen);
	if (ZSTD_isError(n) || n != bm->rlen) {
		rc = seg_fail(r, -PARLEY_ECORRUPT, "block=%u decompression failed: %s",
			      blk, ZSTD_isError(n) ? ZSTD_getErrorName(n) : "size mismatch");
		goto out;
	}
	struct seg_idemref ref = { 0 };
	rc = block_decode(r, blk, b, &ref);
	idem_release(r, &ref);
out:
	free(comp);
	if (rc) {
		free(b);
		return rc;
	}
	*out = b;
	return 0;
}

static int block_get(struct seg_reader *r, uint32_t blk, struct seg_pin *pin)
{
	pin->b = NULL;
	pin->it = NULL;
	if (r->cache) {
		struct bcache_item *it = bcache_lookup(r->cache, r->cache_key | r->info.seg_id, blk);
		if (it) {
			pin->it = it;
			pin->b = bcache_value(it);
			return 0;
		}
	}
	struct seg_block *b;
	int rc = block_load(r, blk, &b);
	if (rc)
		return rc;
	if (!r->cache ||
	    atomic_load_explicit(&r->retired, memory_order_acquire)) {
		/* a retired segment's blocks are not cached: its cache entries
		 * were erased, and nothing would find new ones */
		pin->b = b;
		return 0;
	}
	rc = bcache_insert(r->cache, r->cache_key | r->info.seg_id, blk, b, b->charge,
			   block_free, &pin->it);
	if (rc)
		return rc;
	pin->b = bcache_value(pin->it);
	return 0;
}

static void pin_release(struct seg_reader *r, struct seg_pin *pin)
{
	if (pin->it)
		bcache_release(r->cache, pin->it);
	else
		free(pin->b);
	pin->b = NULL;
	pin->it = NULL;
}

/* ---- iterators ------------------------------------------------------------- */

struct seg_iter {
	struct seg_reader *r;
	bool all;
	enum pe_dir dir;
	uint8_t key[PE_MAX_KEY];
	uint8_t klen;
	uint32_t first_block, last_block;
	uint32_t blk;
	int64_t pos;       /* next index in the current block */
	struct seg_pin cur;
	bool keep_pins;
	struct seg_pin *kept;
	size_t nkept, capkept;
	bool started, done;
	int err;
	uint64_t from;
};

static int iter_drop_cur(struct seg_iter *it)
{
	if (!it->cur.b)
		return 0;
	if (it->keep_pins) {
		if (it->nkept == it->capkept) {
			size_t nc = it->capkept ? it->capkept * 2 : 8;
			struct seg_pin *k = realloc(it->kept, nc * sizeof *k);
			if (!k)
				return -PARLEY_ENOMEM;
			it->kept = k;
			it->capkept = nc;
		}
		it->kept[it->nkept++] = it->cur;
		it->cur.b = NULL;
		it->cur.it = NULL;
	} else {
		pin_release(it->r, &it->cur);
	}
	return 0;
}

void seg_iter_free(struct seg_iter *it)
{
	if (!it)
		return;
	if (it->cur.b)
		pin_release(it->r, &it->cur);
	for (size_t i = 0; i < it->nkept; i++)
		pin_release(it->r, &it->kept[i]);
	free(it->kept);
	free(it);
}

int seg_iter_all(struct seg_reader *r, struct seg_iter **out)
{
	struct seg_iter *it = calloc(1, sizeof *it);
	if (!it)
		return -PARLEY_ENOMEM;
	it->r = r;
	it->all = true;
	it->dir = PE_FORWARD;
	it->first_block = 0;
	it->last_block = r->info.blocks - 1;
	*out = it;
	return 0;
}

int seg_iter_stream(struct seg_reader *r, const void *key, size_t klen,
		    uint64_t from, enum pe_dir dir, bool keep_pins,
		    struct seg_iter **out)
{
	if (klen == 0 || klen > PE_MAX_KEY)
		return -PARLEY_EINVAL;
	struct seg_iter *it = calloc(1, sizeof *it);
	if (!it)
		return -PARLEY_ENOMEM;
	it->r = r;
	it->dir = dir;
	memcpy(it->key, key, klen);
	it->klen = (uint8_t)klen;
	it->keep_pins = keep_pins;
	it->from = from;
	struct seg_stream_info si;
	if (seg_stream_info(r, key, klen, &si) != 0) {
		it->done = true;
	} else {
		it->first_block = si.first_block;
		it->last_block = si.last_block;
		if (dir == PE_FORWARD && from > si.last_seq)
			it->done = true;
		if (dir == PE_BACKWARD && from < si.first_seq)
			it->done = true;
	}
	*out = it;
	return 0;
}

/* Position on the first block/entry of a stream iterator. */
static int iter_start(struct seg_iter *it)
{
	struct seg_reader *r = it->r;
	it->started = true;
	if (it->all) {
		it->blk = 0;
		it->pos = 0;
		return block_get(r, 0, &it->cur);
	}
	uint32_t lo = it->first_block, hi = it->last_block + 1, blk;
	if (it->dir == PE_FORWARD) {
		/* first block whose last (key, seq) >= (key, from) */
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			const struct seg_bmeta *b = &r->blocks[mid];
			if (kscmp(b->lkey, b->lklen, b->lseq, it->key, it->klen, it->from) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo > it->last_block) {
			it->done = true;
			return 0;
		}
		blk = lo;
	} else {
		/* last block whose first (key, seq) <= (key, from) */
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			const struct seg_bmeta *b = &r->blocks[mid];
			if (kscmp(b->fkey, b->fklen, b->fseq, it->key, it->klen, it->from) <= 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == it->first_block) {
			it->done = true;
			return 0;
		}
		blk = lo - 1;
	}
	int rc = block_get(r, blk, &it->cur);
	if (rc)
		return rc;
	it->blk = blk;
	const struct seg_block *b = it->cur.b;
	/* in-block: first index with (key, seq) >= target (or > for backward) */
	uint32_t l = 0, h = b->count;
	while (l < h) {
		uint32_t mid = l + (h - l) / 2;
		const struct seg_bent *e = &b->ents[mid];
		int c = kscmp(e->key, e->klen, e->e.seq, it->key, it->klen, it->from);
		if (it->dir == PE_FORWARD ? c < 0 : c <= 0)
			l = mid + 1;
		else
			h = mid;
	}
	it->pos = it->dir == PE_FORWARD ? (int64_t)l : (int64_t)l - 1;
	return 0;
}

int seg_iter_next(struct seg_iter *it, struct seg_item *item)
{
	if (it->err)
		return it->err;
	if (it->done)
		return 0;
	int rc = 0;
	if (!it->started && (rc = iter_start(it)) != 0)
		goto fail;
	for (;;) {
		if (it->done)
			return 0;
		const struct seg_block *b = it->cur.b;
		if (it->pos >= 0 && it->pos < (int64_t)b->count) {
			const struct seg_bent *e = &b->ents[it->pos];
			if (!it->all && kcmp(e->key, e->klen, it->key, it->klen) != 0) {
				it->done = true;
				return 0;
			}
			item->key = e->key;
			item->klen = e->klen;
			item->e = e->e;
			it->pos += it->dir == PE_FORWARD ? 1 : -1;
			return 1;
		}
		/* move to the neighbouring block */
		uint32_t nb;
		if (it->dir == PE_FORWARD) {
			if (it->blk >= it->last_block) {
				it->done = true;
				return 0;
			}
			nb = it->blk + 1;
		} else {
			if (it->blk <= it->first_block) {
				it->done = true;
				return 0;
			}
			nb = it->blk - 1;
		}
		if ((rc = iter_drop_cur(it)) != 0)
			goto fail;
		if ((rc = block_get(it->r, nb, &it->cur)) != 0)
			goto fail;
		it->blk = nb;
		it->pos = it->dir == PE_FORWARD ? 0 : (int64_t)it->cur.b->count - 1;
	}
fail:
	it->err = rc;
	return rc;
}

int seg_read(struct seg_reader *r, const void *key, size_t klen,
	     uint64_t from, enum pe_dir dir, uint32_t limit,
	     struct pe_entry *out, uint32_t *count, bool *end,
	     struct seg_iter **hold)
{
	*count = 0;
	*hold = NULL;
	if (limit == 0)
		return -PARLEY_EINVAL;
	struct seg_iter *it;
	int rc = seg_iter_stream(r, key, klen, from, dir, true, &it);
	if (rc)
		return rc;
	struct seg_item item;
	uint32_t n = 0;
	while (n < limit && (rc = seg_iter_next(it, &item)) == 1)
		out[n++] = item.e;
	if (rc < 0) {
		seg_iter_free(it);
		return rc;
	}
	if (end) {
		if (rc == 0) {
			*end = true;
		} else {
			struct seg_stream_info si;
			PARLEY_ASSERT(seg_stream_info(r, key, klen, &si) == 0);
			*end = dir == PE_FORWARD ? out[n - 1].seq >= si.last_seq
						 : out[n - 1].seq <= si.first_seq;
		}
	}
	*count = n;
	*hold = it;
	return 0;
}

int seg_verify(struct seg_reader *r, struct seg_verify_report *rep)
{
	memset(rep, 0, sizeof *rep);
	int first = 0;
	for (uint32_t i = 0; i < r->info.blocks; i++) {
		struct seg_block *b;
		int rc = block_load(r, i, &b);
		if (rc == 0) {
			rep->blocks_ok++;
			rep->entries += b->count;
			free(b);
			continue;
		}
		rep->blocks_bad++;
		if (!first) {
			first = rc;
			snprintf(rep->first_error, sizeof rep->first_error, "%s", r->err);
		}
		if (rc == -PARLEY_ENOMEM)
			return rc;
	}
	return first;
}

int seg_remove(struct pio *io, const char *dir, uint64_t seg_id)
{
	char name[64], path[1024];
	seg_file_name(name, sizeof name, seg_id);
	int rc = join_path(path, sizeof path, dir, name);
	if (rc)
		return rc;
	return pio_file_remove(io, dir, path);
}
