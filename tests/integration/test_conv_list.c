/*
 * test_conv_list.c — CONV_LIST with real parleyd:
 *
 *   1. alice has NPEERS 1:1 conversations; her peers send her random
 *      numbers of messages in a random order. The list is sorted by last
 *      activity (the SEND_ACK times; ties by id), each entry with the
 *      right last seq, last sender, preview and unread count (the peer's
 *      messages; alice's own replies are never unread), and alice's read
 *      markers lower the counts.
 *   2. Paging: pages of 3 concatenate to the full list, each page's
 *      cursor continues exactly after its last entry, the last page has
 *      END.
 *   3. After a restart (SIGTERM, then again after SIGKILL) the same
 *      list, counts and order, from another device too.
 *   4. A cursor naming a conversation that is not in the list still
 *      pages by position; a malformed cursor is a protocol error.
 */
#include "itest.h"

#define NPEERS 7

/* Start parleyd and wait until /readyz says it serves (after kill -9 the
 * listeners are bound before recovery has finished). */
static void start(struct it_server *s)
{
	it_server_start_ready(s);
}

struct conv_want {
	char conv[64], peer[16];
	uint64_t last_seq, last_ts, read_seq;
	uint32_t unread;
	char last_sender[16];
	char body[32];
};

static struct conv_want want[NPEERS];

static int want_cmp(const void *a, const void *b)
{
	const struct conv_want *x = a, *y = b;
	if (x->last_ts != y->last_ts)
		return x->last_ts > y->last_ts ? -1 : 1;
	size_t xl = strlen(x->conv), yl = strlen(y->conv);
	if (xl != yl)
		return xl < yl ? -1 : 1;
	return memcmp(x->conv, y->conv, xl);
}

struct got {
	unsigned n;
	struct conv_want v[NPEERS + 4];
};

static void take(struct got *g, const struct parley_conv_list_ok *l)
{
	for (unsigned i = 0; i < l->count; i++) {
		const struct parley_conv_entry *e = &l->entries[i];
		IT_CHECK(g->n < NPEERS + 4);
		struct conv_want *w = &g->v[g->n++];
		memset(w, 0, sizeof *w);
		snprintf(w->conv, sizeof w->conv, "%.*s", (int)e->conv.len, e->conv.p);
		snprintf(w->peer, sizeof w->peer, "%.*s", (int)e->peer.len, e->peer.p);
		snprintf(w->last_sender, sizeof w->last_sender, "%.*s",
			 (int)e->last_sender.len, e->last_sender.p);
		snprintf(w->body, sizeof w->body, "%.*s", (int)e->preview.len,
			 (const char *)e->preview.p);
		w->last_seq = e->last_seq;
		w->last_ts = e->last_ts_ms;
		w->read_seq = e->read_seq;
		w->unread = e->unread;
		IT_CHECK(e->kind == PARLEY_CONV_DIRECT && e->member_count == 2);
		IT_CHECK(e->last_content_type == PARLEY_CT_TEXT);
	}
}

static void check_list(struct parley_client *c, const char *who)
{
	struct got full = {0};
	const struct parley_conv_list_ok *l;
	IT_OK(parley_client_conv_list(c, 100, &l));
	IT_CHECK(l->flags & PARLEY_PAGEF_END, "%s: one page is all", who);
	take(&full, l);
	IT_CHECK(full.n == NPEERS, "%s: %u conversations", who, full.n);
	for (unsigned i = 0; i < NPEERS; i++) {
		const struct conv_want *w = &want[i], *g = &full.v[i];
		IT_CHECK(!strcmp(g->conv, w->conv), "%s: #%u is %s, want %s", who,
			 i, g->conv, w->conv);
		IT_CHECK(!strcmp(g->peer, w->peer));
		IT_CHECK(g->last_seq == w->last_seq && g->last_ts == w->last_ts,
			 "%s: %s last %" PRIu64 "@%" PRIu64 " want %" PRIu64
			 "@%" PRIu64, who, g->conv, g->last_seq, g->last_ts,
			 w->last_seq, w->last_ts);
		IT_CHECK(!strcmp(g->last_sender, w->last_sender));
		IT_CHECK(!strcmp(g->body, w->body), "%s: preview %s want %s", who,
			 g->body, w->body);
		IT_CHECK(g->read_seq == w->read_seq && g->unread == w->unread,
			 "%s: %s read %" PRIu64 " unread %u, want %" PRIu64 " %u",
			 who, g->conv, g->read_seq, g->unread, w->read_seq,
			 w->unread);
	}
	/* pages of 3 give the same list */
	struct got paged = {0};
	uint64_t bts = 0;
	char bconv[256] = "";
	for (int pages = 1;; pages++) {
		IT_CHECK(pages <= 4, "%s: too many pages", who);
		IT_OK(parley_client_conv_list_page(c, 3, bts, bconv, &l));
		take(&paged, l);
		if (l->flags & PARLEY_PAGEF_END) {
			IT_CHECK(pages == (NPEERS + 2) / 3, "%s: %d pages", who, pages);
			break;
		}
		IT_CHECK(l->count == 3);
		bts = l->next_before_ts_ms;
		snprintf(bconv, sizeof bconv, "%.*s", (int)l->next_before_conv.len,
			 l->next_before_conv.p);
		IT_CHECK(!strcmp(bconv, paged.v[paged.n - 1].conv));
	}
	IT_CHECK(paged.n == NPEERS);
	for (unsigned i = 0; i < NPEERS; i++)
		IT_CHECK(!strcmp(paged.v[i].conv, full.v[i].conv) &&
			 paged.v[i].unread == full.v[i].unread,
			 "%s: paged #%u %s vs %s", who, i, paged.v[i].conv,
			 full.v[i].conv);
}

int main(void)
{
	it_init("conv_list");
	struct it_server srv;
	it_server_init(&srv, "s1");
	start(&srv);

	struct parley_client *alice = it_client(&srv, "alice", "a1", 0, NULL);
	struct parley_client *peer[NPEERS];
	for (int i = 0; i < NPEERS; i++) {
		struct conv_want *w = &want[i];
		snprintf(w->peer, sizeof w->peer, "p%d", i);
		snprintf(w->conv, sizeof w->conv, "d:alice:p%d", i);
		peer[i] = it_client(&srv, w->peer, "d", 0, NULL);
		const struct parley_conv *cv;
		IT_OK(parley_client_conv_open(peer[i], "alice", &cv));
		IT_CHECK(parley_str_eq(cv->conv, w->conv));
	}
	/* random traffic: each step a random peer (or alice answering) */
	int steps = 30 + (int)parley_rng_below(&it_rng, 20);
	for (int s = 0; s < steps; s++) {
		int i = (int)parley_rng_below(&it_rng, NPEERS);
		struct conv_want *w = &want[i];
		bool mine = parley_rng_below(&it_rng, 4) == 0;
		char body[32];
		snprintf(body, sizeof body, "%s says %d", mine ? "alice" : w->peer, s);
		struct parley_send_result r;
		IT_OK(parley_client_send(mine ? alice : peer[i], w->conv,
					 PARLEY_CT_TEXT, body, strlen(body), &r));
		w->last_seq = r.seq;
		w->last_ts = r.server_ts_ms;
		const char *who = mine ? "alice" : w->peer;
		memcpy(w->last_sender, who, strlen(who) + 1);
		snprintf(w->body, sizeof w->body, "%s", body);
		if (!mine)
			w->unread++;
		if (mine && parley_rng_below(&it_rng, 2)) {
			/* she read everything up to her reply */
			uint64_t rs;
			IT_OK(parley_client_read_marker(alice, w->conv, r.seq, &rs));
			IT_CHECK(rs == r.seq);
			w->read_seq = r.seq;
			w->unread = 0;
		}
	}
	/* a conversation without messages sorts by when it was opened, and
	 * every peer has at least one message here: give each one */
	for (int i = 0; i < NPEERS; i++) {
		struct conv_want *w = &want[i];
		if (w->last_seq)
			continue;
		struct parley_send_result r;
		IT_OK(parley_client_send(peer[i], w->conv, PARLEY_CT_TEXT, "hi", 2,
					 &r));
		w->last_seq = r.seq;
		w->last_ts = r.server_ts_ms;
		memcpy(w->last_sender, w->peer, strlen(w->peer) + 1);
		snprintf(w->body, sizeof w->body, "hi");
		w->unread++;
	}
	qsort(want, NPEERS, sizeof want[0], want_cmp);
	check_list(alice, "alice");

	/* 4. a cursor of a conversation that is not in the list pages by
	 * position: after (ts of #2, "d:alice:zzz") comes #3 or later */
	const struct parley_conv_list_ok *l;
	IT_OK(parley_client_conv_list_page(alice, 100, want[2].last_ts,
					   "d:alice:zzz", &l));
	IT_CHECK(l->count >= 1 && l->count <= NPEERS - 3);
	IT_CHECK(l->entries[0].last_ts_ms < want[2].last_ts ||
		 (l->entries[0].last_ts_ms == want[2].last_ts &&
		  l->entries[0].conv.len > 11));
	{	/* malformed cursor: invalid UTF-8 in before_conv */
		int fd = it_tcp_connect(srv.port);
		IT_CHECK(fd >= 0 && it_raw_login(fd, "alice", "raw") == 0);
		uint8_t f[12 + 2 + 8 + 2 + 2];
		parley_proto_header_put(f, PARLEY_T_CONV_LIST, 0, 9, 14);
		le_put16(f + 12, 10);
		le_put64(f + 14, 5);
		le_put16(f + 22, 2);
		f[24] = 0xff;
		f[25] = 0xfe;
		IT_CHECK(it_write_all(fd, f, sizeof f) == 0);
		uint8_t buf[4096];
		struct parley_frame fr;
		IT_CHECK(it_read_frame(fd, buf, sizeof buf, 5000, &fr) > 0);
		struct parley_msg rm;
		IT_OK(parley_proto_decode(&fr, &rm));
		IT_CHECK(fr.type == PARLEY_T_ERROR && fr.request_id == 9 &&
			 rm.error.code == PARLEY_EPROTO);
		close(fd);
	}

	/* 3. restarts: graceful, then kill -9 */
	parley_client_free(alice);
	for (int i = 0; i < NPEERS; i++)
		parley_client_free(peer[i]);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	start(&srv);
	alice = it_client(&srv, "alice", "a2", 0, NULL);
	check_list(alice, "alice after restart");
	parley_client_free(alice);
	it_server_kill(&srv);
	start(&srv);
	alice = it_client(&srv, "alice", "a1", 0, NULL);
	check_list(alice, "alice after kill -9");
	parley_client_free(alice);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	it_cleanup();
	return 0;
}
