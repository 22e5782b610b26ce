/*
 * chat_read.c — the chat service's reads and delivery: HISTORY pages,
 * where a SYNC starts (device cursor + inbox bounds), the inbox
 * subscription with its credit, resolving an inbox pointer into its EVENT,
 * and storing device cursors. See chat.h for the streams.
 *
 * Every engine call of these requests is made here; the caller (conn.c)
 * gets ready replies (struct parley_msg) through its callback and never
 * sees a key or a stored record.
 *
 * Ownership: each request context is malloc'd by the chat_* call and freed
 * by the callback that finishes it. A subscription (struct chat_sub) is
 * freed by the engine's unsubscribe `done`, after which the caller's
 * done(arg) runs.
 * Threads: the chat_* calls may come from any thread but an engine
 * callback's (chat_event_resolve / chat_inbox_grant / chat_inbox_poll may
 * also be called from the loop at any time); the callbacks run on engine
 * shard threads.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "chat_receipt.h"
#include "route.h"

/* ---- HISTORY ------------------------------------------------------------------- */

/* Takes the filled hp->msgs[hp->count] into the page when the frame
 * (*size bytes so far) stays within max_frame. */
static bool page_add(struct parley_history_page *hp, size_t *size,
		     uint32_t max_frame)
{
	size_t hs = parley_proto_hist_msg_size(&hp->msgs[hp->count]);
	if (*size + hs > max_frame)
		return false;
	*size += hs;
	hp->count++;
	return true;
}

/* The page; with c (groups): entries below vis_from are not shown (and
 * end the page), nor messages refused at their seq (sender no longer a
 * member). Membership events are records of kind MEMBERSHIP. */
static void history_page(const struct pe_read_result *r,
			 const struct chat_edit_state *st, const char *conv,
			 uint16_t clen, uint32_t max_frame,
			 struct parley_msg *m, struct chat *c,
			 uint64_t vis_from)
{
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_HISTORY_PAGE;
	struct parley_history_page *hp = &m->history_page;
	hp->conv = (struct parley_str){conv, clen};
	size_t size = PARLEY_PROTO_HEADER_SIZE + 2 + clen + 8 + 1 + 2;
	bool all = true, below = false;
	for (uint32_t i = 0; i < r->count && hp->count < PARLEY_PROTO_MAX_HISTORY; i++) {
		struct chat_msg cm;
		if (r->entries[i].seq < vis_from) {
			below = true; /* before the reader joined */
			break;
		}
		if (r->entries[i].type == CHAT_ENT_MEMBER) {
			struct chat_gev ev;
			if (chat_gev_decode(r->entries[i].payload,
					    r->entries[i].len, &ev))
				continue;
			struct parley_hist_msg *h = &hp->msgs[hp->count];
			memset(h, 0, sizeof *h);
			h->seq = r->entries[i].seq;
			h->ts_ms = r->entries[i].ts_ms;
			h->sender = (struct parley_str){ev.actor, ev.actor_len};
			h->content_type = CHAT_CT_MEMBERSHIP;
			h->kind = PARLEY_EV_MEMBERSHIP;
			h->body = (struct parley_bytes){r->entries[i].payload,
							r->entries[i].len};
			if (!page_add(hp, &size, max_frame)) {
				all = false;
				break;
			}
			continue;
		}
		if (chat_msg_decode(r->entries[i].payload, r->entries[i].len, &cm))
			continue; /* not a message record */
		if (c && !chat_member_at(c, conv, clen, cm.sender, cm.sender_len,
					 r->entries[i].seq))
			continue; /* refused at its seq: never delivered */
		struct parley_hist_msg *h = &hp->msgs[hp->count];
		h->seq = r->entries[i].seq;
		h->ts_ms = r->entries[i].ts_ms;
		h->sender = (struct parley_str){cm.sender, cm.sender_len};
		memcpy(h->client_msg_id, cm.client_msg_id, 16);
		h->content_type = cm.content_type;
		h->body = (struct parley_bytes){cm.body, cm.body_len};
		h->kind = PARLEY_EV_MESSAGE;
		if (st && st[i].flags) { /* edited or deleted (chat_edit.c) */
			h->flags = st[i].flags;
			h->ref_seq = 0;
			h->content_type = st[i].flags & PARLEY_MSGF_DELETED
						  ? cm.content_type
						  : st[i].content_type;
			h->body = (struct parley_bytes){st[i].body,
							st[i].body_len};
		}
		if (!page_add(hp, &size, max_frame)) {
			all = false;
			break;
		}
	}
	if (hp->count)
		hp->next_before_seq = hp->msgs[hp->count - 1].seq;
	if (hp->count == 0 || (all && r->end && hp->count == r->count) ||
	    hp->next_before_seq == 1 || below ||
	    (vis_from > 1 && hp->next_before_seq == vis_from))
		hp->flags |= PARLEY_HISTF_END;
	/* Entries that are not messages (EDIT / DELETE, ...) are folded or
	 * skipped: a page holding only such entries is not the end while the
	 * engine has older ones; the next page starts below them. */
	if (hp->count == 0 && r->count && !r->end && !below &&
	    r->entries[r->count - 1].seq > 1) {
		hp->flags &= (uint8_t)~PARLEY_HISTF_END;
		hp->next_before_seq = r->entries[r->count - 1].seq;
	} else if (hp->count == 0) {
		hp->next_before_seq = 0;
	} else if (all && r->entries[r->count - 1].seq < hp->next_before_seq) {
		hp->next_before_seq = r->entries[r->count - 1].seq;
	}
}

void chat_history_page_state(const struct pe_read_result *r,
			     const struct chat_edit_state *st, const char *conv,
			     uint16_t clen, uint32_t max_frame,
			     struct parley_msg *m)
{
	history_page(r, st, conv, clen, max_frame, m, NULL, 0);
}

void chat_history_page(const struct pe_read_result *r, const char *conv,
		       uint16_t clen, uint32_t max_frame, struct parley_msg *m)
{
	history_page(r, NULL, conv, clen, max_frame, m, NULL, 0);
}

struct hist_ctx {
	struct chat *c;
	chat_history_cb cb;
	void *arg;
	bool group;             /* filter by membership at each seq */
	uint64_t vis_from;      /* first seq the reader may see */
	uint32_t max_frame;
	uint32_t part;          /* c/<conv>'s partition */
	uint16_t clen;
	char conv[250];
};

/* A failed page read: a NOTLEADER names the conversation's partition
 * (route.h), so that the gateway forwards the HISTORY to that
 * partition's leader instead of partition 0's (which may hold no replica
 * of it either: docs/CLUSTER.md §5). */
static void hist_fail(struct hist_ctx *x, int err)
{
	if (err == -PARLEY_ENOTLEADER)
		route_note(x->part, 0);
	x->cb(x->arg, err, NULL);
	route_clear();
}

/* The page with each message's current state (chat_edit_fold). */
static void hist_fold_cb(void *arg, int err, const struct pe_read_result *r,
			 const struct chat_edit_state *st)
{
	struct hist_ctx *x = arg;
	if (err) {
		hist_fail(x, err);
	} else {
		/* ~16 KiB: not on an engine thread's stack */
		struct parley_msg *m = malloc(sizeof *m);
		if (m)
			history_page(r, st, x->conv, x->clen, x->max_frame, m,
				     x->group ? x->c : NULL, x->vis_from);
		x->cb(x->arg, m ? 0 : -PARLEY_ENOMEM, m);
		free(m);
	}
	free(x);
}

static void hist_cb(void *arg, const struct pe_read_result *r)
{
	struct hist_ctx *x = arg;
	int rc = r->err;
	if (!rc)
		rc = chat_edit_fold(x->c, x->conv, x->clen, r, hist_fold_cb, x);
	if (rc) {
		hist_fail(x, rc);
		free(x);
	}
}

int chat_history(struct chat *c, const char *user, size_t ulen,
		 const char *conv, size_t clen, uint64_t before_seq,
		 uint16_t limit, uint32_t max_frame, chat_history_cb cb,
		 void *arg)
{
	int rc = chat_conv_access(c, conv, clen, user, ulen);
	if (rc)
		return rc;
	bool group = chat_conv_is_group(conv, clen);
	uint64_t vis_from = group ? chat_member_visible_from(c, conv, clen,
							     user, ulen)
				  : 1;
	if (vis_from == 0)
		return -PARLEY_EPERM; /* removed since the check */
	if (before_seq == 1 || (before_seq && before_seq <= vis_from)) {
		/* nothing older than seq 1, or than the reader's join */
		struct parley_msg *m = calloc(1, sizeof *m);
		if (!m)
			return -PARLEY_ENOMEM;
		m->type = PARLEY_T_HISTORY_PAGE;
		m->history_page.conv = (struct parley_str){conv, (uint16_t)clen};
		m->history_page.flags = PARLEY_HISTF_END;
		cb(arg, 0, m);
		free(m);
		return 0;
	}
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, conv, clen);
	if (kl < 0)
		return kl;
	uint32_t p = pe_partition_of(chat_engine(c), key, (size_t)kl);
	struct hist_ctx *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	*x = (struct hist_ctx){.c = c, .cb = cb, .arg = arg, .max_frame = max_frame,
			       .part = p, .clen = (uint16_t)clen, .group = group,
			       .vis_from = vis_from};
	memcpy(x->conv, conv, clen);
	/* linearizable (ReadIndex, docs/CLUSTER.md "Consistency"): a node
	 * that cannot confirm with its partition's leader answers NOTLEADER
	 * or AGAIN, never a stale page; one that holds no replica of the
	 * partition refuses at once, naming it (route_read) */
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = before_seq ? before_seq - 1 : UINT64_MAX,
				.dir = PE_BACKWARD, .limit = limit,
				.linearizable = true};
	rc = route_read(chat_engine(c), &q, hist_cb, x);
	if (rc) {
		free(x);
		return rc;
	}
	return 0;
}

/* ---- SYNC ----------------------------------------------------------------------- */

uint64_t chat_sync_start(uint64_t from, uint64_t cursor, uint64_t first,
			 uint64_t last)
{
	if (from == 0) /* resume after the device's cursor, or live */
		from = cursor == UINT64_MAX ? UINT64_MAX : cursor + 1;
	if (from == UINT64_MAX || from > last + 1)
		from = last + 1;
	if (first && from < first)
		from = first;
	if (from == 0)
		from = 1;
	return from;
}

/* Two reads on the engine: the device's cursor (only for from == 0), then
 * the inbox's bounds; the second is issued from the first's callback.
 * Both are linearizable (ReadIndex): in a cluster a SYNC on a follower or
 * a cut-off node starts from the cursor and inbox end the partition had
 * committed when it arrived, or fails NOTLEADER / AGAIN — it never
 * resumes from an older cursor and re-delivers what a device already
 * acknowledged elsewhere. The tail that follows waits for this node to
 * apply; it skips nothing. A node that holds no replica of the inbox's
 * partition refuses NOTLEADER at once, naming it (route_read; the inbox's
 * is normally relayed first, conn_tail_sync); the cursor's, when not held
 * here, is read at its leader (route_read_any; the callback then runs on
 * the peer thread). */
struct sync_ctx {
	struct chat *c;
	chat_sync_cb cb;
	void *arg;
	uint64_t from;
	struct chat_sync_info info;
	uint8_t ulen;
	char user[121];
};

static void sync_finish(struct sync_ctx *x, int err)
{
	x->info.err = err;
	if (!err)
		x->info.start = chat_sync_start(x->from, x->info.cursor,
						x->info.first, x->info.last);
	x->cb(x->arg, &x->info);
	free(x);
}

static void sync_inbox_cb(void *arg, const struct pe_read_result *r)
{
	struct sync_ctx *x = arg;
	/* An inbox that retention (or a delete) emptied has first_seq =
	 * last_seq + 1, and a backward read from its end fails TRIMMED with
	 * the bounds filled in: delivery starts after its last seq. */
	int err = r->err == -PARLEY_ETRIMMED && r->last_seq &&
			  r->first_seq > r->last_seq
			  ? 0
			  : r->err;
	if (!err) {
		x->info.first = r->first_seq;
		x->info.last = r->last_seq;
	}
	sync_finish(x, err);
}

static int sync_inbox_issue(struct sync_ctx *x)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_inbox(key, x->user, x->ulen);
	if (kl < 0)
		return kl;
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = UINT64_MAX, .dir = PE_BACKWARD,
				.limit = 1, .linearizable = true};
	return route_read(chat_engine(x->c), &q, sync_inbox_cb, x);
}

static void sync_cursor_cb(void *arg, const struct pe_read_result *r)
{
	struct sync_ctx *x = arg;
	if (r->err) {
		sync_finish(x, r->err);
		return;
	}
	if (r->count == 1 && r->entries[0].len == 8)
		x->info.cursor = le_get64(r->entries[0].payload);
	int rc = sync_inbox_issue(x);
	if (rc)
		sync_finish(x, rc);
}

int chat_sync(struct chat *c, const char *user, size_t ulen,
	      const char *device, size_t dlen, uint64_t from_inbox_seq,
	      chat_sync_cb cb, void *arg)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_cursor(key, user, ulen, device, dlen);
	if (kl < 0)
		return kl;
	struct sync_ctx *x = malloc(sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	*x = (struct sync_ctx){.c = c, .cb = cb, .arg = arg,
			       .from = from_inbox_seq,
			       .info = {.cursor = UINT64_MAX},
			       .ulen = (uint8_t)ulen};
	memcpy(x->user, user, ulen);
	int rc;
	if (from_inbox_seq == 0) {
		struct pe_read_req q = {.key = key, .klen = (size_t)kl,
					.from = UINT64_MAX, .dir = PE_BACKWARD,
					.limit = 1, .linearizable = true};
		/* the inbox is the request's partition (the SYNC runs, or
		 * is relayed, where it is held); the cursor's may be held
		 * elsewhere: asked of its leader then (route_read_any) */
		rc = route_read_any(chat_engine(c), &q, sync_cursor_cb, x);
	} else {
		rc = sync_inbox_issue(x);
	}
	if (rc)
		free(x);
	return rc;
}

/* ---- inbox subscription ------------------------------------------------------------- */

struct chat_sub {
	struct chat *c;
	chat_inbox_cb cb;
	void (*done)(void *arg);
	void *arg;
	_Atomic int64_t credit;   /* entries the engine may still deliver */
	atomic_bool paused;
	struct pe_sub *sub;
};

/* Decodes one inbox entry; an inline pointer whose record decodes comes
 * out with its EVENT ready. */
static void inbox_item_of(struct chat *c, const struct pe_entry *e,
			  struct chat_inbox_item *o)
{
	struct chat_ptr p;
	struct chat_inbox_ptr *ip = &o->p;
	ip->inbox_seq = e->seq;
	o->ready = false;
	if (e->type != CHAT_ENT_PTR || chat_ptr_decode(e->payload, e->len, &p) ||
	    p.conv_len > sizeof ip->conv) {
		ip->kind = ip->clen = 0;
		ip->conv_seq = 0;
		return;
	}
	ip->kind = p.kind;
	ip->clen = p.conv_len;
	memcpy(ip->conv, p.conv, p.conv_len);
	ip->conv_seq = p.conv_seq;
	if (p.kind == PARLEY_EV_RECEIPT) { /* all in the pointer (chat_receipt.h) */
		o->ready = chat_rcpt_event_of(e, &o->ev) == 0;
		return;
	}
	if (p.kind == PARLEY_EV_ACTIVITY && p.conv_len) {
		/* read fan-out (chat_fanout_read.c): all in the pointer */
		struct parley_event *ev = &o->ev;
		memset(ev, 0, sizeof *ev);
		ev->inbox_seq = e->seq;
		ev->kind = PARLEY_EV_ACTIVITY;
		ev->conv = (struct parley_str){ip->conv, ip->clen};
		ev->conv_seq = p.conv_seq;
		ev->sender = parley_str_c("parley");
		ev->server_ts_ms = e->ts_ms;
		o->ready = true;
		return;
	}
	struct chat_msg cm;
	/* a copy of a message that retention removed is not delivered: the
	 * read finds it gone (kind 0) */
	if (p.msg && chat_floor_below(chat_floors_of(c), p.conv, p.conv_len,
				      p.conv_seq))
		return;
	if (p.msg && p.kind == PARLEY_EV_MESSAGE && p.conv_len &&
	    p.msg_len && p.msg[0] == CHAT_EDIT_REC_VERSION) {
		/* an EDIT / DELETE entry carried inline (chat_edit.c) */
		struct pe_entry pe = {.seq = p.conv_seq, .ts_ms = p.ts_ms,
				      .type = CHAT_ENT_EDIT, .len = p.msg_len,
				      .payload = p.msg};
		struct parley_msg m;
		memset(&m.event, 0, sizeof m.event);
		if (chat_edit_event(&pe, &m) == 0) {
			o->ev = m.event;
			o->ev.inbox_seq = e->seq;
			o->ev.conv = (struct parley_str){ip->conv, ip->clen};
			o->ready = true;
			chat_edit_event_state(c, &o->ev);
		}
		return;
	}
	if (!p.msg || p.kind != PARLEY_EV_MESSAGE || p.conv_len == 0 ||
	    chat_msg_decode(p.msg, p.msg_len, &cm) != 0)
		return; /* resolved by a read (chat_event_resolve) */
	struct parley_event *ev = &o->ev;
	memset(ev, 0, sizeof *ev);
	ev->inbox_seq = e->seq;
	ev->kind = p.kind;
	ev->conv = (struct parley_str){ip->conv, ip->clen};
	ev->conv_seq = p.conv_seq;
	ev->sender = (struct parley_str){cm.sender, cm.sender_len};
	memcpy(ev->client_msg_id, cm.client_msg_id, 16);
	ev->server_ts_ms = p.ts_ms;
	ev->content_type = cm.content_type;
	ev->body = (struct parley_bytes){cm.body, cm.body_len};
	o->ready = true;
	chat_edit_event_state(c, ev);
}

static enum pe_sub_ret inbox_sub_cb(void *arg, struct pe_sub *sub,
				    const struct pe_sub_update *u)
{
	struct chat_sub *x = arg;
	(void)sub;
	if (u->event == PE_SUB_CLOSED || u->event == PE_SUB_TRIMMED) {
		struct chat_inbox_update cu = {
			.what = u->event == PE_SUB_CLOSED ? CHAT_INBOX_CLOSED
							  : CHAT_INBOX_TRIMMED,
			.err = u->err, .next_seq = u->next_seq};
		x->cb(x->arg, &cu);
		return PE_SUB_CONTINUE;
	}
	struct chat_inbox_item items[CHAT_INBOX_BATCH];
	for (uint32_t i = 0; i < u->count;) {
		uint32_t n = 0;
		while (i < u->count && n < CHAT_INBOX_BATCH)
			inbox_item_of(x->c, &u->entries[i++], &items[n++]);
		struct chat_inbox_update cu = {.what = CHAT_INBOX_PTRS,
					       .next_seq = u->next_seq,
					       .count = n, .items = items};
		x->cb(x->arg, &cu);
	}
	int64_t left = atomic_fetch_sub(&x->credit, (int64_t)u->count) -
		       (int64_t)u->count;
	if (left > 0)
		return PE_SUB_CONTINUE;
	atomic_store(&x->paused, true);
	/* The grant may have come between our subtraction and the store: if
	 * it did not claim the pause, continue ourselves. */
	if (atomic_load(&x->credit) > 0 && atomic_exchange(&x->paused, false))
		return PE_SUB_CONTINUE;
	return PE_SUB_PAUSE;
}

static void inbox_sub_done(void *arg)
{
	struct chat_sub *x = arg;
	if (x->done)
		x->done(x->arg);
	free(x);
}

int chat_inbox_subscribe(struct chat *c, const char *user, size_t ulen,
			 uint64_t from, uint32_t credit, chat_inbox_cb cb,
			 void (*done)(void *arg), void *arg,
			 struct chat_sub **out)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_inbox(key, user, ulen);
	if (kl < 0)
		return kl;
	struct chat_sub *x = calloc(1, sizeof *x);
	if (!x)
		return -PARLEY_ENOMEM;
	x->c = c;
	x->cb = cb;
	x->done = done;
	x->arg = arg;
	atomic_store(&x->credit, (int64_t)credit);
	int rc = pe_subscribe(chat_engine(c), key, (size_t)kl, from,
			      inbox_sub_cb, x, &x->sub);
	if (rc) {
		free(x);
		return rc;
	}
	*out = x;
	return 0;
}

void chat_inbox_grant(struct chat_sub *x, int64_t n)
{
	int64_t now = atomic_fetch_add(&x->credit, n) + n;
	if (now > 0 && atomic_exchange(&x->paused, false) &&
	    pe_sub_resume(x->sub) != 0)
		atomic_store(&x->paused, true); /* queue full: poll retries */
}

void chat_inbox_poll(struct chat_sub *x)
{
	if (atomic_load(&x->credit) > 0 && atomic_exchange(&x->paused, false) &&
	    pe_sub_resume(x->sub) != 0)
		atomic_store(&x->paused, true);
}

void chat_inbox_unsubscribe(struct chat_sub *x)
{
	for (int tries = 0;; tries++) {
		int rc = pe_unsubscribe(x->sub, inbox_sub_done, x);
		if (rc == 0)
			return;
		if (tries > 1000) {
			PLOG_E("chat", "unsubscribe failed, leaking the "
			       "subscription context", "err=%s",
			       parley_errname(rc));
			return;
		}
		sched_yield();
	}
}

/* ---- EVENT resolution: inbox pointer -> message -> EVENT ------------------------------ */

void chat_event_placeholder(const struct chat_inbox_ptr *p,
			    struct parley_msg *m)
{
	/* The pointer could not be resolved (unknown kind, unreadable
	 * message): an EVENT of kind 0 keeps the inbox sequence dense;
	 * clients skip kinds they do not know and acknowledge them. */
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_EVENT;
	m->event.inbox_seq = p->inbox_seq;
	m->event.kind = 0;
	m->event.conv = p->clen ? (struct parley_str){p->conv, p->clen}
				: parley_str_c("-");
	m->event.conv_seq = p->conv_seq;
	/* EVENT's sender must be a valid user id on the wire (a decoder
	 * refuses the frame otherwise): "-" is not one, so the placeholder
	 * could not be encoded. Clients skip kind 0 whatever the sender. */
	m->event.sender = parley_str_c("parley");
}

struct resolve_ctx {
	struct chat *c;
	chat_event_cb cb;
	void *arg;
	struct chat_inbox_ptr p;
	uint8_t linear; /* linearizable reads made so far */
};

/* Linearizable reads of one pointer's message before a placeholder; each
 * waits up to the engine's bound (3 election timeouts) for a leader. */
#define RESOLVE_LINEAR_TRIES 8u

static void resolve_cb(void *arg, const struct pe_read_result *res);

static int resolve_read(struct chat *c, struct resolve_ctx *r,
			const char *key, int kl)
{
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = r->p.conv_seq, .dir = PE_FORWARD,
				.limit = 1, .linearizable = r->linear > 0};
	return pe_read(chat_engine(c), &q, resolve_cb, r);
}

static void resolve_cb(void *arg, const struct pe_read_result *res)
{
	struct resolve_ctx *r = arg;
	struct parley_msg m;
	struct chat_msg cm;
	struct chat_gev ev;
	memset(&m.event, 0, sizeof m.event);
	bool found = res->err == 0 && res->count == 1 &&
		     res->entries[0].seq == r->p.conv_seq;
	bool again = r->linear ? (res->err == -PARLEY_ENOTLEADER ||
				  res->err == -PARLEY_EAGAIN)
			       : (res->err == 0 || res->err == -PARLEY_EAGAIN);
	if (!found && again && r->linear < RESOLVE_LINEAR_TRIES) {
		/* The pointer names a committed message this node has not
		 * applied yet (a follower, or a new leader catching up: the
		 * conversation is another partition than the inbox, with
		 * its own log): read it again linearizably, which waits
		 * until this node applied everything committed before
		 * (ReadIndex). Without this the device got a placeholder
		 * instead of the message (seen in cluster_test_cluster_netns
		 * after leader changes). A node in an election, or cut off,
		 * asks again (RESOLVE_LINEAR_TRIES): the device waits for its
		 * message rather than skip it. */
		char key[CHAT_KEY_CAP];
		int kl = chat_key_conv(key, r->p.conv, r->p.clen);
		r->linear++;
		if (kl >= 0 && resolve_read(r->c, r, key, kl) == 0)
			return;
	}
	if (res->err == 0 && res->count == 1 &&
	    res->entries[0].seq == r->p.conv_seq &&
	    res->entries[0].type == CHAT_ENT_EDIT &&
	    chat_edit_event(&res->entries[0], &m) == 0) {
		/* an EDIT / DELETE entry (chat_edit.c): its kind is the
		 * entry's, whatever the pointer said */
		m.event.inbox_seq = r->p.inbox_seq;
		m.event.conv = (struct parley_str){r->p.conv, r->p.clen};
	} else if (res->err == 0 && res->count == 1 &&
	    res->entries[0].seq == r->p.conv_seq &&
	    res->entries[0].type == CHAT_ENT_MEMBER &&
	    chat_gev_decode(res->entries[0].payload, res->entries[0].len,
			    &ev) == 0) {
		/* a membership event: body = the event record (PROTOCOL.md) */
		memset(&m.event, 0, sizeof m.event);
		m.type = PARLEY_T_EVENT;
		m.event.inbox_seq = r->p.inbox_seq;
		m.event.kind = PARLEY_EV_MEMBERSHIP;
		m.event.conv = (struct parley_str){r->p.conv, r->p.clen};
		m.event.conv_seq = r->p.conv_seq;
		m.event.sender = (struct parley_str){ev.actor, ev.actor_len};
		m.event.server_ts_ms = res->entries[0].ts_ms;
		m.event.content_type = CHAT_CT_MEMBERSHIP;
		m.event.body = (struct parley_bytes){res->entries[0].payload,
						     res->entries[0].len};
	} else if (res->err == 0 && res->count == 1 &&
	    res->entries[0].seq == r->p.conv_seq &&
	    chat_msg_decode(res->entries[0].payload, res->entries[0].len, &cm) == 0) {
		memset(&m.event, 0, sizeof m.event);
		m.type = PARLEY_T_EVENT;
		m.event.inbox_seq = r->p.inbox_seq;
		m.event.kind = r->p.kind;
		m.event.conv = (struct parley_str){r->p.conv, r->p.clen};
		m.event.conv_seq = r->p.conv_seq;
		m.event.sender = (struct parley_str){cm.sender, cm.sender_len};
		memcpy(m.event.client_msg_id, cm.client_msg_id, 16);
		m.event.server_ts_ms = res->entries[0].ts_ms;
		m.event.content_type = cm.content_type;
		m.event.body = (struct parley_bytes){cm.body, cm.body_len};
	} else {
		chat_event_placeholder(&r->p, &m);
	}
	chat_edit_event_state(r->c, &m.event);
	r->cb(r->arg, &m);
	free(r);
}

int chat_event_resolve(struct chat *c, const struct chat_inbox_ptr *p,
		       chat_event_cb cb, void *arg)
{
	char key[CHAT_KEY_CAP];
	int kl = (p->kind == PARLEY_EV_MESSAGE ||
		  p->kind == PARLEY_EV_MEMBERSHIP) && p->clen
			 ? chat_key_conv(key, p->conv, p->clen)
			 : -PARLEY_EINVAL;
	if (kl < 0) {
		struct parley_msg m;
		chat_event_placeholder(p, &m);
		cb(arg, &m);
		return 0;
	}
	struct resolve_ctx *r = malloc(sizeof *r);
	if (!r)
		return -PARLEY_EFULL; /* retried like a full queue */
	r->c = c;
	r->cb = cb;
	r->arg = arg;
	r->p = *p;
	r->linear = 0; /* local first: current on a caught-up node */
	if (resolve_read(c, r, key, kl)) {
		free(r);
		return -PARLEY_EFULL;
	}
	return 0;
}

/* ---- device cursors ------------------------------------------------------------------ */

static void cursor_append_cb(void *arg, const struct pe_append_result *r)
{
	(void)arg;
	if (r->err)
		PLOG_W("chat", "cursor store failed", "err=%s",
		       parley_errname(r->err));
}

int chat_cursor_store(struct chat *c, const char *user, size_t ulen,
		      const char *device, size_t dlen, uint64_t seq)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_cursor(key, user, ulen, device, dlen);
	if (kl < 0)
		return kl;
	uint8_t b[8];
	le_put64(b, seq);
	struct pe_input in = {.type = CHAT_ENT_CURSOR, .len = 8, .payload = b};
	struct pe_append_req q = {.key = key, .klen = (size_t)kl,
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	return chat_append(c, &q, cursor_append_cb, NULL); /* k/: routed */
}
