/*
 * itest.h — harness for parleyd integration tests (header-only: every
 * test_*.c in this directory is its own executable with its own main).
 *
 * What it gives a test:
 *   - real parleyd processes on free loopback ports with a temp data dir
 *     (it_server_start / it_server_kill / it_server_stop);
 *   - a development TLS CA + server certificate (openssl CLI) and an HS256
 *     secret, made once per test in its temp dir;
 *   - JWT minting with full control over the claims and the key (HS256,
 *     and ES256 with a throwaway key), so tests can make expired,
 *     not-yet-valid, wrong-audience and wrong-signature tokens;
 *   - libparley clients (it_client) and a raw socket for malformed input.
 *
 * Cleanup: every parleyd child gets PR_SET_PDEATHSIG(SIGKILL), and
 * it_fail()/atexit kill the children, so a failing test never leaves a
 * server behind. The temp dir is removed after a passing test; a failing
 * one keeps it (server logs and data dirs, its path printed) for the
 * post-mortem, as does PARLEY_KEEP_TMP=1 always. IT_CHECK prints
 * file:line, the seed and the message, then fails.
 *
 * Randomness: it_init() picks a seed (PARLEY_SEED env or the clock),
 * prints it, and it_rng is the only source of randomness in the tests.
 * No assertion depends on wall-clock durations; timeouts only bound waits.
 */
#ifndef PARLEY_ITEST_H
#define PARLEY_ITEST_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "parley_client.h"
#include "parley_common.h"
#include "parley_proto.h"

/* ---- globals, failure, cleanup -------------------------------------------- */

#define IT_MAX_SERVERS 8
static pid_t it_pids[IT_MAX_SERVERS];
static char it_dir[256];
static uint64_t it_seed;
static struct parley_rng it_rng;
static const char *it_name = "itest";

static __attribute__((unused)) void it_kill_all(void)
{
	for (int i = 0; i < IT_MAX_SERVERS; i++)
		if (it_pids[i] > 0) {
			kill(it_pids[i], SIGKILL);
			waitpid(it_pids[i], NULL, 0);
			it_pids[i] = 0;
		}
}

/* A test's own cleanup of processes it_pids does not hold (e.g. a
 * script's process group), run by it_fail as well as at exit: it_fail
 * ends with _exit, which runs no atexit handler. */
static void (*it_on_cleanup)(void);
static int it_failed; /* it_fail ran: keep the temp dir */

static __attribute__((unused)) void it_cleanup(void)
{
	if (it_on_cleanup) {
		void (*f)(void) = it_on_cleanup;
		it_on_cleanup = NULL; /* once */
		f();
	}
	it_kill_all();
	if (it_dir[0] && it_failed) {
		fprintf(stderr, "itest: kept %s (server logs and data) for the "
			"post-mortem; remove it when done\n", it_dir);
	} else if (it_dir[0] && !getenv("PARLEY_KEEP_TMP")) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", it_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "itest: could not remove %s\n", it_dir);
	}
}

static __attribute__((unused)) void it_dump_logs(void);

static __attribute__((unused)) void __attribute__((noreturn)) it_fail(const char *file, int line,
					       const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "FAIL %s:%d (test=%s seed=%" PRIu64 "): ", file, line,
		it_name, it_seed);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	it_failed = 1;
	it_dump_logs();
	it_cleanup();
	_exit(1);
}

#define IT_CHECK(cond, ...)                                                    \
	do {                                                                   \
		if (!(cond))                                                   \
			it_fail(__FILE__, __LINE__, "check failed: " #cond " " \
				__VA_ARGS__);                                  \
	} while (0)
#define IT_OK(expr)                                                            \
	do {                                                                   \
		int it_rc_ = (expr);                                           \
		if (it_rc_ < 0)                                                \
			it_fail(__FILE__, __LINE__, "%s returned %d (%s)",     \
				#expr, it_rc_, parley_strerror(it_rc_));       \
	} while (0)

static __attribute__((unused)) void it_on_signal(int sig)
{
	it_kill_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Prepare the temp dir, seed, TLS material and HS256 secret. */
static __attribute__((unused)) void it_init(const char *name)
{
	it_name = name;
	const char *s = getenv("PARLEY_SEED");
	it_seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
	it_rng.s = it_seed;
	printf("%s: seed=%" PRIu64 " (rerun with PARLEY_SEED=%" PRIu64 ")\n",
	       name, it_seed, it_seed);
	fflush(stdout);
	if (!getenv("PARLEY_BIN_DIR")) {
		fprintf(stderr, "%s: PARLEY_BIN_DIR is not set (run via ctest)\n",
			name);
		exit(77);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGABRT, it_on_signal);
	signal(SIGSEGV, it_on_signal);
	signal(SIGTERM, it_on_signal);
	snprintf(it_dir, sizeof it_dir, "/tmp/parley-it-%s-XXXXXX", name);
	if (!mkdtemp(it_dir)) {
		perror("mkdtemp");
		exit(1);
	}
	atexit(it_cleanup);
	char cmd[2048];
	/* A dev CA and a server certificate for localhost / 127.0.0.1. */
	snprintf(cmd, sizeof cmd,
		 "cd '%s' && "
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
		 "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=parley-test-ca "
		 ">/dev/null 2>&1 && "
		 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-keyout server.key -out server.csr -subj /CN=localhost "
		 ">/dev/null 2>&1 && "
		 "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext && "
		 "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
		 "-CAcreateserial -out server.pem -days 2 -extfile san.ext "
		 ">/dev/null 2>&1 && "
		 "printf 'it-secret-0123456789-abcdefghijklmnop' > jwt.secret",
		 it_dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "%s: cannot create TLS material with openssl\n",
			name);
		exit(77);
	}
}

static __attribute__((unused)) char *it_path(const char *leaf)
{
	static char buf[4][512];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", it_dir, leaf);
	return buf[k];
}

/* ---- ports and processes ------------------------------------------------------ */

static __attribute__((unused)) uint16_t it_free_port(void)
{
	for (int tries = 0; tries < 100; tries++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t al = sizeof a;
		if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
		    getsockname(fd, (struct sockaddr *)&a, &al)) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		uint16_t p = ntohs(a.sin_port);
		close(fd);
		if (p >= 10000)
			return p;
	}
	it_fail(__FILE__, __LINE__, "no free port");
}

static __attribute__((unused)) int it_tcp_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
		int e = -errno;
		close(fd);
		return e;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

static __attribute__((unused)) void it_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
			      .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

struct it_server {
	pid_t pid;
	int slot;
	uint16_t port, tls_port, admin_port;
	char data[300];
	char log[300];
	const char *extra[32]; /* extra flags (NULL-terminated) */
	int starts;            /* it_server_start calls that came up */
	/* a restart that finds a port taken (another process bound it while
	 * this server was down) picks new ports, as a first start does; only
	 * for tests whose clients read the ports after each start */
	bool new_ports_on_restart;
};

static struct it_server *it_servers[IT_MAX_SERVERS];

static __attribute__((unused)) void it_dump_logs(void)
{
	for (int i = 0; i < IT_MAX_SERVERS; i++) {
		if (!it_servers[i])
			continue;
		char cmd[400];
		fprintf(stderr, "---- last lines of %s ----\n", it_servers[i]->log);
		snprintf(cmd, sizeof cmd, "tail -n 40 '%s' >&2", it_servers[i]->log);
		if (system(cmd) != 0)
			fprintf(stderr, "(no log)\n");
	}
}

/* A free port that is none of s's client, TLS and admin ports (a probe's
 * port may be handed out again once it is closed): for a port s is
 * given besides those (a cluster node's peer port). */
static __attribute__((unused)) uint16_t it_free_port_besides(const struct it_server *s)
{
	uint16_t p;
	do
		p = it_free_port();
	while (p == s->port || p == s->tls_port || p == s->admin_port);
	return p;
}

/* Three distinct free ports for a server's client, TLS and admin ports. */
static __attribute__((unused)) void it_pick_ports(struct it_server *s)
{
	s->port = it_free_port();
	s->tls_port = it_free_port();
	s->admin_port = it_free_port();
	while (s->tls_port == s->port)
		s->tls_port = it_free_port();
	while (s->admin_port == s->port || s->admin_port == s->tls_port)
		s->admin_port = it_free_port();
}

/* Fill ports and paths; `name` names the data dir (reused on restart). */
static __attribute__((unused)) void it_server_init(struct it_server *s, const char *name)
{
	memset(s, 0, sizeof *s);
	it_pick_ports(s);
	snprintf(s->data, sizeof s->data, "%s/%s-data", it_dir, name);
	snprintf(s->log, sizeof s->log, "%s/%s.log", it_dir, name);
	s->slot = -1;
}

/* Start parleyd and wait until its plain TCP port accepts. The ports come
 * from it_free_port, which closes its probe socket: until parleyd binds,
 * another test running in parallel may take one (as a client's ephemeral
 * port). So the first start of a server that finds a port taken picks
 * new ones and tries again (a restart keeps its ports: clients know
 * them). */
static __attribute__((unused)) void it_server_start_once(struct it_server *s, int *busy);
static __attribute__((unused)) void it_server_start(struct it_server *s)
{
	for (int tries = 0;; tries++) {
		int busy = 0;
		it_server_start_once(s, &busy);
		if (!busy) {
			s->starts++;
			return;
		}
		if (tries == 4)
			it_fail(__FILE__, __LINE__, "five tries found a port taken, "
				"log %s", s->log);
		fprintf(stderr, "%s: a port was taken before parleyd bound it; "
			"new ports (try %d)\n", s->log, tries + 1);
		it_pick_ports(s);
	}
}

/* needle in a line of path's text after byte `from` (0: the whole file) */
static __attribute__((unused)) int it_log_tail_has(const char *path, long from,
						  const char *needle)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	fseek(f, from, SEEK_SET);
	char line[4096];
	int found = 0;
	while (!found && fgets(line, sizeof line, f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

/* Prints path's lines after byte `from` to stderr, at most max_lines. */
static __attribute__((unused)) void it_log_print_from(const char *path,
						     long from, int max_lines)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "(no log)\n");
		return;
	}
	fseek(f, from, SEEK_SET);
	char line[4096];
	int n = 0;
	while (fgets(line, sizeof line, f)) {
		if (n++ == max_lines) {
			fprintf(stderr, "(more in the log)\n");
			break;
		}
		fputs(line, stderr);
	}
	fclose(f);
}

static __attribute__((unused)) void it_server_start_once(struct it_server *s, int *busy)
{
	long log_at = 0;
	{
		FILE *lf = fopen(s->log, "r");
		if (lf) {
			fseek(lf, 0, SEEK_END);
			log_at = ftell(lf);
			fclose(lf);
		}
	}
	char bin[512], port[16], tport[16], aport[16];
	snprintf(bin, sizeof bin, "%s/server/parleyd", getenv("PARLEY_BIN_DIR"));
	snprintf(port, sizeof port, "%u", s->port);
	snprintf(tport, sizeof tport, "%u", s->tls_port);
	snprintf(aport, sizeof aport, "%u", s->admin_port);
	const char *argv[64];
	int n = 0;
	argv[n++] = bin;
	argv[n++] = "--data";
	argv[n++] = s->data;
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1";
	argv[n++] = "--port";
	argv[n++] = port;
	argv[n++] = "--tls-port";
	argv[n++] = tport;
	argv[n++] = "--admin-port";
	argv[n++] = aport;
	argv[n++] = "--tls-cert";
	argv[n++] = it_path("server.pem");
	argv[n++] = "--tls-key";
	argv[n++] = it_path("server.key");
	argv[n++] = "--jwt-secret-file";
	argv[n++] = it_path("jwt.secret");
	argv[n++] = "--jwt-issuer";
	argv[n++] = "parley-it";
	argv[n++] = "--jwt-audience";
	argv[n++] = "parley";
	for (int i = 0; s->extra[i] && n < 62; i++)
		argv[n++] = s->extra[i];
	argv[n] = NULL;
	pid_t parent = getpid();
	pid_t pid = fork();
	IT_CHECK(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	s->pid = pid;
	for (int i = 0; i < IT_MAX_SERVERS; i++)
		if (!it_pids[i]) {
			it_pids[i] = pid;
			it_servers[i] = s;
			s->slot = i;
			break;
		}
	for (int ms = 0; ms < 30000; ms += 20) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			it_pids[s->slot] = 0;
			s->pid = 0;
			bool taken = it_log_tail_has(s->log, log_at,
						     "port already in use") ||
				     (it_log_tail_has(s->log, log_at,
						      "cannot open the admin port") &&
				      it_log_tail_has(s->log, log_at,
						      "EADDRINUSE"));
			if (taken && (!s->starts || s->new_ports_on_restart)) {
				*busy = 1;
				return;
			}
			/* the whole start-up attempt's output, not just the
			 * tail it_dump_logs shows (the temp dir is kept) */
			fprintf(stderr, "---- parleyd start-up output (start %d, "
				"%s from byte %ld) ----\n", s->starts + 1, s->log,
				log_at);
			it_log_print_from(s->log, log_at, 200);
			it_fail(__FILE__, __LINE__, "parleyd exited at start-up "
				"(%s %d)%s, log %s",
				WIFEXITED(st) ? "exit status" : "signal",
				WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
				taken ? ": one of its ports was taken by another "
					"process while it was down (a restart keeps "
					"its ports unless new_ports_on_restart)" : "",
				s->log);
		}
		int fd = it_tcp_connect(s->port);
		if (fd >= 0) {
			close(fd);
			return;
		}
		it_sleep_ms(20);
	}
	it_fail(__FILE__, __LINE__, "parleyd did not start listening");
}

/* Waits (10 s at most) until nobody listens on 127.0.0.1:port: a bind
 * without SO_REUSEPORT, as parleyd's own start-up probe does, succeeds. */
static __attribute__((unused)) void it_wait_port_unbound(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	for (int ms = 0; ms < 10000; ms += 2) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		IT_CHECK(fd >= 0);
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
		close(fd);
		if (rc == 0)
			return;
		it_sleep_ms(2);
	}
	it_fail(__FILE__, __LINE__, "port %u still bound 10 s after its server "
		"was killed", port);
}

/* SIGKILL, wait for the process, then for its listening sockets: they are
 * io_uring's and outlive the process until the kernel tears its ring down
 * asynchronously (measured: 5-15 ms, hundreds of connects still accepted),
 * and while they exist a restarted parleyd's exclusive bind probe fails
 * ("port already in use": it exits) and clients may connect to a socket
 * nobody will ever read. */
static __attribute__((unused)) void it_server_kill(struct it_server *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	it_pids[s->slot] = 0;
	s->pid = 0;
	it_wait_port_unbound(s->port);
	if (s->tls_port)
		it_wait_port_unbound(s->tls_port);
}

/* Send sig (SIGTERM), wait up to timeout_ms; returns the exit status
 * (0..255), 128+signal if killed by one, or -1 if it did not exit. */
static __attribute__((unused)) int it_server_stop(struct it_server *s, int sig, int timeout_ms)
{
	if (s->pid <= 0)
		return -1;
	kill(s->pid, sig);
	for (int ms = 0; ms < timeout_ms; ms += 10) {
		int st;
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			it_pids[s->slot] = 0;
			s->pid = 0;
			if (WIFEXITED(st))
				return WEXITSTATUS(st);
			return 128 + WTERMSIG(st);
		}
		it_sleep_ms(10);
	}
	return -1;
}

/* ---- JWT minting ------------------------------------------------------------------ */

struct it_claims {
	const char *sub;
	const char *iss;      /* NULL = "parley-it" */
	const char *aud;      /* NULL = "parley" */
	int64_t exp_rel_s;    /* exp = now + this; 0 = +3600 */
	int64_t nbf_rel_s;    /* nbf = now + this (0 = no nbf) */
	const char *secret;   /* HS256 key; NULL = the test secret */
};

/* An HS256 token (malloc'd). */
static __attribute__((unused)) char *it_token(const struct it_claims *cl)
{
	char payload[1024], hdr_b[128], pay_b[1500], sig_b[128];
	int64_t now = (int64_t)time(NULL);
	int n = snprintf(payload, sizeof payload,
			 "{\"sub\":\"%s\",\"iss\":\"%s\",\"aud\":\"%s\","
			 "\"iat\":%" PRId64 ",\"exp\":%" PRId64,
			 cl->sub, cl->iss ? cl->iss : "parley-it",
			 cl->aud ? cl->aud : "parley", now,
			 now + (cl->exp_rel_s ? cl->exp_rel_s : 3600));
	if (cl->nbf_rel_s)
		n += snprintf(payload + n, sizeof payload - (size_t)n,
			      ",\"nbf\":%" PRId64, now + cl->nbf_rel_s);
	snprintf(payload + n, sizeof payload - (size_t)n, "}");
	const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	parley_b64url_encode((const uint8_t *)hdr, strlen(hdr), hdr_b);
	parley_b64url_encode((const uint8_t *)payload, strlen(payload), pay_b);
	char signing[2000];
	snprintf(signing, sizeof signing, "%s.%s", hdr_b, pay_b);
	const char *secret = cl->secret ? cl->secret
					: "it-secret-0123456789-abcdefghijklmnop";
	uint8_t mac[32];
	unsigned ml = 0;
	HMAC(EVP_sha256(), secret, (int)strlen(secret),
	     (const uint8_t *)signing, strlen(signing), mac, &ml);
	parley_b64url_encode(mac, ml, sig_b);
	char *tok = malloc(strlen(signing) + 1 + strlen(sig_b) + 1);
	IT_CHECK(tok);
	sprintf(tok, "%s.%s", signing, sig_b);
	return tok;
}

static __attribute__((unused)) char *it_token_for(const char *user)
{
	struct it_claims cl = {.sub = user};
	return it_token(&cl);
}

/* ---- clients ------------------------------------------------------------------------- */

struct it_events {
	uint64_t n;
	uint64_t cap;
	struct it_ev {
		uint64_t inbox_seq, conv_seq;
		char conv[64];
		char sender[32];
		uint8_t cmid[16];
		char body[64];
	} *v;
};

static __attribute__((unused)) void it_on_event(void *user, const struct parley_event *ev)
{
	struct it_events *e = user;
	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 256;
		e->v = realloc(e->v, e->cap * sizeof *e->v);
		IT_CHECK(e->v);
	}
	struct it_ev *x = &e->v[e->n++];
	memset(x, 0, sizeof *x);
	x->inbox_seq = ev->inbox_seq;
	x->conv_seq = ev->conv_seq;
	snprintf(x->conv, sizeof x->conv, "%.*s", (int)ev->conv.len, ev->conv.p);
	snprintf(x->sender, sizeof x->sender, "%.*s", (int)ev->sender.len,
		 ev->sender.p);
	memcpy(x->cmid, ev->client_msg_id, 16);
	snprintf(x->body, sizeof x->body, "%.*s", (int)ev->body.len,
		 (const char *)ev->body.p);
}

static __attribute__((unused)) void it_events_free(struct it_events *e)
{
	free(e->v);
	memset(e, 0, sizeof *e);
}

/* Offer zstd frame compression on the next clients made (libparley then
 * compresses SEND frames of 1 KiB or more). */
static int it_want_zstd;

/* A connected libparley client for user/device (TLS when tls != 0). */
static __attribute__((unused)) struct parley_client *it_client_tok(const struct it_server *s,
					   const char *token, const char *device,
					   int tls, struct it_events *events,
					   int *err)
{
	struct parley_client_opts o = {
		.host = tls ? "localhost" : "127.0.0.1",
		.port = tls ? s->tls_port : s->port,
		.tls = tls,
		.ca_file = tls ? it_path("ca.pem") : NULL,
		.token = token,
		.device_id = device,
		.connect_timeout_ms = 10000,
		.request_timeout_ms = 10000,
		.call_deadline_ms = 30000,
		.on_event = events ? it_on_event : NULL,
		.user = events,
		.want_zstd = it_want_zstd,
	};
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	int rc = parley_client_connect(c);
	if (err)
		*err = rc;
	if (rc < 0) {
		if (!err)
			it_fail(__FILE__, __LINE__, "connect failed: %s",
				parley_strerror(rc));
		parley_client_free(c);
		return NULL;
	}
	return c;
}

static __attribute__((unused)) struct parley_client *it_client(const struct it_server *s,
				       const char *user, const char *device,
				       int tls, struct it_events *events)
{
	char *tok = it_token_for(user);
	struct parley_client *c = it_client_tok(s, tok, device, tls, events, NULL);
	free(tok);
	return c;
}

/* A connected plaintext libparley client for user/device whose callbacks
 * (on_event, on_receipt, on_presence, on_typing, ...) and their `user`
 * argument come from cb (NULL: none); the connection fields and timeouts
 * are filled in here. Fails the test when it cannot connect. */
static __attribute__((unused)) struct parley_client *
it_client_cb(const struct it_server *s, const char *user, const char *device,
	     const struct parley_client_opts *cb)
{
	char *tok = it_token_for(user);
	struct parley_client_opts o = {0};
	if (cb)
		o = *cb;
	o.host = "127.0.0.1";
	o.port = s->port;
	o.token = tok;
	o.device_id = device;
	o.connect_timeout_ms = 10000;
	o.request_timeout_ms = 10000;
	o.call_deadline_ms = 30000;
	struct parley_client *c = NULL;
	IT_OK(parley_client_new(&o, &c));
	int rc = parley_client_connect(c);
	IT_CHECK(rc == 0, "connect %s/%s: %s (%s)", user, device,
		 parley_strerror(rc), parley_client_failure(c)->text);
	free(tok);
	return c;
}

/* Poll c until events->n >= want or timeout; returns events->n. */
static __attribute__((unused)) uint64_t it_wait_events(struct parley_client *c, struct it_events *e,
			       uint64_t want, int timeout_ms)
{
	for (int ms = 0; ms < timeout_ms && e->n < want; ms += 50) {
		int rc = parley_client_poll(c, 50);
		(void)rc;
	}
	return e->n;
}

/* ---- raw frames ------------------------------------------------------------------------ */

static __attribute__((unused)) int it_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
		if (k <= 0)
			return -1;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* ---- admin HTTP ------------------------------------------------------------------------ */

/* Sends req[0..rlen) to the HTTP server on port and reads until it closes
 * (at most 256 KiB), failing the test when nothing arrives for timeout_ms.
 * With code non-NULL the status line must parse and *code gets its status.
 * Returns the NUL-terminated answer; the caller frees it. */
static __attribute__((unused)) char *it_http_raw(uint16_t port, const char *req, size_t rlen,
						 int timeout_ms, int *code)
{
	int fd = it_tcp_connect(port);
	IT_CHECK(fd >= 0);
	IT_CHECK(it_write_all(fd, req, rlen) == 0);
	size_t cap = 1 << 18, n = 0;
	char *out = malloc(cap);
	IT_CHECK(out);
	for (;;) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		IT_CHECK(poll(&pf, 1, timeout_ms) > 0,
			 "HTTP: no answer within %d ms to %.40s", timeout_ms, req);
		ssize_t k = recv(fd, out + n, cap - 1 - n, 0);
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	out[n] = '\0';
	if (code) {
		*code = 0;
		/* not in IT_CHECK's condition: it becomes part of the format,
		 * and its %*d printed ~1 GB of padding on a failure */
		int it_got_ = sscanf(out, "HTTP/1.%*d %d", code);
		IT_CHECK(it_got_ == 1, "bad response: %.200s", out);
	}
	return out;
}

/* GET path on port (10 s per read); see it_http_raw. */
static __attribute__((unused)) char *it_http_get(uint16_t port, const char *path, int *code)
{
	char req[256];
	snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: probe\r\n\r\n", path);
	return it_http_raw(port, req, strlen(req), 10000, code);
}

static __attribute__((unused)) int it_send_msg(int fd, uint32_t rid, const struct parley_msg *m)
{
	uint8_t buf[65536];
	int n = parley_proto_encode(buf, sizeof buf, rid, m);
	if (n < 0)
		return n;
	return it_write_all(fd, buf, (size_t)n);
}

/* Read one frame (blocking up to timeout_ms) into buf; 0 on EOF, -1 on
 * timeout/error, else the frame length with *f decoded. */
static __attribute__((unused)) int it_read_frame(int fd, uint8_t *buf, size_t cap, int timeout_ms,
			 struct parley_frame *f)
{
	size_t have = 0;
	for (;;) {
		int rc = parley_proto_frame_decode(buf, have, (uint32_t)cap, f);
		if (rc > 0)
			return rc;
		if (rc != -PARLEY_EINCOMPLETE)
			return -1;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, timeout_ms) <= 0)
			return -1;
		ssize_t k = recv(fd, buf + have, 1, 0); /* byte-wise: never over-read */
		if (k == 0)
			return 0;
		if (k < 0)
			return -1;
		have += (size_t)k;
		if (have == cap)
			return -1;
	}
}

/* A version-1 HELLO for device (client_name: NULL = none) with request id
 * rid on a raw socket; 0 or -1. */
static __attribute__((unused)) int it_send_hello(int fd, uint32_t rid, const char *device,
						 const char *client_name)
{
	struct parley_msg m = {.type = PARLEY_T_HELLO};
	m.hello.min_version = 1;
	m.hello.max_version = 1;
	m.hello.device_id = parley_str_c(device);
	if (client_name)
		m.hello.client_name = parley_str_c(client_name);
	return it_send_msg(fd, rid, &m);
}

/* HELLO + AUTH on a raw socket; returns 0 when AUTH_OK arrived. */
static __attribute__((unused)) int it_raw_login(int fd, const char *user, const char *device)
{
	struct parley_msg m;
	if (it_send_hello(fd, 1, device, "itest-raw"))
		return -1;
	uint8_t buf[4096];
	struct parley_frame f;
	if (it_read_frame(fd, buf, sizeof buf, 10000, &f) <= 0 ||
	    f.type != PARLEY_T_HELLO_OK)
		return -1;
	char *tok = it_token_for(user);
	m = (struct parley_msg){.type = PARLEY_T_AUTH};
	m.auth.token = parley_str_c(tok);
	int rc = it_send_msg(fd, 2, &m);
	free(tok);
	if (rc)
		return -1;
	if (it_read_frame(fd, buf, sizeof buf, 10000, &f) <= 0 ||
	    f.type != PARLEY_T_AUTH_OK)
		return -1;
	return 0;
}

/* it_server_start, then wait (~60 s at most) until /readyz answers 200: a
 * stopped parleyd's io_uring may keep its listening sockets accepting for
 * a moment after it died, and after kill -9 the listeners are bound
 * before recovery has finished. */
static __attribute__((unused)) void it_server_start_ready(struct it_server *s)
{
	it_server_start(s);
	for (int i = 0; i < 30000; i++) { /* ~60 s */
		int probe = it_tcp_connect(s->admin_port);
		if (probe < 0) {
			it_sleep_ms(2);
			continue;
		}
		close(probe);
		int code = 0;
		char *t = it_http_get(s->admin_port, "/readyz", &code);
		free(t);
		if (code == 200)
			return;
		it_sleep_ms(2);
	}
	it_fail(__FILE__, __LINE__, "parleyd never became ready");
}

/* A script or other child whose stdout+stderr the test reads
 * (test_run_dev.c, test_run_cluster.c start it in its own process
 * group). */
struct it_proc {
	pid_t pid;
	int fd; /* stdout+stderr */
	char out[65536];
	size_t len;
};

/* Reads p's output until text shows up (1) or the process ends / the
 * timeout passes (0). */
static __attribute__((unused)) int it_proc_wait_for(struct it_proc *p,
						    const char *text,
						    int timeout_ms)
{
	for (int ms = 0; ms < timeout_ms; ms += 50) {
		if (strstr(p->out, text))
			return 1;
		struct pollfd pf = {p->fd, POLLIN, 0};
		if (poll(&pf, 1, 50) > 0) {
			ssize_t r = read(p->fd, p->out + p->len,
					 sizeof p->out - 1 - p->len);
			if (r <= 0)
				return strstr(p->out, text) != NULL;
			p->len += (size_t)r;
			p->out[p->len] = 0;
		}
	}
	return strstr(p->out, text) != NULL;
}

/* Starts `bash PARLEY_SRC_DIR/<script> PARLEY_BIN_DIR` as p, in a
 * process group of its own (its pid; the caller kills the group at
 * cleanup), killed if the test dies, stdin /dev/null, stdout and stderr
 * to p->fd; env: NULL-terminated name, value pairs set in the child. */
static __attribute__((unused)) void it_proc_start_script(struct it_proc *p,
							 const char *script,
							 const char *const *env)
{
	memset(p, 0, sizeof *p);
	int fds[2];
	IT_CHECK(pipe(fds) == 0);
	char path[600];
	snprintf(path, sizeof path, "%s/%s", getenv("PARLEY_SRC_DIR"), script);
	pid_t parent = getpid();
	p->pid = fork();
	IT_CHECK(p->pid >= 0);
	if (p->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		setpgid(0, 0);
		for (int i = 0; env && env[i]; i += 2)
			setenv(env[i], env[i + 1], 1);
		int dn = open("/dev/null", O_RDONLY);
		dup2(dn, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[0]);
		execl("/bin/bash", "bash", path, getenv("PARLEY_BIN_DIR"),
		      (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	p->fd = fds[0];
	setpgid(p->pid, p->pid); /* also here: no race with the child's own */
}

/* p's exit status (128 + signal when killed), or -1 after timeout_ms. */
static __attribute__((unused)) int it_proc_wait_exit(struct it_proc *p,
						     int timeout_ms)
{
	for (int ms = 0; ms < timeout_ms; ms += 20) {
		int st;
		if (waitpid(p->pid, &st, WNOHANG) == p->pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		it_sleep_ms(20);
	}
	return -1;
}

/* The value of the sample `name` (labels included, as written, e.g.
 * `x_count{stage="sync"}`) in a /metrics text; fails the test when it is
 * missing. */
static __attribute__((unused)) uint64_t it_metric(const char *text, const char *name)
{
	char pat[160];
	snprintf(pat, sizeof pat, "\n%s ", name);
	const char *p = strstr(text, pat);
	IT_CHECK(p, "metric %s missing", name);
	return strtoull(p + strlen(pat), NULL, 10);
}

/* One counter from GET /metrics on port (the admin port); fails the test
 * when the port refuses or the metric is missing. */
static __attribute__((unused)) uint64_t it_metric_get(uint16_t port, const char *name)
{
	char *t = it_http_get(port, "/metrics", NULL);
	IT_CHECK(t, "admin port %u refused", port);
	uint64_t v = it_metric(t, name);
	free(t);
	return v;
}

/* ---- raw connections the server is expected to refuse ------------------------------ */

/* The reading side of such a connection: the first ERROR frame received and
 * whether the server closed it. */
struct it_rx {
	int fd;
	uint8_t in[512];
	size_t have;
	bool got_error, eof;
	uint32_t code;
	uint16_t eflags;
};

/* Reads what non-blocking c->fd has: EOF or a reset sets eof; the first
 * ERROR frame's code and flags are kept. With only_error, a frame other than
 * ERROR before it fails the test. */
static __attribute__((unused)) void it_rx_read(struct it_rx *c, bool only_error)
{
	ssize_t k = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);
	if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
		c->eof = true; /* EOF or reset: closed by the server */
		return;
	}
	if (k < 0)
		return;
	c->have += (size_t)k;
	struct parley_frame f;
	int n;
	while ((n = parley_proto_frame_decode(c->in, c->have, sizeof c->in, &f)) > 0) {
		if (!c->got_error) {
			IT_CHECK(f.type == PARLEY_T_ERROR || !only_error, "got frame type 0x%x",
				 f.type);
			if (f.type == PARLEY_T_ERROR) {
				struct parley_msg m;
				IT_OK(parley_proto_decode(&f, &m));
				c->got_error = true;
				c->code = m.error.code;
				c->eflags = m.error.flags;
			}
		}
		memmove(c->in, c->in + n, c->have - (size_t)n);
		c->have -= (size_t)n;
	}
}

/* 1 when c got a fatal ERROR with this code. */
static __attribute__((unused)) int it_rx_refused(const struct it_rx *c, uint32_t code)
{
	return c->got_error && c->code == code && (c->eflags & PARLEY_ERRF_FATAL);
}

/* Sends the rest of hdr[0..hlen) + body[0..blen) from *sent on non-blocking
 * fd, advancing *sent: 1 when all is sent, 0 when the socket is full, -1 when
 * the server closed it. */
static __attribute__((unused)) int it_send_rest(int fd, const uint8_t *hdr, size_t hlen,
						const uint8_t *body, size_t blen, size_t *sent)
{
	while (*sent < hlen + blen) {
		const uint8_t *p = *sent < hlen ? hdr + *sent : body + (*sent - hlen);
		size_t n = *sent < hlen ? hlen - *sent : hlen + blen - *sent;
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (k <= 0)
			return -1;
		*sent += (size_t)k;
	}
	return 1;
}

/* ---- process memory -------------------------------------------------------------------- */

/* 1 in sanitizer builds (make asan): parleyd is built the same way, and
 * AddressSanitizer's shadow memory and quarantine of freed blocks make its
 * resident memory meaningless, so memory bounds are not checked there
 * (the behaviour around them still is). */
#if defined(__SANITIZE_ADDRESS__)
#define IT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IT_SANITIZED 1
#endif
#endif
#ifndef IT_SANITIZED
#define IT_SANITIZED 0
#endif

/* A "Vm...:" line of /proc/<pid>/status in KiB (field e.g. "VmRSS:",
 * "VmHWM:"); -1 when unreadable. */
static __attribute__((unused)) long it_proc_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long v = -1;
	size_t fl = strlen(field);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, field, fl)) {
			v = atol(line + fl);
			break;
		}
	fclose(f);
	return v;
}

/* Makes fd non-blocking. */
static __attribute__((unused)) void it_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	IT_CHECK(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

#endif /* PARLEY_ITEST_H */
