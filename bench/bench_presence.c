/*
 * bench_presence.c — parley-bench's presence-relay mode: what relaying
 * presence across the nodes of a cluster costs (docs/CLUSTER.md §3.3,
 * "Presence and typing across nodes": every node keeps an entry per user
 * online anywhere, sends each transition to every other node at once and
 * its whole online set every presence_ttl_ms / 3).
 *
 * A fresh 3-node parleyd cluster on loopback (--parleyd-args plus the
 * cluster arguments), then three windows of --seconds each (default 45 s:
 * two online-set refreshes at the default presence_ttl_ms of 60 s):
 *   idle    no client connected (Raft heartbeats of quiet groups only);
 *   steady  --count users (default 10,000) online, one authenticated
 *           connection each, spread evenly over the nodes (user i on node
 *           i % 3), each sending a PING every PR_PING_S (the client
 *           heartbeat that keeps a session counting);
 *   churn   the same plus --rate R connection replacements per second in
 *           total (default 100): a random user's connection closed and a
 *           new one opened to the same node (an OFFLINE and an ONLINE
 *           transition, each relayed to both other nodes).
 * Per window, summed over the three nodes: bytes/s on the peer links
 * (parley_peer_bytes_out), PRES payloads/s (parley_presence_relay_out),
 * CPU ms/s of the parleyd processes (/proc/PID/stat utime+stime), and at
 * its end the registry entries and RSS of each node. The difference
 * between windows is the cost of the users; the steady window's CPU also
 * holds the clients' PINGs (count / PR_PING_S frames/s in all).
 *
 * Clients: one child process per node holds its node's connections (a
 * file descriptor each, no per-connection client state), pings them,
 * drains what comes back, and churns in the churn window; the parent only
 * reads /metrics and /proc. Control through a shared anonymous mapping.
 * Threads: one per process.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench.h"
#include "bench_args.h"
#include "bench_http.h"
#include "bench_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "parley_common.h"
#include "parley_proto.h"

#define PR_NODES 3
#define PR_CLUSTER_ID "4343"
#define PR_PING_S 20.0            /* < presence_ttl_ms and the idle timeout */
#define PR_BATCH 64u              /* handshakes pipelined at once */
#define PR_HS_TIMEOUT_MS 10000
#define PR_METRICS_CAP (512u << 10)
#define PR_HTTP_TIMEOUT_MS 2000
#define PR_START_TIMEOUT_S 20.0

struct pr_node {
	pid_t pid;
	int port, admin_port, peer_port;
	char *tmp;
	char *argv[96];
	char store[8192];
};

/* Shared between the parent and the client children (MAP_SHARED). */
struct pr_ctl {
	_Atomic int phase;          /* 0 hold, 1 churn, 2 quit */
	_Atomic int ready[PR_NODES]; /* 1 opened all, < 0 failed (-err) */
	_Atomic uint64_t churned, ping_frames, churn_fail;
	double churn_per_child;     /* replacements / s of one child */
};

static int pr_build_argv(const struct bench_cfg *cfg, struct pr_node *nd, unsigned i)
{
	struct pr_node *n = &nd[i];
	struct bench_ports ports = {n->port, 0, n->admin_port};
	int argc = bench_expand_args_ports(cfg->parleyd, cfg->parleyd_args, &ports, n->tmp,
					   n->argv, 80, n->store, sizeof n->store - 512);
	if (argc < 0)
		return -PARLEY_EINVAL;
	char *p = n->store + sizeof n->store - 512;
	size_t room = 512;
	char peers[256], node_id[8], peer_port[8];
	int m = 0;
	for (unsigned j = 0; j < PR_NODES; j++)
		if (j != i)
			m += snprintf(peers + m, sizeof peers - (size_t)m, "%s%u=127.0.0.1:%d",
				      m ? "," : "", j + 1, nd[j].peer_port);
	snprintf(node_id, sizeof node_id, "%u", i + 1);
	snprintf(peer_port, sizeof peer_port, "%d", n->peer_port);
	const char *x[] = {"--node-id", node_id, "--cluster-id", PR_CLUSTER_ID,
			   "--peer-port", peer_port, "--peers", peers, NULL};
	if (bench_append_args(n->argv, argc, 96, x, p, room) < 0)
		return -PARLEY_EINVAL;
	return 0;
}

/* The sum of every series of one metric family; NAN when unreadable. */
static double pr_metric(int admin_port, const char *name)
{
	static char buf[PR_METRICS_CAP];
	long n = bench_http_req("GET", admin_port, "/metrics", buf, sizeof buf,
				PR_HTTP_TIMEOUT_MS);
	if (n <= 0 || bench_http_status(buf, (size_t)n) != 200)
		return NAN;
	size_t l = strlen(name);
	double s = 0;
	for (const char *p = buf; p && *p;) {
		const char *eol = strchr(p, '\n');
		if (!strncmp(p, name, l) && (p[l] == ' ' || p[l] == '{')) {
			const char *v = p[l] == '{' ? strchr(p + l, '}') : p + l;
			if (v && (!eol || v < eol))
				s += strtod(*v == '}' ? v + 1 : v, NULL);
		}
		p = eol ? eol + 1 : NULL;
	}
	return s;
}

/* ---- client children ----------------------------------------------------------- */

/* Opens connection(s) for users ids[0..k) to port, pipelined; fds out. */
static int pr_open(const struct bench_cfg *cfg, int port, const uint32_t *ids, uint32_t k,
		   int *fds, struct wire_conn *c, uint8_t *rbuf, struct parley_msg *m)
{
	char tok[2048], user[64], dev[64];
	int status = 0;
	uint32_t opened = 0;
	for (uint32_t i = 0; i < k && status == 0; i++, opened++) {
		snprintf(user, sizeof user, "pr-%u", ids[i]);
		snprintf(dev, sizeof dev, "d%u", ids[i]);
		if ((status = wire_connect(&c[i], "127.0.0.1", port, PR_HS_TIMEOUT_MS)) != 0)
			break;
		if ((status = bench_mint(cfg, user, tok, sizeof tok)) != 0)
			break;
		status = wire_hello_auth_send(&c[i], m, dev, tok,
					      "parley-bench presence", 0);
	}
	for (uint32_t i = 0; i < opened && status == 0; i++) {
		c[i].rbuf = rbuf;
		c[i].rlen = c[i].roff = 0;
		status = wire_hello_auth_wait(&c[i], m, PR_HS_TIMEOUT_MS, NULL);
		c[i].rbuf = NULL;
		fds[i] = c[i].fd;
		fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
	}
	return status;
}

static void pr_drain(int fd, uint8_t *scratch, size_t cap)
{
	while (read(fd, scratch, cap) > 0)
		;
}

static void pr_child(const struct bench_cfg *cfg, struct pr_ctl *ctl, unsigned node, int port,
		     uint32_t total)
{
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	uint32_t n = 0;
	for (uint32_t i = node; i < total; i += PR_NODES)
		n++;
	uint32_t *ids = calloc(n ? n : 1, sizeof *ids);
	int *fds = calloc(n ? n : 1, sizeof *fds);
	struct wire_conn *c = calloc(PR_BATCH, sizeof *c);
	uint8_t *rbuf = malloc(WIRE_RBUF);
	struct parley_msg *m = malloc(sizeof *m);
	if (!ids || !fds || !c || !rbuf || !m) {
		atomic_store(&ctl->ready[node], -ENOMEM);
		_exit(1);
	}
	for (uint32_t i = 0, u = node; i < n; i++, u += PR_NODES)
		ids[i] = u;
	int st = 0;
	for (uint32_t b = 0; b < n && st == 0; b += PR_BATCH)
		st = pr_open(cfg, port, ids + b, PARLEY_MIN(PR_BATCH, n - b), fds + b, c, rbuf, m);
	atomic_store(&ctl->ready[node], st ? (st < 0 ? st : -st) : 1);
	if (st)
		_exit(1);
	uint8_t ping[64];
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_PING;
	m->ping.nonce = 1;
	int pl = parley_proto_encode(ping, sizeof ping, 9, m);
	double next_ping = bench_now_s() + PR_PING_S, next_drain = bench_now_s() + 1;
	double churn_credit = 0, last = bench_now_s();
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ node;
	while (atomic_load(&ctl->phase) != 2) {
		double now = bench_now_s();
		if (now >= next_drain) {
			for (uint32_t i = 0; i < n; i++)
				pr_drain(fds[i], rbuf, WIRE_RBUF);
			next_drain = now + 1;
		}
		if (now >= next_ping && pl > 0) {
			for (uint32_t i = 0; i < n; i++)
				(void)!write(fds[i], ping, (size_t)pl);
			atomic_fetch_add(&ctl->ping_frames, n);
			next_ping = now + PR_PING_S;
		}
		if (atomic_load(&ctl->phase) == 1 && n) {
			churn_credit += (now - last) * ctl->churn_per_child;
			while (churn_credit >= 1) {
				churn_credit -= 1;
				seed = seed * 6364136223846793005ull + 1442695040888963407ull;
				uint32_t k = (uint32_t)((seed >> 33) % n);
				close(fds[k]);
				int fd = -1;
				if (pr_open(cfg, port, &ids[k], 1, &fd, c, rbuf, m) == 0) {
					fds[k] = fd;
					atomic_fetch_add(&ctl->churned, 1);
				} else {
					fds[k] = -1;
					atomic_fetch_add(&ctl->churn_fail, 1);
				}
			}
		} else {
			churn_credit = 0;
		}
		last = now;
		bench_sleep_ns(5 * 1000000ull);
	}
	_exit(0);
}

/* ---- windows ----------------------------------------------------------------------------- */

struct pr_sample {
	double t, cpu[PR_NODES], bytes_out, relay_out, entries[PR_NODES];
	long rss[PR_NODES];
	uint64_t churned, pings;
};

static void pr_sample(const struct pr_node *nd, const struct pr_ctl *ctl, struct pr_sample *s)
{
	s->t = bench_now_s();
	s->bytes_out = s->relay_out = 0;
	for (unsigned i = 0; i < PR_NODES; i++) {
		s->cpu[i] = bench_cpu_s(nd[i].pid);
		s->bytes_out += pr_metric(nd[i].admin_port, "parley_peer_bytes_out");
		s->relay_out += pr_metric(nd[i].admin_port, "parley_presence_relay_out_total");
		s->entries[i] = pr_metric(nd[i].admin_port, "parley_presence_entries");
		s->rss[i] = bench_vmrss_kib(nd[i].pid);
	}
	s->churned = atomic_load(&ctl->churned);
	s->pings = atomic_load(&ctl->ping_frames);
}

static void pr_report(const char *name, const struct pr_sample *a, const struct pr_sample *b)
{
	double dt = b->t - a->t, cpu = 0;
	for (unsigned i = 0; i < PR_NODES; i++)
		cpu += b->cpu[i] - a->cpu[i];
	printf("%-7s %6.1f s  peer %9.0f B/s  PRES %7.1f /s  CPU %6.1f ms/s (3 nodes)  "
	       "churn %6.1f /s  pings %6.1f /s  entries %.0f/%.0f/%.0f  RSS %ld/%ld/%ld MiB\n",
	       name, dt, (b->bytes_out - a->bytes_out) / dt, (b->relay_out - a->relay_out) / dt,
	       cpu * 1000 / dt, (double)(b->churned - a->churned) / dt,
	       (double)(b->pings - a->pings) / dt, b->entries[0], b->entries[1], b->entries[2],
	       b->rss[0] / 1024, b->rss[1] / 1024, b->rss[2] / 1024);
	fflush(stdout);
}

static void pr_window(const char *name, double seconds, const struct pr_node *nd,
		      const struct pr_ctl *ctl)
{
	struct pr_sample a, b;
	pr_sample(nd, ctl, &a);
	bench_sleep_ns((uint64_t)(seconds * 1e9));
	pr_sample(nd, ctl, &b);
	pr_report(name, &a, &b);
}

int bench_presence_relay(const struct bench_cfg *cfg)
{
	struct pr_node nd[PR_NODES];
	memset(nd, 0, sizeof nd);
	pid_t kids[PR_NODES] = {-1, -1, -1};
	struct pr_ctl *ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED)
		return -ENOMEM;
	memset(ctl, 0, sizeof *ctl);
	double rate = cfg->n_rates ? cfg->rates[0] : 100;
	ctl->churn_per_child = rate / PR_NODES;
	int rc = 0;
	for (unsigned i = 0; i < PR_NODES && !rc; i++) {
		nd[i].pid = -1;
		char pfx[32];
		snprintf(pfx, sizeof pfx, "presence-n%u", i + 1);
		if (!(nd[i].tmp = bench_mkdtemp(cfg->dir, pfx)))
			rc = -errno;
		else if ((nd[i].port = bench_free_port()) < 0 ||
			 (nd[i].admin_port = bench_free_port()) < 0 ||
			 (nd[i].peer_port = bench_free_port()) < 0)
			rc = -PARLEY_EIO;
	}
	for (unsigned i = 0; i < PR_NODES && !rc; i++)
		rc = pr_build_argv(cfg, nd, i);
	for (unsigned i = 0; i < PR_NODES && !rc; i++) {
		char logp[4200];
		snprintf(logp, sizeof logp, "%s/parleyd.log", nd[i].tmp);
		pid_t pid = bench_spawn(nd[i].argv, logp);
		if (pid < 0)
			rc = pid;
		else
			nd[i].pid = pid;
	}
	/* every node listens and has both peer links up */
	double end = bench_now_s() + PR_START_TIMEOUT_S;
	for (unsigned i = 0; i < PR_NODES && !rc; i++) {
		while (!(pr_metric(nd[i].admin_port, "parley_peer_link_up") >= PR_NODES - 1)) {
			if (bench_now_s() > end || bench_child_exited(&nd[i].pid)) {
				fprintf(stderr, "parley-bench: presence-relay: node %u not up (see "
					"%s/parleyd.log)\n", i + 1, nd[i].tmp);
				rc = -PARLEY_ETIMEDOUT;
				break;
			}
			bench_sleep_ns(100 * 1000000ull);
		}
	}
	if (!rc) {
		printf("presence-relay: 3 nodes, %u users, churn %.0f /s, windows of %.0f s, "
		       "client PING every %.0f s\n", cfg->count, rate, cfg->seconds, PR_PING_S);
		bench_sleep_ns(2000 * 1000000ull); /* elections settle */
		pr_window("idle", cfg->seconds, nd, ctl);
		for (unsigned i = 0; i < PR_NODES; i++) {
			pid_t pid = fork();
			if (pid == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				pr_child(cfg, ctl, i, nd[i].port, cfg->count);
			}
			if (pid < 0) {
				rc = -errno;
				break;
			}
			bench_child_register(pid);
			kids[i] = pid;
		}
		double t0 = bench_now_s();
		for (unsigned i = 0; i < PR_NODES && !rc; i++) {
			while (atomic_load(&ctl->ready[i]) == 0 && bench_now_s() - t0 < 600)
				bench_sleep_ns(50 * 1000000ull);
			if (atomic_load(&ctl->ready[i]) != 1) {
				fprintf(stderr, "parley-bench: presence-relay: client of node %u: %s\n",
					i + 1, parley_strerror(atomic_load(&ctl->ready[i])));
				rc = -PARLEY_EIO;
			}
		}
		if (!rc) {
			printf("opened %u connections in %.1f s\n", cfg->count, bench_now_s() - t0);
			bench_sleep_ns(3000 * 1000000ull); /* the ONLINE bursts pass */
			pr_window("steady", cfg->seconds, nd, ctl);
			atomic_store(&ctl->phase, 1);
			pr_window("churn", cfg->seconds, nd, ctl);
			printf("churn failures: %" PRIu64 "\n", atomic_load(&ctl->churn_fail));
		}
	}
	atomic_store(&ctl->phase, 2);
	for (unsigned i = 0; i < PR_NODES; i++)
		if (kids[i] > 0) {
			waitpid(kids[i], NULL, 0);
			bench_child_forget(kids[i]);
		}
	for (unsigned i = 0; i < PR_NODES; i++) {
		bench_child_kill(&nd[i].pid);
		if (nd[i].tmp) {
			if (rc)
				fprintf(stderr, "parley-bench: node %u's logs kept in %s\n", i + 1,
					nd[i].tmp);
			else
				bench_rmtree(nd[i].tmp);
			free(nd[i].tmp);
		}
	}
	munmap(ctl, sizeof *ctl);
	return rc;
}
