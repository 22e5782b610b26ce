/*
 * inspect.c — offline view of a partition's history segments for
 * `parleyctl inspect`: opens the history read-only on its own and never
 * writes a byte. Not used by a running engine.
 *
 * Threads: the caller's; independent of any open engine.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

static int hist_open_ro(struct pio **io, bool *own, const char *dir,
			uint32_t partition, struct hpart **h)
{
	*own = false;
	if (!*io) {
		*io = pio_uring_new();
		if (!*io)
			return -PARLEY_ENOMEM;
		*own = true;
	}
	char hd[700];
	snprintf(hd, sizeof hd, "%s/hist/%u", dir, partition);
	struct hpart_opts o = {.partition = partition, .read_only = true};
	int rc = hpart_open(*io, hd, &o, h);
	if (rc && *own) {
		pio_free(*io);
		*own = false;
	}
	return rc;
}

int pe_history_inspect(struct pio *io, const char *dir, uint32_t partition,
		       bool verify, struct pe_hist_report *hr,
		       int (*cb)(void *arg, const struct pe_seg_report *r),
		       void *arg)
{
	bool own;
	struct hpart *h;
	int rc = hist_open_ro(&io, &own, dir, partition, &h);
	if (rc)
		return rc;
	const struct hman *m = hpart_manifest(h);
	size_t n = hpart_segments(h, NULL, 0);
	if (hr) {
		*hr = (struct pe_hist_report){
			.flushed_index = m->flushed_index,
			.generation = m->generation, .dict_id = m->dict_id,
			.segments = (uint32_t)n,
			.marked_streams = (uint32_t)m->nstreams};
	}
	struct hpart_seg_view *v = calloc(n ? n : 1, sizeof *v);
	if (!v)
		rc = -PARLEY_ENOMEM;
	else
		hpart_segments(h, v, n);
	int worst = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		struct pe_seg_report sr = {0};
		sr.partition = partition;
		sr.seg_id = v[i].id;
		seg_file_name(sr.file, sizeof sr.file, v[i].id);
		sr.entries = v[i].info.entries;
		sr.streams = v[i].info.streams;
		sr.blocks = v[i].info.blocks;
		sr.raw_payload_bytes = v[i].info.raw_payload_bytes;
		sr.file_bytes = v[i].info.file_bytes;
		sr.ratio = sr.raw_payload_bytes
				   ? (double)sr.file_bytes / (double)sr.raw_payload_bytes
				   : 0.0;
		sr.dict_id = v[i].info.dict_id;
		sr.min_ts = v[i].info.min_ts;
		sr.max_ts = v[i].info.max_ts;
		sr.idem_records = v[i].info.idem_records;
		if (verify) {
			struct seg_verify_report rep;
			memset(&rep, 0, sizeof rep);
			/* the view's reader is ours alone here: hpart is private
			 * to this call */
			sr.verify_err = seg_verify((struct seg_reader *)v[i].r, &rep);
			sr.verified = true;
			sr.blocks_ok = rep.blocks_ok;
			sr.blocks_bad = rep.blocks_bad;
			snprintf(sr.error, sizeof sr.error, "%s", rep.first_error);
			if (sr.verify_err)
				worst = sr.verify_err;
		}
		rc = cb ? cb(arg, &sr) : 0;
		if (rc > 0) {
			rc = 0;
			break; /* the callback says stop */
		}
	}
	free(v);
	hpart_close(h);
	if (own)
		pio_free(io);
	return rc ? rc : worst;
}

int pe_history_dump(struct pio *io, const char *dir, uint32_t partition,
		    uint64_t seg_id,
		    int (*cb)(void *arg, const void *key, size_t klen,
			      const struct pe_entry *e),
		    void *arg, char *err, size_t errcap)
{
	bool own;
	struct hpart *h;
	if (err && errcap)
		err[0] = 0;
	int rc = hist_open_ro(&io, &own, dir, partition, &h);
	if (rc)
		return rc;
	size_t n = hpart_segments(h, NULL, 0);
	struct hpart_seg_view *v = calloc(n ? n : 1, sizeof *v);
	struct seg_reader *r = NULL;
	if (!v) {
		rc = -PARLEY_ENOMEM;
	} else {
		hpart_segments(h, v, n);
		for (size_t i = 0; i < n; i++)
			if (v[i].id == seg_id)
				r = (struct seg_reader *)v[i].r;
		if (!r)
			rc = -PARLEY_ENOTFOUND;
	}
	struct seg_iter *it = NULL;
	if (!rc)
		rc = seg_iter_all(r, &it);
	while (!rc) {
		struct seg_item item;
		int k = seg_iter_next(it, &item);
		if (k <= 0) {
			rc = k;
			break;
		}
		if (cb(arg, item.key, item.klen, &item.e))
			break;
	}
	if (rc == -PARLEY_ECORRUPT && err && errcap && r)
		snprintf(err, errcap, "%s", seg_error(r));
	seg_iter_free(it);
	free(v);
	hpart_close(h);
	if (own)
		pio_free(io);
	return rc;
}
