/*
 * bench_compaction.c — parley-bench's `compaction` mode: what compaction
 * costs the SENDs that arrive while it runs, through a real parleyd.
 *
 * Load: --producers N connections (first value; default 16), each a sender
 * in its own 1:1 conversation; SENDs go out open loop at --rate R per second
 * in total (first value; default 2000), slot k on connection k mod N, with
 * at most HELLO_OK max_inflight outstanding per connection (a full window
 * delays the schedule; latency is still taken from the intended time, so a
 * stall shows as latency, not as a lower rate).
 *
 * Phases (after --warmup): an idle phase of --seconds, then a compaction
 * phase of --seconds during which a second thread calls
 * POST /admin/compact on the admin port back to back (--compact-gap S
 * between the end of one call and the next; default 0.1), repeated
 * --repeat N times (idle, compaction, idle, compaction, ...: the two kinds
 * interleave so a drift of the shared machine's load hits both): every call
 * flushes every partition's memtable into a segment and merges all its
 * segments (server/admin.c). SEND_ACK latency is recorded by the phase of
 * the intended send time; the report gives p50/p99/p99.9/max of both
 * phases, their ratios and issue 10's goal (compaction p99 <= 1.2 x idle),
 * plus how many compactions ran and the fraction of the compaction phase
 * during which one was in flight (a ratio from a phase where compaction
 * barely ran would say nothing). A call still running when its phase ends
 * runs on into the next idle phase; that spill is reported, not hidden.
 *
 * The server: started here with admin_compact = 1 on a free admin port
 * (--parleyd), or --connect HOST:PORT --admin-port P of a parleyd started
 * with admin_compact = 1. --tls sends over the TLS port instead.
 *
 * Threads: the main thread drives the connections; one admin thread makes
 * the HTTP calls (it shares only the atomics/results of struct cmp_admin,
 * read by the main thread after pthread_join).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_loop.h"
#include "bench_http.h"
#include "bench_json.h"
#include "bench_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "parley_common.h"

#define CMP_MAGIC 0x636f6d7062656e63ull /* "compbenc" */
#define CMP_MAX_SLOTS (32ull << 20)      /* intended-time slots (256 MiB) */
#define CMP_HANDSHAKE_MS 5000
#define CMP_ADMIN_TIMEOUT_S 120          /* one POST /admin/compact at most */
#define CMP_GOAL_P99_RATIO 1.2           /* issue 10: compaction p99 <= 1.2 x idle */

/* ---- admin thread ------------------------------------------------------------ */

struct cmp_admin {
	char host[64];
	int port;
	uint64_t first_ns;         /* start of the first compaction phase */
	uint64_t phase_ns;         /* length of each phase */
	unsigned rounds;           /* compaction phases, every other phase */
	uint64_t gap_ns;
	/* results (read after join) */
	uint64_t calls, ok, failed;
	uint64_t busy_ns;          /* in-flight time inside compaction phases */
	uint64_t spill_ns;         /* in-flight time after a compaction phase ended */
	int last_status;           /* HTTP status or negative error */
	struct bench_hist dur;     /* duration of each call */
};

/* One POST /admin/compact: the HTTP status (the answer comes when the
 * compaction is done) or a negative error. */
static int admin_post(const char *host, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = {CMP_ADMIN_TIMEOUT_S, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	int rc;
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		rc = -errno;
		goto out;
	}
	char req[160];
	int n = snprintf(req, sizeof req,
			 "POST /admin/compact HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n"
			 "Connection: close\r\n\r\n", host);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		rc = -EIO;
		goto out;
	}
	char buf[512];
	size_t len = 0;
	rc = -EAGAIN;
	while (rc == -EAGAIN && len < sizeof buf) {
		ssize_t r = recv(fd, buf + len, sizeof buf - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = r == 0 ? -EPROTO : -errno;
			break;
		}
		len += (size_t)r;
		rc = bench_http_status(buf, len);
	}
	if (rc == -EAGAIN)
		rc = -EPROTO;
out:
	close(fd);
	return rc;
}

static void *admin_main(void *arg)
{
	struct cmp_admin *ad = arg;
	for (unsigned r = 0; r < ad->rounds; r++) {
		uint64_t start = ad->first_ns + 2ull * r * ad->phase_ns;
		uint64_t end = start + ad->phase_ns;
		bench_sleep_until_ns(start);
		/* the first call of a round is made even when this thread woke
		 * after the phase had ended (a loaded machine can hold it back
		 * that long): a round without a compaction would fail the run
		 * on scheduling alone; such a call counts as spill */
		for (bool first = true;; first = false) {
			uint64_t t = parley_mono_ns();
			if (t >= end && !first)
				break;
			int st = admin_post(ad->host, ad->port);
			uint64_t e = parley_mono_ns();
			ad->calls++;
			ad->last_status = st;
			if (st == 200)
				ad->ok++;
			else
				ad->failed++;
			bench_hist_record(&ad->dur, e - t);
			uint64_t hi = e < end ? e : end;
			ad->busy_ns += hi > t ? hi - t : 0;
			uint64_t from = t > end ? t : end;
			ad->spill_ns += e > from ? e - from : 0;
			if (st != 200 && ad->failed >= 3 && ad->ok == 0)
				return NULL; /* admin_compact off, or no admin port */
			bench_sleep_until_ns(e + ad->gap_ns);
		}
	}
	return NULL;
}

/* ---- load ---------------------------------------------------------------------- */

struct cmp_conn {
	struct wire_conn w;
	char conv[128];
	uint32_t outstanding;
};

/* Latency of one kind of phase (idle, compaction), over all its rounds. */
struct cmp_phase {
	const char *name;
	uint64_t slots;            /* scheduled in phases of this kind */
	struct bench_hist lat;     /* SEND_ACK - intended */
};

/* Kind (0 idle, 1 compaction) of the phase holding intended time t, or -1
 * outside the measured window [start, start + 2 * rounds * phase). */
static int phase_of(uint64_t t, uint64_t start, uint64_t phase_ns, unsigned rounds)
{
	if (t < start || phase_ns == 0)
		return -1;
	uint64_t i = (t - start) / phase_ns;
	return i < 2ull * rounds ? (int)(i & 1) : -1;
}

static double q_us(const struct bench_hist *h, double q)
{
	return (double)bench_hist_quantile(h, q) / 1e3;
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : NAN;
}

int bench_compaction(const struct bench_cfg *cfg)
{
	uint32_t nconn = cfg->n_producers ? cfg->producers[0] : 16;
	double rate = cfg->n_rates ? cfg->rates[0] : 2000;
	uint32_t payload = cfg->n_payloads ? cfg->payloads[0] : 100;
	unsigned rounds = cfg->repeat ? cfg->repeat : 1;
	double total_s = cfg->warmup + 2 * rounds * cfg->seconds;
	uint64_t nslots = (uint64_t)(rate * total_s) + 1;
	if (nslots > CMP_MAX_SLOTS) {
		fprintf(stderr, "parley-bench: compaction: --rate x (warmup + 2 x seconds) = %llu "
				"sends, more than %llu\n", (unsigned long long)nslots,
			(unsigned long long)CMP_MAX_SLOTS);
		return -PARLEY_EINVAL;
	}
	struct bench_srv s;
	int rc = bench_srv_start(cfg, &s);
	if (rc != 0) {
		bench_srv_stop(&s);
		return rc;
	}
	if (s.admin_port <= 0) {
		fprintf(stderr, "parley-bench: compaction needs the admin port (--admin-port P "
				"with --connect)\n");
		bench_srv_stop(&s);
		return -PARLEY_EINVAL;
	}
	struct cmp_conn *cs = calloc(nconn, sizeof *cs);
	struct pollfd *pf = calloc(nconn, sizeof *pf);
	struct parley_msg *m = malloc(sizeof *m);
	uint8_t *body = malloc(payload);
	uint64_t *intended = calloc(nslots, sizeof *intended);
	struct cmp_phase *ph = calloc(2, sizeof *ph);
	struct cmp_admin *ad = calloc(1, sizeof *ad);
	struct bench_hist *lag = malloc(sizeof *lag);
	SSL_CTX *tctx = cfg->tls ? wire_tls_client_ctx() : NULL;
	char user[64], peer[64], errtxt[160] = "";
	uint32_t window = 64, opened = 0;
	bool admin_started = false;
	pthread_t admin_thr;
	uint64_t sent = 0, acked = 0, errors = 0, window_waits = 0, late = 0;
	if (!cs || !pf || !m || !body || !intended || !ph || !ad || !lag || (cfg->tls && !tctx)) {
		rc = -ENOMEM;
		goto out;
	}
	bench_fill_payload(body, payload, cfg->seed);
	bench_hist_init(lag);
	for (uint32_t i = 0; i < nconn; i++)
		cs[i].w.fd = -1;
	for (uint32_t i = 0; i < nconn && rc == 0; i++, opened++) {
		struct cmp_conn *c = &cs[i];
		struct parley_hello_ok hello = {0};
		if (!(c->w.rbuf = malloc(WIRE_RBUF))) {
			rc = -ENOMEM;
			break;
		}
		snprintf(user, sizeof user, "bench-cmp-%u", i);
		snprintf(peer, sizeof peer, "bench-cmp-peer-%u", i);
		if ((rc = bench_chat_open(cfg, &c->w, m, s.host, cfg->tls ? s.tls_port : s.port,
					  cfg->tls ? tctx : NULL, user, peer, CMP_HANDSHAKE_MS,
					  &hello, c->conv, sizeof c->conv, errtxt, sizeof errtxt)))
			break;
		if (hello.max_inflight && hello.max_inflight < window)
			window = hello.max_inflight;
		pf[i].fd = c->w.fd;
		pf[i].events = POLLIN;
	}
	if (rc != 0)
		goto out;

	uint64_t t0 = parley_mono_ns();
	uint64_t phase_ns = (uint64_t)(cfg->seconds * 1e9);
	uint64_t idle_start = t0 + (uint64_t)(cfg->warmup * 1e9);
	uint64_t win_end = idle_start + 2ull * rounds * phase_ns;
	uint64_t drain_end = win_end + (uint64_t)(BENCH_DRAIN_SECONDS * 1e9);
	ph[0].name = "idle";
	ph[1].name = "compaction";
	bench_hist_init(&ph[0].lat);
	bench_hist_init(&ph[1].lat);
	snprintf(ad->host, sizeof ad->host, "%s", s.host);
	ad->port = s.admin_port;
	ad->first_ns = idle_start + phase_ns;
	ad->phase_ns = phase_ns;
	ad->rounds = rounds;
	ad->gap_ns = (uint64_t)(cfg->compact_gap_s * 1e9);
	bench_hist_init(&ad->dur);
	if ((rc = -pthread_create(&admin_thr, NULL, admin_main, ad)) != 0)
		goto out;
	admin_started = true;

	uint64_t k = 0, next = t0;
	while (rc == 0) {
		uint64_t now = parley_mono_ns();
		if (next >= win_end && acked + errors >= sent)
			break;
		if (now >= drain_end) {
			snprintf(errtxt, sizeof errtxt, "%llu SENDs unanswered after %.0fs drain",
				 (unsigned long long)(sent - acked - errors), BENCH_DRAIN_SECONDS);
			rc = -PARLEY_ETIMEDOUT;
			break;
		}
		bool window_full = false;
		while (next <= now && next < win_end && k < nslots) {
			struct cmp_conn *c = &cs[k % nconn];
			if (c->outstanding >= window) {
				window_full = true;
				window_waits++;
				break;
			}
			memset(m, 0, sizeof *m);
			m->type = PARLEY_T_SEND;
			m->send.conv = parley_str_c(c->conv);
			wire_msgid_put(m->send.client_msg_id, CMP_MAGIC, k);
			m->send.content_type = PARLEY_CT_TEXT;
			m->send.body.p = body;
			m->send.body.len = payload;
			intended[k] = next;
			uint64_t t = parley_mono_ns();
			if ((rc = wire_send(&c->w, c->w.next_req++, m)) != 0)
				break;
			if (next >= idle_start)
				bench_hist_record(lag, t - next);
			int kind = phase_of(next, idle_start, phase_ns, rounds);
			if (kind >= 0)
				ph[kind].slots++;
			c->outstanding++;
			sent++;
			k++;
			next = t0 + (uint64_t)((double)k * 1e9 / rate);
		}
		if (rc)
			break;
		int pr = bench_poll(pf, nconn,
				    next < win_end && !window_full ? next : 0);
		if (pr < 0) {
			rc = pr;
			break;
		}
		for (uint32_t i = 0; i < nconn && pr > 0 && rc == 0; i++) {
			if (!(pf[i].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			struct cmp_conn *c = &cs[i];
			bool filled = false;
			int d;
			while ((d = wire_pump(&c->w, &filled, m, NULL)) != 0) {
				if (d < 0) {
					rc = d;
					break;
				}
				uint64_t at = parley_mono_ns();
				if (m->type == PARLEY_T_SEND_ACK) {
					uint64_t idx = wire_msgid_idx(m->send_ack.client_msg_id);
					if (c->outstanding)
						c->outstanding--;
					acked++;
					if (idx >= k)
						continue;
					int kind = phase_of(intended[idx], idle_start, phase_ns,
							    rounds);
					if (kind >= 0)
						bench_hist_record(&ph[kind].lat, at - intended[idx]);
				} else if (m->type == PARLEY_T_ERROR) {
					if (c->outstanding)
						c->outstanding--;
					errors++;
					snprintf(errtxt, sizeof errtxt, "ERROR %u %.*s", m->error.code,
						 m->error.text.len, m->error.text.p);
				} else if (m->type == PARLEY_T_GOAWAY) {
					snprintf(errtxt, sizeof errtxt, "GOAWAY %u", m->goaway.reason);
					rc = -PARLEY_ECLOSED;
					break;
				}
			}
		}
	}
	/* schedule slots of the window that were never issued (window full
	 * until the end): they have no latency, so count them */
	for (uint64_t t = next; t < win_end; t = t0 + (uint64_t)((double)(++k) * 1e9 / rate))
		late++;

out:
	if (admin_started)
		pthread_join(admin_thr, NULL);
	if (rc != 0)
		fprintf(stderr, "parley-bench: compaction (%u connections, %u opened): %s %s\n",
			nconn, opened, parley_strerror(rc), errtxt);
	int ret = rc;
	if (ph && ad && lag && intended) {
		double p99r = ratio(q_us(&ph[1].lat, 0.99), q_us(&ph[0].lat, 0.99));
		double busy = cfg->seconds > 0 ?
			(double)ad->busy_ns / (rounds * cfg->seconds * 1e9) : 0;
		bool valid = rc == 0 && errors == 0 && ad->ok > 0 && ph[0].lat.count > 0 &&
			     ph[1].lat.count > 0;
		printf("\n### compaction impact: SEND_ACK latency, open loop at %.0f SENDs/s over "
		       "%u %s connections, %u B bodies (latency from the intended send time; "
		       "%u round%s of idle + compaction phases)\n\n",
		       rate, nconn, cfg->tls ? "TLS" : "TCP", payload, rounds, rounds > 1 ? "s" : "");
		printf("| phase | seconds | scheduled | acked | p50 µs | p99 µs | p99.9 µs | max µs |\n"
		       "|---|---:|---:|---:|---:|---:|---:|---:|\n");
		for (int p = 0; p < 2; p++)
			printf("| %s | %.1f | %llu | %llu | %.1f | %.1f | %.1f | %.1f |\n",
			       ph[p].name, rounds * cfg->seconds, (unsigned long long)ph[p].slots,
			       (unsigned long long)ph[p].lat.count, q_us(&ph[p].lat, 0.5),
			       q_us(&ph[p].lat, 0.99), q_us(&ph[p].lat, 0.999),
			       (double)ph[p].lat.max_ns / 1e3);
		printf("\n| compaction ÷ idle p50 | p99 | p99.9 | goal p99 ≤ %.1f× | "
		       "POST /admin/compact calls (ok) | call p50 / max ms | compaction in flight "
		       "| spilled into idle ms | pacer lag p99 µs | window waits | errors |\n"
		       "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
		       CMP_GOAL_P99_RATIO);
		printf("| %.2f× | %.2f× | %.2f× | %s | %llu (%llu) | %.1f / %.1f | %.0f%% of the "
		       "phase | %.0f | %.1f | %llu | %llu%s%s |\n",
		       ratio(q_us(&ph[1].lat, 0.5), q_us(&ph[0].lat, 0.5)), p99r,
		       ratio(q_us(&ph[1].lat, 0.999), q_us(&ph[0].lat, 0.999)),
		       !valid ? "no verdict (run incomplete)" :
		       !ad->busy_ns ? "no verdict (no compaction inside its phase)" :
		       p99r <= CMP_GOAL_P99_RATIO ? "met" : "missed",
		       (unsigned long long)ad->calls, (unsigned long long)ad->ok,
		       q_us(&ad->dur, 0.5) / 1e3, (double)ad->dur.max_ns / 1e6, busy * 100,
		       (double)ad->spill_ns / 1e6, q_us(lag, 0.99), (unsigned long long)window_waits,
		       (unsigned long long)errors, errtxt[0] ? ": " : "", errtxt);
		if (ad->calls && !ad->ok)
			fprintf(stderr, "parley-bench: compaction: POST /admin/compact answered %d "
					"(is admin_compact = 1?)\n", ad->last_status);
		if (late)
			printf("\n%llu scheduled SENDs were never issued (connection windows full "
			       "until the end)\n", (unsigned long long)late);
		struct bench_json *js = bench_sink();
		if (js) {
			for (int p = 0; p < 2; p++) {
				bj_obj(js, NULL);
				bj_str(js, "kind", "compaction_phase");
				bj_str(js, "system", cfg->tls ? "parleyd-tls" : "parleyd");
				bj_str(js, "phase", ph[p].name);
				bj_num(js, "rate", rate);
				bj_u64(js, "connections", nconn);
				bj_u64(js, "payload", payload);
				bj_num(js, "seconds", rounds * cfg->seconds);
				bj_u64(js, "rounds", rounds);
				bj_u64(js, "scheduled", ph[p].slots);
				bj_u64(js, "acked", ph[p].lat.count);
				bj_hist(js, "ack_latency", &ph[p].lat);
				bj_end(js);
			}
			bj_obj(js, NULL);
			bj_str(js, "kind", "compaction_ratio");
			bj_num(js, "p50_ratio", ratio(q_us(&ph[1].lat, 0.5), q_us(&ph[0].lat, 0.5)));
			bj_num(js, "p99_ratio", p99r);
			bj_num(js, "p999_ratio",
			       ratio(q_us(&ph[1].lat, 0.999), q_us(&ph[0].lat, 0.999)));
			bj_num(js, "goal_p99_ratio", CMP_GOAL_P99_RATIO);
			if (valid && ad->busy_ns)
				bj_bool(js, "goal_met", p99r <= CMP_GOAL_P99_RATIO);
			else
				bj_null(js, "goal_met");
			bj_u64(js, "compact_calls", ad->calls);
			bj_u64(js, "compact_ok", ad->ok);
			bj_num(js, "compact_gap_s", cfg->compact_gap_s);
			bj_hist(js, "compact_call_duration", &ad->dur);
			bj_num(js, "compaction_in_flight_fraction", busy);
			bj_num(js, "compaction_spill_into_idle_ms", (double)ad->spill_ns / 1e6);
			bj_hist(js, "pacer_lag", lag);
			bj_u64(js, "window", window);
			bj_u64(js, "window_waits", window_waits);
			bj_u64(js, "never_issued", late);
			bj_u64(js, "sent", sent);
			bj_u64(js, "acked", acked);
			bj_u64(js, "errors", errors);
			bj_bool(js, "ok", valid);
			bj_end(js);
		}
		if (ret == 0 && !valid)
			ret = -PARLEY_EIO;
	}
	if (cs)
		for (uint32_t i = 0; i < nconn; i++)
			if (cs[i].w.rbuf) {
				wire_close(&cs[i].w);
				free(cs[i].w.rbuf);
			}
	free(cs);
	free(pf);
	free(m);
	free(body);
	free(intended);
	free(ph);
	free(ad);
	free(lag);
	SSL_CTX_free(tctx);
	bench_srv_stop(&s);
	return ret;
}
