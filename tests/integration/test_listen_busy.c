/*
 * test_listen_busy.c — a port that is already taken is refused.
 *
 * Each event loop binds its own socket on the client ports with
 * SO_REUSEPORT, which would also let a second parleyd (same user) bind a
 * port the first one serves and silently take part of its connections.
 * The first loop probes the port without SO_REUSEPORT, so:
 *   - a second parleyd on the same client port (its own data directory,
 *     TLS and admin ports) exits non-zero and logs "port already in use";
 *   - the first parleyd keeps serving: every new connection on the port
 *     reaches it (checked with many connections, each of which a second
 *     listener would have had a share of);
 *   - a port held by a plain listening socket without SO_REUSEPORT is
 *     refused the same way.
 */
#include "itest.h"

/* Run parleyd with `s`'s settings in the foreground; its exit status. */
static int run_parleyd(const struct it_server *s)
{
	char cmd[2048];
	snprintf(cmd, sizeof cmd,
		 "timeout 20 '%s/server/parleyd' --data '%s' --listen 127.0.0.1 "
		 "--port %u --tls-port %u --admin-port %u --tls-cert '%s' "
		 "--tls-key '%s' --jwt-secret-file '%s' >'%s' 2>&1",
		 getenv("PARLEY_BIN_DIR"), s->data, s->port, s->tls_port,
		 s->admin_port, it_path("server.pem"), it_path("server.key"),
		 it_path("jwt.secret"), s->log);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void)
{
	it_init("listen_busy");

	struct it_server a;
	it_server_init(&a, "first");
	it_server_start(&a);

	/* A second server on the first one's client port. */
	struct it_server b;
	it_server_init(&b, "second");
	b.port = a.port;
	int rc = run_parleyd(&b);
	if (rc == 0 || rc == 124)
		it_fail(__FILE__, __LINE__,
			"second parleyd on a busy port: exit %d, want a refusal",
			rc);
	IT_CHECK(it_log_tail_has(b.log, 0, "port already in use"));

	/* The first one still owns the port: every connection is its. */
	struct parley_client *c = it_client(&a, "alice", "d1", 0, NULL);
	IT_CHECK(c);
	parley_client_free(c);
	for (int i = 0; i < 64; i++) {
		int fd = it_tcp_connect(a.port);
		IT_CHECK(fd >= 0);
		close(fd);
	}
	char path[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)a.pid);
	IT_CHECK(access(path, F_OK) == 0);

	/* A port held by an ordinary listener (no SO_REUSEPORT). */
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	IT_CHECK(l >= 0);
	struct it_server d;
	it_server_init(&d, "third");
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(d.tls_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	IT_CHECK(bind(l, (struct sockaddr *)&sa, sizeof sa) == 0);
	IT_CHECK(listen(l, 4) == 0);
	rc = run_parleyd(&d);
	IT_CHECK(rc != 0 && rc != 124);
	IT_CHECK(it_log_tail_has(d.log, 0, "port already in use"));
	close(l);

	IT_CHECK(it_server_stop(&a, SIGTERM, 20000) == 0);
	printf("listen_busy: ok (second server exit %d)\n", rc);
	return 0;
}
