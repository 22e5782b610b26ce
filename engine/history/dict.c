/*
 * dict.c — zstd dictionary training, naming, durable storage and the retrain
 * decision. See dict.h for the file format, the lifecycle diagram, ownership
 * and threading.
 */
#include "dict.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ZDICT_trainFromBuffer_fastCover (exported by libzstd >= 1.3.6; its
 * declaration sits in zdict.h's "static linking only" part) */
#define ZDICT_STATIC_LINKING_ONLY
#include <zdict.h>
#include <zstd.h>

#include "parley_common.h"

#define DICT_MAGIC 0x5a444c50u /* "PLDZ" little-endian */
#define DICT_VERSION 1u

uint64_t dict_id_of(const void *p, size_t len)
{
	uint64_t id = parley_xxh3(p, len, DICT_ID_SEED);
	return id ? id : 1;
}

struct pdict *dict_ref(const struct pdict *d)
{
	struct pdict *m = (struct pdict *)d; /* the count is not content */
	if (m)
		atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}

void dict_free(struct pdict *d)
{
	if (!d || atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) > 1)
		return;
	ZSTD_freeCDict(d->cdict);
	ZSTD_freeDDict(d->ddict);
	free(d->bytes);
	free(d);
}

int dict_from_bytes(const void *p, size_t len, int level, struct pdict **out)
{
	if (!p || len == 0 || len > DICT_MAX_BYTES)
		return -PARLEY_EINVAL;
	struct pdict *d = calloc(1, sizeof *d);
	if (!d)
		return -PARLEY_ENOMEM;
	d->bytes = malloc(len);
	if (!d->bytes) {
		free(d);
		return -PARLEY_ENOMEM;
	}
	memcpy(d->bytes, p, len);
	atomic_init(&d->refs, 1);
	d->len = (uint32_t)len;
	d->id = dict_id_of(p, len);
	d->level = level;
	d->cdict = ZSTD_createCDict(d->bytes, len, level);
	d->ddict = ZSTD_createDDict(d->bytes, len);
	if (!d->cdict || !d->ddict) {
		dict_free(d);
		return -PARLEY_ENOMEM;
	}
	*out = d;
	return 0;
}

int dict_train(const struct dict_sample *samples, size_t n, size_t dict_cap,
	       int level, struct pdict **out)
{
	if ((!samples && n) || dict_cap < 256 || dict_cap > DICT_MAX_BYTES)
		return -PARLEY_EINVAL;
	/* Take the most recent samples (the tail) up to the byte bound. */
	size_t first = n, total = 0;
	while (first > 0) {
		size_t l = PARLEY_MIN(samples[first - 1].len,
				      (size_t)DICT_SAMPLE_MAX_LEN);
		if (total + l > DICT_MAX_SAMPLE_BYTES)
			break;
		total += l;
		first--;
	}
	size_t used = n - first;
	if (used < DICT_MIN_SAMPLES || total < DICT_MIN_SAMPLE_BYTES)
		return -PARLEY_EAGAIN;
	size_t cap = PARLEY_MIN(dict_cap, total / 8);
	if (cap < 256)
		return -PARLEY_EAGAIN;

	uint8_t *buf = malloc(total);
	size_t *sizes = malloc(used * sizeof *sizes);
	uint8_t *dbuf = malloc(cap);
	int rc = -PARLEY_ENOMEM;
	if (!buf || !sizes || !dbuf)
		goto out;
	size_t off = 0;
	for (size_t i = first; i < n; i++) {
		size_t l = PARLEY_MIN(samples[i].len, (size_t)DICT_SAMPLE_MAX_LEN);
		if (l)
			memcpy(buf + off, samples[i].p, l);
		sizes[i - first] = l;
		off += l;
	}
	/* ZDICT's fastCover, one pass with fixed parameters (segment k=200,
	 * dmer d=8, f=18, accel=4) at the requested size, stamped with a zstd
	 * header so that the dictionary also carries entropy tables.
	 * ZDICT_trainFromBuffer would search k instead (several trainings,
	 * each scored by compressing a quarter of the samples): on 4 MiB of
	 * chat-sized text that search cost 5-10x the CPU of one pass for a
	 * dictionary no better (bench/RESULTS.md, "CPU per SEND"), and a
	 * fresh partition trains at its first flush, under load.
	 * The entropy tables: ZDICT_finalizeDictionary compresses every
	 * sample once at zParams.compressionLevel to count symbols; at level
	 * 9 that took more than half of a training's CPU (a fresh hash and
	 * chain table per sample) for tables that compressed held-out chat
	 * text no better than the ones gathered at DICT_FLUSH_LEVEL. f=18
	 * (a 1 MiB frequency table instead of 4 MiB, zeroed per training):
	 * ~25 % less CPU; accel=4 (zstd's fastCover then counts every 4th
	 * dmer's frequency and finalizes on a quarter of the samples):
	 * about half the CPU again; the held-out ratio within 0.002 for
	 * both (bench/RESULTS.md, "Dictionary training"). */
	ZDICT_fastCover_params_t fp;
	memset(&fp, 0, sizeof fp);
	fp.k = 200;
	fp.d = 8;
	fp.f = 18;
	fp.accel = 4;
	fp.zParams.compressionLevel = PARLEY_MIN(level, DICT_FLUSH_LEVEL);
	size_t r = ZDICT_trainFromBuffer_fastCover(dbuf, cap, buf, sizes,
						   (unsigned)used, fp);
	if (ZDICT_isError(r)) {
		PLOG_I("dict", "training found no dictionary", "samples=%zu bytes=%zu err=\"%s\"",
		       used, total, ZDICT_getErrorName(r));
		rc = -PARLEY_EAGAIN;
		goto out;
	}
	rc = dict_from_bytes(dbuf, r, level, out);
	if (rc == 0)
		PLOG_D("dict", "trained", "id=%016" PRIx64 " bytes=%zu samples=%zu sample_bytes=%zu",
		       (*out)->id, r, used, total);
out:
	free(buf);
	free(sizes);
	free(dbuf);
	return rc;
}

char *dict_file_name(char *buf, size_t cap, uint64_t id)
{
	snprintf(buf, cap, "dict-%016" PRIx64 ".zd", id);
	return buf;
}

static int join_path(char *buf, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(buf, cap, "%s/%s", dir, name);
	return (n < 0 || (size_t)n >= cap) ? -PARLEY_ETOOBIG : 0;
}

int dict_store(struct pio *io, const char *dir, const struct pdict *d)
{
	char name[64], path[1024], tmp[1040];
	dict_file_name(name, sizeof name, d->id);
	int rc = join_path(path, sizeof path, dir, name);
	if (rc)
		return rc;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);

	size_t total = DICT_HDR_LEN + d->len;
	uint8_t *buf = malloc(total);
	if (!buf)
		return -PARLEY_ENOMEM;
	le_put32(buf, DICT_MAGIC);
	le_put32(buf + 4, DICT_VERSION);
	le_put32(buf + 8, d->len);
	le_put32(buf + 12, 0);
	le_put64(buf + 16, d->id);
	memcpy(buf + DICT_HDR_LEN, d->bytes, d->len);

	rc = pio_file_replace(io, dir, tmp, path, buf, total);
	free(buf);
	if (rc != 0) {
		PLOG_E("dict", "store failed", "file=%s err=%s", path,
		       parley_errname(rc));
	}
	return rc;
}

int dict_load(struct pio *io, const char *dir, uint64_t id, int level,
	      struct pdict **out)
{
	char name[64], path[1024];
	dict_file_name(name, sizeof name, id);
	int rc = join_path(path, sizeof path, dir, name);
	if (rc)
		return rc;
	struct pio_file *f = NULL;
	rc = io->ops->open(io, path, 0, &f);
	if (rc == -ENOENT)
		return -PARLEY_ENOTFOUND;
	if (rc)
		return rc;
	int64_t size = io->ops->size(io, f);
	uint8_t *buf = NULL;
	if (size < 0) {
		rc = (int)size;
		goto out;
	}
	if (size < DICT_HDR_LEN || size > DICT_HDR_LEN + (int64_t)DICT_MAX_BYTES) {
		rc = -PARLEY_ECORRUPT;
		goto bad;
	}
	buf = malloc((size_t)size);
	if (!buf) {
		rc = -PARLEY_ENOMEM;
		goto out;
	}
	int64_t got = io->ops->pread(io, f, buf, (size_t)size, 0);
	if (got < 0) {
		rc = (int)got;
		goto out;
	}
	if (got != size) {
		rc = -PARLEY_ECORRUPT;
		goto bad;
	}
	struct le_reader r;
	le_reader_init(&r, buf, (size_t)size);
	uint32_t magic = le_read32(&r), ver = le_read32(&r), len = le_read32(&r);
	(void)le_read32(&r);
	uint64_t fid = le_read64(&r);
	if (!r.ok || magic != DICT_MAGIC) {
		rc = -PARLEY_ECORRUPT;
		goto bad;
	}
	if (ver != DICT_VERSION) {
		rc = -PARLEY_EVERSION;
		goto bad;
	}
	if ((int64_t)len != size - DICT_HDR_LEN || fid != id ||
	    dict_id_of(buf + DICT_HDR_LEN, len) != id) {
		rc = -PARLEY_ECORRUPT;
		goto bad;
	}
	rc = dict_from_bytes(buf + DICT_HDR_LEN, len, level, out);
	goto out;
bad:
	PLOG_E("dict", "dictionary file corrupt", "file=%s err=%s", path,
	       parley_errname(rc));
out:
	free(buf);
	io->ops->close(io, f);
	return rc;
}

int dict_remove(struct pio *io, const char *dir, uint64_t id)
{
	char name[64], path[1024];
	dict_file_name(name, sizeof name, id);
	int rc = join_path(path, sizeof path, dir, name);
	if (rc)
		return rc;
	return pio_file_remove(io, dir, path);
}

bool dict_should_retrain(const struct dict_health *h,
			 const struct dict_retrain_policy *p)
{
	bool enough = h->samples_available >= DICT_MIN_SAMPLES &&
		      h->sample_bytes_available >= DICT_MIN_SAMPLE_BYTES;
	if (!enough)
		return false;
	if (!h->have_dict)
		return true; /* first flush with enough samples */
	if (h->recent_raw < p->min_recent_raw || h->recent_raw == 0 ||
	    h->baseline_ratio <= 0)
		return false;
	double recent = (double)h->recent_comp / (double)h->recent_raw;
	return recent > h->baseline_ratio * p->degrade_factor;
}
