/*
 * test_bench_natsproto.c — unit tests for bench/bench_natsproto.c, the
 * parser of the NATS server lines parley-bench's delivery reference reads.
 *
 * What must hold: each server verb parses to its op and consumes exactly
 * its bytes; MSG with and without a reply subject yields subject, sid and a
 * payload pointing into the buffer (binary payloads with CR/LF inside are
 * taken by length, not by scanning); any strict prefix of a valid frame
 * asks for more bytes (0) instead of failing or over-reading; malformed
 * lines fail (-1); back-to-back frames parse one after the other.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../../bench/bench_natsproto.h"

static long parse_str(const char *s, struct nats_frame *f)
{
	return nats_parse((const uint8_t *)s, strlen(s), f);
}

Test(bench_natsproto, simple_verbs)
{
	struct nats_frame f;
	cr_assert_eq(parse_str("PING\r\n", &f), 6);
	cr_assert_eq(f.op, NATS_OP_PING);
	cr_assert_eq(parse_str("PONG\r\nPING\r\n", &f), 6);
	cr_assert_eq(f.op, NATS_OP_PONG);
	cr_assert_eq(parse_str("+OK\r\n", &f), 5);
	cr_assert_eq(f.op, NATS_OP_OK);
	cr_assert_eq(parse_str("ping\r\n", &f), 6, "verbs are case-insensitive");
	cr_assert_eq(f.op, NATS_OP_PING);
}

Test(bench_natsproto, info_and_err_keep_their_text)
{
	struct nats_frame f;
	const char *info = "INFO {\"server_id\":\"x\",\"version\":\"2.9.10\"}\r\n";
	cr_assert_eq(parse_str(info, &f), (long)strlen(info));
	cr_assert_eq(f.op, NATS_OP_INFO);
	cr_assert_eq(f.text_len, strlen(info) - 7);
	cr_assert(!memcmp(f.text, "{\"server_id\"", 12));
	cr_assert_eq(parse_str("-ERR 'Unknown Protocol Operation'\r\n", &f), 35);
	cr_assert_eq(f.op, NATS_OP_ERR);
	cr_assert_eq(f.text_len, 28);
}

Test(bench_natsproto, msg_without_and_with_reply)
{
	struct nats_frame f;
	const char *m = "MSG bench.lat 1 5\r\nhello\r\n";
	cr_assert_eq(parse_str(m, &f), (long)strlen(m));
	cr_assert_eq(f.op, NATS_OP_MSG);
	cr_assert_eq(f.subject_len, 9);
	cr_assert(!memcmp(f.subject, "bench.lat", 9));
	cr_assert_eq(f.sid, 1);
	cr_assert_eq(f.payload_len, 5);
	cr_assert(!memcmp(f.payload, "hello", 5));
	cr_assert_eq((const char *)f.payload, m + 19, "payload points into the buffer");

	const char *r = "MSG a.b 42 _INBOX.x 0\r\n\r\n";
	cr_assert_eq(parse_str(r, &f), (long)strlen(r));
	cr_assert_eq(f.sid, 42);
	cr_assert_eq(f.payload_len, 0);
}

Test(bench_natsproto, binary_payload_is_taken_by_length)
{
	uint8_t buf[64];
	const char *hdr = "MSG s 7 6\r\n";
	size_t hl = strlen(hdr);
	memcpy(buf, hdr, hl);
	const uint8_t body[6] = {'\r', '\n', 0, 0xff, '\r', '\n'};
	memcpy(buf + hl, body, 6);
	memcpy(buf + hl + 6, "\r\n", 2);
	struct nats_frame f;
	cr_assert_eq(nats_parse(buf, hl + 8, &f), (long)(hl + 8));
	cr_assert_eq(f.payload_len, 6);
	cr_assert(!memcmp(f.payload, body, 6));
}

Test(bench_natsproto, every_prefix_needs_more)
{
	const char *frames[] = {"PING\r\n", "INFO {}\r\n", "MSG bench.lat 1 5\r\nhello\r\n",
				"MSG a 2 r 3\r\nxyz\r\n"};
	for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
		size_t n = strlen(frames[i]);
		for (size_t k = 0; k < n; k++) {
			/* an exact-size heap copy: ASan catches any over-read */
			uint8_t *p = malloc(k ? k : 1);
			memcpy(p, frames[i], k);
			struct nats_frame f;
			cr_assert_eq(nats_parse(p, k, &f), 0, "frame %zu prefix %zu", i, k);
			free(p);
		}
	}
}

Test(bench_natsproto, back_to_back_frames)
{
	const char *s = "MSG x 1 2\r\nab\r\nPING\r\nMSG x 1 1\r\nc\r\n";
	size_t len = strlen(s), off = 0;
	enum nats_op want[] = {NATS_OP_MSG, NATS_OP_PING, NATS_OP_MSG};
	for (unsigned i = 0; i < 3; i++) {
		struct nats_frame f;
		long n = nats_parse((const uint8_t *)s + off, len - off, &f);
		cr_assert_gt(n, 0);
		cr_assert_eq(f.op, want[i]);
		off += (size_t)n;
	}
	cr_assert_eq(off, len);
}

Test(bench_natsproto, malformed_lines_fail)
{
	const char *bad[] = {
		"HELLO\r\n",                   /* unknown verb */
		"PINGX\r\n",                   /* verb followed by junk */
		"PING extra\r\n",              /* PING takes no arguments */
		"MSG x 1\r\n",                 /* too few fields */
		"MSG x 1 r s 5\r\nhello\r\n",  /* too many fields */
		"MSG x one 1\r\nh\r\n",        /* sid not a number */
		"MSG x 1 -1\r\n\r\n",          /* negative size */
		"MSG x 1 99999999999\r\n",     /* larger than NATS_MAX_PAYLOAD */
		"MSG x 1 2\r\nabc\r\n",        /* payload not followed by CRLF */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct nats_frame f;
		cr_assert_eq(parse_str(bad[i], &f), -1, "case %zu: %s", i, bad[i]);
	}
}

Test(bench_natsproto, control_line_without_end_is_bounded)
{
	size_t n = NATS_MAX_CONTROL + 16;
	uint8_t *p = malloc(n);
	memset(p, 'A', n);
	memcpy(p, "INFO ", 5);
	struct nats_frame f;
	cr_assert_eq(nats_parse(p, NATS_MAX_CONTROL, &f), 0);
	cr_assert_eq(nats_parse(p, n, &f), -1, "an endless control line is an error");
	free(p);
}
