/*
 * chat_list.c — the chat service's conversation list (CONV_LIST):
 *
 *   1. read l/<user> (one entry per conversation; its time = when the
 *      conversation entered the list);
 *   2. for every conversation, in parallel: its newest message (c/<conv>,
 *      backward, 1 entry: last seq, time, sender, content type, preview)
 *      and the user's position (r/<user>:<h>, chat_receipt.h: read_seq);
 *   3. sort by activity and select the page after the cursor
 *      (chat_list_select, pure);
 *   4. for the page's conversations with messages after read_seq: count
 *      those from others (c/<conv> backward from the last seq, at most
 *      CHAT_UNREAD_SCAN entries);
 *   5. build the reply (chat_list_fill, pure).
 *
 * The order and every count come from stored state only (the engine), so
 * all of a user's devices see the same list, before and after restarts.
 *
 * A group the user was removed from (or left) stays in the list, marked
 * PARLEY_CONVF_LEFT and frozen at the event that ended their membership
 * (seq R, chat_group_left): step 2 reads c/<conv> backwards from R, not
 * from its end, so last_seq / time / preview / unread (and the order) do
 * not move with the group's later activity; the title is the name that
 * event recorded and member_count the members right after it.
 *
 * Groups on a node that cannot answer membership from memory (a follower
 * of the group's partition, or a leader still reloading: chat_groups_ready
 * fails; its table is stale, possibly empty) are read from storage
 * instead: step 2 first reads the group's last snapshot (m/<group>,
 * chat_gsnap_view: name, members, the user's departure), then c/<group>
 * as above.
 *
 * Every read is linearizable (pe_read_req.linearizable, ReadIndex): in a
 * cluster each one sees everything its partition committed before it
 * arrived, on a follower as on the leader, or the list fails with
 * NOTLEADER / AGAIN (retryable) — never an old list from a cut-off node.
 * The list l/<user> is read through route_read: on a node that holds no
 * replica of its partition it is refused at once and the gateway
 * forwards the CONV_LIST to that partition's leader. The
 * per-conversation reads (steps 2 and 4) read partitions that node may
 * not hold either: they go through route_read_any, which asks the
 * partition's leader for a partition not held here (tail_relay.h
 * invariant 7; docs/CLUSTER.md §3.3, "Reads of partitions not held").
 * Only when that cannot be asked (a leader of an older build) is the
 * read refused NOTLEADER, naming its partition (route.h); the answer may
 * leave on another thread than the refusal, so the partition travels in
 * the context (nl_part).
 * What the list shows of a message can still trail its SEND by the
 * fan-out (l/<user> and m/<group> are written after the message is
 * durable), as on a single node. A single node ignores the flag.
 *
 * Ownership: the list context is malloc'd by chat_conv_list_page and
 * freed by list_finish, which runs exactly once (after the last read of
 * the last step, or at the first failure before any read was issued).
 * Threads: chat_conv_list_page from any thread but an engine callback's;
 * the reads complete on engine shard threads, a remote one on the peer
 * thread (several at once: `pending` and `err` are atomic, each read
 * writes only its own slot of `ents`).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "chat_group.h" /* chat_key_gsnap */
#include "chat_receipt.h"
#include "route.h"

/* ---- pure: order, page, reply ------------------------------------------------ */

uint64_t chat_list_activity(const struct chat_list_ent *e)
{
	return e->last_ts > e->open_ts ? e->last_ts : e->open_ts;
}

/* <0: a before b in the list (more recent, or same time and smaller id) */
static int pos_cmp(uint64_t ats, const char *a, size_t al, uint64_t bts,
		   const char *b, size_t bl)
{
	if (ats != bts)
		return ats > bts ? -1 : 1;
	if (al != bl)
		return al < bl ? -1 : 1;
	return memcmp(a, b, al);
}

static int list_cmp(const void *a, const void *b)
{
	const struct chat_list_ent *x = a, *y = b;
	return pos_cmp(chat_list_activity(x), x->conv, x->clen,
		       chat_list_activity(y), y->conv, y->clen);
}

uint32_t chat_list_select(struct chat_list_ent *ents, uint32_t n,
			  uint16_t limit, uint64_t before_ts,
			  const char *before_conv, size_t bclen,
			  uint32_t *start, bool *more)
{
	qsort(ents, n, sizeof *ents, list_cmp);
	uint32_t i = 0;
	if (before_ts || bclen)
		while (i < n && pos_cmp(chat_list_activity(&ents[i]),
					ents[i].conv, ents[i].clen, before_ts,
					before_conv, bclen) <= 0)
			i++;
	if (limit > PARLEY_PROTO_MAX_LIST)
		limit = PARLEY_PROTO_MAX_LIST;
	uint32_t k = n - i < limit ? n - i : limit;
	*start = i;
	*more = i + k < n;
	return k;
}

void chat_list_fill(const struct chat_list_ent *ents, uint32_t n, bool more,
		    const char *user, size_t ulen, struct parley_msg *m)
{
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_CONV_LIST_OK;
	struct parley_conv_list_ok *lo = &m->conv_list_ok;
	const struct chat_list_ent *last = NULL;
	/* header, count, trailer (flags, ts, the longest cursor) */
	size_t size = PARLEY_PROTO_HEADER_SIZE + 2 + 1 + 8 + 2 +
		      PARLEY_PROTO_MAX_CONV_ID;
	for (uint32_t i = 0; i < n && lo->count < PARLEY_PROTO_MAX_LIST; i++) {
		const struct chat_list_ent *le = &ents[i];
		struct chat_member mm[2];
		const struct chat_member none = {"", 0}, *peer = &none;
		bool group = le->group || chat_conv_is_group(le->conv, le->clen);
		if (!group && chat_conv_members(le->conv, le->clen, mm) != 2)
			continue;
		if (!group)
			peer = mm[0].len == ulen && !memcmp(mm[0].p, user, ulen)
				       ? &mm[1]
				       : &mm[0];
		size_t rec = 4 + 2 + le->clen + 1 + 8 + 8 + 4 + 2 + peer->len +
			     2 + 8 + 4 + 2 + le->sender_len + 2 + 4 +
			     le->preview_len + le->title_len /* a group's name */ +
			     1; /* flags */
		if (size + rec > CHAT_LIST_FRAME_MAX) {
			more = true; /* the rest on the next page */
			break;
		}
		size += rec;
		struct parley_conv_entry *ce = &lo->entries[lo->count++];
		ce->conv = (struct parley_str){le->conv, le->clen};
		ce->kind = group ? PARLEY_CONV_GROUP : PARLEY_CONV_DIRECT;
		ce->last_seq = le->last_seq;
		ce->last_ts_ms = le->last_ts;
		ce->member_count = group ? le->members : 2;
		ce->peer = (struct parley_str){peer->p, (uint16_t)peer->len};
		if (group)
			ce->title = (struct parley_str){le->title, le->title_len};
		ce->read_seq = le->read_seq;
		ce->unread = le->unread;
		ce->last_sender = (struct parley_str){le->sender, le->sender_len};
		ce->last_content_type = le->content_type;
		ce->preview = (struct parley_bytes){le->preview, le->preview_len};
		ce->flags = le->flags;
		last = le;
	}
	if (!more)
		lo->flags |= PARLEY_PAGEF_END;
	if (last) {
		lo->next_before_ts_ms = chat_list_activity(last);
		lo->next_before_conv = (struct parley_str){last->conv, last->clen};
	}
}

void chat_list_build(struct chat_list_ent *ents, uint32_t n, uint16_t limit,
		     const char *user, size_t ulen, struct parley_msg *m)
{
	uint32_t start;
	bool more;
	uint32_t k = chat_list_select(ents, n, limit, 0, NULL, 0, &start, &more);
	chat_list_fill(ents + start, k, more, user, ulen, m);
}

/* ---- the request ----------------------------------------------------------------- */

struct list_ctx {
	struct pe_engine *e;
	struct chat *c;
	chat_list_cb cb;
	void *arg;
	uint16_t limit;
	uint16_t ulen;
	char user[PARLEY_PROTO_MAX_USER_ID + 1];
	uint64_t before_ts;
	uint16_t bclen;
	char before_conv[PARLEY_PROTO_MAX_CONV_ID];
	atomic_int pending;
	_Atomic int err;
	_Atomic uint32_t nl_part; /* a refused read's partition + 1 (route.h) */
	uint32_t n;
	uint32_t start, count; /* the page, after step 3 */
	bool more;
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
	for (uint32_t i = 0; !err && i < x->n; i++) {
		struct chat_list_ent *le = &x->ents[i];
		struct chat_group_meta gm;
		if (le->from_snap)
			continue; /* list_snap_cb filled it */
		if (!chat_conv_is_group(le->conv, le->clen) ||
		    chat_group_meta(x->c, le->conv, le->clen, &gm))
			continue;
		le->group = true;
		if (le->flags & PARLEY_CONVF_LEFT) {
			/* members: chat_group_left's; title: the removal event's
			 * (list_meta_cb), else (an event stored without it) the
			 * name now */
			if (le->title_len)
				continue;
		} else {
			le->members = gm.member_count;
		}
		le->title_len = gm.name_len;
		memcpy(le->title, gm.name, gm.name_len);
	}
	if (!err) {
		m = malloc(sizeof *m); /* ~16 KiB: not on an engine stack */
		if (m)
			chat_list_fill(x->ents + x->start, x->count, x->more,
				       x->user, x->ulen, m);
		else
			err = -PARLEY_ENOMEM;
	}
	uint32_t np = atomic_load(&x->nl_part);
	if (err == -PARLEY_ENOTLEADER && np)
		route_note(np - 1, 0);
	x->cb(x->arg, err, err ? NULL : m);
	route_clear();
	free(m);
	free(x->ents);
	free(x);
}

/* One of the list's per-conversation reads (steps 2 and 4): local when
 * this node holds the partition, else asked of its leader
 * (route_read_any); a refusal's partition (no remote read possible) is
 * kept for the answer. */
static int list_read(struct list_ctx *x, const struct pe_read_req *q,
		     pe_read_cb cb, void *arg)
{
	int rc = route_read_any(x->e, q, cb, arg);
	uint32_t p, none = 0;
	uint64_t leader;
	if (rc == -PARLEY_ENOTLEADER && route_take(&p, &leader))
		atomic_compare_exchange_strong(&x->nl_part, &none, p + 1);
	return rc;
}

/* A read of a step failed to start: account for it like a completion. */
static void item_fail(struct list_item_arg *a, int rc, pe_read_cb cb)
{
	struct pe_read_result er = {.err = rc};
	cb(a, &er);
}

static struct list_item_arg *item_new(struct list_ctx *x, uint32_t i)
{
	struct list_item_arg *a = malloc(sizeof *a);
	if (a)
		*a = (struct list_item_arg){x, i};
	return a;
}

/* Step 4: one page entry's unread messages are counted. */
static void list_unread_cb(void *arg, const struct pe_read_result *r)
{
	struct list_item_arg *a = arg;
	struct list_ctx *x = a->x;
	struct chat_list_ent *le = &x->ents[a->i];
	if (r->err) {
		atomic_store(&x->err, r->err);
	} else {
		uint64_t lowest = le->last_seq + 1;
		uint32_t n = 0;
		for (uint32_t i = 0; i < r->count; i++) {
			const struct pe_entry *en = &r->entries[i];
			if (en->seq <= le->unread_from)
				break;
			lowest = en->seq;
			struct chat_msg cm; /* messages only: not edits, membership */
			if (en->type == CHAT_ENT_MSG &&
			    chat_msg_decode(en->payload, en->len, &cm) == 0 &&
			    !(cm.sender_len == x->ulen &&
			      !memcmp(cm.sender, x->user, x->ulen)))
				n++;
		}
		/* past the scan: the older unread ones count as from others
		 * (those retention removed are gone, not unread) */
		uint64_t floor = PARLEY_MAX(le->unread_from + 1, r->first_seq);
		if (!r->end && lowest > floor)
			n += (uint32_t)PARLEY_MIN(lowest - floor,
						  (uint64_t)UINT32_MAX - n);
		le->unread = n;
	}
	free(a);
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		list_finish(x);
}

/* Step 3 + 4: every conversation's newest message and position are in. */
static void list_page(struct list_ctx *x)
{
	if (atomic_load(&x->err)) {
		list_finish(x);
		return;
	}
	x->count = chat_list_select(x->ents, x->n, x->limit, x->before_ts,
				    x->before_conv, x->bclen, &x->start,
				    &x->more);
	atomic_store(&x->pending, 1);
	for (uint32_t k = 0; k < x->count; k++) {
		uint32_t i = x->start + k;
		struct chat_list_ent *le = &x->ents[i];
		if (le->read_seq > le->last_seq)
			le->read_seq = le->last_seq; /* cannot happen: marked <= last */
		/* what the user may not read (a group's history before their
		 * join, "from join") is never unread */
		uint64_t upto = le->read_seq;
		if (le->vis_from > 1 && upto < le->vis_from - 1)
			upto = PARLEY_MIN(le->vis_from - 1, le->last_seq);
		le->unread_from = upto;
		if (le->last_seq <= upto || le->gone)
			continue;
		char key[CHAT_KEY_CAP];
		int kl = chat_key_conv(key, le->conv, le->clen);
		uint64_t want = le->last_seq - upto;
		struct pe_read_req q = {
			.key = key, .klen = (size_t)kl, .from = le->last_seq,
			.dir = PE_BACKWARD,
			.limit = (uint32_t)PARLEY_MIN(want, (uint64_t)CHAT_UNREAD_SCAN),
			.linearizable = true};
		struct list_item_arg *a = item_new(x, i);
		if (!a) {
			atomic_store(&x->err, -PARLEY_ENOMEM);
			break;
		}
		atomic_fetch_add(&x->pending, 1);
		int rc = kl < 0 ? -PARLEY_EINVAL
				: list_read(x, &q, list_unread_cb, a);
		if (rc)
			item_fail(a, rc, list_unread_cb);
	}
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		list_finish(x);
}

static void list_preview(struct chat_list_ent *le, const char *sender,
			 uint16_t slen, uint16_t ct, const uint8_t *body,
			 uint32_t blen)
{
	if (slen > sizeof le->sender)
		return;
	le->sender_len = slen;
	memcpy(le->sender, sender, slen);
	le->content_type = ct;
	le->preview_len = (uint16_t)PARLEY_MIN(blen, (uint32_t)PARLEY_PROTO_MAX_PREVIEW);
	if (le->preview_len)
		memcpy(le->preview, body, le->preview_len);
}

/* Step 2: the conversation's newest entry (message, edit or deletion). */
static void list_meta_cb(void *arg, const struct pe_read_result *r)
{
	struct list_item_arg *a = arg;
	struct list_ctx *x = a->x;
	struct chat_list_ent *le = &x->ents[a->i];
	struct chat_msg cm;
	if (r->err == -PARLEY_ETRIMMED && (le->flags & PARLEY_CONVF_LEFT)) {
		/* retention removed everything up to the departure: the
		 * entry stays, with nothing left to show or count */
		le->last_seq = le->left_seq;
		le->gone = true;
	} else if (r->err == -PARLEY_ETRIMMED && r->last_seq &&
		   r->first_seq > r->last_seq) {
		/* retention removed every entry (read from the end): the
		 * same, at the conversation's last seq, sorted by when it
		 * entered the list */
		le->last_seq = r->last_seq;
		le->gone = true;
	} else if (r->err) {
		atomic_store(&x->err, r->err);
	} else if (r->count) {
		le->last_seq = r->entries[0].seq;
		le->last_ts = r->entries[0].ts_ms;
		const struct pe_entry *en = &r->entries[0];
		struct chat_edit_rec ed;
		struct chat_gev ev;
		if ((le->flags & PARLEY_CONVF_LEFT) &&
		    en->type == CHAT_ENT_MEMBER && en->seq == le->left_seq &&
		    chat_gev_decode(en->payload, en->len, &ev) == 0 &&
		    ev.name_len <= sizeof le->title) {
			/* the REMOVE / LEAVE event: the group's name then */
			le->title_len = ev.name_len;
			memcpy(le->title, ev.name, ev.name_len);
		} else if (en->type == CHAT_ENT_MSG &&
		    chat_msg_decode(en->payload, en->len, &cm) == 0) {
			list_preview(le, cm.sender, cm.sender_len,
				     cm.content_type, cm.body, cm.body_len);
		} else if (en->type == CHAT_ENT_EDIT &&
			   chat_edit_rec_decode(en->payload, en->len, &ed) == 0) {
			/* the newest entry edits or deletes a message: the
			 * preview is its new body (a deletion: empty) */
			list_preview(le, ed.sender, ed.sender_len,
				     ed.content_type, ed.body,
				     ed.kind == PARLEY_EV_EDIT ? ed.body_len : 0);
		}
	}
	free(a);
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		list_page(x);
}

/* Step 2: the user's read position in the conversation. */
static void list_pos_cb(void *arg, const struct pe_read_result *r)
{
	struct list_item_arg *a = arg;
	struct list_ctx *x = a->x;
	struct chat_list_ent *le = &x->ents[a->i];
	if (r->err) {
		atomic_store(&x->err, r->err);
	} else {
		struct chat_rcpt_pos p;
		chat_rcpt_pos_of(r, le->conv, le->clen, &p);
		le->read_seq = p.read_seq;
	}
	free(a);
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		list_page(x);
}

/* How many of a group's newest snapshots a follower's list looks at: each
 * event's snapshot is appended when that event's fan-out ends, and the
 * fan-outs of events close together can end out of order, so the last
 * entry of m/<group> need not be the newest event's. */
#define LIST_GSNAP_LOOK 16u

static void list_issue_n(struct list_ctx *x, uint32_t i, const char *key,
			 int kl, uint64_t from, uint32_t limit, pe_read_cb cb);

static void list_issue(struct list_ctx *x, uint32_t i, const char *key,
		       int kl, uint64_t from, pe_read_cb cb)
{
	list_issue_n(x, i, key, kl, from, 1, cb);
}

static void list_issue_n(struct list_ctx *x, uint32_t i, const char *key,
			 int kl, uint64_t from, uint32_t limit, pe_read_cb cb)
{
	struct list_item_arg *a = item_new(x, i);
	if (!a) { /* request-scoped: the reply becomes ERROR NOMEM */
		atomic_store(&x->err, -PARLEY_ENOMEM);
		if (atomic_fetch_sub(&x->pending, 1) == 1)
			list_page(x);
		return;
	}
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = from, .dir = PE_BACKWARD,
				.limit = limit, .linearizable = true};
	int rc = kl < 0 ? -PARLEY_EINVAL : list_read(x, &q, cb, a);
	if (rc)
		item_fail(a, rc, cb);
}

/* A group the user is no longer in: frozen at the event that removed
 * them (chat_group_left, memory). Returns true when memory cannot answer
 * here (a follower): the entry is then read from the group's snapshot
 * (list_snap_cb). */
static bool list_left(struct list_ctx *x, struct chat_list_ent *le)
{
	uint64_t r, vis = 0;
	uint32_t members;
	if (!chat_conv_is_group(le->conv, le->clen))
		return false;
	int rc = chat_group_left(x->c, le->conv, le->clen, x->user, x->ulen, &r,
				 &members, &vis);
	if (rc == -PARLEY_ENOTLEADER || rc == -PARLEY_EAGAIN)
		return true;
	if (rc == 0 || rc == 1)
		le->vis_from = vis;
	if (rc != 1)
		return false;
	le->flags |= PARLEY_CONVF_LEFT;
	le->left_seq = r;
	le->members = members;
	return false;
}

/* Step 2 on a node whose memory cannot answer for the group: its newest
 * snapshots are in; fill the entry from the one of the latest event, then read c/<group> (from the
 * user's departure when they left). */
static void list_snap_cb(void *arg, const struct pe_read_result *r)
{
	struct list_item_arg *a = arg;
	struct list_ctx *x = a->x;
	struct chat_list_ent *le = &x->ents[a->i];
	struct chat_gsnap_view v = {0}, cand;
	bool found = false;
	if (r->err)
		atomic_store(&x->err, r->err);
	for (uint32_t k = 0; !r->err && k < r->count; k++) { /* the newest event's */
		if (r->entries[k].type == CHAT_ENT_GSNAP &&
		    chat_gsnap_view(r->entries[k].payload, r->entries[k].len,
				    x->user, x->ulen, &cand) == 0 &&
		    (!found || cand.as_of > v.as_of)) {
			v = cand;
			found = true;
		}
	}
	if (found) {
		le->from_snap = true;
		le->group = true;
		le->vis_from = v.vis_from;
		le->members = v.members;
		le->title_len = v.name_len;
		memcpy(le->title, v.name, v.name_len);
		if (v.left_seq) {
			le->flags |= PARLEY_CONVF_LEFT;
			le->left_seq = v.left_seq;
			/* the title: the REMOVE / LEAVE event's (list_meta_cb),
			 * else this name */
		}
	}
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, le->conv, le->clen);
	atomic_fetch_add(&x->pending, 1);
	list_issue(x, a->i, key, kl,
		   le->flags & PARLEY_CONVF_LEFT ? le->left_seq : UINT64_MAX,
		   list_meta_cb);
	free(a);
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		list_page(x);
}

/* Step 1: the user's conversations. */
static void list_read_cb(void *arg, const struct pe_read_result *r)
{
	struct list_ctx *x = arg;
	if (r->err) {
		atomic_store(&x->err, r->err);
		list_finish(x);
		return;
	}
	x->ents = calloc(r->count ? r->count : 1, sizeof *x->ents);
	bool *snap = calloc(r->count ? r->count : 1, sizeof *snap);
	if (!x->ents || !snap) {
		free(snap);
		atomic_store(&x->err, -PARLEY_ENOMEM);
		list_finish(x);
		return;
	}
	for (uint32_t i = 0; i < r->count; i++) {
		const char *conv;
		uint16_t clen;
		struct chat_member mm[2];
		if (chat_list_decode(r->entries[i].payload, r->entries[i].len,
				     &conv, &clen) || clen == 0 || clen > 250 ||
		    (!chat_conv_is_group(conv, clen) &&
		     chat_conv_members(conv, clen, mm) < 0))
			continue;
		bool dup = false;
		for (uint32_t j = 0; j < x->n && !dup; j++)
			dup = x->ents[j].clen == clen &&
			      !memcmp(x->ents[j].conv, conv, clen);
		if (dup)
			continue;
		x->ents[x->n].clen = clen;
		memcpy(x->ents[x->n].conv, conv, clen);
		x->ents[x->n].open_ts = r->entries[i].ts_ms;
		snap[x->n] = list_left(x, &x->ents[x->n]);
		x->n++;
	}
	atomic_store(&x->pending, (int)(2 * x->n) + 1);
	for (uint32_t i = 0; i < x->n; i++) {
		struct chat_list_ent *le = &x->ents[i];
		char key[CHAT_KEY_CAP];
		int kl;
		if (snap[i]) {
			kl = chat_key_gsnap(key, le->conv, le->clen);
			list_issue_n(x, i, key, kl, UINT64_MAX, LIST_GSNAP_LOOK,
				     list_snap_cb);
		} else {
			kl = chat_key_conv(key, le->conv, le->clen);
			list_issue(x, i, key, kl,
				   le->flags & PARLEY_CONVF_LEFT ? le->left_seq
								 : UINT64_MAX,
				   list_meta_cb);
		}
		kl = chat_key_rcpt(key, x->user, x->ulen, le->conv, le->clen);
		list_issue(x, i, key, kl, UINT64_MAX, list_pos_cb);
	}
	free(snap);
	if (atomic_fetch_sub(&x->pending, 1) == 1)
		list_page(x);
}

int chat_conv_list_page(struct chat *c, const char *user, size_t ulen,
			uint16_t limit, uint64_t before_ts,
			const char *before_conv, size_t bclen, chat_list_cb cb,
			void *arg)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_list(key, user, ulen);
	if (kl < 0 || bclen > PARLEY_PROTO_MAX_CONV_ID)
		return -PARLEY_EINVAL;
	struct list_ctx *x = calloc(1, sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	x->e = chat_engine(c);
	x->c = c;
	x->cb = cb;
	x->arg = arg;
	x->limit = limit;
	x->ulen = (uint16_t)ulen;
	memcpy(x->user, user, ulen);
	x->before_ts = before_ts;
	x->bclen = (uint16_t)bclen;
	if (bclen)
		memcpy(x->before_conv, before_conv, bclen);
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = PE_MAX_READ, .linearizable = true};
	int rc = route_read(x->e, &q, list_read_cb, x); /* the caller's thread */
	if (rc) {
		free(x);
		return rc;
	}
	return 0;
}

int chat_conv_list(struct chat *c, const char *user, size_t ulen,
		   uint16_t limit, chat_list_cb cb, void *arg)
{
	return chat_conv_list_page(c, user, ulen, limit, 0, NULL, 0, cb, arg);
}
