/*
 * bloom.c — bloom filter over stream keys. See bloom.h for the hashing
 * scheme, the serialized layout and ownership. Pure computation, no I/O.
 */
#include "bloom.h"

#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

#define BLOOM_VERSION 1u

int bloom_init(struct bloom *b, uint64_t nkeys, unsigned bits_per_key)
{
	memset(b, 0, sizeof *b);
	if (bits_per_key < 1 || bits_per_key > 64)
		return -PARLEY_EINVAL;
	uint64_t nbits = nkeys * bits_per_key;
	if (nbits < 64)
		nbits = 64; /* tiny filters still get a useful false-positive rate */
	if (nbits > BLOOM_MAX_BITS)
		return -PARLEY_ETOOBIG;
	/* k = bits_per_key * ln2, rounded */
	unsigned k = (unsigned)(bits_per_key * 69 + 50) / 100;
	if (k < 1)
		k = 1;
	if (k > BLOOM_MAX_K)
		k = BLOOM_MAX_K;
	b->bits = calloc((size_t)((nbits + 7) / 8), 1);
	if (!b->bits)
		return -PARLEY_ENOMEM;
	b->nbits = (uint32_t)nbits;
	b->k = (uint8_t)k;
	return 0;
}

void bloom_free(struct bloom *b)
{
	free(b->bits);
	memset(b, 0, sizeof *b);
}

uint64_t bloom_hash(const void *key, size_t klen)
{
	return parley_xxh3(key, klen, BLOOM_SEED);
}

void bloom_add_hash(struct bloom *b, uint64_t h)
{
	PARLEY_ASSERT(b->bits && b->nbits > 0);
	uint32_t h1 = (uint32_t)h, h2 = (uint32_t)(h >> 32) | 1u;
	for (unsigned i = 0; i < b->k; i++) {
		uint32_t bit = (uint32_t)(((uint64_t)h1 + (uint64_t)i * h2) %
					  b->nbits);
		b->bits[bit >> 3] |= (uint8_t)(1u << (bit & 7));
	}
}

bool bloom_may_contain_hash(const struct bloom *b, uint64_t h)
{
	if (!b->bits || b->nbits == 0)
		return true; /* no filter: cannot rule anything out */
	uint32_t h1 = (uint32_t)h, h2 = (uint32_t)(h >> 32) | 1u;
	for (unsigned i = 0; i < b->k; i++) {
		uint32_t bit = (uint32_t)(((uint64_t)h1 + (uint64_t)i * h2) %
					  b->nbits);
		if (!(b->bits[bit >> 3] & (1u << (bit & 7))))
			return false;
	}
	return true;
}

size_t bloom_encoded_size(const struct bloom *b)
{
	return BLOOM_HDR_LEN + ((size_t)b->nbits + 7) / 8;
}

int64_t bloom_encode(const struct bloom *b, uint8_t *out, size_t cap)
{
	size_t n = bloom_encoded_size(b);
	if (cap < n)
		return -PARLEY_ETOOBIG;
	le_put32(out, b->nbits);
	out[4] = b->k;
	out[5] = BLOOM_VERSION;
	le_put16(out + 6, 0);
	memcpy(out + BLOOM_HDR_LEN, b->bits, n - BLOOM_HDR_LEN);
	return (int64_t)n;
}

int bloom_decode(struct bloom *b, const uint8_t *p, size_t len)
{
	memset(b, 0, sizeof *b);
	struct le_reader r;
	le_reader_init(&r, p, len);
	uint32_t nbits = le_read32(&r);
	uint8_t k = le_read8(&r);
	uint8_t ver = le_read8(&r);
	uint16_t rsv = le_read16(&r);
	if (!r.ok)
		return -PARLEY_ECORRUPT;
	if (ver != BLOOM_VERSION)
		return -PARLEY_EVERSION;
	if (rsv != 0 || k < 1 || k > BLOOM_MAX_K || nbits < 64 ||
	    nbits > BLOOM_MAX_BITS)
		return -PARLEY_ECORRUPT;
	size_t nbytes = ((size_t)nbits + 7) / 8;
	if (len - r.off != nbytes)
		return -PARLEY_ECORRUPT;
	b->bits = malloc(nbytes);
	if (!b->bits)
		return -PARLEY_ENOMEM;
	memcpy(b->bits, p + r.off, nbytes);
	b->nbits = nbits;
	b->k = k;
	return 0;
}
