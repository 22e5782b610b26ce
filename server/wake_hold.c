/*
 * wake_hold.c — held eventfd wake-ups, per thread (see wake_hold.h).
 *
 * The state is thread-local: a thread only ever holds and flushes its
 * own list, so nothing here takes a lock.
 */
#include "wake_hold.h"

#include <unistd.h>

static _Thread_local struct {
	bool on;
	uint32_t n;
	int fd[WAKE_HOLD_MAX];
} tl_hold;

void wake_hold_begin(void)
{
	tl_hold.on = true;
}

bool wake_hold_add(int fd)
{
	if (!tl_hold.on)
		return false;
	for (uint32_t i = 0; i < tl_hold.n; i++)
		if (tl_hold.fd[i] == fd)
			return true;
	if (tl_hold.n == WAKE_HOLD_MAX)
		return false;
	tl_hold.fd[tl_hold.n++] = fd;
	return true;
}

uint32_t wake_hold_flush(void)
{
	uint32_t n = tl_hold.n;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t one = 1;
		ssize_t w = write(tl_hold.fd[i], &one, sizeof one);
		(void)w; /* an eventfd write only fails on overflow: awake */
	}
	tl_hold.n = 0;
	return n;
}

void wake_hold_cb_flush(void *arg)
{
	(void)arg;
	wake_hold_begin();
	(void)wake_hold_flush();
}
