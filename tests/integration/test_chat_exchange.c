/*
 * test_chat_exchange.c — two users x two devices exchange messages through
 * a real parleyd, one device of each user over TCP and one over TLS.
 *
 * Checks (black-box history check of TESTING.md):
 *   - every SEND is acknowledged with a distinct conversation seq, and the
 *     acknowledged seqs are exactly 1..N (dense);
 *   - every device (senders included: multi-device sync) receives every
 *     message exactly once, in conversation-seq order, with inbox_seqs
 *     that have no gap, and with the body and client_msg_id that was sent;
 *   - HISTORY pages newest first with limit 7 and ends with the END flag;
 *   - CONV_LIST shows the conversation with the last seq;
 *   - CONV_OPEN returns the derived id d:alice:bob for both users;
 *   - a device that negotiated zstd sends compressed frames (a 4 KiB body)
 *     that the server accepts, stores and delivers intact.
 */
#include "itest.h"

#define PER_DEVICE 25

struct dev {
	const char *user, *device;
	int tls;
	struct parley_client *c;
	struct it_events ev;
};

int main(void)
{
	it_init("chat_exchange");
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);

	struct dev d[4] = {
		{"alice", "alice-phone", 0}, {"alice", "alice-laptop", 1},
		{"bob", "bob-phone", 0}, {"bob", "bob-laptop", 1},
	};
	for (int i = 0; i < 4; i++) {
		it_want_zstd = i == 1; /* alice-laptop speaks zstd frames */
		d[i].c = it_client(&srv, d[i].user, d[i].device, d[i].tls, &d[i].ev);
		struct parley_sync_ok ok;
		IT_OK(parley_client_subscribe(d[i].c, 0, &ok));
	}

	const struct parley_conv *conv;
	IT_OK(parley_client_conv_open(d[0].c, "bob", &conv));
	IT_CHECK(parley_str_eq(conv->conv, "d:alice:bob"));
	IT_CHECK(conv->member_count == 2);
	IT_OK(parley_client_conv_open(d[3].c, "alice", &conv));
	IT_CHECK(parley_str_eq(conv->conv, "d:alice:bob"));
	IT_CHECK(conv->last_seq == 0);
	/* opening with yourself is invalid */
	IT_CHECK(parley_client_conv_open(d[3].c, "bob", &conv) == -PARLEY_EINVAL);

	const int total = 4 * PER_DEVICE;
	uint8_t seen_seq[4 * PER_DEVICE + 1] = {0};
	struct { uint8_t id[16]; char body[64]; uint64_t seq; } sent[4 * PER_DEVICE];
	int ns = 0;
	for (int r = 0; r < PER_DEVICE; r++) {
		for (int i = 0; i < 4; i++) {
			int k = (int)parley_rng_below(&it_rng, 4); /* random sender order */
			(void)k;
			struct dev *x = &d[(i + r) % 4];
			struct parley_send_result res;
			snprintf(sent[ns].body, sizeof sent[ns].body, "%s/%s #%d",
				 x->user, x->device, r);
			IT_OK(parley_client_send(x->c, "d:alice:bob", PARLEY_CT_TEXT,
						 sent[ns].body, strlen(sent[ns].body),
						 &res));
			IT_CHECK(!res.duplicate);
			IT_CHECK(res.seq >= 1 && res.seq <= (uint64_t)total,
				 "seq=%" PRIu64, res.seq);
			IT_CHECK(!seen_seq[res.seq], "seq %" PRIu64 " acked twice",
				 res.seq);
			seen_seq[res.seq] = 1;
			memcpy(sent[ns].id, res.client_msg_id, 16);
			sent[ns].seq = res.seq;
			ns++;
		}
	}
	for (int s = 1; s <= total; s++)
		IT_CHECK(seen_seq[s], "seq %d never acked", s);
	IT_CHECK(parley_client_limits(d[1].c)->features & PARLEY_FEAT_ZSTD,
		 "server did not enable zstd");

	for (int i = 0; i < 4; i++) {
		uint64_t got = it_wait_events(d[i].c, &d[i].ev, (uint64_t)total, 20000);
		IT_CHECK(got == (uint64_t)total, "device %s got %" PRIu64 " of %d",
			 d[i].device, got, total);
		for (int j = 0; j < total; j++) {
			struct it_ev *e = &d[i].ev.v[j];
			IT_CHECK(e->conv_seq == (uint64_t)j + 1,
				 "device %s event %d has conv_seq %" PRIu64,
				 d[i].device, j, e->conv_seq);
			/* increasing, not dense: delivered / read receipts
			 * (RECEIPT events, not passed to on_event) sit between
			 * messages; libparley itself resubscribes on a gap */
			IT_CHECK(j == 0 || e->inbox_seq > d[i].ev.v[j - 1].inbox_seq,
				 "inbox order on %s", d[i].device);
			IT_CHECK(!strcmp(e->conv, "d:alice:bob"));
			int found = 0;
			for (int m = 0; m < ns; m++)
				if (sent[m].seq == e->conv_seq) {
					IT_CHECK(!memcmp(sent[m].id, e->cmid, 16));
					IT_CHECK(!strcmp(sent[m].body, e->body),
						 "body %s vs %s", sent[m].body, e->body);
					found = 1;
				}
			IT_CHECK(found);
		}
	}

	/* History, newest first, in pages of 7. */
	uint64_t before = 0, expect = (uint64_t)total;
	int pages = 0;
	for (;;) {
		const struct parley_history_page *pg;
		IT_OK(parley_client_history(d[2].c, "d:alice:bob", before, 7, &pg));
		pages++;
		for (unsigned k = 0; k < pg->count; k++) {
			IT_CHECK(pg->msgs[k].seq == expect, "history seq %" PRIu64
				 " want %" PRIu64, pg->msgs[k].seq, expect);
			expect--;
		}
		if (pg->flags & PARLEY_HISTF_END)
			break;
		IT_CHECK(pg->count > 0);
		before = pg->next_before_seq;
		IT_CHECK(pages < 100);
	}
	IT_CHECK(expect == 0, "history stopped at %" PRIu64, expect);
	IT_CHECK(pages == (total + 6) / 7 || pages == (total + 6) / 7 + 1);

	/* History of a conversation we are not in / that does not exist. */
	const struct parley_history_page *pg;
	IT_CHECK(parley_client_history(d[0].c, "d:bob:carol", 0, 10, &pg) ==
		 -PARLEY_EPERM);
	IT_CHECK(parley_client_history(d[0].c, "nonsense", 0, 10, &pg) ==
		 -PARLEY_ENOTFOUND);

	/* a large compressible body from the zstd device */
	char big[4096];
	for (size_t k = 0; k < sizeof big - 1; k++)
		big[k] = "chat is mostly small talk "[k % 26];
	big[sizeof big - 1] = '\0';
	struct parley_send_result zr;
	IT_OK(parley_client_send(d[1].c, "d:alice:bob", PARLEY_CT_TEXT, big,
				 strlen(big), &zr));
	IT_CHECK(zr.seq == (uint64_t)total + 1);
	IT_OK(parley_client_history(d[2].c, "d:alice:bob", 0, 1, &pg));
	IT_CHECK(pg->count == 1 && pg->msgs[0].body.len == strlen(big) &&
		 !memcmp(pg->msgs[0].body.p, big, strlen(big)));
	IT_CHECK(it_wait_events(d[2].c, &d[2].ev, (uint64_t)total + 1, 20000) ==
		 (uint64_t)total + 1);

	const struct parley_conv_list_ok *list;
	IT_OK(parley_client_conv_list(d[1].c, 10, &list));
	IT_CHECK(list->count == 1, "count=%u", list->count);
	IT_CHECK(parley_str_eq(list->entries[0].conv, "d:alice:bob"));
	IT_CHECK(list->entries[0].last_seq == (uint64_t)total + 1);
	IT_CHECK(parley_str_eq(list->entries[0].peer, "bob"));

	for (int i = 0; i < 4; i++) {
		parley_client_free(d[i].c);
		it_events_free(&d[i].ev);
	}
	int st = it_server_stop(&srv, SIGTERM, 20000);
	IT_CHECK(st == 0, "parleyd exit status %d after SIGTERM", st);
	printf("chat_exchange: ok (%d messages, 4 devices)\n", total);
	return 0;
}
