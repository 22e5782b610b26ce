/*
 * parley_bench.c — `parley-bench`: load generator and capacity-planning
 * harness. Argument parsing, mode dispatch and the markdown report.
 *
 * Modes (see usage() for flags):
 *   disk      the disk's floor: 4 KiB write+fdatasync latency, sequential
 *             write+fdatasync bandwidth (bench_disk.c)
 *   commit-floor  one 4 KiB durable commit by each method (write+fdatasync,
 *             RWF_DSYNC, O_DIRECT, through io_uring or not) (bench_commit.c)
 *   engine    durable appends through the engine on io_uring: closed-loop
 *             sweep over producers to find saturation, then open loop at
 *             half of it (or open loop at --rate) (bench_engine.c)
 *   redis     the same load against redis-server with appendfsync always
 *             (bench_redis.c)
 *   compare   disk + engine + redis back to back with the same settings, and
 *             a table of ratios against the goals in docs/DESIGN.md
 *   server-compare  durable SENDs/s through a real parleyd over TCP against
 *             Redis XADD with the same connections (bench_server.c)
 *             (with --tls: plain TCP and TLS side by side)
 *   compaction  open-loop SENDs through parleyd, ack latency idle vs while
 *             POST /admin/compact runs repeatedly (bench_compaction.c)
 *   cluster   a 3-node replicated parleyd cluster vs one node vs a 3-replica
 *             NATS JetStream cluster, and the failover time over repeated
 *             leader kills (bench_cluster.c, bench_jetstream.c)
 *   idle-conns, delivery  a real parleyd: memory per idle authenticated
 *             connection (plain or --tls), send -> deliver latency open loop
 *             with the disk floor and a NATS core pub/sub reference
 *             (bench_server.c, bench_nats.c)
 *
 * Honesty rules (shared/TESTING.md): absolute numbers on this shared machine
 * move between runs, so each report carries ratios against a floor or a
 * peer measured in the SAME run; open-loop latency is measured from the
 * intended send time; each table says what each system guaranteed.
 *
 * Bounded: every run point arms a watchdog (bench_watchdog_arm) with its
 * budget; on expiry child servers are killed and the process exits 2.
 * Exit status: 0 ok, 1 a run failed, 2 watchdog, 64 usage error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_json.h"
#include "bench_spread.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "parley_common.h"
#include "parley_engine.h"

#define EXIT_USAGE 64
#define RUN_SLACK_S 30.0 /* setup (open, pre-zero, server start) + close */

static void usage(FILE *f)
{
	fprintf(f,
"usage: parley-bench MODE [options]\n"
"\n"
"Load generator and capacity-planning harness for parley. Every result is\n"
"reported next to a floor or peer measured in the same run (this machine is\n"
"shared and noisy: compare ratios, not absolute numbers across runs).\n"
"\n"
"modes:\n"
"  disk       the disk's floor: 4 KiB write+fdatasync latency p50/p99/p99.9/max\n"
"             (sequential overwrite in place of a pre-zeroed file) and\n"
"             sequential write bandwidth with an fdatasync after every 64 KiB\n"
"             and 1 MiB write, in MB/s.\n"
"  commit-floor  one 4 KiB durable commit at a time by each method: pwrite +\n"
"             fdatasync, RWF_DSYNC, O_DIRECT, each also through io_uring (the\n"
"             WAL's commit modes); --repeat N interleaved rounds (default 5);\n"
"             p50/p99 and the spread of the rounds' p50s. --dir on the disk.\n"
"  engine     durable appends through the storage engine (io_uring backend, a\n"
"             fresh temp data dir per run point). Measures the disk floor first,\n"
"             then for each payload: a closed-loop sweep over --producers (each\n"
"             producer: own stream, one append outstanding, next one issued from\n"
"             the ack callback) -> appends/s, MB/s, ack latency, WAL syncs/s;\n"
"             then an open-loop run at --half x the best closed-loop throughput\n"
"             (latency from the intended send time). With --rate R: open loop\n"
"             at R appends/s only.\n"
"  redis      the same load against redis-server 7 (XADD, one connection per\n"
"             producer, --appendonly yes --appendfsync always --save \"\"), started\n"
"             on 127.0.0.1 with a temp dir and killed after each run point.\n"
"  compare    disk + engine + redis back to back with the same settings; prints\n"
"             markdown tables with the ratios against the goals:\n"
"             parley/redis durable appends/s (goal >= 3x), saturation MB/s vs\n"
"             sequential fdatasync bandwidth (goal >= 0.8), half-load ack p99\n"
"             minus 4 KiB fdatasync p99 (goal <= 100 us).\n"
"  server-compare  durable SENDs/s of parleyd over TCP against Redis XADD (same\n"
"             settings as redis mode): for each --producers N, N connections with\n"
"             one SEND outstanding each (own 1:1 conversation), a fresh parleyd per\n"
"             point; parleyd and redis alternate; prints the ratio per N.\n"
"             With --tls, every point also runs parleyd over TLS (a fresh\n"
"             parleyd serving both ports, throw-away certificate) and a table\n"
"             gives TLS ÷ plain SENDs/s (goal >= 0.7 at 50 connections).\n"
"  compaction  compaction's cost to concurrent SENDs: --producers N connections\n"
"             (first value, default 16) SEND open loop at --rate R in total\n"
"             (first value, default 2000/s), --payload (first, default 100);\n"
"             after --warmup an idle phase of --seconds, then a phase of\n"
"             --seconds in which POST /admin/compact (flush + compact every\n"
"             partition) is called back to back (--compact-gap S between calls,\n"
"             default 0.1); --repeat N: N rounds of idle + compaction phases,\n"
"             interleaved. SEND_ACK p50/p99/p99.9/max per phase kind (by intended\n"
"             send time), compaction ÷ idle ratios (goal p99 <= 1.2x), the\n"
"             calls made and the share of the phase a compaction was running.\n"
"             parleyd is started with --admin-port {adminport} --admin-compact 1;\n"
"             with --connect give --admin-port P of a server with\n"
"             admin_compact = 1. --tls: SENDs over TLS.\n"
"  cluster    replication (issue 12): for each --producers N (default 50,200)\n"
"             and --payload (default 100), closed loop (one SEND outstanding per\n"
"             connection, own 1:1 conversation) against (a) a fresh 3-node parleyd\n"
"             cluster on 127.0.0.1 (static membership: every node a voter of\n"
"             every partition = replication factor 3; connections to the node\n"
"             leading the partitions; ack after a quorum fdatasync'd), (b) one\n"
"             fresh single parleyd with the same settings (--no-single skips it),\n"
"             (c) three nats-server processes as a JetStream cluster with a file\n"
"             stream of 3 replicas (publish with ack; --no-nats skips it); the\n"
"             three alternate per point; a table of 3-node ÷ 1-node and parley ÷\n"
"             JetStream. Then the failover time: a fresh 3-node cluster, 4\n"
"             libparley clients knowing all nodes SEND at --rate in total (first\n"
"             value, default 100/s); --kills K times (default 20, 0 = skip) the\n"
"             leader is SIGKILLed and the time to the first SEND_ACK of a SEND\n"
"             issued after it died is taken, then the node is restarted; p50/p99\n"
"             and a final history check (every ack once, at its seq). Nodes get\n"
"             --parleyd-args (default \"--dev --data {data} --listen\n"
"             127.0.0.1:{port} --tls-port 0 --admin-port {adminport}\" and rate\n"
"             limits off) plus --node-id --cluster-id --peer-port --peers;\n"
"             --seconds defaults to 2 here. About 1.5 minutes with the defaults.\n"
"  cluster-forward  request forwarding (docs/CLUSTER.md 3.3): per --producers N\n"
"             and --payload, a fresh 3-node cluster, then 3 rounds of the same\n"
"             closed-loop SEND load first on the leader, then on a follower\n"
"             that forwards every SEND to it; SENDs/s, p50/p99/p99.9 per round\n"
"             and the follower / leader ratio. Node arguments as cluster.\n"
"  presence-relay  a 3-node cluster: peer bytes/s, PRES payloads/s, CPU\n"
"             and presence entries idle, with --count users online (default\n"
"             10000, one connection each, spread over the nodes) and with\n"
"             --rate connection replacements/s (default 100); windows of\n"
"             --seconds (default 45: two online-set refreshes).\n"
"  idle-conns  opens --count authenticated idle connections to parleyd and\n"
"             reports the server's VmRSS growth per connection (goal <= 2 KiB);\n"
"             client side split over processes of <= 9000 connections.\n"
"  delivery   two devices (sender, receiver) on parleyd: the sender SENDs open\n"
"             loop at each --rate (default 1000,10000 msg/s); latency from the\n"
"             intended send time to the EVENT at the receiver and to SEND_ACK;\n"
"             the client keeps at most HELLO_OK max_inflight SENDs outstanding.\n"
"             Each rate is followed by NATS core pub/sub (nats-server, no disk,\n"
"             no ack) at the same rate and body size, as a reference; the disk\n"
"             floor is measured first (--no-floor skips it). parleyd gets\n"
"             --admin-port {adminport}; each rate's per-stage breakdown (the\n"
"             parley_{send,delivery,engine}_stage_seconds deltas over the run,\n"
"             docs/SERVER.md) is printed after the tables (with --connect: give\n"
"             --admin-port). The receiver asks for early EVENTs (HELLO feature\n"
"             EARLY) unless --no-early; the note column adds the time from a\n"
"             message's SEND_ACK to its first EVENT (deliver after ack: the\n"
"             delivery's own delay, without the sender's queueing). After the\n"
"             ratio table: the highest measured rate whose deliver p99 <= 5 ms.\n"
"  groups     one group of --count members (default 500, at most the server's\n"
"             group_max_members), every member online with one device, one\n"
"             sender open loop at each --rate (messages/s, default 200):\n"
"             deliveries/s, deliveries per parleyd CPU-second, send -> deliver\n"
"             latency over every (message, member) pair; missing or duplicate\n"
"             deliveries fail the run\n"
"  workload   a chat workload from a profile (--profile FILE; examples and the\n"
"             format in bench/profiles/) through libparley, open loop at each\n"
"             --rate (1:1 sends/s; default 200): sends, history reads (last 50)\n"
"             and reconnects in the profile's proportions, latency from the\n"
"             intended time, send -> event latency at every connected device, a\n"
"             live progress line on a terminal or with -v. Features the server\n"
"             lacks (groups, receipts, typing) are reported as not exercised.\n"
"             --users N (default min(profile users, 16)), --threads N (default 4),\n"
"             --storm: reconnect storm (every device reconnects mid-window)\n"
"  history    history pages (50) through parleyd vs Redis XREVRANGE COUNT 50 on the\n"
"             same records: last page (hot), then parleyd is stopped, flushed into\n"
"             segments, restarted, the page cache dropped (--no-drop-caches: not),\n"
"             and an older page is read cold and warm. --convs N (default 32),\n"
"             --msgs N per conversation (default 300, > 250), --no-redis\n"
"  report RESULT.json... --out DIR   SVG charts and DIR/index.md from result files\n"
"  plan --profile FILE --results RESULT.json...   capacity plan (nodes, cores,\n"
"             memory, disk, network at peak) from the measured per-node figures,\n"
"             every step printed with its source\n"
"             Server modes start parleyd (--parleyd PATH) on 127.0.0.1 with a temp\n"
"             data dir and kill it after, or use --connect HOST:PORT.\n"
"\n"
"options:\n"
"  --dir D             where temp files and data dirs go (default: $TMPDIR or /tmp);\n"
"                      benchmark the disk you care about\n"
"  --seconds S         measured seconds per run point (default 3, max %.0f)\n"
"  --warmup S          unmeasured seconds before each run point (default 0.5)\n"
"  --producers LIST    concurrent producers, comma-separated (default 1,4,16,64,256;\n"
"                      max %d each)\n"
"  --payload LIST      payload bytes, comma-separated (default 100,1024; max 1 MiB)\n"
"  --rate LIST         open loop at each rate (engine, redis: appends/s;\n"
"                      delivery: messages/s)\n"
"  --half F            open-loop load as a fraction of saturation (default 0.5)\n"
"  --no-half           skip the open-loop run after the closed-loop sweep\n"
"  --no-floor          engine, delivery: skip the disk floor measurement\n"
"  --no-early          delivery: the receiver does not ask for early EVENTs\n"
"                      (HELLO feature EARLY: a message as soon as it is durable\n"
"                      in its conversation, before its inbox EVENT)\n"
"  --shards N          engine shards (threads; default: engine default = 1)\n"
"  --partitions N      engine partitions (default: engine default = 64)\n"
"  --idem              engine: give every append a unique producer id\n"
"                      (exercises the idempotency table; default: none)\n"
"  --history-readers N engine, compare: N threads read 50-entry pages of\n"
"                      64 streams flushed to history segments before the\n"
"                      run point, back to back, during every engine run\n"
"                      point (block cache of 1 byte: every page decompresses\n"
"                      its blocks); their reads/s and latency are printed\n"
"                      (default 0)\n"
"  --redis-server P    redis-server binary (default: redis-server in PATH)\n"
"  --repeat N          compare: run everything N times (max %d) and print the\n"
"                      min/median/max of the headline ratios (default 1);\n"
"                      compaction: N rounds of idle + compaction phases\n"
"  --seed N            payload PRNG seed (default 1)\n""  --count N           idle-conns: connections to open (default 10000)\n"
"  --parleyd PATH      server modes: parleyd binary to start\n"
"  --parleyd-args T    its arguments; {port} {tlsport} {adminport} {data} {dir}\n"
"                      {cert} {key} are substituted (free ports, temp dir)\n"
"                      (default \"--dev --data {data} --listen 127.0.0.1:{port}\n"
"                      --tls-port 0 --admin-port 0\" plus rate limits and the\n"
"                      handshake bound off: --rate-*-per-min 0 --max-handshakes 0)\n"
"  --tls               idle-conns, compaction: connect over TLS; server-compare:\n"
"                      plain and TLS side by side. parleyd gets a throw-away\n"
"                      certificate ({cert} {key}) and, unless --parleyd-args is\n"
"                      given, \"--dev --data {data} --listen 127.0.0.1:{port}\n"
"                      --tls-port {tlsport} --tls-cert {cert} --tls-key {key}\n"
"                      --admin-port 0\" (connections go to {tlsport}; with\n"
"                      --connect, to its port)\n"
"  --admin-port P      compaction with --connect: the server's admin port\n"
"  --compact-gap S     compaction: pause between compaction calls (default 0.1)\n"
"  --connect H:P       server modes: use a running server instead\n"
"  --server-pid PID    ... and its pid (idle-conns reads /proc/PID/status)\n"
"  --jwt-secret S      HS256 key for the dev tokens minted here\n"
"                      (default parley-dev-secret); --jwt-iss, --jwt-aud: claims\n"
"  --kills K           cluster: leader kills for the failover time (default 20)\n"
"  --no-single         cluster: skip the single-node reference\n"
"  --spread            cluster: also a 3-node cluster with --leader-placement spread,\n"
"                      leaderships rebalanced (POST /cluster/rebalance), each\n"
"                      connection to its conversation's leader; the fan-out is\n"
"                      forwarded between nodes (forwarded-append latency reported)\n"
"  --nats-server P     delivery, cluster: nats-server binary (delivery: the NATS core\n"
"                      pub/sub reference at the same rates; cluster: the JetStream\n"
"                      R3 peer) (default: nats-server in PATH or /usr/sbin);\n"
"                      --no-nats skips it\n"
"  --json FILE         every mode: also write the result as JSON (settings,\n"
"                      machine, load, peers and their configuration, every\n"
"                      percentile and a latency CDF, ratios); parley-history-ratio\n"
"                      --json for storage\n"
"  -v, --verbose       progress on stderr\n"
"  -h, --help          this text\n"
"\n"
"exit status: 0 ok, 1 a run failed, 2 watchdog fired (a run overran its\n"
"budget; child servers were killed), 64 bad arguments.\n",
		BENCH_MAX_SECONDS, BENCH_MAX_PRODUCERS, BENCH_MAX_REPEAT);
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "parley-bench: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(try parley-bench --help)\n");
	exit(EXIT_USAGE);
}

static unsigned parse_list(const char *s, uint32_t *out, uint32_t max,
			   const char *what)
{
	unsigned n = 0;
	const char *p = s;
	if (!*p)
		die_usage("empty list for %s", what);
	while (*p) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(p, &end, 10);
		if (end == p || errno || v == 0 || v > max || (*end && *end != ',') ||
		    *p == '-' || *p == '+') {
			char msg[160];
			snprintf(msg, sizeof msg, "%%s: bad value in \"%s\" (each must be 1..%u)",
				 s, max);
			die_usage(msg, what);
		}
		if (n == BENCH_MAX_LIST)
			die_usage("%s: too many values (max 16)", what);
		out[n++] = (uint32_t)v;
		p = *end ? end + 1 : end;
		if (*end == ',' && !*p)
			die_usage("%s: trailing comma", what);
	}
	return n;
}

static double parse_double(const char *s, double lo, double hi, const char *what)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !(v >= lo && v <= hi)) {
		char msg[160];
		snprintf(msg, sizeof msg, "%%s: \"%s\" is not a number in [%g, %g]", s, lo, hi);
		die_usage(msg, what);
	}
	return v;
}

/* ---- report ---------------------------------------------------------------- */

void bench_load_print_header(void)
{
	printf("| system | load | producers | payload B | acks | appends/s | MB/s | "
	       "p50 µs | p99 µs | p99.9 µs | max µs | WAL syncs/s | entries/sync | "
	       "WAL MB/s | mean write+sync µs | note |\n");
	printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
}

/* Appends a formatted clause to the note in buf[cap], after "; " unless it is
 * the first (truncated at cap like snprintf). */
__attribute__((format(printf, 3, 4))) static void note_add(char *buf, size_t cap,
							    const char *fmt, ...)
{
	size_t l = strlen(buf);
	if (l) {
		snprintf(buf + l, cap - l, "; ");
		l = strlen(buf);
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf + l, cap - l, fmt, ap);
	va_end(ap);
}

void bench_load_print_row(const struct load_result *r)
{
	char load[48];
	if (r->open_loop)
		snprintf(load, sizeof load, "open %.0f/s", r->target_rate);
	else
		snprintf(load, sizeof load, "closed");
	char syncs[32] = "n/a", eps[32] = "n/a", wal[32] = "n/a", msync[32] = "n/a";
	if (r->have_stats) {
		snprintf(syncs, sizeof syncs, "%.0f", r->syncs_per_s);
		snprintf(eps, sizeof eps, "%.1f", r->entries_per_sync);
		snprintf(wal, sizeof wal, "%.1f", r->wal_mb_per_s);
		snprintf(msync, sizeof msync, "%.1f", r->mean_sync_us);
	}
	char note[256];
	snprintf(note, sizeof note, "%s%s", r->note, r->ok ? "" : (r->note[0] ? "; FAILED" : "FAILED"));
	if (r->open_loop && r->lag.count)
		note_add(note, sizeof note, "pacer lag p50 %.1f p99 %.1f µs",
			 (double)bench_hist_quantile(&r->lag, 0.5) / 1e3,
			 (double)bench_hist_quantile(&r->lag, 0.99) / 1e3);
	if (r->not_sent)
		note_add(note, sizeof note, "%llu slots not sent", (unsigned long long)r->not_sent);
	struct bench_json *j = bench_sink();
	if (j) {
		bj_obj(j, NULL);
		bj_str(j, "kind", "load");
		bj_str(j, "system", r->system);
		if (!strcmp(r->system, "redis"))
			bj_str(j, "version", bench_redis_version());
		bj_bool(j, "open_loop", r->open_loop);
		bj_num(j, "target_rate", r->open_loop ? r->target_rate : NAN);
		bj_u64(j, "producers", r->producers);
		bj_u64(j, "payload", r->payload);
		bj_num(j, "seconds", r->seconds);
		bj_u64(j, "acks", r->acks);
		bj_u64(j, "errors", r->errors);
		bj_u64(j, "not_sent", r->not_sent);
		bj_num(j, "appends_per_s", r->appends_per_s);
		bj_num(j, "mb_per_s", r->mb_per_s);
		bj_hist(j, "latency", &r->lat);
		if (r->open_loop)
			bj_hist(j, "pacer_lag", &r->lag);
		if (r->have_stats) {
			bj_num(j, "wal_syncs_per_s", r->syncs_per_s);
			bj_num(j, "wal_mb_per_s", r->wal_mb_per_s);
			bj_num(j, "entries_per_sync", r->entries_per_sync);
			bj_num(j, "mean_sync_us", r->mean_sync_us);
		}
		bj_bool(j, "ok", r->ok);
		bj_str(j, "note", r->note);
		bj_end(j);
	}
	printf("| %s | %s | %u | %u | %llu | %.0f | %.2f | %.1f | %.1f | %.1f | %.1f | "
	       "%s | %s | %s | %s | %s |\n",
	       r->system, load, r->producers, r->payload, (unsigned long long)r->acks,
	       r->appends_per_s, r->mb_per_s,
	       (double)bench_hist_quantile(&r->lat, 0.50) / 1e3,
	       (double)bench_hist_quantile(&r->lat, 0.99) / 1e3,
	       (double)bench_hist_quantile(&r->lat, 0.999) / 1e3,
	       (double)r->lat.max_ns / 1e3, syncs, eps, wal, msync, note);
	fflush(stdout);
}

/* This machine is shared: every report records the load it ran under. */
static void print_load(const char *when)
{
	char buf[128] = "unavailable";
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (!fgets(buf, sizeof buf, f))
			snprintf(buf, sizeof buf, "unavailable");
		fclose(f);
		buf[strcspn(buf, "\n")] = 0;
	}
	char ts[64];
	time_t now = time(NULL);
	strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
	printf("- load at %s (%s): /proc/loadavg %s (1/5/15-min averages on %ld cores)\n",
	       when, ts, buf, sysconf(_SC_NPROCESSORS_ONLN));
	fflush(stdout);
}

static void print_load_end(void)
{
	printf("\n");
	print_load("end");
}

static void print_machine(const struct bench_cfg *cfg)
{
	struct utsname u;
	uname(&u);
	char ts[64];
	time_t now = time(NULL);
	strftime(ts, sizeof ts, "%Y-%m-%d %H:%M UTC", gmtime(&now));
	printf("- date: %s\n", ts);
	printf("- machine: %ld online cores (nproc), kernel %s %s, data dir %s\n",
	       sysconf(_SC_NPROCESSORS_ONLN), u.release, u.machine, cfg->dir);
	printf("- settings: %.1fs measured + %.1fs warm-up per run point, shards=%u "
	       "partitions=%u (0 = engine default), idempotent producer ids: %s, "
	       "history readers: %u\n",
	       cfg->seconds, cfg->warmup, cfg->shards, cfg->partitions,
	       cfg->idem ? "yes" : "no", cfg->hist_readers);
	print_load("start");
	atexit(print_load_end);
}

/* ---- runs -------------------------------------------------------------------- */

typedef int (*load_fn)(const struct bench_cfg *, uint32_t, uint32_t, double,
		       struct load_result *);

static int run_point(const struct bench_cfg *cfg, load_fn fn, uint32_t prod,
		     uint32_t payload, double rate, struct load_result *r)
{
	bench_watchdog_arm(cfg->warmup + cfg->seconds + BENCH_DRAIN_SECONDS + RUN_SLACK_S);
	if (cfg->verbose)
		fprintf(stderr, "parley-bench: %s producers=%u payload=%u %s\n",
			fn == bench_engine_run ? "engine" : "redis", prod, payload,
			rate > 0 ? "open loop" : "closed loop");
	int rc = fn(cfg, prod, payload, rate, r);
	bench_watchdog_arm(0);
	if (rc != 0) {
		r->ok = false;
		if (!r->note[0])
			snprintf(r->note, sizeof r->note, "run failed: %s",
				 parley_strerror(rc));
	}
	bench_load_print_row(r);
	return rc;
}

static int run_disk(const struct bench_cfg *cfg, struct disk_result *d)
{
	bench_watchdog_arm(3 * cfg->seconds + RUN_SLACK_S);
	int rc = bench_disk_run(cfg, d);
	bench_watchdog_arm(0);
	if (rc == 0)
		bench_disk_print(d);
	return rc;
}

struct sweep {
	struct load_result closed[BENCH_MAX_LIST];
	struct load_result half;
	bool have_half;
	unsigned best; /* index of the saturation point in closed[] */
};

/* Closed-loop sweep over producers for one payload, then the open-loop run
 * at cfg->half_frac of the best throughput. */
static int sweep(const struct bench_cfg *cfg, load_fn fn, uint32_t payload,
		 struct sweep *s)
{
	int failures = 0;
	memset(s, 0, sizeof *s);
	for (unsigned i = 0; i < cfg->n_producers; i++) {
		if (run_point(cfg, fn, cfg->producers[i], payload, 0, &s->closed[i]) != 0 ||
		    !s->closed[i].ok)
			failures++;
		if (s->closed[i].appends_per_s > s->closed[s->best].appends_per_s)
			s->best = i;
	}
	const struct load_result *b = &s->closed[s->best];
	if (!cfg->no_half && b->appends_per_s > 0) {
		double rate = b->appends_per_s * cfg->half_frac;
		if (run_point(cfg, fn, b->producers, payload, rate, &s->half) != 0 ||
		    !s->half.ok)
			failures++;
		s->have_half = true;
	}
	return failures;
}

static double p99_us(const struct bench_hist *h)
{
	return (double)bench_hist_quantile(h, 0.99) / 1e3;
}

static void print_engine_ratios(const struct disk_result *d, uint32_t payload,
				const struct sweep *e)
{
	const struct load_result *b = &e->closed[e->best];
	printf("\n| payload %u B: engine vs disk floor | value | goal |\n|---|---:|---|\n",
	       payload);
	printf("| saturation (closed loop, %u producers) | %.0f appends/s, %.2f MB/s payload",
	       b->producers, b->appends_per_s, b->mb_per_s);
	if (b->have_stats)
		printf(", %.2f MB/s WAL, %.0f syncs/s", b->wal_mb_per_s, b->syncs_per_s);
	printf(" | |\n");
	if (d && d->ok) {
		printf("| payload MB/s ÷ 1 MiB write+fdatasync bandwidth (%.1f MB/s) | %.3f | ≥ 0.8 |\n",
		       d->bw_1m_mbs, d->bw_1m_mbs > 0 ? b->mb_per_s / d->bw_1m_mbs : 0);
		if (b->have_stats)
			printf("| WAL MB/s ÷ 1 MiB write+fdatasync bandwidth | %.3f | (≥ 0.8) |\n",
			       d->bw_1m_mbs > 0 ? b->wal_mb_per_s / d->bw_1m_mbs : 0);
		if (b->have_stats && d->syncs_per_s > 0)
			printf("| WAL syncs/s ÷ 4 KiB write+fdatasync rounds/s (%.0f) | %.3f | |\n",
			       d->syncs_per_s, b->syncs_per_s / d->syncs_per_s);
	}
	if (b->have_stats) {
		/* share of the wall time a WAL write+fdatasync was in flight: near
		 * 100% = disk-bound group commit, well below = the shard is
		 * busy elsewhere (CPU) between syncs */
		printf("| WAL write+sync busy (syncs/s × mean write+sync %.0f µs) | %.0f%% | |\n",
		       b->mean_sync_us, b->syncs_per_s * b->mean_sync_us / 1e4);
	}
	if (e->have_half) {
		double hp = p99_us(&e->half.lat);
		printf("| open loop at %.0f appends/s (%.0f%% of saturation): ack p99 | %.1f µs | |\n",
		       e->half.target_rate,
		       b->appends_per_s > 0 ? 100.0 * e->half.target_rate / b->appends_per_s : 0,
		       hp);
		if (d && d->ok)
			printf("| half-load ack p99 − 4 KiB fdatasync p99 (%.1f µs) | %+.1f µs | ≤ 100 µs |\n",
			       p99_us(&d->lat4k), hp - p99_us(&d->lat4k));
	}
	fflush(stdout);
}

static int mode_disk(const struct bench_cfg *cfg)
{
	struct disk_result *d = malloc(sizeof *d);
	if (!d)
		return 1;
	print_machine(cfg);
	int rc = run_disk(cfg, d);
	free(d);
	return rc == 0 ? 0 : 1;
}

static int mode_load(const struct bench_cfg *cfg, load_fn fn, bool floor)
{
	struct disk_result *d = NULL;
	int failures = 0;
	print_machine(cfg);
	if (floor) {
		d = malloc(sizeof *d);
		if (!d || run_disk(cfg, d) != 0)
			failures++;
	}
	struct sweep *s = malloc(sizeof *s);
	if (!s) {
		free(d);
		return 1;
	}
	for (unsigned j = 0; j < cfg->n_payloads; j++) {
		printf("\n### %s, payload %u B\n\n", fn == bench_engine_run ? "engine" : "redis",
		       cfg->payloads[j]);
		bench_load_print_header();
		if (cfg->n_rates > 0) {
			for (unsigned q = 0; q < cfg->n_rates; q++)
				for (unsigned i = 0; i < cfg->n_producers; i++) {
					struct load_result r;
					if (run_point(cfg, fn, cfg->producers[i], cfg->payloads[j],
						      cfg->rates[q], &r) != 0 || !r.ok)
						failures++;
				}
			continue;
		}
		failures += sweep(cfg, fn, cfg->payloads[j], s);
		if (fn == bench_engine_run)
			print_engine_ratios(d, cfg->payloads[j], s);
		else
			printf("\nredis-server %s, appendonly yes + appendfsync always "
			       "(checked with CONFIG GET at start)\n", bench_redis_version());
	}
	free(s);
	free(d);
	return failures ? 1 : 0;
}

/* The headline numbers of one compare pass for one payload, kept to print
 * the spread over --repeat passes. */
struct cmp_summary {
	double parley_best, redis_best, ratio;   /* appends/s, parley ÷ redis */
	double mbs_over_floor, wal_over_floor;   /* saturation MB/s ÷ 1 MiB bw */
	double half_p99_minus_floor;             /* µs */
	double parley_half_p99, floor_p99;       /* µs */
};

static int compare_pass(const struct bench_cfg *cfg, struct cmp_summary *sum)
{
	int failures = 0;
	struct disk_result *d = malloc(sizeof *d);
	struct sweep *se = malloc(sizeof *se), *sr = malloc(sizeof *sr);
	if (!d || !se || !sr)
		return 1;
	if (run_disk(cfg, d) != 0)
		failures++;
	for (unsigned j = 0; j < cfg->n_payloads; j++) {
		uint32_t pl = cfg->payloads[j];
		printf("\n### payload %u B — raw runs (engine and redis alternate per "
		       "point)\n\n", pl);
		bench_load_print_header();
		memset(se, 0, sizeof *se);
		memset(sr, 0, sizeof *sr);
		/* interleave so both systems see the same background noise */
		for (unsigned i = 0; i < cfg->n_producers; i++) {
			if (run_point(cfg, bench_engine_run, cfg->producers[i], pl, 0,
				      &se->closed[i]) != 0 || !se->closed[i].ok)
				failures++;
			if (run_point(cfg, bench_redis_run, cfg->producers[i], pl, 0,
				      &sr->closed[i]) != 0 || !sr->closed[i].ok)
				failures++;
			if (se->closed[i].appends_per_s > se->closed[se->best].appends_per_s)
				se->best = i;
			if (sr->closed[i].appends_per_s > sr->closed[sr->best].appends_per_s)
				sr->best = i;
		}
		if (!cfg->no_half) {
			const struct load_result *be = &se->closed[se->best];
			const struct load_result *br = &sr->closed[sr->best];
			if (be->appends_per_s > 0) {
				if (run_point(cfg, bench_engine_run, be->producers, pl,
					      be->appends_per_s * cfg->half_frac, &se->half) != 0 ||
				    !se->half.ok)
					failures++;
				se->have_half = true;
			}
			if (br->appends_per_s > 0) {
				if (run_point(cfg, bench_redis_run, br->producers, pl,
					      br->appends_per_s * cfg->half_frac, &sr->half) != 0 ||
				    !sr->half.ok)
					failures++;
				sr->have_half = true;
			}
		}
		printf("\n### payload %u B — parley vs redis %s (closed loop, same producers)\n\n",
		       pl, bench_redis_version());
		printf("| producers | parley appends/s | redis appends/s | parley ÷ redis (goal ≥ 3) | "
		       "parley p99 µs | redis p99 µs |\n|---:|---:|---:|---:|---:|---:|\n");
		for (unsigned i = 0; i < cfg->n_producers; i++) {
			const struct load_result *a = &se->closed[i], *b = &sr->closed[i];
			printf("| %u | %.0f | %.0f | %.2f× | %.1f | %.1f |\n", a->producers,
			       a->appends_per_s, b->appends_per_s,
			       b->appends_per_s > 0 ? a->appends_per_s / b->appends_per_s : 0,
			       p99_us(&a->lat), p99_us(&b->lat));
		}
		const struct load_result *be = &se->closed[se->best], *br = &sr->closed[sr->best];
		printf("| best | %.0f (%u prod.) | %.0f (%u prod.) | %.2f× | | |\n",
		       be->appends_per_s, be->producers, br->appends_per_s, br->producers,
		       br->appends_per_s > 0 ? be->appends_per_s / br->appends_per_s : 0);
		if (se->have_half && sr->have_half)
			printf("\nhalf load (open loop, each at %.0f%% of its own saturation, latency "
			       "from intended send time): parley %.0f/s p99 %.1f µs p99.9 %.1f µs; "
			       "redis %.0f/s p99 %.1f µs p99.9 %.1f µs\n",
			       cfg->half_frac * 100, se->half.target_rate, p99_us(&se->half.lat),
			       (double)bench_hist_quantile(&se->half.lat, 0.999) / 1e3,
			       sr->half.target_rate, p99_us(&sr->half.lat),
			       (double)bench_hist_quantile(&sr->half.lat, 0.999) / 1e3);
		print_engine_ratios(d, pl, se);
		struct cmp_summary *cs = &sum[j];
		memset(cs, 0, sizeof *cs);
		cs->parley_best = be->appends_per_s;
		cs->redis_best = br->appends_per_s;
		cs->ratio = br->appends_per_s > 0 ? be->appends_per_s / br->appends_per_s : NAN;
		/* NAN = not measured in this pass: left out of the spread */
		cs->mbs_over_floor = cs->wal_over_floor = cs->floor_p99 = NAN;
		cs->parley_half_p99 = cs->half_p99_minus_floor = NAN;
		if (d->ok && d->bw_1m_mbs > 0) {
			cs->mbs_over_floor = be->mb_per_s / d->bw_1m_mbs;
			if (be->have_stats)
				cs->wal_over_floor = be->wal_mb_per_s / d->bw_1m_mbs;
		}
		if (d->ok)
			cs->floor_p99 = p99_us(&d->lat4k);
		if (se->have_half && se->half.lat.count > 0) {
			cs->parley_half_p99 = p99_us(&se->half.lat);
			cs->half_p99_minus_floor = cs->parley_half_p99 - cs->floor_p99;
		}
	}
	free(d);
	free(se);
	free(sr);
	return failures;
}

static void print_spread_row(const char *name, const char *goal, double *v,
			     unsigned n, const char *fmt)
{
	struct bench_spread sp;
	if (bench_spread(v, n, &sp) == 0) {
		printf("| %s | not measured | | | %s |\n", name, goal);
		return;
	}
	char lo[32], med[32], hi[32];
	snprintf(lo, sizeof lo, fmt, sp.min);
	snprintf(med, sizeof med, fmt, sp.median);
	snprintf(hi, sizeof hi, fmt, sp.max);
	printf("| %s | %s | %s | %s | %s |\n", name, lo, med, hi, goal);
}

static int mode_compare(const struct bench_cfg *cfg)
{
	int failures = 0;
	print_machine(cfg);
	printf("- guarantees: parley = single node, every ack after its WAL batch was "
	       "written and fdatasync'd (group commit); redis = single node, "
	       "appendonly yes + appendfsync always (AOF write+fsync before replies)\n");
	static struct cmp_summary sum[BENCH_MAX_REPEAT][BENCH_MAX_LIST];
	for (unsigned k = 0; k < cfg->repeat; k++) {
		if (cfg->repeat > 1)
			printf("\n## pass %u of %u\n", k + 1, cfg->repeat);
		failures += compare_pass(cfg, sum[k]);
	}
	printf("\n### summary over %u pass%s (min / median / max)\n", cfg->repeat,
	       cfg->repeat > 1 ? "es" : "");
	for (unsigned j = 0; j < cfg->n_payloads; j++) {
		double v[BENCH_MAX_REPEAT];
		unsigned n = cfg->repeat;
		printf("\n| payload %u B | min | median | max | goal |\n|---|---:|---:|---:|---|\n",
		       cfg->payloads[j]);
#define SPREAD(field, name, goal, fmt)                                         \
	do {                                                                   \
		for (unsigned k = 0; k < n; k++)                               \
			v[k] = sum[k][j].field;                                \
		print_spread_row(name, goal, v, n, fmt);                       \
	} while (0)
		SPREAD(parley_best, "parley durable appends/s (best closed loop)", "", "%.0f");
		SPREAD(redis_best, "redis durable appends/s (best closed loop)", "", "%.0f");
		SPREAD(ratio, "parley ÷ redis", "≥ 3", "%.2f×");
		SPREAD(mbs_over_floor, "saturation payload MB/s ÷ 1 MiB fdatasync bw", "≥ 0.8", "%.3f");
		SPREAD(wal_over_floor, "saturation WAL MB/s ÷ 1 MiB fdatasync bw", "", "%.3f");
		SPREAD(floor_p99, "disk 4 KiB write+fdatasync p99 µs", "", "%.1f");
		SPREAD(parley_half_p99, "parley half-load ack p99 µs", "", "%.1f");
		SPREAD(half_p99_minus_floor, "half-load ack p99 − fdatasync p99 µs", "≤ 100", "%+.1f");
#undef SPREAD
		struct bench_json *jj = bench_sink();
		for (unsigned k = 0; jj && k < n; k++) {
			const struct cmp_summary *cs = &sum[k][j];
			bj_obj(jj, NULL);
			bj_str(jj, "kind", "compare_ratios");
			bj_u64(jj, "payload", cfg->payloads[j]);
			bj_u64(jj, "pass", k + 1);
			bj_num(jj, "parley_best_appends_per_s", cs->parley_best);
			bj_num(jj, "redis_best_appends_per_s", cs->redis_best);
			bj_num(jj, "parley_over_redis", cs->ratio);
			bj_num(jj, "goal_parley_over_redis_min", 3);
			bj_num(jj, "saturation_mbs_over_1m_fdatasync_bw", cs->mbs_over_floor);
			bj_num(jj, "goal_mbs_over_floor_min", 0.8);
			bj_num(jj, "wal_mbs_over_1m_fdatasync_bw", cs->wal_over_floor);
			bj_num(jj, "floor_4k_p99_us", cs->floor_p99);
			bj_num(jj, "parley_half_load_p99_us", cs->parley_half_p99);
			bj_num(jj, "half_p99_minus_floor_p99_us", cs->half_p99_minus_floor);
			bj_num(jj, "goal_half_p99_minus_floor_max_us", 100);
			bj_end(jj);
		}
	}
	return failures ? 1 : 0;
}

/* parleyd SENDs vs Redis XADDs, both over loopback TCP, same connections
 * and bodies, alternating per point. */
static int mode_server_compare(const struct bench_cfg *cfg)
{
	int failures = 0;
	print_machine(cfg);
	printf("- guarantees: parleyd = single node, plain TCP, SEND_ACK after the "
	       "message's WAL batch was written and fdatasync'd (its inbox fan-out "
	       "follows); redis = single node, appendonly yes + appendfsync always\n");
	static struct load_result rp[BENCH_MAX_LIST], rr[BENCH_MAX_LIST], rt[BENCH_MAX_LIST];
	if (cfg->tls)
		printf("- TLS: parleyd-tls = the same parleyd build and settings, SENDs over its "
		       "TLS port (OpenSSL %s, throw-away EC P-256 certificate, no client "
		       "certificate check), a fresh parleyd per point\n",
		       OpenSSL_version(OPENSSL_VERSION));
	for (unsigned j = 0; j < cfg->n_payloads; j++) {
		uint32_t pl = cfg->payloads[j];
		printf("\n### payload %u B — raw runs (parleyd and redis alternate per point)\n\n",
		       pl);
		bench_load_print_header();
		for (unsigned i = 0; i < cfg->n_producers; i++) {
			bench_watchdog_arm(cfg->warmup + cfg->seconds + BENCH_DRAIN_SECONDS +
					   RUN_SLACK_S + cfg->producers[i] / 100.0);
			int rc = bench_server_appends(cfg, cfg->producers[i], pl, false, &rp[i]);
			bench_watchdog_arm(0);
			if (rc != 0) {
				rp[i].ok = false;
				if (!rp[i].note[0])
					snprintf(rp[i].note, sizeof rp[i].note, "run failed: %s",
						 parley_strerror(rc));
			}
			bench_load_print_row(&rp[i]);
			if (rc != 0 || !rp[i].ok)
				failures++;
			if (cfg->tls) {
				bench_watchdog_arm(cfg->warmup + cfg->seconds + BENCH_DRAIN_SECONDS +
						   RUN_SLACK_S + cfg->producers[i] / 20.0);
				rc = bench_server_appends(cfg, cfg->producers[i], pl, true, &rt[i]);
				bench_watchdog_arm(0);
				if (rc != 0) {
					rt[i].ok = false;
					if (!rt[i].note[0])
						snprintf(rt[i].note, sizeof rt[i].note,
							 "run failed: %s", parley_strerror(rc));
				}
				bench_load_print_row(&rt[i]);
				if (rc != 0 || !rt[i].ok)
					failures++;
			}
			if (run_point(cfg, bench_redis_run, cfg->producers[i], pl, 0, &rr[i]) != 0 ||
			    !rr[i].ok)
				failures++;
		}
		printf("\n### payload %u B — parleyd vs redis %s over TCP (closed loop, same "
		       "connections)\n\n", pl, bench_redis_version());
		printf("| connections | parleyd SENDs/s | redis XADDs/s | parleyd ÷ redis | "
		       "parleyd p99 µs | redis p99 µs |\n|---:|---:|---:|---:|---:|---:|\n");
		for (unsigned i = 0; i < cfg->n_producers; i++) {
			printf("| %u | %.0f | %.0f | %.2f× | %.1f | %.1f |\n", cfg->producers[i],
			       rp[i].appends_per_s, rr[i].appends_per_s,
			       rr[i].appends_per_s > 0 ? rp[i].appends_per_s / rr[i].appends_per_s : 0,
			       p99_us(&rp[i].lat), p99_us(&rr[i].lat));
			struct bench_json *jj = bench_sink();
			if (jj) {
				bj_obj(jj, NULL);
				bj_str(jj, "kind", "server_compare_ratio");
				bj_u64(jj, "payload", pl);
				bj_u64(jj, "connections", cfg->producers[i]);
				bj_num(jj, "parleyd_sends_per_s", rp[i].appends_per_s);
				bj_num(jj, "redis_xadds_per_s", rr[i].appends_per_s);
				bj_num(jj, "parleyd_over_redis", rr[i].appends_per_s > 0 ?
					   rp[i].appends_per_s / rr[i].appends_per_s : NAN);
				bj_end(jj);
			}
		}
		if (!cfg->tls)
			continue;
		printf("\n### payload %u B — parleyd over TLS vs plain TCP (closed loop, same "
		       "connections, separate fresh servers)\n\n", pl);
		printf("| connections | plain SENDs/s | TLS SENDs/s | TLS ÷ plain | plain p50 / p99 µs | "
		       "TLS p50 / p99 µs | goal TLS ≥ 0.7× plain at 50 |\n"
		       "|---:|---:|---:|---:|---:|---:|---|\n");
		for (unsigned i = 0; i < cfg->n_producers; i++) {
			double r = rp[i].appends_per_s > 0 ? rt[i].appends_per_s / rp[i].appends_per_s
							   : NAN;
			bool both = rp[i].ok && rt[i].ok;
			printf("| %u | %.0f | %.0f | %.2f× | %.1f / %.1f | %.1f / %.1f | %s |\n",
			       cfg->producers[i], rp[i].appends_per_s, rt[i].appends_per_s, r,
			       (double)bench_hist_quantile(&rp[i].lat, 0.5) / 1e3, p99_us(&rp[i].lat),
			       (double)bench_hist_quantile(&rt[i].lat, 0.5) / 1e3, p99_us(&rt[i].lat),
			       cfg->producers[i] != 50 ? "–" : !both ? "no verdict (run failed)" :
			       r >= 0.7 ? "met" : "missed");
			struct bench_json *jj = bench_sink();
			if (jj) {
				bj_obj(jj, NULL);
				bj_str(jj, "kind", "server_compare_tls_ratio");
				bj_u64(jj, "payload", pl);
				bj_u64(jj, "connections", cfg->producers[i]);
				bj_num(jj, "plain_sends_per_s", rp[i].appends_per_s);
				bj_num(jj, "tls_sends_per_s", rt[i].appends_per_s);
				bj_num(jj, "tls_over_plain", r);
				bj_hist(jj, "plain_latency", &rp[i].lat);
				bj_hist(jj, "tls_latency", &rt[i].lat);
				bj_bool(jj, "ok", both);
				bj_end(jj);
			}
		}
	}
	return failures ? 1 : 0;
}

static const char *find_in_path(const char *name)
{
	static char buf[4096];
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
	char *dup = strdup(path), *save = NULL;
	const char *res = NULL;
	for (char *d = strtok_r(dup, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(buf, sizeof buf, "%s/%s", d, name);
		if (access(buf, X_OK) == 0) {
			res = buf;
			break;
		}
	}
	free(dup);
	return res;
}

/* The nats-server the cluster and delivery modes run as their peer: on
 * PATH, else Debian's /usr/sbin (often off a user's PATH); NULL when
 * there is none. */
static const char *find_nats_server(void)
{
	const char *p = find_in_path("nats-server");
	if (!p && access("/usr/sbin/nats-server", X_OK) == 0)
		p = "/usr/sbin/nats-server";
	return p;
}

/* The mode's nats-server: none with --no-nats, else --nats-server or the
 * one found on this machine; without one, says so (`without`: what the
 * mode then lacks). */
static void want_nats(struct bench_cfg *cfg, bool no_nats, const char *without)
{
	if (no_nats) {
		cfg->nats_server = NULL;
		return;
	}
	if (!cfg->nats_server)
		cfg->nats_server = find_nats_server();
	if (!cfg->nats_server)
		fprintf(stderr, "parley-bench: nats-server not found: %s "
				"(tools/install-deps.sh installs it)\n", without);
}

int main(int argc, char **argv)
{
	struct bench_cfg cfg = {0};
	const char *tmpd = getenv("TMPDIR");
	cfg.dir = tmpd && *tmpd ? tmpd : "/tmp";
	cfg.seconds = 3;
	cfg.warmup = 0.5;
	cfg.half_frac = 0.5;
	cfg.seed = 1;
	cfg.repeat = 1;
	bool no_floor = false, payload_set = false, no_nats = false, args_set = false;
	bool producers_set = false, kills_set = false, seconds_set = false;
	cfg.compact_gap_s = 0.1;
	const char *outdir = NULL;
	cfg.count = 10000;
	/* TLS and admin ports off: their fixed defaults would collide with any
	 * other parleyd on this shared machine. Rate limits and the handshake
	 * bound off: the benchmarks measure capacity, one connection sends far
	 * more than a person (give --parleyd-args to measure with them on) */
#define BENCH_NO_LIMITS " --rate-send-user-per-min 0 --rate-send-conn-per-min 0" \
	" --rate-history-user-per-min 0 --rate-history-conn-per-min 0 --max-handshakes 0"
	cfg.parleyd_args = "--dev --data {data} --listen 127.0.0.1:{port} --tls-port 0 "
			   "--admin-port 0" BENCH_NO_LIMITS;
	cfg.jwt_secret = "parley-dev-secret";
	static const uint32_t def_prod[] = {1, 4, 16, 64, 256};
	static const uint32_t def_pl[] = {100, 1024};
	memcpy(cfg.producers, def_prod, sizeof def_prod);
	cfg.n_producers = PARLEY_ARRAY_LEN(def_prod);
	memcpy(cfg.payloads, def_pl, sizeof def_pl);
	cfg.n_payloads = PARLEY_ARRAY_LEN(def_pl);

	enum { O_DIR = 256, O_SECONDS, O_WARMUP, O_PRODUCERS, O_PAYLOAD, O_RATE,
	       O_HALF, O_NO_HALF, O_NO_FLOOR, O_SHARDS, O_PARTITIONS, O_IDEM, O_HIST_READERS,
	       O_REDIS, O_SEED, O_REPEAT, O_COUNT, O_PARLEYD, O_PARLEYD_ARGS,
	       O_CONNECT, O_SERVER_PID, O_JWT_SECRET, O_JWT_ISS, O_JWT_AUD, O_NATS,
	       O_NO_NATS, O_TLS, O_PROFILE, O_JSON, O_USERS, O_THREADS, O_CONVS, O_MSGS,
	       O_NO_REDIS, O_NO_DROP, O_OUT, O_RESULTS, O_STORM, O_ADMIN_PORT, O_COMPACT_GAP,
	       O_KILLS, O_NO_SINGLE, O_SPREAD, O_NO_EARLY };
	static const struct option longopts[] = {
		{"dir", required_argument, NULL, O_DIR},
		{"seconds", required_argument, NULL, O_SECONDS},
		{"warmup", required_argument, NULL, O_WARMUP},
		{"producers", required_argument, NULL, O_PRODUCERS},
		{"payload", required_argument, NULL, O_PAYLOAD},
		{"rate", required_argument, NULL, O_RATE},
		{"half", required_argument, NULL, O_HALF},
		{"no-half", no_argument, NULL, O_NO_HALF},
		{"no-floor", no_argument, NULL, O_NO_FLOOR},
		{"no-early", no_argument, NULL, O_NO_EARLY},
		{"shards", required_argument, NULL, O_SHARDS},
		{"partitions", required_argument, NULL, O_PARTITIONS},
		{"idem", no_argument, NULL, O_IDEM},
		{"history-readers", required_argument, NULL, O_HIST_READERS},
		{"redis-server", required_argument, NULL, O_REDIS},
		{"seed", required_argument, NULL, O_SEED},
		{"repeat", required_argument, NULL, O_REPEAT},
		{"count", required_argument, NULL, O_COUNT},
		{"parleyd", required_argument, NULL, O_PARLEYD},
		{"parleyd-args", required_argument, NULL, O_PARLEYD_ARGS},
		{"connect", required_argument, NULL, O_CONNECT},
		{"server-pid", required_argument, NULL, O_SERVER_PID},
		{"jwt-secret", required_argument, NULL, O_JWT_SECRET},
		{"jwt-iss", required_argument, NULL, O_JWT_ISS},
		{"jwt-aud", required_argument, NULL, O_JWT_AUD},
		{"nats-server", required_argument, NULL, O_NATS},
		{"no-nats", no_argument, NULL, O_NO_NATS},
		{"tls", no_argument, NULL, O_TLS},
		{"profile", required_argument, NULL, O_PROFILE},
		{"json", required_argument, NULL, O_JSON},
		{"users", required_argument, NULL, O_USERS},
		{"threads", required_argument, NULL, O_THREADS},
		{"convs", required_argument, NULL, O_CONVS},
		{"msgs", required_argument, NULL, O_MSGS},
		{"no-redis", no_argument, NULL, O_NO_REDIS},
		{"no-drop-caches", no_argument, NULL, O_NO_DROP},
		{"out", required_argument, NULL, O_OUT},
		{"results", no_argument, NULL, O_RESULTS},
		{"storm", no_argument, NULL, O_STORM},
		{"admin-port", required_argument, NULL, O_ADMIN_PORT},
		{"compact-gap", required_argument, NULL, O_COMPACT_GAP},
		{"kills", required_argument, NULL, O_KILLS},
		{"no-single", no_argument, NULL, O_NO_SINGLE},
		{"spread", no_argument, NULL, O_SPREAD},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *mode = NULL;
	if (argv[1][0] != '-') {
		mode = argv[1];
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":vh", longopts, NULL)) != -1) {
		switch (c) {
		case O_DIR: cfg.dir = optarg; break;
		case O_SECONDS: cfg.seconds = parse_double(optarg, 0.1, BENCH_MAX_SECONDS, "--seconds"); seconds_set = true; break;
		case O_WARMUP: cfg.warmup = parse_double(optarg, 0, 30, "--warmup"); break;
		case O_PRODUCERS: producers_set = true; cfg.n_producers = parse_list(optarg, cfg.producers, BENCH_MAX_PRODUCERS, "--producers"); break;
		case O_PAYLOAD: cfg.n_payloads = parse_list(optarg, cfg.payloads, PE_MAX_PAYLOAD, "--payload"); payload_set = true; break;
		case O_RATE: {
			uint32_t tmp[BENCH_MAX_LIST];
			cfg.n_rates = parse_list(optarg, tmp, 10000000, "--rate");
			for (unsigned q = 0; q < cfg.n_rates; q++)
				cfg.rates[q] = tmp[q];
			break;
		}
		case O_COUNT: cfg.count = (uint32_t)parse_double(optarg, 1, 200000, "--count"); break;
		case O_PARLEYD: cfg.parleyd = optarg; break;
		case O_PARLEYD_ARGS: cfg.parleyd_args = optarg; args_set = true; break;
		case O_CONNECT: cfg.connect = optarg; break;
		case O_SERVER_PID: cfg.server_pid = (int)parse_double(optarg, 1, 1 << 30, "--server-pid"); break;
		case O_JWT_SECRET: cfg.jwt_secret = optarg; break;
		case O_JWT_ISS: cfg.jwt_iss = optarg; break;
		case O_JWT_AUD: cfg.jwt_aud = optarg; break;
		case O_NATS: cfg.nats_server = optarg; break;
		case O_NO_NATS: no_nats = true; break;
		case O_TLS: cfg.tls = true; break;
		case O_PROFILE: cfg.profile = optarg; break;
		case O_JSON: cfg.json = optarg; break;
		case O_USERS: cfg.users = (uint32_t)parse_double(optarg, 2, 256, "--users"); break;
		case O_THREADS: cfg.threads = (uint32_t)parse_double(optarg, 1, 16, "--threads"); break;
		case O_CONVS: cfg.convs = (uint32_t)parse_double(optarg, 1, 1024, "--convs"); break;
		case O_MSGS: cfg.msgs = (uint32_t)parse_double(optarg, 251, 100000, "--msgs"); break;
		case O_NO_REDIS: cfg.no_redis = true; break;
		case O_NO_DROP: cfg.no_drop_caches = true; break;
		case O_OUT: outdir = optarg; break;
		case O_STORM: cfg.storm = true; break;
		case O_ADMIN_PORT: cfg.admin_port = (int)parse_double(optarg, 1, 65535, "--admin-port"); break;
		case O_COMPACT_GAP: cfg.compact_gap_s = parse_double(optarg, 0, 60, "--compact-gap"); break;
		case O_KILLS: cfg.kills = (uint32_t)parse_double(optarg, 0, 1000, "--kills"); kills_set = true; break;
		case O_NO_SINGLE: cfg.no_single = true; break;
		case O_SPREAD: cfg.spread = true; break;
		case O_RESULTS: break; /* plan: the files follow as arguments */
		case O_HALF: cfg.half_frac = parse_double(optarg, 0.01, 1, "--half"); break;
		case O_NO_HALF: cfg.no_half = true; break;
		case O_NO_FLOOR: no_floor = true; break;
		case O_NO_EARLY: cfg.no_early = true; break;
		case O_SHARDS: cfg.shards = (uint32_t)parse_double(optarg, 1, 64, "--shards"); break;
		case O_PARTITIONS: cfg.partitions = (uint32_t)parse_double(optarg, 1, 65536, "--partitions"); break;
		case O_IDEM: cfg.idem = true; break;
		case O_HIST_READERS: cfg.hist_readers = (uint32_t)parse_double(optarg, 0, 64, "--history-readers"); break;
		case O_REDIS: cfg.redis_server = optarg; break;
		case O_SEED: cfg.seed = (uint64_t)parse_double(optarg, 0, 1e15, "--seed"); break;
		case O_REPEAT: cfg.repeat = (unsigned)parse_double(optarg, 1, BENCH_MAX_REPEAT, "--repeat"); break;
		case 'v': cfg.verbose = true; break;
		case 'h': usage(stdout); return 0;
		case ':': die_usage("option %s needs a value", argv[optind - 1]); break;
		default: die_usage("unknown option %s", argv[optind - 1]); break;
		}
	}
	bool takes_files = mode && (!strcmp(mode, "report") || !strcmp(mode, "plan"));
	if (optind < argc && !takes_files)
		die_usage("unexpected argument \"%s\"", argv[optind]);
	if (mode && !strcmp(mode, "report")) {
		if (optind >= argc || !outdir)
			die_usage("%s", "report wants RESULT.json... --out DIR");
		return bench_report(argc - optind, argv + optind, outdir) ? 1 : 0;
	}
	if (mode && !strcmp(mode, "plan")) {
		if (!cfg.profile || optind >= argc)
			die_usage("%s", "plan wants --profile FILE --results RESULT.json...");
		return bench_planmode(&cfg, argc - optind, argv + optind) ? 1 : 0;
	}
	/* TLS on {tlsport} beside plain TCP on {port}; compaction: the admin
	 * port with POST /admin/compact on */
	bool cmp_mode = mode && !strcmp(mode, "compaction");
	if (!args_set && cmp_mode)
		cfg.parleyd_args = cfg.tls ?
			"--dev --data {data} --listen 127.0.0.1:{port} --tls-port {tlsport} "
			"--tls-cert {cert} --tls-key {key} --admin-port {adminport} "
			"--admin-compact 1" BENCH_NO_LIMITS :
			"--dev --data {data} --listen 127.0.0.1:{port} --tls-port 0 "
			"--admin-port {adminport} --admin-compact 1" BENCH_NO_LIMITS;
	else if (cfg.tls && !args_set)
		cfg.parleyd_args = "--dev --data {data} --listen 127.0.0.1:{port} --tls-port {tlsport} "
				   "--tls-cert {cert} --tls-key {key} --admin-port 0" BENCH_NO_LIMITS;
	if (cmp_mode && !producers_set) {
		cfg.producers[0] = 16;
		cfg.n_producers = 1;
	}
	if (cmp_mode && !payload_set) {
		cfg.payloads[0] = 100;
		cfg.n_payloads = 1;
	}
	if (!mode)
		die_usage("%s", "missing MODE (disk, commit-floor, engine, redis, compare, server-compare, compaction, cluster, cluster-forward, presence-relay, idle-conns, delivery, groups, workload, history, report, plan)");
	/* delivery: the admin port too, for the per-stage breakdown */
	if (!strcmp(mode, "delivery") && !args_set && !cfg.tls)
		cfg.parleyd_args = "--dev --data {data} --listen 127.0.0.1:{port} --tls-port 0 "
				   "--admin-port {adminport}" BENCH_NO_LIMITS;
	bool fwd_mode = !strcmp(mode, "cluster-forward");
	bool cluster_mode = !strcmp(mode, "cluster") || fwd_mode;
	if (cluster_mode) {
		if (!args_set)
			cfg.parleyd_args = "--dev --data {data} --listen 127.0.0.1:{port} --tls-port 0 "
					   "--admin-port {adminport}" BENCH_NO_LIMITS;
		if (!producers_set) {
			cfg.producers[0] = 50;
			cfg.producers[1] = 200;
			cfg.n_producers = 2;
		}
		if (!payload_set) {
			cfg.payloads[0] = 100;
			cfg.n_payloads = 1;
		}
		if (!kills_set)
			cfg.kills = 20;
		if (!seconds_set)
			cfg.seconds = 2;
		if (!cfg.parleyd)
			die_usage("%s", "cluster wants --parleyd PATH (the nodes are started here)");
		want_nats(&cfg, no_nats, "cluster runs without the JetStream peer");
	}
	if (cfg.shards && (cfg.shards != (uint32_t)cfg.shards))
		die_usage("%s", "--shards must be an integer");
	if (access(cfg.dir, W_OK) != 0) {
		fprintf(stderr, "parley-bench: --dir %s is not a writable directory: %s\n",
			cfg.dir, strerror(errno));
		return EXIT_USAGE;
	}
	bool need_redis = !strcmp(mode, "redis") || !strcmp(mode, "compare") ||
			  !strcmp(mode, "server-compare") ||
			  (!strcmp(mode, "history") && !cfg.no_redis);
	if (need_redis) {
		if (!cfg.redis_server)
			cfg.redis_server = find_in_path("redis-server");
		if (!cfg.redis_server || access(cfg.redis_server, X_OK) != 0) {
			fprintf(stderr, "parley-bench: redis-server not found (install it with "
					"tools/install-deps.sh or pass --redis-server PATH)\n");
			return EXIT_USAGE;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	atexit(bench_children_kill);
	bj_note_start();

	bool sink_mode = !strcmp(mode, "disk") || !strcmp(mode, "commit-floor") ||
			 !strcmp(mode, "engine") || !strcmp(mode, "redis") ||
			 !strcmp(mode, "compare") || !strcmp(mode, "server-compare") ||
			 !strcmp(mode, "delivery") || !strcmp(mode, "compaction") || cluster_mode;
	if (sink_mode && !strcmp(mode, "delivery") && !no_nats && !cfg.nats_server) {
		cfg.nats_server = find_nats_server();
	}
	if (sink_mode && bench_sink_open(&cfg, mode) != 0)
		return EXIT_USAGE;
	int mrc = -1;
	if (!strcmp(mode, "disk"))
		mrc = mode_disk(&cfg);
	else if (!strcmp(mode, "commit-floor"))
		mrc = bench_commit_floor(&cfg) ? 1 : 0;
	else if (!strcmp(mode, "engine"))
		mrc = mode_load(&cfg, bench_engine_run, !no_floor);
	else if (!strcmp(mode, "redis"))
		mrc = mode_load(&cfg, bench_redis_run, false);
	else if (!strcmp(mode, "compare"))
		mrc = mode_compare(&cfg);
	else if (!strcmp(mode, "server-compare"))
		mrc = mode_server_compare(&cfg);
	else if (!strcmp(mode, "compaction")) {
		print_machine(&cfg);
		printf("- guarantees: parleyd = single node, SEND_ACK after the message's WAL "
		       "batch was written and fdatasync'd; compactions via POST /admin/compact "
		       "(flush + merge of every partition, server/admin.c)\n");
		bench_watchdog_arm(cfg.warmup + 2.0 * cfg.repeat * cfg.seconds + BENCH_DRAIN_SECONDS + 120 +
				   RUN_SLACK_S);
		mrc = bench_compaction(&cfg) ? 1 : 0;
		bench_watchdog_arm(0);
	}
	else if (cluster_mode) {
		print_machine(&cfg);
		printf("- guarantees: parleyd 3-node = every SEND_ACK after the message's entry "
		       "was written and fdatasync'd on a quorum (2 of 3: the leader's WAL batch "
		       "and a follower's, persist-before-send) and applied on the leader; "
		       "parleyd 1-node = after its WAL batch was fdatasync'd; JetStream R3 = "
		       "PubAck after a quorum of the stream's replicas stored the message in "
		       "their files WITHOUT fsync (the file store syncs on a timer; nats-server "
		       "2.9 has no option to sync every write: it refuses sync_interval)\n");
		printf("- nodes: %s %s + --node-id --cluster-id --peer-port --peers; "
		       "nats-server: %s\n", cfg.parleyd, cfg.parleyd_args,
		       cfg.nats_server ? cfg.nats_server : "not run");
		mrc = fwd_mode ? bench_cluster_forward(&cfg) : bench_cluster(&cfg);
	}
	if (mrc >= 0)
		return bench_sink_close() ? 1 : mrc;
	if (!strcmp(mode, "workload")) {
		if (!cfg.profile)
			die_usage("%s", "workload wants --profile FILE (examples in bench/profiles/)");
		print_machine(&cfg);
		return bench_workload(&cfg) ? 1 : 0;
	}
	if (!strcmp(mode, "history")) {
		print_machine(&cfg);
		return bench_history(&cfg) ? 1 : 0;
	}
	if (!strcmp(mode, "groups")) {
		print_machine(&cfg);
		if (cfg.count == 10000) /* the idle-conns default: not set */
			cfg.count = 500;
		if (cfg.count < 2 || cfg.count > 5000)
			die_usage("%s", "groups: --count is the group's size, 2..5000");
		int grc = bench_groups(&cfg);
		return grc ? 1 : 0;
	}
	if (!strcmp(mode, "presence-relay")) {
		print_machine(&cfg);
		if (!args_set)
			cfg.parleyd_args = "--dev --data {data} --listen 127.0.0.1:{port} "
					   "--tls-port 0 --admin-port {adminport}" BENCH_NO_LIMITS;
		if (!seconds_set)
			cfg.seconds = 45;
		if (cfg.n_rates == 0) {
			cfg.rates[0] = 100;
			cfg.n_rates = 1;
		}
		bench_watchdog_arm(600 + 3 * cfg.seconds + cfg.count / 100.0);
		int prc = bench_presence_relay(&cfg);
		bench_watchdog_arm(0);
		return prc ? 1 : 0;
	}
	if (!strcmp(mode, "idle-conns") || !strcmp(mode, "delivery")) {
		print_machine(&cfg);
		if (!strcmp(mode, "idle-conns")) {
			bench_watchdog_arm(120 + cfg.count / 200.0);
			int rc = bench_idle_conns(&cfg);
			bench_watchdog_arm(0);
			return rc ? 1 : 0;
		}
		if (cfg.n_rates == 0) {
			cfg.rates[0] = 1000;
			cfg.rates[1] = 10000;
			cfg.n_rates = 2;
		}
		if (!payload_set) {
			cfg.payloads[0] = 100;
			cfg.n_payloads = 1;
		}
		want_nats(&cfg, no_nats, "delivery runs without the NATS reference");
		/* the disk floor of this run: a SEND is durable (fdatasync) before
		 * its fan-out, so delivery latency is compared with it */
		struct disk_result *d = NULL;
		if (!no_floor) {
			d = malloc(sizeof *d);
			if (d && run_disk(&cfg, d) != 0)
				d->ok = false;
		}
		int drc = bench_delivery(&cfg, d);
		free(d);
		if (bench_sink_close())
			drc = 1;
		return drc ? 1 : 0;
	}
	die_usage("unknown mode \"%s\" (disk, engine, redis, compare, server-compare, compaction, cluster, cluster-forward, presence-relay, idle-conns, delivery, groups, workload, history, report, plan)", mode);
	return EXIT_USAGE;
}
