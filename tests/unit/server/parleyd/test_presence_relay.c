/*
 * test_presence_relay.c — the PEER_FRAME_PRES payload
 * (server/presence_relay.c): every kind round-trips, the bounds are
 * refused on encode, and malformed payloads (short, trailing bytes, bad
 * version / kind / lengths, every truncation) are refused on decode.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "presence_relay.h"

static struct parley_str S(const char *s)
{
	return (struct parley_str){s, (uint16_t)strlen(s)};
}

static uint8_t buf[PRELAY_MAX];

Test(presence_relay, typing_round_trip)
{
	struct prelay_msg m = {.kind = PRELAY_TYPING, .started = 1,
			       .arg = 5000, .conv = S("g:abc"),
			       .user = S("ulli"), .count = 2};
	m.users[0] = S("wanda");
	m.users[1] = S("gus");
	int n = prelay_encode(buf, sizeof buf, &m);
	cr_assert_eq(n, (int)(PRELAY_HDR + 5 + 4 + 1 + 5 + 1 + 3));
	struct prelay_msg d;
	cr_assert_eq(prelay_decode(buf, (size_t)n, &d), 0);
	cr_assert_eq(d.kind, PRELAY_TYPING);
	cr_assert_eq(d.started, 1);
	cr_assert_eq(d.arg, 5000);
	cr_assert(d.conv.len == 5 && !memcmp(d.conv.p, "g:abc", 5));
	cr_assert(d.user.len == 4 && !memcmp(d.user.p, "ulli", 4));
	cr_assert_eq(d.count, 2);
	cr_assert(d.users[1].len == 3 && !memcmp(d.users[1].p, "gus", 3));
}

/* The messages presence.c sends without a conv or user (RESEND, SET_END,
 * ONLINE) leave those strings {NULL, 0}: encoding them must not hand
 * memcpy a NULL pointer (undefined even for 0 bytes; the fuzz build's
 * UBSan aborts on it, found by tests/fuzz/fuzz_peer.c's seed generator). */
Test(presence_relay, empty_strings_without_bytes)
{
	static const uint8_t kinds[] = {PRELAY_RESEND, PRELAY_SET_END,
					PRELAY_ONLINE};
	for (size_t i = 0; i < sizeof kinds; i++) {
		struct prelay_msg m = {.kind = kinds[i], .arg = 7};
		int n = prelay_encode(buf, sizeof buf, &m);
		cr_assert_eq(n, (int)PRELAY_HDR, "kind %u: %d", kinds[i], n);
		struct prelay_msg d;
		cr_assert_eq(prelay_decode(buf, (size_t)n, &d), 0);
		cr_assert_eq(d.kind, kinds[i]);
		cr_assert_eq(d.arg, 7);
		cr_assert(!d.conv.len && !d.user.len && !d.count);
	}
}

Test(presence_relay, every_kind_and_full_payload)
{
	static char ids[PRELAY_USERS_MAX][PARLEY_PROTO_MAX_USER_ID + 1];
	char conv[PARLEY_PROTO_MAX_CONV_ID + 1];
	memset(conv, 'c', PARLEY_PROTO_MAX_CONV_ID);
	conv[PARLEY_PROTO_MAX_CONV_ID] = '\0';
	for (uint8_t k = PRELAY_ONLINE; k <= PRELAY_SET_END; k++) {
		struct prelay_msg m = {.kind = k, .count = PRELAY_USERS_MAX,
				       .conv = S(conv), .arg = 0xdeadbeef};
		for (unsigned i = 0; i < PRELAY_USERS_MAX; i++) {
			memset(ids[i], 'a' + i % 26, PARLEY_PROTO_MAX_USER_ID);
			ids[i][PARLEY_PROTO_MAX_USER_ID] = '\0';
			m.users[i] = S(ids[i]);
		}
		m.user = S(ids[0]);
		int n = prelay_encode(buf, sizeof buf, &m);
		cr_assert_eq(n, (int)PRELAY_MAX, "kind %u: %d", k, n);
		struct prelay_msg d;
		cr_assert_eq(prelay_decode(buf, (size_t)n, &d), 0);
		cr_assert_eq(d.kind, k);
		cr_assert_eq(d.arg, 0xdeadbeef);
		cr_assert_eq(d.count, PRELAY_USERS_MAX);
		cr_assert(!memcmp(d.users[63].p, ids[63], d.users[63].len));
		/* every truncation and one trailing byte are refused */
		for (int cut = 0; cut < n; cut++)
			cr_assert_eq(prelay_decode(buf, (size_t)cut, &d),
				     -PARLEY_EPROTO, "kind %u cut %d", k, cut);
		cr_assert_eq(prelay_decode(buf, (size_t)n + 1, &d),
			     -PARLEY_EPROTO);
		cr_assert_eq(prelay_encode(buf, (size_t)n - 1, &m),
			     -PARLEY_ETOOBIG);
	}
}

Test(presence_relay, encode_refuses_broken_bounds)
{
	struct prelay_msg m = {.kind = PRELAY_ONLINE, .count = 1};
	m.users[0] = S("");
	cr_assert_eq(prelay_encode(buf, sizeof buf, &m), -PARLEY_EINVAL);
	m.users[0] = S("x");
	m.count = PRELAY_USERS_MAX + 1;
	cr_assert_eq(prelay_encode(buf, sizeof buf, &m), -PARLEY_EINVAL);
	m.count = 1;
	m.kind = 0;
	cr_assert_eq(prelay_encode(buf, sizeof buf, &m), -PARLEY_EINVAL);
	m.kind = PRELAY_SET_END + 1;
	cr_assert_eq(prelay_encode(buf, sizeof buf, &m), -PARLEY_EINVAL);
	m.kind = PRELAY_TYPING;
	char big[PARLEY_PROTO_MAX_CONV_ID + 2];
	memset(big, 'g', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	m.conv = S(big);
	cr_assert_eq(prelay_encode(buf, sizeof buf, &m), -PARLEY_EINVAL);
}

Test(presence_relay, decode_refuses_bad_fields)
{
	struct prelay_msg m = {.kind = PRELAY_OFFLINE, .count = 1};
	m.users[0] = S("ulli");
	int n = prelay_encode(buf, sizeof buf, &m);
	cr_assert_gt(n, 0);
	struct prelay_msg d;
	cr_assert_eq(prelay_decode(buf, (size_t)n, &d), 0);
	uint8_t b[64];
	memcpy(b, buf, (size_t)n);
	b[0] = PRELAY_VERSION + 1; /* version */
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
	memcpy(b, buf, (size_t)n);
	b[1] = 0; /* kind */
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
	b[1] = PRELAY_SET_END + 1;
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
	memcpy(b, buf, (size_t)n);
	b[2] = 2; /* started is 0 / 1 */
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
	memcpy(b, buf, (size_t)n);
	b[PRELAY_HDR - 2 + 0] = 2; /* count 2 with one id */
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
	memcpy(b, buf, (size_t)n);
	b[PRELAY_HDR] = 0; /* an empty id */
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
	memcpy(b, buf, (size_t)n);
	b[7] = 200; /* a conv longer than the payload */
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
	b[7] = 251; /* beyond PARLEY_PROTO_MAX_CONV_ID */
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
	memcpy(b, buf, (size_t)n);
	b[PRELAY_HDR - 2 - 1 + 0] = 121; /* user len > max (conv/user empty) */
	cr_assert_eq(prelay_decode(b, (size_t)n, &d), -PARLEY_EPROTO);
}
