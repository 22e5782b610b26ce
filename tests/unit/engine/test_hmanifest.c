/*
 * test_hmanifest.c — engine/hmanifest.c: round trip, generations, marks
 * that only move forward, segment replacement, corruption and failed
 * stores leaving the previous manifest, and cleanup of unreferenced files.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist_corpus.h"
#include "hmanifest.h"
#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

static struct pio *mkio(void)
{
	struct pio *io = pio_mem_new(3);
	cr_assert_eq(io->ops->mkdir(io, "pm"), 0);
	return io;
}

static void touch(struct pio *io, const char *path)
{
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, PIO_CREATE, &f), 0);
	cr_assert_eq(io->ops->pwrite(io, f, "x", 1, 0), 0);
	cr_assert_eq(io->ops->fdatasync(io, f), 0);
	io->ops->close(io, f);
}

Test(hmanifest, round_trip_and_marks)
{
	uint64_t seed = hist_seed("hmanifest.round_trip");
	struct parley_rng rng = { seed };
	struct pio *io = mkio();
	struct hman m, l;
	cr_assert_eq(hman_load(io, "pm", &l), -PARLEY_ENOTFOUND);
	hman_init(&m, 7);
	cr_assert_eq(hman_next_seg_id(&m), 1u);
	cr_assert_eq(hman_next_seg_id(&m), 2u);
	for (uint64_t i = 1; i <= 5; i++) {
		struct hman_seg s = { i * 10, i * 1000, i % 2 ? 0xabc : 0, i * 7 };
		cr_assert_eq(hman_add_seg(&m, &s), 0);
	}
	struct hman_seg dup = { 10, 1, 0, 1 };
	cr_assert_eq(hman_add_seg(&m, &dup), -PARLEY_EEXIST);
	cr_assert_eq(m.next_seg_id, 51u, "ids stay ahead of every live segment");
	/* random marks, applied to a model too */
	enum { NK = 500 };
	static uint64_t del[NK], ret[NK];
	memset(del, 0, sizeof del);
	memset(ret, 0, sizeof ret);
	char k[32];
	for (int i = 0; i < 3000; i++) {
		unsigned s = (unsigned)parley_rng_below(&rng, NK);
		int kl = snprintf(k, sizeof k, "c/%u", s * 7919u);
		uint64_t v = parley_rng_below(&rng, 1000);
		if (parley_rng_below(&rng, 2)) {
			cr_assert_eq(hman_set_deleted(&m, k, (size_t)kl, v), 0);
			del[s] = PARLEY_MAX(del[s], v);
		} else {
			cr_assert_eq(hman_set_retained(&m, k, (size_t)kl, v), 0);
			ret[s] = PARLEY_MAX(ret[s], v);
		}
	}
	cr_assert_eq(hman_set_deleted(&m, "", 0, 1), -PARLEY_EINVAL);
	m.flushed_index = 123456;
	m.dict_id = 0xabc;
	m.dict_ratio_ppm = 312000;
	cr_assert_eq(hman_store(io, "pm", &m), 0);
	cr_assert_eq(m.generation, 1u);
	cr_assert_eq(hman_store(io, "pm", &m), 0);
	cr_assert_eq(m.generation, 2u);
	cr_assert_eq(hman_load(io, "pm", &l), 0);
	cr_assert_eq(l.partition, 7u);
	cr_assert_eq(l.generation, 2u);
	cr_assert_eq(l.flushed_index, 123456u);
	cr_assert_eq(l.next_seg_id, 51u);
	cr_assert_eq(l.dict_id, 0xabcu);
	cr_assert_eq(l.dict_ratio_ppm, 312000u);
	cr_assert_eq(l.nsegs, 5u);
	cr_assert_eq(memcmp(l.segs, m.segs, 5 * sizeof *l.segs), 0);
	cr_assert_eq(l.nstreams, m.nstreams);
	for (unsigned s = 0; s < NK; s++) {
		int kl = snprintf(k, sizeof k, "c/%u", s * 7919u);
		const struct hman_stream *st = hman_stream(&l, k, (size_t)kl);
		if (!del[s] && !ret[s] && !st)
			continue;
		cr_assert_not_null(st, "key %s", k);
		cr_assert_eq(st->deleted_through, del[s]);
		cr_assert_eq(st->first_retained, ret[s]);
	}
	/* compaction swap */
	uint64_t in[2] = { 20, 40 };
	struct hman_seg out = { 60, 5, 0xabc, 20 };
	uint64_t bad[2] = { 20, 99 };
	cr_assert_eq(hman_replace_segs(&l, bad, 2, &out), -PARLEY_ENOTFOUND);
	cr_assert_eq(l.nsegs, 5u, "nothing changed");
	cr_assert_eq(hman_replace_segs(&l, in, 2, &out), 0);
	cr_assert_eq(l.nsegs, 4u);
	cr_assert(!hman_has_seg(&l, 20) && !hman_has_seg(&l, 40) && hman_has_seg(&l, 60));
	cr_assert_eq(l.next_seg_id, 61u);
	uint64_t in2[1] = { 60 };
	cr_assert_eq(hman_replace_segs(&l, in2, 1, NULL), 0, "merge that kept nothing");
	cr_assert_eq(l.nsegs, 3u);
	hman_free(&l);
	hman_free(&m);
	pio_free(io);
}

Test(hmanifest, corruption_and_failed_stores_keep_the_previous_one)
{
	struct pio *io = mkio();
	struct hman m, l;
	hman_init(&m, 1);
	struct hman_seg s = { 5, 100, 0, 3 };
	cr_assert_eq(hman_add_seg(&m, &s), 0);
	cr_assert_eq(hman_set_deleted(&m, "c/x", 3, 9), 0);
	cr_assert_eq(hman_store(io, "pm", &m), 0);
	/* a failing store (fsync EIO, then write EIO) leaves generation 1 */
	struct hman_seg s2 = { 6, 100, 0, 3 };
	cr_assert_eq(hman_add_seg(&m, &s2), 0);
	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	cr_assert_eq(hman_store(io, "pm", &m), -EIO);
	cr_assert_eq(m.generation, 1u);
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 1);
	cr_assert_eq(hman_store(io, "pm", &m), -EIO);
	pio_mem_crash(io, true);
	cr_assert_eq(hman_load(io, "pm", &l), 0);
	cr_assert_eq(l.generation, 1u);
	cr_assert_eq(l.nsegs, 1u);
	hman_free(&l);
	cr_assert_eq(pio_mem_file_size(io, "pm/HISTORY.tmp"), -ENOENT);
	/* every bit of the file is covered by the checksum */
	int64_t size = pio_mem_file_size(io, "pm/HISTORY");
	cr_assert_gt(size, 0);
	for (int64_t off = 0; off < size; off++) {
		cr_assert_eq(pio_mem_flip_bit(io, "pm/HISTORY", (uint64_t)off, (unsigned)off % 8), 0);
		cr_assert_eq(hman_load(io, "pm", &l), -PARLEY_ECORRUPT, "off %lld", (long long)off);
		cr_assert_eq(pio_mem_flip_bit(io, "pm/HISTORY", (uint64_t)off, (unsigned)off % 8), 0);
	}
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, "pm/HISTORY", 0, &f), 0);
	cr_assert_eq(io->ops->truncate(io, f, (uint64_t)size - 1), 0);
	io->ops->close(io, f);
	cr_assert_eq(hman_load(io, "pm", &l), -PARLEY_ECORRUPT);
	hman_free(&m);
	pio_free(io);
}

Test(hmanifest, cleanup_removes_only_unreferenced_files)
{
	struct pio *io = mkio();
	struct hman m;
	hman_init(&m, 2);
	struct hman_seg a = { 0x10, 1, 0xd1, 1 }, b = { 0x11, 1, 0, 1 };
	cr_assert_eq(hman_add_seg(&m, &a), 0);
	cr_assert_eq(hman_add_seg(&m, &b), 0);
	m.dict_id = 0xd2; /* current, named by no segment yet */
	cr_assert_eq(hman_store(io, "pm", &m), 0);
	touch(io, "pm/seg-0000000000000010.pseg");      /* live */
	touch(io, "pm/seg-0000000000000011.pseg");      /* live */
	touch(io, "pm/seg-0000000000000012.pseg");      /* orphan: flush never recorded */
	touch(io, "pm/seg-0000000000000013.pseg.tmp");  /* crashed writer */
	touch(io, "pm/dict-00000000000000d1.zd");       /* named by a segment */
	touch(io, "pm/dict-00000000000000d2.zd");       /* current */
	touch(io, "pm/dict-00000000000000d3.zd");       /* retired */
	touch(io, "pm/dict-00000000000000d4.zd.tmp");
	touch(io, "pm/HISTORY.tmp");
	touch(io, "pm/wal-0000000000000001.log");       /* not ours */
	touch(io, "pm/other.tmp");                      /* not ours either */
	cr_assert_eq(hman_cleanup(io, "pm", &m), 5);
	static const char *gone[] = { "pm/seg-0000000000000012.pseg",
				      "pm/seg-0000000000000013.pseg.tmp",
				      "pm/dict-00000000000000d3.zd",
				      "pm/dict-00000000000000d4.zd.tmp", "pm/HISTORY.tmp" };
	static const char *kept[] = { "pm/seg-0000000000000010.pseg",
				      "pm/seg-0000000000000011.pseg",
				      "pm/dict-00000000000000d1.zd",
				      "pm/dict-00000000000000d2.zd", "pm/HISTORY",
				      "pm/wal-0000000000000001.log", "pm/other.tmp" };
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(gone); i++)
		cr_assert_eq(pio_mem_file_size(io, gone[i]), -ENOENT, "%s", gone[i]);
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(kept); i++)
		cr_assert_geq(pio_mem_file_size(io, kept[i]), 0, "%s", kept[i]);
	cr_assert_eq(hman_cleanup(io, "pm", &m), 0, "idempotent");
	hman_free(&m);
	pio_free(io);
}
