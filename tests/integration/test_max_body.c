/*
 * test_max_body.c — the largest SEND and EDIT a parleyd accepts go end to
 * end: with max_body at its maximum (PE_MAX_PAYLOAD - 512 = 1,047,763
 * bytes: the engine's one size limit, parley_engine.h) and the longest
 * user ids (120 bytes, so the longest 1:1 conversation key), a SEND and an
 * EDIT whose bodies are exactly max_body are acknowledged, the peer's
 * device gets both EVENTs with every byte, and HISTORY returns the edited
 * body; one byte more is refused at once. Each becomes a single engine
 * entry, and one entry of up to PE_MAX_PAYLOAD fits a log command under
 * any key, so the server cannot produce a command over the engine's limit.
 */
#include "itest.h"

#define MAX_BODY 1047763u /* PE_MAX_PAYLOAD - 512 */
#define MAX_BODY_S "1047763"

struct big_evs {
	uint32_t n;
	uint32_t kind[8];
	uint32_t len[8];
	uint8_t first[8], last[8];
};

static void on_ev(void *user, const struct parley_event *e)
{
	struct big_evs *x = user;
	if (x->n == 8)
		return;
	x->kind[x->n] = e->kind;
	x->len[x->n] = (uint32_t)e->body.len;
	x->first[x->n] = e->body.len ? e->body.p[0] : 0;
	x->last[x->n] = e->body.len ? e->body.p[e->body.len - 1] : 0;
	x->n++;
}

static void fill(uint8_t *b, uint32_t len, uint8_t salt)
{
	for (uint32_t i = 0; i < len; i++)
		b[i] = (uint8_t)(i * 13u + salt + (i >> 11));
}

int main(void)
{
	it_init("max_body");
	struct it_server srv;
	it_server_init(&srv, "s1");
	srv.extra[0] = "--max-body";
	srv.extra[1] = MAX_BODY_S;
	srv.extra[2] = "--max-frame";
	srv.extra[3] = "4194304";
	it_server_start(&srv);

	char ua[121], ub[121];
	memset(ua, 'a', 120);
	ua[120] = 0;
	memset(ub, 'b', 120);
	ub[120] = 0;
	struct big_evs bev = {0};
	struct parley_client_opts cb = {.on_event = on_ev, .user = &bev};
	struct parley_client *a = it_client_cb(&srv, ua, "a-phone", NULL);
	struct parley_client *b = it_client_cb(&srv, ub, "b-phone", &cb);
	IT_CHECK(parley_client_limits(a)->max_body == MAX_BODY, "max_body %u",
		 parley_client_limits(a)->max_body);
	struct parley_sync_ok ok;
	IT_OK(parley_client_subscribe(b, 0, &ok));
	const struct parley_conv *cv;
	IT_OK(parley_client_conv_open(a, ub, &cv));
	char conv[256];
	snprintf(conv, sizeof conv, "%.*s", (int)cv->conv.len, cv->conv.p);
	IT_CHECK(strlen(conv) >= 240, "conversation id %zu bytes", strlen(conv));

	uint8_t *body = malloc(MAX_BODY + 1);
	uint8_t *body2 = malloc(MAX_BODY);
	IT_CHECK(body && body2);
	fill(body, MAX_BODY + 1, 1);
	fill(body2, MAX_BODY, 7);
	struct parley_send_result r;
	IT_OK(parley_client_send(a, conv, PARLEY_CT_BINARY, body, MAX_BODY, &r));
	IT_CHECK(r.seq == 1, "seq %" PRIu64, r.seq);
	uint64_t msg_seq = r.seq;
	int rc = parley_client_send(a, conv, PARLEY_CT_BINARY, body, MAX_BODY + 1,
				    NULL);
	IT_CHECK(rc == -PARLEY_ETOOBIG, "max_body + 1: %s", parley_strerror(rc));
	IT_OK(parley_client_edit(a, conv, msg_seq, PARLEY_CT_BINARY, body2,
				 MAX_BODY, &r));
	IT_CHECK(r.seq == 2, "edit seq %" PRIu64, r.seq);

	/* the peer's device: the message and its edit, every byte's length */
	for (int ms = 0; ms < 30000 && bev.n < 2; ms += 50)
		parley_client_poll(b, 50);
	IT_CHECK(bev.n == 2, "b got %u events", bev.n);
	IT_CHECK(bev.kind[0] == PARLEY_EV_MESSAGE && bev.len[0] == MAX_BODY &&
			 bev.first[0] == body[0] &&
			 bev.last[0] == body[MAX_BODY - 1],
		 "message event kind %u len %u", bev.kind[0], bev.len[0]);
	IT_CHECK(bev.kind[1] == PARLEY_EV_EDIT && bev.len[1] == MAX_BODY &&
			 bev.first[1] == body2[0] &&
			 bev.last[1] == body2[MAX_BODY - 1],
		 "edit event kind %u len %u", bev.kind[1], bev.len[1]);

	/* HISTORY: the message with its edited body, byte for byte */
	const struct parley_history_page *p;
	IT_OK(parley_client_history(b, conv, 0, 10, &p));
	IT_CHECK(p->count == 1, "history count %u", p->count);
	IT_CHECK(p->msgs[0].seq == msg_seq && p->msgs[0].body.len == MAX_BODY &&
			 !memcmp(p->msgs[0].body.p, body2, MAX_BODY),
		 "history seq %" PRIu64 " len %zu", p->msgs[0].seq,
		 (size_t)p->msgs[0].body.len);

	/* nothing failed behind the acknowledgements */
	IT_CHECK(!it_log_tail_has(srv.log, 0, "fan-out append failed") &&
			 !it_log_tail_has(srv.log, 0, "TOOBIG"),
		 "the server log shows a failed append (%s)", srv.log);
	free(body);
	free(body2);
	parley_client_free(a);
	parley_client_free(b);
	it_server_stop(&srv, SIGTERM, 10000);
	it_cleanup();
	printf("max_body: OK\n");
	return 0;
}
