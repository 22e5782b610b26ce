/*
 * parley_common.h — the basics every parley component shares.
 *
 * What lives here:
 *   - error codes: 0 or a negative number, either -errno or -PARLEY_E*, from
 *     one X-macro table that also yields parley_strerror();
 *   - logfmt logging (`ts=... level=info comp=wal msg="..." k=v`);
 *   - explicit little-endian encode/decode helpers (never cast a struct onto
 *     a byte buffer);
 *   - xxh3-64 checksums;
 *   - clocks (wall ms, monotonic ns) for the edges; pure cores take time as an
 *     argument instead of calling these.
 *   - PARLEY_ASSERT: stays on in release builds (an invariant that would
 *     corrupt data if broken must crash loudly instead).
 *
 * Thread safety: everything here is safe to call from any thread.
 */
#ifndef PARLEY_COMMON_H
#define PARLEY_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------ */

/*
 * parley's own codes start at 1000 so they never collide with errno values;
 * functions return -PARLEY_Exxx. parley_strerror() also understands -errno.
 */
#define PARLEY_ERRORS(X)                                                       \
	X(PARLEY_EINVAL, 1000, "invalid argument")                             \
	X(PARLEY_ECORRUPT, 1001, "data corrupted (checksum mismatch)")         \
	X(PARLEY_ENOTFOUND, 1002, "not found")                                 \
	X(PARLEY_ETOOBIG, 1003, "too large")                                   \
	X(PARLEY_EFULL, 1004, "queue or memory limit reached")                 \
	X(PARLEY_ESEQ, 1005, "expected sequence number does not match")       \
	X(PARLEY_ECLOSED, 1006, "closed or shutting down")                     \
	X(PARLEY_EIO, 1007, "I/O error")                                       \
	X(PARLEY_EFATAL, 1008, "fatal: fsync failed, process must restart")    \
	X(PARLEY_EPROTO, 1009, "protocol error")                               \
	X(PARLEY_EAGAIN, 1010, "try again later")                              \
	X(PARLEY_EAUTH, 1011, "authentication failed")                         \
	X(PARLEY_EPERM, 1012, "permission denied")                             \
	X(PARLEY_EEXIST, 1013, "already exists")                               \
	X(PARLEY_ENOTLEADER, 1014, "not the leader")                           \
	X(PARLEY_ETIMEDOUT, 1015, "timed out")                                 \
	X(PARLEY_EVERSION, 1016, "unsupported version or format")              \
	X(PARLEY_ETRIMMED, 1017, "below the first retained sequence number")   \
	X(PARLEY_EINCOMPLETE, 1018, "incomplete input, need more bytes")       \
	X(PARLEY_ERATE, 1019, "rate limited")                                  \
	X(PARLEY_ENOMEM, 1020, "out of memory")                                \
	X(PARLEY_ELOCKED, 1021, "data directory in use by another process")    \
	/* edits and deletes (1035-1039) */                                    \
	X(PARLEY_EEXPIRED, 1035, "the time allowed for this change has passed") \
	X(PARLEY_EDELETED, 1036, "the message was deleted")                    \
	/* typing and presence (1045-1049) */                                  \
	X(PARLEY_ELIMIT, 1045, "a per-connection limit is reached")

enum parley_error {
#define PARLEY_ERR_ENUM(name, val, text) name = val,
	PARLEY_ERRORS(PARLEY_ERR_ENUM)
#undef PARLEY_ERR_ENUM
};

/* Text for a 0 / negative return code (parley's own or -errno). Never NULL. */
const char *parley_strerror(int err);
/* Symbolic name ("PARLEY_ECORRUPT", "EIO", ...) for logs. Never NULL. */
const char *parley_errname(int err);

/* ---- assertions (on in every build type) ------------------------------- */

void parley_assert_fail(const char *expr, const char *file, int line)
	__attribute__((noreturn));
#define PARLEY_ASSERT(e)                                                       \
	((e) ? (void)0 : parley_assert_fail(#e, __FILE__, __LINE__))

/* ---- logging (logfmt) --------------------------------------------------- */

enum parley_log_level { PLOG_DEBUG = 0, PLOG_INFO, PLOG_WARN, PLOG_ERROR };

/* Global threshold; messages below it are dropped. Default PLOG_INFO, or the
 * value of PARLEY_LOG_LEVEL (debug|info|warn|error) at first use. */
void parley_log_set_level(enum parley_log_level lvl);
enum parley_log_level parley_log_get_level(void);
/*
 * parley_log(PLOG_INFO, "wal", "segment rolled", "seg=%llu bytes=%zu", ...)
 * prints: ts=2026-11-24T11:00:00.123Z level=info comp=wal msg="segment rolled" seg=3 bytes=10
 * The last argument is a printf format for the key=value tail (may be "").
 * One write(2) per line to stderr, so lines from threads never interleave.
 */
void parley_log(enum parley_log_level lvl, const char *comp, const char *msg,
		const char *kvfmt, ...) __attribute__((format(printf, 4, 5)));

#define PLOG_D(comp, msg, ...) parley_log(PLOG_DEBUG, comp, msg, __VA_ARGS__)
#define PLOG_I(comp, msg, ...) parley_log(PLOG_INFO, comp, msg, __VA_ARGS__)
#define PLOG_W(comp, msg, ...) parley_log(PLOG_WARN, comp, msg, __VA_ARGS__)
#define PLOG_E(comp, msg, ...) parley_log(PLOG_ERROR, comp, msg, __VA_ARGS__)

/* ---- little-endian helpers --------------------------------------------- */

static inline void le_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void le_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void le_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t le_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t le_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) |
	       ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t le_get64(const uint8_t *p)
{
	return (uint64_t)le_get32(p) | ((uint64_t)le_get32(p + 4) << 32);
}

/*
 * A bounds-checked cursor for decoding untrusted bytes. Every getter returns
 * false once the input is exhausted and leaves the cursor "failed", so a
 * decoder can read a whole structure and check `ok` once at the end.
 */
struct le_reader {
	const uint8_t *p;
	size_t len;
	size_t off;
	bool ok;
};
static inline void le_reader_init(struct le_reader *r, const void *p, size_t len)
{
	r->p = (const uint8_t *)p;
	r->len = len;
	r->off = 0;
	r->ok = true;
}
static inline bool le_reader_need(struct le_reader *r, size_t n)
{
	if (!r->ok || r->len - r->off < n) {
		r->ok = false;
		return false;
	}
	return true;
}
static inline uint8_t le_read8(struct le_reader *r)
{
	return le_reader_need(r, 1) ? r->p[r->off++] : 0;
}
static inline uint16_t le_read16(struct le_reader *r)
{
	if (!le_reader_need(r, 2))
		return 0;
	r->off += 2;
	return le_get16(r->p + r->off - 2);
}
static inline uint32_t le_read32(struct le_reader *r)
{
	if (!le_reader_need(r, 4))
		return 0;
	r->off += 4;
	return le_get32(r->p + r->off - 4);
}
static inline uint64_t le_read64(struct le_reader *r)
{
	if (!le_reader_need(r, 8))
		return 0;
	r->off += 8;
	return le_get64(r->p + r->off - 8);
}
/* Returns a pointer into the input (no copy) or NULL when short. */
static inline const uint8_t *le_read_bytes(struct le_reader *r, size_t n)
{
	if (!le_reader_need(r, n))
		return NULL;
	r->off += n;
	return r->p + r->off - n;
}

/*
 * The writing twin of le_reader: a bounded cursor for encoding. Every putter
 * writes nothing once the buffer would overflow and leaves the writer
 * "failed", so an encoder can write a whole structure and check `ok` (and
 * take the length from `off`) once at the end.
 */
struct le_writer {
	uint8_t *p;
	size_t cap;
	size_t off;
	bool ok;
};
static inline void le_writer_init(struct le_writer *w, void *p, size_t cap)
{
	w->p = (uint8_t *)p;
	w->cap = cap;
	w->off = 0;
	w->ok = true;
}
/* Reserves n bytes and returns where they start, or NULL on overflow. */
static inline uint8_t *le_write_reserve(struct le_writer *w, size_t n)
{
	if (!w->ok || w->cap - w->off < n) {
		w->ok = false;
		return NULL;
	}
	w->off += n;
	return w->p + w->off - n;
}
static inline void le_write8(struct le_writer *w, uint8_t v)
{
	uint8_t *q = le_write_reserve(w, 1);
	if (q)
		*q = v;
}
static inline void le_write16(struct le_writer *w, uint16_t v)
{
	uint8_t *q = le_write_reserve(w, 2);
	if (q)
		le_put16(q, v);
}
static inline void le_write32(struct le_writer *w, uint32_t v)
{
	uint8_t *q = le_write_reserve(w, 4);
	if (q)
		le_put32(q, v);
}
static inline void le_write64(struct le_writer *w, uint64_t v)
{
	uint8_t *q = le_write_reserve(w, 8);
	if (q)
		le_put64(q, v);
}
/* src may be NULL when n is 0. */
static inline void le_write_bytes(struct le_writer *w, const void *src, size_t n)
{
	uint8_t *q = le_write_reserve(w, n);
	if (q && n)
		memcpy(q, src, n);
}

/* ---- checksums ---------------------------------------------------------- */

/* xxh3-64 of a buffer, with a seed (use a distinct seed per record kind). */
uint64_t parley_xxh3(const void *p, size_t len, uint64_t seed);
/* xxh3-64 of the key bytes: what maps a stream key to its partition. */
uint64_t parley_hash_key(const void *key, size_t len);

/* ---- clocks (edges only) ------------------------------------------------ */

uint64_t parley_now_ms(void);      /* CLOCK_REALTIME, milliseconds */
uint64_t parley_mono_ns(void);     /* CLOCK_MONOTONIC, nanoseconds */

/* ---- deterministic PRNG (for seeded tests, simulation, jitter) ---------- */

struct parley_rng {
	uint64_t s;
};
static inline uint64_t parley_rng_next(struct parley_rng *r)
{
	/* splitmix64: tiny, full-period, good enough for tests and jitter */
	uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}
/* Uniform in [0, n); n > 0. */
static inline uint64_t parley_rng_below(struct parley_rng *r, uint64_t n)
{
	return parley_rng_next(r) % n;
}

/* ---- base64url (RFC 4648 section 5, no padding), as JWTs use it ---------- */

/* Writes ceil(4n/3) characters and a NUL to out; returns the characters. */
size_t parley_b64url_encode(const void *in, size_t n, char *out);
/* Decodes n characters into at most cap bytes. Canonical form only: unused
 * low bits of the last character must be zero, so each byte string has one
 * spelling. Returns the bytes written, or -1 on a bad character, a length
 * that no encoding has (n % 4 == 1), non-canonical bits or too small cap. */
int parley_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* ---- network addresses ---------------------------------------------------- */

/* Splits s, "host:port" or "[v6-address]:port", in place (the client's
 * node list and leader hints, parleyctl's addresses): *host points into s,
 * NUL-terminated and never empty; *port is 1..65535. Returns 0, or
 * -PARLEY_EINVAL (s may then be changed). */
int parley_hostport_split(char *s, char **host, uint16_t *port);

/* ---- per-thread block pools (common/pool.c) --------------------------------
 *
 * For blocks made on one thread and freed on another on the hot path (a
 * SEND's engine request and chat job: made on an event loop, freed on an
 * engine shard). With glibc a block freed on a thread other than the one
 * whose arena made it takes that arena's lock, and the maker's own
 * malloc()s queue behind it (futex calls, bench/RESULTS.md). Here every
 * block goes back to the pool of the thread that made it:
 *   - a thread that called parley_pool_thread_start() allocates from its
 *     own free lists (size classes 256 B .. PARLEY_POOL_MAX_BLOCK), with
 *     no lock and no atomic read-modify-write but one counter;
 *   - a block freed on its maker's thread goes straight back on its list;
 *     freed on any other thread it is pushed onto the maker's return list
 *     (one lock-free push), which the maker takes whole (one exchange)
 *     when a list of its runs empty;
 *   - bounded: a pool keeps at most PARLEY_POOL_CACHE_BYTES on its free
 *     lists and frees the rest; its return list holds only blocks that
 *     were out (so at most what the thread had out at once);
 *   - a thread without a pool, or a block over PARLEY_POOL_MAX_BLOCK, is
 *     plain malloc/free behind the same header, so any thread may call
 *     parley_pool_alloc and parley_pool_free.
 * Lifetime: parley_pool_thread_end() (the owning thread, before it exits)
 * frees the free lists; the pool itself is freed with the last of its
 * blocks to come back, on whichever thread returns it. Blocks from
 * parley_pool_alloc must be freed with parley_pool_free, never free().
 * Thread safety: every call is safe from any thread; start, end and stats
 * concern the calling thread's own pool. */
#define PARLEY_POOL_MAX_BLOCK 4096u
#define PARLEY_POOL_CACHE_BYTES (1u << 20)

/* Gives the calling thread a pool: 0, -PARLEY_EEXIST if it has one,
 * -PARLEY_ENOMEM. */
int parley_pool_thread_start(void);
/* Releases the calling thread's pool (no-op without one). Blocks still
 * out stay valid and may be freed later from any thread. */
void parley_pool_thread_end(void);
/* n bytes aligned as malloc's, or NULL when out of memory. */
void *parley_pool_alloc(size_t n);
/* Frees a block of parley_pool_alloc (NULL is a no-op). */
void parley_pool_free(void *p);

struct parley_pool_stats {
	uint64_t cached_bytes;  /* on the free lists (<= PARLEY_POOL_CACHE_BYTES) */
	uint64_t cached_blocks;
	uint64_t out;           /* made by this pool, not yet freed */
	uint64_t hits;          /* allocations served from a free list */
	uint64_t misses;        /* allocations that called malloc */
	uint64_t returned;      /* blocks taken back from the return list */
};
/* The calling thread's pool: 0, or -PARLEY_ENOTFOUND without one. */
int parley_pool_thread_stats(struct parley_pool_stats *out);

#define PARLEY_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PARLEY_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PARLEY_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif /* PARLEY_COMMON_H */
