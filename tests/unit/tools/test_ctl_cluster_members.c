/*
 * test_ctl_cluster_members.c — `parleyctl cluster remove-node` following
 * the answers of a cluster's admin ports (tools/ctl_cluster_members.c):
 * the real binary against scripted admin endpoints on loopback sockets,
 * each answering a fixed sequence of HTTP replies (one per connection),
 * so that the cases a running cluster gives only by chance are asked
 * every time:
 *   - a leader asked to remove itself hands its leadership over and names
 *     the new leader, which answers "not the leader" (naming no admin
 *     address) until it has won its election, then 200: the command
 *     follows and asks again (seen in CI: it gave up with "no node given
 *     leads the cluster now" and exit 1);
 *   - a node that keeps answering so is given up after the retry bound
 *     (exit 1, the same message), never asked forever;
 *   - a refusal that names no leader ends it at once (exit 1).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_REPLIES 128

/* One scripted admin port: reply i to its i-th connection, the last one
 * again after the script ends. */
struct script {
	int fd;
	uint16_t port;
	const char *replies[MAX_REPLIES];
	int nreplies;
	int asked; /* connections served */
	pthread_t th;
};

static void *script_run(void *arg)
{
	struct script *s = arg;
	for (;;) {
		int c = accept(s->fd, NULL, NULL);
		if (c < 0)
			return NULL;
		char req[2048];
		size_t got = 0;
		while (got < sizeof req - 1) { /* the request: headers only */
			ssize_t k = recv(c, req + got, sizeof req - 1 - got, 0);
			if (k <= 0)
				break;
			got += (size_t)k;
			req[got] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		int i = s->asked < s->nreplies ? s->asked : s->nreplies - 1;
		__atomic_add_fetch(&s->asked, 1, __ATOMIC_SEQ_CST);
		const char *r = s->replies[i];
		(void)!send(c, r, strlen(r), MSG_NOSIGNAL);
		close(c);
	}
}

static void script_start(struct script *s)
{
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(s->fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
	cr_assert_eq(listen(s->fd, 16), 0);
	socklen_t n = sizeof a;
	cr_assert_eq(getsockname(s->fd, (struct sockaddr *)&a, &n), 0);
	s->port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&s->th, NULL, script_run, s), 0);
}

static void script_stop(struct script *s)
{
	shutdown(s->fd, SHUT_RDWR);
	close(s->fd);
	pthread_join(s->th, NULL);
}

/* Writes an HTTP reply with body b into dst (REPLY_CAP bytes). */
#define REPLY_CAP 1024
static const char *reply(char *dst, int code, const char *b)
{
	snprintf(dst, REPLY_CAP, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n%s", code, strlen(b), b);
	return dst;
}

/* parleyctl cluster remove-node --admin 127.0.0.1:<port> --id 1; its exit
 * code, its output in out. */
static int remove_node(uint16_t port, char *out, size_t cap)
{
	const char *bin = getenv("PARLEY_BIN_DIR");
	cr_assert_not_null(bin, "PARLEY_BIN_DIR must point at the build");
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "%s/tools/parleyctl cluster remove-node "
		 "--admin 127.0.0.1:%u --id 1 2>&1", bin, port);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	size_t n = fread(out, 1, cap - 1, p);
	out[n] = 0;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(ctl_cluster_members, hand_over_target_is_asked_again_until_it_leads)
{
	static char r1[REPLY_CAP], r2[REPLY_CAP], r3[REPLY_CAP];
	struct script newl = {.nreplies = 4};
	newl.replies[0] = reply(r1, 409, "not the leader: ask node 3 (the leader "
				"of partition 0 as this node knows it)\n"
				"leader=3 admin=-\n");
	newl.replies[1] = newl.replies[0];
	newl.replies[2] = newl.replies[0];
	newl.replies[3] = reply(r2, 200, "node 1 removed from all 8 partitions\n");
	script_start(&newl);
	char body[256];
	snprintf(body, sizeof body, "node 1 handed its leadership to node 3: "
		 "repeat the command there\nleader=3 admin=127.0.0.1:%u\n",
		 newl.port);
	struct script old = {.nreplies = 1};
	old.replies[0] = reply(r3, 409, body);
	script_start(&old);

	char out[8192];
	int ex = remove_node(old.port, out, sizeof out);
	cr_assert_eq(ex, 0, "exit %d:\n%s", ex, out);
	cr_assert(strstr(out, "removed from all 8 partitions"), "%s", out);
	cr_assert_eq(old.asked, 1, "the old leader asked %d times", old.asked);
	cr_assert_eq(newl.asked, 4, "the new leader asked %d times:\n%s",
		     newl.asked, out);
	script_stop(&old);
	script_stop(&newl);
}

Test(ctl_cluster_members, a_target_that_never_leads_is_given_up)
{
	static char r1[REPLY_CAP], r2[REPLY_CAP];
	struct script newl = {.nreplies = 1};
	newl.replies[0] = reply(r1, 409, "not the leader: ask node 0\n"
				"leader=0 admin=-\n");
	script_start(&newl);
	char body[256];
	snprintf(body, sizeof body, "node 1 handed its leadership to node 3: "
		 "repeat the command there\nleader=3 admin=127.0.0.1:%u\n",
		 newl.port);
	struct script old = {.nreplies = 1};
	old.replies[0] = reply(r2, 409, body);
	script_start(&old);

	char out[65536];
	int ex = remove_node(old.port, out, sizeof out);
	cr_assert_eq(ex, 1, "exit %d:\n%s", ex, out);
	cr_assert(strstr(out, "no node given leads the cluster now"), "%s", out);
	/* bounded: the first ask and the retries (CLUSTER_MAX_RETRIES 50) */
	cr_assert(newl.asked > 1 && newl.asked <= 51, "asked %d times",
		  newl.asked);
	script_stop(&old);
	script_stop(&newl);
}

Test(ctl_cluster_members, a_refusal_naming_no_leader_ends_it)
{
	static char r1[REPLY_CAP];
	struct script only = {.nreplies = 1};
	only.replies[0] = reply(r1, 409, "removal refused: partition 3 would be "
				"left without a quorum of healthy voters "
				"(--force removes it anyway)\n");
	script_start(&only);
	char out[8192];
	int ex = remove_node(only.port, out, sizeof out);
	cr_assert_eq(ex, 1, "exit %d:\n%s", ex, out);
	cr_assert(strstr(out, "without a quorum"), "%s", out);
	cr_assert_eq(only.asked, 1, "asked %d times", only.asked);
	script_stop(&only);
}
