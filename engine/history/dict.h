/*
 * dict.h — per-partition zstd dictionaries for history segments (private to
 * engine/).
 *
 * Chat messages are short and alike; alone each compresses badly, but a
 * dictionary trained (ZDICT) on a partition's recent payloads gives zstd the
 * shared vocabulary up front. This module trains dictionaries, names them,
 * stores them durably, loads them back, and decides when to retrain.
 *
 * Naming: a dictionary's id is xxh3-64 (seed DICT_ID_SEED) of its bytes,
 * never 0 (0 means "no dictionary" in a segment footer; a hash of 0 is
 * mapped to 1). Segments record the id, so a segment written with an old
 * dictionary stays readable as long as that dictionary's file exists.
 *
 * On disk: <partition dir>/dict-<id:016x>.zd
 *   0 u32 magic "PLDZ" | 4 u32 version (1) | 8 u32 length | 12 u32 reserved
 *  16 u64 id | 24 bytes[length]
 * The id doubles as the checksum: dict_load recomputes it and refuses a file
 * whose bytes do not hash to the id in its name (-PARLEY_ECORRUPT).
 * Storing writes dict-<id>.zd.tmp, fdatasyncs, renames, fsyncs the
 * directory: after dict_store returns 0 the file survives a crash, and a
 * crash before that leaves at most a *.tmp that dict_load never opens (and
 * that the partition's cleanup may unlink).
 *
 * Lifecycle of a partition's dictionary:
 *
 *   NONE ──(flush with >= DICT_MIN_SAMPLES samples)──► TRAINED ──store──► DURABLE
 *    ▲ (too few samples: segments use raw zstd)                 │
 *    │                                       dict_should_retrain()│
 *    │                                                           ▼
 *    └── old dict file deleted once no segment names it ◄── RETIRED (new one
 *                                                              DURABLE)
 *
 * Ownership: struct pdict owns its bytes and its ZSTD_CDict / ZSTD_DDict;
 * it is reference-counted (created with one reference; dict_ref adds one,
 * dict_free drops one and frees at zero): a segment reader holds one on
 * its dictionary, so a reader a history read still uses outlives the
 * partition's retiring of that dictionary. Its content is immutable after
 * creation, so segment writers and readers on any
 * thread may share one (zstd's CDict/DDict are read-only when used).
 * Threads: training and I/O functions are reentrant; they block (training
 * costs tens of ms per MiB of samples), so run them off the shard's event
 * loop (flush/compaction thread).
 */
#ifndef PARLEY_ENGINE_DICT_H
#define PARLEY_ENGINE_DICT_H

#include <stdbool.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"

#define DICT_ID_SEED 0x646963742d696430ull /* "dict-id0" */
#define DICT_DEFAULT_BYTES (100u * 1024)   /* target dictionary size */
#define DICT_MAX_BYTES (1u << 20)          /* refuse larger dictionaries */
/* Training input bound. A partition trains at its first flush, and a
 * fresh node's partitions all reach it together under load: training
 * costs CPU in proportion to this (fastCover at 4 MiB of 1 KiB chat
 * messages ~240 ms per partition, at 1 MiB ~20 ms) while the held-out
 * ratio was the same within 0.003 (bench/RESULTS.md, "Dictionary
 * training"). 1 MiB still allows 8x the DICT_DEFAULT_BYTES dictionary. */
#define DICT_MAX_SAMPLE_BYTES (1u << 20)
#define DICT_MIN_SAMPLES 64u               /* fewer: do not train */
#define DICT_MIN_SAMPLE_BYTES (16u * 1024) /* less: do not train */
#define DICT_SAMPLE_MAX_LEN 4096u          /* longer payloads are truncated */
#define DICT_HDR_LEN 24u
#define DICT_DEFAULT_LEVEL 9               /* zstd level for segment blocks */
/* zstd level of the blocks a memtable flush writes. A flush runs for
 * every byte appended (each SEND writes its message about three times:
 * the conversation entry and two inline inbox pointers), so it is the
 * history tier's hot path; compaction rewrites the blocks it merges at
 * DICT_DEFAULT_LEVEL. Level 3 against 9 on the chat corpus: blocks about
 * 5 % larger (bench/RESULTS.md, parley-history-ratio), several times
 * less CPU per byte. */
#define DICT_FLUSH_LEVEL 3

struct ZSTD_CDict_s;
struct ZSTD_DDict_s;

struct pdict {
	_Atomic uint32_t refs;      /* dict_ref / dict_free */
	uint64_t id;
	uint32_t len;
	uint8_t *bytes;
	int level;                  /* compression level baked into cdict */
	struct ZSTD_CDict_s *cdict;
	struct ZSTD_DDict_s *ddict;
};

struct dict_sample {
	const void *p;
	size_t len;
};

/*
 * Trains a dictionary of at most dict_cap bytes from samples (typically
 * recent payloads, oldest first). Only the most recent samples up to
 * DICT_MAX_SAMPLE_BYTES are used; each is truncated to DICT_SAMPLE_MAX_LEN.
 * level is the one the dictionary is made for (its CDict); the entropy
 * tables stored in it are gathered at min(level, DICT_FLUSH_LEVEL).
 * The dictionary size is also capped at 1/8 of the sample bytes used (a
 * dictionary larger than that overfits and costs more than it saves).
 * Returns 0 and *out, -PARLEY_EAGAIN when there are too few samples
 * (< DICT_MIN_SAMPLES or < DICT_MIN_SAMPLE_BYTES) or ZDICT could not find
 * structure (keep writing raw zstd and try again at a later flush),
 * -PARLEY_EINVAL, -PARLEY_ENOMEM.
 */
int dict_train(const struct dict_sample *samples, size_t n, size_t dict_cap,
	       int level, struct pdict **out);
/* Wraps existing dictionary bytes (copied). */
int dict_from_bytes(const void *p, size_t len, int level, struct pdict **out);
/* Drops one reference; the last frees the dictionary. */
void dict_free(struct pdict *d);
/* Adds a reference (any thread); returns d. */
struct pdict *dict_ref(const struct pdict *d);
uint64_t dict_id_of(const void *p, size_t len);

/* "dict-<id:016x>.zd" into buf; returns buf. */
char *dict_file_name(char *buf, size_t cap, uint64_t id);
int dict_store(struct pio *io, const char *dir, const struct pdict *d);
/* -PARLEY_ENOTFOUND when absent, -PARLEY_ECORRUPT when the file is bad. */
int dict_load(struct pio *io, const char *dir, uint64_t id, int level,
	      struct pdict **out);
int dict_remove(struct pio *io, const char *dir, uint64_t id);

/*
 * Retrain decision (pure). `baseline_ratio` is compressed/raw measured on
 * the flush that trained the current dictionary; `recent_*` sum what the
 * flushes since then produced with it.
 */
struct dict_health {
	bool have_dict;
	double baseline_ratio;     /* compressed / raw when trained */
	uint64_t recent_raw;       /* raw payload bytes written since */
	uint64_t recent_comp;      /* their compressed bytes */
	uint64_t samples_available;/* samples collectable now */
	uint64_t sample_bytes_available;
};
struct dict_retrain_policy {
	double degrade_factor;     /* retrain when recent ratio > baseline * this (e.g. 1.15) */
	uint64_t min_recent_raw;   /* judge only after this many raw bytes (e.g. 8 MiB) */
};
bool dict_should_retrain(const struct dict_health *h,
			 const struct dict_retrain_policy *p);

#endif /* PARLEY_ENGINE_DICT_H */
