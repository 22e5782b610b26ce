/*
 * bench_plan.c — capacity planner arithmetic (model in bench_plan.h).
 * Each step prints "what = formula = numbers = result  [source]" so a
 * reader can redo the arithmetic by hand.
 */
#include "bench_plan.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "parley_common.h"

const char *const plan_limit_name[PL_NLIMITS] = {
	"durable writes", "delivered events", "connections (memory)", "history reads",
	"replication factor",
};

static void step(FILE *log, const char *fmt, ...)
{
	if (!log)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(log, fmt, ap);
	va_end(ap);
	fputc('\n', log);
}

/* Human units for the log: 1.23 M, 4.5 GB (decimal). */
static const char *si(double v, char *buf, size_t cap)
{
	static const char *const u[] = {" ", " k", " M", " G", " T", " P"};
	unsigned i = 0;
	double a = fabs(v);
	while (a >= 1000 && i < 5) {
		a /= 1000;
		v /= 1000;
		i++;
	}
	snprintf(buf, cap, "%.3g%s", v, u[i]);
	return buf;
}

static int need(const struct plan_fig *f, const char *what, FILE *log)
{
	if (f->v > 0 && isfinite(f->v))
		return 0;
	step(log, "ERROR: %s is missing or not positive (%g; %s)", what, f->v,
	     f->src[0] ? f->src : "no source");
	return -PARLEY_EINVAL;
}

int bench_plan(const struct bench_profile *p, const struct plan_meas *m,
	       struct plan_out *o, FILE *log)
{
	memset(o, 0, sizeof *o);
	int rc = 0;
	rc |= need(&m->sends_per_s, "node durable sends/s", log);
	rc |= need(&m->events_per_s, "node delivered events/s", log);
	rc |= need(&m->conn_bytes, "memory per connection", log);
	rc |= need(&m->bytes_per_msg, "bytes per message on disk", log);
	rc |= need(&m->reads_per_s, "node history reads/s", log);
	rc |= need(&m->node_cores, "cores per node", log);
	rc |= need(&m->node_mem_bytes, "memory budget per node", log);
	if (rc)
		return -PARLEY_EINVAL;
	char a[32], b[32], c[32], d[32], e[32], g[32];
	double u = p->target_utilisation, rf = p->replication_factor;
	double D = p->devices_per_user;
	double G = bp_dist_mean(&p->group_size);
	o->body_mean = bp_dist_mean(&p->body_bytes);

	step(log, "## Inputs\n");
	step(log, "- profile \"%s\": users %s, devices/user %g, online at peak %g, "
		  "messages/user/day %g, peak factor %g, group share %g (mean group size %.3g), "
		  "mean body %.1f B, receipts/msg %g read + %g delivery, typing/msg %g, "
		  "history reads/user/day %g, replication factor %g, retention %g days, "
		  "target utilisation %g (headroom %.0f%%)",
	     p->name, si(p->users, a, sizeof a), D, p->online_fraction, p->messages_per_user_day,
	     p->peak_factor, p->group_share, G, o->body_mean, p->read_receipts_per_message,
	     p->delivery_receipts_per_message, p->typing_per_message,
	     p->history_reads_per_user_day, rf, p->retention_days, u, (1 - u) * 100);
	const struct { const char *name; const struct plan_fig *f; const char *unit; } figs[] = {
		{"node durable sends/s at target p99", &m->sends_per_s, "/s"},
		{"node delivered events/s", &m->events_per_s, "/s"},
		{"server memory per connected device", &m->conn_bytes, "B"},
		{"bytes on disk per message (one copy)", &m->bytes_per_msg, "B"},
		{"node history page reads/s", &m->reads_per_s, "/s"},
		{"cores per node", &m->node_cores, ""},
		{"memory per node for connections", &m->node_mem_bytes, "B"},
		{"server base memory", &m->base_mem_bytes, "B"},
		{"SEND wire overhead", &m->send_overhead, "B"},
		{"EVENT wire overhead", &m->event_overhead, "B"},
	};
	for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++)
		step(log, "- %s: %s%s  [%s]", figs[i].name, si(figs[i].f->v, a, sizeof a),
		     figs[i].unit, figs[i].f->src);
	step(log, "\n(si units: k = 10^3, M = 10^6, G = 10^9, T = 10^12; B = bytes)");

	step(log, "\n## Load at peak\n");
	o->sends_avg = p->users * p->messages_per_user_day / 86400.0;
	step(log, "1. sends/s (day average) = users × messages/user/day ÷ 86400 = %s × %g ÷ "
		  "86400 = %s/s",
	     si(p->users, a, sizeof a), p->messages_per_user_day, si(o->sends_avg, b, sizeof b));
	o->sends_peak = o->sends_avg * p->peak_factor;
	step(log, "2. sends/s at peak = %s × peak factor %g = %s/s", si(o->sends_avg, a, sizeof a),
	     p->peak_factor, si(o->sends_peak, b, sizeof b));
	o->fanout = (1 - p->group_share) * D + p->group_share * (G - 1) * D + (D - 1);
	step(log, "3. devices receiving one message = (1 − group share) × devices + group share × "
		  "(group size − 1) × devices + (devices − 1) = %g × %g + %g × %.3g × %g + %g = %.3f",
	     1 - p->group_share, D, p->group_share, G - 1, D, D - 1, o->fanout);
	double msg_events = o->sends_peak * o->fanout;
	double rcpt_events = o->sends_peak * (p->read_receipts_per_message +
					      p->delivery_receipts_per_message) * D;
	double typing_events = o->sends_peak * p->typing_per_message * o->fanout;
	o->events_peak = msg_events + rcpt_events + typing_events;
	step(log, "4. delivered events/s at peak = messages %s/s + receipts (%g + %g) × %s/s × %g = "
		  "%s/s + typing %g × %s/s × %.3f = %s/s → %s/s (receipts and typing: ASSUMED to cost one "
		  "delivered event each; the server has neither yet, so they are not measured)",
	     si(msg_events, a, sizeof a), p->read_receipts_per_message,
	     p->delivery_receipts_per_message, si(o->sends_peak, b, sizeof b), D,
	     si(rcpt_events, c, sizeof c), p->typing_per_message, si(o->sends_peak, d, sizeof d),
	     o->fanout, si(typing_events, e, sizeof e), si(o->events_peak, g, sizeof g));
	o->conns_peak = p->users * D * p->online_fraction;
	step(log, "5. connected devices at peak = users × devices × online fraction = %s × %g × %g "
		  "= %s",
	     si(p->users, a, sizeof a), D, p->online_fraction, si(o->conns_peak, b, sizeof b));
	o->reads_peak = p->users * p->history_reads_per_user_day / 86400.0 * p->peak_factor;
	step(log, "6. history page reads/s at peak = %s × %g ÷ 86400 × %g = %s/s",
	     si(p->users, a, sizeof a), p->history_reads_per_user_day, p->peak_factor,
	     si(o->reads_peak, b, sizeof b));

	step(log, "\n## Nodes (each limit at %.0f%% of the measured per-node figure)\n", u * 100);
	double w = o->sends_peak * rf;
	o->nodes_for[PL_WRITES] = ceil(w / (m->sends_per_s.v * u));
	step(log, "7. durable writes: sends × replication factor = %s/s; ÷ (%s/s × %g) = %.0f nodes",
	     si(w, a, sizeof a), si(m->sends_per_s.v, b, sizeof b), u, o->nodes_for[PL_WRITES]);
	o->nodes_for[PL_EVENTS] = ceil(o->events_peak / (m->events_per_s.v * u));
	step(log, "8. delivered events: %s/s ÷ (%s/s × %g) = %.0f nodes",
	     si(o->events_peak, a, sizeof a), si(m->events_per_s.v, b, sizeof b), u,
	     o->nodes_for[PL_EVENTS]);
	double conns_per_node = m->node_mem_bytes.v / m->conn_bytes.v;
	o->nodes_for[PL_CONNS] = ceil(o->conns_peak / (conns_per_node * u));
	step(log, "9. connections: a node holds %sB ÷ %sB = %s connections; %s ÷ (%s × %g) = %.0f "
		  "nodes",
	     si(m->node_mem_bytes.v, a, sizeof a), si(m->conn_bytes.v, b, sizeof b),
	     si(conns_per_node, c, sizeof c), si(o->conns_peak, d, sizeof d),
	     si(conns_per_node, e, sizeof e), u, o->nodes_for[PL_CONNS]);
	o->nodes_for[PL_READS] = ceil(o->reads_peak / (m->reads_per_s.v * u));
	step(log, "10. history reads: %s/s ÷ (%s/s × %g) = %.0f nodes", si(o->reads_peak, a, sizeof a),
	     si(m->reads_per_s.v, b, sizeof b), u, o->nodes_for[PL_READS]);
	o->nodes_for[PL_RF] = ceil(rf);
	o->nodes = 0;
	for (int i = 0; i < PL_NLIMITS; i++)
		if (o->nodes_for[i] > o->nodes) {
			o->nodes = o->nodes_for[i];
			o->limit = (enum plan_limit)i;
		}
	step(log, "11. nodes = max(%.0f, %.0f, %.0f, %.0f, replication factor %.0f) = **%.0f** "
		  "(limited by %s)",
	     o->nodes_for[PL_WRITES], o->nodes_for[PL_EVENTS], o->nodes_for[PL_CONNS],
	     o->nodes_for[PL_READS], o->nodes_for[PL_RF], o->nodes, plan_limit_name[o->limit]);
	o->cores = o->nodes * m->node_cores.v;
	step(log, "12. cores = %.0f nodes × %g cores (the measured node) = **%.0f**", o->nodes,
	     m->node_cores.v, o->cores);

	step(log, "\n## Memory, disk, network per node\n");
	o->mem_per_node = m->base_mem_bytes.v + o->conns_peak / o->nodes * m->conn_bytes.v / u;
	step(log, "13. memory per node = base %sB + (%s connections ÷ %.0f nodes) × %sB ÷ %g = "
		  "**%sB**",
	     si(m->base_mem_bytes.v, a, sizeof a), si(o->conns_peak, b, sizeof b), o->nodes,
	     si(m->conn_bytes.v, c, sizeof c), u, si(o->mem_per_node, d, sizeof d));
	o->msgs_retained = p->users * p->messages_per_user_day * p->retention_days;
	o->disk_total = o->msgs_retained * m->bytes_per_msg.v * rf / u;
	o->disk_per_node = o->disk_total / o->nodes;
	step(log, "14. messages kept = users × messages/day × retention days = %s × %g × %g = %s; "
		  "disk = %s × %.1f B × rf %g ÷ %g = %sB in all, **%sB per node**",
	     si(p->users, a, sizeof a), p->messages_per_user_day, p->retention_days,
	     si(o->msgs_retained, b, sizeof b), si(o->msgs_retained, e, sizeof e), m->bytes_per_msg.v, rf, u,
	     si(o->disk_total, c, sizeof c), si(o->disk_per_node, d, sizeof d));
	o->net_in_per_node = o->sends_peak * (o->body_mean + m->send_overhead.v) / o->nodes;
	o->net_repl_per_node = o->sends_peak * (o->body_mean + m->send_overhead.v) * (rf - 1) /
			       o->nodes;
	o->net_out_per_node = o->events_peak * (o->body_mean + m->event_overhead.v) / o->nodes;
	step(log, "15. network per node at peak: client ingress %s/s × (%.0f + %.0f) B ÷ %.0f = "
		  "%sB/s; replication × (rf − 1) = %sB/s each way; client egress %s events/s × "
		  "(%.0f + %.0f) B ÷ %.0f = %sB/s",
	     si(o->sends_peak, a, sizeof a), o->body_mean, m->send_overhead.v, o->nodes,
	     si(o->net_in_per_node, b, sizeof b), si(o->net_repl_per_node, c, sizeof c),
	     si(o->events_peak, d, sizeof d), o->body_mean, m->event_overhead.v, o->nodes,
	     si(o->net_out_per_node, e, sizeof e));
	double bits = (o->net_in_per_node + 2 * o->net_repl_per_node + o->net_out_per_node) * 8 / u;
	step(log, "16. NIC per node ≥ (in + 2 × replication + out) × 8 ÷ %g = **%sbit/s**", u,
	     si(bits, a, sizeof a));
	return 0;
}
