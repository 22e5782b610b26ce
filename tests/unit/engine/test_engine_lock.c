/*
 * test_engine_lock.c — one writer per data directory.
 *
 * A second engine (in this process or another) opening a directory that a
 * writer holds gets -PARLEY_ELOCKED and touches nothing; read-only opens
 * share with each other but not with a writer; the lock dies with its
 * process, kill -9 included (real files, a forked child).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h"

static struct pe_options opts(const char *dir, struct pio *io, bool ro)
{
	struct pe_options o = {.dir = dir, .partitions = 4, .shards = 1,
			       .io = io, .read_only = ro};
	return o;
}

static void append_one(struct pe_engine *e, const char *key, const char *body)
{
	struct pe_input in = {.len = (uint32_t)strlen(body), .payload = body};
	struct pe_append_req req = {.key = key, .klen = strlen(key),
				    .expected_last_seq = PE_NO_EXPECT,
				    .entries = &in, .count = 1};
	struct pe_append_result r;
	cr_assert_eq(pe_append_sync(e, &req, &r), 0);
}

Test(engine_lock, second_writer_and_reader_refused_in_memory)
{
	struct pio *io = pio_mem_new(1);
	struct pe_engine *a, *b;
	struct pe_options o = opts("/d", io, false);
	cr_assert_eq(pe_open(&o, &a), 0);
	append_one(a, "s", "hello");
	cr_assert_eq(pe_open(&o, &b), -PARLEY_ELOCKED);
	struct pe_options ro = opts("/d", io, true);
	cr_assert_eq(pe_open(&ro, &b), -PARLEY_ELOCKED);
	/* another directory is independent */
	struct pe_options other = opts("/e", io, false);
	cr_assert_eq(pe_open(&other, &b), 0);
	pe_close(b);
	pe_close(a);
	/* released by close: readers share, then a writer waits for them */
	struct pe_engine *r1, *r2;
	cr_assert_eq(pe_open(&ro, &r1), 0);
	cr_assert_eq(pe_open(&ro, &r2), 0);
	cr_assert_eq(pe_open(&o, &b), -PARLEY_ELOCKED);
	pe_close(r1);
	pe_close(r2);
	cr_assert_eq(pe_open(&o, &b), 0);
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(b, "s", 1, &m), 0);
	cr_assert_eq(m.last_seq, 1);
	pe_close(b);
	pio_free(io);
}

Test(engine_lock, abort_releases_like_a_dead_process)
{
	struct pio *io = pio_mem_new(2);
	struct pe_engine *a, *b;
	struct pe_options o = opts("/d", io, false);
	cr_assert_eq(pe_open(&o, &a), 0);
	pe_abort(a);
	pio_mem_crash(io, false);
	cr_assert_eq(pe_open(&o, &b), 0);
	pe_close(b);
	pio_free(io);
}

Test(engine_lock, other_process_holds_until_killed)
{
	char dir[] = "/tmp/parley-lock-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	int ready[2];
	cr_assert_eq(pipe(ready), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(ready[0]);
		struct pe_engine *e;
		struct pe_options o = opts(dir, NULL, false);
		char c = pe_open(&o, &e) == 0 ? 'y' : 'n';
		if (c == 'y')
			append_one(e, "k", "from the child");
		if (write(ready[1], &c, 1) != 1)
			_exit(3);
		for (;;)
			pause(); /* hold the lock until killed */
	}
	close(ready[1]);
	char c = 0;
	cr_assert_eq(read(ready[0], &c, 1), 1);
	cr_assert_eq(c, 'y', "child could not open the engine");

	struct pe_engine *e;
	struct pe_options o = opts(dir, NULL, false);
	cr_assert_eq(pe_open(&o, &e), -PARLEY_ELOCKED);
	struct pe_options ro = opts(dir, NULL, true);
	cr_assert_eq(pe_open(&ro, &e), -PARLEY_ELOCKED);

	kill(pid, SIGKILL);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert_eq(pe_open(&o, &e), 0, "lock must die with its process");
	struct pe_meta m;
	cr_assert_eq(pe_meta_sync(e, "k", 1, &m), 0);
	cr_assert_eq(m.last_seq, 1, "the child's acked append survives");
	/* a second open in the same process is refused too */
	struct pe_engine *e2;
	cr_assert_eq(pe_open(&o, &e2), -PARLEY_ELOCKED);
	pe_close(e);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
	close(ready[0]);
}
