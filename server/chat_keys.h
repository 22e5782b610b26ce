/*
 * chat_keys.h — the stream keys of one kind, listed over every partition
 * of the chat's engine: the start of each load that rebuilds in-memory
 * state from the streams at start-up (chat_retention.c: the settings in
 * t/<conv>; chat_edit.c: the deletes in the edit indexes e/<conv>).
 *
 * Keys are copied NUL-terminated into an array of CHAT_KEY_CAP-byte
 * slots that doubles as it fills (first 64). A key list that cannot grow
 * stops that partition's listing: the load then works on what it got.
 * Ownership: the caller's struct chat_keys owns the array
 * (chat_keys_free). Threads: the caller's (blocking engine calls).
 */
#ifndef PARLEY_CHAT_KEYS_H
#define PARLEY_CHAT_KEYS_H

#include <stdlib.h>
#include <string.h>

#include "chat.h"

struct chat_keys {
	char (*keys)[CHAT_KEY_CAP];
	size_t n, cap;
	const char *prefix; /* two bytes, e.g. "t/" */
};

static int chat_keys_cb(void *arg, const void *key, size_t klen,
			const struct pe_meta *m)
{
	struct chat_keys *l = arg;
	(void)m;
	if (klen < 3 || memcmp(key, l->prefix, 2) || klen >= CHAT_KEY_CAP)
		return 0;
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 64;
		char (*k)[CHAT_KEY_CAP] = realloc(l->keys, nc * sizeof *k);
		if (!k)
			return 1;
		l->keys = k;
		l->cap = nc;
	}
	memcpy(l->keys[l->n], key, klen);
	l->keys[l->n][klen] = 0;
	l->n++;
	return 0;
}

/* Every key of e that starts with `prefix` (two bytes) and has more after
 * it, into a fresh *l. */
static inline void chat_keys_list(struct chat_keys *l, struct pe_engine *e,
				  const char *prefix)
{
	*l = (struct chat_keys){.prefix = prefix};
	for (uint32_t p = 0; p < pe_partition_count(e); p++)
		pe_list_streams(e, p, chat_keys_cb, l);
}

static inline void chat_keys_free(struct chat_keys *l)
{
	free(l->keys);
	*l = (struct chat_keys){.prefix = l->prefix};
}

#endif
