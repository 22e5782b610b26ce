/*
 * bench_workload.c — `parley-bench workload --profile FILE`: a mixed chat
 * workload from a profile (bench_profile.h), driven open loop through
 * libparley (proto/parley_client.h) against a real parleyd.
 *
 * What is simulated (a scaled-down slice of the profile's population):
 *   - U users (--users, default min(profile users, 16)); user i has
 *     round(devices_per_user) devices (1..4), each its own libparley client
 *     with its own device id. Device 0 is always connected (it is the one
 *     sending); each other device is connected with probability
 *     online_fraction (seeded). Every connected device subscribes to its
 *     inbox (SYNC), so delivery goes to every connected device.
 *   - user i's 1:1 conversations are with users i+1 .. i+k (mod U),
 *     k = min(conversations_per_user, U - 1), opened with CONV_OPEN.
 *   - operations, open loop: sends at the target rate (--rate LIST, each
 *     a run point), plus history reads (last page, 50) and reconnects of
 *     device 0 in the profile's proportions per message:
 *       history_reads_per_user_day / messages_per_user_day and
 *       reconnects_per_device_day * devices / messages_per_user_day.
 *     Operation k is due at t0 + k / op_rate; latency is measured from
 *     that intended time (no coordinated omission), including any time the
 *     driver thread was busy with an earlier operation.
 *   - bodies: sizes from body_bytes, text from the Debian fortunes; each
 *     body starts with "T<16 hex digits>" = its intended send time, so the
 *     receiving device measures send -> delivered-event latency from the
 *     intended time as well.
 * What is NOT exercised (the server lacks the feature) is said in the
 * output and the JSON, never faked: group messages (group_share of the
 * profile's messages; the driven rate is 1:1 messages only), read and
 * delivery receipts, typing notifications.
 *
 * Scenario --storm (reconnect storm): at the middle of each measured window
 * every connected device drops its connection and reconnects at once, as
 * after a network blip or a load balancer restart; the time from the storm
 * to each device being back (subscribed) is reported, and the send/event
 * latencies of that window show the storm's impact.
 *
 * Threads: --threads driver threads (default 4); user i and all its
 * devices belong to thread i % threads, which alone calls into their
 * clients. Between operations a thread polls its clients' sockets and
 * processes events. Counters for the live progress line are atomics;
 * histograms are per thread and merged after the point.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench.h"
#include "bench_json.h"
#include "bench_profile.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parley_client.h"
#include "parley_common.h"

#define WL_MAX_USERS 256u
#define WL_MAX_DEVICES 4u
#define WL_MAX_CONVS 32u
#define WL_MAX_THREADS 16u
#define WL_MAX_TIMELINE 128u /* seconds of throughput timeline */
#define WL_DRAIN_NS 1000000000ull
#define WL_MAX_BODY 4096u    /* cap on a driven body (profile sizes above are cut) */
#define WL_HIST_LIMIT 50

struct wl_stats {
	struct bench_hist send, event, hist, reconn, storm;
	uint64_t storm_ok, storm_err;
	uint64_t sends_ok, send_err, hist_ok, hist_err, reconn_ok, reconn_err;
	uint64_t events, events_unmeasured, drops, not_sent;
	uint64_t timeline[WL_MAX_TIMELINE];
};

struct wl_thread;

struct wl_dev {
	struct parley_client *c;
	struct wl_thread *t;
	bool online;
};

struct wl_user {
	char name[32];
	unsigned ndev;
	struct wl_dev dev[WL_MAX_DEVICES];
	unsigned nconv;
	char conv[WL_MAX_CONVS][72];
};

struct wl_point {
	double rate;        /* target sends/s */
	double op_rate;     /* all operations/s */
	uint64_t t0_ns;     /* operation 0 due */
	uint64_t meas_ns;   /* measured window start */
	uint64_t end_ns;    /* measured window end: no op due later is issued */
	uint64_t storm_ns;  /* --storm: every connected device reconnects then (0 = no) */
};

struct wl_thread {
	pthread_t tid;
	unsigned idx;
	struct wl_ctx *ctx;
	struct wl_stats *st;
	_Atomic uint64_t p_sends, p_events, p_errors, p_ops;
	uint64_t seed;
};

struct wl_ctx {
	const struct bench_cfg *cfg;
	struct bench_profile prof;
	struct bench_srv srv;
	unsigned nusers, nthreads;
	struct wl_user *users;
	struct wl_thread th[WL_MAX_THREADS];
	struct wl_point pt;
	double p_hist, p_reconn; /* per send */
	unsigned devices_total, devices_online;
};

static uint64_t now_ns(void)
{
	return parley_mono_ns();
}

static void on_event(void *user, const struct parley_event *ev)
{
	struct wl_dev *d = user;
	struct wl_thread *t = d->t;
	if (!t || !t->st || ev->kind != PARLEY_EV_MESSAGE)
		return;
	uint64_t now = now_ns();
	const struct wl_point *pt = &t->ctx->pt;
	uint64_t intended = 0;
	bool ok = ev->body.len >= 17 && ev->body.p[0] == 'T';
	for (unsigned i = 1; ok && i < 17; i++) {
		uint8_t c = ev->body.p[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (v < 0)
			ok = false;
		intended = intended * 16 + (uint64_t)(v < 0 ? 0 : v);
	}
	atomic_fetch_add(&t->p_events, 1);
	if (ok && intended >= pt->meas_ns && intended < pt->end_ns) {
		t->st->events++;
		bench_hist_record(&t->st->event, now > intended ? now - intended : 0);
	} else {
		t->st->events_unmeasured++;
	}
}

/* Polls this thread's connected clients until `until` (absolute ns),
 * processing what arrives. */
static void pump(struct wl_ctx *x, struct wl_thread *t, uint64_t until)
{
	struct pollfd pf[WL_MAX_USERS * WL_MAX_DEVICES];
	struct wl_dev *who[WL_MAX_USERS * WL_MAX_DEVICES];
	do {
		unsigned n = 0;
		for (unsigned u = t->idx; u < x->nusers; u += x->nthreads)
			for (unsigned d = 0; d < x->users[u].ndev; d++) {
				struct wl_dev *dv = &x->users[u].dev[d];
				int fd = dv->online ? parley_client_fd(dv->c) : -1;
				if (fd < 0)
					continue;
				pf[n] = (struct pollfd){.fd = fd, .events = POLLIN};
				who[n++] = dv;
			}
		uint64_t now = now_ns();
		int64_t left = (int64_t)(until - now);
		if (left <= 0)
			left = 0;
		struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
		int r = ppoll(pf, n, &ts, NULL);
		if (r <= 0)
			continue;
		for (unsigned i = 0; i < n; i++) {
			if (!pf[i].revents)
				continue;
			int rc = parley_client_process(who[i]->c);
			if (rc == -PARLEY_ECLOSED) {
				t->st->drops++;
				atomic_fetch_add(&t->p_errors, 1);
				(void)parley_client_reconnect(who[i]->c);
			}
		}
	} while (now_ns() < until);
}

static void op_send(struct wl_ctx *x, struct wl_thread *t, struct wl_user *u, uint64_t intended,
		    struct parley_rng *rng, bool measured)
{
	uint8_t body[WL_MAX_BODY];
	size_t len = (size_t)bp_dist_pick(&x->prof.body_bytes,
					  (double)parley_rng_next(rng) / 18446744073709551616.0);
	if (len < 18)
		len = 18;
	if (len > WL_MAX_BODY)
		len = WL_MAX_BODY;
	bench_text_body(body, len, parley_rng_next(rng));
	char hdr[20];
	snprintf(hdr, sizeof hdr, "T%016llx", (unsigned long long)intended);
	memcpy(body, hdr, 17);
	body[17] = ' ';
	const char *conv = u->conv[parley_rng_below(rng, u->nconv)];
	struct parley_send_result res;
	int rc = parley_client_send(u->dev[0].c, conv, 1, body, len, &res);
	uint64_t now = now_ns();
	atomic_fetch_add(&t->p_ops, 1);
	if (rc != 0) {
		atomic_fetch_add(&t->p_errors, 1);
		if (measured)
			t->st->send_err++;
		return;
	}
	atomic_fetch_add(&t->p_sends, 1);
	if (!measured)
		return;
	t->st->sends_ok++;
	bench_hist_record(&t->st->send, now - intended);
	uint64_t sec = (now - x->pt.meas_ns) / 1000000000ull;
	if (sec < WL_MAX_TIMELINE)
		t->st->timeline[sec]++;
}

/* Counts a finished HISTORY or reconnect intended at `due`: progress counters
 * always, the result and its latency only inside the measured window. */
static void op_done(struct wl_thread *t, int rc, uint64_t due, bool measured, uint64_t *ok,
		    uint64_t *err, struct bench_hist *h)
{
	uint64_t now = now_ns();
	atomic_fetch_add(&t->p_ops, 1);
	if (rc)
		atomic_fetch_add(&t->p_errors, 1);
	if (!measured)
		return;
	if (rc) {
		(*err)++;
	} else {
		(*ok)++;
		bench_hist_record(h, now - due);
	}
}

static void *thread_main(void *arg)
{
	struct wl_thread *t = arg;
	struct wl_ctx *x = t->ctx;
	struct parley_rng rng = {t->seed};
	unsigned mine = 0;
	for (unsigned u = t->idx; u < x->nusers; u += x->nthreads)
		mine++;
	if (!mine)
		return NULL;
	double per = 1.0 / (1 + x->p_hist + x->p_reconn);
	bool stormed = !x->pt.storm_ns;
	for (uint64_t k = t->idx;; k += x->nthreads) {
		uint64_t due = x->pt.t0_ns + (uint64_t)((double)k / x->pt.op_rate * 1e9);
		if (due >= x->pt.end_ns)
			break;
		if (!stormed && due >= x->pt.storm_ns) {
			/* reconnect storm: every connected device of this thread
			 * drops its connection and reconnects (TCP, HELLO, AUTH,
			 * SYNC resume) now; latency from the storm's start */
			if (now_ns() < x->pt.storm_ns)
				pump(x, t, x->pt.storm_ns);
			for (unsigned ui = t->idx; ui < x->nusers; ui += x->nthreads)
				for (unsigned d = 0; d < x->users[ui].ndev; d++) {
					struct wl_dev *dv = &x->users[ui].dev[d];
					if (!dv->online)
						continue;
					parley_client_close(dv->c);
				}
			for (unsigned ui = t->idx; ui < x->nusers; ui += x->nthreads)
				for (unsigned d = 0; d < x->users[ui].ndev; d++) {
					struct wl_dev *dv = &x->users[ui].dev[d];
					if (!dv->online)
						continue;
					int rc = parley_client_reconnect(dv->c);
					if (rc) {
						t->st->storm_err++;
						atomic_fetch_add(&t->p_errors, 1);
					} else {
						t->st->storm_ok++;
						bench_hist_record(&t->st->storm,
								  now_ns() - x->pt.storm_ns);
					}
				}
			stormed = true;
		}
		if (now_ns() < due)
			pump(x, t, due);
		bool measured = due >= x->pt.meas_ns;
		unsigned pick = (unsigned)parley_rng_below(&rng, mine);
		struct wl_user *u = &x->users[t->idx + pick * x->nthreads];
		double r = (double)parley_rng_next(&rng) / 18446744073709551616.0;
		if (r < per) {
			op_send(x, t, u, due, &rng, measured);
		} else if (r < per * (1 + x->p_hist)) {
			const struct parley_history_page *pg;
			int rc = parley_client_history(u->dev[0].c,
						       u->conv[parley_rng_below(&rng, u->nconv)], 0,
						       WL_HIST_LIMIT, &pg);
			op_done(t, rc, due, measured, &t->st->hist_ok, &t->st->hist_err,
				&t->st->hist);
		} else {
			int rc = parley_client_reconnect(u->dev[0].c);
			op_done(t, rc, due, measured, &t->st->reconn_ok, &t->st->reconn_err,
				&t->st->reconn);
		}
		/* behind by more than the whole window: the rest is not sent */
		if (now_ns() >= x->pt.end_ns + WL_DRAIN_NS) {
			for (uint64_t j = k + x->nthreads;; j += x->nthreads) {
				uint64_t d2 = x->pt.t0_ns + (uint64_t)((double)j / x->pt.op_rate * 1e9);
				if (d2 >= x->pt.end_ns)
					break;
				if (d2 >= x->pt.meas_ns)
					t->st->not_sent++;
			}
			break;
		}
	}
	/* late events of this point's messages */
	pump(x, t, now_ns() + WL_DRAIN_NS);
	return NULL;
}

/* ---- setup ------------------------------------------------------------------------- */

static int setup_clients(struct wl_ctx *x)
{
	const struct bench_cfg *cfg = x->cfg;
	struct parley_rng rng = {cfg->seed ^ 0x5eedull};
	unsigned ndev = (unsigned)lround(x->prof.devices_per_user);
	if (ndev < 1)
		ndev = 1;
	if (ndev > WL_MAX_DEVICES)
		ndev = WL_MAX_DEVICES;
	for (unsigned i = 0; i < x->nusers; i++) {
		struct wl_user *u = &x->users[i];
		snprintf(u->name, sizeof u->name, "wl-u%03u", i);
		u->ndev = ndev;
		char tok[2048];
		int rc = bench_mint(cfg, u->name, tok, sizeof tok);
		if (rc)
			return rc;
		for (unsigned d = 0; d < ndev; d++) {
			struct wl_dev *dv = &u->dev[d];
			dv->t = &x->th[i % x->nthreads];
			double r = (double)parley_rng_next(&rng) / 18446744073709551616.0;
			dv->online = d == 0 || r < x->prof.online_fraction;
			x->devices_total++;
			if (!dv->online)
				continue;
			x->devices_online++;
			char devid[48];
			snprintf(devid, sizeof devid, "%s-d%u", u->name, d);
			struct parley_client_opts o = {
				.host = x->srv.host, .port = (uint16_t)x->srv.port, .token = tok,
				.device_id = devid, .client_name = "parley-bench workload",
				.request_timeout_ms = 5000, .call_deadline_ms = 10000,
				.on_event = on_event, .user = dv,
			};
			if ((rc = parley_client_new(&o, &dv->c)) != 0 ||
			    (rc = parley_client_connect(dv->c)) != 0 ||
			    (rc = parley_client_subscribe(dv->c, 0, NULL)) != 0) {
				fprintf(stderr, "parley-bench: workload: %s: connect/subscribe: %s\n",
					devid, parley_strerror(rc));
				return rc;
			}
		}
	}
	unsigned k = (unsigned)x->prof.conversations_per_user;
	if (k > x->nusers - 1)
		k = x->nusers - 1;
	if (k > WL_MAX_CONVS)
		k = WL_MAX_CONVS;
	for (unsigned i = 0; i < x->nusers; i++) {
		struct wl_user *u = &x->users[i];
		for (unsigned j = 1; j <= k; j++) {
			const struct parley_conv *cv;
			int rc = parley_client_conv_open(u->dev[0].c, x->users[(i + j) % x->nusers].name,
							 &cv);
			if (rc) {
				fprintf(stderr, "parley-bench: workload: conv_open %s -> %s: %s\n", u->name,
					x->users[(i + j) % x->nusers].name, parley_strerror(rc));
				return rc;
			}
			snprintf(u->conv[u->nconv++], sizeof u->conv[0], "%.*s", (int)cv->conv.len,
				 cv->conv.p);
		}
	}
	return 0;
}

/* ---- one run point -------------------------------------------------------------------- */

static double q_ms(const struct bench_hist *h, double q)
{
	return h->count ? (double)bench_hist_quantile(h, q) / 1e6 : NAN;
}

static int run_point(struct wl_ctx *x, double rate, struct wl_stats *sum, bool progress)
{
	const struct bench_cfg *cfg = x->cfg;
	x->pt.rate = rate;
	x->pt.op_rate = rate * (1 + x->p_hist + x->p_reconn);
	x->pt.t0_ns = now_ns() + 50000000ull;
	x->pt.meas_ns = x->pt.t0_ns + (uint64_t)(cfg->warmup * 1e9);
	x->pt.end_ns = x->pt.meas_ns + (uint64_t)(cfg->seconds * 1e9);
	x->pt.storm_ns = cfg->storm ? x->pt.meas_ns + (uint64_t)(cfg->seconds * 0.5e9) : 0;
	memset(sum, 0, sizeof *sum);
	bench_hist_init(&sum->storm);
	bench_hist_init(&sum->send);
	bench_hist_init(&sum->event);
	bench_hist_init(&sum->hist);
	bench_hist_init(&sum->reconn);
	for (unsigned i = 0; i < x->nthreads; i++) {
		struct wl_thread *t = &x->th[i];
		t->st = calloc(1, sizeof *t->st);
		if (!t->st)
			return -ENOMEM;
		bench_hist_init(&t->st->send);
		bench_hist_init(&t->st->event);
		bench_hist_init(&t->st->hist);
		bench_hist_init(&t->st->reconn);
		bench_hist_init(&t->st->storm);
		atomic_store(&t->p_sends, 0);
		atomic_store(&t->p_events, 0);
		atomic_store(&t->p_errors, 0);
		atomic_store(&t->p_ops, 0);
		t->seed = cfg->seed * 1000003u + i + (uint64_t)rate;
	}
	for (unsigned i = 0; i < x->nthreads; i++)
		if (pthread_create(&x->th[i].tid, NULL, thread_main, &x->th[i]) != 0)
			abort(); /* out of threads: a run without its drivers means nothing */
	if (progress) {
		uint64_t total = x->pt.end_ns - x->pt.t0_ns + WL_DRAIN_NS;
		for (;;) {
			bench_sleep_ns(500000000ull);
			uint64_t s = 0, e = 0, er = 0, o = 0;
			for (unsigned i = 0; i < x->nthreads; i++) {
				s += atomic_load(&x->th[i].p_sends);
				e += atomic_load(&x->th[i].p_events);
				er += atomic_load(&x->th[i].p_errors);
				o += atomic_load(&x->th[i].p_ops);
			}
			double el = (double)(now_ns() - x->pt.t0_ns) / 1e9;
			fprintf(stderr, "\r[workload %.0f sends/s] %5.1f/%.1f s  ops %llu  sends %llu  "
					"events %llu  errors %llu   ",
				rate, el, (double)total / 1e9, (unsigned long long)o,
				(unsigned long long)s, (unsigned long long)e, (unsigned long long)er);
			if (now_ns() >= x->pt.t0_ns + total)
				break;
		}
	}
	for (unsigned i = 0; i < x->nthreads; i++)
		pthread_join(x->th[i].tid, NULL);
	if (progress)
		fprintf(stderr, "\n");
	for (unsigned i = 0; i < x->nthreads; i++) {
		struct wl_stats *s = x->th[i].st;
		bench_hist_merge(&sum->send, &s->send);
		bench_hist_merge(&sum->event, &s->event);
		bench_hist_merge(&sum->hist, &s->hist);
		bench_hist_merge(&sum->reconn, &s->reconn);
		bench_hist_merge(&sum->storm, &s->storm);
		sum->storm_ok += s->storm_ok;
		sum->storm_err += s->storm_err;
		sum->sends_ok += s->sends_ok;
		sum->send_err += s->send_err;
		sum->hist_ok += s->hist_ok;
		sum->hist_err += s->hist_err;
		sum->reconn_ok += s->reconn_ok;
		sum->reconn_err += s->reconn_err;
		sum->events += s->events;
		sum->events_unmeasured += s->events_unmeasured;
		sum->drops += s->drops;
		sum->not_sent += s->not_sent;
		for (unsigned k = 0; k < WL_MAX_TIMELINE; k++)
			sum->timeline[k] += s->timeline[k];
		free(s);
		x->th[i].st = NULL;
	}
	return 0;
}

static void print_row(const char *what, const struct bench_hist *h, uint64_t ok, uint64_t err,
		      double secs)
{
	printf("| %s | %llu | %llu | %.1f | %.2f | %.2f | %.2f | %.2f |\n", what,
	       (unsigned long long)ok, (unsigned long long)err, (double)ok / secs, q_ms(h, 0.5),
	       q_ms(h, 0.99), q_ms(h, 0.999), h->count ? (double)h->max_ns / 1e6 : NAN);
}

/* One operation kind of a point: {"<ok_key>": ok, "<other_key>": other,
 * "per_s": ok / secs, "latency": {...}}. */
static void json_ops(struct bench_json *j, const char *name, const char *ok_key, uint64_t ok,
		     const char *other_key, uint64_t other, double secs,
		     const struct bench_hist *h)
{
	bj_obj(j, name);
	bj_u64(j, ok_key, ok);
	bj_u64(j, other_key, other);
	bj_num(j, "per_s", (double)ok / secs);
	bj_hist(j, "latency", h);
	bj_end(j);
}

static void json_point(struct bench_json *j, const struct wl_ctx *x, double rate,
		       const struct wl_stats *s)
{
	double secs = x->cfg->seconds;
	bj_obj(j, NULL);
	bj_num(j, "target_sends_per_s", rate);
	bj_num(j, "target_ops_per_s", rate * (1 + x->p_hist + x->p_reconn));
	bj_num(j, "seconds", secs);
	bj_u64(j, "not_sent", s->not_sent);
	bj_u64(j, "unexpected_disconnects", s->drops);
	json_ops(j, "sends", "ok", s->sends_ok, "errors", s->send_err, secs, &s->send);
	json_ops(j, "events", "delivered", s->events, "outside_window",
		 s->events_unmeasured, secs, &s->event);
	json_ops(j, "history_reads", "ok", s->hist_ok, "errors", s->hist_err, secs, &s->hist);
	json_ops(j, "reconnects", "ok", s->reconn_ok, "errors", s->reconn_err, secs, &s->reconn);
	if (x->cfg->storm) {
		bj_obj(j, "reconnect_storm");
		bj_num(j, "at_s", secs * 0.5);
		bj_u64(j, "ok", s->storm_ok);
		bj_u64(j, "errors", s->storm_err);
		bj_hist(j, "latency", &s->storm);
		bj_end(j);
	}
	bj_arr(j, "timeline_sends_per_s");
	unsigned n = (unsigned)ceil(secs);
	for (unsigned k = 0; k < n && k < WL_MAX_TIMELINE; k++)
		bj_u64(j, NULL, s->timeline[k]);
	bj_end(j);
	bj_end(j);
}

int bench_workload(const struct bench_cfg *cfg)
{
	struct wl_ctx *x = calloc(1, sizeof *x);
	if (!x)
		return -ENOMEM;
	x->cfg = cfg;
	char err[512];
	int rc = bench_profile_load(cfg->profile, &x->prof, err, sizeof err);
	if (rc) {
		fprintf(stderr, "parley-bench: %s\n", err);
		free(x);
		return rc;
	}
	const struct bench_profile *p = &x->prof;
	x->nusers = cfg->users ? cfg->users : (unsigned)fmin(p->users, 16);
	if (x->nusers < 2)
		x->nusers = 2;
	if (x->nusers > WL_MAX_USERS)
		x->nusers = WL_MAX_USERS;
	x->nthreads = cfg->threads ? cfg->threads : 4;
	if (x->nthreads > WL_MAX_THREADS)
		x->nthreads = WL_MAX_THREADS;
	if (x->nthreads > x->nusers)
		x->nthreads = x->nusers;
	for (unsigned i = 0; i < x->nthreads; i++) {
		x->th[i].ctx = x;
		x->th[i].idx = i;
	}
	double mpd = p->messages_per_user_day > 0 ? p->messages_per_user_day : 1;
	x->p_hist = p->history_reads_per_user_day / mpd;
	x->p_reconn = p->reconnects_per_device_day * p->devices_per_user / mpd;
	x->users = calloc(x->nusers, sizeof *x->users);
	if (!x->users) {
		free(x);
		return -ENOMEM;
	}
	bool have_text = bench_text_load(NULL) == 0;
	double rates[BENCH_MAX_LIST];
	unsigned nrates = cfg->n_rates;
	for (unsigned i = 0; i < nrates; i++)
		rates[i] = cfg->rates[i];
	if (!nrates) {
		rates[0] = 200;
		nrates = 1;
	}
	bench_watchdog_arm(60);
	rc = bench_srv_start(cfg, &x->srv);
	long rss0 = x->srv.watch_pid > 0 ? bench_vmrss_kib(x->srv.watch_pid) : -1;
	if (!rc)
		rc = setup_clients(x);
	long rss1 = x->srv.watch_pid > 0 ? bench_vmrss_kib(x->srv.watch_pid) : -1;
	bench_watchdog_arm(0);
	if (rc) {
		fprintf(stderr, "parley-bench: workload setup failed: %s\n", parley_strerror(rc));
		goto out;
	}
	printf("\n### workload \"%s\" (%s) against parleyd %s:%d\n\n", p->name, cfg->profile,
	       x->srv.host, x->srv.port);
	printf("- simulated: %u users (of the profile's %.0f), %u devices of which %u connected "
	       "and subscribed, %u 1:1 conversations per user, %u driver threads, seed %llu\n",
	       x->nusers, p->users, x->devices_total, x->devices_online, x->users[0].nconv,
	       x->nthreads, (unsigned long long)cfg->seed);
	printf("- mix per 1:1 message sent: %.3f history reads (last %d), %.3f reconnects; bodies "
	       "%s, mean %.0f B (profile), first 18 B carry the intended send time (shorter "
	       "profile sizes are sent as 18 B, longer than %u B as %u B)\n",
	       x->p_hist, WL_HIST_LIMIT, x->p_reconn,
	       have_text ? "Debian fortunes text" : "word-list filler (fortunes not installed)",
	       bp_dist_mean(&p->body_bytes), WL_MAX_BODY, WL_MAX_BODY);
	printf("- not exercised (server lacks them): group messages (%.0f%% of the profile's "
	       "messages; the driven rate is 1:1 messages only), read receipts (%.2f/msg), delivery "
	       "receipts (%.2f/msg), typing (%.2f/msg)\n",
	       p->group_share * 100, p->read_receipts_per_message,
	       p->delivery_receipts_per_message, p->typing_per_message);
	printf("- open loop: latency from the intended time of each operation; %.1f s warm-up + "
	       "%.1f s measured per rate\n", cfg->warmup, cfg->seconds);
	if (cfg->storm)
		printf("- reconnect storm: at the middle of each measured window every connected "
		       "device closes its connection and reconnects (TCP, HELLO, AUTH, SYNC resume); "
		       "its latency is from the storm's start (a device's driver thread reconnects "
		       "its devices one after another); sends keep their schedule\n");
	if (rss0 > 0 && rss1 > 0)
		printf("- server VmRSS %ld KiB before the clients, %ld KiB with %u connected and "
		       "subscribed devices (%.1f KiB per device, includes conversation state)\n",
		       rss0, rss1, x->devices_online, (double)(rss1 - rss0) / x->devices_online);
	printf("\n| target sends/s | operation | ok | errors | per s | p50 ms | p99 ms | p99.9 ms "
	       "| max ms |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
	struct wl_stats *res = calloc(nrates, sizeof *res);
	if (!res) {
		rc = -ENOMEM;
		goto out;
	}
	bool progress = cfg->verbose || isatty(STDERR_FILENO);
	int failures = 0;
	for (unsigned i = 0; i < nrates; i++) {
		bench_watchdog_arm(cfg->warmup + cfg->seconds + 60);
		rc = run_point(x, rates[i], &res[i], progress);
		bench_watchdog_arm(0);
		if (rc)
			break;
		struct wl_stats *s = &res[i];
		char lbl[64];
		snprintf(lbl, sizeof lbl, "%.0f | send → durable ack", rates[i]);
		print_row(lbl, &s->send, s->sends_ok, s->send_err, cfg->seconds);
		snprintf(lbl, sizeof lbl, "%.0f | send → event at a device", rates[i]);
		print_row(lbl, &s->event, s->events, 0, cfg->seconds);
		snprintf(lbl, sizeof lbl, "%.0f | history last %d", rates[i], WL_HIST_LIMIT);
		print_row(lbl, &s->hist, s->hist_ok, s->hist_err, cfg->seconds);
		snprintf(lbl, sizeof lbl, "%.0f | reconnect (device 0)", rates[i]);
		print_row(lbl, &s->reconn, s->reconn_ok, s->reconn_err, cfg->seconds);
		if (cfg->storm) {
			snprintf(lbl, sizeof lbl, "%.0f | storm: all devices reconnect", rates[i]);
			print_row(lbl, &s->storm, s->storm_ok, s->storm_err, cfg->seconds);
		}
		if (s->not_sent || s->drops)
			printf("| %.0f | (driver) | %llu operations not sent (driver behind by more "
			       "than the window), %llu unexpected disconnects | | | | | | |\n",
			       rates[i], (unsigned long long)s->not_sent,
			       (unsigned long long)s->drops);
		if (s->send_err || s->hist_err || s->reconn_err || s->storm_err)
			failures++;
	}
	if (!rc && cfg->json) {
		FILE *f = fopen(cfg->json, "w");
		if (!f) {
			fprintf(stderr, "parley-bench: --json %s: %s\n", cfg->json, strerror(errno));
			rc = -errno;
		} else {
			struct bench_json j;
			bj_init(&j, f);
			bj_str(&j, "tool", "parley-bench");
			bj_str(&j, "mode", "workload");
			bj_machine(&j, "machine");
			bj_obj(&j, "settings");
			bj_str(&j, "profile_file", cfg->profile);
			bj_str(&j, "profile", p->name);
			bj_num(&j, "profile_users", p->users);
			bj_num(&j, "devices_per_user", p->devices_per_user);
			bj_num(&j, "online_fraction", p->online_fraction);
			bj_num(&j, "messages_per_user_day", p->messages_per_user_day);
			bj_num(&j, "peak_factor", p->peak_factor);
			bj_num(&j, "body_bytes_mean", bp_dist_mean(&p->body_bytes));
			bj_u64(&j, "users_simulated", x->nusers);
			bj_u64(&j, "devices", x->devices_total);
			bj_u64(&j, "devices_connected", x->devices_online);
			bj_u64(&j, "conversations_per_user", x->users[0].nconv);
			bj_u64(&j, "threads", x->nthreads);
			bj_num(&j, "history_reads_per_send", x->p_hist);
			bj_num(&j, "reconnects_per_send", x->p_reconn);
			bj_num(&j, "warmup_s", cfg->warmup);
			bj_num(&j, "seconds", cfg->seconds);
			bj_u64(&j, "seed", cfg->seed);
			bj_str(&j, "bodies", have_text ? "fortunes" : "filler");
			bj_end(&j);
			bj_obj(&j, "server");
			bj_str(&j, "system", "parleyd");
			bj_str(&j, "binary", cfg->connect ? "(running, --connect)" : cfg->parleyd);
			bj_str(&j, "args", cfg->connect ? cfg->connect : cfg->parleyd_args);
			bj_str(&j, "guarantee", "single node; SEND_ACK after the WAL batch's fdatasync");
			if (rss0 > 0 && rss1 > 0) {
				bj_num(&j, "vmrss_kib_before_clients", (double)rss0);
				bj_num(&j, "vmrss_kib_with_clients", (double)rss1);
				bj_num(&j, "bytes_per_connected_device",
				       (double)(rss1 - rss0) * 1024 / x->devices_online);
			}
			bj_end(&j);
			bj_arr(&j, "not_exercised");
			static const char *const what[] = {"group messages", "read receipts",
							   "delivery receipts", "typing"};
			const double share[] = {p->group_share, p->read_receipts_per_message,
						p->delivery_receipts_per_message, p->typing_per_message};
			for (unsigned k = 0; k < 4; k++) {
				bj_obj(&j, NULL);
				bj_str(&j, "feature", what[k]);
				bj_num(&j, "profile_value", share[k]);
				bj_str(&j, "why", "server lacks it");
				bj_end(&j);
			}
			bj_end(&j);
			bj_arr(&j, "points");
			for (unsigned i = 0; i < nrates; i++)
				json_point(&j, x, rates[i], &res[i]);
			bj_end(&j);
			rc = bj_finish(&j);
			if (fclose(f) != 0 && !rc)
				rc = -PARLEY_EIO;
		}
	}
	free(res);
	if (!rc && failures)
		rc = -PARLEY_EIO;
out:
	for (unsigned i = 0; i < x->nusers; i++)
		for (unsigned d = 0; d < x->users[i].ndev; d++)
			parley_client_free(x->users[i].dev[d].c);
	bench_srv_stop(&x->srv);
	free(x->users);
	free(x);
	return rc;
}
