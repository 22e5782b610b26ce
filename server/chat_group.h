/*
 * chat_group.h — group membership state, private between chat.c and
 * chat_group.c (everything other modules use is in chat.h).
 *
 * chat_group.c keeps every group's membership in memory as a list of
 * intervals (user, role, from_seq, to_seq) over the conversation's seqs,
 * so "was X a member when seq N was appended?" has an exact answer that
 * the fan-out (live or recovered) and HISTORY both use. chat.c owns the
 * table (struct chat_groups inside struct chat) and calls the hooks below
 * from its send path, its fan-out thread and its recovery.
 *
 * Threads: every function takes the table's rwlock itself.
 */
#ifndef PARLEYD_CHAT_GROUP_H
#define PARLEYD_CHAT_GROUP_H

#include <stdbool.h>
#include <stdint.h>

#include "chat.h"

struct chat_groups;

struct chat_groups *chat_groups_new(void);
void chat_groups_free(struct chat_groups *gs);
void chat_groups_set_max(struct chat_groups *gs, uint32_t max_members);

/* Recovery: a group conversation stream was found (c/<conv>, last_seq). */
int chat_groups_note(struct chat_groups *gs, const char *conv, size_t len,
		     uint64_t last_seq);
/* Recovery: its fan-out resumes at `first` (membership events from there
 * on may lack a durable snapshot). */
void chat_groups_note_first(struct chat_groups *gs, const char *conv,
			    size_t len, uint64_t first);
/* Recovery: loads every noted group (last snapshot + the membership events
 * after it that the fan-out cursor does not cover). Blocking reads. */
int chat_groups_load(struct chat_groups *gs, struct pe_engine *e);

/* Send path: 0 (member now), -PARLEY_ENOTFOUND, -PARLEY_EPERM. */
int chat_groups_send_check(struct chat_groups *gs, const char *conv,
			   size_t len, const char *user, size_t ulen);

/* Durable callback of a group conversation entry (engine shard, in seq
 * order): applies a membership event to memory (type CHAT_ENT_MEMBER).
 * Returns 0, or the error the event's op failed with at its seq. */
int chat_groups_on_durable(struct chat_groups *gs, const char *conv,
			   size_t len, uint64_t seq, uint16_t type,
			   const uint8_t *p, uint32_t plen);

/* Fan-out thread: the appends that deliver entry (seq, type, payload) of a
 * group conversation. Calls issue(arg, item) for each; returns how many
 * were issued or a negative error. Payloads are deterministic (idempotent
 * re-fan-out). */
typedef int (*chat_issue_fn)(void *arg, const struct chat_fanout_item *it,
			     const uint8_t *payload, uint32_t len);
/* (payload NULL: it->payload / it->len; else a larger payload, copied) */
int chat_groups_fanout(struct chat_groups *gs, const char *conv, size_t len,
		       const struct pe_entry *ent, chat_issue_fn issue,
		       void *arg, unsigned *count);

/* Counters for chat_get_stats. Any thread. */
void chat_groups_stats(struct chat_groups *gs, uint64_t *groups,
		       uint64_t *changes, uint64_t *refused);

/* chat.c: the table of the running service. */
struct chat_groups *chat_groups_of(struct chat *c);
/* chat.c: appends one entry to c/<conv> of an existing group like a SEND
 * (fan-out job registered first; cb once durable, then the fan-out). The
 * record is copied. 0 or an error (cb will not run). */
int chat_conv_append(struct chat *c, const char *conv, uint16_t len,
		     uint16_t type, const uint8_t *rec, uint32_t rec_len,
		     const uint8_t producer[16], chat_send_cb cb, void *arg);

/* Keys and producers of the group records. */
int chat_key_gsnap(char *out, const char *conv, size_t len);
void chat_producer_gsnap(uint8_t out[16], const char *conv, size_t len,
			 uint64_t seq);

#endif /* PARLEYD_CHAT_GROUP_H */
