/*
 * chat_group.c — groups: membership state, membership changes, and the
 * group fan-out plan. See chat.h (groups) for the model and the roles.
 *
 * Memory: a hash table conversation -> struct group. A group holds every
 * membership interval it ever had (user, role, from, to; to = OPEN while
 * the user is a member), in creation order, and a per-user index to the
 * user's latest interval (older ones chain through `prev`). A role change
 * at seq S closes the user's interval at S - 1 and opens one at S, so an
 * interval list answers "member at seq N, with which role" exactly.
 * The group's name and settings are the latest CREATE / SET event's
 * (GROUP_SET is a membership event of op SET: same validation, storage,
 * apply and snapshot path as the others, adding no interval).
 *
 * Snapshots (m/<group>) carry intervals exactly as of their event; their
 * name and settings are those in memory when the fan-out wrote them (at
 * or after the event): replay of the later SET events makes them exact,
 * and a SET that changes nothing on replay is a no-op.
 *
 * Invariants
 *   1. Intervals are only added or closed by chat_groups_on_durable (live,
 *      on the engine shard in the stream's seq order) or by recovery
 *      (before any other thread runs): memory follows the stream order.
 *      chat_groups_reload (leadership gained) builds a partition's groups
 *      aside from storage and swaps them in under the write lock, while
 *      chat_groups_ready keeps requests about them off (AGAIN).
 *   2. At most one membership change per group is between validation and
 *      its durable callback (g->busy): validation sees every earlier
 *      change, so a stored event is always valid at its seq.
 *   3. A user's intervals do not overlap; a user has at most one OPEN one.
 *   4. g->as_of = the seq of the last applied event; snapshots carry it and
 *      replay skips events at or below it.
 *
 * Bounds: members <= max_members (config group_max_members); intervals per
 * group <= MAX_INTERVALS (so its snapshot fits one entry: membership churn
 * beyond it is refused with ETOOBIG); users per change <=
 * CHAT_GROUP_MAX_TARGETS.
 *
 * Threads: one rwlock over the table and every group (readers: membership
 * questions, the fan-out planner; writers: changes, durable callbacks).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "chat_group.h"
#include "parley_proto.h"

#define OPEN UINT64_MAX
#define NOIDX UINT32_MAX
#define GEV_VERSION 1u
#define GSNAP_VERSION 1u
/* Intervals a group keeps (members now and past, a role change adds one):
 * its snapshot (<= 139 bytes an interval) must fit one engine entry. */
#define GSNAP_IV_MAX (1u + PARLEY_PROTO_MAX_USER_ID + 2u + 16u)
#define MAX_INTERVALS ((PE_MAX_PAYLOAD - 4096u) / GSNAP_IV_MAX)
_Static_assert(MAX_INTERVALS >= CHAT_GROUP_MAX_HARD + CHAT_GROUP_MAX_TARGETS,
	       "a full group must still take a change");

struct giv {
	uint64_t from, to;      /* inclusive; to = OPEN while a member */
	uint32_t prev;          /* the user's previous interval, or NOIDX */
	uint8_t role;
	uint8_t ulen;
	bool split;             /* closed by a role change: the user's next
				   interval starts at to + 1 */
	char user[PARLEY_PROTO_MAX_USER_ID];
};

struct group {
	struct group *next;     /* hash chain */
	uint64_t h;
	uint64_t as_of;         /* last applied event (0 = being created) */
	uint64_t last_seq;      /* recovery: the stream's last seq */
	uint64_t load_from;     /* recovery: replay from here (OPEN = none) */
	struct giv *iv;
	uint32_t n, cap;
	uint32_t *ux;           /* user index: latest interval + 1, 0 = free */
	uint32_t uxcap, nusers;
	uint32_t nactive;
	uint8_t settings;
	bool busy;              /* a change is between validation and durable */
	uint16_t name_len;
	char name[256];
	uint16_t len;
	char conv[CHAT_GROUP_ID_LEN + 1];
};

struct chat_groups {
	pthread_rwlock_t lk;
	struct group **tab;
	uint32_t cap, n;
	uint32_t max_members;
	_Atomic uint64_t changes, refused; /* /metrics */
};

void chat_groups_stats(struct chat_groups *gs, uint64_t *groups,
		       uint64_t *changes, uint64_t *refused)
{
	pthread_rwlock_rdlock(&gs->lk);
	*groups = gs->n;
	pthread_rwlock_unlock(&gs->lk);
	*changes = atomic_load(&gs->changes);
	*refused = atomic_load(&gs->refused);
}

/* ---- ids, keys, producers ---------------------------------------------------- */

bool chat_conv_is_group(const char *conv, size_t len)
{
	if (len != CHAT_GROUP_ID_LEN || conv[0] != 'g' || conv[1] != ':')
		return false;
	for (size_t i = 2; i < len; i++) {
		char ch = conv[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return false;
	}
	return true;
}

int chat_key_gsnap(char *out, const char *conv, size_t len)
{
	if (!chat_conv_is_group(conv, len))
		return -PARLEY_EINVAL;
	memcpy(out, "m/", 2);
	memcpy(out + 2, conv, len);
	out[2 + len] = '\0';
	return (int)(2 + len);
}

static void producer_hash(uint8_t out[16], const uint8_t *in, size_t n)
{
	le_put64(out, parley_xxh3(in, n, 0x7061726c65792d31ull));
	le_put64(out + 8, parley_xxh3(in, n, 0x6368617466616e6full));
}

void chat_producer_gsnap(uint8_t out[16], const char *conv, size_t len,
			 uint64_t seq)
{
	uint8_t in[1 + 2 + 255 + 8];
	PARLEY_ASSERT(len <= 255);
	in[0] = 'M';
	le_put16(in + 1, (uint16_t)len);
	memcpy(in + 3, conv, len);
	le_put64(in + 3 + len, seq);
	producer_hash(out, in, 3 + len + 8);
}

/* The group id and the CREATE event's producer, both from (creator,
 * create_id): a retried CREATE names the same group and the same entry. */
static void group_create_key(uint8_t out[16], const char *actor, size_t alen,
			     const uint8_t id[16])
{
	uint8_t in[1 + 2 + 255 + 16];
	PARLEY_ASSERT(alen <= 255);
	in[0] = 'G';
	le_put16(in + 1, (uint16_t)alen);
	memcpy(in + 3, actor, alen);
	memcpy(in + 3 + alen, id, 16);
	producer_hash(out, in, 3 + alen + 16);
}

static void group_id_of(char out[CHAT_GROUP_ID_LEN + 1], const uint8_t key[16])
{
	static const char hx[] = "0123456789abcdef";
	out[0] = 'g';
	out[1] = ':';
	for (int i = 0; i < 8; i++) {
		out[2 + 2 * i] = hx[key[i] >> 4];
		out[3 + 2 * i] = hx[key[i] & 15];
	}
	out[CHAT_GROUP_ID_LEN] = '\0';
}

/* ---- event records ------------------------------------------------------------- */

struct gev_target {
	const char *user;
	uint8_t ulen;
	uint8_t role;
};

static int gev_encode(uint8_t *buf, size_t cap, uint8_t op, uint8_t settings,
		      const char *actor, size_t alen, const char *name,
		      size_t nlen, const struct gev_target *t, uint32_t n)
{
	size_t need = 1 + 1 + 1 + 1 + alen + 2 + nlen + 2;
	for (uint32_t i = 0; i < n; i++)
		need += 1 + t[i].ulen + 1;
	if (need > cap || alen > 255 || nlen > 255 || n > 65535)
		return -PARLEY_ETOOBIG;
	struct le_writer w;
	le_writer_init(&w, buf, cap);
	le_write8(&w, GEV_VERSION);
	le_write8(&w, op);
	le_write8(&w, settings);
	le_write8(&w, (uint8_t)alen);
	le_write_bytes(&w, actor, alen);
	le_write16(&w, (uint16_t)nlen);
	le_write_bytes(&w, name, nlen);
	le_write16(&w, (uint16_t)n);
	for (uint32_t i = 0; i < n; i++) {
		le_write8(&w, t[i].ulen);
		le_write_bytes(&w, t[i].user, t[i].ulen);
		le_write8(&w, t[i].role);
	}
	PARLEY_ASSERT(w.ok && w.off == need);
	return (int)w.off;
}

int chat_gev_decode(const uint8_t *p, size_t len, struct chat_gev *out)
{
	struct le_reader r;
	le_reader_init(&r, p, len);
	if (le_read8(&r) != GEV_VERSION)
		return -PARLEY_ECORRUPT;
	out->op = le_read8(&r);
	out->settings = le_read8(&r);
	out->actor_len = le_read8(&r);
	out->actor = (const char *)le_read_bytes(&r, out->actor_len);
	out->name_len = le_read16(&r);
	out->name = (const char *)le_read_bytes(&r, out->name_len);
	out->n = le_read16(&r);
	if (!r.ok)
		return -PARLEY_ECORRUPT;
	out->targets = p + r.off;
	out->targets_len = (uint32_t)(len - r.off);
	/* check the list once so chat_gev_next can trust it */
	uint32_t off = 0;
	for (uint32_t i = 0; i < out->n; i++) {
		if (off >= out->targets_len)
			return -PARLEY_ECORRUPT;
		uint32_t ul = out->targets[off];
		if (ul == 0 || off + 1 + ul + 1 > out->targets_len)
			return -PARLEY_ECORRUPT;
		off += 1 + ul + 1;
	}
	return 0;
}

int chat_gev_next(const struct chat_gev *ev, uint32_t *off, const char **user,
		  uint8_t *ulen, uint8_t *role)
{
	if (*off >= ev->targets_len)
		return 0;
	uint8_t ul = ev->targets[*off];
	if (ul == 0 || *off + 1u + ul + 1u > ev->targets_len)
		return 0;
	*ulen = ul;
	*user = (const char *)ev->targets + *off + 1;
	*role = ev->targets[*off + 1 + ul];
	*off += 1u + ul + 1u;
	return 1;
}

/* ---- the table ------------------------------------------------------------------- */

static uint64_t hkey(const char *p, size_t len)
{
	uint64_t h = parley_xxh3(p, len, 0x67726f7570736b31ull);
	return h ? h : 1;
}

struct chat_groups *chat_groups_new(void)
{
	struct chat_groups *gs = calloc(1, sizeof *gs);
	if (!gs)
		return NULL;
	gs->cap = 256;
	gs->tab = calloc(gs->cap, sizeof *gs->tab);
	if (!gs->tab) {
		free(gs);
		return NULL;
	}
	gs->max_members = CHAT_GROUP_MAX_DEFAULT;
	pthread_rwlock_init(&gs->lk, NULL);
	return gs;
}

static void group_free(struct group *g)
{
	free(g->iv);
	free(g->ux);
	free(g);
}

void chat_groups_free(struct chat_groups *gs)
{
	if (!gs)
		return;
	for (uint32_t i = 0; i < gs->cap; i++) {
		while (gs->tab[i]) {
			struct group *g = gs->tab[i];
			gs->tab[i] = g->next;
			group_free(g);
		}
	}
	pthread_rwlock_destroy(&gs->lk);
	free(gs->tab);
	free(gs);
}

void chat_groups_set_max(struct chat_groups *gs, uint32_t max_members)
{
	if (max_members < 1)
		max_members = 1;
	if (max_members > CHAT_GROUP_MAX_HARD)
		max_members = CHAT_GROUP_MAX_HARD;
	pthread_rwlock_wrlock(&gs->lk);
	gs->max_members = max_members;
	pthread_rwlock_unlock(&gs->lk);
}

static struct group *g_find(struct chat_groups *gs, const char *conv,
			    size_t len)
{
	if (!chat_conv_is_group(conv, len))
		return NULL;
	uint64_t h = hkey(conv, len);
	for (struct group *g = gs->tab[h & (gs->cap - 1)]; g; g = g->next)
		if (g->h == h && g->len == len && !memcmp(g->conv, conv, len))
			return g;
	return NULL;
}

/* A group that exists for clients (its CREATE is durable). */
static struct group *g_live(struct chat_groups *gs, const char *conv,
			    size_t len)
{
	struct group *g = g_find(gs, conv, len);
	return g && g->as_of ? g : NULL;
}

static struct group *g_insert(struct chat_groups *gs, const char *conv,
			      size_t len)
{
	if ((gs->n + 1) * 4 > gs->cap * 3) {
		uint32_t cap = gs->cap * 2;
		struct group **t = calloc(cap, sizeof *t);
		if (!t)
			return NULL;
		for (uint32_t i = 0; i < gs->cap; i++) {
			while (gs->tab[i]) {
				struct group *g = gs->tab[i];
				gs->tab[i] = g->next;
				g->next = t[g->h & (cap - 1)];
				t[g->h & (cap - 1)] = g;
			}
		}
		free(gs->tab);
		gs->tab = t;
		gs->cap = cap;
	}
	struct group *g = calloc(1, sizeof *g);
	if (!g)
		return NULL;
	g->h = hkey(conv, len);
	g->len = (uint16_t)len;
	memcpy(g->conv, conv, len);
	g->load_from = OPEN;
	g->next = gs->tab[g->h & (gs->cap - 1)];
	gs->tab[g->h & (gs->cap - 1)] = g;
	gs->n++;
	return g;
}

static void g_remove(struct chat_groups *gs, struct group *g)
{
	struct group **pp = &gs->tab[g->h & (gs->cap - 1)];
	while (*pp != g)
		pp = &(*pp)->next;
	*pp = g->next;
	gs->n--;
	group_free(g);
}

/* ---- per-user index ----------------------------------------------------------------- */

static uint32_t uhash(const char *u, size_t n)
{
	return (uint32_t)parley_xxh3(u, n, 0x75736572696478ull);
}

/* Slot of user in g->ux (its value 0 when absent). */
static uint32_t ux_slot(const struct group *g, const char *u, size_t n)
{
	uint32_t m = g->uxcap - 1;
	for (uint32_t i = uhash(u, n) & m;; i = (i + 1) & m) {
		uint32_t v = g->ux[i];
		if (v == 0)
			return i;
		const struct giv *x = &g->iv[v - 1];
		if (x->ulen == n && !memcmp(x->user, u, n))
			return i;
	}
}

/* The user's latest interval, or NOIDX. */
static uint32_t g_latest(const struct group *g, const char *u, size_t n)
{
	if (!g->uxcap || n == 0 || n > PARLEY_PROTO_MAX_USER_ID)
		return NOIDX;
	uint32_t v = g->ux[ux_slot(g, u, n)];
	return v ? v - 1 : NOIDX;
}

static int ux_grow(struct group *g)
{
	uint32_t cap = g->uxcap ? g->uxcap * 2 : 64;
	uint32_t *t = calloc(cap, sizeof *t);
	if (!t)
		return -PARLEY_ENOMEM;
	uint32_t *old = g->ux, ocap = g->uxcap;
	g->ux = t;
	g->uxcap = cap;
	for (uint32_t i = 0; i < ocap; i++)
		if (old[i]) {
			const struct giv *x = &g->iv[old[i] - 1];
			g->ux[ux_slot(g, x->user, x->ulen)] = old[i];
		}
	free(old);
	return 0;
}

static int g_open_iv(struct group *g, const char *u, size_t n, uint8_t role,
		     uint64_t from)
{
	if (g->n == g->cap) {
		uint32_t cap = g->cap ? g->cap * 2 : 16;
		struct giv *t = realloc(g->iv, (size_t)cap * sizeof *t);
		if (!t)
			return -PARLEY_ENOMEM;
		g->iv = t;
		g->cap = cap;
	}
	if ((g->nusers + 1) * 2 > g->uxcap && ux_grow(g))
		return -PARLEY_ENOMEM;
	uint32_t s = ux_slot(g, u, n);
	struct giv *x = &g->iv[g->n];
	x->from = from;
	x->to = OPEN;
	x->prev = g->ux[s] ? g->ux[s] - 1 : NOIDX;
	x->role = role;
	x->split = false;
	x->ulen = (uint8_t)n;
	memcpy(x->user, u, n);
	if (!g->ux[s])
		g->nusers++;
	g->ux[s] = ++g->n;
	g->nactive++;
	return 0;
}

static uint8_t g_role_now(const struct group *g, const char *u, size_t n)
{
	uint32_t i = g_latest(g, u, n);
	return i != NOIDX && g->iv[i].to == OPEN ? g->iv[i].role : CHAT_ROLE_NONE;
}

/* The interval covering seq, or NOIDX. */
static uint32_t g_iv_at(const struct group *g, const char *u, size_t n,
			uint64_t seq)
{
	for (uint32_t i = g_latest(g, u, n); i != NOIDX; i = g->iv[i].prev)
		if (g->iv[i].from <= seq && seq <= g->iv[i].to)
			return i;
	return NOIDX;
}

/* The earliest member other than `not` with the highest role below owner
 * (who inherits ownership when the owner leaves). */
static uint32_t g_heir(const struct group *g, const char *not, size_t nlen)
{
	uint32_t best = NOIDX;
	for (uint32_t i = 0; i < g->n; i++) {
		const struct giv *x = &g->iv[i];
		if (x->to != OPEN ||
		    (x->ulen == nlen && !memcmp(x->user, not, nlen)))
			continue;
		if (best == NOIDX || x->role > g->iv[best].role ||
		    (x->role == g->iv[best].role && x->from < g->iv[best].from))
			best = i;
	}
	return best;
}

/* ---- validation and apply (one code path: dry = validate only) ----------------------- */

static bool role_ok(uint8_t r)
{
	return r == CHAT_ROLE_MEMBER || r == CHAT_ROLE_ADMIN ||
	       r == CHAT_ROLE_OWNER;
}

/* SET (GROUP_SET): the event carries the name and settings as they are
 * after it. Checked: a valid name and known settings; renaming needs owner
 * or admin, the history setting owner. dry: -PARLEY_EEXIST when it changes
 * nothing (chat_group_set answers that as done). Applied (not dry): copies
 * both; an event that changes nothing (a replay over a snapshot that
 * already holds it) is a no-op, not an error. */
static int g_apply_set(struct group *g, const struct chat_gev *ev, uint8_t ar,
		       bool dry, const char **w)
{
	if (ev->n || ev->name_len < 1 || ev->name_len > 255) {
		*w = "a group name is 1-255 bytes of UTF-8";
		return -PARLEY_EINVAL;
	}
	uint8_t st = ev->settings & (uint8_t)~CHAT_GEV_SET_MARKS;
	if (st & ~CHAT_GROUP_HISTORY_ALL) {
		*w = "unknown setting (bit 0: new members read the whole history)";
		return -PARLEY_EINVAL;
	}
	bool rename = ev->name_len != g->name_len ||
		      memcmp(ev->name, g->name, g->name_len) != 0;
	bool resetting = st != g->settings;
	if (dry && !rename && !resetting) {
		*w = "nothing changes";
		return -PARLEY_EEXIST;
	}
	if (resetting && ar != CHAT_ROLE_OWNER) {
		*w = "only the owner may change the history setting";
		return -PARLEY_EPERM;
	}
	if (rename && ar < CHAT_ROLE_ADMIN) {
		*w = "only the owner and admins may rename the group";
		return -PARLEY_EPERM;
	}
	if (!dry) {
		memcpy(g->name, ev->name, ev->name_len);
		g->name_len = ev->name_len;
		g->settings = st;
	}
	return 0;
}

/* Applies (or with dry, checks) event ev at seq to g. why may be NULL. */
static int g_apply(const struct chat_groups *gs, struct group *g, uint64_t seq,
		   const struct chat_gev *ev, bool dry, const char **why)
{
	const char *w = NULL;
	int rc = 0;
	uint8_t ar = g_role_now(g, ev->actor, ev->actor_len);
	uint32_t off = 0;
	const char *u;
	uint8_t ul, role;
	if (ev->op != CHAT_GOP_CREATE && ar == CHAT_ROLE_NONE) {
		rc = -PARLEY_EPERM;
		w = "not a member of this group";
		goto out;
	}
	if (dry && ev->op != CHAT_GOP_SET && /* SET adds no interval */
	    g->n + (uint32_t)ev->n + 2u > MAX_INTERVALS) {
		rc = -PARLEY_ETOOBIG;
		w = "membership history of this group is full";
		goto out;
	}
	switch (ev->op) {
	case CHAT_GOP_CREATE: {
		if (g->as_of || g->nactive) {
			rc = -PARLEY_EEXIST;
			w = "group exists";
			goto out;
		}
		if ((uint32_t)ev->n + 1 > gs->max_members) {
			rc = -PARLEY_ETOOBIG;
			w = "more members than group_max_members";
			goto out;
		}
		if (dry)
			break;
		g->name_len = ev->name_len;
		memcpy(g->name, ev->name, ev->name_len);
		g->settings = ev->settings;
		rc = g_open_iv(g, ev->actor, ev->actor_len, CHAT_ROLE_OWNER, seq);
		while (!rc && chat_gev_next(ev, &off, &u, &ul, &role))
			if (g_role_now(g, u, ul) == CHAT_ROLE_NONE)
				rc = g_open_iv(g, u, ul, role, seq);
		break;
	}
	case CHAT_GOP_ADD: {
		if (ar < CHAT_ROLE_ADMIN) {
			rc = -PARLEY_EPERM;
			w = "only the owner and admins may add members";
			goto out;
		}
		uint32_t fresh = 0;
		while (chat_gev_next(ev, &off, &u, &ul, &role)) {
			if (role == CHAT_ROLE_ADMIN && ar != CHAT_ROLE_OWNER) {
				rc = -PARLEY_EPERM;
				w = "only the owner may add admins";
				goto out;
			}
			if (g_role_now(g, u, ul) == CHAT_ROLE_NONE)
				fresh++;
		}
		if (fresh == 0) {
			rc = -PARLEY_EEXIST; /* chat_group_change: a no-op */
			w = "already members";
			goto out;
		}
		if (g->nactive + fresh > gs->max_members) {
			rc = -PARLEY_ETOOBIG;
			w = "group full (group_max_members)";
			goto out;
		}
		if (dry)
			break;
		off = 0;
		while (!rc && chat_gev_next(ev, &off, &u, &ul, &role))
			if (g_role_now(g, u, ul) == CHAT_ROLE_NONE)
				rc = g_open_iv(g, u, ul, role, seq);
		break;
	}
	case CHAT_GOP_REMOVE: {
		while (chat_gev_next(ev, &off, &u, &ul, &role)) {
			uint8_t tr = g_role_now(g, u, ul);
			if (tr == CHAT_ROLE_NONE) {
				rc = -PARLEY_ENOTFOUND;
				w = "not a member of this group";
				goto out;
			}
			if (ul == ev->actor_len && !memcmp(u, ev->actor, ul)) {
				rc = -PARLEY_EINVAL;
				w = "use leave to remove yourself";
				goto out;
			}
			if (ar < CHAT_ROLE_ADMIN || tr >= ar) {
				rc = -PARLEY_EPERM;
				w = ar < CHAT_ROLE_ADMIN
					    ? "only the owner and admins may remove members"
					    : "admins may remove plain members only";
				goto out;
			}
		}
		if (dry)
			break;
		off = 0;
		while (chat_gev_next(ev, &off, &u, &ul, &role)) {
			uint32_t i = g_latest(g, u, ul);
			if (i != NOIDX && g->iv[i].to == OPEN) {
				g->iv[i].to = seq;
				g->nactive--;
			}
		}
		break;
	}
	case CHAT_GOP_LEAVE: {
		if (dry)
			break;
		uint32_t i = g_latest(g, ev->actor, ev->actor_len);
		g->iv[i].to = seq;
		g->nactive--;
		if (ar == CHAT_ROLE_OWNER) {
			uint32_t h = g_heir(g, ev->actor, ev->actor_len);
			if (h != NOIDX) {
				struct giv x = g->iv[h];
				g->iv[h].to = seq - 1;
				g->iv[h].split = true;
				g->nactive--;
				rc = g_open_iv(g, x.user, x.ulen, CHAT_ROLE_OWNER, seq);
			}
		}
		break;
	}
	case CHAT_GOP_ROLE: {
		if (ar != CHAT_ROLE_OWNER) {
			rc = -PARLEY_EPERM;
			w = "only the owner may change roles";
			goto out;
		}
		bool transfer = false;
		while (chat_gev_next(ev, &off, &u, &ul, &role)) {
			if (!role_ok(role)) {
				rc = -PARLEY_EINVAL;
				w = "unknown role";
				goto out;
			}
			if (g_role_now(g, u, ul) == CHAT_ROLE_NONE) {
				rc = -PARLEY_ENOTFOUND;
				w = "not a member of this group";
				goto out;
			}
			if (ul == ev->actor_len && !memcmp(u, ev->actor, ul)) {
				rc = -PARLEY_EINVAL;
				w = "the owner's role changes by giving OWNER to someone";
				goto out;
			}
			if (role == CHAT_ROLE_OWNER) {
				if (transfer) {
					rc = -PARLEY_EINVAL;
					w = "one owner";
					goto out;
				}
				transfer = true;
			}
		}
		if (dry)
			break;
		off = 0;
		while (!rc && chat_gev_next(ev, &off, &u, &ul, &role)) {
			uint32_t i = g_latest(g, u, ul);
			if (g->iv[i].role == role)
				continue;
			g->iv[i].to = seq - 1;
			g->iv[i].split = true;
			g->nactive--;
			rc = g_open_iv(g, u, ul, role, seq);
		}
		if (!rc && transfer) {
			uint32_t i = g_latest(g, ev->actor, ev->actor_len);
			g->iv[i].to = seq - 1;
			g->iv[i].split = true;
			g->nactive--;
			rc = g_open_iv(g, ev->actor, ev->actor_len, CHAT_ROLE_ADMIN,
				       seq);
		}
		break;
	}
	case CHAT_GOP_SET:
		rc = g_apply_set(g, ev, ar, dry, &w);
		if (rc)
			goto out;
		break;
	default:
		rc = -PARLEY_EINVAL;
		w = "unknown membership operation";
		goto out;
	}
	if (!dry && !rc)
		g->as_of = seq;
out:
	if (why)
		*why = w;
	return rc;
}

/* ---- membership questions (chat.h) ---------------------------------------------------- */

int chat_groups_send_check(struct chat_groups *gs, const char *conv,
			   size_t len, const char *user, size_t ulen)
{
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_live(gs, conv, len);
	int rc = !g ? -PARLEY_ENOTFOUND
		 : g_role_now(g, user, ulen) ? 0
					     : -PARLEY_EPERM;
	pthread_rwlock_unlock(&gs->lk);
	return rc;
}

int chat_member_role(struct chat *c, const char *conv, size_t len,
		     const char *user, size_t ulen)
{
	if (!chat_conv_is_group(conv, len)) {
		struct chat_member m[2];
		if (chat_conv_members(conv, len, m) < 0)
			return -PARLEY_ENOTFOUND;
		return chat_conv_has_member(conv, len, user, ulen)
			       ? CHAT_ROLE_MEMBER
			       : CHAT_ROLE_NONE;
	}
	int rc = chat_groups_ready(c, conv, len);
	if (rc)
		return rc;
	struct chat_groups *gs = chat_groups_of(c);
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_live(gs, conv, len);
	rc = g ? g_role_now(g, user, ulen) : -PARLEY_ENOTFOUND;
	pthread_rwlock_unlock(&gs->lk);
	return rc;
}

bool chat_is_member(struct chat *c, const char *conv, size_t len,
		    const char *user, size_t ulen)
{
	return chat_member_role(c, conv, len, user, ulen) > CHAT_ROLE_NONE;
}

bool chat_member_at(struct chat *c, const char *conv, size_t len,
		    const char *user, size_t ulen, uint64_t seq)
{
	if (!chat_conv_is_group(conv, len))
		return chat_conv_has_member(conv, len, user, ulen);
	struct chat_groups *gs = chat_groups_of(c);
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_live(gs, conv, len);
	bool r = g && g_iv_at(g, user, ulen, seq) != NOIDX;
	pthread_rwlock_unlock(&gs->lk);
	return r;
}

/* The start of the run of intervals ending with interval i (role changes
 * split a membership without a gap): where that membership began. */
static uint64_t g_run_start(const struct group *g, uint32_t i)
{
	uint64_t from = g->iv[i].from;
	for (uint32_t p = g->iv[i].prev; p != NOIDX; p = g->iv[p].prev) {
		if (!g->iv[p].split || g->iv[p].to + 1 != from)
			break;
		from = g->iv[p].from;
	}
	return from;
}

uint64_t chat_member_visible_from(struct chat *c, const char *conv,
				  size_t len, const char *user, size_t ulen)
{
	if (!chat_conv_is_group(conv, len))
		return chat_conv_has_member(conv, len, user, ulen) ? 1 : 0;
	struct chat_groups *gs = chat_groups_of(c);
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_live(gs, conv, len);
	uint64_t from = 0;
	uint32_t i = g ? g_latest(g, user, ulen) : NOIDX;
	if (i != NOIDX && g->iv[i].to == OPEN) {
		from = g->settings & CHAT_GROUP_HISTORY_ALL ? 1
							    : g_run_start(g, i);
	}
	pthread_rwlock_unlock(&gs->lk);
	return from;
}

int chat_members_each(struct chat *c, const char *conv, size_t len,
		      uint64_t seq, uint32_t skip, uint32_t limit,
		      chat_member_fn fn, void *arg)
{
	if (!chat_conv_is_group(conv, len)) {
		struct chat_member m[2];
		int n = chat_conv_members(conv, len, m);
		uint32_t calls = 0;
		for (int i = (int)skip; i < n && (!limit || calls < limit); i++, calls++)
			fn(arg, m[i].p, m[i].len, CHAT_ROLE_MEMBER);
		return n;
	}
	/* who the members are "now" is only known where the group's
	 * changes are applied (a follower's table is stale): receipts and
	 * typing pushes must not go by it */
	int ready = seq == UINT64_MAX ? chat_groups_ready(c, conv, len) : 0;
	if (ready)
		return ready;
	struct chat_groups *gs = chat_groups_of(c);
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_live(gs, conv, len);
	int count = g ? 0 : -PARLEY_ENOTFOUND;
	uint32_t calls = 0;
	for (uint32_t i = 0; g && i < g->n; i++) {
		const struct giv *x = &g->iv[i];
		if (!(x->from <= seq && seq <= x->to))
			continue;
		if ((uint32_t)count++ < skip || (limit && calls >= limit))
			continue;
		calls++;
		fn(arg, x->user, x->ulen, x->role);
	}
	pthread_rwlock_unlock(&gs->lk);
	return count;
}

int chat_group_meta(struct chat *c, const char *conv, size_t len,
		    struct chat_group_meta *out)
{
	struct chat_groups *gs = chat_groups_of(c);
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_live(gs, conv, len);
	if (g) {
		memcpy(out->name, g->name, g->name_len);
		out->name_len = g->name_len;
		out->settings = g->settings;
		out->member_count = g->nactive;
		out->as_of = g->as_of;
	}
	pthread_rwlock_unlock(&gs->lk);
	return g ? 0 : -PARLEY_ENOTFOUND;
}

int chat_group_info(struct chat *c, const char *user, size_t ulen,
		    const char *conv, size_t len, uint32_t from, uint16_t limit,
		    struct parley_msg *m, char *store, size_t cap)
{
	struct chat_groups *gs = chat_groups_of(c);
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_GROUP_INFO_OK;
	struct parley_group_info_ok *gi = &m->group_info_ok;
	if (limit > PARLEY_PROTO_MAX_GROUP_USERS)
		limit = PARLEY_PROTO_MAX_GROUP_USERS;
	int ready = chat_groups_ready(c, conv, len);
	if (ready)
		return ready;
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_live(gs, conv, len);
	int rc = !g ? -PARLEY_ENOTFOUND : 0;
	uint8_t my = g ? g_role_now(g, user, ulen) : 0;
	if (!rc && !my)
		rc = -PARLEY_EPERM;
	if (!rc) {
		gi->conv = (struct parley_str){conv, (uint16_t)len};
		size_t used = 0;
		if (g->name_len <= cap) {
			memcpy(store, g->name, g->name_len);
			gi->name = (struct parley_str){store, g->name_len};
			used = g->name_len;
		}
		gi->settings = g->settings;
		gi->my_role = my;
		gi->member_count = g->nactive;
		gi->as_of_seq = g->as_of;
		uint32_t idx = 0;
		for (uint32_t i = 0; i < g->n; i++) {
			const struct giv *x = &g->iv[i];
			if (x->to != OPEN)
				continue;
			if (idx++ < from)
				continue;
			if (gi->count == limit || used + x->ulen > cap) {
				gi->next_index = idx - 1;
				break;
			}
			memcpy(store + used, x->user, x->ulen);
			gi->members[gi->count++] = (struct parley_group_member){
				{store + used, x->ulen}, x->role};
			used += x->ulen;
		}
	}
	pthread_rwlock_unlock(&gs->lk);
	return rc;
}

int chat_group_left(struct chat *c, const char *conv, size_t len,
		    const char *user, size_t ulen, uint64_t *left_seq,
		    uint32_t *members, uint64_t *vis_from)
{
	struct chat_groups *gs = chat_groups_of(c);
	int rc = chat_groups_ready(c, conv, len);
	if (rc)
		return rc;
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_live(gs, conv, len);
	uint32_t i = g ? g_latest(g, user, ulen) : NOIDX;
	if (g && i != NOIDX)
		*vis_from = g->settings & CHAT_GROUP_HISTORY_ALL ? 1
								 : g_run_start(g, i);
	if (!g || i == NOIDX) {
		rc = -PARLEY_ENOTFOUND;
	} else if (g->iv[i].to != OPEN) {
		/* the latest interval is never split (a split one is followed
		 * by the user's next): it ended at their REMOVE / LEAVE */
		uint64_t r = g->iv[i].to;
		uint32_t after = 0;
		for (uint32_t k = 0; k < g->n; k++) /* members at r + 1 */
			after += g->iv[k].from <= r &&
				 (r < g->iv[k].to ||
				  (g->iv[k].split && g->iv[k].to == r));
		*left_seq = r;
		*members = after;
		rc = 1;
	}
	pthread_rwlock_unlock(&gs->lk);
	return rc;
}

void chat_set_group_max(struct chat *c, uint32_t max_members)
{
	chat_groups_set_max(chat_groups_of(c), max_members);
}

/* ---- changes ------------------------------------------------------------------------------ */

struct change_ctx {
	struct chat *c;
	chat_group_cb cb;
	void *arg;
	uint8_t op;
	uint8_t actor_len;
	char actor[PARLEY_PROTO_MAX_USER_ID];
	struct chat_group_result res; /* CREATE: kept while the list entry is stored */
	uint16_t len;
	char conv[CHAT_GROUP_ID_LEN + 1];
};

/* CREATE: the creator's list entry is durable: answer. */
static void create_list_cb(void *arg, const struct pe_append_result *r)
{
	struct change_ctx *x = arg;
	if (r->err) /* the group exists; the fan-out writes the entry again */
		PLOG_W("chat", "group list entry of its creator failed", "conv=%.*s "
		       "err=%s", (int)x->len, x->conv, parley_errname(r->err));
	x->cb(x->arg, &x->res);
	free(x);
}

/* Engine shard, after chat_groups_on_durable applied the event. */
static void change_cb(void *arg, const struct chat_send_result *r)
{
	struct change_ctx *x = arg;
	struct chat_groups *gs = chat_groups_of(x->c);
	struct chat_group_result res = {.err = r->err, .seq = r->seq,
					.duplicate = r->duplicate,
					.conv_len = x->len};
	memcpy(res.conv, x->conv, x->len);
	pthread_rwlock_wrlock(&gs->lk);
	struct group *g = g_find(gs, x->conv, x->len);
	if (g) {
		g->busy = false;
		if (r->err && !g->as_of)
			g_remove(gs, g); /* the CREATE failed: no group */
	}
	pthread_rwlock_unlock(&gs->lk);
	if (r->err)
		res.why = "the change could not be stored";
	if (!r->err && !r->duplicate && x->op == CHAT_GOP_CREATE) {
		/* The creator's CONV_LIST shows the group as soon as they have
		 * the answer (the other members learn of it by the event, which
		 * the fan-out delivers after their list entries). Idempotent:
		 * the fan-out's own append of it is a duplicate. */
		struct chat_fanout_item *it = malloc(sizeof *it);
		if (it) {
			memset(it, 0, sizeof *it);
			int kl = chat_key_list(it->key, x->actor, x->actor_len);
			int pl = chat_list_encode(it->payload, sizeof it->payload,
						  x->conv, x->len);
			chat_producer_list(it->producer, x->conv, x->len);
			struct pe_input in = {.type = CHAT_ENT_LIST,
					      .len = (uint32_t)pl,
					      .payload = it->payload};
			struct pe_append_req q = {.key = it->key,
						  .klen = (size_t)kl,
						  .expected_last_seq = PE_NO_EXPECT,
						  .entries = &in, .count = 1};
			memcpy(q.producer, it->producer, 16);
			x->res = res;
			int rc = kl > 0 && pl > 0
					 ? chat_append(x->c, &q,
						       create_list_cb, x)
					 : -PARLEY_EINVAL;
			free(it); /* pe_append copied key and payload */
			if (rc == 0)
				return;
		}
	}
	x->cb(x->arg, &res);
	free(x);
}

/* REMOVE / LEAVE: re-encodes the (validated) event with the group's name
 * now, under the write lock: the name at the event's seq, since renames
 * are changes too and one change is stored at a time (invariant 2). A
 * removed member's conversation list shows it (chat_group_left). */
static int gev_name_now(const struct group *g, const struct chat_group_req *q,
			uint8_t *rec, size_t cap, const struct gev_target *t,
			int *rl)
{
	if (q->op != CHAT_GOP_REMOVE && q->op != CHAT_GOP_LEAVE)
		return 0;
	int n = gev_encode(rec, cap, q->op, 0, q->actor, q->actor_len, g->name,
			   g->name_len, t, q->n);
	if (n < 0)
		return n;
	*rl = n;
	return 0;
}

static int group_set(struct chat *c, const struct chat_group_req *q,
		     chat_group_cb cb, void *arg, const char **why);

int chat_group_change(struct chat *c, const struct chat_group_req *q,
		      chat_group_cb cb, void *arg, const char **why)
{
	if (q->op == CHAT_GOP_SET) {
		const char *dummy;
		return group_set(c, q, cb, arg, why ? why : &dummy);
	}
	const char *dummy;
	if (!why)
		why = &dummy;
	*why = NULL;
	struct chat_groups *gs = chat_groups_of(c);
	if (q->n > CHAT_GROUP_MAX_TARGETS) {
		*why = "too many users in one change";
		return -PARLEY_ETOOBIG;
	}
	if (!parley_proto_user_id_valid(q->actor, q->actor_len))
		return -PARLEY_EINVAL;
	struct gev_target *t = calloc(q->n ? q->n : 1, sizeof *t);
	uint8_t *rec = NULL;
	struct change_ctx *x = calloc(1, sizeof *x);
	if (!t || !x) {
		free(t);
		free(x);
		return -PARLEY_ENOMEM;
	}
	int rc = 0;
	uint8_t role = q->role ? q->role : CHAT_ROLE_MEMBER;
	if ((q->op == CHAT_GOP_ADD || q->op == CHAT_GOP_CREATE) &&
	    role != CHAT_ROLE_MEMBER && role != CHAT_ROLE_ADMIN) {
		rc = -PARLEY_EINVAL;
		*why = "members are added as MEMBER (1) or ADMIN (2)";
	}
	for (uint32_t i = 0; !rc && i < q->n; i++) {
		const struct chat_member *m = &q->users[i];
		if (!parley_proto_user_id_valid(m->p, m->len)) {
			rc = -PARLEY_EINVAL;
			*why = "invalid user id";
			break;
		}
		for (uint32_t k = 0; k < i; k++)
			if (t[k].ulen == m->len && !memcmp(t[k].user, m->p, m->len)) {
				rc = -PARLEY_EINVAL;
				*why = "a user is named twice";
			}
		if (q->op == CHAT_GOP_CREATE && m->len == q->actor_len &&
		    !memcmp(m->p, q->actor, m->len)) {
			rc = -PARLEY_EINVAL;
			*why = "the creator is a member already: list the others";
		}
		t[i] = (struct gev_target){m->p, (uint8_t)m->len, role};
	}
	uint8_t producer[16] = {0};
	const char *name = NULL;
	size_t nlen = 0;
	uint8_t settings = 0;
	if (!rc && q->op == CHAT_GOP_CREATE) {
		if (q->name_len < 1 || q->name_len > 255 ||
		    !parley_proto_utf8_valid(q->name, q->name_len)) {
			rc = -PARLEY_EINVAL;
			*why = "group name: 1-255 bytes of UTF-8";
		}
		name = q->name;
		nlen = q->name_len;
		settings = q->settings & CHAT_GROUP_HISTORY_ALL;
		group_create_key(producer, q->actor, q->actor_len, q->create_id);
		group_id_of(x->conv, producer);
		x->len = CHAT_GROUP_ID_LEN;
	} else if (!rc) {
		if (!chat_conv_is_group(q->conv, q->conv_len)) {
			rc = -PARLEY_ENOTFOUND;
			*why = "no such group";
		} else {
			memcpy(x->conv, q->conv, q->conv_len);
			x->len = q->conv_len;
		}
		if (q->op == CHAT_GOP_LEAVE && q->n) {
			rc = -PARLEY_EINVAL;
			*why = "leave names nobody";
		} else if (q->op != CHAT_GOP_LEAVE && q->op != CHAT_GOP_ROLE &&
			   q->n == 0) {
			rc = -PARLEY_EINVAL;
			*why = "name at least one user";
		} else if (q->op == CHAT_GOP_ROLE) {
			if (q->n == 0 || !role_ok(q->role)) {
				rc = -PARLEY_EINVAL;
				*why = "name users and a role (1 member, 2 admin, 3 owner)";
			}
			for (uint32_t i = 0; i < q->n; i++)
				t[i].role = q->role;
		}
	}
	if (!rc)
		rc = chat_groups_ready(c, x->conv, x->len);
	/* + 255: REMOVE / LEAVE carry the group's name (below) */
	size_t cap = 16 + q->actor_len + nlen + (size_t)q->n * 130 + 255;
	rec = rc ? NULL : malloc(cap);
	int rl = 0;
	if (!rc && !rec)
		rc = -PARLEY_ENOMEM;
	if (!rc) {
		rl = gev_encode(rec, cap, q->op, settings, q->actor,
				q->actor_len, name, nlen, t, q->n);
		if (rl < 0)
			rc = rl;
	}
	struct chat_gev ev;
	if (!rc)
		rc = chat_gev_decode(rec, (size_t)rl, &ev);
	bool dup = false;
	uint64_t dup_seq = 1;
	if (!rc) {
		pthread_rwlock_wrlock(&gs->lk);
		struct group *g = g_find(gs, x->conv, x->len);
		if (q->op == CHAT_GOP_CREATE && g && g->as_of) {
			dup = true; /* a retried CREATE: answer with the group */
		} else if (q->op == CHAT_GOP_CREATE && !g) {
			g = g_insert(gs, x->conv, x->len);
			if (!g)
				rc = -PARLEY_ENOMEM;
		} else if (!g || (!g->as_of && q->op != CHAT_GOP_CREATE)) {
			rc = -PARLEY_ENOTFOUND;
			*why = "no such group";
		}
		if (!rc && !dup && g->busy) {
			rc = -PARLEY_EAGAIN;
			*why = "another change of this group is being stored";
		}
		if (!rc && !dup) {
			rc = g_apply(gs, g, 0, &ev, true, why);
			if (!rc)
				rc = gev_name_now(g, q, rec, cap, t, &rl);
			if (rc == -PARLEY_EEXIST && q->op == CHAT_GOP_ADD) {
				/* everyone named is a member already (a retried
				 * ADD, say): nothing to store, answered as done */
				rc = 0;
				dup = true;
				dup_seq = g->as_of;
			}
		}
		if (!rc && !dup)
			g->busy = true;
		else if (q->op == CHAT_GOP_CREATE && g && !g->as_of && !g->busy)
			g_remove(gs, g);
		pthread_rwlock_unlock(&gs->lk);
	}
	if (!rc && dup) {
		/* answered at once: the group's CREATE is durable */
		struct chat_group_result res = {.seq = dup_seq, .duplicate = true,
						.conv_len = x->len};
		memcpy(res.conv, x->conv, x->len);
		cb(arg, &res);
		free(x);
		free(t);
		free(rec);
		return 0;
	}
	if (!rc) {
		x->c = c;
		x->cb = cb;
		x->arg = arg;
		x->op = q->op;
		x->actor_len = (uint8_t)q->actor_len;
		memcpy(x->actor, q->actor, q->actor_len);
		rc = chat_conv_append(c, x->conv, x->len, CHAT_ENT_MEMBER, rec,
				      (uint32_t)rl, producer, change_cb, x);
		if (rc) {
			pthread_rwlock_wrlock(&gs->lk);
			struct group *g = g_find(gs, x->conv, x->len);
			if (g) {
				g->busy = false;
				if (!g->as_of)
					g_remove(gs, g);
			}
			pthread_rwlock_unlock(&gs->lk);
		}
		else
			x = NULL; /* owned by change_cb */
	}
	free(x);
	free(t);
	free(rec);
	return rc;
}

/* ---- GROUP_SET ----------------------------------------------------------------------------- */

/* A rename and/or a new history setting: one CHAT_ENT_MEMBER event (op
 * SET) carrying the name and settings after it, validated, stored and
 * applied like a membership change (one change at a time, durable before
 * cb; the fan-out delivers it and writes the snapshot). */
static int group_set(struct chat *c, const struct chat_group_req *q,
		     chat_group_cb cb, void *arg, const char **why)
{
	struct chat_groups *gs = chat_groups_of(c);
	*why = NULL;
	if (!parley_proto_user_id_valid(q->actor, q->actor_len))
		return -PARLEY_EINVAL;
	if (q->n) {
		*why = "GROUP_SET names no users";
		return -PARLEY_EINVAL;
	}
	if (!q->set_fields || (q->set_fields & ~PARLEY_GSET_KNOWN)) {
		*why = "say what to change: the name (1), the settings (2) or both";
		return -PARLEY_EINVAL;
	}
	if ((q->set_fields & PARLEY_GSET_NAME) &&
	    (q->name_len < 1 || q->name_len > 255 ||
	     !parley_proto_utf8_valid(q->name, q->name_len))) {
		*why = "group name: 1-255 bytes of UTF-8";
		return -PARLEY_EINVAL;
	}
	if ((q->set_fields & PARLEY_GSET_SETTINGS) &&
	    (q->settings & ~CHAT_GROUP_HISTORY_ALL)) {
		*why = "unknown setting (bit 0: new members read the whole history)";
		return -PARLEY_EINVAL;
	}
	if (!chat_conv_is_group(q->conv, q->conv_len)) {
		*why = "no such group";
		return -PARLEY_ENOTFOUND;
	}
	int rc = chat_groups_ready(c, q->conv, q->conv_len);
	if (rc)
		return rc;
	size_t cap = 16 + q->actor_len + 255;
	uint8_t *rec = malloc(cap);
	struct change_ctx *x = calloc(1, sizeof *x);
	if (!rec || !x) {
		free(rec);
		free(x);
		return -PARLEY_ENOMEM;
	}
	memcpy(x->conv, q->conv, q->conv_len);
	x->len = q->conv_len;
	int rl = 0;
	bool dup = false;
	uint64_t dup_seq = 0;
	pthread_rwlock_wrlock(&gs->lk);
	struct group *g = g_live(gs, q->conv, q->conv_len);
	if (!g) {
		rc = -PARLEY_ENOTFOUND;
		*why = "no such group";
	} else if (g->busy) {
		rc = -PARLEY_EAGAIN;
		*why = "another change of this group is being stored";
	} else {
		bool nm = q->set_fields & PARLEY_GSET_NAME;
		const char *name = nm ? q->name : g->name;
		uint16_t nl = nm ? q->name_len : g->name_len;
		uint8_t st = q->set_fields & PARLEY_GSET_SETTINGS ? q->settings
								  : g->settings;
		/* the marks say what changed (clients show it) */
		uint8_t marks =
			(nl != g->name_len || memcmp(name, g->name, nl)
				 ? CHAT_GEV_SET_NAME
				 : 0) |
			(st != g->settings ? CHAT_GEV_SET_SETTINGS : 0);
		rl = gev_encode(rec, cap, CHAT_GOP_SET, st | marks, q->actor,
				q->actor_len, name, nl, NULL, 0);
		struct chat_gev ev;
		rc = rl < 0 ? rl : chat_gev_decode(rec, (size_t)rl, &ev);
		if (!rc)
			rc = g_apply(gs, g, 0, &ev, true, why);
		if (rc == -PARLEY_EEXIST) { /* nothing changes: done */
			rc = 0;
			dup = true;
			dup_seq = g->as_of;
		} else if (!rc) {
			g->busy = true;
		}
	}
	pthread_rwlock_unlock(&gs->lk);
	if (!rc && dup) {
		struct chat_group_result res = {.seq = dup_seq, .duplicate = true,
						.conv_len = x->len};
		memcpy(res.conv, x->conv, x->len);
		cb(arg, &res);
	} else if (!rc) {
		x->c = c;
		x->cb = cb;
		x->arg = arg;
		x->op = CHAT_GOP_SET;
		x->actor_len = (uint8_t)q->actor_len;
		memcpy(x->actor, q->actor, q->actor_len);
		uint8_t producer[16] = {0};
		rc = chat_conv_append(c, x->conv, x->len, CHAT_ENT_MEMBER, rec,
				      (uint32_t)rl, producer, change_cb, x);
		if (rc) {
			pthread_rwlock_wrlock(&gs->lk);
			struct group *b = g_find(gs, x->conv, x->len);
			if (b)
				b->busy = false;
			pthread_rwlock_unlock(&gs->lk);
		} else {
			x = NULL; /* owned by change_cb */
		}
	}
	free(x);
	free(rec);
	return rc;
}

int chat_groups_on_durable(struct chat_groups *gs, const char *conv,
			   size_t len, uint64_t seq, uint16_t type,
			   const uint8_t *p, uint32_t plen)
{
	int rc = 0;
	if (type == CHAT_ENT_MSG) {
		struct chat_msg m;
		if (chat_msg_decode(p, plen, &m))
			return -PARLEY_ECORRUPT;
		pthread_rwlock_rdlock(&gs->lk);
		struct group *g = g_find(gs, conv, len);
		rc = g && g_iv_at(g, m.sender, m.sender_len, seq) != NOIDX
			     ? 0
			     : -PARLEY_EPERM;
		pthread_rwlock_unlock(&gs->lk);
		if (rc)
			atomic_fetch_add(&gs->refused, 1);
		return rc;
	}
	if (type != CHAT_ENT_MEMBER)
		return 0;
	struct chat_gev ev;
	if (chat_gev_decode(p, plen, &ev))
		return -PARLEY_ECORRUPT;
	pthread_rwlock_wrlock(&gs->lk);
	struct group *g = g_find(gs, conv, len);
	if (!g) {
		rc = -PARLEY_ENOTFOUND;
	} else if (seq > g->as_of) {
		const char *why = NULL;
		rc = g_apply(gs, g, seq, &ev, false, &why);
		if (!rc)
			atomic_fetch_add(&gs->changes, 1);
		if (rc)
			PLOG_E("chat", "membership event not applied", "conv=%.*s "
			       "seq=%" PRIu64 " err=%s why=%s", (int)len, conv,
			       seq, parley_errname(rc), why ? why : "-");
	}
	pthread_rwlock_unlock(&gs->lk);
	return rc;
}

/* ---- snapshots ------------------------------------------------------------------------------ *
 *   u8 version(1) | u64 as_of | u8 settings | u16 name_len | name |
 *   u32 n | n x (u8 ulen | user | u8 role | u8 split | u64 from | u64 to)
 * Only intervals with from <= as_of; one closed after as_of (or split by
 * a role change at as_of + 1) is written open, as it was at as_of. */

static int gsnap_encode(const struct group *g, uint64_t as_of, uint8_t **out)
{
	size_t cap = 1 + 8 + 1 + 2 + g->name_len + 4 +
		     (size_t)g->n * (1 + PARLEY_PROTO_MAX_USER_ID + 2 + 16);
	uint8_t *b = malloc(cap);
	if (!b)
		return -PARLEY_ENOMEM;
	struct le_writer w;
	le_writer_init(&w, b, cap);
	le_write8(&w, GSNAP_VERSION);
	le_write64(&w, as_of);
	le_write8(&w, g->settings);
	le_write16(&w, g->name_len);
	le_write_bytes(&w, g->name, g->name_len);
	uint8_t *np = le_write_reserve(&w, 4);
	uint32_t n = 0;
	for (uint32_t i = 0; i < g->n; i++) {
		const struct giv *x = &g->iv[i];
		if (x->from > as_of)
			continue;
		bool open = x->to > as_of || (x->split && x->to == as_of);
		le_write8(&w, x->ulen);
		le_write_bytes(&w, x->user, x->ulen);
		le_write8(&w, x->role);
		le_write8(&w, open ? 0 : x->split);
		le_write64(&w, x->from);
		le_write64(&w, open ? OPEN : x->to);
		n++;
	}
	PARLEY_ASSERT(w.ok && np);
	le_put32(np, n);
	*out = b;
	return (int)w.off;
}

static int gsnap_load(struct group *g, const uint8_t *p, size_t len)
{
	struct le_reader r;
	le_reader_init(&r, p, len);
	if (le_read8(&r) != GSNAP_VERSION)
		return -PARLEY_ECORRUPT;
	uint64_t as_of = le_read64(&r);
	uint8_t settings = le_read8(&r);
	uint16_t nl = le_read16(&r);
	const uint8_t *name = le_read_bytes(&r, nl);
	uint32_t n = le_read32(&r);
	if (!r.ok || nl > 255 || n > MAX_INTERVALS)
		return -PARLEY_ECORRUPT;
	for (uint32_t i = 0; i < n; i++) {
		uint8_t ul = le_read8(&r);
		const char *u = (const char *)le_read_bytes(&r, ul);
		uint8_t role = le_read8(&r);
		uint8_t split = le_read8(&r);
		uint64_t from = le_read64(&r), to = le_read64(&r);
		if (!r.ok || ul == 0 || ul > PARLEY_PROTO_MAX_USER_ID)
			return -PARLEY_ECORRUPT;
		if (g_open_iv(g, u, ul, role, from))
			return -PARLEY_ENOMEM;
		if (to != OPEN) {
			g->iv[g->n - 1].to = to;
			g->iv[g->n - 1].split = split != 0;
			g->nactive--;
		}
	}
	g->as_of = as_of;
	g->settings = settings;
	g->name_len = nl;
	memcpy(g->name, name, nl);
	return 0;
}

/* A snapshot record read from storage (not memory), as user sees the group
 * (chat.h). Two passes over the intervals: user's state, then the members
 * after user's departure (or now). */
int chat_gsnap_view(const uint8_t *p, size_t len, const char *user,
		    size_t ulen, struct chat_gsnap_view *out)
{
	memset(out, 0, sizeof *out);
	struct le_reader r;
	le_reader_init(&r, p, len);
	if (le_read8(&r) != GSNAP_VERSION)
		return -PARLEY_ECORRUPT;
	out->as_of = le_read64(&r);
	out->settings = le_read8(&r);
	uint16_t nl = le_read16(&r);
	const uint8_t *name = le_read_bytes(&r, nl);
	uint32_t n = le_read32(&r);
	if (!r.ok || nl > 255 || n > MAX_INTERVALS)
		return -PARLEY_ECORRUPT;
	out->name_len = nl;
	memcpy(out->name, name, nl);
	struct le_reader start = r;
	bool member = false, seen = false;
	uint64_t left = 0, cur_from = 0;
	/* the user's intervals (for where their membership began) */
	enum { UIV_MAX = 64 };
	struct { uint64_t from, to; bool split; } uiv[UIV_MAX];
	uint32_t nuiv = 0;
	for (int pass = 0; pass < 2; pass++) {
		r = start;
		uint32_t count = 0;
		for (uint32_t i = 0; i < n; i++) {
			uint8_t ul = le_read8(&r);
			const char *u = (const char *)le_read_bytes(&r, ul);
			le_read8(&r); /* role */
			uint8_t split = le_read8(&r);
			uint64_t from = le_read64(&r), to = le_read64(&r);
			if (!r.ok || ul == 0 || ul > PARLEY_PROTO_MAX_USER_ID)
				return -PARLEY_ECORRUPT;
			if (pass == 0) {
				if (ul != ulen || memcmp(u, user, ulen))
					continue;
				seen = true;
				if (nuiv < UIV_MAX)
					uiv[nuiv++] = (typeof(uiv[0])){from, to,
								       split != 0};
				if (to == OPEN) {
					member = true;
					cur_from = from;
				} else if (!split && to > left) {
					left = to;
					if (!member)
						cur_from = from;
				}
			} else if (member ? to == OPEN
					  : from <= left && (left < to ||
							     (split && to == left))) {
				count++;
			}
		}
		if (pass == 0 && !seen)
			return -PARLEY_ENOTFOUND;
		out->members = count;
	}
	out->left_seq = member ? 0 : left;
	/* the run of intervals ending with the current (or last) one */
	for (bool more = true; more;) {
		more = false;
		for (uint32_t k = 0; k < nuiv; k++)
			if (uiv[k].split && uiv[k].to + 1 == cur_from) {
				cur_from = uiv[k].from;
				more = true;
			}
	}
	out->vis_from = out->settings & CHAT_GROUP_HISTORY_ALL ? 1 : cur_from;
	return 0;
}

/* ---- the fan-out plan ------------------------------------------------------------------------- */

struct fan_user {
	uint8_t ulen;
	bool fresh;             /* joined at this seq: gets a list entry */
	char user[PARLEY_PROTO_MAX_USER_ID];
};

static uint16_t ent_kind(uint16_t type)
{
	switch (type) {
	case CHAT_ENT_MSG: return 1;    /* PARLEY_EV_MESSAGE */
	case CHAT_ENT_MEMBER: return 3; /* PARLEY_EV_MEMBERSHIP */
	case CHAT_ENT_EDIT: return 1;   /* a pointer like a message's: its
					   resolution reads the entry's type */
	default: return 0;              /* not delivered through inboxes */
	}
}

int chat_groups_fanout(struct chat_groups *gs, const char *conv, size_t len,
		       const struct pe_entry *ent, chat_issue_fn issue,
		       void *arg, unsigned *count)
{
	*count = 0;
	uint16_t kind = ent_kind(ent->type);
	if (!kind)
		return 0;
	uint64_t seq = ent->seq;
	struct chat_msg m;
	if (ent->type == CHAT_ENT_MSG &&
	    chat_msg_decode(ent->payload, ent->len, &m))
		return -PARLEY_ECORRUPT;
	pthread_rwlock_rdlock(&gs->lk);
	struct group *g = g_find(gs, conv, len);
	if (!g || (ent->type == CHAT_ENT_MSG &&
		   g_iv_at(g, m.sender, m.sender_len, seq) == NOIDX)) {
		/* no such group, or a send stored after its sender left:
		 * refused at its seq, delivered to nobody */
		pthread_rwlock_unlock(&gs->lk);
		return 0;
	}
	struct fan_user *fu = malloc((size_t)(g->nactive + g->n + 1) * sizeof *fu);
	uint8_t *snap = NULL;
	int snap_len = 0;
	uint32_t nf = 0;
	for (uint32_t i = 0; fu && i < g->n; i++) {
		const struct giv *x = &g->iv[i];
		if (!(x->from <= seq && seq <= x->to))
			continue;
		fu[nf].ulen = x->ulen;
		memcpy(fu[nf].user, x->user, x->ulen);
		/* new to the group at seq (not a role change: that one's
		 * previous interval ends at seq - 1) */
		fu[nf].fresh = x->from == seq &&
			       (x->prev == NOIDX || !g->iv[x->prev].split ||
				g->iv[x->prev].to + 1 != seq);
		nf++;
	}
	if (fu && ent->type == CHAT_ENT_MEMBER)
		snap_len = gsnap_encode(g, seq, &snap);
	pthread_rwlock_unlock(&gs->lk);
	if (!fu || snap_len < 0) {
		free(fu);
		return -PARLEY_ENOMEM;
	}
	int rc = 0;
	struct chat_fanout_item *it = malloc(sizeof *it);
	if (!it) {
		free(fu);
		free(snap);
		return -PARLEY_ENOMEM;
	}
	/* list entries first: by the time a device sees the event, the group
	 * is in its user's list */
	for (uint32_t i = 0; i < nf && !rc; i++) {
		if (!fu[i].fresh)
			continue;
		memset(it, 0, sizeof *it);
		int kl = chat_key_list(it->key, fu[i].user, fu[i].ulen);
		int pl = chat_list_encode(it->payload, sizeof it->payload, conv, len);
		if (kl < 0 || pl < 0)
			continue;
		it->klen = (uint8_t)kl;
		it->len = (uint16_t)pl;
		it->type = CHAT_ENT_LIST;
		chat_producer_list(it->producer, conv, len);
		rc = issue(arg, it, NULL, 0);
		(*count)++;
	}
	for (uint32_t i = 0; i < nf && !rc; i++) {
		memset(it, 0, sizeof *it);
		int kl = chat_key_inbox(it->key, fu[i].user, fu[i].ulen);
		struct chat_ptr p = {.kind = kind, .conv = conv,
				     .conv_len = (uint16_t)len, .conv_seq = seq};
		int pl = chat_ptr_encode(it->payload, sizeof it->payload, &p);
		if (kl < 0 || pl < 0)
			continue;
		it->klen = (uint8_t)kl;
		it->len = (uint16_t)pl;
		it->type = CHAT_ENT_PTR;
		chat_producer_fanout(it->producer, conv, len, seq);
		rc = issue(arg, it, NULL, 0);
		(*count)++;
	}
	free(it);
	free(fu);
	if (!rc && snap) {
		/* the snapshot as of this event: the last item, so a cursor past
		 * the event implies the snapshot is durable */
		struct chat_fanout_item *s = malloc(sizeof *s);
		if (s) {
			memset(s, 0, sizeof *s);
			s->klen = (uint8_t)chat_key_gsnap(s->key, conv, len);
			s->type = CHAT_ENT_GSNAP;
			chat_producer_gsnap(s->producer, conv, len, seq);
			rc = issue(arg, s, snap, (uint32_t)snap_len);
			(*count)++;
			free(s);
		} else {
			rc = -PARLEY_ENOMEM;
		}
	}
	free(snap);
	return rc;
}

/* ---- recovery ----------------------------------------------------------------------------------- */

int chat_groups_note(struct chat_groups *gs, const char *conv, size_t len,
		     uint64_t last_seq)
{
	if (!chat_conv_is_group(conv, len))
		return 0;
	struct group *g = g_find(gs, conv, len);
	if (!g)
		g = g_insert(gs, conv, len);
	if (!g)
		return -PARLEY_ENOMEM;
	g->last_seq = last_seq;
	return 0;
}

void chat_groups_note_first(struct chat_groups *gs, const char *conv,
			    size_t len, uint64_t first)
{
	struct group *g = g_find(gs, conv, len);
	if (g && first < g->load_from)
		g->load_from = first;
}

/* Replays the membership events of g from `from` on. */
static int group_replay(struct chat_groups *gs, struct pe_engine *e,
			struct group *g, uint64_t from)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_conv(key, g->conv, g->len);
	while (from <= g->last_seq) {
		struct pe_read_req q = {.key = key, .klen = (size_t)kl,
					.from = from, .dir = PE_FORWARD,
					.limit = PE_MAX_READ};
		struct pe_entry *ents = NULL;
		uint32_t n = 0;
		struct pe_read_result meta;
		int rc = pe_read_sync(e, &q, &ents, &n, &meta);
		if (rc == -PARLEY_ETRIMMED && meta.first_seq > from) {
			from = meta.first_seq;
			continue;
		}
		if (rc)
			return rc;
		for (uint32_t i = 0; i < n; i++) {
			from = ents[i].seq + 1;
			struct chat_gev ev;
			if (ents[i].type != CHAT_ENT_MEMBER || ents[i].seq <= g->as_of ||
			    chat_gev_decode(ents[i].payload, ents[i].len, &ev))
				continue;
			const char *why = NULL;
			rc = g_apply(gs, g, ents[i].seq, &ev, false, &why);
			if (rc)
				PLOG_E("chat", "membership event not replayed",
				       "conv=%.*s seq=%" PRIu64 " err=%s why=%s",
				       (int)g->len, g->conv, ents[i].seq,
				       parley_errname(rc), why ? why : "-");
		}
		free(ents);
		if (n == 0 || meta.end)
			break;
	}
	return 0;
}

/* Loads g: its last snapshot, then the membership events after it from
 * g->load_from on (OPEN: none; a missing or unusable snapshot: the whole
 * stream). Blocking reads; g is not reachable by other threads. */
static int group_load_one(struct chat_groups *gs, struct pe_engine *e,
			  struct group *g)
{
	char key[CHAT_KEY_CAP];
	int kl = chat_key_gsnap(key, g->conv, g->len);
	struct pe_read_req q = {.key = key, .klen = (size_t)kl,
				.from = UINT64_MAX,
				.dir = PE_BACKWARD, .limit = 1};
	struct pe_entry *ents = NULL;
	uint32_t n = 0;
	struct pe_read_result meta;
	int rc = pe_read_sync(e, &q, &ents, &n, &meta);
	bool have = false;
	if (!rc && n == 1 && ents[0].type == CHAT_ENT_GSNAP)
		have = gsnap_load(g, ents[0].payload, ents[0].len) == 0;
	free(ents);
	if (!have) {
		/* no usable snapshot: rebuild from the stream */
		free(g->iv);
		free(g->ux);
		g->iv = NULL;
		g->ux = NULL;
		g->n = g->cap = g->uxcap = g->nusers = 0;
		g->nactive = 0;
		g->as_of = 0;
		g->load_from = 1;
	}
	uint64_t from = PARLEY_MAX(g->as_of + 1, g->load_from);
	if (g->load_from != OPEN) {
		rc = group_replay(gs, e, g, from);
		if (rc)
			return rc;
	}
	g->load_from = OPEN;
	return 0;
}

int chat_groups_load(struct chat_groups *gs, struct pe_engine *e)
{
	uint32_t ngroups = 0;
	for (uint32_t b = 0; b < gs->cap; b++) {
		for (struct group *g = gs->tab[b]; g; g = g->next) {
			int rc = group_load_one(gs, e, g);
			if (rc)
				return rc;
			ngroups++;
		}
	}
	PLOG_I("chat", "groups loaded", "groups=%u", ngroups);
	return 0;
}

struct reload_ctx {
	struct group *list;     /* groups read, chained through next */
	int err;
};

static int reload_cb(void *arg, const void *key, size_t klen,
		     const struct pe_meta *meta)
{
	struct reload_ctx *x = arg;
	const char *conv = (const char *)key + 2;
	if (klen < 3 || memcmp(key, "c/", 2) != 0 || meta->last_seq == 0 ||
	    !chat_conv_is_group(conv, klen - 2))
		return 0;
	struct group *g = calloc(1, sizeof *g);
	if (!g) {
		x->err = -PARLEY_ENOMEM;
		return 1;
	}
	g->h = hkey(conv, klen - 2);
	g->len = (uint16_t)(klen - 2);
	memcpy(g->conv, conv, klen - 2);
	g->last_seq = meta->last_seq;
	g->load_from = 1; /* every event after the snapshot */
	g->next = x->list;
	x->list = g;
	return 0;
}

int chat_groups_reload(struct chat_groups *gs, struct pe_engine *e,
		       uint32_t part)
{
	struct reload_ctx x = {0};
	int rc = pe_list_streams(e, part, reload_cb, &x);
	if (!rc)
		rc = x.err;
	/* read everything first (blocking, no lock held) */
	uint32_t ngroups = 0;
	for (struct group *g = x.list; g && !rc; g = g->next, ngroups++)
		rc = group_load_one(gs, e, g);
	pthread_rwlock_wrlock(&gs->lk);
	while (x.list) {
		struct group *g = x.list;
		x.list = g->next;
		struct group *old = rc ? NULL : g_find(gs, g->conv, g->len);
		if (old)
			g_remove(gs, old);
		struct group *slot = rc ? NULL : g_insert(gs, g->conv, g->len);
		if (!slot) {
			if (!rc)
				rc = -PARLEY_ENOMEM;
			group_free(g);
			continue;
		}
		struct group *next = slot->next;
		*slot = *g;
		slot->next = next;
		slot->busy = false;
		free(g); /* its arrays now belong to slot */
	}
	pthread_rwlock_unlock(&gs->lk);
	PLOG_I("chat", "groups reloaded (leadership gained)",
	       "partition=%u groups=%u err=%s", part, ngroups,
	       rc ? parley_errname(rc) : "none");
	return rc;
}
