/*
 * bench_natsproto.h — the few NATS client-protocol lines parley-bench's
 * NATS reference (bench_nats.c) needs to read: INFO, MSG, PING, PONG, +OK,
 * -ERR. A pure parser over a byte buffer (no I/O), unit-tested in
 * tests/unit/bench/test_bench_natsproto.c.
 *
 * Protocol (docs.nats.io, "Client Protocol"): control lines end in CRLF;
 * MSG is "MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n". Verbs
 * are case-insensitive.
 */
#ifndef PARLEY_BENCH_NATSPROTO_H
#define PARLEY_BENCH_NATSPROTO_H

#include <stddef.h>
#include <stdint.h>

#define NATS_MAX_CONTROL 4096u   /* longest control line we accept */
#define NATS_MAX_PAYLOAD (64u << 20)

enum nats_op {
	NATS_OP_INFO = 1,
	NATS_OP_MSG,
	NATS_OP_PING,
	NATS_OP_PONG,
	NATS_OP_OK,
	NATS_OP_ERR,
};

struct nats_frame {
	enum nats_op op;
	/* MSG: subject, sid, payload (pointers into the parsed buffer) */
	const char *subject;
	size_t subject_len;
	uint64_t sid;
	const uint8_t *payload;
	size_t payload_len;
	/* INFO / -ERR: the rest of the line after the verb */
	const char *text;
	size_t text_len;
};

/* Parses one frame at buf[0..len). Returns the bytes it takes (> 0) and
 * fills *f; 0 when more bytes are needed; -1 on a malformed or unknown
 * line (the connection cannot be resynchronised). */
long nats_parse(const uint8_t *buf, size_t len, struct nats_frame *f);

#endif /* PARLEY_BENCH_NATSPROTO_H */
