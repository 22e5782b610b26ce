/*
 * hpart.c — a partition's history tier: manifest + readers + dictionaries +
 * flush and compaction jobs. Contract, job diagram, invariants, ownership
 * and threading in hpart.h.
 *
 * Every commit follows one pattern: copy the manifest, change the copy,
 * store it; only when the store succeeded does the copy replace the live
 * manifest and do the readers, cache and files change. A failed store
 * therefore changes nothing, on disk or in memory.
 */
#include "hpart.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

struct hp_seg {
	uint64_t id;
	struct seg_reader *r;
};

struct hpart {
	struct pio *io;
	char dir[768];
	struct hpart_opts o;
	struct hman man;
	struct hp_seg *segs;
	size_t nsegs, capsegs;
	struct pdict **dicts;
	size_t ndicts, capdicts;
	struct seg_reader **rv; /* scratch for history_read, capsegs long */
	bool flush_busy, compact_busy;
	uint64_t recent_raw, recent_comp; /* flushed with the current dict */
	uint64_t *dgone;        /* retired dictionaries whose files are still
				   to be removed (hpart_take_dict_removals) */
	size_t ndgone, capdgone;
};

/* ---- small helpers ------------------------------------------------------------------ */

static struct pdict *find_dict(struct pdict *const *v, size_t n, uint64_t id)
{
	for (size_t i = 0; i < n; i++)
		if (v[i]->id == id)
			return v[i];
	return NULL;
}

static const struct pdict *hp_dict_lookup(void *arg, uint64_t id)
{
	struct hpart *h = arg;
	return find_dict(h->dicts, h->ndicts, id);
}

static int add_dict(struct hpart *h, struct pdict *d)
{
	if (h->ndicts == h->capdicts) {
		size_t nc = h->capdicts ? h->capdicts * 2 : 4;
		struct pdict **p = realloc(h->dicts, nc * sizeof *p);
		if (!p)
			return -PARLEY_ENOMEM;
		h->dicts = p;
		h->capdicts = nc;
	}
	h->dicts[h->ndicts++] = d;
	return 0;
}

static int add_seg(struct hpart *h, uint64_t id, struct seg_reader *r)
{
	if (h->nsegs == h->capsegs) {
		size_t nc = h->capsegs ? h->capsegs * 2 : 16;
		struct hp_seg *p = realloc(h->segs, nc * sizeof *p);
		struct seg_reader **rv = realloc(h->rv, nc * sizeof *rv);
		if (p)
			h->segs = p;
		if (rv)
			h->rv = rv;
		if (!p || !rv)
			return -PARLEY_ENOMEM;
		h->capsegs = nc;
	}
	h->segs[h->nsegs].id = id;
	h->segs[h->nsegs].r = r;
	h->nsegs++;
	return 0;
}

/* A block cache may be shared by several partitions (one per shard) while
 * segment ids count per partition: the partition number keys them apart
 * (ids stay far below 2^44). */
static uint64_t hp_cache_ns(const struct hpart *h)
{
	return ((uint64_t)h->o.partition + 1) << 44;
}

void hpart_uncache(struct hpart *h, bool retire)
{
	for (size_t i = 0; h && h->o.cache && i < h->nsegs; i++) {
		if (retire)
			seg_retire(h->segs[i].r);
		bcache_erase_segment(h->o.cache, hp_cache_ns(h) | h->segs[i].id);
	}
}

static int open_seg(struct hpart *h, uint64_t id, struct seg_reader **r)
{
	char name[64], err[SEG_ERR_LEN];
	seg_file_name(name, sizeof name, id);
	struct seg_open_opts so = { .cache = h->o.cache,
				    .dict_lookup = hp_dict_lookup, .dict_arg = h,
				    .cache_ns = hp_cache_ns(h) };
	int rc = seg_open(h->io, h->dir, name, &so, r, err, sizeof err);
	if (rc)
		PLOG_E("hpart", "live segment unreadable", "partition=%u %s err=%s",
		       h->o.partition, err, parley_errname(rc));
	return rc;
}

/* Deep copy of a manifest (for copy-change-store commits). */
static int man_copy(struct hman *dst, const struct hman *src)
{
	*dst = *src;
	dst->segs = NULL;
	dst->streams = NULL;
	dst->capsegs = src->nsegs;
	dst->capstreams = src->nstreams;
	if (src->nsegs) {
		dst->segs = malloc(src->nsegs * sizeof *dst->segs);
		if (!dst->segs)
			return -PARLEY_ENOMEM;
		memcpy(dst->segs, src->segs, src->nsegs * sizeof *dst->segs);
	}
	if (src->nstreams) {
		dst->streams = malloc(src->nstreams * sizeof *dst->streams);
		if (!dst->streams) {
			free(dst->segs);
			return -PARLEY_ENOMEM;
		}
		memcpy(dst->streams, src->streams, src->nstreams * sizeof *dst->streams);
	}
	return 0;
}

/* man_copy into a new heap manifest *out (the prepare steps hand it to
 * their install). 0 or -PARLEY_ENOMEM. */
static int man_dup(const struct hman *src, struct hman **out)
{
	struct hman *n = calloc(1, sizeof *n);
	if (!n)
		return -PARLEY_ENOMEM;
	int rc = man_copy(n, src);
	if (rc) {
		free(n);
		return rc;
	}
	*out = n;
	return 0;
}

/* The end of a copy-change-store commit: with rc 0 (the change applied to
 * the copy n) stores n and makes it the live manifest; on a failed change
 * or store frees n and returns the error, the live manifest unchanged. */
static int man_commit(struct hpart *h, struct hman *n, int rc)
{
	if (!rc)
		rc = hman_store(h->io, h->dir, n);
	if (rc) {
		hman_free(n);
		return rc;
	}
	hman_free(&h->man);
	h->man = *n;
	return 0;
}

/* Free dictionaries nobody needs any more (invariant 3). */
static void gc_dicts(struct hpart *h)
{
	if (h->flush_busy || h->compact_busy)
		return;
	size_t w = 0;
	for (size_t i = 0; i < h->ndicts; i++) {
		struct pdict *d = h->dicts[i];
		bool used = d->id == h->man.dict_id;
		for (size_t s = 0; s < h->man.nsegs && !used; s++)
			used = h->man.segs[s].dict_id == d->id;
		if (used) {
			h->dicts[w++] = d;
			continue;
		}
		/* its file goes off the owner thread (hpart_take_dict_removals);
		 * no memory to remember it: here after all */
		if (h->ndgone == h->capdgone) {
			size_t nc = h->capdgone ? h->capdgone * 2 : 4;
			uint64_t *v = realloc(h->dgone, nc * sizeof *v);
			if (v) {
				h->dgone = v;
				h->capdgone = nc;
			}
		}
		if (h->ndgone < h->capdgone) {
			h->dgone[h->ndgone++] = d->id;
		} else {
			int rc = dict_remove(h->io, h->dir, d->id);
			if (rc && rc != -PARLEY_ENOTFOUND)
				PLOG_W("hpart", "retired dictionary not removed",
				       "id=%016" PRIx64 " err=%s", d->id,
				       parley_errname(rc));
		}
		dict_free(d);
	}
	h->ndicts = w;
}

/* ---- open / close --------------------------------------------------------------------- */

void hpart_close(struct hpart *h)
{
	if (!h)
		return;
	PARLEY_ASSERT(!h->flush_busy && !h->compact_busy);
	for (size_t i = 0; i < h->nsegs; i++)
		seg_close(h->segs[i].r);
	for (size_t i = 0; i < h->ndicts; i++)
		dict_free(h->dicts[i]);
	/* retired dictionaries nobody took: removed here (close, not the
	 * serving path; else hpart_open's cleanup would) */
	for (size_t i = 0; i < h->ndgone && !h->o.read_only; i++)
		(void)dict_remove(h->io, h->dir, h->dgone[i]);
	free(h->dgone);
	free(h->segs);
	free(h->rv);
	free(h->dicts);
	hman_free(&h->man);
	free(h);
}

void hpart_close_detached(struct hpart *h)
{
	if (!h)
		return;
	h->ndgone = 0;
	hpart_close(h);
}

int hpart_open(struct pio *io, const char *dir, const struct hpart_opts *o,
	       struct hpart **out)
{
	*out = NULL;
	if (strlen(dir) >= sizeof ((struct hpart *)0)->dir)
		return -PARLEY_EINVAL;
	struct hpart *h = calloc(1, sizeof *h);
	if (!h)
		return -PARLEY_ENOMEM;
	h->io = io;
	snprintf(h->dir, sizeof h->dir, "%s", dir);
	h->o = *o;
	if (!h->o.level)
		h->o.level = DICT_DEFAULT_LEVEL;
	if (!h->o.flush_level)
		h->o.flush_level = DICT_FLUSH_LEVEL;
	if (!h->o.dict_bytes)
		h->o.dict_bytes = DICT_DEFAULT_BYTES;
	if (h->o.retrain.degrade_factor <= 0)
		h->o.retrain.degrade_factor = 1.15;
	if (!h->o.retrain.min_recent_raw)
		h->o.retrain.min_recent_raw = 8u << 20;
	int rc = hman_load(io, dir, &h->man);
	if (rc == -PARLEY_ENOTFOUND) {
		hman_init(&h->man, o->partition);
		rc = 0;
	}
	if (rc)
		goto fail;
	/* dictionaries: the current one and every one a live segment names */
	for (size_t i = 0; i <= h->man.nsegs && !rc; i++) {
		uint64_t id = i < h->man.nsegs ? h->man.segs[i].dict_id : h->man.dict_id;
		if (!id || find_dict(h->dicts, h->ndicts, id))
			continue;
		struct pdict *d;
		rc = dict_load(io, dir, id, h->o.level, &d);
		if (rc) {
			PLOG_E("hpart", "dictionary missing or corrupt", "partition=%u dir=%s id=%016" PRIx64 " err=%s",
			       o->partition, dir, id, parley_errname(rc));
			rc = -PARLEY_ECORRUPT;
			break;
		}
		rc = add_dict(h, d);
		if (rc)
			dict_free(d);
	}
	for (size_t i = 0; i < h->man.nsegs && !rc; i++) {
		struct seg_reader *r;
		rc = open_seg(h, h->man.segs[i].id, &r);
		if (rc) {
			if (rc == -ENOENT || rc == -PARLEY_ENOTFOUND)
				rc = -PARLEY_ECORRUPT;
			break;
		}
		rc = add_seg(h, h->man.segs[i].id, r);
		if (rc)
			seg_close(r);
	}
	if (rc)
		goto fail;
	if (!h->o.read_only) {
		rc = hman_cleanup(io, dir, &h->man);
		if (rc < 0)
			goto fail;
	}
	*out = h;
	return 0;
fail:
	hpart_close(h);
	return rc;
}

const struct hman *hpart_manifest(const struct hpart *h)
{
	return &h->man;
}

size_t hpart_segments(const struct hpart *h, struct hpart_seg_view *out,
		      size_t cap)
{
	size_t n = PARLEY_MIN(cap, h->nsegs);
	for (size_t i = 0; i < n; i++) {
		out[i].id = h->segs[i].id;
		seg_get_info(h->segs[i].r, &out[i].info);
		out[i].r = h->segs[i].r;
	}
	return h->nsegs;
}

/* ---- reads ------------------------------------------------------------------------------ */

int hpart_read(struct hpart *h, const struct history_read_req *q,
	       struct pe_entry *out, struct history_read_res *res,
	       struct history_hold **hold)
{
	struct history_read_req r = *q;
	const struct hman_stream *m = hman_stream(&h->man, q->key, q->klen);
	if (m) {
		r.deleted_through = PARLEY_MAX(r.deleted_through, m->deleted_through);
		r.first_retained = PARLEY_MAX(r.first_retained, m->first_retained);
	}
	for (size_t i = 0; i < h->nsegs; i++)
		h->rv[i] = h->segs[i].r;
	return history_read(h->rv, h->nsegs, &r, out, res, hold);
}

struct hpart_view {
	uint64_t deleted_through, first_retained; /* the stream's marks */
	size_t n;
	struct seg_reader *r[]; /* each holds a reference (seg_ref) */
};

int hpart_view_get(struct hpart *h, const void *key, size_t klen,
		   struct hpart_view **out)
{
	*out = NULL;
	struct hpart_view *v = malloc(sizeof *v + h->nsegs * sizeof v->r[0] + 1);
	if (!v)
		return -PARLEY_ENOMEM;
	v->n = 0;
	v->deleted_through = v->first_retained = 0;
	const struct hman_stream *m = hman_stream(&h->man, key, klen);
	if (m) {
		v->deleted_through = m->deleted_through;
		v->first_retained = m->first_retained;
	}
	for (size_t i = 0; i < h->nsegs; i++)
		if (seg_may_contain(h->segs[i].r, key, klen))
			v->r[v->n++] = seg_ref(h->segs[i].r);
	*out = v;
	return 0;
}

int hpart_view_read(struct hpart_view *v, const struct history_read_req *q,
		    struct pe_entry *out, struct history_read_res *res,
		    struct history_hold **hold)
{
	struct history_read_req r = *q;
	r.deleted_through = PARLEY_MAX(r.deleted_through, v->deleted_through);
	r.first_retained = PARLEY_MAX(r.first_retained, v->first_retained);
	return history_read(v->r, v->n, &r, out, res, hold);
}

void hpart_view_free(struct hpart_view *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++)
		seg_close(v->r[i]);
	free(v);
}

int hpart_stream_bounds(struct hpart *h, const void *key, size_t klen,
			uint64_t *first_visible, uint64_t *last)
{
	for (size_t i = 0; i < h->nsegs; i++)
		h->rv[i] = h->segs[i].r;
	uint64_t f, l, c;
	int rc = history_stream_bounds(h->rv, h->nsegs, key, klen, &f, &l, &c);
	if (rc)
		return rc;
	const struct hman_stream *m = hman_stream(&h->man, key, klen);
	if (m) {
		if (m->deleted_through >= l)
			return -PARLEY_ENOTFOUND;
		f = PARLEY_MAX(f, m->deleted_through + 1);
		f = PARLEY_MAX(f, m->first_retained);
	}
	if (f > l)
		return -PARLEY_ENOTFOUND;
	*first_visible = f;
	*last = l;
	return 0;
}

int hpart_stream_meta(struct hpart *h, const void *key, size_t klen,
		      uint64_t *first_visible, uint64_t *last_seq,
		      uint64_t *last_ts)
{
	bool any = false;
	uint64_t f = 0, l = 0, t = 0;
	for (size_t i = 0; i < h->nsegs; i++) {
		struct seg_stream_info si;
		if (seg_stream_info(h->segs[i].r, key, klen, &si) != 0)
			continue;
		if (!any || si.first_seq < f)
			f = si.first_seq;
		if (!any || si.last_seq > l) {
			l = si.last_seq;
			t = si.last_ts;
		}
		any = true;
	}
	if (!any)
		return -PARLEY_ENOTFOUND;
	const struct hman_stream *m = hman_stream(&h->man, key, klen);
	if (m) {
		if (m->deleted_through != UINT64_MAX)
			f = PARLEY_MAX(f, m->deleted_through + 1);
		else
			f = l + 1;
		f = PARLEY_MAX(f, m->first_retained);
	}
	*first_visible = PARLEY_MIN(f, l + 1);
	*last_seq = l;
	*last_ts = t;
	return 0;
}

/* Records are copied with their keys: a reader's idempotency section
 * lives in the block cache and may be evicted once seg_idem_foreach
 * returns. keys holds the key bytes, koff[i] where v[i]'s key starts. */
struct idem_acc {
	struct seg_idem *v;
	size_t *koff;
	size_t n, cap;
	uint8_t *keys;
	size_t klen, kcap;
	uint64_t min_ts;
};

static int idem_acc_add(void *arg, const struct seg_idem *rec)
{
	struct idem_acc *a = arg;
	if (rec->ts < a->min_ts)
		return 0;
	if (a->n == a->cap) {
		size_t nc = a->cap ? a->cap * 2 : 256;
		struct seg_idem *p = realloc(a->v, nc * sizeof *p);
		if (!p)
			return -PARLEY_ENOMEM;
		a->v = p;
		size_t *o = realloc(a->koff, nc * sizeof *o);
		if (!o)
			return -PARLEY_ENOMEM;
		a->koff = o;
		a->cap = nc;
	}
	if (a->kcap - a->klen < rec->klen) {
		size_t nc = a->kcap ? a->kcap * 2 : 4096;
		while (nc - a->klen < rec->klen)
			nc *= 2;
		uint8_t *k = realloc(a->keys, nc);
		if (!k)
			return -PARLEY_ENOMEM;
		a->keys = k;
		a->kcap = nc;
	}
	memcpy(a->keys + a->klen, rec->key, rec->klen);
	a->koff[a->n] = a->klen;
	a->klen += rec->klen;
	a->v[a->n++] = *rec;
	return 0;
}

static int idem_ts_cmp(const void *x, const void *y)
{
	const struct seg_idem *a = x, *b = y;
	if (a->ts != b->ts)
		return a->ts < b->ts ? -1 : 1;
	int c = memcmp(a->key, b->key, PARLEY_MIN(a->klen, b->klen));
	if (!c)
		c = a->klen < b->klen ? -1 : a->klen > b->klen;
	if (!c)
		c = memcmp(a->producer, b->producer, PE_PRODUCER_LEN);
	if (!c)
		c = a->seq < b->seq ? -1 : a->seq > b->seq;
	return c;
}

int hpart_idem_load(struct hpart *h, uint64_t min_ts,
		    int (*cb)(void *arg, const struct seg_idem *rec), void *arg)
{
	struct idem_acc a = { .min_ts = min_ts };
	int rc = 0;
	for (size_t i = 0; i < h->nsegs && !rc; i++) {
		struct seg_info si;
		seg_get_info(h->segs[i].r, &si);
		if (si.max_ts < min_ts || !si.idem_records)
			continue;
		rc = seg_idem_foreach(h->segs[i].r, idem_acc_add, &a);
	}
	for (size_t i = 0; i < a.n && !rc; i++)
		a.v[i].key = a.keys + a.koff[i];
	if (!rc && a.n)
		qsort(a.v, a.n, sizeof *a.v, idem_ts_cmp);
	for (size_t i = 0; i < a.n && !rc; i++)
		if (i == 0 || idem_ts_cmp(&a.v[i - 1], &a.v[i]) != 0)
			rc = cb(arg, &a.v[i]);
	free(a.v);
	free(a.koff);
	free(a.keys);
	return rc;
}

int hpart_mark_deleted(struct hpart *h, const void *key, size_t klen,
		       uint64_t through)
{
	return hman_set_deleted(&h->man, key, klen, through);
}

int hpart_delete_through(struct hpart *h, const void *key, size_t klen,
			 uint64_t through)
{
	if (h->o.read_only)
		return -PARLEY_EPERM;
	struct hman n;
	int rc = man_copy(&n, &h->man);
	if (rc)
		return rc;
	return man_commit(h, &n, hman_set_deleted(&n, key, klen, through));
}

int hpart_set_flushed(struct hpart *h, uint64_t index)
{
	if (h->o.read_only)
		return -PARLEY_EPERM;
	if (index <= h->man.flushed_index)
		return 0;
	struct hman n;
	int rc = man_copy(&n, &h->man);
	if (rc)
		return rc;
	n.flushed_index = index;
	return man_commit(h, &n, 0);
}

/* ---- flush --------------------------------------------------------------------------------- */

struct hpart_fjob {
	struct pio *io;
	char dir[768];
	uint64_t seg_id;
	uint64_t flushed_index;
	const struct pdict *cur;
	bool want_train;
	size_t dict_bytes;
	int level;              /* a dictionary trained here */
	int write_level;        /* the blocks written (flush_level) */
	uint32_t block_bytes;
	struct pdict *new_dict;
	bool written;
	struct seg_write_info info;
	/* for the reader opened by hpart_flush_store */
	uint32_t partition;
	struct bcache *cache;
	uint64_t cache_ns;
	struct seg_reader *reader;
	int open_rc;
};

int hpart_flush_begin(struct hpart *h, uint64_t flushed_index,
		      struct hpart_fjob **out)
{
	if (h->o.read_only)
		return -PARLEY_EPERM;
	if (h->flush_busy)
		return -PARLEY_EAGAIN;
	struct hpart_fjob *j = calloc(1, sizeof *j);
	if (!j)
		return -PARLEY_ENOMEM;
	j->io = h->io;
	memcpy(j->dir, h->dir, sizeof j->dir);
	j->seg_id = hman_next_seg_id(&h->man);
	j->flushed_index = flushed_index;
	j->cur = h->man.dict_id ? find_dict(h->dicts, h->ndicts, h->man.dict_id) : NULL;
	struct dict_health hl = {
		.have_dict = j->cur != NULL,
		.baseline_ratio = h->man.dict_ratio_ppm / 1e6,
		.recent_raw = h->recent_raw,
		.recent_comp = h->recent_comp,
		/* availability is only known while running: assume enough, the
		 * trainer refuses (-PARLEY_EAGAIN) when there is not */
		.samples_available = UINT64_MAX,
		.sample_bytes_available = UINT64_MAX,
	};
	j->want_train = dict_should_retrain(&hl, &h->o.retrain);
	j->dict_bytes = h->o.dict_bytes;
	j->level = h->o.level;
	j->write_level = h->o.flush_level;
	j->block_bytes = h->o.block_bytes;
	j->partition = h->o.partition;
	j->cache = h->o.cache;
	j->cache_ns = hp_cache_ns(h);
	h->flush_busy = true;
	*out = j;
	return 0;
}

/* Bounded sample reservoir: keeps every stride-th payload; when the byte
 * bound is reached, drops every other kept sample and doubles the stride,
 * so the samples stay spread over the whole flush. */
struct reservoir {
	struct dict_sample *s;
	uint8_t **bufs;
	size_t n, cap, bytes;
	uint64_t stride, seen;
};

static void res_free(struct reservoir *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->bufs[i]);
	free(r->bufs);
	free(r->s);
}

static int res_add(struct reservoir *r, const uint8_t *p, size_t len)
{
	if (r->seen++ % r->stride)
		return 0;
	len = PARLEY_MIN(len, (size_t)DICT_SAMPLE_MAX_LEN);
	if (len == 0)
		return 0;
	while (r->bytes + len > DICT_MAX_SAMPLE_BYTES) {
		size_t w = 0;
		r->bytes = 0;
		for (size_t i = 0; i < r->n; i++) {
			if (i % 2) {
				free(r->bufs[i]);
				continue;
			}
			r->bufs[w] = r->bufs[i];
			r->s[w] = r->s[i];
			r->bytes += r->s[w].len;
			w++;
		}
		r->n = w;
		r->stride *= 2;
	}
	if (r->n == r->cap) {
		size_t nc = r->cap ? r->cap * 2 : 1024;
		struct dict_sample *s = realloc(r->s, nc * sizeof *s);
		if (s)
			r->s = s;
		uint8_t **b = realloc(r->bufs, nc * sizeof *b);
		if (b)
			r->bufs = b;
		if (!s || !b)
			return -PARLEY_ENOMEM;
		r->cap = nc;
	}
	uint8_t *c = malloc(len);
	if (!c)
		return -PARLEY_ENOMEM;
	memcpy(c, p, len);
	r->bufs[r->n] = c;
	r->s[r->n] = (struct dict_sample){ c, len };
	r->n++;
	r->bytes += len;
	return 0;
}

int hpart_flush_run(struct hpart_fjob *j, const struct hpart_src *src)
{
	const uint8_t *key;
	size_t klen;
	struct pe_entry e;
	int rc = 0;
	if (j->want_train) {
		struct reservoir rs = { .stride = 1 };
		while (!rc && (rc = src->next(src->arg, &key, &klen, &e)) == 1)
			rc = res_add(&rs, e.payload, e.len);
		if (!rc) {
			rc = dict_train(rs.s, rs.n, j->dict_bytes, j->level, &j->new_dict);
			if (rc == -PARLEY_EAGAIN)
				rc = 0; /* too few samples: keep the current dictionary */
			else if (!rc)
				rc = dict_store(j->io, j->dir, j->new_dict);
		}
		res_free(&rs);
		if (!rc)
			rc = src->rewind(src->arg);
		if (rc)
			return rc;
	}
	struct seg_write_opts wo = {
		.block_bytes = j->block_bytes, .level = j->write_level,
		.dict = j->new_dict ? j->new_dict : j->cur,
	};
	struct seg_writer *w;
	rc = seg_writer_new(j->io, j->dir, j->seg_id, &wo, &w);
	if (rc)
		return rc;
	while ((rc = src->next(src->arg, &key, &klen, &e)) == 1) {
		rc = seg_writer_add(w, key, klen, &e);
		if (rc)
			break;
	}
	if (rc) {
		seg_writer_abort(w);
		return rc;
	}
	rc = seg_writer_finish(w, &j->info);
	if (!rc)
		j->written = true;
	return rc;
}

void hpart_flush_abandon(struct hpart *h, struct hpart_fjob *j)
{
	if (j->reader)
		seg_close(j->reader);
	if (j->written)
		(void)seg_remove(j->io, j->dir, j->seg_id);
	if (j->new_dict) {
		if (!find_dict(h->dicts, h->ndicts, j->new_dict->id))
			(void)dict_remove(j->io, j->dir, j->new_dict->id);
		dict_free(j->new_dict);
	}
	free(j);
	h->flush_busy = false;
}

/* The one-call commits remove retired dictionaries at once, as before
 * the three-step commits existed. */
static void dgone_remove(struct hpart *h)
{
	uint64_t *ids;
	size_t n = hpart_take_dict_removals(h, &ids);
	(void)hpart_remove_dicts(h->io, h->dir, ids, n);
	free(ids);
}

/* What changed in h's manifest in memory since n was prepared from it
 * (the owner serialises every store behind the one in flight, so only
 * these can have): deletion and retention marks (they only grow: merge by
 * max) and segment ids handed to jobs begun meanwhile. Out of memory here
 * would leave memory and disk disagreeing: crash rather (recovery is exact
 * from the stored manifest and the WAL). */
static void man_merge(struct hpart *h, struct hman *n)
{
	for (size_t i = 0; i < h->man.nstreams; i++) {
		const struct hman_stream *m = &h->man.streams[i];
		if (m->deleted_through)
			PARLEY_ASSERT(hman_set_deleted(n, m->key, m->klen,
						       m->deleted_through) == 0);
		if (m->first_retained)
			PARLEY_ASSERT(hman_set_retained(n, m->key, m->klen,
							m->first_retained) == 0);
	}
	n->next_seg_id = PARLEY_MAX(n->next_seg_id, h->man.next_seg_id);
	n->flushed_index = PARLEY_MAX(n->flushed_index, h->man.flushed_index);
}

int hpart_store(const struct hpart *h, struct hman *n)
{
	return hman_store(h->io, h->dir, n);
}

int hpart_flushed_prepare(struct hpart *h, uint64_t index, struct hman **out)
{
	*out = NULL;
	if (h->o.read_only)
		return -PARLEY_EPERM;
	struct hman *n;
	int rc = man_dup(&h->man, &n);
	if (rc)
		return rc;
	n->flushed_index = PARLEY_MAX(n->flushed_index, index);
	*out = n;
	return 0;
}

void hpart_flushed_install(struct hpart *h, struct hman *n)
{
	man_merge(h, n);
	hman_free(&h->man);
	h->man = *n;
	free(n);
}

int hpart_flush_prepare(struct hpart *h, struct hpart_fjob *j,
			struct hman **out)
{
	*out = NULL;
	if (!j->written)
		return -PARLEY_EINVAL;
	struct hman *n;
	int rc = man_dup(&h->man, &n);
	if (rc)
		return rc;
	const struct pdict *used = j->new_dict ? j->new_dict : j->cur;
	struct hman_seg s = { j->seg_id, j->info.file_bytes, used ? used->id : 0,
			      j->info.entries };
	double ratio = j->info.raw_block_bytes
			       ? (double)j->info.block_bytes / (double)j->info.raw_block_bytes
			       : 1.0;
	rc = hman_add_seg(n, &s);
	if (rc) {
		hpart_man_free(n);
		return rc;
	}
	n->flushed_index = PARLEY_MAX(n->flushed_index, j->flushed_index);
	if (j->new_dict) {
		n->dict_id = j->new_dict->id;
		n->dict_ratio_ppm = (uint32_t)(ratio * 1e6);
	}
	*out = n;
	return 0;
}

/* The new segment's dictionary, for its reader opened off the owner
 * thread: the job's own (new, or the current one, kept alive while the
 * job is in flight: invariant 3). */
static const struct pdict *fj_dict(void *arg, uint64_t id)
{
	const struct hpart_fjob *j = arg;
	if (j->new_dict && j->new_dict->id == id)
		return j->new_dict;
	return j->cur && j->cur->id == id ? j->cur : NULL;
}

/* The reader of segment seg_id, just made live by a manifest store (a
 * flush's or a compaction's, on the worker that stored it). An error is
 * logged and returned; the store itself stands. */
static int stored_seg_open(struct pio *io, const char *dir, uint64_t seg_id,
			   const struct seg_open_opts *so, uint32_t partition,
			   struct seg_reader **out)
{
	char name[64], err[SEG_ERR_LEN];
	seg_file_name(name, sizeof name, seg_id);
	int rc = seg_open(io, dir, name, so, out, err, sizeof err);
	if (rc)
		PLOG_E("hpart", "live segment unreadable", "partition=%u %s err=%s",
		       partition, err, parley_errname(rc));
	return rc;
}

int hpart_flush_store(struct hpart_fjob *j, struct hman *n)
{
	int rc = hman_store(j->io, j->dir, n);
	if (rc)
		return rc;
	/* stored: the new segment's reader (open + footer and index reads)
	 * is made here too; install only links it in */
	struct seg_open_opts so = { .cache = j->cache,
				    .dict_lookup = fj_dict, .dict_arg = j,
				    .cache_ns = j->cache_ns };
	j->open_rc = stored_seg_open(j->io, j->dir, j->seg_id, &so,
				     j->partition, &j->reader);
	return 0;
}

int hpart_flush_install(struct hpart *h, struct hpart_fjob *j,
			struct hman *n, struct hpart_flush_result *res)
{
	man_merge(h, n);
	const struct pdict *used = j->new_dict ? j->new_dict : j->cur;
	uint64_t used_id = used ? used->id : 0;
	/* committed: from here on only memory changes */
	hman_free(&h->man);
	h->man = *n;
	free(n);
	if (j->new_dict) {
		struct pdict *have = find_dict(h->dicts, h->ndicts, j->new_dict->id);
		if (have || add_dict(h, j->new_dict) != 0) {
			/* same bytes as a loaded one: the reader uses that */
			if (j->reader && have)
				seg_set_dict(j->reader, have);
			if (!have && j->reader) {
				/* no memory to keep it: nor the reader using it */
				seg_close(j->reader);
				j->reader = NULL;
				j->open_rc = -PARLEY_ENOMEM;
			}
			dict_free(j->new_dict);
		}
		h->recent_raw = h->recent_comp = 0;
	} else if (used) {
		h->recent_raw += j->info.raw_block_bytes;
		h->recent_comp += j->info.block_bytes;
	}
	bool trained = j->new_dict != NULL;
	j->new_dict = NULL;
	h->flush_busy = false;
	int rc = j->open_rc;
	if (rc && j->reader) {
		seg_close(j->reader);
		j->reader = NULL;
	}
	if (!rc && (rc = add_seg(h, j->seg_id, j->reader)) != 0)
		seg_close(j->reader);
	if (res) {
		res->seg = j->info;
		res->trained = trained;
		res->dict_id = used_id;
		res->flushed_index = h->man.flushed_index;
	}
	free(j);
	gc_dicts(h);
	/* A sealed, verified-at-write segment that cannot be opened right
	 * after its commit means the disk lies: report it, the caller fails
	 * the partition. */
	return rc ? -PARLEY_ECORRUPT : 0;
}

int hpart_flush_commit(struct hpart *h, struct hpart_fjob *j,
		       struct hpart_flush_result *res)
{
	struct hman *n;
	int rc = hpart_flush_prepare(h, j, &n);
	if (rc)
		return rc;
	rc = hpart_flush_store(j, n);
	if (rc) {
		hpart_man_free(n);
		return rc;
	}
	rc = hpart_flush_install(h, j, n, res);
	dgone_remove(h);
	return rc;
}

size_t hpart_take_dict_removals(struct hpart *h, uint64_t **ids)
{
	size_t n = h->ndgone;
	*ids = h->dgone;
	h->dgone = NULL;
	h->ndgone = h->capdgone = 0;
	return n;
}

int hpart_remove_dicts(struct pio *io, const char *dir, const uint64_t *ids,
		       size_t n)
{
	int first = 0;
	for (size_t i = 0; i < n; i++) {
		int rc = dict_remove(io, dir, ids[i]);
		if (rc && rc != -PARLEY_ENOTFOUND) {
			PLOG_W("hpart", "retired dictionary not removed",
			       "id=%016" PRIx64 " err=%s", ids[i], parley_errname(rc));
			if (!first)
				first = rc;
		}
	}
	return first;
}

/* ---- compaction -------------------------------------------------------------------------- */

struct hpart_cjob {
	struct pio *io;
	char dir[768];
	uint64_t out_id;
	uint64_t *in_ids;
	size_t nin;
	struct pdict **dicts; /* snapshot of pointers (kept alive: invariant 3) */
	size_t ndicts;
	const struct pdict *cur;
	struct hman_stream *marks; /* snapshot, sorted */
	size_t nmarks;
	const struct retention_policy *retention;
	int (*filter)(void *arg, const void *key, size_t klen,
		      const struct pe_entry *e, uint8_t *out, size_t cap);
	void *filter_arg;
	struct hpart_compact_opts co;
	uint64_t idem_min_ts;
	uint32_t block_bytes;
	int level;
	struct throttle th;
	/* results */
	bool ran;
	bool keep_inputs; /* nothing survived but idempotency records would be lost */
	struct compact_stats st;
	struct hman_stream *newmarks;
	size_t nnew, capnew;
	int err;
	/* the output's reader, opened by hpart_compact_store */
	uint32_t partition;
	struct bcache *cache;
	uint64_t cache_ns;
	struct seg_reader *reader;
	int open_rc;
};

static const struct pdict *cj_dict(void *arg, uint64_t id)
{
	struct hpart_cjob *j = arg;
	return find_dict(j->dicts, j->ndicts, id);
}

int hpart_compact_begin(struct hpart *h, const struct hpart_compact_opts *o,
			struct hpart_cjob **out)
{
	if (h->o.read_only)
		return -PARLEY_EPERM;
	if (h->compact_busy || h->nsegs == 0)
		return -PARLEY_EAGAIN;
	size_t *idx = calloc(h->nsegs, sizeof *idx);
	struct compact_seg_desc *d = calloc(h->nsegs, sizeof *d);
	struct hpart_cjob *j = calloc(1, sizeof *j);
	int rc = -PARLEY_ENOMEM;
	if (!idx || !d || !j)
		goto fail;
	size_t n;
	if (o->all) {
		n = h->nsegs;
		for (size_t i = 0; i < n; i++)
			idx[i] = i;
	} else {
		for (size_t i = 0; i < h->nsegs; i++) {
			struct seg_info si;
			seg_get_info(h->segs[i].r, &si);
			d[i] = (struct compact_seg_desc){ h->segs[i].id, si.file_bytes };
		}
		n = compact_pick(d, h->nsegs, &h->o.tiers, idx, h->nsegs);
	}
	if (n == 0) {
		rc = -PARLEY_EAGAIN;
		goto fail;
	}
	j->in_ids = calloc(n, sizeof *j->in_ids);
	j->dicts = calloc(h->ndicts ? h->ndicts : 1, sizeof *j->dicts);
	j->marks = calloc(h->man.nstreams ? h->man.nstreams : 1, sizeof *j->marks);
	if (!j->in_ids || !j->dicts || !j->marks)
		goto fail;
	for (size_t i = 0; i < n; i++)
		j->in_ids[i] = h->segs[idx[i]].id;
	j->nin = n;
	if (h->ndicts) /* memcpy from NULL is undefined even for 0 bytes */
		memcpy(j->dicts, h->dicts, h->ndicts * sizeof *j->dicts);
	j->ndicts = h->ndicts;
	if (h->man.nstreams)
		memcpy(j->marks, h->man.streams, h->man.nstreams * sizeof *j->marks);
	j->nmarks = h->man.nstreams;
	j->cur = h->man.dict_id ? find_dict(h->dicts, h->ndicts, h->man.dict_id) : NULL;
	j->io = h->io;
	memcpy(j->dir, h->dir, sizeof j->dir);
	j->out_id = hman_next_seg_id(&h->man);
	j->partition = h->o.partition;
	j->cache = h->o.cache;
	j->cache_ns = hp_cache_ns(h);
	j->retention = h->o.retention;
	j->filter = h->o.filter;
	j->filter_arg = h->o.filter_arg;
	j->co = *o;
	j->block_bytes = h->o.block_bytes;
	j->level = h->o.level;
	uint64_t win = h->o.idem_window_ms ? h->o.idem_window_ms : 7ull * 86400000;
	uint64_t inow = o->idem_now_ms ? o->idem_now_ms : o->now_ms;
	j->idem_min_ts = inow > win ? inow - win : 0;
	free(idx);
	free(d);
	h->compact_busy = true;
	*out = j;
	return 0;
fail:
	if (j) {
		free(j->in_ids);
		free(j->dicts);
		free(j->marks);
	}
	free(j);
	free(idx);
	free(d);
	return rc;
}

static int cj_state(void *arg, const uint8_t *key, size_t klen,
		    struct compact_stream_state *out)
{
	struct hpart_cjob *j = arg;
	size_t lo = 0, hi = j->nmarks;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct hman_stream *s = &j->marks[mid];
		int c = memcmp(s->key, key, PARLEY_MIN((size_t)s->klen, klen));
		if (!c)
			c = s->klen < klen ? -1 : s->klen > klen;
		if (!c) {
			out->deleted_through = s->deleted_through;
			/* entries below first_retained are already invisible */
			if (s->first_retained > 1)
				out->deleted_through = PARLEY_MAX(out->deleted_through,
								  s->first_retained - 1);
			return 0;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

static void cj_stream(void *arg, const uint8_t *key, size_t klen,
		      const struct compact_stream_result *res)
{
	struct hpart_cjob *j = arg;
	if (!res->dropped_through || j->err)
		return;
	if (j->nnew == j->capnew) {
		size_t nc = j->capnew ? j->capnew * 2 : 64;
		struct hman_stream *p = realloc(j->newmarks, nc * sizeof *p);
		if (!p) {
			j->err = -PARLEY_ENOMEM;
			return;
		}
		j->newmarks = p;
		j->capnew = nc;
	}
	struct hman_stream *s = &j->newmarks[j->nnew++];
	memset(s, 0, sizeof *s);
	memcpy(s->key, key, klen);
	s->klen = (uint8_t)klen;
	s->first_retained = res->dropped_through + 1;
}

static void cj_pace(void *arg, uint64_t bytes)
{
	struct hpart_cjob *j = arg;
	uint64_t now = j->co.now_ns ? j->co.now_ns(j->co.sleep_arg) : parley_mono_ns();
	uint64_t wait = throttle_charge(&j->th, bytes, now);
	if (wait && j->co.sleep_ns)
		j->co.sleep_ns(j->co.sleep_arg, wait);
}

int hpart_compact_run(struct hpart_cjob *j, struct compact_stats *st)
{
	struct seg_reader **in = calloc(j->nin, sizeof *in);
	if (!in)
		return -PARLEY_ENOMEM;
	int rc = 0;
	struct seg_open_opts so = { .dict_lookup = cj_dict, .dict_arg = j };
	for (size_t i = 0; i < j->nin && !rc; i++) {
		char name[64], err[SEG_ERR_LEN];
		seg_file_name(name, sizeof name, j->in_ids[i]);
		rc = seg_open(j->io, j->dir, name, &so, &in[i], err, sizeof err);
		if (rc)
			PLOG_E("hpart", "compaction input unreadable", "%s", err);
	}
	uint64_t now = j->co.now_ns ? j->co.now_ns(j->co.sleep_arg) : parley_mono_ns();
	/* burst: one pacing chunk goes through without waiting */
	throttle_init(&j->th, j->co.rate_bytes_per_s, COMPACT_PACE_CHUNK, now);
	if (!rc) {
		struct compact_opts o = {
			.io = j->io, .dir = j->dir, .out_seg_id = j->out_id,
			.wopts = { .block_bytes = j->block_bytes, .level = j->level,
				   .dict = j->cur },
			.retention = j->retention, .now_ms = j->co.now_ms,
			.state = cj_state, .state_arg = j,
			.on_stream = cj_stream, .stream_arg = j,
			.pace = j->co.rate_bytes_per_s ? cj_pace : NULL, .pace_arg = j,
			.idem_min_ts = j->idem_min_ts,
			.filter = j->filter, .filter_arg = j->filter_arg,
		};
		rc = compact_run(in, j->nin, &o, &j->st);
	}
	/* A merge that keeps no entry writes no file, and the inputs'
	 * idempotency records inside the window would go with them (a late
	 * retry of a deleted message would be appended again): keep the
	 * inputs instead — their entries stay hidden by the marks — until
	 * the records age out of the window. */
	for (size_t i = 0; i < j->nin && !rc && !j->st.output; i++) {
		struct seg_info si;
		seg_get_info(in[i], &si);
		if (si.idem_records && si.max_ts >= j->idem_min_ts)
			j->keep_inputs = true;
	}
	for (size_t i = 0; i < j->nin; i++)
		seg_close(in[i]);
	free(in);
	if (!rc && j->err) {
		if (j->st.output)
			(void)seg_remove(j->io, j->dir, j->out_id);
		rc = j->err;
	}
	if (!rc) {
		j->ran = true;
		if (st)
			*st = j->st;
	}
	return rc;
}

static void cjob_free(struct hpart_cjob *j)
{
	if (j->reader)
		seg_close(j->reader);
	free(j->in_ids);
	free(j->dicts);
	free(j->marks);
	free(j->newmarks);
	free(j);
}

void hpart_compact_abandon(struct hpart *h, struct hpart_cjob *j)
{
	if (j->ran && j->st.output)
		(void)seg_remove(j->io, j->dir, j->out_id);
	cjob_free(j);
	h->compact_busy = false;
}

static int compact_commit(struct hpart *h, struct hpart_cjob *j,
			  uint64_t **ids, size_t *nids);

int hpart_compact_commit(struct hpart *h, struct hpart_cjob *j)
{
	return compact_commit(h, j, NULL, NULL);
}

int hpart_compact_commit_defer(struct hpart *h, struct hpart_cjob *j,
			       uint64_t **ids, size_t *nids)
{
	*ids = NULL;
	*nids = 0;
	return compact_commit(h, j, ids, nids);
}

int hpart_remove_files(struct pio *io, const char *dir, const uint64_t *ids,
		       size_t n)
{
	int first = 0;
	for (size_t i = 0; i < n; i++) {
		int rc = seg_remove(io, dir, ids[i]);
		if (rc && rc != -PARLEY_ENOTFOUND) {
			PLOG_W("hpart", "compacted input not removed (cleanup retries at open)",
			       "dir=%s id=%016" PRIx64 " err=%s", dir, ids[i],
			       parley_errname(rc));
			if (!first)
				first = rc;
		}
	}
	return first;
}

int hpart_compact_prepare(struct hpart *h, struct hpart_cjob *j,
			  struct hman **out)
{
	*out = NULL;
	if (!j->ran)
		return -PARLEY_EINVAL;
	struct hman *n;
	int rc = man_dup(&h->man, &n);
	if (rc)
		return rc;
	struct hman_seg oseg = { j->out_id, j->st.out.file_bytes,
				 j->cur ? j->cur->id : 0, j->st.out.entries };
	rc = j->keep_inputs ? 0
			    : hman_replace_segs(n, j->in_ids, j->nin,
						j->st.output ? &oseg : NULL);
	for (size_t i = 0; i < j->nnew && !rc; i++)
		rc = hman_set_retained(n, j->newmarks[i].key, j->newmarks[i].klen,
				       j->newmarks[i].first_retained);
	if (rc) {
		hman_free(n);
		free(n);
		return rc;
	}
	*out = n;
	return 0;
}

int hpart_compact_store(struct hpart_cjob *j, struct hman *n)
{
	int rc = hman_store(j->io, j->dir, n);
	if (rc || !j->st.output)
		return rc;
	/* stored: the output's reader (open + footer and index reads) is
	 * made here too, off the owner thread; install links it in */
	struct seg_open_opts so = { .cache = j->cache,
				    .dict_lookup = cj_dict, .dict_arg = j,
				    .cache_ns = j->cache_ns };
	j->open_rc = stored_seg_open(j->io, j->dir, j->out_id, &so,
				     j->partition, &j->reader);
	return 0;
}

void hpart_man_free(struct hman *n)
{
	if (n) {
		hman_free(n);
		free(n);
	}
}

int hpart_compact_install(struct hpart *h, struct hpart_cjob *j,
			  struct hman *n, uint64_t **ids, size_t *nids)
{
	if (ids) {
		*ids = NULL;
		*nids = 0;
	}
	man_merge(h, n);
	hman_free(&h->man);
	h->man = *n;
	free(n);
	h->compact_busy = false;
	/* swap readers: drop the inputs, add the output */
	if (ids && !j->keep_inputs && j->nin) {
		*ids = calloc(j->nin, sizeof **ids);
		if (!*ids)
			ids = NULL; /* no memory: remove them here after all */
	}
	size_t w = 0;
	for (size_t i = 0; i < h->nsegs && j->keep_inputs; i++)
		w++;
	for (size_t i = 0; i < h->nsegs && !j->keep_inputs; i++) {
		bool gone = false;
		for (size_t k = 0; k < j->nin; k++)
			gone |= h->segs[i].id == j->in_ids[k];
		if (!gone) {
			h->segs[w++] = h->segs[i];
			continue;
		}
		/* a read of an older view may still use the reader: it stops
		 * caching first, and lives until that view is freed */
		seg_retire(h->segs[i].r);
		if (h->o.cache)
			bcache_erase_segment(h->o.cache, hp_cache_ns(h) | h->segs[i].id);
		seg_close(h->segs[i].r);
		if (ids) {
			(*ids)[(*nids)++] = h->segs[i].id;
			continue;
		}
		int r2 = seg_remove(h->io, h->dir, h->segs[i].id);
		if (r2)
			PLOG_W("hpart", "compacted input not removed (cleanup retries at open)",
			       "id=%016" PRIx64 " err=%s", h->segs[i].id, parley_errname(r2));
	}
	h->nsegs = w;
	int rc = 0;
	if (j->st.output) {
		rc = j->open_rc;
		if (!rc && !j->reader) /* not stored through hpart_compact_store */
			rc = open_seg(h, j->out_id, &j->reader);
		if (!rc && (rc = add_seg(h, j->out_id, j->reader)) == 0)
			j->reader = NULL; /* h's now */
	}
	cjob_free(j);
	gc_dicts(h);
	return rc ? -PARLEY_ECORRUPT : 0;
}

static int compact_commit(struct hpart *h, struct hpart_cjob *j,
			  uint64_t **ids, size_t *nids)
{
	struct hman *n;
	int rc = hpart_compact_prepare(h, j, &n);
	if (rc)
		return rc;
	rc = hpart_compact_store(j, n);
	if (rc) {
		hpart_man_free(n);
		return rc;
	}
	rc = hpart_compact_install(h, j, n, ids, nids);
	dgone_remove(h);
	return rc;
}

void hpart_abort(struct hpart *h, struct hpart_fjob *fj, struct hpart_cjob *cj)
{
	if (fj) {
		if (fj->reader)
			seg_close(fj->reader);
		dict_free(fj->new_dict);
		free(fj);
	}
	if (cj)
		cjob_free(cj);
	h->flush_busy = h->compact_busy = false;
	h->ndgone = 0; /* a crash removes nothing */
	hpart_close(h);
}
