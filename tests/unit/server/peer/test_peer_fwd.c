/*
 * test_peer_fwd.c — forwarded appends (server/peer_fwd.c, peer_fwd.h).
 *
 * Part 1, the forwarder alone: node 1 forwards to node 2 through a fake
 * transport (frames kept in a list and handed over by the test), node 2
 * executes on a single-node engine (which leads everything): results,
 * duplicates (same producer id), the expected-seq precondition, batches,
 * order of appends to one stream, the deadline (AGAIN, and a late answer
 * ignored), a link going down (AGAIN), a frame the link refuses (AGAIN),
 * the in-flight bound (EFULL), no link (ECLOSED: the caller appends
 * locally), garbage frames (ignored), deletes (pe_delete on the leader,
 * the same deadline), and NOTLEADER from an executing
 * node that does not lead (a forwarded request is never forwarded again).
 *
 * The codecs alone: records and results round-trip, malformed ones are
 * refused (peer_fwd_codec).
 *
 * Part 2, over real links: three peer_nodes in spread placement (no
 * follow_partition0) on loopback; an append submitted through
 * peer_node_forward on a node that does not lead its partition is
 * executed by the leader, acknowledged with its seq, and readable on the
 * leader at that seq; a retry with the same producer id is a duplicate.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "parley_engine.h"
#include "peer.h"
#include "peer_fwd.h"
#include "peer_node.h"

/* ---- part 1: a fake transport --------------------------------------------- */

struct frame {
	struct frame *next;
	uint64_t from, to;
	uint8_t type;
	uint32_t len;
	uint8_t data[];
};

struct side {
	uint64_t id;
	struct fwd *f;
	int send_err; /* what send answers (0 = queued) */
	bool down;    /* fwd_up says false */
};

static pthread_mutex_t fmu = PTHREAD_MUTEX_INITIALIZER;
static struct frame *fh, *ft;
static struct side sides[2];

static int fake_send(void *arg, uint64_t to, uint8_t type, const uint8_t *pl,
		     uint32_t len)
{
	struct side *s = arg;
	if (s->send_err)
		return s->send_err;
	struct frame *f = malloc(sizeof *f + len);
	cr_assert_not_null(f);
	f->next = NULL;
	f->from = s->id;
	f->to = to;
	f->type = type;
	f->len = len;
	memcpy(f->data, pl, len);
	pthread_mutex_lock(&fmu);
	if (ft)
		ft->next = f;
	else
		fh = f;
	ft = f;
	pthread_mutex_unlock(&fmu);
	return 0;
}

static void fake_wake(void *arg)
{
	(void)arg;
}

static bool fake_up(void *arg, uint64_t node)
{
	(void)node;
	return !((struct side *)arg)->down;
}

static struct frame *take_frame(void)
{
	pthread_mutex_lock(&fmu);
	struct frame *f = fh;
	if (f) {
		fh = f->next;
		if (!fh)
			ft = NULL;
	}
	pthread_mutex_unlock(&fmu);
	return f;
}

static struct side *side_of(uint64_t id)
{
	return &sides[id - 1];
}

/* Delivers every frame in flight (and what the executing side answers)
 * until a poll round produces nothing; returns the frames delivered. */
/* Requests of side 0 not answered, failed or timed out yet. */
static uint64_t pending0(void)
{
	struct fwd_stats st;
	fwd_get_stats(sides[0].f, &st);
	return st.sent - st.answered - st.timeouts - st.link_failed;
}

/* Delivers frames both ways until none came for 200 rounds (~200 ms) and
 * side 0 waits for no answer, or for no answer for ~5 s more: an answer
 * waits for the engine's fdatasync, which on a loaded machine may
 * outlast the idle bound (seen in a full suite run). */
static int pump(uint64_t now)
{
	int n = 0;
	for (int idle = 0; idle < 200 || (pending0() && idle < 5000);) {
		fwd_poll(sides[0].f, now);
		fwd_poll(sides[1].f, now);
		struct frame *f = take_frame();
		if (!f) {
			idle++;
			usleep(1000); /* the engine answers from its shard */
			continue;
		}
		idle = 0;
		fwd_on_frame(side_of(f->to)->f, f->from, f->type, f->data,
			     f->len, now);
		free(f);
		n++;
	}
	return n;
}

static void drop_frames(void)
{
	struct frame *f;
	while ((f = take_frame()))
		free(f);
}

struct got {
	int calls;
	struct pe_append_result r;
};

static void got_cb(void *arg, const struct pe_append_result *r)
{
	struct got *g = arg;
	g->calls++;
	g->r = *r;
}

static struct pio *io;
static struct pe_engine *eng;

static void open_engine(const struct pe_cluster *cl)
{
	io = pio_mem_new(11);
	struct pe_options o = {.dir = "/data", .partitions = 4, .shards = 1,
			       .io = io, .cluster = cl};
	cr_assert_eq(pe_open(&o, &eng), 0);
}

static void setup1(void)
{
	for (int i = 0; i < 2; i++) {
		sides[i] = (struct side){.id = (uint64_t)i + 1};
		struct fwd_config c = {.self = sides[i].id, .send = fake_send,
				       .wake = fake_wake, .up = fake_up,
				       .arg = &sides[i]};
		cr_assert_eq(fwd_new(&c, &sides[i].f), 0);
	}
}

static void teardown1(void)
{
	drop_frames();
	fwd_free(sides[0].f);
	if (eng)
		pe_close(eng);
	fwd_free(sides[1].f); /* after the engine: completions queue there */
	eng = NULL;
	if (io)
		pio_free(io);
	io = NULL;
}

static struct pe_append_req req(const char *key, struct pe_input *in,
				uint32_t n, uint8_t pid)
{
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = in, .count = n};
	q.producer[0] = pid;
	q.producer[15] = pid ? 0x5a : 0;
	return q;
}

TestSuite(peer_fwd, .init = setup1, .fini = teardown1, .timeout = 60);

Test(peer_fwd, results_duplicates_precondition_order)
{
	open_engine(NULL);
	fwd_set_engine(sides[1].f, eng);
	struct pe_input in = {.type = 7, .flags = 3, .len = 5,
			      .payload = "hello"};
	struct got g[8] = {0};
	struct pe_append_req q = req("u/bob", &in, 1, 1);
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[0]), 0);
	cr_assert_eq(g[0].calls, 0, "never inside fwd_append");
	cr_assert_eq(fwd_pending(sides[0].f), 1);
	cr_assert_geq(pump(1000), 2);
	cr_assert_eq(g[0].calls, 1);
	cr_assert_eq(g[0].r.err, 0);
	cr_assert_eq(g[0].r.seq, 1);
	cr_assert_eq(g[0].r.count, 1);
	cr_assert(!g[0].r.duplicate);
	cr_assert_eq(fwd_pending(sides[0].f), 0);
	/* the same producer id: the original seq, flagged duplicate */
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[1]), 0);
	pump(1000);
	cr_assert_eq(g[1].calls, 1);
	cr_assert_eq(g[1].r.err, 0);
	cr_assert_eq(g[1].r.seq, 1);
	cr_assert(g[1].r.duplicate);
	cr_assert_eq(g[1].r.ts_ms, g[0].r.ts_ms);
	/* expected-seq precondition, as pe_append */
	struct pe_append_req e = req("u/bob", &in, 1, 0);
	e.expected_last_seq = 5;
	cr_assert_eq(fwd_append(sides[0].f, 2, &e, got_cb, &g[2]), 0);
	e.expected_last_seq = 1;
	cr_assert_eq(fwd_append(sides[0].f, 2, &e, got_cb, &g[3]), 0);
	/* a batch of three, then two singles: one frame, seqs in order */
	struct pe_input three[3] = {{.type = 1, .len = 1, .payload = "a"},
				    {.type = 1, .len = 1, .payload = "b"},
				    {.type = 1, .len = 0, .payload = ""}};
	struct pe_append_req b = req("u/bob", three, 3, 0);
	cr_assert_eq(fwd_append(sides[0].f, 2, &b, got_cb, &g[4]), 0);
	struct pe_append_req s1 = req("u/bob", &in, 1, 0);
	cr_assert_eq(fwd_append(sides[0].f, 2, &s1, got_cb, &g[5]), 0);
	cr_assert_eq(fwd_append(sides[0].f, 2, &s1, got_cb, &g[6]), 0);
	pump(1000);
	cr_assert_eq(g[2].r.err, -PARLEY_ESEQ);
	cr_assert_eq(g[3].r.err, 0);
	cr_assert_eq(g[3].r.seq, 2);
	cr_assert_eq(g[4].r.err, 0);
	cr_assert_eq(g[4].r.seq, 3);
	cr_assert_eq(g[4].r.count, 3);
	cr_assert_eq(g[5].r.seq, 6);
	cr_assert_eq(g[6].r.seq, 7);
	for (int i = 2; i <= 6; i++)
		cr_assert_eq(g[i].calls, 1);
	/* what the leader stored: type, flags, payload as sent */
	struct pe_read_req rq = {.key = "u/bob", .klen = 5, .from = 1,
				 .dir = PE_FORWARD, .limit = 10};
	struct pe_entry *ents = NULL;
	uint32_t n = 0;
	struct pe_read_result meta;
	cr_assert_eq(pe_read_sync(eng, &rq, &ents, &n, &meta), 0);
	cr_assert_eq(n, 7);
	cr_assert_eq(ents[0].type, 7);
	cr_assert_eq(ents[0].flags, 3);
	cr_assert_eq(ents[0].len, 5);
	cr_assert_eq(memcmp(ents[0].payload, "hello", 5), 0);
	cr_assert_eq(ents[3].len, 1);
	cr_assert_eq(ents[3].payload[0], 'b');
	free(ents);
	struct fwd_stats st;
	fwd_get_stats(sides[0].f, &st);
	cr_assert_eq(st.sent, 7);
	cr_assert_eq(st.answered, 7);
	fwd_get_stats(sides[1].f, &st);
	cr_assert_eq(st.executed, 7);
}

struct dgot {
	int calls;
	struct pe_delete_result r;
};

static void dgot_cb(void *arg, const struct pe_delete_result *r)
{
	struct dgot *g = arg;
	g->calls++;
	g->r = *r;
}

/* Deletes travel the same way: executed with pe_delete on the leader. */
Test(peer_fwd, deletes)
{
	open_engine(NULL);
	fwd_set_engine(sides[1].f, eng);
	struct pe_input in = {.type = 1, .len = 1, .payload = "x"};
	struct pe_append_req q = req("e/conv", &in, 1, 0);
	struct got g[3] = {0};
	for (int i = 0; i < 3; i++)
		cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[i]), 0);
	struct dgot d = {0}, d2 = {0};
	cr_assert_eq(fwd_delete(sides[0].f, 2, "e/conv", 6, 2, dgot_cb, &d), 0);
	pump(1);
	cr_assert_eq(g[2].r.seq, 3);
	cr_assert_eq(d.calls, 1);
	cr_assert_eq(d.r.err, 0);
	cr_assert_eq(d.r.first_seq, 3);
	cr_assert_eq(d.r.last_seq, 3);
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(eng, "e/conv", 6, &m), 0);
	cr_assert_eq(m.first_seq, 3);
	/* refusals as fwd_append's */
	cr_assert_eq(fwd_delete(sides[0].f, 1, "e/conv", 6, 2, dgot_cb, &d2),
		     -PARLEY_ECLOSED);
	cr_assert_eq(fwd_delete(sides[0].f, 2, "", 0, 2, dgot_cb, &d2),
		     -PARLEY_EINVAL);
	/* the deadline fails a delete AGAIN too */
	cr_assert_eq(fwd_delete(sides[0].f, 2, "e/conv", 6, 3, dgot_cb, &d2), 0);
	fwd_poll(sides[0].f, 10);
	drop_frames();
	fwd_poll(sides[0].f, 10 + FWD_TIMEOUT_MS);
	cr_assert_eq(d2.calls, 1);
	cr_assert_eq(d2.r.err, -PARLEY_EAGAIN);
}

Test(peer_fwd, deadline_link_down_refused_frame)
{
	open_engine(NULL);
	fwd_set_engine(sides[1].f, eng);
	struct pe_input in = {.type = 1, .len = 1, .payload = "x"};
	struct got g[4] = {0};
	struct pe_append_req q = req("u/carol", &in, 1, 9);
	/* no answer within the deadline: AGAIN; the late answer is ignored */
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[0]), 0);
	fwd_poll(sides[0].f, 1000); /* sent at 1000 */
	struct frame *f = take_frame();
	cr_assert_not_null(f);
	cr_assert_eq(f->type, PEER_FRAME_APPEND_REQ);
	fwd_poll(sides[0].f, 1000 + FWD_TIMEOUT_MS - 1);
	cr_assert_eq(g[0].calls, 0);
	fwd_poll(sides[0].f, 1000 + FWD_TIMEOUT_MS);
	cr_assert_eq(g[0].calls, 1);
	cr_assert_eq(g[0].r.err, -PARLEY_EAGAIN);
	fwd_on_frame(sides[1].f, 1, f->type, f->data, f->len, 1000);
	free(f);
	struct fwd_stats st;
	/* the late answer waits for the engine's fdatasync, which may
	 * outlast pump's idle bound on a loaded machine (seen in a full
	 * suite run: "st.late == 1" failed): pump until it is back */
	for (int t = 0; t < 50; t++) {
		pump(9000);
		fwd_get_stats(sides[0].f, &st);
		if (st.late)
			break;
	}
	cr_assert_eq(g[0].calls, 1, "answered once");
	cr_assert_eq(st.timeouts, 1);
	cr_assert_eq(st.late, 1);
	/* the retry with the same producer finds the append done */
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[1]), 0);
	uint64_t calls = 0;
	for (int t = 0; t < 50 && !calls; t++) {
		pump(9000);
		calls = (uint64_t)g[1].calls;
	}
	cr_assert_eq(g[1].calls, 1);
	cr_assert_eq(g[1].r.err, 0);
	cr_assert(g[1].r.duplicate);
	cr_assert_eq(g[1].r.seq, 1);
	/* the link goes down with it in flight: AGAIN */
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[2]), 0);
	fwd_poll(sides[0].f, 9000);
	drop_frames();
	fwd_link_down(sides[0].f, 2);
	cr_assert_eq(g[2].calls, 1);
	cr_assert_eq(g[2].r.err, -PARLEY_EAGAIN);
	/* the link refuses the frame (full queue): AGAIN */
	sides[0].send_err = -PARLEY_EFULL;
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[3]), 0);
	fwd_poll(sides[0].f, 9000);
	cr_assert_eq(g[3].calls, 1);
	cr_assert_eq(g[3].r.err, -PARLEY_EAGAIN);
	sides[0].send_err = 0;
	/* no link: refused at once, the caller appends locally */
	sides[0].down = true;
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[3]),
		     -PARLEY_ECLOSED);
	sides[0].down = false;
	cr_assert_eq(fwd_append(sides[0].f, 1, &q, got_cb, &g[3]),
		     -PARLEY_ECLOSED, "never to itself");
	cr_assert_eq(fwd_pending(sides[0].f), 0);
}

Test(peer_fwd, inflight_bound)
{
	struct pe_input in = {.type = 1, .len = 1, .payload = "x"};
	static struct got g[FWD_MAX_INFLIGHT + 1];
	memset(g, 0, sizeof g);
	struct pe_append_req q = req("u/dave", &in, 1, 0);
	for (uint32_t i = 0; i < FWD_MAX_INFLIGHT; i++)
		cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[i]), 0);
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[FWD_MAX_INFLIGHT]),
		     -PARLEY_EFULL);
	fwd_poll(sides[0].f, 1); /* sent, in one frame or a few */
	int frames = 0;
	struct frame *f;
	while ((f = take_frame())) {
		cr_assert_leq(f->len, FWD_FRAME_BYTES);
		frames++;
		free(f);
	}
	cr_assert_geq(frames, 1);
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[FWD_MAX_INFLIGHT]),
		     -PARLEY_EFULL, "sent but unanswered still count");
	fwd_link_down(sides[0].f, 2);
	for (uint32_t i = 0; i < FWD_MAX_INFLIGHT; i++) {
		cr_assert_eq(g[i].calls, 1);
		cr_assert_eq(g[i].r.err, -PARLEY_EAGAIN);
	}
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g[FWD_MAX_INFLIGHT]),
		     0);
	fwd_link_down(sides[0].f, 2); /* not sent yet: fails at the poll */
	fwd_poll(sides[0].f, 2);
	drop_frames();
	fwd_link_down(sides[0].f, 2);
	cr_assert_eq(g[FWD_MAX_INFLIGHT].calls, 1);
}

Test(peer_fwd, garbage_frames_ignored)
{
	open_engine(NULL);
	fwd_set_engine(sides[1].f, eng);
	uint8_t b[64];
	memset(b, 0xff, sizeof b);
	fwd_on_frame(sides[1].f, 1, PEER_FRAME_APPEND_REQ, b, sizeof b, 1);
	fwd_on_frame(sides[1].f, 1, PEER_FRAME_APPEND_REQ, b, 3, 1);
	fwd_on_frame(sides[0].f, 2, PEER_FRAME_APPEND_RES, b, sizeof b, 1);
	/* a well-formed record whose entry length runs past the end */
	struct pe_input in = {.type = 1, .len = 4, .payload = "abcd"};
	struct got g = {0};
	struct pe_append_req q = req("u/erin", &in, 1, 0);
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g), 0);
	fwd_poll(sides[0].f, 1);
	struct frame *f = take_frame();
	cr_assert_not_null(f);
	for (uint32_t cut = 0; cut < f->len; cut++)
		fwd_on_frame(sides[1].f, 1, f->type, f->data, cut, 1);
	struct fwd_stats st;
	fwd_get_stats(sides[1].f, &st);
	cr_assert_eq(st.executed, 0, "nothing executed from a cut frame");
	cr_assert_geq(st.bad_frames, 3);
	fwd_on_frame(sides[1].f, 1, f->type, f->data, f->len, 1);
	free(f);
	pump(1);
	cr_assert_eq(g.calls, 1);
	cr_assert_eq(g.r.err, 0);
}

static void no_send(void *arg, const struct raft_msg *m, uint32_t n)
{
	(void)arg;
	(void)m;
	(void)n;
}

/* An executing node that does not lead (a follower that never heard of a
 * leader) answers NOTLEADER: it never forwards further. */
Test(peer_fwd, executing_follower_answers_notleader)
{
	static const uint64_t voters[3] = {1, 2, 3};
	struct pe_cluster cl = {.node_id = 2, .voters = voters, .nvoters = 3,
				.send = no_send};
	open_engine(&cl);
	fwd_set_engine(sides[1].f, eng);
	struct pe_input in = {.type = 1, .len = 1, .payload = "x"};
	struct got g = {0};
	struct pe_append_req q = req("u/frank", &in, 1, 3);
	cr_assert_eq(fwd_append(sides[0].f, 2, &q, got_cb, &g), 0);
	pump(1);
	cr_assert_eq(g.calls, 1);
	cr_assert_eq(g.r.err, -PARLEY_ENOTLEADER);
	struct fwd_stats st;
	fwd_get_stats(sides[1].f, &st);
	cr_assert_eq(st.executed, 1);
	cr_assert_eq(st.sent, 0, "the executing node forwarded nothing");
}

/* ---- part 2: three peer_nodes over loopback, spread placement ------------- */

#define N 3
#define NPARTS 4

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t l = sizeof a;
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static char dirs[N][64];
static struct peer_node *pn[N];
static struct pe_engine *en[N];

static void fini2(void)
{
	for (int i = 0; i < N; i++)
		if (pn[i])
			peer_node_halt(pn[i]);
	for (int i = 0; i < N; i++) {
		if (en[i])
			pe_close(en[i]);
		if (pn[i])
			peer_node_stop(pn[i]);
		char cmd[256];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dirs[i]);
		if (dirs[i][0])
			(void)system(cmd);
	}
}

struct wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	struct pe_append_result r;
};

static void wait_cb(void *arg, const struct pe_append_result *r)
{
	struct wait *w = arg;
	pthread_mutex_lock(&w->mu);
	w->r = *r;
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static int forward_sync(int from, uint64_t to, const struct pe_append_req *q,
			struct pe_append_result *r)
{
	struct wait w = {.mu = PTHREAD_MUTEX_INITIALIZER,
			 .cv = PTHREAD_COND_INITIALIZER};
	int rc = peer_node_forward(pn[from], to, q, wait_cb, &w);
	if (rc)
		return rc;
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	*r = w.r;
	return r->err;
}

/* The two codecs alone (pure): a record round-trips for both ops, every
 * truncation and a trailing byte are refused, an entry count over
 * PE_MAX_BATCH is refused; a result round-trips, a RES payload's count
 * must match its length. */
Test(peer_fwd_codec, records_and_results)
{
	static struct pe_input in[PE_MAX_BATCH];
	static uint8_t b[1024], c[1025];
	struct pe_input e[2] = {{.type = 3, .flags = 1, .len = 4,
				 .payload = "abcd"},
				{.type = 4, .len = 0, .payload = NULL}};
	struct fwd_rec r = {.id = 77, .op = FWD_OP_APPEND,
			    .q = {.key = "u/x", .klen = 3, .entries = e,
				  .count = 2, .expected_last_seq = 9}};
	memset(r.q.producer, 0xee, sizeof r.q.producer);
	size_t n = fwd_rec_size(&r);
	cr_assert_eq(n, 4u + 8 + 1 + 1 + 3 + 16 + 8 + 2 + 8 + 4 + 8);
	fwd_rec_encode(b, &r);
	cr_assert_eq(le_get32(b), n - 4);
	struct fwd_rec d;
	cr_assert_eq(fwd_rec_decode(b + 4, n - 4, &d, in), 0);
	cr_assert(d.id == 77 && d.op == FWD_OP_APPEND && d.q.klen == 3 &&
		  !memcmp(d.q.key, "u/x", 3) && d.q.count == 2 &&
		  d.q.expected_last_seq == 9 && d.q.producer[15] == 0xee);
	cr_assert(in[0].type == 3 && in[0].flags == 1 && in[0].len == 4 &&
		  !memcmp(in[0].payload, "abcd", 4) && in[1].len == 0);
	for (size_t k = 0; k < n - 4; k++)
		cr_assert_eq(fwd_rec_decode(b + 4, k, &d, in), -PARLEY_EPROTO,
			     "len %zu", k);
	memcpy(c, b, n);
	cr_assert_eq(fwd_rec_decode(c + 4, n - 3, &d, in), -PARLEY_EPROTO);
	le_put16(c + 4 + 8 + 2 + 3 + 24, PE_MAX_BATCH + 1);
	cr_assert_eq(fwd_rec_decode(c + 4, n - 4, &d, in), -PARLEY_EPROTO);
	c[4 + 8] = 2; /* no such op */
	cr_assert_eq(fwd_rec_decode(c + 4, n - 4, &d, in), -PARLEY_EPROTO);

	r = (struct fwd_rec){.id = 5, .op = FWD_OP_DELETE,
			     .q = {.key = "c/r", .klen = 3}, .through = 12};
	n = fwd_rec_size(&r);
	fwd_rec_encode(b, &r);
	cr_assert_eq(fwd_rec_decode(b + 4, n - 4, &d, in), 0);
	cr_assert(d.id == 5 && d.op == FWD_OP_DELETE && d.through == 12 &&
		  d.q.klen == 3 && !memcmp(d.q.key, "c/r", 3));
	for (size_t k = 0; k < n - 4; k++)
		cr_assert_eq(fwd_rec_decode(b + 4, k, &d, in), -PARLEY_EPROTO);
	cr_assert_eq(fwd_rec_decode(b + 4, n - 3, &d, in), -PARLEY_EPROTO);

	struct fwd_res x = {.err = -PARLEY_ESEQ, .seq = 1, .ts_ms = 2,
			    .last_seq = 3, .leader = 4, .count = 5,
			    .duplicate = true}, y;
	uint64_t id = 0;
	le_put32(b, 1);
	fwd_res_encode(b + 4, 99, &x);
	fwd_res_decode(b + 4, &id, &y);
	cr_assert(id == 99 && y.err == -PARLEY_ESEQ && y.seq == 1 &&
		  y.ts_ms == 2 && y.last_seq == 3 && y.leader == 4 &&
		  y.count == 5 && y.duplicate);
	cr_assert_eq(fwd_res_count(b, 4 + FWD_RES_BYTES), 1);
	cr_assert_eq(fwd_res_count(b, 4 + FWD_RES_BYTES - 1), -PARLEY_EPROTO);
	cr_assert_eq(fwd_res_count(b, 3), -PARLEY_EPROTO);
	le_put32(b, 2);
	cr_assert_eq(fwd_res_count(b, 4 + FWD_RES_BYTES), -PARLEY_EPROTO);
}

Test(peer_fwd_links, forwarded_to_the_leader, .fini = fini2, .timeout = 120)
{
	uint16_t ports[N];
	for (int i = 0; i < N; i++)
		ports[i] = free_port();
	for (int i = 0; i < N; i++) {
		struct peer_node_config c;
		memset(&c, 0, sizeof c);
		c.cluster_id = 5;
		c.node_id = (uint64_t)i + 1;
		c.listen_port = ports[i];
		c.tick_ms = 20;
		c.leader_spread = true;
		for (int j = 0, k = 0; j < N; j++)
			if (j != i) {
				c.peers[k].id = (uint64_t)j + 1;
				snprintf(c.peers[k].addr, sizeof c.peers[k].addr,
					 "127.0.0.1");
				c.peers[k].port = ports[j];
				k++;
			}
		c.npeers = N - 1;
		cr_assert_eq(peer_node_new(&c, &pn[i]), 0);
		cr_assert(!peer_node_cluster(pn[i])->follow_partition0);
		snprintf(dirs[i], sizeof dirs[i], "/tmp/parley-fwd-XXXXXX");
		cr_assert_not_null(mkdtemp(dirs[i]));
		struct pe_options o = {0};
		o.dir = dirs[i];
		o.partitions = NPARTS;
		o.shards = 1;
		o.wal_segment_bytes = 16u << 20;
		o.cluster = peer_node_cluster(pn[i]);
		cr_assert_eq(pe_open(&o, &en[i]), 0);
		cr_assert_eq(peer_node_start(pn[i], en[i]), 0);
	}
	const char *key = "u/grace";
	uint32_t part = pe_partition_of(en[0], key, strlen(key));
	int lead = -1;
	for (int t = 0; t < 400 && lead < 0; t++) {
		for (int i = 0; i < N; i++)
			if (pe_partition_leader_check(en[i], part) == 0)
				lead = i;
		if (lead < 0)
			usleep(25000);
	}
	cr_assert_geq(lead, 0, "partition %u never got a leader", part);
	int from = (lead + 1) % N;
	/* the node forwarding knows the leader once its group heard from it */
	struct pe_raft_status st;
	for (int t = 0; t < 400; t++) {
		if (pe_raft_status(en[from], part, &st) == 0 &&
		    st.leader == (uint64_t)lead + 1)
			break;
		usleep(25000);
	}
	cr_assert_eq(st.leader, (uint64_t)lead + 1);
	struct pe_input in = {.type = 2, .len = 3, .payload = "fwd"};
	struct pe_append_req q = {.key = key, .klen = strlen(key),
				  .expected_last_seq = PE_NO_EXPECT,
				  .entries = &in, .count = 1};
	q.producer[0] = 0x42;
	struct pe_append_result r;
	int rc = -PARLEY_EAGAIN;
	for (int t = 0; t < 100 && (rc == -PARLEY_EAGAIN ||
				     rc == -PARLEY_ECLOSED); t++) {
		rc = forward_sync(from, (uint64_t)lead + 1, &q, &r);
		if (rc)
			usleep(50000); /* the link may still be dialling */
	}
	cr_assert_eq(rc, 0, "forwarded append: %s", parley_errname(rc));
	cr_assert_eq(r.seq, 1);
	/* acknowledged after the leader's commit: readable there at once */
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(en[lead], key, strlen(key), &m), 0);
	cr_assert_eq(m.last_seq, 1);
	cr_assert_eq(forward_sync(from, (uint64_t)lead + 1, &q, &r), 0);
	cr_assert(r.duplicate);
	cr_assert_eq(r.seq, 1);
	/* a node that does not lead answers NOTLEADER (never forwards),
	 * naming the leader once its group heard from it (the third node
	 * may start last: wait for that, as for `from` above) */
	int other = (lead + 2) % N;
	for (int t = 0; t < 400; t++) {
		if (pe_raft_status(en[other], part, &st) == 0 &&
		    st.leader == (uint64_t)lead + 1)
			break;
		usleep(25000);
	}
	cr_assert_eq(st.leader, (uint64_t)lead + 1);
	q.producer[0] = 0x43;
	rc = -PARLEY_ECLOSED;
	for (int t = 0; t < 100 && (rc == -PARLEY_EAGAIN ||
				     rc == -PARLEY_ECLOSED); t++) {
		rc = forward_sync(from, (uint64_t)other + 1, &q, &r);
		if (rc == -PARLEY_EAGAIN || rc == -PARLEY_ECLOSED)
			usleep(50000); /* the link may still be dialling */
	}
	cr_assert_eq(rc, -PARLEY_ENOTLEADER, "%s", parley_errname(rc));
	cr_assert_eq(r.leader, (uint64_t)lead + 1);
	/* leader placement: the leader hands this one partition to `from`
	 * (peer_node_transfer, pe_raft_transfer_partition); a node that does
	 * not lead it refuses, naming the leader */
	char msg[512];
	cr_assert_eq(peer_node_transfer(pn[from], part, (uint64_t)lead + 1,
					2000, msg, sizeof msg),
		     -PARLEY_ENOTLEADER, "%s", msg);
	cr_assert_eq(peer_node_transfer(pn[lead], part, (uint64_t)from + 1,
					10000, msg, sizeof msg), 0, "%s", msg);
	/* the old leader stepped down; the target wins the election its
	 * TimeoutNow started (published a moment later) */
	for (int t = 0; t < 200; t++) {
		cr_assert_eq(pe_raft_status(en[from], part, &st), 0);
		if (st.role == PE_LEADER)
			break;
		usleep(25000);
	}
	cr_assert_eq(st.role, PE_LEADER);
	/* ... and the old leader now forwards to it: the next seq */
	q.producer[0] = 0x44;
	rc = -PARLEY_EAGAIN;
	for (int t = 0; t < 100 && rc == -PARLEY_EAGAIN; t++) {
		rc = forward_sync(lead, (uint64_t)from + 1, &q, &r);
		if (rc)
			usleep(50000); /* the new leader's first commit */
	}
	cr_assert_eq(rc, 0, "%s", parley_errname(rc));
	cr_assert_eq(r.seq, 2);
}
