/*
 * test_early_delivery.c — early delivery (HELLO feature EARLY,
 * docs/PROTOCOL.md "Early delivery"): a 1:1 message reaches the devices
 * that asked for it as soon as it is durable in its conversation, before
 * its inbox pointer; kill -9 between the message durable and its pointer
 * durable loses, skips and doubles nothing.
 *
 * parleyd runs with the TEST-ONLY PARLEY_TEST_FANOUT_DELAY_MS=FANOUT_DELAY:
 * every live fan-out waits that long on the fan-out thread before it
 * issues its inbox appends, so a message stays "durable, pointer not yet
 * issued" for at least that long after its SEND_ACK.
 *
 * alice sends TOTAL messages one at a time. Devices: bob-1 (early, TCP),
 * bob-2 (early, TLS), alice-2 (early: the sender's other device) and
 * bob-old (no early: today's behaviour). After each SEND_ACK the test
 * polls until every early device has the message. CYCLES times, right after a
 * message reached every early device EARLY (inbox_seq 0) and less than
 * half the delay after its ack (so its pointer was not even issued), it
 * kills parleyd with SIGKILL and restarts it on the same data; the
 * clients reconnect and resume from their own inbox cursors, the restart
 * re-fans out the lost pointers. At the end:
 *   - every device got conv seqs 1..TOTAL exactly once, in order, with
 *     the acked client_msg_id at each seq;
 *   - early devices got messages early (inbox_seq 0), bob-old never;
 *   - each early device's inbox cursor reached the inbox's last seq (the
 *     re-fanned pointers came and were taken, none skipped);
 *   - a new device reading bob's inbox from 1 without early delivery
 *     finds each message exactly once, in order (the inbox itself holds
 *     no loss and no double);
 *   - a small group's messages (write fan-out) come early too, each
 *     once, in seq order after the group's creation event;
 *   - parleyd stops with status 0 on SIGTERM.
 */
#include "itest.h"

#define TOTAL 60
#define CYCLES 3
#define FANOUT_DELAY 120 /* ms, PARLEY_TEST_FANOUT_DELAY_MS */
#define CONV "d:alice:bob"
#define GROUP_MSGS 10

struct dev {
	const char *user, *dev;
	int tls, early;
	struct parley_client *c;
	struct it_events ev;
};

static struct parley_client *dev_client(const struct it_server *srv,
					struct dev *d)
{
	char *tok = it_token_for(d->user);
	struct parley_client_opts o = {
		.host = d->tls ? "localhost" : "127.0.0.1",
		.port = d->tls ? srv->tls_port : srv->port,
		.tls = d->tls,
		.ca_file = d->tls ? it_path("ca.pem") : NULL,
		.token = tok,
		.device_id = d->dev,
		.connect_timeout_ms = 5000,
		.request_timeout_ms = 3000,
		.call_deadline_ms = 60000,
		.backoff_min_ms = 20,
		.backoff_max_ms = 300,
		.on_event = it_on_event,
		.user = &d->ev,
		.want_early = d->early,
	};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	IT_OK(parley_client_connect(c));
	free(tok);
	return c;
}

/* Has device d got conv seq `seq`, and how (early: inbox_seq 0)? */
static bool dev_has(const struct dev *d, uint64_t seq, bool *early)
{
	for (uint64_t i = d->ev.n; i > 0; i--)
		if (d->ev.v[i - 1].conv_seq == seq) {
			*early = d->ev.v[i - 1].inbox_seq == 0;
			return true;
		}
	return false;
}

int main(void)
{
	it_init("early_delivery");
	char delay[16];
	snprintf(delay, sizeof delay, "%d", FANOUT_DELAY);
	setenv("PARLEY_TEST_FANOUT_DELAY_MS", delay, 1); /* parleyd inherits it */
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);

	struct dev d[4] = {{"bob", "bob-1", 0, 1}, {"bob", "bob-2", 1, 1},
			   {"alice", "alice-2", 0, 1}, {"bob", "bob-old", 0, 0}};
	for (int i = 0; i < 4; i++) {
		d[i].c = dev_client(&srv, &d[i]);
		IT_OK(parley_client_subscribe(d[i].c, 1, NULL));
	}
	struct dev snd = {"alice", "alice-1", 0, 0};
	snd.c = dev_client(&srv, &snd);
	IT_OK(parley_client_conv_open(snd.c, "bob", NULL));

	static uint8_t ids[TOTAL + 1][16];
	int kills = 0, early_seen = 0;
	int next_kill = 4 + (int)parley_rng_below(&it_rng, 12);
	for (int k = 1; k <= TOTAL; k++) {
		char body[48];
		snprintf(body, sizeof body, "early %d", k);
		struct parley_send_result r;
		IT_OK(parley_client_send(snd.c, CONV, PARLEY_CT_TEXT, body,
					 strlen(body), &r));
		uint64_t t_ack = parley_mono_ns();
		IT_CHECK(r.seq == (uint64_t)k, "acked seq %" PRIu64 " for %d", r.seq,
			 k);
		memcpy(ids[k], r.client_msg_id, 16);
		/* until every early device has it (bob-old gets it through
		 * the inbox, FANOUT_DELAY later per message: checked at the
		 * end) */
		bool all = false, all_early = false;
		for (int ms = 0; ms < 30000 && !all; ms++) {
			all = all_early = true;
			for (int i = 0; i < 4; i++) {
				bool e = false;
				if (!d[i].early) {
					parley_client_poll(d[i].c, 0);
				} else if (!dev_has(&d[i], (uint64_t)k, &e)) {
					all = false;
					parley_client_poll(d[i].c, 1);
				} else if (!e) {
					all_early = false;
				}
			}
		}
		IT_CHECK(all, "message %d not delivered to every early device", k);
		uint64_t since_ms = (parley_mono_ns() - t_ack) / 1000000u;
		if (all_early)
			early_seen++;
		/* kill -9 with message k durable and its pointers not yet
		 * issued (the fan-out waits FANOUT_DELAY ms) but already on
		 * the early devices */
		if (kills < CYCLES && k >= next_kill && all_early &&
		    since_ms < FANOUT_DELAY / 2) {
			it_server_kill(&srv);
			kills++;
			printf("early_delivery: kill -9 #%d at message %d, %" PRIu64
			       " ms after its ack\n", kills, k, since_ms);
			fflush(stdout);
			it_sleep_ms((unsigned)parley_rng_below(&it_rng, 200));
			it_server_start(&srv);
			next_kill = k + 4 + (int)parley_rng_below(&it_rng, 12);
		}
	}
	IT_CHECK(kills == CYCLES, "only %d kills in %d messages (%d came early "
		 "to every early device)", kills, TOTAL, early_seen);

	/* the inboxes settle: every pointer (re-fanned ones included) */
	for (int ms = 0; ms < 20000; ms += 100)
		for (int i = 0; i < 4; i++)
			parley_client_poll(d[i].c, 25);
	struct it_events fresh = {0};
	struct dev nd = {"bob", "bob-new", 0, 0};
	nd.c = dev_client(&srv, &nd);
	nd.ev = fresh;
	struct parley_sync_ok ok;
	IT_OK(parley_client_subscribe(nd.c, 1, &ok));
	IT_CHECK(it_wait_events(nd.c, &nd.ev, TOTAL, 30000) == TOTAL,
		 "bob's inbox read from 1: %" PRIu64 " messages", nd.ev.n);
	uint64_t bob_last = ok.last_inbox_seq;

	for (int i = 0; i < 5; i++) {
		struct dev *x = i < 4 ? &d[i] : &nd;
		IT_CHECK(x->ev.n == TOTAL, "%s got %" PRIu64 " messages", x->dev,
			 x->ev.n);
		uint64_t early = 0;
		for (uint64_t j = 0; j < x->ev.n; j++) {
			struct it_ev *e = &x->ev.v[j];
			IT_CHECK(e->conv_seq == j + 1, "%s: message %" PRIu64
				 " has conv_seq %" PRIu64, x->dev, j, e->conv_seq);
			IT_CHECK(!memcmp(e->cmid, ids[j + 1], 16),
				 "%s: wrong message at seq %" PRIu64, x->dev, j + 1);
			IT_CHECK(!strcmp(e->conv, CONV));
			if (e->inbox_seq == 0)
				early++;
		}
		if (x->early)
			IT_CHECK(early >= (uint64_t)early_seen, "%s: %" PRIu64
				 " early", x->dev, early);
		else
			IT_CHECK(early == 0, "%s: %" PRIu64 " early without asking",
				 x->dev, early);
		printf("early_delivery: %s: %" PRIu64 " messages, %" PRIu64
		       " early\n", x->dev, x->ev.n, early);
	}
	/* bob's early devices took every inbox EVENT, re-fanned ones too */
	IT_CHECK(bob_last >= TOTAL, "bob's inbox ends at %" PRIu64, bob_last);
	for (int i = 0; i < 2; i++)
		IT_CHECK(parley_client_inbox_cursor(d[i].c) >= bob_last,
			 "%s: inbox cursor %" PRIu64 " < %" PRIu64, d[i].dev,
			 parley_client_inbox_cursor(d[i].c), bob_last);

	/* A small group (write fan-out): its messages come early too, each
	 * once, in seq order with the membership event before them. */
	const char *members[] = {"bob"};
	const struct parley_group_ok *gok;
	IT_OK(parley_client_group_create(snd.c, "early", 0, members, 1, &gok));
	char g[64];
	snprintf(g, sizeof g, "%.*s", (int)gok->conv.len, gok->conv.p);
	uint64_t gfirst = gok->seq;
	uint64_t base[4];
	for (int i = 0; i < 4; i++)
		base[i] = d[i].ev.n;
	for (int k = 1; k <= GROUP_MSGS; k++) {
		char body[32];
		snprintf(body, sizeof body, "group %d", k);
		struct parley_send_result r;
		IT_OK(parley_client_send(snd.c, g, PARLEY_CT_TEXT, body,
					 strlen(body), &r));
		IT_CHECK(r.seq == gfirst + (uint64_t)k);
	}
	for (int i = 0; i < 4; i++) {
		uint64_t want = base[i] + 1 + GROUP_MSGS;
		IT_CHECK(it_wait_events(d[i].c, &d[i].ev, want, 30000) == want,
			 "%s: %" PRIu64 " group events", d[i].dev,
			 d[i].ev.n - base[i]);
		uint64_t early = 0;
		for (uint64_t j = base[i]; j < want; j++) {
			struct it_ev *e = &d[i].ev.v[j];
			IT_CHECK(!strcmp(e->conv, g) &&
					 e->conv_seq == gfirst + (j - base[i]),
				 "%s: group event %" PRIu64 " is %s/%" PRIu64,
				 d[i].dev, j - base[i], e->conv, e->conv_seq);
			if (e->inbox_seq == 0)
				early++;
		}
		IT_CHECK(d[i].early ? early > 0 : early == 0, "%s: %" PRIu64
			 " group messages early", d[i].dev, early);
		printf("early_delivery: %s: group: %d messages, %" PRIu64
		       " early\n", d[i].dev, GROUP_MSGS, early);
	}
	for (int i = 0; i < 4; i++)
		parley_client_poll(d[i].c, 100);
	for (int i = 0; i < 4; i++)
		IT_CHECK(d[i].ev.n == base[i] + 1 + GROUP_MSGS, "%s: extra events",
			 d[i].dev);

	for (int i = 0; i < 4; i++) {
		parley_client_free(d[i].c);
		it_events_free(&d[i].ev);
	}
	parley_client_free(nd.c);
	it_events_free(&nd.ev);
	parley_client_free(snd.c);
	int st = it_server_stop(&srv, SIGTERM, 20000);
	IT_CHECK(st == 0, "exit status %d", st);
	printf("early_delivery: ok (%d kills, %d messages, %d early to every "
	       "early device)\n", kills, TOTAL, early_seen);
	return 0;
}
