/*
 * history_ratio.c — parley-history-ratio: how small do history segments
 * get on chat-like text? (issue 4; goal: <= 0.35x raw payload bytes)
 *
 * Corpus: every fortune file in a directory (default
 * /usr/share/games/fortunes, Debian's fortunes-min), whitespace-normalised
 * and cut at sentence ends into messages of 20..200 bytes, as chat
 * messages. Stored messages are cut into S conversation streams (default
 * 32) of consecutive messages — a conversation's messages follow each other
 * in the corpus, as sentences of one fortune do — with timestamps 2 s to
 * 5 min apart, type 1, flags 0.
 *
 * Floor, measured in the same run: all stored payloads concatenated and
 * compressed as ONE zstd frame at level 19 (no blocks, no metadata, no
 * random access) — what zstd can do on this text at best; the same with the
 * dictionary as well.
 *
 * Honesty rules:
 *   - HELD OUT: the dictionary is trained on the even-numbered messages
 *     ("recent payloads" of an earlier flush) and the segments store only
 *     the odd-numbered ones, so the dictionary never contains the text it
 *     compresses.
 *   - "file" is the whole segment file (blocks + index + stream directory
 *     + bloom + footer) as stored on disk; the ratio divides it by the raw
 *     payload bytes only. The dictionary file is reported separately: it
 *     is stored once per partition and shared by all its segments.
 *   - producer ids: "zero" (non-idempotent appends) and "random" (16 random
 *     bytes per entry, as idempotent client sends carry) are both shown;
 *     random ids cannot compress and cost 16 B per message.
 *
 * Files are written through the engine's real-disk backend
 * (pio_uring_new) into a fresh directory under --dir (default /tmp) and
 * removed at the end. Every segment is read back and compared entry by
 * entry before its numbers are printed.
 *
 * Read latency (second table): the stored messages repeated 20 times over
 * 200 streams (~14.7k entries), then 20,000 "last 50 of a random stream"
 * reads (seg_read backward, limit 50) timed one by one with the monotonic
 * clock: uncached (every read decompresses its blocks) and through a
 * 64 MiB block cache (warm after the first touch), for 4 KiB and 48 KiB
 * blocks. Reported p50 / p99 / max in microseconds; this VM is noisy, so
 * compare the rows with each other, not across runs.
 *
 * Usage: parley-history-ratio [--corpus DIR] [--dir DIR] [--streams N]
 *                             [--dict-bytes N]
 * Single-threaded; exits 77 when the corpus is missing.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>
#ifdef HAVE_LZ4
#include <lz4.h>
#endif

#include "bench_json.h"
#include "msg_corpus.h"

#include "bcache.h"
#include "dict.h"
#include "io.h"
#include "parley_common.h"
#include "parley_engine.h"
#include "segment.h"

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads every regular file without a '.' in its name (skips .dat / .u8
 * and subdirectories) of each comma-separated directory, in name order. */
static int load_corpus(struct corpus *c, const char *dirs, size_t *nfiles)
{
	*nfiles = 0;
	char *list = strdup(dirs), *save = NULL;
	for (char *dir = strtok_r(list, ",", &save); dir; dir = strtok_r(NULL, ",", &save)) {
		DIR *d = opendir(dir);
		if (!d) {
			int e = errno;
			free(list);
			return -e;
		}
		char *names[256];
		size_t nn = 0;
		struct dirent *de;
		while ((de = readdir(d)) && nn < 256)
			if (de->d_name[0] != '.' && !strchr(de->d_name, '.'))
				names[nn++] = strdup(de->d_name);
		closedir(d);
		qsort(names, nn, sizeof *names, name_cmp); /* deterministic order */
		for (size_t i = 0; i < nn; i++) {
			char p[1024];
			snprintf(p, sizeof p, "%s/%s", dir, names[i]);
			free(names[i]);
			struct stat st;
			if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
				continue;
			FILE *f = fopen(p, "rb");
			if (!f)
				continue;
			c->text = realloc(c->text, c->len + (size_t)st.st_size + 1);
			c->len += fread(c->text + c->len, 1, (size_t)st.st_size, f);
			fclose(f);
			(*nfiles)++;
		}
	}
	free(list);
	corpus_cut(c);
	return c->n ? 0 : -PARLEY_ENOTFOUND;
}

static struct corpus C;
static uint32_t nstreams = 32;
static struct pio *io;
static char dirpath[512];
static uint64_t next_id = 1;

/* Stream s's key; streams are written in key order (order[] sorts them). */
static uint32_t *order;
static int stream_key(uint32_t s, char *key)
{
	return snprintf(key, 32, "c/%08x", (unsigned)(s * 2654435761u));
}
static int order_cmp(const void *a, const void *b)
{
	char ka[32], kb[32];
	stream_key(*(const uint32_t *)a, ka);
	stream_key(*(const uint32_t *)b, kb);
	return strcmp(ka, kb);
}

/* First odd (stored) message index of stream s's chunk; chunk_first(S)
 * is past the end. */
static size_t chunk_first(uint32_t s)
{
	size_t pairs = C.n / 2; /* odd indices 1, 3, ..., 2*pairs-1 */
	size_t p = pairs * s / nstreams;
	return 2 * p + 1;
}

/* One zstd frame over all stored payloads: the floor for this text. */
static size_t floor_frame(int level, const struct pdict *d, size_t *raw)
{
	size_t n = 0;
	for (size_t i = 1; i < C.n; i += 2)
		n += C.mlen[i];
	char *buf = malloc(n), *out = malloc(ZSTD_compressBound(n));
	size_t o = 0;
	for (size_t i = 1; i < C.n; i += 2) {
		memcpy(buf + o, C.text + C.off[i], C.mlen[i]);
		o += C.mlen[i];
	}
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	size_t r;
	if (d) {
		ZSTD_CDict *cd = ZSTD_createCDict(d->bytes, d->len, level);
		r = ZSTD_compress_usingCDict(cc, out, ZSTD_compressBound(n), buf, n, cd);
		ZSTD_freeCDict(cd);
	} else {
		r = ZSTD_compressCCtx(cc, out, ZSTD_compressBound(n), buf, n, level);
	}
	ZSTD_freeCCtx(cc);
	free(buf);
	free(out);
	*raw = n;
	return ZSTD_isError(r) ? 0 : r;
}

static const struct pdict *the_dict(void *arg, uint64_t id)
{
	const struct pdict *d = arg;
	return d && d->id == id ? d : NULL;
}

struct result {
	uint64_t entries, raw, file, blocks_c, nblocks;
};

/* One stored message: its stream key, seq, timestamp, producer id and
 * index in the corpus. */
typedef int (*stored_fn)(void *arg, const char *key, int kl, uint64_t seq, uint64_t ts,
			 const uint8_t prod[16], size_t i);

/* Every stored (odd) message in write order — streams in order[], seqs
 * from 1, timestamps and (rand_prod) producer ids from one seeded rng —
 * to fn, so that every writer sees the same records; stops at fn's first
 * nonzero return and returns it. */
static int each_stored(bool rand_prod, stored_fn fn, void *arg)
{
	struct parley_rng rng = { 12345 };
	for (uint32_t o = 0; o < nstreams; o++) {
		uint32_t s = order[o];
		char key[32];
		int kl = stream_key(s, key);
		uint64_t seq = 0, ts = 1763900000000ull + s * 1000;
		for (size_t i = chunk_first(s); i < chunk_first(s + 1); i += 2) {
			uint8_t prod[16] = { 0 };
			ts += 2000 + parley_rng_below(&rng, 300000);
			if (rand_prod)
				for (int b = 0; b < 16; b++)
					prod[b] = (uint8_t)parley_rng_next(&rng);
			int rc = fn(arg, key, kl, ++seq, ts, prod, i);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* each_stored's step for run_one: the message into the segment writer. */
static int write_stored(void *arg, const char *key, int kl, uint64_t seq, uint64_t ts,
			const uint8_t prod[16], size_t i)
{
	struct pe_entry e = { .seq = seq, .ts_ms = ts, .type = 1, .len = (uint32_t)C.mlen[i],
			      .payload = (const uint8_t *)C.text + C.off[i] };
	memcpy(e.producer, prod, 16);
	return seg_writer_add(arg, key, (size_t)kl, &e);
}

/* serialize_records's buffer (sized for every record by its caller). */
struct ser_buf {
	uint8_t *buf;
	size_t n;
	uint64_t nrec;
};

/* each_stored's step for serialize_records: the message as one record. */
static int serialize_stored(void *arg, const char *key, int kl, uint64_t seq, uint64_t ts,
			    const uint8_t prod[16], size_t i)
{
	struct ser_buf *sb = arg;
	uint8_t *buf = sb->buf;
	size_t n = sb->n;
	buf[n++] = (uint8_t)kl;
	memcpy(buf + n, key, (size_t)kl);
	n += (size_t)kl;
	for (int b = 0; b < 8; b++)
		buf[n++] = (uint8_t)(seq >> (8 * b));
	for (int b = 0; b < 8; b++)
		buf[n++] = (uint8_t)(ts >> (8 * b));
	buf[n++] = 1; /* type 1 */
	buf[n++] = 0;
	buf[n++] = 0; /* flags 0 */
	buf[n++] = 0;
	memcpy(buf + n, prod, 16);
	n += 16;
	uint32_t l = (uint32_t)C.mlen[i];
	for (int b = 0; b < 4; b++)
		buf[n++] = (uint8_t)(l >> (8 * b));
	memcpy(buf + n, C.text + C.off[i], l);
	sb->n = n + l;
	sb->nrec++;
	return 0;
}

/* Writes the odd messages as S streams; reads back and checks. */
static int run_one(uint32_t block, int level, const struct pdict *dict,
		   bool rand_prod, struct result *res)
{
	struct seg_write_opts wo = { .block_bytes = block, .level = level, .dict = dict };
	struct seg_writer *w;
	uint64_t id = next_id++;
	int rc = seg_writer_new(io, dirpath, id, &wo, &w);
	if (rc)
		return rc;
	rc = each_stored(rand_prod, write_stored, w);
	if (rc) {
		seg_writer_abort(w);
		return rc;
	}
	struct seg_write_info wi;
	rc = seg_writer_finish(w, &wi);
	if (rc)
		return rc;
	/* read back everything and compare */
	struct seg_open_opts oo = { .dict_lookup = the_dict, .dict_arg = (void *)dict };
	struct seg_reader *r;
	char err[SEG_ERR_LEN];
	rc = seg_open(io, dirpath, wi.name, &oo, &r, err, sizeof err);
	if (rc) {
		fprintf(stderr, "open %s: %s\n", wi.name, err);
		return rc;
	}
	uint64_t checked = 0;
	for (uint32_t s = 0; s < nstreams && !rc; s++) {
		char key[32];
		int kl = stream_key(s, key);
		struct seg_iter *it;
		rc = seg_iter_stream(r, key, (size_t)kl, 0, PE_FORWARD, false, &it);
		struct seg_item item;
		size_t i = chunk_first(s);
		while (!rc && seg_iter_next(it, &item) == 1) {
			if (i >= chunk_first(s + 1) || item.e.len != C.mlen[i] ||
			    memcmp(item.e.payload, C.text + C.off[i], C.mlen[i]))
				rc = -PARLEY_ECORRUPT;
			i += 2;
			checked++;
		}
		seg_iter_free(it);
	}
	if (!rc && checked != wi.entries)
		rc = -PARLEY_ECORRUPT;
	struct seg_verify_report rep;
	if (!rc)
		rc = seg_verify(r, &rep);
	seg_close(r);
	int rm = seg_remove(io, dirpath, id);
	if (rc)
		return rc;
	if (rm)
		return rm;
	res->entries = wi.entries;
	res->raw = wi.raw_payload_bytes;
	res->file = wi.file_bytes;
	res->blocks_c = wi.block_bytes;
	res->nblocks = wi.blocks;
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

#define RL_STREAMS 200u
#define RL_REPEAT 20u
#define RL_READS 20000u

static int read_latency(uint32_t block, const struct pdict *dict, bool cached)
{
	struct seg_write_opts wo = { .block_bytes = block, .dict = dict };
	struct seg_writer *w;
	uint64_t id = next_id++;
	int rc = seg_writer_new(io, dirpath, id, &wo, &w);
	if (rc)
		return rc;
	size_t per = (C.n / 2) * RL_REPEAT / RL_STREAMS;
	for (uint32_t s = 0; s < RL_STREAMS && !rc; s++) {
		char key[32];
		int kl = snprintf(key, sizeof key, "c/%06u", s);
		uint64_t ts = 1763900000000ull;
		for (size_t j = 0; j < per && !rc; j++) {
			size_t i = 1 + 2 * ((s * per + j) % (C.n / 2));
			struct pe_entry e = { .seq = j + 1, .ts_ms = ts += 5000, .type = 1,
					      .len = (uint32_t)C.mlen[i],
					      .payload = (const uint8_t *)C.text + C.off[i] };
			rc = seg_writer_add(w, key, (size_t)kl, &e);
		}
	}
	struct seg_write_info wi;
	if (rc) {
		seg_writer_abort(w);
		return rc;
	}
	if ((rc = seg_writer_finish(w, &wi)) != 0)
		return rc;
	struct bcache *cache = NULL;
	if (cached && (rc = bcache_new(64u << 20, &cache)) != 0)
		return rc;
	struct seg_open_opts oo = { .cache = cache, .dict_lookup = the_dict,
				    .dict_arg = (void *)dict };
	struct seg_reader *r;
	if ((rc = seg_open(io, dirpath, wi.name, &oo, &r, NULL, 0)) != 0)
		return rc;
	uint64_t *lat = malloc(RL_READS * sizeof *lat);
	struct parley_rng rng = { 99 };
	struct pe_entry out[50];
	for (uint32_t k = 0; k < RL_READS && !rc; k++) {
		char key[32];
		int kl = snprintf(key, sizeof key, "c/%06u",
				  (unsigned)parley_rng_below(&rng, RL_STREAMS));
		uint32_t n;
		bool end;
		struct seg_iter *hold;
		uint64_t t0 = parley_mono_ns();
		rc = seg_read(r, key, (size_t)kl, UINT64_MAX, PE_BACKWARD, 50, out, &n,
			      &end, &hold);
		if (!rc)
			seg_iter_free(hold);
		lat[k] = parley_mono_ns() - t0;
		if (!rc && n != PARLEY_MIN(50u, (uint32_t)per))
			rc = -PARLEY_ECORRUPT;
	}
	if (!rc) {
		qsort(lat, RL_READS, sizeof *lat, u64_cmp);
		printf("%6uK %-6s %-6s %8u %10" PRIu64 " %8.1f %8.1f %8.1f\n", block / 1024,
		       dict ? "yes" : "no", cached ? "64MiB" : "none", wi.blocks,
		       wi.entries, lat[RL_READS / 2] / 1e3, lat[RL_READS * 99 / 100] / 1e3,
		       lat[RL_READS - 1] / 1e3);
	}
	free(lat);
	seg_close(r);
	bcache_free(cache);
	int rm = seg_remove(io, dirpath, id);
	return rc ? rc : rm;
}


/* ---- peers on the same records (issue 14) -------------------------------------- */

/* The stored messages serialised as the records a message table holds —
 * stream key (1-byte length + bytes), seq, ts (u64 each), type, flags
 * (u16 each), producer id (16 B), body (u32 length + bytes) — in the same
 * order and with the same timestamps and producer ids as run_one. */
static uint8_t *serialize_records(bool rand_prod, size_t *len_out, uint64_t *nrec)
{
	size_t cap = C.len * 2 + C.n * 64 + 4096;
	uint8_t *buf = malloc(cap);
	if (!buf)
		return NULL;
	struct ser_buf sb = { buf, 0, 0 };
	each_stored(rand_prod, serialize_stored, &sb);
	*nrec = sb.nrec;
	*len_out = sb.n;
	return buf;
}

#define LZ4_CHUNK 16384u /* Cassandra's default chunk_length_in_kb = 16 */

struct peer_res {
	uint64_t records, raw, lz4, lz4_chunks, zstd19;
	uint64_t parley, parley_dict; /* segment file; + the whole dictionary file */
};

static int peers_run(bool rand_prod, struct peer_res *pr)
{
	size_t n;
	uint8_t *buf = serialize_records(rand_prod, &n, &pr->records);
	if (!buf)
		return -PARLEY_ENOMEM;
	pr->raw = n;
	pr->lz4 = pr->lz4_chunks = 0;
#ifdef HAVE_LZ4
	char *dst = malloc((size_t)LZ4_compressBound((int)LZ4_CHUNK));
	for (size_t off = 0; off < n; off += LZ4_CHUNK) {
		int l = (int)(n - off < LZ4_CHUNK ? n - off : LZ4_CHUNK);
		int c = LZ4_compress_default((const char *)buf + off, dst, l, LZ4_compressBound(l));
		if (c <= 0) {
			free(dst);
			free(buf);
			return -PARLEY_EIO;
		}
		pr->lz4 += (uint64_t)c;
		pr->lz4_chunks++;
	}
	free(dst);
#endif
	size_t zcap = ZSTD_compressBound(n);
	uint8_t *z = malloc(zcap);
	size_t zr = ZSTD_compress(z, zcap, buf, n, 19);
	free(z);
	free(buf);
	if (ZSTD_isError(zr))
		return -PARLEY_EIO;
	pr->zstd19 = zr;
	return 0;
}

int main(int argc, char **argv)
{
	const char *corpus_dir = "/usr/share/games/fortunes", *base = "/tmp";
	size_t dict_bytes = DICT_DEFAULT_BYTES;
	const char *json_path = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--corpus") && i + 1 < argc)
			corpus_dir = argv[++i];
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			base = argv[++i];
		else if (!strcmp(argv[i], "--streams") && i + 1 < argc)
			nstreams = (uint32_t)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--dict-bytes") && i + 1 < argc)
			dict_bytes = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--json") && i + 1 < argc)
			json_path = argv[++i];
		else {
			fprintf(stderr, "usage: %s [--corpus DIR[,DIR...]] [--dir DIR] [--streams N] "
				"[--dict-bytes N] [--json FILE]\n",
				argv[0]);
			return 2;
		}
	}
	if (nstreams == 0)
		nstreams = 1;
	bj_note_start();
	order = calloc(nstreams, sizeof *order);
	for (uint32_t s = 0; s < nstreams; s++)
		order[s] = s;
	qsort(order, nstreams, sizeof *order, order_cmp);
	size_t nfiles = 0;
	int rc = load_corpus(&C, corpus_dir, &nfiles);
	if (rc) {
		fprintf(stderr, "corpus %s unavailable (%s): skipping\n", corpus_dir,
			parley_strerror(rc));
		return 77;
	}
	snprintf(dirpath, sizeof dirpath, "%s/parley-history-ratio-%d", base, (int)getpid());
	io = pio_uring_new();
	if (!io || (rc = io->ops->mkdir(io, dirpath)) != 0) {
		fprintf(stderr, "cannot create %s: %s\n", dirpath, parley_strerror(rc));
		return 1;
	}

	/* train on the even messages (held out from what is stored) */
	size_t ns = 0, train_bytes = 0, store_bytes = 0;
	struct dict_sample *smp = calloc(C.n, sizeof *smp);
	for (size_t i = 0; i < C.n; i++) {
		if (i % 2 == 0) {
			smp[ns++] = (struct dict_sample){ C.text + C.off[i], C.mlen[i] };
			train_bytes += C.mlen[i];
		} else {
			store_bytes += C.mlen[i];
		}
	}
	static const int levels[] = { 3, DICT_DEFAULT_LEVEL, 19 };
	static const uint32_t blocks[] = { 4096, 16384, SEG_DEFAULT_BLOCK };
	struct pdict *dicts[3] = { 0 };
	for (int l = 0; l < 3; l++) {
		rc = dict_train(smp, ns, dict_bytes, levels[l], &dicts[l]);
		if (rc) {
			fprintf(stderr, "dictionary training failed: %s\n", parley_strerror(rc));
			return 1;
		}
	}
	rc = dict_store(io, dirpath, dicts[1]);
	if (rc) {
		fprintf(stderr, "dict_store: %s\n", parley_strerror(rc));
		return 1;
	}
	printf("parley-history-ratio: corpus %s (%zu files), %zu messages of 20..200 B "
	       "(mean %.0f B), %u streams\n",
	       corpus_dir, nfiles, C.n, (double)(train_bytes + store_bytes) / (double)C.n,
	       nstreams);
	printf("dictionary: trained on %zu held-out messages (%zu B), %u B (cap %zu B, "
	       "<= samples/8), id %016" PRIx64 ", file %zu B\n",
	       ns, train_bytes, dicts[1]->len, dict_bytes, dicts[1]->id,
	       (size_t)dicts[1]->len + DICT_HDR_LEN);
	printf("stored: %zu messages, %zu B raw payload\n\n", C.n - ns, store_bytes);
	printf("%-8s %5s %6s %-6s %10s %10s %8s %8s %8s\n", "producer", "level", "block",
	       "dict", "raw B", "file B", "ratio", "blocks", "w/ dict");
	printf("%-8s %5s %6s %-6s %10s %10s %8s %8s %8s\n", "", "", "", "", "", "",
	       "file/raw", "only", "file");
	struct peer_res pr[2];
	memset(pr, 0, sizeof pr);
	for (int rp = 0; rp < 2; rp++)
		for (int l = 0; l < 3; l++)
			for (size_t b = 0; b < 3; b++) {
				if (rp && (levels[l] != DICT_DEFAULT_LEVEL || blocks[b] != SEG_DEFAULT_BLOCK))
					continue;
				for (int wd = 0; wd < 2; wd++) {
					struct result res;
					rc = run_one(blocks[b], levels[l], wd ? dicts[l] : NULL,
						     rp != 0, &res);
					if (rc) {
						fprintf(stderr, "run failed: %s\n", parley_strerror(rc));
						return 1;
					}
					double amort = (double)(res.file + (wd ? dicts[l]->len + DICT_HDR_LEN : 0)) /
						       (double)res.raw;
					if (wd && levels[l] == DICT_DEFAULT_LEVEL &&
					    blocks[b] == SEG_DEFAULT_BLOCK) {
						pr[rp].parley = res.file;
						pr[rp].parley_dict = res.file + dicts[l]->len + DICT_HDR_LEN;
					}
					printf("%-8s %5d %5uK %-6s %10" PRIu64 " %10" PRIu64 " %8.3f %8.3f %8.3f\n",
					       rp ? "random" : "zero", levels[l], blocks[b] / 1024,
					       wd ? "yes" : "no", res.raw, res.file,
					       (double)res.file / (double)res.raw,
					       (double)res.blocks_c / (double)res.raw,
					       wd ? amort : (double)res.file / (double)res.raw);
				}
			}
	for (int wd = 0; wd < 2; wd++) {
		size_t raw, fl = floor_frame(19, wd ? dicts[2] : NULL, &raw);
		printf("%-8s %5d %6s %-6s %10zu %10zu %8.3f %8s %8.3f\n", "floor", 19,
		       "1frame", wd ? "yes" : "no", raw, fl, (double)fl / (double)raw, "-",
		       (double)(fl + (wd ? dicts[2]->len : 0)) / (double)raw);
	}
	/* bytes per stored record against what a user would otherwise run */
	for (int rp = 0; rp < 2; rp++) {
		if ((rc = peers_run(rp != 0, &pr[rp])) != 0) {
			fprintf(stderr, "peer run failed: %s\n", parley_strerror(rc));
			return 1;
		}
	}
	printf("\nbytes on disk per stored message (records: key, seq, ts, type, flags, 16-byte "
	       "producer id, body):\n");
	printf("%-8s %8s %9s %11s %11s %10s %10s %9s %9s\n", "producer", "records", "raw B/msg",
	       "parley B/msg", "+dict B/msg", "lz4-16K", "zstd-19", "÷ lz4", "÷ zstd19");
	for (int rp = 0; rp < 2; rp++) {
		double m = (double)pr[rp].records;
		printf("%-8s %8" PRIu64 " %9.1f %11.1f %11.1f %10.1f %10.1f %4.3f/%4.3f %4.3f/%4.3f\n",
		       rp ? "random" : "zero", pr[rp].records, pr[rp].raw / m, pr[rp].parley / m,
		       pr[rp].parley_dict / m, pr[rp].lz4 / m, pr[rp].zstd19 / m,
		       pr[rp].lz4 ? (double)pr[rp].parley / (double)pr[rp].lz4 : 0,
		       pr[rp].lz4 ? (double)pr[rp].parley_dict / (double)pr[rp].lz4 : 0,
		       (double)pr[rp].parley / (double)pr[rp].zstd19,
		       (double)pr[rp].parley_dict / (double)pr[rp].zstd19);
	}
	printf("parley = one segment at the engine's defaults (level %d, %u KiB blocks, trained "
	       "dictionary); \"+dict\" adds the whole dictionary file (shared by a partition's "
	       "segments: an upper bound); ratios are parley/peer and parley+dict/peer.\n"
	       "lz4-16K = Cassandra's default table compression (LZ4Compressor, "
	       "chunk_length_in_kb 16) computed with liblz4 LZ4_compress_default on the same "
	       "serialised records, compressed chunk bytes only (Cassandra's CRC per chunk, "
	       "offsets, row headers, index and bloom filter are NOT counted: a lower bound "
	       "for Cassandra)%s.\nzstd-19 = the same records as one zstd frame at level 19: "
	       "the floor. Goals: parley <= 0.6x lz4-16K, <= 1.15x zstd-19.\n",
	       DICT_DEFAULT_LEVEL, SEG_DEFAULT_BLOCK / 1024,
#ifdef HAVE_LZ4
	       ""
#else
	       " — NOT MEASURED: built without liblz4"
#endif
	);
	if (json_path) {
		FILE *jf = fopen(json_path, "w");
		if (!jf) {
			fprintf(stderr, "--json %s: %s\n", json_path, strerror(errno));
			return 1;
		}
		struct bench_json j;
		bj_init(&j, jf);
		bj_str(&j, "tool", "parley-history-ratio");
		bj_str(&j, "mode", "storage");
		bj_machine(&j, "machine");
		bj_obj(&j, "settings");
		bj_str(&j, "corpus", corpus_dir);
		bj_u64(&j, "files", nfiles);
		bj_u64(&j, "messages_total", C.n);
		bj_u64(&j, "messages_stored", C.n - ns);
		bj_u64(&j, "stored_payload_bytes", store_bytes);
		bj_u64(&j, "streams", nstreams);
		bj_u64(&j, "dictionary_bytes", dicts[1]->len);
		bj_num(&j, "level", DICT_DEFAULT_LEVEL);
		bj_u64(&j, "block_bytes", SEG_DEFAULT_BLOCK);
		bj_end(&j);
		/* the headline uses zero producer ids (plain sends); both are listed */
		const struct peer_res *h = &pr[0];
		double m = (double)h->records;
		bj_obj(&j, "parley");
		bj_u64(&j, "records", h->records);
		bj_u64(&j, "bytes", h->parley);
		bj_u64(&j, "bytes_with_dictionary", h->parley_dict);
		bj_num(&j, "bytes_per_message", (double)h->parley / m);
		bj_num(&j, "bytes_per_message_with_dictionary", (double)h->parley_dict / m);
		bj_end(&j);
		bj_arr(&j, "peers");
		for (int rp = 0; rp < 2; rp++) {
			const struct peer_res *q = &pr[rp];
			double mm = (double)q->records;
			const char *ids = rp ? "random 16-byte producer ids" : "zero producer ids";
			bj_obj(&j, NULL);
			bj_str(&j, "system", "raw records");
			bj_str(&j, "producer_ids", ids);
			bj_num(&j, "bytes", (double)q->raw);
			bj_num(&j, "bytes_per_message", (double)q->raw / mm);
			bj_end(&j);
			bj_obj(&j, NULL);
			bj_str(&j, "system", "parley segment");
			bj_str(&j, "producer_ids", ids);
			bj_str(&j, "config", "engine defaults: zstd level and block size of the segment writer, trained dictionary; bytes_with_dictionary adds the whole dictionary file");
			bj_num(&j, "bytes", (double)q->parley);
			bj_num(&j, "bytes_with_dictionary", (double)q->parley_dict);
			bj_num(&j, "bytes_per_message", (double)q->parley / mm);
			bj_end(&j);
			bj_obj(&j, NULL);
			bj_str(&j, "system", "cassandra-lz4");
			bj_str(&j, "producer_ids", ids);
			bj_str(&j, "config", "LZ4Compressor default, chunk_length_in_kb 16: liblz4 LZ4_compress_default per 16 KiB chunk of the same serialised records; compressed chunk bytes only (no CRC, offsets, row headers, index, bloom)");
#ifdef HAVE_LZ4
			bj_num(&j, "bytes", (double)q->lz4);
			bj_num(&j, "bytes_per_message", (double)q->lz4 / mm);
			bj_num(&j, "parley_ratio", (double)q->parley / (double)q->lz4);
			bj_num(&j, "parley_with_dictionary_ratio", (double)q->parley_dict / (double)q->lz4);
#else
			bj_null(&j, "bytes");
#endif
			bj_num(&j, "goal_ratio_max", 0.6);
			bj_end(&j);
			bj_obj(&j, NULL);
			bj_str(&j, "system", "zstd-19 floor");
			bj_str(&j, "producer_ids", ids);
			bj_str(&j, "config", "ZSTD_compress level 19, one frame over all the same serialised records");
			bj_num(&j, "bytes", (double)q->zstd19);
			bj_num(&j, "bytes_per_message", (double)q->zstd19 / mm);
			bj_num(&j, "parley_ratio", (double)q->parley / (double)q->zstd19);
			bj_num(&j, "parley_with_dictionary_ratio", (double)q->parley_dict / (double)q->zstd19);
			bj_num(&j, "goal_ratio_max", 1.15);
			bj_end(&j);
		}
		bj_end(&j);
		if (bj_finish(&j) != 0 || fclose(jf) != 0) {
			fprintf(stderr, "--json %s: write failed\n", json_path);
			return 1;
		}
	}
	printf("\nlast-50 reads of a random stream, one segment, %u reads each:\n", RL_READS);
	printf("%7s %-6s %-6s %8s %10s %8s %8s %8s\n", "block", "dict", "cache",
	       "blocks", "entries", "p50 us", "p99 us", "max us");
	static const uint32_t rl_blocks[] = { 4096, SEG_DEFAULT_BLOCK };
	for (size_t b = 0; b < 2; b++)
		for (int cached = 0; cached < 2; cached++) {
			rc = read_latency(rl_blocks[b], dicts[1], cached);
			if (rc) {
				fprintf(stderr, "read run failed: %s\n", parley_strerror(rc));
				return 1;
			}
		}
	printf("\nratio = segment file bytes / raw payload bytes; \"blocks only\" "
	       "excludes index, stream dir, bloom, footer; \"w/ dict file\" adds the\n"
	       "dictionary file to this one segment (an upper bound: a partition "
	       "shares one dictionary across all its segments).\n"
	       "floor = all stored payloads as one zstd frame (no blocks, no "
	       "entry metadata, no index): the best zstd does on this text.\n");
	(void)dict_remove(io, dirpath, dicts[1]->id);
	for (int l = 0; l < 3; l++)
		dict_free(dicts[l]);
	pio_free(io);
	(void)rmdir(dirpath); /* the vtable has no rmdir; the bench is an edge */
	free(order);
	free(smp);
	free(C.text);
	free(C.off);
	free(C.mlen);
	return 0;
}
