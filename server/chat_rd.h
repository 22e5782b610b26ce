/*
 * chat_rd.h — the read fan-out state, private between chat.c (which owns
 * it inside struct chat) and chat_fanout_read.c (which implements it).
 * Everything other modules use is in chat.h ("read fan-out").
 * Threads: every function is safe from any thread.
 */
#ifndef PARLEYD_CHAT_RD_H
#define PARLEYD_CHAT_RD_H

struct chat;
struct chat_rd;

struct chat_rd *chat_rd_new(void);
void chat_rd_free(struct chat_rd *rd);
/* chat.c: the state of the running service. */
struct chat_rd *chat_rd_of(struct chat *c);

#endif /* PARLEYD_CHAT_RD_H */
