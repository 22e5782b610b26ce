/*
 * test_wake_hold.c — server/wake_hold.c: a thread that holds its wake-ups
 * writes each eventfd once, at its flush; any other thread is told to
 * write at once; a full list is never waited on.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "wake_hold.h"

/* The eventfd's count (0 when nothing was written), read without blocking. */
static uint64_t efd_take(int fd)
{
	uint64_t v = 0;
	ssize_t n = read(fd, &v, sizeof v);
	if (n < 0) {
		cr_assert_eq(errno, EAGAIN);
		return 0;
	}
	cr_assert_eq(n, (ssize_t)sizeof v);
	return v;
}

static void *not_holding(void *arg)
{
	int fd = *(int *)arg;
	/* another thread's begin does not make this one hold */
	return (void *)(uintptr_t)wake_hold_add(fd);
}

Test(wake_hold, a_holding_thread_writes_each_eventfd_once_at_its_flush)
{
	int a = eventfd(0, EFD_NONBLOCK), b = eventfd(0, EFD_NONBLOCK);
	cr_assert(a >= 0 && b >= 0);
	cr_assert_not(wake_hold_add(a), "not holding yet: write at once");
	cr_assert_eq(wake_hold_flush(), 0);
	wake_hold_begin();
	cr_assert(wake_hold_add(a));
	cr_assert(wake_hold_add(b));
	cr_assert(wake_hold_add(a), "held once, still reported held");
	cr_assert_eq(efd_take(a), 0, "nothing written before the flush");
	cr_assert_eq(efd_take(b), 0);
	pthread_t t;
	void *ret;
	cr_assert_eq(pthread_create(&t, NULL, not_holding, &a), 0);
	cr_assert_eq(pthread_join(t, &ret), 0);
	cr_assert_eq((uintptr_t)ret, 0, "another thread does not hold");
	cr_assert_eq(wake_hold_flush(), 2);
	cr_assert_eq(efd_take(a), 1, "one write each");
	cr_assert_eq(efd_take(b), 1);
	cr_assert_eq(wake_hold_flush(), 0, "forgotten after the flush");
	wake_hold_cb_flush(NULL);
	cr_assert_eq(efd_take(a), 0);
	close(a);
	close(b);
}

Test(wake_hold, a_full_list_makes_the_caller_write_at_once)
{
	int fds[WAKE_HOLD_MAX + 1];
	wake_hold_begin();
	for (uint32_t i = 0; i <= WAKE_HOLD_MAX; i++) {
		fds[i] = eventfd(0, EFD_NONBLOCK);
		cr_assert(fds[i] >= 0);
		cr_assert_eq(wake_hold_add(fds[i]), i < WAKE_HOLD_MAX, "fd %u", i);
	}
	cr_assert_eq(wake_hold_flush(), WAKE_HOLD_MAX);
	for (uint32_t i = 0; i <= WAKE_HOLD_MAX; i++) {
		cr_assert_eq(efd_take(fds[i]), i < WAKE_HOLD_MAX ? 1 : 0);
		close(fds[i]);
	}
}
