/*
 * ctl_cluster_status.c — `parleyctl cluster status`: what every node of a
 * running cluster says about itself (GET /cluster on its admin port,
 * docs/CLUSTER.md §3.6), put together.
 *
 *   parleyctl cluster status --admin HOST:PORT[,HOST:PORT...] [--json]
 *                            [--lag-threshold N] [--timeout-ms MS]
 *
 * Every given node is asked; nodes whose admin address a reachable node
 * reports (peers[].admin, learnt in the peer handshake) are asked too, so
 * one address is enough once the nodes advertise theirs; otherwise give
 * every node. Printed: per node (id, admin and client addresses,
 * reachable, ready, partitions led / followed / held as a learner, and
 * each of its peer links up or down as that node sees it), per partition
 * (leader, term, commit, and per
 * replica its commit lag and apply lag behind the leader's commit as the
 * replica itself reports them, or, for a replica that did not answer, the
 * leader's view: entries it lacks and whether it answers the leader).
 * Flags: `no-leader` (no answering node knows a leader), `leader-down`
 * (the leader named by the others did not answer), `lagging` (a replica
 * more than --lag-threshold entries behind — default 100 —, inactive for
 * the leader, or not answering), `learner` (a replica that is a learner:
 * an add-node that has not finished, docs/CLUSTER.md §3.7). After the
 * partitions: every learner and how many partitions it is a learner of,
 * and a membership operation running on a node.
 *
 * Exit codes (parleyctl.h): 0 every partition has a leader (lagging
 * replicas are only flagged); 1 a partition has no leader (or no
 * answering node reports any partition); 2 usage; 3 no node answered.
 * Threads: a CLI; single-threaded; blocking sockets with a deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "parley_common.h"
#include "parleyctl.h"

#define CS_MAX_NODES 32u
#define CS_MAX_BODY (8u << 20)   /* a /cluster answer larger than this is refused */
#define CS_MAX_DEPTH 16

/* ---- a small JSON reader (the subset /cluster writes) ---------------------------- */

enum jt { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jt t;
	bool b;
	uint64_t u;
	char *s;
	uint32_t n;
	char **keys;      /* J_OBJ */
	struct jv *kids;  /* J_ARR / J_OBJ */
};

struct jp {
	const char *p, *end;
	int depth;
};

static void jws(struct jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' ||
				 *j->p == '\t'))
		j->p++;
}

static int jstr(struct jp *j, char **out)
{
	if (j->p >= j->end || *j->p != '"')
		return -1;
	j->p++;
	size_t cap = 16, n = 0;
	char *s = malloc(cap);
	if (!s)
		return -1;
	while (j->p < j->end && *j->p != '"') {
		char c = *j->p++;
		if (c == '\\') {
			if (j->p >= j->end)
				break;
			c = *j->p++;
			if (c == 'n')
				c = '\n';
			else if (c == 't')
				c = '\t';
			else if (c == 'u') { /* control bytes only (what we write) */
				if (j->end - j->p < 4)
					break;
				char hex[5] = {j->p[0], j->p[1], j->p[2], j->p[3], 0};
				c = (char)strtoul(hex, NULL, 16);
				j->p += 4;
			}
		}
		if (n + 2 > cap) {
			char *g = realloc(s, cap *= 2);
			if (!g) {
				free(s);
				return -1;
			}
			s = g;
		}
		s[n++] = c;
	}
	if (j->p >= j->end) {
		free(s);
		return -1;
	}
	j->p++;
	s[n] = '\0';
	*out = s;
	return 0;
}

static void jfree(struct jv *v)
{
	for (uint32_t i = 0; i < v->n; i++) {
		jfree(&v->kids[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->kids);
	free(v->keys);
	free(v->s);
	memset(v, 0, sizeof *v);
}

static int jval(struct jp *j, struct jv *v)
{
	memset(v, 0, sizeof *v);
	jws(j);
	if (j->p >= j->end || ++j->depth > CS_MAX_DEPTH)
		return -1;
	int rc = 0;
	char c = *j->p;
	if (c == '{' || c == '[') {
		bool obj = c == '{';
		v->t = obj ? J_OBJ : J_ARR;
		j->p++;
		jws(j);
		if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
			j->p++;
			j->depth--;
			return 0;
		}
		for (;;) {
			char *key = NULL;
			jws(j);
			if (obj) {
				if (jstr(j, &key))
					return -1;
				jws(j);
				if (j->p >= j->end || *j->p != ':') {
					free(key);
					return -1;
				}
				j->p++;
			}
			struct jv *k = realloc(v->kids, (v->n + 1) * sizeof *k);
			char **ks = obj ? realloc(v->keys, (v->n + 1) * sizeof *ks) : NULL;
			if (!k || (obj && !ks)) {
				free(key);
				if (k)
					v->kids = k;
				if (ks)
					v->keys = ks;
				return -1;
			}
			v->kids = k;
			if (obj) {
				v->keys = ks;
				v->keys[v->n] = key;
			}
			if (jval(j, &v->kids[v->n++]))
				return -1;
			jws(j);
			if (j->p < j->end && *j->p == ',') {
				j->p++;
				continue;
			}
			if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
				j->p++;
				break;
			}
			return -1;
		}
	} else if (c == '"') {
		v->t = J_STR;
		rc = jstr(j, &v->s);
	} else if (!strncmp(j->p, "true", 4) || !strncmp(j->p, "false", 5)) {
		v->t = J_BOOL;
		v->b = c == 't';
		j->p += v->b ? 4 : 5;
	} else if (!strncmp(j->p, "null", 4)) {
		j->p += 4;
	} else if (c >= '0' && c <= '9') {
		char *e;
		v->t = J_NUM;
		v->u = strtoull(j->p, &e, 10);
		j->p = e;
	} else {
		rc = -1;
	}
	j->depth--;
	return rc;
}

static const struct jv *jget(const struct jv *o, const char *key)
{
	if (!o || o->t != J_OBJ)
		return NULL;
	for (uint32_t i = 0; i < o->n; i++)
		if (!strcmp(o->keys[i], key))
			return &o->kids[i];
	return NULL;
}

static uint64_t jnum(const struct jv *o, const char *key)
{
	const struct jv *v = jget(o, key);
	return v && v->t == J_NUM ? v->u : 0;
}

static bool jbool(const struct jv *o, const char *key)
{
	const struct jv *v = jget(o, key);
	return v && v->t == J_BOOL && v->b;
}

static const char *jstrv(const struct jv *o, const char *key)
{
	const struct jv *v = jget(o, key);
	return v && v->t == J_STR ? v->s : "";
}

/* ---- HTTP GET with a deadline ------------------------------------------------------ */

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Splits "host:port" ("[v6]:port" for IPv6) into host[0..hcap) and the
 * port's digits in port[0..pcap). 0 or -1. */
static int split_hostport(const char *a, char *host, size_t hcap, char *port,
			  size_t pcap)
{
	char buf[512], *h;
	uint16_t pn;
	if (strlen(a) >= sizeof buf)
		return -1;
	strcpy(buf, a);
	if (parley_hostport_split(buf, &h, &pn) || strlen(h) >= hcap)
		return -1;
	strcpy(host, h);
	int n = snprintf(port, pcap, "%u", pn);
	return n < 0 || (size_t)n >= pcap ? -1 : 0;
}

/* GET `path` from `addr`; the body (NUL-terminated, caller frees) of a 200
 * answer, else NULL with `err` saying why. */
static char *http_get(const char *addr, const char *path, int timeout_ms,
		      char *err, size_t ecap)
{
	char host[256], port[16];
	if (split_hostport(addr, host, sizeof host, port, sizeof port)) {
		snprintf(err, ecap, "bad address (want host:port)");
		return NULL;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int g = getaddrinfo(host, port, &hints, &ai);
	if (g) {
		snprintf(err, ecap, "%s", gai_strerror(g));
		return NULL;
	}
	uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	char *body = NULL, *buf = NULL;
	size_t len = 0, cap = 0;
	if (fd < 0) {
		snprintf(err, ecap, "socket: %s", strerror(errno));
		goto out;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS) {
		snprintf(err, ecap, "connect: %s", strerror(errno));
		goto out;
	}
	char req[512];
	int rl = snprintf(req, sizeof req,
			  "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
			  path, host);
	size_t sent = 0;
	for (;;) {
		uint64_t now = mono_ms();
		if (now >= deadline) {
			snprintf(err, ecap, "timed out");
			goto out;
		}
		bool wr = sent < (size_t)rl;
		struct pollfd pf = {.fd = fd, .events = wr ? POLLOUT : POLLIN};
		int k = poll(&pf, 1, (int)(deadline - now));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			continue;
		if (wr) {
			int soerr = 0;
			socklen_t sl = sizeof soerr;
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
			if (soerr) {
				snprintf(err, ecap, "connect: %s", strerror(soerr));
				goto out;
			}
			ssize_t w = send(fd, req + sent, (size_t)rl - sent, MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				snprintf(err, ecap, "send: %s", strerror(errno));
				goto out;
			}
			if (w > 0)
				sent += (size_t)w;
			continue;
		}
		if (len + 4096 + 1 > cap) {
			if (cap >= CS_MAX_BODY) {
				snprintf(err, ecap, "answer too large");
				goto out;
			}
			size_t nc = cap ? cap * 2 : 16384;
			char *gb = realloc(buf, nc);
			if (!gb) {
				snprintf(err, ecap, "out of memory");
				goto out;
			}
			buf = gb;
			cap = nc;
		}
		ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r < 0) {
			snprintf(err, ecap, "recv: %s", strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (!buf) {
		snprintf(err, ecap, "empty answer");
		goto out;
	}
	buf[len] = '\0';
	int code = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1 || code != 200) {
		snprintf(err, ecap, "HTTP status %d", code);
		goto out;
	}
	char *b = strstr(buf, "\r\n\r\n");
	if (!b) {
		snprintf(err, ecap, "malformed answer");
		goto out;
	}
	body = strdup(b + 4);
	if (!body)
		snprintf(err, ecap, "out of memory");
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return body;
}

/* ---- the cluster as the nodes report it ------------------------------------------- */

struct cnode {
	char admin[128];
	bool reachable;
	char err[160];
	struct jv doc; /* the node's /cluster */
	uint64_t id;
};

struct cs {
	struct cnode nodes[CS_MAX_NODES];
	uint32_t n;
	uint64_t lag_threshold;
	int timeout_ms;
};

static int add_node(struct cs *c, const char *admin)
{
	for (uint32_t i = 0; i < c->n; i++)
		if (!strcmp(c->nodes[i].admin, admin))
			return 0;
	if (c->n >= CS_MAX_NODES || strlen(admin) >= sizeof c->nodes[0].admin)
		return -1;
	snprintf(c->nodes[c->n++].admin, sizeof c->nodes[0].admin, "%s", admin);
	return 0;
}

static void query(struct cs *c, struct cnode *nd)
{
	char *body = http_get(nd->admin, "/cluster", c->timeout_ms, nd->err,
			      sizeof nd->err);
	if (!body)
		return;
	struct jp j = {body, body + strlen(body), 0};
	if (jval(&j, &nd->doc) || nd->doc.t != J_OBJ) {
		jfree(&nd->doc);
		snprintf(nd->err, sizeof nd->err, "malformed /cluster answer");
	} else {
		nd->reachable = true;
		nd->id = jnum(&nd->doc, "node");
	}
	free(body);
}

/* The node id another answering node gives the admin address `admin`
 * (peers[].admin), 0 when none does. */
static uint64_t id_by_admin(const struct cs *c, const char *admin)
{
	for (uint32_t i = 0; i < c->n; i++) {
		const struct jv *pe = c->nodes[i].reachable
					      ? jget(&c->nodes[i].doc, "peers")
					      : NULL;
		for (uint32_t k = 0; pe && pe->t == J_ARR && k < pe->n; k++)
			if (!strcmp(jstrv(&pe->kids[k], "admin"), admin))
				return jnum(&pe->kids[k], "node");
	}
	return 0;
}

static const struct cnode *node_by_id(const struct cs *c, uint64_t id)
{
	for (uint32_t i = 0; i < c->n; i++)
		if (c->nodes[i].reachable && c->nodes[i].id == id)
			return &c->nodes[i];
	return NULL;
}

static const struct jv *part_of(const struct cnode *nd, uint64_t p)
{
	const struct jv *ps = jget(&nd->doc, "partitions");
	if (!ps || ps->t != J_ARR)
		return NULL;
	for (uint32_t i = 0; i < ps->n; i++)
		if (jnum(&ps->kids[i], "partition") == p)
			return &ps->kids[i];
	return NULL;
}

/* Every node id any answering node names (itself, its peers), sorted. */
static uint32_t known_ids(const struct cs *c, uint64_t *ids, uint32_t cap)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->n; i++) {
		const struct cnode *nd = &c->nodes[i];
		if (!nd->reachable)
			continue;
		uint64_t cand[1 + CS_MAX_NODES];
		uint32_t nc = 0;
		cand[nc++] = nd->id;
		const struct jv *pe = jget(&nd->doc, "peers");
		for (uint32_t k = 0; pe && pe->t == J_ARR && k < pe->n && nc < CS_MAX_NODES + 1; k++)
			cand[nc++] = jnum(&pe->kids[k], "node");
		for (uint32_t k = 0; k < nc; k++) {
			bool have = !cand[k];
			for (uint32_t m = 0; m < n && !have; m++)
				have = ids[m] == cand[k];
			if (!have && n < cap)
				ids[n++] = cand[k];
		}
	}
	for (uint32_t a = 1; a < n; a++) /* insertion sort */
		for (uint32_t b = a; b > 0 && ids[b - 1] > ids[b]; b--) {
			uint64_t t = ids[b];
			ids[b] = ids[b - 1];
			ids[b - 1] = t;
		}
	return n;
}

struct replica {
	uint64_t node;
	bool reachable;          /* the node itself answered */
	const char *role;
	uint64_t commit, applied;
	uint64_t commit_lag, apply_lag; /* behind the leader's commit */
	bool have_member;        /* the leader's view */
	uint64_t match, lag;
	bool active;
	bool learner;            /* in the group's learners */
	bool placed_learner;     /* a learner by the placement map (the meta
				    group's non-voting members) */
	bool lagging;
};

struct pview {
	uint64_t part;
	uint64_t leader, term, commit, last_index;
	bool leader_known, leader_reachable;
	struct replica r[CS_MAX_NODES];
	uint32_t nr;
	bool lagging, has_learner;
	const struct jv *voters, *learners; /* the configuration shown */
	/* the placement map's replicas (§3.7) and whether the configuration
	 * differs from them */
	const struct jv *pl_voters, *pl_learners;
	bool pl_recorded, pl_differs;
};

static bool jarr_has(const struct jv *a, uint64_t id);

/* Same ids in both arrays (any order). */
static bool jarr_same(const struct jv *a, const struct jv *b)
{
	uint32_t na = a && a->t == J_ARR ? a->n : 0;
	uint32_t nb = b && b->t == J_ARR ? b->n : 0;
	if (na != nb)
		return false;
	for (uint32_t i = 0; i < na; i++)
		if (!jarr_has(b, a->kids[i].u))
			return false;
	return true;
}

static bool jarr_has(const struct jv *a, uint64_t id)
{
	for (uint32_t i = 0; a && a->t == J_ARR && i < a->n; i++)
		if (a->kids[i].t == J_NUM && a->kids[i].u == id)
			return true;
	return false;
}

static void build_partition(const struct cs *c, uint64_t p, struct pview *v)
{
	memset(v, 0, sizeof *v);
	v->part = p;
	/* the leader: an answering node that leads it (highest term) */
	const struct jv *lp = NULL;
	for (uint32_t i = 0; i < c->n; i++) {
		const struct cnode *nd = &c->nodes[i];
		const struct jv *pp = nd->reachable ? part_of(nd, p) : NULL;
		if (!pp)
			continue;
		if (!strcmp(jstrv(pp, "role"), "leader") &&
		    (!lp || jnum(pp, "term") > v->term)) {
			lp = pp;
			v->leader = nd->id;
			v->term = jnum(pp, "term");
		}
	}
	if (lp) {
		v->leader_known = v->leader_reachable = true;
		v->commit = jnum(lp, "commit");
		v->last_index = jnum(lp, "last_index");
	} else { /* the leader the answering nodes name (highest term) */
		for (uint32_t i = 0; i < c->n; i++) {
			const struct cnode *nd = &c->nodes[i];
			const struct jv *pp = nd->reachable ? part_of(nd, p) : NULL;
			if (pp && jnum(pp, "leader") &&
			    (!v->leader_known || jnum(pp, "term") > v->term)) {
				v->leader_known = true;
				v->leader = jnum(pp, "leader");
				v->term = jnum(pp, "term");
				v->commit = jnum(pp, "commit");
			}
		}
	}
	if (!v->leader_known) /* the newest term an answering replica is in */
		for (uint32_t i = 0; i < c->n; i++) {
			const struct cnode *nd = &c->nodes[i];
			const struct jv *pp = nd->reachable ? part_of(nd, p) : NULL;
			if (pp && jnum(pp, "term") > v->term) {
				v->term = jnum(pp, "term");
				v->commit = jnum(pp, "commit");
			}
		}
	/* the configuration: the leader's, else the newest term's */
	const struct jv *cp = lp;
	uint64_t cterm = 0;
	for (uint32_t i = 0; !cp && i < c->n; i++) {
		const struct cnode *nd = &c->nodes[i];
		const struct jv *pp = nd->reachable ? part_of(nd, p) : NULL;
		if (pp && jget(pp, "voters") && (!cterm || jnum(pp, "term") > cterm)) {
			cterm = jnum(pp, "term");
			cp = pp;
		}
	}
	if (!cp) /* none newer known: any answering node's */
		for (uint32_t i = 0; !cp && i < c->n; i++)
			cp = c->nodes[i].reachable ? part_of(&c->nodes[i], p) : NULL;
	v->voters = cp ? jget(cp, "voters") : NULL;
	v->learners = cp ? jget(cp, "learners") : NULL;
	/* the placement map: the leader's, else any answering node's that
	 * has a record for it, else any */
	const struct jv *pl = lp ? jget(lp, "placement") : NULL;
	for (uint32_t i = 0; (!pl || !jbool(pl, "recorded")) && i < c->n; i++) {
		const struct jv *pp = c->nodes[i].reachable
					      ? part_of(&c->nodes[i], p) : NULL;
		const struct jv *x = pp ? jget(pp, "placement") : NULL;
		if (x && (!pl || jbool(x, "recorded")))
			pl = x;
	}
	if (pl && pl->t == J_OBJ) {
		v->pl_voters = jget(pl, "voters");
		v->pl_learners = jget(pl, "learners");
		v->pl_recorded = jbool(pl, "recorded");
		v->pl_differs = v->voters &&
				(!jarr_same(v->pl_voters, v->voters) ||
				 !jarr_same(v->pl_learners, v->learners));
	}
	/* the replicas: the leader's members, else the configuration's
	 * voters and learners, else every node named */
	uint64_t ids[CS_MAX_NODES];
	uint32_t nid = 0;
	const struct jv *mem = lp ? jget(lp, "members") : NULL;
	if (mem && mem->t == J_ARR && mem->n) {
		for (uint32_t k = 0; k < mem->n && nid < CS_MAX_NODES; k++)
			ids[nid++] = jnum(&mem->kids[k], "node");
	} else if (v->voters && v->voters->t == J_ARR && v->voters->n) {
		for (int w = 0; w < 2; w++) {
			const struct jv *a = w ? v->learners : v->voters;
			for (uint32_t k = 0; a && a->t == J_ARR && k < a->n &&
					     nid < CS_MAX_NODES; k++)
				ids[nid++] = a->kids[k].u;
		}
	} else {
		nid = known_ids(c, ids, CS_MAX_NODES);
	}
	for (uint32_t k = 0; k < nid; k++) {
		struct replica *r = &v->r[v->nr++];
		r->node = ids[k];
		r->role = "?";
		const struct cnode *nd = node_by_id(c, ids[k]);
		const struct jv *pp = nd ? part_of(nd, p) : NULL;
		if (pp) {
			r->reachable = true;
			r->role = jstrv(pp, "role");
			r->commit = jnum(pp, "commit");
			r->applied = jnum(pp, "applied");
			uint64_t ref = v->leader_known ? v->commit : r->commit;
			r->commit_lag = ref > r->commit ? ref - r->commit : 0;
			r->apply_lag = ref > r->applied ? ref - r->applied : 0;
		}
		for (uint32_t m = 0; mem && m < mem->n; m++)
			if (jnum(&mem->kids[m], "node") == ids[k]) {
				r->have_member = true;
				r->match = jnum(&mem->kids[m], "match");
				r->lag = jnum(&mem->kids[m], "lag");
				r->active = jbool(&mem->kids[m], "active");
				r->learner = !jbool(&mem->kids[m], "voter");
			}
		r->learner |= jarr_has(v->learners, ids[k]);
		r->placed_learner = r->learner &&
				    jarr_has(v->pl_learners, ids[k]);
		v->has_learner |= r->learner && !r->placed_learner;
		r->lagging = !r->reachable ||
			     (r->have_member && (!r->active || r->lag > c->lag_threshold)) ||
			     r->commit_lag > c->lag_threshold ||
			     r->apply_lag > c->lag_threshold;
		v->lagging |= r->lagging;
	}
}

static uint64_t partition_count(const struct cs *c)
{
	uint64_t np = 0;
	for (uint32_t i = 0; i < c->n; i++) {
		const struct jv *ps = c->nodes[i].reachable
					      ? jget(&c->nodes[i].doc, "partitions")
					      : NULL;
		if (ps && ps->t == J_ARR && ps->n > np)
			np = ps->n;
	}
	return np;
}

static void json_out_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void node_counts(const struct cnode *nd, uint32_t *led, uint32_t *fol,
			uint32_t *up, uint32_t *npeers, uint32_t *learns)
{
	*led = *fol = *up = *npeers = *learns = 0;
	const struct jv *ps = jget(&nd->doc, "partitions");
	for (uint32_t k = 0; ps && ps->t == J_ARR && k < ps->n; k++) {
		const char *role = jstrv(&ps->kids[k], "role");
		*led += !strcmp(role, "leader");
		/* a partition placed elsewhere (§3.7) is no follower's: its
		 * group here is stale, not a member */
		const struct jv *vs = jget(&ps->kids[k], "voters");
		*fol += !strcmp(role, "follower") &&
			(!vs || jarr_has(vs, nd->id) ||
			 jarr_has(jget(&ps->kids[k], "learners"), nd->id));
		*learns += jarr_has(jget(&ps->kids[k], "learners"), nd->id);
	}
	const struct jv *pe = jget(&nd->doc, "peers");
	for (uint32_t k = 0; pe && pe->t == J_ARR && k < pe->n; k++) {
		(*npeers)++;
		*up += !strcmp(jstrv(&pe->kids[k], "state"), "up");
	}
}

/* A node's client address: its own answer, else what a peer advertised. */
static const char *client_of(const struct cs *c, const struct cnode *nd,
			     uint64_t id)
{
	if (nd && nd->reachable && *jstrv(&nd->doc, "client"))
		return jstrv(&nd->doc, "client");
	for (uint32_t i = 0; i < c->n; i++) {
		const struct jv *pe = c->nodes[i].reachable
					      ? jget(&c->nodes[i].doc, "peers")
					      : NULL;
		for (uint32_t k = 0; pe && pe->t == J_ARR && k < pe->n; k++)
			if (jnum(&pe->kids[k], "node") == id &&
			    *jstrv(&pe->kids[k], "client"))
				return jstrv(&pe->kids[k], "client");
	}
	return "";
}

/* Every learner of some partition and in how many (ascending ids). */
static uint32_t learners_of(const struct pview *pv, uint64_t np, uint64_t *ids,
			    uint32_t *cnt, uint32_t cap)
{
	uint32_t n = 0;
	for (uint64_t p = 0; p < np; p++)
		for (uint32_t k = 0; k < pv[p].nr; k++) {
			if (!pv[p].r[k].learner || pv[p].r[k].placed_learner)
				continue;
			uint32_t m = 0;
			while (m < n && ids[m] != pv[p].r[k].node)
				m++;
			if (m == n) {
				if (n == cap)
					continue;
				ids[n] = pv[p].r[k].node;
				cnt[n++] = 0;
			}
			cnt[m]++;
		}
	for (uint32_t x = 1; x < n; x++)
		for (uint32_t y = x; y > 0 && ids[y - 1] > ids[y]; y--) {
			uint64_t t = ids[y];
			ids[y] = ids[y - 1];
			ids[y - 1] = t;
			uint32_t u = cnt[y];
			cnt[y] = cnt[y - 1];
			cnt[y - 1] = u;
		}
	return n;
}

static void json_ids(const struct jv *a)
{
	putchar('[');
	for (uint32_t i = 0; a && a->t == J_ARR && i < a->n; i++)
		printf("%s%" PRIu64, i ? "," : "", a->kids[i].u);
	putchar(']');
}

static void print_json(const struct cs *c, const struct pview *pv, uint64_t np,
		       bool ok)
{
	printf("{\"ok\":%s,\"nodes\":[", ok ? "true" : "false");
	for (uint32_t i = 0; i < c->n; i++) {
		const struct cnode *nd = &c->nodes[i];
		printf("%s{\"admin\":", i ? "," : "");
		json_out_str(nd->admin);
		printf(",\"reachable\":%s", nd->reachable ? "true" : "false");
		if (!nd->reachable) {
			uint64_t id = id_by_admin(c, nd->admin);
			printf(",\"node\":%" PRIu64 ",\"client\":", id);
			json_out_str(id ? client_of(c, NULL, id) : "");
			printf(",\"error\":");
			json_out_str(nd->err);
			printf("}");
			continue;
		}
		uint32_t led, fol, up, npeers, learns;
		node_counts(nd, &led, &fol, &up, &npeers, &learns);
		printf(",\"node\":%" PRIu64 ",\"cluster\":%" PRIu64 ",\"client\":",
		       nd->id, jnum(&nd->doc, "cluster"));
		json_out_str(client_of(c, nd, nd->id));
		printf(",\"ready\":%s,\"leads\":%u,\"follows\":%u,\"learner_of\":%u,"
		       "\"peers_up\":%u,\"peers\":%u,\"frames\":",
		       jbool(&nd->doc, "ready") ? "true" : "false", led, fol,
		       learns, up, npeers);
		json_out_str(jstrv(&nd->doc, "frames"));
		printf(",\"links\":[");
		const struct jv *pe = jget(&nd->doc, "peers");
		for (uint32_t k = 0; pe && pe->t == J_ARR && k < pe->n; k++) {
			printf("%s{\"node\":%" PRIu64 ",\"state\":", k ? "," : "",
			       jnum(&pe->kids[k], "node"));
			json_out_str(jstrv(&pe->kids[k], "state"));
			printf(",\"frames\":");
			json_out_str(jstrv(&pe->kids[k], "frames"));
			printf(",\"protocol\":");
			json_out_str(jstrv(&pe->kids[k], "protocol"));
			printf("}");
		}
		printf("],\"operation\":");
		const struct jv *op = jget(&nd->doc, "operation");
		if (op && op->t == J_OBJ)
			json_out_str(jstrv(op, "text"));
		else
			printf("null");
		printf("}");
	}
	printf("],\"partitions\":[");
	for (uint64_t p = 0; p < np; p++) {
		const struct pview *v = &pv[p];
		printf("%s{\"partition\":%" PRIu64 ",\"leader\":%" PRIu64
		       ",\"leader_reachable\":%s,\"term\":%" PRIu64 ",\"commit\":%" PRIu64
		       ",\"no_leader\":%s,\"lagging\":%s,\"voters\":",
		       p ? "," : "", p, v->leader_known ? v->leader : 0,
		       v->leader_reachable ? "true" : "false", v->term, v->commit,
		       v->leader_known ? "false" : "true", v->lagging ? "true" : "false");
		json_ids(v->voters);
		printf(",\"learners\":");
		json_ids(v->learners);
		if (v->pl_voters) {
			printf(",\"placement\":{\"voters\":");
			json_ids(v->pl_voters);
			printf(",\"learners\":");
			json_ids(v->pl_learners);
			printf(",\"recorded\":%s,\"differs\":%s}",
			       v->pl_recorded ? "true" : "false",
			       v->pl_differs ? "true" : "false");
		}
		printf(",\"replicas\":[");
		for (uint32_t k = 0; k < v->nr; k++) {
			const struct replica *r = &v->r[k];
			printf("%s{\"node\":%" PRIu64 ",\"reachable\":%s,\"role\":",
			       k ? "," : "", r->node, r->reachable ? "true" : "false");
			json_out_str(r->role);
			if (r->reachable)
				printf(",\"commit\":%" PRIu64 ",\"applied\":%" PRIu64
				       ",\"commit_lag\":%" PRIu64 ",\"apply_lag\":%" PRIu64,
				       r->commit, r->applied, r->commit_lag, r->apply_lag);
			if (r->have_member)
				printf(",\"match\":%" PRIu64 ",\"lag\":%" PRIu64 ",\"active\":%s",
				       r->match, r->lag, r->active ? "true" : "false");
			printf(",\"learner\":%s,\"lagging\":%s}",
			       r->learner ? "true" : "false",
			       r->lagging ? "true" : "false");
		}
		printf("]}");
	}
	uint64_t lids[CS_MAX_NODES];
	uint32_t lcnt[CS_MAX_NODES];
	uint32_t nl = learners_of(pv, np, lids, lcnt, CS_MAX_NODES);
	printf("],\"learners\":[");
	for (uint32_t k = 0; k < nl; k++)
		printf("%s{\"node\":%" PRIu64 ",\"partitions\":%u}", k ? "," : "",
		       lids[k], lcnt[k]);
	printf("]}\n");
}

static void print_table(const struct cs *c, const struct pview *pv, uint64_t np)
{
	uint32_t reach = 0;
	for (uint32_t i = 0; i < c->n; i++)
		reach += c->nodes[i].reachable;
	printf("nodes: %u asked, %u answered\n\n", c->n, reach);
	printf("%-6s %-22s %-22s %-9s %-5s %-5s %-7s %-7s %-6s %s\n", "NODE",
	       "ADMIN", "CLIENT", "REACHABLE", "READY", "LEADS", "FOLLOWS",
	       "LEARNER", "FRAMES", "LINKS (as this node sees them)");
	bool mixed = false; /* nodes that know different peer frame sets */
	for (uint32_t i = 0; i < c->n; i++) {
		const struct cnode *nd = &c->nodes[i];
		if (!nd->reachable) {
			char id[24] = "?";
			uint64_t known = id_by_admin(c, nd->admin);
			if (known)
				snprintf(id, sizeof id, "%" PRIu64, known);
			const char *cl = known ? client_of(c, NULL, known) : "";
			printf("%-6s %-22s %-22s %-9s (%s)\n", id, nd->admin,
			       *cl ? cl : "-", "no", nd->err);
			continue;
		}
		uint32_t led, fol, up, npeers, learns;
		node_counts(nd, &led, &fol, &up, &npeers, &learns);
		char links[256] = "";
		size_t o = 0;
		const struct jv *pe = jget(&nd->doc, "peers");
		for (uint32_t k = 0; pe && pe->t == J_ARR && k < pe->n &&
				     o < sizeof links - 32; k++) {
			const char *pr = jstrv(&pe->kids[k], "protocol");
			bool other = *pr && strcmp(pr, "same") &&
				     strcmp(pr, "unknown");
			mixed |= other;
			int w = snprintf(links + o, sizeof links - o,
					 "%s%" PRIu64 ":%s%s%s%s", k ? " " : "",
					 jnum(&pe->kids[k], "node"),
					 jstrv(&pe->kids[k], "state"),
					 other ? "(" : "", other ? pr : "",
					 other ? ")" : "");
			if (w > 0)
				o += (size_t)w;
		}
		const char *cl = client_of(c, nd, nd->id);
		const char *fr = jstrv(&nd->doc, "frames");
		printf("%-6" PRIu64 " %-22s %-22s %-9s %-5s %-5u %-7u %-7u %-6s %s\n",
		       nd->id, nd->admin, *cl ? cl : "-", "yes",
		       jbool(&nd->doc, "ready") ? "yes" : "no", led, fol, learns,
		       *fr ? fr : "-", *links ? links : "-");
	}
	/* peers named by answering nodes but not asked / not answering */
	uint64_t ids[CS_MAX_NODES];
	uint32_t nid = known_ids(c, ids, CS_MAX_NODES);
	for (uint32_t k = 0; k < nid; k++) {
		bool shown = node_by_id(c, ids[k]) != NULL;
		for (uint32_t i = 0; i < c->n && !shown; i++)
			shown = !c->nodes[i].reachable &&
				id_by_admin(c, c->nodes[i].admin) == ids[k];
		if (!shown)
			printf("%-6" PRIu64 " %-22s %-22s %-9s (named by the others; "
			       "admin address unknown: give it with --admin)\n",
			       ids[k], "-", "-", "no");
	}
	if (mixed)
		printf("\nversions differ: the nodes know different peer frame "
		       "sets (FRAMES, bit t = frame type t; a link marked older / "
		       "newer / other):\n  a rolling upgrade is not finished. "
		       "Frames a node does not know are not sent to it\n  "
		       "(docs/CLUSTER.md §1.2, §3.8); finish the upgrade before "
		       "adding or removing nodes.\n");
	printf("\nreplica columns: node:commit_lag/apply_lag behind the leader's "
	       "commit (from the replica);\n  unreachable replicas: node:down(lag N "
	       "= entries the leader has not replicated to it);\n  * the leader, "
	       "(learner) a learner (non-voting: an add-node not finished),\n"
	       "  (meta-learner) a non-voting member of the meta group by the "
	       "placement map;\n  PLACEMENT: voters[/learners] by the placement "
	       "map (founders: no record yet)\n\n");
	printf("%-5s %-7s %-6s %-10s %-40s %-28s %s\n", "PART", "LEADER", "TERM",
	       "COMMIT", "REPLICAS", "FLAGS", "PLACEMENT");
	for (uint64_t p = 0; p < np; p++) {
		const struct pview *v = &pv[p];
		char reps[768] = "";
		size_t o = 0;
		for (uint32_t k = 0; k < v->nr && o < sizeof reps - 80; k++) {
			const struct replica *r = &v->r[k];
			const char *lt = r->placed_learner ? "(meta-learner)"
					 : r->learner ? "(learner)" : "";
			int w;
			if (r->reachable)
				w = snprintf(reps + o, sizeof reps - o, "%s%" PRIu64 "%s%s:%"
					     PRIu64 "/%" PRIu64 "%s", k ? " " : "", r->node,
					     !strcmp(r->role, "leader") ? "*" : "", lt,
					     r->commit_lag, r->apply_lag,
					     r->have_member && !r->active ? "(inactive)" : "");
			else if (r->have_member)
				w = snprintf(reps + o, sizeof reps - o, "%s%" PRIu64
					     "%s:down(lag %" PRIu64 "%s)", k ? " " : "",
					     r->node, lt, r->lag,
					     r->active ? "" : ", inactive");
			else
				w = snprintf(reps + o, sizeof reps - o, "%s%" PRIu64 "%s:down",
					     k ? " " : "", r->node, lt);
			if (w > 0)
				o += (size_t)w;
		}
		char leader[32];
		if (v->leader_known)
			snprintf(leader, sizeof leader, "%" PRIu64, v->leader);
		else
			snprintf(leader, sizeof leader, "-");
		char flags[96] = "";
		if (!v->leader_known)
			strcat(flags, "no-leader ");
		else if (!v->leader_reachable)
			strcat(flags, "leader-down ");
		if (v->lagging)
			strcat(flags, "lagging ");
		if (v->has_learner)
			strcat(flags, "learner ");
		if (v->pl_differs)
			strcat(flags, "placement-differs");
		char placed[160] = "-";
		if (v->pl_voters) {
			size_t q = 0;
			for (int w = 0; w < 2; w++) {
				const struct jv *a = w ? v->pl_learners : v->pl_voters;
				for (uint32_t k = 0; a && a->t == J_ARR && k < a->n &&
						     q < sizeof placed - 24; k++) {
					int x = snprintf(placed + q, sizeof placed - q,
							 "%s%" PRIu64,
							 k ? "," : w ? "/" : "",
							 a->kids[k].u);
					if (x > 0)
						q += (size_t)x;
				}
			}
			if (!v->pl_recorded && q < sizeof placed - 12)
				snprintf(placed + q, sizeof placed - q, " (founders)");
		}
		printf("%-5" PRIu64 " %-7s %-6" PRIu64 " %-10" PRIu64 " %-40s %-28s %s\n",
		       p, leader, v->term, v->commit, reps, flags, placed);
	}
	/* the meta group (§3.7) as the first answering node reports it */
	for (uint32_t i = 0; i < c->n; i++) {
		const struct jv *m = c->nodes[i].reachable
					     ? jget(&c->nodes[i].doc, "meta") : NULL;
		if (!m || m->t != J_OBJ)
			continue;
		printf("\nmeta group: partitions ");
		const struct jv *mp = jget(m, "partitions");
		for (uint32_t k = 0; mp && mp->t == J_ARR && k < mp->n; k++)
			printf("%s%" PRIu64, k ? "," : "", mp->kids[k].u);
		printf(", voters ");
		const struct jv *mv = jget(m, "voter_nodes");
		for (uint32_t k = 0; mv && mv->t == J_ARR && k < mv->n; k++)
			printf("%s%" PRIu64, k ? "," : "", mv->kids[k].u);
		printf("; replication factor %" PRIu64 " (0 = every node)\n",
		       jnum(&c->nodes[i].doc, "replication_factor"));
		break;
	}
	uint64_t lids[CS_MAX_NODES];
	uint32_t lcnt[CS_MAX_NODES];
	uint32_t nl = learners_of(pv, np, lids, lcnt, CS_MAX_NODES);
	if (nl)
		printf("\n");
	for (uint32_t k = 0; k < nl; k++)
		printf("learner: node %" PRIu64 " is a learner (not a voter) of %u of "
		       "%" PRIu64 " partitions: an add-node that has not finished; "
		       "repeat it to finish, or remove-node it\n", lids[k], lcnt[k],
		       np);
	for (uint32_t i = 0; i < c->n; i++) {
		const struct jv *op = c->nodes[i].reachable
					      ? jget(&c->nodes[i].doc, "operation")
					      : NULL;
		if (op && op->t == J_OBJ)
			printf("%soperation in progress on node %" PRIu64 ": %s\n",
			       nl ? "" : "\n", c->nodes[i].id, jstrv(op, "text"));
	}
}

static void status_usage(FILE *f)
{
	fprintf(f,
		"usage: parleyctl cluster status --admin HOST:PORT[,HOST:PORT...]\n"
		"                                [--json] [--lag-threshold N] [--timeout-ms MS]\n"
		"Asks every node's admin port (GET /cluster) and prints nodes and\n"
		"partitions: leader, commit, each replica's commit and apply lag.\n"
		"Nodes whose admin address the others advertise are asked too.\n"
		"exit: 0 every partition has a leader, 1 a partition has none,\n"
		"      2 usage, 3 no node answered\n");
}

int ctl_cluster_status_main(int argc, char **argv)
{
	static struct cs c;
	memset(&c, 0, sizeof c);
	c.lag_threshold = 100;
	c.timeout_ms = 2000;
	bool json = false;
	const char *admins = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			status_usage(stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "--admin") && i + 1 < argc) {
			admins = argv[++i];
		} else if (!strcmp(a, "--lag-threshold") && i + 1 < argc) {
			char *e;
			c.lag_threshold = strtoull(argv[++i], &e, 10);
			if (*e || !*argv[i])
				goto usage;
		} else if (!strcmp(a, "--timeout-ms") && i + 1 < argc) {
			char *e;
			unsigned long t = strtoul(argv[++i], &e, 10);
			if (*e || !t || t > 600000)
				goto usage;
			c.timeout_ms = (int)t;
		} else {
			goto usage;
		}
	}
	if (!admins || !*admins)
		goto usage;
	for (const char *p = admins; *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		char one[128];
		if (!l || l >= sizeof one)
			goto usage;
		memcpy(one, p, l);
		one[l] = '\0';
		if (add_node(&c, one)) {
			fprintf(stderr, "parleyctl cluster status: at most %u nodes\n",
				CS_MAX_NODES);
			return 2;
		}
		p = e ? e + 1 : p + l;
	}
	/* ask the given nodes, then any advertised admin address not asked */
	for (uint32_t i = 0; i < c.n; i++) {
		query(&c, &c.nodes[i]);
		const struct jv *pe = c.nodes[i].reachable
					      ? jget(&c.nodes[i].doc, "peers")
					      : NULL;
		for (uint32_t k = 0; pe && pe->t == J_ARR && k < pe->n; k++) {
			const char *adm = jstrv(&pe->kids[k], "admin");
			uint64_t id = jnum(&pe->kids[k], "node");
			bool have = false;
			for (uint32_t m = 0; m < c.n && !have; m++)
				have = c.nodes[m].reachable && c.nodes[m].id == id;
			if (*adm && !have)
				(void)add_node(&c, adm);
		}
	}
	uint32_t reach = 0;
	for (uint32_t i = 0; i < c.n; i++)
		reach += c.nodes[i].reachable;
	uint64_t np = partition_count(&c);
	struct pview *pv = np ? calloc(np, sizeof *pv) : NULL;
	if (np && !pv) {
		fprintf(stderr, "parleyctl cluster status: out of memory\n");
		return 3;
	}
	bool ok = reach > 0 && np > 0;
	for (uint64_t p = 0; p < np; p++) {
		build_partition(&c, p, &pv[p]);
		ok &= pv[p].leader_known;
	}
	if (json)
		print_json(&c, pv, np, ok);
	else
		print_table(&c, pv, np);
	free(pv);
	for (uint32_t i = 0; i < c.n; i++)
		jfree(&c.nodes[i].doc);
	if (!reach) {
		if (!json)
			fprintf(stderr, "parleyctl cluster status: no node answered\n");
		return 3;
	}
	return ok ? 0 : 1;
usage:
	status_usage(stderr);
	return 2;
}
