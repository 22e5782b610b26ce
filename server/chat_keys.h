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
 * (chat_keys_free). chat_keys_read reads one of those streams (or any)
 * forward a page at a time. Threads: the caller's (blocking engine calls).
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

/* The next page (up to PE_MAX_READ entries) of stream key from *from on,
 * past a trimmed start (*from moves to the first kept seq): 1 with *es
 * (the caller frees it), *n > 0 and *meta; 0 at the end or on an error
 * (nothing to free). The caller sets *from past the page for the next. */
static inline int chat_keys_read(struct pe_engine *e, const char *key, size_t klen,
				 uint64_t *from, struct pe_entry **es, uint32_t *n,
				 struct pe_read_result *meta)
{
	for (;;) {
		struct pe_read_req q = {.key = key, .klen = klen, .from = *from,
					.dir = PE_FORWARD, .limit = PE_MAX_READ};
		*es = NULL;
		*n = 0;
		int rc = pe_read_sync(e, &q, es, n, meta);
		if (rc == -PARLEY_ETRIMMED && meta->first_seq > *from) {
			*from = meta->first_seq;
			continue;
		}
		if (rc || !*n) {
			free(*es);
			*es = NULL;
			return 0;
		}
		return 1;
	}
}

#endif
