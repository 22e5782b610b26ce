/*
 * chat_list.c — the chat service's conversation list (CONV_LIST): read
 * l/<user> (one entry per conversation), then each conversation's newest
 * message (c/<conv>) for its last seq and time, then build the reply with
 * chat_list_build (pure: most recent first).
 *
 * Ownership: the list context is malloc'd by chat_conv_list and freed by
 * list_finish, which runs exactly once (after the last per-conversation
 * read, or at the first failure before any was issued).
 * Threads: chat_conv_list from any thread but an engine callback's; the
 * reads complete on engine shard threads (several at once: `pending` and
 * `err` are atomic, each read writes only its own slot of `ents`).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

static int list_cmp(const void *a, const void *b)
{
	const struct chat_list_ent *x = a, *y = b;
	if (x->last_ts != y->last_ts)
		return x->last_ts > y->last_ts ? -1 : 1;
	if (x->clen != y->clen)
		return x->clen < y->clen ? -1 : 1;
	return memcmp(x->conv, y->conv, x->clen);
}

void chat_list_build(struct chat_list_ent *ents, uint32_t n, uint16_t limit,
		     const char *user, size_t ulen, struct parley_msg *m)
{
	qsort(ents, n, sizeof *ents, list_cmp);
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_CONV_LIST_OK;
	struct parley_conv_list_ok *lo = &m->conv_list_ok;
	if (limit > PARLEY_PROTO_MAX_LIST)
		limit = PARLEY_PROTO_MAX_LIST;
	for (uint32_t i = 0; i < n && lo->count < limit; i++) {
		struct chat_list_ent *le = &ents[i];
		struct chat_member mm[2];
		if (chat_conv_members(le->conv, le->clen, mm) != 2)
			continue;
		struct chat_member *peer =
			mm[0].len == ulen && !memcmp(mm[0].p, user, ulen) ? &mm[1]
									 : &mm[0];
		struct parley_conv_entry *ce = &lo->entries[lo->count++];
		ce->conv = (struct parley_str){le->conv, le->clen};
		ce->kind = PARLEY_CONV_DIRECT;
		ce->last_seq = le->last_seq;
		ce->last_ts_ms = le->last_ts;
		ce->member_count = 2;
		ce->peer = (struct parley_str){peer->p, (uint16_t)peer->len};
	}
}

struct list_ctx {
	struct pe_engine *e;
	chat_list_cb cb;
	void *arg;
	uint16_t limit;
	uint16_t ulen;
	char user[121];
	atomic_int pending;
	_Atomic int err;
	uint32_t n;
	struct chat_list_ent *ents;
};

struct list_item_arg {
	struct list_ctx *x;
	uint32_t i;
};

static void list_finish(struct list_ctx *x)
{
	int err = atomic_load(&x->err);
	struct parley_msg *m = NULL;
	if (!err) {
		m = malloc(sizeof *m); /* ~16 KiB: not on an engine stack */
		if (m)
			chat_list_build(x->ents, x->n, x->limit, x->user, x->ulen, m);
		else
			err = -PARLEY_ENOMEM;
	}
	x->cb(x->arg, err, err ? NULL : m);
	free(m);
	free(x->ents);
	free(x);
}

static void list_meta_cb(void *arg, const struct pe_read_result *r)
{
	struct list_item_arg *a = arg;
	struct list_ctx *x = a->x;
	if (r->err)
		atomic_store(&x->err, r->err);
	else if (r->count) {
		x->ents[a->i].last_seq = r->entries[0].seq;
		x->ents[a->i].last_ts = r->entries[0].ts_ms;
	}
	free(a);
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		list_finish(x);
}

static void list_read_cb(void *arg, const struct pe_read_result *r)
{
	struct list_ctx *x = arg;
	if (r->err) {
		atomic_store(&x->err, r->err);
		list_finish(x);
		return;
	}
	x->ents = calloc(r->count ? r->count : 1, sizeof *x->ents);
	if (!x->ents) {
		atomic_store(&x->err, -PARLEY_ENOMEM);
		list_finish(x);
		return;
	}
	for (uint32_t i = 0; i < r->count; i++) {
		const char *conv;
		uint16_t clen;
		if (chat_list_decode(r->entries[i].payload, r->entries[i].len,
				     &conv, &clen) || clen == 0 || clen > 250)
			continue;
		bool dup = false;
		for (uint32_t j = 0; j < x->n && !dup; j++)
			dup = x->ents[j].clen == clen &&
			      !memcmp(x->ents[j].conv, conv, clen);
		if (dup)
			continue;
		x->ents[x->n].clen = clen;
		memcpy(x->ents[x->n].conv, conv, clen);
		x->n++;
	}
	if (x->n == 0) {
		list_finish(x);
		return;
	}
	atomic_store(&x->pending, (int)x->n + 1);
	for (uint32_t i = 0; i < x->n; i++) {
		char key[CHAT_KEY_CAP];
		int kl = chat_key_conv(key, x->ents[i].conv, x->ents[i].clen);
		struct list_item_arg *a = malloc(sizeof *a);
		if (!a) { /* request-scoped: the reply becomes ERROR NOMEM */
			atomic_store(&x->err, -PARLEY_ENOMEM);
			if (atomic_fetch_sub(&x->pending, 1) == 1)
				list_finish(x);
			continue;
		}
		a->x = x;
		a->i = i;
		struct pe_read_req q = {.key = key, .klen = (size_t)kl,
					.from = UINT64_MAX, .dir = PE_BACKWARD,
					.limit = 1};
		int rc = kl < 0 ? -PARLEY_EINVAL : pe_read(x->e, &q, list_meta_cb, a);
		if (rc) {
			struct pe_read_result er = {.err = rc};
			list_meta_cb(a, &er);
		}
	}
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		list_finish(x);
}

int chat_conv_list(struct chat *c, const char *user, size_t ulen,
		   uint16_t limit, chat_list_cb cb, void *arg)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_list(key, user, ulen);
	if (kl < 0)
		return kl;
	struct list_ctx *x = calloc(1, sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	x->e = chat_engine(c);
	x->cb = cb;
	x->arg = arg;
	x->limit = limit;
	x->ulen = (uint16_t)ulen;
	memcpy(x->user, user, ulen);
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = PE_MAX_READ};
	int rc = pe_read(x->e, &q, list_read_cb, x);
	if (rc) {
		free(x);
		return rc;
	}
	return 0;
}
