/*
 * bench_planmode.c — `parley-bench plan --profile FILE --results R.json...`:
 * gathers the per-node figures from result files of the other modes and
 * runs the planner (bench_plan.c), printing every step in Markdown and,
 * with --json, the plan as a result file (for `report`).
 *
 * Where each figure comes from (the source printed next to it names the
 * file and the JSON path; for sends/events the best qualifying point of
 * all workload files, otherwise the first file that has the figure):
 *   sends/s, events/s  workload: the highest-rate point whose send-ack p99
 *                      is within the profile's target_p99_ms with no errors
 *                      and nothing unsent (a lower bound of the node's
 *                      capacity: the load that was tested, not saturation)
 *   memory/connection  idle-conns: server.bytes_per_connection (many idle
 *                      connections: the per-connection cost at scale), else
 *                      workload: server.bytes_per_connected_device (a few
 *                      subscribed devices: includes start-up allocations)
 *   cores              workload: machine.cores
 *   history reads/s    history: min(parleyd hot, older warm) reads/s
 *   bytes/message      history: storage.segment_bytes_per_message (the
 *                      server's own segments, all streams), else
 *                      storage (parley-history-ratio): parley.bytes_per_message
 * Everything else is an ASSUMPTION printed as such (node memory budget,
 * base memory, wire overheads).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench.h"
#include "bench_json.h"
#include "bench_plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley_common.h"

static void setfig(struct plan_fig *f, double v, const char *file, const char *path)
{
	if (f->v > 0 || !(v > 0) || !isfinite(v))
		return;
	f->v = v;
	snprintf(f->src, sizeof f->src, "measured: %s → %s", file, path);
}

static void assume(struct plan_fig *f, double v, const char *why)
{
	if (f->v > 0)
		return;
	f->v = v;
	snprintf(f->src, sizeof f->src, "ASSUMED: %s", why);
}

static struct plan_fig wl_conn;

static void from_workload(const struct bjv *r, const char *file, const struct bench_profile *p,
			  struct plan_meas *m)
{
	const struct bjv *pts = bjv_get(r, "points");
	if (!pts || pts->type != BJV_ARR)
		return;
	const struct bjv *best = NULL;
	size_t bi = 0;
	for (size_t i = 0; i < pts->n; i++) {
		const struct bjv *pt = &pts->kids[i];
		double p99 = bjv_num_at(pt, "sends.latency.p99_us", NAN);
		if (!(p99 <= p->target_p99_ms * 1000) || bjv_num_at(pt, "sends.errors", 1) != 0 ||
		    bjv_num_at(pt, "not_sent", 1) != 0)
			continue;
		if (!best || bjv_num_at(pt, "sends.per_s", 0) > bjv_num_at(best, "sends.per_s", 0)) {
			best = pt;
			bi = i;
		}
	}
	/* the best qualifying point over all workload files wins (not the
	 * first file's): sends/s and events/s come from the same point */
	if (best && bjv_num_at(best, "sends.per_s", 0) > m->sends_per_s.v) {
		char path[160];
		m->sends_per_s.v = m->events_per_s.v = 0;
		snprintf(path, sizeof path, "points[%zu].sends.per_s (p99 %.1f ms ≤ %g ms; a tested load, not saturation)", bi,
			 bjv_num_at(best, "sends.latency.p99_us", 0) / 1e3, p->target_p99_ms);
		setfig(&m->sends_per_s, bjv_num_at(best, "sends.per_s", 0), file, path);
		snprintf(path, sizeof path, "points[%zu].events.per_s (at that load, not saturation)", bi);
		setfig(&m->events_per_s, bjv_num_at(best, "events.per_s", 0), file, path);
	} else if (!best) {
		fprintf(stderr, "parley-bench: plan: %s: no point meets p99 ≤ %g ms without errors\n",
			file, p->target_p99_ms);
	}
	/* used only when no idle-conns result is given (see plan_fallback) */
	setfig(&wl_conn, bjv_num_at(r, "server.bytes_per_connected_device", 0), file,
	       "server.bytes_per_connected_device (few devices: includes start-up allocations)");
	setfig(&m->node_cores, bjv_num_at(r, "machine.cores", 0), file, "machine.cores");
}

static void from_history(const struct bjv *r, const char *file, struct plan_meas *m)
{
	double hot = bjv_num_at(r, "parleyd.hot.reads_per_s", 0);
	double old = bjv_num_at(r, "parleyd.older_warm.reads_per_s", 0);
	double v = hot > 0 && old > 0 ? fmin(hot, old) : hot;
	setfig(&m->reads_per_s, v, file,
	       v == old ? "parleyd.older_warm.reads_per_s (min of hot, older)"
			: "parleyd.hot.reads_per_s (min of hot, older)");
	setfig(&m->bytes_per_msg, bjv_num_at(r, "storage.segment_bytes_per_message", 0), file,
	       "storage.segment_bytes_per_message");
	setfig(&m->node_cores, bjv_num_at(r, "machine.cores", 0), file, "machine.cores");
}

static void from_idle(const struct bjv *r, const char *file, struct plan_meas *m)
{
	if (bjv_get(r, "settings") && bjv_path(r, "settings.tls") &&
	    bjv_path(r, "settings.tls")->num != 0)
		fprintf(stderr, "parley-bench: plan: %s: idle connections over TLS\n", file);
	setfig(&m->conn_bytes, bjv_num_at(r, "server.bytes_per_connection", 0), file,
	       "server.bytes_per_connection (idle authenticated connections)");
}

static void from_storage(const struct bjv *r, const char *file, struct plan_meas *m)
{
	setfig(&m->bytes_per_msg, bjv_num_at(r, "parley.bytes_per_message", 0), file,
	       "parley.bytes_per_message");
}

int bench_planmode(const struct bench_cfg *cfg, int nfiles, char **files)
{
	struct bench_profile p;
	char err[512];
	int rc = bench_profile_load(cfg->profile, &p, err, sizeof err);
	if (rc) {
		fprintf(stderr, "parley-bench: %s\n", err);
		return rc;
	}
	struct plan_meas m;
	memset(&m, 0, sizeof m);
	for (int i = 0; i < nfiles; i++) {
		struct bjv *r;
		if ((rc = bjv_load(files[i], &r, err, sizeof err)) != 0) {
			fprintf(stderr, "parley-bench: plan: %s\n", err);
			return rc;
		}
		const char *mode = bjv_str_at(r, "mode");
		if (mode && !strcmp(mode, "workload"))
			from_workload(r, files[i], &p, &m);
		else if (mode && !strcmp(mode, "history"))
			from_history(r, files[i], &m);
		else if (mode && !strcmp(mode, "storage"))
			from_storage(r, files[i], &m);
		else if (mode && !strcmp(mode, "idle-conns"))
			from_idle(r, files[i], &m);
		else
			fprintf(stderr, "parley-bench: plan: %s: mode \"%s\" has no per-node figure; "
					"ignored\n", files[i], mode ? mode : "(none)");
		bjv_free(r);
	}
	if (!(m.conn_bytes.v > 0) && wl_conn.v > 0)
		m.conn_bytes = wl_conn;
	assume(&m.node_mem_bytes, 16e9, "16 GB of a 32 GB node for connections");
	assume(&m.base_mem_bytes, 4e9, "4 GB for memtables, block caches and WAL buffers");
	assume(&m.send_overhead, 100, "SEND frame, conversation id, message id, TCP/IP share");
	assume(&m.event_overhead, 140, "EVENT frame, ids, sender, timestamps, TCP/IP share");
	printf("# Capacity plan: %s\n\n", p.name);
	printf("Command: parley-bench plan --profile %s --results", cfg->profile);
	for (int i = 0; i < nfiles; i++)
		printf(" %s", files[i]);
	printf("\n\nEvery per-node figure below was measured on ONE node of the machine that ran the "
	       "benchmarks (shared, noisy); each says which file and field it came from. "
	       "Figures marked ASSUMED were not measured.\n\n");
	struct plan_out o;
	rc = bench_plan(&p, &m, &o, stdout);
	if (rc)
		return rc;
	if (cfg->json) {
		FILE *f = fopen(cfg->json, "w");
		if (!f) {
			fprintf(stderr, "parley-bench: --json %s: cannot open\n", cfg->json);
			return -PARLEY_EIO;
		}
		struct bench_json j;
		bj_init(&j, f);
		bj_str(&j, "tool", "parley-bench");
		bj_str(&j, "mode", "plan");
		bj_machine(&j, "machine");
		bj_obj(&j, "settings");
		bj_str(&j, "profile_file", cfg->profile);
		bj_str(&j, "profile", p.name);
		bj_num(&j, "users", p.users);
		bj_num(&j, "replication_factor", p.replication_factor);
		bj_num(&j, "retention_days", p.retention_days);
		bj_num(&j, "target_utilisation", p.target_utilisation);
		bj_arr(&j, "results");
		for (int i = 0; i < nfiles; i++)
			bj_str(&j, NULL, files[i]);
		bj_end(&j);
		bj_end(&j);
		bj_obj(&j, "measured");
		const struct { const char *k; const struct plan_fig *f; } fg[] = {
			{"sends_per_s", &m.sends_per_s}, {"events_per_s", &m.events_per_s},
			{"conn_bytes", &m.conn_bytes}, {"bytes_per_msg", &m.bytes_per_msg},
			{"reads_per_s", &m.reads_per_s}, {"node_cores", &m.node_cores},
			{"node_mem_bytes", &m.node_mem_bytes}, {"base_mem_bytes", &m.base_mem_bytes},
		};
		for (size_t i = 0; i < sizeof fg / sizeof fg[0]; i++) {
			bj_obj(&j, fg[i].k);
			bj_num(&j, "value", fg[i].f->v);
			bj_str(&j, "source", fg[i].f->src);
			bj_end(&j);
		}
		bj_end(&j);
		bj_obj(&j, "plan");
		bj_num(&j, "sends_peak", o.sends_peak);
		bj_num(&j, "events_peak", o.events_peak);
		bj_num(&j, "conns_peak", o.conns_peak);
		bj_num(&j, "reads_peak", o.reads_peak);
		bj_obj(&j, "nodes_for");
		for (int i = 0; i < PL_NLIMITS; i++)
			bj_num(&j, plan_limit_name[i], o.nodes_for[i]);
		bj_end(&j);
		bj_num(&j, "nodes", o.nodes);
		bj_str(&j, "limit", plan_limit_name[o.limit]);
		bj_num(&j, "cores", o.cores);
		bj_num(&j, "mem_per_node_bytes", o.mem_per_node);
		bj_num(&j, "disk_total_bytes", o.disk_total);
		bj_num(&j, "disk_per_node_bytes", o.disk_per_node);
		bj_num(&j, "net_in_per_node_Bps", o.net_in_per_node);
		bj_num(&j, "net_repl_per_node_Bps", o.net_repl_per_node);
		bj_num(&j, "net_out_per_node_Bps", o.net_out_per_node);
		bj_end(&j);
		rc = bj_finish(&j);
		fclose(f);
	}
	return rc;
}
