/*
 * bench_report.c — `parley-bench report RESULT.json... --out DIR`: SVG
 * charts and a Markdown page (DIR/index.md) embedding them, from the
 * result files of the other modes. SVG is written directly (no plotting
 * dependency; the same input gives byte-identical files).
 *
 * Charts by result mode:
 *   workload  latency CDF (send -> durable ack and send -> delivered event,
 *             every rate on one chart), throughput over time (sends acked
 *             per second, per rate, with the target), latency vs load
 *             (p50/p99 against the target rate)
 *   history   latency CDF of page reads (parleyd hot / older cold / older
 *             warm and Redis hot / older on one chart), reads/s bars
 *   storage   bytes on disk per message: raw records, Cassandra-style LZ4,
 *             parley, zstd -19 floor (bars)
 *   plan      nodes needed by each limit (bars) and nodes against daily
 *             users (each limit scales linearly with users)
 *   disk, engine, redis, compare, server-compare, delivery (their "rows")
 *             one latency CDF with every row (parley and peers together);
 *             delivery: p50/p99 against the rate, parleyd and NATS
 * A CDF chart puts latency (log scale) on x and the fraction of requests
 * at or below it on y, on a "nines" scale (0, 90%, 99%, 99.9%, 99.99%) so
 * the tail is visible.
 *
 * Single-threaded; files are read whole (bjv_load bounds their size).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench.h"
#include "bench_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "parley_common.h"

#define SVG_W 860
#define SVG_H 460
#define ML 80   /* margins: left, right (legend), top, bottom */
#define MR 250
#define MT 46
#define MB 62
#define MAX_SERIES 16
#define MAX_PTS 256
#define NINES_MAX 4.0 /* 99.99% */

enum axis { AX_LIN, AX_LOG, AX_NINES };

struct series {
	char name[96];
	size_t n;
	double x[MAX_PTS], y[MAX_PTS];
	bool dashed;
};

struct chart {
	char title[160], xlabel[64], ylabel[64];
	enum axis xa, ya;
	size_t ns;
	struct series s[MAX_SERIES];
};

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
				      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static double tf(enum axis a, double v)
{
	if (a == AX_LOG)
		return log10(v);
	if (a == AX_NINES) {
		double r = 1 - v;
		return r <= 1e-4 ? NINES_MAX : -log10(r);
	}
	return v;
}

static void esc(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else if (*s == '&')
			fputs("&amp;", f);
		else
			fputc(*s, f);
	}
}

static void fmt_num(char *b, size_t cap, double v)
{
	double a = fabs(v);
	if (a == 0)
		snprintf(b, cap, "0");
	else if (a >= 1e9)
		snprintf(b, cap, "%gG", v / 1e9);
	else if (a >= 1e6)
		snprintf(b, cap, "%gM", v / 1e6);
	else if (a >= 1e4)
		snprintf(b, cap, "%gk", v / 1e3);
	else
		snprintf(b, cap, "%g", v);
}

/* Ticks in transformed space: values to label. */
static size_t ticks(enum axis a, double lo, double hi, double *out, size_t max)
{
	size_t n = 0;
	if (a == AX_NINES) {
		for (int k = 0; k <= (int)NINES_MAX && n < max; k++)
			out[n++] = k;
		return n;
	}
	if (a == AX_LOG) {
		for (double e = floor(lo); e <= ceil(hi) + 1e-9 && n < max; e += 1)
			if (e >= lo - 1e-9 && e <= hi + 1e-9)
				out[n++] = e;
		if (n < 2) { /* less than a decade: 1-2-5 steps */
			n = 0;
			for (double e = floor(lo); e <= ceil(hi) && n < max; e += 1)
				for (int m = 0; m < 3 && n < max; m++) {
					double t = e + log10((double[]){1, 2, 5}[m]);
					if (t >= lo - 1e-9 && t <= hi + 1e-9)
						out[n++] = t;
				}
		}
		return n;
	}
	double span = hi - lo, raw = span / 6, mag = pow(10, floor(log10(raw))), step = mag;
	if (raw / mag > 5)
		step = 10 * mag;
	else if (raw / mag > 2)
		step = 5 * mag;
	else if (raw / mag > 1)
		step = 2 * mag;
	for (double t = ceil(lo / step) * step; t <= hi + step * 1e-9 && n < max; t += step)
		out[n++] = fabs(t) < step * 1e-9 ? 0 : t;
	return n;
}

static void tick_label(enum axis a, double t, char *b, size_t cap)
{
	if (a == AX_NINES) {
		static const char *const l[] = {"0%", "90%", "99%", "99.9%", "99.99%"};
		snprintf(b, cap, "%s", l[(int)t]);
	} else if (a == AX_LOG) {
		fmt_num(b, cap, pow(10, t));
	} else {
		fmt_num(b, cap, t);
	}
}

static int chart_write(const struct chart *c, const char *dir, const char *file)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "parley-bench: report: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
	for (size_t i = 0; i < c->ns; i++)
		for (size_t k = 0; k < c->s[i].n; k++) {
			double x = c->s[i].x[k], y = c->s[i].y[k];
			if ((c->xa == AX_LOG && !(x > 0)) || (c->ya == AX_LOG && !(y > 0)) ||
			    !isfinite(x) || !isfinite(y))
				continue;
			x = tf(c->xa, x);
			y = tf(c->ya, y);
			x0 = fmin(x0, x);
			x1 = fmax(x1, x);
			y0 = fmin(y0, y);
			y1 = fmax(y1, y);
		}
	if (!isfinite(x0)) {
		x0 = 0;
		x1 = 1;
		y0 = 0;
		y1 = 1;
	}
	if (c->xa == AX_LOG) {
		x0 = floor(x0 * 2) / 2;
		x1 = ceil(x1 * 2) / 2;
	}
	if (c->ya == AX_LOG) {
		y0 = floor(y0 * 2) / 2;
		y1 = ceil(y1 * 2) / 2;
	}
	if (c->ya == AX_NINES) {
		y0 = 0;
		y1 = NINES_MAX;
	}
	if (c->ya == AX_LIN) {
		y0 = fmin(0, y0);
		y1 = y1 > 0 ? y1 * 1.08 : 1;
	}
	if (c->xa == AX_LIN && x0 > 0 && x0 < (x1 - x0))
		x0 = 0;
	if (x1 <= x0)
		x1 = x0 + 1;
	if (y1 <= y0)
		y1 = y0 + 1;
	const double pw = SVG_W - ML - MR, ph = SVG_H - MT - MB;
#define PX(v) (ML + ((v) - x0) / (x1 - x0) * pw)
#define PY(v) (MT + ph - ((v) - y0) / (y1 - y0) * ph)
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		   "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" "
		   "font-size=\"12\">\n", SVG_W, SVG_H, SVG_W, SVG_H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\" font-weight=\"bold\">", ML);
	esc(f, c->title);
	fprintf(f, "</text>\n");
	double tv[32];
	size_t nt = ticks(c->xa, x0, x1, tv, 32);
	char lb[32];
	for (size_t i = 0; i < nt; i++) {
		double px = PX(tv[i]);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n",
			px, MT, px, MT + ph);
		tick_label(c->xa, tv[i], lb, sizeof lb);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px,
			MT + ph + 18, lb);
	}
	nt = ticks(c->ya, y0, y1, tv, 32);
	for (size_t i = 0; i < nt; i++) {
		double py = PY(tv[i]);
		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n",
			ML, py, ML + pw, py);
		tick_label(c->ya, tv[i], lb, sizeof lb);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", ML - 6,
			py + 4, lb);
	}
	fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
		   "stroke=\"#444\"/>\n", ML, MT, pw, ph);
	fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", ML + pw / 2, SVG_H - 16);
	esc(f, c->xlabel);
	fprintf(f, "</text>\n<text transform=\"translate(18,%.1f) rotate(-90)\" "
		   "text-anchor=\"middle\">", MT + ph / 2);
	esc(f, c->ylabel);
	fprintf(f, "</text>\n");
	for (size_t i = 0; i < c->ns; i++) {
		const struct series *s = &c->s[i];
		const char *col = palette[i % (sizeof palette / sizeof palette[0])];
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", col,
			s->dashed ? " stroke-dasharray=\"6,4\"" : "");
		size_t drawn = 0;
		for (size_t k = 0; k < s->n; k++) {
			double x = s->x[k], y = s->y[k];
			if ((c->xa == AX_LOG && !(x > 0)) || (c->ya == AX_LOG && !(y > 0)) ||
			    !isfinite(x) || !isfinite(y))
				continue;
			fprintf(f, "%.1f,%.1f ", PX(tf(c->xa, x)), PY(tf(c->ya, y)));
			drawn++;
		}
		fprintf(f, "\"/>\n");
		if (drawn <= 2) /* single points stay visible */
			for (size_t k = 0; k < s->n; k++)
				if (isfinite(s->x[k]) && isfinite(s->y[k]) &&
				    !(c->xa == AX_LOG && !(s->x[k] > 0)) &&
				    !(c->ya == AX_LOG && !(s->y[k] > 0)))
					fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
						PX(tf(c->xa, s->x[k])), PY(tf(c->ya, s->y[k])), col);
		double ly = MT + 10 + (double)i * 20;
		fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"%s\" "
			   "stroke-width=\"3\"%s/>\n", ML + pw + 14, ly, ML + pw + 38, ly, col,
			s->dashed ? " stroke-dasharray=\"6,4\"" : "");
		fprintf(f, "<text x=\"%.0f\" y=\"%.1f\">", ML + pw + 44, ly + 4);
		esc(f, s->name);
		fprintf(f, "</text>\n");
	}
	fprintf(f, "</svg>\n");
#undef PX
#undef PY
	return fclose(f) == 0 ? 0 : -PARLEY_EIO;
}

/* Bars: one per label, value printed on top. */
static int bars_write(const char *dir, const char *file, const char *title, const char *ylabel,
		      size_t n, char labels[][64], const double *v, double goal, const char *goal_name)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	double vmax = goal > 0 ? goal : 0;
	for (size_t i = 0; i < n; i++)
		if (isfinite(v[i]))
			vmax = fmax(vmax, v[i]);
	if (vmax <= 0)
		vmax = 1;
	vmax *= 1.15;
	const double pw = SVG_W - ML - 40, ph = SVG_H - MT - MB - 30;
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		   "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" "
		   "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
		SVG_W, SVG_H, SVG_W, SVG_H);
	fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\" font-weight=\"bold\">", ML);
	esc(f, title);
	fprintf(f, "</text>\n");
	double tv[32];
	size_t nt = ticks(AX_LIN, 0, vmax, tv, 32);
	char lb[32];
	for (size_t i = 0; i < nt; i++) {
		double py = MT + ph - tv[i] / vmax * ph;
		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n",
			ML, py, ML + pw, py);
		fmt_num(lb, sizeof lb, tv[i]);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", ML - 6, py + 4,
			lb);
	}
	double slot = pw / (double)(n ? n : 1), bw = slot * 0.6;
	for (size_t i = 0; i < n; i++) {
		double x = ML + slot * (double)i + (slot - bw) / 2;
		double h = isfinite(v[i]) ? v[i] / vmax * ph : 0;
		fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
			x, MT + ph - h, bw, h, palette[i % 10]);
		char vb[32];
		if (isfinite(v[i]))
			snprintf(vb, sizeof vb, "%.3g", v[i]);
		else
			snprintf(vb, sizeof vb, "not measured");
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x + bw / 2,
			MT + ph - h - 5, vb);
		/* labels may be long: split on the first " (" onto a second line */
		char l1[64], l2[64] = "";
		snprintf(l1, sizeof l1, "%s", labels[i]);
		char *par = strstr(l1, " (");
		if (par) {
			snprintf(l2, sizeof l2, "%s", par + 1);
			*par = 0;
		}
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x + bw / 2,
			MT + ph + 18);
		esc(f, l1);
		fprintf(f, "</text>\n<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
			   "fill=\"#555\">", x + bw / 2, MT + ph + 34);
		esc(f, l2);
		fprintf(f, "</text>\n");
	}
	if (goal > 0) {
		double py = MT + ph - goal / vmax * ph;
		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" "
			   "stroke-dasharray=\"6,4\" stroke-width=\"2\"/>\n<text x=\"%.1f\" y=\"%.1f\" "
			   "text-anchor=\"end\" fill=\"#d62728\">", ML, py, ML + pw, py, ML + pw, py - 5);
		esc(f, goal_name);
		fprintf(f, "</text>\n");
	}
	fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n", ML,
		MT + ph, ML + pw, MT + ph);
	fprintf(f, "<text transform=\"translate(18,%.1f) rotate(-90)\" text-anchor=\"middle\">",
		MT + ph / 2);
	esc(f, ylabel);
	fprintf(f, "</text>\n</svg>\n");
	return fclose(f) == 0 ? 0 : -PARLEY_EIO;
}

/* A histogram's "cdf" array as a series (x = latency in ms, y = fraction). */
static void add_cdf(struct chart *c, const struct bjv *hist, const char *name, bool dashed)
{
	const struct bjv *cdf = bjv_get(hist, "cdf");
	if (!cdf || cdf->type != BJV_ARR || !cdf->n || c->ns == MAX_SERIES)
		return;
	struct series *s = &c->s[c->ns++];
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", name);
	s->dashed = dashed;
	for (size_t i = 0; i < cdf->n && s->n < MAX_PTS; i++) {
		const struct bjv *pt = &cdf->kids[i];
		if (pt->type != BJV_ARR || pt->n != 2)
			continue;
		s->x[s->n] = pt->kids[0].num / 1e3;
		s->y[s->n] = pt->kids[1].num;
		s->n++;
	}
}

static void chart_init(struct chart *c, const char *title, const char *xl, const char *yl,
		       enum axis xa, enum axis ya)
{
	memset(c, 0, sizeof *c);
	snprintf(c->title, sizeof c->title, "%s", title);
	snprintf(c->xlabel, sizeof c->xlabel, "%s", xl);
	snprintf(c->ylabel, sizeof c->ylabel, "%s", yl);
	c->xa = xa;
	c->ya = ya;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* ---- per mode ------------------------------------------------------------------------- */

static int rep_workload(FILE *md, const struct bjv *r, const char *dir, unsigned k)
{
	static struct chart c;
	char file[64];
	int rc = 0;
	const struct bjv *pts = bjv_get(r, "points");
	if (!pts || pts->type != BJV_ARR)
		return -PARLEY_EINVAL;
	fprintf(md, "- profile **%s** (%s), %.0f simulated users, %.0f of %.0f devices connected, "
		    "%.0f driver threads, %g s measured per rate\n",
		bjv_str_at(r, "settings.profile"), bjv_str_at(r, "settings.profile_file"),
		bjv_num_at(r, "settings.users_simulated", 0),
		bjv_num_at(r, "settings.devices_connected", 0), bjv_num_at(r, "settings.devices", 0),
		bjv_num_at(r, "settings.threads", 0), bjv_num_at(r, "settings.seconds", 0));
	const struct bjv *ne = bjv_get(r, "not_exercised");
	if (ne && ne->type == BJV_ARR && ne->n) {
		fprintf(md, "- not exercised (server lacks them):");
		for (size_t i = 0; i < ne->n; i++)
			fprintf(md, "%s %s (profile %g)", i ? "," : "",
				bjv_str_at(&ne->kids[i], "feature"),
				bjv_num_at(&ne->kids[i], "profile_value", 0));
		fprintf(md, "\n");
	}
	fprintf(md, "\n| target sends/s | sends ok | send errors | not sent | sends/s | send p50 ms "
		    "| send p99 ms | events delivered | events/s | event p99 ms | history reads | "
		    "reconnects |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < pts->n; i++) {
		const struct bjv *p = &pts->kids[i];
		fprintf(md, "| %.0f | %.0f | %.0f | %.0f | %.1f | %.2f | %.2f | %.0f | %.1f | %.2f | "
			    "%.0f | %.0f |\n",
			bjv_num_at(p, "target_sends_per_s", 0), bjv_num_at(p, "sends.ok", 0),
			bjv_num_at(p, "sends.errors", 0), bjv_num_at(p, "not_sent", 0),
			bjv_num_at(p, "sends.per_s", 0), bjv_num_at(p, "sends.latency.p50_us", NAN) / 1e3,
			bjv_num_at(p, "sends.latency.p99_us", NAN) / 1e3,
			bjv_num_at(p, "events.delivered", 0), bjv_num_at(p, "events.per_s", 0),
			bjv_num_at(p, "events.latency.p99_us", NAN) / 1e3,
			bjv_num_at(p, "history_reads.ok", 0), bjv_num_at(p, "reconnects.ok", 0));
	}
	for (size_t i = 0; i < pts->n; i++) {
		const struct bjv *st = bjv_get(&pts->kids[i], "reconnect_storm");
		if (st)
			fprintf(md, "\nreconnect storm @ %.0f sends/s: %.0f devices reconnected, %.0f "
				    "errors, back after p50 %.2f ms, p99 %.2f ms, max %.2f ms (from the "
				    "storm's start)\n",
				bjv_num_at(&pts->kids[i], "target_sends_per_s", 0), bjv_num_at(st, "ok", 0),
				bjv_num_at(st, "errors", 0), bjv_num_at(st, "latency.p50_us", NAN) / 1e3,
				bjv_num_at(st, "latency.p99_us", NAN) / 1e3,
				bjv_num_at(st, "latency.max_us", NAN) / 1e3);
	}
	/* CDF */
	chart_init(&c, "Latency CDF: send → durable ack (solid), send → event at a device (dashed)",
		   "latency (ms, log scale; open loop, from the intended send time)",
		   "fraction of requests at or below", AX_LOG, AX_NINES);
	for (size_t i = 0; i < pts->n && c.ns + 2 <= MAX_SERIES; i++) {
		char nm[96];
		double rate = bjv_num_at(&pts->kids[i], "target_sends_per_s", 0);
		snprintf(nm, sizeof nm, "ack @ %.0f sends/s", rate);
		add_cdf(&c, bjv_path(&pts->kids[i], "sends.latency"), nm, false);
		snprintf(nm, sizeof nm, "event @ %.0f sends/s", rate);
		add_cdf(&c, bjv_path(&pts->kids[i], "events.latency"), nm, true);
	}
	snprintf(file, sizeof file, "r%u-workload-cdf.svg", k);
	rc |= chart_write(&c, dir, file);
	fprintf(md, "\n![latency CDF](%s)\n", file);
	/* history and reconnect CDF at the highest rate */
	if (pts->n) {
		const struct bjv *p = &pts->kids[pts->n - 1];
		char t[160];
		snprintf(t, sizeof t, "Latency CDF of the other operations @ %.0f sends/s",
			 bjv_num_at(p, "target_sends_per_s", 0));
		chart_init(&c, t, "latency (ms, log scale; from the intended time)",
			   "fraction of requests at or below", AX_LOG, AX_NINES);
		add_cdf(&c, bjv_path(p, "sends.latency"), "send → durable ack", false);
		add_cdf(&c, bjv_path(p, "events.latency"), "send → event", true);
		add_cdf(&c, bjv_path(p, "history_reads.latency"), "history page (last 50)", false);
		add_cdf(&c, bjv_path(p, "reconnects.latency"), "reconnect + resume", false);
		add_cdf(&c, bjv_path(p, "reconnect_storm.latency"), "storm: back after", true);
		snprintf(file, sizeof file, "r%u-workload-ops-cdf.svg", k);
		rc |= chart_write(&c, dir, file);
		fprintf(md, "\n![operations CDF](%s)\n", file);
	}
	/* throughput over time */
	chart_init(&c, "Throughput over time: durable sends acknowledged per second",
		   "second of the measured window", "sends acked / s", AX_LIN, AX_LIN);
	for (size_t i = 0; i < pts->n && c.ns + 2 <= MAX_SERIES; i++) {
		const struct bjv *tl = bjv_get(&pts->kids[i], "timeline_sends_per_s");
		double rate = bjv_num_at(&pts->kids[i], "target_sends_per_s", 0);
		if (!tl || tl->type != BJV_ARR)
			continue;
		struct series *s = &c.s[c.ns++];
		memset(s, 0, sizeof *s);
		snprintf(s->name, sizeof s->name, "acked @ target %.0f/s", rate);
		for (size_t q = 0; q < tl->n && s->n < MAX_PTS; q++) {
			s->x[s->n] = (double)q + 0.5;
			s->y[s->n] = tl->kids[q].num;
			s->n++;
		}
		struct series *g = &c.s[c.ns++];
		memset(g, 0, sizeof *g);
		snprintf(g->name, sizeof g->name, "target %.0f/s", rate);
		g->dashed = true;
		g->n = 2;
		g->x[0] = 0;
		g->x[1] = (double)tl->n;
		g->y[0] = g->y[1] = rate;
	}
	snprintf(file, sizeof file, "r%u-workload-throughput.svg", k);
	rc |= chart_write(&c, dir, file);
	fprintf(md, "\n![throughput over time](%s)\n", file);
	/* latency vs load */
	chart_init(&c, "Latency vs load", "target sends/s (open loop)", "latency (ms, log scale)",
		   AX_LIN, AX_LOG);
	static const struct { const char *path, *name; bool dashed; } lv[] = {
		{"sends.latency.p50_us", "ack p50", false}, {"sends.latency.p99_us", "ack p99", false},
		{"events.latency.p50_us", "event p50", true}, {"events.latency.p99_us", "event p99", true},
	};
	for (size_t q = 0; q < 4; q++) {
		struct series *s = &c.s[c.ns++];
		memset(s, 0, sizeof *s);
		snprintf(s->name, sizeof s->name, "%s", lv[q].name);
		s->dashed = lv[q].dashed;
		for (size_t i = 0; i < pts->n && s->n < MAX_PTS; i++) {
			s->x[s->n] = bjv_num_at(&pts->kids[i], "target_sends_per_s", NAN);
			s->y[s->n] = bjv_num_at(&pts->kids[i], lv[q].path, NAN) / 1e3;
			s->n++;
		}
	}
	snprintf(file, sizeof file, "r%u-workload-latency-vs-load.svg", k);
	rc |= chart_write(&c, dir, file);
	fprintf(md, "\n![latency vs load](%s)\n", file);
	return rc;
}

static int rep_history(FILE *md, const struct bjv *r, const char *dir, unsigned k)
{
	static struct chart c;
	static const struct { const char *path, *name; bool dashed; } rows[] = {
		{"parleyd.hot", "parleyd last page (memtable)", false},
		{"redis.hot", "redis XREVRANGE last page", true},
		{"parleyd.older_cold", "parleyd older page, cold", false},
		{"parleyd.older_warm", "parleyd older page, warm", false},
		{"redis.older", "redis XREVRANGE older page", true},
	};
	fprintf(md, "- %.0f conversations × %.0f messages; page %.0f; page cache: %s\n",
		bjv_num_at(r, "settings.conversations", 0),
		bjv_num_at(r, "settings.messages_per_conversation", 0), bjv_num_at(r, "settings.page", 0),
		bjv_str_at(r, "settings.page_cache") ? bjv_str_at(r, "settings.page_cache") : "?");
	fprintf(md, "- loaded %.0f messages; %.1f segment bytes per message (server's own "
		    "segments, all streams)\n\n",
		bjv_num_at(r, "load.messages", 0),
		bjv_num_at(r, "storage.segment_bytes_per_message", NAN));
	fprintf(md, "| read | reads | errors | reads/s | p50 µs | p99 µs | p99.9 µs |\n"
		    "|---|---:|---:|---:|---:|---:|---:|\n");
	chart_init(&c, "History page reads (50 messages): latency CDF, parleyd vs Redis",
		   "latency (ms, log scale; closed loop)", "fraction of reads at or below", AX_LOG,
		   AX_NINES);
	char labels[8][64];
	double vals[8];
	size_t nb = 0;
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const struct bjv *x = bjv_path(r, rows[i].path);
		if (!x)
			continue;
		fprintf(md, "| %s | %.0f | %.0f | %.0f | %.1f | %.1f | %.1f |\n", rows[i].name,
			bjv_num_at(x, "ok", 0), bjv_num_at(x, "errors", 0),
			bjv_num_at(x, "reads_per_s", 0), bjv_num_at(x, "latency.p50_us", NAN),
			bjv_num_at(x, "latency.p99_us", NAN), bjv_num_at(x, "latency.p999_us", NAN));
		add_cdf(&c, bjv_get(x, "latency"), rows[i].name, rows[i].dashed);
		if (strstr(rows[i].path, "cold"))
			continue; /* one read per conversation: no rate */
		snprintf(labels[nb], sizeof labels[nb], "%s", rows[i].name);
		/* "parleyd last page (memtable)" -> two lines at " (" */
		vals[nb++] = bjv_num_at(x, "reads_per_s", NAN);
	}
	char file[64];
	int rc = 0;
	snprintf(file, sizeof file, "r%u-history-cdf.svg", k);
	rc |= chart_write(&c, dir, file);
	fprintf(md, "\n![history CDF](%s)\n", file);
	for (size_t i = 0; i < nb; i++) { /* shorter bar labels */
		char *p = labels[i];
		if (!strncmp(p, "redis XREVRANGE ", 16))
			memmove(p + 6, p + 16, strlen(p + 16) + 1);
	}
	snprintf(file, sizeof file, "r%u-history-reads.svg", k);
	rc |= bars_write(dir, file, "History page reads per second (closed loop, same connections)",
			 "reads / s", nb, labels, vals, 0, "");
	fprintf(md, "\n![history reads/s](%s)\n", file);
	return rc;
}

static int rep_storage(FILE *md, const struct bjv *r, const char *dir, unsigned k)
{
	const struct bjv *peers = bjv_get(r, "peers");
	if (!peers || peers->type != BJV_ARR)
		return -PARLEY_EINVAL;
	fprintf(md, "- corpus %s: %.0f files, %.0f messages stored (%.0f payload bytes), %.0f "
		    "streams\n\n| records | system | bytes | bytes/message | parley ÷ it | goal |\n"
		    "|---|---|---:|---:|---:|---|\n",
		bjv_str_at(r, "settings.corpus"), bjv_num_at(r, "settings.files", 0),
		bjv_num_at(r, "settings.messages_stored", 0),
		bjv_num_at(r, "settings.stored_payload_bytes", 0), bjv_num_at(r, "settings.streams", 0));
	int rc = 0;
	for (int pass = 0; pass < 2; pass++) {
		const char *ids = pass ? "random 16-byte producer ids" : "zero producer ids";
		char labels[8][64];
		double vals[8];
		size_t nb = 0;
		double goal = 0;
		for (size_t i = 0; i < peers->n; i++) {
			const struct bjv *p = &peers->kids[i];
			const char *pid = bjv_str_at(p, "producer_ids");
			if (!pid || strcmp(pid, ids))
				continue;
			const char *sys = bjv_str_at(p, "system");
			double ratio = bjv_num_at(p, "parley_ratio", NAN);
			double gmax = bjv_num_at(p, "goal_ratio_max", NAN);
			char rcell[48] = "", gcell[48] = "";
			if (isfinite(ratio))
				snprintf(rcell, sizeof rcell, "%.3f×", ratio);
			if (isfinite(gmax))
				snprintf(gcell, sizeof gcell, "≤ %.2f× %s", gmax,
					 isfinite(ratio) ? (ratio <= gmax ? "(met)" : "(NOT met)") : "");
			fprintf(md, "| %s | %s | %.0f | %.1f | %s | %s |\n", ids, sys,
				bjv_num_at(p, "bytes", NAN), bjv_num_at(p, "bytes_per_message", NAN), rcell,
				gcell);
			if (nb < 8) {
				snprintf(labels[nb], sizeof labels[nb], "%s", sys);
				vals[nb++] = bjv_num_at(p, "bytes_per_message", NAN);
			}
			if (!strcmp(sys, "parley segment") && nb < 8) {
				snprintf(labels[nb], sizeof labels[nb], "parley (+ whole dictionary)");
				vals[nb++] = bjv_num_at(p, "bytes_with_dictionary", NAN) /
					     (bjv_num_at(p, "bytes", NAN) / bjv_num_at(p, "bytes_per_message", NAN));
			}
			if (!strcmp(sys, "cassandra-lz4"))
				goal = 0.6 * bjv_num_at(p, "bytes_per_message", NAN);
		}
		char file[64], title[160];
		snprintf(file, sizeof file, "r%u-storage-%s.svg", k, pass ? "random-ids" : "zero-ids");
		snprintf(title, sizeof title, "Bytes on disk per stored message (%s)", ids);
		rc |= bars_write(dir, file, title, "bytes per message", nb, labels, vals,
				 isfinite(goal) ? goal : 0, "goal: 0.6 × LZ4-16K");
		fprintf(md, "\n![storage %s](%s)\n\n", ids, file);
	}
	return rc;
}

static int rep_plan(FILE *md, const struct bjv *r, const char *dir, unsigned k)
{
	static struct chart c;
	const struct bjv *nf = bjv_path(r, "plan.nodes_for");
	if (!nf || nf->type != BJV_OBJ)
		return -PARLEY_EINVAL;
	char labels[8][64];
	double vals[8];
	size_t nb = 0;
	for (size_t i = 0; i < nf->n && nb < 8; i++) {
		snprintf(labels[nb], sizeof labels[nb], "%s", nf->kids[i].key);
		vals[nb++] = nf->kids[i].num;
	}
	fprintf(md, "- profile **%s**, %.3g daily users: **%.0f nodes** (limited by %s), %.0f cores, "
		    "%.3g GB memory and %.3g TB disk per node\n",
		bjv_str_at(r, "settings.profile"), bjv_num_at(r, "settings.users", 0),
		bjv_num_at(r, "plan.nodes", 0), bjv_str_at(r, "plan.limit"),
		bjv_num_at(r, "plan.cores", 0), bjv_num_at(r, "plan.mem_per_node_bytes", 0) / 1e9,
		bjv_num_at(r, "plan.disk_per_node_bytes", 0) / 1e12);
	char file[64];
	int rc = 0;
	snprintf(file, sizeof file, "r%u-plan-nodes.svg", k);
	rc |= bars_write(dir, file, "Nodes needed at peak, by limit (the largest sets the plan)",
			 "nodes", nb, labels, vals, 0, "");
	fprintf(md, "\n![nodes by limit](%s)\n", file);
	/* nodes vs users: every limit but the replication factor scales with users */
	double users = bjv_num_at(r, "settings.users", 0);
	chart_init(&c, "Nodes vs daily users (same profile mix, same per-node figures)",
		   "daily users (log scale)", "nodes (log scale)", AX_LOG, AX_LOG);
	double rf = bjv_num_at(r, "settings.replication_factor", 3);
	for (size_t i = 0; i < nf->n && c.ns < MAX_SERIES; i++) {
		if (strstr(nf->kids[i].key, "replication"))
			continue;
		struct series *s = &c.s[c.ns++];
		memset(s, 0, sizeof *s);
		snprintf(s->name, sizeof s->name, "%s", nf->kids[i].key);
		for (int e = -2; e <= 1 && s->n < MAX_PTS; e++)
			for (int m = 0; m < 3; m++) {
				double f = pow(10, e) * (double[]){1, 2, 5}[m];
				s->x[s->n] = users * f;
				s->y[s->n] = fmax(1, ceil(nf->kids[i].num * f));
				s->n++;
			}
	}
	struct series *s = &c.s[c.ns++];
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "replication factor floor");
	s->dashed = true;
	s->n = 2;
	s->x[0] = users * 0.01;
	s->x[1] = users * 50;
	s->y[0] = s->y[1] = rf;
	snprintf(file, sizeof file, "r%u-plan-scaling.svg", k);
	rc |= chart_write(&c, dir, file);
	fprintf(md, "\n![nodes vs users](%s)\n\n(the per-limit node counts scale with users from "
		    "this plan's rounded counts, so small-user ends are approximate)\n", file);
	return rc;
}

/* disk, engine, redis, compare, server-compare, delivery, compaction: the "rows" of
 * bench_sink.c. One CDF chart with every row's latency (parley and its
 * peers together), and for delivery / open-loop rows latency vs load per
 * system. */
static int rep_rows(FILE *md, const struct bjv *r, const char *dir, unsigned k)
{
	static struct chart c;
	const struct bjv *rows = bjv_get(r, "rows");
	if (!rows || rows->type != BJV_ARR)
		return -PARLEY_EINVAL;
	const struct bjv *peers = bjv_get(r, "peers");
	for (size_t i = 0; peers && peers->type == BJV_ARR && i < peers->n; i++)
		fprintf(md, "- peer **%s**: %s (%s)\n", bjv_str_at(&peers->kids[i], "system"),
			bjv_str_at(&peers->kids[i], "config"), bjv_str_at(&peers->kids[i], "guarantee"));
	fprintf(md, "\n| kind | system | load | count | p50 µs | p99 µs | p99.9 µs | max µs |\n"
		    "|---|---|---|---:|---:|---:|---:|---:|\n");
	chart_init(&c, "Latency CDF, parley and its peers in the same run",
		   "latency (ms, log scale)", "fraction at or below", AX_LOG, AX_NINES);
	int rc = 0;
	for (size_t i = 0; i < rows->n; i++) {
		const struct bjv *row = &rows->kids[i];
		const char *kind = bjv_str_at(row, "kind"), *sys = bjv_str_at(row, "system");
		const struct bjv *h = bjv_get(row, "latency");
		if (!h)
			h = bjv_get(row, "deliver_latency");
		if (!h)
			h = bjv_get(row, "write_4k_fdatasync");
		if (!h)
			h = bjv_get(row, "ack_latency"); /* compaction phases */
		if (!h || !kind)
			continue;
		char load[64], name[96];
		if (!strcmp(kind, "delivery"))
			snprintf(load, sizeof load, "%.0f msg/s, %.0f B", bjv_num_at(row, "rate", 0),
				 bjv_num_at(row, "payload", 0));
		else if (!strcmp(kind, "load"))
			snprintf(load, sizeof load, "%s, %.0f prod., %.0f B",
				 bjv_path(row, "open_loop") && bjv_path(row, "open_loop")->num ? "open"
											: "closed",
				 bjv_num_at(row, "producers", 0), bjv_num_at(row, "payload", 0));
		else if (!strcmp(kind, "compaction_phase"))
			snprintf(load, sizeof load, "%s phase, %.0f SENDs/s",
				 bjv_str_at(row, "phase") ? bjv_str_at(row, "phase") : "?",
				 bjv_num_at(row, "rate", 0));
		else
			snprintf(load, sizeof load, "4 KiB write + fdatasync");
		fprintf(md, "| %s | %s | %s | %.0f | %.1f | %.1f | %.1f | %.1f |\n", kind,
			sys ? sys : "disk", load, bjv_num_at(h, "count", 0), bjv_num_at(h, "p50_us", NAN),
			bjv_num_at(h, "p99_us", NAN), bjv_num_at(h, "p999_us", NAN),
			bjv_num_at(h, "max_us", NAN));
		snprintf(name, sizeof name, "%s: %s", sys ? sys : "disk floor", load);
		add_cdf(&c, h, name, sys && strcmp(sys, "parley") && strcmp(sys, "parleyd"));
	}
	char file[64];
	snprintf(file, sizeof file, "r%u-rows-cdf.svg", k);
	rc |= chart_write(&c, dir, file);
	fprintf(md, "\n![latency CDF](%s)\n", file);
	/* delivery: p99 vs rate per system */
	chart_init(&c, "Send → deliver p50 (dashed) and p99 vs rate", "messages/s (open loop)",
		   "latency (ms, log scale)", AX_LIN, AX_LOG);
	static const char *const systems[] = {"parleyd", "nats"};
	for (size_t q = 0; q < 2; q++)
		for (int pc = 0; pc < 2; pc++) {
			struct series *se = &c.s[c.ns];
			memset(se, 0, sizeof *se);
			snprintf(se->name, sizeof se->name, "%s %s", systems[q], pc ? "p50" : "p99");
			se->dashed = pc;
			for (size_t i = 0; i < rows->n && se->n < MAX_PTS; i++) {
				const struct bjv *row = &rows->kids[i];
				const char *kind = bjv_str_at(row, "kind"), *sys = bjv_str_at(row, "system");
				if (!kind || strcmp(kind, "delivery") || !sys || strcmp(sys, systems[q]))
					continue;
				se->x[se->n] = bjv_num_at(row, "rate", NAN);
				se->y[se->n] = bjv_num_at(row, pc ? "deliver_latency.p50_us"
								  : "deliver_latency.p99_us", NAN) / 1e3;
				se->n++;
			}
			if (se->n)
				c.ns++;
		}
	if (c.ns) {
		snprintf(file, sizeof file, "r%u-rows-latency-vs-load.svg", k);
		rc |= chart_write(&c, dir, file);
		fprintf(md, "\n![latency vs load](%s)\n", file);
	}
	return rc;
}

int bench_report(int nfiles, char **files, const char *outdir)
{
	if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "parley-bench: report: mkdir %s: %s\n", outdir, strerror(errno));
		return -errno;
	}
	char path[4200];
	snprintf(path, sizeof path, "%s/index.md", outdir);
	FILE *md = fopen(path, "w");
	if (!md) {
		fprintf(stderr, "parley-bench: report: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	fprintf(md, "# parley-bench report\n\nGenerated by `parley-bench report");
	for (int i = 0; i < nfiles; i++)
		fprintf(md, " %s", files[i]);
	fprintf(md, " --out %s`. Charts are SVG written by parley-bench itself.\n", outdir);
	int rc = 0;
	for (int i = 0; i < nfiles; i++) {
		struct bjv *r;
		char err[512];
		if ((rc = bjv_load(files[i], &r, err, sizeof err)) != 0) {
			fprintf(stderr, "parley-bench: report: %s\n", err);
			break;
		}
		const char *mode = bjv_str_at(r, "mode");
		fprintf(md, "\n## %s: %s\n\n", base_name(files[i]), mode ? mode : "?");
		const char *ls = bjv_str_at(r, "machine.loadavg_at_start");
		fprintf(md, "- machine: %.0f cores, kernel %s; /proc/loadavg %s%s%s at the end (%s)\n",
			bjv_num_at(r, "machine.cores", 0),
			bjv_str_at(r, "machine.kernel") ? bjv_str_at(r, "machine.kernel") : "?",
			ls ? ls : "", ls ? " at the start, " : "",
			bjv_str_at(r, "machine.loadavg") ? bjv_str_at(r, "machine.loadavg") : "?",
			bjv_str_at(r, "machine.date_utc") ? bjv_str_at(r, "machine.date_utc") : "?");
		int mrc;
		if (mode && !strcmp(mode, "workload"))
			mrc = rep_workload(md, r, outdir, (unsigned)i);
		else if (mode && !strcmp(mode, "history"))
			mrc = rep_history(md, r, outdir, (unsigned)i);
		else if (mode && !strcmp(mode, "storage"))
			mrc = rep_storage(md, r, outdir, (unsigned)i);
		else if (mode && !strcmp(mode, "plan"))
			mrc = rep_plan(md, r, outdir, (unsigned)i);
		else if (bjv_get(r, "rows"))
			mrc = rep_rows(md, r, outdir, (unsigned)i);
		else {
			fprintf(md, "(no charts for this mode)\n");
			mrc = 0;
		}
		bjv_free(r);
		if (mrc) {
			fprintf(stderr, "parley-bench: report: %s: not a complete %s result\n", files[i],
				mode ? mode : "?");
			rc = mrc;
			break;
		}
	}
	if (fclose(md) != 0 && !rc)
		rc = -PARLEY_EIO;
	if (!rc)
		printf("parley-bench: report written to %s/index.md\n", outdir);
	return rc;
}
