/*
 * test_memory_budget.c — under a send flood the server's memory stays
 * within memory_budget_bytes plus a fixed slack by back-pressure (it stops
 * reading the clients' sockets), SENDs are not failed to shed load, and
 * nothing acknowledged is lost.
 *
 * One user floods one conversation from IT_CONNS raw connections, each
 * keeping max_inflight (64) SENDs of IT_BODY incompressible bytes in
 * flight, until IT_MSGS SENDs were answered (PARLEY_FLOOD_MSGS overrides
 * the count). Server: memory_budget_bytes 64 MiB. Checked:
 *   - every SEND is answered, and by a SEND_ACK: the server slowed the
 *     clients down instead of answering ERROR FULL;
 *   - the server's VmHWM (/proc/<pid>/status) stays under
 *     64 MiB + IT_SLACK_KB. The slack is the memory the budget does not
 *     count: the binary, stacks, the loops' provided receive buffers, the
 *     WAL buffers, the engine's segment readers and flush working memory,
 *     allocator overhead (about 25 MB at start). Without the budget the
 *     same flood took the server to about 200 MB (requests piled up in the
 *     engine's queue) and failed about half of the SENDs with FULL;
 *   - every acknowledged message is in HISTORY afterwards at its seq with
 *     its client_msg_id, and nothing else is (no loss, no duplicate).
 */
#include "itest.h"

#define IT_CONNS 100
#define IT_WINDOW 64u
#define IT_MSGS 20000u
#define IT_BODY (16u << 10)
#define IT_BUDGET (64ull << 20)
#define IT_SLACK_KB (96L << 10) /* 96 MiB */

struct fconn {
	int fd;
	uint32_t out;        /* SENDs in flight */
	uint8_t in[1 << 16];
	size_t have;
	uint8_t wbuf[IT_BODY + 512];   /* one encoded SEND */
	size_t wlen, woff;
};

static uint8_t (*acked)[16]; /* by seq: the client_msg_id acknowledged */
static uint64_t nacked, nerrors, max_seq;

static void cmid_of(uint32_t rid, uint8_t out[16])
{
	memset(out, 0, 16);
	le_put32(out, rid);
	memcpy(out + 4, "floodtest\0\0\0", 12);
}

static void on_frame(struct fconn *c, const struct parley_frame *f)
{
	struct parley_msg m;
	IT_OK(parley_proto_decode(f, &m));
	if (f->type == PARLEY_T_SEND_ACK) {
		uint64_t seq = m.send_ack.seq;
		IT_CHECK(seq >= 1 && seq <= IT_MSGS * 2, "seq %" PRIu64, seq);
		uint8_t want[16];
		cmid_of(f->request_id, want);
		IT_CHECK(!memcmp(m.send_ack.client_msg_id, want, 16));
		IT_CHECK(!(m.send_ack.flags & PARLEY_ACKF_DUPLICATE));
		static const uint8_t zero[16];
		IT_CHECK(!memcmp(acked[seq], zero, 16), "seq %" PRIu64 " acked twice",
			 seq);
		memcpy(acked[seq], want, 16);
		nacked++;
		if (seq > max_seq)
			max_seq = seq;
	} else if (f->type == PARLEY_T_ERROR) {
		IT_CHECK(!(m.error.flags & PARLEY_ERRF_FATAL), "fatal error %u %.*s",
			 m.error.code, (int)m.error.text.len, m.error.text.p);
		IT_CHECK(m.error.code == PARLEY_EFULL || m.error.code == PARLEY_ENOMEM ||
				 m.error.code == PARLEY_EAGAIN,
			 "error %u %.*s", m.error.code, (int)m.error.text.len,
			 m.error.text.p);
		nerrors++;
	} else {
		IT_CHECK(0, "unexpected frame type 0x%x", f->type);
	}
	IT_CHECK(c->out > 0);
	c->out--;
}

int main(void)
{
	it_init("memory_budget");
	uint32_t msgs = IT_MSGS;
	if (getenv("PARLEY_FLOOD_MSGS"))
		msgs = (uint32_t)strtoul(getenv("PARLEY_FLOOD_MSGS"), NULL, 0);
	IT_CHECK(msgs >= 1 && msgs <= IT_MSGS * 2);
	acked = calloc((size_t)IT_MSGS * 2 + 1, 16);
	IT_CHECK(acked);
	struct it_server srv;
	it_server_init(&srv, "s1");
	char budget[32];
	snprintf(budget, sizeof budget, "%llu", (unsigned long long)IT_BUDGET);
	srv.extra[0] = "--memory-budget-bytes";
	srv.extra[1] = budget;
	/* the flood tests memory back-pressure, not the SEND rate limits */
	srv.extra[2] = "--rate-send-user-per-min";
	srv.extra[3] = "0";
	srv.extra[4] = "--rate-send-conn-per-min";
	srv.extra[5] = "0";
	it_server_start(&srv);
	{ /* SEND needs an opened conversation */
		struct parley_client *op = it_client(&srv, "alice", "opener", 0, NULL);
		IT_OK(parley_client_conv_open(op, "bob", NULL));
		parley_client_free(op);
	}

	static struct fconn cs[IT_CONNS];
	for (int i = 0; i < IT_CONNS; i++) {
		cs[i].fd = it_tcp_connect(srv.port);
		IT_CHECK(cs[i].fd >= 0);
		char dev[32];
		snprintf(dev, sizeof dev, "flood-%d", i);
		IT_CHECK(it_raw_login(cs[i].fd, "alice", dev) == 0);
		it_nonblock(cs[i].fd);
	}
	long rss0 = it_proc_kb(srv.pid, "VmRSS:");
	IT_CHECK(rss0 > 0);

	static uint8_t body[IT_BODY];
	for (size_t i = 0; i < sizeof body; i++) /* incompressible */
		body[i] = (uint8_t)parley_rng_next(&it_rng);
	uint32_t next_rid = 1, answered = 0;
	struct pollfd pf[IT_CONNS];
	int idle_rounds = 0;
	while (answered < msgs) {
		for (int i = 0; i < IT_CONNS; i++) {
			struct fconn *c = &cs[i];
			/* keep the window full, one SEND at a time */
			for (;;) {
				if (c->woff == c->wlen) {
					if (c->out >= IT_WINDOW || next_rid > msgs)
						break;
					struct parley_msg m = {.type = PARLEY_T_SEND};
					m.send.conv = parley_str_c("d:alice:bob");
					cmid_of(next_rid, m.send.client_msg_id);
					m.send.content_type = 0;
					m.send.body = (struct parley_bytes){body, sizeof body};
					int n = parley_proto_encode(c->wbuf, sizeof c->wbuf,
								    next_rid, &m);
					IT_CHECK(n > 0);
					c->wlen = (size_t)n;
					c->woff = 0;
					c->out++;
					next_rid++;
				}
				ssize_t k = send(c->fd, c->wbuf + c->woff,
						 c->wlen - c->woff, MSG_NOSIGNAL);
				if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
					break; /* back-pressure: the server stopped reading */
				IT_CHECK(k > 0, "send failed: %s", strerror(errno));
				c->woff += (size_t)k;
			}
			pf[i].fd = c->fd;
			pf[i].events = POLLIN | (c->woff < c->wlen ? POLLOUT : 0);
			pf[i].revents = 0;
		}
		int pr = poll(pf, IT_CONNS, 1000);
		IT_CHECK(pr >= 0);
		/* no answer at all for 60 s: give up (a bound, not an assertion
		 * on time: the checks below say what was missing) */
		idle_rounds = pr == 0 ? idle_rounds + 1 : 0;
		if (idle_rounds >= 60)
			break;
		for (int i = 0; i < IT_CONNS; i++) {
			struct fconn *c = &cs[i];
			if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t k = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);
			if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				continue;
			IT_CHECK(k > 0, "connection %d closed by the server", i);
			c->have += (size_t)k;
			size_t off = 0;
			struct parley_frame f;
			int n;
			while ((n = parley_proto_frame_decode(c->in + off, c->have - off,
							      sizeof c->in, &f)) > 0) {
				on_frame(c, &f);
				answered++;
				off += (size_t)n;
			}
			IT_CHECK(n == -PARLEY_EINCOMPLETE);
			memmove(c->in, c->in + off, c->have - off);
			c->have -= off;
		}
	}
	long hwm = it_proc_kb(srv.pid, "VmHWM:");
	long rss = it_proc_kb(srv.pid, "VmRSS:");
	printf("memory_budget: %u SENDs: %" PRIu64 " acked, %" PRIu64 " errors; "
	       "budget %llu KiB; VmRSS before %ld KiB, VmHWM %ld KiB, VmRSS "
	       "after %ld KiB\n", msgs, nacked, nerrors,
	       (unsigned long long)(IT_BUDGET >> 10), rss0, hwm, rss);
	fflush(stdout);
	IT_CHECK(answered == msgs, "%u of %u SENDs answered", answered, msgs);
	IT_CHECK(nerrors == 0, "%" PRIu64 " SENDs failed instead of being slowed "
		 "down", nerrors);
	for (int i = 0; i < IT_CONNS; i++)
		close(cs[i].fd);
	if (IT_SANITIZED)
		printf("memory_budget: sanitizer build: memory bound not checked\n");
	IT_CHECK(IT_SANITIZED || hwm < (long)(IT_BUDGET >> 10) + IT_SLACK_KB,
		 "VmHWM %ld KiB over budget %llu KiB + slack %ld KiB", hwm,
		 (unsigned long long)(IT_BUDGET >> 10), IT_SLACK_KB);

	/* every acknowledged message is readable at its seq, nothing else is */
	struct parley_client *a = it_client(&srv, "alice", "reader", 0, NULL);
	IT_CHECK(max_seq == nacked, "acked seqs not dense: max %" PRIu64
		 " count %" PRIu64, max_seq, nacked);
	uint64_t before = 0, seen = 0;
	for (;;) {
		const struct parley_history_page *pg = NULL;
		IT_OK(parley_client_history(a, "d:alice:bob", before, 100, &pg));
		for (uint16_t i = 0; i < pg->count; i++) {
			const struct parley_hist_msg *h = &pg->msgs[i];
			IT_CHECK(h->seq >= 1 && h->seq <= max_seq,
				 "unacked seq %" PRIu64 " stored", h->seq);
			IT_CHECK(!memcmp(h->client_msg_id, acked[h->seq], 16),
				 "seq %" PRIu64 " holds another message", h->seq);
			IT_CHECK(before == 0 || h->seq < before);
			seen++;
		}
		if ((pg->flags & PARLEY_HISTF_END) || pg->count == 0)
			break;
		before = pg->next_before_seq;
	}
	IT_CHECK(seen == nacked, "history holds %" PRIu64 " of %" PRIu64
		 " acknowledged messages", seen, nacked);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 60000) == 0);
	printf("memory_budget: ok (%" PRIu64 " acknowledged messages all read "
	       "back)\n", seen);
	free(acked);
	return 0;
}
