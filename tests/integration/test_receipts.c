/*
 * test_receipts.c — delivered and read receipts with real parleyd:
 *
 *   1. alice sends 3 messages to bob; bob's phone receives them (and
 *      acknowledges): alice's phone gets a RECEIPT DELIVERED from bob up
 *      to seq 3; then bob reads up to 2 on his phone (READ_MARKER):
 *      alice's phone gets RECEIPT READ up to 2 after the DELIVERED one,
 *      and bob's laptop gets his own read position (sender bob).
 *   2. Unread counts agree across bob's two devices (CONV_LIST from each)
 *      after each marker; a lower marker is ignored (STALE, position
 *      unchanged, not an error); a marker from the laptop raises what the
 *      phone sees.
 *   3. RECEIPTS: alice asks who has received / read each message.
 *   4. Bad input: seq 0, seq beyond the last message, a conversation id
 *      that is not one, a conversation of others, RECEIPTS for seq 0 /
 *      beyond the last: clear errors, the connection stays usable.
 *   5. After a restart (SIGTERM) the positions and counts are the same;
 *      a second marker with the same seq is STALE (stored durably).
 */
#include "itest.h"

struct rec {
	struct it_events ev; /* MESSAGE events */
	int n;               /* RECEIPT events */
	struct {
		char sender[32];
		uint64_t ref;
		uint32_t flags;
	} r[64];
};

static void on_receipt(void *user, const struct parley_event *ev)
{
	struct rec *x = user;
	IT_CHECK(ev->kind == PARLEY_EV_RECEIPT);
	IT_CHECK(ev->conv_seq == 0, "RECEIPT conv_seq %" PRIu64, ev->conv_seq);
	if (x->n == 64)
		return;
	snprintf(x->r[x->n].sender, 32, "%.*s", (int)ev->sender.len,
		 ev->sender.p);
	x->r[x->n].ref = ev->ref_seq;
	x->r[x->n].flags = ev->flags;
	x->n++;
}

static struct parley_client *client(const struct it_server *s,
				    const char *user, const char *device,
				    struct rec *r)
{
	struct parley_client_opts cb = {
		.on_event = it_on_event, .on_receipt = on_receipt, .user = r};
	return it_client_cb(s, user, device, &cb);
}

/* Poll c until a receipt from `from` with these flags up to >= ref is in. */
static int wait_receipt(struct parley_client *c, struct rec *x,
			const char *from, uint32_t flags, uint64_t ref)
{
	for (int ms = 0; ms < 20000; ms += 20) {
		for (int i = 0; i < x->n; i++)
			if (!strcmp(x->r[i].sender, from) &&
			    x->r[i].flags == flags && x->r[i].ref >= ref)
				return i;
		parley_client_poll(c, 20);
	}
	it_fail(__FILE__, __LINE__, "no receipt from %s flags %u ref %" PRIu64,
		from, flags, ref);
}

static const struct parley_conv_entry *entry(struct parley_client *c,
					     const char *conv)
{
	const struct parley_conv_list_ok *l;
	IT_OK(parley_client_conv_list(c, 100, &l));
	for (unsigned i = 0; i < l->count; i++)
		if (parley_str_eq(l->entries[i].conv, conv))
			return &l->entries[i];
	it_fail(__FILE__, __LINE__, "%s not in the list", conv);
}

static void expect_err(int rc, int want, const char *what)
{
	IT_CHECK(rc == -want, "%s: got %s, want %s", what, parley_strerror(rc),
		 parley_strerror(-want));
}

int main(void)
{
	it_init("receipts");
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);
	const char *conv = "d:alice:bob";

	static struct rec ra, rb1, rb2;
	struct parley_client *a = client(&srv, "alice", "a-phone", &ra);
	struct parley_client *b1 = client(&srv, "bob", "b-phone", &rb1);
	struct parley_client *b2 = client(&srv, "bob", "b-laptop", &rb2);
	IT_OK(parley_client_conv_open(a, "bob", NULL));
	IT_OK(parley_client_subscribe(a, 1, NULL));
	IT_OK(parley_client_subscribe(b1, 1, NULL));
	IT_OK(parley_client_subscribe(b2, 1, NULL));

	/* 1. delivered, then read */
	for (int i = 1; i <= 3; i++) {
		char body[32];
		snprintf(body, sizeof body, "hello %d", i);
		IT_OK(parley_client_send(a, conv, PARLEY_CT_TEXT, body,
					 strlen(body), NULL));
	}
	IT_CHECK(it_wait_events(b1, &rb1.ev, 3, 20000) == 3);
	int d = wait_receipt(a, &ra, "bob", PARLEY_RCPTF_DELIVERED, 3);
	uint64_t rs = 0;
	IT_OK(parley_client_read_marker(b1, conv, 2, &rs));
	IT_CHECK(rs == 2, "read_seq %" PRIu64, rs);
	int r = wait_receipt(a, &ra, "bob",
			     PARLEY_RCPTF_READ | PARLEY_RCPTF_DELIVERED, 2);
	IT_CHECK(r > d, "READ (%d) before DELIVERED (%d)", r, d);
	IT_CHECK(ra.r[r].ref == 2);
	/* bob's laptop learns his own position */
	int own = wait_receipt(b2, &rb2, "bob", PARLEY_RCPTF_READ, 2);
	IT_CHECK(rb2.r[own].ref == 2);

	/* 2. unread counts agree across bob's devices */
	const struct parley_conv_entry *e = entry(b1, conv);
	IT_CHECK(e->read_seq == 2 && e->unread == 1,
		 "phone: read %" PRIu64 " unread %u", e->read_seq, e->unread);
	e = entry(b2, conv);
	IT_CHECK(e->read_seq == 2 && e->unread == 1,
		 "laptop: read %" PRIu64 " unread %u", e->read_seq, e->unread);
	IT_CHECK(e->last_seq == 3 && parley_str_eq(e->last_sender, "alice"));
	IT_CHECK(e->preview.len == 7 && !memcmp(e->preview.p, "hello 3", 7));
	/* a lower marker is ignored, not an error */
	IT_OK(parley_client_read_marker(b1, conv, 1, &rs));
	IT_CHECK(rs == 2, "lower marker moved the position to %" PRIu64, rs);
	/* the laptop reads the rest: both devices see 0 unread */
	IT_OK(parley_client_read_marker(b2, conv, 3, &rs));
	IT_CHECK(rs == 3);
	own = wait_receipt(b1, &rb1, "bob", PARLEY_RCPTF_READ, 3);
	e = entry(b1, conv);
	IT_CHECK(e->read_seq == 3 && e->unread == 0);
	e = entry(b2, conv);
	IT_CHECK(e->read_seq == 3 && e->unread == 0);
	/* alice's own messages are not unread for her */
	e = entry(a, conv);
	IT_CHECK(e->read_seq == 0 && e->unread == 0, "alice unread %u", e->unread);
	/* bob answers twice: alice has 2 unread */
	IT_OK(parley_client_send(b1, conv, PARLEY_CT_TEXT, "yo", 2, NULL));
	IT_OK(parley_client_send(b1, conv, PARLEY_CT_TEXT, "there", 5, NULL));
	e = entry(a, conv);
	IT_CHECK(e->last_seq == 5 && e->unread == 2, "alice: last %" PRIu64
		 " unread %u", e->last_seq, e->unread);

	/* 3. who has received / read what */
	const struct parley_receipts_ok *q;
	IT_OK(parley_client_receipts(a, conv, 3, NULL, 100, &q));
	IT_CHECK(q->member_count == 2 && q->count == 2);
	IT_CHECK(q->flags & PARLEY_PAGEF_END);
	IT_CHECK(parley_str_eq(q->recs[0].user, "alice"));
	IT_CHECK(parley_str_eq(q->recs[1].user, "bob"));
	IT_CHECK(q->recs[1].state == (PARLEY_RCPTF_DELIVERED | PARLEY_RCPTF_READ),
		 "bob state %u", q->recs[1].state);
	IT_CHECK(q->recs[1].read_seq == 3 && q->read >= 1);
	/* paged: one member per page */
	IT_OK(parley_client_receipts(a, conv, 3, NULL, 1, &q));
	IT_CHECK(q->count == 1 && !(q->flags & PARLEY_PAGEF_END));
	IT_CHECK(parley_str_eq(q->next_after, "alice"));
	IT_OK(parley_client_receipts(a, conv, 3, "alice", 1, &q));
	IT_CHECK(q->count == 1 && (q->flags & PARLEY_PAGEF_END));
	IT_CHECK(parley_str_eq(q->recs[0].user, "bob"));
	/* message 5 (bob's own, not read by alice yet) */
	IT_OK(parley_client_receipts(b1, conv, 5, NULL, 100, &q));
	IT_CHECK(!(q->recs[0].state & PARLEY_RCPTF_READ), "alice has not read 5");

	/* 4. bad input */
	expect_err(parley_client_read_marker(b1, conv, 6, NULL), PARLEY_EINVAL,
		   "marker beyond the last message");
	expect_err(parley_client_read_marker(b1, "nonsense", 1, NULL),
		   PARLEY_ENOTFOUND, "marker for an unknown conversation");
	expect_err(parley_client_read_marker(b1, "d:bob:zed", 1, NULL),
		   PARLEY_ENOTFOUND, "marker for a conversation never opened");
	expect_err(parley_client_receipts(b1, "d:bob:zed", 1, NULL, 10, NULL),
		   PARLEY_ENOTFOUND, "receipts of a conversation never opened");
	{	/* opened, no message yet: there is no seq to mark */
		IT_OK(parley_client_conv_open(b1, "erin", NULL));
		expect_err(parley_client_read_marker(b1, "d:bob:erin", 1, NULL),
			   PARLEY_EINVAL, "marker in an empty conversation");
	}
	expect_err(parley_client_read_marker(b1, "d:carol:dave", 1, NULL),
		   PARLEY_EPERM, "marker by a non-member");
	expect_err(parley_client_receipts(b1, conv, 99, NULL, 10, NULL),
		   PARLEY_EINVAL, "receipts beyond the last message");
	expect_err(parley_client_receipts(b1, "d:carol:dave", 1, NULL, 10, NULL),
		   PARLEY_EPERM, "receipts by a non-member");
	{	/* seq 0 on the wire (libparley refuses it before sending) */
		int fd = it_tcp_connect(srv.port);
		IT_CHECK(fd >= 0);
		IT_CHECK(it_raw_login(fd, "bob", "raw") == 0);
		struct parley_msg m = {.type = PARLEY_T_READ_MARKER};
		m.read_marker.conv = parley_str_c(conv);
		m.read_marker.seq = 0;
		IT_CHECK(it_send_msg(fd, 7, &m) == 0);
		uint8_t buf[4096];
		struct parley_frame f;
		IT_CHECK(it_read_frame(fd, buf, sizeof buf, 5000, &f) > 0);
		struct parley_msg rm;
		IT_OK(parley_proto_decode(&f, &rm));
		IT_CHECK(f.type == PARLEY_T_ERROR && f.request_id == 7 &&
			 rm.error.code == PARLEY_EINVAL && !(rm.error.flags & PARLEY_ERRF_FATAL),
			 "type %04x", f.type);
		close(fd);
	}
	IT_OK(parley_client_ping(b1)); /* still usable */
	{	/* READ_MARKER requests are counted on /metrics */
		char *t = it_http_get(srv.admin_port, "/metrics", NULL);
		uint64_t n = it_metric(t, "parley_read_markers_total");
		IT_CHECK(n >= 4, "parley_read_markers_total %" PRIu64, n);
		free(t);
	}

	/* the list after an edit and a deletion of the newest message: the
	 * preview follows them, and neither counts as an unread message */
	{
		struct parley_client *f = it_client(&srv, "frank", "f1", 0, NULL);
		struct parley_client *g = it_client(&srv, "gina", "g1", 0, NULL);
		IT_OK(parley_client_conv_open(f, "gina", NULL));
		struct parley_send_result sr;
		IT_OK(parley_client_send(f, "d:frank:gina", PARLEY_CT_TEXT, "helo", 4, NULL));
		IT_OK(parley_client_send(f, "d:frank:gina", PARLEY_CT_TEXT, "typo", 4, &sr));
		IT_OK(parley_client_edit(f, "d:frank:gina", sr.seq, PARLEY_CT_TEXT,
					 "fixed", 5, NULL));
		e = entry(g, "d:frank:gina");
		IT_CHECK(e->unread == 2 && e->last_seq == 3, "after edit: unread %u last %"
			 PRIu64, e->unread, e->last_seq);
		IT_CHECK(e->preview.len == 5 && !memcmp(e->preview.p, "fixed", 5) &&
			 parley_str_eq(e->last_sender, "frank"), "edit preview");
		IT_OK(parley_client_delete(f, "d:frank:gina", sr.seq, NULL));
		e = entry(g, "d:frank:gina");
		IT_CHECK(e->unread == 2 && e->preview.len == 0, "after delete: unread %u "
			 "preview %u", e->unread, e->preview.len);
		IT_OK(parley_client_read_marker(g, "d:frank:gina", 4, NULL));
		IT_CHECK(entry(g, "d:frank:gina")->unread == 0);
		parley_client_free(f);
		parley_client_free(g);
	}

	/* measure (printed, not asserted): engine entries and WAL bytes per
	 * 1:1 message with both sides online and acknowledging, each message
	 * sent and received one at a time (the worst case for acks), and a
	 * READ_MARKER after every 10 messages */
	{
		static struct rec rc, rd;
		struct parley_client *c1 = client(&srv, "carol", "c1", &rc);
		struct parley_client *d1 = client(&srv, "dave", "d1", &rd);
		IT_OK(parley_client_conv_open(c1, "dave", NULL));
		IT_OK(parley_client_subscribe(c1, 1, NULL));
		IT_OK(parley_client_subscribe(d1, 1, NULL));
		char *t = it_http_get(srv.admin_port, "/metrics", NULL);
		uint64_t e0 = it_metric(t, "parley_engine_entries_total");
		uint64_t w0 = it_metric(t, "parley_wal_bytes_total");
		free(t);
		enum { M = 200 };
		for (int i = 1; i <= M; i++) {
			IT_OK(parley_client_send(c1, "d:carol:dave", PARLEY_CT_TEXT,
						 "measure", 7, NULL));
			IT_CHECK(it_wait_events(d1, &rd.ev, (uint64_t)i, 20000) ==
				 (uint64_t)i);
			parley_client_poll(c1, 0);
			if (i % 10 == 0)
				IT_OK(parley_client_read_marker(d1, "d:carol:dave",
								(uint64_t)i, NULL));
		}
		for (int k = 0; k < 20; k++) { /* let the last reports land */
			parley_client_poll(c1, 10);
			parley_client_poll(d1, 10);
		}
		t = it_http_get(srv.admin_port, "/metrics", NULL);
		uint64_t e1 = it_metric(t, "parley_engine_entries_total");
		uint64_t w1 = it_metric(t, "parley_wal_bytes_total");
		free(t);
		printf("receipts: measure: %d messages one at a time, both sides "
		       "acking, a marker every 10: %.2f engine entries and %.0f "
		       "WAL bytes per message (a message without receipts: 3 "
		       "entries); carol got %d receipt events\n", M,
		       (double)(e1 - e0) / M, (double)(w1 - w0) / M, rc.n);
		parley_client_free(c1);
		parley_client_free(d1);
		it_events_free(&rc.ev);
		it_events_free(&rd.ev);
	}

	/* 5. after a restart */
	parley_client_free(a);
	parley_client_free(b1);
	parley_client_free(b2);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	it_server_start(&srv);
	static struct rec rb3;
	b1 = client(&srv, "bob", "b-phone", &rb3);
	e = entry(b1, conv);
	IT_CHECK(e->read_seq == 3 && e->unread == 0 && e->last_seq == 5,
		 "after restart: read %" PRIu64 " unread %u", e->read_seq,
		 e->unread);
	uint64_t again = 0;
	IT_OK(parley_client_read_marker(b1, conv, 3, &again));
	IT_CHECK(again == 3);
	a = client(&srv, "alice", "a-phone", &ra);
	e = entry(a, conv);
	IT_CHECK(e->unread == 2, "alice after restart: %u", e->unread);
	IT_OK(parley_client_read_marker(a, conv, 5, NULL));
	e = entry(a, conv);
	IT_CHECK(e->unread == 0 && e->read_seq == 5);
	parley_client_free(a);
	parley_client_free(b1);
	it_events_free(&ra.ev);
	it_events_free(&rb1.ev);
	it_events_free(&rb2.ev);
	it_events_free(&rb3.ev);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	it_cleanup();
	return 0;
}
