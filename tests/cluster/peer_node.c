/*
 * peer_node.c — one Raft node (tests/unit/server/peer/raft_node.h: a Raft
 * core on an in-memory log) on the peer transport, one per process: what
 * tests/cluster/test_peer_partition.sh runs inside each network namespace.
 *
 *   cluster_peer_node --node ID --listen IP:PORT --peer ID=IP:PORT... \
 *                     --status FILE [--stop-file FILE]
 *
 * Ticks come from this process's monotonic clock (RN_TICK_MS). While it
 * leads and the stop file does not exist, the node proposes a few entries
 * per tick. Every 50 ms it rewrites FILE (write + rename) with one line:
 *   id=1 role=leader term=3 leader=1 commit=812 applied=812 digest=...
 *   links_up=2 reconnects=1 dead=1
 * (links up now; reconnects and read-deadline closes so far) where digest chains every applied entry (equal (applied, digest) on two
 * nodes = equal logs through applied). SIGTERM ends it. Seed: PARLEY_SEED.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit/server/peer/raft_node.h"

#define MAX_NODES 9

static uint64_t mono_ms(void)
{
	return parley_mono_ns() / 1000000u;
}

static volatile sig_atomic_t stop_now;
static void on_term(int sig)
{
	(void)sig;
	stop_now = 1;
}

static int split_addr(char *s, char **ip, uint16_t *port)
{
	char *c = strrchr(s, ':');
	if (!c)
		return -1;
	*c = '\0';
	*ip = s;
	long v = strtol(c + 1, NULL, 10);
	if (v <= 0 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

static void write_status(const char *path, struct rn *n)
{
	char tmp[512];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	struct peer_link_stats st[MAX_NODES];
	int k = n->p ? peer_stats(n->p, st, MAX_NODES, NULL) : 0;
	uint64_t up = 0, reconnects = 0, dead = 0;
	for (int i = 0; i < k; i++) {
		up += st[i].state == PEER_LINK_UP;
		reconnects += st[i].reconnects;
		dead += st[i].dead;
	}
	fprintf(f, "id=%" PRIu64 " role=%s term=%" PRIu64 " leader=%" PRIu64
		   " commit=%" PRIu64 " applied=%" PRIu64 " digest=%016" PRIx64
		   " links_up=%" PRIu64 " reconnects=%" PRIu64 " dead=%" PRIu64 "\n",
		n->id, raft_role_name(raft_role(n->r)), raft_term(n->r),
		raft_leader(n->r), raft_commit(n->r), n->applied, n->digest, up,
		reconnects, dead);
	fclose(f);
	rename(tmp, path);
}

int main(int argc, char **argv)
{
	uint64_t seed = parley_mono_ns() ^ (uint64_t)getpid();
	if (getenv("PARLEY_SEED"))
		seed = strtoull(getenv("PARLEY_SEED"), NULL, 10);
	fprintf(stderr, "peer_node seed %" PRIu64 "\n", seed);
	uint64_t id = 0;
	char *listen = NULL, *status = NULL, *stopf = NULL;
	char *peers[MAX_NODES];
	uint32_t np = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--node") && i + 1 < argc)
			id = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--listen") && i + 1 < argc)
			listen = argv[++i];
		else if (!strcmp(argv[i], "--peer") && i + 1 < argc && np < MAX_NODES)
			peers[np++] = argv[++i];
		else if (!strcmp(argv[i], "--status") && i + 1 < argc)
			status = argv[++i];
		else if (!strcmp(argv[i], "--stop-file") && i + 1 < argc)
			stopf = argv[++i];
		else {
			fprintf(stderr, "unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	char *lip;
	uint16_t lport;
	if (!id || !listen || !status || split_addr(listen, &lip, &lport) < 0) {
		fprintf(stderr, "usage: --node ID --listen IP:PORT --peer ID=IP:PORT... --status FILE [--stop-file FILE]\n");
		return 2;
	}
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	signal(SIGPIPE, SIG_IGN);
	struct rn n;
	rn_init(&n, id, np + 1, seed);
	struct peer_config pc = {0};
	pc.cluster_id = 0xC1A5;
	pc.node_id = id;
	pc.listen_addr = lip;
	pc.listen_port = lport;
	pc.read_deadline_ms = 1000;
	pc.ping_interval_ms = 100;
	pc.backoff_min_ms = 20;
	pc.backoff_max_ms = 300;
	pc.rng_seed = seed + id;
	pc.on_recv = rn_on_recv;
	pc.arg = &n;
	if (peer_new(&pc, &n.p) < 0)
		return 1;
	for (uint32_t i = 0; i < np; i++) {
		char *eq = strchr(peers[i], '=');
		char *ip;
		uint16_t port;
		if (!eq || split_addr(eq + 1, &ip, &port) < 0)
			return 2;
		*eq = '\0';
		if (peer_add(n.p, strtoull(peers[i], NULL, 10), ip, port) < 0) {
			fprintf(stderr, "bad --peer %s\n", peers[i]);
			return 2;
		}
	}
	struct parley_rng rng = {seed ^ id};
	uint64_t last_tick = mono_ms(), last_status = 0, k = 0;
	while (!stop_now) {
		peer_poll(n.p, 2);
		uint64_t now = mono_ms();
		if (now - last_tick >= RN_TICK_MS) {
			last_tick = now;
			raft_tick(n.r);
			bool stopping = stopf && access(stopf, F_OK) == 0;
			if (!stopping && raft_role(n.r) == RAFT_LEADER)
				for (int j = 0; j < 4; j++)
					if (rn_propose(&n, k++, &rng) < 0)
						break;
		}
		rn_process(&n);
		if (now - last_status >= 50) {
			last_status = now;
			write_status(status, &n);
		}
	}
	write_status(status, &n);
	rn_free(&n);
	return 0;
}

