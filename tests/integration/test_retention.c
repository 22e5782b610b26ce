/*
 * test_retention.c — default retention (retention_max_count,
 * retention_max_age_ms) through real parleyd processes.
 *
 * Checks:
 *   - by count: 20 messages, retention_max_count 5, POST /admin/compact:
 *     HISTORY shows exactly the newest 5 (seqs 16..20) and END; a device
 *     that syncs from inbox_seq 1 gets those 5 messages and no others; the
 *     same after a restart; and the conversation's entries in the history
 *     segments on disk (every segment dumped with `parleyctl inspect
 *     --dump-segment`, i.e. what compaction kept, decompressed) hold the
 *     bodies of the 5 and none of the 15 trimmed ones;
 *   - by age: messages older than retention_max_age_ms leave HISTORY, and
 *     the inbox (SYNC_OK first_inbox_seq moves past their pointers);
 *   - per conversation (RETENTION): either member sets it, a non-member
 *     may not read or set it; applied at once, kept up by the sweeper,
 *     kept across a restart, and compaction removes what it trimmed from
 *     the segments;
 *   - POST /admin/compact is refused (403) when admin_compact is off.
 */
#include "itest.h"

#define CONV "d:alice:bob"

struct evs {
	uint32_t n;
	uint64_t seq[64];
	uint16_t kind[64];
};

static void on_ev(void *user, const struct parley_event *e)
{
	struct evs *x = user;
	if (x->n < 64) {
		x->seq[x->n] = e->conv_seq;
		x->kind[x->n] = e->kind;
		x->n++;
	}
}

static struct parley_client *client(const struct it_server *s, const char *user,
				    const char *dev, struct evs *ev)
{
	struct parley_client_opts cb = {.on_event = ev ? on_ev : NULL, .user = ev};
	return it_client_cb(s, user, dev, &cb);
}

static int compact(const struct it_server *s)
{
	const char req[] = "POST /admin/compact HTTP/1.1\r\nHost: t\r\n"
			   "Content-Length: 0\r\n\r\n";
	int code;
	char *out = it_http_raw(s->admin_port, req, sizeof req - 1, 60000, &code);
	free(out);
	return code;
}

/* The newest page: its seqs into seq[] (newest first); returns the count. */
static unsigned history(struct parley_client *c, uint64_t *seq, unsigned cap)
{
	const struct parley_history_page *p;
	IT_OK(parley_client_history(c, CONV, 0, 100, &p));
	IT_CHECK(p->flags & PARLEY_HISTF_END, "one page holds all");
	for (unsigned i = 0; i < p->count && i < cap; i++)
		seq[i] = p->msgs[i].seq;
	return p->count;
}

static void marker(char *out, size_t cap, uint64_t run, int i)
{
	snprintf(out, cap, "retention-%016" PRIx64 "-msg-%02d-end", run, i);
}

/* The entries of the conversation's streams (c/ and its edit index e/) in
 * every history segment of the (stopped) server's data dir, dumped.
 * Inbox entries (u/) are left out: the live fan-out carries a copy of
 * each message in its inbox pointers, and those copies stay until the
 * inbox's own retention (docs/SERVER.md, "Retention"). */
static char *dump_segments(const struct it_server *s)
{
	char cmd[1024], line[4096];
	snprintf(cmd, sizeof cmd, "'%s/tools/parleyctl' inspect --data '%s' --segments",
		 getenv("PARLEY_BIN_DIR"), s->data);
	FILE *f = popen(cmd, "r");
	IT_CHECK(f);
	size_t cap = 1 << 22, n = 0;
	char *all = calloc(1, cap);
	IT_CHECK(all);
	int segs = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned part;
		unsigned long long id;
		const char *p = strstr(line, "partition=");
		const char *q = strstr(line, " id=");
		if (!p || !q || sscanf(p, "partition=%u", &part) != 1 ||
		    sscanf(q, " id=%llu", &id) != 1)
			continue;
		char dcmd[1200];
		snprintf(dcmd, sizeof dcmd, "'%s/tools/parleyctl' inspect --data '%s' "
			 "--dump-segment %u:%llu --limit 1000000",
			 getenv("PARLEY_BIN_DIR"), s->data, part, id);
		FILE *d = popen(dcmd, "r");
		IT_CHECK(d);
		char *ln = NULL;
		size_t lcap = 0;
		ssize_t k;
		while ((k = getline(&ln, &lcap, d)) > 0) {
			if (strncmp(ln, "stream=c/" CONV " ", 10 + strlen(CONV)) &&
			    strncmp(ln, "stream=e/" CONV " ", 10 + strlen(CONV)))
				continue;
			IT_CHECK(n + (size_t)k < cap - 1, "dump larger than the test's buffer");
			memcpy(all + n, ln, (size_t)k);
			n += (size_t)k;
		}
		free(ln);
		IT_CHECK(pclose(d) == 0, "%s failed", dcmd);
		segs++;
	}
	IT_CHECK(pclose(f) == 0, "%s failed", cmd);
	IT_CHECK(segs > 0, "no history segment at all");
	all[n] = 0;
	return all;
}

/* A server with one retention option (flag value) and POST /admin/compact
 * enabled. */
static void start(struct it_server *srv, const char *name, const char *flag,
		  const char *value)
{
	it_server_init(srv, name);
	srv->extra[0] = flag;
	srv->extra[1] = value;
	srv->extra[2] = "--admin-compact";
	srv->extra[3] = "1";
	it_server_start(srv);
}

/* Sends marker(run, i) for i in [from, to] to CONV; each is message i. */
static void send_markers(struct parley_client *c, uint64_t run, int from, int to)
{
	char body[96];
	for (int i = from; i <= to; i++) {
		marker(body, sizeof body, run, i);
		struct parley_send_result r;
		IT_OK(parley_client_send(c, CONV, PARLEY_CT_TEXT, body, strlen(body), &r));
		IT_CHECK(r.seq == (uint64_t)i, "message %d got seq %" PRIu64, i, r.seq);
	}
}

static void by_count(void)
{
	struct it_server srv;
	start(&srv, "count", "--retention-max-count", "5");
	struct parley_client *a = client(&srv, "alice", "a1", NULL);
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(a, "bob", &cv));
	char body[96];
	send_markers(a, it_seed, 1, 20);
	uint64_t seq[100];
	IT_CHECK(history(a, seq, 100) == 20, "before compaction all 20 are there");
	IT_CHECK(compact(&srv) == 200);
	unsigned n = history(a, seq, 100);
	IT_CHECK(n == 5, "after compaction %u records", n);
	for (unsigned i = 0; i < 5; i++)
		IT_CHECK(seq[i] == 20 - i, "record %u is seq %" PRIu64, i, seq[i]);
	/* an older page: trimmed (or empty and END), never old messages */
	const struct parley_history_page *p;
	int rc = parley_client_history(a, CONV, 10, 100, &p);
	IT_CHECK(rc == -PARLEY_ETRIMMED || (rc == 0 && p->count == 0),
		 "before_seq 10: rc %d", rc);

	/* sync from the start: only the retained messages */
	struct evs ev = {0};
	struct parley_client *b = client(&srv, "bob", "b-new", &ev);
	struct parley_sync_ok ok;
	IT_OK(parley_client_subscribe(b, 1, &ok));
	for (int ms = 0; ms < 20000 && ev.n < 5; ms += 50)
		parley_client_poll(b, 50);
	it_sleep_ms(300);
	parley_client_poll(b, 50);
	IT_CHECK(ev.n == 5, "sync delivered %u messages (sync_ok %" PRIu64 " %" PRIu64 " %" PRIu64 ", cursor %" PRIu64 ")", ev.n, ok.first_inbox_seq, ok.last_inbox_seq, ok.start_inbox_seq, parley_client_inbox_cursor(b));
	for (unsigned i = 0; i < 5; i++)
		IT_CHECK(ev.seq[i] == 16 + i && ev.kind[i] == PARLEY_EV_MESSAGE);
	parley_client_free(b);
	parley_client_free(a);

	/* retention survives a restart */
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);
	it_server_start(&srv);
	a = client(&srv, "alice", "a1", NULL);
	IT_CHECK(history(a, seq, 100) == 5 && seq[4] == 16);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);

	/* on disk: the segments compaction kept */
	char *dump = dump_segments(&srv);
	for (int i = 1; i <= 20; i++) {
		marker(body, sizeof body, it_seed, i);
		bool there = strstr(dump, body) != NULL;
		IT_CHECK(there == (i > 15), "message %d %s in the history segments",
			 i, there ? "still" : "not");
	}
	free(dump);
}

static void by_age(void)
{
	struct it_server srv;
	start(&srv, "age", "--retention-max-age-ms", "2000");
	struct parley_client *a = client(&srv, "alice", "a1", NULL);
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(a, "bob", &cv));
	send_markers(a, it_seed, 1, 6);
	it_sleep_ms(2500); /* the first 6 are now past retention */
	uint64_t t7 = parley_now_ms();
	send_markers(a, it_seed, 7, 9);
	IT_CHECK(compact(&srv) == 200);
	uint64_t seq[100];
	unsigned n = history(a, seq, 100);
	struct evs ev = {0};
	struct parley_client *b = client(&srv, "bob", "b-new", &ev);
	struct parley_sync_ok ok;
	IT_OK(parley_client_subscribe(b, 1, &ok));
	for (int ms = 0; ms < 20000 && ev.n < ok.last_inbox_seq + 1 - ok.start_inbox_seq;
	     ms += 50)
		parley_client_poll(b, 50);
	uint64_t took = parley_now_ms() - t7;
	/* Compaction applies the age to each partition at the time it gets
	 * there (the conversation's and the inbox's partitions apart): 7..9
	 * (stamped at or after t7) are certainly kept only when everything
	 * above ended within the 2 s (less a margin for the clocks); under
	 * load POST /admin/compact alone was seen to take 4 s. */
	if (took < 1800) {
		IT_CHECK(n == 3 && seq[0] == 9 && seq[2] == 7, "%u records", n);
		IT_CHECK(ok.first_inbox_seq == 7, "inbox first_inbox_seq %" PRIu64,
			 ok.first_inbox_seq);
		IT_CHECK(ev.n == 3 && ev.seq[0] == 7, "sync delivered %u", ev.n);
	} else {
		printf("retention by age: the checks took %" PRIu64 " ms after "
		       "message 7 (retention 2000 ms): 7..9 may be past it too, "
		       "so only: nothing of 1..6, the newest kept\n", took);
		IT_CHECK(n <= 3, "%u records", n);
		for (unsigned i = 0; i < n; i++)
			IT_CHECK(seq[i] == 9 - i, "record %u is seq %" PRIu64, i, seq[i]);
		IT_CHECK(ok.first_inbox_seq >= 7, "inbox first_inbox_seq %" PRIu64,
			 ok.first_inbox_seq);
		for (unsigned i = 0; i < ev.n; i++)
			IT_CHECK(ev.seq[i] >= 7 && ev.seq[i] <= 9 &&
				 (i == 0 || ev.seq[i] == ev.seq[i - 1] + 1),
				 "sync delivered seq %" PRIu64, ev.seq[i]);
	}
	parley_client_free(b);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);
}

/* RETENTION: a conversation's own setting, set by either member. */
static void per_conversation(void)
{
	struct it_server srv;
	start(&srv, "conv", "--retention-sweep-ms", "200");
	struct parley_client *a = client(&srv, "alice", "a1", NULL);
	struct parley_client *b = client(&srv, "bob", "b1", NULL);
	struct parley_client *carol = client(&srv, "carol", "c1", NULL);
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(a, "bob", &cv));
	char body[96];
	send_markers(a, it_seed + 1, 1, 10);
	/* reading the setting: none yet, the defaults (none), first seq 1 */
	const struct parley_retention_ok *ok;
	IT_OK(parley_client_retention(a, CONV, 0, 0, 0, &ok));
	IT_CHECK(ok->max_age_ms == 0 && ok->max_count == 0 && ok->first_seq == 1);
	/* a non-member may neither read nor set it */
	IT_CHECK(parley_client_retention(carol, CONV, PARLEY_RETF_SET, 0, 1, &ok) ==
		 -PARLEY_EPERM);
	IT_CHECK(parley_client_retention(carol, CONV, 0, 0, 0, &ok) == -PARLEY_EPERM);
	IT_CHECK(parley_client_retention(a, "g:none", 0, 0, 0, &ok) == -PARLEY_ENOTFOUND);
	/* bob (the other member) keeps the newest 4: applied at once */
	IT_OK(parley_client_retention(b, CONV, PARLEY_RETF_SET, 0, 4, &ok));
	IT_CHECK(ok->max_count == 4 && ok->first_seq == 7, "first_seq %" PRIu64,
		 ok->first_seq);
	uint64_t seq[100];
	unsigned n = history(a, seq, 100);
	IT_CHECK(n == 4 && seq[3] == 7, "%u records", n);
	/* the sweeper keeps it up: 3 more, then wait for a sweep */
	send_markers(a, it_seed + 1, 11, 13);
	for (int ms = 0; ms < 20000; ms += 100) {
		n = history(a, seq, 100);
		if (n == 4)
			break;
		it_sleep_ms(100);
	}
	IT_CHECK(n == 4 && seq[0] == 13 && seq[3] == 10, "after a sweep: %u", n);
	/* it survives a restart */
	parley_client_free(carol);
	parley_client_free(b);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);
	it_server_start(&srv);
	a = client(&srv, "alice", "a1", NULL);
	IT_OK(parley_client_retention(a, CONV, 0, 0, 0, &ok));
	IT_CHECK(ok->max_count == 4 && ok->first_seq == 10);
	marker(body, sizeof body, it_seed + 1, 14);
	IT_OK(parley_client_send(a, CONV, PARLEY_CT_TEXT, body, strlen(body), NULL));
	for (int ms = 0; ms < 20000; ms += 100) {
		n = history(a, seq, 100);
		if (n == 4 && seq[3] == 11)
			break;
		it_sleep_ms(100);
	}
	IT_CHECK(n == 4 && seq[3] == 11, "after the restart's sweep: %u", n);
	/* and the disk: compaction drops what the setting trimmed */
	IT_CHECK(compact(&srv) == 200);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);
	char *dump = dump_segments(&srv);
	for (int i = 1; i <= 14; i++) {
		marker(body, sizeof body, it_seed + 1, i);
		bool there = strstr(dump, body) != NULL;
		IT_CHECK(there == (i >= 11), "message %d %s in the history segments",
			 i, there ? "still" : "not");
	}
	free(dump);
}

static void compact_off(void)
{
	struct it_server srv;
	it_server_init(&srv, "off");
	it_server_start(&srv);
	IT_CHECK(compact(&srv) == 403);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 10000) == 0);
}

int main(void)
{
	it_init("retention");
	compact_off();
	by_count();
	by_age();
	per_conversation();
	it_cleanup();
	printf("retention: ok\n");
	return 0;
}
