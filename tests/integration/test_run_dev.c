/*
 * test_run_dev.c — `make run`'s script (tools/run-dev.sh) as a new user
 * meets it, on free loopback ports and a temp data directory (the build
 * step is skipped: ctest already built parleyd, parley and parleyctl).
 *
 *   1. A busy port: one clear message naming the port and how to choose
 *      others, exit 1, no "ready" banner, nothing created in the data dir.
 *   2. Free ports: the banner comes only once /readyz answers (so the plain
 *      port already accepts a client when it is printed), it names the
 *      ports, and the printed token command works; SIGTERM (what Ctrl-C
 *      forwards) stops parleyd gracefully and the script exits 0.
 */
#include "itest.h"


static pid_t group; /* the script's process group: killed at exit */

static void kill_group(void)
{
	if (group > 0)
		kill(-group, SIGKILL);
}

static void start(struct it_proc *p, const char *data, uint16_t port, uint16_t tport,
		  uint16_t aport)
{
	char b[3][16];
	snprintf(b[0], 16, "%u", port);
	snprintf(b[1], 16, "%u", tport);
	snprintf(b[2], 16, "%u", aport);
	const char *env[] = {"PARLEY_PORT", b[0], "PARLEY_TLS_PORT", b[1],
			     "PARLEY_ADMIN_PORT", b[2], "PARLEY_DATA", data,
			     "PARLEY_RUN_NO_BUILD", "1", NULL};
	it_proc_start_script(p, "tools/run-dev.sh", env);
	group = p->pid;
}

static uint16_t listen_on(int *fd)
{
	*fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	IT_CHECK(*fd >= 0 && bind(*fd, (struct sockaddr *)&a, sizeof a) == 0 &&
		 listen(*fd, 4) == 0 && getsockname(*fd, (struct sockaddr *)&a, &al) == 0);
	return ntohs(a.sin_port);
}

int main(void)
{
	it_init("run_dev");
	it_on_cleanup = kill_group; /* on failure (it_fail) and at exit (it_cleanup) */
	if (!getenv("PARLEY_SRC_DIR") || system("command -v bash >/dev/null 2>&1") != 0)
		return 77;
	uint16_t port = it_free_port(), tport = it_free_port(), aport = it_free_port();
	while (tport == port)
		tport = it_free_port();
	while (aport == port || aport == tport)
		aport = it_free_port();

	/* 1. the TLS port is taken */
	int busy_fd;
	uint16_t busy = listen_on(&busy_fd);
	struct it_proc p;
	start(&p, it_path("data-busy"), port, busy, aport);
	int rc = it_proc_wait_exit(&p, 60000);
	it_proc_wait_for(&p, "\n\n\n", 200); /* collect what is left */
	char want[64];
	snprintf(want, sizeof want, "port %u is already in use", busy);
	IT_CHECK(rc == 1, "busy port: exit %d\n%s", rc, p.out);
	IT_CHECK(strstr(p.out, want) && strstr(p.out, "PARLEY_TLS_PORT="), "%s", p.out);
	IT_CHECK(!strstr(p.out, "parleyd is ready"), "no banner when it cannot start:\n%s", p.out);
	struct stat sb;
	IT_CHECK(stat(it_path("data-busy/dev"), &sb) != 0, "nothing created on a busy port");
	close(busy_fd);
	close(p.fd);

	/* 2. a normal start */
	start(&p, it_path("data"), port, tport, aport);
	IT_CHECK(it_proc_wait_for(&p, "Ctrl-C here stops the server", 120000), "no banner:\n%s", p.out);
	/* the banner means ready: the plain port accepts right now */
	int fd = it_tcp_connect(port);
	IT_CHECK(fd >= 0, "banner printed before the server accepts");
	close(fd);
	char ports[128];
	snprintf(ports, sizeof ports, "plain TCP %u, TLS %u, admin HTTP %u", port, tport, aport);
	IT_CHECK(strstr(p.out, ports), "the banner names the ports:\n%s", p.out);
	IT_CHECK(strstr(p.out, "parleyctl token --secret-file") && strstr(p.out, "--ca "),
		 "%s", p.out);

	/* the token the banner's command mints is accepted */
	char cmd[2048], tok[2048];
	snprintf(cmd, sizeof cmd, "'%s/tools/parleyctl' token -q --secret-file '%s' --sub alice",
		 getenv("PARLEY_BIN_DIR"), it_path("data/dev/jwt.secret"));
	FILE *f = popen(cmd, "r");
	IT_CHECK(f && fgets(tok, sizeof tok, f));
	pclose(f);
	tok[strcspn(tok, "\n")] = 0;
	struct it_server fake = {.port = port, .tls_port = tport};
	struct parley_client *c = it_client_tok(&fake, tok, "rd", 0, NULL, NULL);
	IT_CHECK(c, "the minted token is accepted");
	parley_client_free(c);

	/* Ctrl-C in a terminal reaches the script; it stops parleyd gracefully */
	kill(p.pid, SIGTERM);
	rc = it_proc_wait_exit(&p, 60000);
	IT_CHECK(rc == 0, "run-dev after SIGTERM: exit %d\n%s", rc, p.out);
	IT_CHECK(it_tcp_connect(port) < 0, "parleyd is gone after the script");
	close(p.fd);
	printf("run_dev: ok\n");
	return 0;
}
