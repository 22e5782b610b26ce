/*
 * bench.h — private declarations shared by parley-bench's modes.
 *
 * parley-bench is a load generator and capacity-planning harness. Each mode
 * (bench_disk.c, bench_engine.c, bench_redis.c, bench_server.c,
 * bench_nats.c, bench_compaction.c, ...) fills a result struct or prints its rows;
 * parley_bench.c parses arguments, runs modes and prints tables. Every run
 * is bounded in time: a mode runs for cfg->seconds plus bounded setup and
 * drain, and a process-wide watchdog (bench_watchdog_arm) kills child
 * servers and exits if anything hangs.
 *
 * Threads: modes are called from the main thread only, one at a time.
 */
#ifndef PARLEY_BENCH_H
#define PARLEY_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench_hist.h"

#define BENCH_MAX_LIST 16
#define BENCH_MAX_PRODUCERS 4096
#define BENCH_MAX_SECONDS 120.0
#define BENCH_MAX_REPEAT 5
#define BENCH_DRAIN_SECONDS 10.0  /* max wait for in-flight work at the end */

struct bench_cfg {
	const char *dir;          /* where temp files / data dirs go */
	double seconds;           /* measured time per run point */
	double warmup;            /* seconds before measuring */
	uint32_t producers[BENCH_MAX_LIST];
	unsigned n_producers;
	uint32_t payloads[BENCH_MAX_LIST];
	unsigned n_payloads;
	double rates[BENCH_MAX_LIST]; /* --rate list: open loop at each (/s) */
	unsigned n_rates;
	double half_frac;         /* fraction of saturation for open loop (0.5) */
	bool no_half;             /* skip the half-load open-loop run */
	uint32_t shards;          /* engine shards (0 = engine default) */
	uint32_t partitions;      /* engine partitions (0 = engine default) */
	const char *redis_server; /* path of redis-server */
	uint64_t seed;
	bool idem;                /* engine: unique producer id per append */
	uint32_t hist_readers;    /* engine: threads reading flushed history
				     pages during every run point */
	unsigned repeat;          /* compare: passes */
	bool verbose;
	/* server modes (bench_server.c) */
	uint32_t count;           /* idle-conns: connections */
	const char *parleyd;      /* parleyd binary to start, or NULL */
	const char *parleyd_args; /* argument template: {port} {data} {dir} */
	const char *connect;      /* HOST:PORT of a running server instead */
	int server_pid;           /* its pid (for VmRSS) */
	const char *jwt_secret;   /* HS256 key the server accepts */
	const char *jwt_iss;
	const char *jwt_aud;
	const char *nats_server;  /* delivery: nats-server for the reference, or NULL */
	bool tls;                 /* idle-conns: connect over TLS (throw-away cert) */
	bool no_early;            /* delivery: the receiver does not ask for early
				     EVENTs (PARLEY_FEAT_EARLY) */
	/* issue 14: workload, history, report, plan */
	const char *profile;      /* workload/plan: profile file */
	const char *json;         /* --json FILE: machine-readable result */
	uint32_t users;           /* workload: simulated users (0 = from profile, <= 64) */
	uint32_t threads;         /* workload: driver threads (default 4) */
	uint32_t convs;           /* history: conversations */
	uint32_t msgs;            /* history: messages per conversation */
	bool no_redis;            /* history: skip the Redis peer */
	bool no_drop_caches;      /* history: do not drop the page cache */
	bool storm;               /* workload: reconnect storm mid-window */
	/* compaction impact (bench_compaction.c) */
	int admin_port;           /* --admin-port: with --connect, parleyd's admin port */
	double compact_gap_s;     /* pause between POST /admin/compact calls */
	/* cluster mode (bench_cluster.c) */
	uint32_t kills;           /* leader kills for the failover time (0 = none) */
	bool no_single;           /* skip the single-node reference */
	bool spread;              /* cluster: also a 3-node cluster with
				     --leader-placement spread, rebalanced */
};

/* ---- results -------------------------------------------------------------- */

struct disk_result {
	struct bench_hist lat4k;  /* 4 KiB pwrite + fdatasync, pre-zeroed file */
	double syncs_per_s;       /* 4 KiB write+fdatasync rounds per second */
	double bw_1m_mbs;         /* 1 MiB pwrite + fdatasync, MB/s (1e6) */
	double bw_64k_mbs;        /* 64 KiB pwrite + fdatasync, MB/s */
	struct bench_hist lat1m;
	struct bench_hist lat64k;
	bool ok;
};

/* One run point (closed or open loop) of the engine or redis. */
struct load_result {
	const char *system;       /* "parley" / "redis" */
	uint32_t producers;
	uint32_t payload;
	bool open_loop;
	double target_rate;       /* open loop: intended appends/s */
	double seconds;           /* measured wall time */
	uint64_t acks;            /* successful acks inside the window */
	uint64_t errors;          /* failed appends (whole run) */
	uint64_t not_sent;        /* open loop: schedule slots never issued */
	double appends_per_s;
	double mb_per_s;          /* payload bytes / s (1e6) */
	struct bench_hist lat;    /* ack latency (open loop: from intended time) */
	struct bench_hist lag;    /* open loop: actual - intended send time (the
	                             harness's own share of the latency) */
	/* engine only (from pe_stats when available) */
	bool have_stats;
	double syncs_per_s;       /* WAL write+fdatasync rounds per second */
	double wal_mb_per_s;      /* WAL bytes per second (1e6) */
	double entries_per_sync;
	double mean_sync_us;      /* engine's mean write+fdatasync wait */
	bool ok;
	char note[160];
};

/* ---- modes ------------------------------------------------------------------ */

int bench_disk_run(const struct bench_cfg *cfg, struct disk_result *out);
/* commit-floor mode (bench_commit.c): one 4 KiB durable commit by each
 * method (sync, RWF_DSYNC, O_DIRECT, io_uring), interleaved rounds. */
int bench_commit_floor(const struct bench_cfg *cfg);
void bench_disk_print(const struct disk_result *r);

/* rate <= 0: closed loop, `producers` concurrent one-outstanding appends.
 * rate > 0: open loop at `rate` appends/s spread over `producers` streams. */
int bench_engine_run(const struct bench_cfg *cfg, uint32_t producers,
		     uint32_t payload, double rate, struct load_result *out);
int bench_redis_run(const struct bench_cfg *cfg, uint32_t producers,
		    uint32_t payload, double rate, struct load_result *out);
/* A redis-server started here (127.0.0.1, free port, temp dir, appendonly
 * yes + appendfsync always, checked with CONFIG GET). */
struct bench_redis_srv {
	pid_t pid;
	int port;
	char *tmp;
};
int bench_redis_start(const struct bench_cfg *cfg, struct bench_redis_srv *s);
void bench_redis_stop(struct bench_redis_srv *s);
/* Version string of the last redis-server started ("unknown" before). */
const char *bench_redis_version(void);

/* Server modes (bench_server.c): 0 ok, non-zero failure. `floor` (may be
 * NULL or !ok) is this run's disk floor, for the ratio table. */
int bench_idle_conns(const struct bench_cfg *cfg);
int bench_delivery(const struct bench_cfg *cfg, const struct disk_result *floor);
/* groups: one group of cfg->count members all online, one sender open loop
 * at each cfg->rates (bench_groups.c). 0 ok. */
int bench_groups(const struct bench_cfg *cfg);

/* Closed loop over TCP: `producers` connections to a fresh parleyd, each
 * with one SEND outstanding in its own 1:1 conversation; SEND_ACKs/s and
 * their latency (the server-level counterpart of bench_redis_run). tls:
 * the connections go to the server's TLS port (the template must serve
 * TLS on {tlsport}, as server-compare --tls's default does). */
int bench_server_appends(const struct bench_cfg *cfg, uint32_t producers, uint32_t payload,
			 bool tls, struct load_result *out);
/* The same closed loop against a server already running at host:port (a
 * cluster node: bench_cluster.c); starts and stops nothing. */
int bench_appends_at(const struct bench_cfg *cfg, const char *host, int port, uint32_t producers,
		     uint32_t payload, bool tls, struct load_result *out);
/* The same with connection i going to ports[i] (NULL: all to port), for a
 * cluster whose partitions are led by different nodes (bench_cluster.c
 * --spread: each connection to the leader of its conversation's
 * partition). Connection i's user is "bench-ap-<i>", its peer
 * "bench-ap-peer-<i>". */
int bench_appends_routed(const struct bench_cfg *cfg, const char *host, int port,
			 const int *ports, uint32_t producers, uint32_t payload, bool tls,
			 struct load_result *out);

/* A parleyd under test (bench_server.c): started here (--parleyd, on
 * 127.0.0.1, a free port, a temp dir whose data/ is the data dir) or an
 * existing one (--connect, --server-pid). */
struct bench_srv {
	pid_t pid;          /* parleyd we started, or -1 */
	pid_t watch_pid;    /* whose VmRSS we read */
	char host[64];
	int port;           /* plain TCP ({port}) */
	int tls_port;       /* {tlsport}; with --connect the same as port */
	int admin_port;     /* {adminport}; with --connect --admin-port */
	char *tmp;          /* our temp dir (NULL with --connect) */
};
int bench_srv_start(const struct bench_cfg *cfg, struct bench_srv *s);
/* SIGKILL (if started here) and remove the temp dir. */
void bench_srv_stop(struct bench_srv *s);
/* Graceful stop (SIGTERM, wait); keeps the temp dir. 0 if it exited 0. */
int bench_srv_term(struct bench_srv *s);
/* Starts parleyd again on the same data dir (a new port). */
int bench_srv_respawn(const struct bench_cfg *cfg, struct bench_srv *s);
/* VmRSS of pid in KiB, or -errno. */
long bench_vmrss_kib(pid_t pid);
/* A development HS256 token for `user` (cfg's secret and claims). */
int bench_mint(const struct bench_cfg *cfg, const char *user, char *tok, size_t cap);
struct wire_conn;
struct parley_msg;
struct parley_hello_ok;
struct ssl_ctx_st;
/* A server mode's session for `user` (bench_server.c): connects c (its
 * rbuf already allocated) to host:port, starts TLS when tctx is not NULL,
 * and says HELLO + AUTH as `device` with a token minted for `user`;
 * *hello (may be NULL) gets HELLO_OK. Each wait is bounded by timeout_ms.
 * Returns 0 or negative. */
int bench_session_open(const struct bench_cfg *cfg, struct wire_conn *c, const char *host,
		       int port, struct ssl_ctx_st *tctx, const char *user,
		       const char *device, int timeout_ms, struct parley_hello_ok *hello);
/* Opens c's 1:1 conversation with `peer` (CONV_OPEN, answered CONV) and
 * copies its id to conv[0..cap); m is scratch. Returns 0, -PARLEY_EPROTO
 * for another answer (errtxt says which), or negative. */
int bench_conv_open(struct wire_conn *c, struct parley_msg *m, const char *peer,
		    int timeout_ms, char *conv, size_t cap, char *errtxt, size_t errcap);

/* issue 14 modes: mixed workload from a profile (bench_workload.c),
 * history reads vs Redis XREVRANGE (bench_history.c), report charts
 * (bench_report.c) and the capacity plan (bench_planmode.c). 0 or
 * negative. */
int bench_workload(const struct bench_cfg *cfg);
int bench_history(const struct bench_cfg *cfg);
/* Compaction impact (bench_compaction.c): open-loop SENDs at a fixed rate,
 * ack latency idle vs while POST /admin/compact runs repeatedly. */
int bench_compaction(const struct bench_cfg *cfg);
int bench_report(int nfiles, char **files, const char *outdir);
int bench_planmode(const struct bench_cfg *cfg, int nfiles, char **files);
/* Cluster mode (bench_cluster.c): 3-node replicated parleyd vs one node vs
 * a 3-replica NATS JetStream cluster (bench_jetstream.c), then the
 * failover time over cfg->kills leader kills. 0 ok. */
int bench_cluster(const struct bench_cfg *cfg);
/* cluster-forward: SENDs to the leader vs to a follower that forwards
 * them (docs/CLUSTER.md §3.3), alternating in one run. */
int bench_cluster_forward(const struct bench_cfg *cfg);
/* presence-relay (bench_presence.c): a 3-node cluster idle, then with
 * cfg->count users online, then with cfg->rates[0] connection
 * replacements/s: peer bytes/s, PRES payloads/s, CPU, registry entries. */
int bench_presence_relay(const struct bench_cfg *cfg);

/* Headline latencies of one delivery run (µs), for the ratio table. */
struct deliv_stat {
	bool ok;
	double p50_us, p99_us, p999_us;
};
/* What the delivery mode's runs (parleyd in bench_server.c, NATS in
 * bench_nats.c) share (bench_util.c): the number of the k send slots
 * whose intended time fell in [win_start, win_end); the opening of a
 * run's --json row (kind "delivery", system, version unless NULL, rate,
 * payload, sent/delivered in the window, not delivered, deliver_latency:
 * the caller adds its own fields and bj_end); and the stat of its
 * delivery latencies h. */
struct bench_json;
uint64_t bench_in_window(const uint64_t *intended, uint64_t k, uint64_t win_start,
			 uint64_t win_end);
void bench_deliv_json_begin(struct bench_json *js, const char *system, const char *version,
			    double rate, uint32_t payload, uint64_t in_window,
			    const struct bench_hist *h, uint64_t not_delivered);
void bench_deliv_stat(struct deliv_stat *st, bool ok, const struct bench_hist *h);

/* NATS core pub/sub reference for the delivery mode (bench_nats.c). */
struct nats_srv;
/* Starts nats-server (cfg->nats_server) on 127.0.0.1; *out is set even on
 * failure and must be passed to bench_nats_stop. 0 or negative. */
int bench_nats_start(const struct bench_cfg *cfg, struct nats_srv **out);
void bench_nats_stop(struct nats_srv *s);
const char *bench_nats_version(const struct nats_srv *s);
/* One open-loop run at `rate` msg/s, prints one delivery-table row. */
int bench_nats_delivery(const struct bench_cfg *cfg, const struct nats_srv *s,
			double rate, uint32_t payload, struct deliv_stat *st);

/* NATS JetStream, 3 servers, a 3-replica file stream per run point
 * (bench_jetstream.c). start: *out is set even on failure and must be
 * passed to bench_js_stop. publish: closed loop, `producers` connections
 * with one publish-with-ack outstanding each, on a new stream B<point>. */
struct js_cluster;
int bench_js_start(const struct bench_cfg *cfg, struct js_cluster **out);
void bench_js_stop(struct js_cluster *c);
const char *bench_js_version(const struct js_cluster *c);
/* CPU seconds (user + system) its servers have used so far. */
double bench_js_cpu_s(const struct js_cluster *c);
/* CPU seconds (user + system) process pid has used so far (/proc/PID/stat),
 * or NAN (bench_cluster.c). */
double bench_cpu_s(pid_t pid);
int bench_js_publish(const struct bench_cfg *cfg, struct js_cluster *c, unsigned point,
		     uint32_t producers, uint32_t payload, struct load_result *out);

/* Starts a load_result: zeroed, the system's name, producers and payload,
 * open loop at `rate` appends/s (0: closed loop), empty histograms. Every
 * load mode's run begins with it, so a result refused early is still
 * printable (bench_util.c). */
void bench_load_begin(struct load_result *out, const char *system,
		      uint32_t producers, uint32_t payload, double rate);
void bench_load_print_header(void);
void bench_load_print_row(const struct load_result *r);

/* --json for disk, engine, redis, compare, server-compare, delivery
 * (bench_sink.c): open writes the header and starts the "rows" array;
 * bench_sink() is NULL without --json; close ends the document. */
struct bench_json;
int bench_sink_open(const struct bench_cfg *cfg, const char *mode);
struct bench_json *bench_sink(void);
int bench_sink_close(void);

/* ---- helpers (bench_util.c) ---------------------------------------------------- */

/* The longest one wait of a load driver's poll loop lasts (1 ms): the
 * loop comes round at least this often to send, check its deadlines and
 * drain. */
#define BENCH_POLL_MAX_NS 1000000u
struct pollfd;
/* The wait of a load driver's poll loop: until input on pf[0..n), or the
 * next intended send at next_ns (CLOCK_MONOTONIC, as parley_mono_ns; 0:
 * nothing to send), or BENCH_POLL_MAX_NS, whichever comes first. Returns
 * how many of pf are ready, 0 when none is (time is up, or a signal: the
 * caller's loop just comes round again), or -errno. */
int bench_poll(struct pollfd *pf, unsigned n, uint64_t next_ns);

double bench_now_s(void);
void bench_sleep_ns(uint64_t ns);
/* Sleep until CLOCK_MONOTONIC reaches `deadline_ns` (absolute). */
void bench_sleep_until_ns(uint64_t deadline_ns);
/* mkdtemp under cfg->dir with the given prefix; returns malloc'd path or NULL. */
char *bench_mkdtemp(const char *dir, const char *prefix);
/* rm -rf path (refuses paths that are not under a parley-bench temp dir). */
int bench_rmtree(const char *path);
/* A server's temp dir gone: bench_rmtree, free, *tmp NULL (nothing when
 * *tmp is NULL). */
void bench_tmp_remove(char **tmp);
/* A free TCP port on 127.0.0.1 (bind to 0, read, close), or -errno. */
int bench_free_port(void);
/* Fill `buf` with printable, chat-like bytes from a seeded PRNG. */
void bench_fill_payload(uint8_t *buf, size_t len, uint64_t seed);

/* Loads up to 4 MiB of Debian fortunes text (dir NULL = the default
 * /usr/share/games/fortunes) for message bodies: 0, or -PARLEY_ENOTFOUND
 * (bodies then come from bench_fill_payload). */
int bench_text_load(const char *dir);
/* len bytes of that text from a seeded offset (or the word-list filler). */
void bench_text_body(uint8_t *buf, size_t len, uint64_t seed);

/* Child processes that the watchdog and atexit handler kill. */
void bench_child_register(pid_t pid);
/* Starts argv[0] (a server under test) as a registered child that dies with
 * this process (PR_SET_PDEATHSIG). log == NULL: stdin and stdout on
 * /dev/null, stderr inherited; else stdout and stderr go to the file log.
 * Returns the pid or -errno. */
pid_t bench_spawn(char *const argv[], const char *log);
void bench_child_forget(pid_t pid);
/* One HTTP/1.0 request (method, path, empty body) to 127.0.0.1:port,
 * each socket wait bounded by timeout_ms; the whole response (headers
 * included, NUL-terminated) into buf[0..cap). Bytes read, or negative. */
long bench_http_req(const char *method, int port, const char *path, char *buf,
		    size_t cap, int timeout_ms);
/* A server child stopped: SIGKILL, reaped, forgotten; *pid becomes -1
 * (nothing when *pid <= 0). */
void bench_child_kill(pid_t *pid);
/* The start-up waits' look at their server each round (never blocks):
 * true when the child has exited, then reaped and forgotten, *pid -1. */
bool bench_child_exited(pid_t *pid);
void bench_children_kill(void);
/* Arms SIGALRM to fire after `seconds`: kills registered children, prints
 * an error and exits 2. 0 disarms. */
void bench_watchdog_arm(double seconds);

#define BENCH_MB 1e6

#endif /* PARLEY_BENCH_H */
