/*
 * route.c — the partition -> leader lookup every route uses, and the
 * thread-local note of what a NOTLEADER refused (route.h).
 *
 * Owns nothing shared: the lookup reads the engine's published state,
 * the note is one small value per thread. Any thread.
 */
#include "route.h"

#include "parley_engine.h"

uint64_t route_partition_leader(struct pe_engine *e, uint32_t p)
{
	if (!e)
		return 0;
	if (p == ROUTE_PARTITION_ANY)
		p = 0;
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
	if (!leader || leader == self)
		leader = route_partition_leader(e, p);
	return leader == self ? 0 : leader;
}
