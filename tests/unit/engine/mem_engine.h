/*
 * mem_engine.h — one single-node engine at "/data" on an in-memory
 * backend (pio_mem_new(1): deterministic, and pio_mem_crash can drop what
 * was not fdatasync'd), opened before each test and closed after it: the
 * fixture of the engine unit tests that need no other set-up
 * (test_engine.c, test_engine_limits.c).
 *
 * Define MEM_ENGINE_PARTITIONS and MEM_ENGINE_SHARDS before including;
 * use TestSuite(name, .init = mem_engine_setup, .fini = mem_engine_teardown).
 * Ownership: the fixture owns io and eng; a test that replaces eng (a
 * crash and reopen) leaves the new one in eng for the teardown.
 * Threads: the test's thread only.
 */
#ifndef MEM_ENGINE_H
#define MEM_ENGINE_H

#include <criterion/criterion.h>

#include "io.h"
#include "parley_engine.h"

#if !defined(MEM_ENGINE_PARTITIONS) || !defined(MEM_ENGINE_SHARDS)
#error "define MEM_ENGINE_PARTITIONS and MEM_ENGINE_SHARDS before mem_engine.h"
#endif

static struct pio *io;
static struct pe_engine *eng;

/* The fixture's options; a test may change a copy and open with it. */
static struct pe_options mem_engine_opts(void)
{
	struct pe_options o = {0};
	o.dir = "/data";
	o.partitions = MEM_ENGINE_PARTITIONS;
	o.shards = MEM_ENGINE_SHARDS;
	o.wal_segment_bytes = 16u << 20;
	o.io = io;
	return o;
}

static void mem_engine_setup(void)
{
	io = pio_mem_new(1);
	cr_assert_not_null(io);
	struct pe_options o = mem_engine_opts();
	cr_assert_eq(pe_open(&o, &eng), 0);
}

static void mem_engine_teardown(void)
{
	if (eng)
		pe_close(eng);
	eng = NULL;
	pio_free(io);
}

/* A clean close and open again (recovery from what was written). */
static void mem_engine_reopen(void)
{
	pe_close(eng);
	struct pe_options o = mem_engine_opts();
	cr_assert_eq(pe_open(&o, &eng), 0);
}

#endif /* MEM_ENGINE_H */
