/*
 * bench_groups.c — `parley-bench groups`: group fan-out through a real
 * parleyd.
 *
 * Throughput is counted from the window's start until the last delivery
 * (when parleyd is saturated its queues drain after the window; that work
 * counts, and so does the CPU it takes): deliveries/s over that span, and
 * deliveries per parleyd CPU-second over the same span.
 *
 * One group of --count members (default 500), every member online with one
 * device (a raw connection subscribed live), one sender (a second device of
 * the owner) SENDing open loop at each --rate (messages/s; default 200).
 * Each message must reach every member's device once. Reported per rate:
 * deliveries in the measured window, deliveries per second (wall clock)
 * and per parleyd CPU-second (utime + stime from /proc, i.e. per core
 * fully used), send -> deliver latency over every (message, member) pair
 * from the message's intended send time (open loop), and missing or
 * duplicate deliveries (a failure).
 *
 * The client is one thread polling every connection; on a machine with
 * few cores it competes with parleyd for CPU (the report says how much
 * CPU each used). The server is started with the default arguments
 * (rate limits off); a group above its group_max_members (default 1024)
 * is refused.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench.h"
#include "bench_wire.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "parley_common.h"

#define G_MAGIC 0x67726f7570626e63ull /* "groupbnc" */
#define G_TIMEOUT_MS 10000
#define G_ACK_EVERY 64

/* utime + stime of pid in seconds, or -1. */
static double cpu_seconds(pid_t pid)
{
	if (pid <= 0)
		return -1;
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long ut = 0, st = 0;
	/* fields after the command: state(3) ... utime(14) stime(15) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		   &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int conn_open(const struct bench_cfg *cfg, const struct bench_srv *s,
		     struct wire_conn *c, const char *user, const char *device)
{
	c->fd = -1;
	c->rbuf = malloc(WIRE_RBUF);
	if (!c->rbuf)
		return -ENOMEM;
	return bench_session_open(cfg, c, s->host, s->port, NULL, user, device,
				  G_TIMEOUT_MS, NULL);
}

/* Sends m on c and waits for its reply (type want, else the error). */
static int call(struct wire_conn *c, struct parley_msg *m, uint16_t want)
{
	int rc = wire_send(c, c->next_req++, m);
	if (rc)
		return rc;
	for (;;) {
		rc = wire_recv(c, G_TIMEOUT_MS, m, NULL);
		if (rc)
			return rc;
		if (m->type == want)
			return 0;
		if (m->type == PARLEY_T_ERROR) {
			fprintf(stderr, "parley-bench: groups: %.*s\n",
				(int)m->error.text.len, m->error.text.p);
			return -(int)m->error.code;
		}
	}
}

struct grun {
	uint32_t n;
	struct wire_conn *rc;     /* [n] member devices */
	uint64_t *last_inbox, *acked_inbox;
};

static int group_run(const struct bench_cfg *cfg, const struct bench_srv *s,
		     struct wire_conn *snd, const char *conv, struct grun *g,
		     double rate, int round)
{
	uint64_t nslots = (uint64_t)(rate * (cfg->warmup + cfg->seconds)) + 1;
	uint64_t *intended = calloc(nslots, sizeof *intended);
	uint8_t *seen = calloc((size_t)g->n * nslots, 1);
	struct bench_hist *hd = malloc(sizeof *hd);
	struct parley_msg *m = malloc(sizeof *m);
	struct pollfd *pf = calloc(g->n + 1, sizeof *pf);
	uint8_t body[100];
	int rc = 0;
	if (!intended || !seen || !hd || !m || !pf) {
		rc = -ENOMEM;
		goto out;
	}
	bench_hist_init(hd);
	bench_fill_payload(body, sizeof body, cfg->seed);
	pf[0] = (struct pollfd){snd->fd, POLLIN, 0};
	for (uint32_t i = 0; i < g->n; i++)
		pf[1 + i] = (struct pollfd){g->rc[i].fd, POLLIN, 0};
	uint64_t t0 = parley_mono_ns();
	uint64_t win_start = t0 + (uint64_t)(cfg->warmup * 1e9);
	uint64_t win_end = win_start + (uint64_t)(cfg->seconds * 1e9);
	uint64_t drain_end = win_end + (uint64_t)(BENCH_DRAIN_SECONDS * 1e9);
	uint64_t k = 0, next = t0, sent = 0, acked = 0, errors = 0;
	uint64_t delivered = 0, dups = 0, in_win_deliv = 0;
	double cpu0 = -1, cpu1 = -1, me0 = 0, me1 = 0;
	uint32_t window = 64;
	pid_t pid = s->pid > 0 ? s->pid : s->watch_pid;
	bool started = false;
	uint64_t after_start = 0; /* deliveries that arrived after win_start */
	while (rc == 0) {
		uint64_t now = parley_mono_ns();
		if (!started && now >= win_start) {
			cpu0 = cpu_seconds(pid);
			me0 = self_cpu_seconds();
			started = true;
		}
		if (next >= win_end && acked + errors >= sent &&
		    delivered + dups >= (sent - errors) * g->n)
			break;
		if (now >= drain_end)
			break;
		while (next <= now && next < win_end && k < nslots &&
		       sent - acked - errors < window) {
			memset(m, 0, sizeof *m);
			m->type = PARLEY_T_SEND;
			m->send.conv = parley_str_c(conv);
			wire_msgid_put(m->send.client_msg_id, G_MAGIC + (uint64_t)round, k);
			m->send.content_type = PARLEY_CT_TEXT;
			m->send.body = (struct parley_bytes){body, sizeof body};
			intended[k] = next;
			if ((rc = wire_send(snd, snd->next_req++, m)) != 0)
				break;
			sent++;
			k++;
			next = t0 + (uint64_t)((double)k * 1e9 / rate);
		}
		int pr = poll(pf, g->n + 1, 1);
		if (pr < 0 && errno != EINTR) {
			rc = -errno;
			break;
		}
		for (uint32_t i = 0; pr > 0 && i <= g->n && rc == 0; i++) {
			if (!(pf[i].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			struct wire_conn *c = i ? &g->rc[i - 1] : snd;
			bool filled = false;
			int d;
			while ((d = wire_pump(c, &filled, m, NULL)) != 0) {
				if (d < 0 && d != -PARLEY_EVERSION) {
					rc = d;
					break;
				}
				if (d < 0)
					continue;
				uint64_t at = parley_mono_ns();
				if (m->type == PARLEY_T_SEND_ACK) {
					acked++;
				} else if (m->type == PARLEY_T_ERROR) {
					errors++;
				} else if (m->type == PARLEY_T_EVENT && i) {
					uint32_t u = i - 1;
					/* inbox_seq 0: a large group's live EVENT
					 * (read fan-out), not an inbox event */
					if (m->event.inbox_seq)
						g->last_inbox[u] = m->event.inbox_seq;
					if (wire_msgid_tag(m->event.client_msg_id) !=
					    G_MAGIC + (uint64_t)round)
						continue;
					uint64_t idx = wire_msgid_idx(m->event.client_msg_id);
					if (idx >= k)
						continue;
					if (seen[(size_t)u * nslots + idx]++) {
						dups++;
						continue;
					}
					delivered++;
					if (at >= win_start)
						after_start++;
					if (intended[idx] >= win_start && intended[idx] < win_end) {
						bench_hist_record(hd, at - intended[idx]);
						in_win_deliv++;
					}
				}
			}
			if (i && g->last_inbox[i - 1] >= g->acked_inbox[i - 1] + G_ACK_EVERY) {
				struct parley_msg a = {.type = PARLEY_T_EVENT_ACK};
				a.event_ack.up_to_inbox_seq = g->last_inbox[i - 1];
				rc = wire_send(c, 0, &a);
				g->acked_inbox[i - 1] = g->last_inbox[i - 1];
			}
		}
	}
	/* throughput over [window start, last delivery]: when the server is
	 * saturated its queues drain after the window, and that work counts */
	uint64_t t_end = parley_mono_ns();
	cpu1 = cpu_seconds(pid);
	me1 = self_cpu_seconds();
	double span = (double)(t_end - win_start) / 1e9;
	/* acknowledge everything so the next rate starts with open windows */
	for (uint32_t i = 0; i < g->n && rc == 0; i++)
		if (g->last_inbox[i] > g->acked_inbox[i]) {
			struct parley_msg a = {.type = PARLEY_T_EVENT_ACK};
			a.event_ack.up_to_inbox_seq = g->last_inbox[i];
			rc = wire_send(&g->rc[i], 0, &a);
			g->acked_inbox[i] = g->last_inbox[i];
		}
	uint64_t expected = (sent - errors) * g->n;
	double cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
	double deliv_s = span > 0 ? (double)after_start / span : 0;
	char cpus[32] = "n/a", per[32] = "n/a";
	if (cpu > 0) {
		snprintf(cpus, sizeof cpus, "%.2f", cpu);
		snprintf(per, sizeof per, "%.0f", (double)after_start / cpu);
	}
	printf("| %u | %.0f | %llu | %.0f | %s | %s | %.2f | %.1f | %.1f | %.1f | %.1f | %llu | %llu%s |\n",
	       g->n, rate, (unsigned long long)in_win_deliv, deliv_s, cpus, per,
	       me1 - me0,
	       (double)bench_hist_quantile(hd, 0.5) / 1e3,
	       (double)bench_hist_quantile(hd, 0.99) / 1e3,
	       (double)bench_hist_quantile(hd, 0.999) / 1e3, (double)hd->max_ns / 1e3,
	       (unsigned long long)(expected > delivered ? expected - delivered : 0),
	       (unsigned long long)dups, errors ? "; SEND errors" : "");
	if (rc == 0 && (errors || dups || delivered < expected))
		rc = -PARLEY_EIO;
out:
	free(intended);
	free(seen);
	free(hd);
	free(m);
	free(pf);
	return rc;
}

int bench_groups(const struct bench_cfg *cfg)
{
	uint32_t n = cfg->count;
	struct bench_srv s;
	int rc = bench_srv_start(cfg, &s);
	if (rc)
		return rc;
	struct grun g = {.n = n};
	struct wire_conn *snd = calloc(1, sizeof *snd);
	struct parley_msg *m = malloc(sizeof *m);
	char (*names)[32] = calloc(n, sizeof *names);
	g.rc = calloc(n, sizeof *g.rc);
	g.last_inbox = calloc(n, sizeof *g.last_inbox);
	g.acked_inbox = calloc(n, sizeof *g.acked_inbox);
	char conv[64] = "";
	if (!snd || !m || !names || !g.rc || !g.last_inbox || !g.acked_inbox) {
		rc = -ENOMEM;
		goto out;
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
		rl.rlim_cur = PARLEY_MIN(rl.rlim_max, (rlim_t)n + 64);
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	for (uint32_t i = 0; i < n; i++)
		snprintf(names[i], sizeof names[i], "gb-%d-%u", (int)getpid(), i);
	if ((rc = conn_open(cfg, &s, snd, names[0], "sender")))
		goto out;
	/* the group: names[0] owns it, the others join in batches of 256 */
	uint32_t done = 1;
	while (rc == 0 && done < n) {
		uint32_t batch = PARLEY_MIN(n - done, (uint32_t)PARLEY_PROTO_MAX_GROUP_USERS);
		if (done == 1 && batch == PARLEY_PROTO_MAX_GROUP_USERS)
			batch--;
		memset(m, 0, sizeof *m);
		struct parley_str *us;
		if (done == 1) {
			m->type = PARLEY_T_GROUP_CREATE;
			le_put64(m->group_create.create_id, (uint64_t)getpid());
			m->group_create.name = parley_str_c("bench");
			m->group_create.count = (uint16_t)batch;
			us = m->group_create.users;
		} else {
			m->type = PARLEY_T_GROUP_ADD;
			m->group_change.conv = parley_str_c(conv);
			m->group_change.count = (uint16_t)batch;
			us = m->group_change.users;
		}
		for (uint32_t i = 0; i < batch; i++)
			us[i] = parley_str_c(names[done + i]);
		uint16_t want = PARLEY_REPLY_OF(m->type);
		rc = call(snd, m, want);
		if (rc == 0 && done == 1)
			snprintf(conv, sizeof conv, "%.*s", (int)m->group_ok.conv.len,
				 m->group_ok.conv.p);
		done += batch;
	}
	if (rc)
		goto out;
	if (cfg->verbose)
		fprintf(stderr, "parley-bench: group %s of %u members; connecting them\n",
			conv, n);
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		if ((rc = conn_open(cfg, &s, &g.rc[i], names[i], "phone")))
			break;
		memset(m, 0, sizeof *m);
		m->type = PARLEY_T_SYNC;
		m->sync.from_inbox_seq = 0; /* live */
		rc = call(&g.rc[i], m, PARLEY_T_SYNC_OK);
		if (rc == 0)
			g.last_inbox[i] = g.acked_inbox[i] =
				m->sync_ok.start_inbox_seq ? m->sync_ok.start_inbox_seq - 1 : 0;
	}
	if (rc)
		goto out;
	printf("\n### group fan-out: %u members, all online (one device each), one sender "
	       "open loop, 100-byte bodies, %.1f s window\n\n", n, cfg->seconds);
	printf("| members | msgs/s offered | deliveries of window msgs | deliveries/s "
	       "(window start..last delivery) | parleyd CPU s (same span) | deliveries "
	       "per parleyd CPU-s | bench client CPU s | p50 µs | p99 µs | p99.9 µs | "
	       "max µs | missing | duplicates |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
	double rates[BENCH_MAX_LIST] = {200};
	unsigned nr = cfg->n_rates ? cfg->n_rates : 1;
	if (cfg->n_rates)
		memcpy(rates, cfg->rates, nr * sizeof *rates);
	for (unsigned r = 0; r < nr && rc == 0; r++) {
		bench_watchdog_arm(cfg->warmup + cfg->seconds + BENCH_DRAIN_SECONDS + 60);
		rc = group_run(cfg, &s, snd, conv, &g, rates[r], (int)r);
		bench_watchdog_arm(0);
	}
	printf("\nlatency: from each message's intended send time (open loop) to its "
	       "EVENT at each member's device; SEND_ACK only after fdatasync.\n");
out:
	if (rc)
		fprintf(stderr, "parley-bench: groups: %s\n", parley_strerror(rc));
	for (uint32_t i = 0; g.rc && i < n; i++) {
		if (g.rc[i].rbuf) {
			if (g.rc[i].fd >= 0)
				wire_close(&g.rc[i]);
			free(g.rc[i].rbuf);
		}
	}
	if (snd && snd->rbuf) {
		if (snd->fd >= 0)
			wire_close(snd);
		free(snd->rbuf);
	}
	free(snd);
	free(m);
	free(names);
	free(g.rc);
	free(g.last_inbox);
	free(g.acked_inbox);
	bench_srv_stop(&s);
	return rc;
}
