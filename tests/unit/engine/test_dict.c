/*
 * test_dict.c — engine/dict.c: training (and refusing to train on too
 * little), dictionary ids, durable store/load on the in-memory backend,
 * corruption and I/O-failure outcomes, and the retrain decision.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>

#include "dict.h"
#include "hist_corpus.h"
#include "io.h"
#include "parley_engine.h"
#include "parley_engine_hooks.h"

#define NSAMP 3000

static char *samp_buf;
static struct dict_sample samples[NSAMP];

static void make_samples(uint64_t seed)
{
	struct parley_rng rng = { seed };
	samp_buf = malloc((size_t)NSAMP * 256);
	for (int i = 0; i < NSAMP; i++) {
		char *p = samp_buf + (size_t)i * 256;
		samples[i].p = p;
		samples[i].len = hist_message(&rng, p);
	}
}

static int count_names(void *arg, const char *name)
{
	char *acc = arg;
	strcat(acc, name);
	strcat(acc, ";");
	return 0;
}

Test(dict, refuses_too_few_samples)
{
	make_samples(1);
	struct pdict *d = NULL;
	cr_assert_eq(dict_train(samples, DICT_MIN_SAMPLES - 1, DICT_DEFAULT_BYTES, 3, &d),
		     -PARLEY_EAGAIN);
	cr_assert_null(d);
	/* enough samples but too few bytes */
	struct dict_sample tiny[200];
	for (int i = 0; i < 200; i++)
		tiny[i] = (struct dict_sample){ "ok", 2 };
	cr_assert_eq(dict_train(tiny, 200, DICT_DEFAULT_BYTES, 3, &d), -PARLEY_EAGAIN);
	cr_assert_eq(dict_train(samples, NSAMP, 10, 3, &d), -PARLEY_EINVAL);
	free(samp_buf);
}

Test(dict, train_compresses_better_and_ids_are_stable)
{
	make_samples(hist_seed("dict.train"));
	struct pdict *d = NULL;
	/* train on the first 2/3, measure on the rest (held out) */
	cr_assert_eq(dict_train(samples, 2000, 16 * 1024, 3, &d), 0);
	cr_assert_not_null(d);
	cr_assert_neq(d->id, 0u);
	cr_assert_eq(d->id, dict_id_of(d->bytes, d->len));
	cr_assert_leq(d->len, 16u * 1024);
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	size_t raw = 0, plain = 0, withd = 0;
	uint8_t out[1024], back[512];
	for (int i = 2000; i < NSAMP; i++) {
		raw += samples[i].len;
		size_t a = ZSTD_compressCCtx(cc, out, sizeof out, samples[i].p, samples[i].len, 3);
		cr_assert(!ZSTD_isError(a));
		plain += a;
		size_t b = ZSTD_compress_usingCDict(cc, out, sizeof out, samples[i].p,
						    samples[i].len, d->cdict);
		cr_assert(!ZSTD_isError(b));
		withd += b;
		size_t r = ZSTD_decompress_usingDDict(dc, back, sizeof back, out, b, d->ddict);
		cr_assert_eq(r, samples[i].len);
		cr_assert_eq(memcmp(back, samples[i].p, r), 0);
	}
	printf("per-message zstd: raw=%zu plain=%zu (%.3f) dict=%zu (%.3f)\n", raw,
	       plain, (double)plain / raw, withd, (double)withd / raw);
	cr_assert_lt(withd * 10, plain * 7, "a trained dictionary should cut small-message output by 30%%+");
	/* same bytes, same id */
	struct pdict *d2;
	cr_assert_eq(dict_from_bytes(d->bytes, d->len, 3, &d2), 0);
	cr_assert_eq(d2->id, d->id);
	dict_free(d2);
	ZSTD_freeCCtx(cc);
	ZSTD_freeDCtx(dc);
	dict_free(d);
	free(samp_buf);
}

Test(dict, store_load_and_corruption)
{
	make_samples(7);
	struct pio *io = pio_mem_new(1);
	cr_assert_eq(io->ops->mkdir(io, "p0"), 0);
	struct pdict *d, *l = NULL;
	cr_assert_eq(dict_train(samples, NSAMP, 8 * 1024, 3, &d), 0);
	cr_assert_eq(dict_load(io, "p0", d->id, 3, &l), -PARLEY_ENOTFOUND);
	cr_assert_eq(dict_store(io, "p0", d), 0);
	char names[512] = "", expect[64];
	cr_assert_eq(io->ops->list(io, "p0", count_names, names), 0);
	dict_file_name(expect, sizeof expect, d->id);
	strcat(expect, ";");
	cr_assert_str_eq(names, expect, "only the final file remains, no .tmp");

	/* survives a crash (it was synced and renamed) */
	pio_mem_crash(io, false);
	cr_assert_eq(dict_load(io, "p0", d->id, 3, &l), 0);
	cr_assert_eq(l->id, d->id);
	cr_assert_eq(l->len, d->len);
	cr_assert_eq(memcmp(l->bytes, d->bytes, d->len), 0);
	dict_free(l);
	l = NULL;

	/* one flipped bit anywhere in the dictionary bytes: refused */
	char path[128];
	snprintf(path, sizeof path, "p0/%s", expect);
	path[strlen(path) - 1] = '\0';
	cr_assert_eq(pio_mem_flip_bit(io, path, DICT_HDR_LEN + d->len / 2, 3), 0);
	cr_assert_eq(dict_load(io, "p0", d->id, 3, &l), -PARLEY_ECORRUPT);
	cr_assert_null(l);
	cr_assert_eq(pio_mem_flip_bit(io, path, DICT_HDR_LEN + d->len / 2, 3), 0);
	cr_assert_eq(dict_load(io, "p0", d->id, 3, &l), 0);
	dict_free(l);
	l = NULL;
	/* truncated file */
	struct pio_file *f;
	cr_assert_eq(io->ops->open(io, path, 0, &f), 0);
	cr_assert_eq(io->ops->truncate(io, f, DICT_HDR_LEN + d->len - 1), 0);
	io->ops->close(io, f);
	cr_assert_eq(dict_load(io, "p0", d->id, 3, &l), -PARLEY_ECORRUPT);

	/* remove */
	cr_assert_eq(dict_remove(io, "p0", d->id), 0);
	cr_assert_eq(dict_remove(io, "p0", d->id), -PARLEY_ENOTFOUND);

	/* fsync failure: error returned, nothing left behind */
	pio_mem_inject(io, PIO_FAULT_FSYNC_EIO, 1);
	cr_assert_eq(dict_store(io, "p0", d), -EIO);
	names[0] = '\0';
	cr_assert_eq(io->ops->list(io, "p0", count_names, names), 0);
	cr_assert_str_eq(names, "");
	/* write failure likewise */
	pio_mem_inject(io, PIO_FAULT_WRITE_EIO, 1);
	cr_assert_eq(dict_store(io, "p0", d), -EIO);
	cr_assert_eq(dict_load(io, "p0", d->id, 3, &l), -PARLEY_ENOTFOUND);
	dict_free(d);
	pio_free(io);
	free(samp_buf);
}

Test(dict, retrain_decision)
{
	struct dict_retrain_policy p = { .degrade_factor = 1.15, .min_recent_raw = 1000 };
	struct dict_health h = { .samples_available = 10, .sample_bytes_available = 1 << 20 };
	cr_assert_not(dict_should_retrain(&h, &p), "too few samples");
	h.samples_available = 1000;
	cr_assert(dict_should_retrain(&h, &p), "no dictionary yet: train");
	h.have_dict = true;
	h.baseline_ratio = 0.30;
	h.recent_raw = 500;
	h.recent_comp = 400;
	cr_assert_not(dict_should_retrain(&h, &p), "not enough recent data to judge");
	h.recent_raw = 10000;
	h.recent_comp = 3400; /* 0.34 <= 0.345 */
	cr_assert_not(dict_should_retrain(&h, &p));
	h.recent_comp = 3500; /* 0.35 > 0.345 */
	cr_assert(dict_should_retrain(&h, &p));
	h.sample_bytes_available = 100;
	cr_assert_not(dict_should_retrain(&h, &p), "degraded but nothing to train on");
}
