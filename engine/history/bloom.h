/*
 * bloom.h — bloom filter over stream keys (private to engine/).
 *
 * Used by history segments (segment.c) to answer "does this segment hold
 * stream K?" without touching the stream directory or any block. False
 * positives are possible (rate set by bits_per_key), false negatives never.
 *
 * Hashing: one xxh3-64 of the key (seed BLOOM_SEED), split into two 32-bit
 * halves h1, h2; probe i sets bit (h1 + i*h2) mod nbits (Kirsch–Mitzenmacher
 * double hashing). k = round(bits_per_key * ln 2), clamped to 1..BLOOM_MAX_K.
 *
 * Serialized form (little-endian), what segment files embed:
 *   u32 nbits | u8 k | u8 version (1) | u16 reserved (0) | bits[ceil(nbits/8)]
 * bloom_decode checks every length and field: untrusted input never reads
 * out of bounds, and a bad header is -PARLEY_ECORRUPT.
 *
 * Ownership: struct bloom owns its bit array (bloom_free releases it).
 * Threads: a filter is not synchronized; after it is built it is read-only
 * and may then be queried from any thread.
 */
#ifndef PARLEY_ENGINE_BLOOM_H
#define PARLEY_ENGINE_BLOOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLOOM_SEED 0x626c6f6f6d6b6579ull /* "bloomkey" */
#define BLOOM_MAX_K 30u
#define BLOOM_MAX_BITS (1u << 31)   /* 256 MiB of bits: far above any segment */
#define BLOOM_HDR_LEN 8u

struct bloom {
	uint32_t nbits; /* >= 64 */
	uint8_t k;
	uint8_t *bits;  /* ceil(nbits / 8) bytes, owned */
};

/* Sizes a filter for `nkeys` keys at `bits_per_key` (1..64). 0 or
 * -PARLEY_EINVAL / -PARLEY_ENOMEM / -PARLEY_ETOOBIG. */
int bloom_init(struct bloom *b, uint64_t nkeys, unsigned bits_per_key);
void bloom_free(struct bloom *b);

/* The hash a key is filed under; callers that keep hashes can add later. */
uint64_t bloom_hash(const void *key, size_t klen);
void bloom_add_hash(struct bloom *b, uint64_t h);
bool bloom_may_contain_hash(const struct bloom *b, uint64_t h);
static inline void bloom_add(struct bloom *b, const void *key, size_t klen)
{
	bloom_add_hash(b, bloom_hash(key, klen));
}
static inline bool bloom_may_contain(const struct bloom *b, const void *key,
				     size_t klen)
{
	return bloom_may_contain_hash(b, bloom_hash(key, klen));
}

size_t bloom_encoded_size(const struct bloom *b);
/* Writes the serialized filter; returns bytes written or -PARLEY_ETOOBIG
 * when cap is too small. */
int64_t bloom_encode(const struct bloom *b, uint8_t *out, size_t cap);
/* Parses (and copies) a serialized filter of exactly `len` bytes. */
int bloom_decode(struct bloom *b, const uint8_t *p, size_t len);

#endif /* PARLEY_ENGINE_BLOOM_H */
