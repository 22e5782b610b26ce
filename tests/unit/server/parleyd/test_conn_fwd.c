/*
 * test_conn_fwd.c — the forwarding seam of a connection (server/conn.c,
 * "forwarding to the leader"; docs/CLUSTER.md §3.3), on the fake loop of
 * conn_fx.h with a real proxy (server/proxy.c) whose peer link is a fake
 * that records the frames it is given.
 *
 * Gateway: on a node of a two-voter cluster that never heard of the other
 * (it leads nothing, so every write is refused NOTLEADER), a client's
 * CONV_OPEN and SEND are not answered NOTLEADER but forwarded: the
 * FWD_REQ carries the client's frame as sent, its user and device; the
 * leader's reply is written with the client's request id; a NOTLEADER
 * from the leader is passed on, never forwarded again; with no leader,
 * forwarding off or the link down the client gets NOTLEADER with the
 * hint as before; over the per-node cap, ERROR FULL; a link that drops
 * answers AGAIN; with leadership spread over nodes each request goes to
 * (or its redirect names) the leader of the partition it was refused for
 * (route.h), not one node for everything. Leader: a FWD_REQ runs on a virtual connection and its
 * reply (SEND_ACK, or NOTLEADER on a node that does not lead) goes back
 * as FWD_REP, never as a FWD_REQ; the virtual connection closes once
 * answered.
 */
#include "conn_fx.h"
#include "proxy.h"
#include "route.h"

/* ---- the fake peer link ------------------------------------------------------------ */

#define MAXF 32

static struct {
	uint64_t target;    /* the leader the hint names (0 = none known) */
	bool by_partition;  /* ...or 10 + the partition refused */
	uint32_t asked;     /* the partition the last hint was asked for */
	bool link_up;
	struct {
		uint64_t to;
		uint8_t type;
		uint32_t len;
		uint8_t data[4096];
	} f[MAXF];
	int n;
	struct fx *fx; /* the leader side's serve makes its virtual connection */
} link_;

static int l_send(void *arg, uint64_t to, uint8_t type, const void *a,
		  size_t alen, const void *b, size_t blen)
{
	(void)arg;
	cr_assert_lt(link_.n, MAXF);
	cr_assert_leq(alen + blen, sizeof link_.f[0].data);
	link_.f[link_.n].to = to;
	link_.f[link_.n].type = type;
	link_.f[link_.n].len = (uint32_t)(alen + blen);
	memcpy(link_.f[link_.n].data, a, alen);
	if (blen)
		memcpy(link_.f[link_.n].data + alen, b, blen);
	link_.n++;
	return 0;
}

static bool l_up(void *arg, uint64_t node)
{
	(void)arg;
	(void)node;
	return link_.link_up;
}

/* as parleyd's proxy_node.c: an LM_FRAME that ends the request */
static void l_reply(void *arg, const struct conn_ref *to, const uint8_t *frame,
		    uint32_t n)
{
	(void)arg;
	struct lmsg *m = lmsg_new(LM_FRAME, n);
	cr_assert(m);
	memcpy(m->data, frame, n);
	m->done_req = true;
	lmsg_post(to, m);
}

/* The leader side: the request runs on a virtual connection that takes
 * the fixture's place (slot 3, its generation), as a loop would. */
static int l_serve(void *arg, uint64_t from, const struct proxy_req *r,
		   const uint8_t *p, uint32_t n)
{
	(void)arg;
	(void)p;
	(void)n;
	struct fx *f = link_.fx;
	if (f->c) {
		if (!conn_sock(f->c)->closing)
			loop_conn_close(f->c, "replaced");
		conn_free(f->c);
	}
	f->c = conn_virtual_new(&f->lp, 3, f->gen, from, r);
	cr_assert(f->c);
	conn_virtual_run(f->c, r->frame, r->flen);
	return 0;
}

static struct proxy *proxy_mk(bool forward, uint32_t cap)
{
	link_.n = 0;
	link_.target = 2;
	link_.by_partition = false;
	link_.link_up = true;
	struct proxy_io io = {.send = l_send,
			      .link_up = l_up, .reply = l_reply,
			      .serve = l_serve};
	struct proxy_config cfg = {.forward = forward, .max_inflight = cap,
				   .timeout_ms = 1000};
	struct proxy *px = NULL;
	cr_assert_eq(proxy_new(&cfg, &io, &px), 0);
	return px;
}

/* ---- a follower: a two-voter cluster's node that leads nothing ------------------- */

static void drop_raft(void *arg, const struct raft_msg *msgs, uint32_t n)
{
	(void)arg;
	(void)msgs;
	(void)n;
}

/* parleyd's is route_refusal_leader + the node's addresses: here node 2
 * leads everything, or (by_partition) node 10 + p leads partition p */
static uint64_t hint2(void *arg, uint32_t partition, uint64_t leader,
		      char *plain, char *tls, size_t cap)
{
	(void)arg;
	(void)leader;
	link_.asked = partition;
	uint64_t to = link_.target;
	if (to && link_.by_partition && partition != ROUTE_PARTITION_ANY)
		to = 10 + partition;
	if (!to)
		return 0;
	snprintf(plain, cap, "10.0.0.%u:7400", (unsigned)to);
	snprintf(tls, cap, "10.0.0.%u:7401", (unsigned)to);
	return to;
}

static void follower_start(struct fx *f, struct world *w, uint64_t seed)
{
	fx_start(f, false, seed);
	memset(w, 0, sizeof *w);
	w->io = pio_mem_new(seed);
	static const uint64_t voters[2] = {1, 2};
	static struct pe_cluster cl = {.node_id = 1, .voters = voters,
				       .nvoters = 2, .send = drop_raft};
	struct pe_options o = {.dir = "/data", .partitions = 4, .shards = 2,
			       .io = w->io, .clock_ms = chat_clock_ms,
			       .clock_arg = &w->clock, .cluster = &cl,
			       .retention = chat_retention,
			       .nretention = chat_nretention};
	cr_assert_eq(pe_open(&o, &w->e), 0);
	cr_assert_eq(chat_open(w->e, &w->clock, &w->c), 0);
	f->s.engine = w->e;
	f->s.chat = w->c;
	conn_leader_hint_install(hint2, NULL);
}

static void follower_stop(struct fx *f, struct world *w)
{
	conn_leader_hint_install(NULL, NULL);
	if (!conn_sock(f->c)->closing)
		loop_conn_close(f->c, "test over");
	chat_close(w->c);
	pe_close(w->e);
	pio_free(w->io);
	struct proxy *px = f->s.proxy;
	fx_stop(f);
	proxy_free(px);
}

/* The gateway fixture of the tests below: a follower (follower_start)
 * with a forwarding proxy of `cap` forwards per node, and a client
 * alice/phone through HELLO and AUTH. follower_stop ends it and frees the
 * proxy installed in f->s.proxy. */
static struct proxy *gateway_start(struct fx *f, struct world *w,
				   uint64_t seed, uint32_t cap)
{
	follower_start(f, w, seed);
	struct proxy *px = proxy_mk(true, cap);
	f->s.proxy = px;
	fx_hello(f, "phone");
	fx_auth(f, "alice");
	return px;
}

/* The leader side: the proxy of f serves forwarded requests on virtual
 * connections that take f's connection's place (l_serve). */
static struct proxy *serving_start(struct fx *f)
{
	struct proxy *px = proxy_mk(true, 8);
	f->s.proxy = px;
	link_.fx = f;
	proxy_set_serving(px, true);
	return px;
}

/* The request, encoded as the client sends it. */
static uint32_t encode(uint8_t *b, size_t cap, uint32_t rid,
		       const struct parley_msg *m)
{
	int n = parley_proto_encode(b, cap, rid, m);
	cr_assert_gt(n, 0);
	return (uint32_t)n;
}

static struct parley_msg *send_msg(const char *conv, uint8_t id)
{
	struct parley_msg *m = msg_new(PARLEY_T_SEND);
	m->send.conv = parley_str_c(conv);
	m->send.client_msg_id[0] = id;
	m->send.content_type = 1;
	m->send.body = (struct parley_bytes){(const uint8_t *)"hi", 2};
	return m;
}

/* Waits for the client's next frame (pumping posted replies). */
static void answer(struct fx *f, struct parley_msg *out, uint32_t *rid)
{
	for (int i = 0; i < 200; i++) {
		if (fx_next(f, out, rid))
			return;
		fx_pump(f, 1);
	}
	cr_assert_fail("no answer");
}

/* The FWD_REQ at link_.f[i] carries this client frame of alice/phone,
 * for node `to`. */
static uint64_t is_fwd_to(int i, uint64_t to, const uint8_t *frame,
			  uint32_t n)
{
	cr_assert_eq(link_.f[i].type, PROXY_FRAME_REQ);
	cr_assert_eq(link_.f[i].to, to);
	struct proxy_req r;
	cr_assert_eq(proxy_req_decode(link_.f[i].data, link_.f[i].len, &r), 0);
	cr_assert_eq(r.ulen, 5);
	cr_assert(!memcmp(r.user, "alice", 5));
	cr_assert_eq(r.dlen, 5);
	cr_assert(!memcmp(r.device, "phone", 5));
	cr_assert_eq(r.flen, n);
	cr_assert(!memcmp(r.frame, frame, n), "the client's frame, as sent");
	return r.fwd_id;
}

static uint64_t is_fwd_of(int i, const uint8_t *frame, uint32_t n)
{
	return is_fwd_to(i, 2, frame, n);
}

/* The leader answers forward fwd_id with m (request id 999: the gateway
 * writes the client's own). */
static void leader_answers(struct proxy *px, uint64_t fwd_id,
			   const struct parley_msg *m)
{
	uint8_t b[4096];
	le_put64(b, fwd_id);
	uint32_t n = encode(b + 8, sizeof b - 8, 999, m);
	proxy_on_frame(px, 2, PROXY_FRAME_REP, b, 8 + n);
}

/* ---- gateway ------------------------------------------------------------------------ */

Test(conn_fwd, a_follower_forwards_what_it_would_refuse)
{
	struct fx f;
	struct world w;
	struct proxy *px = gateway_start(&f, &w, 31, 8);
	/* CONV_OPEN: refused NOTLEADER by the chat service's callback (an
	 * LM_FRAME marked notleader) */
	struct parley_msg *m = msg_new(PARLEY_T_CONV_OPEN);
	m->conv_open.peer = parley_str_c("bob");
	uint8_t frame[512];
	uint32_t n = encode(frame, sizeof frame, 70, m);
	fx_feed(&f, 70, m, false);
	for (int i = 0; i < 200 && link_.n == 0; i++)
		fx_pump(&f, 1);
	struct parley_msg *out = msg_new(0);
	cr_assert(!fx_next(&f, out, NULL), "answered instead of forwarded");
	cr_assert_eq(link_.n, 1);
	uint64_t id1 = is_fwd_of(0, frame, n);
	cr_assert_eq(f.c->inflight, 1);
	/* SEND likewise (refused at once: conn_error), while the first is
	 * in flight */
	struct parley_msg *s = send_msg("d:alice:bob", 1);
	n = encode(frame, sizeof frame, 71, s);
	fx_feed(&f, 71, s, false);
	cr_assert(!fx_next(&f, out, NULL));
	cr_assert_eq(link_.n, 2);
	uint64_t id2 = is_fwd_of(1, frame, n);
	cr_assert_neq(id1, id2);
	cr_assert_eq(f.c->inflight, 2);
	/* the leader's SEND_ACK comes back with the client's request id */
	struct parley_msg *ack = msg_new(PARLEY_T_SEND_ACK);
	ack->send_ack.conv = parley_str_c("d:alice:bob");
	ack->send_ack.client_msg_id[0] = 1;
	ack->send_ack.seq = 5;
	leader_answers(px, id2, ack);
	uint32_t rid = 0;
	answer(&f, out, &rid);
	cr_assert_eq(rid, 71);
	cr_assert_eq(out->type, PARLEY_T_SEND_ACK);
	cr_assert_eq(out->send_ack.seq, 5);
	cr_assert_eq(f.c->inflight, 1);
	/* a NOTLEADER from the leader (it lost its leadership) is passed on
	 * as it is: no second forward */
	struct parley_msg *nl = msg_new(PARLEY_T_ERROR);
	nl->error.code = PARLEY_ENOTLEADER;
	nl->error.text = parley_str_c("not the leader");
	leader_answers(px, id1, nl);
	answer(&f, out, &rid);
	cr_assert_eq(rid, 70);
	cr_assert_eq(out->type, PARLEY_T_ERROR);
	cr_assert_eq(out->error.code, PARLEY_ENOTLEADER);
	cr_assert_eq(link_.n, 2, "forwarded twice");
	cr_assert_eq(f.c->inflight, 0);
	cr_assert_null(f.c->fwd_saved, "a kept frame outlived its request");
	free(nl);
	free(ack);
	free(s);
	free(m);
	free(out);
	follower_stop(&f, &w);
}

Test(conn_fwd, without_a_leader_to_forward_to_the_client_is_redirected)
{
	struct fx f;
	struct world w;
	struct proxy *px = gateway_start(&f, &w, 32, 8);
	struct parley_msg *s = send_msg("d:alice:bob", 1);
	struct parley_msg *out = msg_new(0);
	uint32_t rid;
	for (int k = 0; k < 2; k++) {
		if (k == 0)
			link_.target = 0; /* no leader known (an election) */
		else {
			link_.target = 2;
			link_.link_up = false; /* its link is down */
		}
		fx_feed(&f, 80 + (uint32_t)k, s, false);
		answer(&f, out, &rid);
		cr_assert_eq(rid, 80 + (uint32_t)k);
		cr_assert_eq(out->type, PARLEY_T_ERROR);
		cr_assert_eq(out->error.code, PARLEY_ENOTLEADER);
		/* the hint is the node it would have gone to: none known,
		 * or the leader whose link is down */
		cr_assert_eq(out->error.leader_node, k == 0 ? 0 : 2);
		cr_assert_eq(link_.n, 0);
		cr_assert_eq(f.c->inflight, 0);
	}
	/* forwarding off (forward = 0): the redirect */
	f.s.proxy = proxy_mk(false, 8);
	fx_feed(&f, 82, s, false);
	answer(&f, out, &rid);
	cr_assert_eq(out->error.code, PARLEY_ENOTLEADER);
	cr_assert_eq(link_.n, 0);
	cr_assert_null(f.c->fwd_saved, "nothing kept with forwarding off");
	proxy_free(px);
	free(s);
	free(out);
	follower_stop(&f, &w);
}

/* The partition of conversation conv (its c/<conv> stream). */
static uint32_t conv_partition(struct world *w, const char *conv)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, conv, strlen(conv));
	cr_assert_gt(kl, 0);
	return pe_partition_of(w->e, key, (size_t)kl);
}

/* Leadership spread over nodes: a request goes to the leader of the
 * partition the chat service refused it for (route.h), not to one node
 * for everything; and without forwarding, the redirect names that
 * leader. */
Test(conn_fwd, a_request_goes_to_the_leader_of_its_partition)
{
	struct fx f;
	struct world w;
	struct proxy *px = gateway_start(&f, &w, 35, 8);
	link_.by_partition = true; /* node 10 + p leads partition p */
	/* two conversations in different partitions */
	static const char *peers[] = {"bob", "carol", "dave", "erin", "frank",
				      "gina", "hank", "ivan"};
	char conv[2][64];
	uint32_t part[2];
	int found = 0;
	for (unsigned i = 0; i < 8 && found < 2; i++) {
		char id[64];
		int n = parley_proto_dm_conv_id("alice", 5, peers[i],
						strlen(peers[i]), id, sizeof id);
		cr_assert_gt(n, 0);
		id[n] = '\0';
		uint32_t p = conv_partition(&w, id);
		if (found == 1 && p == part[0])
			continue;
		snprintf(conv[found], sizeof conv[found], "%s", id);
		part[found++] = p;
	}
	cr_assert_eq(found, 2, "no two conversations in two partitions");
	struct parley_msg *out = msg_new(0);
	for (int k = 0; k < 2; k++) {
		struct parley_msg *s = send_msg(conv[k], (uint8_t)(1 + k));
		uint8_t frame[512];
		uint32_t n = encode(frame, sizeof frame, 90 + (uint32_t)k, s);
		fx_feed(&f, 90 + (uint32_t)k, s, false);
		cr_assert(!fx_next(&f, out, NULL), "answered, not forwarded");
		cr_assert_eq(link_.n, k + 1);
		cr_assert_eq(link_.asked, part[k], "the hint of the refused "
			     "conversation's partition");
		uint64_t id = is_fwd_to(k, 10 + part[k], frame, n);
		struct parley_msg *ack = msg_new(PARLEY_T_SEND_ACK);
		ack->send_ack.conv = parley_str_c(conv[k]);
		ack->send_ack.seq = 1;
		uint8_t b[4096];
		le_put64(b, id);
		uint32_t an = encode(b + 8, sizeof b - 8, 999, ack);
		proxy_on_frame(px, 10 + part[k], PROXY_FRAME_REP, b, 8 + an);
		uint32_t rid = 0;
		answer(&f, out, &rid);
		cr_assert_eq(rid, 90 + (uint32_t)k);
		cr_assert_eq(out->type, PARLEY_T_SEND_ACK);
		free(ack);
		free(s);
	}
	/* forwarding off: the redirect names the partition's leader */
	f.s.proxy = proxy_mk(false, 8);
	link_.by_partition = true;
	for (int k = 0; k < 2; k++) {
		struct parley_msg *s = send_msg(conv[k], 7);
		uint32_t rid = 0;
		fx_feed(&f, 95 + (uint32_t)k, s, false);
		answer(&f, out, &rid);
		cr_assert_eq(out->error.code, PARLEY_ENOTLEADER);
		cr_assert_eq(out->error.leader_node, 10 + part[k]);
		char addr[32];
		snprintf(addr, sizeof addr, "10.0.0.%u:7400",
			 (unsigned)(10 + part[k]));
		cr_assert_eq(out->error.leader_addr.len, strlen(addr));
		cr_assert(!memcmp(out->error.leader_addr.p, addr, strlen(addr)));
		free(s);
	}
	/* a NOTLEADER with no refusal noted (a stale note never routes
	 * another request): partition 0's leader stands for it */
	route_note(part[1], 0);
	route_clear();
	uint32_t p = 0;
	uint64_t l = 0;
	cr_assert(!route_take(&p, &l));
	route_note(part[1], 77);
	cr_assert(route_take(&p, &l));
	cr_assert_eq(p, part[1]);
	cr_assert_eq(l, 77);
	cr_assert(!route_take(&p, &l), "a note is taken once");
	struct proxy *px2 = f.s.proxy;
	f.s.proxy = px;
	proxy_free(px2);
	free(out);
	follower_stop(&f, &w);
}

Test(conn_fwd, over_the_cap_full_and_a_dropped_link_again)
{
	struct fx f;
	struct world w;
	struct proxy *px = gateway_start(&f, &w, 33, 1);
	struct parley_msg *s = send_msg("d:alice:bob", 1);
	struct parley_msg *out = msg_new(0);
	uint32_t rid;
	fx_feed(&f, 90, s, false);
	cr_assert_eq(link_.n, 1);
	fx_feed(&f, 91, s, false); /* one forward to node 2 at most */
	answer(&f, out, &rid);
	cr_assert_eq(rid, 91);
	cr_assert_eq(out->error.code, PARLEY_EFULL);
	cr_assert_gt(out->error.retry_after_ms, 0);
	cr_assert_eq(f.c->inflight, 1);
	/* the link to the leader drops: AGAIN at once */
	proxy_link_down(px, 2);
	answer(&f, out, &rid);
	cr_assert_eq(rid, 90);
	cr_assert_eq(out->type, PARLEY_T_ERROR);
	cr_assert_eq(out->error.code, PARLEY_EAGAIN);
	cr_assert_eq(f.c->inflight, 0);
	free(s);
	free(out);
	follower_stop(&f, &w);
}

/* ---- leader ------------------------------------------------------------------------- */

/* A FWD_REQ of alice/phone carrying m as request rid, from node 4. */
static void forward_in(struct proxy *px, uint64_t id, uint32_t rid,
		       const struct parley_msg *m)
{
	uint8_t b[4096];
	uint32_t h = proxy_req_hdr_encode(b, id, "alice", 5, "phone", 5);
	uint32_t n = encode(b + h, sizeof b - h, rid, m);
	proxy_on_frame(px, 4, PROXY_FRAME_REQ, b, h + n);
}

/* The FWD_REP at link_.f[i] for forward id: its frame decoded. */
static void rep_of(int i, uint64_t id, struct parley_msg *out, uint32_t *rid)
{
	cr_assert_eq(link_.f[i].type, PROXY_FRAME_REP, "frame %d", i);
	cr_assert_eq(link_.f[i].to, 4);
	cr_assert_eq(le_get64(link_.f[i].data), id);
	struct parley_frame fr;
	uint32_t n = link_.f[i].len - 8;
	cr_assert_eq(parley_proto_frame_decode(link_.f[i].data + 8, n,
					       PARLEY_PROTO_MAX_FRAME_HARD, &fr),
		     (int)n);
	cr_assert_eq(parley_proto_decode_payload(fr.type, fr.payload,
						 fr.payload_len, out), 0);
	*rid = fr.request_id;
}

/* Pumps until the proxy has sent `want` frames. */
static void until_sent(struct fx *f, int want)
{
	for (int i = 0; i < 200 && link_.n < want; i++)
		fx_pump(f, 1);
	cr_assert_eq(link_.n, want);
}

Test(conn_fwd, the_leader_runs_it_on_a_virtual_connection)
{
	struct fx f;
	fx_start(&f, true, 34);
	cr_assert_eq(svc_open(f.w.c, "alice", "bob", NULL), 0);
	struct proxy *px = serving_start(&f);
	struct parley_msg *s = send_msg("d:alice:bob", 9);
	forward_in(px, 500, 17, s);
	until_sent(&f, 1);
	struct parley_msg *out = msg_new(0);
	uint32_t rid = 0;
	rep_of(0, 500, out, &rid);
	cr_assert_eq(rid, 17);
	cr_assert_eq(out->type, PARLEY_T_SEND_ACK);
	cr_assert_eq(out->send_ack.seq, 1);
	cr_assert(conn_sock(f.c)->closing, "the virtual connection stays open");
	/* the same client_msg_id again (a retry after AGAIN): deduplicated */
	forward_in(px, 501, 18, s);
	until_sent(&f, 2);
	rep_of(1, 501, out, &rid);
	cr_assert_eq(out->send_ack.seq, 1);
	cr_assert_eq(out->send_ack.flags, PARLEY_ACKF_DUPLICATE);
	/* not forwardable (an inbox subscription stays on the client's node) */
	struct parley_msg *sy = msg_new(PARLEY_T_SYNC);
	forward_in(px, 502, 19, sy);
	until_sent(&f, 3);
	rep_of(2, 502, out, &rid);
	cr_assert_eq(out->type, PARLEY_T_ERROR);
	cr_assert_eq(out->error.code, PARLEY_EPROTO);
	struct proxy_stats st;
	proxy_stats(px, &st);
	cr_assert_eq(st.served, 3);
	free(sy);
	free(s);
	free(out);
	fx_stop(&f);
	proxy_stats(px, &st);
	cr_assert_eq(st.serving, 0, "every virtual connection ended");
	proxy_free(px);
	link_.fx = NULL;
}

Test(conn_fwd, a_leader_that_is_not_the_leader_answers_notleader_once)
{
	struct fx f;
	struct world w;
	follower_start(&f, &w, 35);
	struct proxy *px = serving_start(&f);
	struct parley_msg *s = send_msg("d:alice:bob", 3);
	forward_in(px, 600, 21, s);
	until_sent(&f, 1);
	struct parley_msg *out = msg_new(0);
	uint32_t rid = 0;
	rep_of(0, 600, out, &rid);
	cr_assert_eq(rid, 21);
	cr_assert_eq(out->type, PARLEY_T_ERROR);
	cr_assert_eq(out->error.code, PARLEY_ENOTLEADER);
	for (int i = 0; i < 20; i++)
		fx_pump(&f, 0);
	cr_assert_eq(link_.n, 1, "a forwarded request was forwarded again");
	free(s);
	free(out);
	link_.fx = NULL;
	follower_stop(&f, &w);
}
