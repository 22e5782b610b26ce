/*
 * test_bench_e2e.c — a short end-to-end run of parley-bench against a real
 * parleyd (and redis-server when installed): workload, history, plan and
 * report, with small counts (a few seconds in all).
 *
 * What must hold: each mode exits 0 and writes a result file that parses;
 * counts inside a result agree with each other (every histogram holds as
 * many samples as the operations it counts, the throughput timeline never
 * exceeds the acknowledged sends, no event is delivered twice: at most one
 * per connected device of the two participants, the history load put
 * every message in); the plan names the result files its figures came
 * from; the report writes every chart as a complete SVG and its Markdown
 * page carries the same counts as the result files. Nothing here asserts
 * a latency or a rate (wall-clock figures are measured, never tested).
 * The compaction mode (over TLS, which also drives the bench's TLS client)
 * answers every SEND it scheduled in both phases, its histograms hold one
 * sample per ack, and its compaction calls all succeed; server-compare
 * --tls writes a TLS/plain row per connection count. The cluster mode
 * (3-node parleyd, one node, and JetStream R3 when nats-server is
 * installed; then 2 leader kills) acknowledges SENDs on every system, every
 * failover completes, and the history read back after the kills holds every
 * acknowledged message once at its acknowledged seq.
 * Skips (77) when parley-bench or parleyd was not built.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../../bench/bench_json.h"

static char bin[1024], src[1024], tmp[1024];

static void paths(void)
{
	const char *b = getenv("PARLEY_BIN_DIR"), *s = getenv("PARLEY_SRC_DIR");
	if (!b || !s)
		cr_skip_test("PARLEY_BIN_DIR / PARLEY_SRC_DIR not set (run through ctest)");
	snprintf(bin, sizeof bin, "%s", b);
	snprintf(src, sizeof src, "%s", s);
	char p[1200];
	snprintf(p, sizeof p, "%s/bench/parley-bench", bin);
	if (access(p, X_OK) != 0)
		cr_skip_test("parley-bench not built");
	snprintf(p, sizeof p, "%s/server/parleyd", bin);
	if (access(p, X_OK) != 0)
		cr_skip_test("parleyd not built");
	snprintf(tmp, sizeof tmp, "/tmp/parley-bench-e2e-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
}

static void run(const char *args)
{
	char cmd[8192];
	snprintf(cmd, sizeof cmd, "cd %s && %s/bench/parley-bench %s > out.txt 2> err.txt", tmp, bin,
		 args);
	int rc = system(cmd);
	if (rc != 0) {
		char show[9000];
		snprintf(show, sizeof show, "cat %s/out.txt %s/err.txt >&2", tmp, tmp);
		(void)system(show);
	}
	cr_assert_eq(rc, 0, "parley-bench %s failed (%d)", args, rc);
}

static struct bjv *load(const char *name)
{
	char p[1200], err[512];
	snprintf(p, sizeof p, "%s/%s", tmp, name);
	struct bjv *v;
	cr_assert_eq(bjv_load(p, &v, err, sizeof err), 0, "%s", err);
	return v;
}

static char *slurp(const char *name)
{
	char p[1200];
	snprintf(p, sizeof p, "%s/%s", tmp, name);
	FILE *f = fopen(p, "rb");
	cr_assert_not_null(f, "%s missing", p);
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	return strdup(buf);
}

static double num(const struct bjv *v, const char *path)
{
	const struct bjv *x = bjv_path(v, path);
	cr_assert(x && x->type == BJV_NUM, "no number at %s", path);
	return x->num;
}

Test(bench_e2e, workload_history_plan_report, .timeout = 300)
{
	paths();
	/* a profile whose p99 target no run can miss: the plan must not
	 * depend on how busy this machine is */
	char p[1200];
	snprintf(p, sizeof p, "%s/e2e.profile", tmp);
	FILE *f = fopen(p, "w");
	cr_assert_not_null(f);
	fprintf(f, "name = e2e\nusers = 1000000\ndevices_per_user = 1\nonline_fraction = 1\n"
		   "conversations_per_user = 2\nmessages_per_user_day = 100\n"
		   "history_reads_per_user_day = 20\nreconnects_per_device_day = 5\n"
		   "body_bytes = 20:1 100:1\ntarget_p99_ms = 1000000\n");
	fclose(f);
	char args[4096];
	snprintf(args, sizeof args,
		 "workload --profile e2e.profile --parleyd %s/server/parleyd --dir %s --users 4 "
		 "--threads 2 --rate 40,80 --seconds 1 --warmup 0.2 --json wl.json", bin, tmp);
	run(args);
	bool redis = access("/usr/bin/redis-server", X_OK) == 0;
	snprintf(args, sizeof args,
		 "history --parleyd %s/server/parleyd --dir %s --convs 4 --msgs 260 --seconds 0.3 "
		 "--no-drop-caches%s --json hist.json", bin, tmp, redis ? "" : " --no-redis");
	run(args);
	run("plan --profile e2e.profile --json plan.json --results wl.json hist.json");
	snprintf(args, sizeof args, "disk --dir %s --seconds 0.2 --json disk.json", tmp);
	run(args);
	run("report wl.json hist.json plan.json disk.json --out rep");

	/* workload: counts agree inside the file */
	struct bjv *wl = load("wl.json");
	cr_assert_str_eq(bjv_str_at(wl, "mode"), "workload");
	cr_assert_eq(num(wl, "settings.users_simulated"), 4);
	cr_assert_eq(num(wl, "settings.devices_connected"), 4);
	const struct bjv *pts = bjv_get(wl, "points");
	cr_assert(pts && pts->type == BJV_ARR && pts->n == 2);
	char *md = slurp("rep/index.md");
	for (size_t i = 0; i < pts->n; i++) {
		const struct bjv *pt = &pts->kids[i];
		double ok = num(pt, "sends.ok");
		cr_assert_gt(ok, 0);
		cr_assert_eq(num(pt, "sends.latency.count"), ok);
		cr_assert_eq(num(pt, "events.latency.count"), num(pt, "events.delivered"));
		cr_assert_eq(num(pt, "history_reads.latency.count"), num(pt, "history_reads.ok"));
		cr_assert_eq(num(pt, "reconnects.latency.count"), num(pt, "reconnects.ok"));
		/* one device per user, two participants: at most 2 events per send */
		cr_assert_leq(num(pt, "events.delivered"), 2 * (ok + num(pt, "sends.errors")));
		const struct bjv *tl = bjv_get(pt, "timeline_sends_per_s");
		cr_assert(tl && tl->type == BJV_ARR && tl->n >= 1);
		double sum = 0;
		for (size_t k = 0; k < tl->n; k++)
			sum += tl->kids[k].num;
		cr_assert_leq(sum, ok);
		/* the report's table row carries the same counts */
		char row[160];
		snprintf(row, sizeof row, "| %.0f | %.0f | %.0f | %.0f |", num(pt, "target_sends_per_s"),
			 ok, num(pt, "sends.errors"), num(pt, "not_sent"));
		cr_assert(strstr(md, row), "report lacks \"%s\"", row);
	}
	bjv_free(wl);

	struct bjv *h = load("hist.json");
	cr_assert_str_eq(bjv_str_at(h, "mode"), "history");
	cr_assert_eq(num(h, "load.messages"), 4 * 260);
	cr_assert_eq(num(h, "load.errors"), 0);
	cr_assert_eq(num(h, "parleyd.hot.latency.count"), num(h, "parleyd.hot.ok"));
	cr_assert_eq(num(h, "parleyd.older_cold.ok"), 4);
	cr_assert_eq(num(h, "parleyd.older_warm.errors"), 0);
	cr_assert_gt(num(h, "storage.segment_bytes"), 0);
	if (redis) {
		cr_assert_eq(num(h, "redis.hot.latency.count"), num(h, "redis.hot.ok"));
		cr_assert_eq(num(h, "redis.older.errors"), 0);
	}
	char row[160];
	snprintf(row, sizeof row, "| parleyd last page (memtable) | %.0f | 0 |",
		 num(h, "parleyd.hot.ok"));
	cr_assert(strstr(md, row), "report lacks \"%s\"", row);
	bjv_free(h);

	struct bjv *pl = load("plan.json");
	cr_assert_geq(num(pl, "plan.nodes"), 3); /* replication factor floor */
	cr_assert(strstr(bjv_str_at(pl, "measured.sends_per_s.source"), "wl.json"));
	cr_assert(strstr(bjv_str_at(pl, "measured.reads_per_s.source"), "hist.json"));
	cr_assert(strstr(bjv_str_at(pl, "measured.bytes_per_msg.source"), "hist.json"));
	bjv_free(pl);

	struct bjv *dk = load("disk.json");
	const struct bjv *rows = bjv_get(dk, "rows");
	cr_assert(rows && rows->type == BJV_ARR && rows->n == 1);
	cr_assert_str_eq(bjv_str_at(&rows->kids[0], "kind"), "disk_floor");
	double n4k = num(&rows->kids[0], "write_4k_fdatasync.count");
	cr_assert_gt(n4k, 0);
	snprintf(row, sizeof row, "| disk_floor | disk | 4 KiB write + fdatasync | %.0f |", n4k);
	cr_assert(strstr(md, row), "report lacks \"%s\"", row);
	bjv_free(dk);

	/* every chart is a complete SVG and is embedded in the page */
	char d[1200];
	snprintf(d, sizeof d, "%s/rep", tmp);
	DIR *dir = opendir(d);
	cr_assert_not_null(dir);
	struct dirent *de;
	unsigned svgs = 0;
	while ((de = readdir(dir))) {
		size_t l = strlen(de->d_name);
		if (l < 5 || strcmp(de->d_name + l - 4, ".svg"))
			continue;
		char name[400];
		snprintf(name, sizeof name, "rep/%s", de->d_name);
		char *svg = slurp(name);
		cr_assert(!strncmp(svg, "<svg ", 5) && strstr(svg, "</svg>"), "%s incomplete", name);
		free(svg);
		char ref[400];
		snprintf(ref, sizeof ref, "(%s)", de->d_name);
		cr_assert(strstr(md, ref), "%s not embedded in index.md", de->d_name);
		svgs++;
	}
	closedir(dir);
	cr_assert_geq(svgs, 9);
	free(md);
	char rm[1200];
	snprintf(rm, sizeof rm, "rm -rf %s", tmp);
	(void)system(rm);
}

Test(bench_e2e, compaction_over_tls_and_server_compare_tls, .timeout = 300)
{
	paths();
	char args[4096];
	snprintf(args, sizeof args,
		 "compaction --tls --parleyd %s/server/parleyd --dir %s --producers 3 --rate 150 "
		 "--seconds 0.6 --warmup 0.2 --compact-gap 0.05 --json cmp.json", bin, tmp);
	run(args);
	struct bjv *c = load("cmp.json");
	cr_assert_str_eq(bjv_str_at(c, "mode"), "compaction");
	const struct bjv *rows = bjv_get(c, "rows");
	cr_assert(rows && rows->type == BJV_ARR && rows->n == 3);
	double acked = 0;
	for (size_t i = 0; i < 2; i++) {
		const struct bjv *r = &rows->kids[i];
		cr_assert_str_eq(bjv_str_at(r, "kind"), "compaction_phase");
		cr_assert_str_eq(bjv_str_at(r, "system"), "parleyd-tls");
		cr_assert_gt(num(r, "scheduled"), 0);
		cr_assert_eq(num(r, "acked"), num(r, "scheduled"));
		cr_assert_eq(num(r, "ack_latency.count"), num(r, "acked"));
		acked += num(r, "acked");
	}
	cr_assert_str_eq(bjv_str_at(&rows->kids[0], "phase"), "idle");
	cr_assert_str_eq(bjv_str_at(&rows->kids[1], "phase"), "compaction");
	const struct bjv *r = &rows->kids[2];
	cr_assert_str_eq(bjv_str_at(r, "kind"), "compaction_ratio");
	cr_assert_eq(num(r, "errors"), 0);
	cr_assert_eq(num(r, "acked"), num(r, "sent"));
	cr_assert_geq(num(r, "sent"), acked); /* + the warm-up's */
	cr_assert_gt(num(r, "compact_ok"), 0);
	cr_assert_eq(num(r, "compact_ok"), num(r, "compact_calls"));
	cr_assert_eq(num(r, "compact_call_duration.count"), num(r, "compact_calls"));
	const struct bjv *okv = bjv_get(r, "ok");
	cr_assert(okv && okv->type == BJV_BOOL && okv->num == 1);
	bjv_free(c);

	char rm[1200];
	snprintf(rm, sizeof rm, "rm -rf %s", tmp);
	if (access("/usr/bin/redis-server", X_OK) != 0) {
		(void)system(rm);
		return; /* server-compare needs redis-server */
	}
	snprintf(args, sizeof args,
		 "server-compare --tls --parleyd %s/server/parleyd --dir %s --producers 2 "
		 "--payload 100 --seconds 0.3 --warmup 0.1 --json sc.json", bin, tmp);
	run(args);
	struct bjv *sc = load("sc.json");
	rows = bjv_get(sc, "rows");
	cr_assert(rows && rows->type == BJV_ARR);
	int tls_rows = 0;
	for (size_t i = 0; i < rows->n; i++) {
		const char *k = bjv_str_at(&rows->kids[i], "kind");
		if (!k || strcmp(k, "server_compare_tls_ratio"))
			continue;
		tls_rows++;
		cr_assert_eq(num(&rows->kids[i], "connections"), 2);
		cr_assert_gt(num(&rows->kids[i], "tls_sends_per_s"), 0);
		cr_assert_eq(num(&rows->kids[i], "tls_latency.count") > 0, 1);
	}
	cr_assert_eq(tls_rows, 1);
	bjv_free(sc);
	(void)system(rm);
}

Test(bench_e2e, cluster_replication_and_failover, .timeout = 300)
{
	paths();
	bool nats = access("/usr/sbin/nats-server", X_OK) == 0 ||
		    access("/usr/bin/nats-server", X_OK) == 0;
	char args[4096];
	snprintf(args, sizeof args,
		 "cluster --parleyd %s/server/parleyd --dir %s --producers 3 --seconds 0.3 "
		 "--warmup 0.1 --kills 2 --rate 40 %s--json cl.json", bin, tmp,
		 nats ? "" : "--no-nats ");
	run(args);
	struct bjv *c = load("cl.json");
	cr_assert_str_eq(bjv_str_at(c, "mode"), "cluster");
	const struct bjv *rows = bjv_get(c, "rows");
	cr_assert(rows && rows->type == BJV_ARR);
	int loads = 0, ratios = 0, failovers = 0;
	for (size_t i = 0; i < rows->n; i++) {
		const struct bjv *r = &rows->kids[i];
		const char *k = bjv_str_at(r, "kind");
		cr_assert_not_null(k);
		if (!strcmp(k, "load")) {
			loads++;
			const struct bjv *okv = bjv_get(r, "ok");
			cr_assert(okv && okv->type == BJV_BOOL && okv->num == 1, "%s failed",
				  bjv_str_at(r, "system"));
			cr_assert_gt(num(r, "acks"), 0);
			cr_assert_eq(num(r, "errors"), 0);
			cr_assert_eq(num(r, "latency.count"), num(r, "acks"));
		} else if (!strcmp(k, "cluster_ratio")) {
			ratios++;
			cr_assert_eq(num(r, "connections"), 3);
			cr_assert_gt(num(r, "cluster_sends_per_s"), 0);
			cr_assert_gt(num(r, "single_sends_per_s"), 0);
			if (nats)
				cr_assert_gt(num(r, "jetstream_acks_per_s"), 0);
		} else if (!strcmp(k, "cluster_failover")) {
			failovers++;
			cr_assert_eq(num(r, "kills"), 2);
			cr_assert_eq(num(r, "never"), 0);
			cr_assert_gt(num(r, "acked"), 0);
			cr_assert_eq(num(r, "lost"), 0);
			cr_assert_eq(num(r, "doubled"), 0);
			cr_assert_eq(num(r, "moved"), 0);
			cr_assert_eq(num(r, "kill_to_first_ack.count"), 2);
		}
	}
	cr_assert_eq(loads, nats ? 3 : 2);
	cr_assert_eq(ratios, 1);
	cr_assert_eq(failovers, 1);
	bjv_free(c);
	char rm[1200];
	snprintf(rm, sizeof rm, "rm -rf %s", tmp);
	(void)system(rm);
}
