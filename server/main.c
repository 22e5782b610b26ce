/*
 * main.c — parleyd: configuration, engine, chat service, TLS context,
 * event loops, admin HTTP, signals and the graceful stop.
 *
 * Start-up order (each step needs the previous one):
 *   1. configuration (flags > PARLEY_* env > config file > defaults);
 *      --check-config validates and exits;
 *   2. engine open (WAL recovery) with the chat clock;
 *   3. chat_open: reads the durable per-partition fan-out cursors and
 *      queues the fan-out of what is past them (metadata scan and a few
 *      backward reads; the fan-out itself runs in the background, ahead
 *      of every live message, so inbox order holds while clients are
 *      already served);
 *   4. TLS context, event loops (listeners bound), admin HTTP; /readyz
 *      turns ready once the loops run.
 *
 * Graceful stop (SIGTERM / SIGINT): loops stop accepting, send GOAWAY
 * DRAIN, finish in-flight requests (a durable SEND still gets its
 * SEND_ACK), flush, close; then the fan-out queue drains, a last fan-out
 * checkpoint is written (so a clean restart re-fans out nothing), the
 * engine closes (everything durable) and we exit 0.
 * A fatal engine error (failed fdatasync) exits at once with status 70:
 * recovery from the log on restart is the only safe continuation.
 *
 * Threads: main thread (this file), one thread per loop, engine shards,
 * the fan-out thread, the admin HTTP thread.
 */
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "admin.h"
#include "chat.h"
#include "jwt.h"
#include "live.h"
#include "peer_node.h"
#include "proxy.h"
#include "tail_relay.h"
#include "proxy_node.h"
#include "loop.h"
#include "parley_engine.h"
#include "parley_proto.h"
#include "presence.h"
#include "ratelimit.h"
#include "route.h"

static void on_engine_fatal(void *arg, int err)
{
	(void)arg;
	PLOG_E("parleyd", "engine fatal error: exiting, restart recovers from "
	       "the log", "err=%s", parley_errname(err));
	_exit(70);
}

/*
 * TLS 1.2 cipher suites: ECDHE key exchange (forward secrecy) with an AEAD
 * only (AES-GCM, ChaCha20-Poly1305). No CBC / SHA-1 MAC suites (Lucky13-
 * style padding oracles), no static RSA, no DHE. TLS 1.3 suites are
 * OpenSSL's defaults (all AEAD).
 */
#define PARLEYD_TLS12_CIPHERS                                                  \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"            \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"            \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static SSL_CTX *tls_ctx_new(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_set_cipher_list(ctx, PARLEYD_TLS12_CIPHERS) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
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

/* ---- configuration -------------------------------------------------------- */

/*
 * One table of keys. Each key can be set, from lowest to highest
 * precedence, by its default, the config file (`key = value` lines, `#`
 * comments; --config FILE or PARLEY_CONFIG), the environment
 * (PARLEY_<KEY in upper case>) and the command line (--key-with-dashes
 * VALUE). --check-config validates everything (incl. loading the TLS and
 * JWT keys and opening nothing else) and exits 0 or 2.
 */
struct opts {
	char data[512];
	char listen[256], admin_listen[256];
	uint32_t port, tls_port, admin_port;
	uint32_t admin_max_connections, admin_request_timeout_ms;
	char tls_cert[512], tls_key[512];
	uint32_t loops, engine_shards, partitions;
	char jwt_alg[16];
	char jwt_secret_file[512], jwt_public_key_file[512];
	char jwt_issuer[256], jwt_audience[256];
	uint32_t jwt_leeway_s;
	char server_id[64];
	uint32_t max_frame, max_body, max_inflight, event_window;
	uint32_t group_max_members, group_read_fanout_min;
	uint32_t early_delivery;
	uint32_t idle_timeout_ms, handshake_timeout_ms, slow_consumer_ms;
	uint64_t outbound_queue_bytes;
	uint32_t max_connections, drain_timeout_ms;
	uint32_t preauth_max_frame, frame_timeout_ms;
	uint64_t memory_budget_bytes;
	uint32_t idem_max_keys;
	/* rate limits (ratelimit.h): per minute and burst, per user / conn */
	uint32_t rate_send_user_per_min, rate_send_user_burst;
	uint32_t rate_send_conn_per_min, rate_send_conn_burst;
	uint32_t rate_history_user_per_min, rate_history_user_burst;
	uint32_t rate_history_conn_per_min, rate_history_conn_burst;
	uint32_t rate_typing_user_per_min, rate_typing_user_burst;
	uint32_t rate_typing_conn_per_min, rate_typing_conn_burst;
	uint32_t rate_presence_user_per_min, rate_presence_user_burst;
	uint32_t rate_presence_conn_per_min, rate_presence_conn_burst;
	uint32_t rate_users_max, max_handshakes, handshake_retry_ms;
	/* edits, deletes, retention (chat_edit.c, docs/SERVER.md) */
	uint64_t edit_window_ms, delete_window_ms;
	uint64_t retention_max_age_ms, retention_max_count, retention_interval_ms;
	uint64_t retention_sweep_ms;
	uint32_t admin_compact;
	uint32_t admin_digest;
	/* typing and presence (presence.h) */
	uint32_t presence_heartbeat_ms, presence_ttl_ms, presence_subs_max;
	uint32_t typing_ttl_ms, presence_last_seen_write_ms;
	uint32_t presence_push_queue_max;
	char log_level[16];
	bool dev, dev_allow_public;
	/* static cluster (peer_node.h, docs/CLUSTER.md); node_id 0 = one node */
	uint64_t node_id, cluster_id;
	char peer_listen[64], peers[1024], founders[256];
	uint32_t peer_port, raft_tick_ms, raft_election_ticks, raft_quiesce_ticks;
	uint64_t raft_log_keep_bytes, snapshot_rate_bytes;
	char peer_tls_ca[512], peer_tls_cert[512], peer_tls_key[512];
	char client_advertise[80], client_tls_advertise[80], admin_advertise[80];
	char leader_placement[16];
	uint32_t replication_factor;
	uint32_t replica_replace_ms;
	uint32_t leader_rebalance_ms;
	uint32_t forward, forward_max_inflight, forward_timeout_ms;
};

enum kt { K_STR, K_U32, K_U64 };
struct key {
	const char *name;
	enum kt type;
	size_t off, size;
	const char *def;
	const char *help;
};
#define KS(n, d, h) {#n, K_STR, offsetof(struct opts, n), sizeof(((struct opts *)0)->n), d, h}
#define KU(n, d, h) {#n, K_U32, offsetof(struct opts, n), 4, d, h}
#define KL(n, d, h) {#n, K_U64, offsetof(struct opts, n), 8, d, h}
static const struct key KEYS[] = {
	KS(data, "./parley-data", "data directory"),
	KS(listen, "127.0.0.1", "address to listen on (host, or host:port for the TCP port)"),
	KU(port, "7411", "plain TCP port (0 = off)"),
	KU(tls_port, "7412", "TLS port (0 = off; needs tls_cert and tls_key)"),
	KU(admin_port, "7480", "admin HTTP port: /metrics /livez /readyz (0 = off)"),
	KS(admin_listen, "127.0.0.1", "admin HTTP address (independent of listen: unauthenticated metrics stay local unless set)"),
	KU(admin_max_connections, "64", "admin HTTP connections at once (the oldest is evicted beyond)"),
	KU(admin_request_timeout_ms, "5000", "admin HTTP: whole request must arrive within, ms (408 after)"),
	KS(tls_cert, "", "server certificate chain (PEM)"),
	KS(tls_key, "", "server private key (PEM)"),
	KU(loops, "0", "event loops (0 = one per online CPU)"),
	KU(engine_shards, "0", "engine shard threads (0 = max(1, online CPUs / 4), see docs/SERVER.md)"),
	KU(partitions, "0", "partitions when creating the data dir (0 = default)"),
	KS(jwt_alg, "HS256", "HS256, RS256 or ES256"),
	KS(jwt_secret_file, "", "HS256 shared secret (file contents, >= 16 bytes)"),
	KS(jwt_public_key_file, "", "RS256/ES256 public key or certificate (PEM)"),
	KS(jwt_issuer, "", "required iss claim (empty = not checked)"),
	KS(jwt_audience, "", "required aud claim (empty = not checked)"),
	KU(jwt_leeway_s, "30", "clock skew allowed on exp/nbf, seconds"),
	KS(server_id, "parleyd-1", "name announced in HELLO_OK"),
	KU(max_frame, "1048576", "largest frame after AUTH_OK, bytes (64 KiB..16 MiB)"),
	KU(preauth_max_frame, "16384", "largest frame before AUTH_OK, bytes (8206..max_frame: HELLO, AUTH with an 8 KiB token)"),
	KU(frame_timeout_ms, "30000", "a frame must arrive whole within this of its first byte"),
	KL(memory_budget_bytes, "1073741824", "memory for buffers, queues, memtables and idempotency keys; over it clients are not read"),
	KU(idem_max_keys, "0", "idempotency keys per partition, fixed when the data dir is created (0 = a quarter of memory_budget_bytes)"),
	KU(max_body, "65536", "largest SEND body, bytes"),
	KU(max_inflight, "64", "requests in flight per connection"),
	KU(event_window, "1024", "unacknowledged EVENTs per connection"),
	KU(early_delivery, "1", "1 = a 1:1 or small-group message goes to the recipients' connections that ask for it (HELLO feature EARLY) as soon as it is durable in its conversation, before its inbox pointer; 0 = only through the inbox"),
	KU(group_max_members, "1024", "members a group may have (1..5000)"),
	KU(group_read_fanout_min, "100", "groups with at least this many members fan messages out by read (live EVENTs + one ACTIVITY pointer per offline member); 0 = always write fan-out"),
	KU(idle_timeout_ms, "60000", "close after this much silence"),
	KU(handshake_timeout_ms, "10000", "TLS + HELLO + AUTH must finish within"),
	KU(slow_consumer_ms, "30000", "window full / no send progress this long = slow consumer"),
	KL(outbound_queue_bytes, "8388608", "queued bytes per connection before it is cut off"),
	KU(max_connections, "100000", "client connections (all loops)"),
	KU(drain_timeout_ms, "5000", "SIGTERM: force-close connections after"),
	KU(rate_send_user_per_min, "6000", "SENDs per minute per user, all devices (0 = unlimited)"),
	KU(rate_send_user_burst, "200", "SENDs a user may make at once"),
	KU(rate_send_conn_per_min, "3000", "SENDs per minute per connection (0 = unlimited)"),
	KU(rate_send_conn_burst, "100", "SENDs a connection may make at once"),
	KU(rate_history_user_per_min, "3000", "HISTORY, SYNC, RECEIPTS and READ_MARKER requests per minute per user (0 = unlimited)"),
	KU(rate_history_user_burst, "100", "HISTORY, SYNC, RECEIPTS and READ_MARKER a user may make at once"),
	KU(rate_history_conn_per_min, "1200", "HISTORY, SYNC, RECEIPTS and READ_MARKER requests per minute per connection (0 = unlimited)"),
	KU(rate_history_conn_burst, "50", "HISTORY, SYNC, RECEIPTS and READ_MARKER a connection may make at once"),
	KU(rate_typing_user_per_min, "120", "typing notifications per minute per user (0 = unlimited)"),
	KU(rate_typing_user_burst, "10", "typing notifications a user may send at once"),
	KU(rate_typing_conn_per_min, "60", "typing notifications per minute per connection (0 = unlimited)"),
	KU(rate_typing_conn_burst, "5", "typing notifications a connection may send at once"),
	KU(rate_presence_user_per_min, "120", "presence updates per minute per user (0 = unlimited)"),
	KU(rate_presence_user_burst, "20", "presence updates a user may send at once"),
	KU(rate_presence_conn_per_min, "60", "presence updates per minute per connection (0 = unlimited)"),
	KU(rate_presence_conn_burst, "10", "presence updates a connection may send at once"),
	KU(rate_users_max, "65536", "users whose rate buckets are kept (LRU beyond; 64..16777216)"),
	KU(max_handshakes, "256", "connections between accept and AUTH_OK at once, server-wide (0 = no bound)"),
	KU(handshake_retry_ms, "1000", "retry-after for a refused HELLO: this + random 0..this"),
	KU(presence_heartbeat_ms, "30000", "clients send a frame (PING when idle) at least this often; 100..3600000"),
	KU(presence_ttl_ms, "60000", "a device silent this long counts as offline (> presence_heartbeat_ms)"),
	KU(presence_subs_max, "256", "presence subscriptions per connection (1..65535)"),
	KU(typing_ttl_ms, "6000", "a typing indicator not refreshed this long stops (500..60000)"),
	KU(presence_last_seen_write_ms, "300000", "while online, last_seen is written at most this often (>= 1000)"),
	KU(presence_push_queue_max, "65536", "TYPING_PUSH/PRESENCE pushes queued to loops at once, server-wide (>= 64)"),
	KS(log_level, "info", "debug, info, warn or error"),
	KL(edit_window_ms, "172800000", "EDIT allowed this long after the message, ms (0 = no limit)"),
	KL(delete_window_ms, "172800000", "DELETE for everyone allowed this long after the message, ms (0 = no limit)"),
	KL(retention_max_age_ms, "0", "conversations (and inboxes) keep entries this long, ms (0 = forever)"),
	KL(retention_max_count, "0", "conversations keep at most this many newest entries (0 = no limit)"),
	KL(retention_interval_ms, "3600000", "how often compaction enforces retention, ms"),
	KL(retention_sweep_ms, "60000", "how often per-conversation retention (RETENTION) is turned into deletions, ms"),
	KU(admin_compact, "0", "1 = admin HTTP POST /admin/compact flushes and compacts every partition (tests, maintenance)"),
	KU(admin_digest, "0", "1 = admin HTTP GET /debug/digest: every partition's applied index and state digest (replica comparison; reads everything)"),
	/* static cluster (docs/CLUSTER.md) */
	KL(node_id, "0", "cluster: this node's id (0 = a single node, no replication)"),
	KL(cluster_id, "0", "cluster: the cluster's id, the same on every node (!= 0 with node_id)"),
	KS(peer_listen, "127.0.0.1", "cluster: numeric address of the peer (node-to-node) port"),
	KU(peer_port, "7413", "cluster: peer port"),
	KS(peers, "", "cluster: every other node as id=addr:port of its peer port, comma-separated"),
	KS(founders, "", "cluster: for a node added to a running cluster (parleyctl cluster add-node): the founding node ids, comma-separated, exactly as the founders were started (empty = this node and its peers found the cluster)"),
	KU(raft_tick_ms, "50", "cluster: Raft tick, ms (10..1000)"),
	KU(raft_election_ticks, "10", "cluster: election timeout in ticks, randomized up to twice that (3..100)"),
	KU(raft_quiesce_ticks, "10", "cluster: idle ticks before a partition's group stops heartbeating (quiesces; 0 = never, else 2..1000)"),
	KL(raft_log_keep_bytes, "0", "cluster: applied log bytes a leader keeps per partition for lagging followers before they need a snapshot (0 = 4 MiB)"),
	KL(snapshot_rate_bytes, "0", "cluster: bandwidth for sending snapshots to lagging followers, bytes/s over all partitions (0 = unlimited, else >= 65536)"),
	KS(leader_placement, "spread", "cluster: follow0 = every partition's leadership follows partition 0's leader (one node leads all); spread = each partition keeps the leader it elected (writes to partitions led elsewhere are forwarded to their leader; docs/CLUSTER.md)"),
	KU(leader_rebalance_ms, "5000", "cluster, spread placement: once no partition changed leader or term for this long, a node leading more than its share of the partitions hands the excess to the least loaded nodes (after a failover, after a node returned); 0 = never (run parleyctl cluster rebalance), else 500..600000"),
	KU(replication_factor, "3", "cluster: voters of each partition once add-node / remove-node place replicas, or right after the start when more founders than this formed the cluster (1..9; 0 = every node, as before the placement map); the meta group (partition 0 and the members stream's partition) has 1, 3 or 5 voters and every other node as learner (docs/CLUSTER.md §3.7)"),
	KU(replica_replace_ms, "300000", "cluster with a replication factor: once a node's link has been down this long (as the leader of partition 0 sees it), that leader moves its replicas to live nodes, a few partitions at a time and only where the replicas left still hold a quorum; the node stays a member and gets a share again when it returns (docs/CLUSTER.md §3.7); 0 = never, else 1000..86400000"),
	KS(peer_tls_ca, "", "cluster: CA of the node certificates (PEM; mutual TLS between nodes)"),
	KS(peer_tls_cert, "", "cluster: this node's certificate, naming node-<node_id> (PEM)"),
	KS(peer_tls_key, "", "cluster: this node's private key (PEM)"),
	KS(client_advertise, "", "cluster: host:port clients reach this node's plain TCP port at, told to the other nodes for NOTLEADER redirects (default: listen and port, or peer_listen when listen is a wildcard)"),
	KS(client_tls_advertise, "", "cluster: host:port of this node's TLS port for clients (default as client_advertise, with tls_port)"),
	KU(forward, "1", "cluster: 1 = a request this node would answer NOTLEADER is forwarded to the leader over the peer link and its reply passed on; 0 = answer NOTLEADER with the leader's address (the client redirects; docs/CLUSTER.md §3.3)"),
	KU(forward_max_inflight, "1024", "cluster: forwarded requests in flight per peer node, each way (1..65536; beyond: ERROR FULL, retryable)"),
	KU(forward_timeout_ms, "3000", "cluster: a forwarded request without the leader's reply this long is answered AGAIN (retryable), ms (100..60000)"),
	KS(admin_advertise, "", "cluster: host:port of this node's admin port for operators (parleyctl cluster status; default: admin_listen and admin_port)"),
};
#define NKEYS PARLEY_ARRAY_LEN(KEYS)

static const struct key *key_find(const char *name, size_t len)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strlen(KEYS[i].name) == len && !memcmp(KEYS[i].name, name, len))
			return &KEYS[i];
	return NULL;
}

static int key_set(struct opts *o, const struct key *k, const char *v,
		   const char *src)
{
	char *dst = (char *)o + k->off;
	if (k->type == K_STR) {
		if (strlen(v) >= k->size) {
			fprintf(stderr, "parleyd: %s: %s is too long\n", src, k->name);
			return -1;
		}
		strcpy(dst, v);
		return 0;
	}
	char *e;
	errno = 0;
	unsigned long long x = strtoull(v, &e, 0);
	if (errno || e == v || *e || v[0] == '-' ||
	    (k->type == K_U32 && x > UINT32_MAX)) {
		fprintf(stderr, "parleyd: %s: %s: \"%s\" is not a valid number\n",
			src, k->name, v);
		return -1;
	}
	if (k->type == K_U32) {
		uint32_t y = (uint32_t)x;
		memcpy(dst, &y, 4);
	} else {
		uint64_t y = x;
		memcpy(dst, &y, 8);
	}
	return 0;
}

static char *trim(char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	char *e = p + strlen(p);
	while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
			 e[-1] == '\r'))
		*--e = '\0';
	return p;
}

static int config_file(struct opts *o, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "parleyd: cannot read config file %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	char line[1024];
	int ln = 0, rc = 0;
	while (fgets(line, sizeof line, f)) {
		ln++;
		char *p = trim(line);
		if (!*p || *p == '#')
			continue;
		char *eq = strchr(p, '=');
		char src[600];
		snprintf(src, sizeof src, "%s:%d", path, ln);
		if (!eq) {
			fprintf(stderr, "parleyd: %s: expected key = value\n", src);
			rc = -1;
			continue;
		}
		*eq = '\0';
		char *k = trim(p), *v = trim(eq + 1);
		size_t vl = strlen(v);
		if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
			v[vl - 1] = '\0';
			v++;
		}
		const struct key *key = key_find(k, strlen(k));
		if (!key) {
			fprintf(stderr, "parleyd: %s: unknown key \"%s\"\n", src, k);
			rc = -1;
			continue;
		}
		if (key_set(o, key, v, src))
			rc = -1;
	}
	fclose(f);
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: parleyd [--config FILE] [--check-config] [--dev] "
		   "[--mint-token SUB] [--KEY VALUE]...\n\n"
		   "Every KEY can also come from the environment (PARLEY_<KEY>) or "
		   "the config file (key = value).\nPrecedence: flag > environment > "
		   "config file > default.\n\nkeys:\n");
	for (size_t i = 0; i < NKEYS; i++) {
		char flag[64];
		snprintf(flag, sizeof flag, "--%s", KEYS[i].name);
		for (char *p = flag + 2; *p; p++)
			if (*p == '_')
				*p = '-';
		fprintf(f, "  %-26s %s (default %s)\n", flag, KEYS[i].help,
			*KEYS[i].def ? KEYS[i].def : "none");
	}
	fprintf(f, "\n  --dev                      development: HS256 with secret "
		   "\"parley-dev-secret\" unless jwt_secret_file is set\n"
		   "  --dev-allow-public         let --dev listen on a non-loopback "
		   "address (refused otherwise)\n"
		   "  --mint-token SUB           print an HS256 token for SUB "
		   "(jwt_secret_file, issuer, audience; 24 h) and exit\n"
		   "  --check-config             validate the configuration and "
		   "exit (0 ok, 2 invalid)\n");
}

enum { ACT_RUN, ACT_CHECK, ACT_MINT };

/* Returns 0 and fills o / *action, 1 for --help, -1 on an error. */
static int config_load(struct opts *o, int argc, char **argv, int *action,
		       const char **mint_sub)
{
	memset(o, 0, sizeof *o);
	for (size_t i = 0; i < NKEYS; i++)
		key_set(o, &KEYS[i], KEYS[i].def, "default");
	*action = ACT_RUN;
	/* pass 1: meta flags and the config file's path */
	const char *cfg = getenv("PARLEY_CONFIG");
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			cfg = argv[++i];
	}
	if (cfg && *cfg && config_file(o, cfg))
		return -1;
	/* environment */
	for (size_t i = 0; i < NKEYS; i++) {
		char env[64] = "PARLEY_";
		size_t n = strlen(env);
		for (const char *p = KEYS[i].name; *p && n < sizeof env - 1; p++)
			env[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
		env[n] = '\0';
		const char *v = getenv(env);
		if (v && key_set(o, &KEYS[i], v, env))
			return -1;
	}
	/* flags */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--config")) {
			i++;
			continue;
		}
		if (!strcmp(a, "--check-config")) {
			*action = ACT_CHECK;
			continue;
		}
		if (!strcmp(a, "--dev")) {
			o->dev = true;
			continue;
		}
		if (!strcmp(a, "--dev-allow-public")) {
			o->dev_allow_public = true;
			continue;
		}
		if (!strcmp(a, "--mint-token") && i + 1 < argc) {
			*action = ACT_MINT;
			*mint_sub = argv[++i];
			continue;
		}
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "parleyd: unexpected argument \"%s\"\n", a);
			return -1;
		}
		char name[64];
		const char *eqv = strchr(a, '=');
		size_t nl = eqv ? (size_t)(eqv - a - 2) : strlen(a + 2);
		if (nl >= sizeof name) {
			fprintf(stderr, "parleyd: unknown flag %s\n", a);
			return -1;
		}
		memcpy(name, a + 2, nl);
		name[nl] = '\0';
		for (char *p = name; *p; p++)
			if (*p == '-')
				*p = '_';
		const struct key *k = key_find(name, nl);
		const char *v = eqv ? eqv + 1 : (i + 1 < argc ? argv[++i] : NULL);
		if (!k || !v) {
			fprintf(stderr, "parleyd: %s flag %s (see --help)\n",
				k ? "missing value for" : "unknown", a);
			return -1;
		}
		if (key_set(o, k, v, "command line"))
			return -1;
	}
	/* "--listen host:port" (one colon) also sets the TCP port */
	char *colon = strrchr(o->listen, ':');
	if (colon && strchr(o->listen, ':') == colon) {
		*colon = '\0';
		if (key_set(o, key_find("port", 4), colon + 1, "listen"))
			return -1;
	}
	return 0;
}

static int read_file(const char *path, char *buf, size_t cap, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	size_t n = fread(buf, 1, cap, f);
	int big = !feof(f);
	fclose(f);
	if (big)
		return -PARLEY_ETOOBIG;
	*len = n;
	return 0;
}

/* An advertised address: host:port ([v6]:port), printable, no spaces. */
static bool advertise_ok(const char *a)
{
	for (const char *p = a; *p; p++)
		if (*p < 0x21 || *p > 0x7e)
			return false;
	const char *colon = strrchr(a, ':');
	if (!colon || colon == a || !colon[1])
		return false;
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	return !*end && port && port <= 65535;
}

/* The address this node advertises for one of its ports: `set` when
 * given, else `host` (or `fallback` when host is a wildcard or empty)
 * with `port`; "" when port is 0 or neither host names this node. */
static void advertise_default(char *out, size_t cap, const char *set,
			      const char *host, const char *fallback,
			      uint32_t port)
{
	out[0] = '\0';
	if (*set) {
		snprintf(out, cap, "%s", set);
		return;
	}
	if (!port)
		return;
	const char *h = host;
	if (!*h || !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strcmp(h, "*"))
		h = fallback;
	if (!*h || !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strcmp(h, "*"))
		return;
	snprintf(out, cap, strchr(h, ':') ? "[%s]:%u" : "%s:%u", h, port);
}

/* 1 when host resolves (as a listen address) to loopback only, 0 when
 * not, -1 when it does not resolve. */
static int addr_is_loopback(const char *host)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	if (getaddrinfo(*host ? host : NULL, "0", &hints, &res) || !res)
		return -1;
	int lo = 1;
	for (struct addrinfo *r = res; r; r = r->ai_next) {
		if (r->ai_family == AF_INET) {
			const struct sockaddr_in *a = (const void *)r->ai_addr;
			lo &= (ntohl(a->sin_addr.s_addr) >> 24) == 127;
		} else if (r->ai_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const void *)r->ai_addr;
			lo &= IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
		} else {
			lo = 0;
		}
	}
	freeaddrinfo(res);
	return lo;
}

/* Validates o and builds the JWT verifier and TLS context. Messages go
 * to stderr; returns the number of problems. */
_Static_assert(RATELIMIT_USER_MAX >= PARLEY_PROTO_MAX_USER_ID,
	       "the rate limit table must hold any valid user id");

static void pres_config(const struct opts *o, struct presence_config *pc)
{
	*pc = (struct presence_config){
		.heartbeat_ms = o->presence_heartbeat_ms,
		.ttl_ms = o->presence_ttl_ms,
		.subs_max = o->presence_subs_max,
		.typing_ttl_ms = o->typing_ttl_ms,
		.last_seen_write_ms = o->presence_last_seen_write_ms,
		.push_queue_max = o->presence_push_queue_max};
}

static void rl_config(const struct opts *o, struct ratelimit_config *rc)
{
	memset(rc, 0, sizeof *rc);
#define RL(K, k)                                                              \
	rc->user[K] = (struct ratelimit_rate){o->rate_##k##_user_per_min,     \
					      o->rate_##k##_user_burst};      \
	rc->conn[K] = (struct ratelimit_rate){o->rate_##k##_conn_per_min,     \
					      o->rate_##k##_conn_burst}
	RL(RATELIMIT_SEND, send);
	RL(RATELIMIT_HISTORY, history);
	RL(RATELIMIT_TYPING, typing);
	RL(RATELIMIT_PRESENCE, presence);
#undef RL
	rc->max_users = o->rate_users_max;
}

/* "1,2,3" -> ids (distinct, != 0); 0 for an empty value; -1 when bad. */
static int parse_founders(const char *s, uint64_t out[PEER_NODE_MAX_PEERS + 1])
{
	int n = 0;
	if (!*s)
		return 0;
	for (const char *p = s;;) {
		char *end;
		if (*p < '0' || *p > '9')
			return -1;
		unsigned long long v = strtoull(p, &end, 10);
		if (!v || n == (int)PEER_NODE_MAX_PEERS + 1)
			return -1;
		for (int i = 0; i < n; i++)
			if (out[i] == v)
				return -1;
		out[n++] = v;
		if (!*end)
			break;
		if (*end != ',')
			return -1;
		p = end + 1;
	}
	return n >= 2 ? n : -1;
}

static int config_check(const struct opts *o, struct jwt_verifier **jv,
			SSL_CTX **tls)
{
	int bad = 0;
#define BAD(...) (fprintf(stderr, "parleyd: config: " __VA_ARGS__), bad++)
	if (!*o->data)
		BAD("data must be set\n");
	if (o->port > 65535 || o->tls_port > 65535 || o->admin_port > 65535)
		BAD("ports must be 0..65535\n");
	if (!o->port && !o->tls_port)
		BAD("no listener: port and tls_port are both 0\n");
	if ((o->port && (o->port == o->tls_port || o->port == o->admin_port)) ||
	    (o->tls_port && o->tls_port == o->admin_port))
		BAD("port, tls_port and admin_port must differ\n");
	if (o->max_frame < PARLEY_PROTO_MAX_FRAME_MIN ||
	    o->max_frame > PARLEY_PROTO_MAX_FRAME_HARD)
		BAD("max_frame must be %u..%u\n", PARLEY_PROTO_MAX_FRAME_MIN,
		    PARLEY_PROTO_MAX_FRAME_HARD);
	if (o->max_body < 1 || o->max_body > PE_MAX_PAYLOAD - 512 ||
	    (uint64_t)o->max_body + 512 > o->max_frame)
		BAD("max_body must be 1..min(max_frame - 512, %u)\n",
		    PE_MAX_PAYLOAD - 512);
	if (o->group_max_members < 1 || o->group_max_members > CHAT_GROUP_MAX_HARD)
		BAD("group_max_members must be 1..%u\n", CHAT_GROUP_MAX_HARD);
	if (o->max_inflight < 1 || o->event_window < 1 || o->max_connections < 1)
		BAD("max_inflight, event_window and max_connections must be >= 1\n");
	if (o->idle_timeout_ms < 100 || o->handshake_timeout_ms < 100 ||
	    o->slow_consumer_ms < 100 || o->drain_timeout_ms < 100)
		BAD("timeouts must be >= 100 ms\n");
	if (o->preauth_max_frame < PARLEY_PROTO_HEADER_SIZE + 2 + PARLEY_PROTO_MAX_TOKEN ||
	    o->preauth_max_frame > o->max_frame)
		BAD("preauth_max_frame must be %u..max_frame (an AUTH with the "
		    "largest token must fit)\n",
		    PARLEY_PROTO_HEADER_SIZE + 2 + PARLEY_PROTO_MAX_TOKEN);
	if (o->frame_timeout_ms < 100)
		BAD("frame_timeout_ms must be >= 100\n");
	if (o->memory_budget_bytes < MEMBUDGET_MIN)
		BAD("memory_budget_bytes must be >= %llu\n",
		    (unsigned long long)MEMBUDGET_MIN);
	if (o->outbound_queue_bytes < 2ull * o->max_frame / 16)
		BAD("outbound_queue_bytes must be at least max_frame / 8\n");
	if (o->loops > 256)
		BAD("loops must be 0..256\n");
	struct ratelimit_config rlc;
	char rwhy[160];
	rl_config(o, &rlc);
	if (ratelimit_config_check(&rlc, rwhy, sizeof rwhy))
		BAD("%s\n", rwhy);
	struct presence_config prc;
	pres_config(o, &prc);
	if (presence_config_check(&prc, rwhy, sizeof rwhy))
		BAD("%s\n", rwhy);
	if (o->handshake_retry_ms < 1 || o->handshake_retry_ms > 600000)
		BAD("handshake_retry_ms must be 1..600000\n");
	if (o->admin_max_connections < 1 || o->admin_max_connections > 4096)
		BAD("admin_max_connections must be 1..4096\n");
	if (o->admin_request_timeout_ms < 100)
		BAD("admin_request_timeout_ms must be >= 100\n");
	if (o->dev && !o->dev_allow_public && addr_is_loopback(o->listen) != 1)
		BAD("--dev on the non-loopback address \"%s\": development tokens "
		    "would be accepted from the network; listen on 127.0.0.1 / ::1, "
		    "or add --dev-allow-public to do it anyway\n", o->listen);
	if (strcmp(o->log_level, "debug") && strcmp(o->log_level, "info") &&
	    strcmp(o->log_level, "warn") && strcmp(o->log_level, "error"))
		BAD("log_level must be debug, info, warn or error\n");
	/* JWT */
	enum jwt_alg alg = jwt_alg_parse(o->jwt_alg);
	const char *iss = *o->jwt_issuer ? o->jwt_issuer : NULL;
	const char *aud = *o->jwt_audience ? o->jwt_audience : NULL;
	static char key[65536];
	size_t kl = 0;
	if (!alg) {
		BAD("jwt_alg must be HS256, RS256 or ES256\n");
	} else if (alg == JWT_HS256) {
		if (*o->jwt_secret_file) {
			int rc = read_file(o->jwt_secret_file, key, sizeof key, &kl);
			if (rc)
				BAD("jwt_secret_file %s: %s\n", o->jwt_secret_file,
				    parley_strerror(rc));
			while (kl && (key[kl - 1] == '\n' || key[kl - 1] == '\r'))
				kl--; /* a trailing newline is not part of the secret */
		} else if (o->dev) {
			kl = strlen("parley-dev-secret");
			memcpy(key, "parley-dev-secret", kl);
		} else {
			BAD("HS256 needs jwt_secret_file (or --dev)\n");
		}
	} else {
		int rc = *o->jwt_public_key_file
				 ? read_file(o->jwt_public_key_file, key, sizeof key, &kl)
				 : -PARLEY_EINVAL;
		if (rc)
			BAD("%s needs a readable jwt_public_key_file\n", o->jwt_alg);
	}
	if (alg && kl && jwt_verifier_new(alg, key, kl, iss, aud, o->jwt_leeway_s,
					  jv))
		BAD("the JWT key is not usable for %s (HS256 secrets need >= 16 "
		    "bytes)\n", o->jwt_alg);
	OPENSSL_cleanse(key, sizeof key);
	/* TLS */
	if (o->tls_port && (*o->tls_cert || *o->tls_key)) {
		if (!*o->tls_cert || !*o->tls_key)
			BAD("tls_cert and tls_key go together\n");
		else if (!(*tls = tls_ctx_new(o->tls_cert, o->tls_key)))
			BAD("cannot load tls_cert / tls_key\n");
	}
	/* static cluster */
	if (o->node_id || o->cluster_id || *o->peers) {
		struct peer_node_config pc;
		memset(&pc, 0, sizeof pc);
		if (!o->node_id || !o->cluster_id || !*o->peers)
			BAD("node_id, cluster_id and peers go together\n");
		else if (peer_node_parse_peers(o->peers, &pc))
			bad++;
		for (uint32_t i = 0; i < pc.npeers; i++) {
			if (pc.peers[i].id == o->node_id)
				BAD("peers must not name this node (%" PRIu64 ")\n",
				    o->node_id);
			for (uint32_t j = 0; j < i; j++)
				if (pc.peers[j].id == pc.peers[i].id)
					BAD("peers: node %" PRIu64 " twice\n",
					    pc.peers[i].id);
		}
		if (!o->peer_port || o->peer_port > 65535 ||
		    o->peer_port == o->port || o->peer_port == o->tls_port ||
		    o->peer_port == o->admin_port)
			BAD("peer_port must be 1..65535 and differ from the other ports\n");
		if (o->raft_tick_ms < 10 || o->raft_tick_ms > 1000)
			BAD("raft_tick_ms must be 10..1000\n");
		if (o->replication_factor > PEER_NODE_MAX_PEERS + 1)
			BAD("replication_factor must be 0..%u\n",
			    PEER_NODE_MAX_PEERS + 1);
		if (o->raft_election_ticks < 3 || o->raft_election_ticks > 100)
			BAD("raft_election_ticks must be 3..100\n");
		if (o->raft_quiesce_ticks == 1 || o->raft_quiesce_ticks > 1000)
			BAD("raft_quiesce_ticks must be 0 or 2..1000\n");
		if (o->snapshot_rate_bytes && o->snapshot_rate_bytes < 65536)
			BAD("snapshot_rate_bytes must be 0 or >= 65536\n");
		if (strcmp(o->leader_placement, "follow0") &&
		    strcmp(o->leader_placement, "spread"))
			BAD("leader_placement must be follow0 or spread, got \"%s\"\n",
			    o->leader_placement);
		if (o->replica_replace_ms &&
		    (o->replica_replace_ms < 1000 ||
		     o->replica_replace_ms > 86400000))
			BAD("replica_replace_ms must be 0 or 1000..86400000\n");
		if (o->leader_rebalance_ms &&
		    (o->leader_rebalance_ms < 500 ||
		     o->leader_rebalance_ms > 600000))
			BAD("leader_rebalance_ms must be 0 or 500..600000\n");
		if (o->forward > 1)
			BAD("forward must be 0 or 1\n");
		if (o->forward_max_inflight < 1 || o->forward_max_inflight > 65536)
			BAD("forward_max_inflight must be 1..65536\n");
		if (o->forward_timeout_ms < 100 || o->forward_timeout_ms > 60000)
			BAD("forward_timeout_ms must be 100..60000\n");
		int ntls = !!*o->peer_tls_ca + !!*o->peer_tls_cert +
			   !!*o->peer_tls_key;
		if (ntls && ntls != 3)
			BAD("peer_tls_ca, peer_tls_cert and peer_tls_key go together\n");
		const char *adv[3] = {o->client_advertise, o->client_tls_advertise,
				      o->admin_advertise};
		for (int i = 0; i < 3; i++)
			if (*adv[i] && !advertise_ok(adv[i]))
				BAD("client_advertise, client_tls_advertise and "
				    "admin_advertise are host:port (printable, no "
				    "spaces), got \"%s\"\n", adv[i]);
		uint64_t f[PEER_NODE_MAX_PEERS + 1];
		int nf = parse_founders(o->founders, f);
		if (nf < 0)
			BAD("founders: 2..%u distinct node ids, comma-separated, "
			    "without this node's\n", PEER_NODE_MAX_PEERS + 1);
		for (int i = 0; i < nf; i++)
			if (f[i] == o->node_id)
				BAD("founders must not name this node: a founder "
				    "leaves founders empty\n");
	}
#undef BAD
	return bad;
}

static void config_print(const struct opts *o)
{
	for (size_t i = 0; i < NKEYS; i++) {
		const char *p = (const char *)o + KEYS[i].off;
		if (KEYS[i].type == K_STR)
			printf("%s = \"%s\"\n", KEYS[i].name, p);
		else if (KEYS[i].type == K_U32)
			printf("%s = %u\n", KEYS[i].name, *(const uint32_t *)(const void *)p);
		else
			printf("%s = %llu\n", KEYS[i].name,
			       (unsigned long long)*(const uint64_t *)(const void *)p);
	}
}

/* The auth hook: *exp_ms is the session deadline (jwt_claims.deadline_ms:
 * the token's exp plus the leeway), the instant jwt_expired_at() turns
 * true; the connection sends GOAWAY AUTH_EXPIRED at that instant and not
 * before, so a token accepted inside the leeway is not dropped at once. */
static int srv_auth(void *arg, const char *token, size_t len, char *sub,
		    size_t subcap, uint64_t *exp_ms, char *why, size_t whycap)
{
	struct jwt_claims cl;
	int rc = jwt_verify(arg, token, len, parley_now_ms(), &cl, why, whycap);
	if (rc)
		return rc;
	if (cl.sub_len >= subcap) {
		snprintf(why, whycap, "sub longer than %zu bytes", subcap - 1);
		return -PARLEY_EAUTH;
	}
	memcpy(sub, cl.sub, cl.sub_len + 1);
	*exp_ms = cl.deadline_ms;
	return 0;
}

/* ---- run ------------------------------------------------------------------------ */

/*
 * Engine shards by default: one per 4 online CPUs, at least one. Each
 * shard is a thread with its own WAL, so each adds a write+fdatasync
 * stream: on a small machine one shard's group commit covers every
 * connection with one sync, and its CPU per append (target <= 1 us) is
 * far below a loop thread's per request (decode, membership, reply), so
 * one shard keeps up with about four loops. On this 2-core machine the
 * rule gives 1 (measured against 2 with parley-bench server-compare: see
 * docs/SERVER.md). Partitions (default 64) are spread over the shards.
 */
static uint32_t engine_shards_for(uint32_t configured)
{
	if (configured)
		return configured;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	return cpus >= 4 ? (uint32_t)(cpus / 4) : 1; /* max(1, cpus / 4) */
}

/* The engine's share of the memory budget: half of it for all memtables
 * together, one partition's memtable at most that and at most the
 * engine's default (MAIN_MEMTABLE_PART_MAX). */
#define MAIN_MEMTABLE_PART_MAX (64ull << 20)
/* Derived idempotency keys per partition: at least this many whatever the
 * budget, at most the engine's default. */
#define MAIN_IDEM_MIN 1024u
#define MAIN_IDEM_MAX 1000000u
static uint64_t memtable_total_of(uint64_t budget)
{
	return budget / 2;
}
static uint64_t memtable_part_of(uint64_t budget)
{
	return PARLEY_MIN(budget / 2, MAIN_MEMTABLE_PART_MAX);
}

struct loop_thread {
	struct loop *lp;
	pthread_t thr;
};

/* ERROR NOTLEADER's leader hint (conn_leader_hint_install): the leader
 * of the partition refused (route.h) and its client addresses. */
static uint64_t leader_hint(void *arg, uint32_t partition, uint64_t leader,
			    char *plain, char *tls, size_t cap)
{
	struct srv *s = arg;
	uint64_t to = route_refusal_leader(s->engine, partition, leader,
					   peer_node_id(s->peer));
	return peer_node_leader_hint(s->peer, to, plain, tls, cap);
}

static int run(const struct opts *o, struct srv *s)
{
	int rc;
	static struct chat_clock clock;
	/* The memory budget (membudget.h): half of it bounds the memtables
	 * (flush pressure past a quarter), a quarter the idempotency keys of
	 * a new data directory (their count is part of its replicated state,
	 * stored in its MANIFEST); the rest is for connections' buffers. */
	uint64_t budget = o->memory_budget_bytes;
	uint32_t nparts = o->partitions ? o->partitions : 64; /* engine default */
	uint64_t idem = budget / 4 / pe_idem_key_bytes() / nparts;
	idem = PARLEY_MAX(MAIN_IDEM_MIN, PARLEY_MIN(idem, MAIN_IDEM_MAX));
	if (o->idem_max_keys) /* the operator's choice wins */
		idem = o->idem_max_keys;
	/* deleted messages' content is rewritten away by compaction */
	struct chat_scrub *scrub = chat_scrub_new();
	PARLEY_ASSERT(scrub);
	/* retention: chat's internal streams and configured defaults, then
	 * presence's streams */
	struct pe_retention_rule rules[CHAT_RETENTION_RULES_MAX + 8];
	size_t nrules = chat_retention_rules(o->retention_max_age_ms,
					     o->retention_max_count, rules);
	PARLEY_ASSERT(nrules + presence_nretention <= PARLEY_ARRAY_LEN(rules));
	for (size_t i = 0; i < presence_nretention; i++)
		rules[nrules++] = presence_retention[i];
	struct pe_options eo = {.dir = o->data, .partitions = o->partitions,
				.shards = engine_shards_for(o->engine_shards),
				.memtable_total_bytes = memtable_total_of(budget),
				.memtable_bytes = memtable_part_of(budget),
				.idem_max_keys = (uint32_t)idem,
				.clock_ms = chat_clock_ms, .clock_arg = &clock,
				.on_fatal = on_engine_fatal,
				/* internal streams that grow forever, and
				 * the configured defaults (retention_*) */
				.retention = rules,
				.nretention = nrules,
				.retention_interval_ms = o->retention_interval_ms,
				.compact_filter = chat_scrub_filter,
				.compact_filter_arg = scrub};
	struct pe_engine *e = NULL;
	/* static cluster: the peer port is bound before the engine opens (its
	 * groups may send as soon as their shards run) */
	struct peer_node *pn = NULL;
	if (o->node_id) {
		struct peer_node_config pc;
		memset(&pc, 0, sizeof pc);
		PARLEY_ASSERT(peer_node_parse_peers(o->peers, &pc) == 0);
		pc.cluster_id = o->cluster_id;
		pc.node_id = o->node_id;
		pc.listen_addr = o->peer_listen;
		pc.listen_port = (uint16_t)o->peer_port;
		pc.tick_ms = o->raft_tick_ms;
		pc.election_ticks = o->raft_election_ticks;
		pc.quiesce_ticks = o->raft_quiesce_ticks;
		pc.log_keep_bytes = o->raft_log_keep_bytes;
		pc.snapshot_rate_bytes = o->snapshot_rate_bytes;
		pc.leader_spread = !strcmp(o->leader_placement, "spread");
		pc.replication_factor = o->replication_factor;
		pc.replica_replace_ms = o->replica_replace_ms;
		pc.rebalance_ms = o->leader_rebalance_ms;
		static char adv_client[80], adv_tls[80], adv_admin[80];
		advertise_default(adv_client, sizeof adv_client, o->client_advertise,
				  o->listen, o->peer_listen, o->port);
		advertise_default(adv_tls, sizeof adv_tls, o->client_tls_advertise,
				  o->listen, o->peer_listen,
				  s->tls ? o->tls_port : 0);
		advertise_default(adv_admin, sizeof adv_admin, o->admin_advertise,
				  o->admin_listen, o->peer_listen, o->admin_port);
		pc.client_addr = adv_client;
		pc.client_tls_addr = adv_tls;
		pc.admin_addr = adv_admin;
		pc.data_dir = o->data;
		static uint64_t founders[PEER_NODE_MAX_PEERS + 1];
		int nf = parse_founders(o->founders, founders);
		PARLEY_ASSERT(nf >= 0); /* config_check passed */
		if (nf) {
			pc.founders = founders;
			pc.nfounders = (uint32_t)nf;
		}
		if (*o->peer_tls_ca) {
			pc.tls_ca = o->peer_tls_ca;
			pc.tls_cert = o->peer_tls_cert;
			pc.tls_key = o->peer_tls_key;
		}
		/* TEST-ONLY (PARLEY_TEST_PEER_FRAMES=<hex>): announce and
		 * accept only these peer frame types (peer.h contract item 9),
		 * as a node built before the newer frames would: how the
		 * rolling-upgrade test makes an "old" node */
		const char *tf = getenv("PARLEY_TEST_PEER_FRAMES");
		if (tf && *tf) {
			char *end;
			unsigned long f = strtoul(tf, &end, 16);
			if (*end || !f || f > UINT32_MAX) {
				PLOG_E("parleyd", "bad PARLEY_TEST_PEER_FRAMES",
				       "value=\"%s\"", tf);
				return 1;
			}
			pc.frames = (uint32_t)f;
			PLOG_W("parleyd", "testing: an older peer frame set",
			       "frames=%lx", f);
		}
		rc = peer_node_new(&pc, &pn);
		if (rc) {
			PLOG_E("parleyd", "cannot open the peer port", "host=%s "
			       "port=%u err=%s", o->peer_listen, o->peer_port,
			       parley_errname(rc));
			return 1;
		}
		eo.cluster = peer_node_cluster(pn);
	}
	/* admin first: /livez answers during recovery, /readyz says 503 */
	struct admin *adm = NULL;
	struct admin_opts ao = {.host = o->admin_listen,
				.port = (uint16_t)o->admin_port,
				.max_conns = o->admin_max_connections,
				.request_timeout_ms = o->admin_request_timeout_ms,
				.compact = o->admin_compact != 0,
				.digest = o->admin_digest != 0};
	rc = admin_start(s, &ao, &adm);
	if (rc) {
		PLOG_E("parleyd", "cannot open the admin port", "host=%s port=%u "
		       "err=%s", o->admin_listen, o->admin_port, parley_errname(rc));
		peer_node_stop(pn);
		return 1;
	}
	rc = pe_open(&eo, &e);
	if (rc) {
		PLOG_E("parleyd", "cannot open the data directory", "dir=%s err=%s",
		       o->data, parley_errname(rc));
		admin_stop(adm);
		peer_node_stop(pn);
		return 1;
	}
	if (pn) { /* the leader side serves even with forward 0 */
		struct proxy_config pxc = {.forward = o->forward != 0,
					   .max_inflight = o->forward_max_inflight,
					   .timeout_ms = o->forward_timeout_ms};
		rc = proxy_node_install(s, pn, &pxc);
		PARLEY_ASSERT(rc == 0); /* a few KiB at start */
	}
	if (pn && (rc = peer_node_start(pn, e)) != 0) {
		PLOG_E("parleyd", "cannot start replication", "err=%s",
		       parley_errname(rc));
		admin_stop(adm);
		peer_node_halt(pn);
		pe_close(e);
		peer_node_stop(pn);
		return 1;
	}
	s->peer = pn; /* before the engine: admin reads peer only with it */
	s->engine = e;
	if (pn)
		conn_leader_hint_install(leader_hint, s);
	static struct admission hs_adm;
	struct ratelimit_config rlc;
	rl_config(o, &rlc);
	rc = ratelimit_open(&rlc, &s->rl);
	PARLEY_ASSERT(rc == 0 || rc == -PARLEY_ENOMEM); /* config_check passed */
	if (rc) {
		PLOG_E("parleyd", "cannot allocate the rate limit table",
		       "rate_users_max=%u", o->rate_users_max);
		admin_stop(adm);
		s->engine = NULL;
		peer_node_halt(pn);
		pe_close(e);
		peer_node_stop(pn);
		return 1;
	}
	admission_init(&hs_adm, o->max_handshakes, o->handshake_retry_ms);
	s->adm = &hs_adm;
	rc = chat_open(e, &clock, &s->chat);
	if (!rc) {
		chat_set_group_max(s->chat, o->group_max_members);
		chat_set_group_read_min(s->chat, o->group_read_fanout_min);
		s->live = live_new();
		PARLEY_ASSERT(s->live); /* a few KiB */
		chat_set_live(s->chat, live_post, s->live);
		if (s->lim.early_delivery)
			chat_set_early(s->chat, live_post_early, s->live);
		/* spread placement: writes to partitions led elsewhere are
		 * forwarded to their leader (follow0 keeps the redirect: one
		 * node leads everything once leadership settles) */
		if (pn && (!strcmp(o->leader_placement, "spread") ||
			   o->replication_factor)) {
			chat_set_forward(s->chat, peer_node_forward,
					 peer_node_forward_delete, pn);
			/* with placement (docs/CLUSTER.md §3.7) writes to a
			 * partition this node does not hold go to its leader
			 * from the leader table; held ones as before */
			chat_set_router(s->chat, peer_node_route, pn);
			route_set_resolver(peer_node_route, pn);
		}
		/* large groups' live EVENTs reach members on every node */
		if (pn && s->proxy)
			proxy_node_live(s->chat, true);
	}
	if (rc) {
		PLOG_E("parleyd", "fan-out recovery failed", "err=%s",
		       parley_errname(rc));
		admin_stop(adm);
		ratelimit_close(s->rl);
		s->rl = NULL;
		s->engine = NULL;
		peer_node_halt(pn);
		pe_close(e);
		peer_node_stop(pn);
		return 1;
	}
	chat_scrub_attach(s->chat, scrub);
	rc = chat_retention_start(s->chat, o->retention_max_age_ms,
				  o->retention_max_count, o->retention_sweep_ms,
				  &s->ret);
	PARLEY_ASSERT(rc == 0); /* a thread and a few bytes */
	struct presence_config prc;
	pres_config(o, &prc);
	rc = presence_open(&prc, s, &s->pres);
	if (rc) {
		PLOG_E("parleyd", "cannot start presence", "err=%s",
		       parley_errname(rc));
		admin_stop(adm);
		chat_retention_stop(s->ret);
		s->ret = NULL;
		if (pn && s->proxy)
			proxy_node_live(s->chat, false);
		chat_close(s->chat);
		s->chat = NULL;
		ratelimit_close(s->rl);
		s->rl = NULL;
		s->engine = NULL;
		pe_close(e);
		return 1;
	}
	/* presence and typing reach users connected to other nodes */
	if (pn && s->proxy)
		proxy_node_presence(s->pres, true);
	/* One loop per online CPU. One loop on 2 CPUs (1 loop + 1 shard)
	 * spent 10-25 % less CPU per SEND but gave fewer SENDs/s in 5 of 8
	 * pairs on a loaded machine: docs/SERVER.md, "Threads". */
	unsigned n = o->loops;
	if (n == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		n = cpus > 0 ? (unsigned)cpus : 1;
	}
	s->lim.max_conns = PARLEY_MAX(1u, o->max_connections / n);
	struct loop_thread *lt = calloc(n, sizeof *lt);
	s->loops = calloc(n, sizeof *s->loops);
	bool oom = !lt || !s->loops; /* start-up: the start fails (exit 1) */
	if (oom)
		PLOG_E("parleyd", "cannot start event loops: out of memory",
		       "loops=%u", n);
	struct loop_listen ls = {.host = o->listen, .tcp_port = (uint16_t)o->port,
				 .tls_port = s->tls ? (uint16_t)o->tls_port : 0};
	unsigned started = 0;
	for (unsigned i = 0; !oom && i < n; i++) {
		rc = loop_create(s, i, &ls, &lt[i].lp);
		if (rc) {
			if (rc == -EADDRINUSE)
				PLOG_E("parleyd", "port already in use: another "
				       "process listens on it", "host=%s port=%u "
				       "tls_port=%u", o->listen, o->port,
				       ls.tls_port);
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
	if (!oom && started == n) {
		rc = 0;
		if (s->proxy) /* requests other nodes forward run on the loops */
			proxy_set_serving(s->proxy, true);
		admin_set_ready(adm, 1);
		PLOG_I("parleyd", "serving", "listen=%s port=%u tls_port=%u "
		       "admin_listen=%s admin_port=%u loops=%u data=%s", o->listen,
		       o->port, ls.tls_port, o->admin_listen, o->admin_port, n,
		       o->data);
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
	if (s->proxy)
		proxy_set_serving(s->proxy, false);
	admin_set_ready(adm, 0);
	for (unsigned i = 0; i < started; i++)
		loop_stop(lt[i].lp);
	for (unsigned i = 0; i < started; i++)
		pthread_join(lt[i].thr, NULL);
	admin_stop(adm);
	/* after the loops (every connection closed: last_seen written) and
	 * /metrics are gone, before the engine closes */
	if (pn && s->proxy)
		proxy_node_presence(s->pres, false);
	presence_close(s->pres);
	s->pres = NULL;
	ratelimit_close(s->rl); /* after the loops and /metrics are gone */
	s->rl = NULL;
	chat_retention_stop(s->ret); /* before the service it calls */
	s->ret = NULL;
	if (pn && s->proxy) /* no LIVE frame posts through it any more */
		proxy_node_live(s->chat, false);
	chat_close(s->chat);
	s->chat = NULL;
	live_free(s->live); /* after the fan-out thread (chat_close) */
	s->live = NULL;
	conn_leader_hint_install(NULL, NULL);
	route_set_resolver(NULL, NULL);
	route_set_remote(NULL, NULL);
	s->engine = NULL;
	peer_node_halt(pn); /* it calls into the engine */
	pe_close(e);
	chat_scrub_free(scrub); /* after the engine: compaction reads it */
	peer_node_stop(pn); /* the engine may send until closed */
	for (unsigned i = 0; i < started; i++)
		loop_free(lt[i].lp);
	proxy_free(s->proxy); /* after the node thread and the loops */
	s->proxy = NULL;
	tail_relay_free(s->tail);
	s->tail = NULL;
	free(lt);
	free(s->loops);
	PLOG_I("parleyd", "stopped", "status=%d", rc ? 1 : 0);
	return rc ? 1 : 0;
}

/* glibc malloc: a server whose memtables grow by a few hundred bytes per
 * request and shrink in bulk when a flush frees them. By default a
 * thread arena is trimmed (madvise, with a TLB shootdown) as soon as 128
 * KiB at its top are free, and the next requests fault the same pages in
 * again. A 64 MiB trim threshold keeps up to that much freed memory at
 * the top of each arena for the next requests. Measured in
 * bench/RESULTS.md (2026-12-05, server hot path): madvise 0.04 -> 0 and
 * page faults 0.48 -> 0.25 per SEND, and the same peak resident memory
 * in test_memory_budget. The mmap threshold stays at its 128 KiB start
 * (setting the trim threshold fixes it): raising it, or the top pad, made
 * large calloc'd tables resident at start (+8-13 MiB). Memory the budget
 * counts (membudget.h) is counted by the components, not read from the
 * process's resident size. */
static void malloc_tune(void)
{
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

int main(int argc, char **argv)
{
	malloc_tune();
	struct opts o;
	int action;
	const char *mint_sub = NULL;
	int rc = config_load(&o, argc, argv, &action, &mint_sub);
	if (rc)
		return rc > 0 ? 0 : 2;
	parley_log_set_level(!strcmp(o.log_level, "debug")  ? PLOG_DEBUG
			     : !strcmp(o.log_level, "warn") ? PLOG_WARN
			     : !strcmp(o.log_level, "error") ? PLOG_ERROR
							     : PLOG_INFO);
	static struct srv s;
	struct jwt_verifier *jv = NULL;
	SSL_CTX *tls = NULL;
	if (action == ACT_MINT) {
		/* development helper: same secret/iss/aud as the server */
		char key[4096];
		size_t kl = 0;
		if (*o.jwt_secret_file) {
			if (read_file(o.jwt_secret_file, key, sizeof key, &kl)) {
				fprintf(stderr, "parleyd: cannot read %s\n",
					o.jwt_secret_file);
				return 2;
			}
			while (kl && (key[kl - 1] == '\n' || key[kl - 1] == '\r'))
				kl--;
		} else {
			kl = strlen("parley-dev-secret");
			memcpy(key, "parley-dev-secret", kl);
		}
		char tok[4096];
		int n = jwt_mint_hs256(key, kl, mint_sub,
				       *o.jwt_issuer ? o.jwt_issuer : NULL,
				       *o.jwt_audience ? o.jwt_audience : NULL,
				       parley_now_ms() / 1000, 24 * 3600, tok,
				       sizeof tok);
		if (n < 0 || !parley_proto_user_id_valid(mint_sub, strlen(mint_sub))) {
			fprintf(stderr, "parleyd: cannot mint a token for \"%s\"\n",
				mint_sub);
			return 2;
		}
		printf("%s\n", tok);
		return 0;
	}
	int bad = config_check(&o, &jv, &tls);
	if (action == ACT_CHECK) {
		if (!bad)
			config_print(&o);
		printf("%s\n", bad ? "config: INVALID" : "config: ok");
		jwt_verifier_free(jv);
		SSL_CTX_free(tls);
		return bad ? 2 : 0;
	}
	if (bad) {
		jwt_verifier_free(jv);
		SSL_CTX_free(tls);
		return 2;
	}
	if (o.tls_port && !tls)
		PLOG_W("parleyd", "no TLS listener: tls_cert/tls_key not set", "tls_port=%u", o.tls_port);
	if (o.dev && !*o.jwt_secret_file)
		PLOG_W("parleyd", "development mode: tokens signed with the "
		       "public dev secret are accepted", "jwt_alg=%s", o.jwt_alg);
	if (o.dev && o.dev_allow_public && addr_is_loopback(o.listen) != 1)
		PLOG_W("parleyd", "development mode on a non-loopback address "
		       "(--dev-allow-public)", "listen=%s", o.listen);
	s.auth = srv_auth;
	s.auth_arg = jv;
	s.tls = tls;
	snprintf(s.server_id, sizeof s.server_id, "%s", o.server_id);
	s.lim = (struct srv_limits){
		.max_frame = o.max_frame,
		.preauth_max_frame = o.preauth_max_frame,
		.frame_timeout_ms = o.frame_timeout_ms,
		.max_body = o.max_body,
		.max_inflight = o.max_inflight,
		.event_window = o.event_window,
		.idle_timeout_ms = o.idle_timeout_ms,
		.handshake_timeout_ms = o.handshake_timeout_ms,
		.slow_consumer_ms = o.slow_consumer_ms,
		.max_outbound = o.outbound_queue_bytes,
		.max_conns = o.max_connections,
		.drain_timeout_ms = o.drain_timeout_ms,
		.edit_window_ms = o.edit_window_ms,
		.delete_window_ms = o.delete_window_ms,
		.forward_timeout_ms = o.forward_timeout_ms,
		.early_delivery = o.early_delivery != 0,
	};
	membudget_init(&s.mem, o.memory_budget_bytes,
		       memtable_total_of(o.memory_budget_bytes),
		       memtable_part_of(o.memory_budget_bytes));
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
	rc = run(&o, &s);
	jwt_verifier_free(jv);
	if (tls)
		SSL_CTX_free(tls);
	return rc;
}
