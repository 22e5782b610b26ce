/*
 * bench_jetstream.c — the cluster mode's durable peer: NATS JetStream with
 * three replicas, publish-with-ack, closed loop (bench_cluster.c).
 *
 * The servers: three nats-server processes (Debian package,
 * tools/install-deps.sh) started here on 127.0.0.1 as one NATS cluster
 * ("parley-bench", routes between all three) with JetStream on and its
 * store under a temp dir of --dir each; SIGKILLed and removed at the end
 * (and by the watchdog: they are registered children).
 *
 * The stream: one per run point, created through the JetStream API
 * ($JS.API.STREAM.CREATE.<name>: file storage, num_replicas 3, subjects
 * "<name>.>"), retried until the JetStream meta group answers. The
 * producers connect to the server that leads the stream (from the
 * create / STREAM.INFO answer's "cluster"."leader"), as parley's connect to
 * the node that leads its partitions: no extra hop on either side.
 *
 * Load: `producers` connections, each with one PUB outstanding on its own
 * subject with a reply inbox of its own; JetStream answers on the inbox
 * with a PubAck ({"stream":..,"seq":..}) once the stream's Raft group has
 * stored the message on a quorum of replicas, or with {"error":..}. Latency
 * = PubAck arrival - PUB write, over acks inside the window.
 *
 * What the ack means (guarantees, checked on nats-server 2.9.10): stored
 * on a quorum of replicas, written to their files but NOT fsync'd: the
 * file store syncs on a timer (sync_interval; the docs give 2 minutes by
 * default) and 2.9.10 has no option to sync every write (its config parser
 * refuses `sync_interval`, which later versions added with "always").
 *
 * Threads: main thread only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_loop.h"
#include "bench_natsconn.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "parley_common.h"

#define JS_NODES 3
#define JS_START_TIMEOUT_S 15.0
#define JS_STREAM_TIMEOUT_S 30.0   /* meta group election + stream create */
#define JS_API_WAIT_MS 2000

struct js_cluster {
	pid_t pid[JS_NODES];
	int port[JS_NODES];
	int cport[JS_NODES];       /* cluster (route) ports */
	char *tmp;
	char version[64];
};

static int js_write_conf(const struct js_cluster *c, unsigned i, char *path, size_t cap)
{
	snprintf(path, cap, "%s/n%u.conf", c->tmp, i + 1);
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	fprintf(f, "server_name: n%u\nlisten: 127.0.0.1:%d\n"
		   "jetstream {\n  store_dir: \"%s/n%u\"\n}\n"
		   "cluster {\n  name: parley-bench\n  listen: 127.0.0.1:%d\n  routes: [\n",
		i + 1, c->port[i], c->tmp, i + 1, c->cport[i]);
	for (unsigned j = 0; j < JS_NODES; j++)
		if (j != i)
			fprintf(f, "    nats-route://127.0.0.1:%d\n", c->cport[j]);
	fprintf(f, "  ]\n}\n");
	return fclose(f) == 0 ? 0 : -PARLEY_EIO;
}

double bench_js_cpu_s(const struct js_cluster *c)
{
	double t = 0;
	for (unsigned i = 0; i < JS_NODES; i++)
		if (c->pid[i] > 0)
			t += bench_cpu_s(c->pid[i]);
	return t;
}

const char *bench_js_version(const struct js_cluster *c)
{
	return c ? c->version : "unknown";
}

void bench_js_stop(struct js_cluster *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < JS_NODES; i++)
		bench_child_kill(&c->pid[i]);
	bench_tmp_remove(&c->tmp);
	free(c);
}

int bench_js_start(const struct bench_cfg *cfg, struct js_cluster **out)
{
	struct js_cluster *c = calloc(1, sizeof *c);
	*out = c;
	if (!c)
		return -ENOMEM;
	snprintf(c->version, sizeof c->version, "unknown");
	c->tmp = bench_mkdtemp(cfg->dir, "jetstream");
	if (!c->tmp)
		return -errno;
	for (unsigned i = 0; i < JS_NODES; i++) {
		if ((c->port[i] = bench_free_port()) < 0 || (c->cport[i] = bench_free_port()) < 0)
			return -PARLEY_EIO;
	}
	for (unsigned i = 0; i < JS_NODES; i++) {
		char conf[4200], logp[4200];
		int rc = js_write_conf(c, i, conf, sizeof conf);
		if (rc)
			return rc;
		snprintf(logp, sizeof logp, "%s/n%u.log", c->tmp, i + 1);
		char *argv[] = {(char *)cfg->nats_server, "-c", conf, NULL};
		pid_t pid = bench_spawn(argv, logp);
		if (pid < 0)
			return pid;
		c->pid[i] = pid;
	}
	struct nconn n = {.fd = -1, .rbuf = malloc(NATS_RBUF)};
	if (!n.rbuf)
		return -ENOMEM;
	int rc = 0;
	for (unsigned i = 0; i < JS_NODES && rc == 0; i++) {
		double end = bench_now_s() + JS_START_TIMEOUT_S;
		rc = -PARLEY_ETIMEDOUT;
		while (bench_now_s() < end) {
			if (bench_child_exited(&c->pid[i])) {
				fprintf(stderr, "parley-bench: nats-server n%u exited at start-up (see "
						"%s/n%u.log)\n", i + 1, c->tmp, i + 1);
				rc = -PARLEY_EIO;
				break;
			}
			rc = nconn_open(&n, c->port[i], NULL, c->version, sizeof c->version);
			nconn_close(&n);
			if (rc == 0)
				break;
			bench_sleep_ns(50 * 1000000ull);
		}
	}
	free(n.rbuf);
	return rc;
}

/* One JetStream API request on c (already subscribed to reply subject
 * "_INBOX.api" with sid 1): the reply payload into out[0..cap) (NUL-
 * terminated). 0, or -PARLEY_ETIMEDOUT without an answer. */
static int js_api(struct nconn *c, const char *subject, const char *body, char *out, size_t cap)
{
	char cmd[1024];
	int n = snprintf(cmd, sizeof cmd, "PUB %s _INBOX.api %zu\r\n%s\r\n", subject,
			 strlen(body), body);
	if (n < 0 || (size_t)n >= sizeof cmd)
		return -PARLEY_EINVAL;
	int rc = nconn_send(c, cmd, (size_t)n);
	if (rc)
		return rc;
	struct nats_frame f;
	if ((rc = nconn_wait(c, NATS_OP_MSG, JS_API_WAIT_MS, &f)) != 0)
		return rc;
	size_t l = PARLEY_MIN(f.payload_len, cap - 1);
	memcpy(out, f.payload, l);
	out[l] = 0;
	return 0;
}

/* Index (0..2) of the server named in "leader":"nK", or -1. */
static int js_leader_of(const char *json)
{
	const char *p = strstr(json, "\"leader\":\"n");
	if (!p)
		return -1;
	int k = p[11] - '1';
	return k >= 0 && k < JS_NODES ? k : -1;
}

/* Creates stream `name` (file storage, 3 replicas, subjects name.>) and
 * returns the index of the server leading it, or negative. */
static int js_stream_create(const struct js_cluster *cl, const char *name)
{
	struct nconn c = {.fd = -1, .rbuf = malloc(NATS_RBUF)};
	char *resp = malloc(65536);
	char subj[128], body[512];
	int rc = -ENOMEM, leader = -1;
	if (!c.rbuf || !resp)
		goto out;
	if ((rc = nconn_open(&c, cl->port[0], "SUB _INBOX.api 1\r\n", NULL, 0)) != 0)
		goto out;
	snprintf(subj, sizeof subj, "$JS.API.STREAM.CREATE.%s", name);
	snprintf(body, sizeof body,
		 "{\"name\":\"%s\",\"subjects\":[\"%s.>\"],\"storage\":\"file\","
		 "\"num_replicas\":3,\"retention\":\"limits\",\"discard\":\"old\"}",
		 name, name);
	double end = bench_now_s() + JS_STREAM_TIMEOUT_S;
	bool created = false;
	rc = -PARLEY_ETIMEDOUT;
	while (bench_now_s() < end) {
		if (!created) {
			int r = js_api(&c, subj, body, resp, 65536);
			if (r == 0 && !strstr(resp, "\"error\"")) {
				created = true;
				leader = js_leader_of(resp);
			} else if (r == 0 && strstr(resp, "already in use")) {
				created = true;
			} else if (r != 0 && r != -PARLEY_ETIMEDOUT) {
				rc = r;
				break;
			}
		}
		if (created && leader < 0) {
			snprintf(subj, sizeof subj, "$JS.API.STREAM.INFO.%s", name);
			if (js_api(&c, subj, "", resp, 65536) == 0)
				leader = js_leader_of(resp);
			snprintf(subj, sizeof subj, "$JS.API.STREAM.CREATE.%s", name);
		}
		if (leader >= 0) {
			rc = leader;
			break;
		}
		bench_sleep_ns(200 * 1000000ull);
	}
	if (rc < 0)
		fprintf(stderr, "parley-bench: jetstream: stream %s not created with a leader "
				"within %.0fs: %s (last answer %.200s)\n", name, JS_STREAM_TIMEOUT_S,
			parley_strerror(rc), resp ? resp : "");
out:
	nconn_close(&c);
	free(c.rbuf);
	free(resp);
	return rc;
}

struct js_prod {
	struct nconn c;
	uint64_t sent_ns;
	bool busy;
};

int bench_js_publish(const struct bench_cfg *cfg, struct js_cluster *cl, unsigned point,
		     uint32_t producers, uint32_t payload, struct load_result *out)
{
	bench_load_begin(out, "jetstream-r3", producers, payload, 0);
	char stream[32];
	snprintf(stream, sizeof stream, "B%u", point);
	int leader = js_stream_create(cl, stream);
	if (leader < 0)
		return leader;
	snprintf(out->note, sizeof out->note, "stream leader n%d", leader + 1);
	struct js_prod *ps = calloc(producers, sizeof *ps);
	struct pollfd *pf = calloc(producers, sizeof *pf);
	size_t msg_cap = 128 + payload + 2;
	uint8_t *msg = malloc(msg_cap);
	int rc = 0;
	char errtxt[160] = "";
	if (!ps || !pf || !msg) {
		rc = -ENOMEM;
		goto out;
	}
	bench_fill_payload(msg + 64, payload, cfg->seed); /* body template */
	for (uint32_t i = 0; i < producers; i++)
		ps[i].c.fd = -1;
	for (uint32_t i = 0; i < producers && rc == 0; i++) {
		/* nconn_fill reads up to NATS_RBUF; untouched pages cost nothing */
		ps[i].c.rbuf = malloc(NATS_RBUF);
		if (!ps[i].c.rbuf) {
			rc = -ENOMEM;
			break;
		}
		char sub[64];
		snprintf(sub, sizeof sub, "SUB _INBOX.p%u 1\r\n", i);
		rc = nconn_open(&ps[i].c, cl->port[leader], sub, NULL, 0);
		pf[i].fd = ps[i].c.fd;
		pf[i].events = POLLIN;
	}
	if (rc)
		goto out;
	uint8_t *body = msg + 64;
	/* the producers' PUB headers differ only in their subject and inbox;
	 * each send writes "PUB <stream>.<i> _INBOX.p<i> <len>\r\n" + body */
	uint64_t t0 = parley_mono_ns();
	uint64_t win_start, win_end, drain_end;
	bench_window(cfg, t0, &win_start, &win_end, &drain_end);
	uint64_t acks = 0, errors = 0, outstanding = 0;
#define JS_SEND(i)                                                                          \
	do {                                                                                \
		char h[64];                                                                 \
		int hl = snprintf(h, sizeof h, "PUB %s.%u _INBOX.p%u %u\r\n", stream, (i),   \
				  (i), payload);                                            \
		uint8_t *st = body - hl;                                                    \
		memcpy(st, h, (size_t)hl);                                                  \
		memcpy(body + payload, "\r\n", 2);                                          \
		ps[i].sent_ns = parley_mono_ns();                                           \
		ps[i].busy = true;                                                          \
		rc = nconn_send(&ps[i].c, st, (size_t)hl + payload + 2);                    \
	} while (0)
	for (uint32_t i = 0; i < producers && rc == 0; i++) {
		JS_SEND(i);
		outstanding++;
	}
	while (rc == 0) {
		uint64_t now = parley_mono_ns();
		if (now >= win_end && outstanding == 0)
			break;
		if (now >= drain_end) {
			snprintf(out->note, sizeof out->note, "%llu PUBs still in flight after "
				 "%.0fs drain", (unsigned long long)outstanding, BENCH_DRAIN_SECONDS);
			break;
		}
		int pr = bench_poll(pf, producers, 0);
		if (pr < 0) {
			rc = pr;
			break;
		}
		for (uint32_t i = 0; i < producers && pr > 0 && rc == 0; i++) {
			if (!(pf[i].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			struct js_prod *p = &ps[i];
			int r = nconn_fill(&p->c);
			if (r < 0) {
				rc = r;
				break;
			}
			struct nats_frame f;
			while ((r = nconn_next(&p->c, &f)) == 1) {
				uint64_t at = parley_mono_ns();
				if (f.op == NATS_OP_ERR) {
					snprintf(errtxt, sizeof errtxt, "-ERR %.*s", (int)f.text_len,
						 f.text);
					rc = -PARLEY_EIO;
					break;
				}
				if (f.op != NATS_OP_MSG || !p->busy)
					continue;
				if (memmem(f.payload, f.payload_len, "\"error\"", 7)) {
					errors++;
					snprintf(errtxt, sizeof errtxt, "%.*s",
						 (int)PARLEY_MIN(f.payload_len, 150), f.payload);
				} else if (at >= win_start && at <= win_end) {
					acks++;
					bench_hist_record(&out->lat, at - p->sent_ns);
				}
				p->busy = false;
				outstanding--;
				if (at < win_end) {
					JS_SEND(i);
					if (rc)
						break;
					outstanding++;
				}
			}
			if (r < 0 && rc == 0)
				rc = r;
		}
	}
#undef JS_SEND
	bench_load_end(out, cfg, acks, errors, payload, rc);
	if (errors)
		snprintf(out->note, sizeof out->note, "%llu errors, last %s",
			 (unsigned long long)errors, errtxt);
out:
	if (rc != 0)
		fprintf(stderr, "parley-bench: jetstream publish (%u connections): %s %s\n",
			producers, parley_strerror(rc), errtxt);
	if (ps)
		for (uint32_t i = 0; i < producers; i++) {
			nconn_close(&ps[i].c);
			free(ps[i].c.rbuf);
		}
	free(ps);
	free(pf);
	free(msg);
	return rc;
}
