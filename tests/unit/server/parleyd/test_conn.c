/*
 * test_conn.c — unit tests for server/conn.c, the connection state
 * machine, against a fake loop (conn_fx.h: it implements loop_conn.h's
 * loop side, so loop.c is not linked) and the chat service on the
 * in-memory engine. The request handlers' own cases (conn_req*.c) are
 * test_conn_req.c's.
 *
 * What is proven: the handshake order (HELLO first, AUTH before
 * requests, fatal errors close after the flush), a frame fed one byte at
 * a time parses like a whole one, the pre-auth frame limit, the frame and
 * handshake timeouts, SEND -> SEND_ACK through the chat service, SYNC ->
 * SYNC_OK -> EVENTs in inbox order with the event window honoured, the
 * max_inflight bound, a slow consumer cut off with GOAWAY, and early
 * delivery's rules (E1-E3 in conn.c): per conversation an early EVENT
 * goes out only after the previous seq did, waits in a bounded hold
 * otherwise, the inbox EVENT of a message sent early goes out without
 * its body, and only connections that asked get early EVENTs.
 */
#include "conn_fx.h"
#include "errmap.h"
#include "live.h"

/* ---- handshake ------------------------------------------------------------------------ */

Test(conn, hello_must_come_first)
{
	struct fx f;
	fx_start(&f, false, 1);
	struct parley_msg *m = msg_new(PARLEY_T_PING);
	m->ping.nonce = 5;
	fx_feed(&f, 1, m, false);
	expect_error(&f, PARLEY_EPROTO, true);
	cr_assert(conn_sock(f.c)->closing, "closed once the ERROR is flushed");
	cr_assert_str_eq(f.lp.closed_why, "closed after fatal error");
	free(m);
	fx_stop(&f);
}

Test(conn, requests_need_auth_and_bad_tokens_are_fatal)
{
	struct fx f;
	fx_start(&f, false, 2);
	fx_hello(&f, "phone");
	struct parley_msg *m = msg_new(PARLEY_T_CONV_LIST);
	m->conv_list.limit = 10;
	fx_feed(&f, 5, m, false);
	expect_error(&f, PARLEY_EAUTH, false);
	/* PING is fine before AUTH */
	*m = (struct parley_msg){.type = PARLEY_T_PING, .ping.nonce = 42};
	fx_feed(&f, 6, m, false);
	uint32_t rid;
	cr_assert(fx_next(&f, m, &rid));
	cr_assert_eq(m->type, PARLEY_T_PONG);
	cr_assert_eq(m->pong.nonce, 42);
	cr_assert_eq(rid, 6);
	/* a bad token: fatal */
	*m = (struct parley_msg){.type = PARLEY_T_AUTH};
	m->auth.token = parley_str_c("evil");
	fx_feed(&f, 7, m, false);
	expect_error(&f, PARLEY_EAUTH, true);
	cr_assert(conn_sock(f.c)->closing);
	free(m);
	fx_stop(&f);
}

Test(conn, a_trickled_frame_parses_like_a_whole_one)
{
	struct fx f;
	fx_start(&f, false, 3);
	struct parley_msg *m = msg_new(PARLEY_T_HELLO);
	m->hello.min_version = m->hello.max_version = PARLEY_PROTO_VERSION;
	m->hello.device_id = parley_str_c("phone");
	fx_feed(&f, 1, m, true);
	cr_assert(fx_next(&f, m, NULL));
	cr_assert_eq(m->type, PARLEY_T_HELLO_OK);
	*m = (struct parley_msg){.type = PARLEY_T_AUTH};
	m->auth.token = parley_str_c("good:alice");
	fx_feed(&f, 2, m, true);
	cr_assert(fx_next(&f, m, NULL));
	cr_assert_eq(m->type, PARLEY_T_AUTH_OK);
	free(m);
	fx_stop(&f);
}

Test(conn, preauth_frame_limit_is_checked_on_the_header)
{
	struct fx f;
	fx_start(&f, false, 4);
	uint8_t hdr[PARLEY_PROTO_HEADER_SIZE];
	parley_proto_header_put(hdr, PARLEY_T_HELLO, 0, 1,
				f.s.lim.preauth_max_frame); /* body never sent */
	conn_on_recv(f.c, hdr, sizeof hdr);
	expect_error(&f, PARLEY_ETOOBIG, true);
	cr_assert_eq(atomic_load(&f.s.ctr.preauth_too_big), 1);
	fx_stop(&f);
}

Test(conn, partial_frame_and_handshake_timeouts)
{
	struct fx f;
	fx_start(&f, false, 5);
	uint8_t half[6] = {40, 0, 0, 0, 1, 0}; /* a frame of 44 bytes, started */
	conn_on_recv(f.c, half, sizeof half);
	fx_flush(&f);
	cr_assert_eq(f.olen, 0);
	uint64_t now = parley_mono_ns();
	conn_tick(f.c, now + 500ull * 1000000, parley_now_ms());
	fx_flush(&f);
	cr_assert_eq(f.olen, 0, "within frame_timeout_ms: nothing happens");
	conn_tick(f.c, now + 1500ull * 1000000, parley_now_ms());
	expect_error(&f, PARLEY_ETIMEDOUT, true);
	cr_assert_eq(atomic_load(&f.s.ctr.frame_timeouts), 1);
	fx_stop(&f);

	fx_start(&f, false, 6);
	fx_hello(&f, "phone"); /* HELLO but never AUTH */
	conn_tick(f.c, parley_mono_ns() + 6000ull * 1000000, parley_now_ms());
	cr_assert(conn_sock(f.c)->closing);
	cr_assert_str_eq(f.lp.closed_why, "handshake timeout");
	fx_stop(&f);
}

/* ---- requests through the chat service ------------------------------------------------ */

Test(conn, send_is_acked_after_the_chat_service_answers)
{
	struct fx f;
	fx_alice(&f, 7, 0);
	fx_send(&f, 10, "d:alice:bob", 1);
	struct parley_msg *m = msg_new(0);
	cr_assert(!fx_next(&f, m, NULL), "no ACK before the engine answered");
	cr_assert_eq(f.c->inflight, 1);
	cr_assert_geq(fx_pump(&f, 1), 1);
	uint32_t rid;
	cr_assert(fx_next(&f, m, &rid));
	cr_assert_eq(m->type, PARLEY_T_SEND_ACK);
	cr_assert_eq(rid, 10);
	cr_assert_eq(m->send_ack.seq, 1);
	cr_assert_eq(f.c->inflight, 0);
	cr_assert_eq(atomic_load(&f.s.ctr.appends), 1);
	/* each send stage saw this SEND once (srv.h, /metrics) */
	char *txt = stage_text(&f);
	for (int k = 0; k < 4; k++) {
		static const char *st[4] = {"recv", "submit", "durable", "reply"};
		char want[96];
		snprintf(want, sizeof want,
			 "parley_send_stage_seconds_count{stage=\"%s\"} 1\n", st[k]);
		cr_assert(strstr(txt, want), "no \"%s\" in\n%s", want, txt);
	}
	free(txt);
	/* not a member */
	fx_send(&f, 11, "d:bob:carol", 2);
	expect_error(&f, PARLEY_EPERM, false);
	free(m);
	fx_stop(&f);
}

Test(conn, max_inflight_is_enforced)
{
	struct fx f;
	fx_alice(&f, 8, 0);
	for (int i = 1; i <= 5; i++) /* max_inflight 4: the fifth is refused */
		fx_send(&f, (uint32_t)(10 + i), "d:alice:bob", i);
	{
		/* FULL, with the error table's retry_after like every FULL */
		struct parley_msg *e = msg_new(0);
		cr_assert(fx_next(&f, e, NULL));
		cr_assert_eq(e->type, PARLEY_T_ERROR);
		cr_assert_eq(e->error.code, PARLEY_EFULL);
		cr_assert_not(e->error.flags & PARLEY_ERRF_FATAL);
		cr_assert_eq(e->error.retry_after_ms,
			     srv_wire_err(-PARLEY_EFULL).retry_after_ms);
		free(e);
	}
	fx_pump(&f, 4);
	struct parley_msg *m = msg_new(0);
	int acks = 0;
	while (fx_next(&f, m, NULL))
		acks += m->type == PARLEY_T_SEND_ACK;
	cr_assert_eq(acks, 4);
	free(m);
	fx_stop(&f);
}

Test(conn, sync_delivers_events_in_order_within_the_window)
{
	struct fx f;
	fx_start(&f, true, 9);
	cr_assert_eq(svc_open(f.w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 10; i++)
		svc_send(f.w.c, "d:alice:bob", "bob", i);
	wait_inbox(&f.w, "alice", 10);
	fx_login(&f);
	struct parley_msg *m = msg_new(PARLEY_T_SYNC);
	m->sync.from_inbox_seq = 1;
	fx_feed(&f, 20, m, false);
	uint64_t next = 1;
	bool sync_ok = false;
	/* the window is 4: without acks, four EVENTs at most */
	for (int round = 0; round < 50 && next <= 4; round++) {
		fx_pump(&f, 1);
		while (fx_next(&f, m, NULL)) {
			if (m->type == PARLEY_T_SYNC_OK) {
				cr_assert(!sync_ok);
				cr_assert_eq(next, 1, "SYNC_OK before the first EVENT");
				cr_assert_eq(m->sync_ok.start_inbox_seq, 1);
				cr_assert_eq(m->sync_ok.last_inbox_seq, 10);
				sync_ok = true;
				continue;
			}
			cr_assert_eq(m->type, PARLEY_T_EVENT);
			cr_assert_eq(m->event.inbox_seq, next, "inbox order, no gap");
			cr_assert_eq(m->event.conv_seq, next);
			cr_assert_eq(m->event.kind, PARLEY_EV_MESSAGE);
			next++;
		}
	}
	cr_assert(sync_ok);
	cr_assert_eq(next, 5);
	fx_pump(&f, 0);
	cr_assert(!fx_next(&f, m, NULL), "past the event window");
	/* acknowledging opens the window again */
	*m = (struct parley_msg){.type = PARLEY_T_EVENT_ACK};
	m->event_ack.up_to_inbox_seq = 4;
	fx_feed(&f, 0, m, false);
	for (int round = 0; round < 50 && next <= 8; round++) {
		fx_pump(&f, 1);
		while (fx_next(&f, m, NULL)) {
			cr_assert_eq(m->type, PARLEY_T_EVENT);
			cr_assert_eq(m->event.inbox_seq, next);
			next++;
		}
	}
	cr_assert_eq(next, 9);
	/* the delivery stages timed these events (the fan-out ran before SYNC) */
	cr_assert_eq(atomic_load(&f.s.ctr.events_out), 8);
	char *txt = stage_text(&f);
	cr_assert(strstr(txt, "parley_delivery_stage_seconds_count{stage=\"fanout\"} 10\n"),
		  "%s", txt);
	/* inline pointers: no event needed a read */
	cr_assert(strstr(txt, "parley_delivery_stage_seconds_count{stage=\"resolve\"} 0\n"),
		  "%s", txt);
	cr_assert(!strstr(txt, "parley_delivery_stage_seconds_count{stage=\"notify\"} 0\n"),
		  "%s", txt);
	free(txt);
	/* an ack beyond what was sent is refused */
	*m = (struct parley_msg){.type = PARLEY_T_EVENT_ACK};
	m->event_ack.up_to_inbox_seq = 99;
	fx_feed(&f, 0, m, false);
	expect_error(&f, PARLEY_EINVAL, false);
	free(m);
	fx_stop(&f);
}

Test(conn, a_slow_consumer_is_cut_off)
{
	struct fx f;
	fx_start(&f, false, 10);
	f.s.lim.max_outbound = 256;
	f.s.lim.max_frame = 64;
	fx_login(&f);
	/* the client never reads: PONGs pile up past max_outbound + max_frame */
	struct parley_msg *m = msg_new(PARLEY_T_PING);
	for (int i = 0; i < 40 && !conn_sock(f.c)->closing &&
			f.c->goaway_reason != PARLEY_GOAWAY_SLOW_CONSUMER; i++) {
		m->ping.nonce = (uint64_t)i;
		fx_feed(&f, (uint32_t)(100 + i), m, false);
	}
	cr_assert_eq(f.c->goaway_reason, PARLEY_GOAWAY_SLOW_CONSUMER);
	cr_assert_eq(atomic_load(&f.s.ctr.slow_consumers), 1);
	bool goaway = false;
	while (fx_next(&f, m, NULL))
		if (m->type == PARLEY_T_GOAWAY) {
			cr_assert_eq(m->goaway.reason, PARLEY_GOAWAY_SLOW_CONSUMER);
			goaway = true;
		}
	cr_assert(goaway, "GOAWAY SLOW_CONSUMER on the wire");
	cr_assert(conn_sock(f.c)->closing, "closed once flushed");
	free(m);
	fx_stop(&f);
}

/* Appends one entry to key (blocking). */
static void raw_append(struct fx *f, const char *key, uint16_t type,
		       const uint8_t *p, uint32_t len)
{
	struct pe_input in = {.type = type, .len = len, .payload = p};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(f->w.e, &q, &r), 0);
}

/* Inbox pointers of the first version (no message inline: what a server
 * before inline pointers, or the fan-out recovery, wrote) are resolved by
 * a read; the live ones after them come ready. Delivery stays in inbox
 * order across both, within the window. */
Test(conn, old_and_inline_pointers_deliver_in_order)
{
	struct fx f;
	fx_start(&f, true, 11);
	const char *conv = "d:alice:bob";
	cr_assert_eq(svc_open(f.w.c, "alice", "bob", NULL), 0);
	for (int i = 1; i <= 3; i++) {
		char body[16];
		snprintf(body, sizeof body, "m%d", i);
		struct chat_msg cm = {.sender = "bob", .sender_len = 3,
				      .body = (const uint8_t *)body,
				      .body_len = (uint32_t)strlen(body)};
		cm.client_msg_id[0] = (uint8_t)i;
		uint8_t rec[64];
		int n = chat_msg_encode(rec, sizeof rec, &cm);
		raw_append(&f, "c/d:alice:bob", CHAT_ENT_MSG, rec, (uint32_t)n);
		struct chat_ptr p = {.kind = PARLEY_EV_MESSAGE, .conv = conv,
				     .conv_len = 11, .conv_seq = (uint64_t)i};
		uint8_t pb[64];
		n = chat_ptr_encode(pb, sizeof pb, &p);
		cr_assert_eq(pb[0], 1, "a version 1 pointer");
		raw_append(&f, "u/alice", CHAT_ENT_PTR, pb, (uint32_t)n);
	}
	for (int i = 4; i <= 6; i++)
		cr_assert_eq(svc_send(f.w.c, conv, "bob", i), (uint64_t)i);
	wait_inbox(&f.w, "alice", 6);
	fx_login(&f);
	struct parley_msg *m = msg_new(PARLEY_T_SYNC);
	m->sync.from_inbox_seq = 1;
	fx_feed(&f, 20, m, false);
	uint64_t next = 1;
	for (int round = 0; round < 200 && next <= 6; round++) {
		fx_pump(&f, 1);
		while (fx_next(&f, m, NULL)) {
			if (m->type == PARLEY_T_SYNC_OK)
				continue;
			cr_assert_eq(m->type, PARLEY_T_EVENT);
			cr_assert_eq(m->event.inbox_seq, next, "inbox order, no gap");
			cr_assert_eq(m->event.conv_seq, next);
			cr_assert_eq(m->event.kind, PARLEY_EV_MESSAGE);
			char want[16];
			snprintf(want, sizeof want, "m%d", (int)next);
			cr_assert_eq(m->event.body.len, strlen(want));
			cr_assert(!memcmp(m->event.body.p, want, strlen(want)));
			cr_assert_eq(m->event.client_msg_id[0], (uint8_t)next);
			next++;
		}
		if (next == 5) { /* window 4 reached: acknowledge */
			struct parley_msg *a = msg_new(PARLEY_T_EVENT_ACK);
			a->event_ack.up_to_inbox_seq = 4;
			fx_feed(&f, 0, a, false);
			free(a);
		}
	}
	cr_assert_eq(next, 7);
	char *txt = stage_text(&f);
	/* three reads, and event 4 (ready) waited in the stash behind them;
	 * 5 and 6 went out directly after the ack */
	cr_assert(strstr(txt, "parley_delivery_stage_seconds_count{stage=\"resolve\"} 4\n"),
		  "%s", txt);
	free(txt);
	free(m);
	fx_stop(&f);
}

/* HISTORY and CONV_LIST go through the chat service and come back as
 * ready pages; refusals are answered at once without a request in flight. */
Test(conn, history_and_conv_list_through_the_service)
{
	struct fx f;
	fx_alice(&f, 12, 3);
	struct parley_msg *m = msg_new(PARLEY_T_HISTORY);
	m->history.conv = parley_str_c("d:bob:carol");
	m->history.limit = 10;
	fx_feed(&f, 30, m, false);
	expect_error(&f, PARLEY_EPERM, false);
	cr_assert_eq(f.c->inflight, 0);
	*m = (struct parley_msg){.type = PARLEY_T_HISTORY};
	m->history.conv = parley_str_c("d:alice:bob");
	m->history.limit = 10;
	fx_feed(&f, 31, m, false);
	cr_assert_eq(f.c->inflight, 1);
	fx_pump(&f, 1);
	uint32_t rid;
	cr_assert(fx_next(&f, m, &rid));
	cr_assert_eq(rid, 31);
	cr_assert_eq(m->type, PARLEY_T_HISTORY_PAGE);
	cr_assert_eq(m->history_page.count, 3);
	cr_assert_eq(m->history_page.msgs[0].seq, 3);
	cr_assert(m->history_page.flags & PARLEY_HISTF_END);
	cr_assert_eq(f.c->inflight, 0);
	/* nothing older than seq 1: answered without a read, still as a reply */
	*m = (struct parley_msg){.type = PARLEY_T_HISTORY};
	m->history.conv = parley_str_c("d:alice:bob");
	m->history.before_seq = 1;
	m->history.limit = 10;
	fx_feed(&f, 32, m, false);
	fx_pump(&f, 1);
	cr_assert(fx_next(&f, m, &rid));
	cr_assert_eq(rid, 32);
	cr_assert_eq(m->history_page.count, 0);
	cr_assert_eq(f.c->inflight, 0);
	*m = (struct parley_msg){.type = PARLEY_T_CONV_LIST};
	m->conv_list.limit = 10;
	fx_feed(&f, 33, m, false);
	fx_pump(&f, 1);
	cr_assert(fx_next(&f, m, &rid));
	cr_assert_eq(rid, 33);
	cr_assert_eq(m->type, PARLEY_T_CONV_LIST_OK);
	cr_assert_eq(m->conv_list_ok.count, 1);
	cr_assert_eq(m->conv_list_ok.entries[0].last_seq, 3);
	cr_assert_eq(m->conv_list_ok.entries[0].peer.len, 3);
	cr_assert_eq(atomic_load(&f.s.ctr.history), 2);
	free(m);
	fx_stop(&f);
}

/* ---- allocation failure (docs/SERVER.md, "Errors and allocation failure") ---- */

/* Feeds request m (as request id rid) with the k-th allocation of this
 * (the loop's) thread failing, for k = 1, 2, ... until a run in which no
 * allocation failed. Each run must end in one of the policy's outcomes:
 *   - the reply (ok_type), or ERROR NOMEM (retry_after SRV_NOMEM_RETRY_MS)
 *     / FULL with a retry_after, and
 *     the connection stays open and takes the next request;
 *   - the connection closed "out of memory" (what failed was the
 *     connection's own outbound buffer: nothing can be answered on it).
 * The process never aborts. Returns how many runs had a failure. */
static unsigned nomem_sweep(struct fx *f, const char *user,
			    const struct parley_msg *m, uint16_t ok_type,
			    bool sticky)
{
	nomem_sticky = sticky;
	unsigned closed = 0;
	uint8_t buf[4096];
	unsigned runs = 0;
	for (unsigned k = 1; k < 200; k++) {
		uint32_t rid = 100 + k;
		int n = parley_proto_encode(buf, sizeof buf, rid, m);
		cr_assert_gt(n, 0);
		nomem_at = k;
		nomem_seen = 0;
		nomem_failed = false;
		conn_on_recv(f->c, buf, (uint32_t)n);
		nomem_at = 0;
		bool failed = nomem_failed;
		struct parley_msg *r = msg_new(0);
		uint32_t got = 0;
		bool have = false;
		for (int tries = 0; tries < 3 && !have; tries++) {
			if (conn_sock(f->c)->closing)
				break;
			have = fx_next(f, r, &got);
			if (!have)
				fx_pump(f, 1);
		}
		if (conn_sock(f->c)->closing) {
			cr_assert(failed, "k=%u: closed (%s) without a failure", k,
				  f->lp.closed_why);
			cr_assert_str_eq(f->lp.closed_why, "out of memory",
					 "k=%u: closed: %s", k, f->lp.closed_why);
			fx_reconnect(f, user);
			closed++;
		} else {
			cr_assert(have, "k=%u: no answer to request %u", k, rid);
			cr_assert_eq(got, rid, "k=%u: answer to %u, want %u", k,
				     got, rid);
			if (r->type == PARLEY_T_ERROR) {
				cr_assert(failed, "k=%u: ERROR %u without a failure",
					  k, r->error.code);
				cr_assert(r->error.code == PARLEY_ENOMEM ||
					  r->error.code == PARLEY_EFULL,
					  "k=%u: ERROR %u (%.*s), want NOMEM", k,
					  r->error.code, (int)r->error.text.len,
					  r->error.text.p);
				cr_assert_gt(r->error.retry_after_ms, 0,
					     "type %#x k=%u: ERROR %u (%.*s) without retry_after", m->type,
					     k, r->error.code, (int)r->error.text.len,
					     r->error.text.p);
				/* one retry_after for every NOMEM (errmap.h) */
				if (r->error.code == PARLEY_ENOMEM)
					cr_assert_eq(r->error.retry_after_ms,
						     SRV_NOMEM_RETRY_MS,
						     "type %#x k=%u: NOMEM retry_after %u, want %u",
						     m->type, k,
						     r->error.retry_after_ms,
						     SRV_NOMEM_RETRY_MS);
				/* and one for every FULL: the table's */
				if (r->error.code == PARLEY_EFULL)
					cr_assert_eq(r->error.retry_after_ms,
						     srv_wire_err(-PARLEY_EFULL).retry_after_ms,
						     "type %#x k=%u: FULL retry_after %u",
						     m->type, k,
						     r->error.retry_after_ms);
				cr_assert(!(r->error.flags & PARLEY_ERRF_FATAL));
			} else {
				cr_assert_eq(r->type, ok_type, "k=%u: type %#x", k,
					     r->type);
			}
			cr_assert_eq(f->c->inflight, 0, "k=%u", k);
		}
		free(r);
		if (!failed) {
			/* the request needed fewer than k allocations; with
			 * every allocation failing from k on, some run could
			 * not even queue its answer */
			cr_assert(!sticky || closed > 0,
				  "type %#x: no run closed the connection", m->type);
			return runs;
		}
		runs++;
	}
	cr_assert_fail("a request that allocates 200 times?");
	return runs;
}

Test(conn, allocation_failure_answers_nomem_or_closes_only_the_connection)
{
	struct fx f;
	fx_alice(&f, 13, 1);
	struct parley_msg *m = msg_new(PARLEY_T_SEND);
	m->send.conv = parley_str_c("d:alice:bob");
	m->send.content_type = 1;
	m->send.body = (struct parley_bytes){(const uint8_t *)"hi", 2};
	unsigned sends = nomem_sweep(&f, "alice", m, PARLEY_T_SEND_ACK, false);
	*m = (struct parley_msg){.type = PARLEY_T_HISTORY};
	m->history.conv = parley_str_c("d:alice:bob");
	m->history.limit = 10;
	unsigned hist = nomem_sweep(&f, "alice", m, PARLEY_T_HISTORY_PAGE, false);
	*m = (struct parley_msg){.type = PARLEY_T_CONV_LIST};
	m->conv_list.limit = 10;
	unsigned list = nomem_sweep(&f, "alice", m, PARLEY_T_CONV_LIST_OK, false);
	*m = (struct parley_msg){.type = PARLEY_T_CONV_OPEN};
	m->conv_open.peer = parley_str_c("carol");
	unsigned open = nomem_sweep(&f, "alice", m, PARLEY_T_CONV, false);
	cr_log_info("allocations failed: SEND %u, HISTORY %u, CONV_LIST %u, "
		    "CONV_OPEN %u", sends, hist, list, open);
	cr_assert_gt(sends, 0, "the sweep must reach SEND's allocations");
	cr_assert_gt(hist, 0);
	cr_assert_gt(list, 0);
	cr_assert_gt(open, 0);
	/* every allocation failing from the k-th on: the answer itself
	 * cannot be queued, so the connection closes (and only it) */
	*m = (struct parley_msg){.type = PARLEY_T_SEND};
	m->send.conv = parley_str_c("d:alice:bob");
	m->send.client_msg_id[0] = 1;
	m->send.content_type = 1;
	m->send.body = (struct parley_bytes){(const uint8_t *)"yo", 2};
	cr_assert_gt(nomem_sweep(&f, "alice", m, PARLEY_T_SEND_ACK, true), 0);
	*m = (struct parley_msg){.type = PARLEY_T_HISTORY};
	m->history.conv = parley_str_c("d:alice:bob");
	m->history.limit = 10;
	cr_assert_gt(nomem_sweep(&f, "alice", m, PARLEY_T_HISTORY_PAGE, true), 0);
	free(m);
	fx_stop(&f);
}

Test(conn, a_partial_frame_that_cannot_be_kept_is_a_fatal_nomem)
{
	struct fx f;
	fx_start(&f, false, 14);
	fx_hello(&f, "phone");
	struct parley_msg *m = msg_new(PARLEY_T_PING);
	m->ping.nonce = 9;
	uint8_t buf[64];
	int n = parley_proto_encode(buf, sizeof buf, 5, m);
	cr_assert_gt(n, 6);
	nomem_at = 1; /* the first allocation: the partial frame's buffer */
	nomem_seen = 0;
	nomem_failed = false;
	conn_on_recv(f.c, buf, 6);
	nomem_at = 0;
	cr_assert(nomem_failed);
	expect_error(&f, PARLEY_ENOMEM, true);
	cr_assert(conn_sock(f.c)->closing);
	free(m);
	fx_stop(&f);
}

/* ---- early delivery (conn.c "Early delivery", E1-E3) -------------------------------- */

/* An EVENT frame of MESSAGE (conv, conv_seq) at inbox_seq (0: early). */
static int early_frame(uint8_t *buf, size_t cap, uint64_t inbox_seq,
		       const char *conv, uint64_t conv_seq, uint16_t kind,
		       uint32_t flags)
{
	static struct parley_msg m;
	memset(&m, 0, sizeof m);
	m.type = PARLEY_T_EVENT;
	m.event.inbox_seq = inbox_seq;
	m.event.kind = kind;
	m.event.conv = parley_str_c(conv);
	m.event.conv_seq = conv_seq;
	m.event.sender = parley_str_c("bob");
	m.event.client_msg_id[0] = (uint8_t)conv_seq;
	m.event.body = (struct parley_bytes){(const uint8_t *)"hello body", 10};
	m.event.flags = flags;
	int n = parley_proto_encode(buf, cap, 0, &m);
	cr_assert_gt(n, 0);
	return n;
}

/* The chat service's early post, as live_post_early makes it. */
static void inject_early(struct fx *f, const char *conv, uint64_t seq)
{
	uint8_t b[512];
	int n = early_frame(b, sizeof b, 0, conv, seq, PARLEY_EV_MESSAGE,
			    PARLEY_MSGF_EARLY);
	struct lmsg *m = lmsg_new(LM_EARLY, (uint32_t)n);
	memcpy(m->data, b, (size_t)n);
	m->u.early.pos = (struct lm_conv_pos){
		.conv_h = lm_conv_hash(conv, strlen(conv)), .conv_seq = seq,
		.kind = PARLEY_EV_MESSAGE};
	m->u.early.t_durable_ns = parley_mono_ns();
	m->slot = 3;
	m->gen = f->gen;
	conn_on_msg(f->c, m);
	free(m);
}

struct inj {
	uint64_t inbox_seq;
	const char *conv;
	uint64_t conv_seq;
	uint16_t kind;
};

/* A subscription's hand-over of ready inbox EVENTs (inbox_cb's LM_INBOX). */
static void inject_inbox(struct fx *f, const struct inj *it, uint32_t n)
{
	uint8_t b[8][512];
	int len[8];
	size_t total = 0;
	cr_assert_leq(n, 8);
	for (uint32_t i = 0; i < n; i++) {
		len[i] = early_frame(b[i], sizeof b[i], it[i].inbox_seq, it[i].conv,
				     it[i].conv_seq, it[i].kind, 0);
		total += (size_t)len[i];
	}
	struct lmsg *m = lmsg_inbox_new(n, total);
	struct lm_inbox_item *items = lmsg_inbox_items(m);
	uint8_t *blob = lmsg_inbox_bytes(m);
	uint32_t off = 0;
	for (uint32_t i = 0; i < n; i++) {
		memcpy(blob + off, b[i], (size_t)len[i]);
		items[i] = (struct lm_inbox_item){
			.seq = it[i].inbox_seq, .off = off, .len = (uint32_t)len[i],
			.ready = true, .kind = it[i].kind,
			.conv_h = lm_conv_hash(it[i].conv, strlen(it[i].conv)),
			.conv_seq = it[i].conv_seq};
		off += (uint32_t)len[i];
	}
	m->u.inbox.t_post_ns = parley_mono_ns();
	m->slot = 3;
	m->gen = f->gen;
	conn_on_msg(f->c, m);
	free(m);
}

/* The next frame must be EVENT (inbox_seq, conv, conv_seq) with flags;
 * EARLY_SEEN ones carry no body, the others the body. */
static void expect_event(struct fx *f, uint64_t inbox_seq, const char *conv,
			 uint64_t conv_seq, uint32_t flags)
{
	struct parley_msg *m = msg_new(0);
	cr_assert(fx_next(f, m, NULL), "no frame, want EVENT %" PRIu64 " %s/%" PRIu64,
		  inbox_seq, conv, conv_seq);
	cr_assert_eq(m->type, PARLEY_T_EVENT);
	cr_assert_eq(m->event.inbox_seq, inbox_seq, "inbox_seq %" PRIu64 " want %" PRIu64,
		     m->event.inbox_seq, inbox_seq);
	cr_assert(parley_str_eq(m->event.conv, conv));
	cr_assert_eq(m->event.conv_seq, conv_seq, "conv_seq %" PRIu64 " want %" PRIu64,
		     m->event.conv_seq, conv_seq);
	cr_assert_eq(m->event.flags, flags, "flags %#x want %#x", m->event.flags, flags);
	cr_assert_eq(m->event.body.len, (flags & PARLEY_MSGF_EARLY_SEEN) ? 0u : 10u);
	cr_assert_eq(m->event.client_msg_id[0], (uint8_t)conv_seq);
	free(m);
}

/* A connection (HELLO features as given) of alice subscribed from inbox
 * seq 1 of an empty inbox; the server has early delivery on. */
static void early_login(struct fx *f, uint32_t features)
{
	fx_start(f, true, 21);
	f->s.lim.early_delivery = true;
	f->s.lim.event_window = 64;
	f->s.live = live_new();
	struct parley_msg *m = msg_new(PARLEY_T_HELLO);
	m->hello.min_version = m->hello.max_version = PARLEY_PROTO_VERSION;
	m->hello.features = features;
	m->hello.device_id = parley_str_c("phone");
	m->hello.client_name = parley_str_c("test");
	fx_feed(f, 1, m, false);
	cr_assert(fx_next(f, m, NULL));
	cr_assert_eq(m->type, PARLEY_T_HELLO_OK);
	cr_assert_eq(m->hello_ok.features & PARLEY_FEAT_EARLY,
		     features & PARLEY_FEAT_EARLY);
	fx_auth(f, "alice");
	*m = (struct parley_msg){.type = PARLEY_T_SYNC};
	m->sync.from_inbox_seq = 1;
	fx_feed(f, 20, m, false);
	bool ok = false;
	for (int round = 0; round < 200 && !ok; round++) {
		fx_pump(f, 1);
		while (!ok && fx_next(f, m, NULL))
			ok = m->type == PARLEY_T_SYNC_OK;
	}
	cr_assert(ok, "no SYNC_OK");
	free(m);
}

static void early_stop(struct fx *f)
{
	struct live *l = f->s.live;
	fx_stop(f);
	live_free(l);
}

/* E1: an early EVENT waits until its conversation's previous seq went out
 * (here: its inbox EVENT, or an earlier early one), and is dropped once
 * its own inbox EVENT went out first; E2: the inbox EVENT of a message
 * sent early goes out without its body, flagged EARLY_SEEN; other
 * conversations do not interfere; E3: another kind naming the
 * conversation makes the next early EVENT wait for the inbox again. */
Test(conn, early_events_keep_conversation_order)
{
	struct fx f;
	early_login(&f, PARLEY_FEAT_EARLY);
	const char *C = "d:alice:bob", *D = "d:alice:carol";
	inject_early(&f, C, 1); /* C unknown yet: held */
	cr_assert(!fx_next(&f, &(struct parley_msg){0}, NULL));
	inject_inbox(&f, (struct inj[]){{1, C, 1, PARLEY_EV_MESSAGE}}, 1);
	expect_event(&f, 1, C, 1, 0); /* the held early one is now dropped */
	inject_early(&f, C, 2); /* C at 1: goes out at once */
	expect_event(&f, 0, C, 2, PARLEY_MSGF_EARLY);
	inject_early(&f, C, 4); /* 3 not out yet: held */
	inject_early(&f, D, 7); /* D unknown: held */
	cr_assert(!fx_next(&f, &(struct parley_msg){0}, NULL));
	/* one hand-over: C 2 (sent early), C 3, D 7 */
	inject_inbox(&f, (struct inj[]){{2, C, 2, PARLEY_EV_MESSAGE},
					{3, C, 3, PARLEY_EV_MESSAGE},
					{4, D, 7, PARLEY_EV_MESSAGE}}, 3);
	expect_event(&f, 2, C, 2, PARLEY_MSGF_EARLY_SEEN);
	expect_event(&f, 3, C, 3, 0);
	expect_event(&f, 4, D, 7, 0);
	expect_event(&f, 0, C, 4, PARLEY_MSGF_EARLY); /* released after C 3 */
	cr_assert(!fx_next(&f, &(struct parley_msg){0}, NULL), "D 7 was dropped");
	inject_early(&f, C, 5);
	expect_event(&f, 0, C, 5, PARLEY_MSGF_EARLY);
	inject_inbox(&f, (struct inj[]){{5, C, 4, PARLEY_EV_MESSAGE},
					{6, C, 5, PARLEY_EV_MESSAGE},
					{7, C, 6, PARLEY_EV_EDIT}}, 3);
	expect_event(&f, 5, C, 4, PARLEY_MSGF_EARLY_SEEN);
	expect_event(&f, 6, C, 5, PARLEY_MSGF_EARLY_SEEN);
	expect_event(&f, 7, C, 6, 0);
	inject_early(&f, C, 7); /* after an EDIT: C forgotten, held */
	cr_assert(!fx_next(&f, &(struct parley_msg){0}, NULL));
	inject_inbox(&f, (struct inj[]){{8, C, 7, PARLEY_EV_MESSAGE}}, 1);
	expect_event(&f, 8, C, 7, 0);
	cr_assert(!fx_next(&f, &(struct parley_msg){0}, NULL));
	/* E2 is exact: an inbox EVENT below last[C] that did not go out
	 * early (a conversation's pointers out of order) goes out whole */
	const char *E = "d:alice:erin";
	inject_inbox(&f, (struct inj[]){{9, E, 1, PARLEY_EV_MESSAGE},
					{10, E, 3, PARLEY_EV_MESSAGE},
					{11, E, 2, PARLEY_EV_MESSAGE}}, 3);
	expect_event(&f, 9, E, 1, 0);
	expect_event(&f, 10, E, 3, 0);
	expect_event(&f, 11, E, 2, 0);
	cr_assert_eq(atomic_load(&f.s.ctr.early_out), 3);
	cr_assert_eq(atomic_load(&f.s.ctr.early_seen), 3);
	cr_assert_eq(atomic_load(&f.s.ctr.early_dropped), 3);
	cr_assert_eq(atomic_load(&f.s.ctr.events_out), 11);
	char *txt = stage_text(&f); /* the early EVENTs written were timed */
	cr_assert(strstr(txt, "parley_delivery_stage_seconds_count{stage=\"early\"} 3\n"),
		  "%s", txt);
	free(txt);
	early_stop(&f);
}

/* The hold is bounded: the oldest held early EVENTs are dropped, and the
 * inbox delivers them. */
Test(conn, early_hold_is_bounded)
{
	struct fx f;
	early_login(&f, PARLEY_FEAT_EARLY);
	const char *C = "d:alice:bob";
	for (uint64_t s = 2; s <= 31; s++) /* 30 ahead of an unknown C */
		inject_early(&f, C, s);
	cr_assert(!fx_next(&f, &(struct parley_msg){0}, NULL));
	cr_assert_eq(atomic_load(&f.s.ctr.early_dropped), 30 - 16);
	/* C 1 from the inbox releases nothing: 2..15 were dropped */
	inject_inbox(&f, (struct inj[]){{1, C, 1, PARLEY_EV_MESSAGE}}, 1);
	expect_event(&f, 1, C, 1, 0);
	cr_assert(!fx_next(&f, &(struct parley_msg){0}, NULL));
	early_stop(&f);
}

/* A connection that did not ask gets no early EVENT and every inbox
 * EVENT whole; a server with early delivery off grants no feature. */
Test(conn, early_events_only_for_connections_that_ask)
{
	struct fx f;
	early_login(&f, 0);
	const char *C = "d:alice:bob";
	inject_inbox(&f, (struct inj[]){{1, C, 1, PARLEY_EV_MESSAGE}}, 1);
	expect_event(&f, 1, C, 1, 0);
	inject_early(&f, C, 2);
	cr_assert(!fx_next(&f, &(struct parley_msg){0}, NULL));
	inject_inbox(&f, (struct inj[]){{2, C, 2, PARLEY_EV_MESSAGE}}, 1);
	expect_event(&f, 2, C, 2, 0);
	cr_assert_eq(atomic_load(&f.s.ctr.early_out), 0);
	early_stop(&f);

	fx_start(&f, true, 22);
	f.s.lim.early_delivery = false;
	struct parley_msg *m = msg_new(PARLEY_T_HELLO);
	m->hello.min_version = m->hello.max_version = PARLEY_PROTO_VERSION;
	m->hello.features = PARLEY_FEAT_EARLY | PARLEY_FEAT_ZSTD;
	m->hello.device_id = parley_str_c("phone");
	fx_feed(&f, 1, m, false);
	cr_assert(fx_next(&f, m, NULL));
	cr_assert_eq(m->type, PARLEY_T_HELLO_OK);
	cr_assert_eq(m->hello_ok.features, PARLEY_FEAT_ZSTD);
	free(m);
	fx_stop(&f);
}
