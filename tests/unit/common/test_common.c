/*
 * test_common.c — error table, little-endian helpers, bounded reader, hash,
 * base64url, host:port splitting.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>

#include "parley_common.h"

Test(common, strerror_covers_parley_and_errno)
{
	cr_assert_str_eq(parley_strerror(0), "ok");
	cr_assert_str_eq(parley_strerror(-PARLEY_ECORRUPT),
			 "data corrupted (checksum mismatch)");
	cr_assert_str_eq(parley_errname(-PARLEY_EFULL), "PARLEY_EFULL");
	cr_assert_str_eq(parley_errname(-EIO), "EIO");
	cr_assert_str_eq(parley_strerror(-ENOENT), "No such file or directory");
	cr_assert_str_eq(parley_strerror(-99999), "unknown error");
}

Test(common, le_roundtrip)
{
	uint8_t b[8];
	le_put16(b, 0xBEEF);
	cr_assert_eq(b[0], 0xEF);
	cr_assert_eq(le_get16(b), 0xBEEF);
	le_put32(b, 0xDEADBEEFu);
	cr_assert_eq(b[0], 0xEF);
	cr_assert_eq(b[3], 0xDE);
	cr_assert_eq(le_get32(b), 0xDEADBEEFu);
	le_put64(b, 0x0102030405060708ull);
	cr_assert_eq(b[0], 0x08);
	cr_assert_eq(b[7], 0x01);
	cr_assert_eq(le_get64(b), 0x0102030405060708ull);
}

Test(common, reader_fails_closed_on_short_input)
{
	uint8_t b[5] = {1, 0, 0, 0, 9};
	struct le_reader r;
	le_reader_init(&r, b, sizeof b);
	cr_assert_eq(le_read32(&r), 1);
	cr_assert(r.ok);
	cr_assert_eq(le_read32(&r), 0); /* only one byte left */
	cr_assert_not(r.ok);
	cr_assert_eq(le_read8(&r), 0); /* stays failed */
	cr_assert_null(le_read_bytes(&r, 1));
}

Test(common, le_writer_matches_reader_and_bounds)
{
	uint8_t b[15];
	struct le_writer w;
	le_writer_init(&w, b, sizeof b);
	le_write8(&w, 0xab);
	le_write16(&w, 0x1234);
	le_write32(&w, 0xdeadbeef);
	le_write_bytes(&w, "xy", 2);
	le_write_bytes(&w, NULL, 0);
	cr_assert(w.ok);
	cr_assert_eq(w.off, 9);
	cr_assert_eq(b[1], 0x34); /* little-endian on the wire */
	cr_assert_eq(b[2], 0x12);
	le_write64(&w, 1); /* 9 + 8 > 15: refused, nothing written */
	cr_assert_not(w.ok);
	cr_assert_eq(w.off, 9);
	le_write8(&w, 1); /* stays failed */
	cr_assert_not(w.ok);
	cr_assert_null(le_write_reserve(&w, 0));

	struct le_reader r;
	le_reader_init(&r, b, w.off);
	cr_assert_eq(le_read8(&r), 0xab);
	cr_assert_eq(le_read16(&r), 0x1234);
	cr_assert_eq(le_read32(&r), 0xdeadbeef);
	cr_assert_eq(memcmp(le_read_bytes(&r, 2), "xy", 2), 0);
	cr_assert(r.ok);
	cr_assert_eq(r.off, r.len);
}

Test(common, hash_is_stable)
{
	/* the partition map depends on this value never changing */
	uint64_t h1 = parley_hash_key("c/alice:bob", 11);
	uint64_t h2 = parley_hash_key("c/alice:bob", 11);
	cr_assert_eq(h1, h2);
	cr_assert_neq(h1, parley_hash_key("c/alice:bob2", 12));
	cr_assert_neq(parley_xxh3("x", 1, 1), parley_xxh3("x", 1, 2));
}

Test(common, rng_is_deterministic)
{
	struct parley_rng a = {42}, b = {42};
	for (int i = 0; i < 100; i++)
		cr_assert_eq(parley_rng_next(&a), parley_rng_next(&b));
	for (int i = 0; i < 1000; i++)
		cr_assert_lt(parley_rng_below(&a, 7), 7);
}

Test(common, b64url_rfc4648_vectors_and_round_trip)
{
	/* RFC 4648 section 10 vectors, unpadded */
	const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	const char *want[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	char out[32];
	uint8_t back[32];
	for (size_t i = 0; i < 7; i++) {
		size_t n = parley_b64url_encode(in[i], strlen(in[i]), out);
		cr_assert_str_eq(out, want[i]);
		cr_assert_eq(n, strlen(want[i]));
		int m = parley_b64url_decode(out, n, back, sizeof back);
		cr_assert_eq(m, (int)strlen(in[i]));
		cr_assert_eq(memcmp(back, in[i], (size_t)m), 0);
	}
	/* the URL-safe alphabet: 0xfb 0xff -> "-_8" */
	const uint8_t hi[] = {0xfb, 0xff};
	cr_assert_str_eq((parley_b64url_encode(hi, 2, out), out), "-_8");
	struct parley_rng r = {.s = 7};
	for (int it = 0; it < 200; it++) {
		uint8_t buf[20];
		size_t n = parley_rng_below(&r, sizeof buf + 1);
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)parley_rng_next(&r);
		size_t e = parley_b64url_encode(buf, n, out);
		cr_assert_eq(parley_b64url_decode(out, e, back, sizeof back), (int)n);
		cr_assert_eq(memcmp(back, buf, n), 0);
	}
}

Test(common, b64url_rejects_bad_input)
{
	uint8_t out[8];
	cr_assert_eq(parley_b64url_decode("Zm9v+", 5, out, sizeof out), -1, "length 1 mod 4");
	cr_assert_eq(parley_b64url_decode("Zm+v", 4, out, sizeof out), -1, "'+' is not url-safe");
	cr_assert_eq(parley_b64url_decode("Zm9v", 4, out, 2), -1, "cap");
	cr_assert_eq(parley_b64url_decode("Zh", 2, out, sizeof out), -1, "non-canonical low bits");
	cr_assert_eq(parley_b64url_decode("Zg", 2, out, sizeof out), 1);
}

Test(common, hostport_split_names_and_v6_and_refusals)
{
	char *h;
	uint16_t p;
	char a[] = "node-1.example:7000";
	cr_assert_eq(parley_hostport_split(a, &h, &p), 0);
	cr_assert_str_eq(h, "node-1.example");
	cr_assert_eq(p, 7000);
	char b[] = "[::1]:65535";
	cr_assert_eq(parley_hostport_split(b, &h, &p), 0);
	cr_assert_str_eq(h, "::1");
	cr_assert_eq(p, 65535);
	const char *bad[] = {"nohost", ":80", "h:", "h:0", "h:65536", "h:8x",
			     "[::1]80", "[::1", "[]:80"};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(bad); i++) {
		char s[32];
		snprintf(s, sizeof s, "%s", bad[i]);
		cr_assert_eq(parley_hostport_split(s, &h, &p), -PARLEY_EINVAL, "%s", bad[i]);
	}
}
