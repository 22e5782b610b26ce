/*
 * ctl_cluster_members.c — `parleyctl cluster add-node` and `parleyctl
 * cluster remove-node`: ask a running cluster to take a node in or let one
 * go (docs/CLUSTER.md §3.7), through the admin HTTP port of its nodes.
 *
 *   parleyctl cluster add-node --admin HOST:PORT[,HOST:PORT...] --id N
 *             --peer ADDR:PORT [--client HOST:PORT] [--admin-of-node HOST:PORT]
 *   parleyctl cluster remove-node --admin HOST:PORT[,...] --id N [--force]
 *
 * The request goes to the first admin address; a node that does not lead
 * partition 0 answers 409 naming the leader's id and admin address, which
 * is tried next (at most CLUSTER_MAX_FOLLOW times; without one, the next
 * address given), as is the next one when a node does not answer. The
 * leader asked to remove itself hands its leadership to another current
 * voter first and answers such a 409 (docs/CLUSTER.md §3.7); a 409 that
 * names no leader (no current voter to hand leadership to) ends it. The leader waits until the change
 * is done (add-node: the node a voter of every partition) or up to a
 * minute (504: how far it got; the command is idempotent, repeat it).
 * remove-node is refused (409, exit 1) when in some partition the healthy
 * voters left would not be a quorum of the new configuration (a node
 * down or behind): --force removes it anyway. One operation runs at a
 * time: another one meanwhile is refused (409 "operation in progress").
 * Exit codes: 0 done, 1 refused or not done in time, 2 usage, 3 no node
 * answered.
 * Threads: one, blocking sockets with a receive timeout.
 */
#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "parleyctl.h"

#define CLUSTER_HTTP_TIMEOUT_S 90 /* the leader waits up to 60 s */
#define CLUSTER_MAX_REPLY 8192
#define CLUSTER_MAX_FOLLOW 3 /* hand-overs followed to the new leader */
/* a node a hand-over named answering "not the leader" without a leader's
 * admin address (it has not won its election yet): it is asked again
 * after CLUSTER_RETRY_MS, at most CLUSTER_MAX_RETRIES times in all */
#define CLUSTER_RETRY_MS 100
#define CLUSTER_MAX_RETRIES 50

/* POST path to host:port; *code and body (NUL-terminated) on success.
 * -1 when nothing answered. (parleyctl.h: also cluster rebalance.) */
int ctl_http_post(const char *hostport, const char *path, int *code,
		     char *body, size_t cap)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof host)
		return -1;
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	char *h = host;
	if (h[0] == '[' && h[strlen(h) - 1] == ']') {
		h[strlen(h) - 1] = '\0';
		h++;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	if (getaddrinfo(h, colon + 1, &hints, &ai) || !ai)
		return -1;
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);
	struct timeval tv = {.tv_sec = CLUSTER_HTTP_TIMEOUT_S};
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	char req[1024];
	int n = snprintf(req, sizeof req,
			 "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n"
			 "Connection: close\r\n\r\n", path, hostport);
	if (n < 0 || (size_t)n >= sizeof req || send(fd, req, (size_t)n, 0) != n) {
		close(fd);
		return -1;
	}
	char reply[CLUSTER_MAX_REPLY];
	size_t got = 0;
	for (;;) {
		ssize_t k = recv(fd, reply + got, sizeof reply - 1 - got, 0);
		if (k <= 0)
			break;
		got += (size_t)k;
		if (got == sizeof reply - 1)
			break;
	}
	close(fd);
	reply[got] = '\0';
	if (sscanf(reply, "HTTP/1.%*d %d", code) != 1)
		return -1;
	const char *b = strstr(reply, "\r\n\r\n");
	snprintf(body, cap, "%s", b ? b + 4 : "");
	return 0;
}

/* A 409 names the leader of partition 0 as the node knows it, "leader=N
 * admin=HOST:PORT" (also a leader that handed its leadership over to be
 * removed, docs/CLUSTER.md §3.7). Copies that admin address into out;
 * false without one (admin=-: unknown). */
static bool handed_to(const char *body, char *out, size_t cap)
{
	const char *l = strstr(body, "\nleader=");
	const char *a = l ? strstr(l, " admin=") : NULL;
	if (!a)
		return false;
	a += 7;
	size_t n = strcspn(a, " \r\n");
	if (!n || n >= cap || (n == 1 && *a == '-'))
		return false;
	memcpy(out, a, n);
	out[n] = '\0';
	return true;
}

/* Tries each admin address in turn, and follows a hand-over to the new
 * leader (at most CLUSTER_MAX_FOLLOW times); the node a hand-over named
 * is asked again a moment later while it answers "not the leader"
 * naming no other leader's admin address (a leader that handed itself
 * away to be removed names its target, which says so until it has won
 * its election; seen in CI as "no node given leads the cluster now" for a
 * remove-node of the leader itself). Returns the exit code. */
static int post_any(const char *admins, const char *path)
{
	char list[1024];
	snprintf(list, sizeof list, "%s", admins);
	bool answered = false;
	char next[256] = "";
	int follows = 0, retries = 0;
	bool followed = false; /* a is the node a hand-over named */
	for (char *save = NULL, *a = strtok_r(list, ",", &save); a;) {
		int code = 0;
		char body[CLUSTER_MAX_REPLY];
		char cur[256];
		snprintf(cur, sizeof cur, "%s", a);
		if (ctl_http_post(cur, path, &code, body, sizeof body)) {
			fprintf(stderr, "%s: no answer\n", cur);
		} else {
			answered = true;
			if (code != 409) {
				fprintf(code == 200 ? stdout : stderr,
					"%s: %d %s", cur, code, body);
				return code == 200 ? 0 : 1;
			}
			fprintf(stderr, "%s: %s", cur, body);
			if (handed_to(body, next, sizeof next) &&
			    follows < CLUSTER_MAX_FOLLOW) {
				follows++; /* repeat it at the new leader */
				a = next;
				followed = true;
				continue;
			}
			if (strncmp(body, "not the leader", 14) &&
			    !strstr(body, "\nleader="))
				return 1; /* refused (no voter to hand to) */
			if (followed && !strncmp(body, "not the leader", 14) &&
			    retries < CLUSTER_MAX_RETRIES) {
				retries++; /* ask the same node again */
				usleep(CLUSTER_RETRY_MS * 1000);
				snprintf(next, sizeof next, "%s", cur);
				a = next;
				continue;
			}
		}
		a = strtok_r(NULL, ",", &save);
		followed = false;
	}
	fprintf(stderr, answered ? "no node given leads the cluster now; "
				   "retry, or give the leader's admin port\n"
				 : "no node answered\n");
	return answered ? 1 : 3;
}

static void members_usage(FILE *f)
{
	fprintf(f,
		"usage: parleyctl cluster add-node --admin HOST:PORT[,HOST:PORT...] "
		"--id N --peer ADDR:PORT\n"
		"                 [--client HOST:PORT] [--node-admin HOST:PORT]\n"
		"       parleyctl cluster remove-node --admin HOST:PORT[,...] --id N "
		"[--force]\n"
		"--admin: admin ports of running nodes (the leader of partition 0 "
		"does the change;\n  others name it and it is asked next). add-node: the new node "
		"runs with its own --node-id, the\n  cluster's --cluster-id, "
		"--founders (the founding ids) and --peers (running\n  nodes), an "
		"empty --data; --peer is its peer address (numeric), --client and\n"
		"  --node-admin its client and admin addresses (recorded: named "
		"to clients and\n  operators while the node's own announcement "
		"is missing).\n"
		"remove-node: refused when, in some partition, the healthy voters "
		"left (link up,\n  holding the commit index) would not be a "
		"quorum; --force removes it anyway\n  (the cluster may then stop "
		"committing until the unhealthy voters are back).\n"
		"One membership operation runs at a time (409 \"operation in "
		"progress\" else).\n");
}

int ctl_cluster_members_main(int argc, char **argv)
{
	bool add = !strcmp(argv[0], "add-node");
	const char *admins = NULL, *id = NULL, *peer = NULL, *client = NULL,
		   *nadmin = NULL;
	bool force = false;
	for (int i = 1; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			members_usage(stdout);
			return 0;
		} else if (!add && !strcmp(argv[i], "--force")) {
			force = true;
			i--; /* no value */
		} else if (!v) {
			members_usage(stderr);
			return 2;
		} else if (!strcmp(argv[i], "--admin")) {
			admins = v;
		} else if (!strcmp(argv[i], "--id")) {
			id = v;
		} else if (add && !strcmp(argv[i], "--peer")) {
			peer = v;
		} else if (add && !strcmp(argv[i], "--client")) {
			client = v;
		} else if (add && !strcmp(argv[i], "--node-admin")) {
			nadmin = v;
		} else {
			members_usage(stderr);
			return 2;
		}
	}
	char *end = NULL;
	if (!admins || !id || strtoull(id, &end, 10) == 0 || *end ||
	    (add && !peer)) {
		members_usage(stderr);
		return 2;
	}
	const char *vals[] = {peer, client, nadmin};
	for (size_t i = 0; i < 3; i++)
		if (vals[i] && strpbrk(vals[i], " &?#%\r\n")) {
			fprintf(stderr, "addresses are host:port\n");
			return 2;
		}
	char path[512];
	if (add)
		snprintf(path, sizeof path,
			 "/cluster/add-node?id=%s&peer=%s%s%s%s%s", id, peer,
			 client ? "&client=" : "", client ? client : "",
			 nadmin ? "&admin=" : "", nadmin ? nadmin : "");
	else
		snprintf(path, sizeof path, "/cluster/remove-node?id=%s%s", id,
			 force ? "&force=1" : "");
	return post_any(admins, path);
}
