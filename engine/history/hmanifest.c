/*
 * hmanifest.c — the partition history manifest. Format, commit points and
 * crash story in hmanifest.h.
 */
#include "hmanifest.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "parley_common.h"
#include "segment.h"

#define HMAN_MAGIC 0x31304e414d484c50ull /* "PLHMAN01" */
#define HMAN_VERSION 1u
#define HMAN_HDR 64u

void hman_init(struct hman *m, uint32_t partition)
{
	memset(m, 0, sizeof *m);
	m->partition = partition;
	m->next_seg_id = 1;
}

void hman_free(struct hman *m)
{
	free(m->segs);
	free(m->streams);
	memset(m, 0, sizeof *m);
}

static int join(char *buf, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(buf, cap, "%s/%s", dir, name);
	return (n < 0 || (size_t)n >= cap) ? -PARLEY_ETOOBIG : 0;
}

uint64_t hman_next_seg_id(struct hman *m)
{
	return m->next_seg_id++;
}

bool hman_has_seg(const struct hman *m, uint64_t id)
{
	for (size_t i = 0; i < m->nsegs; i++)
		if (m->segs[i].id == id)
			return true;
	return false;
}

int hman_add_seg(struct hman *m, const struct hman_seg *s)
{
	if (hman_has_seg(m, s->id))
		return -PARLEY_EEXIST;
	if (m->nsegs >= HMAN_MAX_SEGS)
		return -PARLEY_EFULL;
	if (m->nsegs == m->capsegs) {
		size_t nc = m->capsegs ? m->capsegs * 2 : 16;
		struct hman_seg *p = realloc(m->segs, nc * sizeof *p);
		if (!p)
			return -PARLEY_ENOMEM;
		m->segs = p;
		m->capsegs = nc;
	}
	m->segs[m->nsegs++] = *s;
	if (s->id >= m->next_seg_id)
		m->next_seg_id = s->id + 1;
	return 0;
}

int hman_replace_segs(struct hman *m, const uint64_t *inputs, size_t n,
		      const struct hman_seg *out)
{
	for (size_t i = 0; i < n; i++)
		if (!hman_has_seg(m, inputs[i]))
			return -PARLEY_ENOTFOUND;
	if (out && hman_has_seg(m, out->id))
		return -PARLEY_EEXIST;
	size_t w = 0;
	for (size_t i = 0; i < m->nsegs; i++) {
		bool gone = false;
		for (size_t j = 0; j < n; j++)
			gone |= m->segs[i].id == inputs[j];
		if (!gone)
			m->segs[w++] = m->segs[i];
	}
	m->nsegs = w;
	return out ? hman_add_seg(m, out) : 0;
}

static int key_cmp(const struct hman_stream *s, const void *key, size_t klen)
{
	int c = memcmp(s->key, key, PARLEY_MIN((size_t)s->klen, klen));
	if (c)
		return c;
	return s->klen < klen ? -1 : s->klen > klen;
}

/* Index of key, or -(insertion point) - 1. */
static ptrdiff_t stream_find(const struct hman *m, const void *key, size_t klen)
{
	size_t lo = 0, hi = m->nstreams;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = key_cmp(&m->streams[mid], key, klen);
		if (c == 0)
			return (ptrdiff_t)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(ptrdiff_t)lo - 1;
}

const struct hman_stream *hman_stream(const struct hman *m, const void *key,
				      size_t klen)
{
	ptrdiff_t i = stream_find(m, key, klen);
	return i >= 0 ? &m->streams[i] : NULL;
}

static int stream_get(struct hman *m, const void *key, size_t klen,
		      struct hman_stream **out)
{
	if (klen == 0 || klen > PE_MAX_KEY)
		return -PARLEY_EINVAL;
	ptrdiff_t i = stream_find(m, key, klen);
	if (i >= 0) {
		*out = &m->streams[i];
		return 0;
	}
	if (m->nstreams >= HMAN_MAX_STREAMS)
		return -PARLEY_EFULL;
	if (m->nstreams == m->capstreams) {
		size_t nc = m->capstreams ? m->capstreams * 2 : 16;
		struct hman_stream *p = realloc(m->streams, nc * sizeof *p);
		if (!p)
			return -PARLEY_ENOMEM;
		m->streams = p;
		m->capstreams = nc;
	}
	size_t at = (size_t)(-i - 1);
	memmove(&m->streams[at + 1], &m->streams[at],
		(m->nstreams - at) * sizeof *m->streams);
	m->nstreams++;
	struct hman_stream *s = &m->streams[at];
	memset(s, 0, sizeof *s);
	memcpy(s->key, key, klen);
	s->klen = (uint8_t)klen;
	*out = s;
	return 0;
}

int hman_set_deleted(struct hman *m, const void *key, size_t klen,
		     uint64_t through)
{
	struct hman_stream *s;
	int rc = stream_get(m, key, klen, &s);
	if (rc)
		return rc;
	if (through > s->deleted_through)
		s->deleted_through = through;
	return 0;
}

int hman_set_retained(struct hman *m, const void *key, size_t klen,
		      uint64_t first_retained)
{
	struct hman_stream *s;
	int rc = stream_get(m, key, klen, &s);
	if (rc)
		return rc;
	if (first_retained > s->first_retained)
		s->first_retained = first_retained;
	return 0;
}

int hman_store(struct pio *io, const char *dir, struct hman *m)
{
	char path[1024], tmp[1040];
	int rc = join(path, sizeof path, dir, HMAN_FILE);
	if (rc)
		return rc;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	size_t len = HMAN_HDR + m->nsegs * 32 + 8;
	for (size_t i = 0; i < m->nstreams; i++)
		len += 1 + m->streams[i].klen + 16;
	uint8_t *b = malloc(len);
	if (!b)
		return -PARLEY_ENOMEM;
	uint64_t gen = m->generation + 1;
	le_put64(b, HMAN_MAGIC);
	le_put32(b + 8, HMAN_VERSION);
	le_put32(b + 12, m->partition);
	le_put64(b + 16, gen);
	le_put64(b + 24, m->flushed_index);
	le_put64(b + 32, m->next_seg_id);
	le_put64(b + 40, m->dict_id);
	le_put32(b + 48, m->dict_ratio_ppm);
	le_put32(b + 52, (uint32_t)m->nsegs);
	le_put32(b + 56, (uint32_t)m->nstreams);
	le_put32(b + 60, 0);
	uint8_t *p = b + HMAN_HDR;
	for (size_t i = 0; i < m->nsegs; i++) {
		le_put64(p, m->segs[i].id);
		le_put64(p + 8, m->segs[i].bytes);
		le_put64(p + 16, m->segs[i].dict_id);
		le_put64(p + 24, m->segs[i].entries);
		p += 32;
	}
	for (size_t i = 0; i < m->nstreams; i++) {
		const struct hman_stream *s = &m->streams[i];
		*p++ = s->klen;
		memcpy(p, s->key, s->klen);
		p += s->klen;
		le_put64(p, s->deleted_through);
		le_put64(p + 8, s->first_retained);
		p += 16;
	}
	le_put64(p, parley_xxh3(b, (size_t)(p - b), HMAN_SEED));
	PARLEY_ASSERT((size_t)(p + 8 - b) == len);

	rc = pio_file_replace(io, dir, tmp, path, b, len);
	free(b);
	if (rc) {
		PLOG_E("hmanifest", "store failed", "file=%s err=%s", path,
		       parley_errname(rc));
		return rc;
	}
	m->generation = gen;
	return 0;
}

int hman_load(struct pio *io, const char *dir, struct hman *m)
{
	char path[1024];
	int rc = join(path, sizeof path, dir, HMAN_FILE);
	if (rc)
		return rc;
	struct pio_file *f;
	rc = io->ops->open(io, path, 0, &f);
	if (rc == -ENOENT)
		return -PARLEY_ENOTFOUND;
	if (rc)
		return rc;
	int64_t size = io->ops->size(io, f);
	uint8_t *b = NULL;
	if (size < 0) {
		rc = (int)size;
		goto out;
	}
	if (size < HMAN_HDR + 8 || size > (int64_t)(HMAN_HDR + 8 + HMAN_MAX_SEGS * 32ull +
						   HMAN_MAX_STREAMS * (16ull + 256))) {
		rc = -PARLEY_ECORRUPT;
		goto out;
	}
	b = malloc((size_t)size);
	if (!b) {
		rc = -PARLEY_ENOMEM;
		goto out;
	}
	int64_t got = io->ops->pread(io, f, b, (size_t)size, 0);
	if (got != size) {
		rc = got < 0 ? (int)got : -PARLEY_ECORRUPT;
		goto out;
	}
	size_t body = (size_t)size - 8;
	if (le_get64(b) != HMAN_MAGIC ||
	    le_get64(b + body) != parley_xxh3(b, body, HMAN_SEED)) {
		rc = -PARLEY_ECORRUPT;
		goto out;
	}
	if (le_get32(b + 8) != HMAN_VERSION) {
		rc = -PARLEY_EVERSION;
		goto out;
	}
	struct hman n;
	hman_init(&n, le_get32(b + 12));
	n.generation = le_get64(b + 16);
	n.flushed_index = le_get64(b + 24);
	n.next_seg_id = le_get64(b + 32);
	n.dict_id = le_get64(b + 40);
	n.dict_ratio_ppm = le_get32(b + 48);
	uint32_t nsegs = le_get32(b + 52), nstreams = le_get32(b + 56);
	struct le_reader r;
	le_reader_init(&r, b + HMAN_HDR, body - HMAN_HDR);
	if (nsegs > HMAN_MAX_SEGS || nstreams > HMAN_MAX_STREAMS)
		r.ok = false;
	for (uint32_t i = 0; i < nsegs && r.ok && !rc; i++) {
		struct hman_seg s;
		s.id = le_read64(&r);
		s.bytes = le_read64(&r);
		s.dict_id = le_read64(&r);
		s.entries = le_read64(&r);
		if (r.ok)
			rc = hman_add_seg(&n, &s);
	}
	const uint8_t *prev = NULL;
	uint8_t prevlen = 0;
	for (uint32_t i = 0; i < nstreams && r.ok && !rc; i++) {
		uint8_t kl = le_read8(&r);
		const uint8_t *k = le_read_bytes(&r, kl);
		uint64_t del = le_read64(&r), ret = le_read64(&r);
		if (!r.ok || kl == 0)
			break;
		/* strictly sorted on disk: the binary search relies on it */
		if (prev) {
			int c = memcmp(prev, k, PARLEY_MIN(prevlen, kl));
			if (c > 0 || (c == 0 && prevlen >= kl)) {
				r.ok = false;
				break;
			}
		}
		prev = k;
		prevlen = kl;
		rc = hman_set_deleted(&n, k, kl, del);
		if (!rc)
			rc = hman_set_retained(&n, k, kl, ret);
	}
	if (!rc && (!r.ok || r.off != r.len || n.nstreams != nstreams))
		rc = -PARLEY_ECORRUPT;
	if (rc) {
		hman_free(&n);
		goto out;
	}
	n.next_seg_id = PARLEY_MAX(n.next_seg_id, le_get64(b + 32));
	*m = n;
out:
	if (rc == -PARLEY_ECORRUPT || rc == -PARLEY_EVERSION)
		PLOG_E("hmanifest", "manifest unreadable", "file=%s err=%s", path,
		       parley_errname(rc));
	free(b);
	io->ops->close(io, f);
	return rc;
}

struct cleanup_ctx {
	struct pio *io;
	const char *dir;
	const struct hman *m;
	int deleted;
	int err;
};

static bool dict_referenced(const struct hman *m, uint64_t id)
{
	if (id == m->dict_id)
		return true;
	for (size_t i = 0; i < m->nsegs; i++)
		if (m->segs[i].dict_id == id)
			return true;
	return false;
}

static bool parse_dict_name(const char *name, uint64_t *id)
{
	size_t l = strlen(name);
	if (l != 5 + 16 + 3 || strncmp(name, "dict-", 5) || strcmp(name + 21, ".zd"))
		return false;
	uint64_t v = 0;
	for (int i = 5; i < 21; i++) {
		char c = name[i];
		if (c >= '0' && c <= '9')
			v = v << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (uint64_t)(c - 'a' + 10);
		else
			return false;
	}
	*id = v;
	return true;
}

static int cleanup_one(void *arg, const char *name)
{
	struct cleanup_ctx *c = arg;
	uint64_t id;
	size_t l = strlen(name);
	bool del = false;
	if (l > 4 && !strcmp(name + l - 4, ".tmp")) {
		/* only our own temp files: the directory may hold others' */
		char base[256];
		if (l - 4 >= sizeof base)
			return 0;
		memcpy(base, name, l - 4);
		base[l - 4] = '\0';
		del = seg_parse_name(base, &id) || parse_dict_name(base, &id) ||
		      !strcmp(base, HMAN_FILE);
	} else if (seg_parse_name(name, &id))
		del = !hman_has_seg(c->m, id);
	else if (parse_dict_name(name, &id))
		del = !dict_referenced(c->m, id);
	if (!del)
		return 0;
	char path[1024];
	if (join(path, sizeof path, c->dir, name))
		return 0;
	int rc = c->io->ops->unlink(c->io, path);
	if (rc == 0) {
		c->deleted++;
		PLOG_I("hmanifest", "removed unreferenced file", "file=%s", path);
	} else if (!c->err) {
		c->err = rc;
	}
	return 0;
}

int hman_cleanup(struct pio *io, const char *dir, const struct hman *m)
{
	struct cleanup_ctx c = { io, dir, m, 0, 0 };
	int rc = io->ops->list(io, dir, cleanup_one, &c);
	if (rc)
		return rc;
	if (c.err)
		return c.err;
	if (c.deleted) {
		rc = io->ops->fsync_dir(io, dir);
		if (rc)
			return rc;
	}
	return c.deleted;
}
