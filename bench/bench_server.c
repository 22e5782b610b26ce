/*
 * bench_server.c — parley-bench's server modes, against a real parleyd:
 *
 *   idle-conns  opens --count authenticated connections (HELLO + AUTH, then
 *               silence) and reports the server's resident memory growth per
 *               connection: (VmRSS after - VmRSS before) / N, from
 *               /proc/<pid>/status. VmRSS counts user-space pages only;
 *               kernel socket buffers are not in it (the goal is about user
 *               space: <= 2 KiB per idle connection). Connections are spread
 *               over child processes of at most IDLE_PER_PROC each (this
 *               machine allows 20,000 open files per process).
 *   delivery    two users on two connections: the receiver subscribes to its
 *               inbox (SYNC), the sender SENDs to their 1:1 conversation
 *               open loop at each --rate; latency from the INTENDED send time
 *               to the EVENT's arrival at the receiver (send -> durable ->
 *               fan-out -> push), and to the SEND_ACK, p50/p99/p99.9/max.
 *               With the server's admin port known, /metrics is read before
 *               and after each rate and the deltas of its stage histograms
 *               are printed: the per-stage breakdown behind each number.
 *
 * The server: either started here (--parleyd PATH, on 127.0.0.1, a free
 * port and a temp data dir, killed at the end) or an existing one
 * (--connect HOST:PORT --server-pid PID). Tokens are development HS256 JWTs
 * minted here (--jwt-secret/--jwt-iss/--jwt-aud, matching the server's
 * configuration).
 *
 * Threads: everything runs on the main thread (plus forked children for
 * idle connections, which only hold sockets).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_loop.h"
#include "bench_args.h"
#include "bench_http.h"
#include "bench_json.h"
#include "bench_wire.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "parley_common.h"

#define IDLE_PER_PROC 9000u
#define IDLE_BATCH 64u          /* handshakes pipelined at once per child */
#define SRV_START_TIMEOUT_S 15.0
#define HANDSHAKE_TIMEOUT_MS 5000


/* ---- server lifecycle ----------------------------------------------------------- */

/* A throw-away EC P-256 self-signed certificate (CN=localhost) and key in
 * dir/bench-cert.pem and dir/bench-key.pem, for --tls runs. 0 or -errno. */
static int make_self_signed(const char *dir)
{
	int rc = -PARLEY_EIO;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *fc = NULL, *fk = NULL;
	char path[4200];
	if (!key || !x)
		goto out;
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost",
				   -1, -1, 0);
	X509_set_issuer_name(x, name);
	if (!X509_sign(x, key, EVP_sha256()))
		goto out;
	snprintf(path, sizeof path, "%s/bench-cert.pem", dir);
	if (!(fc = fopen(path, "w")) || !PEM_write_X509(fc, x))
		goto out;
	snprintf(path, sizeof path, "%s/bench-key.pem", dir);
	int kfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (kfd < 0 || !(fk = fdopen(kfd, "w")) ||
	    !PEM_write_PrivateKey(fk, key, NULL, NULL, 0, NULL, NULL)) {
		if (kfd >= 0 && !fk)
			close(kfd);
		goto out;
	}
	rc = 0;
out:
	if (fc && fclose(fc) != 0)
		rc = -PARLEY_EIO;
	if (fk && fclose(fk) != 0)
		rc = -PARLEY_EIO;
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

/* ---- TLS for idle connections (client side; no certificate check: the
 * server is the one started here with a throw-away certificate) ---------------------- */

static int tls_write_msg(SSL *ssl, uint32_t rid, const struct parley_msg *m)
{
	uint8_t buf[8192];
	int n = parley_proto_encode(buf, sizeof buf, rid, m);
	if (n < 0)
		return n;
	return SSL_write(ssl, buf, n) == n ? 0 : -PARLEY_EIO;
}

/* Reads frames until HELLO_OK and AUTH_OK were both seen. */
static int tls_wait_auth(SSL *ssl, uint8_t *rbuf, size_t cap, struct parley_msg *m)
{
	size_t len = 0;
	int got = 0;
	while (got < 2) {
		struct parley_frame f;
		int n = parley_proto_frame_decode(rbuf, len, PARLEY_PROTO_MAX_FRAME_DEFAULT, &f);
		if (n == -PARLEY_EINCOMPLETE) {
			if (len == cap)
				return -PARLEY_ETOOBIG;
			int r = SSL_read(ssl, rbuf + len, (int)(cap - len));
			if (r <= 0)
				return -PARLEY_ECLOSED;
			len += (size_t)r;
			continue;
		}
		if (n < 0)
			return n;
		int rc = parley_proto_decode(&f, m);
		if (rc == 0) {
			if (m->type == PARLEY_T_HELLO_OK || m->type == PARLEY_T_AUTH_OK)
				got++;
			else if (m->type == PARLEY_T_ERROR)
				return -(int)m->error.code;
		}
		memmove(rbuf, rbuf + n, len - (size_t)n);
		len -= (size_t)n;
	}
	return 0;
}


/* TCP connect + TLS handshake + HELLO + AUTH; *out holds the session (the
 * caller keeps it open). 0 or negative. */
static int tls_open(SSL_CTX *ctx, const struct bench_cfg *cfg, const struct bench_srv *s,
		    const char *user, const char *dev, struct parley_msg *m, uint8_t *rbuf,
		    size_t cap, SSL **out)
{
	struct wire_conn w;
	*out = NULL;
	int rc = wire_connect(&w, s->host, s->tls_port, HANDSHAKE_TIMEOUT_MS);
	if (rc != 0)
		return rc;
	SSL *ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_fd(ssl, w.fd) || SSL_connect(ssl) != 1) {
		if (ssl)
			SSL_free(ssl);
		wire_close(&w);
		return -PARLEY_EPROTO;
	}
	char tok[2048];
	if ((rc = bench_mint(cfg, user, tok, sizeof tok)) != 0)
		goto fail;
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_HELLO;
	m->hello.min_version = m->hello.max_version = PARLEY_PROTO_VERSION;
	m->hello.device_id = parley_str_c(dev);
	m->hello.client_name = parley_str_c("parley-bench idle tls");
	if ((rc = tls_write_msg(ssl, 1, m)) != 0)
		goto fail;
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_AUTH;
	m->auth.token = parley_str_c(tok);
	if ((rc = tls_write_msg(ssl, 2, m)) != 0 || (rc = tls_wait_auth(ssl, rbuf, cap, m)) != 0)
		goto fail;
	*out = ssl;
	return 0;
fail:
	SSL_free(ssl);
	wire_close(&w);
	return rc;
}

static SSL_CTX *tls_client_ctx(void)
{
	return wire_tls_client_ctx();
}

static int srv_spawn(const struct bench_cfg *cfg, struct bench_srv *s);

int bench_srv_start(const struct bench_cfg *cfg, struct bench_srv *s)
{
	memset(s, 0, sizeof *s);
	s->pid = -1;
	if (cfg->connect) {
		const char *colon = strrchr(cfg->connect, ':');
		if (!colon || (size_t)(colon - cfg->connect) >= sizeof s->host) {
			fprintf(stderr, "parley-bench: --connect wants HOST:PORT\n");
			return -PARLEY_EINVAL;
		}
		memcpy(s->host, cfg->connect, (size_t)(colon - cfg->connect));
		s->port = atoi(colon + 1);
		s->tls_port = s->port; /* --tls with --connect: that port speaks TLS */
		s->admin_port = cfg->admin_port;
		s->watch_pid = cfg->server_pid;
		return 0;
	}
	if (!cfg->parleyd) {
		fprintf(stderr, "parley-bench: give --parleyd PATH (started here) or "
				"--connect HOST:PORT --server-pid PID\n");
		return -PARLEY_EINVAL;
	}
	snprintf(s->host, sizeof s->host, "127.0.0.1");
	s->tmp = bench_mkdtemp(cfg->dir, "parleyd");
	if (!s->tmp)
		return -errno;
	int port = bench_free_port();
	if (port < 0)
		return port;
	s->port = port;
	if ((port = bench_free_port()) < 0)
		return port;
	s->tls_port = port;
	if ((port = bench_free_port()) < 0)
		return port;
	s->admin_port = port;
	if (cfg->tls) {
		int crc = make_self_signed(s->tmp);
		if (crc != 0) {
			fprintf(stderr, "parley-bench: cannot make a TLS certificate in %s\n", s->tmp);
			return crc;
		}
	}
	return srv_spawn(cfg, s);
}

/* Starts parleyd on s->tmp (its data dir inside) and waits until it listens. */
static int srv_spawn(const struct bench_cfg *cfg, struct bench_srv *s)
{
	char *argv[64];
	static char store[8192];
	struct bench_ports ports = {s->port, s->tls_port, s->admin_port};
	if (bench_expand_args_ports(cfg->parleyd, cfg->parleyd_args, &ports, s->tmp, argv, 64,
				    store, sizeof store) < 0) {
		fprintf(stderr, "parley-bench: --parleyd-args too long\n");
		return -PARLEY_EINVAL;
	}
	char logp[4200];
	snprintf(logp, sizeof logp, "%s/parleyd.log", s->tmp);
	if (cfg->verbose) {
		fprintf(stderr, "parley-bench: starting");
		for (int i = 0; argv[i]; i++)
			fprintf(stderr, " %s", argv[i]);
		fprintf(stderr, " (log %s)\n", logp);
	}
	pid_t pid = bench_spawn(argv, logp);
	if (pid < 0)
		return pid;
	s->pid = pid;
	s->watch_pid = pid;
	double end = bench_now_s() + SRV_START_TIMEOUT_S;
	while (bench_now_s() < end) {
		if (bench_child_exited(&s->pid)) {
			fprintf(stderr, "parley-bench: parleyd exited at start-up (see %s)\n", logp);
			return -PARLEY_EIO;
		}
		struct wire_conn *c = malloc(sizeof *c);
		if (!c)
			return -ENOMEM;
		int rc = wire_connect(c, s->host, s->port, 500);
		wire_close(c);
		free(c);
		if (rc == 0)
			return 0;
		bench_sleep_ns(50 * 1000000ull);
	}
	fprintf(stderr, "parley-bench: parleyd did not listen on %s:%d within %.0fs (see %s)\n",
		s->host, s->port, SRV_START_TIMEOUT_S, logp);
	return -PARLEY_ETIMEDOUT;
}

void bench_srv_stop(struct bench_srv *s)
{
	bench_child_kill(&s->pid);
	bench_tmp_remove(&s->tmp);
}

int bench_srv_term(struct bench_srv *s)
{
	if (s->pid <= 0)
		return -PARLEY_EINVAL;
	kill(s->pid, SIGTERM);
	int st = 0;
	/* bounded by the caller's watchdog; parleyd drains within its
	 * drain timeout (5 s by default) */
	waitpid(s->pid, &st, 0);
	bench_child_forget(s->pid);
	s->pid = -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -PARLEY_EIO;
}

int bench_srv_respawn(const struct bench_cfg *cfg, struct bench_srv *s)
{
	if (s->pid > 0 || !s->tmp)
		return -PARLEY_EINVAL;
	int port = bench_free_port();
	if (port < 0)
		return port;
	s->port = port;
	return srv_spawn(cfg, s);
}

/* Sockets among pid's open files (/proc/PID/fd), or -errno: shows the
 * connections are really held open by the server when RSS is read. */
static long socket_fds(pid_t pid)
{
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(p);
	if (!d)
		return -errno;
	long n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char lp[320], tgt[64];
		if (de->d_name[0] == '.')
			continue;
		snprintf(lp, sizeof lp, "%s/%s", p, de->d_name);
		ssize_t l = readlink(lp, tgt, sizeof tgt - 1);
		if (l > 0) {
			tgt[l] = 0;
			if (!strncmp(tgt, "socket:", 7))
				n++;
		}
	}
	closedir(d);
	return n;
}

/* VmRSS of pid in KiB, or -errno. */
long bench_vmrss_kib(pid_t pid)
{
	char p[64], line[256];
	snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return -errno;
	long kib = -ENOENT;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "VmRSS:", 6)) {
			kib = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return kib;
}

int bench_mint(const struct bench_cfg *cfg, const char *user, char *tok, size_t cap)
{
	struct jwt_params jp = {cfg->jwt_secret, cfg->jwt_iss, cfg->jwt_aud, 3600};
	int n = bench_jwt_hs256(&jp, user, tok, cap);
	return n < 0 ? n : 0;
}

int bench_session_open(const struct bench_cfg *cfg, struct wire_conn *c, const char *host,
		       int port, SSL_CTX *tctx, const char *user, const char *device,
		       int timeout_ms, struct parley_hello_ok *hello)
{
	char tok[2048];
	int rc;
	if ((rc = wire_connect(c, host, port, timeout_ms)) ||
	    (tctx && (rc = wire_tls_start(c, tctx, timeout_ms))) ||
	    (rc = bench_mint(cfg, user, tok, sizeof tok)) ||
	    (rc = wire_handshake(c, device, tok, timeout_ms, hello)))
		return rc;
	return 0;
}

int bench_conv_open(struct wire_conn *c, struct parley_msg *m, const char *peer,
		    int timeout_ms, char *conv, size_t cap, char *errtxt, size_t errcap)
{
	int rc;
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_CONV_OPEN;
	m->conv_open.peer = parley_str_c(peer);
	if ((rc = wire_send(c, c->next_req++, m)) ||
	    (rc = wire_recv(c, timeout_ms, m, NULL)))
		return rc;
	if (m->type != PARLEY_T_CONV) {
		snprintf(errtxt, errcap, "CONV_OPEN answered %s",
			 parley_proto_type_name(m->type));
		return -PARLEY_EPROTO;
	}
	snprintf(conv, cap, "%.*s", m->conv.conv.len, m->conv.conv.p);
	return 0;
}

/* ---- idle connections ---------------------------------------------------------------- */

/* Child: opens `n` connections numbered from `first`, handshakes them in
 * pipelined batches, writes one status int to `wfd`, then holds them until
 * the parent closes its end of `rfd`. */
static void idle_child(const struct bench_cfg *cfg, const struct bench_srv *s,
		       uint32_t first, uint32_t n, int wfd, int rfd)
{
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	int *fds = calloc(n, sizeof *fds);
	struct wire_conn *c = calloc(IDLE_BATCH, sizeof *c);
	uint8_t *rbuf = malloc(WIRE_RBUF); /* wire_fill reads up to WIRE_RBUF */
	struct parley_msg *m = malloc(sizeof *m);
	int status = 0;
	if (!fds || !c || !rbuf || !m) {
		status = -ENOMEM;
		goto report;
	}
	char tok[2048], dev[64], user[64];
	if (cfg->tls) {
		/* one at a time: each TLS handshake blocks; the sessions are kept
		 * (never freed) until this process exits */
		SSL_CTX *ctx = tls_client_ctx();
		if (!ctx)
			status = -ENOMEM;
		for (uint32_t i = 0; i < n && status == 0; i++) {
			SSL *ssl;
			snprintf(user, sizeof user, "bench-idle-%u", first + i);
			snprintf(dev, sizeof dev, "d%u", first + i);
			status = tls_open(ctx, cfg, s, user, dev, m, rbuf, WIRE_RBUF, &ssl);
		}
		goto report;
	}
	for (uint32_t b = 0; b < n && status == 0; b += IDLE_BATCH) {
		uint32_t k = PARLEY_MIN(IDLE_BATCH, n - b);
		for (uint32_t i = 0; i < k && status == 0; i++) {
			uint32_t id = first + b + i;
			snprintf(user, sizeof user, "bench-idle-%u", id);
			snprintf(dev, sizeof dev, "d%u", id);
			if ((status = wire_connect(&c[i], s->host, s->port, HANDSHAKE_TIMEOUT_MS)) != 0)
				break;
			if ((status = bench_mint(cfg, user, tok, sizeof tok)) != 0)
				break;
			status = wire_hello_auth_send(&c[i], m, dev, tok,
						      "parley-bench idle", 0);
		}
		for (uint32_t i = 0; i < k && status == 0; i++) {
			c[i].rbuf = rbuf;
			c[i].rlen = c[i].roff = 0;
			status = wire_hello_auth_wait(&c[i], m, HANDSHAKE_TIMEOUT_MS, NULL);
			c[i].rbuf = NULL;
			fds[b + i] = c[i].fd;
		}
	}
report:
	(void)!write(wfd, &status, sizeof status);
	close(wfd);
	/* hold the connections until the parent says so (EOF on rfd) */
	char x;
	while (read(rfd, &x, 1) < 0 && errno == EINTR)
		;
	_exit(status == 0 ? 0 : 1);
}

int bench_idle_conns(const struct bench_cfg *cfg)
{
	struct bench_srv s;
	int rc = bench_srv_start(cfg, &s);
	if (rc != 0) {
		bench_srv_stop(&s);
		return rc;
	}
	if (s.watch_pid <= 0) {
		fprintf(stderr, "parley-bench: idle-conns needs the server's pid "
				"(--server-pid with --connect)\n");
		bench_srv_stop(&s);
		return -PARLEY_EINVAL;
	}
	/* one full session first so lazily built server state (JWT keys,
	 * engine streams, buffers pools) is in the baseline */
	struct wire_conn *w = malloc(sizeof *w);
	uint8_t *rbuf = malloc(WIRE_RBUF);
	char tok[2048];
	struct parley_hello_ok hello = {0};
	if (!w || !rbuf)
		return -ENOMEM;
	SSL_CTX *tctx = NULL;
	SSL *tssl = NULL;
	struct parley_msg *wm = malloc(sizeof *wm);
	if (!wm)
		return -ENOMEM;
	if (cfg->tls) {
		/* the warm-up session over TLS too (the plain port is off) */
		w->fd = -1;
		tctx = tls_client_ctx();
		rc = tctx ? tls_open(tctx, cfg, &s, "bench-idle-warm", "warm", wm, rbuf, WIRE_RBUF,
				     &tssl)
			  : -ENOMEM;
		hello.idle_timeout_ms = 60000; /* parleyd's default; not read over TLS */
	} else {
		rc = wire_connect(w, s.host, s.port, HANDSHAKE_TIMEOUT_MS);
		w->rbuf = rbuf;
		if (rc == 0)
			rc = bench_mint(cfg, "bench-idle-warm", tok, sizeof tok);
		if (rc == 0)
			rc = wire_handshake(w, "warm", tok, HANDSHAKE_TIMEOUT_MS, &hello);
	}
	free(wm);
	uint32_t idle_timeout = hello.idle_timeout_ms;
	if (rc != 0) {
		fprintf(stderr, "parley-bench: idle-conns: warm-up handshake with %s:%d failed: %s\n",
			s.host, s.port, parley_strerror(rc));
		wire_close(w);
		free(w);
		free(rbuf);
		bench_srv_stop(&s);
		return rc;
	}
	bench_sleep_ns(300 * 1000000ull);
	long rss0 = bench_vmrss_kib(s.watch_pid);
	long socks0 = socket_fds(s.watch_pid);
	double t0 = bench_now_s();

	uint32_t n = cfg->count;
	uint32_t nproc = (n + IDLE_PER_PROC - 1) / IDLE_PER_PROC;
	uint32_t per = (n + nproc - 1) / nproc;
	pid_t kids[64];
	int holdw[64], statr[64];
	uint32_t started = 0;
	int failures = 0;
	for (uint32_t i = 0; i < nproc && i < 64; i++) {
		int sp[2], hp[2];
		if (pipe2(sp, O_CLOEXEC) || pipe2(hp, O_CLOEXEC)) {
			rc = -errno;
			break;
		}
		uint32_t first = i * per, cnt = PARLEY_MIN(per, n - first);
		pid_t pid = fork();
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(sp[0]);
			close(hp[1]);
			/* drop the pipe ends of the siblings forked before us:
			 * holding a sibling's hold-pipe write end would keep it
			 * from ever seeing EOF (and the parent waiting for it) */
			for (uint32_t j = 0; j < started; j++) {
				close(holdw[j]);
				close(statr[j]);
			}
			idle_child(cfg, &s, first, cnt, sp[1], hp[0]);
		}
		close(sp[1]);
		close(hp[0]);
		if (pid < 0) {
			rc = -errno;
			close(sp[0]);
			close(hp[1]);
			break;
		}
		bench_child_register(pid);
		kids[started] = pid;
		statr[started] = sp[0];
		holdw[started] = hp[1];
		started++;
	}
	for (uint32_t i = 0; i < started; i++) {
		int st = -EIO;
		if (read(statr[i], &st, sizeof st) != sizeof st)
			st = -EIO;
		close(statr[i]);
		if (st != 0) {
			fprintf(stderr, "parley-bench: idle-conns: client process %u failed: %s\n",
				i, parley_strerror(st));
			failures++;
		}
	}
	double t_open = bench_now_s() - t0;
	bench_sleep_ns(1000 * 1000000ull); /* let the server settle */
	long rss1 = bench_vmrss_kib(s.watch_pid);
	long socks1 = socket_fds(s.watch_pid);
	/* the warm-up connection must still be alive: send a PING */
	struct parley_msg *m = malloc(sizeof *m);
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_PING;
	m->ping.nonce = 7;
	int ping;
	if (tssl) {
		ping = tls_write_msg(tssl, 3, m);
		uint8_t tmp[256];
		if (ping == 0 && SSL_read(tssl, tmp, sizeof tmp) <= 0)
			ping = -PARLEY_ECLOSED;
		SSL_free(tssl);
		SSL_CTX_free(tctx);
	} else {
		ping = wire_send(w, w->next_req++, m);
		if (ping == 0)
			ping = wire_recv(w, HANDSHAKE_TIMEOUT_MS, m, NULL);
	}
	free(m);
	for (uint32_t i = 0; i < started; i++) {
		close(holdw[i]);
		waitpid(kids[i], NULL, 0);
		bench_child_forget(kids[i]);
	}
	wire_close(w);
	free(w);
	free(rbuf);

	printf("\n### idle connections over %s (server pid %d)\n\n", cfg->tls ? "TLS" : "plain TCP",
	       (int)s.watch_pid);
	printf("| connections | client procs | open+auth time s | server sockets before → after | "
	       "VmRSS before KiB | VmRSS after KiB | delta per connection (bytes) | goal |\n");
	printf("|---:|---:|---:|---:|---:|---:|---:|---|\n");
	double per_conn = n ? (double)(rss1 - rss0) * 1024.0 / n : 0;
	printf("| %u | %u | %.2f | %ld → %ld | %ld | %ld | %.0f | ≤ 2048 |\n", n, started,
	       t_open, socks0, socks1, rss0, rss1, per_conn);
	if (socks0 >= 0 && socks1 >= 0 && socks1 - socks0 < (long)n)
		printf("\nwarning: the server holds only %ld more sockets than before, not %u: "
		       "some connections were closed or never accepted\n", socks1 - socks0, n);
	if (idle_timeout && t_open + 1.5 > idle_timeout / 1000.0)
		printf("\nwarning: the server's idle timeout (%u ms) is shorter than the "
		       "measurement; some connections may have been closed\n", idle_timeout);
	if (ping != 0)
		printf("\nwarning: the warm-up connection did not answer PING at the end: %s\n",
		       parley_strerror(ping));
	if (cfg->json) {
		FILE *jf = fopen(cfg->json, "w");
		if (!jf) {
			fprintf(stderr, "parley-bench: --json %s: %s\n", cfg->json, strerror(errno));
			failures++;
		} else {
			struct bench_json j;
			bj_init(&j, jf);
			bj_str(&j, "tool", "parley-bench");
			bj_str(&j, "mode", "idle-conns");
			bj_machine(&j, "machine");
			bj_obj(&j, "settings");
			bj_u64(&j, "connections", n);
			bj_bool(&j, "tls", cfg->tls);
			bj_u64(&j, "client_processes", started);
			bj_end(&j);
			bj_obj(&j, "server");
			bj_str(&j, "system", "parleyd");
			bj_str(&j, "args", cfg->connect ? cfg->connect : cfg->parleyd_args);
			bj_num(&j, "sockets_before", (double)socks0);
			bj_num(&j, "sockets_after", (double)socks1);
			bj_num(&j, "vmrss_kib_before", (double)rss0);
			bj_num(&j, "vmrss_kib_after", (double)rss1);
			bj_num(&j, "bytes_per_connection", per_conn);
			bj_num(&j, "open_auth_seconds", t_open);
			bj_end(&j);
			if (bj_finish(&j) != 0)
				failures++;
			fclose(jf);
		}
	}
	bench_srv_stop(&s);
	return failures || rc ? 1 : 0;
}

/* ---- delivery ---------------------------------------------------------------------- */

#define DELIV_MAGIC 0x70617262656e6368ull /* "parbench" */

static int deliver_run(const struct bench_cfg *cfg, const struct bench_srv *s, double rate,
		       uint32_t payload, int round, struct deliv_stat *st)
{
	memset(st, 0, sizeof *st);
	struct wire_conn *snd = calloc(1, sizeof *snd), *rcv = calloc(1, sizeof *rcv);
	uint8_t *body = malloc(payload);
	struct parley_msg *m = malloc(sizeof *m);
	uint64_t nslots = (uint64_t)(rate * (cfg->warmup + cfg->seconds)) + 1;
	uint64_t *intended = calloc(nslots, sizeof *intended);
	uint8_t *seen = calloc(nslots, 1);
	/* when each slot's SEND_ACK and first EVENT arrived: "deliver after
	 * ack" (the delivery's own delay, free of the sender's queueing) */
	uint64_t *ack_at = calloc(nslots, sizeof *ack_at);
	uint64_t *dlv_at = calloc(nslots, sizeof *dlv_at);
	struct bench_hist *hd = malloc(sizeof *hd), *ha = malloc(sizeof *ha),
			  *lag = malloc(sizeof *lag), *hx = malloc(sizeof *hx);
	uint64_t dlv_first = 0; /* EVENTs that came before their SEND_ACK */
	int rc = 0;
	bool reported = false;
	char sender[64], receiver[64], conv[256], errtxt[160] = "";
	struct parley_hello_ok hello = {0};
	uint64_t window_waits = 0;
	if (!snd || !rcv || !body || !m || !intended || !seen || !hd || !ha || !lag ||
	    !ack_at || !dlv_at || !hx) {
		rc = -ENOMEM;
		goto out;
	}
	snd->rbuf = malloc(WIRE_RBUF);
	rcv->rbuf = malloc(WIRE_RBUF);
	if (!snd->rbuf || !rcv->rbuf) {
		rc = -ENOMEM;
		goto out;
	}
	bench_hist_init(hd);
	bench_hist_init(ha);
	bench_hist_init(lag);
	bench_hist_init(hx);
	bench_fill_payload(body, payload, cfg->seed);
	/* the receiver takes early EVENTs (delivery counts the first of a
	 * message's EVENTs; its inbox EVENT then comes without the body) */
	rcv->features = cfg->no_early ? 0 : PARLEY_FEAT_EARLY;
	/* fresh users per round so inboxes start empty */
	snprintf(sender, sizeof sender, "bench-snd-%d-%d", (int)getpid(), round);
	snprintf(receiver, sizeof receiver, "bench-rcv-%d-%d", (int)getpid(), round);
	if ((rc = bench_session_open(cfg, rcv, s->host, s->port, NULL, receiver, "bench-rcv",
				     HANDSHAKE_TIMEOUT_MS, NULL)) ||
	    (rc = bench_session_open(cfg, snd, s->host, s->port, NULL, sender, "bench-snd",
				     HANDSHAKE_TIMEOUT_MS, &hello)))
		goto out;
	/* Client-side flow control, as a real client must do: never more SENDs
	 * outstanding than the server allows (HELLO_OK max_inflight; more get
	 * ERROR FULL). A slot that finds the window full waits here, and its
	 * latency still counts from its intended time. */
	uint32_t window = hello.max_inflight ? hello.max_inflight : 64;
	if ((rc = bench_conv_open(snd, m, receiver, HANDSHAKE_TIMEOUT_MS, conv, sizeof conv,
				  errtxt, sizeof errtxt))) {
		if (rc == -PARLEY_EPROTO)
			fprintf(stderr, "parley-bench: delivery: %s\n", errtxt);
		goto out;
	}
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_SYNC;
	m->sync.from_inbox_seq = 0;
	if ((rc = wire_send(rcv, rcv->next_req++, m)) ||
	    (rc = wire_recv(rcv, HANDSHAKE_TIMEOUT_MS, m, NULL)))
		goto out;
	if (m->type != PARLEY_T_SYNC_OK) {
		fprintf(stderr, "parley-bench: delivery: SYNC answered %s\n",
			parley_proto_type_name(m->type));
		rc = -PARLEY_EPROTO;
		goto out;
	}

	uint64_t t0 = parley_mono_ns();
	uint64_t win_start, win_end, drain_end;
	bench_window(cfg, t0, &win_start, &win_end, &drain_end);
	uint64_t k = 0, next = t0, delivered = 0, acked = 0, errors = 0, dups = 0;
	uint64_t last_inbox = 0, acked_inbox = 0, sent = 0, early_events = 0;
	uint64_t resent = 0; /* inbox EVENTs in full after their early one */
	uint64_t last_ack_ns = t0;
	struct pollfd pf[2] = {{snd->fd, POLLIN, 0}, {rcv->fd, POLLIN, 0}};
	while (rc == 0) {
		uint64_t now = parley_mono_ns();
		if (next >= win_end && delivered + errors >= sent && acked + errors >= sent)
			break;
		if (now >= drain_end)
			break;
		bool window_full = false;
		while (next <= now && next < win_end && k < nslots) {
			if (sent - acked - errors >= window) {
				window_full = true;
				window_waits++;
				break;
			}
			memset(m, 0, sizeof *m);
			m->type = PARLEY_T_SEND;
			m->send.conv = parley_str_c(conv);
			wire_msgid_put(m->send.client_msg_id, DELIV_MAGIC, k);
			m->send.content_type = PARLEY_CT_TEXT;
			m->send.body.p = body;
			m->send.body.len = payload;
			intended[k] = next;
			uint64_t t = parley_mono_ns();
			if ((rc = wire_send(snd, snd->next_req++, m)) != 0)
				break;
			if (next >= win_start)
				bench_hist_record(lag, t - next);
			sent++;
			k++;
			next = t0 + (uint64_t)((double)k * 1e9 / rate);
		}
		if (rc)
			break;
		/* wait for input, at most until the next send slot (1 ms cap;
		 * when the window is full only an ACK can unblock us) */
		int pr = bench_poll(pf, 2, next < win_end && !window_full ? next : 0);
		if (pr < 0) {
			rc = pr;
			break;
		}
		for (int side = 0; side < 2 && rc == 0; side++) {
			if (!(pf[side].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			struct wire_conn *c = side ? rcv : snd;
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
				if (m->type == PARLEY_T_EVENT) {
					if (m->event.inbox_seq)
						last_inbox = m->event.inbox_seq;
					else
						early_events++;
					/* delivered early already: no body */
					if (m->event.flags & PARLEY_MSGF_EARLY_SEEN)
						continue;
					if (wire_msgid_tag(m->event.client_msg_id) != DELIV_MAGIC)
						continue;
					uint64_t idx = wire_msgid_idx(m->event.client_msg_id);
					if (idx >= k)
						continue;
					if (!dlv_at[idx])
						dlv_at[idx] = at;
					/* seen[idx]: bit 0 its early EVENT, bit 1 its
					 * inbox EVENT. The same path twice is a double;
					 * the inbox EVENT in full after the early one is
					 * what PROTOCOL.md "Early delivery" allows when
					 * the server no longer remembers it sent it early
					 * (counted, not a double: the client drops it by
					 * (conv, conv_seq)) */
					uint8_t bit = m->event.inbox_seq ? 2 : 1;
					if (seen[idx] & bit) {
						dups++;
						continue;
					}
					if (seen[idx]) {
						seen[idx] |= bit;
						resent++;
						continue;
					}
					seen[idx] = bit;
					delivered++;
					if (intended[idx] >= win_start && intended[idx] < win_end)
						bench_hist_record(hd, at - intended[idx]);
				} else if (m->type == PARLEY_T_SEND_ACK) {
					uint64_t idx = wire_msgid_idx(m->send_ack.client_msg_id);
					acked++;
					if (idx < k && !ack_at[idx])
						ack_at[idx] = at;
					if (idx < k && intended[idx] >= win_start &&
					    intended[idx] < win_end)
						bench_hist_record(ha, at - intended[idx]);
				} else if (m->type == PARLEY_T_ERROR) {
					errors++;
					snprintf(errtxt, sizeof errtxt, "%u %.*s", m->error.code,
						 m->error.text.len, m->error.text.p);
				} else if (m->type == PARLEY_T_GOAWAY) {
					snprintf(errtxt, sizeof errtxt, "GOAWAY %u", m->goaway.reason);
					rc = -PARLEY_ECLOSED;
					break;
				}
			}
		}
		/* cumulative EVENT_ACK every 64 events or 50 ms */
		uint64_t now2 = parley_mono_ns();
		if (rc == 0 && last_inbox > acked_inbox &&
		    (last_inbox - acked_inbox >= 64 || now2 - last_ack_ns > 50000000ull)) {
			memset(m, 0, sizeof *m);
			m->type = PARLEY_T_EVENT_ACK;
			m->event_ack.up_to_inbox_seq = last_inbox;
			rc = wire_send(rcv, 0, m);
			acked_inbox = last_inbox;
			last_ack_ns = now2;
		}
	}
	uint64_t in_window = bench_in_window(intended, k, win_start, win_end);
	for (uint64_t i = 0; i < k; i++) {
		if (intended[i] < win_start || intended[i] >= win_end || !ack_at[i] ||
		    !dlv_at[i])
			continue;
		if (dlv_at[i] < ack_at[i])
			dlv_first++;
		bench_hist_record(hx, dlv_at[i] > ack_at[i] ? dlv_at[i] - ack_at[i] : 0);
	}
	struct bench_json *js = bench_sink();
	if (js) {
		bench_deliv_json_begin(js, "parleyd", NULL, rate, payload, in_window, hd,
				       sent - delivered);
		bj_hist(js, "ack_latency", ha);
		bj_hist(js, "pacer_lag", lag);
		bj_u64(js, "window", window);
		bj_u64(js, "window_full", window_waits);
		bj_u64(js, "early_events", early_events);
		bj_hist(js, "deliver_after_ack", hx);
		bj_u64(js, "delivered_before_ack", dlv_first);
		bj_u64(js, "errors", errors);
		bj_u64(js, "early_resent_in_full", resent);
		bj_bool(js, "duplicates", dups);
		bj_bool(js, "ok", rc == 0);
		bj_end(js);
	}
	printf("| parleyd (fdatasync before ack, 1 node) | %.0f | %u | %llu | %llu | %llu | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | "
	       "%.1f | window %u, full %llu×; early EVENTs %llu (%llu re-sent in full by the inbox); deliver after ack p50 %.1f / p99 %.1f / p99.9 %.1f µs (%llu before it); pacer lag p99 %.1f µs%s%s%s%s |\n",
	       rate, payload, (unsigned long long)in_window, (unsigned long long)hd->count,
	       (unsigned long long)(sent - delivered),
	       (double)bench_hist_quantile(hd, 0.5) / 1e3,
	       (double)bench_hist_quantile(hd, 0.99) / 1e3,
	       (double)bench_hist_quantile(hd, 0.999) / 1e3, (double)hd->max_ns / 1e3,
	       (double)bench_hist_quantile(ha, 0.5) / 1e3,
	       (double)bench_hist_quantile(ha, 0.99) / 1e3,
	       (double)bench_hist_quantile(ha, 0.999) / 1e3, window,
	       (unsigned long long)window_waits, (unsigned long long)early_events,
	       (unsigned long long)resent,
	       (double)bench_hist_quantile(hx, 0.5) / 1e3,
	       (double)bench_hist_quantile(hx, 0.99) / 1e3,
	       (double)bench_hist_quantile(hx, 0.999) / 1e3, (unsigned long long)dlv_first,
	       (double)bench_hist_quantile(lag, 0.99) / 1e3, errors ? "; errors: " : "",
	       errors ? errtxt : "", dups ? "; DUPLICATES" : "",
	       rc ? "; FAILED" : "");
	if (rc)
		fprintf(stderr, "parley-bench: delivery at %.0f/s: %s %s\n", rate,
			parley_strerror(rc), errtxt);
	if (rc == 0 && (errors || dups || delivered < sent))
		rc = -PARLEY_EIO;
	bench_deliv_stat(st, rc == 0 && hd->count > 0, hd);
	reported = true;
out:
	if (rc && !reported)
		fprintf(stderr, "parley-bench: delivery: setup against %s:%d failed: %s\n",
			s->host, s->port, parley_strerror(rc));
	if (snd) {
		wire_close(snd);
		free(snd->rbuf);
	}
	if (rcv) {
		wire_close(rcv);
		free(rcv->rbuf);
	}
	free(snd);
	free(rcv);
	free(body);
	free(m);
	free(intended);
	free(seen);
	free(ack_at);
	free(dlv_at);
	free(hx);
	free(hd);
	free(ha);
	free(lag);
	return rc;
}

/* ---- the server's stage histograms (admin port /metrics) ---------------------------- */

#define METRICS_CAP (1u << 20)
#define METRICS_TIMEOUT_MS 3000

/* GET /metrics from 127.0.0.1:port into buf (NUL-terminated, headers
 * included): bytes read, or negative. */
static long metrics_get(int port, char *buf, size_t cap)
{
	return bench_http_req("GET", port, "/metrics", buf, cap,
			      METRICS_TIMEOUT_MS);
}

/* The stage histograms of the server now; false when its admin port does
 * not answer (none given, or the server does not serve one). */
static bool stages_read(const struct bench_srv *s, char *buf, struct bench_stages *out)
{
	out->n = 0;
	if (s->admin_port <= 0 || !buf)
		return false;
	long n = metrics_get(s->admin_port, buf, METRICS_CAP);
	if (n <= 0 || bench_http_status(buf, (size_t)n) != 200)
		return false;
	return bench_stages_parse(buf, out) != -EPROTO && out->n > 0;
}

static void fmt_bound(char *b, size_t cap, double sec)
{
	if (isnan(sec))
		snprintf(b, cap, "–");
	else if (isinf(sec))
		snprintf(b, cap, "> max");
	else if (sec < 1e-3)
		snprintf(b, cap, "%.0f µs", sec * 1e6);
	else
		snprintf(b, cap, "%.2f ms", sec * 1e3);
}

/* One rate's breakdown: every stage that had samples in the run. */
static void stages_print(double rate, uint32_t payload, const struct bench_stages *d)
{
	printf("\n#### %.0f msg/s, %u B: parleyd stages over the run (quantiles are "
	       "log2 bucket upper bounds)\n\n", rate, payload);
	printf("| family | stage | samples | mean µs | p50 ≤ | p99 ≤ | p99.9 ≤ |\n");
	printf("|---|---|---:|---:|---:|---:|---:|\n");
	for (unsigned i = 0; i < d->n; i++) {
		const struct bench_stage *st = &d->s[i];
		if (st->count <= 0)
			continue;
		char q[3][24];
		fmt_bound(q[0], sizeof q[0], bench_stage_quantile(st, 0.5));
		fmt_bound(q[1], sizeof q[1], bench_stage_quantile(st, 0.99));
		fmt_bound(q[2], sizeof q[2], bench_stage_quantile(st, 0.999));
		printf("| %s | %s | %.0f | %.1f | %s | %s | %s |\n", st->family, st->name,
		       st->count, st->sum / st->count * 1e6, q[0], q[1], q[2]);
	}
}

int bench_delivery(const struct bench_cfg *cfg, const struct disk_result *floor)
{
	/* per rate and payload: the stage deltas of parleyd's /metrics */
	static struct bench_stages sd[BENCH_MAX_LIST][BENCH_MAX_LIST];
	static struct bench_stages s0, s1;
	static bool have_sd[BENCH_MAX_LIST][BENCH_MAX_LIST];
	memset(have_sd, 0, sizeof have_sd);
	char *mbuf = malloc(METRICS_CAP);
	static struct deliv_stat sp[BENCH_MAX_LIST][BENCH_MAX_LIST],
		sn[BENCH_MAX_LIST][BENCH_MAX_LIST];
	memset(sp, 0, sizeof sp);
	memset(sn, 0, sizeof sn);
	struct bench_srv s;
	int rc = bench_srv_start(cfg, &s);
	if (rc != 0) {
		bench_srv_stop(&s);
		free(mbuf);
		return rc;
	}
	printf("\n### delivery: send -> EVENT at the receiver, open loop (latency from the "
	       "intended send time)\n\n");
	printf("| system | rate msg/s | body B | sent in window | delivered in window | not delivered | "
	       "deliver p50 µs | p99 µs | p99.9 µs | max µs | SEND_ACK p50 µs | p99 µs | "
	       "p99.9 µs | note |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
	int failures = 0;
	struct nats_srv *ns = NULL;
	if (cfg->nats_server) {
		bench_watchdog_arm(30);
		if (bench_nats_start(cfg, &ns) != 0) {
			failures++;
			bench_nats_stop(ns);
			ns = NULL;
		}
		bench_watchdog_arm(0);
	}
	/* parleyd and the NATS reference alternate per rate so both see the
	 * same background load */
	for (unsigned r = 0; r < cfg->n_rates; r++)
		for (unsigned j = 0; j < cfg->n_payloads; j++) {
			bench_watchdog_arm(cfg->warmup + cfg->seconds + BENCH_DRAIN_SECONDS + 30);
			bool before = stages_read(&s, mbuf, &s0);
			if (deliver_run(cfg, &s, cfg->rates[r], cfg->payloads[j],
					(int)(r * BENCH_MAX_LIST + j), &sp[r][j]) != 0)
				failures++;
			if (before && stages_read(&s, mbuf, &s1)) {
				bench_stages_delta(&s0, &s1, &sd[r][j]);
				have_sd[r][j] = true;
			}
			bench_watchdog_arm(0);
			if (ns) {
				bench_watchdog_arm(cfg->warmup + cfg->seconds +
						   BENCH_DRAIN_SECONDS + 30);
				if (bench_nats_delivery(cfg, ns, cfg->rates[r],
							cfg->payloads[j], &sn[r][j]) != 0)
					failures++;
				bench_watchdog_arm(0);
			}
		}
	bench_nats_stop(ns);
	bench_srv_stop(&s);

	bool have_floor = floor && floor->ok;
	double fp99 = have_floor ? (double)bench_hist_quantile(&floor->lat4k, 0.99) / 1e3 : 0;
	printf("\n### delivery ratios (same run)\n\n");
	printf("| rate msg/s | body B | parleyd deliver p50 / p99 / p99.9 µs | NATS p50 / p99 / p99.9 µs | "
	       "parleyd ÷ NATS p99 | 4 KiB fdatasync p99 µs | parleyd p99 ÷ fdatasync p99 | "
	       "parleyd p99 ≤ 5000 µs |\n");
	printf("|---:|---:|---:|---:|---:|---:|---:|---|\n");
	for (unsigned r = 0; r < cfg->n_rates; r++)
		for (unsigned j = 0; j < cfg->n_payloads; j++) {
			const struct deliv_stat *a = &sp[r][j], *b = &sn[r][j];
			char nats[96] = "–", rn[32] = "–", fl[32] = "–", rf[32] = "–";
			if (b->ok) {
				snprintf(nats, sizeof nats, "%.1f / %.1f / %.1f", b->p50_us,
					 b->p99_us, b->p999_us);
				if (a->ok && b->p99_us > 0)
					snprintf(rn, sizeof rn, "%.1f×", a->p99_us / b->p99_us);
			}
			if (have_floor) {
				snprintf(fl, sizeof fl, "%.1f", fp99);
				if (a->ok && fp99 > 0)
					snprintf(rf, sizeof rf, "%.1f×", a->p99_us / fp99);
			}
			printf("| %.0f | %u | %.1f / %.1f / %.1f%s | %s | %s | %s | %s | %s |\n",
			       cfg->rates[r], cfg->payloads[j], a->p50_us, a->p99_us, a->p999_us,
			       a->ok ? "" : " (FAILED)", nats, rn, fl, rf,
			       !a->ok ? "–" : a->p99_us <= 5000 ? "met" : "missed");
		}
	/* The question: the highest rate whose delivery p99 stays
	 * under 5 ms. Of the rates measured (give more with --rate), the
	 * highest below which every measured rate met it too. */
	for (unsigned j = 0; j < cfg->n_payloads; j++) {
		double best = 0, first_miss = 0;
		for (unsigned r = 0; r < cfg->n_rates; r++) {
			const struct deliv_stat *a = &sp[r][j];
			if (!(a->ok && a->p99_us <= 5000) &&
			    (first_miss == 0 || cfg->rates[r] < first_miss))
				first_miss = cfg->rates[r];
		}
		for (unsigned r = 0; r < cfg->n_rates; r++) {
			const struct deliv_stat *a = &sp[r][j];
			if (a->ok && a->p99_us <= 5000 &&
			    (first_miss == 0 || cfg->rates[r] < first_miss) &&
			    cfg->rates[r] > best)
				best = cfg->rates[r];
		}
		printf("\n- %u B: highest measured rate with parleyd deliver p99 ≤ 5 ms "
		       "(every lower measured rate too): ", cfg->payloads[j]);
		if (best > 0)
			printf("%.0f msg/s", best);
		else
			printf("none");
		if (first_miss > 0)
			printf("; lowest measured rate that missed it: %.0f msg/s\n",
			       first_miss);
		else
			printf("; every measured rate met it (give higher --rate)\n");
	}
	bool any = false;
	for (unsigned r = 0; r < cfg->n_rates; r++)
		for (unsigned j = 0; j < cfg->n_payloads; j++)
			if (have_sd[r][j]) {
				if (!any)
					printf("\n### delivery: where parleyd's time went "
					       "(/metrics stage histograms, docs/SERVER.md)\n");
				any = true;
				stages_print(cfg->rates[r], cfg->payloads[j], &sd[r][j]);
			}
	if (!any)
		printf("\n(no per-stage breakdown: parleyd's admin port did not answer; "
		       "with --connect give --admin-port)\n");
	free(mbuf);
	fflush(stdout);
	return failures ? 1 : 0;
}

/* ---- durable SENDs/s over TCP (server-level peer of Redis XADD) --------------------- */

struct ap_conn {
	struct wire_conn w;
	char conv[128];
	uint64_t sent_ns;   /* issue time of the one outstanding SEND */
	uint64_t next_id;   /* client_msg_id counter */
	bool busy;
};

static int ap_send(struct ap_conn *c, struct parley_msg *m, const uint8_t *body,
		   uint32_t len, uint32_t idx)
{
	memset(m, 0, sizeof *m);
	m->type = PARLEY_T_SEND;
	m->send.conv = parley_str_c(c->conv);
	wire_msgid_put(m->send.client_msg_id, DELIV_MAGIC ^ idx, ++c->next_id);
	m->send.content_type = PARLEY_CT_TEXT;
	m->send.body.p = body;
	m->send.body.len = len;
	c->sent_ns = parley_mono_ns();
	c->busy = true;
	return wire_send(&c->w, c->w.next_req++, m);
}

int bench_server_appends(const struct bench_cfg *cfg, uint32_t producers, uint32_t payload,
			 bool tls, struct load_result *out)
{
	struct bench_srv s;
	int rc = bench_srv_start(cfg, &s);
	if (rc == 0)
		rc = bench_appends_at(cfg, s.host, tls ? s.tls_port : s.port, producers, payload,
				      tls, out);
	else {
		bench_load_begin(out, tls ? "parleyd-tls" : "parleyd", producers, payload,
				 0);
		fprintf(stderr, "parley-bench: server-appends: start: %s\n", parley_strerror(rc));
	}
	bench_srv_stop(&s);
	return rc;
}

int bench_appends_at(const struct bench_cfg *cfg, const char *host, int port, uint32_t producers,
		     uint32_t payload, bool tls, struct load_result *out)
{
	return bench_appends_routed(cfg, host, port, NULL, producers, payload, tls, out);
}

int bench_appends_routed(const struct bench_cfg *cfg, const char *host, int port,
			 const int *ports, uint32_t producers, uint32_t payload, bool tls,
			 struct load_result *out)
{
	bench_load_begin(out, tls ? "parleyd-tls" : "parleyd", producers, payload, 0);
	int rc = 0;
	struct ap_conn *cs = calloc(producers, sizeof *cs);
	struct pollfd *pf = calloc(producers, sizeof *pf);
	struct parley_msg *m = malloc(sizeof *m);
	uint8_t *body = malloc(payload);
	char user[64], peer[64], errtxt[160] = "";
	uint32_t opened = 0;
	SSL_CTX *tctx = tls ? wire_tls_client_ctx() : NULL;
	if (rc == 0 && (!cs || !pf || !m || !body || (tls && !tctx)))
		rc = -ENOMEM;
	if (rc != 0)
		goto out;
	bench_fill_payload(body, payload, cfg->seed);
	/* one sender per connection, each in its own 1:1 conversation; the
	 * peers are never connected (their inbox pointers are still written) */
	for (uint32_t i = 0; i < producers && rc == 0; i++, opened++) {
		struct ap_conn *c = &cs[i];
		c->w.fd = -1;
		c->w.rbuf = malloc(WIRE_RBUF);
		if (!c->w.rbuf) {
			rc = -ENOMEM;
			break;
		}
		snprintf(user, sizeof user, "bench-ap-%u", i);
		snprintf(peer, sizeof peer, "bench-ap-peer-%u", i);
		if ((rc = bench_chat_open(cfg, &c->w, m, host, ports ? ports[i] : port,
					  tls ? tctx : NULL, user, peer,
					  HANDSHAKE_TIMEOUT_MS, NULL, c->conv, sizeof c->conv,
					  errtxt, sizeof errtxt)))
			break;
		pf[i].fd = c->w.fd;
		pf[i].events = POLLIN;
	}
	if (rc != 0)
		goto out;

	uint64_t t0 = parley_mono_ns();
	uint64_t win_start, win_end, drain_end;
	bench_window(cfg, t0, &win_start, &win_end, &drain_end);
	uint64_t acks = 0, errors = 0, outstanding = 0;
	for (uint32_t i = 0; i < producers && rc == 0; i++) {
		rc = ap_send(&cs[i], m, body, payload, i);
		outstanding++;
	}
	while (rc == 0) {
		uint64_t now = parley_mono_ns();
		if (now >= win_end && outstanding == 0)
			break;
		if (now >= drain_end) {
			snprintf(out->note, sizeof out->note, "%llu SENDs still in flight after "
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
			struct ap_conn *c = &cs[i];
			bool filled = false;
			int d;
			while ((d = wire_pump(&c->w, &filled, m, NULL)) != 0) {
				if (d < 0) {
					rc = d;
					break;
				}
				uint64_t at = parley_mono_ns();
				bool done = false;
				if (m->type == PARLEY_T_SEND_ACK) {
					done = true;
					if (at >= win_start && at <= win_end) {
						acks++;
						bench_hist_record(&out->lat, at - c->sent_ns);
					}
				} else if (m->type == PARLEY_T_ERROR) {
					done = true;
					errors++;
					snprintf(errtxt, sizeof errtxt, "ERROR %u %.*s", m->error.code,
						 m->error.text.len, m->error.text.p);
				} else if (m->type == PARLEY_T_GOAWAY) {
					snprintf(errtxt, sizeof errtxt, "GOAWAY %u", m->goaway.reason);
					rc = -PARLEY_ECLOSED;
					break;
				}
				if (done && c->busy) {
					c->busy = false;
					outstanding--;
					if (at < win_end) {
						if ((rc = ap_send(c, m, body, payload, i)) != 0)
							break;
						outstanding++;
					}
				}
			}
		}
	}
	bench_load_end(out, cfg, acks, errors, payload, rc);
	if (errors && !out->note[0])
		snprintf(out->note, sizeof out->note, "%s", errtxt);
out:
	if (rc != 0)
		fprintf(stderr, "parley-bench: server-appends%s (%u connections, %u opened): %s %s\n",
			tls ? " over TLS" : "", producers, opened, parley_strerror(rc), errtxt);
	if (cs)
		for (uint32_t i = 0; i < producers; i++) {
			if (cs[i].w.rbuf) {
				wire_close(&cs[i].w);
				free(cs[i].w.rbuf);
			}
		}
	free(cs);
	free(pf);
	free(m);
	free(body);
	SSL_CTX_free(tctx);
	return rc;
}
