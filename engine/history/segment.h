/*
 * segment.h — immutable history segment files (private to engine/).
 *
 * A segment holds entries of many streams of one partition, sorted by
 * (stream key, seq), in blocks of ~SEG_DEFAULT_BLOCK raw bytes each
 * compressed with zstd — with the partition's dictionary (dict.h) when it
 * has one, plain zstd otherwise. An entry is never split across blocks; a
 * block holds entries of one or more streams.
 *
 * File layout (all integers little-endian):
 *
 *   [block 0]...[block n-1][zstd(index + stream dir)][bloom][idem][footer 128 B]
 *
 *   block      zstd frame of the raw block:
 *                u32 count | u32 meta_len | u32 ts_len | u32 len_len |
 *                meta[meta_len] | payloads...
 *              meta is stored by column so that alike bytes sit together
 *              for the compressor (and payloads, text, next to text):
 *                hdr[count] | ts deltas[ts_len] | lengths[len_len] | rest
 *              per entry, in order, each column holding its part of:
 *                u8 hdr  bit0 NEWKEY  u8 klen + key follow (else: same key)
 *                        bit1 PROD    16-byte producer id follows (else 0)
 *                        bit6 PRODREF the producer is that of the idempotency
 *                                     record covering (key, seq): stored once
 *                                     per batch instead of once per entry
 *                        bit2 SEQ1    seq = previous seq + 1 (else varint:
 *                                     absolute after NEWKEY, delta otherwise)
 *                        bit3 TYPE=   type as previous entry (else varint)
 *                        bit4 FLAGS0  flags == 0 (else varint)
 *                        bit5 TS=     ts as previous entry (else varint
 *                                     zigzag delta from the previous entry,
 *                                     in the ts column)
 *                varint payload length (in the lengths column)
 *              the rest column holds keys, seqs, types, flags and inline
 *              producers, in that order per entry
 *   index      per block: u64 offset | u32 clen | u32 rlen | u32 count |
 *              u64 xxh3(compressed bytes, SEG_BLOCK_SEED + block no) |
 *              u8 klen, key, u64 seq of the first entry | same for the last
 *   stream dir per stream, key order: u8 klen, key | u64 first seq |
 *              u64 last seq | u64 count | u64 first ts | u64 last ts |
 *              u32 first block | u32 last block
 *   bloom      bloom.h serialized filter over the stream keys
 *   idem       idempotency records (length 0 when none): u32 records |
 *              u32 raw length | zstd frame of the records, each u8 klen,
 *              key | producer[16] | u64 first seq | u32 count | u64 ts,
 *              sorted by (key, seq), ranges disjoint per key — one per
 *              appended batch that carried a producer id, so the engine can
 *              rebuild its idempotency table after the WAL that held those
 *              batches is released
 *   footer     see SEG_FOOTER_LEN in segment.c: magic, version, segment id,
 *              dictionary id (0 = none), counts, section lengths, raw byte
 *              counts, min/max ts, xxh3 of index+dir+bloom+idem, xxh3 of
 *              the footer itself.
 *
 * Segment lifecycle:
 *
 *   seg_writer_new ──► WRITING  seg-<id>.pseg.tmp, blocks appended as they fill
 *                        │ seg_writer_finish: index, dir, bloom, footer,
 *                        │ fdatasync, rename to seg-<id>.pseg, fsync dir
 *                        ▼                          (crash before: only a .tmp
 *                      SEALED  immutable, readable   remains; recovery unlinks
 *                        │ caller records it in       it, it is never listed)
 *                        │ the partition manifest
 *                        ▼
 *                      LIVE  reads (seg_open/seg_iter_*), compaction input
 *                        │ compaction wrote its replacement and the manifest
 *                        │ no longer names it
 *                        ▼
 *                      OBSOLETE ──last reader closed, bcache_erase_segment──►
 *                                  seg_remove (unlink + fsync dir) ──► GONE
 *
 * Invariants
 *   1. Entries in a segment are strictly increasing in (key, seq); the
 *      writer refuses anything else (-PARLEY_EINVAL) so no reader ever has
 *      to handle duplicates inside one segment.
 *   2. A sealed file is never modified. Its footer checksum covers the
 *      footer, the meta checksum covers index+dir+bloom+idem, each block has its
 *      own checksum: a read returns verified bytes or -PARLEY_ECORRUPT with
 *      a message naming the file and the block, never wrong data.
 *   3. A segment written with dictionary D names D's id; it is readable only
 *      with D (seg_open fails with -PARLEY_ENOTFOUND naming the id if the
 *      caller cannot supply it).
 *
 * Ownership: a reader owns its file handle, its parsed index/dir/bloom and
 * its zstd context; it borrows the dictionary and the block cache (both
 * must outlive it). Its idempotency section is not resident: it is decoded
 * on demand into the block cache (see seg_resident_bytes), so a reader's
 * memory is O(blocks + streams), not O(entries). Entries handed out by an iterator point into a
 * decompressed block that the iterator pins (in the cache, or owned by the
 * iterator without one); they stay valid until the iterator moves past the
 * block (keep_pins=false) or until seg_iter_free (keep_pins=true).
 * Reference counting: a reader starts with one reference; seg_ref adds
 * one and seg_close drops one, the last closing the file and freeing the
 * reader (it also holds a reference on its dictionary, dict.h). The
 * engine's read pool keeps a reference on every reader of its snapshot
 * (hpart_view) so a compaction that replaces the segment meanwhile does
 * not free it under the read.
 * Threads: a writer belongs to one thread at a time. A reader may be used
 * by several threads at once (seg_iter_stream, seg_read, seg_idem_foreach,
 * seg_stream_info, seg_may_contain; blocks are decompressed with the
 * calling thread's zstd context, the block cache is thread-safe); an
 * iterator belongs to one thread at a time. seg_set_dict only before the
 * reader is shared.
 */
#ifndef PARLEY_ENGINE_SEGMENT_H
#define PARLEY_ENGINE_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bcache.h"
#include "dict.h"
#include "io.h"
#include "parley_engine.h"

#define SEG_DEFAULT_BLOCK (48u * 1024) /* raw bytes per block (target) */
#define SEG_MIN_BLOCK (1u * 1024)
#define SEG_MAX_BLOCK (1u << 20)
/* A block may exceed its target by one entry; this bounds any block. An
 * entry is bounded by the command that carried it (PE_MAX_COMMAND): logs
 * written before PE_MAX_PAYLOAD was derived from it hold entries a little
 * over PE_MAX_PAYLOAD. */
#define SEG_MAX_BLOCK_RAW (SEG_MAX_BLOCK + PE_MAX_COMMAND + 4096u)
#define SEG_DEFAULT_BLOOM_BITS 10u
#define SEG_BLOCK_SEED 0x706c7365672d626bull /* "plseg-bk" */
#define SEG_META_SEED 0x706c7365672d6d74ull  /* "plseg-mt" */
#define SEG_FOOT_SEED 0x706c7365672d6674ull  /* "plseg-ft" */
#define SEG_ERR_LEN 256
/* Block number under which a segment's decoded idempotency section is
 * cached (real block numbers are below it). */
#define SEG_IDEM_BLK UINT32_MAX

/* ---- writing ------------------------------------------------------------- */

struct seg_writer;

struct seg_write_opts {
	uint32_t block_bytes;        /* 0 = SEG_DEFAULT_BLOCK */
	/* Idempotency records: by default derived from the entries (a run of
	 * consecutive entries of one stream with the same non-zero producer
	 * and ts is one appended batch). A compaction, whose inputs may have
	 * lost part of a batch, sets no_derive_idem and copies the inputs'
	 * records with seg_writer_add_idem instead. */
	bool no_derive_idem;
	int level;                   /* zstd level; 0 = DICT_DEFAULT_LEVEL. With a
					dict of another level, the writer makes
					its own CDict of the dict at this level */
	const struct pdict *dict;    /* NULL = plain zstd; borrowed until finish */
	unsigned bloom_bits_per_key; /* 0 = SEG_DEFAULT_BLOOM_BITS */
};

struct seg_write_info {
	char name[64];               /* seg-<id>.pseg */
	uint64_t seg_id;
	uint64_t dict_id;
	uint64_t entries;
	uint32_t streams;
	uint32_t blocks;
	uint64_t raw_payload_bytes;  /* sum of payload lengths */
	uint64_t raw_block_bytes;    /* uncompressed block bytes (meta + payloads) */
	uint64_t block_bytes;        /* compressed block bytes */
	uint64_t file_bytes;         /* the whole file */
};

/* "seg-<id:016x>.pseg" into buf; returns buf. */
char *seg_file_name(char *buf, size_t cap, uint64_t seg_id);
/* Parses a segment file name; false for anything else (.tmp included). */
bool seg_parse_name(const char *name, uint64_t *seg_id);

/* seg_id must be unique among the segments sharing a block cache. */
int seg_writer_new(struct pio *io, const char *dir, uint64_t seg_id,
		   const struct seg_write_opts *o, struct seg_writer **out);
/* Entries must come in strictly increasing (key, seq) order; the payload is
 * copied. After an error the writer is failed (sticky): only abort remains. */
int seg_writer_add(struct seg_writer *w, const void *key, size_t klen,
		   const struct pe_entry *e);
struct seg_idem {
	const uint8_t *key;
	uint8_t klen;
	uint8_t producer[PE_PRODUCER_LEN];
	uint64_t seq;    /* first seq of the batch */
	uint32_t count;  /* entries in the batch */
	uint64_t ts;
};
/* Adds one idempotency record (any order; copied). */
int seg_writer_add_idem(struct seg_writer *w, const struct seg_idem *rec);

/* Seals the segment durably (see lifecycle) and frees the writer, whatever
 * the outcome; on error the temp file is removed. An empty writer (no
 * entries) is -PARLEY_EINVAL. */
int seg_writer_finish(struct seg_writer *w, struct seg_write_info *info);
void seg_writer_abort(struct seg_writer *w);
/* Raw (uncompressed) bytes buffered or written so far (flush sizing). */
uint64_t seg_writer_bytes(const struct seg_writer *w);
/* Bytes written to the file so far (compressed blocks; I/O pacing). */
uint64_t seg_writer_file_bytes(const struct seg_writer *w);

/* ---- reading ------------------------------------------------------------- */

struct seg_reader;
struct seg_iter;

typedef const struct pdict *(*seg_dict_lookup_fn)(void *arg, uint64_t id);

struct seg_open_opts {
	struct bcache *cache;           /* NULL = no caching */
	seg_dict_lookup_fn dict_lookup; /* required for dictionary segments */
	void *dict_arg;
	/* OR-ed into the segment id to key the cache: segment ids are per
	 * partition, a cache is shared by a shard's partitions. */
	uint64_t cache_ns;
};

struct seg_info {
	uint64_t seg_id;
	uint32_t idem_records;
	uint64_t dict_id;
	uint64_t entries;
	uint32_t streams;
	uint32_t blocks;
	uint64_t raw_payload_bytes;
	uint64_t raw_block_bytes;
	uint64_t block_bytes;        /* compressed */
	uint64_t file_bytes;
	uint64_t min_ts, max_ts;
};

struct seg_stream_info {
	uint64_t first_seq, last_seq, count;
	uint64_t first_ts, last_ts;
	uint32_t first_block, last_block;
};

struct seg_block_info {
	uint64_t offset;
	uint32_t clen, rlen, count;
	uint64_t first_seq, last_seq;
	const uint8_t *first_key, *last_key; /* valid while the reader is open */
	uint8_t first_klen, last_klen;
};

/* Opens and verifies footer and meta checksums. On error *out is NULL and
 * err (if given) says what and where ("file=... : ..."). */
int seg_open(struct pio *io, const char *dir, const char *name,
	     const struct seg_open_opts *o, struct seg_reader **out,
	     char *err, size_t errcap);
/* Drops one reference (the last closes and frees the reader). Any thread. */
void seg_close(struct seg_reader *r);
/* Adds a reference (any thread); returns r. */
struct seg_reader *seg_ref(struct seg_reader *r);
/* The segment left the live set (compaction replaced it): blocks read from
 * now on are not inserted into the cache (its entries were erased and no
 * lookup would find new ones). Any thread. */
void seg_retire(struct seg_reader *r);
/* Points the reader at another copy of its dictionary (same id): when the
 * one it was opened with is about to be freed. Owner thread. */
void seg_set_dict(struct seg_reader *r, const struct pdict *d);
/* The last error's message (names file and block), "" if none. */
const char *seg_error(const struct seg_reader *r);
void seg_get_info(const struct seg_reader *r, struct seg_info *out);
const char *seg_path(const struct seg_reader *r);
/* Compressed block bytes this reader has read from the file (cache misses
 * and verification), for I/O pacing and metrics. */
uint64_t seg_bytes_read(const struct seg_reader *r);
int seg_block_meta(const struct seg_reader *r, uint32_t blk,
		   struct seg_block_info *out);

/* Calls cb for every idempotency record; a non-zero return stops and is
 * returned. rec->key points into the decoded section: with a block cache
 * it is valid during the call only (the section may be evicted once this
 * returns: copy the key); a reader without a cache keeps the section, and
 * so the key, until seg_close. The section is decoded on
 * demand (see seg_resident_bytes), so this may read the file and fail
 * (-PARLEY_ECORRUPT / I/O error, message in seg_error). */
int seg_idem_foreach(struct seg_reader *r,
		     int (*cb)(void *arg, const struct seg_idem *rec), void *arg);

/* Bytes the reader holds for its lifetime: parsed index, stream dir,
 * bloom filter, zstd context — O(blocks + streams), not O(entries). The
 * idempotency section (one record per appended batch, so O(entries)) is
 * not resident: it is re-read and decoded when a block with H_PRODREF
 * entries is decoded or seg_idem_foreach runs, and kept only in the block
 * cache (block number SEG_IDEM_BLK, charged at its decoded size, evicted
 * like a block). A reader without a cache keeps it once decoded (counted
 * here): such readers are short-lived (compaction inputs, inspect). */
uint64_t seg_resident_bytes(const struct seg_reader *r);

/* Bloom check only (false positives possible, no false negatives). */
bool seg_may_contain(const struct seg_reader *r, const void *key, size_t klen);
/* 0 and *out, or -PARLEY_ENOTFOUND. No block is read. */
int seg_stream_info(const struct seg_reader *r, const void *key, size_t klen,
		    struct seg_stream_info *out);
/* Streams in key order: i in [0, streams). */
int seg_stream_at(const struct seg_reader *r, uint32_t i, const uint8_t **key,
		  uint8_t *klen, struct seg_stream_info *out);

struct seg_item {
	const uint8_t *key;
	uint8_t klen;
	struct pe_entry e; /* e.payload points into a pinned block */
};

/*
 * Iterates one stream's entries: PE_FORWARD from the first seq >= from,
 * PE_BACKWARD from the last seq <= from (UINT64_MAX = newest). keep_pins:
 * every block visited stays pinned until seg_iter_free (for reads that hand
 * out an array of entries); otherwise only the current block is.
 */
int seg_iter_stream(struct seg_reader *r, const void *key, size_t klen,
		    uint64_t from, enum pe_dir dir, bool keep_pins,
		    struct seg_iter **out);
/* Every entry of the segment in (key, seq) order (compaction, inspect). */
int seg_iter_all(struct seg_reader *r, struct seg_iter **out);
/* 1 and *item, 0 at the end, or a negative error (-PARLEY_ECORRUPT: see
 * seg_error). After an error the iterator stays failed. */
int seg_iter_next(struct seg_iter *it, struct seg_item *item);
void seg_iter_free(struct seg_iter *it);

/*
 * Convenience read: up to `limit` entries of a stream into out[] (payloads
 * zero-copy); *hold keeps their blocks pinned, release it with
 * seg_iter_free once done with the entries. *end is true when the stream
 * has no more entries in this segment in that direction.
 */
int seg_read(struct seg_reader *r, const void *key, size_t klen,
	     uint64_t from, enum pe_dir dir, uint32_t limit,
	     struct pe_entry *out, uint32_t *count, bool *end,
	     struct seg_iter **hold);

struct seg_verify_report {
	uint32_t blocks_ok;
	uint32_t blocks_bad;
	uint64_t entries;
	char first_error[SEG_ERR_LEN];
};
/* Reads every block from the file (bypassing the cache), checks its
 * checksum, decodes it and checks it against the index. 0 when all good,
 * else the first error (message in report and seg_error). */
int seg_verify(struct seg_reader *r, struct seg_verify_report *rep);

/* Deletes a sealed (obsolete) segment file durably. */
int seg_remove(struct pio *io, const char *dir, uint64_t seg_id);

#endif /* PARLEY_ENGINE_SEGMENT_H */
