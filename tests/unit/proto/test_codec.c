/*
 * test_codec.c — unit tests for proto/codec.c (the wire codec).
 *
 * What is proven: every message type round-trips; a frame cut at any byte is
 * "incomplete", a payload cut at any byte is malformed; oversized frames,
 * unknown flags, bad counts, bad record lengths, bad strings are refused;
 * encoders never write past cap; trailing bytes are ignored (forward
 * compatibility); the hex examples in docs/PROTOCOL.md decode and re-encode
 * byte for byte; zstd round-trips and a zstd bomb is stopped at the bound.
 * Randomized tests print their seed (PARLEY_SEED=<n> replays one).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>

#include "parley_proto.h"

static const uint8_t CMID[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static char g_names[PARLEY_PROTO_MAX_MEMBERS][16];

static struct parley_str S(const char *s)
{
	return parley_str_c(s);
}
static struct parley_bytes B(const char *s)
{
	return (struct parley_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static const uint16_t ALL_TYPES[] = {
	PARLEY_T_HELLO, PARLEY_T_HELLO_OK, PARLEY_T_AUTH, PARLEY_T_AUTH_OK,
	PARLEY_T_PING, PARLEY_T_PONG, PARLEY_T_ERROR, PARLEY_T_CONV_OPEN,
	PARLEY_T_CONV, PARLEY_T_SEND, PARLEY_T_SEND_ACK, PARLEY_T_HISTORY,
	PARLEY_T_HISTORY_PAGE, PARLEY_T_SYNC, PARLEY_T_SYNC_OK, PARLEY_T_EVENT,
	PARLEY_T_EVENT_ACK, PARLEY_T_CONV_LIST, PARLEY_T_CONV_LIST_OK,
	PARLEY_T_GOAWAY, PARLEY_T_TYPING, PARLEY_T_TYPING_PUSH,
	PARLEY_T_PRESENCE_SUB, PARLEY_T_PRESENCE_SUB_OK, PARLEY_T_PRESENCE,
	PARLEY_T_PRESENCE_SET, PARLEY_T_PRESENCE_SET_OK,
	PARLEY_T_READ_MARKER, PARLEY_T_READ_MARKER_OK,
	PARLEY_T_RECEIPTS, PARLEY_T_RECEIPTS_OK,
	PARLEY_T_EDIT, PARLEY_T_DELETE, PARLEY_T_EDIT_ACK, PARLEY_T_DELETE_ACK,
	PARLEY_T_RETENTION, PARLEY_T_RETENTION_OK,
	PARLEY_T_GROUP_CREATE, PARLEY_T_GROUP_ADD, PARLEY_T_GROUP_REMOVE,
	PARLEY_T_GROUP_LEAVE, PARLEY_T_GROUP_ROLE, PARLEY_T_GROUP_INFO,
	PARLEY_T_GROUP_CREATE_OK, PARLEY_T_GROUP_ADD_OK, PARLEY_T_GROUP_REMOVE_OK,
	PARLEY_T_GROUP_LEAVE_OK, PARLEY_T_GROUP_ROLE_OK, PARLEY_T_GROUP_INFO_OK,
	PARLEY_T_GROUP_SET, PARLEY_T_GROUP_SET_OK,
	PARLEY_T_GROUP_CATCHUP, PARLEY_T_GROUP_CATCHUP_OK,
};

/* A representative message of each type with every field non-default. */
static void sample(uint16_t type, struct parley_msg *m)
{
	memset(m, 0, sizeof *m);
	m->type = type;
	switch (type) {
	case PARLEY_T_HELLO:
		m->hello = (struct parley_hello){1, 3, PARLEY_FEAT_ZSTD, S("laptop"),
						 S("test/1 ünïcode")};
		break;
	case PARLEY_T_HELLO_OK:
		m->hello_ok = (struct parley_hello_ok){1, 1, 1 << 20, 65536, 64,
						       1024, 60000, 1764000000000ull,
						       S("node-1")};
		break;
	case PARLEY_T_AUTH:
		m->auth.token = S("eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
		break;
	case PARLEY_T_AUTH_OK:
		m->auth_ok = (struct parley_auth_ok){S("alice"), 1764000999000ull};
		break;
	case PARLEY_T_PING:
		m->ping.nonce = 0x0102030405060708ull;
		break;
	case PARLEY_T_PONG:
		m->pong = (struct parley_pong){0x0102030405060708ull, 77};
		break;
	case PARLEY_T_ERROR:
		m->error = (struct parley_error_msg){PARLEY_ERATE, PARLEY_ERRF_FATAL,
						     250, S("slow down")};
		/* with every appended field, so "trailing bytes" come after
		 * the last one */
		m->error.leader_node = 2;
		m->error.leader_addr = S("127.0.0.1:7421");
		break;
	case PARLEY_T_CONV_OPEN:
		m->conv_open.peer = S("bob");
		break;
	case PARLEY_T_CONV:
		m->conv.conv = S("d:alice:bob");
		m->conv.kind = PARLEY_CONV_DIRECT;
		m->conv.flags = PARLEY_CONVF_CREATED;
		m->conv.last_seq = 9;
		m->conv.last_ts_ms = 1234;
		m->conv.member_count = 2;
		m->conv.members[0] = S("alice");
		m->conv.members[1] = S("bob");
		break;
	case PARLEY_T_SEND:
		m->send.conv = S("d:alice:bob");
		memcpy(m->send.client_msg_id, CMID, 16);
		m->send.content_type = PARLEY_CT_TEXT;
		m->send.body = B("hello there");
		break;
	case PARLEY_T_SEND_ACK:
		m->send_ack.conv = S("d:alice:bob");
		memcpy(m->send_ack.client_msg_id, CMID, 16);
		m->send_ack.seq = 42;
		m->send_ack.server_ts_ms = 1764000000123ull;
		m->send_ack.flags = PARLEY_ACKF_DUPLICATE;
		break;
	case PARLEY_T_HISTORY:
		m->history = (struct parley_history){S("d:alice:bob"), 50, 20};
		break;
	case PARLEY_T_GROUP_CATCHUP:
		m->group_catchup = (struct parley_group_catchup){
			S("g:0123456789abcdef"), 501, 100};
		break;
	case PARLEY_T_GROUP_CATCHUP_OK: /* a history page, oldest first */
	case PARLEY_T_HISTORY_PAGE:
		m->history_page.conv = S("d:alice:bob");
		m->history_page.next_before_seq = 47;
		m->history_page.flags = PARLEY_HISTF_END;
		m->history_page.count = 3;
		for (int i = 0; i < 3; i++) {
			struct parley_hist_msg *h = &m->history_page.msgs[i];
			h->seq = 49 - (uint64_t)i;
			h->ts_ms = 1000 + (uint64_t)i;
			h->sender = S(i % 2 ? "bob" : "alice");
			memcpy(h->client_msg_id, CMID, 16);
			h->client_msg_id[0] = (uint8_t)i;
			h->content_type = PARLEY_CT_TEXT;
			h->body = B(i == 1 ? "" : "msg body");
		}
		m->history_page.msgs[2].kind = PARLEY_EV_EDIT;
		m->history_page.msgs[2].ref_seq = 12;
		m->history_page.msgs[2].flags = PARLEY_MSGF_EDITED;
		break;
	case PARLEY_T_SYNC:
		m->sync.from_inbox_seq = 17;
		break;
	case PARLEY_T_SYNC_OK:
		m->sync_ok = (struct parley_sync_ok){3, 40, 17};
		break;
	case PARLEY_T_EVENT:
		m->event.inbox_seq = 5;
		m->event.kind = PARLEY_EV_MESSAGE;
		m->event.conv = S("d:alice:bob");
		m->event.conv_seq = 42;
		m->event.sender = S("alice");
		memcpy(m->event.client_msg_id, CMID, 16);
		m->event.server_ts_ms = 1764000000123ull;
		m->event.content_type = PARLEY_CT_TEXT;
		m->event.body = B("hi");
		m->event.ref_seq = 41;
		m->event.flags = PARLEY_MSGF_DELETED;
		break;
	case PARLEY_T_EVENT_ACK:
		m->event_ack.up_to_inbox_seq = 5;
		break;
	case PARLEY_T_CONV_LIST:
		m->conv_list.limit = 100;
		m->conv_list.before_ts_ms = 1764000000999ull;
		m->conv_list.before_conv = S("d:alice:carol");
		break;
	case PARLEY_T_CONV_LIST_OK:
		m->conv_list_ok.count = 2;
		m->conv_list_ok.entries[0] = (struct parley_conv_entry){
			S("d:alice:bob"), PARLEY_CONV_DIRECT, 9, 1234, 2, S("bob")};
		m->conv_list_ok.entries[0].read_seq = 7;
		m->conv_list_ok.entries[0].unread = 2;
		m->conv_list_ok.entries[0].last_sender = S("bob");
		m->conv_list_ok.entries[0].last_content_type = PARLEY_CT_TEXT;
		m->conv_list_ok.entries[0].preview = B("see you at");
		m->conv_list_ok.entries[1] = (struct parley_conv_entry){
			S("g:team"), PARLEY_CONV_GROUP, 0, 0, 300, S("")};
		m->conv_list_ok.entries[1].title = S("Team ünïcode");
		m->conv_list_ok.entries[1].flags = PARLEY_CONVF_LEFT;
		m->conv_list_ok.next_before_ts_ms = 1234;
		m->conv_list_ok.next_before_conv = S("g:team");
		break;
	case PARLEY_T_READ_MARKER:
		m->read_marker = (struct parley_read_marker){S("d:alice:bob"), 41};
		break;
	case PARLEY_T_READ_MARKER_OK:
		m->read_marker_ok = (struct parley_read_marker_ok){
			S("d:alice:bob"), 42, PARLEY_READF_STALE};
		break;
	case PARLEY_T_RECEIPTS:
		m->receipts = (struct parley_receipts){S("g:team"), 7, S("carol"), 50};
		break;
	case PARLEY_T_RECEIPTS_OK:
		m->receipts_ok.conv = S("g:team");
		m->receipts_ok.seq = 7;
		m->receipts_ok.member_count = 500;
		m->receipts_ok.delivered = 2;
		m->receipts_ok.read = 1;
		m->receipts_ok.next_after = S("erin");
		m->receipts_ok.count = 2;
		m->receipts_ok.recs[0] = (struct parley_receipt_rec){
			S("dave"), PARLEY_RCPTF_DELIVERED | PARLEY_RCPTF_READ, 9, 8};
		m->receipts_ok.recs[1] = (struct parley_receipt_rec){
			S("erin"), PARLEY_RCPTF_DELIVERED, 7, 3};
		break;
	case PARLEY_T_GOAWAY:
		m->goaway = (struct parley_goaway){PARLEY_GOAWAY_DRAIN, 1500,
						   S("draining")};
		break;
	case PARLEY_T_EDIT:
		m->edit.conv = S("d:alice:bob");
		memcpy(m->edit.client_msg_id, CMID, 16);
		m->edit.ref_seq = 41;
		m->edit.content_type = PARLEY_CT_TEXT;
		m->edit.body = B("hello again");
		break;
	case PARLEY_T_DELETE:
		m->del.conv = S("d:alice:bob");
		memcpy(m->del.client_msg_id, CMID, 16);
		m->del.ref_seq = 41;
		break;
	case PARLEY_T_EDIT_ACK:
	case PARLEY_T_DELETE_ACK:
		m->edit_ack.conv = S("d:alice:bob");
		memcpy(m->edit_ack.client_msg_id, CMID, 16);
		m->edit_ack.seq = 43;
		m->edit_ack.server_ts_ms = 1764000000123ull;
		m->edit_ack.ref_seq = 41;
		m->edit_ack.flags = PARLEY_ACKF_DUPLICATE;
		break;
	case PARLEY_T_RETENTION:
		m->retention = (struct parley_retention){
			S("g:team"), PARLEY_RETF_SET, 86400000ull, 5000};
		break;
	case PARLEY_T_RETENTION_OK:
		m->retention_ok = (struct parley_retention_ok){
			S("g:team"), 86400000ull, 5000, 0, 100000, 17};
		break;
	case PARLEY_T_TYPING:
		m->typing = (struct parley_typing){S("d:alice:bob"),
						   PARLEY_TYPING_STARTED};
		break;
	case PARLEY_T_TYPING_PUSH:
		m->typing_push = (struct parley_typing_push){
			S("d:alice:bob"), S("alice"), PARLEY_TYPING_STARTED, 6000};
		break;
	case PARLEY_T_PRESENCE_SUB:
		m->presence_sub.op = PARLEY_PRESENCE_SUBSCRIBE;
		m->presence_sub.count = 2;
		m->presence_sub.users[0] = S("bob");
		m->presence_sub.users[1] = S("carol");
		break;
	case PARLEY_T_PRESENCE_SUB_OK:
		m->presence_sub_ok.heartbeat_ms = 30000;
		m->presence_sub_ok.ttl_ms = 60000;
		m->presence_sub_ok.subscribed = 7;
		m->presence_sub_ok.count = 2;
		m->presence_sub_ok.recs[0] = (struct parley_presence_rec){
			S("bob"), PARLEY_PRESENCE_ONLINE, 0};
		m->presence_sub_ok.recs[1] = (struct parley_presence_rec){
			S("carol"), PARLEY_PRESENCE_OFFLINE, 1764000000123ull};
		break;
	case PARLEY_T_PRESENCE:
		m->presence = (struct parley_presence_rec){
			S("carol"), PARLEY_PRESENCE_OFFLINE, 1764000000123ull};
		break;
	case PARLEY_T_PRESENCE_SET:
		m->presence_set.flags = PARLEY_PRESF_HIDE_LAST_SEEN;
		break;
	case PARLEY_T_PRESENCE_SET_OK:
		m->presence_set_ok.flags = PARLEY_PRESF_HIDE_LAST_SEEN;
		break;
	case PARLEY_T_GROUP_CREATE:
		memset(m->group_create.create_id, 0x5a, 16);
		m->group_create.name = S("Team ünïcode");
		m->group_create.settings = PARLEY_GROUPF_HISTORY_ALL;
		m->group_create.count = 2;
		m->group_create.users[0] = S("bob");
		m->group_create.users[1] = S("carol");
		break;
	case PARLEY_T_GROUP_ADD:
	case PARLEY_T_GROUP_REMOVE:
	case PARLEY_T_GROUP_LEAVE:
	case PARLEY_T_GROUP_ROLE:
		m->group_change.conv = S("g:0123456789abcdef");
		m->group_change.role = PARLEY_ROLE_ADMIN;
		m->group_change.count = 1;
		m->group_change.users[0] = S("dave");
		break;
	case PARLEY_T_GROUP_CREATE_OK:
	case PARLEY_T_GROUP_ADD_OK:
	case PARLEY_T_GROUP_REMOVE_OK:
	case PARLEY_T_GROUP_LEAVE_OK:
	case PARLEY_T_GROUP_ROLE_OK:
	case PARLEY_T_GROUP_SET_OK:
		m->group_ok = (struct parley_group_ok){S("g:0123456789abcdef"), 42,
						       PARLEY_GROUPF_DUPLICATE};
		break;
	case PARLEY_T_GROUP_SET:
		m->group_set = (struct parley_group_set){
			S("g:0123456789abcdef"), PARLEY_GSET_NAME | PARLEY_GSET_SETTINGS,
			S("Renamed ünïcode"), PARLEY_GROUPF_HISTORY_ALL};
		break;
	case PARLEY_T_GROUP_INFO:
		m->group_info = (struct parley_group_info){S("g:0123456789abcdef"),
							   256, 100};
		break;
	case PARLEY_T_GROUP_INFO_OK:
		m->group_info_ok.conv = S("g:0123456789abcdef");
		m->group_info_ok.name = S("Team");
		m->group_info_ok.settings = PARLEY_GROUPF_HISTORY_ALL;
		m->group_info_ok.my_role = PARLEY_ROLE_ADMIN;
		m->group_info_ok.member_count = 500;
		m->group_info_ok.as_of_seq = 17;
		m->group_info_ok.next_index = 2;
		m->group_info_ok.count = 2;
		m->group_info_ok.members[0] = (struct parley_group_member){
			S("alice"), PARLEY_ROLE_OWNER};
		m->group_info_ok.members[1] = (struct parley_group_member){
			S("bob"), PARLEY_ROLE_MEMBER};
		break;
	default:
		cr_assert_fail("no sample for type %u", type);
	}
}

static uint8_t g_buf[PARLEY_PROTO_MAX_FRAME_DEFAULT];
static uint8_t g_buf2[PARLEY_PROTO_MAX_FRAME_DEFAULT];
static struct parley_msg g_m, g_d;

/* encode m, decode it back into d; returns the frame length */
static int roundtrip(const struct parley_msg *m, struct parley_msg *d,
		     uint32_t rid)
{
	int n = parley_proto_encode(g_buf, sizeof g_buf, rid, m);
	cr_assert_gt(n, 0, "encode %s: %d", parley_proto_type_name(m->type), n);
	cr_assert_eq(parley_proto_size(m), n);
	struct parley_frame f;
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n,
					       PARLEY_PROTO_MAX_FRAME_DEFAULT, &f),
		     n);
	cr_assert_eq(f.type, m->type);
	cr_assert_eq(f.flags, 0);
	cr_assert_eq(f.request_id, rid);
	cr_assert_eq(f.payload_len, (uint32_t)n - 12);
	cr_assert_eq(parley_proto_decode(&f, d), 0, "decode %s",
		     parley_proto_type_name(m->type));
	cr_assert_eq(d->type, m->type);
	/* deep equality: the decoded struct re-encodes to the same bytes */
	int n2 = parley_proto_encode(g_buf2, sizeof g_buf2, rid, d);
	cr_assert_eq(n2, n);
	cr_assert(memcmp(g_buf, g_buf2, (size_t)n) == 0);
	return n;
}

Test(codec, roundtrip_every_message)
{
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(ALL_TYPES); i++) {
		sample(ALL_TYPES[i], &g_m);
		roundtrip(&g_m, &g_d, (uint32_t)i + 1);
	}
	/* spot-check decoded fields against the originals */
	sample(PARLEY_T_EVENT, &g_m);
	roundtrip(&g_m, &g_d, 0);
	cr_assert_eq(g_d.event.inbox_seq, 5);
	cr_assert_eq(g_d.event.conv_seq, 42);
	cr_assert(parley_str_eq(g_d.event.conv, "d:alice:bob"));
	cr_assert(parley_str_eq(g_d.event.sender, "alice"));
	cr_assert(memcmp(g_d.event.client_msg_id, CMID, 16) == 0);
	cr_assert_eq(g_d.event.body.len, 2);
	cr_assert(memcmp(g_d.event.body.p, "hi", 2) == 0);
	/* zero-copy: the body points into the encoded buffer */
	cr_assert(g_d.event.body.p > g_buf && g_d.event.body.p < g_buf + 100);

	cr_assert_eq(g_d.event.ref_seq, 41);
	cr_assert_eq(g_d.event.flags, PARLEY_MSGF_DELETED);

	sample(PARLEY_T_GROUP_CATCHUP, &g_m);
	roundtrip(&g_m, &g_d, 7);
	cr_assert(parley_str_eq(g_d.group_catchup.conv, "g:0123456789abcdef"));
	cr_assert_eq(g_d.group_catchup.from_seq, 501);
	cr_assert_eq(g_d.group_catchup.limit, 100);
	/* from_seq 0 and limit 0 / over the bound are refused both ways */
	g_m.group_catchup.from_seq = 0;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	g_m.group_catchup.from_seq = 1;
	g_m.group_catchup.limit = PARLEY_PROTO_MAX_HISTORY + 1;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);

	sample(PARLEY_T_HISTORY_PAGE, &g_m);
	roundtrip(&g_m, &g_d, 9);
	cr_assert_eq(g_d.history_page.count, 3);
	cr_assert_eq(g_d.history_page.msgs[2].seq, 47);
	cr_assert_eq(g_d.history_page.msgs[1].body.len, 0);
	cr_assert(parley_str_eq(g_d.history_page.msgs[1].sender, "bob"));
	cr_assert_eq(g_d.history_page.msgs[2].client_msg_id[0], 2);
	cr_assert_eq(g_d.history_page.flags, PARLEY_HISTF_END);
	cr_assert_eq(g_d.history_page.msgs[0].kind, PARLEY_EV_MESSAGE);
	cr_assert_eq(g_d.history_page.msgs[2].kind, PARLEY_EV_EDIT);
	cr_assert_eq(g_d.history_page.msgs[2].ref_seq, 12);
	cr_assert_eq(g_d.history_page.msgs[2].flags, PARLEY_MSGF_EDITED);

	sample(PARLEY_T_CONV_LIST_OK, &g_m);
	roundtrip(&g_m, &g_d, 9);
	cr_assert_eq(g_d.conv_list_ok.entries[1].member_count, 300);
	cr_assert_eq(g_d.conv_list_ok.entries[1].peer.len, 0);
	cr_assert(parley_str_eq(g_d.conv_list_ok.entries[0].peer, "bob"));
	cr_assert_eq(g_d.conv_list_ok.entries[0].read_seq, 7);
	cr_assert_eq(g_d.conv_list_ok.entries[0].unread, 2);
	cr_assert(parley_str_eq(g_d.conv_list_ok.entries[0].last_sender, "bob"));
	cr_assert_eq(g_d.conv_list_ok.entries[0].preview.len, 10);
	cr_assert(parley_str_eq(g_d.conv_list_ok.entries[1].title, "Team ünïcode"));
	cr_assert_eq(g_d.conv_list_ok.entries[1].flags, PARLEY_CONVF_LEFT);
	cr_assert_eq(g_d.conv_list_ok.entries[0].flags, 0);

	sample(PARLEY_T_GROUP_SET, &g_m);
	roundtrip(&g_m, &g_d, 9);
	cr_assert(parley_str_eq(g_d.group_set.conv, "g:0123456789abcdef"));
	cr_assert_eq(g_d.group_set.fields, PARLEY_GSET_NAME | PARLEY_GSET_SETTINGS);
	cr_assert(parley_str_eq(g_d.group_set.name, "Renamed ünïcode"));
	cr_assert_eq(g_d.group_set.settings, PARLEY_GROUPF_HISTORY_ALL);
	sample(PARLEY_T_GROUP_SET_OK, &g_m);
	roundtrip(&g_m, &g_d, 9);
	cr_assert_eq(g_d.group_ok.seq, 42);

	cr_assert_eq(g_d.conv_list_ok.next_before_ts_ms, 1234);
	cr_assert(parley_str_eq(g_d.conv_list_ok.next_before_conv, "g:team"));

	sample(PARLEY_T_CONV_LIST, &g_m);
	roundtrip(&g_m, &g_d, 9);
	cr_assert_eq(g_d.conv_list.before_ts_ms, 1764000000999ull);
	cr_assert(parley_str_eq(g_d.conv_list.before_conv, "d:alice:carol"));

	sample(PARLEY_T_READ_MARKER_OK, &g_m);
	roundtrip(&g_m, &g_d, 9);
	cr_assert_eq(g_d.read_marker_ok.read_seq, 42);
	cr_assert_eq(g_d.read_marker_ok.flags, PARLEY_READF_STALE);

	sample(PARLEY_T_RECEIPTS_OK, &g_m);
	roundtrip(&g_m, &g_d, 9);
	cr_assert_eq(g_d.receipts_ok.count, 2);
	cr_assert_eq(g_d.receipts_ok.member_count, 500);
	cr_assert(parley_str_eq(g_d.receipts_ok.recs[1].user, "erin"));
	cr_assert_eq(g_d.receipts_ok.recs[0].read_seq, 8);
	cr_assert_eq(g_d.receipts_ok.recs[1].delivered_seq, 7);
	cr_assert(parley_str_eq(g_d.receipts_ok.next_after, "erin"));

	sample(PARLEY_T_HELLO_OK, &g_m);
	roundtrip(&g_m, &g_d, 1);
	cr_assert_eq(g_d.hello_ok.max_frame, 1u << 20);
	cr_assert_eq(g_d.hello_ok.server_time_ms, 1764000000000ull);
}

Test(codec, hist_msg_size_matches_encoding)
{
	sample(PARLEY_T_HISTORY_PAGE, &g_m);
	int n = parley_proto_size(&g_m);
	size_t expect = 12 + 2 + 11 + 8 + 1 + 2;
	for (int i = 0; i < 3; i++)
		expect += parley_proto_hist_msg_size(&g_m.history_page.msgs[i]);
	cr_assert_eq((size_t)n, expect);
}

/* Records and payloads from a peer of the first version end before the
 * fields appended on 2026-12-04: they decode, with those fields 0/empty. */
static int cut_tail(uint8_t *f, int n, size_t rec_len_at, size_t cut)
{
	le_put32(f, le_get32(f) - (uint32_t)cut);
	if (rec_len_at)
		le_put32(f + rec_len_at, le_get32(f + rec_len_at) - (uint32_t)cut);
	return n - (int)cut;
}
Test(codec, records_without_appended_fields_decode_with_defaults)
{
	struct parley_frame f;
	/* EVENT: ref_seq u64 + flags u32 at the end of the payload */
	sample(PARLEY_T_EVENT, &g_m);
	int n = parley_proto_encode(g_buf, sizeof g_buf, 0, &g_m);
	n = cut_tail(g_buf, n, 0, 12);
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f), n);
	cr_assert_eq(parley_proto_decode(&f, &g_d), 0);
	cr_assert_eq(g_d.event.ref_seq, 0);
	cr_assert_eq(g_d.event.flags, 0);
	cr_assert_eq(g_d.event.body.len, 2);
	/* a cut inside the appended group is malformed, not silently zero */
	n = parley_proto_encode(g_buf, sizeof g_buf, 0, &g_m);
	n = cut_tail(g_buf, n, 0, 4);
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f), n);
	cr_assert_lt(parley_proto_decode(&f, &g_d), 0);

	/* HISTORY_PAGE with one record: kind u16 + ref_seq u64 + flags u32 */
	sample(PARLEY_T_HISTORY_PAGE, &g_m);
	g_m.history_page.count = 1;
	g_m.history_page.msgs[0].kind = PARLEY_EV_DELETE;
	n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	size_t rec_at = 12 + 2 + 11 + 8 + 1 + 2;
	n = cut_tail(g_buf, n, rec_at, 14);
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f), n);
	cr_assert_eq(parley_proto_decode(&f, &g_d), 0);
	cr_assert_eq(g_d.history_page.msgs[0].kind, PARLEY_EV_MESSAGE);
	cr_assert_eq(g_d.history_page.msgs[0].ref_seq, 0);
	cr_assert_eq(g_d.history_page.msgs[0].body.len, 8);

	/* CONV_LIST_OK with one record: title, read_seq, unread, last_sender,
	 * last_content_type, preview */
	sample(PARLEY_T_CONV_LIST_OK, &g_m);
	g_m.conv_list_ok.count = 1;
	n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	n = cut_tail(g_buf, n, 0, 1 + 8 + 2 + 6); /* the page trailer */
	size_t tail = 2 + 0 + 8 + 4 + 2 + 3 + 2 + 4 + 10 + 1;
	n = cut_tail(g_buf, n, 12 + 2, tail);
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f), n);
	cr_assert_eq(parley_proto_decode(&f, &g_d), 0);
	cr_assert_eq(g_d.conv_list_ok.entries[0].unread, 0);
	cr_assert_eq(g_d.conv_list_ok.entries[0].preview.len, 0);
	cr_assert(parley_str_eq(g_d.conv_list_ok.entries[0].peer, "bob"));
	cr_assert_eq(g_d.conv_list_ok.flags, 0);
	cr_assert_eq(g_d.conv_list_ok.next_before_conv.len, 0);

	/* CONV_LIST_OK record without the later flags byte: flags 0 */
	sample(PARLEY_T_CONV_LIST_OK, &g_m);
	g_m.conv_list_ok.count = 1;
	g_m.conv_list_ok.entries[0].flags = PARLEY_CONVF_LEFT;
	n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	n = cut_tail(g_buf, n, 0, 1 + 8 + 2 + 6); /* the page trailer */
	n = cut_tail(g_buf, n, 12 + 2, 1);
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f), n);
	cr_assert_eq(parley_proto_decode(&f, &g_d), 0);
	cr_assert_eq(g_d.conv_list_ok.entries[0].flags, 0);
	cr_assert_eq(g_d.conv_list_ok.entries[0].preview.len, 10);

	/* CONV_LIST of the first version: limit only */
	sample(PARLEY_T_CONV_LIST, &g_m);
	n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	n = cut_tail(g_buf, n, 0, 8 + 2 + 13);
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f), n);
	cr_assert_eq(parley_proto_decode(&f, &g_d), 0);
	cr_assert_eq(g_d.conv_list.limit, 100);
	cr_assert_eq(g_d.conv_list.before_ts_ms, 0);
	cr_assert_eq(g_d.conv_list.before_conv.len, 0);
}

/* ERROR NOTLEADER's appended leader hint (PROTOCOL.md, ERROR): it
 * round-trips; an ERROR without it is byte for byte what it was and
 * decodes with 0 / empty; a bad address is refused both ways. */
Test(codec, error_leader_hint_roundtrips_and_is_optional)
{
	struct parley_frame f;
	struct parley_msg m = {.type = PARLEY_T_ERROR};
	m.error = (struct parley_error_msg){
		.code = PARLEY_ENOTLEADER, .retry_after_ms = 50,
		.text = S("not the leader"), .leader_node = 3,
		.leader_addr = S("10.0.0.3:7411"),
		.leader_tls_addr = S("[fd00::3]:7412")};
	int n = parley_proto_encode(g_buf, sizeof g_buf, 9, &m);
	cr_assert_gt(n, 0);
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f), n);
	cr_assert_eq(parley_proto_decode(&f, &g_d), 0);
	cr_assert_eq(g_d.error.code, PARLEY_ENOTLEADER);
	cr_assert_eq(g_d.error.leader_node, 3);
	cr_assert_eq(g_d.error.leader_addr.len, 13);
	cr_assert(!memcmp(g_d.error.leader_addr.p, "10.0.0.3:7411", 13));
	cr_assert_eq(g_d.error.leader_tls_addr.len, 14);
	cr_assert(!memcmp(g_d.error.leader_tls_addr.p, "[fd00::3]:7412", 14));
	/* without a hint: the v1 bytes (code, flags, retry, text) and no more */
	struct parley_msg old = m;
	old.error.leader_node = 0;
	old.error.leader_addr = old.error.leader_tls_addr = (struct parley_str){0};
	int k = parley_proto_encode(g_buf2, sizeof g_buf2, 9, &old);
	cr_assert_eq(k, PARLEY_PROTO_HEADER_SIZE + 4 + 2 + 4 + 2 + 14);
	cr_assert_eq(n, k + 8 + 2 + 13 + 2 + 14);
	cr_assert(!memcmp(g_buf + PARLEY_PROTO_HEADER_SIZE,
			  g_buf2 + PARLEY_PROTO_HEADER_SIZE,
			  (size_t)k - PARLEY_PROTO_HEADER_SIZE));
	cr_assert_eq(parley_proto_frame_decode(g_buf2, (size_t)k, 1u << 20, &f), k);
	cr_assert_eq(parley_proto_decode(&f, &g_d), 0);
	cr_assert_eq(g_d.error.leader_node, 0);
	cr_assert_eq(g_d.error.leader_addr.len, 0);
	cr_assert_eq(g_d.error.leader_tls_addr.len, 0);
	/* the node id alone is a hint too */
	old.error.leader_node = 2;
	k = parley_proto_encode(g_buf2, sizeof g_buf2, 9, &old);
	cr_assert_eq(parley_proto_frame_decode(g_buf2, (size_t)k, 1u << 20, &f), k);
	cr_assert_eq(parley_proto_decode(&f, &g_d), 0);
	cr_assert_eq(g_d.error.leader_node, 2);
	/* a space or a control byte is no address */
	m.error.leader_addr = S("10.0.0.3 7411");
	cr_assert_lt(parley_proto_encode(g_buf, sizeof g_buf, 9, &m), 0);
	m.error.leader_addr = S("10.0.0.3:7411");
	n = parley_proto_encode(g_buf, sizeof g_buf, 9, &m);
	g_buf[n - 14 - 2 - 13 + 2] = '\n'; /* inside leader_addr */
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f), n);
	cr_assert_lt(parley_proto_decode(&f, &g_d), 0);
}

Test(codec, frame_cut_anywhere_is_incomplete)
{
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(ALL_TYPES); i++) {
		sample(ALL_TYPES[i], &g_m);
		int n = parley_proto_encode(g_buf, sizeof g_buf, 7, &g_m);
		cr_assert_gt(n, 0);
		for (int k = 0; k < n; k++) {
			/* copy to an exact-size heap block so ASan sees over-reads */
			uint8_t *p = malloc(k ? (size_t)k : 1);
			memcpy(p, g_buf, (size_t)k);
			struct parley_frame f;
			int r = parley_proto_frame_decode(p, (size_t)k, 1u << 20, &f);
			cr_assert_eq(r, -PARLEY_EINCOMPLETE, "%s cut at %d: %d",
				     parley_proto_type_name(ALL_TYPES[i]), k, r);
			free(p);
		}
	}
}

Test(codec, payload_cut_anywhere_is_malformed)
{
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(ALL_TYPES); i++) {
		sample(ALL_TYPES[i], &g_m);
		int n = parley_proto_encode(g_buf, sizeof g_buf, 7, &g_m);
		cr_assert_gt(n, 0);
		size_t plen = (size_t)n - 12;
		for (size_t k = 0; k < plen; k++) {
			/* EVENT's appended ref_seq+flags may be absent as a whole */
			if (ALL_TYPES[i] == PARLEY_T_EVENT && k == plen - 12)
				continue;
			/* so may CONV_LIST's cursor (u64 + str "d:alice:carol")
			 * and CONV_LIST_OK's trailer (u8 + u64 + str "g:team") */
			if (ALL_TYPES[i] == PARLEY_T_CONV_LIST && k == plen - 23)
				continue;
			if (ALL_TYPES[i] == PARLEY_T_CONV_LIST_OK && k == plen - 17)
				continue;
			/* and ERROR's leader hint (u64 + str + empty str) */
			if (ALL_TYPES[i] == PARLEY_T_ERROR && k == plen - 26)
				continue;
			uint8_t *p = malloc(k ? k : 1);
			memcpy(p, g_buf + 12, k);
			int r = parley_proto_decode_payload(ALL_TYPES[i], p, k, &g_d);
			cr_assert_eq(r, -PARLEY_EPROTO, "%s payload cut at %zu: %d",
				     parley_proto_type_name(ALL_TYPES[i]), k, r);
			free(p);
		}
	}
}

Test(codec, trailing_bytes_are_ignored)
{
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(ALL_TYPES); i++) {
		sample(ALL_TYPES[i], &g_m);
		int n = parley_proto_encode(g_buf, sizeof g_buf, 7, &g_m);
		memcpy(g_buf + n, "\x01\x02\x03", 3);
		cr_assert_eq(parley_proto_decode_payload(ALL_TYPES[i], g_buf + 12,
							 (size_t)n - 12 + 3, &g_d),
			     0);
	}
}

Test(codec, oversized_and_bad_headers)
{
	uint8_t h[12] = {0};
	struct parley_frame f;
	/* length announces 1 MiB + 1 whole frame: refused from 4 bytes on */
	le_put32(h, (1u << 20) - 4 + 1);
	cr_assert_eq(parley_proto_frame_decode(h, 4, 1u << 20, &f), -PARLEY_ETOOBIG);
	cr_assert_eq(parley_proto_frame_decode(h, 12, 1u << 20, &f), -PARLEY_ETOOBIG);
	/* exactly max_frame is fine (incomplete here) */
	le_put32(h, (1u << 20) - 4);
	cr_assert_eq(parley_proto_frame_decode(h, 12, 1u << 20, &f),
		     -PARLEY_EINCOMPLETE);
	/* a max_frame above the hard cap is clamped */
	le_put32(h, PARLEY_PROTO_MAX_FRAME_HARD);
	cr_assert_eq(parley_proto_frame_decode(h, 4, UINT32_MAX, &f), -PARLEY_ETOOBIG);
	le_put32(h, UINT32_MAX);
	cr_assert_eq(parley_proto_frame_decode(h, 4, UINT32_MAX, &f), -PARLEY_ETOOBIG);
	/* length below the header */
	for (uint32_t l = 0; l < 8; l++) {
		le_put32(h, l);
		cr_assert_eq(parley_proto_frame_decode(h, 12, 1u << 20, &f),
			     -PARLEY_EPROTO);
	}
	/* unknown flag bits */
	parley_proto_header_put(h, PARLEY_T_PING, 0x0002, 1, 0);
	cr_assert_eq(parley_proto_frame_decode(h, 12, 1u << 20, &f), -PARLEY_EPROTO);
	cr_assert_eq(parley_proto_frame_decode(h, 8, 1u << 20, &f), -PARLEY_EPROTO);
	/* an empty payload frame decodes; the PING payload is then malformed */
	parley_proto_header_put(h, PARLEY_T_PING, 0, 1, 0);
	cr_assert_eq(parley_proto_frame_decode(h, 12, 1u << 20, &f), 12);
	cr_assert_eq(parley_proto_decode(&f, &g_d), -PARLEY_EPROTO);
	/* unknown and reserved types */
	cr_assert_eq(parley_proto_decode_payload(0x7777, NULL, 0, &g_d),
		     -PARLEY_EVERSION);
	cr_assert_eq(parley_proto_decode_payload(0x0024, NULL, 0,
						 &g_d),
		     -PARLEY_EVERSION);
	/* compressed frames must be decompressed before decoding */
	parley_proto_header_put(h, PARLEY_T_PING, PARLEY_FLAG_ZSTD, 1, 0);
	cr_assert_eq(parley_proto_frame_decode(h, 12, 1u << 20, &f), 12);
	cr_assert_eq(parley_proto_decode(&f, &g_d), -PARLEY_EINVAL);
}

Test(codec, two_frames_back_to_back)
{
	sample(PARLEY_T_SEND, &g_m);
	int a = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	sample(PARLEY_T_PING, &g_m);
	int b = parley_proto_encode(g_buf + a, sizeof g_buf - (size_t)a, 2, &g_m);
	struct parley_frame f;
	cr_assert_eq(parley_proto_frame_decode(g_buf, (size_t)(a + b), 1u << 20, &f), a);
	cr_assert_eq(f.type, PARLEY_T_SEND);
	cr_assert_eq(parley_proto_frame_decode(g_buf + a, (size_t)b, 1u << 20, &f), b);
	cr_assert_eq(f.type, PARLEY_T_PING);
	cr_assert_eq(f.request_id, 2);
}

Test(codec, encoder_respects_cap)
{
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(ALL_TYPES); i++) {
		sample(ALL_TYPES[i], &g_m);
		int n = parley_proto_size(&g_m);
		cr_assert_gt(n, 0);
		for (int cap = 0; cap < n; cap++) {
			memset(g_buf, 0xAB, (size_t)n + 16);
			cr_assert_eq(parley_proto_encode(g_buf, (size_t)cap, 1, &g_m),
				     -PARLEY_ETOOBIG);
			for (int k = cap; k < n + 16; k++)
				cr_assert_eq(g_buf[k], 0xAB, "%s cap %d wrote at %d",
					     parley_proto_type_name(ALL_TYPES[i]), cap, k);
		}
	}
	cr_assert_eq(parley_proto_encode(NULL, 0, 1, &g_m), -PARLEY_ETOOBIG);
}

Test(codec, encoder_refuses_limit_breaks)
{
	sample(PARLEY_T_CONV, &g_m);
	g_m.conv.member_count = PARLEY_PROTO_MAX_MEMBERS + 1;
	cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_HISTORY, &g_m);
	g_m.history.limit = 0;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	g_m.history.limit = 101;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_CONV_OPEN, &g_m);
	g_m.conv_open.peer = S("a:b"); /* a string; the server says INVAL */
	cr_assert(parley_proto_size(&g_m) > 0);
	g_m.conv_open.peer = S("");
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	g_m.conv_open.peer = (struct parley_str){"\xff\xfe", 2};
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_HISTORY_PAGE, &g_m);
	g_m.history_page.count = 101;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_CONV_LIST, &g_m);
	g_m.conv_list.limit = 101;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_RECEIPTS, &g_m);
	g_m.receipts.limit = 0;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	g_m.receipts.limit = PARLEY_PROTO_MAX_RECEIPTS + 1;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_RECEIPTS_OK, &g_m);
	g_m.receipts_ok.count = PARLEY_PROTO_MAX_RECEIPTS + 1;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_READ_MARKER, &g_m);
	g_m.read_marker.conv = S("");
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	g_m.type = 0x0024; /* allocated, not defined yet: no encoding */
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	/* a body that cannot fit any frame */
	sample(PARLEY_T_SEND, &g_m);
	g_m.send.body.len = PARLEY_PROTO_MAX_FRAME_HARD;
	g_m.send.body.p = g_buf;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	/* max-size members encode and decode */
	sample(PARLEY_T_CONV, &g_m);
	g_m.conv.member_count = PARLEY_PROTO_MAX_MEMBERS;
	for (int i = 0; i < PARLEY_PROTO_MAX_MEMBERS; i++) {
		snprintf(g_names[i], sizeof g_names[i], "user%d", i);
		g_m.conv.members[i] = S(g_names[i]);
	}
	roundtrip(&g_m, &g_d, 3);
	cr_assert(parley_str_eq(g_d.conv.members[1023], "user1023"));
}

/* Build a payload by hand to test decoder checks the encoder never emits. */
Test(codec, decoder_refuses_bad_counts_and_lengths)
{
	uint8_t p[256];
	size_t n;
	struct le_reader dummy;
	(void)dummy;

	/* CONV: member_count 1025 */
	n = 0;
	le_put16(p, 1), p[2] = 'c', n = 3;
	p[n++] = 1, p[n++] = 0;
	memset(p + n, 0, 16), n += 16;
	le_put16(p + n, PARLEY_PROTO_MAX_MEMBERS + 1), n += 2;
	for (int i = 0; i < 60; i++)
		le_put16(p + n, 1), p[n + 2] = 'x', n += 3;
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV, p, n, &g_d),
		     -PARLEY_EPROTO);
	/* CONV: count 5 but only 2 members present */
	n = 3 + 2 + 16;
	le_put16(p + n, 5), n += 2;
	for (int i = 0; i < 2; i++)
		le_put16(p + n, 1), p[n + 2] = 'x', n += 3;
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV, p, n, &g_d),
		     -PARLEY_EPROTO);
	/* same with the right count: accepted */
	le_put16(p + 3 + 2 + 16, 2);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV, p, n, &g_d), 0);
	cr_assert_eq(g_d.conv.member_count, 2);

	/* HISTORY_PAGE: one record whose length runs past the payload */
	sample(PARLEY_T_HISTORY_PAGE, &g_m);
	g_m.history_page.count = 1;
	int fl = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	size_t rec_at = 12 + 2 + 11 + 8 + 1 + 2;
	uint32_t rl = le_get32(g_buf + rec_at);
	le_put32(g_buf + rec_at, rl + 1);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_HISTORY_PAGE, g_buf + 12,
						 (size_t)fl - 12, &g_d),
		     -PARLEY_EPROTO);
	/* record length shorter than its fields */
	le_put32(g_buf + rec_at, rl - 1);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_HISTORY_PAGE, g_buf + 12,
						 (size_t)fl - 12, &g_d),
		     -PARLEY_EPROTO);
	/* HISTORY_PAGE count over the bound */
	le_put32(g_buf + rec_at, rl);
	le_put16(g_buf + rec_at - 2, PARLEY_PROTO_MAX_HISTORY + 1);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_HISTORY_PAGE, g_buf + 12,
						 (size_t)fl - 12, &g_d),
		     -PARLEY_EPROTO);

	/* SEND: body length beyond the payload */
	sample(PARLEY_T_SEND, &g_m);
	fl = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	size_t body_at = 12 + 2 + 11 + 16 + 2;
	le_put32(g_buf + body_at, 12);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_SEND, g_buf + 12,
						 (size_t)fl - 12, &g_d),
		     -PARLEY_EPROTO);
	le_put32(g_buf + body_at, UINT32_MAX);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_SEND, g_buf + 12,
						 (size_t)fl - 12, &g_d),
		     -PARLEY_EPROTO);
	/* conv string length beyond the payload / over its limit */
	le_put32(g_buf + body_at, 11);
	le_put16(g_buf + 12, 0xFFFF);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_SEND, g_buf + 12,
						 (size_t)fl - 12, &g_d),
		     -PARLEY_EPROTO);
	le_put16(g_buf + 12, 0);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_SEND, g_buf + 12,
						 (size_t)fl - 12, &g_d),
		     -PARLEY_EPROTO, "empty conv id");

	/* invalid UTF-8 in a CONV_OPEN peer is malformed; a well-formed
	 * string that is not a user id ("a:b") decodes, and the server
	 * answers INVAL (PROTOCOL.md) */
	uint8_t a[8];
	le_put16(a, 2), a[2] = 0xC0, a[3] = 0x80; /* overlong NUL */
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV_OPEN, a, 4, &g_d),
		     -PARLEY_EPROTO);
	le_put16(a, 3), memcpy(a + 2, "a:b", 3);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV_OPEN, a, 5, &g_d), 0);
	le_put16(a, 3), memcpy(a + 2, "abc", 3);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV_OPEN, a, 5, &g_d), 0);

	/* HISTORY / CONV_LIST limits */
	le_put16(a, 0);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV_LIST, a, 2, &g_d),
		     -PARLEY_EPROTO);
	le_put16(a, 101);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV_LIST, a, 2, &g_d),
		     -PARLEY_EPROTO);
	le_put16(a, 100);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_CONV_LIST, a, 2, &g_d), 0);
}

Test(codec, utf8_validator)
{
	cr_assert(parley_proto_utf8_valid("", 0));
	cr_assert(parley_proto_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
	cr_assert(!parley_proto_utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
	cr_assert(!parley_proto_utf8_valid("\xe0\x80\xaf", 3)); /* overlong */
	cr_assert(!parley_proto_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	cr_assert(!parley_proto_utf8_valid("\xc3", 1)); /* truncated */
	cr_assert(!parley_proto_utf8_valid("\x80", 1));
	cr_assert(!parley_proto_utf8_valid("\xff", 1));
}

Test(codec, user_id_syntax)
{
	static const char *ok[] = {"alice", "Bob", "7", "a.b_c-d", "x@example.com",
				   "auth0|5f3a", "google-oauth2|1234", "a+b=c"};
	static const char *bad[] = {"", "--help", "-x", ".hidden", "_a", "a:b",
				    "a b", "caf\xc3\xa9", "a\x01", "a/b", "a\\b",
				    "@alice", "a\x7f"};
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
		cr_assert(parley_proto_user_id_valid(ok[i], strlen(ok[i])), "%s", ok[i]);
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		cr_assert(!parley_proto_user_id_valid(bad[i], strlen(bad[i])), "%s",
			  bad[i]);
	cr_assert(!parley_proto_user_id_valid("bob\0mallory", 12)); /* embedded NUL */
	char l[122];
	memset(l, 'a', sizeof l);
	cr_assert(parley_proto_user_id_valid(l, 120));
	cr_assert(!parley_proto_user_id_valid(l, 121));
}

Test(codec, dm_conv_id)
{
	char out[256];
	cr_assert_eq(parley_proto_dm_conv_id("bob", 3, "alice", 5, out, sizeof out), 11);
	cr_assert_str_eq(out, "d:alice:bob");
	cr_assert_eq(parley_proto_dm_conv_id("alice", 5, "bob", 3, out, sizeof out), 11);
	cr_assert_str_eq(out, "d:alice:bob");
	/* common prefix: the shorter is smaller, both ways */
	parley_proto_dm_conv_id("bobby", 5, "bob", 3, out, sizeof out);
	cr_assert_str_eq(out, "d:bob:bobby");
	parley_proto_dm_conv_id("bob", 3, "bobby", 5, out, sizeof out);
	cr_assert_str_eq(out, "d:bob:bobby");
	/* byte order, not locale order: 'B' (0x42) < 'a' (0x61) */
	parley_proto_dm_conv_id("a", 1, "B", 1, out, sizeof out);
	cr_assert_str_eq(out, "d:B:a");
	cr_assert_eq(parley_proto_dm_conv_id("bob", 3, "bob", 3, out, sizeof out),
		     -PARLEY_EINVAL);
	cr_assert_eq(parley_proto_dm_conv_id("a:b", 3, "c", 1, out, sizeof out),
		     -PARLEY_EINVAL);
	cr_assert_eq(parley_proto_dm_conv_id("", 0, "c", 1, out, sizeof out),
		     -PARLEY_EINVAL);
	cr_assert_eq(parley_proto_dm_conv_id("alice", 5, "bob", 3, out, 11),
		     -PARLEY_ETOOBIG);
	cr_assert_eq(parley_proto_dm_conv_id("alice", 5, "bob", 3, out, 12), 11);
	/* the longest ids fit in 246 bytes and form a valid conv id */
	char a[121], b[121];
	memset(a, 'a', 120), a[120] = 0;
	memset(b, 'b', 120), b[120] = 0;
	int n = parley_proto_dm_conv_id(a, 120, b, 120, out, 246);
	cr_assert_eq(n, 243);
	cr_assert_leq(n, PARLEY_PROTO_MAX_CONV_ID);
}

/* ---- the examples in docs/PROTOCOL.md ---------------------------------------- */

Test(codec, protocol_md_examples)
{
	const char *src = getenv("PARLEY_SRC_DIR");
	char path[4096];
	snprintf(path, sizeof path, "%s/docs/PROTOCOL.md",
		 src ? src : PARLEY_SRC_DIR_DEFAULT);
	FILE *fp = fopen(path, "r");
	cr_assert_not_null(fp, "cannot open %s", path);
	static char doc[1 << 17];
	size_t dl = fread(doc, 1, sizeof doc - 1, fp);
	fclose(fp);
	doc[dl] = 0;

	int examples = 0;
	const char *p = doc;
	while ((p = strstr(p, "```\n")) != NULL) {
		const char *start = p + 4;
		const char *end = strstr(start, "```");
		if (!end)
			break;
		/* only blocks made of hex byte pairs and whitespace */
		uint8_t bytes[512];
		size_t nb = 0;
		int ishex = 1;
		for (const char *q = start; q < end && ishex;) {
			if (*q == ' ' || *q == '\n') {
				q++;
				continue;
			}
			unsigned v;
			if (end - q < 2 || sscanf(q, "%2x", &v) != 1 || nb == sizeof bytes ||
			    !((q[0] >= '0' && q[0] <= '9') || (q[0] >= 'a' && q[0] <= 'f'))) {
				ishex = 0;
				break;
			}
			bytes[nb++] = (uint8_t)v;
			q += 2;
		}
		p = end + 3;
		if (!ishex || nb < 12)
			continue;
		struct parley_frame f;
		int n = parley_proto_frame_decode(bytes, nb, 1u << 20, &f);
		cr_assert_eq(n, (int)nb, "example %d: frame decode %d", examples, n);
		cr_assert_eq(parley_proto_decode(&f, &g_d), 0, "example %d (%s)",
			     examples, parley_proto_type_name(f.type));
		int n2 = parley_proto_encode(g_buf, sizeof g_buf, f.request_id, &g_d);
		cr_assert_eq(n2, n);
		cr_assert(memcmp(g_buf, bytes, nb) == 0, "example %d re-encodes differently",
			  examples);
		examples++;
	}
	cr_assert_geq(examples, 12, "found %d hex examples", examples);

	/* and the exact bytes for two of them, from the sample builders */
	struct parley_msg m;
	memset(&m, 0, sizeof m);
	m.type = PARLEY_T_PING;
	m.ping.nonce = 0x0102030405060708ull;
	static const uint8_t ping[] = {0x10, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0,
				       8, 7, 6, 5, 4, 3, 2, 1};
	cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 3, &m), 20);
	cr_assert(memcmp(g_buf, ping, 20) == 0);
	m.type = PARLEY_T_EVENT_ACK;
	m.event_ack.up_to_inbox_seq = 5;
	static const uint8_t ack[] = {0x10, 0, 0, 0, 1, 0x40, 0, 0, 0, 0, 0, 0,
				      5, 0, 0, 0, 0, 0, 0, 0};
	cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 0, &m), 20);
	cr_assert(memcmp(g_buf, ack, 20) == 0);
}

/* ---- compression ------------------------------------------------------------ */

static uint8_t g_z[PARLEY_PROTO_MAX_FRAME_DEFAULT];
static uint8_t g_out[PARLEY_PROTO_MAX_FRAME_DEFAULT];

Test(codec, zstd_roundtrip)
{
	static char body[20000];
	for (size_t i = 0; i < sizeof body; i++)
		body[i] = "the quick brown fox jumps over the lazy dog "[i % 44];
	sample(PARLEY_T_SEND, &g_m);
	g_m.send.body = (struct parley_bytes){(const uint8_t *)body, sizeof body};
	int n = parley_proto_encode(g_buf, sizeof g_buf, 99, &g_m);
	cr_assert_gt(n, 20000);
	int z = parley_proto_compress(g_buf, (size_t)n, g_z, sizeof g_z, 3);
	cr_assert_gt(z, 12);
	cr_assert_lt(z, n / 10, "compressible text should shrink: %d of %d", z, n);
	struct parley_frame f;
	cr_assert_eq(parley_proto_frame_decode(g_z, (size_t)z, 1u << 20, &f), z);
	cr_assert_eq(f.flags, PARLEY_FLAG_ZSTD);
	cr_assert_eq(f.type, PARLEY_T_SEND);
	cr_assert_eq(f.request_id, 99);
	int d = parley_proto_decompress(&f, g_out, sizeof g_out - 12);
	cr_assert_eq(d, n - 12);
	cr_assert(memcmp(g_out, g_buf + 12, (size_t)d) == 0);
	cr_assert_eq(parley_proto_decode_payload(f.type, g_out, (size_t)d, &g_d), 0);
	cr_assert_eq(g_d.send.body.len, sizeof body);
	cr_assert(memcmp(g_d.send.body.p, body, sizeof body) == 0);
	/* a too-small output bound is refused, not overrun */
	memset(g_out, 0xAB, sizeof g_out);
	cr_assert_eq(parley_proto_decompress(&f, g_out, (size_t)d - 1), -PARLEY_ETOOBIG);
	cr_assert_eq(g_out[d - 1], 0xAB);
	/* an incompressible small frame is reported as not worth it */
	sample(PARLEY_T_PING, &g_m);
	n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	cr_assert_eq(parley_proto_compress(g_buf, (size_t)n, g_z, sizeof g_z, 3), 0);
	/* HELLO is never compressed; a partial frame is refused */
	sample(PARLEY_T_HELLO, &g_m);
	n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	cr_assert_eq(parley_proto_compress(g_buf, (size_t)n, g_z, sizeof g_z, 3),
		     -PARLEY_EINVAL);
	cr_assert_eq(parley_proto_compress(g_buf, (size_t)n - 1, g_z, sizeof g_z, 3),
		     -PARLEY_EINVAL);
	/* decompress of an uncompressed frame is a caller error */
	parley_proto_frame_decode(g_buf, (size_t)n, 1u << 20, &f);
	cr_assert_eq(parley_proto_decompress(&f, g_out, sizeof g_out), -PARLEY_EINVAL);
}

static int zframe(const uint8_t *payload, size_t plen)
{
	parley_proto_header_put(g_z, PARLEY_T_SEND, PARLEY_FLAG_ZSTD, 1,
				(uint32_t)plen);
	memcpy(g_z + 12, payload, plen);
	return (int)plen + 12;
}

Test(codec, zstd_bomb_is_bounded)
{
	/* 64 MiB of zeros compresses to a few KiB */
	size_t big = 64u << 20;
	uint8_t *zeros = calloc(1, big);
	cr_assert_not_null(zeros);
	size_t zb = ZSTD_compressBound(big);
	uint8_t *c = malloc(zb);
	size_t cl = ZSTD_compress(c, zb, zeros, big, 1);
	cr_assert(!ZSTD_isError(cl));
	cr_assert_lt(cl, sizeof g_z - 12);
	struct parley_frame f;
	int n = zframe(c, cl);
	cr_assert_eq(parley_proto_frame_decode(g_z, (size_t)n, 1u << 20, &f), n);
	cr_assert_eq(parley_proto_decompress(&f, g_out, sizeof g_out), -PARLEY_ETOOBIG);

	/* the same without a declared content size (streaming compression):
	 * decompression itself must stop at the bound */
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
	ZSTD_outBuffer ob = {c, zb, 0};
	ZSTD_inBuffer ib = {zeros, big, 0};
	size_t rem = ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end);
	cr_assert_eq(rem, 0);
	ZSTD_freeCCtx(cc);
	cr_assert_eq(ZSTD_getFrameContentSize(c, ob.pos), ZSTD_CONTENTSIZE_UNKNOWN);
	n = zframe(c, ob.pos);
	parley_proto_frame_decode(g_z, (size_t)n, 1u << 20, &f);
	memset(g_out + 4096, 0xAB, 16);
	cr_assert_eq(parley_proto_decompress(&f, g_out, 4096), -PARLEY_ETOOBIG);
	cr_assert_eq(g_out[4096], 0xAB, "wrote past the bound");

	/* garbage, trailing bytes after a valid frame, truncated frame */
	n = zframe((const uint8_t *)"not zstd at all", 15);
	parley_proto_frame_decode(g_z, (size_t)n, 1u << 20, &f);
	cr_assert_eq(parley_proto_decompress(&f, g_out, sizeof g_out), -PARLEY_EPROTO);
	cl = ZSTD_compress(c, zb, "hello hello hello", 17, 1);
	memcpy(c + cl, "xx", 2);
	n = zframe(c, cl + 2);
	parley_proto_frame_decode(g_z, (size_t)n, 1u << 20, &f);
	cr_assert_eq(parley_proto_decompress(&f, g_out, sizeof g_out), -PARLEY_EPROTO);
	n = zframe(c, cl - 1);
	parley_proto_frame_decode(g_z, (size_t)n, 1u << 20, &f);
	cr_assert_eq(parley_proto_decompress(&f, g_out, sizeof g_out), -PARLEY_EPROTO);
	n = zframe(c, cl);
	parley_proto_frame_decode(g_z, (size_t)n, 1u << 20, &f);
	cr_assert_eq(parley_proto_decompress(&f, g_out, sizeof g_out), 17);
	free(c);
	free(zeros);
}

/* ---- randomized ------------------------------------------------------------- */

static uint64_t test_seed(void)
{
	const char *s = getenv("PARLEY_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 0) : parley_mono_ns();
	fprintf(stderr, "test_codec: seed=%llu (PARLEY_SEED=%llu replays)\n",
		(unsigned long long)seed, (unsigned long long)seed);
	return seed;
}

static char g_pool[1 << 16];
static size_t g_pool_n;

/* a random valid user id / text of up to max bytes, from a byte pool */
static struct parley_str rnd_str(struct parley_rng *r, size_t min, size_t max,
				 int user)
{
	size_t len = min + parley_rng_below(r, max - min + 1);
	if (g_pool_n + len > sizeof g_pool)
		g_pool_n = 0;
	char *p = g_pool + g_pool_n;
	static const char alpha[] = "abcdefghijklmnopqrstuvwxyz0123456789._-@ ";
	for (size_t i = 0; i < len; i++)
		p[i] = alpha[parley_rng_below(r, user ? 40 : 41)];
	if (user && len) /* user ids start with a letter or digit */
		p[0] = alpha[parley_rng_below(r, 36)];
	g_pool_n += len;
	return (struct parley_str){p, (uint16_t)len};
}

Test(codec, random_messages_roundtrip_and_mutations_never_crash)
{
	struct parley_rng rng = {test_seed()};
	static uint8_t body[4096];
	for (size_t i = 0; i < sizeof body; i++)
		body[i] = (uint8_t)parley_rng_next(&rng);
	for (int iter = 0; iter < 3000; iter++) {
		uint16_t t = ALL_TYPES[parley_rng_below(&rng, PARLEY_ARRAY_LEN(ALL_TYPES))];
		sample(t, &g_m);
		/* randomize the variable parts */
		switch (t) {
		case PARLEY_T_SEND:
			g_m.send.body = (struct parley_bytes){
				body, (uint32_t)parley_rng_below(&rng, sizeof body)};
			g_m.send.conv = rnd_str(&rng, 1, 250, 0);
			break;
		case PARLEY_T_HISTORY_PAGE:
			g_m.history_page.count =
				(uint16_t)parley_rng_below(&rng, PARLEY_PROTO_MAX_HISTORY + 1);
			for (int i = 0; i < g_m.history_page.count; i++) {
				struct parley_hist_msg *h = &g_m.history_page.msgs[i];
				h->seq = parley_rng_next(&rng);
				h->ts_ms = parley_rng_next(&rng);
				h->sender = rnd_str(&rng, 1, 120, 1);
				h->body = (struct parley_bytes){
					body, (uint32_t)parley_rng_below(&rng, 64)};
				h->content_type = (uint16_t)parley_rng_next(&rng);
			}
			break;
		case PARLEY_T_CONV_LIST_OK:
			g_m.conv_list_ok.count =
				(uint16_t)parley_rng_below(&rng, PARLEY_PROTO_MAX_LIST + 1);
			for (int i = 0; i < g_m.conv_list_ok.count; i++) {
				struct parley_conv_entry *e = &g_m.conv_list_ok.entries[i];
				e->conv = rnd_str(&rng, 1, 40, 0);
				e->peer = rnd_str(&rng, 0, 30, 1);
				e->last_seq = parley_rng_next(&rng);
				e->kind = (uint8_t)parley_rng_next(&rng);
			}
			break;
		case PARLEY_T_ERROR:
			g_m.error.text = rnd_str(&rng, 0, 1024, 0);
			g_m.error.code = (uint32_t)parley_rng_next(&rng);
			break;
		case PARLEY_T_EVENT:
			g_m.event.inbox_seq = parley_rng_next(&rng);
			g_m.event.sender = rnd_str(&rng, 1, 120, 1);
			g_m.event.body = (struct parley_bytes){
				body, (uint32_t)parley_rng_below(&rng, sizeof body)};
			break;
		default:
			break;
		}
		int n = roundtrip(&g_m, &g_d, (uint32_t)parley_rng_next(&rng));
		/* mutate a few bytes and decode: any result but a crash is fine,
		 * and a success must again re-encode within bounds */
		int flips = 1 + (int)parley_rng_below(&rng, 4);
		for (int k = 0; k < flips; k++)
			g_buf[parley_rng_below(&rng, (uint64_t)n)] ^=
				(uint8_t)(1 + parley_rng_below(&rng, 255));
		size_t cut = (size_t)n - parley_rng_below(&rng, 3);
		uint8_t *copy = malloc(cut ? cut : 1);
		memcpy(copy, g_buf, cut);
		struct parley_frame f;
		int r = parley_proto_frame_decode(copy, cut, 1u << 20, &f);
		if (r > 0) {
			cr_assert_leq((size_t)r, cut);
			if (!(f.flags & PARLEY_FLAG_ZSTD) && parley_proto_decode(&f, &g_d) == 0) {
				int sz = parley_proto_size(&g_d);
				cr_assert_gt(sz, 0, "decoded message must re-encode");
			}
		} else {
			cr_assert(r == -PARLEY_EINCOMPLETE || r == -PARLEY_ETOOBIG ||
				  r == -PARLEY_EPROTO);
		}
		free(copy);
	}
}

/* Typing and presence: field limits on both sides. */
Test(codec, typing_presence_limits)
{
	uint8_t p[64];
	/* a typing state other than 0/1 */
	sample(PARLEY_T_TYPING, &g_m);
	g_m.typing.state = 2;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	memcpy(p, "\x03\x00" "d:a\x02", 6);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_TYPING, p, 6, &g_d),
		     -PARLEY_EPROTO);
	p[5] = 1;
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_TYPING, p, 6, &g_d), 0);
	cr_assert_eq(g_d.typing.state, PARLEY_TYPING_STARTED);
	/* PRESENCE_SUB: op, count 0 and over the bound, invalid user id */
	sample(PARLEY_T_PRESENCE_SUB, &g_m);
	g_m.presence_sub.op = 3;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_PRESENCE_SUB, &g_m);
	g_m.presence_sub.count = 0;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	g_m.presence_sub.count = PARLEY_PROTO_MAX_PRESENCE_USERS + 1;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	sample(PARLEY_T_PRESENCE_SUB, &g_m);
	g_m.presence_sub.users[1] = S("-bad");
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	memcpy(p, "\x01\x01\x00\x04\x00-bad", 9);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_PRESENCE_SUB, p, 9,
						 &g_d),
		     -PARLEY_EPROTO);
	memcpy(p, "\x01\x65\x00", 3); /* count 101 */
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_PRESENCE_SUB, p, 3,
						 &g_d),
		     -PARLEY_EPROTO);
	/* the largest PRESENCE_SUB round-trips */
	sample(PARLEY_T_PRESENCE_SUB, &g_m);
	g_m.presence_sub.count = PARLEY_PROTO_MAX_PRESENCE_USERS;
	for (int i = 0; i < PARLEY_PROTO_MAX_PRESENCE_USERS; i++) {
		snprintf(g_names[i], sizeof g_names[i], "user%d", i);
		g_m.presence_sub.users[i] = S(g_names[i]);
	}
	roundtrip(&g_m, &g_d, 9);
	cr_assert(parley_str_eq(g_d.presence_sub.users[99], "user99"));
	/* PRESENCE_SET: unknown flag bits */
	sample(PARLEY_T_PRESENCE_SET, &g_m);
	g_m.presence_set.flags = 0x80;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
	memcpy(p, "\x02\x00\x00\x00", 4);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_PRESENCE_SET, p, 4,
						 &g_d),
		     -PARLEY_EPROTO);
	/* PRESENCE push: bad status */
	sample(PARLEY_T_PRESENCE, &g_m);
	g_m.presence.status = 9;
	cr_assert_eq(parley_proto_size(&g_m), -PARLEY_EINVAL);
}

/* Groups: counts over the bound and names out of range are refused both
 * ways (encode EINVAL, decode EPROTO). */
Test(codec, group_limits)
{
	sample(PARLEY_T_GROUP_CREATE, &g_m);
	g_m.group_create.count = PARLEY_PROTO_MAX_GROUP_USERS + 1;
	cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m),
		     -PARLEY_EINVAL);
	sample(PARLEY_T_GROUP_CREATE, &g_m);
	g_m.group_create.name = S("");
	cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m),
		     -PARLEY_EINVAL);
	sample(PARLEY_T_GROUP_INFO, &g_m);
	g_m.group_info.limit = 0;
	cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m),
		     -PARLEY_EINVAL);
	/* a count the payload cannot hold */
	sample(PARLEY_T_GROUP_ADD, &g_m);
	int n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	cr_assert_gt(n, 0);
	size_t at = 12 + 2 + g_m.group_change.conv.len + 1;
	le_put16(g_buf + at, 200);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_GROUP_ADD, g_buf + 12,
						 (size_t)n - 12, &g_d),
		     -PARLEY_EPROTO);
	/* a user id that is not one */
	sample(PARLEY_T_GROUP_REMOVE, &g_m);
	g_m.group_change.users[0] = S("bad user");
	cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m),
		     -PARLEY_EINVAL);
}

Test(codec, group_set_shape)
{
	/* no field, an unknown field bit, a name without NAME: refused by
	 * the encoder, and by the decoder when a peer sends them */
	const uint8_t bad_fields[] = {0, 0x04, 0x80};
	for (size_t i = 0; i < sizeof bad_fields; i++) {
		sample(PARLEY_T_GROUP_SET, &g_m);
		g_m.group_set.fields = bad_fields[i];
		cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m),
			     -PARLEY_EINVAL, "fields 0x%x", bad_fields[i]);
	}
	sample(PARLEY_T_GROUP_SET, &g_m);
	g_m.group_set.fields = PARLEY_GSET_SETTINGS;
	cr_assert_eq(parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m),
		     -PARLEY_EINVAL, "a name without NAME");
	/* settings alone, empty name: fine */
	g_m.group_set.name = S("");
	int n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	cr_assert_gt(n, 0);
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_GROUP_SET, g_buf + 12,
						 (size_t)n - 12, &g_d), 0);
	cr_assert_eq(g_d.group_set.fields, PARLEY_GSET_SETTINGS);
	cr_assert_eq(g_d.group_set.name.len, 0);
	/* decoder: fields byte patched to 0 and to an unknown bit */
	size_t at = 12 + 2 + g_m.group_set.conv.len;
	for (size_t i = 0; i < sizeof bad_fields; i++) {
		g_buf[at] = bad_fields[i];
		cr_assert_eq(parley_proto_decode_payload(PARLEY_T_GROUP_SET, g_buf + 12,
							 (size_t)n - 12, &g_d),
			     -PARLEY_EPROTO, "fields 0x%x", bad_fields[i]);
	}
	/* decoder: a name sent without NAME */
	sample(PARLEY_T_GROUP_SET, &g_m);
	n = parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m);
	cr_assert_gt(n, 0);
	g_buf[at] = PARLEY_GSET_SETTINGS;
	cr_assert_eq(parley_proto_decode_payload(PARLEY_T_GROUP_SET, g_buf + 12,
						 (size_t)n - 12, &g_d),
		     -PARLEY_EPROTO);
	/* a value the server judges (not the codec): a 256-byte name and an
	 * unknown settings bit still encode, so the server's INVAL is testable */
	static char longname[257];
	memset(longname, 'n', 256);
	sample(PARLEY_T_GROUP_SET, &g_m);
	g_m.group_set.name = S(longname);
	g_m.group_set.settings = 0x80;
	cr_assert_gt(parley_proto_encode(g_buf, sizeof g_buf, 1, &g_m), 0);
}
