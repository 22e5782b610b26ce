/*
 * repl_net.h — the in-memory network of the unit tests that wire several
 * engines together by hand (test_part_repl.c, test_membership.c): each
 * engine's pe_cluster.send encodes its messages with the Raft codec into
 * one queue; the test's pump takes the queue (net_take), decodes and
 * delivers (or drops) each packet with pe_raft_recv.
 *
 * Include after defining REPL_NET_NODES (node ids 1..REPL_NET_NODES;
 * packet `to` is the id - 1). The send callback's argument is a pointer
 * to the sending node's id (pe_cluster.send_arg = &node->id), and every
 * message must come from that id.
 * With net_hold set (before the engines open, pe_cluster.flush =
 * net_flush), net_send keeps a shard thread's packets in that thread's
 * own list and only net_flush, called by the engine on the same thread,
 * moves them to the queue: a send the engine forgets to flush is never
 * delivered.
 * Threads: net_send / net_flush run on the engines' shard threads,
 * net_take / net_clear on the test's: the queue is under net_mu.
 * Ownership: net_take hands the packets to the caller (free each).
 */
#ifndef REPL_NET_H
#define REPL_NET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "raft.h"
#include "raft_codec.h"

#ifndef REPL_NET_NODES
#error "define REPL_NET_NODES before including repl_net.h"
#endif

struct pkt {
	struct pkt *next;
	int to;
	size_t len;
	uint8_t buf[];
};

static pthread_mutex_t net_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pkt *q_head, *q_tail;
static bool net_hold;                    /* see above */
static _Thread_local struct pkt *h_head, *h_tail; /* held by this thread */
static _Atomic uint64_t net_flushes;     /* net_flush calls that moved packets */

static void net_send(void *arg, const struct raft_msg *msgs, uint32_t n)
{
	const uint64_t *from = arg;
	for (uint32_t i = 0; i < n; i++) {
		cr_assert_eq(msgs[i].from, *from);
		int sz = raft_codec_size(&msgs[i], 1);
		cr_assert_gt(sz, 0);
		struct pkt *p = malloc(sizeof *p + (size_t)sz);
		cr_assert_not_null(p);
		p->next = NULL;
		p->to = (int)msgs[i].to - 1;
		cr_assert(p->to >= 0 && p->to < REPL_NET_NODES,
			  "message to node %llu", (unsigned long long)msgs[i].to);
		p->len = (size_t)raft_codec_encode(p->buf, (size_t)sz, &msgs[i], 1);
		cr_assert_eq(p->len, (size_t)sz);
		if (net_hold) {
			if (h_tail)
				h_tail->next = p;
			else
				h_head = p;
			h_tail = p;
			continue;
		}
		pthread_mutex_lock(&net_mu);
		if (q_tail)
			q_tail->next = p;
		else
			q_head = p;
		q_tail = p;
		pthread_mutex_unlock(&net_mu);
	}
}

/* pe_cluster.flush with net_hold: this thread's held packets go out. */
static void net_flush(void *arg)
{
	(void)arg;
	if (!h_head)
		return;
	pthread_mutex_lock(&net_mu);
	if (q_tail)
		q_tail->next = h_head;
	else
		q_head = h_head;
	q_tail = h_tail;
	pthread_mutex_unlock(&net_mu);
	h_head = h_tail = NULL;
	atomic_fetch_add(&net_flushes, 1);
}

static struct pkt *net_take(void)
{
	pthread_mutex_lock(&net_mu);
	struct pkt *h = q_head;
	q_head = q_tail = NULL;
	pthread_mutex_unlock(&net_mu);
	return h;
}

static void net_clear(void)
{
	struct pkt *p = net_take();
	while (p) {
		struct pkt *n = p->next;
		free(p);
		p = n;
	}
}

#endif /* REPL_NET_H */
