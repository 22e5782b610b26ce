/*
 * test_noblock.c — "the shard thread never blocks on a disk", checked by
 * the engine's own counter (pe_shard_sync_io: synchronous file operations
 * the I/O backend performed on a shard thread, engine/io/io_guard.c), on
 * real files with the io_uring backend.
 *
 * One engine on a temporary directory runs what the shard thread serves:
 * appends through several WAL segment rolls, flushes, compactions (a
 * merge of everything), deletions, cold history reads (a fresh block
 * cache: pread + zstd), a tail catching up from history — and every
 * counter stays 0. The same counters are asserted for a snapshot catch-up
 * between three engines in test_part_repl.c (follower: chunk stores and
 * the install; leader: the image and its reads).
 *
 * A follower's snapshot chunk (raft.h: durable before the ready's
 * messages leave) is stored by a job off the shard thread: with that
 * store's fdatasync held at a gate (a pass-through backend over io_uring),
 * no SNAPSHOT_RESP leaves and the shard still serves the other partition;
 * once released, the answer leaves, after the fdatasync returned.
 * And a partly received snapshot (the header in partial, a file's first
 * bytes staged in place) survives a crash (pe_abort): after the reopen the
 * next chunk is taken at the offset the follower held.
 *
 * The tests can fail: with a synchronous operation put back on the shard
 * thread (history reads served on the shard, a snapshot chunk's store run
 * inline), the counter of that operation is no longer 0, and a chunk
 * stored on the shard thread would never be seen at the gate.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "engine_util.h"
#include "pio_pass.h"
#include "raft.h"

#define NPARTS 2
#define ENTRY_BYTES 8000
#define ROUNDS 3

static struct pe_engine *eng;
static char dir[64];

static void teardown(void)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	if (dir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		(void)system(cmd);
		dir[0] = '\0';
	}
}

TestSuite(noblock, .fini = teardown, .timeout = 120);

static void key_in(uint32_t part, int k, char *out, size_t cap)
{
	for (int i = 0;; i++) {
		snprintf(out, cap, "s%d-%d", k, i);
		if (pe_partition_of(eng, out, strlen(out)) == part)
			return;
	}
}

static void append_n(const char *key, int n)
{
	static char buf[ENTRY_BYTES];
	for (int i = 0; i < n; i++) {
		memset(buf, 'a' + (i % 26), sizeof buf);
		struct pe_input in = {.type = 1, .len = ENTRY_BYTES, .payload = buf};
		struct pe_append_req q = {.key = key, .klen = strlen(key),
					  .expected_last_seq = PE_NO_EXPECT,
					  .entries = &in, .count = 1};
		struct pe_append_result r;
		int rc = append_wait(eng, &q, &r, 1000);
		cr_assert_eq(rc, 0, "append: %s", parley_strerror(rc));
		cr_assert_eq(r.err, 0);
	}
}

static void read_all(const char *key, uint32_t want_first, uint32_t want)
{
	uint32_t got = 0;
	uint64_t from = want_first;
	for (;;) {
		struct pe_read_req q = {.key = key, .klen = strlen(key),
					.from = from, .dir = PE_FORWARD,
					.limit = PE_MAX_READ};
		struct pe_entry *es = NULL;
		uint32_t n = 0;
		struct pe_read_result rr;
		cr_assert_eq(pe_read_sync(eng, &q, &es, &n, &rr), 0);
		cr_assert_eq(rr.err, 0);
		for (uint32_t i = 0; i < n; i++)
			cr_assert_eq(es[i].seq, want_first + got + i);
		got += n;
		if (n)
			from = es[n - 1].seq + 1;
		free(es);
		if (rr.end || !n)
			break;
	}
	cr_assert_eq(got, want, "%s: %u entries, expected %u", key, got, want);
}

static void assert_no_sync_io(void)
{
	uint64_t n[PE_IO_OP_COUNT];
	pe_shard_sync_io(eng, n);
	for (int k = 0; k < PE_IO_OP_COUNT; k++)
		cr_assert_eq(n[k], 0, "%llu %s call(s) on a shard thread",
			     (unsigned long long)n[k],
			     pe_io_op_name((enum pe_io_op)k));
}

static void open_engine(void)
{
	struct pe_options o = {0};
	o.dir = dir;
	o.partitions = NPARTS;
	o.shards = 1; /* every partition on one shard thread */
	o.wal_segment_bytes = 16u << 20; /* the smallest: a roll or two */
	o.no_auto_compact = true;
	o.block_cache_bytes = 1u << 20;
	int rc = pe_open(&o, &eng);
	cr_assert_eq(rc, 0, "open: %s", parley_errname(rc));
}

Test(noblock, appends_flushes_compactions_and_cold_reads_make_no_sync_io)
{
	snprintf(dir, sizeof dir, "/tmp/parley-noblock-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	open_engine();
	char a[32], b[32], c[32];
	key_in(0, 0, a, sizeof a);
	key_in(1, 1, b, sizeof b);
	key_in(0, 2, c, sizeof c);
	for (int r = 0; r < ROUNDS; r++) {
		append_n(a, 700); /* ~5.6 MB a round: ~20 MB in all, WAL rolls */
		append_n(b, 300);
		append_n(c, 100);
		for (uint32_t p = 0; p < NPARTS; p++)
			cr_assert_eq(pe_flush_sync(eng, p), 0);
	}
	for (uint32_t p = 0; p < NPARTS; p++)
		cr_assert_eq(pe_compact_sync(eng, p, true), 0);
	struct pe_delete_result dr;
	cr_assert_eq(pe_delete_sync(eng, c, strlen(c), 50, &dr), 0);
	cr_assert_eq(dr.err, 0);
	append_n(a, 10); /* a memtable part */
	/* a new engine on the same files: a cold block cache */
	pe_close(eng);
	eng = NULL;
	open_engine();
	read_all(a, 1, 700 * ROUNDS + 10);
	read_all(b, 1, 300 * ROUNDS);
	read_all(c, 51, 100 * ROUNDS - 50);
	struct pe_sub *sub;
	atomic_store(&tail_next, 1);
	cr_assert_eq(pe_subscribe(eng, b, strlen(b), 1, tail_cb, NULL, &sub), 0);
	for (int i = 0; i < 20000 && atomic_load(&tail_next) <= 300 * ROUNDS; i++)
		usleep(1000);
	cr_assert_eq(atomic_load(&tail_next), 300 * ROUNDS + 1);
	cr_assert_eq(pe_unsubscribe(sub, NULL, NULL), 0);
	append_n(b, 100);
	cr_assert_eq(pe_flush_sync(eng, 1), 0);
	cr_assert_eq(pe_compact_sync(eng, 1, true), 0);
	assert_no_sync_io();
}

/* ---- a snapshot chunk is stored off the shard, and before its answer ------------ */

#define STAGE_FILES 8

/* A pass-through backend over io_uring that can hold the fdatasync of a
 * staged snapshot file (<dir>/snap/0/stage/...) at a gate. */
static struct {
	struct pio io;          /* first: the engine sees this; the inner
				   backend is pio_pass_in */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct pio_file *stage[STAGE_FILES];
	int nstage;
	bool gate_on, gate_held, gate_open;
	atomic_bool stage_synced; /* a staged file's fdatasync returned */
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int g_open(struct pio *io, const char *path, int flags,
		  struct pio_file **out)
{
	(void)io;
	int rc = pio_pass_in->ops->open(pio_pass_in, path, flags, out);
	if (!rc && strstr(path, "/snap/0/stage/")) {
		pthread_mutex_lock(&G.mu);
		if (G.nstage < STAGE_FILES)
			G.stage[G.nstage++] = *out;
		pthread_mutex_unlock(&G.mu);
	}
	return rc;
}
static void g_close(struct pio *io, struct pio_file *f)
{
	(void)io;
	pthread_mutex_lock(&G.mu);
	for (int i = 0; i < G.nstage; i++)
		if (G.stage[i] == f)
			G.stage[i] = G.stage[--G.nstage];
	pthread_mutex_unlock(&G.mu);
	pio_pass_in->ops->close(pio_pass_in, f);
}
static int g_fdatasync(struct pio *io, struct pio_file *f)
{
	(void)io;
	pthread_mutex_lock(&G.mu);
	bool stage = false;
	for (int i = 0; i < G.nstage; i++)
		stage |= G.stage[i] == f;
	if (stage && G.gate_on && !G.gate_open) {
		G.gate_held = true;
		pthread_cond_broadcast(&G.cv);
		while (!G.gate_open)
			pthread_cond_wait(&G.cv, &G.mu);
	}
	pthread_mutex_unlock(&G.mu);
	int rc = pio_pass_in->ops->fdatasync(pio_pass_in, f);
	if (stage && !rc)
		atomic_store(&G.stage_synced, true);
	return rc;
}

/* pio_pass_ops with the staged files' open, close and fdatasync watched */
static struct pio_ops gate_ops;

static void gate_init(void)
{
	gate_ops = pio_pass_ops;
	gate_ops.open = g_open;
	gate_ops.close = g_close;
	gate_ops.fdatasync = g_fdatasync;
	G.io.ops = &gate_ops;
}

static pthread_mutex_t sent_mu = PTHREAD_MUTEX_INITIALIZER;
static int snap_resps;
static bool synced_at_send;
static uint64_t resp_offset;

static void snap_send(void *arg, const struct raft_msg *msgs, uint32_t n)
{
	(void)arg;
	pthread_mutex_lock(&sent_mu);
	for (uint32_t i = 0; i < n; i++)
		if (msgs[i].type == RAFT_MSG_SNAPSHOT_RESP) {
			snap_resps++;
			synced_at_send = atomic_load(&G.stage_synced);
			resp_offset = msgs[i].offset;
		}
	pthread_mutex_unlock(&sent_mu);
}

static int resps(void)
{
	pthread_mutex_lock(&sent_mu);
	int n = snap_resps;
	pthread_mutex_unlock(&sent_mu);
	return n;
}

/* The snapshot wire format's header (log/part_snap.c): one HISTORY file
 * of `size` bytes; its checksum seed is the format's. */
#define SNAP_SEED 0x504e534e4f495450ull
static uint32_t snap_header(uint8_t *b, uint64_t index, uint64_t term,
			    uint64_t size)
{
	le_put64(b, 0x31305041534e4c50ull); /* "PLSNAP01" */
	le_put32(b + 8, 1);
	le_put32(b + 12, 0);                /* partition 0 */
	le_put64(b + 16, index);
	le_put64(b + 24, term);
	le_put32(b + 32, 1);
	le_put32(b + 36, 0);
	b[40] = 7;
	memcpy(b + 41, "HISTORY", 7);
	le_put64(b + 48, size);
	le_put64(b + 56, parley_xxh3(b, 56, SNAP_SEED));
	return 64;
}

/* Opens eng on dir through the gating backend as node 1 of the voters
 * {1, 2, 3}, its messages to snap_send, NPARTS partitions on one shard
 * thread: a follower the test plays the leader of. */
static const uint64_t follower_voters[3] = {1, 2, 3};

static void follower_open(void)
{
	static struct pe_cluster cl = {.node_id = 1, .voters = follower_voters, .nvoters = 3,
				       .election_ticks = 10, .heartbeat_ticks = 2,
				       .send = snap_send};
	struct pe_options o = {0};
	o.dir = dir;
	o.partitions = NPARTS;
	o.shards = 1; /* both partitions on one shard thread */
	o.cluster = &cl;
	o.io = &G.io;
	int rc = pe_open(&o, &eng);
	cr_assert_eq(rc, 0, "open: %s", parley_errname(rc));
}

/* A fresh temporary directory and gating backend over io_uring, then
 * follower_open. */
static void follower_start(void)
{
	snprintf(dir, sizeof dir, "/tmp/parley-noblock-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	pio_pass_in = pio_uring_new();
	cr_assert_not_null(pio_pass_in);
	gate_init();
	follower_open();
}

Test(noblock, a_snapshot_chunk_is_stored_off_the_shard_before_its_answer)
{
	follower_start();
	pthread_mutex_lock(&G.mu);
	G.gate_on = true;
	pthread_mutex_unlock(&G.mu);

	/* node 2, leader of term 5, sends the first chunk of a snapshot at
	 * index 1000: the header and the start of its one file */
	static uint8_t chunk[RAFT_MAX_CHUNK_BYTES];
	uint64_t fsize = 3u * RAFT_MAX_CHUNK_BYTES;
	uint32_t hl = snap_header(chunk, 1000, 4, fsize);
	memset(chunk + hl, 'h', sizeof chunk - hl);
	struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT, .group = 0, .from = 2,
			     .to = 1, .term = 5, .index = 1000, .offset = 0,
			     .chunk = chunk, .chunk_len = sizeof chunk};
	m.snap = (struct raft_snapshot_meta){
		.index = 1000, .term = 4, .size = hl + fsize,
		.csum = parley_xxh3(chunk, hl, SNAP_SEED)};
	m.snap.conf.n = 3;
	m.snap.conf.max_id = 3;
	for (int i = 0; i < 3; i++)
		m.snap.conf.ids[i] = follower_voters[i];
	cr_assert_eq(pe_raft_recv(eng, &m, 1), 0);
	bool held = false;
	for (int i = 0; i < 10000 && !held; i++) {
		pthread_mutex_lock(&G.mu);
		held = G.gate_held;
		pthread_mutex_unlock(&G.mu);
		if (!held)
			usleep(1000);
	}
	cr_assert(held, "the chunk's store never reached its fdatasync");

	/* the store is held: the shard serves the other partition and its
	 * group's state; no answer left */
	char b[32];
	key_in(1, 0, b, sizeof b);
	struct pe_meta meta;
	cr_assert_eq(pe_meta_sync(eng, b, strlen(b), &meta), 0);
	struct pe_raft_status rs;
	cr_assert_eq(pe_raft_status(eng, 1, &rs), 0);
	usleep(20000);
	cr_assert_eq(resps(), 0, "a SNAPSHOT_RESP left before its chunk was durable");

	pthread_mutex_lock(&G.mu);
	G.gate_open = true;
	pthread_cond_broadcast(&G.cv);
	pthread_mutex_unlock(&G.mu);
	for (int i = 0; i < 10000 && resps() == 0; i++)
		usleep(1000);
	cr_assert_geq(resps(), 1);
	pthread_mutex_lock(&sent_mu);
	cr_assert(synced_at_send, "the answer left before the fdatasync returned");
	cr_assert_eq(resp_offset, sizeof chunk, "the follower wants the next chunk");
	pthread_mutex_unlock(&sent_mu);
	cr_assert_eq(pe_raft_status(eng, 0, &rs), 0);
	cr_assert_eq(rs.snap_received_bytes, sizeof chunk);
	for (int k = 0; k < PE_IO_OP_COUNT; k++)
		cr_assert_eq(atomic_load(&pio_pass_in->shard_sync[k]), 0,
			     "%s on a shard thread", pe_io_op_name((enum pe_io_op)k));
	pe_close(eng);
	eng = NULL;
	pio_free(pio_pass_in);
	pio_pass_in = NULL;
}

/* A partly received snapshot survives a crash: its header and the staged
 * file's bytes are found at the reopen (raft_storage.load's partial), so
 * the leader's next chunk, at the offset the follower held, is taken and
 * answered with the offset after it (without the resume it would be
 * refused: a chunk past 0 of a snapshot the follower does not hold). */
static struct raft_msg chunk_msg(uint8_t *chunk, uint64_t off, uint32_t len,
				 uint32_t hl, uint64_t fsize)
{
	struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT, .group = 0, .from = 2,
			     .to = 1, .term = 5, .index = 1000, .offset = off,
			     .chunk = chunk, .chunk_len = len};
	m.snap = (struct raft_snapshot_meta){
		.index = 1000, .term = 4, .size = hl + fsize, .csum = 0};
	m.snap.conf.n = 3;
	m.snap.conf.max_id = 3;
	for (uint64_t i = 0; i < 3; i++)
		m.snap.conf.ids[i] = i + 1;
	return m;
}

static void wait_resps(int n)
{
	for (int i = 0; i < 10000 && resps() < n; i++)
		usleep(1000);
	cr_assert_geq(resps(), n, "no answer to the chunk");
}

Test(noblock, a_partly_received_snapshot_resumes_after_a_crash)
{
	follower_start();
	static uint8_t first[RAFT_MAX_CHUNK_BYTES], second[RAFT_MAX_CHUNK_BYTES];
	uint64_t fsize = 3u * RAFT_MAX_CHUNK_BYTES;
	uint32_t hl = snap_header(first, 1000, 4, fsize);
	memset(first + hl, 'h', sizeof first - hl);
	memset(second, 'i', sizeof second);
	struct raft_msg m = chunk_msg(first, 0, sizeof first, hl, fsize);
	m.snap.csum = parley_xxh3(first, hl, SNAP_SEED);
	uint64_t csum = m.snap.csum;
	cr_assert_eq(pe_raft_recv(eng, &m, 1), 0);
	wait_resps(1);
	pthread_mutex_lock(&sent_mu);
	cr_assert_eq(resp_offset, sizeof first);
	pthread_mutex_unlock(&sent_mu);

	pe_abort(eng); /* a crash: the shard and pool threads stop at once */
	eng = NULL;
	follower_open();
	m = chunk_msg(second, sizeof first, sizeof second, hl, fsize);
	m.snap.csum = csum;
	int before = resps();
	cr_assert_eq(pe_raft_recv(eng, &m, 1), 0);
	wait_resps(before + 1);
	pthread_mutex_lock(&sent_mu);
	cr_assert_eq(resp_offset, sizeof first + sizeof second,
		     "the follower did not resume at the bytes it held");
	pthread_mutex_unlock(&sent_mu);
	struct pe_raft_status rs;
	cr_assert_eq(pe_raft_status(eng, 0, &rs), 0);
	cr_assert_eq(rs.snap_received_bytes, sizeof second);
	cr_assert_eq(rs.snap_install_failed, 0);
	/* the staged file holds the bytes of both chunks, at their place */
	char path[128];
	snprintf(path, sizeof path, "%s/snap/0/stage/HISTORY", dir);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "no staged HISTORY");
	static uint8_t got[2u * RAFT_MAX_CHUNK_BYTES];
	size_t n = fread(got, 1, sizeof got, f);
	fclose(f);
	cr_assert_eq(n, 2u * RAFT_MAX_CHUNK_BYTES - hl);
	cr_assert(!memcmp(got, first + hl, sizeof first - hl));
	cr_assert(!memcmp(got + sizeof first - hl, second, sizeof second));
	pe_close(eng);
	eng = NULL;
	pio_free(pio_pass_in);
	pio_pass_in = NULL;
}
