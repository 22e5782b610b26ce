/*
 * test_delivery.c — offline catch-up and idempotent sends.
 *
 *   1. bob-tablet subscribes, receives some messages, goes offline; alice
 *      keeps sending; when bob-tablet comes back it gets everything it
 *      missed, in order, with no gap: once resuming from its own cursor
 *      (SYNC(last+1)) and once from the server-side cursor (SYNC(0)),
 *      where events not yet acknowledged may come again but nothing is
 *      skipped.
 *   2. A SEND whose ACK is lost (raw socket closed before reading it) and
 *      is retried with the same client_msg_id yields one message: the
 *      retry's SEND_ACK has DUPLICATE set and the original seq, history
 *      holds it once and bob's inbox gets it once.
 */
#include "itest.h"

static void send_text(struct parley_client *c, const char *conv, int i,
		      uint64_t *seq)
{
	char body[64];
	snprintf(body, sizeof body, "msg %d", i);
	struct parley_send_result r;
	IT_OK(parley_client_send(c, conv, PARLEY_CT_TEXT, body, strlen(body), &r));
	if (seq)
		*seq = r.seq;
}

static void check_run(const struct it_events *e, uint64_t from_conv_seq,
		      uint64_t to_conv_seq, const char *what)
{
	/* e must hold conv seqs from_conv_seq..to_conv_seq, consecutive,
	 * with consecutive inbox seqs */
	IT_CHECK(e->n == to_conv_seq - from_conv_seq + 1,
		 "%s: got %" PRIu64 " events, want %" PRIu64, what, e->n,
		 to_conv_seq - from_conv_seq + 1);
	for (uint64_t i = 0; i < e->n; i++) {
		IT_CHECK(e->v[i].conv_seq == from_conv_seq + i,
			 "%s: event %" PRIu64 " conv_seq %" PRIu64, what, i,
			 e->v[i].conv_seq);
		IT_CHECK(i == 0 || e->v[i].inbox_seq == e->v[i - 1].inbox_seq + 1,
			 "%s: inbox gap", what);
	}
}

int main(void)
{
	it_init("delivery");
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);
	const char *conv = "d:alice:bob";

	struct parley_client *alice = it_client(&srv, "alice", "a1", 0, NULL);
	IT_OK(parley_client_conv_open(alice, "bob", NULL));
	struct it_events tab = {0};
	struct parley_client *bt = it_client(&srv, "bob", "bob-tablet", 1, &tab);
	IT_OK(parley_client_subscribe(bt, 1, NULL));

	int first = 5 + (int)parley_rng_below(&it_rng, 10);
	for (int i = 1; i <= first; i++)
		send_text(alice, conv, i, NULL);
	IT_CHECK(it_wait_events(bt, &tab, (uint64_t)first, 20000) == (uint64_t)first);
	check_run(&tab, 1, (uint64_t)first, "online");
	uint64_t last_inbox = tab.v[tab.n - 1].inbox_seq;
	parley_client_free(bt); /* offline */

	int more = 20 + (int)parley_rng_below(&it_rng, 30);
	for (int i = first + 1; i <= first + more; i++)
		send_text(alice, conv, i, NULL);
	uint64_t total = (uint64_t)(first + more);

	/* back online, resuming from the device's own cursor */
	struct it_events tab2 = {0};
	bt = it_client(&srv, "bob", "bob-tablet", 1, &tab2);
	struct parley_sync_ok ok;
	IT_OK(parley_client_subscribe(bt, last_inbox + 1, &ok));
	IT_CHECK(ok.start_inbox_seq == last_inbox + 1);
	/* SEND_ACK means durable in the conversation; the inbox pointer is
	 * appended by the fan-out right after, so it may still be on its way */
	IT_CHECK(ok.last_inbox_seq >= last_inbox && ok.last_inbox_seq <= total,
		 "last_inbox_seq %" PRIu64, ok.last_inbox_seq);
	IT_CHECK(it_wait_events(bt, &tab2, (uint64_t)more, 20000) == (uint64_t)more);
	check_run(&tab2, (uint64_t)first + 1, total, "catch-up (own cursor)");
	/* live messages keep coming on the same subscription */
	send_text(alice, conv, (int)total + 1, NULL);
	total++;
	IT_CHECK(it_wait_events(bt, &tab2, (uint64_t)more + 1, 20000) ==
		 (uint64_t)more + 1);
	IT_CHECK(tab2.v[tab2.n - 1].conv_seq == total);
	/* let libparley's batched EVENT_ACKs reach the server, then leave */
	for (int i = 0; i < 5; i++)
		parley_client_poll(bt, 100);
	IT_OK(parley_client_ping(bt));
	parley_client_free(bt);

	/* more while offline, then resume from the SERVER-side cursor */
	int more2 = 10;
	for (int i = 1; i <= more2; i++)
		send_text(alice, conv, (int)total + i, NULL);
	total += (uint64_t)more2;
	struct it_events tab3 = {0};
	bt = it_client(&srv, "bob", "bob-tablet", 0, &tab3);
	IT_OK(parley_client_subscribe(bt, 0, &ok));
	/* The server cursor is at most what the device processed: nothing
	 * it missed may be skipped; re-sent unacked ones are allowed. */
	IT_CHECK(ok.start_inbox_seq >= 1 && ok.start_inbox_seq <= total - more2 + 1,
		 "start %" PRIu64, ok.start_inbox_seq);
	uint64_t want = total - ok.start_inbox_seq + 1;
	IT_CHECK(it_wait_events(bt, &tab3, want, 20000) == want);
	check_run(&tab3, ok.start_inbox_seq, total, "catch-up (server cursor)");
	parley_client_free(bt);

	/* A brand-new device with SYNC(0) starts live. */
	struct it_events fresh = {0};
	struct parley_client *bn = it_client(&srv, "bob", "bob-new", 0, &fresh);
	IT_OK(parley_client_subscribe(bn, 0, &ok));
	IT_CHECK(ok.start_inbox_seq == total + 1);
	send_text(alice, conv, (int)total + 1, NULL);
	total++;
	IT_CHECK(it_wait_events(bn, &fresh, 1, 20000) == 1);
	IT_CHECK(fresh.v[0].conv_seq == total && fresh.v[0].inbox_seq == total);

	/* ---- 2. duplicate client_msg_id after a dropped ACK ---- */
	uint8_t id[16];
	for (int i = 0; i < 16; i++)
		id[i] = (uint8_t)parley_rng_next(&it_rng);
	int fd = it_tcp_connect(srv.port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_raw_login(fd, "alice", "a-raw") == 0);
	struct parley_msg m = {.type = PARLEY_T_SEND};
	m.send.conv = parley_str_c(conv);
	memcpy(m.send.client_msg_id, id, 16);
	m.send.content_type = PARLEY_CT_TEXT;
	m.send.body = (struct parley_bytes){(const uint8_t *)"once", 4};
	IT_CHECK(it_send_msg(fd, 9, &m) == 0);
	close(fd); /* the ACK is never read */

	struct parley_send_result r1, r2;
	IT_OK(parley_client_send_id(alice, conv, id, PARLEY_CT_TEXT, "once", 4, &r1));
	IT_OK(parley_client_send_id(alice, conv, id, PARLEY_CT_TEXT, "once", 4, &r2));
	IT_CHECK(r2.duplicate && r2.seq == r1.seq && r2.server_ts_ms == r1.server_ts_ms);
	/* The first SEND may or may not have been applied before the socket
	 * closed; either way there is exactly one message with this id. */
	IT_CHECK(r1.seq == total + 1, "seq %" PRIu64 " want %" PRIu64, r1.seq,
		 total + 1);
	total++;
	const struct parley_history_page *pg;
	IT_OK(parley_client_history(alice, conv, 0, 100, &pg));
	int copies = 0;
	for (unsigned k = 0; k < pg->count; k++)
		if (!memcmp(pg->msgs[k].client_msg_id, id, 16))
			copies++;
	IT_CHECK(copies == 1, "%d copies in history", copies);
	IT_CHECK(pg->msgs[0].seq == total);
	/* and bob's new device sees it once */
	send_text(alice, conv, 999, NULL); /* a marker after it */
	total++;
	IT_CHECK(it_wait_events(bn, &fresh, 3, 20000) == 3);
	IT_CHECK(fresh.n == 3, "fresh got %" PRIu64, fresh.n);
	IT_CHECK(!memcmp(fresh.v[1].cmid, id, 16) && fresh.v[2].conv_seq == total);

	parley_client_free(bn);
	parley_client_free(alice);
	it_events_free(&tab);
	it_events_free(&tab2);
	it_events_free(&tab3);
	it_events_free(&fresh);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	printf("delivery: ok (%" PRIu64 " messages)\n", total);
	return 0;
}
