/*
 * bench_plan.h — the capacity planner's arithmetic (parley-bench plan):
 * profile + measured per-node figures -> nodes, cores, memory, disk and
 * network at peak, with headroom. Pure: no I/O except the step log
 * written to `log` (may be NULL). Every number it prints says where it
 * came from: a profile key, a measurement (file and JSON path), or an
 * ASSUMPTION (a default standing in for something not measured).
 *
 * The model (each step is printed with its numbers):
 *   sends_avg   = users * messages_per_user_day / 86400
 *   sends_peak  = sends_avg * peak_factor
 *   fanout      = devices receiving one message:
 *                 (1 - group_share) * devices_per_user            (the peer)
 *                 + group_share * (mean_group_size - 1) * devices_per_user
 *                 + (devices_per_user - 1)                (sender's others)
 *   events_peak = sends_peak * fanout
 *                 + sends_peak * (read + delivery receipts) * devices_per_user
 *                 + sends_peak * typing * fanout    (each costed as one event)
 *   conns_peak  = users * devices_per_user * online_fraction
 *   reads_peak  = users * history_reads_per_user_day / 86400 * peak_factor
 *   nodes_X     = ceil(load_X / (per_node_X * target_utilisation)), for
 *                 writes (sends_peak * replication_factor / node sends/s),
 *                 events, connections (memory), history reads;
 *   nodes       = max(nodes_X, replication_factor)
 *   disk        = users * messages_per_user_day * retention_days
 *                 * bytes_per_message * replication_factor / target_utilisation
 *   network     = ingress (sends * (body + SEND overhead)), replication
 *                 (sends * (record + body) * (rf - 1)), egress (events *
 *                 (body + EVENT overhead)), per node.
 */
#ifndef PARLEY_BENCH_PLAN_H
#define PARLEY_BENCH_PLAN_H

#include <stdio.h>

#include "bench_profile.h"

#define PLAN_SRC_LEN 384

/* One measured (or assumed) per-node figure and where it came from. */
struct plan_fig {
	double v;
	char src[PLAN_SRC_LEN]; /* "file: path" or "ASSUMED: why" */
};

struct plan_meas {
	struct plan_fig sends_per_s;      /* durable sends/s of one node at target p99 */
	struct plan_fig events_per_s;     /* delivered events/s of one node */
	struct plan_fig conn_bytes;       /* server memory per connected device */
	struct plan_fig bytes_per_msg;    /* bytes on disk per stored message (one copy) */
	struct plan_fig reads_per_s;      /* history page reads/s of one node */
	struct plan_fig node_cores;       /* cores of the measured node */
	struct plan_fig node_mem_bytes;   /* memory budget for connections per node */
	struct plan_fig base_mem_bytes;   /* server memory besides connections */
	struct plan_fig send_overhead;    /* wire bytes of a SEND besides its body */
	struct plan_fig event_overhead;   /* wire bytes of an EVENT besides its body */
};

enum plan_limit { PL_WRITES, PL_EVENTS, PL_CONNS, PL_READS, PL_RF, PL_NLIMITS };

struct plan_out {
	double sends_avg, sends_peak, fanout, events_peak, conns_peak, reads_peak;
	double body_mean;
	double nodes_for[PL_NLIMITS];
	double nodes;               /* max of the above */
	enum plan_limit limit;      /* which one set `nodes` */
	double cores;
	double mem_per_node;        /* bytes at peak */
	double disk_total;          /* bytes, all copies, with headroom */
	double disk_per_node;
	double net_in_per_node;     /* bytes/s */
	double net_repl_per_node;
	double net_out_per_node;
	double msgs_retained;
};

extern const char *const plan_limit_name[PL_NLIMITS];

/* Computes *out; prints every step to log (NULL = silent). 0, or
 * -PARLEY_EINVAL when a measured figure is missing or not positive (the
 * message is printed to log). */
int bench_plan(const struct bench_profile *p, const struct plan_meas *m,
	       struct plan_out *out, FILE *log);

#endif /* PARLEY_BENCH_PLAN_H */
