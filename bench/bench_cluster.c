/*
 * bench_cluster.c — parley-bench's cluster mode (issue 12's benchmark):
 *
 *   1. replicated throughput: for each --producers N (default 50,200) and
 *      --payload (default 100 B), a fresh 3-node parleyd cluster on
 *      loopback (static membership: every node a voter of every partition,
 *      replication factor 3; one node leads every partition,
 *      docs/CLUSTER.md §3.2), N connections to the leader, each with one
 *      SEND outstanding in its own 1:1 conversation (bench_appends_at):
 *      SEND_ACKs/s and ack latency. Then the same load against one fresh
 *      single-node parleyd with the same settings (the cost of
 *      replication as a ratio measured in the same run), then against a
 *      3-server NATS JetStream cluster with a 3-replica file stream
 *      (bench_jetstream.c, publish with ack). The three alternate per
 *      point so they see the same background load.
 *   2. failover: a fresh 3-node cluster, FO_CLIENTS (4) libparley clients
 *      that know all three nodes (opts.nodes) SEND at --rate in total
 *      (default 100/s, blocking sends, each client paced); --kills times
 *      (default 20): wait until the cluster is stable (one node leads all
 *      partitions, every live node knows the leaders and has applied what
 *      it knows committed), SIGKILL the leader, and take the time from the
 *      kill to the first SEND_ACK of a SEND issued after the process was
 *      reaped (the client follows NOTLEADER / reconnects with its default
 *      settings); then restart the killed node on its data dir and ports.
 *      At the end every client reads its conversation's history: each
 *      acknowledged message must be there once, at its acknowledged seq.
 *      Besides, from the survivors' /metrics: when one of them leads
 *      partition 0 again, and when one leads every partition.
 *   Per throughput point also the servers' CPU (/proc/PID/stat) and, from
 *   the (leader) node's /metrics, engine entries per SEND and WAL fsyncs/s.
 *
 * Nodes: parleyd (--parleyd) with the --parleyd-args template (default:
 * --dev, plain TCP on {port}, admin port {adminport} for /metrics, rate
 * limits off) plus --node-id i --cluster-id --peer-port --peers; Raft
 * timing is parleyd's default (50 ms tick, 10-tick election timeout).
 * Leadership and catch-up are read from each node's /metrics
 * (parley_raft_role{partition="0"}, _partitions_led,
 * _partitions_leader_known, _apply_lag_entries).
 *
 * Threads: the main thread runs everything; the failover phase adds one
 * thread per client (struct fo_shared under its mutex).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_args.h"
#include "bench_http.h"
#include "bench_json.h"
#include "bench_wire.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "parley_client.h"
#include "parley_common.h"
#include "parley_proto.h"

#define CL_NODES 3
#define CL_CLUSTER_ID "4242"
#define CL_START_TIMEOUT_S 15.0   /* a node listens on its client port */
#define CL_STABLE_TIMEOUT_S 30.0  /* leadership gathered, followers caught up */
#define CL_FAILOVER_TIMEOUT_S 20.0 /* kill -> first ack, else "never" */
#define CL_METRICS_CAP (512u << 10)
#define CL_HTTP_TIMEOUT_MS 2000
#define FO_CLIENTS 4               /* failover load: libparley clients */
#define FO_MAX_ACKS 200000u       /* per client, for the final history check */
#define FO_STEADY_S 0.3           /* acks flowing before each kill */

struct cl_node {
	pid_t pid;           /* -1 when not running */
	int port, admin_port, peer_port;
	char *tmp;           /* data dir is tmp/data, logs tmp/parleyd-<life>.log */
	unsigned life;       /* starts so far */
	char *argv[96];
	char store[8192];
};

struct cl_set {
	struct cl_node nd[CL_NODES];
	char nodes[256];     /* client node list */
};

/* ---- nodes ------------------------------------------------------------------- */

/* --spread: the cluster being started runs with --leader-placement spread
 * (else follow0: both are named, whatever parleyd's default) */
static bool cl_spread;

static int cl_build_argv(const struct bench_cfg *cfg, struct cl_set *c, unsigned i)
{
	struct cl_node *n = &c->nd[i];
	struct bench_ports ports = {n->port, 0, n->admin_port};
	int argc = bench_expand_args_ports(cfg->parleyd, cfg->parleyd_args, &ports, n->tmp,
					   n->argv, 80, n->store, sizeof n->store - 512);
	if (argc < 0)
		return -PARLEY_EINVAL;
	char *p = n->store + sizeof n->store - 512;
	size_t room = 512;
	char peers[256];
	int m = 0;
	for (unsigned j = 0; j < CL_NODES; j++)
		if (j != i)
			m += snprintf(peers + m, sizeof peers - (size_t)m, "%s%u=127.0.0.1:%d",
				      m ? "," : "", j + 1, c->nd[j].peer_port);
	char node_id[8], peer_port[8];
	snprintf(node_id, sizeof node_id, "%u", i + 1);
	snprintf(peer_port, sizeof peer_port, "%d", n->peer_port);
	const char *x[] = {"--node-id", node_id, "--cluster-id", CL_CLUSTER_ID, "--peer-port",
			   peer_port, "--peers", peers,
			   "--leader-placement", cl_spread ? "spread" : "follow0",
			   NULL};
	if (bench_append_args(n->argv, argc, 96, x, p, room) < 0)
		return -PARLEY_EINVAL;
	return 0;
}

static int cl_spawn(const struct bench_cfg *cfg, struct cl_node *n)
{
	char logp[4200];
	snprintf(logp, sizeof logp, "%s/parleyd-%u.log", n->tmp, ++n->life);
	if (cfg->verbose) {
		fprintf(stderr, "parley-bench: starting");
		for (int i = 0; n->argv[i]; i++)
			fprintf(stderr, " %s", n->argv[i]);
		fprintf(stderr, "\n");
	}
	pid_t pid = bench_spawn(n->argv, logp);
	if (pid < 0)
		return pid;
	n->pid = pid;
	return 0;
}

static int cl_wait_listen(struct cl_node *n)
{
	double end = bench_now_s() + CL_START_TIMEOUT_S;
	while (bench_now_s() < end) {
		if (bench_child_exited(&n->pid)) {
			fprintf(stderr, "parley-bench: parleyd exited at start-up (see "
					"%s/parleyd-%u.log)\n", n->tmp, n->life);
			return -PARLEY_EIO;
		}
		struct wire_conn *w = malloc(sizeof *w);
		if (!w)
			return -ENOMEM;
		int rc = wire_connect(w, "127.0.0.1", n->port, 500);
		wire_close(w);
		free(w);
		if (rc == 0)
			return 0;
		bench_sleep_ns(20 * 1000000ull);
	}
	fprintf(stderr, "parley-bench: parleyd did not listen on %d within %.0fs (see "
			"%s/parleyd-%u.log)\n", n->port, CL_START_TIMEOUT_S, n->tmp, n->life);
	return -PARLEY_ETIMEDOUT;
}

static void cl_kill(struct cl_node *n)
{
	bench_child_kill(&n->pid);
}

/* keep: leave the data dirs and logs for a post-mortem (printed). */
static void cl_stop(struct cl_set *c, bool keep)
{
	for (unsigned i = 0; i < CL_NODES; i++) {
		cl_kill(&c->nd[i]);
		if (keep && c->nd[i].tmp)
			fprintf(stderr, "parley-bench: node %u's data dir and logs kept in %s\n", i + 1,
				c->nd[i].tmp);
		if (c->nd[i].tmp && !keep)
			bench_rmtree(c->nd[i].tmp);
		free(c->nd[i].tmp);
		c->nd[i].tmp = NULL;
	}
}

static int cl_start(const struct bench_cfg *cfg, struct cl_set *c)
{
	memset(c, 0, sizeof *c);
	for (unsigned i = 0; i < CL_NODES; i++)
		c->nd[i].pid = -1;
	for (unsigned i = 0; i < CL_NODES; i++) {
		struct cl_node *n = &c->nd[i];
		char pfx[32];
		snprintf(pfx, sizeof pfx, "cluster-n%u", i + 1);
		if (!(n->tmp = bench_mkdtemp(cfg->dir, pfx)))
			return -errno;
		if ((n->port = bench_free_port()) < 0 || (n->admin_port = bench_free_port()) < 0 ||
		    (n->peer_port = bench_free_port()) < 0)
			return -PARLEY_EIO;
	}
	int m = 0;
	for (unsigned i = 0; i < CL_NODES; i++) {
		m += snprintf(c->nodes + m, sizeof c->nodes - (size_t)m, "%s127.0.0.1:%d",
			      i ? "," : "", c->nd[i].port);
		int rc = cl_build_argv(cfg, c, i);
		if (rc) {
			fprintf(stderr, "parley-bench: --parleyd-args too long\n");
			return rc;
		}
	}
	for (unsigned i = 0; i < CL_NODES; i++) {
		int rc = cl_spawn(cfg, &c->nd[i]);
		if (rc)
			return rc;
	}
	for (unsigned i = 0; i < CL_NODES; i++) {
		int rc = cl_wait_listen(&c->nd[i]);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- /metrics ------------------------------------------------------------------ */

static long http_get(int port, const char *path, char *buf, size_t cap)
{
	return bench_http_req("GET", port, path, buf, cap, CL_HTTP_TIMEOUT_MS);
}

/* A sample of a /metrics page, or NAN. */
static double metric_val(const char *text, const char *name)
{
	double v;
	return bench_metric_value(text, name, &v) == 0 ? v : NAN;
}

struct node_view {
	bool up;            /* /metrics answered */
	int role0;          /* parley_raft_role{partition="0"} */
	double parts, led, known, lag;
};

static void node_view(int admin_port, char *buf, struct node_view *v)
{
	memset(v, 0, sizeof *v);
	v->role0 = -1;
	long n = http_get(admin_port, "/metrics", buf, CL_METRICS_CAP);
	if (n <= 0 || bench_http_status(buf, (size_t)n) != 200)
		return;
	v->up = true;
	double r = metric_val(buf, "parley_raft_role{partition=\"0\"}");
	v->role0 = isnan(r) ? -1 : (int)r;
	v->parts = metric_val(buf, "parley_raft_partitions");
	v->led = metric_val(buf, "parley_raft_partitions_led");
	v->known = metric_val(buf, "parley_raft_partitions_leader_known");
	v->lag = metric_val(buf, "parley_raft_apply_lag_entries");
}

/* Waits until one running node leads every partition and every running
 * node knows every partition's leader with nothing committed unapplied.
 * Returns the leader's index, or -PARLEY_ETIMEDOUT (with what it last saw
 * in why[]). */
static int cl_wait_stable(struct cl_set *c, double timeout_s, char *why, size_t wcap)
{
	char *buf = malloc(CL_METRICS_CAP);
	if (!buf)
		return -ENOMEM;
	double end = bench_now_s() + timeout_s;
	int rc = -PARLEY_ETIMEDOUT;
	while (bench_now_s() < end) {
		int leader = -1, leaders = 0;
		bool ok = true;
		int w = 0;
		for (unsigned i = 0; i < CL_NODES; i++) {
			if (c->nd[i].pid <= 0)
				continue;
			struct node_view v;
			node_view(c->nd[i].admin_port, buf, &v);
			w += snprintf(why + w, wcap - (size_t)w,
				      "%snode %u: %s role0 %d led %.0f/%.0f known %.0f lag %.0f",
				      w ? "; " : "", i + 1, v.up ? "up" : "no /metrics", v.role0,
				      v.led, v.parts, v.known, v.lag);
			if ((size_t)w >= wcap)
				w = (int)wcap - 1;
			if (!v.up || !(v.parts > 0) || v.known != v.parts || v.lag != 0) {
				ok = false;
				continue;
			}
			if (v.role0 == 3) {
				leaders++;
				leader = (int)i;
				if (v.led != v.parts)
					ok = false;
			}
		}
		if (ok && leaders == 1) {
			rc = leader;
			break;
		}
		bench_sleep_ns(20 * 1000000ull);
	}
	free(buf);
	return rc;
}

/* ---- replicated throughput ----------------------------------------------------- */

static double cl_cpu_s(const struct cl_set *c);

/* The servers' CPU over a run point: cores busy = CPU seconds / wall
 * seconds from the first connection to the end of the drain. */
struct cpu_use {
	double cores;
	double entries_per_ack;   /* engine entries appended per SEND acknowledged */
	double fsyncs_per_s;      /* WAL write+fdatasync rounds per second */
	double csw_per_s;         /* context switches of all the servers' threads / s */
	double sysc_per_s;        /* read- and write-class syscalls (/proc/PID/io) / s */
	double msgs_per_s;        /* Raft messages the three nodes sent to peers / s */
	double frames_per_s;      /* peer frames (each a batch of messages) they sent / s */
};

/* The sum of every series of one metric family (`name{...} v` and
 * `name v` lines) in a /metrics text; 0 when absent. */
static double metric_sum(const char *text, const char *name)
{
	size_t l = strlen(name);
	double s = 0;
	for (const char *p = text; p && *p;) {
		const char *eol = strchr(p, '\n');
		if (!strncmp(p, name, l) && (p[l] == ' ' || p[l] == '{')) {
			const char *v = p[l] == '{' ? strchr(p + l, '}') : p + l;
			if (v && (!eol || v < eol)) {
				if (*v == '}')
					v++;
				s += strtod(v, NULL);
			}
		}
		p = eol ? eol + 1 : NULL;
	}
	return s;
}

/* Peer messages and frames sent so far by every node of the cluster. */
static void cl_peer_out(const struct cl_set *c, char *buf, double *msgs, double *frames)
{
	*msgs = *frames = 0;
	for (unsigned i = 0; i < CL_NODES; i++) {
		long n = http_get(c->nd[i].admin_port, "/metrics", buf, CL_METRICS_CAP);
		if (n <= 0 || bench_http_status(buf, (size_t)n) != 200) {
			*msgs = *frames = NAN;
			return;
		}
		*msgs += metric_sum(buf, "parley_peer_msgs_out");
		*frames += metric_sum(buf, "parley_peer_frames_out");
	}
}

/* Context switches (voluntary + involuntary, summed over every thread in
 * /proc/PID/task/<tid>/status) and read+write-class syscalls (syscr +
 * syscw of /proc/PID/io: read, recv, write, send, pread, pwrite, ...; not
 * epoll_wait or io_uring_enter) of one process so far; NAN if unreadable.
 * Robust to other load on the machine, unlike SENDs/s: a measure of the
 * work per acknowledged SEND. */
static void cl_proc_ctr(pid_t pid, double *csw, double *sysc)
{
	char path[96], line[256];
	*csw = *sysc = NAN;
	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return;
	double sw = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/%d/task/%.16s/status", (int)pid, de->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		unsigned long long v;
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1 ||
			    sscanf(line, "nonvoluntary_ctxt_switches: %llu", &v) == 1)
				sw += (double)v;
		fclose(f);
	}
	closedir(d);
	*csw = sw;
	snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	double sc = 0;
	unsigned long long v;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "syscr: %llu", &v) == 1 || sscanf(line, "syscw: %llu", &v) == 1)
			sc += (double)v;
	fclose(f);
	*sysc = sc;
}

/* The engine counters of one node's /metrics that explain a SEND's cost. */
struct eng_ctr {
	double entries, fsyncs, acked, t;
	bool ok;
};

static void eng_ctr_read(int admin_port, char *buf, struct eng_ctr *e)
{
	memset(e, 0, sizeof *e);
	e->t = bench_now_s();
	long n = http_get(admin_port, "/metrics", buf, CL_METRICS_CAP);
	if (n <= 0 || bench_http_status(buf, (size_t)n) != 200)
		return;
	e->ok = bench_metric_value(buf, "parley_engine_entries_total", &e->entries) == 0 &&
		bench_metric_value(buf, "parley_fsyncs_total", &e->fsyncs) == 0 &&
		bench_metric_value(buf, "parley_appends_acked_total", &e->acked) == 0;
}

static void eng_ctr_diff(const struct eng_ctr *a, const struct eng_ctr *b, struct cpu_use *u)
{
	u->entries_per_ack = u->fsyncs_per_s = NAN;
	if (!a->ok || !b->ok || b->acked <= a->acked || b->t <= a->t)
		return;
	u->entries_per_ack = (b->entries - a->entries) / (b->acked - a->acked);
	u->fsyncs_per_s = (b->fsyncs - a->fsyncs) / (b->t - a->t);
}

static int cluster_point(const struct bench_cfg *cfg, uint32_t prod, uint32_t payload,
			 struct load_result *r, struct cpu_use *cpu)
{
	cpu->cores = cpu->entries_per_ack = cpu->fsyncs_per_s = NAN;
	cpu->csw_per_s = cpu->sysc_per_s = cpu->msgs_per_s = cpu->frames_per_s = NAN;
	struct cl_set *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	char why[512] = "";
	int rc = cl_start(cfg, c);
	int leader = rc ? rc : cl_wait_stable(c, CL_STABLE_TIMEOUT_S, why, sizeof why);
	if (leader < 0) {
		memset(r, 0, sizeof *r);
		r->system = "parleyd-3node";
		r->producers = prod;
		r->payload = payload;
		bench_hist_init(&r->lat);
		bench_hist_init(&r->lag);
		snprintf(r->note, sizeof r->note, "cluster not stable: %.120s", why);
		fprintf(stderr, "parley-bench: cluster did not settle within %.0fs: %s\n",
			CL_STABLE_TIMEOUT_S, why);
		cl_stop(c, true);
		free(c);
		return leader;
	}
	char *mb = malloc(CL_METRICS_CAP);
	struct eng_ctr e0 = {0}, e1 = {0};
	if (mb)
		eng_ctr_read(c->nd[leader].admin_port, mb, &e0);
	double sw0 = 0, sc0 = 0, sw1 = 0, sc1 = 0, a, b, m0 = NAN, f0 = NAN, m1, f1;
	if (mb)
		cl_peer_out(c, mb, &m0, &f0);
	for (unsigned i = 0; i < CL_NODES; i++) {
		cl_proc_ctr(c->nd[i].pid, &a, &b);
		sw0 += a;
		sc0 += b;
	}
	double c0 = cl_cpu_s(c), w0 = bench_now_s();
	rc = bench_appends_at(cfg, "127.0.0.1", c->nd[leader].port, prod, payload, false, r);
	double wall = bench_now_s() - w0;
	cpu->cores = (cl_cpu_s(c) - c0) / wall;
	for (unsigned i = 0; i < CL_NODES; i++) {
		cl_proc_ctr(c->nd[i].pid, &a, &b);
		sw1 += a;
		sc1 += b;
	}
	cpu->csw_per_s = (sw1 - sw0) / wall;
	cpu->sysc_per_s = (sc1 - sc0) / wall;
	if (mb) {
		cl_peer_out(c, mb, &m1, &f1);
		cpu->msgs_per_s = (m1 - m0) / wall;
		cpu->frames_per_s = (f1 - f0) / wall;
	}
	if (mb) {
		eng_ctr_read(c->nd[leader].admin_port, mb, &e1);
		eng_ctr_diff(&e0, &e1, cpu);
		free(mb);
	}
	r->system = "parleyd-3node";
	if (!r->note[0])
		snprintf(r->note, sizeof r->note, "to the leader, node %d", leader + 1);
	/* every node must still be alive after the run */
	for (unsigned i = 0; i < CL_NODES; i++) {
		if (bench_child_exited(&c->nd[i].pid)) {
			r->ok = false;
			snprintf(r->note, sizeof r->note, "node %u died (see its log)", i + 1);
		}
	}
	cl_stop(c, !r->ok);
	free(c);
	return rc;
}

/* ---- spread placement (docs/CLUSTER.md §3.2) ---------------------------------- */

#define CL_MAX_PARTS 1024u

/* Waits until every running node knows every partition's leader with
 * nothing unapplied and the partitions led add up; fills lead[p] with the
 * leading node's index (from parley_raft_role{partition="p"} 3). 0 or
 * -PARLEY_ETIMEDOUT. */
static int cl_wait_spread(struct cl_set *c, double timeout_s, int *lead, uint32_t *np,
			  char *why, size_t wcap)
{
	char *buf = malloc(CL_METRICS_CAP);
	if (!buf)
		return -ENOMEM;
	double end = bench_now_s() + timeout_s;
	int rc = -PARLEY_ETIMEDOUT;
	while (bench_now_s() < end && rc) {
		double led = 0, parts = 0;
		bool ok = true;
		int w = 0;
		for (uint32_t p = 0; p < CL_MAX_PARTS; p++)
			lead[p] = -1;
		for (unsigned i = 0; i < CL_NODES && ok; i++) {
			struct node_view v;
			node_view(c->nd[i].admin_port, buf, &v);
			w += snprintf(why + w, wcap - (size_t)w, "%snode %u: led %.0f/%.0f known "
				      "%.0f lag %.0f", w ? "; " : "", i + 1, v.led, v.parts,
				      v.known, v.lag);
			if ((size_t)w >= wcap)
				w = (int)wcap - 1;
			if (!v.up || !(v.parts > 0) || v.parts > CL_MAX_PARTS ||
			    v.known != v.parts || v.lag != 0) {
				ok = false;
				break;
			}
			parts = v.parts;
			led += v.led;
			for (uint32_t p = 0; p < (uint32_t)v.parts; p++) {
				char name[64];
				snprintf(name, sizeof name, "parley_raft_role{partition=\"%u\"}", p);
				if (metric_val(buf, name) == 3)
					lead[p] = (int)i;
			}
		}
		if (ok && led == parts) {
			*np = (uint32_t)parts;
			rc = 0;
			for (uint32_t p = 0; p < *np; p++)
				if (lead[p] < 0)
					rc = -PARLEY_ETIMEDOUT;
		}
		if (rc)
			bench_sleep_ns(20 * 1000000ull);
	}
	free(buf);
	return rc;
}

/* Forwarded appends so far, over all nodes: answered, and the sum and max
 * of their send -> answer latency (s). */
static void fwd_read(struct cl_set *c, double *n, double *sum, double *mx)
{
	char *buf = malloc(CL_METRICS_CAP);
	*n = *sum = *mx = 0;
	for (unsigned i = 0; buf && i < CL_NODES; i++) {
		long k = http_get(c->nd[i].admin_port, "/metrics", buf, CL_METRICS_CAP);
		if (k <= 0)
			continue;
		double a = metric_val(buf, "parley_fwd_answered_total");
		double b = metric_val(buf, "parley_fwd_latency_seconds_sum");
		double m = metric_val(buf, "parley_fwd_latency_seconds_max");
		*n += isnan(a) ? 0 : a;
		*sum += isnan(b) ? 0 : b;
		if (!isnan(m) && m > *mx)
			*mx = m;
	}
	free(buf);
}

struct fwd_use {
	double appends_per_ack; /* forwarded appends per SEND ack */
	double mean_us, max_us; /* their send -> answer latency */
	char split[64];         /* partitions led per node */
};

/* One point against a 3-node cluster with --leader-placement spread,
 * its leaderships rebalanced (POST /cluster/rebalance on each node, as
 * parleyctl cluster rebalance does), each connection to the node leading
 * its conversation's partition. */
static int cluster_point_spread(const struct bench_cfg *cfg, uint32_t prod, uint32_t payload,
				struct load_result *r, struct cpu_use *cpu, struct fwd_use *fu)
{
	cpu->cores = cpu->entries_per_ack = cpu->fsyncs_per_s = NAN;
	fu->appends_per_ack = fu->mean_us = fu->max_us = NAN;
	fu->split[0] = 0;
	struct cl_set *c = calloc(1, sizeof *c);
	int *lead = malloc(CL_MAX_PARTS * sizeof *lead);
	int *ports = malloc((prod ? prod : 1) * sizeof *ports);
	char *buf = malloc(CL_METRICS_CAP);
	if (!c || !lead || !ports || !buf) {
		free(c);
		free(lead);
		free(ports);
		free(buf);
		return -ENOMEM;
	}
	char why[512] = "";
	uint32_t np = 0;
	cl_spread = true;
	int rc = cl_start(cfg, c);
	cl_spread = false;
	if (!rc)
		rc = cl_wait_spread(c, CL_STABLE_TIMEOUT_S, lead, &np, why, sizeof why);
	for (int pass = 0; !rc && pass < 2; pass++)
		for (unsigned i = 0; i < CL_NODES; i++)
			(void)bench_http_req("POST", c->nd[i].admin_port, "/cluster/rebalance", buf,
				       CL_METRICS_CAP, 15000);
	if (!rc)
		rc = cl_wait_spread(c, CL_STABLE_TIMEOUT_S, lead, &np, why, sizeof why);
	memset(r, 0, sizeof *r);
	r->system = "parleyd-3node-spread";
	r->producers = prod;
	r->payload = payload;
	bench_hist_init(&r->lat);
	bench_hist_init(&r->lag);
	if (rc) {
		snprintf(r->note, sizeof r->note, "cluster not stable: %.120s", why);
		fprintf(stderr, "parley-bench: spread cluster did not settle: %s\n", why);
		goto out;
	}
	unsigned cnt[CL_NODES] = {0};
	for (uint32_t p = 0; p < np; p++)
		cnt[lead[p]]++;
	snprintf(fu->split, sizeof fu->split, "%u/%u/%u", cnt[0], cnt[1], cnt[2]);
	for (uint32_t i = 0; i < prod; i++) {
		char user[64], peer[64], conv[160], key[200];
		snprintf(user, sizeof user, "bench-ap-%u", i);
		snprintf(peer, sizeof peer, "bench-ap-peer-%u", i);
		int n = parley_proto_dm_conv_id(user, strlen(user), peer, strlen(peer), conv,
						sizeof conv);
		if (n < 0) {
			rc = n;
			goto out;
		}
		int kl = snprintf(key, sizeof key, "c/%.*s", n, conv);
		uint32_t p = (uint32_t)(parley_hash_key(key, (size_t)kl) % np);
		ports[i] = c->nd[lead[p]].port;
	}
	double f0n, f0s, f0m, f1n, f1s, f1m;
	fwd_read(c, &f0n, &f0s, &f0m);
	double c0 = cl_cpu_s(c), w0 = bench_now_s();
	rc = bench_appends_routed(cfg, "127.0.0.1", 0, ports, prod, payload, false, r);
	cpu->cores = (cl_cpu_s(c) - c0) / (bench_now_s() - w0);
	fwd_read(c, &f1n, &f1s, &f1m);
	r->system = "parleyd-3node-spread";
	double acks = r->appends_per_s * cfg->seconds;
	if (f1n > f0n) {
		fu->mean_us = (f1s - f0s) / (f1n - f0n) * 1e6;
		fu->max_us = f1m * 1e6;
	}
	if (acks > 0)
		fu->appends_per_ack = (f1n - f0n) / acks;
	if (!r->note[0])
		snprintf(r->note, sizeof r->note, "to each conversation's leader (led %s)",
			 fu->split);
	for (unsigned i = 0; i < CL_NODES; i++)
		if (bench_child_exited(&c->nd[i].pid)) {
			r->ok = false;
			snprintf(r->note, sizeof r->note, "node %u died (see its log)", i + 1);
		}
out:
	cl_stop(c, !r->ok);
	free(c);
	free(lead);
	free(ports);
	free(buf);
	return rc;
}

static double q_us(const struct bench_hist *h, double q)
{
	return (double)bench_hist_quantile(h, q) / 1e3;
}

double bench_cpu_s(pid_t pid)
{
	char p[64], buf[1024];
	snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return NAN;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	/* fields after "(comm)": state is field 3, utime 14, stime 15 */
	const char *q = strrchr(buf, ')');
	unsigned long long ut, st;
	if (!q || sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			 &st) != 2)
		return NAN;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double cl_cpu_s(const struct cl_set *c)
{
	double t = 0;
	for (unsigned i = 0; i < CL_NODES; i++)
		if (c->nd[i].pid > 0)
			t += bench_cpu_s(c->nd[i].pid);
	return t;
}

static void point_done(int rc, struct load_result *r, int *failures)
{
	if (rc != 0) {
		r->ok = false;
		if (!r->note[0])
			snprintf(r->note, sizeof r->note, "run failed: %s", parley_strerror(rc));
	}
	bench_load_print_row(r);
	if (rc != 0 || !r->ok)
		(*failures)++;
}

static int throughput(const struct bench_cfg *cfg)
{
	int failures = 0;
	static struct load_result rc3[BENCH_MAX_LIST], r1[BENCH_MAX_LIST], rj[BENCH_MAX_LIST],
		rs[BENCH_MAX_LIST];
	struct cpu_use u3[BENCH_MAX_LIST], u1[BENCH_MAX_LIST], uj[BENCH_MAX_LIST],
		us[BENCH_MAX_LIST];
	struct fwd_use fs[BENCH_MAX_LIST];
	for (unsigned i = 0; i < BENCH_MAX_LIST; i++)
		u3[i].csw_per_s = u3[i].sysc_per_s = u3[i].msgs_per_s = u3[i].frames_per_s =
		u3[i].cores = u1[i].cores = uj[i].cores = u3[i].entries_per_ack =
			u1[i].entries_per_ack = u3[i].fsyncs_per_s = u1[i].fsyncs_per_s = NAN;
	struct js_cluster *js = NULL;
	bool have_js = false;
	if (cfg->nats_server) {
		bench_watchdog_arm(60);
		int jrc = bench_js_start(cfg, &js);
		bench_watchdog_arm(0);
		if (jrc != 0) {
			fprintf(stderr, "parley-bench: jetstream cluster did not start: %s\n",
				parley_strerror(jrc));
			failures++;
		} else
			have_js = true;
	}
	unsigned point = 0;
	for (unsigned j = 0; j < cfg->n_payloads; j++) {
		uint32_t pl = cfg->payloads[j];
		printf("\n### payload %u B — raw runs (3-node parleyd, single parleyd and "
		       "JetStream R3 alternate per point)\n\n", pl);
		bench_load_print_header();
		for (unsigned i = 0; i < cfg->n_producers; i++) {
			uint32_t p = cfg->producers[i];
			double budget = cfg->warmup + cfg->seconds + BENCH_DRAIN_SECONDS + 30 +
					CL_STABLE_TIMEOUT_S + p / 50.0;
			bench_watchdog_arm(budget);
			int rc = cluster_point(cfg, p, pl, &rc3[i], &u3[i]);
			bench_watchdog_arm(0);
			point_done(rc, &rc3[i], &failures);
			if (cfg->spread) {
				bench_watchdog_arm(budget + 60);
				rc = cluster_point_spread(cfg, p, pl, &rs[i], &us[i], &fs[i]);
				bench_watchdog_arm(0);
				point_done(rc, &rs[i], &failures);
			}
			if (!cfg->no_single) {
				bench_watchdog_arm(budget);
				struct bench_srv srv;
				rc = bench_srv_start(cfg, &srv);
				if (rc == 0) {
					char *mb = malloc(CL_METRICS_CAP);
					struct eng_ctr e0 = {0}, e1 = {0};
					if (mb)
						eng_ctr_read(srv.admin_port, mb, &e0);
					double c0 = bench_cpu_s(srv.pid), w0 = bench_now_s();
					rc = bench_appends_at(cfg, srv.host, srv.port, p, pl, false, &r1[i]);
					u1[i].cores = (bench_cpu_s(srv.pid) - c0) / (bench_now_s() - w0);
					if (mb) {
						eng_ctr_read(srv.admin_port, mb, &e1);
						eng_ctr_diff(&e0, &e1, &u1[i]);
						free(mb);
					}
				} else {
					memset(&r1[i], 0, sizeof r1[i]);
					r1[i].producers = p;
					r1[i].payload = pl;
					u1[i].cores = NAN;
				}
				bench_srv_stop(&srv);
				bench_watchdog_arm(0);
				r1[i].system = "parleyd-1node";
				point_done(rc, &r1[i], &failures);
			}
			if (have_js) {
				bench_watchdog_arm(budget + 30);
				double c0 = bench_js_cpu_s(js), w0 = bench_now_s();
				rc = bench_js_publish(cfg, js, ++point, p, pl, &rj[i]);
				uj[i].cores = (bench_js_cpu_s(js) - c0) / (bench_now_s() - w0);
				bench_watchdog_arm(0);
				point_done(rc, &rj[i], &failures);
			}
		}
		printf("\n### payload %u B — replicated parleyd (3 nodes, RF 3) vs one node vs "
		       "NATS JetStream %s (3 servers, R3 file stream), closed loop, same "
		       "connections\n\n", pl, have_js ? bench_js_version(js) : "(not run)");
		printf("| connections | parley 3-node SENDs/s | p50 / p99 µs | parley 1-node SENDs/s | "
		       "p50 / p99 µs | 3-node ÷ 1-node | JetStream R3 acks/s | p50 / p99 µs | "
		       "parley 3-node ÷ JetStream (goal ≥ 2×) | p99 parley ÷ JetStream "
		       "(goal ≤ 1) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
		for (unsigned i = 0; i < cfg->n_producers; i++) {
			const struct load_result *a = &rc3[i], *b = &r1[i], *n = &rj[i];
			char one[64] = "–", onel[48] = "–", rep[32] = "–", js3[64] = "–",
			     jsl[48] = "–", rj1[32] = "–", rj2[32] = "–";
			if (!cfg->no_single) {
				snprintf(one, sizeof one, "%.0f%s", b->appends_per_s,
					 b->ok ? "" : " (FAILED)");
				snprintf(onel, sizeof onel, "%.0f / %.0f", q_us(&b->lat, 0.5),
					 q_us(&b->lat, 0.99));
				if (b->appends_per_s > 0)
					snprintf(rep, sizeof rep, "%.2f×",
						 a->appends_per_s / b->appends_per_s);
			}
			if (have_js) {
				snprintf(js3, sizeof js3, "%.0f%s", n->appends_per_s,
					 n->ok ? "" : " (FAILED)");
				snprintf(jsl, sizeof jsl, "%.0f / %.0f", q_us(&n->lat, 0.5),
					 q_us(&n->lat, 0.99));
				if (n->appends_per_s > 0)
					snprintf(rj1, sizeof rj1, "%.2f×",
						 a->appends_per_s / n->appends_per_s);
				if (q_us(&n->lat, 0.99) > 0)
					snprintf(rj2, sizeof rj2, "%.2f",
						 q_us(&a->lat, 0.99) / q_us(&n->lat, 0.99));
			}
			printf("| %u | %.0f%s | %.0f / %.0f | %s | %s | %s | %s | %s | %s | %s |\n",
			       cfg->producers[i], a->appends_per_s, a->ok ? "" : " (FAILED)",
			       q_us(&a->lat, 0.5), q_us(&a->lat, 0.99), one, onel, rep, js3, jsl,
			       rj1, rj2);
			struct bench_json *jj = bench_sink();
			if (jj) {
				bj_obj(jj, NULL);
				bj_str(jj, "kind", "cluster_ratio");
				bj_num(jj, "cluster_cpu_cores", u3[i].cores);
				bj_num(jj, "single_cpu_cores", u1[i].cores);
				bj_num(jj, "jetstream_cpu_cores", uj[i].cores);
				bj_num(jj, "cluster_leader_entries_per_ack", u3[i].entries_per_ack);
				bj_num(jj, "single_entries_per_ack", u1[i].entries_per_ack);
				bj_num(jj, "cluster_leader_fsyncs_per_s", u3[i].fsyncs_per_s);
				bj_num(jj, "cluster_ctx_switches_per_s", u3[i].csw_per_s);
				bj_num(jj, "cluster_rw_syscalls_per_s", u3[i].sysc_per_s);
				bj_num(jj, "cluster_peer_msgs_per_s", u3[i].msgs_per_s);
				bj_num(jj, "cluster_peer_frames_per_s", u3[i].frames_per_s);
				bj_num(jj, "single_fsyncs_per_s", u1[i].fsyncs_per_s);
				bj_u64(jj, "payload", pl);
				bj_u64(jj, "connections", cfg->producers[i]);
				bj_num(jj, "cluster_sends_per_s", a->appends_per_s);
				bj_num(jj, "single_sends_per_s",
				       cfg->no_single ? NAN : b->appends_per_s);
				bj_num(jj, "jetstream_acks_per_s", have_js ? n->appends_per_s : NAN);
				bj_hist(jj, "cluster_latency", &a->lat);
				if (!cfg->no_single)
					bj_hist(jj, "single_latency", &b->lat);
				if (have_js)
					bj_hist(jj, "jetstream_latency", &n->lat);
				bj_end(jj);
			}
		}
		if (cfg->spread) {
			printf("\n### payload %u B — leader placement: follow0 (one node leads "
			       "every partition) vs spread (leaderships rebalanced over the 3 "
			       "nodes, each connection to its conversation's leader, the fan-out "
			       "forwarded between nodes), same run\n\n"
			       "| connections | follow0 SENDs/s | p50 / p99 µs | spread SENDs/s | "
			       "p50 / p99 µs | spread ÷ follow0 | partitions led | cores follow0 / "
			       "spread | forwarded appends per SEND | forwarded append latency "
			       "mean / max µs |\n"
			       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n", pl);
			for (unsigned i = 0; i < cfg->n_producers; i++) {
				const struct load_result *a = &rc3[i], *b = &rs[i];
				printf("| %u | %.0f%s | %.0f / %.0f | %.0f%s | %.0f / %.0f | %.2f× | "
				       "%s | %.2f / %.2f | %.2f | %.0f / %.0f |\n",
				       cfg->producers[i], a->appends_per_s,
				       a->ok ? "" : " (FAILED)", q_us(&a->lat, 0.5),
				       q_us(&a->lat, 0.99), b->appends_per_s,
				       b->ok ? "" : " (FAILED)", q_us(&b->lat, 0.5),
				       q_us(&b->lat, 0.99),
				       a->appends_per_s > 0 ? b->appends_per_s / a->appends_per_s
							    : NAN,
				       fs[i].split, u3[i].cores, us[i].cores,
				       fs[i].appends_per_ack, fs[i].mean_us, fs[i].max_us);
			}
		}
		printf("\nservers' CPU while loaded (CPU seconds of all server processes ÷ wall "
		       "seconds, from the first connection to the end of the drain; %ld cores "
		       "shared with other work) and CPU ms per 1000 acks (cores ÷ acks/s in the "
		       "window; connection set-up and drain make it an estimate):\n\n"
		       "| connections | parley 3-node cores | ms/1k | parley 1-node cores | ms/1k | "
		       "JetStream R3 cores | ms/1k | engine entries per SEND ack, 3-node leader / "
		       "1-node | WAL fsyncs/s, 3-node leader / 1-node |\n"
		       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
		       sysconf(_SC_NPROCESSORS_ONLN));
		for (unsigned i = 0; i < cfg->n_producers; i++) {
#define PER1K(u, r) ((r).appends_per_s > 0 ? (u).cores * 1e6 / (r).appends_per_s : NAN)
			printf("| %u | %.2f | %.0f | %.2f | %.0f | %.2f | %.0f | %.2f / %.2f | "
			       "%.0f / %.0f |\n", cfg->producers[i],
			       u3[i].cores, PER1K(u3[i], rc3[i]), u1[i].cores, PER1K(u1[i], r1[i]),
			       uj[i].cores, PER1K(uj[i], rj[i]), u3[i].entries_per_ack,
			       u1[i].entries_per_ack, u3[i].fsyncs_per_s, u1[i].fsyncs_per_s);
#undef PER1K
		}
		printf("\n3-node work per 1000 acks (same window; all threads of the three "
		       "parleyd): context switches (voluntary + involuntary) and read/write-class "
		       "syscalls (/proc/PID/io syscr + syscw; epoll_wait and io_uring_enter not "
		       "included), and the Raft messages and peer frames the three sent to each "
		       "other (parley_peer_msgs_out, _frames_out):\n\n| connections | context "
		       "switches / 1k acks | read+write syscalls / 1k acks | Raft messages / 1k "
		       "acks | peer frames / 1k acks |\n|---:|---:|---:|---:|---:|\n");
		for (unsigned i = 0; i < cfg->n_producers; i++) {
			double k = rc3[i].appends_per_s > 0 ? 1e3 / rc3[i].appends_per_s : NAN;
			printf("| %u | %.0f | %.0f | %.0f | %.0f |\n", cfg->producers[i],
			       u3[i].csw_per_s * k, u3[i].sysc_per_s * k, u3[i].msgs_per_s * k,
			       u3[i].frames_per_s * k);
		}
	}
	bench_js_stop(js);
	return failures;
}

/* ---- failover ---------------------------------------------------------------------- */

struct fo_ack {
	uint64_t seq;
	uint64_t n;          /* the message's number in its client */
};

struct fo_shared {
	const struct bench_cfg *cfg;
	const char *nodes;
	double interval_s;   /* between one client's SENDs */
	uint32_t payload;
	atomic_bool stop;
	pthread_mutex_t mu;
	/* under mu: */
	uint64_t armed_ns;   /* count acks of SENDs issued at/after this (0 = off) */
	uint64_t first_ns;   /* earliest such ack */
	uint64_t acks, errors, ready;
	char last_err[160];
};

struct fo_client {
	pthread_t th;
	unsigned idx;
	struct fo_shared *sh;
	struct fo_ack *acked;
	uint64_t n_acked;
	char conv[128];
	int rc;              /* setup / history check failure */
	uint64_t lost, doubled, moved; /* history check */
};

static void fo_note_err(struct fo_shared *sh, unsigned idx, int rc, struct parley_client *pc)
{
	const struct parley_client_failure *f = parley_client_failure(pc);
	pthread_mutex_lock(&sh->mu);
	sh->errors++;
	snprintf(sh->last_err, sizeof sh->last_err, "client %u: %s%s%.100s", idx, parley_strerror(rc),
		 f && f->text[0] ? ": " : "", f ? f->text : "");
	pthread_mutex_unlock(&sh->mu);
}

static void *fo_main(void *arg)
{
	struct fo_client *x = arg;
	struct fo_shared *sh = x->sh;
	char user[64], peer[64], tok[2048], body[1024];
	snprintf(user, sizeof user, "bench-fo-%u", x->idx);
	snprintf(peer, sizeof peer, "bench-fo-peer-%u", x->idx);
	if ((x->rc = bench_mint(sh->cfg, user, tok, sizeof tok)) != 0)
		return NULL;
	struct parley_client_opts o = {0};
	o.nodes = sh->nodes;
	o.token = tok;
	o.device_id = "d0";
	o.client_name = "parley-bench failover";
	struct parley_client *pc = NULL;
	if ((x->rc = parley_client_new(&o, &pc)) != 0)
		return NULL;
	const struct parley_conv *cv;
	if ((x->rc = parley_client_connect(pc)) != 0 ||
	    (x->rc = parley_client_conv_open(pc, peer, &cv)) != 0) {
		fo_note_err(sh, x->idx, x->rc, pc);
		parley_client_free(pc);
		return NULL;
	}
	snprintf(x->conv, sizeof x->conv, "%.*s", cv->conv.len, cv->conv.p);
	pthread_mutex_lock(&sh->mu);
	sh->ready++;
	pthread_mutex_unlock(&sh->mu);
	uint32_t len = PARLEY_MIN(sh->payload, (uint32_t)sizeof body);
	if (len < 24)
		len = 24;
	bench_fill_payload((uint8_t *)body, len, sh->cfg->seed + x->idx);
	uint64_t n = 0;
	double next = bench_now_s();
	while (!atomic_load(&sh->stop)) {
		n++;
		char tag[32];
		snprintf(tag, sizeof tag, "fo%03u-%016llu", x->idx, (unsigned long long)n);
		memcpy(body, tag, 23);
		uint64_t t_issue = parley_mono_ns();
		struct parley_send_result res;
		int rc = parley_client_send(pc, x->conv, PARLEY_CT_TEXT, body, len, &res);
		uint64_t t_ack = parley_mono_ns();
		if (rc == 0) {
			if (x->n_acked < FO_MAX_ACKS)
				x->acked[x->n_acked++] = (struct fo_ack){res.seq, n};
			pthread_mutex_lock(&sh->mu);
			sh->acks++;
			if (sh->armed_ns && t_issue >= sh->armed_ns &&
			    (!sh->first_ns || t_ack < sh->first_ns))
				sh->first_ns = t_ack;
			pthread_mutex_unlock(&sh->mu);
		} else {
			fo_note_err(sh, x->idx, rc, pc);
			pthread_mutex_lock(&sh->mu);
			size_t l = strlen(sh->last_err);
			snprintf(sh->last_err + l, sizeof sh->last_err - l, " (after %.0f ms%s)",
				 (double)(t_ack - t_issue) / 1e6,
				 sh->armed_ns ? ", during a failover" : "");
			pthread_mutex_unlock(&sh->mu);
		}
		next += sh->interval_s;
		double now = bench_now_s();
		if (next > now)
			bench_sleep_ns((uint64_t)((next - now) * 1e9));
		else
			next = now;
	}
	/* the history check: every acknowledged message once, at its seq */
	uint64_t before = 0;
	uint8_t *hit = calloc(x->n_acked ? x->n_acked : 1, 1);
	if (!hit) {
		x->rc = -ENOMEM;
		goto done;
	}
	for (;;) {
		const struct parley_history_page *pg;
		int rc = parley_client_history(pc, x->conv, before, 100, &pg);
		if (rc != 0) {
			x->rc = rc;
			fo_note_err(sh, x->idx, rc, pc);
			break;
		}
		for (uint16_t k = 0; k < pg->count; k++) {
			const struct parley_hist_msg *r = &pg->msgs[k];
			unsigned cidx;
			unsigned long long num;
			char tb[24];
			if (r->body.len < 23)
				continue;
			memcpy(tb, r->body.p, 23);
			tb[23] = 0;
			if (sscanf(tb, "fo%3u-%16llu", &cidx, &num) != 2 || cidx != x->idx)
				continue;
			/* acked[] is in send order: message numbers increase */
			uint64_t lo = 0, hi = x->n_acked;
			while (lo < hi) {
				uint64_t mid = (lo + hi) / 2;
				if (x->acked[mid].n < num)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo < x->n_acked && x->acked[lo].n == num) {
				if (hit[lo]++)
					x->doubled++;
				if (x->acked[lo].seq != r->seq)
					x->moved++;
			}
		}
		if (pg->count == 0 || (pg->flags & PARLEY_HISTF_END) || !pg->next_before_seq)
			break;
		before = pg->next_before_seq;
	}
	for (uint64_t k = 0; k < x->n_acked; k++)
		if (!hit[k])
			x->lost++;
	free(hit);
done:
	parley_client_free(pc);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int failover(const struct bench_cfg *cfg)
{
	unsigned nclients = FO_CLIENTS;
	double rate = cfg->n_rates ? cfg->rates[0] : 100;
	struct cl_set *c = calloc(1, sizeof *c);
	struct fo_shared sh = {0};
	struct fo_client *cl = calloc(nclients, sizeof *cl);
	uint64_t *ft = calloc(cfg->kills, sizeof *ft), *lt = calloc(cfg->kills, sizeof *lt);
	uint64_t *at = calloc(cfg->kills, sizeof *at);
	unsigned nall = 0;
	char *mbuf = malloc(CL_METRICS_CAP);
	unsigned nlead = 0;
	char why[512] = "";
	int rc = 0, failures = 0;
	unsigned started = 0, done = 0, never = 0;
	if (!c || !cl || !ft || !lt || !at || !mbuf) {
		free(at);
		free(c);
		free(cl);
		free(ft);
		free(lt);
		free(mbuf);
		return 1;
	}
	pthread_mutex_init(&sh.mu, NULL);
	printf("\n### failover: leader killed (SIGKILL) → first SEND_ACK of a SEND issued "
	       "after it died\n\n");
	printf("- load: %u libparley clients with opts.nodes = all three nodes (default "
	       "client settings: backoff from 100 ms), blocking SENDs of %u B paced at "
	       "%.0f/s in total; %u kills, each of the node leading every partition, "
	       "restarted on its data dir before the next\n",
	       nclients, cfg->payloads[0], rate, cfg->kills);
	bench_watchdog_arm(CL_START_TIMEOUT_S * CL_NODES + CL_STABLE_TIMEOUT_S + 30);
	if ((rc = cl_start(cfg, c)) != 0 ||
	    (rc = cl_wait_stable(c, CL_STABLE_TIMEOUT_S, why, sizeof why)) < 0) {
		bench_watchdog_arm(0);
		fprintf(stderr, "parley-bench: failover: cluster did not start/settle: %s %s\n",
			parley_strerror(rc), why);
		failures++;
		goto out;
	}
	bench_watchdog_arm(0);
	if (cfg->verbose) /* libparley's reconnects and hops on stderr */
		parley_log_set_level(PLOG_DEBUG);
	sh.cfg = cfg;
	sh.nodes = c->nodes;
	sh.interval_s = nclients / rate;
	sh.payload = cfg->payloads[0];
	for (unsigned i = 0; i < nclients; i++) {
		cl[i].idx = i;
		cl[i].sh = &sh;
		cl[i].acked = malloc(FO_MAX_ACKS * sizeof *cl[i].acked);
		if (!cl[i].acked || pthread_create(&cl[i].th, NULL, fo_main, &cl[i]) != 0)
			break;
		started++;
	}
	/* every client connected and sending */
	double end = bench_now_s() + 20;
	for (;;) {
		pthread_mutex_lock(&sh.mu);
		bool ready = sh.ready == started && sh.acks >= started;
		pthread_mutex_unlock(&sh.mu);
		if (ready)
			break;
		if (bench_now_s() > end || started < nclients) {
			fprintf(stderr, "parley-bench: failover: clients not sending (%s)\n",
				sh.last_err);
			failures++;
			goto stop;
		}
		bench_sleep_ns(10 * 1000000ull);
	}
	printf("\n| kill | node killed | new leader | kill → a survivor leads partition 0 / "
	       "all partitions (/metrics polls) ms | kill → first ack ms | note |\n"
	       "|---:|---:|---:|---:|---:|---|\n");
	for (unsigned k = 0; k < cfg->kills; k++) {
		bench_watchdog_arm(CL_STABLE_TIMEOUT_S + CL_FAILOVER_TIMEOUT_S + CL_START_TIMEOUT_S + 30);
		int leader = cl_wait_stable(c, CL_STABLE_TIMEOUT_S, why, sizeof why);
		if (leader < 0) {
			printf("| %u | – | – | – | cluster not stable within %.0fs: %s |\n", k + 1,
			       CL_STABLE_TIMEOUT_S, why);
			failures++;
			break;
		}
		/* acks flowing before the kill */
		pthread_mutex_lock(&sh.mu);
		uint64_t a0 = sh.acks;
		pthread_mutex_unlock(&sh.mu);
		bench_sleep_ns((uint64_t)(FO_STEADY_S * 1e9));
		pthread_mutex_lock(&sh.mu);
		bool flowing = sh.acks > a0;
		sh.armed_ns = 0;
		sh.first_ns = 0;
		pthread_mutex_unlock(&sh.mu);
		if (!flowing) {
			printf("| %u | – | – | – | no acks in the %.1fs before the kill: %s |\n", k + 1,
			       FO_STEADY_S, sh.last_err);
			failures++;
			break;
		}
		if (cfg->verbose) {
			struct timespec rt;
			clock_gettime(CLOCK_REALTIME, &rt);
			fprintf(stderr, "parley-bench: kill %u: SIGKILL node %d at %02ld:%02ld.%03ld\n",
				k + 1, leader + 1, (long)(rt.tv_sec / 60 % 60), (long)(rt.tv_sec % 60),
				rt.tv_nsec / 1000000L);
		}
		uint64_t t_kill = parley_mono_ns();
		cl_kill(&c->nd[leader]);
		uint64_t t_dead = parley_mono_ns();
		pthread_mutex_lock(&sh.mu);
		sh.armed_ns = t_dead;
		pthread_mutex_unlock(&sh.mu);
		/* wait for the first ack; meanwhile ask the survivors' /metrics
		 * when one of them leads partition 0 again (the server side of
		 * the failover, without the clients' reconnects) */
		uint64_t first = 0, t_lead = 0, t_all = 0;
		double fend = bench_now_s() + CL_FAILOVER_TIMEOUT_S;
		while (bench_now_s() < fend) {
			pthread_mutex_lock(&sh.mu);
			first = sh.first_ns;
			pthread_mutex_unlock(&sh.mu);
			if (first && t_lead && t_all)
				break;
			for (unsigned i = 0; i < CL_NODES && !t_all; i++) {
				struct node_view v;
				if (c->nd[i].pid <= 0)
					continue;
				node_view(c->nd[i].admin_port, mbuf, &v);
				if (v.role0 == 3 && !t_lead)
					t_lead = parley_mono_ns();
				if (v.role0 == 3 && v.parts > 0 && v.led == v.parts)
					t_all = parley_mono_ns();
			}
			bench_sleep_ns(first || t_lead ? 1000000ull : 5000000ull);
		}
		if (t_lead)
			lt[nlead++] = t_lead - t_kill;
		if (t_all)
			at[nall++] = t_all - t_kill;
		/* who leads now (the survivors' view) */
		int nl = cl_wait_stable(c, 5, why, sizeof why);
		char nls[16] = "?";
		if (nl >= 0)
			snprintf(nls, sizeof nls, "%d", nl + 1);
		char lead_ms[64] = "not seen";
		if (t_lead)
			snprintf(lead_ms, sizeof lead_ms, "%.0f", (double)(t_lead - t_kill) / 1e6);
		if (t_all)
			snprintf(lead_ms + strlen(lead_ms), sizeof lead_ms - strlen(lead_ms), " / %.0f",
				 (double)(t_all - t_kill) / 1e6);
		else
			snprintf(lead_ms + strlen(lead_ms), sizeof lead_ms - strlen(lead_ms),
				 " / not seen");
		if (first) {
			ft[done++] = first - t_kill;
			printf("| %u | %d | %s | %s | %.0f | reaped %.1f ms after the signal |\n",
			       k + 1, leader + 1, nls, lead_ms, (double)(first - t_kill) / 1e6,
			       (double)(t_dead - t_kill) / 1e6);
		} else {
			never++;
			failures++;
			printf("| %u | %d | %s | %s | never (> %.0f s) | last client error: %s; %s |\n",
			       k + 1, leader + 1, nls, lead_ms, CL_FAILOVER_TIMEOUT_S, sh.last_err, why);
		}
		pthread_mutex_lock(&sh.mu);
		sh.armed_ns = 0;
		pthread_mutex_unlock(&sh.mu);
		if ((rc = cl_spawn(cfg, &c->nd[leader])) != 0 ||
		    (rc = cl_wait_listen(&c->nd[leader])) != 0) {
			printf("| | node %d did not restart: %s | | | |\n", leader + 1,
			       parley_strerror(rc));
			failures++;
			break;
		}
		bench_watchdog_arm(0);
		if (never)
			break; /* a stuck cluster makes later kills meaningless */
	}
stop:
	atomic_store(&sh.stop, true);
	bench_watchdog_arm(60 + CL_STABLE_TIMEOUT_S);
	/* the history check runs once leadership has settled again */
	(void)cl_wait_stable(c, CL_STABLE_TIMEOUT_S, why, sizeof why);
	uint64_t lost = 0, doubled = 0, moved = 0, acked = 0;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(cl[i].th, NULL);
		lost += cl[i].lost;
		doubled += cl[i].doubled;
		moved += cl[i].moved;
		acked += cl[i].n_acked;
	}
	bench_watchdog_arm(0);
	qsort(ft, done, sizeof *ft, cmp_u64);
	struct bench_hist h;
	bench_hist_init(&h);
	for (unsigned i = 0; i < done; i++)
		bench_hist_record(&h, ft[i]);
	/* with ≤ 100 samples a quantile is an order statistic: nearest rank */
	double p50 = done ? (double)ft[(done - 1) / 2] / 1e6 : NAN;
	double p99 = done ? (double)ft[(size_t)ceil(0.99 * done) - 1] / 1e6 : NAN;
	printf("\n| failover | value | goal |\n|---|---:|---|\n");
	printf("| kills measured (never completed) | %u (%u) | ≥ 20 |\n", done, never);
	printf("| kill → first ack p50 | %.0f ms | |\n", p50);
	printf("| kill → first ack p99 (nearest rank) | %.0f ms | ≤ 1000 ms: %s |\n", p99,
	       !done ? "no verdict" : p99 <= 1000 ? "met" : "missed");
	printf("| min / max | %.0f / %.0f ms | |\n", done ? (double)ft[0] / 1e6 : NAN,
	       done ? (double)ft[done - 1] / 1e6 : NAN);
	qsort(lt, nlead, sizeof *lt, cmp_u64);
	if (nlead)
		printf("| kill → a survivor leads partition 0, p50 / p99 / max (server side) | "
		       "%.0f / %.0f / %.0f ms | |\n", (double)lt[(nlead - 1) / 2] / 1e6,
		       (double)lt[(size_t)ceil(0.99 * nlead) - 1] / 1e6,
		       (double)lt[nlead - 1] / 1e6);
	qsort(at, nall, sizeof *at, cmp_u64);
	if (nall)
		printf("| kill → one survivor leads all partitions, p50 / p99 / max (server side) | "
		       "%.0f / %.0f / %.0f ms | |\n", (double)at[(nall - 1) / 2] / 1e6,
		       (double)at[(size_t)ceil(0.99 * nall) - 1] / 1e6, (double)at[nall - 1] / 1e6);
	printf("| acknowledged SENDs (errors returned to the clients) | %llu (%llu) | |\n",
	       (unsigned long long)acked, (unsigned long long)sh.errors);
	if (sh.errors)
		printf("| last error a SEND returned (after libparley's retries) | %s | |\n",
		       sh.last_err);
	printf("| history check: acknowledged but missing / doubled / at another seq | "
	       "%llu / %llu / %llu | 0 / 0 / 0 |\n", (unsigned long long)lost,
	       (unsigned long long)doubled, (unsigned long long)moved);
	for (unsigned i = 0; i < nclients; i++)
		if (cl[i].rc) {
			printf("\nclient %u failed: %s (%s)\n", i, parley_strerror(cl[i].rc),
			       sh.last_err);
			failures++;
		}
	if (lost || doubled || moved)
		failures++;
	struct bench_json *jj = bench_sink();
	if (jj) {
		bj_obj(jj, NULL);
		bj_str(jj, "kind", "cluster_failover");
		bj_u64(jj, "kills", done);
		bj_u64(jj, "never", never);
		bj_num(jj, "p50_ms", p50);
		bj_num(jj, "p99_ms", p99);
		bj_num(jj, "lead_p50_ms", nlead ? (double)lt[(nlead - 1) / 2] / 1e6 : NAN);
		bj_num(jj, "lead_p99_ms", nlead ? (double)lt[(size_t)ceil(0.99 * nlead) - 1] / 1e6 : NAN);
		bj_num(jj, "all_led_p50_ms", nall ? (double)at[(nall - 1) / 2] / 1e6 : NAN);
		bj_num(jj, "all_led_p99_ms", nall ? (double)at[(size_t)ceil(0.99 * nall) - 1] / 1e6 : NAN);
		bj_hist(jj, "kill_to_first_ack", &h);
		bj_u64(jj, "acked", acked);
		bj_u64(jj, "lost", lost);
		bj_u64(jj, "doubled", doubled);
		bj_u64(jj, "moved", moved);
		bj_end(jj);
	}
out:
	cl_stop(c, failures > 0);
	for (unsigned i = 0; i < nclients; i++)
		free(cl[i].acked);
	free(cl);
	free(c);
	free(ft);
	free(lt);
	free(at);
	free(mbuf);
	pthread_mutex_destroy(&sh.mu);
	return failures;
}

/*
 * cluster-forward: what request forwarding (docs/CLUSTER.md §3.3) costs.
 * For each --producers N / --payload: a fresh 3-node cluster; then
 * FWD_ROUNDS rounds, each the same closed-loop SEND load (N connections,
 * one SEND outstanding each, own 1:1 conversation, --seconds) first to
 * the leader, then to a follower that forwards every SEND to it: the two
 * alternate in one run so they see the same background load.
 */
#define FWD_ROUNDS 3

static uint64_t fwd_metric(uint16_t admin, const char *name)
{
	char *mb = malloc(CL_METRICS_CAP);
	double v = 0;
	if (mb && http_get(admin, "/metrics", mb, CL_METRICS_CAP) > 0)
		v = metric_val(mb, name);
	free(mb);
	return isnan(v) ? 0 : (uint64_t)v;
}

static int forward_point(const struct bench_cfg *cfg, uint32_t prod, uint32_t payload)
{
	struct cl_set *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	char why[512] = "";
	int rc = cl_start(cfg, c);
	int leader = rc ? rc : cl_wait_stable(c, CL_STABLE_TIMEOUT_S, why, sizeof why);
	if (leader < 0) {
		fprintf(stderr, "parley-bench: cluster did not settle: %s\n", why);
		cl_stop(c, true);
		free(c);
		return 1;
	}
	int follower = (leader + 1) % (int)CL_NODES;
	int failures = 0;
	double sum[2] = {0, 0};
	for (int round = 0; round < FWD_ROUNDS; round++) {
		for (int k = 0; k < 2; k++) {
			int node = k ? follower : leader;
			struct load_result r;
			memset(&r, 0, sizeof r);
			rc = bench_appends_at(cfg, "127.0.0.1", c->nd[node].port, prod, payload,
					      false, &r);
			if (rc || !r.ok)
				failures++;
			sum[k] += r.appends_per_s;
			printf("| %u | %u | %d | %s (node %d) | %.0f | %.0f | %.0f | %.0f | %" PRIu64
			       " | %s |\n", prod, payload, round + 1,
			       k ? "follower, forwarded" : "leader", node + 1, r.appends_per_s,
			       q_us(&r.lat, 0.50), q_us(&r.lat, 0.99), q_us(&r.lat, 0.999),
			       r.errors, r.note[0] ? r.note : "");
			fflush(stdout);
		}
	}
	printf("| %u | %u | all | follower / leader SENDs/s | %.2f | | | | | %" PRIu64
	       " forwarded, replied %" PRIu64 " |\n", prod, payload,
	       sum[0] > 0 ? sum[1] / sum[0] : 0.0,
	       fwd_metric(c->nd[leader].admin_port,
			  "parley_forward_served_total{outcome=\"ok\"}"),
	       fwd_metric(c->nd[follower].admin_port,
			  "parley_forward_requests_total{outcome=\"replied\"}"));
	for (unsigned i = 0; i < CL_NODES; i++)
		if (bench_child_exited(&c->nd[i].pid)) {
			failures++;
			fprintf(stderr, "parley-bench: node %u died\n", i + 1);
		}
	cl_stop(c, failures != 0);
	free(c);
	return failures;
}

int bench_cluster_forward(const struct bench_cfg *cfg)
{
	printf("\n### Request forwarding: SENDs through the leader vs through a "
	       "follower (3 nodes)\n\n");
	printf("| producers | payload B | round | clients on | SENDs/s | p50 us | p99 us | "
	       "p99.9 us | errors | note |\n|---|---|---|---|---|---|---|---|---|---|\n");
	int failures = 0;
	for (uint32_t i = 0; i < cfg->n_producers; i++)
		for (uint32_t j = 0; j < cfg->n_payloads; j++)
			failures += forward_point(cfg, cfg->producers[i], cfg->payloads[j]);
	return failures ? 1 : 0;
}

int bench_cluster(const struct bench_cfg *cfg)
{
	int failures = throughput(cfg);
	if (cfg->kills)
		failures += failover(cfg);
	return failures ? 1 : 0;
}
