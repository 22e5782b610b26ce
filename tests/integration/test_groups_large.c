/*
 * test_groups_large.c — read fan-out of large groups against a real
 * parleyd (issue 13; docs/SERVER.md "Groups", docs/PROTOCOL.md "Large
 * groups"), with libparley devices (which do the catch-up).
 *
 *   1. 500 members (group_read_fanout_min 100): 300 devices online, 200
 *      members offline; 4 senders send 200 messages while the owner
 *      removes one online and one offline member half-way. Every online
 *      device gets every message exactly once (live), the removed one
 *      nothing after its removal; the engine's write cost per message is
 *      printed for this group; each offline member's inbox holds ONE
 *      ACTIVITY (coalesced), not one pointer per message; then the
 *      offline members connect and catch up exactly once (the removed
 *      one exactly up to its removal);
 *   2. restarts: SIGTERM, then kill -9 right after a burst of sends, with
 *      200 devices connected: after each, every acknowledged message
 *      reaches every device exactly once (live, or read back from the
 *      device's position after it reconnected);
 *   3. a group crossing the threshold: 90 members (write fan-out), 15 added
 *      (read), 10 removed (write again), messages in each phase: online and
 *      offline devices get every message of their membership exactly once;
 *   4. removal during concurrent sends (120 members, read fan-out): three
 *      sender threads while the owner removes a listening member and one
 *      sender: the removed listener gets every acked message before the
 *      removal's seq once and nothing after; the removed sender's later
 *      sends are refused; every other listener gets every acked message
 *      once. The terminal client (`parley watch`) catches up a new device.
 * Counts are asserted, never times.
 */
#include "itest.h"
#include "igroup.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#define NMEMB 500
#define NONLINE 300
#define NSENDERS 4
#define PER_SENDER 50
#define MAXSEQ 8192

static struct it_server srv;
static char G[32]; /* the group under test */

struct dev {
	struct parley_client *c;
	char user[16];
	uint8_t *seen;      /* [MAXSEQ] MESSAGE conv seqs delivered */
	uint64_t msgs, dups, max_seq, live;
};

static void dev_on_event(void *user, const struct parley_event *ev)
{
	struct dev *d = user;
	if (!parley_str_eq(ev->conv, G) || ev->kind != PARLEY_EV_MESSAGE)
		return;
	IT_CHECK(ev->conv_seq < MAXSEQ);
	if (d->seen[ev->conv_seq]) {
		d->dups++;
		return;
	}
	d->seen[ev->conv_seq] = 1;
	d->msgs++;
	if (ev->inbox_seq == 0)
		d->live++;
	if (ev->conv_seq > d->max_seq)
		d->max_seq = ev->conv_seq;
}

static void dev_open(struct dev *d, const char *user, const char *device)
{
	memset(d, 0, sizeof *d);
	snprintf(d->user, sizeof d->user, "%s", user);
	d->seen = calloc(MAXSEQ, 1);
	IT_CHECK(d->seen);
	struct parley_client_opts o = {.on_event = dev_on_event, .user = d};
	d->c = it_client_cb(&srv, user, device, &o);
}

static void dev_reset(struct dev *d)
{
	memset(d->seen, 0, MAXSEQ);
	d->msgs = d->dups = d->max_seq = d->live = 0;
}

static void dev_close(struct dev *d)
{
	parley_client_free(d->c);
	free(d->seen);
	d->c = NULL;
}

/* Serves every device until done(arg) or timeout_s. */
static void serve(struct dev *ds, int n, int (*done)(void *), void *arg,
		  int timeout_s)
{
	uint64_t t0 = parley_mono_ns();
	struct pollfd *p = calloc((size_t)n, sizeof *p);
	IT_CHECK(p);
	while (!done(arg)) {
		if ((parley_mono_ns() - t0) / 1000000000ull >= (uint64_t)timeout_s) {
			for (int i = 0; i < n && i < 8; i++) {
				uint64_t gp = 0;
				parley_client_group_position(ds[i].c, G, &gp);
				printf("  position %" PRIu64 ":", gp);
				printf("  %s: %" PRIu64 " messages (%" PRIu64 " live, %"
				       PRIu64 " dups), max seq %" PRIu64 ", fd %d, "
				       "cursor %" PRIu64 "\n", ds[i].user, ds[i].msgs,
				       ds[i].live, ds[i].dups, ds[i].max_seq,
				       parley_client_fd(ds[i].c),
				       parley_client_inbox_cursor(ds[i].c));
			}
			it_fail(__FILE__, __LINE__, "not delivered within %d s",
				timeout_s);
		}
		for (int i = 0; i < n; i++)
			p[i] = (struct pollfd){.fd = parley_client_fd(ds[i].c),
					       .events = POLLIN};
		poll(p, (nfds_t)n, 20);
		int down = 0;
		for (int i = 0; i < n; i++) {
			if (p[i].fd < 0 || parley_client_process(ds[i].c) < 0) {
				p[i].fd = -1;
				down++;
			}
		}
		if (down) {
			/* each waits out its GOAWAY's retry_after (1 s + jitter
			 * from when it read it): wait once for all, then
			 * reconnect them (each blocks until connected) */
			it_sleep_ms(1600);
			for (int i = 0; i < n; i++)
				if (p[i].fd < 0)
					parley_client_reconnect(ds[i].c);
		}
	}
	free(p);
}

/* "every device has at least want messages" */
struct want {
	struct dev *ds;
	int n;
	uint64_t want;
};
static int all_have(void *arg)
{
	struct want *w = arg;
	for (int i = 0; i < w->n; i++)
		if (w->ds[i].msgs < w->want)
			return 0;
	return 1;
}
static int never(void *arg)
{
	(void)arg;
	return 0;
}
static void settle(struct dev *ds, int n, int rounds)
{
	/* nothing more must come: serve a while without a goal */
	for (int r = 0; r < rounds; r++) {
		uint64_t t0 = parley_mono_ns();
		(void)t0;
		for (int i = 0; i < n; i++)
			parley_client_poll(ds[i].c, 0);
		it_sleep_ms(10);
	}
	(void)never;
}

static void wait_fanout(void)
{
	ig_wait_fanout(&srv);
}

static void start(void)
{
	it_server_start_ready(&srv);
}

static struct parley_client *cl(const char *user, const char *dev)
{
	return it_client(&srv, user, dev, 0, NULL);
}

static uint64_t send_n(struct parley_client *s, const char *tag, int from, int n,
		       uint64_t *seqs)
{
	uint64_t last = 0;
	for (int i = 0; i < n; i++) {
		char body[64];
		snprintf(body, sizeof body, "%s message %d", tag, from + i);
		struct parley_send_result a;
		IT_OK(parley_client_send(s, G, PARLEY_CT_TEXT, body, strlen(body), &a));
		last = a.seq;
		if (seqs)
			seqs[i] = a.seq;
	}
	return last;
}

static char unames[NMEMB][16];

/* Creates G with members names[0..n) (names[0] the owner); returns the
 * last membership event's seq. */
static uint64_t make_group(struct parley_client *owner, char (*names)[16], int n,
			   const char *title)
{
	return ig_group_make(owner, names, n, title, G, sizeof G);
}

/* `parley watch --from 1` as user (device "cli") until it printed want
 * lines of G's messages (or 60 s), a moment more, then stopped: returns how
 * many distinct message seqs of G it printed, *lines how many lines. */
static int run_watch(const char *user, int want, int *lines)
{
	char bin[512], port[16];
	snprintf(bin, sizeof bin, "%s/tools/parley", getenv("PARLEY_BIN_DIR"));
	snprintf(port, sizeof port, "%u", srv.port);
	char *tok = it_token_for(user);
	int out[2];
	IT_CHECK(pipe(out) == 0);
	pid_t pid = fork();
	IT_CHECK(pid >= 0);
	if (pid == 0) {
		dup2(out[1], 1);
		close(out[0]);
		execl(bin, bin, "--token", tok, "--port", port, "--device", "cli",
		      "watch", "--from", "1", (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	size_t cap = 1 << 20, n = 0;
	char *buf = malloc(cap);
	IT_CHECK(buf);
	uint64_t t0 = parley_mono_ns(), extra = 0;
	*lines = 0;
	for (;;) {
		uint64_t el = (parley_mono_ns() - t0) / 1000000;
		if (el > 60000 || (extra && el > extra))
			break;
		struct pollfd p = {out[0], POLLIN, 0};
		if (poll(&p, 1, 100) <= 0)
			continue;
		ssize_t r = read(out[0], buf + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		buf[n] = 0;
		int k = 0;
		for (const char *q = buf; (q = strstr(q, " message ")); q++)
			k++;
		*lines = k;
		if (k >= want && !extra)
			extra = el + 500; /* anything doubled would show */
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(out[0]);
	buf[n] = 0;
	static uint8_t seen[MAXSEQ];
	memset(seen, 0, sizeof seen);
	int distinct = 0;
	for (const char *q = buf; (q = strstr(q, G)); q++) {
		const char *h = strstr(q, " #");
		const char *eol = strchr(q, '\n');
		if (!h || (eol && h > eol) || !strstr(q, " message ") ||
		    (eol && strstr(q, " message ") > eol))
			continue;
		unsigned long long sq = strtoull(h + 2, NULL, 10);
		if (sq < MAXSEQ && !seen[sq]++)
			distinct++;
	}
	free(buf);
	free(tok);
	return distinct;
}

/* ---- 1 + 2 ---------------------------------------------------------------------------------- */

static void test_500(void)
{
	for (int i = 0; i < NMEMB; i++)
		snprintf(unames[i], sizeof unames[i], "m%03d", i);
	struct parley_client *owner = cl(unames[0], "owner-admin");
	uint64_t base = make_group(owner, unames, NMEMB, "five hundred");
	const struct parley_group_info_ok *gi;
	IT_OK(parley_client_group_info(owner, G, 0, 1, &gi));
	IT_CHECK(gi->member_count == NMEMB);

	struct dev *on = calloc(NONLINE, sizeof *on);
	IT_CHECK(on);
	for (int i = 0; i < NONLINE; i++) {
		dev_open(&on[i], unames[i], "phone");
		IT_OK(parley_client_subscribe(on[i].c, 1, NULL));
	}
	struct parley_client *snd[NSENDERS];
	for (int i = 0; i < NSENDERS; i++)
		snd[i] = cl(unames[1 + i], "laptop");
	wait_fanout();
	uint64_t e0 = it_metric_get(srv.admin_port, "parley_engine_entries_total");
	uint64_t b0 = it_metric_get(srv.admin_port, "parley_wal_bytes_total");
	uint64_t act0 = it_metric_get(srv.admin_port, "parley_read_fanout_activity_total");
	/* half the messages, then remove m299 (online) and m499 (offline),
	 * then the rest */
	const char *rm[2] = {unames[NONLINE - 1], unames[NMEMB - 1]};
	uint64_t removed_at = 0;
	int sent = 0;
	for (int round = 0; round < PER_SENDER; round++) {
		for (int s = 0; s < NSENDERS; s++)
			send_n(snd[s], unames[1 + s], round, 1, NULL);
		sent += NSENDERS;
		if (round == PER_SENDER / 2) {
			const struct parley_group_ok *ok;
			IT_OK(parley_client_group_remove(owner, G, rm, 2, &ok));
			removed_at = ok->seq;
		}
		/* keep the devices reading (live EVENTs queue otherwise) */
		for (int i = 0; i < NONLINE; i++)
			parley_client_process(on[i].c);
	}
	int nmsg = sent;
	uint64_t last = base + (uint64_t)nmsg + 1; /* + the removal event */
	wait_fanout();
	uint64_t e1 = it_metric_get(srv.admin_port, "parley_engine_entries_total");
	uint64_t b1 = it_metric_get(srv.admin_port, "parley_wal_bytes_total");
	uint64_t act = it_metric_get(srv.admin_port, "parley_read_fanout_activity_total") - act0;
	printf("500 members, read fan-out: %d messages cost %.2f engine entries and "
	       "%.0f WAL bytes per message (incl. one removal event and the "
	       "offline members' ACTIVITY pointers: %" PRIu64 ")\n", nmsg,
	       (double)(e1 - e0) / nmsg, (double)(b1 - b0) / nmsg, act);
	/* one ACTIVITY per offline member (never acknowledged: coalesced) */
	IT_CHECK(act <= (uint64_t)(NMEMB - NONLINE), "%" PRIu64 " ACTIVITY pointers "
		 "for %d offline members", act, NMEMB - NONLINE);

	struct want w = {on, NONLINE - 1, (uint64_t)nmsg};
	serve(on, NONLINE, all_have, &w, 240);
	settle(on, NONLINE, 20);
	for (int i = 0; i < NONLINE - 1; i++) {
		IT_CHECK(on[i].dups == 0, "%s: %" PRIu64 " duplicates", on[i].user,
			 on[i].dups);
		IT_CHECK(on[i].msgs == (uint64_t)nmsg, "%s got %" PRIu64 " of %d",
			 on[i].user, on[i].msgs, nmsg);
	}
	struct dev *r = &on[NONLINE - 1]; /* removed while online */
	IT_CHECK(r->dups == 0 && r->max_seq < removed_at,
		 "removed member got seq %" PRIu64 " after its removal at %" PRIu64,
		 r->max_seq, removed_at);
	for (uint64_t s = base + 1; s < removed_at; s++)
		IT_CHECK(r->seen[s], "removed member missed seq %" PRIu64, s);
	uint64_t live = 0;
	for (int i = 0; i < NONLINE; i++)
		live += on[i].live;
	printf("500 members: %d online devices got %d messages each exactly once "
	       "(%" PRIu64 " of them outside the inbox: live or read back)\n", NONLINE - 1, nmsg, live);
	for (int i = 0; i < NONLINE; i++)
		dev_close(&on[i]);
	free(on);

	/* offline members: a few pointers in the inbox, then catch up */
	int noff = NMEMB - NONLINE;
	struct dev *off = calloc((size_t)noff, sizeof *off);
	IT_CHECK(off);
	uint64_t max_inbox = 0;
	for (int i = 0; i < noff; i++) {
		dev_open(&off[i], unames[NONLINE + i], "phone");
		struct parley_sync_ok ok;
		IT_OK(parley_client_subscribe(off[i].c, 1, &ok));
		if (ok.last_inbox_seq > max_inbox)
			max_inbox = ok.last_inbox_seq;
	}
	/* join + removal event + ONE ACTIVITY (+ a re-armed one at most) */
	IT_CHECK(max_inbox <= 4, "an offline member's inbox holds %" PRIu64
		 " entries for %d messages", max_inbox, nmsg);
	w = (struct want){off, noff - 1, (uint64_t)nmsg};
	serve(off, noff, all_have, &w, 240);
	settle(off, noff, 20);
	for (int i = 0; i < noff - 1; i++) {
		IT_CHECK(off[i].dups == 0 && off[i].msgs == (uint64_t)nmsg,
			 "%s caught up %" PRIu64 " (+%" PRIu64 " dups) of %d",
			 off[i].user, off[i].msgs, off[i].dups, nmsg);
	}
	r = &off[noff - 1];
	IT_CHECK(r->dups == 0 && r->max_seq < removed_at,
		 "removed offline member read seq %" PRIu64, r->max_seq);
	for (uint64_t s = base + 1; s < removed_at; s++)
		IT_CHECK(r->seen[s], "removed offline member missed seq %" PRIu64, s);
	printf("500 members: %d offline members caught up exactly once (inbox "
	       "<= %" PRIu64 " entries each)\n", noff, max_inbox);
	/* the terminal client: a new device of an offline member */
	int lines = 0;
	int distinct = run_watch(unames[NMEMB - 2], nmsg, &lines);
	IT_CHECK(distinct == nmsg && lines == nmsg, "parley watch printed %d lines, "
		 "%d distinct messages of %d", lines, distinct, nmsg);
	printf("500 members: `parley watch` on a new device printed the %d "
	       "messages once each\n", nmsg);

	/* a process that dies with live EVENTs unread, restarted with its
	 * persisted inbox cursor and group position: reads them back */
	{
		uint64_t pos = 0, cur = parley_client_inbox_cursor(off[0].c);
		IT_OK(parley_client_group_position(off[0].c, G, &pos));
		IT_CHECK(pos >= last, "position %" PRIu64 " after catching up to %"
			 PRIu64, pos, last);
		it_sleep_ms(300); /* its ACTIVITY acknowledgement is in */
		uint64_t lost[3];
		send_n(snd[0], "unread", 0, 3, lost); /* live to off[0], unread */
		wait_fanout(); /* posted while it was connected */
		parley_client_free(off[0].c);        /* the process dies */
		off[0].c = NULL;
		it_sleep_ms(200);
		uint64_t after;
		send_n(snd[0], "while down", 0, 1, &after); /* ACTIVITY for m300 */
		struct dev *a = &off[0], b;
		free(a->seen);
		dev_open(a, unames[NONLINE], "phone"); /* the new process */
		IT_OK(parley_client_set_group_position(a->c, G, pos));
		IT_OK(parley_client_subscribe(a->c, cur + 1, NULL));
		struct want w1 = {a, 1, 4};
		serve(a, 1, all_have, &w1, 60);
		settle(a, 1, 20);
		IT_CHECK(a->msgs == 4 && a->dups == 0 && a->seen[lost[0]] &&
			 a->seen[lost[2]] && a->seen[after], "restored position: %"
			 PRIu64 " (+%" PRIu64 " dups) of 4", a->msgs, a->dups);
		/* the same without the position: from the ACTIVITY on only */
		dev_open(&b, unames[NONLINE], "phone");
		IT_OK(parley_client_subscribe(b.c, cur + 1, NULL));
		settle(&b, 1, 50);
		IT_CHECK(b.msgs <= 1 && !b.seen[lost[0]] && !b.seen[lost[2]],
			 "without the position: %" PRIu64, b.msgs);
		printf("500 members: a restarted device with its persisted group "
		       "position read back the 3 live messages it never read + 1 "
		       "(without it: %" PRIu64 ")\n", b.msgs);
		dev_close(&b);
		a->msgs += (uint64_t)nmsg;
		/* the others got the 4 live */
		w = (struct want){off, noff - 1, (uint64_t)nmsg + 4};
		serve(off, noff, all_have, &w, 120);
	}

	/* 2: restarts with the (formerly offline) devices connected */
	for (int phase = 0; phase < 2; phase++) {
		for (int i = 0; i < noff; i++)
			dev_reset(&off[i]);
		if (phase == 0) {
			IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
		} else {
			/* a burst whose fan-out is in flight, then kill -9 */
			for (int s = 0; s < NSENDERS; s++)
				send_n(snd[s], "burst", 0, 10, NULL);
			it_server_kill(&srv);
		}
		start();
		uint64_t first = 0, lastseq = 0;
		for (int s = 0; s < NSENDERS; s++) {
			uint64_t seqs[20];
			send_n(snd[s], phase ? "after-kill" : "after-term", 0, 20, seqs);
			if (!first)
				first = seqs[0];
			lastseq = seqs[19];
		}
		(void)first;
		/* every message of the group since the removal, for each device:
		 * the ones sent before the restart were delivered before it
		 * (reset above): count what is expected from the history */
		uint64_t expect = 0;
		uint64_t from_seq = phase ? lastseq - 80 - 40 + 1 : lastseq - 80 + 1;
		(void)from_seq;
		expect = phase ? 120 : 80;
		w = (struct want){off, noff - 1, expect};
		serve(off, noff, all_have, &w, 240);
		settle(off, noff, 20);
		for (int i = 0; i < noff - 1; i++)
			IT_CHECK(off[i].dups == 0 && off[i].msgs == expect,
				 "%s after %s: %" PRIu64 " (+%" PRIu64 " dups) of %" PRIu64,
				 off[i].user, phase ? "kill -9" : "SIGTERM", off[i].msgs,
				 off[i].dups, expect);
		IT_CHECK(off[noff - 1].msgs == 0, "a removed member got messages");
		printf("500 members: after %s, %d connected devices got the %" PRIu64
		       " new messages exactly once\n", phase ? "kill -9" : "SIGTERM",
		       noff - 1, expect);
		(void)last;
	}
	for (int i = 0; i < noff; i++)
		dev_close(&off[i]);
	free(off);
	for (int i = 0; i < NSENDERS; i++)
		parley_client_free(snd[i]);
	parley_client_free(owner);
}

/* ---- 3: crossing the threshold ---------------------------------------------------------------- */

static void test_crossing(void)
{
	static char xn[105][16];
	for (int i = 0; i < 105; i++)
		snprintf(xn[i], sizeof xn[i], "x%03d", i);
	struct parley_client *owner = cl(xn[0], "owner-admin");
	make_group(owner, xn, 90, "crossing");
	/* online: x000..x019; offline: the rest */
	struct dev on[20];
	for (int i = 0; i < 20; i++) {
		dev_open(&on[i], xn[i], "phone");
		IT_OK(parley_client_subscribe(on[i].c, 1, NULL));
	}
	struct parley_client *s = cl(xn[1], "laptop");
	send_n(s, "write", 0, 20, NULL);                 /* 90 members: write */
	const char *add[15];
	for (int i = 0; i < 15; i++)
		add[i] = xn[90 + i];
	const struct parley_group_ok *ok;
	IT_OK(parley_client_group_add(owner, G, add, 15, 0, &ok)); /* 105 */
	uint64_t added_at = ok->seq;
	for (int k = 0; k < 20; k++) {
		send_n(s, "read", k, 1, NULL);            /* read fan-out */
		for (int i = 0; i < 20; i++)
			parley_client_process(on[i].c);
	}
	const char *rmv[10];
	for (int i = 0; i < 10; i++)
		rmv[i] = xn[80 + i];
	IT_OK(parley_client_group_remove(owner, G, rmv, 10, &ok)); /* 95 */
	uint64_t removed_at = ok->seq;
	send_n(s, "write again", 0, 20, NULL);
	struct want w = {on, 20, 60};
	serve(on, 20, all_have, &w, 120);
	settle(on, 20, 20);
	for (int i = 0; i < 20; i++)
		IT_CHECK(on[i].msgs == 60 && on[i].dups == 0,
			 "%s: %" PRIu64 " (+%" PRIu64 " dups) of 60 across the "
			 "threshold", on[i].user, on[i].msgs, on[i].dups);
	for (int i = 0; i < 20; i++)
		dev_close(&on[i]);
	/* offline ones: an old member (60), a removed one (40: write + read),
	 * a new one (40: read + write again) */
	struct dev d[3];
	dev_open(&d[0], xn[50], "phone");
	dev_open(&d[1], xn[85], "phone");
	dev_open(&d[2], xn[100], "phone");
	for (int i = 0; i < 3; i++)
		IT_OK(parley_client_subscribe(d[i].c, 1, NULL));
	uint64_t want[3] = {60, 40, 40};
	for (int i = 0; i < 3; i++) {
		struct want w1 = {&d[i], 1, want[i]};
		serve(&d[i], 1, all_have, &w1, 60);
	}
	settle(d, 3, 20);
	for (int i = 0; i < 3; i++)
		IT_CHECK(d[i].msgs == want[i] && d[i].dups == 0,
			 "%s: %" PRIu64 " (+%" PRIu64 " dups) of %" PRIu64, d[i].user,
			 d[i].msgs, d[i].dups, want[i]);
	IT_CHECK(d[1].max_seq < removed_at);
	for (uint64_t q = 1; q < MAXSEQ; q++)
		IT_CHECK(!d[2].seen[q] || q > added_at, "new member got seq %" PRIu64
			 " before its join", q);
	for (int i = 0; i < 3; i++)
		dev_close(&d[i]);
	printf("crossing: 90 -> 105 -> 95 members, 60 messages, exactly once for "
	       "online and offline devices\n");
	parley_client_free(s);
	parley_client_free(owner);
}

/* ---- 4: removal during concurrent sends (read fan-out) ------------------------------------------ */

struct sender {
	const char *user;
	pthread_t thr;
	int n, acked, refused;
	_Atomic int progress;
	uint64_t seqs[200];
};

static void *sender_main(void *arg)
{
	struct sender *x = arg;
	struct parley_client *c = cl(x->user, "race");
	for (int i = 0; i < x->n; i++) {
		char body[64];
		snprintf(body, sizeof body, "%s race message %d", x->user, i);
		struct parley_send_result r;
		int rc = parley_client_send(c, G, PARLEY_CT_TEXT, body, strlen(body), &r);
		if (rc == 0)
			x->seqs[x->acked++] = r.seq;
		else if (rc == -PARLEY_EPERM)
			x->refused++;
		else
			IT_CHECK(0, "%s: send failed: %s", x->user, parley_strerror(rc));
		atomic_store(&x->progress, i + 1);
	}
	parley_client_free(c);
	return NULL;
}

static int senders_done(void *arg)
{
	struct sender *s = arg;
	for (int i = 0; i < 3; i++)
		if (atomic_load(&s[i].progress) < s[i].n)
			return 0;
	return 1;
}

static void test_removal_race(void)
{
	static char rn[120][16];
	for (int i = 0; i < 120; i++)
		snprintf(rn[i], sizeof rn[i], "r%03d", i);
	struct parley_client *owner = cl(rn[0], "owner-admin");
	make_group(owner, rn, 120, "race"); /* read fan-out from the start */
	/* listeners r010..r019 online; r010 will be removed */
	struct dev on[10];
	for (int i = 0; i < 10; i++) {
		dev_open(&on[i], rn[10 + i], "phone");
		IT_OK(parley_client_subscribe(on[i].c, 1, NULL));
	}
	struct sender snd[3] = {{.user = rn[1], .n = 150}, {.user = rn[2], .n = 150},
				{.user = rn[3], .n = 150}};
	for (int i = 0; i < 3; i++)
		IT_CHECK(pthread_create(&snd[i].thr, NULL, sender_main, &snd[i]) == 0);
	while (atomic_load(&snd[0].progress) < 30)
		for (int i = 0; i < 10; i++)
			parley_client_poll(on[i].c, 5);
	/* remove the listener r010 and the sender r003 while the sends go on */
	const struct parley_group_ok *ok;
	IT_OK(parley_client_group_remove(owner, G, (const char *[]){rn[10], rn[3]},
					 2, &ok));
	uint64_t removed_at = ok->seq;
	serve(on, 10, senders_done, snd, 180);
	for (int i = 0; i < 3; i++)
		pthread_join(snd[i].thr, NULL);
	/* every message acked: r001's and r002's all, r003's below the removal */
	uint64_t acked = 0;
	for (int i = 0; i < 3; i++)
		acked += (uint64_t)snd[i].acked;
	IT_CHECK(snd[2].refused > 0, "the removed sender was never refused");
	for (int i = 0; i < snd[2].acked; i++)
		IT_CHECK(snd[2].seqs[i] < removed_at, "r003 acked at %" PRIu64
			 " after its removal at %" PRIu64, snd[2].seqs[i], removed_at);
	struct want w = {on + 1, 9, acked};
	serve(on, 10, all_have, &w, 180);
	settle(on, 10, 20);
	for (int i = 1; i < 10; i++) {
		IT_CHECK(on[i].msgs == acked && on[i].dups == 0, "%s: %" PRIu64
			 " (+%" PRIu64 " dups) of %" PRIu64, on[i].user, on[i].msgs,
			 on[i].dups, acked);
		for (int k = 0; k < 3; k++)
			for (int j = 0; j < snd[k].acked; j++)
				IT_CHECK(on[i].seen[snd[k].seqs[j]], "%s missed seq %" PRIu64,
					 on[i].user, snd[k].seqs[j]);
	}
	/* the removed listener: every acked message before its removal, once,
	 * nothing after */
	IT_CHECK(on[0].dups == 0 && on[0].max_seq < removed_at, "removed listener "
		 "got seq %" PRIu64 " (removed at %" PRIu64 ")", on[0].max_seq,
		 removed_at);
	for (int k = 0; k < 3; k++)
		for (int j = 0; j < snd[k].acked; j++)
			if (snd[k].seqs[j] < removed_at)
				IT_CHECK(on[0].seen[snd[k].seqs[j]], "removed listener "
					 "missed seq %" PRIu64, snd[k].seqs[j]);
	printf("removal race (read fan-out, 120 members): listener and sender "
	       "removed at %" PRIu64 " during 3 x 150 concurrent sends; %" PRIu64
	       " acked, %d refused; every listener exactly once, the removed one "
	       "nothing after its removal\n", removed_at, acked, snd[2].refused);
	for (int i = 0; i < 10; i++)
		dev_close(&on[i]);
	parley_client_free(owner);
}

/* ---- write cost -------------------------------------------------------------------------------- */

static void write_cost(int n)
{
	static char names[NMEMB][16];
	IT_CHECK(n <= NMEMB);
	for (int i = 0; i < n; i++)
		snprintf(names[i], sizeof names[i], "w%d-%03d", n, i);
	struct parley_client *o = cl(names[0], "phone");
	make_group(o, names, n, "cost");
	wait_fanout();
	uint64_t e0 = it_metric_get(srv.admin_port, "parley_engine_entries_total");
	uint64_t b0 = it_metric_get(srv.admin_port, "parley_wal_bytes_total");
	const int m = 100;
	for (int i = 0; i < m; i++)
		IT_OK(parley_client_send(o, G, PARLEY_CT_TEXT, "a typical short line of chat",
					 28, NULL));
	wait_fanout();
	uint64_t e1 = it_metric_get(srv.admin_port, "parley_engine_entries_total");
	uint64_t b1 = it_metric_get(srv.admin_port, "parley_wal_bytes_total");
	/* the next 100: every offline member's ACTIVITY is outstanding */
	for (int i = 0; i < m; i++)
		IT_OK(parley_client_send(o, G, PARLEY_CT_TEXT, "a typical short line of chat",
					 28, NULL));
	wait_fanout();
	uint64_t e2 = it_metric_get(srv.admin_port, "parley_engine_entries_total");
	uint64_t b2 = it_metric_get(srv.admin_port, "parley_wal_bytes_total");
	printf("write cost, %d members (read fan-out from 100, every member "
	       "offline): first 100 messages %.1f engine entries and %.0f WAL "
	       "bytes per message, next 100 %.1f and %.0f (28-byte body)\n", n,
	       (double)(e1 - e0) / m, (double)(b1 - b0) / m,
	       (double)(e2 - e1) / m, (double)(b2 - b1) / m);
	if (n >= 100) /* read fan-out: one entry per message, coalesced */
		IT_CHECK(e2 - e1 <= 2 * (uint64_t)m, "%" PRIu64 " entries for %d "
			 "messages with every ACTIVITY outstanding", e2 - e1, m);
	parley_client_free(o);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	it_init("groups_large");
	ig_server_init(&srv, "groups_large", "100");
	start();
	write_cost(10);
	write_cost(100);
	write_cost(500);
	test_crossing();
	test_removal_race();
	test_500();
	it_cleanup();
	printf("test_groups_large: ok\n");
	return 0;
}
