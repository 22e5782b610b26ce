/*
 * route.c — the partition -> leader lookup every route uses, the
 * thread-local note of what a NOTLEADER refused, the read of a
 * request's stream that refuses a partition not held, and the secondary
 * read that asks that partition's leader instead (route.h).
 *
 * Owns nothing shared: the lookup reads the engine's published state,
 * the note is one small value per thread. Any thread.
 */
#include "route.h"

#include <stdatomic.h>

#include "parley_engine.h"

static _Atomic(route_resolver_fn) resolver;
static void *_Atomic resolver_arg;

void route_set_resolver(route_resolver_fn fn, void *arg)
{
	atomic_store(&resolver, NULL);
	atomic_store(&resolver_arg, arg);
	atomic_store(&resolver, fn);
}

/* The resolver's answer for p: UINT64_MAX when none or it holds p. */
static uint64_t resolved(uint32_t p)
{
	route_resolver_fn fn = atomic_load(&resolver);
	return fn ? fn(atomic_load(&resolver_arg), p) : UINT64_MAX;
}

bool route_holds(uint32_t p)
{
	return resolved(p) == UINT64_MAX;
}

uint64_t route_partition_leader(struct pe_engine *e, uint32_t p)
{
	if (!e)
		return 0;
	if (p == ROUTE_PARTITION_ANY)
		p = 0;
	uint64_t r = resolved(p);
	if (r != UINT64_MAX)
		return r;
	struct pe_raft_status st;
	if (pe_raft_status(e, p, &st) || st.role == PE_LEADER)
		return 0;
	return st.leader;
}

static _Thread_local struct {
	bool set;
	uint32_t p;
	uint64_t leader;
} note;

int route_leader_check(struct pe_engine *e, uint32_t p)
{
	int rc = pe_partition_leader_check(e, p);
	if (rc == -PARLEY_ENOTLEADER)
		route_note(p, 0);
	return rc;
}

int route_hold_check(struct pe_engine *e, const void *key, size_t klen)
{
	uint32_t p = pe_partition_of(e, key, klen);
	if (route_holds(p))
		return 0;
	route_note(p, 0);
	return -PARLEY_ENOTLEADER;
}

int route_read(struct pe_engine *e, const struct pe_read_req *q,
	       pe_read_cb cb, void *arg)
{
	int rc = route_hold_check(e, q->key, q->klen);
	return rc ? rc : pe_read(e, q, cb, arg);
}

static _Atomic(route_remote_fn) remote;
static void *_Atomic remote_arg;

void route_set_remote(route_remote_fn fn, void *arg)
{
	atomic_store(&remote, NULL);
	atomic_store(&remote_arg, arg);
	atomic_store(&remote, fn);
}

int route_read_any(struct pe_engine *e, const struct pe_read_req *q,
		   pe_read_cb cb, void *arg)
{
	uint32_t p = pe_partition_of(e, q->key, q->klen);
	if (route_holds(p))
		return pe_read(e, q, cb, arg);
	route_remote_fn fn = atomic_load(&remote);
	int rc = fn ? fn(atomic_load(&remote_arg), q, cb, arg)
		    : -PARLEY_ENOTLEADER;
	if (rc == -PARLEY_ENOTLEADER || rc == -PARLEY_EVERSION) {
		route_note(p, 0); /* the request goes to p's leader */
		return -PARLEY_ENOTLEADER;
	}
	return rc;
}

void route_note(uint32_t p, uint64_t leader)
{
	note.set = true;
	note.p = p;
	note.leader = leader;
}

bool route_take(uint32_t *p, uint64_t *leader)
{
	if (!note.set)
		return false;
	*p = note.p;
	*leader = note.leader;
	note.set = false;
	return true;
}

void route_clear(void)
{
	note.set = false;
}

uint64_t route_refusal_leader(struct pe_engine *e, uint32_t p,
			      uint64_t leader, uint64_t self)
{
	uint64_t r = p == ROUTE_PARTITION_ANY ? UINT64_MAX : resolved(p);
	if (r != UINT64_MAX) /* a partition this node does not hold */
		leader = r;
	else if (!leader || leader == self)
		leader = route_partition_leader(e, p);
	return leader == self ? 0 : leader;
}
