/*
 * ctl_inspect.c — `parleyctl inspect`: an offline look at a data directory,
 * like a log-dump tool. It opens the directory read-only (nothing is
 * written, not even recovery's bookkeeping), which replays and verifies
 * every WAL checksum and the WAL's high-water mark (acknowledged records
 * that vanished are reported with file, bytes and log indexes), reads and
 * checks every block of every live history segment, then prints a summary
 * first — the verdict, counts, and one line per problem — and detail only
 * on request, or dumps a stream or a segment.
 *
 *   parleyctl inspect --data DIR                 summary + problems
 *   parleyctl inspect --data DIR --partitions    + one line per partition
 *                                                (-v, --verbose: the same)
 *   parleyctl inspect --data DIR --streams       + every stream with seqs
 *   parleyctl inspect --data DIR --segments      + every history segment:
 *                                                entries, blocks, raw vs file
 *                                                bytes, ratio, dictionary id,
 *                                                block check
 *   parleyctl inspect --data DIR --stream KEY [--from N] [--limit N] [--hex]
 *   parleyctl inspect --data DIR --dump-segment P:ID [--limit N] [--hex]
 *
 * Output (stable, one key=value record per line): the first line is
 *   summary verify=ok|FAILED problems=N shards=.. wal_segments=.. ...
 * then one `partition=P state=CORRUPT error="..."` (or `segment=..`) line
 * per problem, then the requested detail.
 *
 * Exit codes (parleyctl.h): 0 all partitions verified, 1 corruption found,
 * 2 usage, 3 cannot open.
 */
#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_engine.h"
#include "parley_engine_hooks.h"
#include "parleyctl.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: parleyctl inspect --data DIR [--partitions|-v] [--streams] "
		"[--segments]\n"
		"       parleyctl inspect --data DIR --stream KEY [--from SEQ] "
		"[--limit N] [--hex]\n"
		"       parleyctl inspect --data DIR --dump-segment PARTITION:ID "
		"[--limit N] [--hex]\n"
		"Opens DIR read-only, replays and verifies every WAL checksum, the\n"
		"WAL high-water mark (acknowledged records that are missing) and\n"
		"every block of every history segment. Prints a summary line\n"
		"(verdict and counts) and one line per problem first; detail per\n"
		"partition, stream or segment only when asked for.\n"
		"exit: 0 verified, 1 corruption found, 2 usage, 3 cannot open\n");
}

struct stream_print {
	FILE *out;
	uint32_t part;
};

static int print_stream(void *arg, const void *key, size_t klen,
			const struct pe_meta *m)
{
	struct stream_print *sp = arg;
	fprintf(sp->out, "  partition=%u stream=%.*s first_seq=%" PRIu64
		" last_seq=%" PRIu64 " last_ts_ms=%" PRIu64 "\n", sp->part,
		(int)klen, (const char *)key, m->first_seq, m->last_seq,
		m->last_ts_ms);
	return 0;
}

static void print_payload(const struct pe_entry *en, bool hex)
{
	if (hex) {
		for (uint32_t i = 0; i < en->len; i++)
			printf("%02x", en->payload[i]);
		return;
	}
	putchar('"');
	for (uint32_t i = 0; i < en->len; i++) {
		unsigned char c = en->payload[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c >= 32 && c < 127)
			putchar(c);
		else
			printf("\\x%02x", c);
	}
	putchar('"');
}

static int dump_stream(struct pe_engine *e, const char *key, uint64_t from,
		       uint64_t limit, bool hex)
{
	uint64_t shown = 0;
	while (shown < limit) {
		struct pe_read_req q = {.key = key, .klen = strlen(key),
					.from = from, .dir = PE_FORWARD,
					.limit = (uint32_t)PARLEY_MIN(limit - shown,
								      PE_MAX_READ)};
		struct pe_entry *es;
		uint32_t n;
		struct pe_read_result meta;
		int rc = pe_read_sync(e, &q, &es, &n, &meta);
		if (rc) {
			fprintf(stderr, "parleyctl inspect: read %s: %s\n", key,
				parley_strerror(rc));
			return rc == -PARLEY_ECORRUPT ? 1 : 3;
		}
		for (uint32_t i = 0; i < n; i++) {
			printf("seq=%" PRIu64 " ts_ms=%" PRIu64 " type=%u flags=%u "
			       "producer=", es[i].seq, es[i].ts_ms, es[i].type,
			       es[i].flags);
			for (unsigned b = 0; b < PE_PRODUCER_LEN; b++)
				printf("%02x", es[i].producer[b]);
			printf(" len=%u payload=", es[i].len);
			print_payload(&es[i], hex);
			putchar('\n');
		}
		shown += n;
		free(es);
		if (n == 0 || meta.end)
			break;
		from += n;
	}
	return 0;
}

struct seg_print {
	bool show;
	FILE *prob, *det; /* problem lines, detail lines */
	uint32_t bad;
	uint64_t raw, file, entries;
};

static int print_segment(void *arg, const struct pe_seg_report *r)
{
	struct seg_print *sp = arg;
	sp->raw += r->raw_payload_bytes;
	sp->file += r->file_bytes;
	sp->entries += r->entries;
	if (r->verify_err) {
		sp->bad++;
		fprintf(sp->prob, "partition=%u segment=%s state=CORRUPT "
			"blocks_ok=%u blocks_bad=%u error=\"%s\"\n", r->partition,
			r->file, r->blocks_ok, r->blocks_bad, r->error);
	}
	if (sp->show)
		fprintf(sp->det, "  partition=%u segment=%s id=%" PRIu64 " entries=%" PRIu64
		       " streams=%u blocks=%u raw_payload_bytes=%" PRIu64
		       " file_bytes=%" PRIu64 " ratio=%.3f dict_id=%016" PRIx64
		       " idem_records=%u min_ts_ms=%" PRIu64 " max_ts_ms=%" PRIu64
		       " verify=%s\n", r->partition, r->file, r->seg_id,
		       r->entries, r->streams, r->blocks, r->raw_payload_bytes,
		       r->file_bytes, r->ratio, r->dict_id, r->idem_records,
		       r->min_ts, r->max_ts,
		       !r->verified ? "skipped" : r->verify_err ? "FAILED" : "ok");
	return 0;
}

struct dump_ctx {
	uint64_t left;
	bool hex;
};

static int dump_entry(void *arg, const void *key, size_t klen,
		      const struct pe_entry *en)
{
	struct dump_ctx *d = arg;
	if (d->left == 0)
		return 1;
	d->left--;
	printf("stream=%.*s seq=%" PRIu64 " ts_ms=%" PRIu64 " type=%u flags=%u "
	       "producer=", (int)klen, (const char *)key, en->seq, en->ts_ms,
	       en->type, en->flags);
	for (unsigned b = 0; b < PE_PRODUCER_LEN; b++)
		printf("%02x", en->producer[b]);
	printf(" len=%u payload=", en->len);
	print_payload(en, d->hex);
	putchar('\n');
	return 0;
}

static int dump_segment(const char *dir, const char *spec, uint64_t limit,
			bool hex)
{
	unsigned part;
	uint64_t id;
	char tail;
	if (sscanf(spec, "%u:%" SCNu64 "%c", &part, &id, &tail) != 2) {
		usage(stderr);
		return 2;
	}
	struct dump_ctx d = {.left = limit, .hex = hex};
	char err[256];
	int rc = pe_history_dump(NULL, dir, part, id, dump_entry, &d, err,
				 sizeof err);
	if (rc == -PARLEY_ECORRUPT) {
		fprintf(stderr, "parleyctl inspect: %s\n", err);
		return 1;
	}
	if (rc) {
		fprintf(stderr, "parleyctl inspect: segment %u:%" PRIu64 ": %s\n",
			part, id, parley_strerror(rc));
		return 3;
	}
	return 0;
}

/* WAL files on disk: shard directories, segment files and their bytes. */
struct wal_files {
	uint32_t shards, segments;
	uint64_t bytes;
	bool mark_missing;
};

static void count_wal(const char *dir, struct wal_files *wf)
{
	char wdir[600];
	snprintf(wdir, sizeof wdir, "%s/wal", dir);
	DIR *d = opendir(wdir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char sd[900];
		snprintf(sd, sizeof sd, "%s/%s", wdir, de->d_name);
		DIR *s = opendir(sd);
		if (!s)
			continue;
		wf->shards++;
		bool mark = false;
		struct dirent *fe;
		while ((fe = readdir(s))) {
			if (!strcmp(fe->d_name, "wal.hwm"))
				mark = true;
			if (strncmp(fe->d_name, "wal-", 4) || strlen(fe->d_name) != 24)
				continue;
			char fp[1200];
			snprintf(fp, sizeof fp, "%s/%s", sd, fe->d_name);
			FILE *f = fopen(fp, "rb");
			if (!f)
				continue;
			if (fseek(f, 0, SEEK_END) == 0 && ftell(f) > 0)
				wf->bytes += (uint64_t)ftell(f);
			fclose(f);
			wf->segments++;
		}
		closedir(s);
		wf->mark_missing |= !mark;
	}
	closedir(d);
}

static void flush_mem(FILE *f, char **buf, size_t *len)
{
	fclose(f);
	if (*len)
		fwrite(*buf, 1, *len, stdout);
	free(*buf);
}

int ctl_inspect_main(int argc, char **argv)
{
	const char *dir = NULL, *stream = NULL, *segspec = NULL;
	bool streams = false, hex = false, segments = false, parts = false;
	uint64_t from = 1, limit = UINT64_MAX;
	static const struct option lo[] = {
		{"data", required_argument, 0, 'd'},
		{"stream", required_argument, 0, 's'},
		{"streams", no_argument, 0, 'S'},
		{"segments", no_argument, 0, 'G'},
		{"partitions", no_argument, 0, 'v'},
		{"verbose", no_argument, 0, 'v'},
		{"dump-segment", required_argument, 0, 'D'},
		{"from", required_argument, 0, 'f'},
		{"limit", required_argument, 0, 'l'},
		{"hex", no_argument, 0, 'x'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 's': stream = optarg; break;
		case 'S': streams = true; break;
		case 'G': segments = true; break;
		case 'v': parts = true; break;
		case 'D': segspec = optarg; break;
		case 'f': from = strtoull(optarg, NULL, 10); break;
		case 'l': limit = strtoull(optarg, NULL, 10); break;
		case 'x': hex = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!dir || optind != argc || (stream && strlen(stream) > PE_MAX_KEY)) {
		usage(stderr);
		return 2;
	}
	parley_log_set_level(PLOG_WARN);
	if (segspec)
		return dump_segment(dir, segspec, limit, hex);
	struct pe_options o = {.dir = dir, .read_only = true};
	struct pe_engine *e;
	int rc = pe_open(&o, &e);
	if (rc) {
		fprintf(stderr, "parleyctl inspect: cannot open %s: %s\n", dir,
			parley_strerror(rc));
		return 3;
	}
	int status = 0;
	if (stream) {
		status = dump_stream(e, stream, from, limit, hex);
		pe_close(e);
		return status;
	}
	/* One pass collects problems and detail; the summary prints first. */
	char *pbuf = NULL, *dbuf = NULL;
	size_t plen = 0, dlen = 0;
	FILE *prob = open_memstream(&pbuf, &plen);
	FILE *det = open_memstream(&dbuf, &dlen);
	if (!prob || !det) {
		fprintf(stderr, "parleyctl inspect: out of memory\n");
		pe_close(e);
		return 3;
	}
	uint32_t np = pe_partition_count(e), bad = 0, with_data = 0;
	uint64_t total_streams = 0, mem_entries = 0, total_segs = 0;
	struct seg_print sp = {.show = segments, .prob = prob, .det = det};
	for (uint32_t p = 0; p < np; p++) {
		struct pe_partition_status st;
		rc = pe_partition_status(e, p, &st);
		if (rc) {
			fclose(prob);
			fclose(det);
			free(pbuf);
			free(dbuf);
			pe_close(e);
			return 3;
		}
		total_streams += st.streams;
		mem_entries += st.entries;
		/* not last_index: every partition's log holds at least the
		 * no-op its Raft group logs when it elects itself */
		with_data += st.streams || st.segments ||
			     st.state == PE_PART_CORRUPT;
		if (st.state == PE_PART_CORRUPT) {
			bad++;
			fprintf(prob, "partition=%u state=CORRUPT error=\"%s\"\n", p,
				st.error);
			if (parts)
				fprintf(det, "partition=%u state=CORRUPT\n", p);
		} else if (parts) {
			fprintf(det, "partition=%u state=ok streams=%" PRIu64
				" entries=%" PRIu64 " log_index=%" PRIu64
				" mem_bytes=%" PRIu64 " flushed_index=%" PRIu64
				" segments=%u segment_bytes=%" PRIu64 "\n", p,
				st.streams, st.entries, st.last_index, st.mem_bytes,
				st.flushed_index, st.segments, st.segment_bytes);
		}
		if (streams && st.state != PE_PART_CORRUPT) {
			struct stream_print spr = {.out = det, .part = p};
			pe_list_streams(e, p, print_stream, &spr);
		}
		if (st.state != PE_PART_CORRUPT) {
			struct pe_hist_report hr = {0};
			uint32_t before = sp.bad;
			rc = pe_history_inspect(NULL, dir, p, true, &hr,
						print_segment, &sp);
			if (rc && sp.bad == before) {
				sp.bad++;
				fprintf(prob, "partition=%u history=CORRUPT "
					"error=\"%s\"\n", p, parley_strerror(rc));
			}
			total_segs += hr.segments;
			if (segments)
				fprintf(det, "  partition=%u history flushed_index=%"
					PRIu64 " generation=%" PRIu64
					" current_dict=%016" PRIx64
					" marked_streams=%u\n", p, hr.flushed_index,
					hr.generation, hr.dict_id, hr.marked_streams);
		}
	}
	struct wal_files wf = {0};
	count_wal(dir, &wf);
	uint32_t problems = bad + sp.bad;
	printf("summary verify=%s problems=%u shards=%u wal_segments=%u "
	       "wal_bytes=%" PRIu64 " partitions=%u partitions_with_data=%u "
	       "corrupt=%u streams=%" PRIu64 " entries=%" PRIu64
	       " memtable_entries=%" PRIu64 " segments=%" PRIu64
	       " segment_entries=%" PRIu64 " corrupt_segments=%u"
	       " raw_payload_bytes=%" PRIu64 " segment_file_bytes=%" PRIu64
	       " ratio=%.3f\n", problems ? "FAILED" : "ok", problems, wf.shards,
	       wf.segments, wf.bytes, np, with_data, bad, total_streams,
	       mem_entries + sp.entries, mem_entries, total_segs, sp.entries,
	       sp.bad, sp.raw, sp.file,
	       sp.raw ? (double)sp.file / (double)sp.raw : 0.0);
	fflush(stdout);
	flush_mem(prob, &pbuf, &plen);
	if (wf.mark_missing)
		printf("note: a WAL directory has no high-water mark (wal.hwm): "
		       "lost acknowledged records there cannot be detected "
		       "until parleyd has opened it once\n");
	flush_mem(det, &dbuf, &dlen);
	pe_close(e);
	return problems ? 1 : 0;
}
