/*
 * test_conn_req.c — unit tests for the request handlers of a connection
 * (server/conn_req*.c: SEND, SYNC / EVENT_ACK, GROUP_*, READ_MARKER /
 * RECEIPTS, TYPING / PRESENCE_*, and conn_req.c's HISTORY /
 * GROUP_CATCHUP / EDIT / RETENTION / CONV_OPEN / CONV_LIST), driven
 * through a real connection on the fake loop of conn_fx.h, with the chat
 * service on the in-memory engine.
 *
 * What is proven, per handler: a good request gets its reply (with the
 * fields the handler fills in itself: conv, ids, flags); bad input gets
 * the exact wire error code (unknown conversation NOTFOUND, not a member
 * PERM, bad ids / seqs INVAL, limits TOOBIG / EXIST, notifications
 * answered with request id 0) and leaves nothing in flight; a failed
 * allocation of the handler's context is ERROR NOMEM with a retry_after
 * and the connection goes on; on a node that leads no partition a write
 * is ERROR NOTLEADER carrying the leader hint; each handler takes its
 * token from its own rate-limit bucket (ratelimit.h kinds), and only
 * from that one.
 */
#include "conn_fx.h"
#include "errmap.h"
#include "presence.h"

/* ---- helpers ---------------------------------------------------------------------- */

/* Feeds request m as rid and returns its answer in *out (waiting for the
 * engine); the answer must carry rid. */
static void req(struct fx *f, uint32_t rid, const struct parley_msg *m,
		struct parley_msg *out)
{
	fx_feed(f, rid, m, false);
	uint32_t got = 0;
	for (int i = 0; i < 100; i++) {
		if (fx_next(f, out, &got)) {
			cr_assert_eq(got, rid, "answer to %u, want %u (type %#x)",
				     got, rid, out->type);
			return;
		}
		fx_pump(f, 1);
	}
	cr_assert_fail("no answer to request %u", rid);
}

/* *m is an ERROR with this code (and, retry != 0, this retry_after). */
static void is_error(const struct parley_msg *m, uint32_t code, uint32_t retry)
{
	cr_assert_eq(m->type, PARLEY_T_ERROR, "type %#x, want ERROR %u", m->type,
		     code);
	cr_assert_eq(m->error.code, code, "ERROR %u (%.*s), want %u",
		     m->error.code, (int)m->error.text.len, m->error.text.p, code);
	cr_assert(!(m->error.flags & PARLEY_ERRF_FATAL));
	if (retry)
		cr_assert_eq(m->error.retry_after_ms, retry,
			     "ERROR %u retry_after %u, want %u", code,
			     m->error.retry_after_ms, retry);
}

/* The request answers ERROR code at once or after the engine; nothing
 * stays in flight. */
static void refused(struct fx *f, uint32_t rid, const struct parley_msg *m,
		    uint32_t code, uint32_t retry)
{
	struct parley_msg *out = msg_new(0);
	req(f, rid, m, out);
	is_error(out, code, retry);
	cr_assert_eq(f->c->inflight, 0, "request %u left in flight", rid);
	free(out);
}

/* Feeds m with the first allocation of the loop thread failing (the
 * handler's context): ERROR NOMEM with retry_after `retry` (always
 * SRV_NOMEM_RETRY_MS: one value on every path), nothing in flight, the
 * connection open. */
static void nomem_first(struct fx *f, uint32_t rid, const struct parley_msg *m,
			uint32_t retry)
{
	uint8_t buf[4096];
	int n = parley_proto_encode(buf, sizeof buf, rid, m);
	cr_assert_gt(n, 0);
	nomem_at = 1;
	nomem_seen = 0;
	nomem_sticky = false;
	nomem_failed = false;
	conn_on_recv(f->c, buf, (uint32_t)n);
	nomem_at = 0;
	cr_assert(nomem_failed, "type %#x allocated nothing", m->type);
	struct parley_msg *out = msg_new(0);
	uint32_t got = 0;
	cr_assert(fx_next(f, out, &got), "type %#x: no answer", m->type);
	cr_assert_eq(got, rid);
	is_error(out, PARLEY_ENOMEM, retry);
	cr_assert(!conn_sock(f->c)->closing);
	cr_assert_eq(f->c->inflight, 0);
	free(out);
}

static struct parley_msg *send_msg(const char *conv, uint8_t id,
				   const char *body)
{
	struct parley_msg *m = msg_new(PARLEY_T_SEND);
	m->send.conv = parley_str_c(conv);
	m->send.client_msg_id[0] = id;
	m->send.client_msg_id[15] = 0xc3;
	m->send.content_type = 1;
	m->send.body = (struct parley_bytes){(const uint8_t *)body, strlen(body)};
	return m;
}

/* ---- SEND (conn_req_send.c) --------------------------------------------------------- */

Test(conn_req, send_acks_with_the_request_fields_and_dedups)
{
	struct fx f;
	fx_alice(&f, 21, 0);
	struct parley_msg *m = send_msg("d:alice:bob", 7, "hello");
	struct parley_msg *out = msg_new(0);
	req(&f, 40, m, out);
	cr_assert_eq(out->type, PARLEY_T_SEND_ACK);
	cr_assert_eq(out->send_ack.conv.len, 11);
	cr_assert(!memcmp(out->send_ack.conv.p, "d:alice:bob", 11));
	cr_assert(!memcmp(out->send_ack.client_msg_id, m->send.client_msg_id, 16));
	cr_assert_eq(out->send_ack.seq, 1);
	cr_assert_eq(out->send_ack.flags, 0);
	cr_assert_gt(out->send_ack.server_ts_ms, 0);
	/* the same client_msg_id again: the first one's seq, DUPLICATE */
	req(&f, 41, m, out);
	cr_assert_eq(out->type, PARLEY_T_SEND_ACK);
	cr_assert_eq(out->send_ack.seq, 1);
	cr_assert_eq(out->send_ack.flags, PARLEY_ACKF_DUPLICATE);
	cr_assert_eq(atomic_load(&f.s.ctr.sends), 2);
	cr_assert_eq(atomic_load(&f.s.ctr.appends), 2);
	cr_assert_eq(atomic_load(&f.s.ctr.duplicates), 1);
	cr_assert_eq(f.c->inflight, 0);
	free(out);
	free(m);
	fx_stop(&f);
}

Test(conn_req, send_refusals_have_exact_codes)
{
	struct fx f;
	fx_alice(&f, 22, 0);
	struct parley_msg *m = send_msg("d:bob:carol", 1, "x");
	refused(&f, 50, m, PARLEY_EPERM, 0); /* not a member */
	free(m);
	m = send_msg("d:alice:carol", 2, "x"); /* never opened */
	refused(&f, 51, m, PARLEY_ENOTFOUND, 0);
	free(m);
	m = send_msg("nonsense", 3, "x"); /* not a conversation id */
	refused(&f, 52, m, PARLEY_ENOTFOUND, 0);
	free(m);
	/* a body one byte over max_body */
	f.s.lim.max_body = 100;
	char body[102];
	memset(body, 'b', sizeof body - 1);
	body[sizeof body - 1] = '\0';
	m = send_msg("d:alice:bob", 4, body);
	refused(&f, 53, m, PARLEY_ETOOBIG, 0);
	/* at max_body exactly: stored */
	body[100] = '\0';
	free(m);
	m = send_msg("d:alice:bob", 5, body);
	struct parley_msg *out = msg_new(0);
	req(&f, 54, m, out);
	cr_assert_eq(out->type, PARLEY_T_SEND_ACK);
	cr_assert_eq(out->send_ack.seq, 1);
	cr_assert_eq(atomic_load(&f.s.ctr.appends), 1, "refusals append nothing");
	free(out);
	free(m);
	fx_stop(&f);
}

Test(conn_req, send_without_memory_is_nomem_and_the_connection_goes_on)
{
	struct fx f;
	fx_alice(&f, 23, 0);
	struct parley_msg *m = send_msg("d:alice:bob", 1, "x");
	nomem_first(&f, 60, m, SRV_NOMEM_RETRY_MS);
	struct parley_msg *out = msg_new(0);
	req(&f, 61, m, out);
	cr_assert_eq(out->type, PARLEY_T_SEND_ACK);
	cr_assert_eq(out->send_ack.seq, 1);
	cr_assert_eq(out->send_ack.flags, 0, "the failed one stored nothing");
	free(out);
	free(m);
	fx_stop(&f);
}

/* ---- NOTLEADER: a node of a two-voter cluster that never heard of the
 * other leads nothing, so every write is refused with the leader hint. */

static void drop_raft(void *arg, const struct raft_msg *msgs, uint32_t n)
{
	(void)arg;
	(void)msgs;
	(void)n;
}

static uint64_t hint_of_test(void *arg, uint32_t partition, uint64_t leader,
			     char *plain, char *tls, size_t cap)
{
	(void)partition;
	(void)leader;
	cr_assert_eq(arg, (void *)&hint_of_test);
	snprintf(plain, cap, "10.0.0.2:7400");
	snprintf(tls, cap, "10.0.0.2:7401");
	return 2;
}

Test(conn_req, writes_on_a_follower_are_notleader_with_the_hint)
{
	struct fx f;
	fx_start(&f, false, 24);
	struct world w = {0};
	w.io = pio_mem_new(24);
	static const uint64_t voters[2] = {1, 2};
	struct pe_cluster cl = {.node_id = 1, .voters = voters, .nvoters = 2,
				.send = drop_raft};
	struct pe_options o = {.dir = "/data", .partitions = 4, .shards = 2,
			       .io = w.io, .clock_ms = chat_clock_ms,
			       .clock_arg = &w.clock, .cluster = &cl,
			       .retention = chat_retention,
			       .nretention = chat_nretention};
	cr_assert_eq(pe_open(&o, &w.e), 0);
	cr_assert_eq(chat_open(w.e, &w.clock, &w.c), 0);
	f.s.engine = w.e;
	f.s.chat = w.c;
	conn_leader_hint_install(hint_of_test, (void *)&hint_of_test);
	fx_login(&f);
	struct parley_msg *m = msg_new(PARLEY_T_CONV_OPEN);
	m->conv_open.peer = parley_str_c("bob");
	struct parley_msg *out = msg_new(0);
	req(&f, 70, m, out);
	is_error(out, PARLEY_ENOTLEADER, 0);
	cr_assert_gt(out->error.retry_after_ms, 0);
	cr_assert_eq(out->error.leader_node, 2);
	cr_assert_eq(out->error.leader_addr.len, strlen("10.0.0.2:7400"));
	cr_assert(!memcmp(out->error.leader_tls_addr.p, "10.0.0.2:7401", 13));
	free(m);
	m = send_msg("d:alice:bob", 1, "x");
	req(&f, 71, m, out);
	is_error(out, PARLEY_ENOTLEADER, 0);
	cr_assert_eq(out->error.leader_node, 2);
	cr_assert_eq(f.c->inflight, 0);
	conn_leader_hint_install(NULL, NULL);
	free(out);
	free(m);
	loop_conn_close(f.c, "test over");
	chat_close(w.c);
	pe_close(w.e);
	pio_free(w.io);
	fx_stop(&f);
}

/* ---- SYNC / EVENT_ACK (conn_req_sync.c) ------------------------------------------- */

static void sync_ok(struct fx *f, uint32_t rid, uint64_t from,
		    uint64_t want_last)
{
	struct parley_msg *m = msg_new(PARLEY_T_SYNC);
	m->sync.from_inbox_seq = from;
	struct parley_msg *out = msg_new(0);
	req(f, rid, m, out);
	cr_assert_eq(out->type, PARLEY_T_SYNC_OK, "type %#x", out->type);
	cr_assert_eq(out->sync_ok.last_inbox_seq, want_last);
	cr_assert_eq(out->sync_ok.start_inbox_seq, from);
	cr_assert(f->c->sub);
	cr_assert(!f->c->sync_busy);
	cr_assert_eq(f->c->inflight, 0);
	free(out);
	free(m);
}

Test(conn_req, sync_rules)
{
	struct fx f;
	fx_alice(&f, 25, 2);
	wait_inbox(&f.w, "alice", 2);
	/* EVENT_ACK before any SYNC: ERROR INVAL on request id 0 */
	struct parley_msg *m = msg_new(PARLEY_T_EVENT_ACK);
	m->event_ack.up_to_inbox_seq = 1;
	fx_feed(&f, 0, m, false);
	struct parley_msg *out = msg_new(0);
	uint32_t rid = 99;
	cr_assert(fx_next(&f, out, &rid));
	cr_assert_eq(rid, 0);
	is_error(out, PARLEY_EINVAL, 0);
	sync_ok(&f, 80, 1, 2);
	/* a second SYNC on the connection */
	*m = (struct parley_msg){.type = PARLEY_T_SYNC};
	m->sync.from_inbox_seq = 1;
	refused(&f, 81, m, PARLEY_EEXIST, 0);
	/* the events, then acks: at or below the acked position nothing
	 * happens; above what was sent is INVAL */
	for (int round = 0; round < 50 && f.c->ev_next <= 2; round++)
		fx_pump(&f, 1);
	cr_assert_eq(f.c->ev_next, 3);
	while (fx_next(&f, out, NULL))
		cr_assert_eq(out->type, PARLEY_T_EVENT);
	*m = (struct parley_msg){.type = PARLEY_T_EVENT_ACK};
	m->event_ack.up_to_inbox_seq = 2;
	fx_feed(&f, 0, m, false);
	cr_assert_eq(f.c->ev_acked, 2);
	cr_assert(!fx_next(&f, out, NULL), "a good ack is not answered");
	m->event_ack.up_to_inbox_seq = 1;
	fx_feed(&f, 0, m, false);
	cr_assert_eq(f.c->ev_acked, 2, "acks never go back");
	cr_assert(!fx_next(&f, out, NULL));
	m->event_ack.up_to_inbox_seq = 3;
	fx_feed(&f, 0, m, false);
	cr_assert(fx_next(&f, out, &rid));
	cr_assert_eq(rid, 0);
	is_error(out, PARLEY_EINVAL, 0);
	cr_assert_eq(f.c->ev_acked, 2);
	free(out);
	free(m);
	fx_stop(&f);
}

Test(conn_req, sync_without_memory_is_nomem_then_works)
{
	struct fx f;
	fx_alice(&f, 26, 1);
	wait_inbox(&f.w, "alice", 1);
	struct parley_msg *m = msg_new(PARLEY_T_SYNC);
	m->sync.from_inbox_seq = 1;
	/* the request's context */
	nomem_first(&f, 90, m, SRV_NOMEM_RETRY_MS);
	cr_assert(!f.c->sync_busy);
	/* the subscription's context, when the SYNC's reads are in */
	fx_feed(&f, 91, m, false);
	cr_assert(f.c->sync_busy);
	cr_assert_eq(f.c->inflight, 1);
	nomem_at = 1;
	nomem_seen = 0;
	nomem_failed = false;
	fx_pump(&f, 1);
	nomem_at = 0;
	cr_assert(nomem_failed);
	struct parley_msg *out = msg_new(0);
	uint32_t rid = 0;
	cr_assert(fx_next(&f, out, &rid));
	cr_assert_eq(rid, 91);
	is_error(out, PARLEY_ENOMEM, SRV_NOMEM_RETRY_MS);
	cr_assert(!f.c->sub);
	cr_assert(!f.c->sync_busy);
	cr_assert_eq(f.c->inflight, 0);
	sync_ok(&f, 92, 1, 1);
	free(out);
	free(m);
	fx_stop(&f);
}

Test(conn_req, a_sync_answered_while_draining_is_closed)
{
	struct fx f;
	fx_alice(&f, 27, 0);
	struct parley_msg *m = msg_new(PARLEY_T_SYNC);
	m->sync.from_inbox_seq = 1;
	fx_feed(&f, 100, m, false);
	cr_assert(f.c->sync_busy);
	conn_drain(f.c, PARLEY_GOAWAY_DRAIN, 1000, "test drain");
	cr_assert(!conn_sock(f.c)->closing, "the SYNC in flight holds it open");
	struct parley_msg *out = msg_new(0);
	cr_assert(fx_next(&f, out, NULL));
	cr_assert_eq(out->type, PARLEY_T_GOAWAY);
	fx_pump(&f, 1);
	uint32_t rid = 0;
	cr_assert(fx_next(&f, out, &rid));
	cr_assert_eq(rid, 100);
	is_error(out, PARLEY_ECLOSED, 0);
	cr_assert(!f.c->sub, "no subscription while draining");
	cr_assert_eq(f.c->inflight, 0);
	cr_assert(conn_sock(f.c)->closing);
	cr_assert_str_eq(f.lp.closed_why, "drained");
	free(out);
	free(m);
	fx_stop(&f);
}

/* ---- GROUP_* (conn_req_group.c) ----------------------------------------------------- */

/* GROUP_CREATE by the connection's user with `with` as member; the
 * group's id in conv (cap bytes). */
static void group_create(struct fx *f, uint32_t rid, uint8_t id,
			 const char *with, char *conv, size_t cap, bool dup)
{
	struct parley_msg *m = msg_new(PARLEY_T_GROUP_CREATE);
	m->group_create.create_id[0] = id;
	m->group_create.name = parley_str_c("team");
	m->group_create.count = 1;
	m->group_create.users[0] = parley_str_c(with);
	struct parley_msg *out = msg_new(0);
	req(f, rid, m, out);
	cr_assert_eq(out->type, PARLEY_T_GROUP_CREATE_OK, "type %#x", out->type);
	cr_assert_eq(out->group_ok.flags, dup ? PARLEY_GROUPF_DUPLICATE : 0);
	cr_assert_gt(out->group_ok.seq, 0);
	cr_assert_lt(out->group_ok.conv.len, cap);
	if (dup)
		cr_assert(!memcmp(conv, out->group_ok.conv.p, out->group_ok.conv.len));
	memcpy(conv, out->group_ok.conv.p, out->group_ok.conv.len);
	conv[out->group_ok.conv.len] = '\0';
	cr_assert_eq(f->c->inflight, 0);
	free(out);
	free(m);
}

Test(conn_req, groups_through_the_handlers)
{
	struct fx f;
	fx_alice(&f, 28, 0);
	char g[PARLEY_PROTO_MAX_CONV_ID + 1];
	group_create(&f, 110, 1, "bob", g, sizeof g, false);
	cr_assert(!strncmp(g, "g:", 2), "group id %s", g);
	group_create(&f, 111, 1, "bob", g, sizeof g, true); /* retried */
	/* GROUP_INFO: answered at once */
	struct parley_msg *m = msg_new(PARLEY_T_GROUP_INFO);
	m->group_info.conv = parley_str_c(g);
	m->group_info.limit = 10;
	struct parley_msg *out = msg_new(0);
	fx_feed(&f, 112, m, false);
	uint32_t rid = 0;
	cr_assert(fx_next(&f, out, &rid), "GROUP_INFO needs no engine round");
	cr_assert_eq(rid, 112);
	cr_assert_eq(out->type, PARLEY_T_GROUP_INFO_OK);
	cr_assert_eq(out->group_info_ok.member_count, 2);
	cr_assert_eq(out->group_info_ok.count, 2);
	cr_assert_eq(out->group_info_ok.my_role, PARLEY_ROLE_OWNER);
	cr_assert_eq(out->group_info_ok.name.len, 4);
	/* GROUP_ADD of carol: GROUP_ADD_OK, three members */
	struct parley_msg *a = msg_new(PARLEY_T_GROUP_ADD);
	a->group_change.conv = parley_str_c(g);
	a->group_change.count = 1;
	a->group_change.users[0] = parley_str_c("carol");
	req(&f, 113, a, out);
	cr_assert_eq(out->type, PARLEY_T_GROUP_ADD_OK, "type %#x", out->type);
	cr_assert_eq(out->group_ok.conv.len, strlen(g));
	req(&f, 114, m, out);
	cr_assert_eq(out->group_info_ok.member_count, 3);
	/* an unknown group */
	m->group_info.conv = parley_str_c("g:nosuchgroup");
	refused(&f, 115, m, PARLEY_ENOTFOUND, 0);
	a->group_change.conv = parley_str_c("g:nosuchgroup");
	refused(&f, 116, a, PARLEY_ENOTFOUND, 0);
	/* without memory for the page / the reply context */
	m->group_info.conv = parley_str_c(g);
	nomem_first(&f, 117, m, SRV_NOMEM_RETRY_MS);
	a->group_change.conv = parley_str_c(g);
	a->group_change.users[0] = parley_str_c("dave");
	nomem_first(&f, 118, a, SRV_NOMEM_RETRY_MS);
	/* someone who is not a member: dave (the failed add added nobody) */
	fx_reconnect(&f, "dave");
	m->group_info.conv = parley_str_c(g);
	refused(&f, 119, m, PARLEY_EPERM, 0);
	a->group_change.users[0] = parley_str_c("erin");
	refused(&f, 120, a, PARLEY_EPERM, 0);
	free(a);
	free(out);
	free(m);
	fx_stop(&f);
}

/* ---- READ_MARKER / RECEIPTS (conn_req_rcpt.c) -------------------------------------- */

Test(conn_req, read_marker_and_receipts)
{
	struct fx f;
	fx_alice(&f, 29, 3);
	struct parley_msg *m = msg_new(PARLEY_T_READ_MARKER);
	m->read_marker.conv = parley_str_c("d:alice:bob");
	m->read_marker.seq = 2;
	struct parley_msg *out = msg_new(0);
	req(&f, 130, m, out);
	cr_assert_eq(out->type, PARLEY_T_READ_MARKER_OK);
	cr_assert_eq(out->read_marker_ok.read_seq, 2);
	cr_assert_eq(out->read_marker_ok.flags, 0);
	cr_assert_eq(out->read_marker_ok.conv.len, 11);
	cr_assert(!memcmp(out->read_marker_ok.conv.p, "d:alice:bob", 11));
	/* an older position: unchanged, STALE */
	m->read_marker.seq = 1;
	req(&f, 131, m, out);
	cr_assert_eq(out->type, PARLEY_T_READ_MARKER_OK);
	cr_assert_eq(out->read_marker_ok.read_seq, 2);
	cr_assert_eq(out->read_marker_ok.flags, PARLEY_READF_STALE);
	cr_assert_eq(atomic_load(&f.s.ctr.read_markers), 2);
	/* bad seqs: 0, and beyond the last message */
	m->read_marker.seq = 0;
	refused(&f, 132, m, PARLEY_EINVAL, 0);
	m->read_marker.seq = 4;
	refused(&f, 133, m, PARLEY_EINVAL, 0);
	/* not a member, no such conversation */
	m->read_marker.seq = 1;
	m->read_marker.conv = parley_str_c("d:bob:carol");
	refused(&f, 134, m, PARLEY_EPERM, 0);
	m->read_marker.conv = parley_str_c("d:alice:carol");
	refused(&f, 135, m, PARLEY_ENOTFOUND, 0);
	m->read_marker.conv = parley_str_c("d:alice:bob");
	nomem_first(&f, 136, m, SRV_NOMEM_RETRY_MS);
	/* RECEIPTS of seq 2: both members, alice has read it */
	struct parley_msg *r = msg_new(PARLEY_T_RECEIPTS);
	r->receipts.conv = parley_str_c("d:alice:bob");
	r->receipts.seq = 2;
	r->receipts.limit = 10;
	req(&f, 137, r, out);
	cr_assert_eq(out->type, PARLEY_T_RECEIPTS_OK, "type %#x", out->type);
	cr_assert_eq(out->receipts_ok.seq, 2);
	cr_assert_eq(out->receipts_ok.member_count, 2);
	cr_assert_eq(out->receipts_ok.count, 2);
	cr_assert_eq(out->receipts_ok.read, 1);
	cr_assert(out->receipts_ok.flags & PARLEY_PAGEF_END);
	bool alice_read = false;
	for (uint16_t i = 0; i < out->receipts_ok.count; i++) {
		const struct parley_receipt_rec *e = &out->receipts_ok.recs[i];
		if (e->user.len == 5 && !memcmp(e->user.p, "alice", 5))
			alice_read = e->state & PARLEY_RCPTF_READ;
	}
	cr_assert(alice_read);
	r->receipts.seq = 0;
	refused(&f, 138, r, PARLEY_EINVAL, 0);
	r->receipts.seq = 1;
	r->receipts.conv = parley_str_c("d:bob:carol");
	refused(&f, 139, r, PARLEY_EPERM, 0);
	r->receipts.conv = parley_str_c("d:alice:bob");
	nomem_first(&f, 140, r, SRV_NOMEM_RETRY_MS);
	cr_assert_eq(f.c->inflight, 0);
	free(r);
	free(out);
	free(m);
	fx_stop(&f);
}

/* ---- TYPING / PRESENCE_* (conn_req_presence.c) ------------------------------------- */

Test(conn_req, presence_unavailable_is_again)
{
	struct fx f;
	fx_alice(&f, 30, 0); /* no presence service */
	struct parley_msg *m = msg_new(PARLEY_T_TYPING);
	m->typing.conv = parley_str_c("d:alice:bob");
	m->typing.state = PARLEY_TYPING_STARTED;
	fx_feed(&f, 0, m, false);
	struct parley_msg *out = msg_new(0);
	uint32_t rid = 99;
	cr_assert(fx_next(&f, out, &rid));
	cr_assert_eq(rid, 0, "TYPING is a notification");
	is_error(out, PARLEY_EAGAIN, 1000);
	*m = (struct parley_msg){.type = PARLEY_T_PRESENCE_SUB};
	m->presence_sub.op = PARLEY_PRESENCE_SUBSCRIBE;
	m->presence_sub.count = 1;
	m->presence_sub.users[0] = parley_str_c("bob");
	refused(&f, 150, m, PARLEY_EAGAIN, 1000);
	*m = (struct parley_msg){.type = PARLEY_T_PRESENCE_SET};
	refused(&f, 151, m, PARLEY_EAGAIN, 1000);
	free(out);
	free(m);
	fx_stop(&f);
}

Test(conn_req, typing_and_presence_through_the_service)
{
	struct fx f;
	fx_start(&f, true, 31);
	cr_assert_eq(svc_open(f.w.c, "alice", "bob", NULL), 0);
	struct presence_config pc = {30000, 60000, 2, 6000, 300000, 65536};
	cr_assert_eq(presence_open(&pc, &f.s, &f.s.pres), 0);
	fx_login(&f);
	cr_assert(f.c->pres, "AUTH made a presence session");
	struct parley_msg *m = msg_new(PARLEY_T_TYPING);
	m->typing.state = PARLEY_TYPING_STARTED;
	struct parley_msg *out = msg_new(0);
	uint32_t rid = 99;
	/* not a member, no such conversation: ERROR on request id 0 */
	m->typing.conv = parley_str_c("d:bob:carol");
	fx_feed(&f, 0, m, false);
	cr_assert(fx_next(&f, out, &rid));
	cr_assert_eq(rid, 0);
	is_error(out, PARLEY_EPERM, 0);
	m->typing.conv = parley_str_c("nonsense");
	fx_feed(&f, 0, m, false);
	cr_assert(fx_next(&f, out, &rid));
	cr_assert_eq(rid, 0);
	is_error(out, PARLEY_ENOTFOUND, 0);
	/* a member typing: nothing comes back to the typist */
	m->typing.conv = parley_str_c("d:alice:bob");
	fx_feed(&f, 0, m, false);
	fx_pump(&f, 0);
	cr_assert(!fx_next(&f, out, NULL), "type %#x", out->type);
	/* PRESENCE_SUB: answered by the service; over presence_subs_max
	 * (2 here) is LIMIT at once */
	*m = (struct parley_msg){.type = PARLEY_T_PRESENCE_SUB};
	m->presence_sub.op = PARLEY_PRESENCE_SUBSCRIBE;
	m->presence_sub.count = 1;
	m->presence_sub.users[0] = parley_str_c("bob");
	req(&f, 160, m, out);
	cr_assert_eq(out->type, PARLEY_T_PRESENCE_SUB_OK, "type %#x", out->type);
	cr_assert_eq(f.c->inflight, 0);
	m->presence_sub.count = 2;
	m->presence_sub.users[0] = parley_str_c("carol");
	m->presence_sub.users[1] = parley_str_c("dave");
	refused(&f, 161, m, PARLEY_ELIMIT, 0);
	free(out);
	free(m);
	loop_conn_close(f.c, "test over"); /* ends the session first */
	presence_close(f.s.pres);
	fx_stop(&f);
}

/* ---- conn_req.c: HISTORY / GROUP_CATCHUP, EDIT, RETENTION, CONV_OPEN ---------------- */

Test(conn_req, history_and_catchup_share_their_refusals)
{
	struct fx f;
	fx_alice(&f, 32, 2);
	struct parley_msg *m = msg_new(PARLEY_T_HISTORY);
	m->history.conv = parley_str_c("nonsense"); /* not a conversation id */
	m->history.limit = 5;
	refused(&f, 170, m, PARLEY_ENOTFOUND, 0);
	m->history.conv = parley_str_c("d:bob:carol");
	refused(&f, 171, m, PARLEY_EPERM, 0);
	m->history.conv = parley_str_c("d:alice:bob");
	nomem_first(&f, 172, m, SRV_NOMEM_RETRY_MS);
	/* GROUP_CATCHUP of a 1:1 conversation: not a group */
	*m = (struct parley_msg){.type = PARLEY_T_GROUP_CATCHUP};
	m->group_catchup.conv = parley_str_c("d:alice:bob");
	m->group_catchup.from_seq = 1;
	m->group_catchup.limit = 5;
	refused(&f, 173, m, PARLEY_ENOTFOUND, 0);
	nomem_first(&f, 174, m, SRV_NOMEM_RETRY_MS);
	cr_assert_eq(atomic_load(&f.s.ctr.history), 0, "refusals are not counted");
	free(m);
	fx_stop(&f);
}

Test(conn_req, edit_conv_open_and_retention_refusals)
{
	struct fx f;
	fx_alice(&f, 33, 1); /* message 1 is bob's */
	struct parley_msg *m = msg_new(PARLEY_T_EDIT);
	m->edit.conv = parley_str_c("d:alice:bob");
	m->edit.client_msg_id[0] = 9;
	m->edit.ref_seq = 1;
	m->edit.content_type = 1;
	m->edit.body = (struct parley_bytes){(const uint8_t *)"y", 1};
	refused(&f, 180, m, PARLEY_EPERM, 0); /* not alice's message */
	m->edit.ref_seq = 7;
	refused(&f, 181, m, PARLEY_ENOTFOUND, 0); /* no such message */
	m->edit.conv = parley_str_c("d:bob:carol");
	m->edit.ref_seq = 1;
	refused(&f, 182, m, PARLEY_EPERM, 0); /* not a member */
	*m = (struct parley_msg){.type = PARLEY_T_CONV_OPEN};
	m->conv_open.peer = parley_str_c("not a user id!");
	refused(&f, 183, m, PARLEY_EINVAL, 0);
	m->conv_open.peer = parley_str_c("alice"); /* oneself */
	refused(&f, 184, m, PARLEY_EINVAL, 0);
	*m = (struct parley_msg){.type = PARLEY_T_RETENTION};
	m->retention.conv = parley_str_c("d:alice:bob");
	refused(&f, 185, m, PARLEY_EAGAIN, 1000); /* no sweeper yet */
	free(m);
	fx_stop(&f);
}

/* ---- rate limits: each handler takes from its kind's bucket ----------------------- */

/* The request of kind k that empties the connection's bucket of k (one
 * token), answered (TYPING: silently). */
static void spend_token(struct fx *f, enum ratelimit_kind k)
{
	struct parley_msg *m = msg_new(0);
	struct parley_msg *out = msg_new(0);
	switch (k) {
	case RATELIMIT_SEND:
		free(m);
		m = send_msg("d:alice:bob", 1, "x");
		req(f, 300, m, out);
		cr_assert_eq(out->type, PARLEY_T_SEND_ACK);
		break;
	case RATELIMIT_HISTORY:
		m->type = PARLEY_T_HISTORY;
		m->history.conv = parley_str_c("d:alice:bob");
		m->history.limit = 5;
		req(f, 300, m, out);
		cr_assert_eq(out->type, PARLEY_T_HISTORY_PAGE);
		break;
	case RATELIMIT_TYPING:
		m->type = PARLEY_T_TYPING;
		m->typing.conv = parley_str_c("d:alice:bob");
		m->typing.state = PARLEY_TYPING_STARTED;
		fx_feed(f, 0, m, false);
		cr_assert(!fx_next(f, out, NULL), "a member's TYPING is not answered");
		break;
	default:
		m->type = PARLEY_T_PRESENCE_SUB;
		m->presence_sub.op = PARLEY_PRESENCE_SUBSCRIBE;
		m->presence_sub.count = 1;
		m->presence_sub.users[0] = parley_str_c("bob");
		req(f, 300, m, out);
		cr_assert_eq(out->type, PARLEY_T_PRESENCE_SUB_OK);
		break;
	}
	free(out);
	free(m);
}

/* On a new connection (every bucket full) with only kind k's bucket
 * spent, *m is answered ERROR RATE with a retry_after (request id rid; 0
 * for a notification): so m takes a token of k, and of no other kind. */
static void limited_by(struct fx *f, enum ratelimit_kind k, uint32_t rid,
		       const struct parley_msg *m)
{
	fx_reconnect(f, "alice");
	spend_token(f, k);
	fx_feed(f, rid, m, false);
	struct parley_msg *out = msg_new(0);
	uint32_t got = 99;
	cr_assert(fx_next(f, out, &got), "type %#x: no answer", m->type);
	cr_assert_eq(got, rid);
	cr_assert_eq(out->type, PARLEY_T_ERROR, "type %#x answered %#x", m->type,
		     out->type);
	cr_assert_eq(out->error.code, PARLEY_ERATE, "type %#x: ERROR %u (%s bucket)",
		     m->type, out->error.code, ratelimit_kind_name(k));
	cr_assert_gt(out->error.retry_after_ms, 0);
	cr_assert_eq(f->c->inflight, 0);
	free(out);
}

/* A parley_str of a string literal, usable in a constant initializer. */
#define LIT(s) { s, sizeof(s) - 1 }

/* Every request but SEND with the kind of token it takes and its request
 * id (0: a notification). */
static const struct {
	enum ratelimit_kind k;
	uint32_t rid;
	struct parley_msg m;
} limited_cases[] = {
	/* SEND's kind: EDIT / DELETE, GROUP_* changes */
	{ RATELIMIT_SEND, 202,
	  { .type = PARLEY_T_EDIT, .edit = { .conv = LIT("d:alice:bob"), .ref_seq = 2 } } },
	{ RATELIMIT_SEND, 203,
	  { .type = PARLEY_T_DELETE, .del = { .conv = LIT("d:alice:bob"), .ref_seq = 2 } } },
	{ RATELIMIT_SEND, 204,
	  { .type = PARLEY_T_GROUP_CREATE, .group_create = { .name = LIT("team") } } },
	{ RATELIMIT_SEND, 205,
	  { .type = PARLEY_T_GROUP_ADD,
	    .group_change = { .conv = LIT("g:x"), .count = 1, .users = { LIT("carol") } } } },
	/* HISTORY's kind: the reads */
	{ RATELIMIT_HISTORY, 211,
	  { .type = PARLEY_T_HISTORY, .history = { .conv = LIT("d:alice:bob"), .limit = 5 } } },
	{ RATELIMIT_HISTORY, 212, { .type = PARLEY_T_SYNC, .sync = { .from_inbox_seq = 1 } } },
	{ RATELIMIT_HISTORY, 213,
	  { .type = PARLEY_T_READ_MARKER,
	    .read_marker = { .conv = LIT("d:alice:bob"), .seq = 1 } } },
	{ RATELIMIT_HISTORY, 214,
	  { .type = PARLEY_T_RECEIPTS,
	    .receipts = { .conv = LIT("d:alice:bob"), .seq = 1, .limit = 5 } } },
	{ RATELIMIT_HISTORY, 215,
	  { .type = PARLEY_T_GROUP_INFO, .group_info = { .conv = LIT("g:x"), .limit = 5 } } },
	{ RATELIMIT_HISTORY, 216,
	  { .type = PARLEY_T_GROUP_CATCHUP,
	    .group_catchup = { .conv = LIT("g:x"), .from_seq = 1, .limit = 5 } } },
	/* TYPING's kind (a notification) */
	{ RATELIMIT_TYPING, 0,
	  { .type = PARLEY_T_TYPING,
	    .typing = { .conv = LIT("d:alice:bob"), .state = PARLEY_TYPING_STARTED } } },
	/* PRESENCE's kind */
	{ RATELIMIT_PRESENCE, 221,
	  { .type = PARLEY_T_PRESENCE_SUB,
	    .presence_sub = { .op = PARLEY_PRESENCE_SUBSCRIBE, .count = 1,
			      .users = { LIT("carol") } } } },
	{ RATELIMIT_PRESENCE, 222, { .type = PARLEY_T_PRESENCE_SET } },
};

Test(conn_req, each_handler_takes_its_kind_of_token)
{
	struct fx f;
	fx_start(&f, true, 34);
	cr_assert_eq(svc_open(f.w.c, "alice", "bob", NULL), 0);
	svc_send(f.w.c, "d:alice:bob", "bob", 1);
	struct presence_config pc = {30000, 60000, 16, 6000, 300000, 65536};
	cr_assert_eq(presence_open(&pc, &f.s, &f.s.pres), 0);
	/* one token per connection and kind, one more a minute */
	struct ratelimit_config rc = {.max_users = RATELIMIT_USERS_MIN};
	for (int k = 0; k < RATELIMIT_NKINDS; k++)
		rc.conn[k] = (struct ratelimit_rate){.per_min = 1, .burst = 1};
	char why[128];
	cr_assert_eq(ratelimit_config_check(&rc, why, sizeof why), 0, "%s", why);
	cr_assert_eq(ratelimit_open(&rc, &f.s.rl), 0);
	fx_login(&f);
	/* SEND's kind: SEND, then the table's */
	struct parley_msg *m = send_msg("d:alice:bob", 2, "y");
	limited_by(&f, RATELIMIT_SEND, 201, m);
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(limited_cases); i++)
		limited_by(&f, limited_cases[i].k, limited_cases[i].rid, &limited_cases[i].m);
	/* not limited: CONV_OPEN, CONV_LIST (every bucket spent) */
	fx_reconnect(&f, "alice");
	for (int k = 0; k < RATELIMIT_NKINDS; k++)
		spend_token(&f, (enum ratelimit_kind)k);
	struct parley_msg *out = msg_new(0);
	*m = (struct parley_msg){.type = PARLEY_T_CONV_OPEN};
	m->conv_open.peer = parley_str_c("bob");
	req(&f, 230, m, out);
	cr_assert_eq(out->type, PARLEY_T_CONV, "type %#x", out->type);
	*m = (struct parley_msg){.type = PARLEY_T_CONV_LIST};
	m->conv_list.limit = 5;
	req(&f, 231, m, out);
	cr_assert_eq(out->type, PARLEY_T_CONV_LIST_OK, "type %#x", out->type);
	free(out);
	free(m);
	loop_conn_close(f.c, "test over");
	presence_close(f.s.pres);
	ratelimit_close(f.s.rl);
	fx_stop(&f);
}
