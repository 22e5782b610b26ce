/*
 * fuzz_frame.c — libFuzzer target for the wire codec (proto/codec.c).
 *
 * Feeds arbitrary bytes (1) as a stream of frames, the way a server reads a
 * connection: decode frames back to back, decompress flagged payloads into a
 * bounded buffer, decode each message; and (2) as the payload of every
 * message type. Properties checked (abort on violation, so libFuzzer reports):
 *   - frame decode consumes 12..len bytes or returns one of the three errors;
 *   - a decoded message re-encodes, and the re-encoding decodes to the same
 *     bytes again (encode/decode agree on every accepted input);
 *   - decompression never reports more than its bound.
 * ASan/UBSan (the runner's flags) catch any over-read.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parley_proto.h"

static const uint16_t TYPES[] = {
	PARLEY_T_HELLO, PARLEY_T_HELLO_OK, PARLEY_T_AUTH, PARLEY_T_AUTH_OK,
	PARLEY_T_PING, PARLEY_T_PONG, PARLEY_T_ERROR, PARLEY_T_CONV_OPEN,
	PARLEY_T_CONV, PARLEY_T_SEND, PARLEY_T_SEND_ACK, PARLEY_T_HISTORY,
	PARLEY_T_HISTORY_PAGE, PARLEY_T_SYNC, PARLEY_T_SYNC_OK, PARLEY_T_EVENT,
	PARLEY_T_EVENT_ACK, PARLEY_T_CONV_LIST, PARLEY_T_CONV_LIST_OK,
	PARLEY_T_GOAWAY, PARLEY_T_TYPING, PARLEY_T_PRESENCE, 0x7777,
	PARLEY_T_TYPING_PUSH, PARLEY_T_PRESENCE_SUB, PARLEY_T_PRESENCE_SUB_OK,
	PARLEY_T_PRESENCE_SET, PARLEY_T_PRESENCE_SET_OK,
	PARLEY_T_READ_MARKER, PARLEY_T_READ_MARKER_OK, PARLEY_T_RECEIPTS,
	PARLEY_T_RECEIPTS_OK,
};

#define OUT_CAP (256u << 10)
static uint8_t g_dec[OUT_CAP];
static uint8_t g_enc[2][PARLEY_PROTO_MAX_FRAME_DEFAULT];
static struct parley_msg g_m, g_m2;

static void check(int cond)
{
	if (!cond)
		abort();
}

/* A decoded message must re-encode, and the re-encoding must be a fixed point. */
static void reencode(const struct parley_msg *m, uint32_t rid)
{
	int n = parley_proto_encode(g_enc[0], sizeof g_enc[0], rid, m);
	if (n == -PARLEY_ETOOBIG)
		return; /* larger than our scratch buffer: legal */
	check(n >= (int)PARLEY_PROTO_HEADER_SIZE);
	check(parley_proto_size(m) == n);
	struct parley_frame f;
	check(parley_proto_frame_decode(g_enc[0], (size_t)n, PARLEY_PROTO_MAX_FRAME_HARD,
					&f) == n);
	check(parley_proto_decode(&f, &g_m2) == 0);
	int n2 = parley_proto_encode(g_enc[1], sizeof g_enc[1], rid, &g_m2);
	check(n2 == n);
	check(memcmp(g_enc[0], g_enc[1], (size_t)n) == 0);
}

static void one_payload(uint16_t type, const uint8_t *p, size_t len, uint32_t rid)
{
	int r = parley_proto_decode_payload(type, p, len, &g_m);
	check(r == 0 || r == -PARLEY_EPROTO || r == -PARLEY_EVERSION);
	if (r == 0)
		reencode(&g_m, rid);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* (1) a byte stream of frames; a small max_frame so ETOOBIG paths run */
	uint32_t max_frame = size && (data[0] & 1) ? 4096 : PARLEY_PROTO_MAX_FRAME_DEFAULT;
	size_t off = 0;
	while (off < size) {
		struct parley_frame f;
		int n = parley_proto_frame_decode(data + off, size - off, max_frame, &f);
		if (n < 0) {
			check(n == -PARLEY_EINCOMPLETE || n == -PARLEY_ETOOBIG ||
			      n == -PARLEY_EPROTO);
			break;
		}
		check(n >= (int)PARLEY_PROTO_HEADER_SIZE && (size_t)n <= size - off);
		check(f.payload == data + off + PARLEY_PROTO_HEADER_SIZE);
		check(f.payload_len == (uint32_t)n - PARLEY_PROTO_HEADER_SIZE);
		if (f.flags & PARLEY_FLAG_ZSTD) {
			int d = parley_proto_decompress(&f, g_dec, OUT_CAP);
			check(d <= (int)OUT_CAP);
			if (d >= 0)
				one_payload(f.type, g_dec, (size_t)d, f.request_id);
			else
				check(d == -PARLEY_EPROTO || d == -PARLEY_ETOOBIG ||
				      d == -PARLEY_ENOMEM);
		} else {
			one_payload(f.type, f.payload, f.payload_len, f.request_id);
		}
		off += (size_t)n;
	}

	/* (2) the whole input as the payload of every type */
	for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
		one_payload(TYPES[i], data, size, 1);

	/* (3) the id helpers on the input split in two */
	if (size >= 2) {
		size_t a = data[0] % size;
		char out[256];
		int r = parley_proto_dm_conv_id((const char *)data, a,
						(const char *)data + a, size - a,
						out, sizeof out);
		check(r == -PARLEY_EINVAL || r == -PARLEY_ETOOBIG ||
		      (r > 0 && r < (int)sizeof out && out[r] == 0 &&
		       !memcmp(out, "d:", 2)));
	}
	return 0;
}
