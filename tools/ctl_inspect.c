/*
 * ctl_inspect.c — `parleyctl inspect`: an offline look at a data directory,
 * like a log-dump tool. It opens the directory read-only (nothing is
 * written, not even recovery's bookkeeping), which replays and verifies
 * every WAL checksum, reads and checks every block of every live history
 * segment, then lists partitions, streams and segments or dumps a stream
 * or a segment.
 *
 *   parleyctl inspect --data DIR                 partitions + verification
 *   parleyctl inspect --data DIR --streams       every stream with seqs
 *   parleyctl inspect --data DIR --segments      every history segment: entries,
 *                                                blocks, raw vs file bytes, ratio,
 *                                                dictionary id, block check
 *   parleyctl inspect --data DIR --stream KEY [--from N] [--limit N] [--hex]
 *   parleyctl inspect --data DIR --dump-segment P:ID [--limit N] [--hex]
 *
 * Exit codes (parleyctl.h): 0 all partitions verified, 1 corruption found,
 * 2 usage, 3 cannot open.
 */
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
		"usage: parleyctl inspect --data DIR [--streams] [--segments]\n"
		"       parleyctl inspect --data DIR --stream KEY [--from SEQ] "
		"[--limit N] [--hex]\n"
		"       parleyctl inspect --data DIR --dump-segment PARTITION:ID "
		"[--limit N] [--hex]\n"
		"Opens DIR read-only, replays and verifies every WAL checksum and\n"
		"every block of every history segment.\n"
		"exit: 0 verified, 1 corruption found, 2 usage, 3 cannot open\n");
}

static int print_stream(void *arg, const void *key, size_t klen,
			const struct pe_meta *m)
{
	uint32_t *part = arg;
	printf("  partition=%u stream=%.*s first_seq=%" PRIu64
	       " last_seq=%" PRIu64 " last_ts_ms=%" PRIu64 "\n",
	       *part, (int)klen, (const char *)key, m->first_seq, m->last_seq,
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
	uint32_t bad;
	uint64_t raw, file;
};

static int print_segment(void *arg, const struct pe_seg_report *r)
{
	struct seg_print *sp = arg;
	sp->raw += r->raw_payload_bytes;
	sp->file += r->file_bytes;
	if (r->verify_err) {
		sp->bad++;
		printf("partition=%u segment=%s state=CORRUPT blocks_ok=%u "
		       "blocks_bad=%u error=\"%s\"\n", r->partition, r->file,
		       r->blocks_ok, r->blocks_bad, r->error);
	}
	if (sp->show)
		printf("  partition=%u segment=%s id=%" PRIu64 " entries=%" PRIu64
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

int ctl_inspect_main(int argc, char **argv)
{
	const char *dir = NULL, *stream = NULL, *segspec = NULL;
	bool streams = false, hex = false, segments = false;
	uint64_t from = 1, limit = UINT64_MAX;
	static const struct option lo[] = {
		{"data", required_argument, 0, 'd'},
		{"stream", required_argument, 0, 's'},
		{"streams", no_argument, 0, 'S'},
		{"segments", no_argument, 0, 'G'},
		{"dump-segment", required_argument, 0, 'D'},
		{"from", required_argument, 0, 'f'},
		{"limit", required_argument, 0, 'l'},
		{"hex", no_argument, 0, 'x'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 's': stream = optarg; break;
		case 'S': streams = true; break;
		case 'G': segments = true; break;
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
	uint32_t np = pe_partition_count(e), bad = 0;
	uint64_t total_streams = 0, total_entries = 0;
	struct seg_print sp = {.show = segments};
	uint64_t total_segs = 0;
	for (uint32_t p = 0; p < np; p++) {
		struct pe_partition_status st;
		rc = pe_partition_status(e, p, &st);
		if (rc) {
			pe_close(e);
			return 3;
		}
		total_streams += st.streams;
		total_entries += st.entries;
		if (st.state == PE_PART_CORRUPT) {
			bad++;
			printf("partition=%u state=CORRUPT error=\"%s\"\n", p,
			       st.error);
		} else {
			printf("partition=%u state=ok streams=%" PRIu64
			       " entries=%" PRIu64 " log_index=%" PRIu64
			       " mem_bytes=%" PRIu64 " flushed_index=%" PRIu64
			       " segments=%u segment_bytes=%" PRIu64 "\n", p,
			       st.streams, st.entries, st.last_index, st.mem_bytes,
			       st.flushed_index, st.segments, st.segment_bytes);
		}
		if (streams && st.state != PE_PART_CORRUPT)
			pe_list_streams(e, p, print_stream, &p);
		if (st.state != PE_PART_CORRUPT) {
			struct pe_hist_report hr = {0};
			uint32_t before = sp.bad;
			rc = pe_history_inspect(NULL, dir, p, true, &hr,
						print_segment, &sp);
			if (rc && sp.bad == before) {
				sp.bad++;
				printf("partition=%u history=CORRUPT error=\"%s\"\n", p,
				       parley_strerror(rc));
			}
			total_segs += hr.segments;
			if (segments)
				printf("  partition=%u history flushed_index=%" PRIu64
				       " generation=%" PRIu64 " current_dict=%016" PRIx64
				       " marked_streams=%u\n", p, hr.flushed_index,
				       hr.generation, hr.dict_id, hr.marked_streams);
		}
	}
	printf("summary partitions=%u corrupt=%u streams=%" PRIu64
	       " entries=%" PRIu64 " segments=%" PRIu64 " corrupt_segments=%u"
	       " raw_payload_bytes=%" PRIu64 " segment_file_bytes=%" PRIu64
	       " ratio=%.3f verify=%s\n", np, bad, total_streams,
	       total_entries, total_segs, sp.bad, sp.raw, sp.file,
	       sp.raw ? (double)sp.file / (double)sp.raw : 0.0,
	       bad || sp.bad ? "FAILED" : "ok");
	pe_close(e);
	return bad || sp.bad ? 1 : 0;
}
