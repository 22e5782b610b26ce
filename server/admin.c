/*
 * admin.c — the admin HTTP thread and the Prometheus text of /metrics.
 * See admin.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "chat.h"

struct admin {
	struct srv *s;
	int fd;
	atomic_bool stop;
	atomic_int ready;
	pthread_t thr;
};

/* ---- metrics text ---------------------------------------------------------- */

struct out {
	char *b;
	size_t cap, n;
};

static void put(struct out *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(o->n < o->cap ? o->b + o->n : NULL,
			  o->n < o->cap ? o->cap - o->n : 0, fmt, ap);
	va_end(ap);
	if (k > 0)
		o->n += (size_t)k;
}

static void metric(struct out *o, const char *name, const char *type,
		   const char *help, uint64_t v)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name,
	    type, name, v);
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

size_t admin_metrics_text(struct srv *s, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	struct srv_counters *c = &s->ctr;
	metric(&o, "parley_connections_open", "gauge",
	       "Client connections open now.", LD(c->conns_open));
	metric(&o, "parley_connections_accepted_total", "counter",
	       "Client connections accepted.", LD(c->conns_accepted));
	metric(&o, "parley_connections_closed_total", "counter",
	       "Client connections closed.", LD(c->conns_closed));
	metric(&o, "parley_connections_tls_total", "counter",
	       "Client connections accepted on the TLS listener.", LD(c->conns_tls));
	metric(&o, "parley_frames_received_total", "counter",
	       "Frames received from clients.", LD(c->frames_in));
	metric(&o, "parley_frames_sent_total", "counter",
	       "Frames queued to clients.", LD(c->frames_out));
	metric(&o, "parley_bytes_received_total", "counter",
	       "Bytes received on client sockets (TLS: ciphertext).", LD(c->bytes_in));
	metric(&o, "parley_bytes_sent_total", "counter",
	       "Bytes sent on client sockets (TLS: ciphertext).", LD(c->bytes_out));
	metric(&o, "parley_sends_total", "counter",
	       "SEND requests handed to the engine.", LD(c->sends));
	metric(&o, "parley_appends_acked_total", "counter",
	       "SENDs acknowledged as durable (SEND_ACK).", LD(c->appends));
	metric(&o, "parley_send_duplicates_total", "counter",
	       "SENDs answered as duplicates of an earlier client_msg_id.",
	       LD(c->duplicates));
	metric(&o, "parley_events_delivered_total", "counter",
	       "EVENT pushes queued to devices.", LD(c->events_out));
	metric(&o, "parley_history_requests_total", "counter",
	       "HISTORY requests.", LD(c->history));
	metric(&o, "parley_syncs_total", "counter", "SYNC requests.", LD(c->syncs));
	metric(&o, "parley_errors_sent_total", "counter",
	       "ERROR frames sent to clients.", LD(c->errors_sent));
	metric(&o, "parley_protocol_errors_total", "counter",
	       "Malformed frames or payloads received.", LD(c->proto_errors));
	metric(&o, "parley_auth_failures_total", "counter",
	       "Rejected tokens.", LD(c->auth_failures));
	metric(&o, "parley_slow_consumers_total", "counter",
	       "Connections cut off as slow consumers.", LD(c->slow_consumers));
	metric(&o, "parley_idle_closes_total", "counter",
	       "Connections closed for idleness.", LD(c->idle_closes));
	metric(&o, "parley_handshake_timeouts_total", "counter",
	       "Connections closed before finishing TLS/HELLO/AUTH in time.",
	       LD(c->handshake_timeouts));

	const char *h = "parley_ack_latency_seconds";
	put(&o, "# HELP %s SEND received to SEND_ACK queued (durable).\n"
		"# TYPE %s histogram\n", h, h);
	uint64_t cum = 0;
	for (int i = 0; i < 10; i++) {
		cum += LD(c->ack_lat_bucket[i]);
		put(&o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", h,
		    srv_ack_lat_bounds_s[i], cum);
	}
	cum += LD(c->ack_lat_bucket[10]);
	put(&o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", h, cum);
	put(&o, "%s_sum %.9f\n%s_count %" PRIu64 "\n", h,
	    (double)LD(c->ack_lat_ns_sum) / 1e9, h, LD(c->ack_lat_count));

	if (s->engine) {
		struct pe_stats es;
		pe_stats(s->engine, &es);
		metric(&o, "parley_engine_appends_total", "counter",
		       "Engine append commands acknowledged.", es.appends);
		metric(&o, "parley_engine_entries_total", "counter",
		       "Engine entries appended.", es.entries);
		metric(&o, "parley_fsyncs_total", "counter",
		       "WAL write+fdatasync rounds (group commits).", es.wal_batches);
		metric(&o, "parley_wal_bytes_total", "counter",
		       "Bytes written to the WAL.", es.wal_bytes);
		put(&o, "# HELP parley_fsync_seconds_total Time spent in WAL "
			"write+fdatasync.\n# TYPE parley_fsync_seconds_total "
			"counter\nparley_fsync_seconds_total %.9f\n",
		    (double)es.fsync_ns_total / 1e9);
	}
	if (s->chat) {
		struct chat_stats cs;
		chat_get_stats(s->chat, &cs);
		metric(&o, "parley_fanout_messages_total", "counter",
		       "Messages fanned out to inboxes.", cs.fanout_jobs);
		metric(&o, "parley_fanout_appends_total", "counter",
		       "Inbox/list appends completed by the fan-out.",
		       cs.fanout_appends);
		metric(&o, "parley_fanout_errors_total", "counter",
		       "Fan-out appends that failed.", cs.fanout_errors);
		metric(&o, "parley_fanout_recovered_total", "counter",
		       "Messages re-fanned out by start-up recovery.",
		       cs.fanout_recovered);
		metric(&o, "parley_fanout_pending", "gauge",
		       "Fan-out jobs queued or in flight.", cs.fanout_pending);
		metric(&o, "parley_fanout_watermark_ms", "gauge",
		       "Last checkpointed fan-out watermark (unix ms).",
		       cs.watermark_ms);
	}
	metric(&o, "parley_memory_budget_bytes", "gauge",
	       "Configured memory budget (memory_budget_bytes).", s->mem.limit);
	metric(&o, "parley_memory_used_bytes", "gauge",
	       "Memory counted against the budget now.", membudget_used(&s->mem));
	metric(&o, "parley_memory_used_high_water_bytes", "gauge",
	       "Largest memory counted against the budget so far.",
	       LD(s->mem.high_water));
	metric(&o, "parley_memory_connection_bytes", "gauge",
	       "Connections' receive buffers and outbound queues.",
	       (uint64_t)PARLEY_MAX(0, (int64_t)LD(s->mem.conn_bytes)));
	metric(&o, "parley_memory_engine_bytes", "gauge",
	       "Engine memtables, idempotency keys and queued requests.",
	       LD(s->mem.engine_bytes));
	metric(&o, "parley_memory_over_budget", "gauge",
	       "1 while client sockets are not read (budget exceeded).",
	       LD(s->mem.over) ? 1 : 0);
	metric(&o, "parley_memory_pauses_total", "counter",
	       "Times the budget was exceeded and reading stopped.",
	       LD(s->mem.pauses));
	metric(&o, "parley_recv_paused_total", "counter",
	       "Connections whose reading was paused by the budget.",
	       LD(c->recv_paused));
	metric(&o, "parley_frame_timeouts_total", "counter",
	       "Connections closed for a frame not completed in frame_timeout_ms.",
	       LD(c->frame_timeouts));
	metric(&o, "parley_preauth_frame_rejects_total", "counter",
	       "Frames over preauth_max_frame before AUTH_OK (connection closed).",
	       LD(c->preauth_too_big));
	metric(&o, "parley_draining", "gauge", "1 while a drain is in progress.",
	       atomic_load(&s->draining) ? 1 : 0);
	return o.n;
}

/* ---- HTTP ------------------------------------------------------------------------- */

static void reply(int fd, int code, const char *reason, const char *ctype,
		  const char *body, size_t blen)
{
	char hdr[256];
	int n = snprintf(hdr, sizeof hdr,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: "
			 "%zu\r\nConnection: close\r\n\r\n",
			 code, reason, ctype, blen);
	const char *parts[2] = {hdr, body};
	size_t lens[2] = {(size_t)n, blen};
	for (int i = 0; i < 2; i++) {
		size_t off = 0;
		while (off < lens[i]) {
			ssize_t k = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
			if (k <= 0)
				return;
			off += (size_t)k;
		}
	}
}

static void serve_one(struct admin *a, int fd)
{
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	char req[4096];
	size_t n = 0;
	while (n < sizeof req - 1) {
		ssize_t k = recv(fd, req + n, sizeof req - 1 - n, 0);
		if (k <= 0)
			break;
		n += (size_t)k;
		req[n] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	req[n] = '\0';
	char method[8] = "", path[256] = "";
	if (sscanf(req, "%7s %255s", method, path) != 2) {
		reply(fd, 400, "Bad Request", "text/plain", "bad request\n", 12);
		return;
	}
	char *q = strchr(path, '?');
	if (q)
		*q = '\0';
	bool get = !strcmp(method, "GET"), head = !strcmp(method, "HEAD");
	if (!get && !head) {
		reply(fd, 405, "Method Not Allowed", "text/plain", "GET only\n", 9);
		return;
	}
	if (!strcmp(path, "/livez")) {
		reply(fd, 200, "OK", "text/plain", "ok\n", head ? 0 : 3);
	} else if (!strcmp(path, "/readyz")) {
		bool ready = atomic_load(&a->ready) && !atomic_load(&a->s->draining);
		if (ready)
			reply(fd, 200, "OK", "text/plain", "ready\n", head ? 0 : 6);
		else
			reply(fd, 503, "Service Unavailable", "text/plain",
			      "not ready\n", head ? 0 : 10);
	} else if (!strcmp(path, "/metrics")) {
		size_t need = admin_metrics_text(a->s, NULL, 0) + 1;
		char *b = malloc(need + 4096);
		if (!b) {
			reply(fd, 500, "Internal Server Error", "text/plain", "", 0);
			return;
		}
		size_t len = admin_metrics_text(a->s, b, need + 4096);
		reply(fd, 200, "OK", "text/plain; version=0.0.4", b, head ? 0 : len);
		free(b);
	} else {
		reply(fd, 404, "Not Found", "text/plain", "not found\n", 10);
	}
}

static void *admin_main(void *arg)
{
	struct admin *a = arg;
	while (!atomic_load(&a->stop)) {
		struct pollfd p = {.fd = a->fd, .events = POLLIN};
		if (poll(&p, 1, 200) <= 0)
			continue;
		int fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve_one(a, fd);
		close(fd);
	}
	return NULL;
}

int admin_start(struct srv *s, const char *host, uint16_t port,
		struct admin **out)
{
	*out = NULL;
	if (!port)
		return 0;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char ps[8];
	snprintf(ps, sizeof ps, "%u", port);
	if (getaddrinfo(host, ps, &hints, &res))
		return -PARLEY_EINVAL;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1, rc = 0;
	if (fd < 0) {
		rc = -errno;
	} else {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 64)) {
			rc = -errno;
			close(fd);
		}
	}
	freeaddrinfo(res);
	if (rc)
		return rc;
	struct admin *a = calloc(1, sizeof *a);
	if (!a) {
		close(fd);
		return -PARLEY_ENOMEM;
	}
	a->s = s;
	a->fd = fd;
	rc = pthread_create(&a->thr, NULL, admin_main, a);
	if (rc) {
		close(fd);
		free(a);
		return -rc;
	}
	*out = a;
	return 0;
}

void admin_set_ready(struct admin *a, int ready)
{
	if (a)
		atomic_store(&a->ready, ready);
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	atomic_store(&a->stop, true);
	pthread_join(a->thr, NULL);
	close(a->fd);
	free(a);
}
