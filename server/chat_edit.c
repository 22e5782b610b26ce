/*
 * chat_edit.c — the chat service's edits and deletes-for-everyone: their
 * records, EDIT / DELETE requests, the edit index e/<conv>, and the fold
 * that gives HISTORY pages each message's current state. The streams and
 * rules are described in chat.h ("edits and deletes").
 *
 * Request pipeline (each step is the previous one's engine callback):
 *
 *   chat_edit ─► read c/<conv> at ref_seq ─► checks (message, sender,
 *   window) ─► read e/<conv> backwards (deleted? a retry?) ─► EDIT/DELETE
 *   entry appended to c/<conv> (chat_conv_append: idempotent, fanned out
 *   like a message) ─► durable ─► index entry appended to e/<conv>
 *   (idempotent on the entry's seq) ─► durable ─► cb (the ack)
 *
 * Durable before ack: cb reports success only from the index append's
 * callback, which the engine runs after that append is durable, and the
 * index append is issued only from the c/ append's durable callback.
 * A crash between the two appends leaves an EDIT the index does not know:
 * its EVENT was (or will be) delivered, a HISTORY page does not show it
 * until the client retries (its retry re-appends the index entry: the
 * c/ append is a duplicate, the index append is idempotent on its seq).
 *
 * Ownership: each request / fold context is malloc'd here and freed by
 * the callback that finishes it. Threads: chat_edit / chat_edit_fold from
 * any thread but an engine callback's (they only enqueue); every callback
 * runs on an engine shard thread.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "chat_hset.h"
#include "chat_keys.h"
#include "route.h"

/* ---- keys, records, producers ------------------------------------------------------ */

int chat_key_edits(char *out, const char *conv, size_t len)
{
	if (len < 1 || len > 250)
		return -PARLEY_EINVAL;
	memcpy(out, "e/", 2);
	memcpy(out + 2, conv, len);
	out[2 + len] = '\0';
	return (int)(2 + len);
}

/* u8 version 'E' | u16 kind | u16 sender_len | sender | id16 |
 * u64 ref_seq | u16 content_type | u32 body_len | body */
int chat_edit_rec_encode(uint8_t *buf, size_t cap, const struct chat_edit_rec *m)
{
	size_t n = 1 + 2 + 2 + m->sender_len + 16 + 8 + 2 + 4 + (size_t)m->body_len;
	if (!buf)
		return (int)n;
	if (cap < n)
		return -PARLEY_ETOOBIG;
	struct le_writer w;
	le_writer_init(&w, buf, cap);
	le_write8(&w, CHAT_EDIT_REC_VERSION);
	le_write16(&w, m->kind);
	le_write16(&w, m->sender_len);
	le_write_bytes(&w, m->sender, m->sender_len);
	le_write_bytes(&w, m->client_msg_id, 16);
	le_write64(&w, m->ref_seq);
	le_write16(&w, m->content_type);
	le_write32(&w, m->body_len);
	le_write_bytes(&w, m->body, m->body_len);
	PARLEY_ASSERT(w.ok && w.off == n);
	return (int)n;
}

int chat_edit_rec_decode(const uint8_t *p, size_t len, struct chat_edit_rec *out)
{
	struct le_reader r;
	le_reader_init(&r, p, len);
	if (le_read8(&r) != CHAT_EDIT_REC_VERSION)
		return -PARLEY_ECORRUPT;
	out->kind = le_read16(&r);
	out->sender_len = le_read16(&r);
	out->sender = (const char *)le_read_bytes(&r, out->sender_len);
	const uint8_t *id = le_read_bytes(&r, 16);
	if (id)
		memcpy(out->client_msg_id, id, 16);
	out->ref_seq = le_read64(&r);
	out->content_type = le_read16(&r);
	out->body_len = le_read32(&r);
	out->body = le_read_bytes(&r, out->body_len);
	if (!r.ok || (out->kind != PARLEY_EV_EDIT && out->kind != PARLEY_EV_DELETE))
		return -PARLEY_ECORRUPT;
	return 0;
}

static void producer_of(uint8_t out[16], const uint8_t *in, size_t len)
{
	le_put64(out, parley_xxh3(in, len, 0x6564697473000001ull));
	le_put64(out + 8, parley_xxh3(in, len, 0x6564697473000002ull));
}

void chat_producer_edit(uint8_t out[16], const char *sender, size_t slen,
			const uint8_t client_msg_id[16])
{
	uint8_t in[2 + 2 + 255 + 16];
	PARLEY_ASSERT(slen <= 255);
	in[0] = 'E';
	in[1] = 'C';
	le_put16(in + 2, (uint16_t)slen);
	memcpy(in + 4, sender, slen);
	memcpy(in + 4 + slen, client_msg_id, 16);
	producer_of(out, in, 4 + slen + 16);
}

void chat_producer_edit_index(uint8_t out[16], const char *conv, size_t len,
			      uint64_t seq)
{
	uint8_t in[2 + 2 + 255 + 8];
	PARLEY_ASSERT(len <= 255);
	in[0] = 'E';
	in[1] = 'I';
	le_put16(in + 2, (uint16_t)len);
	memcpy(in + 4, conv, len);
	le_put64(in + 4 + len, seq);
	producer_of(out, in, 4 + len + 8);
}

/* An index entry: u64 seq of the c/ entry | the record. */
static int index_decode(const struct pe_entry *e, uint64_t *seq,
			struct chat_edit_rec *rec)
{
	if (e->type != CHAT_ENT_EDIT || e->len < 8)
		return -PARLEY_ECORRUPT;
	*seq = le_get64(e->payload);
	return chat_edit_rec_decode(e->payload + 8, e->len - 8, rec);
}

int chat_edit_event(const struct pe_entry *e, struct parley_msg *m)
{
	struct chat_edit_rec rec;
	if (e->type != CHAT_ENT_EDIT || chat_edit_rec_decode(e->payload, e->len, &rec))
		return -PARLEY_ECORRUPT;
	m->type = PARLEY_T_EVENT;
	m->event.kind = rec.kind;
	m->event.conv_seq = e->seq;
	m->event.sender = (struct parley_str){rec.sender, rec.sender_len};
	memcpy(m->event.client_msg_id, rec.client_msg_id, 16);
	m->event.server_ts_ms = e->ts_ms;
	m->event.content_type = rec.content_type;
	m->event.body = (struct parley_bytes){rec.body, rec.body_len};
	m->event.ref_seq = rec.ref_seq;
	m->event.flags = rec.kind == PARLEY_EV_EDIT ? PARLEY_MSGF_EDITED
						    : PARLEY_MSGF_DELETED;
	return 0;
}

/* ---- EDIT / DELETE --------------------------------------------------------------------- */

#define EDIT_SCAN_BATCH 1000u

struct edit_ctx {
	struct chat *c;
	chat_edit_cb cb;
	void *arg;
	uint16_t kind;
	uint64_t ref_seq;
	uint64_t window_ms;
	uint64_t msg_ts;        /* the message's timestamp */
	uint32_t scanned;       /* index entries read */
	bool deleted, retry, late;
	uint8_t cmid[16];
	struct chat_edit_result res;
	uint8_t *rec;           /* the encoded record */
	uint32_t rec_len;
	uint8_t *idx;           /* u64 seq | rec, for e/<conv> */
	uint16_t ulen, clen;
	char user[PARLEY_PROTO_MAX_USER_ID];
	char conv[PARLEY_PROTO_MAX_CONV_ID];
};

static void edit_finish(struct edit_ctx *x, int err)
{
	x->res.err = err;
	if (err) {
		x->res.seq = x->res.ts_ms = 0;
		x->res.duplicate = false;
	}
	x->cb(x->arg, &x->res);
	free(x->rec);
	free(x->idx);
	free(x);
}

static void index_cb(void *arg, const struct pe_append_result *r)
{
	struct edit_ctx *x = arg;
	if (!r->err && x->kind == PARLEY_EV_DELETE)
		chat_scrub_add(chat_scrub_of(x->c), x->conv, x->clen, x->ref_seq);
	if (r->err)
		PLOG_W("chat", "edit index append failed", "conv=%.*s seq=%" PRIu64
		       " err=%s", (int)x->clen, x->conv, x->res.seq,
		       parley_errname(r->err));
	edit_finish(x, r->err);
}

/* The c/ entry is durable (or failed): index it, then ack. */
static void entry_cb(void *arg, const struct chat_send_result *r)
{
	struct edit_ctx *x = arg;
	if (r->err) {
		edit_finish(x, r->err);
		return;
	}
	x->res.seq = r->seq;
	x->res.ts_ms = r->ts_ms;
	x->res.duplicate = r->duplicate;
	char key[CHAT_KEY_CAP];
	int kl = chat_key_edits(key, x->conv, x->clen);
	x->idx = malloc(8 + (size_t)x->rec_len);
	if (kl < 0 || !x->idx) {
		edit_finish(x, kl < 0 ? kl : -PARLEY_ENOMEM);
		return;
	}
	le_put64(x->idx, r->seq);
	memcpy(x->idx + 8, x->rec, x->rec_len);
	struct pe_input in = {.type = CHAT_ENT_EDIT, .len = 8 + x->rec_len,
			      .payload = x->idx};
	struct pe_append_req q = {.key = key, .klen = (size_t)kl,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	chat_producer_edit_index(q.producer, x->conv, x->clen, r->seq);
	int rc = chat_append(x->c, &q, index_cb, x); /* e/: routed */
	if (rc)
		edit_finish(x, rc);
}

static void edit_store(struct edit_ctx *x)
{
	if (!x->retry && x->late) {
		edit_finish(x, -PARLEY_EEXPIRED);
		return;
	}
	if (!x->retry && x->deleted) {
		edit_finish(x, -PARLEY_EDELETED);
		return;
	}
	uint8_t producer[16];
	chat_producer_edit(producer, x->user, x->ulen, x->cmid);
	int rc = chat_conv_append(x->c, x->conv, x->clen, CHAT_ENT_EDIT, x->rec,
				  x->rec_len, producer, entry_cb, x);
	if (rc)
		edit_finish(x, rc);
}

static int scan_issue(struct edit_ctx *x, uint64_t from);

/* One batch of the edit index e/<conv>, newest first from `from`. */
static int index_read(struct chat *c, const char *conv, size_t clen,
		      uint64_t from, pe_read_cb cb, void *arg)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_edits(key, conv, clen);
	if (kl < 0)
		return kl;
	struct pe_read_req q = {.key = key, .klen = (size_t)kl, .from = from,
				.dir = PE_BACKWARD, .limit = EDIT_SCAN_BATCH};
	return pe_read(chat_engine(c), &q, cb, arg);
}

/* Whether a backward index scan goes on past batch r: more entries, the
 * oldest seen (oldest_ts, oldest_seq) not yet older than min_ts (an edit
 * is always newer than its message), and the scan bound not reached. */
static bool index_more(const struct pe_read_result *r, uint64_t oldest_ts,
		       uint64_t min_ts, uint64_t oldest_seq, uint32_t scanned)
{
	return !r->err && !r->end && r->count && oldest_ts >= min_ts &&
	       oldest_seq > 1 && scanned < CHAT_EDIT_SCAN_MAX;
}

/* Index entries, newest first: is ref_seq deleted? is this a retry? */
static void scan_cb(void *arg, const struct pe_read_result *r)
{
	struct edit_ctx *x = arg;
	if (r->err && r->err != -PARLEY_ETRIMMED) {
		edit_finish(x, r->err);
		return;
	}
	uint64_t oldest_ts = UINT64_MAX, oldest_seq = 0;
	for (uint32_t i = 0; i < r->count; i++) {
		const struct pe_entry *e = &r->entries[i];
		uint64_t seq;
		struct chat_edit_rec rec;
		oldest_ts = e->ts_ms;
		oldest_seq = e->seq;
		if (index_decode(e, &seq, &rec))
			continue;
		if (rec.sender_len == x->ulen &&
		    !memcmp(rec.sender, x->user, x->ulen) &&
		    !memcmp(rec.client_msg_id, x->cmid, 16))
			x->retry = true;
		if (rec.ref_seq == x->ref_seq && rec.kind == PARLEY_EV_DELETE)
			x->deleted = true;
	}
	x->scanned += r->count;
	if (index_more(r, oldest_ts, x->msg_ts, oldest_seq, x->scanned)) {
		int rc = scan_issue(x, oldest_seq - 1);
		if (rc)
			edit_finish(x, rc);
		return;
	}
	edit_store(x);
}

static int scan_issue(struct edit_ctx *x, uint64_t from)
{
	return index_read(x->c, x->conv, x->clen, from, scan_cb, x);
}

/* The referenced entry of c/<conv>. */
static void target_cb(void *arg, const struct pe_read_result *r)
{
	struct edit_ctx *x = arg;
	if (r->err) {
		edit_finish(x, r->err == -PARLEY_ETRIMMED ? -PARLEY_ENOTFOUND : r->err);
		return;
	}
	if (r->count == 0 || r->entries[0].seq != x->ref_seq) {
		edit_finish(x, -PARLEY_ENOTFOUND);
		return;
	}
	const struct pe_entry *e = &r->entries[0];
	struct chat_msg m;
	if (e->type != CHAT_ENT_MSG || chat_msg_decode(e->payload, e->len, &m)) {
		edit_finish(x, -PARLEY_EINVAL); /* not a message */
		return;
	}
	/* Only the sender; in a group, admins and the owner may also delete
	 * (not edit) others' messages. */
	bool admin_delete = x->kind == PARLEY_EV_DELETE &&
			    chat_member_role(x->c, x->conv, x->clen, x->user,
					     x->ulen) >= CHAT_ROLE_ADMIN;
	if ((m.sender_len != x->ulen || memcmp(m.sender, x->user, x->ulen)) &&
	    !admin_delete) {
		edit_finish(x, -PARLEY_EPERM);
		return;
	}
	x->msg_ts = e->ts_ms;
	uint64_t now = chat_now_ms(x->c);
	/* past the window: refused in edit_store unless the scan finds
	 * this very request stored (a retry is acknowledged even when late) */
	x->late = x->window_ms && now > e->ts_ms && now - e->ts_ms > x->window_ms;
	x->scanned = 0;
	int rc = scan_issue(x, UINT64_MAX);
	if (rc)
		edit_finish(x, rc);
}

int chat_edit(struct chat *c, const struct chat_edit_req *q, chat_edit_cb cb,
	      void *arg)
{
	if (q->kind != PARLEY_EV_EDIT && q->kind != PARLEY_EV_DELETE)
		return -PARLEY_EINVAL;
	int rc = chat_conv_access(c, q->conv, q->conv_len, q->user, q->user_len);
	if (rc)
		return rc;
	if (q->ref_seq == 0)
		return -PARLEY_ENOTFOUND;
	if (q->conv_len > PARLEY_PROTO_MAX_CONV_ID ||
	    q->user_len > PARLEY_PROTO_MAX_USER_ID)
		return -PARLEY_EINVAL;
	struct chat_edit_rec rec = {.kind = q->kind, .sender = q->user,
				    .sender_len = q->user_len,
				    .ref_seq = q->ref_seq,
				    .content_type = q->content_type};
	if (q->kind == PARLEY_EV_EDIT) {
		rec.body = q->body;
		rec.body_len = q->body_len;
	}
	memcpy(rec.client_msg_id, q->client_msg_id, 16);
	int n = chat_edit_rec_encode(NULL, 0, &rec);
	if (n < 0 || (uint32_t)n + 8 > PE_MAX_PAYLOAD)
		return -PARLEY_ETOOBIG;
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, q->conv, q->conv_len);
	if (kl < 0)
		return -PARLEY_ENOTFOUND;
	struct edit_ctx *x = calloc(1, sizeof *x);
	uint8_t *b = malloc((size_t)n);
	if (!x || !b) {
		free(x);
		free(b);
		return -PARLEY_ENOMEM;
	}
	chat_edit_rec_encode(b, (size_t)n, &rec);
	x->c = c;
	x->cb = cb;
	x->arg = arg;
	x->kind = q->kind;
	x->ref_seq = q->ref_seq;
	x->window_ms = q->window_ms;
	memcpy(x->cmid, q->client_msg_id, 16);
	x->rec = b;
	x->rec_len = (uint32_t)n;
	x->ulen = q->user_len;
	memcpy(x->user, q->user, q->user_len);
	x->clen = q->conv_len;
	memcpy(x->conv, q->conv, q->conv_len);
	/* the target message: refused at once, naming the partition, on a
	 * node without a replica of it (route_read), not read from an old
	 * copy */
	struct pe_read_req rq = {.key = key, .klen = (size_t)kl,
				 .from = q->ref_seq, .dir = PE_FORWARD,
				 .limit = 1};
	rc = route_read(chat_engine(c), &rq, target_cb, x);
	if (rc) {
		free(b);
		free(x);
	}
	return rc;
}

/* ---- HISTORY: the current state of a page ----------------------------------------------- */

struct fold_ctx {
	struct chat *c;
	chat_edit_fold_cb cb;
	void *arg;
	struct pe_read_result page;   /* entries point into ents / the blob */
	struct pe_entry *ents;
	struct chat_edit_state *st;
	uint8_t **bodies;             /* [count] copies of the applied edits' bodies */
	uint64_t min_seq, max_seq, min_ts;
	uint32_t scanned;
	uint16_t clen;
	char conv[PARLEY_PROTO_MAX_CONV_ID];
	uint8_t blob[];               /* the page's payloads */
};

static void fold_free(struct fold_ctx *x)
{
	for (uint32_t i = 0; i < x->page.count; i++)
		free(x->bodies[i]);
	free(x->bodies);
	free(x->st);
	free(x->ents);
	free(x);
}

static void fold_finish(struct fold_ctx *x, int err)
{
	x->cb(x->arg, err, err ? NULL : &x->page, err ? NULL : x->st);
	fold_free(x);
}

/* page index of the entry with seq s (the page is newest first) */
static int fold_find(const struct fold_ctx *x, uint64_t s)
{
	if (s < x->min_seq || s > x->max_seq)
		return -1;
	uint32_t lo = 0, hi = x->page.count;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		uint64_t v = x->ents[mid].seq;
		if (v == s)
			return (int)mid;
		if (v > s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int fold_issue(struct fold_ctx *x, uint64_t from);

static void fold_cb(void *arg, const struct pe_read_result *r)
{
	struct fold_ctx *x = arg;
	if (r->err && r->err != -PARLEY_ETRIMMED) {
		fold_finish(x, r->err);
		return;
	}
	uint64_t oldest_ts = UINT64_MAX, oldest_seq = 0;
	for (uint32_t i = 0; i < r->count; i++) {
		const struct pe_entry *e = &r->entries[i];
		oldest_ts = e->ts_ms;
		oldest_seq = e->seq;
		uint64_t seq;
		struct chat_edit_rec rec;
		if (index_decode(e, &seq, &rec))
			continue;
		int k = fold_find(x, rec.ref_seq);
		if (k < 0 || x->ents[k].type != CHAT_ENT_MSG)
			continue;
		struct chat_edit_state *s = &x->st[k];
		if (s->flags & PARLEY_MSGF_DELETED)
			continue; /* a delete is final */
		if (rec.kind == PARLEY_EV_DELETE) {
			free(x->bodies[k]);
			x->bodies[k] = NULL;
			*s = (struct chat_edit_state){.flags = PARLEY_MSGF_DELETED,
						      .content_type = 0,
						      .edit_seq = seq};
			continue;
		}
		if (s->edit_seq >= seq)
			continue; /* a later edit was seen (newest first) */
		uint8_t *b = malloc(rec.body_len ? rec.body_len : 1);
		if (!b) {
			fold_finish(x, -PARLEY_ENOMEM);
			return;
		}
		memcpy(b, rec.body, rec.body_len);
		free(x->bodies[k]);
		x->bodies[k] = b;
		*s = (struct chat_edit_state){.flags = PARLEY_MSGF_EDITED,
					      .content_type = rec.content_type,
					      .body = b,
					      .body_len = rec.body_len,
					      .edit_seq = seq};
	}
	x->scanned += r->count;
	if (index_more(r, oldest_ts, x->min_ts, oldest_seq, x->scanned)) {
		int rc = fold_issue(x, oldest_seq - 1);
		if (rc)
			fold_finish(x, rc);
		return;
	}
	if (x->scanned >= CHAT_EDIT_SCAN_MAX)
		PLOG_W("chat", "edit index scan stopped at its bound",
		       "conv=%.*s scanned=%u", (int)x->clen, x->conv,
		       x->scanned);
	/* deleted messages show no body */
	for (uint32_t i = 0; i < x->page.count; i++)
		if (x->st[i].flags & PARLEY_MSGF_DELETED) {
			x->st[i].body = NULL;
			x->st[i].body_len = 0;
		}
	fold_finish(x, 0);
}

static int fold_issue(struct fold_ctx *x, uint64_t from)
{
	return index_read(x->c, x->conv, x->clen, from, fold_cb, x);
}

int chat_edit_fold(struct chat *c, const char *conv, size_t clen,
		   const struct pe_read_result *page, chat_edit_fold_cb cb,
		   void *arg)
{
	if (clen > PARLEY_PROTO_MAX_CONV_ID)
		return -PARLEY_EINVAL;
	size_t bytes = 0;
	for (uint32_t i = 0; i < page->count; i++)
		bytes += page->entries[i].len;
	struct fold_ctx *x = calloc(1, sizeof *x + bytes);
	if (!x)
		return -PARLEY_ENOMEM;
	uint32_t n = page->count;
	x->ents = calloc(n ? n : 1, sizeof *x->ents);
	x->st = calloc(n ? n : 1, sizeof *x->st);
	x->bodies = calloc(n ? n : 1, sizeof *x->bodies);
	if (!x->ents || !x->st || !x->bodies) {
		free(x->ents);
		free(x->st);
		free(x->bodies);
		free(x);
		return -PARLEY_ENOMEM;
	}
	x->c = c;
	x->cb = cb;
	x->arg = arg;
	x->clen = (uint16_t)clen;
	memcpy(x->conv, conv, clen);
	x->page = *page;
	x->page.entries = x->ents;
	x->min_seq = UINT64_MAX;
	x->min_ts = UINT64_MAX;
	bool any_msg = false;
	size_t off = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct pe_entry *e = &page->entries[i];
		x->ents[i] = *e;
		if (e->len)
			memcpy(x->blob + off, e->payload, e->len);
		x->ents[i].payload = x->blob + off;
		off += e->len;
		/* a backward read: newest first, seqs strictly descending */
		PARLEY_ASSERT(i == 0 || e->seq < page->entries[i - 1].seq);
		if (e->seq < x->min_seq)
			x->min_seq = e->seq;
		if (e->seq > x->max_seq)
			x->max_seq = e->seq;
		if (e->type == CHAT_ENT_MSG) {
			any_msg = true;
			if (e->ts_ms < x->min_ts)
				x->min_ts = e->ts_ms;
		}
	}
	if (!any_msg) { /* nothing to fold: answer now */
		fold_finish(x, 0);
		return 0;
	}
	int rc = fold_issue(x, UINT64_MAX);
	if (rc)
		fold_free(x);
	return rc;
}

/* ---- retention defaults --------------------------------------------------------------------- */

size_t chat_retention_rules(uint64_t max_age_ms, uint64_t max_count,
			    struct pe_retention_rule *out)
{
	size_t n = 0;
	PARLEY_ASSERT(chat_nretention + 3 <= CHAT_RETENTION_RULES_MAX);
	for (size_t i = 0; i < chat_nretention; i++)
		out[n++] = chat_retention[i];
	if (max_age_ms || max_count)
		out[n++] = (struct pe_retention_rule){.prefix = "c/", .plen = 2,
						      .max_age_ms = max_age_ms,
						      .max_count = max_count};
	if (max_age_ms) {
		out[n++] = (struct pe_retention_rule){.prefix = "e/", .plen = 2,
						      .max_age_ms = max_age_ms};
		out[n++] = (struct pe_retention_rule){.prefix = "u/", .plen = 2,
						      .max_age_ms = max_age_ms};
	}
	return n;
}

/* ---- removing deleted messages' content from disk (compaction filter) ---------------------- */

/*
 * The set of deleted messages, (H(conv), seq) pairs, filled by each
 * DELETE once durable and at start from the edit indexes (chat_scrub_load),
 * read by the engine's compaction threads through chat_scrub_filter: a
 * compaction that keeps an entry of a deleted message rewrites its
 * payload without the content:
 *   c/<conv> message            -> the same record with an empty body
 *   c/<conv> EDIT of it         -> the same record with an empty body
 *   e/<conv> index of that EDIT -> likewise
 *   u/<user> inline pointer     -> a plain (version 1) pointer: no copy
 * Open addressing under one mutex; at most CHAT_SCRUB_MAX pairs (beyond,
 * further deletes are hidden but not scrubbed, logged once).
 */
struct chat_scrub {
	struct chat_cset s; /* (conv hash, seq), no values */
	_Atomic uint32_t n; /* s.t.n, read without s.mu: the filter's fast path */
	bool warned;        /* under s.mu */
};

#define SCRUB_SEED 0x7363727562000001ull /* of the conv hash */

struct chat_scrub *chat_scrub_new(void)
{
	struct chat_scrub *x = calloc(1, sizeof *x);
	if (x)
		chat_cset_init(&x->s, false, SCRUB_SEED);
	return x;
}

void chat_scrub_free(struct chat_scrub *x)
{
	if (!x)
		return;
	chat_cset_destroy(&x->s);
	free(x);
}

void chat_scrub_add(struct chat_scrub *x, const char *conv, size_t len,
		    uint64_t seq)
{
	if (!x)
		return;
	uint64_t ch = chat_cset_lock(&x->s, conv, len);
	if (chat_hset_put(&x->s.t, ch, seq, CHAT_SCRUB_MAX) < 0) {
		if (!x->warned)
			PLOG_W("chat", "deleted-message set full: later "
			       "deletes are hidden but stay on disk",
			       "max=%u", CHAT_SCRUB_MAX);
		x->warned = true;
	}
	atomic_store(&x->n, x->s.t.n);
	chat_cset_unlock(&x->s);
}

bool chat_scrub_has(struct chat_scrub *x, const char *conv, size_t len,
		    uint64_t seq)
{
	if (!x)
		return false;
	uint64_t ch = chat_cset_lock(&x->s, conv, len);
	bool has = chat_hset_find(&x->s.t, ch, seq) >= 0;
	chat_cset_unlock(&x->s);
	return has;
}

/* An edit record of a deleted message, without its body, into out. */
static int scrub_edit_rec(const struct chat_edit_rec *rec, uint8_t *out,
			  size_t cap)
{
	struct chat_edit_rec r = *rec;
	r.body = NULL;
	r.body_len = 0;
	return chat_edit_rec_encode(out, cap, &r);
}

int chat_scrub_filter(void *arg, const void *key, size_t klen,
		      const struct pe_entry *e, uint8_t *out, size_t cap)
{
	struct chat_scrub *x = arg;
	const char *k = key;
	if (!x || klen < 3 || k[1] != '/' || atomic_load(&x->n) == 0)
		return -1; /* nothing was ever deleted: no decoding */
	const char *id = k + 2;
	size_t idl = klen - 2;
	if (k[0] == 'c' && e->type == CHAT_ENT_MSG) {
		struct chat_msg m;
		if (chat_msg_decode(e->payload, e->len, &m) || !m.body_len ||
		    !chat_scrub_has(x, id, idl, e->seq))
			return -1;
		m.body = NULL;
		m.body_len = 0;
		int n = chat_msg_encode(out, cap, &m);
		return n < 0 ? -1 : n;
	}
	if (k[0] == 'c' && e->type == CHAT_ENT_EDIT) {
		struct chat_edit_rec rec;
		if (chat_edit_rec_decode(e->payload, e->len, &rec) ||
		    !rec.body_len || !chat_scrub_has(x, id, idl, rec.ref_seq))
			return -1;
		int n = scrub_edit_rec(&rec, out, cap);
		return n < 0 ? -1 : n;
	}
	if (k[0] == 'e' && e->type == CHAT_ENT_EDIT && e->len >= 8) {
		struct chat_edit_rec rec;
		if (chat_edit_rec_decode(e->payload + 8, e->len - 8, &rec) ||
		    !rec.body_len || !chat_scrub_has(x, id, idl, rec.ref_seq) ||
		    cap < 8)
			return -1;
		memcpy(out, e->payload, 8);
		int n = scrub_edit_rec(&rec, out + 8, cap - 8);
		return n < 0 ? -1 : 8 + n;
	}
	if (k[0] == 'u' && e->type == CHAT_ENT_PTR) {
		struct chat_ptr p;
		if (chat_ptr_decode(e->payload, e->len, &p) || !p.msg)
			return -1;
		uint64_t msg_seq = p.conv_seq;
		struct chat_edit_rec rec;
		if (p.msg_len && p.msg[0] == CHAT_EDIT_REC_VERSION) {
			if (chat_edit_rec_decode(p.msg, p.msg_len, &rec) ||
			    !rec.body_len)
				return -1;
			msg_seq = rec.ref_seq;
		}
		if (!chat_scrub_has(x, p.conv, p.conv_len, msg_seq))
			return -1;
		p.msg = NULL; /* a plain pointer: delivery reads the entry */
		p.msg_len = 0;
		int n = chat_ptr_encode(out, cap, &p);
		return n < 0 ? -1 : n;
	}
	return -1;
}

/* Every DELETE of every edit index (blocking; from the sweeper thread). */
void chat_scrub_load(struct chat_scrub *x, struct pe_engine *e)
{
	if (!x)
		return;
	struct chat_keys l;
	chat_keys_list(&l, e, "e/");
	uint64_t found = 0;
	for (size_t i = 0; i < l.n; i++) {
		const char *key = l.keys[i];
		size_t kl = strlen(key);
		uint64_t from = 1;
		struct pe_entry *es;
		uint32_t n;
		struct pe_read_result meta;
		while (chat_keys_read(e, key, kl, &from, &es, &n, &meta)) {
			for (uint32_t k = 0; k < n; k++) {
				uint64_t seq;
				struct chat_edit_rec rec;
				if (!index_decode(&es[k], &seq, &rec) &&
				    rec.kind == PARLEY_EV_DELETE) {
					chat_scrub_add(x, key + 2, kl - 2, rec.ref_seq);
					found++;
				}
			}
			from = es[n - 1].seq + 1;
			free(es);
			if (meta.end)
				break;
		}
	}
	chat_keys_free(&l);
	PLOG_I("chat", "deleted messages loaded", "indexes=%zu deletes=%" PRIu64,
	       l.n, found);
}

void chat_edit_event_state(struct chat *c, struct parley_event *ev)
{
	struct chat_scrub *x = chat_scrub_of(c);
	if (!x || !ev->conv.len)
		return;
	uint64_t seq = ev->kind == PARLEY_EV_MESSAGE ? ev->conv_seq
		       : ev->kind == PARLEY_EV_EDIT  ? ev->ref_seq
						     : 0;
	if (!seq || !chat_scrub_has(x, ev->conv.p, ev->conv.len, seq))
		return;
	ev->body = (struct parley_bytes){NULL, 0};
	ev->flags |= PARLEY_MSGF_DELETED;
}
