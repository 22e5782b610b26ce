/*
 * ctl_inspect.c — `parleyctl inspect`: an offline look at a data directory,
 * like a log-dump tool. It opens the directory read-only (nothing is
 * written, not even recovery's bookkeeping), which replays and verifies
 * every WAL checksum, then lists partitions and streams or dumps a stream.
 *
 *   parleyctl inspect --data DIR                 partitions + verification
 *   parleyctl inspect --data DIR --streams       every stream with seqs
 *   parleyctl inspect --data DIR --stream KEY [--from N] [--limit N] [--hex]
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
#include "parleyctl.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: parleyctl inspect --data DIR [--streams]\n"
		"       parleyctl inspect --data DIR --stream KEY [--from SEQ] "
		"[--limit N] [--hex]\n"
		"Opens DIR read-only, replays and verifies every WAL checksum.\n"
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

int ctl_inspect_main(int argc, char **argv)
{
	const char *dir = NULL, *stream = NULL;
	bool streams = false, hex = false;
	uint64_t from = 1, limit = UINT64_MAX;
	static const struct option lo[] = {
		{"data", required_argument, 0, 'd'},
		{"stream", required_argument, 0, 's'},
		{"streams", no_argument, 0, 'S'},
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
			       " mem_bytes=%" PRIu64 "\n", p, st.streams,
			       st.entries, st.last_index, st.mem_bytes);
		}
		if (streams && st.state != PE_PART_CORRUPT)
			pe_list_streams(e, p, print_stream, &p);
	}
	printf("summary partitions=%u corrupt=%u streams=%" PRIu64
	       " entries=%" PRIu64 " verify=%s\n", np, bad, total_streams,
	       total_entries, bad ? "FAILED" : "ok");
	pe_close(e);
	return bad ? 1 : 0;
}
