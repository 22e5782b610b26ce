/*
 * conn_req_group.c — the group requests (chat_group.h): GROUP_CREATE,
 * GROUP_ADD, GROUP_REMOVE, GROUP_LEAVE, GROUP_ROLE, GROUP_SET (one
 * membership event each, answered GROUP_OK after it is durable) and
 * GROUP_INFO (answered at once from the applied state). GROUP_CATCHUP,
 * a read of the group's messages, is conn_req.c's with HISTORY.
 *
 * Rule of the conn_req*.c files (conn_req.h): a file holds one feature's
 * request glue and nothing else: it maps a decoded request onto its
 * service call and the result onto its reply or ERROR, keeps no state of
 * its own, and touches the connection only to count the request in
 * flight (c->inflight) and through the calls conn_req.h declares.
 *
 * DURABLE BEFORE ACK: a GROUP_*_OK is encoded only in group_change_cb,
 * which the chat service runs after the membership event is durable and
 * applied (chat_group_change's contract).
 *
 * Ownership: struct group_reply is malloc'd by the handler and freed by
 * group_change_cb; GROUP_INFO's page and its string store live for the
 * handler's call only.
 * Threads: handlers on the connection's loop; group_change_cb on the
 * engine shard of the group's partition.
 */
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "chat_group.h"
#include "conn_req.h"

struct group_reply {
	struct conn_ref to;
	uint32_t req_id;
	uint16_t type;          /* the reply's type */
};

/* Engine thread: the membership event is durable and applied (or failed). */
static void group_change_cb(void *arg, const struct chat_group_result *r)
{
	struct group_reply *x = arg;
	struct lmsg *lm;
	if (r->err) {
		lm = conn_error_msg(x->req_id, wire_code(r->err),
			            0,
			            r->why ? r->why : parley_strerror(r->err));
	} else {
		struct parley_msg m = {.type = x->type};
		m.group_ok.conv = (struct parley_str){r->conv, r->conv_len};
		m.group_ok.seq = r->seq;
		m.group_ok.flags = r->duplicate ? PARLEY_GROUPF_DUPLICATE : 0;
		lm = conn_frame_msg(LM_FRAME, x->req_id, &m);
	}
	conn_post_reply(&x->to, lm, x->req_id);
	free(x);
}

void conn_req_group_change(struct conn *c, uint32_t rid,
			   const struct parley_msg *m)
{
	if (conn_limited(c, rid, RATELIMIT_SEND))
		return;
	struct chat_member users[PARLEY_PROTO_MAX_GROUP_USERS];
	struct chat_group_req q = {.actor = c->id->user,
				   .actor_len = (uint16_t)c->id->ulen};
	const struct parley_str *u;
	uint16_t n;
	if (m->type == PARLEY_T_GROUP_CREATE) {
		const struct parley_group_create *g = &m->group_create;
		q.op = CHAT_GOP_CREATE;
		memcpy(q.create_id, g->create_id, 16);
		q.name = g->name.p;
		q.name_len = g->name.len;
		q.settings = g->settings;
		u = g->users;
		n = g->count;
	} else if (m->type == PARLEY_T_GROUP_SET) {
		const struct parley_group_set *g = &m->group_set;
		q.op = CHAT_GOP_SET;
		q.conv = g->conv.p;
		q.conv_len = g->conv.len;
		q.set_fields = g->fields;
		q.name = g->name.p;
		q.name_len = g->name.len;
		q.settings = g->settings;
		u = NULL;
		n = 0;
	} else {
		const struct parley_group_change *g = &m->group_change;
		q.op = m->type == PARLEY_T_GROUP_ADD	  ? CHAT_GOP_ADD
		       : m->type == PARLEY_T_GROUP_REMOVE ? CHAT_GOP_REMOVE
		       : m->type == PARLEY_T_GROUP_LEAVE  ? CHAT_GOP_LEAVE
							  : CHAT_GOP_ROLE;
		q.conv = g->conv.p;
		q.conv_len = g->conv.len;
		q.role = g->role;
		u = g->users;
		n = g->count;
	}
	for (uint16_t i = 0; i < n; i++)
		users[i] = (struct chat_member){u[i].p, u[i].len};
	q.n = n;
	q.users = users;
	struct group_reply *x = malloc(sizeof *x);
	if (!x) {
		conn_refused(c, rid, -PARLEY_ENOMEM);
		return;
	}
	*x = (struct group_reply){.to = c->sk.ref, .req_id = rid,
				  .type = PARLEY_REPLY_OF(m->type)};
	const char *why = NULL;
	int rc = chat_group_change(S(c)->chat, &q, group_change_cb, x, &why);
	conn_req_started(c, rid, rc, x,
			 rc == -PARLEY_EAGAIN ? 20
			 : 0,
			 why ? why : parley_strerror(rc));
}

void conn_req_group_info(struct conn *c, uint32_t rid,
			 const struct parley_group_info *m)
{
	if (conn_limited(c, rid, RATELIMIT_HISTORY))
		return;
	size_t cap = (size_t)m->limit * PARLEY_PROTO_MAX_USER_ID + 256;
	struct parley_msg *pm = malloc(sizeof *pm);
	char *store = malloc(cap);
	int rc = pm && store ? chat_group_info(S(c)->chat, c->id->user,
					       c->id->ulen, m->conv.p,
					       m->conv.len, m->from_index,
					       m->limit, pm, store, cap)
			     : -PARLEY_ENOMEM;
	if (rc)
		conn_error(c, rid, wire_code(rc), false,
			   0,
			   rc == -PARLEY_EPERM ? "not a member of this group"
			   : rc == -PARLEY_ENOTFOUND ? "no such group"
						     : parley_strerror(rc));
	else
		conn_send(c, rid, pm);
	free(pm);
	free(store);
}
