/*
 * main.c — parleyd: configuration, engine, chat service, TLS context,
 * event loops, admin HTTP, signals and the graceful stop.
 *
 * Start-up order (each step needs the previous one):
 *   1. configuration (flags > PARLEY_* env > config file > defaults);
 *      --check-config validates and exits;
 *   2. engine open (WAL recovery) with the chat clock;
 *   3. chat_open: fan-out recovery from the durable watermark, BEFORE any
 *      client is served (so re-fanned messages keep their inbox order);
 *   4. TLS context, event loops (listeners bound), admin HTTP; /readyz
 *      turns ready once the loops run.
 *
 * Graceful stop (SIGTERM / SIGINT): loops stop accepting, send GOAWAY
 * DRAIN, finish in-flight requests (a durable SEND still gets its
 * SEND_ACK), flush, close; then the fan-out queue drains, a last watermark
 * is written, the engine closes (everything durable) and we exit 0.
 * A fatal engine error (failed fdatasync) exits at once with status 70:
 * recovery from the log on restart is the only safe continuation.
 *
 * Threads: main thread (this file), one thread per loop, engine shards,
 * the fan-out thread, the admin HTTP thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "chat.h"
#include "loop.h"
#include "parley_engine.h"
#include "parley_proto.h"

static void on_engine_fatal(void *arg, int err)
{
	(void)arg;
	PLOG_E("parleyd", "engine fatal error: exiting, restart recovers from "
	       "the log", "err=%s", parley_errname(err));
	_exit(70);
}

static SSL_CTX *tls_ctx_new(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* Idle connections hold no TLS read/write buffers. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		char eb[256];
		ERR_error_string_n(ERR_get_error(), eb, sizeof eb);
		PLOG_E("parleyd", "cannot load TLS certificate/key",
		       "cert=%s key=%s err=\"%s\"", cert, key, eb);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* ---- options -------------------------------------------------------------- */

struct opts {
	const char *data;
	const char *listen;
	uint16_t port, tls_port, admin_port;
	const char *tls_cert, *tls_key;
	unsigned loops, shards, partitions;
	struct srv_limits lim;
	bool check_only;
};

static void opts_defaults(struct opts *o)
{
	memset(o, 0, sizeof *o);
	o->data = "./parley-data";
	o->listen = "127.0.0.1";
	o->port = 7411;
	o->tls_port = 7412;
	o->admin_port = 7480;
	o->loops = 0; /* = online CPUs */
	o->lim = (struct srv_limits){
		.max_frame = PARLEY_PROTO_MAX_FRAME_DEFAULT,
		.max_body = PARLEY_PROTO_MAX_BODY_DEFAULT,
		.max_inflight = 64,
		.event_window = 1024,
		.idle_timeout_ms = 60000,
		.handshake_timeout_ms = 10000,
		.slow_consumer_ms = 30000,
		.max_outbound = 8u << 20,
		.max_conns = 100000,
		.drain_timeout_ms = 5000,
	};
}

#include "main_tmp.inc"

/* ---- run ------------------------------------------------------------------------ */

struct loop_thread {
	struct loop *lp;
	pthread_t thr;
};

static int run(const struct opts *o, struct srv *s)
{
	int rc;
	static struct chat_clock clock;
	struct pe_options eo = {.dir = o->data, .partitions = o->partitions,
				.shards = o->shards, .clock_ms = chat_clock_ms,
				.clock_arg = &clock, .on_fatal = on_engine_fatal};
	struct pe_engine *e = NULL;
	rc = pe_open(&eo, &e);
	if (rc) {
		PLOG_E("parleyd", "cannot open the data directory", "dir=%s err=%s",
		       o->data, parley_errname(rc));
		return 1;
	}
	s->engine = e;
	rc = chat_open(e, &clock, &s->chat);
	if (rc) {
		PLOG_E("parleyd", "fan-out recovery failed", "err=%s",
		       parley_errname(rc));
		pe_close(e);
		return 1;
	}
	if (o->tls_port && o->tls_cert && o->tls_key) {
		s->tls = tls_ctx_new(o->tls_cert, o->tls_key);
		if (!s->tls) {
			chat_close(s->chat);
			pe_close(e);
			return 1;
		}
	}
	unsigned n = o->loops;
	if (n == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		n = cpus > 0 ? (unsigned)cpus : 1;
	}
	s->lim = o->lim;
	s->lim.max_conns = PARLEY_MAX(1u, o->lim.max_conns / n);
	struct loop_thread *lt = calloc(n, sizeof *lt);
	s->loops = calloc(n, sizeof *s->loops);
	PARLEY_ASSERT(lt && s->loops);
	struct loop_listen ls = {.host = o->listen, .tcp_port = o->port,
				 .tls_port = s->tls ? o->tls_port : 0};
	unsigned started = 0;
	for (unsigned i = 0; i < n; i++) {
		rc = loop_create(s, i, &ls, &lt[i].lp);
		if (rc) {
			PLOG_E("parleyd", "cannot start event loop", "loop=%u "
			       "host=%s port=%u tls_port=%u err=%s", i, o->listen,
			       o->port, ls.tls_port, parley_errname(rc));
			break;
		}
		s->loops[i] = lt[i].lp;
		s->nloops = i + 1;
		rc = pthread_create(&lt[i].thr, NULL, loop_main, lt[i].lp);
		PARLEY_ASSERT(rc == 0);
		started++;
	}
	if (started == n) {
		PLOG_I("parleyd", "serving", "listen=%s port=%u tls_port=%u "
		       "admin_port=%u loops=%u data=%s", o->listen, o->port,
		       ls.tls_port, o->admin_port, n, o->data);
		/* SIGTERM/SIGINT are blocked in every thread (main() did it
		 * before any thread existed): this is the one place they land. */
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGTERM);
		sigaddset(&set, SIGINT);
		int sig = 0;
		while (sigwait(&set, &sig) != 0)
			;
		PLOG_I("parleyd", "stopping: draining clients", "signal=%d", sig);
	} else {
		rc = 1;
	}
	atomic_store(&s->draining, true);
	for (unsigned i = 0; i < started; i++)
		loop_stop(lt[i].lp);
	for (unsigned i = 0; i < started; i++)
		pthread_join(lt[i].thr, NULL);
	chat_close(s->chat);
	pe_close(e);
	for (unsigned i = 0; i < started; i++)
		loop_free(lt[i].lp);
	free(lt);
	free(s->loops);
	if (s->tls)
		SSL_CTX_free(s->tls);
	PLOG_I("parleyd", "stopped", "status=%d", rc ? 1 : 0);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	opts_defaults(&o);
	static struct srv s;
	snprintf(s.server_id, sizeof s.server_id, "parleyd-1");
	int rc = opts_load(&o, &s, argc, argv);
	if (rc)
		return rc > 0 ? 0 : 2;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread */
	signal(SIGPIPE, SIG_IGN);
	/* Every connection is a file descriptor: use the hard limit. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	return run(&o, &s);
}
