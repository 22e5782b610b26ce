/*
 * test_peer.c — the peer transport (server/peer.c) over real loopback
 * sockets: handshake refusals (wrong cluster, duplicate and unknown node
 * ids), frame limits before and after the handshake, the send-queue
 * backpressure policy, frame splitting, the read deadline, reconnects,
 * mutual TLS (a certificate from another CA, a certificate for another
 * node), the metrics text and the Raft flags announced in INFO.
 *
 * Time: the transports read a fake clock (peer_config.now_ms) that the test
 * advances, so deadlines and backoffs are reached by moving the clock, not
 * by sleeping. Waiting for sockets uses generous real-time limits only.
 * "Raw" peers are plain blocking-free sockets speaking hand-made frames.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer.h"
#include "raft_codec.h"

static uint64_t fake_ms = 1000000;
static uint64_t fake_now(void *arg)
{
	(void)arg;
	return fake_ms;
}

struct inbox {
	uint64_t ups, downs;
	uint64_t msgs, frames, last_from;
	uint64_t appends, heartbeats;
	uint64_t entry_bytes;
	uint32_t flags_seen; /* every received message's flags, or'ed */
};

static void on_recv(void *arg, uint64_t from, const struct raft_msg *m,
		    uint32_t n)
{
	struct inbox *ib = arg;
	ib->frames++;
	ib->msgs += n;
	ib->last_from = from;
	for (uint32_t i = 0; i < n; i++) {
		if (m[i].type == RAFT_MSG_APPEND)
			ib->appends++;
		if (m[i].type == RAFT_MSG_HEARTBEAT)
			ib->heartbeats++;
		ib->flags_seen |= m[i].flags;
		for (uint32_t k = 0; k < m[i].n_entries; k++)
			ib->entry_bytes += m[i].entries[k].len;
	}
}

static void on_link(void *arg, uint64_t node, bool up)
{
	struct inbox *ib = arg;
	if (up)
		ib->ups++;
	else
		ib->downs++;
}

static struct peer_config base_cfg(uint64_t cluster, uint64_t id,
				   struct inbox *ib)
{
	struct peer_config c = {0};
	c.cluster_id = cluster;
	c.node_id = id;
	c.listen_addr = "127.0.0.1";
	c.read_deadline_ms = 1000;
	c.ping_interval_ms = 100;
	c.backoff_min_ms = 20;
	c.backoff_max_ms = 200;
	c.rng_seed = id;
	c.on_recv = on_recv;
	c.on_link = on_link;
	c.arg = ib;
	c.now_ms = fake_now;
	return c;
}

static struct peer *mk(const struct peer_config *c)
{
	struct peer *p = NULL;
	int rc = peer_new(c, &p);
	cr_assert_eq(rc, 0, "peer_new: %s", parley_strerror(rc));
	return p;
}

static uint64_t real_ms(void)
{
	return parley_mono_ns() / 1000000u;
}

/* Polls every peer (fake clock +1 ms per round) until cond holds; false
 * after 20 s of real time. */
static bool drive(struct peer **ps, int n, bool (*cond)(void *), void *arg)
{
	uint64_t end = real_ms() + 20000;
	while (real_ms() < end) {
		if (cond(arg))
			return true;
		for (int i = 0; i < n; i++)
			if (ps[i])
				peer_poll(ps[i], 1);
		fake_ms++;
	}
	return cond(arg);
}

struct linkq {
	struct peer *p;
	uint64_t node;
	enum peer_link_state want;
	uint64_t min_refused, min_connects;
};

static bool link_is(void *arg)
{
	struct linkq *q = arg;
	struct peer_link_stats s;
	if (peer_link_stats(q->p, q->node, &s) < 0)
		return false;
	return s.state == q->want && s.refused >= q->min_refused &&
	       s.connects >= q->min_connects;
}

static struct peer_link_stats stats(struct peer *p, uint64_t node)
{
	struct peer_link_stats s;
	cr_assert_eq(peer_link_stats(p, node, &s), 0);
	return s;
}

/* Two peers 1 and 2 of cluster 7, linked and up. */
static void pair_up(struct peer **a, struct peer **b, struct inbox *ia,
		    struct inbox *ib, struct peer_config *ca,
		    struct peer_config *cb)
{
	*a = mk(ca);
	*b = mk(cb);
	cr_assert_eq(peer_add(*a, 2, "127.0.0.1", peer_port(*b)), 0);
	cr_assert_eq(peer_add(*b, 1, "127.0.0.1", peer_port(*a)), 0);
	struct peer *ps[2] = {*a, *b};
	struct linkq q1 = {*a, 2, PEER_LINK_UP, 0, 1}, q2 = {*b, 1, PEER_LINK_UP, 0, 1};
	cr_assert(drive(ps, 2, link_is, &q1), "link 1->2 not up: %s",
		  stats(*a, 2).last_error);
	cr_assert(drive(ps, 2, link_is, &q2), "link 2->1 not up");
}

/* ---- raw sockets -------------------------------------------------------- */

static int raw_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

static void raw_send(int fd, const void *b, size_t n)
{
	cr_assert_eq(send(fd, b, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void raw_hello(int fd, uint64_t cluster, uint64_t from, uint64_t to)
{
	struct peer_hello h = {.version = PEER_VERSION,
			       .max_frame = RAFT_CODEC_MAX_FRAME_DEFAULT,
			       .cluster_id = cluster,
			       .node_id = from,
			       .to_node = to,
			       .incarnation = 42};
	uint8_t b[128];
	int n = peer_hello_encode(b, sizeof b, &h);
	raw_send(fd, b, (size_t)n);
}

/* Reads one frame from fd while polling p; returns its type, 0 on EOF. */
static int raw_frame(int fd, struct peer *p, uint8_t *pl, uint32_t cap,
		     uint32_t *plen)
{
	uint8_t b[PEER_HDR_BYTES + 1024];
	size_t have = 0;
	uint64_t end = real_ms() + 20000;
	while (real_ms() < end) {
		peer_poll(p, 1);
		ssize_t k = recv(fd, b + have, sizeof b - have, MSG_DONTWAIT);
		if (k == 0)
			return 0;
		if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return 0;
		if (k > 0)
			have += (size_t)k;
		uint8_t t;
		uint32_t n;
		int h = peer_hdr_decode(b, have, 1024, &t, &n);
		cr_assert_geq(h, 0);
		if (h > 0 && have >= PEER_HDR_BYTES + n) {
			cr_assert_leq(n, cap);
			memcpy(pl, b + PEER_HDR_BYTES, n);
			*plen = n;
			return t;
		}
	}
	cr_assert_fail("no frame from the peer");
	return -1;
}

/* The server closes fd (EOF or reset) while being polled. */
static bool raw_closed(int fd, struct peer *p)
{
	uint64_t end = real_ms() + 20000;
	while (real_ms() < end) {
		peer_poll(p, 1);
		fake_ms++;
		uint8_t b[256];
		ssize_t k = recv(fd, b, sizeof b, MSG_DONTWAIT);
		if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			return true;
	}
	return false;
}

/* ---- handshake ---------------------------------------------------------- */

Test(peer, wrong_cluster_is_refused_with_a_clear_error)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(8, 2, &ib);
	struct peer *a = mk(&ca), *b = mk(&cb);
	peer_add(a, 2, "127.0.0.1", peer_port(b));
	peer_add(b, 1, "127.0.0.1", peer_port(a));
	struct peer *ps[2] = {a, b};
	struct linkq q = {a, 2, PEER_LINK_DOWN, 1, 0};
	cr_assert(drive(ps, 2, link_is, &q));
	struct peer_link_stats s = stats(a, 2);
	cr_assert_eq(s.connects, 0);
	cr_assert_geq(s.connect_failures, 1);
	cr_assert(strstr(s.last_error, "wrong cluster id"), "last_error: %s", s.last_error);
	struct peer_stats_global g;
	struct peer_link_stats all[4];
	peer_stats(b, all, 4, &g);
	cr_assert_geq(g.inbound_refused, 1);
	cr_assert_eq(all[0].connects, 0);
	peer_free(a);
	peer_free(b);
}

Test(peer, a_peer_claiming_our_own_id_is_refused)
{
	/* a is node 1 and thinks node 2 is at b's port; b is node 1 too */
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 1, &ib);
	struct peer *a = mk(&ca), *b = mk(&cb);
	peer_add(a, 2, "127.0.0.1", peer_port(b));
	peer_add(b, 3, "127.0.0.1", 9);
	struct peer *ps[2] = {a, b};
	struct linkq q = {a, 2, PEER_LINK_DOWN, 1, 0};
	cr_assert(drive(ps, 2, link_is, &q));
	struct peer_link_stats s = stats(a, 2);
	cr_assert(strstr(s.last_error, "duplicate node id"), "last_error: %s", s.last_error);
	cr_assert_eq(s.connects, 0);
	peer_free(a);
	peer_free(b);
}

Test(peer, second_connection_for_a_live_node_and_unknown_ids_are_refused)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	uint8_t pl[512];
	uint32_t n;
	/* a second "node 1" while the real one is connected */
	int fd = raw_connect(peer_port(b));
	raw_hello(fd, 7, 1, 2);
	cr_assert_eq(raw_frame(fd, b, pl, sizeof pl, &n), PEER_FRAME_REJECT);
	uint16_t code;
	char txt[256];
	cr_assert_eq(peer_reject_decode(pl, n, &code, txt, sizeof txt), 0);
	cr_assert_eq(code, PEER_REJ_DUPLICATE, "%u %s", code, txt);
	cr_assert(strstr(txt, "duplicate node id"), "%s", txt);
	cr_assert(raw_closed(fd, b));
	close(fd);
	cr_assert_eq(stats(b, 1).state, PEER_LINK_UP, "the live link survives");
	/* a node nobody configured */
	fd = raw_connect(peer_port(b));
	raw_hello(fd, 7, 9, 2);
	cr_assert_eq(raw_frame(fd, b, pl, sizeof pl, &n), PEER_FRAME_REJECT);
	cr_assert_eq(peer_reject_decode(pl, n, &code, txt, sizeof txt), 0);
	cr_assert_eq(code, PEER_REJ_UNKNOWN);
	close(fd);
	/* a HELLO meant for another node */
	fd = raw_connect(peer_port(b));
	raw_hello(fd, 7, 1, 3);
	cr_assert_eq(raw_frame(fd, b, pl, sizeof pl, &n), PEER_FRAME_REJECT);
	cr_assert_eq(peer_reject_decode(pl, n, &code, txt, sizeof txt), 0);
	cr_assert_eq(code, PEER_REJ_TARGET);
	close(fd);
	struct peer_stats_global g;
	struct peer_link_stats all[2];
	peer_stats(b, all, 2, &g);
	cr_assert_eq(g.inbound_refused, 3);
	peer_free(a);
	peer_free(b);
}

/* ---- limits ------------------------------------------------------------- */

Test(peer, oversized_or_garbled_frames_close_the_connection)
{
	struct inbox ib = {0};
	struct peer_config cb = base_cfg(7, 2, &ib);
	cb.max_frame = 64 << 10;
	struct peer *b = mk(&cb);
	peer_add(b, 1, "127.0.0.1", 9);
	/* before the handshake: more than PEER_HANDSHAKE_MAX_PAYLOAD announced */
	int fd = raw_connect(peer_port(b));
	uint8_t h[PEER_HDR_BYTES];
	peer_hdr_encode(h, PEER_FRAME_HELLO, PEER_HANDSHAKE_MAX_PAYLOAD + 1);
	raw_send(fd, h, sizeof h);
	cr_assert(raw_closed(fd, b));
	close(fd);
	/* garbage */
	fd = raw_connect(peer_port(b));
	raw_send(fd, "GET / HTTP/1.1\r\n\r\n", 18);
	cr_assert(raw_closed(fd, b));
	close(fd);
	struct peer_stats_global g;
	struct peer_link_stats all[1];
	peer_stats(b, all, 1, &g);
	cr_assert_eq(g.inbound_failed, 2);
	/* after the handshake: a RAFT frame over max_frame */
	fd = raw_connect(peer_port(b));
	raw_hello(fd, 7, 1, 2);
	uint8_t pl[512];
	uint32_t n;
	cr_assert_eq(raw_frame(fd, b, pl, sizeof pl, &n), PEER_FRAME_HELLO);
	cr_assert_eq(stats(b, 1).state, PEER_LINK_UP);
	peer_hdr_encode(h, PEER_FRAME_RAFT, (64u << 10) + 1);
	raw_send(fd, h, sizeof h);
	cr_assert(raw_closed(fd, b));
	close(fd);
	struct peer_link_stats s = stats(b, 1);
	cr_assert_eq(s.state, PEER_LINK_DOWN);
	cr_assert(strstr(s.last_error, "too large"), "%s", s.last_error);
	/* after the handshake: a RAFT frame that is not a codec frame */
	fd = raw_connect(peer_port(b));
	raw_hello(fd, 7, 1, 2);
	cr_assert_eq(raw_frame(fd, b, pl, sizeof pl, &n), PEER_FRAME_HELLO);
	uint8_t junk[PEER_HDR_BYTES + 64];
	memset(junk, 0xA5, sizeof junk);
	peer_hdr_encode(junk, PEER_FRAME_RAFT, 64);
	raw_send(fd, junk, sizeof junk);
	cr_assert(raw_closed(fd, b));
	close(fd);
	s = stats(b, 1);
	cr_assert(strstr(s.last_error, "bad RAFT frame"), "%s", s.last_error);
	cr_assert_eq(ib.frames, 0);
	peer_free(b);
}

Test(peer, silent_link_is_declared_dead_by_the_read_deadline)
{
	struct inbox ib = {0};
	struct peer_config cb = base_cfg(7, 2, &ib);
	struct peer *b = mk(&cb);
	peer_add(b, 1, "127.0.0.1", 9);
	int fd = raw_connect(peer_port(b));
	raw_hello(fd, 7, 1, 2);
	uint8_t pl[512];
	uint32_t n;
	cr_assert_eq(raw_frame(fd, b, pl, sizeof pl, &n), PEER_FRAME_HELLO);
	cr_assert_eq(stats(b, 1).state, PEER_LINK_UP);
	/* b pings us while we are silent; just before the deadline it holds */
	fake_ms += cb.read_deadline_ms - 1;
	peer_poll(b, 0);
	cr_assert_eq(stats(b, 1).state, PEER_LINK_UP);
	cr_assert_eq(stats(b, 1).dead, 0);
	fake_ms += 1;
	peer_poll(b, 0);
	struct peer_link_stats s = stats(b, 1);
	cr_assert_eq(s.state, PEER_LINK_DOWN);
	cr_assert_eq(s.dead, 1);
	cr_assert(strstr(s.last_error, "dead"), "%s", s.last_error);
	/* it sent PINGs while idle */
	int pings = 0;
	for (;;) {
		uint8_t b2[PEER_HDR_BYTES];
		ssize_t k = recv(fd, b2, sizeof b2, MSG_DONTWAIT);
		if (k != (ssize_t)sizeof b2)
			break;
		uint8_t t;
		uint32_t l;
		if (peer_hdr_decode(b2, sizeof b2, 0, &t, &l) == (int)PEER_HDR_BYTES &&
		    t == PEER_FRAME_PING)
			pings++;
	}
	cr_assert_geq(pings, 1);
	close(fd);
	peer_free(b);
}

Test(peer, handshakes_that_stall_time_out)
{
	struct inbox ia = {0}, ib = {0};
	/* inbound: a client that connects and says nothing */
	struct peer_config cb = base_cfg(7, 2, &ib);
	struct peer *b = mk(&cb);
	peer_add(b, 1, "127.0.0.1", 9);
	int fd = raw_connect(peer_port(b));
	for (int i = 0; i < 50; i++)
		peer_poll(b, 1); /* accepted, waiting for HELLO */
	struct peer_stats_global g;
	struct peer_link_stats all[1];
	peer_stats(b, all, 1, &g);
	cr_assert_eq(g.accepted, 1);
	cr_assert_eq(g.inbound_failed, 0);
	fake_ms += cb.handshake_timeout_ms ? cb.handshake_timeout_ms : PEER_DEFAULT_HANDSHAKE_MS;
	cr_assert(raw_closed(fd, b));
	close(fd);
	peer_stats(b, all, 1, &g);
	cr_assert_eq(g.inbound_failed, 1);
	peer_free(b);
	/* outbound: a listener that accepts and never answers the HELLO */
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	cr_assert_eq(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
	cr_assert_eq(listen(ls, 4), 0);
	socklen_t sl = sizeof sa;
	getsockname(ls, (struct sockaddr *)&sa, &sl);
	struct peer_config ca = base_cfg(7, 1, &ia);
	struct peer *a = mk(&ca);
	peer_add(a, 2, "127.0.0.1", ntohs(sa.sin_port));
	for (int i = 0; i < 200 && stats(a, 2).state != PEER_LINK_HANDSHAKE; i++)
		peer_poll(a, 1);
	cr_assert_eq(stats(a, 2).state, PEER_LINK_HANDSHAKE);
	fake_ms += PEER_DEFAULT_HANDSHAKE_MS;
	peer_poll(a, 0);
	struct peer_link_stats s = stats(a, 2);
	cr_assert_eq(s.state, PEER_LINK_DOWN);
	cr_assert_eq(s.connect_failures, 1);
	cr_assert(strstr(s.last_error, "handshake timed out"), "%s", s.last_error);
	cr_assert_eq(ia.ups, 0);
	peer_free(a);
	close(ls);
}

/* ---- sending ------------------------------------------------------------ */

static struct raft_msg append_msg(uint64_t idx, struct raft_entry *e,
				  uint8_t *data, uint32_t len)
{
	memset(data, (int)(idx & 0xFF), len);
	*e = (struct raft_entry){.term = 1, .index = idx, .len = len, .type = 0,
				 .data = data};
	e->csum = raft_entry_csum(1, idx, 0, data, len);
	return (struct raft_msg){.type = RAFT_MSG_APPEND, .from = 1, .to = 2,
				 .group = 1, .term = 1, .index = idx - 1,
				 .log_term = idx > 1 ? 1 : 0, .n_entries = 1,
				 .entries = e};
}

static struct raft_msg hb_msg(uint64_t group)
{
	return (struct raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2,
				 .group = group, .term = 1};
}

struct want_msgs {
	struct inbox *ib;
	uint64_t msgs;
};
static bool got_msgs(void *arg)
{
	struct want_msgs *w = arg;
	return w->ib->msgs >= w->msgs;
}

Test(peer, full_queue_drops_oldest_heartbeats_then_refuses)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	ca.queue_frames = 8;
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	struct raft_entry e[32];
	uint8_t data[32][64];
	struct raft_msg hb = hb_msg(5);
	/* nothing is written between peer_send calls (only peer_flush/poll
	 * write), so the queue fills deterministically */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(peer_send(a, 2, &hb, 1), 0);
	for (int i = 0; i < 4; i++) {
		struct raft_msg m = append_msg((uint64_t)i + 1, &e[i], data[i], 64);
		cr_assert_eq(peer_send(a, 2, &m, 1), 0);
	}
	struct peer_link_stats s = stats(a, 2);
	cr_assert_eq(s.queue_frames, 8);
	/* full: a new APPEND evicts the oldest heartbeat frame */
	struct raft_msg m = append_msg(5, &e[4], data[4], 64);
	cr_assert_eq(peer_send(a, 2, &m, 1), 0);
	s = stats(a, 2);
	cr_assert_eq(s.drops_hb, 1);
	cr_assert_eq(s.queue_frames, 8);
	/* three more appends use up the remaining heartbeat frames */
	for (int i = 5; i < 8; i++) {
		m = append_msg((uint64_t)i + 1, &e[i], data[i], 64);
		cr_assert_eq(peer_send(a, 2, &m, 1), 0);
	}
	s = stats(a, 2);
	cr_assert_eq(s.drops_hb, 4);
	/* now only appends: a heartbeat is dropped, an append refused */
	cr_assert_eq(peer_send(a, 2, &hb, 1), -PARLEY_EFULL);
	m = append_msg(9, &e[8], data[8], 64);
	cr_assert_eq(peer_send(a, 2, &m, 1), -PARLEY_EFULL);
	s = stats(a, 2);
	cr_assert_eq(s.drops_hb, 5);
	cr_assert_eq(s.refused_full, 1);
	cr_assert_eq(s.queue_frames, 8);
	/* the 8 queued appends arrive, in order, and nothing else */
	peer_flush(a);
	struct peer *ps[2] = {a, b};
	struct want_msgs w = {&ib, 8};
	cr_assert(drive(ps, 2, got_msgs, &w));
	cr_assert_eq(ib.appends, 8);
	cr_assert_eq(ib.heartbeats, 0);
	cr_assert_eq(stats(a, 2).queue_frames, 0);
	cr_assert_eq(stats(a, 2).queue_bytes, 0);
	peer_free(a);
	peer_free(b);
}

Test(peer, bytes_limit_and_down_links)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	ca.queue_bytes = 4096;
	struct peer *a = mk(&ca), *b = mk(&cb);
	peer_add(a, 2, "127.0.0.1", peer_port(b));
	peer_add(b, 1, "127.0.0.1", peer_port(a));
	struct raft_entry e;
	static uint8_t data[3000];
	struct raft_msg m = append_msg(1, &e, data, sizeof data);
	/* not up yet: dropped and counted */
	cr_assert_eq(peer_send(a, 2, &m, 1), -PARLEY_ECLOSED);
	cr_assert_eq(stats(a, 2).drops_down, 1);
	struct peer *ps[2] = {a, b};
	struct linkq q = {a, 2, PEER_LINK_UP, 0, 1};
	cr_assert(drive(ps, 2, link_is, &q));
	cr_assert_eq(peer_send(a, 2, &m, 1), 0);
	cr_assert_eq(peer_send(a, 2, &m, 1), -PARLEY_EFULL); /* 2 x 3 KB > 4 KiB */
	cr_assert_eq(stats(a, 2).refused_full, 1);
	/* messages for a node that is not configured */
	struct raft_msg bad = m;
	bad.to = 9;
	cr_assert_eq(peer_send(a, 9, &bad, 1), -PARLEY_EINVAL);
	cr_assert_eq(peer_send(a, 2, &bad, 1), -PARLEY_EINVAL);
	peer_free(a);
	peer_free(b);
}

Test(peer, batches_split_to_the_peers_max_frame)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	cb.max_frame = 16 << 10; /* b accepts 16 KiB payloads */
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	enum { N = 300 };
	static struct raft_entry e[N];
	static uint8_t data[N][200];
	static struct raft_msg m[N + 1];
	for (int i = 0; i < N; i++)
		m[i] = append_msg((uint64_t)i + 1, &e[i], data[i], 200);
	cr_assert_eq(peer_send(a, 2, m, N), 0);
	struct peer_link_stats s = stats(a, 2);
	cr_assert_geq(s.queue_frames, 4, "60 KB of appends in 16 KiB frames");
	/* one message alone over the limit */
	static uint8_t big[20000];
	struct raft_entry be;
	m[N] = append_msg(N + 1, &be, big, sizeof big);
	cr_assert_eq(peer_send(a, 2, &m[N], 1), -PARLEY_ETOOBIG);
	cr_assert_eq(stats(a, 2).too_big, 1);
	/* coalescing: 500 groups' heartbeats (~20 B each) go in one frame */
	static struct raft_msg hbs[500];
	for (int i = 0; i < 500; i++)
		hbs[i] = hb_msg((uint64_t)i + 1);
	uint64_t before = stats(a, 2).queue_frames;
	cr_assert_eq(peer_send_all(a, hbs, 500), 0);
	cr_assert_eq(stats(a, 2).queue_frames, before + 1);
	struct peer *ps[2] = {a, b};
	struct want_msgs w = {&ib, N + 500};
	cr_assert(drive(ps, 2, got_msgs, &w));
	cr_assert_eq(ib.appends, N);
	cr_assert_eq(ib.heartbeats, 500);
	cr_assert_eq(ib.entry_bytes, (uint64_t)N * 200);
	cr_assert_eq(ib.last_from, 1);
	peer_free(a);
	peer_free(b);
}

Test(peer, a_one_mebibyte_frame_arrives_whole)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	/* one APPEND of 256 x 4 KiB entries: one frame of about 1 MiB */
	static struct raft_entry e[RAFT_MAX_MSG_ENTRIES];
	static uint8_t data[RAFT_MAX_MSG_ENTRIES][4096];
	for (uint32_t i = 0; i < RAFT_MAX_MSG_ENTRIES; i++) {
		struct raft_msg one = append_msg(i + 1, &e[i], data[i], sizeof data[i]);
		(void)one;
	}
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2, .group = 1,
			     .term = 1, .n_entries = RAFT_MAX_MSG_ENTRIES, .entries = e};
	cr_assert_eq(peer_send(a, 2, &m, 1), 0);
	cr_assert_eq(stats(a, 2).queue_frames, 1);
	cr_assert_gt(stats(a, 2).queue_bytes, 1u << 20);
	struct peer *ps[2] = {a, b};
	struct want_msgs w = {&ib, 1};
	cr_assert(drive(ps, 2, got_msgs, &w));
	cr_assert_eq(ib.frames, 1);
	cr_assert_eq(ib.entry_bytes, (uint64_t)RAFT_MAX_MSG_ENTRIES * 4096);
	cr_assert_eq(stats(b, 1).frames_in, 1);
	cr_assert_gt(stats(b, 1).bytes_in, 1u << 20);
	peer_free(a);
	peer_free(b);
}

Test(peer, closed_link_redials_with_backoff)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	/* b (the acceptor) drops the link; a sees EOF and redials */
	cr_assert_eq(peer_disconnect(b, 1), 0);
	cr_assert_eq(stats(b, 1).state, PEER_LINK_DOWN);
	struct peer *ps[2] = {a, b};
	struct linkq q = {a, 2, PEER_LINK_UP, 0, 2};
	cr_assert(drive(ps, 2, link_is, &q));
	struct peer_link_stats s = stats(a, 2);
	cr_assert_eq(s.connects, 2);
	cr_assert_eq(s.reconnects, 1);
	cr_assert_eq(ia.ups, 2);
	cr_assert_eq(ia.downs, 1);
	cr_assert_eq(ib.downs, 1);
	/* b gone for good: a keeps redialling, failures counted, nothing up */
	peer_free(b);
	for (int i = 0; i < 2000; i++) {
		peer_poll(a, 0);
		fake_ms += 5;
	}
	s = stats(a, 2);
	cr_assert_neq(s.state, PEER_LINK_UP);
	cr_assert_geq(s.connect_failures, 2);
	/* 10 s of fake time at a 200 ms cap: between 10 s / 200 ms and
	 * 10 s / 100 ms attempts (+ the first ones), never a busy loop */
	cr_assert_leq(s.connect_failures, 120, "%" PRIu64, s.connect_failures);
	cr_assert_eq(peer_disconnect(a, 99), -PARLEY_ENOTFOUND);
	peer_free(a);
}

Test(peer, metrics_text_names_every_link)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	char small[16];
	size_t need = peer_metrics_text(a, small, sizeof small);
	cr_assert_gt(need, sizeof small);
	cr_assert_eq(strlen(small), sizeof small - 1);
	char *buf = malloc(need + 1);
	cr_assert_eq(peer_metrics_text(a, buf, need + 1), need);
	cr_assert(strstr(buf, "parley_peer_link_up{node=\"2\"} 1\n"), "%s", buf);
	cr_assert(strstr(buf, "parley_peer_reconnects{node=\"2\"} 0\n"));
	cr_assert(strstr(buf, "# TYPE parley_peer_bytes_out counter\n"));
	free(buf);
	peer_free(a);
	peer_free(b);
}

struct infoq {
	struct peer *p;
	uint64_t node;
	const char *want;
};

static bool info_is(void *arg)
{
	struct infoq *q = arg;
	struct peer_link_stats s;
	return peer_link_stats(q->p, q->node, &s) == 0 && !strcmp(s.info, q->want);
}

Test(peer, node_info_is_exchanged_after_the_handshake_and_kept_when_down)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	ca.info = "client=127.0.0.1:7411 admin=127.0.0.1:7481";
	const char *binfo = "client=[::1]:7421";
	cb.info = binfo;
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	struct peer *ps[2] = {a, b};
	struct infoq qa = {a, 2, "client=[::1]:7421"};
	struct infoq qb = {b, 1, "client=127.0.0.1:7411 admin=127.0.0.1:7481"};
	cr_assert(drive(ps, 2, info_is, &qa), "1 has node 2's info: '%s'",
		  stats(a, 2).info);
	cr_assert(drive(ps, 2, info_is, &qb), "2 has node 1's info: '%s'",
		  stats(b, 1).info);
	/* the link goes down: the info stays (an operator looks for it) */
	peer_free(b);
	struct linkq down = {a, 2, PEER_LINK_DOWN, 0, 0};
	struct peer *pa[1] = {a};
	cr_assert(drive(pa, 1, link_is, &down));
	cr_assert_str_eq(stats(a, 2).info, "client=[::1]:7421");
	peer_free(a);
	/* info that is too long or not printable is refused */
	char big[PEER_INFO_MAX + 2];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	struct peer_config c = base_cfg(7, 3, &ia);
	struct peer *p = NULL;
	c.info = big;
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EINVAL);
	c.info = "a\nb";
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EINVAL);
}

static bool raft_flags_are(void *arg)
{
	struct infoq *q = arg;
	struct peer_link_stats s;
	return peer_link_stats(q->p, q->node, &s) == 0 && s.info[0] &&
	       s.raft_flags == (uint32_t)(uintptr_t)q->want;
}

/* Contract item 8: a node announces the Raft flags it decodes in its
 * INFO ("raftf", left out of what the other side's stats show); an
 * advisory flag (RAFT_MSGF_NOACK) reaches a node that announced it and is
 * cleared, counted, for one that did not (here node 2, configured as a
 * node built before the flag; a real one would refuse the frame and
 * close the link). Node 3's info is too long to add the key: it is sent
 * whole, and node 1 treats node 3 as decoding the base flags only. */
Test(peer, advisory_raft_flags_go_only_to_nodes_that_announce_them)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	ca.info = "client=127.0.0.1:7411";
	cb.info = "client=127.0.0.1:7421";
	cb.raft_flags = RAFT_MSGF_BASE;
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	struct peer *ps[2] = {a, b};
	struct infoq qa = {a, 2, (const char *)(uintptr_t)RAFT_MSGF_BASE};
	struct infoq qb = {b, 1, (const char *)(uintptr_t)RAFT_MSGF_ALL};
	cr_assert(drive(ps, 2, raft_flags_are, &qa), "1 sees 2's flags %#x",
		  stats(a, 2).raft_flags);
	cr_assert(drive(ps, 2, raft_flags_are, &qb), "2 sees 1's flags %#x",
		  stats(b, 1).raft_flags);
	cr_assert_str_eq(stats(a, 2).info, "client=127.0.0.1:7421");
	cr_assert_str_eq(stats(b, 1).info, "client=127.0.0.1:7411");

	struct raft_msg m = {.type = RAFT_MSG_APPEND, .flags = RAFT_MSGF_NOACK,
			     .group = 1, .from = 1, .to = 2, .term = 3,
			     .index = 9, .log_term = 3, .commit = 9};
	cr_assert_eq(peer_send(a, 2, &m, 1), 0);
	struct want_msgs wb = {&ib, 1};
	cr_assert(drive(ps, 2, got_msgs, &wb));
	cr_assert_eq(ib.appends, 1);
	cr_assert_eq(ib.flags_seen, 0, "node 2 got flags %#x", ib.flags_seen);
	cr_assert_eq(stats(a, 2).flags_cleared, 1);
	/* the other way the flag is kept */
	m.from = 2;
	m.to = 1;
	cr_assert_eq(peer_send_all(b, &m, 1), 0);
	struct want_msgs wa = {&ia, 1};
	cr_assert(drive(ps, 2, got_msgs, &wa));
	cr_assert_eq(ia.flags_seen, RAFT_MSGF_NOACK);
	cr_assert_eq(stats(b, 1).flags_cleared, 0);
	peer_free(a);
	peer_free(b);

	/* an info that leaves no room for the key */
	char big[PEER_INFO_MAX + 1];
	memset(big, 'x', PEER_INFO_MAX - 3);
	big[PEER_INFO_MAX - 3] = '\0';
	memset(&ia, 0, sizeof ia);
	memset(&ib, 0, sizeof ib);
	ca = base_cfg(7, 1, &ia);
	cb = base_cfg(7, 2, &ib);
	cb.info = big;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	ps[0] = a;
	ps[1] = b;
	struct infoq qbig = {a, 2, big};
	cr_assert(drive(ps, 2, info_is, &qbig));
	cr_assert_eq(stats(a, 2).raft_flags, RAFT_MSGF_BASE);
	m.from = 1;
	m.to = 2;
	cr_assert_eq(peer_send(a, 2, &m, 1), 0);
	cr_assert(drive(ps, 2, got_msgs, &wb));
	cr_assert_eq(ib.flags_seen, 0);
	peer_free(a);
	peer_free(b);
}

/* Application frames (request forwarding, server/proxy.h): queued
 * behind Raft frames, handed whole to on_app, refused on a down link. */
struct appbox {
	int n;
	uint64_t from;
	uint8_t type;
	uint32_t len;
	uint8_t last[64];
};
static struct appbox app_got;

static void on_app(void *arg, uint64_t from, uint8_t type, const uint8_t *p,
		   uint32_t n)
{
	(void)arg;
	app_got.n++;
	app_got.from = from;
	app_got.type = type;
	app_got.len = n;
	memcpy(app_got.last, p, n < sizeof app_got.last ? n : sizeof app_got.last);
}

static bool app_count(void *arg)
{
	return app_got.n >= *(int *)arg;
}

Test(peer, application_frames_arrive_whole_and_need_an_up_link)
{
	memset(&app_got, 0, sizeof app_got);
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	cb.on_app = on_app;
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	struct peer *ps[2] = {a, b};
	cr_assert_eq(peer_send_app(a, 2, PEER_FRAME_FWD_REQ,
				   (const uint8_t *)"request", 7), 0);
	cr_assert_eq(peer_send_app(a, 2, PEER_FRAME_FWD_REP,
				   (const uint8_t *)"reply!", 6), 0);
	int want = 2;
	cr_assert(drive(ps, 2, app_count, &want));
	cr_assert_eq(app_got.from, 1);
	cr_assert_eq(app_got.type, PEER_FRAME_FWD_REP);
	cr_assert_eq(app_got.len, 6);
	cr_assert_eq(memcmp(app_got.last, "reply!", 6), 0);
	/* a Raft frame type is not an application frame; unknown node */
	cr_assert_eq(peer_send_app(a, 2, PEER_FRAME_RAFT, app_got.last, 1),
		     -PARLEY_EINVAL);
	cr_assert_eq(peer_send_app(a, 9, PEER_FRAME_FWD_REQ, app_got.last, 1),
		     -PARLEY_EINVAL);
	/* without on_app (node 1) they are dropped, the link stays up */
	cr_assert_eq(peer_send_app(b, 1, PEER_FRAME_FWD_REQ,
				   (const uint8_t *)"x", 1), 0);
	for (int i = 0; i < 50; i++) {
		peer_poll(a, 1);
		peer_poll(b, 1);
	}
	cr_assert_eq(stats(a, 2).state, PEER_LINK_UP);
	/* a down link refuses them */
	peer_free(b);
	struct linkq down = {a, 2, PEER_LINK_DOWN, 0, 0};
	struct peer *pa[1] = {a};
	cr_assert(drive(pa, 1, link_is, &down));
	cr_assert_eq(peer_send_app(a, 2, PEER_FRAME_FWD_REQ,
				   (const uint8_t *)"late", 4), -PARLEY_ECLOSED);
	peer_free(a);
}

/* Contract item 9 (rolling upgrades): each node announces the frame
 * types it knows in its INFO ("frames", left out of the info the other
 * side's stats show); an application frame goes only where both sides
 * know its type (else -PARLEY_EVERSION, counted), and the link stays up.
 * Node 2 is configured as a node built with frames 1..7 only. */
static bool frames_known(void *arg)
{
	struct infoq *q = arg;
	struct peer_link_stats s;
	return peer_link_stats(q->p, q->node, &s) == 0 && s.frames != 0;
}

Test(peer, frame_sets_are_announced_and_unknown_types_never_sent)
{
	memset(&app_got, 0, sizeof app_got);
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	const uint32_t old = PEER_FRAMES_UPTO(PEER_FRAME_FWD_REP);
	ca.info = "client=127.0.0.1:7411";
	cb.info = "client=127.0.0.1:7421";
	ca.on_app = cb.on_app = on_app;
	cb.frames = old;
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	struct peer *ps[2] = {a, b};
	struct infoq qa = {a, 2, NULL}, qb = {b, 1, NULL};
	cr_assert(drive(ps, 2, frames_known, &qa));
	cr_assert(drive(ps, 2, frames_known, &qb));
	struct peer_link_stats sa = stats(a, 2), sb = stats(b, 1);
	cr_assert_eq(sa.frames, old, "1 sees 2's set %#x", sa.frames);
	cr_assert(sa.frames_announced);
	cr_assert_eq(sb.frames, PEER_FRAMES_ALL, "2 sees 1's set %#x",
		     sb.frames);
	cr_assert_str_eq(sa.info, "client=127.0.0.1:7421");
	cr_assert_str_eq(sb.info, "client=127.0.0.1:7411");
	cr_assert_eq(peer_frames(a), PEER_FRAMES_ALL);
	cr_assert_eq(peer_frames(b), old);
	cr_assert_eq(ia.ups, 1);
	cr_assert_eq(ib.ups, 1);

	uint8_t pl[12] = {1, 2, 3};
	cr_assert(peer_can_send(a, 2, PEER_FRAME_FWD_REQ));
	cr_assert_not(peer_can_send(a, 2, PEER_FRAME_LEADS));
	cr_assert_not(peer_can_send(b, 1, PEER_FRAME_APPEND_REQ));
	cr_assert_eq(peer_send_app(a, 2, PEER_FRAME_LEADS, pl, 4),
		     -PARLEY_EVERSION);
	cr_assert_eq(peer_send_app(a, 2, PEER_FRAME_APPEND_REQ, pl, 4),
		     -PARLEY_EVERSION);
	/* the old node does not send what it does not know either */
	cr_assert_eq(peer_send_app(b, 1, PEER_FRAME_PRES, pl, 4),
		     -PARLEY_EVERSION);
	cr_assert_eq(stats(a, 2).unsupported, 2);
	cr_assert_eq(stats(b, 1).unsupported, 1);
	cr_assert_eq(peer_send_app(a, 2, PEER_FRAME_FWD_REQ, pl, 4), 0);
	int one = 1;
	cr_assert(drive(ps, 2, app_count, &one));
	cr_assert_eq(app_got.type, PEER_FRAME_FWD_REQ);
	cr_assert_eq(app_got.from, 1);
	/* nothing closed the link */
	for (int i = 0; i < 50; i++)
		for (int k = 0; k < 2; k++)
			peer_poll(ps[k], 1);
	cr_assert_eq(stats(a, 2).state, PEER_LINK_UP);
	cr_assert_eq(stats(a, 2).connects, 1);
	cr_assert_eq(ia.downs + ib.downs, 0);
	size_t need = peer_metrics_text(a, NULL, 0);
	char *mt = malloc(need + 1);
	peer_metrics_text(a, mt, need + 1);
	cr_assert(strstr(mt, "parley_peer_unsupported{node=\"2\"} 2"), "%s", mt);
	free(mt);
	peer_free(a);
	peer_free(b);

	/* a set without HELLO..INFO, or an unknown type, is refused; so is
	 * an older set the info leaves no room to announce */
	struct peer *x = NULL;
	cb.frames = PEER_FRAME_BIT(PEER_FRAME_FWD_REQ);
	cr_assert_eq(peer_new(&cb, &x), -PARLEY_EINVAL);
	cb.frames = PEER_FRAMES_ALL | PEER_FRAME_BIT(PEER_FRAME_LAST + 1);
	cr_assert_eq(peer_new(&cb, &x), -PARLEY_EINVAL);
	char big[PEER_INFO_MAX + 1];
	memset(big, 'x', PEER_INFO_MAX - 3);
	big[PEER_INFO_MAX - 3] = '\0';
	cb.frames = old;
	cb.info = big;
	cr_assert_eq(peer_new(&cb, &x), -PARLEY_EINVAL);
}

/* A node that announces no set (built before item 9; here a raw peer
 * whose HELLO asks for no INFO) is taken to know PEER_FRAMES_LEGACY once
 * its first frame came, and the application hears of the link only then;
 * a node with an older set closes a link that carries a type it does not
 * know, as a node built before that type does. */
Test(peer, a_silent_peer_is_legacy_and_unknown_types_close_the_link)
{
	struct inbox ib = {0};
	struct peer_config cb = base_cfg(7, 2, &ib);
	cb.frames = PEER_FRAMES_UPTO(PEER_FRAME_APPEND_RES);
	struct peer *b = mk(&cb);
	peer_add(b, 1, "127.0.0.1", 9);
	int fd = raw_connect(peer_port(b));
	raw_hello(fd, 7, 1, 2);
	uint8_t pl[512];
	uint32_t n;
	cr_assert_eq(raw_frame(fd, b, pl, sizeof pl, &n), PEER_FRAME_HELLO);
	cr_assert_eq(stats(b, 1).state, PEER_LINK_UP);
	cr_assert_eq(ib.ups, 0, "link told up before the peer's first frame");
	cr_assert_not(peer_can_send(b, 1, PEER_FRAME_FWD_REQ));
	cr_assert_eq(peer_send_app(b, 1, PEER_FRAME_FWD_REQ, pl, 4),
		     -PARLEY_ECLOSED);
	uint8_t h[PEER_HDR_BYTES];
	peer_hdr_encode(h, PEER_FRAME_PING, 0);
	raw_send(fd, h, sizeof h);
	uint64_t end = real_ms() + 20000;
	while (!ib.ups && real_ms() < end)
		peer_poll(b, 1);
	cr_assert_eq(ib.ups, 1);
	struct peer_link_stats s = stats(b, 1);
	cr_assert_eq(s.frames, PEER_FRAMES_LEGACY, "%#x", s.frames);
	cr_assert_not(s.frames_announced);
	cr_assert(peer_can_send(b, 1, PEER_FRAME_APPEND_REQ));
	cr_assert_not(peer_can_send(b, 1, PEER_FRAME_LIVE)); /* not ours */
	/* LIVE is past node 2's set: the link closes */
	uint8_t live[PEER_HDR_BYTES + 4] = {0};
	peer_hdr_encode(live, PEER_FRAME_LIVE, 4);
	raw_send(fd, live, sizeof live);
	cr_assert(raw_closed(fd, b));
	close(fd);
	s = stats(b, 1);
	cr_assert_eq(s.state, PEER_LINK_DOWN);
	cr_assert(strstr(s.last_error, "unknown frame type"), "%s",
		  s.last_error);
	cr_assert_eq(ib.downs, 1);
	peer_free(b);
}

Test(peer, invalid_configuration_is_refused)
{
	struct inbox ib = {0};
	struct peer_config c = base_cfg(0, 1, &ib);
	struct peer *p;
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EINVAL);
	c = base_cfg(7, 0, &ib);
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EINVAL);
	c = base_cfg(7, 1, &ib);
	c.ping_interval_ms = c.read_deadline_ms;
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EINVAL);
	c = base_cfg(7, 1, &ib);
	c.listen_addr = "localhost"; /* names are not resolved */
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EINVAL);
	c = base_cfg(7, 1, &ib);
	c.tls_ca = "/nonexistent";
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EINVAL, "CA without cert and key");
	c.tls_cert = "/nonexistent";
	c.tls_key = "/nonexistent";
	signal(SIGPIPE, SIG_DFL);
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EINVAL, "TLS with SIGPIPE not ignored");
	signal(SIGPIPE, SIG_IGN);
	cr_assert_eq(peer_new(&c, &p), -PARLEY_EIO);
	c = base_cfg(7, 1, &ib);
	cr_assert_eq(peer_new(&c, &p), 0);
	cr_assert_eq(peer_add(p, 1, "127.0.0.1", 1000), -PARLEY_EINVAL);
	cr_assert_eq(peer_add(p, 2, "not-an-ip", 1000), -PARLEY_EINVAL);
	cr_assert_eq(peer_add(p, 2, "::1", 1000), 0);
	cr_assert_eq(peer_add(p, 2, "127.0.0.1", 1000), -PARLEY_EEXIST);
	peer_poll(p, 0);
	/* run time: a node joins (peer_add) and leaves for good (peer_remove) */
	cr_assert_eq(peer_add(p, 3, "127.0.0.1", 1000), 0, "after the first poll");
	cr_assert_eq(peer_remove(p, 3), 0);
	cr_assert_eq(peer_remove(p, 3), 0);
	cr_assert_eq(peer_add(p, 3, "127.0.0.1", 1000), -PARLEY_EEXIST, "ids are never reused");
	cr_assert_eq(peer_remove(p, 9), -PARLEY_ENOTFOUND);
	struct raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = 7, .to = 3};
	cr_assert_eq(peer_send(p, 3, &m, 1), -PARLEY_ENOTFOUND);
	struct peer_link_stats ls;
	cr_assert_eq(peer_link_stats(p, 3, &ls), 0);
	cr_assert(ls.removed);
	peer_free(p);
}

/* ---- mutual TLS --------------------------------------------------------- */

static char ca1[64], ca2[64];

static void make_certs(void)
{
	const char *src = getenv("PARLEY_SRC_DIR");
	signal(SIGPIPE, SIG_IGN); /* peer TLS requires it (peer.h item 7) */
	snprintf(ca1, sizeof ca1, "/tmp/parley-peer-ca1-XXXXXX");
	snprintf(ca2, sizeof ca2, "/tmp/parley-peer-ca2-XXXXXX");
	cr_assert_not_null(mkdtemp(ca1));
	cr_assert_not_null(mkdtemp(ca2));
	char cmd[512];
	for (int i = 0; i < 2; i++) {
		snprintf(cmd, sizeof cmd,
			 "bash '%s/tools/dev-cluster-certs.sh' '%s' 3 >/dev/null",
			 src ? src : ".", i ? ca2 : ca1);
		if (system(cmd) != 0)
			cr_skip_test("tools/dev-cluster-certs.sh failed");
	}
}

static void drop_certs(void)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", ca1, ca2);
	(void)!system(cmd);
}

struct tlsfiles {
	char ca[128], cert[128], key[128];
};

static void use_tls(struct peer_config *c, struct tlsfiles *f, const char *cadir,
		    const char *certdir, int node)
{
	snprintf(f->ca, sizeof f->ca, "%s/ca.pem", cadir);
	snprintf(f->cert, sizeof f->cert, "%s/node-%d.pem", certdir, node);
	snprintf(f->key, sizeof f->key, "%s/node-%d.key", certdir, node);
	c->tls_ca = f->ca;
	c->tls_cert = f->cert;
	c->tls_key = f->key;
}

static struct peer_link_stats tls_pair_fails(struct tlsfiles *fa, struct tlsfiles *fb,
					     struct peer_stats_global *gb)
{
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	ca.tls_ca = fa->ca, ca.tls_cert = fa->cert, ca.tls_key = fa->key;
	cb.tls_ca = fb->ca, cb.tls_cert = fb->cert, cb.tls_key = fb->key;
	struct peer *a = mk(&ca), *b = mk(&cb);
	peer_add(a, 2, "127.0.0.1", peer_port(b));
	peer_add(b, 1, "127.0.0.1", peer_port(a));
	/* let it try several times (backoff is fake time) */
	for (int i = 0; i < 3000; i++) {
		peer_poll(a, 0);
		peer_poll(b, 0);
		fake_ms += 1;
		if (stats(a, 2).connect_failures >= 3)
			break;
	}
	struct peer_link_stats s = stats(a, 2);
	struct peer_link_stats all[1];
	peer_stats(b, all, 1, gb);
	cr_assert_eq(all[0].connects, 0, "b must never accept the link");
	peer_free(a);
	peer_free(b);
	return s;
}

Test(peer_tls, same_ca_links_up)
{
	make_certs();
	struct inbox ia = {0}, ib = {0};
	struct peer_config ca = base_cfg(7, 1, &ia), cb = base_cfg(7, 2, &ib);
	struct tlsfiles fa, fb;
	use_tls(&ca, &fa, ca1, ca1, 1);
	use_tls(&cb, &fb, ca1, ca1, 2);
	struct peer *a, *b;
	pair_up(&a, &b, &ia, &ib, &ca, &cb);
	struct raft_msg hb = hb_msg(3);
	cr_assert_eq(peer_send(a, 2, &hb, 1), 0);
	peer_flush(a);
	struct peer *ps[2] = {a, b};
	struct want_msgs w = {&ib, 1};
	cr_assert(drive(ps, 2, got_msgs, &w));
	peer_free(a);
	peer_free(b);
	drop_certs();
}

Test(peer_tls, certificate_from_another_ca_is_refused)
{
	make_certs();
	struct tlsfiles fa, fb;
	struct peer_config dummy;
	/* node 1 has a certificate of CA 2 (and trusts CA 1 like node 2) */
	use_tls(&dummy, &fa, ca1, ca2, 1);
	use_tls(&dummy, &fb, ca1, ca1, 2);
	struct peer_stats_global gb;
	struct peer_link_stats s = tls_pair_fails(&fa, &fb, &gb);
	cr_assert_eq(s.connects, 0);
	cr_assert_geq(s.connect_failures, 1);
	cr_assert_geq(gb.inbound_failed, 1, "node 2 refused the handshake");
	/* and the other way: node 2's certificate from CA 2 */
	use_tls(&dummy, &fa, ca1, ca1, 1);
	use_tls(&dummy, &fb, ca1, ca2, 2);
	s = tls_pair_fails(&fa, &fb, &gb);
	cr_assert_eq(s.connects, 0);
	cr_assert(strstr(s.last_error, "TLS handshake failed"), "%s", s.last_error);
	cr_assert(strstr(s.last_error, "certificate verify failed") ||
		  strstr(s.last_error, "unable to get local issuer"), "%s", s.last_error);
	drop_certs();
}

Test(peer_tls, certificate_for_another_node_is_refused)
{
	make_certs();
	struct tlsfiles fa, fb;
	struct peer_config dummy;
	/* node 2 presents node 3's (valid) certificate: the dialer refuses */
	use_tls(&dummy, &fa, ca1, ca1, 1);
	use_tls(&dummy, &fb, ca1, ca1, 3);
	struct peer_stats_global gb;
	struct peer_link_stats s = tls_pair_fails(&fa, &fb, &gb);
	cr_assert_eq(s.connects, 0);
	cr_assert(strstr(s.last_error, "does not name node-2"), "%s", s.last_error);
	/* node 1 presents node 3's certificate: the acceptor sends REJECT */
	use_tls(&dummy, &fa, ca1, ca1, 3);
	use_tls(&dummy, &fb, ca1, ca1, 2);
	s = tls_pair_fails(&fa, &fb, &gb);
	cr_assert_eq(s.connects, 0);
	cr_assert_geq(s.refused, 1);
	cr_assert(strstr(s.last_error, "certificate does not name the claimed node"), "%s",
		  s.last_error);
	cr_assert_geq(gb.inbound_refused, 1);
	drop_certs();
}
