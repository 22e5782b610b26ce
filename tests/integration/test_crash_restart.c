/*
 * test_crash_restart.c — kill -9 parleyd mid-traffic, restart it, and
 * check that every acknowledged message reaches every device exactly once
 * in seq order (the crash pattern of TESTING.md on the whole server).
 *
 * A sender child process sends TOTAL messages, alternating alice (TCP) and
 * bob (TLS), with libparley (which retries a SEND with the same
 * client_msg_id across reconnects); after each SEND_ACK it writes
 * (seq, client_msg_id) to a pipe. The parent runs four devices (two per
 * user, TCP and TLS; the TLS ones take early delivery, HELLO feature
 * EARLY: a message may come before its inbox pointer is durable)
 * subscribed from inbox seq 1, and SIGKILLs parleyd
 * after a seeded random number of acks, CYCLES times, restarting it on the
 * same data directory each time. At the end:
 *   - the acked seqs are exactly 1..TOTAL, one client_msg_id each;
 *   - every device got TOTAL events: conv seqs 1..TOTAL in order, with the
 *     acked client_msg_id at each seq, inbox seqs increasing (early ones
 *     carry inbox seq 0);
 *   - HISTORY holds the same TOTAL messages;
 *   - parleyd stops with status 0 on SIGTERM.
 */
#include "itest.h"

#define TOTAL 360
#define CYCLES 3

struct ackrec {
	uint64_t seq;
	uint8_t id[16];
};

static void sender_main(const struct it_server *srv, int wfd)
{
	struct parley_client *c[2];
	const char *users[2] = {"alice", "bob"};
	for (int i = 0; i < 2; i++) {
		char *tok = it_token_for(users[i]);
		struct parley_client_opts o = {
			.host = i ? "localhost" : "127.0.0.1",
			.port = i ? srv->tls_port : srv->port,
			.tls = i,
			.ca_file = i ? it_path("ca.pem") : NULL,
			.token = tok,
			.device_id = i ? "bob-sender" : "alice-sender",
			.connect_timeout_ms = 5000,
			.request_timeout_ms = 3000,
			.call_deadline_ms = 60000,
			.backoff_min_ms = 20,
			.backoff_max_ms = 500,
		};
		if (parley_client_new(&o, &c[i]) || parley_client_connect(c[i])) {
			fprintf(stderr, "sender: connect %s failed\n", users[i]);
			_exit(2);
		}
		free(tok);
	}
	for (int k = 0; k < TOTAL; k++) {
		char body[48];
		snprintf(body, sizeof body, "crash-test %d", k);
		struct parley_send_result r;
		int rc = parley_client_send(c[k % 2], "d:alice:bob", 1, body,
					    strlen(body), &r);
		if (rc) {
			fprintf(stderr, "sender: send %d failed: %s\n", k,
				parley_strerror(rc));
			_exit(3);
		}
		struct ackrec a = {.seq = r.seq};
		memcpy(a.id, r.client_msg_id, 16);
		if (write(wfd, &a, sizeof a) != sizeof a)
			_exit(4);
	}
	for (int i = 0; i < 2; i++)
		parley_client_free(c[i]);
	_exit(0);
}

int main(void)
{
	it_init("crash_restart");
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);

	struct {
		const char *user, *dev;
		int tls;
		struct parley_client *c;
		struct it_events ev;
	} d[4] = {{"alice", "alice-1", 0}, {"alice", "alice-2", 1},
		  {"bob", "bob-1", 0}, {"bob", "bob-2", 1}};
	for (int i = 0; i < 4; i++) {
		char *tok = it_token_for(d[i].user);
		struct parley_client_opts o = {
			.host = d[i].tls ? "localhost" : "127.0.0.1",
			.port = d[i].tls ? srv.tls_port : srv.port,
			.tls = d[i].tls,
			.ca_file = d[i].tls ? it_path("ca.pem") : NULL,
			.token = tok,
			.device_id = d[i].dev,
			.backoff_min_ms = 20,
			.backoff_max_ms = 500,
			.on_event = it_on_event,
			.user = &d[i].ev,
			.want_early = d[i].tls,
		};
		IT_OK(parley_client_new(&o, &d[i].c));
		IT_OK(parley_client_connect(d[i].c));
		IT_OK(parley_client_subscribe(d[i].c, 1, NULL));
		free(tok);
	}
	IT_OK(parley_client_conv_open(d[0].c, "bob", NULL)); /* SEND needs it */

	int p[2];
	IT_CHECK(pipe(p) == 0);
	pid_t child = fork();
	IT_CHECK(child >= 0);
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		sender_main(&srv, p[1]);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);

	static struct ackrec acks[TOTAL * 2];
	int nacks = 0, kills = 0;
	int next_kill = 20 + (int)parley_rng_below(&it_rng, 70);
	int child_status = -1;
	for (int spins = 0; spins < 600000 && child_status < 0; spins++) {
		struct ackrec a;
		ssize_t k;
		while ((k = read(p[0], &a, sizeof a)) == (ssize_t)sizeof a) {
			IT_CHECK(nacks < TOTAL * 2);
			acks[nacks++] = a;
		}
		if (kills < CYCLES && nacks >= next_kill) {
			it_server_kill(&srv);
			kills++;
			printf("crash_restart: kill -9 #%d after %d acks\n", kills, nacks);
			fflush(stdout);
			it_sleep_ms((unsigned)parley_rng_below(&it_rng, 300));
			it_server_start(&srv);
			next_kill = nacks + 30 + (int)parley_rng_below(&it_rng, 80);
		}
		for (int i = 0; i < 4; i++)
			parley_client_poll(d[i].c, 2);
		int st;
		if (waitpid(child, &st, WNOHANG) == child)
			child_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
	}
	IT_CHECK(child_status == 0, "sender exited with %d", child_status);
	struct ackrec a;
	while (read(p[0], &a, sizeof a) == (ssize_t)sizeof a)
		acks[nacks++] = a;
	IT_CHECK(kills == CYCLES, "only %d kills (acks %d)", kills, nacks);
	IT_CHECK(nacks == TOTAL, "acks %d", nacks);

	/* acked seqs are exactly 1..TOTAL, one id each */
	static struct ackrec by_seq[TOTAL + 1];
	for (int i = 0; i < nacks; i++) {
		IT_CHECK(acks[i].seq >= 1 && acks[i].seq <= TOTAL,
			 "acked seq %" PRIu64, acks[i].seq);
		IT_CHECK(by_seq[acks[i].seq].seq == 0, "seq %" PRIu64 " acked for "
			 "two messages", acks[i].seq);
		by_seq[acks[i].seq] = acks[i];
	}

	for (int i = 0; i < 4; i++) {
		uint64_t got = it_wait_events(d[i].c, &d[i].ev, TOTAL, 60000);
		IT_CHECK(got == TOTAL, "%s got %" PRIu64 " events", d[i].dev, got);
		uint64_t last_inbox = 0, early = 0;
		for (uint64_t j = 0; j < got; j++) {
			struct it_ev *e = &d[i].ev.v[j];
			IT_CHECK(e->conv_seq == j + 1, "%s event %" PRIu64 " conv_seq %"
				 PRIu64, d[i].dev, j, e->conv_seq);
			IT_CHECK(!memcmp(e->cmid, by_seq[j + 1].id, 16),
				 "%s: wrong message at seq %" PRIu64, d[i].dev, j + 1);
			/* increasing; RECEIPT events sit between messages;
			 * early ones (inbox seq 0) only where asked for */
			if (e->inbox_seq == 0) {
				IT_CHECK(d[i].tls, "%s: an early event", d[i].dev);
				early++;
				continue;
			}
			IT_CHECK(e->inbox_seq > last_inbox);
			last_inbox = e->inbox_seq;
		}
		printf("crash_restart: %s: %" PRIu64 " events, %" PRIu64 " early\n",
		       d[i].dev, got, early);
	}
	/* no extra events trickle in */
	for (int i = 0; i < 4; i++) {
		parley_client_poll(d[i].c, 200);
		IT_CHECK(d[i].ev.n == TOTAL, "%s got %" PRIu64 " (extra)", d[i].dev,
			 d[i].ev.n);
	}

	uint64_t before = 0, expect = TOTAL;
	for (int pages = 0; pages < 10; pages++) {
		const struct parley_history_page *pg;
		IT_OK(parley_client_history(d[0].c, "d:alice:bob", before, 100, &pg));
		for (unsigned k = 0; k < pg->count; k++, expect--) {
			IT_CHECK(pg->msgs[k].seq == expect);
			IT_CHECK(!memcmp(pg->msgs[k].client_msg_id, by_seq[expect].id, 16));
		}
		if (pg->flags & PARLEY_HISTF_END)
			break;
		before = pg->next_before_seq;
	}
	IT_CHECK(expect == 0, "history missing below %" PRIu64, expect);

	for (int i = 0; i < 4; i++) {
		parley_client_free(d[i].c);
		it_events_free(&d[i].ev);
	}
	int st = it_server_stop(&srv, SIGTERM, 20000);
	IT_CHECK(st == 0, "exit status %d", st);
	printf("crash_restart: ok (%d kills, %d messages, 4 devices)\n", kills, TOTAL);
	return 0;
}
