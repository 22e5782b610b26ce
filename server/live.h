/*
 * live.h — which connections are subscribed (SYNC) now, per user, so the
 * read fan-out of large groups (chat.h, "read fan-out") can post a ready
 * EVENT to them (private to server/).
 *
 * A connection is attached when its SYNC subscription starts and detached
 * when it ends (close, drain, engine closing it). The read fan-out asks
 * live_post(user, frame): a copy of the frame goes to each attached
 * connection as an lmsg of kind LM_LIVE, and the count tells the fan-out
 * whether the user needs an ACTIVITY pointer instead (0). A connection
 * writes an LM_LIVE frame while it is subscribed; one whose outbound
 * queue is over its bound is cut off (GOAWAY SLOW_CONSUMER), never
 * silently skipped: its device reads what it missed back (GROUP_CATCHUP).
 *
 * Early delivery (conn.c "Early delivery", docs/SERVER.md): a connection
 * attached with `early` (it negotiated PARLEY_FEAT_EARLY) also gets, by
 * live_post_early, the early EVENT of every 1:1 and small-group message
 * of its user as soon as the message is durable in its conversation
 * (chat.h, chat_set_early), as an lmsg of kind LM_EARLY. Early EVENTs are
 * optional: a post that cannot be made (no memory) is skipped, the inbox
 * EVENT delivers.
 *
 * Bounds: LIVE_MAX_PER_USER connections of one user are registered; a
 * user with more is answered 0 by live_post (so it gets ACTIVITY pointers
 * too: safe). Entries are freed when the last connection detaches.
 * Threads: attach / detach from loop threads, live_post from the fan-out
 * thread; LIVE_SHARDS mutexes. Lock order: a shard lock, then a loop's
 * queue lock (lmsg_post).
 */
#ifndef PARLEYD_LIVE_H
#define PARLEYD_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lmsg.h"

#define LIVE_SHARDS 64u
#define LIVE_MAX_PER_USER 64u

struct live;

struct live *live_new(void);
void live_free(struct live *l);
/* 0, or -PARLEY_ENOMEM (the user is then marked over its bound). */
int live_attach(struct live *l, const char *user, size_t ulen,
		const struct conn_ref *ref, bool early);
void live_detach(struct live *l, const char *user, size_t ulen,
		 const struct conn_ref *ref);
/* chat_live_fn: posts frame to user's connections; returns how many (0
 * when none, or when some could not be registered). */
unsigned live_post(void *l, const char *user, size_t ulen,
		   const uint8_t *frame, uint32_t len);
/* chat_early_fn: posts the early EVENT frame of message conv_seq of conv
 * to user's connections attached with `early`; returns how many. Any
 * thread (engine shards). */
unsigned live_post_early(void *l, const char *user, size_t ulen,
			 const uint8_t *frame, uint32_t len, const char *conv,
			 size_t clen, uint64_t conv_seq, uint64_t t_durable_ns);
/* connections attached now */
uint64_t live_count(struct live *l);

#endif /* PARLEYD_LIVE_H */
