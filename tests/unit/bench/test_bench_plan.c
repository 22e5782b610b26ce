/*
 * test_bench_plan.c — unit tests for bench/bench_plan.c, the capacity
 * planner's arithmetic, against cases computed by hand (in the comments).
 *
 * What must hold: each step of the model in bench_plan.h gives the
 * hand-computed number; the binding limit is the largest; the replication
 * factor is a floor on nodes; a missing measurement is an error, not a
 * silent zero; the step log names the sources it was given.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../../bench/bench_plan.h"

static void fig(struct plan_fig *f, double v, const char *src)
{
	f->v = v;
	snprintf(f->src, sizeof f->src, "%s", src);
}

static void setup(struct bench_profile *p, struct plan_meas *m)
{
	bench_profile_defaults(p);
	p->users = 86400;
	p->devices_per_user = 2;
	p->online_fraction = 0.5;
	p->messages_per_user_day = 10;
	p->peak_factor = 2;
	p->group_share = 0.5;
	p->group_size = (struct bp_dist){1, {5}, {1}};
	p->body_bytes = (struct bp_dist){2, {50, 150}, {0.5, 0.5}}; /* mean 100 */
	p->read_receipts_per_message = 1;
	p->delivery_receipts_per_message = 0;
	p->typing_per_message = 0;
	p->history_reads_per_user_day = 1;
	p->replication_factor = 3;
	p->retention_days = 10;
	p->target_utilisation = 0.5;
	memset(m, 0, sizeof *m);
	fig(&m->sends_per_s, 10, "file: w.json sends");
	fig(&m->events_per_s, 40, "file: w.json events");
	fig(&m->conn_bytes, 1000, "file: i.json conn");
	fig(&m->bytes_per_msg, 50, "file: s.json bytes");
	fig(&m->reads_per_s, 1, "file: h.json reads");
	fig(&m->node_cores, 2, "file: w.json cores");
	fig(&m->node_mem_bytes, 1e6, "ASSUMED: 1 MB");
	fig(&m->base_mem_bytes, 1e6, "ASSUMED: base");
	fig(&m->send_overhead, 40, "ASSUMED: send");
	fig(&m->event_overhead, 60, "ASSUMED: event");
}

Test(bench_plan, hand_computed_case)
{
	struct bench_profile p;
	struct plan_meas m;
	setup(&p, &m);
	struct plan_out o;
	char *log = NULL;
	size_t loglen = 0;
	FILE *f = open_memstream(&log, &loglen);
	cr_assert_eq(bench_plan(&p, &m, &o, f), 0);
	fclose(f);
	/* 86400 users × 10 / 86400 = 10/s; × peak 2 = 20/s */
	cr_assert_float_eq(o.sends_avg, 10, 1e-9);
	cr_assert_float_eq(o.sends_peak, 20, 1e-9);
	/* 0.5 × 2 + 0.5 × (5 − 1) × 2 + (2 − 1) = 1 + 4 + 1 = 6 */
	cr_assert_float_eq(o.fanout, 6, 1e-9);
	/* 20 × 6 + 20 × (1 + 0) × 2 + 0 = 160/s */
	cr_assert_float_eq(o.events_peak, 160, 1e-9);
	/* 86400 × 2 × 0.5 */
	cr_assert_float_eq(o.conns_peak, 86400, 1e-9);
	/* 86400 × 1 / 86400 × 2 */
	cr_assert_float_eq(o.reads_peak, 2, 1e-9);
	cr_assert_float_eq(o.body_mean, 100, 1e-9);
	/* writes: 20 × 3 / (10 × 0.5) = 12; events: 160 / (40 × 0.5) = 8;
	 * conns: 1e6 / 1000 = 1000 per node, 86400 / 500 = 172.8 -> 173;
	 * reads: 2 / 0.5 = 4; rf 3 */
	cr_assert_eq(o.nodes_for[PL_WRITES], 12);
	cr_assert_eq(o.nodes_for[PL_EVENTS], 8);
	cr_assert_eq(o.nodes_for[PL_CONNS], 173);
	cr_assert_eq(o.nodes_for[PL_READS], 4);
	cr_assert_eq(o.nodes_for[PL_RF], 3);
	cr_assert_eq(o.nodes, 173);
	cr_assert_eq(o.limit, PL_CONNS);
	cr_assert_eq(o.cores, 346);
	/* 1e6 + 86400 / 173 × 1000 / 0.5 */
	cr_assert_float_eq(o.mem_per_node, 1e6 + 86400.0 / 173 * 1000 / 0.5, 1e-6);
	/* 86400 × 10 × 10 = 8.64e6 messages; × 50 B × 3 / 0.5 = 2.592e9 B */
	cr_assert_float_eq(o.msgs_retained, 8.64e6, 1e-6);
	cr_assert_float_eq(o.disk_total, 2.592e9, 1e-3);
	cr_assert_float_eq(o.disk_per_node, 2.592e9 / 173, 1e-3);
	/* in: 20 × (100 + 40) / 173; replication: × (3 − 1); out: 160 × (100 + 60) / 173 */
	cr_assert_float_eq(o.net_in_per_node, 2800.0 / 173, 1e-9);
	cr_assert_float_eq(o.net_repl_per_node, 5600.0 / 173, 1e-9);
	cr_assert_float_eq(o.net_out_per_node, 25600.0 / 173, 1e-9);
	/* the log carries the sources and the binding limit */
	cr_assert(strstr(log, "file: w.json sends"), "%s", log);
	cr_assert(strstr(log, "ASSUMED: 1 MB"));
	cr_assert(strstr(log, "limited by connections (memory)"), "%s", log);
	free(log);
}

Test(bench_plan, replication_factor_is_a_floor)
{
	struct bench_profile p;
	struct plan_meas m;
	setup(&p, &m);
	p.users = 864; /* 0.2 sends/s at peak: one node would do */
	p.replication_factor = 5;
	struct plan_out o;
	cr_assert_eq(bench_plan(&p, &m, &o, NULL), 0);
	/* writes: 0.2 × 5 / 5 = 0.2 -> 1; conns 864 / 500 -> 2; rf 5 */
	cr_assert_eq(o.nodes_for[PL_WRITES], 1);
	cr_assert_eq(o.nodes_for[PL_CONNS], 2);
	cr_assert_eq(o.nodes, 5);
	cr_assert_eq(o.limit, PL_RF);
}

Test(bench_plan, writes_can_bind)
{
	struct bench_profile p;
	struct plan_meas m;
	setup(&p, &m);
	m.conn_bytes.v = 1; /* a million connections per node */
	p.messages_per_user_day = 1000; /* 2000 sends/s at peak */
	struct plan_out o;
	cr_assert_eq(bench_plan(&p, &m, &o, NULL), 0);
	/* writes: 2000 × 3 / 5 = 1200; events: 2000 × 6 + 2000 × 2 = 16000 / 20 = 800 */
	cr_assert_eq(o.nodes_for[PL_WRITES], 1200);
	cr_assert_eq(o.nodes_for[PL_EVENTS], 800);
	cr_assert_eq(o.nodes, 1200);
	cr_assert_eq(o.limit, PL_WRITES);
}

Test(bench_plan, missing_measurement_is_an_error)
{
	struct bench_profile p;
	struct plan_meas m;
	setup(&p, &m);
	m.bytes_per_msg.v = 0;
	struct plan_out o;
	char *log = NULL;
	size_t loglen = 0;
	FILE *f = open_memstream(&log, &loglen);
	cr_assert_lt(bench_plan(&p, &m, &o, f), 0);
	fclose(f);
	cr_assert(strstr(log, "bytes per message on disk is missing"), "%s", log);
	free(log);
}
