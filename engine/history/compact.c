/*
 * compact.c — size-tiered picking, retention evaluation, token-bucket pacing
 * and the k-way segment merge. See compact.h for the policy and why, the
 * deletion/retention rules, crash safety and threading.
 *
 * The merge keeps one head entry per input (each input iterator pins only
 * its current block) and repeatedly emits the smallest (key, seq); inputs
 * are few (<= max_merge), so a linear scan beats a heap here. Memory is
 * bounded by one block per input plus the output writer's open block.
 */
#include "compact.h"

#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

/* ---- retention ------------------------------------------------------------------ */

const struct retention_rule *retention_match(const struct retention_policy *p,
					     const void *key, size_t klen)
{
	const struct retention_rule *best = NULL;
	if (!p)
		return NULL;
	for (size_t i = 0; i < p->n; i++) {
		const struct retention_rule *r = &p->rules[i];
		if (r->plen > klen || (r->plen && memcmp(r->prefix, key, r->plen)))
			continue;
		if (!best || r->plen > best->plen)
			best = r;
	}
	return best;
}

bool retention_keep(const struct retention_policy *p, const void *key,
		    size_t klen, uint64_t seq, uint64_t ts_ms,
		    uint64_t stream_last_seq, uint64_t now_ms)
{
	const struct retention_rule *r = retention_match(p, key, klen);
	if (!r)
		return true;
	/* by count: keep the newest max_count seqs (seqs are dense) */
	if (r->max_count && stream_last_seq >= r->max_count &&
	    seq <= stream_last_seq - r->max_count)
		return false;
	/* by age: keep ts >= now - max_age (an entry from the future is kept) */
	if (r->max_age_ms && now_ms > r->max_age_ms &&
	    ts_ms < now_ms - r->max_age_ms)
		return false;
	return true;
}

/* ---- throttle ------------------------------------------------------------------- */

void throttle_init(struct throttle *t, uint64_t rate_bps, uint64_t burst,
		   uint64_t now_ns)
{
	memset(t, 0, sizeof *t);
	t->rate = rate_bps;
	t->burst = burst > INT64_MAX ? INT64_MAX : burst;
	t->tokens = (int64_t)t->burst;
	t->last_ns = now_ns;
}

uint64_t throttle_charge(struct throttle *t, uint64_t bytes, uint64_t now_ns)
{
	if (t->rate == 0)
		return 0;
	if (now_ns > t->last_ns) {
		unsigned __int128 acc =
			(unsigned __int128)(now_ns - t->last_ns) * t->rate + t->rem;
		unsigned __int128 add = acc / 1000000000u;
		t->rem = (uint64_t)(acc % 1000000000u);
		t->last_ns = now_ns;
		__int128 tok = (__int128)t->tokens + (__int128)add;
		if (tok > (__int128)t->burst) {
			tok = (__int128)t->burst;
			t->rem = 0; /* a full bucket wastes the remainder too */
		}
		t->tokens = (int64_t)tok;
	}
	if (bytes > (uint64_t)INT64_MAX / 2)
		bytes = (uint64_t)INT64_MAX / 2;
	t->tokens -= (int64_t)bytes;
	if (t->tokens >= 0)
		return 0;
	/* time until the debt is repaid, rounded up */
	unsigned __int128 need = (unsigned __int128)(uint64_t)(-t->tokens) * 1000000000u;
	need = need > t->rem ? need - t->rem : 0;
	return (uint64_t)((need + t->rate - 1) / t->rate);
}

/* ---- picking ------------------------------------------------------------------ */

size_t compact_pick(const struct compact_seg_desc *segs, size_t n,
		    const struct compact_tier_opts *o, size_t *idx, size_t cap)
{
	unsigned min_merge = o && o->min_merge ? o->min_merge : 4;
	unsigned max_merge = o && o->max_merge ? o->max_merge : 16;
	double ratio = o && o->bucket_ratio > 1.0 ? o->bucket_ratio : 2.0;
	uint64_t small = o && o->small_bytes ? o->small_bytes : (4u << 20);
	if (min_merge < 2)
		min_merge = 2;
	if (max_merge < min_merge)
		max_merge = min_merge;
	if (n < min_merge || cap < min_merge)
		return 0;
	size_t *ord = malloc(n * sizeof *ord);
	if (!ord)
		return 0;
	for (size_t i = 0; i < n; i++)
		ord[i] = i;
	/* insertion sort: n is a partition's segment count (tens), and qsort
	 * would need a file-static base pointer (not reentrant) */
	for (size_t i = 1; i < n; i++) {
		size_t v = ord[i], j = i;
		while (j > 0 && segs[ord[j - 1]].bytes > segs[v].bytes) {
			ord[j] = ord[j - 1];
			j--;
		}
		ord[j] = v;
	}
	/* Walk buckets in ascending size; take the first (cheapest) bucket
	 * that has enough members. */
	size_t best_start = 0, best_len = 0;
	size_t s = 0;
	while (s < n) {
		size_t e = s + 1;
		double sum = (double)segs[ord[s]].bytes;
		while (e < n) {
			uint64_t b = segs[ord[e]].bytes;
			double avg = sum / (double)(e - s);
			bool fits = (b <= small && segs[ord[s]].bytes <= small) ||
				    ((double)b <= avg * ratio);
			if (!fits)
				break;
			sum += (double)b;
			e++;
		}
		if (e - s >= min_merge) {
			best_start = s;
			best_len = e - s;
			break;
		}
		s = e;
	}
	size_t take = PARLEY_MIN(PARLEY_MIN(best_len, (size_t)max_merge), cap);
	for (size_t i = 0; i < take; i++)
		idx[i] = ord[best_start + i];
	free(ord);
	return take;
}

/* ---- merge ---------------------------------------------------------------------- */

static int idem_carry(struct seg_reader *const *inputs, size_t n,
		      struct seg_writer *w, uint64_t min_ts,
		      struct compact_stats *st);

struct head {
	struct seg_iter *it;
	struct seg_item item;
	bool valid;
};

struct merge {
	const struct compact_opts *o;
	struct compact_stats *st;
	struct seg_reader *const *in;
	size_t n;
	struct head *h;
	struct seg_writer *w;
	uint64_t charged; /* I/O bytes already passed to pace() */
	uint64_t read0;   /* inputs' seg_bytes_read() at start */
	/* the open stream */
	bool have_stream;
	uint8_t key[PE_MAX_KEY];
	uint8_t klen;
	struct compact_stream_state ss;
	uint64_t last_seq;
	bool trimming;
	struct compact_stream_result res;
	uint8_t *fbuf;    /* the filter's output (o->filter) */
	size_t fcap;
};

static int head_advance(struct head *h)
{
	int rc = seg_iter_next(h->it, &h->item);
	if (rc < 0)
		return rc;
	h->valid = rc == 1;
	return 0;
}

static int cmp_items(const struct seg_item *a, const struct seg_item *b)
{
	int c = memcmp(a->key, b->key, PARLEY_MIN(a->klen, b->klen));
	if (!c)
		c = a->klen < b->klen ? -1 : a->klen > b->klen;
	if (!c)
		c = a->e.seq < b->e.seq ? -1 : a->e.seq > b->e.seq;
	return c;
}

static void stream_end(struct merge *m)
{
	if (!m->have_stream)
		return;
	if (m->res.kept)
		m->st->streams_out++;
	if (m->o->on_stream)
		m->o->on_stream(m->o->stream_arg, m->key, m->klen, &m->res);
	m->have_stream = false;
}

static int stream_begin(struct merge *m, const uint8_t *key, uint8_t klen)
{
	stream_end(m);
	memcpy(m->key, key, klen);
	m->klen = klen;
	m->have_stream = true;
	m->trimming = true;
	memset(&m->res, 0, sizeof m->res);
	memset(&m->ss, 0, sizeof m->ss);
	m->st->streams_in++;
	if (m->o->state) {
		int rc = m->o->state(m->o->state_arg, key, klen, &m->ss);
		if (rc)
			return rc;
	}
	m->last_seq = m->ss.last_seq;
	if (!m->last_seq) {
		for (size_t i = 0; i < m->n; i++) {
			struct seg_stream_info si;
			if (seg_stream_info(m->in[i], key, klen, &si) == 0)
				m->last_seq = PARLEY_MAX(m->last_seq, si.last_seq);
		}
	}
	return 0;
}

static void pace(struct merge *m, bool final)
{
	/* bytes written: the open writer's file, or the finished output */
	uint64_t total = m->w ? seg_writer_file_bytes(m->w) : m->st->bytes_written;
	for (size_t i = 0; i < m->n; i++)
		total += seg_bytes_read(m->in[i]);
	total -= m->read0;
	if (total <= m->charged)
		return;
	uint64_t d = total - m->charged;
	if (m->o->pace && (d >= COMPACT_PACE_CHUNK || (final && d))) {
		m->o->pace(m->o->pace_arg, d);
		m->charged = total;
	}
}

static int merge_emit(struct merge *m, const struct seg_item *it)
{
	const struct compact_opts *o = m->o;
	uint64_t seq = it->e.seq;
	bool drop_tomb = m->ss.deleted_through && seq <= m->ss.deleted_through;
	bool drop_ret = false;
	if (!drop_tomb && m->trimming && o->retention)
		drop_ret = !retention_keep(o->retention, it->key, it->klen, seq,
					   it->e.ts_ms, m->last_seq, o->now_ms);
	if (drop_tomb || drop_ret) {
		m->res.dropped_through = PARLEY_MAX(m->res.dropped_through, seq);
		if (drop_tomb) {
			m->res.dropped_tomb++;
			m->st->dropped_tomb++;
		} else {
			m->res.dropped_retention++;
			m->st->dropped_retention++;
		}
		return 0;
	}
	m->trimming = false;
	if (!m->w) {
		struct seg_write_opts wo = o->wopts;
		wo.no_derive_idem = true; /* carried from the inputs instead */
		int rc = seg_writer_new(o->io, o->dir, o->out_seg_id, &wo, &m->w);
		if (rc)
			return rc;
		/* records first: the writer stores a surviving entry's producer
		 * by reference when a record covers it */
		rc = idem_carry(m->in, m->n, m->w, o->idem_min_ts, m->st);
		if (rc)
			return rc;
	}
	struct pe_entry e = it->e;
	if (o->filter) {
		/* at most the original size: a filter only removes content */
		if (!m->fbuf || m->fcap < e.len) {
			size_t nc = PARLEY_MAX((size_t)e.len, (size_t)4096);
			uint8_t *b = realloc(m->fbuf, nc);
			if (!b)
				return -PARLEY_ENOMEM;
			m->fbuf = b;
			m->fcap = nc;
		}
		int n = o->filter(o->filter_arg, it->key, it->klen, &e, m->fbuf,
				  e.len);
		if (n >= 0) {
			PARLEY_ASSERT((uint32_t)n <= e.len);
			e.payload = m->fbuf;
			e.len = (uint32_t)n;
			m->st->filtered++;
		}
	}
	int rc = seg_writer_add(m->w, it->key, it->klen, &e);
	if (rc)
		return rc;
	if (!m->res.kept)
		m->res.first_kept = seq;
	m->res.last_kept = seq;
	m->res.kept++;
	m->st->entries_out++;
	return 0;
}

/* ---- idempotency records ---------------------------------------------------------- */

struct idem_vec {
	struct seg_idem *v;
	size_t n, cap;
	uint64_t min_ts;
};

static int idem_collect(void *arg, const struct seg_idem *rec)
{
	struct idem_vec *iv = arg;
	if (rec->ts < iv->min_ts)
		return 0;
	if (iv->n == iv->cap) {
		size_t nc = iv->cap ? iv->cap * 2 : 256;
		struct seg_idem *p = realloc(iv->v, nc * sizeof *p);
		if (!p)
			return -PARLEY_ENOMEM;
		iv->v = p;
		iv->cap = nc;
	}
	iv->v[iv->n++] = *rec; /* key points into the open input reader */
	return 0;
}

static int idem_cmp(const void *a, const void *b)
{
	const struct seg_idem *x = a, *y = b;
	int c = memcmp(x->key, y->key, PARLEY_MIN(x->klen, y->klen));
	if (!c)
		c = x->klen < y->klen ? -1 : x->klen > y->klen;
	if (!c)
		c = x->seq < y->seq ? -1 : x->seq > y->seq;
	if (!c)
		c = memcmp(x->producer, y->producer, PE_PRODUCER_LEN);
	return c;
}

/* Same batch start: the writer needs disjoint ranges per stream. */
static bool idem_same_start(const struct seg_idem *x, const struct seg_idem *y)
{
	return x->klen == y->klen && !memcmp(x->key, y->key, x->klen) &&
	       x->seq == y->seq;
}

/* Copy the inputs' records (deduplicated) into the output writer. */
static int idem_carry(struct seg_reader *const *inputs, size_t n,
		      struct seg_writer *w, uint64_t min_ts,
		      struct compact_stats *st)
{
	struct idem_vec iv = { .min_ts = min_ts };
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		struct seg_info si;
		seg_get_info(inputs[i], &si);
		st->idem_in += si.idem_records;
		rc = seg_idem_foreach(inputs[i], idem_collect, &iv);
	}
	if (!rc && iv.n)
		qsort(iv.v, iv.n, sizeof *iv.v, idem_cmp);
	for (size_t i = 0; i < iv.n && !rc; i++) {
		if (i && idem_same_start(&iv.v[i - 1], &iv.v[i]))
			continue;
		rc = seg_writer_add_idem(w, &iv.v[i]);
		st->idem_out += rc == 0;
	}
	free(iv.v);
	return rc;
}

int compact_run(struct seg_reader *const *inputs, size_t n,
		const struct compact_opts *o, struct compact_stats *st)
{
	memset(st, 0, sizeof *st);
	if (n == 0)
		return -PARLEY_EINVAL;
	struct merge m = { .o = o, .st = st, .in = inputs, .n = n };
	m.h = calloc(n, sizeof *m.h);
	if (!m.h)
		return -PARLEY_ENOMEM;
	for (size_t i = 0; i < n; i++)
		m.read0 += seg_bytes_read(inputs[i]);
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		rc = seg_iter_all(inputs[i], &m.h[i].it);
		if (!rc)
			rc = head_advance(&m.h[i]);
	}
	while (!rc) {
		size_t best = n;
		for (size_t i = 0; i < n; i++) {
			if (!m.h[i].valid)
				continue;
			if (best == n || cmp_items(&m.h[i].item, &m.h[best].item) < 0)
				best = i;
		}
		if (best == n)
			break;
		const struct seg_item *it = &m.h[best].item;
		st->entries_in++;
		if (!m.have_stream ||
		    it->klen != m.klen || memcmp(it->key, m.key, m.klen) != 0) {
			rc = stream_begin(&m, it->key, it->klen);
			if (rc)
				break;
		}
		rc = merge_emit(&m, it);
		if (rc)
			break;
		/* equal (key, seq) in other inputs: a retried merge's leftovers */
		for (size_t i = 0; i < n && !rc; i++) {
			if (i == best || !m.h[i].valid ||
			    cmp_items(&m.h[i].item, it) != 0)
				continue;
			st->duplicates++;
			st->entries_in++;
			rc = head_advance(&m.h[i]);
		}
		if (!rc)
			rc = head_advance(&m.h[best]);
		pace(&m, false);
	}
	if (!rc)
		stream_end(&m);
	for (size_t i = 0; i < n; i++)
		seg_iter_free(m.h[i].it);
	free(m.h);
	free(m.fbuf);
	for (size_t i = 0; i < n; i++)
		st->bytes_read += seg_bytes_read(inputs[i]);
	st->bytes_read -= m.read0;
	if (rc) {
		seg_writer_abort(m.w);
		return rc;
	}
	if (m.w) {
		rc = seg_writer_finish(m.w, &st->out);
		m.w = NULL;
		if (rc)
			return rc;
		st->output = true;
		st->bytes_written = st->out.file_bytes;
	}
	pace(&m, true);
	return 0;
}
