/*
 * cli_outbox.c — the terminal client's outbox (see cli.h for the contract).
 *
 * Invariants:
 *   1. An entry keeps its client_msg_id from cli_outbox_add until its slot
 *      is reused, so every retry of one typed line carries the same id.
 *   2. Entries leave PENDING in typed order (lowest `no` first) and at most
 *      one is SENDING: the server sees one typed line at a time, in order.
 *   3. A slot is reused only when FREE, SENT or FAILED (oldest first), so
 *      an unsent line is never dropped: the outbox says FULL instead.
 * Ownership: the outbox owns each entry's body. No locking (the caller's).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_outbox_init(struct cli_outbox *ob)
{
	memset(ob, 0, sizeof *ob);
}

void cli_outbox_free(struct cli_outbox *ob)
{
	for (int i = 0; i < CLI_OUTBOX_MAX; i++)
		free(ob->e[i].body);
	memset(ob, 0, sizeof *ob);
}

static struct cli_ob_entry *by_no(struct cli_outbox *ob, uint32_t no)
{
	for (int i = 0; i < CLI_OUTBOX_MAX; i++)
		if (ob->e[i].state != CLI_OB_FREE && ob->e[i].no == no)
			return &ob->e[i];
	return NULL;
}

int cli_outbox_add(struct cli_outbox *ob, const char *peer, const void *body,
		   size_t len, const uint8_t id[PARLEY_PROTO_MSG_ID_LEN])
{
	struct cli_ob_entry *slot = NULL;
	for (int i = 0; i < CLI_OUTBOX_MAX && !slot; i++)
		if (ob->e[i].state == CLI_OB_FREE)
			slot = &ob->e[i];
	if (!slot) { /* invariant 3: reuse the oldest finished entry */
		for (int i = 0; i < CLI_OUTBOX_MAX; i++) {
			struct cli_ob_entry *e = &ob->e[i];
			if ((e->state == CLI_OB_SENT || e->state == CLI_OB_FAILED) &&
			    (!slot || e->no < slot->no))
				slot = e;
		}
	}
	if (!slot)
		return -PARLEY_EFULL;
	size_t pl = strlen(peer);
	if (pl > PARLEY_PROTO_MAX_USER_ID)
		return -PARLEY_EINVAL;
	char *copy = malloc(len ? len : 1);
	if (!copy)
		return -PARLEY_ENOMEM;
	if (len)
		memcpy(copy, body, len);
	free(slot->body);
	memset(slot, 0, sizeof *slot);
	slot->state = CLI_OB_PENDING;
	slot->no = ++ob->next_no;
	memcpy(slot->id, id, PARLEY_PROTO_MSG_ID_LEN);
	memcpy(slot->peer, peer, pl + 1);
	slot->body = copy;
	slot->len = len;
	return (int)slot->no;
}

struct cli_ob_entry *cli_outbox_next(struct cli_outbox *ob)
{
	struct cli_ob_entry *best = NULL;
	for (int i = 0; i < CLI_OUTBOX_MAX; i++) {
		struct cli_ob_entry *e = &ob->e[i];
		if (e->state == CLI_OB_SENDING)
			return NULL; /* invariant 2 */
		if (e->state == CLI_OB_PENDING && (!best || e->no < best->no))
			best = e;
	}
	if (best)
		best->state = CLI_OB_SENDING;
	return best;
}

void cli_outbox_sent(struct cli_outbox *ob, uint32_t no, uint64_t seq, uint64_t ts_ms)
{
	struct cli_ob_entry *e = by_no(ob, no);
	if (!e)
		return;
	e->state = CLI_OB_SENT;
	e->seq = seq;
	e->ts_ms = ts_ms;
}

void cli_outbox_retry(struct cli_outbox *ob, uint32_t no)
{
	struct cli_ob_entry *e = by_no(ob, no);
	if (e && e->state == CLI_OB_SENDING)
		e->state = CLI_OB_PENDING;
}

void cli_outbox_failed(struct cli_outbox *ob, uint32_t no, int err)
{
	struct cli_ob_entry *e = by_no(ob, no);
	if (!e)
		return;
	e->state = CLI_OB_FAILED;
	e->err = err;
}

const struct cli_ob_entry *cli_outbox_find_id(const struct cli_outbox *ob,
					      const uint8_t id[PARLEY_PROTO_MSG_ID_LEN])
{
	for (int i = 0; i < CLI_OUTBOX_MAX; i++)
		if (ob->e[i].state != CLI_OB_FREE &&
		    !memcmp(ob->e[i].id, id, PARLEY_PROTO_MSG_ID_LEN))
			return &ob->e[i];
	return NULL;
}

unsigned cli_outbox_unsent(const struct cli_outbox *ob)
{
	unsigned n = 0;
	for (int i = 0; i < CLI_OUTBOX_MAX; i++)
		n += ob->e[i].state == CLI_OB_PENDING || ob->e[i].state == CLI_OB_SENDING;
	return n;
}
